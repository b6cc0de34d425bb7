"""Merkle checkpoints, proofs and signed digests against the real server (docs/FORMAT.md "Merkle
trees", "Checkpoints", "Proofs", "Digests"): what they state, what they catch that ledger.verify cannot
(the newest records deleted, a whole chain rewritten and re-hashed), how malformed input is refused,
signing with ledger.signing_key_file, and the independent offline verifier (scripts/verify_export.py)
reading the database's own exports, digests and proofs.

Roots, frontiers and signatures are also recomputed here from the stored hashes with the offline
verifier's Merkle functions and PyPI's `cryptography`, so nothing is checked only against itself."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pwd
import threading
import uuid
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (Encoding, NoEncryption, PrivateFormat,
                                                          PublicFormat)
from psycopg import errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ledgertest import (backend_wait, offline_digest, offline_inclusion, offline_merkle_root,
                        offline_proof, offline_verify, set_signing_key_file, ve, wait_until)

A, B = str(uuid.UUID(int=0xA)), str(uuid.UUID(int=0xB))
CHECKPOINT_CHECKS = ["checkpoint_row", "signature", "key", "merkle_root", "previous", "definition"]
DIGEST_CHECKS = ["signature", "key", "checkpoint", "extends"]
EMPTY_ROOT = hashlib.sha3_256(b"").hexdigest()
POSTGRES = pwd.getpwnam("postgres")
EM_DASH = "\u2014"


# ---- the server's signing key -------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def no_signing_key_around_this_module(cluster):
    """ledger.signing_key_file is cluster-wide: none before this module's tests, none after them,
    whatever happened in between."""
    set_signing_key_file(cluster, None)
    try:
        yield
    finally:
        set_signing_key_file(cluster, None)


def new_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def key_pem(key) -> bytes:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def public_b64(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(raw_public(key)).decode()


class ServerKey:
    """Writes key files where the server's OS user can reach them and points
    ledger.signing_key_file at them; the fixture resets the setting after the test."""

    def __init__(self, cluster, db):
        self.cluster, self.db = cluster, db
        self.dir = Path(cluster.dir) / "keys"
        self.dir.mkdir(mode=0o700, exist_ok=True)
        os.chown(self.dir, POSTGRES.pw_uid, POSTGRES.pw_gid)

    def file(self, content: bytes, mode: int = 0o600, uid: int = POSTGRES.pw_uid,
             gid: int = POSTGRES.pw_gid) -> str:
        path = self.dir / f"{uuid.uuid4().hex}.pem"
        path.write_bytes(content)
        os.chown(path, uid, gid)
        os.chmod(path, mode)
        return str(path)

    def use(self, path: str | None) -> None:
        set_signing_key_file(self.cluster, path, [self.db.conn])

    def install(self, key: Ed25519PrivateKey) -> str:
        path = self.file(key_pem(key))
        self.use(path)
        assert self.db.scalar("SELECT ledger.public_key()") == public_b64(key)
        return path


@pytest.fixture
def server_key(cluster, db):
    sk = ServerKey(cluster, db)
    try:
        yield sk
    finally:
        sk.use(None)


# ---- helpers ------------------------------------------------------------------------------------


def append(db, chain: str, n: int, tag: str = "v") -> None:
    """n more records at the end of chain `chain` of ledger.records."""
    db.execute("INSERT INTO ledger.records (anchor_id, slot, kind, payload) "
               "SELECT %s, 's', 'k', jsonb_build_object('i', g, 'tag', %s::text) "
               "FROM generate_series(1, %s) g", (chain, tag, n))


def make_single_chain_table(db, name: str = "pay") -> None:
    db.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, amount numeric NOT NULL)")
    db.execute("SELECT ledger.enable(%s::regclass)", (name,))


def append_single(db, name: str, n: int) -> None:
    db.execute(f"INSERT INTO {name} SELECT (SELECT coalesce(max(id), 0) FROM {name}) + g, g * 1.5 "
               "FROM generate_series(1, %s) g", (n,))


def checkpoint(db, tbl: str = "ledger.records", chain: str | None = None) -> list[dict]:
    with db.conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM ledger.checkpoint(%s::regclass, %s) ORDER BY chain",
                           (tbl, chain)).fetchall()


def one_checkpoint(db, tbl: str = "ledger.records", chain: str | None = None) -> dict:
    rows = checkpoint(db, tbl, chain)
    assert len(rows) == 1, rows
    return rows[0]


def stored_checkpoint(db, cid) -> dict:
    with db.conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM ledger.checkpoints WHERE cid = %s", (cid,)).fetchone()


def verify_checkpoint(db, cid) -> dict:
    """ledger.verify_checkpoint as {check: (ok, detail)}, after checking the checks and their order."""
    rows = db.fetchall('SELECT item, ok, detail FROM ledger.verify_checkpoint(%s)', (cid,))
    assert [r[0] for r in rows] == CHECKPOINT_CHECKS, rows
    return {r[0]: (r[1], r[2]) for r in rows}


def verify_digest(db, text: str) -> dict:
    rows = db.fetchall('SELECT item, ok, detail FROM ledger.verify_digest(%s)', (text,))
    assert [r[0] for r in rows] == DIGEST_CHECKS, rows
    return {r[0]: (r[1], r[2]) for r in rows}


def oks(checks: dict) -> dict:
    return {name: ok for name, (ok, _) in checks.items()}


def digest(db, cid) -> str:
    return db.scalar("SELECT ledger.digest(%s)", (cid,))


def chain_hashes(db, chain: str | None, tbl: str = "ledger.records",
                 chain_col: str = "anchor_id") -> list[bytes]:
    """The stored record hashes of a chain, in seq order (chain None: a single-chain table)."""
    if chain is None:
        rows = db.fetchall(f"SELECT hash FROM {tbl} ORDER BY seq")
    else:
        rows = db.fetchall(f"SELECT hash FROM {tbl} WHERE {chain_col}::text = %s ORDER BY seq",
                           (chain,))
    return [bytes.fromhex(r[0]) for r in rows]


def mth(hashes: list[bytes]) -> str:
    return ve.merkle_tree_hash(hashes).hex()


def frontier(hashes: list[bytes]) -> bytes:
    """The roots of the perfect subtrees of the tree over `hashes`, largest first."""
    out, start, n = b"", 0, len(hashes)
    for bit in reversed(range(n.bit_length())):
        if n >> bit & 1:
            out += ve.merkle_tree_hash(hashes[start:start + (1 << bit)])
            start += 1 << bit
    return out


def tamper(db, table: str, *statements) -> None:
    """As a superuser: triggers disabled, the statements (SQL text or (SQL, params)), triggers
    enabled again, in one transaction."""
    with db.conn.transaction():
        db.execute(f"ALTER TABLE {table} DISABLE TRIGGER ALL")
        for statement in statements:
            query, params = (statement, None) if isinstance(statement, str) else statement
            db.execute(query, params)
        db.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER zz_ledger_append, ENABLE ALWAYS TRIGGER ledger_refuse_change, ENABLE ALWAYS TRIGGER ledger_refuse_truncate")


def digest_body(text: str) -> str:
    body, blank, _ = text.partition("\n\n")
    assert blank, text
    return body + "\n"


def signature_lines(text: str) -> list[str]:
    return [line for line in text.partition("\n\n")[2].split("\n") if line]


def key_id(public: bytes) -> bytes:
    return hashlib.sha256(b"ledger\n\x01" + public).digest()[:4]


def signed_note(body: str, key: Ed25519PrivateKey) -> str:
    blob = key_id(raw_public(key)) + key.sign(body.encode())
    return f"{body}\n{EM_DASH} ledger {base64.b64encode(blob).decode()}\n"


def with_line(text: str, keyword: str, value: str) -> str:
    """The digest with the body line `keyword ...` replaced by `keyword value` (signature kept)."""
    lines = text.split("\n")
    index = next(i for i, line in enumerate(lines) if line.startswith(keyword + " "))
    lines[index] = f"{keyword} {value}"
    return "\n".join(lines)


def flip_hex(h: str, at: int = 0) -> str:
    """The hex string with one nibble changed (so one byte of what it encodes)."""
    return h[:at] + ("1" if h[at] != "1" else "2") + h[at + 1:]


def flip_byte(blob: bytes, at: int = 0) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 0x01]) + blob[at + 1:]


def sqlstate_of(db, query: str, params=None) -> str | None:
    try:
        db.execute(query, params)
    except psycopg.Error as error:
        return error.sqlstate
    return None


# =================================================================================================
# 1. Checkpoints
# =================================================================================================


def test_checkpoint_of_one_chain_then_of_all_chains(db):
    append(db, A, 9)
    append(db, B, 3)
    lines = db.export_lines()

    first = one_checkpoint(db, chain=A)
    a_hashes = chain_hashes(db, A)
    root = mth(a_hashes)
    assert first["ledger"] == "ledger.records" and first["chain"] == A
    assert (first["range_start"], first["range_end"], first["record_count"]) == ("1", "9", 9)
    assert first["merkle_root"] == root
    assert first["merkle_root"] == db.scalar("SELECT ledger.merkle_root('ledger.records', %s, 1, 9)",
                                             (A,))
    assert first["merkle_root"] == offline_merkle_root(lines, A, 1, 9)
    assert first["prev_checkpoint"] is None
    assert first["public_key"] is None and first["sig"] is None
    assert bytes(first["frontier"]) == frontier(a_hashes)  # 9 = 8 + 1: two subtree roots
    assert stored_checkpoint(db, first["cid"]) == first

    # No chain: one checkpoint per chain; A's links to the previous one of A, B's is B's first.
    both = checkpoint(db)
    assert [row["chain"] for row in both] == sorted([A, B])
    by_chain = {row["chain"]: row for row in both}
    b_hashes = chain_hashes(db, B)
    assert by_chain[A]["prev_checkpoint"] == first["hash"]
    assert by_chain[A]["merkle_root"] == root and by_chain[A]["record_count"] == 9
    assert by_chain[B]["prev_checkpoint"] is None
    assert (by_chain[B]["range_start"], by_chain[B]["range_end"], by_chain[B]["record_count"]) == \
        ("1", "3", 3)
    assert by_chain[B]["merkle_root"] == mth(b_hashes) == offline_merkle_root(lines, B, 1, 3) == \
        db.scalar("SELECT ledger.merkle_root('ledger.records', %s, 1, 3)", (B,))

    # New records, then a second checkpoint of A: linked, covering the whole chain.
    append(db, A, 8, tag="w")
    second = one_checkpoint(db, chain=A)
    a_hashes = chain_hashes(db, A)
    assert second["prev_checkpoint"] == by_chain[A]["hash"]
    assert (second["range_start"], second["range_end"], second["record_count"]) == ("1", "17", 17)
    assert second["merkle_root"] == mth(a_hashes) == offline_merkle_root(db.export_lines(), A, 1, 17)
    assert second["merkle_root"] == db.scalar(
        "SELECT ledger.merkle_root('ledger.records', %s, 1, 17)", (A,))
    assert bytes(second["frontier"]) == frontier(a_hashes)

    for row in [first, *both, second]:
        checks = verify_checkpoint(db, row["cid"])
        assert oks(checks) == {"checkpoint_row": True, "signature": None, "key": None,
                               "merkle_root": True, "previous": True, "definition": True}, checks
        assert "unsigned" in checks["signature"][1]
    assert str(by_chain[A]["cid"]) in verify_checkpoint(db, second["cid"])["previous"][1]

    # The checkpoints are a ledger of their own, one chain, checked in and out of the database.
    assert db.scalar("SELECT count(*) FROM ledger.checkpoints") == 4
    assert db.fetchall("SELECT seq FROM ledger.checkpoints ORDER BY seq") == [(1,), (2,), (3,), (4,)]
    assert db.verify("ledger.checkpoints") == []
    assert offline_verify(db.export_lines("ledger.checkpoints")) == []


def test_checkpoint_of_single_chain_table_from_empty(db):
    make_single_chain_table(db)
    empty = one_checkpoint(db, "pay")
    assert empty["ledger"] == "public.pay" and empty["chain"] is None
    assert empty["record_count"] == 0 and empty["merkle_root"] == EMPTY_ROOT
    assert bytes(empty["frontier"]) == b""
    assert oks(verify_checkpoint(db, empty["cid"])) == {
        "checkpoint_row": True, "signature": None, "key": None, "merkle_root": True,
        "previous": True, "definition": True}
    assert db.scalar("SELECT ledger.merkle_root('pay', NULL, 1, 0)") == EMPTY_ROOT

    append_single(db, "pay", 5)
    cp = one_checkpoint(db, "pay")
    hashes = chain_hashes(db, None, "pay")
    lines = db.export_lines("pay")
    assert (cp["range_start"], cp["range_end"], cp["record_count"]) == ("1", "5", 5)
    assert cp["prev_checkpoint"] == empty["hash"]
    assert cp["merkle_root"] == mth(hashes) == offline_merkle_root(lines, None, 1, 5) == \
        db.scalar("SELECT ledger.merkle_root('pay', NULL, 1, 5)")
    # A sub-range, both ways.
    assert db.scalar("SELECT ledger.merkle_root('pay', NULL, 2, 4)") == mth(hashes[1:4]) == \
        offline_merkle_root(lines, None, 2, 4)
    assert oks(verify_checkpoint(db, cp["cid"])) == {
        "checkpoint_row": True, "signature": None, "key": None, "merkle_root": True,
        "previous": True, "definition": True}

    text = digest(db, cp["cid"])
    assert "\nchain none\n" in text and "\nkey none\n" in text
    assert signature_lines(text) == []
    assert oks(verify_digest(db, text)) == {"signature": None, "key": None, "checkpoint": True,
                                            "extends": True}
    status, out = offline_digest(lines, text, allow_unsigned=True)
    assert status == 0 and out["problems"] == []
    assert {k: ok for k, (ok, _) in out["digest"].items()} == {"signature": None, "key": None,
                                                                "extends": True, "definition": True}


def test_checkpoint_of_quoted_table_and_unusual_chain_value(db):
    """A table name that needs quoting and a chain value with quotes, a newline, a tab and non-ASCII
    text: the digest states them as JSON strings and the offline verifier still finds the chain."""
    chain = 'a"b\nc\tü \\ z'
    db.execute('CREATE TABLE "My Pay" (id int PRIMARY KEY, account text NOT NULL, amount int)')
    db.execute("""SELECT ledger.enable('"My Pay"', chain_by => 'account')""")
    db.execute('INSERT INTO "My Pay" SELECT g, %s, g FROM generate_series(1, 6) g', (chain,))
    db.execute('INSERT INTO "My Pay" VALUES (100, %s, 1)', ("other",))
    cp = one_checkpoint(db, '"My Pay"', chain)
    assert cp["ledger"] == 'public."My Pay"' and cp["chain"] == chain
    lines = db.export_lines('"My Pay"')
    hashes = chain_hashes(db, chain, '"My Pay"', "account")
    assert cp["merkle_root"] == mth(hashes) == offline_merkle_root(lines, chain, 1, 6)

    text = digest(db, cp["cid"])
    assert f"\nledger {json.dumps(cp['ledger'])}\n" in text
    assert f"\nchain {json.dumps(chain, ensure_ascii=False)}\n" in text
    assert oks(verify_digest(db, text)) == {"signature": None, "key": None, "checkpoint": True,
                                            "extends": True}
    status, out = offline_digest(lines, text, allow_unsigned=True)
    assert status == 0, out
    assert out["digest"]["extends"][0] is True


def test_checkpoints_are_append_only(db):
    append(db, A, 3)
    cp = one_checkpoint(db)
    for statement in ["UPDATE ledger.checkpoints SET merkle_root = repeat('0', 64)",
                      "UPDATE ledger.checkpoints SET sig = '\\x00'",
                      "DELETE FROM ledger.checkpoints",
                      "TRUNCATE ledger.checkpoints"]:
        with pytest.raises(errors.RestrictViolation) as info:
            db.execute(statement)
        assert info.value.sqlstate == "23001", statement
        assert "ledger.checkpoints" in str(info.value)
    assert stored_checkpoint(db, cp["cid"]) == cp
    assert db.verify("ledger.checkpoints") == []


@pytest.mark.parametrize("isolation", ["read committed", "repeatable read"])
def test_concurrent_checkpoints_of_one_chain_form_a_line(db, isolation):
    """A second checkpointer of the same chain waits for the first; under READ COMMITTED it then
    links to the first's checkpoint, under REPEATABLE READ (whose snapshot cannot see it) it fails
    with 40001 rather than fork the line."""
    append(db, A, 4)
    base = one_checkpoint(db, chain=A)
    append(db, A, 2)
    first, second = db.connect(), db.connect()
    for conn in (first, second):
        conn.execute(f"SET default_transaction_isolation = '{isolation}'")
        conn.commit()
    second.execute("SELECT 1")  # the second's transaction (and REPEATABLE READ snapshot) starts here
    query = "SELECT cid, hash, prev_checkpoint FROM ledger.checkpoint('ledger.records', %s)"
    mine = first.execute(query, (A,)).fetchone()
    outcome = {}

    def run():
        try:
            outcome["row"] = second.execute(query, (A,)).fetchone()
            second.commit()
        except psycopg.Error as error:
            outcome["error"] = error
            second.rollback()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_until(lambda: (backend_wait(db, second.info.backend_pid) or (None,))[0] == "Lock",
                   what="the second checkpointer to wait for the first")
    finally:
        first.commit()
        thread.join(30)
    assert mine[2] == base["hash"]
    if isolation == "read committed":
        assert "error" not in outcome, outcome
        assert outcome["row"][2] == mine[1]
    else:
        assert outcome.get("error") is not None and outcome["error"].sqlstate == "40001", outcome
    assert db.verify("ledger.checkpoints") == []
    cps = db.fetchall("SELECT cid FROM ledger.checkpoints ORDER BY seq")
    for (cid,) in cps:
        assert oks(verify_checkpoint(db, cid))["previous"] is True


def test_per_chain_checkpoint_names_the_chain_in_any_spelling(db):
    """A chain given in another spelling of the same value (upper-case uuid) is the same chain: its
    checkpoint links to the chain's previous one and states the chain as the export prints it."""
    append(db, A, 5)
    first = one_checkpoint(db, chain=A)
    append(db, A, 2, tag="w")
    second = one_checkpoint(db, chain=A.upper())
    assert second["record_count"] == 7
    assert second["prev_checkpoint"] == first["hash"], \
        "a checkpoint of the same chain spelled differently starts a new, unlinked line"
    assert second["chain"] == A, "the chain is stored as given, not as the chain value's text"
    status, out = offline_digest(db.export_lines(), digest(db, second["cid"]), allow_unsigned=True)
    assert out["digest"]["extends"][0] is True, out


