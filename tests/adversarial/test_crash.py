"""Crash: concurrent writers bulk-append (multi-row INSERT ... SELECT, several statements per
transaction) to ledger.records — a chain of their own each and one shared hot chain — and to a user
ledger table, while the server dies: `kill -9` of the postmaster and of every backend it orphaned, or
`pg_ctl stop -m immediate`. Outcome after crash recovery (fsync on): every acknowledged transaction is
there, whole, and no part of any other but the ones in flight; ledger.verify and the offline verifier
find nothing in either table; every chain is dense; new appends chain onto the recovered heads."""

from __future__ import annotations

import threading
import uuid
from collections import Counter

import psycopg

from clusters import as_postgres, own_cluster
from ledgertest import PG_BIN, Database, assert_clean, assert_dense, insert_record, wait_until

WRITERS = 6
ROWS = 25  # rows per statement
HOT = str(uuid.UUID(int=0x407))
T_CHAINS = 3  # the user table's chains: k = 0, 1, 2
CONF = ["fsync = on", "synchronous_commit = on", "full_page_writes = on", "max_connections = 40"]


def own_chain(w: int) -> str:
    return str(uuid.UUID(int=0x1000 + w))


def txn_rows(txn: int) -> int:
    """Rows one transaction appends: its own chain, the hot chain every other time, the user table."""
    return ROWS + (ROWS if txn % 2 == 0 else 0) + ROWS


class Writer(threading.Thread):
    """Appends transaction after transaction until its connection dies. Locks are taken in the order
    own chain, hot chain, one chain of t, so the writers never deadlock."""

    def __init__(self, conninfo: str, w: int) -> None:
        super().__init__(daemon=True)
        self.conninfo, self.w = conninfo, w
        self.acked: list[int] = []  # transactions whose COMMIT returned
        self.inflight: int | None = None  # the one that may or may not have committed
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.conninfo, options="-c statement_timeout=30s") as conn:
                for txn in range(1_000_000):
                    self.inflight = txn
                    with conn.transaction():
                        self.records(conn, own_chain(self.w), txn)
                        if txn % 2 == 0:
                            self.records(conn, HOT, txn)
                        conn.execute("INSERT INTO t (k, body) SELECT %s, format('%%s:%%s:%%s', %s, %s, g) "
                                     "FROM generate_series(1, %s) g",
                                     (txn % T_CHAINS, self.w, txn, ROWS))
                    self.acked.append(txn)
        except Exception as e:  # the server went away (checked by the test)
            self.error = e

    def records(self, conn, chain: str, txn: int) -> None:
        conn.execute("INSERT INTO ledger.records (anchor_id, slot, kind, payload) "
                     "SELECT %s, 'crash', 'bulk', jsonb_build_object('w', %s, 'txn', %s, 'g', g) "
                     "FROM generate_series(1, %s) g", (chain, self.w, txn, ROWS))


def found_transactions(db) -> Counter:
    """{(writer, txn): rows stored in both tables}."""
    rows = db.fetchall(
        "SELECT (payload->>'w')::int, (payload->>'txn')::int, count(*) FROM ledger.records "
        "WHERE slot = 'crash' GROUP BY 1, 2 "
        "UNION ALL SELECT split_part(body, ':', 1)::int, split_part(body, ':', 2)::int, count(*) "
        "FROM t GROUP BY 1, 2")
    found = Counter()
    for w, txn, n in rows:
        found[(w, txn)] += n
    return found


def expected_counts(found: Counter) -> tuple[dict, dict]:
    """Records per chain of ledger.records and of t implied by the transactions found."""
    records, t = Counter(), Counter()
    for w, txn in found:
        records[own_chain(w)] += ROWS
        if txn % 2 == 0:
            records[HOT] += ROWS
        t[str(txn % T_CHAINS)] += ROWS
    return dict(records), dict(t)


def crash_under_load(crash) -> None:
    with own_cluster("crash", CONF) as cluster:
        db = cluster.create_database("crash")
        db.execute("CREATE TABLE t (id bigserial PRIMARY KEY, k int NOT NULL, body text NOT NULL)")
        db.execute("SELECT ledger.enable('t', 'k')")
        db.close_all()

        writers = [Writer(cluster.conninfo("crash"), w) for w in range(WRITERS)]
        for writer in writers:
            writer.start()
        wait_until(lambda: all(len(w.acked) >= 10 for w in writers) or any(w.error for w in writers),
                   30, 0.01, "every writer to commit a few transactions")
        assert not any(w.error for w in writers), [w.error for w in writers]
        crash(cluster)
        for writer in writers:
            writer.join(30)
        assert not any(w.is_alive() for w in writers), "a writer outlived the server"
        assert all(isinstance(w.error, psycopg.OperationalError) for w in writers), \
            "every writer was cut off mid-flight"
        acked = {(w.w, txn) for w in writers for txn in w.acked}
        inflight = {(w.w, w.inflight) for w in writers}
        assert not cluster.processes()

        cluster.start()
        assert "automatic recovery in progress" in cluster.log()
        db = Database(cluster, "crash")
        try:
            found = found_transactions(db)
            # Durable: every acknowledged commit survived; atomic: nothing else but whole in-flight ones.
            assert acked <= set(found), sorted(acked - set(found))[:10]
            assert set(found) <= acked | inflight, sorted(set(found) - acked - inflight)[:10]
            torn = {key: n for key, n in found.items() if n != txn_rows(key[1])}
            assert not torn, f"transactions stored in part: {torn}"
            assert sum(found.values()) >= WRITERS * 10 * ROWS * 2

            records, t = expected_counts(found)
            assert_dense(db, records)
            assert_dense(db, t, tbl="t", chain_col="k")
            assert_clean(db)
            assert_clean(db, "t")

            # Appends go on from the recovered heads.
            cur = db.conn.cursor()
            for chain, n in records.items():
                head = db.scalar("SELECT hash FROM ledger.records WHERE anchor_id = %s AND seq = %s",
                                 (chain, n))
                _, seq, prev_hash, _ = insert_record(cur, chain, {"after": "crash"})
                assert (seq, prev_hash) == (n + 1, head)
            for k, n in t.items():
                head = db.scalar("SELECT hash FROM t WHERE k = %s AND seq = %s", (int(k), n))
                row = db.fetchone("INSERT INTO t (k, body) VALUES (%s, 'after') "
                                  "RETURNING seq, prev_hash", (int(k),))
                assert row == (n + 1, head)
            assert_dense(db, {c: n + 1 for c, n in records.items()})
            assert_dense(db, {c: n + 1 for c, n in t.items()}, tbl="t", chain_col="k")
            assert_clean(db)
            assert_clean(db, "t")
        finally:
            db.close_all()


def test_kill_9_of_postmaster_and_backends_mid_append():
    crash_under_load(lambda cluster: cluster.kill9())


def test_immediate_shutdown_mid_append():
    def immediate(cluster):
        as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(cluster.data), "-m", "immediate", "-w", "stop")
        wait_until(lambda: not cluster.processes(), 30, 0.01, "the server processes to exit")

    crash_under_load(immediate)
