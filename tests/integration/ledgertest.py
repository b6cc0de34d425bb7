"""Helpers shared by the integration tests: a throwaway cluster, fresh databases, and the checks every
test repeats (ledger.verify, density of chains, export + offline verifier)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Iterable

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SH = ROOT / "scripts" / "cluster.sh"
VERIFY_EXPORT = ROOT / "scripts" / "verify_export.py"
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
PSQL = str(PG_BIN / "psql") if (PG_BIN / "psql").exists() else "psql"

# The ports and directories this suite may use (others use other ports).
PORTS = range(55450, 55460)
DIR_PREFIX = "ledger-pytest-"

# Every connection of the suite carries a statement_timeout, so a lost wake-up fails a test instead of
# hanging the suite.
DEFAULT_SETTINGS = {"statement_timeout": "60s"}

# A throwaway cluster does not need durability; these make the suite several times faster.
CLUSTER_CONF = [
    "fsync = off",
    "synchronous_commit = off",
    "full_page_writes = off",
    "deadlock_timeout = '100ms'",
    "max_prepared_transactions = 10",
    "shared_buffers = '64MB'",
    # LEDGER_PYTEST_PRELOAD=1 runs the suite on a server that preloads the library, as a monitored
    # production server does: appends then take chain heads from shared memory (src/shared_heads.rs).
    *(["shared_preload_libraries = 'ledger'"] if os.environ.get("LEDGER_PYTEST_PRELOAD") == "1" else []),
]

sys.path.insert(0, str(VERIFY_EXPORT.parent))
import verify_export as ve  # noqa: E402,F401  the independent implementation of FORMAT.md (re-exported)


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Cluster:
    """A PostgreSQL 15 cluster started with scripts/cluster.sh in a fresh temp dir."""

    def __init__(self, ports: range = PORTS) -> None:
        """`ports`: the ones to try, in order (LEDGER_PYTEST_PORT, when set, is tried instead)."""
        self.dir = Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir="/tmp"))
        self.port: int | None = None
        self.ports = ports

    @property
    def socket_dir(self) -> str:
        return str(self.dir / "socket")

    def start(self) -> None:
        wanted = os.environ.get("LEDGER_PYTEST_PORT")
        candidates = [int(wanted)] if wanted else list(self.ports)
        errors = []
        for port in candidates:
            if not _port_is_free(port):
                continue
            result = subprocess.run(
                [str(CLUSTER_SH), "start", str(self.dir), str(port), *CLUSTER_CONF],
                capture_output=True, text=True)
            if result.returncode == 0:
                self.port = port
                return
            errors.append(f"port {port}: {result.stderr.strip()}")
            # initdb already ran: the port line is fixed in postgresql.conf, start over.
            subprocess.run([str(CLUSTER_SH), "stop", str(self.dir)], capture_output=True)
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir="/tmp"))
        raise RuntimeError(f"could not start a cluster on any of ports {candidates}: {errors}")

    def stop(self, keep: bool = False) -> None:
        subprocess.run([str(CLUSTER_SH), "stop", str(self.dir)], capture_output=True)
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def conninfo(self, dbname: str) -> str:
        return psycopg.conninfo.make_conninfo(
            host=self.socket_dir, port=self.port, user="postgres", dbname=dbname)

    def connect(self, dbname: str = "postgres", autocommit: bool = False,
                settings: dict | None = None) -> psycopg.Connection:
        conn = psycopg.connect(self.conninfo(dbname), autocommit=autocommit)
        merged = {**DEFAULT_SETTINGS, **(settings or {})}
        with conn.cursor() as cur:
            for name, value in merged.items():
                cur.execute("SELECT set_config(%s, %s, false)", (name, str(value)))
        if not autocommit:
            conn.commit()
        return conn


class Database:
    """A fresh database with the ledger extension; every connection opened here is closed after."""

    def __init__(self, cluster: Cluster, name: str, settings: dict | None = None) -> None:
        self.cluster = cluster
        self.name = name
        self.settings = settings or {}  # applied to every connection to this database
        self._connections: list[psycopg.Connection] = []
        self._lock = threading.Lock()
        self.conn = self.connect(autocommit=True)

    def connect(self, autocommit: bool = False, settings: dict | None = None,
                isolation_level: psycopg.IsolationLevel | None = None) -> psycopg.Connection:
        conn = self.cluster.connect(self.name, autocommit=autocommit,
                                    settings={**self.settings, **(settings or {})})
        if isolation_level is not None:
            conn.isolation_level = isolation_level
        with self._lock:
            self._connections.append(conn)
        return conn

    def close_all(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            try:
                conn.close()
            except Exception:
                pass

    # ---- queries on the default autocommit connection ----------------------------------------

    def execute(self, query, params=None):
        return self.conn.execute(query, params)

    def fetchall(self, query, params=None) -> list[tuple]:
        return self.conn.execute(query, params).fetchall()

    def fetchone(self, query, params=None):
        return self.conn.execute(query, params).fetchone()

    def scalar(self, query, params=None):
        row = self.conn.execute(query, params).fetchone()
        return None if row is None else row[0]

    def verify(self, tbl: str = "ledger.records", chain: str | None = None) -> list[tuple]:
        """ledger.verify as a list of (chain, seq, problem), in the order it reports them."""
        rows = self.fetchall("SELECT chain, seq, problem FROM ledger.verify(%s::regclass, %s)",
                             (tbl, chain))
        return [tuple(r) for r in rows]

    def verify_details(self, tbl: str = "ledger.records") -> list[tuple]:
        return [tuple(r) for r in self.fetchall(
            "SELECT chain, seq, problem, detail FROM ledger.verify(%s::regclass)", (tbl,))]

    def export_lines(self, tbl: str = "ledger.records") -> list[str]:
        """`psql -AtX -c "SELECT * FROM ledger.export(tbl)"`, exactly as FORMAT.md documents it."""
        query = f"SELECT * FROM ledger.export('{tbl}')"
        env = {**os.environ, "PGCLIENTENCODING": "UTF8"}
        result = subprocess.run(
            [PSQL, "-h", self.cluster.socket_dir, "-p", str(self.cluster.port), "-U", "postgres",
             "-d", self.name, "-v", "ON_ERROR_STOP=1", "-AtX", "-c", query],
            capture_output=True, env=env, check=False, timeout=120)
        if result.returncode != 0:
            raise AssertionError(f"psql export failed: {result.stderr.decode(errors='replace')}")
        return result.stdout.decode("utf-8").splitlines()

    def offline_verify(self, tbl: str = "ledger.records") -> list[tuple]:
        return offline_verify(self.export_lines(tbl))

    def chain_stats(self, tbl: str = "ledger.records", chain_col: str | None = "anchor_id") -> dict:
        """{chain value: (count, count distinct seq, min seq, max seq)} straight from the table."""
        table = sql.SQL(tbl)
        if chain_col is None:
            q = sql.SQL("SELECT NULL, count(*), count(DISTINCT seq), min(seq), max(seq) FROM {}"
                        " HAVING count(*) > 0").format(table)
        else:
            q = sql.SQL("SELECT {c}::text, count(*), count(DISTINCT seq), min(seq), max(seq) "
                        "FROM {t} GROUP BY {c}").format(c=sql.Identifier(chain_col), t=table)
        return {r[0]: tuple(r[1:]) for r in self.fetchall(q)}

    def snapshot(self, tbl: str = "ledger.records", chain_col: str | None = "anchor_id") -> list:
        """Every stored record as (chain, seq, prev_hash, hash, whole row text), in a stable order."""
        order = f"{chain_col}::text, seq" if chain_col else "seq"
        chain_expr = f"{chain_col}::text" if chain_col else "NULL"
        return self.fetchall(
            f"SELECT {chain_expr}, seq, prev_hash, hash, row_::text FROM {tbl} row_ ORDER BY {order}")


def offline_verify(lines: Iterable[str]) -> list[tuple]:
    """Runs `python3 scripts/verify_export.py FILE --json` and returns its (chain, seq, problem)s.
    Also checks its exit status agrees with what it printed."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", encoding="utf-8", delete=False) as f:
        for line in lines:
            f.write(line + "\n")
        path = f.name
    try:
        result = subprocess.run([sys.executable, str(VERIFY_EXPORT), path, "--json"],
                                capture_output=True, text=True, timeout=120)
    finally:
        os.unlink(path)
    if result.returncode not in (0, 1):
        raise AssertionError(f"verify_export.py failed ({result.returncode}): {result.stderr}")
    problems = json.loads(result.stdout)
    assert (result.returncode == 1) == bool(problems), (result.returncode, problems)
    return [(p["chain"], p["seq"], p["problem"]) for p in problems]


