//! Retention: `ledger.set_retention` and `ledger.prune`. A prune deletes the oldest records of each
//! chain and keeps their hashes in `ledger.pruned` (itself a ledger), so every chain, checkpoint,
//! proof and digest verifies as before: `ledger.verify` starts a pruned chain after its last pruned
//! record, linked to its kept hash, and Merkle trees take the pruned leaves from the kept hashes.

use crate::checkpoint;
use crate::datum::{select_one, text_datum_to_str};
use crate::error::{raise, required, spi_error, OnDrop, OrRaise};
use crate::guc;
use crate::layout::{self, quote_ident, Layout};
use crate::lifecycle;
use crate::trigger::RecordScratch;
use crate::verify::{chain_condition, chain_key_of, StoredRecords};
use ledger_core::chain::Anchor;
use ledger_core::hash::{to_hex, Digest};
use ledger_core::{LedgerError, SqlState};
use pgrx::datum::{DatumWithOid, TimestampWithTimeZone};
use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;
use pgrx::PgRelation;
use std::cell::RefCell;
use std::collections::BTreeMap;

/// Records per row of `ledger.pruned`: 128 KiB of hashes, read whole when a tree needs any of them.
const RUN_LENGTH: i64 = 4096;

/// The runs of the ledger that has the name `$1` now: a dropped ledger's runs stay (ledger.pruned
/// is a ledger too), and a new ledger of the same name starts without them.
const THIS_LEDGER: &str =
    "ledger = $1 AND pruned_at >= (SELECT l.enabled_at FROM ledger.ledgers l WHERE l.tbl = pg_catalog.to_regclass($1))";

