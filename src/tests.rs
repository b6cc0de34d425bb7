//! In-database unit tests of the glue: datums to canonical values, and the chain head cache.
//! (The SQL contract is in tests/pg_regress; concurrency in tests/integration.)

#[pgrx::pg_schema]
mod tests {
    use crate::datum::{column_type_of, DatumReader};
    use ledger_core::canonical::{ColumnType, Value};
    use ledger_core::json::{JsonCanonicalizer, JsonToken};
    use pgrx::prelude::*;
    use std::ffi::CStr;

    /// Canonical bytes of a jsonb literal, read through the jsonb iterator.
    fn jsonb_bytes(literal: &str) -> Vec<u8> {
        Spi::connect(|client| {
            let rows = client.select(&format!("SELECT '{literal}'::jsonb"), None, &[])?;
            let datum = rows.first().get_datum_by_ordinal(1)?.unwrap();
            let mut reader = DatumReader::new();
            // SAFETY: a jsonb datum, read while the SPI result lives.
            match unsafe { reader.read(ColumnType::Jsonb, datum) } {
                Value::Jsonb(bytes) => Ok::<_, pgrx::spi::Error>(bytes.to_vec()),
                other => panic!("not jsonb: {other:?}"),
            }
        })
        .unwrap()
    }

    #[pg_test]
    fn the_insert_position_past_a_page_header_ends_at_the_boundary() {
        use crate::durability::inserted_end;
        let segment = 16 << 20;
        assert_eq!(inserted_end(segment + 40, segment), segment);
        assert_eq!(inserted_end(segment + 8192 + 24, segment), segment + 8192);
        // Positions inside a page, past its header, are ends as they are.
        assert_eq!(inserted_end(segment + 8192 + 40, segment), segment + 8192 + 40);
        assert_eq!(inserted_end(segment + 24, segment), segment + 24);
        assert_eq!(inserted_end(segment + 8192 + 25, segment), segment + 8192 + 25);
        // And a flush as far as inserted runs in a backend.
        crate::durability::flush_visible_commits();
    }

