"""Idempotent retries: consumers with at-least-once delivery retry whole batches with INSERT ... ON
CONFLICT DO NOTHING against a UNIQUE event identity. Duplicates anywhere in a batch, in any kind
of INSERT, inside transactions and from concurrent writers, are skipped, and the stored rows form
dense chains."""

from __future__ import annotations

import random
import threading

import pytest
from psycopg import errors

from ledgertest import assert_clean, assert_dense, behind_the_triggers, wait_until

EVENTS = """
    CREATE TABLE events (
        id          bigint PRIMARY KEY,
        stream      text NOT NULL,
        type        text NOT NULL,
        data_hash   text NOT NULL UNIQUE,
        data        jsonb NOT NULL
    );
    SELECT ledger.enable('events', chain_by => 'stream');
"""


def event(i: int, streams: int = 4) -> tuple:
    return (i, f"s{i % streams}", "created", f"h{i}", f'{{"i": {i}}}')


def insert(conn, events, conflict="ON CONFLICT DO NOTHING", returning=""):
    values = ", ".join(["(%s, %s, %s, %s, %s)"] * len(events))
    cur = conn.execute(f"INSERT INTO events (id, stream, type, data_hash, data) VALUES {values} {conflict} {returning}",
                       [v for e in events for v in e])
    return cur


def stored_ids(db) -> set:
    return {r[0] for r in db.fetchall("SELECT id FROM events")}


@pytest.fixture
def events(db):
    db.execute(EVENTS)
    return db


def test_duplicates_anywhere_in_a_batch_are_skipped(events):
    db = events
    insert(db.conn, [event(i) for i in (1, 3, 5)])
    # The case: the duplicate is not the batch's last row; also first, adjacent, repeated.
    for batch in ([1, 2], [3, 4, 5, 6], [7, 7, 8], [9, 1, 3, 10, 5]):
        insert(db.conn, [event(i) for i in batch])
    assert stored_ids(db) == set(range(1, 11))
    assert_dense(db, tbl="events", chain_col="stream")
    assert_clean(db, "events")


def test_explicit_target_and_returning(events):
    db = events
    insert(db.conn, [event(i) for i in (1, 2)])
    rows = insert(db.conn, [event(i) for i in (1, 3, 2, 4)], "ON CONFLICT (id) DO NOTHING",
                  "RETURNING id, seq, prev_hash, hash").fetchall()
    assert [r[0] for r in rows] == [3, 4]
    for id_, seq, prev_hash, hash_ in rows:
        assert db.fetchone("SELECT seq, prev_hash, hash FROM events WHERE id = %s", (id_,)) == (seq, prev_hash, hash_)
    # A conflict on the other unique key (data_hash) with a target naming it.
    rows = insert(db.conn, [(50, "s0", "created", "h1", "{}"), event(5)], "ON CONFLICT (data_hash) DO NOTHING",
                  "RETURNING id").fetchall()
    assert rows == [(5,)]
    assert_dense(db, tbl="events", chain_col="stream")
    assert_clean(db, "events")


def test_insert_select_of_100000_with_every_tenth_a_duplicate(events):
    db = events
    # 10,000 events stored; a batch of 100,000 in which those come back, spread through it and
    # across the chains.
    db.execute("INSERT INTO events SELECT i, 's' || (i % 16), 'created', 'h' || i, jsonb_build_object('i', i) "
               "FROM generate_series(1, 100000, 10) i")
    batch = db.fetchone("""
        INSERT INTO events
        SELECT i, 's' || (i % 16), 'created', 'h' || i, jsonb_build_object('i', i)
          FROM generate_series(1, 100000) i ORDER BY (i * 7919) % 100003
        ON CONFLICT DO NOTHING
        RETURNING 1""")
    assert batch is not None
    assert db.scalar("SELECT count(*) FROM events") == 100000
    assert db.scalar("SELECT count(DISTINCT id) FROM events") == 100000
    assert_dense(db, tbl="events", chain_col="stream")
    assert_clean(db, "events")


