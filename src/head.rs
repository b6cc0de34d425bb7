//! Where each chain's next record goes, without forks and without per-row lookups.
//!
//! The first append to a chain in a transaction takes a transaction-scoped lock on that chain (an
//! advisory-type lock keyed on table and chain, so other chains never wait) and then reads the head
//! with a snapshot taken after the lock: the previous holder's commit is visible by then. From there
//! the head is cached for the rest of the transaction, because nobody else can append while we hold
//! the lock. Subtransaction aborts roll the cache back to what it was when the subtransaction began.
//!
//! Under REPEATABLE READ and SERIALIZABLE the transaction snapshot may predate the head; appending
//! after a record the transaction cannot see would be an anomaly, so that is a serialization failure.
//!
//! Each backend remembers the last committed head it saw of each chain. It is only a lower bound for
//! the next lookup (`seq >= hint` as a second scan key), so the backward index scan stops after the
//! records appended since, instead of reading every entry of the chain on the index page; a lookup
//! that finds nothing above the hint (our append was rolled back, or rows removed) scans again
//! without it.
//!
//! A row can be dropped after our BEFORE trigger chained it: INSERT ... ON CONFLICT DO NOTHING skips
//! the rows src/conflict.rs finds conflicting without making them heads, but a concurrent insert of
//! the same key can still come between that check and the executor's. The cache is re-checked
//! against the table at each new command, and before commit every chain a transaction that ran such
//! a statement appended to is checked to be dense, so such a row can never leave a hole. Nothing
//! else drops a row silently after the BEFORE triggers (a later BEFORE trigger that could return
//! NULL is refused by the append trigger, ON CONFLICT DO UPDATE by the ledger), so other
//! transactions skip that check.

use crate::datum::text_datum_to_str;
use crate::error::{raise, OrRaise};
use crate::layout::Layout;
use ledger_core::hash::{parse_hex, Digest};
use ledger_core::{LedgerError, SqlState};
use pgrx::pg_sys::{self, CommandId, Datum, Oid};
use std::cell::RefCell;
use std::collections::HashMap;

/// `locktag_field4` of ledger chain locks ([`ledger_lock_tag`]). Shows in pg_locks as an advisory
/// lock with objsubid 19527.
const CHAIN_LOCK_SPACE: u16 = 0x4C47;

#[derive(Clone, Copy, Debug, PartialEq)]
struct Head {
    seq: i64,
    hash: Digest,
    /// The command that appended it: a later command re-reads the table to catch dropped rows.
    command_id: CommandId,
    /// The first seq this transaction appended to the chain.
    first_seq: i64,
    /// The chain value (copied into the transaction's memory) for the pre-commit check.
    chain_datum: Option<Datum>,
    /// The relation it is stored in: the ledger, or the partition of a partitioned ledger.
    storage: Oid,
}

#[derive(Default)]
struct State {
    heads: HashMap<Oid, HashMap<Vec<u8>, Head>>,
    /// Per open subtransaction level (>= 2) that changed the cache: the values it overwrote.
    undo: Vec<UndoFrame>,
    /// The shared-memory key (src/shared_heads.rs) of every chain this transaction took the lock
    /// of (or, for a history ledger, appended to), by table and chain: published at commit,
    /// removed if anything aborts.
    shared: HashMap<(Oid, Vec<u8>), crate::shared_heads::Key>,
    /// This transaction's claim on those entries, once made before commit.
    claim: Option<u64>,
}

/// The cache entries a subtransaction level overwrote, as they were before it touched them.
struct UndoFrame {
    level: i32,
    saved: HashMap<(Oid, Vec<u8>), Option<Head>>,
}

impl State {
    /// The undo frame of `level`, created on first use (frames stay ordered by level).
    fn undo_frame(&mut self, level: i32) -> &mut HashMap<(Oid, Vec<u8>), Option<Head>> {
        if self.undo.last().is_none_or(|f| f.level != level) {
            self.undo.push(UndoFrame { level, saved: HashMap::new() });
        }
        &mut self.undo.last_mut().expect("just ensured").saved
    }

