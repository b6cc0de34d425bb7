"""Retention on real servers: ledger.prune removes each chain's records older than the retention while
writers keep appending and another session prunes too; what remains, the checkpoints, proofs and
digests made before, verify in the database and offline; every superuser attack on the pruned ledger
(a kept record deleted, a pruned one put back, a kept hash rewritten or dropped, a chain emptied) is
named alike by both verifiers; a hot standby replays the prune and answers as the primary; VACUUM
makes the space reusable."""

from __future__ import annotations

import json
import threading

import psycopg
import pytest

from clusters import own_cluster, wait_for_replay
from ledgertest import Database, behind_the_triggers, database_name, offline_digest, offline_verify, wait_until

def fill(db: Database, chains: int = 4, per_chain: int = 40) -> None:
    """A ledger of `chains` chains, record i of each dated (per_chain + 0.5 - i) days ago: the first
    half of every chain is older than a retention of per_chain / 2 days, the second half is not."""
    db.execute("CREATE TABLE ev (id bigserial PRIMARY KEY, account text NOT NULL, amount numeric NOT NULL, "
               "at timestamptz NOT NULL)")
    db.execute("SELECT ledger.enable('ev', 'account')")
    db.execute("INSERT INTO ev (account, amount, at) "
               "SELECT 'acct' || c, i, now() - (%s + 1 - i) * interval '1 day' + interval '12 hours' "
               "FROM generate_series(1, %s) i, generate_series(1, %s) c ORDER BY i, c",
               (per_chain, per_chain, chains))
    db.execute("SELECT ledger.set_retention('ev', %s::interval, 'at')", (f"{per_chain // 2} days",))


def problems(db: Database, tbl: str = "ev") -> list[tuple]:
    return [tuple(r[:3]) for r in db.fetchall("SELECT * FROM ledger.verify(%s::regclass)", (tbl,))]


def checkpoint_checks(db: Database, cid) -> dict:
    return {item: ok for item, ok, _ in db.fetchall("SELECT * FROM ledger.verify_checkpoint(%s)", (cid,))}


@pytest.fixture
def pruned(db):
    """A ledger checkpointed (with a digest) before it was pruned; yields (db, cid, digest)."""
    fill(db)
    cid = db.scalar("SELECT cid FROM ledger.checkpoint('ev', 'acct1')")
    digest = db.scalar("SELECT ledger.digest(%s)", (cid,))
    assert db.fetchall("SELECT chain, pruned, through_seq FROM ledger.prune('ev') ORDER BY chain") == [
        (f"acct{c}", 20, 20) for c in range(1, 5)]
    return db, cid, digest


def test_what_remains_and_what_was_made_before_verifies_everywhere(pruned):
    db, cid, digest = pruned
    assert db.fetchall("SELECT account, min(seq), count(*) FROM ev GROUP BY 1 ORDER BY 1") == [
        (f"acct{c}", 21, 20) for c in range(1, 5)]
    assert problems(db) == [] and problems(db, "ledger.pruned") == []
    lines = db.export_lines("ev")
    assert offline_verify(lines) == []
    assert sum(1 for line in lines if line.startswith('{"pruned"')) == 4
    assert set(checkpoint_checks(db, cid).values()) <= {True, None}
    assert all(ok is not False for _, ok, _ in db.fetchall("SELECT * FROM ledger.verify_digest(%s)", (digest,)))
    status, out = offline_digest(lines, digest, allow_unsigned=True)
    assert out["digest"]["extends"][0] is True, out
    # Every checkpoint of the ledger (the prune made one per chain) verifies; new ones extend them.
    db.execute("INSERT INTO ev (account, amount, at) VALUES ('acct1', 0, now())")
    after = db.scalar("SELECT cid FROM ledger.checkpoint('ev', 'acct1')")
    for c in db.fetchall("SELECT cid FROM ledger.checkpoints WHERE ledger = 'public.ev'"):
        assert set(checkpoint_checks(db, c[0]).values()) <= {True, None}
    proof = db.scalar("SELECT ledger.consistency_proof(%s, %s)", (cid, after))
    assert db.scalar("SELECT ledger.verify_consistency(%s)", (json.dumps(proof),)) is True
    for seq in (5, 30):  # a pruned record's hash and a kept one are both in the tree
        proof = db.scalar("SELECT ledger.inclusion_proof(%s, %s)", (after, seq))
        leaf = db.scalar("SELECT encode(substring(hashes FROM ((%s - first_seq) * 32 + 1)::int FOR 32), 'hex') "
                         "FROM ledger.pruned WHERE ledger = 'public.ev' AND chain = 'acct1' "
                         "AND %s BETWEEN first_seq AND last_seq", (seq, seq)) if seq <= 20 else \
            db.scalar("SELECT hash FROM ev WHERE account = 'acct1' AND seq = %s", (seq,))
        assert db.scalar("SELECT ledger.verify_inclusion(%s, %s, merkle_root) FROM ledger.checkpoints "
                         "WHERE cid = %s", (leaf, json.dumps(proof), after)) is True


