"""Tests of the Merkle tree, proof and digest parts of scripts/verify_export.py, from docs/FORMAT.md
("Merkle trees", "Proofs", "Digests") and RFC 9162 section 2.1."""

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from test_verify_export import SCRIPT, chain_rows, export_lines, one_chain, run_script, write_export

sys.path.insert(0, str(SCRIPT.parent))

import verify_export as ve  # noqa: E402

VECTORS = json.loads((SCRIPT.parents[1] / "docs" / "vectors" / "merkle.json").read_text())

# --------------------------------------------------------------------------------------------------
# A reference tree: FORMAT.md's test-vector leaves, and PATH / PROOF from RFC 9162's recursive
# definitions (sections 2.1.3.1 and 2.1.4.1)
# --------------------------------------------------------------------------------------------------

# Record hash of leaf i: SHA3-256 of the ASCII decimal of i.
RECORD_HASHES = [hashlib.sha3_256(str(i).encode()).digest() for i in range(1000)]

# The root table of FORMAT.md "Merkle trees".
FORMAT_ROOTS = {
    0: "a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a",
    1: "21502a5b461ec8bba501b6aa9396dc2335853f6dc702d499fad9fd2e1ac403c3",
    2: "0759cdf5dba53608d2dcebbaac7d8970da9a0250543fba2c93298e733fcc9d27",
    3: "4805de1584b619756c514710f02f2951606cda38d257e5a256c881b4a9d0fafe",
    4: "5f4950d82044200d06873e9bb51120c3cc276577797d41deed69262fb29a6c95",
    5: "adcc5fe0733670da50c363b6d1eb200ece8fe47bfacb0fce978a57195ededddf",
    7: "b0e7d282f3f1fb4bfb36b6b67d3c9ea584007d1dcac09a67d773570c59ebe2f1",
    8: "a35378d5a429249fe26c5918d244449de95777ffee2c9e18450a655cf897650f",
    9: "93085f60fd3bc2921145349a44f95fa4cb51e3d05daa8d8b5e30304a1eefd153",
    1000: "e7ce2cf9c02dfafcbf7a07fa2439bda42234cfb51974818825729534f12f0ace",
}


def mth(hashes):
    return ve.merkle_tree_hash(hashes)


def split_point(n):
    """The largest power of two < n, found without the script's bit trick."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def rfc_path(m, hashes):
    """PATH(m, D[n]): the audit path of leaf m (0-based)."""
    if len(hashes) == 1:
        return []
    k = split_point(len(hashes))
    if m < k:
        return rfc_path(m, hashes[:k]) + [mth(hashes[k:])]
    return rfc_path(m - k, hashes[k:]) + [mth(hashes[:k])]


def rfc_proof(m, hashes):
    """PROOF(m, D[n]) = SUBPROOF(m, D[n], true). The RFC defines it for 0 < m; for m = 0 there is
    nothing to prove, and FORMAT.md's vectors use the empty path."""
    return rfc_subproof(m, hashes, True) if m > 0 else []


def rfc_subproof(m, hashes, complete):
    n = len(hashes)
    if m == n:
        return [] if complete else [mth(hashes)]
    k = split_point(n)
    if m <= k:
        return rfc_subproof(m, hashes[:k], complete) + [mth(hashes[k:])]
    return rfc_subproof(m - k, hashes[k:], False) + [mth(hashes[:k])]


def flip(octets, position=0):
    """The octets with one bit of one byte flipped."""
    changed = bytearray(octets)
    changed[position % len(changed)] ^= 0x01
    return bytes(changed)


def includes(seq, tree_size, path, record_hash, root):
    return ve.verify_inclusion(seq - 1, tree_size, path, ve.leaf_hash(record_hash), root)


# --------------------------------------------------------------------------------------------------
# Tree hash
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size, root", FORMAT_ROOTS.items())
def test_format_root_vectors(size, root):
    assert mth(RECORD_HASHES[:size]).hex() == root


def test_format_definitions():
    assert ve.EMPTY_TREE_HASH == hashlib.sha3_256(b"").digest()
    assert mth(RECORD_HASHES[:1]) == hashlib.sha3_256(b"\x00" + RECORD_HASHES[0]).digest()
    leaves = [ve.leaf_hash(h) for h in RECORD_HASHES[:3]]
    node = lambda left, right: hashlib.sha3_256(b"\x01" + left + right).digest()  # noqa: E731
    assert mth(RECORD_HASHES[:3]) == node(node(leaves[0], leaves[1]), leaves[2])


def test_vectors_file_roots_match_format():
    assert {int(size): root for size, root in VECTORS["roots"].items()} == FORMAT_ROOTS


# --------------------------------------------------------------------------------------------------
# Proof shapes and the vectors file
# --------------------------------------------------------------------------------------------------


def test_proof_shapes_for_size_7():
    d = RECORD_HASHES[:7]
    L = [ve.leaf_hash(h) for h in d]  # noqa: N806  FORMAT.md's names

    def M(a, b):  # noqa: N802
        return mth(d[a:b])

    assert rfc_path(0, d) == [L[1], M(2, 4), M(4, 7)]
    assert rfc_path(6, d) == [M(4, 6), M(0, 4)]
    assert rfc_proof(3, d) == [L[2], L[3], M(0, 2), M(4, 7)]
    assert rfc_proof(4, d) == [M(4, 7)]
    assert rfc_proof(6, d) == [M(4, 6), L[6], M(0, 4)]
    root = M(0, 7)
    assert includes(1, 7, [L[1], M(2, 4), M(4, 7)], d[0], root)
    assert includes(7, 7, [M(4, 6), M(0, 4)], d[6], root)
    assert ve.verify_consistency(3, 7, [L[2], L[3], M(0, 2), M(4, 7)], M(0, 3), root)
    assert ve.verify_consistency(4, 7, [M(4, 7)], M(0, 4), root)
    assert ve.verify_consistency(6, 7, [M(4, 6), L[6], M(0, 4)], M(0, 6), root)


