//! `ledger.verify`, `ledger.canonical_bytes` and `ledger.sha3_256`: recompute every record's hash
//! from what is stored and check the links. Reads only, so it runs on hot standbys too.

use crate::confirm::Confirmer;
use crate::datum::{fetch_row, text_datum_to_str, DatumReader};
use crate::error::{raise, required, OrRaise};
use crate::guc;
use crate::layout::{self, ChainColumn, Layout};
use crate::lifecycle;
use crate::retention::{self, PrunedChain};
use crate::trigger::RecordScratch;
use ledger_core::canonical::chain_key_bytes;
use ledger_core::chain::{check_chain_from, Link};
use ledger_core::definition;
use ledger_core::hash;
use ledger_core::{LedgerError, SqlState};
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::{self, Datum};
use pgrx::prelude::*;
use pgrx::{PgMemoryContexts, PgRelation};
use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString};

/// A chain given as text, parsed by the chain column's own input function. None when no chain is
/// named; an error when the table has no chains to name.
pub fn chain_datum<'l>(layout: &'l Layout, chain: Option<&str>) -> Option<(&'l ChainColumn, Datum)> {
    let text = chain?;
    let Some(column) = &layout.chain else {
        raise(
            LedgerError::new(
                SqlState::InvalidParameterValue,
                format!("ledger {} has a single chain", layout.qualified_name),
            )
            .hint("Pass chain => NULL."),
        );
    };
    let c_text = CString::new(text).unwrap_or_else(|_| {
        raise(LedgerError::new(SqlState::InvalidParameterValue, "chain must not contain NUL characters"))
    });
    // SAFETY: the type's input function parses the text (raising its own error on bad input).
    unsafe {
        let mut input_fn = pg_sys::InvalidOid;
        let mut io_param = pg_sys::InvalidOid;
        pg_sys::getTypeInputInfo(column.type_oid, &mut input_fn, &mut io_param);
        Some((column, pg_sys::OidInputFunctionCall(input_fn, c_text.as_ptr() as *mut _, io_param, -1)))
    }
}

/// The condition on a query's rows that selects one chain (given as text): `<chain column> = $n`
/// with the chain's value as the argument, or `true` for a single-chain ledger. An error when a
/// ledger with chains is not told which one.
pub fn chain_condition(
    layout: &Layout,
    chain: Option<&str>,
    n: usize,
) -> Result<(String, Option<DatumWithOid<'static>>), LedgerError> {
    if layout.chain.is_some() && chain.is_none() {
        return Err(LedgerError::new(
            SqlState::InvalidParameterValue,
            format!("ledger {} has several chains", layout.qualified_name),
        )
        .hint("Name the chain."));
    }
    Ok(match chain_datum(layout, chain) {
        None => ("true".to_string(), None),
        // SAFETY: the datum was made by the chain column type's input function.
        Some((column, datum)) => (
            format!("{} = ${n}", layout::quote_ident(&column.name)),
            Some(unsafe { DatumWithOid::new(datum, column.type_oid) }),
        ),
    })
}

/// A chain given as text, written the way the chain column's type writes it under fixed settings
/// (so an upper-case uuid and its lower-case form, or one time in two time zones, name one chain).
pub fn canonical_chain_text(layout: &Layout, chain: Option<&str>) -> Option<String> {
    let (column, datum) = chain_datum(layout, chain)?;
    // SAFETY: the datum is of the column's type.
    Some(unsafe { output_text(column.type_oid, datum) })
}

/// A chain value's canonical text, as checkpoints and `ledger.pruned` name its chain.
///
/// # Safety
/// `datum` must be a valid datum of the column's type.
pub unsafe fn chain_text_of(column: &ChainColumn, datum: Datum) -> String {
    output_text(column.type_oid, datum)
}

