"""What docs/FORMAT.md "Export" promises beyond the records, on real exports: the header's
definitions (the offline verifier reports a changed definition exactly as ledger.verify does, and
checks a digest's definition line), names that need quoting, years after 9999 and before 1 AD, and
time 24:00:00."""

from __future__ import annotations

import json

import psycopg
import pytest

from ledgertest import offline_digest, run_verifier, _write_export, ve

SCHEMA, NAME = 'Odd "sch".x', 'My T.ab le'
TABLE = '"Odd ""sch"".x"."My T.ab le"'  # quote_ident of each, as the export's table member
CHAIN = 'Acc "t'
EXTREMES = """CREATE TABLE {table} (
    id    integer PRIMARY KEY,
    "Acc ""t" text NOT NULL,
    tod   time,
    day   date,
    ts    timestamp,
    tstz  timestamptz
)"""
# The largest and smallest values PostgreSQL takes, five- to seven-digit years, and 24:00:00.
ROWS = [
    (1, "a", "24:00:00", "5874897-12-31", "294276-12-31 23:59:59.999999", "294276-12-31 23:59:59.999999+00"),
    (2, "a", "00:00:00", "4713-01-01 BC", "4714-11-24 00:00:00 BC", "4714-11-24 00:00:00+00 BC"),
    (3, "a", "23:59:59.999999", "10000-01-01", "10000-01-01 00:00:00", "10000-01-01 00:00:00+00"),
    (4, "b", "24:00:00", "4714-11-24 BC", "99999-02-28 12:00:00.5", "12345-06-07 08:09:10.000001+00"),
    (5, "b", "12:00:00", "infinity", "-infinity", "infinity"),
]


def full_verify(db, tbl: str) -> list[tuple]:
    return db.verify_details(tbl)


def offline_full(lines: list[str]) -> tuple[int, list[tuple]]:
    """`verify_export.py EXPORT --json`: exit status and every (chain, seq, problem, detail)."""
    path = _write_export(lines)
    result = run_verifier(path, "--json")
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, [(p["chain"], p["seq"], p["problem"], p["detail"])
                               for p in json.loads(result.stdout)]


def assert_same_report(db, tbl: str) -> list[tuple]:
    """The offline verifier reports the rows ledger.verify does; a definition's row word for word
    (a record's detail is worded by each verifier its own way)."""
    lines = db.export_lines(tbl)
    status, offline = offline_full(lines)
    online = full_verify(db, tbl)
    assert [row[:3] for row in offline] == [row[:3] for row in online]
    assert ([row for row in offline if row[1] is None and row[0] is None]
            == [row for row in online if row[1] is None and row[0] is None])
    assert status == (1 if online else 0)
    return online


@pytest.fixture
def extremes(db):
    db.execute('CREATE SCHEMA "Odd ""sch"".x"')
    db.execute(EXTREMES.format(table=TABLE))
    db.execute("SELECT ledger.enable(%s, %s)", (TABLE, CHAIN))
    for row in ROWS:
        db.execute(f'INSERT INTO {TABLE} (id, "Acc ""t", tod, day, ts, tstz) VALUES (%s, %s, %s, %s, %s, %s)',
                   row)
    return db


def test_quoted_names_and_extreme_values_verify(extremes):
    db = extremes
    header, *records = db.export_lines(TABLE)
    header = json.loads(header)
    assert header["table"] == TABLE
    assert header["table"] == db.scalar("SELECT format('%%I.%%I', %s::text, %s::text)", (SCHEMA, NAME))
    assert header["chain_by"] == CHAIN
    assert header["definition"] == header["definition_now"] == db.scalar(
        "SELECT ledger.definition(%s::regclass)", (TABLE,))
    assert f"table {TABLE}\n" in header["definition"] and 'chain_by "Acc ""t"\n' in header["definition"]
    # The export writes PostgreSQL's own text: five- to seven-digit years, BC, and 24:00:00.
    exported = [json.loads(line)[2:6] for line in records]
    assert exported[0] == ["24:00:00", "5874897-12-31", "294276-12-31 23:59:59.999999",
                           "294276-12-31 23:59:59.999999+00"]
    assert exported[1][1:] == ["4713-01-01 BC", "4714-11-24 00:00:00 BC", "4714-11-24 00:00:00+00 BC"]
    assert exported[3][:2] == ["24:00:00", "4714-11-24 BC"]
    assert ve.parse_time("24:00:00") == 86_400_000_000
    assert assert_same_report(db, TABLE) == []
    # Every record's bytes are the extension's.
    for line in records:
        values = json.loads(line)
        octets = bytes(db.scalar("SELECT ledger.canonical_bytes(%s, %s, %s)", (TABLE, values[1], int(values[6]))))
        assert ve.canonical_record_bytes([(c["name"], c["type"]) for c in header["columns"]],
                                         values[:-1]) == octets


@pytest.mark.parametrize("column, change", [
    ("ts", "ts - interval '1 microsecond'"),
    ("tstz", "tstz - interval '1 microsecond'"),
    ("day", "day - 1"),
    ("tod", "'23:59:59.999999'"),
])
def test_tampered_extreme_values_are_caught(extremes, column, change):
    db = extremes
    db.execute(f"ALTER TABLE {TABLE} DISABLE TRIGGER ledger_refuse_change")
    db.execute(f"UPDATE {TABLE} SET {column} = {change} WHERE id = 1")
    db.execute(f"ALTER TABLE {TABLE} ENABLE ALWAYS TRIGGER ledger_refuse_change")
    found = assert_same_report(db, TABLE)
    assert [(chain, seq, problem) for chain, seq, problem, _ in found] == [("a", 1, "hash_mismatch")]


