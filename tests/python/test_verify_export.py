"""Tests of scripts/verify_export.py against the examples and rules of docs/FORMAT.md."""

import datetime
import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "verify_export.py"
sys.path.insert(0, str(SCRIPT.parent))

import verify_export as ve  # noqa: E402

# --------------------------------------------------------------------------------------------------
# FORMAT.md test vector
# --------------------------------------------------------------------------------------------------

TEST_VECTOR_HEX = """
01 00000006
00000002 6964 0a 01 00000010 6f1c2a546c0e4e8b9d3e2b0f5a7c1101
00000001 6e 04 01 00000008 fffffffffffffffe
00000002 6174 0f 01 00000008 0000000000000000
00000007 7061796c6f6164 0b 01 00000024
    06 00000002
       00000001 61 04 00000001 78
       00000001 62 05 00000003 03 00000003 312e35 00 02
00000003 736571 04 01 00000008 0000000000000001
00000009 707265765f68617368 08 00
"""
TEST_VECTOR_HASH = "6d2a65fb15cbabc02a832b99b01f9e411de07ae50bf97789fa25cbf7ac88d07e"
TEST_VECTOR_COLUMNS = [("id", "uuid"), ("n", "bigint"), ("at", "timestamptz"), ("payload", "jsonb"),
                       ("seq", "bigint"), ("prev_hash", "text")]
TEST_VECTOR_VALUES = ["6f1c2a54-6c0e-4e8b-9d3e-2b0f5a7c1101", "-2", "2000-01-01 00:00:00+00",
                      '{"b": [1.50, null, true], "a": "x"}', "1", None]


def test_test_vector_bytes_and_hash():
    expected = bytes.fromhex("".join(TEST_VECTOR_HEX.split()))
    actual = ve.canonical_record_bytes(TEST_VECTOR_COLUMNS, TEST_VECTOR_VALUES)
    assert actual.hex() == expected.hex()
    assert hashlib.sha3_256(actual).hexdigest() == TEST_VECTOR_HASH
    assert ve.record_hash(TEST_VECTOR_COLUMNS, TEST_VECTOR_VALUES) == TEST_VECTOR_HASH


# The same table after ALTER TABLE ... ADD COLUMN memo text (FORMAT.md, "Added columns").
ADDED_COLUMNS = [*map(tuple, TEST_VECTOR_COLUMNS), ve.Column("memo", "text", added=True)]
ADDED_MEMO_HASH = "7dd522384b55f8b3cfe0828e73a1da9107f57a36416c87f4ff1f96d8f555127e"


def test_added_column_vector():
    # Without a value the record has the bytes it had before the addition.
    assert ve.record_hash(ADDED_COLUMNS, [*TEST_VECTOR_VALUES, None]) == TEST_VECTOR_HASH
    expected = bytes.fromhex("".join(TEST_VECTOR_HEX.split()).replace("0100000006", "0100000007", 1)
                             + "000000046d656d6f08010000000178")
    assert ve.canonical_record_bytes(ADDED_COLUMNS, [*TEST_VECTOR_VALUES, "x"]) == expected
    assert ve.record_hash(ADDED_COLUMNS, [*TEST_VECTOR_VALUES, "x"]) == ADDED_MEMO_HASH
    # A base column is encoded when NULL; an added one is not.
    assert ve.record_hash([*map(tuple, TEST_VECTOR_COLUMNS), ("memo", "text")],
                          [*TEST_VECTOR_VALUES, None]) != TEST_VECTOR_HASH


@pytest.mark.parametrize("columns, message", [
    ([{"name": "a", "type": "text", "added": True}, {"name": "seq", "type": "bigint"},
      {"name": "prev_hash", "type": "text"}], "added columns must follow"),
    ([{"name": "seq", "type": "bigint"}, {"name": "prev_hash", "type": "text"},
      {"name": "a", "type": "text", "added": False}], '"added" must be true'),
])
def test_header_added_columns_are_checked(columns, message):
    header = json.dumps({"format": "ledger-export", "version": 1, "chain_by": None, "columns": columns})
    with pytest.raises(ve.ExportError, match=message):
        ve.parse_header(header)


