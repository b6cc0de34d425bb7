//! sha3_limit FILE [HASHES] [PASSES]
//!
//! The one-core physical limit of `ledger.verify`: SHA3-256 over canonical record bytes and nothing
//! else. FILE holds one record per line, the hex of `ledger.canonical_bytes(...)` (a leading `\x` is
//! allowed), optionally followed by a space and the record's stored `hash`, which is then checked
//! once before timing. The records are hashed round-robin with the same `sha3` crate and version as
//! the extension until HASHES digests (default 1,000,000) are computed, on one thread; that is
//! repeated PASSES times (default 3) and the best pass is printed as `hashes_per_sec <n>`.

use sha3::{Digest, Sha3_256};
use std::hint::black_box;
use std::process::exit;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: sha3_limit FILE [HASHES] [PASSES]");
        exit(2);
    };
    let hashes: usize = args.get(2).map_or(1_000_000, |s| s.parse().expect("HASHES must be a number"));
    let passes: usize = args.get(3).map_or(3, |s| s.parse().expect("PASSES must be a number"));
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        eprintln!("cannot read {path}: {e}");
        exit(1);
    });

    let mut records: Vec<Vec<u8>> = Vec::new();
    let mut checked = 0usize;
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let mut fields = line.split_whitespace();
        let bytes_hex = fields.next().unwrap_or_default();
        let bytes = hex::decode(bytes_hex.trim_start_matches("\\x")).unwrap_or_else(|e| {
            eprintln!("line {}: not hex: {e}", n + 1);
            exit(1);
        });
        if let Some(expected) = fields.next() {
            let actual = hex::encode(Sha3_256::digest(&bytes));
            if actual != expected {
                eprintln!("line {}: the bytes hash to {actual}, the stored hash is {expected}", n + 1);
                exit(1);
            }
            checked += 1;
        }
        records.push(bytes);
    }
    if records.is_empty() {
        eprintln!("no records in {path}");
        exit(1);
    }
    let total_bytes: usize = records.iter().map(Vec::len).sum();

    let mut best = f64::INFINITY;
    let mut fold = [0u8; 32];
    for _ in 0..passes.max(1) {
        let start = Instant::now();
        for i in 0..hashes {
            let digest = Sha3_256::digest(black_box(&records[i % records.len()]));
            fold[i % 32] ^= digest[i % 32];
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    black_box(fold);
    println!("records {}", records.len());
    println!("checked_against_stored_hash {checked}");
    println!("mean_record_bytes {:.1}", total_bytes as f64 / records.len() as f64);
    println!("hashes {hashes}");
    println!("best_seconds {best:.6}");
    println!("hashes_per_sec {:.0}", hashes as f64 / best);
}