def test_retries_inside_a_transaction_with_other_appends(events):
    db = events
    insert(db.conn, [event(i) for i in range(1, 6)])
    conn = db.connect()
    insert(conn, [event(6)], conflict="")
    insert(conn, [event(i) for i in range(1, 9)])      # 1-6 again, 7 and 8 new
    conn.execute("INSERT INTO events SELECT i, 's' || (i % 4), 'created', 'h' || i, '{}' "
                 "FROM generate_series(5, 12) i ON CONFLICT DO NOTHING")
    insert(conn, [event(13)], conflict="")
    conn.commit()
    assert stored_ids(db) == set(range(1, 14))
    assert_dense(db, tbl="events", chain_col="stream")
    assert_clean(db, "events")


def test_first_statement_of_a_session_is_a_retry(events):
    """The library may be loaded by the retry itself, after the statement started."""
    db = events
    insert(db.conn, [event(i) for i in (1, 2)])
    with db.cluster.connect(db.name, autocommit=True) as fresh:
        assert fresh.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)
        insert(fresh, [event(i) for i in (1, 5, 2, 9)])
    assert stored_ids(db) == {1, 2, 5, 9}
    assert_dense(db, tbl="events", chain_col="stream")
    assert_clean(db, "events")


def test_a_plain_insert_of_a_duplicate_still_fails(events):
    db = events
    insert(db.conn, [event(1)])
    before = db.snapshot("events", "stream")
    with pytest.raises(errors.UniqueViolation):
        insert(db.conn, [event(2), event(1), event(3)], conflict="")
    # Also in a transaction that ran a retry first (the rows are probed, the error is the same).
    conn = db.connect()
    insert(conn, [event(1), event(4)])
    with pytest.raises(errors.UniqueViolation):
        insert(conn, [event(5), event(1)], conflict="")
    conn.rollback()
    assert db.snapshot("events", "stream") == before
    assert_clean(db, "events")