def test_digest_definition_of_an_earlier_definition():
    """A digest made before columns were added holds when each later definition only adds columns."""
    base = ("ledger-definition/v1\ntable public.t\nchain_by -\nhashed id seq prev_hash\n"
            "column id integer not null\ncolumn seq bigint not null\ncolumn prev_hash character(64)\n")
    added = base.replace("hashed id seq prev_hash\n", "hashed id seq prev_hash memo\nadded memo\n") \
        + "column memo text\n"
    retyped = added.replace("column id integer", "column id bigint")
    for registered, earlier, ok in [(added, [base], True), (retyped, [base], False), (added, [], False)]:
        header = ve.Header("public.t", None, [], registered, registered, True, tuple(earlier))
        digest = ve.Digest(body=f"definition {ve.definition_fingerprint(base)}\n".encode(), ledger="public.t",
                           chain=None, size=1, root=bytes(32), public_key=None, signature=None,
                           ledger_signature_lines=0)
        assert ve.check_definition(digest, header).ok is ok, (registered, earlier)


# --------------------------------------------------------------------------------------------------
# Canonical JSON
# --------------------------------------------------------------------------------------------------


def json_bytes(tag: int, octets: bytes) -> bytes:
    return bytes([tag]) + struct.pack(">I", len(octets)) + octets


@pytest.mark.parametrize("text, normalised", [
    ("1.50", "1.5"), ("1.0", "1"), ("-0.0", "0"), ("1e2", "100"), ("0", "0"), ("-0", "0"),
    ("100", "100"), ("100.00", "100"), ("0.000", "0"), ("-0.0010", "-0.001"), ("1.5e-3", "0.0015"),
    ("1.5E+3", "1500"), ("12.345e1", "123.45"), ("-7", "-7"), ("0.5", "0.5"), ("25e-1", "2.5"),
    ("123456789012345678901234567890.000", "123456789012345678901234567890"),
])
def test_normalise_json_number(text, normalised):
    assert ve.normalise_json_number(text) == normalised


def test_canonical_json_format_examples():
    assert ve.canonical_json("1.50") == json_bytes(0x03, b"1.5")
    assert ve.canonical_json("-0.0") == json_bytes(0x03, b"0")
    assert ve.canonical_json("1e2") == json_bytes(0x03, b"100")
    assert ve.canonical_json("null") == b"\x00"
    assert ve.canonical_json("false") == b"\x01"
    assert ve.canonical_json("true") == b"\x02"
    assert ve.canonical_json('"x"') == json_bytes(0x04, b"x")
    assert ve.canonical_json('{"b": [1.50, null, true], "a": "x"}') == bytes.fromhex(
        "06 00000002 00000001 61 04 00000001 78"
        " 00000001 62 05 00000003 03 00000003 312e35 00 02")


def test_canonical_json_keys_sorted_by_utf8_octets():
    # "é" is c3 a9 and sorts after "z"; "a" is a prefix of "aa" and sorts first.
    encoded = ve.canonical_json('{"z": 1, "é": 2, "aa": 3, "a": 4, "B": 5}')
    expected = bytes.fromhex("06 00000005")
    for key, number in (("B", "5"), ("a", "4"), ("aa", "3"), ("z", "1"), ("é", "2")):
        expected += struct.pack(">I", len(key.encode())) + key.encode() + json_bytes(0x03, number.encode())
    assert encoded == expected


def test_canonical_json_whitespace_and_escapes():
    assert ve.canonical_json(' [ "a\\u00e9\\n" , {} , [] ] ') == (
        bytes.fromhex("05 00000003") + json_bytes(0x04, "aé\n".encode()) + bytes.fromhex("06 00000000")
        + bytes.fromhex("05 00000000"))


def test_canonical_json_duplicate_key_keeps_last_value():
    assert ve.canonical_json('{"a": 1, "a": 2}') == ve.canonical_json('{"a": 2}')


def test_canonical_json_deep_nesting():
    depth = 10_000
    encoded = ve.canonical_json("[" * depth + "]" * depth)
    assert encoded == bytes.fromhex("05 00000001") * (depth - 1) + bytes.fromhex("05 00000000")
    encoded = ve.canonical_json('{"k": ' * depth + "1" + "}" * depth)
    assert len(encoded) == depth * (1 + 4 + 4 + 1) + len(json_bytes(0x03, b"1"))