/// A value's text under [`guc::CANONICAL_OUTPUT`], as the export writes it.
///
/// # Safety
/// `datum` must be a valid datum of type `type_oid`.
unsafe fn output_text(type_oid: pg_sys::Oid, datum: Datum) -> String {
    let mut output_fn = pg_sys::InvalidOid;
    let mut is_varlena = false;
    pg_sys::getTypeOutputInfo(type_oid, &mut output_fn, &mut is_varlena);
    guc::with_settings(guc::CANONICAL_OUTPUT, || {
        CStr::from_ptr(pg_sys::OidOutputFunctionCall(output_fn, datum)).to_string_lossy().into_owned()
    })
}

/// The chain key bytes of a chain given as text.
pub fn chain_key_of(layout: &Layout, chain: Option<&str>) -> Option<Vec<u8>> {
    let (column, datum) = chain_datum(layout, chain)?;
    let mut reader = DatumReader::new();
    // SAFETY: the datum was just made by the column type's input function.
    let value = unsafe { reader.read(column.column_type, datum) };
    let mut key = Vec::new();
    chain_key_bytes(&value, &mut key);
    Some(key)
}

/// The chain value as text, for reports.
unsafe fn chain_text(layout: &Layout, values: &[Datum], nulls: &[bool]) -> Option<String> {
    let column = layout.chain.as_ref()?;
    if nulls[column.index] {
        return None;
    }
    Some(output_text(column.type_oid, values[column.index]))
}

struct ChainLinks {
    text: Option<String>,
    links: Vec<Link>,
}

/// (chain, seq, problem, detail) rows, as `ledger.verify` returns them.
pub type Findings = Vec<(Option<String>, Option<i64>, String, String)>;

/// What a verification found, and how much it read.
pub struct Verified {
    pub findings: Findings,
    pub records: i64,
    pub chains: i64,
}

/// Recomputes every record's hash and checks every chain. A first pass confirms intact chains as
/// it goes, keeping only each chain's head, so memory does not grow with the table; the records of
/// any chain it cannot confirm are read again and checked in full, which names every problem.
pub fn verify_table(relation: &PgRelation, chain: Option<&str>) -> Verified {
    let layout = layout::for_relation(relation.oid());
    let wanted = chain_key_of(&layout, chain);
    let pruned = pruned_chains(&layout, chain);
    let mut confirmer = Confirmer::new(&pruned);
    let mut records = 0i64;
    // SAFETY: the callback gets the deformed datums of a row of this table.
    unsafe {
        scan_records(&layout, wanted.as_deref(), |layout, scratch, values, nulls| {
            records += 1;
            let text_at = |i: usize| (!nulls[i]).then(|| text_datum_to_str(values[i]).as_bytes());
            let seq = (!nulls[layout.seq]).then(|| values[layout.seq].value() as i64);
            let (hash, prev_hash) = (text_at(layout.hash), text_at(layout.prev_hash));
            // Out of the scratch while its encoder holds the record's bytes.
            let chain_key = std::mem::take(&mut scratch.chain_key);
            confirmer.push(scratch.encode(layout, values, nulls), &chain_key, seq, hash, prev_hash);
            scratch.chain_key = chain_key;
        });
    }
    let streams = confirmer.finish();
    // A pruned chain is checked in full when its kept hashes have gaps or no record of it is left.
    let pruned_only: HashSet<Vec<u8>> = pruned.keys().filter(|k| !streams.contains_key(*k)).cloned().collect();
    let chain_count = (streams.len() + pruned_only.len()) as i64;
    let mut broken: HashSet<Vec<u8>> = streams.into_iter().filter(|(_, s)| !s.intact()).map(|(k, _)| k).collect();
    broken.extend(pruned.iter().filter(|(_, p)| !p.gaps.is_empty()).map(|(k, _)| k.clone()));
    if broken.is_empty() && pruned_only.is_empty() {
        return Verified { findings: Vec::new(), records, chains: chain_count };
    }
    let mut chains: HashMap<Vec<u8>, ChainLinks> = HashMap::new();
    // SAFETY: as above.
    unsafe {
        scan_records(&layout, wanted.as_deref(), |layout, scratch, values, nulls| {
            if !broken.contains(scratch.chain_key.as_slice()) {
                return;
            }
            let computed = hash::sha3_256(scratch.encode(layout, values, nulls));
            let text_at = |i: usize| (!nulls[i]).then(|| text_datum_to_str(values[i]));
            let link = Link::from_stored(
                (!nulls[layout.seq]).then(|| values[layout.seq].value() as i64),
                text_at(layout.hash),
                text_at(layout.prev_hash),
                &computed,
            );
            let entry = match chains.get_mut(scratch.chain_key.as_slice()) {
                Some(entry) => entry,
                None => {
                    let text = chain_text(layout, values, nulls);
                    chains.entry(scratch.chain_key.clone()).or_insert(ChainLinks { text, links: Vec::new() })
                }
            };
            entry.links.push(link);
        });
    }
    for key in pruned_only {
        let text = pruned[&key].chain.clone();
        chains.insert(key, ChainLinks { text, links: Vec::new() });
    }
    let mut chains: Vec<(Vec<u8>, ChainLinks)> = chains.into_iter().collect();
    chains.sort_by(|a, b| a.1.text.cmp(&b.1.text));
    let mut findings = Vec::new();
    for (key, chain) in chains {
        let kept = pruned.get(&key);
        let anchor = kept.map(|p| p.anchor).unwrap_or_default();
        for (seq, detail) in kept.map(|p| p.gaps.as_slice()).unwrap_or_default() {
            findings.push((chain.text.clone(), Some(*seq), "pruned_gap".to_string(), detail.clone()));
        }
        if chain.links.is_empty() {
            let next = anchor.pruned_through + 1;
            findings.push((
                chain.text.clone(),
                Some(next),
                "seq_gap".to_string(),
                format!("expected seq {next}: the chain has no records after its pruned part"),
            ));
            continue;
        }
        for finding in check_chain_from(anchor, chain.links) {
            findings.push((chain.text.clone(), finding.seq, finding.problem.name().to_string(), finding.detail));
        }
    }
    Verified { findings, records, chains: chain_count }
}

