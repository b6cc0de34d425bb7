-- Merkle checkpoints catch what a hash chain alone cannot: the newest records deleted, or a whole
-- chain rewritten and re-hashed.
CREATE TABLE pay (id int PRIMARY KEY, account text NOT NULL, amount numeric NOT NULL);
SELECT ledger.enable('pay', chain_by => 'account');
INSERT INTO pay SELECT i, 'alice', i FROM generate_series(1, 9) i;
INSERT INTO pay SELECT i, 'bob', i FROM generate_series(10, 12) i;

SELECT ledger, chain, range_start, range_end, record_count, merkle_root, prev_checkpoint, sig IS NULL AS unsigned
FROM ledger.checkpoint('pay') ORDER BY chain;
SELECT ledger.merkle_root('pay', 'alice', 1, 9);
SELECT ledger.merkle_root('pay', 'alice', 1, 0) = ledger.sha3_256('') AS empty_tree;

-- The next checkpoint links to the previous one and hashes only what is new.
INSERT INTO pay SELECT i, 'alice', i FROM generate_series(13, 20) i;
SELECT record_count, prev_checkpoint = (SELECT hash FROM ledger.checkpoints WHERE chain = 'alice' AND record_count = 9) AS linked
FROM ledger.checkpoint('pay', 'alice');
CREATE TABLE cps AS SELECT record_count, cid FROM ledger.checkpoints WHERE ledger = 'public.pay' AND chain = 'alice';
SELECT v.item, v.ok, regexp_replace(v.detail, '[0-9a-f-]{36}', '<cid>') AS detail
FROM cps, ledger.verify_checkpoint(cps.cid) v WHERE record_count = 17;

-- Proofs: valid ones verify, anything else is false.
CREATE TABLE proofs AS
SELECT ledger.inclusion_proof((SELECT cid FROM cps WHERE record_count = 17), 5) AS inclusion,
       ledger.consistency_proof((SELECT cid FROM cps WHERE record_count = 9), (SELECT cid FROM cps WHERE record_count = 17)) AS consistency,
       (SELECT merkle_root FROM ledger.checkpoints WHERE cid = (SELECT cid FROM cps WHERE record_count = 17)) AS root,
       (SELECT hash FROM pay WHERE account = 'alice' AND seq = 5) AS record,
       (SELECT hash FROM pay WHERE account = 'alice' AND seq = 6) AS other;
SELECT inclusion - 'checkpoint' - 'root' - 'record_hash' AS inclusion_proof FROM proofs;
SELECT ledger.verify_inclusion(record, inclusion, root) AS valid,
       ledger.verify_inclusion(other, inclusion, root) AS other_record,
       ledger.verify_inclusion(record, jsonb_set(inclusion, '{seq}', '6'), root) AS wrong_seq,
       ledger.verify_inclusion(record, jsonb_set(inclusion, '{path,0}', to_jsonb(repeat('0', 64))), root) AS changed_path,
       ledger.verify_inclusion(record, inclusion, ledger.sha3_256('')) AS wrong_root
FROM proofs;
SELECT ledger.verify_consistency(consistency) AS valid,
       ledger.verify_consistency(jsonb_set(consistency, '{old_size}', '8')) AS wrong_size,
       ledger.verify_consistency(jsonb_set(consistency, '{old_root}', to_jsonb(root))) AS wrong_root
FROM proofs;
-- A path does not fix the tree size (RFC 9162): relabelled as 18, it still fits the root of 17; bound
-- to the size the checkpoint states with that root, it does not.
SELECT ledger.verify_inclusion(record, jsonb_set(inclusion, '{tree_size}', '18'), root) AS root_only,
       ledger.verify_inclusion(record, jsonb_set(inclusion, '{tree_size}', '18'), root, 17) AS bound,
       ledger.verify_inclusion(record, inclusion, root, 17) AS valid
FROM proofs;
SELECT ledger.verify_consistency(consistency, 9, consistency->>'old_root', 17, root) AS valid,
       ledger.verify_consistency(jsonb_set(consistency, '{new_size}', '18'), 9, consistency->>'old_root', 17, root) AS relabelled