def behind_the_triggers(db: "Database", tbl: str, statement: str, params=None) -> None:
    """As a superuser, in one transaction (a savepoint inside the caller's): the ledger's triggers
    off, the statement, the triggers back as the ledger has them (ENABLE ALWAYS), so its definition
    is as registered."""
    with db.conn.transaction():
        db.execute(f"ALTER TABLE {tbl} DISABLE TRIGGER ALL")
        db.execute(statement, params)
        db.execute(f"ALTER TABLE {tbl} " + ", ".join(
            f"ENABLE ALWAYS TRIGGER {name}" for name in ("zz_ledger_append", "ledger_refuse_change", "ledger_refuse_truncate")))


def assert_dense(db: Database, expected_counts: dict | None = None, tbl: str = "ledger.records",
                 chain_col: str | None = "anchor_id") -> dict:
    """Every chain holds seqs 1..N with no duplicates; optionally N per chain as expected."""
    stats = db.chain_stats(tbl, chain_col)
    for chain, (count, distinct, lo, hi) in stats.items():
        assert lo == 1, f"chain {chain}: lowest seq {lo}"
        assert distinct == count, f"chain {chain}: {count - distinct} duplicate seqs"
        assert hi == count, f"chain {chain}: max(seq) {hi} but {count} records (holes)"
    if expected_counts is not None:
        got = {chain: s[0] for chain, s in stats.items()}
        want = {chain: n for chain, n in expected_counts.items() if n}
        assert got == want, "records per chain differ from the committed rows"
    return stats