    /// A subtransaction aborted: put back what it and its children changed.
    fn roll_back_to(&mut self, level: i32) {
        while self.undo.last().is_some_and(|f| f.level >= level) {
            let frame = self.undo.pop().expect("just checked");
            for ((relid, key), previous) in frame.saved {
                let chains = self.heads.entry(relid).or_default();
                match previous {
                    Some(head) => chains.insert(key, head),
                    None => chains.remove(&key),
                };
            }
        }
    }

    /// A subtransaction committed: its changes now belong to its parent (level 1 needs no undo).
    fn merge_into_parent(&mut self, level: i32) {
        if self.undo.last().is_none_or(|f| f.level != level) {
            return;
        }
        let frame = self.undo.pop().expect("just checked");
        if level > 2 {
            let parent = self.undo_frame(level - 1);
            for (key, previous) in frame.saved {
                parent.entry(key).or_insert(previous);
            }
        }
    }
}

/// How many chains' hints a backend keeps per table; past that it forgets them and starts over.
const MAX_HINTS: usize = 65_536;

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
    /// Appends stored per table, counted before commit when rows may have been dropped.
    static STORED_APPENDS: RefCell<Option<HashMap<Oid, i64>>> = const { RefCell::new(None) };
    /// The last committed head seq this backend knows of each chain, by table.
    static HINTS: RefCell<HashMap<Oid, HashMap<Vec<u8>, i64>>> = RefCell::new(HashMap::new());
}

/// A transaction committed: its chains' heads become hints for later lookups.
fn remember_heads(state: State) {
    HINTS.with(|h| {
        let mut hints = h.borrow_mut();
        for (relid, chains) in state.heads {
            let table = hints.entry(relid).or_default();
            for (key, head) in chains {
                if table.len() >= MAX_HINTS {
                    table.clear();
                }
                table.insert(key, head.seq);
            }
        }
    });
}

/// A transaction committed: the appends it stored are counted. Every chain it appended to holds
/// its records from `first_seq` to the head (the pre-commit check made sure of it), unless a row
/// was dropped after chaining, in which case the pre-commit check counted the stored ones.
fn count_appends(state: &State) {
    let stored = STORED_APPENDS.with(|s| s.take());
    if !crate::metrics::available() {
        return;
    }
    for (relid, chains) in &state.heads {
        let appended = match &stored {
            Some(counted) => counted.get(relid).copied().unwrap_or(0),
            None => chains.values().map(|h| h.seq - h.first_seq + 1).sum(),
        };
        crate::metrics::count_appends(*relid, appended as u64);
    }
}

/// A transaction committed, still holding its chain locks: the heads of its chains go to shared
/// memory for the next appender, unless it may have dropped a row after chaining it (then its
/// heads may be ahead of the table, and the next appender looks them up).
fn publish_heads(state: &State) {
    if crate::conflict::skipping_inserts() {
        forget_shared_heads(state);
        return;
    }
    for ((relid, chain_key), key) in &state.shared {
        match (state.heads.get(relid).and_then(|chains| chains.get(chain_key)), state.claim) {
            (Some(head), Some(claim)) => crate::shared_heads::publish(key, claim, head.seq, &head.hash),
            // Locked, but its appends were rolled back with a subtransaction.
            _ => crate::shared_heads::forget(key),
        }
    }
}

/// Before the commit is visible: claims the shared entries of the chains it locked or appended to
/// (src/shared_heads.rs).
///
/// # Safety
/// Must run in the pre-commit callback.
unsafe fn claim_shared_heads() {
    if crate::conflict::skipping_inserts() {
        return;
    }
    STATE.with(|s| {
        let mut state = s.borrow_mut();
        // Unique to this transaction in the cluster, and nonzero once it appended (it has an id).
        let claim = pg_sys::GetTopFullTransactionIdIfAny().value;
        if state.shared.is_empty() || claim == 0 {
            return;
        }
        for key in state.shared.values() {
            crate::shared_heads::claim(key, claim);
        }
        state.claim = Some(claim);
    });
}

/// Removes the shared heads of every chain the transaction locked or appended to.
fn forget_shared_heads(state: &State) {
    for key in state.shared.values() {
        crate::shared_heads::forget(key);
    }
}

