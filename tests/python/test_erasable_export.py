"""Tests of scripts/verify_export.py on exports of ledgers with erasable columns (docs/FORMAT.md,
"Erasable columns"): records that commit to their values through salted hashes, records whose values
were erased with only the commitments left, and every way of undoing or faking an erasure, which
must show up as the hash_mismatch of that record and nothing else. The same for erasable members of
a jsonb column ("Erasable members"): a history ledger's row, and the state check on such a history."""

from __future__ import annotations

import hashlib
import json
from typing import Callable

import pytest

from test_merkle_and_digests import digest_body, mth, record_hashes
from test_pruned_export import run_line
from test_verify_export import run_script, summary, write_export

import verify_export as ve  # on the path: test_verify_export put scripts/ there

# --------------------------------------------------------------------------------------------------
# FORMAT.md test vector
# --------------------------------------------------------------------------------------------------

VECTOR_COLUMNS = [("id", "integer"), ("email", "text"), ("seq", "bigint"), ("prev_hash", "text")]
VECTOR_VALUES = ["1", "alice@example.org", "1", None]
VECTOR_SALT = bytes(range(1, 33))
VECTOR_COMMITMENT = "85b87dc37c06ca4ee945c5b2bdd30241b3fa3b38ea6870c5574cf614360d5483"
VECTOR_HEX = """
01 00000004
00000002 6964 03 01 00000004 00000001
00000005 656d61696c 40 01 00000020 85b87dc37c06ca4ee945c5b2bdd30241b3fa3b38ea6870c5574cf614360d5483
00000003 736571 04 01 00000008 0000000000000001
00000009 707265765f68617368 08 00
"""
VECTOR_HASH = "38afb86c296ab3d6a1e6498209cc23373fba160732128dcaaf8af8156694b9bc"


def salted(salt: bytes, *columns: str) -> str:
    """A ledger_erasure text as the append trigger writes it: one salt entry per column."""
    return json.dumps({column: {"salt": salt.hex()} for column in columns})


def test_vector_commitment_bytes_and_hash():
    # The commitment, computed here from its definition: the domain, the salt, then the column's
    # ordinary encoding without its name (text tag 08, presence 01 and the length-prefixed octets).
    value = b"alice@example.org"
    expected = hashlib.sha3_256(b"ledger-erasable/v1" + VECTOR_SALT + b"\x08\x01"
                                + len(value).to_bytes(4, "big") + value).hexdigest()
    assert expected == VECTOR_COMMITMENT
    assert ve.commitment(VECTOR_SALT, "text", "alice@example.org").hex() == VECTOR_COMMITMENT
    entries = ve.erasure_entries(salted(VECTOR_SALT, "email"))
    assert entries == {"email": ve.ErasureEntry(False, VECTOR_SALT)}
    actual = ve.canonical_record_bytes(VECTOR_COLUMNS, VECTOR_VALUES, entries)
    assert actual.hex() == "".join(VECTOR_HEX.split())
    assert ve.record_hash(VECTOR_COLUMNS, VECTOR_VALUES, entries) == VECTOR_HASH


def test_vector_after_erasure():
    erased = ve.erasure_entries(json.dumps({"email": {"erased": VECTOR_COMMITMENT}}))
    values = ["1", None, "1", None]
    assert ve.canonical_record_bytes(VECTOR_COLUMNS, values, erased).hex() == "".join(VECTOR_HEX.split())
    assert ve.record_hash(VECTOR_COLUMNS, values, erased) == VECTOR_HASH


def test_a_null_value_with_a_salt_is_committed():
    """An erasable column that is NULL is a commitment too, so a value put in later is caught."""
    entries = ve.erasure_entries(salted(VECTOR_SALT, "email"))
    null_commitment = hashlib.sha3_256(b"ledger-erasable/v1" + VECTOR_SALT + b"\x08\x00").digest()
    assert ve.commitment(VECTOR_SALT, "text", None) == null_commitment
    encoded = ve.canonical_record_bytes(VECTOR_COLUMNS, ["1", None, "1", None], entries)
    assert bytes.fromhex("00000005 656d61696c 40 01 00000020") + null_commitment in encoded


# --------------------------------------------------------------------------------------------------
# Exports
# --------------------------------------------------------------------------------------------------

# The columns of the real export ERASED_LINE comes from, as its hash fixes them (`born` would verify
# under any type: an erased value is never read).
COLUMNS = [("id", "integer"), ("account", "text"), ("email", "text"), ("born", "date"),
           ("amount", "numeric"), ("seq", "bigint"), ("prev_hash", "text")]
ACCOUNT, EMAIL, SEQ, ERASURE = 1, 2, 5, 7  # positions in a record array
ERASABLE = ("email", "born")
ERASED_LINE = (
    '["2", "a", null, null, "2", "2", "1d61859e2dd1c41162401bd43f575ee72aa3e0f4df2d1bcfd2f16448cd6e489b", '
    '"{\\"born\\": {\\"erased\\": \\"7e2533e9aa953d4bc7fadcb1da5be1a6311ed91d8b463d238fca24a38a6cc609\\"}, '
    '\\"email\\": {\\"erased\\": \\"74f4f4dad2d7f39a8584ff409e5c7e32d67d63cf45e2b05525e6ca1b56503b90\\"}}", '
    '"bd5b896130222cd724ee45e402a3fca04eeda49abc2726ecfd481634beb39108"]')


def test_a_record_line_of_a_real_export():
    """A record the extension hashed with commitments, then erased: the verifier gets its hash."""
    header = ve.parse_header(export_lines([])[0])
    record = ve.parse_record(header, json.loads(ERASED_LINE), 2)
    assert record.computed_hash == record.stored_hash


