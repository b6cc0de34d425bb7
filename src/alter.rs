//! Schema changes of a ledger: `ALTER TABLE ... ADD COLUMN` by the table's owner. The definition
//! guard (sql/guard.sql) hands every change of a ledger's (or a tracked table's) definition that
//! only adds columns to `ledger.register_added_columns`, which refuses an addition old records
//! would read differently, and otherwise registers the columns: every record appended from then on
//! covers them where it has a value (docs/FORMAT.md, "Added columns"), records from before verify
//! unchanged, and the ledger's chain of `ledger.events` records the change. A tracked table's rows
//! are recorded again as they now read (history.rs).

use crate::datum::{column_type_of, select_one};
use crate::error::{raise, spi_error, OrRaise};
use crate::layout::{self, quote_ident};
use crate::lifecycle;
use ledger_core::canonical::ColumnType;
use ledger_core::definition;
use ledger_core::{LedgerError, SqlState};
use pgrx::pg_sys::Oid;
use pgrx::prelude::*;

/// A column of the table that the registry does not hash yet.
struct NewColumn {
    name: String,
    type_oid: Oid,
}

/// Called by the definition guard at the end of a DDL command that changed the definition of a
/// ledger or of a history-tracked table (`registered` is the registered text, `current` today's).
/// Returns false when the change is not only an addition of columns (the guard then treats it as
/// any other change); refuses an addition to a ledger that its records cannot cover; registers the
/// added columns and returns true otherwise.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn register_added_columns(tbl: Oid, registered: &str, current: &str) -> bool {
    if !adds_only_column_lines(registered, current) {
        return false;
    }
    // ledger.set_erasable adding the column records keep their salts in: it registers the change.
    if crate::erasure::adding_erasure_column(tbl) {
        return true;
    }
    if let Some(history) = crate::history::history_of(tbl) {
        let added: Vec<&str> = current.lines().filter(|l| !registered.lines().any(|r| r == *l)).collect();
        let listed: Vec<&str> = added.iter().map(|l| l.trim_start_matches("column ")).collect();
        crate::history::register_added_columns(
            tbl,
            history,
            registered,
            current,
            &format!("added column(s) {}", listed.join(", ")),
        );
        return true;
    }
    let Some(entry) = layout::registry_entry(tbl) else {
        return false;
    };
    let name = layout::qualified_name(tbl);
    lifecycle::require_owner(tbl, &name, "add columns to a ledger");
    if let Ok(Some(tracked)) = crate::history::tracked_by_history(tbl) {
        raise(
            LedgerError::new(
                SqlState::FeatureNotSupported,
                format!("columns cannot be added to history ledger {name}"),
            )
            .detail(format!(
                "Its versions are written by the history trigger of {}, which fills its columns.",
                layout::qualified_name(tracked)
            )),
        );
    }
    let added: Vec<NewColumn> = layout::attributes(tbl)
        .into_iter()
        // `hash` and the erasure column are the ledger's own, never hashed.
        .filter(|(_, n, _)| n != "hash" && n != crate::erasure::ERASURE_COLUMN && !entry.columns.contains(n))
        .map(|(_, name, type_oid)| NewColumn { name, type_oid })
        .collect();
    if added.is_empty() {
        return false;
    }
    let types: Vec<ColumnType> = added.iter().map(|column| check_addable(tbl, &name, column)).collect();

    let actor = lifecycle::current_role();
    let before = definition::fingerprint_hex(registered);
    let names: Vec<String> = added.iter().map(|c| c.name.clone()).collect();
    let type_names: Vec<String> = types.iter().map(|t| t.name().to_string()).collect();
    lifecycle::as_extension_owner(|| {
        Spi::run_with_args(
            "UPDATE ledger.ledgers SET columns = columns || $2::name[], column_types = column_types || $3, \
             base_columns = coalesce(base_columns, cardinality(columns)) WHERE tbl = $1",
            &[tbl.into(), names.clone().into(), type_names.clone().into()],
        )
        .map_err(|e| spi_error("cannot register the added columns", e))
        .or_raise();
    });
    let listed: Vec<String> = names.iter().zip(&type_names).map(|(n, t)| format!("{} ({t})", quote_ident(n))).collect();
    let reason = format!("added column(s) {}; the definition was {before}", listed.join(", "));
    lifecycle::register_definition_change(tbl, &name, &actor, &reason);
    true
}

/// Whether `current` differs from `registered` only by lines of new columns.
fn adds_only_column_lines(registered: &str, current: &str) -> bool {
    let old: Vec<&str> = registered.lines().filter(|l| !l.is_empty()).collect();
    let new: Vec<&str> = current.lines().filter(|l| !l.is_empty()).collect();
    let removed = old.iter().any(|line| !new.contains(line));
    let mut added = new.iter().filter(|line| !old.contains(line)).peekable();
    !removed && added.peek().is_some() && added.all(|line| line.starts_with("column "))
}

/// The column's format type, or a refusal saying why records could not cover it.
fn check_addable(tbl: Oid, table: &str, column: &NewColumn) -> ColumnType {
    let refuse = |detail: String, hint: &str| -> ! {
        crate::metrics::count_refusal(tbl, crate::metrics::Refusal::Ddl);
        raise(
            LedgerError::new(
                SqlState::FeatureNotSupported,
                format!("column {} cannot be added to ledger {table}", quote_ident(&column.name)),
            )
            .detail(detail)
            .hint(hint),
        )
    };
    let Some(column_type) = column_type_of(column.type_oid) else {
        refuse(
            format!("The ledger cannot hash its type, {}.", format_type(column.type_oid)),
            &format!("Supported types: {}.", ColumnType::supported_list()),
        );
    };
    let (generated, identity, has_default) = Spi::get_three_with_args::<bool, bool, bool>(
        "SELECT a.attgenerated <> '', a.attidentity <> '', \
                a.atthasmissing OR EXISTS (SELECT FROM pg_catalog.pg_attrdef d \
                                            WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum) \
         FROM pg_catalog.pg_attribute a WHERE a.attrelid = $1 AND a.attname = $2",
        &[tbl.into(), column.name.as_str().into()],
    )
    .map_err(|e| spi_error("cannot read the added column", e))
    .or_raise();
    let flag = |f: Option<bool>| f.unwrap_or(false);
    let (generated, identity, has_default) = (flag(generated), flag(identity), flag(has_default));
    if generated {
        refuse(
            "A generated column is computed after the ledger's trigger hashes the row, and PostgreSQL computes it for the rows already there.".into(),
            "Add an ordinary column and have the application (or a BEFORE trigger) fill it.",
        );
    }
    if identity || has_default {
        refuse(
            "PostgreSQL shows the column's default (or identity) on the rows already in the ledger, which were hashed without it.".into(),
            &format!(
                "Add the column without a default, then set one for new rows: ALTER TABLE {table} ALTER COLUMN {} SET DEFAULT ...",
                quote_ident(&column.name)
            ),
        );
    }
    column_type
}

fn format_type(type_oid: Oid) -> String {
    select_one::<String>("SELECT pg_catalog.format_type($1, NULL)", &[type_oid.into()])
        .ok()
        .flatten()
        .unwrap_or_default()
}