@pytest.mark.parametrize("text", ["", "[1,]", "{1: 2}", '{"a" 1}', "[1 2]", "01", "NaN", "tru",
                                  "[", '"\\ud800"', "1 2", '"unterminated'])
def test_canonical_json_rejects_invalid(text):
    with pytest.raises(ve.ExportError):
        ve.canonical_json(text)


# --------------------------------------------------------------------------------------------------
# Text forms of the other types
# --------------------------------------------------------------------------------------------------


def python_days(year, month, day):
    """Days since 2000-01-01 with Python's datetime, an independent check for years 1..9999."""
    return datetime.date(year, month, day).toordinal() - datetime.date(2000, 1, 1).toordinal()


@pytest.mark.parametrize("text, days", [
    ("2000-01-01", 0), ("1999-12-31", -1), ("2000-03-01", 60), ("2001-01-01", 366),
    ("1970-01-01", -10957), ("0001-01-01", -730119),
    # Year 0 (1 BC) is a leap year of 366 days.
    ("0001-12-31 BC", -730120), ("0001-01-01 BC", -730485), ("0001-02-29 BC", -730426),
    ("0002-12-31 BC", -730486),
    # Julian day 0, PostgreSQL's earliest date, is 2451545 days before 2000-01-01.
    ("4714-11-24 BC", -2451545),
    ("infinity", 2**31 - 1), ("-infinity", -(2**31)),
])
def test_parse_date(text, days):
    assert ve.parse_date(text) == days


@pytest.mark.parametrize("year, month, day", [
    (1, 1, 1), (1600, 2, 29), (1900, 3, 1), (1969, 12, 31), (2024, 2, 29), (9999, 12, 31)])
def test_parse_date_matches_python_calendar(year, month, day):
    assert ve.parse_date(f"{year:04d}-{month:02d}-{day:02d}") == python_days(year, month, day)


def test_parse_date_beyond_year_9999():
    # Every 400 Gregorian years have 146097 days.
    assert ve.parse_date("10000-01-01") == python_days(9999, 12, 31) + 1
    assert ve.parse_date("12000-01-01") == ve.parse_date("2000-01-01") + 25 * 146097
    assert ve.parse_date("5874897-12-31") == ve.parse_date("0097-12-31") + 14687 * 146097


@pytest.mark.parametrize("text", ["2000-1-01", "2000-13-01", "1900-02-29", "0000-01-01",
                                  "2000-01-32", "2000-01-01 AD", "x", "0002-02-29 BC"])
def test_parse_date_rejects_invalid(text):
    with pytest.raises(ve.ExportError):
        ve.parse_date(text)


@pytest.mark.parametrize("text, micros", [
    ("00:00:00", 0), ("00:00:00.000001", 1), ("12:34:56.789", 45296789000),
    ("23:59:59.999999", 86399999999), ("24:00:00", 86400000000)])
def test_parse_time(text, micros):
    assert ve.parse_time(text) == micros


@pytest.mark.parametrize("text", ["24:00:00.000001", "25:00:00", "12:60:00", "1:00:00",
                                  "00:00:00.1234567"])
def test_parse_time_rejects_invalid(text):
    with pytest.raises(ve.ExportError):
        ve.parse_time(text)


@pytest.mark.parametrize("text, micros", [
    ("2000-01-01 00:00:00", 0), ("2000-01-01 00:00:01.5", 1500000), ("1999-12-31 23:59:59", -1000000),
    ("0001-12-31 00:00:00 BC", -730120 * 86400000000),
    ("infinity", 2**63 - 1), ("-infinity", -(2**63))])
def test_parse_timestamp(text, micros):
    assert ve.parse_timestamp(text) == micros


@pytest.mark.parametrize("text, micros", [
    ("2000-01-01 00:00:01.5+00", 1500000), ("2000-01-01 00:00:00+00", 0),
    ("2000-01-01 01:00:00+01", 0), ("1999-12-31 19:00:00-05", 0),
    ("2000-01-01 05:30:00+05:30", 0), ("2000-01-01 00:00:00+00:00:30", -30000000),
    ("0001-12-31 00:00:00+00 BC", -730120 * 86400000000),
    ("infinity", 2**63 - 1), ("-infinity", -(2**63))])
