"""Fixtures of the examples' tests: one throwaway PostgreSQL cluster on ports 55470-55479 (other
suites use other ports), and a fresh database per test without the extension, which the examples
create themselves. tests/integration/ledgertest.py holds the shared helpers.

Set LEDGER_PYTEST_KEEP=1 to keep the cluster directory (server.log) after the run."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from ledgertest import Cluster, fresh_database  # noqa: E402

PORTS = range(55470, 55480)


@pytest.fixture(scope="session")
def cluster():
    c = Cluster(PORTS)
    c.start()
    try:
        yield c
    finally:
        c.stop(keep=bool(os.environ.get("LEDGER_PYTEST_KEEP")))


@pytest.fixture
def empty_db(cluster, request):
    """A fresh UTF8 database without the ledger extension."""
    yield from fresh_database(cluster, request, extension=False)
