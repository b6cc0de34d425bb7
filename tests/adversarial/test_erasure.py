"""Erasure on real servers: a record's erasable values, erased with ledger.redact, are gone from what
the database serves (a hot standby that replays the erasure, a pg_dump taken after it, the heap after
VACUUM) while its hash, the chain, checkpoints and digests made before verify, in the database and
offline; every superuser attempt to undo or fake an erasure is named alike by both verifiers."""

from __future__ import annotations

import json
import os
import subprocess
import threading

import psycopg
import pytest

from clusters import own_cluster, wait_for_replay
from ledgertest import (Database, _write_export, behind_the_triggers, database_name, offline_digest, offline_verify,
                        run_verifier, wait_until)

PG_BIN = "/usr/lib/postgresql/15/bin"
SECRET = "erase-me-7f3a@example.org"


def problems(db: Database) -> list[tuple]:
    return [tuple(r[:3]) for r in db.fetchall("SELECT * FROM ledger.verify('people')")]


def fill(db: Database) -> tuple[str, str]:
    """A ledger with erasable email and born, record 2 of chain a holding SECRET, checkpointed with
    a digest before anything is erased. Returns (cid, digest)."""
    db.execute("CREATE TABLE people (id int PRIMARY KEY, account text NOT NULL, email text, born date, "
               "note text NOT NULL)")
    db.execute("SELECT ledger.enable('people', 'account')")
    db.execute("INSERT INTO people VALUES (1, 'a', 'kept@example.org', '1950-01-01', 'before')")
    db.execute("SELECT ledger.set_erasable('people', '{email,born}')")
    db.execute("INSERT INTO people VALUES (2, 'a', %s, '1991-09-19', 'secret'), (3, 'a', 'x@example.org', NULL, 'x'), "
               "(4, 'b', 'y@example.org', '2001-01-01', 'y')", (SECRET,))
    cid = db.scalar("SELECT cid FROM ledger.checkpoint('people', 'a')")
    return cid, db.scalar("SELECT ledger.digest(%s)", (cid,))


@pytest.fixture
def erased_free_db(db):
    """The filled ledger, nothing erased yet."""
    fill(db)
    return db


@pytest.fixture
def erased(db):
    cid, digest = fill(db)
    assert db.scalar("SELECT ledger.redact('people', 'a', 2, 'erasure request')") == 2
    return db, cid, digest


def test_erased_values_are_gone_and_everything_still_verifies(erased):
    db, cid, digest = erased
    assert db.fetchone("SELECT email, born, note FROM people WHERE id = 2") == (None, None, "secret")
    assert problems(db) == []
    lines = db.export_lines("people")
    assert offline_verify(lines) == [] and not any(SECRET in line for line in lines)
    assert all(ok is not False for _, ok, _ in db.fetchall("SELECT * FROM ledger.verify_checkpoint(%s)", (cid,)))
    assert all(ok is not False for _, ok, _ in db.fetchall("SELECT * FROM ledger.verify_digest(%s)", (digest,)))
    status, out = offline_digest(lines, digest, allow_unsigned=True)
    assert out["digest"]["extends"][0] is True, out
    # The old row version holds the value until VACUUM removes it (its bytes may linger in the
    # page's free space until overwritten); VACUUM FULL rewrites the table without them.
    db.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
    row_versions = ("SELECT count(*) FROM generate_series(0, pg_relation_size('people') / 8192 - 1) b, "
                    "heap_page_items(get_raw_page('people', b::int)) i "
                    "WHERE position(convert_to(%s, 'UTF8') in i.t_data) > 0")
    assert db.scalar(row_versions, (SECRET,)) == 1
    db.execute("VACUUM people")
    assert db.scalar(row_versions, (SECRET,)) == 0
    db.execute("VACUUM FULL people")
    pages = db.scalar("SELECT string_agg(encode(get_raw_page('people', b::int), 'escape'), '') "
                      "FROM generate_series(0, pg_relation_size('people') / 8192 - 1) b")
    assert SECRET not in pages
    assert problems(db) == []


