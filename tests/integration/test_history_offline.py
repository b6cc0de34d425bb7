"""A history-tracked table checked offline: the history ledger's export and the table's state export
(ledger.export_state), both written by `psql -AtX`, read by scripts/verify_export.py --state, which
must report exactly the rows ledger.verify(tbl) reports (chain, seq, problem, detail, in order),
after a superuser went behind the history's trigger (and the history ledger's own)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from ledgertest import PSQL, offline_digest, run_verifier, _write_export

TABLE = "public.items"

ROWS = [
    # Keys of every kind of text, so the key order and jsonb's key text are exercised: an upper
    # case letter sorts before a lower case one by octets, é and 𝄞 after z.
    "('a', 1, 1.50, 'plain', '{\"b\": [1.50, null, true], \"a\": \"x\", \"aa\": {}}')",
    "('B', 2, 2, 'tab\tnewline\n\"quote\" back\\\\slash', '[]')",
    "('é', 3, -0.5, 'ünïcödé ✓', '{\"ключ\": \"значение\", \"k\": 1e2}')",
    "('𝄞', 4, 1e-5, E'control \\u0001 and noncharacter \\U0001FFFE', 'null')",
    "('z', 5, 0, NULL, NULL)",
]


@pytest.fixture
def items(db):
    db.execute(f"CREATE TABLE {TABLE} (code text, n integer, price numeric, note text, doc jsonb, "
               "PRIMARY KEY (code, n))")
    db.execute(f"INSERT INTO {TABLE} VALUES {ROWS[0]}")
    db.execute(f"SELECT ledger.enable_history('{TABLE}')")  # the first row: a version from enabling
    for row in ROWS[1:]:
        db.execute(f"INSERT INTO {TABLE} VALUES {row}")
    db.execute(f"UPDATE {TABLE} SET note = 'again' WHERE code = 'z'")
    db.execute(f"UPDATE {TABLE} SET n = 6 WHERE code = 'z'")  # a key change: a delete, an insert
    db.execute(f"INSERT INTO {TABLE} VALUES ('gone', 7, 1, NULL, NULL)")
    db.execute(f"DELETE FROM {TABLE} WHERE code = 'gone'")
    return db


def psql_lines(db, query: str) -> list[str]:
    """`psql -AtX -c QUERY`, as other tests export (ledgertest.Database.export_lines)."""
    result = subprocess.run(
        [PSQL, "-h", db.cluster.socket_dir, "-p", str(db.cluster.port), "-U", "postgres", "-d", db.name,
         "-v", "ON_ERROR_STOP=1", "-AtX", "-c", query],
        capture_output=True, env={**os.environ, "PGCLIENTENCODING": "UTF8"}, timeout=120)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout.decode("utf-8").splitlines()


def offline_state(db, tbl: str = TABLE) -> list[tuple]:
    """verify_export.py HISTORY_EXPORT --state STATE --json: its (chain, seq, problem, detail) rows,
    the exit status checked against them."""
    history = db.scalar("SELECT history::text FROM ledger.tracked WHERE tbl = %s::regclass", (tbl,))
    export_path = _write_export(db.export_lines(history))
    state_path = _write_export(psql_lines(db, f"SELECT * FROM ledger.export_state('{tbl}')"))
    try:
        result = run_verifier(export_path, "--state", state_path, "--json")
    finally:
        os.unlink(export_path)
        os.unlink(state_path)
    assert result.returncode in (0, 1), result.stderr
    problems = json.loads(result.stdout)
    assert (result.returncode == 1) == bool(problems), (result.returncode, problems)
    return [(p["chain"], p["seq"], p["problem"], p["detail"]) for p in problems]


def behind_the_trigger(db, *statements: str) -> None:
    db.execute(f"ALTER TABLE {TABLE} DISABLE TRIGGER zz_ledger_history")
    for statement in statements:
        db.execute(statement)
    db.execute(f"ALTER TABLE {TABLE} ENABLE ALWAYS TRIGGER zz_ledger_history")


def test_intact_table_agrees(items):
    assert items.verify_details(TABLE) == []
    assert offline_state(items) == []


def test_state_export_format(items):
    header, *rows = psql_lines(items, f"SELECT * FROM ledger.export_state('{TABLE}')")
    header = json.loads(header)
    assert {k: header[k] for k in ("format", "version", "table", "history", "key_columns")} == {
        "format": "ledger-state", "version": 1, "table": "public.items", "history": "public.items_history",
        "key_columns": ["code", "n"]}
    assert header["definition"] == header["definition_now"] == items.scalar(
        f"SELECT ledger.definition('{TABLE}')")
    current = items.fetchall(f"SELECT ledger.version_key(to_jsonb(i), '{{code,n}}'), to_jsonb(i)::text "
                             f"FROM {TABLE} i")
    expected = sorted(current, key=lambda r: r[0].encode())
    assert [(json.loads(r)["key"], json.loads(r)["row"]) for r in rows] == expected
    # The noncharacter travels as an escape (psql would drop it) and comes back.
    assert any("\\ud83f\\udffe" in r for r in rows)
    # No setting of the session changes it.
    with items.connect(autocommit=True, settings={
            "TimeZone": "Asia/Kolkata", "DateStyle": "German", "IntervalStyle": "sql_standard",
            "extra_float_digits": "-3", "quote_all_identifiers": "on", "search_path": "pg_temp"}) as conn:
        lines = [r[0] for r in conn.execute(f"SELECT * FROM ledger.export_state('{TABLE}')")]
    with items.connect(autocommit=True) as conn:
        assert lines == [r[0] for r in conn.execute(f"SELECT * FROM ledger.export_state('{TABLE}')")]


def test_tampered_table_agrees(items):
    behind_the_trigger(
        items,
        f"UPDATE {TABLE} SET price = 1.5 WHERE code = 'a'",  # equal as jsonb, not as text
        f"UPDATE {TABLE} SET doc = jsonb_set(doc, '{{k}}', '2') WHERE code = 'é'",
        f"DELETE FROM {TABLE} WHERE code = 'B'",
        f"INSERT INTO {TABLE} VALUES ('new', 8, 1, NULL, NULL)",
        f"INSERT INTO {TABLE} VALUES ('gone', 7, 1, NULL, NULL)",  # deleted, by the history
        f"UPDATE {TABLE} SET n = 5 WHERE code = 'z'",  # back to a key whose chain ended
    )
    expected = items.verify_details(TABLE)
    assert {p for _, _, p, _ in expected} == {"state_mismatch", "state_missing", "state_unrecorded"}
    assert len(expected) == 7, expected
    assert offline_state(items) == expected


def test_tampered_history_and_table_agree(items):
    """Chain problems of the history come first, then the state check's rows."""
    behind_the_trigger(items, f"DELETE FROM {TABLE} WHERE code = 'z'")
    items.execute("ALTER TABLE public.items_history DISABLE TRIGGER ledger_refuse_change")
    items.execute("""UPDATE public.items_history SET "row" = jsonb_set("row", '{note}', '"forged"')
                      WHERE key = '{"n": 1, "code": "a"}'""")
    items.execute("""DELETE FROM public.items_history WHERE key = '{"n": 5, "code": "z"}' AND seq = 2""")
    items.execute("ALTER TABLE public.items_history ENABLE ALWAYS TRIGGER ledger_refuse_change")
    expected = items.verify_details(TABLE)
    problems = [p for _, _, p, _ in expected]
    assert "hash_mismatch" in problems and "state_mismatch" in problems, expected
    # The chain problems' details are the verifiers' own wording (FORMAT.md fixes the problems, not
    # their details); the state check's are the same text.
    def comparable(rows):
        return [row if row[2].startswith("state_") else row[:3] for row in rows]
    offline = offline_state(items)
    assert comparable(offline) == comparable(expected)
    assert [row for row in offline if row[2].startswith("state_")] == expected[-len(
        [row for row in expected if row[2].startswith("state_")]):]


