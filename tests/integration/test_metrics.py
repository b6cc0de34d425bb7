"""Counters since server start (src/metrics.rs), on a server that preloads the library: appends are
counted when they commit (never for rolled-back transactions or savepoints), refusals by kind,
verification runs; ledger.stats reads them, and a server that does not preload reports them as
unavailable rather than as zeros."""

from __future__ import annotations

import os
import subprocess
import threading
import uuid

import psycopg
import pytest

from ledgertest import PG_BIN, Cluster, fresh_database

pytestmark = pytest.mark.usefixtures("preloaded")


@pytest.fixture(scope="module")
def preloaded():
    c = Cluster(ports=range(55460, 55470))
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


def counters(db, tbl):
    return db.fetchone("SELECT appends, refusals, verify_runs, last_append IS NOT NULL FROM ledger.stats "
                       "WHERE ledger = %s", (tbl,))


def refusals(db, tbl):
    return dict(db.fetchall("SELECT kind, refusals FROM ledger.refusals WHERE ledger = %s", (tbl,)))


def make_ledger(db):
    db.execute("CREATE TABLE pay (id bigserial PRIMARY KEY, account text NOT NULL, amount int NOT NULL)")
    db.execute("SELECT ledger.enable('pay', chain_by => 'account')")


def test_appends_counted_at_commit(pdb):
    make_ledger(pdb)
    assert pdb.scalar("SELECT ledger.counters_available()") is True
    assert counters(pdb, "public.pay") == (0, 0, 0, False)
    pdb.execute("INSERT INTO pay (account, amount) SELECT 'a' || (i % 5), i FROM generate_series(1, 100) i")
    assert counters(pdb, "public.pay")[0] == 100
    with pdb.connect() as conn:  # a rolled-back transaction appended nothing
        conn.execute("INSERT INTO pay (account, amount) VALUES ('a1', 1), ('b', 2)")
        conn.rollback()
        conn.execute("INSERT INTO pay (account, amount) VALUES ('a1', 1)")
        conn.execute("SAVEPOINT s")
        conn.execute("INSERT INTO pay (account, amount) VALUES ('a1', 2), ('c', 3)")
        conn.execute("ROLLBACK TO SAVEPOINT s")
        conn.execute("INSERT INTO pay (account, amount) VALUES ('a2', 4)")
        assert counters(pdb, "public.pay")[0] == 100  # not before commit
        conn.commit()
    appends, _, _, has_time = counters(pdb, "public.pay")
    assert appends == 102 == pdb.scalar("SELECT count(*) FROM pay")
    assert has_time
    assert pdb.scalar("SELECT last_append <= now() + interval '1 second' FROM ledger.stats "
                      "WHERE ledger = 'public.pay'") is True


def test_concurrent_appends_counted_exactly(pdb):
    make_ledger(pdb)
    errors = []

    def writer(n):
        try:
            with pdb.connect(autocommit=True) as conn:
                for i in range(50):
                    conn.execute("INSERT INTO pay (account, amount) VALUES (%s, %s)", (f"w{n % 3}", i))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert counters(pdb, "public.pay")[0] == 400 == pdb.scalar("SELECT count(*) FROM pay")
    assert pdb.scalar("SELECT records FROM ledger.stats WHERE ledger = 'public.pay'") == 400


def test_refusals_by_kind(pdb):
    make_ledger(pdb)
    pdb.execute("INSERT INTO pay (account, amount) VALUES ('a', 1)")
    owner = f"metrics_owner_{uuid.uuid4().hex[:8]}"
    pdb.execute(f'CREATE ROLE "{owner}" LOGIN')
    pdb.execute(f'GRANT CREATE ON SCHEMA public TO "{owner}"')  # a rename needs it before the guards run
    try:
        pdb.execute(f'ALTER TABLE pay OWNER TO "{owner}"')
        statements = [
            ("UPDATE pay SET amount = 2", psycopg.errors.RestrictViolation),
            ("DELETE FROM pay", psycopg.errors.RestrictViolation),
            ("TRUNCATE pay", psycopg.errors.RestrictViolation),
            ("INSERT INTO pay (account, amount, seq) VALUES ('a', 1, 7)", psycopg.errors.CheckViolation),
            ("INSERT INTO pay (account, amount, prev_hash) VALUES ('a', 1, repeat('0', 64))",
             psycopg.errors.CheckViolation),
        ]
        for statement, error in statements:
            with pytest.raises(error):
                pdb.execute(statement)
        # DDL by the owner (not a superuser), refused by the guards.
        with psycopg.connect(psycopg.conninfo.make_conninfo(pdb.cluster.conninfo(pdb.name), user=owner),
                             autocommit=True) as conn:
            for statement in ("ALTER TABLE pay DROP COLUMN amount", "ALTER TABLE pay RENAME TO paid",
                              "DROP TABLE pay", "ALTER TABLE pay ALTER COLUMN amount TYPE bigint"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):  # for monitoring roles only
                conn.execute("SELECT * FROM ledger.refusals")
        pdb.execute("SELECT ledger.retire('pay', 'closed')")
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
            pdb.execute("INSERT INTO pay (account, amount) VALUES ('a', 1)")
        assert refusals(pdb, "public.pay") == {"update": 1, "delete": 1, "truncate": 1, "ddl": 4,
                                               "forged_link": 2, "retired": 1}
        assert counters(pdb, "public.pay")[1] == 10
        # Calling the guards' counter by hand is refused and counts nothing.
        with pytest.raises(psycopg.errors.EventTriggerProtocolViolated):
            pdb.execute("SELECT ledger.count_guard_refusal('pay'::regclass, 'ddl_command_end')")
        assert refusals(pdb, "public.pay")["ddl"] == 4
    finally:
        pdb.execute("ALTER TABLE pay OWNER TO postgres")
        pdb.execute(f'REVOKE CREATE ON SCHEMA public FROM "{owner}"')
        pdb.execute(f'DROP ROLE "{owner}"')


