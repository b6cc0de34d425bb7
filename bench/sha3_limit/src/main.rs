//! sha3_limit FILE [HASHES] [PASSES]
//!
//! The one-core physical limit of `ledger.verify`: SHA3-256 over canonical record bytes and nothing
//! else. FILE holds one record per line, the hex of `ledger.canonical_bytes(...)` (a leading `\x` is
//! allowed), optionally followed by a space and the record's stored `hash`, which is then checked
//! once before timing. The records are hashed round-robin with the same `sha3` crate and version as
//! the extension until HASHES digests (default 1,000,000) are computed, on one thread; that is
//! repeated PASSES times (default 3) and the best pass is printed as `hashes_per_sec <n>`.
//!
//! sha3_limit --threads N FILE [HASHES] [PASSES]
//!
//! The same on N threads (default 1, which is the above): thread t of N hashes round-robin over its
//! own interleaved slice of the records (records t, t + N, t + 2N, ...), HASHES / N digests each (the
//! first HASHES % N threads one more), so the pass computes the same HASHES digests in all; the
//! pass is timed from before the threads start to after the last one ends, and `hashes_per_sec` is
//! HASHES over that wall time (the aggregate rate of all N). With N > 1 the output also says
//! `threads <n>` (never more threads than records). The stored hashes are checked as above.
//!
//! sha3_limit --merkle FILE [PASSES]
//!
//! The one-core limit of Merkle hashing: FILE holds one record hash per line (64 hex digits, the
//! stored `hash` column in seq order). The RFC 9162 Merkle Tree Hash with SHA3-256 over those leaves
//! is computed exactly as docs/FORMAT.md "Merkle trees" specifies (leaf = SHA3(0x00 || h),
//! node = SHA3(0x01 || l || r), split at the largest power of two < n), PASSES times (default 3),
//! from the 32-octet hashes (decoded before timing) to the root; prints `root <hex>` and the best
//! pass as `leaves_per_sec <n>`.
//!
//! sha3_limit --merkle-selftest
//!
//! Checks the Merkle code against the test vectors of docs/FORMAT.md; exit 1 on a mismatch.

use sha3::{Digest, Sha3_256};
use std::hint::black_box;
use std::io::{BufRead, BufReader};
use std::process::exit;
use std::time::Instant;

type H = [u8; 32];

fn leaf(h: &H) -> H {
    let mut d = Sha3_256::new();
    d.update([0u8]);
    d.update(h);
    d.finalize().into()
}

fn node(l: &H, r: &H) -> H {
    let mut d = Sha3_256::new();
    d.update([1u8]);
    d.update(l);
    d.update(r);
    d.finalize().into()
}

/// MTH(D[n]) of RFC 9162 section 2.1, with SHA3-256; `hashes` are the record hashes (not yet leaves).
fn mth(hashes: &[H]) -> H {
    match hashes.len() {
        0 => Sha3_256::digest(b"").into(),
        1 => leaf(&hashes[0]),
        n => {
            let mut k = 1usize;
            while k << 1 < n {
                k <<= 1;
            }
            node(&mth(&hashes[..k]), &mth(&hashes[k..]))
        }
    }
}

fn merkle_selftest() {
    let vectors: [(usize, &str); 10] = [
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
    let hashes: Vec<H> = (0..1000).map(|i| Sha3_256::digest(i.to_string().as_bytes()).into()).collect();
    let mut bad = 0;
    for (n, want) in vectors {
        let got = hex::encode(mth(&hashes[..n]));
        if got != want {
            eprintln!("merkle selftest: size {n}: got {got}, docs/FORMAT.md says {want}");
            bad += 1;
        }
    }
    if bad > 0 {
        exit(1);
    }
    println!("merkle_selftest ok {}", vectors.len());
}

fn merkle_limit(path: &str, passes: usize) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        eprintln!("cannot read {path}: {e}");
        exit(1);
    });
    let mut hashes: Vec<H> = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let mut h = [0u8; 32];
        hex::decode_to_slice(line.trim(), &mut h).unwrap_or_else(|e| {
            eprintln!("line {}: not 64 hex digits: {e}", n + 1);
            exit(1);
        });
        hashes.push(h);
    }
    let mut best = f64::INFINITY;
    let mut root = [0u8; 32];
    for _ in 0..passes.max(1) {
        let start = Instant::now();
        root = mth(black_box(&hashes));
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!("leaves {}", hashes.len());
    println!("root {}", hex::encode(root));
    println!("sha3_calls {}", (2 * hashes.len()).saturating_sub(1));
    println!("best_seconds {best:.6}");
    println!("leaves_per_sec {:.0}", hashes.len() as f64 / best);
}