# =================================================================================================
# 2. What checkpoints catch that ledger.verify cannot
# =================================================================================================


def test_deleting_the_newest_records_is_caught(db):
    append(db, A, 10)
    append(db, B, 4)
    cp = one_checkpoint(db, chain=A)
    text = digest(db, cp["cid"])
    before = db.export_lines()

    tamper(db, "ledger.records", f"DELETE FROM ledger.records WHERE anchor_id = '{A}' AND seq > 8")

    # The chain alone is still valid, in and out of the database.
    assert db.verify() == []
    after = db.export_lines()
    assert offline_verify(after) == []

    checks = verify_checkpoint(db, cp["cid"])
    assert checks["checkpoint_row"][0] is True
    assert checks["merkle_root"][0] is False
    assert "record 9" in checks["merkle_root"][1] and "missing" in checks["merkle_root"][1]
    assert "10 records" in checks["merkle_root"][1]

    dchecks = verify_digest(db, text)
    assert dchecks["checkpoint"][0] is True  # the checkpoint row itself is intact
    assert dchecks["extends"][0] is False
    assert "record 9" in dchecks["extends"][1] and "missing" in dchecks["extends"][1]

    # Proofs of that checkpoint are refused: its records no longer hash to its root.
    for query, params in [("SELECT ledger.inclusion_proof(%s, 1)", (cp["cid"],)),
                          ("SELECT ledger.consistency_proof(%s, %s)", (cp["cid"], cp["cid"]))]:
        assert sqlstate_of(db, query, params) == "XX001", query

    # The other chain is untouched.
    other = one_checkpoint(db, chain=B)
    assert oks(verify_checkpoint(db, other["cid"]))["merkle_root"] is True

    # Offline: the export from before extends the digest, the one from after does not.
    assert offline_digest(before, text, allow_unsigned=True)[0] == 0
    status, out = offline_digest(after, text, allow_unsigned=True)
    assert status == 1 and out["problems"] == []
    assert out["digest"]["extends"][0] is False and "9" in out["digest"]["extends"][1]


