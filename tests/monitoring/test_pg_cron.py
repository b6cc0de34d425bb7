"""monitoring/pg_cron.sql with a real pg_cron (Debian's postgresql-15-cron): the documented schedule
is what the file makes, and jobs running the same commands on a short schedule checkpoint and
verify every ledger, record each run in ledger.verify_runs, and catch a superuser's tampering.

pg_cron before 1.5 (Debian 12 ships 1.4) knows no '[1-59] seconds' schedules, only cron's
minutes: the short jobs then run every minute, and each wait here lasts up to a minute."""

from __future__ import annotations

import re
import subprocess
import time

import psycopg
import pytest

from ledgertest import PSQL, Database
from monitoringtest import PG_CRON_SQL, own_cluster, require_pg_extension, require_tool

DBNAME = "ledger_cron"
CONF = ["shared_preload_libraries = 'pg_cron,ledger'",
        f"cron.database_name = '{DBNAME}'",
        # Jobs run in background workers of the server, not in sessions pg_cron opens over libpq
        # to cron.host, which would need a pg_hba.conf rule letting the job's role in unasked.
        "cron.use_background_workers = on"]
DOCUMENTED = {"ledger-checkpoints": ("*/5 * * * *", "SELECT count(*) FROM ledger.checkpoint_all()"),
              "ledger-verify": ("0 3 * * *", "SELECT count(*) FROM ledger.verify_all()"),
              "ledger-prune": ("0 4 * * *", "SELECT count(*) FROM ledger.prune_all()")}
PAYMENTS = {"alice": 3, "bob": 2, "carol": 1}
# A run of a job scheduled every minute starts within 60 s; it takes well under a second here.
RUN_TIMEOUT = 150.0