FROM proofs;
SELECT ledger.verify_inclusion(record, '{"type": "inclusion"}', root) FROM proofs;
SELECT ledger.verify_inclusion('xyz', inclusion, root) FROM proofs;
SELECT ledger.verify_consistency('[1, 2]');

-- A digest is a self-contained statement; verify_digest checks it against today's database.
CREATE TABLE digests AS SELECT ledger.digest(cid) AS digest FROM cps WHERE record_count = 17;
SELECT regexp_replace(digest, '(previous|time|checkpoint|definition) \S+', '\1 ...', 'g') FROM digests;
SELECT v.item, v.ok, regexp_replace(v.detail, '[0-9a-f-]{36}', '<cid>') AS detail
FROM digests, ledger.verify_digest(digest) v;
SELECT ledger.verify_digest('not a digest');

-- A superuser deletes the newest record: the chain still verifies, the checkpoint does not.
ALTER TABLE pay DISABLE TRIGGER ALL;
DELETE FROM pay WHERE account = 'alice' AND seq = 17;
ALTER TABLE pay ENABLE ALWAYS TRIGGER zz_ledger_append, ENABLE ALWAYS TRIGGER ledger_refuse_change, ENABLE ALWAYS TRIGGER ledger_refuse_truncate;
SELECT * FROM ledger.verify('pay');
SELECT v.item, v.ok, regexp_replace(v.detail, '[0-9a-f-]{36}', '<cid>') AS detail
FROM cps, ledger.verify_checkpoint(cps.cid) v WHERE record_count = 17;
SELECT v.item, v.ok FROM digests, ledger.verify_digest(digest) v;

-- Checkpoints are themselves a ledger.
TRUNCATE ledger.checkpoints;

-- ... rewrites the whole chain and re-hashes it: again only the checkpoint notices.
ALTER TABLE pay DISABLE TRIGGER ALL;
DELETE FROM pay WHERE account = 'alice';
ALTER TABLE pay ENABLE ALWAYS TRIGGER zz_ledger_append, ENABLE ALWAYS TRIGGER ledger_refuse_change, ENABLE ALWAYS TRIGGER ledger_refuse_truncate;
INSERT INTO pay SELECT i, 'alice', i * 100 FROM generate_series(1, 9) i;
SELECT * FROM ledger.verify('pay');
SELECT v.item, v.ok FROM cps, ledger.verify_checkpoint(cps.cid) v WHERE record_count = 9;

-- merkle_root reads records by seq: a duplicated or missing seq is an error, not a root.
CREATE TABLE mr (id int PRIMARY KEY, body text);
SELECT ledger.enable('mr');
INSERT INTO mr SELECT i, 'b' || i FROM generate_series(1, 4) i;
ALTER TABLE mr DISABLE TRIGGER ALL;
DROP INDEX mr_seq_idx;
INSERT INTO mr SELECT 10, body, seq, prev_hash, hash FROM mr WHERE id = 2;
SELECT ledger.merkle_root('mr', NULL, 1, 4);
DELETE FROM mr WHERE id IN (2, 10);
SELECT ledger.merkle_root('mr', NULL, 1, 4);
ALTER TABLE mr ENABLE ALWAYS TRIGGER zz_ledger_append, ENABLE ALWAYS TRIGGER ledger_refuse_change, ENABLE ALWAYS TRIGGER ledger_refuse_truncate;

-- Proofs read tiles: a checkpoint stores the root of every 256 records (and of every 65,536, ...)
-- in ledger.subtrees, and a proof reads those and at most two tiles of records.
CREATE TABLE big (id int PRIMARY KEY, body text);
SELECT ledger.enable('big');
INSERT INTO big SELECT i, 'b' || i FROM generate_series(1, 1000) i;
SELECT record_count FROM ledger.checkpoint('big');
INSERT INTO big SELECT i, 'b' || i FROM generate_series(1001, 1500) i;
SELECT record_count FROM ledger.checkpoint('big');
SELECT chain, height, first_seq, length(root) FROM ledger.subtrees WHERE ledger = 'public.big' ORDER BY first_seq;
CREATE TABLE big_cps AS SELECT record_count AS size, cid, merkle_root AS root FROM ledger.checkpoints WHERE ledger = 'public.big';
CREATE TABLE big_proofs AS
SELECT s, ledger.inclusion_proof(c.cid, s) AS inclusion,
       ledger.consistency_proof((SELECT cid FROM big_cps WHERE size = 1000), c.cid) AS consistency
