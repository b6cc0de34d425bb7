-- Any table can become a ledger; rows already there are chained in primary-key order.
CREATE TABLE audit (
    id      bigint PRIMARY KEY,
    account text NOT NULL,
    amount  numeric(12, 2) NOT NULL,
    at      timestamptz NOT NULL,
    note    jsonb
);
INSERT INTO audit VALUES
    (3, 'alice', 30.00, '2026-01-03 00:00:00+00', '{"n": 3}'),
    (1, 'alice', 10.00, '2026-01-01 00:00:00+00', '{"n": 1}'),
    (2, 'bob',   20.00, '2026-01-02 00:00:00+00', null),
    (4, 'alice', 40.50, '2026-01-04 00:00:00+00', '{"n": 4}');
SELECT ledger.enable('audit', chain_by => 'account');
SELECT account, id, seq, prev_hash IS NULL AS first, hash FROM audit ORDER BY account, seq;
SELECT tbl, chain_by, columns, column_types FROM ledger.ledgers ORDER BY tbl::text;
SELECT * FROM ledger.verify('audit');

-- New rows continue each chain.
INSERT INTO audit (id, account, amount, at) VALUES (5, 'bob', 5, '2026-01-05 00:00:00+00');
SELECT account, id, seq FROM audit WHERE account = 'bob' ORDER BY seq;

-- Without chain_by the table is one chain.
CREATE TABLE events (id int PRIMARY KEY, body text);
INSERT INTO events SELECT i, 'event ' || i FROM generate_series(1, 3) i;
SELECT ledger.enable('events');
INSERT INTO events VALUES (10, 'later');
SELECT id, seq FROM events ORDER BY seq;
SELECT * FROM ledger.verify('events');

-- Bad input: a clear error, and nothing changes.
CREATE TABLE no_pk (id int, body text);
SELECT ledger.enable('no_pk');
CREATE TABLE odd_types (id int PRIMARY KEY, location point, tags int[]);
SELECT ledger.enable('odd_types');
CREATE TABLE keyed (id int PRIMARY KEY, account text);
SELECT ledger.enable('keyed', chain_by => 'acount');
INSERT INTO keyed VALUES (1, null);
SELECT ledger.enable('keyed', chain_by => 'account');
SELECT ledger.enable('audit', chain_by => 'account');
CREATE VIEW audit_view AS SELECT * FROM audit;
SELECT ledger.enable('audit_view');
CREATE TABLE wrong_seq (id int PRIMARY KEY, seq text);
SELECT ledger.enable('wrong_seq');
CREATE TABLE generated (id int PRIMARY KEY, twice int GENERATED ALWAYS AS (id * 2) STORED);
SELECT ledger.enable('generated');
SELECT count(*) AS columns_added FROM pg_attribute
    WHERE attrelid IN ('no_pk'::regclass, 'odd_types'::regclass, 'keyed'::regclass, 'generated'::regclass)
      AND attname IN ('seq', 'prev_hash', 'hash');
SELECT count(*) AS registered FROM ledger.ledgers WHERE tbl::text IN ('no_pk', 'odd_types', 'keyed', 'audit_view', 'wrong_seq', 'generated');

-- A null chain key on insert is refused.
INSERT INTO audit (id, account, amount, at) VALUES (6, null, 1, now());

-- Chains are chosen by SQL equality and hashed by stored value, so the two must agree.
CREATE TABLE by_amount (id int PRIMARY KEY, amount numeric NOT NULL);
SELECT ledger.enable('by_amount', chain_by => 'amount');
CREATE TABLE by_name (id int PRIMARY KEY, name text COLLATE "C" NOT NULL);
SELECT ledger.enable('by_name', chain_by => 'name');

-- A BEFORE trigger that would fire after the ledger's could change a hashed row: refused.
CREATE TABLE notes (id int PRIMARY KEY, body text);
SELECT ledger.enable('notes');
CREATE FUNCTION shout() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.body := upper(NEW.body); RETURN NEW; END $$;
CREATE TRIGGER zzz_shout BEFORE INSERT ON notes FOR EACH ROW EXECUTE FUNCTION shout();
INSERT INTO notes VALUES (1, 'hello');
ALTER TRIGGER zzz_shout ON notes RENAME TO shout;
INSERT INTO notes VALUES (1, 'hello');
SELECT body, seq FROM notes;
SELECT * FROM ledger.verify('notes');