/// Forgets the hints of a table (or of all tables, for InvalidOid): its relcache entry was
/// invalidated, so it may have been truncated or rewritten.
pub fn forget_hints(relid: Oid) {
    HINTS.with(|h| {
        let mut hints = h.borrow_mut();
        if relid == pg_sys::InvalidOid {
            hints.clear();
        } else {
            hints.remove(&relid);
        }
    });
}

fn hint_for(relid: Oid, chain_key: &[u8]) -> Option<i64> {
    HINTS.with(|h| h.borrow().get(&relid).and_then(|t| t.get(chain_key)).copied())
}

/// The (seq, prev_hash) the next record of this chain gets.
///
/// # Safety
/// `heap` must be the layout's table, open (as a trigger's relation is), and `chain_datum` a valid
/// datum of the layout's chain column type, or `None` without one.
pub unsafe fn next_link(
    layout: &Layout,
    heap: pg_sys::Relation,
    chain_key: &[u8],
    chain_datum: Option<Datum>,
    supplied_seq: Option<i64>,
) -> (i64, Option<Digest>) {
    let cached = STATE.with(|s| s.borrow().heads.get(&layout.relid).and_then(|h| h.get(chain_key)).copied());
    let command_id = pg_sys::GetCurrentCommandId(false);
    if let Some(head) = cached {
        if head.command_id == command_id {
            if head.storage != layout.storage {
                // A row of the same statement for another partition: the order holds for it too.
                let ledger = crate::layout::for_relation(layout.relid);
                let target = partition_position(layout, &ledger);
                let held = ledger.partitions.iter().position(|p| p.relid == head.storage).unwrap_or(0);
                if held > target {
                    refuse_before_head(layout, &ledger, held, head.seq);
                }
            }
            return (head.seq + 1, Some(head.hash));
        }
        // A new command: rows chained by an earlier one may have been dropped after our trigger ran.
        let actual = lookup(layout, heap, chain_datum, pg_sys::GetLatestSnapshot(), Some(head.seq));
        return match actual {
            Some((seq, hash)) => (seq + 1, Some(hash)),
            None => first_link(layout, chain_datum, supplied_seq),
        };
    }
    // A history ledger's chains need no lock of their own: only the tracked table's trigger appends
    // to them (src/history.rs), and the tracked row's lock (or, for a new key, its primary key's
    // unique check) already orders the writers of one key, each appending after the previous one
    // committed. A statement changing many rows would otherwise hold a lock per row.
    if layout.history_of.is_none() {
        lock_chain_to_append(layout, chain_key);
    }
    if let Some(key) = crate::shared_heads::key_for(layout, heap, chain_key) {
        // The head index is checked even when it is not read: an append never goes where a lookup
        // would refuse to find its chain's head (an index an owner replaced, say).
        layout.head_index();
        STATE.with(|s| s.borrow_mut().shared.insert((layout.relid, chain_key.to_vec()), key));
        // Under REPEATABLE READ the head must also be checked against the snapshot (below), and a
        // statement that may drop rows re-reads the table anyway.
        if crate::shared_heads::reading()
            && pg_sys::XactIsoLevel < pg_sys::XACT_REPEATABLE_READ as i32
            && !crate::conflict::skipping_inserts()
        {
            if let Some((seq, hash)) = crate::shared_heads::read(&key) {
                return (seq + 1, Some(hash));
            }
        }
    }
    let hint = hint_for(layout.relid, chain_key);
    let latest = lookup(layout, heap, chain_datum, pg_sys::GetLatestSnapshot(), hint);
    if pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as i32 {
        let visible = lookup(layout, heap, chain_datum, pg_sys::GetTransactionSnapshot(), hint);
        if visible != latest {
            raise(
                LedgerError::new(
                    SqlState::SerializationFailure,
                    "could not serialize access due to a concurrent append to a ledger chain",
                )
                .detail(format!(
                    "Another transaction appended to this chain of {} after this transaction's snapshot was taken.",
                    layout.qualified_name
                ))
                .hint("The transaction might succeed if retried."),
            );
        }
    }
    match latest {
        Some((seq, hash)) => (seq + 1, Some(hash)),
        None => first_link(layout, chain_datum, supplied_seq),
    }
}

