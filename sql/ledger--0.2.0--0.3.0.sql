-- ledger 0.2.0 -> 0.3.0: history-tracked tables (ledger.enable_history, ledger.history, ledger.as_of,
-- and ledger.verify's state check, with the registry ledger.tracked and the event triggers guarding
-- tracked tables); the export header carries the ledger's registered definition, so an offline
-- verifier can check a digest's definition line and report a changed definition as ledger.verify
-- does. Nothing stored changes: every record, checkpoint, proof and digest of 0.2.0 verifies as before.

\echo Use "ALTER EXTENSION ledger UPDATE TO '0.3.0'" to load this file. \quit

-- ledger.export's header carries the registered definition and today's (docs/FORMAT.md, "Export"),
-- and its names are quoted alike from every session.
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
        'columns', (SELECT json_agg(json_build_object('name', c, 'type', t) ORDER BY o)
                      FROM unnest(entry.columns, entry.column_types) WITH ORDINALITY AS x(c, t, o)),
        'definition', entry.definition,
        'definition_now', ledger.definition(tbl)
    )::text;
    -- Names and definitions may hold noncharacters too.
    RETURN NEXT CASE WHEN header ~ '[\U0001FFFE-\U0010FFFF]' THEN ledger.escape_noncharacters(header) ELSE header END;

    -- format('%s', v) prints through the type's output function (so char(n) keeps its blanks).
    SELECT string_agg(
               format('CASE WHEN %1$I IS NULL THEN NULL ELSE format(''%%s'', %1$I%2$s) END',
                      c, CASE WHEN t = 'real' THEN '::float8' ELSE '' END),
               ', ' ORDER BY o)
      INTO value_list
      FROM unnest(entry.columns, entry.column_types) WITH ORDINALITY AS x(c, t, o);

    RETURN QUERY EXECUTE format(
        'SELECT CASE WHEN line ~ ''[\U0001FFFE-\U0010FFFF]'' THEN ledger.escape_noncharacters(line) ELSE line END '
        'FROM ONLY %2$s, LATERAL (SELECT json_build_array(%1$s, hash::text)::text) AS record(line) ORDER BY %3$s seq',
        value_list, table_name,
        CASE WHEN entry.chain_by IS NULL THEN '' ELSE quote_ident(entry.chain_by) || ', ' END);
END
$$;
COMMENT ON FUNCTION ledger.export(regclass) IS 'the documented JSON-lines export that offline verifiers read';

-- History-tracked tables (sql/history.sql, src/history.rs).
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