def test_cli_sizes_bind_what_a_path_does_not(tmp_path):
    """RFC 9162 paths do not fix the tree size: relabelled with another size of the same shape, a
    proof verifies against the root alone, but not against the size the root is of."""
    relabelled = {**inclusion_proof(), "tree_size": 18}
    assert_one_line(run_inclusion(tmp_path, relabelled), 0, "valid: ")
    proof_file = write_json(tmp_path, relabelled)
    for size, status in ((17, 1), (18, 0)):
        result = run_script("--inclusion", proof_file, "--record-hash", RECORD_HASHES[4].hex(),
                            "--root", ROOTS[17].hex(), "--tree-size", str(size))
        assert_one_line(result, status, "valid: " if status == 0 else "invalid: ")
    assert "the proof is for a tree of size 18, not 17" in run_script(
        "--inclusion", proof_file, "--record-hash", RECORD_HASHES[4].hex(), "--root", ROOTS[17].hex(),
        "--tree-size", "17").stdout

    relabelled = {**consistency_proof(), "new_size": 18}
    assert_one_line(run_script("--consistency", write_json(tmp_path, relabelled)), 0, "valid: ")
    between = ["--between", "9", ROOTS[9].hex(), "17", ROOTS[17].hex()]
    assert_one_line(run_script("--consistency", write_json(tmp_path, relabelled), *between), 1, "invalid: ")
    assert_one_line(run_script("--consistency", write_json(tmp_path, consistency_proof()), *between), 0,
                    "valid: ")


@pytest.mark.parametrize("vector", VECTORS["inclusion"], ids=lambda v: f"{v['seq']}of{v['tree_size']}")
def test_inclusion_vectors(vector):
    path = [bytes.fromhex(entry) for entry in vector["path"]]
    assert path == rfc_path(vector["seq"] - 1, RECORD_HASHES[:vector["tree_size"]])
    assert includes(vector["seq"], vector["tree_size"], path, bytes.fromhex(vector["record_hash"]),
                    bytes.fromhex(VECTORS["roots"][str(vector["tree_size"])]))


@pytest.mark.parametrize("vector", VECTORS["consistency"],
                         ids=lambda v: f"{v['old_size']}to{v['new_size']}")
def test_consistency_vectors(vector):
    path = [bytes.fromhex(entry) for entry in vector["path"]]
    assert path == rfc_proof(vector["old_size"], RECORD_HASHES[:vector["new_size"]])
    assert ve.verify_consistency(vector["old_size"], vector["new_size"], path,
                                 bytes.fromhex(vector["old_root"]), bytes.fromhex(vector["new_root"]))


# --------------------------------------------------------------------------------------------------
# Generated proofs, intact and tampered
# --------------------------------------------------------------------------------------------------

ROOTS = [mth(RECORD_HASHES[:n]) for n in range(42)]


@pytest.mark.parametrize("n", range(1, 41))
def test_inclusion_all_leaves(n):
    root = ROOTS[n]
    for m in range(n):
        seq, record, path = m + 1, RECORD_HASHES[m], rfc_path(m, RECORD_HASHES[:n])
        assert includes(seq, n, path, record, root)
        for i in range(len(path)):
            assert not includes(seq, n, path[:i] + [flip(path[i], i + m)] + path[i + 1:], record, root)
        assert not includes(seq, n, path + [root], record, root)
        if path:
            assert not includes(seq, n, path[:-1], record, root)
        for other_seq in [0, n + 1, *range(1, n + 1)]:
            if other_seq != seq:
                assert not includes(other_seq, n, path, record, root)
        for other_root in (flip(root, m), ROOTS[n - 1], ROOTS[n + 1]):
            assert not includes(seq, n, path, record, other_root)
        # Another record: altered, outside the tree, or another leaf of it.
        for other_record in (flip(record, m), RECORD_HASHES[n], RECORD_HASHES[(m + 1) % n]):
            if other_record != record:
                assert not includes(seq, n, path, other_record, root)


def test_inclusion_path_valid_only_for_its_own_size_root():
    # FORMAT.md "Proofs": a path may verify under another tree size with the same shape for the
    # leaf, but against the root of the size it claims, only that size's path verifies.
    for n in range(1, 41):
        for claimed in range(1, 41):
            for m in range(min(n, claimed)):
                path = rfc_path(m, RECORD_HASHES[:n])
                assert includes(m + 1, claimed, path, RECORD_HASHES[m], ROOTS[claimed]) == (claimed == n)


@pytest.mark.parametrize("n", range(0, 34))
def test_consistency_all_prefixes(n):
    new_root = ROOTS[n]
    for m in range(n + 1):
        old_root, path = ROOTS[m], rfc_proof(m, RECORD_HASHES[:n])
        assert ve.verify_consistency(m, n, path, old_root, new_root)
        for i in range(len(path)):
            tampered = path[:i] + [flip(path[i], i + m)] + path[i + 1:]
            assert not ve.verify_consistency(m, n, tampered, old_root, new_root)
        assert not ve.verify_consistency(m, n, path + [new_root], old_root, new_root)
        if path:
            assert not ve.verify_consistency(m, n, path[:-1], old_root, new_root)
        for other_old_root in (flip(old_root, m), ROOTS[m + 1]):
            assert not ve.verify_consistency(m, n, path, other_old_root, new_root)
        for other_old_size in range(0, 35):
            if other_old_size != m:
                assert not ve.verify_consistency(other_old_size, n, path, old_root, new_root)
        # The empty tree is a prefix of every tree: nothing then depends on the new root.
        if m > 0:
            for other_new_root in (flip(new_root, m), ROOTS[n + 1]):
                assert not ve.verify_consistency(m, n, path, old_root, other_new_root)


