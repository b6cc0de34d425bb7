"""Tests of scripts/verify_export.py on exports of pruned ledgers (docs/FORMAT.md, "Pruned records"):
the kept hashes of pruned records, the checks of a chain that starts after them, and Merkle trees
whose pruned leaves come from them."""

from __future__ import annotations

import json

import pytest

import test_history_state as history
from test_merkle_and_digests import digest_body, mth, record_hashes
from test_verify_export import SEQ, chain_rows, export_lines, rehash, run_script, summary, write_export

import verify_export as ve  # on the path: test_verify_export put scripts/ there

# Ten records of alice and three of bob, chained as ledger.export writes them before any prune.
ROWS = chain_rows([("alice", f"{n}.00", f'{{"n": {n}}}') for n in range(1, 11)]
                  + [("bob", f"-{n}", "null") for n in range(1, 4)])
ALICE = [row for row in ROWS if row[0] == "alice"]
BOB = [row for row in ROWS if row[0] == "bob"]


def pruned_line(chain: str | None, first: int, last: int, hashes: list[str]) -> str:
    return json.dumps({"pruned": {"chain": chain, "first_seq": first, "last_seq": last,
                                  "hashes": "".join(hashes)}})


def run_line(rows: list[list], first: int, last: int, chain: str | None = "alice") -> str:
    """The pruned line of seqs first..last of one chain's rows (seq n is rows[n - 1])."""
    return pruned_line(chain, first, last, [row[-1] for row in rows[first - 1 : last]])


def pruned_export(runs: list[tuple[int, int]], rows: list[list] = ALICE, chain: str | None = "alice",
                  others: list[list] = BOB, chain_by: str | None = "account") -> list[str]:
    """The export after the runs were pruned from `rows` (one chain): the header, one pruned line
    per run, then the chain's records after the last run and the other chains' records."""
    through = max((last for _, last in runs), default=0)
    header, *records = export_lines([row for row in rows if int(row[SEQ]) > through] + others,
                                    chain_by=chain_by)
    return [header, *(run_line(rows, first, last, chain) for first, last in runs), *records]


def problems(lines: list[str]) -> list[tuple]:
    return summary(ve.verify_export(lines))


def without(lines: list[str], chain: str, seq: int) -> list[str]:
    """The export lines but the record of that chain and seq."""
    return [line for line in lines
            if not (isinstance(row := json.loads(line), list) and row[0] == chain and row[SEQ] == str(seq))]


# --------------------------------------------------------------------------------------------------
# The chain check
# --------------------------------------------------------------------------------------------------


def test_intact_pruned_export():
    lines = pruned_export([(1, 2), (3, 4)])
    report = ve.check_export(lines)
    assert report.problems == []
    assert (report.record_count, report.chain_count, report.pruned_count) == (9, 2, 4)
    # All but the newest record pruned, in one run.
    assert problems(pruned_export([(1, 9)])) == []


def test_the_order_of_the_lines_does_not_matter():
    header, *rest = pruned_export([(1, 2), (3, 4), (5, 6)])
    assert problems([header, *rest[::-1]]) == []


def test_without_its_runs_a_pruned_chain_has_a_gap_at_its_start():
    """Without its pruned lines, a pruned chain's records are checked from seq 1, as before."""
    header, _, *records = pruned_export([(1, 4)])
    assert problems([header, *records]) == [("alice", 5, "seq_gap"), ("alice", 5, "prev_hash_mismatch")]


def test_first_kept_record_deleted():
    lines = without(pruned_export([(1, 2), (3, 4)]), "alice", 5)
    # Seq 6 is not the expected 5, and links to 5's hash, not to the kept hash of 4.
    found = ve.verify_export(lines)
    assert summary(found) == [("alice", 6, "seq_gap"), ("alice", 6, "prev_hash_mismatch")]
    assert found[0].detail == "expected seq 5, found 6"
    assert "the kept hash of pruned seq 4" in found[1].detail


def test_a_wrong_hash_in_the_last_run_breaks_the_first_kept_link():
    forged = [list(row) for row in ALICE]
    forged[3][-1] = "0" * 64
    assert problems(pruned_export([(1, 2), (3, 4)], rows=forged)) == [("alice", 5, "prev_hash_mismatch")]


