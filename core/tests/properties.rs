//! Property tests: the canonical encoding is injective, canonical JSON ignores key order and
//! whitespace only, and the proof and digest parsers take any input without panicking.

use ledger_core::canonical::{ColumnType, RecordEncoder, Value};
use ledger_core::json::{JsonCanonicalizer, JsonToken};
use ledger_core::merkle;
use ledger_core::note::Note;
use ledger_core::proof::{ConsistencyProof, InclusionProof};
use proptest::prelude::*;

/// An owned value, so strategies can generate it.
#[derive(Debug, Clone, PartialEq)]
enum Owned {
    Null,
    Int(i64),
    Float(f64),
    Numeric(String),
    Text(String),
    Bytes(Vec<u8>),
    Interval(i32, i32, i64),
}

impl Owned {
    fn column_type(&self, fallback: ColumnType) -> ColumnType {
        match self {
            Owned::Null => fallback,
            Owned::Int(_) => ColumnType::Bigint,
            Owned::Float(_) => ColumnType::DoublePrecision,
            Owned::Numeric(_) => ColumnType::Numeric,
            Owned::Text(_) => ColumnType::Text,
            Owned::Bytes(_) => ColumnType::Bytea,
            Owned::Interval(..) => ColumnType::Interval,
        }
    }

    fn value(&self) -> Value<'_> {
        match self {
            Owned::Null => Value::Null,
            Owned::Int(v) => Value::Bigint(*v),
            Owned::Float(v) => Value::DoublePrecision(*v),
            Owned::Numeric(v) => Value::Numeric(v),
            Owned::Text(v) => Value::Text(v),
            Owned::Bytes(v) => Value::Bytea(v),
            Owned::Interval(m, d, us) => Value::Interval { months: *m, days: *d, microseconds: *us },
        }
    }

    /// The value as the database holds it: every NaN is one value.
    fn same_stored_value(&self, other: &Owned) -> bool {
        match (self, other) {
            (Owned::Float(a), Owned::Float(b)) => (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits(),
            _ => self == other,
        }
    }
}

fn owned() -> impl Strategy<Value = Owned> {
    prop_oneof![
        Just(Owned::Null),
        any::<i64>().prop_map(Owned::Int),
        any::<f64>().prop_map(Owned::Float),
        "-?[0-9]{1,5}(\\.[0-9]{0,4})?".prop_map(Owned::Numeric),
        ".{0,12}".prop_map(Owned::Text),
        prop::collection::vec(any::<u8>(), 0..12).prop_map(Owned::Bytes),
        (any::<i32>(), any::<i32>(), any::<i64>()).prop_map(|(m, d, us)| Owned::Interval(m, d, us)),
    ]
}

/// A row: names and values, with each column's type fixed by its first non-null value.
fn encode(names: &[String], values: &[Owned]) -> Vec<u8> {
    let mut encoder = RecordEncoder::new();
    encoder.begin(values.len() as u32);
    for (name, value) in names.iter().zip(values) {
        encoder.column(name, value.column_type(ColumnType::Text), &value.value()).unwrap();
    }
    encoder.bytes().to_vec()
}

proptest! {
    #[test]
    fn distinct_rows_never_encode_alike(
        names_a in prop::collection::vec("[a-z]{0,3}", 1..5),
        values_a in prop::collection::vec(owned(), 1..5),
        names_b in prop::collection::vec("[a-z]{0,3}", 1..5),
        values_b in prop::collection::vec(owned(), 1..5),
    ) {
        let n_a = names_a.len().min(values_a.len());
        let n_b = names_b.len().min(values_b.len());
        let (names_a, values_a) = (&names_a[..n_a], &values_a[..n_a]);
        let (names_b, values_b) = (&names_b[..n_b], &values_b[..n_b]);
        let same_row = n_a == n_b
            && names_a == names_b
            && values_a.iter().zip(values_b).all(|(a, b)| {
                a.same_stored_value(b) && a.column_type(ColumnType::Text) == b.column_type(ColumnType::Text)
            });
        prop_assert_eq!(encode(names_a, values_a) == encode(names_b, values_b), same_row);
    }
}

