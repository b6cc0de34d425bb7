-- Every refusal carries a SQLSTATE a client can act on, and changes nothing.
CREATE TABLE guarded (id int PRIMARY KEY, account text);
SELECT ledger.enable('guarded', chain_by => 'account');
INSERT INTO guarded VALUES (1, 'a');
CREATE TABLE plain (id int);
CREATE TABLE unchained (id int PRIMARY KEY, account text);
CREATE FUNCTION sqlstate_of(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END
$$;
SELECT statement, sqlstate_of(statement) FROM (VALUES
    ('UPDATE guarded SET account = ''b'''),
    ('DELETE FROM guarded'),
    ('TRUNCATE guarded'),
    ('INSERT INTO guarded (id, account, seq) VALUES (2, ''a'', 5)'),
    ('INSERT INTO guarded (id, account, prev_hash) VALUES (2, ''a'', repeat(''0'', 64))'),
    ('INSERT INTO guarded (id, account, hash) VALUES (2, ''a'', repeat(''0'', 64))'),
    ('INSERT INTO guarded (id, account, hash) VALUES (2, ''a'', repeat(''A'', 64))'),
    ('INSERT INTO guarded (id, account, prev_hash) VALUES (2, ''a'', ''xyz'')'),
    ('INSERT INTO guarded (id, account) VALUES (2, null)'),
    ('SELECT ledger.enable(''guarded'')'),
    ('SELECT ledger.enable(''plain'')'),
    ('SELECT ledger.enable(''guarded_account_seq_idx'')'),
    ('SELECT ledger.enable(''unchained'', chain_by => ''nope'')'),
    ('SELECT ledger.enable(NULL)'),
    ('SELECT ledger.verify(''plain'')'),
    ('SELECT ledger.verify(''ledger.records'', ''not a uuid'')'),
    ('SELECT ledger.canonical_bytes(''guarded'', ''a'', 99)'),
    ('SELECT ledger.canonical_bytes(''guarded'', null, 1)'),
    ('SELECT ledger.merkle_root(''guarded'', ''a'', 1, 2)'),
    ('SELECT ledger.merkle_root(''guarded'', ''a'', 1, null)'),
    ('SELECT ledger.checkpoint(null)'),
    ('SELECT ledger.export(''plain'')')
) AS s(statement);
SELECT id, account, seq, prev_hash IS NULL AS first FROM guarded ORDER BY seq;
SELECT * FROM ledger.verify('guarded');