def assert_clean(db: Database, tbl: str = "ledger.records") -> None:
    """ledger.verify and the offline verifier both find nothing."""
    assert db.verify(tbl) == [], db.verify_details(tbl)[:10]
    assert offline_verify(db.export_lines(tbl)) == []


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def backend_wait(db: Database, pid: int) -> tuple | None:
    """(wait_event_type, wait_event, state) of a backend."""
    return db.fetchone("SELECT wait_event_type, wait_event, state FROM pg_stat_activity "
                       "WHERE pid = %s", (pid,))


def insert_record(cur, anchor, payload=None, rid=None, **columns) -> tuple:
    """INSERT one row into ledger.records; returns (rid, seq, prev_hash, hash)."""
    values = {"rid": rid or uuid.uuid4(), "anchor_id": anchor, "slot": "s", "kind": "k",
              "payload": psycopg.types.json.Jsonb(payload if payload is not None else {}),
              **columns}
    names = sql.SQL(", ").join(sql.Identifier(n) for n in values)
    marks = sql.SQL(", ").join(sql.Placeholder() for _ in values)
    cur.execute(sql.SQL("INSERT INTO ledger.records ({}) VALUES ({}) "
                        "RETURNING rid, seq, prev_hash, hash").format(names, marks),
                list(values.values()))
    return cur.fetchone()


def insert_records(cur, rows: list[tuple]) -> None:
    """One multi-row INSERT of (rid, anchor_id, payload) rows into ledger.records."""
    values = sql.SQL(", ").join(sql.SQL("(%s, %s, 's', 'k', %s)") for _ in rows)
    params = []
    for rid, anchor, payload in rows:
        params += [rid, anchor, psycopg.types.json.Jsonb(payload)]
    cur.execute(sql.SQL("INSERT INTO ledger.records (rid, anchor_id, slot, kind, payload) VALUES ")
                + values, params)


_SAFE = re.compile(r"[^a-z0-9_]+")


def database_name(test_name: str) -> str:
    base = _SAFE.sub("_", test_name.lower()).strip("_")[:40]
    return f"lt_{base}_{uuid.uuid4().hex[:8]}"


# ---- checkpoints, proofs, digests (test_checkpoints.py) ---------------------------------------


