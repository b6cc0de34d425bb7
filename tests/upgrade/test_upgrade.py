"""ALTER EXTENSION ledger UPDATE from every earlier release, on a real server whose library is replaced
under it.

Each release is built from its commit (scripts/release-build.sh, cached) and installed into a private
copy of the PostgreSQL installation, so the system's own install (the current build) is untouched. A
server started from that copy is filled with ledgers, signed checkpoints, digests and proofs by it;
then the current build is installed into the copy while the server runs (files renamed over, as
scripts/install.sh does) and the extension is updated. Afterwards every old record, checkpoint,
proof and digest still verifies, appends continue the same chains, and the upgraded catalog is
identical to a fresh install of the current version: a change to the SQL surface without an upgrade
script fails here.
"""

from __future__ import annotations

import difflib
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from ledgertest import ROOT, Cluster, set_signing_key_file  # noqa: E402

# Every release, by the commit it was made from. Each is upgraded from in its own servers.
RELEASES = {"0.1.0": "c86d02a", "0.2.0": "dd20dc7", "0.3.0": "d79316e", "0.4.0": "c715325", "0.5.0": "75a2a52",
            "0.6.0": "7ccdd96"}
SYSTEM_LIB = Path("/usr/lib/postgresql/15")
SYSTEM_SHARE = Path("/usr/share/postgresql/15")
CURRENT_BUILD = ROOT / "target" / "release" / "ledger-pg15"  # staged by scripts/install.sh
POSTGRES = pwd.getpwnam("postgres")
ANCHORS = [str(uuid.UUID(int=i + 1)) for i in range(3)]
ACCOUNTS = ["alice", "bob", "carol", "dave"]


def current_version() -> str:
    for line in (ROOT / "Cargo.toml").read_text().splitlines():
        if line.startswith("version"):
            return line.split('"')[1]
    raise AssertionError("no version in Cargo.toml")


def install_tree(staged: Path, prefix: Path) -> None:
    """Copies a staged install tree into the private installation; each file is renamed over its
    destination, so a server that mapped the old library keeps its mapping."""
    for source in staged.rglob("*"):
        if not source.is_file() or source.name.startswith("."):
            continue
        dest = prefix / source.relative_to(staged)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.copyfile(source, tmp)
        tmp.chmod(0o644)
        tmp.replace(dest)


@pytest.fixture(scope="module", params=sorted(RELEASES))
def old_version(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def old_build(old_version) -> Path:
    result = subprocess.run([str(ROOT / "scripts" / "release-build.sh"), old_version, RELEASES[old_version]],
                            capture_output=True, text=True, timeout=3000)
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def prefix(old_build):
    """A private copy of the PostgreSQL 15 installation holding an earlier release of the extension."""
    assert (CURRENT_BUILD / "usr/lib/postgresql/15/lib/ledger.so").exists(), \
        "run scripts/install.sh first: the current build is staged there"
    root = Path(tempfile.mkdtemp(prefix="ledger-upgrade-"))
    shutil.copytree(SYSTEM_LIB, root / SYSTEM_LIB.relative_to("/"), symlinks=True)
    shutil.copytree(SYSTEM_SHARE, root / SYSTEM_SHARE.relative_to("/"), symlinks=True)
    for old in [root / "usr/lib/postgresql/15/lib/ledger.so",
                *(root / "usr/share/postgresql/15/extension").glob("ledger*")]:
        old.unlink(missing_ok=True)
    install_tree(old_build, root)
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(prefix):
    saved = os.environ.get("PG_BIN")
    os.environ["PG_BIN"] = str(prefix / "usr/lib/postgresql/15/bin")
    c = Cluster(ports=range(55440, 55450))
    try:
        c.start()
        yield c
    finally:
        c.stop(keep=bool(os.environ.get("LEDGER_PYTEST_KEEP")))
        if saved is None:
            os.environ.pop("PG_BIN", None)
        else:
            os.environ["PG_BIN"] = saved


def connect(cluster, dbname):
    return cluster.connect(dbname, autocommit=True)


def one(conn, query, params=None):
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def signing_key(cluster) -> str:
    key_dir = Path(cluster.dir) / "keys"
    key_dir.mkdir(mode=0o700, exist_ok=True)
    os.chown(key_dir, POSTGRES.pw_uid, POSTGRES.pw_gid)
    path = key_dir / "ledger.key"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(path)], check=True,
                   capture_output=True)
    os.chown(path, POSTGRES.pw_uid, POSTGRES.pw_gid)
    path.chmod(0o600)
    return str(path)