def salt_of(number: int, column: str) -> bytes:
    """A fixed salt per record and column, so the exports are the same on every run."""
    return hashlib.sha3_256(f"salt {number} {column}".encode()).digest()


def hashed_row(values: list[str | None], erasure: str | None, columns: list[tuple] = COLUMNS) -> list:
    """A record array as an export writes it: the hashed values, the ledger_erasure text, the hash."""
    return [*values, erasure, ve.record_hash(columns, values, ve.erasure_entries(erasure))]


def erasable_rows(entries: list[tuple[tuple[str | None, ...], bool]]) -> list[list]:
    """Record arrays chained per account: entries are the values before seq and whether the record
    was appended while email and born were erasable (then it has a salt for each; else its
    ledger_erasure is NULL)."""
    rows = []
    last = {}  # account -> (last seq, last hash)
    for number, (values, erasable) in enumerate(entries):
        seq, prev_hash = last.get(values[ACCOUNT], (0, None))
        erasure = json.dumps({c: {"salt": salt_of(number, c).hex()} for c in ERASABLE}) if erasable else None
        row = hashed_row([*values, str(seq + 1), prev_hash], erasure)
        last[values[ACCOUNT]] = (seq + 1, row[-1])
        rows.append(row)
    return rows


def redacted(row: list, columns: list[tuple] = COLUMNS) -> list:
    """The row after ledger.redact: each salted value NULL, its entry the commitment to it."""
    names = [column[0] for column in columns]
    row = list(row)
    entries = json.loads(row[len(columns)])
    for name, entry in entries.items():
        where, type_name = names.index(name), columns[names.index(name)][1]
        commitment = ve.commitment(bytes.fromhex(entry["salt"]), type_name, row[where])
        entries[name] = {"erased": commitment.hex()}
        row[where] = None
    row[len(columns)] = json.dumps(entries)
    return row


def export_lines(rows: list[list], columns: list[tuple] = COLUMNS, erasure: object = True) -> list[str]:
    columns_member = [{"name": c[0], "type": c[1], **({"added": True} if len(c) > 2 and c[2] else {})}
                      for c in columns]
    header = {"format": "ledger-export", "version": 1, "table": "public.people", "chain_by": "account",
              "columns": columns_member, "erasure": erasure}
    return [json.dumps(header), *(json.dumps(row) for row in rows)]


def problems(lines: list[str]) -> list[tuple]:
    return summary(ve.verify_export(lines))


# Two chains: records appended before set_erasable (NULL ledger_erasure), then salted ones, some
# with a NULL erasable value.
ROWS = erasable_rows([
    (("1", "a", "ann@example.org", "1990-05-01", "10.00"), False),
    (("2", "b", "bob@example.org", None, "-1"), False),
    (("3", "a", "ann@example.org", "1990-05-01", "2.50"), True),
    (("4", "b", None, "1985-12-31", "7"), True),
    (("5", "a", "ann@new.example", None, "0"), True),
    (("6", "b", "bob@example.org", "1985-12-31", "8"), True),
])
A3, B4, A5 = 2, 3, 4  # indexes in ROWS of chain a's seq 2, chain b's seq 2, chain a's seq 3


def erased(*indexes: int) -> list[list]:
    """ROWS with the records at those indexes redacted."""
    return [redacted(row) if index in indexes else row for index, row in enumerate(ROWS)]


def test_intact_erasable_export():
    lines = export_lines(erased(A3, B4))
    report = ve.check_export(lines)
    assert report.problems == []
    assert (report.record_count, report.chain_count) == (6, 2)
    assert problems(export_lines(ROWS)) == []


def test_erasure_leaves_every_hash():
    """A redacted record keeps its hash, so the chains' Merkle trees, and every checkpoint, proof and
    digest over them, stay as they were (test_cli_digest_of_an_erased_export)."""
    before, after = ve.check_export(export_lines(ROWS)), ve.check_export(export_lines(erased(A3, B4, A5)))
    assert [r.computed_hash for r in after.records] == [r.computed_hash for r in before.records]
    # Nothing of an erased value is left in its record line.
    line = json.dumps(erased(A3)[A3])
    assert "ann@example.org" not in line and "1990-05-01" not in line
    assert salt_of(A3, "email").hex() not in line


def with_entries(row: list, change: Callable[[dict], object], where: int = ERASURE) -> list:
    """The row with its ledger_erasure object (element `where`) changed in place by `change`."""
    row = list(row)
    entries = json.loads(row[where])
    change(entries)
    row[where] = json.dumps(entries)
    return row


def put_back(row: list) -> list:
    row = list(row)
    row[EMAIL] = ROWS[A3][EMAIL]
    return row


def flipped(row: list) -> list:
    """A salted email passed off as erased: the value gone, a made-up commitment in its entry."""
    row = with_entries(row, lambda e: e.update(email={"erased": "ab" * 32}))
    row[EMAIL] = None
    return row


def edited(row: list) -> list:
    row = list(row)
    row[EMAIL] = "eve@example.org"
    return row


