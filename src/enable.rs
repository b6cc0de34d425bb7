//! `ledger.enable(tbl, chain_by, order_by, keep_existing_as)`: makes a table a ledger, chaining the
//! rows already in it. Everything happens in the caller's transaction, so an error leaves the table
//! exactly as it was.

use crate::datum::{column_type_of, SqlName};
use crate::error::{raise, OrRaise};
use crate::layout::{self, quote_ident};
use crate::lifecycle;
use crate::trigger::RecordScratch;
use ledger_core::canonical::{chain_key_bytes, ColumnType};
use ledger_core::hash::{to_hex, Digest};
use ledger_core::{LedgerError, SqlState};
use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::PgRelation;

const LEDGER_COLUMNS: [(&str, &str, &str); 3] =
    [("seq", "bigint", "bigint"), ("prev_hash", "character(64)", "char(64)"), ("hash", "character(64)", "char(64)")];

/// `ledger.enable` as release 0.1.0 declares it, with two arguments: a database still at 0.1.0 calls
/// this symbol when the server already runs this library (after it is installed, before `ALTER
/// EXTENSION ledger UPDATE`). A function's arguments are read by position, so the new signature has
/// a symbol of its own.
#[pg_extern(sql = false)]
fn enable(tbl: Option<PgRelation>, chain_by: Option<SqlName>) {
    enable_with_options(tbl, chain_by, None, None)
}

