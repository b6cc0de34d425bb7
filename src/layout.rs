//! A ledger's definition as the hot path needs it: which tuple positions are hashed, with which
//! format types, and where seq, prev_hash, hash and the chain key are. Loaded once per backend per
//! table from `ledger.ledgers` and dropped when PostgreSQL invalidates the table's relcache entry.

use crate::datum::column_type_of;
use crate::error::{raise, OrRaise};
use ledger_core::canonical::ColumnType;
use ledger_core::{LedgerError, SqlState};
use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CStr;
use std::rc::Rc;

pub struct HashedColumn {
    pub name: String,
    pub column_type: ColumnType,
    /// Zero-based position in the table's tuple descriptor.
    pub index: usize,
    /// Added by `ALTER TABLE ... ADD COLUMN` after the ledger was enabled: a record covers it only
    /// when it has a value (records from before the addition have none).
    pub added: bool,
}

pub struct ChainColumn {
    pub index: usize,
    pub column_type: ColumnType,
    pub type_oid: Oid,
    /// `pg_type.typlen` and `typbyval`, for copying a chain value.
    pub type_len: i16,
    pub type_by_value: bool,
    pub name: String,
}

pub struct Layout {
    /// The ledger: the registered table, whose name, chain locks and counters every record shares.
    pub relid: Oid,
    /// The relation whose tuples this layout's positions describe: the ledger itself, or one of
    /// its partitions (whose columns may sit at other positions than the partitioned table's).
    pub storage: Oid,
    /// The ledger is a partitioned table: its records are stored in its partitions.
    pub partitioned: bool,
    /// A partitioned ledger's partitions, in the order of their bounds (the default partition,
    /// which takes no records, apart), as the head lookup probes them. Empty in a partition's layout.
    pub partitions: Vec<PartitionHead>,
    pub default_partition: Option<Oid>,
    pub qualified_name: String,
    pub columns: Vec<HashedColumn>,
    pub chain: Option<ChainColumn>,
    pub seq: usize,
    pub prev_hash: usize,
    pub hash: usize,
    /// The unique index on (chain, seq) (or (seq)) that `ledger.enable` made: read backwards, it
    /// gives a chain's head without the executor. Appends need it; reading does not.
    head_index: Option<HeadIndex>,
    /// Set by `ledger.retire`: who retired the ledger, when and why. Appends are refused.
    pub retired: Option<String>,
    /// The table's own unique keys (not those on the ledger's columns), which INSERT ... ON
    /// CONFLICT can skip a row for (src/conflict.rs).
    pub unique_keys: Vec<UniqueKey>,
    /// The tracked table whose history this ledger is (src/history.rs): only its trigger appends.
    pub history_of: Option<Oid>,
    /// Some chain's first records were removed by `ledger.prune` (src/retention.rs): its stored
    /// records start after what `ledger.pruned` kept.
    pub pruned: bool,
    /// The `ledger_erasure` column (src/erasure.rs), once the table has one: each record keeps the
    /// salts of its erasable values there, and the commitments of erased ones.
    pub erasure: Option<usize>,
    /// Positions in `columns` of the columns appends commit to (`ledger.set_erasable`); for a
    /// history ledger, its `row`, whose members `erasable_members` names are committed to.
    pub erasable: Vec<usize>,
    pub erasable_members: Vec<String>,
}

/// A plain unique btree index of the table's own columns.
pub struct UniqueKey {
    pub index: Oid,
    pub columns: Vec<KeyColumn>,
    /// `NULLS NOT DISTINCT` (PostgreSQL 15 and later): NULLs conflict with each other.
    pub nulls_not_distinct: bool,
}

pub struct KeyColumn {
    /// Zero-based position in the table's tuple descriptor.
    pub index: usize,
    /// The btree equality function and collation of the index column.
    pub equality: Oid,
    pub collation: Oid,
}

/// A partition of a partitioned ledger as the head lookup reads it: its (chain, seq) index and
/// where its tuples keep seq and hash.
pub struct PartitionHead {
    pub relid: Oid,
    pub head_index: Option<HeadIndex>,
    pub seq: usize,
    pub hash: usize,
}

