-- ledger 0.1.0 -> 0.2.0: metrics (ledger.stats, ledger.refusals, counters in shared memory), scheduled
-- verification (ledger.verify_all with its history ledger ledger.verify_runs, ledger.checkpoint_all),
-- migrations of stores that hashed their records (ledger.enable's order_by and keep_existing_as),
-- the checks' column renamed item, and one changed definition line per line of a guard's DETAIL.
-- Nothing stored changes: every record, checkpoint, proof and digest of 0.1.0 verifies as before.

\echo Use "ALTER EXTENSION ledger UPDATE TO '0.2.0'" to load this file. \quit

-- Runs of ledger.verify_all: one row per ledger per run, one chain per ledger, so a run cannot be
-- edited or dropped from the record. Itself a ledger.
CREATE TABLE ledger.verify_runs (
    vid                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    run                 uuid NOT NULL,
    ledger              text NOT NULL,
    started_at          timestamptz NOT NULL,
    finished_at         timestamptz NOT NULL,
    chains              bigint NOT NULL,
    records             bigint NOT NULL,
    problems            bigint NOT NULL,
    checkpoints_checked bigint NOT NULL,
    checkpoint_failures bigint NOT NULL,
    actor               text NOT NULL,
    -- Set when the ledger could not be verified to the end (the run then counts one problem).
    error               text,
    seq                 bigint NOT NULL,
    prev_hash           char(64),
    hash                char(64) UNIQUE NOT NULL
);
COMMENT ON TABLE ledger.verify_runs IS 'runs of ledger.verify_all, one chain per ledger; itself a ledger';

-- Counters in shared memory (src/metrics.rs).
CREATE FUNCTION ledger.count_guard_refusal(
	"tbl" oid,
	"event" TEXT
) RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'count_guard_refusal_wrapper';

CREATE FUNCTION ledger.counters() RETURNS TABLE (
	"tbl" oid,
	"appends" bigint,
	"verify_runs" bigint,
	"refusals" bigint,
	"last_append" timestamp with time zone
)
STRICT STABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'counters_wrapper';

CREATE FUNCTION ledger.counters_available() RETURNS bool
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'counters_available_wrapper';

CREATE FUNCTION ledger.refusal_counters() RETURNS TABLE (
	"tbl" oid,
	"kind" TEXT,
	"refusals" bigint
)
STRICT STABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'refusal_counters_wrapper';

-- The jobs a DBA schedules (src/scheduled.rs).
CREATE FUNCTION ledger.verify_all() RETURNS TABLE (
	"ledger" TEXT,
	"chains" bigint,
	"records" bigint,
	"problems" bigint,
	"checkpoints_checked" bigint,
	"checkpoint_failures" bigint,
	"started_at" timestamp with time zone,
	"finished_at" timestamp with time zone
)
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'verify_all_wrapper';

CREATE FUNCTION ledger.checkpoint_all() RETURNS SETOF ledger.checkpoints
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'checkpoint_all_wrapper';

-- The definition guards count what they refuse.
CREATE OR REPLACE FUNCTION ledger.guard_ddl() RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    touched record;
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RETURN;
    END IF;
    FOR touched IN
        WITH commands AS (SELECT classid, objid FROM pg_event_trigger_ddl_commands()),
        relations AS (
            SELECT objid AS relid FROM commands WHERE classid = 'pg_class'::regclass
            UNION SELECT g.tgrelid FROM commands JOIN pg_trigger g ON g.oid = objid
                   WHERE classid = 'pg_trigger'::regclass
            UNION SELECT r.ev_class FROM commands JOIN pg_rewrite r ON r.oid = objid
                   WHERE classid = 'pg_rewrite'::regclass
            UNION SELECT p.polrelid FROM commands JOIN pg_policy p ON p.oid = objid
                   WHERE classid = 'pg_policy'::regclass
            UNION SELECT c.oid FROM commands JOIN pg_class c ON c.relnamespace = objid
                   WHERE classid = 'pg_namespace'::regclass
            -- A new inheritance child of a ledger.
            UNION SELECT i.inhparent FROM commands JOIN pg_inherits i ON i.inhrelid = objid
                   WHERE classid = 'pg_class'::regclass
            -- Types and collations of ledger columns (renamed, moved), directly or by their schema.
            UNION SELECT d.objid FROM commands JOIN pg_depend d
                       ON d.refclassid = commands.classid AND d.refobjid = commands.objid
                   WHERE commands.classid IN ('pg_type'::regclass, 'pg_collation'::regclass)
                     AND d.classid = 'pg_class'::regclass
            UNION SELECT d.objid FROM commands
                     JOIN pg_type t ON t.typnamespace = commands.objid
                     JOIN pg_depend d ON d.refclassid = 'pg_type'::regclass AND d.refobjid = t.oid
                   WHERE commands.classid = 'pg_namespace'::regclass AND d.classid = 'pg_class'::regclass
            UNION SELECT d.objid FROM commands
                     JOIN pg_collation co ON co.collnamespace = commands.objid
                     JOIN pg_depend d ON d.refclassid = 'pg_collation'::regclass AND d.refobjid = co.oid
                   WHERE commands.classid = 'pg_namespace'::regclass AND d.classid = 'pg_class'::regclass
        )
        SELECT l.tbl, l.definition AS registered, ledger.definition(l.tbl) AS current
          FROM ledger.ledgers l JOIN relations ON relations.relid = l.tbl::oid
         WHERE l.definition IS NOT NULL
    LOOP
        IF touched.current IS DISTINCT FROM touched.registered THEN
            PERFORM ledger.count_guard_refusal(touched.tbl, TG_EVENT);
            PERFORM ledger.refuse_definition_change(touched.tbl, touched.registered, touched.current);
        END IF;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION ledger.guard_drop() RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    superuser boolean := (SELECT rolsuper FROM pg_roles WHERE rolname = current_user);
    dropped record;
BEGIN
    IF EXISTS (SELECT FROM pg_event_trigger_dropped_objects()
                WHERE object_type = 'extension' AND object_name = 'ledger') THEN
        RETURN;
    END IF;
    -- Whole ledgers: refused, or (by a superuser) recorded in the ledger's audit chain.
    FOR dropped IN
        SELECT l.tbl::oid AS relid, d.object_identity, l.definition
          FROM pg_event_trigger_dropped_objects() d JOIN ledger.ledgers l ON l.tbl::oid = d.objid
         WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0
    LOOP
        IF NOT superuser THEN
            PERFORM ledger.count_guard_refusal(dropped.relid, TG_EVENT);
            RAISE EXCEPTION 'ledger % cannot be dropped', dropped.object_identity
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = 'Dropping a ledger destroys the records it vouches for.',
                      HINT = 'To stop appending, use ledger.retire(); only a superuser can drop a ledger.';
        END IF;
        INSERT INTO ledger.events (ledger, event, actor, definition, reason)
        VALUES (dropped.object_identity, 'drop', current_user,
                ledger.sha3_256(convert_to(dropped.definition, 'UTF8')), 'dropped by a superuser');
        DELETE FROM ledger.ledgers WHERE tbl::oid = dropped.relid;
    END LOOP;
    IF superuser THEN
        RETURN;
    END IF;
    -- Parts of ledgers that remain: columns, triggers, rules, policies.
    FOR dropped IN
        WITH relations AS (
            SELECT objid AS relid FROM pg_event_trigger_dropped_objects()
             WHERE classid = 'pg_class'::regclass AND objsubid > 0
            UNION
            SELECT to_regclass(format('%I.%I', address_names[1], address_names[2]))::oid
              FROM pg_event_trigger_dropped_objects()
             WHERE object_type IN ('trigger', 'rule', 'policy') AND cardinality(address_names) >= 2
        )
        SELECT l.tbl, l.definition AS registered, ledger.definition(l.tbl) AS current
          FROM ledger.ledgers l JOIN relations ON relations.relid = l.tbl::oid
         WHERE l.definition IS NOT NULL
    LOOP
        IF dropped.current IS DISTINCT FROM dropped.registered THEN
            PERFORM ledger.count_guard_refusal(dropped.tbl, TG_EVENT);
            PERFORM ledger.refuse_definition_change(dropped.tbl, dropped.registered, dropped.current);
        END IF;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION ledger.guard_rewrite() RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rewritten oid := pg_event_trigger_table_rewrite_oid();
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT FROM ledger.ledgers WHERE tbl::oid = rewritten) THEN
        PERFORM ledger.count_guard_refusal(rewritten, TG_EVENT);
        RAISE EXCEPTION 'ledger % cannot be rewritten', rewritten::regclass
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'The command would replace every record without the ledger''s triggers seeing it.',
                  HINT = 'Only a superuser can rewrite a ledger (and checkpoints made before report any change).';
    END IF;
