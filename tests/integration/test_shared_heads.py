"""Chain heads in shared memory (src/shared_heads.rs), on a server that preloads the library: appends
take the last committed head from there instead of the index, and what it cannot see (changes made
around the trigger by a superuser) is still caught: by the unique (chain, seq) index or by verify."""

from __future__ import annotations

import random
import subprocess
import threading
import uuid

import psycopg
import pytest

from ledgertest import PG_BIN, Cluster, assert_clean, assert_dense, behind_the_triggers, fresh_database

WRITERS = 8


@pytest.fixture(scope="module")
def preloaded():
    c = Cluster(ports=range(55490, 55500))
    c.start()
    with c.connect("postgres", autocommit=True) as admin:
        admin.execute("ALTER SYSTEM SET shared_preload_libraries = 'ledger'")
    subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(c.dir / "data"),
                    "-w", "-l", str(c.dir / "server.log"), "restart"], check=True, capture_output=True)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def pdb(preloaded, request):
    yield from fresh_database(preloaded, request)


def run_writers(writer, count: int = WRITERS):
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def make_ledger(db, chains: bool = True):
    db.execute("CREATE TABLE pay (id bigserial PRIMARY KEY, account text NOT NULL, amount int NOT NULL)")
    db.execute("SELECT ledger.enable('pay', chain_by => %s)", ("account" if chains else None,))


def append(db, account="a", amount=1):
    return db.fetchone("INSERT INTO pay (account, amount) VALUES (%s, %s) RETURNING seq, prev_hash, hash",
                       (account, amount))


def head(db, account="a"):
    return db.fetchone("SELECT seq, hash FROM pay WHERE account = %s ORDER BY seq DESC LIMIT 1", (account,))


def test_a_deleted_head_shows_as_a_gap(pdb):
    """The next append links to the head the last appender committed, not to what is left after a
    superuser deleted it: the deletion, invisible at the end of a chain, becomes a gap."""
    make_ledger(pdb)
    for i in range(3):
        append(pdb, amount=i)
    deleted = head(pdb)
    behind_the_triggers(pdb, "pay", "DELETE FROM pay WHERE account = 'a' AND seq = 3")
    seq, prev_hash, _ = append(pdb)
    assert (seq, prev_hash) == (4, deleted[1])
    assert [p for p in pdb.verify("pay")] == [("a", 4, "seq_gap"), ("a", 4, "prev_hash_mismatch")]


def test_without_the_setting_the_head_is_looked_up(pdb):
    """ledger.shared_heads = off reads the index, as a server without the preload does."""
    make_ledger(pdb)
    for i in range(3):
        append(pdb, amount=i)
    behind_the_triggers(pdb, "pay", "DELETE FROM pay WHERE account = 'a' AND seq = 3")
    pdb.execute("SET ledger.shared_heads = off")
    seq, prev_hash, _ = append(pdb)
    assert seq == 3 and prev_hash == pdb.scalar("SELECT hash FROM pay WHERE account = 'a' AND seq = 2")
    assert pdb.verify("pay") == []


def test_a_record_inserted_behind_the_trigger(pdb):
    """A record a superuser put after the head makes the next append collide in the (chain, seq)
    index (a clean 23505, nothing stored); the failed transaction drops the shared head, so the
    retry links after the forged record, which verify reports."""
    make_ledger(pdb)
    for i in range(2):
        append(pdb, amount=i)
    behind_the_triggers(pdb, "pay", "INSERT INTO pay (account, amount, seq, prev_hash, hash) "
                                    "VALUES ('a', 99, 3, repeat('0', 64), repeat('f', 64))")
    with pytest.raises(psycopg.errors.UniqueViolation):
        append(pdb)
    assert pdb.scalar("SELECT count(*) FROM pay") == 3
    seq, prev_hash, _ = append(pdb)
    assert (seq, prev_hash) == (4, "f" * 64)
    assert ("a", 3, "hash_mismatch") in pdb.verify("pay")