/// The link of the first stored record of a chain: seq 1, linking to nothing, unless the chain's
/// records were pruned. A restore loads a pruned chain from its first kept record on, supplying its
/// seq, possibly in the session that made the extension (whose layout was read before
/// `ledger.pruned` was loaded): a supplied seq after 1 is looked up whatever the layout says.
///
/// # Safety
/// `chain_datum` as for [`next_link`].
unsafe fn first_link(layout: &Layout, chain_datum: Option<Datum>, supplied_seq: Option<i64>) -> (i64, Option<Digest>) {
    if !layout.pruned && supplied_seq.is_none_or(|s| s <= 1) {
        return (1, None);
    }
    let chain =
        layout.chain.as_ref().zip(chain_datum).map(|(column, datum)| crate::verify::chain_text_of(column, datum));
    match crate::retention::anchor_of(layout, chain.as_deref()) {
        Some(anchor) => (anchor.pruned_through + 1, anchor.last_pruned_hash),
        None => (1, None),
    }
}

/// Records that `seq` with `hash` is now the chain's head in this transaction.
///
/// # Safety
/// `chain_datum` as for [`next_link`].
pub unsafe fn appended(layout: &Layout, chain_key: &[u8], chain_datum: Option<Datum>, seq: i64, hash: Digest) {
    let command_id = pg_sys::GetCurrentCommandId(false);
    let level = pg_sys::GetCurrentTransactionNestLevel();
    STATE.with(|s| {
        let mut state = s.borrow_mut();
        let previous = state.heads.get(&layout.relid).and_then(|h| h.get(chain_key)).copied();
        if level >= 2 {
            state.undo_frame(level).entry((layout.relid, chain_key.to_vec())).or_insert(previous);
        }
        let (first_seq, chain_datum) = match previous {
            Some(p) => (p.first_seq.min(seq), p.chain_datum),
            None => (seq, chain_datum.map(|d| copy_to_transaction_memory(layout, d))),
        };
        let head = Head { seq, hash, command_id, first_seq, chain_datum, storage: layout.storage };
        match state.heads.get_mut(&layout.relid) {
            Some(chains) => match chains.get_mut(chain_key) {
                Some(slot) => *slot = head,
                None => {
                    chains.insert(chain_key.to_vec(), head);
                }
            },
            None => {
                state.heads.insert(layout.relid, HashMap::from([(chain_key.to_vec(), head)]));
            }
        }
    });
}

unsafe fn copy_to_transaction_memory(layout: &Layout, datum: Datum) -> Datum {
    let chain = layout.chain.as_ref().expect("a chain datum implies a chain column");
    let (typlen, typbyval) = (chain.type_len, chain.type_by_value);
    if typbyval {
        return datum;
    }
    let old = pg_sys::MemoryContextSwitchTo(pg_sys::TopTransactionContext);
    let copy = if typlen == -1 {
        Datum::from(pg_sys::pg_detoast_datum_copy(datum.cast_mut_ptr()))
    } else {
        let len = typlen as usize;
        let target = pg_sys::palloc(len) as *mut u8;
        std::ptr::copy_nonoverlapping(datum.cast_mut_ptr::<u8>(), target, len);
        Datum::from(target)
    };
    pg_sys::MemoryContextSwitchTo(old);
    copy
}

/// Takes the transaction-scoped lock of one chain of a table.
///
/// # Safety
/// Must run inside a transaction.
pub unsafe fn lock_chain(relid: Oid, chain_key: &[u8]) {
    pg_sys::LockAcquire(&chain_lock_tag(relid, chain_key), pg_sys::ExclusiveLock as i32, false, false);
}

fn chain_lock_tag(relid: Oid, chain_key: &[u8]) -> pg_sys::LOCKTAG {
    ledger_lock_tag(relid, fnv1a(chain_key), CHAIN_LOCK_SPACE)
}