def test_definition_change_agrees(items):
    """A superuser's DDL behind the guard's back: the table's definition_changed first, then every
    row differs."""
    items.execute("ALTER EVENT TRIGGER ledger_guard_ddl DISABLE")
    items.execute(f"ALTER TABLE {TABLE} ADD COLUMN extra integer")
    items.execute("ALTER EVENT TRIGGER ledger_guard_ddl ENABLE")
    expected = items.verify_details(TABLE)
    assert expected[0][2] == "definition_changed" and expected[0][3].startswith("since tracking began: ")
    assert offline_state(items) == expected


def test_columns_added_by_the_owner_agree(items, roles_owner_items):
    """The table's owner adds columns (an Alembic-style migration): every row gets an update version
    as it now reads, and both verifiers find nothing; a digest of a history chain made before the
    addition still holds offline, and an edit behind the trigger is still caught by both."""
    owner = roles_owner_items
    history = "public.items_history"
    cid = items.scalar("SELECT cid FROM ledger.checkpoint(%s, %s)", (history, '{"n": 1, "code": "a"}'))
    digest = items.scalar("SELECT ledger.digest(%s)", (cid,))
    versions = items.scalar(f"SELECT count(*) FROM {history}")
    owner.execute(f"ALTER TABLE {TABLE} ADD COLUMN tags text[], ADD COLUMN flag boolean DEFAULT false")
    assert items.scalar(f"SELECT count(*) FROM {history}") == versions + items.scalar(f"SELECT count(*) FROM {TABLE}")
    owner.execute(f"UPDATE {TABLE} SET tags = ARRAY['x', 'y'] WHERE code = 'a'")
    assert items.verify_details(TABLE) == []
    assert offline_state(items) == []
    status, out = offline_digest(items.export_lines(history), digest, allow_unsigned=True)
    assert out["digest"]["definition"][0] is True and out["digest"]["extends"][0] is True, out
    assert all(ok is not False for _, ok, _ in items.fetchall("SELECT * FROM ledger.verify_checkpoint(%s)", (cid,)))
    behind_the_trigger(items, f"UPDATE {TABLE} SET flag = true WHERE code = 'B'")
    expected = items.verify_details(TABLE)
    assert [row[2] for row in expected] == ["state_mismatch"], expected
    assert offline_state(items) == expected