def test_consistency_size_zero_needs_the_empty_root():
    assert ve.verify_consistency(0, 0, [], ROOTS[0], ROOTS[0])
    assert not ve.verify_consistency(0, 3, [], ROOTS[1], ROOTS[3])
    assert not ve.verify_consistency(0, 3, [ROOTS[3]], ROOTS[0], ROOTS[3])
    assert not ve.verify_consistency(4, 3, [], ROOTS[4], ROOTS[3])


# --------------------------------------------------------------------------------------------------
# --inclusion and --consistency
# --------------------------------------------------------------------------------------------------


def write_json(tmp_path, value, name="proof.json"):
    path = tmp_path / name
    path.write_text(value if isinstance(value, str) else json.dumps(value), encoding="utf-8")
    return str(path)


def inclusion_proof(seq=5, tree_size=17):
    path = rfc_path(seq - 1, RECORD_HASHES[:tree_size])
    return {"type": "inclusion", "seq": seq, "tree_size": tree_size, "path": [p.hex() for p in path],
            "ledger": "public.audit", "record_hash": "informative, not read"}


def consistency_proof(old_size=9, new_size=17):
    return {"type": "consistency", "old_size": old_size, "new_size": new_size,
            "old_root": ROOTS[old_size].hex() if old_size < len(ROOTS) else None,
            "new_root": ROOTS[new_size].hex(),
            "path": [p.hex() for p in rfc_proof(old_size, RECORD_HASHES[:new_size])]}


def run_inclusion(tmp_path, proof, record_hash=RECORD_HASHES[4].hex(), root=ROOTS[17].hex()):
    return run_script("--inclusion", write_json(tmp_path, proof), "--record-hash", record_hash,
                      "--root", root)


def assert_one_line(result, returncode, prefix):
    assert result.returncode == returncode, result
    assert len(result.stdout.splitlines()) == 1 and result.stdout.startswith(prefix), result.stdout
    assert "Traceback" not in result.stderr


def test_cli_inclusion_valid_and_invalid(tmp_path):
    assert_one_line(run_inclusion(tmp_path, inclusion_proof()), 0, "valid: ")
    assert_one_line(run_inclusion(tmp_path, inclusion_proof(), record_hash=RECORD_HASHES[5].hex()),
                    1, "invalid: ")
    assert_one_line(run_inclusion(tmp_path, inclusion_proof(), root=ROOTS[16].hex()), 1, "invalid: ")
    assert_one_line(run_inclusion(tmp_path, {**inclusion_proof(), "seq": 6}), 1, "invalid: ")
    # A seq outside the tree is well-formed but cannot verify.
    assert_one_line(run_inclusion(tmp_path, {**inclusion_proof(), "seq": 18}), 1, "invalid: ")
    tampered = inclusion_proof()
    tampered["path"][1] = flip(bytes.fromhex(tampered["path"][1])).hex()
    assert_one_line(run_inclusion(tmp_path, tampered), 1, "invalid: ")


def test_cli_sizes_bind_what_a_path_does_not(tmp_path):
    """RFC 9162 paths do not fix the tree size: relabelled with another size of the same shape, a
    proof verifies against the root alone, but not against the size the root is of."""
    relabelled = {**inclusion_proof(), "tree_size": 18}
    assert_one_line(run_inclusion(tmp_path, relabelled), 0, "valid: ")
    proof_file = write_json(tmp_path, relabelled)
    for size, status in ((17, 1), (18, 0)):
        result = run_script("--inclusion", proof_file, "--record-hash", RECORD_HASHES[4].hex(),
                            "--root", ROOTS[17].hex(), "--tree-size", str(size))
        assert_one_line(result, status, "valid: " if status == 0 else "invalid: ")
    assert "the proof is for a tree of size 18, not 17" in run_script(
        "--inclusion", proof_file, "--record-hash", RECORD_HASHES[4].hex(), "--root", ROOTS[17].hex(),
        "--tree-size", "17").stdout

    relabelled = {**consistency_proof(), "new_size": 18}
    assert_one_line(run_script("--consistency", write_json(tmp_path, relabelled)), 0, "valid: ")
    between = ["--between", "9", ROOTS[9].hex(), "17", ROOTS[17].hex()]
    assert_one_line(run_script("--consistency", write_json(tmp_path, relabelled), *between), 1, "invalid: ")
    assert_one_line(run_script("--consistency", write_json(tmp_path, consistency_proof()), *between), 0,
                    "valid: ")


@pytest.mark.parametrize("vector", VECTORS["inclusion"], ids=lambda v: f"{v['seq']}of{v['tree_size']}")
def test_cli_inclusion_vectors(tmp_path, vector):
    result = run_inclusion(tmp_path, {"type": "inclusion", **vector}, record_hash=vector["record_hash"],
                           root=VECTORS["roots"][str(vector["tree_size"])])
    assert_one_line(result, 0, "valid: ")


@pytest.mark.parametrize("vector", VECTORS["consistency"],
                         ids=lambda v: f"{v['old_size']}to{v['new_size']}")
def test_cli_consistency_vectors(tmp_path, vector):
    result = run_script("--consistency", write_json(tmp_path, {"type": "consistency", **vector}))
    assert_one_line(result, 0, "valid: ")


def test_cli_consistency_invalid(tmp_path):
    for proof in ({**consistency_proof(), "old_root": ROOTS[8].hex()},
                  {**consistency_proof(), "new_root": ROOTS[18].hex()},
                  {**consistency_proof(), "old_size": 10},
                  {**consistency_proof(), "path": consistency_proof()["path"][:-1]},
                  {**consistency_proof(1, 1), "path": [ROOTS[1].hex()]},
                  {**consistency_proof(2, 2), "old_size": 3, "old_root": ROOTS[3].hex()}):
        result = run_script("--consistency", write_json(tmp_path, proof))
        assert_one_line(result, 1, "invalid: ")


