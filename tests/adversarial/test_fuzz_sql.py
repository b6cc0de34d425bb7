"""Fuzzing the proof and digest verifiers on a real server: a real checkpoint, inclusion proof,
consistency proof and signed digest, then a few hundred seeded random mutations of each fed to
ledger.verify_inclusion, ledger.verify_consistency and ledger.verify_digest.

Every call must return a verdict or raise an error with a SQLSTATE that is not XX000 (an internal
error: a panic caught by pgrx) and not a crash; the connection stays usable. A mutated proof verifies
only when the independent verifier (scripts/verify_export.py) agrees and the hashes it combines are
the original ones; a mutated digest verifies only when its signed body is unchanged.

LEDGER_FUZZ_SEED picks the seed (default fixed), LEDGER_FUZZ_CASES the mutations per verifier."""

from __future__ import annotations

import base64
import json
import os
import pwd
import random
import re
import uuid
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from ledgertest import set_signing_key_file, ve

SEED = int(os.environ.get("LEDGER_FUZZ_SEED", "20260101"))
CASES = int(os.environ.get("LEDGER_FUZZ_CASES", "300"))
POSTGRES = pwd.getpwnam("postgres")


# ---- setup: a signed checkpoint pair and its proofs ----------------------------------------------


@pytest.fixture
def signed(cluster, db):
    """A signing key for the server for the duration of one test (reset after: it is cluster-wide)."""
    key = Ed25519PrivateKey.generate()
    keys = Path(cluster.dir) / "keys"
    keys.mkdir(mode=0o700, exist_ok=True)
    os.chown(keys, POSTGRES.pw_uid, POSTGRES.pw_gid)
    path = keys / f"fuzz-{uuid.uuid4().hex}.pem"
    path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    os.chown(path, POSTGRES.pw_uid, POSTGRES.pw_gid)
    os.chmod(path, 0o600)
    set_signing_key_file(cluster, str(path), [db.conn])
    try:
        assert db.scalar("SELECT ledger.public_key()") is not None
        yield key
    finally:
        set_signing_key_file(cluster, None, [db.conn])


class Material:
    """Real proofs and a digest from `db`: chain X with checkpoints at 13 and 29 records."""

    def __init__(self, db):
        self.db = db
        self.chain = str(uuid.uuid4())
        append(db, self.chain, 13)
        append(db, str(uuid.uuid4()), 5)  # another chain, so the ledger has more than one
        self.old_cid = checkpoint(db, self.chain)
        append(db, self.chain, 16)
        self.new_cid = checkpoint(db, self.chain)
        self.root = db.scalar("SELECT merkle_root FROM ledger.checkpoints WHERE cid = %s",
                              (self.new_cid,))
        self.hashes = {seq: h for seq, h in db.fetchall(
            "SELECT seq, hash FROM ledger.records WHERE anchor_id = %s", (self.chain,))}
        # Inclusion proofs of a few records (first, middle, last, and the last of a perfect subtree).
        self.inclusions = {seq: db.scalar("SELECT ledger.inclusion_proof(%s, %s)::text",
                                          (self.new_cid, seq)) for seq in (1, 8, 16, 17, 29)}
        self.consistency = db.scalar("SELECT ledger.consistency_proof(%s, %s)::text",
                                     (self.old_cid, self.new_cid))
        self.digest = db.scalar("SELECT ledger.digest(%s)", (self.new_cid,))


def append(db, chain: str, n: int) -> None:
    db.execute("INSERT INTO ledger.records (anchor_id, slot, kind, payload) "
               "SELECT %s, 's', 'k', jsonb_build_object('i', g) FROM generate_series(1, %s) g",
               (chain, n))


def checkpoint(db, chain: str) -> str:
    return db.scalar("SELECT cid FROM ledger.checkpoint('ledger.records', %s)", (chain,))


# ---- calling the verifiers and judging the outcome -----------------------------------------------


class Outcome:
    def __init__(self, value=None, error: psycopg.Error | None = None):
        self.value, self.error = value, error

    @property
    def sqlstate(self) -> str | None:
        return None if self.error is None else self.error.sqlstate


