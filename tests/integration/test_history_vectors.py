"""The history test vectors of docs/FORMAT.md (docs/vectors/history.json): the versions a small
tracked table's changes append (insert, update, delete, a primary-key change), with their values as
the export writes them, canonical bytes and hashes, and the table's state export. The extension must
record exactly those keys, ops and rows, hash the values to exactly those bytes, and the offline
verifier must agree with every vector.

A version's time and transaction id differ on every run, so the bytes are checked by appending
the stored values to a ledger with the history's columns (a history takes appends from its trigger
only): seq and prev_hash come out the same, since chains are independent of one another.

Regenerate the file after a deliberate format change with LEDGER_WRITE_VECTORS=1."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

from ledgertest import PSQL, ROOT, offline_verify, run_verifier, ve, _write_export, _write_temp

VECTORS = ROOT / "docs" / "vectors" / "history.json"

TABLE = """CREATE TABLE public.accounts (
    region  text,
    id      integer,
    balance numeric NOT NULL,
    PRIMARY KEY (region, id)
)"""

CHANGES = [
    "INSERT INTO public.accounts VALUES ('eu', 1, 10.50)",
    "UPDATE public.accounts SET balance = 7.25 WHERE id = 1",
    "INSERT INTO public.accounts VALUES ('us', 2, 3)",
    "DELETE FROM public.accounts WHERE id = 2",
    # A new primary key: the old key's chain ends with a delete, the new key's begins.
    "UPDATE public.accounts SET id = 3 WHERE id = 1",
]

# A ledger with the history's columns, to recompute the stored versions' bytes.
LOOKALIKE = """CREATE TABLE public.lookalike (
    key text NOT NULL, op text NOT NULL, at timestamptz NOT NULL, role text NOT NULL,
    txid bigint NOT NULL, "row" jsonb, seq bigint, prev_hash char(64), hash char(64),
    PRIMARY KEY (key, seq))"""


def psql_lines(db, query: str) -> list[str]:
    """`psql -AtX -c QUERY`, as FORMAT.md documents exports."""
    result = subprocess.run(
        [PSQL, "-h", db.cluster.socket_dir, "-p", str(db.cluster.port), "-U", "postgres", "-d", db.name,
         "-v", "ON_ERROR_STOP=1", "-AtX", "-c", query],
        capture_output=True, env={**os.environ, "PGCLIENTENCODING": "UTF8"}, timeout=120)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout.decode("utf-8").splitlines()


def test_history_vectors(db):
    db.execute(TABLE)
    db.execute("SELECT ledger.enable_history('public.accounts')")
    for change in CHANGES:
        db.execute(change)
    assert db.verify("public.accounts") == []
    header, *lines = db.export_lines("public.accounts_history")
    columns = [(c["name"], c["type"]) for c in json.loads(header)["columns"]]
    state = psql_lines(db, "SELECT * FROM ledger.export_state('public.accounts')")
    names = [name for name, _ in columns]
    records = []
    for line in lines:
        values = json.loads(line)
        *values, stored = values
        by_name = dict(zip(names, values))
        octets = bytes(db.scalar("SELECT ledger.canonical_bytes('public.accounts_history', %s, %s)",
                                 (by_name["key"], int(by_name["seq"]))))
        assert hashlib.sha3_256(octets).hexdigest() == stored
        records.append({"export": values, "bytes": octets.hex(), "hash": stored})

    if os.environ.get("LEDGER_WRITE_VECTORS"):
        document = {
            "description": "History test vectors of docs/FORMAT.md: a tracked table, the changes made "
                           "to it, its history ledger's hashed columns, each version as the history's "
                           "export writes it (hashed columns in order, in export order: by key, then "
                           "seq), its canonical bytes and hash, and the table's state export after "
                           "the changes.",
            "table": TABLE,
            "changes": CHANGES,
            "columns": [{"name": n, "type": t} for n, t in columns],
            "records": records,
            "state": state,
        }
        VECTORS.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    stored = json.loads(VECTORS.read_text(encoding="utf-8"))
    assert stored["table"] == TABLE and stored["changes"] == CHANGES
    assert [(c["name"], c["type"]) for c in stored["columns"]] == columns
    assert db.fetchone("SELECT columns::text[], column_types::text[] FROM ledger.ledgers "
                       "WHERE tbl = 'public.accounts_history'::regclass") == (
        [n for n, _ in columns], [t for _, t in columns])

    # The same changes record the same versions: all but at and txid (and the chain links and
    # hashes, which cover them) are the vectors'.
    variable = {"at", "txid", "prev_hash"}
    def fixed(values):
        return {n: v for n, v in zip(names, values) if n not in variable}
    assert [fixed(r["export"]) for r in records] == [fixed(r["export"]) for r in stored["records"]]
    assert state == stored["state"]

    # The extension hashes the stored values to the stored bytes and hashes.
    db.execute(LOOKALIKE)
    db.execute("SELECT ledger.enable('public.lookalike', chain_by => 'key')")
    for record in stored["records"]:
        values = dict(zip(names, record["export"]))
        db.execute('INSERT INTO public.lookalike (key, op, at, role, txid, "row") '
                   "VALUES (%s, %s, %s, %s, %s, %s)",
                   [values[n] for n in ("key", "op", "at", "role", "txid", "row")])
        octets = bytes(db.scalar("SELECT ledger.canonical_bytes('public.lookalike', %s, %s)",
                                 (values["key"], int(values["seq"]))))
        assert octets.hex() == record["bytes"], record
        assert db.scalar("SELECT hash FROM public.lookalike WHERE key = %s AND seq = %s",
                         (values["key"], int(values["seq"]))) == record["hash"]
        assert db.scalar("SELECT prev_hash FROM public.lookalike WHERE key = %s AND seq = %s",
                         (values["key"], int(values["seq"]))) == values["prev_hash"]

    # The offline verifier: the same bytes from the export text, and the vectors' history export
    # (this run's header, the stored records) with the stored state verify clean.
    for record in stored["records"]:
        assert ve.canonical_record_bytes(columns, record["export"]).hex() == record["bytes"]
        assert ve.record_hash(columns, record["export"]) == record["hash"]
    export = [header, *(json.dumps([*r["export"], r["hash"]], ensure_ascii=False) for r in stored["records"])]
    assert offline_verify(export) == []
    export_path, state_path = _write_export(export), _write_temp("".join(s + "\n" for s in stored["state"]), ".jsonl")
    try:
        result = run_verifier(export_path, "--state", state_path, "--json")
    finally:
        os.unlink(export_path)
        os.unlink(state_path)
    assert (result.returncode, json.loads(result.stdout)) == (0, []), result.stderr
    # The offline key of each state row is the extension's (jsonb's key order, separators, numbers).
    for line in stored["state"][1:]:
        row = json.loads(line)
        assert ve.version_key(ve.parse_json(row["row"]), ["region", "id"]) == row["key"]