def malformed_inclusion_proofs():
    good = inclusion_proof()
    yield "not json", "{"
    yield "not utf-8", None
    yield "deep json", "[" * 100_000 + "]" * 100_000
    yield "array", [good]
    yield "no type", {key: value for key, value in good.items() if key != "type"}
    yield "wrong type", {**good, "type": "consistency"}
    # seq 0 is well-formed (and proves nothing): test_proofs_that_prove_nothing_are_invalid.
    for bad_seq in (-1, "5", 5.0, True, None):
        yield f"seq {bad_seq!r}", {**good, "seq": bad_seq}
    for bad_size in (-1, "17", 17.5, False):
        yield f"tree_size {bad_size!r}", {**good, "tree_size": bad_size}
    yield "path missing", {key: value for key, value in good.items() if key != "path"}
    yield "path a string", {**good, "path": good["path"][0]}
    yield "path upper-case hex", {**good, "path": [good["path"][0].upper()] + good["path"][1:]}
    yield "path short hash", {**good, "path": [good["path"][0][:-2]] + good["path"][1:]}
    yield "path long hash", {**good, "path": [good["path"][0] + "00"] + good["path"][1:]}
    yield "path non-hex", {**good, "path": ["g" * 64] + good["path"][1:]}
    yield "path number", {**good, "path": [1] + good["path"][1:]}
    yield "path 65 hashes", {**good, "path": ["0" * 64] * 65}


@pytest.mark.parametrize("name, proof", list(malformed_inclusion_proofs()))
def test_cli_inclusion_malformed_exits_2(tmp_path, name, proof):
    if proof is None:
        (tmp_path / "proof.json").write_bytes(b'{"type": "inclusion", "x": "\xff"}')
        proof_file = str(tmp_path / "proof.json")
    else:
        proof_file = write_json(tmp_path, proof)
    result = run_script("--inclusion", proof_file, "--record-hash", RECORD_HASHES[4].hex(),
                        "--root", ROOTS[17].hex())
    assert_malformed(result)


@pytest.mark.parametrize("record_hash, root", [
    ("A" * 64, ROOTS[17].hex()), (RECORD_HASHES[4].hex()[:-1], ROOTS[17].hex()),
    (RECORD_HASHES[4].hex(), ROOTS[17].hex() + "0"), (RECORD_HASHES[4].hex(), "x" * 64)])
def test_cli_inclusion_bad_hex_arguments_exit_2(tmp_path, record_hash, root):
    assert_malformed(run_inclusion(tmp_path, inclusion_proof(), record_hash=record_hash, root=root))


def malformed_consistency_proofs():
    good = consistency_proof()
    yield "wrong type", {**good, "type": "inclusion"}
    yield "old_size negative", {**good, "old_size": -1}
    yield "new_size text", {**good, "new_size": "17"}
    yield "old_root missing", {key: value for key, value in good.items() if key != "old_root"}
    yield "new_root short", {**good, "new_root": good["new_root"][:63]}
    yield "new_root upper-case", {**good, "new_root": good["new_root"].upper()}
    yield "path entry null", {**good, "path": [None]}
    yield "path 65 hashes", {**good, "path": ["0" * 64] * 65}


@pytest.mark.parametrize("name, proof", list(malformed_consistency_proofs()))
def test_cli_consistency_malformed_exits_2(tmp_path, name, proof):
    assert_malformed(run_script("--consistency", write_json(tmp_path, proof)))


def test_cli_proof_missing_file_exits_2(tmp_path):
    assert_malformed(run_script("--consistency", str(tmp_path / "missing.json")))


@pytest.mark.parametrize("args", [
    ["--inclusion", "p.json", "--record-hash", "0" * 64],  # no --root
    ["--inclusion", "p.json", "--root", "0" * 64],  # no --record-hash
    ["--consistency", "p.json", "--root", "0" * 64],
    ["export.jsonl", "--inclusion", "p.json", "--record-hash", "0" * 64, "--root", "0" * 64],
    ["--consistency", "p.json", "--json"],
    ["--inclusion", "p.json", "--consistency", "p.json"],
    ["--inclusion", "p.json", "--record-hash", "0" * 64, "--root", "0" * 64, "--tree-size", "-1"],
    ["--consistency", "p.json", "--tree-size", "3"],
    ["--inclusion", "p.json", "--record-hash", "0" * 64, "--root", "0" * 64, "--between", "1", "0" * 64,
     "2", "0" * 64],
    ["--consistency", "p.json", "--between", "x", "0" * 64, "2", "0" * 64],
    ["export.jsonl", "--public-key", "AAAA"],
    ["export.jsonl", "--allow-unsigned"],
    ["export.jsonl", "--merkle-root", "-", "1"],
    ["export.jsonl", "--merkle-root", "-", "one", "2"],
    ["export.jsonl", "--merkle-root", "-", "0", "2"],
    ["export.jsonl", "--merkle-root", "-", "3", "1"],
    ["export.jsonl", "--merkle-root", "-", "1", "2", "--json"],
    ["export.jsonl", "--merkle-root", "-", "1", "2", "--digest", "d.txt"],
    [],
])
def test_cli_usage_errors_exit_2(args):
    result = run_script(*args)
    assert result.returncode == 2 and "Traceback" not in result.stderr and result.stdout == ""


def assert_malformed(result):
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert "error" in result.stderr
    assert result.stdout == ""


# --------------------------------------------------------------------------------------------------
# --merkle-root
# --------------------------------------------------------------------------------------------------


def record_hashes(rows):
    return [bytes.fromhex(row[-1]) for row in rows]


def test_cli_merkle_root_single_chain(tmp_path):
    rows = chain_rows([("alice", str(n), "null") for n in range(9)], chain_index=None)
    export = str(write_export(tmp_path, export_lines(rows, chain_by=None)))
    for first, last in ((1, 9), (1, 1), (3, 7), (9, 9)):
        result = run_script(export, "--merkle-root", "-", str(first), str(last))
        assert (result.returncode, result.stdout) == (0, mth(record_hashes(rows)[first - 1:last]).hex() + "\n")
    result = run_script(export, "--merkle-root", "-", "1", "0")
    assert (result.returncode, result.stdout.strip()) == (0, ROOTS[0].hex())