def test_parse_timestamptz(text, micros):
    assert ve.parse_timestamptz(text) == micros


@pytest.mark.parametrize("text", ["2000-01-01 00:00:00", "2000-01-01T00:00:00+00",
                                  "2000-01-01 00:00:00+00:60", "2000-01-01 24:00:00+00"])
def test_parse_timestamptz_rejects_invalid(text):
    with pytest.raises(ve.ExportError):
        ve.parse_timestamptz(text)


@pytest.mark.parametrize("text, fields", [
    ("P1Y2M3DT4H5M6.5S", (14, 3, 14706500000)),
    ("P-1Y-2M-3DT-4H-5M-6.5S", (-14, -3, -14706500000)),
    ("P1Y-2M", (10, 0, 0)),
    ("PT0S", (0, 0, 0)),
    ("PT-0.5S", (0, 0, -500000)),
    ("PT0.000001S", (0, 0, 1)),
    ("P-3D", (0, -3, 0)),
    ("P1DT-1H", (0, 1, -3600000000)),
    ("PT1H-30M", (0, 0, 1800000000)),
    ("PT2562047788H", (0, 0, 2562047788 * 3600000000)),
    ("infinity", (2**31 - 1, 2**31 - 1, 2**63 - 1)),
    ("-infinity", (-(2**31), -(2**31), -(2**63))),
])
def test_parse_interval(text, fields):
    assert ve.parse_interval(text) == fields


@pytest.mark.parametrize("text", ["P", "PT", "P1YT", "1 year", "P1H", "PT1.5H", "PT1S2M", "P1D2Y"])
def test_parse_interval_rejects_invalid(text):
    with pytest.raises(ve.ExportError):
        ve.parse_interval(text)


@pytest.mark.parametrize("type_name, text, octets_hex", [
    ("boolean", "t", "01"), ("boolean", "f", "00"),
    ("smallint", "-1", "ffff"), ("smallint", "32767", "7fff"),
    ("integer", "-2147483648", "80000000"),
    ("bigint", "9223372036854775807", "7fffffffffffffff"),
    ("real", "0.10000000149011612", "3dcccccd"), ("real", "-0", "80000000"), ("real", "NaN", "7fc00000"),
    ("real", "Infinity", "7f800000"), ("real", "-Infinity", "ff800000"), ("real", "1e+30", "7149f2ca"),
    ("double precision", "0.1", "3fb999999999999a"), ("double precision", "-0", "8000000000000000"),
    ("double precision", "NaN", "7ff8000000000000"), ("double precision", "1e+100", "54b249ad2594c37d"),
    ("double precision", "-Infinity", "fff0000000000000"),
    ("numeric", "1.50", "312e3530"), ("numeric", "-0.00", "2d302e3030"), ("numeric", "NaN", "4e614e"),
    ("text", "héllo  ", "68c3a96c6c6f2020"), ("text", "", ""),
    ("bytea", "\\x", ""), ("bytea", "\\xDEADbeef", "deadbeef"),
    ("uuid", "6f1c2a54-6c0e-4e8b-9d3e-2b0f5a7c1101", "6f1c2a546c0e4e8b9d3e2b0f5a7c1101"),
    ("date", "2000-01-02", "00000001"), ("time", "00:00:01", "00000000000f4240"),
    ("timestamp", "2000-01-01 00:00:00.000001", "0000000000000001"),
    ("timestamptz", "-infinity", "8000000000000000"),
    ("interval", "P1M2DT0.000003S", "00000001" "00000002" "0000000000000003"),
])
def test_value_octets(type_name, text, octets_hex):
    assert ve.value_octets(type_name, text).hex() == octets_hex


@pytest.mark.parametrize("type_name, text", [
    ("boolean", "true"), ("smallint", "32768"), ("integer", "1.0"), ("bigint", "9223372036854775808"),
    ("bigint", " 1"), ("real", "1e+39"), ("real", "inf"), ("double precision", "1_0"),
    ("numeric", "1e5"), ("bytea", "\\xabc"), ("bytea", "abcd"), ("uuid", "6f1c2a546c0e4e8b9d3e2b0f5a7c1101"),
    ("jsonb", "{"), ("date", "today"), ("interval", "1 day"), ("no such type", "x")])
