"""The definitions an export carries (docs/FORMAT.md, "Definitions" and "Export"): the offline
verifier reports a changed definition as ledger.verify does, a definition that disagrees with its own
header, and checks a digest's definition line against the registered definition."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "verify_export.py"
sys.path.insert(0, str(SCRIPT.parent))

import verify_export as ve  # noqa: E402

COLUMNS = [("id", "integer"), ("Acc t", "text"), ("seq", "bigint"), ("prev_hash", "text")]
TABLE = '"Odd ""sch"".x"."My T.ab le"'
REGISTERED = (
    "ledger-definition/v1\n"
    f"table {TABLE}\n"
    "persistence p\n"
    "row_security false false\n"
    'chain_by "Acc t"\n'
    "hashed id Acc t seq prev_hash\n"
    "column id integer not null\n"
    'column "Acc t" text not null\n'
    "column seq bigint not null\n"
    "column prev_hash character(64)\n"
    "column hash character(64) not null\n"
    f"trigger CREATE TRIGGER zz_ledger_append BEFORE INSERT ON {TABLE} FOR EACH ROW "
    "EXECUTE FUNCTION ledger.append_row() enabled A\n"
)


def header(definition=REGISTERED, definition_now=REGISTERED, table=TABLE, chain_by="Acc t",
           columns=COLUMNS, with_definitions=True) -> str:
    value = {"format": "ledger-export", "version": 1, "table": table, "chain_by": chain_by,
             "columns": [{"name": n, "type": t} for n, t in columns]}
    if with_definitions:
        value |= {"definition": definition, "definition_now": definition_now}
    return json.dumps(value)


def records(count=2) -> list[str]:
    lines, previous = [], None
    for seq in range(1, count + 1):
        values = [str(seq), "a", str(seq), previous]
        previous = ve.record_hash(COLUMNS, values)
        lines.append(json.dumps([*values, previous]))
    return lines


def problems(*lines: str) -> list[tuple]:
    return [(p.chain, p.seq, p.problem, p.detail) for p in ve.verify_export(lines)]


# --------------------------------------------------------------------------------------------------
# The line-wise comparison (the port of what ledger.verify reports)
# --------------------------------------------------------------------------------------------------

def test_definition_lines_split_only_at_newlines():
    assert ve.definition_lines("") == []
    assert ve.definition_lines("\n") == [""]
    assert ve.definition_lines("a\nb\n") == ve.definition_lines("a\nb") == ["a", "b"]
    # "\r\n" ends a line, a lone "\r" does not; nor do the other characters str.splitlines splits at.
    assert ve.definition_lines("a\r\nb\r") == ["a", "b\r"]
    assert ve.definition_lines("a\rb\x0bc\x1cd\u2028e\n") == ["a\rb\x0bc\x1cd\u2028e"]
    assert ve.definition_lines("a\n\r\nb") == ["a", "", "b"]


def test_definition_differences():
    registered = "ledger-definition/v1\ntable public.t\ntrigger zz_ledger_append A\n"
    assert ve.definition_differences(registered, registered) is None
    changed = "ledger-definition/v1\ntable public.t\ntrigger zz_ledger_append O\nrule r\n"
    assert (ve.definition_differences(registered, changed)
            == "- trigger zz_ledger_append A; + trigger zz_ledger_append O; + rule r")
    reordered = "table public.t\nledger-definition/v1\ntrigger zz_ledger_append A\n"
    assert ve.definition_differences(registered, reordered) == "the same lines in another order"
    # Texts that differ only in a last line ending have the same lines.
    assert ve.definition_differences(registered, registered[:-1]) == "the same lines in another order"
    # A repeated line is listed each time.
    assert ve.definition_differences("a\nb\nb\n", "a\n") == "- b; - b"


def test_fingerprint_is_sha3_of_the_octets():
    assert ve.definition_fingerprint(REGISTERED) == hashlib.sha3_256(REGISTERED.encode()).hexdigest()


# --------------------------------------------------------------------------------------------------
# definition_changed and definition_inconsistent
# --------------------------------------------------------------------------------------------------

def test_intact_export_with_definitions():
    assert problems(header(), *records()) == []


def test_export_without_definitions_is_read():
    for lines in ([header(with_definitions=False), *records()],
                  [header(definition=None), *records()]):
        assert problems(*lines) == []
    assert not ve.parse_header(header(with_definitions=False)).has_definitions
    assert ve.parse_header(header(definition=None)).has_definitions


def test_definition_changed_comes_first_with_ledger_verify_detail():
    now = REGISTERED.replace("enabled A", "enabled O") + "rule CREATE RULE r AS ON INSERT TO x DO NOTHING\n"
    lines = [header(definition_now=now), *records()]
    lines[2] = lines[2].replace('"2"', '"7"', 1)  # a record's id edited too
    found = problems(*lines)
    trigger = REGISTERED.splitlines()[-1]
    assert found[0] == (None, None, "definition_changed",
                        f"since it was enabled: - {trigger}; + {trigger[:-1]}O; "
                        "+ rule CREATE RULE r AS ON INSERT TO x DO NOTHING")
    assert [p[1:3] for p in found[1:]] == [(2, "hash_mismatch")]


def test_a_renamed_table_is_a_changed_definition_only():
    renamed = REGISTERED.replace(f"table {TABLE}", "table public.renamed").replace(TABLE, "public.renamed")
    found = problems(header(definition_now=renamed, table="public.renamed"), *records())
    assert [p[2] for p in found] == ["definition_changed"]
    assert "- table " + TABLE in found[0][3] and "+ table public.renamed" in found[0][3]


@pytest.mark.parametrize("changes, expected", [
    ({"columns": [("id", "integer"), ("Acc t", "text"), ("seq", "bigint"), ("prev_hash", "text"),
                  ("extra", "text")]}, ["hashed line"] * 2),
    ({"chain_by": "id"}, ["chain_by line"] * 2),
    ({"chain_by": None}, ["chain_by line"] * 2),
    ({"table": "public.other"}, ["table line"]),
    ({"definition": "not a definition\n"}, ["definition_changed", "does not begin with"]),
    ({"definition_now": REGISTERED.replace('chain_by "Acc t"', "chain_by Acc t")},
     ["definition_changed", "chain_by line"]),
])
def test_a_definition_disagreeing_with_its_header(changes, expected):
    columns = changes.pop("columns", COLUMNS)
    lines = [header(columns=columns, **changes)]
    if columns == COLUMNS and "chain_by" not in changes:
        lines += records()  # the records are intact: only the header's definitions are at fault
    found = problems(*lines)
    assert len(found) == len(expected), found
    for (chain, seq, problem, detail), wanted in zip(found, expected):
        assert (chain, seq) == (None, None)
        if wanted == "definition_changed":
            assert problem == wanted
        else:
            assert problem == "definition_inconsistent" and wanted in detail, detail


def test_chain_by_may_be_quoted_or_not():
    for line, chain_by in (("chain_by account", "account"), ('chain_by "account"', "account"),
                           ('chain_by "a""b"', 'a"b'), ("chain_by -", None)):
        text = REGISTERED.replace('chain_by "Acc t"', line)
        hdr = ve.parse_header(header(definition=text, definition_now=text, chain_by=None))
        hdr = ve.Header(hdr.table, chain_by, hdr.columns, text, text, True)
        assert ve.definition_problems(hdr) == [], line
    assert ve._unquote_identifier("Account") is None and ve._unquote_identifier('"a"b"') is None


def test_bad_definition_members_are_malformed():
    for value in (1, ["x"], {"a": 1}):
        with pytest.raises(ve.ExportError, match="definition"):
            ve.parse_header(header(definition=value))


# --------------------------------------------------------------------------------------------------
# A digest's definition line
# --------------------------------------------------------------------------------------------------

def digest_text(definition: str, size=2) -> str:
    leaves = [bytes.fromhex(json.loads(line)[-1]) for line in records(size)]
    body = "".join(line + "\n" for line in [
        "ledger-checkpoint/v1", f"ledger {json.dumps(TABLE)}", 'chain "a"', f"size {size}",
        f"root {ve.merkle_tree_hash(leaves).hex()}", "previous none", "time 2024-05-01T12:34:56.123456Z",
        "checkpoint 3f0c9a52-8d7e-4b1a-9c2d-5e6f7a8b9c0d", "key none", f"definition {definition}"])
    return body + "\n"


def definition_check(hdr: str, definition: str) -> ve.DigestCheck:
    return ve.check_definition(ve.parse_digest(digest_text(definition).encode()), ve.parse_header(hdr))


def test_digest_definition_check():
    registered = ve.definition_fingerprint(REGISTERED)
    assert definition_check(header(), registered).ok is True
    wrong = definition_check(header(), "ab" * 32)
    assert wrong.check == "definition" and wrong.ok is False and registered in wrong.detail
    now = REGISTERED + "rule r\n"
    of_today = definition_check(header(definition_now=now), ve.definition_fingerprint(now))
    assert of_today.ok is False and "today's definition" in of_today.detail
    assert definition_check(header(), "none").ok is None
    skipped = definition_check(header(with_definitions=False), registered)
    assert skipped.ok is None and "carries no definition" in skipped.detail
    assert definition_check(header(definition=None), registered).ok is None


def run_digest_cli(tmp_path, hdr: str, definition: str) -> tuple[int, dict]:
    export, digest = tmp_path / "export.jsonl", tmp_path / "checkpoint.digest"
    export.write_text("".join(line + "\n" for line in [hdr, *records()]), encoding="utf-8")
    digest.write_text(digest_text(definition), encoding="utf-8")
    result = subprocess.run([sys.executable, str(SCRIPT), str(export), "--digest", str(digest),
                             "--allow-unsigned", "--json"], capture_output=True, text=True, timeout=60)
    assert result.returncode in (0, 1), result.stderr
    out = json.loads(result.stdout)
    return result.returncode, {c["check"]: c["ok"] for c in out["digest"]}


def test_digest_definition_on_the_command_line(tmp_path):
    registered = ve.definition_fingerprint(REGISTERED)
    assert run_digest_cli(tmp_path, header(), registered) == (
        0, {"signature": None, "key": None, "extends": True, "definition": True})
    status, checks = run_digest_cli(tmp_path, header(), "cd" * 32)
    assert status == 1 and checks["definition"] is False
    assert run_digest_cli(tmp_path, header(with_definitions=False), registered)[1]["definition"] is None


def test_partitions_added_are_the_step_columns_added_are():
    conforming = " persistence p " + ve.PARTITION_TRIGGERS
    base = ("ledger-definition/v1\ntable public.moves\npersistence p\npartitioned_by RANGE (at)\n"
            "partition public.m1 FOR VALUES FROM ('2026-01-01 00:00:00+00') TO ('2026-02-01 00:00:00+00')"
            f"{conforming}\n")
    line = f"partition public.m2 FOR VALUES FROM ('2026-02-01 00:00:00+00') TO ('2026-03-01 00:00:00+00'){conforming}\n"
    added = base + line
    assert ve.only_partitions_added(base, added)
    assert not ve.only_partitions_added(added, base)
    assert not ve.only_partitions_added(base, base)
    assert not ve.only_partitions_added(base, base + line.replace("zz_ledger_append:A", "zz_ledger_append:D"))
    assert not ve.only_partitions_added(base, base + line.replace("persistence p", "persistence u"))
    assert not ve.only_partitions_added(base, added + "column memo text\n")