@pytest.mark.parametrize("attack, statement, found", [
    ("put the erased value back", f"UPDATE people SET email = '{SECRET}' WHERE id = 2", [("a", 2, "hash_mismatch")]),
    ("change a kept salt", "UPDATE people SET ledger_erasure = jsonb_set(ledger_erasure, '{email,salt}', "
     "to_jsonb(repeat('1', 64))) WHERE id = 3", [("a", 3, "hash_mismatch")]),
    ("remove an erasure entry", "UPDATE people SET ledger_erasure = ledger_erasure - 'born' WHERE id = 3",
     [("a", 3, "hash_mismatch")]),
    ("forge an erasure with a made-up commitment", "UPDATE people SET email = NULL, ledger_erasure = "
     "jsonb_set(ledger_erasure, '{email}', jsonb_build_object('erased', repeat('2', 64))) WHERE id = 4",
     [("b", 1, "hash_mismatch")]),
    ("edit a salted value", "UPDATE people SET born = '1999-12-31' WHERE id = 4", [("b", 1, "hash_mismatch")]),
])
def test_tampering_with_erasure_is_named_alike_by_both_verifiers(erased, attack, statement, found):
    db, cid, digest = erased
    behind_the_triggers(db, "people", statement)
    assert problems(db) == found, attack
    assert offline_verify(db.export_lines("people")) == found, attack