-- ledger.definition pins quote_all_identifiers (a session that set it saw every name quoted, so
-- ledger.verify reported an unchanged ledger's definition as changed), and a history ledger's
-- definition carries its tracked table's (after ledger.tracked exists: the body refers to it).
-- One line per property, in a fixed order (docs/FORMAT.md, "Definitions"). quote_all_identifiers
-- is pinned: a session that sets it would otherwise see every line with a name as changed.
CREATE OR REPLACE FUNCTION ledger.definition(tbl regclass) RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET quote_all_identifiers = off
SET search_path = pg_catalog, pg_temp
AS $$
SELECT concat_ws(E'\n',
    'ledger-definition/v1',
    'table ' || quote_ident(n.nspname) || '.' || quote_ident(c.relname),
    'persistence ' || c.relpersistence::text,
    'row_security ' || c.relrowsecurity || ' ' || c.relforcerowsecurity,
    'chain_by ' || coalesce(quote_ident(l.chain_by), '-'),
    'hashed ' || coalesce(array_to_string(l.columns, ' '), '-'),
    (SELECT string_agg(format('column %I %s%s%s', a.attname, format_type(a.atttypid, a.atttypmod),
                              CASE WHEN a.attcollation <> t.typcollation
                                   THEN ' collate ' || a.attcollation::regcollation END,
                              CASE WHEN a.attnotnull THEN ' not null' END),
                       E'\n' ORDER BY a.attnum)
       FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
      WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
    (SELECT string_agg(format('trigger %s enabled %s', pg_get_triggerdef(g.oid), g.tgenabled::text), E'\n'
                       ORDER BY g.tgname)
       FROM pg_trigger g JOIN pg_proc p ON p.oid = g.tgfoid
      WHERE g.tgrelid = c.oid AND p.pronamespace = 'ledger'::regnamespace),
    (SELECT string_agg('rule ' || regexp_replace(pg_get_ruledef(r.oid), '\s+', ' ', 'g'), E'\n'
                       ORDER BY r.rulename)
       FROM pg_rewrite r WHERE r.ev_class = c.oid),
    -- A child's rows show in every query of the ledger that does not say ONLY, unchained.
    (SELECT string_agg(format('inherited_by %I.%I', cn.nspname, cc.relname), E'\n'
                       ORDER BY cn.nspname, cc.relname)
       FROM pg_inherits i
       JOIN pg_class cc ON cc.oid = i.inhrelid
       JOIN pg_namespace cn ON cn.oid = cc.relnamespace
      WHERE i.inhparent = c.oid),
    -- A history ledger vouches for its tracked table: that table's definition is part of its own.
    (SELECT format('history_of %I.%I %s', tn.nspname, tc.relname,
                   ledger.sha3_256(convert_to(ledger.definition(t.tbl), 'UTF8')))
       FROM ledger.tracked t
       JOIN pg_class tc ON tc.oid = t.tbl
       JOIN pg_namespace tn ON tn.oid = tc.relnamespace
      WHERE t.history = c.oid)
) || E'\n'
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN ledger.ledgers l ON l.tbl = c.oid
WHERE c.oid = definition.tbl  -- the argument (l.tbl is a column)
$$;
COMMENT ON FUNCTION ledger.definition(regclass) IS 'what a ledger''s guarantees rest on: columns, types, triggers, chain key';

CREATE FUNCTION ledger.enable_history(tbl regclass, history text DEFAULT NULL) RETURNS regclass
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'enable_history_wrapper';
COMMENT ON FUNCTION ledger.enable_history(regclass, text) IS 'keeps every version of a table''s rows in a history ledger, one chain per primary key';

CREATE FUNCTION ledger.record_version() RETURNS trigger
LANGUAGE c
AS 'MODULE_PATHNAME', 'record_version_wrapper';

REVOKE ALL ON ledger.tracked FROM PUBLIC;
GRANT SELECT ON ledger.tracked TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('ledger.tracked', '');

-- The event triggers guard tracked tables as they guard ledgers.
CREATE FUNCTION ledger.refuse_tracked_change(tbl regclass, registered text, current text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'history-tracked table % cannot be altered', tbl
        USING ERRCODE = 'insufficient_privilege',
              DETAIL = E'The command changes what the table''s history records and replays:\n'
                       || (SELECT string_agg(change, E'\n' ORDER BY removed DESC, n)
                             FROM (SELECT '- ' || line, true, n
                                     FROM unnest(string_to_array(registered, E'\n')) WITH ORDINALITY AS r(line, n)
                                    WHERE line <> '' AND line <> ALL (string_to_array(current, E'\n'))
                                   UNION ALL
                                   SELECT '+ ' || line, false, n
                                     FROM unnest(string_to_array(current, E'\n')) WITH ORDINALITY AS c(line, n)
                                    WHERE line <> '' AND line <> ALL (string_to_array(registered, E'\n'))
                                  ) AS changes(change, removed, n)),
              HINT = 'Only a superuser can change a tracked table''s definition (and ledger.verify will report it).';
END
$$;

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
        SELECT g.tbl, g.tracked, g.definition AS registered, ledger.definition(g.tbl) AS current
          FROM (SELECT l.tbl, false AS tracked, l.definition FROM ledger.ledgers l
                UNION ALL
                SELECT t.tbl, true, t.definition FROM ledger.tracked t) g
          JOIN relations ON relations.relid = g.tbl::oid
         WHERE g.definition IS NOT NULL
    LOOP
        IF touched.current IS DISTINCT FROM touched.registered THEN
            IF touched.tracked THEN
                PERFORM ledger.refuse_tracked_change(touched.tbl, touched.registered, touched.current);
            END IF;
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
    -- Whole tracked tables: refused, or (by a superuser) no longer tracked; the history stays a ledger.
    FOR dropped IN
        SELECT t.tbl::oid AS relid, d.object_identity, t.history
          FROM pg_event_trigger_dropped_objects() d JOIN ledger.tracked t ON t.tbl::oid = d.objid
         WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0
    LOOP
        IF NOT superuser THEN
            RAISE EXCEPTION 'history-tracked table % cannot be dropped', dropped.object_identity
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = format('Its history %s would no longer be checked against it.', dropped.history),
                      HINT = 'Only a superuser can drop a history-tracked table.';
        END IF;
        DELETE FROM ledger.tracked WHERE tbl::oid = dropped.relid;
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
        SELECT g.tbl, g.tracked, g.definition AS registered, ledger.definition(g.tbl) AS current
          FROM (SELECT l.tbl, false AS tracked, l.definition FROM ledger.ledgers l
                UNION ALL
                SELECT t.tbl, true, t.definition FROM ledger.tracked t) g
          JOIN relations ON relations.relid = g.tbl::oid
         WHERE g.definition IS NOT NULL
    LOOP
        IF dropped.current IS DISTINCT FROM dropped.registered THEN
            IF dropped.tracked THEN
                PERFORM ledger.refuse_tracked_change(dropped.tbl, dropped.registered, dropped.current);
            END IF;
            PERFORM ledger.count_guard_refusal(dropped.tbl, TG_EVENT);
            PERFORM ledger.refuse_definition_change(dropped.tbl, dropped.registered, dropped.current);
        END IF;
    END LOOP;
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
