//! Counters since server start, per ledger, in shared memory: appends, refused changes by kind and
//! verification runs. Shared memory exists only when the library is in `shared_preload_libraries`;
//! otherwise every counter reads as unavailable (NULL, no rows), never as a number that could be
//! wrong.
//!
//! The counters are a fixed table of slots keyed by (database, table), claimed lock-free with a
//! compare-and-swap and probed linearly, so the hot path costs a few atomic additions at commit.
//! A ledger that finds no free slot has no counters (reported as unknown, NULL, for it alone).

use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgAtomic};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// How many ledgers of the whole cluster can have counters.
const SLOTS: usize = 2048;

/// What a refusal was of, as `ledger.refusals` names it.
#[derive(Clone, Copy)]
pub enum Refusal {
    Update,
    Delete,
    Truncate,
    /// DDL refused by the definition guards (alter, drop, rewrite).
    Ddl,
    /// A supplied seq, prev_hash or hash that is not the chain's next link.
    ForgedLink,
    /// An append to a retired ledger.
    Retired,
}

const REFUSAL_KINDS: [(Refusal, &str); 6] = [
    (Refusal::Update, "update"),
    (Refusal::Delete, "delete"),
    (Refusal::Truncate, "truncate"),
    (Refusal::Ddl, "ddl"),
    (Refusal::ForgedLink, "forged_link"),
    (Refusal::Retired, "retired"),
];

pub struct Slot {
    /// `(database << 32) | table`; 0 while the slot is free.
    key: AtomicU64,
    appends: AtomicU64,
    verify_runs: AtomicU64,
    refusals: [AtomicU64; REFUSAL_KINDS.len()],
    /// Commit time (TimestampTz) of the newest counted append; 0 for none.
    last_append: AtomicI64,
}

impl Slot {
    #[allow(clippy::declare_interior_mutable_const)] // the initial value of each slot, copied
    const FREE: Slot = Slot {
        key: AtomicU64::new(0),
        appends: AtomicU64::new(0),
        verify_runs: AtomicU64::new(0),
        refusals: [const { AtomicU64::new(0) }; REFUSAL_KINDS.len()],
        last_append: AtomicI64::new(0),
    };

    fn reset(&self) {
        self.appends.store(0, Ordering::Relaxed);
        self.verify_runs.store(0, Ordering::Relaxed);
        for r in &self.refusals {
            r.store(0, Ordering::Relaxed);
        }
        self.last_append.store(0, Ordering::Relaxed);
    }
}

pub struct Counters([Slot; SLOTS]);

// SAFETY: atomics only, no pointers: valid when shared between processes.
unsafe impl PGRXSharedMemory for Counters {}

// SAFETY: the name is the extension's own.
static COUNTERS: PgAtomic<Counters> = unsafe { PgAtomic::new(c"ledger counters") };
/// Set in the postmaster while it preloads the library, inherited by every backend it forks.
static AVAILABLE: AtomicBool = AtomicBool::new(false);

/// Called from `_PG_init`: reserves the shared memory when the library is being preloaded.
pub fn init() {
    // SAFETY: a flag PostgreSQL sets while it loads shared_preload_libraries.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        pg_shmem_init!(COUNTERS = Counters([Slot::FREE; SLOTS]));
        AVAILABLE.store(true, Ordering::Relaxed);
    }
}

pub fn available() -> bool {
    AVAILABLE.load(Ordering::Relaxed)
}

fn key_of(relid: Oid) -> u64 {
    // SAFETY: reads the backend's database.
    let db = unsafe { pg_sys::MyDatabaseId }.to_u32() as u64;
    (db << 32) | relid.to_u32() as u64
}

/// What the counters know of a table.
enum Counted {
    Slot(&'static Slot),
    /// Nothing counted since the server started: every counter is zero.
    Nothing,
    /// No shared memory, or every slot is another table's: the counts are unknown.
    Unknown,
}

/// The slot of a table, claimed if `claim` and it has none.
fn slot(relid: Oid, claim: bool) -> Counted {
    if !available() {
        return Counted::Unknown;
    }
    let slots = &COUNTERS.get().0;
    let key = key_of(relid);
    let start = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % SLOTS;
    for i in 0..SLOTS {
        let slot = &slots[(start + i) % SLOTS];
        match slot.key.load(Ordering::Acquire) {
            k if k == key => return Counted::Slot(slot),
            0 if claim => match slot.key.compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Counted::Slot(slot),
                Err(k) if k == key => return Counted::Slot(slot),
                Err(_) => continue,
            },
            // Slots are never freed, so a free one ends the probe of a key never claimed.
            0 => return Counted::Nothing,
            _ => continue,
        }
    }
    Counted::Unknown
}

/// The slot to count in, claimed on first use.
fn counting_slot(relid: Oid) -> Option<&'static Slot> {
    match slot(relid, true) {
        Counted::Slot(s) => Some(s),
        _ => None,
    }
}

