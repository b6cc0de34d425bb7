"""Tests of verify_export.py --state (docs/FORMAT.md, "History-tracked tables"): the replay of a
history ledger's export compared with a tracked table's state export, offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "verify_export.py"
sys.path.insert(0, str(SCRIPT.parent))

import verify_export as ve  # noqa: E402

VECTORS = json.loads((ROOT / "docs" / "vectors" / "history.json").read_text(encoding="utf-8"))
COLUMNS = [(c["name"], c["type"]) for c in VECTORS["columns"]]
NAMES = [name for name, _ in COLUMNS]


def history_header(table: str = "public.accounts_history", chain_by: str | None = "key") -> str:
    return json.dumps({"format": "ledger-export", "version": 1, "table": table, "chain_by": chain_by,
                       "columns": [{"name": n, "type": t} for n, t in COLUMNS]})


def vector_export() -> list[str]:
    return [history_header()] + [json.dumps([*r["export"], r["hash"]], ensure_ascii=False)
                                 for r in VECTORS["records"]]


def state_header(**members) -> str:
    header = {"format": "ledger-state", "version": 1, "table": "public.accounts",
              "history": "public.accounts_history", "key_columns": ["region", "id"],
              "definition": None, "definition_now": None, **members}
    return json.dumps(header)


def state_line(row_text: str, key: str | None = None) -> str:
    if key is None:
        key = ve.version_key(ve.parse_json(row_text), ["region", "id"])
    return json.dumps({"key": key, "row": row_text}, ensure_ascii=False)


def chain(versions: list[tuple[str, str, str | None]]) -> list[str]:
    """Export lines of a history holding `versions` (key, op, row text), chained and hashed."""
    lines, last = [], {}
    for number, (key, op, row) in enumerate(versions):
        seq, prev_hash = last.get(key, (0, None))
        values = [key, op, "2026-01-01 00:00:00+00", "ann", str(100 + number), row, str(seq + 1), prev_hash]
        stored = ve.record_hash(COLUMNS, values)
        last[key] = (seq + 1, stored)
        lines.append(json.dumps([*values, stored], ensure_ascii=False))
    return [history_header()] + lines


def problems(export: list[str], state: list[str]) -> list[tuple]:
    report = ve.check_state(ve.check_export(export), state)
    return [(p.chain, p.seq, p.problem, p.detail) for p in report.problems]


K1, K3 = '{"id": 1, "region": "eu"}', '{"id": 3, "region": "eu"}'


# ---- the vectors ----------------------------------------------------------------------------------


def test_vectors_replay_to_their_state():
    assert problems(vector_export(), VECTORS["state"]) == []


def test_vector_keys_are_jsonb_text():
    for record in VECTORS["records"]:
        values = dict(zip(NAMES, record["export"]))
        if values["row"] is not None:
            row = ve.parse_json(values["row"])
            assert ve.version_key(row, ["region", "id"]) == values["key"]
            assert ve.jsonb_text(row) == values["row"]


def test_replay_takes_the_last_version_per_key():
    header, records = ve.read_export(vector_export())
    last = ve.replay(header, records)
    assert {key: (v.seq, v.op) for key, v in last.items()} == {
        K1: (3, "delete"), '{"id": 2, "region": "us"}': (2, "delete"), K3: (1, "insert")}


# ---- the three problems ---------------------------------------------------------------------------


def test_row_edited_is_a_mismatch_even_when_jsonb_calls_it_equal():
    row = json.loads(VECTORS["state"][1])["row"].replace("7.25", "7.250")
    assert problems(vector_export(), [state_header(), state_line(row)]) == [
        (K3, 1, "state_mismatch", "the row differs from the history's last version (seq 1)")]


def test_row_deleted_is_missing():
    assert problems(vector_export(), [state_header()]) == [
        (K3, 1, "state_missing", "the history's last version (seq 1) is not in the table")]


def test_rows_without_a_live_version_are_unrecorded_in_key_order():
    state = [state_header(), state_line('{"id": 9, "region": "eu"}'),
             state_line('{"id": 1, "region": "eu", "balance": 7.25}'), VECTORS["state"][1]]
    assert problems(vector_export(), state) == [
        (K1, 3, "state_unrecorded", "the history says the row was deleted (seq 3)"),
        ('{"id": 9, "region": "eu"}', None, "state_unrecorded", "the row has no version in the history")]


def test_key_order_is_octets():
    rows = ['{"id": 1, "region": "é"}', '{"id": 1, "region": "Z"}', '{"id": 1, "region": "a"}',
            '{"id": 10, "region": "a"}', '{"id": 2, "region": "a"}']
    found = problems(chain([]), [state_header(), *(state_line(r) for r in rows)])
    assert [key for key, *_ in found] == sorted((ve.version_key(ve.parse_json(r), ["region", "id"])
                                                 for r in rows), key=lambda k: k.encode())
    assert [key for key, *_ in found][:2] == ['{"id": 1, "region": "Z"}', '{"id": 1, "region": "a"}']


def test_chain_problems_come_first_then_the_state():
    export = chain([(K1, "insert", '{"id": 1, "region": "eu", "balance": 1}')])
    forged = json.loads(export[1])
    forged[NAMES.index("row")] = '{"id": 1, "region": "eu", "balance": 2}'
    export[1] = json.dumps(forged)
    found = problems(export, [state_header(), state_line('{"id": 1, "region": "eu", "balance": 3}')])
    assert [(p[0], p[1], p[2]) for p in found] == [(K1, 1, "hash_mismatch"), (K1, 1, "state_mismatch")]


def test_table_definition_change_comes_first():
    header = state_header(definition="ledger-definition/v1\ncolumn a int\n",
                          definition_now="ledger-definition/v1\ncolumn a int\ncolumn b int\n")
    assert problems(vector_export(), [header, VECTORS["state"][1]]) == [
        (None, None, "definition_changed", "since tracking began: + column b int")]


def test_a_null_seq_counts_as_the_last_version():
    """As ledger.verify's ORDER BY seq DESC takes it (a history whose chain check fails)."""
    export = chain([(K1, "insert", '{"id": 1, "region": "eu", "balance": 1}'),
                    (K1, "update", '{"id": 1, "region": "eu", "balance": 2}')])
    record = json.loads(export[1])
    record[NAMES.index("seq")] = None
    export[1] = json.dumps(record)
    found = problems(export, [state_header(), state_line('{"id": 1, "region": "eu", "balance": 2}')])
    assert found[-1] == (K1, None, "state_mismatch", "the row differs from the history's last version (seq )")