impl PartitionHead {
    pub fn head_index(&self, ledger: &Layout) -> &HeadIndex {
        self.head_index.as_ref().unwrap_or_else(|| {
            raise(
                LedgerError::new(
                    SqlState::InvalidTableDefinition,
                    format!(
                        "partition {} of ledger {} has no usable index on (chain, seq)",
                        qualified_name(self.relid),
                        ledger.qualified_name
                    ),
                )
                .detail("Appends read a chain's head from each partition's index.")
                .hint(
                    "Recreate the index as ledger.enable makes it, on the partitioned table: CREATE INDEX ON tbl \
                     (chain_column, seq), without expressions, predicates, DESC, or other operator classes or collations.",
                ),
            )
        })
    }
}

impl Layout {
    /// The ledger's records as a FROM item: ONLY the table (an inheritance child's rows are not
    /// records), or a partitioned table with all its partitions.
    pub fn records(&self) -> String {
        if self.partitioned {
            self.qualified_name.clone()
        } else {
            format!("ONLY {}", self.qualified_name)
        }
    }

    /// The relations the ledger's records are stored in: the table, or its partitions in bound order
    /// (then the default partition).
    pub fn storages(&self) -> Vec<Oid> {
        if !self.partitioned {
            return vec![self.relid];
        }
        self.partitions.iter().map(|p| p.relid).chain(self.default_partition).collect()
    }

    pub fn head_index(&self) -> &HeadIndex {
        self.head_index.as_ref().unwrap_or_else(|| {
            raise(
                LedgerError::new(
                    SqlState::InvalidTableDefinition,
                    format!("ledger {} has no usable unique index on (chain, seq)", self.qualified_name),
                )
                .detail("Appends read a chain's head from it and rely on it to refuse forks.")
                .hint(
                    "Recreate it as ledger.enable makes it: CREATE UNIQUE INDEX ON tbl (chain_column, seq), \
                     without expressions, predicates, DESC, or other operator classes or collations.",
                ),
            )
        })
    }
}

pub struct HeadIndex {
    pub index: Oid,
    /// The btree equality function and collation for the chain column.
    pub chain_equality: Oid,
    pub chain_collation: Oid,
}

thread_local! {
    static LAYOUTS: RefCell<HashMap<Oid, Rc<Layout>>> = RefCell::new(HashMap::new());
}

/// The layout of a registered ledger table, from the cache or the registry.
pub fn for_relation(relid: Oid) -> Rc<Layout> {
    try_for_relation(relid).or_raise()
}

/// As `for_relation`, but a table that is not a ledger, or no longer matches its registered
/// columns (42P16), is an error value, for reports that go on without the records.
pub fn try_for_relation(relid: Oid) -> Result<Rc<Layout>, LedgerError> {
    if let Some(layout) = LAYOUTS.with(|l| l.borrow().get(&relid).cloned()) {
        return Ok(layout);
    }
    let layout = Rc::new(crate::lifecycle::with_pinned_search_path(|| load(relid))?);
    LAYOUTS.with(|l| l.borrow_mut().insert(relid, layout.clone()));
    Ok(layout)
}

/// Forgets the cached layout of one table (and of its partitions).
pub fn forget(relid: Oid) {
    LAYOUTS.with(|l| l.borrow_mut().retain(|storage, layout| *storage != relid && layout.relid != relid));
}

/// Forgets every cached layout.
pub fn forget_all() {
    LAYOUTS.with(|l| l.borrow_mut().clear());
}

/// Relcache invalidation: forget the table (or everything, for InvalidOid). The map is only ever
/// borrowed briefly by code that cannot trigger an invalidation, so it is free here.
#[pg_guard]
pub unsafe extern "C-unwind" fn invalidate(_arg: pg_sys::Datum, relid: Oid) {
    crate::head::forget_hints(relid);
    crate::history::forget_plan(relid);
    if relid == pg_sys::InvalidOid {
        forget_all();
    } else {
        // A partitioned ledger's partitions' layouts go with it: its registry entry or its set of
        // partitions changed (creating, attaching or detaching a partition invalidates the parent).
        LAYOUTS.with(|l| l.borrow_mut().retain(|storage, layout| *storage != relid && layout.relid != relid));
    }
}

