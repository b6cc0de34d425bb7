//! Proofs in logarithmic time from stored subtree roots, in the manner of transparency logs' tiles
//! (C2SP tlog-tiles, tiles of 256 hashes).
//!
//! A checkpoint stores the root of every perfect subtree whose height is a positive multiple of 8
//! (each run of 256 records, each run of 65,536, ...). Subtree roots of height `8g` numbered
//! `256t .. 256t + 256` form tile `t` of level `g`; level 0 is the records' leaf hashes themselves.
//! Any perfect subtree of height `8g + r` is the root of `2^r` consecutive entries of one tile, so
//! each hash of a proof needs one tile, and a proof touches at most two tiles per level: a few
//! hundred hashes read for any tree size, where the whole tree would be millions.
//!
//! What is read is only trusted as far as the proof it makes verifies against the checkpoint's
//! root; the caller checks that, and recomputes from the records when it does not.

use crate::hash::Digest;
use crate::merkle::{consistency_path, inclusion_path, node_hash, split};
use std::collections::HashMap;

/// Tiles are 256 hashes wide: 8 levels of the tree.
pub const TILE_HEIGHT: u32 = 8;
pub const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;

/// Whether a checkpoint stores the roots of perfect subtrees of this height.
pub fn is_stored_height(height: u32) -> bool {
    height > 0 && height % TILE_HEIGHT == 0
}

/// Where tile entries come from.
pub trait TileSource {
    type Error;
    /// The roots of the perfect subtrees of height `8 * level` numbered `first .. first + count`
    /// in order (for level 0, the leaf hashes of records `first + 1 ..= first + count`): exactly
    /// `count` of them, or an error.
    fn read(&mut self, level: u32, first: u64, count: u64) -> Result<Vec<Digest>, Self::Error>;
}

/// The Merkle tree of the first `size` records, read tile by tile as a proof needs it.
pub struct TiledTree<S> {
    size: u64,
    source: S,
    /// Each tile read, with the 8 levels of subtrees within it (entry 0: the tile itself).
    tiles: HashMap<(u32, u64), Vec<Vec<Digest>>>,
}

impl<S: TileSource> TiledTree<S> {
    pub fn new(size: u64, source: S) -> TiledTree<S> {
        TiledTree { size, source, tiles: HashMap::new() }
    }

    /// How many tiles were read (each at most once).
    pub fn tiles_read(&self) -> usize {
        self.tiles.len()
    }

    fn tile(&mut self, level: u32, tile: u64) -> Result<&[Vec<Digest>], S::Error> {
        if !self.tiles.contains_key(&(level, tile)) {
            let complete = self.size >> (TILE_HEIGHT * level);
            let count = (complete - tile * TILE_WIDTH).min(TILE_WIDTH);
            let mut levels = vec![self.source.read(level, tile * TILE_WIDTH, count)?];
            while let Some(below) = levels.last().filter(|l| l.len() > 1) {
                let above = below.chunks_exact(2).map(|pair| node_hash(&pair[0], &pair[1])).collect();
                levels.push(above);
            }
            self.tiles.insert((level, tile), levels);
        }
        Ok(&self.tiles[&(level, tile)])
    }

    /// The root of the perfect subtree of `height` numbered `index`; it must lie within the tree.
    pub fn subtree(&mut self, height: u32, index: u64) -> Result<Digest, S::Error> {
        debug_assert!((index + 1) << height <= self.size);
        let (level, within) = (height / TILE_HEIGHT, height % TILE_HEIGHT);
        let first = index << within; // the first tile entry it covers
        let levels = self.tile(level, first / TILE_WIDTH)?;
        Ok(levels[within as usize][((first % TILE_WIDTH) >> within) as usize])
    }

    /// MTH(D[lo:hi]), `lo < hi <= size`.
    pub fn range_root(&mut self, lo: u64, hi: u64) -> Result<Digest, S::Error> {
        let n = hi - lo;
        if n.is_power_of_two() && lo % n == 0 {
            return self.subtree(n.trailing_zeros(), lo >> n.trailing_zeros());
        }
        let k = split(n);
        let left = self.range_root(lo, lo + k)?;
        let right = self.range_root(lo + k, hi)?;
        Ok(node_hash(&left, &right))
    }

