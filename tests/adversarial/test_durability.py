"""When chain locks are released: once an appender's commit record is written, before its flush
(src/durability.rs). On clusters of their own with the durability the shared one turns off
(fsync, synchronous_commit on): another appender gets the chain during the flush; COMMIT still
returns only once the commit is on disk; with synchronous standbys the locks are held until they
confirm."""

from __future__ import annotations

import threading
import uuid

import pytest

from clusters import own_cluster
from ledgertest import Database, assert_clean, assert_dense, backend_wait, insert_record, wait_until

CONF = ["fsync = on", "synchronous_commit = on", "max_connections = 20"]


@pytest.fixture(scope="module")
def durable():
    with own_cluster("durable", CONF) as cluster:
        yield cluster


@pytest.fixture
def db(durable, request):
    database = durable.create_database(request.node.name.replace("[", "_").replace("]", "").lower())
    try:
        yield database
    finally:
        database.close_all()


@pytest.mark.parametrize("early", ["on", "off"])
def test_chain_lock_released_before_the_flush(db, early):
    """A commits a record of chain X while C waits to append to X. A's flush is slowed to 100 ms
    (commit_delay, which sleeps in the flush). With ledger.early_lock_release on, A gives up X's
    lock once its commit record is written: C appends and is done while A's COMMIT is still
    flushing. Off, A holds the lock through the flush and C waits for it. Either way C links after
    A's record and the session's synchronous_commit is as it was. (That COMMIT still returns only
    after the flush: test_acknowledged_appends_survive_with_the_wal_writer_asleep.)"""
    x = str(uuid.uuid4())
    head = insert_record(db.conn.cursor(), x)
    a = db.connect(settings={"commit_delay": "100000", "commit_siblings": "0",
                             "ledger.early_lock_release": early})
    c = db.connect()
    a_pid, c_pid = a.info.backend_pid, c.info.backend_pid
    observed = []
    for tries in range(1, 6):  # each try gives one 100 ms window to look into
        a_row = insert_record(a.cursor(), x)
        assert a.execute("SHOW synchronous_commit").fetchone()[0] == ("off" if early == "on" else "on")
        result = {}

        def c_append():
            result["row"] = insert_record(c.cursor(), x)

        appender = threading.Thread(target=c_append)
        appender.start()
        wait_until(lambda: (backend_wait(db, c_pid) or (None,))[0] == "Lock", what="C to wait on X")
        committer = threading.Thread(target=a.commit)
        committer.start()
        # Sample, while A runs COMMIT, whether A still holds X's lock and whether C is done.
        while committer.is_alive():
            row = db.fetchone(
                "SELECT a.query, a.state, c.state, c.wait_event_type, "
                "       EXISTS (SELECT FROM pg_locks WHERE pid = a.pid AND locktype = 'advisory' "
                "               AND objsubid = 19527) "
                "FROM pg_stat_activity a, pg_stat_activity c WHERE a.pid = %s AND c.pid = %s",
                (a_pid, c_pid))
            if row[0] == "COMMIT" and row[1] == "active":
                observed.append((row[4], row[2], row[3]))
        committer.join()
        appender.join(timeout=20)
        c.commit()
        assert result["row"][1] == a_row[1] + 1 and result["row"][2] == a_row[3]
        committing = {(holds, c_state == "idle in transaction") for holds, c_state, _ in observed}
        if early == "on" and (False, True) in committing:
            break
        if early == "off" and (True, False) in committing:
            break
    else:
        pytest.fail(f"never saw the expected state during A's flush: {observed}")
    # The setting was the transaction's alone.
    assert a.execute("SHOW synchronous_commit").fetchone()[0] == "on"
    a.rollback()
    assert head[1] == 1
    assert_dense(db, {x: 1 + 2 * tries})
    assert_clean(db)


def test_acknowledged_appends_survive_with_the_wal_writer_asleep():
    """Early lock release commits an appender asynchronously and flushes its commit after the chain
    locks are released: COMMIT must still return only once the commit is on disk. With the WAL
    writer asleep (wal_writer_delay 10 s), nothing else flushes: appends acknowledged one after
    another, then kill -9 at once, must all be there after recovery, dense and verified. The
    appends of a transaction that set synchronous_commit = off itself are the user's choice to
    risk and are not flushed by the ledger (no check: they may or may not survive)."""
    conf = CONF + ["wal_writer_delay = '10s'", "wal_writer_flush_after = 0", "autovacuum = off"]
    with own_cluster("acked", conf) as cluster:
        db = cluster.create_database("acked")
        db.execute("CREATE TABLE t (id bigserial PRIMARY KEY, k int NOT NULL, body text NOT NULL)")
        db.execute("SELECT ledger.enable('t', 'k')")
        db.execute("CHECKPOINT")
        flushed_before = db.scalar("SELECT pg_current_wal_flush_lsn()")
        for i in range(20):
            db.execute("INSERT INTO t (k, body) VALUES (%s, %s)", (i % 2, f"acked {i}"))
            # Flushed by the committing backend itself, before COMMIT returned.
            assert db.scalar("SELECT pg_current_wal_flush_lsn() > %s::pg_lsn", (flushed_before,))
            flushed_before = db.scalar("SELECT pg_current_wal_insert_lsn()")
        db.close_all()
        cluster.kill9()
        cluster.start()
        db = Database(cluster, "acked")
        try:
            assert db.scalar("SELECT count(*) FROM t") == 20
            assert_dense(db, {"0": 10, "1": 10}, tbl="t", chain_col="k")
            assert_clean(db, "t")
        finally:
            db.close_all()


def test_no_early_release_with_synchronous_standbys():
    """With synchronous standbys named, a commit waits for them, and the chain locks must be held
    until they confirm: the appender's transaction keeps synchronous_commit as the session has it.
    With synchronous_commit = local it waits for the local flush alone and releases early."""
    with own_cluster("syncrep", CONF) as cluster:
        db = cluster.create_database("syncrep")
        db.execute("CREATE TABLE t (id bigserial PRIMARY KEY, body text NOT NULL)")
        db.execute("SELECT ledger.enable('t')")
        db.execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
        db.execute("SELECT pg_reload_conf()")
        conn = db.connect()
        try:
            wait_until(lambda: conn.execute("SHOW synchronous_standby_names").fetchone()[0] == "nobody",
                       what="the reload")
            conn.rollback()
            conn.execute("INSERT INTO t (body) VALUES ('waits for the standby')")
            assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "on"
            conn.rollback()  # a COMMIT would wait for the standby that is not there
            conn.execute("SET synchronous_commit = local")
            conn.execute("INSERT INTO t (body) VALUES ('local')")
            assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "off"
            conn.commit()
            assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "local"
            conn.rollback()
            assert db.scalar("SELECT count(*) FROM t") == 1
            assert_clean(db, "t")
        finally:
            db.close_all()
