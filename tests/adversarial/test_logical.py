"""Logical replication: a publisher (wal_level = logical) publishes ledger.records and a user ledger
table to a separate subscriber cluster where the same ledgers exist. The subscriber's triggers (ENABLE
ALWAYS, so the apply worker's session_replication_role = replica does not switch them off) accept a
replicated row only if its seq, prev_hash and hash are exactly what the subscriber's own chain requires.
Outcome: after concurrent writers on several chains, the subscriber holds the very same rows and hashes,
dense, and ledger.verify finds nothing; rows inserted on the subscriber out of order or with a forged
hash are refused (23514, 22P02) and change nothing; once the subscriber's chain has diverged, the
conflicting replicated row is refused (the apply worker stops with 23514) instead of forking the chain.
The initial table copy (copy_data = true) of a ledger stored out of seq order fails cleanly (23514, the
subscription disabled, nothing copied: a documented limitation); the documented way round it — appends
paused by a SHARE lock, a subscription without copy, the subscriber seeded in chain order — ends with an
identical, verified subscriber while writers keep appending."""

from __future__ import annotations

import re
import threading
import uuid

import psycopg
import pytest

from clusters import own_cluster
from ledgertest import Database, assert_clean, assert_dense, database_name, wait_until

WRITERS = 4
TXNS = 15  # per writer
ROWS = 10  # per statement
HOT = str(uuid.UUID(int=0x407))
FORGED = "a" * 64


@pytest.fixture(scope="module")
def clusters():
    with own_cluster("pub", ["wal_level = logical"]) as pub, \
            own_cluster("sub", ["log_error_verbosity = verbose"]) as sub:
        yield pub, sub


@pytest.fixture
def pair(clusters, request):
    """The same two ledgers in a fresh database on each side, and a publication of both."""
    pub, sub = clusters
    name = database_name(request.node.name)
    p, s = pub.create_database(name), sub.create_database(name)
    try:
        for db in (p, s):
            db.execute("CREATE TABLE t (id bigserial PRIMARY KEY, k int NOT NULL, body text NOT NULL)")
            db.execute("SELECT ledger.enable('t', 'k')")
        p.execute("CREATE PUBLICATION ledgers FOR TABLE t, ledger.records")  # an extension's table too
        yield p, s
    finally:
        p.close_all()
        s.close_all()


def subscribe(p: Database, s: Database, copy_data: bool) -> str:
    name = f"sub_{uuid.uuid4().hex[:12]}"
    s.execute(f"CREATE SUBSCRIPTION {name} CONNECTION '{p.cluster.conninfo(p.name)}' PUBLICATION ledgers "
              f"WITH (copy_data = {copy_data}, disable_on_error = true)")
    return name


def write_concurrently(p: Database, tag: str) -> None:
    """WRITERS threads, TXNS transactions each: their own chain, the hot chain, one chain of t."""
    errors = []

    def writer(w: int) -> None:
        try:
            with psycopg.connect(p.cluster.conninfo(p.name)) as conn:
                for txn in range(TXNS):
                    with conn.transaction():
                        for chain in (str(uuid.UUID(int=0x1000 + w)), HOT):
                            conn.execute("INSERT INTO ledger.records (anchor_id, slot, kind, payload) "
                                         "SELECT %s, %s::text, 'k', jsonb_build_object('w', %s, 'txn', %s, 'g', g) "
                                         "FROM generate_series(1, %s) g", (chain, tag, w, txn, ROWS))
                        conn.execute("INSERT INTO t (k, body) SELECT %s, format('%%s:%%s:%%s', %s::text, %s, g) "
                                     "FROM generate_series(1, %s) g", (w % 2, tag, txn, ROWS))
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors


def count(db: Database, tbl: str) -> int:
    return db.scalar(f"SELECT count(*) FROM {tbl}")


def wait_caught_up(p: Database, s: Database, subscription: str) -> None:
    """Until the subscriber holds as many rows as the publisher; fails at once if the subscription
    stopped on an error (disable_on_error)."""
    want = {tbl: count(p, tbl) for tbl in ("ledger.records", "t")}

    def caught_up():
        assert s.scalar("SELECT subenabled FROM pg_subscription WHERE subname = %s", (subscription,)), \
            f"the subscription stopped on an error:\n{tail_errors(s)}"
        return all(count(s, tbl) == n for tbl, n in want.items())

    wait_until(caught_up, 30, 0.05, f"the subscriber to hold {want}")


