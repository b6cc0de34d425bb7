"""Proofs from stored subtrees (ledger.subtrees, core/src/tiles.rs) on a real server: what a
checkpoint stores (checked against the offline verifier's own Merkle functions), that proofs read a
few tiles of records instead of the whole chain (counted by PostgreSQL's own per-transaction table
statistics, against the same proof made without the stored subtrees), that they are the proofs the
records alone give and verify offline, and what a superuser's changes to the stored rows do."""

from __future__ import annotations

import threading

import psycopg
import pytest
from psycopg.types.json import Jsonb

from ledgertest import offline_inclusion, ve

SIZE = 70_000  # past 65,536: subtrees of height 16 too
OLD = 40_000
SEQS = [1, 255, 256, 257, 40_000, 65_536, 65_537, SIZE]


def single_chain(db, name: str, n: int) -> None:
    db.execute(f"CREATE TABLE {name} (id int PRIMARY KEY)")
    db.execute("SELECT ledger.enable(%s::regclass)", (name,))
    db.execute(f"INSERT INTO {name} SELECT generate_series(1, %s)", (n,))


def checkpoint(db, tbl: str, chain: str | None = None):
    return db.fetchone("SELECT cid, record_count, merkle_root FROM ledger.checkpoint(%s::regclass, %s)",
                       (tbl, chain))


def stored(db, ledger: str, chain: str | None = None) -> dict[tuple[int, int], bytes]:
    rows = db.fetchall("SELECT height, first_seq, root FROM ledger.subtrees "
                       "WHERE ledger = %s AND chain IS NOT DISTINCT FROM %s", (ledger, chain))
    return {(h, f): bytes(r) for h, f, r in rows}


def hashes_of(db, query: str, params=None) -> list[bytes]:
    return [bytes.fromhex(r[0]) for r in db.fetchall(query, params)]


READ = "SELECT pg_stat_get_xact_tuples_returned(%s::regclass) + pg_stat_get_xact_tuples_fetched(%s::regclass)"


def rows_read(conn, tbl: str, query: str, params) -> tuple[object, int]:
    """The query's result, and how many rows of `tbl` it read (seq-scanned or fetched by index), by
    the statistics PostgreSQL keeps for the backend's work not yet reported."""
    with conn.transaction():
        before = conn.execute(READ, (tbl, tbl)).fetchone()[0]
        result = conn.execute(query, params).fetchone()[0]
        after = conn.execute(READ, (tbl, tbl)).fetchone()[0]
    return result, after - before


def warnings_of(conn, query: str, params=None) -> tuple[object, list[str]]:
    """The query's result, and the notices it raised."""
    notices: list[str] = []

    def handler(d) -> None:
        notices.append(f"{d.severity} {d.sqlstate} {d.message_primary}")

    conn.add_notice_handler(handler)
    try:
        return conn.execute(query, params).fetchone()[0], notices
    finally:
        conn.remove_notice_handler(handler)


@pytest.fixture(scope="module")
def long_chain(module_db):
    """A 70,000-record single-chain ledger checkpointed at 40,000 and at 70,000."""
    db = module_db
    single_chain(db, "long_chain", OLD)
    old = checkpoint(db, "long_chain")
    db.execute("INSERT INTO long_chain SELECT generate_series(%s, %s)", (OLD + 1, SIZE))
    new = checkpoint(db, "long_chain")
    return db, old, new


def test_a_checkpoint_stores_the_roots_of_every_256_and_65536_records(long_chain):
    db, _, _ = long_chain
    hashes = hashes_of(db, "SELECT hash FROM long_chain ORDER BY seq")
    expected = {}
    for height in (8, 16):
        width = 1 << height
        for first in range(0, SIZE - width + 1, width):
            expected[(height, first + 1)] = ve.merkle_tree_hash(hashes[first:first + width])
    assert stored(db, "public.long_chain") == expected
    assert len(expected) == SIZE // 256 + 1


def test_proofs_read_a_few_tiles_and_are_the_proofs_of_the_records(long_chain):
    db, old, new = long_chain
    conn = db.connect(autocommit=True)
    tiled, tiled_reads = {}, []
    for seq in SEQS:
        tiled[seq], read = rows_read(conn, "long_chain", "SELECT ledger.inclusion_proof(%s, %s)", (new[0], seq))
        tiled_reads.append(read)
    consistency, consistency_read = rows_read(conn, "long_chain", "SELECT ledger.consistency_proof(%s, %s)",
                                              (old[0], new[0]))
    # At most two tiles of 256 records per proof (the record's own and the tree's right edge) and
    # the record itself; the tiles above come from ledger.subtrees.
    assert max(tiled_reads) <= 2 * 256 + 1, tiled_reads
    assert consistency_read <= 3 * 256, consistency_read

    # Without the stored subtrees the same proofs are made from every record of the chain.
    with conn.transaction():
        conn.execute("DELETE FROM ledger.subtrees WHERE ledger = 'public.long_chain'")
        for seq in SEQS:
            proof, read = rows_read(conn, "long_chain", "SELECT ledger.inclusion_proof(%s, %s)", (new[0], seq))
            assert proof == tiled[seq], seq
            assert read >= SIZE  # the baseline the counts above are small against
        assert conn.execute("SELECT ledger.consistency_proof(%s, %s)", (old[0], new[0])).fetchone()[0] == consistency
        raise psycopg.Rollback()  # the stored subtrees back

    # And the offline verifier, which knows nothing of tiles, accepts them.
    for seq in SEQS:
        record_hash = db.scalar("SELECT hash FROM long_chain WHERE seq = %s", (seq,))
        status, _ = offline_inclusion(tiled[seq], record_hash, new[2], SIZE)
        assert status == 0, seq
    assert db.scalar("SELECT ledger.verify_consistency(%s, %s, %s, %s, %s)",
                     (Jsonb(consistency), OLD, old[2], SIZE, new[2])) is True


