//! sha3_limit FILE [HASHES] [PASSES]
//!
//! Reads one hex-encoded record per line (the output of `ledger.canonical_bytes`), then hashes the
//! records round-robin with SHA3-256 (the same `sha3` crate and version as the extension) until
//! HASHES digests (default 1,000,000) are computed, on one thread. Repeats that PASSES times (default
//! 3) and prints the best pass as `hashes_per_sec <n>`, plus the record count and mean record size.

use sha3::{Digest, Sha3_256};
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).expect("usage: sha3_limit FILE [HASHES] [PASSES]");
    let hashes: usize = args.get(2).map_or(1_000_000, |s| s.parse().expect("HASHES"));
    let passes: usize = args.get(3).map_or(3, |s| s.parse().expect("PASSES"));
    let text = std::fs::read_to_string(path).expect("cannot read the record file");
    let records: Vec<Vec<u8>> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| hex::decode(l.trim_start_matches("\\x")).expect("a line is not hex"))
        .collect();
    assert!(!records.is_empty(), "no records in {path}");
    let total_bytes: usize = records.iter().map(Vec::len).sum();

    let mut best = f64::INFINITY;
    let mut fold = [0u8; 32];
    for _ in 0..passes.max(1) {
        let start = Instant::now();
        for i in 0..hashes {
            let digest = Sha3_256::digest(black_box(&records[i % records.len()]));
            fold[i % 32] ^= digest[0];
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    black_box(fold);
    println!("records {}", records.len());
    println!("mean_record_bytes {:.1}", total_bytes as f64 / records.len() as f64);
    println!("hashes {hashes}");
    println!("best_seconds {best:.6}");
    println!("hashes_per_sec {:.0}", hashes as f64 / best);
}
