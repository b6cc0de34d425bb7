//! Erasure: `ledger.set_erasable` and `ledger.redact`. A record appended while a column is erasable
//! commits to its value through a salted hash (docs/FORMAT.md, "Erasable columns"), and keeps the
//! salt in its `ledger_erasure` column. `ledger.redact` removes the value and the salt and keeps the
//! commitment there, so the record's hash, and every chain, checkpoint, proof and digest, stay as
//! they were, while the value can no longer be read or guessed from what remains.

use crate::datum::{fetch_row, select_one};
use crate::error::{raise, required, spi_error, OnDrop, OrRaise};
use crate::layout::{self, quote_ident, Layout};
use crate::lifecycle;
use crate::trigger::RecordScratch;
use ledger_core::canonical::{commitment, Erasable, Value};
use ledger_core::hash::{parse_hex, to_hex};
use ledger_core::json::{member_commitment, member_value};
use ledger_core::{LedgerError, SqlState};
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::prelude::*;
use pgrx::{JsonB, PgRelation};
use serde_json::{json, Map, Value as Json};
use std::cell::{Cell, RefCell};

/// The column where each record keeps, per erasable column, its salt or (once erased) its
/// commitment. Added to the table by the first `ledger.set_erasable`; not hashed itself.
pub const ERASURE_COLUMN: &str = "ledger_erasure";

/// What a record keeps of one erasable column: of its value, or of some members of its object
/// (a history's `row`: the tracked table's erasable columns).
#[derive(Clone)]
pub enum Entry {
    Value(Erasable),
    Members(Vec<(String, Erasable)>),
}

/// One `{"salt": hex}` or `{"erased": hex}` object.
fn erasable(entry: &Json) -> Option<Erasable> {
    let entry = entry.as_object().filter(|e| e.len() == 1)?;
    let digest = |v: &Json| v.as_str().and_then(|s| parse_hex(s, "erasure").ok());
    match (entry.get("salt").and_then(digest), entry.get("erased").and_then(digest)) {
        (Some(salt), None) => Some(Erasable::Salt(salt)),
        (None, Some(c)) => Some(Erasable::Erased(c)),
        _ => None,
    }
}

/// The entries of a record's `ledger_erasure` object, by column name. An ill-formed entry is no
/// entry: the column is then encoded as an ordinary one, and a record hashed with a commitment no
/// longer matches (as the offline verifier decides too).
pub fn entries(object: &Json) -> Vec<(String, Entry)> {
    let Some(columns) = object.as_object() else { return Vec::new() };
    columns
        .iter()
        .filter_map(|(name, entry)| {
            if let Some(value) = erasable(entry) {
                return Some((name.clone(), Entry::Value(value)));
            }
            let members = entry.as_object().filter(|e| e.len() == 1)?.get("members")?.as_object()?;
            let members = members.iter().filter_map(|(m, e)| erasable(e).map(|e| (m.clone(), e))).collect();
            Some((name.clone(), Entry::Members(members)))
        })
        .collect()
}

/// The entries of the erasure column's value in a row, when it has one.
///
/// # Safety
/// `datum` must be a jsonb datum.
pub unsafe fn entries_of(datum: Datum) -> Vec<(String, Entry)> {
    match <JsonB as pgrx::datum::FromDatum>::from_datum(datum, false) {
        Some(JsonB(object)) => entries(&object),
        None => Vec::new(),
    }
}

fn entry_json(entry: &Erasable) -> Json {
    match entry {
        Erasable::Salt(salt) => json!({ "salt": to_hex(salt) }),
        Erasable::Erased(c) => json!({ "erased": to_hex(c) }),
    }
}

fn random_salt() -> Erasable {
    let mut salt = [0u8; 32];
    // SAFETY: fills the buffer it is given.
    if !unsafe { pg_sys::pg_strong_random(salt.as_mut_ptr().cast(), salt.len()) } {
        raise(LedgerError::new(SqlState::SystemError, "could not generate a random salt"));
    }
    Erasable::Salt(salt)
}