@pytest.mark.parametrize("height, uses, avoids", [(8, 300, 65_537), (16, 65_537, None)])
def test_a_forged_stored_root_gives_a_warning_and_the_right_proof(long_chain, height, uses, avoids):
    """The stored root of records 1 .. 2^height forged: the proof of a record whose path needs it
    is made from the records, with a warning; one whose path does not is made from the tiles. (The
    root of records 1 .. 65,536 is on the path of the newest record, which every proof checks.)"""
    db, _, new = long_chain
    conn = db.connect(autocommit=True)
    right = {seq: db.scalar("SELECT ledger.inclusion_proof(%s, %s)", (new[0], seq)) for seq in (uses, avoids or 1)}
    with conn.transaction():
        conn.execute("UPDATE ledger.subtrees SET root = sha256(root) "
                     "WHERE ledger = 'public.long_chain' AND height = %s AND first_seq = 1", (height,))
        proof, notices = warnings_of(conn, "SELECT ledger.inclusion_proof(%s, %s)", (new[0], uses))
        assert notices == ["WARNING XX001 the stored subtrees of public.long_chain do not match its records"]
        assert proof == right[uses]
        if avoids is not None:
            proof, notices = warnings_of(conn, "SELECT ledger.inclusion_proof(%s, %s)", (new[0], avoids))
            assert notices == [] and proof == right[avoids]
        raise psycopg.Rollback()


def test_a_rewritten_record_fails_its_own_proof_not_another_tiles(long_chain):
    """A proof shows where a record is in the checkpointed tree; checking the whole chain against
    the checkpoint is verify_checkpoint's work (README, "What is detected")."""
    db, _, new = long_chain
    conn = db.connect(autocommit=True)
    with conn.transaction():
        conn.execute("ALTER TABLE long_chain DISABLE TRIGGER ALL")
        conn.execute("UPDATE long_chain SET hash = ledger.sha3_256('rewritten') WHERE seq = 300")
        with pytest.raises(psycopg.errors.DataCorrupted, match="no longer hash to its root"):
            with conn.transaction():
                conn.execute("SELECT ledger.inclusion_proof(%s, 301)", (new[0],))
        proof = conn.execute("SELECT ledger.inclusion_proof(%s, 60000)", (new[0],)).fetchone()[0]
        record = conn.execute("SELECT hash FROM long_chain WHERE seq = 60000").fetchone()[0]
        assert conn.execute("SELECT ledger.verify_inclusion(%s, %s, %s, %s)",
                            (record, Jsonb(proof), new[2], SIZE)).fetchone()[0] is True
        checks = dict(conn.execute("SELECT item, ok FROM ledger.verify_checkpoint(%s)", (new[0],)).fetchall())
        assert checks["merkle_root"] is False
        raise psycopg.Rollback()


def test_chains_of_a_multi_chain_ledger_keep_their_own_subtrees(db):
    a, b = "00000000-0000-0000-0000-00000000000a", "00000000-0000-0000-0000-00000000000b"
    for anchor, n in ((a, 600), (b, 300)):
        db.execute("INSERT INTO ledger.records (anchor_id, slot, kind, payload) "
                   "SELECT %s, 's', 'k', jsonb_build_object('i', g) FROM generate_series(1, %s) g", (anchor, n))
    cids = {r[0]: (r[1], r[2], r[3]) for r in db.fetchall(
        "SELECT chain, cid, record_count, merkle_root FROM ledger.checkpoint('ledger.records')")}
    for anchor, count in ((a, 2), (b, 1)):
        hashes = hashes_of(db, "SELECT hash FROM ledger.records WHERE anchor_id = %s ORDER BY seq", (anchor,))
        assert stored(db, "ledger.records", anchor) == {
            (8, 1 + 256 * i): ve.merkle_tree_hash(hashes[256 * i:256 * (i + 1)]) for i in range(count)}
        cid, size, root = cids[anchor]
        for seq in (1, 257, size):
            proof = db.scalar("SELECT ledger.inclusion_proof(%s, %s)", (cid, seq))
            status, _ = offline_inclusion(proof, hashes[seq - 1].hex(), root, size)
            assert status == 0, (anchor, seq)


def test_concurrent_checkpoints_of_one_chain_store_each_subtree_once(db):
    single_chain(db, "busy", 1000)
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def checkpointer(i: int) -> None:
        try:
            with db.connect(autocommit=True) as conn:
                barrier.wait()
                for k in range(3):
                    first = 10_000 * (i + 1) + 1_000 * k
                    conn.execute("INSERT INTO busy SELECT generate_series(%s::int, %s::int)", (first, first + 199))
                    conn.execute("SELECT ledger.checkpoint('busy')")
        except BaseException as e:  # noqa: BLE001  reported below
            errors.append(e)

    threads = [threading.Thread(target=checkpointer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    size = db.scalar("SELECT max(seq) FROM busy")
    hashes = hashes_of(db, "SELECT hash FROM busy ORDER BY seq")
    assert stored(db, "public.busy") == {
        (8, 1 + 256 * i): ve.merkle_tree_hash(hashes[256 * i:256 * (i + 1)]) for i in range(size // 256)}
