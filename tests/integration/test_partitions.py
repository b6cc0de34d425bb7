"""Partitioned ledgers (PARTITION BY RANGE (at), monthly partitions) on a real server: rows already
there are chained per chain in partition bound order; appends through the parent and straight into a
partition continue the chains across partitions; partitions created or attached later (by hand or by
pg_partman) are covered and registered, and checkpoints, proofs and digests made before them still
verify; prune empties old partitions; what a partitioned ledger cannot take is refused with its
SQLSTATE; eight concurrent writers crossing into a new partition fork no chain; a dump restores into
a ledger that verifies and chains on. Every check is made by ledger.verify and the offline verifier."""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from ledgertest import (assert_clean, assert_dense, behind_the_triggers, offline_digest, offline_inclusion,
                        offline_proof, offline_verify)

TRIGGERS = {"ledger_refuse_change": "A", "ledger_refuse_truncate": "A", "zz_ledger_append": "A"}
PARTITION_TRIGGERS = "triggers ledger_refuse_change:A,ledger_refuse_truncate:A,zz_ledger_append:A"
PG_BIN = "/usr/lib/postgresql/15/bin"
PARTMAN = Path("/usr/share/postgresql/15/extension/pg_partman.control")


def bound(m: int) -> str:
    """The first instant of month m of 2026 (13 is January 2027), in UTC as the definition prints it."""
    return f"{2026 + (m - 1) // 12}-{(m - 1) % 12 + 1:02d}-01 00:00:00+00"


def part(m: int, tbl: str = "ev") -> str:
    return f"{tbl}_{bound(m)[:7].replace('-', '_')}"


def add_month(db, m: int, tbl: str = "ev") -> None:
    db.execute(f"CREATE TABLE {part(m, tbl)} PARTITION OF {tbl} FOR VALUES FROM ('{bound(m)}') TO ('{bound(m + 1)}')")


def make_ev(db, months=(1, 2, 3, 4), rows: int = 36, columns: str = "") -> None:
    """ev with a partition per month of `months` (created in that order) and `rows` rows dated over
    January to March (id order is not date order), then enabled as a ledger chained by account."""
    db.execute("CREATE TABLE ev (id bigint, account text NOT NULL, amount numeric NOT NULL, "
               f"at timestamptz NOT NULL{columns}, PRIMARY KEY (id, at)) PARTITION BY RANGE (at)")
    for m in months:
        add_month(db, m)
    db.execute("INSERT INTO ev (id, account, amount, at) SELECT i, substr('abc', 1 + i %% 3, 1), i, "
               "'2026-01-01 12:00:00+00'::timestamptz + (i * 37 %% 90) * interval '1 day' "
               "FROM generate_series(1, %s) i", (rows,))
    db.execute("SELECT ledger.enable('ev', 'account')")


def triggers_of(db, rel: str) -> dict:
    return dict(db.fetchall("SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = %s::regclass "
                            "AND NOT tgisinternal", (rel,)))


def partitions_of(db, tbl: str = "ev") -> list[str]:
    return [r[0] for r in db.fetchall("SELECT inhrelid::regclass::text FROM pg_inherits "
                                      "WHERE inhparent = %s::regclass ORDER BY 1", (tbl,))]


def definition_lines(db, tbl: str = "ev", prefix: str = "partition ") -> list[str]:
    return [l for l in db.scalar("SELECT ledger.definition(%s)", (tbl,)).splitlines() if l.startswith(prefix)]


def append(db, tbl: str, id_: int, account: str, at: str, amount: int = 1) -> tuple:
    """INSERT one record into `tbl` (the ledger or a partition); returns (seq, prev_hash, hash, partition)."""
    return db.fetchone(f"INSERT INTO {tbl} (id, account, amount, at) VALUES (%s, %s, %s, %s) "
                       "RETURNING seq, prev_hash, hash, tableoid::regclass::text", (id_, account, amount, at))


def head(db, account: str) -> tuple:
    return db.fetchone("SELECT seq, hash FROM ev WHERE account = %s ORDER BY seq DESC LIMIT 1", (account,))


def checks(db, cid) -> dict:
    return {item: ok for item, ok, _ in db.fetchall("SELECT * FROM ledger.verify_checkpoint(%s)", (cid,))}


def refused(db_or_conn, statement: str, sqlstate: str, params=None) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as info:
        db_or_conn.execute(statement, params)
    assert info.value.sqlstate == sqlstate, (statement, info.value.sqlstate, str(info.value))
    return info.value


# ---- 1. rows already there -------------------------------------------------------------------------


