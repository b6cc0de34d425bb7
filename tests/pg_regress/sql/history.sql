-- History-tracked tables: the table stays writable, every change is a version in its history
-- ledger (one chain per primary key), and verify checks the table against the replay.
CREATE TABLE work (id int PRIMARY KEY, status text NOT NULL, actor text, amount numeric);
INSERT INTO work VALUES (1, 'created', 'ann', 1.50);
SELECT ledger.enable_history('work');
INSERT INTO work VALUES (2, 'created', 'bob', 2);
UPDATE work SET status = 'active', actor = 'cy' WHERE id = 1;
UPDATE work SET status = 'done' WHERE id = 1;
DELETE FROM work WHERE id = 2;
INSERT INTO work VALUES (3, 'created', 'dee', 3) ON CONFLICT (id) DO NOTHING;
INSERT INTO work VALUES (3, 'created', 'dee', 3) ON CONFLICT (id) DO UPDATE SET status = 'again';
MERGE INTO work w USING (VALUES (1, 'archived')) AS s(id, status) ON w.id = s.id
  WHEN MATCHED THEN UPDATE SET status = s.status;
-- A new key is a new entity: the old one's chain ends with a delete, the new one's starts.
UPDATE work SET id = 4 WHERE id = 3;
-- Setting the key to its own value keeps the entity.
UPDATE work SET id = id, status = 'kept' WHERE id = 4;
SELECT seq, op, role, "row" FROM ledger.history('work', '{"id": 1}');
-- A key is read as its column's type, however it is spelled.
SELECT count(*) FROM ledger.history('work', '{"id": 1.0}');
SELECT * FROM ledger.verify('work', '{"id": 1.0}');
SELECT key, seq, op, "row" IS NULL AS deleted FROM work_history ORDER BY key, seq;
SELECT * FROM ledger.verify('work');
SELECT * FROM ledger.verify('work_history');
-- The history's primary key (key, seq) is the index that finds a key's latest version: no other.
SELECT indexrelid::regclass AS index, indisprimary FROM pg_index WHERE indrelid = 'work_history'::regclass;
-- The table as it was: after the first transaction, after the delete, now.
SELECT * FROM ledger.as_of(NULL::work, (SELECT min(at) FROM work_history)) ORDER BY id;
SELECT * FROM ledger.as_of(NULL::work, (SELECT at FROM work_history WHERE op = 'delete' ORDER BY at LIMIT 1)) ORDER BY id;
SELECT (SELECT array_agg(w ORDER BY id) FROM ledger.as_of(NULL::work, now()) w)
     = (SELECT array_agg(w ORDER BY id) FROM work w) AS now_is_the_table;

-- Refusals, each with its SQLSTATE; nothing changes.
\set VERBOSITY sqlstate
TRUNCATE work;
SELECT ledger.enable_history('work');
SELECT ledger.enable_history('work_history');
CREATE TABLE keyless (a int);
SELECT ledger.enable_history('keyless');
CREATE VIEW work_view AS SELECT * FROM work;
SELECT ledger.enable_history('work_view');
SELECT * FROM ledger.history('work', '{"nope": 1}');
SELECT * FROM ledger.history('work', '[1]');
SELECT * FROM ledger.history('work', '{"id": "one"}');
SELECT * FROM ledger.verify('work', 'nonsense');
SELECT * FROM ledger.verify('work', '{"nope": 1}');
SELECT * FROM ledger.history('keyless', '{"a": 1}');
SELECT * FROM ledger.as_of(NULL::keyless, now());
SELECT * FROM ledger.as_of(NULL::work, NULL);
UPDATE work_history SET op = 'insert';
\set VERBOSITY default
SELECT count(*) FROM work_history;
-- Exports: the history is the ledger; the table's rows have an export of their own.
SELECT count(*) FROM ledger.export('work');
SELECT count(*) FROM ledger.export('work_history');
SELECT count(*) FROM ledger.export_state('work');

-- A table owner who is not a superuser cannot alter or drop a tracked table.
CREATE ROLE ledger_history_owner;
GRANT CREATE ON SCHEMA public TO ledger_history_owner;
SET ROLE ledger_history_owner;
CREATE TABLE owned_state (id int PRIMARY KEY, v text);
SELECT ledger.enable_history('owned_state');
INSERT INTO owned_state VALUES (1, 'a');
\set VERBOSITY sqlstate
ALTER TABLE owned_state RENAME COLUMN v TO w;
ALTER TABLE owned_state DISABLE TRIGGER zz_ledger_history;
DROP TABLE owned_state;
INSERT INTO owned_state_history (key, op, at, role, txid, "row") VALUES ('{"id": 9}', 'insert', now(), 'me', 1, '{"id": 9}');
\set VERBOSITY default
UPDATE owned_state SET v = 'b';
SELECT op, role, "row" FROM ledger.history('owned_state', '{"id": 1}');
RESET ROLE;

-- A superuser can go behind the trigger; verify names every key the table no longer replays.
ALTER TABLE work DISABLE TRIGGER zz_ledger_history;
UPDATE work SET amount = 1.5 WHERE id = 1;
DELETE FROM work WHERE id = 4;
INSERT INTO work VALUES (5, 'created', 'eve', 5);
ALTER TABLE work ENABLE ALWAYS TRIGGER zz_ledger_history;
SELECT * FROM ledger.verify('work');
SELECT * FROM ledger.verify('work', '{"id": 5}');
-- And behind the history ledger's own triggers: a version edited is a broken chain.
ALTER TABLE work_history DISABLE TRIGGER ledger_refuse_change;
UPDATE work_history SET "row" = jsonb_set("row", '{actor}', '"mallory"') WHERE key = '{"id": 1}' AND seq = 2;
ALTER TABLE work_history ENABLE ALWAYS TRIGGER ledger_refuse_change;
SELECT chain, seq, problem FROM ledger.verify('work');

-- Retiring a tracked table retires its history: its rows cannot change any more.
SELECT count(*) FROM ledger.retire('owned_state', 'regression test');
\set VERBOSITY sqlstate
UPDATE owned_state SET v = 'c';
\set VERBOSITY default
DROP TABLE owned_state;
DROP TABLE owned_state_history;
DROP OWNED BY ledger_history_owner;
DROP ROLE ledger_history_owner;
