//! When an appender's chain locks are released: once its commit record is in the WAL, before that
//! record is flushed, so that one chain commits as many transactions per flush as a plain table does.
//!
//! A chain's lock is transaction-scoped, and PostgreSQL releases a transaction's locks only after
//! its commit is flushed (and, with synchronous standbys, confirmed). On one chain every writer
//! would wait for the previous writer's flush: one commit per flush, however many writers. The
//! order of the chain only needs the lock until the commit record is *inserted*: a later appender's
//! commit record then follows it in the WAL, so any crash or replica that keeps the later commit
//! keeps the earlier one too, and a commit record, once inserted, can no longer abort. PostgreSQL
//! has no hook between insertion and flush, so the appender commits asynchronously (a
//! transaction-local `synchronous_commit = off`, taken with its first chain lock), which releases
//! its locks right after the insertion, and flushes the commit itself once they are released
//! ([`after_locks`]), before COMMIT returns. Every acknowledged commit is as durable as before.
//!
//! The difference others can see: the rows of such a commit are visible to other sessions for the
//! moment of that flush before they are durable, as with any asynchronous commit; a crash in that
//! moment loses them together with every later commit (what survives of a chain is a prefix).
//! What the ledger itself attests (digests, proofs) is flushed before it is returned
//! ([`flush_visible_commits`]). Applied only when the commit would otherwise wait for the local
//! flush alone: with synchronous standbys the locks are held until they confirm, as before.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use std::cell::Cell;

static EARLY_LOCK_RELEASE: GucSetting<bool> = GucSetting::<bool>::new(true);

pub fn register_settings() {
    GucRegistry::define_bool_guc(
        c"ledger.early_lock_release",
        c"Releases a transaction's chain locks once its commit is written, before it is flushed.",
        c"COMMIT still returns only after the flush; off holds the locks through the flush.",
        &EARLY_LOCK_RELEASE,
        GucContext::Userset,
        GucFlags::default(),
    );
}

thread_local! {
    /// This transaction commits asynchronously because it holds chain locks: flush after release.
    static FLUSH_AFTER_RELEASE: Cell<bool> = const { Cell::new(false) };
}

/// Called with each new chain lock: makes the transaction's commit release its locks before the
/// flush, if its commit waits for the local flush alone.
///
/// # Safety
/// Must run inside a transaction that may write.
pub unsafe fn release_locks_before_flush() {
    let level = pg_sys::synchronous_commit;
    if level == pg_sys::SyncCommitLevel::SYNCHRONOUS_COMMIT_OFF as i32 || !EARLY_LOCK_RELEASE.get() {
        // Off already: by this function (the flush is pending) or by the user (who wants no flush).
        return;
    }
    let local_only = level == pg_sys::SyncCommitLevel::SYNCHRONOUS_COMMIT_LOCAL_FLUSH as i32
        || pg_sys::SyncRepStandbyNames.is_null()
        || *pg_sys::SyncRepStandbyNames == 0;
    if !local_only {
        return;
    }
    // SET LOCAL: undone at the transaction's end, or with the subtransaction that set it (whose
    // chain locks go with it).
    pg_sys::set_config_option(
        c"synchronous_commit".as_ptr(),
        c"off".as_ptr(),
        pg_sys::GucContext::PGC_USERSET,
        pg_sys::GucSource::PGC_S_SESSION,
        pg_sys::GucAction::GUC_ACTION_LOCAL,
        true,
        0,
        false,
    );
    FLUSH_AFTER_RELEASE.with(|f| f.set(true));
}

/// Registered in _PG_init as a resource release callback: after a committing transaction's locks
/// are released, flushes its commit record if [`release_locks_before_flush`] made it asynchronous.
/// Every top-level transaction end passes here, so this is also where the flag is cleared. Flushing
/// a record that is already flushed costs a comparison: so it is when something reverted the
/// setting, and after PREPARE TRANSACTION (which flushes its own record, as COMMIT PREPARED does,
/// so the last commit's end is behind it).
#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn after_locks(
    phase: pg_sys::ResourceReleasePhase::Type,
    is_commit: bool,
    is_top_level: bool,
    _arg: *mut std::ffi::c_void,
) {
    if phase != pg_sys::ResourceReleasePhase::RESOURCE_RELEASE_AFTER_LOCKS || !is_top_level {
        return;
    }
    if FLUSH_AFTER_RELEASE.with(|f| f.replace(false)) && is_commit {
        pg_sys::XLogFlush(pg_sys::XactLastCommitEnd);
    }
}

/// Flushes the WAL as far as it is inserted: every commit this backend's snapshots could see is
/// then durable, so what it returns attests no record a crash could still take back.
pub fn flush_visible_commits() {
    // SAFETY: plain calls into the WAL machinery; a standby has nothing of its own to flush.
    unsafe {
        if !pg_sys::RecoveryInProgress() {
            pg_sys::XLogFlush(inserted_end(pg_sys::GetXLogInsertRecPtr(), pg_sys::wal_segment_size as u64));
        }
    }
}

/// The end of the WAL inserted so far, from the insert position. At a page boundary the position
/// points past the next page's header, which no record has reached: a flush request that far would
/// be past the WAL generated (PostgreSQL logs such a request), so the boundary itself is the end.
pub(crate) fn inserted_end(position: u64, segment_size: u64) -> u64 {
    let page = u64::from(pg_sys::XLOG_BLCKSZ);
    let header = if position % segment_size < page {
        std::mem::size_of::<pg_sys::XLogLongPageHeaderData>()
    } else {
        std::mem::size_of::<pg_sys::XLogPageHeaderData>()
    } as u64;
    if position % page == header {
        position - header
    } else {
        position
    }
}
