-- Retention: a superuser sets how long a ledger keeps its records, ledger.prune removes the older
-- ones (their hashes stay in ledger.pruned), and every chain, checkpoint, proof and digest verifies.
CREATE ROLE ledger_retention_owner;
GRANT CREATE ON SCHEMA public TO ledger_retention_owner;
SET ROLE ledger_retention_owner;
CREATE TABLE fees (id int PRIMARY KEY, account text NOT NULL, amount numeric NOT NULL, at timestamptz);
SELECT ledger.enable('fees', 'account');
-- Day i of 60 (noon), alternating accounts: a's records are the odd days, b's the even ones.
INSERT INTO fees SELECT i, CASE WHEN i % 2 = 1 THEN 'a' ELSE 'b' END, i,
                        now() - (61 - i) * interval '1 day' + interval '12 hours'
  FROM generate_series(1, 60) i;
RESET ROLE;
SELECT cid AS early_cid FROM ledger.checkpoint('fees', 'a') \gset
SELECT ledger.digest(:'early_cid') AS early_digest \gset
SELECT ledger.merkle_root('fees', 'a', 3, 10) AS inside_root, ledger.merkle_root('fees', 'a', 10, 20) AS across_root \gset

-- Only a superuser sets or shortens a retention; the owner may lengthen or remove it.
\set VERBOSITY sqlstate
SELECT ledger.prune('fees');
SELECT ledger.set_retention('fees', '30 days');
SELECT ledger.set_retention('fees', '30 days', 'nope');
SELECT ledger.set_retention('fees', '30 days', 'amount');
SELECT ledger.set_retention('fees', '-1 day', 'at');
SELECT ledger.set_retention('ledger.events', '30 days', 'at');
SET ROLE ledger_retention_owner;
SELECT ledger.set_retention('fees', '30 days', 'at');
RESET ROLE;
\set VERBOSITY default
SELECT ledger.set_retention('fees', '20 days', 'at');
SET ROLE ledger_retention_owner;
SELECT ledger.set_retention('fees', '10 days', 'at');
SELECT ledger.set_retention('fees', '40 days', 'at');
SELECT ledger.set_retention('fees', NULL, NULL);
RESET ROLE;
SELECT ledger.set_retention('fees', '30 days', 'at');
SELECT event, actor, reason FROM ledger.events WHERE ledger = 'public.fees' AND event = 'retention' ORDER BY seq;

-- A record that does not verify is never pruned: its evidence would go with it.
ALTER TABLE fees DISABLE TRIGGER ledger_refuse_change;
UPDATE fees SET amount = 999 WHERE id = 3;
\set VERBOSITY sqlstate
SELECT ledger.prune('fees');
\set VERBOSITY default
UPDATE fees SET amount = 3 WHERE id = 3;
ALTER TABLE fees ENABLE ALWAYS TRIGGER ledger_refuse_change;

-- Days 1..30 are older than 30 days: each chain keeps seqs 16.. (day 31 on).
SET ROLE ledger_retention_owner;
SELECT * FROM ledger.prune('fees');
SELECT * FROM ledger.prune('fees');
RESET ROLE;
SELECT account, count(*), min(seq), max(seq) FROM fees GROUP BY account ORDER BY account;
SELECT chain, first_seq, last_seq, octet_length(hashes) FROM ledger.pruned WHERE ledger = 'public.fees' ORDER BY chain;
SELECT event, actor, reason ~ '^pruned 30 records of 2 chains older than ' AS reason_ok
  FROM ledger.events WHERE ledger = 'public.fees' AND event = 'prune';
SELECT * FROM ledger.verify('fees');
SELECT * FROM ledger.verify('ledger.pruned');
-- The checkpoint made before the prune, the one the prune made, and a new one all verify.
INSERT INTO fees VALUES (61, 'a', 61, now());
SELECT chain, record_count FROM ledger.checkpoint('fees');
SELECT c.chain, c.record_count, bool_and(v.ok) AS ok
  FROM ledger.checkpoints c, ledger.verify_checkpoint(c.cid) v
 WHERE c.ledger = 'public.fees' GROUP BY c.seq, c.chain, c.record_count ORDER BY c.seq;
SELECT item, ok FROM ledger.verify_digest(:'early_digest');
SELECT cid AS late_cid FROM ledger.checkpoints WHERE ledger = 'public.fees' AND chain = 'a' ORDER BY seq DESC LIMIT 1 \gset
SELECT ledger.verify_consistency(ledger.consistency_proof(:'early_cid', :'late_cid')::text);
SELECT ledger.verify_inclusion(h.hash, ledger.inclusion_proof(:'late_cid', 20)::text, c.merkle_root)
  FROM fees h, ledger.checkpoints c WHERE h.account = 'a' AND h.seq = 20 AND c.cid = :'late_cid';
SELECT ledger.merkle_root('fees', 'a', 1, 30) = merkle_root FROM ledger.checkpoints WHERE cid = :'early_cid';
-- Ranges that start inside the pruned part, or span its end, take the kept hashes they need.
SELECT ledger.merkle_root('fees', 'a', 3, 10) = :'inside_root' AS inside,
       ledger.merkle_root('fees', 'a', 10, 20) = :'across_root' AS across;
