"""The extension writes its registry, events and checkpoints, and checks a transaction's chains at
commit, as the extension's owner (a superuser). A writer who puts a schema of its own first on
search_path, holding an `=` operator for the chain column's type, must not get that operator run with
the owner's rights. Outcome: the appends, the commit-time check and a checkpoint all work, the
operator never runs as a superuser, and the writer stays a plain role."""

from __future__ import annotations

import uuid

EVIL = """
CREATE SCHEMA {schema};
CREATE FUNCTION {schema}.eq(a uuid, b uuid) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('ALTER ROLE %I SUPERUSER', session_user);
    END IF;
    RETURN a OPERATOR(pg_catalog.=) b;
END
$f$;
CREATE OPERATOR {schema}.= (LEFTARG = uuid, RIGHTARG = uuid, FUNCTION = {schema}.eq);
"""


def is_superuser(db, role: str) -> bool:
    return db.scalar("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,))


def test_callers_operators_do_not_run_as_the_extension_owner(db, roles):
    writer = roles.make("writer", "ledger_writer", "ledger_auditor")
    schema = f"evil_{uuid.uuid4().hex[:8]}"
    db.execute(f'GRANT CREATE ON DATABASE "{db.name}" TO "{writer}"')
    conn = roles.connect(writer, autocommit=False)
    conn.execute(EVIL.format(schema=schema))
    conn.commit()
    conn.execute(f"SET search_path = {schema}, pg_catalog, public")
    conn.commit()
    anchor = str(uuid.uuid4())
    # Several records of one chain in one transaction: the commit-time density check runs.
    conn.execute("INSERT INTO ledger.records (anchor_id, slot, kind, payload) "
                 "SELECT %s, 's', 'k', jsonb_build_object('i', g) FROM generate_series(1, 5) g", (anchor,))
    conn.commit()
    rows = conn.execute("SELECT count(*) FROM ledger.checkpoint('ledger.records', %s)", (anchor,)).fetchone()
    conn.commit()
    assert rows == (1,)
    assert conn.execute("SELECT count(*) FROM ledger.verify()").fetchone() == (0,)
    conn.rollback()
    assert not is_superuser(db, writer)
    assert db.scalar("SELECT count(*) FROM ledger.records WHERE anchor_id = %s", (anchor,)) == 5
    db.execute(f"DROP SCHEMA {schema} CASCADE")
    db.execute(f'REVOKE CREATE ON DATABASE "{db.name}" FROM "{writer}"')
