-- The built-in ledger: appends chain, everything else is refused.
CREATE EXTENSION ledger;
\set VERBOSITY default

-- Fixed values, so the hashes below are the format's, not the clock's.
INSERT INTO ledger.records (rid, anchor_id, slot, kind, ts, payload) VALUES
    ('00000000-0000-0000-0000-000000000001', 'a0000000-0000-0000-0000-000000000000', 'main', 'open',
     '2026-01-01 00:00:00+00', '{"amount": 10.50, "currency": "EUR"}'),
    ('00000000-0000-0000-0000-000000000002', 'a0000000-0000-0000-0000-000000000000', 'main', 'pay',
     '2026-01-01 00:00:01+00', '{"currency": "EUR", "amount": 3}');
INSERT INTO ledger.records (rid, anchor_id, slot, kind, ts, payload) VALUES
    ('00000000-0000-0000-0000-000000000003', 'b0000000-0000-0000-0000-000000000000', 'main', 'open',
     '2026-01-01 00:00:00+00', '[]');
SELECT anchor_id, seq, prev_hash, hash FROM ledger.records ORDER BY anchor_id, seq;

-- The chain continues across statements and transactions.
BEGIN;
INSERT INTO ledger.records (anchor_id, slot, kind, payload)
    SELECT 'a0000000-0000-0000-0000-000000000000', 'main', 'pay', jsonb_build_object('i', i)
    FROM generate_series(1, 3) i;
SAVEPOINT s;
INSERT INTO ledger.records (anchor_id, slot, kind, payload) VALUES ('a0000000-0000-0000-0000-000000000000', 'main', 'lost', '{}');
ROLLBACK TO SAVEPOINT s;
INSERT INTO ledger.records (anchor_id, slot, kind, payload) VALUES ('a0000000-0000-0000-0000-000000000000', 'main', 'kept', '{}');
COMMIT;
SELECT kind, seq, prev_hash = lag(hash) OVER (ORDER BY seq) AS linked
FROM ledger.records WHERE anchor_id = 'a0000000-0000-0000-0000-000000000000' ORDER BY seq;

-- A client may assert the head it saw; anything else is refused.
INSERT INTO ledger.records (anchor_id, slot, kind, payload, seq)
    VALUES ('b0000000-0000-0000-0000-000000000000', 'main', 'pay', '{}', 7);
INSERT INTO ledger.records (anchor_id, slot, kind, payload, prev_hash)
    VALUES ('b0000000-0000-0000-0000-000000000000', 'main', 'pay', '{}', repeat('0', 64));
INSERT INTO ledger.records (anchor_id, slot, kind, payload, hash)
    VALUES ('b0000000-0000-0000-0000-000000000000', 'main', 'pay', '{}', 'not a hash');
INSERT INTO ledger.records (anchor_id, slot, kind, payload, prev_hash)
    SELECT anchor_id, 'main', 'pay', '{}', hash FROM ledger.records
    WHERE anchor_id = 'b0000000-0000-0000-0000-000000000000' AND seq = 1;
SELECT seq FROM ledger.records WHERE anchor_id = 'b0000000-0000-0000-0000-000000000000' ORDER BY seq;

-- Append-only, whatever the session says.
UPDATE ledger.records SET kind = 'edited' WHERE seq = 1;
DELETE FROM ledger.records WHERE seq = 1;
TRUNCATE ledger.records;
MERGE INTO ledger.records r USING (SELECT 1) s ON r.seq = 1 WHEN MATCHED THEN DELETE;
SET session_replication_role = replica;
UPDATE ledger.records SET kind = 'edited' WHERE seq = 1;
RESET session_replication_role;
UPDATE ledger.records SET kind = 'edited' WHERE false;
SELECT count(*) FROM ledger.records WHERE kind = 'edited';

SELECT * FROM ledger.verify();
SELECT length(ledger.canonical_bytes('ledger.records', 'a0000000-0000-0000-0000-000000000000', 1));
SELECT count(*) AS records,
       count(*) FILTER (WHERE ledger.sha3_256(ledger.canonical_bytes('ledger.records', anchor_id::text, seq)) = hash)
           AS hash_to_their_canonical_bytes
FROM ledger.records;
SELECT ledger.sha3_256('');
