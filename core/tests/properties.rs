//! Property tests: the canonical encoding is injective, canonical JSON ignores key order and
//! whitespace only, and the proof and digest parsers take any input without panicking.

use ledger_core::canonical::{ColumnType, RecordEncoder, Value};
use ledger_core::json::{JsonCanonicalizer, JsonToken};
use ledger_core::merkle;
use ledger_core::note::Note;
use ledger_core::proof::{ConsistencyProof, InclusionProof};
use proptest::prelude::*;

/// An owned value of every supported type (NULL with its column's type), so strategies can
/// generate it.
#[derive(Debug, Clone, PartialEq)]
enum Owned {
    Null(ColumnType),
    Boolean(bool),
    Smallint(i16),
    Integer(i32),
    Bigint(i64),
    Real(f32),
    Double(f64),
    Numeric(String),
    Text(String),
    Bytes(Vec<u8>),
    Uuid([u8; 16]),
    /// Canonical JSON bytes, as the reader hands them over.
    Jsonb(Vec<u8>),
    Date(i32),
    Time(i64),
    Timestamp(i64),
    Timestamptz(i64),
    Interval(i32, i32, i64),
}

impl Owned {
    fn column_type(&self) -> ColumnType {
        match self {
            Owned::Null(t) => *t,
            Owned::Boolean(_) => ColumnType::Boolean,
            Owned::Smallint(_) => ColumnType::Smallint,
            Owned::Integer(_) => ColumnType::Integer,
            Owned::Bigint(_) => ColumnType::Bigint,
            Owned::Real(_) => ColumnType::Real,
            Owned::Double(_) => ColumnType::DoublePrecision,
            Owned::Numeric(_) => ColumnType::Numeric,
            Owned::Text(_) => ColumnType::Text,
            Owned::Bytes(_) => ColumnType::Bytea,
            Owned::Uuid(_) => ColumnType::Uuid,
            Owned::Jsonb(_) => ColumnType::Jsonb,
            Owned::Date(_) => ColumnType::Date,
            Owned::Time(_) => ColumnType::Time,
            Owned::Timestamp(_) => ColumnType::Timestamp,
            Owned::Timestamptz(_) => ColumnType::Timestamptz,
            Owned::Interval(..) => ColumnType::Interval,
        }
    }

