"""A superuser tampering with triggers disabled: ledger.verify names the documented problems at the
right seqs, leaves other chains alone, and the offline verifier (scripts/verify_export.py) reading
`ledger.export` reports exactly the same problems."""

from __future__ import annotations

import uuid

import pytest
from psycopg import errors

from ledgertest import assert_clean, insert_record, offline_verify

A, B = str(uuid.UUID(int=0xA)), str(uuid.UUID(int=0xB))
N = 5  # records per chain
FORGED = "encode(sha256(convert_to('forged', 'UTF8')), 'hex')"
DROP_UNIQUE = """
    ALTER TABLE ledger.records DROP CONSTRAINT records_pkey, DROP CONSTRAINT records_hash_key;
    DROP INDEX ledger.records_anchor_id_seq_idx;
"""


def where(seq):
    return f"anchor_id = '{A}' AND seq = {seq}"


# name -> (tampering SQL run with triggers disabled, problems expected in chain A in report order).
# Expectations follow FORMAT.md "Verification"; the first one is the table's "first problem".
TAMPERINGS = {
    "edit_payload": (f"UPDATE ledger.records SET payload = '{{\"i\": 99}}' WHERE {where(3)}",
                     [(3, "hash_mismatch")]),
    "edit_payload_key_order_only": (
        # A new jsonb value with the same canonical form is not a change.
        f"UPDATE ledger.records SET payload = '{{ \"t\" : \"x\", \"i\": 2.0 }}' WHERE {where(3)}",
        []),
    "edit_ts": (f"UPDATE ledger.records SET ts = ts + interval '1 microsecond' WHERE {where(3)}",
                [(3, "hash_mismatch")]),
    "edit_slot": (f"UPDATE ledger.records SET slot = 'S' WHERE {where(3)}",
                  [(3, "hash_mismatch")]),
    "edit_null_to_empty": (f"UPDATE ledger.records SET producer = '' WHERE {where(3)}",
                           [(3, "hash_mismatch")]),
    "edit_rid": (f"UPDATE ledger.records SET rid = gen_random_uuid() WHERE {where(2)}",
                 [(2, "hash_mismatch")]),
    "forged_hash": (f"UPDATE ledger.records SET hash = {FORGED} WHERE {where(3)}",
                    [(3, "hash_mismatch"), (4, "prev_hash_mismatch")]),
    "forged_hash_of_newest": (f"UPDATE ledger.records SET hash = {FORGED} WHERE {where(N)}",
                              [(N, "hash_mismatch")]),
    "uppercase_hash": (f"UPDATE ledger.records SET hash = upper(hash) WHERE {where(3)}",
                       [(3, "hash_mismatch"), (4, "prev_hash_mismatch")]),
    "null_hash": ("ALTER TABLE ledger.records ALTER hash DROP NOT NULL;"
                  f"UPDATE ledger.records SET hash = NULL WHERE {where(3)}",
                  [(3, "hash_mismatch"), (4, "prev_hash_mismatch")]),
    "forged_prev_hash": (f"UPDATE ledger.records SET prev_hash = {FORGED} WHERE {where(3)}",
                         [(3, "hash_mismatch"), (3, "prev_hash_mismatch")]),
    "prev_hash_on_first": (f"UPDATE ledger.records SET prev_hash = {FORGED} WHERE {where(1)}",
                           [(1, "hash_mismatch"), (1, "prev_hash_mismatch")]),
    "delete_middle": (f"DELETE FROM ledger.records WHERE {where(3)}",
                      [(4, "seq_gap"), (4, "prev_hash_mismatch")]),
    "delete_first": (f"DELETE FROM ledger.records WHERE {where(1)}",
                     [(2, "seq_gap"), (2, "prev_hash_mismatch")]),
    "delete_last_but_one": (f"DELETE FROM ledger.records WHERE {where(N - 1)}",
                            [(N, "seq_gap"), (N, "prev_hash_mismatch")]),
    "delete_newest": (f"DELETE FROM ledger.records WHERE {where(N)}", []),
    "seq_bumped": (f"UPDATE ledger.records SET seq = {N + 2} WHERE {where(N)}",
                   [(N + 2, "seq_gap"), (N + 2, "hash_mismatch")]),
    "seq_null": ("ALTER TABLE ledger.records ALTER seq DROP NOT NULL;"
                 f"UPDATE ledger.records SET seq = NULL WHERE {where(3)}",
                 [(4, "seq_gap"), (4, "prev_hash_mismatch"),
                  (None, "seq_gap"), (None, "hash_mismatch")]),
    "swapped_seqs": (f"UPDATE ledger.records SET seq = -2 WHERE {where(2)};"
                     f"UPDATE ledger.records SET seq = 2 WHERE {where(3)};"
                     f"UPDATE ledger.records SET seq = 3 WHERE {where(-2)}",
                     [(2, "hash_mismatch"), (2, "prev_hash_mismatch"),
                      (3, "hash_mismatch"), (3, "prev_hash_mismatch"),
                      (4, "prev_hash_mismatch")]),
    "duplicated_row": (DROP_UNIQUE + "INSERT INTO ledger.records SELECT * FROM ledger.records "
                       f"WHERE {where(3)}",
                       [(3, "duplicate_seq")]),
    "duplicated_row_edited": (
        # The copy keeps seq and gets a forged, well-formed hash: it sorts by its hash octets
        # against the original, so which of the two continues the chain is data-dependent; both
        # verifiers must agree (compared below), and a duplicate_seq is reported at 3.
        DROP_UNIQUE + "INSERT INTO ledger.records SELECT rid, anchor_id, slot, kind, ts, seq, "
        f"prev_hash, {FORGED}, payload, sig, producer, version FROM ledger.records "
        f"WHERE {where(3)}",
        None),
    # A modified copy that keeps seq, prev_hash and hash: the genuine record continues the chain
    # whichever of the two is stored first (FORMAT.md orders them by their contents, and the
    # export carries no storage order).
    "modified_copy_stored_after": (
        DROP_UNIQUE + "INSERT INTO ledger.records SELECT gen_random_uuid(), anchor_id, slot, kind, ts, seq, "
        f"prev_hash, hash, '{{\"i\": 99}}', sig, producer, version FROM ledger.records WHERE {where(3)}",
        [(3, "duplicate_seq"), (3, "hash_mismatch")]),
    "modified_copy_stored_before": (
        DROP_UNIQUE + f"CREATE TEMP TABLE genuine AS SELECT * FROM ledger.records WHERE {where(3)};"
        f"DELETE FROM ledger.records WHERE {where(3)};"
        "INSERT INTO ledger.records SELECT gen_random_uuid(), anchor_id, slot, kind, ts, seq, "
        "prev_hash, hash, '{\"i\": 99}', sig, producer, version FROM genuine;"
        "INSERT INTO ledger.records SELECT * FROM genuine",
        [(3, "duplicate_seq"), (3, "hash_mismatch")]),
}