/// A fresh `ledger_erasure` object for a new record: a new random salt for each erasable column
/// (for a history, each erasable member of `row`).
pub fn fresh_salts(layout: &Layout) -> Json {
    let names = layout.erasable.iter().map(|c| layout.columns[*c].name.clone());
    if layout.history_of.is_some() {
        let members: Map<String, Json> =
            layout.erasable_members.iter().map(|m| (m.clone(), entry_json(&random_salt()))).collect();
        return json!({ HISTORY_ROW: { "members": members } });
    }
    Json::Object(names.map(|n| (n, entry_json(&random_salt()))).collect())
}

/// The column of a history ledger that holds each version of a row.
pub const HISTORY_ROW: &str = "row";

thread_local! {
    /// Set while `ledger.set_erasable` adds the erasure column: the guard's check of added
    /// columns leaves it to `set_erasable`, which registers the new definition itself.
    static ADDING_COLUMN: Cell<Option<Oid>> = const { Cell::new(None) };
    /// The row `ledger.redact` is erasing right now, which the ledger's trigger lets it update.
    static REDACTING: RefCell<Option<(Oid, pg_sys::ItemPointerData)>> = const { RefCell::new(None) };
}

/// Whether the column being added to `relid` is the erasure column `ledger.set_erasable` adds.
pub fn adding_erasure_column(relid: Oid) -> bool {
    ADDING_COLUMN.with(|a| a.get() == Some(relid))
}

/// Whether `ledger.redact` is updating this row of `rel` right now.
///
/// # Safety
/// `tuple` must be a row of `rel`.
pub unsafe fn permits_update(rel: pg_sys::Relation, tuple: pg_sys::HeapTuple) -> bool {
    REDACTING.with(|r| {
        r.borrow().as_ref().is_some_and(|(relid, tid)| {
            *relid == (*rel).rd_id
                && tid.ip_blkid.bi_hi == (*tuple).t_self.ip_blkid.bi_hi
                && tid.ip_blkid.bi_lo == (*tuple).t_self.ip_blkid.bi_lo
                && tid.ip_posid == (*tuple).t_self.ip_posid
        })
    })
}

/// Makes `columns` of a ledger erasable for the records appended from now on (an empty array: none).
/// Each such record commits to those values through a salted hash, so `ledger.redact` can remove
/// them later while its hash stays. For a history-tracked table, the columns are the table's, and
/// its history's versions commit to them as members of their `row`. The change is an `erasable`
/// event in `ledger.events`.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn set_erasable(tbl: Option<PgRelation>, columns: Option<Vec<Option<String>>>) {
    let tbl = required(tbl, "tbl");
    let columns: Vec<String> = required(columns, "columns")
        .into_iter()
        .map(|c| {
            c.unwrap_or_else(|| {
                raise(LedgerError::new(SqlState::NullValueNotAllowed, "a column name must not be null"))
            })
        })
        .collect();
    lifecycle::require_primary("make columns of a ledger erasable");
    let named = tbl.oid();
    drop(tbl);
    let tracked = crate::history::history_of(named);
    let relid = tracked.unwrap_or(named);
    let layout = layout::for_relation(relid);
    let name = layout.qualified_name.clone();
    lifecycle::refuse_own_ledger(&name, "have erasable columns", None);
    if tracked.is_none() && layout.history_of.is_some() {
        raise(
            LedgerError::new(SqlState::FeatureNotSupported, format!("{name} is a history ledger"))
                .hint("Make columns of its tracked table erasable: ledger.set_erasable(tracked_table, columns)."),
        );
    }
    lifecycle::require_owner(named, &layout::qualified_name(named), "make its columns erasable");
    for column in &columns {
        match tracked {
            Some(_) => check_erasable_member(named, column),
            None => check_erasable(&layout, relid, column),
        }
    }
    let actor = lifecycle::current_role();
    if layout.erasure.is_none() && layout::attributes(relid).iter().any(|(_, n, _)| n == ERASURE_COLUMN) {
        raise(
            LedgerError::new(
                SqlState::DuplicateColumn,
                format!("ledger {name} has a column \"{ERASURE_COLUMN}\" of its own"),
            )
            .detail("Erasure keeps each record's salts in a jsonb column of that name.")
            .hint("Rename the column (a superuser: the definition changes, and ledger.verify says so)."),
        );
    }
    if layout.erasure.is_none() {
        add_erasure_column(relid, &name, &actor);
    }
    let was = erasable_text(relid);
    lifecycle::as_extension_owner(|| {
        Spi::run_with_args(
            "UPDATE ledger.ledgers SET erasable = nullif($2::name[], '{}') WHERE tbl = $1",
            &[relid.into(), columns.clone().into()],
        )
        .map_err(|e| spi_error("cannot register the erasable columns", e))
        .or_raise()
    });
    let now = erasable_text(relid);
    let definition = lifecycle::current_definition(relid);
    lifecycle::as_extension_owner(|| {
        lifecycle::record_event(&name, "erasable", &actor, &definition, Some(&format!("erasable: {now} (was: {was})")))
    });
    layout::forget(relid);
    // SAFETY: queues a relcache invalidation for a table that exists.
    unsafe { pg_sys::CacheInvalidateRelcacheByRelid(relid) };
}