def test_checkpoint_after_newest_records_deleted_states_no_missing_records(db):
    """The next checkpoint after the newest records were deleted must not state (and sign) records
    that no longer exist: it is refused, or it states what is there."""
    append(db, A, 10)
    first = one_checkpoint(db, chain=A)
    tamper(db, "ledger.records", f"DELETE FROM ledger.records WHERE anchor_id = '{A}' AND seq > 8")
    assert db.verify() == []
    try:
        rows = checkpoint(db, chain=A)
    except psycopg.Error as error:
        assert error.sqlstate == "XX001", error
        return
    assert len(rows) == 1
    cp = rows[0]
    assert cp["record_count"] <= 8, (
        f"checkpoint {cp['cid']} states {cp['record_count']} records (range_end {cp['range_end']}, "
        f"root of checkpoint {first['cid']}), but the chain has 8: "
        f"{verify_checkpoint(db, cp['cid'])}")


def test_rewriting_and_rehashing_a_whole_chain_is_caught(db):
    append(db, A, 9)
    append(db, B, 3)
    cp = one_checkpoint(db, chain=A)
    text = digest(db, cp["cid"])

    # A superuser deletes the chain, then re-appends different values through the trigger: every
    # link and hash is valid again (with the chain's shared head off, if the server preloads the
    # library: the re-appended chain then starts at seq 1 again, not after the deleted head).
    tamper(db, "ledger.records", f"DELETE FROM ledger.records WHERE anchor_id = '{A}'")
    db.execute("SET ledger.shared_heads = off")
    append(db, A, 9, tag="rewritten")
    assert db.scalar("SELECT count(*) FROM ledger.records WHERE anchor_id = %s", (A,)) == 9
    assert db.verify() == []
    lines = db.export_lines()
    assert offline_verify(lines) == []
    new_root = mth(chain_hashes(db, A))
    assert new_root != cp["merkle_root"]

    checks = verify_checkpoint(db, cp["cid"])
    assert checks["checkpoint_row"][0] is True
    assert checks["merkle_root"][0] is False
    assert cp["merkle_root"] in checks["merkle_root"][1] and new_root in checks["merkle_root"][1]
    assert "rewritten" in checks["merkle_root"][1]

    dchecks = verify_digest(db, text)
    assert dchecks["checkpoint"][0] is True
    assert dchecks["extends"][0] is False
    assert cp["merkle_root"] in dchecks["extends"][1] and "rewritten" in dchecks["extends"][1]

    status, out = offline_digest(lines, text, allow_unsigned=True)
    assert status == 1 and out["problems"] == []
    assert out["digest"]["extends"][0] is False
    assert cp["merkle_root"] in out["digest"]["extends"][1]

    assert sqlstate_of(db, "SELECT ledger.inclusion_proof(%s, 1)", (cp["cid"],)) == "XX001"

    # A later checkpoint does not launder the rewrite: it still does not verify.
    append(db, A, 2, tag="later")
    later = one_checkpoint(db, chain=A)
    assert later["prev_checkpoint"] == cp["hash"]
    assert verify_checkpoint(db, later["cid"])["merkle_root"][0] is False


# column edit -> the checks of verify_checkpoint expected false besides checkpoint_row
CHECKPOINT_EDITS = {
    # The root and the size also go into the consistency check against the previous checkpoint.
    "merkle_root": ("merkle_root = repeat('ab', 32)", {"merkle_root", "previous"}),
    "record_count": ("record_count = 7, range_end = '7'", {"merkle_root", "previous"}),
    "prev_checkpoint": ("prev_checkpoint = repeat('cd', 32)", {"previous"}),
    "created_at": ("created_at = created_at - interval '1 day'", set()),
    "frontier": ("frontier = '\\x00'", set()),
}


@pytest.mark.parametrize("column", CHECKPOINT_EDITS)
def test_edited_checkpoint_row_is_caught(db, column):
    edit, also_false = CHECKPOINT_EDITS[column]
    append(db, A, 5)
    first = one_checkpoint(db, chain=A)
    append(db, A, 4)
    cp = one_checkpoint(db, chain=A)
    text = digest(db, cp["cid"])

    tamper(db, "ledger.checkpoints", f"UPDATE ledger.checkpoints SET {edit} WHERE cid = '{cp['cid']}'")

    checks = verify_checkpoint(db, cp["cid"])
    assert checks["checkpoint_row"] == (False, "the checkpoint row was edited after it was stored")
    assert {name for name, (ok, _) in checks.items() if ok is False} == {"checkpoint_row", *also_false}
    assert checks["signature"][0] is None  # unsigned
    assert db.verify("ledger.checkpoints") == [(None, cp["seq"], "hash_mismatch")]
    assert (None, cp["seq"], "hash_mismatch") in offline_verify(db.export_lines("ledger.checkpoints"))
    assert oks(verify_checkpoint(db, first["cid"]))["checkpoint_row"] is True

    dchecks = verify_digest(db, text)
    if column != "frontier":  # the frontier is not part of what a digest states
        assert dchecks["checkpoint"][0] is False
        assert "stored differently" in dchecks["checkpoint"][1]
    assert dchecks["extends"][0] is True  # the records are intact
    if column == "frontier":
        # The next checkpoint starts from the stored frontier, and refuses one that does not fit.
        append(db, A, 1)
        assert sqlstate_of(db, "SELECT * FROM ledger.checkpoint('ledger.records', %s)", (A,)) == "XX001"


def test_deleted_checkpoint_row_is_caught(db):
    append(db, A, 3)
    first = one_checkpoint(db, chain=A)
    append(db, A, 3)
    second = one_checkpoint(db, chain=A)
    text = digest(db, first["cid"])
    tamper(db, "ledger.checkpoints", f"DELETE FROM ledger.checkpoints WHERE cid = '{first['cid']}'")

    assert db.verify("ledger.checkpoints") == [(None, 2, "seq_gap"), (None, 2, "prev_hash_mismatch")]
    checks = verify_checkpoint(db, second["cid"])
    assert checks["previous"][0] is False and "no longer exists" in checks["previous"][1]
    assert checks["checkpoint_row"][0] is True and checks["merkle_root"][0] is True
    dchecks = verify_digest(db, text)
    assert dchecks["checkpoint"][0] is False and "no longer stored" in dchecks["checkpoint"][1]
    assert dchecks["extends"][0] is True


def test_forged_checkpoint_signatures_are_caught(db, server_key):
    server = new_key()
    server_key.install(server)
    other = new_key()
    append(db, A, 6)
    cps = [one_checkpoint(db, chain=A)]
    for _ in range(3):
        append(db, A, 1)
        cps.append(one_checkpoint(db, chain=A))
    for cp in cps:
        assert oks(verify_checkpoint(db, cp["cid"])) == dict.fromkeys(CHECKPOINT_CHECKS, True)
    bodies = [digest_body(digest(db, cp["cid"])) for cp in cps]

    flipped, foreign, no_sig, own_pair = cps
    tamper(db, "ledger.checkpoints",
           ("UPDATE ledger.checkpoints SET sig = %s WHERE cid = %s",
            (flip_byte(bytes(flipped["sig"]), 10), flipped["cid"])),
           ("UPDATE ledger.checkpoints SET sig = %s WHERE cid = %s",
            (other.sign(bodies[1].encode()), foreign["cid"])),
           ("UPDATE ledger.checkpoints SET sig = NULL WHERE cid = %s", (no_sig["cid"],)),
           # Another key and its valid signature over a body naming that key: self-consistent.
           ("UPDATE ledger.checkpoints SET public_key = %s, sig = %s WHERE cid = %s",
            (raw_public(other),
             other.sign(with_line(bodies[3], "key", public_b64(other)).encode()), own_pair["cid"])))

    for cp in (flipped, foreign, no_sig):
        checks = verify_checkpoint(db, cp["cid"])
        assert checks["signature"][0] is False, (cp["cid"], checks)
        assert checks["checkpoint_row"][0] is False
        assert checks["merkle_root"][0] is True
    assert "does not match" in verify_checkpoint(db, flipped["cid"])["signature"][1]
    assert "no valid signature" in verify_checkpoint(db, no_sig["cid"])["signature"][1]

    # A signature that verifies under a key the server never had: the row hash shows it, and so
    # does the key check, here and in a digest made of it.
    checks = verify_checkpoint(db, own_pair["cid"])
    assert checks["signature"][0] is True and checks["checkpoint_row"][0] is False
    assert checks["key"] == (False, "signed with another key than this server's")
    forged_digest = digest(db, own_pair["cid"])
    assert oks(verify_digest(db, forged_digest))["key"] is False

    seqs = {cp["seq"] for cp in cps}
    assert {(None, s, "hash_mismatch") for s in seqs} == set(db.verify("ledger.checkpoints"))