#[derive(Debug, Clone)]
enum Json {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

fn json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        "-?[0-9]{1,4}(\\.[0-9]{1,3})?".prop_map(Json::Number),
        ".{0,6}".prop_map(Json::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Json::Array),
            prop::collection::btree_map(".{0,4}", inner, 0..5).prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

fn feed(c: &mut JsonCanonicalizer, v: &Json, reverse_keys: bool) {
    match v {
        Json::Null => c.push(JsonToken::Null).unwrap(),
        Json::Bool(b) => c.push(JsonToken::Bool(*b)).unwrap(),
        Json::Number(n) => c.push(JsonToken::Number(n)).unwrap(),
        Json::String(s) => c.push(JsonToken::String(s)).unwrap(),
        Json::Array(items) => {
            c.push(JsonToken::BeginArray).unwrap();
            items.iter().for_each(|i| feed(c, i, reverse_keys));
            c.push(JsonToken::EndArray).unwrap();
        }
        Json::Object(members) => {
            c.push(JsonToken::BeginObject).unwrap();
            let mut order: Vec<&(String, Json)> = members.iter().collect();
            if reverse_keys {
                order.reverse();
            }
            for (k, v) in order {
                c.push(JsonToken::Key(k)).unwrap();
                feed(c, v, reverse_keys);
            }
            c.push(JsonToken::EndObject).unwrap();
        }
    }
}

fn canonical(v: &Json, reverse_keys: bool) -> Vec<u8> {
    let mut c = JsonCanonicalizer::new();
    feed(&mut c, v, reverse_keys);
    c.finish().unwrap().to_vec()
}

proptest! {
    #[test]
    fn key_order_never_changes_canonical_json(v in json()) {
        prop_assert_eq!(canonical(&v, false), canonical(&v, true));
    }

    #[test]
    fn proof_parsers_take_any_json_without_panicking(text in ".{0,200}") {
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) {
            let _ = InclusionProof::parse(&value).map(|p| p.verify(&[0; 32], &[0; 32]));
            let _ = ConsistencyProof::parse(&value).map(|p| p.verify());
        }
    }

    #[test]
    fn proof_verifiers_take_any_numbers_without_panicking(
        seq in any::<u64>(), size in any::<u64>(), old in any::<u64>(),
        path in prop::collection::vec(any::<[u8; 32]>(), 0..70),
    ) {
        let _ = InclusionProof { seq, tree_size: size, path: path.clone() }.verify(&[1; 32], &[2; 32]);
        let _ = merkle::verify_consistency(old, size, &[1; 32], &[2; 32], &path);
    }

    #[test]
    fn the_digest_parser_takes_any_text_without_panicking(text in "(ledger|chain|size|root|previous|time|checkpoint|key|none|\u{2014}| |\n|[a-z0-9+/=\"]){0,60}") {
        if let Ok(note) = Note::parse(&text) {
            let _ = note.signature_valid();
        }
    }

    #[test]
    fn a_digest_with_one_line_changed_fails_or_does_not_parse(line in 1usize..10, junk in "[a-z0-9 ]{1,8}") {
        use ed25519_dalek::SigningKey;
        use ledger_core::note::{render, sign, Statement};
        let key = SigningKey::from_bytes(&[3; 32]);
        let st = Statement {
            ledger: "public.t".into(), chain: None, size: 3, root: [9; 32], previous: None,
            time: "2026-01-01T00:00:00.000000Z".into(), checkpoint: "c".into(),
            public_key: Some(key.verifying_key().to_bytes()), definition: Some([7; 32]),
        };
        let text = render(&st, Some(&sign(&st.body(), &key)));
        let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
        lines[line].push_str(&junk);
        if let Ok(note) = Note::parse(&lines.join("\n")) {
            prop_assert!(!note.signature_valid());
        }
    }
}