def test_cli_merkle_root_chain_by(tmp_path):
    rows = chain_rows([("alice", "1", "1"), ("bob", "2", "2"), ("alice", "3", "3"), ("-", "4", "4")])
    export = str(write_export(tmp_path, export_lines(rows)))
    alice = [row for row in rows if row[0] == "alice"]
    result = run_script(export, "--merkle-root", "alice", "1", "2")
    assert (result.returncode, result.stdout.strip()) == (0, mth(record_hashes(alice)).hex())
    # In a table chained by a column, `-` is just a chain value.
    result = run_script(export, "--merkle-root", "-", "1", "1")
    assert (result.returncode, result.stdout.strip()) == (0, mth(record_hashes(rows[3:])).hex())


def test_cli_merkle_root_missing_records(tmp_path):
    export = str(write_export(tmp_path, export_lines(one_chain(4))))
    for args in (("alice", "1", "5"), ("carol", "1", "1")):
        result = run_script(export, "--merkle-root", *args)
        assert result.returncode == 1 and result.stdout == "" and "no record with seq" in result.stderr
    # A single-chain table's chain is `-`; a malformed export is malformed as in the other modes.
    single = str(write_export(tmp_path, export_lines(chain_rows([("a", "1", "1")], chain_index=None),
                                                     chain_by=None)))
    assert_malformed(run_script(single, "--merkle-root", "a", "1", "1"))
    assert_malformed(run_script(str(write_export(tmp_path, ["{"])), "--merkle-root", "-", "1", "1"))


def test_merkle_leaves_are_the_stored_hashes():
    """FORMAT.md: the tree covers the stored hashes (a mismatch with the values is hash_mismatch)."""
    rows = one_chain(3)
    rows[1][-1] = "0" * 64
    report = ve.check_export(export_lines(rows))
    assert ve.chain_leaves(report.records, "alice", 1, 3)[1] == bytes(32)
    assert [p.problem for p in report.problems][:1] == ["hash_mismatch"]
    rows[1][-1] = None
    report = ve.check_export(export_lines(rows))
    with pytest.raises(ve.MissingRecord):
        ve.chain_leaves(report.records, "alice", 1, 3)


# --------------------------------------------------------------------------------------------------
# Digests
# --------------------------------------------------------------------------------------------------

EM_DASH = "\u2014"


def public_key_octets(private_key):
    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(public_key):
    """FORMAT.md: the first 4 octets of SHA-256("ledger" || "\\n" || 0x01 || public key)."""
    return hashlib.sha256(b"ledger\n\x01" + public_key).digest()[:4]


def digest_body(root, size, ledger="public.audit", chain="alice", public_key=None,
                previous="none", time="2024-05-01T12:34:56.123456Z",
                checkpoint="3f0c9a52-8d7e-4b1a-9c2d-5e6f7a8b9c0d", definition="ab" * 32):
    lines = [
        "ledger-checkpoint/v1",
        f"ledger {json.dumps(ledger)}",
        "chain none" if chain is None else f"chain {json.dumps(chain)}",
        f"size {size}",
        f"root {root.hex()}",
        f"previous {previous}",
        f"time {time}",
        f"checkpoint {checkpoint}",
        "key none" if public_key is None else f"key {base64.b64encode(public_key).decode()}",
        f"definition {definition}",
    ]
    return "".join(line + "\n" for line in lines)


def signature_line(body, private_key, signed_key_id=None):
    """`— ledger <base64(key id || Ed25519 signature over the body)>`."""
    if signed_key_id is None:
        signed_key_id = key_id(public_key_octets(private_key))
    signature = private_key.sign(body.encode())
    return f"{EM_DASH} ledger {base64.b64encode(signed_key_id + signature).decode()}\n"


def signed_digest(private_key, rows, size=None, **fields):
    size = len(rows) if size is None else size
    body = digest_body(mth(record_hashes(rows[:size])), size, public_key=public_key_octets(private_key),
                       **fields)
    return body + "\n" + signature_line(body, private_key)


@pytest.fixture(scope="module")
def key():
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def other_key():
    return Ed25519PrivateKey.generate()


def b64_key(private_key):
    return base64.b64encode(public_key_octets(private_key)).decode()


def run_digest(tmp_path, rows, digest, *args, chain_by="account"):
    export = write_export(tmp_path, export_lines(rows, chain_by=chain_by))
    digest_file = tmp_path / "checkpoint.digest"
    digest_file.write_text(digest, encoding="utf-8")
    return run_script(str(export), "--digest", str(digest_file), *args)


def digest_checks(result):
    """{check: (status, detail)} from the TSV digest lines; asserts the line shape."""
    checks = {}
    for line in result.stdout.splitlines():
        fields = line.split("\t")
        if fields[0] == "digest":
            assert len(fields) == 4 and fields[2] in ("ok", "failed", "skipped"), line
            checks[fields[1]] = (fields[2], fields[3])
    assert list(checks) == ["signature", "key", "extends", "definition"]
    return checks


def statuses(result):
    return {check: status for check, (status, _) in digest_checks(result).items()}


TWO_CHAINS = chain_rows([("alice", "1.00", "1"), ("bob", "2.00", "2"), ("alice", "3.00", "3"),
                         ("alice", "4.00", "4"), ("bob", "5.00", "5")])
ALICE = [row for row in TWO_CHAINS if row[0] == "alice"]


def test_digest_valid(tmp_path, key):
    result = run_digest(tmp_path, TWO_CHAINS, signed_digest(key, ALICE), "--public-key", b64_key(key))
    assert result.returncode == 0, result
    # These exports carry no definitions (as before 0.3.0): the definition check is skipped.
    assert statuses(result) == {"signature": "ok", "key": "ok", "extends": "ok", "definition": "skipped"}
    assert result.stdout.splitlines() == [line for line in result.stdout.splitlines()
                                          if line.startswith("digest\t")]
    assert "verified 5 records in 2 chains: 0 problems" in result.stderr