/// An erasable column is a hashed column that an erased record can hold NULL in, and not one the
/// chain or its order rests on.
fn check_erasable(layout: &Layout, relid: Oid, column: &str) {
    let name = &layout.qualified_name;
    let refuse = |why: &str, hint: Option<&str>| -> ! {
        let mut error = LedgerError::new(
            SqlState::InvalidParameterValue,
            format!("column \"{column}\" of ledger {name} cannot be erasable"),
        )
        .detail(why.to_string());
        if let Some(hint) = hint {
            error = error.hint(hint);
        }
        raise(error)
    };
    if !layout.columns.iter().any(|c| c.name == column) {
        refuse("It is not one of the ledger's hashed columns.", None);
    }
    if layout.chain.as_ref().is_some_and(|c| c.name == column) || ["seq", "prev_hash", "hash"].contains(&column) {
        refuse("The chain rests on it.", None);
    }
    let not_null = select_one::<bool>(
        "SELECT attnotnull FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attname = $2",
        &[relid.into(), column.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if not_null {
        refuse(
            "It is NOT NULL, and an erased value reads as NULL.",
            Some("A superuser may drop the NOT NULL constraint first (the definition changes, and ledger.verify says so)."),
        );
    }
}

/// An erasable column of a tracked table is one of its columns outside its primary key (the
/// history's chains are named by the key).
fn check_erasable_member(tracked: Oid, column: &str) {
    let name = layout::qualified_name(tracked);
    let (exists, in_key) = Spi::get_two_with_args::<bool, bool>(
        "SELECT true, a.attname = ANY (t.key_columns) FROM pg_catalog.pg_attribute a, ledger.tracked t \
         WHERE a.attrelid = $1 AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped AND t.tbl = $1",
        &[tracked.into(), column.into()],
    )
    .unwrap_or((None, None));
    let why = match (exists.unwrap_or(false), in_key.unwrap_or(false)) {
        (false, _) => "It is not a column of the table.",
        (true, true) => "It is in the primary key, which names the row's chain in the history.",
        (true, false) => return,
    };
    raise(
        LedgerError::new(SqlState::InvalidParameterValue, format!("column \"{column}\" of {name} cannot be erasable"))
            .detail(why),
    );
}

/// The registered erasable columns in words, for the audit chain.
fn erasable_text(relid: Oid) -> String {
    select_one::<String>(
        "SELECT coalesce(array_to_string(erasable, ', '), 'none') FROM ledger.ledgers WHERE tbl = $1",
        &[relid.into()],
    )
    .map_err(|e| spi_error("cannot read the ledger registry", e))
    .or_raise()
    .unwrap_or_default()
}

/// Adds `ledger_erasure` to the table, and registers the definition that has it (an `alter` event).
fn add_erasure_column(relid: Oid, name: &str, actor: &str) {
    ADDING_COLUMN.with(|a| a.set(Some(relid)));
    let _cleared = OnDrop(|| ADDING_COLUMN.with(|a| a.set(None)));
    // A partitioned ledger's partitions get the column too (PostgreSQL refuses ONLY there).
    let only = if layout::is_partitioned(relid) { "" } else { "ONLY " };
    lifecycle::as_extension_owner(|| {
        Spi::run(&format!("ALTER TABLE {only}{name} ADD COLUMN {} jsonb", quote_ident(ERASURE_COLUMN)))
            .map_err(|e| spi_error("cannot add the erasure column", e))
            .or_raise()
    });
    lifecycle::register_definition_change(
        relid,
        name,
        actor,
        &format!("added column {ERASURE_COLUMN} (jsonb), where records keep the salts of their erasable values"),
    );
}

/// Erases the erasable values of one record (of a history-tracked table: of every version of one
/// row, which must have been deleted): each value is set to NULL (a member of a version's `row`:
/// to JSON null) and its salt replaced by the commitment, so the record's hash stays. Only the
/// table's owner (or a superuser) may; the reason goes into the ledger's chain of `ledger.events`.
/// Returns how many values were erased.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn redact(
    tbl: Option<PgRelation>,
    chain: Option<&str>,
    seq: default!(Option<i64>, "NULL"),
    reason: default!(Option<&str>, "NULL"),
) -> i32 {
    let (tbl, reason) = (required(tbl, "tbl"), required(reason, "reason"));
    lifecycle::require_primary("erase values of a ledger");
    let named = tbl.oid();
    drop(tbl);
    let tracked = crate::history::history_of(named);
    let relid = tracked.unwrap_or(named);
    let layout = layout::for_relation(relid);
    let name = layout.qualified_name.clone();
    lifecycle::require_owner(named, &layout::qualified_name(named), "erase values of its records");
    if reason.trim().is_empty() {
        raise(
            LedgerError::new(SqlState::InvalidParameterValue, "an erasure needs a reason")
                .hint("The reason is kept in the ledger's chain of ledger.events."),
        );
    }
    if layout.erasure.is_none() {
        raise(
            LedgerError::new(SqlState::ObjectNotInPrerequisiteState, format!("ledger {name} has no erasable columns"))
                .hint("ledger.set_erasable(tbl, columns) makes columns erasable for the records appended after it."),
        );
    }
    let (records, key) = match (tracked, seq) {
        (None, None) => raise(LedgerError::new(SqlState::NullValueNotAllowed, "seq must not be null")),
        (None, Some(seq)) => (vec![find_record(&layout, chain, seq)], None),
        (Some(_), _) => {
            // A history ledger is never partitioned: its versions are in the table itself.
            let (versions, key) = versions_of_deleted_row(&layout, named, chain, seq);
            (versions.into_iter().map(|(tid, text)| (relid, tid, text)).collect(), Some(key))
        }
    };
    // SAFETY: a registered ledger, locked for the updates to come.
    let _locked = unsafe { PgRelation::with_lock(relid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE) };
    let mut erased: Vec<String> = Vec::new();
    let mut values = 0;
    for (storage, tid, _) in &records {
        for column in erase_record(*storage, *tid) {
            values += 1;
            if !erased.contains(&column) {
                erased.push(column);
            }
        }
    }
    let what = match (key, records.first()) {
        (Some(key), _) if records.len() > 1 => format!("the {} versions of row {key}", records.len()),
        (_, Some((_, _, text))) => text.clone(),
        (_, None) => String::new(),
    };
    if erased.is_empty() {
        raise(
            LedgerError::new(
                SqlState::ObjectNotInPrerequisiteState,
                format!("{what} of ledger {name} has no values to erase"),
            )
            .detail("Its values were appended before any of its columns were erasable, or are erased already."),
        );
    }
    let actor = lifecycle::current_role();
    let definition = lifecycle::current_definition(relid);
    let reason = format!("{what}: erased {}: {reason}", erased.join(", "));
    lifecycle::as_extension_owner(|| lifecycle::record_event(&name, "redact", &actor, &definition, Some(&reason)));
    values
}

/// The versions of one row of a tracked table (its key's chain in the history; `seq`: that one
/// only), once the row is deleted: erasing a row's history while the row is in the table would
/// leave the table unlike the replay of its history.
fn versions_of_deleted_row(
    layout: &Layout,
    tracked: Oid,
    chain: Option<&str>,
    seq: Option<i64>,
) -> (Vec<(pg_sys::ItemPointerData, String)>, String) {
    let Some(key) = chain else {
        raise(
            LedgerError::new(SqlState::NullValueNotAllowed, "a history-tracked table's row is named by its key")
                .hint("Pass the key as the history names it, e.g. '{\"id\": 1}'."),
        );
    };
    // As the history names it: '{"id":1}', '{"id": 1.0}' and '{"id": 1}' are one key.
    let key = crate::history::history_key(tracked, key);
    let key = key.as_str();
    let head = select_one::<String>(
        &format!("SELECT op FROM ONLY {} WHERE key = $1 ORDER BY seq DESC LIMIT 1", layout.qualified_name),
        &[key.into()],
    )
    .map_err(|e| spi_error("cannot read the history", e))
    .or_raise();
    match head.as_deref() {
        None => raise(LedgerError::new(
            SqlState::UndefinedObject,
            format!("{} has no row with key {key}", layout::qualified_name(tracked)),
        )),
        Some("delete") => {}
        Some(_) => raise(
            LedgerError::new(
                SqlState::ObjectNotInPrerequisiteState,
                format!("the row with key {key} is still in {}", layout::qualified_name(tracked)),
            )
            .detail(
                "Its history can be erased once the row is deleted (the table must stay the replay of its history).",
            )
            .hint("DELETE the row first."),
        ),
    }
    let query = format!(
        "SELECT ctid, seq FROM ONLY {} WHERE key = $1 AND ($2::bigint IS NULL OR seq = $2) ORDER BY seq",
        layout.qualified_name
    );
    let rows: Vec<(pg_sys::ItemPointerData, i64)> = Spi::connect(|client| {
        let mut rows = client.select(query.as_str(), None, &[key.into(), seq.into()])?;
        let mut out = Vec::new();
        while rows.next().is_some() {
            // SAFETY: a tid datum, copied out of SPI memory.
            let tid = rows.get_datum_by_ordinal(1)?.map(|d| unsafe { *d.cast_mut_ptr::<pg_sys::ItemPointerData>() });
            out.push((tid.expect("ctid is never null"), rows.get::<i64>(2)?.unwrap_or(0)));
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .map_err(|e| spi_error("cannot read the history", e))
    .or_raise();
    if rows.is_empty() {
        raise(LedgerError::new(
            SqlState::UndefinedObject,
            format!("ledger {} has no record with seq {} in that chain", layout.qualified_name, seq.unwrap_or(0)),
        ));
    }
    (rows.into_iter().map(|(tid, s)| (tid, format!("record {s} of chain {key}"))).collect(), key.to_string())
}

/// Erases what is still erasable in one record, after checking that it verifies; returns the
/// names of the values erased (none when there were none left).
fn erase_record(storage: Oid, mut tid: pg_sys::ItemPointerData) -> Vec<String> {
    // The layout of the relation holding the record: the ledger, or its partition.
    let layout = &*layout::for_relation(storage);
    let erasure = layout.erasure.expect("checked by the caller");
    let name = &layout.qualified_name;
    let tid_datum = Datum::from(std::ptr::addr_of_mut!(tid));
    // SAFETY: `storage` holds records of a ledger, locked by the caller.
    let relation = unsafe { PgRelation::with_lock(storage, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE) };
    // SAFETY: a ctid just read from this relation.
    let stored = unsafe { fetch_row(relation.as_ptr(), tid_datum) }.expect("the row the query just saw");
    // SAFETY: the deformed datums of a row of this table.
    let (_, intact) = unsafe { RecordScratch::default().recompute(layout, &stored.values, &stored.nulls) };
    let seq = if stored.nulls[layout.seq] { 0 } else { stored.values[layout.seq].value() as i64 };
    if !intact {
        raise(
            LedgerError::new(
                SqlState::DataCorrupted,
                format!("cannot erase values of ledger {name}: record {seq} of the chain does not verify"),
            )
            .hint("Run ledger.verify() on the ledger: nothing was erased."),
        );
    }
    // SAFETY: the erasure column is jsonb.
    let kept = if stored.nulls[erasure] { Vec::new() } else { unsafe { entries_of(stored.values[erasure]) } };
    let mut reader = crate::datum::DatumReader::new();
    let mut object = Map::new();
    let mut erased_columns: Vec<String> = Vec::new();
    // Per jsonb column with members erased: those members, each to become JSON null.
    let mut nulled_members: Vec<(String, Map<String, Json>)> = Vec::new();
    for (column, entry) in &kept {
        let Some(hashed) = layout.columns.iter().find(|c| &c.name == column) else { continue };
        reader.begin_record();
        let value = if stored.nulls[hashed.index] {
            Value::Null
        } else {
            // SAFETY: a datum of the column's type.
            unsafe { reader.read(hashed.column_type, stored.values[hashed.index]) }
        };
        match entry {
            Entry::Value(Erasable::Erased(c)) => {
                object.insert(column.clone(), entry_json(&Erasable::Erased(*c)));
            }
            Entry::Value(Erasable::Salt(salt)) => {
                let c = commitment(salt, column, hashed.column_type, &value).or_raise();
                object.insert(column.clone(), entry_json(&Erasable::Erased(c)));
                erased_columns.push(column.clone());
            }
            Entry::Members(members) => {
                let Value::Jsonb(canonical) = value else { continue };
                let mut kept_members = Map::new();
                let mut nulled = Map::new();
                for (member, e) in members {
                    let entry = match (e, member_value(canonical, member).or_raise()) {
                        (Erasable::Salt(salt), Some(v)) => {
                            nulled.insert(member.clone(), Json::Null);
                            Erasable::Erased(member_commitment(salt, v))
                        }
                        (other, _) => *other,
                    };
                    kept_members.insert(member.clone(), entry_json(&entry));
                }
                object.insert(column.clone(), json!({ "members": kept_members }));
                if !nulled.is_empty() {
                    nulled_members.push((column.clone(), nulled));
                }
            }
        }
    }
    drop(stored);
    let erased: Vec<String> = erased_columns
        .iter()
        .cloned()
        .chain(nulled_members.iter().flat_map(|(_, members)| members.keys().cloned()))
        .collect();
    if erased.is_empty() {
        return erased;
    }
    let mut sets: Vec<String> = erased_columns.iter().map(|c| format!("{} = NULL", quote_ident(c))).collect();
    // Each erased member of a jsonb column becomes JSON null (the object keeps its keys).
    for (i, (column, _)) in nulled_members.iter().enumerate() {
        let column = quote_ident(column);
        sets.push(format!("{column} = {column} || ${}", i + 3));
    }
    let update = format!(
        "UPDATE ONLY {} SET {}, {} = $1 WHERE ctid = $2 RETURNING 1",
        layout::qualified_name(storage),
        sets.join(", "),
        quote_ident(ERASURE_COLUMN)
    );
    // An erased value of a unique key frees the key, and rows being skipped as conflicting with
    // this one rely on it staying (src/conflict.rs).
    // SAFETY: inside the caller's transaction.
    unsafe { crate::conflict::lock_out_skipping(layout.relid) };
    REDACTING.with(|r| *r.borrow_mut() = Some((storage, tid)));
    let _cleared = OnDrop(|| {
        REDACTING.with(|r| r.borrow_mut().take());
    });
    let updated = lifecycle::as_extension_owner(|| {
        Spi::connect_mut(|client| {
            // SAFETY: a tid datum (it points at `tid`, alive here).
            let mut args: Vec<DatumWithOid> =
                vec![JsonB(Json::Object(object)).into(), unsafe { DatumWithOid::new(tid_datum, pg_sys::TIDOID) }];
            args.extend(nulled_members.into_iter().map(|(_, members)| JsonB(Json::Object(members)).into()));
            Ok::<_, pgrx::spi::Error>(client.update(update.as_str(), None, &args)?.len())
        })
    })
    .map_err(|e| spi_error("cannot erase the values", e))
    .or_raise();
    if updated != 1 {
        raise(
            LedgerError::new(
                SqlState::SerializationFailure,
                format!("record {seq} of ledger {name} changed while its values were erased"),
            )
            .detail("Another transaction erased it first.")
            .hint("Run ledger.redact() again."),
        );
    }
    erased
}

/// Where record `seq` of a chain (given as text) is (the relation, the ledger or one of its
/// partitions, and the ctid), and how the audit chain names the record.
fn find_record(layout: &Layout, chain: Option<&str>, seq: i64) -> (Oid, pg_sys::ItemPointerData, String) {
    let (storage, tid) = crate::verify::record_tid(layout, chain, seq);
    let text = match crate::verify::canonical_chain_text(layout, chain) {
        Some(c) => format!("record {seq} of chain {c}"),
        None => format!("record {seq}"),
    };
    (storage, tid, text)
}
