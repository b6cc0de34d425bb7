"""The extension and the offline verifier (scripts/verify_export.py) read digests and proofs by the
same rules (docs/FORMAT.md "Digests" and "Proofs"): the same edge and malformed inputs, fed to both,
give the same outcome. An outcome is "error" (malformed: SQLSTATE 22023 from the extension, exit
status 2 / MalformedInput offline), or the value of the check: for a digest its `signature` check
(True, False, or None for unsigned, which the offline verifier reports as skipped under
--allow-unsigned), for a proof whether it verifies."""

from __future__ import annotations

import base64
import hashlib
import json

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledgertest import offline_proof, ve

EM_DASH = "\u2014"
U64_MAX = 2**64 - 1
ERROR = "error"


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(public: bytes) -> bytes:
    return hashlib.sha256(b"ledger\n\x01" + public).digest()[:4]


def sig_line(name: str, blob: bytes) -> str:
    return f"{EM_DASH} {name} {base64.b64encode(blob).decode()}\n"


@pytest.fixture(scope="module")
def material(module_db):
    """A real (unsigned) checkpoint of 17 records, its digest and proofs; the digest re-signed by a
    key of the test's own (verify_digest's `signature` check needs only the digest's key)."""
    db = module_db
    db.execute("CREATE TABLE pay (id int PRIMARY KEY, amount numeric NOT NULL)")
    db.execute("SELECT ledger.enable('pay')")
    db.execute("INSERT INTO pay SELECT g, g * 1.5 FROM generate_series(1, 9) g")
    old = db.fetchone("SELECT cid::text FROM ledger.checkpoint('pay')")[0]
    db.execute("INSERT INTO pay SELECT g, g * 1.5 FROM generate_series(10, 17) g")
    cid, root = db.fetchone("SELECT cid::text, merkle_root FROM ledger.checkpoint('pay')")
    unsigned = db.scalar("SELECT ledger.digest(%s)", (cid,))
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    body = unsigned.replace("\nkey none\n", f"\nkey {base64.b64encode(raw_public(key)).decode()}\n")
    body = body.removesuffix("\n")  # the body alone, ending in its last "\n"
    own = key_id(raw_public(key))
    return {
        "db": db,
        "unsigned": unsigned,
        "body": body,
        "good": sig_line("ledger", own + key.sign(body.encode())),
        "garbage": sig_line("ledger", own + bytes(64)),
        "foreign_id": sig_line("ledger", key_id(raw_public(other)) + other.sign(body.encode())),
        "witness": sig_line("witness.example/log", bytes(68)),
        "record": db.scalar("SELECT hash FROM pay WHERE seq = 5"),
        "root": root,
        "inclusion": db.scalar("SELECT ledger.inclusion_proof(%s, 5)::text", (cid,)),
        "consistency": db.scalar("SELECT ledger.consistency_proof(%s, %s)::text", (old, cid)),
    }


# ---- digests ------------------------------------------------------------------------------------

