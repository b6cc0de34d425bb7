//! Merkle checkpoints, proofs and signed digests (docs/FORMAT.md, "Merkle trees" onwards).
//!
//! A checkpoint fixes a chain's size and Merkle root in `ledger.checkpoints` (itself a ledger),
//! links to the chain's previous checkpoint, and is signed when the server has a key. It keeps the
//! tree's frontier, so the next checkpoint hashes only the records added since.

use crate::datum::{select_one, Hash64};
use crate::error::{raise, required, spi_error, OrRaise};
use crate::guc;
use crate::layout::{self, quote_ident, Layout};
use crate::lifecycle;
use crate::retention;
use crate::subtrees::{StoredTiles, Subtree, Unread};
use crate::verify::{canonical_chain_text, chain_condition};
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::SigningKey;
use ledger_core::definition;
use ledger_core::hash::{parse_hex, to_hex, Digest};
use ledger_core::merkle::{self, Frontier};
use ledger_core::note::{self, Note, Statement};
use ledger_core::proof::{ConsistencyProof, InclusionProof};
use ledger_core::tiles::{self, TiledTree};
use ledger_core::{LedgerError, SqlState};
use pgrx::datum::DatumWithOid;
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{AllocatedByRust, JsonB, PgRelation};
use serde_json::{json, Map};
use std::ffi::CString;
use std::rc::Rc;

static SIGNING_KEY_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

