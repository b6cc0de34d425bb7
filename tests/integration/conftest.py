"""Fixtures of the integration suite: one throwaway PostgreSQL cluster per session (scripts/cluster.sh)
and a fresh database with `CREATE EXTENSION ledger` per test.

Set LEDGER_PYTEST_KEEP=1 to keep the cluster directory (server.log) after the run, and
LEDGER_PYTEST_PORT to pin the port (default: the first free one of 55450-55459)."""

import os

import pytest

from ledgertest import Cluster, Database, database_name, fresh_database


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


@pytest.fixture(scope="module")
def module_db(cluster, request):
    """A fresh UTF8 database with the ledger extension, shared by the tests of one module (for
    tests that only read, such as error cases)."""
    yield from fresh_database(cluster, request)


@pytest.fixture
def latin1_db(cluster, request):
    """A fresh LATIN1 database without the extension (clients talk UTF8 to it)."""
    yield from fresh_database(cluster, request, "ENCODING LATIN1 LC_COLLATE 'C' LC_CTYPE 'C'",
                               {"client_encoding": "UTF8"}, extension=False)


@pytest.fixture
def target(cluster, request):
    """An empty database (without the extension) to restore a dump into."""
    name = database_name("restore_" + request.node.name)
    with cluster.connect("postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    database = Database(cluster, name)
    yield database
    database.close_all()
    with cluster.connect("postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