def test_existing_rows_are_chained_in_partition_bound_order(db):
    make_ev(db, months=(3, 1, 4, 2))  # created out of bound order
    rows = db.fetchall("SELECT account, seq, id, tableoid::regclass::text FROM ev ORDER BY account, seq")
    for account in "abc":
        chain = [r for r in rows if r[0] == account]
        assert [r[1] for r in chain] == list(range(1, 13)), account
        # Partition by partition in bound order, by primary key within one.
        assert [(r[3], r[2]) for r in chain] == sorted((r[3], r[2]) for r in chain), account
        assert {r[3] for r in chain} == {part(1), part(2), part(3)}, account
    assert_dense(db, {"a": 12, "b": 12, "c": 12}, "ev", "account")
    # The (chain, seq) index is not unique (it cannot be without the partition key).
    assert db.fetchall("SELECT indisunique FROM pg_index WHERE indrelid = 'ev'::regclass "
                       "AND pg_get_indexdef(indexrelid) LIKE '%%(account, seq)'") == [(False,)]
    for rel in ["ev"] + [part(m) for m in (1, 2, 3, 4)]:
        assert triggers_of(db, rel) == TRIGGERS, rel
    assert definition_lines(db, prefix="partitioned_by") == ["partitioned_by RANGE (at)"]
    assert definition_lines(db) == [
        f"partition public.{part(m)} FOR VALUES FROM ('{bound(m)}') TO ('{bound(m + 1)}') persistence p "
        f"{PARTITION_TRIGGERS}" for m in (1, 2, 3, 4)]
    assert definition_lines(db, prefix="inherited_by") == []
    assert_clean(db, "ev")


# ---- 2. appends ------------------------------------------------------------------------------------


def test_appends_through_the_parent_and_into_partitions_continue_the_chains(db):
    make_ev(db)
    before = db.scalar("SELECT cid FROM ledger.checkpoint('ev', 'a')")
    last = {a: head(db, a) for a in "abc"}
    # The heads of a, b and c are in March; March again, then April, through both doors.
    for id_, tbl, account, at in [(100, "ev", "a", "2026-03-30 10:00+00"), (101, part(3), "b", "2026-03-02 10:00+00"),
                                  (102, "ev", "a", "2026-04-01 00:00+00"), (103, part(4), "b", "2026-04-20 10:00+00"),
                                  (104, part(4), "c", "2026-04-02 10:00+00"), (105, "ev", "a", "2026-04-01 09:00+00")]:
        seq, prev_hash, hash_, partition = append(db, tbl, id_, account, at)
        assert (seq, prev_hash) == (last[account][0] + 1, last[account][1]), (id_, tbl)
        assert partition == part(3 if at.startswith("2026-03") else 4)
        last[account] = (seq, hash_)
    # A new chain may start in any partition.
    assert append(db, part(1), 106, "d", "2026-01-05 10:00+00")[:2] == (1, None)
    # A multi-row INSERT crossing into the next partition, and COPY through the parent.
    db.execute("INSERT INTO ev (id, account, amount, at) VALUES (107, 'c', 1, '2026-04-03 00:00+00'), "
               "(108, 'd', 1, '2026-02-01 00:00+00'), (109, 'd', 1, '2026-04-30 23:59+00')")
    with db.conn.cursor().copy("COPY ev (id, account, amount, at) FROM STDIN") as copy:
        copy.write_row((110, "b", 5, "2026-04-21 00:00+00"))
        copy.write_row((111, "c", 6, "2026-04-04 00:00+00"))
    assert db.fetchall("SELECT id, seq FROM ev WHERE id >= 106 ORDER BY id") == [
        (106, 1), (107, 14), (108, 2), (109, 3), (110, 15), (111, 15)]
    # prev_hash links cross every partition boundary.
    assert db.scalar("SELECT count(*) FROM ev r JOIN ev p ON p.account = r.account AND p.seq = r.seq - 1 "
                     "WHERE r.prev_hash IS DISTINCT FROM p.hash") == 0
    assert db.scalar("SELECT count(*) FROM ev r JOIN ev p ON p.account = r.account AND p.seq = r.seq - 1 "
                     "WHERE r.tableoid <> p.tableoid") == 3 * 3 + 2  # a, b, c: Jan>Feb>Mar>Apr; d: Jan>Feb>Apr
    assert_dense(db, {"a": 15, "b": 15, "c": 15, "d": 3}, "ev", "account")
    assert_clean(db, "ev")
    # Checkpoint, proofs and digest of the chain that crossed into April.
    after = db.scalar("SELECT cid FROM ledger.checkpoint('ev', 'a')")
    assert set(checks(db, after).values()) <= {True, None}, checks(db, after)
    root = db.scalar("SELECT merkle_root FROM ledger.checkpoints WHERE cid = %s", (after,))
    for seq in (12, 14):  # the last of March, the first of April
        record_hash = db.scalar("SELECT hash FROM ev WHERE account = 'a' AND seq = %s", (seq,))
        proof = db.scalar("SELECT ledger.inclusion_proof(%s, %s)", (after, seq))
        assert db.scalar("SELECT ledger.verify_inclusion(%s, %s, %s)", (record_hash, json.dumps(proof), root)) is True
        assert offline_inclusion(proof, record_hash, root)[0] == 0, seq
    consistency = db.scalar("SELECT ledger.consistency_proof(%s, %s)", (before, after))
    assert db.scalar("SELECT ledger.verify_consistency(%s)", (json.dumps(consistency),)) is True
    assert offline_proof("consistency", consistency) == 0
    digest = db.scalar("SELECT ledger.digest(%s)", (after,))
    assert [r for r in db.fetchall("SELECT * FROM ledger.verify_digest(%s)", (digest,)) if r[1] is False] == []
    status, out = offline_digest(db.export_lines("ev"), digest, allow_unsigned=True)
    assert status == 0 and out["digest"]["extends"][0] is True and out["digest"]["definition"][0] is True, out


