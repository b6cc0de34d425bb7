-- Erasure: columns made erasable are committed to through salted hashes; ledger.redact removes a
-- record's values and salts, keeps the commitments, and every hash, checkpoint and digest stays.
CREATE ROLE ledger_erasure_owner;
GRANT CREATE ON SCHEMA public TO ledger_erasure_owner;
SET ROLE ledger_erasure_owner;
CREATE TABLE customers (id int PRIMARY KEY, account text NOT NULL, email text, born date, tier text NOT NULL);
SELECT ledger.enable('customers', 'account');
INSERT INTO customers VALUES (1, 'a', 'before@example.org', '1960-01-01', 'gold');
RESET ROLE;
SELECT cid AS before_cid FROM ledger.checkpoint('customers', 'a') \gset

-- Only hashed columns that can read NULL, and not the chain's own, can be erasable.
\set VERBOSITY sqlstate
SELECT ledger.set_erasable('customers', '{nope}');
SELECT ledger.set_erasable('customers', '{account}');
SELECT ledger.set_erasable('customers', '{seq}');
SELECT ledger.set_erasable('customers', '{tier}');
SELECT ledger.set_erasable('customers', ARRAY[NULL]::text[]);
SELECT ledger.set_erasable('ledger.records', '{payload}');
SELECT ledger.redact('customers', 'a', 1, 'too early');
\set VERBOSITY default
SELECT ledger.set_erasable('customers', '{tier}');

-- The owner makes email and born erasable: the table gets ledger_erasure, the events say so.
SET ROLE ledger_erasure_owner;
SELECT ledger.set_erasable('customers', '{email,born}');
INSERT INTO customers VALUES (2, 'a', 'alice@example.org', '1990-05-05', 'gold'), (3, 'a', NULL, '1970-01-01', 'silver');
SELECT id, (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(ledger_erasure) k) AS entries,
       (SELECT bool_and(v ? 'salt') FROM jsonb_each(ledger_erasure) e(k, v)) AS salted
  FROM customers ORDER BY id;
SELECT * FROM ledger.verify('customers');
RESET ROLE;
SELECT event, reason FROM ledger.events WHERE ledger = 'public.customers' ORDER BY seq;
SELECT erasable FROM ledger.ledgers WHERE tbl = 'customers'::regclass;
SELECT cid AS salted_cid FROM ledger.checkpoint('customers', 'a') \gset
SELECT ledger.digest(:'salted_cid') AS salted_digest \gset
SELECT hash AS hash_before FROM customers WHERE id = 2 \gset

-- Erasing record 2: its values are gone, its hash is not, and everything verifies.
\set VERBOSITY sqlstate
SELECT ledger.redact('customers', 'a', 2, '');
SELECT ledger.redact('customers', 'a', 99, 'no such record');
SELECT ledger.redact('customers', NULL, 2, 'no chain named');
SELECT ledger.redact('customers', 'a', 1, 'appended before email was erasable');
SET ROLE ledger_writer;
SELECT ledger.redact('customers', 'a', 2, 'not the owner');
RESET ROLE;
\set VERBOSITY default
SET ROLE ledger_erasure_owner;
SELECT ledger.redact('customers', 'a', 2, 'erasure request 42');
RESET ROLE;
SELECT id, email, born, tier, hash = :'hash_before' AS same_hash,
       (SELECT bool_and(v ? 'erased') FROM jsonb_each(ledger_erasure) e(k, v)) AS erased
  FROM customers WHERE id = 2;
SELECT * FROM ledger.verify('customers');
SELECT bool_and(ok IS NOT FALSE) FROM ledger.verify_checkpoint(:'before_cid');
SELECT bool_and(ok IS NOT FALSE) FROM ledger.verify_checkpoint(:'salted_cid');
SELECT item, ok FROM ledger.verify_digest(:'salted_digest') WHERE item IN ('checkpoint', 'extends');
SELECT event, actor, reason FROM ledger.events WHERE ledger = 'public.customers' AND event = 'redact';
\set VERBOSITY terse
SELECT ledger.redact('customers', 'a', 2, 'twice');
\set VERBOSITY default
-- Erasing is the one change, and only through ledger.redact.
\set VERBOSITY sqlstate
UPDATE customers SET email = NULL WHERE id = 3;
\set VERBOSITY default
-- The export marks the records' erasure entries.
SELECT line::json -> 'erasure' AS erasure FROM ledger.export('customers') AS line LIMIT 1;