def test_checkpoint_resigned_and_rehashed_with_another_key_is_caught_by_the_key(db, server_key):
    """A superuser rewrites the chain, then makes the newest checkpoint state it, signs it with a key
    of its own and re-hashes the row: row hash, signature, root and link all agree; only the key is
    not the server's."""
    append(db, A, 5)
    early = one_checkpoint(db, chain=A)  # before the server had a key
    server_key.install(new_key())
    other = new_key()
    first = one_checkpoint(db, chain=A)
    append(db, A, 4)
    cp = one_checkpoint(db, chain=A)
    body = digest_body(digest(db, cp["cid"]))
    tamper(db, "ledger.records", f"DELETE FROM ledger.records WHERE anchor_id = '{A}' AND seq = 9")
    root8 = db.scalar("SELECT ledger.merkle_root('ledger.records', %s, 1, 8)", (A,))
    forged = with_line(with_line(with_line(body, "size", "8"), "root", root8), "key", public_b64(other))
    tamper(db, "ledger.checkpoints",
           ("UPDATE ledger.checkpoints SET record_count = 8, range_end = '8', merkle_root = %s, "
            "frontier = decode(%s, 'hex'), public_key = %s, sig = %s WHERE cid = %s",
            (root8, root8, raw_public(other), other.sign(forged.encode()), cp["cid"])),
           ("UPDATE ledger.checkpoints "
            "SET hash = ledger.sha3_256(ledger.canonical_bytes('ledger.checkpoints', NULL, seq)) "
            "WHERE cid = %s", (cp["cid"],)))
    assert db.verify() == [] and db.verify("ledger.checkpoints") == []
    checks = verify_checkpoint(db, cp["cid"])
    assert oks(checks) == {"checkpoint_row": True, "signature": True, "key": False,
                           "merkle_root": True, "previous": True, "definition": True}, checks
    assert oks(verify_checkpoint(db, first["cid"]))["key"] is True
    assert verify_checkpoint(db, early["cid"])["key"] == (
        False, "unsigned, although this server signs checkpoints")


def test_rehashed_checkpoint_row_is_caught_by_its_signature(db, server_key):
    """A superuser deletes the newest record, makes the newest checkpoint state the shorter chain and
    re-hashes that row: every hash and root agrees again, only the signature tells."""
    server_key.install(new_key())
    append(db, A, 9)
    cp = one_checkpoint(db, chain=A)
    text = digest(db, cp["cid"])
    tamper(db, "ledger.records", f"DELETE FROM ledger.records WHERE anchor_id = '{A}' AND seq = 9")
    tamper(db, "ledger.checkpoints",
           ("UPDATE ledger.checkpoints SET record_count = 8, range_end = '8', "
            "merkle_root = ledger.merkle_root('ledger.records', %s, 1, 8), "
            "frontier = decode(ledger.merkle_root('ledger.records', %s, 1, 8), 'hex') "
            "WHERE cid = %s", (A, A, cp["cid"])),
           ("UPDATE ledger.checkpoints "
            "SET hash = ledger.sha3_256(ledger.canonical_bytes('ledger.checkpoints', NULL, seq)) "
            "WHERE cid = %s", (cp["cid"],)))
    assert db.verify() == [] and db.verify("ledger.checkpoints") == []
    checks = verify_checkpoint(db, cp["cid"])
    assert oks(checks) == {"checkpoint_row": True, "signature": False, "key": True,
                           "merkle_root": True, "previous": True, "definition": True}, checks
    assert oks(verify_digest(db, text)) == {"signature": True, "key": True, "checkpoint": False,
                                            "extends": False}
    assert oks(verify_digest(db, digest(db, cp["cid"])))["signature"] is False


# Each changes one line of a signed digest; the signature line stays as it was.
DIGEST_LINE_CHANGES = {
    "size": lambda t, cp: with_line(t, "size", str(cp["record_count"] - 1)),
    "root": lambda t, cp: with_line(t, "root", flip_hex(cp["merkle_root"], 10)),
    "previous": lambda t, cp: with_line(t, "previous", flip_hex(cp["prev_checkpoint"], 63)),
    "previous_none": lambda t, cp: with_line(t, "previous", "none"),
    "time": lambda t, cp: t.replace("\ntime 2", "\ntime 1"),
    "checkpoint": lambda t, cp: with_line(t, "checkpoint", str(uuid.uuid4())),
    "chain": lambda t, cp: with_line(t, "chain", json.dumps(B)),
    "ledger": lambda t, cp: with_line(t, "ledger", json.dumps("public.records")),
    "key": lambda t, cp: with_line(t, "key", public_b64(new_key())),
}


def test_changed_digest_line_fails_its_signature(db, server_key):
    key = new_key()
    server_key.install(key)
    append(db, A, 4)
    one_checkpoint(db, chain=A)
    append(db, A, 5)
    cp = one_checkpoint(db, chain=A)
    text = digest(db, cp["cid"])
    assert oks(verify_digest(db, text)) == dict.fromkeys(DIGEST_CHECKS, True)

    lines = db.export_lines()
    failures = {}
    for name, change in DIGEST_LINE_CHANGES.items():
        changed = change(text, cp)
        assert changed != text and signature_lines(changed) == signature_lines(text), name
        # Offline: the signature fails.
        status, out = offline_digest(lines, changed, malformed_ok=True)
        if status != 2 and out["digest"]["signature"][0] is not False:
            failures[f"offline {name}"] = out["digest"]["signature"]
        try:
            checks = verify_digest(db, changed)
        except psycopg.Error as error:
            failures[name] = f"refused: {error.sqlstate} {error}"
            continue
        if checks["signature"][0] is not False:
            failures[name] = checks["signature"]
    assert failures == {}
    # The same size spelled differently ("size 09") is no longer the same text; FORMAT.md gives each
    # field one spelling, so it is a malformed digest, in and out of the database.
    respelled = text.replace("\nsize ", "\nsize 0", 1)
    assert sqlstate_of(db, "SELECT * FROM ledger.verify_digest(%s)", (respelled,)) == "22023"
    assert offline_digest(lines, respelled, malformed_ok=True)[0] == 2


def test_digest_with_key_line_changed_to_none_fails_its_signature(db, server_key):
    """`key none` with a signature line is not an unsigned digest (FORMAT.md: an unsigned digest has
    key none and no signature line); its signature cannot be valid."""
    server_key.install(new_key())
    append(db, A, 3)
    text = digest(db, one_checkpoint(db, chain=A)["cid"])
    changed = with_line(text, "key", "none")
    assert len(signature_lines(changed)) == 1
    status, out = offline_digest(db.export_lines(), changed)
    assert out["digest"]["signature"][0] is False  # the independent verifier says so
    checks = verify_digest(db, changed)
    assert checks["signature"][0] is False, checks


def test_digest_signs_the_definition_fingerprint(db, server_key):
    """The checkpoint row and its signed digest carry SHA3-256 of ledger.definition(tbl); a digest
    whose definition line is changed no longer verifies."""
    server_key.install(new_key())
    append(db, A, 3)
    cp = one_checkpoint(db, chain=A)
    fingerprint = hashlib.sha3_256(
        db.scalar("SELECT ledger.definition('ledger.records')").encode()).hexdigest()
    assert cp["definition"] == fingerprint
    text = digest(db, cp["cid"])
    assert f"\ndefinition {fingerprint}\n" in text
    assert verify_digest(db, text)["signature"][0] is True
    changed = with_line(text, "definition", "0" * 64)
    assert verify_digest(db, changed)["signature"][0] is False
    assert offline_digest(db.export_lines(), changed)[1]["digest"]["signature"][0] is False


def test_proofs_with_one_byte_changed_fail(db):
    append(db, A, 9)
    old = one_checkpoint(db, chain=A)
    append(db, A, 8)
    new = one_checkpoint(db, chain=A)
    record = db.scalar("SELECT hash FROM ledger.records WHERE anchor_id = %s AND seq = 5", (A,))
    inclusion = db.scalar("SELECT ledger.inclusion_proof(%s, 5)", (new["cid"],))
    consistency = db.scalar("SELECT ledger.consistency_proof(%s, %s)", (old["cid"], new["cid"]))
    root = new["merkle_root"]

    def included(record_hash, proof, root_hex):
        return db.scalar("SELECT ledger.verify_inclusion(%s, %s, %s)",
                         (record_hash, Jsonb(proof), root_hex))

    def consistent(proof):
        return db.scalar("SELECT ledger.verify_consistency(%s)", (Jsonb(proof),))

    assert included(record, inclusion, root) is True
    assert consistent(consistency) is True
    assert len(inclusion["path"]) == 5 and len(consistency["path"]) > 0

    for i, entry in enumerate(inclusion["path"]):
        for at in (0, 63):
            changed = {**inclusion, "path": [*inclusion["path"][:i], flip_hex(entry, at),
                                             *inclusion["path"][i + 1:]]}
            assert included(record, changed, root) is False, (i, at)
    assert included(flip_hex(record, 7), inclusion, root) is False
    assert included(record, inclusion, flip_hex(root, 40)) is False

    for i, entry in enumerate(consistency["path"]):
        changed = {**consistency, "path": [*consistency["path"][:i], flip_hex(entry, 33),
                                           *consistency["path"][i + 1:]]}
        assert consistent(changed) is False, i
    for member in ("old_root", "new_root"):
        assert consistent({**consistency, member: flip_hex(consistency[member], 20)}) is False, member


def test_consistency_proof_from_the_empty_checkpoint(db):
    make_single_chain_table(db)
    empty = one_checkpoint(db, "pay")
    append_single(db, "pay", 5)
    five = one_checkpoint(db, "pay")
    proof = db.scalar("SELECT ledger.consistency_proof(%s, %s)", (empty["cid"], five["cid"]))
    assert (proof["old_size"], proof["new_size"], proof["path"]) == (0, 5, [])
    assert proof["old_root"] == EMPTY_ROOT and proof["new_root"] == five["merkle_root"]
    assert db.scalar("SELECT ledger.verify_consistency(%s)", (Jsonb(proof),)) is True
    assert offline_proof("consistency", proof) == 0

    # FORMAT.md: from size 0 the old root is the empty tree's.
    changed = {**proof, "old_root": flip_hex(EMPTY_ROOT, 5)}
    assert offline_proof("consistency", changed) == 1
    assert db.scalar("SELECT ledger.verify_consistency(%s)", (Jsonb(changed),)) is False