class Fuzzer:
    """Runs calls on one autocommit connection; records every unacceptable outcome."""

    def __init__(self, db):
        self.db = db
        self.conn = db.conn
        self.failures: list[str] = []
        self.outcomes: Counter = Counter()

    def call(self, query: str, params: tuple, what: str) -> Outcome:
        try:
            rows = self.conn.execute(query, params).fetchall()
            outcome = Outcome(rows)
            self.outcomes["returned"] += 1
        except psycopg.OperationalError as e:
            if self.conn.closed or self.conn.broken:
                pytest.fail(f"{what}: the connection died ({e}); the backend crashed? "
                            f"input: {_short(params)}")
            outcome = Outcome(error=e)
        except psycopg.Error as e:
            outcome = Outcome(error=e)
        if outcome.error is not None:
            state = outcome.sqlstate
            self.outcomes[f"error {state}"] += 1
            if state is None or state.startswith("XX") or state[:2] in ("57", "58"):
                self.fail(what, f"SQLSTATE {state}: {str(outcome.error).strip()}", params)
        # The connection is still usable after every call.
        try:
            assert self.conn.execute("SELECT 1").fetchone() == (1,)
        except psycopg.Error as e:
            pytest.fail(f"{what}: connection unusable after the call ({e}); input: {_short(params)}")
        return outcome

    def fail(self, what: str, why: str, params) -> None:
        self.failures.append(f"{what}: {why}\n    input: {_short(params)}")

    def assert_clean(self) -> None:
        # Grouped by kind: the case number and parser positions left out.
        summary = Counter(re.sub(r"case \d+ |column: \d+", "", f.split("\n")[0])[:200]
                          for f in self.failures)
        assert not self.failures, (
            f"{len(self.failures)} unacceptable outcomes (seed {SEED}); kinds:\n"
            + "\n".join(f"  {n} x {k}" for k, n in summary.most_common())
            + "\nfirst examples:\n" + "\n".join(self.failures[:8]))

    def pg_json(self, text: str):
        """How PostgreSQL reads `text` as jsonb, as its canonical text (None if it is no jsonb)."""
        try:
            return self.conn.execute("SELECT %s::jsonb::text", (text,)).fetchone()[0]
        except psycopg.Error:
            return None


def _short(params, limit: int = 300) -> str:
    text = repr(params)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


# ---- mutations -------------------------------------------------------------------------------------


class Raw:
    """A JSON value written as given (numbers JSON modules would not write, deep nesting...)."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self):
        return f"Raw({self.text[:40]!r})"


def dumps(value) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ", ".join(json.dumps(k) + ": " + dumps(v) for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(dumps(v) for v in value) + "]"
    return json.dumps(value)


def odd_values(rng: random.Random, around: int) -> list:
    depth = rng.choice([129, 200, 1000])
    return [
        0, 1, -1, around + 1, max(around - 1, 0), around * 2, 2**32 + around, 2**63 - 1, 2**63,
        2**64 - 1, 2**64, -(2**63), 10**40,
        Raw(f"{around}.0"), Raw(f"{around}.5"), Raw(f"{around}e0"), Raw("1e400"), Raw("-1e400"),
        Raw("1e-400"), Raw("1E+100000"), Raw("-0"), Raw("0.0"),
        str(around), None, True, False, [around], {"n": around}, "", "0" * 64,
        Raw("[" * depth + "]" * depth), Raw('{"a":' * depth + "1" + "}" * depth),
        "x" * 100_000, "\u2014\U0001F600\uFFFF",
    ]


def mutate_proof(rng: random.Random, text: str) -> str:
    """One to three structural or textual mutations of a proof's JSON text."""
    for _ in range(rng.randint(1, 3)):
        try:
            proof = json.loads(text)
        except ValueError:
            proof = None
        if isinstance(proof, dict) and rng.random() < 0.65:
            text = dumps(_mutate_structure(rng, proof))
        else:
            text = _mutate_text(rng, text)
    return text


