-- History-tracked tables (README, "Updatable tables with a history"): an ordinary table stays
-- writable, and every change appends a version to its history ledger, one chain per primary key.

-- The registry: which tables are tracked, by which history ledger, keyed by which columns.
CREATE TABLE ledger.tracked (
    tbl         regclass PRIMARY KEY,
    history     regclass NOT NULL UNIQUE,
    key_columns name[] NOT NULL,
    enabled_at  timestamptz NOT NULL DEFAULT now(),
    enabled_by  name NOT NULL DEFAULT current_user,
    -- ledger.definition(tbl) when tracking began: the event triggers refuse DDL that changes it.
    definition  text
);
COMMENT ON TABLE ledger.tracked IS 'history-tracked tables: the history ledger of each and its primary-key columns';

-- A row's key as its history chain names it: the primary-key columns of `row_data`, as a JSON object
-- in jsonb's text form (so one key has one spelling).
CREATE FUNCTION ledger.version_key(row_data jsonb, key_columns name[]) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT jsonb_object_agg(k::text, row_data -> k::text)::text FROM unnest(key_columns) AS k $$;

-- A key of a tracked table as its history chain names it, whatever its spelling: an object of the
-- primary-key columns, each value read as its column's type and written as the history trigger
-- writes it ({"id": 2.0} is {"id": 2} for an integer key, a time in any offset is the same time).
-- Under the settings the trigger writes rows with, so a time is written alike from every session.
-- (A numeric key keeps its scale: 1.5 and 1.50 are one key to the table, two spellings here.)
CREATE FUNCTION ledger.history_key(tbl regclass, key jsonb) RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, YMD'
SET IntervalStyle = 'iso_8601'
SET extra_float_digits = 3
SET bytea_output = 'hex'
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    entry ledger.tracked;
    normalized text;
