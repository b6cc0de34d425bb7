//! The last committed head of each chain, in shared memory, so that an append does not look it up.
//!
//! Finding where a chain's next record goes is the first append's index scan of the chain's
//! (chain, seq) index and heap fetch (src/head.rs): on single-row appends, more than half of what
//! the ledger adds to an insert. The appender that commits a chain's head holds the chain's lock
//! until after its commit is in the WAL and visible, so it can leave the head (seq and hash) here
//! just before releasing the lock; the next appender, once it has the lock, reads it here instead.
//! Exists only when the library is in `shared_preload_libraries` (as for src/metrics.rs); without
//! it, or for any chain it does not hold, the head is looked up as before.
//!
//! An entry is only ever what the chain's last lock holder committed, or absent: it is written
//! only under the chain's lock (for a history chain, see below), at commit (never by a
//! transaction that may have dropped a row it chained, src/conflict.rs); every transaction or
//! subtransaction that aborts after taking a chain lock (or appending to a history chain) removes
//! that chain's entry; a TRUNCATE or rewrite gives the table a new file, which is part
//! of the key; a crash or restart empties the memory. What it cannot see is a change made around
//! the ledger's trigger (a superuser disabling it, or deleting a record): an append then links to
//! the head it knows. A record inserted behind the trigger's back makes that append's seq collide
//! in the unique (chain, seq) index, and the failed transaction removes the entry; a deleted head
//! leaves a gap that `ledger.verify` reports (docs/THREAT_MODEL.md).
//!
//! A committing writer *claims* its chains' entries before its commit is visible (an entry no
//! reader takes, [`claim`]), and after the commit fills each in only if it is still its own claim
//! ([`publish`]). Under a chain lock nobody comes in between. A history ledger's chains take no
//! chain lock (src/history.rs): the tracked row's lock orders the writers of one key, and a writer
//! that comes after a committed one does not wait for it at all, so it may append between the
//! moment the previous writer's commit is visible and its commit callback. It then finds the entry
//! claimed and looks the head up; it claims the entry itself before it commits, and any other
//! writer of the slot replaces the claim, so a late publish never overwrites a newer head.
//!
//! The table is direct-mapped: a slot per key's hash, a later key taking the slot of an earlier
//! one (which is then looked up again). Each slot is a sequence lock: a writer makes its version
//! odd while it writes and even again after, a reader retries nothing and takes a torn or changing
//! slot as absent.

use crate::layout::Layout;
use ledger_core::hash::Digest;
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgAtomic};
use std::sync::atomic::{fence, AtomicBool, AtomicI64, AtomicU64, Ordering};

/// How many chains of the whole cluster can have their head here at once.
const SLOTS: usize = 16384;

/// What identifies a chain here: SHA3-256 of database, table, the table's file and chain key.
pub type Key = [u64; 4];

pub struct Slot {
    /// Even while the slot is stable, odd while a writer changes it.
    version: AtomicU64,
    key: [AtomicU64; 4],
    /// The head's seq; 0 for an empty slot.
    seq: AtomicI64,
    hash: [AtomicU64; 4],
    /// The claim of the transaction about to commit the key's next head ([`claim`]); 0 if none.
    claim: AtomicU64,
}

impl Slot {
    #[allow(clippy::declare_interior_mutable_const)] // the initial value of each slot, copied
    const EMPTY: Slot = Slot {
        version: AtomicU64::new(0),
        key: [const { AtomicU64::new(0) }; 4],
        seq: AtomicI64::new(0),
        hash: [const { AtomicU64::new(0) }; 4],
        claim: AtomicU64::new(0),
    };

    /// Makes the version odd: nobody else writes the slot until [`Slot::unlock`]. Writers hold it
    /// for a few stores and cannot fail in between, so waiting for one always ends.
    fn lock(&self) -> u64 {
        let mut spins = 0u32;
        loop {
            let version = self.version.load(Ordering::Relaxed);
            if version & 1 == 0
                && self
                    .version
                    .compare_exchange_weak(version, version + 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                fence(Ordering::Release);
                return version;
            }
            spins += 1;
            if spins % 1024 == 0 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }

    fn unlock(&self, version: u64) {
        self.version.store(version + 2, Ordering::Release);
    }

    fn holds(&self, key: &Key) -> bool {
        self.key.iter().zip(key).all(|(a, b)| a.load(Ordering::Relaxed) == *b)
    }
}

pub struct Heads([Slot; SLOTS]);

// SAFETY: atomics only, no pointers: valid when shared between processes.
unsafe impl PGRXSharedMemory for Heads {}

// SAFETY: the name is the extension's own.
static HEADS: PgAtomic<Heads> = unsafe { PgAtomic::new(c"ledger chain heads") };
/// Set in the postmaster while it preloads the library, inherited by every backend it forks.
static AVAILABLE: AtomicBool = AtomicBool::new(false);

static READ_SHARED_HEADS: GucSetting<bool> = GucSetting::<bool>::new(true);

/// Called from `_PG_init`: the setting, and the shared memory when the library is being preloaded.
pub fn init() {
    GucRegistry::define_bool_guc(
        c"ledger.shared_heads",
        c"Appends read their chain's last committed head from shared memory instead of its index.",
        c"Needs the library in shared_preload_libraries; off looks every chain's head up in its index.",
        &READ_SHARED_HEADS,
        GucContext::Userset,
        GucFlags::default(),
    );
    // SAFETY: a flag PostgreSQL sets while it loads shared_preload_libraries.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        pg_shmem_init!(HEADS = Heads([Slot::EMPTY; SLOTS]));
        AVAILABLE.store(true, Ordering::Relaxed);
    }
}

