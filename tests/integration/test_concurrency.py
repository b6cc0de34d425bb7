"""Concurrent writers on real connections at READ COMMITTED: no forks, no holes, no lost rows, and
writers on different chains never wait for each other."""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from psycopg import errors

from ledgertest import (assert_clean, assert_dense, backend_wait, insert_record, insert_records,
                        offline_verify, wait_until)

WRITERS = 8
# LEDGER_PYTEST_SCALE=10 runs ten times as many rows per writer (a longer soak).
ROWS_PER_WRITER = 200 * int(os.environ.get("LEDGER_PYTEST_SCALE", "1"))


class Writer:
    """One connection appending to the given chains with a random mix of transaction shapes.

    Only rows whose transaction committed are recorded in `committed` (rid -> chain)."""

    def __init__(self, db, wid: int, chains: list[str], rows: int, seed: int,
                 multi_chain: bool = False):
        self.db, self.wid, self.chains, self.rows = db, wid, chains, rows
        self.rng = random.Random(seed)
        self.multi_chain = multi_chain
        self.committed: dict[uuid.UUID, str] = {}
        self.shapes: Counter = Counter()
        self.counter = 0

    def row(self, chain: str | None = None):
        self.counter += 1
        if chain is None:
            chain = self.chain
        return (uuid.uuid4(), chain, {"w": self.wid, "i": self.counter, "t": "é✓"})

    def pick_chain(self) -> str:
        return self.rng.choice(self.chains)

    def run(self, barrier: threading.Barrier) -> "Writer":
        conn = self.db.connect()
        barrier.wait(timeout=30)
        attempted = 0
        while attempted < self.rows:
            self.chain = self.pick_chain()
            pending: list[tuple] = []
            shape = self.rng.random()
            try:
                with conn.cursor() as cur:
                    attempted += self.transaction(cur, shape, pending)
            except errors.DeadlockDetected:
                # Only possible when one transaction appends to several chains in random order.
                assert self.multi_chain, "deadlock between writers of single-chain transactions"
                conn.rollback()
                self.shapes["deadlock"] += 1
                continue
            if pending and pending[0] == "ROLLBACK":
                conn.rollback()
                continue
            conn.commit()
            for rid, chain, _ in pending:
                self.committed[rid] = chain
        conn.close()
        return self

    def transaction(self, cur, shape: float, pending: list) -> int:
        """Runs one transaction's statements; fills `pending` with the rows that commit with it
        (or ["ROLLBACK"]); returns the number of rows attempted."""
        rng = self.rng
        # In the mixed test about a third of the transactions append to several chains (in random
        # order, so two of them can deadlock: PostgreSQL then aborts one with 40P01).
        spread = self.multi_chain and rng.random() < 0.35
        other = (lambda: self.pick_chain()) if spread else (lambda: self.chain)
        if shape < 0.12:
            # Deliberate rollback after appending.
            rows = [self.row(other()) for _ in range(rng.randint(1, 3))]
            insert_records(cur, rows)
            pending.append("ROLLBACK")
            self.shapes["rollback"] += 1
            return len(rows)
        if shape < 0.20:
            # A statement fails half-way through a multi-row INSERT (bad supplied hash on its last
            # row) outside any savepoint: the transaction is aborted and rolled back.
            good = [self.row(other()) for _ in range(rng.randint(0, 2))]
            if good:
                insert_records(cur, good)
            with pytest.raises(errors.InvalidTextRepresentation):
                cur.execute(
                    "INSERT INTO ledger.records (anchor_id, slot, kind, payload, hash) "
                    "VALUES (%s, 's', 'k', '{}', NULL), (%s, 's', 'k', '{}', 'xyz')",
                    (other(), other()))
            pending.append("ROLLBACK")
            self.shapes["failed_tx"] += 1
            return len(good) + 2
        if shape < 0.35:
            # SAVEPOINT, append, ROLLBACK TO SAVEPOINT, append again.
            a, b, c = self.row(), [self.row(other()) for _ in range(rng.randint(1, 3))], self.row()
            insert_records(cur, [a])
            cur.execute("SAVEPOINT s1")
            insert_records(cur, b)
            cur.execute("ROLLBACK TO SAVEPOINT s1")
            insert_records(cur, [c])
            pending += [a, c]
            self.shapes["savepoint_rollback"] += 1
            return 2 + len(b)
        if shape < 0.50:
            # A failing statement inside a savepoint: a malformed supplied hash (22P02), after
            # one good row of the same multi-row statement was already chained.
            a, c = self.row(), self.row()
            insert_records(cur, [a])
            cur.execute("SAVEPOINT s1")
            with pytest.raises(errors.InvalidTextRepresentation):
                cur.execute(
                    "INSERT INTO ledger.records (anchor_id, slot, kind, payload, hash) "
                    "VALUES (%s, 's', 'k', '{}', NULL), (%s, 's', 'k', '{}', 'xyz')",
                    (self.chain, self.chain))
            cur.execute("ROLLBACK TO SAVEPOINT s1")
            insert_records(cur, [c])
            pending += [a, c]
            self.shapes["failed_in_savepoint"] += 1
            return 4
        if shape < 0.60:
            # Nested savepoints, the inner one released, the outer one released or rolled back.
            x, y, z, w = self.row(other()), self.row(), self.row(other()), self.row()
            cur.execute("SAVEPOINT outer_sp")
            insert_records(cur, [x])
            cur.execute("SAVEPOINT inner_sp")
            insert_records(cur, [y])
            cur.execute("RELEASE SAVEPOINT inner_sp")
            insert_records(cur, [z])
            if rng.random() < 0.5:
                cur.execute("ROLLBACK TO SAVEPOINT outer_sp")
                self.shapes["nested_rollback"] += 1
            else:
                cur.execute("RELEASE SAVEPOINT outer_sp")
                pending += [x, y, z]
                self.shapes["nested_release"] += 1
            insert_records(cur, [w])
            pending.append(w)
            return 4
        if shape < 0.80:
            # Several single-row statements.
            rows = [self.row(other()) for _ in range(rng.randint(1, 4))]
            for r in rows:
                insert_records(cur, [r])
            pending += rows
            self.shapes["single_rows"] += 1
            return len(rows)
        # One multi-row statement.
        rows = [self.row(other()) for _ in range(rng.randint(2, 5))]
        insert_records(cur, rows)
        pending += rows
        self.shapes["multi_row"] += 1
        return len(rows)