    fn value(&self) -> Value<'_> {
        match self {
            Owned::Null(_) => Value::Null,
            Owned::Boolean(v) => Value::Boolean(*v),
            Owned::Smallint(v) => Value::Smallint(*v),
            Owned::Integer(v) => Value::Integer(*v),
            Owned::Bigint(v) => Value::Bigint(*v),
            Owned::Real(v) => Value::Real(*v),
            Owned::Double(v) => Value::DoublePrecision(*v),
            Owned::Numeric(v) => Value::Numeric(v),
            Owned::Text(v) => Value::Text(v),
            Owned::Bytes(v) => Value::Bytea(v),
            Owned::Uuid(v) => Value::Uuid(v),
            Owned::Jsonb(v) => Value::Jsonb(v),
            Owned::Date(v) => Value::Date(*v),
            Owned::Time(v) => Value::Time(*v),
            Owned::Timestamp(v) => Value::Timestamp(*v),
            Owned::Timestamptz(v) => Value::Timestamptz(*v),
            Owned::Interval(m, d, us) => Value::Interval { months: *m, days: *d, microseconds: *us },
        }
    }

    /// The same value as the database holds it: every NaN is one value (-0 is not 0).
    fn same_stored_value(&self, other: &Owned) -> bool {
        match (self, other) {
            (Owned::Double(a), Owned::Double(b)) => (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits(),
            (Owned::Real(a), Owned::Real(b)) => (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits(),
            _ => self == other,
        }
    }
}

fn column_type() -> impl Strategy<Value = ColumnType> {
    prop::sample::select(ColumnType::ALL.to_vec())
}

fn owned() -> impl Strategy<Value = Owned> {
    prop_oneof![
        column_type().prop_map(Owned::Null),
        any::<bool>().prop_map(Owned::Boolean),
        any::<i16>().prop_map(Owned::Smallint),
        any::<i32>().prop_map(Owned::Integer),
        any::<i64>().prop_map(Owned::Bigint),
        any::<f32>().prop_map(Owned::Real),
        any::<f64>().prop_map(Owned::Double),
        "-?[0-9]{1,5}(\\.[0-9]{0,4})?|NaN|-?Infinity".prop_map(Owned::Numeric),
        ".{0,12}".prop_map(Owned::Text),
        prop::collection::vec(any::<u8>(), 0..12).prop_map(Owned::Bytes),
        any::<[u8; 16]>().prop_map(Owned::Uuid),
        prop::collection::vec(any::<u8>(), 1..12).prop_map(Owned::Jsonb),
        any::<i32>().prop_map(Owned::Date),
        any::<i64>().prop_map(Owned::Time),
        any::<i64>().prop_map(Owned::Timestamp),
        any::<i64>().prop_map(Owned::Timestamptz),
        (any::<i32>(), any::<i32>(), any::<i64>()).prop_map(|(m, d, us)| Owned::Interval(m, d, us)),
    ]
}

fn encode(names: &[String], values: &[Owned]) -> Vec<u8> {
    let mut encoder = RecordEncoder::new();
    encoder.begin(values.len() as u32);
    for (name, value) in names.iter().zip(values) {
        encoder.column(name, value.column_type(), &value.value()).unwrap();
    }
    encoder.bytes().to_vec()
}

fn same_row(names_a: &[String], values_a: &[Owned], names_b: &[String], values_b: &[Owned]) -> bool {
    names_a == names_b
        && values_a.len() == values_b.len()
        && values_a.iter().zip(values_b).all(|(a, b)| a.column_type() == b.column_type() && a.same_stored_value(b))
}

/// A small change to one row: what tampering, or a confusable value, looks like.
#[derive(Debug, Clone)]
enum Nudge {
    /// Flip one bit of one value's stored form (numbers, times, bytes, text).
    FlipBit { column: usize, bit: u32 },
    /// Move the boundary between two adjacent text or bytea values ("ab"+"c" vs "a"+"bc").
    MoveBoundary { column: usize },
    /// The same bits under another type of the same width (integer 5 vs date 5).
    Retype { column: usize, to: ColumnType },
    /// NULL instead of the value (or the empty value instead of NULL).
    Nullify { column: usize },
    /// Rename a column.
    Rename { column: usize },
}

fn nudge() -> impl Strategy<Value = Nudge> {
    prop_oneof![
        (any::<usize>(), 0u32..64).prop_map(|(column, bit)| Nudge::FlipBit { column, bit }),
        any::<usize>().prop_map(|column| Nudge::MoveBoundary { column }),
        (any::<usize>(), column_type()).prop_map(|(column, to)| Nudge::Retype { column, to }),
        any::<usize>().prop_map(|column| Nudge::Nullify { column }),
        any::<usize>().prop_map(|column| Nudge::Rename { column }),
    ]
}

fn flip(value: &Owned, bit: u32) -> Owned {
    match value {
        Owned::Boolean(v) => Owned::Boolean(!v),
        Owned::Smallint(v) => Owned::Smallint(v ^ (1 << (bit % 16))),
        Owned::Integer(v) => Owned::Integer(v ^ (1 << (bit % 32))),
        Owned::Bigint(v) => Owned::Bigint(v ^ (1 << bit)),
        Owned::Real(v) => Owned::Real(f32::from_bits(v.to_bits() ^ (1 << (bit % 32)))),
        Owned::Double(v) => Owned::Double(f64::from_bits(v.to_bits() ^ (1 << bit))),
        Owned::Date(v) => Owned::Date(v ^ (1 << (bit % 32))),
        Owned::Time(v) => Owned::Time(v ^ (1 << bit)),
        Owned::Timestamp(v) => Owned::Timestamp(v ^ (1 << bit)),
        Owned::Timestamptz(v) => Owned::Timestamptz(v ^ (1 << bit)),
        Owned::Interval(m, d, us) => Owned::Interval(*m, *d, us ^ (1 << bit)),
        Owned::Uuid(v) => {
            let mut v = *v;
            v[(bit / 8) as usize % 16] ^= 1 << (bit % 8);
            Owned::Uuid(v)
        }
        Owned::Bytes(v) | Owned::Jsonb(v) if !v.is_empty() => {
            let mut v = v.clone();
            let i = bit as usize % v.len();
            v[i] ^= 1 << (bit % 8);
            if matches!(value, Owned::Bytes(_)) {
                Owned::Bytes(v)
            } else {
                Owned::Jsonb(v)
            }
        }
        Owned::Bytes(_) => Owned::Bytes(vec![bit as u8]),
        Owned::Jsonb(v) => Owned::Jsonb([v.as_slice(), &[0]].concat()),
        Owned::Text(v) => Owned::Text(format!("{v}{}", char::from(b'a' + (bit % 26) as u8))),
        Owned::Numeric(v) => Owned::Numeric(format!("{v}0")),
        Owned::Null(t) => Owned::Null(*t),
    }
}

/// The same bits as another type of the same width, when there is one.
fn retype(value: &Owned, to: ColumnType) -> Option<Owned> {
    let bits64 = match value {
        Owned::Bigint(v) | Owned::Time(v) | Owned::Timestamp(v) | Owned::Timestamptz(v) => Some(*v),
        Owned::Double(v) => Some(v.to_bits() as i64),
        _ => None,
    };
    let bits32 = match value {
        Owned::Integer(v) | Owned::Date(v) => Some(*v),
        Owned::Real(v) => Some(v.to_bits() as i32),
        _ => None,
    };
    let bytes = match value {
        Owned::Text(v) => Some(v.as_bytes().to_vec()),
        Owned::Bytes(v) | Owned::Jsonb(v) => Some(v.clone()),
        Owned::Numeric(v) => Some(v.as_bytes().to_vec()),
        _ => None,
    };
    Some(match to {
        ColumnType::Bigint => Owned::Bigint(bits64?),
        ColumnType::Time => Owned::Time(bits64?),
        ColumnType::Timestamp => Owned::Timestamp(bits64?),
        ColumnType::Timestamptz => Owned::Timestamptz(bits64?),
        ColumnType::DoublePrecision => Owned::Double(f64::from_bits(bits64? as u64)),
        ColumnType::Integer => Owned::Integer(bits32?),
        ColumnType::Date => Owned::Date(bits32?),
        ColumnType::Real => Owned::Real(f32::from_bits(bits32? as u32)),
        ColumnType::Bytea => Owned::Bytes(bytes?),
        ColumnType::Jsonb if !bytes.as_ref()?.is_empty() => Owned::Jsonb(bytes?),
        ColumnType::Text => Owned::Text(String::from_utf8(bytes?).ok()?),
        ColumnType::Numeric => Owned::Numeric(String::from_utf8(bytes?).ok()?),
        _ => return None,
    })
}

fn apply(names: &mut [String], values: &mut [Owned], nudge: &Nudge) {
    let n = values.len();
    match *nudge {
        Nudge::FlipBit { column, bit } => values[column % n] = flip(&values[column % n], bit),
        Nudge::MoveBoundary { column } => {
            let i = column % n;
            if i + 1 < n {
                match (&values[i], &values[i + 1]) {
                    (Owned::Text(a), Owned::Text(b)) if !a.is_empty() => {
                        let cut = a.char_indices().last().map_or(0, |(j, _)| j);
                        let (a, moved) = a.split_at(cut);
                        let (a, b) = (a.to_string(), format!("{moved}{b}"));
                        values[i] = Owned::Text(a);
                        values[i + 1] = Owned::Text(b);
                    }
                    (Owned::Bytes(a), Owned::Bytes(b)) if !a.is_empty() => {
                        let (a, b) = (a[..a.len() - 1].to_vec(), [&a[a.len() - 1..], b.as_slice()].concat());
                        values[i] = Owned::Bytes(a);
                        values[i + 1] = Owned::Bytes(b);
                    }
                    _ => {}
                }
            }
        }
        Nudge::Retype { column, to } => {
            if let Some(v) = retype(&values[column % n], to) {
                values[column % n] = v;
            }
        }
        Nudge::Nullify { column } => {
            let i = column % n;
            values[i] = match &values[i] {
                Owned::Null(ColumnType::Text) => Owned::Text(String::new()),
                Owned::Null(ColumnType::Bytea) => Owned::Bytes(Vec::new()),
                other => Owned::Null(other.column_type()),
            };
        }
        Nudge::Rename { column } => names[column % n].push('x'),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

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
        prop_assert_eq!(
            encode(names_a, values_a) == encode(names_b, values_b),
            same_row(names_a, values_a, names_b, values_b)
        );
    }

    /// Two random rows are almost never equal; a row and a near neighbour of it test the hard side.
    #[test]
    fn a_nudged_row_encodes_differently_unless_its_values_are_the_same(
        names in prop::collection::vec("[a-z]{0,3}", 1..6),
        values in prop::collection::vec(owned(), 1..6),
        nudges in prop::collection::vec(nudge(), 1..3),
    ) {
        let n = names.len().min(values.len());
        let (names, values) = (names[..n].to_vec(), values[..n].to_vec());
        let (mut names_b, mut values_b) = (names.clone(), values.clone());
        for nudge in &nudges {
            apply(&mut names_b, &mut values_b, nudge);
        }
        prop_assert_eq!(
            encode(&names, &values) == encode(&names_b, &values_b),
            same_row(&names, &values, &names_b, &values_b),
            "{:?} -> {:?} by {:?}", values, values_b, nudges
        );
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

/// A record as the verifier reads it: (seq, stored hash, stored prev_hash, recomputed hash).
type ReadRecord = (Option<i64>, Option<[u8; 32]>, Option<[u8; 32]>, [u8; 32]);

/// A chain of n records whose stored hashes are right.
fn intact_chain(n: usize) -> Vec<ReadRecord> {
    let mut prev = None;
    (1..=n as i64)
        .map(|seq| {
            let hash = ledger_core::hash::sha3_256(&seq.to_be_bytes());
            let record = (Some(seq), Some(hash), prev, hash);
            prev = Some(hash);
            record
        })
        .collect()
}

proptest! {
    /// The streaming check of `ledger.verify` confirms exactly the chains the full check finds
    /// nothing wrong with, whatever the arrival order and whatever was tampered with.
    #[test]
    fn the_streaming_check_agrees_with_the_full_check(
        n in 0usize..40,
        order in prop::collection::vec(any::<u32>(), 40),
        edits in prop::collection::vec((0usize..40, 0u8..6), 0..3),
    ) {
        use ledger_core::chain::{check_chain, ChainStream, Link, StoredHash};
        use ledger_core::hash::to_hex;
        let mut records = intact_chain(n);
        for (at, kind) in edits {
            if records.is_empty() { break; }
            let i = at % records.len();
            match kind {
                0 => records[i].1 = Some([7; 32]),                  // a forged hash
                1 => records[i].2 = Some([8; 32]),                  // a forged prev_hash
                2 => { records.remove(i); }                        // a deleted record
                3 => { let r = records[i]; records.push(r); }       // a duplicated record
                4 => records[i].0 = records[i].0.map(|s| s + 1),    // a changed seq
                _ => records[i].0 = None,                           // a null seq
            }
        }
        let mut shuffled: Vec<_> = records.iter().zip(&order).collect();
        shuffled.sort_by_key(|(_, key)| **key);
        let mut stream = ChainStream::default();
        let mut links = Vec::new();
        for ((seq, hash, prev, computed), _) in shuffled {
            let (hash_hex, prev_hex) = (hash.map(|h| to_hex(&h)), prev.map(|h| to_hex(&h)));
            let computed_hex: [u8; 64] = to_hex(computed).into_bytes().try_into().unwrap();
            stream.push(*seq, hash_hex.as_deref().map(str::as_bytes), prev_hex.as_deref().map(str::as_bytes), &computed_hex);
            let stored = |h: &Option<[u8; 32]>| h.map_or(StoredHash::Null, StoredHash::Digest);
            links.push(Link::new(*seq, stored(hash), stored(prev), computed));
        }
        prop_assert_eq!(stream.intact(), check_chain(links).is_empty());
    }
}
