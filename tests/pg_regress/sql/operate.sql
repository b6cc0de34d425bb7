-- Metrics and scheduled jobs. This server does not preload the library, so the counters kept in
-- shared memory are unavailable: NULL in ledger.stats, no rows in ledger.refusals.
SELECT ledger.counters_available();
CREATE TABLE op (id int PRIMARY KEY, account text NOT NULL, amount numeric NOT NULL);
INSERT INTO op VALUES (1, 'a', 1), (2, 'b', 2), (3, 'a', 3);
SELECT ledger.enable('op', chain_by => 'account');
INSERT INTO op VALUES (4, 'c', 4);
SELECT ledger, chains, records, unanchored_records, last_checkpoint, checkpoints_signed, last_verify,
       last_verify_problems, retired, appends, verify_runs, refusals
  FROM ledger.stats WHERE ledger IN ('public.op', 'ledger.verify_runs') ORDER BY ledger;
SELECT count(*) FROM ledger.refusals;

-- checkpoint_all checkpoints the chains that grew, and ledger.checkpoints last, only for them.
SELECT ledger, chain, record_count FROM ledger.checkpoint_all() WHERE ledger IN ('public.op', 'ledger.records') ORDER BY seq;
SELECT ledger, chain, record_count FROM ledger.checkpoint_all() ORDER BY seq;
INSERT INTO op VALUES (5, 'a', 5);
SELECT ledger, chain, record_count FROM ledger.checkpoint_all() ORDER BY seq;
SELECT ledger, unanchored_records, last_checkpoint IS NOT NULL AS checkpointed, checkpoints_signed
  FROM ledger.stats WHERE ledger IN ('public.op', 'ledger.checkpoints', 'ledger.verify_runs') ORDER BY ledger;
-- A superuser deleted the newest records of public.pay (checkpoints.sql): nothing counts as unanchored.
SELECT ledger, records, unanchored_records FROM ledger.stats WHERE ledger = 'public.pay';

-- verify_all verifies every ledger and the newest checkpoint of each chain, and records the run.
-- (public.pay lost its newest records, which its checkpoint catches.)
SELECT ledger, chains, records, problems, checkpoints_checked, checkpoint_failures FROM ledger.verify_all()
 WHERE ledger IN ('public.op', 'public.pay', 'ledger.checkpoints') ORDER BY ledger;
SELECT ledger, records, chains, problems, checkpoint_failures, actor FROM ledger.verify_runs
 WHERE ledger IN ('public.op', 'public.pay') ORDER BY ledger, seq;
SELECT count(*) FROM ledger.verify_runs;
SELECT ledger, last_verify IS NOT NULL AS verified, last_verify_problems FROM ledger.stats
 WHERE ledger IN ('public.op', 'public.pay') ORDER BY ledger;

-- A superuser edits a checkpointed record behind the triggers: the next run records it, the stats show it.
ALTER TABLE op DISABLE TRIGGER ledger_refuse_change;
UPDATE op SET amount = 500 WHERE id = 5;
ALTER TABLE op ENABLE ALWAYS TRIGGER ledger_refuse_change;
SELECT ledger, problems, checkpoints_checked, checkpoint_failures FROM ledger.verify_all() WHERE ledger = 'public.op';
SELECT ledger, last_verify_problems FROM ledger.stats WHERE ledger = 'public.op';

-- The run history is a ledger: nobody edits it, and verify catches a superuser who does.
\set VERBOSITY sqlstate
UPDATE ledger.verify_runs SET problems = 0;
\set VERBOSITY default
ALTER TABLE ledger.verify_runs DISABLE TRIGGER ledger_refuse_change;
UPDATE ledger.verify_runs SET problems = 0 WHERE ledger = 'public.op';
ALTER TABLE ledger.verify_runs ENABLE ALWAYS TRIGGER ledger_refuse_change;
SELECT chain, seq, problem FROM ledger.verify('ledger.verify_runs');

-- The guards' counting function is refused outside an event trigger.
\set VERBOSITY sqlstate
SELECT ledger.count_guard_refusal('op'::regclass, 'ddl_command_end');
SELECT ledger.count_guard_refusal('op'::regclass, 'sql_drop');
SELECT ledger.count_guard_refusal('op'::regclass, 'table_rewrite');
SELECT ledger.count_guard_refusal('op'::regclass, 'login');
\set VERBOSITY default

-- Dashboards are for ledger_auditor and pg_monitor; other roles are refused, and a monitoring
-- role sees every ledger without being able to read their rows.
CREATE ROLE op_nobody;
CREATE ROLE op_monitor IN ROLE pg_monitor;
SET ROLE op_nobody;
\set VERBOSITY sqlstate
SELECT * FROM ledger.stats;
SELECT * FROM ledger.refusals;
SELECT * FROM ledger.chain_summary('op');
\set VERBOSITY default
SET ROLE op_monitor;
SELECT ledger, chains, records FROM ledger.stats WHERE ledger = 'public.op';
\set VERBOSITY sqlstate
SELECT * FROM op;
\set VERBOSITY default
RESET ROLE;

-- Jobs that write refuse a read-only transaction (as on a standby, which refuses with 25006).
BEGIN READ ONLY;
\set VERBOSITY sqlstate
SELECT count(*) FROM ledger.checkpoint_all();
\set VERBOSITY default
ROLLBACK;
DROP ROLE op_nobody;
DROP ROLE op_monitor;