@pytest.mark.parametrize("index, tamper", [
    pytest.param(A3, lambda r: put_back(redacted(r)), id="erased value put back"),
    pytest.param(A3, lambda r: with_entries(r, lambda e: e.update(email={"salt": "00" * 32})),
                 id="salt changed"),
    pytest.param(A3, lambda r: with_entries(r, lambda e: e.pop("email")), id="salt entry removed"),
    pytest.param(A3, lambda r: with_entries(redacted(r), lambda e: e.pop("born")), id="erased entry removed"),
    pytest.param(A3, lambda r: with_entries(redacted(r), lambda e: e.update(email={"erased": "00" * 32})),
                 id="commitment changed"),
    pytest.param(A3, flipped, id="salted value flipped to erased"),
    pytest.param(A3, edited, id="value edited while salted"),
    pytest.param(B4, lambda r: [*r[:EMAIL], "eve@example.org", *r[EMAIL + 1:]], id="NULL salted value filled"),
    pytest.param(A5, lambda r: [*r[:ERASURE], None, r[-1]], id="ledger_erasure set to NULL"),
    # Well-formed JSON that is no entry: the column is then an ordinary one.
    pytest.param(A3, lambda r: with_entries(r, lambda e: e["email"].update(salt=e["email"]["salt"].upper())),
                 id="upper-case salt"),
    pytest.param(A3, lambda r: with_entries(r, lambda e: e["email"].update(note=1)), id="extra member"),
    pytest.param(A3, lambda r: with_entries(r, lambda e: e["email"].update(erased="ab" * 32)), id="both keys"),
    pytest.param(A3, lambda r: with_entries(r, lambda e: e.update(email={"salt": "ab" * 31})), id="short salt"),
    pytest.param(A3, lambda r: with_entries(r, lambda e: e.update(email="ab" * 32)), id="entry not an object"),
    pytest.param(A3, lambda r: [*r[:ERASURE], json.dumps([r[ERASURE]]), r[-1]], id="not an object"),
])
def test_tampering_is_the_hash_mismatch_of_that_record(index: int, tamper: Callable[[list], list]):
    """Each way of undoing or faking an erasure changes the record's bytes and nothing else: the
    stored hash stays, so the next record still links to it."""
    rows = list(ROWS)
    rows[index] = tamper(rows[index])
    found = ve.verify_export(export_lines(rows))
    seq = int(ROWS[index][SEQ])
    assert summary(found) == [(ROWS[index][ACCOUNT], seq, "hash_mismatch")]
    assert found[0].detail.startswith(f"stored {ROWS[index][-1]}, computed ")


def test_entries_naming_columns_that_are_not_hashed_are_ignored():
    for name in ("nickname", "hash", "ledger_erasure", "Email"):
        rows = list(ROWS)
        rows[A3] = with_entries(ROWS[A3], lambda e: e.update({name: {"salt": "cd" * 32}}))
        rows[A5] = with_entries(redacted(ROWS[A5]), lambda e: e.update({name: {"erased": "cd" * 32}}))
        assert problems(export_lines(rows)) == [], name


def test_a_member_named_twice_keeps_the_last():
    """The text is read as jsonb reads it (jsonb itself never prints a member twice)."""
    row = list(ROWS[A3])
    salt = json.loads(row[ERASURE])["email"]["salt"]
    row[ERASURE] = row[ERASURE][:-1] + f', "email": {{"salt": "{"00" * 32}", "salt": "{salt}"}}}}'
    assert ve.erasure_entries(row[ERASURE])["email"] == ve.ErasureEntry(False, bytes.fromhex(salt))
    assert problems(export_lines([*ROWS[:A3], row, *ROWS[A3 + 1 :]])) == []


ADDED = [*COLUMNS, ve.Column("memo", "text", added=True)]


def test_an_erased_added_column_is_encoded():
    """An added column is left out when NULL, but not when it has an entry: an erased value was
    there, and its commitment is what the record was hashed with."""
    # Appended before the addition: a NULL memo, left out.
    rows = [[*row[:ERASURE], None, row[ERASURE], row[-1]] for row in ROWS[:2]]
    values = ["3", "a", "ann@example.org", None, "1", "2", rows[0][-1], "a memo"]
    rows.append(hashed_row(values, salted(salt_of(2, "memo"), "email", "memo"), ADDED))
    assert problems(export_lines(rows, ADDED)) == []
    rows[2] = redacted(rows[2], ADDED)
    assert rows[2][len(ADDED) - 1] is None
    assert problems(export_lines(rows, ADDED)) == []
    # Seven base columns and memo, the erased memo last as its commitment.
    entries = ve.erasure_entries(rows[2][len(ADDED)])
    encoded = ve.canonical_record_bytes(ADDED, rows[2][:len(ADDED)], entries)
    assert encoded[1:5] == (8).to_bytes(4, "big")
    assert encoded.endswith(bytes.fromhex("00000004 6d656d6f 40 01 00000020") + entries["memo"].octets)
    # Without its entry the NULL memo is left out, as in a record appended before the addition.
    rows[2] = with_entries(rows[2], lambda e: e.pop("memo"), where=len(ADDED))
    assert problems(export_lines(rows, ADDED)) == [("a", 2, "hash_mismatch")]


# --------------------------------------------------------------------------------------------------
# Malformed input and exports without erasure
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("element", [1, True, {"email": {"salt": "ab" * 32}}, ["x"]])
def test_an_erasure_element_that_is_not_a_string_or_null_is_malformed(element: object):
    row = [*ROWS[A3][:ERASURE], element, ROWS[A3][-1]]
    with pytest.raises(ve.ExportError, match="line 2: every value must be a JSON string or null"):
        ve.parse_export(export_lines([row]))


@pytest.mark.parametrize("text", ["", "{", '{"email": {"salt": "ab"}', "NaN", "{'email': 1}", "[1,]", "{} {}"])
def test_an_erasure_element_that_is_not_json_text_is_malformed(text: str):
    row = [*ROWS[A3][:ERASURE], text, ROWS[A3][-1]]
    with pytest.raises(ve.ExportError, match="line 2: the ledger_erasure value is not JSON text"):
        ve.parse_export(export_lines([row]))