    #[pg_test]
    fn jsonb_is_read_in_canonical_form() {
        let expected: Vec<u8> = [
            &[0x06, 0, 0, 0, 2][..],
            &[0, 0, 0, 1, b'a', 0x04, 0, 0, 0, 1, b'x'],
            &[0, 0, 0, 1, b'b', 0x05, 0, 0, 0, 2, 0x03, 0, 0, 0, 3, b'1', b'.', b'5', 0x00],
        ]
        .concat();
        assert_eq!(jsonb_bytes(r#"{"b": [1.50, null], "a": "x"}"#), expected);
        // jsonb keeps keys shortest first; the canonical order is by bytes.
        assert_eq!(jsonb_bytes(r#"{"bb": 1, "a": 2}"#), jsonb_bytes(r#"{"a": 2.0, "bb": 1.00}"#));
    }

    #[pg_test]
    fn a_top_level_jsonb_scalar_is_not_an_array() {
        assert_eq!(jsonb_bytes("5"), vec![0x03, 0, 0, 0, 1, b'5']);
        assert_eq!(jsonb_bytes("[5]"), vec![0x05, 0, 0, 0, 1, 0x03, 0, 0, 0, 1, b'5']);
        assert_eq!(jsonb_bytes("null"), vec![0x00]);
    }

    #[pg_test]
    fn deeply_nested_jsonb_is_read_without_recursion() {
        let depth = 5000;
        let literal = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert_eq!(jsonb_bytes(&literal).len(), depth * 5);
    }

    #[pg_test]
    fn every_supported_type_maps_and_reads() {
        let cases = [
            ("true", "boolean", Value::Boolean(true)),
            ("-2", "smallint", Value::Smallint(-2)),
            ("-2", "integer", Value::Integer(-2)),
            ("-2", "bigint", Value::Bigint(-2)),
            ("1.5", "real", Value::Real(1.5)),
            ("-0", "double precision", Value::DoublePrecision(-0.0)),
            ("1.50", "numeric", Value::Numeric("1.50")),
            ("ab", "varchar(5)", Value::Text("ab")),
            ("ab", "char(3)", Value::Text("ab ")),
            ("2000-01-02", "date", Value::Date(1)),
            ("00:00:01", "time", Value::Time(1_000_000)),
            ("2000-01-01 00:00:01", "timestamp", Value::Timestamp(1_000_000)),
            ("2000-01-01 01:00:00+01", "timestamptz", Value::Timestamptz(0)),
            ("1 mon 2 days 00:00:03", "interval", Value::Interval { months: 1, days: 2, microseconds: 3_000_000 }),
        ];
        for (literal, sql_type, expected) in cases {
            let (datum, type_oid) = Spi::connect(|client| {
                let row =
                    client.select(&format!("SELECT '{literal}'::{sql_type}, '{sql_type}'::regtype::oid"), None, &[])?;
                let row = row.first();
                Ok::<_, pgrx::spi::Error>((row.get_datum_by_ordinal(1)?.unwrap(), row.get::<pg_sys::Oid>(2)?.unwrap()))
            })
            .unwrap();
            let column_type = column_type_of(type_oid).unwrap_or_else(|| panic!("{sql_type} unsupported"));
            let mut reader = DatumReader::new();
            // SAFETY: a datum of the mapped type.
            let value = unsafe { reader.read(column_type, datum) };
            assert_eq!(value, expected, "{literal}::{sql_type}");
        }
        assert_eq!(column_type_of(pg_sys::POINTOID), None);
        assert_eq!(column_type_of(pg_sys::INT4ARRAYOID), None);
    }

    #[pg_test]
    fn a_row_skipped_by_a_subtransaction_leaves_no_gap() {
        Spi::run("CREATE TABLE sub (id int PRIMARY KEY, account text NOT NULL)").unwrap();
        Spi::run("SELECT ledger.enable('sub', 'account')").unwrap();
        // Every third row fails inside its own subtransaction, in the middle of one INSERT ... SELECT.
        Spi::run(
            "CREATE FUNCTION add(i int) RETURNS boolean LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO sub VALUES (i, 'a');
                 IF i % 3 = 0 THEN RAISE EXCEPTION 'skip'; END IF;
                 RETURN true;
             EXCEPTION WHEN raise_exception THEN
                 RETURN false;
             END $$",
        )
        .unwrap();
        Spi::run("SELECT add(i) FROM generate_series(1, 10) i").unwrap();
        Spi::run("SAVEPOINT s; INSERT INTO sub VALUES (100, 'a'); ROLLBACK TO SAVEPOINT s").ok();
        Spi::run("INSERT INTO sub VALUES (11, 'a')").unwrap();
        let (count, max) = Spi::get_two::<i64, i64>("SELECT count(*), max(seq) FROM sub").unwrap();
        assert_eq!(count, Some(8));
        assert_eq!(max, Some(8));
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM ledger.verify('sub')").unwrap(), Some(0));
    }

    #[pg_test]
    fn the_head_is_reread_when_a_later_command_finds_a_skipped_row() {
        Spi::run("CREATE TABLE idem (id int PRIMARY KEY, body text)").unwrap();
        Spi::run("SELECT ledger.enable('idem')").unwrap();
        Spi::run("INSERT INTO idem VALUES (1, 'first')").unwrap();
        // The conflicting row gets a link without becoming the head, then ON CONFLICT drops it.
        Spi::run("INSERT INTO idem VALUES (1, 'again') ON CONFLICT (id) DO NOTHING").unwrap();
        Spi::run("INSERT INTO idem VALUES (2, 'second')").unwrap();
        assert_eq!(Spi::get_one::<i64>("SELECT max(seq) FROM idem").unwrap(), Some(2));
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM ledger.verify('idem')").unwrap(), Some(0));
    }

    /// Canonical JSON of a jsonb datum by PostgreSQL's own iterator and numeric output: the oracle
    /// the extension's direct reading of the stored form is checked against.
    unsafe fn canonical_by_iterator(datum: pg_sys::Datum) -> Vec<u8> {
        let jsonb = pg_sys::pg_detoast_datum(datum.cast_mut_ptr()) as *mut pg_sys::Jsonb;
        let mut iterator = pg_sys::JsonbIteratorInit(&mut (*jsonb).root);
        let mut value: pg_sys::JsonbValue = std::mem::zeroed();
        let mut raw_scalar = Vec::new();
        let mut out = JsonCanonicalizer::new();
        let text = |v: &pg_sys::JsonbValue| {
            let s = v.val.string;
            std::str::from_utf8(std::slice::from_raw_parts(s.val as *const u8, s.len as usize)).unwrap().to_string()
        };
        loop {
            let token = pg_sys::JsonbIteratorNext(&mut iterator, &mut value, false);
            match token {
                pg_sys::JsonbIteratorToken::WJB_DONE => break,
                pg_sys::JsonbIteratorToken::WJB_BEGIN_ARRAY => {
                    raw_scalar.push(value.val.array.rawScalar);
                    if !value.val.array.rawScalar {
                        out.push(JsonToken::BeginArray).unwrap();
                    }
                }
                pg_sys::JsonbIteratorToken::WJB_END_ARRAY => {
                    if raw_scalar.pop() != Some(true) {
                        out.push(JsonToken::EndArray).unwrap();
                    }
                }
                pg_sys::JsonbIteratorToken::WJB_BEGIN_OBJECT => out.push(JsonToken::BeginObject).unwrap(),
                pg_sys::JsonbIteratorToken::WJB_END_OBJECT => out.push(JsonToken::EndObject).unwrap(),
                pg_sys::JsonbIteratorToken::WJB_KEY => out.push(JsonToken::Key(&text(&value))).unwrap(),
                _ => match value.type_ {
                    pg_sys::jbvType::jbvNull => out.push(JsonToken::Null).unwrap(),
                    pg_sys::jbvType::jbvBool => out.push(JsonToken::Bool(value.val.boolean)).unwrap(),
                    pg_sys::jbvType::jbvString => out.push(JsonToken::String(&text(&value))).unwrap(),
                    pg_sys::jbvType::jbvNumeric => {
                        let number = numeric_out(pg_sys::Datum::from(value.val.numeric));
                        out.push(JsonToken::Number(&number)).unwrap()
                    }
                    other => panic!("jsonb value type {other}"),
                },
            }
        }
        out.finish().unwrap().to_vec()
    }

    unsafe fn numeric_out(datum: pg_sys::Datum) -> String {
        let text = pgrx::fcinfo::direct_function_call_as_datum(pg_sys::numeric_out, &[Some(datum)]).unwrap();
        CStr::from_ptr(text.cast_mut_ptr()).to_string_lossy().into_owned()
    }

    /// Every value of the first column of `query`, as a datum, with `f` applied while it is valid.
    fn each_datum(query: &str, mut f: impl FnMut(pg_sys::Datum)) {
        Spi::connect(|client| {
            let mut rows = client.select(query, None, &[])?;
            while rows.next().is_some() {
                f(rows.get_datum_by_ordinal(1)?.unwrap());
            }
            Ok::<_, pgrx::spi::Error>(())
        })
        .unwrap();
    }

    #[pg_test]
    fn stored_jsonb_reads_as_postgresql_iterates_it() {
        // Small and large containers (offsets stored every 32 children), nesting, every scalar
        // type, numbers of every shape, keys needing more than one byte, and toasted values.
        let corpus = r#"
            SELECT v::jsonb FROM (VALUES ('null'), ('true'), ('false'), ('0'), ('-0.0'), ('1.50'), ('1e20'),
                ('-1e-20'), ('123456789012345678901234567890.123456789'), ('"s"'), ('""'), ('"é ✓ 𝄞"'),
                ('[]'), ('{}'), ('[null, [], {}, [[[1]]]]'), ('{"b": [1.50, null, true], "a": "x", "ab": {"c": -7}}'),
                ('{"": 0, "😀": "x", "a\\tb": 1}')) AS t(v)
            UNION ALL SELECT jsonb_agg(g * 1.25) FROM generate_series(1, 100) g
            UNION ALL SELECT jsonb_object_agg('key' || g, CASE WHEN g % 2 = 0 THEN to_jsonb(g) ELSE to_jsonb('v' || g) END)
                      FROM generate_series(1, 70) g
            UNION ALL SELECT jsonb_build_object('long', repeat('x', 100000), 'n', 1)
            UNION ALL SELECT jsonb_agg(jsonb_build_object('i', g, 'f', g / 7.0, 'neg', -g * 10000000000, 'b', g % 2 = 0))
                      FROM generate_series(1, 300) g
            UNION ALL SELECT (repeat('[', 500) || '1' || repeat(']', 500))::jsonb"#;
        let mut checked = 0;
        let mut reader = DatumReader::new();
        each_datum(corpus, |datum| {
            reader.begin_record();
            // SAFETY: a jsonb datum, valid while the SPI result lives.
            let (direct, oracle) = unsafe {
                let Value::Jsonb(direct) = reader.read(ColumnType::Jsonb, datum) else { panic!("not jsonb") };
                (direct.to_vec(), canonical_by_iterator(datum))
            };
            assert_eq!(direct, oracle, "value {checked} of the corpus");
            checked += 1;
        });
        assert_eq!(checked, 22);
    }

    #[pg_test]
    fn stored_numerics_read_as_numeric_out_writes_them() {
        let corpus = "
            SELECT v::numeric FROM (VALUES ('0'), ('-0'), ('0.000'), ('1.50'), ('-1.50'), ('NaN'), ('Infinity'),
                ('-Infinity'), ('9999'), ('10000'), ('0.0001'), ('-0.00010'), ('1e-100'), ('1e100'),
                ('123456789012345678901234567890.123456789012345678901234567890'),
                ('0.000000000000000000000000000001'), ('99999999.99999999')) AS t(v)
            UNION ALL SELECT round((random() - 0.5)::numeric * 10::numeric ^ (g % 40 - 20), g % 25)
                      FROM generate_series(1, 2000) g
            UNION ALL SELECT (g::numeric / 7) ^ (g % 5) FROM generate_series(1, 200) g
            UNION ALL SELECT factorial(g % 60) * power(10::numeric, -(g % 30)) FROM generate_series(1, 200) g";
        let mut checked = 0;
        let mut reader = DatumReader::new();
        each_datum(corpus, |datum| {
            reader.begin_record();
            // SAFETY: a numeric datum, valid while the SPI result lives.
            let (direct, oracle) = unsafe {
                let Value::Numeric(direct) = reader.read(ColumnType::Numeric, datum) else { panic!("not numeric") };
                (direct.to_string(), numeric_out(datum))
            };
            assert_eq!(direct, oracle);
            checked += 1;
        });
        assert_eq!(checked, 2417);
    }
}
