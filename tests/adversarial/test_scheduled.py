"""A superuser against the scheduled jobs: what the nightly verify_all and the checkpoints made by
checkpoint_all catch, and what hiding a failed run from ledger.stats runs into."""

from __future__ import annotations


def setup_ledger(db):
    db.execute("CREATE TABLE t (id int PRIMARY KEY, account text NOT NULL, body text NOT NULL)")
    db.execute("SELECT ledger.enable('t', chain_by => 'account')")
    db.execute("INSERT INTO t SELECT i, 'acct' || (i % 3), 'row ' || i FROM generate_series(1, 30) i")


def run_of(db, ledger):
    return db.fetchone("SELECT problems, checkpoints_checked, checkpoint_failures FROM ledger.verify_all() "
                       "WHERE ledger = %s", (ledger,))


def as_superuser_behind_triggers(db, tbl, statement):
    db.execute(f"ALTER TABLE {tbl} DISABLE TRIGGER ledger_refuse_change")
    db.execute(statement)
    db.execute(f"ALTER TABLE {tbl} ENABLE ALWAYS TRIGGER ledger_refuse_change")


def test_deleted_newest_record_is_caught_by_the_nightly_run(db):
    setup_ledger(db)
    assert db.scalar("SELECT count(*) FROM ledger.checkpoint_all() WHERE ledger = 'public.t'") == 3
    assert run_of(db, "public.t") == (0, 3, 0)
    # The newest record of a chain goes: the chain left behind is valid, its checkpoint is not.
    as_superuser_behind_triggers(db, "t", "DELETE FROM t WHERE account = 'acct1' AND seq = 10")
    assert db.verify("t") == []
    assert run_of(db, "public.t") == (0, 3, 1)
    assert db.fetchone("SELECT last_verify_problems, unanchored_records FROM ledger.stats "
                       "WHERE ledger = 'public.t'") == (1, 0)


def test_edited_record_and_edited_run_are_caught(db):
    setup_ledger(db)
    db.execute("SELECT count(*) FROM ledger.checkpoint_all()")
    as_superuser_behind_triggers(db, "t", "UPDATE t SET body = 'forged' WHERE id = 4")
    assert run_of(db, "public.t") == (1, 3, 0)
    # Rewriting the run as clean is a hash mismatch in ledger.verify_runs.
    as_superuser_behind_triggers(db, "ledger.verify_runs",
                                 "UPDATE ledger.verify_runs SET problems = 0 WHERE ledger = 'public.t'")
    assert db.scalar("SELECT last_verify_problems FROM ledger.stats WHERE ledger = 'public.t'") == 0
    assert db.verify("ledger.verify_runs") == [("public.t", 1, "hash_mismatch")]
    runs = {r[0]: r[1] for r in db.fetchall("SELECT ledger, problems FROM ledger.verify_all()")}
    assert runs["ledger.verify_runs"] == 1 and runs["public.t"] == 1


def test_hiding_a_failed_run_is_caught(db):
    setup_ledger(db)
    db.execute("SELECT count(*) FROM ledger.checkpoint_all()")
    assert run_of(db, "public.t") == (0, 3, 0)
    as_superuser_behind_triggers(db, "t", "UPDATE t SET body = 'forged' WHERE id = 4")
    assert run_of(db, "public.t") == (1, 3, 0)
    # The failed run is checkpointed (every few minutes, by the schedule) ...
    made = db.fetchall("SELECT ledger, chain, record_count FROM ledger.checkpoint_all()")
    assert ("ledger.verify_runs", "public.t", 2) in made
    # ... so when a superuser deletes it, ledger.stats shows the clean run before it, but the next
    # run finds the run history shorter than its checkpoint.
    as_superuser_behind_triggers(db, "ledger.verify_runs",
                                 "DELETE FROM ledger.verify_runs WHERE ledger = 'public.t' AND seq = 2")
    assert db.scalar("SELECT last_verify_problems FROM ledger.stats WHERE ledger = 'public.t'") == 0
    runs = {r[0]: (r[1], r[2]) for r in db.fetchall("SELECT ledger, problems, checkpoint_failures "
                                                     "FROM ledger.verify_all()")}
    assert runs["ledger.verify_runs"] == (0, 1)
    assert db.scalar("SELECT last_verify_problems FROM ledger.stats WHERE ledger = 'ledger.verify_runs'") == 1