@pytest.mark.parametrize("erasure", ["yes", 1, None, "true", []])
def test_the_header_erasure_must_be_a_boolean(erasure: object):
    with pytest.raises(ve.ExportError, match='"erasure" must be true or false'):
        ve.parse_export(export_lines(ROWS, erasure=erasure))


def test_records_without_their_erasure_element_are_malformed():
    rows = [[*row[:ERASURE], row[-1]] for row in ROWS]
    with pytest.raises(ve.ExportError, match="expected 9 values .* the ledger_erasure text and the hash"):
        ve.parse_export(export_lines(rows))


def test_without_erasure_records_are_read_as_before():
    """No erasure member, or false: a record has no ledger_erasure element, and no entries."""
    plain = erasable_rows([(row[:SEQ], False) for row in ROWS])
    rows = [[*row[:ERASURE], row[-1]] for row in plain]
    header, *records = export_lines(rows, erasure=False)
    assert problems([header, *records]) == []
    without = json.loads(header)
    del without["erasure"]
    assert problems([json.dumps(without), *records]) == []
    with pytest.raises(ve.ExportError, match="expected 8 values"):
        ve.parse_export([header, json.dumps(ROWS[0])])


def test_a_pruned_export_with_erasable_records():
    rows = erased(A3)
    chain_a = [row for row in rows if row[ACCOUNT] == "a"]
    header, *records = export_lines([row for row in rows if row is not chain_a[0]])
    report = ve.check_export([header, run_line(chain_a, 1, 1, "a"), *records])
    assert (report.problems, report.pruned_count) == ([], 1)


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def test_cli_intact_erasable_export(tmp_path):
    result = run_script(str(write_export(tmp_path, export_lines(erased(A3, B4)))))
    assert (result.returncode, result.stdout) == (0, "")
    assert result.stderr.strip() == "verified 6 records in 2 chains: 0 problems"


def test_cli_an_erased_value_put_back(tmp_path):
    rows = erased(A3, B4)
    rows[A3] = put_back(rows[A3])
    result = run_script(str(write_export(tmp_path, export_lines(rows))))
    assert result.returncode == 1
    assert [line.split("\t")[:3] for line in result.stdout.splitlines()] == [["a", "2", "hash_mismatch"]]


def test_cli_malformed_erasure_exits_2(tmp_path):
    row = [*ROWS[A3][:ERASURE], "{not json", ROWS[A3][-1]]
    result = run_script(str(write_export(tmp_path, export_lines([row]))))
    assert result.returncode == 2
    assert "the ledger_erasure value is not JSON text" in result.stderr


def test_cli_digest_of_an_erased_export(tmp_path):
    """A digest made before the erasure extends the export made after it."""
    chain_a = [row for row in ROWS if row[ACCOUNT] == "a"]
    export = write_export(tmp_path, export_lines(erased(A3, A5)))
    digest = tmp_path / "checkpoint.digest"
    digest.write_text(digest_body(mth(record_hashes(chain_a)), 3, ledger="public.people", chain="a") + "\n",
                      encoding="utf-8")
    result = run_script(str(export), "--digest", str(digest), "--allow-unsigned")
    assert result.returncode == 0, result
    assert "digest\textends\tok\t" in result.stdout


# --------------------------------------------------------------------------------------------------
# Erasable members of a jsonb column (a history ledger's row): FORMAT.md "Erasable members"
# --------------------------------------------------------------------------------------------------

MEMBER_VECTOR_COLUMNS = [("key", "text"), ("seq", "bigint"), ("op", "text"), ("row", "jsonb"),
                         ("prev_hash", "text")]
MEMBER_VECTOR_VALUES = ['{"id": 2}', "1", "insert", '{"id": 2, "plan": "free", "email": "bob@example.org"}',
                        None]
MEMBER_VECTOR_ERASED_VALUES = ['{"id": 2}', "1", "insert", '{"id": 2, "plan": "free", "email": null}', None]
MEMBER_VECTOR_COMMITMENT = "bdcc9c45c2424032daf716ef91ac35299f229b4564b0f0dc62ef3ca9557cbeb5"
MEMBER_VECTOR_HEX = """
01 00000005
00000003 6b6579 08 01 00000009 7b226964223a20327d
00000003 736571 04 01 00000008 0000000000000001
00000002 6f70 08 01 00000006 696e73657274
00000003 726f77 0b 01 00000050
    06 00000003
       00000005 656d61696c 07 00000020 bdcc9c45c2424032daf716ef91ac35299f229b4564b0f0dc62ef3ca9557cbeb5
       00000002 6964 03 00000001 32
       00000004 706c616e 04 00000004 66726565
00000009 707265765f68617368 08 00
"""
MEMBER_VECTOR_HASH = "8844e5725475a0dcbd7028781dbd95eff65305a27277c7207c75860993cfbd7b"


def salted_members(salts: dict[str, bytes], column: str = "row") -> str:
    """A history's ledger_erasure text as its trigger writes it: a members entry for `row`."""
    return json.dumps({column: {"members": {member: {"salt": salt.hex()} for member, salt in salts.items()}}})