def test_concurrent_writers_retrying_overlapping_batches(events):
    """8 writers deliver overlapping batches at least once, each batch spanning every chain. A
    batch takes its chains' locks in the order it reaches them, so batches ordered by the chain
    column take them in one order and never deadlock; a transaction that still has to wait for a
    conflicting key of another chain's writer is a deadlock PostgreSQL detects, retried here."""
    db = events
    total, writers, batch_size = 2000, 8, 50
    errors_seen: list[BaseException] = []
    retried = {"deadlock": 0}
    lock = threading.Lock()

    def run(conn, batch):
        while True:
            try:
                insert(conn, sorted(batch, key=lambda e: (e[1], e[0])))
                return
            except errors.DeadlockDetected:
                with lock:
                    retried["deadlock"] += 1

    def deliver(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            with db.connect(autocommit=True) as conn:
                for _ in range(total // batch_size):
                    start = rnd.randrange(0, total - batch_size)
                    run(conn, [event(i, streams=6) for i in range(start, start + batch_size)])
                # Every event once more, so that all of them are stored in the end.
                for start in range(0, total, batch_size):
                    if (start // batch_size) % writers == seed:
                        run(conn, [event(i, streams=6) for i in range(start, start + batch_size)])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors_seen.append(e)

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads), "writers still running after 300 s"
    assert not errors_seen, errors_seen[:3]
    assert stored_ids(db) == set(range(total))
    assert_dense(db, {f"s{k}": len(range(k, total, 6)) for k in range(6)}, tbl="events", chain_col="stream")
    assert_clean(db, "events")
    print(f"retries: {retried}")


CHAIN_LOCKS_HELD = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 19527 "
                    "AND pid = pg_backend_pid()")


def test_a_retry_of_stored_rows_takes_no_chain_lock(events):
    """A batch whose rows are all stored does not wait for a writer of their chains, nor lock them:
    each row only probes its keys, as the executor then does, and is skipped."""
    db = events
    insert(db.conn, [event(i) for i in range(1, 9)])
    writer = db.connect()
    insert(writer, [event(100)], conflict="")          # chain s0 locked until the writer commits
    retry = db.connect(settings={"lock_timeout": "1s"})
    assert insert(retry, [event(i) for i in range(1, 9)], returning="RETURNING id").fetchall() == []
    assert retry.execute(CHAIN_LOCKS_HELD).fetchone()[0] == 0
    # A new row of the locked chain in the same batch does wait for it.
    with pytest.raises(errors.LockNotAvailable):
        insert(retry, [event(i) for i in (1, 2, 104)])
    retry.rollback()
    writer.commit()
    insert(retry, [event(i) for i in (1, 2, 104)])
    retry.commit()
    assert stored_ids(db) == set(range(1, 9)) | {100, 104}
    assert_dense(db, tbl="events", chain_col="stream")
    assert_clean(db, "events")


def removal_after_skipping(db, skipping_insert: str, removal: str) -> list[tuple]:
    """Runs `removal` while a transaction that ran `skipping_insert` is open (it must wait: with a
    lock_timeout it fails), then again after that transaction committed; returns its rows."""
    retry = db.connect()
    retry.execute(skipping_insert)
    remover = db.connect(settings={"lock_timeout": "300ms"})
    with pytest.raises(errors.LockNotAvailable):
        remover.execute(removal)
    remover.rollback()
    retry.commit()
    rows = remover.execute(removal).fetchall()
    remover.commit()
    return rows


def test_prune_waits_for_a_transaction_skipping_stored_rows(db):
    """A row skipped as a duplicate relies on the stored row staying until the executor checks it:
    ledger.prune, which removes stored rows, waits until the skipping transaction ends."""
    db.execute("""
        CREATE TABLE ev (id int PRIMARY KEY, account text NOT NULL, at timestamptz NOT NULL);
        SELECT ledger.enable('ev', chain_by => 'account');
        INSERT INTO ev SELECT i, 'a', now() - (20 - i) * interval '1 day' FROM generate_series(1, 10) i;
        SELECT ledger.set_retention('ev', '15 days', 'at');
    """)
    pruned = removal_after_skipping(db, "INSERT INTO ev VALUES (1, 'a', now()), (2, 'a', now()) ON CONFLICT DO NOTHING",
                                    "SELECT chain, pruned, through_seq FROM ledger.prune('ev')")
    assert pruned == [("a", 5, 5)]
    assert db.fetchall("SELECT id, seq FROM ev ORDER BY seq") == [(i, i) for i in range(6, 11)]
    assert db.verify("ev") == []


def test_erasure_waits_for_a_transaction_skipping_a_row_on_the_erased_key(db):
    """Erasing a value of a unique key frees the key: a row skipped because of that value must not
    be stored after all, so ledger.redact waits until the skipping transaction ends."""
    db.execute("""
        CREATE TABLE users (id int PRIMARY KEY, account text NOT NULL, email text UNIQUE);
        SELECT ledger.enable('users', chain_by => 'account');
        SELECT ledger.set_erasable('users', '{email}');
        INSERT INTO users VALUES (1, 'a', 'one@example.org'), (2, 'a', 'two@example.org');
    """)
    erased = removal_after_skipping(db, "INSERT INTO users VALUES (3, 'a', 'one@example.org') ON CONFLICT DO NOTHING",
                                    "SELECT ledger.redact('users', 'a', 1, 'erasure request')")
    assert erased == [(1,)]
    assert db.fetchall("SELECT id, seq, email FROM users ORDER BY seq") == [(1, 1, None), (2, 2, "two@example.org")]
    assert db.verify("users") == []


def test_a_deadlock_between_batches_names_the_ledger_and_the_way_out(events):
    """Two transactions reaching two chains in opposite orders: PostgreSQL detects the deadlock,
    and the error (40P01, retried by clients as such) says which ledger and how to avoid it."""
    db = events
    first, second = db.connect(), db.connect()
    insert(first, [event(1)])                          # s1
    insert(second, [event(2)])                         # s2
    caught: list[BaseException] = []

    def append(conn, e):
        try:
            insert(conn, [e])
        except errors.DeadlockDetected as error:
            caught.append(error)
            conn.rollback()

    waiting = threading.Thread(target=append, args=(first, event(6)))   # s2: waits for second
    waiting.start()
    wait_until(lambda: db.scalar("SELECT count(*) FROM pg_locks WHERE NOT granted AND objsubid = 19527") == 1,
               what="the first transaction waiting for chain s2")
    append(second, event(5))                           # s1: a cycle
    waiting.join(10)
    assert len(caught) == 1
    error = caught[0]
    assert error.sqlstate == "40P01"
    assert error.diag.message_primary == "deadlock detected"
    assert "waits for ExclusiveLock on advisory lock" in error.diag.message_detail
    assert "ledger public.events" in error.diag.message_hint and "ORDER BY the chain column" in error.diag.message_hint
    for conn in (first, second):
        conn.commit()
    assert_dense(db, tbl="events", chain_col="stream")
    assert_clean(db, "events")


def test_a_retry_after_a_superuser_deleted_a_record_chains_it_again_and_verify_reports_the_hole(events):
    """A stored record deleted behind the triggers no longer makes its retry a duplicate: the retry
    is chained anew at the end of its chain, and verify still names the hole the deletion left."""
    db = events
    insert(db.conn, [event(i) for i in range(1, 13)])  # s1: ids 1, 5, 9 at seqs 1, 2, 3
    behind_the_triggers(db, "events", "DELETE FROM events WHERE id = 5")
    insert(db.conn, [event(i) for i in range(1, 13)])
    assert stored_ids(db) == set(range(1, 13))
    assert db.fetchall("SELECT id, seq FROM events WHERE stream = 's1' ORDER BY seq") == [(1, 1), (9, 3), (5, 4)]
    assert [p[:3] for p in db.verify("events")] == [("s1", 3, "seq_gap"), ("s1", 3, "prev_hash_mismatch")]


def test_superuser_tampering_after_retries_is_caught(events):
    db = events
    insert(db.conn, [event(i) for i in range(1, 20)])
    insert(db.conn, [event(i) for i in range(10, 30)])
    db.execute("ALTER TABLE events DISABLE TRIGGER ledger_refuse_change")
    db.execute("UPDATE events SET data = '{\"i\": -1}' WHERE id = 25")
    db.execute("ALTER TABLE events ENABLE ALWAYS TRIGGER ledger_refuse_change")
    problems = db.verify("events")
    assert problems and problems[0][2] == "hash_mismatch"


def test_nulls_in_a_unique_key_do_not_conflict(db):
    db.execute("""
        CREATE TABLE tagged (id int PRIMARY KEY, tag text UNIQUE, account text NOT NULL);
        SELECT ledger.enable('tagged', chain_by => 'account');
        INSERT INTO tagged VALUES (1, NULL, 'a'), (2, 'x', 'a');
    """)
    db.execute("INSERT INTO tagged VALUES (3, NULL, 'a'), (4, 'x', 'a'), (5, NULL, 'a') ON CONFLICT DO NOTHING")
    assert db.fetchall("SELECT id, seq FROM tagged ORDER BY seq") == [(1, 1), (2, 2), (3, 3), (5, 4)]
    assert_clean(db, "tagged")


def test_nulls_not_distinct_conflict(db):
    db.execute("""
        CREATE TABLE tagged (id int PRIMARY KEY, tag text, account text NOT NULL,
                             UNIQUE NULLS NOT DISTINCT (tag));
        SELECT ledger.enable('tagged', chain_by => 'account');
        INSERT INTO tagged VALUES (1, NULL, 'a');
    """)
    db.execute("INSERT INTO tagged VALUES (2, NULL, 'a'), (3, 'y', 'a') ON CONFLICT DO NOTHING")
    assert db.fetchall("SELECT id, seq FROM tagged ORDER BY seq") == [(1, 1), (3, 2)]
    assert_clean(db, "tagged")


def test_do_update_is_still_refused(events):
    db = events
    insert(db.conn, [event(1)])
    with pytest.raises(errors.RestrictViolation):
        insert(db.conn, [event(2), event(1)], "ON CONFLICT (id) DO UPDATE SET type = 'changed'")
    assert stored_ids(db) == {1}
    assert_clean(db, "events")