/// One pass by `slices.len()` threads, thread t hashing round-robin over `slices[t]` (see the
/// header); returns the pass's wall time, from before the first thread starts to after the last ends.
fn hash_pass(slices: &[Vec<&[u8]>], hashes: usize) -> f64 {
    let threads = slices.len();
    let start = Instant::now();
    let folds: Vec<[u8; 32]> = std::thread::scope(|scope| {
        let workers: Vec<_> = slices
            .iter()
            .enumerate()
            .map(|(t, mine)| {
                scope.spawn(move || {
                    let count = hashes / threads + usize::from(t < hashes % threads);
                    let mut fold = [0u8; 32];
                    for i in 0..count {
                        let digest = Sha3_256::digest(black_box(mine[i % mine.len()]));
                        fold[i % 32] ^= digest[i % 32];
                    }
                    fold
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a hashing thread panicked")).collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    black_box(folds);
    elapsed
}

fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    // --threads N (or --threads=N), anywhere after the program name; only for the record mode.
    let mut threads: Option<usize> = None;
    let mut i = 1;
    while i < args.len() {
        let value = if args[i] == "--threads" {
            let Some(v) = args.get(i + 1).cloned() else {
                eprintln!("--threads needs a number");
                exit(2);
            };
            args.drain(i..i + 2);
            v
        } else if let Some(v) = args[i].strip_prefix("--threads=") {
            let v = v.to_string();
            args.remove(i);
            v
        } else {
            i += 1;
            continue;
        };
        match value.parse::<usize>() {
            Ok(n) if n >= 1 => threads = Some(n),
            _ => {
                eprintln!("--threads must be a positive number, not '{value}'");
                exit(2);
            }
        }
    }
    if threads.is_some() && args.get(1).is_some_and(|a| a.starts_with("--merkle")) {
        eprintln!("--threads applies to the record-hash limit only, not to --merkle");
        exit(2);
    }
    let threads = threads.unwrap_or(1);
    match args.get(1).map(String::as_str) {
        Some("--merkle-selftest") => return merkle_selftest(),
        Some("--merkle") => {
            let Some(path) = args.get(2) else {
                eprintln!("usage: sha3_limit --merkle FILE [PASSES]");
                exit(2);
            };
            let passes: usize = args.get(3).map_or(3, |s| s.parse().expect("PASSES must be a number"));
            return merkle_limit(path, passes);
        }
        _ => {}
    }
    let Some(path) = args.get(1) else {
        eprintln!("usage: sha3_limit [--threads N] FILE [HASHES] [PASSES]");
        exit(2);
    };
    let hashes: usize = args.get(2).map_or(1_000_000, |s| s.parse().expect("HASHES must be a number"));
    let passes: usize = args.get(3).map_or(3, |s| s.parse().expect("PASSES must be a number"));
    // Read line by line (a million records are most of a gigabyte of hex: not held all at once).
    let file = std::fs::File::open(path).unwrap_or_else(|e| {
        eprintln!("cannot read {path}: {e}");
        exit(1);
    });
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = String::new();
    let mut n = 0usize;

    let mut records: Vec<Vec<u8>> = Vec::new();
    let mut checked = 0usize;
    loop {
        line.clear();
        let read = reader.read_line(&mut line).unwrap_or_else(|e| {
            eprintln!("cannot read {path}: {e}");
            exit(1);
        });
        if read == 0 {
            break;
        }
        n += 1;
        if line.trim().is_empty() {
            continue;
        }
        let mut fields = line.split_whitespace();
        let bytes_hex = fields.next().unwrap_or_default();
        let bytes = hex::decode(bytes_hex.trim_start_matches("\\x")).unwrap_or_else(|e| {
            eprintln!("line {n}: not hex: {e}");
            exit(1);
        });
        if let Some(expected) = fields.next() {
            let actual = hex::encode(Sha3_256::digest(&bytes));
            if actual != expected {
                eprintln!("line {n}: the bytes hash to {actual}, the stored hash is {expected}");
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

    let threads = threads.min(records.len());

    let mut best = f64::INFINITY;
    if threads == 1 {
        // One thread: the loop as it always was, on the main thread.
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
    } else {
        // Each thread's interleaved slice, made before timing: records t, t + N, t + 2N, ...
        let slices: Vec<Vec<&[u8]>> =
            (0..threads).map(|t| records.iter().skip(t).step_by(threads).map(Vec::as_slice).collect()).collect();
        for _ in 0..passes.max(1) {
            best = best.min(hash_pass(&slices, hashes));
        }
    }
    println!("records {}", records.len());
    if threads > 1 {
        println!("threads {threads}");
    }
    println!("checked_against_stored_hash {checked}");
    println!("mean_record_bytes {:.1}", total_bytes as f64 / records.len() as f64);
    println!("hashes {hashes}");
    println!("best_seconds {best:.6}");
    println!("hashes_per_sec {:.0}", hashes as f64 / best);
}