def extension_objects(conn) -> list[str]:
    """Every member of the extension with what defines it: functions, tables and their columns,
    constraints, indexes and triggers, views, event triggers, privileges, comments, and the tables
    pg_dump includes."""
    return [r[0] for r in conn.execute("""
        WITH members AS (
            SELECT classid, objid FROM pg_depend
             WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
               AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ledger'))
        SELECT pg_describe_object(m.classid, m.objid, 0) || E'\n' || coalesce(CASE m.classid
            WHEN 'pg_proc'::regclass THEN
                (SELECT format('%s owner=%s acl=%s', pg_get_functiondef(p.oid), p.proowner::regrole, p.proacl)
                   FROM pg_proc p WHERE p.oid = m.objid)
            WHEN 'pg_class'::regclass THEN
                (SELECT concat_ws(E'\n', format('kind=%s owner=%s acl=%s persistence=%s', c.relkind,
                                                 c.relowner::regrole, c.relacl, c.relpersistence),
                        'comment=' || coalesce(obj_description(c.oid, 'pg_class'), '-'),
                        CASE WHEN c.relkind = 'v' THEN pg_get_viewdef(c.oid) END,
                        (SELECT string_agg(format('column %s %s notnull=%s default=%s', a.attname,
                                format_type(a.atttypid, a.atttypmod), a.attnotnull,
                                pg_get_expr(d.adbin, d.adrelid)), E'\n' ORDER BY a.attnum)
                           FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                          WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
                        (SELECT string_agg('constraint ' || conname || ' ' || pg_get_constraintdef(oid), E'\n'
                                           ORDER BY conname) FROM pg_constraint WHERE conrelid = c.oid),
                        (SELECT string_agg('index ' || pg_get_indexdef(indexrelid), E'\n' ORDER BY 1)
                           FROM pg_index WHERE indrelid = c.oid),
                        (SELECT string_agg(format('trigger %s %s', pg_get_triggerdef(t.oid), t.tgenabled), E'\n'
                                           ORDER BY t.tgname) FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal))
                   FROM pg_class c WHERE c.oid = m.objid)
            WHEN 'pg_event_trigger'::regclass THEN
                (SELECT format('%s %s %s %s', evtname, evtevent, evtfoid::regproc, evtenabled)
                   FROM pg_event_trigger WHERE oid = m.objid)
            WHEN 'pg_namespace'::regclass THEN
                (SELECT 'acl=' || coalesce(nspacl::text, '-') FROM pg_namespace WHERE oid = m.objid)
            END, '')
          FROM members m
        UNION ALL
        SELECT 'extension ' || extversion || ' config ' ||
               coalesce((SELECT string_agg(c::regclass::text || ' ' || w, ', ' ORDER BY c::regclass::text)
                           FROM unnest(extconfig, extcondition) AS u(c, w)), '-')
          FROM pg_extension WHERE extname = 'ledger'
        ORDER BY 1""").fetchall()]


# Lines of a dump that differ between any two databases: the random key of psql's \\restrict, and in
# binary-upgrade mode the OIDs and transaction ids it preserves (the extension's configuration,
# whose order follows creation, is compared by extension_objects).
DUMP_NOISE = re.compile(r"^(\\(un)?restrict |-- Dumped |SELECT pg_catalog\.binary_upgrade_(set_next_|create_empty_extension)"
                        r"|SET relfrozenxid = |WHERE oid = '\d+';)")


def schema_dump(cluster, dbname, *options: str) -> list[str]:
    """`pg_dump --schema-only`; with --binary-upgrade it writes every member of the extension as
    its own statement (as pg_upgrade needs), so two dumps compare the extensions' whole catalogs."""
    result = subprocess.run(
        [os.environ["PG_BIN"] + "/pg_dump", "--schema-only", *options, "-h", cluster.socket_dir,
         "-p", str(cluster.port), "-U", "postgres", dbname], capture_output=True, text=True, check=True)
    return [line for line in result.stdout.splitlines() if not DUMP_NOISE.match(line)]


def generated_blocks(script: str) -> list[str]:
    """The blocks of a script pgrx generated, in a fixed order: pgrx orders blocks that do not
    depend on each other differently from build to build (0.3.0 and 0.4.0 rebuilt on another
    machine put the same blocks in another order)."""
    return sorted(script.split("/* <begin connected objects> */"))