#[pg_extern(volatile, parallel_unsafe, name = "enable")]
#[search_path(pg_catalog, pg_temp)]
fn enable_with_options(
    tbl: Option<PgRelation>,
    chain_by: default!(Option<SqlName>, "NULL"),
    order_by: default!(Option<&str>, "NULL"),
    keep_existing_as: default!(Option<&str>, "NULL"),
) {
    let tbl = crate::error::required(tbl, "tbl");
    let chain_by = chain_by.as_ref().map(|n| n.0.as_str());
    crate::datum::require_utf8_database();
    // Our own ALTER TABLE refuses a relation this session holds open, so work by OID from here.
    let relid = tbl.oid();
    // SAFETY: an open relation's pg_class row.
    let relkind = unsafe { (*(*tbl.as_ptr()).rd_rel).relkind as u8 };
    drop(tbl);
    let name = layout::qualified_name(relid);
    lifecycle::require_owner(relid, &name, "make it a ledger");
    let actor = lifecycle::current_role();
    let partitioned = relkind == pg_sys::RELKIND_PARTITIONED_TABLE;
    // A partitioned table's changes reach its partitions (PostgreSQL refuses ONLY for most of them);
    // an ordinary table's must not reach inheritance children (enable refuses those anyway).
    let only = if partitioned { "" } else { "ONLY " };
    spi_run(&format!("LOCK TABLE {only}{name} IN SHARE ROW EXCLUSIVE MODE"));
    check_enableable(relid, relkind, &name);

    // A store that computed hashes of its own keeps them, under other names, as hashed columns.
    let kept = keep_existing_as.map(|prefix| keep_existing_columns(relid, &name, only, prefix)).unwrap_or_default();
    let mut attributes = layout::attributes(relid);
    let order = order_by.map(|o| existing_rows_order(&attributes, &name, o));
    if let Some(chain) = chain_by {
        let Some((_, _, type_oid)) = attributes.iter().find(|(_, n, _)| n == chain) else {
            raise(
                LedgerError::new(
                    SqlState::UndefinedColumn,
                    format!("column \"{chain}\" of relation {name} does not exist"),
                )
                .hint("chain_by names the column whose value selects a record's chain."),
            );
        };
        if LEDGER_COLUMNS.iter().any(|(c, _, _)| *c == chain) {
            raise(
                LedgerError::new(SqlState::InvalidParameterValue, format!("\"{chain}\" cannot select the chain"))
                    .detail("seq, prev_hash and hash are computed by the ledger."),
            );
        }
        match column_type_of(*type_oid) {
            None => raise(unsupported(&name, &[(chain.to_string(), format_type(*type_oid))])),
            Some(t) if !t.equality_is_identity() || !deterministic_collation(relid, chain) => raise(
                LedgerError::new(
                    SqlState::FeatureNotSupported,
                    format!("column \"{chain}\" of type {} cannot select chains", format_type(*type_oid)),
                )
                .detail("Values that compare equal must be stored alike to name one chain; this type or collation lets equal values differ (as numeric 1.0 and 1.00 do).")
                .hint(format!("Chain by a column of type {} with a deterministic collation.", ColumnType::chain_types_list())),
            ),
            Some(_) => {}
        }
    }
    for (column, type_name, sql_type) in LEDGER_COLUMNS {
        match attributes.iter().find(|(_, n, _)| n == column) {
            Some((index, _, _)) => {
                let actual = column_format_type(relid, *index);
                if actual != type_name {
                    raise(
                        LedgerError::new(
                            SqlState::DatatypeMismatch,
                            format!("column \"{column}\" of {name} must be {type_name}"),
                        )
                        .detail(format!("It is {actual}.")),
                    );
                }
            }
            None => spi_run(&format!("ALTER TABLE {only}{name} ADD COLUMN {column} {sql_type}")),
        }
    }
    attributes = layout::attributes(relid);

    let hashed: Vec<&(usize, String, Oid)> = attributes.iter().filter(|(_, n, _)| n != "hash").collect();
    let unsupported_columns: Vec<(String, String)> = hashed
        .iter()
        .filter(|(_, _, t)| column_type_of(*t).is_none())
        .map(|(_, n, t)| (n.clone(), format_type(*t)))
        .collect();
    if !unsupported_columns.is_empty() {
        raise(unsupported(&name, &unsupported_columns));
    }
    let column_names: Vec<String> = hashed.iter().map(|(_, n, _)| n.clone()).collect();
    let column_types: Vec<String> = hashed
        .iter()
        .map(|(_, _, t)| column_type_of(*t).map(ColumnType::name).unwrap_or_default().to_string())
        .collect();

    lifecycle::register(relid, &name, chain_by, column_names, column_types);

    let chained = {
        // SAFETY: the table exists and is locked by this transaction.
        let tbl = unsafe { PgRelation::with_lock(relid, pg_sys::AccessShareLock as i32) };
        chain_existing_rows(&tbl, &name, order.as_deref())
    };

    let chain_column = chain_by.map(|c| format!("{}, ", quote_ident(c))).unwrap_or_default();
    spi_run(&format!("ALTER TABLE {only}{name} ALTER COLUMN seq SET NOT NULL, ALTER COLUMN hash SET NOT NULL"));
    // The index that finds a chain's head: a table may have it already (a primary key on (chain,
    // seq), as history ledgers do), and a second one would only cost every append.
    let column_index = |column: &str| attributes.iter().find(|(_, n, _)| n == column).map(|(i, _, _)| *i);
    let seq_index = column_index("seq").expect("the seq column was added");
    let has_head_index =
        layout::find_head_index(relid, chain_by.and_then(column_index), seq_index, !partitioned).or_raise().is_some();
    if partitioned && !has_head_index {
        // Made on every partition, now and later. A unique index of a partitioned table must hold
        // the partition key, so this one is not: the chain lock alone keeps chains from forking.
        spi_run(&format!("CREATE INDEX ON {name} ({chain_column}seq)"));
    } else if !has_head_index {
        spi_run(&format!("CREATE UNIQUE INDEX ON ONLY {name} ({chain_column}seq)"));
    }
    // BEFORE triggers fire in name order; the append trigger must see the final row, so it sorts last.
    spi_run(&format!(
        "CREATE TRIGGER zz_ledger_append BEFORE INSERT ON {name} FOR EACH ROW EXECUTE FUNCTION ledger.append_row()"
    ));
    spi_run(&format!("CREATE TRIGGER ledger_refuse_change BEFORE UPDATE OR DELETE ON {name} FOR EACH ROW EXECUTE FUNCTION ledger.refuse_change()"));
    spi_run(&format!("CREATE TRIGGER ledger_refuse_truncate BEFORE TRUNCATE ON {name} FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change()"));
    // ENABLE ALWAYS: session_replication_role = replica must not switch them off. A partitioned
    // table's row triggers are cloned to its partitions, where this reaches them too.
    for trigger in ["zz_ledger_append", "ledger_refuse_change"] {
        spi_run(&format!("ALTER TABLE {only}{name} ENABLE ALWAYS TRIGGER {trigger}"));
    }
    spi_run(&format!("ALTER TABLE ONLY {name} ENABLE ALWAYS TRIGGER ledger_refuse_truncate"));
    if partitioned {
        let (partitions, default) = layout::partitions_in_bound_order(relid);
        for partition in partitions.into_iter().map(|(oid, _)| oid).chain(default) {
            crate::partition::guard_partition(partition);
        }
    }
    let migration = chained.map(|(rows, chains)| {
        let mut what = format!(
            "chained {rows} existing row(s) in {chains} chain(s), ordered by {}",
            order.as_deref().map_or("the primary key".to_string(), |o| format!("{o}, then the primary key"))
        );
        for (old, new) in &kept {
            what.push_str(&format!("; kept {old} as {new}"));
        }
        what
    });
    lifecycle::finish_enable(relid, &name, &actor, migration.as_deref());
    crate::metrics::reset(relid);
}