# name -> (digest text from the material, expected outcome of both)
DIGESTS = {
    "signed": (lambda m: f"{m['body']}\n{m['good']}", True),
    "signed, psql's extra newline": (lambda m: f"{m['body']}\n{m['good']}\n", True),
    "unsigned": (lambda m: m["unsigned"], None),
    "unsigned, psql's extra newline": (lambda m: m["unsigned"] + "\n", None),
    "unsigned without the blank line": (lambda m: m["unsigned"].removesuffix("\n"), ERROR),
    "signed without the blank line": (lambda m: f"{m['body']}{m['good']}", ERROR),
    "crlf": (lambda m: f"{m['body']}\n{m['good']}".replace("\n", "\r\n"), ERROR),
    "one carriage return in the body": (lambda m: f"{m['body']}\n{m['good']}".replace("\n", "\r\n", 1),
                                        ERROR),
    "carriage return after the signature": (lambda m: f"{m['body']}\n{m['good']}\r", ERROR),
    "unsigned crlf": (lambda m: m["unsigned"].replace("\n", "\r\n"), ERROR),
    "tab in the body": (lambda m: f"{m['body']}\n{m['good']}".replace("\nsize ", "\nsize\t"), ERROR),
    "two own lines, valid first": (lambda m: f"{m['body']}\n{m['good']}{m['garbage']}", True),
    "two own lines, garbage first": (lambda m: f"{m['body']}\n{m['garbage']}{m['good']}", False),
    "two identical valid lines": (lambda m: f"{m['body']}\n{m['good']}{m['good']}", True),
    "cosignature by another name": (lambda m: f"{m['body']}\n{m['witness']}{m['good']}{m['witness']}",
                                    True),
    "only a cosignature": (lambda m: f"{m['body']}\n{m['witness']}", False),
    "ledger line of another key id, then own": (lambda m: f"{m['body']}\n{m['foreign_id']}{m['good']}",
                                                True),
    "only a ledger line of another key id": (lambda m: f"{m['body']}\n{m['foreign_id']}", False),
    "own key id, 5 octets": (lambda m: f"{m['body']}\n"
                             + sig_line("ledger", m["good"].encode()[:0] + _own_id(m) + b"x")
                             + m["good"], False),
    "100 lines": (lambda m: f"{m['body']}\n{m['good']}" + sig_line("w", bytes(5)) * 99, True),
    "101 lines": (lambda m: f"{m['body']}\n{m['good']}" + sig_line("w", bytes(5)) * 100, ERROR),
    "unsigned with a ledger line": (lambda m: m["unsigned"] + m["good"], False),
    "unsigned with a cosignature": (lambda m: m["unsigned"] + m["witness"], None),
    "unsigned with a malformed cosignature": (lambda m: m["unsigned"] + f"{EM_DASH} w ***\n", ERROR),
    "malformed cosignature after own": (lambda m: f"{m['body']}\n{m['good']}{EM_DASH} w ***\n", ERROR),
    "4-octet cosignature": (lambda m: f"{m['body']}\n{m['good']}" + sig_line("w", bytes(4)), ERROR),
    "key name with +": (lambda m: f"{m['body']}\n{m['good']}" + sig_line("a+b", bytes(68)), ERROR),
    "non-canonical base64": (lambda m: f"{m['body']}\n{m['good']}{EM_DASH} w AAAAAAB=\n", ERROR),
    "hyphen for the em dash": (lambda m: f"{m['body']}\n{m['good'].replace(EM_DASH, '-')}", ERROR),
    "blank line among signatures": (lambda m: f"{m['body']}\n{m['witness']}\n{m['good']}", ERROR),
    "last line without a line feed": (lambda m: f"{m['body']}\n{m['good']}".removesuffix("\n"), ERROR),
    "size with a leading zero": (lambda m: m["unsigned"].replace("\nsize ", "\nsize 0"), ERROR),
    "size 2^64": (lambda m: _with_size(m["unsigned"], str(2**64)), ERROR),
    "size 2^64 - 1": (lambda m: _with_size(m["unsigned"], str(U64_MAX)), None),
    "checkpoint in upper case": (lambda m: _upper_checkpoint(m["unsigned"]), ERROR),
    "root in upper case": (lambda m: _upper_line(m["unsigned"], "root"), ERROR),
}


def _own_id(m) -> bytes:
    return base64.b64decode(m["good"].split(" ")[2])[:4]


def _with_size(text: str, size: str) -> str:
    lines = text.split("\n")
    return "\n".join(f"size {size}" if line.startswith("size ") else line for line in lines)


def _upper_line(text: str, keyword: str) -> str:
    lines = text.split("\n")
    return "\n".join(line.upper().replace(keyword.upper(), keyword, 1) if line.startswith(keyword + " ")
                     else line for line in lines)


def _upper_checkpoint(text: str) -> str:
    return _upper_line(text, "checkpoint")


def extension_digest(db, text: str):
    try:
        rows = db.fetchall("SELECT item, ok FROM ledger.verify_digest(%s)", (text,))
    except psycopg.Error as error:
        assert error.sqlstate == "22023", (error.sqlstate, str(error))
        assert error.diag.message_primary == "malformed digest" and error.diag.message_detail, error
        return ERROR
    return dict(rows)["signature"]


def offline_digest_signature(text: str):
    try:
        digest = ve.parse_digest(text.encode("utf-8"))
    except ve.MalformedInput:
        return ERROR
    return ve.check_signature(digest, allow_unsigned=True).ok


@pytest.mark.parametrize("case", DIGESTS)
def test_digest_cases_agree(material, case):
    make, expected = DIGESTS[case]
    text = make(material)
    assert (extension_digest(material["db"], text), offline_digest_signature(text)) == (expected, expected)


def test_a_carriage_return_is_explained(material):
    with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
        material["db"].execute("SELECT * FROM ledger.verify_digest(%s)",
                               (material["unsigned"].replace("\n", "\r\n"),))
    assert "line feed alone" in info.value.diag.message_detail
    assert "line endings" in info.value.diag.message_hint
    with pytest.raises(ve.MalformedInput, match="line feed alone"):
        ve.parse_digest(material["unsigned"].replace("\n", "\r\n").encode())