def tail_errors(s: Database) -> str:
    return "\n".join(line for line in s.cluster.log().splitlines() if "ERROR" in line)[-3000:]


def assert_identical(p: Database, s: Database) -> None:
    assert s.snapshot() == p.snapshot()
    assert s.snapshot("t", "k") == p.snapshot("t", "k")
    for db in (p, s):
        assert_dense(db)
        assert_dense(db, tbl="t", chain_col="k")
        assert_clean(db)
        assert_clean(db, "t")


def test_streamed_appends_arrive_identical_and_verified(pair):
    p, s = pair
    name = subscribe(p, s, copy_data=False)
    wait_until(lambda: s.scalar("SELECT count(*) FROM pg_stat_subscription WHERE subname = %s AND pid IS NOT "
                                "NULL", (name,)), 30, 0.05, "the apply worker to start")
    write_concurrently(p, "streamed")
    assert count(p, "ledger.records") == WRITERS * TXNS * ROWS * 2
    wait_caught_up(p, s, name)
    assert_identical(p, s)

    # Rows inserted by hand on the subscriber must be the next link, exactly: each of these is refused.
    head = s.fetchone("SELECT seq, hash FROM ledger.records WHERE anchor_id = %s ORDER BY seq DESC LIMIT 1",
                      (HOT,))
    copy = ("INSERT INTO ledger.records (anchor_id, slot, kind, ts, payload, seq, prev_hash, hash) "
            "SELECT anchor_id, slot, kind, ts, payload, {seq}, {prev}, {hash} FROM ledger.records "
            f"WHERE anchor_id = '{HOT}' AND seq = {{of}}")
    t_head = s.fetchone("SELECT seq, hash FROM t WHERE k = 0 ORDER BY seq DESC LIMIT 1")
    forgeries = {
        "seq skipped": (copy.format(seq=head[0] + 2, prev=f"'{head[1]}'", hash="hash", of=head[0]), "23514"),
        "replayed old record": (copy.format(seq="seq", prev="prev_hash", hash="hash", of=2), "23514"),
        "forged hash": (copy.format(seq=head[0] + 1, prev=f"'{head[1]}'", hash=f"'{FORGED}'", of=head[0]),
                        "23514"),
        "stale prev_hash": (copy.format(seq=head[0] + 1, prev="hash", hash="NULL", of=head[0] - 1), "23514"),
        "malformed hash": (copy.format(seq=head[0] + 1, prev=f"'{head[1]}'", hash="repeat('z', 64)",
                                       of=head[0]), "22P02"),
        "forged hash in t": ("INSERT INTO t (id, k, body, seq, prev_hash, hash) "
                             f"VALUES (1e9, 0, 'forged', {t_head[0] + 1}, '{t_head[1]}', '{FORGED}')", "23514"),
        "seq skipped in t": (f"INSERT INTO t (id, k, body, seq) VALUES (1e9, 0, 'forged', {t_head[0] + 2})",
                             "23514"),
    }
    before = (s.snapshot(), s.snapshot("t", "k"))
    for what, (query, sqlstate) in forgeries.items():
        with pytest.raises(psycopg.Error) as refused:
            s.execute(query)
        assert refused.value.sqlstate == sqlstate, (what, refused.value)
    assert (s.snapshot(), s.snapshot("t", "k")) == before

    # Replication goes on after the refusals, and both sides still agree.
    write_concurrently(p, "after")
    wait_caught_up(p, s, name)
    assert_identical(p, s)


# Chains with a record stored (in heap order, as COPY reads) before a record of lower seq.
OUT_OF_ORDER = """SELECT DISTINCT {chain} FROM (
    SELECT {chain}, seq < lag(seq) OVER (PARTITION BY {chain} ORDER BY ctid) AS back FROM {tbl}) x
    WHERE back"""


def store_out_of_order(p: Database) -> None:
    """Both ledgers get a chain whose records lie in the heap before records of lower seq: appends
    rolled back, a few kept, VACUUM, more appends into the space freed up front."""
    for tbl, chain_col, chain, columns, values in (
            ("t", "k", "9", "k, body", "9, 'r' || g"),
            ("ledger.records", "anchor_id", str(uuid.UUID(int=0x909)), "anchor_id, slot, kind, payload",
             f"'{uuid.UUID(int=0x909)}', 'r', 'k', jsonb_build_object('g', g)")):
        insert = f"INSERT INTO {tbl} ({columns}) SELECT {values} FROM generate_series(1, %s) g"
        with p.connect() as conn:
            conn.execute(insert, (500,))
            conn.rollback()
        p.execute(insert, (100,))
        p.execute(f"VACUUM {tbl}")
        p.execute(insert, (100,))
        assert (chain,) in [(str(c),) for c, in p.fetchall(OUT_OF_ORDER.format(tbl=tbl, chain=chain_col))], \
            f"chain {chain} of {tbl} should be stored out of seq order"