/// Takes the lock of a chain about to be appended to, to be released before the commit's flush
/// (src/durability.rs). Two transactions that reach the same chains in different orders can each
/// wait for a chain the other holds: PostgreSQL's deadlock report then says which ledger, and how
/// writers avoid it.
///
/// # Safety
/// Must run inside a transaction.
unsafe fn lock_chain_to_append(layout: &Layout, chain_key: &[u8]) {
    let tag = chain_lock_tag(layout.relid, chain_key);
    let mode = pg_sys::ExclusiveLock as i32;
    crate::durability::release_locks_before_flush();
    if pg_sys::LockAcquire(&tag, mode, false, true) != pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL {
        return;
    }
    pgrx::PgTryBuilder::new(|| {
        pg_sys::LockAcquire(&tag, mode, false, false);
    })
    .catch_when(pgrx::PgSqlErrorCode::ERRCODE_T_R_DEADLOCK_DETECTED, |caught| {
        let report = match &caught {
            pgrx::pg_sys::panic::CaughtError::PostgresError(r) | pgrx::pg_sys::panic::CaughtError::ErrorReport(r) => r,
            _ => caught.rethrow(),
        };
        let mut error = LedgerError::new(SqlState::DeadlockDetected, report.message().to_string()).hint(format!(
            "Transactions appending to several chains of ledger {} wait for each other when they reach \
             the chains in different orders: insert each transaction's rows in chain order (for example \
             ORDER BY the chain column), or retry the transaction.",
            layout.qualified_name
        ));
        if let Some(detail) = report.detail() {
            error = error.detail(detail.to_string());
        }
        raise(error)
    })
    .execute();
}

/// The tag of one of the ledger's own locks of a table: an advisory lock in a space of its own
/// (`locktag_field4`), so that it never collides with users' advisory locks.
pub fn ledger_lock_tag(relid: Oid, key: u32, space: u16) -> pg_sys::LOCKTAG {
    pg_sys::LOCKTAG {
        // SAFETY: a backend's database is set before it runs any query.
        locktag_field1: unsafe { pg_sys::MyDatabaseId }.to_u32(),
        locktag_field2: relid.to_u32(),
        locktag_field3: key,
        locktag_field4: space,
        locktag_type: pg_sys::LockTagType::LOCKTAG_ADVISORY as u8,
        locktag_lockmethodid: pg_sys::USER_LOCKMETHOD as u8,
    }
}

/// 32-bit FNV-1a: stable across builds, cheap, and a collision only makes two chains share a lock.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811C_9DC5u32, |h, b| (h ^ *b as u32).wrapping_mul(0x0100_0193))
}

/// Where a chain's head is read: a (chain, seq) index of a relation holding records, and where that
/// relation's tuples keep seq and hash.
struct Probe<'a> {
    index: &'a crate::layout::HeadIndex,
    seq: usize,
    hash: usize,
}

/// The chain's last record (seq, hash) as `snapshot` sees it: one backward step of the (chain, seq)
/// index, without the executor. `hint` is a seq the head is expected to be at or above.
///
/// A partitioned ledger keeps each chain's records in partitions in bound order (appends refuse a
/// record for a partition before the one holding its chain's head), so the head is in the last
/// partition that holds any record of the chain: partitions are probed from the last back.
unsafe fn lookup(
    layout: &Layout,
    heap: pg_sys::Relation,
    chain_datum: Option<Datum>,
    snapshot: pg_sys::Snapshot,
    hint: Option<i64>,
) -> Option<(i64, Digest)> {
    let snapshot = pg_sys::RegisterSnapshot(snapshot);
    let head = if layout.partitioned {
        let ledger = crate::layout::for_relation(layout.relid);
        let target = partition_position(layout, &ledger);
        let found = match hint.filter(|h| *h > 1) {
            Some(hint) => probe_last(layout, &ledger, heap, snapshot, chain_datum, Some(hint))
                .or_else(|| probe_last(layout, &ledger, heap, snapshot, chain_datum, None)),
            None => probe_last(layout, &ledger, heap, snapshot, chain_datum, None),
        };
        if let Some((position, seq, _)) = found.filter(|(position, _, _)| *position > target) {
            refuse_before_head(layout, &ledger, position, seq);
        }
        found.map(|(_, seq, hash)| (seq, hash))
    } else {
        let probe = Probe { index: layout.head_index(), seq: layout.seq, hash: layout.hash };
        let index = pg_sys::index_open(probe.index.index, pg_sys::AccessShareLock as i32);
        let head = match hint.filter(|h| *h > 1) {
            Some(hint) => scan_head(layout, &probe, heap, index, snapshot, chain_datum, Some(hint))
                .or_else(|| scan_head(layout, &probe, heap, index, snapshot, chain_datum, None)),
            None => scan_head(layout, &probe, heap, index, snapshot, chain_datum, None),
        };
        pg_sys::index_close(index, pg_sys::AccessShareLock as i32);
        head
    };
    pg_sys::UnregisterSnapshot(snapshot);
    head
}