def test_definition_changed_is_reported_offline_as_online(extremes):
    db = extremes
    # A superuser's DDL: a trigger left ORIGIN, a column added; and a record edited meanwhile.
    db.execute(f"ALTER TABLE {TABLE} DISABLE TRIGGER ledger_refuse_change")
    db.execute(f"UPDATE {TABLE} SET day = '2000-01-01' WHERE id = 2")
    db.execute(f"ALTER TABLE {TABLE} ENABLE TRIGGER ledger_refuse_change")
    db.execute(f'ALTER TABLE {TABLE} ADD COLUMN "new col" text')
    found = assert_same_report(db, TABLE)
    assert [(chain, seq, problem) for chain, seq, problem, _ in found] == [
        (None, None, "definition_changed"), ("a", 2, "hash_mismatch")]
    assert "+ column \"new col\" text" in found[0][3] and "enabled O" in found[0][3]


def test_a_forged_header_definition_is_inconsistent(extremes):
    db = extremes
    header, *records = db.export_lines(TABLE)
    forged = json.loads(header)
    forged["definition"] = forged["definition"].replace('chain_by "Acc ""t"', "chain_by id")
    forged["definition_now"] = forged["definition"]
    status, found = offline_full([json.dumps(forged), *records])
    assert status == 1
    assert [(p[2], "chain_by" in p[3]) for p in found] == [("definition_inconsistent", True)] * 2


def test_digest_ledger_line_and_definition(extremes):
    db = extremes
    cid = db.scalar("SELECT cid FROM ledger.checkpoint(%s::regclass, 'a')", (TABLE,))
    digest = db.scalar("SELECT ledger.digest(%s)", (cid,))
    # The digest names the ledger as the export's table member does, as a JSON string.
    assert f"\nledger {json.dumps(TABLE)}\n" in digest
    registered = db.scalar("SELECT definition FROM ledger.ledgers WHERE tbl = %s::regclass", (TABLE,))
    assert f"\ndefinition {ve.definition_fingerprint(registered)}\n" in digest
    status, out = offline_digest(db.export_lines(TABLE), digest, allow_unsigned=True)
    assert status == 0, out
    assert out["digest"]["extends"][0] is True and out["digest"]["definition"][0] is True

    # A column added is registered: the digest made before holds through the definition it
    # replaced (kept in the export), one made after through the new one.
    db.execute(f'ALTER TABLE {TABLE} ADD COLUMN "new col" text')
    added = db.scalar("SELECT ledger.digest(cid) FROM ledger.checkpoint(%s::regclass, 'a')", (TABLE,))
    lines = db.export_lines(TABLE)
    for text in (digest, added):
        status, out = offline_digest(lines, text, allow_unsigned=True)
        assert status == 0, out
        assert out["digest"]["definition"][0] is True and out["digest"]["extends"][0] is True
    assert "earlier registered definition" in offline_digest(lines, digest, allow_unsigned=True)[1][
        "digest"]["definition"][1]

    # After any other change (a trigger left ORIGIN), a checkpoint records today's definition:
    # offline it no longer is the registered one (and the change is reported); the earlier digests
    # still hold.
    db.execute(f"ALTER TABLE {TABLE} ENABLE TRIGGER ledger_refuse_change")
    later = db.scalar("SELECT ledger.digest(cid) FROM ledger.checkpoint(%s::regclass, 'a')", (TABLE,))
    lines = db.export_lines(TABLE)
    status, out = offline_digest(lines, later, allow_unsigned=True)
    assert status == 1 and out["digest"]["definition"][0] is False
    assert "today's definition" in out["digest"]["definition"][1]
    assert [p["problem"] for p in out["problems"]] == ["definition_changed"]
    for text in (digest, added):
        status, out = offline_digest(lines, text, allow_unsigned=True)
        assert out["digest"]["definition"][0] is True and out["digest"]["extends"][0] is True


def test_quote_all_identifiers_changes_nothing(extremes):
    db = extremes
    plain = db.export_lines(TABLE)
    with psycopg.connect(db.cluster.conninfo(db.name), autocommit=True,
                         options="-c quote_all_identifiers=on") as conn:
        assert conn.execute("SELECT quote_ident('abc')").fetchone()[0] == '"abc"'
        assert conn.execute("SELECT * FROM ledger.verify(%s::regclass)", (TABLE,)).fetchall() == []
        assert conn.execute("SELECT * FROM ledger.verify('ledger.records')").fetchall() == []
        quoted = [row[0] for row in conn.execute("SELECT * FROM ledger.export(%s::regclass)", (TABLE,))]
        # Checkpoints name the ledger as from any other session, so they form one chain.
        first = conn.execute("SELECT ledger, hash FROM ledger.checkpoint(%s::regclass, 'a')", (TABLE,)).fetchone()
    assert quoted == plain
    assert first[0] == TABLE
    second = db.fetchone("SELECT ledger, prev_checkpoint FROM ledger.checkpoint(%s::regclass, 'a')", (TABLE,))
    assert tuple(second) == (TABLE, first[1])