def test_proofs_for_the_wrong_seq_or_size_fail(db):
    append(db, A, 9)
    nine = one_checkpoint(db, chain=A)
    append(db, A, 8)
    seventeen = one_checkpoint(db, chain=A)
    append(db, A, 1)
    eighteen = one_checkpoint(db, chain=A)
    hashes = {seq: h for seq, h in db.fetchall(
        "SELECT seq, hash FROM ledger.records WHERE anchor_id = %s", (A,))}
    proof = db.scalar("SELECT ledger.inclusion_proof(%s, 5)", (seventeen["cid"],))
    root17, root18 = seventeen["merkle_root"], eighteen["merkle_root"]

    def included(record_hash, p, root):
        return db.scalar("SELECT ledger.verify_inclusion(%s, %s, %s)",
                         (record_hash, Jsonb(p), root))

    assert included(hashes[5], proof, root17) is True
    assert included(hashes[6], proof, root17) is False  # another record
    for seq in (4, 6, 13, 0, 18):
        assert included(hashes[5], {**proof, "seq": seq}, root17) is False, seq
    for size in (9, 16, 5, 4, 0, 33):
        assert included(hashes[5], {**proof, "tree_size": size}, root17) is False, size
    # The size-17 path claimed for the tree of 18 (same shape for leaf 5): not against its real root.
    assert included(hashes[5], {**proof, "tree_size": 18}, root18) is False
    # ... nor against the root of the tree of 9.
    assert included(hashes[5], {**proof, "tree_size": 9}, nine["merkle_root"]) is False

    consistency = db.scalar("SELECT ledger.consistency_proof(%s, %s)", (nine["cid"], seventeen["cid"]))
    assert db.scalar("SELECT ledger.verify_consistency(%s)", (Jsonb(consistency),)) is True
    for old_size, new_size in [(8, 17), (10, 17), (9, 33), (9, 16), (9, 9), (17, 9), (0, 17)]:
        changed = {**consistency, "old_size": old_size, "new_size": new_size}
        assert db.scalar("SELECT ledger.verify_consistency(%s)", (Jsonb(changed),)) is False, \
            (old_size, new_size)
    # The roots of other checkpoints of the same chain.
    assert db.scalar("SELECT ledger.verify_consistency(%s)", (Jsonb(
        {**consistency, "new_size": 18, "new_root": root18}),)) is False


def test_a_relabelled_size_is_caught_against_the_checkpoint(db):
    """An RFC 9162 path does not fix the tree size: relabelled with another size of the same shape,
    a proof still verifies against the root alone. Verified against the (size, root) pair a
    checkpoint or digest states, every relabelling fails, and so does the offline check."""
    append(db, A, 9)
    nine = one_checkpoint(db, chain=A)
    append(db, A, 8)
    seventeen = one_checkpoint(db, chain=A)
    record5 = db.scalar("SELECT hash FROM ledger.records WHERE anchor_id = %s AND seq = 5", (A,))
    proof = db.scalar("SELECT ledger.inclusion_proof(%s, 5)", (seventeen["cid"],))
    root17, size17 = seventeen["merkle_root"], seventeen["record_count"]

    def included(p, *bound):
        args = ", %s" * len(bound)
        return db.scalar(f"SELECT ledger.verify_inclusion(%s, %s, %s{args})", (record5, Jsonb(p), root17, *bound))

    same_shape = [size for size in range(1, 40) if included({**proof, "tree_size": size})]
    assert 17 in same_shape and len(same_shape) > 1, same_shape  # the RFC property, shown
    assert included(proof, size17) is True
    for size in same_shape:
        assert included({**proof, "tree_size": size}, size17) is (size == 17), size
        status, out = offline_inclusion(proof | {"tree_size": size}, record5, root17, tree_size=size17)
        assert status == (0 if size == 17 else 1) and ("not 17" in out) == (size != 17), (size, out)

    consistency = db.scalar("SELECT ledger.consistency_proof(%s, %s)", (nine["cid"], seventeen["cid"]))
    pairs = (nine["record_count"], nine["merkle_root"], size17, root17)

    def consistent(p):
        return db.scalar("SELECT ledger.verify_consistency(%s, %s, %s, %s, %s)", (Jsonb(p), *pairs))

    relabelled = [size for size in range(1, 40)
                  if db.scalar("SELECT ledger.verify_consistency(%s)", (Jsonb({**consistency, "new_size": size}),))]
    assert 17 in relabelled and len(relabelled) > 1, relabelled
    assert consistent(consistency) is True
    for size in relabelled:
        assert consistent({**consistency, "new_size": size}) is (size == 17), size
    assert consistent({**consistency, "old_root": root17}) is False
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        db.scalar("SELECT ledger.verify_inclusion(%s, %s, %s, -1)", (record5, Jsonb(proof), root17))


def test_digest_signed_by_another_key(db, server_key):
    server_key.install(new_key())
    append(db, A, 4)
    cp = one_checkpoint(db, chain=A)
    text = digest(db, cp["cid"])

    other = new_key()
    forged = signed_note(with_line(digest_body(text), "key", public_b64(other)), other)
    checks = verify_digest(db, forged)
    assert checks["signature"][0] is True  # valid under the digest's own key...
    assert checks["key"] == (False, "signed with another key than this server's")  # ...which is not ours
    assert checks["checkpoint"][0] is False  # the row states the server's key
    assert checks["extends"][0] is True

    status, out = offline_digest(db.export_lines(), forged, public_key=server_key.db.scalar(
        "SELECT ledger.public_key()"))
    assert status == 1
    assert out["digest"]["signature"][0] is True and out["digest"]["key"][0] is False


# =================================================================================================
# 3. Malformed input
# =================================================================================================


@pytest.fixture(scope="module")
def fixtures_db(module_db):
    """Two chains of ledger.records and a single-chain table, with checkpoints, for error cases."""
    db = module_db
    append(db, A, 9)
    append(db, B, 3)
    make_single_chain_table(db)
    append_single(db, "pay", 4)
    a9 = one_checkpoint(db, chain=A)
    append(db, A, 8)
    a17 = one_checkpoint(db, chain=A)
    b3 = one_checkpoint(db, chain=B)
    pay = one_checkpoint(db, "pay")
    inclusion = db.scalar("SELECT ledger.inclusion_proof(%s, 5)", (a17["cid"],))
    consistency = db.scalar("SELECT ledger.consistency_proof(%s, %s)", (a9["cid"], a17["cid"]))
    record = db.scalar("SELECT hash FROM ledger.records WHERE anchor_id = %s AND seq = 5", (A,))
    text = digest(db, a17["cid"])
    return {"db": db, "a9": a9, "a17": a17, "b3": b3, "pay": pay, "inclusion": inclusion,
            "consistency": consistency, "record": record, "root": a17["merkle_root"],
            "digest": text}


H = "ab" * 32  # a well-formed hash
PATH65 = [H] * 65
PATH64 = [H] * 64


def _inclusion(f, **changes):
    return ("SELECT ledger.verify_inclusion(%s, %s, %s)",
            (f["record"], Jsonb({**f["inclusion"], **changes}), f["root"]))


def _inclusion_raw(f, proof):
    return ("SELECT ledger.verify_inclusion(%s, %s::jsonb, %s)", (f["record"], proof, f["root"]))


def _consistency(f, drop=(), **changes):
    proof = {k: v for k, v in {**f["consistency"], **changes}.items() if k not in drop}
    return "SELECT ledger.verify_consistency(%s)", (Jsonb(proof),)


def _verify_digest(text):
    return 'SELECT * FROM ledger.verify_digest(%s)', (text,)


def _digest_without(f, keyword):
    lines = f["digest"].split("\n")
    return "\n".join(line for line in lines if not line.startswith(keyword + " "))


NO_CID = str(uuid.UUID(int=0xDEAD))