/// Renames the table's own seq, prev_hash and hash columns to `prefix` + name, so they become
/// ordinary hashed columns and the ledger's columns take their names. Returns (old, new) names.
fn keep_existing_columns(relid: Oid, name: &str, only: &str, prefix: &str) -> Vec<(String, String)> {
    let attributes = layout::attributes(relid);
    let mut kept = Vec::new();
    for (column, _, _) in LEDGER_COLUMNS {
        if !attributes.iter().any(|(_, n, _)| n == column) {
            continue;
        }
        let new = format!("{prefix}{column}");
        if new.len() >= pg_sys::NAMEDATALEN as usize || new == column {
            raise(
                LedgerError::new(
                    SqlState::InvalidParameterValue,
                    format!("cannot keep column \"{column}\" as \"{new}\""),
                )
                .hint("keep_existing_as is a prefix for the kept columns' names, such as 'app_'."),
            );
        }
        if attributes.iter().any(|(_, n, _)| *n == new) {
            raise(
                LedgerError::new(
                    SqlState::DuplicateColumn,
                    format!("column \"{new}\" of relation {name} already exists"),
                )
                .hint("Choose another keep_existing_as prefix."),
            );
        }
        spi_run(&format!("ALTER TABLE {only}{name} RENAME COLUMN {} TO {}", quote_ident(column), quote_ident(&new)));
        kept.push((column.to_string(), new));
    }
    if kept.is_empty() {
        raise(
            LedgerError::new(SqlState::UndefinedColumn, format!("{name} has no seq, prev_hash or hash column to keep"))
                .hint("keep_existing_as is for tables that already hold hashes of their own; leave it out."),
        );
    }
    kept
}

/// The ORDER BY of `order_by` (column names, each optionally ASC or DESC), checked against the
/// table's columns and quoted.
fn existing_rows_order(attributes: &[(usize, String, Oid)], name: &str, order_by: &str) -> String {
    let mut terms = Vec::new();
    for term in order_by.split(',') {
        let words: Vec<&str> = term.split_whitespace().collect();
        let (column, direction) = match words.as_slice() {
            [column] => (*column, ""),
            [column, d] if d.eq_ignore_ascii_case("asc") => (*column, " ASC"),
            [column, d] if d.eq_ignore_ascii_case("desc") => (*column, " DESC"),
            _ => raise(
                LedgerError::new(SqlState::SyntaxError, format!("invalid order_by term \"{}\"", term.trim()))
                    .hint("order_by lists columns, each optionally followed by ASC or DESC: 'ts, rid'."),
            ),
        };
        let column = column.trim_matches('"');
        if !attributes.iter().any(|(_, n, _)| n == column) || LEDGER_COLUMNS.iter().any(|(c, _, _)| *c == column) {
            raise(
                LedgerError::new(
                    SqlState::UndefinedColumn,
                    format!("column \"{column}\" of relation {name} does not exist"),
                )
                .hint("order_by names the table's own columns; the ledger's seq, prev_hash and hash cannot order it."),
            );
        }
        terms.push(format!("{}{direction}", quote_ident(column)));
    }
    terms.join(", ")
}