# ---- 3. partitions made later ------------------------------------------------------------------------


def test_stats_count_the_chains_and_records_of_every_partition(db):
    make_ev(db)
    append(db, part(4), 100, "a", "2026-04-02 00:00+00")
    db.execute("SELECT ledger.checkpoint('ev', 'a')")
    assert db.fetchall("SELECT chains, records, unanchored_records FROM ledger.stats WHERE ledger = 'public.ev'") == [
        (3, 37, 24)]
    assert db.fetchall("SELECT chain, head, covered FROM ledger.chain_summary('ev') ORDER BY chain") == [
        ("a", 13, 13), ("b", 12, None), ("c", 12, None)]


def test_partitions_created_or_attached_later_are_covered(db):
    make_ev(db)
    before = db.scalar("SELECT cid FROM ledger.checkpoint('ev', 'a')")
    digest = db.scalar("SELECT ledger.digest(%s)", (before,))
    events = db.scalar("SELECT count(*) FROM ledger.events WHERE ledger = 'public.ev'")
    add_month(db, 5)
    db.execute(f"CREATE TABLE {part(6)} (LIKE ev INCLUDING ALL)")
    db.execute(f"ALTER TABLE ev ATTACH PARTITION {part(6)} FOR VALUES FROM ('{bound(6)}') TO ('{bound(7)}')")
    for m in (5, 6):
        assert triggers_of(db, part(m)) == TRIGGERS, part(m)
    added = db.fetchall("SELECT event, reason FROM ledger.events WHERE ledger = 'public.ev' "
                        "ORDER BY seq OFFSET %s", (events,))
    assert [(e, r.startswith(f"added partition(s) public.{part(m)}")) for (e, r), m in zip(added, (5, 6))] == [
        ("alter", True), ("alter", True)] and len(added) == 2, added
    assert definition_lines(db)[-2:] == [
        f"partition public.{part(m)} FOR VALUES FROM ('{bound(m)}') TO ('{bound(m + 1)}') persistence p "
        f"{PARTITION_TRIGGERS}" for m in (5, 6)]
    assert db.verify("ev") == []
    # Appends into them chain on.
    assert append(db, part(5), 200, "a", "2026-05-10 00:00+00")[0] == 13
    assert append(db, "ev", 201, "a", "2026-06-10 00:00+00")[0] == 14
    assert append(db, part(6), 202, "a", "2026-06-01 00:00+00")[0] == 15
    assert append(db, part(6), 203, "b", "2026-06-11 00:00+00")[0] == 13
    for statement in [f"UPDATE {part(5)} SET amount = 0", f"DELETE FROM {part(6)} WHERE id = 203",
                      f"TRUNCATE {part(5)}", f"TRUNCATE {part(6)}", "TRUNCATE ev",
                      "UPDATE ev SET amount = 0 WHERE id = 201", "DELETE FROM ev WHERE at >= '2026-05-01'"]:
        refused(db, statement, "23001")
    assert_dense(db, {"a": 15, "b": 13, "c": 12}, "ev", "account")
    assert_clean(db, "ev")
    # What was made before the new partitions still verifies, and extends into what is made after.
    assert set(checks(db, before).values()) <= {True, None}, checks(db, before)
    assert [r for r in db.fetchall("SELECT * FROM ledger.verify_digest(%s)", (digest,)) if r[1] is False] == []
    status, out = offline_digest(db.export_lines("ev"), digest, allow_unsigned=True)
    assert status == 0 and out["digest"]["definition"][0] is True and out["digest"]["extends"][0] is True, out
    after = db.scalar("SELECT cid FROM ledger.checkpoint('ev', 'a')")
    assert set(checks(db, after).values()) <= {True, None}, checks(db, after)
    consistency = db.scalar("SELECT ledger.consistency_proof(%s, %s)", (before, after))
    assert db.scalar("SELECT ledger.verify_consistency(%s)", (json.dumps(consistency),)) is True