def populate(db):
    cur = db.conn.cursor()
    for chain in (A, B):
        for i in range(N):
            insert_record(cur, chain, payload={"i": i, "t": "x"})


def tamper(db, statements, table="ledger.records"):
    conn = db.connect()
    with conn.cursor() as cur:
        cur.execute(f"ALTER TABLE {table} DISABLE TRIGGER ALL")
        cur.execute(statements)
        cur.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER zz_ledger_append, ENABLE ALWAYS TRIGGER ledger_refuse_change, ENABLE ALWAYS TRIGGER ledger_refuse_truncate")
    conn.commit()


def test_intact_ledger_verifies(db):
    populate(db)
    assert db.verify() == []
    assert db.verify("ledger.records", A) == []
    lines = db.export_lines()
    assert len(lines) == 1 + 2 * N
    assert offline_verify(lines) == []


@pytest.mark.parametrize("name", list(TAMPERINGS))
def test_tampering_is_detected(db, name):
    statements, expected = TAMPERINGS[name]
    populate(db)
    before = db.snapshot()
    tamper(db, statements)
    assert db.snapshot() != before, "the tampering changed nothing"

    # Tamperings that alter the columns (DROP NOT NULL) are reported as a changed definition too,
    # by the offline verifier as well (the export carries both definitions).
    redefined = [(None, None, "definition_changed")] if "DROP NOT NULL" in statements else []
    everything = db.verify()
    assert everything[:len(redefined)] == redefined, everything
    found = everything[len(redefined):]
    offline = db.offline_verify()
    # Both verifiers report the same problems, in the same order.
    assert everything == offline, f"ledger.verify {everything} != verify_export.py {offline}"
    # Only chain A was touched.
    assert all(chain == A for chain, _, _ in found), found
    assert db.verify("ledger.records", B) == redefined
    assert db.verify("ledger.records", A) == redefined + found
    problems = [(seq, problem) for _, seq, problem in found]
    if expected is None:
        assert (3, "duplicate_seq") in problems, problems
        assert problems[0][0] == 3
    else:
        assert problems == expected