/// An SQL identifier, quoted only where PostgreSQL needs it, whatever the session's
/// `quote_all_identifiers` says: the names checkpoints record must not depend on who made them.
pub fn quote_ident(name: &str) -> String {
    let Ok(c_name) = std::ffi::CString::new(name) else {
        return format!("\"{}\"", name.replace('"', "\"\""));
    };
    /// Puts the session's value back, also when quote_identifier raises (out of memory): pgrx
    /// unwinds a PostgreSQL error through Rust frames.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: a plain bool GUC variable of this backend.
            unsafe { pg_sys::quote_all_identifiers = self.0 };
        }
    }
    // SAFETY: reads and sets a backend-local GUC variable; quote_identifier returns its input or a
    // palloc'd quoted copy.
    unsafe {
        let _restore = Restore(pg_sys::quote_all_identifiers);
        pg_sys::quote_all_identifiers = false;
        CStr::from_ptr(pg_sys::quote_identifier(c_name.as_ptr())).to_string_lossy().into_owned()
    }
}

pub fn qualified_name(relid: Oid) -> String {
    // SAFETY: catalog lookups of an open relation.
    unsafe {
        let rel_name = pg_sys::get_rel_name(relid);
        let nsp_name = pg_sys::get_namespace_name(pg_sys::get_rel_namespace(relid));
        if rel_name.is_null() || nsp_name.is_null() {
            raise(LedgerError::new(
                SqlState::UndefinedObject,
                format!("relation with OID {} does not exist", relid.to_u32()),
            ));
        }
        let rel_name = CStr::from_ptr(rel_name).to_string_lossy();
        let nsp_name = CStr::from_ptr(nsp_name).to_string_lossy();
        format!("{}.{}", quote_ident(&nsp_name), quote_ident(&rel_name))
    }
}

/// A table's row of `ledger.ledgers`.
pub struct RegistryEntry {
    pub chain_by: Option<String>,
    /// The hashed columns, in encoding order, and their format types.
    pub columns: Vec<String>,
    pub column_types: Vec<String>,
    /// How many of `columns` every record covers; those after them were added later (None: all).
    pub base_columns: Option<i32>,
    /// "retired at <time> by <role>: <reason>", once retired.
    pub retired: Option<String>,
    /// The columns appends commit to (`ledger.set_erasable`).
    pub erasable: Vec<String>,
}

/// The registry entry of a table, if it is a ledger.
///
/// Read under the latest snapshot, not the transaction's: the registry describes the table as the
/// catalog does, and a REPEATABLE READ transaction whose snapshot predates a change of it (columns
/// added, the ledger retired) must not go on hashing by the entry it replaced. (PostgreSQL's
/// foreign-key checks read the referenced table the same way.)
pub fn registry_entry(relid: Oid) -> Option<RegistryEntry> {
    let query = format!(
        "SELECT pg_catalog.json_build_object('chain_by', chain_by, 'columns', columns, \
         'column_types', column_types, 'base_columns', {}, 'erasable', {}, 'retired', \
         CASE WHEN retired_at IS NOT NULL \
         THEN format('retired at %s by %s: %s', retired_at, quote_ident(retired_by), retire_reason) END)::text \
         FROM ledger.ledgers WHERE tbl = $1",
        // The registry of releases before 0.4.0 and 0.5.0 (until ALTER EXTENSION ledger UPDATE).
        if registry_has("base_columns") { "base_columns" } else { "NULL::integer" },
        if registry_has("erasable") { "erasable" } else { "NULL::name[]" },
    );
    let text = Spi::connect(|_| {
        // SAFETY: SPI calls inside a connection; the plan is freed before it closes.
        unsafe { latest_single_text(&query, relid) }
    })?;
    let entry: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        raise(LedgerError::new(SqlState::DataCorrupted, "cannot read the ledger registry").detail(e.to_string()))
    });
    let strings = |member: &str| -> Vec<String> {
        entry[member]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    Some(RegistryEntry {
        chain_by: entry["chain_by"].as_str().map(str::to_string),
        columns: strings("columns"),
        column_types: strings("column_types"),
        base_columns: entry["base_columns"].as_i64().map(|b| b as i32),
        retired: entry["retired"].as_str().map(str::to_string),
        erasable: strings("erasable"),
    })
}