-- A superuser's attempts are caught: a value put back, a salt changed, a record forged.
ALTER TABLE customers DISABLE TRIGGER ALL;
UPDATE customers SET email = 'alice@example.org' WHERE id = 2;
UPDATE customers SET ledger_erasure = jsonb_set(ledger_erasure, '{born,salt}', to_jsonb(repeat('0', 64))) WHERE id = 3;
INSERT INTO customers VALUES (4, 'b', 'carol@example.org', '2000-02-02', 'gold', 1, NULL,
  'c51f48e46bd22ddf5f7ca4bfb6dae8b1e7d4fa3a5b72e4d2a1f08a7f2d3c2cba', NULL);
ALTER TABLE customers ENABLE ALWAYS TRIGGER zz_ledger_append, ENABLE ALWAYS TRIGGER ledger_refuse_change, ENABLE ALWAYS TRIGGER ledger_refuse_truncate;
SELECT chain, seq, problem FROM ledger.verify('customers');
ALTER TABLE customers DISABLE TRIGGER ALL;
UPDATE customers SET email = NULL WHERE id = 2;
DELETE FROM customers WHERE id = 4;
ALTER TABLE customers ENABLE ALWAYS TRIGGER zz_ledger_append, ENABLE ALWAYS TRIGGER ledger_refuse_change, ENABLE ALWAYS TRIGGER ledger_refuse_truncate;
SELECT chain, seq, problem FROM ledger.verify('customers');

-- No erasable columns from now on: new records keep no salts, older ones stay erasable.
SELECT ledger.set_erasable('customers', '{}');
INSERT INTO customers VALUES (5, 'a', 'dave@example.org', NULL, 'gold');
SELECT id, ledger_erasure IS NULL AS no_entries FROM customers WHERE id = 5;
SELECT * FROM ledger.verify('customers') WHERE seq <> 3;

-- An added column can be erasable: erased, it is NULL and still encoded by its commitment.
ALTER TABLE customers ADD COLUMN phone text;
SELECT ledger.set_erasable('customers', '{phone}');
INSERT INTO customers VALUES (6, 'b', NULL, NULL, 'gold', NULL, NULL, NULL, NULL, '555-0100');
SELECT ledger.redact('customers', 'b', 1, 'phone number');
SELECT id, phone FROM customers WHERE id = 6;
SELECT * FROM ledger.verify('customers') WHERE seq <> 3;

-- A history-tracked table's erasable columns are members of each version's row; erasing a
-- deleted row erases every version of it.
CREATE TABLE members (id int PRIMARY KEY, email text, plan text NOT NULL);
SELECT ledger.enable_history('members');
INSERT INTO members VALUES (1, 'before@example.org', 'free');
\set VERBOSITY sqlstate
SELECT ledger.set_erasable('members', '{id}');
SELECT ledger.set_erasable('members', '{nope}');
SELECT ledger.set_erasable('members_history', '{row}');
\set VERBOSITY default
SELECT ledger.set_erasable('members', '{email}');
INSERT INTO members VALUES (2, 'bob@example.org', 'free');
UPDATE members SET plan = 'pro', email = 'bob2@example.org' WHERE id = 2;
\set VERBOSITY sqlstate
SELECT ledger.redact('members', '{"id": 2}', NULL, 'the row is still there');
SELECT ledger.redact('members', NULL, NULL, 'no key');
SELECT ledger.redact('members', '{"id": 9}', NULL, 'no such row');
SELECT ledger.redact('members', 'id 2', NULL, 'not a key');
\set VERBOSITY default
DELETE FROM members WHERE id = 2;
SELECT hash AS version_hash FROM members_history WHERE key = '{"id": 2}' AND seq = 1 \gset
SELECT ledger.redact('members', '{"id":2}', NULL, 'erasure request 43');
SELECT key, seq, op, "row", hash = :'version_hash' AS same_hash FROM members_history ORDER BY key, seq;
SELECT * FROM ledger.verify('members');
SELECT seq, op, "row" ->> 'email' AS email FROM ledger.history('members', '{"id": 2}');
SELECT reason FROM ledger.events WHERE ledger = 'public.members_history' AND event = 'redact';
-- An erased member put back is caught.
ALTER TABLE members_history DISABLE TRIGGER ALL;
UPDATE members_history SET "row" = jsonb_set("row", '{email}', '"bob@example.org"') WHERE key = '{"id": 2}' AND seq = 1;
ALTER TABLE members_history ENABLE ALWAYS TRIGGER zz_ledger_append, ENABLE ALWAYS TRIGGER ledger_refuse_change, ENABLE ALWAYS TRIGGER ledger_refuse_truncate;
SELECT chain, seq, problem FROM ledger.verify('members');
DROP TABLE members;
DROP TABLE members_history;

DROP TABLE customers;
REVOKE CREATE ON SCHEMA public FROM ledger_erasure_owner;
DROP ROLE ledger_erasure_owner;
