//! Partitioned ledgers: a table partitioned by range on one column (usually a time) whose
//! partitions hold its records. Its chains continue from partition to partition in the order of
//! their bounds: appends refuse a record for a partition before the one holding its chain's head,
//! so the head lookup (head.rs) probes partitions from the last back and stops at the first that
//! holds the chain. PostgreSQL clones the row triggers to every partition, made now or later; the
//! TRUNCATE trigger, a statement trigger, it does not, so each partition gets its own here.
//!
//! The definition (sql/guard.sql) has a `partition` line per partition, with its bound and its
//! ledger triggers. The definition guard hands a change that only adds partitions to
//! `ledger.register_added_partitions`, which registers an empty, conforming partition (an `alter`
//! event); anything else (a partition detached, dropped, or with a trigger disabled) is a
//! definition change, refused for everyone but a superuser. `ledger.prune` deletes expired records
//! from their partitions and drops the partitions earlier prunes emptied.

use crate::datum::select_one;
use crate::error::{raise, spi_error, OrRaise};
use crate::layout;
use crate::lifecycle;
use ledger_core::definition;
use ledger_core::{LedgerError, SqlState};
use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;

/// The one ledger trigger PostgreSQL does not clone to partitions.
const TRUNCATE_TRIGGER: &str = "ledger_refuse_truncate";

thread_local! {
    /// Set while `guard_partition` creates a partition's trigger: the definition guard runs for
    /// that command too, and the registration belongs to the command that added the partition.
    static GUARDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Refuses a partitioned table that cannot be a ledger: only range partitioning on one plain
/// column gives partitions an order, and only ordinary tables as partitions hold records.
pub fn check_partitioning(relid: Oid, name: &str, ledger_columns: &[&str]) {
    let refuse = |detail: String| -> ! {
        raise(
            LedgerError::new(SqlState::FeatureNotSupported, format!("partitioned table {name} cannot be a ledger"))
                .detail(detail)
                .hint("Partition the ledger by range on one column, such as its time: PARTITION BY RANGE (at)."),
        )
    };
    let key = select_one::<String>(
        "SELECT CASE WHEN p.partstrat = 'r' AND p.partnatts = 1 AND p.partattrs[0] <> 0 THEN a.attname::text END \
         FROM pg_catalog.pg_partitioned_table p \
         LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0] \
         WHERE p.partrelid = $1",
        &[relid.into()],
    )
    .map_err(|e| spi_error("cannot read the partitioning", e))
    .or_raise();
    let Some(key) = key else {
        refuse("A partitioned ledger's chains continue from partition to partition in the order of their bounds, which needs range partitioning on one column.".into());
    };
    if ledger_columns.contains(&key.as_str()) {
        refuse(format!("It is partitioned by \"{key}\", which the ledger computes for each record."));
    }
    let (partitions, default) = layout::partitions_in_bound_order(relid);
    if let Some((partition, _)) = partitions.iter().find(|(_, leaf)| !leaf) {
        refuse(format!("Its partition {} is itself partitioned.", layout::qualified_name(*partition)));
    }
    if let Some(default) = default {
        let name = layout::qualified_name(default);
        if holds_rows(&name) {
            refuse(format!("Its default partition {name} holds rows, which have no place in the partitions' order: move them into partitions first."));
        }
    }
}

/// Whether the table `name` (quoted) itself holds a row its snapshot sees.
fn holds_rows(name: &str) -> bool {
    select_one::<bool>(&format!("SELECT EXISTS (SELECT FROM ONLY {name})"), &[])
        .map_err(|e| spi_error("cannot read a partition", e))
        .or_raise()
        .unwrap_or(false)
}

/// Gives a partition of a ledger the TRUNCATE trigger its partitioned table's does not reach.
pub fn guard_partition(partition: Oid) {
    let name = layout::qualified_name(partition);
    let exists = select_one::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_trigger WHERE tgrelid = $1 AND tgname = $2)",
        &[partition.into(), TRUNCATE_TRIGGER.into()],
    )
    .map_err(|e| spi_error("cannot read the partition's triggers", e))
    .or_raise()
    .unwrap_or(false);
    if exists {
        return;
    }
    GUARDING.with(|g| g.set(true));
    let _done = crate::error::OnDrop(|| GUARDING.with(|g| g.set(false)));
    lifecycle::as_extension_owner(|| {
        for statement in [
            format!(
                "CREATE TRIGGER {TRUNCATE_TRIGGER} BEFORE TRUNCATE ON {name} FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change()"
            ),
            // ENABLE ALWAYS: session_replication_role = replica must not switch it off.
            format!("ALTER TABLE ONLY {name} ENABLE ALWAYS TRIGGER {TRUNCATE_TRIGGER}"),
        ] {
            Spi::run(&statement).map_err(|e| spi_error("cannot guard the partition", e)).or_raise();
        }
    });
}