/// Refuses a record for a partition before the one holding its chain's latest record (`seq`, in
/// the partition at `held`): the head lookup finds a chain's head in the last partition holding the
/// chain, so its records must not go back.
fn refuse_before_head(layout: &Layout, ledger: &Layout, held: usize, seq: i64) -> ! {
    raise(
        LedgerError::new(
            SqlState::CheckViolation,
            format!(
                "a record of ledger {} cannot go into partition {}, before its chain's latest record",
                layout.qualified_name,
                crate::layout::qualified_name(layout.storage)
            ),
        )
        .detail(format!(
            "The chain's latest record, seq {seq}, is in partition {}, which comes later in the partitioning order.",
            crate::layout::qualified_name(ledger.partitions[held].relid)
        ))
        .hint("A chain's records go into its ledger's partitions in order: give the record a partition key value in or after the partition of its chain's latest record."),
    )
}

/// The position, among its ledger's partitions, of the partition a record goes into. The default
/// partition takes no records: a chain's order across partitions is their bounds' order, which
/// the default partition's rows have none of.
unsafe fn partition_position(layout: &Layout, ledger: &Layout) -> usize {
    if let Some(position) = ledger.partitions.iter().position(|p| p.relid == layout.storage) {
        return position;
    }
    let partition = crate::layout::qualified_name(layout.storage);
    let error = if ledger.default_partition == Some(layout.storage) {
        LedgerError::new(
            SqlState::CheckViolation,
            format!("no partition of ledger {} covers the record", layout.qualified_name),
        )
        .detail(format!("It would go into the default partition {partition}, which takes no records: a chain's records are ordered by the bounds of the partitions that hold them."))
        .hint("Create the partition for its partition key value first (with pg_partman: partman.run_maintenance()).")
    } else {
        LedgerError::new(
            SqlState::InvalidTableDefinition,
            format!("partition {partition} of ledger {} is not a leaf partition", layout.qualified_name),
        )
        .hint("A partitioned ledger's partitions are ordinary tables.")
    };
    raise(error)
}

/// The chain's head in the last of the ledger's partitions holding a record of it (at least
/// `min_seq`, when given): the partition's position, the seq and the hash. A partition without a
/// block of its own (one made in advance, not yet written to) is passed over without its index.
unsafe fn probe_last(
    layout: &Layout,
    ledger: &Layout,
    heap: pg_sys::Relation,
    snapshot: pg_sys::Snapshot,
    chain_datum: Option<Datum>,
    min_seq: Option<i64>,
) -> Option<(usize, i64, Digest)> {
    for (position, partition) in ledger.partitions.iter().enumerate().rev() {
        let own = partition.relid == (*heap).rd_id;
        let relation = if own { heap } else { pg_sys::relation_open(partition.relid, pg_sys::AccessShareLock as i32) };
        let written = own || pg_sys::RelationGetNumberOfBlocksInFork(relation, pg_sys::ForkNumber::MAIN_FORKNUM) > 0;
        let head = if written {
            let probe = Probe { index: partition.head_index(ledger), seq: partition.seq, hash: partition.hash };
            let index = pg_sys::index_open(probe.index.index, pg_sys::AccessShareLock as i32);
            let head = scan_head(layout, &probe, relation, index, snapshot, chain_datum, min_seq);
            pg_sys::index_close(index, pg_sys::AccessShareLock as i32);
            head
        } else {
            None
        };
        if !own {
            pg_sys::relation_close(relation, pg_sys::AccessShareLock as i32);
        }
        if let Some((seq, hash)) = head {
            return Some((position, seq, hash));
        }
    }
    None
}