/// The one text value of `query` (with `$1` the oid `relid`) under the latest snapshot, if it
/// returns a row.
///
/// # Safety
/// Must run inside an SPI connection.
unsafe fn latest_single_text(query: &str, relid: Oid) -> Option<String> {
    let fail = |what: &str| -> ! {
        raise(LedgerError::new(SqlState::DataCorrupted, "cannot read the ledger registry").detail(what.to_string()))
    };
    let query = std::ffi::CString::new(query).expect("no NUL in the query");
    let mut types = [pg_sys::OIDOID];
    let plan = pg_sys::SPI_prepare(query.as_ptr(), 1, types.as_mut_ptr());
    if plan.is_null() {
        fail("SPI_prepare failed");
    }
    let mut values = [pg_sys::Datum::from(relid)];
    // A parallel worker (or its leader, in parallel mode) cannot take a new snapshot; it only
    // reads, so the transaction's snapshot serves.
    let snapshot = if pg_sys::IsInParallelMode() { pg_sys::GetActiveSnapshot() } else { pg_sys::GetLatestSnapshot() };
    let status = pg_sys::SPI_execute_snapshot(
        plan,
        values.as_mut_ptr(),
        std::ptr::null(),
        snapshot,
        std::ptr::null_mut(),
        true,
        false,
        1,
    );
    pg_sys::SPI_freeplan(plan);
    if status < 0 {
        fail(&format!("SPI_execute_snapshot returned {status}"));
    }
    let table = pg_sys::SPI_tuptable;
    if pg_sys::SPI_processed == 0 || table.is_null() {
        return None;
    }
    let value = pg_sys::SPI_getvalue(*(*table).vals, (*table).tupdesc, 1);
    (!value.is_null()).then(|| CStr::from_ptr(value).to_string_lossy().into_owned())
}

/// Whether the registry has `base_columns` (0.4.0 on): the library also serves older releases' SQL.
pub fn base_columns_registered() -> bool {
    registry_has("base_columns")
}