-- A pruned record's values are gone, by name.
\set VERBOSITY sqlstate
SELECT ledger.canonical_bytes('fees', 'a', 3);
\set VERBOSITY terse
SELECT ledger.canonical_bytes('fees', 'a', 3);
\set VERBOSITY default
-- Only the prune deletes: a plain DELETE is refused as before.
\set VERBOSITY sqlstate
DELETE FROM fees WHERE id = 40;
\set VERBOSITY default
-- The export starts with the kept hashes.
SELECT left(line, 58) FROM ledger.export('fees') AS line LIMIT 3;

-- A NULL date stops the prune: nothing after it is pruned.
CREATE TABLE notes (id int PRIMARY KEY, at date, body text);
SELECT ledger.enable('notes');
INSERT INTO notes VALUES (1, current_date - 100, 'x'), (2, NULL, 'y'), (3, current_date - 90, 'z'), (4, current_date - 80, 'w');
SELECT ledger.set_retention('notes', '1 day', 'at');
SELECT * FROM ledger.prune('notes');
SELECT id FROM notes ORDER BY id;
SELECT * FROM ledger.verify('notes');

-- Superuser tampering after a prune is caught: deleting the first kept record (the chain no
-- longer starts where the prune left it), and putting a pruned record back.
ALTER TABLE fees DISABLE TRIGGER ALL;
DELETE FROM fees WHERE account = 'b' AND seq = 16;
INSERT INTO fees (id, account, amount, at, seq, prev_hash, hash)
  VALUES (1001, 'a', 1, now() - interval '60 days', 2, NULL, repeat('0', 64));
ALTER TABLE fees ENABLE ALWAYS TRIGGER zz_ledger_append, ENABLE ALWAYS TRIGGER ledger_refuse_change, ENABLE ALWAYS TRIGGER ledger_refuse_truncate;
SELECT chain, seq, problem FROM ledger.verify('fees');
ALTER TABLE fees DISABLE TRIGGER ALL;
DELETE FROM fees WHERE id = 1001;
ALTER TABLE fees ENABLE ALWAYS TRIGGER zz_ledger_append, ENABLE ALWAYS TRIGGER ledger_refuse_change, ENABLE ALWAYS TRIGGER ledger_refuse_truncate;
-- Rewriting a kept hash: the chain's first link, the checkpoints' roots and ledger.pruned's own
-- chain all say so.
ALTER TABLE ledger.pruned DISABLE TRIGGER ALL;
UPDATE ledger.pruned SET hashes = overlay(hashes PLACING '\x00'::bytea FROM octet_length(hashes)) WHERE ledger = 'public.fees' AND chain = 'a';
ALTER TABLE ledger.pruned ENABLE ALWAYS TRIGGER zz_ledger_append, ENABLE ALWAYS TRIGGER ledger_refuse_change, ENABLE ALWAYS TRIGGER ledger_refuse_truncate;
SELECT chain, seq, problem FROM ledger.verify('fees');
SELECT c.record_count, v.ok FROM ledger.checkpoints c, ledger.verify_checkpoint(c.cid) v
 WHERE c.ledger = 'public.fees' AND c.chain = 'a' AND v.item = 'merkle_root' ORDER BY c.seq;
SELECT chain, seq, problem FROM ledger.verify('ledger.pruned');
-- Dropping the kept hashes: the chain starts nowhere, and the trees lack their leaves.
ALTER TABLE ledger.pruned DISABLE TRIGGER ALL;
DELETE FROM ledger.pruned WHERE ledger = 'public.fees' AND chain = 'a';
ALTER TABLE ledger.pruned ENABLE ALWAYS TRIGGER zz_ledger_append, ENABLE ALWAYS TRIGGER ledger_refuse_change, ENABLE ALWAYS TRIGGER ledger_refuse_truncate;
SELECT chain, seq, problem FROM ledger.verify('fees');
\set VERBOSITY sqlstate
SELECT ledger.merkle_root('fees', 'a', 1, 20);
\set VERBOSITY default

-- A history-tracked table's retention is its history's: old versions go, each key's newest stays.
CREATE TABLE balances (id int PRIMARY KEY, amount numeric NOT NULL);
SELECT ledger.enable_history('balances');
INSERT INTO balances VALUES (1, 10), (2, 20);
UPDATE balances SET amount = amount + 1;
UPDATE balances SET amount = amount + 1 WHERE id = 1;
SELECT ledger.set_retention('balances', '1 microsecond', 'at');
SELECT pg_sleep(0.01);
SELECT * FROM ledger.prune('balances');
SELECT key, seq, op FROM balances_history ORDER BY key, seq;
SELECT * FROM ledger.verify('balances');
-- The table as of now is still known; as of before the cutoff it is not.
SELECT * FROM ledger.as_of(NULL::balances, now()) ORDER BY id;
\set VERBOSITY sqlstate
SELECT * FROM ledger.as_of(NULL::balances, now() - interval '1 day');
\set VERBOSITY default
UPDATE balances SET amount = 0 WHERE id = 2;
SELECT * FROM ledger.verify('balances');

DROP TABLE fees, notes, balances;
-- A new ledger under a pruned one's name starts without the hashes the old one kept.
CREATE TABLE fees (id int PRIMARY KEY, account text NOT NULL);
SELECT ledger.enable('fees', 'account');
INSERT INTO fees VALUES (1, 'a');
SELECT * FROM ledger.verify('fees');
SELECT count(*) FROM ledger.pruned_runs('fees');
DROP TABLE fees;
REVOKE CREATE ON SCHEMA public FROM ledger_retention_owner;
DROP ROLE ledger_retention_owner;
