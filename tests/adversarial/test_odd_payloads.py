"""Odd payloads through the append trigger: each is appended (twice, so the second links to the first)
and then verified by ledger.verify and by the independent offline verifier, or refused with a clear
SQLSTATE (never XX000) — and the backend never crashes: the connection works after every case.

Covers a user table with every supported column type and ledger.records (jsonb payload), and the
canonical JSON promises of docs/FORMAT.md: jsonb values that are equal but written differently hash
alike, keys sort by UTF-8 octets (not UTF-16 units, not jsonb's shortest-first), numbers normalise."""

from __future__ import annotations

import struct
import uuid

import psycopg
import pytest

from ledgertest import offline_verify

OK = "ok"

USER_TABLE = """
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE TABLE odd (
    id bigint PRIMARY KEY, chain text NOT NULL,
    t text, vc varchar, c char(5), n numeric, f8 double precision, f4 real,
    i2 smallint, i4 integer, i8 bigint, b boolean, tstz timestamptz, ts timestamp, d date,
    tm time, iv interval, by bytea, u uuid, j jsonb, dom posint);
SELECT ledger.enable('odd', chain_by => 'chain');
"""
NULLABLE = ["t", "vc", "c", "n", "f8", "f4", "i2", "i4", "i8", "b", "tstz", "ts", "d", "tm", "iv",
            "by", "u", "j", "dom"]

ALL_ASCII = "(SELECT string_agg(chr(i), '' ORDER BY i) FROM generate_series(1, 127) i)"
UNICODE = ("'😀 U+10FFFD:' || chr(1114109) || ' e' || chr(769) || ' 👩‍👩‍👧 ‮rtl‬ \uFFFD "
           "\uFFFF \U0001D11E 𝄞 ﷽'")
ODD_KEYS = ("jsonb_build_object(chr(65377), 1, chr(128512), 2, 'a', 3, chr(57344), 4, 'aa', 5, '', 6, "
            "chr(1114109), 7, 'e' || chr(769), 8, chr(233), 9)")
# Noncharacters: U+FFFF, and U+1FFFE, U+1FFFF ... U+10FFFF (the last two of every plane above the BMP).
NONCHARACTERS = "chr(65535) || chr(131070) || chr(131071) || chr(1114110) || chr(1114111)"


def nest_arrays(depth) -> str:
    return f"(repeat('[', {depth}) || repeat(']', {depth}))::jsonb"


def nest_objects(depth) -> str:
    return f"(repeat('{{\"k\": ', {depth}) || '1' || repeat('}}', {depth}))::jsonb"


class Case:
    def __init__(self, name: str, columns: dict[str, str], expect=frozenset({OK}),
                 target: str = "odd", rows: int = 2, compare: bool = True):
        self.name, self.columns, self.target, self.rows = name, columns, target, rows
        # Whether to check the stored values equal the given ones (jsonb equality recurses: at
        # PostgreSQL's nesting limit the comparison itself runs out of stack).
        self.compare = compare
        self.expect = frozenset({expect} if isinstance(expect, str) else expect)

    def param(self):
        return pytest.param(self, id=self.name)