# name -> (query builder over the fixtures, expected SQLSTATE(s))
MALFORMED = {
    # hashes that are not 64 lower-case hex digits: 22P02
    "inclusion_record_hash_not_hex": (lambda f: ("SELECT ledger.verify_inclusion('xyz', %s, %s)",
                                                 (Jsonb(f["inclusion"]), f["root"])), "22P02"),
    "inclusion_record_hash_upper_case": (lambda f: ("SELECT ledger.verify_inclusion(%s, %s, %s)",
                                                    (f["record"].upper(), Jsonb(f["inclusion"]),
                                                     f["root"])), "22P02"),
    "inclusion_record_hash_63_digits": (lambda f: ("SELECT ledger.verify_inclusion(%s, %s, %s)",
                                                   (f["record"][:63], Jsonb(f["inclusion"]),
                                                    f["root"])), "22P02"),
    "inclusion_root_65_digits": (lambda f: ("SELECT ledger.verify_inclusion(%s, %s, %s)",
                                            (f["record"], Jsonb(f["inclusion"]), f["root"] + "0")),
                                 "22P02"),
    # ... but inside a proof they make a malformed proof: 22023 (FORMAT.md "Proofs")
    "inclusion_path_entry_not_hex": (lambda f: _inclusion(f, path=["zz" * 32]), "22023"),
    "inclusion_path_entry_short": (lambda f: _inclusion(f, path=[H[:62]]), "22023"),
    "consistency_old_root_not_hex": (lambda f: _consistency(f, old_root="g" * 64), "22023"),
    "consistency_path_entry_upper_case": (lambda f: _consistency(f, path=[H.upper()]), "22023"),
    # the wrong JSON shape: 22023
    "inclusion_array": (lambda f: _inclusion_raw(f, "[1, 2]"), "22023"),
    "inclusion_string": (lambda f: _inclusion_raw(f, '"inclusion"'), "22023"),
    "inclusion_null_json": (lambda f: _inclusion_raw(f, "null"), "22023"),
    "inclusion_no_type": (lambda f: _inclusion_raw(f, '{"seq": 1, "tree_size": 1, "path": []}'),
                          "22023"),
    "inclusion_of_type_consistency": (lambda f: ("SELECT ledger.verify_inclusion(%s, %s, %s)",
                                                 (f["record"], Jsonb(f["consistency"]), f["root"])),
                                      "22023"),
    "inclusion_no_seq": (lambda f: _inclusion_raw(f, '{"type": "inclusion", "tree_size": 1, '
                                                     '"path": []}'), "22023"),
    "inclusion_seq_string": (lambda f: _inclusion(f, seq="5"), "22023"),
    "inclusion_seq_negative": (lambda f: _inclusion(f, seq=-5), "22023"),
    "inclusion_seq_fraction": (lambda f: _inclusion(f, seq=5.5), "22023"),
    "inclusion_seq_beyond_u64": (lambda f: _inclusion(f, seq=2 ** 64), "22023"),
    "inclusion_tree_size_null": (lambda f: _inclusion(f, tree_size=None), "22023"),
    "inclusion_path_object": (lambda f: _inclusion(f, path={"0": H}), "22023"),
    "inclusion_path_string": (lambda f: _inclusion(f, path=H), "22023"),
    "inclusion_path_entry_number": (lambda f: _inclusion(f, path=[1]), "22023"),
    "inclusion_path_entry_list": (lambda f: _inclusion(f, path=[[H]]), "22023"),
    "consistency_array": (lambda f: ("SELECT ledger.verify_consistency('[1, 2]')", None), "22023"),
    "consistency_of_type_inclusion": (lambda f: ("SELECT ledger.verify_consistency(%s)",
                                                 (Jsonb(f["inclusion"]),)), "22023"),
    "consistency_no_old_root": (lambda f: _consistency(f, drop=("old_root",)), "22023"),
    "consistency_old_root_number": (lambda f: _consistency(f, old_root=7), "22023"),
    "consistency_new_size_negative": (lambda f: _consistency(f, new_size=-1), "22023"),
    "consistency_old_size_string": (lambda f: _consistency(f, old_size="9"), "22023"),
    "consistency_no_path": (lambda f: _consistency(f, drop=("path",)), "22023"),
    # a path too long: 22023
    "inclusion_path_65": (lambda f: _inclusion(f, path=PATH65), "22023"),
    "consistency_path_65": (lambda f: _consistency(f, path=PATH65), "22023"),
    # malformed digests: 22023
    "digest_not_a_digest": (lambda f: _verify_digest("not a digest"), "22023"),
    "digest_empty": (lambda f: _verify_digest(""), "22023"),
    "digest_first_line": (lambda f: _verify_digest(f["digest"].replace("ledger-checkpoint/v1",
                                                                       "ledger-checkpoint/v2")),
                          "22023"),
    "digest_missing_previous_line": (lambda f: _verify_digest(_digest_without(f, "previous")),
                                     "22023"),
    "digest_missing_key_line": (lambda f: _verify_digest(_digest_without(f, "key")), "22023"),
    "digest_lines_swapped": (lambda f: _verify_digest(f["digest"].replace(
        "\nsize ", "\nSIZE ").replace("\nroot ", "\nsize ").replace("\nSIZE ", "\nroot ")), "22023"),
    "digest_extra_body_line": (lambda f: _verify_digest(f["digest"].replace(
        "\nkey none\n", "\nkey none\nextra line\n")), "22023"),
    "digest_size_not_a_number": (lambda f: _verify_digest(with_line(f["digest"], "size", "ten")),
                                 "22023"),
    "digest_size_negative": (lambda f: _verify_digest(with_line(f["digest"], "size", "-1")), "22023"),
    "digest_ledger_not_json": (lambda f: _verify_digest(with_line(f["digest"], "ledger",
                                                                  "ledger.records")), "22023"),
    "digest_key_not_base64": (lambda f: _verify_digest(with_line(f["digest"], "key", "%%%%")),
                              "22023"),
    "digest_key_31_octets": (lambda f: _verify_digest(with_line(
        f["digest"], "key", base64.b64encode(b"k" * 31).decode())), "22023"),
    "digest_key_33_octets": (lambda f: _verify_digest(with_line(
        f["digest"], "key", base64.b64encode(b"k" * 33).decode())), "22023"),
    "digest_signature_line_without_dash": (lambda f: _verify_digest(
        f["digest"] + "- ledger " + base64.b64encode(b"s" * 68).decode() + "\n"), "22023"),
    "digest_signature_not_base64": (lambda f: _verify_digest(
        f["digest"] + EM_DASH + " ledger !!notbase64!!\n"), "22023"),
    "digest_no_blank_line": (lambda f: _verify_digest(f["digest"].rstrip("\n")), "22023"),
    # A hash inside a digest: a malformed digest too.
    "digest_root_not_hex": (lambda f: _verify_digest(with_line(f["digest"], "root", "xyz")), "22023"),
    # unknown checkpoints: 42704
    "verify_checkpoint_unknown": (lambda f: ("SELECT * FROM ledger.verify_checkpoint(%s)", (NO_CID,)),
                                  "42704"),
    "inclusion_proof_unknown": (lambda f: ("SELECT ledger.inclusion_proof(%s, 1)", (NO_CID,)),
                                "42704"),
    "consistency_proof_unknown_old": (lambda f: ("SELECT ledger.consistency_proof(%s, %s)",
                                                 (NO_CID, f["a17"]["cid"])), "42704"),
    "consistency_proof_unknown_new": (lambda f: ("SELECT ledger.consistency_proof(%s, %s)",
                                                 (f["a9"]["cid"], NO_CID)), "42704"),
    "digest_unknown": (lambda f: ("SELECT ledger.digest(%s)", (NO_CID,)), "42704"),
    "checkpoint_unknown_chain": (lambda f: ("SELECT * FROM ledger.checkpoint('ledger.records', %s)",
                                            (str(uuid.UUID(int=0xC)),)), "42704"),
    "checkpoint_not_a_ledger": (lambda f: ("SELECT * FROM ledger.checkpoint('ledger.ledgers')", None),
                                "42704"),
    # arguments out of range or for another chain: 22023
    "consistency_proof_across_chains": (lambda f: ("SELECT ledger.consistency_proof(%s, %s)",
                                                   (f["b3"]["cid"], f["a17"]["cid"])), "22023"),
    "consistency_proof_across_ledgers": (lambda f: ("SELECT ledger.consistency_proof(%s, %s)",
                                                    (f["pay"]["cid"], f["a17"]["cid"])), "22023"),
    "consistency_proof_new_before_old": (lambda f: ("SELECT ledger.consistency_proof(%s, %s)",
                                                    (f["a17"]["cid"], f["a9"]["cid"])), "22023"),
    "inclusion_proof_seq_0": (lambda f: ("SELECT ledger.inclusion_proof(%s, 0)", (f["a9"]["cid"],)),
                              "22023"),
    "inclusion_proof_seq_past_size": (lambda f: ("SELECT ledger.inclusion_proof(%s, 10)",
                                                 (f["a9"]["cid"],)), "22023"),
    "merkle_root_from_0": (lambda f: ("SELECT ledger.merkle_root('ledger.records', %s, 0, 3)", (A,)),
                           "22023"),
    "merkle_root_to_before_from": (lambda f: ("SELECT ledger.merkle_root('ledger.records', %s, 5, 3)",
                                              (A,)), "22023"),
    "merkle_root_chain_of_single_chain": (lambda f: ("SELECT ledger.merkle_root('pay', 'x', 1, 2)",
                                                     None), "22023"),
    "merkle_root_no_chain_of_multi_chain": (lambda f: (
        "SELECT ledger.merkle_root('ledger.records', NULL, 1, 2)", None), "22023"),
    "checkpoint_chain_of_single_chain": (lambda f: ("SELECT * FROM ledger.checkpoint('pay', 'x')",
                                                    None), "22023"),
    # records the chain does not have (yet): an argument out of range, however far
    "merkle_root_past_the_head": (lambda f: ("SELECT ledger.merkle_root('ledger.records', %s, 1, 18)",
                                             (A,)), "22023"),
    "merkle_root_far_past_the_head": (lambda f: (
        "SELECT ledger.merkle_root('ledger.records', %s, 1, 1000000000000)", (A,)), "22023"),
    "merkle_root_to_max": (lambda f: (
        "SELECT ledger.merkle_root('ledger.records', %s, 1, 9223372036854775807)", (A,)), "22023"),
    # NULL where a value is needed, in functions that take NULL elsewhere: 22004
    "merkle_root_null_table": (lambda f: ("SELECT ledger.merkle_root(NULL, %s, 1, 2)", (A,)), "22004"),
    "merkle_root_null_from": (lambda f: ("SELECT ledger.merkle_root('ledger.records', %s, NULL, 2)",
                                         (A,)), "22004"),
    "merkle_root_null_to": (lambda f: ("SELECT ledger.merkle_root('ledger.records', %s, 1, NULL)",
                                       (A,)), "22004"),
    "checkpoint_null_table": (lambda f: ("SELECT * FROM ledger.checkpoint(NULL)", None), "22004"),
    "verify_null_table": (lambda f: ("SELECT * FROM ledger.verify(NULL)", None), "22004"),
    "canonical_bytes_null_seq": (lambda f: ("SELECT ledger.canonical_bytes('ledger.records', %s, NULL)",
                                            (A,)), "22004"),
    "enable_null_table": (lambda f: ("SELECT ledger.enable(NULL)", None), "22004"),
}