@pytest.mark.parametrize("attack, statement, found", [
    ("delete the first kept record", "DELETE FROM ev WHERE account = 'acct2' AND seq = 21",
     [("acct2", 22, "seq_gap"), ("acct2", 22, "prev_hash_mismatch")]),
    ("delete a kept record in the middle", "DELETE FROM ev WHERE account = 'acct2' AND seq = 30",
     [("acct2", 31, "seq_gap"), ("acct2", 31, "prev_hash_mismatch")]),
    ("put a pruned record back", "INSERT INTO ev (account, amount, at, seq, prev_hash, hash) "
     "SELECT account, amount, at - interval '30 days', 3, prev_hash, hash FROM ev WHERE account = 'acct3' AND seq = 25",
     [("acct3", 3, "pruned_seq")]),
    ("edit a kept record", "UPDATE ev SET amount = amount + 1 WHERE account = 'acct4' AND seq = 21",
     [("acct4", 21, "hash_mismatch")]),
    ("empty a chain, its newest record too", "DELETE FROM ev WHERE account = 'acct1'",
     [("acct1", 21, "seq_gap")]),
])
def test_tampering_after_a_prune_is_named_alike_by_both_verifiers(pruned, attack, statement, found):
    db, cid, digest = pruned
    behind_the_triggers(db, "ev", statement)
    assert problems(db) == found, attack
    assert offline_verify(db.export_lines("ev")) == found, attack


@pytest.mark.parametrize("attack, statement", [
    ("rewrite the last kept hash", "UPDATE ledger.pruned SET hashes = overlay(hashes PLACING '\\xff'::bytea "
     "FROM octet_length(hashes)) WHERE ledger = 'public.ev' AND chain = 'acct1'"),
    ("drop the kept hashes", "DELETE FROM ledger.pruned WHERE ledger = 'public.ev' AND chain = 'acct1'"),
])
def test_tampering_with_the_kept_hashes_is_caught(pruned, attack, statement):
    db, cid, digest = pruned
    behind_the_triggers(db, "ledger.pruned", statement)
    found = problems(db)
    assert found[-1] == ("acct1", 21, "prev_hash_mismatch") and {f[0] for f in found} == {"acct1"}, (attack, found)
    assert offline_verify(db.export_lines("ev")) == found, attack
    # The checkpoint made before the prune no longer matches what is kept of its records.
    assert checkpoint_checks(db, cid)["merkle_root"] is False, attack
    if attack.startswith("rewrite"):
        assert problems(db, "ledger.pruned") == [("public.ev", 1, "hash_mismatch")]
    else:
        assert problems(db, "ledger.pruned") == [("public.ev", 2, "seq_gap"), ("public.ev", 2, "prev_hash_mismatch")]


def test_a_prune_while_writers_append_and_another_session_prunes(db):
    fill(db, chains=4, per_chain=200)
    stop = threading.Event()
    appended = {f"acct{c}": 0 for c in range(1, 5)}
    errors = []

    def writer(account: str) -> None:
        with db.connect(autocommit=True) as conn:
            while not stop.is_set():
                try:
                    conn.execute("INSERT INTO ev (account, amount, at) VALUES (%s, 1, now())", (account,))
                    appended[account] += 1
                except psycopg.Error as e:  # nothing is expected to fail
                    errors.append(e)
                    return

    def pruner(results: list) -> None:
        with db.connect(autocommit=True) as conn:
            results.extend(conn.execute("SELECT chain, pruned, through_seq FROM ledger.prune('ev')").fetchall())

    writers = [threading.Thread(target=writer, args=(a,)) for a in appended]
    for w in writers:
        w.start()
    wait_until(lambda: min(appended.values()) > 5, 20, 0.01, "appends")
    first, second = [], []
    pruners = [threading.Thread(target=pruner, args=(first,)), threading.Thread(target=pruner, args=(second,))]
    for p in pruners:
        p.start()
    for p in pruners:
        p.join(60)
    wait_until(lambda: min(appended.values()) > 20, 20, 0.01, "more appends")
    stop.set()
    for w in writers:
        w.join(20)
    assert errors == []
    # One prune removed the 100 old records of each chain; the other, waiting for it, found none left.
    assert sorted(first + second) == [(a, 100, 100) for a in sorted(appended)]
    assert db.fetchall("SELECT account, min(seq), max(seq), count(*) FROM ev GROUP BY 1 ORDER BY 1") == [
        (a, 101, 200 + n, 100 + n) for a, n in sorted(appended.items())]
    assert problems(db) == [] and offline_verify(db.export_lines("ev")) == []
    assert db.fetchall("SELECT chain, count(*), min(first_seq), max(last_seq) FROM ledger.pruned "
                       "WHERE ledger = 'public.ev' GROUP BY 1 ORDER BY 1") == [(a, 1, 1, 100) for a in sorted(appended)]