CASES = [
    Case("nulls_everywhere", {c: "NULL" for c in NULLABLE}),
    Case("empty_values", {"t": "''", "vc": "''", "c": "''", "by": "'\\x'::bytea", "j": "'\"\"'"}),
    Case("empty_json_containers", {"j": "'{\"a\": {}, \"b\": [], \"c\": [{}], \"\": \"\"}'"}),
    Case("every_ascii_char_1_to_127", {"t": ALL_ASCII, "vc": ALL_ASCII, "c": "chr(1) || chr(127)",
                                      "j": f"jsonb_build_object({ALL_ASCII}, {ALL_ASCII})"}),
    Case("unicode_beyond_the_bmp", {"t": UNICODE, "c": "'😀é' || chr(1114109)",
                                   "j": f"jsonb_build_array({UNICODE}, {ODD_KEYS})"}),
    Case("keys_utf16_vs_code_point_order", {"j": ODD_KEYS}),
    Case("unicode_noncharacters_up_to_u10ffff", {"t": NONCHARACTERS,
                                                "j": f"jsonb_build_object({NONCHARACTERS}, {NONCHARACTERS})"}),
    Case("numeric_nan", {"n": "'NaN'::numeric"}),
    Case("numeric_infinity", {"n": "'Infinity'::numeric"}),
    Case("numeric_minus_infinity", {"n": "'-Infinity'::numeric"}),
    Case("numeric_scale_kept", {"n": "'-0.000'::numeric"}),
    Case("numeric_131072_digits", {"n": "repeat('9', 131072)::numeric"}),
    Case("numeric_16383_fraction_digits", {"n": "('0.' || repeat('0', 16382) || '1')::numeric"}),
    Case("numeric_huge_exponent", {"n": "'1E+100000'::numeric"}),
    Case("numeric_out_of_range_refused", {"n": "'1e200000'::numeric"}, expect="22003"),
    Case("float_nan", {"f8": "'NaN'", "f4": "'NaN'"}),
    Case("float_infinity", {"f8": "'Infinity'", "f4": "'-Infinity'"}),
    Case("float_minus_infinity", {"f8": "'-Infinity'", "f4": "'Infinity'"}),
    Case("float_minus_zero", {"f8": "'-0'", "f4": "'-0'"}),
    Case("float_extremes", {"f8": "'4.9406564584124654e-324'", "f4": "'1.4e-45'"}),
    Case("float_max", {"f8": "'1.7976931348623157e308'", "f4": "'3.4028235e38'"}),
    Case("integer_minimums", {"i2": "-32768", "i4": "-2147483648", "i8": "-9223372036854775808"}),
    Case("integer_maximums", {"i2": "32767", "i4": "2147483647", "i8": "9223372036854775807",
                              "dom": "2147483647"}),
    Case("domain_check_refused", {"dom": "0"}, expect="23514"),
    Case("time_infinities", {"tstz": "'infinity'", "ts": "'-infinity'", "d": "'infinity'"}),
    Case("time_minus_infinities", {"tstz": "'-infinity'", "ts": "'infinity'", "d": "'-infinity'"}),
    Case("time_earliest", {"tstz": "'4714-11-24 00:00:00+00 BC'", "ts": "'4714-11-24 00:00:00 BC'",
                           "d": "'4714-11-24 BC'", "tm": "'00:00:00'"}),
    Case("time_latest", {"tstz": "'294276-12-31 23:59:59.999999+00'",
                         "ts": "'294276-12-31 23:59:59.999999'", "d": "'5874897-12-31'",
                         "tm": "'24:00:00'"}),
    Case("interval_extremes", {"iv": "'-178000000 years -2147483648 days -2562047788 hours'"}),
    Case("interval_mixed_signs", {"iv": "'1 mon -1 day 1 microsecond'"}),
    Case("bytea_every_byte", {"by": "(SELECT string_agg(set_byte('\\x00'::bytea, 0, i), ''::bytea "
                                     "ORDER BY i) FROM generate_series(0, 255) i)"}),
    Case("uuid_nil_and_max", {"u": "'ffffffff-ffff-ffff-ffff-ffffffffffff'"}),
    Case("text_with_nul_refused", {"t": "'a' || chr(0)"}, expect="54000"),
    Case("jsonb_nul_escape_refused", {"j": "'\"\\u0000\"'::jsonb"}, expect="22P05"),
    Case("jsonb_lone_surrogate_refused", {"j": "'\"\\ud800\"'::jsonb"}, expect="22P02"),
    Case("jsonb_escapes", {"j": "'[\"\\u00e9\\ud83d\\ude00\\/\\b\\f\\n\\r\\t\\\"\\\\\\u001f\"]'"}),
    Case("jsonb_duplicate_keys", {"j": "'{\"a\": 1, \"a\": [2], \"b\": {\"c\": 1, \"c\": 2}}'"}),
    Case("jsonb_huge_exponents", {"j": "'[1e1000, -1e-1000, 1E+100000, 0.0, -0.0, 1.0, 1e-5]'"}),
    Case("jsonb_scalar_top_level", {"j": "'1e1000'"}),
    Case("jsonb_nested_1000_arrays", {"j": nest_arrays(1000)}),
    Case("jsonb_nested_1000_objects", {"j": nest_objects(1000)}),
    Case("jsonb_nested_to_the_limit", {"j": nest_arrays("{MAXDEPTH}")}, expect={OK, "54001"},
         compare=False),
    Case("jsonb_objects_nested_to_the_limit", {"j": nest_objects("{MAXDEPTH}")},
         expect={OK, "54001"}, compare=False),
    Case("jsonb_nested_too_deep_refused", {"j": nest_arrays(1_000_000)}, expect="54001"),
    Case("jsonb_10k_keys", {"j": "(SELECT jsonb_object_agg('k' || g, g) "
                                 "FROM generate_series(1, 10000) g)"}),
    Case("jsonb_100k_elements", {"j": "(SELECT jsonb_agg(g) FROM generate_series(1, 100000) g)"}),
    Case("text_50mb", {"t": "repeat('é✓x', 10000000)"}, rows=1),  # 6 bytes x 10M: 60 MB
    Case("jsonb_10mb_string", {"j": "jsonb_build_object('s', repeat('é', 5000000))"}, rows=1),
    # ledger.records: the payload jsonb, through the built-in ledger.
    Case("records_deep_payload", {"payload": nest_arrays(1000)}, target="records"),
    Case("records_deepest_payload", {"payload": nest_arrays("{MAXDEPTH}")}, target="records",
         expect={OK, "54001"}, compare=False),
    Case("records_wide_payload", {"payload": "(SELECT jsonb_object_agg(g::text, g) "
                                             "FROM generate_series(1, 10000) g)"}, target="records"),
    Case("records_unicode_payload", {"payload": ODD_KEYS, "slot": UNICODE, "kind": ALL_ASCII},
         target="records"),
    Case("records_huge_numbers", {"payload": "'{\"a\": 1E+100000, \"b\": -1e-1000}'"},
         target="records"),
    Case("records_nulls_and_empties", {"payload": "'\"\"'", "slot": "''", "kind": "''",
                                       "sig": "NULL", "producer": "NULL", "version": "NULL"},
         target="records"),
    Case("records_big_payload_string", {"payload": "to_jsonb(repeat('x', 10000000))"},
         target="records", rows=1),
]