def drop_subscription(s: Database, name: str) -> None:
    s.execute(f"ALTER SUBSCRIPTION {name} DISABLE")
    s.execute(f"DROP SUBSCRIPTION {name}")  # and its slots on the publisher


def test_initial_copy_of_a_ledger_stored_out_of_seq_order_fails_cleanly(pair):
    """Documented limitation: the table synchronisation COPYs the publisher's rows in heap order, and the
    subscriber's triggers refuse the first row that is not the next link (23514). With disable_on_error
    the subscription stops, and the subscriber's tables stay empty: no partial copy, no forked chain."""
    p, s = pair
    write_concurrently(p, "before")
    store_out_of_order(p)
    log_start = len(s.cluster.log())
    name = subscribe(p, s, copy_data=True)
    try:
        wait_until(lambda: not s.scalar("SELECT subenabled FROM pg_subscription WHERE subname = %s", (name,)),
                   30, 0.05, "the subscription to be disabled by the failed table synchronisation")
        log = s.cluster.log()[log_start:]
        assert re.search(r"ERROR:  23514: supplied (seq|prev_hash) does not match the chain of ledger "
                         r"(public\.t|ledger\.records)", log), log
        assert re.search(r"CONTEXT:  COPY (t|records), line \d+", log), log
        assert "subscription \"%s\" has been disabled because of an error" % name in log, log
        wait_until(lambda: s.scalar("SELECT sync_error_count FROM pg_stat_subscription_stats "
                                    "WHERE subname = %s", (name,)), 10, 0.05, "the sync error to be counted")
        # No table finished its synchronisation, and no row of either arrived.
        assert s.fetchall("SELECT srrelid::regclass::text FROM pg_subscription_rel WHERE srsubstate = 'r'") == []
        wait_until(lambda: not s.scalar("SELECT count(*) FROM pg_stat_subscription WHERE subname = %s "
                                        "AND pid IS NOT NULL", (name,)), 30, 0.05, "the sync workers to exit")
        assert (count(s, "ledger.records"), count(s, "t")) == (0, 0)
        assert_clean(s)
        assert_clean(s, "t")
    finally:
        drop_subscription(s, name)


class Writers:
    """WRITERS threads appending until stopped, each transaction to its own chain of ledger.records, the
    hot chain, then a chain of t (always in that order: see seed_subscriber)."""

    def __init__(self, p: Database) -> None:
        self.p, self.stop, self.errors, self.done = p, threading.Event(), [], [0] * WRITERS
        self.threads = [threading.Thread(target=self.run, args=(w,)) for w in range(WRITERS)]

    def run(self, w: int) -> None:
        try:
            with psycopg.connect(self.p.cluster.conninfo(self.p.name)) as conn:
                while not self.stop.is_set():
                    with conn.transaction():
                        for chain in (str(uuid.UUID(int=0x1000 + w)), HOT):
                            conn.execute("INSERT INTO ledger.records (anchor_id, slot, kind, payload) SELECT %s, "
                                         "'live', 'k', jsonb_build_object('g', g) FROM generate_series(1, 5) g",
                                         (chain,))
                        conn.execute("INSERT INTO t (k, body) SELECT %s, 'live' || g FROM generate_series(1, 5) g",
                                      (w % 2,))
                    self.done[w] += 1
        except Exception as e:
            self.errors.append(e)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(60)


