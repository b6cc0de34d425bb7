"""Ledger functions marked PARALLEL SAFE run in parallel workers, each a fresh process that reads
the ledger's registry for itself (a worker cannot take a snapshot of its own, so it must read with
the query's). Outcome: a parallel scan calling canonical_bytes and sha3_256 over every record returns
what a serial one does, and matches every stored hash."""

from __future__ import annotations


def parallel_settings(db) -> list[str]:
    # PostgreSQL 16 renamed force_parallel_mode to debug_parallel_query.
    forcing = "debug_parallel_query" if int(db.scalar("SHOW server_version_num")) >= 160000 else "force_parallel_mode"
    return [f"SET {forcing} = on", "SET parallel_setup_cost = 0", "SET parallel_tuple_cost = 0",
            "SET min_parallel_table_scan_size = 0", "SET max_parallel_workers_per_gather = 2"]


def test_canonical_bytes_in_parallel_workers(db):
    db.execute("CREATE TABLE p (id int PRIMARY KEY, account text NOT NULL, body text)")
    db.execute("SELECT ledger.enable('p', 'account')")
    db.execute("INSERT INTO p SELECT i, 'a' || (i % 7), repeat('x', i % 50) FROM generate_series(1, 5000) i")
    db.execute("ALTER TABLE p ADD COLUMN memo text")  # an added column, read by the workers too
    db.execute("INSERT INTO p (id, account, memo) SELECT i, 'a' || (i % 7), 'm' || i FROM generate_series(5001, 5100) i")
    query = ("SELECT count(*) FILTER (WHERE ledger.sha3_256(ledger.canonical_bytes('p', account, seq)) = hash), "
             "count(*) FROM p")
    serial = db.fetchone(query)
    assert serial == (5100, 5100)
    with db.connect(autocommit=True) as conn:  # a new session: cold caches, in the leader too
        for setting in parallel_settings(db):
            conn.execute(setting)
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN (COSTS OFF) " + query).fetchall())
        assert "Gather" in plan, plan
        assert conn.execute(query).fetchone() == serial
