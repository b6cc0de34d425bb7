//! The jobs a DBA schedules: `ledger.verify_all`, which verifies every ledger and its newest
//! checkpoints and records each run in `ledger.verify_runs` (itself a ledger), and
//! `ledger.checkpoint_all`, which checkpoints every chain that grew since its last checkpoint.

use crate::checkpoint::{self, CheckpointRow};
use crate::error::{spi_error, OrRaise};
use crate::layout;
use crate::lifecycle;
use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;
use pgrx::PgRelation;

/// The extension's checkpoint ledger: checkpointing it records a checkpoint in it, so it is done
/// last and only when it holds checkpoints of other ledgers that no checkpoint of it covers yet.
const CHECKPOINTS: &str = "ledger.checkpoints";

/// The registered ledgers of this database that the current role may read, by name; the rest are
/// skipped (a scheduled job runs as one role, which sees what it is granted).
fn readable_ledgers(only_active: bool) -> Vec<(Oid, String)> {
    let query = format!(
        "SELECT l.tbl::oid, pg_catalog.format('%I.%I', n.nspname, c.relname) \
           FROM ledger.ledgers l JOIN pg_catalog.pg_class c ON c.oid = l.tbl \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
          WHERE pg_catalog.has_table_privilege(l.tbl, 'SELECT') {} ORDER BY 2",
        if only_active { "AND l.retired_at IS NULL" } else { "" }
    );
    Spi::connect(|client| {
        client
            .select(query.as_str(), None, &[])?
            .map(|row| {
                Ok((row.get::<Oid>(1)?.unwrap_or(pg_sys::InvalidOid), row.get::<String>(2)?.unwrap_or_default()))
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
    .map_err(|e| spi_error("cannot read the ledger registry", e))
    .or_raise()
}

fn clock() -> TimestampWithTimeZone {
    // SAFETY: reads the clock.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    TimestampWithTimeZone::try_from(now).expect("the current time is a valid timestamptz")
}

type RunRow = (String, i64, i64, i64, i64, i64, TimestampWithTimeZone, TimestampWithTimeZone);

/// Verifies every ledger the caller can read and checks the newest checkpoint of each of its
/// chains; each ledger's run is appended to `ledger.verify_runs`, which `ledger.stats` reads.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)] // pgrx reads the column names from the signature itself
fn verify_all() -> TableIterator<
    'static,
    (
        name!(ledger, String),
        name!(chains, i64),
        name!(records, i64),
        name!(problems, i64),
        name!(checkpoints_checked, i64),
        name!(checkpoint_failures, i64),
        name!(started_at, TimestampWithTimeZone),
        name!(finished_at, TimestampWithTimeZone),
    ),
> {
    lifecycle::require_primary("record verification runs");
    let actor = lifecycle::current_role();
    let run = Spi::get_one::<pgrx::Uuid>("SELECT pg_catalog.gen_random_uuid()")
        .map_err(|e| spi_error("cannot make a run id", e))
        .or_raise()
        .expect("a uuid");
    let mut rows: Vec<RunRow> = Vec::new();
    for (relid, name) in readable_ledgers(false) {
        let started = clock();
        // One ledger that cannot be read to the end (a superuser's damage to its storage, say) is
        // recorded as a failed run with the error, and the others are still verified.
        let outcome = in_subtransaction(|| verify_one(relid, &name));
        let (verified, error) = match outcome {
            Ok(counts) => (counts, None),
            Err(message) => (RunCounts { problems: 1, ..RunCounts::default() }, Some(message)),
        };
        let row = (
            name,
            verified.chains,
            verified.records,
            verified.problems,
            verified.checked,
            verified.failures,
            started,
            clock(),
        );
        record_run(run, &row, &actor, error.as_deref());
        rows.push(row);
    }
    TableIterator::new(rows)
}

#[derive(Default)]
struct RunCounts {
    chains: i64,
    records: i64,
    problems: i64,
    checked: i64,
    failures: i64,
}

/// Verifies one ledger and the newest checkpoint of each of its chains.
fn verify_one(relid: Oid, name: &str) -> RunCounts {
    // SAFETY: a registered table the caller may read; locked like any SELECT would.
    let relation = unsafe { PgRelation::with_lock(relid, pg_sys::AccessShareLock as i32) };
    let verified = crate::verify::verify_ledger(&relation, None);
    drop(relation);
    // A history ledger counts the problems of its table's state too (a change behind the trigger).
    let state_problems = match layout::try_for_relation(relid).ok().and_then(|l| l.history_of) {
        Some(tracked) => crate::history::state_findings(tracked, None).len() as i64,
        None => 0,
    };
    let mut counts = RunCounts {
        chains: verified.chains,
        records: verified.records,
        problems: verified.findings.len() as i64 + state_problems,
        ..RunCounts::default()
    };
    if let Ok(layout) = layout::try_for_relation(relid) {
        for chain in checkpoint::every_chain(&layout) {
            let chain = crate::verify::canonical_chain_text(&layout, chain.as_deref());
            if let Some((cid, _)) = checkpoint::newest_checkpoint(name, chain.as_deref()) {
                counts.checked += 1;
                let checks = lifecycle::as_extension_owner(|| checkpoint::checkpoint_checks(cid));
                if checks.iter().any(|(_, ok, _)| *ok == Some(false)) {
                    counts.failures += 1;
                }
            }
        }
    }
    counts
}

/// Errors about the run rather than one ledger, raised again: a read-only transaction (class 25),
/// a serialization failure or deadlock (40: the whole transaction must be retried), resources
/// running out (53), a cancel or shutdown (57), a system error (58).
fn stops_the_run(code: PgSqlErrorCode) -> bool {
    let code = code as i32;
    let class = [(code & 0x3F) as u8 + b'0', ((code >> 6) & 0x3F) as u8 + b'0'];
    matches!(&class, b"25" | b"40" | b"53" | b"57" | b"58")
}

/// Runs `f` in a subtransaction, as a PL/pgSQL block with an EXCEPTION clause does: an error about
/// the ledger rolls back what `f` did and comes back as its message; one that [`stops_the_run`] is
/// raised again once the subtransaction is rolled back.
pub fn in_subtransaction<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    use pg_sys::panic::CaughtError;
    // SAFETY: the begin/release/rollback sequence PL/pgSQL uses for exception blocks, restoring the
    // caller's memory context and resource owner after each.
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(context);
        let result =
            PgTryBuilder::new(std::panic::AssertUnwindSafe(|| Ok(f()))).catch_others(|e| Err(Box::new(e))).execute();
        match result {
            Ok(_) => pg_sys::ReleaseCurrentSubTransaction(),
            Err(_) => pg_sys::RollbackAndReleaseCurrentSubTransaction(),
        }
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
        result.map_err(|e| match *e {
            CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) | CaughtError::RustPanic { ereport: r, .. }
                if !stops_the_run(r.sql_error_code()) =>
            {
                r.message().to_string()
            }
            stop => stop.rethrow(),
        })
    }
}

fn record_run(run: pgrx::Uuid, row: &RunRow, actor: &str, error: Option<&str>) {
    let (ledger, chains, records, problems, checked, failures, started, finished) = row;
    lifecycle::as_extension_owner(|| {
        Spi::run_with_args(
            "INSERT INTO ledger.verify_runs (run, ledger, started_at, finished_at, chains, records, problems, \
             checkpoints_checked, checkpoint_failures, actor, error) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                run.into(),
                ledger.as_str().into(),
                (*started).into(),
                (*finished).into(),
                (*chains).into(),
                (*records).into(),
                (*problems).into(),
                (*checked).into(),
                (*failures).into(),
                actor.into(),
                error.into(),
            ],
        )
    })
    .map_err(|e| spi_error("cannot record the verification run in ledger.verify_runs", e))
    .or_raise();
}