def test_seeding_the_subscriber_in_chain_order_while_appends_are_paused(pair):
    """The documented procedure for a ledger whose heap order is not chain order, with writers running:
    1. on the publisher, pause appends: in a transaction of its own, LOCK TABLE every published ledger
       IN SHARE MODE (it waits for the appends in flight; later ones wait for it);
    2. on the subscriber, CREATE SUBSCRIPTION ... WITH (copy_data = false);
    3. from the pausing transaction, COPY (SELECT * FROM tbl ORDER BY chain_col, seq) TO STDOUT into
       COPY tbl FROM STDIN on the subscriber, for each ledger, and commit there;
    4. end the pausing transaction: the waiting appends go on, and stream to the subscriber."""
    p, s = pair
    write_concurrently(p, "before")
    store_out_of_order(p)
    with Writers(p) as writers:
        wait_until(lambda: min(writers.done) >= 3 or writers.errors, 30, 0.01, "the writers to get going")
        pause = p.connect()
        pause.execute("LOCK TABLE ledger.records, t IN SHARE MODE")
        waiting = wait_until(lambda: p.scalar(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'ledger.records'::regclass "
            "AND mode = 'RowExclusiveLock'") == WRITERS, 30, 0.01, "every writer to wait for the pause")
        assert waiting and not writers.errors, writers.errors
        at_pause = list(writers.done)
        # No session waiting for the pause holds a transaction id: the logical slot that CREATE
        # SUBSCRIPTION makes waits for every transaction with one to end, so such a waiter would hold it
        # up for as long as the pause lasts (checked by hand: pg_create_logical_replication_slot times
        # out while a transaction that wrote elsewhere first waits for the lock). Here the writers touch
        # the ledgers first in each transaction, so they wait before writing anything.
        assert p.scalar("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                        "WHERE NOT l.granted AND l.relation IN ('ledger.records'::regclass, 't'::regclass) "
                        "AND a.backend_xid IS NOT NULL") == 0
        name = f"sub_{uuid.uuid4().hex[:12]}"
        s.execute("SET statement_timeout = '20s'")
        s.execute(f"CREATE SUBSCRIPTION {name} CONNECTION '{p.cluster.conninfo(p.name)}' PUBLICATION ledgers "
                  "WITH (copy_data = false, disable_on_error = true)")
        s.execute("RESET statement_timeout")
        try:
            paused = {tbl: count(p, tbl) for tbl in ("ledger.records", "t")}
            with s.connect() as seed:
                for tbl, chain_col in (("ledger.records", "anchor_id"), ("t", "k")):
                    with pause.cursor().copy(f"COPY (SELECT * FROM {tbl} ORDER BY {chain_col}, seq) TO STDOUT") \
                            as out, seed.cursor().copy(f"COPY {tbl} FROM STDIN") as into:
                        for data in out:
                            into.write(data)
                seed.commit()
            assert {tbl: count(s, tbl) for tbl in paused} == paused
            assert writers.done == at_pause  # nothing was appended during the pause
            pause.commit()  # appends resume
            progress = sum(writers.done)
            wait_until(lambda: sum(writers.done) >= progress + 3 * WRITERS or writers.errors, 30, 0.01,
                       "the writers to resume")
        finally:
            pause.close()
    assert not writers.errors, writers.errors
    try:
        assert count(p, "t") > paused["t"]
        wait_caught_up(p, s, name)
        assert_identical(p, s)
    finally:
        drop_subscription(s, name)


def test_diverged_subscriber_refuses_the_conflicting_replicated_row(pair):
    p, s = pair
    name = subscribe(p, s, copy_data=False)
    p.execute("INSERT INTO t (k, body) SELECT 7, 'p' || g FROM generate_series(1, 3) g")
    wait_caught_up(p, s, name)

    # The subscriber's chain 7 gets a record of its own, then the publisher's own 4th record arrives.
    # (Sequences do not replicate: the subscriber's own id is set by hand.)
    local = s.fetchone("INSERT INTO t (id, k, body) VALUES (1e9, 7, 'local') RETURNING seq, hash")
    assert local[0] == 4
    log_start = len(s.cluster.log())
    remote = p.fetchone("INSERT INTO t (k, body) VALUES (7, 'remote') RETURNING seq, hash")
    assert remote[0] == 4 and remote[1] != local[1]

    wait_until(lambda: not s.scalar("SELECT subenabled FROM pg_subscription WHERE subname = %s", (name,)),
               30, 0.05, "the apply worker to stop on the conflicting row")
    log = s.cluster.log()[log_start:]
    assert re.search(r"ERROR:  23514: supplied seq does not match the chain of ledger public\.t", log), log
    assert "Supplied 4, the chain requires 5." in log, log
    wait_until(lambda: s.scalar("SELECT apply_error_count FROM pg_stat_subscription_stats "
                                "WHERE subname = %s", (name,)), 10, 0.05, "the apply error to be counted")

    # No fork: chain 7 on the subscriber is still its own intact line, the local record at its head.
    assert s.fetchall("SELECT seq, hash FROM t WHERE k = 7 ORDER BY seq")[-1] == local
    assert_dense(s, {"7": 4}, tbl="t", chain_col="k")
    assert_clean(s, "t")