@pytest.mark.parametrize("size", [18, 10 ** 12, 2 ** 62, 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1])
def test_digest_of_a_longer_chain_than_stored_does_not_extend(fixtures_db, size):
    """A digest may state any size: checking it reads what the chain has, never allocates for what
    the digest claims, and reports that today's chain does not extend it."""
    db = fixtures_db["db"]
    checks = verify_digest(db, with_line(fixtures_db["digest"], "size", str(size)))
    assert checks["extends"][0] is False, checks
    assert checks["checkpoint"][0] is False
    assert db.scalar("SELECT 1") == 1  # the backend survived


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_input_is_refused(fixtures_db, case):
    build, expected = MALFORMED[case]
    expected = {expected} if isinstance(expected, str) else set(expected)
    db = fixtures_db["db"]
    query, params = build(fixtures_db)
    before = db.scalar("SELECT count(*) FROM ledger.checkpoints")
    try:
        result = db.fetchall(query, params)
    except psycopg.Error as error:
        assert error.sqlstate in expected, f"{error.sqlstate}: {error}"
        assert str(error).strip(), "an error with a message"
    else:
        pytest.fail(f"no error; returned {result!r}")
    assert db.scalar("SELECT count(*) FROM ledger.checkpoints") == before


def test_longest_path_is_not_an_error(fixtures_db):
    """64 hashes is the limit, not an error: such a proof is just not valid."""
    f, db = fixtures_db, fixtures_db["db"]
    assert db.scalar(*_inclusion(f, path=PATH64)) is False
    assert db.scalar(*_consistency(f, path=PATH64)) is False
    assert db.scalar(*_inclusion(f, seq=2 ** 64 - 1, tree_size=2 ** 64 - 1, path=PATH64)) is False
    assert db.scalar(*_consistency(f, old_size=2 ** 63, new_size=2 ** 64 - 1, path=PATH64)) is False


def test_proof_members_beyond_the_format_are_ignored(fixtures_db):
    f, db = fixtures_db, fixtures_db["db"]
    assert db.scalar(*_inclusion(f, checkpoint="x", ledger=None, root="not a root",
                                 record_hash=1, extra=[1, 2])) is True
    assert db.scalar(*_consistency(f, drop=("ledger", "chain", "old_checkpoint", "new_checkpoint"),
                                   note="x")) is True


def test_verify_functions_are_immutable_and_strict(fixtures_db):
    f, db = fixtures_db, fixtures_db["db"]
    rows = db.fetchall("SELECT proname, pg_get_function_identity_arguments(oid), provolatile, proisstrict, "
                       "proparallel FROM pg_proc WHERE pronamespace = 'ledger'::regnamespace "
                       "AND proname IN ('verify_inclusion', 'verify_consistency') ORDER BY 1, 2")
    # The proof as jsonb, or as its text (the jsonb overloads cast and call these); each also bound
    # to the sizes a checkpoint states.
    sized_consistency = "old_size bigint, old_root text, new_size bigint, new_root text"
    assert rows == [("verify_consistency", "proof jsonb", "i", True, "s"),
                    ("verify_consistency", f"proof jsonb, {sized_consistency}", "i", True, "s"),
                    ("verify_consistency", "proof text", "i", True, "s"),
                    ("verify_consistency", f"proof text, {sized_consistency}", "i", True, "s"),
                    ("verify_inclusion", "record_hash text, proof jsonb, root text", "i", True, "s"),
                    ("verify_inclusion", "record_hash text, proof jsonb, root text, tree_size bigint",
                     "i", True, "s"),
                    ("verify_inclusion", "record_hash text, proof text, root text", "i", True, "s"),
                    ("verify_inclusion", "record_hash text, proof text, root text, tree_size bigint",
                     "i", True, "s")]

    proof, record, root = Jsonb(f["inclusion"]), f["record"], f["root"]
    for args in [(None, proof, root), (record, None, root), (record, proof, None), (None, None, None)]:
        assert db.fetchone("SELECT ledger.verify_inclusion(%s, %s::jsonb, %s)", args) == (None,), args
    assert db.fetchone("SELECT ledger.verify_consistency(NULL)") == (None,)
    # Strict: a NULL argument wins over malformed others.
    assert db.scalar("SELECT ledger.verify_inclusion('xyz', NULL, 'xyz')") is None
    # Immutable: usable where PostgreSQL requires it, e.g. an index expression.
    db.execute("CREATE TEMP TABLE kept_proofs (record text, proof jsonb, root text)")
    db.execute("CREATE INDEX ON kept_proofs ((ledger.verify_inclusion(record, proof, root)))")
    db.execute("CREATE INDEX ON kept_proofs ((ledger.verify_consistency(proof))) "
               "WHERE proof->>'type' = 'consistency'")
    db.execute("INSERT INTO kept_proofs VALUES (%s, %s, %s), (NULL, NULL, NULL)", (record, proof, root))
    assert db.fetchall("SELECT ledger.verify_inclusion(record, proof, root) FROM kept_proofs "
                       "ORDER BY 1 NULLS LAST") == [(True,), (None,)]
    db.execute("DROP TABLE kept_proofs")


# =================================================================================================
# 4. Signing
# =================================================================================================


def test_signed_checkpoints_and_digests(db, server_key):
    assert db.scalar("SELECT ledger.public_key()") is None
    key = new_key()
    server_key.install(key)
    public = db.scalar("SELECT ledger.public_key()")
    assert base64.b64decode(public) == raw_public(key)

    append(db, A, 5)
    append(db, B, 2)
    first = checkpoint(db)
    append(db, A, 3)
    second = one_checkpoint(db, chain=A)
    for cp in [*first, second]:
        assert bytes(cp["public_key"]) == base64.b64decode(public)
        assert len(bytes(cp["sig"])) == 64
        checks = verify_checkpoint(db, cp["cid"])
        assert oks(checks) == dict.fromkeys(CHECKPOINT_CHECKS, True), checks

        text = digest(db, cp["cid"])
        body = digest_body(text)
        assert f"\nkey {public}\n" in body
        # The row's signature is Ed25519 over the digest body, checked independently here.
        key.public_key().verify(bytes(cp["sig"]), body.encode())
        (line,) = signature_lines(text)
        prefix, name, blob = line.split(" ")
        assert (prefix, name) == (EM_DASH, "ledger")
        blob = base64.b64decode(blob)
        assert blob[:4] == key_id(raw_public(key)) and blob[4:] == bytes(cp["sig"])
        assert oks(verify_digest(db, text)) == dict.fromkeys(DIGEST_CHECKS, True)
    assert second["prev_checkpoint"] == next(c for c in first if c["chain"] == A)["hash"]
    assert db.verify("ledger.checkpoints") == []


def test_changed_server_key(db, server_key):
    old_key, new = new_key(), new_key()
    server_key.install(old_key)
    append(db, A, 4)
    old_cp = one_checkpoint(db, chain=A)
    old_digest = digest(db, old_cp["cid"])
    assert oks(verify_digest(db, old_digest)) == dict.fromkeys(DIGEST_CHECKS, True)

    server_key.install(new)
    checks = verify_digest(db, old_digest)
    assert oks(checks) == {"signature": True, "key": False, "checkpoint": True, "extends": True}
    assert checks["key"][1] == "signed with another key than this server's"
    # The checkpoint itself is intact; only its key is no longer the server's (a rotation, or a
    # forgery: the auditor who knows which keys the server had decides).
    assert oks(verify_checkpoint(db, old_cp["cid"])) == {**dict.fromkeys(CHECKPOINT_CHECKS, True),
                                                         "key": False}

    append(db, A, 2)
    new_cp = one_checkpoint(db, chain=A)
    assert bytes(new_cp["public_key"]) == raw_public(new)
    assert new_cp["prev_checkpoint"] == old_cp["hash"]
    assert oks(verify_checkpoint(db, new_cp["cid"])) == dict.fromkeys(CHECKPOINT_CHECKS, True)
    assert oks(verify_digest(db, digest(db, new_cp["cid"]))) == dict.fromkeys(DIGEST_CHECKS, True)

    # Offline, the auditor decides which key to trust.
    lines = db.export_lines()
    assert offline_digest(lines, old_digest, public_key=public_b64(old_key))[0] == 0
    status, out = offline_digest(lines, old_digest, public_key=public_b64(new))
    assert status == 1 and out["digest"]["signature"][0] is True and out["digest"]["key"][0] is False

    # No key any more: checkpoints are unsigned, and there is no server key to compare with.
    server_key.use(None)
    assert db.scalar("SELECT ledger.public_key()") is None
    append(db, A, 1)
    unsigned = one_checkpoint(db, chain=A)
    assert unsigned["public_key"] is None and unsigned["sig"] is None
    assert unsigned["prev_checkpoint"] == new_cp["hash"]
    assert oks(verify_digest(db, old_digest)) == {"signature": True, "key": None, "checkpoint": True,
                                                  "extends": True}


def _ec_key_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


# name -> (content maker, mode, owner uid, group gid, usable?)
KEY_FILES = {
    "owner_0600": (lambda: key_pem(new_key()), 0o600, POSTGRES.pw_uid, POSTGRES.pw_gid, True),
    "root_owned_0640_group_postgres": (lambda: key_pem(new_key()), 0o640, 0, POSTGRES.pw_gid, True),
    "world_readable_0644": (lambda: key_pem(new_key()), 0o644, POSTGRES.pw_uid, POSTGRES.pw_gid,
                            False),
    "group_readable_0640": (lambda: key_pem(new_key()), 0o640, POSTGRES.pw_uid, POSTGRES.pw_gid,
                            False),
    "root_owned_0644": (lambda: key_pem(new_key()), 0o644, 0, POSTGRES.pw_gid, False),
    "root_owned_0600_unreadable": (lambda: key_pem(new_key()), 0o600, 0, 0, False),
    "not_a_key": (lambda: b"hello, this is not a key\n", 0o600, POSTGRES.pw_uid, POSTGRES.pw_gid,
                  False),
    "empty_file": (lambda: b"", 0o600, POSTGRES.pw_uid, POSTGRES.pw_gid, False),
    "ec_p256_key": (_ec_key_pem, 0o600, POSTGRES.pw_uid, POSTGRES.pw_gid, False),
    "missing": (None, 0o600, POSTGRES.pw_uid, POSTGRES.pw_gid, False),
}


