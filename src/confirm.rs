//! The first pass of `ledger.verify`: confirms intact chains as records stream past, keeping only
//! each chain's head, and hashes on every core.
//!
//! This backend reads and encodes the records (that needs PostgreSQL); helper threads only hash
//! batches of the encoded bytes ([`ledger_core::parallel`]). The links are checked here, in record
//! order, once a batch's digests are back (while the threads hash the next batch), so the findings
//! are those of hashing on one thread.

use crate::retention::PrunedChain;
use ledger_core::chain::ChainStream;
use ledger_core::hash;
use ledger_core::parallel::{Hashers, RecordBatch, Submitted};
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::collections::HashMap;
use std::ops::Range;

static VERIFY_THREADS: GucSetting<i32> = GucSetting::<i32>::new(0);

pub fn register_settings() {
    GucRegistry::define_int_guc(
        c"ledger.verify_threads",
        c"Threads that hash records in ledger.verify (0: one per core).",
        c"1 hashes in the backend alone. Only hashing runs on the other threads.",
        &VERIFY_THREADS,
        0,
        64,
        GucContext::Userset,
        GucFlags::default(),
    );
}

/// Threads hashing in all, the backend's included.
fn thread_count() -> usize {
    match VERIFY_THREADS.get() {
        0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        n => n.max(1) as usize,
    }
}

/// Batches are handed over at this many records or bytes, whichever comes first: three batches (one
/// filling, one hashing, one having its links checked) are all the memory the pass needs beside the
/// chains' heads.
const BATCH_RECORDS: usize = 1024;
const BATCH_BYTES: usize = 4 << 20;

/// What a record's links are checked with, once its digest is known: copied out of the tuple,
/// which is gone by then.
struct Pending {
    seq: Option<i64>,
    chain_key: Range<usize>,
    hash: Option<Range<usize>>,
    prev_hash: Option<Range<usize>>,
}

#[derive(Default)]
struct Batch {
    records: RecordBatch,
    pending: Vec<Pending>,
    /// The chain keys and stored hashes the `pending` ranges point into.
    text: Vec<u8>,
}

impl Batch {
    fn keep(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.text.len();
        self.text.extend_from_slice(bytes);
        start..self.text.len()
    }
}

pub struct Confirmer<'p> {
    pruned: &'p HashMap<Vec<u8>, PrunedChain>,
    streams: HashMap<Vec<u8>, ChainStream>,
    threads: usize,
    hashers: Option<Hashers>,
    filling: Batch,
    /// The batch the threads are hashing, with its links.
    in_flight: Option<(Submitted, Batch)>,
}

impl<'p> Confirmer<'p> {
    pub fn new(pruned: &'p HashMap<Vec<u8>, PrunedChain>) -> Self {
        Confirmer {
            pruned,
            streams: HashMap::new(),
            threads: thread_count(),
            hashers: None,
            filling: Batch::default(),
            in_flight: None,
        }
    }

    /// One record: its canonical bytes, its chain key and its stored seq, hash and prev_hash.
    pub fn push(
        &mut self,
        canonical: &[u8],
        chain_key: &[u8],
        seq: Option<i64>,
        stored_hash: Option<&[u8]>,
        stored_prev_hash: Option<&[u8]>,
    ) {
        let batch = &mut self.filling;
        batch.records.push(canonical);
        let pending = Pending {
            seq,
            chain_key: batch.keep(chain_key),
            hash: stored_hash.map(|h| batch.keep(h)),
            prev_hash: stored_prev_hash.map(|p| batch.keep(p)),
        };
        batch.pending.push(pending);
        if batch.records.len() >= BATCH_RECORDS || batch.records.byte_len() >= BATCH_BYTES {
            self.hand_over();
        }
    }

    /// Hands the filled batch to the threads, then checks the links of the one they hashed before:
    /// the threads hash the new batch while this backend checks the old one's links.
    fn hand_over(&mut self) {
        let hashed = self.take_hashed();
        let hashers = self.hashers.get_or_insert_with(|| start_hashers(self.threads));
        let batch = std::mem::take(&mut self.filling);
        let submitted = hashers.submit(batch.records);
        self.in_flight = Some((submitted, Batch { records: RecordBatch::default(), ..batch }));
        if let Some((digests, batch)) = hashed {
            self.check_links(&batch, &digests);
        }
    }

    /// The batch in flight, once hashed, with its digests.
    fn take_hashed(&mut self) -> Option<(Vec<hash::Digest>, Batch)> {
        let (submitted, batch) = self.in_flight.take()?;
        let hashers = self.hashers.as_ref().expect("a batch in flight has its hashers");
        Some((hashers.finish(submitted), batch))
    }

    /// Checks a hashed batch's links, record by record, in the order they were read.
    fn check_links(&mut self, batch: &Batch, digests: &[hash::Digest]) {
        let mut computed_hex = [0u8; 64];
        for (pending, digest) in batch.pending.iter().zip(digests) {
            hash::hex_into(digest, &mut computed_hex);
            let text = |r: &Range<usize>| &batch.text[r.clone()];
            let key = text(&pending.chain_key);
            let stream = match self.streams.get_mut(key) {
                Some(stream) => stream,
                None => {
                    let anchor = self.pruned.get(key).map(|p| p.anchor).unwrap_or_default();
                    self.streams.entry(key.to_vec()).or_insert(ChainStream::from_anchor(anchor))
                }
            };
            stream.push(
                pending.seq,
                pending.hash.as_ref().map(text),
                pending.prev_hash.as_ref().map(text),
                &computed_hex,
            );
        }
    }

    /// Checks every record pushed; returns each chain's state.
    pub fn finish(mut self) -> HashMap<Vec<u8>, ChainStream> {
        if !self.filling.pending.is_empty() {
            // A verification that fits in one batch is hashed here: no thread is worth starting.
            if self.hashers.is_none() {
                self.hashers = Some(start_hashers(1));
            }
            self.hand_over();
        }
        if let Some((digests, batch)) = self.take_hashed() {
            self.check_links(&batch, &digests);
        }
        self.streams
    }
}

/// Hashers for `threads` threads. The helpers start with every signal blocked, so the server's
/// signals (cancel, terminate, latches) keep reaching this backend's own thread, whose handlers
/// expect it; when they cannot start, the backend hashes alone.
fn start_hashers(threads: usize) -> Hashers {
    if threads > 1 {
        // SAFETY: sets this thread's signal mask around the spawns and restores it; a signal that
        // comes meanwhile stays pending and is taken here once the old mask is back.
        let started = unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            let started = Hashers::start(threads);
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            started
        };
        if let Ok(hashers) = started {
            return hashers;
        }
    }
    Hashers::start(1).expect("starting no thread cannot fail")
}