/// A checkpoint of every chain, of every active ledger the caller can read, that grew since its
/// last checkpoint. A ledger that cannot be checkpointed gets a WARNING and the others go on.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn checkpoint_all() -> SetOfIterator<'static, pgrx::composite_type!('static, "checkpoints")> {
    lifecycle::require_primary("checkpoint ledgers");
    let mut ledgers = readable_ledgers(true);
    // Last, so that it covers the checkpoints made before it.
    ledgers.sort_by_key(|(_, name)| name == CHECKPOINTS);
    let mut made: Vec<pgrx::Uuid> = Vec::new();
    for (relid, name) in ledgers {
        // Only the checkpoints' ids leave the subtransaction: its rows are read again after it.
        let checkpointed = in_subtransaction(|| {
            let layout = layout::for_relation(relid);
            let grown = |chain: Option<&str>| {
                let covered = checkpoint::newest_checkpoint(&name, chain).map_or(0, |(_, size)| size);
                if name == CHECKPOINTS {
                    others_since(covered)
                } else {
                    checkpoint::head_of(&layout, chain) > covered
                }
            };
            checkpoint::checkpoint_every_chain(&layout, grown)
                .iter()
                .filter_map(|row| row.get_by_name::<pgrx::Uuid>("cid").ok().flatten())
                .collect::<Vec<_>>()
        });
        // A ledger that cannot be checkpointed (records missing, say) is left for verify_all to
        // report; the others are still checkpointed.
        match checkpointed {
            Ok(cids) => made.extend(cids),
            Err(message) => pgrx::warning!("ledger {name} was not checkpointed: {message}"),
        }
    }
    SetOfIterator::new(checkpoint_rows(&made))
}

/// The rows of the checkpoints `cids`, in the order they were made.
fn checkpoint_rows(cids: &[pgrx::Uuid]) -> Vec<CheckpointRow> {
    if cids.is_empty() {
        return Vec::new();
    }
    lifecycle::as_extension_owner(|| {
        Spi::connect(|client| {
            client
                .select(
                    "SELECT c FROM ledger.checkpoints c WHERE cid = ANY($1) ORDER BY seq",
                    None,
                    &[cids.to_vec().into()],
                )?
                .map(|row| row.get::<CheckpointRow>(1).map(|r| r.expect("a checkpoint row")))
                .collect::<Result<Vec<_>, _>>()
        })
    })
    .map_err(|e| spi_error("cannot read the checkpoints made", e))
    .or_raise()
}

/// Whether ledger.checkpoints holds, past its first `covered` records, a checkpoint of another
/// ledger: its own checkpoints alone are no reason for another one.
fn others_since(covered: i64) -> bool {
    // Read-write, so that it takes a snapshot that sees the checkpoints this call just made.
    lifecycle::as_extension_owner(|| {
        Spi::connect_mut(|client| {
            client
                .update(
                    "SELECT EXISTS (SELECT FROM ledger.checkpoints WHERE seq > $1 AND ledger <> $2)",
                    Some(1),
                    &[covered.into(), CHECKPOINTS.into()],
                )?
                .first()
                .get_one::<bool>()
        })
    })
    .map_err(|e| spi_error("cannot read ledger.checkpoints", e))
    .or_raise()
    .unwrap_or(false)
}