def _mutate_structure(rng: random.Random, proof: dict) -> dict:
    keys = list(proof)
    op = rng.randrange(8)
    if op == 0 and keys:  # a member gets an odd value
        key = rng.choice(keys)
        around = proof[key] if type(proof[key]) is int else 5
        proof[key] = rng.choice(odd_values(rng, around))
    elif op == 1 and keys:
        del proof[rng.choice(keys)]
    elif op == 2:  # an informative member of any kind: must change nothing
        proof[f"x_{rng.randrange(1000)}"] = rng.choice(odd_values(rng, 5))
    elif op == 3:
        proof["type"] = rng.choice(["inclusion", "consistency", "Inclusion", "", None, 1, ["inclusion"]])
    elif isinstance(proof.get("path"), list):
        path = proof["path"]
        pop = rng.randrange(9)
        i = rng.randrange(len(path)) if path else 0
        if pop == 0 and path:
            del path[i]
        elif pop == 1 and path:
            path.insert(i, path[i])
        elif pop == 2 and len(path) > 1:
            j = rng.randrange(len(path))
            path[i], path[j] = path[j], path[i]
        elif pop == 3 and path and isinstance(path[i], str) and path[i]:
            s = path[i]
            k = rng.randrange(len(s))
            path[i] = s[:k] + rng.choice("0123456789abcdefABCDEFgz") + s[k + 1:]
        elif pop == 4 and path and isinstance(path[i], str):
            path[i] = path[i].upper()
        elif pop == 5:
            path.insert(i, os.urandom(32).hex())
        elif pop == 6:
            path.reverse()
        elif pop == 7 and path:
            path[i] = rng.choice(odd_values(rng, 5))
        else:
            path.extend([path[0] if path else "00" * 32] * (65 - len(path)))
    else:
        proof[rng.choice(["path", "seq", "tree_size", "old_size", "new_size", "old_root",
                          "new_root"])] = rng.choice(odd_values(rng, 5))
    return proof


def _mutate_text(rng: random.Random, text: str) -> str:
    data = bytearray(text.encode("utf-8"))
    op = rng.randrange(6)
    i = rng.randrange(len(data) + 1) if data else 0
    if op == 0 and data:
        data[min(i, len(data) - 1)] ^= 1 << rng.randrange(8)
    elif op == 1:
        del data[i:]
    elif op == 2:
        j = min(len(data), i + rng.randint(1, 40))
        data[i:i] = data[i:j]
    elif op == 3:
        data[i:i] = bytes(rng.randrange(1, 256) for _ in range(rng.randint(1, 6)))
    elif op == 4 and data:
        del data[i:i + rng.randint(1, 10)]
    else:
        data[i:i] = rng.choice([b"0", b"-", b".5", b"e9", b"9" * 30, b'"', b",", b"]", b"}"])
    return data.decode("utf-8", errors="replace").replace("\x00", "\\u0000")


def random_text(rng: random.Random) -> str:
    alphabet = ('{}[]":,. \n\t0123456789abcdef-+eE' + "typeinclusonqrdthlz_" + "\u2014\u00e9\U0001F600")
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200)))


def _proof_members(pg_text: str | None):
    """The members verification reads, from PostgreSQL's reading of the proof."""
    proof = json.loads(pg_text, parse_int=lambda d: int(d) if len(d) <= 4000 else float("inf")) if pg_text else {}
    return proof if isinstance(proof, dict) else {}


# ---- the tests -------------------------------------------------------------------------------------


def test_the_material_verifies(db, signed):
    m = Material(db)
    for seq, proof in m.inclusions.items():
        assert db.scalar("SELECT ledger.verify_inclusion(%s, %s::jsonb, %s)",
                         (m.hashes[seq], proof, m.root)) is True
        assert db.scalar("SELECT ledger.verify_inclusion(%s, %s::jsonb, %s)",
                         (m.hashes[seq % 29 + 1], proof, m.root)) is False
    assert db.scalar("SELECT ledger.verify_consistency(%s::jsonb)", (m.consistency,)) is True
    checks = dict(db.fetchall("SELECT item, ok FROM ledger.verify_digest(%s)", (m.digest,)))
    assert checks == {"signature": True, "key": True, "checkpoint": True, "extends": True}