def run_writers(db, chains_per_writer: list[list[str]], rows: int, multi_chain=False):
    barrier = threading.Barrier(len(chains_per_writer))
    writers = [Writer(db, i, chains, rows, seed=1000 + i, multi_chain=multi_chain)
               for i, chains in enumerate(chains_per_writer)]
    with ThreadPoolExecutor(len(writers)) as pool:
        futures = [pool.submit(w.run, barrier) for w in writers]
        for f in futures:
            f.result(timeout=300)  # re-raises a writer's unexpected error
    committed: dict[uuid.UUID, str] = {}
    for w in writers:
        committed.update(w.committed)
    return writers, committed


def check_result(db, committed: dict):
    counts = Counter(committed.values())
    assert_dense(db, {str(c): n for c, n in counts.items()})
    stored = {r[0]: str(r[1]) for r in db.fetchall("SELECT rid, anchor_id FROM ledger.records")}
    assert stored == {rid: str(chain) for rid, chain in committed.items()}, \
        "the stored rows are not exactly the committed ones"
    dup = db.fetchall("SELECT anchor_id, seq, count(*) FROM ledger.records "
                      "GROUP BY 1, 2 HAVING count(*) > 1")
    assert dup == []
    assert_clean(db)


class Reader:
    """While writers run: ledger.verify and the export (checked offline) see consistent chains."""

    def __init__(self, db):
        self.db, self.stop, self.rounds, self.error = db, threading.Event(), 0, None
        self.max_waiting = 0  # writers seen waiting for a chain lock at once

    def run(self):
        conn = self.db.connect(autocommit=True)
        try:
            while not self.stop.is_set():
                waiting = conn.execute("SELECT count(*) FROM pg_stat_activity "
                                       "WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'"
                                       ).fetchone()[0]
                self.max_waiting = max(self.max_waiting, waiting)
                assert conn.execute("SELECT * FROM ledger.verify()").fetchall() == []
                if self.rounds % 4 == 0:
                    lines = [r[0] for r in conn.execute(
                        "SELECT * FROM ledger.export('ledger.records')")]
                    assert offline_verify(lines) == []
                self.rounds += 1
        except BaseException as e:  # reported by the test
            self.error = e
        finally:
            conn.close()


