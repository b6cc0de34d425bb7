"""A superuser can change anything; what it changes is DETECTED, and these tests pin down by which
function (docs/THREAT_MODEL.md, "superuser").

- With the event triggers gone (taken out of the extension and dropped by a superuser), the table's
  owner — not a superuser — may change the ledger's definition. ledger.verify then reports a
  `definition_changed` row (chain and seq NULL) whose detail names the changed lines, and
  verify_checkpoint of a checkpoint made before reports `definition` false; a checkpoint made after
  records the new fingerprint (its own `definition` is true) while the earlier one stays false.
- `ALTER TABLE ... ENABLE TRIGGER ALL` after tampering leaves the triggers ORIGIN: definition_changed.
- Heap pages edited on disk with the server stopped (data checksums off): a changed column value is
  caught by ledger.verify (hash_mismatch at that seq) and the offline verifier, NOT by
  verify_checkpoint (the stored hashes, which its Merkle root covers, are unchanged); a changed stored
  `hash` is caught by both ledger.verify (hash_mismatch, then prev_hash_mismatch of the next record)
  and verify_checkpoint (`merkle_root` false).
- A superuser's DROP TABLE of a ledger is recorded in ledger.events ('drop', the actor) and the
  ledger's checkpoints stay in ledger.checkpoints."""

from __future__ import annotations

import hashlib
import re

import psycopg
import pytest

from clusters import own_cluster
from ledgertest import Database, assert_clean, offline_verify

N = 6  # records in the test ledger
TRIGGERS = ("zz_ledger_append", "ledger_refuse_change", "ledger_refuse_truncate")


def drop_event_triggers(db: Database) -> None:
    """What a superuser can do: the event triggers belong to the extension, so a plain DROP is refused
    (2BP01) until they are taken out of it."""
    with pytest.raises(psycopg.errors.DependentObjectsStillExist):
        db.execute("DROP EVENT TRIGGER ledger_guard_ddl")
    for name in ("ledger_guard_ddl", "ledger_guard_drop", "ledger_guard_rewrite"):
        db.execute(f"ALTER EXTENSION ledger DROP EVENT TRIGGER {name}")
        db.execute(f"DROP EVENT TRIGGER {name}")
    assert db.scalar("SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'ledger_guard%'") == 0


def make_ledger(conn: psycopg.Connection, name: str = "n") -> None:
    conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, body text NOT NULL, extra text)")
    conn.execute(f"SELECT ledger.enable('{name}')")
    conn.execute(f"INSERT INTO {name} SELECT g, 'body ' || g, 'extra' FROM generate_series(1, {N}) g")


def checkpoint(db: Database, tbl: str = "n") -> str:
    return str(db.scalar("SELECT cid FROM ledger.checkpoint(%s::regclass)", (tbl,)))


def checks(db: Database, cid: str) -> dict:
    return {c: ok for c, ok, _ in db.fetchall("SELECT * FROM ledger.verify_checkpoint(%s)", (cid,))}


def details(db: Database, cid: str) -> dict:
    return {c: detail for c, _, detail in db.fetchall("SELECT * FROM ledger.verify_checkpoint(%s)", (cid,))}


def trigger(name: str, state: str) -> str:
    event = {"zz_ledger_append": "BEFORE INSERT", "ledger_refuse_change": "BEFORE DELETE OR UPDATE",
             "ledger_refuse_truncate": "BEFORE TRUNCATE"}[name]
    each = "STATEMENT" if name == "ledger_refuse_truncate" else "ROW"
    function = "append_row" if name == "zz_ledger_append" else "refuse_change"
    return (f"trigger CREATE TRIGGER {name} {event} ON public.n FOR EACH {each} "
            f"EXECUTE FUNCTION ledger.{function}() enabled {state}")


