-- The extension's own tables are ledgers like any other.
SELECT ledger.enable('ledger.records', 'anchor_id');
SELECT ledger.enable('ledger.checkpoints');

-- The registry is changed only through ledger.enable.
REVOKE ALL ON ledger.ledgers FROM PUBLIC;

-- pg_dump includes the extension's tables. Rows are dumped in chain order, so that a restore
-- appends them through the ledger's trigger, which accepts each one only if it is exactly the next
-- link of its chain: a restored ledger has been re-verified on the way in.
SELECT pg_catalog.pg_extension_config_dump('ledger.records', 'WHERE true ORDER BY anchor_id, seq');
SELECT pg_catalog.pg_extension_config_dump('ledger.checkpoints', 'WHERE true ORDER BY seq');
-- The registry rows of user tables (those of the tables above are made by CREATE EXTENSION).
SELECT pg_catalog.pg_extension_config_dump('ledger.ledgers',
    'WHERE tbl NOT IN (''ledger.records''::regclass, ''ledger.checkpoints''::regclass)');