def test_member_vector_commitment_bytes_and_hash():
    # The member commitment from its definition: the member domain (25 octets), the salt, then the
    # member's value as canonical JSON (a string: 04, its length, its octets).
    domain = b"ledger-erasable-member/v1"
    assert len(domain) == 25
    value = bytes.fromhex("04 0000000f") + b"bob@example.org"
    assert hashlib.sha3_256(domain + VECTOR_SALT + value).hexdigest() == MEMBER_VECTOR_COMMITMENT
    assert ve.member_commitment(VECTOR_SALT, value).hex() == MEMBER_VECTOR_COMMITMENT
    entries = ve.erasure_entries(salted_members({"email": VECTOR_SALT}))
    assert entries == {"row": ve.MembersEntry({"email": ve.ErasureEntry(False, VECTOR_SALT)})}
    actual = ve.canonical_record_bytes(MEMBER_VECTOR_COLUMNS, MEMBER_VECTOR_VALUES, entries)
    assert actual.hex() == "".join(MEMBER_VECTOR_HEX.split())
    assert ve.record_hash(MEMBER_VECTOR_COLUMNS, MEMBER_VECTOR_VALUES, entries) == MEMBER_VECTOR_HASH
    # Without the entry, the row is its plain canonical JSON (0x47 octets: the string, not 0x50).
    plain = ve.canonical_record_bytes(MEMBER_VECTOR_COLUMNS, MEMBER_VECTOR_VALUES)
    assert ve.canonical_json(MEMBER_VECTOR_VALUES[3]) in plain and actual != plain


def test_member_vector_after_erasure():
    erased_entry = json.dumps({"row": {"members": {"email": {"erased": MEMBER_VECTOR_COMMITMENT}}}})
    entries = ve.erasure_entries(erased_entry)
    commitment = bytes.fromhex(MEMBER_VECTOR_COMMITMENT)
    assert entries == {"row": ve.MembersEntry({"email": ve.ErasureEntry(True, commitment)})}
    encoded = ve.canonical_record_bytes(MEMBER_VECTOR_COLUMNS, MEMBER_VECTOR_ERASED_VALUES, entries)
    assert encoded.hex() == "".join(MEMBER_VECTOR_HEX.split())
    assert ve.record_hash(MEMBER_VECTOR_COLUMNS, MEMBER_VECTOR_ERASED_VALUES, entries) == MEMBER_VECTOR_HASH
    # The erased value put back under its erased entry: the plain bytes, another hash.
    assert ve.record_hash(MEMBER_VECTOR_COLUMNS, MEMBER_VECTOR_VALUES, entries) == \
        ve.record_hash(MEMBER_VECTOR_COLUMNS, MEMBER_VECTOR_VALUES) != MEMBER_VECTOR_HASH


def test_committed_members_as_the_core_unit_test_has_them():
    """core/src/json.rs's test of commit_members: only the named top-level member is replaced."""
    text = '{"email": "a@example.org", "n": [1, {}], "z": null}'
    salt = bytes([3]) * 32
    canonical = ve.canonical_json(text)
    email = bytes.fromhex("04 0000000d") + b"a@example.org"
    at = 5 + 4 + len("email")  # after the count and the first key
    assert canonical[at:at + len(email)] == email
    commitment = hashlib.sha3_256(b"ledger-erasable-member/v1" + salt + email).digest()
    expected = canonical[:at] + bytes.fromhex("07 00000020") + commitment + canonical[at + len(email):]
    assert ve.committed_json(text, {"email": ve.ErasureEntry(False, salt)}) == expected
    erased_text = '{"email": null, "n": [1, {}], "z": null}'
    assert ve.committed_json(erased_text, {"email": ve.ErasureEntry(True, commitment)}) == expected
    # An erased member holding a value again, no entries, entries naming no member: unchanged.
    assert ve.committed_json(text, {"email": ve.ErasureEntry(True, commitment)}) == canonical
    assert ve.committed_json(text, {}) == canonical
    assert ve.committed_json(text, {"missing": ve.ErasureEntry(False, salt)}) == canonical
    # A null member with a salt is committed to (V = 00), as a null column is.
    null_commitment = hashlib.sha3_256(b"ledger-erasable-member/v1" + salt + b"\x00").digest()
    assert ve.committed_json(text, {"z": ve.ErasureEntry(False, salt)}).endswith(
        bytes.fromhex("00000001 7a 07 00000020") + null_commitment)
    # Nested members are never committed to; a value that is no object is its canonical JSON.
    nested = '{"n": {"email": "a@example.org"}}'
    assert ve.committed_json(nested, {"email": ve.ErasureEntry(False, salt)}) == ve.canonical_json(nested)
    for scalar in ("null", '"a@example.org"', '[{"email": 1}]', "1.50"):
        assert ve.committed_json(scalar, {"email": ve.ErasureEntry(False, salt)}) == ve.canonical_json(scalar)


def test_members_entries_are_parsed_as_format_md_says():
    salt, other = "ab" * 32, "cd" * 32
    salted_entry = ve.ErasureEntry(False, bytes.fromhex(salt))
    erased_entry = ve.ErasureEntry(True, bytes.fromhex(other))
    text = json.dumps({"row": {"members": {
        "email": {"salt": salt}, "born": {"erased": other},
        # Ill-formed member entries are skipped.
        "upper": {"salt": salt.upper()}, "both": {"salt": salt, "erased": other}, "short": {"salt": "ab"},
        "string": salt, "members": {"members": {"email": {"salt": salt}}}, "other": {"hash": salt}}}})
    assert ve.erasure_entries(text) == {"row": ve.MembersEntry({"email": salted_entry, "born": erased_entry})}
    # A members entry with no well-formed member entry is still one, with none.
    for members in ({}, {"email": {"salt": "x"}}, {"email": None}):
        assert ve.erasure_entries(json.dumps({"row": {"members": members}})) == {"row": ve.MembersEntry({})}
    # Not a members entry: "members" not an object, another member beside it.
    for entry in ({"members": [{"email": {"salt": salt}}]}, {"members": None}, {"members": "x"},
                  {"members": {"email": {"salt": salt}}, "salt": salt}, {"Members": {}}):
        assert ve.erasure_entries(json.dumps({"row": entry})) == {}, entry
    # Value entries and members entries side by side, on different columns.
    assert ve.erasure_entries(json.dumps({"email": {"salt": salt}, "row": {"members": {}}})) == {
        "email": salted_entry, "row": ve.MembersEntry({})}
    # A member named twice keeps the last, as jsonb reads it.
    twice = '{"row": {"members": {"email": {"salt": "%s"}, "email": {"erased": "%s"}}}}' % (salt, other)
    assert ve.erasure_entries(twice) == {"row": ve.MembersEntry({"email": erased_entry})}