def test_a_pruned_history_keeps_each_keys_state_as_of_the_cutoff(db):
    """A tracked table's prune keeps, per key, its last version older than the cutoff: as_of answers
    exactly as before for every time after the cutoff, and refuses (55000) times before it."""
    db.execute("CREATE TABLE units (id int PRIMARY KEY, status text NOT NULL)")
    db.execute("SELECT ledger.enable_history('units')")
    db.execute("INSERT INTO units VALUES (1, 'created'), (2, 'created')")
    db.execute("SELECT pg_sleep(1)")
    db.execute("UPDATE units SET status = 'active' WHERE id = 1")
    db.execute("SELECT pg_sleep(1)")
    middle = db.scalar("SELECT clock_timestamp()")
    db.execute("SELECT pg_sleep(1)")
    db.execute("UPDATE units SET status = 'done' WHERE id = 1")
    as_of_middle = db.fetchall("SELECT * FROM ledger.as_of(NULL::units, %s) ORDER BY id", (middle,))
    assert as_of_middle == [(1, "active"), (2, "created")]
    # The cutoff falls between the middle and the last update: key 1's 'active' is its state then.
    db.execute("SELECT ledger.set_retention('units', %s::interval, 'at')", ("0.5 seconds",))
    assert db.fetchall("SELECT chain, pruned, through_seq FROM ledger.prune('units') ORDER BY chain") == [
        ('{"id": 1}', 1, 1)]
    assert db.fetchall("SELECT key, seq, op, \"row\" ->> 'status' FROM units_history ORDER BY key, seq") == [
        ('{"id": 1}', 2, "update", "active"), ('{"id": 1}', 3, "update", "done"),
        ('{"id": 2}', 1, "insert", "created")]
    cutoff = db.scalar("SELECT pruned_before FROM ledger.ledgers WHERE tbl = 'units_history'::regclass")
    assert middle < cutoff
    after_cutoff = db.scalar("SELECT %s::timestamptz + interval '1 millisecond'", (cutoff,))
    assert db.fetchall("SELECT * FROM ledger.as_of(NULL::units, %s) ORDER BY id", (after_cutoff,)) == as_of_middle
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        db.execute("SELECT * FROM ledger.as_of(NULL::units, %s)", (middle,))
    assert problems(db, "units") == []
    assert offline_verify(db.export_lines("units_history")) == []


def test_vacuum_makes_the_pruned_space_reusable(db):
    fill(db, chains=10, per_chain=2000)
    before = db.scalar("SELECT pg_relation_size('ev')")
    db.execute("SELECT count(*) FROM ledger.prune('ev')")
    db.execute("VACUUM ev")
    # As many records again as were pruned: they fit in the freed space.
    db.execute("INSERT INTO ev (account, amount, at) SELECT 'acct' || (1 + i % 10), i, now() "
               "FROM generate_series(1, 10000) i")
    assert db.scalar("SELECT pg_relation_size('ev')") <= before * 1.05
    assert problems(db) == []


def test_who_may_read_the_kept_hashes(pruned, roles):
    db, cid, digest = pruned
    reader = roles.make("reader")
    db.execute(f'GRANT SELECT ON ev TO "{reader}"')
    as_reader = roles.connect(reader)
    # The ledger's readers export it with its kept hashes, without reading ledger.pruned itself.
    assert len(as_reader.execute("SELECT * FROM ledger.pruned_runs('ev')").fetchall()) == 4
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        as_reader.execute("SELECT * FROM ledger.pruned")
    stranger = roles.connect(roles.make("stranger"))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        stranger.execute("SELECT * FROM ledger.pruned_runs('ev')")
    # Only the owner (or a superuser) prunes.
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        as_reader.execute("SELECT * FROM ledger.prune('ev')")


def test_a_standby_replays_the_prune_and_answers_as_the_primary(request):
    with own_cluster("primary") as primary, own_cluster("standby", start=False) as standby:
        standby.start_as_standby_of(primary)
        p = primary.create_database(database_name(request.node.name))
        s = None
        try:
            fill(p)
            cid = p.scalar("SELECT cid FROM ledger.checkpoint('ev', 'acct1')")
            p.execute("SELECT count(*) FROM ledger.prune('ev')")
            wait_until(lambda: p.name in {r[0] for r in standby.connect(autocommit=True).execute(
                "SELECT datname FROM pg_database").fetchall()}, 20, 0.02, "the database on the standby")
            s = Database(standby, p.name)
            wait_for_replay(p, s)
            assert s.scalar("SELECT count(*) FROM ev WHERE seq <= 20") == 0
            for db in (p, s):
                assert problems(db) == []
            assert s.export_lines("ev") == p.export_lines("ev")
            assert checkpoint_checks(s, cid) == checkpoint_checks(p, cid)
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                s.execute("SELECT * FROM ledger.prune('ev')")
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                s.execute("SELECT ledger.set_retention('ev', NULL, NULL)")
        finally:
            p.close_all()
            if s is not None:
                s.close_all()
