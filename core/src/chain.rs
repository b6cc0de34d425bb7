//! The link checks of `ledger.verify` (docs/FORMAT.md, "Verification"). The caller recomputes
//! each record's hash while scanning.
//!
//! [`ChainStream`] takes a chain's records in any order and keeps only its head (and the few
//! records that arrive ahead of their turn), so an intact chain is confirmed in memory that does
//! not grow with it. A chain it cannot confirm is then checked in full by [`check_chain`], which
//! orders the chain's records by seq and reports every problem, in seq order, so the first row
//! names the first bad seq of the chain.

use crate::hash::{to_hex, Digest};
use std::collections::BTreeMap;

/// A stored `hash` or `prev_hash` column. The variant order is the tie order of FORMAT.md:
/// well-formed hashes (by octets), then malformed ones, then NULL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StoredHash {
    Digest(Digest),
    Malformed,
    Null,
}

impl StoredHash {
    pub fn parse(text: Option<&str>) -> StoredHash {
        match text {
            None => StoredHash::Null,
            Some(t) => crate::hash::parse_hex(t, "hash").map_or(StoredHash::Malformed, StoredHash::Digest),
        }
    }

    fn describe(&self) -> String {
        match self {
            StoredHash::Null => "null".into(),
            StoredHash::Malformed => "a malformed value".into(),
            StoredHash::Digest(d) => to_hex(d),
        }
    }
}

/// What the scan keeps of one record: about 130 bytes, so a million records fit in ~130 MB.
#[derive(Debug, Clone)]
pub struct Link {
    pub seq: Option<i64>,
    pub hash: StoredHash,
    pub prev_hash: StoredHash,
    /// `None` when the stored hash equals the recomputed one; else the finding's detail.
    pub hash_problem: Option<Box<str>>,
    /// The text of a malformed stored hash, which orders malformed hashes among themselves.
    pub malformed: Option<Box<[u8]>>,
    /// The hash of the record's values, the last tie-break of the order.
    pub computed: Digest,
}

impl Link {
    /// Compares the stored hash with the recomputed one.
    pub fn new(seq: Option<i64>, hash: StoredHash, prev_hash: StoredHash, computed: &Digest) -> Link {
        let hash_problem = match hash {
            StoredHash::Digest(d) if d == *computed => None,
            other => Some(
                format!("stored hash is {}, the record's values hash to {}", other.describe(), to_hex(computed))
                    .into_boxed_str(),
            ),
        };
        Link { seq, hash, prev_hash, hash_problem, malformed: None, computed: *computed }
    }

    /// A record as the table stores it: the text of its `hash` and `prev_hash` columns.
    pub fn from_stored(seq: Option<i64>, hash: Option<&str>, prev_hash: Option<&str>, computed: &Digest) -> Link {
        let mut link = Link::new(seq, StoredHash::parse(hash), StoredHash::parse(prev_hash), computed);
        if link.hash == StoredHash::Malformed {
            // char(64) pads a shorter value with blanks, which are not part of it.
            link.malformed = hash.map(|h| h.trim_end_matches(' ').as_bytes().into());
        }
        link
    }