def test_moving_a_record_to_another_chain(db):
    """Changing the chain column moves a record: a hole in one chain, a duplicate in the other."""
    populate(db)
    tamper(db, DROP_UNIQUE + f"UPDATE ledger.records SET anchor_id = '{B}' WHERE {where(3)}")
    found = db.verify()
    assert found == db.offline_verify()
    assert db.verify("ledger.records", A) == [(A, 4, "seq_gap"), (A, 4, "prev_hash_mismatch")]
    b_problems = db.verify("ledger.records", B)
    assert {p for _, _, p in b_problems} >= {"duplicate_seq", "hash_mismatch"}
    assert all(seq == 3 for _, seq, _ in b_problems[:2])
    assert found == db.verify("ledger.records", A) + b_problems


def test_rehashed_chain_is_not_detected_but_checked_consistently(db):
    """FORMAT.md: rewriting and re-hashing a whole chain leaves a valid chain (checkpoints catch it).
    Re-chaining through the trigger after a superuser's rewrite yields a chain both verifiers accept
    (the superuser turning off the shared chain heads, on a server that preloads the library: they
    would link the new first record to the deleted head)."""
    populate(db)
    tamper(db, f"DELETE FROM ledger.records WHERE anchor_id = '{A}'")
    db.execute("SET ledger.shared_heads = off")
    cur = db.conn.cursor()
    for i in range(N):
        insert_record(cur, A, payload={"i": i, "t": "rewritten"})
    assert_clean(db)


@pytest.mark.parametrize("case, statements, expected", [
    ("edit", "UPDATE notes SET body = 'changed' WHERE seq = 2", [(None, 2, "hash_mismatch")]),
    ("delete_middle", "DELETE FROM notes WHERE seq = 2",
     [(None, 3, "seq_gap"), (None, 3, "prev_hash_mismatch")]),
    ("edit_chainless_key", "UPDATE notes SET id = 100 WHERE seq = 3", [(None, 3, "hash_mismatch")]),
])
def test_tampering_single_chain_user_table(db, case, statements, expected):
    db.execute("CREATE TABLE notes (id int PRIMARY KEY, body text, at timestamptz DEFAULT now())")
    db.execute("SELECT ledger.enable('notes')")
    db.execute("INSERT INTO notes (id, body) SELECT g, 'note ' || g FROM generate_series(1, 4) g")
    assert_clean(db, "notes")
    tamper(db, statements, "notes")
    assert db.verify("notes") == expected
    assert db.offline_verify("notes") == expected
    with pytest.raises(errors.InvalidParameterValue):
        db.verify("notes", "some chain")
