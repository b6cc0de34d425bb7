"""Physical replica: a hot standby made with `pg_basebackup -R` streams a primary that appends to
ledger.records and a user ledger table and takes signed checkpoints. Outcome: on the standby
ledger.verify, export, verify_checkpoint, merkle_root, inclusion_proof, consistency_proof, digest and
verify_digest answer exactly as on the primary (they write nothing, so they run read-only); after a
superuser tampers on the primary with the triggers disabled, the standby names the same problem rows
and failing checks; appends and checkpoints on the standby are refused with 25006."""

from __future__ import annotations

import os
import pwd
import uuid

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from clusters import own_cluster, wait_for_replay
from ledgertest import Database, behind_the_triggers, database_name, insert_record, wait_until

A, B = str(uuid.UUID(int=0xA)), str(uuid.UUID(int=0xB))
TABLES = ("ledger.records", "t", "ledger.checkpoints")


def write_key(directory) -> str:
    path = directory / "signing.pem"
    path.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    postgres = pwd.getpwnam("postgres")
    os.chown(path, postgres.pw_uid, postgres.pw_gid)
    os.chmod(path, 0o600)
    return str(path)


def append(db: Database, n: int) -> None:
    for chain in (A, B):
        db.execute("INSERT INTO ledger.records (anchor_id, slot, kind, payload) "
                   "SELECT %s, 's', 'k', jsonb_build_object('i', g) FROM generate_series(1, %s) g",
                   (chain, n))
    db.execute("INSERT INTO t (k, body) SELECT g %% 2, 'b' || g FROM generate_series(1, %s) g", (2 * n,))


def outcome(db: Database, query: str, params=None):
    """The rows a query returns, or ("error", SQLSTATE)."""
    try:
        return db.fetchall(query, params)
    except psycopg.Error as e:
        return ("error", e.sqlstate)