def test_digest_without_public_key_skips_key_check(tmp_path, key):
    result = run_digest(tmp_path, TWO_CHAINS, signed_digest(key, ALICE))
    assert result.returncode == 0
    assert digest_checks(result)["key"][0] == "skipped"


def test_digest_json(tmp_path, key):
    rows = [list(row) for row in TWO_CHAINS]
    rows[1][1] = "9.99"  # bob's first record edited: a problem, the digest (of alice) still holds
    result = run_digest(tmp_path, rows, signed_digest(key, ALICE), "--json")
    assert result.returncode == 1
    output = json.loads(result.stdout)
    assert set(output) == {"problems", "digest"}
    assert [(p["chain"], p["seq"], p["problem"]) for p in output["problems"]] == [("bob", 1, "hash_mismatch")]
    assert [(check["check"], check["ok"]) for check in output["digest"]] == [
        ("signature", True), ("key", None), ("extends", True), ("definition", None)]
    assert all(set(check) == {"check", "ok", "detail"} and isinstance(check["detail"], str)
               for check in output["digest"])


def test_digest_of_a_prefix_and_of_another_chain(tmp_path, key):
    assert run_digest(tmp_path, TWO_CHAINS, signed_digest(key, ALICE, size=2)).returncode == 0
    bob = [row for row in TWO_CHAINS if row[0] == "bob"]
    assert run_digest(tmp_path, TWO_CHAINS, signed_digest(key, bob, chain="bob")).returncode == 0
    assert run_digest(tmp_path, TWO_CHAINS, signed_digest(key, bob, size=0, chain="bob")).returncode == 0


def test_digest_of_single_chain_table(tmp_path, key):
    rows = chain_rows([("x", str(n), "null") for n in range(6)], chain_index=None)
    result = run_digest(tmp_path, rows, signed_digest(key, rows, chain=None), chain_by=None)
    assert result.returncode == 0 and statuses(result)["extends"] == "ok"
    # A digest naming a chain does not match a single-chain table.
    result = run_digest(tmp_path, rows, signed_digest(key, rows, chain="x"), chain_by=None)
    assert result.returncode == 1 and statuses(result)["extends"] == "failed"


def test_digest_extends_fails_when_last_record_dropped(tmp_path, key):
    digest = signed_digest(key, ALICE)
    dropped = [row for row in TWO_CHAINS if row is not ALICE[-1]]
    result = run_digest(tmp_path, dropped, digest)
    # Dropping the newest record leaves a valid chain: only the digest notices.
    assert result.returncode == 1
    assert [line for line in result.stdout.splitlines() if not line.startswith("digest\t")] == []
    checks = digest_checks(result)
    assert checks["extends"][0] == "failed" and "seq 3" in checks["extends"][1]
    assert checks["signature"][0] == "ok"


def test_digest_extends_fails_when_chain_rewritten(tmp_path, key):
    digest = signed_digest(key, ALICE)
    rewritten = chain_rows([("alice", "0", "0")] * 3 + [("bob", "2.00", "2")])
    result = run_digest(tmp_path, rewritten, digest)
    assert result.returncode == 1 and statuses(result)["extends"] == "failed"
    assert "root" in digest_checks(result)["extends"][1]


def test_digest_extends_fails_for_another_ledger(tmp_path, key):
    result = run_digest(tmp_path, TWO_CHAINS, signed_digest(key, ALICE, ledger="public.other"))
    assert result.returncode == 1 and statuses(result)["extends"] == "failed"


@pytest.mark.parametrize("line_index, replacement", [
    (1, 'ledger "public.other"'), (2, 'chain "bob"'), (3, "size 2"), (4, "root " + "0" * 64),
    (5, "previous " + "1" * 64), (6, "time 2024-05-01T12:34:57.123456Z"),
    (7, "checkpoint 00000000-0000-0000-0000-000000000000"),
])
def test_digest_changed_body_line_fails_signature(tmp_path, key, line_index, replacement):
    lines = signed_digest(key, ALICE).split("\n")
    lines[line_index] = replacement
    result = run_digest(tmp_path, TWO_CHAINS, "\n".join(lines))
    assert result.returncode == 1
    assert statuses(result)["signature"] == "failed"


def test_digest_signed_by_another_key_fails(tmp_path, key, other_key):
    body = digest_body(mth(record_hashes(ALICE)), 3, public_key=public_key_octets(key))
    # Another key's signature under its own key id, and under the digest key's id.
    for line in (signature_line(body, other_key),
                 signature_line(body, other_key, key_id(public_key_octets(key)))):
        result = run_digest(tmp_path, TWO_CHAINS, body + "\n" + line)
        assert result.returncode == 1
        assert statuses(result)["signature"] == "failed"


def test_digest_resigned_under_another_key_fails_key_check(tmp_path, key, other_key):
    forged = signed_digest(other_key, ALICE)
    result = run_digest(tmp_path, TWO_CHAINS, forged, "--public-key", b64_key(key))
    assert result.returncode == 1
    assert statuses(result) == {"signature": "ok", "key": "failed", "extends": "ok", "definition": "skipped"}


def test_unsigned_digest(tmp_path, key):
    unsigned = digest_body(mth(record_hashes(ALICE)), 3) + "\n"  # the blank line, no signature line
    for digest in (unsigned, unsigned + "\n"):  # as written, and as psql -At prints it
        result = run_digest(tmp_path, TWO_CHAINS, digest)
        assert result.returncode == 1
        assert statuses(result) == {"signature": "failed", "key": "skipped", "extends": "ok",
                                    "definition": "skipped"}
        result = run_digest(tmp_path, TWO_CHAINS, digest, "--allow-unsigned")
        assert result.returncode == 0
        assert statuses(result) == {"signature": "skipped", "key": "skipped", "extends": "ok",
                                    "definition": "skipped"}
    result = run_digest(tmp_path, TWO_CHAINS, unsigned, "--allow-unsigned", "--public-key", b64_key(key))
    assert result.returncode == 1 and statuses(result)["key"] == "failed"


