//! The triggers every ledger table carries: `append_row` chains each inserted row, `refuse_change`
//! refuses UPDATE, DELETE and TRUNCATE.

use crate::conflict;
use crate::datum::{text_datum, text_datum_to_str, DatumReader};
use crate::erasure::{self, Entry};
use crate::error::{raise, OrRaise};
use crate::head;
use crate::layout::HashedColumn;
use crate::layout::{self, Layout};
use crate::metrics::{self, Refusal};
use ledger_core::canonical::{chain_key_bytes, commitment, Erasable, RecordEncoder, Value};
use ledger_core::hash::{parse_hex, to_hex, Digest};
use ledger_core::json::commit_members;
use ledger_core::{LedgerError, SqlState};
use pgrx::pg_sys::{self, Datum};
use pgrx::prelude::*;
use std::cell::RefCell;
use std::convert::Infallible;

/// Buffers reused from row to row.
#[derive(Default)]
pub struct RecordScratch {
    pub reader: DatumReader,
    pub encoder: RecordEncoder,
    pub chain_key: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<RecordScratch> = RefCell::new(RecordScratch::default());
}

impl RecordScratch {
    /// The canonical bytes of a record given its datums (seq and prev_hash already set).
    ///
    /// # Safety
    /// `values`/`nulls` must be the deformed datums of a tuple of the layout's table.
    pub unsafe fn encode(&mut self, layout: &Layout, values: &[Datum], nulls: &[bool]) -> &[u8] {
        self.reader.begin_record();
        // What the record keeps of its erasable columns (src/erasure.rs).
        let entries = match layout.erasure {
            Some(i) if !nulls[i] => erasure::entries_of(values[i]),
            _ => Vec::new(),
        };
        let entry_of = |column: &HashedColumn| entries.iter().find(|(n, _)| *n == column.name).map(|(_, e)| e);
        // A column added after the ledger was enabled is encoded only when it has a value (or had
        // one, erased since).
        let encoded = |column: &&HashedColumn| !(column.added && nulls[column.index] && entry_of(column).is_none());
        self.encoder.begin(layout.columns.iter().filter(encoded).count() as u32);
        for column in layout.columns.iter().filter(encoded) {
            let value = if nulls[column.index] {
                Value::Null
            } else {
                self.reader.read(column.column_type, values[column.index])
            };
            let written = match (entry_of(column), &value) {
                (Some(Entry::Value(Erasable::Salt(salt))), _) => {
                    commitment(salt, &column.name, column.column_type, &value)
                        .and_then(|c| self.encoder.committed_column(&column.name, &c))
                }
                // An erased column that holds a value again is encoded as the value: the record no
                // longer matches its hash.
                (Some(Entry::Value(Erasable::Erased(c))), Value::Null) => {
                    self.encoder.committed_column(&column.name, c)
                }
                (Some(Entry::Members(members)), Value::Jsonb(canonical)) => {
                    commit_members(canonical, |m| members.iter().find(|(n, _)| n == m).map(|(_, e)| *e)).and_then(
                        |committed| self.encoder.column(&column.name, column.column_type, &Value::Jsonb(&committed)),
                    )
                }
                _ => self.encoder.column(&column.name, column.column_type, &value),
            };
            if let Err(e) = written {
                raise(e);
            }
        }
        self.encoder.bytes()
    }

    /// A stored record's hash recomputed from its values, and whether its stored `hash` is that.
    ///
    /// # Safety
    /// As for [`Self::encode`].
    pub unsafe fn recompute(&mut self, layout: &Layout, values: &[Datum], nulls: &[bool]) -> (Digest, bool) {
        let computed = self.encoder_hash(layout, values, nulls);
        let stored = (!nulls[layout.hash]).then(|| text_datum_to_str(values[layout.hash]));
        (computed, stored == Some(to_hex(&computed).as_str()))
    }