def test_value_octets_rejects_invalid(type_name, text):
    with pytest.raises(ve.ExportError):
        ve.value_octets(type_name, text)


# --------------------------------------------------------------------------------------------------
# Synthetic exports
# --------------------------------------------------------------------------------------------------

# prev_hash is char(64) in SQL; its format type is text.
COLUMNS = [("account", "text"), ("amount", "numeric"), ("note", "jsonb"), ("seq", "bigint"),
           ("prev_hash", "text")]
SEQ, PREV_HASH = 3, 4


def chain_rows(entries, columns=COLUMNS, chain_index=0):
    """Rows (hashed values then hash) chained per FORMAT.md "Chains": entries are the values of the
    columns before seq; seq and prev_hash are filled in per chain value."""
    rows = []
    last_hash = {}  # chain value -> (last seq, last hash)
    for entry in entries:
        chain_value = entry[chain_index] if chain_index is not None else None
        seq, prev_hash = last_hash.get(chain_value, (0, None))
        values = list(entry) + [str(seq + 1), prev_hash]
        record_hash = ve.record_hash(columns, values)
        last_hash[chain_value] = (seq + 1, record_hash)
        rows.append(values + [record_hash])
    return rows


def export_lines(rows, columns=COLUMNS, chain_by="account"):
    header = {"format": "ledger-export", "version": 1, "table": "public.audit", "chain_by": chain_by,
              "columns": [{"name": name, "type": type_name} for name, type_name in columns]}
    return [json.dumps(header)] + [json.dumps(row) for row in rows]


def rehash(row, columns=COLUMNS):
    row[-1] = ve.record_hash(columns, row[:-1])


def one_chain(length=4):
    return chain_rows([("alice", f"{n}.00", f'{{"n": {n}}}') for n in range(1, length + 1)])


def summary(problems):
    return [(problem.chain, problem.seq, problem.problem) for problem in problems]


def test_intact_export_has_no_problems():
    rows = chain_rows([("alice", "1.00", '{"x": [1, 2]}'), ("bob", "-2.5", "null"),
                       ("alice", "3", '"s"'), (None, "4", None), ("bob", "NaN", "{}"), (None, "5", "[]")])
    assert ve.verify_export(export_lines(rows)) == []
    report = ve.check_export(export_lines(rows))
    assert (report.record_count, report.chain_count) == (6, 3)


def test_intact_export_without_chain_by():
    rows = chain_rows([("alice", "1", "1"), ("bob", "2", "2"), ("carol", "3", "3")], chain_index=None)
    assert ve.verify_export(export_lines(rows, chain_by=None)) == []
    # Chained per account instead, it is not one valid chain.
    rows = chain_rows([("alice", "1", "1"), ("bob", "2", "2")])
    problems = ve.verify_export(export_lines(rows, chain_by=None))
    assert summary(problems)[0] == (None, 1, "duplicate_seq")


def test_record_order_in_export_does_not_matter():
    rows = one_chain()
    assert ve.verify_export(export_lines(rows[::-1])) == []


def test_column_edited():
    rows = one_chain()
    rows[1][1] = "999.00"
    assert summary(ve.verify_export(export_lines(rows))) == [("alice", 2, "hash_mismatch")]


def test_hash_forged():
    rows = one_chain()
    rows[1][-1] = "0" * 64
    assert summary(ve.verify_export(export_lines(rows))) == [
        ("alice", 2, "hash_mismatch"), ("alice", 3, "prev_hash_mismatch")]


def test_prev_hash_forged():
    rows = one_chain()
    rows[1][PREV_HASH] = "f" * 64
    assert summary(ve.verify_export(export_lines(rows))) == [
        ("alice", 2, "hash_mismatch"), ("alice", 2, "prev_hash_mismatch")]


def test_middle_record_deleted():
    rows = one_chain()
    del rows[1]
    assert summary(ve.verify_export(export_lines(rows))) == [
        ("alice", 3, "seq_gap"), ("alice", 3, "prev_hash_mismatch")]


def test_seqs_swapped():
    rows = one_chain()
    rows[1][SEQ], rows[2][SEQ] = rows[2][SEQ], rows[1][SEQ]
    problems = summary(ve.verify_export(export_lines(rows)))
    assert problems[0] == ("alice", 2, "hash_mismatch")
    assert problems == [("alice", 2, "hash_mismatch"), ("alice", 2, "prev_hash_mismatch"),
                        ("alice", 3, "hash_mismatch"), ("alice", 3, "prev_hash_mismatch"),
                        ("alice", 4, "prev_hash_mismatch")]