def test_a_partition_with_its_columns_in_another_order_hashes_them_by_name(db):
    """A table attached as a partition may hold the ledger's columns at other positions (and a
    dropped column): its records hash the same values, as both verifiers agree."""
    make_ev(db)
    db.execute(f"CREATE TABLE {part(5)} (gone int, hash char(64) NOT NULL, at timestamptz NOT NULL, "
               "prev_hash char(64), seq bigint NOT NULL, amount numeric NOT NULL, account text NOT NULL, "
               "id bigint NOT NULL)")
    db.execute(f"ALTER TABLE {part(5)} DROP COLUMN gone")
    db.execute(f"ALTER TABLE ev ATTACH PARTITION {part(5)} FOR VALUES FROM ('{bound(5)}') TO ('{bound(6)}')")
    assert triggers_of(db, part(5)) == TRIGGERS
    for i, (tbl, account) in enumerate([(part(5), "a"), ("ev", "b"), (part(5), "a")]):
        append(db, tbl, 300 + i, account, f"2026-05-{10 + i} 00:00+00", amount=7 + i)
    assert_dense(db, {"a": 14, "b": 13, "c": 12}, "ev", "account")
    assert db.verify("ev") == [] and offline_verify(db.export_lines("ev")) == []
    behind_the_triggers(db, "ev", f"UPDATE {part(5)} SET amount = 0 WHERE id = 301")
    assert db.verify("ev") == offline_verify(db.export_lines("ev")) == [("b", 13, "hash_mismatch")]


def test_prune_removes_old_records_partition_by_partition(db):
    make_ev(db, rows=0)
    db.execute("INSERT INTO ev (id, account, amount, at) SELECT row_number() OVER (ORDER BY m, d, a), a, d, "
               "make_timestamptz(2026, m, d, 12, 0, 0, 'UTC') FROM generate_series(1, 4) m, "
               "generate_series(5, 15, 5) d, unnest('{a,b}'::text[]) a ORDER BY m, d, a")
    before = db.scalar("SELECT cid FROM ledger.checkpoint('ev', 'a')")
    # Everything dated before March (January's and February's records) is past the retention.
    db.execute("SELECT ledger.set_retention('ev', now() - '2026-03-01 00:00+00'::timestamptz, 'at')")
    assert db.fetchall("SELECT chain, pruned, through_seq FROM ledger.prune('ev') ORDER BY chain") == [
        ("a", 6, 6), ("b", 6, 6)]
    assert db.fetchall("SELECT tableoid::regclass::text, count(*) FROM ev GROUP BY 1 ORDER BY 1") == [
        (part(3), 6), (part(4), 6)]
    assert set(checks(db, before).values()) <= {True, None}, checks(db, before)
    assert append(db, "ev", 100, "a", "2026-04-29 00:00+00")[0] == 13
    refused(db, "INSERT INTO ev (id, account, amount, at) VALUES (101, 'b', 1, '2026-01-20 00:00+00')", "23514")
    assert db.verify("ev") == [] and offline_verify(db.export_lines("ev")) == []