/// Called by the definition guard at the end of a DDL command that changed the definition of a
/// partitioned ledger. Returns false when the change is not only partitions added (the guard then
/// treats it as any other change); refuses a new partition that holds rows (a superuser's stands
/// unregistered); registers the new partitions and returns true otherwise.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn register_added_partitions(tbl: Oid, registered: &str, current: &str) -> bool {
    if GUARDING.with(|g| g.get()) {
        return true;
    }
    if !layout::is_partitioned(tbl) {
        return false;
    }
    let listed = |text: &str, partition: &str| text.lines().any(|l| l.starts_with(&format!("partition {partition} ")));
    let (partitions, default) = layout::partitions_in_bound_order(tbl);
    let added: Vec<(Oid, String)> = partitions
        .iter()
        .map(|(oid, _)| *oid)
        .chain(default)
        .map(|oid| (oid, layout::qualified_name(oid)))
        .filter(|(_, partition)| listed(current, partition) && !listed(registered, partition))
        .collect();
    if added.is_empty() {
        return false;
    }
    let name = layout::qualified_name(tbl);
    for (partition, _) in &added {
        let partition = *partition;
        if holds_rows(&layout::qualified_name(partition)) {
            // A superuser's attachment stands (as any change of theirs), and ledger.verify reports it.
            // SAFETY: reads the current role's catalog entry.
            if unsafe { pg_sys::superuser() } {
                return false;
            }
            crate::metrics::count_refusal(tbl, crate::metrics::Refusal::Ddl);
            raise(
                LedgerError::new(
                    SqlState::FeatureNotSupported,
                    format!("partition {} of ledger {name} holds rows", layout::qualified_name(partition)),
                )
                .detail("Rows attached with a partition would be in the ledger without having been chained.")
                .hint("Attach an empty table, then insert the rows through the ledger."),
            );
        }
        guard_partition(partition);
    }
    // What the definition is now that the new partitions carry every ledger trigger.
    let now = lifecycle::current_definition(tbl);
    if !definition::only_partitions_added(registered, &now) {
        return false;
    }
    let names: Vec<&str> = added.iter().map(|(_, partition)| partition.as_str()).collect();
    let reason = format!(
        "added partition(s) {}; the definition was {}",
        names.join(", "),
        definition::fingerprint_hex(registered)
    );
    lifecycle::register_definition_change(tbl, &name, &lifecycle::current_role(), &reason);
    true
}

/// Drops the partitions at the start of a partitioned ledger (in bound order) that hold no tuple at
/// all, live or dead: the partitions earlier prunes emptied, once VACUUM has removed what they
/// deleted. A partition that still holds a dead tuple may still be read by a snapshot from before
/// the prune that deleted it, which would then see neither its records nor their kept hashes; one
/// without any is read by nobody. Partitions after the first that holds a tuple stay (the future
/// ones made in advance, too). Returns the names of the dropped partitions; registers the new
/// definition (an `alter` event) when there are any.
pub fn drop_emptied_partitions(relid: Oid, name: &str, actor: &str) -> Vec<String> {
    let (partitions, _) = layout::partitions_in_bound_order(relid);
    let mut dropped = Vec::new();
    // The last partition always stays: a ledger keeps at least its newest records somewhere.
    for (partition, _) in partitions.iter().take(partitions.len().saturating_sub(1)) {
        // SAFETY: locks and scans a partition of the ledger; it is dropped under that lock, and
        // the lock is held to the end of the transaction.
        let empty = unsafe {
            let rel = pg_sys::relation_open(*partition, pg_sys::AccessExclusiveLock as i32);
            let scan = pg_sys::table_beginscan(rel, &raw mut pg_sys::SnapshotAnyData, 0, std::ptr::null_mut());
            let empty = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection).is_null();
            pg_sys::table_endscan(scan);
            pg_sys::relation_close(rel, pg_sys::NoLock as i32);
            empty
        };
        if !empty {
            break;
        }
        let partition_name = layout::qualified_name(*partition);
        // As the extension's owner, whom the definition guard lets drop a partition.
        lifecycle::as_extension_owner(|| {
            Spi::run(&format!("DROP TABLE {partition_name}"))
                .map_err(|e| spi_error("cannot drop an emptied partition", e))
                .or_raise()
        });
        dropped.push(partition_name);
    }
    if !dropped.is_empty() {
        let reason = format!("dropped partition(s) {}, emptied by ledger.prune", dropped.join(", "));
        lifecycle::register_definition_change(relid, name, actor, &reason);
    }
    dropped
}