def test_a_wrong_hash_before_the_last_pruned_one_is_for_the_trees_to_catch():
    """Only the last kept hash links to a record; the others are leaves of checkpoints and digests."""
    forged = [list(row) for row in ALICE]
    forged[1][-1] = "0" * 64
    lines = [line.replace(ALICE[1][-1], "0" * 64) for line in pruned_export([(1, 4)])]
    report = ve.check_export(lines)
    assert report.problems == []
    leaves = ve.chain_leaves(report.records, "alice", 1, 10, report.pruned)
    assert mth(leaves) != mth(record_hashes(ALICE))
    assert mth(leaves) == mth(record_hashes(forged))


def test_a_missing_run_is_a_pruned_gap():
    lines = pruned_export([(1, 2), (3, 4), (5, 6)])
    del lines[2]  # the run of seqs 3 to 4
    found = ve.verify_export(lines)
    assert summary(found) == [("alice", 3, "pruned_gap")]
    assert found[0].detail == "the hashes of pruned seqs 3 to 4 are missing"
    # The first run missing: a gap from seq 1.
    lines = pruned_export([(1, 2), (3, 4)])
    del lines[1]
    assert problems(lines) == [("alice", 1, "pruned_gap")]


@pytest.mark.parametrize("runs, gaps", [
    ([(1, 3), (3, 4)], [3]),
    ([(1, 2), (1, 2), (3, 4)], [1]),
    ([(1, 4), (2, 3)], [2]),  # inside another run: the chain still starts after seq 4
    ([(1, 4), (2, 3), (3, 6)], [2, 3]),
])
def test_overlapping_runs_are_a_pruned_gap(runs, gaps):
    found = ve.verify_export(pruned_export(runs))
    assert summary(found) == [("alice", seq, "pruned_gap") for seq in gaps]
    assert found[0].detail.startswith(f"the kept hashes of pruned seqs {gaps[0]} to ")


def test_a_gap_and_an_overlap_come_in_seq_order():
    lines = pruned_export([(1, 2), (5, 6), (5, 5)])
    assert problems(lines) == [("alice", 3, "pruned_gap"), ("alice", 5, "pruned_gap")]


def test_pruned_gaps_come_before_the_chains_record_problems():
    lines = without(pruned_export([(1, 2), (5, 6)]), "alice", 8)
    assert problems(lines) == [("alice", 3, "pruned_gap"), ("alice", 9, "seq_gap"),
                               ("alice", 9, "prev_hash_mismatch")]


def test_a_stored_record_with_a_pruned_seq():
    lines = pruned_export([(1, 4)])
    put_back = json.dumps(ALICE[1])
    found = ve.verify_export([*lines, put_back])
    assert summary(found) == [("alice", 2, "pruned_seq")]
    assert found[0].detail.startswith("seqs 1 to 4 of the chain were pruned, yet a record with seq 2 "
                                      "is stored")
    # Twice, or with its values changed, it is still just pruned_seq; it moves nothing on.
    edited = list(ALICE[1])
    edited[1] = "99.00"
    assert problems([*lines, put_back, put_back, json.dumps(edited)]) == [("alice", 2, "pruned_seq")] * 3
    # Rows come in record order: a pruned seq before a later record's problem.
    lines = [line.replace('"7.00"', '"7.50"') for line in lines]
    assert problems([*lines, put_back]) == [("alice", 2, "pruned_seq"), ("alice", 7, "hash_mismatch")]


def test_seqs_below_1_are_not_pruned_seqs():
    zero = list(ALICE[0])
    zero[SEQ] = "0"
    rehash(zero)
    assert problems([*pruned_export([(1, 4)]), json.dumps(zero)]) == [
        ("alice", 0, "seq_gap"), ("alice", 0, "prev_hash_mismatch"),
        ("alice", 5, "seq_gap"), ("alice", 5, "prev_hash_mismatch")]


def test_a_chain_with_runs_and_no_records():
    lines = pruned_export([(1, 2), (3, 4)], rows=ALICE[:4])
    found = ve.verify_export(lines)
    assert summary(found) == [("alice", 5, "seq_gap")]
    assert found[0].detail == "expected seq 5: the chain has no records after its pruned part"
    assert ve.check_export(lines).chain_count == 2
    # The seq_gap is for a chain without records; a record with a pruned seq has its own row.
    assert problems([*lines, json.dumps(ALICE[0])]) == [("alice", 1, "pruned_seq")]


