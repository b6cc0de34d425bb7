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


# Operators for argument types PostgreSQL has no exact operator for, so on a caller's path they
# beat pg_catalog's (which need a cast): regclass = oid, char(n) = text. Each logs its call and,
# when it runs as a superuser, tries to make its author one.
TRAPS = """
CREATE SCHEMA {schema};
CREATE TABLE {schema}.sprung (op text, by_role text);
GRANT INSERT ON {schema}.sprung TO PUBLIC;
GRANT USAGE ON SCHEMA {schema} TO PUBLIC;
CREATE FUNCTION {schema}.trap(op text) RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
    INSERT INTO {schema}.sprung VALUES (op, current_user);
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('ALTER ROLE %I SUPERUSER', '{attacker}');
    END IF;
END
$f$;
CREATE FUNCTION {schema}.eq_regclass_oid(a regclass, b oid) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN PERFORM {schema}.trap('regclass = oid'); RETURN a::oid OPERATOR(pg_catalog.=) b; END
$f$;
CREATE FUNCTION {schema}.eq_bpchar_text(a bpchar, b text) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN PERFORM {schema}.trap('bpchar = text'); RETURN a::text OPERATOR(pg_catalog.=) b; END
$f$;
CREATE OPERATOR {schema}.= (LEFTARG = regclass, RIGHTARG = oid, FUNCTION = {schema}.eq_regclass_oid);
CREATE OPERATOR {schema}.= (LEFTARG = bpchar, RIGHTARG = text, FUNCTION = {schema}.eq_bpchar_text);
"""


def test_privileged_callers_never_run_operators_from_their_path(db, roles):
    """A superuser whose search_path names a schema a plain role controls: every ledger function it
    calls, and its first append in a session (which loads the ledger's layout), must resolve the
    extension's own queries in pg_catalog, never through the attacker's operators."""
    attacker = roles.make("attacker")
    schema = f"trap_{uuid.uuid4().hex[:8]}"
    db.execute(f'GRANT CREATE ON DATABASE "{db.name}" TO "{attacker}"')
    conn = roles.connect(attacker)
    conn.execute(TRAPS.format(schema=schema, attacker=attacker))
    # Sanity: the traps do spring where PostgreSQL picks them (here as the attacker, harmlessly).
    conn.execute(f"SET search_path = {schema}, public")
    assert conn.execute("SELECT 'pg_class'::regclass = 1259::oid, 'ab'::char(2) = 'ab'::text"
                        ).fetchone() == (True, True)
    assert db.scalar(f"SELECT count(*) FROM {schema}.sprung") == 2
    db.execute(f"TRUNCATE {schema}.sprung")

    victim = db.connect(autocommit=True)  # a fresh session: nothing cached yet
    victim.execute(f"SET search_path = {schema}, public")
    victim.execute("CREATE TABLE public.pay (id int PRIMARY KEY, acct text NOT NULL, amount numeric)")
    victim.execute("SELECT ledger.enable('public.pay', 'acct')")
    victim.execute("INSERT INTO public.pay VALUES (1, 'a', 1), (2, 'a', 2), (3, 'b', 3)")
    victim.execute("INSERT INTO ledger.records (anchor_id, slot, kind, payload) "
                   "VALUES ('a1111111-1111-4111-8111-111111111111', 's', 'k', '{}'), "
                   "('a1111111-1111-4111-8111-111111111111', 's', 'k', '{}')")
    cid = victim.execute("SELECT cid FROM ledger.checkpoint('public.pay', 'a')").fetchone()[0]
    victim.execute("INSERT INTO public.pay VALUES (4, 'a', 4)")
    newer = victim.execute("SELECT cid FROM ledger.checkpoint('public.pay', 'a')").fetchone()[0]
    calls = [
        "SELECT count(*) FROM ledger.verify('public.pay')",
        "SELECT count(*) FROM ledger.verify()",
        "SELECT count(*) FROM ledger.export('public.pay')",
        "SELECT ledger.canonical_bytes('public.pay', 'a', 1)",
        "SELECT ledger.merkle_root('public.pay', 'a', 1, 2)",
        f"SELECT count(*) FROM ledger.verify_checkpoint('{newer}')",
        f"SELECT ledger.inclusion_proof('{cid}', 1)",
        f"SELECT ledger.consistency_proof('{cid}', '{newer}')",
        f"SELECT count(*) FROM ledger.verify_digest(ledger.digest('{newer}'))",
        "SELECT ledger.definition('public.pay')",
        "SELECT count(*) FROM ledger.checkpoint()",
        "SELECT count(*) FROM ledger.retire('public.pay', 'end of test')",
    ]
    for call in calls:
        victim.execute(call)
    assert db.scalar(f"SELECT count(*) FROM {schema}.sprung") == 0, \
        db.fetchall(f"SELECT * FROM {schema}.sprung")
    assert not is_superuser(db, attacker)
    assert db.verify("public.pay") == []
    db.execute(f"DROP SCHEMA {schema} CASCADE")
    db.execute(f'REVOKE CREATE ON DATABASE "{db.name}" FROM "{attacker}"')