pub fn register_settings() {
    GucRegistry::define_string_guc(
        c"ledger.signing_key_file",
        c"Ed25519 private key (PKCS#8 PEM) that signs checkpoints.",
        c"Readable only by the server's OS user; empty: checkpoints are unsigned.",
        &SIGNING_KEY_FILE,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
}

fn key_error(path: &str, detail: impl Into<String>) -> LedgerError {
    LedgerError::new(SqlState::ConfigFileError, format!("cannot use signing key file \"{path}\""))
        .detail(detail.into())
        .hint("ledger.signing_key_file names a PKCS#8 PEM Ed25519 key, e.g. from: openssl genpkey -algorithm ed25519")
}

/// The configured signing key, if any.
fn signing_key() -> Option<SigningKey> {
    use std::os::unix::fs::MetadataExt;
    let path = SIGNING_KEY_FILE.get()?.to_string_lossy().into_owned();
    if path.is_empty() {
        return None;
    }
    let meta = std::fs::metadata(&path).map_err(|e| key_error(&path, e.to_string())).or_raise();
    // As for ssl_key_file: owned by the server user with no group or other access, or owned by
    // root with at most group read.
    let owner_ok = meta.uid() == unsafe { libc_geteuid() } && meta.mode() & 0o077 == 0;
    let root_ok = meta.uid() == 0 && meta.mode() & 0o037 == 0;
    if !owner_ok && !root_ok {
        raise(key_error(&path, format!("its permissions {:o} let others read it", meta.mode() & 0o777)));
    }
    let pem = std::fs::read_to_string(&path).map_err(|e| key_error(&path, e.to_string())).or_raise();
    Some(SigningKey::from_pkcs8_pem(&pem).map_err(|e| key_error(&path, e.to_string())).or_raise())
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// The server's public key (base64, as in digests), or NULL when checkpoints are unsigned.
#[pg_extern(volatile, parallel_safe)]
fn public_key() -> Option<String> {
    use base64::Engine as _;
    signing_key().map(|k| base64::engine::general_purpose::STANDARD.encode(k.verifying_key().to_bytes()))
}

/// The record hashes of seqs `from..=to` of one chain, in order; an error names the first gap.
pub fn record_hashes(layout: &Layout, chain: Option<&str>, from: i64, to: i64) -> Result<Vec<Digest>, LedgerError> {
    let (condition, chain_arg) = chain_condition(layout, chain, 3)?;
    if to < from {
        return Ok(Vec::new());
    }
    // Pruned records left their hashes in ledger.pruned; the table holds the records after them.
    let (mut hashes, from) = match layout.pruned {
        true => {
            retention::pruned_hashes(&layout.qualified_name, canonical_chain_text(layout, chain).as_deref(), from, to)?
        }
        false => (Vec::new(), from),
    };
    if from > to {
        return Ok(hashes);
    }
    let query = format!(
        "SELECT seq, hash::text FROM {} WHERE {condition} AND seq >= $1 AND seq <= $2 ORDER BY seq",
        layout.records()
    );
    let args: Vec<DatumWithOid> = [from.into(), to.into()].into_iter().chain(chain_arg).collect();
    // Sized from what is read, not from `to`: a digest or a caller may name any size.
    hashes.reserve((to - from + 1).min(1 << 16) as usize);
    let mut expected = from;
    Spi::connect(|client| {
        let mut cursor = client.open_cursor(query.as_str(), &args);
        loop {
            let batch = cursor.fetch(10_000).map_err(|e| spi_error("cannot read the chain", e))?;
            if batch.is_empty() {
                break;
            }
            for row in batch {
                let seq: i64 = row.get(1).map_err(|e| spi_error("cannot read seq", e))?.unwrap_or(0);
                let hash: String = row.get(2).map_err(|e| spi_error("cannot read hash", e))?.unwrap_or_default();
                if seq < expected {
                    return Err(LedgerError::new(
                        SqlState::DataCorrupted,
                        format!("record {seq} of the chain is duplicated in {}", layout.qualified_name),
                    )
                    .hint("Run ledger.verify() on the ledger."));
                }
                if seq != expected {
                    return Err(missing(layout, expected));
                }
                hashes.push(parse_hex(&hash, "hash")?);
                expected += 1;
            }
        }
        Ok(())
    })?;
    if expected <= to {
        return Err(missing(layout, expected));
    }
    Ok(hashes)
}

fn missing(layout: &Layout, seq: i64) -> LedgerError {
    LedgerError::new(
        SqlState::DataCorrupted,
        format!("record {seq} of the chain is missing from {}", layout.qualified_name),
    )
    .hint("Run ledger.verify() on the ledger.")
}

fn leaves(hashes: &[Digest]) -> Vec<Digest> {
    hashes.iter().map(merkle::leaf_hash).collect()
}

/// The table a checkpoint names, if a table of that name still exists.
fn relid_by_name(name: &str) -> Result<pg_sys::Oid, LedgerError> {
    select_one::<pg_sys::Oid>("SELECT to_regclass($1)::oid", &[name.into()])
        .map_err(|e| spi_error("cannot look up the ledger", e))?
        .ok_or_else(|| {
            LedgerError::new(
                SqlState::UndefinedObject,
                format!("ledger table {name} no longer exists (dropped, or renamed)"),
            )
        })
}

fn layout_by_name(name: &str) -> Result<Rc<Layout>, LedgerError> {
    layout::try_for_relation(relid_by_name(name)?)
}

/// MTH of the records `from_seq..=to_seq` of a chain.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn merkle_root(tbl: Option<PgRelation>, chain: Option<&str>, from_seq: Option<i64>, to_seq: Option<i64>) -> Hash64 {
    let tbl = required(tbl, "tbl");
    let (from_seq, to_seq) = (required(from_seq, "from_seq"), required(to_seq, "to_seq"));
    let layout = layout::for_relation(tbl.oid());
    if from_seq < 1 || to_seq < from_seq - 1 {
        raise(
            LedgerError::new(SqlState::InvalidParameterValue, "invalid seq range")
                .detail(format!("from_seq {from_seq}, to_seq {to_seq}: seqs start at 1 and to_seq >= from_seq - 1")),
        );
    }
    let head = chain_head(&layout, chain).or_raise();
    if to_seq > head {
        raise(
            LedgerError::new(SqlState::InvalidParameterValue, format!("to_seq {to_seq} is beyond the chain's head"))
                .detail(format!("The chain's last record is seq {head}.")),
        );
    }
    let hashes = record_hashes(&layout, chain, from_seq, to_seq).or_raise();
    Hash64(to_hex(&merkle::root_of_leaves(&leaves(&hashes))))
}

/// The highest seq of a chain (0 when it has no records), from the (chain, seq) index.
fn chain_head(layout: &Layout, chain: Option<&str>) -> Result<i64, LedgerError> {
    let (condition, chain_arg) = chain_condition(layout, chain, 1)?;
    let args: Vec<DatumWithOid> = chain_arg.into_iter().collect();
    Ok(select_one::<i64>(&format!("SELECT max(seq) FROM {} WHERE {condition}", layout.records()), &args)
        .map_err(|e| spi_error("cannot read the chain head", e))?
        .unwrap_or(0))
}

/// A stored checkpoint, as read back.
struct Checkpoint {
    cid: String,
    ledger: String,
    chain: Option<String>,
    size: i64,
    root: String,
    previous: Option<String>,
    time: String,
    public_key: Option<Vec<u8>>,
    sig: Option<Vec<u8>>,
    hash: String,
    seq: i64,
    /// Fingerprint of `ledger.definition(tbl)` when the checkpoint was made.
    definition: Option<String>,
}

const CHECKPOINT_COLUMNS: &str = "cid::text, ledger, chain, record_count::bigint, merkle_root::text, \
     prev_checkpoint::text, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
     public_key, sig, hash::text, seq, definition::text";

fn read_checkpoint(row: &pgrx::spi::SpiHeapTupleData) -> Result<Checkpoint, pgrx::spi::Error> {
    Ok(Checkpoint {
        cid: row.get(1)?.unwrap_or_default(),
        ledger: row.get(2)?.unwrap_or_default(),
        chain: row.get(3)?,
        size: row.get(4)?.unwrap_or(0),
        root: row.get(5)?.unwrap_or_default(),
        previous: row.get(6)?,
        time: row.get(7)?.unwrap_or_default(),
        public_key: row.get(8)?,
        sig: row.get(9)?,
        hash: row.get(10)?.unwrap_or_default(),
        seq: row.get(11)?.unwrap_or(0),
        definition: row.get(12)?,
    })
}

fn load_checkpoint(cid: pgrx::Uuid) -> Checkpoint {
    let query = format!("SELECT {CHECKPOINT_COLUMNS} FROM ledger.checkpoints WHERE cid = $1");
    Spi::connect(|client| {
        let rows = client.select(query.as_str(), Some(1), &[cid.into()])?;
        match rows.into_iter().next() {
            Some(row) => read_checkpoint(&row).map(Some),
            None => Ok(None),
        }
    })
    .map_err(|e| spi_error("cannot read the checkpoint", e))
    .or_raise()
    .unwrap_or_else(|| raise(LedgerError::new(SqlState::UndefinedObject, format!("checkpoint {cid} does not exist"))))
}

impl Checkpoint {
    fn statement(&self) -> Result<Statement, LedgerError> {
        Ok(Statement {
            ledger: self.ledger.clone(),
            chain: self.chain.clone(),
            size: u64::try_from(self.size).map_err(|_| corrupt_checkpoint(self, "a negative record_count"))?,
            root: parse_hex(&self.root, "merkle_root")?,
            previous: self.previous.as_deref().map(|p| parse_hex(p, "prev_checkpoint")).transpose()?,
            time: self.time.clone(),
            checkpoint: self.cid.clone(),
            public_key: match &self.public_key {
                None => None,
                Some(k) => Some(
                    <[u8; 32]>::try_from(k.as_slice())
                        .map_err(|_| corrupt_checkpoint(self, "a malformed public_key"))?,
                ),
            },
            definition: self.definition.as_deref().map(|d| parse_hex(d, "definition")).transpose()?,
        })
    }

    fn signature(&self) -> Option<[u8; 64]> {
        self.sig.as_deref().and_then(|s| <[u8; 64]>::try_from(s).ok())
    }
}

fn corrupt_checkpoint(checkpoint: &Checkpoint, what: &str) -> LedgerError {
    LedgerError::new(SqlState::DataCorrupted, format!("checkpoint {} has {what}", checkpoint.cid))
}

/// The latest checkpoint of a chain of a ledger.
fn latest_checkpoint(ledger: &str, chain: Option<&str>) -> Option<(Checkpoint, Option<Vec<u8>>)> {
    let query = format!(
        "SELECT {CHECKPOINT_COLUMNS}, frontier FROM ledger.checkpoints \
         WHERE ledger = $1 AND chain IS NOT DISTINCT FROM $2 ORDER BY seq DESC LIMIT 1"
    );
    // Read-write, so that under READ COMMITTED it takes a snapshot newer than the chain lock it
    // waited for and sees the checkpoint made by the transaction it waited on.
    Spi::connect_mut(|client| {
        let rows = client.update(query.as_str(), Some(1), &[ledger.into(), chain.into()])?;
        match rows.into_iter().next() {
            Some(row) => Ok::<_, pgrx::spi::Error>(Some((read_checkpoint(&row)?, row.get::<Vec<u8>>(13)?))),
            None => Ok(None),
        }
    })
    .map_err(|e| spi_error("cannot read the previous checkpoint", e))
    .or_raise()
}

pub type CheckpointRow = pgrx::heap_tuple::PgHeapTuple<'static, AllocatedByRust>;

/// Checkpoints one chain of `tbl` (every chain when `chain` is NULL).
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn checkpoint(
    tbl: default!(Option<PgRelation>, "'ledger.records'"),
    chain: default!(Option<&str>, "NULL"),
) -> SetOfIterator<'static, pgrx::composite_type!('static, "checkpoints")> {
    let tbl = required(tbl, "tbl");
    lifecycle::require_primary("checkpoint a ledger");
    // A history-tracked table is checkpointed by its history.
    let layout = layout::for_relation(crate::history::history_of(tbl.oid()).unwrap_or(tbl.oid()));
    drop(tbl);
    let rows = match chain {
        Some(c) => {
            vec![checkpoint_chain(&layout, canonical_chain_text(&layout, Some(c)).as_deref(), signing_key().as_ref())]
        }
        None => checkpoint_every_chain(&layout, |_| true),
    };
    SetOfIterator::new(rows)
}

