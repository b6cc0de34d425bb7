"""Tampering with a history-tracked table and its history ledger, and what catches it.

- A superuser behind the table's trigger (zz_ledger_history disabled): a row edited, deleted,
  inserted, re-inserted after its deletion, its key moved, or only a numeric's scale changed
  (1.50 -> 1.5) is reported by ledger.verify(tbl) as state_mismatch / state_missing /
  state_unrecorded naming the key and the history's last seq; an UPDATE that changes nothing is not.
- A superuser behind the history ledger's triggers: an edited version is a hash_mismatch at that key
  and seq (and a state_mismatch when it is the newest); deleting the newest version of a key (which
  an ordinary ledger's verify cannot see) is caught by the state check, as the problem the replay
  then gives; a forged version with a recomputed hash is a consistent chain, caught by the state
  check unless the row is forged to match; a rewritten and re-hashed older version passes verify and
  is caught by a checkpoint made before.
- The table's owner, not a superuser, cannot write the history (42501 to INSERT, 23001 to change
  it), nor alter, add or disable triggers of, rename or drop the tracked table or its history
  (42501): nothing changes. A role with UPDATE on the table only is
  recorded as the role of its changes.
- A cast to json of a column's type (which to_jsonb uses, and a table owner may create) runs as
  the writer or verifier, never as the extension's owner.
"""

from __future__ import annotations

import json

import psycopg
import pytest

from ledgertest import Database

HISTORY_TRIGGERS = ("zz_ledger_append", "ledger_refuse_change", "ledger_refuse_truncate")


def key(i: int) -> str:
    return json.dumps({"id": i})


@pytest.fixture
def tracked(db):
    """acct tracked: id 1 (2 versions, amount 1.50), 2 (3 versions), 3 (2), 4 (3, deleted), 5 (1)."""
    db.execute("CREATE TABLE acct (id int PRIMARY KEY, owner text NOT NULL, amount numeric NOT NULL)")
    db.execute("INSERT INTO acct VALUES (1, 'ann', 1.50), (2, 'bob', 2), (3, 'cy', 3), (4, 'dee', 4)")
    db.execute("SELECT ledger.enable_history('acct')")
    db.execute("UPDATE acct SET owner = owner || '+'")
    db.execute("UPDATE acct SET owner = owner || '+' WHERE id = 2")
    db.execute("DELETE FROM acct WHERE id = 4")
    db.execute("INSERT INTO acct VALUES (5, 'eve', 5)")
    assert dict(db.fetchall("SELECT key, max(seq) FROM acct_history GROUP BY key")) == {
        key(1): 2, key(2): 3, key(3): 2, key(4): 3, key(5): 1}
    assert db.verify("acct") == []
    return db


def behind_the_trigger(db: Database, statement: str) -> None:
    db.execute("ALTER TABLE acct DISABLE TRIGGER zz_ledger_history")
    db.execute(statement)
    db.execute("ALTER TABLE acct ENABLE ALWAYS TRIGGER zz_ledger_history")


def behind_the_history(db: Database, statements: str) -> None:
    """As a superuser: the history ledger's triggers off, the statements, the triggers back."""
    db.execute("ALTER TABLE acct_history DISABLE TRIGGER ALL")
    db.execute(statements)
    db.execute("ALTER TABLE acct_history " + ", ".join(f"ENABLE ALWAYS TRIGGER {t}" for t in HISTORY_TRIGGERS))


def history_rows(db: Database) -> list[tuple]:
    return db.fetchall('SELECT key, seq, op, "row", hash FROM acct_history ORDER BY key, seq')


# name -> (statement with zz_ledger_history disabled, ledger.verify('acct') as (chain, seq, problem)).
BEHIND_TRIGGER = {
    "edit_row": ("UPDATE acct SET owner = 'mallory' WHERE id = 3", [(key(3), 2, "state_mismatch")]),
    "delete_row": ("DELETE FROM acct WHERE id = 3", [(key(3), 2, "state_missing")]),
    "insert_row": ("INSERT INTO acct VALUES (9, 'mallory', 9)", [(key(9), None, "state_unrecorded")]),
    "reinsert_deleted_row": ("INSERT INTO acct VALUES (4, 'dee+', 4)", [(key(4), 3, "state_unrecorded")]),
    "numeric_scale_only": ("UPDATE acct SET amount = 1.5 WHERE id = 1", [(key(1), 2, "state_mismatch")]),
    "move_key": ("UPDATE acct SET id = 30 WHERE id = 3",
                 [(key(30), None, "state_unrecorded"), (key(3), 2, "state_missing")]),  # key text order
    "update_to_same_values": ("UPDATE acct SET owner = owner, amount = amount WHERE id = 2", []),
}


