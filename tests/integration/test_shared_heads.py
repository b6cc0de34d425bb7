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

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert_dense(pdb, committed, tbl="pay", chain_col="account")
    assert_clean(pdb, "pay")
