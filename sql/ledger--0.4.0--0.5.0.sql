-- ledger 0.4.0 -> 0.5.0: retention and erasure. ledger.set_retention(tbl, keep, by_column) registers how long a
-- ledger keeps its records (a superuser sets or shortens it, the owner may lengthen it; every change
-- is a 'retention' event in ledger.events), and ledger.prune(tbl) deletes, per chain, the oldest
-- records older than it (never a chain's newest), after checking them and checkpointing them. Their
-- hashes are kept in ledger.pruned (itself a ledger), so every chain, checkpoint, proof and digest
-- still verifies (docs/FORMAT.md, "Pruned records"); ledger.export writes them.
-- ledger.set_erasable(tbl, columns) makes columns erasable for the records appended from then on
-- (they commit to those values through salted hashes kept in a ledger_erasure column), and
-- ledger.redact(tbl, chain, seq, reason) erases one record's values while its hash stays
-- (docs/FORMAT.md, "Erasable columns"). Nothing stored changes.

\echo Use "ALTER EXTENSION ledger UPDATE TO '0.5.0'" to load this file. \quit

ALTER TABLE ledger.ledgers ADD COLUMN retention interval, ADD COLUMN retention_column name,
    ADD COLUMN pruned_before timestamptz, ADD COLUMN erasable name[];
ALTER TABLE ledger.events DROP CONSTRAINT events_event_check,
    ADD CONSTRAINT events_event_check CHECK (event IN ('enable', 'retire', 'drop', 'alter', 'retention', 'prune', 'erasable', 'redact'));
COMMENT ON TABLE ledger.events IS 'who enabled, altered, set the retention of, pruned, erased values of, retired or dropped each ledger, when and why; itself a ledger';

-- What ledger.prune removed: the hashes of the pruned records of each chain, in runs of consecutive
-- seqs (32 octets per record, in seq order), so that checkpoints, proofs and digests keep their
-- leaves and ledger.verify starts each chain after its last pruned record. Itself a ledger, one
-- chain per ledger.
CREATE TABLE ledger.pruned (
    pid        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    ledger     text NOT NULL,
    chain      text,
    first_seq  bigint NOT NULL,
    last_seq   bigint NOT NULL,
    hashes     bytea NOT NULL,
    -- The retention's boundary: every pruned record was older than it.
    cutoff     timestamptz NOT NULL,
    -- A checkpoint of the chain that covers the pruned records.
    checkpoint uuid NOT NULL,
    pruned_at  timestamptz NOT NULL DEFAULT now(),
    actor      text NOT NULL,
    seq        bigint NOT NULL,
    prev_hash  char(64),
    hash       char(64) UNIQUE NOT NULL
);
-- Hashes do not compress; stored uncompressed, a run's last hash is read without the rest.
ALTER TABLE ledger.pruned ALTER COLUMN hashes SET STORAGE EXTERNAL;
CREATE INDEX pruned_ledger_chain_idx ON ledger.pruned (ledger, chain, last_seq);
COMMENT ON TABLE ledger.pruned IS 'the hashes of records removed by ledger.prune, per chain; itself a ledger';

CREATE FUNCTION ledger.set_retention(tbl regclass, keep interval, by_column name DEFAULT NULL) RETURNS void
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'set_retention_wrapper';

CREATE FUNCTION ledger.prune(tbl regclass) RETURNS TABLE (chain text, pruned bigint, through_seq bigint)
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'prune_wrapper';

CREATE FUNCTION ledger.prune_all() RETURNS TABLE (ledger text, chain text, pruned bigint, through_seq bigint)
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'prune_all_wrapper';

CREATE FUNCTION ledger.pruned_runs(tbl regclass)
RETURNS TABLE (chain text, first_seq bigint, last_seq bigint, hashes bytea)
STABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'pruned_runs_wrapper';

CREATE FUNCTION ledger.set_erasable(tbl regclass, columns text[]) RETURNS void
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'set_erasable_wrapper';

CREATE FUNCTION ledger.redact(tbl regclass, chain text, seq bigint DEFAULT NULL, reason text DEFAULT NULL) RETURNS integer
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'redact_wrapper';

-- The export writes the kept hashes of pruned records, and each record's erasure entries.
CREATE OR REPLACE FUNCTION ledger.export(tbl regclass)
RETURNS SETOF text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, YMD'
SET IntervalStyle = 'iso_8601'
SET extra_float_digits = 3
SET bytea_output = 'hex'
SET quote_all_identifiers = off
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    entry ledger.ledgers;
    header text;
    table_name text;
    value_list text;
    erasure boolean;
BEGIN
    SELECT * INTO entry FROM ledger.ledgers l WHERE l.tbl = export.tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % is not a ledger', tbl USING ERRCODE = 'undefined_object',
            HINT = coalesce((SELECT format('It is history-tracked: export its history, ledger.export(%L), '
                                           'and its rows with ledger.export_state(%L).', t.history, t.tbl)
                               FROM ledger.tracked t WHERE t.tbl = export.tbl),
                            'Make it one with ledger.enable().');
    END IF;
    SELECT format('%I.%I', n.nspname, c.relname) INTO table_name
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tbl;

    header := json_build_object(
        'format', 'ledger-export',
        'version', 1,
        'table', table_name,
        'chain_by', entry.chain_by,
        -- Columns added after enable are marked: a record covers them only where it has a value.
        'columns', (SELECT json_agg(CASE WHEN o > entry.base_columns
                                         THEN json_build_object('name', c, 'type', t, 'added', true)
                                         ELSE json_build_object('name', c, 'type', t) END ORDER BY o)
                      FROM unnest(entry.columns, entry.column_types) WITH ORDINALITY AS x(c, t, o)),
        'definition', entry.definition,
        'definition_now', ledger.definition(tbl)
    )::text;
    -- The definitions registered before columns were added, when there are any.
    IF entry.earlier_definitions IS NOT NULL THEN
        header := left(header, -1) || ', "earlier_definitions" : ' || to_json(entry.earlier_definitions)::text || '}';
    END IF;
    -- A ledger with erasable columns: each record line carries its ledger_erasure object too
    -- (docs/FORMAT.md, "Erasable columns").
    erasure := EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = tbl AND a.attname = 'ledger_erasure'
                                                    AND a.atttypid = 'jsonb'::regtype AND NOT a.attisdropped);
    IF erasure THEN
        header := left(header, -1) || ', "erasure" : true}';
    END IF;
    -- Names and definitions may hold noncharacters too.
    RETURN NEXT CASE WHEN header ~ '[\U0001FFFE-\U0010FFFF]' THEN ledger.escape_noncharacters(header) ELSE header END;

    -- The hashes ledger.prune kept of the records it removed (docs/FORMAT.md, "Pruned records").
    RETURN QUERY SELECT CASE WHEN line ~ '[\U0001FFFE-\U0010FFFF]' THEN ledger.escape_noncharacters(line) ELSE line END
                   FROM ledger.pruned_runs(tbl) r,
                        LATERAL (SELECT json_build_object('pruned', json_build_object(
                                    'chain', r.chain, 'first_seq', r.first_seq, 'last_seq', r.last_seq,
                                    'hashes', encode(r.hashes, 'hex')))::text) AS run(line);

    -- format('%s', v) prints through the type's output function (so char(n) keeps its blanks).
    SELECT string_agg(
               format('CASE WHEN %1$I IS NULL THEN NULL ELSE format(''%%s'', %1$I%2$s) END',
                      c, CASE WHEN t = 'real' THEN '::float8' ELSE '' END),
               ', ' ORDER BY o)
      INTO value_list
      FROM unnest(entry.columns, entry.column_types) WITH ORDINALITY AS x(c, t, o);

    RETURN QUERY EXECUTE format(
        'SELECT CASE WHEN line ~ ''[\U0001FFFE-\U0010FFFF]'' THEN ledger.escape_noncharacters(line) ELSE line END '
        'FROM ONLY %2$s, LATERAL (SELECT json_build_array(%1$s, %4$s hash::text)::text) AS record(line) ORDER BY %3$s seq',
        value_list, table_name,
        CASE WHEN entry.chain_by IS NULL THEN '' ELSE quote_ident(entry.chain_by) || ', ' END,
        CASE WHEN erasure THEN 'ledger_erasure::text, ' ELSE '' END);
