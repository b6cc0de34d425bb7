-- The extension's own tables are ledgers like any other (events first: enabling records there).
SELECT ledger.enable('ledger.events', 'ledger');
SELECT ledger.enable('ledger.records', 'anchor_id');
SELECT ledger.enable('ledger.checkpoints');
SELECT ledger.enable('ledger.verify_runs', 'ledger');
SELECT ledger.enable('ledger.pruned', 'ledger');

-- Every role may call the functions (each checks its own privileges: reading a ledger to verify or
-- checkpoint it, owning it to enable or retire it) and read the registry (appends look up their
-- table's layout there, and the event triggers its definition). The registry and the audit chains
-- are written only by the extension's functions.
GRANT USAGE ON SCHEMA ledger TO PUBLIC;
REVOKE ALL ON ledger.ledgers, ledger.events, ledger.checkpoints, ledger.subtrees, ledger.verify_runs, ledger.pruned FROM PUBLIC;
GRANT SELECT ON ledger.ledgers TO PUBLIC;
REVOKE ALL ON ledger.tracked FROM PUBLIC;
GRANT SELECT ON ledger.tracked TO PUBLIC;

-- Roles (cluster-wide, so made once and kept by DROP EXTENSION): applications append, auditors
-- read and verify. Grants on your own ledger tables are yours to make; see the README.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'ledger_writer') THEN
        CREATE ROLE ledger_writer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'ledger_auditor') THEN
        CREATE ROLE ledger_auditor NOLOGIN;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA ledger TO ledger_writer, ledger_auditor;
GRANT SELECT, INSERT ON ledger.records TO ledger_writer;
GRANT SELECT ON ledger.records, ledger.checkpoints, ledger.subtrees, ledger.events, ledger.verify_runs, ledger.pruned TO ledger_auditor;
-- Dashboards (sql/stats.sql) are for auditors and for PostgreSQL's own monitoring role.
GRANT EXECUTE ON FUNCTION ledger.chain_summary(regclass), ledger.counters(), ledger.refusal_counters()
    TO ledger_auditor, pg_monitor;
GRANT SELECT ON ledger.stats, ledger.refusals TO ledger_auditor, pg_monitor;

-- pg_dump includes the extension's tables. Rows are dumped in chain order, so that a restore
-- appends them through the ledger's trigger, which accepts each one only if it is exactly the next
-- link of its chain: a restored ledger has been re-verified on the way in.
SELECT pg_catalog.pg_extension_config_dump('ledger.records', 'WHERE true ORDER BY anchor_id, seq');
SELECT pg_catalog.pg_extension_config_dump('ledger.checkpoints', 'WHERE true ORDER BY seq');
SELECT pg_catalog.pg_extension_config_dump('ledger.subtrees', '');
SELECT pg_catalog.pg_extension_config_dump('ledger.verify_runs', 'WHERE true ORDER BY ledger, seq');
-- Restored before ledger.records (pg_dump orders a schema's tables by name): a pruned chain of it
-- continues from what ledger.pruned kept.
SELECT pg_catalog.pg_extension_config_dump('ledger.pruned', 'WHERE true ORDER BY ledger, seq');
-- The registry rows and events of user tables (those of the extension's own tables are made by
-- CREATE EXTENSION).
SELECT pg_catalog.pg_extension_config_dump('ledger.ledgers',
    'WHERE tbl NOT IN (''ledger.records''::regclass, ''ledger.checkpoints''::regclass, ''ledger.events''::regclass, ''ledger.verify_runs''::regclass, ''ledger.pruned''::regclass)');
SELECT pg_catalog.pg_extension_config_dump('ledger.events',
    'WHERE ledger NOT IN (''ledger.records'', ''ledger.checkpoints'', ''ledger.events'', ''ledger.verify_runs'', ''ledger.pruned'') ORDER BY ledger, seq');
-- The registry of history-tracked tables (their histories are user ledgers, dumped as such).
SELECT pg_catalog.pg_extension_config_dump('ledger.tracked', '');
