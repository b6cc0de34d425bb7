"""Superuser attacks on a partitioned ledger (ev, PARTITION BY RANGE (at), one partition per month of
2026, chains a, b, c of 12 records each, three per month): a record edited in a partition, deleted
from an old one, moved to another partition by changing its date, duplicated (same chain and seq)
into another partition past the non-unique (chain, seq) index; a partition detached or dropped, a
partition's append trigger disabled. ledger.verify and the offline verifier on the export name the
same problems at the same chain and seq. The table's owner, not a superuser, is refused (42501)
every one of the definition changes."""

from __future__ import annotations

import psycopg
import pytest

from ledgertest import behind_the_triggers, offline_verify

MONTHS = (1, 2, 3, 4)
PARTITION_TRIGGERS = "triggers ledger_refuse_change:A,ledger_refuse_truncate:A,zz_ledger_append:A"


def part(m: int) -> str:
    return f"ev_2026_{m:02d}"


def partition_line(m: int, triggers: str = PARTITION_TRIGGERS) -> str:
    return (f"partition public.{part(m)} FOR VALUES FROM ('2026-{m:02d}-01 00:00:00+00') "
            f"TO ('2026-{m + 1:02d}-01 00:00:00+00') persistence p {triggers}")


def make_ledger(conn) -> None:
    """Record seq s of each chain is in month (s + 2) // 3, dated the (5 * ((s - 1) % 3 + 1))th."""
    conn.execute("CREATE TABLE ev (id bigint, account text NOT NULL, amount numeric NOT NULL, "
                 "at timestamptz NOT NULL, PRIMARY KEY (id, at)) PARTITION BY RANGE (at)")
    for m in MONTHS:
        conn.execute(f"CREATE TABLE {part(m)} PARTITION OF ev FOR VALUES FROM ('2026-{m:02d}-01 00:00+00') "
                     f"TO ('2026-{m + 1:02d}-01 00:00+00')")
    conn.execute("SELECT ledger.enable('ev', 'account')")
    conn.execute("INSERT INTO ev (id, account, amount, at) "
                 "SELECT row_number() OVER (ORDER BY m, j, a), a, m * 100 + j, "
                 "make_timestamptz(2026, m, 5 * j, 12, 0, 0, 'UTC') "
                 "FROM generate_series(1, 4) m, generate_series(1, 3) j, unnest('{a,b,c}'::text[]) a "
                 "ORDER BY m, j, a")


@pytest.fixture
def ev(db):
    make_ledger(db.conn)
    assert db.fetchall("SELECT account, seq, tableoid::regclass::text FROM ev WHERE seq IN (3, 4) "
                       "ORDER BY 1, 2")[:2] == [("a", 3, part(1)), ("a", 4, part(2))]
    assert db.verify("ev") == [] and offline_verify(db.export_lines("ev")) == []
    return db


def both(db) -> list[tuple]:
    """What ledger.verify reports, after checking the offline verifier reports exactly the same."""
    found = db.verify("ev")
    offline = offline_verify(db.export_lines("ev"))
    assert found == offline, f"ledger.verify {found} != verify_export.py {offline}"
    return found


def checks(db, cid) -> dict:
    return {item: ok for item, ok, _ in db.fetchall("SELECT * FROM ledger.verify_checkpoint(%s)", (cid,))}


@pytest.mark.parametrize("attack, statement, found", [
    ("edit an amount in a partition", f"UPDATE {part(2)} SET amount = amount + 1 WHERE account = 'b' AND seq = 5",
     [("b", 5, "hash_mismatch")]),
    ("delete a record inside a chain in an old partition", f"DELETE FROM {part(1)} WHERE account = 'a' AND seq = 2",
     [("a", 3, "seq_gap"), ("a", 3, "prev_hash_mismatch")]),
    ("move a record into a later partition", "UPDATE ev SET at = at + interval '1 month' "
     "WHERE account = 'c' AND seq = 4", [("c", 4, "hash_mismatch")]),
    ("move a record into an earlier partition", "UPDATE ev SET at = at - interval '3 months' "
     "WHERE account = 'c' AND seq = 11", [("c", 11, "hash_mismatch")]),
    ("a duplicate (chain, seq) in another partition",
     f"INSERT INTO {part(4)} (id, account, amount, at, seq, prev_hash, hash) "
     f"SELECT id, account, amount, at + interval '2 months', seq, prev_hash, hash FROM {part(2)} "
     "WHERE account = 'a' AND seq = 5", [("a", 5, "duplicate_seq"), ("a", 5, "hash_mismatch")]),
    ("a duplicate of a chain's head in an earlier partition",
     f"INSERT INTO {part(1)} (id, account, amount, at, seq, prev_hash, hash) "
     f"SELECT id + 1000, account, amount, at - interval '3 months', seq, prev_hash, hash FROM {part(4)} "
     "WHERE account = 'b' AND seq = 12", [("b", 12, "duplicate_seq"), ("b", 12, "hash_mismatch")]),
])
def test_superuser_changes_to_records_are_named_alike_by_both_verifiers(ev, attack, statement, found):
    behind_the_triggers(ev, "ev", statement)
    assert both(ev) == found, attack
    # Only the attacked chain is reported.
    chain = found[0][0]
    assert ev.verify("ev", chain) == found
    assert all(ev.verify("ev", other) == [] for other in "abc" if other != chain), attack