# A history ledger's hashed columns, as docs/vectors/history.json (and the extension) have them.
HISTORY_COLUMNS = [("key", "text"), ("op", "text"), ("at", "timestamptz"), ("role", "text"),
                   ("txid", "bigint"), ("row", "jsonb"), ("seq", "bigint"), ("prev_hash", "text")]
H_KEY, H_OP, H_ROW, H_SEQ, H_ERASURE = 0, 1, 5, 6, 8  # positions in a history record array
MEMBERS = ("email", "born")  # the tracked table's erasable columns
K1, K2, K3 = '{"id": 1}', '{"id": 2}', '{"id": 3}'


def row_text(row: dict | None) -> str | None:
    """A row as to_jsonb(row) writes it, in jsonb's text form."""
    return None if row is None else ve.jsonb_text(ve.parse_json(json.dumps(row)))


def history_rows(versions: list[tuple[str, str, dict | None, bool]]) -> list[list]:
    """History record arrays chained per key: (key, op, row, whether appended while MEMBERS were
    erasable: then with a members entry for row, a salt per member)."""
    rows, last = [], {}
    for number, (key, op, row, erasable) in enumerate(versions):
        seq, prev_hash = last.get(key, (0, None))
        erasure = salted_members({m: salt_of(number, m) for m in MEMBERS}) if erasable else None
        values = [key, op, f"2026-01-01 00:00:0{number}+00", "ann", str(700 + number), row_text(row),
                  str(seq + 1), prev_hash]
        hashed = hashed_row(values, erasure, HISTORY_COLUMNS)
        last[key] = (seq + 1, hashed[-1])
        rows.append(hashed)
    return rows


def redacted_version(row: list) -> list:
    """A version after ledger.redact: each salted member of its row JSON null (the key stays), its
    entry the member commitment; a version without a row object (a delete) stays as it is."""
    row = list(row)
    if row[H_ERASURE] is None or row[H_ROW] is None:
        return row
    value = ve.parse_json(row[H_ROW])
    entries = json.loads(row[H_ERASURE])
    members = entries["row"]["members"]
    for member, entry in members.items():
        if "salt" in entry and member in value:
            commitment = ve.member_commitment(bytes.fromhex(entry["salt"]), ve.encode_json(value[member]))
            members[member] = {"erased": commitment.hex()}
            value[member] = None
    row[H_ROW] = ve.jsonb_text(value)
    row[H_ERASURE] = json.dumps(entries)
    return row


def history_export(rows: list[list]) -> list[str]:
    header = {"format": "ledger-export", "version": 1, "table": "public.accounts_history", "chain_by": "key",
              "columns": [{"name": n, "type": t} for n, t in HISTORY_COLUMNS], "erasure": True}
    return [json.dumps(header), *(json.dumps(row, ensure_ascii=False) for row in rows)]


# Row 1 is tracked before and after set_erasable; row 2, inserted, updated and deleted while its
# email and born are erasable, is the one redacted; row 3 is inserted with a null email.
HISTORY = history_rows([
    (K1, "insert", {"id": 1, "plan": "free", "email": "ann@example.org", "born": "1990-05-01"}, False),
    (K1, "update", {"id": 1, "plan": "pro", "email": "ann@example.org", "born": "1990-05-01"}, True),
    (K2, "insert", {"id": 2, "plan": "free", "email": "bob@example.org", "born": "1985-12-31"}, True),
    (K2, "update", {"id": 2, "plan": "pro", "email": "bob@new.example", "born": "1985-12-31"}, True),
    (K2, "delete", None, True),
    (K3, "insert", {"id": 3, "plan": "free", "email": None, "born": "2001-02-03"}, True),
])
V1_2, V2_1, V2_2, V2_3, V3_1 = 1, 2, 3, 4, 5  # indexes in HISTORY (key, seq)


def redacted_history(*indexes: int) -> list[list]:
    return [redacted_version(row) if index in indexes else row for index, row in enumerate(HISTORY)]


ROW_2_ERASED = (V2_1, V2_2, V2_3)  # ledger.redact(tracked, '{"id": 2}', NULL, reason): every version


def test_intact_history_export_with_erasable_members():
    for rows in (HISTORY, redacted_history(*ROW_2_ERASED)):
        report = ve.check_export(history_export(rows))
        assert report.problems == []
        assert (report.record_count, report.chain_count) == (6, 3)


def test_member_erasure_leaves_every_hash_and_nothing_of_the_values():
    rows = redacted_history(*ROW_2_ERASED)
    before, after = ve.check_export(history_export(HISTORY)), ve.check_export(history_export(rows))
    assert [r.computed_hash for r in after.records] == [r.computed_hash for r in before.records]
    assert rows[V2_1][H_ROW] == '{"id": 2, "born": null, "plan": "free", "email": null}'
    line = json.dumps(rows[V2_1:V2_3 + 1])
    for gone in ("bob@example.org", "bob@new.example", "1985-12-31", salt_of(V2_1, "email").hex()):
        assert gone not in line
    # The delete version had no row to erase from: it keeps its salts, which cover nothing.
    assert rows[V2_3] == HISTORY[V2_3]