END
$$;

-- ledger.enable chooses the order existing rows are chained in, and keeps a table's own hashes.
DROP FUNCTION ledger.enable(regclass, name);
CREATE FUNCTION ledger.enable(
	"tbl" regclass,
	"chain_by" name DEFAULT NULL,
	"order_by" TEXT DEFAULT NULL,
	"keep_existing_as" TEXT DEFAULT NULL
) RETURNS void
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'enable_with_options_wrapper';

-- The checks' column was named "check", a reserved word every query had to quote.
DROP FUNCTION ledger.verify_checkpoint(uuid);
DROP FUNCTION ledger.verify_digest(text);
CREATE FUNCTION ledger.verify_checkpoint(
	"cid" uuid
) RETURNS TABLE (
	"item" TEXT,
	"ok" bool,
	"detail" TEXT
)
STRICT STABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'verify_checkpoint_wrapper';

CREATE FUNCTION ledger.verify_digest(
	"digest" TEXT
) RETURNS TABLE (
	"item" TEXT,
	"ok" bool,
	"detail" TEXT
)
STRICT STABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'verify_digest_wrapper';

-- A refused definition change lists one changed line per line of its DETAIL.
CREATE OR REPLACE FUNCTION ledger.refuse_definition_change(tbl regclass, registered text, current text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'ledger % cannot be altered', tbl
        USING ERRCODE = 'insufficient_privilege',
              -- One changed line of the definition per line of the detail: removed (-), then added (+).
              DETAIL = E'The command changes what the ledger''s hashes and triggers rely on:\n'
                       || (SELECT string_agg(change, E'\n' ORDER BY removed DESC, n)
                             FROM (SELECT '- ' || line, true, n
                                     FROM unnest(string_to_array(registered, E'\n')) WITH ORDINALITY AS r(line, n)
                                    WHERE line <> '' AND line <> ALL (string_to_array(current, E'\n'))
                                   UNION ALL
                                   SELECT '+ ' || line, false, n
                                     FROM unnest(string_to_array(current, E'\n')) WITH ORDINALITY AS c(line, n)
                                    WHERE line <> '' AND line <> ALL (string_to_array(registered, E'\n'))
                                  ) AS changes(change, removed, n)),
              HINT = 'Only a superuser can change a ledger''s definition (and ledger.verify will report it). '
                     'To stop appending, use ledger.retire().';
END
$$;

-- The run history is a ledger like the extension's others.
SELECT ledger.enable('ledger.verify_runs', 'ledger');

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
BEGIN
    SELECT format('%I.%I', n.nspname, c.relname), l.chain_by INTO ledger_name, chain_column
      FROM ledger.ledgers l JOIN pg_class c ON c.oid = l.tbl JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE l.tbl = chain_summary.tbl;
    IF ledger_name IS NULL THEN
        RETURN;
    END IF;
    IF chain_column IS NULL THEN
        RETURN QUERY EXECUTE format(
            'SELECT NULL::text, h.seq, cp.record_count::bigint, cp.created_at, cp.sig IS NOT NULL
               FROM (SELECT seq FROM ONLY %s ORDER BY seq DESC LIMIT 1) h
               LEFT JOIN LATERAL (SELECT record_count, created_at, sig FROM ledger.checkpoints
                                   WHERE ledger = $1 AND chain IS NULL
                                   ORDER BY created_at DESC, record_count DESC LIMIT 1) cp ON true',
            ledger_name) USING ledger_name;
    ELSE
        RETURN QUERY EXECUTE format(
            'WITH RECURSIVE chains(k) AS (
                 (SELECT %1$I FROM ONLY %2$s ORDER BY %1$I LIMIT 1)
                 UNION ALL
                 SELECT (SELECT %1$I FROM ONLY %2$s WHERE %1$I > chains.k ORDER BY %1$I LIMIT 1)
                   FROM chains WHERE chains.k IS NOT NULL)
             SELECT k::text, h.seq, cp.record_count::bigint, cp.created_at, cp.sig IS NOT NULL
               FROM chains
              CROSS JOIN LATERAL (SELECT seq FROM ONLY %2$s WHERE %1$I = chains.k ORDER BY seq DESC LIMIT 1) h
               LEFT JOIN LATERAL (SELECT record_count, created_at, sig FROM ledger.checkpoints
                                   WHERE ledger = $1 AND chain = chains.k::text
                                   ORDER BY created_at DESC, record_count DESC LIMIT 1) cp ON true
              WHERE chains.k IS NOT NULL',
            chain_column, ledger_name) USING ledger_name;
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

-- As finalize.sql has them for a fresh install.
REVOKE ALL ON ledger.verify_runs FROM PUBLIC;
GRANT SELECT ON ledger.verify_runs TO ledger_auditor;
GRANT EXECUTE ON FUNCTION ledger.chain_summary(regclass), ledger.counters(), ledger.refusal_counters()
    TO ledger_auditor, pg_monitor;
GRANT SELECT ON ledger.stats, ledger.refusals TO ledger_auditor, pg_monitor;
SELECT pg_catalog.pg_extension_config_dump('ledger.verify_runs', 'WHERE true ORDER BY ledger, seq');
SELECT pg_catalog.pg_extension_config_dump('ledger.ledgers',
    'WHERE tbl NOT IN (''ledger.records''::regclass, ''ledger.checkpoints''::regclass, ''ledger.events''::regclass, ''ledger.verify_runs''::regclass)');
SELECT pg_catalog.pg_extension_config_dump('ledger.events',
    'WHERE ledger NOT IN (''ledger.records'', ''ledger.checkpoints'', ''ledger.events'', ''ledger.verify_runs'') ORDER BY ledger, seq');