def test_digest_with_signature_stripped_or_key_removed(tmp_path, key):
    signed = signed_digest(key, ALICE)
    body, signature = signed.split("\n\n")
    # A key without a signature line is not an unsigned digest: --allow-unsigned does not help.
    result = run_digest(tmp_path, TWO_CHAINS, body + "\n\n", "--allow-unsigned")
    assert result.returncode == 1 and statuses(result)["signature"] == "failed"
    lines = body.split("\n")
    no_key = "\n".join(lines[:8] + ["key none"] + lines[9:]) + "\n"
    result = run_digest(tmp_path, TWO_CHAINS, no_key + "\n" + signature, "--allow-unsigned")
    assert result.returncode == 1 and statuses(result)["signature"] == "failed"


def test_digest_trailing_newlines_ignored(tmp_path, key):
    # psql -At prints a newline after the digest's own last newline.
    result = run_digest(tmp_path, TWO_CHAINS, signed_digest(key, ALICE) + "\n")
    assert result.returncode == 0


def test_parse_digest():
    root = mth(RECORD_HASHES[:3])
    digest = ve.parse_digest(digest_body(root, 3, ledger='odd "name"', chain="tab\there").encode() + b"\n")
    assert (digest.ledger, digest.chain, digest.size, digest.root) == ('odd "name"', "tab\there", 3, root)
    assert (digest.public_key, digest.signature, digest.ledger_signature_lines) == (None, None, 0)
    assert digest.body == digest_body(root, 3, ledger='odd "name"', chain="tab\there").encode()


def signature_check(digest_text, allow_unsigned=False):
    """(ok, detail) of the offline signature check of a digest's text."""
    check = ve.check_signature(ve.parse_digest(digest_text.encode()), allow_unsigned)
    return check.ok, check.detail


def raw_signature_line(name, blob):
    return f"{EM_DASH} {name} {base64.b64encode(blob).decode()}\n"


def test_digest_signature_lines_first_by_own_key_decides(key, other_key):
    """FORMAT.md "Digests": any number of well-formed signature lines up to 100; lines by other key
    names or key ids are cosignatures and ignored; the first `ledger` line with the digest key's
    key id decides."""
    good = signed_digest(key, ALICE)
    body, good_line = good.split("\n\n")
    own_id = key_id(public_key_octets(key))
    garbage = raw_signature_line("ledger", own_id + bytes(64))
    witness = raw_signature_line("witness.example/w1", bytes(68))
    foreign_id = signature_line(body, other_key)  # valid for another key: another key id
    assert signature_check(good)[0] is True
    assert signature_check(good + garbage)[0] is True  # the first decides
    assert signature_check(f"{body}\n\n{garbage}{good_line}")[0] is False
    assert signature_check(f"{body}\n\n{witness}{foreign_id}{good_line}{witness}")[0] is True
    assert signature_check(f"{body}\n\n{witness}{foreign_id}")[0] is False
    short = raw_signature_line("ledger", own_id + b"x")
    ok, detail = signature_check(f"{body}\n\n{short}{good_line}")
    assert ok is False and "5 octets" in detail
    exactly_100 = good + raw_signature_line("w", bytes(5)) * 99
    assert signature_check(exactly_100)[0] is True
    with pytest.raises(ve.MalformedInput, match="101 signature lines"):
        ve.parse_digest((exactly_100 + raw_signature_line("w", bytes(5))).encode())


def test_unsigned_digest_with_signature_lines():
    unsigned = digest_body(mth(record_hashes(ALICE)), 3) + "\n"
    assert signature_check(unsigned, allow_unsigned=True)[0] is None
    # A cosignature does not make it signed ...
    assert signature_check(unsigned + raw_signature_line("witness", bytes(68)), True)[0] is None
    # ... a `ledger` line does: the key line was changed to none.
    ok, detail = signature_check(unsigned + raw_signature_line("ledger", bytes(68)), True)
    assert ok is False and "key none" in detail


def test_digest_carriage_return_says_line_feed():
    good = digest_body(mth(record_hashes(ALICE)), 3) + "\n"
    for bad in (good.replace("\n", "\r\n"), good.replace("\n", "\r\n", 1), good + "\r"):
        with pytest.raises(ve.MalformedInput, match="line feed alone"):
            ve.parse_digest(bad.encode())


def test_digest_body_fields_have_one_spelling():
    root = mth(record_hashes(ALICE))
    assert ve.parse_digest((digest_body(root, 2**64 - 1) + "\n").encode()).size == 2**64 - 1
    assert ve.parse_digest((digest_body(root, 3, time="10000-01-01T00:00:00.000000Z") + "\n").encode())
    for fields in ({"size": 2**64}, {"size": "+3"}, {"ledger": "\ud800"}, {"chain": "\udc00"},
                   {"checkpoint": "3F0C9A52-8D7E-4B1A-9C2D-5E6F7A8B9C0D"}, {"checkpoint": "cp-1"},
                   {"time": "2024-05-01 12:34:56.123456Z"},
                   {"public_key": None, "definition": "AB" * 32}):
        with pytest.raises(ve.MalformedInput):
            ve.parse_digest((digest_body(root, **{"size": 3, **fields}) + "\n").encode("utf-8", "surrogatepass"))
    # key: canonical base64 only (a stray bit in the last character is another spelling).
    key_line = digest_body(root, 3, public_key=bytes(32))
    assert "key " + "A" * 43 + "=" in key_line
    with pytest.raises(ve.MalformedInput):
        ve.parse_digest((key_line.replace("A" * 43 + "=", "A" * 42 + "B=") + "\n").encode())