# The owner's change once the event triggers are gone -> the lines the detail must name.
CHANGES = {
    "disable_trigger": ("ALTER TABLE n DISABLE TRIGGER ledger_refuse_change",
                        [f"- {trigger('ledger_refuse_change', 'A')}", f"+ {trigger('ledger_refuse_change', 'D')}"]),
    "drop_trigger": ("DROP TRIGGER zz_ledger_append ON n", [f"- {trigger('zz_ledger_append', 'A')}"]),
    # A column with a default (old records would read it); one without is registered (test_alter.py).
    "add_column": ("ALTER TABLE n ADD COLUMN more text DEFAULT 'x'", ["+ column more text"]),
    "retype_column": ("ALTER TABLE n ALTER COLUMN extra TYPE varchar(20)",
                      ["- column extra text", "+ column extra character varying(20)"]),
    "drop_not_null": ("ALTER TABLE n ALTER COLUMN body DROP NOT NULL",
                      ["- column body text not null", "+ column body text"]),
    "rule": ("CREATE RULE keep AS ON UPDATE TO n DO INSTEAD NOTHING",
             ["+ rule CREATE RULE keep AS ON UPDATE TO public.n DO INSTEAD NOTHING;"]),
    "unlogged": ("ALTER TABLE n SET UNLOGGED", ["- persistence p", "+ persistence u"]),
    "row_security": ("ALTER TABLE n ENABLE ROW LEVEL SECURITY",
                     ["- row_security false false", "+ row_security true false"]),
    # A hashed column gone or renamed: documented as detected like any other change of the definition.
    "drop_column": ("ALTER TABLE n DROP COLUMN extra", ["- column extra text"]),
    "rename_column": ("ALTER TABLE n RENAME COLUMN extra TO other", ["- column extra text", "+ column other text"]),
    "rename_table": ("ALTER TABLE n RENAME TO renamed", ["- table public.n", "+ table public.renamed"]),
    "inheritance_child": ("CREATE TABLE kid () INHERITS (n)", ["+ inherited_by public.kid"]),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_owner_change_after_event_triggers_dropped_is_detected(db, roles, change):
    statement, lines = CHANGES[change]
    owner = roles.make("owner", create_in_public=True)
    as_owner = roles.connect(owner)
    make_ledger(as_owner)
    before = checkpoint(db)
    assert set(checks(db, before).values()) == {True, None}  # None: unsigned

    # With the guards in place the owner is refused (42501; 0A000 for the column with a default)
    # and nothing changes ...
    refusal = psycopg.errors.FeatureNotSupported if change == "add_column" else psycopg.errors.InsufficientPrivilege
    with pytest.raises(refusal):
        as_owner.execute(statement)
    assert db.verify("n") == []
    # ... once a superuser has dropped them, the same statement goes through.
    drop_event_triggers(db)
    as_owner.execute(statement)
    tbl = "renamed" if change == "rename_table" else "n"

    found = db.verify_details(tbl)
    assert found and found[0][:3] == (None, None, "definition_changed"), found
    detail = found[0][3]
    assert detail.startswith("since it was enabled: "), detail
    for line in lines:
        assert line in detail.split("; ") or line.rstrip(";") in detail, (line, detail)
    old = checks(db, before)
    assert old["definition"] is False, old
    assert old["checkpoint_row"] is True, old

    if change in ("drop_column", "rename_column"):
        # A hashed column is gone: the records cannot be recomputed, and verify says so instead of
        # reporting them intact; checkpoints cannot be made until the definition is restored.
        assert [f[2] for f in found[1:]] == ["unverifiable"], found
        assert 'lost column "extra"' in found[1][3], found
        assert old["merkle_root"] is False and 'lost column "extra"' in details(db, before)["merkle_root"]
        with pytest.raises(psycopg.errors.InvalidTableDefinition):
            checkpoint(db, tbl)
        return
    assert found[1:] == [], found  # the rows themselves are intact
    if change == "rename_table":
        # Checkpoints name their table: under its new name it is, for them, gone.
        assert old["merkle_root"] is False and "no longer exists" in details(db, before)["merkle_root"]
    else:
        assert old["merkle_root"] is True, old  # the records are unchanged

    # A checkpoint made now records the new definition; the earlier one keeps failing.
    after = checkpoint(db, tbl)
    assert checks(db, after)["definition"] is True
    assert checks(db, before)["definition"] is False
    assert db.verify_details(tbl)[0][2] == "definition_changed"  # still against the registration


def test_disabled_trigger_lets_the_owner_edit_and_both_are_reported(db, roles):
    owner = roles.make("owner", create_in_public=True)
    as_owner = roles.connect(owner)
    make_ledger(as_owner)
    before = checkpoint(db)
    drop_event_triggers(db)
    as_owner.execute("ALTER TABLE n DISABLE TRIGGER ledger_refuse_change")
    as_owner.execute("UPDATE n SET body = 'changed' WHERE id = 3")
    assert db.verify("n") == [(None, None, "definition_changed"), (None, 3, "hash_mismatch")]
    # The export carries the registered and today's definitions: the offline verifier sees both.
    assert db.offline_verify("n") == [(None, None, "definition_changed"), (None, 3, "hash_mismatch")]
    old = checks(db, before)
    assert (old["definition"], old["merkle_root"]) == (False, True), old  # stored hashes untouched


def test_rewrite_after_event_triggers_dropped_is_detected(db, roles):
    """A table rewrite replaces rows without row triggers and leaves the definition as it was: with
    the guards in place the owner is refused; without them the rewritten values are caught by
    verify, and rewritten hashes by the checkpoint made before."""
    owner = roles.make("owner", create_in_public=True)
    as_owner = roles.connect(owner)
    make_ledger(as_owner)
    before = checkpoint(db)
    rewrite = "ALTER TABLE n ALTER COLUMN body TYPE text USING upper(body)"
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        as_owner.execute(rewrite)
    assert db.verify("n") == []
    drop_event_triggers(db)
    as_owner.execute(rewrite)
    assert db.verify("n") == [(None, seq, "hash_mismatch") for seq in range(1, N + 1)]
    assert checks(db, before)["merkle_root"] is True  # the stored hashes are as checkpointed
    # A second rewrite recomputes every hash in its USING expression: each record matches its hash
    # again, the links do not, and the checkpoint's root no longer matches.
    db.execute("ALTER TABLE n ALTER COLUMN hash TYPE char(64) USING "
               "ledger.sha3_256(ledger.canonical_bytes('n', NULL, seq))")
    assert db.verify("n")[:1] == [(None, 2, "prev_hash_mismatch")]
    assert checks(db, before)["merkle_root"] is False


def test_enable_trigger_all_after_tampering_is_definition_changed(db):
    make_ledger(db.conn)
    before = checkpoint(db)
    db.execute("ALTER TABLE n DISABLE TRIGGER ALL")
    db.execute("UPDATE n SET body = 'changed' WHERE id = 2")
    db.execute("ALTER TABLE n ENABLE TRIGGER ALL")  # ORIGIN, not ALWAYS
    assert db.fetchall("SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'n'::regclass "
                       "ORDER BY tgname") == [(name, "O") for name in sorted(TRIGGERS)]
    found = db.verify_details("n")
    assert [r[:3] for r in found] == [(None, None, "definition_changed"), (None, 2, "hash_mismatch")]
    changes = found[0][3].removeprefix("since it was enabled: ").split("; ")
    assert sorted(changes) == sorted([f"- {trigger(t, 'A')}" for t in TRIGGERS]
                                     + [f"+ {trigger(t, 'O')}" for t in TRIGGERS]), changes
    assert checks(db, before)["definition"] is False

    # Putting them back as ALWAYS restores the registered definition; the edited record stays reported.
    db.execute("ALTER TABLE n " + ", ".join(f"ENABLE ALWAYS TRIGGER {t}" for t in TRIGGERS))
    assert db.verify("n") == [(None, 2, "hash_mismatch")]
    assert checks(db, before)["definition"] is True


def test_superuser_drop_table_is_recorded_and_checkpoints_stay(db):
    make_ledger(db.conn)
    cids = {checkpoint(db)}
    db.execute("INSERT INTO n VALUES (100, 'more', NULL)")
    cids.add(checkpoint(db))
    fingerprint = hashlib.sha3_256(db.scalar("SELECT definition FROM ledger.ledgers WHERE tbl = 'n'::regclass")
                                   .encode()).hexdigest()
    db.execute("DROP TABLE n")

    assert db.fetchall("SELECT event, actor, definition, reason, seq FROM ledger.events "
                       "WHERE ledger = 'public.n' ORDER BY seq") == [
        ("enable", "postgres", fingerprint, None, 1),
        ("drop", "postgres", fingerprint, "dropped by a superuser", 2)]
    # The registry forgets the table (only the extension's own ledgers are left).
    assert db.fetchall("SELECT tbl::text FROM ledger.ledgers ORDER BY 1") == [
        ("ledger.checkpoints",), ("ledger.events",), ("ledger.pruned",), ("ledger.records",), ("ledger.verify_runs",)]
    assert {str(c) for c, in db.fetchall("SELECT cid FROM ledger.checkpoints WHERE ledger = 'public.n'")} == cids
    for cid in cids:
        result = {c: (ok, d) for c, ok, d in db.fetchall("SELECT * FROM ledger.verify_checkpoint(%s)", (cid,))}
        assert result["checkpoint_row"][0] is True
        assert result["merkle_root"][0] is False and "no longer exists" in result["merkle_root"][1], result
    for tbl in ("ledger.events", "ledger.checkpoints"):
        assert_clean(db, tbl)


# ---- heap pages edited on disk -------------------------------------------------------------------


def heap_file(cluster, db: Database, tbl: str):
    return cluster.data / db.scalar("SELECT pg_relation_filepath(%s::regclass)", (tbl,))


def edit_on_disk(cluster, db: Database, tbl: str, pattern: bytes, old: bytes, new: bytes) -> Database:
    """CHECKPOINT, stop the server cleanly, replace `old` by `new` (same length) where `pattern` (a
    regex with one group around `old`) matches exactly once in the table's heap file, start again.
    Returns a new connection to the database."""
    assert len(old) == len(new)
    db.execute("CHECKPOINT")
    path = heap_file(cluster, db, tbl)
    db.close_all()
    cluster.stop("fast")
    data = bytearray(path.read_bytes())
    matches = list(re.finditer(pattern, data, re.DOTALL))
    assert len(matches) == 1, f"{len(matches)} matches of {pattern!r} in {path}"
    start, end = matches[0].span(1)
    assert data[start:end] == old
    data[start:end] = new
    path.write_bytes(bytes(data))
    cluster.start()
    return Database(cluster, db.name)


def test_heap_page_edits_are_detected_by_verify_and_stored_hash_edits_by_checkpoints():
    with own_cluster("heap") as cluster:
        db = cluster.create_database("heap")
        try:
            # Nothing would recompute page checksums here: the edit must not be stopped by them.
            assert db.scalar("SHOW data_checksums") == "off"
            db.execute("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)")
            db.execute("SELECT ledger.enable('notes')")
            db.execute("INSERT INTO notes SELECT g, CASE g WHEN 3 THEN 'AAAAAAAAAAAA' ELSE 'note ' || g END "
                       "FROM generate_series(1, %s) g", (N,))
            cid = checkpoint(db, "notes")
            assert_clean(db, "notes")
            hashes = dict(db.fetchall("SELECT seq, hash FROM notes"))

            # 1. A column value: only the record's own hash no longer matches.
            db = edit_on_disk(cluster, db, "notes", rb"(AAAAAAAAAAAA)", b"A" * 12, b"B" * 12)
            assert db.scalar("SELECT body FROM notes WHERE seq = 3") == "BBBBBBBBBBBB"
            assert db.scalar("SELECT hash FROM notes WHERE seq = 3") == hashes[3]
            assert db.verify("notes") == [(None, 3, "hash_mismatch")]
            assert offline_verify(db.export_lines("notes")) == [(None, 3, "hash_mismatch")]
            # The checkpoint covers the stored hashes, which are unchanged: it does not see this edit.
            assert checks(db, cid) == {"checkpoint_row": True, "signature": None, "key": None,
                                       "merkle_root": True, "previous": True, "definition": True}

            # 2. A stored hash (seq 4's, not seq 5's prev_hash that repeats it): the checkpoint fails too.
            forged = hashlib.sha3_256(b"forged").hexdigest().encode()
            pattern = re.escape(hashes[3].encode()) + rb".(" + re.escape(hashes[4].encode()) + rb")"
            db = edit_on_disk(cluster, db, "notes", pattern, hashes[4].encode(), forged)
            assert db.fetchall("SELECT seq, hash FROM notes WHERE hash <> ALL(%s) ORDER BY seq",
                               (list(hashes.values()),)) == [(4, forged.decode())]
            expected = [(None, 3, "hash_mismatch"), (None, 4, "hash_mismatch"), (None, 5, "prev_hash_mismatch")]
            assert db.verify("notes") == expected
            assert offline_verify(db.export_lines("notes")) == expected
            result = {c: (ok, d) for c, ok, d in db.fetchall("SELECT * FROM ledger.verify_checkpoint(%s)", (cid,))}
            assert result["merkle_root"][0] is False, result
            assert "history was rewritten" in result["merkle_root"][1]
            assert (result["checkpoint_row"][0], result["definition"][0]) == (True, True), result
        finally:
            db.close_all()
