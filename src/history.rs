//! History-tracked tables: an ordinary table stays writable, and every change appends a version to
//! its history ledger (an ordinary ledger of this extension, chained by the row's primary key), in
//! the same transaction. `ledger.verify` then checks the history's chains and that the table is the
//! replay of its history. The SQL side (registry, versions, `history`, `as_of`, the state check) is
//! sql/history.sql; here are enabling and the row trigger, which must know the acting role before
//! it appends as the extension's owner.

use crate::datum::select_one;
use crate::error::{raise, spi_error, OrRaise};
use crate::layout::{self, quote_ident};
use crate::lifecycle;
use ledger_core::{LedgerError, SqlState};
use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;
use pgrx::{PgRelation, PgTriggerOperation};
use std::cell::Cell;
use std::convert::Infallible;

thread_local! {
    /// Set while this module appends versions: a history ledger takes no other appends.
    static APPENDING_VERSIONS: Cell<bool> = const { Cell::new(false) };
}

/// Whether a version is being appended by the tracked table's trigger (or by enable_history).
pub fn appending_versions() -> bool {
    APPENDING_VERSIONS.with(|a| a.get())
}

/// Runs `f` with appends to history ledgers allowed. An error in `f` unwinds through here (pgrx
/// turns PostgreSQL errors into unwinding), which clears the flag too.
fn appending<T>(f: impl FnOnce() -> T) -> T {
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            APPENDING_VERSIONS.with(|a| a.set(false));
        }
    }
    APPENDING_VERSIONS.with(|a| a.set(true));
    let _clear = Clear;
    f()
}

/// The transaction ended (an error may have left the flag set).
pub fn forget() {
    APPENDING_VERSIONS.with(|a| a.set(false));
}

fn run(sql: &str, what: &str) {
    Spi::run(sql).map_err(|e| spi_error(what, e)).or_raise();
}

/// The primary-key columns of a table, in key order (empty without a primary key).
fn primary_key(relid: Oid) -> Vec<String> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT a.attname::text FROM pg_catalog.pg_index i \
             CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.n",
            None,
            &[relid.into()],
        )?;
        rows.into_iter().map(|r| r.get::<String>(1).map(Option::unwrap_or_default)).collect::<Result<Vec<_>, _>>()
    })
    .map_err(|e| spi_error("cannot read the primary key", e))
    .or_raise()
}

