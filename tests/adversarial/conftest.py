"""Fixtures of the adversarial suite: attacks on a real server (tests/integration/ledgertest.py holds
the shared helpers). `cluster` and `db` are as in the integration suite; tests that crash, replicate or
restart servers start clusters of their own."""

import os
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from ledgertest import Cluster, fresh_database  # noqa: E402


@pytest.fixture(scope="session")
def cluster():
    c = Cluster()
    c.start()
    try:
        yield c
    finally:
        c.stop(keep=bool(os.environ.get("LEDGER_PYTEST_KEEP")))


@pytest.fixture
def db(cluster, request):
    """A fresh UTF8 database with the ledger extension."""
    yield from fresh_database(cluster, request)


class Roles:
    """Login roles made for one test (cluster-wide, so uniquely named) and connections as them; at the
    end the connections are closed and the roles dropped with whatever they own in the test's database."""

    def __init__(self, db) -> None:
        self.db = db
        self.made: list[str] = []
        self.connections: list[psycopg.Connection] = []

    def make(self, what: str, *granted: str, create_in_public: bool = False) -> str:
        name = f"adv_{what}_{uuid.uuid4().hex[:8]}"
        self.db.execute(f'CREATE ROLE "{name}" LOGIN')
        self.made.append(name)
        for role in granted:
            self.db.execute(f'GRANT "{role}" TO "{name}"')
        if create_in_public:
            self.db.execute(f'GRANT CREATE ON SCHEMA public TO "{name}"')
        return name

    def connect(self, role: str, autocommit: bool = True) -> psycopg.Connection:
        """Logs in as `role` over the cluster's socket (trust authentication)."""
        conninfo = psycopg.conninfo.make_conninfo(self.db.cluster.conninfo(self.db.name), user=role)
        conn = psycopg.connect(conninfo, autocommit=autocommit)
        self.connections.append(conn)
        conn.execute("SELECT set_config('statement_timeout', '60s', false)")
        if not autocommit:
            conn.commit()
        assert conn.execute("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user"
                            ).fetchone() == (role, False)
        return conn

    def drop_all(self) -> None:
        for conn in self.connections:
            conn.close()
        for name in self.made:
            self.db.execute(f'DROP OWNED BY "{name}"')
            self.db.execute(f'DROP ROLE "{name}"')


@pytest.fixture
def roles(db):
    made = Roles(db)
    try:
        yield made
    finally:
        made.drop_all()