/// The first record of a backward scan of the head index: the chain's highest seq (at least
/// `min_seq`, when given) that `snapshot` sees.
unsafe fn scan_head(
    layout: &Layout,
    probe: &Probe,
    heap: pg_sys::Relation,
    index: pg_sys::Relation,
    snapshot: pg_sys::Snapshot,
    chain_datum: Option<Datum>,
    min_seq: Option<i64>,
) -> Option<(i64, Digest)> {
    let head_index = probe.index;
    let mut keys: [pg_sys::ScanKeyData; 2] = std::mem::zeroed();
    let mut nkeys = 0;
    if let Some(datum) = chain_datum {
        pg_sys::ScanKeyEntryInitialize(
            &mut keys[0],
            0,
            1,
            pg_sys::BTEqualStrategyNumber as u16,
            pg_sys::InvalidOid,
            head_index.chain_collation,
            head_index.chain_equality,
            datum,
        );
        nkeys = 1;
    }
    if let Some(min_seq) = min_seq {
        pg_sys::ScanKeyEntryInitialize(
            &mut keys[nkeys],
            0,
            nkeys as i16 + 1,
            pg_sys::BTGreaterEqualStrategyNumber as u16,
            pg_sys::InvalidOid,
            pg_sys::InvalidOid,
            pg_sys::Oid::from(pg_sys::F_INT8GE),
            Datum::from(min_seq),
        );
        nkeys += 1;
    }
    let scan = begin_index_scan(heap, index, snapshot, nkeys as i32);
    pg_sys::index_rescan(scan, keys.as_mut_ptr(), nkeys as i32, std::ptr::null_mut(), 0);
    let slot = pg_sys::table_slot_create(heap, std::ptr::null_mut());
    let head = if pg_sys::index_getnext_slot(scan, pg_sys::ScanDirection::BackwardScanDirection, slot) {
        let last = probe.seq.max(probe.hash) + 1;
        pg_sys::slot_getsomeattrs_int(slot, last as i32);
        let values = std::slice::from_raw_parts((*slot).tts_values, last);
        let nulls = std::slice::from_raw_parts((*slot).tts_isnull, last);
        if nulls[probe.seq] || nulls[probe.hash] {
            raise(corrupt_head(layout, "a null seq or hash"));
        }
        let hash = parse_hex(text_datum_to_str(values[probe.hash]).trim_end_matches(' '), "hash")
            .unwrap_or_else(|_| raise(corrupt_head(layout, "a malformed hash")));
        Some((values[probe.seq].value() as i64, hash))
    } else {
        None
    };
    pg_sys::ExecDropSingleTupleTableSlot(slot);
    pg_sys::index_endscan(scan);
    head
}

#[cfg(not(feature = "pg18"))]
pub unsafe fn begin_index_scan(
    heap: pg_sys::Relation,
    index: pg_sys::Relation,
    snapshot: pg_sys::Snapshot,
    nkeys: i32,
) -> pg_sys::IndexScanDesc {
    pg_sys::index_beginscan(heap, index, snapshot, nkeys, 0)
}

/// PostgreSQL 18 added an instrumentation argument.
#[cfg(feature = "pg18")]
pub unsafe fn begin_index_scan(
    heap: pg_sys::Relation,
    index: pg_sys::Relation,
    snapshot: pg_sys::Snapshot,
    nkeys: i32,
) -> pg_sys::IndexScanDesc {
    pg_sys::index_beginscan(heap, index, snapshot, std::ptr::null_mut(), nkeys, 0)
}

fn corrupt_head(layout: &Layout, what: &str) -> LedgerError {
    LedgerError::new(SqlState::DataCorrupted, format!("the chain head of ledger {} has {what}", layout.qualified_name))
        .hint("Run ledger.verify() on the table to find the tampered records.")
}

/// What the other modules keep for one transaction, dropped when it ends however it ends.
fn forget_transaction() {
    crate::conflict::forget();
    crate::history::forget();
    crate::lifecycle::forget_owner();
}

/// Registered in _PG_init.
#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    match event {
        pg_sys::XactEvent::XACT_EVENT_PRE_COMMIT => {
            check_dense();
            claim_shared_heads();
        }
        pg_sys::XactEvent::XACT_EVENT_PRE_PREPARE => check_dense(),
        pg_sys::XactEvent::XACT_EVENT_COMMIT => {
            let state = STATE.with(|s| s.take());
            count_appends(&state);
            publish_heads(&state);
            remember_heads(state);
            forget_transaction();
        }
        pg_sys::XactEvent::XACT_EVENT_PREPARE | pg_sys::XactEvent::XACT_EVENT_PARALLEL_COMMIT => {
            // A prepared transaction keeps its chain locks and commits (or not) in another session.
            forget_shared_heads(&STATE.with(|s| s.take()));
            STORED_APPENDS.with(|s| s.take());
            forget_transaction();
        }
        pg_sys::XactEvent::XACT_EVENT_ABORT | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT => {
            forget_shared_heads(&STATE.with(|s| s.take()));
            STORED_APPENDS.with(|s| s.take());
            forget_transaction();
            // A failed ledger.enable may have cached the layout of a table that is not a ledger.
            crate::layout::forget_all();
        }
        _ => {}
    }
}