/// Whether the registry has the column `name`: the library also serves older releases' SQL.
fn registry_has(name: &str) -> bool {
    // A read-only query (Spi::get_one would assign a transaction id, which a standby refuses).
    crate::datum::select_one::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_attribute \
         WHERE attrelid = 'ledger.ledgers'::pg_catalog.regclass AND attname = $1 AND NOT attisdropped)",
        &[name.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// Attributes of a relation: (zero-based index, name, type oid) of live columns.
pub fn attributes(relid: Oid) -> Vec<(usize, String, Oid)> {
    // SAFETY: the relation is opened and closed here under AccessShareLock.
    unsafe {
        let rel = pg_sys::relation_open(relid, pg_sys::AccessShareLock as i32);
        let desc = pgrx::PgTupleDesc::from_pg_unchecked((*rel).rd_att);
        let out = desc
            .iter()
            .enumerate()
            .filter(|(_, a)| !a.attisdropped)
            .map(|(i, a)| (i, CStr::from_ptr(a.attname.data.as_ptr()).to_string_lossy().into_owned(), a.atttypid))
            .collect();
        pg_sys::relation_close(rel, pg_sys::AccessShareLock as i32);
        out
    }
}

/// Whether `relid` is a partitioned table.
pub fn is_partitioned(relid: Oid) -> bool {
    // SAFETY: a catalog lookup.
    unsafe { pg_sys::get_rel_relkind(relid) as u8 == pg_sys::RELKIND_PARTITIONED_TABLE }
}

/// The partitioned table `relid` is a partition of, if it is one.
pub fn partition_parent(relid: Oid) -> Option<Oid> {
    crate::datum::select_one::<Oid>(
        "SELECT i.inhparent FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhrelid = $1 AND c.relispartition",
        &[relid.into()],
    )
    .ok()
    .flatten()
}

/// The partitions of a partitioned table in the order of their bounds (one being detached
/// concurrently included), whether each is a leaf, and which is the default partition.
pub fn partitions_in_bound_order(relid: Oid) -> (Vec<(Oid, bool)>, Option<Oid>) {
    // SAFETY: the relation is opened and closed here; its partition descriptor lives in its
    // relcache entry, read before it is closed.
    unsafe {
        let rel = pg_sys::relation_open(relid, pg_sys::AccessShareLock as i32);
        if (*(*rel).rd_rel).relkind as u8 != pg_sys::RELKIND_PARTITIONED_TABLE {
            pg_sys::relation_close(rel, pg_sys::AccessShareLock as i32);
            return (Vec::new(), None);
        }
        #[cfg(feature = "pg13")]
        let desc = pg_sys::RelationGetPartitionDesc(rel);
        // With a partition whose DETACH ... CONCURRENTLY is pending: its records are still the
        // ledger's (and its chains' heads may be there), whatever queries of the table see.
        #[cfg(not(feature = "pg13"))]
        let desc = pg_sys::RelationGetPartitionDesc(rel, false);
        let count = (*desc).nparts.max(0) as usize;
        let default_index = if (*desc).boundinfo.is_null() { -1 } else { (*(*desc).boundinfo).default_index };
        let mut partitions = Vec::with_capacity(count);
        let mut default = None;
        for i in 0..count {
            let oid = *(*desc).oids.add(i);
            if i as i32 == default_index {
                default = Some(oid);
            } else {
                partitions.push((oid, *(*desc).is_leaf.add(i)));
            }
        }
        pg_sys::relation_close(rel, pg_sys::AccessShareLock as i32);
        (partitions, default)
    }
}

fn load(storage: Oid) -> Result<Layout, LedgerError> {
    // A partition's rows are records of its partitioned ledger, at the partition's own positions.
    let (relid, entry) = match registry_entry(storage) {
        Some(entry) => (storage, Some(entry)),
        None => match partition_parent(storage) {
            Some(parent) => (parent, registry_entry(parent)),
            None => (storage, None),
        },
    };
    let qualified_name = qualified_name(relid);
    let Some(RegistryEntry { chain_by, columns: names, column_types: types, base_columns, retired, erasable }) = entry
    else {
        return Err(LedgerError::new(SqlState::UndefinedObject, format!("table {qualified_name} is not a ledger"))
            .hint("Make it one with ledger.enable()."));
    };
    let partitioned = is_partitioned(relid);
    let attributes = attributes(storage);
    let find = |name: &str| -> Result<(usize, Oid), LedgerError> {
        attributes.iter().find(|(_, n, _)| n == name).map(|(i, _, t)| (*i, *t)).ok_or_else(|| {
            LedgerError::new(
                SqlState::InvalidTableDefinition,
                format!("ledger {qualified_name} has lost column \"{name}\""),
            )
            .detail("The column is in the ledger's registered definition but not in the table.")
        })
    };
    let mut columns = Vec::with_capacity(names.len());
    let base = base_columns.map_or(names.len(), |b| b.max(0) as usize);
    for (position, (name, type_name)) in names.iter().zip(&types).enumerate() {
        let (index, type_oid) = find(name)?;
        let registered = ColumnType::from_name(type_name);
        let actual = column_type_of(type_oid);
        if registered.is_none() || registered != actual {
            return Err(LedgerError::new(
                SqlState::InvalidTableDefinition,
                format!("column \"{name}\" of ledger {qualified_name} has changed type"),
            )
            .detail(format!("registered as {type_name}")));
        }
        columns.push(HashedColumn {
            name: name.clone(),
            column_type: registered.unwrap(),
            index,
            added: position >= base,
        });
    }
    let chain = match &chain_by {
        None => None,
        Some(name) => {
            let (index, type_oid) = find(name)?;
            let column_type = column_type_of(type_oid).ok_or_else(|| {
                LedgerError::new(
                    SqlState::InvalidTableDefinition,
                    format!("chain column \"{name}\" has an unsupported type"),
                )
            })?;
            let (mut type_len, mut type_by_value) = (0, false);
            // SAFETY: a catalog lookup of an existing type.
            unsafe { pg_sys::get_typlenbyval(type_oid, &mut type_len, &mut type_by_value) };
            Some(ChainColumn { index, column_type, type_oid, type_len, type_by_value, name: name.clone() })
        }
    };
    let (seq, _) = find("seq")?;
    let (prev_hash, _) = find("prev_hash")?;
    let (hash, _) = find("hash")?;
    // A partitioned ledger's (chain, seq) index cannot be unique (PostgreSQL requires the partition
    // key in a unique index of a partitioned table): the chain lock alone keeps its chains from forking.
    let head_index = find_head_index(storage, chain.as_ref().map(|c| c.index), seq, !partitioned)?;
    let (partitions, default_partition) = match partitioned && storage == relid {
        true => {
            let (partitions, default) = partitions_in_bound_order(relid);
            let chain_name = chain.as_ref().map(|c| c.name.as_str());
            (partitions.into_iter().map(|(oid, _)| partition_head(oid, chain_name)).collect::<Result<_, _>>()?, default)
        }
        false => (Vec::new(), None),
    };
    let unique_keys = find_unique_keys(storage, &[seq, prev_hash, hash])?;
    let history_of = crate::history::tracked_by_history(relid)?;
    let pruned = crate::retention::has_pruned(&qualified_name);
    let erasure = attributes
        .iter()
        .find(|(_, n, t)| n == crate::erasure::ERASURE_COLUMN && *t == pg_sys::JSONBOID)
        .map(|(i, _, _)| *i);
    // A history's erasable columns are its tracked table's: members of each version's row.
    let (erasable, erasable_members) = match history_of {
        Some(_) if !erasable.is_empty() => {
            (columns.iter().position(|c| c.name == crate::erasure::HISTORY_ROW).into_iter().collect(), erasable)
        }
        _ => (erasable.iter().filter_map(|e| columns.iter().position(|c| &c.name == e)).collect(), Vec::new()),
    };
    Ok(Layout {
        relid,
        storage,
        partitioned,
        partitions,
        default_partition,
        qualified_name,
        columns,
        chain,
        seq,
        prev_hash,
        hash,
        head_index,
        retired,
        unique_keys,
        history_of,
        pruned,
        erasure,
        erasable,
        erasable_members,
    })
}

#[cfg(any(feature = "pg13", feature = "pg14"))]
const NULLS_NOT_DISTINCT: &str = "false";
#[cfg(not(any(feature = "pg13", feature = "pg14")))]
const NULLS_NOT_DISTINCT: &str = "i.indnullsnotdistinct";

/// The valid, plain (no expression, no predicate), immediately checked unique btree indexes of the
/// table that contain none of the `computed` columns (zero-based), with each key column's equality
/// function. (ON CONFLICT takes no deferrable index as its arbiter.)
fn find_unique_keys(relid: Oid, computed: &[usize]) -> Result<Vec<UniqueKey>, LedgerError> {
    let computed: Vec<i16> = computed.iter().map(|i| *i as i16 + 1).collect();
    let query = format!(
        "SELECT i.indexrelid, k.attnum, coalesce(o.oprcode, 0)::oid, k.coll, {NULLS_NOT_DISTINCT} \
         FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid \
         JOIN pg_am am ON am.oid = c.relam AND am.amname = 'btree' \
         CROSS JOIN LATERAL unnest(i.indkey::int2[], i.indclass::oid[], i.indcollation::oid[]) \
              WITH ORDINALITY AS k(attnum, opclass, coll, n) \
         JOIN pg_opclass oc ON oc.oid = k.opclass \
         LEFT JOIN pg_amop ao ON ao.amopfamily = oc.opcfamily AND ao.amoplefttype = oc.opcintype \
              AND ao.amoprighttype = oc.opcintype AND ao.amopstrategy = 3 \
         LEFT JOIN pg_operator o ON o.oid = ao.amopopr \
         WHERE i.indrelid = $1 AND i.indisunique AND i.indisvalid \
           AND i.indexprs IS NULL AND i.indpred IS NULL AND k.n <= i.indnkeyatts \
           AND NOT (string_to_array(i.indkey::text, ' ')::int2[] && $2) \
         ORDER BY i.indexrelid, k.n"
    );
    let rows = Spi::connect(|client| {
        client
            .select(&query, None, &[relid.into(), computed.into()])?
            .map(|row| {
                Ok::<_, pgrx::spi::Error>((
                    row.get::<Oid>(1)?.unwrap_or(pg_sys::InvalidOid),
                    row.get::<i16>(2)?.unwrap_or(0),
                    row.get::<Oid>(3)?.unwrap_or(pg_sys::InvalidOid),
                    row.get::<Oid>(4)?.unwrap_or(pg_sys::InvalidOid),
                    row.get::<bool>(5)?.unwrap_or(false),
                ))
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .map_err(|e| LedgerError::new(SqlState::DataCorrupted, "cannot read the ledger's indexes").detail(e.to_string()))?;
    let mut keys: Vec<UniqueKey> = Vec::new();
    for (index, attnum, equality, collation, nulls_not_distinct) in rows {
        let column = KeyColumn { index: attnum as usize - 1, equality, collation };
        match keys.last_mut() {
            Some(key) if key.index == index => key.columns.push(column),
            _ => keys.push(UniqueKey { index, columns: vec![column], nulls_not_distinct }),
        }
    }
    Ok(keys)
}

/// The valid, plain, unique btree index on exactly (chain, seq) or (seq), as `ledger.enable` makes
/// it: default operator classes, ascending, each column's own collation (which `enable` requires
/// to be deterministic), so a backward scan finds exactly the chain's highest seq.
/// Where a partition keeps seq and hash, and its (chain, seq) index.
fn partition_head(relid: Oid, chain: Option<&str>) -> Result<PartitionHead, LedgerError> {
    let attributes = attributes(relid);
    let position = |name: &str| attributes.iter().find(|(_, n, _)| n == name).map(|(i, _, _)| *i);
    let (Some(seq), Some(hash)) = (position("seq"), position("hash")) else {
        return Err(LedgerError::new(
            SqlState::InvalidTableDefinition,
            format!("partition {} has no seq or hash column", qualified_name(relid)),
        ));
    };
    let head_index = find_head_index(relid, chain.and_then(position), seq, false)?;
    Ok(PartitionHead { relid, head_index, seq, hash })
}

pub fn find_head_index(
    relid: Oid,
    chain: Option<usize>,
    seq: usize,
    unique: bool,
) -> Result<Option<HeadIndex>, LedgerError> {
    let key: Vec<i16> = chain.into_iter().chain([seq]).map(|i| i as i16 + 1).collect();
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT i.indexrelid, coalesce(o.oprcode, 0)::oid, i.indcollation[0] \
             FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_am am ON am.oid = c.relam AND am.amname = 'btree' \
             JOIN pg_opclass oc ON oc.oid = i.indclass[0] \
             LEFT JOIN pg_amop ao ON ao.amopfamily = oc.opcfamily AND ao.amoplefttype = oc.opcintype \
                  AND ao.amoprighttype = oc.opcintype AND ao.amopstrategy = 3 \
             LEFT JOIN pg_operator o ON o.oid = ao.amopopr \
             WHERE i.indrelid = $1 AND (i.indisunique OR NOT $3) AND i.indisvalid \
               AND string_to_array(i.indkey::text, ' ')::int2[] = $2 \
               AND i.indexprs IS NULL AND i.indpred IS NULL \
               AND NOT EXISTS ( \
                   SELECT FROM unnest(i.indkey::int2[], i.indclass::oid[], i.indcollation::oid[], \
                                      i.indoption::int2[]) AS k(attnum, opclass, coll, option) \
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                   JOIN pg_opclass kc ON kc.oid = k.opclass \
                   WHERE NOT kc.opcdefault OR k.option <> 0 OR k.coll <> a.attcollation) \
             ORDER BY i.indisunique DESC, i.indexrelid \
             LIMIT 1",
            Some(1),
            &[relid.into(), key.into(), unique.into()],
        )?;
        match rows.into_iter().next() {
            None => Ok::<_, pgrx::spi::Error>(None),
            Some(row) => Ok(Some(HeadIndex {
                index: row.get(1)?.unwrap_or(pg_sys::InvalidOid),
                chain_equality: row.get(2)?.unwrap_or(pg_sys::InvalidOid),
                chain_collation: row.get(3)?.unwrap_or(pg_sys::InvalidOid),
            })),
        }
    })
    .map_err(|e| LedgerError::new(SqlState::DataCorrupted, "cannot read the ledger's indexes").detail(e.to_string()))
}
