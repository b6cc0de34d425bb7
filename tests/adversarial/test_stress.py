"""Stress: 16 writers, each on its own connection, append for LEDGER_STRESS_SECONDS (default 60) per
isolation level to one hot chain and ~200 others of ledger.records, with rollbacks and rolled-back
savepoints mixed in. Then: no forks, no gaps (ledger.verify finds nothing, every chain is dense and
linked), every failure was a clean 40001 (and none at READ COMMITTED, where the README promises
writers simply queue on the chain), and exactly the rows the writers saw commit are stored.

The throughput of each level is printed (run with -s) and recorded as a junit property."""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections import Counter

import psycopg
import pytest
from psycopg import IsolationLevel, errors

from ledgertest import assert_dense, insert_records, offline_verify

WRITERS = 16
SECONDS = float(os.environ.get("LEDGER_STRESS_SECONDS", "60"))
CHAINS = 200
HOT_SHARE = 0.3
# The offline verifier re-checks the hot chain and this many others (all of them would take longer
# than the stress itself); ledger.verify checks every chain.
OFFLINE_CHAINS = 8

LEVELS = [pytest.param(IsolationLevel.READ_COMMITTED, id="read_committed"),
          pytest.param(IsolationLevel.REPEATABLE_READ, id="repeatable_read"),
          pytest.param(IsolationLevel.SERIALIZABLE, id="serializable")]


class Writer(threading.Thread):
    def __init__(self, db, wid: int, level, hot: str, chains: list[str], start: threading.Barrier,
                 deadline: list[float]):
        super().__init__(name=f"writer-{wid}", daemon=True)
        self.db, self.wid, self.level = db, wid, level
        self.hot, self.chains = hot, chains
        self.start_barrier, self.deadline = start, deadline
        self.rng = random.Random(wid * 7919 + 17)
        self.committed: Counter = Counter()  # chain -> rows committed
        self.commits = 0
        self.rollbacks = 0
        self.serialization_failures = 0
        self.errors: list[tuple[str | None, str]] = []  # anything but 40001
        self.counter = 0

    def rows(self, chain: str, n: int) -> list[tuple]:
        out = []
        for _ in range(n):
            self.counter += 1
            out.append((uuid.uuid4(), chain, {"w": self.wid, "i": self.counter, "s": "stress ✓"}))
        return out

    def run(self) -> None:
        try:
            conn = self.db.connect(isolation_level=self.level)
        except Exception as e:  # noqa: BLE001  reported by the test
            self.errors.append((getattr(e, "sqlstate", None), f"connect: {e}"))
            return
        self.start_barrier.wait(timeout=60)
        rng = self.rng
        while time.monotonic() < self.deadline[0]:
            chain = self.hot if rng.random() < HOT_SHARE else rng.choice(self.chains)
            n = rng.randint(1, 3)
            shape = rng.random()
            kept = 0
            try:
                with conn.cursor() as cur:
                    if shape < 0.10:
                        # Appends, then a deliberate rollback.
                        insert_records(cur, self.rows(chain, n))
                        conn.rollback()
                        self.rollbacks += 1
                        continue
                    if shape < 0.25:
                        # One row kept, a savepoint with n rows rolled back, maybe one more kept.
                        insert_records(cur, self.rows(chain, 1))
                        cur.execute("SAVEPOINT sp")
                        insert_records(cur, self.rows(chain, n))
                        cur.execute("ROLLBACK TO SAVEPOINT sp")
                        kept = 1
                        if rng.random() < 0.5:
                            insert_records(cur, self.rows(chain, 1))
                            kept += 1
                    elif shape < 0.55:
                        insert_records(cur, self.rows(chain, n))  # one multi-row INSERT
                        kept = n
                    else:
                        for row in self.rows(chain, n):  # n single-row INSERTs
                            insert_records(cur, [row])
                        kept = n
                conn.commit()
            except errors.SerializationFailure:
                self.serialization_failures += 1
                conn.rollback()
                continue
            except psycopg.Error as e:
                self.errors.append((e.sqlstate, f"{type(e).__name__}: {str(e).strip()[:300]}"))
                if conn.broken or conn.closed:
                    return
                conn.rollback()
                continue
            self.commits += 1
            self.committed[chain] += kept
        conn.close()


@pytest.mark.parametrize("level", LEVELS)
def test_stress_many_writers_hot_and_cold_chains(db, level, record_property):
    hot = str(uuid.uuid4())
    chains = [str(uuid.uuid4()) for _ in range(CHAINS)]
    start = threading.Barrier(WRITERS + 1)
    deadline = [float("inf")]
    writers = [Writer(db, w, level, hot, chains, start, deadline) for w in range(WRITERS)]
    for w in writers:
        w.start()
    start.wait(timeout=60)
    began = time.monotonic()
    deadline[0] = began + SECONDS
    for w in writers:
        w.join(timeout=SECONDS + 120)
    elapsed = time.monotonic() - began
    assert not any(w.is_alive() for w in writers), "a writer is stuck"

    commits = sum(w.commits for w in writers)
    rows = sum(sum(w.committed.values()) for w in writers)
    failures = sum(w.serialization_failures for w in writers)
    rollbacks = sum(w.rollbacks for w in writers)
    stats = {
        "level": level.name, "seconds": round(elapsed, 1), "commits": commits, "rows": rows,
        "commits_per_s": round(commits / elapsed, 1), "rows_per_s": round(rows / elapsed, 1),
        "serialization_failures_40001": failures, "deliberate_rollbacks": rollbacks,
        "hot_chain_rows": sum(w.committed[hot] for w in writers),
    }
    for key, value in stats.items():
        record_property(key, value)
    print(f"\nstress {level.name}: {stats}")

    # Every failure a clean 40001; anything else is a bug.
    others = [(w.name, state, msg) for w in writers for state, msg in w.errors]
    assert not others, f"{len(others)} errors other than 40001, first: {others[:5]}"
    if level == IsolationLevel.READ_COMMITTED:
        assert failures == 0, f"{failures} serialization failures at READ COMMITTED"
    assert commits > 0 and stats["hot_chain_rows"] > 0

    # Exactly what was committed is stored: per chain, and in total.
    expected: Counter = Counter()
    for w in writers:
        expected.update(w.committed)
    assert db.scalar("SELECT count(*) FROM ledger.records") == rows
    assert_dense(db, dict(expected))
    # No fork: the links form one line per chain.
    assert db.scalar(
        "SELECT count(*) FROM ledger.records r LEFT JOIN ledger.records p "
        "ON p.anchor_id = r.anchor_id AND p.seq = r.seq - 1 "
        "WHERE (r.seq = 1 AND r.prev_hash IS NOT NULL) "
        "   OR (r.seq > 1 AND (p.hash IS NULL OR r.prev_hash IS DISTINCT FROM p.hash))") == 0
    assert db.verify() == [], db.verify_details()[:10]

    # The independent verifier agrees on the hot chain and a sample of the others.
    sample = [hot] + random.Random(1).sample(sorted(expected), min(OFFLINE_CHAINS, len(expected)))
    lines = [line for (line,) in db.fetchall(
        "SELECT line FROM ledger.export('ledger.records') WITH ORDINALITY AS e(line, n) "
        "WHERE n = 1 OR (line::jsonb ->> 1) = ANY(%s)", (sample,))]
    assert len(lines) == 1 + sum(expected[c] for c in set(sample))
    assert offline_verify(lines) == []
