"""Roles, logged in for real (CREATE ROLE ... LOGIN, over the cluster's socket): what ledger_writer,
ledger_auditor, a role with neither and a table owner who is not a superuser may and may not do
(README "Roles", "Errors"). Writers append to ledger.records and chain correctly, multi-row
transactions included (their commit-time check runs as the extension's owner), but change nothing
(42501: no UPDATE/DELETE/TRUNCATE privilege, checked before any trigger) and read neither checkpoints
nor events; auditors read and verify everything and checkpoint, but write none of the extension's
tables (42501); a role with neither reads nothing (42501). A table owner enables, appends to and
retires their own ledger (later appends: 55000), has UPDATE/DELETE/TRUNCATE refused by the triggers
(23001), and gets 42501 for enabling or retiring a table they do not own and for dropping their ledger."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from ledgertest import assert_clean, assert_dense

A, B, C = (str(uuid.UUID(int=i)) for i in (0xA, 0xB, 0xC))
OK = "ok"
ADD = "INSERT INTO ledger.records (anchor_id, slot, kind, payload) VALUES ('{}', 's', 'k', '{{}}')"


def outcome(conn: psycopg.Connection, statement: str) -> str:
    try:
        cur = conn.execute(statement)
        if cur.description is not None:
            cur.fetchall()
        return OK
    except psycopg.Error as e:
        return e.sqlstate


@pytest.fixture
def setup(db, roles):
    """The roles, a superuser's user ledger `theirs` (granted as the README says), a few records and a
    checkpoint of chain A."""
    who = {
        "writer": roles.make("writer", "ledger_writer"),
        "auditor": roles.make("auditor", "ledger_auditor"),
        "plain": roles.make("plain"),
        "owner": roles.make("owner", create_in_public=True),
    }
    db.execute("CREATE TABLE theirs (id int PRIMARY KEY, body text NOT NULL)")
    db.execute("SELECT ledger.enable('theirs')")
    db.execute("GRANT SELECT, INSERT ON theirs TO ledger_writer; GRANT SELECT ON theirs TO ledger_auditor")
    db.execute("INSERT INTO theirs VALUES (1, 'one'), (2, 'two')")
    for chain in (A, A, A, B):
        db.execute(ADD.format(chain))
    cid = str(db.scalar("SELECT cid FROM ledger.checkpoint('ledger.records', %s)", (A,)))
    conns = {name: roles.connect(role) for name, role in who.items()}
    return who, conns, cid


def test_writer_appends_and_chains_multi_row_transactions(db, setup):
    _, conns, _ = setup
    writer = psycopg.connect(conns["writer"].info.dsn)  # a transaction of its own
    try:
        with writer.transaction():
            writer.execute(f"{ADD.format(C)}, ('{C}', 's', 'k', '{{}}'), ('{C}', 's', 'k', '{{}}')")
            writer.execute("INSERT INTO ledger.records (anchor_id, slot, kind, payload) "
                           "SELECT %s, 's', 'k', jsonb_build_object('g', g) FROM generate_series(1, 5) g", (A,))
            writer.execute(ADD.format(B))
            rows = writer.execute("INSERT INTO ledger.records (anchor_id, slot, kind, payload) "
                                  f"VALUES ('{C}', 's', 'k', '{{}}') RETURNING seq, prev_hash, hash").fetchall()
        assert rows[0][0] == 4
        with writer.transaction():
            with writer.cursor().copy("COPY ledger.records (anchor_id, slot, kind, payload) FROM STDIN") as copy:
                for i in range(3):
                    copy.write_row((B, "s", "k", f'{{"copy": {i}}}'))
    finally:
        writer.close()
    assert db.fetchone("SELECT prev_hash, hash FROM ledger.records WHERE anchor_id = %s AND seq = 4", (C,)) \
        == (db.scalar("SELECT hash FROM ledger.records WHERE anchor_id = %s AND seq = 3", (C,)), rows[0][2])
    assert_dense(db, {A: 8, B: 5, C: 4})
    assert_clean(db)


# (role, statement, expected outcome: "ok" or the SQLSTATE). {cid}: the checkpoint of chain A.
MATRIX = [
    # ledger_writer: appends; changes nothing, lacking the privileges (checked before the triggers).
    ("writer", ADD.format(A), OK),
    ("writer", "INSERT INTO theirs VALUES (10, 'ten')", OK),
    ("writer", "SELECT * FROM ledger.records", OK),
    ("writer", "UPDATE ledger.records SET payload = '{}'", "42501"),
    ("writer", "DELETE FROM ledger.records", "42501"),
    ("writer", "TRUNCATE ledger.records", "42501"),
    ("writer", "UPDATE theirs SET body = 'x'", "42501"),
    ("writer", "SELECT * FROM ledger.checkpoints", "42501"),
    ("writer", "SELECT * FROM ledger.events", "42501"),
    ("writer", "SELECT * FROM ledger.ledgers", OK),  # readable by everyone
    ("writer", "SELECT * FROM ledger.verify()", OK),
    # It can read ledger.records, so it may checkpoint it (README: checkpoint needs SELECT only) ...
    ("writer", f"SELECT * FROM ledger.checkpoint('ledger.records', '{A}')", OK),
    # ... but verifying a checkpoint reads ledger.checkpoints, which is for auditors.
    ("writer", "SELECT * FROM ledger.verify_checkpoint('{cid}')", "42501"),
    ("writer", "INSERT INTO ledger.checkpoints (ledger, range_start, range_end, record_count, merkle_root, "
               "frontier) VALUES ('x', '1', '1', 1, repeat('0', 64), '')", "42501"),
    # ledger_auditor: reads and verifies everything, checkpoints; writes none of the extension's tables.
    ("auditor", "SELECT * FROM ledger.records", OK),
    ("auditor", "SELECT * FROM ledger.checkpoints", OK),
    ("auditor", "SELECT * FROM ledger.events", OK),
    ("auditor", "SELECT * FROM ledger.verify()", OK),
    ("auditor", "SELECT * FROM ledger.verify('theirs')", OK),
    ("auditor", f"SELECT * FROM ledger.checkpoint('ledger.records', '{B}')", OK),
    ("auditor", "SELECT * FROM ledger.checkpoint('theirs')", OK),
    ("auditor", "SELECT * FROM ledger.verify_checkpoint('{cid}')", OK),
    ("auditor", "SELECT ledger.inclusion_proof('{cid}', 2)", OK),
    ("auditor", "SELECT * FROM ledger.verify_digest(ledger.digest('{cid}'))", OK),
    ("auditor", "SELECT * FROM ledger.export('ledger.records')", OK),
    ("auditor", ADD.format(A), "42501"),
    ("auditor", "INSERT INTO theirs VALUES (11, 'eleven')", "42501"),
    ("auditor", "INSERT INTO ledger.checkpoints SELECT * FROM ledger.checkpoints", "42501"),
    ("auditor", "INSERT INTO ledger.events (ledger, event, actor) VALUES ('public.theirs', 'retire', 'me')",
     "42501"),
    ("auditor", "UPDATE ledger.ledgers SET definition = NULL", "42501"),
    # Neither role: reads nothing, so verifies and checkpoints nothing.
    ("plain", "SELECT * FROM ledger.records", "42501"),
    ("plain", ADD.format(A), "42501"),
    ("plain", "SELECT * FROM ledger.verify()", "42501"),  # it would name chains and hashes it cannot read
    ("plain", "SELECT * FROM ledger.verify('theirs')", "42501"),
    ("plain", f"SELECT ledger.merkle_root('ledger.records', '{A}', 1, 3)", "42501"),
    ("plain", f"SELECT * FROM ledger.checkpoint('ledger.records', '{A}')", "42501"),
    ("plain", "SELECT * FROM ledger.export('ledger.records')", "42501"),
    ("plain", "SELECT * FROM ledger.ledgers", OK),
    # A table owner who is not a superuser, on a table they do not own.
    ("owner", "SELECT ledger.enable('ledger.records')", "42501"),  # not theirs (and already a ledger)
    ("owner", "SELECT * FROM ledger.retire('theirs', 'not mine')", "42501"),
    ("owner", "DROP TABLE theirs", "42501"),
]


@pytest.mark.parametrize("role, statement, expected", MATRIX,
                         ids=[f"{r}:{s[:50]}" for r, s, _ in MATRIX])
def test_privileges(db, setup, role, statement, expected):
    _, conns, cid = setup
    before = db.snapshot(), db.snapshot("theirs", None)
    got = outcome(conns[role], statement.replace("{cid}", cid))
    assert got == expected, (role, statement)
    if got != OK:
        assert (db.snapshot(), db.snapshot("theirs", None)) == before  # a refusal changes nothing
    assert_clean(db)
    assert_clean(db, "theirs")


def test_owner_not_superuser_enables_appends_and_retires(db, setup):
    who, conns, _ = setup
    owner = conns["owner"]
    db.execute("CREATE TABLE someone_elses (id int PRIMARY KEY)")
    db.execute(f'CREATE TABLE handed (id int PRIMARY KEY); ALTER TABLE handed OWNER TO "{who["owner"]}"')

    owner.execute("CREATE TABLE mine (id int PRIMARY KEY, account text NOT NULL, amount int NOT NULL)")
    steps = [
        ("SELECT ledger.enable('someone_elses')", "42501"),
        ("SELECT ledger.enable('mine', 'account')", OK),
        ("SELECT ledger.enable('handed')", OK),  # made by a superuser, owned by them: theirs to enable
        ("INSERT INTO mine VALUES (1, 'a', 10), (2, 'b', 5), (3, 'a', 7)", OK),
        ("UPDATE mine SET amount = 0", "23001"),  # the owner has the privilege; the trigger refuses
        ("DELETE FROM mine", "23001"),
        ("TRUNCATE mine", "23001"),
        ("DROP TABLE mine", "42501"),
        ("ALTER TABLE mine DISABLE TRIGGER ALL", "42501"),
        ("SELECT * FROM ledger.retire('mine', '   ')", "22023"),
    ]
    assert [(s, outcome(owner, s)) for s, _ in steps] == steps

    started = db.scalar("SELECT clock_timestamp()")
    retired = owner.execute("SELECT chain, record_count, ledger FROM ledger.retire('mine', 'moved to mine_v2') "
                            "ORDER BY chain").fetchall()
    assert retired == [("a", 2, "public.mine"), ("b", 1, "public.mine")]
    # When: the retirement's time, as the transaction that made it saw it.
    assert db.scalar("SELECT at FROM ledger.events WHERE ledger = 'public.mine' AND event = 'retire'") \
        == db.scalar("SELECT retired_at FROM ledger.ledgers WHERE tbl = 'mine'::regclass")
    assert started <= db.scalar("SELECT at FROM ledger.events WHERE ledger = 'public.mine' AND event = 'retire'") \
        <= db.scalar("SELECT clock_timestamp()")
    after = [
        ("INSERT INTO mine VALUES (4, 'a', 1)", "55000"),
        ("INSERT INTO mine VALUES (5, 'c', 1)", "55000"),
        ("SELECT * FROM ledger.retire('mine', 'again')", "55000"),
        ("DROP TABLE mine", "42501"),
    ]
    assert [(s, outcome(owner, s)) for s, _ in after] == after
    assert db.verify("mine") == []
    assert db.fetchall("SELECT event, actor, reason FROM ledger.events WHERE ledger = 'public.mine' ORDER BY seq") \
        == [("enable", who["owner"], None), ("retire", who["owner"], "moved to mine_v2")]
    assert db.fetchone("SELECT retired_by, retire_reason FROM ledger.ledgers WHERE tbl = 'mine'::regclass") \
        == (who["owner"], "moved to mine_v2")
    for chain, size, _ in retired:  # the final checkpoints verify (as a superuser: they are for auditors)
        cid = db.scalar("SELECT cid FROM ledger.checkpoints WHERE ledger = 'public.mine' AND chain = %s", (chain,))
        assert {c: ok for c, ok, _ in db.fetchall("SELECT * FROM ledger.verify_checkpoint(%s)", (cid,))} == {
            "checkpoint_row": True, "signature": None, "key": None, "merkle_root": True, "previous": True,
            "definition": True}


def test_owner_cannot_swap_the_head_index(db, roles):
    """The (chain, seq) index is what appends read a chain's head from. An owner may drop and
    recreate indexes; one that compares chain values differently (a non-deterministic collation, so
    'ALICE' would find 'alice''s head) or orders seq differently is not used: appends are refused
    (42P16) until a plain one is back, and the chains stay intact."""
    owner = roles.make("owner", create_in_public=True)
    db.execute("CREATE COLLATION IF NOT EXISTS public.ledger_test_ci "
               "(provider = icu, locale = 'und-u-ks-level2', deterministic = false)")
    conn = roles.connect(owner)
    conn.execute("CREATE TABLE acct (id int PRIMARY KEY, who text NOT NULL, amount int)")
    conn.execute("SELECT ledger.enable('acct', 'who')")
    conn.execute("INSERT INTO acct VALUES (1, 'alice', 1), (2, 'alice', 2)")
    index = conn.execute("SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'acct'::regclass "
                         "AND NOT indisprimary").fetchone()[0]
    for replacement in ("(who COLLATE public.ledger_test_ci, seq)", "(who, seq DESC)",
                        "(who text_pattern_ops, seq)", "(who, seq) WHERE seq > 0", "(lower(who), seq)"):
        conn.execute(f"DROP INDEX {index}")
        conn.execute(f"CREATE UNIQUE INDEX acct_head ON acct {replacement}")
        index = "acct_head"
        assert outcome(conn, "INSERT INTO acct VALUES (3, 'ALICE', 3)") == "42P16", replacement
        assert outcome(conn, "INSERT INTO acct VALUES (3, 'alice', 3)") == "42P16", replacement
    conn.execute("DROP INDEX acct_head")
    conn.execute("CREATE UNIQUE INDEX acct_head ON acct (who, seq)")
    conn.execute("INSERT INTO acct VALUES (3, 'ALICE', 3), (4, 'alice', 4)")
    assert db.fetchall("SELECT who, seq FROM acct ORDER BY id") == [
        ("alice", 1), ("alice", 2), ("ALICE", 1), ("alice", 3)]
    assert_clean(db, "acct")
    conn.close()
    db.execute("DROP TABLE acct")
    db.execute("DROP COLLATION public.ledger_test_ci")
