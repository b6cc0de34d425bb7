-- ledger 0.5.0 -> 0.6.0: partitioned ledgers, and keys of tracked tables read as their types. A table partitioned by range on one column can be a
-- ledger: its chains continue from partition to partition in the order of their bounds, and
-- partitions made later (by hand or by pg_partman) are registered by the definition guard through
-- ledger.register_added_partitions. The definition gains `partitioned_by` and `partition` lines
-- (docs/FORMAT.md, "Partitioned ledgers"), which unpartitioned ledgers do not have: their
-- definitions, and so their checkpoints' fingerprints, are unchanged. Nothing stored changes.

\echo Use "ALTER EXTENSION ledger UPDATE TO '0.6.0'" to load this file. \quit

CREATE FUNCTION ledger.register_added_partitions(tbl oid, registered text, current text) RETURNS boolean
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'register_added_partitions_wrapper';


-- The definition lists a partitioned ledger's partitions (with bounds written in UTC).
CREATE OR REPLACE FUNCTION ledger.definition(tbl regclass) RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET quote_all_identifiers = off
-- Partition bounds are written as values: in one time zone and style whoever asks.
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, YMD'
SET IntervalStyle = 'postgres'
SET extra_float_digits = 1
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
      WHERE i.inhparent = c.oid AND c.relkind <> 'p'),
    -- A partitioned ledger's records are in its partitions: each with its bound, its persistence
    -- and the ledger triggers it carries (docs/FORMAT.md, "Partitioned ledgers").
    CASE WHEN c.relkind = 'p' THEN 'partitioned_by ' || pg_get_partkeydef(c.oid) END,
    (SELECT string_agg(format('partition %I.%I %s persistence %s triggers %s', pn.nspname, pc.relname,
                              pg_get_expr(pc.relpartbound, pc.oid), pc.relpersistence::text,
                              coalesce((SELECT string_agg(g.tgname || ':' || g.tgenabled::text, ',' ORDER BY g.tgname)
                                          FROM pg_trigger g JOIN pg_proc p ON p.oid = g.tgfoid
                                         WHERE g.tgrelid = pc.oid AND p.pronamespace = 'ledger'::regnamespace),
                                       '-')
                              || CASE WHEN pc.relkind = 'p' THEN ' partitioned' ELSE '' END
                              -- DETACH ... CONCURRENTLY commits its first step before any guard
                              -- runs (PostgreSQL 14 and later; read so on 13 too).
                              || CASE WHEN (to_jsonb(i) ->> 'inhdetachpending')::boolean
                                      THEN ' detach_pending' ELSE '' END),
                       E'\n' ORDER BY pn.nspname, pc.relname)
       FROM pg_inherits i
       JOIN pg_class pc ON pc.oid = i.inhrelid
       JOIN pg_namespace pn ON pn.oid = pc.relnamespace
      WHERE i.inhparent = c.oid AND c.relkind = 'p'),
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

-- The guard registers added partitions, maps a partition's DDL to its ledger, refuses dropping
-- a partition and rewriting one.
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
        ),
        -- A partition's DDL (its triggers, its options) changes its partitioned ledger's definition.
        touched_relations AS (
            SELECT relid FROM relations
            UNION SELECT i.inhparent FROM relations JOIN pg_inherits i ON i.inhrelid = relations.relid
        )
        SELECT g.tbl, g.tracked, g.definition AS registered, ledger.definition(g.tbl) AS current
          FROM (SELECT l.tbl, false AS tracked, l.definition FROM ledger.ledgers l
                UNION ALL
                SELECT t.tbl, true, t.definition FROM ledger.tracked t) g
          JOIN touched_relations ON touched_relations.relid = g.tbl::oid
         WHERE g.definition IS NOT NULL
    LOOP
        IF touched.current IS DISTINCT FROM touched.registered THEN
            -- Partitions added to a partitioned ledger (by its owner, pg_partman or a superuser):
            -- registered, or refused when they hold rows.
            IF ledger.register_added_partitions(touched.tbl, touched.registered, touched.current) THEN
                CONTINUE;
            END IF;
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
            -- A dropped table may have been a partition of a ledger (its pg_inherits row is gone).
            UNION
            SELECT l.tbl::oid FROM ledger.ledgers l JOIN pg_class c ON c.oid = l.tbl
             WHERE c.relkind = 'p'
               AND EXISTS (SELECT FROM pg_event_trigger_dropped_objects()
                            WHERE classid = 'pg_class'::regclass AND objsubid = 0 AND object_type = 'table')
        ),
        -- A partition's trigger or rule dropped changes its partitioned ledger's definition.
        touched_relations AS (
            SELECT relid FROM relations
            UNION SELECT i.inhparent FROM relations JOIN pg_inherits i ON i.inhrelid = relations.relid
        )
        SELECT g.tbl, g.tracked, g.definition AS registered, ledger.definition(g.tbl) AS current
          FROM (SELECT l.tbl, false AS tracked, l.definition FROM ledger.ledgers l
                UNION ALL
                SELECT t.tbl, true, t.definition FROM ledger.tracked t) g
          JOIN touched_relations ON touched_relations.relid = g.tbl::oid
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
    IF EXISTS (SELECT FROM ledger.ledgers WHERE tbl::oid = rewritten)
       OR EXISTS (SELECT FROM pg_inherits i JOIN ledger.ledgers l ON l.tbl::oid = i.inhparent
                   WHERE i.inhrelid = rewritten) THEN
        PERFORM ledger.count_guard_refusal(rewritten, TG_EVENT);
        RAISE EXCEPTION 'ledger % cannot be rewritten', rewritten::regclass
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'The command would replace every record without the ledger''s triggers seeing it.',
                  HINT = 'Only a superuser can rewrite a ledger (and checkpoints made before report any change).';
    END IF;
END
$$;

-- ledger.stats reads a partitioned ledger's chain heads from its partitions.
CREATE OR REPLACE FUNCTION ledger.chain_summary(tbl regclass)
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

-- The export reads a partitioned ledger's partitions.
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
        'FROM %5$s%2$s, LATERAL (SELECT json_build_array(%1$s, %4$s hash::text)::text) AS record(line) ORDER BY %3$s seq',
        value_list, table_name,
        CASE WHEN entry.chain_by IS NULL THEN '' ELSE quote_ident(entry.chain_by) || ', ' END,
        CASE WHEN erasure THEN 'ledger_erasure::text, ' ELSE '' END,
        -- ONLY the table (an inheritance child's rows are not records), or all of a partitioned one.
        CASE WHEN (SELECT relkind FROM pg_class WHERE oid = tbl) = 'p' THEN '' ELSE 'ONLY ' END);
END
$$;
COMMENT ON FUNCTION ledger.export(regclass) IS 'the documented JSON-lines export that offline verifiers read';

-- A key of a tracked table is read as its columns' types: ledger.history, ledger.verify(tbl, key)
-- and ledger.redact find {"id": 2.0} for an integer key, and refuse what is no key with 22023.
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

CREATE OR REPLACE FUNCTION ledger.history(tbl regclass, key jsonb)
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
