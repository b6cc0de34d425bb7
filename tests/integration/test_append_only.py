"""Ledger tables are append-only: UPDATE, DELETE, TRUNCATE, MERGE and ON CONFLICT DO UPDATE are
refused with SQLSTATE 23001, even with session_replication_role = replica."""

from __future__ import annotations

import uuid

import pytest
from psycopg import errors

from ledgertest import assert_clean, insert_record

A, B = str(uuid.UUID(int=0xA)), str(uuid.UUID(int=0xB))

CHANGES = {
    "update": "UPDATE ledger.records SET payload = '{{\"x\": 1}}' WHERE anchor_id = '{a}'",
    "update_ledger_column": "UPDATE ledger.records SET seq = seq WHERE anchor_id = '{a}'",
    "update_all": "UPDATE ledger.records SET kind = kind",
    "delete": "DELETE FROM ledger.records WHERE anchor_id = '{a}' AND seq = 3",
    "delete_all": "DELETE FROM ledger.records",
    "truncate": "TRUNCATE ledger.records",
    "truncate_cascade": "TRUNCATE ledger.records CASCADE",
    "merge_update": """MERGE INTO ledger.records r USING (SELECT '{a}'::uuid AS a) s
                       ON r.anchor_id = s.a WHEN MATCHED THEN UPDATE SET slot = 'merged'""",
    "merge_delete": """MERGE INTO ledger.records r USING (SELECT '{a}'::uuid AS a) s
                       ON r.anchor_id = s.a WHEN MATCHED THEN DELETE""",
    "merge_update_or_insert": """MERGE INTO ledger.records r
                       USING (VALUES ('{a}'::uuid), ('{new}'::uuid)) s(a) ON r.anchor_id = s.a
                       WHEN MATCHED THEN UPDATE SET slot = 'merged'
                       WHEN NOT MATCHED THEN INSERT (anchor_id, slot, kind, payload)
                                             VALUES (s.a, 's', 'k', '{{}}')""",
    "on_conflict_do_update": """INSERT INTO ledger.records (rid, anchor_id, slot, kind, payload)
                       SELECT rid, anchor_id, 's', 'k', '{{}}' FROM ledger.records
                        WHERE anchor_id = '{a}' AND seq = 1
                       ON CONFLICT (rid) DO UPDATE SET slot = 'upserted'""",
    "update_via_cte": """WITH u AS (UPDATE ledger.records SET slot = 'x' WHERE anchor_id = '{a}'
                       RETURNING 1) SELECT count(*) FROM u""",
}


def populate(db):
    cur = db.conn.cursor()
    for i in range(4):
        insert_record(cur, A, payload={"i": i})
    insert_record(cur, B)
    return db.snapshot()


@pytest.mark.parametrize("replica", [False, True], ids=["origin", "replica"])
@pytest.mark.parametrize("change", list(CHANGES))
def test_change_is_refused(db, change, replica):
    before = populate(db)
    conn = db.connect(autocommit=True)
    if replica:
        conn.execute("SET session_replication_role = replica")
    query = CHANGES[change].format(a=A, new=uuid.uuid4())
    with pytest.raises(errors.RestrictViolation) as info:
        conn.execute(query)
    assert info.value.sqlstate == "23001"
    assert db.snapshot() == before
    assert_clean(db)


def test_zero_row_changes_succeed(db):
    before = populate(db)
    missing = uuid.uuid4()
    cur = db.conn.cursor()
    cur.execute("UPDATE ledger.records SET slot = 'x' WHERE anchor_id = %s", (missing,))
    assert cur.rowcount == 0 and cur.statusmessage == "UPDATE 0"
    cur.execute("DELETE FROM ledger.records WHERE anchor_id = %s", (missing,))
    assert cur.rowcount == 0 and cur.statusmessage == "DELETE 0"
    cur.execute("MERGE INTO ledger.records r USING (SELECT %s::uuid AS a) s ON r.anchor_id = s.a "
                "WHEN MATCHED THEN DELETE", (missing,))
    assert cur.rowcount == 0
    assert db.snapshot() == before


def test_merge_insert_only_appends(db):
    """MERGE whose only action is INSERT is an append like any other."""
    populate(db)
    new = uuid.uuid4()
    db.execute("MERGE INTO ledger.records r USING (VALUES (%s::uuid), (%s::uuid), (%s::uuid)) s(a) "
               "ON false WHEN NOT MATCHED THEN INSERT (anchor_id, slot, kind, payload) "
               "VALUES (s.a, 'm', 'k', '{}')", (A, new, A))
    assert db.fetchall("SELECT anchor_id::text, max(seq) FROM ledger.records GROUP BY 1 ORDER BY 1") \
        == sorted([(A, 6), (B, 1), (str(new), 1)])
    assert_clean(db)


def test_refused_inside_transaction_keeps_earlier_appends(db):
    """A refused change in a savepoint does not disturb the transaction's own appends."""
    populate(db)
    conn = db.connect()
    with conn.cursor() as cur:
        r = insert_record(cur, A)
        cur.execute("SAVEPOINT sp")
        with pytest.raises(errors.RestrictViolation):
            cur.execute("DELETE FROM ledger.records WHERE rid = %s", (r[0],))
        cur.execute("ROLLBACK TO SAVEPOINT sp")
        r2 = insert_record(cur, A)
        assert r2[1:3] == (6, r[3])
    conn.commit()
    assert_clean(db)


def test_user_table_is_append_only(db):
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    db.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    db.execute("SELECT ledger.enable('t')")
    before = db.snapshot("t", None)
    for query in ["UPDATE t SET v = 'z'", "DELETE FROM t WHERE id = 1", "TRUNCATE t",
                  "MERGE INTO t USING (SELECT 1 AS id) s ON t.id = s.id "
                  "WHEN MATCHED THEN UPDATE SET v = 'm'"]:
        with pytest.raises(errors.RestrictViolation):
            db.execute(query)
    db.execute("SET session_replication_role = replica")
    try:
        with pytest.raises(errors.RestrictViolation):
            db.execute("UPDATE t SET v = 'z'")
    finally:
        db.execute("RESET session_replication_role")
    assert db.snapshot("t", None) == before
    assert_clean(db, "t")
