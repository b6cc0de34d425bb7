-- ledger 0.2.0 -> 0.3.0: the export header carries the ledger's registered definition, so an offline
-- verifier can check a digest's definition line and report a changed definition as ledger.verify does.
-- Nothing stored changes: every record, checkpoint, proof and digest of 0.2.0 verifies as before.

\echo Use "ALTER EXTENSION ledger UPDATE TO '0.3.0'" to load this file. \quit

-- ledger.definition pins quote_all_identifiers: a session that set it saw every name quoted, so
-- ledger.verify reported an unchanged ledger's definition as changed.
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
      WHERE i.inhparent = c.oid)
) || E'\n'
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN ledger.ledgers l ON l.tbl = c.oid
WHERE c.oid = definition.tbl  -- the argument (l.tbl is a column)
$$;
COMMENT ON FUNCTION ledger.definition(regclass) IS 'what a ledger''s guarantees rest on: columns, types, triggers, chain key';

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
        RAISE EXCEPTION 'table % is not a ledger', tbl USING ERRCODE = 'undefined_object';
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
