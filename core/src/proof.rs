//! Inclusion and consistency proofs as JSON (docs/FORMAT.md, "Proofs"), so that anyone can carry
//! them out of the database and check them with nothing but the roots.
//!
//! ```text
//! inclusion:   {"type": "inclusion", "seq": 5, "tree_size": 9, "path": ["<hex>", ...], ...}
//! consistency: {"type": "consistency", "old_size": 4, "new_size": 9, "old_root": "<hex>",
//!               "new_root": "<hex>", "path": ["<hex>", ...], ...}
//! ```
//! Other members (ledger, chain, checkpoint ids) are informative and ignored by verification.

use crate::error::{LedgerError, Result, SqlState};
use crate::hash::{parse_hex, to_hex, Digest};
use crate::merkle;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    /// The record's seq: its leaf index is seq - 1.
    pub seq: u64,
    pub tree_size: u64,
    pub path: Vec<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyProof {
    pub old_size: u64,
    pub new_size: u64,
    pub old_root: Digest,
    pub new_root: Digest,
    pub path: Vec<Digest>,
}

fn shape(detail: impl Into<String>) -> LedgerError {
    LedgerError::new(SqlState::InvalidParameterValue, "malformed proof").detail(detail.into())
}

/// A proof's JSON text as a value. serde_json's nesting limit stands (127 nested arrays or objects):
/// proofs nest two deep, and deeper input is refused rather than recursed into. An object with a
/// member name twice is refused too: serde_json would keep the last silently, another reader the
/// first, and the two would verify different proofs (docs/FORMAT.md, "Proofs").
pub fn parse_json(text: &str) -> Result<Value> {
    let unreadable = |e: serde_json::Error| shape(format!("not JSON a proof can be read from: {e}"));
    serde_json::from_str::<NoDuplicateMembers>(text).map_err(unreadable)?;
    serde_json::from_str(text).map_err(unreadable)
}

/// Reads any JSON value, failing on an object with a member name twice, at any depth.
struct NoDuplicateMembers;

impl<'de> serde::Deserialize<'de> for NoDuplicateMembers {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(NoDuplicateMembers)
    }
}

impl<'de> serde::de::Visitor<'de> for NoDuplicateMembers {
    type Value = NoDuplicateMembers;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> std::result::Result<Self, E> {
        Ok(self)
    }
    fn visit_i64<E>(self, _: i64) -> std::result::Result<Self, E> {
        Ok(self)
    }
    fn visit_u64<E>(self, _: u64) -> std::result::Result<Self, E> {
        Ok(self)
    }
    fn visit_f64<E>(self, _: f64) -> std::result::Result<Self, E> {
        Ok(self)
    }
    fn visit_str<E>(self, _: &str) -> std::result::Result<Self, E> {
        Ok(self)
    }
    fn visit_unit<E>(self) -> std::result::Result<Self, E> {
        Ok(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> std::result::Result<Self, A::Error> {
        while items.next_element::<NoDuplicateMembers>()?.is_some() {}
        Ok(self)
    }

    // With arbitrary_precision a number also arrives here, as a one-member map; it has no duplicates.
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut members: A) -> std::result::Result<Self, A::Error> {
        let mut seen = std::collections::BTreeSet::new();
        while let Some(name) = members.next_key::<String>()? {
            if !seen.insert(name.clone()) {
                return Err(serde::de::Error::custom(format!("the member name \"{name}\" appears twice in an object")));
            }
            members.next_value::<NoDuplicateMembers>()?;
        }
        Ok(self)
    }
}

fn object<'a>(proof: &'a Value, kind: &str) -> Result<&'a Map<String, Value>> {
    let map = proof.as_object().ok_or_else(|| shape("a proof is a JSON object"))?;
    match map.get("type").and_then(Value::as_str) {
        Some(t) if t == kind => Ok(map),
        Some(other) => Err(shape(format!("expected a {kind} proof, got type \"{other}\""))),
        None => Err(shape("the member \"type\" is missing")),
    }
}

/// The proof object's members as written, where the counts are read: even with
/// arbitrary_precision, serde_json reads the integer `-0` as `0`.
type Written = BTreeMap<String, Box<RawValue>>;

