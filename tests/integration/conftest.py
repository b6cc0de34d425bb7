"""Fixtures of the integration suite: one throwaway PostgreSQL cluster per session (scripts/cluster.sh)
and a fresh database with `CREATE EXTENSION ledger` per test.

Set LEDGER_PYTEST_KEEP=1 to keep the cluster directory (server.log) after the run, and
LEDGER_PYTEST_PORT to pin the port (default: the first free one of 55450-55459)."""

import os

import psycopg
import pytest

from ledgertest import Cluster, Database, database_name


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
    name = database_name(request.node.name)
    with cluster.connect("postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    database = None
    try:
        database = Database(cluster, name)
        database.execute("CREATE EXTENSION ledger")
        yield database
    finally:
        if database is not None:
            database.close_all()
        with cluster.connect("postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
