-- Tables of the ledger extension. The extension's own ledgers are enabled in finalize.sql, once the
-- functions exist.

-- The registry: one row per ledger table. `columns` fixes the hashed columns and their order;
-- `definition` is what ledger.definition(tbl) said when the ledger was enabled (NULL while
-- ledger.enable runs), against which the event triggers and ledger.verify compare.
CREATE TABLE ledger.ledgers (
    tbl           regclass PRIMARY KEY,
    chain_by      name,
    columns       name[] NOT NULL,
    column_types  text[] NOT NULL,
    enabled_at    timestamptz NOT NULL DEFAULT now(),
    enabled_by    name NOT NULL DEFAULT current_user,
    definition    text,
    retired_at    timestamptz,
    retired_by    name,
    retire_reason text,
    -- How many of `columns` every record covers. The columns after them were added by ALTER TABLE
    -- ... ADD COLUMN: a record covers such a column when it has a value. NULL: every column.
    base_columns  integer,
    -- The definitions registered before, oldest first, each replaced by a change the guard allowed
    -- and recorded in ledger.events (columns added). NULL: none.
    earlier_definitions text[],
    -- ledger.set_retention: records whose `retention_column` is older than `retention` may be
    -- removed by ledger.prune. NULL: kept for ever.
    retention        interval,
    retention_column name,
    -- The latest cutoff of ledger.prune: records older than it may have been removed (their hashes
    -- are in ledger.pruned). NULL: never pruned.
    pruned_before    timestamptz,
    -- ledger.set_erasable: the columns whose values the records appended from now on commit to
    -- through a salted hash, so that ledger.redact can erase them. NULL: none.
    erasable         name[]
);
COMMENT ON TABLE ledger.ledgers IS 'ledger tables: chain column and the hashed columns, in encoding order';

-- The built-in ledger: one chain per anchor_id.
CREATE TABLE ledger.records (
    rid       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    anchor_id uuid NOT NULL,
    slot      text NOT NULL,
    kind      text NOT NULL,
    ts        timestamptz NOT NULL DEFAULT now(),
    seq       bigint NOT NULL,
    prev_hash char(64),
    hash      char(64) UNIQUE NOT NULL,
    payload   jsonb NOT NULL,
    sig       bytea,
    producer  text,
    version   text DEFAULT 'v1'
);
CREATE INDEX records_anchor_id_ts_idx ON ledger.records (anchor_id, ts);
COMMENT ON TABLE ledger.records IS 'the built-in ledger: one hash chain per anchor_id';

-- Merkle checkpoints of chains. Itself a ledger (one chain); `prev_checkpoint` links the
-- checkpoints of one ledger chain, and `frontier` (the roots of the tree's perfect subtrees) lets
-- the next checkpoint hash only the records added since.
CREATE TABLE ledger.checkpoints (
    cid             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    ledger          text NOT NULL,
    chain           text,
    range_start     text NOT NULL,
    range_end       text NOT NULL,
    record_count    integer NOT NULL,
    merkle_root     char(64) NOT NULL,
    prev_checkpoint char(64),
    definition      char(64),
    created_at      timestamptz NOT NULL DEFAULT now(),
    public_key      bytea,
    sig             bytea,
    frontier        bytea NOT NULL,
    seq             bigint NOT NULL,
    prev_hash       char(64),
    hash            char(64) UNIQUE NOT NULL
);
CREATE INDEX checkpoints_ledger_chain_idx ON ledger.checkpoints (ledger, chain, created_at);
COMMENT ON TABLE ledger.checkpoints IS 'Merkle checkpoints of ledger chains; itself a ledger';

-- The roots of checkpointed chains' perfect subtrees of height 8, 16, 24, ... (subtree `height`
-- covers seqs first_seq .. first_seq + 2^height - 1), written by checkpoints so that a proof reads
-- a few tiles of 256 hashes rather than the whole chain. Derived data: a proof made from them is
-- returned only if it verifies against its checkpoint, and is otherwise made from the records.
CREATE TABLE ledger.subtrees (
    ledger    text NOT NULL,
    chain     text,
    height    smallint NOT NULL,
    first_seq bigint NOT NULL,
    root      bytea NOT NULL
);
CREATE UNIQUE INDEX subtrees_chain_idx ON ledger.subtrees (ledger, chain, height, first_seq);
CREATE UNIQUE INDEX subtrees_unchained_idx ON ledger.subtrees (ledger, height, first_seq) WHERE chain IS NULL;
COMMENT ON TABLE ledger.subtrees IS 'roots of checkpointed subtrees, for proofs in logarithmic time';

