-- ledger 0.3.0 -> 0.4.0: columns added to a ledger (ALTER TABLE ... ADD COLUMN, by the table's
-- owner) are registered and covered by every record that has a value in them (docs/FORMAT.md,
-- "Added columns"); the change is recorded in the ledger's chain of ledger.events ('alter'), and
-- checkpoints and digests made before it still verify. Columns added to a history-tracked table
-- append an update version of every row as it now reads. The library also makes history ledgers of
-- tracked tables without the version id column (vid) of 0.3.0: their primary key is (key, seq).
-- Histories made by 0.3.0 keep vid (it is hashed in their records). Nothing stored changes: every
-- record, checkpoint, proof and digest of 0.3.0 verifies as before.

\echo Use "ALTER EXTENSION ledger UPDATE TO '0.4.0'" to load this file. \quit

-- The registry: how many columns every record covers (those after them were added), and the
-- definitions registered before columns were added.
ALTER TABLE ledger.ledgers ADD COLUMN base_columns integer, ADD COLUMN earlier_definitions text[];
ALTER TABLE ledger.events DROP CONSTRAINT events_event_check,
    ADD CONSTRAINT events_event_check CHECK (event IN ('enable', 'retire', 'drop', 'alter'));
COMMENT ON TABLE ledger.events IS 'who enabled, altered, retired or dropped each ledger, when and why; itself a ledger';

CREATE FUNCTION ledger.register_added_columns(tbl oid, registered text, current text) RETURNS boolean
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'register_added_columns_wrapper';

-- The definition lists the added columns; the guard registers additions (and tells what to do
-- instead of dropping, renaming or retyping a hashed column); the export marks added columns and
-- carries the earlier definitions.
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
    -- Columns added after enable (ALTER TABLE ... ADD COLUMN): covered by records that have a value.
    CASE WHEN l.base_columns < cardinality(l.columns)
         THEN 'added ' || array_to_string(l.columns[l.base_columns + 1:], ' ') END,
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
              HINT = 'A hashed column''s name, type and values are in every record''s hash: instead of dropping, '
                     'renaming or retyping one, add a column (ALTER TABLE ... ADD COLUMN, without a default) '
                     'and stop writing the old one. To stop appending, use ledger.retire(). Only a superuser '
                     'can change a ledger''s definition otherwise (and ledger.verify will report it).';
END
$$;

CREATE OR REPLACE FUNCTION ledger.guard_ddl() RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    superuser boolean := (SELECT rolsuper FROM pg_roles WHERE rolname = current_user);
    touched record;
BEGIN
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
            -- Columns added to a ledger or a tracked table, by its owner or a superuser: registered
            -- (a tracked table's rows recorded as they now read), or refused when records could
            -- not cover them.
            IF ledger.register_added_columns(touched.tbl, touched.registered, touched.current) THEN
                CONTINUE;
            END IF;
            -- Any other change by a superuser stands, and ledger.verify reports it.
            IF superuser THEN
                CONTINUE;
            END IF;
            IF touched.tracked THEN
                PERFORM ledger.refuse_tracked_change(touched.tbl, touched.registered, touched.current);
            END IF;
            PERFORM ledger.count_guard_refusal(touched.tbl, TG_EVENT);
            PERFORM ledger.refuse_definition_change(touched.tbl, touched.registered, touched.current);
        END IF;
    END LOOP;
END
$$;

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