    /// The chain key bytes of a record (empty for a single-chain table).
    ///
    /// # Safety
    /// As for [`Self::encode`].
    pub unsafe fn chain_key(&mut self, layout: &Layout, values: &[Datum], nulls: &[bool]) -> Option<Datum> {
        let Some(chain) = &layout.chain else {
            self.chain_key.clear();
            return None;
        };
        if nulls[chain.index] {
            raise(
                LedgerError::new(
                    SqlState::NotNullViolation,
                    format!("null value in chain column \"{}\" of ledger {}", chain.name, layout.qualified_name),
                )
                .detail("Every record of a ledger belongs to a chain chosen by this column."),
            );
        }
        self.reader.begin_record();
        let value = self.reader.read(chain.column_type, values[chain.index]);
        chain_key_bytes(&value, &mut self.chain_key);
        Some(values[chain.index])
    }
}

#[pg_trigger]
fn append_row<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByPostgres>>, Infallible> {
    let data = trigger.trigger_data();
    // SAFETY: PostgreSQL hands a BEFORE INSERT row trigger a valid relation and tuple.
    unsafe {
        let rel = data.tg_relation;
        let tupdesc = (*rel).rd_att;
        let layout = layout::for_relation((*rel).rd_id);
        if let Some(retired) = &layout.retired {
            metrics::count_refusal(layout.relid, Refusal::Retired);
            raise(
                LedgerError::new(
                    SqlState::ObjectNotInPrerequisiteState,
                    format!("ledger {} is retired", layout.qualified_name),
                )
                .detail(format!("It was {retired}."))
                .hint("A retired ledger stays verifiable but takes no more records."),
            );
        }
        if let Some(tracked) = layout.history_of {
            if !crate::history::appending_versions() {
                raise(
                    LedgerError::new(
                        SqlState::InsufficientPrivilege,
                        format!(
                            "ledger {} is the history of {}",
                            layout.qualified_name,
                            layout::qualified_name(tracked)
                        ),
                    )
                    .detail("Its versions are appended by the tracked table's trigger only.")
                    .hint("Change the tracked table instead."),
                );
            }
        }
        check_fires_last(data, &layout);
        let natts = (*tupdesc).natts as usize;
        let mut values = vec![Datum::from(0); natts];
        let mut nulls = vec![false; natts];
        pg_sys::heap_deform_tuple(data.tg_trigtuple, tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr());

        let new_tuple = SCRATCH.with(|s| {
            let mut scratch = s.borrow_mut();
            let chain_datum = scratch.chain_key(&layout, &values, &nulls);
            let chain_key = scratch.chain_key.clone();
            let supplied = Supplied::read(&layout, &values, &nulls);
            let skipping = conflict::skipping_inserts();
            // A row that conflicts with a stored one is skipped by the executor: it locks no chain
            // and gets no link of its own (src/conflict.rs), only values that pass NOT NULL.
            if skipping && supplied.is_empty() && conflict::conflicts_with_stored(&layout, rel, &values, &nulls) {
                values[layout.seq] = Datum::from(1i64);
                nulls[layout.seq] = false;
                nulls[layout.prev_hash] = true;
                values[layout.hash] = text_datum(&to_hex(&[0u8; 32]));
                nulls[layout.hash] = false;
                if let Some(i) = layout.erasure {
                    nulls[i] = true;
                }
                return pg_sys::heap_form_tuple(tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr());
            }
            let (seq, prev_hash) = head::next_link(&layout, rel, &chain_key, chain_datum, supplied.seq);
            supplied.check_seq(&layout, seq);
            supplied.check_prev_hash(&layout, prev_hash.as_ref());

            values[layout.seq] = Datum::from(seq);
            nulls[layout.seq] = false;
            // Fresh salts for the erasable columns; whatever the row brought there is replaced.
            if let Some(i) = layout.erasure {
                nulls[i] = layout.erasable.is_empty();
                if !layout.erasable.is_empty() {
                    values[i] = pgrx::JsonB(erasure::fresh_salts(&layout)).into_datum().expect("a jsonb datum");
                }
            }
            match &prev_hash {
                Some(h) => {
                    values[layout.prev_hash] = text_datum(&to_hex(h));
                    nulls[layout.prev_hash] = false;
                }
                None => nulls[layout.prev_hash] = true,
            }
            let hash = scratch.encoder_hash(&layout, &values, &nulls);
            supplied.check_hash(&layout, &hash);
            values[layout.hash] = text_datum(&to_hex(&hash));
            nulls[layout.hash] = false;

            // A row found to conflict only now (its key stored while this one waited for the chain,
            // or it supplied its own link) gets the next link too (it must pass NOT NULL), but the
            // chain's head stays where it is.
            if !(skipping && conflict::conflicts(&layout, rel, &values, &nulls)) {
                head::appended(&layout, &chain_key, chain_datum, seq, hash);
            }
            pg_sys::heap_form_tuple(tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr())
        });
        Ok(Some(PgHeapTuple::from_heap_tuple(pgrx::PgTupleDesc::from_pg_unchecked(tupdesc), new_tuple)))
    }
}

