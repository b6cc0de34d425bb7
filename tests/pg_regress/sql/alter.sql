-- Schema changes: the table's owner adds a column with plain ALTER TABLE ... ADD COLUMN. Records
-- from then on cover it where they have a value; older records verify unchanged.
CREATE ROLE ledger_alter_owner;
GRANT CREATE ON SCHEMA public TO ledger_alter_owner;
SET ROLE ledger_alter_owner;
CREATE TABLE orders (id int PRIMARY KEY, account text NOT NULL, amount numeric NOT NULL);
INSERT INTO orders VALUES (1, 'a', 10), (2, 'b', 20);
SELECT ledger.enable('orders', 'account');
RESET ROLE;
SELECT cid AS before_cid FROM ledger.checkpoint('orders', 'a') \gset
SET ROLE ledger_alter_owner;
ALTER TABLE orders ADD COLUMN memo text, ADD COLUMN due date;
INSERT INTO orders (id, account, amount, memo) VALUES (3, 'a', 30, 'first with a memo');
INSERT INTO orders (id, account, amount) VALUES (4, 'a', 40);
SELECT * FROM ledger.verify('orders');
RESET ROLE;
SELECT columns, column_types, base_columns, cardinality(earlier_definitions) AS earlier
  FROM ledger.ledgers WHERE tbl = 'orders'::regclass;
SELECT event, actor, reason ~ '^added column\(s\) memo \(text\), due \(date\); the definition was [0-9a-f]{64}$' AS reason_ok,
       definition = ledger.sha3_256(convert_to(ledger.definition('orders'), 'UTF8')) AS definition_now
  FROM ledger.events WHERE ledger = 'public.orders' ORDER BY seq;
SELECT line FROM regexp_split_to_table(ledger.definition('orders'), E'\n') AS line
 WHERE line ~ '^(hashed|added|column (memo|due))';
-- A checkpoint made before the change still verifies; so does a new one.
SELECT item, ok, detail FROM ledger.verify_checkpoint(:'before_cid') WHERE item IN ('definition', 'root');
SELECT count(*) FROM ledger.checkpoint('orders');
SELECT bool_and(ok) FROM ledger.checkpoints c, ledger.verify_checkpoint(c.cid) WHERE c.ledger = 'public.orders';
-- The canonical bytes of a record without a value in the added columns are what they were.
SELECT octet_length(ledger.canonical_bytes('orders', 'a', 1)) < octet_length(ledger.canonical_bytes('orders', 'a', 2)) AS memo_encoded;

-- What cannot be covered, or would read old records differently, is refused; nothing changes.
\set VERBOSITY sqlstate
SET ROLE ledger_alter_owner;
ALTER TABLE orders ADD COLUMN flag boolean DEFAULT true;
ALTER TABLE orders ADD COLUMN n bigint GENERATED ALWAYS AS IDENTITY;
ALTER TABLE orders ADD COLUMN at timestamptz DEFAULT clock_timestamp();
ALTER TABLE orders ADD COLUMN twice numeric GENERATED ALWAYS AS (amount * 2) STORED;
ALTER TABLE orders ADD COLUMN spot point;
ALTER TABLE orders DROP COLUMN memo;
ALTER TABLE orders RENAME COLUMN memo TO note;
ALTER TABLE orders ALTER COLUMN memo TYPE varchar(100);
ALTER TABLE orders ADD COLUMN flag boolean, ALTER COLUMN amount DROP NOT NULL;
\set VERBOSITY default
ALTER TABLE orders ADD COLUMN flag boolean DEFAULT true;
-- Adding without a default, then setting one, is the way: old records keep no value.
ALTER TABLE orders ADD COLUMN flag boolean;
ALTER TABLE orders ALTER COLUMN flag SET DEFAULT true;
INSERT INTO orders (id, account, amount) VALUES (5, 'b', 50);
SELECT id, flag FROM orders ORDER BY id;
RESET ROLE;
SELECT * FROM ledger.verify('orders');
SELECT count(*) AS alter_events FROM ledger.events WHERE ledger = 'public.orders' AND event = 'alter';

-- An edit of an added column is caught, in a record that has a value and in one that had none.
ALTER TABLE orders DISABLE TRIGGER ledger_refuse_change;
UPDATE orders SET memo = 'edited' WHERE id = 3;
UPDATE orders SET memo = 'smuggled' WHERE id = 1;
UPDATE orders SET flag = NULL WHERE id = 5;
ALTER TABLE orders ENABLE ALWAYS TRIGGER ledger_refuse_change;
SELECT chain, seq, problem FROM ledger.verify('orders');

-- A history ledger's columns are its trigger's; a tracked table's are its history's.
CREATE TABLE state (id int PRIMARY KEY, v text);
SELECT ledger.enable_history('state');
\set VERBOSITY sqlstate
ALTER TABLE state_history ADD COLUMN extra text;
\set VERBOSITY default
-- A tracked table's owner adds a column: every row reads differently now, so each gets an update
-- version as it reads; the state check and the history's checkpoints hold.
SET ROLE ledger_alter_owner;
CREATE TABLE alter_state (id int PRIMARY KEY, v text);
SELECT ledger.enable_history('alter_state');
INSERT INTO alter_state VALUES (1, 'a'), (2, 'b');
RESET ROLE;
SELECT cid AS history_cid FROM ledger.checkpoint('alter_state_history', '{"id": 1}') \gset
SET ROLE ledger_alter_owner;
ALTER TABLE alter_state ADD COLUMN extra text DEFAULT 'x';
UPDATE alter_state SET extra = 'y' WHERE id = 2;
SELECT key, seq, op, "row" FROM alter_state_history ORDER BY key, seq;
RESET ROLE;
SELECT * FROM ledger.verify('alter_state');
SELECT event, reason ~ '^added column\(s\) extra text to the tracked table public.alter_state; its definition was [0-9a-f]{64}$' AS reason_ok FROM ledger.events
 WHERE ledger = 'public.alter_state_history' ORDER BY seq;
SELECT item, ok FROM ledger.verify_checkpoint(:'history_cid') WHERE item = 'definition';
SELECT * FROM ledger.as_of(NULL::alter_state, now()) ORDER BY id;
DROP TABLE orders, state, state_history, alter_state, alter_state_history;
REVOKE CREATE ON SCHEMA public FROM ledger_alter_owner;
DROP ROLE ledger_alter_owner;
