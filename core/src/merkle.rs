//! The Merkle tree of a chain: RFC 6962 / RFC 9162 section 2.1 with SHA3-256 in place of SHA-256.
//!
//! ```text
//! leaf(d)      = SHA3-256(0x00 || d)          d is a record's 32-byte hash
//! node(l, r)   = SHA3-256(0x01 || l || r)
//! MTH({})      = SHA3-256("")
//! MTH(D[n])    = node(MTH(D[0:k]), MTH(D[k:n]))   k the largest power of two below n
//! ```
//!
//! [`Frontier`] keeps the roots of the perfect subtrees that make up a tree of any size, so the
//! next checkpoint of a chain hashes only the records added since the last one.

use crate::hash::{sha3_256, Digest};
use sha3::{Digest as _, Sha3_256};
use std::convert::Infallible;

pub fn leaf_hash(record_hash: &Digest) -> Digest {
    let mut h = Sha3_256::new();
    h.update([0x00]);
    h.update(record_hash);
    h.finalize().into()
}

pub fn node_hash(left: &Digest, right: &Digest) -> Digest {
    let mut h = Sha3_256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

pub fn empty_root() -> Digest {
    sha3_256(b"")
}

/// The largest power of two strictly below `n` (n >= 2).
pub(crate) fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// MTH over leaf hashes (already `leaf_hash`ed), computed bottom-up without recursion.
pub fn root_of_leaves(leaves: &[Digest]) -> Digest {
    let mut frontier = Frontier::default();
    for leaf in leaves {
        frontier.push_leaf(*leaf);
    }
    frontier.root()
}

/// The perfect subtrees of a tree of `size` leaves, largest first: one per set bit of `size`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    subtrees: Vec<Digest>,
}

