-- What a DBA's dashboard reads: ledger.stats and ledger.refusals. They read chain heads (one index
-- probe per chain), the newest checkpoint and verification run of each chain, and the counters
-- kept in shared memory; never every record.

-- Per chain of a ledger: its head (the highest seq, which is its record count while the chain is
-- intact) and its newest checkpoint. Chains are listed by a skip scan of the (chain, seq) index and
-- named as checkpoints name them (the export's settings, fixed by the SET clauses).
CREATE FUNCTION ledger.chain_summary(tbl regclass)
RETURNS TABLE(chain text, head bigint, covered bigint, checkpointed_at timestamptz, signed boolean)
LANGUAGE plpgsql STABLE STRICT SECURITY DEFINER PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'iso_8601'
SET extra_float_digits = 3 SET bytea_output = 'hex'
AS $$
DECLARE
    ledger_name text;
    chain_column name;
    records text;  -- ONLY the table (not an inheritance child's rows), or all of a partitioned one
BEGIN
    SELECT format('%I.%I', n.nspname, c.relname), l.chain_by,
           CASE WHEN c.relkind = 'p' THEN '' ELSE 'ONLY ' END || format('%I.%I', n.nspname, c.relname)
      INTO ledger_name, chain_column, records
      FROM ledger.ledgers l JOIN pg_class c ON c.oid = l.tbl JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE l.tbl = chain_summary.tbl;
    IF ledger_name IS NULL THEN
        RETURN;
    END IF;
    IF chain_column IS NULL THEN
        RETURN QUERY EXECUTE format(
            'SELECT NULL::text, h.seq, cp.record_count::bigint, cp.created_at, cp.sig IS NOT NULL
               FROM (SELECT seq FROM %s ORDER BY seq DESC LIMIT 1) h
               LEFT JOIN LATERAL (SELECT record_count, created_at, sig FROM ledger.checkpoints
                                   WHERE ledger = $1 AND chain IS NULL
                                   ORDER BY created_at DESC, record_count DESC LIMIT 1) cp ON true',
            records) USING ledger_name;
    ELSE
        RETURN QUERY EXECUTE format(
            'WITH RECURSIVE chains(k) AS (
                 (SELECT %1$I FROM %2$s ORDER BY %1$I LIMIT 1)
                 UNION ALL
                 SELECT (SELECT %1$I FROM %2$s WHERE %1$I > chains.k ORDER BY %1$I LIMIT 1)
                   FROM chains WHERE chains.k IS NOT NULL)
             SELECT k::text, h.seq, cp.record_count::bigint, cp.created_at, cp.sig IS NOT NULL
               FROM chains
              CROSS JOIN LATERAL (SELECT seq FROM %2$s WHERE %1$I = chains.k ORDER BY seq DESC LIMIT 1) h
               LEFT JOIN LATERAL (SELECT record_count, created_at, sig FROM ledger.checkpoints
                                   WHERE ledger = $1 AND chain = chains.k::text
                                   ORDER BY created_at DESC, record_count DESC LIMIT 1) cp ON true
              WHERE chains.k IS NOT NULL',
            chain_column, records) USING ledger_name;
    END IF;
END
$$;
COMMENT ON FUNCTION ledger.chain_summary(regclass) IS 'each chain''s head and newest checkpoint, for ledger.stats';

CREATE VIEW ledger.stats AS
SELECT format('%I.%I', n.nspname, c.relname) AS ledger,
       s.chains,
       s.records,
       k.last_append,
       s.unanchored_records,
       s.last_checkpoint,
       extract(epoch FROM now() - s.last_checkpoint)::double precision AS checkpoint_age_seconds,
       s.checkpoints_signed,
       v.finished_at AS last_verify,
       extract(epoch FROM v.finished_at - v.started_at)::double precision AS last_verify_seconds,
       v.problems + v.checkpoint_failures AS last_verify_problems,
       l.retired_at IS NOT NULL AS retired,
       k.appends,
       k.verify_runs,
       k.refusals
  FROM ledger.ledgers l
  JOIN pg_catalog.pg_class c ON c.oid = l.tbl
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 CROSS JOIN LATERAL (
       SELECT count(*) AS chains,
              coalesce(sum(h.head), 0)::bigint AS records,
              -- A chain shorter than its checkpoint lost records: verify_all reports that, not this count.
              coalesce(sum(greatest(h.head - coalesce(h.covered, 0), 0)), 0)::bigint AS unanchored_records,
              max(h.checkpointed_at) AS last_checkpoint,
              bool_and(h.signed) FILTER (WHERE h.checkpointed_at IS NOT NULL) AS checkpoints_signed
         FROM ledger.chain_summary(l.tbl) h) s
  LEFT JOIN LATERAL (
       SELECT r.started_at, r.finished_at, r.problems, r.checkpoint_failures
         FROM ledger.verify_runs r
        WHERE r.ledger = format('%I.%I', n.nspname, c.relname)
        ORDER BY r.seq DESC LIMIT 1) v ON true
  LEFT JOIN ledger.counters() k ON k.tbl = l.tbl::oid;
COMMENT ON VIEW ledger.stats IS 'one row per ledger: chains, records, checkpoint and verification state, counters since server start';

CREATE VIEW ledger.refusals AS
SELECT format('%I.%I', n.nspname, c.relname) AS ledger, r.kind, r.refusals
  FROM ledger.refusal_counters() r
  JOIN pg_catalog.pg_class c ON c.oid = r.tbl
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace;
COMMENT ON VIEW ledger.refusals IS 'refused changes since server start, per ledger and kind (no rows without shared_preload_libraries)';

-- The functions behind the views read every ledger's heads as the extension's owner: only the
-- monitoring roles may call them (granted in finalize.sql, once the roles exist).
REVOKE ALL ON FUNCTION ledger.chain_summary(regclass), ledger.counters(), ledger.refusal_counters() FROM PUBLIC;