/// The pruned chains of the ledger (of the one named, if any), by chain key.
fn pruned_chains(layout: &Layout, chain: Option<&str>) -> HashMap<Vec<u8>, PrunedChain> {
    if !layout.pruned {
        return HashMap::new();
    }
    let only = chain.map(|_| canonical_chain_text(layout, chain));
    retention::pruned_chains(&layout.qualified_name, only.as_ref().map(Option::as_deref))
        .into_iter()
        .map(|p| (chain_key_of(layout, p.chain.as_deref()).unwrap_or_default(), p))
        .collect()
}

/// Calls `each` with every row of the ledger (of the `wanted` chain only, when given), with the
/// layout of the relation holding it (the table, or one of its partitions in bound order) and its
/// chain key in `scratch.chain_key`.
///
/// # Safety
/// `layout` must be the ledger's own layout.
unsafe fn scan_records(
    layout: &Layout,
    wanted: Option<&[u8]>,
    mut each: impl FnMut(&Layout, &mut RecordScratch, &[Datum], &[bool]),
) {
    let mut scratch = RecordScratch::default();
    let row_memory = PgMemoryContexts::new("ledger.verify row");
    // Every relation is locked before the first is read, so a prune cannot drop a partition (one it
    // emptied) between them; one dropped before is skipped: it held no record.
    let relations: Vec<(pg_sys::Oid, PgRelation)> = layout
        .storages()
        .into_iter()
        .filter_map(|oid| {
            let rel = pg_sys::try_relation_open(oid, pg_sys::AccessShareLock as i32);
            (!rel.is_null()).then(|| (oid, PgRelation::from_pg_owned(rel)))
        })
        .collect();
    for (storage, relation) in &relations {
        let storage = *storage;
        let storage_layout = if storage == layout.relid { None } else { Some(layout::for_relation(storage)) };
        let layout = storage_layout.as_deref().unwrap_or(layout);
        let rel = relation.as_ptr();
        let tupdesc = (*rel).rd_att;
        let natts = (*tupdesc).natts as usize;
        let mut values = vec![Datum::from(0); natts];
        let mut nulls = vec![false; natts];
        let scan = pg_sys::table_beginscan(rel, pg_sys::GetActiveSnapshot(), 0, std::ptr::null_mut());
        // What reading a record pallocs (detoasted values, output text) goes here, freed in batches.
        let old = pg_sys::MemoryContextSwitchTo(row_memory.value());
        let mut rows_since_reset = 0u32;
        loop {
            let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tuple.is_null() {
                break;
            }
            pg_sys::heap_deform_tuple(tuple, tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr());
            scratch.chain_key.clear();
            if let Some(column) = &layout.chain {
                if !nulls[column.index] {
                    scratch.reader.begin_record();
                    let value = scratch.reader.read(column.column_type, values[column.index]);
                    chain_key_bytes(&value, &mut scratch.chain_key);
                }
            }
            if wanted.is_none_or(|w| w == scratch.chain_key) {
                each(layout, &mut scratch, &values, &nulls);
            }
            rows_since_reset += 1;
            if rows_since_reset == 1024 {
                pg_sys::MemoryContextReset(row_memory.value());
                rows_since_reset = 0;
            }
        }
        pg_sys::MemoryContextSwitchTo(old);
        pg_sys::table_endscan(scan);
    }
}

