"""REPEATABLE READ and SERIALIZABLE: a transaction whose snapshot predates another transaction's
append to the same chain gets SQLSTATE 40001 when it appends, never a fork."""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from psycopg import IsolationLevel, errors

from ledgertest import assert_clean, assert_dense, backend_wait, insert_record, wait_until

LEVELS = [pytest.param(IsolationLevel.REPEATABLE_READ, id="repeatable_read"),
          pytest.param(IsolationLevel.SERIALIZABLE, id="serializable")]


def head(db, chain):
    return db.fetchone("SELECT seq, hash FROM ledger.records WHERE anchor_id = %s "
                       "ORDER BY seq DESC LIMIT 1", (chain,))


@pytest.mark.parametrize("level", LEVELS)
def test_snapshot_before_commit_is_serialization_failure(db, level):
    x, y = str(uuid.uuid4()), str(uuid.uuid4())
    insert_record(db.conn.cursor(), x)
    t1 = db.connect(autocommit=True)
    t2 = db.connect(isolation_level=level)

    # T2 takes its snapshot; T1 then appends to X and commits.
    assert t2.execute("SELECT count(*) FROM ledger.records").fetchone()[0] == 1
    t1_row = insert_record(t1.cursor(), x)
    assert t1_row[1] == 2

    # T2 appending to another chain is fine: nobody appended there after its snapshot.
    y_row = insert_record(t2.cursor(), y)
    assert y_row[1] == 1
    # T2 appending to X would chain after a record it cannot see.
    with pytest.raises(errors.SerializationFailure) as info:
        insert_record(t2.cursor(), x)
    assert info.value.sqlstate == "40001"
    t2.rollback()
    assert head(db, x) == (2, t1_row[3])
    assert db.scalar("SELECT count(*) FROM ledger.records WHERE anchor_id = %s", (y,)) == 0

    # The retry sees T1's record and links after it.
    retry = insert_record(t2.cursor(), x)
    t2.commit()
    assert retry[1] == 3 and retry[2] == t1_row[3]
    assert_dense(db, {x: 3})
    assert_clean(db)


@pytest.mark.parametrize("level", LEVELS)
def test_waiter_whose_snapshot_predates_holder_commit(db, level):
    """T1 holds chain X; T2 (snapshot taken) blocks appending to X; T1 commits; T2 gets 40001."""
    x = str(uuid.uuid4())
    insert_record(db.conn.cursor(), x)
    t1 = db.connect()
    t2 = db.connect(isolation_level=level)
    t1_row = insert_record(t1.cursor(), x)
    t2.execute("SELECT 1 FROM ledger.records LIMIT 1")  # snapshot before T1 commits
    outcome = {}

    def t2_append():
        try:
            outcome["row"] = insert_record(t2.cursor(), x)
        except Exception as e:
            outcome["error"] = e

    thread = threading.Thread(target=t2_append)
    thread.start()
    wait_until(lambda: (backend_wait(db, t2.info.backend_pid) or (None,))[0] == "Lock",
               what="T2 to wait for the chain lock")
    t1.commit()
    thread.join(timeout=20)
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), errors.SerializationFailure), outcome
    t2.rollback()
    assert head(db, x) == (2, t1_row[3])
    row = insert_record(t2.cursor(), x)
    t2.commit()
    assert row[1:3] == (3, t1_row[3])
    assert_dense(db, {x: 3})
    assert_clean(db)


@pytest.mark.parametrize("level", LEVELS)
def test_statement_snapshot_predates_holder_commit(db, level):
    """T2's first statement is the INSERT itself; its snapshot is taken before it blocks."""
    x = str(uuid.uuid4())
    t1 = db.connect()
    t2 = db.connect(isolation_level=level)
    t1_row = insert_record(t1.cursor(), x)
    outcome = {}

    def t2_append():
        try:
            outcome["row"] = insert_record(t2.cursor(), x)
        except Exception as e:
            outcome["error"] = e

    thread = threading.Thread(target=t2_append)
    thread.start()
    wait_until(lambda: (backend_wait(db, t2.info.backend_pid) or (None,))[0] == "Lock",
               what="T2 to wait for the chain lock")
    t1.commit()
    thread.join(timeout=20)
    assert isinstance(outcome.get("error"), errors.SerializationFailure), outcome
    t2.rollback()
    assert_dense(db, {x: 1})
    assert t1_row[1] == 1
    assert_clean(db)


@pytest.mark.parametrize("level", LEVELS)
def test_holder_rollback_is_no_conflict(db, level):
    """If the holder rolls back, the waiter's snapshot is not stale: it appends without 40001."""
    x = str(uuid.uuid4())
    first = insert_record(db.conn.cursor(), x)
    t1 = db.connect()
    t2 = db.connect(isolation_level=level)
    insert_record(t1.cursor(), x)
    t2.execute("SELECT 1")
    outcome = {}

    def t2_append():
        try:
            outcome["row"] = insert_record(t2.cursor(), x)
            t2.commit()
        except Exception as e:
            outcome["error"] = e

    thread = threading.Thread(target=t2_append)
    thread.start()
    wait_until(lambda: (backend_wait(db, t2.info.backend_pid) or (None,))[0] == "Lock",
               what="T2 to wait for the chain lock")
    t1.rollback()
    thread.join(timeout=20)
    assert "error" not in outcome, outcome
    assert outcome["row"][1:3] == (2, first[3])
    assert_dense(db, {x: 2})
    assert_clean(db)


@pytest.mark.parametrize("level", LEVELS)
def test_concurrent_stress_with_retries(db, level):
    """Six writers on one chain (plus a private chain each) at the given level, retrying on 40001.
    Every failure is a serialization failure; the chains end dense, complete and verified."""
    shared = str(uuid.uuid4())
    writers, tx_per_writer = 6, 25
    barrier = threading.Barrier(writers)
    failures: Counter = Counter()
    lock = threading.Lock()

    def work(wid: int):
        rng = random.Random(wid)
        private = str(uuid.uuid4())
        conn = db.connect(isolation_level=level)
        committed = []
        barrier.wait(timeout=30)
        for _ in range(tx_per_writer):
            rows = [(uuid.uuid4(), shared if rng.random() < 0.8 else private)
                    for _ in range(rng.randint(1, 3))]
            use_savepoint = rng.random() < 0.3
            for attempt in range(500):
                try:
                    with conn.cursor() as cur:
                        cur.execute("SELECT count(*) FROM ledger.records")  # take the snapshot
                        for i, (rid, chain) in enumerate(rows):
                            if use_savepoint and i == 0:
                                cur.execute("SAVEPOINT sp")
                                insert_record(cur, chain)
                                cur.execute("ROLLBACK TO SAVEPOINT sp")
                            insert_record(cur, chain, rid=rid, payload={"w": wid})
                    conn.commit()
                    committed.extend(rows)
                    break
                except psycopg.Error as e:
                    conn.rollback()
                    with lock:
                        failures[e.sqlstate] += 1
            else:
                raise AssertionError("no progress after 500 attempts")
        conn.close()
        return committed

    with ThreadPoolExecutor(writers) as pool:
        results = [f.result(timeout=300) for f in [pool.submit(work, i) for i in range(writers)]]
    committed = [r for rows in results for r in rows]
    assert set(failures) <= {"40001"}, f"failures other than 40001: {failures}"
    assert failures["40001"] > 0, "the stress never produced a serialization failure"
    counts = Counter(chain for _, chain in committed)
    assert_dense(db, counts)
    stored = {r[0] for r in db.fetchall("SELECT rid FROM ledger.records")}
    assert stored == {rid for rid, _ in committed}
    assert_clean(db)