def test_fuzz_verify_inclusion(db, signed):
    m = Material(db)
    rng = random.Random(SEED)
    fz = Fuzzer(db)
    verified_mutants = 0
    for case in range(CASES):
        seq = rng.choice(list(m.inclusions))
        original = m.inclusions[seq]
        record_hash, root = m.hashes[seq], m.root
        kind = rng.random()
        if kind < 0.8:
            proof = mutate_proof(rng, original)
        elif kind < 0.9:
            proof = random_text(rng)
        else:
            proof = original
            # Mutate the record hash or the root instead.
            if rng.random() < 0.5:
                record_hash = _mutate_hex(rng, record_hash)
            else:
                root = _mutate_hex(rng, root)
        params = (record_hash, proof, root)
        out = fz.call("SELECT ledger.verify_inclusion(%s, %s::jsonb, %s)", params,
                      f"case {case} verify_inclusion")
        if out.error is not None:
            continue
        verdict = out.value[0][0]
        # What the independent verifier says of the proof as PostgreSQL read it.
        pg_text = fz.pg_json(proof)
        try:
            expected, _ = ve.check_inclusion_proof(pg_text.encode(), bytes.fromhex(record_hash),
                                                   bytes.fromhex(root))
        except (ve.MalformedInput, ValueError, AttributeError):
            expected = None  # malformed for the offline verifier: false or an error are both fine
        if verdict is True:
            members = _proof_members(pg_text)
            if expected is not True:
                fz.fail(f"case {case}", f"verified true, the offline verifier says {expected}", params)
            elif (members.get("path") != json.loads(original)["path"] or record_hash != m.hashes[seq]
                  or root != m.root):
                fz.fail(f"case {case}", "verified true with other hashes than the original", params)
            if proof != original:
                verified_mutants += 1
        elif expected is True:
            fz.fail(f"case {case}", f"returned {verdict}, the offline verifier says true", params)
    print(f"\nverify_inclusion: seed {SEED}, {CASES} cases, {dict(fz.outcomes)}, "
          f"{verified_mutants} harmless mutations verified")
    fz.assert_clean()


def test_fuzz_verify_consistency(db, signed):
    m = Material(db)
    rng = random.Random(SEED + 1)
    fz = Fuzzer(db)
    original_members = json.loads(m.consistency)
    for case in range(CASES):
        proof = mutate_proof(rng, m.consistency) if rng.random() < 0.9 else random_text(rng)
        params = (proof,)
        out = fz.call("SELECT ledger.verify_consistency(%s::jsonb)", params,
                      f"case {case} verify_consistency")
        if out.error is not None:
            continue
        verdict = out.value[0][0]
        pg_text = fz.pg_json(proof)
        try:
            expected, _ = ve.check_consistency_proof(pg_text.encode())
        except (ve.MalformedInput, ValueError, AttributeError):
            expected = None
        if verdict is True:
            members = _proof_members(pg_text)
            if expected is not True:
                fz.fail(f"case {case}", f"verified true, the offline verifier says {expected}", params)
            elif any(members.get(k) != original_members[k] for k in ("path", "old_root", "new_root")):
                fz.fail(f"case {case}", "verified true with other hashes than the original", params)
        elif expected is True:
            fz.fail(f"case {case}", f"returned {verdict}, the offline verifier says true", params)
    print(f"\nverify_consistency: seed {SEED + 1}, {CASES} cases, {dict(fz.outcomes)}")
    fz.assert_clean()


def _mutate_hex(rng: random.Random, h: str) -> str:
    op = rng.randrange(5)
    i = rng.randrange(len(h))
    if op == 0:
        return h[:i] + ("1" if h[i] == "0" else "0") + h[i + 1:]
    if op == 1:
        return h.upper()
    if op == 2:
        return h[:i]
    if op == 3:
        return h + "0"
    return random_text(rng)


def mutate_digest(rng: random.Random, text: str) -> str:
    for _ in range(rng.randint(1, 3)):
        lines = text.split("\n")
        n = len(lines)
        op = rng.randrange(12)
        if op == 0:
            i = rng.randrange(n)
            b = bytearray(lines[i].encode("utf-8"))
            if b:
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
                lines[i] = b.decode("utf-8", errors="replace")
        elif op == 1:
            return text[:rng.randrange(len(text) + 1)]
        elif op == 2:
            i = rng.randrange(n)
            lines.insert(i, lines[i])
        elif op == 3:
            del lines[rng.randrange(n)]
        elif op == 4:
            i, j = rng.randrange(n), rng.randrange(n)
            lines[i], lines[j] = lines[j], lines[i]
        elif op in (5, 6):  # a line's value replaced
            i = rng.randrange(n)
            keyword = lines[i].split(" ", 1)[0]
            value = rng.choice(["-1", "+29", "029", "29.0", "1e400", "18446744073709551615",
                                "18446744073709551616", "9223372036854775808", "0", "", "none",
                                '"x"', "null", "\u2014", "0" * 64, random_text(rng)[:30]])
            lines[i] = f"{keyword} {value}"
        elif op == 7:
            lines[rng.randrange(n)] += rng.choice([" ", "\t", "\r", "x", " 1"])
        elif op == 8:
            text = "\r\n".join(lines)
            continue
        elif op == 9:
            text = "\n".join(lines).replace("\n\n", "\n\n\n", 1)
            continue
        elif op == 10:  # the signature replaced by another's
            sig = base64.b64encode(os.urandom(68)).decode()
            lines = [f"\u2014 ledger {sig}" if line.startswith("\u2014") else line for line in lines]
        else:
            lines.append(f"\u2014 {rng.choice(['ledger', 'other'])} "
                         f"{base64.b64encode(os.urandom(rng.choice([68, 10]))).decode()}")
        text = "\n".join(lines)
    return text