/// Whether the catalog has `ledger.pruned`: the library also serves the SQL of releases before
/// 0.5.0 until `ALTER EXTENSION ledger UPDATE`.
fn pruned_table_exists() -> bool {
    select_one::<bool>("SELECT pg_catalog.to_regclass('ledger.pruned') IS NOT NULL", &[])
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Whether any record of the ledger named `ledger` was ever pruned (read once per layout).
pub fn has_pruned(ledger: &str) -> bool {
    pruned_table_exists()
        && lifecycle::as_extension_owner(|| {
            select_one::<bool>(
                &format!("SELECT EXISTS (SELECT FROM ledger.pruned WHERE {THIS_LEDGER})"),
                &[ledger.into()],
            )
        })
        .map_err(|e| spi_error("cannot read ledger.pruned", e))
        .or_raise()
        .unwrap_or(false)
}

/// The chain condition on `ledger.pruned`'s `chain` (NULL for a single-chain ledger), as the
/// parameter `$n`.
fn pruned_chain_filter(chain: Option<&str>, n: usize) -> String {
    match chain {
        Some(_) => format!("chain = ${n}"),
        None => "chain IS NULL".to_string(),
    }
}

/// The pruned part of one chain, as `ledger.pruned` holds it.
pub struct PrunedChain {
    /// The chain's canonical text (None for a single-chain ledger).
    pub chain: Option<String>,
    pub anchor: Anchor,
    /// What is wrong with the kept hashes themselves: (first seq concerned, detail).
    pub gaps: Vec<(i64, String)>,
}

/// The pruned chains of a ledger (only `chain`, given as canonical text, when `only` is set).
pub fn pruned_chains(ledger: &str, only: Option<Option<&str>>) -> Vec<PrunedChain> {
    let filter = match only {
        None => String::new(),
        Some(chain) => format!("AND {}", pruned_chain_filter(chain, 2)),
    };
    let query = format!(
        "SELECT chain, first_seq, last_seq, octet_length(hashes)::bigint, \
                substring(hashes FROM greatest(octet_length(hashes) - 31, 1)) \
         FROM ledger.pruned WHERE {THIS_LEDGER} {filter} ORDER BY chain, first_seq"
    );
    let mut args: Vec<DatumWithOid> = vec![ledger.into()];
    if let Some(Some(chain)) = only {
        args.push(chain.into());
    }
    type Run = (i64, i64, i64, Vec<u8>);
    let runs: Vec<(Option<String>, Run)> = lifecycle::as_extension_owner(|| {
        Spi::connect(|client| {
            client
                .select(query.as_str(), None, &args)?
                .map(|row| {
                    Ok((
                        row.get::<String>(1)?,
                        (
                            row.get::<i64>(2)?.unwrap_or(0),
                            row.get::<i64>(3)?.unwrap_or(0),
                            row.get::<i64>(4)?.unwrap_or(0),
                            row.get::<Vec<u8>>(5)?.unwrap_or_default(),
                        ),
                    ))
                })
                .collect::<Result<Vec<_>, pgrx::spi::Error>>()
        })
    })
    .map_err(|e| spi_error("cannot read ledger.pruned", e))
    .or_raise();
    let mut chains: BTreeMap<Option<String>, PrunedChain> = BTreeMap::new();
    for (chain, (first, last, octets, tail)) in runs {
        let entry =
            chains.entry(chain.clone()).or_insert(PrunedChain { chain, anchor: Anchor::default(), gaps: Vec::new() });
        let expected = entry.anchor.pruned_through + 1;
        if first < 1 || last < first || octets != 32 * (last - first + 1) || tail.len() != 32 {
            entry.gaps.push((first, format!("the kept hashes of pruned seqs {first} to {last} are malformed")));
            continue;
        }
        if first > expected {
            entry.gaps.push((expected, format!("the hashes of pruned seqs {expected} to {} are missing", first - 1)));
        } else if first < expected {
            entry.gaps.push((first, format!("the kept hashes of pruned seqs {first} to {last} overlap others")));
        }
        if last > entry.anchor.pruned_through {
            entry.anchor = Anchor::pruned(last, <Digest>::try_from(tail.as_slice()).expect("32 octets"));
        }
    }
    chains.into_values().collect()
}

/// The kept hashes of the pruned seqs `from..` (up to `to`) of a chain (canonical text), and the
/// first seq after them: the records from there on are stored in the table.
pub fn pruned_hashes(ledger: &str, chain: Option<&str>, from: i64, to: i64) -> Result<(Vec<Digest>, i64), LedgerError> {
    let query = format!(
        "SELECT first_seq, last_seq, hashes FROM ledger.pruned \
         WHERE {THIS_LEDGER} AND {} AND last_seq >= $3 AND first_seq <= $4 ORDER BY first_seq",
        pruned_chain_filter(chain, 2)
    );
    let runs: Vec<(i64, i64, Vec<u8>)> = lifecycle::as_extension_owner(|| {
        Spi::connect(|client| {
            client
                .select(query.as_str(), None, &[ledger.into(), chain.into(), from.into(), to.into()])?
                .map(|row| {
                    Ok((
                        row.get::<i64>(1)?.unwrap_or(0),
                        row.get::<i64>(2)?.unwrap_or(0),
                        row.get::<Vec<u8>>(3)?.unwrap_or_default(),
                    ))
                })
                .collect::<Result<Vec<_>, pgrx::spi::Error>>()
        })
    })
    .map_err(|e| spi_error("cannot read ledger.pruned", e))?;
    let mut hashes = Vec::new();
    let mut next = from;
    let mut previous_last: Option<i64> = None;
    for (first, last, octets) in runs {
        let corrupt = |what: String| {
            LedgerError::new(SqlState::DataCorrupted, what)
                .detail(format!("In ledger.pruned, for ledger {ledger}."))
                .hint("Run ledger.verify() on the ledger and on ledger.pruned.")
        };
        if first > next {
            return Err(corrupt(format!(
                "the hashes of pruned records {next} to {} of the chain are missing",
                first - 1
            )));
        }
        if previous_last.is_some_and(|l| first <= l) || octets.len() as i64 != 32 * (last - first + 1) {
            return Err(corrupt(format!(
                "the kept hashes of pruned records {first} to {last} of the chain are malformed"
            )));
        }
        let end = last.min(to);
        let slice = &octets[((next - first) * 32) as usize..((end - first + 1) * 32) as usize];
        hashes.extend(slice.chunks_exact(32).map(|c| <Digest>::try_from(c).expect("32 octets")));
        next = end + 1;
        previous_last = Some(last);
    }
    Ok((hashes, next))
}

/// Where `seq` of a chain (canonical text) was pruned: the detail an answer that needs it gives.
pub fn pruned_detail(ledger: &str, chain: Option<&str>, seq: i64) -> Option<String> {
    let query = format!(
        "SELECT format('ledger.prune removed seqs %s to %s of the chain at %s (records older than %s); \
                only their hashes are kept, in ledger.pruned.', first_seq, last_seq, pruned_at, cutoff) \
         FROM ledger.pruned WHERE {THIS_LEDGER} AND {} AND first_seq <= $3 AND last_seq >= $3 LIMIT 1",
        pruned_chain_filter(chain, 2)
    );
    guc::with_settings(guc::CANONICAL_OUTPUT, || {
        lifecycle::as_extension_owner(|| select_one::<String>(&query, &[ledger.into(), chain.into(), seq.into()]))
    })
    .map_err(|e| spi_error("cannot read ledger.pruned", e))
    .or_raise()
}

/// The anchor of a chain (canonical text) whose stored records are all gone: where its next
/// record continues (a restored ledger's chain before its first kept record, or a chain a
/// superuser emptied). None when nothing of it was pruned.
pub fn anchor_of(layout: &Layout, chain: Option<&str>) -> Option<Anchor> {
    if !pruned_table_exists() {
        return None;
    }
    pruned_chains(&layout.qualified_name, Some(chain)).into_iter().next().map(|c| c.anchor)
}

/// The one deletion a ledger's trigger lets through: the records `first..=through` of one chain,
/// while `ledger.prune` deletes them.
struct Permit {
    relid: Oid,
    chain_key: Vec<u8>,
    first: i64,
    through: i64,
}

thread_local! {
    static PERMIT: RefCell<Option<Permit>> = const { RefCell::new(None) };
}

/// Whether `ledger.prune` is deleting this row of `relid` right now.
///
/// # Safety
/// `tuple` must be a row of `relid`, open as `rel`.
pub unsafe fn permits_delete(rel: pg_sys::Relation, tuple: pg_sys::HeapTuple) -> bool {
    if PERMIT.with(|p| p.borrow().is_none()) {
        return false;
    }
    // A partition's layout: its tuple's positions, and its ledger's relid.
    let layout = layout::for_relation((*rel).rd_id);
    if PERMIT.with(|p| p.borrow().as_ref().is_none_or(|permit| permit.relid != layout.relid)) {
        return false;
    }
    let tupdesc = (*rel).rd_att;
    let natts = (*tupdesc).natts as usize;
    let mut values = vec![pg_sys::Datum::from(0); natts];
    let mut nulls = vec![false; natts];
    pg_sys::heap_deform_tuple(tuple, tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr());
    if nulls[layout.seq] || layout.chain.as_ref().is_some_and(|c| nulls[c.index]) {
        return false;
    }
    let seq = values[layout.seq].value() as i64;
    let mut scratch = RecordScratch::default();
    scratch.chain_key(&layout, &values, &nulls);
    PERMIT.with(|p| {
        p.borrow()
            .as_ref()
            .is_some_and(|permit| permit.chain_key == scratch.chain_key && seq >= permit.first && seq <= permit.through)
    })
}

/// A ledger's retention as registered: the cutoff it gives now, the column, and the interval's text.
struct Retention {
    cutoff: TimestampWithTimeZone,
    cutoff_text: String,
    column: String,
    keep: String,
}

fn retention_of(relid: Oid) -> Option<Retention> {
    // Written as the audit chain writes times and intervals, whatever this session's settings.
    guc::with_settings(guc::CANONICAL_OUTPUT, || {
        Spi::connect(|client| -> Result<Option<Retention>, pgrx::spi::Error> {
            let rows = client.select(
                "SELECT now() - retention, (now() - retention)::text, retention_column::text, retention::text \
             FROM ledger.ledgers WHERE tbl = $1 AND retention IS NOT NULL",
                Some(1),
                &[relid.into()],
            )?;
            match rows.into_iter().next() {
                None => Ok(None),
                Some(row) => Ok(Some(Retention {
                    cutoff: row.get(1)?.expect("now() - an interval"),
                    cutoff_text: row.get(2)?.unwrap_or_default(),
                    column: row.get(3)?.unwrap_or_default(),
                    keep: row.get(4)?.unwrap_or_default(),
                })),
            }
        })
    })
    .map_err(|e| spi_error("cannot read the ledger registry", e))
    .or_raise()
}

/// The ledger a table's retention applies to: its history when it is history-tracked.
fn retained_ledger(tbl: &PgRelation, action: &str) -> (Oid, std::rc::Rc<Layout>) {
    let relid = crate::history::history_of(tbl.oid()).unwrap_or(tbl.oid());
    let layout = layout::for_relation(relid);
    // The extension's own ledgers: the audit chains record what happened to the others, and the
    // registry rows and events of ledger.records are made by CREATE EXTENSION, so a dump could not
    // carry a retention of it.
    lifecycle::refuse_own_ledger(
        &layout.qualified_name,
        "have a retention",
        Some("Keep records that age out in a ledger table of your own."),
    );
    lifecycle::require_owner(tbl.oid(), &layout::qualified_name(tbl.oid()), action);
    (relid, layout)
}

/// Sets how long a ledger keeps its records: those whose `by_column` is older than `keep` may be
/// removed by `ledger.prune`. NULLs keep them for ever. Shortening it (or setting a first one) takes
/// a superuser; the owner may lengthen it. Every change is an event in `ledger.events`.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn set_retention(
    tbl: Option<PgRelation>,
    keep: Option<pgrx::datum::Interval>,
    by_column: default!(Option<crate::datum::SqlName>, "NULL"),
) {
    let tbl = required(tbl, "tbl");
    lifecycle::require_primary("set the retention of a ledger");
    let (relid, layout) = retained_ledger(&tbl, "set its retention");
    drop(tbl);
    let name = layout.qualified_name.clone();
    let column = by_column.map(|c| c.0);
    if keep.is_some() != column.is_some() {
        raise(
            LedgerError::new(SqlState::NullValueNotAllowed, "a retention needs both keep and by_column")
                .hint("Pass keep => NULL, by_column => NULL to keep the records for ever."),
        );
    }
    if let (Some(keep), Some(column)) = (keep, &column) {
        let positive = select_one::<bool>("SELECT $1 > interval '0'", &[keep.into()]).ok().flatten().unwrap_or(false);
        if !positive {
            raise(LedgerError::new(SqlState::InvalidParameterValue, "keep must be a positive interval"));
        }
        let registered = layout.columns.iter().find(|c| &c.name == column);
        let type_name = registered.map(|c| c.column_type.name());
        if !matches!(type_name, Some("timestamptz" | "timestamp" | "date")) {
            raise(
                LedgerError::new(
                    SqlState::InvalidParameterValue,
                    format!("column \"{column}\" of ledger {name} cannot date its records"),
                )
                .detail(match type_name {
                    None => "It is not one of the ledger's hashed columns.".to_string(),
                    Some(t) => format!("It is of type {t}."),
                })
                .hint("Name a hashed column of type timestamptz, timestamp or date: an edit of it is then caught."),
            );
        }
    }
    let was = retention_text(relid);
    let lengthens = retention_lengthens(relid, keep, column.as_deref());
    // SAFETY: reads the current user's catalog entry.
    if !lengthens && !unsafe { pg_sys::superuser() } {
        raise(
            LedgerError::new(
                SqlState::InsufficientPrivilege,
                format!("only a superuser can shorten the retention of ledger {name}"),
            )
            .detail(format!(
                "Its records are kept {was}; the new retention would let ledger.prune remove some of them."
            ))
            .hint("The table's owner may lengthen the retention, or remove it."),
        );
    }
    let actor = lifecycle::current_role();
    lifecycle::as_extension_owner(|| {
        Spi::run_with_args(
            "UPDATE ledger.ledgers SET retention = $2, retention_column = $3 WHERE tbl = $1",
            &[relid.into(), keep.into(), column.as_deref().into()],
        )
        .map_err(|e| spi_error("cannot register the retention", e))
        .or_raise()
    });
    let now = retention_text(relid);
    let definition = lifecycle::current_definition(relid);
    lifecycle::as_extension_owner(|| {
        lifecycle::record_event(&name, "retention", &actor, &definition, Some(&format!("keep {now} (was: {was})")))
    });
}