def test_the_collision_in_a_savepoint(pdb):
    """The same inside a transaction: the rolled-back savepoint drops the shared head, so the
    transaction's own retry, and its commit, go after the forged record."""
    make_ledger(pdb)
    append(pdb)
    append(pdb, "b")
    behind_the_triggers(pdb, "pay", "INSERT INTO pay (account, amount, seq, prev_hash, hash) "
                                    "VALUES ('a', 99, 2, repeat('0', 64), repeat('f', 64))")
    with pdb.connect() as conn:
        with conn.transaction():
            conn.execute("INSERT INTO pay (account, amount) VALUES ('b', 2)")
            with pytest.raises(psycopg.errors.UniqueViolation):
                with conn.transaction():
                    conn.execute("INSERT INTO pay (account, amount) VALUES ('a', 1)")
            assert conn.execute("INSERT INTO pay (account, amount) VALUES ('a', 2) RETURNING seq").fetchone() == (3,)
    assert pdb.fetchall("SELECT account, seq FROM pay ORDER BY account, seq") == [
        ("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2)]
    assert append(pdb)[0] == 4
    assert append(pdb, "b")[0] == 3
    assert [p for p in pdb.verify("pay") if p[0] == "b"] == []


def test_truncate_and_rewrite(pdb):
    """A table's new file (TRUNCATE behind the triggers, VACUUM FULL) is a new key: nothing stale."""
    make_ledger(pdb)
    for i in range(3):
        append(pdb, amount=i)
    pdb.execute("VACUUM FULL pay")
    assert append(pdb)[0] == 4
    behind_the_triggers(pdb, "pay", "TRUNCATE pay")
    assert append(pdb)[:2] == (1, None)
    assert_clean(pdb, "pay")


def test_prepared_transactions(pdb):
    """A prepared transaction commits (or not) in another session: its heads are looked up after."""
    make_ledger(pdb)
    append(pdb)
    for finish, expected in (("COMMIT PREPARED", 3), ("ROLLBACK PREPARED", 4)):
        gid = f"g{uuid.uuid4().hex}"
        with pdb.connect(autocommit=True) as conn:
            conn.execute("BEGIN")
            conn.execute("INSERT INTO pay (account, amount) VALUES ('a', 1)")
            conn.execute(f"PREPARE TRANSACTION '{gid}'")
        pdb.execute(f"{finish} '{gid}'")
        assert append(pdb)[0] == expected
    assert_dense(pdb, {"a": 4}, tbl="pay", chain_col="account")
    assert_clean(pdb, "pay")


def test_repeatable_read_still_fails_cleanly(pdb):
    """A snapshot older than the head is still a serialization failure, not a fork."""
    make_ledger(pdb)
    append(pdb)
    with pdb.connect() as rr:
        rr.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        rr.execute("SELECT count(*) FROM pay").fetchone()
        append(pdb)
        with pytest.raises(psycopg.errors.SerializationFailure):
            rr.execute("INSERT INTO pay (account, amount) VALUES ('a', 1)")
        rr.rollback()
    assert append(pdb)[0] == 3
    assert_clean(pdb, "pay")


@pytest.mark.parametrize("chains", ["one", "many"])
def test_concurrent_writers(pdb, chains):
    """8 writers, some reading the shared heads and some not (every one keeps them current), with
    rollbacks, savepoints and multi-chain transactions: dense chains, every committed row stored."""
    make_ledger(pdb)
    accounts = ["a"] if chains == "one" else [f"acct{i}" for i in range(6)]
    committed = {a: 0 for a in accounts}
    lock = threading.Lock()
    errors = []

    def writer(n: int):
        rng = random.Random(n)
        try:
            with pdb.connect(settings={"ledger.shared_heads": "on" if n % 3 else "off"}) as conn:
                for _ in range(120):
                    picked = sorted(rng.sample(accounts, min(len(accounts), rng.choice([1, 1, 2]))))
                    stored = {}
                    try:
                        with conn.transaction():
                            for a in picked:
                                conn.execute("INSERT INTO pay (account, amount) VALUES (%s, 1)", (a,))
                                stored[a] = stored.get(a, 0) + 1
                            if rng.random() < 0.2:
                                try:
                                    with conn.transaction():
                                        conn.execute("INSERT INTO pay (account, amount) VALUES (%s, 2)", (picked[0],))
                                        raise ValueError("roll back the savepoint")
                                except ValueError:
                                    pass
                            if rng.random() < 0.15:
                                raise KeyError("roll back the transaction")
                    except KeyError:
                        continue
                    except psycopg.errors.DeadlockDetected:
                        continue
                    with lock:
                        for a, k in stored.items():
                            committed[a] += k
        except Exception as e:  # surfaced below
            errors.append(e)

    run_writers(writer)
    assert errors == []
    assert_dense(pdb, committed, tbl="pay", chain_col="account")
    assert_clean(pdb, "pay")


def make_tracked(db):
    db.execute("CREATE TABLE acct (id int PRIMARY KEY, owner text NOT NULL, amount int NOT NULL)")
    db.execute("SELECT ledger.enable_history('acct')")


def newest_version(db, i: int):
    return db.fetchone("SELECT seq, hash FROM acct_history WHERE key = %s ORDER BY seq DESC LIMIT 1",
                       (f'{{"id": {i}}}',))


def test_history_a_deleted_version_shows_as_a_gap(pdb):
    """A history ledger's chains are kept too (their writers ordered by the tracked row's lock): the
    next version links to the one the last writer committed, not to what is left after a superuser
    deleted it from the history; with the setting off it is looked up."""
    make_tracked(pdb)
    pdb.execute("INSERT INTO acct VALUES (1, 'o', 0), (2, 'o', 0)")
    for i in range(2):
        pdb.execute("UPDATE acct SET amount = amount + 1")
    key = '{"id": 1}'
    deleted = newest_version(pdb, 1)
    behind_the_triggers(pdb, "acct_history", "DELETE FROM acct_history WHERE key = %s AND seq = 3", (key,))
    pdb.execute("UPDATE acct SET amount = amount + 1 WHERE id = 1")
    assert pdb.fetchone("SELECT seq, prev_hash FROM acct_history WHERE key = %s ORDER BY seq DESC LIMIT 1",
                        (key,)) == (4, deleted[1])
    assert pdb.verify("acct") == [(key, 4, "seq_gap"), (key, 4, "prev_hash_mismatch")]
    behind_the_triggers(pdb, "acct_history", "DELETE FROM acct_history WHERE key = '{\"id\": 2}' AND seq = 3")
    pdb.execute("SET ledger.shared_heads = off")
    pdb.execute("UPDATE acct SET amount = amount + 1 WHERE id = 2")
    assert newest_version(pdb, 2)[0] == 3
    assert [p for p in pdb.verify("acct") if p[0] == '{"id": 2}'] == []


def test_history_concurrent_writers(pdb):
    """8 writers, some reading the shared heads and some not, updating, deleting and re-inserting a
    few hot rows (a re-insert does not wait for the delete it follows, so it can come between that
    commit becoming visible and its writer's commit callback), with rollbacks and savepoints, at
    READ COMMITTED: one dense history chain per key, and the table is the replay of its history."""
    make_tracked(pdb)
    ids = list(range(1, 5))
    pdb.execute("INSERT INTO acct SELECT i, 'o', 0 FROM generate_series(1, 4) i")
    errors = []
    retried = (psycopg.errors.UniqueViolation, psycopg.errors.DeadlockDetected)

    def writer(n: int):
        rng = random.Random(n)
        try:
            with pdb.connect(settings={"ledger.shared_heads": "on" if n % 3 else "off"}) as conn:
                for _ in range(150):
                    i = rng.choice(ids)
                    try:
                        with conn.transaction():
                            op = rng.random()
                            if op < 0.25:
                                conn.execute("DELETE FROM acct WHERE id = %s", (i,))
                            elif op < 0.5:
                                # Not ON CONFLICT DO NOTHING, whose transactions look heads up.
                                conn.execute("INSERT INTO acct SELECT %s, 'o', 0 WHERE NOT EXISTS "
                                             "(SELECT FROM acct WHERE id = %s)", (i, i))
                            else:
                                conn.execute("UPDATE acct SET amount = amount + 1 WHERE id = %s", (i,))
                            if rng.random() < 0.2:
                                try:
                                    with conn.transaction():
                                        conn.execute("UPDATE acct SET amount = amount + 1 WHERE id = %s",
                                                     (rng.choice(ids),))
                                        raise ValueError("roll back the savepoint")
                                except ValueError:
                                    pass
                            if rng.random() < 0.15:
                                raise KeyError("roll back the transaction")
                    except (KeyError, *retried):
                        continue
        except Exception as e:  # surfaced below
            errors.append(e)

    run_writers(writer)
    assert errors == []
    gaps = pdb.fetchall("SELECT key, count(*), max(seq) FROM acct_history GROUP BY key HAVING count(*) <> max(seq) "
                        "OR min(seq) <> 1")
    assert gaps == []
    assert pdb.scalar("SELECT count(*) FROM acct_history") > 4 * 20
    assert pdb.verify("acct") == []


def test_history_a_writer_right_after_a_commit(pdb):
    """A writer of a tracked row waits for nothing once the previous writer's commit is visible,
    which is before that writer's commit callback leaves its heads in shared memory (here, 50,000
    of them: an UPDATE of every row). Writers trying each row with NOWAIT until the big UPDATE is
    visible come in between: each finds the row's entry claimed (not the head before the UPDATE),
    looks the head up, and links after the UPDATE's version."""
    make_tracked(pdb)
    rows = 50000
    pdb.execute("INSERT INTO acct SELECT i, 'o', 0 FROM generate_series(1, %s) i", (rows,))
    big = pdb.connect()
    big.execute("UPDATE acct SET amount = amount + 1")
    done = threading.Event()
    errors, stored = [], []

    def writer(n: int):
        rng = random.Random(n)
        try:
            with pdb.connect() as conn:
                while not done.is_set() or len(stored) < 200:
                    i = rng.randint(1, rows)
                    try:
                        with conn.transaction():
                            conn.execute("SELECT FROM acct WHERE id = %s FOR UPDATE NOWAIT", (i,))
                            conn.execute("UPDATE acct SET amount = amount + 1 WHERE id = %s", (i,))
                        stored.append(i)
                    except psycopg.errors.LockNotAvailable:
                        continue
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    big.commit()
    done.set()
    for t in threads:
        t.join()
    big.close()
    assert errors == []
    assert pdb.scalar("SELECT count(*) FROM acct_history") == 2 * rows + len(stored)
    assert pdb.fetchall("SELECT key FROM acct_history GROUP BY key HAVING count(*) <> max(seq)") == []
    assert pdb.verify("acct") == []
