-- A superuser who disables the triggers can change rows; ledger.verify names what changed.
CREATE TABLE t (id int PRIMARY KEY, account text NOT NULL, body text);
SELECT ledger.enable('t', chain_by => 'account');
INSERT INTO t SELECT i, 'a', 'row ' || i FROM generate_series(1, 6) i;
INSERT INTO t SELECT i, 'b', 'row ' || i FROM generate_series(7, 9) i;
CREATE TABLE pristine AS SELECT * FROM t;
CREATE FUNCTION reset_t() RETURNS void LANGUAGE sql AS $$
    ALTER TABLE t DISABLE TRIGGER ALL;
    DELETE FROM t;
    INSERT INTO t SELECT * FROM pristine;
    ALTER TABLE t ENABLE ALWAYS TRIGGER zz_ledger_append, ENABLE ALWAYS TRIGGER ledger_refuse_change, ENABLE ALWAYS TRIGGER ledger_refuse_truncate;
$$;
SELECT * FROM ledger.verify('t');

ALTER TABLE t DISABLE TRIGGER ALL;
UPDATE t SET body = 'edited' WHERE account = 'a' AND seq = 3;
ALTER TABLE t ENABLE ALWAYS TRIGGER zz_ledger_append, ENABLE ALWAYS TRIGGER ledger_refuse_change, ENABLE ALWAYS TRIGGER ledger_refuse_truncate;
SELECT chain, seq, problem FROM ledger.verify('t');
SELECT chain, seq, problem FROM ledger.verify('t', 'b');
SELECT reset_t();

ALTER TABLE t DISABLE TRIGGER ALL;
UPDATE t SET hash = repeat('ab', 32) WHERE account = 'a' AND seq = 2;
ALTER TABLE t ENABLE ALWAYS TRIGGER zz_ledger_append, ENABLE ALWAYS TRIGGER ledger_refuse_change, ENABLE ALWAYS TRIGGER ledger_refuse_truncate;
SELECT chain, seq, problem FROM ledger.verify('t');
SELECT reset_t();

ALTER TABLE t DISABLE TRIGGER ALL;
UPDATE t SET prev_hash = repeat('ab', 32) WHERE account = 'a' AND seq = 4;
ALTER TABLE t ENABLE ALWAYS TRIGGER zz_ledger_append, ENABLE ALWAYS TRIGGER ledger_refuse_change, ENABLE ALWAYS TRIGGER ledger_refuse_truncate;
SELECT chain, seq, problem FROM ledger.verify('t');
SELECT reset_t();

ALTER TABLE t DISABLE TRIGGER ALL;
DELETE FROM t WHERE account = 'a' AND seq = 3;
ALTER TABLE t ENABLE ALWAYS TRIGGER zz_ledger_append, ENABLE ALWAYS TRIGGER ledger_refuse_change, ENABLE ALWAYS TRIGGER ledger_refuse_truncate;
SELECT chain, seq, problem, detail FROM ledger.verify('t');
SELECT reset_t();

ALTER TABLE t DISABLE TRIGGER ALL;
UPDATE t SET seq = 0 WHERE account = 'a' AND seq = 4;
UPDATE t SET seq = 4 WHERE account = 'a' AND seq = 5;
UPDATE t SET seq = 5 WHERE account = 'a' AND seq = 0;
ALTER TABLE t ENABLE ALWAYS TRIGGER zz_ledger_append, ENABLE ALWAYS TRIGGER ledger_refuse_change, ENABLE ALWAYS TRIGGER ledger_refuse_truncate;
SELECT chain, seq, problem FROM ledger.verify('t');
SELECT reset_t();

DROP INDEX t_account_seq_idx;
ALTER TABLE t DISABLE TRIGGER ALL;
INSERT INTO t SELECT 100, account, body, seq, prev_hash, hash FROM t WHERE account = 'b' AND seq = 2;
ALTER TABLE t ENABLE ALWAYS TRIGGER zz_ledger_append, ENABLE ALWAYS TRIGGER ledger_refuse_change, ENABLE ALWAYS TRIGGER ledger_refuse_truncate;
SELECT chain, seq, problem FROM ledger.verify('t');

-- The newest record deleted: the chain is still valid. Checkpoints catch this.
SELECT reset_t();
ALTER TABLE t DISABLE TRIGGER ALL;
DELETE FROM t WHERE account = 'b' AND seq = 3;
ALTER TABLE t ENABLE ALWAYS TRIGGER zz_ledger_append, ENABLE ALWAYS TRIGGER ledger_refuse_change, ENABLE ALWAYS TRIGGER ledger_refuse_truncate;
SELECT chain, seq, problem FROM ledger.verify('t');

-- A superuser who re-enables the triggers the ordinary way leaves them ORIGIN, not ALWAYS, so
-- session_replication_role = replica would switch them off: the changed definition is reported.
SELECT reset_t();
ALTER TABLE t DISABLE TRIGGER ALL;
ALTER TABLE t ENABLE TRIGGER ALL;
SELECT chain, seq, problem, detail FROM ledger.verify('t');
ALTER TABLE t ENABLE ALWAYS TRIGGER zz_ledger_append, ENABLE ALWAYS TRIGGER ledger_refuse_change, ENABLE ALWAYS TRIGGER ledger_refuse_truncate;
SELECT chain, seq, problem FROM ledger.verify('t');

-- ledger.verify hashes on several threads (ledger.verify_threads; 0, the default, is one per core):
-- the findings are the same, in the same order, whatever their number. 5,000 records in 3 chains
-- make five batches; the edits fall inside a batch, on either side of a batch's end, and in the
-- last (partial) batch.
CREATE TABLE bulk (id int PRIMARY KEY, account text NOT NULL, body text);
SELECT ledger.enable('bulk', 'account');
INSERT INTO bulk SELECT i, 'a' || (i % 3), repeat(md5(i::text), i % 5) FROM generate_series(1, 5000) i;
ALTER TABLE bulk DISABLE TRIGGER ALL;
UPDATE bulk SET body = 'edited' WHERE id IN (700, 1024, 1025, 4999);
DELETE FROM bulk WHERE id = 2048;
UPDATE bulk SET hash = repeat('0', 64) WHERE id = 3000;
ALTER TABLE bulk ENABLE ALWAYS TRIGGER zz_ledger_append, ENABLE ALWAYS TRIGGER ledger_refuse_change, ENABLE ALWAYS TRIGGER ledger_refuse_truncate;
SET ledger.verify_threads = 1;
SELECT chain, seq, problem FROM ledger.verify('bulk');
SELECT array(SELECT v::text FROM ledger.verify('bulk') v) AS one_thread \gset
SET ledger.verify_threads = 2;
SELECT array(SELECT v::text FROM ledger.verify('bulk') v) = :'one_thread' AS two_threads_agree;
SET ledger.verify_threads = 7;
SELECT array(SELECT v::text FROM ledger.verify('bulk') v) = :'one_thread' AS seven_threads_agree;
RESET ledger.verify_threads;
SELECT array(SELECT v::text FROM ledger.verify('bulk') v) = :'one_thread' AS default_agrees;
SELECT count(*) FROM ledger.verify('bulk', 'a1');
\set VERBOSITY sqlstate
SET ledger.verify_threads = -1;
SET ledger.verify_threads = 65;
\set VERBOSITY default
DROP TABLE bulk;