def member_put_back(row: list) -> list:
    row = list(row)
    row[H_ROW] = row[H_ROW].replace('"email": null', '"email": "bob@example.org"')
    return row


def member_flipped(row: list) -> list:
    """A salted member passed off as erased: its value null, a made-up commitment in its entry."""
    row = with_entries(row, lambda e: e["row"]["members"].update(email={"erased": "ab" * 32}), H_ERASURE)
    row[H_ROW] = row[H_ROW].replace('"email": "bob@example.org"', '"email": null')
    return row


def member_edited(row: list) -> list:
    row = list(row)
    row[H_ROW] = row[H_ROW].replace("bob@example.org", "eve@example.org")
    return row


def member_renamed(row: list) -> list:
    """The erased member under another key: the entry names no member, the null is plain JSON."""
    row = list(row)
    row[H_ROW] = row[H_ROW].replace('"email": null', '"mail": null')
    row[H_ROW] = row_text(json.loads(row[H_ROW]))
    return row


def members(change: Callable[[dict], object]) -> Callable[[list], list]:
    """A tamper that changes the members object of a version's members entry."""
    return lambda r: with_entries(r, lambda e: change(e["row"]["members"]), H_ERASURE)


@pytest.mark.parametrize("index, tamper", [
    pytest.param(V2_1, lambda r: member_put_back(redacted_version(r)), id="erased member value put back"),
    pytest.param(V2_1, members(lambda m: m.update(email={"salt": "00" * 32})), id="salt changed"),
    pytest.param(V2_1, lambda r: with_entries(r, lambda e: e.pop("row"), H_ERASURE),
                 id="members entry removed"),
    pytest.param(V2_1, lambda r: with_entries(redacted_version(r), lambda e: e.pop("row"), H_ERASURE),
                 id="erased members entry removed"),
    pytest.param(V2_1, members(lambda m: m.pop("email")), id="member entry removed"),
    pytest.param(V2_1, lambda r: members(lambda m: m.pop("born"))(redacted_version(r)),
                 id="erased member entry removed"),
    pytest.param(V2_1, member_flipped, id="member flipped to erased with a made-up commitment"),
    pytest.param(V2_1, lambda r: members(lambda m: m.update(email={"erased": "00" * 32}))(redacted_version(r)),
                 id="member commitment changed"),
    pytest.param(V2_1, member_edited, id="salted member value edited"),
    pytest.param(V2_1, lambda r: member_renamed(redacted_version(r)), id="erased member renamed"),
    pytest.param(V2_1, lambda r: [*r[:H_ROW], r[H_ROW].replace('"email"', '"mail"'), *r[H_ROW + 1:]],
                 id="salted member renamed"),
    pytest.param(V3_1, lambda r: [*r[:H_ROW], r[H_ROW].replace('"email": null', '"email": "eve@x"'),
                                  *r[H_ROW + 1:]],
                 id="null salted member filled"),
    pytest.param(V1_2, lambda r: [*r[:H_ERASURE], None, r[-1]], id="ledger_erasure set to NULL"),
    # Well-formed JSON that is no members entry, or no member entry: plain values again.
    pytest.param(V2_1, lambda r: with_entries(r, lambda e: e.update(row={"members": [e["row"]["members"]]}),
                                              H_ERASURE),
                 id="members not an object"),
    pytest.param(V2_1, lambda r: with_entries(r, lambda e: e["row"].update(salt="ab" * 32), H_ERASURE),
                 id="members entry with another member"),
    pytest.param(V2_1, members(lambda m: m["email"].update(salt=m["email"]["salt"].upper())),
                 id="upper-case member salt"),
    pytest.param(V2_1, lambda r: with_entries(r, lambda e: e.update(
        row={"salt": e["row"]["members"]["email"]["salt"]}), H_ERASURE), id="members entry made a value entry"),
])
def test_member_tampering_is_the_hash_mismatch_of_that_record(index: int, tamper: Callable[[list], list]):
    rows = redacted_history(*ROW_2_ERASED) if index != V2_1 else list(HISTORY)
    rows[index] = tamper(HISTORY[index])
    found = ve.verify_export(history_export(rows))
    assert summary(found) == [(HISTORY[index][H_KEY], int(HISTORY[index][H_SEQ]), "hash_mismatch")]
    assert found[0].detail.startswith(f"stored {HISTORY[index][-1]}, computed ")


def test_a_members_entry_on_a_row_that_is_no_object_is_an_ordinary_column():
    salts = salted_members({"email": VECTOR_SALT})
    for text in (None, "null", '"bob@example.org"', '[{"email": "bob@example.org"}]', "2", "{}"):
        values = [K2, "insert", "2026-01-01 00:00:00+00", "ann", "700", text, "1", None]
        encoded = ve.canonical_record_bytes(HISTORY_COLUMNS, values, ve.erasure_entries(salts))
        assert encoded == ve.canonical_record_bytes(HISTORY_COLUMNS, values), text
        assert problems_of_history([hashed_row(values, salts, HISTORY_COLUMNS)]) == []
    # Hashed with the member committed to, then made a string: the record no longer matches.
    row = list(HISTORY[V2_1])
    row[H_ROW] = json.dumps(row[H_ROW])
    assert problems_of_history([row]) == [(K2, 1, "hash_mismatch")]


def problems_of_history(rows: list[list]) -> list[tuple]:
    return summary(ve.verify_export(history_export(rows)))