    /// PATH(index, D[size]); `index` must be below the size.
    pub fn inclusion_proof(&mut self, index: u64) -> Result<Vec<Digest>, S::Error> {
        inclusion_path(self.size, index, |lo, hi| self.range_root(lo, hi))
    }

    /// PROOF(old_size, D[size]); `old_size` must not exceed the size.
    pub fn consistency_proof(&mut self, old_size: u64) -> Result<Vec<Digest>, S::Error> {
        consistency_path(self.size, old_size, |lo, hi| self.range_root(lo, hi))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::sha3_256;
    use crate::merkle::{self, Frontier};

    /// A chain in memory with the subtree roots its checkpoints would have stored.
    struct Stored {
        leaves: Vec<Digest>,
        nodes: HashMap<(u32, u64), Digest>,
        reads: usize,
    }

    impl Stored {
        fn new(n: u64) -> Stored {
            let mut frontier = Frontier::default();
            let mut nodes = HashMap::new();
            let mut leaves = Vec::new();
            for i in 0..n {
                let record = sha3_256(i.to_string().as_bytes());
                leaves.push(merkle::leaf_hash(&record));
                frontier.push_reporting(&record, |height, index, root| {
                    if is_stored_height(height) {
                        nodes.insert((height, index), *root);
                    }
                });
            }
            Stored { leaves, nodes, reads: 0 }
        }
    }

    impl TileSource for &mut Stored {
        type Error = String;
        fn read(&mut self, level: u32, first: u64, count: u64) -> Result<Vec<Digest>, String> {
            self.reads += 1;
            (first..first + count)
                .map(|i| match level {
                    0 => self.leaves.get(i as usize).copied(),
                    _ => self.nodes.get(&(level * TILE_HEIGHT, i)).copied(),
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| format!("level {level} entries {first}..{} are not stored", first + count))
        }
    }

    #[test]
    fn tiled_proofs_are_the_proofs_of_the_whole_tree() {
        let mut stored = Stored::new(66_000);
        // Each expected proof hashes the whole tree again: few of them on the large trees, so
        // that the test stays quick in a debug build.
        for size in [1u64, 2, 255, 256, 257, 511, 4_097, 65_535, 65_536, 65_537, 66_000] {
            let leaves = stored.leaves[..size as usize].to_vec();
            let indexes: &[u64] = if size > 4_097 { &[0, 65_535] } else { &[0, size / 3, size / 2, size - 1, 256] };
            for index in indexes.iter().map(|&i| i.min(size - 1)) {
                let mut tree = TiledTree::new(size, &mut stored);
                assert_eq!(
                    tree.inclusion_proof(index).unwrap(),
                    merkle::inclusion_proof(&leaves, index).unwrap(),
                    "size {size} index {index}"
                );
                assert!(tree.tiles_read() <= 2 * 3, "size {size}: {} tiles", tree.tiles_read());
            }
            let olds: &[u64] = if size > 4_097 { &[size - 1, 65_536] } else { &[0, 1, size / 2, size - 1, size, 256] };
            for old in olds.iter().map(|&o| o.min(size)) {
                let mut tree = TiledTree::new(size, &mut stored);
                assert_eq!(
                    tree.consistency_proof(old).unwrap(),
                    merkle::consistency_proof(&leaves, old).unwrap(),
                    "size {size} old {old}"
                );
                assert!(tree.tiles_read() <= 2 * 3 + 1, "size {size}: {} tiles", tree.tiles_read());
            }
            let mut tree = TiledTree::new(size, &mut stored);
            assert_eq!(tree.range_root(0, size).unwrap(), merkle::root_of_leaves(&leaves), "size {size}");
        }
    }

    #[test]
    fn the_frontier_reports_each_subtree_once_with_its_root() {
        let stored = Stored::new(70_000);
        assert_eq!(stored.nodes.len(), 70_000 / 256 + 1);
        for (&(height, index), root) in &stored.nodes {
            let lo = (index << height) as usize;
            let hi = ((index + 1) << height) as usize;
            assert_eq!(*root, merkle::root_of_leaves(&stored.leaves[lo..hi]), "height {height} index {index}");
        }
    }

    #[test]
    fn a_missing_tile_is_an_error_not_a_wrong_proof() {
        let mut stored = Stored::new(1_000);
        stored.nodes.remove(&(8, 1));
        let mut tree = TiledTree::new(1_000, &mut stored);
        assert!(tree.inclusion_proof(10).is_err());
    }
}