def test_eight_writers_one_chain(db):
    chain = str(uuid.uuid4())
    reader = Reader(db)
    thread = threading.Thread(target=reader.run)
    thread.start()
    try:
        writers, committed = run_writers(db, [[chain]] * WRITERS, ROWS_PER_WRITER)
    finally:
        reader.stop.set()
        thread.join(timeout=60)
    assert reader.error is None, reader.error
    assert reader.rounds >= 2
    assert reader.max_waiting >= 2, "the writers never contended for the chain"
    shapes = sum((w.shapes for w in writers), Counter())
    # Every transaction shape was exercised, and a realistic share rolled back.
    assert set(shapes) >= {"rollback", "failed_tx", "savepoint_rollback", "failed_in_savepoint",
                           "nested_rollback", "nested_release", "single_rows", "multi_row"}
    rolled_back = shapes["rollback"] + shapes["failed_tx"]
    assert 0.12 <= rolled_back / sum(shapes.values()) <= 0.30, shapes
    assert len(committed) > WRITERS * ROWS_PER_WRITER // 2
    check_result(db, committed)
    assert db.verify("ledger.records", chain) == []


def test_eight_writers_eight_chains(db):
    chains = [str(uuid.uuid4()) for _ in range(WRITERS)]
    writers, committed = run_writers(db, [[c] for c in chains], ROWS_PER_WRITER)
    assert set(map(str, committed.values())) == set(chains)
    check_result(db, committed)


def test_eight_writers_mixed_chains(db):
    """Writers share three chains, and one transaction may append to several chains."""
    chains = [str(uuid.uuid4()) for _ in range(3)]
    writers, committed = run_writers(db, [chains] * WRITERS, ROWS_PER_WRITER // 2,
                                     multi_chain=True)
    check_result(db, committed)
    for c in chains:
        assert db.verify("ledger.records", c) == []