fn check_enableable(relid: Oid, relkind: u8, name: &str) {
    if relkind != pg_sys::RELKIND_RELATION && relkind != pg_sys::RELKIND_PARTITIONED_TABLE {
        raise(
            LedgerError::new(SqlState::WrongObjectType, format!("{name} is not a table"))
                .detail("Only ordinary and partitioned tables can be ledgers; views and foreign tables cannot."),
        );
    }
    if relkind == pg_sys::RELKIND_PARTITIONED_TABLE {
        let ledger_columns: Vec<&str> = LEDGER_COLUMNS.iter().map(|(c, _, _)| *c).collect();
        crate::partition::check_partitioning(relid, name, &ledger_columns);
    }
    if layout::registry_entry(relid).is_some() {
        raise(LedgerError::new(SqlState::DuplicateObject, format!("table {name} is already a ledger")));
    }
    let has_primary_key = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = $1 AND indisprimary)",
        &[relid.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if !has_primary_key {
        raise(LedgerError::new(SqlState::InvalidTableDefinition, format!("table {name} has no primary key")).hint(
            "Add a primary key: it identifies records and orders the rows already in the table when they are chained.",
        ));
    }
    // A partitioned table's partitions are its storage, not children.
    let children = Spi::get_one_with_args::<String>(
        "SELECT string_agg(inhrelid::regclass::text, ', ' ORDER BY inhrelid::regclass::text) \
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE inhparent = $1 AND NOT c.relispartition",
        &[relid.into()],
    )
    .ok()
    .flatten();
    if let Some(children) = children {
        raise(
            LedgerError::new(SqlState::InvalidTableDefinition, format!("table {name} has inheritance children"))
                .detail(format!("Their rows would show in queries of the ledger without being chained: {children}."))
                .hint("Detach them (ALTER TABLE ... NO INHERIT) first."),
        );
    }
    let generated = Spi::get_one_with_args::<String>(
        "SELECT string_agg(quote_ident(attname), ', ') FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated <> ''",
        &[relid.into()],
    )
    .ok()
    .flatten();
    if let Some(columns) = generated {
        raise(
            LedgerError::new(SqlState::InvalidTableDefinition, format!("table {name} has generated columns")).detail(
                format!("Generated columns are computed after the ledger's trigger hashes the row: {columns}."),
            ),
        );
    }
}

