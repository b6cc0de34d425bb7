-- ledger 0.6.0 -> 0.7.0: proofs in logarithmic time. Checkpoints store the roots of their chains'
-- perfect subtrees of height 8, 16, 24, ... in ledger.subtrees, and inclusion and consistency
-- proofs read a few tiles of 256 hashes from there instead of the whole chain. A chain's first
-- checkpoint after this upgrade stores its subtrees from the start; until then its proofs are
-- made from the records, as before. Nothing already stored changes.

\echo Use "ALTER EXTENSION ledger UPDATE TO '0.7.0'" to load this file. \quit

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
REVOKE ALL ON ledger.subtrees FROM PUBLIC;
GRANT SELECT ON ledger.subtrees TO ledger_auditor;
SELECT pg_catalog.pg_extension_config_dump('ledger.subtrees', '');