def test_record_duplicated():
    rows = one_chain()
    rows.insert(2, list(rows[1]))
    assert summary(ve.verify_export(export_lines(rows))) == [("alice", 2, "duplicate_seq")]


def test_duplicate_seq_with_wrong_hash_and_tie_order():
    rows = one_chain()
    forged = list(rows[1])
    forged[1] = "0.00"
    forged[-1] = "0" * 64  # sorts before the genuine hash, so it is taken as the chain's seq 2
    rows.append(forged)
    assert summary(ve.verify_export(export_lines(rows))) == [
        ("alice", 2, "hash_mismatch"), ("alice", 2, "duplicate_seq"), ("alice", 3, "prev_hash_mismatch")]


def test_deleting_newest_records_or_rehashing_whole_chain_goes_unnoticed():
    assert ve.verify_export(export_lines(one_chain()[:2])) == []
    rewritten = chain_rows([("alice", "0", "0")] * 4)
    assert ve.verify_export(export_lines(rewritten)) == []


def test_null_seq():
    rows = one_chain(2)
    rows[1][SEQ] = None
    assert summary(ve.verify_export(export_lines(rows))) == [("alice", None, "seq_gap"),
                                                               ("alice", None, "hash_mismatch")]
    rehash(rows[1])
    assert summary(ve.verify_export(export_lines(rows))) == [("alice", None, "seq_gap")]


def test_null_seq_sorts_last():
    rows = one_chain(3)
    rows[0][SEQ] = None
    rehash(rows[0])
    assert summary(ve.verify_export(export_lines(rows))) == [
        ("alice", 2, "seq_gap"), ("alice", 2, "prev_hash_mismatch"), ("alice", None, "seq_gap")]


def test_first_record_missing():
    rows = one_chain(3)[1:]
    assert summary(ve.verify_export(export_lines(rows))) == [
        ("alice", 2, "seq_gap"), ("alice", 2, "prev_hash_mismatch")]


@pytest.mark.parametrize("bad_hash", [None, "", "A" * 64, "0" * 63, "g" * 64, " " + "0" * 63])
def test_null_or_malformed_hash(bad_hash):
    rows = one_chain(3)
    rows[1][-1] = bad_hash
    assert summary(ve.verify_export(export_lines(rows))) == [
        ("alice", 2, "hash_mismatch"), ("alice", 3, "prev_hash_mismatch")]


def test_malformed_prev_hash_matching_malformed_hash():
    rows = one_chain(3)
    rows[1][-1] = rows[2][PREV_HASH] = "not a hash"
    rehash(rows[2])
    assert summary(ve.verify_export(export_lines(rows))) == [
        ("alice", 2, "hash_mismatch"), ("alice", 3, "prev_hash_mismatch")]


def test_first_record_with_prev_hash():
    rows = one_chain(2)
    rows[0][PREV_HASH] = "0" * 64
    rehash(rows[0])
    rows[1][PREV_HASH] = rows[0][-1]
    rehash(rows[1])
    assert summary(ve.verify_export(export_lines(rows))) == [("alice", 1, "prev_hash_mismatch")]


def test_chains_sorted_by_chain_text():
    rows = chain_rows([("bob", "1", "1"), ("alice", "1", "1"), ("Zed", "1", "1"), (None, "1", "1")])
    for row in rows:
        row[1] = "2"
    assert summary(ve.verify_export(export_lines(rows))) == [
        (None, 1, "hash_mismatch"), ("Zed", 1, "hash_mismatch"), ("alice", 1, "hash_mismatch"),
        ("bob", 1, "hash_mismatch")]


def test_chain_by_canonical_octets():
    # The same instant written with different offsets is the same chain value.
    columns = [("at", "timestamptz"), ("seq", "bigint"), ("prev_hash", "text")]
    rows = chain_rows([("2000-01-01 00:00:00+00",)], columns=columns)
    second = ["2000-01-01 01:00:00+01", "2", rows[0][-1]]
    rows.append(second + [ve.record_hash(columns, second)])
    assert ve.verify_export(export_lines(rows, columns=columns, chain_by="at")) == []


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def run_script(*args, stdin=""):
    return subprocess.run([sys.executable, str(SCRIPT), *args], input=stdin, capture_output=True,
                          text=True, encoding="utf-8", timeout=60)


