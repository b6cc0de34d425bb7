"""The monitoring suite: the exporter's query file, the Grafana dashboard and the pg_cron schedule
(monitoring/), tried on clusters of its own. Its helpers are in monitoringtest.py; the cluster and
database helpers it builds on are tests/integration/ledgertest.py, importable from here on."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