def test_committed_install_script_is_the_release(old_version, old_build):
    """sql/ledger--<release>.sql is what the release's own build generates."""
    script = f"ledger--{old_version}.sql"
    built = (old_build / "usr/share/postgresql/15/extension" / script).read_text()
    assert generated_blocks((ROOT / "sql" / script).read_text()) == generated_blocks(built)


def restart(cluster) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", os.environ["PG_BIN"] + "/pg_ctl", "-D",
                    str(cluster.dir / "data"), "-w", "-l", str(cluster.dir / "server.log"), "restart"],
                   check=True, capture_output=True)


@pytest.fixture(scope="module")
def preloading(cluster):
    """A second server on the same installation that preloads the library (the release's, at first)."""
    c = Cluster(ports=range(55440, 55450))
    c.start()
    with c.connect("postgres", autocommit=True) as admin:
        admin.execute("ALTER SYSTEM SET shared_preload_libraries = 'ledger'")
    restart(c)
    try:
        yield c
    finally:
        c.stop(keep=bool(os.environ.get("LEDGER_PYTEST_KEEP")))


def version_key(version: str) -> tuple[int, ...]:
    return tuple(map(int, version.split(".")))


# A history ledger's columns as enable_history makes them today (0.3.0 had a leading vid uuid).
CURRENT_HISTORY_COLUMNS = ["key", "op", "at", "role", "txid", "row", "seq", "prev_hash", "hash"]


def columns_of(db, table: str) -> list[str]:
    return [r[0] for r in db.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
        "ORDER BY attnum", (table,)).fetchall()]


def needs_new_symbols(old_version: str, new_version: str) -> bool:
    """Does the update path declare C functions the release's library lacks? A preloaded old
    library then refuses the update until the server restarts."""
    versions = sorted([*RELEASES, new_version], key=version_key)
    path = versions[versions.index(old_version):]
    return any("MODULE_PATHNAME" in (ROOT / "sql" / f"ledger--{a}--{b}.sql").read_text()
               for a, b in zip(path, path[1:]))