def test_chains_with_only_runs_are_ordered_by_chain_text():
    forged_bob = [list(row) for row in BOB]
    forged_bob[0][1] = "0"
    lines = export_lines(forged_bob) + [run_line(ALICE, 1, 4), run_line(ALICE, 1, 2, chain="carol")]
    assert problems(lines) == [("alice", 5, "seq_gap"), ("bob", 1, "hash_mismatch"), ("carol", 3, "seq_gap")]


def test_runs_name_their_chain_by_its_value_octets():
    """As records do: the same instant written with another offset is the same chain."""
    columns = [("at", "timestamptz"), ("seq", "bigint"), ("prev_hash", "text")]
    rows = chain_rows([("2000-01-01 00:00:00+00",)] * 3, columns=columns)
    header, *records = export_lines(rows[2:], columns=columns, chain_by="at")
    lines = [header, run_line(rows, 1, 2, chain="2000-01-01 01:00:00+01"), *records]
    report = ve.check_export(lines)
    assert (report.problems, report.chain_count) == ([], 1)


def test_a_single_chain_table():
    rows = chain_rows([("x", str(n), "null") for n in range(6)], chain_index=None)
    lines = pruned_export([(1, 3)], rows=rows, chain=None, others=[], chain_by=None)
    assert problems(lines) == []
    del lines[2]  # the first kept record, seq 4
    assert problems(lines) == [(None, 5, "seq_gap"), (None, 5, "prev_hash_mismatch")]


# --------------------------------------------------------------------------------------------------
# Malformed pruned lines
# --------------------------------------------------------------------------------------------------

HASH = ALICE[0][-1]


def malformed_runs():
    good = {"chain": "alice", "first_seq": 1, "last_seq": 1, "hashes": HASH}
    yield "another member", {"pruned": good, "extra": 1}
    yield "not pruned", {"prune": good}
    yield "not an object", {"pruned": [good]}
    yield "a member missing", {"pruned": {k: v for k, v in good.items() if k != "hashes"}}
    yield "a member more", {"pruned": {**good, "count": 1}}
    yield "seq a string", {"pruned": {**good, "first_seq": "1"}}
    yield "seq a fraction", {"pruned": {**good, "last_seq": 1.0}}
    yield "seq a boolean", {"pruned": {**good, "first_seq": True}}
    yield "seq null", {"pruned": {**good, "last_seq": None}}
    yield "first after last", {"pruned": {**good, "first_seq": 2, "hashes": ""}}
    yield "first 0", {"pruned": {**good, "first_seq": 0, "hashes": HASH * 2}}
    yield "first negative", {"pruned": {**good, "first_seq": -1, "hashes": HASH * 3}}
    yield "beyond bigint", {"pruned": {**good, "first_seq": 2**63, "last_seq": 2**63}}
    yield "hashes too short", {"pruned": {**good, "hashes": HASH[:-1]}}
    yield "hashes too long", {"pruned": {**good, "hashes": HASH * 2}}
    yield "hashes upper case", {"pruned": {**good, "hashes": HASH.upper()}}
    yield "hashes not hex", {"pruned": {**good, "hashes": "g" * 64}}
    yield "hashes a list", {"pruned": {**good, "hashes": [HASH]}}
    yield "chain null in a chained table", {"pruned": {**good, "chain": None}}
    yield "chain a number", {"pruned": {**good, "chain": 1}}


@pytest.mark.parametrize("name, line", list(malformed_runs()))
def test_malformed_pruned_lines(tmp_path, name, line):
    lines = [*export_lines(ALICE[1:]), json.dumps(line)]
    with pytest.raises(ve.ExportError, match=f"line {len(lines)}: "):
        ve.check_export(lines)
    result = run_script(str(write_export(tmp_path, lines)))
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr, name


