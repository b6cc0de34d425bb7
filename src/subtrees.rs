//! `ledger.subtrees`: the roots of checkpointed chains' perfect subtrees of height 8, 16, 24, ...
//! (core/src/tiles.rs), written by checkpoints and read by proofs, so that a proof reads a few
//! tiles of 256 hashes instead of the whole chain.
//!
//! The rows are derived data and are not trusted: a proof made from them is returned only if it
//! verifies against its checkpoint's root, and otherwise made again from the records.

use crate::error::spi_error;
use crate::layout::Layout;
use crate::lifecycle;
use ledger_core::hash::Digest;
use ledger_core::merkle;
use ledger_core::tiles::{self, TileSource, TILE_HEIGHT};
use ledger_core::LedgerError;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;

/// A subtree root a checkpoint completed: (height, index among the subtrees of that height, root).
pub type Subtree = (u32, u64, Digest);

/// `chain IS NOT DISTINCT FROM $2`, written so that each case uses its unique index.
fn chain_condition(chain: Option<&str>) -> &'static str {
    match chain {
        Some(_) => "ledger = $1 AND chain = $2",
        None => "ledger = $1 AND chain IS NULL AND $2::text IS NULL",
    }
}

/// Whether the stored subtrees of a chain are exactly those of its first `size` records: one row for
/// each perfect subtree of a stored height they complete, and no other. Counted, not read: a row
/// deleted or added anywhere (not only the last) makes the caller store them all again, and a
/// wrong root is found by the proof that reads it.
pub fn cover(ledger: &str, chain: Option<&str>, size: u64) -> Result<bool, LedgerError> {
    if size >> TILE_HEIGHT == 0 {
        return Ok(true);
    }
    let expected: u64 = (1..64).filter(|h| tiles::is_stored_height(*h)).map(|h| size >> h).sum();
    let query = format!(
        "SELECT count(*) = $3 AND coalesce(bool_and(CASE WHEN height % {TILE_HEIGHT} = 0 AND height BETWEEN {TILE_HEIGHT} AND 56 \
                THEN (first_seq - 1) % (1::bigint << height) = 0 AND first_seq >= 1 \
                     AND first_seq - 1 + (1::bigint << height) <= $4 \
                ELSE false END), true) \
           FROM ledger.subtrees WHERE {}",
        chain_condition(chain)
    );
    let args: [DatumWithOid; 4] = [ledger.into(), chain.into(), (expected as i64).into(), (size as i64).into()];
    lifecycle::as_extension_owner(|| crate::datum::select_one::<bool>(&query, &args))
        .map(|found| found.unwrap_or(false))
        .map_err(|e| spi_error("cannot read ledger.subtrees", e))
}

/// The first record (seq) under subtree `index` of `height`.
fn first_seq(height: u32, index: u64) -> i64 {
    ((index << height) + 1) as i64
}

/// Removes a chain's stored subtrees (before they are written again from its records).
pub fn forget(ledger: &str, chain: Option<&str>) -> Result<(), LedgerError> {
    let query = format!("DELETE FROM ledger.subtrees WHERE {}", chain_condition(chain));
    lifecycle::as_extension_owner(|| Spi::run_with_args(&query, &[ledger.into(), chain.into()]))
        .map_err(|e| spi_error("cannot clear ledger.subtrees", e))
}

/// Stores the subtrees a checkpoint completed.
pub fn store(ledger: &str, chain: Option<&str>, subtrees: &[Subtree]) -> Result<(), LedgerError> {
    // Bounded batches: a chain's first checkpoint after an upgrade stores one row per 256 records.
    for batch in subtrees.chunks(10_000) {
        let heights: Vec<i16> = batch.iter().map(|(h, _, _)| *h as i16).collect();
        let firsts: Vec<i64> = batch.iter().map(|(h, i, _)| first_seq(*h, *i)).collect();
        let roots: Vec<Vec<u8>> = batch.iter().map(|(_, _, r)| r.to_vec()).collect();
        let args: [DatumWithOid; 5] = [ledger.into(), chain.into(), heights.into(), firsts.into(), roots.into()];
        lifecycle::as_extension_owner(|| {
            Spi::run_with_args(
                "INSERT INTO ledger.subtrees (ledger, chain, height, first_seq, root) \
                 SELECT $1, $2, h, f, r FROM unnest($3::smallint[], $4::bigint[], $5::bytea[]) AS s(h, f, r)",
                &args,
            )
        })
        .map_err(|e| spi_error("cannot store the checkpoint's subtrees", e))?;
    }
    Ok(())
}

/// Tiles of one chain: level 0 from the records, the levels above from `ledger.subtrees`.
pub struct StoredTiles<'a> {
    pub layout: &'a Layout,
    pub ledger: &'a str,
    pub chain: Option<&'a str>,
}

/// A tile that could not be read: its subtrees are not stored (the chain's checkpoints are older
/// than this version, or the rows were deleted), or its records cannot be read (a gap, a malformed
/// hash), which the caller's reading of the whole chain then reports.
pub struct Unread;

impl TileSource for StoredTiles<'_> {
    type Error = Unread;

    fn read(&mut self, level: u32, first: u64, count: u64) -> Result<Vec<Digest>, Unread> {
        if level == 0 {
            let from = first as i64 + 1;
            let hashes = crate::checkpoint::record_hashes(self.layout, self.chain, from, from + count as i64 - 1)
                .map_err(|_| Unread)?;
            return Ok(hashes.iter().map(merkle::leaf_hash).collect());
        }
        let height = level * TILE_HEIGHT;
        let query = format!(
            "SELECT root FROM ledger.subtrees WHERE {} AND height = $3 AND first_seq >= $4 AND first_seq <= $5 \
             ORDER BY first_seq",
            chain_condition(self.chain)
        );
        let args: [DatumWithOid; 5] = [
            self.ledger.into(),
            self.chain.into(),
            (height as i16).into(),
            first_seq(height, first).into(),
            first_seq(height, first + count - 1).into(),
        ];
        // Read as the extension, like the checkpoint they belong to: whoever may read a chain's
        // records and checkpoints may have its proofs, whether or not granted this table too.
        let roots = lifecycle::as_extension_owner(|| {
            Spi::connect(|client| {
                let rows = client.select(&query, None, &args)?;
                rows.into_iter().map(|row| row.get::<Vec<u8>>(1)).collect::<Result<Vec<_>, _>>()
            })
        })
        .map_err(|_| Unread)?;
        // A missing, surplus or malformed row: recomputed from the records instead.
        if roots.len() as u64 != count {
            return Err(Unread);
        }
        roots.into_iter().map(|r| r.and_then(|r| Digest::try_from(r.as_slice()).ok()).ok_or(Unread)).collect()
    }
}