def write_export(tmp_path, lines):
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_cli_intact(tmp_path):
    result = run_script(str(write_export(tmp_path, export_lines(one_chain()))))
    assert (result.returncode, result.stdout) == (0, "")
    assert result.stderr.strip() == "verified 4 records in 1 chains: 0 problems"


def test_cli_problems_tsv_and_stdin():
    rows = one_chain()
    del rows[1]
    result = run_script("-", stdin="\n".join(export_lines(rows)) + "\n")
    assert result.returncode == 1
    fields = [line.split("\t") for line in result.stdout.splitlines()]
    assert [field[:3] for field in fields] == [["alice", "3", "seq_gap"], ["alice", "3", "prev_hash_mismatch"]]
    assert all(len(field) == 4 for field in fields)
    assert result.stderr.strip() == "verified 3 records in 1 chains: 2 problems"


def test_cli_tsv_escapes_and_empty_fields(tmp_path):
    rows = chain_rows([("a\tb", "1", "1")])
    rows[0][SEQ] = None
    result = run_script(str(write_export(tmp_path, export_lines(rows))))
    assert result.stdout.splitlines()[0].split("\t")[:3] == ["a\\tb", "", "seq_gap"]


def test_cli_json(tmp_path):
    rows = one_chain()
    rows[1][-1] = "0" * 64
    result = run_script("--json", str(write_export(tmp_path, export_lines(rows))))
    assert result.returncode == 1
    problems = json.loads(result.stdout)
    assert [(p["chain"], p["seq"], p["problem"]) for p in problems] == [
        ("alice", 2, "hash_mismatch"), ("alice", 3, "prev_hash_mismatch")]
    assert all(set(p) == {"chain", "seq", "problem", "detail"} for p in problems)

    result = run_script("--json", str(write_export(tmp_path, export_lines(one_chain()))))
    assert (result.returncode, json.loads(result.stdout)) == (0, [])


def malformed_exports():
    good = export_lines(one_chain(2))
    header = json.loads(good[0])
    yield "empty", []
    yield "bad json", [good[0], "[not json"]
    yield "bad header json", ["{", good[1]]
    yield "not a header", good[1:]
    yield "wrong version", [json.dumps({**header, "version": 2})] + good[1:]
    yield "unknown type", [json.dumps({**header, "columns": header["columns"] + [
        {"name": "x", "type": "money"}]})] + good[1:]
    yield "no seq column", [json.dumps({**header, "columns": header["columns"][:3]})]
    yield "unknown chain_by", [json.dumps({**header, "chain_by": "nope"})] + good[1:]
    yield "too few values", [good[0], json.dumps(json.loads(good[1])[:-1])]
    yield "too many values", [good[0], json.dumps(json.loads(good[1]) + [None])]
    yield "not an array", [good[0], json.dumps({"a": 1})]
    yield "number value", [good[0], json.dumps([1] + json.loads(good[1])[1:])]
    yield "bad numeric", [good[0], json.dumps(["alice", "1e5"] + json.loads(good[1])[2:])]
    yield "bad jsonb", [good[0], json.dumps(["alice", "1", "{"] + json.loads(good[1])[3:])]
    yield "bad seq", [good[0], json.dumps(["alice", "1", "1", "one"] + json.loads(good[1])[4:])]
    yield "deep line", [good[0], "[" * 100_000 + "]" * 100_000]


@pytest.mark.parametrize("name, lines", list(malformed_exports()))
def test_cli_malformed_input_exits_2(tmp_path, name, lines):
    result = run_script(str(write_export(tmp_path, lines)))
    assert result.returncode == 2, (name, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert "error" in result.stderr
    assert result.stdout == ""


def test_cli_invalid_utf8_and_missing_file(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'\xff\xfe{"format"\n')
    for argument in (str(path), str(tmp_path / "missing.jsonl")):
        result = run_script(argument)
        assert result.returncode == 2
        assert "Traceback" not in result.stderr and "error" in result.stderr
