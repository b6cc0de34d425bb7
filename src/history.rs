//! History-tracked tables: an ordinary table stays writable, and every change appends a version to
//! its history ledger (an ordinary ledger of this extension, chained by the row's primary key), in
//! the same transaction. `ledger.verify` then checks the history's chains and that the table is the
//! replay of its history. The SQL side (registry, `history`, `as_of`, the state check, the state
//! export) is sql/history.sql; here are enabling and the row trigger, which turns the rows into
//! jsonb as the role that changed them and appends their versions as the extension's owner.

use crate::datum::select_one;
use crate::datum::{text_datum, varlena_bytes};
use crate::error::{raise, spi_error, OrRaise};
use crate::layout::{self, quote_ident};
use crate::lifecycle;
use ledger_core::{LedgerError, SqlState};
use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{PgRelation, PgTriggerOperation};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::convert::Infallible;

thread_local! {
    /// Set while this module appends versions: a history ledger takes no other appends.
    static APPENDING_VERSIONS: Cell<bool> = const { Cell::new(false) };
    /// The statements appending a row change's versions, per tracked table (`version_plans`).
    static VERSION_PLANS: RefCell<HashMap<Oid, VersionPlan>> = RefCell::new(HashMap::new());
}

/// A primary-key column: its number, and its type's length and by-value flag.
#[derive(Clone, Copy)]
struct KeyColumn {
    attnum: i16,
    len: i16,
    by_value: bool,
}

/// The kept SPI plans appending a tracked table's versions, freed when forgotten.
struct VersionPlan {
    /// One version: $1 the row whose key it is (the new row, or the old one for a delete), $2 the
    /// operation, $3 the role, $4 the new row (NULL for a delete).
    one: pg_sys::SPIPlanPtr,
    /// Any change, the key compared as text: for an update whose key columns changed their bytes.
    any: pg_sys::SPIPlanPtr,
    /// The primary-key columns of the tracked table.
    key_columns: Vec<KeyColumn>,
    /// The insert of one version without SQL, for a history of the columns enable_history makes.
    direct: Option<DirectAppend>,
}

/// Where a version's values go in a history's rows, for inserting them directly (`append_version`).
struct DirectAppend {
    history: Oid,
    /// 0-based positions of the columns written (`seq`, `prev_hash` and `hash` are the ledger
    /// trigger's): key, op, at, role, txid, row.
    key: usize,
    op: usize,
    at: usize,
    role: usize,
    txid: usize,
    row: usize,
    /// A text[] of the tracked table's columns outside the key: a row's jsonb without them is its key.
    non_key: pg_sys::Datum,
    /// Holds `non_key`.
    _memory: SessionMemory,
}

/// A memory context for what a cached plan or encoder keeps across transactions, deleted with it.
struct SessionMemory(pg_sys::MemoryContext);

impl SessionMemory {
    /// # Safety
    /// Inside a backend (the context is a child of TopMemoryContext).
    unsafe fn new(name: &'static std::ffi::CStr) -> SessionMemory {
        SessionMemory(pg_sys::AllocSetContextCreateExtended(pg_sys::TopMemoryContext, name.as_ptr(), 0, 1024, 8192))
    }
}

impl Drop for SessionMemory {
    fn drop(&mut self) {
        // SAFETY: a context created by SessionMemory::new, deleted once.
        unsafe { pg_sys::MemoryContextDelete(self.0) };
    }
}

impl Drop for VersionPlan {
    fn drop(&mut self) {
        // SAFETY: plans this module prepared and kept, freed once.
        unsafe {
            pg_sys::SPI_freeplan(self.one);
            pg_sys::SPI_freeplan(self.any);
        }
    }
}