#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn verify(
    tbl: default!(Option<PgRelation>, "'ledger.records'"),
    chain: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (name!(chain, Option<String>), name!(seq, Option<i64>), name!(problem, String), name!(detail, String)),
> {
    let tbl = required(tbl, "tbl");
    lifecycle::require_select(tbl.oid());
    if let Some(history) = crate::history::history_of(tbl.oid()) {
        return TableIterator::new(crate::history::verify_tracked(tbl.oid(), history, chain));
    }
    TableIterator::new(verify_ledger(&tbl, chain).findings)
}

/// Everything `ledger.verify` reports of a ledger: its definition, then its records.
pub fn verify_ledger(tbl: &PgRelation, chain: Option<&str>) -> Verified {
    crate::metrics::count_verify_run(tbl.oid());
    let mut findings = definition_findings(tbl.oid());
    let (mut records, mut chains) = (0, 0);
    match layout::try_for_relation(tbl.oid()) {
        Ok(_) => {
            let verified = verify_table(tbl, chain);
            findings.extend(verified.findings);
            (records, chains) = (verified.records, verified.chains);
        }
        // A hashed column dropped, renamed or retyped: the change is reported, and so is what
        // it costs (the records cannot be recomputed until it is undone).
        Err(e) if e.state == SqlState::InvalidTableDefinition && !findings.is_empty() => findings.push((
            None,
            None,
            "unverifiable".to_string(),
            format!("{}; the records cannot be recomputed until the definition is restored", e.message),
        )),
        Err(e) => raise(e),
    }
    Verified { findings, records, chains }
}

/// A `definition_changed` finding when the table no longer is what was registered at enabling
/// (a superuser's DDL, or a trigger reset by ALTER TABLE ... ENABLE TRIGGER ALL).
fn definition_findings(relid: pg_sys::Oid) -> Findings {
    changed_definition(relid, lifecycle::registered_definition(relid), "since it was enabled")
}

/// A `definition_changed` finding when `relid`'s definition today differs from `registered`,
/// naming the changed lines after `since`.
pub fn changed_definition(relid: pg_sys::Oid, registered: Option<String>, since: &str) -> Findings {
    let Some(registered) = registered else {
        return Vec::new();
    };
    match definition::differences(&registered, &lifecycle::current_definition(relid)) {
        None => Vec::new(),
        Some(changes) => vec![(None, None, "definition_changed".to_string(), format!("{since}: {changes}"))],
    }
}

/// Exactly the bytes a record's hash covers.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn canonical_bytes(tbl: Option<PgRelation>, chain: Option<&str>, seq: Option<i64>) -> Vec<u8> {
    let (tbl, seq) = (required(tbl, "tbl"), required(seq, "seq"));
    let layout = layout::for_relation(tbl.oid());
    let mut stored = StoredRecords::new();
    let (storage, tid) = record_tid(&layout, chain, seq);
    // SAFETY: a ctid just read from this relation.
    unsafe {
        let (layout, row) = stored.fetch(storage, tid).expect("the row just seen");
        let mut scratch = RecordScratch::default();
        scratch.encode(&layout, &row.values, &row.nulls).to_vec()
    }
}