def test_verify_runs_counted_and_enable_resets(pdb):
    make_ledger(pdb)
    for _ in range(3):
        assert pdb.verify("pay") == []
    pdb.execute("SELECT count(*) FROM ledger.verify_all()")
    assert counters(pdb, "public.pay")[2] == 4
    assert pdb.scalar("SELECT last_verify_problems FROM ledger.stats WHERE ledger = 'public.pay'") == 0
    # A new ledger that reuses nothing starts at zero.
    pdb.execute("CREATE TABLE other (id int PRIMARY KEY)")
    pdb.execute("SELECT ledger.enable('other')")
    assert counters(pdb, "public.other") == (0, 0, 0, False)


@pytest.mark.skipif(os.environ.get("LEDGER_PYTEST_PRELOAD") == "1", reason="this run's cluster preloads")
def test_unavailable_without_preloading(db):
    """The default integration cluster does not preload: no numbers rather than wrong ones."""
    db.execute("CREATE TABLE pay (id int PRIMARY KEY, account text NOT NULL)")
    db.execute("SELECT ledger.enable('pay', chain_by => 'account')")
    db.execute("INSERT INTO pay VALUES (1, 'a')")
    with pytest.raises(psycopg.errors.RestrictViolation):
        db.execute("DELETE FROM pay")
    assert db.scalar("SELECT ledger.counters_available()") is False
    assert db.fetchone("SELECT records, appends, refusals, verify_runs, last_append FROM ledger.stats "
                       "WHERE ledger = 'public.pay'") == (1, None, None, None, None)
    assert db.scalar("SELECT count(*) FROM ledger.refusals") == 0


def test_verify_all_goes_on_past_a_ledger_it_cannot_read(pdb):
    """A ledger locked by another session (lock_timeout) is recorded as a failed run with its
    error; the other ledgers are verified in the same run."""
    make_ledger(pdb)
    pdb.execute("INSERT INTO pay (account, amount) VALUES ('a', 1)")
    with pdb.connect() as locker:
        locker.execute("LOCK TABLE pay IN ACCESS EXCLUSIVE MODE")
        with pdb.connect(autocommit=True) as auditor:
            auditor.execute("SET lock_timeout = '300ms'")
            runs = {r[0]: r[1:] for r in auditor.execute(
                "SELECT ledger, records, problems FROM ledger.verify_all()").fetchall()}
        locker.rollback()
    assert runs["public.pay"] == (0, 1)
    assert runs["ledger.records"] == (0, 0) and runs["ledger.events"][1] == 0
    assert pdb.fetchone("SELECT problems, error FROM ledger.verify_runs WHERE ledger = 'public.pay'") == \
        (1, "canceling statement due to lock timeout")
    assert pdb.scalar("SELECT last_verify_problems FROM ledger.stats WHERE ledger = 'public.pay'") == 1
    # A cancel stops the whole run: nothing is recorded.
    with pdb.connect() as locker:
        locker.execute("LOCK TABLE pay IN ACCESS EXCLUSIVE MODE")
        with pdb.connect(autocommit=True) as auditor:
            auditor.execute("SET statement_timeout = '300ms'")
            with pytest.raises(psycopg.errors.QueryCanceled):
                auditor.execute("SELECT * FROM ledger.verify_all()")
        locker.rollback()
    assert pdb.scalar("SELECT count(*) FROM ledger.verify_runs WHERE ledger = 'public.pay'") == 1
    assert pdb.verify("ledger.verify_runs") == []


def test_rows_skipped_by_on_conflict_are_not_counted(pdb):
    """INSERT ... ON CONFLICT DO NOTHING drops a row after the append trigger chained it (a retry of
    one already stored): it is no append. Also inside a WITH clause, and in a function."""
    pdb.execute("CREATE TABLE ev (key text PRIMARY KEY, account text NOT NULL)")
    pdb.execute("SELECT ledger.enable('ev', chain_by => 'account')")
    pdb.execute("INSERT INTO ev VALUES ('k1', 'a'), ('k2', 'b')")
    for _ in range(3):  # at-least-once delivery: the same event again
        pdb.execute("INSERT INTO ev VALUES ('k1', 'a') ON CONFLICT DO NOTHING")
    pdb.execute("WITH retried AS (INSERT INTO ev VALUES ('k2', 'b') ON CONFLICT (key) DO NOTHING RETURNING 1) "
                "SELECT count(*) FROM retried")
    pdb.execute("CREATE FUNCTION retry(k text) RETURNS void LANGUAGE plpgsql AS $$ "
                "BEGIN INSERT INTO ev VALUES (k, 'a') ON CONFLICT DO NOTHING; END $$")
    pdb.execute("SELECT retry('k1'), retry('k3')")
    with pdb.connect() as conn:  # a new row and a retry in one transaction, then another new one
        conn.execute("INSERT INTO ev VALUES ('k4', 'a')")
        conn.execute("INSERT INTO ev VALUES ('k4', 'a') ON CONFLICT DO NOTHING")
        conn.execute("INSERT INTO ev VALUES ('k5', 'c')")
        conn.commit()
    stored = pdb.scalar("SELECT count(*) FROM ev")
    assert stored == 5
    assert counters(pdb, "public.ev")[0] == stored
    assert pdb.verify("ev") == []
