"""Schema changes of a ledger with data: the table's owner (not a superuser) adds columns with plain
ALTER TABLE ... ADD COLUMN. Outcome: the old records, their checkpoints, proofs and digests verify
unchanged, in the database and offline; records appended afterwards cover the new columns where they
have a value; and every superuser attack on what the addition covers is caught by both verifiers:
an edit of a new value, a value put into an old record, a value removed, and a registry rewritten to
hash the columns differently."""

from __future__ import annotations

import json

import psycopg
import pytest

from ledgertest import offline_digest, offline_verify


def checks(db, cid) -> dict:
    return {item: ok for item, ok, _ in db.fetchall("SELECT * FROM ledger.verify_checkpoint(%s)", (cid,))}


def tamper(db, statement: str, params=None) -> None:
    """As a superuser: the change trigger off, the statement, the trigger back as it was."""
    db.execute("ALTER TABLE orders DISABLE TRIGGER ledger_refuse_change")
    db.execute(statement, params)
    db.execute("ALTER TABLE orders ENABLE ALWAYS TRIGGER ledger_refuse_change")


@pytest.fixture
def altered(db, roles):
    """A ledger made and filled by its owner, checkpointed (with a digest and a proof), then given
    two columns by the owner, and appended to with and without values in them."""
    owner = roles.make("owner", create_in_public=True)
    as_owner = roles.connect(owner)
    as_owner.execute("CREATE TABLE orders (id int PRIMARY KEY, account text NOT NULL, amount numeric NOT NULL)")
    as_owner.execute("INSERT INTO orders SELECT i, CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END, i "
                     "FROM generate_series(1, 20) i")
    as_owner.execute("SELECT ledger.enable('orders', 'account')")
    before = db.scalar("SELECT cid FROM ledger.checkpoint('orders', 'a')")
    digest = db.scalar("SELECT ledger.digest(%s)", (before,))
    proof = db.scalar("SELECT ledger.inclusion_proof(%s, 3)", (before,))
    as_owner.execute("ALTER TABLE orders ADD COLUMN memo text, ADD COLUMN due date")
    as_owner.execute("INSERT INTO orders (id, account, amount, memo, due) VALUES (21, 'a', 21, 'with both', '2027-01-31')")
    as_owner.execute("INSERT INTO orders (id, account, amount, memo) VALUES (22, 'b', 22, 'memo only')")
    as_owner.execute("INSERT INTO orders (id, account, amount) VALUES (23, 'a', 23)")
    return db, owner, before, digest, proof


def test_old_evidence_verifies_after_columns_are_added(altered):
    db, owner, before, digest, proof = altered
    assert db.verify("orders") == []
    assert offline_verify(db.export_lines("orders")) == []
    assert db.fetchone("SELECT event, actor FROM ledger.events WHERE ledger = 'public.orders' "
                       "ORDER BY seq DESC LIMIT 1") == ("alter", owner)
    # The checkpoint, digest and proof made before the change.
    assert set(checks(db, before).values()) <= {True, None}, checks(db, before)
    assert all(ok is not False for _, ok, _ in db.fetchall("SELECT * FROM ledger.verify_digest(%s)", (digest,)))
    assert db.scalar("SELECT ledger.verify_inclusion(o.hash, %s, c.merkle_root, c.record_count) "
                     "FROM orders o, ledger.checkpoints c WHERE o.account = 'a' AND o.seq = 3 AND c.cid = %s",
                     (json.dumps(proof), before)) is True
    status, out = offline_digest(db.export_lines("orders"), digest, allow_unsigned=True)
    assert out["digest"]["definition"][0] is True, out
    assert out["digest"]["extends"][0] is True, out
    # A checkpoint after the change extends the one before it.
    after = db.scalar("SELECT cid FROM ledger.checkpoint('orders', 'a')")
    assert set(checks(db, after).values()) <= {True, None}
    consistency = db.scalar("SELECT ledger.consistency_proof(%s, %s)", (before, after))
    assert db.scalar("SELECT ledger.verify_consistency(%s)", (json.dumps(consistency),)) is True
    # The export says which columns were added; its definitions list them.
    header = json.loads(db.export_lines("orders")[0])
    assert [c.get("added", False) for c in header["columns"]] == [False] * 5 + [True, True]
    assert "\nadded memo due\n" in header["definition"] and len(header["earlier_definitions"]) == 1


