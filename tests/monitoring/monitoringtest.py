"""Helpers of the monitoring suite (tests/monitoring): clusters of its own on ports 55490-55499
with the postgresql.conf lines the monitoring surface needs (shared_preload_libraries, pg_cron's),
the real prometheus-postgres-exporter on 127.0.0.1, and a reader of what it serves.
tests/integration/ledgertest.py holds the cluster and database helpers this builds on.

A tool this suite needs that is missing fails the test (scripts/setup-monitoring.sh installs them):
a monitoring check that skips would read as green on a machine where nothing was checked."""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from ledgertest import CLUSTER_SH, PG_BIN, Cluster  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
QUERIES_YAML = ROOT / "monitoring" / "postgres_exporter" / "queries.yaml"
DASHBOARD_JSON = ROOT / "monitoring" / "grafana" / "ledger-dashboard.json"
PG_CRON_SQL = ROOT / "monitoring" / "pg_cron.sql"
SETUP_HINT = "run scripts/setup-monitoring.sh"

# The ports of this suite's clusters (the integration suite uses 55450-55459, the adversarial one
# 55470-55489); exporters listen on ports the kernel hands out.
PORTS = range(55490, 55500)

EXPORTER_BINARY = "prometheus-postgres-exporter"
EXPORTER_START_TIMEOUT = 30.0
SCRAPE_TIMEOUT = 30.0