def answers(db: Database, checkpoints: list[tuple]) -> dict:
    """Everything a reader can ask of the ledgers, keyed by the question."""
    out = {("public_key",): outcome(db, "SELECT ledger.public_key()")}
    for tbl in TABLES:
        out[("verify", tbl)] = outcome(db, "SELECT * FROM ledger.verify(%s::regclass)", (tbl,))
        out[("export", tbl)] = db.export_lines(tbl)
    by_chain = {}
    for cid, ledger, chain, size in checkpoints:
        out[("verify_checkpoint", cid)] = outcome(db, "SELECT * FROM ledger.verify_checkpoint(%s)", (cid,))
        out[("merkle_root", cid)] = outcome(db, "SELECT ledger.merkle_root(%s::regclass, %s, 1, %s)",
                                            (ledger, chain, size))
        for seq in sorted({1, (size + 1) // 2, size}):
            out[("inclusion_proof", cid, seq)] = outcome(db, "SELECT ledger.inclusion_proof(%s, %s)",
                                                         (cid, seq))
        digest = outcome(db, "SELECT ledger.digest(%s)", (cid,))
        out[("digest", cid)] = digest
        if digest and digest[0] != "error":
            out[("verify_digest", cid)] = outcome(db, "SELECT * FROM ledger.verify_digest(%s)", digest[0])
        if (ledger, chain) in by_chain:
            out[("consistency_proof", cid)] = outcome(
                db, "SELECT ledger.consistency_proof(%s, %s)", (by_chain[(ledger, chain)], cid))
        by_chain[(ledger, chain)] = cid
    return out


def checkpoint(db: Database, tbl: str) -> list[tuple]:
    return db.fetchall("SELECT cid, ledger, chain, record_count FROM ledger.checkpoint(%s::regclass) "
                       "ORDER BY chain", (tbl,))


@pytest.fixture(scope="module")
def servers():
    """A primary that signs its checkpoints, and its hot standby (the key file is outside the data
    directory, and the standby's copied postgresql.conf names it too)."""
    with own_cluster("primary", start=False) as primary, own_cluster("standby", start=False) as standby:
        primary.conf = [f"ledger.signing_key_file = '{write_key(primary.dir)}'"]
        primary.start()
        standby.start_as_standby_of(primary)
        yield primary, standby


@pytest.fixture
def ledgers(servers, request):
    """A fresh database on the primary, replayed on the standby: two chains of ledger.records and two
    of t, each with two checkpoints, the first streamed to the standby, the second after more appends.
    Yields (primary db, standby db, checkpoints)."""
    primary, standby = servers
    p = primary.create_database(database_name(request.node.name))
    s = None
    try:
        p.execute("CREATE TABLE t (id bigserial PRIMARY KEY, k int NOT NULL, body text NOT NULL)")
        p.execute("SELECT ledger.enable('t', 'k')")
        append(p, 17)
        cps = checkpoint(p, "ledger.records") + checkpoint(p, "t")
        append(p, 5)
        cps += checkpoint(p, "ledger.records") + checkpoint(p, "t")
        assert len(cps) == 8
        wait_until(lambda: p.name in {r[0] for r in standby.connect(autocommit=True).execute(
            "SELECT datname FROM pg_database").fetchall()}, 20, 0.02, "the database on the standby")
        s = Database(standby, p.name)
        assert s.scalar("SELECT pg_is_in_recovery()")
        wait_for_replay(p, s)
        yield p, s, cps
    finally:
        p.close_all()
        if s is not None:
            s.close_all()


def test_standby_answers_exactly_as_the_primary(ledgers):
    p, s, cps = ledgers
    on_primary = answers(p, cps)
    assert on_primary[("public_key",)][0][0] is not None
    for cid, *_ in cps:  # all intact and signed, so the comparison below is of real answers
        assert {ok for _, ok, _ in on_primary[("verify_checkpoint", cid)]} == {True}
        assert {ok for _, ok, _ in on_primary[("verify_digest", cid)]} == {True}
    assert all(on_primary[("verify", tbl)] == [] for tbl in TABLES)
    assert answers(s, cps) == on_primary


def test_standby_refuses_appends_and_checkpoints_as_read_only(ledgers):
    p, s, cps = ledgers
    before = (s.snapshot(), s.snapshot("t", "k"))
    for query in (f"INSERT INTO ledger.records (anchor_id, slot, kind, payload) VALUES ('{A}', 's', 'k', '{{}}')",
                  "INSERT INTO t (k, body) VALUES (0, 'x')",
                  "SELECT * FROM ledger.checkpoint('ledger.records')",
                  "SELECT * FROM ledger.checkpoint('t', '0')"):
        assert outcome(s, query) == ("error", "25006"), query
    assert (s.snapshot(), s.snapshot("t", "k")) == before


def test_standby_sees_the_same_tampering_as_the_primary(ledgers):
    p, s, cps = ledgers
    with p.conn.transaction():
        behind_the_triggers(p, "ledger.records", "UPDATE ledger.records SET payload = '{\"i\": 99}' "
               f"WHERE anchor_id = '{A}' AND seq = 3")
        behind_the_triggers(p, "t", "DELETE FROM t WHERE k = 1 AND seq = 4")
    insert_record(p.conn.cursor(), B, {"after": "tampering"})  # appends still replicate
    wait_for_replay(p, s)

    tampered = answers(p, cps)
    assert [r[:3] for r in tampered[("verify", "ledger.records")]] == [(A, 3, "hash_mismatch")]
    assert [r[:3] for r in tampered[("verify", "t")]] == [("1", 5, "seq_gap"), ("1", 5, "prev_hash_mismatch")]
    assert tampered[("verify", "ledger.checkpoints")] == []
    roots = {(ledger, chain, size): {c: ok for c, ok, _ in tampered[("verify_checkpoint", cid)]}["merkle_root"]
             for cid, ledger, chain, size in cps}
    # Checkpoints fix the stored hashes: the edit of A's payload is verify's to find, the lost record
    # of t's chain 1 breaks both of that chain's checkpoints.
    assert roots == {(ledger, chain, size): chain != "1" for _, ledger, chain, size in cps}
    assert answers(s, cps) == tampered


def test_standby_answers_for_a_history_tracked_table_as_the_primary(servers, request):
    """ledger.history, ledger.as_of and ledger.verify(tbl) read only: on the standby they answer as on
    the primary, before and after a superuser's edit behind the trigger; enable_history is refused
    there with 25006 and so are the table's writes."""
    primary, standby = servers
    p = primary.create_database(database_name(request.node.name))
    s = None
    try:
        p.execute("CREATE TABLE units (id int PRIMARY KEY, status text NOT NULL, amount numeric)")
        p.execute("INSERT INTO units VALUES (1, 'created', 1.50), (2, 'created', 2)")
        p.execute("SELECT ledger.enable_history('units')")
        p.execute("UPDATE units SET status = 'active' WHERE id = 1")
        middle = p.scalar("SELECT clock_timestamp()")
        p.execute("UPDATE units SET status = 'done' WHERE id = 1")
        p.execute("DELETE FROM units WHERE id = 2")
        p.execute("CREATE TABLE plain (id int PRIMARY KEY)")
        wait_until(lambda: p.name in {r[0] for r in standby.connect(autocommit=True).execute(
            "SELECT datname FROM pg_database").fetchall()}, 20, 0.02, "the database on the standby")
        s = Database(standby, p.name)
        wait_for_replay(p, s)
        questions = [
            ("SELECT * FROM ledger.history('units', '{\"id\": 1}')", None),
            ("SELECT * FROM ledger.history('units', '{\"id\": 2}')", None),
            ("SELECT * FROM ledger.as_of(NULL::units, %s) ORDER BY id", (middle,)),
            ("SELECT * FROM ledger.as_of(NULL::units, now()) ORDER BY id", None),
            ("SELECT * FROM ledger.verify('units')", None),
        ]
        on_primary = [outcome(p, q, a) for q, a in questions]
        assert [len(r) for r in on_primary] == [3, 2, 2, 1, 0]
        assert [o[1] for o in on_primary[2]] == ["active", "created"]
        assert [outcome(s, q, a) for q, a in questions] == on_primary

        for query in ("SELECT ledger.enable_history('plain')", "UPDATE units SET status = 'x' WHERE id = 1"):
            assert outcome(s, query) == ("error", "25006"), query
        with pytest.raises(psycopg.Error) as refused:
            s.execute("SELECT ledger.enable_history('plain')")
        assert "recovery" in str(refused.value) or "standby" in str(refused.value), str(refused.value)

        with p.conn.transaction():
            p.execute("ALTER TABLE units DISABLE TRIGGER zz_ledger_history")
            p.execute("UPDATE units SET amount = 1.5 WHERE id = 1")
            p.execute("ALTER TABLE units ENABLE ALWAYS TRIGGER zz_ledger_history")
        wait_for_replay(p, s)
        tampered = outcome(p, "SELECT chain, seq, problem FROM ledger.verify('units')")
        assert tampered == [('{"id": 1}', 3, "state_mismatch")]
        assert outcome(s, "SELECT chain, seq, problem FROM ledger.verify('units')") == tampered
    finally:
        p.close_all()
        if s is not None:
            s.close_all()


def test_standby_answers_for_a_partitioned_ledger_as_the_primary(servers, request):
    """A partitioned ledger, a partition added after its checkpoints, then a superuser's edit in one
    partition and a record moved to another: the standby answers every question as the primary,
    and refuses appends into the table and into a partition with 25006."""
    primary, standby = servers
    p = primary.create_database(database_name(request.node.name))
    s = None
    try:
        p.execute("CREATE TABLE moves (id bigint, k int NOT NULL, at timestamptz NOT NULL, PRIMARY KEY (id, at)) "
                  "PARTITION BY RANGE (at)")
        for m in (1, 2):
            p.execute(f"CREATE TABLE moves_{m} PARTITION OF moves "
                      f"FOR VALUES FROM ('2026-0{m}-01 UTC') TO ('2026-0{m + 1}-01 UTC')")
        p.execute("SELECT ledger.enable('moves', 'k')")
        p.execute("INSERT INTO moves SELECT g, g % 2, timestamptz '2026-01-01 UTC' + g * interval '1 day' "
                  "FROM generate_series(1, 50) g")
        cps = checkpoint(p, "moves")
        p.execute("CREATE TABLE moves_3 PARTITION OF moves FOR VALUES FROM ('2026-03-01 UTC') TO ('2026-04-01 UTC')")
        p.execute("INSERT INTO moves VALUES (51, 0, '2026-03-02 UTC'), (52, 1, '2026-03-03 UTC')")
        wait_until(lambda: p.name in {r[0] for r in standby.connect(autocommit=True).execute(
            "SELECT datname FROM pg_database").fetchall()}, 20, 0.02, "the database on the standby")
        s = Database(standby, p.name)
        wait_for_replay(p, s)

        def questions(db: Database) -> dict:
            out = {("verify",): outcome(db, "SELECT * FROM ledger.verify('moves')"),
                   ("export",): db.export_lines("moves")}
            for cid, *_ in cps:
                out[("verify_checkpoint", cid)] = outcome(db, "SELECT * FROM ledger.verify_checkpoint(%s)", (cid,))
                out[("inclusion_proof", cid)] = outcome(db, "SELECT ledger.inclusion_proof(%s, 2)", (cid,))
            return out

        intact = questions(p)
        assert intact[("verify",)] == []
        assert questions(s) == intact
        with p.conn.transaction():
            behind_the_triggers(p, "moves", "UPDATE moves SET id = 999 WHERE k = 0 AND seq = 3")
            behind_the_triggers(p, "moves", "UPDATE moves SET at = '2026-03-20 UTC' WHERE k = 1 AND seq = 5")
        wait_for_replay(p, s)
        tampered = questions(p)
        assert [r[:3] for r in tampered[("verify",)]] == [("0", 3, "hash_mismatch"), ("1", 5, "hash_mismatch")]
        assert questions(s) == tampered
        for query in ("INSERT INTO moves VALUES (60, 0, '2026-03-05 UTC')",
                      "INSERT INTO moves_3 VALUES (61, 0, '2026-03-05 UTC')"):
            assert outcome(s, query) == ("error", "25006"), query
    finally:
        p.close_all()
        if s is not None:
            s.close_all()