FROM big_cps c, unnest(ARRAY[1, 256, 257, 700, 1024, 1500]) s WHERE c.size = 1500;
SELECT s, ledger.verify_inclusion(b.hash, inclusion, c.root, 1500) AS valid,
       jsonb_array_length(inclusion->'path') AS path_length
FROM big_proofs p JOIN big b ON b.seq = p.s, big_cps c WHERE c.size = 1500 ORDER BY s;
SELECT DISTINCT ledger.verify_consistency(consistency, 1000, o.root, 1500, n.root) AS valid
FROM big_proofs, big_cps o, big_cps n WHERE o.size = 1000 AND n.size = 1500;

-- A superuser changes a stored root: the proof is made from the records instead, with a warning,
-- and is the same proof.
UPDATE ledger.subtrees SET root = decode(ledger.sha3_256('forged'), 'hex') WHERE ledger = 'public.big' AND first_seq = 257;
SELECT ledger.inclusion_proof(c.cid, 700) = inclusion AS same_proof
FROM big_cps c, big_proofs WHERE c.size = 1500 AND s = 700;
-- Deleted: made from the records, silently, and the next checkpoint stores them all again.
DELETE FROM ledger.subtrees WHERE ledger = 'public.big';
SELECT bool_and(ledger.inclusion_proof(c.cid, s) = inclusion) AS same_proofs,
       bool_and(ledger.consistency_proof((SELECT cid FROM big_cps WHERE size = 1000), c.cid) = consistency) AS same_consistency
FROM big_cps c, big_proofs WHERE c.size = 1500;
INSERT INTO big VALUES (1501, 'b1501');
SELECT record_count FROM ledger.checkpoint('big');
SELECT count(*) FROM ledger.subtrees WHERE ledger = 'public.big';
-- One deleted from the middle, or one added: the next checkpoint counts them and stores them all
-- again (a wrong root is the proof's to find, above).
DELETE FROM ledger.subtrees WHERE ledger = 'public.big' AND first_seq = 513;
INSERT INTO big VALUES (1502, 'b1502');
SELECT record_count FROM ledger.checkpoint('big');
SELECT string_agg(first_seq::text, ' ' ORDER BY first_seq) FROM ledger.subtrees WHERE ledger = 'public.big';
INSERT INTO ledger.subtrees VALUES ('public.big', NULL, 8, 1281, decode(ledger.sha3_256('surplus'), 'hex'));
INSERT INTO big VALUES (1503, 'b1503');
SELECT record_count FROM ledger.checkpoint('big');
SELECT string_agg(first_seq::text, ' ' ORDER BY first_seq) FROM ledger.subtrees WHERE ledger = 'public.big';

-- ... rewrites record 300 and re-hashes it: its proof fails, as does verify_checkpoint. Another
-- record's proof shows where it is in the checkpointed tree without reading record 300's tile.
ALTER TABLE big DISABLE TRIGGER ALL;
UPDATE big SET body = 'rewritten', hash = ledger.sha3_256('rewritten') WHERE seq = 300;
ALTER TABLE big ENABLE ALWAYS TRIGGER zz_ledger_append, ENABLE ALWAYS TRIGGER ledger_refuse_change, ENABLE ALWAYS TRIGGER ledger_refuse_truncate;
DO $$
BEGIN
    PERFORM ledger.inclusion_proof(cid, 300) FROM big_cps WHERE size = 1500;
EXCEPTION WHEN data_corrupted THEN
    RAISE NOTICE '%', regexp_replace(SQLERRM, '[0-9a-f-]{36}', '<cid>');
END
$$;
SELECT ledger.verify_inclusion(b.hash, ledger.inclusion_proof(c.cid, 1024), c.root, 1500) AS valid
FROM big b, big_cps c WHERE b.seq = 1024 AND c.size = 1500;
SELECT v.item, v.ok FROM big_cps c, ledger.verify_checkpoint(c.cid) v WHERE c.size = 1500 AND v.item = 'merkle_root';
DROP TABLE big, big_cps, big_proofs;