/// The key of a chain of `heap` (the layout's own table), if its head can be kept here: not for a
/// partitioned ledger (whose head moves between partitions).
///
/// # Safety
/// `heap` must be an open relation.
pub unsafe fn key_for(layout: &Layout, heap: pg_sys::Relation, chain_key: &[u8]) -> Option<Key> {
    if !AVAILABLE.load(Ordering::Relaxed) || layout.partitioned {
        return None;
    }
    let file = (*(*heap).rd_rel).relfilenode.to_u32();
    let mut bytes = Vec::with_capacity(12 + chain_key.len());
    bytes.extend_from_slice(&pg_sys::MyDatabaseId.to_u32().to_le_bytes());
    bytes.extend_from_slice(&layout.relid.to_u32().to_le_bytes());
    bytes.extend_from_slice(&file.to_le_bytes());
    bytes.extend_from_slice(chain_key);
    let digest = ledger_core::hash::sha3_256(&bytes);
    Some(std::array::from_fn(|i| u64::from_le_bytes(digest[i * 8..i * 8 + 8].try_into().expect("8 bytes"))))
}

/// Whether appends may take their head from here (the setting), as opposed to keeping it current.
pub fn reading() -> bool {
    READ_SHARED_HEADS.get()
}

fn slot(key: &Key) -> &'static Slot {
    &HEADS.get().0[(key[0] % SLOTS as u64) as usize]
}

/// The chain's last committed (seq, hash), if held. Call with the chain's lock held (a history
/// chain's: the tracked row's).
pub fn read(key: &Key) -> Option<(i64, Digest)> {
    let slot = slot(key);
    let before = slot.version.load(Ordering::Acquire);
    if before & 1 == 1 {
        return None;
    }
    let held = slot.holds(key);
    let seq = slot.seq.load(Ordering::Relaxed);
    let words: [u64; 4] = std::array::from_fn(|i| slot.hash[i].load(Ordering::Relaxed));
    fence(Ordering::Acquire);
    if slot.version.load(Ordering::Relaxed) != before || !held || seq <= 0 {
        return None;
    }
    let mut hash = [0u8; 32];
    for (i, word) in words.iter().enumerate() {
        hash[i * 8..i * 8 + 8].copy_from_slice(&word.to_le_bytes());
    }
    Some((seq, hash))
}

/// Takes the chain's entry for the transaction `claim` (nonzero, unique to it) about to commit the
/// chain's next head: until [`publish`], readers find nothing. Call before the commit is visible.
pub fn claim(key: &Key, claim: u64) {
    let slot = slot(key);
    let version = slot.lock();
    for (word, value) in slot.key.iter().zip(key) {
        word.store(*value, Ordering::Relaxed);
    }
    slot.seq.store(0, Ordering::Relaxed);
    slot.claim.store(claim, Ordering::Relaxed);
    slot.unlock(version);
}

/// Leaves the committed head of a chain claimed by [`claim`], if the entry is still that claim.
/// Call after the commit is visible (with the chain's lock still held, if it has one).
pub fn publish(key: &Key, claim: u64, seq: i64, hash: &Digest) {
    let slot = slot(key);
    let version = slot.lock();
    if slot.holds(key) && slot.claim.load(Ordering::Relaxed) == claim {
        slot.seq.store(seq, Ordering::Relaxed);
        for (i, word) in slot.hash.iter().enumerate() {
            word.store(u64::from_le_bytes(hash[i * 8..i * 8 + 8].try_into().expect("8 bytes")), Ordering::Relaxed);
        }
        slot.claim.store(0, Ordering::Relaxed);
    }
    slot.unlock(version);
}

/// Removes the chain's entry, if it holds one (another chain's entry in the same slot stays).
pub fn forget(key: &Key) {
    let slot = slot(key);
    let version = slot.lock();
    if slot.holds(key) {
        for word in &slot.key {
            word.store(0, Ordering::Relaxed);
        }
        slot.seq.store(0, Ordering::Relaxed);
        slot.claim.store(0, Ordering::Relaxed);
    }
    slot.unlock(version);
}