    /// The order of FORMAT.md, "Verification": by seq (NULL last); equal seqs by stored hash
    /// (well-formed ones by octets, malformed ones by their text, then NULL); equal stored hashes
    /// (a copy of a record) with the record whose values hash to it first, then by the hash of the
    /// values. Nothing of it depends on where a record is stored, so every verifier, reading the
    /// table or an export, takes the records in the same order.
    fn order_key(&self) -> (bool, Option<i64>, StoredHash, &[u8], bool, &Digest) {
        (
            self.seq.is_none(),
            self.seq,
            self.hash,
            self.malformed.as_deref().unwrap_or_default(),
            self.hash_problem.is_some(),
            &self.computed,
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Problem {
    SeqGap,
    DuplicateSeq,
    HashMismatch,
    PrevHashMismatch,
    /// A record with a seq that `ledger.prune` removed: it was put back, or never removed.
    PrunedSeq,
}

impl Problem {
    pub fn name(self) -> &'static str {
        match self {
            Problem::SeqGap => "seq_gap",
            Problem::DuplicateSeq => "duplicate_seq",
            Problem::HashMismatch => "hash_mismatch",
            Problem::PrevHashMismatch => "prev_hash_mismatch",
            Problem::PrunedSeq => "pruned_seq",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub seq: Option<i64>,
    pub problem: Problem,
    pub detail: String,
}

/// Where a chain's stored records start. Seq 1, linking to nothing, unless `ledger.prune` removed
/// the chain's first records: then the seq after the last pruned one, linking to its hash (kept in
/// `ledger.pruned`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Anchor {
    /// The last pruned seq (0: nothing pruned).
    pub pruned_through: i64,
    /// The hash of record `pruned_through` (None when nothing was pruned).
    pub last_pruned_hash: Option<Digest>,
}

impl Anchor {
    pub fn pruned(through: i64, last_hash: Digest) -> Anchor {
        Anchor { pruned_through: through, last_pruned_hash: Some(last_hash) }
    }

    fn first_seq(&self) -> i64 {
        self.pruned_through.saturating_add(1)
    }
}

/// Checks one chain whose records start at seq 1. Records are taken in the order of
/// [`Link::order_key`].
pub fn check_chain(links: Vec<Link>) -> Vec<Finding> {
    check_chain_from(Anchor::default(), links)
}

/// Checks one chain whose stored records start after `anchor`.
pub fn check_chain_from(anchor: Anchor, mut links: Vec<Link>) -> Vec<Finding> {
    links.sort_unstable_by(|a, b| a.order_key().cmp(&b.order_key()));
    let mut findings = Vec::new();
    let mut expected_seq = anchor.first_seq();
    let mut expected_prev = anchor.last_pruned_hash.map_or(StoredHash::Null, StoredHash::Digest);
    let mut last_seq: Option<i64> = None;
    for link in links {
        if let Some(seq) = link.seq.filter(|s| *s >= 1 && *s <= anchor.pruned_through) {
            findings.push(Finding {
                seq: Some(seq),
                problem: Problem::PrunedSeq,
                detail: format!(
                    "seqs 1 to {} of the chain were pruned, yet a record with seq {seq} is stored",
                    anchor.pruned_through
                ),
            });
            continue;
        }
        let Some(seq) = link.seq else {
            findings.push(Finding { seq: None, problem: Problem::SeqGap, detail: "record has a null seq".into() });
            if let Some(detail) = link.hash_problem {
                findings.push(Finding { seq: None, problem: Problem::HashMismatch, detail: detail.into() });
            }
            continue;
        };
        if last_seq == Some(seq) {
            findings.push(Finding {
                seq: Some(seq),
                problem: Problem::DuplicateSeq,
                detail: format!("another record also has seq {seq}"),
            });
            if let Some(detail) = link.hash_problem {
                findings.push(Finding { seq: Some(seq), problem: Problem::HashMismatch, detail: detail.into() });
            }
            continue;
        }
        if seq != expected_seq {
            findings.push(Finding {
                seq: Some(seq),
                problem: Problem::SeqGap,
                detail: format!("expected seq {expected_seq}, found {seq}"),
            });
        }
        if let Some(detail) = link.hash_problem {
            findings.push(Finding { seq: Some(seq), problem: Problem::HashMismatch, detail: detail.into() });
        }
        // The first record links to nothing (or to the last pruned one); every other one to a
        // well-formed previous hash.
        let linked = match expected_prev {
            StoredHash::Null if last_seq.is_none() => link.prev_hash == StoredHash::Null,
            StoredHash::Digest(_) => link.prev_hash == expected_prev,
            _ => false,
        };
        if !linked {
            findings.push(Finding {
                seq: Some(seq),
                problem: Problem::PrevHashMismatch,
                detail: format!(
                    "prev_hash is {}, the previous record's hash is {}",
                    link.prev_hash.describe(),
                    expected_prev.describe()
                ),
            });
        }
        last_seq = Some(seq);
        expected_seq = seq.saturating_add(1);
        expected_prev = link.hash;
    }
    findings
}

/// A stored hash as the table holds it: 64 lower-case hex digits when well-formed.
pub type HexHash = [u8; 64];

/// How many records of one chain may arrive ahead of their turn before the chain is left to the
/// full check (which holds all of them anyway).
const MAX_PENDING: usize = 65_536;

/// Confirms, record by record and in any arrival order, that a chain is intact: seqs 1..n with no
/// duplicates, every stored hash equal to the record's recomputed hash, the first `prev_hash`
/// NULL and every other equal to the previous record's hash. Exactly the chains for which
/// [`check_chain`] finds nothing are confirmed.
pub struct ChainStream {
    next_seq: i64,
    /// The stored hash of record `next_seq - 1` (none before the first).
    head: Option<HexHash>,
    /// Records that arrived ahead of their turn: seq -> (stored hash, stored prev_hash).
    ahead: BTreeMap<i64, (HexHash, Option<HexHash>)>,
    spoiled: bool,
}

impl Default for ChainStream {
    fn default() -> Self {
        ChainStream::from_anchor(Anchor::default())
    }
}

impl ChainStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// A chain whose stored records start after `anchor`.
    pub fn from_anchor(anchor: Anchor) -> Self {
        let head = anchor.last_pruned_hash.map(|h| {
            let mut hex = [0u8; 64];
            crate::hash::hex_into(&h, &mut hex);
            hex
        });
        ChainStream { next_seq: anchor.first_seq(), head, ahead: BTreeMap::new(), spoiled: false }
    }

    /// One record: its seq, its stored hash and prev_hash (the column text), and the hex of the
    /// hash recomputed from its values.
    pub fn push(&mut self, seq: Option<i64>, hash: Option<&[u8]>, prev_hash: Option<&[u8]>, computed: &HexHash) {
        if self.spoiled {
            return;
        }
        let (Some(seq), Some(hash)) = (seq, hash) else {
            self.spoiled = true;
            return;
        };
        if hash != computed.as_slice() {
            self.spoiled = true;
            return;
        }
        let prev_hash = match prev_hash.map(<HexHash>::try_from) {
            None => None,
            Some(Ok(p)) => Some(p),
            Some(Err(_)) => {
                self.spoiled = true;
                return;
            }
        };
        if seq == self.next_seq {
            self.advance(*computed, prev_hash);
            while !self.spoiled {
                let Some((hash, prev_hash)) = self.ahead.remove(&self.next_seq) else { break };
                self.advance(hash, prev_hash);
            }
        } else if seq < self.next_seq || self.ahead.len() >= MAX_PENDING {
            self.spoiled = true;
        } else if self.ahead.insert(seq, (*computed, prev_hash)).is_some() {
            self.spoiled = true; // a duplicate seq
        }
    }

    fn advance(&mut self, hash: HexHash, prev_hash: Option<HexHash>) {
        if prev_hash != self.head {
            self.spoiled = true;
            return;
        }
        self.head = Some(hash);
        self.next_seq += 1;
    }

    /// Whether every record pushed forms an intact chain.
    pub fn intact(&self) -> bool {
        !self.spoiled && self.ahead.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::sha3_256;

    /// A valid chain of n records whose "values" are just their seq.
    fn chain(n: i64) -> Vec<(i64, Digest, StoredHash)> {
        let mut out = Vec::new();
        let mut prev = StoredHash::Null;
        for seq in 1..=n {
            let mut input = seq.to_be_bytes().to_vec();
            if let StoredHash::Digest(p) = prev {
                input.extend_from_slice(&p);
            }
            let h = sha3_256(&input);
            out.push((seq, h, prev));
            prev = StoredHash::Digest(h);
        }
        out
    }

    fn links(records: &[(i64, Digest, StoredHash)]) -> Vec<Link> {
        records.iter().map(|(s, h, p)| Link::new(Some(*s), StoredHash::Digest(*h), *p, h)).collect()
    }

    fn problems(findings: &[Finding]) -> Vec<(Option<i64>, &'static str)> {
        findings.iter().map(|f| (f.seq, f.problem.name())).collect()
    }

    /// The records after seq `through` of a chain, and the anchor that pruning them leaves.
    fn pruned(records: &[(i64, Digest, StoredHash)], through: usize) -> (Anchor, Vec<Link>) {
        (Anchor::pruned(through as i64, records[through - 1].1), links(&records[through..]))
    }

    fn stream_confirms(anchor: Anchor, links: &[Link]) -> bool {
        let mut stream = ChainStream::from_anchor(anchor);
        for link in links.iter().rev() {
            let (StoredHash::Digest(h), prev) = (link.hash, link.prev_hash) else { unreachable!() };
            let prev_hex = match prev {
                StoredHash::Digest(p) => Some(to_hex(&p)),
                _ => None,
            };
            let mut computed = [0u8; 64];
            crate::hash::hex_into(&link.computed, &mut computed);
            stream.push(link.seq, Some(to_hex(&h).as_bytes()), prev_hex.as_deref().map(str::as_bytes), &computed);
        }
        stream.intact()
    }

    #[test]
    fn a_pruned_chain_starts_after_its_anchor() {
        let records = chain(10);
        let (anchor, l) = pruned(&records, 4);
        assert!(check_chain_from(anchor, l.clone()).is_empty());
        assert!(stream_confirms(anchor, &l));
        // From seq 1 the same records are a gap and a broken first link.
        assert_eq!(problems(&check_chain(l.clone())), vec![(Some(5), "seq_gap"), (Some(5), "prev_hash_mismatch")]);
        assert!(!stream_confirms(Anchor::default(), &l));
    }

    #[test]
    fn deleting_the_first_kept_record_of_a_pruned_chain_is_a_gap() {
        let records = chain(10);
        let (anchor, mut l) = pruned(&records, 4);
        l.remove(0);
        assert_eq!(
            problems(&check_chain_from(anchor, l.clone())),
            vec![(Some(6), "seq_gap"), (Some(6), "prev_hash_mismatch")]
        );
        assert!(!stream_confirms(anchor, &l));
    }

    #[test]
    fn a_wrong_anchor_hash_breaks_the_first_kept_link() {
        let records = chain(10);
        let (_, l) = pruned(&records, 4);
        let forged = Anchor::pruned(4, records[2].1);
        assert_eq!(problems(&check_chain_from(forged, l.clone())), vec![(Some(5), "prev_hash_mismatch")]);
        assert!(!stream_confirms(forged, &l));
    }

    #[test]
    fn a_record_put_back_into_the_pruned_part_is_reported() {
        let records = chain(10);
        let (anchor, mut l) = pruned(&records, 4);
        l.extend(links(&records[1..2]));
        assert_eq!(problems(&check_chain_from(anchor, l.clone())), vec![(Some(2), "pruned_seq")]);
        assert!(!stream_confirms(anchor, &l));
    }

    #[test]
    fn an_intact_chain_has_no_findings_in_any_order() {
        let mut l = links(&chain(50));
        l.reverse();
        assert!(check_chain(l).is_empty());
        assert!(check_chain(Vec::new()).is_empty());
    }

    #[test]
    fn an_edited_record_is_a_hash_mismatch_at_its_seq() {
        let records = chain(5);
        let mut l = links(&records);
        l[2] = Link::new(Some(3), StoredHash::Digest(records[2].1), records[2].2, &sha3_256(b"edited"));
        assert_eq!(problems(&check_chain(l)), vec![(Some(3), "hash_mismatch")]);
    }

    #[test]
    fn a_forged_hash_breaks_its_own_check_and_the_next_link() {
        let records = chain(5);
        let mut l = links(&records);
        l[1].hash = StoredHash::Digest([7; 32]);
        l[1] = Link::new(Some(2), l[1].hash, l[1].prev_hash, &records[1].1);
        assert_eq!(problems(&check_chain(l)), vec![(Some(2), "hash_mismatch"), (Some(3), "prev_hash_mismatch")]);
    }

    #[test]
    fn a_deleted_middle_record_is_a_gap_and_a_broken_link() {
        let mut l = links(&chain(5));
        l.remove(2);
        assert_eq!(problems(&check_chain(l)), vec![(Some(4), "seq_gap"), (Some(4), "prev_hash_mismatch")]);
    }

    #[test]
    fn a_deleted_first_record_is_caught() {
        let mut l = links(&chain(3));
        l.remove(0);
        assert_eq!(problems(&check_chain(l)), vec![(Some(2), "seq_gap"), (Some(2), "prev_hash_mismatch")]);
    }

    #[test]
    fn a_record_after_one_with_a_null_hash_has_no_valid_link() {
        let records = chain(3);
        let mut l = links(&records);
        l[0] = Link::new(Some(1), StoredHash::Null, StoredHash::Null, &records[0].1);
        l[1].prev_hash = StoredHash::Null;
        let found = problems(&check_chain(l));
        assert_eq!(found, vec![(Some(1), "hash_mismatch"), (Some(2), "prev_hash_mismatch")]);
    }

    #[test]
    fn a_duplicated_record_is_reported() {
        let mut l = links(&chain(4));
        l.push(l[1].clone());
        assert_eq!(problems(&check_chain(l)), vec![(Some(2), "duplicate_seq")]);
    }

    #[test]
    fn a_modified_copy_is_the_duplicate_whichever_comes_first() {
        let records = chain(5);
        let genuine = links(&records);
        // Same seq, prev_hash and stored hash as record 3, other values.
        let copy = Link::new(Some(3), StoredHash::Digest(records[2].1), records[2].2, &sha3_256(b"copy"));
        let expected = vec![(Some(3), "duplicate_seq"), (Some(3), "hash_mismatch")];
        for position in 0..=genuine.len() {
            let mut l = genuine.clone();
            l.insert(position, copy.clone());
            assert_eq!(problems(&check_chain(l.clone())), expected, "copy at {position}");
            l.reverse();
            assert_eq!(problems(&check_chain(l)), expected, "copy at {position}, reversed");
        }
        // Two copies, neither genuine: the order is by the hash of their values, wherever stored.
        let other = Link::new(Some(3), StoredHash::Digest(records[2].1), records[2].2, &sha3_256(b"other"));
        let mut a = genuine.clone();
        a[2] = copy.clone();
        a.push(other.clone());
        let mut b = genuine.clone();
        b[2] = other;
        b.insert(0, copy);
        assert_eq!(check_chain(a), check_chain(b));
    }

    #[test]
    fn malformed_hashes_are_ordered_by_their_text() {
        let records = chain(3);
        let previous = to_hex(&records[0].1);
        let (low, high) = {
            let (x, y) = (sha3_256(b"x"), sha3_256(b"y"));
            if x < y {
                (x, y)
            } else {
                (y, x)
            }
        };
        // By the hash of their values "zz" would come first; by their text, "aa" does.
        let zz = Link::from_stored(Some(2), Some("zz"), Some(&previous), &low);
        let aa = Link::from_stored(Some(2), Some("aa   "), Some(&previous), &high);
        for order in [vec![zz.clone(), aa.clone()], vec![aa, zz]] {
            let mut l = links(&records);
            l.splice(1..2, order);
            let first_mismatch = check_chain(l).into_iter().find(|f| f.problem == Problem::HashMismatch).unwrap();
            assert_eq!(first_mismatch.seq, Some(2));
            assert!(first_mismatch.detail.ends_with(&to_hex(&high)), "{}", first_mismatch.detail);
        }
    }

    #[test]
    fn swapped_seqs_are_caught_at_the_first_swapped_record() {
        let records = chain(5);
        let mut l = links(&records);
        // Rows 3 and 4 trade seq numbers; seq is hashed, so both hashes stop matching.
        l[2] = Link::new(Some(4), StoredHash::Digest(records[2].1), records[2].2, &sha3_256(b"3 as 4"));
        l[3] = Link::new(Some(3), StoredHash::Digest(records[3].1), records[3].2, &sha3_256(b"4 as 3"));
        let found = problems(&check_chain(l));
        assert_eq!(found[0], (Some(3), "hash_mismatch"));
        assert!(found.contains(&(Some(3), "prev_hash_mismatch")));
    }

    #[test]
    fn null_and_malformed_stored_hashes_are_findings() {
        let records = chain(3);
        let mut l = links(&records);
        l[0] = Link::new(Some(1), StoredHash::Malformed, StoredHash::Null, &records[0].1);
        let found = problems(&check_chain(l));
        assert_eq!(found, vec![(Some(1), "hash_mismatch"), (Some(2), "prev_hash_mismatch")]);
        let mut l = links(&records);
        l[2].seq = None;
        assert_eq!(problems(&check_chain(l)), vec![(None, "seq_gap")]);
    }

    fn hex(d: &Digest) -> HexHash {
        to_hex(d).into_bytes().try_into().unwrap()
    }

    /// The stream's verdict, and check_chain's, over the same links.
    fn both(l: &[Link], computed: &[Digest]) -> (bool, bool) {
        let mut stream = ChainStream::default();
        for (link, c) in l.iter().zip(computed) {
            let text = |h: &StoredHash| match h {
                StoredHash::Digest(d) => Some(to_hex(d)),
                StoredHash::Malformed => Some("not a hash".to_string()),
                StoredHash::Null => None,
            };
            let (h, p) = (text(&link.hash), text(&link.prev_hash));
            stream.push(link.seq, h.as_deref().map(str::as_bytes), p.as_deref().map(str::as_bytes), &hex(c));
        }
        (stream.intact(), check_chain(l.to_vec()).is_empty())
    }

    #[test]
    fn the_stream_confirms_exactly_the_chains_check_chain_passes() {
        let records = chain(40);
        let computed: Vec<Digest> = records.iter().map(|r| r.1).collect();
        let intact = links(&records);
        let mut cases: Vec<(Vec<Link>, Vec<Digest>)> = vec![(intact.clone(), computed.clone())];
        // Every arrival order of a small window, reversed, interleaved.
        let mut reversed = intact.clone();
        reversed.reverse();
        cases.push((reversed, computed.iter().rev().copied().collect()));
        let order: Vec<usize> = (0..40).map(|i| (i * 7) % 40).collect();
        cases.push((order.iter().map(|&i| intact[i].clone()).collect(), order.iter().map(|&i| computed[i]).collect()));
        // Each kind of tampering.
        for i in 0..40 {
            let mut edited = intact.clone();
            edited[i] = Link::new(edited[i].seq, StoredHash::Digest([9; 32]), edited[i].prev_hash, &computed[i]);
            cases.push((edited, computed.clone()));
            let mut deleted = intact.clone();
            let mut c = computed.clone();
            deleted.remove(i);
            c.remove(i);
            cases.push((deleted, c));
            let mut duplicated = intact.clone();
            duplicated.push(intact[i].clone());
            let mut c = computed.clone();
            c.push(computed[i]);
            cases.push((duplicated, c));
            let mut relinked = intact.clone();
            relinked[i].prev_hash = StoredHash::Malformed;
            cases.push((relinked, computed.clone()));
        }
        let mut null_seq = intact.clone();
        null_seq[5].seq = None;
        cases.push((null_seq, computed.clone()));
        for (l, c) in &cases {
            let (stream, full) = both(l, c);
            assert_eq!(stream, full, "{:?}", l.iter().map(|x| x.seq).collect::<Vec<_>>());
        }
        assert!(both(&[], &[]).0);
    }
}
