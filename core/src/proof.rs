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
use serde_json::{json, Map, Value};

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

/// A proof's JSON text as a value. serde_json's nesting limit (128) stands: proofs nest two deep, and
/// deeper input is refused rather than recursed into.
pub fn parse_json(text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| shape(format!("not JSON a proof can be read from: {e}")))
}

fn object<'a>(proof: &'a Value, kind: &str) -> Result<&'a Map<String, Value>> {
    let map = proof.as_object().ok_or_else(|| shape("a proof is a JSON object"))?;
    match map.get("type").and_then(Value::as_str) {
        Some(t) if t == kind => Ok(map),
        Some(other) => Err(shape(format!("expected a {kind} proof, got type \"{other}\""))),
        None => Err(shape("the member \"type\" is missing")),
    }
}

fn count(map: &Map<String, Value>, key: &str) -> Result<u64> {
    map.get(key).and_then(Value::as_u64).ok_or_else(|| shape(format!("\"{key}\" must be a non-negative integer")))
}

fn digest(map: &Map<String, Value>, key: &str) -> Result<Digest> {
    let text = map.get(key).and_then(Value::as_str).ok_or_else(|| shape(format!("\"{key}\" must be a hex string")))?;
    parse_hex(text, key)
}

fn path(map: &Map<String, Value>) -> Result<Vec<Digest>> {
    let items = map.get("path").and_then(Value::as_array).ok_or_else(|| shape("\"path\" must be an array"))?;
    if items.len() > 64 {
        return Err(shape(format!("a path has at most 64 hashes, this one has {}", items.len())));
    }
    items
        .iter()
        .map(|item| {
            item.as_str().ok_or_else(|| shape("\"path\" holds hex strings")).and_then(|t| parse_hex(t, "path hash"))
        })
        .collect()
}

impl InclusionProof {
    pub fn parse(proof: &Value) -> Result<InclusionProof> {
        let map = object(proof, "inclusion")?;
        Ok(InclusionProof { seq: count(map, "seq")?, tree_size: count(map, "tree_size")?, path: path(map)? })
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
    pub fn parse(proof: &Value) -> Result<ConsistencyProof> {
        let map = object(proof, "consistency")?;
        Ok(ConsistencyProof {
            old_size: count(map, "old_size")?,
            new_size: count(map, "new_size")?,
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
            assert!(
                matches!(err.state, SqlState::InvalidParameterValue | SqlState::InvalidTextRepresentation),
                "{case}"
            );
        }
        let err = ConsistencyProof::parse(&json!({"type": "consistency", "old_size": 1, "new_size": 2,
            "old_root": "zz", "new_root": "00", "path": []}))
        .unwrap_err();
        assert_eq!(err.state, SqlState::InvalidTextRepresentation);
    }
}