def test_upgrade(old_version, cluster, preloading, prefix):
    new_version = current_version()
    assert new_version != old_version
    with connect(cluster, "postgres") as admin:
        for name in ("upgraded", "upgraded_empty", "fresh"):
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
            admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    set_signing_key_file(cluster, signing_key(cluster))

    # --- The release: ledgers, signed checkpoints, digests, proofs.
    old = connect(cluster, "upgraded")
    old.execute(f"CREATE EXTENSION ledger VERSION '{old_version}'")
    assert one(old, "SELECT extversion FROM pg_extension WHERE extname = 'ledger'") == old_version
    old.execute("CREATE TABLE payments (id bigint PRIMARY KEY, account text NOT NULL, amount numeric NOT NULL)")
    old.execute("INSERT INTO payments SELECT i, %s, i * 1.5 FROM generate_series(1, 3) i", (ACCOUNTS[0],))
    old.execute("SELECT ledger.enable('payments', chain_by => 'account')")
    for i in range(4, 41):
        old.execute("INSERT INTO payments VALUES (%s, %s, %s)", (i, ACCOUNTS[i % 4], i))
    for i in range(30):
        old.execute("INSERT INTO ledger.records (anchor_id, slot, kind, payload) VALUES (%s, 's', 'k', %s)",
                    (ANCHORS[i % 3], f'{{"n": {i}}}'))
    old_checkpoints = [r[0] for r in old.execute(
        "SELECT cid FROM ledger.checkpoint('payments') UNION ALL SELECT cid FROM ledger.checkpoint()").fetchall()]
    assert len(old_checkpoints) == 7
    assert one(old, "SELECT bool_and(sig IS NOT NULL) FROM ledger.checkpoints") is True
    digests = [one(old, "SELECT ledger.digest(%s)", (cid,)) for cid in old_checkpoints]
    proofs = old.execute(
        "SELECT c.cid, p.hash, c.merkle_root, c.record_count, ledger.inclusion_proof(c.cid, 2) "
        "FROM ledger.checkpoints c JOIN payments p ON p.account = c.chain AND p.seq = 2 "
        "WHERE c.cid = ANY(%s)", (old_checkpoints,)).fetchall()
    assert len(proofs) == 4
    heads_before = dict(old.execute("SELECT account, max(seq) FROM payments GROUP BY account").fetchall())
    # A chain long enough for stored subtrees (one per 256 records), checkpointed by the release.
    old.execute("CREATE TABLE long_chain (id int PRIMARY KEY)")
    old.execute("SELECT ledger.enable('long_chain')")
    old.execute("INSERT INTO long_chain SELECT generate_series(1, 600)")
    long_cid = one(old, "SELECT cid FROM ledger.checkpoint('long_chain')")
    # A history-tracked table (0.3.0 and later), with the release's history layout.
    tracked = version_key(old_version) >= (0, 3, 0)
    if tracked:
        old.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance numeric NOT NULL)")
        old.execute("INSERT INTO accounts VALUES (1, 10), (2, 20)")
        old.execute("SELECT ledger.enable_history('accounts')")
        old.execute("UPDATE accounts SET balance = balance + 1 WHERE id = 1")
        history_columns = columns_of(old, "accounts_history")
    with connect(cluster, "upgraded_empty") as empty:
        empty.execute(f"CREATE EXTENSION ledger VERSION '{old_version}'")
    with connect(preloading, "postgres") as pre:
        pre.execute(f"CREATE EXTENSION ledger VERSION '{old_version}'")
        pre.execute("INSERT INTO ledger.records (anchor_id, slot, kind, payload) VALUES (%s, 's', 'k', '{}')",
                    (ANCHORS[0],))

    # --- The current build replaces the library and scripts while the server runs. The open
    # connection keeps the release's library; new ones load the new library against the release's catalog.
    install_tree(CURRENT_BUILD, prefix)
    old.execute("INSERT INTO payments VALUES (41, 'alice', 1)")
    with connect(cluster, "upgraded") as before_update:
        # The release's SQL on the new library: every function it declares still works.
        before_update.execute("INSERT INTO payments VALUES (42, 'bob', 2)")
        assert before_update.execute("SELECT * FROM ledger.verify('payments')").fetchall() == []
        assert before_update.execute("SELECT * FROM ledger.verify()").fetchall() == []
        before_update.execute("CREATE TABLE between_releases (id int PRIMARY KEY, k text NOT NULL)")
        before_update.execute("INSERT INTO between_releases VALUES (1, 'a'), (2, 'b')")
        before_update.execute("SELECT ledger.enable('between_releases', 'k')")
        before_update.execute("INSERT INTO between_releases VALUES (3, 'a')")
        assert before_update.execute("SELECT * FROM ledger.verify('between_releases')").fetchall() == []
        cid = one(before_update, "SELECT cid FROM ledger.checkpoint('payments', 'alice')")
        assert all(r[1] for r in before_update.execute("SELECT * FROM ledger.verify_checkpoint(%s)", (cid,)))
        digest = one(before_update, "SELECT ledger.digest(%s)", (cid,))
        assert all(r[1] for r in before_update.execute("SELECT * FROM ledger.verify_digest(%s)", (digest,)))
        proof = one(before_update, "SELECT ledger.inclusion_proof(%s, 1)", (cid,))
        assert one(before_update, "SELECT ledger.verify_inclusion(p.hash, %s, c.merkle_root, c.record_count) "
                                  "FROM payments p, ledger.checkpoints c WHERE p.account = 'alice' AND p.seq = 1 "
                                  "AND c.cid = %s", (Jsonb(proof), cid)) is True
        assert one(before_update, "SELECT ledger.public_key()") is not None
        assert one(before_update, "SELECT count(*) FROM ledger.export('payments')") > 1

    # A server that preloads runs the library it started with: when the update declares functions
    # that library lacks, the update fails, changing nothing, until the server is restarted.
    if needs_new_symbols(old_version, new_version):
        with connect(preloading, "postgres") as pre:
            with pytest.raises(psycopg.errors.UndefinedFunction, match="could not find function"):
                pre.execute("ALTER EXTENSION ledger UPDATE")
            assert one(pre, "SELECT extversion FROM pg_extension WHERE extname = 'ledger'") == old_version
            assert pre.execute("SELECT * FROM ledger.verify()").fetchall() == []
    restart(preloading)
    with connect(preloading, "postgres") as pre:
        pre.execute("ALTER EXTENSION ledger UPDATE")
        pre.execute("INSERT INTO ledger.records (anchor_id, slot, kind, payload) VALUES (%s, 's', 'k', '{}')",
                    (ANCHORS[0],))
        assert pre.execute("SELECT * FROM ledger.verify()").fetchall() == []
        assert one(pre, "SELECT ledger.counters_available()") is True
        assert one(pre, "SELECT appends FROM ledger.stats WHERE ledger = 'ledger.records'") == 1

    # --- The update.
    with connect(cluster, "upgraded") as updater:
        updater.execute("ALTER EXTENSION ledger UPDATE")
        assert one(updater, "SELECT extversion FROM pg_extension WHERE extname = 'ledger'") == new_version
    with connect(cluster, "upgraded_empty") as empty:
        empty.execute("ALTER EXTENSION ledger UPDATE")
    with connect(cluster, "fresh") as fresh:
        fresh.execute("CREATE EXTENSION ledger")

    # The connection that loaded the release goes on appending after the update.
    old.execute("INSERT INTO payments VALUES (43, 'carol', 3)")
    old.close()

    with connect(cluster, "upgraded") as db:
        for tbl in ("payments", "ledger.records", "ledger.checkpoints", "ledger.events", "ledger.verify_runs"):
            assert db.execute("SELECT * FROM ledger.verify(%s)", (tbl,)).fetchall() == [], tbl
        for cid in old_checkpoints:
            checks = db.execute("SELECT * FROM ledger.verify_checkpoint(%s)", (cid,)).fetchall()
            assert all(ok for _, ok, _ in checks), checks
        for text in digests:
            checks = db.execute("SELECT * FROM ledger.verify_digest(%s)", (text,)).fetchall()
            assert checks and all(ok for _, ok, _ in checks), checks
        for cid, record_hash, root, size, proof in proofs:
            assert one(db, "SELECT ledger.verify_inclusion(%s, %s, %s, %s)",
                       (record_hash, Jsonb(proof), root, size)) is True

        # Appends continue the same chains: each new record links to the last one the release stored.
        for account in ACCOUNTS:
            db.execute("INSERT INTO payments VALUES ((SELECT max(id) + 1 FROM payments), %s, 9)", (account,))
        links = db.execute(
            "SELECT p.account, p.seq, p.prev_hash = q.hash FROM payments p JOIN payments q "
            "ON q.account = p.account AND q.seq = p.seq - 1 WHERE p.seq > (%s::jsonb ->> p.account)::bigint",
            (Jsonb({k: str(v) for k, v in heads_before.items()}),)).fetchall()
        assert links and all(ok for _, _, ok in links)
        counts = dict(db.execute("SELECT account, count(*) FROM payments GROUP BY account").fetchall())
        heads = dict(db.execute("SELECT account, max(seq) FROM payments GROUP BY account").fetchall())
        assert counts == heads  # dense from 1

        # New checkpoints extend the old ones, and the new surface works on old data.
        db.execute("INSERT INTO long_chain VALUES (601)")
        new_cids = [r[0] for r in db.execute("SELECT cid FROM ledger.checkpoint_all()").fetchall()]
        # The long chain's first checkpoint since the update stored its subtrees from the start;
        # proofs of it and of the release's checkpoint verify.
        assert one(db, "SELECT count(*) FROM ledger.subtrees WHERE ledger = 'public.long_chain'") == 2
        new_long = one(db, "SELECT cid FROM ledger.checkpoints WHERE ledger = 'public.long_chain' "
                           "ORDER BY seq DESC LIMIT 1")
        assert new_long != long_cid
        for cid in (long_cid, new_long):
            assert one(db, "SELECT ledger.verify_inclusion(l.hash, ledger.inclusion_proof(c.cid, 300), c.merkle_root, "
                           "c.record_count) FROM long_chain l, ledger.checkpoints c WHERE l.seq = 300 AND c.cid = %s",
                       (cid,)) is True
        proof = one(db, "SELECT ledger.consistency_proof(%s, %s)", (long_cid, new_long))
        assert one(db, "SELECT ledger.verify_consistency(%s)", (Jsonb(proof),)) is True
        assert new_cids
        for old_cid, new_cid in db.execute(
                "SELECT o.cid, n.cid FROM ledger.checkpoints o JOIN ledger.checkpoints n "
                "ON n.ledger = o.ledger AND n.chain IS NOT DISTINCT FROM o.chain "
                "WHERE o.cid = ANY(%s) AND n.cid = ANY(%s)", (old_checkpoints, new_cids)).fetchall():
            proof = one(db, "SELECT ledger.consistency_proof(%s, %s)", (old_cid, new_cid))
            assert one(db, "SELECT ledger.verify_consistency(%s)", (Jsonb(proof),)) is True
        runs = db.execute("SELECT ledger, problems, checkpoint_failures FROM ledger.verify_all()").fetchall()
        assert {r[0] for r in runs} >= {"public.payments", "ledger.records"}
        assert all(r[1] == 0 and r[2] == 0 for r in runs), runs
        stats = dict(db.execute("SELECT ledger, records FROM ledger.stats").fetchall())
        assert stats["public.payments"] == sum(counts.values())

        # A column added after the update is covered by the records that have a value in it; the
        # release's records, checkpoints and digests verify as before.
        db.execute("ALTER TABLE payments ADD COLUMN memo text")
        db.execute("INSERT INTO payments (id, account, amount, memo) "
                   "VALUES ((SELECT max(id) + 1 FROM payments), %s, 1, 'after the update')", (ACCOUNTS[0],))
        assert db.execute("SELECT * FROM ledger.verify('payments')").fetchall() == []
        assert one(db, "SELECT event FROM ledger.events WHERE ledger = 'public.payments' "
                       "ORDER BY seq DESC LIMIT 1") == "alter"
        for cid in old_checkpoints:
            checks = db.execute("SELECT * FROM ledger.verify_checkpoint(%s)", (cid,)).fetchall()
            assert all(ok is not False for _, ok, _ in checks), checks
        for text in digests:
            checks = db.execute("SELECT * FROM ledger.verify_digest(%s)", (text,)).fetchall()
            assert all(ok is not False for _, ok, _ in checks), checks

        if tracked:
            # The release's history keeps its layout (its columns are hashed in its records) and
            # takes the current library's versions; a table tracked now gets the current layout.
            db.execute("UPDATE accounts SET balance = balance + 1 WHERE id = 1")
            db.execute("UPDATE accounts SET id = 3 WHERE id = 2")
            db.execute("INSERT INTO accounts VALUES (4, 40)")
            assert columns_of(db, "accounts_history") == history_columns
            assert db.execute("SELECT * FROM ledger.verify('accounts')").fetchall() == []
            assert [r[0] for r in db.execute("SELECT op FROM ledger.history('accounts', '{\"id\": 1}')")] == \
                ["insert", "update", "update"]
            assert [r[0] for r in db.execute("SELECT op FROM ledger.history('accounts', '{\"id\": 2}')")] == \
                ["insert", "delete"]
            # Versions the release wrote can be pruned: each key keeps its newest, the history
            # and its checkpoints (the release's too) verify after.
            history_checkpoint = one(db, "SELECT cid FROM ledger.checkpoint('accounts', '{\"id\": 1}')")
            db.execute("SELECT ledger.set_retention('accounts', '1 microsecond', 'at')")
            pruned = db.execute("SELECT chain, pruned FROM ledger.prune('accounts') ORDER BY chain").fetchall()
            assert pruned == [('{"id": 1}', 2), ('{"id": 2}', 1)], pruned
            assert db.execute("SELECT * FROM ledger.verify('accounts')").fetchall() == []
            checks = db.execute("SELECT * FROM ledger.verify_checkpoint(%s)", (history_checkpoint,)).fetchall()
            assert all(ok is not False for _, ok, _ in checks), checks
            db.execute("CREATE TABLE accounts_now (id int PRIMARY KEY, balance numeric NOT NULL)")
            db.execute("SELECT ledger.enable_history('accounts_now')")
            assert columns_of(db, "accounts_now_history") == CURRENT_HISTORY_COLUMNS

    # --- The upgraded catalog is a fresh install's.
    with connect(cluster, "upgraded_empty") as upgraded, connect(cluster, "fresh") as fresh:
        a, b = extension_objects(upgraded), extension_objects(fresh)
        assert a == b, "\n".join(difflib.unified_diff(b, a, "fresh install", f"upgraded from {old_version}", lineterm=""))
    for options in ([], ["--binary-upgrade"]):
        a, b = schema_dump(cluster, "upgraded_empty", *options), schema_dump(cluster, "fresh", *options)
        assert a == b, "\n".join(difflib.unified_diff(b, a, "fresh install", f"upgraded from {old_version}", lineterm=""))
