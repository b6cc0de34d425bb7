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

-- Appends the versions of one row change to the table's history. Called by the tracked table's
-- trigger as the extension's owner (so the role that changed the row needs no right on the history,
-- and cannot choose what is recorded); not callable by other roles.
CREATE FUNCTION ledger.append_version(tbl regclass, op text, actor text, old_row jsonb, new_row jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    entry ledger.tracked;
    old_key text;
    new_key text;
    append text;
BEGIN
    SELECT * INTO entry FROM ledger.tracked t WHERE t.tbl = append_version.tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % is not history-tracked', tbl USING ERRCODE = 'undefined_object';
    END IF;
    append := format('INSERT INTO %s (key, op, at, role, txid, "row") '
                     'VALUES ($1, $2, pg_catalog.now(), $3, pg_catalog.txid_current(), $4)', entry.history);
    old_key := ledger.version_key(old_row, entry.key_columns);
    new_key := ledger.version_key(new_row, entry.key_columns);
    IF op = 'update' AND old_key IS DISTINCT FROM new_key THEN
        -- A new primary key is a new entity: the old one's history ends, the new one's begins.
        EXECUTE append USING old_key, 'delete', actor, NULL::jsonb;
        EXECUTE append USING new_key, 'insert', actor, new_row;
    ELSIF op = 'delete' THEN
        EXECUTE append USING old_key, 'delete', actor, NULL::jsonb;
    ELSE
        EXECUTE append USING new_key, op, actor, new_row;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION ledger.append_version(regclass, text, text, jsonb, jsonb) FROM PUBLIC;

-- An entity's versions, oldest first.
CREATE FUNCTION ledger.history(tbl regclass, key jsonb)
RETURNS TABLE (seq bigint, op text, at timestamptz, role name, "row" jsonb, hash text)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    entry ledger.tracked;
BEGIN
    SELECT * INTO entry FROM ledger.tracked t WHERE t.tbl = history.tbl;
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
    RETURN QUERY EXECUTE format(
        'SELECT h.seq, h.op, h.at, h.role::pg_catalog.name, h."row", h.hash::pg_catalog.text '
        'FROM ONLY %s h WHERE h.key = $1 ORDER BY h.seq', entry.history)
        USING ledger.version_key(key, entry.key_columns);
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
    RETURN QUERY EXECUTE format(
        'SELECT (pg_catalog.jsonb_populate_record($1, v."row")).* FROM ('
        '  SELECT DISTINCT ON (h.key) h.op, h."row" FROM ONLY %s h WHERE h.at <= $2 ORDER BY h.key, h.seq DESC'
        ') v WHERE v.op <> ''delete''', entry.history)
        USING tbl, at;
END
$$;
COMMENT ON FUNCTION ledger.as_of(anyelement, timestamptz) IS 'a history-tracked table as it was at a past time, replayed from its history';

-- The state check of ledger.verify: the current table against the replay of its history, one row
-- per key that differs. Sorted, so memory stays bounded whatever the table's size.
CREATE FUNCTION ledger.state_problems(tbl regclass)
RETURNS TABLE (key text, seq bigint, problem text, detail text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    entry ledger.tracked;
BEGIN
    SELECT * INTO STRICT entry FROM ledger.tracked t WHERE t.tbl = state_problems.tbl;
    RETURN QUERY EXECUTE format($q$
        WITH current AS (
            SELECT ledger.version_key(to_jsonb(t), $1) AS key, to_jsonb(t) AS "row" FROM ONLY %s t
        ), replayed AS (
            SELECT DISTINCT ON (h.key) h.key, h.seq, h.op, h."row" FROM ONLY %s h ORDER BY h.key, h.seq DESC
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
         ORDER BY 1
    $q$, entry.tbl, entry.history) USING entry.key_columns;
END
$$;
REVOKE ALL ON FUNCTION ledger.state_problems(regclass) FROM PUBLIC;