# ---- proofs -------------------------------------------------------------------------------------


def with_member(text: str, member: str, literal: str) -> str:
    """The proof's JSON text with `member`'s value written as `literal`, character for character."""
    proof = json.loads(text)
    proof[member] = "\0placeholder\0"
    return json.dumps(proof).replace(json.dumps("\0placeholder\0"), literal)


def with_extra(text: str, literal_members: str) -> str:
    """The proof's JSON text with members appended as written (`"seq": 5` written twice, say)."""
    return text.rstrip().removesuffix("}") + ", " + literal_members + "}"


H = "ab" * 32
DEEP = "[" * 126 + "]" * 126  # with the proof object, 127 levels: serde_json's limit

# name -> (proof text from the material's inclusion proof, expected outcome of both)
INCLUSIONS = {
    "as made": (lambda t: t, True),
    "seq 1e0": (lambda t: with_member(t, "seq", "5e0"), ERROR),
    "seq 5.0": (lambda t: with_member(t, "seq", "5.0"), ERROR),
    "seq -0": (lambda t: with_member(t, "seq", "-0"), ERROR),
    "seq -1": (lambda t: with_member(t, "seq", "-1"), ERROR),
    "seq 2^64": (lambda t: with_member(t, "seq", str(2**64)), ERROR),
    "seq 2^64 - 1": (lambda t: with_member(t, "seq", str(U64_MAX)), False),
    "seq 0": (lambda t: with_member(t, "seq", "0"), False),
    "seq beyond tree_size": (lambda t: with_member(t, "seq", "18"), False),
    "seq a string": (lambda t: with_member(t, "seq", '"5"'), ERROR),
    "seq true": (lambda t: with_member(t, "seq", "true"), ERROR),
    "tree_size 0": (lambda t: with_member(t, "tree_size", "0"), False),
    "tree_size -0": (lambda t: with_member(t, "tree_size", "-0"), ERROR),
    "tree_size 17E0": (lambda t: with_member(t, "tree_size", "17E0"), ERROR),
    "tree_size 2^64 - 1": (lambda t: with_member(t, "tree_size", str(U64_MAX)), False),
    "tree_size 2^64": (lambda t: with_member(t, "tree_size", str(2**64)), ERROR),
    "seq given twice": (lambda t: with_extra(t, '"seq": 5'), ERROR),
    "informative member twice": (lambda t: with_extra(t, '"note": 1, "note": 2'), ERROR),
    "nested member twice": (lambda t: with_extra(t, '"x": [{"a": 1, "a": 1}]'), ERROR),
    "path of 65": (lambda t: with_member(t, "path", json.dumps([H] * 65)), ERROR),
    "path of 64": (lambda t: with_member(t, "path", json.dumps([H] * 64)), False),
    "path one short": (lambda t: with_member(t, "path", json.dumps(json.loads(t)["path"][:-1])), False),
    "path entry in upper case": (lambda t: with_member(t, "path", json.dumps([H.upper()])), ERROR),
    "path entry a number": (lambda t: with_member(t, "path", "[1]"), ERROR),
    "informative NaN": (lambda t: with_extra(t, '"x": NaN'), ERROR),
    "informative lone surrogate": (lambda t: with_extra(t, '"x": "\\ud800"'), ERROR),
    "informative huge numbers": (lambda t: with_extra(t, '"x": 1e400, "y": -0, "z": ' + "9" * 5000), True),
    "nested 127 deep": (lambda t: with_extra(t, f'"x": {DEEP}'), True),
    "nested 128 deep": (lambda t: with_extra(t, f'"x": [{DEEP}]'), ERROR),
    "not an object": (lambda t: f"[{t}]", ERROR),
    "trailing text": (lambda t: t + " x", ERROR),
}

CONSISTENCIES = {
    "as made": (lambda t: t, True),
    "old_size 9e0": (lambda t: with_member(t, "old_size", "9e0"), ERROR),
    "old_size -0": (lambda t: with_member(t, "old_size", "-0"), ERROR),
    "new_size 17.0": (lambda t: with_member(t, "new_size", "17.0"), ERROR),
    "new_size 2^64": (lambda t: with_member(t, "new_size", str(2**64)), ERROR),
    "new_size 2^64 - 1": (lambda t: with_member(t, "new_size", str(U64_MAX)), False),
    "old_size beyond new_size": (lambda t: with_member(t, "old_size", "18"), False),
    "old_size 0": (lambda t: with_member(t, "old_size", "0"), False),
    "new_size given twice": (lambda t: with_extra(t, '"new_size": 17'), ERROR),
    "old_root in upper case": (lambda t: with_member(t, "old_root", json.dumps(json.loads(t)["old_root"].upper())),
                               ERROR),
    "path of 65": (lambda t: with_member(t, "path", json.dumps([H] * 65)), ERROR),
}