/// BEFORE triggers fire in name order, and one that fired after this one could change the row after
/// it was hashed: refuse the insert while such a trigger is enabled.
unsafe fn check_fires_last(data: &pg_sys::TriggerData, layout: &Layout) {
    let desc = (*data.tg_relation).trigdesc;
    if desc.is_null() {
        return;
    }
    let ours = (*data.tg_trigger).tgoid;
    let triggers = std::slice::from_raw_parts((*desc).triggers, (*desc).numtriggers as usize);
    let before_insert_row = pg_sys::TRIGGER_TYPE_ROW | pg_sys::TRIGGER_TYPE_BEFORE | pg_sys::TRIGGER_TYPE_INSERT;
    let replica = pg_sys::SessionReplicationRole == pg_sys::SESSION_REPLICATION_ROLE_REPLICA as i32;
    let after_ours = triggers.iter().skip_while(|t| t.tgoid != ours).skip(1);
    for trigger in after_ours {
        let kind = trigger.tgtype as u32;
        let fires = match trigger.tgenabled as u8 {
            pg_sys::TRIGGER_DISABLED => false,
            pg_sys::TRIGGER_FIRES_ALWAYS => true,
            pg_sys::TRIGGER_FIRES_ON_REPLICA => replica,
            _ => !replica,
        };
        if fires && kind & before_insert_row == before_insert_row && kind & pg_sys::TRIGGER_TYPE_INSTEAD == 0 {
            let name = std::ffi::CStr::from_ptr(trigger.tgname).to_string_lossy();
            raise(
                LedgerError::new(
                    SqlState::InvalidTableDefinition,
                    format!(
                        "trigger \"{name}\" on ledger {} fires after the ledger's append trigger",
                        layout.qualified_name
                    ),
                )
                .detail("It could change the row after the ledger hashed it.")
                .hint("Rename it to sort before \"zz_ledger_append\", or make it an AFTER trigger."),
            );
        }
    }
}

impl RecordScratch {
    unsafe fn encoder_hash(&mut self, layout: &Layout, values: &[Datum], nulls: &[bool]) -> Digest {
        self.encode(layout, values, nulls);
        self.encoder.hash()
    }
}

/// What the client put in seq, prev_hash and hash: accepted only if equal to what we compute,
/// so a client can assert the head it saw.
struct Supplied {
    seq: Option<i64>,
    prev_hash: Option<String>,
    hash: Option<String>,
}

impl Supplied {
    unsafe fn read(layout: &Layout, values: &[Datum], nulls: &[bool]) -> Supplied {
        // char(64) pads with blanks; they are not part of the value.
        let text = |i: usize| (!nulls[i]).then(|| text_datum_to_str(values[i]).trim_end_matches(' ').to_string());
        Supplied {
            seq: (!nulls[layout.seq]).then(|| values[layout.seq].value() as i64),
            prev_hash: text(layout.prev_hash),
            hash: text(layout.hash),
        }
    }

