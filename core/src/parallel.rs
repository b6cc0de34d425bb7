//! SHA3-256 of batches of records on several threads, for verification.
//!
//! Verification spends about half its time hashing; the other half (reading tuples, encoding them)
//! must stay on the thread that runs PostgreSQL. So the reader fills a [`RecordBatch`] with canonical
//! records, [`Hashers::submit`]s it, and fills the next while the helper threads hash; at the next
//! [`Hashers::finish`] it hashes what is left of the submitted batch itself and takes its digests.
//! Memory is the batches in hand (the caller's and the one submitted), whatever the table's size.
//!
//! The threads touch nothing but the batch's bytes: no allocator or state of the host process.

use crate::hash::{sha3_256, Digest};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Records hashed by one thread at a time: small enough to share a batch out evenly, large enough
/// that taking one costs nothing beside hashing it.
const CHUNK: usize = 32;

/// Canonical records, one after another.
#[derive(Default)]
pub struct RecordBatch {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl RecordBatch {
    /// Appends one record.
    pub fn push(&mut self, record: &[u8]) {
        self.bytes.extend_from_slice(record);
        self.ends.push(self.bytes.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The bytes of all its records.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    fn record(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }
}

/// A submitted batch being hashed.
struct Job {
    batch: RecordBatch,
    /// One slot per chunk, filled by whichever thread took the chunk (so never contended).
    digests: Vec<Mutex<Vec<Digest>>>,
    next_chunk: AtomicUsize,
    chunks_done: AtomicUsize,
}

impl Job {
    fn new(batch: RecordBatch) -> Job {
        let chunks = batch.len().div_ceil(CHUNK);
        Job {
            batch,
            digests: (0..chunks).map(|_| Mutex::new(Vec::new())).collect(),
            next_chunk: AtomicUsize::new(0),
            chunks_done: AtomicUsize::new(0),
        }
    }

    fn complete(&self) -> bool {
        self.chunks_done.load(Ordering::Acquire) == self.digests.len()
    }

    /// Hashes chunks until none is left to take; tells the submitter when the last one is done.
    fn work(&self, shared: &Shared) {
        loop {
            let chunk = self.next_chunk.fetch_add(1, Ordering::Relaxed);
            if chunk >= self.digests.len() {
                return;
            }
            let first = chunk * CHUNK;
            let last = (first + CHUNK).min(self.batch.len());
            let hashed: Vec<Digest> = (first..last).map(|i| sha3_256(self.batch.record(i))).collect();
            *lock(&self.digests[chunk]) = hashed;
            if self.chunks_done.fetch_add(1, Ordering::AcqRel) + 1 == self.digests.len() {
                // Under the lock, so the submitter cannot check and then miss the wake-up.
                let _state = lock(&shared.state);
                shared.finished.notify_all();
            }
        }
    }
}

#[derive(Default)]
struct State {
    job: Option<Arc<Job>>,
    /// Counts submissions, so a thread takes each job once.
    submitted: u64,
    stopping: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// A job was submitted, or the threads are to stop.
    work: Condvar,
    /// A job's last chunk is done.
    finished: Condvar,
}

/// A job handed to the threads; give it back to [`Hashers::finish`].
pub struct Submitted(Arc<Job>);

/// The helper threads. Dropping it stops and joins them (also while unwinding from an error).
pub struct Hashers {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Hashers {
    /// Hashing on `threads` threads in all: the caller's, which hashes in [`Hashers::finish`], and
    /// `threads - 1` started here. With one, nothing is started and the caller hashes everything.
    pub fn start(threads: usize) -> std::io::Result<Hashers> {
        let shared = Arc::new(Shared::default());
        let mut hashers = Hashers { shared, threads: Vec::new() };
        for i in 1..threads {
            let shared = Arc::clone(&hashers.shared);
            let thread = std::thread::Builder::new()
                .name(format!("ledger hasher {i}"))
                .stack_size(256 * 1024)
                .spawn(move || helper(&shared))?;
            hashers.threads.push(thread);
        }
        Ok(hashers)
    }

    /// Hands `batch` to the helper threads (one batch at a time: finish the last one first).
    pub fn submit(&self, batch: RecordBatch) -> Submitted {
        let job = Arc::new(Job::new(batch));
        let mut state = lock(&self.shared.state);
        debug_assert!(state.job.as_ref().is_none_or(|j| j.complete()), "a batch is still being hashed");
        state.job = Some(Arc::clone(&job));
        state.submitted += 1;
        self.shared.work.notify_all();
        Submitted(job)
    }

    /// Hashes what no helper has taken of the batch, waits for the rest, and returns the batch's
    /// digests in record order.
    pub fn finish(&self, submitted: Submitted) -> Vec<Digest> {
        let job = submitted.0;
        job.work(&self.shared);
        let mut state = lock(&self.shared.state);
        while !job.complete() {
            state = self.shared.finished.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.job = None;
        drop(state);
        job.digests.iter().flat_map(|slot| std::mem::take(&mut *lock(slot))).collect()
    }
}

impl Drop for Hashers {
    fn drop(&mut self) {
        lock(&self.shared.state).stopping = true;
        self.shared.work.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A helper thread: hashes each submitted job's chunks until told to stop.
fn helper(shared: &Shared) {
    let mut seen = 0u64;
    loop {
        let job = {
            let mut state = lock(&shared.state);
            loop {
                if state.stopping {
                    return;
                }
                if state.submitted != seen {
                    seen = state.submitted;
                    if let Some(job) = &state.job {
                        break Arc::clone(job);
                    }
                }
                state = shared.work.wait(state).unwrap_or_else(|e| e.into_inner());
            }
        };
        job.work(shared);
    }
}

/// A lock whose holder never panics mid-update (hashing cannot fail), so poisoning carries nothing.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_of(records: &[Vec<u8>]) -> RecordBatch {
        let mut batch = RecordBatch::default();
        for r in records {
            batch.push(r);
        }
        batch
    }

    fn records(n: usize, salt: u8) -> Vec<Vec<u8>> {
        (0..n).map(|i| (0..(i % 200)).map(|j| (i * 31 + j) as u8 ^ salt).collect()).collect()
    }

    #[test]
    fn digests_come_back_in_record_order_whatever_the_thread_count() {
        for threads in [1, 2, 3, 8] {
            let hashers = Hashers::start(threads).unwrap();
            for (round, n) in [0usize, 1, CHUNK - 1, CHUNK, CHUNK + 1, 1000, 4099].into_iter().enumerate() {
                let recs = records(n, round as u8);
                let digests = hashers.finish(hashers.submit(batch_of(&recs)));
                let expected: Vec<Digest> = recs.iter().map(|r| sha3_256(r)).collect();
                assert_eq!(digests, expected, "threads {threads}, {n} records");
            }
        }
    }

    #[test]
    fn batches_filled_while_the_last_is_hashed_keep_their_order() {
        let hashers = Hashers::start(2).unwrap();
        let mut pending: Option<(Submitted, Vec<Vec<u8>>)> = None;
        let mut hashed = Vec::new();
        for round in 0..20u8 {
            // Filled while the helper hashes the batch before.
            let recs = records(500 + round as usize, round);
            let next = batch_of(&recs);
            if let Some((submitted, earlier)) = pending.take() {
                let digests = hashers.finish(submitted);
                hashed.extend(digests.into_iter().zip(earlier));
            }
            pending = Some((hashers.submit(next), recs));
        }
        let (submitted, last) = pending.take().unwrap();
        hashed.extend(hashers.finish(submitted).into_iter().zip(last));
        assert_eq!(hashed.len(), (0..20).map(|r| 500 + r).sum::<usize>());
        assert!(hashed.iter().all(|(d, r)| *d == sha3_256(r)));
    }

    #[test]
    fn dropping_stops_idle_and_busy_threads() {
        let hashers = Hashers::start(4).unwrap();
        let _submitted = hashers.submit(batch_of(&records(10_000, 7)));
        drop(hashers); // must return: helpers finish their chunks and stop
    }
}