END
$$;

-- As of a time before the latest prune's cutoff, a tracked table's state is gone: as_of says so.
CREATE OR REPLACE FUNCTION ledger.as_of(tbl anyelement, at timestamptz) RETURNS SETOF anyelement
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    relid oid := (SELECT typrelid FROM pg_type WHERE oid = pg_typeof(tbl));
    entry ledger.tracked;
BEGIN
    SELECT * INTO entry FROM ledger.tracked t WHERE t.tbl::oid = relid;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'type % is not the row type of a history-tracked table', pg_typeof(tbl)
            USING ERRCODE = 'undefined_object',
                  HINT = 'Pass NULL cast to the table''s row type: ledger.as_of(NULL::accounts, ''2026-01-01'').';
    END IF;
    IF at IS NULL THEN
        RAISE EXCEPTION 'as_of needs a time' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- A prune keeps every key's version as of its cutoff, and the versions after; before it, the
    -- table's state is gone.
    IF at < (SELECT l.pruned_before FROM ledger.ledgers l WHERE l.tbl = entry.history) THEN
        RAISE EXCEPTION 'the history of % before % was pruned', entry.tbl,
                        (SELECT l.pruned_before FROM ledger.ledgers l WHERE l.tbl = entry.history)
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'ledger.prune removed the versions older than its retention that no later time needs.',
                  HINT = 'Ask for a time after the cutoff.';
    END IF;
    RETURN QUERY EXECUTE format(
        'SELECT (pg_catalog.jsonb_populate_record($1, v."row")).* FROM ('
        '  SELECT DISTINCT ON (h.key) h.op, h."row" FROM ONLY %s h WHERE h.at <= $2 ORDER BY h.key, h.seq DESC'
        ') v WHERE v.op <> ''delete''', entry.history)
        USING tbl, at;
END
$$;

SELECT ledger.enable('ledger.pruned', 'ledger');
REVOKE ALL ON ledger.pruned FROM PUBLIC;
GRANT SELECT ON ledger.pruned TO ledger_auditor;
SELECT pg_catalog.pg_extension_config_dump('ledger.pruned', 'WHERE true ORDER BY ledger, seq');
SELECT pg_catalog.pg_extension_config_dump('ledger.ledgers',
    'WHERE tbl NOT IN (''ledger.records''::regclass, ''ledger.checkpoints''::regclass, ''ledger.events''::regclass, ''ledger.verify_runs''::regclass, ''ledger.pruned''::regclass)');
SELECT pg_catalog.pg_extension_config_dump('ledger.events',
    'WHERE ledger NOT IN (''ledger.records'', ''ledger.checkpoints'', ''ledger.events'', ''ledger.verify_runs'', ''ledger.pruned'') ORDER BY ledger, seq');