    /// Whether the row left every link column to the ledger.
    fn is_empty(&self) -> bool {
        self.seq.is_none() && self.prev_hash.is_none() && self.hash.is_none()
    }

    fn check_seq(&self, layout: &Layout, seq: i64) {
        if let Some(given) = self.seq {
            if given != seq {
                raise(mismatch(layout, "seq", &given.to_string(), &seq.to_string()));
            }
        }
    }

    fn check_prev_hash(&self, layout: &Layout, prev_hash: Option<&Digest>) {
        if let Some(given) = &self.prev_hash {
            let given_digest = parse_hex(given, "prev_hash").or_raise();
            if Some(&given_digest) != prev_hash {
                let expected = prev_hash.map_or("null (this is the chain's first record)".to_string(), to_hex);
                raise(mismatch(layout, "prev_hash", given, &expected));
            }
        }
    }

    fn check_hash(&self, layout: &Layout, hash: &Digest) {
        if let Some(given) = &self.hash {
            let given_digest = parse_hex(given, "hash").or_raise();
            if &given_digest != hash {
                raise(mismatch(layout, "hash", given, &to_hex(hash)));
            }
        }
    }
}

/// A supplied link that is not the chain's: counted as a forged link, then raised by the caller.
fn mismatch(layout: &Layout, column: &str, given: &str, expected: &str) -> LedgerError {
    metrics::count_refusal(layout.relid, Refusal::ForgedLink);
    LedgerError::new(
        SqlState::CheckViolation,
        format!("supplied {column} does not match the chain of ledger {}", layout.qualified_name),
    )
    .detail(format!("Supplied {given}, the chain requires {expected}."))
    .hint(format!("Leave {column} out of the INSERT and the ledger computes it."))
}

#[pg_trigger]
fn refuse_change<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByPostgres>>, Infallible> {
    let data = trigger.trigger_data();
    // SAFETY: PostgreSQL hands a trigger a valid relation.
    let relid = unsafe { (*data.tg_relation).rd_id };
    // The one deletion allowed: ledger.prune removing what it planned (src/retention.rs); the one
    // update: ledger.redact erasing a record's values (src/erasure.rs).
    if matches!(trigger.op(), Ok(PgTriggerOperation::Delete))
        // SAFETY: a row trigger's tuple is a row of its relation.
        && unsafe { crate::retention::permits_delete(data.tg_relation, data.tg_trigtuple) }
    {
        return Ok(trigger.old());
    }
    if matches!(trigger.op(), Ok(PgTriggerOperation::Update))
        // SAFETY: as above.
        && unsafe { erasure::permits_update(data.tg_relation, data.tg_trigtuple) }
    {
        return Ok(trigger.new());
    }
    let (operation, kind) = match trigger.op() {
        Ok(PgTriggerOperation::Update) => ("UPDATE", Some(Refusal::Update)),
        Ok(PgTriggerOperation::Delete) => ("DELETE", Some(Refusal::Delete)),
        Ok(PgTriggerOperation::Truncate) => ("TRUNCATE", Some(Refusal::Truncate)),
        _ => ("this change", None),
    };
    // A partition's refusal is its partitioned ledger's.
    let relid = layout::partition_parent(relid).unwrap_or(relid);
    if let Some(kind) = kind {
        metrics::count_refusal(relid, kind);
    }
    raise(
        LedgerError::new(
            SqlState::RestrictViolation,
            format!("{operation} is not allowed on ledger {}", layout::qualified_name(relid)),
        )
        .detail("Ledger tables are append-only: records can be added, never changed or removed.")
        .hint("Append a new record that corrects or reverses the old one."),
    )
}