def test_a_dump_taken_after_the_erasure_carries_no_erased_value(cluster, erased, tmp_path, request):
    db, cid, digest = erased
    dump = tmp_path / "after.sql"
    base = ["-h", cluster.socket_dir, "-p", str(cluster.port), "-U", "postgres"]
    subprocess.run([f"{PG_BIN}/pg_dump", *base, "-d", db.name, "-f", str(dump)], check=True, capture_output=True)
    text = dump.read_text()
    assert SECRET not in text and "1991-09-19" not in text and "x@example.org" in text
    target = database_name("restore_" + request.node.name)
    with cluster.connect("postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{target}" TEMPLATE template0')
    restored = Database(cluster, target)
    try:
        subprocess.run([f"{PG_BIN}/psql", *base, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", target, "-f", str(dump)],
                       check=True, capture_output=True)
        assert problems(restored) == []
        # The restored ledger goes on: new records commit to their values, and can be erased.
        restored.execute("INSERT INTO people VALUES (5, 'a', 'later@example.org', NULL, 'later')")
        assert restored.scalar("SELECT ledger.redact('people', 'a', 4, 'after the restore')") == 2
        assert problems(restored) == []
    finally:
        restored.close_all()
        with cluster.connect("postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')


def test_a_standby_replays_the_erasure(request):
    with own_cluster("primary") as primary, own_cluster("standby", start=False) as standby:
        standby.start_as_standby_of(primary)
        p = primary.create_database(database_name(request.node.name))
        s = None
        try:
            cid, digest = fill(p)
            wait_until(lambda: p.name in {r[0] for r in standby.connect(autocommit=True).execute(
                "SELECT datname FROM pg_database").fetchall()}, 20, 0.02, "the database on the standby")
            s = Database(standby, p.name)
            wait_for_replay(p, s)
            assert s.scalar("SELECT email FROM people WHERE id = 2") == SECRET
            p.execute("SELECT ledger.redact('people', 'a', 2, 'erasure request')")
            wait_for_replay(p, s)
            assert s.fetchone("SELECT email, born FROM people WHERE id = 2") == (None, None)
            assert s.scalar("SELECT count(*) FROM people WHERE email = %s", (SECRET,)) == 0
            # Records 3 and 4 keep their salts (they were not erased).
            assert s.scalar("SELECT count(*) FROM people WHERE ledger_erasure::text LIKE '%%\"salt\"%%'") == 2
            assert problems(s) == [] and s.export_lines("people") == p.export_lines("people")
            assert {ok for _, ok, _ in s.fetchall("SELECT * FROM ledger.verify_checkpoint(%s)", (cid,))} <= {True, None}
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                s.execute("SELECT ledger.redact('people', 'a', 3, 'on the standby')")
        finally:
            p.close_all()
            if s is not None:
                s.close_all()


def offline_state(db: Database, tbl: str) -> list[tuple]:
    """verify_export.py on the history's export with --state on the table's: (chain, seq, problem)."""
    history = db.scalar("SELECT history::text FROM ledger.tracked WHERE tbl = %s::regclass", (tbl,))
    export_path = _write_export(db.export_lines(history))
    state = [r[0] for r in db.fetchall(f"SELECT * FROM ledger.export_state('{tbl}')")]
    state_path = _write_export(state)
    try:
        result = run_verifier(export_path, "--state", state_path, "--json")
    finally:
        os.unlink(export_path)
        os.unlink(state_path)
    assert result.returncode in (0, 1), result.stderr
    return [(p["chain"], p["seq"], p["problem"]) for p in json.loads(result.stdout)]


def test_a_deleted_rows_history_is_erased_in_every_version(db):
    """A tracked table's erasable column: every version of a deleted row loses it, the history and
    the table's state verify in the database and offline, and putting a value back is caught."""
    db.execute("CREATE TABLE users (id int PRIMARY KEY, email text, plan text NOT NULL)")
    db.execute("SELECT ledger.enable_history('users')")
    db.execute("SELECT ledger.set_erasable('users', '{email}')")
    db.execute("INSERT INTO users VALUES (1, 'kept@example.org', 'free'), (2, %s, 'free')", (SECRET,))
    db.execute("UPDATE users SET plan = 'pro' WHERE id = 2")
    cid = db.scalar("SELECT cid FROM ledger.checkpoint('users', '{\"id\": 2}')")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        db.execute("SELECT ledger.redact('users', '{\"id\": 2}', NULL, 'still there')")
    db.execute("DELETE FROM users WHERE id = 2")
    assert db.scalar("SELECT ledger.redact('users', '{\"id\": 2}', NULL, 'erasure request')") == 2
    assert db.fetchall("SELECT seq, op, \"row\" ->> 'email' FROM ledger.history('users', '{\"id\": 2}')") == [
        (1, "insert", None), (2, "update", None), (3, "delete", None)]
    assert db.fetchall("SELECT * FROM ledger.verify('users')") == []
    lines = db.export_lines("users_history")
    assert offline_verify(lines) == [] and not any(SECRET in line for line in lines)
    assert offline_state(db, "users") == []
    assert {ok for _, ok, _ in db.fetchall("SELECT * FROM ledger.verify_checkpoint(%s)", (cid,))} <= {True, None}
    behind_the_triggers(db, "users_history", "UPDATE users_history SET \"row\" = jsonb_set(\"row\", '{email}', "
                        "to_jsonb(%s::text)) WHERE key = '{\"id\": 2}' AND seq = 2", (SECRET,))
    found = [tuple(r[:3]) for r in db.fetchall("SELECT * FROM ledger.verify('users')")]
    assert found == [('{"id": 2}', 2, "hash_mismatch")]
    assert offline_verify(db.export_lines("users_history")) == found


def test_two_sessions_erasing_one_record_erase_it_once(erased_free_db):
    """The second of two concurrent erasures of one record waits for the first, then is refused
    (40001, nothing done twice) rather than recording an erasure it did not make."""
    db = erased_free_db
    first, second = db.connect(), db.connect()
    first.execute("SELECT ledger.redact('people', 'a', 3, 'first')")
    outcome: list = []

    def erase_again() -> None:
        try:
            second.execute("SELECT ledger.redact('people', 'a', 3, 'second')")
            second.commit()
            outcome.append("erased")
        except psycopg.Error as e:
            second.rollback()
            outcome.append(e.sqlstate)

    waiter = threading.Thread(target=erase_again)
    waiter.start()
    wait_until(lambda: db.scalar("SELECT count(*) FROM pg_locks WHERE NOT granted") > 0, 20, 0.02,
               "the second erasure to wait")
    first.commit()
    waiter.join(20)
    assert outcome == ["40001"]
    assert db.scalar("SELECT count(*) FROM ledger.events WHERE ledger = 'public.people' AND event = 'redact'") == 1
    assert problems(db) == []
