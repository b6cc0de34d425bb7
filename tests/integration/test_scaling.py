"""A performance smoke test: each operation on 8 times the records must take about 8 times as long,
never the 64 times of an operation gone quadratic. The bound (24 times) is wide, so noise cannot fail
it, and the ledger against the same table without it is held to an order of magnitude; the ratios
themselves are measured by bench/run.sh."""

from __future__ import annotations

import time

import pytest

SMALL, LARGE = 5_000, 40_000
GROWTH_BOUND = 24  # linear: 8, quadratic: 64
LEDGER_VS_PLAIN_BOUND = 10  # bench/RESULTS.md: about 1.1 to 3 for bulk loads

EVENTS = "CREATE TABLE {name} (id bigint PRIMARY KEY, stream text NOT NULL, data jsonb NOT NULL)"


def rows(n: int, chains: int, step: int = 1) -> str:
    return (f"SELECT i, 's' || (i % {chains}), jsonb_build_object('i', i) "
            f"FROM generate_series(1, {n}, {step}) i")


def best_of(runs: int, operation) -> float:
    """The fastest of `runs` runs, in seconds: the least disturbed by anything else on the machine."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        operation()
        best = min(best, time.perf_counter() - start)
    return best


def fresh(db, name: str, ledger: bool, chains: int) -> None:
    db.execute(f"DROP TABLE IF EXISTS {name}")
    db.execute(EVENTS.format(name=name))
    if ledger:
        db.execute("SELECT ledger.enable(%s, chain_by => %s)", (name, "stream" if chains > 1 else None))


def timed_load(db, ledger: bool, n: int, chains: int, retry: bool) -> float:
    """Seconds to load n events in one INSERT ... SELECT (with retry: every tenth already stored, and
    ON CONFLICT DO NOTHING)."""
    name = "ledger_events" if ledger else "plain_events"

    def load():
        fresh(db, name, ledger, chains)
        if retry:
            db.execute(f"INSERT INTO {name} {rows(n, chains, 10)}")
        start = time.perf_counter()
        db.execute(f"INSERT INTO {name} {rows(n, chains)}{' ON CONFLICT DO NOTHING' if retry else ''}")
        return time.perf_counter() - start

    return min(load() for _ in range(2))


@pytest.mark.parametrize("chains", [1, 64])
@pytest.mark.parametrize("retry", [False, True], ids=["bulk", "retry"])
def test_loads_grow_linearly(db, chains, retry):
    small = timed_load(db, True, SMALL, chains, retry)
    large = timed_load(db, True, LARGE, chains, retry)
    plain = timed_load(db, False, LARGE, chains, retry)
    assert db.scalar("SELECT count(*) FROM ledger_events") == LARGE
    assert db.verify("ledger_events") == []
    assert large / small < GROWTH_BOUND, f"{LARGE} rows took {large:.3f}s, {SMALL} took {small:.3f}s"
    assert large / plain < LEDGER_VS_PLAIN_BOUND, f"ledger {large:.3f}s, the same table without it {plain:.3f}s"


def test_verification_and_checkpoints_grow_linearly(db):
    times = {}
    for n in (SMALL, LARGE):
        fresh(db, "ledger_events", True, 64)
        db.execute(f"INSERT INTO ledger_events {rows(n, 64)}")
        times[n] = {
            "verify": best_of(2, lambda: db.fetchall("SELECT * FROM ledger.verify('ledger_events')")),
            "export": best_of(2, lambda: db.fetchall("SELECT * FROM ledger.export('ledger_events')")),
            "checkpoint": best_of(1, lambda: db.fetchall("SELECT * FROM ledger.checkpoint('ledger_events')")),
            "stats": best_of(2, lambda: db.fetchall("SELECT * FROM ledger.stats")),
        }
    assert db.verify("ledger_events") == []
    for operation in times[SMALL]:
        small, large = times[SMALL][operation], times[LARGE][operation]
        # Below a few milliseconds the fixed costs dominate and the ratio says nothing.
        assert large < 0.05 or large / small < GROWTH_BOUND, \
            f"{operation}: {LARGE} records took {large:.3f}s, {SMALL} took {small:.3f}s"


def test_prunes_and_erasures_grow_linearly(db):
    """ledger.prune of the older half of a ledger, verify and export of what is left (which read the
    kept hashes), and verify of a ledger whose records all commit to erasable values."""
    times = {}
    for n in (SMALL, LARGE):
        name = f"aged_{n}"  # a new name each time: a ledger's kept hashes stay under its name
        db.execute(f"CREATE TABLE {name} (id bigint PRIMARY KEY, stream text NOT NULL, at timestamptz NOT NULL)")
        db.execute("SELECT ledger.enable(%s, chain_by => 'stream')", (name,))
        db.execute(f"INSERT INTO {name} SELECT i, 's' || (i % 64), "
                   f"now() - CASE WHEN i <= {n // 2} THEN interval '30 days' ELSE interval '1 day' END "
                   f"FROM generate_series(1, {n}) i")
        db.execute(f"SELECT count(*) FROM ledger.checkpoint('{name}')")
        db.execute(f"SELECT ledger.set_retention('{name}', '7 days', 'at')")
        start = time.perf_counter()
        assert db.scalar(f"SELECT sum(pruned) FROM ledger.prune('{name}')") == n // 2
        prune = time.perf_counter() - start
        erasable = f"people_{n}"
        db.execute(f"CREATE TABLE {erasable} (id bigint PRIMARY KEY, stream text NOT NULL, email text)")
        db.execute("SELECT ledger.enable(%s, chain_by => 'stream')", (erasable,))
        db.execute(f"SELECT ledger.set_erasable('{erasable}', '{{email}}')")
        db.execute(f"INSERT INTO {erasable} SELECT i, 's' || (i % 64), 'p' || i || '@example.org' "
                   f"FROM generate_series(1, {n}) i")
        times[n] = {
            "prune": prune,
            "verify pruned": best_of(2, lambda: db.fetchall(f"SELECT * FROM ledger.verify('{name}')")),
            "export pruned": best_of(2, lambda: db.fetchall(f"SELECT * FROM ledger.export('{name}')")),
            "verify erasable": best_of(2, lambda: db.fetchall(f"SELECT * FROM ledger.verify('{erasable}')")),
        }
        assert db.verify(name) == [] and db.verify(erasable) == []
    for operation in times[SMALL]:
        small, large = times[SMALL][operation], times[LARGE][operation]
        assert large < 0.05 or large / small < GROWTH_BOUND, \
            f"{operation}: {LARGE} records took {large:.3f}s, {SMALL} took {small:.3f}s"