def extension_proof(db, query: str, params) -> object:
    try:
        return db.scalar(query, params)
    except psycopg.Error as error:
        assert error.sqlstate == "22023", (error.sqlstate, str(error))
        assert error.diag.message_primary == "malformed proof" and error.diag.message_detail, error
        return ERROR


def offline_outcome(check) -> object:
    try:
        return check()[0]
    except ve.MalformedInput:
        return ERROR


@pytest.mark.parametrize("case", INCLUSIONS)
def test_inclusion_cases_agree(material, case):
    make, expected = INCLUSIONS[case]
    m, text = material, INCLUSIONS[case][0](material["inclusion"])
    record, root = m["record"], m["root"]
    got = {
        "extension": extension_proof(m["db"], "SELECT ledger.verify_inclusion(%s, %s::text, %s)",
                                     (record, text, root)),
        "extension, sized": extension_proof(m["db"], "SELECT ledger.verify_inclusion(%s, %s::text, %s, 17)",
                                            (record, text, root)),
        "offline": offline_outcome(lambda: ve.check_inclusion_proof(
            text.encode(), bytes.fromhex(record), bytes.fromhex(root))),
        "offline, sized": offline_outcome(lambda: ve.check_inclusion_proof(
            text.encode(), bytes.fromhex(record), bytes.fromhex(root), 17)),
    }
    assert got == dict.fromkeys(got, expected)


@pytest.mark.parametrize("case", CONSISTENCIES)
def test_consistency_cases_agree(material, case):
    make, expected = CONSISTENCIES[case]
    m, text = material, make(material["consistency"])
    proof = json.loads(material["consistency"])
    between = (9, proof["old_root"], 17, proof["new_root"])
    got = {
        "extension": extension_proof(m["db"], "SELECT ledger.verify_consistency(%s::text)", (text,)),
        "extension, between": extension_proof(
            m["db"], "SELECT ledger.verify_consistency(%s::text, %s, %s, %s, %s)", (text, *between)),
        "offline": offline_outcome(lambda: ve.check_consistency_proof(text.encode())),
    }
    if case not in ("old_size beyond new_size", "old_size 0", "new_size 2^64 - 1"):
        # Relabelled sizes are not the trusted pair: false between, as when the path is wrong.
        got["offline, between"] = offline_outcome(lambda: ve.check_consistency_proof(
            text.encode(), (9, bytes.fromhex(between[1]), 17, bytes.fromhex(between[3]))))
    assert got == dict.fromkeys(got, expected)


def test_the_command_line_agrees(material):
    """The same through verify_export.py's exit status (0 valid, 1 invalid, 2 malformed)."""
    m = material
    for case in ("as made", "seq 0", "seq -0", "seq given twice", "seq 2^64 - 1"):
        make, expected = INCLUSIONS[case]
        status = offline_proof("inclusion", make(m["inclusion"]), m["record"], m["root"])
        assert status == {True: 0, False: 1, ERROR: 2}[expected], case


def test_jsonb_overloads_read_what_jsonb_kept(material):
    """FORMAT.md "Proofs": the jsonb overloads verify the jsonb's text, so what jsonb input
    normalised is no longer visible: `5e0` is stored as 5, `-0` as 0, and of a duplicated member
    jsonb keeps the last. `5.0` stays `5.0` and is refused."""
    m, db = material, material["db"]

    def via_jsonb(text):
        return extension_proof(db, "SELECT ledger.verify_inclusion(%s, %s::jsonb, %s)",
                               (m["record"], text, m["root"]))

    assert via_jsonb(with_member(m["inclusion"], "seq", "5e0")) is True
    assert via_jsonb(with_member(m["inclusion"], "tree_size", "17E0")) is True
    assert via_jsonb(with_extra(with_member(m["inclusion"], "seq", "6"), '"seq": 5')) is True
    assert via_jsonb(with_member(m["inclusion"], "seq", "5.0")) == ERROR
    assert via_jsonb(with_member(m["inclusion"], "seq", "0")) is False
