"""The record test vectors of docs/FORMAT.md (docs/vectors/records.json): one record per row below,
covering every supported type, edge values and NULLs. The extension must produce exactly the stored
canonical bytes and hashes from the SQL literals, and the offline verifier exactly the same from the
export's text, so the vectors pin both implementations to the document.

Regenerate the file after a deliberate format change with LEDGER_WRITE_VECTORS=1 (the test then
writes what the extension computes and still checks the offline verifier against it)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ledgertest import ROOT, offline_verify, ve

VECTORS = ROOT / "docs" / "vectors" / "records.json"

TABLE = """CREATE TABLE public.vectors (
    id     integer PRIMARY KEY,
    flag   boolean,
    small  smallint,
    big    bigint,
    r      real,
    d      double precision,
    n      numeric,
    t      text,
    c      char(5),
    v      varchar(10),
    b      bytea,
    u      uuid,
    j      jsonb,
    day    date,
    tod    time,
    ts     timestamp,
    tstz   timestamptz,
    iv     interval
)"""

# SQL literals, in column order (id .. iv).
ROWS = [
    ["1", "true", "-2", "9007199254740993", "1.5", "'-0'", "1.50", "'héllo ✓'", "'ab'", "'x'",
     "'\\x00ff'", "'6f1c2a54-6c0e-4e8b-9d3e-2b0f5a7c1101'",
     """'{"b": [1.50, null, true], "a": "€", "n": -0.0, "big": 1e20}'""", "'2000-01-02'",
     "'23:59:59.999999'", "'1999-12-31 23:59:59'", "'2000-01-01 00:00:00+00'", "'P1Y2M3DT4H5M6.5S'"],
    ["2", "false", "32767", "-9223372036854775808", "'NaN'", "'Infinity'", "'NaN'", "''", "''", "''",
     "'\\x'", "'00000000-0000-0000-0000-000000000000'", "'[]'", "'-infinity'", "'00:00:00'",
     "'infinity'", "'0044-03-15 12:00:00+00 BC'", "'-1 year -2 months 3 days -0.000001 seconds'"],
    ["3"] + ["NULL"] * 17,
    ["4", "true", "-32768", "0", "'-Infinity'", "1e-310", "'-Infinity'", "'tab\tand\nnewline 𝄞'",
     "'abcde'", "'ünïcödé'", "'\\xdeadbeef'", "'ffffffff-ffff-ffff-ffff-ffffffffffff'",
     """'"just a string"'""", "'4713-01-01 BC'", "'12:00:00.5'", "'1900-02-28 00:00:00.000001'",
     "'2024-03-04 05:06:07.123456-08'", "'PT0S'"],
]


def test_record_vectors(db):
    db.execute(TABLE)
    db.execute("SELECT ledger.enable('public.vectors')")
    for row in ROWS:
        db.execute(f"INSERT INTO public.vectors VALUES ({', '.join(row)})")
    header, *records = db.export_lines("public.vectors")
    columns = [(c["name"], c["type"]) for c in json.loads(header)["columns"]]
    computed = []
    for seq, (sql, line) in enumerate(zip(ROWS, records), start=1):
        octets = bytes(db.scalar("SELECT ledger.canonical_bytes('public.vectors', NULL, %s)", (seq,)))
        stored = db.scalar("SELECT hash FROM public.vectors WHERE seq = %s", (seq,))
        assert hashlib.sha3_256(octets).hexdigest() == stored
        values = json.loads(line)[:-1]
        computed.append({"seq": seq, "sql": sql, "export": values, "bytes": octets.hex(), "hash": stored})
    document = {
        "description": "Record test vectors of docs/FORMAT.md: the table, each record's SQL literals "
                       "(id .. iv; seq and prev_hash are the chain's), its values as the export writes "
                       "them (hashed columns in order), its canonical bytes and its hash.",
        "table": TABLE,
        "columns": [{"name": n, "type": t} for n, t in columns],
        "records": computed,
    }
    if os.environ.get("LEDGER_WRITE_VECTORS"):
        VECTORS.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    stored = json.loads(VECTORS.read_text(encoding="utf-8"))
    assert stored == document, "the extension no longer produces docs/vectors/records.json"
    # The offline verifier, from the export text alone, produces the same bytes.
    for record in stored["records"]:
        assert ve.canonical_record_bytes(columns, record["export"]).hex() == record["bytes"], record["seq"]
    assert offline_verify([header, *records]) == []