def malformed_digests(private_key):
    good = signed_digest(private_key, ALICE)
    body, signature = good.split("\n\n")
    lines = body.split("\n")

    def with_line(index, text):
        changed = list(lines)
        changed[index] = text
        return "\n".join(changed) + "\n\n" + signature

    yield "empty", ""
    yield "blank first", "\n" + good
    yield "wrong version", with_line(0, "ledger-checkpoint/v2")
    yield "line missing", "\n".join(lines[:6] + lines[7:]) + "\n\n" + signature
    yield "lines swapped", "\n".join(lines[:2] + [lines[3], lines[2]] + lines[4:]) + "\n\n" + signature
    yield "extra body line", "\n".join(lines + ["extra 1"]) + "\n\n" + signature
    yield "ledger not JSON", with_line(1, "ledger public.audit")
    yield "ledger trailing text", with_line(1, 'ledger "public.audit" x')
    yield "chain null", with_line(2, "chain null")
    yield "chain unterminated", with_line(2, 'chain "alice')
    for size in ("-1", "01", "3.0", "x", ""):
        yield f"size {size!r}", with_line(3, f"size {size}")
    yield "root upper-case", with_line(4, "root " + "A" * 64)
    yield "root short", with_line(4, "root " + "0" * 62)
    yield "previous bad", with_line(5, "previous null")
    yield "time without fraction", with_line(6, "time 2024-05-01T12:34:56Z")
    yield "checkpoint empty", with_line(7, "checkpoint ")
    yield "key bad base64", with_line(8, "key !!!!")
    yield "key 31 octets", with_line(8, "key " + base64.b64encode(b"k" * 31).decode())
    yield "keyword without value", with_line(8, "key")
    yield "definition short", with_line(9, "definition " + "0" * 63)
    yield "definition null", with_line(9, "definition null")
    yield "signature hyphen", body + "\n\n" + signature.replace(EM_DASH, "-")
    # Any signature line must be well-formed, whoever's it is (cosignatures are ignored only then).
    yield "signature bad base64", body + "\n\n" + f"{EM_DASH} ledger ***\n"
    yield "signature not canonical base64", good + f"{EM_DASH} witness AAAAAAB=\n"
    yield "signature without padding", good + f"{EM_DASH} witness AAAAAA\n"
    yield "signature 4 octets", good + f"{EM_DASH} witness {base64.b64encode(b'x' * 4).decode()}\n"
    yield "signature name with +", good + f"{EM_DASH} a+b {base64.b64encode(b'x' * 68).decode()}\n"
    yield "signature no name", good + f"{EM_DASH}  {base64.b64encode(b'x' * 68).decode()}\n"
    yield "signature trailing space", good[:-1] + " \n"
    yield "101 signature lines", good + f"{EM_DASH} w {base64.b64encode(b'x' * 5).decode()}\n" * 100
    yield "blank line among signatures", body + "\n\n\n" + signature
    yield "last line without newline", good.rstrip("\n")
    yield "body without newline", body.rstrip("\n")
    yield "unsigned without the blank line", digest_body(mth(record_hashes(ALICE)), 3)
    yield "crlf", good.replace("\n", "\r\n")
    yield "one carriage return", good.replace("\n", "\r\n", 1)
    yield "tab", with_line(3, "size\t3")
    yield "not utf-8", None


@pytest.mark.parametrize("name", [name for name, _ in malformed_digests(Ed25519PrivateKey.generate())])
def test_malformed_digest_exits_2(tmp_path, key, name):
    digest = dict(malformed_digests(key))[name]
    export = write_export(tmp_path, export_lines(TWO_CHAINS))
    digest_file = tmp_path / "checkpoint.digest"
    if digest is None:
        digest_file.write_bytes(signed_digest(key, ALICE).encode().replace(b"public", b"\xffublic"))
    else:
        digest_file.write_text(digest, encoding="utf-8")
    for extra in ([], ["--json"]):
        assert_malformed(run_script(str(export), "--digest", str(digest_file), *extra))


@pytest.mark.parametrize("public_key", ["not base64!", base64.b64encode(b"k" * 31).decode(), ""])
def test_bad_public_key_exits_2(tmp_path, key, public_key):
    assert_malformed(run_digest(tmp_path, TWO_CHAINS, signed_digest(key, ALICE), "--public-key", public_key))


def test_missing_digest_file_exits_2(tmp_path):
    export = write_export(tmp_path, export_lines(TWO_CHAINS))
    assert_malformed(run_script(str(export), "--digest", str(tmp_path / "missing.digest")))


def test_digest_with_malformed_export_exits_2(tmp_path, key):
    assert_malformed(run_digest(tmp_path, TWO_CHAINS[:1] + [["not", "enough"]], signed_digest(key, ALICE)))


# --------------------------------------------------------------------------------------------------
# The standard library is enough unless a signature must be checked
# --------------------------------------------------------------------------------------------------


def run_without_cryptography(*args):
    """Run the script with the cryptography package made unimportable."""
    code = ("import runpy, sys; sys.modules['cryptography'] = None; "
            f"sys.argv = {[str(SCRIPT), *args]!r}; runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_modes_without_cryptography(tmp_path, key):
    export = str(write_export(tmp_path, export_lines(TWO_CHAINS)))
    assert run_without_cryptography(export).returncode == 0
    assert run_without_cryptography(export, "--merkle-root", "alice", "1", "3").returncode == 0
    proof = write_json(tmp_path, consistency_proof())
    assert run_without_cryptography("--consistency", proof).returncode == 0
    digest_file = Path(write_json(tmp_path, digest_body(mth(record_hashes(ALICE)), 3) + "\n", "unsigned.digest"))
    assert run_without_cryptography(export, "--digest", str(digest_file), "--allow-unsigned").returncode == 0
    digest_file.write_text(signed_digest(key, ALICE), encoding="utf-8")
    result = run_without_cryptography(export, "--digest", str(digest_file))
    assert result.returncode == 2 and "cryptography" in result.stderr and "Traceback" not in result.stderr
