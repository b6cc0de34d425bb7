//! Erasure: `ledger.set_erasable` and `ledger.redact`. A record appended while a column is erasable
//! commits to its value through a salted hash (docs/FORMAT.md, "Erasable columns"), and keeps the
//! salt in its `ledger_erasure` column. `ledger.redact` removes the value and the salt and keeps the
//! commitment there, so the record's hash, and every chain, checkpoint, proof and digest, stay as
//! they were, while the value can no longer be read or guessed from what remains.

use crate::datum::{fetch_row, select_one, text_datum_to_str};
use crate::error::{raise, required, spi_error, OrRaise};
use crate::layout::{self, quote_ident, Layout};
use crate::lifecycle;
use crate::trigger::RecordScratch;
use crate::verify::chain_datum;
use ledger_core::canonical::commitment;
use ledger_core::hash::{self, parse_hex, to_hex, Digest};
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

/// What a record keeps of one erasable column.
#[derive(Clone, Copy)]
pub enum Entry {
    /// The value is there; the record commits to it with this salt.
    Salt([u8; 32]),
    /// The value was erased; this is the commitment the record's hash covers.
    Erased(Digest),
}

/// The entries of a record's `ledger_erasure` object, by column name. An ill-formed entry is no
/// entry: the column is then encoded as an ordinary one, and a record hashed with a commitment no
/// longer matches (as the offline verifier decides too).
pub fn entries(object: &Json) -> Vec<(String, Entry)> {
    let Some(members) = object.as_object() else { return Vec::new() };
    let digest = |v: &Json| v.as_str().and_then(|s| parse_hex(s, "erasure").ok());
    members
        .iter()
        .filter_map(|(name, entry)| {
            let entry = entry.as_object().filter(|e| e.len() == 1)?;
            match (entry.get("salt").and_then(digest), entry.get("erased").and_then(digest)) {
                (Some(salt), None) => Some((name.clone(), Entry::Salt(salt))),
                (None, Some(c)) => Some((name.clone(), Entry::Erased(c))),
                _ => None,
            }
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

/// A fresh `ledger_erasure` object: a new random salt for each of `columns`.
pub fn fresh_salts(columns: &[&str]) -> Json {
    let mut object = Map::new();
    for name in columns {
        let mut salt = [0u8; 32];
        // SAFETY: fills the buffer it is given.
        if !unsafe { pg_sys::pg_strong_random(salt.as_mut_ptr().cast(), salt.len()) } {
            raise(LedgerError::new(SqlState::SystemError, "could not generate a random salt"));
        }
        object.insert(name.to_string(), json!({ "salt": to_hex(&salt) }));
    }
    Json::Object(object)
}

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

/// Clears a thread-local flag however the work ends (an error unwinds through it).
struct Cleared<F: Fn()>(F);

impl<F: Fn()> Drop for Cleared<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// Makes `columns` of a ledger erasable for the records appended from now on (an empty array: none).
/// Each such record commits to those values through a salted hash, so `ledger.redact` can remove
/// them later while its hash stays. The change is an `erasable` event in `ledger.events`.
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
    let relid = tbl.oid();
    drop(tbl);
    let layout = layout::for_relation(relid);
    let name = layout.qualified_name.clone();
    if name.starts_with("ledger.") {
        raise(LedgerError::new(
            SqlState::FeatureNotSupported,
            format!("the extension's own ledger {name} cannot have erasable columns"),
        ));
    }
    if crate::history::tracked_by_history(relid).ok().flatten().is_some() {
        raise(
            LedgerError::new(SqlState::FeatureNotSupported, format!("{name} is a history ledger"))
                .hint("Erasure of a history-tracked table's versions is not supported yet."),
        );
    }
    lifecycle::require_owner(relid, &name, "make its columns erasable");
    for column in &columns {
        check_erasable(&layout, relid, column);
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
    let refuse = |why: &str| -> ! {
        raise(
            LedgerError::new(
                SqlState::InvalidParameterValue,
                format!("column \"{column}\" of ledger {name} cannot be erasable"),
            )
            .detail(why.to_string()),
        )
    };
    if !layout.columns.iter().any(|c| c.name == column) {
        refuse("It is not one of the ledger's hashed columns.");
    }
    if layout.chain.as_ref().is_some_and(|c| c.name == column) || ["seq", "prev_hash", "hash"].contains(&column) {
        refuse("The chain rests on it.");
    }
    let not_null = select_one::<bool>(
        "SELECT attnotnull FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attname = $2",
        &[relid.into(), column.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if not_null {
        raise(
            LedgerError::new(
                SqlState::InvalidParameterValue,
                format!("column \"{column}\" of ledger {name} cannot be erasable"),
            )
            .detail("It is NOT NULL, and an erased value reads as NULL.")
            .hint("A superuser may drop the NOT NULL constraint first (the definition changes, and ledger.verify says so)."),
        );
    }
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
    let _cleared = Cleared(|| ADDING_COLUMN.with(|a| a.set(None)));
    lifecycle::as_extension_owner(|| {
        Spi::run(&format!("ALTER TABLE ONLY {name} ADD COLUMN {} jsonb", quote_ident(ERASURE_COLUMN)))
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

/// Erases the erasable values of one record: each value is set to NULL and its salt replaced by the
/// commitment, so the record's hash stays. Only the table's owner (or a superuser) may; the reason
/// goes into the ledger's chain of `ledger.events`. Returns how many values were erased.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn redact(tbl: Option<PgRelation>, chain: Option<&str>, seq: Option<i64>, reason: Option<&str>) -> i32 {
    let (tbl, seq, reason) = (required(tbl, "tbl"), required(seq, "seq"), required(reason, "reason"));
    lifecycle::require_primary("erase values of a ledger");
    let relid = tbl.oid();
    let layout = layout::for_relation(relid);
    let name = layout.qualified_name.clone();
    lifecycle::require_owner(relid, &name, "erase values of its records");
    if reason.trim().is_empty() {
        raise(
            LedgerError::new(SqlState::InvalidParameterValue, "an erasure needs a reason")
                .hint("The reason is kept in the ledger's chain of ledger.events."),
        );
    }
    let Some(erasure) = layout.erasure else {
        raise(
            LedgerError::new(SqlState::ObjectNotInPrerequisiteState, format!("ledger {name} has no erasable columns"))
                .hint("ledger.set_erasable(tbl, columns) makes columns erasable for the records appended after it."),
        );
    };
    let (mut tid, row_text) = find_record(&layout, chain, seq);
    let tid_datum = Datum::from(std::ptr::addr_of_mut!(tid));
    // SAFETY: a ctid just read from this table, open as `tbl`.
    let stored = unsafe { fetch_row(tbl.as_ptr(), tid_datum) }.expect("the row the query just saw");
    let mut scratch = RecordScratch::default();
    // SAFETY: the deformed datums of a row of this table.
    let computed = hash::sha3_256(unsafe { scratch.encode(&layout, &stored.values, &stored.nulls) });
    // SAFETY: as above; `hash` is a char(64) column.
    let stored_hash = (!stored.nulls[layout.hash]).then(|| unsafe { text_datum_to_str(stored.values[layout.hash]) });
    if stored_hash != Some(to_hex(&computed).as_str()) {
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
    let mut object = Map::new();
    let mut erased = Vec::new();
    for (column, entry) in &kept {
        let Some(hashed) = layout.columns.iter().find(|c| &c.name == column) else { continue };
        let commitment = match entry {
            Entry::Erased(c) => *c,
            Entry::Salt(salt) => {
                let mut reader = crate::datum::DatumReader::new();
                let value = if stored.nulls[hashed.index] {
                    ledger_core::canonical::Value::Null
                } else {
                    // SAFETY: a datum of the column's type.
                    unsafe { reader.read(hashed.column_type, stored.values[hashed.index]) }
                };
                erased.push(column.clone());
                commitment(salt, column, hashed.column_type, &value).or_raise()
            }
        };
        object.insert(column.clone(), json!({ "erased": to_hex(&commitment) }));
    }
    drop(stored);
    if erased.is_empty() {
        raise(
            LedgerError::new(
                SqlState::ObjectNotInPrerequisiteState,
                format!("record {seq} of that chain of ledger {name} has no values to erase"),
            )
            .detail(if kept.is_empty() {
                "It was appended before any of its columns were erasable.".to_string()
            } else {
                "Its erasable values are erased already.".to_string()
            }),
        );
    }
    let sets: Vec<String> = erased.iter().map(|c| format!("{} = NULL", quote_ident(c))).collect();
    let update =
        format!("UPDATE ONLY {name} SET {}, {} = $1 WHERE ctid = $2", sets.join(", "), quote_ident(ERASURE_COLUMN));
    REDACTING.with(|r| *r.borrow_mut() = Some((relid, tid)));
    let _cleared = Cleared(|| {
        REDACTING.with(|r| r.borrow_mut().take());
    });
    lifecycle::as_extension_owner(|| {
        Spi::connect_mut(|client| {
            client.update(
                update.as_str(),
                None,
                // SAFETY: a tid datum (it points at `tid`, alive here).
                &[JsonB(Json::Object(object)).into(), unsafe { DatumWithOid::new(tid_datum, pg_sys::TIDOID) }],
            )?;
            Ok::<_, pgrx::spi::Error>(())
        })
    })
    .map_err(|e| spi_error("cannot erase the values", e))
    .or_raise();
    let actor = lifecycle::current_role();
    let definition = lifecycle::current_definition(relid);
    let what = format!("{row_text}: erased {}: {reason}", erased.join(", "));
    lifecycle::as_extension_owner(|| lifecycle::record_event(&name, "redact", &actor, &definition, Some(&what)));
    erased.len() as i32
}

/// The ctid of record `seq` of a chain (given as text), and how the audit chain names the record.
fn find_record(layout: &Layout, chain: Option<&str>, seq: i64) -> (pg_sys::ItemPointerData, String) {
    if layout.chain.is_some() && chain.is_none() {
        raise(
            LedgerError::new(
                SqlState::InvalidParameterValue,
                format!("ledger {} has several chains", layout.qualified_name),
            )
            .hint("Name the chain."),
        );
    }
    let chain_value = chain_datum(layout, chain);
    let filter = chain_value.map(|(c, _)| format!("{} = $2 AND", quote_ident(&c.name))).unwrap_or_default();
    let query = format!("SELECT ctid FROM ONLY {} WHERE {filter} seq = $1", layout.qualified_name);
    let mut args: Vec<DatumWithOid> = vec![seq.into()];
    if let Some((column, datum)) = chain_value {
        // SAFETY: a datum of the chain column's type.
        args.push(unsafe { DatumWithOid::new(datum, column.type_oid) });
    }
    let tid = Spi::connect(|client| {
        let rows = client.select(query.as_str(), Some(1), &args)?;
        if rows.is_empty() {
            return Ok(None);
        }
        // Copied out: the datum points into SPI memory, freed when the connection closes.
        // SAFETY: a tid datum.
        Ok(rows.first().get_datum_by_ordinal(1)?.map(|d| unsafe { *d.cast_mut_ptr::<pg_sys::ItemPointerData>() }))
    })
    .map_err(|e: pgrx::spi::Error| spi_error("cannot read the record", e))
    .or_raise()
    .unwrap_or_else(|| {
        raise(LedgerError::new(
            SqlState::UndefinedObject,
            format!("ledger {} has no record with seq {seq} in that chain", layout.qualified_name),
        ))
    });
    let text = match crate::verify::canonical_chain_text(layout, chain) {
        Some(c) => format!("record {seq} of chain {c}"),
        None => format!("record {seq}"),
    };
    (tid, text)
}