/// Checkpoints every chain of a ledger (its one chain when it has no chain column) that `wanted`
/// accepts, given the chain's canonical text.
pub fn checkpoint_every_chain(layout: &Layout, wanted: impl Fn(Option<&str>) -> bool) -> Vec<CheckpointRow> {
    let key = signing_key();
    every_chain(layout)
        .iter()
        .map(|c| canonical_chain_text(layout, c.as_deref()))
        .filter(|c| wanted(c.as_deref()))
        .map(|c| checkpoint_chain(layout, c.as_deref(), key.as_ref()))
        .collect()
}

/// The chains of a ledger as the export writes them, in order (one unnamed chain without a chain
/// column).
pub fn every_chain(layout: &Layout) -> Vec<Option<String>> {
    match &layout.chain {
        None => vec![None],
        // One index probe per chain (a skip scan of the (chain, seq) index), not a pass over every
        // record; written as the export writes them, whatever this session's settings.
        Some(column) => {
            let (c, t) = (quote_ident(&column.name), layout.records());
            let query = format!(
                "WITH RECURSIVE chains(k) AS ( \
                   (SELECT {c} FROM {t} ORDER BY {c} LIMIT 1) \
                   UNION ALL \
                   SELECT (SELECT {c} FROM {t} WHERE {c} > chains.k ORDER BY {c} LIMIT 1) \
                   FROM chains WHERE chains.k IS NOT NULL) \
                 SELECT k::text FROM chains WHERE k IS NOT NULL"
            );
            let mut chains = guc::with_settings(guc::CANONICAL_OUTPUT, || {
                Spi::connect(|client| {
                    client
                        .select(query.as_str(), None, &[])?
                        .map(|row| row.get::<String>(1))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .map_err(|e| spi_error("cannot list the chains", e))
            .or_raise();
            chains.sort();
            chains
        }
    }
}

/// The newest checkpoint of a chain and how many records it covers (None: never checkpointed).
pub fn newest_checkpoint(ledger: &str, chain: Option<&str>) -> Option<(pgrx::Uuid, i64)> {
    // Read-write, as latest_checkpoint: a snapshot that sees the checkpoints made just before.
    lifecycle::as_extension_owner(|| {
        Spi::connect_mut(|client| {
            let rows = client.update(
                "SELECT cid, record_count::bigint FROM ledger.checkpoints \
                 WHERE ledger = $1 AND chain IS NOT DISTINCT FROM $2 ORDER BY seq DESC LIMIT 1",
                Some(1),
                &[ledger.into(), chain.into()],
            )?;
            match rows.into_iter().next() {
                Some(row) => Ok::<_, pgrx::spi::Error>(row.get::<pgrx::Uuid>(1)?.zip(row.get::<i64>(2)?)),
                None => Ok(None),
            }
        })
    })
    .map_err(|e| spi_error("cannot read the newest checkpoint", e))
    .or_raise()
}

/// The highest seq of a chain given by its canonical text (0 when empty).
pub fn head_of(layout: &Layout, chain: Option<&str>) -> i64 {
    chain_head(layout, chain).or_raise()
}

/// Checkpoints one chain (given by its canonical text) now, with this server's key.
pub fn checkpoint_one_chain(layout: &Layout, chain: Option<&str>) -> CheckpointRow {
    checkpoint_chain(layout, chain, signing_key().as_ref())
}

fn checkpoint_chain(layout: &Layout, chain: Option<&str>, key: Option<&SigningKey>) -> CheckpointRow {
    let ledger = layout.qualified_name.clone();
    let checkpoints = layout::for_relation(
        select_one::<pg_sys::Oid>("SELECT 'ledger.checkpoints'::regclass::oid", &[])
            .ok()
            .flatten()
            .expect("the extension's table"),
    );
    // The lock of ledger.checkpoints' own (single) chain first, which the append below takes anyway
    // and holds to commit: taken after a chain's lock, a transaction checkpointing two chains (or
    // checkpoint_all beside prune) would wait for it holding one chain's lock while another waits
    // for that chain holding it, a deadlock.
    // SAFETY: inside the caller's transaction.
    unsafe { crate::head::lock_chain(checkpoints.relid, &[]) };
    // One checkpointer per chain at a time, so checkpoints of a chain form a line.
    // SAFETY: inside the caller's transaction.
    unsafe { crate::head::lock_chain(checkpoints.relid, format!("{ledger}\n{}", chain.unwrap_or("")).as_bytes()) };
    // Reading ledger.checkpoints is for auditors; checkpointing needs only the ledger's rows.
    let previous = lifecycle::as_extension_owner(|| latest_checkpoint(&ledger, chain));
    let mut frontier = match &previous {
        None => Frontier::default(),
        Some((cp, stored)) => {
            let subtrees: Option<Vec<Digest>> = stored
                .as_deref()
                .filter(|b| b.len() % 32 == 0)
                .map(|b| b.chunks_exact(32).map(|c| <Digest>::try_from(c).expect("32 bytes")).collect());
            subtrees
                .and_then(|s| Frontier::from_parts(cp.size as u64, s))
                .unwrap_or_else(|| raise(corrupt_checkpoint(cp, "a frontier that does not fit its record_count")))
        }
    };
    let head = chain_head(layout, chain).or_raise();
    if head == 0 && layout.chain.is_some() {
        raise(LedgerError::new(
            SqlState::UndefinedObject,
            format!("ledger {ledger} has no chain {}", chain.unwrap_or_default()),
        ));
    }
    if head < frontier.size() as i64 {
        raise(
            LedgerError::new(
                SqlState::DataCorrupted,
                format!("chain of {ledger} has {head} records, fewer than its last checkpoint states"),
            )
            .detail(format!("The last checkpoint covers {} records: records were deleted.", frontier.size()))
            .hint("Run ledger.verify_checkpoint() on the chain's checkpoints."),
        );
    }
    let subtrees = completed_subtrees(layout, chain, &mut frontier, head);
    let size = frontier.size();
    let record_count = i32::try_from(size)
        .map_err(|_| LedgerError::new(SqlState::InvalidParameterValue, "chain too long for record_count"))
        .or_raise();
    let cid = Spi::get_one::<String>("SELECT gen_random_uuid()::text").ok().flatten().expect("a uuid");
    let time = note::format_time(unsafe { pg_sys::GetCurrentTransactionStartTimestamp() });
    let definition = definition::fingerprint(&lifecycle::current_definition(layout.relid));
    let statement = Statement {
        ledger: ledger.clone(),
        chain: chain.map(str::to_string),
        size,
        root: frontier.root(),
        previous: previous.as_ref().map(|(cp, _)| parse_hex(&cp.hash, "hash")).transpose().or_raise(),
        time: time.clone(),
        checkpoint: cid.clone(),
        public_key: key.map(|k| k.verifying_key().to_bytes()),
        definition: Some(definition),
    };
    let sig = key.map(|k| note::sign(&statement.body(), k).to_vec());
    let frontier_bytes: Vec<u8> = frontier.subtrees().concat();
    if let Some(subtrees) = subtrees {
        crate::subtrees::store(&ledger, chain, &subtrees).or_raise();
    }
    // Anyone who can read the ledger may checkpoint it; only the extension writes ledger.checkpoints.
    lifecycle::as_extension_owner(|| {
        Spi::connect_mut(|client| {
            let rows = client.update(
            "INSERT INTO ledger.checkpoints (cid, ledger, chain, range_start, range_end, record_count, merkle_root, \
             prev_checkpoint, created_at, public_key, sig, frontier, definition) \
             VALUES ($1::uuid, $2, $3, '1', $4, $5, $6, $7, $8::timestamptz, $9, $10, $11, $12) RETURNING checkpoints",
            None,
            &[
                cid.as_str().into(),
                ledger.as_str().into(),
                chain.into(),
                size.to_string().into(),
                record_count.into(),
                to_hex(&statement.root).into(),
                statement.previous.as_ref().map(to_hex).into(),
                time.as_str().into(),
                statement.public_key.map(|k| k.to_vec()).into(),
                sig.into(),
                frontier_bytes.into(),
                to_hex(&definition).into(),
            ],
        )?;
            rows.first().get::<pgrx::heap_tuple::PgHeapTuple<'static, AllocatedByRust>>(1)
        })
    })
    .map_err(|e| spi_error("cannot store the checkpoint", e))
    .or_raise()
    .expect("INSERT ... RETURNING returns the row")
}

/// Extends `frontier` with the chain's records up to `head`, and returns the subtree roots to
/// store for proofs (tiles.rs): those the new records complete, and if the chain's stored ones do
/// not reach the previous checkpoint (made by 0.6.0 or earlier, or deleted), all of them again from
/// the records. `None` when the records before the previous checkpoint no longer give its frontier:
/// that checkpoint's chain is broken, proofs are made from the records and fail as they should.
fn completed_subtrees(
    layout: &Layout,
    chain: Option<&str>,
    frontier: &mut Frontier,
    head: i64,
) -> Option<Vec<Subtree>> {
    let ledger = layout.qualified_name.as_str();
    let mut subtrees = Vec::new();
    let mut keep = |height: u32, index: u64, root: &Digest| {
        if tiles::is_stored_height(height) {
            subtrees.push((height, index, *root));
        }
    };
    let mut intact = true;
    // A chain's first checkpoint clears what a dropped ledger of the same name may have left.
    if frontier.size() == 0 || !crate::subtrees::cover(ledger, chain, frontier.size()).or_raise() {
        let mut rebuilt = Frontier::default();
        for hash in record_hashes(layout, chain, 1, frontier.size() as i64).or_raise() {
            rebuilt.push_reporting(&hash, &mut keep);
        }
        intact = rebuilt == *frontier;
        crate::subtrees::forget(ledger, chain).or_raise();
    }
    for hash in record_hashes(layout, chain, frontier.size() as i64 + 1, head).or_raise() {
        frontier.push_reporting(&hash, &mut keep);
    }
    intact.then_some(subtrees)
}

pub type CheckRow = (String, Option<bool>, String);

fn check(name: &str, ok: Option<bool>, detail: impl Into<String>) -> CheckRow {
    (name.to_string(), ok, detail.into())
}

/// Recomputes what a checkpoint states from today's rows: its own row hash, its signature, its
/// Merkle root, and its consistency with the chain's previous checkpoint.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn verify_checkpoint(
    cid: pgrx::Uuid,
) -> TableIterator<'static, (name!(item, String), name!(ok, Option<bool>), name!(detail, String))> {
    TableIterator::new(checkpoint_checks(cid))
}

/// The checks `ledger.verify_checkpoint` reports (`ok` NULL: not applicable).
pub fn checkpoint_checks(cid: pgrx::Uuid) -> Vec<CheckRow> {
    let cp = load_checkpoint(cid);
    let mut out = Vec::new();

    let row_ok = select_one::<bool>(
        "SELECT ledger.sha3_256(ledger.canonical_bytes('ledger.checkpoints', NULL, $1)) = $2",
        &[cp.seq.into(), cp.hash.as_str().into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    out.push(check(
        "checkpoint_row",
        Some(row_ok),
        if row_ok {
            "the checkpoint row hashes to its stored hash".into()
        } else {
            "the checkpoint row was edited after it was stored".to_string()
        },
    ));

    let statement = cp.statement();
    match (&statement, cp.signature()) {
        (Err(e), _) => out.push(check("signature", Some(false), e.message.clone())),
        (Ok(s), _) if s.public_key.is_none() => {
            out.push(check("signature", None, "unsigned: the server had no ledger.signing_key_file"))
        }
        (Ok(s), Some(sig)) => {
            let valid = note::verify_signature(&s.body(), s.public_key.as_ref().expect("checked"), &sig);
            out.push(check(
                "signature",
                Some(valid),
                if valid {
                    "Ed25519 signature by the checkpoint's key verifies"
                } else {
                    "the signature does not match the checkpoint's contents"
                },
            ));
        }
        (Ok(_), None) => out.push(check("signature", Some(false), "a public key but no valid signature")),
    }
    out.push(key_check(statement.as_ref().ok().and_then(|s| s.public_key.as_ref())));

    let layout = layout_by_name(&cp.ledger);
    let today: Result<Vec<Digest>, LedgerError> = layout
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|l| record_hashes(l, cp.chain.as_deref(), 1, cp.size).map(|h| leaves(&h)));
    match (&today, &statement) {
        (Err(e), _) => out.push(check(
            "merkle_root",
            Some(false),
            format!("{}: the checkpoint covers {} records", e.message, cp.size),
        )),
        (Ok(leaves), Ok(s)) => {
            let root = merkle::root_of_leaves(leaves);
            let ok = root == s.root;
            out.push(check(
                "merkle_root",
                Some(ok),
                if ok {
                    format!("today's first {} records hash to the checkpoint's root", cp.size)
                } else {
                    format!(
                        "today's first {} records hash to {}, the checkpoint says {}: history was rewritten",
                        cp.size,
                        to_hex(&root),
                        cp.root
                    )
                },
            ));
        }
        (Ok(_), Err(e)) => out.push(check("merkle_root", Some(false), e.message.clone())),
    }

    out.push(check_previous(&cp, today.as_ref().ok()));
    out.push(check_definition(&cp, relid_by_name(&cp.ledger)));
    out
}

/// Is `key` this server's? A superuser could re-sign a rewritten checkpoint with a key of its own,
/// and its signature would verify under that key.
fn key_check(key: Option<&[u8; 32]>) -> CheckRow {
    match (key, signing_key().map(|k| k.verifying_key().to_bytes())) {
        (_, None) => check("key", None, "this server has no signing key to compare with"),
        (Some(k), Some(server)) if *k == server => check("key", Some(true), "signed with this server's key"),
        (Some(_), Some(_)) => check("key", Some(false), "signed with another key than this server's"),
        (None, Some(_)) => check("key", Some(false), "unsigned, although this server signs checkpoints"),
    }
}

/// The ledger's definition is still what it was when the checkpoint was made.
fn check_definition(cp: &Checkpoint, relid: Result<pg_sys::Oid, LedgerError>) -> CheckRow {
    let Some(recorded) = &cp.definition else {
        return check("definition", None, "not recorded in the checkpoint");
    };
    let relid = match relid {
        Ok(relid) => relid,
        Err(e) => return check("definition", Some(false), e.message),
    };
    let today = definition::fingerprint_hex(&lifecycle::current_definition(relid));
    if *recorded == today {
        check("definition", Some(true), "the ledger's columns, types, triggers and chain key are as checkpointed")
    } else if lifecycle::follows_registered_steps(relid, recorded, &today) {
        check(
            "definition",
            Some(true),
            format!(
                "the ledger's definition changed since the checkpoint only by columns added (recorded in \
                 ledger.events): its fingerprint is now {today}"
            ),
        )
    } else {
        let mut detail = format!(
            "the ledger's definition changed since the checkpoint: its fingerprint is {today}, the checkpoint says {recorded}"
        );
        if let Some(changes) = lifecycle::registered_definition(relid)
            .and_then(|registered| definition::differences(&registered, &lifecycle::current_definition(relid)))
        {
            detail.push_str(&format!(" (since it was enabled: {changes})"));
        }
        check("definition", Some(false), detail)
    }
}

/// The chain's previous checkpoint is linked and is a prefix of this one.
fn check_previous(cp: &Checkpoint, today: Option<&Vec<Digest>>) -> CheckRow {
    let query = format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM ledger.checkpoints \
         WHERE ledger = $1 AND chain IS NOT DISTINCT FROM $2 AND seq < $3 ORDER BY seq DESC LIMIT 1"
    );
    let previous = Spi::connect(|client| {
        let rows = client.select(
            query.as_str(),
            Some(1),
            &[cp.ledger.as_str().into(), cp.chain.as_deref().into(), cp.seq.into()],
        )?;
        rows.into_iter().next().map(|r| read_checkpoint(&r)).transpose()
    });
    let previous = match previous {
        Ok(p) => p,
        Err(e) => return check("previous", Some(false), e.to_string()),
    };
    let Some(prev) = previous else {
        let ok = cp.previous.is_none();
        return check(
            "previous",
            Some(ok),
            if ok { "the chain's first checkpoint" } else { "links to a previous checkpoint that no longer exists" },
        );
    };
    if cp.previous.as_deref() != Some(prev.hash.as_str()) {
        return check(
            "previous",
            Some(false),
            format!("does not link to the chain's previous checkpoint {}", prev.cid),
        );
    }
    let (Ok(old_root), Ok(new_root)) = (parse_hex(&prev.root, "merkle_root"), parse_hex(&cp.root, "merkle_root"))
    else {
        return check("previous", Some(false), "a malformed merkle_root");
    };
    let Some(leaves) = today else {
        return check("previous", Some(false), "the chain's records cannot be read back to prove consistency");
    };
    let proof = ConsistencyProof {
        old_size: prev.size as u64,
        new_size: cp.size as u64,
        old_root,
        new_root,
        path: merkle::consistency_proof(leaves, prev.size as u64).unwrap_or_default(),
    };
    let ok = proof.verify();
    check(
        "previous",
        Some(ok),
        if ok {
            format!("consistent with previous checkpoint {} ({} records)", prev.cid, prev.size)
        } else {
            format!("not consistent with previous checkpoint {} ({} records)", prev.cid, prev.size)
        },
    )
}

/// An inclusion proof of record `seq` in a checkpoint's tree.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn inclusion_proof(cid: pgrx::Uuid, seq: i64) -> JsonB {
    let cp = load_checkpoint(cid);
    if seq < 1 || seq > cp.size {
        raise(
            LedgerError::new(SqlState::InvalidParameterValue, format!("seq {seq} is not in checkpoint {cid}"))
                .detail(format!("The checkpoint covers seqs 1 to {}.", cp.size)),
        );
    }
    let layout = layout_by_name(&cp.ledger).or_raise();
    let root = parse_hex(&cp.root, "merkle_root").or_raise();
    let (index, size) = (seq as u64 - 1, cp.size as u64);
    let tiled = tiled_proof(&layout, &cp, |tree| {
        let record_hash = record_hashes(&layout, cp.chain.as_deref(), seq, seq).map_err(|_| Unread)?;
        let record_hash = *record_hash.first().ok_or(Unread)?;
        let path = tree.inclusion_proof(index)?;
        let ok = merkle::verify_inclusion(&merkle::leaf_hash(&record_hash), index, size, &path, &root);
        Ok(((record_hash, path), ok))
    });
    let (record_hash, path) = tiled.unwrap_or_else(|stored_mismatch| {
        let hashes = record_hashes(&layout, cp.chain.as_deref(), 1, cp.size).or_raise();
        let leaves = leaves(&hashes);
        if to_hex(&merkle::root_of_leaves(&leaves)) != cp.root {
            raise(no_longer_matches(&cp));
        }
        warn_if_stored_mismatch(stored_mismatch, &cp);
        let path = merkle::inclusion_proof(&leaves, index).expect("seq is in range");
        (hashes[index as usize], path)
    });
    let proof = InclusionProof { seq: seq as u64, tree_size: size, path };
    let mut info = Map::new();
    info.insert("ledger".into(), json!(cp.ledger));
    info.insert("chain".into(), json!(cp.chain));
    info.insert("checkpoint".into(), json!(cp.cid));
    info.insert("record_hash".into(), json!(to_hex(&record_hash)));
    info.insert("root".into(), json!(cp.root));
    crate::durability::flush_visible_commits();
    JsonB(proof.to_json(info))
}

/// A proof made from the tiles of a checkpoint's tree (ledger.subtrees above the records): `make`
/// returns it with whether it verifies against the checkpoint. The checkpoint's newest record must
/// also still be there and fit the root, so that deleting the newest records (what checkpoints
/// catch) fails every proof, as it did when proofs read the whole chain. `Err(true)` when what the
/// tiles made did not verify, `Err(false)` when they are not all stored or a record cannot be read;
/// either way the caller makes the proof from the records, which reports a broken chain.
fn tiled_proof<T>(
    layout: &Layout,
    cp: &Checkpoint,
    make: impl FnOnce(&mut TiledTree<StoredTiles>) -> Result<(T, bool), Unread>,
) -> Result<T, bool> {
    let size = cp.size as u64;
    let Ok(root) = parse_hex(&cp.root, "merkle_root") else { return Err(false) };
    let source = StoredTiles { layout, ledger: &cp.ledger, chain: cp.chain.as_deref() };
    let mut tree = TiledTree::new(size, source);
    let newest_fits = |tree: &mut TiledTree<StoredTiles>| -> Result<bool, Unread> {
        if size == 0 {
            return Ok(true); // the empty tree of an empty ledger
        }
        let newest = record_hashes(layout, cp.chain.as_deref(), cp.size, cp.size).map_err(|_| Unread)?;
        let newest = newest.first().ok_or(Unread)?;
        let path = tree.inclusion_proof(size - 1)?;
        Ok(merkle::verify_inclusion(&merkle::leaf_hash(newest), size - 1, size, &path, &root))
    };
    match make(&mut tree).and_then(|(proof, ok)| Ok((proof, ok && newest_fits(&mut tree)?))) {
        Ok((proof, true)) => Ok(proof),
        Ok((_, false)) => Err(true),
        Err(Unread) => Err(false),
    }
}

/// Stored subtree roots that made a wrong proof, where the records made a right one.
fn warn_if_stored_mismatch(stored_mismatch: bool, cp: &Checkpoint) {
    if stored_mismatch {
        let whose = match &cp.chain {
            Some(chain) => format!("chain {chain} of {}", cp.ledger),
            None => cp.ledger.clone(),
        };
        crate::error::warn(
            LedgerError::new(
                SqlState::DataCorrupted,
                format!("the stored subtrees of {whose} do not match its records"),
            )
            .detail("The proof was made from the records.")
            .hint(
                "Delete the chain's rows from ledger.subtrees: its next checkpoint stores them again from the records.",
            ),
        );
    }
}

fn no_longer_matches(cp: &Checkpoint) -> LedgerError {
    LedgerError::new(
        SqlState::DataCorrupted,
        format!("the records of checkpoint {} no longer hash to its root", cp.cid),
    )
    .hint("Run ledger.verify_checkpoint() on it.")
}

/// Does `proof` show the record with `record_hash` is in the tree with `root`? Needs no table.
/// The proof arrives as text (the jsonb overload casts): pgrx's own jsonb reading cannot take every
/// valid jsonb (numbers beyond f64, deep nesting) and would fail with XX000.
#[pg_extern(immutable, strict, parallel_safe, name = "verify_inclusion")]
fn verify_inclusion_text(record_hash: &str, proof: &str, root: &str) -> bool {
    let record_hash = parse_hex(record_hash, "record_hash").or_raise();
    let root = parse_hex(root, "root").or_raise();
    InclusionProof::parse_text(proof).or_raise().verify(&record_hash, &root)
}

/// As `verify_inclusion`, against a root and the size it is the root of (both from a checkpoint or
/// digest): a path alone does not fix the tree size, so a proof relabelled with another size could
/// verify against the root; here it does not.
#[pg_extern(immutable, strict, parallel_safe, name = "verify_inclusion")]
fn verify_inclusion_sized_text(record_hash: &str, proof: &str, root: &str, tree_size: i64) -> bool {
    let record_hash = parse_hex(record_hash, "record_hash").or_raise();
    let root = parse_hex(root, "root").or_raise();
    let proof = InclusionProof::parse_text(proof).or_raise();
    proof.verify_in(&record_hash, &root, tree_size_arg(tree_size, "tree_size"))
}

fn tree_size_arg(size: i64, name: &str) -> u64 {
    u64::try_from(size).unwrap_or_else(|_| {
        raise(LedgerError::new(SqlState::InvalidParameterValue, format!("{name} must not be negative")))
    })
}

/// A proof that checkpoint `old_cid`'s tree is a prefix of checkpoint `new_cid`'s.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn consistency_proof(old_cid: pgrx::Uuid, new_cid: pgrx::Uuid) -> JsonB {
    let old = load_checkpoint(old_cid);
    let new = load_checkpoint(new_cid);
    if old.ledger != new.ledger || old.chain != new.chain {
        raise(LedgerError::new(SqlState::InvalidParameterValue, "the checkpoints are of different chains").detail(
            format!(
                "{old_cid} is of {} chain {}, {new_cid} of {} chain {}.",
                old.ledger,
                old.chain.as_deref().unwrap_or("(none)"),
                new.ledger,
                new.chain.as_deref().unwrap_or("(none)")
            ),
        ));
    }
    if old.size > new.size {
        raise(
            LedgerError::new(SqlState::InvalidParameterValue, "the old checkpoint is larger than the new one")
                .hint("Pass the older checkpoint first."),
        );
    }
    let layout = layout_by_name(&new.ledger).or_raise();
    let old_root = parse_hex(&old.root, "merkle_root").or_raise();
    let new_root = parse_hex(&new.root, "merkle_root").or_raise();
    let (old_size, new_size) = (old.size as u64, new.size as u64);
    let tiled = tiled_proof(&layout, &new, |tree| {
        let path = tree.consistency_proof(old_size)?;
        let ok = merkle::verify_consistency(old_size, new_size, &old_root, &new_root, &path);
        Ok((path, ok))
    });
    let path = tiled.unwrap_or_else(|stored_mismatch| {
        let leaves = leaves(&record_hashes(&layout, new.chain.as_deref(), 1, new.size).or_raise());
        if to_hex(&merkle::root_of_leaves(&leaves)) != new.root {
            raise(no_longer_matches(&new));
        }
        let path = merkle::consistency_proof(&leaves, old_size).expect("old size is within the new");
        // An old checkpoint that no longer matches makes a proof that fails, from any source.
        if merkle::verify_consistency(old_size, new_size, &old_root, &new_root, &path) {
            warn_if_stored_mismatch(stored_mismatch, &new);
        }
        path
    });
    let proof = ConsistencyProof { old_size, new_size, old_root, new_root, path };
    let mut info = Map::new();
    info.insert("ledger".into(), json!(new.ledger));
    info.insert("chain".into(), json!(new.chain));
    info.insert("old_checkpoint".into(), json!(old.cid));
    info.insert("new_checkpoint".into(), json!(new.cid));
    crate::durability::flush_visible_commits();
    JsonB(proof.to_json(info))
}