def test_prune_drops_the_partitions_it_emptied_once_vacuum_cleared_them(db):
    make_ev(db, rows=0)
    db.execute("INSERT INTO ev (id, account, amount, at) SELECT row_number() OVER (ORDER BY m, d, a), a, d, "
               "make_timestamptz(2026, m, d, 12, 0, 0, 'UTC') FROM generate_series(1, 4) m, "
               "generate_series(5, 15, 5) d, unnest('{a,b}'::text[]) a ORDER BY m, d, a")
    before = db.scalar("SELECT cid FROM ledger.checkpoint('ev', 'a')")
    digest = db.scalar("SELECT ledger.digest(%s)", (before,))
    db.execute("SELECT ledger.set_retention('ev', now() - '2026-03-01 00:00+00'::timestamptz, 'at')")
    db.execute("SELECT * FROM ledger.prune('ev')")
    # Their deleted tuples are still there: a snapshot from before the prune may read them.
    assert db.fetchall("SELECT * FROM ledger.prune('ev')") == []
    assert partitions_of(db) == [part(m) for m in (1, 2, 3, 4)]
    db.execute("VACUUM ev")
    assert db.fetchall("SELECT * FROM ledger.prune('ev')") == []
    assert partitions_of(db) == [part(3), part(4)]
    assert db.fetchall("SELECT event, reason FROM ledger.events WHERE ledger = 'public.ev' ORDER BY seq DESC LIMIT 1") == [
        ("alter", f"dropped partition(s) public.{part(1)}, public.{part(2)}, emptied by ledger.prune")]
    assert [l.split(" ")[1] for l in definition_lines(db)] == [f"public.{part(3)}", f"public.{part(4)}"]
    assert set(checks(db, before).values()) <= {True, None}, checks(db, before)
    lines = db.export_lines("ev")
    assert db.verify("ev") == [] and offline_verify(lines) == []
    assert [r for r in db.fetchall("SELECT * FROM ledger.verify_digest(%s)", (digest,)) if r[1] is False] == []
    status, out = offline_digest(lines, digest, allow_unsigned=True)
    assert status == 0 and out["digest"]["definition"][0] is True and out["digest"]["extends"][0] is True, out
    assert append(db, "ev", 100, "a", "2026-04-29 00:00+00")[0] == 13
    assert db.verify("ev") == []


# ---- 4. refusals -------------------------------------------------------------------------------------


def test_the_default_partition_takes_no_records(db):
    make_ev(db)
    db.execute("CREATE TABLE ev_default PARTITION OF ev DEFAULT")
    assert triggers_of(db, "ev_default") == TRIGGERS
    assert db.verify("ev") == []
    for tbl in ("ev", "ev_default"):
        e = refused(db, f"INSERT INTO {tbl} (id, account, amount, at) VALUES (300, 'a', 1, '2027-06-01 00:00+00')",
                    "23514")
        assert e.diag.message_primary == "no partition of ledger public.ev covers the record", tbl
        assert "run_maintenance" in (e.diag.message_hint or ""), e.diag.message_hint
    assert db.scalar("SELECT count(*) FROM ev_default") == 0
    assert_clean(db, "ev")


def test_a_record_cannot_go_before_its_chains_head_partition(db):
    make_ev(db)  # every chain's head is in March
    for tbl, at, into in [("ev", "2026-01-15 00:00+00", part(1)), (part(2), "2026-02-15 00:00+00", part(2)),
                          ("ev", "2026-02-28 23:59:59.999999+00", part(2))]:
        e = refused(db, f"INSERT INTO {tbl} (id, account, amount, at) VALUES (300, 'a', 1, %s)", "23514", (at,))
        assert e.diag.message_primary == (f"a record of ledger public.ev cannot go into partition public.{into}, "
                                          "before its chain's latest record"), (tbl, at)
    # Anywhere in the head's partition or after it is fine, in any order of the key; so is a new chain.
    assert append(db, "ev", 301, "a", "2026-03-01 00:00+00")[0] == 13
    assert append(db, part(4), 302, "a", "2026-04-30 00:00+00")[0] == 14
    assert append(db, "ev", 303, "a", "2026-04-01 00:00+00")[0] == 15
    refused(db, "INSERT INTO ev (id, account, amount, at) VALUES (304, 'a', 1, '2026-03-31 00:00+00')", "23514")
    assert append(db, "ev", 305, "new", "2026-01-02 00:00+00")[0] == 1
    assert_dense(db, {"a": 15, "b": 12, "c": 12, "new": 1}, "ev", "account")
    assert_clean(db, "ev")


@pytest.fixture
def owner(db):
    """A connection as a new role (not a superuser) that may create tables in public."""
    role = f"ledger_owner_{uuid.uuid4().hex[:8]}"
    db.execute(f'CREATE ROLE "{role}"; GRANT CREATE ON SCHEMA public TO "{role}"')
    conn = db.connect(autocommit=True)
    conn.execute(f'SET ROLE "{role}"')
    yield conn
    conn.close()
    db.execute(f'DROP OWNED BY "{role}"; DROP ROLE "{role}"')


def test_attaching_a_table_with_rows_is_refused_to_the_owner(db, owner):
    make_ev(owner)
    definition = db.scalar("SELECT ledger.definition('ev')")
    events = db.scalar("SELECT count(*) FROM ledger.events WHERE ledger = 'public.ev'")
    owner.execute("CREATE TABLE smuggled (LIKE ev INCLUDING ALL)")
    owner.execute("INSERT INTO smuggled VALUES (400, 'a', 1, '2026-05-02 00:00+00', 13, NULL, repeat('0', 64))")
    e = refused(owner, f"ALTER TABLE ev ATTACH PARTITION smuggled FOR VALUES FROM ('{bound(5)}') TO ('{bound(6)}')",
                "0A000")
    assert e.diag.message_primary == "partition public.smuggled of ledger public.ev holds rows"
    assert partitions_of(db) == [part(m) for m in (1, 2, 3, 4)]
    assert db.scalar("SELECT ledger.definition('ev')") == definition
    assert db.scalar("SELECT count(*) FROM ledger.events WHERE ledger = 'public.ev'") == events
    assert_clean(db, "ev")


