"""Dump and restore: pg_dump includes every ledger's rows; a restore into a fresh database appends the
extension's own ledgers through the trigger in chain order (so each row is re-checked on the way in),
keeps every hash, verifies clean, and tampering after the restore is still caught."""

from __future__ import annotations

import subprocess

import psycopg
import pytest

from ledgertest import Database, assert_clean

PG_BIN = "/usr/lib/postgresql/15/bin"


def fill(db: Database) -> None:
    db.execute("""
        CREATE TABLE pay (id int PRIMARY KEY, account text NOT NULL, amount numeric NOT NULL, note jsonb);
        SELECT ledger.enable('pay', 'account');
    """)
    # Interleave chains and writers so that heap order is not chain order.
    conns = [db.connect(autocommit=True) for _ in range(3)]
    for i in range(1, 301):
        conns[i % 3].execute("INSERT INTO pay VALUES (%s, %s, %s, jsonb_build_object('i', %s))", (i, "abc"[i % 3], i, i))
        conns[(i + 1) % 3].execute(
            "INSERT INTO ledger.records (anchor_id, slot, kind, payload) "
            "VALUES (('00000000-0000-0000-0000-00000000000' || %s)::uuid, 's', 'k', jsonb_build_object('i', %s))",
            (i % 4, i))
    for conn in conns:
        conn.close()
    # A column added after enable: the dump keeps the records that have a value in it verifiable.
    db.execute("ALTER TABLE pay ADD COLUMN memo text")
    db.execute("INSERT INTO pay (id, account, amount, memo) SELECT i, substr('abc', 1 + i % 3, 1), i, 'm' || i "
               "FROM generate_series(301, 330) i")
    # A chain long enough for stored subtrees (ledger.subtrees: one root per 256 records).
    db.execute("CREATE TABLE long_log (id int PRIMARY KEY)")
    db.execute("SELECT ledger.enable('long_log')")
    db.execute("INSERT INTO long_log SELECT generate_series(1, 600)")
    db.execute("SELECT count(*) FROM ledger.checkpoint('long_log')")
    db.execute("SELECT count(*) FROM ledger.checkpoint('pay')")
    db.execute("SELECT count(*) FROM ledger.checkpoint()")
    db.execute("SELECT count(*) FROM ledger.verify_all()")  # its run history is dumped too


def fingerprint(db: Database) -> tuple:
    return (
        db.fetchall("SELECT account, seq, hash FROM pay ORDER BY account, seq"),
        db.fetchall("SELECT anchor_id::text, seq, hash FROM ledger.records ORDER BY anchor_id, seq"),
        db.fetchall("SELECT seq, hash FROM ledger.checkpoints ORDER BY seq"),
        db.fetchall("SELECT ledger, seq, hash, problems FROM ledger.verify_runs ORDER BY ledger, seq"),
        db.fetchall("SELECT tbl::text, chain_by::text, columns::text[], base_columns, earlier_definitions "
                    "FROM ledger.ledgers ORDER BY 1"),
        db.fetchall("SELECT ledger, chain, height, first_seq, root FROM ledger.subtrees ORDER BY 1, 2, 3, 4"),
    )


def run(cluster, *args: str, **kwargs) -> subprocess.CompletedProcess:
    base = ["-h", cluster.socket_dir, "-p", str(cluster.port), "-U", "postgres"]
    return subprocess.run([f"{PG_BIN}/{args[0]}", *base, *args[1:]], capture_output=True, text=True,
                          check=True, **kwargs)