/// Is the old tree of `proof` a prefix of its new tree? Needs no table. (Text, as above.)
#[pg_extern(immutable, strict, parallel_safe, name = "verify_consistency")]
fn verify_consistency_text(proof: &str) -> bool {
    ConsistencyProof::parse_text(proof).or_raise().verify()
}

/// As `verify_consistency`, between the (size, root) pairs of two checkpoints or digests: the
/// proof must be about exactly these trees.
#[pg_extern(immutable, strict, parallel_safe, name = "verify_consistency")]
fn verify_consistency_between_text(proof: &str, old_size: i64, old_root: &str, new_size: i64, new_root: &str) -> bool {
    let proof = ConsistencyProof::parse_text(proof).or_raise();
    let old = (tree_size_arg(old_size, "old_size"), parse_hex(old_root, "old_root").or_raise());
    let new = (tree_size_arg(new_size, "new_size"), parse_hex(new_root, "new_root").or_raise());
    proof.verify_between((old.0, &old.1), (new.0, &new.1))
}

// Bodies in quotes, not SQL-standard RETURN (PostgreSQL 14+), for every supported major; every name
// in them is qualified.
extension_sql!(
    r#"
CREATE FUNCTION ledger.verify_inclusion(record_hash text, proof jsonb, root text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT ledger.verify_inclusion(record_hash, proof::pg_catalog.text, root) $$;
CREATE FUNCTION ledger.verify_inclusion(record_hash text, proof jsonb, root text, tree_size bigint) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT ledger.verify_inclusion(record_hash, proof::pg_catalog.text, root, tree_size) $$;
CREATE FUNCTION ledger.verify_consistency(proof jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT ledger.verify_consistency(proof::pg_catalog.text) $$;
CREATE FUNCTION ledger.verify_consistency(proof jsonb, old_size bigint, old_root text, new_size bigint, new_root text)
RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT ledger.verify_consistency(proof::pg_catalog.text, old_size, old_root, new_size, new_root) $$;
"#,
    name = "verify_proofs_jsonb",
    requires =
        [verify_inclusion_text, verify_inclusion_sized_text, verify_consistency_text, verify_consistency_between_text]
);

/// A checkpoint as a self-contained signed statement, to keep outside the database.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn digest(cid: pgrx::Uuid) -> String {
    let cp = load_checkpoint(cid);
    let statement = cp.statement().or_raise();
    crate::durability::flush_visible_commits();
    note::render(&statement, cp.signature().as_ref())
}

/// Checks a digest against today's database: its signature, whether it is this server's key,
/// whether the checkpoint is still stored as stated, and whether the chain still extends it.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn verify_digest(
    digest: &str,
) -> TableIterator<'static, (name!(item, String), name!(ok, Option<bool>), name!(detail, String))> {
    let note = Note::parse(digest).or_raise();
    let st = &note.statement;
    let mut out = Vec::new();
    out.push(match (&st.public_key, &note.signature) {
        // Lines by other key names are cosignatures and do not make it signed; a `ledger` line
        // does: the key line was changed to none.
        (None, _) if note.ledger_signature_lines > 0 => {
            check("signature", Some(false), "a ledger signature line but key none: the key line was changed")
        }
        (None, _) => check("signature", None, "unsigned digest"),
        (Some(_), None) => check("signature", Some(false), "no signature line by the digest's key"),
        (Some(_), Some(sig)) if sig.len() != 64 => check(
            "signature",
            Some(false),
            format!("the signature line by the digest's key holds {} octets, not an Ed25519 signature", sig.len() + 4),
        ),
        (Some(_), Some(_)) => {
            let ok = note.signature_valid();
            check(
                "signature",
                Some(ok),
                if ok { "Ed25519 signature verifies" } else { "the signature does not match the digest's text" },
            )
        }
    });
    out.push(key_check(st.public_key.as_ref()));

    let stored = Spi::connect(|client| {
        let query = format!("SELECT {CHECKPOINT_COLUMNS} FROM ledger.checkpoints WHERE cid::text = $1");
        let rows = client.select(query.as_str(), Some(1), &[st.checkpoint.as_str().into()])?;
        rows.into_iter().next().map(|r| read_checkpoint(&r)).transpose()
    })
    .ok()
    .flatten();
    out.push(match stored.as_ref().map(|cp| cp.statement()) {
        None => check("checkpoint", Some(false), format!("checkpoint {} is no longer stored", st.checkpoint)),
        Some(Ok(s)) if s == *st => {
            check("checkpoint", Some(true), format!("checkpoint {} is stored as stated", st.checkpoint))
        }
        Some(_) => check(
            "checkpoint",
            Some(false),
            format!("checkpoint {} is stored differently from the digest", st.checkpoint),
        ),
    });

    let extends = i64::try_from(st.size)
        .map_err(|_| LedgerError::new(SqlState::InvalidParameterValue, "no chain can hold that many records"))
        .and_then(|size| {
            let layout = layout_by_name(&st.ledger)?;
            let head = record_hashes(&layout, st.chain.as_deref(), 1, size)?;
            Ok(merkle::root_of_leaves(&leaves(&head)))
        });
    out.push(match extends {
        Ok(root) if root == st.root => {
            check("extends", Some(true), format!("today's chain starts with the digest's {} records", st.size))
        }
        Ok(root) => check(
            "extends",
            Some(false),
            format!(
                "today's first {} records hash to {}, the digest says {}: history was rewritten",
                st.size,
                to_hex(&root),
                to_hex(&st.root)
            ),
        ),
        Err(e) => check("extends", Some(false), format!("{} (the digest covers {} records)", e.message, st.size)),
    });
    TableIterator::new(out)
}