def test_a_superusers_attachment_of_rows_stands_and_is_reported(db):
    """As any other change of a superuser's: not registered, and both verifiers report it."""
    make_ev(db)
    events = db.scalar("SELECT count(*) FROM ledger.events WHERE ledger = 'public.ev'")
    db.execute("CREATE TABLE smuggled (LIKE ev INCLUDING ALL)")
    db.execute("INSERT INTO smuggled VALUES (400, 'a', 1, '2026-05-02 00:00+00', 13, NULL, repeat('0', 64))")
    db.execute(f"ALTER TABLE ev ATTACH PARTITION smuggled FOR VALUES FROM ('{bound(5)}') TO ('{bound(6)}')")
    assert db.scalar("SELECT count(*) FROM ledger.events WHERE ledger = 'public.ev'") == events
    found = [tuple(r[:3]) for r in db.fetchall("SELECT * FROM ledger.verify('ev')")]
    assert found == [(None, None, "definition_changed"), ("a", 13, "hash_mismatch"), ("a", 13, "prev_hash_mismatch")]
    assert offline_verify(db.export_lines("ev")) == found


NOT_A_LEDGER = {
    "list": ("CREATE TABLE t (id int, account text NOT NULL, PRIMARY KEY (id, account)) PARTITION BY LIST (account);"
             "CREATE TABLE t_a PARTITION OF t FOR VALUES IN ('a')", "account"),
    "hash": ("CREATE TABLE t (id int PRIMARY KEY, account text NOT NULL) PARTITION BY HASH (id);"
             "CREATE TABLE t_0 PARTITION OF t FOR VALUES WITH (MODULUS 1, REMAINDER 0)", "account"),
    "two_columns": ("CREATE TABLE t (id int, account text NOT NULL, at timestamptz NOT NULL, PRIMARY KEY (id, at)) "
                    "PARTITION BY RANGE (at, id)", "account"),
    "expression": ("CREATE TABLE t (id int NOT NULL, account text NOT NULL) PARTITION BY RANGE ((id / 100))", "account"),
    "by_seq": ("CREATE TABLE t (id int, account text NOT NULL, seq bigint NOT NULL, PRIMARY KEY (id, seq)) "
               "PARTITION BY RANGE (seq)", "account"),
    "subpartitioned": ("CREATE TABLE t (id int, account text NOT NULL, at timestamptz NOT NULL, PRIMARY KEY (id, at)) "
                       "PARTITION BY RANGE (at); CREATE TABLE t_1 PARTITION OF t FOR VALUES FROM ('2026-01-01') "
                       "TO ('2026-02-01') PARTITION BY RANGE (at)", "account"),
}


@pytest.mark.parametrize("kind", list(NOT_A_LEDGER))
def test_partitioning_that_cannot_be_a_ledger_is_refused(db, kind):
    setup, chain_by = NOT_A_LEDGER[kind]
    db.execute(setup)
    columns = db.fetchall("SELECT attname FROM pg_attribute WHERE attrelid = 't'::regclass AND attnum > 0")
    e = refused(db, "SELECT ledger.enable('t', %s)", "0A000", (chain_by,))
    assert e.diag.message_primary == "partitioned table public.t cannot be a ledger", kind
    assert db.fetchall("SELECT attname FROM pg_attribute WHERE attrelid = 't'::regclass AND attnum > 0") == columns
    assert db.scalar("SELECT count(*) FROM ledger.ledgers WHERE tbl = 't'::regclass") == 0