def test_malformed_chain_of_a_pruned_line():
    line = pruned_line("alice", 1, 1, [HASH])
    with pytest.raises(ve.ExportError, match="single-chain table names the chain 'alice'"):
        ve.check_export([*export_lines(ALICE[1:], chain_by=None), line])
    # A chain text that is no value of the chain column's type.
    columns = [("n", "integer"), ("seq", "bigint"), ("prev_hash", "text")]
    header, *records = export_lines(chain_rows([("1",)] * 2, columns=columns), columns=columns,
                                    chain_by="n")
    with pytest.raises(ve.ExportError, match="pruned run's chain: bad integer value 'one'"):
        ve.check_export([header, pruned_line("one", 1, 1, [HASH]), *records])


@pytest.mark.parametrize("line", [{"alice": 1}, "alice", 1])
def test_a_line_that_is_neither_a_record_nor_a_pruned_run(line):
    with pytest.raises(ve.ExportError, match="must be a record .* or a pruned run"):
        ve.check_export([*export_lines(ALICE), json.dumps(line)])


# --------------------------------------------------------------------------------------------------
# Merkle trees and digests
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("first, last", [(1, 10), (1, 4), (1, 5), (2, 3), (3, 7), (5, 10), (4, 4), (1, 0)])
def test_a_tree_over_pruned_seqs_has_its_root_from_before_the_prune(first, last):
    report = ve.check_export(pruned_export([(1, 2), (3, 4)]))
    leaves = ve.chain_leaves(report.records, "alice", first, last, report.pruned)
    assert leaves == record_hashes(ALICE[first - 1 : last])
    # The pruned part's records are gone: without the kept hashes there is no tree.
    if first <= 4 <= last:
        with pytest.raises(ve.MissingRecord):
            ve.chain_leaves(report.records, "alice", first, last)


def test_kept_hashes_win_over_records_claiming_pruned_seqs():
    edited = list(ALICE[1])
    edited[1], edited[-1] = "99.00", "0" * 64
    report = ve.check_export([*pruned_export([(1, 4)]), json.dumps(edited)])
    assert [p.problem for p in report.problems] == ["pruned_seq"]
    assert mth(ve.chain_leaves(report.records, "alice", 1, 10, report.pruned)) == mth(record_hashes(ALICE))


def test_overlapping_kept_hashes_make_no_tree():
    """Two runs keeping one seq give it no single leaf (ledger.merkle_root refuses the tree too)."""
    report = ve.check_export(pruned_export([(1, 3), (3, 4)]))
    assert ve.chain_leaves(report.records, "alice", 1, 2, report.pruned) == record_hashes(ALICE[:2])
    assert ve.chain_leaves(report.records, "alice", 4, 10, report.pruned) == record_hashes(ALICE[3:])
    with pytest.raises(ve.MissingRecord, match="pruned seqs 3 to 4 overlap others"):
        ve.chain_leaves(report.records, "alice", 1, 10, report.pruned)


def test_a_missing_kept_hash_is_a_missing_record():
    lines = pruned_export([(1, 2), (3, 4), (5, 6)])
    del lines[2]
    report = ve.check_export(lines)
    assert ve.chain_leaves(report.records, "alice", 1, 2, report.pruned) == record_hashes(ALICE[:2])
    with pytest.raises(ve.MissingRecord, match="pruned through seq 6, but the hash of pruned record 3 "
                                               "is missing"):
        ve.chain_leaves(report.records, "alice", 1, 10, report.pruned)


def test_cli_merkle_root_of_a_pruned_export(tmp_path):
    export = str(write_export(tmp_path, pruned_export([(1, 2), (3, 4)])))
    for first, last in ((1, 10), (2, 7), (1, 3), (6, 9)):
        result = run_script(export, "--merkle-root", "alice", str(first), str(last))
        root = mth(record_hashes(ALICE[first - 1 : last]))
        assert (result.returncode, result.stdout) == (0, root.hex() + "\n")
    lines = pruned_export([(1, 2), (3, 4)])
    del lines[1]
    result = run_script(str(write_export(tmp_path, lines)), "--merkle-root", "alice", "1", "10")
    assert result.returncode == 1 and "the hash of pruned record 1 is missing" in result.stderr


def unsigned_digest(rows: list[list], size: int, chain: str | None = "alice") -> ve.Digest:
    return ve.parse_digest((digest_body(mth(record_hashes(rows[:size])), size, chain=chain) + "\n").encode())


