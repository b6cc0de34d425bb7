//! Rows that `INSERT ... ON CONFLICT DO NOTHING` will skip, found before they are chained.
//!
//! The executor checks for conflicts after BEFORE ROW triggers, so a row the append trigger chained
//! could be dropped afterwards, and the next record of its chain would link to a record that was
//! never stored. So while a transaction runs such statements, the trigger first probes the table's
//! unique indexes for the row's key, as the executor will (with a dirty snapshot, waiting for a
//! transaction that is inserting the same key): a row that conflicts is not stored by any kind of
//! INSERT (DO NOTHING skips it, a plain INSERT fails on it, DO UPDATE is refused by the ledger), so
//! it is given the chain's next link without becoming the chain's head.
//!
//! A row that conflicts with a committed row (or one of this transaction's) needs no link at all,
//! since the executor's check will find the same row: [`conflicts_with_stored`] finds it before the
//! chain is locked, so a retried batch of rows already stored takes no chain lock, reads no head and
//! hashes nothing. That holds only while the row stays, and what could remove a ledger's row (or
//! its key) behind the triggers is `ledger.prune` and `ledger.redact`: each first waits for the
//! transactions that skip rows so ([`lock_out_skipping`]), which hold the ledger's removal lock
//! in share mode from their first probe on.
//!
//! Which statements those are is seen by an ExecutorStart hook. The library can be loaded by the
//! first append of a session, in the middle of such a statement and after its start: the rest of
//! that transaction probes every row.

use crate::layout::Layout;
use pgrx::pg_sys::{self, Datum};
use pgrx::prelude::*;
use std::cell::Cell;

thread_local! {
    /// Whether this transaction ran an INSERT ... ON CONFLICT DO NOTHING.
    static SKIPPING_INSERTS: Cell<bool> = const { Cell::new(false) };
}

static mut PREVIOUS_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;

/// Called from `_PG_init`.
pub fn init() {
    // SAFETY: hooks are chained once per process, when the library loads.
    unsafe {
        PREVIOUS_EXECUTOR_START = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(executor_start);
        // Loaded inside a transaction (not by shared_preload_libraries): a statement may be running
        // that the hook did not see start.
        if pg_sys::IsTransactionState() {
            SKIPPING_INSERTS.with(|s| s.set(true));
        }
    }
}

/// Notes statements that insert with ON CONFLICT DO NOTHING (at the top or in a WITH clause).
#[pg_guard]
unsafe extern "C-unwind" fn executor_start(query: *mut pg_sys::QueryDesc, eflags: std::ffi::c_int) {
    // SAFETY: the executor hands its hook a valid query descriptor with a planned statement.
    unsafe {
        let stmt = (*query).plannedstmt;
        if !stmt.is_null() {
            let skips = |plan: *mut pg_sys::Plan| {
                !plan.is_null()
                    && (*plan).type_ == pg_sys::NodeTag::T_ModifyTable
                    && (*plan.cast::<pg_sys::ModifyTable>()).onConflictAction
                        == pg_sys::OnConflictAction::ONCONFLICT_NOTHING
            };
            // Data-modifying WITH clauses are planned as subplans.
            let subplans = (*stmt).subplans;
            let in_subplan = !subplans.is_null()
                && std::slice::from_raw_parts((*subplans).elements, (*subplans).length as usize)
                    .iter()
                    .any(|cell| skips(cell.ptr_value.cast()));
            if skips((*stmt).planTree) || in_subplan {
                SKIPPING_INSERTS.with(|s| s.set(true));
            }
        }
        match PREVIOUS_EXECUTOR_START {
            Some(previous) => previous(query, eflags),
            None => pg_sys::standard_ExecutorStart(query, eflags),
        }
    }
}

/// Whether this transaction may insert rows that ON CONFLICT DO NOTHING skips.
pub fn skipping_inserts() -> bool {
    SKIPPING_INSERTS.with(|s| s.get())
}

/// The transaction ended.
pub fn forget() {
    SKIPPING_INSERTS.with(|s| s.set(false));
}

/// `locktag_field4` of the lock that keeps a ledger's rows where they are while rows found to
/// conflict with them are skipped ([`crate::head::ledger_lock_tag`]).
const REMOVAL_LOCK_SPACE: u16 = 0x4C48;

