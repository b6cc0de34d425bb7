-- The noncharacters U+1FFFE, U+1FFFF, ... U+10FFFF as JSON escapes (surrogate pairs): psql drops
-- them from its output, which would make an intact record look tampered with offline.
CREATE FUNCTION ledger.escape_noncharacters(json text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    code int;
BEGIN
    FOR code IN SELECT plane * 65536 + low FROM generate_series(1, 16) plane, (VALUES (65534), (65535)) v(low) LOOP
        json := replace(json, chr(code),
                        format('\u%s\u%s', to_hex(55296 + ((code - 65536) >> 10)), to_hex(56320 + ((code - 65536) & 1023))));
    END LOOP;
    RETURN json;
END
$$;

-- ledger.export(tbl): the documented export (docs/FORMAT.md, "Export"). A header line (with the
-- registered definition and today's, so an offline verifier can compare them as ledger.verify does),
-- then one JSON array per record with each hashed column's text output and the stored hash. The SET
-- clauses pin every setting that shapes text output (quote_all_identifiers the quoting of names), so
-- exports from any session are identical.
CREATE FUNCTION ledger.export(tbl regclass)
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