/// `text`'s top-level members as written (none when it is no object: [`object`] says so).
fn written_members(text: &str) -> Written {
    serde_json::from_str(text).unwrap_or_default()
}

/// A count member: a JSON number written as plain decimal digits (no sign, fraction or exponent, so
/// `1e0`, `1.0` and `-0` are refused although they equal integers), at most 2^64 - 1. The number's
/// text is what was written (arbitrary_precision), so two readers cannot differ on its value.
fn count(map: &Map<String, Value>, written: &Written, key: &str) -> Result<u64> {
    let Some(Value::Number(number)) = map.get(key) else {
        return Err(shape(format!("\"{key}\" must be a non-negative integer")));
    };
    let text = written.get(key).map_or(number.as_str(), |raw| raw.get());
    let plain = text == "0"
        || (text.starts_with(|c: char| c.is_ascii_digit() && c != '0') && text.bytes().all(|b| b.is_ascii_digit()));
    if !plain {
        return Err(shape(format!(
            "\"{key}\" must be a non-negative integer in plain decimal digits, not {}",
            truncate(text)
        )));
    }
    text.parse::<u64>().map_err(|_| shape(format!("\"{key}\" is {}, more than 2^64 - 1", truncate(text))))
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

/// A hash member or path entry: 64 lower-case hex digits, or the proof is malformed (22023, like
/// every other shape error of a proof; the hashes passed as arguments are 22P02).
fn hash(value: Option<&Value>, what: &str) -> Result<Digest> {
    let text = value.and_then(Value::as_str).ok_or_else(|| shape(format!("{what} must be a hex string")))?;
    parse_hex(text, what).map_err(|e| shape(format!("{what}: {}", e.detail.unwrap_or(e.message))))
}

fn digest(map: &Map<String, Value>, key: &str) -> Result<Digest> {
    hash(map.get(key), &format!("\"{key}\""))
}

fn path(map: &Map<String, Value>) -> Result<Vec<Digest>> {
    let items = map.get("path").and_then(Value::as_array).ok_or_else(|| shape("\"path\" must be an array"))?;
    if items.len() > 64 {
        return Err(shape(format!("a path has at most 64 hashes, this one has {}", items.len())));
    }
    items.iter().map(|item| hash(Some(item), "each entry of \"path\"")).collect()
}

impl InclusionProof {
    /// Reads a proof from its JSON text, as `ledger.verify_inclusion` receives it.
    pub fn parse_text(text: &str) -> Result<InclusionProof> {
        Self::parse_written(&parse_json(text)?, &written_members(text))
    }

    /// Reads a proof already parsed (a `-0` count then reads as `0`: use [`Self::parse_text`] on
    /// text from outside).
    pub fn parse(proof: &Value) -> Result<InclusionProof> {
        Self::parse_written(proof, &Written::new())
    }

    fn parse_written(proof: &Value, written: &Written) -> Result<InclusionProof> {
        let map = object(proof, "inclusion")?;
        Ok(InclusionProof {
            seq: count(map, written, "seq")?,
            tree_size: count(map, written, "tree_size")?,
            path: path(map)?,
        })
    }

    /// The proof as JSON, with informative members added by the caller.
    pub fn to_json(&self, extra: Map<String, Value>) -> Value {
        let mut map = extra;
        map.insert("type".into(), json!("inclusion"));
        map.insert("seq".into(), json!(self.seq));
        map.insert("tree_size".into(), json!(self.tree_size));
        map.insert("path".into(), json!(self.path.iter().map(to_hex).collect::<Vec<_>>()));
        Value::Object(map)
    }

    /// Is the record with `record_hash` at `seq` in the tree with `root`?
    ///
    /// As in RFC 9162, the path authenticates the leaf against the root, not the tree size: a path
    /// can verify for several sizes that give the leaf the same shape. [`Self::verify_in`] also
    /// binds the size.
    pub fn verify(&self, record_hash: &Digest, root: &Digest) -> bool {
        self.seq >= 1
            && merkle::verify_inclusion(&merkle::leaf_hash(record_hash), self.seq - 1, self.tree_size, &self.path, root)
    }

    /// Is the record in the tree of `tree_size` records with `root`, as a checkpoint or digest
    /// states them together?
    pub fn verify_in(&self, record_hash: &Digest, root: &Digest, tree_size: u64) -> bool {
        self.tree_size == tree_size && self.verify(record_hash, root)
    }
}

impl ConsistencyProof {
    /// Reads a proof from its JSON text, as `ledger.verify_consistency` receives it.
    pub fn parse_text(text: &str) -> Result<ConsistencyProof> {
        Self::parse_written(&parse_json(text)?, &written_members(text))
    }

    /// Reads a proof already parsed (see [`InclusionProof::parse`]).
    pub fn parse(proof: &Value) -> Result<ConsistencyProof> {
        Self::parse_written(proof, &Written::new())
    }

    fn parse_written(proof: &Value, written: &Written) -> Result<ConsistencyProof> {
        let map = object(proof, "consistency")?;
        Ok(ConsistencyProof {
            old_size: count(map, written, "old_size")?,
            new_size: count(map, written, "new_size")?,
            old_root: digest(map, "old_root")?,
            new_root: digest(map, "new_root")?,
            path: path(map)?,
        })
    }

    pub fn to_json(&self, extra: Map<String, Value>) -> Value {
        let mut map = extra;
        map.insert("type".into(), json!("consistency"));
        map.insert("old_size".into(), json!(self.old_size));
        map.insert("new_size".into(), json!(self.new_size));
        map.insert("old_root".into(), json!(to_hex(&self.old_root)));
        map.insert("new_root".into(), json!(to_hex(&self.new_root)));
        map.insert("path".into(), json!(self.path.iter().map(to_hex).collect::<Vec<_>>()));
        Value::Object(map)
    }

    /// Is the old tree a prefix of the new one? (The sizes are the proof's own; see
    /// [`Self::verify_between`].)
    pub fn verify(&self) -> bool {
        merkle::verify_consistency(self.old_size, self.new_size, &self.old_root, &self.new_root, &self.path)
    }

    /// Is the tree of `old` (size, root) a prefix of the tree of `new` (size, root), as two
    /// checkpoints or digests state them?
    pub fn verify_between(&self, old: (u64, &Digest), new: (u64, &Digest)) -> bool {
        (self.old_size, &self.old_root) == old && (self.new_size, &self.new_root) == new && self.verify()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::sha3_256;

    fn records(n: u64) -> Vec<Digest> {
        (0..n).map(|i| sha3_256(i.to_string().as_bytes())).collect()
    }

    #[test]
    fn an_inclusion_proof_survives_json_and_verifies() {
        let recs = records(9);
        let leaves: Vec<Digest> = recs.iter().map(merkle::leaf_hash).collect();
        let root = merkle::root_of_leaves(&leaves);
        let proof = InclusionProof { seq: 5, tree_size: 9, path: merkle::inclusion_proof(&leaves, 4).unwrap() };
        let text = proof.to_json(Map::new()).to_string();
        let parsed = InclusionProof::parse(&serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(parsed, proof);
        assert!(parsed.verify(&recs[4], &root));
        assert!(!parsed.verify(&recs[5], &root));
        let wrong_seq = InclusionProof { seq: 6, ..parsed.clone() };
        assert!(!wrong_seq.verify(&recs[4], &root));
        let mut flipped = parsed.clone();
        flipped.path[0][31] ^= 1;
        assert!(!flipped.verify(&recs[4], &root));
        assert!(!InclusionProof { seq: 0, ..parsed }.verify(&recs[4], &root));
    }

    #[test]
    fn a_consistency_proof_survives_json_and_verifies() {
        let leaves: Vec<Digest> = records(9).iter().map(merkle::leaf_hash).collect();
        let proof = ConsistencyProof {
            old_size: 4,
            new_size: 9,
            old_root: merkle::root_of_leaves(&leaves[..4]),
            new_root: merkle::root_of_leaves(&leaves),
            path: merkle::consistency_proof(&leaves, 4).unwrap(),
        };
        let parsed = ConsistencyProof::parse(&proof.to_json(Map::new())).unwrap();
        assert_eq!(parsed, proof);
        assert!(parsed.verify());
        assert!(!ConsistencyProof { old_size: 5, ..parsed.clone() }.verify());
        assert!(!ConsistencyProof { new_root: parsed.old_root, ..parsed.clone() }.verify());
        assert!(parsed.verify_between((4, &parsed.old_root), (9, &parsed.new_root)));
        assert!(!parsed.verify_between((4, &parsed.old_root), (10, &parsed.new_root)));
        assert!(!parsed.verify_between((4, &parsed.new_root), (9, &parsed.new_root)));
    }

    /// RFC 9162 paths do not fix the tree size; the sized checks do.
    #[test]
    fn a_proof_with_another_size_fails_against_the_stated_size() {
        let recs = records(18);
        let leaves: Vec<Digest> = recs.iter().map(merkle::leaf_hash).collect();
        let root17 = merkle::root_of_leaves(&leaves[..17]);
        let proof = InclusionProof { seq: 5, tree_size: 17, path: merkle::inclusion_proof(&leaves[..17], 4).unwrap() };
        let relabelled = InclusionProof { tree_size: 18, ..proof.clone() };
        assert!(relabelled.verify(&recs[4], &root17), "the path alone does not fix the size");
        assert!(proof.verify_in(&recs[4], &root17, 17));
        assert!(!relabelled.verify_in(&recs[4], &root17, 17));
        let root18 = merkle::root_of_leaves(&leaves);
        assert!(!relabelled.verify_in(&recs[4], &root18, 18));

        let leaves32: Vec<Digest> = records(32).iter().map(merkle::leaf_hash).collect();
        let (old, new) = (merkle::root_of_leaves(&leaves32[..9]), merkle::root_of_leaves(&leaves32[..17]));
        let path = merkle::consistency_proof(&leaves32[..17], 9).unwrap();
        let consistency = ConsistencyProof { old_size: 9, new_size: 17, old_root: old, new_root: new, path };
        let relabelled = ConsistencyProof { new_size: 18, ..consistency.clone() };
        assert!(relabelled.verify(), "the path alone does not fix the size");
        assert!(consistency.verify_between((9, &old), (17, &new)));
        assert!(!relabelled.verify_between((9, &old), (17, &new)));
    }

    fn inclusion_text(seq: &str, tree_size: &str) -> String {
        format!(r#"{{"type": "inclusion", "seq": {seq}, "tree_size": {tree_size}, "path": []}}"#)
    }

    fn parse_inclusion(text: &str) -> Result<InclusionProof> {
        InclusionProof::parse_text(text)
    }

    #[test]
    fn counts_are_plain_decimal_integers_up_to_2_64_minus_1() {
        for bad in ["1e0", "1.0", "-0", "-1", "1E0", "0.5", "18446744073709551616", "1" /* ok */] {
            let result = parse_inclusion(&inclusion_text(bad, "1"));
            if bad == "1" {
                assert_eq!(result.unwrap().seq, 1);
                continue;
            }
            let err = result.unwrap_err();
            assert_eq!(
                (err.state, err.message.as_str()),
                (SqlState::InvalidParameterValue, "malformed proof"),
                "{bad}"
            );
            assert!(err.detail.unwrap().contains(bad), "{bad}");
        }
        let max = parse_inclusion(&inclusion_text("18446744073709551615", "18446744073709551615")).unwrap();
        assert_eq!((max.seq, max.tree_size), (u64::MAX, u64::MAX));
        for bad in ["1e0", "-0", "18446744073709551616"] {
            let text = format!(
                r#"{{"type": "consistency", "old_size": {bad}, "new_size": 1, "old_root": "{h}", "new_root": "{h}", "path": []}}"#,
                h = "00".repeat(32)
            );
            assert!(ConsistencyProof::parse_text(&text).is_err(), "{bad}");
        }
    }

    #[test]
    fn well_formed_proofs_that_prove_nothing_are_false() {
        let root = merkle::root_of_leaves(&[]);
        let record = sha3_256(b"r");
        for (seq, tree_size) in [("0", "1"), ("0", "0"), ("1", "0"), ("2", "1"), ("18446744073709551615", "1")] {
            let proof = parse_inclusion(&inclusion_text(seq, tree_size)).unwrap();
            assert!(!proof.verify(&record, &root), "{seq} of {tree_size}");
            assert!(!proof.verify_in(&record, &root, proof.tree_size), "{seq} of {tree_size}");
        }
    }

    #[test]
    fn duplicate_members_are_malformed_at_any_depth() {
        for text in [
            r#"{"type": "inclusion", "seq": 1, "seq": 1, "tree_size": 1, "path": []}"#,
            r#"{"type": "inclusion", "type": "inclusion", "seq": 1, "tree_size": 1, "path": []}"#,
            r#"{"type": "inclusion", "seq": 1, "tree_size": 1, "path": [], "x": [{"a": 1, "a": 2}]}"#,
            r#"{"type": "inclusion", "seq": 1, "tree_size": 1, "path": [], "x": 1, "\u0078": 2}"#,
        ] {
            let err = parse_json(text).unwrap_err();
            assert_eq!(err.state, SqlState::InvalidParameterValue);
            assert!(err.detail.unwrap().contains("appears twice"), "{text}");
        }
        assert!(parse_json(r#"{"a": {"b": 1}, "b": {"a": 1}, "c": [{"a": 1}, {"a": 1}]}"#).is_ok());
    }

    #[test]
    fn json_that_serde_and_the_format_refuse() {
        for text in [
            r#"{"type": "inclusion", "seq": 1, "tree_size": 1, "path": [], "x": NaN}"#,
            r#"{"type": "inclusion", "seq": 1, "tree_size": 1, "path": [], "x": "\ud800"}"#,
            r#"{"type": "inclusion", "seq": 1, "tree_size": 1, "path": []} x"#,
            "\u{feff}{}",
        ] {
            assert!(parse_json(text).is_err(), "{text}");
        }
        let deep = |n: usize| {
            format!(
                r#"{{"type": "inclusion", "seq": 1, "tree_size": 1, "path": [], "x": {}{}}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        assert!(parse_json(&deep(126)).is_ok(), "127 levels with the proof object");
        assert!(parse_json(&deep(127)).is_err(), "128 levels");
        // Informative members may hold any JSON number.
        assert!(parse_json(r#"{"x": 1e400, "y": -0.0, "z": 123456789012345678901234567890}"#).is_ok());
    }

    #[test]
    fn hashes_in_a_proof_are_malformed_proofs() {
        let bad_path = format!(r#"{{"type": "inclusion", "seq": 1, "tree_size": 1, "path": ["{}"]}}"#, "AB".repeat(32));
        let err = parse_inclusion(&bad_path).unwrap_err();
        assert_eq!((err.state, err.message.as_str()), (SqlState::InvalidParameterValue, "malformed proof"));
        let long = format!(
            r#"{{"type": "inclusion", "seq": 1, "tree_size": 1, "path": [{}]}}"#,
            vec![format!("\"{}\"", "00".repeat(32)); 65].join(",")
        );
        assert!(parse_inclusion(&long).unwrap_err().detail.unwrap().contains("65"));
    }

    #[test]
    fn malformed_proofs_are_errors_with_a_sqlstate() {
        let cases = [
            json!([]),
            json!({"seq": 1, "tree_size": 1, "path": []}),
            json!({"type": "consistency", "seq": 1, "tree_size": 1, "path": []}),
            json!({"type": "inclusion", "seq": -1, "tree_size": 1, "path": []}),
            json!({"type": "inclusion", "seq": 1, "tree_size": "1", "path": []}),
            json!({"type": "inclusion", "seq": 1, "tree_size": 1, "path": "ab"}),
            json!({"type": "inclusion", "seq": 1, "tree_size": 1, "path": [1]}),
            json!({"type": "inclusion", "seq": 1, "tree_size": 1, "path": ["abc"]}),
            json!({"type": "inclusion", "seq": 1, "tree_size": 1, "path": vec!["00".repeat(32); 65]}),
        ];
        for case in cases {
            let err = InclusionProof::parse(&case).unwrap_err();
            assert_eq!(
                (err.state, err.message.as_str()),
                (SqlState::InvalidParameterValue, "malformed proof"),
                "{case}"
            );
        }
        let err = ConsistencyProof::parse(&json!({"type": "consistency", "old_size": 1, "new_size": 2,
            "old_root": "zz", "new_root": "00", "path": []}))
        .unwrap_err();
        assert_eq!((err.state, err.message.as_str()), (SqlState::InvalidParameterValue, "malformed proof"));
    }
}