/// The registered retention in words, for the audit chain: "P30D by created_at", or "for ever".
fn retention_text(relid: Oid) -> String {
    guc::with_settings(guc::CANONICAL_OUTPUT, || {
        select_one::<String>(
            "SELECT coalesce(retention::text || ' by ' || retention_column, 'for ever') FROM ledger.ledgers WHERE tbl = $1",
            &[relid.into()],
        )
    })
    .map_err(|e| spi_error("cannot read the ledger registry", e))
    .or_raise()
    .unwrap_or_default()
}

/// Whether the new retention keeps every record the registered one keeps: there was none before
/// and there is none now, or it was there and the new one is as long or longer, by the same column.
fn retention_lengthens(relid: Oid, keep: Option<pgrx::datum::Interval>, column: Option<&str>) -> bool {
    select_one::<bool>(
        "SELECT CASE WHEN $2::interval IS NULL THEN true \
                     WHEN retention IS NULL THEN false \
                     ELSE retention_column = $3 AND $2::interval >= retention END \
         FROM ledger.ledgers WHERE tbl = $1",
        &[relid.into(), keep.into(), column.into()],
    )
    .map_err(|e| spi_error("cannot read the ledger registry", e))
    .or_raise()
    .unwrap_or(false)
}

/// What to prune of one chain: its records `first..=through` (`first` right after its anchor).
struct ChainPrune {
    chain: Option<String>,
    anchor: Anchor,
    through: i64,
}