@pytest.fixture(scope="module")
def max_depth(cluster):
    """The deepest array nesting PostgreSQL's jsonb input accepts here (its stack depth limit)."""
    with cluster.connect("postgres", autocommit=True) as conn:
        def accepted(d: int) -> bool:
            try:
                conn.execute(f"SELECT {nest_arrays(d)} IS NOT NULL")
                return True
            except psycopg.errors.StatementTooComplex:
                return False
        lo, hi = 1000, 2_000_000
        assert accepted(lo) and not accepted(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if accepted(mid) else (lo, mid)
        print(f"\njsonb nesting limit here: {lo}")
        return lo


def assert_alive(conn) -> None:
    assert not conn.broken and not conn.closed, "the connection died: did the backend crash?"
    assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_odd_payload(db, case: Case, max_depth):
    columns = {k: v.replace("{MAXDEPTH}", str(max_depth)) for k, v in case.columns.items()}
    conn = db.conn
    if case.target == "odd":
        conn.execute(USER_TABLE)
        table, chain_col, chain = "odd", "chain", case.name
        fixed = lambda i: {"id": str(i), "chain": f"'{chain}'"}  # noqa: E731
    else:
        table, chain_col, chain = "ledger.records", "anchor_id", str(uuid.uuid4())
        defaults = {"slot": "'s'", "kind": "'k'", "payload": "'{}'"}
        fixed = lambda i: {**defaults, "anchor_id": f"'{chain}'"}  # noqa: E731

    outcomes = []
    for i in range(1, case.rows + 1):
        values = {**fixed(i), **columns}
        sql = (f"INSERT INTO {table} ({', '.join(values)}) VALUES ({', '.join(values.values())}) "
               f"RETURNING seq, prev_hash, hash")
        try:
            outcomes.append(("ok", conn.execute(sql).fetchone()))
        except psycopg.Error as e:
            assert e.sqlstate is not None and not e.sqlstate.startswith("XX"), \
                f"{case.name}: SQLSTATE {e.sqlstate}: {e}"
            outcomes.append((e.sqlstate, str(e).strip()))
        assert_alive(conn)
    states = {state for state, _ in outcomes}
    assert len(states) == 1, f"{case.name}: the same row was not treated alike: {outcomes}"
    (state,) = states
    assert state in case.expect, f"{case.name}: expected {sorted(case.expect)}, got {outcomes}"
    stored = db.scalar(f"SELECT count(*) FROM {table} WHERE {chain_col}::text = %s", (chain,))
    if state != OK:
        assert stored == 0
    else:
        assert stored == case.rows
        rows = [r for _, r in outcomes]
        assert [r[0] for r in rows] == list(range(1, case.rows + 1))
        assert rows[0][1] is None and all(b[1] == a[2] for a, b in zip(rows, rows[1:]))
        # The trigger stored what was given.
        same = " AND ".join(f"{c} IS NOT DISTINCT FROM ({e})" for c, e in columns.items())
        assert not case.compare or db.scalar(
            f"SELECT bool_and({same}) FROM {table} WHERE {chain_col}::text = %s", (chain,)) is True
        # The hash covers exactly the canonical bytes.
        for seq, _, h in rows:
            assert db.scalar("SELECT ledger.sha3_256(ledger.canonical_bytes(%s::regclass, %s, %s))",
                             (table, chain, seq)) == h
    assert db.verify(table) == [], db.verify_details(table)[:5]
    assert offline_verify(db.export_lines(table)) == []
    assert_alive(conn)


def test_the_psql_export_keeps_every_character(db):
    """The documented export path (`psql -AtX -c "SELECT * FROM ledger.export(...)"`, which
    db.export_lines runs) gives exactly the lines ledger.export returns, whatever the characters."""
    db.execute(USER_TABLE)
    db.execute(f"INSERT INTO odd (id, chain, t) VALUES (1, 'bmp', {UNICODE}), "
               f"(2, 'nonchar', {NONCHARACTERS})")
    direct = [line for (line,) in db.fetchall("SELECT * FROM ledger.export('odd')")]
    assert offline_verify(direct) == []
    via_psql = db.export_lines("odd")
    assert len(via_psql) == len(direct)
    lost = [(i, sorted({hex(ord(ch)) for ch in a} - {hex(ord(ch)) for ch in b}))
            for i, (a, b) in enumerate(zip(direct, via_psql)) if a != b]
    assert not lost, f"psql -AtX output differs from ledger.export (line, characters lost): {lost}"


def test_array_columns_are_refused_cleanly(db):
    db.execute("CREATE TABLE arr (id int PRIMARY KEY, tags text[])")
    with pytest.raises(psycopg.errors.FeatureNotSupported):
        db.execute("SELECT ledger.enable('arr')")
    assert_alive(db.conn)


# ---- canonical JSON -------------------------------------------------------------------------------


class Num:
    """A JSON number in the normal form FORMAT.md prescribes, written out by hand."""

    def __init__(self, text: str):
        self.text = text


def lp(octets: bytes) -> bytes:
    return struct.pack(">I", len(octets)) + octets


def canonical_json(value) -> bytes:
    """FORMAT.md's canonical JSON of a Python value (numbers as int or Num), written from the spec."""
    if value is None:
        return b"\x00"
    if value is False:
        return b"\x01"
    if value is True:
        return b"\x02"
    if isinstance(value, int):
        return b"\x03" + lp(str(value).encode())
    if isinstance(value, Num):
        return b"\x03" + lp(value.text.encode())
    if isinstance(value, str):
        return b"\x04" + lp(value.encode("utf-8"))
    if isinstance(value, list):
        return b"\x05" + struct.pack(">I", len(value)) + b"".join(canonical_json(v) for v in value)
    keys = sorted(value, key=lambda k: k.encode("utf-8"))
    return (b"\x06" + struct.pack(">I", len(keys))
            + b"".join(lp(k.encode("utf-8")) + canonical_json(value[k]) for k in keys))


# (jsonb texts that are equal as jsonb, the canonical value FORMAT.md says they all have)
EQUAL_FORMS = [
    (['{"b": 1, "a": 2}', '{"a":2,"b":1}', '{ "a" : 2 ,\n\t"b" : 1 }'], {"a": 2, "b": 1}),
    (['[1.0, 1.50, 0.000, -0.0, 1e2, 1E+2, 100.00, 0.1e1, -1.10]', '[1, 1.5, 0, 0, 100, 100, 100, 1, -1.1]'],
     [1, Num("1.5"), 0, 0, 100, 100, 100, 1, Num("-1.1")]),
    (['"\\u00e9\\ud83d\\ude00\\/"', '"é😀/"'], "é😀/"),
    (['{"a": 1, "a": 2}', '{"a": 2}'], {"a": 2}),
    (['{"z": {"y": [true, {"b": null, "a": false}]}, "a": 1e-3}',
      '{"a": 0.0010, "z": {"y": [true, {"a": false, "b": null}]}}'],
     {"a": Num("0.001"), "z": {"y": [True, {"a": False, "b": None}]}}),
    # Keys by UTF-8 octets: "" < "a" < "aa" < "b" < U+E000 < U+FF61 < U+1F600 (UTF-16 would put
    # U+1F600, a surrogate pair D83D DE00, before U+E000; jsonb itself orders shortest first).
    (['{"\\ud83d\\ude00": 1, "\\uff61": 2, "\\ue000": 3, "b": 4, "aa": 5, "a": 6, "": 7}'],
     {"😀": 1, "\uff61": 2, "\ue000": 3, "b": 4, "aa": 5, "a": 6, "": 7}),
    (['1e1000', '1E+1000', '10e999'], Num("1" + "0" * 1000)),
    (['-1e-1000'], Num("-0." + "0" * 999 + "1")),
]
DIFFERENT_FORMS = [
    ('1', '"1"'), ('[1, 2]', '[2, 1]'), ('"\\u00e9"', '"e\\u0301"'), ('{"a": null}', '{}'),
    ('10', '1'), ('1.5', '1.50001'), ('[[]]', '[{}]'), ('{"a": 1}', '{"A": 1}'), ('""', 'null'),
]


def canonical_table(db):
    db.execute("CREATE TABLE canon (id text PRIMARY KEY, j jsonb)")
    db.execute("SELECT ledger.enable('canon', chain_by => 'id')")
    assert db.scalar("SELECT columns FROM ledger.ledgers WHERE tbl = 'canon'::regclass") == \
        ["id", "j", "seq", "prev_hash"]


def expected_record(record_id: str, canonical: bytes) -> bytes:
    """The canonical record bytes of a canon row alone in its chain (seq 1, no prev_hash)."""
    return (b"\x01" + struct.pack(">I", 4)
            + lp(b"id") + b"\x08\x01" + lp(record_id.encode())
            + lp(b"j") + b"\x0b\x01" + lp(canonical)
            + lp(b"seq") + b"\x04\x01" + lp(struct.pack(">q", 1))
            + lp(b"prev_hash") + b"\x08\x00")


def test_equal_jsonb_written_differently_hashes_as_documented(db):
    canonical_table(db)
    for g, (forms, value) in enumerate(EQUAL_FORMS):
        want = canonical_json(value)
        for f, text in enumerate(forms):
            rid = f"g{g}f{f}"
            db.execute("INSERT INTO canon (id, j) VALUES (%s, %s::jsonb)", (rid, text))
            got = db.scalar("SELECT ledger.canonical_bytes('canon', %s, 1)", (rid,))
            assert got == expected_record(rid, want), (text, got, expected_record(rid, want))
            assert db.scalar("SELECT hash = ledger.sha3_256(%s) FROM canon WHERE id = %s",
                             (expected_record(rid, want), rid)) is True
    assert db.verify("canon") == []
    assert offline_verify(db.export_lines("canon")) == []


def after_id(record: bytes, record_id: str) -> bytes:
    head = b"\x01" + struct.pack(">I", 4) + lp(b"id") + b"\x08\x01" + lp(record_id.encode())
    assert record.startswith(head)
    return record[len(head):]


def test_different_jsonb_hashes_differently(db):
    canonical_table(db)
    for i, (a, b) in enumerate(DIFFERENT_FORMS):
        db.execute("INSERT INTO canon (id, j) VALUES (%s, %s::jsonb), (%s, %s::jsonb)",
                   (f"a{i}", a, f"b{i}", b))
        ca, cb = (after_id(db.scalar("SELECT ledger.canonical_bytes('canon', %s, 1)", (rid,)), rid)
                  for rid in (f"a{i}", f"b{i}"))
        # Everything after the id column: the j column, seq and prev_hash.
        assert ca != cb, (a, b)
    assert db.verify("canon") == []
    assert offline_verify(db.export_lines("canon")) == []