def run_verifier(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """`python3 scripts/verify_export.py ARGS...`; the caller checks the exit status."""
    return subprocess.run([sys.executable, str(VERIFY_EXPORT), *args], input=stdin,
                          capture_output=True, text=True, timeout=120)


def _write_temp(content: str | bytes, suffix: str) -> str:
    mode = "wb" if isinstance(content, bytes) else "w"
    kwargs = {} if isinstance(content, bytes) else {"encoding": "utf-8", "newline": ""}
    with tempfile.NamedTemporaryFile(mode, suffix=suffix, delete=False, **kwargs) as f:
        f.write(content)
        return f.name


def _write_export(lines: Iterable[str]) -> str:
    return _write_temp("".join(line + "\n" for line in lines), ".jsonl")


def offline_digest(lines: Iterable[str], digest: str | bytes, public_key: str | None = None,
                   allow_unsigned: bool = False, malformed_ok: bool = False) -> tuple[int, dict | None]:
    """`verify_export.py EXPORT --digest FILE [--public-key KEY] [--allow-unsigned] --json`:
    (exit status, {"problems": [...], "digest": {check: (ok, detail)}}). The digest file holds the
    digest text exactly as given. Checks the exit status agrees with what was printed. With
    malformed_ok, exit status 2 (malformed input) returns (2, None) instead of failing."""
    export_path, digest_path = _write_export(lines), _write_temp(digest, ".digest")
    args = [export_path, "--digest", digest_path, "--json"]
    if public_key is not None:
        args += ["--public-key", public_key]
    if allow_unsigned:
        args.append("--allow-unsigned")
    try:
        result = run_verifier(*args)
    finally:
        os.unlink(export_path)
        os.unlink(digest_path)
    if result.returncode == 2 and malformed_ok:
        return 2, None
    if result.returncode not in (0, 1):
        raise AssertionError(f"verify_export.py --digest failed ({result.returncode}): {result.stderr}")
    out = json.loads(result.stdout)
    checks = {c["check"]: (c["ok"], c["detail"]) for c in out["digest"]}
    assert [c["check"] for c in out["digest"]] == ["signature", "key", "extends", "definition"], out
    failed = bool(out["problems"]) or any(ok is False for ok, _ in checks.values())
    assert (result.returncode == 1) == failed, (result.returncode, out)
    return result.returncode, {"problems": out["problems"], "digest": checks}


def offline_merkle_root(lines: Iterable[str], chain: str | None, first: int, last: int) -> str:
    """`verify_export.py EXPORT --merkle-root CHAIN FIRST LAST` (CHAIN None: `-`)."""
    path = _write_export(lines)
    try:
        result = run_verifier(path, "--merkle-root", "-" if chain is None else chain,
                              str(first), str(last))
    finally:
        os.unlink(path)
    if result.returncode != 0:
        raise AssertionError(f"verify_export.py --merkle-root failed ({result.returncode}): "
                             f"{result.stderr}")
    return result.stdout.strip()


def offline_proof(kind: str, proof, record_hash: str | None = None, root: str | None = None) -> int:
    """`verify_export.py --inclusion FILE --record-hash H --root R` or `--consistency FILE`: the exit
    status (0 valid, 1 invalid, 2 malformed). `proof` is a dict (written as JSON), str or bytes."""
    content = json.dumps(proof) if isinstance(proof, (dict, list)) else proof
    path = _write_temp(content, ".json")
    try:
        if kind == "inclusion":
            result = run_verifier("--inclusion", path, "--record-hash", record_hash, "--root", root)
        elif kind == "consistency":
            result = run_verifier("--consistency", path)
        else:
            raise ValueError(kind)
    finally:
        os.unlink(path)
    assert result.returncode in (0, 1, 2), (result.returncode, result.stderr)
    return result.returncode


def offline_inclusion(proof: dict, record_hash: str, root: str,
                      tree_size: int | None = None) -> tuple[int, str]:
    """`verify_export.py --inclusion FILE --record-hash H --root R [--tree-size N]`: (exit status,
    the line it printed)."""
    path = _write_temp(json.dumps(proof), ".json")
    args = ["--inclusion", path, "--record-hash", record_hash, "--root", root]
    if tree_size is not None:
        args += ["--tree-size", str(tree_size)]
    try:
        result = run_verifier(*args)
    finally:
        os.unlink(path)
    assert result.returncode in (0, 1), (result.returncode, result.stderr)
    return result.returncode, result.stdout.strip()


def set_signing_key_file(cluster: Cluster, path: str | None,
                         connections: Iterable[psycopg.Connection] = (),
                         timeout: float = 10.0) -> None:
    """ALTER SYSTEM SET (or RESET, for None) ledger.signing_key_file, reload, and wait until a new
    connection and each of `connections` (autocommit) see the new value."""
    with cluster.connect("postgres", autocommit=True) as admin:
        admin.execute("LOAD 'ledger'")  # ALTER SYSTEM knows the setting only once the library is in
        if path is None:
            admin.execute("ALTER SYSTEM RESET ledger.signing_key_file")
        else:
            admin.execute(sql.SQL("ALTER SYSTEM SET ledger.signing_key_file = {}")
                          .format(sql.Literal(str(path))))
        admin.execute("SELECT pg_reload_conf()")
    want = "" if path is None else str(path)
    query = "SELECT coalesce(current_setting('ledger.signing_key_file', true), '')"

    def fresh_sees_it():
        with cluster.connect("postgres", autocommit=True) as conn:
            return conn.execute(query).fetchone()[0] == want

    wait_until(fresh_sees_it, timeout, 0.02, f"ledger.signing_key_file = {want!r} in new connections")
    for conn in connections:
        wait_until(lambda: conn.execute(query).fetchone()[0] == want, timeout, 0.02,
                   f"ledger.signing_key_file = {want!r} in an open connection")


def fresh_database(cluster, request, options="", settings=None, extension=True):
    """Generator for fixtures: a fresh database (with the extension unless told not to), dropped after."""
    name = database_name(request.node.name)
    with cluster.connect("postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 {options}')
    database = None
    try:
        database = Database(cluster, name, settings)
        if extension:
            database.execute("CREATE EXTENSION ledger")
        yield database
    finally:
        if database is not None:
            database.close_all()
        with cluster.connect("postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