@pytest.mark.parametrize("name", list(BEHIND_TRIGGER))
def test_change_behind_the_trigger_is_reported_at_its_key(tracked, name):
    db = tracked
    statement, expected = BEHIND_TRIGGER[name]
    history = history_rows(db)
    behind_the_trigger(db, statement)
    assert history_rows(db) == history  # nothing recorded
    assert db.verify("acct") == expected
    assert db.verify("acct_history") == []  # the history itself is intact
    for chain, seq, problem in expected:
        assert db.verify("acct", chain) == [(chain, seq, problem)]
    assert db.verify("acct", key(5)) == []


def test_numeric_scale_is_reported_with_its_detail(tracked):
    """jsonb says 1.5 = 1.50; the table's numeric keeps the scale, and so does the check."""
    db = tracked
    behind_the_trigger(db, "UPDATE acct SET amount = 1.5 WHERE id = 1")
    assert db.scalar("SELECT amount::text FROM acct WHERE id = 1") == "1.5"
    assert db.scalar("""SELECT "row" -> 'amount' = '1.5'::jsonb FROM acct_history WHERE key = %s AND seq = 2""",
                     (key(1),)) is True
    assert db.verify_details("acct") == [
        (key(1), 2, "state_mismatch", "the row differs from the history's last version (seq 2)")]


# name -> (statements with the history's triggers disabled, ledger.verify('acct')).
BEHIND_HISTORY = {
    "edit_older_version": (
        f"""UPDATE acct_history SET "row" = jsonb_set("row", '{{owner}}', '"mallory"') WHERE key = '{key(2)}' AND seq = 2""",
        [(key(2), 2, "hash_mismatch")]),
    "edit_newest_version": (
        f"""UPDATE acct_history SET "row" = jsonb_set("row", '{{owner}}', '"mallory"') WHERE key = '{key(2)}' AND seq = 3""",
        [(key(2), 3, "hash_mismatch"), (key(2), 3, "state_mismatch")]),
    "edit_op_of_a_deletion": (
        f"""UPDATE acct_history SET op = 'update', "row" = '{{"id": 4}}' WHERE key = '{key(4)}' AND seq = 3""",
        [(key(4), 3, "hash_mismatch"), (key(4), 3, "state_missing")]),
    # Deleting a chain's newest record is invisible to the chain check (as for any ledger); the
    # replay then ends one version early and the state check names the key at that version.
    "delete_newest_update": (f"DELETE FROM acct_history WHERE key = '{key(2)}' AND seq = 3",
                             [(key(2), 2, "state_mismatch")]),
    "delete_newest_deletion": (f"DELETE FROM acct_history WHERE key = '{key(4)}' AND seq = 3",
                               [(key(4), 2, "state_missing")]),
    "delete_only_version": (f"DELETE FROM acct_history WHERE key = '{key(5)}'",
                            [(key(5), None, "state_unrecorded")]),
    "delete_middle_version": (f"DELETE FROM acct_history WHERE key = '{key(2)}' AND seq = 2",
                              [(key(2), 3, "seq_gap"), (key(2), 3, "prev_hash_mismatch")]),
}


@pytest.mark.parametrize("name", list(BEHIND_HISTORY))
def test_change_behind_the_history_is_reported_at_its_key(tracked, name):
    db = tracked
    statements, expected = BEHIND_HISTORY[name]
    before = history_rows(db)
    behind_the_history(db, statements)
    assert history_rows(db) != before
    assert db.verify("acct") == expected
    chain = expected[0][0]
    assert db.verify("acct", chain) == expected
    assert db.verify("acct", key(3)) == []


FORGE = f"""
    INSERT INTO acct_history (key, op, at, role, txid, "row", seq, prev_hash, hash)
    SELECT key, 'update', now(), 'bob', txid_current(), jsonb_set("row", '{{owner}}', '"mallory"'), seq + 1, hash, ''
      FROM acct_history WHERE key = '{key(2)}' AND seq = 3;
    UPDATE acct_history SET hash = ledger.sha3_256(ledger.canonical_bytes('acct_history', key, seq))
     WHERE key = '{key(2)}' AND seq = 4;
"""


def checkpoint_of_key_2(db: Database) -> str:
    return str(db.scalar("SELECT cid FROM ledger.checkpoint('acct_history', %s)", (key(2),)))


def merkle_root_ok(db: Database, cid: str) -> bool:
    return {c: ok for c, ok, _ in db.fetchall("SELECT * FROM ledger.verify_checkpoint(%s)", (cid,))}["merkle_root"]


