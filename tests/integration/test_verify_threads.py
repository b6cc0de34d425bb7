"""ledger.verify hashes on helper threads of the backend (ledger.verify_threads). Outcome: the
threads exist only while a verification runs; a cancel, a statement timeout or a terminate during
one ends it like any query (the right SQLSTATE, no server restart, no thread left behind); and a
superuser's edit is found whatever the thread count."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest

from ledgertest import behind_the_triggers, wait_until

RECORDS = 150_000


@pytest.fixture
def big(db):
    db.execute("CREATE TABLE big (id int PRIMARY KEY, account text NOT NULL, body text)")
    db.execute("SELECT ledger.enable('big', 'account')")
    db.execute(f"INSERT INTO big SELECT i, 'a' || (i % 16), repeat(md5(i::text), 4) FROM generate_series(1, {RECORDS}) i")
    return db


def threads_of(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def wait_for_one_thread(pid: int) -> None:
    # A joined thread may stay listed for a moment while the kernel finishes its exit.
    wait_until(lambda: threads_of(pid) == 1, timeout=2, what="the helper threads gone")


def run_verify_in_background(db, settings: dict | None = None):
    """Starts SELECT count(*) FROM ledger.verify('big') on a new connection; returns its pid, the
    thread and a dict that receives the result or the error."""
    conn = db.connect(autocommit=True, settings=settings)
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    outcome: dict = {}

    def run():
        try:
            # Long enough to be caught in the act: the same ledger, verified over and over.
            outcome["result"] = conn.execute(
                "SELECT sum((SELECT count(*) FROM ledger.verify('big'))) FROM generate_series(1, 50)").fetchone()[0]
        except psycopg.Error as e:
            outcome["error"] = e

    worker = threading.Thread(target=run)
    worker.start()
    return conn, pid, worker, outcome


def test_helper_threads_live_only_during_a_verification(big):
    conn = big.connect(autocommit=True)
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    assert threads_of(pid) == 1
    conn.execute("SET ledger.verify_threads = 3")
    assert conn.execute("SELECT count(*) FROM ledger.verify('big')").fetchone()[0] == 0
    wait_for_one_thread(pid)
    _, pid, worker, outcome = run_verify_in_background(big, {"ledger.verify_threads": "3"})
    wait_until(lambda: threads_of(pid) == 3, what="the helper threads at work")
    big.execute("SELECT pg_cancel_backend(%s)", (pid,))
    worker.join(60)
    assert isinstance(outcome.get("error"), psycopg.errors.QueryCanceled), outcome


@pytest.mark.parametrize("threads", ["1", "2", "4"])
def test_cancel_and_timeout_during_a_verification(big, threads):
    started = big.scalar("SELECT pg_postmaster_start_time()")
    conn, pid, worker, outcome = run_verify_in_background(big, {"ledger.verify_threads": threads})
    wait_until(lambda: big.scalar("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)) == "active",
               what="the verification running")
    big.execute("SELECT pg_cancel_backend(%s)", (pid,))
    worker.join(60)
    assert isinstance(outcome.get("error"), psycopg.errors.QueryCanceled), outcome
    wait_for_one_thread(pid)
    # The session goes on: a timeout ends the next one the same way, and a whole one is clean.
    conn.execute("SET statement_timeout = '30ms'")
    with pytest.raises(psycopg.errors.QueryCanceled):
        conn.execute("SELECT count(*) FROM ledger.verify('big')")
    conn.execute("RESET statement_timeout")
    assert conn.execute("SELECT count(*) FROM ledger.verify('big')").fetchone()[0] == 0
    wait_for_one_thread(pid)
    assert big.scalar("SELECT pg_postmaster_start_time()") == started


def test_terminate_during_a_verification(big):
    started = big.scalar("SELECT pg_postmaster_start_time()")
    _, pid, worker, outcome = run_verify_in_background(big, {"ledger.verify_threads": "2"})
    wait_until(lambda: threads_of(pid) == 2, what="the helper thread at work")
    big.execute("SELECT pg_terminate_backend(%s)", (pid,))
    worker.join(60)
    assert isinstance(outcome.get("error"), psycopg.OperationalError), outcome
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), what="the backend gone")
    # No crash: the postmaster did not restart, other sessions carry on.
    assert big.scalar("SELECT pg_postmaster_start_time()") == started
    assert big.scalar("SELECT count(*) FROM ledger.verify('big')") == 0


def test_a_superusers_edit_is_found_whatever_the_thread_count(big):
    # Spread over the scan: the first and last records, one at a batch's end, one in the middle.
    behind_the_triggers(big, "big", "UPDATE big SET body = 'x' WHERE id IN (1, 1024, 75000, %s)" % RECORDS)
    expected = None
    for threads in ["1", "2", "3", "0"]:
        conn = big.connect(autocommit=True, settings={"ledger.verify_threads": threads})
        found = conn.execute("SELECT chain, seq, problem FROM ledger.verify('big')").fetchall()
        expected = expected or found
        assert found == expected, threads
    assert sorted((c, p) for c, _, p in expected) == sorted(
        [("a1", "hash_mismatch"), ("a0", "hash_mismatch"), ("a8", "hash_mismatch"), ("a0", "hash_mismatch")])
