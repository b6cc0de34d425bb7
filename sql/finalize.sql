-- The extension's own tables are ledgers like any other.
SELECT ledger.enable('ledger.records', 'anchor_id');
SELECT ledger.enable('ledger.checkpoints');

-- The registry is changed only through ledger.enable.
REVOKE ALL ON ledger.ledgers FROM PUBLIC;
