"""Client-supplied seq / prev_hash / hash: accepted only when equal to what the chain requires;
anything else is refused with the documented SQLSTATE and changes nothing."""

from __future__ import annotations

import hashlib
import uuid

import psycopg
import pytest
from psycopg import errors

from ledgertest import assert_clean, assert_dense, ve

A, B = str(uuid.UUID(int=0xA)), str(uuid.UUID(int=0xB))
TS = "2024-02-29 12:34:56.789+00"  # also the export's text of this timestamptz


def records_columns(db):
    names, types = db.fetchone("SELECT columns::text[], column_types FROM ledger.ledgers "
                               "WHERE tbl = 'ledger.records'::regclass")
    return list(zip(names, types))


def independent_hash(db, rid, anchor, seq, prev_hash, payload_text, ts=TS):
    """The record hash computed by scripts/verify_export.py from the values' export text."""
    text = {"rid": str(rid), "anchor_id": anchor, "slot": "s", "kind": "k", "ts": ts,
            "seq": str(seq), "prev_hash": prev_hash, "payload": payload_text, "sig": "\\x0102",
            "producer": "p", "version": "v1"}
    columns = records_columns(db)
    return ve.record_hash(columns, [text[name] for name, _ in columns])


def insert(cur, anchor, **supplied):
    """INSERT with fixed values for everything but rid, plus any supplied ledger columns."""
    values = {"rid": supplied.pop("rid", uuid.uuid4()), "anchor_id": anchor, "slot": "s",
              "kind": "k", "ts": TS, "payload": supplied.pop("payload", '{"n": 1}'),
              "sig": b"\x01\x02", "producer": "p", **supplied}
    cols = ", ".join(values)
    marks = ", ".join(["%s"] * len(values))
    cur.execute(f"INSERT INTO ledger.records ({cols}) VALUES ({marks}) "
                "RETURNING rid, seq, prev_hash, hash", list(values.values()))
    return cur.fetchone()


def test_correct_supplied_values_are_accepted(db):
    cur = db.conn.cursor()
    r1 = insert(cur, A)
    assert r1[1:3] == (1, None)
    # The database's hash is the independently computed one.
    assert r1[3] == independent_hash(db, r1[0], A, 1, None, '{"n": 1}')

    r2 = insert(cur, A, prev_hash=r1[3])
    assert r2[1:3] == (2, r1[3])
    r3 = insert(cur, A, seq=3)
    assert r3[1:3] == (3, r2[3])

    rid = uuid.uuid4()
    payload = '{"b": [1.50, null, true], "a": "x"}'
    expected = independent_hash(db, rid, A, 4, r3[3], payload)
    r4 = insert(cur, A, rid=rid, payload=payload, seq=4, prev_hash=r3[3], hash=expected)
    assert r4 == (rid, 4, r3[3], expected)
    r5_rid = uuid.uuid4()
    r5 = insert(cur, A, rid=r5_rid, hash=independent_hash(db, r5_rid, A, 5, r4[3], '{"n": 1}'))
    assert r5[1] == 5

    # The first record of a new chain: seq 1 and a NULL prev_hash may be stated explicitly.
    b1 = insert(cur, B, seq=1, prev_hash=None)
    assert b1[1:3] == (1, None)
    assert_dense(db, {A: 5, B: 1})
    assert_clean(db)


WRONG_HASH = hashlib.sha3_256(b"not the record").hexdigest()

