-- Partitioned ledgers: a table partitioned by range on one column is a ledger whose chains continue
-- from partition to partition in bound order; partitions made later are registered and guarded.
CREATE ROLE ledger_partition_owner;
GRANT CREATE ON SCHEMA public TO ledger_partition_owner;
SET ROLE ledger_partition_owner;
CREATE TABLE moves (id bigint, account text NOT NULL, amount numeric NOT NULL, at timestamptz NOT NULL,
                    PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE moves_2026_01 PARTITION OF moves FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');
CREATE TABLE moves_2026_02 PARTITION OF moves FOR VALUES FROM ('2026-02-01') TO ('2026-03-01');
CREATE TABLE moves_default PARTITION OF moves DEFAULT;
-- Rows already there are chained per account in partition order, then by key.
INSERT INTO moves SELECT i, 'acct' || i % 2, i, timestamptz '2026-01-01 UTC' + i * interval '4 days' FROM generate_series(1, 12) i;
SELECT ledger.enable('moves', 'account');
SELECT tableoid::regclass AS partition, account, array_agg(seq ORDER BY seq) FROM moves GROUP BY 1, 2 ORDER BY 2, 1;
-- Appends through the table and into a partition continue the chains.
INSERT INTO moves VALUES (13, 'acct1', 5, '2026-02-25 UTC');
INSERT INTO moves_2026_02 VALUES (14, 'acct1', 6, '2026-02-26 UTC');
SELECT seq, prev_hash = lag(hash) OVER (ORDER BY seq) AS linked FROM moves WHERE account = 'acct1' ORDER BY seq DESC LIMIT 3;
SELECT * FROM ledger.verify('moves');

-- Refused: a record for a partition before its chain's latest, one for the default partition,
-- changes through the table or a partition, and partitionings without an order.
\set VERBOSITY sqlstate
INSERT INTO moves VALUES (15, 'acct1', 7, '2026-01-20 UTC');
INSERT INTO moves VALUES (15, 'acct1', 7, '2026-02-27 UTC'), (16, 'acct1', 7, '2026-01-27 UTC');
INSERT INTO moves VALUES (16, 'acct1', 8, '2027-01-01 UTC');
UPDATE moves SET amount = 0 WHERE id = 13;
DELETE FROM moves_2026_01 WHERE id = 1;
TRUNCATE moves_2026_01;
CREATE TABLE by_list (id int PRIMARY KEY, kind text) PARTITION BY LIST (id);
SELECT ledger.enable('by_list');
CREATE TABLE by_expression (id int, at timestamptz) PARTITION BY RANGE ((at::date));
SELECT ledger.enable('by_expression');
\set VERBOSITY default
-- A refusal names the ledger, not the partition.
UPDATE moves_2026_02 SET amount = 0 WHERE id = 13;

-- A partition made later is registered (an alter event) and carries every ledger trigger.
RESET ROLE;
SELECT cid AS early_cid FROM ledger.checkpoint('moves', 'acct1') \gset
SET ROLE ledger_partition_owner;
CREATE TABLE moves_2026_03 PARTITION OF moves FOR VALUES FROM ('2026-03-01') TO ('2026-04-01');
CREATE TABLE moves_2026_04 (LIKE moves);
ALTER TABLE moves ATTACH PARTITION moves_2026_04 FOR VALUES FROM ('2026-04-01') TO ('2026-05-01');
SELECT tgrelid::regclass, string_agg(tgname || ':' || tgenabled::text, ',' ORDER BY tgname) FROM pg_trigger
 WHERE tgrelid IN ('moves_2026_03'::regclass, 'moves_2026_04'::regclass) GROUP BY 1 ORDER BY 1;
INSERT INTO moves VALUES (17, 'acct1', 9, '2026-03-02 UTC'), (18, 'acct0', 10, '2026-04-02 UTC');
SELECT * FROM ledger.verify('moves');
SELECT ledger.definition('moves') ~ 'partition public.moves_2026_04 FOR VALUES FROM' AS listed;

-- A column added to every partition, made erasable, and erased from the partition holding it.
ALTER TABLE moves ADD COLUMN memo text;
SELECT ledger.set_erasable('moves', '{memo}');
INSERT INTO moves (id, account, amount, at, memo) VALUES (19, 'acct1', 11, '2026-04-03 UTC', 'private');
SELECT seq AS memo_seq FROM moves WHERE id = 19 \gset
SELECT ledger.redact('moves', 'acct1', :memo_seq, 'erasure request');
SELECT tableoid::regclass, memo, ledger_erasure ? 'memo' AS committed FROM moves WHERE id = 19;
SELECT * FROM ledger.verify('moves');

-- Refused to the owner: a table with rows as a partition, detaching or dropping one, disabling a
-- partition's trigger.
\set VERBOSITY sqlstate
CREATE TABLE moves_2026_05 (LIKE moves);
INSERT INTO moves_2026_05 VALUES (19, 'acct0', 1, '2026-05-02 UTC', 1, NULL, repeat('0', 64));
ALTER TABLE moves ATTACH PARTITION moves_2026_05 FOR VALUES FROM ('2026-05-01') TO ('2026-06-01');
ALTER TABLE moves DETACH PARTITION moves_2026_01;
DROP TABLE moves_2026_02;
ALTER TABLE moves_2026_03 DISABLE TRIGGER zz_ledger_append;
\set VERBOSITY default
RESET ROLE;
SELECT event, actor, split_part(reason, ';', 1) AS reason FROM ledger.events WHERE ledger = 'public.moves' ORDER BY seq;
-- The checkpoint made before the partitions were added still verifies.
SELECT item, ok FROM ledger.verify_checkpoint(:'early_cid') ORDER BY item;

-- A superuser's detach stands, and verify reports it and the records that went with it.
ALTER TABLE moves DETACH PARTITION moves_2026_01;
SELECT chain, seq, problem FROM ledger.verify('moves');
ALTER TABLE moves ATTACH PARTITION moves_2026_01 FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');
