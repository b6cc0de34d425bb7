"""Session settings shape text, not stored values: identical logical rows hash identically whatever
TimeZone, DateStyle, IntervalStyle, extra_float_digits, lc_numeric, client_encoding or search_path
the writing session uses. Equal jsonb values hash identically whatever their input text."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal

import psycopg
import pytest
from psycopg.types.json import Jsonb

from ledgertest import assert_clean, offline_verify

TABLE = """
CREATE TABLE public.{name} (
    id   integer PRIMARY KEY,
    u    uuid,
    n    numeric,
    f8   double precision,
    f4   real,
    tstz timestamptz,
    ts   timestamp,
    d    date,
    tm   time,
    iv   interval,
    b    bytea,
    t    text,
    j    jsonb
)"""

SESSION_1 = {"TimeZone": "UTC", "DateStyle": "ISO, DMY", "IntervalStyle": "postgres",
             "extra_float_digits": "-15", "lc_numeric": "C", "client_encoding": "UTF8",
             "search_path": "public", "bytea_output": "hex"}
SESSION_2 = {"TimeZone": "Pacific/Chatham", "DateStyle": "SQL, MDY",
             "IntervalStyle": "sql_standard", "extra_float_digits": "3", "lc_numeric": "de_DE.UTF-8",
             "client_encoding": "LATIN1", "search_path": "pg_catalog, ledger",
             "bytea_output": "escape"}

# Literals whose meaning does not depend on the settings above (ISO dates with explicit offsets,
# ISO 8601 intervals); the text is Latin-1 representable so a LATIN1 client can send it.
LITERAL_ROWS = [
    ("1", "'6f1c2a54-6c0e-4e8b-9d3e-2b0f5a7c1101'", "'12345.678900'", "'0.1'", "'0.1'",
     "'2024-03-04 05:06:07.123456+00'", "'2024-03-04 05:06:07.5'", "'2024-03-04'",
     "'23:59:59.999999'", "'P1Y2M-3DT-4H5M6.5S'", "'\\x00ff10'", "'café Ünïcödé ½'",
     """'{"b": [1.50, {"z": null, "é": true}], "a": "ü", "n": -0.0, "big": 1e20}'"""),
    ("2", "NULL", "'NaN'", "'-0'", "'-Infinity'", "'1999-12-31 23:59:59.999999-08:00'",
     "'infinity'", "'0044-03-15 BC'", "'00:00:00'", "'PT0S'", "'\\x'", "''",
     """'[1, 2.0, "x", [], {}]'"""),
    ("3", "'00000000-0000-0000-0000-000000000000'", "'-0.000100'", "'1e308'", "'3.4e38'",
     "'-infinity'", "'1900-02-28 00:00:00'", "'infinity'", "'12:00:00.000001'",
     "'P-1Y-2M3DT4H-5M-6.000001S'", "'\\xdeadbeef'", "'tab\there'", "'\"scalar\"'"),
]
COLUMNS = "id, u, n, f8, f4, tstz, ts, d, tm, iv, b, t, j"


def param_rows():
    """Rows 4 and 5 as Python values, sent as query parameters."""
    return [
        (4, uuid.UUID(int=4), Decimal("1.50"), 2.5e-308, 1.5, dt.datetime(
            2021, 7, 1, 12, 0, 0, 1, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=45))),
         dt.datetime(2021, 7, 1, 12, 0), dt.date(1, 1, 1), dt.time(1, 2, 3, 4),
         dt.timedelta(days=-2, microseconds=7), b"\x00\x01", "Ærø",
         Jsonb({"k": [1, 2, {"é": "É"}], "": 0})),
        (5, None, None, None, None, None, None, None, None, None, None, None, None),
    ]


def write_rows(conn, table, placeholder):
    with conn.cursor() as cur:
        for row in LITERAL_ROWS:
            cur.execute(f"INSERT INTO public.{table} ({COLUMNS}) VALUES ({', '.join(row)})")
        marks = ", ".join([placeholder] * 13)
        for row in param_rows():
            cur.execute(f"INSERT INTO public.{table} ({COLUMNS}) VALUES ({marks})", row)
    conn.commit()


def test_settings_do_not_change_hashes(db):
    for name in ("s1", "s2"):
        db.execute(TABLE.format(name=name))
        db.execute("SELECT ledger.enable(%s)", (f"public.{name}",))
    one = db.connect(settings=SESSION_1)
    two = db.connect(settings=SESSION_2)
    assert two.info.encoding == "iso8859-1"
    write_rows(one, "s1", "%t")  # parameters in text format
    write_rows(two, "s2", "%b")  # parameters in binary format

    # The sessions really see different text for the same stored values.
    q = ("SELECT tstz::text, ts::text, iv::text, f8::text, b::text, to_char(n, 'FM99999D999999') "
         "FROM public.s1 WHERE id = 1")
    texts = one.execute(q).fetchone(), two.execute(q).fetchone()
    assert texts[0] != texts[1]
    assert (texts[0][5], texts[1][5]) == ("12345.6789", "12345,6789"), texts  # lc_numeric
    one.rollback()
    two.rollback()

    h1 = db.fetchall("SELECT id, seq, hash FROM s1 ORDER BY seq")
    h2 = db.fetchall("SELECT id, seq, hash FROM s2 ORDER BY seq")
    assert len(h1) == 5
    assert h1 == h2
    assert len({h for _, _, h in h1}) == 5
    # The stored values are equal too, and so are their canonical bytes, from either session.
    assert db.fetchall("SELECT * FROM s1 EXCEPT SELECT * FROM s2") == []
    for seq in range(1, 6):
        q = "SELECT ledger.canonical_bytes(%s::regclass, NULL, %s)"
        a = one.execute(q, ("public.s1", seq)).fetchone()[0]
        b = two.execute(q, ("public.s2", seq)).fetchone()[0]
        c = two.execute(q, ("public.s1", seq)).fetchone()[0]
        assert a == b == c
        one.rollback()
        two.rollback()
    # The exports differ only in the header's table name; both verify offline.
    e1, e2 = db.export_lines("public.s1"), db.export_lines("public.s2")
    assert e1[1:] == e2[1:]
    assert e1[0].replace("public.s1", "public.s2") == e2[0]
    assert offline_verify(e1) == [] and offline_verify(e2) == []
    assert db.verify("public.s1") == [] and db.verify("public.s2") == []


def test_export_is_independent_of_session_settings(db):
    db.execute(TABLE.format(name="s1"))
    db.execute("SELECT ledger.enable('public.s1')")
    write_rows(db.connect(settings=SESSION_1), "s1", "%t")
    exports = []
    for settings in (SESSION_1, SESSION_2):
        conn = db.connect(settings={**settings, "client_encoding": "UTF8"})
        exports.append([r[0] for r in conn.execute("SELECT * FROM ledger.export('public.s1')")])
        conn.rollback()
    assert exports[0] == exports[1]
    assert exports[0] == db.export_lines("public.s1")
    assert_clean(db, "public.s1")


# Pairs of jsonb inputs that are the same jsonb value (key order, whitespace, number spelling,
# escapes, duplicate keys) and so must hash identically.
EQUAL_JSON = [
    ('{"b":1.0,"a":[1, 2.50]}', '{ "a" : [1.0, 2.5],\n "b" : 1 }'),
    ('{"n": 1e2, "z": -0.0}', '{"z": 0, "n": 100}'),
    ('{"s": "\\u00e9\\n"}', '{"s": "é\\n"}'),
    ('{"a": 1, "a": 2}', '{"a": 2}'),
    ('[0.000100, 12.340]', '[1.0E-4, 1234e-2]'),
    ('{"é": 1, "z": 2, "Z": 3, "": 4, "aa": 5, "a": 6}',
     '{"a": 6, "aa": 5, "": 4, "Z": 3, "z": 2, "é": 1}'),
]
DIFFERENT_JSON = [('{"a": 1}', '{"a": "1"}'), ('[1, 2]', '[2, 1]'), ('{"a": null}', '{}'),
                  ('1', '[1]')]


def json_hashes(db, pairs):
    for name in ("j1", "j2"):
        db.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, j jsonb)")
        db.execute("SELECT ledger.enable(%s)", (name,))
    for i, (left, right) in enumerate(pairs):
        db.execute("INSERT INTO j1 VALUES (%s, %s::jsonb)", (i, left))
        db.execute("INSERT INTO j2 VALUES (%s, %s::jsonb)", (i, right))
    rows = db.fetchall("SELECT j1.seq, j1.hash = j2.hash, j1.j::text, j2.j::text "
                       "FROM j1 JOIN j2 USING (seq) ORDER BY seq")
    assert_clean(db, "j1")
    assert_clean(db, "j2")
    return rows


def test_equal_jsonb_values_hash_identically(db):
    rows = json_hashes(db, EQUAL_JSON)
    assert [r[1] for r in rows] == [True] * len(EQUAL_JSON), rows
    # Most pairs are stored differently, yet hash the same.
    assert sum(r[2] != r[3] for r in rows) >= 3


def test_different_jsonb_values_hash_differently(db):
    rows = json_hashes(db, DIFFERENT_JSON)
    # The first record of each pair is a chain head with different content at the same seq; every
    # later one differs in content (and, after the first, in prev_hash).
    assert not any(r[1] for r in rows), rows


# ---- server encoding ------------------------------------------------------------------------------

LATIN1_TABLE = ("CREATE TABLE lt (id int PRIMARY KEY, k text NOT NULL, v varchar(20), c char(6), "
                "j jsonb, n numeric)")
LATIN1_ROWS = [
    (1, "café", "Ærø", "ñ", '{"é": 1, "ab": 2, "z": 3, "ÿ": 4, "Z": 5, "": 6}', "1.50"),
    (2, "cafe", "x", "", '["½", {"ö": "ß"}]', "-0"),
    (3, "café", "Ünï", "ö", '"ÿ"', "NaN"),
    (4, "naïve", "", "¼", '{"ü": {"ü": "ü"}}', "12345678901234567890.000"),
]


def test_a_database_that_is_not_utf8_is_refused_cleanly(latin1_db):
    """Text and names are hashed as UTF-8; rather than convert (and risk names and chain values
    that do not round-trip), the extension refuses other database encodings, and nothing is left."""
    assert latin1_db.scalar("SHOW server_encoding") == "LATIN1"
    with pytest.raises(psycopg.Error) as refused:
        latin1_db.execute("CREATE EXTENSION ledger")
    assert refused.value.sqlstate == "0A000"
    assert "UTF8" in str(refused.value)
    assert latin1_db.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'ledger'") == 0
    assert latin1_db.scalar("SELECT count(*) FROM pg_extension WHERE extname = 'ledger'") == 0


@pytest.mark.parametrize("chain_type, values", [
    ("timestamptz", ["2024-03-04 05:06:07+00", "2024-03-04 05:06:07.5-08"]),
    ("date", ["2024-03-04", "0044-03-15 BC"]),
    ("timestamp", ["2024-03-04 05:06:07", "1900-02-28 00:00:00.000001"]),
    ("bytea", ["\\x00ff", "\\xdeadbeef"]),
])
def test_chains_are_named_alike_from_every_session(db, chain_type, values):
    """A chain value's text (in ledger.verify's rows, checkpoints, digests and proofs) does not depend
    on the session: checkpoints of one chain made from two sessions form one line of checkpoints,
    and ledger.verify names chains as the export and the offline verifier do."""
    db.execute(f"CREATE TABLE public.by_{chain_type} (id int PRIMARY KEY, k {chain_type} NOT NULL, v int)")
    tbl = f"public.by_{chain_type}"
    db.execute(f"SELECT ledger.enable('{tbl}', 'k')")
    one, two = db.connect(autocommit=True, settings=SESSION_1), db.connect(autocommit=True, settings=SESSION_2)
    for i, value in enumerate(values * 2):
        (one if i % 2 else two).execute(f"INSERT INTO {tbl} VALUES (%s, %s::{chain_type}, %s)", (i, value, i))
    # Tamper so that ledger.verify names both chains.
    db.execute(f"ALTER TABLE {tbl} DISABLE TRIGGER ALL")
    db.execute(f"UPDATE {tbl} SET v = -v WHERE seq = 2")
    for trigger in ("zz_ledger_append", "ledger_refuse_change", "ledger_refuse_truncate"):
        db.execute(f"ALTER TABLE {tbl} ENABLE ALWAYS TRIGGER {trigger}")
    named = {tuple(conn.execute("SELECT array_agg(DISTINCT chain ORDER BY chain) FROM ledger.verify(%s) "
                                "WHERE chain IS NOT NULL", (tbl,)).fetchone()[0])
             for conn in (one, two, db.conn)}
    assert len(named) == 1, named
    offline = sorted({chain for chain, _, _ in offline_verify(db.export_lines(tbl)) if chain is not None})
    assert list(named.pop()) == offline
    # Checkpoints of the same chains, alternately from each session, link up per chain.
    for conn in (one, two, one):
        for value in values:
            conn.execute(f"SELECT * FROM ledger.checkpoint(%s, %s::{chain_type}::text)", (tbl, value))
        conn.execute("SELECT * FROM ledger.checkpoint(%s)", (tbl,))
    rows = db.fetchall("SELECT chain, count(*), count(prev_checkpoint) FROM ledger.checkpoints "
                       "WHERE ledger = %s GROUP BY chain ORDER BY chain", (tbl,))
    assert [r[0] for r in rows] == offline
    assert all(count == 6 and linked == 5 for _, count, linked in rows), rows