# (name, supplied values given the chain head (its seq, the previous hash, its hash), sqlstate)
FAILURES = [
    ("seq_too_high", lambda seq, prev, head: {"seq": seq + 2}, "23514"),
    ("seq_taken", lambda seq, prev, head: {"seq": seq}, "23514"),
    ("seq_zero", lambda seq, prev, head: {"seq": 0}, "23514"),
    ("seq_negative", lambda seq, prev, head: {"seq": -3}, "23514"),
    ("prev_hash_of_older_record", lambda seq, prev, head: {"prev_hash": prev}, "23514"),
    ("prev_hash_wrong", lambda seq, prev, head: {"prev_hash": WRONG_HASH}, "23514"),
    ("hash_wrong", lambda seq, prev, head: {"hash": WRONG_HASH}, "23514"),
    ("hash_of_head", lambda seq, prev, head: {"hash": head}, "23514"),
    ("seq_and_prev_right_hash_wrong",
     lambda seq, prev, head: {"seq": seq + 1, "prev_hash": head, "hash": WRONG_HASH}, "23514"),
    ("hash_malformed", lambda seq, prev, head: {"hash": "xyz"}, "22P02"),
    ("hash_uppercase", lambda seq, prev, head: {"hash": WRONG_HASH.upper()}, "22P02"),
    ("hash_63_digits", lambda seq, prev, head: {"hash": WRONG_HASH[:63]}, "22P02"),
    ("hash_empty", lambda seq, prev, head: {"hash": ""}, "22P02"),
    ("prev_hash_malformed", lambda seq, prev, head: {"prev_hash": "xyz"}, "22P02"),
    ("prev_hash_uppercase", lambda seq, prev, head: {"prev_hash": head.upper()}, "22P02"),
    ("prev_hash_non_hex", lambda seq, prev, head: {"prev_hash": "g" * 64}, "22P02"),
    ("null_anchor", lambda seq, prev, head: {"anchor_id": None}, "23502"),
]


def attempt(cur, supplied):
    values = dict(supplied)
    anchor = values.pop("anchor_id", A)
    with pytest.raises(psycopg.Error) as info:
        insert(cur, anchor, **values)
    return info.value


@pytest.mark.parametrize("name, supplied, sqlstate", FAILURES, ids=[f[0] for f in FAILURES])
def test_wrong_supplied_values_are_refused(db, name, supplied, sqlstate):
    cur = db.conn.cursor()
    r1, r2 = insert(cur, A), insert(cur, A)
    insert(cur, B)
    before = db.snapshot()

    # Alone, in autocommit.
    error = attempt(cur, supplied(2, r1[3], r2[3]))
    assert error.sqlstate == sqlstate, error
    assert db.snapshot() == before

    # Inside a transaction that already appended to the chain (in this statement's savepoint):
    # nothing of the failed statement survives and the chain continues after ROLLBACK TO SAVEPOINT.
    conn = db.connect()
    with conn.cursor() as tx:
        r3 = insert(tx, A)
        tx.execute("SAVEPOINT sp")
        error = attempt(tx, supplied(3, r2[3], r3[3]))
        assert error.sqlstate == sqlstate, error
        tx.execute("ROLLBACK TO SAVEPOINT sp")
        r4 = insert(tx, A)
        assert r4[1:3] == (4, r3[3])
    conn.commit()

    # Without a savepoint the transaction is lost as a whole.
    with conn.cursor() as tx:
        r5 = insert(tx, A)
        error = attempt(tx, supplied(5, r4[3], r5[3]))
        assert error.sqlstate == sqlstate, error
    conn.rollback()
    assert_dense(db, {A: 4, B: 1})
    assert_clean(db)


@pytest.mark.parametrize("seq", [1, 2])
def test_supplied_prev_hash_on_first_record_is_refused(db, seq):
    """A chain's first record has no previous record: a supplied prev_hash is a mismatch."""
    r = insert(db.conn.cursor(), A)
    with pytest.raises(errors.CheckViolation):
        insert(db.conn.cursor(), B, prev_hash=r[3])
    with pytest.raises(errors.CheckViolation):
        insert(db.conn.cursor(), B, seq=seq + 1)
    assert db.scalar("SELECT count(*) FROM ledger.records WHERE anchor_id = %s", (B,)) == 0


def test_null_chain_value_on_user_table(db):
    """A nullable chain column: the ledger's own check refuses a NULL chain value with 23502."""
    db.execute("CREATE TABLE t (id int PRIMARY KEY, account text, v int)")
    db.execute("SELECT ledger.enable('t', 'account')")
    db.execute("INSERT INTO t (id, account, v) VALUES (1, 'x', 1)")
    before = db.snapshot("t", "account")
    with pytest.raises(errors.NotNullViolation) as info:
        db.execute("INSERT INTO t (id, account, v) VALUES (2, NULL, 2)")
    assert "account" in str(info.value)
    with pytest.raises(errors.NotNullViolation):
        db.execute("INSERT INTO t (id, account, v) VALUES (3, 'x', 3), (4, NULL, 4)")
    assert db.snapshot("t", "account") == before
    assert_clean(db, "t")