@pytest.fixture
def roles_owner_items(items):
    """A login role owning the items table (and its history)."""
    role = "ledger_items_owner_" + items.name[-8:]
    items.execute(f'CREATE ROLE "{role}" LOGIN')
    items.execute(f'ALTER TABLE {TABLE} OWNER TO "{role}"')
    items.execute(f'ALTER TABLE {TABLE}_history OWNER TO "{role}"')
    conn = items.cluster.connect(items.name, autocommit=True)
    conn.execute(f'SET ROLE "{role}"')
    yield conn
    conn.close()
    items.execute(f'REASSIGN OWNED BY "{role}" TO postgres')
    items.execute(f'DROP OWNED BY "{role}"')
    items.execute(f'DROP ROLE "{role}"')


def test_state_export_needs_select(items):
    items.execute("CREATE ROLE ledger_state_reader")
    try:
        with items.connect(autocommit=True) as conn:
            conn.execute("SET ROLE ledger_state_reader")
            with pytest.raises(Exception) as refused:
                conn.execute(f"SELECT * FROM ledger.export_state('{TABLE}')").fetchall()
            assert refused.value.sqlstate == "42501"
            conn.execute("RESET ROLE")
            conn.execute(f"GRANT SELECT ON {TABLE} TO ledger_state_reader")
            conn.execute("SET ROLE ledger_state_reader")
            assert len(conn.execute(f"SELECT * FROM ledger.export_state('{TABLE}')").fetchall()) == 6
            conn.execute("RESET ROLE")
            conn.execute(f"REVOKE ALL ON {TABLE} FROM ledger_state_reader")
    finally:
        items.execute("DROP ROLE ledger_state_reader")


def test_untracked_table_is_refused(items):
    items.execute("CREATE TABLE public.plain (id int PRIMARY KEY)")
    with pytest.raises(Exception) as refused:
        items.execute("SELECT * FROM ledger.export_state('public.plain')")
    assert refused.value.sqlstate == "42704"
