"""Runs each client example (examples/) as its users would, against a real server, then checks from
a connection of the test's own that what the program reported is what the database holds.

Every example creates a `payments` ledger chained by account (the SQLAlchemy one through its Alembic
migration), appends to it from four connections at once, and prints one line per chain:
`chain NAME: seq 1..N, linked, head HASH`. A tool that is missing fails its test:
scripts/setup-examples.sh installs them all."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ledgertest import PSQL, ROOT, assert_clean, assert_dense, offline_verify

EXAMPLES = ROOT / "examples"
JDBC_JAR = Path("/usr/share/java/postgresql.jar")
SETUP_HINT = "install it with scripts/setup-examples.sh"

# What every example appends: 4 workers, each 10 records to the shared chain and 10 to its own.
EXPECTED_CHAIN_SIZES = {"shared": 40, **{f"worker-{n}": 10 for n in range(1, 5)}}
CHAIN_LINE = re.compile(r"^chain (\S+): seq 1\.\.(\d+), linked, head ([0-9a-f]{64})$", re.MULTILINE)


def require_tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} not found: {SETUP_HINT}"
    return path


def run(argv: list, db, cwd: Path = ROOT, host: str | None = None, timeout: float = 300,
        expect_success: bool = True, user: str = "postgres") -> subprocess.CompletedProcess:
    """Runs a program with only the libpq environment naming the test's database; `host` replaces
    the cluster's socket directory (JDBC speaks TCP only)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGHOST=host or db.cluster.socket_dir, PGPORT=str(db.cluster.port), PGUSER=user,
               PGDATABASE=db.name)
    result = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    if expect_success:
        assert result.returncode == 0, (f"{argv} exited with {result.returncode}\n"
                                        f"--- stdout\n{result.stdout}--- stderr\n{result.stderr}")
    return result


def check_ledger(db, output: str) -> None:
    """The program's report, checked against the database: the payments ledger exists, holds exactly
    the chains, sizes and heads the program printed, is dense, and verifies clean (in SQL and with
    the offline verifier)."""
    reported = {chain: (int(size), head) for chain, size, head in CHAIN_LINE.findall(output)}
    assert {chain: size for chain, (size, _) in reported.items()} == EXPECTED_CHAIN_SIZES, output
    assert db.scalar("SELECT chain_by FROM ledger.ledgers WHERE tbl = 'payments'::regclass") == "account"
    stored = {account: (size, head) for account, size, head in db.fetchall(
        "SELECT account, count(*), (array_agg(hash ORDER BY seq DESC))[1] FROM payments GROUP BY account")}
    assert stored == reported
    assert_dense(db, EXPECTED_CHAIN_SIZES, tbl="payments", chain_col="account")
    assert_clean(db, "payments")
    # The program's own claims, as it printed them (its exit status already says they held).
    assert re.search(r"^UPDATE refused: SQLSTATE 23001: ", output, re.MULTILINE), output
    assert "ledger.verify('payments'): 0 problems" in output, output


def test_python_psycopg(empty_db):
    result = run([sys.executable, EXAMPLES / "python-psycopg" / "payments.py"], empty_db)
    check_ledger(empty_db, result.stdout)


