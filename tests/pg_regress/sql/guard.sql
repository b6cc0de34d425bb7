-- A table owner who is not a superuser cannot change or drop a ledger, only retire it.
CREATE ROLE ledger_regress_owner;
GRANT CREATE ON SCHEMA public TO ledger_regress_owner;
CREATE FUNCTION refusal_of(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;
SET ROLE ledger_regress_owner;
CREATE DOMAIN label AS text;
CREATE TABLE owned (id int PRIMARY KEY, account text NOT NULL, body text, tag label);
SELECT ledger.enable('owned', 'account');
INSERT INTO owned VALUES (1, 'a', 'one', 'x'), (2, 'a', 'two', 'y');
SELECT statement, refusal_of(statement) FROM (VALUES
    ('DROP TABLE owned'),
    ('ALTER TABLE owned DISABLE TRIGGER zz_ledger_append'),
    ('ALTER TABLE owned DISABLE TRIGGER ALL'),
    ('ALTER TABLE owned ENABLE TRIGGER ledger_refuse_change'),
    ('DROP TRIGGER ledger_refuse_change ON owned'),
    ('DROP TRIGGER zz_ledger_append ON owned'),
    ('CREATE RULE keep AS ON UPDATE TO owned DO INSTEAD NOTHING'),
    ('ALTER TABLE owned ALTER COLUMN body TYPE varchar'),
    ('ALTER TABLE owned ALTER COLUMN body TYPE text USING upper(body)'),
    ('ALTER TABLE owned ALTER COLUMN id TYPE bigint'),
    ('CREATE TABLE owned_child () INHERITS (owned)'),
    ('ALTER DOMAIN label RENAME TO relabel'),
    ('ALTER TABLE owned DROP COLUMN body'),
    ('ALTER TABLE owned ADD COLUMN extra text DEFAULT ''none'''),
    ('ALTER TABLE owned RENAME COLUMN body TO text'),
    ('ALTER TABLE owned RENAME TO renamed'),
    ('ALTER TABLE owned SET UNLOGGED'),
    ('ALTER TABLE owned ENABLE ROW LEVEL SECURITY'),
    ('CREATE OR REPLACE FUNCTION ledger.append_row() RETURNS trigger LANGUAGE plpgsql AS $f$BEGIN RETURN NEW; END$f$'),
    ('ALTER EXTENSION ledger DROP TABLE ledger.records'),
    ('ALTER EXTENSION ledger DROP FUNCTION ledger.append_row()'),
    ('DROP OWNED BY ledger_regress_owner'),
    ('DROP EVENT TRIGGER ledger_guard_ddl'),
    ('UPDATE ledger.ledgers SET definition = NULL'),
    ('INSERT INTO ledger.events (ledger, event, actor) VALUES (''public.owned'', ''retire'', ''me'')'),
    ('CREATE INDEX ON owned (body)'),
    ('ALTER DOMAIN label ADD CONSTRAINT short CHECK (length(VALUE) < 100)'),
    ('COMMENT ON TABLE owned IS ''still a ledger''')
) AS s(statement);
SELECT chain, seq, problem FROM ledger.verify('owned');
-- The refusal names each changed line of the definition on a line of its own.
ALTER TABLE owned RENAME COLUMN body TO text_body;
RESET ROLE;
DO $$ BEGIN EXECUTE format('GRANT CREATE ON DATABASE %I TO ledger_regress_owner', current_database()); END $$;
SET ROLE ledger_regress_owner;
CREATE SCHEMA books;
CREATE TABLE books.entries (id int PRIMARY KEY);
SELECT ledger.enable('books.entries');
SELECT refusal_of('DROP SCHEMA books CASCADE');

-- Retiring: appends refused, a last checkpoint per chain, the event in ledger.events.
SELECT refusal_of('SELECT ledger.retire(''owned'', '' '')');
SELECT chain, record_count FROM ledger.retire('owned', 'migrated to owned_v2');
SELECT refusal_of('INSERT INTO owned VALUES (3, ''a'', ''three'', ''z'')');
SELECT refusal_of('SELECT ledger.retire(''owned'', ''again'')');
SELECT chain, seq, problem FROM ledger.verify('owned');
RESET ROLE;
SELECT ledger, event, actor, reason, seq FROM ledger.events WHERE ledger = 'public.owned' ORDER BY seq;
SELECT retired_by, retire_reason FROM ledger.ledgers WHERE tbl = 'owned'::regclass;

-- A superuser may drop it; the drop is recorded and the registry forgets the table.
DROP TABLE owned;
DROP DOMAIN label;
SELECT ledger, event, actor, reason, seq FROM ledger.events WHERE ledger = 'public.owned' ORDER BY seq;
SELECT count(*) FROM ledger.ledgers WHERE tbl::oid NOT IN (SELECT oid FROM pg_class);
DROP SCHEMA books CASCADE;
REVOKE CREATE ON SCHEMA public FROM ledger_regress_owner;
DO $$ BEGIN EXECUTE format('REVOKE CREATE ON DATABASE %I FROM ledger_regress_owner', current_database()); END $$;
DROP ROLE ledger_regress_owner;
