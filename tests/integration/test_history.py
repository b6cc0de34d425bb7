"""History-tracked tables (ledger.enable_history) under real concurrent connections, and through
pg_dump and restore.

- Eight writers updating ONE hot row at READ COMMITTED, REPEATABLE READ and SERIALIZABLE, with whole
  rollbacks and ROLLBACK TO SAVEPOINT mixed in, the only failures clean 40001/40P01 that are
  retried: the key's chain is dense, holds exactly one version per committed UPDATE (each carries a
  unique token) and none of a rolled-back one, its versions are in the order the updates were
  applied (a counter incremented by each is its seq - 1), the newest version is the row, and
  ledger.verify is empty.
- Eight writers on many rows with inserts, updates, deletes, multi-row UPDATEs, MERGE, INSERT ... ON
  CONFLICT DO UPDATE and primary-key changes: per key, the versions are exactly the committed row
  changes (counted from RETURNING / MERGE's row count), chains dense, verify empty, as_of(now()) is
  the table; writers on different keys do not wait for each other, writers on the same key wait on
  its row lock.
- The applications' unit of work: created -> active -> done by plain UPDATEs of different roles;
  ledger.history shows the three versions with actors and reasons, as_of between the transitions
  gives the status of the time, and a superuser's edit behind the trigger is a state_mismatch.
- pg_dump / restore (plain and custom): verify empty, ledger.history identical, and updates after the
  restore continue the same chains densely; tampering after the restore is still caught.
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from psycopg import IsolationLevel, errors
from psycopg.types.json import Jsonb

from ledgertest import Database, assert_dense, backend_wait, wait_until

WRITERS = 8
RETRYABLE = (errors.SerializationFailure, errors.DeadlockDetected)  # 40001, 40P01
LEVELS = [pytest.param(IsolationLevel.READ_COMMITTED, id="read_committed"),
          pytest.param(IsolationLevel.REPEATABLE_READ, id="repeatable_read"),
          pytest.param(IsolationLevel.SERIALIZABLE, id="serializable")]


def key(**columns) -> str:
    """A key as the history spells it (jsonb's text form of the primary-key object)."""
    return json.dumps(columns, separators=(", ", ": "))


def versions(db: Database, tbl: str, k: dict) -> list[tuple]:
    """ledger.history(tbl, k) as (seq, op, role, row)."""
    return [tuple(r) for r in db.fetchall(
        'SELECT seq, op, role::text, "row" FROM ledger.history(%s::regclass, %s)', (tbl, Jsonb(k)))]


def run_all(workers, timeout: float = 120):
    """Runs `worker(barrier)` of each on its own thread at once; re-raises the first error."""
    barrier = threading.Barrier(len(workers))
    with ThreadPoolExecutor(len(workers)) as pool:
        futures = [pool.submit(w, barrier) for w in workers]
        return [f.result(timeout=timeout) for f in futures]


# ---- one hot row -------------------------------------------------------------------------------

HOT_TRANSACTIONS = 40  # committed per writer


class HotWriter:
    """Commits HOT_TRANSACTIONS transactions updating row 1, each update setting a unique token.
    `committed`: the tokens of updates that committed, in commit order; `discarded`: those rolled
    back (whole transaction, to a savepoint, or by a 40001/40P01)."""

    def __init__(self, db: Database, wid: int, level):
        self.db, self.wid, self.level = db, wid, level
        self.rng = random.Random(7000 + wid)
        self.committed: list[str] = []
        self.discarded: list[str] = []
        self.shapes: Counter = Counter()
        self.n = 0

    def token(self) -> str:
        self.n += 1
        return f"w{self.wid}-{self.n}"

    def update(self, cur, token: str) -> None:
        cur.execute("UPDATE hot SET n = n + 1, token = %s WHERE id = 1", (token,))
        assert cur.rowcount == 1

    def __call__(self, barrier) -> "HotWriter":
        conn = self.db.connect(isolation_level=self.level)
        barrier.wait(timeout=30)
        done = 0
        while done < HOT_TRANSACTIONS:
            kept, thrown = [], []
            shape = self.rng.random()
            try:
                with conn.cursor() as cur:
                    if shape < 0.15:
                        thrown.append(self.token())
                        self.update(cur, thrown[-1])
                        conn.rollback()
                        self.discarded += thrown
                        self.shapes["rollback"] += 1
                        continue
                    if shape < 0.45:
                        # UPDATE, SAVEPOINT, UPDATE(s), ROLLBACK TO SAVEPOINT, maybe one more UPDATE.
                        kept.append(self.token())
                        self.update(cur, kept[-1])
                        cur.execute("SAVEPOINT s1")
                        for _ in range(self.rng.randint(1, 2)):
                            thrown.append(self.token())
                            self.update(cur, thrown[-1])
                        cur.execute("ROLLBACK TO SAVEPOINT s1")
                        if self.rng.random() < 0.5:
                            kept.append(self.token())
                            self.update(cur, kept[-1])
                        self.shapes["savepoint"] += 1
                    else:
                        for _ in range(self.rng.randint(1, 2)):
                            kept.append(self.token())
                            self.update(cur, kept[-1])
                        self.shapes["plain"] += 1
                conn.commit()
            except RETRYABLE as e:
                conn.rollback()
                self.discarded += kept + thrown
                self.shapes[e.sqlstate] += 1
                continue
            self.committed += kept
            self.discarded += thrown
            done += 1
        conn.close()
        return self


@pytest.mark.parametrize("level", LEVELS)
def test_eight_writers_on_one_hot_row(db, level):
    db.execute("CREATE TABLE hot (id int PRIMARY KEY, n int NOT NULL, token text)")
    db.execute("INSERT INTO hot VALUES (1, 0, 'initial')")
    db.execute("SELECT ledger.enable_history('hot')")
    writers = run_all([HotWriter(db, w, level) for w in range(WRITERS)])

    committed = [t for w in writers for t in w.committed]
    history = versions(db, "hot", {"id": 1})
    assert [seq for seq, *_ in history] == list(range(1, len(committed) + 2))  # dense 1..N
    assert history[0][1:] == ("insert", "postgres", {"id": 1, "n": 0, "token": "initial"})
    assert {op for _, op, _, _ in history[1:]} == {"update"}
    tokens = [row["token"] for *_, row in history[1:]]
    # Exactly one version per committed update, none of a rolled-back one.
    assert Counter(tokens) == Counter(committed)
    assert not set(tokens) & {t for w in writers for t in w.discarded}
    # In the order the updates were applied: each version's counter is one more than the last, and
    # each writer's tokens appear in its commit order.
    assert [row["n"] for *_, row in history] == list(range(len(history)))
    for w in writers:
        assert [t for t in tokens if t.startswith(f"w{w.wid}-")] == w.committed
    assert history[-1][3] == db.scalar("SELECT to_jsonb(h) FROM hot h WHERE id = 1")
    assert db.verify("hot") == []
    assert_dense(db, {key(id=1): len(committed) + 1}, tbl="hot_history", chain_col="key")
    shapes = sum((w.shapes for w in writers), Counter())
    assert shapes["rollback"] and shapes["savepoint"] and shapes["plain"], shapes
    if level != IsolationLevel.READ_COMMITTED:
        assert shapes["40001"] > 0, shapes  # concurrent updates of one row must have collided


# ---- many rows ---------------------------------------------------------------------------------

SHARED_KEYS = range(1, 41)  # keys every writer touches; 1-20 exist before tracking starts
MANY_TRANSACTIONS = 60  # committed per writer


class ManyWriter:
    """Random transactions of 1-3 statements over the shared keys and a key range of its own (where
    MERGE inserts, updates and deletes, and primary keys move). `versions`: per key, the row changes
    of committed statements, each one version."""

    def __init__(self, db: Database, wid: int, level):
        self.db, self.wid, self.level = db, wid, level
        self.rng = random.Random(9000 + wid)
        self.own = [1000 + 100 * wid + i for i in range(10)]  # MERGE's keys
        self.moved = 100000 + 1000 * wid  # primary keys moved to here, never reused
        self.versions: Counter = Counter()
        self.shapes: Counter = Counter()

    def statement(self, cur) -> Counter:
        """Runs one random statement; returns the versions it made, per key."""
        rng, made = self.rng, Counter()
        shape = rng.random()
        k = rng.choice(SHARED_KEYS)
        if shape < 0.15:
            cur.execute("INSERT INTO items VALUES (%s, 0, 'inserted') ON CONFLICT DO NOTHING RETURNING id", (k,))
            name = "insert"
        elif shape < 0.35:
            cur.execute("INSERT INTO items VALUES (%s, 0, 'upserted') ON CONFLICT (id) DO UPDATE "
                        "SET qty = items.qty + 1, note = 'upserted' RETURNING id", (k,))
            name = "upsert"
        elif shape < 0.55:
            cur.execute("UPDATE items SET qty = qty + 1, note = %s WHERE id = %s RETURNING id", (f"w{self.wid}", k))
            name = "update"
        elif shape < 0.67:
            keys = rng.sample(SHARED_KEYS, rng.randint(2, 5))
            cur.execute("UPDATE items SET qty = qty + 10 WHERE id = ANY(%s) RETURNING id", (keys,))
            name = "multi_update"
        elif shape < 0.77:
            cur.execute("DELETE FROM items WHERE id = %s RETURNING id", (k,))
            name = "delete"
        elif shape < 0.80:
            # A primary-key change: the old key's chain ends with a delete, the new key's starts.
            self.moved += 1
            cur.execute("UPDATE items SET id = %s WHERE id = %s RETURNING id", (self.moved, k))
            if cur.rowcount:
                made[key(id=k)] += 1
            name = "move_key"
        else:
            # MERGE over keys of its own: each source key gets exactly one version (insert, update
            # or delete), which its row count confirms (PostgreSQL 15's MERGE has no RETURNING).
            keys = rng.sample(self.own, rng.randint(1, 3))
            cur.execute("MERGE INTO items t USING (SELECT unnest(%s::int[]) AS id) s ON t.id = s.id "
                        "WHEN MATCHED AND t.qty >= 2 THEN DELETE "
                        "WHEN MATCHED THEN UPDATE SET qty = t.qty + 1, note = 'merged' "
                        "WHEN NOT MATCHED THEN INSERT VALUES (s.id, 0, 'merged')", (keys,))
            assert cur.rowcount == len(keys)
            self.shapes["merge"] += 1
            return Counter(key(id=k) for k in keys)
        for (returned,) in cur.fetchall():
            made[key(id=returned)] += 1
        self.shapes[name] += 1
        return made

    def __call__(self, barrier) -> "ManyWriter":
        conn = self.db.connect(isolation_level=self.level)
        barrier.wait(timeout=30)
        done = 0
        while done < MANY_TRANSACTIONS:
            made = Counter()
            try:
                with conn.cursor() as cur:
                    for _ in range(self.rng.randint(1, 3)):
                        if self.rng.random() < 0.15:
                            cur.execute("SAVEPOINT s1")
                            self.statement(cur)
                            cur.execute("ROLLBACK TO SAVEPOINT s1")
                            self.shapes["savepoint_rollback"] += 1
                        else:
                            made += self.statement(cur)
                    if self.rng.random() < 0.1:
                        conn.rollback()
                        self.shapes["rollback"] += 1
                        continue
                conn.commit()
            except RETRYABLE as e:
                conn.rollback()
                self.shapes[e.sqlstate] += 1
                continue
            self.versions += made
            done += 1
        conn.close()
        return self


@pytest.mark.parametrize("level", [LEVELS[0], LEVELS[2]])
def test_eight_writers_on_many_rows(db, level):
    db.execute("CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, note text)")
    db.execute("INSERT INTO items SELECT g, 0, 'before' FROM generate_series(1, 20) g")
    db.execute("SELECT ledger.enable_history('items')")
    writers = run_all([ManyWriter(db, w, level) for w in range(WRITERS)])

    expected = Counter({key(id=k): 1 for k in range(1, 21)})  # enable_history's first versions
    for w in writers:
        expected += w.versions
    assert_dense(db, expected, tbl="items_history", chain_col="key")
    assert db.verify("items") == []
    assert db.scalar("SELECT array_agg(i ORDER BY id) FROM ledger.as_of(NULL::items, now()) i") == \
        db.scalar("SELECT array_agg(i ORDER BY id) FROM items i")
    shapes = sum((w.shapes for w in writers), Counter())
    for shape in ("insert", "upsert", "update", "multi_update", "delete", "move_key", "merge",
                  "savepoint_rollback", "rollback"):
        assert shapes[shape] > 0, shapes


def test_writers_on_different_keys_do_not_wait(db):
    """A holds an update of key 1 open; B's update of key 2 and insert of key 3 commit at once; C's
    update of key 1 waits for A's row lock, then is the version after A's."""
    db.execute("CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, note text)")
    db.execute("INSERT INTO items VALUES (1, 0, 'a'), (2, 0, 'b')")
    db.execute("SELECT ledger.enable_history('items')")
    a = db.connect()
    b = db.connect(settings={"lock_timeout": "2s", "statement_timeout": "5s"})
    c = db.connect()
    a.execute("UPDATE items SET qty = 1, note = 'by a' WHERE id = 1")

    started = time.monotonic()
    b.execute("UPDATE items SET qty = 1, note = 'by b' WHERE id = 2")
    b.execute("INSERT INTO items VALUES (3, 0, 'by b')")
    b.commit()
    assert time.monotonic() - started < 2.0

    result = {}

    def c_update():
        try:
            c.execute("UPDATE items SET qty = qty + 1, note = 'by c' WHERE id = 1")
            c.commit()
            result["ok"] = True
        except Exception as e:  # reported below
            result["error"] = e

    thread = threading.Thread(target=c_update)
    thread.start()
    try:
        wait = wait_until(lambda: (lambda w: w if w and w[0] == "Lock" else None)(
            backend_wait(db, c.info.backend_pid)), timeout=10, what="C to wait on a lock")
        assert wait[1] == "transactionid", wait  # A's row lock, taken before any chain lock
        assert db.scalar("SELECT pg_blocking_pids(%s)", (c.info.backend_pid,)) == [a.info.backend_pid]
        # Meanwhile B still does not wait.
        started = time.monotonic()
        b.execute("UPDATE items SET qty = 2 WHERE id = 2")
        b.commit()
        assert time.monotonic() - started < 2.0
        assert thread.is_alive()
        a.commit()
    finally:
        thread.join(timeout=20)
    assert result == {"ok": True}, result
    assert [(seq, op, row["qty"], row["note"]) for seq, op, _, row in versions(db, "items", {"id": 1})] == [
        (1, "insert", 0, "a"), (2, "update", 1, "by a"), (3, "update", 2, "by c")]
    assert_dense(db, {key(id=1): 3, key(id=2): 3, key(id=3): 1}, tbl="items_history", chain_col="key")
    assert db.verify("items") == []


# ---- the applications' unit of work --------------------------------------------------------------


@pytest.fixture
def clerks(db):
    """Two login roles (cluster-wide, so uniquely named) that may read and update work_units only."""
    names = [f"lt_clerk_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for name in names:
        db.execute(f'CREATE ROLE "{name}" LOGIN')
    yield names
    db.close_all()
    with db.cluster.connect(db.name, autocommit=True) as admin:
        for name in names:
            admin.execute(f'DROP OWNED BY "{name}"')
            admin.execute(f'DROP ROLE "{name}"')


def test_unit_of_work_flow(db, clerks):
    db.execute("CREATE TABLE work_units (id uuid PRIMARY KEY, status text NOT NULL, actor text NOT NULL, "
               "reason text, updated_at timestamptz NOT NULL DEFAULT now())")
    db.execute("SELECT ledger.enable_history('work_units')")
    for clerk in clerks:
        db.execute(f'GRANT SELECT, UPDATE ON work_units TO "{clerk}"')
    unit = uuid.uuid4()
    other = uuid.uuid4()
    before = db.scalar("SELECT clock_timestamp()")
    db.execute("INSERT INTO work_units (id, status, actor, reason) VALUES (%s, 'created', 'ann', 'opened'), "
               "(%s, 'created', 'ann', 'unrelated')", (unit, other))
    moments = [db.scalar("SELECT clock_timestamp()")]
    for clerk, status, actor, reason in ((clerks[0], "active", "bob", "picked up"),
                                         (clerks[1], "done", "cy", "finished")):
        conninfo = psycopg.conninfo.make_conninfo(db.cluster.conninfo(db.name), user=clerk)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            cur = conn.execute("UPDATE work_units SET status = %s, actor = %s, reason = %s, updated_at = now() "
                               "WHERE id = %s", (status, actor, reason, unit))
            assert cur.rowcount == 1
        moments.append(db.scalar("SELECT clock_timestamp()"))

    history = versions(db, "work_units", {"id": str(unit)})
    assert [(seq, op, role, row["status"], row["actor"], row["reason"]) for seq, op, role, row in history] == [
        (1, "insert", "postgres", "created", "ann", "opened"),
        (2, "update", clerks[0], "active", "bob", "picked up"),
        (3, "update", clerks[1], "done", "cy", "finished")]
    assert history[-1][3] == db.scalar("SELECT to_jsonb(w) FROM work_units w WHERE id = %s", (unit,))

    def status_at(moment):
        return db.fetchall("SELECT id, status FROM ledger.as_of(NULL::work_units, %s) ORDER BY status, id",
                           (moment,))

    assert status_at(before) == []
    assert status_at(moments[0]) == sorted([(unit, "created"), (other, "created")], key=lambda r: str(r[0]))
    assert status_at(moments[1]) == [(unit, "active"), (other, "created")]
    assert status_at(moments[2]) == [(other, "created"), (unit, "done")]
    assert db.verify("work_units") == []

    # A superuser behind the trigger: the row is no longer the replay of its history.
    db.execute("ALTER TABLE work_units DISABLE TRIGGER zz_ledger_history")
    db.execute("UPDATE work_units SET status = 'created' WHERE id = %s", (unit,))
    db.execute("ALTER TABLE work_units ENABLE ALWAYS TRIGGER zz_ledger_history")
    assert db.verify_details("work_units") == [
        (key(id=str(unit)), 3, "state_mismatch", "the row differs from the history's last version (seq 3)")]
    assert db.verify("work_units", key(id=str(other))) == []
    # The history still says done: ledger.history and as_of are the record, not the table.
    assert versions(db, "work_units", {"id": str(unit)}) == history


# ---- dump and restore ----------------------------------------------------------------------------

PG_BIN = "/usr/lib/postgresql/15/bin"


def pg(cluster, *args: str) -> subprocess.CompletedProcess:
    base = ["-h", cluster.socket_dir, "-p", str(cluster.port), "-U", "postgres"]
    return subprocess.run([f"{PG_BIN}/{args[0]}", *base, *args[1:]], capture_output=True, text=True,
                          check=True, timeout=120)


def all_versions(db: Database) -> list[tuple]:
    keys = [json.loads(k) for k, in db.fetchall("SELECT DISTINCT key FROM acct_history ORDER BY key")]
    return [(k, [tuple(r) for r in db.fetchall(
        'SELECT seq, op, at, role::text, "row", hash FROM ledger.history(\'acct\', %s)', (Jsonb(k),))])
        for k in keys]


@pytest.mark.parametrize("fmt", ["plain", "custom"])
def test_dump_and_restore_keep_the_history(cluster, db, target, tmp_path, fmt):
    db.execute("CREATE TABLE acct (id int PRIMARY KEY, owner text NOT NULL, balance numeric NOT NULL)")
    db.execute("INSERT INTO acct SELECT g, 'o' || g, g * 1.50 FROM generate_series(1, 6) g")
    db.execute("SELECT ledger.enable_history('acct')")
    conns = [db.connect(autocommit=True) for _ in range(3)]  # heap order is not chain order
    for i in range(30):
        conns[i % 3].execute("UPDATE acct SET balance = balance + 1 WHERE id = %s", (i % 6 + 1,))
    conns[0].execute("DELETE FROM acct WHERE id = 6")
    conns[1].execute("UPDATE acct SET id = 7 WHERE id = 5")
    conns[2].execute("INSERT INTO acct VALUES (8, 'new', 0.10)")
    before = all_versions(db)
    assert db.verify("acct") == []
    dump = tmp_path / "history.dump"
    if fmt == "plain":
        pg(cluster, "pg_dump", "-d", db.name, "-f", str(dump))
        pg(cluster, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", target.name, "-f", str(dump))
    else:
        pg(cluster, "pg_dump", "-Fc", "-d", db.name, "-f", str(dump))
        pg(cluster, "pg_restore", "--exit-on-error", "-d", target.name, str(dump))

    assert target.fetchall("SELECT tbl::text, history::text, key_columns::text[] FROM ledger.tracked") == [
        ("acct", "acct_history", ["id"])]
    assert target.verify("acct") == []
    assert all_versions(target) == before
    assert target.fetchall("SELECT * FROM acct ORDER BY id") == db.fetchall("SELECT * FROM acct ORDER BY id")
    counts = dict(target.fetchall("SELECT key, count(*) FROM acct_history GROUP BY key"))

    # The restored table is tracked: changes continue the same chains.
    target.execute("UPDATE acct SET balance = 0 WHERE id IN (1, 2)")
    target.execute("DELETE FROM acct WHERE id = 3")
    target.execute("INSERT INTO acct VALUES (6, 'back', 1)")
    for k in (1, 2, 3, 6):
        counts[key(id=k)] += 1
    assert_dense(target, counts, tbl="acct_history", chain_col="key")
    assert [op for _, op, _, _ in versions(target, "acct", {"id": 6})][-2:] == ["delete", "insert"]
    assert target.verify("acct") == []
    # Its guards are back too: TRUNCATE refused, a change behind the trigger caught.
    with pytest.raises(psycopg.Error) as refused:
        target.execute("TRUNCATE acct")
    assert refused.value.sqlstate == "23001"
    target.execute("ALTER TABLE acct DISABLE TRIGGER zz_ledger_history")
    target.execute("UPDATE acct SET owner = 'mallory' WHERE id = 4")
    target.execute("ALTER TABLE acct ENABLE ALWAYS TRIGGER zz_ledger_history")
    assert target.verify("acct") == [(key(id=4), counts[key(id=4)], "state_mismatch")]


# ---- found while testing, and fixed ------------------------------------------------------------


def test_as_of_follows_the_order_versions_were_committed(db):
    db.execute("CREATE TABLE hot (id int PRIMARY KEY, n int NOT NULL, token text)")
    db.execute("INSERT INTO hot VALUES (1, 0, 'initial')")
    db.execute("SELECT ledger.enable_history('hot')")
    t1, t2 = db.connect(), db.connect()
    t1.execute("SELECT now()")  # T1 starts first ...
    t2.execute("UPDATE hot SET n = n + 1, token = 'b' WHERE id = 1")
    t2.commit()  # ... T2 updates and commits
    between = db.scalar("SELECT clock_timestamp()")
    t1.execute("UPDATE hot SET n = n + 1, token = 'a' WHERE id = 1")
    t1.commit()  # then T1 updates after T2's commit
    assert [row["token"] for *_, row in versions(db, "hot", {"id": 1})] == ["initial", "b", "a"]
    # At `between` the table held T2's row: T1 had not written anything yet.
    assert db.fetchall("SELECT n, token FROM ledger.as_of(NULL::hot, %s)", (between,)) == [(1, "b")]


SESSION_SETTINGS = {"TimeZone": "Asia/Kolkata", "IntervalStyle": "iso_8601", "bytea_output": "escape"}


@pytest.fixture
def typed(db):
    db.execute("CREATE TABLE ev (at timestamptz PRIMARY KEY, d interval, b bytea, note text)")
    db.execute("INSERT INTO ev VALUES ('2026-01-01 00:00:00+00', '1 day 2 hours', '\\x01', 'x')")
    db.execute("SELECT ledger.enable_history('ev')")
    assert db.verify("ev") == []
    return db


@pytest.mark.parametrize("setting", list(SESSION_SETTINGS))
def test_verify_does_not_depend_on_session_settings(typed, setting):
    conn = typed.connect(autocommit=True, settings={setting: SESSION_SETTINGS[setting]})
    assert conn.execute("SELECT chain, seq, problem FROM ledger.verify('ev')").fetchall() == []


def test_writes_from_another_time_zone_continue_the_same_chain(typed):
    conn = typed.connect(autocommit=True, settings={"TimeZone": "Asia/Kolkata"})
    conn.execute("UPDATE ev SET note = 'from Kolkata'")
    assert typed.fetchall("SELECT key, seq, op FROM ev_history ORDER BY key, seq") == [
        ('{"at": "2026-01-01T00:00:00+00:00"}', 1, "insert"), ('{"at": "2026-01-01T00:00:00+00:00"}', 2, "update")]
    assert typed.verify("ev") == []


def test_verify_all_counts_the_state_problems(db):
    db.execute("CREATE TABLE acct (id int PRIMARY KEY, owner text NOT NULL)")
    db.execute("INSERT INTO acct VALUES (1, 'ann'), (2, 'bob')")
    db.execute("SELECT ledger.enable_history('acct')")
    db.execute("ALTER TABLE acct DISABLE TRIGGER zz_ledger_history")
    db.execute("UPDATE acct SET owner = 'mallory' WHERE id = 2")
    db.execute("ALTER TABLE acct ENABLE ALWAYS TRIGGER zz_ledger_history")
    assert db.verify("acct") == [(key(id=2), 1, "state_mismatch")]
    problems = dict(db.fetchall("SELECT ledger::text, problems FROM ledger.verify_all()"))
    assert sum(problems.values()) == 1, problems


def test_a_key_is_read_as_its_columns_types(db):
    """ledger.history, ledger.verify(tbl, key) and ledger.redact name a row by its primary key
    however its values are spelled: 2.0 for an integer, a time at another offset, set in any
    session time zone; what is no key of the table is 22023."""
    db.execute("CREATE TABLE slots (id int, at timestamptz, note text, PRIMARY KEY (id, at))")
    db.execute("INSERT INTO slots VALUES (2, '2026-01-01 00:00 UTC', 'a')")
    db.execute("SELECT ledger.enable_history('slots')")
    db.execute("UPDATE slots SET note = 'b'")
    db.execute("SET TimeZone = 'Asia/Kolkata'")
    for key in ('{"id": 2, "at": "2026-01-01T00:00:00+00:00"}', '{"id": 2.0, "at": "2026-01-01T01:00:00+01:00"}',
                '{"at": "2025-12-31 19:00:00-05", "id": 2e0}'):
        assert [r[1] for r in db.fetchall("SELECT * FROM ledger.history('slots', %s)", (key,))] == ["insert", "update"], key
        assert db.fetchall("SELECT * FROM ledger.verify('slots', %s)", (key,)) == []
    assert db.fetchall("SELECT * FROM ledger.history('slots', %s)", ('{"id": 3, "at": "2026-01-01T00:00:00Z"}',)) == []
    for key, state in (('nonsense', "22023"), ('{"id": 2}', "22023"), ('{"id": 2.5, "at": "2026-01-01Z"}', "22P02")):
        with pytest.raises(psycopg.Error) as refused:
            db.execute("SELECT * FROM ledger.verify('slots', %s)", (key,))
        assert refused.value.sqlstate == state, (key, refused.value)