@pytest.mark.parametrize("attack", [f"ALTER TABLE ev DETACH PARTITION {part(2)}", f"DROP TABLE {part(2)}"])
def test_a_partition_taken_away_by_a_superuser_is_reported(ev, attack):
    cid = ev.scalar("SELECT cid FROM ledger.checkpoint('ev', 'a')")
    ev.execute(attack)  # a superuser's change stands
    found = both(ev)
    # The definition lost February's line; every chain lost seqs 4..6.
    assert found == [(None, None, "definition_changed")] + [
        (chain, 7, problem) for chain in "abc" for problem in ("seq_gap", "prev_hash_mismatch")], (attack, found)
    detail = ev.verify_details("ev")[0][3]
    assert f"- {partition_line(2)}" in detail, detail
    assert checks(ev, cid)["definition"] is False and checks(ev, cid)["merkle_root"] is False


def test_a_partitions_append_trigger_disabled_by_a_superuser_is_reported(ev):
    cid = ev.scalar("SELECT cid FROM ledger.checkpoint('ev', 'a')")
    ev.execute(f"ALTER TABLE {part(3)} DISABLE TRIGGER zz_ledger_append")
    assert both(ev) == [(None, None, "definition_changed")]
    detail = ev.verify_details("ev")[0][3]
    disabled = "triggers ledger_refuse_change:A,ledger_refuse_truncate:A,zz_ledger_append:D"
    assert f"- {partition_line(3)}" in detail and f"+ {partition_line(3, disabled)}" in detail, detail
    assert checks(ev, cid)["definition"] is False
    # What it lets through: a record nobody chained.
    ev.execute(f"INSERT INTO {part(3)} (id, account, amount, at, seq, hash) "
               "VALUES (999, 'c', 1, '2026-03-30 00:00+00', 13, repeat('0', 64))")
    assert both(ev) == [(None, None, "definition_changed"), ("c", 13, "hash_mismatch"),
                        ("c", 13, "prev_hash_mismatch")]


def test_the_owner_cannot_take_partitions_away_or_disable_their_triggers(db, roles):
    owner = roles.make("owner", create_in_public=True)
    as_owner = roles.connect(owner)
    make_ledger(as_owner)
    definition = db.scalar("SELECT ledger.definition('ev')")
    statements = [f"ALTER TABLE ev DETACH PARTITION {part(2)}", f"DROP TABLE {part(2)}", f"DROP TABLE {part(4)}",
                  f"ALTER TABLE {part(2)} DISABLE TRIGGER zz_ledger_append",
                  f"ALTER TABLE {part(2)} DISABLE TRIGGER ledger_refuse_truncate",
                  f"ALTER TABLE {part(2)} DISABLE TRIGGER ALL", "ALTER TABLE ev DISABLE TRIGGER ledger_refuse_change",
                  f"ALTER TABLE {part(2)} ENABLE TRIGGER zz_ledger_append",  # ALWAYS -> ORIGIN
                  f"DROP TRIGGER ledger_refuse_truncate ON {part(1)}", f"ALTER TABLE {part(2)} SET UNLOGGED"]
    outcomes = {}
    for statement in statements:
        try:
            as_owner.execute(statement)
            outcomes[statement] = "done"
        except psycopg.Error as e:
            outcomes[statement] = e.sqlstate
    assert outcomes == {statement: "42501" for statement in statements}
    assert db.scalar("SELECT ledger.definition('ev')") == definition
    assert db.fetchall("SELECT inhrelid::regclass::text, inhdetachpending FROM pg_inherits "
                       "WHERE inhparent = 'ev'::regclass ORDER BY 1") == [(part(m), False) for m in MONTHS]
    for statement in [f"TRUNCATE {part(1)}", "TRUNCATE ev"]:
        with pytest.raises(psycopg.Error) as refused:
            as_owner.execute(statement)
        assert refused.value.sqlstate == "23001", statement
    assert db.verify("ev") == [] and offline_verify(db.export_lines("ev")) == []
    # Still a working ledger for its owner.
    assert as_owner.execute("INSERT INTO ev (id, account, amount, at) VALUES (100, 'a', 1, '2026-04-30 00:00+00') "
                            "RETURNING seq").fetchone() == (13,)


def test_a_concurrent_detach_by_the_owner_is_refused_too_late_and_reported(db, roles):
    """DETACH ... CONCURRENTLY commits its first step before the guard runs: the guard refuses the
    second, and the partition stays attached, its detach pending, which both verifiers report; its
    records are still read and the chains' heads still found."""
    owner = roles.make("owner", create_in_public=True)
    as_owner = roles.connect(owner)
    make_ledger(as_owner)
    with pytest.raises(psycopg.Error) as refused:
        as_owner.execute(f"ALTER TABLE ev DETACH PARTITION {part(3)} CONCURRENTLY")
    assert refused.value.sqlstate == "42501"
    assert db.fetchall("SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = %s::regclass", (part(3),)) == [(True,)]
    found = db.fetchall("SELECT chain, seq, problem, detail FROM ledger.verify('ev')")
    assert found[0][:3] == (None, None, "definition_changed") and "detach_pending" in found[0][3], found
    assert offline_verify(db.export_lines("ev"))[0] == (None, None, "definition_changed")
    # Records keep their chains: the head lookup reads the pending partition too.
    assert db.fetchall("SELECT count(*), count(DISTINCT (account, seq)) FROM ONLY " + part(3)) == [(9, 9)]
    with pytest.raises(psycopg.Error) as finalize:
        as_owner.execute(f"ALTER TABLE ev DETACH PARTITION {part(3)} FINALIZE")
    assert finalize.value.sqlstate == "42501"