def test_forged_version_with_recomputed_hash_is_caught_by_the_state_check(tracked):
    db = tracked
    cid = checkpoint_of_key_2(db)
    behind_the_history(db, FORGE)
    assert db.fetchone('SELECT op, "row" ->> \'owner\' FROM ledger.history(\'acct\', \'{"id": 2}\') '
                       "ORDER BY seq DESC LIMIT 1") == ("update", "mallory")
    assert db.verify("acct_history") == []  # a consistent chain
    assert db.verify("acct") == [(key(2), 4, "state_mismatch")]
    # An appended version extends the checkpointed chain: the checkpoint still holds.
    assert merkle_root_ok(db, cid) is True


def test_forged_version_with_a_matching_row_is_not_detected(tracked):
    """What a superuser appends to both, consistently, is indistinguishable from a change made through
    the trigger (the threat model's limit): verify and the checkpoint made before both pass."""
    db = tracked
    cid = checkpoint_of_key_2(db)
    behind_the_history(db, FORGE)
    behind_the_trigger(db, "UPDATE acct SET owner = 'mallory' WHERE id = 2")
    assert db.verify("acct") == []
    assert merkle_root_ok(db, cid) is True


def test_rewritten_and_rehashed_version_is_caught_by_a_checkpoint_made_before(tracked):
    db = tracked
    cid = checkpoint_of_key_2(db)
    assert merkle_root_ok(db, cid) is True
    k = key(2)
    behind_the_history(db, f"""
        UPDATE acct_history SET "row" = jsonb_set("row", '{{owner}}', '"mallory"') WHERE key = '{k}' AND seq = 2;
        UPDATE acct_history SET hash = ledger.sha3_256(ledger.canonical_bytes('acct_history', key, seq))
         WHERE key = '{k}' AND seq = 2;
        UPDATE acct_history SET prev_hash = (SELECT hash FROM acct_history WHERE key = '{k}' AND seq = 2)
         WHERE key = '{k}' AND seq = 3;
        UPDATE acct_history SET hash = ledger.sha3_256(ledger.canonical_bytes('acct_history', key, seq))
         WHERE key = '{k}' AND seq = 3;
    """)
    assert db.fetchall('SELECT seq, "row" ->> \'owner\' FROM ledger.history(\'acct\', \'{"id": 2}\')') == [
        (1, "bob"), (2, "mallory"), (3, "bob++")]
    assert db.verify("acct") == []  # a consistent chain whose newest version is the row
    assert merkle_root_ok(db, cid) is False


# ---- the table's owner -------------------------------------------------------------------------

OWNER_REFUSED = [
    ("""INSERT INTO owned_history (key, op, at, role, txid, "row") VALUES ('{"id": 9}', 'insert', now(), 'me', 1, '{"id": 9}')""",
     "42501"),
    # A second recording trigger would record every change twice.
    "CREATE TRIGGER again AFTER UPDATE ON owned FOR EACH ROW EXECUTE FUNCTION ledger.record_version()",
    ("UPDATE owned_history SET \"row\" = '{\"id\": 1, \"v\": \"forged\"}' WHERE seq = 1", "23001"),
    ("DELETE FROM owned_history", "23001"),
    ("TRUNCATE owned_history", "23001"),
    ("TRUNCATE owned", "23001"),
    "ALTER TABLE owned RENAME COLUMN v TO w",
    "ALTER TABLE owned ALTER COLUMN v TYPE varchar(10)",
    "ALTER TABLE owned DISABLE TRIGGER zz_ledger_history",
    "ALTER TABLE owned DISABLE TRIGGER ALL",
    "DROP TRIGGER zz_ledger_history ON owned",
    "ALTER TABLE owned RENAME TO renamed",
    "DROP TABLE owned",
    "ALTER TABLE owned_history DISABLE TRIGGER ledger_refuse_change",
    "DROP TABLE owned_history",
]