def test_other_chains_do_not_wait(db):
    """A holds an open transaction that appended to chain X. B appends to chain Y and commits at
    once; C appending to X blocks (on the chain lock) until A commits, then links after A's row."""
    x, y = str(uuid.uuid4()), str(uuid.uuid4())
    first = insert_record(db.conn.cursor(), x)  # X already has a head

    a = db.connect()
    b = db.connect(settings={"lock_timeout": "2s", "statement_timeout": "5s"})
    c_conn = db.connect(settings={"lock_timeout": "500ms"})

    a_row = insert_record(a.cursor(), x)
    assert a_row[1] == 2

    started = time.monotonic()
    b_row = insert_record(b.cursor(), y)
    b.commit()
    assert time.monotonic() - started < 2.0
    assert b_row[1] == 1 and b_row[2] is None

    # With a lock_timeout, C's append to X fails with lock_not_available instead of forking or
    # waiting forever.
    with pytest.raises(errors.LockNotAvailable):
        insert_record(c_conn.cursor(), x)
    c_conn.rollback()

    # Without one, C blocks on the chain lock (an advisory lock, as head.rs documents) until A ends.
    c_conn.execute("SET lock_timeout = 0")
    c_conn.commit()
    c_pid = c_conn.info.backend_pid
    result = {}

    def c_append():
        try:
            result["row"] = insert_record(c_conn.cursor(), x)
            c_conn.commit()
        except Exception as e:  # reported below
            result["error"] = e

    thread = threading.Thread(target=c_append)
    thread.start()
    try:
        wait = wait_until(lambda: (lambda w: w if w and w[0] == "Lock" else None)(
            backend_wait(db, c_pid)), timeout=10, what="C to wait on a lock")
        assert wait[1] == "advisory", wait
        # The lock C waits for is held by A.
        blockers = db.scalar("SELECT pg_blocking_pids(%s)", (c_pid,))
        assert blockers == [a.info.backend_pid]
        # The chain lock is keyed on the table (and the chain): head.rs's advisory lock space.
        awaited = db.fetchall("SELECT locktype, classid::regclass::text, objsubid FROM pg_locks "
                              "WHERE pid = %s AND NOT granted", (c_pid,))
        assert awaited == [("advisory", "ledger.records", 19527)]
        time.sleep(0.3)
        assert thread.is_alive() and "row" not in result
        # Meanwhile another writer on Y is still not blocked.
        started = time.monotonic()
        insert_record(b.cursor(), y)
        b.commit()
        assert time.monotonic() - started < 2.0
        a.commit()
    finally:
        thread.join(timeout=20)
    assert not thread.is_alive()
    assert "error" not in result, result.get("error")
    c_row = result["row"]
    assert c_row[1] == 3 and c_row[2] == a_row[3]
    assert a_row[2] == first[3]
    assert_dense(db, {x: 3, y: 2})
    assert_clean(db)


def test_rolled_back_holder_releases_chain(db):
    """A waiter on a chain whose holder rolls back gets the seq the holder would have had."""
    x = str(uuid.uuid4())
    head = insert_record(db.conn.cursor(), x)
    a, c = db.connect(), db.connect()
    insert_record(a.cursor(), x)
    result = {}

    def c_append():
        try:
            result["row"] = insert_record(c.cursor(), x)
            c.commit()
        except Exception as e:
            result["error"] = e

    thread = threading.Thread(target=c_append)
    thread.start()
    wait_until(lambda: (backend_wait(db, c.info.backend_pid) or (None,))[0] == "Lock",
               what="C to wait")
    a.rollback()
    thread.join(timeout=20)
    assert "error" not in result, result.get("error")
    assert result["row"][1] == 2 and result["row"][2] == head[3]
    assert_dense(db, {x: 2})
    assert_clean(db)


def test_prepared_transaction_holds_chain(db):
    """Two-phase commit: a prepared transaction keeps its chain locked; a writer waits for COMMIT
    PREPARED and then links after the prepared record (or takes its seq after ROLLBACK PREPARED)."""
    x = str(uuid.uuid4())
    head = insert_record(db.conn.cursor(), x)
    for outcome in ("COMMIT", "ROLLBACK"):
        gid = f"ledger-{outcome.lower()}"
        a = db.connect()
        prepared = insert_record(a.cursor(), x)
        insert_record(a.cursor(), x)  # two rows: the pre-commit density check runs at PREPARE
        a.execute(f"PREPARE TRANSACTION '{gid}'")
        a.close()
        c = db.connect()
        result = {}

        def c_append():
            try:
                result["row"] = insert_record(c.cursor(), x)
                c.commit()
            except Exception as e:
                result["error"] = e

        thread = threading.Thread(target=c_append)
        thread.start()
        wait_until(lambda: (backend_wait(db, c.info.backend_pid) or (None,))[0] == "Lock",
                   what="C to wait for the prepared transaction")
        db.execute(f"{outcome} PREPARED '{gid}'")
        thread.join(timeout=20)
        assert "error" not in result, result.get("error")
        if outcome == "COMMIT":
            assert result["row"][1] == prepared[1] + 2
            head = result["row"]
        else:
            assert result["row"][1:3] == (head[1] + 1, head[3])
            head = result["row"]
    assert_dense(db, {x: 5})
    assert_clean(db)