@pytest.mark.parametrize("size", [10, 6, 5, 4, 2, 1, 0])
def test_digests_made_before_the_prune_still_hold(size):
    """A digest of size <= the last pruned seq holds from the kept hashes alone."""
    report = ve.check_export(pruned_export([(1, 2), (3, 4)]))
    check = ve.check_extends(unsigned_digest(ALICE, size), report)
    assert check.ok is True, check.detail


def test_a_digest_notices_a_changed_kept_hash():
    lines = [line.replace(ALICE[1][-1], "0" * 64) for line in pruned_export([(1, 4)])]
    report = ve.check_export(lines)
    assert report.problems == []
    for size in (2, 10):
        check = ve.check_extends(unsigned_digest(ALICE, size), report)
        assert check.ok is False and "root" in check.detail
    assert ve.check_extends(unsigned_digest(ALICE, 1), report).ok is True


def test_a_digest_over_a_missing_kept_hash_fails():
    lines = pruned_export([(1, 2), (3, 4)])
    del lines[1]
    check = ve.check_extends(unsigned_digest(ALICE, 6), ve.check_export(lines))
    assert check.ok is False and "hash of pruned record 1 is missing" in check.detail


def test_digest_of_a_pruned_single_chain_table():
    rows = chain_rows([("x", str(n), "null") for n in range(6)], chain_index=None)
    report = ve.check_export(pruned_export([(1, 3)], rows=rows, chain=None, others=[], chain_by=None))
    assert ve.check_extends(unsigned_digest(rows, 6, chain=None), report).ok is True
    assert ve.check_extends(unsigned_digest(rows, 2, chain=None), report).ok is True


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def test_cli_intact_pruned_export(tmp_path):
    result = run_script(str(write_export(tmp_path, pruned_export([(1, 2), (3, 4)]))))
    assert (result.returncode, result.stdout) == (0, "")
    assert result.stderr.strip() == ("verified 9 records in 2 chains, with the kept hashes of 4 pruned "
                                     "records: 0 problems")


def test_cli_problems_of_a_pruned_export(tmp_path):
    lines = pruned_export([(1, 2), (5, 6)])
    result = run_script(str(write_export(tmp_path, [*lines, json.dumps(ALICE[2])])))
    assert result.returncode == 1
    assert [line.split("\t")[:3] for line in result.stdout.splitlines()] == [
        ["alice", "3", "pruned_gap"], ["alice", "3", "pruned_seq"]]
    result = run_script("--json", str(write_export(tmp_path, lines)))
    assert [(p["chain"], p["seq"], p["problem"]) for p in json.loads(result.stdout)] == [
        ("alice", 3, "pruned_gap")]


def test_cli_digest_of_a_pruned_export(tmp_path):
    export = write_export(tmp_path, pruned_export([(1, 2), (3, 4)]))
    digest = tmp_path / "checkpoint.digest"
    digest.write_text(digest_body(mth(record_hashes(ALICE[:3])), 3) + "\n", encoding="utf-8")
    result = run_script(str(export), "--digest", str(digest), "--allow-unsigned")
    assert result.returncode == 0, result
    assert "digest\textends\tok\t" in result.stdout


# --------------------------------------------------------------------------------------------------
# History ledgers
# --------------------------------------------------------------------------------------------------


def test_the_state_check_of_a_pruned_history():
    """A key's newest version is never pruned, and the replay needs no other."""
    key, other = history.K1, history.K3
    row = '{"id": 1, "region": "eu", "balance": %d}'
    header, *versions = history.chain([(key, "insert", row % 1), (key, "update", row % 2),
                                       (key, "update", row % 3),
                                       (other, "insert", '{"id": 3, "region": "eu"}')])
    pruned = pruned_line(key, 1, 2, [json.loads(line)[-1] for line in versions[:2]])
    state = [history.state_header(), history.state_line(row % 3),
             history.state_line('{"id": 3, "region": "eu"}')]
    assert ve.check_state(ve.check_export([header, pruned, *versions[2:]]), state).problems == []
    # A key whose kept versions were all deleted reads as a key without a version, as before.
    found = ve.check_state(ve.check_export([header, pruned, versions[3]]), state).problems
    assert summary(found) == [(key, 3, "seq_gap"), (key, None, "state_unrecorded")]