def test_fuzz_verify_digest(db, signed):
    m = Material(db)
    rng = random.Random(SEED + 2)
    fz = Fuzzer(db)
    original_body = m.digest.split("\n\n", 1)[0]
    all_true = 0
    for case in range(CASES):
        digest = mutate_digest(rng, m.digest) if rng.random() < 0.9 else random_text(rng)
        digest = digest.replace("\x00", "")
        out = fz.call('SELECT item, ok FROM ledger.verify_digest(%s)', (digest,),
                      f"case {case} verify_digest")
        if out.error is not None:
            continue
        checks = dict(out.value)
        if set(checks) != {"signature", "key", "checkpoint", "extends"}:
            fz.fail(f"case {case}", f"checks {sorted(checks)}", (digest,))
        if checks.get("signature") is True and digest.split("\n\n", 1)[0] != original_body:
            fz.fail(f"case {case}", "a changed body has a valid signature", (digest,))
        if all(checks.get(k) is True for k in ("signature", "checkpoint", "extends")):
            all_true += 1
            if digest.split("\n\n", 1)[0] != original_body:
                fz.fail(f"case {case}", "a changed digest verifies", (digest,))
    print(f"\nverify_digest: seed {SEED + 2}, {CASES} cases, {dict(fz.outcomes)}, "
          f"{all_true} unchanged-body mutations verified")
    fz.assert_clean()


# ---- the cases random fuzzing found, kept as plain tests ---------------------------------------------


INFORMATIVE = [
    pytest.param('1e400', id="huge_number"),
    pytest.param('-1e400', id="huge_negative_number"),
    pytest.param('1E+100000', id="number_with_huge_exponent"),
    pytest.param('[' * 200 + ']' * 200, id="nested_200"),
    pytest.param('{"a":' * 129 + '1' + '}' * 129, id="nested_objects_129"),
]


@pytest.mark.parametrize("extra", INFORMATIVE)
def test_informative_members_of_any_value_change_nothing(db, extra):
    """FORMAT.md: members not named are informative and not used by verification. A valid proof
    with such a member still verifies (or at worst is refused with a clean SQLSTATE)."""
    chain = str(uuid.uuid4())
    append(db, chain, 5)
    old = checkpoint(db, chain)
    append(db, chain, 4)
    new = checkpoint(db, chain)
    record_hash = db.scalar("SELECT hash FROM ledger.records WHERE anchor_id = %s AND seq = 3", (chain,))
    root = db.scalar("SELECT merkle_root FROM ledger.checkpoints WHERE cid = %s", (new,))
    inclusion = db.scalar("SELECT ledger.inclusion_proof(%s, 3)::text", (new,))
    consistency = db.scalar("SELECT ledger.consistency_proof(%s, %s)::text", (old, new))
    fz = Fuzzer(db)
    for query, proof, params in [
        ("SELECT ledger.verify_inclusion(%s, %s::jsonb, %s)", inclusion, lambda p: (record_hash, p, root)),
        ("SELECT ledger.verify_consistency(%s::jsonb)", consistency, lambda p: (p,)),
    ]:
        with_extra = proof[:-1] + ', "note": ' + extra + "}"
        assert db.scalar("SELECT %s::jsonb ? 'note'", (with_extra,))
        out = fz.call(query, params(with_extra), query.split("(")[0])
        if out.error is None:
            assert out.value == [(True,)], (query, out.value)
    fz.assert_clean()