@pytest.mark.parametrize("attack, statement, at", [
    ("edit a new value", "UPDATE orders SET memo = 'edited' WHERE id = 21", ("a", 11)),
    ("put a value into an old record", "UPDATE orders SET memo = 'smuggled' WHERE id = 4", ("a", 2)),
    ("put a value into a new record that had none", "UPDATE orders SET due = '2027-02-01' WHERE id = 22", ("b", 11)),
    ("remove a value", "UPDATE orders SET memo = NULL WHERE id = 22", ("b", 11)),
])
def test_superuser_edits_of_added_columns_are_caught(altered, attack, statement, at):
    db = altered[0]
    tamper(db, statement)
    assert db.verify("orders") == [(*at, "hash_mismatch")], attack
    assert [p[:3] for p in offline_verify(db.export_lines("orders"))] == [(*at, "hash_mismatch")], attack


def test_a_rewritten_registry_is_caught(altered):
    """A superuser who makes the registry hash the added columns in every record (as if they had
    been there from the start) changes every old record's bytes; one who drops them from the
    registry changes the ledger's definition."""
    db = altered[0]

    def verify_afresh() -> list[tuple]:
        # A new session: the registry was written behind the back of sessions that cached it.
        with db.connect(autocommit=True) as conn:
            return [tuple(r) for r in conn.execute("SELECT * FROM ledger.verify('orders')").fetchall()]

    db.execute("UPDATE ledger.ledgers SET base_columns = NULL WHERE tbl = 'orders'::regclass")
    found = verify_afresh()
    assert found and all(problem in ("definition_changed", "hash_mismatch") for _, _, problem, _ in found), found
    # Every record with NULL in an added column: the 20 old ones, and 22 and 23 of the 23.
    assert sum(problem == "hash_mismatch" for _, _, problem, _ in found) == 22
    db.execute("UPDATE ledger.ledgers SET base_columns = 5, columns = columns[1:5], "
               "column_types = column_types[1:5] WHERE tbl = 'orders'::regclass")
    found = verify_afresh()
    assert found[0][2] == "definition_changed", found
    assert "- hashed id account amount seq prev_hash memo due" in found[0][3], found


def test_what_cannot_be_covered_is_refused_for_the_owner(altered, roles):
    db, owner = altered[0], altered[1]
    as_owner = roles.connect(owner)
    for statement, sqlstate in [
        ("ALTER TABLE orders ADD COLUMN flag boolean DEFAULT true", "0A000"),
        ("ALTER TABLE orders ADD COLUMN spot point", "0A000"),
        ("ALTER TABLE orders ADD COLUMN n bigint GENERATED ALWAYS AS IDENTITY", "42501"),
        ("ALTER TABLE orders DROP COLUMN memo", "42501"),
        ("ALTER TABLE orders RENAME COLUMN memo TO note", "42501"),
        ("ALTER TABLE orders ALTER COLUMN memo TYPE varchar(50)", "42501"),
    ]:
        with pytest.raises(psycopg.Error) as refused:
            as_owner.execute(statement)
        assert refused.value.sqlstate == sqlstate, (statement, refused.value)
        assert refused.value.diag.message_hint, statement  # each says what to do instead
    assert db.verify("orders") == []
    assert db.scalar("SELECT count(*) FROM ledger.events WHERE ledger = 'public.orders' AND event = 'alter'") == 1


def test_a_writer_whose_snapshot_predates_the_addition_covers_the_new_column(db):
    """A REPEATABLE READ transaction that took its snapshot before the column was added, and then
    writes a value into it, hashes it: the registry is read as of now, as the catalog is."""
    db.execute("CREATE TABLE orders (id int PRIMARY KEY, account text NOT NULL, amount numeric NOT NULL)")
    db.execute("SELECT ledger.enable('orders', 'account')")
    db.execute("INSERT INTO orders VALUES (1, 'a', 1)")
    writer = db.connect(isolation_level=psycopg.IsolationLevel.REPEATABLE_READ)
    writer.execute("SELECT count(*) FROM ledger.records")  # the snapshot, without touching orders
    db.execute("ALTER TABLE orders ADD COLUMN memo text")
    writer.execute("INSERT INTO orders (id, account, amount, memo) VALUES (2, 'a', 2, 'late')")
    writer.commit()
    assert db.verify("orders") == []
    assert offline_verify(db.export_lines("orders")) == []
    tamper(db, "UPDATE orders SET memo = 'later' WHERE id = 2")
    assert db.verify("orders") == [("a", 2, "hash_mismatch")]