/// Registered in _PG_init.
#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    _my: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    let level = pg_sys::GetCurrentTransactionNestLevel();
    STATE.with(|s| match event {
        pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB => {
            // Whatever failed may have been an append that a stale entry misplaced.
            forget_shared_heads(&s.borrow());
            s.borrow_mut().roll_back_to(level)
        }
        pg_sys::SubXactEvent::SUBXACT_EVENT_COMMIT_SUB => s.borrow_mut().merge_into_parent(level),
        _ => {}
    });
}

/// Before commit, when the transaction may have dropped rows (it ran INSERT ... ON CONFLICT DO
/// NOTHING): every chain it appended more than one record to must hold all of them, or a row
/// dropped after chaining would leave a hole. When appends are counted, every chain's stored
/// records are counted, so the counter gets the appends that were stored.
unsafe fn check_dense() {
    if !crate::conflict::skipping_inserts() {
        return;
    }
    let exact = crate::metrics::available();
    let spans: Vec<(Oid, Option<Datum>, i64, i64)> = STATE.with(|s| {
        s.borrow()
            .heads
            .iter()
            .flat_map(|(relid, chains)| chains.values().map(move |h| (*relid, h.chain_datum, h.first_seq, h.seq)))
            .filter(|(_, _, first, last)| last > first || exact)
            .collect()
    });
    if spans.is_empty() {
        return;
    }
    let mut stored: HashMap<Oid, i64> = HashMap::new();
    // Portals are closed by PRE_COMMIT, taking their snapshots with them.
    pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    // As the extension's owner: a role may append to a ledger it cannot read.
    crate::lifecycle::as_extension_owner(|| {
        for (relid, chain_datum, first, last) in spans {
            let layout = crate::layout::for_relation(relid);
            let filter = match &layout.chain {
                Some(c) => format!("{} = $3 AND", crate::layout::quote_ident(&c.name)),
                None => String::new(),
            };
            let query = format!(
                "SELECT count(*) FILTER (WHERE seq < $2), count(*) FILTER (WHERE seq = $2) FROM {} \
                 WHERE {filter} seq >= $1 AND seq <= $2",
                layout.records()
            );
            let mut args: Vec<pgrx::datum::DatumWithOid> = vec![first.into(), last.into()];
            if let (Some(c), Some(d)) = (&layout.chain, chain_datum) {
                args.push(pgrx::datum::DatumWithOid::new(d, c.type_oid));
            }
            let (before_last, at_last) = pgrx::spi::Spi::connect(|client| {
                let row = client.select(&query, Some(1), &args)?.first().get_two::<i64, i64>()?;
                Ok::<_, pgrx::spi::Error>((row.0.unwrap_or(0), row.1.unwrap_or(0)))
            })
            .map_err(|e| LedgerError::new(SqlState::DataCorrupted, "cannot check the chain").detail(e.to_string()))
            .or_raise();
            if before_last != last - first {
                raise(
                LedgerError::new(SqlState::CheckViolation, format!("a row chained into ledger {} was not stored", layout.qualified_name))
                    .detail(format!(
                        "Seqs {first} to {} were chained in this transaction but only {before_last} of them are in the table; a later row links to a missing one.",
                        last - 1
                    ))
                    .hint("A row was dropped after it was chained: a concurrent transaction stored the same key between the ledger's check and the insert. Retry the transaction."),
            );
            }
            *stored.entry(relid).or_default() += before_last + at_last;
        }
    });
    pg_sys::PopActiveSnapshot();
    if exact {
        STORED_APPENDS.with(|s| *s.borrow_mut() = Some(stored));
    }
}