/// Non-deterministic collations make different strings equal.
fn deterministic_collation(relid: Oid, column: &str) -> bool {
    Spi::get_one_with_args::<bool>(
        "SELECT coalesce((SELECT c.collisdeterministic FROM pg_collation c WHERE c.oid = a.attcollation), true) \
         FROM pg_attribute a WHERE a.attrelid = $1 AND a.attname = $2",
        &[relid.into(), column.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

fn unsupported(name: &str, columns: &[(String, String)]) -> LedgerError {
    let list: Vec<String> = columns.iter().map(|(n, t)| format!("\"{n}\" ({t})")).collect();
    LedgerError::new(SqlState::FeatureNotSupported, format!("table {name} has columns of types the ledger cannot hash"))
        .detail(format!("Unsupported: {}.", list.join(", ")))
        .hint(format!("Supported types: {}.", ColumnType::supported_list()))
}

fn format_type(type_oid: Oid) -> String {
    Spi::get_one_with_args::<String>("SELECT format_type($1, NULL)", &[type_oid.into()])
        .ok()
        .flatten()
        .unwrap_or_default()
}

fn column_format_type(relid: Oid, index: usize) -> String {
    Spi::get_one_with_args::<String>(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = $1 AND attnum = $2",
        &[relid.into(), (index as i16 + 1).into()],
    )
    .ok()
    .flatten()
    .unwrap_or_default()
}

fn spi_run(sql: &str) {
    if let Err(e) = Spi::run(sql) {
        raise(
            LedgerError::new(SqlState::DataCorrupted, "ledger.enable could not change the table")
                .detail(format!("{sql}: {e}")),
        );
    }
}

/// The one-time migration: rows already in the table are chained in `order` (then primary-key
/// order; by default primary-key order alone), within each chain. A table whose rows already carry
/// the ledger's hashes must already be a valid chain. Returns the rows and chains it chained.
fn chain_existing_rows(tbl: &PgRelation, name: &str, order: Option<&str>) -> Option<(i64, i64)> {
    let layout = layout::for_relation(tbl.oid());
    let records = layout.records();
    let counts =
        Spi::get_two::<i64, i64>(&format!("SELECT count(*), count(hash) FROM {records}")).unwrap_or_else(|e| {
            raise(LedgerError::new(SqlState::DataCorrupted, "cannot count rows").detail(e.to_string()))
        });
    let (total, hashed) = (counts.0.unwrap_or(0), counts.1.unwrap_or(0));
    if total == 0 {
        return None;
    }
    if hashed == total {
        let findings = crate::verify::verify_table(tbl, None).findings;
        if let Some((chain, seq, problem, detail)) = findings.first() {
            raise(
                LedgerError::new(
                    SqlState::CheckViolation,
                    format!("the rows of {name} already carry hashes that do not form valid chains"),
                )
                .detail(format!(
                    "First problem: {problem} at chain {}, seq {}: {detail}",
                    chain.as_deref().unwrap_or("-"),
                    seq.map_or("null".into(), |s| s.to_string())
                ))
                .hint(
                    "To keep them as the table's own evidence and chain the rows afresh: keep_existing_as => 'app_'.",
                ),
            );
        }
        return None;
    }
    if hashed > 0 {
        raise(
            LedgerError::new(
                SqlState::CheckViolation,
                format!("some rows of {name} already have hashes and some do not"),
            )
            .detail(format!("{hashed} of {total} rows have a hash.")),
        );
    }
    let primary_key = Spi::get_one_with_args::<String>(
        "SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.ord) FROM pg_index i \
         CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
         WHERE i.indrelid = $1 AND i.indisprimary",
        &[tbl.oid().into()],
    )
    .ok()
    .flatten()
    .unwrap_or_default();
    let chain_order = layout.chain.as_ref().map(|c| format!("{}, ", quote_ident(&c.name))).unwrap_or_default();
    // A chain's records go into a partitioned ledger's partitions in the order of their bounds.
    let partition_order = if layout.partitioned { "pg_catalog.array_position($1, tableoid), " } else { "" };
    let then = order.map(|o| format!("{o}, ")).unwrap_or_default();
    let query =
        format!("SELECT tableoid, ctid FROM {records} ORDER BY {chain_order}{partition_order}{then}{primary_key}");
    let partitions: Vec<Oid> = layout.storages();
    let args: Vec<pgrx::datum::DatumWithOid> = if layout.partitioned { vec![partitions.into()] } else { Vec::new() };
    let mut chains = 0i64;

    let mut updates: Vec<(Oid, pg_sys::ItemPointerData, i64, Option<String>, String)> =
        Vec::with_capacity(total as usize);
    let mut scratch = RecordScratch::default();
    let mut stored = crate::verify::StoredRecords::new();
    let mut current_chain: Option<Vec<u8>> = None;
    let mut head: Option<(i64, Digest)> = None;
    Spi::connect(|client| {
        let mut cursor = client.open_cursor(query.as_str(), &args);
        loop {
            let batch = cursor.fetch(1000).unwrap_or_else(|e| {
                raise(LedgerError::new(SqlState::DataCorrupted, "cannot read rows").detail(e.to_string()))
            });
            if batch.is_empty() {
                break;
            }
            let mut batch = batch;
            while batch.next().is_some() {
                let storage: Oid = batch.get(1).ok().flatten().unwrap_or(layout.relid);
                let tid = batch.get_datum_by_ordinal(2).ok().flatten().expect("ctid is never null");
                // SAFETY: a ctid the query just read from `storage`, a relation of this table.
                unsafe {
                    let tid = *tid.cast_mut_ptr::<pg_sys::ItemPointerData>();
                    let Some((layout, row)) = stored.fetch(storage, tid) else {
                        continue;
                    };
                    let (mut values, mut nulls) = (row.values.clone(), row.nulls.clone());
                    if let Some(chain) = &layout.chain {
                        if nulls[chain.index] {
                            raise(
                                LedgerError::new(
                                    SqlState::NotNullViolation,
                                    format!("null value in chain column \"{}\" of {name}", chain.name),
                                )
                                .detail(format!(
                                    "The row at ctid ({},{}) of {} has a null {}.",
                                    pgrx::itemptr::item_pointer_get_block_number(&tid),
                                    tid.ip_posid,
                                    layout::qualified_name(storage),
                                    chain.name
                                )),
                            );
                        }
                        scratch.reader.begin_record();
                        let value = scratch.reader.read(chain.column_type, values[chain.index]);
                        chain_key_bytes(&value, &mut scratch.chain_key);
                    }
                    if current_chain.as_deref() != Some(scratch.chain_key.as_slice()) {
                        current_chain = Some(scratch.chain_key.clone());
                        head = None;
                        chains += 1;
                    }
                    let seq = head.map_or(1, |(s, _)| s + 1);
                    let prev_hex = head.map(|(_, h)| to_hex(&h));
                    values[layout.seq] = Datum::from(seq);
                    nulls[layout.seq] = false;
                    match &prev_hex {
                        Some(hex) => {
                            values[layout.prev_hash] = crate::datum::text_datum(hex);
                            nulls[layout.prev_hash] = false;
                        }
                        None => nulls[layout.prev_hash] = true,
                    }
                    scratch.encode(&layout, &values, &nulls);
                    let hash = scratch.encoder.hash();
                    head = Some((seq, hash));
                    updates.push((storage, tid, seq, prev_hex, to_hex(&hash)));
                }
            }
        }
    });
    Spi::connect_mut(|client: &mut SpiClient| {
        // One statement per relation: a partitioned table's rows are updated in their partitions.
        let mut statements = Vec::new();
        for (storage, mut tid, seq, prev, hash) in updates {
            let statement = match statements.iter().position(|(oid, _)| *oid == storage) {
                Some(i) => &statements[i].1,
                None => {
                    let update = format!(
                        "UPDATE ONLY {} SET seq = $1, prev_hash = $2, hash = $3 WHERE ctid = $4",
                        layout::qualified_name(storage)
                    );
                    let prepared = client
                        .prepare_mut(
                            update.as_str(),
                            &[
                                PgOid::from(pg_sys::INT8OID),
                                PgOid::from(pg_sys::TEXTOID),
                                PgOid::from(pg_sys::TEXTOID),
                                PgOid::from(pg_sys::TIDOID),
                            ],
                        )
                        .unwrap_or_else(|e| {
                            raise(
                                LedgerError::new(SqlState::DataCorrupted, "cannot prepare the migration")
                                    .detail(e.to_string()),
                            )
                        });
                    statements.push((storage, prepared));
                    &statements.last().expect("just pushed").1
                }
            };
            // SAFETY: a tid datum pointing at `tid`, alive through the call.
            let tid_arg =
                unsafe { pgrx::datum::DatumWithOid::new(Datum::from(std::ptr::addr_of_mut!(tid)), pg_sys::TIDOID) };
            client.update(statement, None, &[seq.into(), prev.into(), hash.into(), tid_arg]).unwrap_or_else(|e| {
                raise(LedgerError::new(SqlState::DataCorrupted, "cannot chain an existing row").detail(e.to_string()))
            });
        }
    });
    Some((total, chains))
}
