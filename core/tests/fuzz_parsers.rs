//! Fuzzing of the parsers and verifiers that take outside input: the JSON inclusion and consistency
//! proofs (`proof.rs`), the signed-note digest (`note.rs`), hex hashes (`hash.rs`), the number
//! normalisation and token stream of canonical JSON (`json.rs`), and the readers of stored jsonb and
//! numeric values (`jsonb.rs`, `numeric.rs`), which read what is on disk, damaged or not.
//!
//! Two kinds of properties:
//! - any input, however malformed, gives a value or an error, never a panic;
//! - a valid proof or digest that is mutated (a byte flipped, truncated, a line duplicated, a number
//!   made huge, negative, fractional or of the wrong type...) never verifies unless the mutation left
//!   what verification reads unchanged. For proofs, "unchanged" is exact: the same hashes in the same
//!   combination (the documented RFC 9162 caveat that a path can fit two tree sizes whose trees give
//!   the leaf the same shape is allowed, and only that), and such a proof must then still verify.
//!
//! The case count defaults to a run of a few seconds; `PROPTEST_CASES=100000` runs a longer soak.

use ed25519_dalek::SigningKey;
use ledger_core::hash::{parse_hex, sha3_256, to_hex, Digest};
use ledger_core::json::{normalize_number, JsonCanonicalizer, JsonToken};
use ledger_core::jsonb::JsonbReader;
use ledger_core::merkle;
use ledger_core::note::{render, sign, Note, Statement};
use ledger_core::numeric;
use ledger_core::proof::{ConsistencyProof, InclusionProof};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{json, Map, Value};

fn config() -> Config {
    // PROPTEST_CASES overrides this default (Config::default reads the environment).
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(1000);
    Config { cases, failure_persistence: None, ..Config::default() }
}

// ---- trees and valid proofs ---------------------------------------------------------------------

fn record_hashes(n: u64, salt: u64) -> Vec<Digest> {
    (0..n).map(|i| sha3_256(format!("{salt}/{i}").as_bytes())).collect()
}

fn leaves(records: &[Digest]) -> Vec<Digest> {
    records.iter().map(merkle::leaf_hash).collect()
}

/// A valid inclusion proof with its record hash and root.
#[derive(Debug, Clone)]
struct Inclusion {
    proof: InclusionProof,
    record: Digest,
    root: Digest,
}

fn inclusion(n: u64, seq: u64, salt: u64) -> Inclusion {
    let records = record_hashes(n, salt);
    let leaves = leaves(&records);
    let path = merkle::inclusion_proof(&leaves, seq - 1).expect("seq within the tree");
    Inclusion {
        proof: InclusionProof { seq, tree_size: n, path },
        record: records[seq as usize - 1],
        root: merkle::root_of_leaves(&leaves),
    }
}

fn consistency(old: u64, new: u64, salt: u64) -> ConsistencyProof {
    let leaves = leaves(&record_hashes(new, salt));
    ConsistencyProof {
        old_size: old,
        new_size: new,
        old_root: merkle::root_of_leaves(&leaves[..old as usize]),
        new_root: merkle::root_of_leaves(&leaves),
        path: merkle::consistency_proof(&leaves, old).expect("old within new"),
    }
}

fn inclusion_strategy() -> impl Strategy<Value = Inclusion> {
    (1u64..=80, any::<u64>(), any::<u64>()).prop_map(|(n, pick, salt)| inclusion(n, 1 + pick % n, salt))
}

fn consistency_strategy() -> impl Strategy<Value = ConsistencyProof> {
    (2u64..=80, any::<u64>(), any::<u64>()).prop_map(|(n, pick, salt)| consistency(1 + pick % (n - 1), n, salt))
}