@pytest.mark.parametrize("case", KEY_FILES)
def test_key_file_permissions_and_content(db, server_key, case):
    make, mode, uid, gid, usable = KEY_FILES[case]
    if make is None:
        path = str(server_key.dir / "no-such-key.pem")
    else:
        path = server_key.file(make(), mode, uid, gid)
    server_key.use(path)
    append(db, A, 3)
    if usable:
        cp = one_checkpoint(db, chain=A)
        assert bytes(cp["public_key"]) == base64.b64decode(db.scalar("SELECT ledger.public_key()"))
        assert oks(verify_checkpoint(db, cp["cid"])) == dict.fromkeys(CHECKPOINT_CHECKS, True)
        return
    for query in ["SELECT * FROM ledger.checkpoint()", "SELECT ledger.public_key()"]:
        with pytest.raises(psycopg.Error) as info:
            db.execute(query)
        assert info.value.sqlstate == "F0000", (query, info.value)
        assert path in str(info.value)
        assert info.value.diag.message_detail, "the detail says what is wrong with the file"
    if case in ("world_readable_0644", "group_readable_0640", "root_owned_0644"):
        assert oct(mode)[2:] in info.value.diag.message_detail
    assert db.scalar("SELECT count(*) FROM ledger.checkpoints") == 0


# =================================================================================================
# 5. The offline verifier on the database's own digests, exports and proofs
# =================================================================================================


def test_offline_signed_digest_against_exports(db, server_key):
    key = new_key()
    server_key.install(key)
    public = public_b64(key)
    append(db, A, 10)
    append(db, B, 5)
    cps = {cp["chain"]: cp for cp in checkpoint(db)}
    text_a, text_b = digest(db, cps[A]["cid"]), digest(db, cps[B]["cid"])
    lines = db.export_lines()

    for text in (text_a, text_b):
        status, out = offline_digest(lines, text, public_key=public)
        assert status == 0 and out["problems"] == []
        assert {k: ok for k, (ok, _) in out["digest"].items()} == {"signature": True, "key": True,
                                                                    "extends": True, "definition": True}
    # Without --public-key the key is not checked; with someone else's it fails.
    status, out = offline_digest(lines, text_a)
    assert status == 0 and out["digest"]["key"][0] is None
    status, out = offline_digest(lines, text_a, public_key=public_b64(new_key()))
    assert status == 1 and out["digest"]["key"][0] is False
    # A line changed: the signature fails offline as well.
    status, out = offline_digest(lines, with_line(text_a, "size", "9"), public_key=public)
    assert status == 1 and out["digest"]["signature"][0] is False
    # The digest as psql -At writes it (one more newline) is the same digest.
    assert offline_digest(lines, text_a + "\n", public_key=public)[0] == 0

    # Unsigned digests are refused unless --allow-unsigned.
    server_key.use(None)
    unsigned = digest(db, one_checkpoint(db, chain=A)["cid"])
    status, out = offline_digest(lines, unsigned)
    assert status == 1 and out["digest"]["signature"][0] is False
    assert offline_digest(lines, unsigned, allow_unsigned=True)[0] == 0

    # The newest records deleted: a new export no longer extends the signed digest.
    tamper(db, "ledger.records", f"DELETE FROM ledger.records WHERE anchor_id = '{A}' AND seq > 7")
    deleted = db.export_lines()
    assert offline_verify(deleted) == []
    status, out = offline_digest(deleted, text_a, public_key=public)
    assert status == 1 and out["problems"] == []
    assert out["digest"]["signature"][0] is True and out["digest"]["extends"][0] is False
    assert offline_digest(deleted, text_b, public_key=public)[0] == 0  # chain B is intact

    # The chain rewritten and re-hashed (as long as before): still not the digest's records. (With
    # the shared head off, if the server preloads the library, so that the chain starts again at 1.)
    tamper(db, "ledger.records", f"DELETE FROM ledger.records WHERE anchor_id = '{A}'")
    db.execute("SET ledger.shared_heads = off")
    append(db, A, 10, tag="rewritten")
    rewritten = db.export_lines()
    assert offline_verify(rewritten) == []
    status, out = offline_digest(rewritten, text_a, public_key=public)
    assert status == 1 and out["problems"] == []
    assert out["digest"]["extends"][0] is False
    assert cps[A]["merkle_root"] in out["digest"]["extends"][1]


def test_offline_proofs(db):
    append(db, A, 9)
    old = one_checkpoint(db, chain=A)
    append(db, A, 8)
    new = one_checkpoint(db, chain=A)
    root = new["merkle_root"]
    hashes = {seq: h for seq, h in db.fetchall(
        "SELECT seq, hash FROM ledger.records WHERE anchor_id = %s", (A,))}

    for seq in (1, 5, 16, 17):
        # The proof as the server wrote it, text for text.
        text = db.scalar("SELECT ledger.inclusion_proof(%s, %s)::text", (new["cid"], seq))
        proof = json.loads(text)
        assert offline_proof("inclusion", text, hashes[seq], root) == 0, seq
        assert offline_proof("inclusion", text, hashes[seq % 17 + 1], root) == 1, seq
        if proof["path"]:
            changed = {**proof, "path": [flip_hex(proof["path"][0], 11), *proof["path"][1:]]}
            assert offline_proof("inclusion", changed, hashes[seq], root) == 1, seq
        assert offline_proof("inclusion", {**proof, "seq": seq % 17 + 1}, hashes[seq], root) == 1
        assert offline_proof("inclusion", text, hashes[seq], flip_hex(root, 0)) == 1

    text = db.scalar("SELECT ledger.consistency_proof(%s, %s)::text", (old["cid"], new["cid"]))
    proof = json.loads(text)
    assert offline_proof("consistency", text) == 0
    for i in range(len(proof["path"])):
        changed = {**proof, "path": [*proof["path"][:i], flip_hex(proof["path"][i], 62),
                                     *proof["path"][i + 1:]]}
        assert offline_proof("consistency", changed) == 1, i
    assert offline_proof("consistency", {**proof, "old_root": flip_hex(proof["old_root"])}) == 1
    assert offline_proof("consistency", {**proof, "new_size": 33}) == 1

    inclusion = db.scalar("SELECT ledger.inclusion_proof(%s, 5)::text", (new["cid"],))
    for garbage in [b"not json", b"", b"\xff\xfe", b"[1, 2]", json.dumps({"type": "inclusion"}),
                    json.dumps({**json.loads(inclusion), "path": ["zz"]}),
                    json.dumps({**json.loads(inclusion), "path": [H] * 65}),
                    json.dumps({**json.loads(inclusion), "seq": -1})]:
        assert offline_proof("inclusion", garbage, hashes[5], root) == 2, garbage
        assert offline_proof("consistency", garbage) == 2, garbage
    assert offline_proof("consistency", inclusion) == 2  # the wrong type
    assert offline_proof("inclusion", inclusion, "xyz", root) == 2
    assert offline_proof("inclusion", inclusion, hashes[5], root.upper()) == 2


# =================================================================================================
# 6. Incremental checkpoints (the frontier) agree with full recomputation
# =================================================================================================

SIZES = [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 100]


def _check_incremental(db, cp, hashes, tbl, chain, previous, lines, errors_found):
    n = len(hashes)
    expected = mth(hashes)
    full = db.scalar("SELECT ledger.merkle_root(%s::regclass, %s, 1, %s)", (tbl, chain, n))
    got = (cp["record_count"], cp["range_end"], cp["merkle_root"], bytes(cp["frontier"]))
    want = (n, str(n), expected, frontier(hashes))
    if got != want or full != expected:
        errors_found.append((chain, n, got, want, full))
    if previous is not None:
        if cp["prev_checkpoint"] != previous["hash"]:
            errors_found.append((chain, n, "not linked"))
        proof = db.scalar("SELECT ledger.consistency_proof(%s, %s)", (previous["cid"], cp["cid"]))
        if not db.scalar("SELECT ledger.verify_consistency(%s)", (Jsonb(proof),)):
            errors_found.append((chain, n, "consistency proof from", previous["record_count"]))
    if lines is not None and offline_merkle_root(lines, chain, 1, n) != expected:
        errors_found.append((chain, n, "offline root differs"))


def test_incremental_checkpoints_through_sizes_of_one_chain(db):
    """One chain checkpointed at 0, 1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 100 records."""
    make_single_chain_table(db)
    found, previous, have = [], None, 0
    for n in [0, *SIZES]:
        append_single(db, "pay", n - have)
        have = n
        cp = one_checkpoint(db, "pay")
        _check_incremental(db, cp, chain_hashes(db, None, "pay"), "pay", None, previous,
                           db.export_lines("pay") if n in (9, 17, 100) else None, found)
        previous = cp
    assert found == []
    assert all(ok for _, ok, _ in db.fetchall(
        "SELECT v.* FROM ledger.checkpoints c, ledger.verify_checkpoint(c.cid) v "
        "WHERE v.item NOT IN ('signature', 'key')"))


def test_incremental_checkpoint_after_each_size(db):
    """For each size n: a checkpoint at n, then after 1 more record, then after n + 1 more, then
    after 7 more; each against ledger.merkle_root over the full range and a recomputation."""
    chains = {n: str(uuid.UUID(int=0x1000 + n)) for n in SIZES}
    for n, chain in chains.items():
        append(db, chain, n)
    found, previous = [], {}
    for step in (0, 1, None, 7):
        for n, chain in chains.items():
            if step != 0:
                append(db, chain, n + 1 if step is None else step, tag=f"step{step}")
        cps = {cp["chain"]: cp for cp in checkpoint(db)}
        lines = db.export_lines() if step == 7 else None
        for n, chain in chains.items():
            _check_incremental(db, cps[chain], chain_hashes(db, chain), "ledger.records", chain,
                               previous.get(chain), lines, found)
        previous = cps
    assert found == []
    assert db.verify("ledger.checkpoints") == []
