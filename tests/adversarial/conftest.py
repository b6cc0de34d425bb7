"""Fixtures of the adversarial suite: attacks on a real server (tests/integration/ledgertest.py holds
the shared helpers). `cluster` and `db` are as in the integration suite; tests that crash, replicate or
restart servers start clusters of their own."""

import os
import sys
from pathlib import Path

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