/// Removes, per chain, the oldest records older than the ledger's retention, up to (never
/// including) the chain's newest record, and only up to a checkpoint that covers them (made here if
/// needed). Their hashes are kept in `ledger.pruned`; the prune is an event in `ledger.events`.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn prune(
    tbl: Option<PgRelation>,
) -> TableIterator<'static, (name!(chain, Option<String>), name!(pruned, i64), name!(through_seq, i64))> {
    let tbl = required(tbl, "tbl");
    lifecycle::require_primary("prune a ledger");
    let (relid, _) = retained_ledger(&tbl, "prune it");
    drop(tbl);
    TableIterator::new(prune_ledger(relid))
}

/// `ledger.prune` of every ledger with a retention that the caller owns (the scheduled job). A
/// ledger that cannot be pruned (a record that does not verify, say) gets a WARNING and is left as
/// it is; the others are still pruned. One row per chain pruned.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn prune_all() -> TableIterator<
    'static,
    (name!(ledger, String), name!(chain, Option<String>), name!(pruned, i64), name!(through_seq, i64)),
> {
    lifecycle::require_primary("prune ledgers");
    let ledgers: Vec<(Oid, String)> = Spi::connect(|client| {
        client
            .select(
                "SELECT l.tbl::oid, pg_catalog.format('%I.%I', n.nspname, c.relname) \
                   FROM ledger.ledgers l JOIN pg_catalog.pg_class c ON c.oid = l.tbl \
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                  WHERE l.retention IS NOT NULL AND pg_catalog.pg_has_role(c.relowner, 'USAGE') ORDER BY 2",
                None,
                &[],
            )?
            .map(|row| {
                Ok((row.get::<Oid>(1)?.unwrap_or(pg_sys::InvalidOid), row.get::<String>(2)?.unwrap_or_default()))
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
    .map_err(|e| spi_error("cannot read the ledger registry", e))
    .or_raise();
    let mut out = Vec::new();
    for (relid, name) in ledgers {
        match crate::scheduled::in_subtransaction(|| prune_ledger(relid)) {
            Ok(rows) => {
                out.extend(rows.into_iter().map(|(chain, pruned, through)| (name.clone(), chain, pruned, through)))
            }
            Err(message) => pgrx::warning!("ledger {name} was not pruned: {message}"),
        }
    }
    TableIterator::new(out)
}

/// Prunes one ledger (the caller may): what `ledger.prune` returns.
fn prune_ledger(relid: Oid) -> Vec<(Option<String>, i64, i64)> {
    let name = layout::qualified_name(relid);
    let Some(retention) = retention_of(relid) else {
        raise(
            LedgerError::new(SqlState::ObjectNotInPrerequisiteState, format!("ledger {name} has no retention"))
                .detail("Its records are kept for ever.")
                .hint("A superuser sets one with ledger.set_retention(tbl, keep, by_column)."),
        );
    };
    let actor = lifecycle::current_role();
    let pruned_relid =
        select_one::<Oid>("SELECT 'ledger.pruned'::regclass::oid", &[]).ok().flatten().expect("installed");
    // One prune of a ledger at a time, so each starts where the previous one ended.
    // SAFETY: inside the caller's transaction.
    unsafe { crate::head::lock_chain(pruned_relid, format!("prune\n{name}").as_bytes()) };
    // Rows being skipped as conflicting with stored ones rely on those staying (src/conflict.rs).
    // SAFETY: as above.
    unsafe { crate::conflict::lock_out_skipping(relid) };
    // Under READ COMMITTED, read with a snapshot taken after the lock: it sees what the prune that
    // held the lock before did. (Under REPEATABLE READ this is the transaction's snapshot, and the
    // deletions fail with a serialization error if another prune got there first.)
    // SAFETY: pushed here, popped below; an error's abort pops it.
    unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
    // What earlier prunes emptied of a partitioned ledger goes whole.
    if layout::is_partitioned(relid) {
        crate::partition::drop_emptied_partitions(relid, &name, &actor);
    }
    // And with the layout read now: whether the ledger is pruned may have changed meanwhile.
    layout::forget(relid);
    let layout = layout::for_relation(relid);
    let plans = plan(&layout, &retention);
    // SAFETY: a registered ledger, locked for the deletions to come.
    let _locked = unsafe { PgRelation::with_lock(relid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE) };
    let mut out = Vec::new();
    for plan in plans {
        let hashes = verified_hashes(&layout, &plan);
        let checkpoint = covering_checkpoint(&layout, plan.chain.as_deref(), plan.through);
        keep_hashes(&name, &plan, &hashes, &retention, checkpoint, &actor);
        delete_records(&layout, &plan);
        out.push((plan.chain, plan.through - plan.anchor.pruned_through, plan.through));
    }
    // SAFETY: the snapshot pushed above.
    unsafe { pg_sys::PopActiveSnapshot() };
    if !out.is_empty() {
        let records: i64 = out.iter().map(|(_, n, _)| n).sum();
        let reason = format!(
            "pruned {records} records of {} chains older than {} (retention {} by {})",
            out.len(),
            retention.cutoff_text,
            retention.keep,
            retention.column
        );
        let definition = lifecycle::current_definition(relid);
        lifecycle::as_extension_owner(|| {
            Spi::run_with_args(
                "UPDATE ledger.ledgers SET pruned_before = greatest(pruned_before, $2) WHERE tbl = $1",
                &[relid.into(), retention.cutoff.into()],
            )
            .map_err(|e| spi_error("cannot register the prune", e))
            .or_raise();
            lifecycle::record_event(&name, "prune", &actor, &definition, Some(&reason))
        });
        // This session and others read the ledger's layout again: its chains now have anchors.
        layout::forget(relid);
        // SAFETY: queues a relcache invalidation for a table that exists (it is locked).
        unsafe { pg_sys::CacheInvalidateRelcacheByRelid(relid) };
    }
    out
}

/// The chains with records to prune: per chain, the records before its first one that is not
/// older than the cutoff (a NULL date is not older), never its newest, after what was pruned before.
/// A history keeps one more: each key's last version older than the cutoff is its state then, which
/// `ledger.as_of` needs for any time after the cutoff.
fn plan(layout: &Layout, retention: &Retention) -> Vec<ChainPrune> {
    let column = quote_ident(&retention.column);
    let t = layout.records();
    let (chain_expr, group) = match &layout.chain {
        Some(c) => (format!("{}::text", quote_ident(&c.name)), "GROUP BY 1".to_string()),
        None => ("NULL::text".to_string(), String::new()),
    };
    let query = format!(
        "SELECT {chain_expr}, max(seq), min(seq) FILTER (WHERE NOT ({column} < $1) OR {column} IS NULL) \
         FROM {t} {group}"
    );
    let candidates: Vec<(Option<String>, i64, Option<i64>)> = guc::with_settings(guc::CANONICAL_OUTPUT, || {
        lifecycle::as_extension_owner(|| {
            Spi::connect(|client| {
                client
                    .select(query.as_str(), None, &[retention.cutoff.into()])?
                    .map(|row| Ok((row.get::<String>(1)?, row.get::<i64>(2)?.unwrap_or(0), row.get::<i64>(3)?)))
                    .collect::<Result<Vec<_>, pgrx::spi::Error>>()
            })
        })
    })
    .map_err(|e| spi_error("cannot read the ledger's chains", e))
    .or_raise();
    let anchors: BTreeMap<Option<String>, Anchor> = if layout.pruned {
        pruned_chains(&layout.qualified_name, None).into_iter().map(|c| (c.chain, c.anchor)).collect()
    } else {
        BTreeMap::new()
    };
    let mut plans: Vec<ChainPrune> = candidates
        .into_iter()
        .filter(|(_, head, _)| *head > 0)
        .filter_map(|(chain, head, first_kept)| {
            let anchor = anchors.get(&chain).copied().unwrap_or_default();
            let last_expired = first_kept.map_or(head, |kept| kept - 1);
            let keep_state = i64::from(layout.history_of.is_some());
            let through = (last_expired - keep_state).min(head - 1);
            (through > anchor.pruned_through).then_some(ChainPrune { chain, anchor, through })
        })
        .collect();
    plans.sort_by(|a, b| a.chain.cmp(&b.chain));
    plans
}

/// The hashes of the records a prune removes, each recomputed from its values and linked to the
/// one before (the first to the chain's anchor): a record that does not verify is never pruned, or
/// its evidence would go with it.
fn verified_hashes(layout: &Layout, plan: &ChainPrune) -> Vec<Digest> {
    let (condition, chain_arg) = chain_condition(layout, plan.chain.as_deref(), 3).or_raise();
    let query = format!(
        "SELECT tableoid, ctid, seq FROM {} WHERE {condition} AND seq > $1 AND seq <= $2 ORDER BY seq",
        layout.records()
    );
    let args: Vec<DatumWithOid> =
        [plan.anchor.pruned_through.into(), plan.through.into()].into_iter().chain(chain_arg).collect();
    let refuse = |seq: i64, why: String| -> ! {
        raise(
            LedgerError::new(
                SqlState::DataCorrupted,
                format!("cannot prune ledger {}: record {seq} of the chain does not verify", layout.qualified_name),
            )
            .detail(why)
            .hint("Run ledger.verify() on the ledger: nothing was pruned."),
        )
    };
    let mut hashes = Vec::with_capacity((plan.through - plan.anchor.pruned_through) as usize);
    let mut previous = plan.anchor.last_pruned_hash;
    let mut expected = plan.anchor.pruned_through + 1;
    let mut scratch = RecordScratch::default();
    let mut records = StoredRecords::new();
    lifecycle::as_extension_owner(|| {
        Spi::connect(|client| {
            let mut cursor = client.open_cursor(query.as_str(), &args);
            loop {
                let batch = cursor.fetch(10_000)?;
                if batch.is_empty() {
                    break;
                }
                let mut batch = batch;
                while batch.next().is_some() {
                    let seq: i64 = batch.get(3)?.unwrap_or(0);
                    if seq != expected {
                        refuse(expected, format!("Seq {expected} is missing (found {seq})."));
                    }
                    let storage: pg_sys::Oid = batch.get(1)?.unwrap_or(layout.relid);
                    let tid = batch.get_datum_by_ordinal(2)?.expect("ctid is never null");
                    // SAFETY: a ctid the query just read from `storage`, a relation of this ledger.
                    unsafe {
                        let tid = *tid.cast_mut_ptr::<pg_sys::ItemPointerData>();
                        let (layout, stored) = records.fetch(storage, tid).expect("the row the query just saw");
                        let (computed, intact) = scratch.recompute(&layout, &stored.values, &stored.nulls);
                        if !intact {
                            refuse(seq, format!("Its values hash to {}, not to its stored hash.", to_hex(&computed)));
                        }
                        let stored_prev = (!stored.nulls[layout.prev_hash])
                            .then(|| text_datum_to_str(stored.values[layout.prev_hash]));
                        if stored_prev != previous.as_ref().map(to_hex).as_deref() {
                            refuse(seq, "Its prev_hash is not the previous record's hash.".to_string());
                        }
                        previous = Some(computed);
                    }
                    hashes.push(previous.expect("just set"));
                    expected += 1;
                }
            }
            Ok::<_, pgrx::spi::Error>(())
        })
    })
    .map_err(|e| spi_error("cannot read the records to prune", e))
    .or_raise();
    if expected <= plan.through {
        refuse(expected, format!("Seq {expected} is missing."));
    }
    hashes
}

/// A checkpoint of the chain that covers seq `through`: the newest one, or one made now.
fn covering_checkpoint(layout: &Layout, chain: Option<&str>, through: i64) -> pgrx::Uuid {
    let ledger = &layout.qualified_name;
    if let Some((cid, size)) = checkpoint::newest_checkpoint(ledger, chain) {
        // Checkpoints are kept by the ledger's name: one of a dropped ledger of this name covers
        // nothing of this one.
        let of_this_ledger = lifecycle::as_extension_owner(|| {
            select_one::<bool>(
                "SELECT c.created_at >= l.enabled_at FROM ledger.checkpoints c, ledger.ledgers l \
                 WHERE c.cid = $1 AND l.tbl = $2",
                &[cid.into(), layout.relid.into()],
            )
        })
        .map_err(|e| spi_error("cannot read the newest checkpoint", e))
        .or_raise()
        .unwrap_or(false);
        if size >= through && of_this_ledger {
            return cid;
        }
    }
    checkpoint::checkpoint_one_chain(layout, chain)
        .get_by_name::<pgrx::Uuid>("cid")
        .ok()
        .flatten()
        .expect("a checkpoint has a cid")
}

/// Appends the pruned hashes to `ledger.pruned`, in runs of at most [`RUN_LENGTH`] records.
fn keep_hashes(
    ledger: &str,
    plan: &ChainPrune,
    hashes: &[Digest],
    retention: &Retention,
    checkpoint: pgrx::Uuid,
    actor: &str,
) {
    lifecycle::as_extension_owner(|| {
        for (i, run) in hashes.chunks(RUN_LENGTH as usize).enumerate() {
            let first = plan.anchor.pruned_through + 1 + i as i64 * RUN_LENGTH;
            let last = first + run.len() as i64 - 1;
            Spi::run_with_args(
                "INSERT INTO ledger.pruned (ledger, chain, first_seq, last_seq, hashes, cutoff, checkpoint, actor) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    ledger.into(),
                    plan.chain.as_deref().into(),
                    first.into(),
                    last.into(),
                    run.concat().into(),
                    retention.cutoff.into(),
                    checkpoint.into(),
                    actor.into(),
                ],
            )
            .map_err(|e| spi_error("cannot keep the pruned hashes in ledger.pruned", e))
            .or_raise();
        }
    });
}

/// Deletes the planned records, under the one permit the ledger's trigger honours.
fn delete_records(layout: &Layout, plan: &ChainPrune) {
    let chain_key = chain_key_of(layout, plan.chain.as_deref()).unwrap_or_default();
    let first = plan.anchor.pruned_through + 1;
    PERMIT.with(|p| *p.borrow_mut() = Some(Permit { relid: layout.relid, chain_key, first, through: plan.through }));
    let _cleared = OnDrop(|| {
        PERMIT.with(|p| p.borrow_mut().take());
    });
    let (condition, chain_arg) = chain_condition(layout, plan.chain.as_deref(), 3).or_raise();
    let query = format!(
        "WITH gone AS (DELETE FROM {} WHERE {condition} AND seq >= $1 AND seq <= $2 RETURNING 1) \
         SELECT count(*) FROM gone",
        layout.records()
    );
    let args: Vec<DatumWithOid> = [first.into(), plan.through.into()].into_iter().chain(chain_arg).collect();
    let deleted = lifecycle::as_extension_owner(|| {
        Spi::connect_mut(|client| client.update(query.as_str(), Some(1), &args)?.first().get_one::<i64>())
    })
    .map_err(|e| spi_error("cannot delete the pruned records", e))
    .or_raise()
    .unwrap_or(0);
    if deleted != plan.through - first + 1 {
        raise(
            LedgerError::new(
                SqlState::SerializationFailure,
                format!("the records to prune of ledger {} changed while they were pruned", layout.qualified_name),
            )
            .detail(format!("{deleted} of seqs {first} to {} were deleted.", plan.through))
            .hint("Run ledger.prune() again."),
        );
    }
}

/// The hashes `ledger.prune` kept of a ledger's records, run by run, for whoever may read the
/// ledger (`ledger.pruned` itself is for auditors): what `ledger.export` writes of them.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn pruned_runs(
    tbl: Option<PgRelation>,
) -> TableIterator<
    'static,
    (name!(chain, Option<String>), name!(first_seq, i64), name!(last_seq, i64), name!(hashes, Vec<u8>)),
> {
    let tbl = required(tbl, "tbl");
    lifecycle::require_select(tbl.oid());
    let name = layout::qualified_name(tbl.oid());
    drop(tbl);
    if !pruned_table_exists() {
        return TableIterator::new(Vec::new());
    }
    let runs = lifecycle::as_extension_owner(|| {
        Spi::connect(|client| {
            client
                .select(
                    &format!(
                        "SELECT chain, first_seq, last_seq, hashes FROM ledger.pruned WHERE {THIS_LEDGER} \
                         ORDER BY chain COLLATE \"C\", first_seq"
                    ),
                    None,
                    &[name.as_str().into()],
                )?
                .map(|row| {
                    Ok((
                        row.get::<String>(1)?,
                        row.get::<i64>(2)?.unwrap_or(0),
                        row.get::<i64>(3)?.unwrap_or(0),
                        row.get::<Vec<u8>>(4)?.unwrap_or_default(),
                    ))
                })
                .collect::<Result<Vec<_>, pgrx::spi::Error>>()
        })
    })
    .map_err(|e| spi_error("cannot read ledger.pruned", e))
    .or_raise();
    TableIterator::new(runs)
}