BEGIN
    SELECT * INTO entry FROM ledger.tracked t WHERE t.tbl = history_key.tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % is not history-tracked', tbl USING ERRCODE = 'undefined_object',
            HINT = 'ledger.enable_history(tbl) starts tracking a table.';
    END IF;
    IF key IS NULL OR jsonb_typeof(key) <> 'object'
       OR (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(key) k)
          IS DISTINCT FROM (SELECT array_agg(c::text ORDER BY c::text) FROM unnest(entry.key_columns) c) THEN
        RAISE EXCEPTION 'a key of % is an object of its primary-key columns', tbl
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The primary key is (%s).', array_to_string(entry.key_columns, ', ')),
                  HINT = format('For example %s.', (SELECT jsonb_object_agg(c, 1) FROM unnest(entry.key_columns) c));
    END IF;
    -- An integral number for an integer column in integer form (2.0 is 2), which is how its
    -- type's input reads it; any other number is left as it is, and reads so or fails (22P02).
    SELECT jsonb_object_agg(e.k, CASE WHEN jsonb_typeof(e.v) = 'number'
                                       AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)
                                       AND (e.v #>> '{}')::numeric = trunc((e.v #>> '{}')::numeric)
                                      THEN to_jsonb(trunc((e.v #>> '{}')::numeric)) ELSE e.v END)
      INTO key
      FROM jsonb_each(key) AS e(k, v)
      LEFT JOIN pg_attribute a ON a.attrelid = tbl AND a.attname = e.k AND NOT a.attisdropped;
    -- As the caller: reading the values runs the columns' types' input and output functions.
    EXECUTE format('SELECT ledger.version_key(to_jsonb(jsonb_populate_record(NULL::%s, $1)), $2)', tbl)
        INTO normalized USING key, entry.key_columns;
    RETURN normalized;
END
$$;
COMMENT ON FUNCTION ledger.history_key(regclass, jsonb) IS 'a key of a history-tracked table as its history chain names it';

-- An entity's versions, oldest first.
CREATE FUNCTION ledger.history(tbl regclass, key jsonb)
RETURNS TABLE (seq bigint, op text, at timestamptz, role name, "row" jsonb, hash text)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    chain text := ledger.history_key(tbl, key);  -- first: it refuses a table that is not tracked
    history_ledger regclass := (SELECT t.history FROM ledger.tracked t WHERE t.tbl = history.tbl);
BEGIN
    RETURN QUERY EXECUTE format(
        'SELECT h.seq, h.op, h.at, h.role::pg_catalog.name, h."row", h.hash::pg_catalog.text '
        'FROM ONLY %s h WHERE h.key = $1 ORDER BY h.seq', history_ledger)
        USING chain;
END
$$;
COMMENT ON FUNCTION ledger.history(regclass, jsonb) IS 'the versions of one row of a history-tracked table, oldest first';

-- The table as it was at `at`, typed as the table itself: ledger.as_of(NULL::accounts, '2026-01-01').
-- A version counts from its transaction's start time (the history's `at`).
CREATE FUNCTION ledger.as_of(tbl anyelement, at timestamptz) RETURNS SETOF anyelement
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
COMMENT ON FUNCTION ledger.as_of(anyelement, timestamptz) IS 'a history-tracked table as it was at a past time, replayed from its history';

-- The state check of ledger.verify: the current table against the replay of its history, one row
-- per key that differs. Sorted, so memory stays bounded whatever the table's size. Invoker's rights:
-- it reads the two tables as the caller (to_jsonb may run casts of the columns' types).
CREATE FUNCTION ledger.state_problems(tbl regclass)
RETURNS TABLE (key text, seq bigint, problem text, detail text)
LANGUAGE plpgsql STABLE
-- The rows as the trigger recorded them: text no session setting shapes.
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, YMD'
SET IntervalStyle = 'iso_8601'
SET extra_float_digits = 3
SET bytea_output = 'hex'
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    entry ledger.tracked;
BEGIN
    SELECT * INTO entry FROM ledger.tracked t WHERE t.tbl = state_problems.tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % is not history-tracked', tbl USING ERRCODE = 'undefined_object';
    END IF;
    RETURN QUERY EXECUTE format($q$
        WITH current AS (
            SELECT ledger.version_key(to_jsonb(t.*), $1) AS key, to_jsonb(t.*) AS "row" FROM ONLY %s t
        ), replayed AS (
            SELECT DISTINCT ON (h.key) h.key, h.seq, h.op, h."row" FROM ONLY %s h ORDER BY h.key, h.seq DESC, h.hash
        )
        SELECT coalesce(c.key, r.key),
               r.seq,
               CASE WHEN r.key IS NULL OR r.op = 'delete' THEN 'state_unrecorded'
                    WHEN c.key IS NULL THEN 'state_missing'
                    ELSE 'state_mismatch' END,
               CASE WHEN r.key IS NULL THEN 'the row has no version in the history'
                    WHEN r.op = 'delete' THEN format('the history says the row was deleted (seq %%s)', r.seq)
                    WHEN c.key IS NULL THEN format('the history''s last version (seq %%s) is not in the table', r.seq)
                    ELSE format('the row differs from the history''s last version (seq %%s)', r.seq) END
          FROM current c FULL JOIN replayed r ON r.key = c.key
         WHERE c.key IS NULL AND r.op <> 'delete'
            OR r.key IS NULL
            OR (c.key IS NOT NULL AND r.op = 'delete')
            -- Text, not jsonb equality: jsonb says 1.5 = 1.50, the table's numeric does not.
            OR (r.op <> 'delete' AND c."row"::text IS DISTINCT FROM r."row"::text)
         ORDER BY coalesce(c.key, r.key) COLLATE "C"
    $q$, entry.tbl, entry.history) USING entry.key_columns;
END
$$;

-- ledger.export_state(tbl): the current rows of a tracked table, for the offline state check
-- (docs/FORMAT.md, "History-tracked tables"). A header line, then one line per row in key order
-- (UTF-8 octets, whatever the database's collation), each row as the text of to_jsonb(row) carried
-- in a JSON string: the state check compares that text with the history's exactly, and a JSON
-- parser re-printing a nested object could change it (1.50 to 1.5). The SET clauses are those of
-- ledger.export, so exports from any session are identical. `t.*`, not `t`: a column named t would
-- be taken for the row. Invoker's rights: it reads what the caller may read.
CREATE FUNCTION ledger.export_state(tbl regclass)
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
    entry ledger.tracked;
    header text;
BEGIN
    SELECT * INTO entry FROM ledger.tracked t WHERE t.tbl = export_state.tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % is not history-tracked', tbl USING ERRCODE = 'undefined_object',
            HINT = 'ledger.export(tbl) exports a ledger; ledger.enable_history(tbl) starts tracking a table.';
    END IF;
    header := json_build_object(
        'format', 'ledger-state',
        'version', 1,
        'table', (SELECT format('%I.%I', n.nspname, c.relname)
                    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = entry.tbl),
        'history', (SELECT format('%I.%I', n.nspname, c.relname)
                      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = entry.history),
        'key_columns', to_json(entry.key_columns::text[]),
        -- As ledger.verify reports the table's definition_changed, so can an offline verifier.
        'definition', entry.definition,
        'definition_now', ledger.definition(entry.tbl)
    )::text;
    RETURN NEXT CASE WHEN header ~ '[\U0001FFFE-\U0010FFFF]' THEN ledger.escape_noncharacters(header) ELSE header END;
    RETURN QUERY EXECUTE format(
        'SELECT CASE WHEN line ~ ''[\U0001FFFE-\U0010FFFF]'' THEN ledger.escape_noncharacters(line) ELSE line END '
        'FROM (SELECT ledger.version_key(pg_catalog.to_jsonb(t.*), $1) AS key, pg_catalog.to_jsonb(t.*)::text AS "row" '
        '        FROM ONLY %s t) s, '
        'LATERAL (SELECT pg_catalog.json_build_object(''key'', s.key, ''row'', s."row")::text) AS state(line) '
        'ORDER BY s.key COLLATE "C"', entry.tbl)
        USING entry.key_columns;
END
$$;
COMMENT ON FUNCTION ledger.export_state(regclass) IS 'the current rows of a history-tracked table as JSON lines, for checking it against its history offline';
