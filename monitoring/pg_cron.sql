-- The ledger's scheduled jobs, with pg_cron (Debian: postgresql-15-cron):
--   every 5 minutes, a checkpoint of every chain that grew since its last one (ledger.checkpoint_all):
--   a record is anchored (deleting it, even as the newest of its chain, becomes detectable) at
--   most 5 minutes after its append;
--   every night at 03:00, ledger.verify_all, which recomputes every record and checks each chain's
--   newest checkpoint, and records each ledger's run in ledger.verify_runs (what ledger.stats and
--   the ledger_verify_* metrics show);
--   every night at 04:00, ledger.prune_all, which prunes every ledger with a retention
--   (ledger.set_retention) that the job's role owns; autovacuum then makes the space reusable.
--
-- pg_cron runs in one database of the cluster; postgresql.conf needs, and a restart then:
--   shared_preload_libraries = 'pg_cron,ledger'   -- ledger too, for the counters in ledger.stats
--   cron.database_name = 'appdb'                  -- the database that holds your ledgers
--   cron.use_background_workers = on              -- jobs run in background workers: no login,
--                                                 -- no password, no pg_hba.conf rule for them
-- (without background workers pg_cron logs in over libpq to cron.host, 'localhost' by default, as
-- the job's role, which pg_hba.conf must then let in).
--
-- Then, in that database, as the role the jobs should run as:
--   psql -v ON_ERROR_STOP=1 -d appdb -f monitoring/pg_cron.sql
-- Running it again changes nothing: cron.schedule updates the job of the same name.
--
-- A job runs as the role that scheduled it and verifies and checkpoints only the ledgers that role
-- can read, and prunes only those it owns (the others are skipped, not failed): schedule as a superuser, or as a role granted
-- SELECT on every ledger (ledger_auditor has the extension's own) and USAGE on schema cron.
--
-- pg_cron 1.4 (Debian 12) reads schedules in GMT; from 1.5 on, in cron.timezone (GMT by default).
-- Results: SELECT * FROM cron.job_run_details ORDER BY start_time DESC;
-- For ledgers in another database than cron.database_name, use
--   cron.schedule_in_database(job_name, schedule, command, database).

CREATE EXTENSION IF NOT EXISTS pg_cron;

SELECT cron.schedule('ledger-checkpoints', '*/5 * * * *',
                     'SELECT count(*) FROM ledger.checkpoint_all()');
SELECT cron.schedule('ledger-verify', '0 3 * * *',
                     'SELECT count(*) FROM ledger.verify_all()');
SELECT cron.schedule('ledger-prune', '0 4 * * *',
                     'SELECT count(*) FROM ledger.prune_all()');
