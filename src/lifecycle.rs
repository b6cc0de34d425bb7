//! A ledger's life after `ledger.enable`: its registered definition, its audit chain in
//! `ledger.events`, and `ledger.retire`. The registry and the audit chains are written only here,
//! as the extension's owner, after checking that the caller may act on the table.

use crate::checkpoint;
use crate::datum::select_one;
use crate::error::{raise, spi_error, OrRaise};
use crate::guc;
use crate::layout;
use ledger_core::definition;
use ledger_core::{LedgerError, SqlState};
use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;
use pgrx::PgRelation;

/// The role the caller acts as (for the audit chain), read before any switch of user.
pub fn current_role() -> String {
    select_one::<String>("SELECT current_user::text", &[]).ok().flatten().unwrap_or_default()
}

/// Refuses unless the current role owns the table (or is a member of its owner, or a superuser).
pub fn require_owner(relid: Oid, name: &str, action: &str) {
    let owns = select_one::<bool>(
        "SELECT pg_catalog.pg_has_role(relowner, 'USAGE') FROM pg_catalog.pg_class WHERE oid = $1",
        &[relid.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if !owns {
        raise(
            LedgerError::new(SqlState::InsufficientPrivilege, format!("must be owner of table {name}"))
                .detail(format!("Only the table's owner can {action}.")),
        );
    }
}

/// Refuses (0A000) to `what` one of the extension's own ledgers (schema `ledger`), which record
/// what happened to the others or are made by CREATE EXTENSION.
pub fn refuse_own_ledger(name: &str, what: &str, hint: Option<&str>) {
    if name.starts_with("ledger.") {
        let error =
            LedgerError::new(SqlState::FeatureNotSupported, format!("the extension's own ledger {name} cannot {what}"));
        raise(match hint {
            Some(hint) => error.hint(hint),
            None => error,
        });
    }
}

/// Refuses on a hot standby, before any work: what follows writes.
pub fn require_primary(action: &str) {
    // SAFETY: reads shared recovery state.
    if unsafe { pg_sys::RecoveryInProgress() } {
        raise(
            LedgerError::new(SqlState::ReadOnlySqlTransaction, format!("cannot {action} during recovery"))
                .detail("This server is a standby; verification works here, writing does not.")
                .hint("Run it on the primary."),
        );
    }
}

/// Refuses unless the current role may read the table: verification reads every row directly.
pub fn require_select(relid: Oid) {
    let allowed = select_one::<bool>("SELECT pg_catalog.has_table_privilege($1, 'SELECT')", &[relid.into()])
        .ok()
        .flatten()
        .unwrap_or(false);
    if !allowed {
        raise(LedgerError::new(
            SqlState::InsufficientPrivilege,
            format!("permission denied for table {}", layout::qualified_name(relid)),
        ));
    }
}

/// Runs `f` with `search_path` pinned to pg_catalog, as the SQL functions are declared: for code
/// that runs outside them (triggers, transaction callbacks).
pub fn with_pinned_search_path<T>(f: impl FnOnce() -> T) -> T {
    guc::with_settings(guc::PINNED_SEARCH_PATH, f)
}

thread_local! {
    /// The extension's owner, looked up once per transaction (a trigger switches to it per row).
    static EXTENSION_OWNER: std::cell::Cell<Option<Oid>> = const { std::cell::Cell::new(None) };
}

/// The owner of the extension, read from pg_extension by its name index (no SQL: a trigger asks
/// once per transaction).
unsafe fn extension_owner() -> Option<Oid> {
    let catalog = pg_sys::table_open(pg_sys::ExtensionRelationId, pg_sys::AccessShareLock as i32);
    let mut key: pg_sys::ScanKeyData = std::mem::zeroed();
    pg_sys::ScanKeyInit(
        &mut key,
        pg_sys::Anum_pg_extension_extname as i16,
        pg_sys::BTEqualStrategyNumber as u16,
        pg_sys::Oid::from(pg_sys::F_NAMEEQ),
        pg_sys::Datum::from(c"ledger".as_ptr()),
    );
    let scan = pg_sys::systable_beginscan(
        catalog,
        pg_sys::Oid::from(pg_sys::ExtensionNameIndexId),
        true,
        std::ptr::null_mut(),
        1,
        &mut key,
    );
    let tuple = pg_sys::systable_getnext(scan);
    let owner = (!tuple.is_null()).then(|| {
        let form = pg_sys::GETSTRUCT(tuple) as *const pg_sys::FormData_pg_extension;
        (*form).extowner
    });
    pg_sys::systable_endscan(scan);
    pg_sys::table_close(catalog, pg_sys::AccessShareLock as i32);
    owner
}

/// The transaction ended: the owner is looked up again by the next one.
pub fn forget_owner() {
    EXTENSION_OWNER.with(|o| o.set(None));
}

/// Runs `f` as the extension's owner, who alone may write the registry and `ledger.events`, with
/// `search_path` pinned (as for a SECURITY DEFINER function: the caller's schemas could otherwise
/// supply operators that would run with the owner's rights). An error inside `f` aborts the
/// (sub)transaction, and PostgreSQL's abort restores the user and the setting.
pub fn as_extension_owner<T>(f: impl FnOnce() -> T) -> T {
    let owner = EXTENSION_OWNER.with(|o| o.get()).unwrap_or_else(|| {
        // SAFETY: an index scan of pg_extension, as get_extension_oid does.
        let owner = unsafe { extension_owner() }.unwrap_or_else(|| {
            raise(LedgerError::new(SqlState::UndefinedObject, "extension \"ledger\" is not installed"))
        });
        EXTENSION_OWNER.with(|o| o.set(Some(owner)));
        owner
    });
    let mut user = pg_sys::InvalidOid;
    let mut context = 0;
    // SAFETY: the same save/switch/restore PostgreSQL does around SECURITY DEFINER functions.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        pg_sys::SetUserIdAndSecContext(owner, context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32);
    }
    let out = with_pinned_search_path(f);
    // SAFETY: restoring what was saved above.
    unsafe { pg_sys::SetUserIdAndSecContext(user, context) };
    out
}

/// Appends an event to the ledger's chain in `ledger.events`, with the definition's fingerprint.
pub fn record_event(ledger: &str, event: &str, actor: &str, definition: &str, reason: Option<&str>) {
    Spi::run_with_args(
        "INSERT INTO ledger.events (ledger, event, actor, definition, reason) VALUES ($1, $2, $3, $4, $5)",
        &[ledger.into(), event.into(), actor.into(), definition::fingerprint_hex(definition).into(), reason.into()],
    )
    .map_err(|e| spi_error("cannot record the event in ledger.events", e))
    .or_raise();
}

/// Today's `ledger.definition(tbl)`.
pub fn current_definition(relid: Oid) -> String {
    select_one::<String>("SELECT ledger.definition($1)", &[relid.into()])
        .map_err(|e| spi_error("cannot describe the ledger's definition", e))
        .or_raise()
        .unwrap_or_default()
}

/// The definition registered when the ledger was enabled (None while `ledger.enable` runs).
pub fn registered_definition(relid: Oid) -> Option<String> {
    select_one::<String>("SELECT definition FROM ledger.ledgers WHERE tbl = $1", &[relid.into()])
        .map_err(|e| spi_error("cannot read the ledger registry", e))
        .or_raise()
}

/// Registers a table `ledger.enable` has just made a ledger (chain columns and triggers in place).
pub fn register(relid: Oid, name: &str, chain_by: Option<&str>, columns: Vec<String>, column_types: Vec<String>) {
    as_extension_owner(|| {
        Spi::run_with_args(
            "INSERT INTO ledger.ledgers (tbl, chain_by, columns, column_types) VALUES ($1, $2, $3::name[], $4)",
            &[relid.into(), chain_by.into(), columns.into(), column_types.into()],
        )
        .map_err(|e| spi_error(&format!("cannot register {name} as a ledger"), e))
        .or_raise()
    });
}

/// Fixes the registered definition once `ledger.enable` is done, and records the event (with what
/// it did to rows already in the table, if any).
pub fn finish_enable(relid: Oid, name: &str, actor: &str, migration: Option<&str>) {
    let definition = current_definition(relid);
    as_extension_owner(|| {
        Spi::run_with_args(
            "UPDATE ledger.ledgers SET definition = $2, enabled_by = $3 WHERE tbl = $1",
            &[relid.into(), definition.as_str().into(), actor.into()],
        )
        .map_err(|e| spi_error("cannot register the ledger's definition", e))
        .or_raise();
        record_event(name, "enable", actor, &definition, migration);
    });
}

/// Registers today's definition of a ledger after a change its guard allowed (columns added), and
/// records the change, with `reason`, in the ledger's chain of `ledger.events`.
pub fn register_definition_change(relid: Oid, name: &str, actor: &str, reason: &str) {
    let definition = current_definition(relid);
    as_extension_owner(|| {
        Spi::run_with_args(
            "UPDATE ledger.ledgers SET earlier_definitions = coalesce(earlier_definitions, '{}') || definition, \
             definition = $2 WHERE tbl = $1",
            &[relid.into(), definition.as_str().into()],
        )
        .map_err(|e| spi_error("cannot register the ledger's definition", e))
        .or_raise();
        record_event(name, "alter", actor, &definition, Some(reason));
    });
    // This session and others read the ledger's columns again.
    layout::forget(relid);
    // SAFETY: queues a relcache invalidation for a table that exists (the command altered it).
    unsafe { pg_sys::CacheInvalidateRelcacheByRelid(relid) };
}

/// Whether the ledger's definition went from the one with fingerprint `recorded` to today's (with
/// fingerprint `today`, the registered one) only by registered steps (columns added, partitions
/// added or removed): `recorded` is one of the definitions the registry kept.
pub fn follows_registered_steps(relid: Oid, recorded: &str, today: &str) -> bool {
    // Releases before 0.4.0 kept no earlier definitions (until ALTER EXTENSION ledger UPDATE).
    if !layout::base_columns_registered() {
        return false;
    }
    let Some(registered) = registered_definition(relid) else { return false };
    if definition::fingerprint_hex(&registered) != today {
        return false;
    }
    let earlier =
        select_one::<Vec<String>>("SELECT earlier_definitions FROM ledger.ledgers WHERE tbl = $1", &[relid.into()])
            .ok()
            .flatten()
            .unwrap_or_default();
    definition::follows_registered_steps(recorded, &earlier, &registered)
}

/// Retires a ledger: no more appends, every chain checkpointed a last time, and who, when and
/// why recorded in its chain of `ledger.events`. The rows stay, verifiable as before.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn retire(tbl: PgRelation, reason: &str) -> SetOfIterator<'static, pgrx::composite_type!('static, "checkpoints")> {
    require_primary("retire a ledger");
    // A history-tracked table is retired by retiring its history: its rows then cannot change.
    let relid = crate::history::history_of(tbl.oid()).unwrap_or(tbl.oid());
    drop(tbl);
    let layout = layout::for_relation(relid);
    let name = layout.qualified_name.clone();
    refuse_own_ledger(&name, "be retired", None);
    require_owner(relid, &name, "retire a ledger");
    if reason.trim().is_empty() {
        raise(
            LedgerError::new(SqlState::InvalidParameterValue, "a retirement needs a reason")
                .hint("The reason is kept in the ledger's chain of ledger.events."),
        );
    }
    // Waits for appends in flight and keeps new ones out until this transaction ends.
    Spi::run(&format!("LOCK TABLE ONLY {name} IN SHARE ROW EXCLUSIVE MODE"))
        .map_err(|e| spi_error("cannot lock the ledger", e))
        .or_raise();
    // Read the registry again under the lock: another session may have retired it meanwhile.
    if let Some(retired) = layout::registry_entry(relid).and_then(|e| e.retired) {
        raise(
            LedgerError::new(SqlState::ObjectNotInPrerequisiteState, format!("ledger {name} is already retired"))
                .detail(format!("It was {retired}.")),
        );
    }
    let actor = current_role();
    let definition = current_definition(relid);
    let checkpoints = checkpoint::checkpoint_every_chain(&layout, |_| true);
    as_extension_owner(|| {
        Spi::run_with_args(
            "UPDATE ledger.ledgers SET retired_at = now(), retired_by = $2, retire_reason = $3 WHERE tbl = $1",
            &[relid.into(), actor.as_str().into(), reason.into()],
        )
        .map_err(|e| spi_error("cannot mark the ledger retired", e))
        .or_raise();
        record_event(&name, "retire", &actor, &definition, Some(reason));
    });
    // Other sessions reload the table's layout, now retired, when this transaction commits.
    // SAFETY: queues a relcache invalidation for a table that exists (it is locked).
    unsafe { pg_sys::CacheInvalidateRelcacheByRelid(relid) };
    SetOfIterator::new(checkpoints)
}