/// The relations of a ledger that records are read from by (tableoid, ctid), opened once each.
#[derive(Default)]
pub struct StoredRecords {
    opened: Vec<(pg_sys::Oid, PgRelation, std::rc::Rc<Layout>)>,
}

impl StoredRecords {
    pub fn new() -> Self {
        Self::default()
    }

    /// The record at `tid` of `storage` (the ledger or one of its partitions) as the active
    /// snapshot sees it, with that relation's layout.
    ///
    /// # Safety
    /// `storage` must hold records of a ledger.
    pub unsafe fn fetch(
        &mut self,
        storage: pg_sys::Oid,
        mut tid: pg_sys::ItemPointerData,
    ) -> Option<(std::rc::Rc<Layout>, crate::datum::StoredRow)> {
        let position = match self.opened.iter().position(|(oid, _, _)| *oid == storage) {
            Some(position) => position,
            None => {
                let relation = PgRelation::with_lock(storage, pg_sys::AccessShareLock as i32);
                self.opened.push((storage, relation, layout::for_relation(storage)));
                self.opened.len() - 1
            }
        };
        let (_, relation, layout) = &self.opened[position];
        let row = fetch_row(relation.as_ptr(), Datum::from(std::ptr::addr_of_mut!(tid)))?;
        Some((layout.clone(), row))
    }
}

/// Where record `seq` of a chain (given as text) is stored: the relation (the ledger, or one of its
/// partitions) and the ctid. An error names a record that is not there, or that `ledger.prune` removed.
pub fn record_tid(layout: &Layout, chain: Option<&str>, seq: i64) -> (pg_sys::Oid, pg_sys::ItemPointerData) {
    let (condition, chain_arg) = chain_condition(layout, chain, 2).or_raise();
    let query = format!("SELECT tableoid, ctid FROM {} WHERE {condition} AND seq = $1", layout.records());
    let args: Vec<DatumWithOid> = std::iter::once(seq.into()).chain(chain_arg).collect();
    let tid = Spi::connect(|client| {
        let rows = client.select(query.as_str(), Some(1), &args)?;
        if rows.is_empty() {
            return Ok(None);
        }
        let row = rows.first();
        let storage = row.get::<pg_sys::Oid>(1)?.unwrap_or(layout.relid);
        // Copied out: the datum points into SPI memory, freed when the connection closes.
        // SAFETY: a tid datum.
        Ok(row.get_datum_by_ordinal(2)?.map(|d| (storage, unsafe { *d.cast_mut_ptr::<pg_sys::ItemPointerData>() })))
    })
    .map_err(|e: pgrx::spi::Error| {
        LedgerError::new(SqlState::DataCorrupted, "cannot read the record").detail(e.to_string())
    })
    .or_raise();
    if let Some(tid) = tid {
        return tid;
    }
    let pruned = layout
        .pruned
        .then(|| retention::pruned_detail(&layout.qualified_name, canonical_chain_text(layout, chain).as_deref(), seq));
    if let Some(detail) = pruned.flatten() {
        raise(
            LedgerError::new(
                SqlState::UndefinedObject,
                format!("record {seq} of that chain of ledger {} was pruned", layout.qualified_name),
            )
            .detail(detail),
        );
    }
    raise(LedgerError::new(
        SqlState::UndefinedObject,
        format!("ledger {} has no record with seq {seq} in that chain", layout.qualified_name),
    ))
}

/// SHA3-256 of `bytes` as lower-case hex: with `canonical_bytes`, a record's hash in plain SQL.
#[pg_extern(immutable, strict, parallel_safe)]
fn sha3_256(bytes: &[u8]) -> String {
    hash::to_hex(&hash::sha3_256(bytes))
}