def test_erasable_columns_of_a_partitioned_ledger_are_erased_in_their_partition(db):
    make_ev(db, columns=", memo text")
    db.execute("SELECT ledger.set_erasable('ev', '{memo}')")
    seq = append(db, "ev", 100, "a", "2026-04-02 00:00+00")[0]
    db.execute(f"INSERT INTO {part(4)} (id, account, amount, at, memo) VALUES (101, 'a', 1, '2026-04-03 00:00+00', 'private')")
    erased = seq + 1
    assert db.scalar("SELECT ledger.redact('ev', 'a', %s, 'erasure request')", (erased,)) == 1
    assert db.fetchall("SELECT tableoid::regclass::text, memo FROM ev WHERE account = 'a' AND seq = %s",
                       (erased,)) == [(part(4), None)]
    assert db.verify("ev") == [] and offline_verify(db.export_lines("ev")) == []
    # Putting the value back is caught by both verifiers.
    db.execute(f"ALTER TABLE {part(4)} DISABLE TRIGGER ledger_refuse_change")
    db.execute(f"UPDATE {part(4)} SET memo = 'private' WHERE id = 101")
    db.execute(f"ALTER TABLE {part(4)} ENABLE ALWAYS TRIGGER ledger_refuse_change")
    assert db.verify("ev") == [("a", erased, "hash_mismatch")]
    assert offline_verify(db.export_lines("ev")) == [("a", erased, "hash_mismatch")]


def test_a_partitioned_table_cannot_be_history_tracked(db):
    make_ev(db)
    definition = db.scalar("SELECT ledger.definition('ev')")
    refused(db, "SELECT ledger.enable_history('ev')", "42809")
    assert db.scalar("SELECT ledger.definition('ev')") == definition
    assert_clean(db, "ev")


# ---- 5. pg_partman -----------------------------------------------------------------------------------


def test_pg_partman_makes_and_maintains_the_partitions(db):
    if not PARTMAN.exists():
        pytest.skip("pg_partman is not installed (postgresql-15-partman)")
    db.execute("CREATE SCHEMA partman; CREATE EXTENSION pg_partman SCHEMA partman")
    db.execute("CREATE TABLE pm (id bigint, account text NOT NULL, amount numeric NOT NULL, at timestamptz NOT NULL, "
               "PRIMARY KEY (id, at)) PARTITION BY RANGE (at)")
    db.execute("SELECT ledger.enable('pm', 'account')")
    assert db.scalar("SELECT partman.create_parent('public.pm', 'at', 'native', 'daily', p_premake := 3)") is True
    today = db.scalar("SELECT current_date")

    def days(first: int, last: int) -> list[str]:
        return [f"pm_p{today + timedelta(n):%Y_%m_%d}" for n in range(first, last + 1)]

    assert partitions_of(db, "pm") == sorted(days(-3, 3) + ["pm_default"])
    for rel in partitions_of(db, "pm"):
        assert triggers_of(db, rel) == TRIGGERS, rel
    assert len(definition_lines(db, "pm")) == 8
    assert db.verify("pm") == []
    # Several days, each chain in date order, through the parent and straight into the day's partition.
    n = 0
    for day in range(-2, 3):
        for account in ("a", "b"):
            n += 1
            at = db.scalar("SELECT current_date + %s * interval '1 day' + interval '12 hours' + %s * interval '1 minute'",
                           (day, n))
            tbl = "pm" if n % 2 else days(day, day)[0]
            assert append(db, tbl, n, account, at)[3] == days(day, day)[0]
    e = refused(db, "INSERT INTO pm (id, account, amount, at) VALUES (99, 'a', 1, current_date + 30)", "23514")
    assert "run_maintenance" in (e.diag.message_hint or "")
    # More premade partitions: run_maintenance makes them ahead of the newest record (today + 2).
    db.execute("UPDATE partman.part_config SET premake = 6 WHERE parent_table = 'public.pm'")
    db.execute("SELECT partman.run_maintenance('public.pm')")
    assert partitions_of(db, "pm") == sorted(days(-3, 8) + ["pm_default"])
    db.execute("CALL partman.run_maintenance_proc()")
    for rel in partitions_of(db, "pm"):
        assert triggers_of(db, rel) == TRIGGERS, rel
    assert len(definition_lines(db, "pm")) == len(partitions_of(db, "pm"))
    assert db.scalar("SELECT count(*) FROM ledger.events WHERE ledger = 'public.pm' AND event = 'alter' "
                     "AND reason LIKE 'added partition(s) %%'") >= 2
    assert db.verify("pm") == []
    for i, (account, day) in enumerate([("a", 7), ("b", 8), ("a", 8)]):
        at = db.scalar("SELECT current_date + %s * interval '1 day' + interval '1 hour'", (day,))
        tbl = "pm" if i % 2 else days(day, day)[0]
        assert append(db, tbl, 100 + i, account, at)[0] == {0: 6, 1: 6, 2: 7}[i]
    assert_dense(db, {"a": 7, "b": 6}, "pm", "account")
    assert_clean(db, "pm")


# ---- 6. concurrency ----------------------------------------------------------------------------------