def require_tool(name: str) -> str:
    """The path of an executable, or a failed test naming what installs it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: {SETUP_HINT}", pytrace=False)
    return path


def require_pg_extension(name: str) -> None:
    """An extension installed into this PostgreSQL (its control file is there), or a failed test."""
    result = subprocess.run([str(PG_BIN / "pg_config"), "--sharedir"], capture_output=True, text=True,
                            timeout=30, check=True)
    if not (Path(result.stdout.strip()) / "extension" / f"{name}.control").exists():
        pytest.fail(f"the {name} extension is not installed: {SETUP_HINT}", pytrace=False)


def require_python_module(name: str):
    try:
        return __import__(name)
    except ImportError:
        pytest.fail(f"Python module {name} is missing: {SETUP_HINT}", pytrace=False)


# ---- clusters ------------------------------------------------------------------------------------


@contextlib.contextmanager
def own_cluster(*conf: str) -> Iterator[Cluster]:
    """A fresh cluster on a free port of PORTS with `conf` added to its postgresql.conf; stopped and
    removed however the block ends. scripts/cluster.sh writes conf lines only at initdb, and
    Cluster.start takes none, so the lines are appended after the first start and the server is
    restarted to read them (shared_preload_libraries and pg_cron's settings count only at start)."""
    cluster = Cluster(ports=PORTS)
    try:
        # LEDGER_PYTEST_PORT pins the integration suite's one shared cluster; this suite starts
        # several.
        pinned = os.environ.pop("LEDGER_PYTEST_PORT", None)
        try:
            cluster.start()
        finally:
            if pinned is not None:
                os.environ["LEDGER_PYTEST_PORT"] = pinned
        if conf:
            with open(cluster.dir / "data" / "postgresql.conf", "a", encoding="utf-8") as f:
                f.write("".join(line + "\n" for line in conf))
            restart(cluster)
        yield cluster
    finally:
        cluster.stop(keep=bool(os.environ.get("LEDGER_PYTEST_KEEP")))


def restart(cluster: Cluster) -> None:
    for args in (["stop", str(cluster.dir)], ["start", str(cluster.dir), str(cluster.port)]):
        result = subprocess.run([str(CLUSTER_SH), *args], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            log = (cluster.dir / "server.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"cluster.sh {args[0]} failed: {result.stderr}\n{log}")


def make_monitoring_role(db, name: str = "ledger_exporter") -> str:
    """The exporter's login role as monitoring/postgres_exporter/queries.yaml documents it: not a
    superuser, member of pg_monitor and of nothing else."""
    db.execute(f'CREATE ROLE "{name}" LOGIN')
    db.execute(f'GRANT pg_monitor TO "{name}"')
    db.execute(f"ALTER ROLE \"{name}\" SET statement_timeout = '10s'")
    return name


# ---- the exporter --------------------------------------------------------------------------------


def _free_local_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Exporter:
    """prometheus-postgres-exporter with the project's query file, on 127.0.0.1 only, logging to
    a file beside the cluster's. Its environment holds only what it is given (no PG* variables of
    the caller's), so the DSN alone says where it connects."""

    def __init__(self, dsn: str, log_path: Path, queries: Path = QUERIES_YAML) -> None:
        self.binary = require_tool(EXPORTER_BINARY)
        self.dsn = dsn
        self.queries = queries
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def start(self) -> None:
        # The kernel's free port can be taken before the exporter binds it: then try another.
        for _ in range(5):
            self.port = _free_local_port()
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    [self.binary, f"--web.listen-address=127.0.0.1:{self.port}",
                     f"--extend.query-path={self.queries}", "--log.level=info"],
                    env={"DATA_SOURCE_NAME": self.dsn, "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + EXPORTER_START_TIMEOUT
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    break
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=2) as r:
                        if r.status == 200:
                            return
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                time.sleep(0.05)
            self.stop()
            if "address already in use" not in self.log():
                break
        raise AssertionError(f"{EXPORTER_BINARY} did not start listening:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def scrape(self) -> "Scrape":
        """GET /metrics: the exporter runs every query of the file now (none is cached)."""
        assert self.process is not None and self.process.poll() is None, self.log()[-3000:]
        with urllib.request.urlopen(self.url, timeout=SCRAPE_TIMEOUT) as response:
            assert response.status == 200, response.status
            return parse_exposition(response.read().decode("utf-8"))


@contextlib.contextmanager
def running_exporter(cluster: Cluster, dbname: str, role: str) -> Iterator[Exporter]:
    """An exporter logged in as `role` over TCP on 127.0.0.1 (trust authentication, as the test
    cluster's pg_hba.conf has it), stopped however the block ends."""
    dsn = f"postgresql://{role}@127.0.0.1:{cluster.port}/{dbname}?sslmode=disable"
    exporter = Exporter(dsn, cluster.dir / "exporter.log")
    try:
        exporter.start()
        yield exporter
    finally:
        exporter.stop()


# ---- what the exporter serves --------------------------------------------------------------------

# name{labels} value [timestamp]
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?"
                     r"\s+(?P<value>\S+)(?:\s+-?\d+)?$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


@dataclass
class Scrape:
    """The samples of one scrape (Prometheus text format 0.0.4): {name: [(labels, value)]}, and
    each metric family's TYPE."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)

    def names(self, prefix: str = "") -> set[str]:
        return {n for n in self.samples if n.startswith(prefix)}

    def series(self, name: str, *keys: str) -> dict[tuple[str, ...], float]:
        """{(label values of `keys`): value} of a metric; every series must have exactly the labels
        `keys` plus the exporter's `server`, and no two the same values."""
        out: dict[tuple[str, ...], float] = {}
        for labels, value in self.samples.get(name, []):
            assert set(labels) == {*keys, "server"}, (name, labels)
            key = tuple(labels[k] for k in keys)
            assert key not in out, (name, key)
            out[key] = value
        return out

    def value(self, name: str, **labels: str) -> float:
        matching = [v for ls, v in self.samples.get(name, [])
                    if all(ls.get(k) == x for k, x in labels.items())]
        assert len(matching) == 1, (name, labels, self.samples.get(name))
        return matching[0]


def parse_exposition(text: str) -> Scrape:
    scrape = Scrape()
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) == 4 and parts[1] == "TYPE":
                scrape.types[parts[2]] = parts[3].strip()
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        labels: dict[str, str] = {}
        rest = match.group("labels") or ""
        while rest.strip():
            label = _LABEL.match(rest)
            assert label, f"bad labels in {line!r}"
            value = re.sub(r'\\[\\"n]', lambda m: _ESCAPES[m.group(0)], label.group(2))
            labels[label.group(1)] = value
            rest = rest[label.end():]
        scrape.samples.setdefault(match.group("name"), []).append((labels, float(match.group("value"))))
    return scrape


def is_nan(value: float) -> bool:
    return isinstance(value, float) and math.isnan(value)


# ---- the query file ------------------------------------------------------------------------------


def query_file() -> dict:
    yaml = require_python_module("yaml")
    with open(QUERIES_YAML, encoding="utf-8") as f:
        return yaml.safe_load(f)


def defined_metrics() -> dict[str, tuple[str, list[str]]]:
    """{metric name: (usage, label columns)} as the exporter names them: the query's name, an
    underscore and the column's name, for every column that is not a LABEL."""
    out: dict[str, tuple[str, list[str]]] = {}
    for namespace, spec in query_file().items():
        columns = [(name, mapping["usage"]) for entry in spec["metrics"] for name, mapping in entry.items()]
        labels = [name for name, usage in columns if usage == "LABEL"]
        for name, usage in columns:
            if usage != "LABEL":
                out[f"{namespace}_{name}"] = (usage, labels)
    return out



# ---- PromQL in the dashboard ---------------------------------------------------------------------

# Words of PromQL that are not metric names: operators, modifiers and literals (functions and
# aggregations are told apart by the parenthesis after them).
_PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
                 "group_left", "group_right", "inf", "nan", "Inf", "NaN", "atan2"}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: every bare identifier once strings, label matchers,
    ranges, grouping clauses and function calls are set aside. Grafana's variables ($ledger,
    ${datasource}, $__rate_interval) are inside strings or ranges, or removed first."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"' + r"|'(?:[^'\\]|\\.)*'", '""', expr)
    text = re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*(?::[a-z]+)?\}?", " ", text)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[match.end():].lstrip().startswith("(") or match.group(0) in _PROMQL_WORDS:
            continue
        names.add(match.group(0))
    return names


def dashboard_panels(dashboard: dict) -> list[dict]:
    """Every panel, those inside collapsed rows included."""
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def dashboard_expressions(dashboard: dict) -> list[str]:
    """Every PromQL expression of a dashboard: its panels' targets and its query variables."""
    exprs = [t["expr"] for p in dashboard_panels(dashboard) for t in p.get("targets", []) if "expr" in t]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def label_values_selector(expr: str) -> str:
    """label_values(SELECTOR, LABEL) -> SELECTOR, the PromQL part of a Grafana variable query;
    other expressions are returned as they are."""
    match = re.fullmatch(r"\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*", expr, re.S)
    return match.group(1) if match else expr


def dashboard_metric_names(dashboard: dict) -> set[str]:
    names: set[str] = set()
    for expr in dashboard_expressions(dashboard):
        names |= promql_metric_names(label_values_selector(expr))
    return names