@pytest.mark.parametrize("fmt", ["plain", "custom"])
def test_dump_and_restore_keep_every_hash(cluster, db, target, tmp_path, fmt):
    fill(db)
    before = fingerprint(db)
    dump = tmp_path / "ledger.dump"
    if fmt == "plain":
        run(cluster, "pg_dump", "-d", db.name, "-f", str(dump))
        run(cluster, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", target.name, "-f", str(dump))
    else:
        run(cluster, "pg_dump", "-Fc", "-d", db.name, "-f", str(dump))
        run(cluster, "pg_restore", "--exit-on-error", "-d", target.name, str(dump))
    assert fingerprint(target) == before
    assert len(before[-1]) == 2  # long_log's two subtrees of 256 records
    for tbl in ("pay", "ledger.records", "ledger.checkpoints", "long_log"):
        assert_clean(target, tbl)
    proof = "SELECT ledger.inclusion_proof(cid, 300) FROM ledger.checkpoints WHERE ledger = 'public.long_log'"
    assert target.scalar(proof) == db.scalar(proof)
    failed = target.fetchall(
        "SELECT c.cid, v.item FROM ledger.checkpoints c, ledger.verify_checkpoint(c.cid) v WHERE v.ok IS FALSE")
    assert failed == []
    # The restored ledgers are live ledgers: appends chain on, changes are refused, tampering is caught.
    target.execute("INSERT INTO pay VALUES (1000, 'a', 1, null)")
    assert_clean(target, "pay")
    with pytest.raises(psycopg.Error) as refused:
        target.execute("UPDATE pay SET amount = 0 WHERE id = 1")
    assert refused.value.sqlstate == "23001"
    target.execute("ALTER TABLE ledger.records DISABLE TRIGGER ALL")
    target.execute("UPDATE ledger.records SET kind = 'edited' WHERE seq = 7 "
                   "AND anchor_id = '00000000-0000-0000-0000-000000000001'")
    target.execute("ALTER TABLE ledger.records ENABLE ALWAYS TRIGGER zz_ledger_append, "
                   "ENABLE ALWAYS TRIGGER ledger_refuse_change, ENABLE ALWAYS TRIGGER ledger_refuse_truncate")
    assert target.verify("ledger.records") == [("00000000-0000-0000-0000-000000000001", 7, "hash_mismatch")]
    # The same on the user ledger, and deleting its newest record is caught by the restored checkpoint.
    target.execute("ALTER TABLE pay DISABLE TRIGGER ALL")
    target.execute("UPDATE pay SET amount = amount + 1 WHERE account = 'b' AND seq = 3")
    target.execute("DELETE FROM pay WHERE account = 'c' AND seq = (SELECT max(seq) FROM pay WHERE account = 'c')")
    target.execute("ALTER TABLE pay ENABLE ALWAYS TRIGGER zz_ledger_append, "
                   "ENABLE ALWAYS TRIGGER ledger_refuse_change, ENABLE ALWAYS TRIGGER ledger_refuse_truncate")
    assert target.verify("pay") == [("b", 3, "hash_mismatch")]
    cid = target.scalar("SELECT cid FROM ledger.checkpoints WHERE ledger = 'public.pay' AND chain = 'c'")
    checks = {c: ok for c, ok, _ in target.fetchall("SELECT * FROM ledger.verify_checkpoint(%s)", (cid,))}
    assert checks["merkle_root"] is False and checks["checkpoint_row"] is True, checks


def test_a_tampered_dump_is_refused_on_restore(cluster, db, target, tmp_path):
    fill(db)
    dump = tmp_path / "ledger.sql"
    run(cluster, "pg_dump", "-d", db.name, "-f", str(dump))
    text = dump.read_text()
    start = text.index("COPY ledger.records")
    line_start = text.index("\n", start) + 1
    line_end = text.index("\n", line_start)
    row = text[line_start:line_end]
    assert "\ts\tk\t" in row
    dump.write_text(text[:line_start] + row.replace("\ts\tk\t", "\ts\tforged\t", 1) + text[line_end:])
    restore = subprocess.run(
        [f"{PG_BIN}/psql", "-h", cluster.socket_dir, "-p", str(cluster.port), "-U", "postgres", "-X", "-q",
         "-v", "ON_ERROR_STOP=1", "-d", target.name, "-f", str(dump)],
        capture_output=True, text=True)
    assert restore.returncode != 0
    assert "supplied hash does not match the chain" in restore.stderr


def pruned_fingerprint(db: Database) -> tuple:
    return (
        db.fetchall("SELECT account, seq, hash FROM ev ORDER BY account, seq"),
        db.fetchall("SELECT seq, hash FROM ledger.checkpoints ORDER BY seq"),
        db.fetchall("SELECT ledger, chain, first_seq, last_seq, hashes, seq, hash FROM ledger.pruned ORDER BY ledger, seq"),
        db.fetchall("SELECT ledger, event, seq, hash FROM ledger.events WHERE ledger = 'public.ev' ORDER BY seq"),
        db.fetchall("SELECT tbl::text, retention::text, retention_column::text FROM ledger.ledgers ORDER BY 1"),
    )


@pytest.mark.parametrize("fmt", ["plain", "custom"])
def test_a_pruned_ledger_dumps_and_restores(cluster, db, target, tmp_path, fmt):
    """A pruned ledger: the dump carries no pruned record, only the kept hashes (restored through
    ledger.pruned's trigger, in chain order); everything verifies and chains on after the restore."""
    db.execute("""
        CREATE TABLE ev (id int PRIMARY KEY, account text NOT NULL, body text NOT NULL, at timestamptz NOT NULL);
        SELECT ledger.enable('ev', 'account');
        INSERT INTO ev SELECT i, 'acct' || (i % 3), 'body-' || i,
                              now() - (100 - i) * interval '1 day' + interval '12 hours'
          FROM generate_series(1, 90) i;
        SELECT ledger.set_retention('ev', '50 days', 'at');
    """)
    early = db.scalar("SELECT cid FROM ledger.checkpoint('ev', 'acct1')")
    assert db.scalar("SELECT sum(pruned) FROM ledger.prune('ev')") == 49
    before = pruned_fingerprint(db)
    dump = tmp_path / "ledger.dump"
    if fmt == "plain":
        run(cluster, "pg_dump", "-d", db.name, "-f", str(dump))
        text = dump.read_text()
        assert "body-49\t" not in text and "body-50\t" in text
        run(cluster, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", target.name, "-f", str(dump))
    else:
        run(cluster, "pg_dump", "-Fc", "-d", db.name, "-f", str(dump))
        run(cluster, "pg_restore", "--exit-on-error", "-d", target.name, str(dump))
    assert pruned_fingerprint(target) == before
    for tbl in ("ev", "ledger.pruned", "ledger.checkpoints"):
        assert_clean(target, tbl)
    assert target.fetchall("SELECT c.cid, v.item FROM ledger.checkpoints c, ledger.verify_checkpoint(c.cid) v "
                           "WHERE v.ok IS FALSE") == []
    assert {ok for _, ok, _ in target.fetchall("SELECT * FROM ledger.verify_checkpoint(%s)", (early,))} <= {True, None}
    # Appends continue the pruned chains, and the next prune starts where the first one ended.
    target.execute("INSERT INTO ev VALUES (1000, 'acct1', 'after', now())")
    assert target.scalar("SELECT seq FROM ev WHERE id = 1000") == 31
    target.execute("SELECT ledger.set_retention('ev', '20 days', 'at')")
    assert target.fetchall("SELECT * FROM ledger.prune('ev') ORDER BY chain") == [
        ("acct0", 10, 26), ("acct1", 10, 27), ("acct2", 10, 26)]
    assert_clean(target, "ev")