@pytest.fixture(scope="module")
def cron_db():
    require_tool(PSQL)
    require_pg_extension("pg_cron")
    with own_cluster(*CONF) as cluster:
        with cluster.connect("postgres", autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{DBNAME}" TEMPLATE template0')
        db = Database(cluster, DBNAME)
        try:
            db.execute("CREATE EXTENSION ledger")
            yield db
        finally:
            db.close_all()


def run_schedule_file(db: Database) -> None:
    result = subprocess.run(
        [PSQL, "-h", db.cluster.socket_dir, "-p", str(db.cluster.port), "-U", "postgres", "-d", db.name,
         "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(PG_CRON_SQL)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def short_schedule(db: Database) -> str:
    """'2 seconds' where pg_cron has it (1.5 and later), else every minute; on 1.4 the seconds
    syntax is refused, so the choice is not a silent one."""
    version = db.scalar("SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'")
    major, minor = (int(x) for x in re.match(r"(\d+)\.(\d+)", version).groups())
    if (major, minor) >= (1, 5):
        return "2 seconds"
    with pytest.raises(psycopg.Error, match="invalid schedule"):
        db.execute("SELECT cron.schedule('seconds-probe', '2 seconds', 'SELECT 1')")
    return "* * * * *"


def wait_for_success(db: Database, jobid: int, after, what: str) -> tuple:
    """The first run of a job that started after `after`, once it succeeded; a failed run fails the
    test at once with pg_cron's message."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        try:
            rows = db.fetchall("SELECT runid, status, return_message, start_time, end_time "
                               "FROM cron.job_run_details WHERE jobid = %s AND start_time > %s "
                               "ORDER BY runid", (jobid, after))
        except psycopg.OperationalError as e:  # the server went away: its log says why
            raise AssertionError(f"{what}: {e}\n{server_log(db)}") from e
        for runid, status, message, start, end in rows:
            assert status != "failed", f"{what}: run {runid} failed: {message}"
            if status == "succeeded":
                return runid, start, end, message
        time.sleep(0.5)
    raise AssertionError(f"{what}: no successful run within {RUN_TIMEOUT}s\n{server_log(db)}")


def server_log(db: Database) -> str:
    return (db.cluster.dir / "server.log").read_text(errors="replace")[-3000:]


def build_payments(db: Database) -> None:
    db.execute("CREATE TABLE payments (id bigint PRIMARY KEY, account text NOT NULL, "
               "amount numeric NOT NULL)")
    db.execute("SELECT ledger.enable('payments', chain_by => 'account')")
    next_id = 1
    for account, count in PAYMENTS.items():
        for _ in range(count):
            db.execute("INSERT INTO payments (id, account, amount) VALUES (%s, %s, 10)", (next_id, account))
            next_id += 1
    db.execute("INSERT INTO ledger.records (anchor_id, slot, kind, payload) VALUES "
               "('a1111111-1111-4111-8111-111111111111', 's', 'k', '{}')")


def tamper_as_superuser(db: Database) -> None:
    """What a superuser can do and the ledger cannot prevent: switch the triggers off, edit one of
    alice's records (the chain check sees it: the record no longer hashes to its hash) and delete
    bob's newest (which leaves a valid chain behind: only his checkpoint sees it), and switch them
    back on as they were (ENABLE ALWAYS), so the definition is as registered."""
    always = [name for (name,) in db.fetchall(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'payments'::regclass AND tgenabled = 'A' "
        "ORDER BY tgname")]
    assert always, "the ledger's triggers are ENABLE ALWAYS"
    with db.conn.transaction():
        db.execute("ALTER TABLE payments DISABLE TRIGGER USER")
        db.execute("UPDATE payments SET amount = 1000 WHERE account = 'alice' AND seq = 2")
        db.execute("DELETE FROM payments WHERE account = 'bob' AND seq = 2")
        db.execute("ALTER TABLE payments " + ", ".join(f'ENABLE ALWAYS TRIGGER "{t}"' for t in always))
    assert db.fetchall("SELECT chain, seq, problem FROM ledger.verify('payments')") == [
        ("alice", 2, "hash_mismatch")]


def test_the_schedule_file_makes_the_documented_jobs_and_can_run_again(cron_db):
    run_schedule_file(cron_db)
    run_schedule_file(cron_db)
    jobs = cron_db.fetchall("SELECT jobname, schedule, command, database, username, active FROM cron.job "
                            "WHERE jobname = ANY(%s) ORDER BY jobname", (list(DOCUMENTED),))
    assert jobs == [(name, schedule, command, DBNAME, "postgres", True)
                    for name, (schedule, command) in sorted(DOCUMENTED.items())]


def test_scheduled_jobs_checkpoint_verify_and_catch_tampering(cron_db):
    db = cron_db
    run_schedule_file(db)  # the documented jobs stay scheduled beside the short ones
    build_payments(db)
    schedule = short_schedule(db)
    scheduled_at = db.scalar("SELECT now()")
    checkpoint_job = db.scalar("SELECT cron.schedule('ledger-checkpoints-soon', %s, %s)",
                               (schedule, DOCUMENTED["ledger-checkpoints"][1]))
    verify_job = db.scalar("SELECT cron.schedule('ledger-verify-soon', %s, %s)",
                           (schedule, DOCUMENTED["ledger-verify"][1]))

    wait_for_success(db, checkpoint_job, scheduled_at, "checkpoint_all job")
    wait_for_success(db, verify_job, scheduled_at, "verify_all job")

    # Checkpoints made by the job cover every record of every chain.
    covered = dict(db.fetchall("SELECT chain, max(record_count) FROM ledger.checkpoints "
                               "WHERE ledger = 'public.payments' AND created_at > %s GROUP BY chain",
                               (scheduled_at,)))
    assert covered == PAYMENTS
    assert db.scalar("SELECT unanchored_records FROM ledger.stats WHERE ledger = 'public.payments'") == 0

    # The verification run recorded one row per registered ledger, as the job's role, clean.
    run = db.scalar("SELECT run FROM ledger.verify_runs WHERE started_at > %s "
                    "ORDER BY finished_at DESC LIMIT 1", (scheduled_at,))
    recorded = db.fetchall("SELECT ledger, problems, checkpoint_failures, actor FROM ledger.verify_runs "
                           "WHERE run = %s ORDER BY ledger", (run,))
    registered = [r[0] for r in db.fetchall("SELECT ledger FROM ledger.stats ORDER BY ledger")]
    assert [r[0] for r in recorded] == registered
    assert "public.payments" in registered and "ledger.records" in registered
    assert all(r[1:] == (0, 0, "postgres") for r in recorded), recorded
    stats = db.fetchone("SELECT last_verify > %s, last_verify_problems FROM ledger.stats "
                        "WHERE ledger = 'public.payments'", (scheduled_at,))
    assert stats == (True, 0)

    tamper_as_superuser(db)
    tampered_at = db.scalar("SELECT now()")
    wait_for_success(db, verify_job, tampered_at, "verify_all job after the tampering")

    after = dict((ledger, (problems, failures)) for ledger, problems, failures in db.fetchall(
        "SELECT DISTINCT ON (ledger) ledger, problems, checkpoint_failures FROM ledger.verify_runs "
        "WHERE started_at > %s ORDER BY ledger, seq DESC", (tampered_at,)))
    # alice's edited record, and bob's checkpoint, which covers a record no longer there.
    assert after.pop("public.payments") == (1, 1)
    assert all(v == (0, 0) for v in after.values()), after  # the other ledgers are intact
    stats = db.fetchone("SELECT last_verify > %s, last_verify_problems FROM ledger.stats "
                        "WHERE ledger = 'public.payments'", (tampered_at,))
    assert stats == (True, 2)


def test_a_scheduled_prune_applies_the_retention_of_every_ledger(cron_db):
    """The documented prune job's command, on a short schedule: the ledger with a retention loses
    its records older than it (each chain keeps its newest), one without keeps everything, and both
    verify after."""
    db = cron_db
    run_schedule_file(db)
    db.execute("CREATE TABLE aged (id int PRIMARY KEY, account text NOT NULL, at timestamptz NOT NULL)")
    db.execute("SELECT ledger.enable('aged', 'account')")
    db.execute("INSERT INTO aged SELECT i, 'acct' || (i % 2), now() - (20 - i) * interval '1 day' + interval '12 hours' "
               "FROM generate_series(1, 20) i")
    db.execute("CREATE TABLE forever (id int PRIMARY KEY, at timestamptz NOT NULL)")
    db.execute("SELECT ledger.enable('forever')")
    db.execute("INSERT INTO forever SELECT i, now() - interval '1 year' FROM generate_series(1, 5) i")
    db.execute("SELECT ledger.set_retention('aged', '10 days', 'at')")
    scheduled_at = db.scalar("SELECT now()")
    job = db.scalar("SELECT cron.schedule('ledger-prune-soon', %s, %s)",
                    (short_schedule(db), DOCUMENTED["ledger-prune"][1]))
    try:
        wait_for_success(db, job, scheduled_at, "prune_all job")
    finally:
        db.execute("SELECT cron.unschedule(%s)", (job,))
    # Record i is 19.5 - i days old: records 1 to 9 are older than 10 days, four of acct0's (the
    # even ones) and five of acct1's.
    assert db.fetchall("SELECT account, min(seq), count(*) FROM aged GROUP BY 1 ORDER BY 1") == [
        ("acct0", 5, 6), ("acct1", 6, 5)]
    assert db.scalar("SELECT count(*) FROM forever") == 5
    assert db.fetchall("SELECT * FROM ledger.verify('aged')") == []
    assert db.scalar("SELECT event FROM ledger.events WHERE ledger = 'public.aged' ORDER BY seq DESC LIMIT 1") == "prune"