def test_python_sqlalchemy_with_alembic(empty_db):
    """The application's own role, not a superuser, runs the migrations: 0001 makes the ledger, the
    program fills it, then 0002 adds a column to the ledger with data in it."""
    example = EXAMPLES / "python-sqlalchemy"
    alembic = [sys.executable, "-m", "alembic", "-c", example / "alembic.ini"]
    db = empty_db
    app = f"app_{db.name}"
    db.execute("CREATE EXTENSION ledger")  # a superuser's step; 0001's IF NOT EXISTS then does nothing
    db.execute(f'CREATE ROLE "{app}" LOGIN')
    db.execute(f'GRANT CREATE ON SCHEMA public TO "{app}"')
    try:
        run([*alembic, "upgrade", "0001"], db, user=app)
        assert db.scalar("SELECT version_num FROM alembic_version") == "0001"
        assert db.scalar("SELECT count(*) FROM payments") == 0
        assert db.scalar("SELECT relowner::regrole::text FROM pg_class WHERE oid = 'payments'::regclass") == app

        result = run([sys.executable, example / "payments.py"], db, user=app)
        check_ledger(db, result.stdout)
        before = db.scalar("SELECT cid FROM ledger.checkpoint('payments', 'shared')")

        # 0002 adds a column to the ledger, with data in it, as the table's owner.
        run([*alembic, "upgrade", "head"], db, user=app)
        assert db.scalar("SELECT version_num FROM alembic_version") == "0002"
        assert db.fetchone("SELECT event, actor FROM ledger.events WHERE ledger = 'public.payments' "
                           "ORDER BY seq DESC LIMIT 1") == ("alter", app)
        assert db.scalar("SELECT columns[base_columns + 1:] FROM ledger.ledgers "
                         "WHERE tbl = 'payments'::regclass") == ["memo"]
        check_ledger(db, result.stdout)  # the old records verify unchanged
        assert all(ok is not False for _, ok, _ in db.fetchall("SELECT * FROM ledger.verify_checkpoint(%s)",
                                                               (before,)))
        run([PSQL, "-v", "ON_ERROR_STOP=1", "-c",
             "INSERT INTO payments (account, amount, memo) VALUES ('shared', 1, 'refund of #7')"], db, user=app)
        assert_clean(db, "payments")

        # The memo is covered: a superuser's edit of it is caught.
        db.execute("ALTER TABLE payments DISABLE TRIGGER ledger_refuse_change")
        db.execute("UPDATE payments SET memo = 'refund of #8' WHERE memo = 'refund of #7'")
        db.execute("ALTER TABLE payments ENABLE ALWAYS TRIGGER ledger_refuse_change")
        assert [p for _, _, p in db.verify("payments")] == ["hash_mismatch"]
        assert [p[2] for p in offline_verify(db.export_lines("payments"))] == ["hash_mismatch"]
        db.execute("ALTER TABLE payments DISABLE TRIGGER ledger_refuse_change")
        db.execute("UPDATE payments SET memo = 'refund of #7' WHERE memo = 'refund of #8'")
        db.execute("ALTER TABLE payments ENABLE ALWAYS TRIGGER ledger_refuse_change")
        assert_clean(db, "payments")

        # The migrations refuse to be undone, and the ledger stays as it was.
        downgrade = run([*alembic, "downgrade", "base"], db, expect_success=False, user=app)
        assert downgrade.returncode != 0 and "cannot be undone" in downgrade.stderr, downgrade.stderr
        assert db.scalar("SELECT version_num FROM alembic_version") == "0002"
        assert_clean(db, "payments")
    finally:
        db.execute("DROP TABLE IF EXISTS payments, alembic_version")
        db.execute(f'REVOKE CREATE ON SCHEMA public FROM "{app}"')
        db.execute(f'DROP ROLE "{app}"')


def test_node_pg(empty_db):
    example = EXAMPLES / "node-pg"
    node = require_tool("node")
    assert (example / "node_modules" / "pg" / "package.json").is_file(), f"pg is not installed: {SETUP_HINT}"
    result = run([node, "payments.js"], empty_db, cwd=example)
    check_ledger(empty_db, result.stdout)


def test_rust_tokio_postgres(empty_db):
    example = EXAMPLES / "rust-tokio-postgres"
    cargo = require_tool("cargo")
    target = example / "target"  # named, so that a CARGO_TARGET_DIR in the environment does not move it
    # --locked: build exactly what Cargo.lock pins, or fail.
    run([cargo, "build", "--quiet", "--locked", "--manifest-path", example / "Cargo.toml",
         "--target-dir", target], empty_db, timeout=1200)
    result = run([target / "debug" / "ledger-example-tokio-postgres"], empty_db)
    check_ledger(empty_db, result.stdout)


def test_java_jdbc(empty_db, tmp_path):
    example = EXAMPLES / "java-jdbc"
    javac, java = require_tool("javac"), require_tool("java")
    assert JDBC_JAR.is_file(), f"{JDBC_JAR} (libpostgresql-jdbc-java) not found: {SETUP_HINT}"
    run([javac, "-d", tmp_path, example / "Payments.java"], empty_db)
    # The test clusters listen on 127.0.0.1 too, with trust authentication.
    result = run([java, "-cp", f"{tmp_path}:{JDBC_JAR}", "Payments"], empty_db, host="127.0.0.1")
    check_ledger(empty_db, result.stdout)