/// Appends committed to a ledger by one transaction.
pub fn count_appends(relid: Oid, appended: u64) {
    if let Some(slot) = counting_slot(relid) {
        slot.appends.fetch_add(appended, Ordering::Relaxed);
        // SAFETY: the commit time of the transaction being committed.
        let now = unsafe { pg_sys::GetCurrentTransactionStopTimestamp() };
        slot.last_append.fetch_max(now, Ordering::Relaxed);
    }
}

pub fn count_refusal(relid: Oid, kind: Refusal) {
    if let Some(slot) = counting_slot(relid) {
        slot.refusals[kind as usize].fetch_add(1, Ordering::Relaxed);
    }
}

pub fn count_verify_run(relid: Oid) {
    if let Some(slot) = counting_slot(relid) {
        slot.verify_runs.fetch_add(1, Ordering::Relaxed);
    }
}

/// A table just became a ledger: a table that had its oid before must not lend it its counts.
pub fn reset(relid: Oid) {
    if let Some(slot) = counting_slot(relid) {
        slot.reset();
    }
}

/// Whether the counters are kept (the library is in `shared_preload_libraries`).
#[pg_extern(stable, parallel_safe)]
fn counters_available() -> bool {
    available()
}

/// The counters of the registered ledgers of this database, for `ledger.stats`.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)] // pgrx reads the column names from the signature itself
fn counters() -> TableIterator<
    'static,
    (
        name!(tbl, pg_sys::Oid),
        name!(appends, Option<i64>),
        name!(verify_runs, Option<i64>),
        name!(refusals, Option<i64>),
        name!(last_append, Option<TimestampWithTimeZone>),
    ),
> {
    if !available() {
        return TableIterator::new(Vec::new());
    }
    let read = |c: &AtomicU64| Some(c.load(Ordering::Relaxed) as i64);
    let rows: Vec<_> = registered_ledgers()
        .into_iter()
        .map(|relid| match slot(relid, false) {
            Counted::Slot(s) => (
                relid,
                read(&s.appends),
                read(&s.verify_runs),
                Some(s.refusals.iter().map(|r| r.load(Ordering::Relaxed) as i64).sum()),
                timestamp(s.last_append.load(Ordering::Relaxed)),
            ),
            Counted::Nothing => (relid, Some(0), Some(0), Some(0), None),
            Counted::Unknown => (relid, None, None, None, None),
        })
        .collect();
    TableIterator::new(rows)
}

/// Refusals by kind of the registered ledgers of this database, for `ledger.refusals`.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn refusal_counters(
) -> TableIterator<'static, (name!(tbl, pg_sys::Oid), name!(kind, String), name!(refusals, Option<i64>))> {
    let mut rows = Vec::new();
    if available() {
        for relid in registered_ledgers() {
            let counted = slot(relid, false);
            for (kind, name) in REFUSAL_KINDS {
                let n = match counted {
                    Counted::Slot(s) => Some(s.refusals[kind as usize].load(Ordering::Relaxed) as i64),
                    Counted::Nothing => Some(0),
                    Counted::Unknown => None,
                };
                rows.push((relid, name.to_string(), n));
            }
        }
    }
    TableIterator::new(rows)
}

/// Counts a refusal by the definition guards (sql/guard.sql), which raise the error right after.
/// It asks PostgreSQL for the event being handled, which is an error outside an event trigger,
/// so a role calling it by hand gets that error instead of a count.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn count_guard_refusal(tbl: pg_sys::Oid, event: &str) {
    let probe = match event {
        "ddl_command_end" => "SELECT count(*) FROM pg_catalog.pg_event_trigger_ddl_commands()",
        "sql_drop" => "SELECT count(*) FROM pg_catalog.pg_event_trigger_dropped_objects()",
        "table_rewrite" => "SELECT pg_catalog.pg_event_trigger_table_rewrite_oid()::bigint",
        _ => crate::error::raise(ledger_core::LedgerError::new(
            ledger_core::SqlState::InvalidParameterValue,
            format!("unknown event trigger event \"{event}\""),
        )),
    };
    crate::datum::select_one::<i64>(probe, &[])
        .map_err(|e| crate::error::spi_error("cannot read the event trigger's event", e))
        .unwrap_or_else(|e| crate::error::raise(e));
    count_refusal(tbl, Refusal::Ddl);
}

fn registered_ledgers() -> Vec<Oid> {
    Spi::connect(|client| {
        client
            .select("SELECT tbl::oid FROM ledger.ledgers ORDER BY tbl", None, &[])?
            .map(|row| row.get::<Oid>(1).map(|o| o.unwrap_or(pg_sys::InvalidOid)))
            .collect::<Result<Vec<_>, _>>()
    })
    .unwrap_or_else(|e| crate::error::raise(crate::error::spi_error("cannot read the ledger registry", e)))
}

fn timestamp(micros: i64) -> Option<TimestampWithTimeZone> {
    (micros != 0).then(|| TimestampWithTimeZone::try_from(micros).ok()).flatten()
}