/// Whether the catalog has the registry of tracked tables: the library also serves the SQL of
/// releases before 0.3.0 until `ALTER EXTENSION ledger UPDATE`.
pub fn registry_exists() -> bool {
    select_one::<bool>("SELECT pg_catalog.to_regclass('ledger.tracked') IS NOT NULL", &[])
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// The history ledger of a tracked table, if it is one.
pub fn history_of(relid: Oid) -> Option<Oid> {
    if !registry_exists() {
        return None;
    }
    select_one::<Oid>("SELECT history::oid FROM ledger.tracked WHERE tbl = $1", &[relid.into()])
        .map_err(|e| spi_error("cannot read the registry of tracked tables", e))
        .or_raise()
}

/// The tracked table whose history ledger `relid` is, if it is one.
pub fn tracked_by_history(relid: Oid) -> Result<Option<Oid>, LedgerError> {
    if !registry_exists() {
        return Ok(None);
    }
    select_one::<Oid>("SELECT tbl::oid FROM ledger.tracked WHERE history = $1", &[relid.into()])
        .map_err(|e| spi_error("cannot read the registry of tracked tables", e))
}

/// Starts tracking `tbl`: creates its history ledger (by default `<table>_history` in the table's
/// schema), records every row already there as its first version, and from then on every change.
// Declared below, to return regclass.
#[pg_extern(sql = false)]
fn enable_history(tbl: Option<PgRelation>, history: Option<&str>) -> pg_sys::Oid {
    let tbl = crate::error::required(tbl, "tbl");
    crate::datum::require_utf8_database();
    lifecycle::require_primary("track a table's history");
    let relid = tbl.oid();
    // SAFETY: an open relation's pg_class row.
    let (relkind, namespace) =
        unsafe { ((*(*tbl.as_ptr()).rd_rel).relkind as u8, (*(*tbl.as_ptr()).rd_rel).relnamespace) };
    drop(tbl);
    let name = layout::qualified_name(relid);
    lifecycle::require_owner(relid, &name, "track its history");
    let actor = lifecycle::current_role();
    run(&format!("LOCK TABLE ONLY {name} IN SHARE ROW EXCLUSIVE MODE"), "cannot lock the table");
    if relkind != pg_sys::RELKIND_RELATION {
        raise(
            LedgerError::new(SqlState::WrongObjectType, format!("{name} is not an ordinary table"))
                .detail("Only ordinary tables can have their history tracked."),
        );
    }
    if layout::registry_entry(relid).is_some() {
        raise(
            LedgerError::new(SqlState::WrongObjectType, format!("{name} is a ledger"))
                .detail("A ledger is append-only: its records are their own history."),
        );
    }
    if history_of(relid).is_some() {
        raise(LedgerError::new(SqlState::DuplicateObject, format!("the history of {name} is tracked already")));
    }
    let key = primary_key(relid);
    if key.is_empty() {
        raise(
            LedgerError::new(SqlState::InvalidTableDefinition, format!("table {name} has no primary key"))
                .detail("Each row's history is the chain of its primary-key value.")
                .hint("Add a primary key first."),
        );
    }
    // SAFETY: a catalog lookup of an existing namespace.
    let schema =
        unsafe { std::ffi::CStr::from_ptr(pg_sys::get_namespace_name(namespace)) }.to_string_lossy().into_owned();
    let table = name_of(relid);
    let history_name = match history {
        Some(h) if h.contains('.') => h.to_string(),
        Some(h) => format!("{}.{}", quote_ident(&schema), quote_ident(h)),
        None => format!("{}.{}", quote_ident(&schema), quote_ident(&format!("{table}_history"))),
    };

    // The history is created by the table's owner, as any ledger of theirs, and made a ledger.
    run(
        &format!(
            "CREATE TABLE {history_name} (\
               vid uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(), \
               key text NOT NULL, \
               op text NOT NULL CHECK (op IN ('insert', 'update', 'delete')), \
               at timestamptz NOT NULL, \
               role text NOT NULL, \
               txid bigint NOT NULL, \
               \"row\" jsonb, \
               CHECK ((op = 'delete') = (\"row\" IS NULL)))"
        ),
        "cannot create the history table",
    );
    let history_oid = select_one::<Oid>("SELECT $1::regclass::oid", &[history_name.as_str().into()])
        .map_err(|e| spi_error("cannot find the history table", e))
        .or_raise()
        .expect("the table just created");
    run(
        &format!("SELECT ledger.enable({}::regclass, chain_by => 'key')", literal(&history_name)),
        "cannot make the history a ledger",
    );
    run(
        &format!(
            "COMMENT ON TABLE {history_name} IS {}",
            literal(&format!("the history of {name}: one chain of versions per primary key"))
        ),
        "cannot comment on the history table",
    );

    lifecycle::as_extension_owner(|| {
        Spi::run_with_args(
            "INSERT INTO ledger.tracked (tbl, history, key_columns, enabled_by) VALUES ($1, $2, $3::name[], $4)",
            &[relid.into(), history_oid.into(), key.clone().into(), actor.as_str().into()],
        )
        .map_err(|e| spi_error(&format!("cannot register {name} as tracked"), e))
        .or_raise();
        // Rows already in the table are their first versions, in primary-key order.
        let order = key.iter().map(|k| format!("t.{}", quote_ident(k))).collect::<Vec<_>>().join(", ");
        // The registry names the history now: its appends must come from here from now on.
        // SAFETY: invalidating a relation's cache entries (here and in other sessions).
        unsafe { pg_sys::CacheInvalidateRelcacheByRelid(history_oid) };
        layout::forget(history_oid);
        appending(|| {
            Spi::run_with_args(
                &format!(
                    "INSERT INTO {history_name} (key, op, at, role, txid, \"row\") \
                 SELECT ledger.version_key(to_jsonb(t), $1::name[]), 'insert', now(), $2, txid_current(), to_jsonb(t) \
                 FROM ONLY {name} t ORDER BY {order}"
                ),
                &[key.clone().into(), actor.as_str().into()],
            )
            .map_err(|e| spi_error("cannot record the rows already in the table", e))
            .or_raise()
        });
    });

    run(
        &format!(
            "CREATE TRIGGER zz_ledger_history AFTER INSERT OR UPDATE OR DELETE ON {name} \
             FOR EACH ROW EXECUTE FUNCTION ledger.record_version()"
        ),
        "cannot create the history trigger",
    );
    run(
        &format!(
            "CREATE TRIGGER ledger_history_truncate BEFORE TRUNCATE ON {name} \
             FOR EACH STATEMENT EXECUTE FUNCTION ledger.record_version()"
        ),
        "cannot create the history trigger",
    );
    for trigger in ["zz_ledger_history", "ledger_history_truncate"] {
        run(&format!("ALTER TABLE ONLY {name} ENABLE ALWAYS TRIGGER {trigger}"), "cannot enable the history trigger");
    }
    let definition = lifecycle::current_definition(relid);
    lifecycle::as_extension_owner(|| {
        Spi::run_with_args(
            "UPDATE ledger.tracked SET definition = $2 WHERE tbl = $1",
            &[relid.into(), definition.as_str().into()],
        )
        .map_err(|e| spi_error("cannot register the table's definition", e))
        .or_raise();
    });
    history_oid
}

/// A string as an SQL literal (standard_conforming_strings, PostgreSQL's default since 9.1).
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

extension_sql!(
    r#"
CREATE FUNCTION ledger.enable_history(tbl regclass, history text DEFAULT NULL) RETURNS regclass
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'enable_history_wrapper';
COMMENT ON FUNCTION ledger.enable_history(regclass, text) IS 'keeps every version of a table''s rows in a history ledger, one chain per primary key';
"#,
    name = "enable_history",
    requires = ["history"]
);

fn name_of(relid: Oid) -> String {
    // SAFETY: a catalog lookup of an existing relation.
    unsafe { std::ffi::CStr::from_ptr(pg_sys::get_rel_name(relid)) }.to_string_lossy().into_owned()
}

/// The row trigger of a tracked table: appends the change's versions to its history, as the
/// extension's owner, naming the role that made the change. Refuses TRUNCATE, which would remove
/// rows without a version.
#[pg_trigger]
fn record_version<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByPostgres>>, Infallible> {
    let data = trigger.trigger_data();
    // SAFETY: PostgreSQL hands a trigger a valid relation, and a row trigger its rows.
    unsafe {
        let rel = data.tg_relation;
        let relid = (*rel).rd_id;
        let op = match trigger.op() {
            Ok(PgTriggerOperation::Insert) => "insert",
            Ok(PgTriggerOperation::Update) => "update",
            Ok(PgTriggerOperation::Delete) => "delete",
            _ => raise(
                LedgerError::new(
                    SqlState::RestrictViolation,
                    format!("TRUNCATE is not allowed on history-tracked table {}", layout::qualified_name(relid)),
                )
                .detail("It would remove rows without recording a version of their deletion.")
                .hint("DELETE the rows: each deletion is recorded."),
            ),
        };
        let actor = std::ffi::CStr::from_ptr(pg_sys::GetUserNameFromId(pg_sys::GetUserId(), false))
            .to_string_lossy()
            .into_owned();
        let tupdesc = (*rel).rd_att;
        let row_type = (*(*rel).rd_rel).reltype;
        let as_datum = |tuple: *mut pg_sys::HeapTupleData| {
            (!tuple.is_null())
                .then(|| pgrx::datum::DatumWithOid::new(pg_sys::heap_copy_tuple_as_datum(tuple, tupdesc), row_type))
        };
        let (old_row, new_row) = match op {
            "insert" => (None, as_datum(data.tg_trigtuple)),
            "update" => (as_datum(data.tg_trigtuple), as_datum(data.tg_newtuple)),
            _ => (as_datum(data.tg_trigtuple), None),
        };
        let null_row = || pgrx::datum::DatumWithOid::null_oid(row_type);
        lifecycle::as_extension_owner(|| {
            appending(|| {
                Spi::run_with_args(
                    "SELECT ledger.append_version($1, $2, $3, pg_catalog.to_jsonb($4), pg_catalog.to_jsonb($5))",
                    &[
                        relid.into(),
                        op.into(),
                        actor.as_str().into(),
                        old_row.unwrap_or_else(null_row),
                        new_row.unwrap_or_else(null_row),
                    ],
                )
                .map_err(|e| spi_error("cannot record the version", e))
                .or_raise();
            })
        });
    }
    Ok(None)
}

/// What `ledger.verify` reports of a tracked table: a change of the table's definition, the
/// problems of its history ledger, then every key where the table is not the replay of its history
/// (`state_mismatch`, `state_missing`, `state_unrecorded`).
pub fn verify_tracked(relid: Oid, history: Oid, chain: Option<&str>) -> crate::verify::Findings {
    lifecycle::require_select(history);
    let mut findings = crate::verify::Findings::new();
    let registered = select_one::<String>("SELECT definition FROM ledger.tracked WHERE tbl = $1", &[relid.into()])
        .map_err(|e| spi_error("cannot read the registry of tracked tables", e))
        .or_raise();
    if let Some(registered) = registered {
        if let Some(changes) = ledger_core::definition::differences(&registered, &lifecycle::current_definition(relid))
        {
            findings.push((None, None, "definition_changed".into(), format!("since tracking began: {changes}")));
        }
    }
    // SAFETY: the history table exists (the registry names it); verification takes no lock beyond a read.
    let history_rel = unsafe { PgRelation::with_lock(history, pg_sys::AccessShareLock as i32) };
    findings.extend(crate::verify::verify_ledger(&history_rel, chain).findings);
    drop(history_rel);
    let state = lifecycle::as_extension_owner(|| {
        Spi::connect(|client| {
            let rows = client.select(
                "SELECT key, seq, problem, detail FROM ledger.state_problems($1) WHERE $2::text IS NULL OR key = $2",
                None,
                &[relid.into(), chain.into()],
            )?;
            rows.into_iter()
                .map(|r| {
                    Ok((
                        r.get::<String>(1)?,
                        r.get::<i64>(2)?,
                        r.get::<String>(3)?.unwrap_or_default(),
                        r.get::<String>(4)?.unwrap_or_default(),
                    ))
                })
                .collect::<Result<Vec<_>, pgrx::spi::Error>>()
        })
        .map_err(|e| spi_error("cannot compare the table with its history", e))
        .or_raise()
    });
    findings.extend(state);
    findings
}