impl Frontier {
    /// Rebuilds a frontier from its stored parts; `None` when they do not fit together.
    pub fn from_parts(size: u64, subtrees: Vec<Digest>) -> Option<Frontier> {
        (subtrees.len() == size.count_ones() as usize).then_some(Frontier { size, subtrees })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn subtrees(&self) -> &[Digest] {
        &self.subtrees
    }

    /// Appends a record (its 32-byte record hash).
    pub fn push(&mut self, record_hash: &Digest) {
        self.push_leaf(leaf_hash(record_hash));
    }

    /// As [`Frontier::push`], telling `completed` of every perfect subtree above the leaves that the
    /// record completes, as (height, index among the subtrees of that height, root), lowest first.
    pub fn push_reporting(&mut self, record_hash: &Digest, completed: impl FnMut(u32, u64, &Digest)) {
        self.push_leaf_reporting(leaf_hash(record_hash), completed);
    }

    fn push_leaf(&mut self, leaf: Digest) {
        self.push_leaf_reporting(leaf, |_, _, _| {});
    }

    fn push_leaf_reporting(&mut self, leaf: Digest, mut completed: impl FnMut(u32, u64, &Digest)) {
        let mut node = leaf;
        let size = self.size + 1;
        // Each trailing one bit of the old size is a subtree the new leaf completes.
        for height in 1..=self.size.trailing_ones() {
            let left = self.subtrees.pop().expect("one subtree per set bit");
            node = node_hash(&left, &node);
            completed(height, (size >> height) - 1, &node);
        }
        self.subtrees.push(node);
        self.size = size;
    }

    /// MTH of the tree so far.
    pub fn root(&self) -> Digest {
        let mut iter = self.subtrees.iter().rev();
        let Some(last) = iter.next() else { return empty_root() };
        iter.fold(*last, |right, left| node_hash(left, &right))
    }
}

/// MTH(D[lo:hi]) of a slice of leaf hashes.
fn subtree_root(leaves: &[Digest]) -> Digest {
    root_of_leaves(leaves)
}

/// PATH(m, D[n]) of RFC 9162 2.1.3.1: the audit path of leaf `index` in a tree of `leaves`.
pub fn inclusion_proof(leaves: &[Digest], index: u64) -> Option<Vec<Digest>> {
    let n = leaves.len() as u64;
    let all = |lo: u64, hi: u64| Ok::<_, Infallible>(subtree_root(&leaves[lo as usize..hi as usize]));
    (index < n).then(|| inclusion_path(n, index, all).unwrap_or_else(|never| match never {}))
}

/// PATH(m, D[n]) with the MTH of each range `lo..hi` it needs from `range_root`, so that a tree
/// whose subtree roots are stored need not be read whole. `index` must be below `size`.
pub fn inclusion_path<E>(
    size: u64,
    index: u64,
    mut range_root: impl FnMut(u64, u64) -> Result<Digest, E>,
) -> Result<Vec<Digest>, E> {
    debug_assert!(index < size);
    let mut path = Vec::new();
    let (mut lo, mut hi, mut m) = (0u64, size, index);
    // Walk down from the root, collecting the sibling of each subtree containing the leaf; the
    // RFC lists them leaf first, so reverse at the end.
    while hi - lo > 1 {
        let k = split(hi - lo);
        if m < k {
            path.push(range_root(lo + k, hi)?);
            hi = lo + k;
        } else {
            path.push(range_root(lo, lo + k)?);
            lo += k;
            m -= k;
        }
    }
    path.reverse();
    Ok(path)
}

/// RFC 9162 2.1.3.2: does `path` prove leaf `index` (a leaf hash) is in the tree of `size` with `root`?
pub fn verify_inclusion(leaf: &Digest, index: u64, size: u64, path: &[Digest], root: &Digest) -> bool {
    if index >= size {
        return false;
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0 && r == *root
}

/// PROOF(m, D[n]) of RFC 9162 2.1.4.1: that the tree of the first `old_size` leaves is a prefix.
pub fn consistency_proof(leaves: &[Digest], old_size: u64) -> Option<Vec<Digest>> {
    let n = leaves.len() as u64;
    let all = |lo: u64, hi: u64| Ok::<_, Infallible>(subtree_root(&leaves[lo as usize..hi as usize]));
    (old_size <= n).then(|| consistency_path(n, old_size, all).unwrap_or_else(|never| match never {}))
}

/// PROOF(m, D[n]) with the MTH of each range it needs from `range_root`, as [`inclusion_path`].
/// `old_size` must not exceed `size`.
pub fn consistency_path<E>(
    size: u64,
    old_size: u64,
    mut range_root: impl FnMut(u64, u64) -> Result<Digest, E>,
) -> Result<Vec<Digest>, E> {
    debug_assert!(old_size <= size);
    if old_size == 0 || old_size == size {
        return Ok(Vec::new());
    }
    let mut proof = Vec::new();
    let (mut lo, mut hi, mut m, mut complete) = (0u64, size, old_size, true);
    loop {
        let n = hi - lo;
        if m == n {
            if !complete {
                proof.push(range_root(lo, hi)?);
            }
            break;
        }
        let k = split(n);
        if m <= k {
            proof.push(range_root(lo + k, hi)?);
            hi = lo + k;
        } else {
            proof.push(range_root(lo, lo + k)?);
            lo += k;
            m -= k;
            complete = false;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// RFC 9162 2.1.4.2: does `proof` show the tree (`old_size`, `old_root`) is a prefix of
/// (`new_size`, `new_root`)?
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Digest,
    new_root: &Digest,
    proof: &[Digest],
) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    if old_size == 0 {
        return proof.is_empty() && *old_root == empty_root();
    }
    let mut path: Vec<Digest> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else { return false };
    let (mut f_n, mut s_n) = (old_size - 1, new_size - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut f_r, mut s_r) = (*first, *first);
    for c in rest {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    f_r == *old_root && s_r == *new_root && s_n == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::to_hex;

    /// The test leaves of docs/FORMAT.md: record i's hash is SHA3-256 of i in ASCII decimal.
    fn records(n: u64) -> Vec<Digest> {
        (0..n).map(|i| sha3_256(i.to_string().as_bytes())).collect()
    }

    fn leaves(n: u64) -> Vec<Digest> {
        records(n).iter().map(leaf_hash).collect()
    }

    /// MTH exactly as the RFC defines it, recursively, to check everything else against.
    fn mth(leaves: &[Digest]) -> Digest {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    #[test]
    fn the_frontier_root_is_the_rfc_tree_hash_at_every_size() {
        let all = leaves(300);
        let mut frontier = Frontier::default();
        assert_eq!(frontier.root(), mth(&[]));
        for (i, record) in records(300).iter().enumerate() {
            frontier.push(record);
            assert_eq!(frontier.root(), mth(&all[..=i]), "size {}", i + 1);
            assert_eq!(frontier.subtrees().len(), (i + 1).count_ones() as usize);
        }
    }

    #[test]
    fn a_frontier_rebuilt_from_parts_continues_where_it_stopped() {
        let mut a = Frontier::default();
        records(37).iter().for_each(|r| a.push(r));
        let mut b = Frontier::from_parts(a.size(), a.subtrees().to_vec()).unwrap();
        for r in records(50).iter().skip(37) {
            a.push(r);
            b.push(r);
        }
        assert_eq!(a, b);
        assert!(Frontier::from_parts(5, vec![[0; 32]]).is_none());
    }

    #[test]
    fn every_inclusion_proof_verifies_and_no_other_leaf_does() {
        for n in 1..=40u64 {
            let l = leaves(n);
            let root = mth(&l);
            for m in 0..n {
                let path = inclusion_proof(&l, m).unwrap();
                assert!(verify_inclusion(&l[m as usize], m, n, &path, &root), "n {n} m {m}");
                let other = (m + 1) % n;
                if other != m {
                    assert!(!verify_inclusion(&l[other as usize], m, n, &path, &root));
                    assert!(!verify_inclusion(&l[m as usize], other, n, &path, &root));
                }
                // Another size has another root; the path proves nothing against it unless that
                // tree gives the leaf the very same path. (Sizes are bound by signed checkpoints.)
                let bigger = leaves(n + 1);
                if verify_inclusion(&l[m as usize], m, n + 1, &path, &mth(&bigger)) {
                    assert_eq!(inclusion_proof(&bigger, m).unwrap(), path);
                }
            }
            assert!(inclusion_proof(&l, n).is_none());
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_tampering_fails() {
        for n in 1..=33u64 {
            let l = leaves(n);
            let new_root = mth(&l);
            for m in 0..=n {
                let old_root = mth(&l[..m as usize]);
                let proof = consistency_proof(&l, m).unwrap();
                assert!(verify_consistency(m, n, &old_root, &new_root, &proof), "m {m} n {n}");
                if m > 0 && m < n {
                    let mut bad = proof.clone();
                    bad[0][0] ^= 1;
                    assert!(!verify_consistency(m, n, &old_root, &new_root, &bad));
                    assert!(!verify_consistency(m, n, &new_root, &new_root, &proof));
                    let bigger = leaves(n + 1);
                    if verify_consistency(m, n + 1, &old_root, &mth(&bigger), &proof) {
                        assert_eq!(consistency_proof(&bigger, m).unwrap(), proof);
                    }
                    let longer_old = mth(&l[..=m as usize]);
                    if verify_consistency(m + 1, n, &longer_old, &new_root, &proof) {
                        assert_eq!(consistency_proof(&l, m + 1).unwrap(), proof);
                    }
                }
            }
        }
    }

    #[test]
    fn a_rewritten_history_is_not_consistent() {
        let l = leaves(20);
        let old_root = mth(&l[..12]);
        let mut rewritten = l.clone();
        rewritten[3] = leaf_hash(&sha3_256(b"rewritten"));
        let proof = consistency_proof(&rewritten, 12).unwrap();
        assert!(!verify_consistency(12, 20, &old_root, &mth(&rewritten), &proof));
    }

    #[test]
    fn proofs_match_the_rfc_shapes() {
        // RFC 9162's worked example sizes: a tree of 7 leaves.
        let l = leaves(7);
        assert_eq!(inclusion_proof(&l, 0).unwrap(), vec![l[1], mth(&l[2..4]), mth(&l[4..7])]);
        assert_eq!(inclusion_proof(&l, 6).unwrap(), vec![mth(&l[4..6]), mth(&l[0..4])]);
        assert_eq!(consistency_proof(&l, 3).unwrap(), vec![l[2], l[3], mth(&l[0..2]), mth(&l[4..7])]);
        assert_eq!(consistency_proof(&l, 4).unwrap(), vec![mth(&l[4..7])]);
        assert_eq!(consistency_proof(&l, 6).unwrap(), vec![mth(&l[4..6]), l[6], mth(&l[0..4])]);
    }

    /// The roots printed in docs/FORMAT.md ("Merkle trees").
    #[test]
    fn format_document_roots() {
        let expected = [
            (0, "a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a"),
            (1, "21502a5b461ec8bba501b6aa9396dc2335853f6dc702d499fad9fd2e1ac403c3"),
            (2, "0759cdf5dba53608d2dcebbaac7d8970da9a0250543fba2c93298e733fcc9d27"),
            (3, "4805de1584b619756c514710f02f2951606cda38d257e5a256c881b4a9d0fafe"),
            (4, "5f4950d82044200d06873e9bb51120c3cc276577797d41deed69262fb29a6c95"),
            (5, "adcc5fe0733670da50c363b6d1eb200ece8fe47bfacb0fce978a57195ededddf"),
            (7, "b0e7d282f3f1fb4bfb36b6b67d3c9ea584007d1dcac09a67d773570c59ebe2f1"),
            (8, "a35378d5a429249fe26c5918d244449de95777ffee2c9e18450a655cf897650f"),
            (9, "93085f60fd3bc2921145349a44f95fa4cb51e3d05daa8d8b5e30304a1eefd153"),
            (1000, "e7ce2cf9c02dfafcbf7a07fa2439bda42234cfb51974818825729534f12f0ace"),
        ];
        for (n, hex) in expected {
            assert_eq!(to_hex(&mth(&leaves(n))), hex, "size {n}");
        }
    }
}

/// docs/vectors/merkle.json, made by an independent implementation of RFC 9162's definitions.
#[cfg(test)]
mod vectors {
    use super::*;
    use crate::hash::parse_hex;
    use serde_json::Value;

    fn digests(v: &Value) -> Vec<Digest> {
        v.as_array().unwrap().iter().map(|h| parse_hex(h.as_str().unwrap(), "vector").unwrap()).collect()
    }

    #[test]
    fn the_published_vectors_hold() {
        let doc: Value = serde_json::from_str(include_str!("../../docs/vectors/merkle.json")).unwrap();
        let leaves: Vec<Digest> = (0..1000u64).map(|i| leaf_hash(&sha3_256(i.to_string().as_bytes()))).collect();
        for (size, root) in doc["roots"].as_object().unwrap() {
            let n: usize = size.parse().unwrap();
            assert_eq!(crate::hash::to_hex(&root_of_leaves(&leaves[..n])), root.as_str().unwrap(), "root of {n}");
        }
        for v in doc["inclusion"].as_array().unwrap() {
            let (seq, n) = (v["seq"].as_u64().unwrap(), v["tree_size"].as_u64().unwrap());
            let path = digests(&v["path"]);
            assert_eq!(inclusion_proof(&leaves[..n as usize], seq - 1).unwrap(), path, "inclusion {seq} of {n}");
            let record = parse_hex(v["record_hash"].as_str().unwrap(), "vector").unwrap();
            assert!(verify_inclusion(&leaf_hash(&record), seq - 1, n, &path, &root_of_leaves(&leaves[..n as usize])));
        }
        for v in doc["consistency"].as_array().unwrap() {
            let (m, n) = (v["old_size"].as_u64().unwrap(), v["new_size"].as_u64().unwrap());
            let path = digests(&v["path"]);
            assert_eq!(consistency_proof(&leaves[..n as usize], m).unwrap(), path, "consistency {m} to {n}");
            let old_root = parse_hex(v["old_root"].as_str().unwrap(), "vector").unwrap();
            let new_root = parse_hex(v["new_root"].as_str().unwrap(), "vector").unwrap();
            assert!(verify_consistency(m, n, &old_root, &new_root, &path), "consistency {m} to {n}");
        }
    }
}