thread_local! {
    /// Plans and encoders forgotten by an invalidation, kept until the transaction ends: the
    /// invalidation may arrive while they run (a lock taken inside them reads it).
    static RETIRED: RefCell<(Vec<VersionPlan>, Vec<RowEncoder>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Relcache invalidation of a table: its plan is made again (its registry entry may be new), and
/// its row encoding (its columns may have changed).
pub fn forget_plan(relid: Oid) {
    fn take<T>(map: &mut HashMap<Oid, T>, relid: Oid) -> Vec<T> {
        if relid == pg_sys::InvalidOid {
            map.drain().map(|(_, v)| v).collect()
        } else {
            map.remove(&relid).into_iter().collect()
        }
    }
    let encoders = ROW_ENCODERS.with(|e| take(&mut e.borrow_mut(), relid));
    let plans = VERSION_PLANS.with(|p| take(&mut p.borrow_mut(), relid));
    RETIRED.with(|r| {
        let mut retired = r.borrow_mut();
        retired.0.extend(plans);
        retired.1.extend(encoders);
    });
}

/// The statements that append the versions of a change of a row of `relid`, and its key columns.
///
/// Prepared once per session, as the extension's owner (PostgreSQL re-plans them when the history
/// table changes; a relcache invalidation of the tracked table makes them again).
///
/// # Safety
/// `rel` is the tracked table, open.
unsafe fn version_plans(rel: pg_sys::Relation) -> Plans {
    let relid = (*rel).rd_id;
    let cached = VERSION_PLANS.with(|p| p.borrow().get(&relid).map(Plans::of));
    if let Some(plans) = cached {
        return plans;
    }
    lifecycle::as_extension_owner(|| Spi::connect(|client| prepare_version_plans(client, relid)))
}

/// What one row change uses of a table's [`VersionPlan`] (which stays alive to the transaction's
/// end, retired or not, so the pointers stay valid).
struct Plans {
    one: pg_sys::SPIPlanPtr,
    any: pg_sys::SPIPlanPtr,
    key_columns: Vec<KeyColumn>,
    direct: Option<*const DirectAppend>,
}

impl Plans {
    fn of(plan: &VersionPlan) -> Plans {
        Plans {
            one: plan.one,
            any: plan.any,
            key_columns: plan.key_columns.clone(),
            direct: plan.direct.as_ref().map(|d| d as *const DirectAppend),
        }
    }
}

/// Reads the registry entry of `relid` and prepares and keeps its plans.
///
/// # Safety
/// Must run inside an SPI connection (`client`'s).
unsafe fn prepare_version_plans(client: &SpiClient<'_>, relid: Oid) -> Plans {
    let (history, key_columns, history_oid) = client
        .select(
            "SELECT history::text, key_columns::text[], history::oid FROM ledger.tracked WHERE tbl = $1",
            Some(1),
            &[relid.into()],
        )
        .and_then(|rows| rows.first().get_three::<String, Vec<String>, Oid>())
        .map_err(|e| spi_error("cannot read the registry of tracked tables", e))
        .or_raise();
    let (Some(history), Some(key_columns), Some(history_oid)) = (history, key_columns, history_oid) else {
        raise(LedgerError::new(
            SqlState::UndefinedObject,
            format!("table {} is not history-tracked", layout::qualified_name(relid)),
        ));
    };
    let key = key_columns
        .iter()
        .map(|name| {
            let name = std::ffi::CString::new(name.as_str()).expect("no NUL in a column name");
            let attnum = pg_sys::get_attnum(relid, name.as_ptr());
            if attnum <= 0 {
                raise(LedgerError::new(
                    SqlState::UndefinedColumn,
                    format!("key column {} of {} is gone", name.to_string_lossy(), layout::qualified_name(relid)),
                ));
            }
            let (mut len, mut by_value) = (0, false);
            pg_sys::get_typlenbyval(pg_sys::get_atttype(relid, attnum), &mut len, &mut by_value);
            KeyColumn { attnum, len, by_value }
        })
        .collect::<Vec<_>>();
    // The key as ledger.version_key writes it, spelled out: no function call per row.
    let key_of = |row: &str| {
        let members: Vec<String> = key_columns
            .iter()
            .map(|k| format!("{lit}, {row} OPERATOR(pg_catalog.->) {lit}", lit = literal(k)))
            .collect();
        format!("pg_catalog.jsonb_build_object({})::pg_catalog.text", members.join(", "))
    };
    let one = format!(
        "INSERT INTO {history} (key, op, at, role, txid, \"row\") \
         VALUES ({}, $2, pg_catalog.clock_timestamp(), $3, pg_catalog.txid_current(), $4)",
        key_of("$1")
    );
    // An update that changes the key as text ends the old key's chain with a delete and starts the
    // new key's with an insert, in that order (the order of the VALUES list).
    let any = format!(
        "INSERT INTO {history} (key, op, at, role, txid, \"row\") \
         SELECT v.key, v.op, pg_catalog.clock_timestamp(), $4, pg_catalog.txid_current(), v.r \
           FROM (SELECT $1 AS o, $2 AS n) j \
          CROSS JOIN LATERAL (SELECT {} AS ok, {} AS nk) k \
          CROSS JOIN LATERAL (VALUES \
              (1, CASE WHEN $3 OPERATOR(pg_catalog.=) 'delete' \
                         OR ($3 OPERATOR(pg_catalog.=) 'update' AND k.ok IS DISTINCT FROM k.nk) THEN k.ok END, \
                  'delete', NULL::pg_catalog.jsonb), \
              (2, CASE WHEN $3 OPERATOR(pg_catalog.=) 'insert' \
                         OR ($3 OPERATOR(pg_catalog.=) 'update' AND k.ok IS DISTINCT FROM k.nk) THEN k.nk END, \
                  'insert', j.n), \
              (3, CASE WHEN $3 OPERATOR(pg_catalog.=) 'update' AND k.ok IS NOT DISTINCT FROM k.nk THEN k.nk END, \
                  'update', j.n)) AS v(ord, key, op, r) \
          WHERE v.key IS NOT NULL",
        key_of("j.o"),
        key_of("j.n")
    );
    let one = prepare(&one, [pg_sys::JSONBOID, pg_sys::TEXTOID, pg_sys::TEXTOID, pg_sys::JSONBOID]);
    let any = prepare(&any, [pg_sys::JSONBOID, pg_sys::JSONBOID, pg_sys::TEXTOID, pg_sys::TEXTOID]);
    let direct = direct_append(relid, history_oid, &key_columns);
    VERSION_PLANS.with(|p| {
        let mut plans = p.borrow_mut();
        let plan = plans.entry(relid).or_insert(VersionPlan { one, any, key_columns: key, direct });
        Plans::of(plan)
    })
}

/// How to insert a version of a row of `relid` into its history `history` without SQL, if the
/// history has exactly the columns and types enable_history gives it (otherwise the kept plan does).
///
/// # Safety
/// Both tables exist.
unsafe fn direct_append(relid: Oid, history: Oid, key_columns: &[String]) -> Option<DirectAppend> {
    let position = |name: &std::ffi::CStr, type_oid: Oid| {
        let attnum = pg_sys::get_attnum(history, name.as_ptr());
        (attnum > 0 && pg_sys::get_atttype(history, attnum) == type_oid).then(|| attnum as usize - 1)
    };
    // Only the columns enable_history makes today: histories of older releases have more (0.3.0's
    // had a `vid` with a default), which a direct insert would leave NULL (it applies no defaults).
    let mut columns: Vec<String> = layout::attributes(history).into_iter().map(|(_, name, _)| name).collect();
    columns.sort();
    if columns != ["at", "hash", "key", "op", "prev_hash", "role", "row", "seq", "txid"] {
        return None;
    }
    let key = position(c"key", pg_sys::TEXTOID)?;
    let op = position(c"op", pg_sys::TEXTOID)?;
    let at = position(c"at", pg_sys::TIMESTAMPTZOID)?;
    let role = position(c"role", pg_sys::TEXTOID)?;
    let txid = position(c"txid", pg_sys::INT8OID)?;
    let row = position(c"row", pg_sys::JSONBOID)?;
    let non_key: Vec<String> = layout::attributes(relid)
        .into_iter()
        .map(|(_, name, _)| name)
        .filter(|name| !key_columns.contains(name))
        .collect();
    let memory = SessionMemory::new(c"ledger history direct append");
    let old = pg_sys::MemoryContextSwitchTo(memory.0);
    let mut elements: Vec<pg_sys::Datum> = non_key.iter().map(|name| text_datum(name)).collect();
    let array = pg_sys::construct_array(
        elements.as_mut_ptr(),
        elements.len() as i32,
        pg_sys::TEXTOID,
        -1,
        false,
        pg_sys::TYPALIGN_INT as std::ffi::c_char,
    );
    pg_sys::MemoryContextSwitchTo(old);
    Some(DirectAppend { history, key, op, at, role, txid, row, non_key: pg_sys::Datum::from(array), _memory: memory })
}

/// `jsonb - text[]` (`jsonb_delete_array`): its pg_proc OID, the same in every release, whose
/// bindings name it differently (13: F_JSONB_DELETE_ARRAY, later: F_JSONB_DELETE_JSONB__TEXT).
const JSONB_DELETE_KEYS: u32 = 3343;

/// Inserts one version into the history as the kept plan `one` would (the same values; the
/// history's own ledger trigger links and hashes it), through the executor's single-row insert
/// rather than a statement: a tracked UPDATE's time in the backend was a fifth starting and
/// ending that statement's executor.
///
/// # Safety
/// `keyed` is the jsonb of the row whose key the version has, `row` the version's row (None for a
/// delete); inside a transaction, with history appends allowed.
unsafe fn append_version(
    direct: &DirectAppend,
    keyed: pg_sys::Datum,
    op: &str,
    actor: &str,
    row: Option<pg_sys::Datum>,
) {
    // The key: the row's jsonb without its other columns, as text (jsonb's one spelling of an
    // object, the same as jsonb_build_object of the key columns).
    let key_jsonb =
        pg_sys::OidFunctionCall2Coll(Oid::from(JSONB_DELETE_KEYS), pg_sys::InvalidOid, keyed, direct.non_key);
    let key_text = pg_sys::OidFunctionCall1Coll(Oid::from(pg_sys::F_JSONB_OUT), pg_sys::InvalidOid, key_jsonb);
    let key = pg_sys::Datum::from(pg_sys::cstring_to_text(key_text.cast_mut_ptr()));

    let rel = pg_sys::table_open(direct.history, pg_sys::RowExclusiveLock as i32);
    // As a statement of its own would: it sees what this transaction wrote so far.
    pg_sys::CommandCounterIncrement();
    let estate = pg_sys::CreateExecutorState();
    (*estate).es_output_cid = pg_sys::GetCurrentCommandId(true);
    let result = pg_sys::palloc0(std::mem::size_of::<pg_sys::ResultRelInfo>()) as *mut pg_sys::ResultRelInfo;
    (*result).type_ = pg_sys::NodeTag::T_ResultRelInfo;
    pg_sys::InitResultRelInfo(result, rel, 0, std::ptr::null_mut(), 0);
    pg_sys::ExecOpenIndices(result, false);
    let tupdesc = (*rel).rd_att;
    let slot = pg_sys::ExecInitExtraTupleSlot(estate, tupdesc, &pg_sys::TTSOpsVirtual);
    pg_sys::ExecClearTuple(slot);
    let natts = (*tupdesc).natts as usize;
    let values = std::slice::from_raw_parts_mut((*slot).tts_values, natts);
    let nulls = std::slice::from_raw_parts_mut((*slot).tts_isnull, natts);
    nulls.fill(true);
    let mut set = |at: usize, value: pg_sys::Datum| {
        values[at] = value;
        nulls[at] = false;
    };
    set(direct.key, key);
    set(direct.op, text_datum(op));
    set(direct.at, pg_sys::Datum::from(pg_sys::GetCurrentTimestamp()));
    set(direct.role, text_datum(actor));
    set(direct.txid, pg_sys::Datum::from(pg_sys::GetTopFullTransactionId().value as i64));
    if let Some(row) = row {
        set(direct.row, row);
    }
    pg_sys::ExecStoreVirtualTuple(slot);
    pg_sys::AfterTriggerBeginQuery();
    #[cfg(feature = "pg13")]
    {
        (*estate).es_result_relation_info = result;
        pg_sys::ExecSimpleRelationInsert(estate, slot);
    }
    #[cfg(not(feature = "pg13"))]
    pg_sys::ExecSimpleRelationInsert(result, estate, slot);
    pg_sys::AfterTriggerEndQuery(estate);
    pg_sys::ExecCloseIndices(result);
    pg_sys::ExecResetTupleTable((*estate).es_tupleTable, false);
    pg_sys::FreeExecutorState(estate);
    pg_sys::table_close(rel, pg_sys::NoLock as i32);
}

/// A kept generic plan: the statement is the same for every row, and a custom plan per execution
/// would plan it every time (with parameters the plan cache tries custom plans first).
///
/// # Safety
/// Must run inside an SPI connection.
unsafe fn prepare(query: &str, mut types: [Oid; 4]) -> pg_sys::SPIPlanPtr {
    let query = std::ffi::CString::new(query).expect("no NUL in the query");
    let plan = pg_sys::SPI_prepare_cursor(
        query.as_ptr(),
        types.len() as i32,
        types.as_mut_ptr(),
        pg_sys::CURSOR_OPT_GENERIC_PLAN as i32,
    );
    if plan.is_null() || pg_sys::SPI_keepplan(plan) != 0 {
        raise(LedgerError::new(SqlState::DataCorrupted, "cannot prepare the history's append"));
    }
    plan
}

/// Whether an update changed the bytes of a key column (a change of the key's text implies one;
/// the converse is checked as text by the plan for any change).
///
/// # Safety
/// `old` and `new` are rows of `rel`.
unsafe fn key_bytes_changed(
    rel: pg_sys::Relation,
    key_columns: &[KeyColumn],
    old: *mut pg_sys::HeapTupleData,
    new: *mut pg_sys::HeapTupleData,
) -> bool {
    let tupdesc = (*rel).rd_att;
    key_columns.iter().any(|column| {
        let (mut old_null, mut new_null) = (false, false);
        let old_value = pg_sys::heap_getattr(old, column.attnum as i32, tupdesc, &mut old_null);
        let new_value = pg_sys::heap_getattr(new, column.attnum as i32, tupdesc, &mut new_null);
        if old_null || new_null {
            return old_null != new_null;
        }
        match (column.by_value, column.len) {
            (true, _) => old_value != new_value,
            (false, -1) => varlena_bytes(old_value) != varlena_bytes(new_value),
            (false, -2) => {
                std::ffi::CStr::from_ptr(old_value.cast_mut_ptr()) != std::ffi::CStr::from_ptr(new_value.cast_mut_ptr())
            }
            (false, len) => {
                let bytes = |value: pg_sys::Datum| std::slice::from_raw_parts(value.cast_mut_ptr::<u8>(), len as usize);
                bytes(old_value) != bytes(new_value)
            }
        }
    })
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

/// The transaction ended (an error may have left the flag set; nothing runs the retired plans).
pub fn forget() {
    APPENDING_VERSIONS.with(|a| a.set(false));
    RETIRED.with(|r| {
        let mut retired = r.borrow_mut();
        retired.0.clear();
        retired.1.clear();
    });
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

/// Appends a version (`op`) of every row of the tracked table `name` to its history, in
/// primary-key order: as the calling role (to_jsonb may run casts of the columns' types), under the
/// trigger's settings.
fn record_every_row(name: &str, history_name: &str, key: &[String], actor: &str, op: &str) {
    let order = key.iter().map(|k| format!("t.{}", quote_ident(k))).collect::<Vec<_>>().join(", ");
    appending(|| {
        crate::guc::with_settings(crate::guc::CANONICAL_OUTPUT, || {
            Spi::run_with_args(
                &format!(
                    "INSERT INTO {history_name} (key, op, at, role, txid, \"row\") \
                     SELECT ledger.version_key(to_jsonb(t.*), $1::name[]), $3, clock_timestamp(), $2, \
                            txid_current(), to_jsonb(t.*) \
                     FROM ONLY {name} t ORDER BY {order}"
                ),
                &[key.to_vec().into(), actor.into(), op.into()],
            )
            .map_err(|e| spi_error("cannot record the rows of the table", e))
            .or_raise()
        })
    });
}

/// Columns added to a tracked table (`ALTER TABLE ... ADD COLUMN`, by its owner or a superuser):
/// every row now reads differently (with the new columns), so each gets an `update` version as it
/// reads now, in the same transaction; the table's registered definition follows, and so does its
/// history ledger's (whose `history_of` line fingerprints the table's), with an `alter` event.
pub fn register_added_columns(relid: Oid, history: Oid, registered: &str, current: &str, reason: &str) {
    let name = layout::qualified_name(relid);
    lifecycle::require_owner(relid, &name, "add columns to a history-tracked table");
    let history_name = layout::qualified_name(history);
    let key =
        select_one::<Vec<String>>("SELECT key_columns::text[] FROM ledger.tracked WHERE tbl = $1", &[relid.into()])
            .map_err(|e| spi_error("cannot read the registry of tracked tables", e))
            .or_raise()
            .unwrap_or_default();
    let actor = lifecycle::current_role();
    lifecycle::as_extension_owner(|| {
        Spi::run_with_args("UPDATE ledger.tracked SET definition = $2 WHERE tbl = $1", &[relid.into(), current.into()])
            .map_err(|e| spi_error("cannot register the table's definition", e))
            .or_raise();
    });
    record_every_row(&name, &history_name, &key, &actor, "update");
    let before = ledger_core::definition::fingerprint_hex(registered);
    lifecycle::register_definition_change(
        history,
        &history_name,
        &actor,
        &format!("{reason} to the tracked table {name}; its definition was {before}"),
    );
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
    // No CHECK constraints (histories before 0.6.0 had two, on op and on row being NULL exactly for
    // a delete): only record_version appends, and PostgreSQL rebuilds a table's checks from their
    // stored text at every statement's start, a tenth of a tracked UPDATE's time in the backend.
    // The key in byte order (as every order the extension reports): each version's head lookup
    // descends the (key, seq) index, which then needs no collation calls.
    run(
        &format!(
            "CREATE TABLE {history_name} (\
               key text COLLATE \"C\" NOT NULL, \
               op text NOT NULL, \
               at timestamptz NOT NULL, \
               role text NOT NULL, \
               txid bigint NOT NULL, \
               \"row\" jsonb, \
               seq bigint, \
               prev_hash char(64), \
               hash char(64), \
               PRIMARY KEY (key, seq))"
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
    });
    // The registry names the history now: its appends must come from here from now on.
    // SAFETY: invalidating a relation's cache entries (here and in other sessions).
    unsafe { pg_sys::CacheInvalidateRelcacheByRelid(history_oid) };
    layout::forget(history_oid);
    // Rows already in the table are their first versions.
    record_every_row(&name, &history_name, &key, &actor, "insert");

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
        // The history's definition names the tracked table's (docs/FORMAT.md, "Definitions"),
        // which is complete only now.
        Spi::run_with_args(
            "UPDATE ledger.ledgers SET definition = ledger.definition($1) WHERE tbl = $1",
            &[history_oid.into()],
        )
        .map_err(|e| spi_error("cannot register the history's definition", e))
        .or_raise();
    });
    history_oid
}

/// How a tracked table's rows become jsonb: `to_jsonb` called directly (no SQL per row), under the
/// settings its column types' text depends on.
struct RowEncoder {
    to_jsonb: *mut pg_sys::FmgrInfo,
    settings: Vec<(&'static std::ffi::CStr, &'static std::ffi::CStr)>,
    /// Holds the function's lookup and the expression it reads its argument's type from.
    _memory: SessionMemory,
}

thread_local! {
    static ROW_ENCODERS: RefCell<HashMap<Oid, RowEncoder>> = RefCell::new(HashMap::new());
}

/// The settings of `guc::CANONICAL_OUTPUT` that `to_jsonb` of a row of `relid` depends on: those of
/// its columns' types (domains by their base type); all of them for any type not known here
/// (arrays, composites, ranges, user types).
unsafe fn settings_for(relid: Oid) -> Vec<(&'static std::ffi::CStr, &'static std::ffi::CStr)> {
    let setting = |name: &std::ffi::CStr| {
        *crate::guc::CANONICAL_OUTPUT.iter().find(|(n, _)| *n == name).expect("a canonical setting")
    };
    let mut wanted: Vec<(&'static std::ffi::CStr, &'static std::ffi::CStr)> = Vec::new();
    for (_, _, type_oid) in layout::attributes(relid) {
        let base = pg_sys::getBaseType(type_oid);
        let needs: &[&std::ffi::CStr] = match base {
            pg_sys::TIMESTAMPTZOID | pg_sys::TIMETZOID => &[c"TimeZone"],
            pg_sys::INTERVALOID => &[c"IntervalStyle"],
            pg_sys::BYTEAOID => &[c"bytea_output"],
            pg_sys::FLOAT4OID | pg_sys::FLOAT8OID => &[c"extra_float_digits"],
            pg_sys::BOOLOID
            | pg_sys::INT2OID
            | pg_sys::INT4OID
            | pg_sys::INT8OID
            | pg_sys::NUMERICOID
            | pg_sys::TEXTOID
            | pg_sys::VARCHAROID
            | pg_sys::BPCHAROID
            | pg_sys::NAMEOID
            | pg_sys::UUIDOID
            | pg_sys::DATEOID
            | pg_sys::TIMESTAMPOID
            | pg_sys::TIMEOID
            | pg_sys::JSONBOID
            | pg_sys::JSONOID
            | pg_sys::OIDOID
            | pg_sys::CHAROID => &[],
            _ => return crate::guc::CANONICAL_OUTPUT.to_vec(),
        };
        for name in needs {
            let s = setting(name);
            if !wanted.contains(&s) {
                wanted.push(s);
            }
        }
    }
    wanted
}

/// `to_jsonb(row)` of a row of the tracked table `relid` (a datum of its row type), computed under
/// fixed settings, so its text is the same whichever session changed the row.
unsafe fn row_to_jsonb(relid: Oid, row_type: Oid, row: pg_sys::Datum) -> pg_sys::Datum {
    let (finfo, settings) = ROW_ENCODERS.with(|e| {
        if let Some(encoder) = e.borrow().get(&relid) {
            return (encoder.to_jsonb, encoder.settings.clone());
        }
        // The function and the expression it reads its argument's type from live for the session.
        let memory = SessionMemory::new(c"ledger history row encoder");
        let old = pg_sys::MemoryContextSwitchTo(memory.0);
        let finfo = pg_sys::palloc0(std::mem::size_of::<pg_sys::FmgrInfo>()) as *mut pg_sys::FmgrInfo;
        pg_sys::fmgr_info_cxt(pg_sys::Oid::from(pg_sys::F_TO_JSONB), finfo, memory.0);
        let argument = pg_sys::makeNullConst(row_type, -1, pg_sys::InvalidOid);
        let call = pg_sys::makeFuncExpr(
            pg_sys::Oid::from(pg_sys::F_TO_JSONB),
            pg_sys::JSONBOID,
            pg_sys::list_make1_impl(pg_sys::NodeTag::T_List, pg_sys::ListCell { ptr_value: argument.cast() }),
            pg_sys::InvalidOid,
            pg_sys::InvalidOid,
            pg_sys::CoercionForm::COERCE_EXPLICIT_CALL,
        );
        (*finfo).fn_expr = call.cast();
        pg_sys::MemoryContextSwitchTo(old);
        let settings = settings_for(relid);
        e.borrow_mut().insert(relid, RowEncoder { to_jsonb: finfo, settings: settings.clone(), _memory: memory });
        (finfo, settings)
    });
    let call = || pg_sys::FunctionCall1Coll(finfo, pg_sys::InvalidOid, row);
    if settings.is_empty() {
        call()
    } else {
        crate::guc::with_settings(&settings, call)
    }
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
        // The rows as jsonb, computed as the role that changed them (to_jsonb runs casts to json a
        // column's type may have: never as the extension's owner).
        let as_jsonb = |tuple: *mut pg_sys::HeapTupleData| {
            if tuple.is_null() {
                (pg_sys::Datum::from(0), b'n' as std::ffi::c_char)
            } else {
                (
                    row_to_jsonb(relid, row_type, pg_sys::heap_copy_tuple_as_datum(tuple, tupdesc)),
                    b' ' as std::ffi::c_char,
                )
            }
        };
        let Plans { one, any, key_columns, direct } = version_plans(rel);
        let key_changed = op == "update" && key_bytes_changed(rel, &key_columns, data.tg_trigtuple, data.tg_newtuple);
        if let (Some(direct), false) = (direct, key_changed) {
            let keyed = as_jsonb(if op == "update" { data.tg_newtuple } else { data.tg_trigtuple }).0;
            let row = (op != "delete").then_some(keyed);
            // As the role that changed the row: a direct insert checks no privileges (the plan
            // below runs as the extension's owner for its INSERT's), and the history's trigger
            // takes the rights it needs itself.
            appending(|| append_version(&*direct, keyed, op, &actor, row));
            return Ok(None);
        }
        let present = b' ' as std::ffi::c_char;
        let (plan, mut values, nulls) = if key_changed {
            let (old, new) = (as_jsonb(data.tg_trigtuple), as_jsonb(data.tg_newtuple));
            (any, [old.0, new.0, text_datum(op), text_datum(&actor)], [old.1, new.1, present, present])
        } else {
            // The common case, one version: the key is that of the new row (of the old one for a
            // delete, which records no row).
            let keyed = as_jsonb(if op == "update" { data.tg_newtuple } else { data.tg_trigtuple });
            let row = if op == "delete" { as_jsonb(std::ptr::null_mut()) } else { keyed };
            (one, [keyed.0, text_datum(op), text_datum(&actor), row.0], [keyed.1, present, present, row.1])
        };
        lifecycle::as_extension_owner(|| {
            appending(|| {
                Spi::connect_mut(|_| {
                    let status = pg_sys::SPI_execute_plan(plan, values.as_mut_ptr(), nulls.as_ptr(), false, 0);
                    if status < 0 {
                        raise(
                            LedgerError::new(SqlState::DataCorrupted, "cannot record the version")
                                .detail(format!("SPI_execute_plan returned {status}")),
                        );
                    }
                })
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
    // One key's chain: the key as the history names it (ledger.history_key), however it is spelled.
    let chain = chain.map(|key| history_key(relid, key));
    let chain = chain.as_deref();
    let registered = select_one::<String>("SELECT definition FROM ledger.tracked WHERE tbl = $1", &[relid.into()])
        .map_err(|e| spi_error("cannot read the registry of tracked tables", e))
        .or_raise();
    let mut findings = crate::verify::changed_definition(relid, registered, "since tracking began");
    // SAFETY: the history table exists (the registry names it); verification takes no lock beyond a read.
    let history_rel = unsafe { PgRelation::with_lock(history, pg_sys::AccessShareLock as i32) };
    findings.extend(crate::verify::verify_ledger(&history_rel, chain).findings);
    drop(history_rel);
    findings.extend(state_findings(relid, chain));
    findings
}

/// A key of a tracked table, given as JSON text, as its history chain names it; not an object of
/// the table's primary-key columns is 22023.
pub fn history_key(relid: Oid, key: &str) -> String {
    let parsed: Result<serde_json::Value, _> = serde_json::from_str(key);
    let Ok(object @ serde_json::Value::Object(_)) = parsed else {
        raise(
            LedgerError::new(
                SqlState::InvalidParameterValue,
                format!("a key of {} is an object of its primary-key columns", layout::qualified_name(relid)),
            )
            .detail(format!("The chain given is {key:?}, which is not a JSON object."))
            .hint("Name the row by its primary key, for example '{\"id\": 1}'."),
        );
    };
    select_one::<String>("SELECT ledger.history_key($1, $2)", &[relid.into(), pgrx::JsonB(object).into()])
        .map_err(|e| spi_error("cannot read the key", e))
        .or_raise()
        .unwrap_or_default()
}

/// Every key where the tracked table is not the replay of its history (of one key, with `key`).
pub fn state_findings(relid: Oid, key: Option<&str>) -> crate::verify::Findings {
    // As the caller, who may read both tables (to_jsonb may run casts of the columns' types).
    lifecycle::with_pinned_search_path(|| {
        Spi::connect(|client| {
            let rows = client.select(
                "SELECT key, seq, problem, detail FROM ledger.state_problems($1) WHERE $2::text IS NULL OR key = $2",
                None,
                &[relid.into(), key.into()],
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
    })
}
