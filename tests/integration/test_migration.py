"""Migrating a store that already hashed its records: the applications' own ledger_records table (random
uuid keys, hashes their code computed) becomes a ledger in one call, chained in the order of its
timestamps, with the old hashes kept as hashed columns so that from then on they are protected too."""

from __future__ import annotations

import pytest
from psycopg import errors

from ledgertest import assert_clean, assert_dense

# The schema of the applications this product replaces, as they had it.
LEDGER_RECORDS = """
    CREATE TABLE ledger_records (
        rid UUID PRIMARY KEY,
        anchor_id UUID NOT NULL,
        slot TEXT NOT NULL,
        kind TEXT NOT NULL,
        ts TIMESTAMPTZ NOT NULL,
        prev_hash CHAR(64),
        hash CHAR(64) UNIQUE NOT NULL,
        payload JSONB NOT NULL,
        sig BYTEA,
        producer TEXT,
        version TEXT DEFAULT 'v1'
    );
    CREATE INDEX idx_records_anchor_ts ON ledger_records(anchor_id, ts);
"""

# Their rows: 50 anchors, timestamps with ties (pairs share one), and hashes chained per anchor the
# way their code did it (SHA-256 over the record's fields and the previous hash).
FILL = """
    WITH r AS (
        SELECT gen_random_uuid() AS rid,
               ('00000000-0000-0000-0000-' || lpad((i %% 50)::text, 12, '0'))::uuid AS anchor_id,
               timestamptz '2026-01-01 00:00:00+00' + ((i / 2) * interval '1 second') AS ts,
               jsonb_build_object('i', i, 'amount', i * 1.5) AS payload
          FROM generate_series(1, %(n)s) i),
    h AS (SELECT r.*, encode(sha256(convert_to(rid::text || ts::text || payload::text, 'UTF8')), 'hex') AS hash
            FROM r)
    INSERT INTO ledger_records (rid, anchor_id, slot, kind, ts, prev_hash, hash, payload, producer)
    SELECT rid, anchor_id, 'main', 'event', ts, lag(hash) OVER (PARTITION BY anchor_id ORDER BY ts, rid),
           hash, payload, 'app'
      FROM h
"""


def kept_evidence(db, prev="prev_hash", hash_="hash"):
    return db.fetchall(f"SELECT rid, {prev}, {hash_} FROM ledger_records ORDER BY rid")


def test_migration_of_100000_records_with_their_application_hashes(db):
    db.execute(LEDGER_RECORDS)
    db.execute(FILL, {"n": 100000})
    before = kept_evidence(db)
    db.execute("SELECT ledger.enable('ledger_records', chain_by => 'anchor_id', order_by => 'ts', "
               "keep_existing_as => 'app_')")
    # The old evidence is untouched, under its new names, and now hashed.
    assert kept_evidence(db, "app_prev_hash", "app_hash") == before
    assert db.fetchone("SELECT columns FROM ledger.ledgers WHERE tbl = 'ledger_records'::regclass")[0] == [
        "rid", "anchor_id", "slot", "kind", "ts", "app_prev_hash", "app_hash", "payload", "sig", "producer",
        "version", "seq", "prev_hash"]
    # Chained in timestamp order, ties by the primary key.
    assert db.scalar("SELECT count(*) FROM (SELECT seq, row_number() OVER (PARTITION BY anchor_id "
                     "ORDER BY ts, rid) AS n FROM ledger_records) s WHERE seq <> n") == 0
    assert_dense(db, {f"00000000-0000-0000-0000-{i:012d}": 2000 for i in range(50)}, tbl="ledger_records")
    assert_clean(db, "ledger_records")
    assert db.fetchone("SELECT event, reason FROM ledger.events WHERE ledger = 'public.ledger_records'") == (
        "enable", "chained 100000 existing row(s) in 50 chain(s), ordered by ts, then the primary key; "
                  "kept prev_hash as app_prev_hash; kept hash as app_hash")
    # The application goes on appending with its own hashes, and the ledger chains after the old rows.
    db.execute("INSERT INTO ledger_records (rid, anchor_id, slot, kind, ts, app_prev_hash, app_hash, payload) "
               "VALUES (gen_random_uuid(), '00000000-0000-0000-0000-000000000007', 'main', 'event', now(), "
               "NULL, repeat('a', 64), '{}')")
    assert db.scalar("SELECT max(seq) FROM ledger_records WHERE anchor_id = "
                     "'00000000-0000-0000-0000-000000000007'") == 2001
    # A superuser who rewrites an old application hash is caught: it is a hashed column now.
    db.execute("ALTER TABLE ledger_records DISABLE TRIGGER ledger_refuse_change")
    seq = db.scalar("UPDATE ledger_records SET app_hash = repeat('0', 64) WHERE rid = %s RETURNING seq",
                    (before[500][0],))
    db.execute("ALTER TABLE ledger_records ENABLE ALWAYS TRIGGER ledger_refuse_change")
    assert [(s, p) for _, s, p in db.verify("ledger_records")] == [(seq, "hash_mismatch")]


def test_without_keeping_them_the_old_hashes_are_refused_with_the_way_out(db):
    db.execute(LEDGER_RECORDS)
    db.execute(FILL, {"n": 10})
    with pytest.raises(errors.CheckViolation) as refused:
        db.execute("SELECT ledger.enable('ledger_records', chain_by => 'anchor_id')")
    assert "keep_existing_as" in refused.value.diag.message_hint
    assert db.scalar("SELECT count(*) FROM ledger.ledgers WHERE tbl = 'ledger_records'::regclass") == 0


@pytest.mark.parametrize("arguments, error", [
    ("order_by => 'nope'", errors.UndefinedColumn),
    ("order_by => 'seq'", errors.UndefinedColumn),
    ("order_by => 'ts sideways'", errors.SyntaxError),
    ("order_by => 'ts; DROP TABLE x'", errors.SyntaxError),
    ("keep_existing_as => ''", errors.InvalidParameterValue),
    ("keep_existing_as => 'pay'", errors.DuplicateColumn),
])
def test_bad_migration_arguments_leave_the_table_as_it_was(db, arguments, error):
    db.execute(LEDGER_RECORDS)
    db.execute("ALTER TABLE ledger_records ADD COLUMN payhash text")
    db.execute(FILL, {"n": 10})
    before = db.fetchall("SELECT * FROM ledger_records ORDER BY rid")
    with pytest.raises(error):
        db.execute(f"SELECT ledger.enable('ledger_records', chain_by => 'anchor_id', {arguments})")
    assert db.fetchall("SELECT * FROM ledger_records ORDER BY rid") == before
    assert db.scalar("SELECT count(*) FROM ledger.ledgers WHERE tbl = 'ledger_records'::regclass") == 0


def test_keep_existing_as_on_a_table_without_hashes(db):
    db.execute("CREATE TABLE plain (id int PRIMARY KEY, body text)")
    with pytest.raises(errors.UndefinedColumn):
        db.execute("SELECT ledger.enable('plain', keep_existing_as => 'app_')")


def test_order_by_descending_and_several_columns(db):
    db.execute("CREATE TABLE t (id int PRIMARY KEY, account text NOT NULL, at int NOT NULL, n int NOT NULL)")
    db.execute("INSERT INTO t SELECT i, 'a', i % 3, -i FROM generate_series(1, 9) i")
    db.execute("SELECT ledger.enable('t', chain_by => 'account', order_by => 'at DESC, n')")
    assert [r[0] for r in db.fetchall("SELECT id FROM t ORDER BY seq")] == [8, 5, 2, 7, 4, 1, 9, 6, 3]
    assert_clean(db, "t")