def test_concurrent_writers_crossing_into_the_newest_partition_fork_no_chain(db):
    make_ev(db)  # heads in March; April is empty
    writers, rows = 8, 100
    barrier = threading.Barrier(writers)
    failures: list[BaseException] = []
    committed = {a: 12 for a in "abc"}
    lock = threading.Lock()

    def write(w: int) -> None:
        try:
            with db.connect(autocommit=True) as conn:
                barrier.wait(timeout=30)
                for i in range(rows):
                    account = "abc"[(w + i) % 3]
                    tbl = part(4) if (w + i) % 2 else "ev"
                    conn.execute(f"INSERT INTO {tbl} (id, account, amount, at) VALUES (%s, %s, %s, "
                                 "'2026-04-01 00:00+00'::timestamptz + %s * interval '1 minute')",
                                 (1000 + w * rows + i, account, i, (w * 7919 + i * 104729) % 40000))
                    with lock:
                        committed[account] += 1
        except BaseException as e:  # noqa: BLE001  reported below
            failures.append(e)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert failures == []
    assert db.fetchall("SELECT account, seq FROM ev GROUP BY 1, 2 HAVING count(*) > 1") == []
    assert_dense(db, committed, "ev", "account")
    assert db.fetchall("SELECT tableoid::regclass::text, count(*) FROM ev WHERE id >= 1000 GROUP BY 1") == [
        (part(4), writers * rows)]
    assert db.scalar("SELECT count(*) FROM ev r JOIN ev p ON p.account = r.account AND p.seq = r.seq - 1 "
                     "WHERE r.prev_hash IS DISTINCT FROM p.hash") == 0
    assert_clean(db, "ev")


# ---- 7. dump and restore -----------------------------------------------------------------------------


def run(cluster, *args: str) -> None:
    base = ["-h", cluster.socket_dir, "-p", str(cluster.port), "-U", "postgres"]
    result = subprocess.run([f"{PG_BIN}/{args[0]}", *base, *args[1:]], capture_output=True, text=True)
    assert result.returncode == 0, (args[0], result.stderr)


def fingerprint(db) -> tuple:
    return (db.fetchall("SELECT tableoid::regclass::text, account, seq, hash FROM ev ORDER BY account, seq"),
            db.fetchall("SELECT seq, hash FROM ledger.checkpoints ORDER BY seq"),
            db.fetchall("SELECT event, seq, hash FROM ledger.events WHERE ledger = 'public.ev' ORDER BY seq"),
            db.scalar("SELECT ledger.definition('ev')"),
            {rel: triggers_of(db, rel) for rel in partitions_of(db)})


@pytest.mark.parametrize("fmt", ["plain", "custom"])
def test_a_partitioned_ledger_dumps_and_restores(cluster, db, target, tmp_path, fmt):
    make_ev(db)
    for i, (tbl, account, at) in enumerate([("ev", "a", "2026-04-02 00:00+00"), (part(4), "b", "2026-04-03 00:00+00")]):
        append(db, tbl, 500 + i, account, at)
    add_month(db, 5)
    append(db, part(5), 502, "a", "2026-05-02 00:00+00")
    db.execute("SELECT count(*) FROM ledger.checkpoint('ev')")
    before = fingerprint(db)
    dump = tmp_path / "ledger.dump"
    if fmt == "plain":
        run(cluster, "pg_dump", "-d", db.name, "-f", str(dump))
        run(cluster, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", target.name, "-f", str(dump))
    else:
        run(cluster, "pg_dump", "-Fc", "-d", db.name, "-f", str(dump))
        run(cluster, "pg_restore", "--exit-on-error", "-d", target.name, str(dump))
    assert fingerprint(target) == before
    assert_clean(target, "ev")
    assert target.fetchall("SELECT c.cid, v.item FROM ledger.checkpoints c, ledger.verify_checkpoint(c.cid) v "
                           "WHERE v.ok IS FALSE") == []
    # A live ledger: appends chain on through both doors, into a new partition too; changes are refused.
    assert append(target, "ev", 600, "a", "2026-05-03 00:00+00")[0] == 15
    assert append(target, part(5), 601, "b", "2026-05-04 00:00+00")[0] == 14
    add_month(target, 6)
    assert triggers_of(target, part(6)) == TRIGGERS
    assert append(target, part(6), 602, "c", "2026-06-04 00:00+00")[0] == 13
    refused(target, "INSERT INTO ev (id, account, amount, at) VALUES (603, 'a', 1, '2026-01-03 00:00+00')", "23514")
    refused(target, f"UPDATE {part(1)} SET amount = 0", "23001")
    refused(target, f"TRUNCATE {part(2)}", "23001")
    assert_dense(target, {"a": 15, "b": 14, "c": 13}, "ev", "account")
    assert_clean(target, "ev")
