"""Clusters of their own for the adversarial tests that crash, replicate or restart servers: each in a
fresh /tmp/ledger-adv-* directory, on a free port of 55470-55489, started with scripts/cluster.sh as the
postgres OS user. `own_cluster()` stops and removes one whatever happens; a `Database` of
tests/integration/ledgertest.py works on an OwnCluster as on the suite's shared cluster."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

import psycopg

from ledgertest import CLUSTER_SH, DEFAULT_SETTINGS, PG_BIN, Database, _port_is_free, wait_until

PORTS = range(55470, 55490)
DIR_PREFIX = "ledger-adv-"
_taken: set[int] = set()  # ports handed out by this process (a stopped cluster does not listen)
_taken_lock = threading.Lock()


def as_postgres(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(["runuser", "-u", "postgres", "--", *args], capture_output=True,
                            text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{args[0]} failed ({result.returncode}): {result.stderr}")
    return result


def _claim_port() -> int:
    with _taken_lock:
        for port in PORTS:
            if port not in _taken and _port_is_free(port):
                _taken.add(port)
                return port
    raise RuntimeError(f"no free port in {PORTS}")


class OwnCluster:
    """One PostgreSQL 15 cluster in its own directory (data/, socket/, server.log)."""

    def __init__(self, name: str = "c", conf: tuple[str, ...] | list[str] = ()) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{name}-", dir="/tmp"))
        self.conf = list(conf)
        self.port: int | None = None

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def socket_dir(self) -> str:
        return str(self.dir / "socket")

    def start(self) -> None:
        """initdb (the first time, with the conf lines) and start; restarts keep the port."""
        for _ in range(5):
            fresh = self.port is None
            if fresh:
                self.port = _claim_port()
            result = subprocess.run([str(CLUSTER_SH), "start", str(self.dir), str(self.port), *self.conf],
                                    capture_output=True, text=True)
            if result.returncode == 0:
                return
            if not fresh or not (self.data / "PG_VERSION").exists():
                raise AssertionError(f"cluster {self.dir} did not start: {result.stderr}\n{self.log()[-3000:]}")
            # Someone took the port between the check and the start: initdb again on another one.
            shutil.rmtree(self.data, ignore_errors=True)
            self.port = None
        raise AssertionError(f"cluster {self.dir} did not start on any port")

    def start_as_standby_of(self, primary: "OwnCluster") -> None:
        """pg_basebackup -R of `primary`, then start it as a hot standby on a port of its own."""
        self.port = _claim_port()
        (self.dir / "socket").mkdir(exist_ok=True)
        shutil.chown(self.dir, "postgres", "postgres")
        shutil.chown(self.dir / "socket", "postgres", "postgres")
        as_postgres(str(PG_BIN / "pg_basebackup"), "-h", primary.socket_dir, "-p", str(primary.port),
                    "-U", "postgres", "-D", str(self.data), "-R", "-X", "stream", "-c", "fast")
        with open(self.data / "postgresql.conf", "a") as conf:  # later lines win
            conf.write(f"port = {self.port}\nunix_socket_directories = '{self.socket_dir}'\n"
                       "hot_standby = on\n")
        self.start()

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60",
                        "stop", check=False)

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])

    def processes(self) -> list[int]:
        """Every live process of this cluster: a PostgreSQL server process runs in its data directory."""
        pids = []
        data = str(self.data.resolve())
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if os.readlink(entry / "cwd") == data:
                        pids.append(int(entry.name))
        return pids

    def kill9(self) -> None:
        """SIGKILL the postmaster, then every backend it orphaned, and wait until none is left (the
        postmaster reaped too: a new one refuses to start while the old pid exists, even as a zombie)."""
        postmaster = self.postmaster_pid()
        os.kill(postmaster, signal.SIGKILL)

        def all_gone():
            for pid in self.processes():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return not self.processes() and not Path(f"/proc/{postmaster}").exists()

        wait_until(all_gone, 30, 0.01, "the orphaned server processes to die")

    def remove(self) -> None:
        for pid in self.processes():  # a test that failed half way through a crash
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with _taken_lock:
            _taken.discard(self.port)
        if not os.environ.get("LEDGER_PYTEST_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        path = self.dir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def conninfo(self, dbname: str = "postgres") -> str:
        return psycopg.conninfo.make_conninfo(host=self.socket_dir, port=self.port, user="postgres",
                                              dbname=dbname)

    def connect(self, dbname: str = "postgres", autocommit: bool = False,
                settings: dict | None = None) -> psycopg.Connection:
        conn = psycopg.connect(self.conninfo(dbname), autocommit=autocommit)
        for name, value in {**DEFAULT_SETTINGS, **(settings or {})}.items():
            conn.execute("SELECT set_config(%s, %s, false)", (name, str(value)))
        if not autocommit:
            conn.commit()
        return conn

    def create_database(self, name: str, extension: bool = True) -> Database:
        with self.connect(autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        db = Database(self, name)
        if extension:
            db.execute("CREATE EXTENSION ledger")
        return db


@contextlib.contextmanager
def own_cluster(name: str = "c", conf=(), start: bool = True):
    """An OwnCluster, started unless told not to; stopped and removed after, even on failure."""
    cluster = OwnCluster(name, conf)
    try:
        if start:
            cluster.start()
        yield cluster
    finally:
        try:
            cluster.stop("immediate")
        finally:
            cluster.remove()


def wait_for_replay(primary: Database, standby: Database, timeout: float = 20) -> None:
    """Until the standby has replayed everything the primary has written so far."""
    lsn = primary.scalar("SELECT pg_current_wal_lsn()")
    wait_until(lambda: standby.scalar("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)),
               timeout, 0.02, f"the standby to replay up to {lsn}")