/// Whether a row with these values conflicts with a row that is committed or this transaction's, on
/// one of the table's unique keys, so that the executor will skip it (or fail on it) whatever link
/// it gets. A transaction in progress holding the key is waited for: if it commits, the row
/// conflicts; if it aborts, it does not. From here on, until this transaction ends, nothing removes
/// the row found (see the module comment).
///
/// # Safety
/// As for [`conflicts`].
pub unsafe fn conflicts_with_stored(layout: &Layout, heap: pg_sys::Relation, values: &[Datum], nulls: &[bool]) -> bool {
    if layout.unique_keys.is_empty() {
        return false;
    }
    pg_sys::LockAcquire(&removal_lock_tag(layout.relid), pg_sys::ShareLock as i32, false, false);
    conflicts(layout, heap, values, nulls)
}

/// Waits for the transactions that skip rows conflicting with this ledger's stored rows, and keeps
/// new ones from starting to until this transaction ends: called before a row of the ledger, or a
/// value of one of its unique keys, is removed.
///
/// # Safety
/// Must run inside a transaction.
pub unsafe fn lock_out_skipping(relid: pg_sys::Oid) {
    pg_sys::LockAcquire(&removal_lock_tag(relid), pg_sys::ExclusiveLock as i32, false, false);
}

fn removal_lock_tag(relid: pg_sys::Oid) -> pg_sys::LOCKTAG {
    crate::head::ledger_lock_tag(relid, 0, REMOVAL_LOCK_SPACE)
}

/// Whether a row with these values conflicts with a stored or in-flight row on one of the table's
/// unique keys (those `ledger.enable` did not make), so that no INSERT will store it.
///
/// # Safety
/// `heap` must be the layout's table, open, and `values`/`nulls` the deformed datums of a row of it.
pub unsafe fn conflicts(layout: &Layout, heap: pg_sys::Relation, values: &[Datum], nulls: &[bool]) -> bool {
    layout.unique_keys.iter().any(|key| {
        let mut scan_keys: Vec<pg_sys::ScanKeyData> = Vec::with_capacity(key.columns.len());
        for (position, column) in key.columns.iter().enumerate() {
            let mut scan_key: pg_sys::ScanKeyData = std::mem::zeroed();
            if nulls[column.index] {
                if !key.nulls_not_distinct {
                    return false; // NULLs are distinct: a row with one conflicts with nothing
                }
                pg_sys::ScanKeyEntryInitialize(
                    &mut scan_key,
                    (pg_sys::SK_ISNULL | pg_sys::SK_SEARCHNULL) as i32,
                    position as i16 + 1,
                    0, // InvalidStrategy: an IS NULL key
                    pg_sys::InvalidOid,
                    pg_sys::InvalidOid,
                    pg_sys::InvalidOid,
                    Datum::from(0),
                );
            } else {
                pg_sys::ScanKeyEntryInitialize(
                    &mut scan_key,
                    0,
                    position as i16 + 1,
                    pg_sys::BTEqualStrategyNumber as u16,
                    pg_sys::InvalidOid,
                    column.collation,
                    column.equality,
                    values[column.index],
                );
            }
            scan_keys.push(scan_key);
        }
        key_taken(heap, key.index, &mut scan_keys)
    })
}

/// Probes one unique index as the executor's own check does: a dirty snapshot sees rows of
/// transactions still in progress, and such a transaction is waited for before looking again.
unsafe fn key_taken(heap: pg_sys::Relation, index_oid: pg_sys::Oid, keys: &mut [pg_sys::ScanKeyData]) -> bool {
    let index = pg_sys::index_open(index_oid, pg_sys::AccessShareLock as i32);
    let slot = pg_sys::table_slot_create(heap, std::ptr::null_mut());
    let taken = loop {
        let mut dirty: pg_sys::SnapshotData = std::mem::zeroed();
        dirty.snapshot_type = pg_sys::SnapshotType::SNAPSHOT_DIRTY;
        let scan = crate::head::begin_index_scan(heap, index, &mut dirty, keys.len() as i32);
        pg_sys::index_rescan(scan, keys.as_mut_ptr(), keys.len() as i32, std::ptr::null_mut(), 0);
        let found = pg_sys::index_getnext_slot(scan, pg_sys::ScanDirection::ForwardScanDirection, slot);
        let wait_for = if dirty.xmin != pg_sys::InvalidTransactionId { dirty.xmin } else { dirty.xmax };
        let tid = (*slot).tts_tid;
        pg_sys::index_endscan(scan);
        if !found {
            break false;
        }
        if wait_for == pg_sys::InvalidTransactionId {
            break true;
        }
        let mut tid = tid;
        pg_sys::XactLockTableWait(wait_for, heap, &mut tid, pg_sys::XLTW_Oper::XLTW_InsertIndex);
    };
    pg_sys::ExecDropSingleTupleTableSlot(slot);
    pg_sys::index_close(index, pg_sys::AccessShareLock as i32);
    taken
}
