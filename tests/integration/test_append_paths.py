"""Every way rows reach a ledger table leaves dense, verified chains: COPY, multi-row VALUES,
INSERT ... SELECT, data-modifying CTEs, PL/pgSQL loops with EXCEPTION blocks, audit triggers, and
INSERT ... ON CONFLICT DO NOTHING."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from psycopg import errors
from psycopg.types.json import Jsonb

from ledgertest import (assert_clean, assert_dense, insert_record, insert_records,
                        offline_verify)

A, B, C = (str(uuid.UUID(int=i)) for i in (0xA, 0xB, 0xC))

PLPGSQL_LOOP = """
CREATE FUNCTION append_many(chain uuid, n int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    caught int := 0;
BEGIN
    FOR i IN 1..n LOOP
        BEGIN
            IF i % 5 = 0 THEN
                -- refused by the ledger's trigger (malformed supplied hash)
                INSERT INTO ledger.records (anchor_id, slot, kind, payload, hash)
                VALUES (chain, 's', 'bad', jsonb_build_object('i', i), 'xyz');
            ELSIF i % 7 = 0 THEN
                -- chained and stored, then undone by an error later in the same block
                INSERT INTO ledger.records (anchor_id, slot, kind, payload)
                VALUES (chain, 's', 'undone', jsonb_build_object('i', i));
                PERFORM 1 / 0;
            ELSIF i % 11 = 0 THEN
                -- chained by the trigger, then refused by the primary key
                INSERT INTO ledger.records (rid, anchor_id, slot, kind, payload)
                SELECT rid, chain, 's', 'dup', '{}' FROM ledger.records
                 WHERE anchor_id = chain ORDER BY seq LIMIT 1;
            ELSE
                INSERT INTO ledger.records (anchor_id, slot, kind, payload)
                VALUES (chain, 's', 'ok', jsonb_build_object('i', i));
            END IF;
        EXCEPTION WHEN OTHERS THEN
            caught := caught + 1;
        END;
    END LOOP;
    RETURN caught;
END $$;
"""
# For n = 40: 8 multiples of 5, 4 of 7 (35 counts as 5), 3 of 11.
LOOP_CAUGHT, LOOP_STORED = 15, 25


def kinds(db, chain):
    return Counter(r[0] for r in db.fetchall(
        "SELECT kind FROM ledger.records WHERE anchor_id = %s", (chain,)))


def test_copy_text_and_binary(db):
    conn = db.connect()
    chains = [A, B, C]
    with conn.cursor() as cur:
        with cur.copy("COPY ledger.records (rid, anchor_id, slot, kind, payload) FROM STDIN") as cp:
            for i in range(600):
                cp.write_row((uuid.uuid4(), chains[i % 3], "copy", "text",
                              json.dumps({"i": i, "s": "ü\t\\"})))
        # More rows in the same transaction, after the COPY.
        insert_records(cur, [(uuid.uuid4(), A, {"after": "copy"})])
        with cur.copy("COPY ledger.records (rid, anchor_id, slot, kind, payload) "
                      "FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types(["uuid", "uuid", "text", "text", "jsonb"])
            for i in range(150):
                cp.write_row((uuid.uuid4(), uuid.UUID(chains[(i * 7) % 3]), "copy", "binary",
                              Jsonb({"i": i})))
    conn.commit()
    assert_dense(db, {A: 251, B: 250, C: 250})
    assert_clean(db)


def test_copy_rolled_back_then_retried(db):
    conn = db.connect()
    insert_record(db.conn.cursor(), A)
    with pytest.raises(errors.InvalidTextRepresentation):
        with conn.cursor() as cur:
            with cur.copy("COPY ledger.records (anchor_id, slot, kind, payload, hash) "
                          "FROM STDIN") as cp:
                for i in range(50):
                    cp.write_row((A, "s", "k", "{}", None if i < 49 else "nothex"))
    conn.rollback()
    with conn.cursor() as cur:
        with cur.copy("COPY ledger.records (anchor_id, slot, kind, payload) FROM STDIN") as cp:
            for i in range(50):
                cp.write_row((A, "s", "k", "{}"))
    conn.commit()
    assert_dense(db, {A: 51})
    assert_clean(db)


def test_multi_row_values_interleaved(db):
    conn = db.connect()
    with conn.cursor() as cur:
        insert_records(cur, [(uuid.uuid4(), [A, B, C, A, A, B][i % 6], {"i": i})
                             for i in range(60)])
        insert_records(cur, [(uuid.uuid4(), [C, B][i % 2], {"i": i}) for i in range(7)])
    conn.commit()
    assert_dense(db, {A: 30, B: 23, C: 14})
    assert_clean(db)


def test_single_row_prepared_statements(db):
    conn = db.connect(autocommit=True)
    with conn.cursor() as cur:
        for i in range(30):
            cur.execute("INSERT INTO ledger.records (anchor_id, slot, kind, payload) "
                        "VALUES (%s, 's', 'k', %s)", ([A, B][i % 2], Jsonb({"i": i})),
                        prepare=True)
    assert_dense(db, {A: 15, B: 15})
    assert_clean(db)


def test_insert_select(db):
    db.execute("INSERT INTO ledger.records (anchor_id, slot, kind, payload) "
               "SELECT (ARRAY[%s, %s, %s]::uuid[])[g %% 3 + 1], 'sel', 'k', "
               "jsonb_build_object('g', g) FROM generate_series(1, 300) g", (A, B, C))
    # INSERT ... SELECT reading the very chain it appends to (it must not see its own rows).
    db.execute("INSERT INTO ledger.records (anchor_id, slot, kind, payload) "
               "SELECT anchor_id, 'again', kind, payload FROM ledger.records "
               "WHERE anchor_id = %s ORDER BY seq", (A,))
    # A data-modifying CTE: two INSERTs into the same chains in one command.
    db.execute("WITH first AS (INSERT INTO ledger.records (anchor_id, slot, kind, payload) "
               "  SELECT %s, 'cte1', 'k', jsonb_build_object('g', g) FROM generate_series(1, 5) g "
               "  RETURNING anchor_id, payload) "
               "INSERT INTO ledger.records (anchor_id, slot, kind, payload) "
               "SELECT anchor_id, 'cte2', 'k', payload FROM first", (C,))
    assert_dense(db, {A: 200, B: 100, C: 110})
    assert_clean(db)


def test_plpgsql_loop_with_exception_blocks(db):
    db.execute(PLPGSQL_LOOP)
    # In autocommit.
    assert db.scalar("SELECT append_many(%s, 40)", (A,)) == LOOP_CAUGHT
    # Inside a transaction, between other appends to the same chain and to another chain.
    conn = db.connect()
    with conn.cursor() as cur:
        insert_record(cur, B)
        insert_record(cur, A)
        cur.execute("SELECT append_many(%s, 40)", (A,))
        assert cur.fetchone()[0] == LOOP_CAUGHT
        cur.execute("SELECT append_many(%s, 40)", (B,))
        insert_record(cur, A)
        insert_record(cur, B)
    conn.commit()
    assert kinds(db, A) == Counter({"ok": 2 * LOOP_STORED, "k": 2})
    assert_dense(db, {A: 2 * LOOP_STORED + 2, B: LOOP_STORED + 2})
    assert_clean(db)


def test_first_append_of_chain_undone_by_exception_block(db):
    """The chain's first append in the transaction is undone by the block's error: the next append
    is seq 1 again, and no lock or cached head of the undone row survives."""
    conn = db.connect()
    with conn.cursor() as cur:
        cur.execute("""
            DO $$
            BEGIN
                BEGIN
                    INSERT INTO ledger.records (anchor_id, slot, kind, payload)
                    VALUES ('%s', 's', 'undone', '{}');
                    PERFORM 1 / 0;
                EXCEPTION WHEN division_by_zero THEN NULL;
                END;
                INSERT INTO ledger.records (anchor_id, slot, kind, payload)
                VALUES ('%s', 's', 'kept', '{}');
            END $$""" % (A, A))
    conn.commit()
    row = db.fetchone("SELECT seq, prev_hash, kind FROM ledger.records WHERE anchor_id = %s", (A,))
    assert row == (1, None, "kept")
    assert_clean(db)


def test_plpgsql_loops_concurrently(db):
    db.execute(PLPGSQL_LOOP)
    n = 4

    def call(_):
        conn = db.connect(autocommit=True)
        return conn.execute("SELECT append_many(%s, 40)", (A,)).fetchone()[0]

    with ThreadPoolExecutor(n) as pool:
        assert list(pool.map(call, range(n))) == [LOOP_CAUGHT] * n
    assert_dense(db, {A: n * LOOP_STORED})
    assert_clean(db)


def test_audit_triggers_on_another_table(db):
    """Rows appended by BEFORE and AFTER (row and statement) triggers of another table."""
    db.execute("""
        CREATE TABLE orders (id serial PRIMARY KEY, account uuid NOT NULL, amount numeric);
        CREATE FUNCTION audit_row() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO ledger.records (anchor_id, slot, kind, payload)
            VALUES (NEW.account, TG_WHEN, TG_OP, to_jsonb(NEW));
            RETURN NEW;
        END $$;
        CREATE FUNCTION audit_stmt() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO ledger.records (anchor_id, slot, kind, payload)
            SELECT account, 'STATEMENT', TG_OP, jsonb_build_object('n', count(*))
              FROM new_rows GROUP BY account;
            RETURN NULL;
        END $$;
        CREATE TRIGGER a_before BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION audit_row();
        CREATE TRIGGER b_after AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION audit_row();
        CREATE TRIGGER c_stmt AFTER INSERT ON orders REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION audit_stmt();
        -- Deferred to commit time: these appends run just before the pre-commit density check.
        CREATE CONSTRAINT TRIGGER d_deferred AFTER INSERT ON orders
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION audit_row();
    """)
    db.execute("INSERT INTO orders (account, amount) SELECT (ARRAY[%s, %s]::uuid[])[g %% 2 + 1], g "
               "FROM generate_series(1, 20) g", (A, B))
    assert_dense(db, {A: 31, B: 31})
    # The same inside an explicit transaction with more appends after the INSERT.
    conn = db.connect()
    with conn.cursor() as cur:
        cur.execute("INSERT INTO orders (account, amount) VALUES (%s, 1), (%s, 2)", (A, C))
        insert_record(cur, A)
        insert_record(cur, C)
    conn.commit()
    assert_dense(db, {A: 31 + 5, B: 31, C: 5})
    assert_clean(db)


# ---- INSERT ... ON CONFLICT DO NOTHING -----------------------------------------------------------


def seed(db, chain, n):
    cur = db.conn.cursor()
    return [insert_record(cur, chain, payload={"i": i}) for i in range(n)]


def on_conflict_rows(cur, rows):
    """One multi-row INSERT ... ON CONFLICT (rid) DO NOTHING of (rid, anchor) rows."""
    values = ", ".join(["(%s, %s, 's', 'oc', '{}')"] * len(rows))
    cur.execute("INSERT INTO ledger.records (rid, anchor_id, slot, kind, payload) VALUES "
                + values + " ON CONFLICT (rid) DO NOTHING", [v for r in rows for v in r])
    return cur.rowcount


def test_on_conflict_do_nothing_single_rows(db):
    existing = seed(db, A, 3)
    cur = db.conn.cursor()
    assert on_conflict_rows(cur, [(existing[1][0], A)]) == 0
    assert on_conflict_rows(cur, [(existing[2][0], A)]) == 0
    row = insert_record(cur, A)
    assert row[1:3] == (4, existing[2][3])
    # In a transaction, interleaved with further appends to the same chain.
    conn = db.connect()
    with conn.cursor() as tx:
        assert on_conflict_rows(tx, [(existing[0][0], A)]) == 0  # first statement
        insert_record(tx, A)
        assert on_conflict_rows(tx, [(existing[0][0], A)]) == 0
        assert on_conflict_rows(tx, [(row[0], A)]) == 0
        insert_record(tx, A)
        assert on_conflict_rows(tx, [(uuid.uuid4(), A)]) == 1
        assert on_conflict_rows(tx, [(existing[1][0], A)]) == 0
    conn.commit()
    assert_dense(db, {A: 7})
    # The dropped last row was chained as seq 8 before it was skipped: the next append of this
    # session (which remembers the chain's head across transactions) still gets seq 8.
    with conn.cursor() as tx:
        assert insert_record(tx, A)[1] == 8
    conn.commit()
    assert_dense(db, {A: 8})
    assert_clean(db)


@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_on_conflict_do_nothing_multi_row(db, position):
    """A multi-row ON CONFLICT DO NOTHING skips the conflicting row wherever it is in the statement,
    and the rows stored form one dense chain."""
    existing = seed(db, A, 2)
    fresh = [(uuid.uuid4(), A) for _ in range(2)]
    dup = (existing[0][0], A)
    rows = {"first": [dup] + fresh, "middle": [fresh[0], dup, fresh[1]],
            "last": fresh + [dup]}[position]
    conn = db.connect(autocommit=True)
    assert on_conflict_rows(conn.cursor(), rows) == 2
    assert_dense(db, {A: 4})
    assert_clean(db)
    # The chain is usable afterwards.
    insert_record(db.conn.cursor(), A)
    assert_dense(db, {A: 5})
    assert_clean(db)


def test_on_conflict_do_nothing_multi_row_in_transaction(db):
    existing = seed(db, A, 2)
    seed(db, B, 1)
    conn = db.connect()
    with conn.cursor() as cur:
        insert_record(cur, B)
        assert on_conflict_rows(cur, [(uuid.uuid4(), A), (existing[1][0], A), (uuid.uuid4(), A)]) == 2
        insert_record(cur, A)
    conn.commit()
    assert_dense(db, {A: 5, B: 2})
    assert_clean(db)


def test_later_before_trigger_cannot_corrupt_chain(db):
    """A BEFORE INSERT trigger that fires after the ledger's (trigger names sort after
    `zz_ledger_append`) could change the row after it was hashed: the insert is refused (42P16)
    while it is enabled, nothing is stored, and renamed to sort first it works and the change is
    hashed."""
    db.execute("""
        CREATE TABLE notes (id int PRIMARY KEY, body text);
        SELECT ledger.enable('notes');
        CREATE FUNCTION shout() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN NEW.body := upper(NEW.body); RETURN NEW; END $$;
        CREATE TRIGGER zzz_shout BEFORE INSERT ON notes FOR EACH ROW EXECUTE FUNCTION shout();
    """)
    with pytest.raises(errors.InvalidTableDefinition) as refused:
        db.execute("INSERT INTO notes (id, body) VALUES (1, 'hello'), (2, 'world')")
    assert "zzz_shout" in str(refused.value)
    assert db.scalar("SELECT count(*) FROM notes") == 0
    db.execute("ALTER TRIGGER zzz_shout ON notes RENAME TO a_shout")
    db.execute("INSERT INTO notes (id, body) VALUES (1, 'hello'), (2, 'world')")
    assert db.fetchall("SELECT body, seq FROM notes ORDER BY id") == [("HELLO", 1), ("WORLD", 2)]
    assert db.verify("notes") == []
    assert offline_verify(db.export_lines("notes")) == []