-- The audit chain of ledgers' lives: one chain per ledger (enabled, columns added, retention set,
-- pruned, columns made erasable, values erased, retired, dropped by a superuser), written only by
-- the extension. Itself a ledger.
CREATE TABLE ledger.events (
    eid        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    ledger     text NOT NULL,
    event      text NOT NULL CHECK (event IN ('enable', 'retire', 'drop', 'alter', 'retention', 'prune', 'erasable', 'redact')),
    actor      text NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    definition char(64),
    reason     text,
    seq        bigint NOT NULL,
    prev_hash  char(64),
    hash       char(64) UNIQUE NOT NULL
);
COMMENT ON TABLE ledger.events IS 'who enabled, altered, set the retention of, pruned, erased values of, retired or dropped each ledger, when and why; itself a ledger';

-- What ledger.prune removed: the hashes of the pruned records of each chain, in runs of consecutive
-- seqs (32 octets per record, in seq order), so that checkpoints, proofs and digests keep their
-- leaves and ledger.verify starts each chain after its last pruned record. Itself a ledger, one
-- chain per ledger.
CREATE TABLE ledger.pruned (
    pid        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    ledger     text NOT NULL,
    chain      text,
    first_seq  bigint NOT NULL,
    last_seq   bigint NOT NULL,
    hashes     bytea NOT NULL,
    -- The retention's boundary: every pruned record was older than it.
    cutoff     timestamptz NOT NULL,
    -- A checkpoint of the chain that covers the pruned records.
    checkpoint uuid NOT NULL,
    pruned_at  timestamptz NOT NULL DEFAULT now(),
    actor      text NOT NULL,
    seq        bigint NOT NULL,
    prev_hash  char(64),
    hash       char(64) UNIQUE NOT NULL
);
-- Hashes do not compress; stored uncompressed, a run's last hash is read without the rest.
ALTER TABLE ledger.pruned ALTER COLUMN hashes SET STORAGE EXTERNAL;
CREATE INDEX pruned_ledger_chain_idx ON ledger.pruned (ledger, chain, last_seq);
COMMENT ON TABLE ledger.pruned IS 'the hashes of records removed by ledger.prune, per chain; itself a ledger';

-- Runs of ledger.verify_all: one row per ledger per run, one chain per ledger, so a run cannot be
-- edited or dropped from the record. Itself a ledger.
CREATE TABLE ledger.verify_runs (
    vid                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    run                 uuid NOT NULL,
    ledger              text NOT NULL,
    started_at          timestamptz NOT NULL,
    finished_at         timestamptz NOT NULL,
    chains              bigint NOT NULL,
    records             bigint NOT NULL,
    problems            bigint NOT NULL,
    checkpoints_checked bigint NOT NULL,
    checkpoint_failures bigint NOT NULL,
    actor               text NOT NULL,
    -- Set when the ledger could not be verified to the end (the run then counts one problem).
    error               text,
    seq                 bigint NOT NULL,
    prev_hash           char(64),
    hash                char(64) UNIQUE NOT NULL
);
COMMENT ON TABLE ledger.verify_runs IS 'runs of ledger.verify_all, one chain per ledger; itself a ledger';