# ---- jsonb text -----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    '{"a": 1, "b": 2, "aa": 3}',
    '{"a": 2, "z": 2, "bb": 1, "zz": 3, "é": 1}',
    '[1, "x", null, true, false, {}, []]',
    '{"s": "quote \\" backslash \\\\ \\b\\f\\n\\r\\t \\u0001 \\u001f ✓ 𝄞"}',
    '{"n": [0, -1.50, 100000000000000000000, 0.00001, 100]}',
])
def test_jsonb_text_round_trips_jsonb_output(text):
    """Each text as PostgreSQL 15's jsonb printed it."""
    assert ve.jsonb_text(ve.parse_json(text)) == text


def test_jsonb_text_sorts_keys_shorter_first_then_by_octets():
    assert ve.jsonb_text(ve.parse_json('{"bb": 1, "a": 2, "é": 3, "z": 4}')) == '{"a": 2, "z": 4, "bb": 1, "é": 3}'


def test_jsonb_text_nests_deeply_without_recursion():
    deep = "[" * 5000 + "]" * 5000
    assert ve.jsonb_text(ve.parse_json(deep)) == deep


# ---- malformed input ------------------------------------------------------------------------------


@pytest.mark.parametrize("state, message", [
    ([], "no header"),
    ([json.dumps({"format": "ledger-export", "version": 1})], "not a state export header"),
    ([state_header(version=2)], "unsupported state export version"),
    ([state_header(key_columns=[])], "key_columns"),
    ([state_header(), json.dumps({"key": K3})], "a state row must be"),
    ([state_header(), state_line('{"id": 3, "region": "eu", "balance": 7.25}', key=K1)], "not the key of its row"),
    ([state_header(), state_line('{"region": "eu", "id": 3}', key=K3)], "jsonb's text form"),
    ([state_header(), state_line('[1]', key="[1]")], "jsonb's text form"),
    ([state_header(), VECTORS["state"][1], VECTORS["state"][1]], "appears again"),
    ([state_header(history="public.other")], "but the export is of public.accounts_history"),
])
def test_malformed_state_is_refused(state, message):
    with pytest.raises(ve.ExportError, match=message):
        ve.check_state(ve.check_export(vector_export()), state)


def test_an_export_not_of_a_history_is_refused():
    export = [history_header(chain_by="op")] + vector_export()[1:]
    with pytest.raises(ve.ExportError, match="not of a history ledger"):
        ve.check_state(ve.check_export(export), VECTORS["state"])


# ---- command line ---------------------------------------------------------------------------------


def run(tmp_path: Path, export: list[str], state: list[str], *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "history.jsonl").write_text("".join(line + "\n" for line in export), encoding="utf-8")
    (tmp_path / "state.jsonl").write_text("".join(line + "\n" for line in state), encoding="utf-8")
    return subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "history.jsonl"),
                           "--state", str(tmp_path / "state.jsonl"), *args],
                          capture_output=True, text=True, timeout=60)


def test_cli_intact(tmp_path):
    result = run(tmp_path, vector_export(), VECTORS["state"])
    assert (result.returncode, result.stdout) == (0, "")


def test_cli_problems_as_tsv_and_json(tmp_path):
    result = run(tmp_path, vector_export(), [state_header()])
    assert result.returncode == 1
    assert result.stdout == f"{K3}\t1\tstate_missing\tthe history's last version (seq 1) is not in the table\n"
    result = run(tmp_path, vector_export(), [state_header()], "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout) == [{"chain": K3, "seq": 1, "problem": "state_missing",
                                          "detail": "the history's last version (seq 1) is not in the table"}]


def test_cli_malformed_state_exits_2(tmp_path):
    result = run(tmp_path, vector_export(), ["not json"])
    assert result.returncode == 2 and "state line 1" in result.stderr


def test_cli_state_goes_with_verification_only(tmp_path):
    result = run(tmp_path, vector_export(), VECTORS["state"], "--merkle-root", K3, "1", "1")
    assert result.returncode == 2 and "--state goes with" in result.stderr