def test_a_members_entry_on_a_column_that_is_not_jsonb_changes_nothing():
    row = HISTORY[0]  # appended before set_erasable: hashed without entries
    for column in ("op", "role", "txid", "key"):
        entry = salted_members({"email": VECTOR_SALT}, column=column)
        assert set(ve.erasure_entries(entry)) == {column}
        values = row[:len(HISTORY_COLUMNS)]
        assert ve.record_hash(HISTORY_COLUMNS, values, ve.erasure_entries(entry)) == row[-1], column
    # Not even when the column's text is a JSON object.
    values = ['{"email": "a"}', "1"]
    columns = [("t", "text"), ("seq", "bigint")]
    entries = ve.erasure_entries(salted_members({"email": VECTOR_SALT}, "t"))
    assert ve.canonical_record_bytes(columns, values, entries) == ve.canonical_record_bytes(columns, values)


def test_an_added_null_column_with_a_members_entry_is_encoded():
    """A members entry is an entry: an added column that is NULL with one is encoded (NULL), as with a
    value entry, even where it commits to nothing (FORMAT.md "Erasable members")."""
    columns = [*MEMBER_VECTOR_COLUMNS, ve.Column("extra", "jsonb", added=True),
               ve.Column("note", "text", added=True)]
    values = [*MEMBER_VECTOR_VALUES, None, None]
    base = ve.canonical_record_bytes(columns, values)
    assert base == ve.canonical_record_bytes(MEMBER_VECTOR_COLUMNS, MEMBER_VECTOR_VALUES)
    for name, tag in (("extra", "0b"), ("note", "08")):
        entries = ve.erasure_entries(json.dumps({name: {"members": {}}}))
        encoded = ve.canonical_record_bytes(columns, values, entries)
        assert encoded[1:5] == (6).to_bytes(4, "big")
        assert encoded.endswith(ve.length_prefixed(name.encode()) + bytes.fromhex(tag + "00"))


def test_members_of_a_history_with_numbers_are_committed_as_canonical_json():
    """A member's V is its canonical JSON (1.50 as 1.5), while the row's text keeps 1.50."""
    text = ve.jsonb_text(ve.parse_json('{"id": 4, "email": "x@example.org", "balance": 1.50}'))
    assert '"balance": 1.50' in text
    salts = salted_members({"balance": VECTOR_SALT, "email": VECTOR_SALT})
    committed = ve.committed_json(text, ve.erasure_entries(salts)["row"].members)
    assert ve.member_commitment(VECTOR_SALT, bytes.fromhex("03 00000003") + b"1.5") in committed
    values = ['{"id": 4}', "insert", "2026-01-01 00:00:00+00", "ann", "9", text, "1", None]
    hashed = hashed_row(values, salts, HISTORY_COLUMNS)
    assert problems_of_history([hashed]) == []
    assert problems_of_history([redacted_version(hashed)]) == []
    assert redacted_version(hashed)[H_ROW] == '{"id": 4, "email": null, "balance": null}'


# ---- the state check on such an export ------------------------------------------------------------


def accounts_state(*rows: dict) -> list[str]:
    header = {"format": "ledger-state", "version": 1, "table": "public.accounts",
              "history": "public.accounts_history", "key_columns": ["id"],
              "definition": None, "definition_now": None}
    return [json.dumps(header), *(json.dumps({"key": ve.version_key(ve.parse_json(row_text(row)), ["id"]),
                                              "row": row_text(row)}) for row in rows)]


ROW_1 = {"id": 1, "plan": "pro", "email": "ann@example.org", "born": "1990-05-01"}
ROW_3 = {"id": 3, "plan": "free", "email": None, "born": "2001-02-03"}


def state_of(rows: list[list], state: list[str]) -> list[tuple]:
    report = ve.check_state(ve.check_export(history_export(rows)), state)
    return [(p.chain, p.seq, p.problem, p.detail) for p in report.problems]


def test_the_state_check_runs_on_a_history_with_erased_members():
    erased_rows = redacted_history(*ROW_2_ERASED)
    for rows in (HISTORY, erased_rows):
        assert state_of(rows, accounts_state(ROW_1, ROW_3)) == []
    # The redacted row is a deleted one: it is never compared, and a row put back with its key is
    # unrecorded as before.
    put_back = {"id": 2, "plan": "pro", "email": None, "born": None}
    assert state_of(erased_rows, accounts_state(ROW_1, put_back, ROW_3)) == [
        (K2, 3, "state_unrecorded", "the history says the row was deleted (seq 3)")]
    # Live rows whose versions have salted members are compared as ever.
    assert state_of(erased_rows, accounts_state({**ROW_1, "email": "eve@example.org"}, ROW_3)) == [
        (K1, 2, "state_mismatch", "the row differs from the history's last version (seq 2)")]
    assert state_of(erased_rows, accounts_state(ROW_1)) == [
        (K3, 1, "state_missing", "the history's last version (seq 1) is not in the table")]
    # A history problem in an erased version comes before the state check's rows.
    tampered = list(erased_rows)
    tampered[V2_1] = member_put_back(tampered[V2_1])
    assert [p[:3] for p in state_of(tampered, accounts_state(ROW_1, ROW_3))] == [(K2, 1, "hash_mismatch")]


def test_cli_state_check_of_a_history_with_erased_members(tmp_path):
    export = write_export(tmp_path, history_export(redacted_history(*ROW_2_ERASED)))
    state = tmp_path / "state.jsonl"
    state.write_text("\n".join(accounts_state(ROW_1, ROW_3)) + "\n", encoding="utf-8")
    result = run_script(str(export), "--state", str(state))
    assert (result.returncode, result.stdout) == (0, ""), result