/// Which side each path hash joins on when RFC 9162 2.1.3.2 checks leaf `index` of a tree of `size`
/// with a path of `len` hashes (true: the path hash is the left child), or None when the algorithm
/// rejects the shape whatever the hashes. Two (index, size) pairs with the same shape combine the
/// same hashes the same way, so they verify alike.
fn inclusion_shape(index: u64, size: u64, len: usize) -> Option<Vec<bool>> {
    if index >= size {
        return None;
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut shape = Vec::with_capacity(len);
    for _ in 0..len {
        if s_n == 0 {
            return None;
        }
        if f_n & 1 == 1 || f_n == s_n {
            shape.push(true);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            shape.push(false);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    (s_n == 0).then_some(shape)
}

/// The same for RFC 9162 2.1.4.2: whether the old root is prepended, then per path hash 0 (both
/// running hashes take it on the left) or 1 (only the new one, on the right). The trivial cases
/// (equal sizes, old size 0) are shapes of their own.
#[derive(Debug, PartialEq, Eq)]
enum ConsistencyShape {
    Equal,
    FromEmpty,
    Path { prepend_old_root: bool, steps: Vec<u8> },
}

fn consistency_shape(old: u64, new: u64, len: usize) -> Option<ConsistencyShape> {
    if old > new {
        return None;
    }
    if old == new {
        return Some(ConsistencyShape::Equal);
    }
    if old == 0 {
        return Some(ConsistencyShape::FromEmpty);
    }
    let prepend_old_root = old.is_power_of_two();
    let total = len + usize::from(prepend_old_root);
    if total == 0 {
        return None;
    }
    let (mut f_n, mut s_n) = (old - 1, new - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let mut steps = Vec::new();
    for _ in 1..total {
        if s_n == 0 {
            return None;
        }
        if f_n & 1 == 1 || f_n == s_n {
            steps.push(0);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            steps.push(1);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    (s_n == 0).then_some(ConsistencyShape::Path { prepend_old_root, steps })
}

// ---- mutations ----------------------------------------------------------------------------------

/// Replacement values for a proof member: numbers of every awkward kind and every wrong type.
fn odd_values(around: u64) -> Vec<Value> {
    let parse = |t: &str| serde_json::from_str::<Value>(t).expect("valid JSON");
    vec![
        json!(0),
        json!(1),
        json!(around.wrapping_add(1)),
        json!(around.saturating_sub(1)),
        json!(around.wrapping_mul(2)),
        json!(around.wrapping_add(1 << 32)),
        json!(u64::MAX),
        json!(i64::MAX),
        json!(-1),
        json!((around as i64).wrapping_neg()),
        json!(i64::MIN),
        parse(&format!("{around}.0")),
        parse(&format!("{around}.5")),
        parse(&format!("{around}e0")),
        parse("1e400"),
        parse("-1e400"),
        parse("1e-400"),
        parse("18446744073709551616"),
        parse("340282366920938463463374607431768211456"),
        json!(around.to_string()),
        json!(null),
        json!(true),
        json!([around]),
        json!({ "n": around }),
        json!(""),
        json!(to_hex(&[0; 32])),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Replace member `key` (by index into the proof's members) with odd value `which`.
    Replace(usize, usize),
    Remove(usize),
    AddUnknown(String),
    /// A path edit: `op` on element `at`.
    Path(u8, usize, usize),
    /// Flip bit `bit` of byte `at` of the JSON text.
    FlipBit(usize, u8),
    /// Truncate the JSON text at `at`.
    Truncate(usize),
    /// Duplicate bytes at..at+len of the JSON text in place.
    Duplicate(usize, usize),
    /// Insert random bytes at `at`.
    Insert(usize, Vec<u8>),
    /// Overwrite a byte.
    Set(usize, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<usize>()).prop_map(|(k, w)| Mutation::Replace(k, w)),
        any::<usize>().prop_map(Mutation::Remove),
        "[a-z_]{1,8}".prop_map(Mutation::AddUnknown),
        (0u8..10, any::<usize>(), any::<usize>()).prop_map(|(op, at, x)| Mutation::Path(op, at, x)),
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit(at, bit)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Mutation::Duplicate(at, len)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8)).prop_map(|(at, b)| Mutation::Insert(at, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Set(at, b)),
    ]
}

fn mutate_path(path: &mut Vec<Value>, op: u8, at: usize, x: usize) {
    let len = path.len();
    let pick = |n: usize| if n == 0 { 0 } else { at % n };
    match op {
        0 if len > 0 => {
            path.remove(pick(len));
        }
        1 if len > 0 => {
            let v = path[pick(len)].clone();
            path.insert(pick(len), v);
        }
        2 if len > 1 => path.swap(pick(len), x % len),
        3 => path.insert(pick(len + 1), json!(to_hex(&sha3_256(&x.to_be_bytes())))),
        4 if len > 0 => {
            // Flip one hex digit of one hash (stays well-formed).
            let i = pick(len);
            if let Some(text) = path[i].as_str() {
                let mut bytes = text.as_bytes().to_vec();
                let j = x % bytes.len().max(1);
                if let Some(b) = bytes.get_mut(j) {
                    *b = if *b == b'0' { b'1' } else { b'0' };
                }
                path[i] = json!(String::from_utf8_lossy(&bytes).into_owned());
            }
        }
        5 if len > 0 => {
            let i = pick(len);
            path[i] = json!(path[i].as_str().unwrap_or("").to_uppercase());
        }
        6 if len > 0 => {
            let i = pick(len);
            let text = path[i].as_str().unwrap_or("").to_string();
            path[i] = json!(text[..x % (text.len() + 1)].to_string());
        }
        7 if len > 0 => {
            let i = pick(len);
            path[i] = odd_values(x as u64)[x % 26].clone();
        }
        8 => path.reverse(),
        _ => {
            // 65 hashes: over the documented limit.
            let filler = path.first().cloned().unwrap_or_else(|| json!(to_hex(&[7; 32])));
            path.resize(65, filler);
        }
    }
}

/// The JSON text of the mutated proof (which may no longer be JSON, or UTF-8).
fn apply(original: &Value, m: &Mutation) -> Vec<u8> {
    let mut value = original.clone();
    let map = value.as_object_mut().expect("a proof is an object");
    let keys: Vec<String> = map.keys().cloned().collect();
    match m {
        Mutation::Replace(k, w) => {
            let key = &keys[k % keys.len()];
            let around = map[key].as_u64().unwrap_or(5);
            let odd = odd_values(around);
            map.insert(key.clone(), odd[w % odd.len()].clone());
        }
        Mutation::Remove(k) => {
            map.remove(&keys[k % keys.len()]);
        }
        Mutation::AddUnknown(name) => {
            map.insert(format!("x_{name}"), json!(name));
        }
        Mutation::Path(op, at, x) => {
            if let Some(Value::Array(path)) = map.get_mut("path") {
                mutate_path(path, *op, *at, *x);
            }
        }
        _ => {}
    }
    let mut text = serde_json::to_vec(&value).expect("serialisable");
    let pos = |at: &usize, len: usize| if len == 0 { 0 } else { at % len };
    match m {
        Mutation::FlipBit(at, bit) if !text.is_empty() => {
            let i = pos(at, text.len());
            text[i] ^= 1 << bit;
        }
        Mutation::Truncate(at) => text.truncate(pos(at, text.len())),
        Mutation::Duplicate(at, len) => {
            let start = pos(at, text.len());
            let end = (start + len).min(text.len());
            let piece = text[start..end].to_vec();
            text.splice(start..start, piece);
        }
        Mutation::Insert(at, bytes) => {
            let i = pos(at, text.len() + 1);
            text.splice(i..i, bytes.iter().copied());
        }
        Mutation::Set(at, b) if !text.is_empty() => {
            let i = pos(at, text.len());
            text[i] = *b;
        }
        _ => {}
    }
    text
}

fn parse_json(bytes: &[u8]) -> Option<Value> {
    std::str::from_utf8(bytes).ok().and_then(|t| serde_json::from_str(t).ok())
}

// ---- digests ------------------------------------------------------------------------------------

fn statement(key: Option<&SigningKey>, size: u64, chain: Option<&str>) -> Statement {
    Statement {
        ledger: "public.payments".into(),
        chain: chain.map(str::to_string),
        size,
        root: sha3_256(&size.to_be_bytes()),
        previous: (size % 2 == 0).then(|| sha3_256(b"previous")),
        time: "2026-01-02T03:04:05.123456Z".into(),
        checkpoint: "6f1c2a54-6c0e-4e8b-9d3e-2b0f5a7c1101".into(),
        public_key: key.map(|k| k.verifying_key().to_bytes()),
        definition: (size % 3 != 0).then(|| sha3_256(b"definition")),
    }
}

#[derive(Debug, Clone)]
enum LineMutation {
    FlipBit(usize, usize, u8),
    Truncate(usize),
    DuplicateLine(usize),
    RemoveLine(usize),
    SwapLines(usize, usize),
    /// Replace the value of line `n` (after its keyword) with `text`.
    Value(usize, String),
    AppendToLine(usize, String),
    Crlf,
    NoFinalNewline,
    ExtraBlankLine,
}

fn line_mutation() -> impl Strategy<Value = LineMutation> {
    let numbers = prop_oneof![
        Just("-1".to_string()),
        Just("+3".to_string()),
        Just("03".to_string()),
        Just("3.0".to_string()),
        Just("1e400".to_string()),
        Just("18446744073709551616".to_string()),
        Just("340282366920938463463374607431768211456".to_string()),
        Just(String::new()),
        Just("none".to_string()),
        Just("\"x\"".to_string()),
        "[ -~\u{80}-\u{10ffff}]{0,20}",
    ];
    prop_oneof![
        (any::<usize>(), any::<usize>(), 0u8..8).prop_map(|(l, c, b)| LineMutation::FlipBit(l, c, b)),
        any::<usize>().prop_map(LineMutation::Truncate),
        any::<usize>().prop_map(LineMutation::DuplicateLine),
        any::<usize>().prop_map(LineMutation::RemoveLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| LineMutation::SwapLines(a, b)),
        (any::<usize>(), numbers).prop_map(|(l, t)| LineMutation::Value(l, t)),
        (any::<usize>(), "[ a-z0-9\t\r]{1,4}").prop_map(|(l, t)| LineMutation::AppendToLine(l, t)),
        Just(LineMutation::Crlf),
        Just(LineMutation::NoFinalNewline),
        Just(LineMutation::ExtraBlankLine),
    ]
}

fn apply_to_digest(text: &str, m: &LineMutation) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = text.split('\n').map(|l| l.as_bytes().to_vec()).collect();
    let n = lines.len();
    match m {
        LineMutation::FlipBit(l, c, bit) => {
            let line = &mut lines[l % n];
            if !line.is_empty() {
                let i = c % line.len();
                line[i] ^= 1 << bit;
            }
        }
        LineMutation::Truncate(at) => {
            let mut bytes = text.as_bytes().to_vec();
            bytes.truncate(at % (bytes.len() + 1));
            return bytes;
        }
        LineMutation::DuplicateLine(l) => {
            let line = lines[l % n].clone();
            lines.insert(l % n, line);
        }
        LineMutation::RemoveLine(l) => {
            lines.remove(l % n);
        }
        LineMutation::SwapLines(a, b) => lines.swap(a % n, b % n),
        LineMutation::Value(l, value) => {
            let line = &mut lines[l % n];
            let keyword_end = line.iter().position(|&b| b == b' ').map_or(line.len(), |p| p + 1);
            line.truncate(keyword_end);
            line.extend_from_slice(value.as_bytes());
        }
        LineMutation::AppendToLine(l, extra) => lines[l % n].extend_from_slice(extra.as_bytes()),
        LineMutation::Crlf => return text.replace('\n', "\r\n").into_bytes(),
        LineMutation::NoFinalNewline => return text.trim_end_matches('\n').as_bytes().to_vec(),
        LineMutation::ExtraBlankLine => return text.replacen("\n\n", "\n\n\n", 1).into_bytes(),
    }
    lines.join(&b'\n')
}

// ---- properties ---------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Arbitrary bytes and strings: no parser panics.
    #[test]
    fn every_parser_takes_any_input(bytes in prop::collection::vec(any::<u8>(), 0..300), text in "\\PC{0,120}") {
        let mut canonical = JsonCanonicalizer::new();
        let _ = JsonbReader::default().canonicalize(&bytes, &mut canonical);
        let _ = numeric::write_text(&bytes, &mut String::new());
        for input in [String::from_utf8_lossy(&bytes).into_owned(), text] {
            let _ = parse_hex(&input, "fuzz");
            let _ = normalize_number(&input);
            if let Ok(note) = Note::parse(&input) {
                let _ = note.signature_valid();
            }
            if let Ok(value) = serde_json::from_str::<Value>(&input) {
                let _ = InclusionProof::parse(&value).map(|p| p.verify(&[0; 32], &[0; 32]));
                let _ = ConsistencyProof::parse(&value).map(|p| p.verify());
            }
        }
    }

    /// Arbitrary JSON shaped like a proof (the right member names, any values): parses or errors.
    #[test]
    fn proof_shaped_json_with_any_values(
        kind in prop_oneof![Just("inclusion".to_string()), Just("consistency".to_string()), "[a-z]{0,3}"],
        values in prop::collection::vec((0usize..26, any::<u64>()), 6),
        path in prop::collection::vec(prop_oneof![
            "[0-9a-f]{64}".prop_map(Value::from),
            "[0-9a-fA-F]{0,66}".prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
        ], 0..70),
    ) {
        let names = ["seq", "tree_size", "old_size", "new_size", "old_root", "new_root"];
        let mut map = Map::new();
        map.insert("type".into(), json!(kind));
        for (name, (which, around)) in names.iter().zip(values) {
            map.insert((*name).into(), odd_values(around)[which].clone());
        }
        map.insert("path".into(), Value::Array(path));
        let value = Value::Object(map);
        let _ = InclusionProof::parse(&value).map(|p| p.verify(&[1; 32], &[2; 32]));
        let _ = ConsistencyProof::parse(&value).map(|p| p.verify());
    }

    #[test]
    fn hex_parsing_accepts_exactly_64_lower_case_hex_digits(
        text in prop_oneof!["[0-9a-f]{64}", "[0-9a-fA-F]{60,68}", "\\PC{0,70}", "[0-9a-f]{63}[^0-9a-f]"],
    ) {
        let well_formed = text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        match parse_hex(&text, "fuzz") {
            Ok(digest) => {
                prop_assert!(well_formed, "{:?} parsed", text);
                prop_assert_eq!(to_hex(&digest), text);
            }
            Err(e) => {
                prop_assert!(!well_formed, "{:?} refused: {}", text, e.message);
                prop_assert_eq!(e.state.code(), "22P02");
            }
        }
    }

    /// Number normalisation: any text gives a value or an error; every plain decimal normalises,
    /// idempotently, and forms jsonb considers equal (leading zeros, trailing fractional zeros,
    /// the sign of zero) normalise alike.
    #[test]
    fn numbers_normalise_or_are_refused(
        text in "\\PC{0,30}",
        negative in any::<bool>(),
        int in "[0-9]{1,40}",
        frac in "[0-9]{0,40}",
        lead in 0usize..4,
        trail in 0usize..4,
    ) {
        let _ = normalize_number(&text);
        let sign = if negative { "-" } else { "" };
        let plain = if frac.is_empty() { format!("{sign}{int}") } else { format!("{sign}{int}.{frac}") };
        let padded = format!("{sign}{}{int}.{frac}{}1", "0".repeat(lead), "0".repeat(trail));
        let unpadded = format!("{sign}{int}.{frac}{}1", "0".repeat(trail));
        let normal = normalize_number(&plain).expect("a plain decimal normalises");
        prop_assert_eq!(normalize_number(&normal).expect("normal form is a decimal"), normal.clone());
        prop_assert!(!normal.ends_with('.') && !normal.contains('e') && !normal.starts_with('+'));
        prop_assert!(normal != "-0" && !(normal.contains('.') && normal.ends_with('0')));
        let with_zeros = if frac.is_empty() { format!("{plain}.{}", "0".repeat(trail + 1)) } else { format!("{plain}{}", "0".repeat(trail)) };
        prop_assert_eq!(normalize_number(&with_zeros).unwrap(), normal);
        prop_assert_eq!(normalize_number(&padded).unwrap(), normalize_number(&unpadded).unwrap());
    }

    /// Random token streams: the canonicaliser accepts or refuses, never panics, and can be reused.
    #[test]
    fn canonical_json_takes_any_token_stream(tokens in prop::collection::vec((0u8..10, "\\PC{0,4}"), 0..40)) {
        let mut c = JsonCanonicalizer::new();
        for (kind, text) in &tokens {
            let token = match kind {
                0 => JsonToken::BeginObject,
                1 => JsonToken::EndObject,
                2 => JsonToken::BeginArray,
                3 => JsonToken::EndArray,
                4 => JsonToken::Key(text),
                5 => JsonToken::Null,
                6 => JsonToken::Bool(text.len() % 2 == 0),
                7 => JsonToken::Number(text),
                _ => JsonToken::String(text),
            };
            if c.push(token).is_err() {
                break;
            }
        }
        let _ = c.finish().map(<[u8]>::len);
        c.reset();
        c.push(JsonToken::Null).unwrap();
        prop_assert_eq!(c.finish().unwrap(), &[0x00][..]);
    }

    /// A valid inclusion proof, mutated: an error, or a verdict that is true exactly when the
    /// mutation kept the record, root and path and the path's shape.
    #[test]
    fn mutated_inclusion_proofs_never_verify(
        inc in inclusion_strategy(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let original = inc.proof.to_json(Map::from_iter([("root".to_string(), json!(to_hex(&inc.root)))]));
        prop_assert!(inc.proof.verify(&inc.record, &inc.root));
        let mut value = original.clone();
        for m in &mutations {
            match parse_json(&apply(&value, m)) {
                Some(v) if v.is_object() => value = v,
                _ => {
                    // Not JSON any more (the SQL level cannot even pass it as jsonb), or not an
                    // object: the parser must refuse the last JSON value it is given.
                    break;
                }
            }
        }
        let Ok(parsed) = InclusionProof::parse(&value) else { return Ok(()) };
        let verdict = parsed.verify(&inc.record, &inc.root);
        let shape = |p: &InclusionProof| {
            p.seq.checked_sub(1).and_then(|index| inclusion_shape(index, p.tree_size, p.path.len()))
        };
        let same = parsed.path == inc.proof.path && shape(&parsed).is_some() && shape(&parsed) == shape(&inc.proof);
        prop_assert_eq!(verdict, same, "original {} mutated {} ({:?})", original, value, mutations);
    }

    /// The same for consistency proofs.
    #[test]
    fn mutated_consistency_proofs_never_verify(
        proof in consistency_strategy(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let original = proof.to_json(Map::new());
        prop_assert!(proof.verify());
        let mut value = original.clone();
        for m in &mutations {
            match parse_json(&apply(&value, m)) {
                Some(v) if v.is_object() => value = v,
                _ => break,
            }
        }
        let Ok(parsed) = ConsistencyProof::parse(&value) else { return Ok(()) };
        let verdict = parsed.verify();
        let shape = |p: &ConsistencyProof| consistency_shape(p.old_size, p.new_size, p.path.len());
        let same = parsed.path == proof.path
            && parsed.old_root == proof.old_root
            && parsed.new_root == proof.new_root
            && shape(&parsed).is_some()
            && shape(&parsed) == shape(&proof);
        prop_assert_eq!(verdict, same, "original {} mutated {} ({:?})", original, value, mutations);
    }

    /// Mutating the record hash or root instead of the proof never verifies.
    #[test]
    fn another_record_or_root_never_verifies(inc in inclusion_strategy(), byte in 0usize..32, bit in 0u8..8, which in any::<bool>()) {
        let (mut record, mut root) = (inc.record, inc.root);
        if which { record[byte] ^= 1 << bit } else { root[byte] ^= 1 << bit }
        prop_assert!(!inc.proof.verify(&record, &root));
    }

    /// A signed digest, mutated: refused as malformed, or parsed with a signature that verifies
    /// only when the signed body and what it states are unchanged.
    #[test]
    fn mutated_digests_never_verify(
        seed in any::<[u8; 32]>(),
        size in 0u64..1_000_000,
        chain in prop::option::of("\\PC{0,12}"),
        signed in any::<bool>(),
        mutations in prop::collection::vec(line_mutation(), 1..4),
    ) {
        let key = SigningKey::from_bytes(&seed);
        let st = statement(signed.then_some(&key), size, chain.as_deref());
        let text = render(&st, signed.then(|| sign(&st.body(), &key)).as_ref());
        let good = Note::parse(&text).expect("a rendered digest parses");
        prop_assert_eq!(&good.statement, &st);
        prop_assert_eq!(good.signature_valid(), signed);
        let mut bytes = text.clone().into_bytes();
        for m in &mutations {
            let Ok(current) = String::from_utf8(bytes.clone()) else { break };
            bytes = apply_to_digest(&current, m);
        }
        let Ok(mutated) = std::str::from_utf8(&bytes) else { return Ok(()) };
        if let Ok(note) = Note::parse(mutated) {
            if note.signature_valid() {
                prop_assert!(signed, "an unsigned digest became signed: {:?}", mutated);
                prop_assert_eq!(&note.body, &st.body(), "{:?}", mutated);
                prop_assert_eq!(&note.statement, &st, "{:?}", mutated);
            }
        }
    }
}

#[test]
fn the_shape_oracles_agree_with_the_verifiers_on_valid_proofs() {
    for n in 1..=40u64 {
        for seq in 1..=n {
            let inc = inclusion(n, seq, 7);
            assert!(inclusion_shape(seq - 1, n, inc.proof.path.len()).is_some(), "{n} {seq}");
        }
        for old in 0..=n {
            let p = consistency(old, n, 7);
            assert!(p.verify(), "{old} {n}");
            assert!(consistency_shape(old, n, p.path.len()).is_some(), "{old} {n}");
        }
    }
    // The documented caveat exists: a path that fits two tree sizes.
    let inc = inclusion(8, 1, 3);
    let other = InclusionProof { tree_size: 5, ..inc.proof.clone() };
    assert_eq!(inclusion_shape(0, 5, 3), inclusion_shape(0, 8, 3));
    assert!(other.verify(&inc.record, &inc.root));
}