def test_table_owner_cannot_write_the_history_or_change_the_table(db, roles):
    owner = roles.make("owner", create_in_public=True)
    writer = roles.make("writer")
    as_owner = roles.connect(owner)
    as_owner.execute("CREATE TABLE owned (id int PRIMARY KEY, v text)")
    assert as_owner.execute("SELECT ledger.enable_history('owned')::text").fetchone() == ("owned_history",)
    as_owner.execute("INSERT INTO owned VALUES (1, 'a'), (2, 'b')")
    as_owner.execute(f'GRANT SELECT, UPDATE ON owned TO "{writer}"')
    before = db.fetchall('SELECT key, seq, op, "row", hash FROM owned_history ORDER BY key, seq')
    definition = db.scalar("SELECT ledger.definition('owned')")

    for case in OWNER_REFUSED:
        statement, sqlstate = case if isinstance(case, tuple) else (case, "42501")
        with pytest.raises(psycopg.Error) as refused:
            as_owner.execute(statement)
        assert refused.value.sqlstate == sqlstate, (statement, refused.value)
    assert db.fetchall('SELECT key, seq, op, "row", hash FROM owned_history ORDER BY key, seq') == before
    assert db.scalar("SELECT ledger.definition('owned')") == definition
    assert db.verify("owned") == []

    # A role that may only update the table: its change is recorded under its name, and it cannot
    # read the history it cannot write either.
    as_writer = roles.connect(writer)
    as_writer.execute("UPDATE owned SET v = 'by writer' WHERE id = 2")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        as_writer.execute("""SELECT * FROM ledger.history('owned', '{"id": 2}')""")
    assert as_owner.execute("""SELECT seq, op, role::text, "row" FROM ledger.history('owned', '{"id": 2}')""").fetchall() == [
        (1, "insert", owner, {"id": 2, "v": "b"}), (2, "update", writer, {"id": 2, "v": "by writer"})]
    assert as_owner.execute("SELECT count(*) FROM ledger.verify('owned')").fetchone() == (0,)


def test_casts_of_a_column_type_run_as_the_writer_never_as_the_extension_owner(db, roles):
    """to_jsonb uses a type's cast to json when it has one, and a table owner may create one: the
    trigger, the first versions and the state check compute rows as the role that wrote or verifies
    them, so such a cast never runs with the extension owner's rights."""
    owner = roles.make("caster", create_in_public=True)
    as_owner = roles.connect(owner)
    as_owner.execute("CREATE TABLE spy (role text, during text)")
    as_owner.execute("CREATE TYPE mood AS ENUM ('calm', 'cross')")
    as_owner.execute("""
        CREATE FUNCTION mood_json(m mood) RETURNS json LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO public.spy VALUES (current_user, current_setting('application_name'));
            RETURN to_json(m::text);
        END $$""")
    as_owner.execute("CREATE CAST (mood AS json) WITH FUNCTION mood_json(mood)")
    as_owner.execute("CREATE TABLE moods (id int PRIMARY KEY, m mood NOT NULL)")
    as_owner.execute("INSERT INTO moods VALUES (1, 'calm')")
    as_owner.execute("SET application_name = 'enable'")
    as_owner.execute("SELECT ledger.enable_history('moods')")
    as_owner.execute("SET application_name = 'update'")
    as_owner.execute("UPDATE moods SET m = 'cross' WHERE id = 1")
    as_owner.execute("SET application_name = 'verify'")
    assert as_owner.execute("SELECT count(*) FROM ledger.verify('moods')").fetchone() == (0,)
    calls = db.fetchall("SELECT DISTINCT role, during FROM spy ORDER BY during")
    assert {during for _, during in calls} == {"enable", "update", "verify"}, calls
    assert {role for role, _ in calls} == {owner}, calls
    assert as_owner.execute("""SELECT "row" FROM ledger.history('moods', '{"id": 1}')""").fetchall() == [
        ({"id": 1, "m": "calm"},), ({"id": 1, "m": "cross"},)]
    # The cast depends on its function, which the roles' teardown would not drop in order.
    db.execute("DROP TABLE moods, moods_history, spy")
    db.execute("DROP CAST (mood AS json)")
    db.execute("DROP FUNCTION mood_json(mood)")
    db.execute("DROP TYPE mood")


def test_superuser_ddl_on_the_tracked_table_changes_its_history_fingerprint(tracked):
    """A history ledger's definition names its tracked table's (the history_of line): a
    superuser's ALTER TABLE of the tracked table is reported for both, and a checkpoint of the
    history made before it no longer matches its definition."""
    db = tracked
    cid = db.scalar("SELECT cid FROM ledger.checkpoint('acct_history', %s)", (key(1),))
    assert db.verify("acct") == []
    # Behind the guard's back (which would register an addition and record every row again).
    db.execute("ALTER EVENT TRIGGER ledger_guard_ddl DISABLE")
    db.execute("ALTER TABLE acct ADD COLUMN note text")
    db.execute("ALTER EVENT TRIGGER ledger_guard_ddl ENABLE")
    problems = [(chain, seq, problem) for chain, seq, problem in db.verify("acct")]
    assert problems[:2] == [(None, None, "definition_changed"), (None, None, "definition_changed")], problems
    details = [d for _, _, p, d in db.fetchall("SELECT * FROM ledger.verify('acct')") if p == "definition_changed"]
    assert any("+ column note text" in d for d in details), details
    assert any("- history_of public.acct " in d for d in details), details
    checks = dict((item, ok) for item, ok, _ in db.fetchall("SELECT * FROM ledger.verify_checkpoint(%s)", (cid,)))
    assert checks["definition"] is False, checks
