"""monitoring/postgres_exporter/queries.yaml, served by the real prometheus-postgres-exporter: a
cluster with the library preloaded (counters kept) and one without, each with ledgers in known
states, an exporter logged in as a role that has only pg_monitor, and its /metrics compared with
what ledger.stats and ledger.refusals say at the same moment."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass

import psycopg
import pytest

from ledgertest import Database
from monitoringtest import (DASHBOARD_JSON, Exporter, dashboard_metric_names, defined_metrics, is_nan,
                            make_monitoring_role, own_cluster, running_exporter)

DBNAME = "ledger_metrics"

# What every ledger has, whatever its state (one series per ledger).
ALWAYS = ["ledger_records", "ledger_chains", "ledger_unanchored_records", "ledger_retired"]
# The series the brief of this suite requires, at the least.
REQUIRED = ["ledger_records", "ledger_chains", "ledger_unanchored_records",
            "ledger_checkpoint_age_seconds", "ledger_verify_problems",
            "ledger_verify_last_run_timestamp_seconds", "ledger_appends_total", "ledger_refusals_total"]
COUNTERS = ["ledger_appends_total", "ledger_verify_runs_total", "ledger_refusals_total"]
REFUSAL_KINDS = {"update", "delete", "truncate", "ddl", "forged_link", "retired"}

# ledger.stats columns next to the metric that shows each; the timestamps are read as PostgreSQL
# computes the exporter's epoch, so the two are the same double.
STATS_QUERY = """
SELECT ledger, chains, records, unanchored_records, retired::int AS retired,
       extract(epoch FROM last_append)::double precision AS last_append,
       checkpoint_age_seconds,
       extract(epoch FROM last_checkpoint)::double precision AS last_checkpoint,
       checkpoints_signed::int AS checkpoints_signed,
       last_verify_problems,
       extract(epoch FROM last_verify)::double precision AS last_verify,
       last_verify_seconds, appends, verify_runs, refusals
  FROM ledger.stats ORDER BY ledger"""
# Metric -> ledger.stats column, for the values that stay put while nothing appends or verifies.
EXACT = {
    "ledger_chains": "chains",
    "ledger_records": "records",
    "ledger_unanchored_records": "unanchored_records",
    "ledger_retired": "retired",
    "ledger_last_append_timestamp_seconds": "last_append",
    "ledger_checkpoint_last_timestamp_seconds": "last_checkpoint",
    "ledger_checkpoint_signed": "checkpoints_signed",
    "ledger_verify_problems": "last_verify_problems",
    "ledger_verify_last_run_timestamp_seconds": "last_verify",
    "ledger_verify_last_duration_seconds": "last_verify_seconds",
    "ledger_appends_total": "appends",
    "ledger_verify_runs_total": "verify_runs",
}

# The refusals provoked on the preloaded cluster's ledgers: a different count for each kind, so a
# count under the wrong label shows.
PROVOKED = {
    ("public.payments", "update"): 1,
    ("public.payments", "delete"): 2,
    ("public.payments", "truncate"): 3,
    ("public.payments", "forged_link"): 2,
    ("public.payments", "ddl"): 1,
    ("public.closed_books", "retired"): 1,
}
PAYMENTS = {"alice": 4, "bob": 2, "carol": 1}  # records per chain before the checkpoint


@dataclass
class Monitored:
    cluster: object
    db: Database
    exporter: Exporter
    role: str

    def stats(self) -> dict[str, dict]:
        with self.db.conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            return {row["ledger"]: row for row in cur.execute(STATS_QUERY).fetchall()}

    def refusals(self) -> dict[tuple[str, str], int]:
        return {(ledger, kind): n for ledger, kind, n in
                self.db.fetchall("SELECT ledger, kind, refusals FROM ledger.refusals")}


def expect_refused(conn, statement: str, sqlstate: str, params=None) -> None:
    """`statement` fails with `sqlstate` (in a savepoint-free autocommit connection)."""
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(statement, params)
    assert caught.value.sqlstate == sqlstate, (statement, caught.value)


def build_ledgers(db: Database, *, provoke: bool) -> None:
    """The ledgers both clusters hold, in every state the metrics distinguish:
    public.payments    three chains, owned by a role that is not a superuser, checkpointed and
                       verified, then one more record (so one is unanchored);
    public.closed_books retired by its owner (appends refused from then on);
    public.ticks       one chain, for the tests that append between scrapes;
    ledger.records     the built-in ledger, two chains;
    public.late_entries made and appended to after the checkpoint and verification runs: never
                       checkpointed, never verified;
    public.empty_book  registered, never appended to.
    With `provoke`, the refusals of PROVOKED (UPDATE, DELETE, TRUNCATE, a forged prev_hash, a DDL
    by the owner, an append to the retired ledger) happen before the checkpoint and verification."""
    db.execute("CREATE ROLE payments_owner LOGIN")
    db.execute("GRANT CREATE ON SCHEMA public TO payments_owner")
    # Logged in as the owner (trust authentication): the guards judge the role, not a SET ROLE.
    owner = psycopg.connect(psycopg.conninfo.make_conninfo(db.cluster.conninfo(db.name),
                                                           user="payments_owner"), autocommit=True)
    owner.execute("SET statement_timeout = '60s'")
    try:
        owner.execute("CREATE TABLE payments (id bigint PRIMARY KEY, account text NOT NULL, "
                      "amount numeric NOT NULL)")
        owner.execute("SELECT ledger.enable('payments', chain_by => 'account')")
        next_id = 1
        for account, count in PAYMENTS.items():
            for _ in range(count):  # one transaction each: appends are counted at commit
                owner.execute("INSERT INTO payments (id, account, amount) VALUES (%s, %s, 10)",
                              (next_id, account))
                next_id += 1
        owner.execute("CREATE TABLE closed_books (id int PRIMARY KEY, note text NOT NULL)")
        owner.execute("SELECT ledger.enable('closed_books')")
        owner.execute("INSERT INTO closed_books VALUES (1, 'opening'), (2, 'closing')")
        owner.execute("SELECT count(*) FROM ledger.retire('closed_books', 'year closed')")
        owner.execute("CREATE TABLE ticks (id int PRIMARY KEY)")
        owner.execute("SELECT ledger.enable('ticks')")
        owner.execute("INSERT INTO ticks VALUES (1)")

        if provoke:
            expect_refused(owner, "UPDATE payments SET amount = 0 WHERE account = 'alice'", "23001")
            for _ in range(2):
                expect_refused(owner, "DELETE FROM payments WHERE id = 1", "23001")
            for _ in range(3):
                expect_refused(owner, "TRUNCATE payments", "23001")
            for _ in range(2):  # alice's head is seq 4; a prev_hash that is not its hash
                expect_refused(owner, "INSERT INTO payments (id, account, amount, prev_hash) "
                                      "VALUES (99, 'alice', 1, repeat('0', 64))", "23514")
            expect_refused(owner, "ALTER TABLE payments RENAME COLUMN amount TO paid", "42501")
            expect_refused(owner, "INSERT INTO closed_books VALUES (3, 'late')", "55000")

        db.execute("INSERT INTO ledger.records (anchor_id, slot, kind, payload) VALUES "
                   "('a1111111-1111-4111-8111-111111111111', 's', 'k', '{}'), "
                   "('a1111111-1111-4111-8111-111111111111', 's', 'k', '{}'), "
                   "('b2222222-2222-4222-8222-222222222222', 's', 'k', '{}')")
        db.execute("SELECT count(*) FROM ledger.checkpoint_all()")
        db.execute("SELECT count(*) FROM ledger.verify_all()")

        owner.execute("INSERT INTO payments (id, account, amount) VALUES (%s, 'bob', 5)", (next_id,))
        owner.execute("CREATE TABLE late_entries (id int PRIMARY KEY, note text NOT NULL)")
        owner.execute("SELECT ledger.enable('late_entries')")
        owner.execute("INSERT INTO late_entries VALUES (1, 'after the runs')")
        owner.execute("CREATE TABLE empty_book (id int PRIMARY KEY)")
        owner.execute("SELECT ledger.enable('empty_book')")
    finally:
        owner.close()


@contextlib.contextmanager
def monitored_cluster(*conf: str, provoke: bool):
    with own_cluster(*conf) as cluster:
        with cluster.connect("postgres", autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{DBNAME}" TEMPLATE template0')
        db = Database(cluster, DBNAME)
        try:
            db.execute("CREATE EXTENSION ledger")
            build_ledgers(db, provoke=provoke)
            role = make_monitoring_role(db)
            with running_exporter(cluster, DBNAME, role) as exporter:
                yield Monitored(cluster, db, exporter, role)
        finally:
            db.close_all()


@pytest.fixture(scope="module")
def preloaded():
    with monitored_cluster("shared_preload_libraries = 'ledger'", provoke=True) as m:
        yield m


@pytest.fixture(scope="module")
def plain():
    with monitored_cluster(provoke=False) as m:
        yield m


def ledger_series(scrape, name: str) -> dict[str, float]:
    """{ledger: value} of a per-ledger metric of this suite's one database."""
    series = scrape.series(name, "datname", "ledger")
    assert {datname for datname, _ in series} <= {DBNAME}, series
    return {ledger: value for (_, ledger), value in series.items()}


# ---- the preloaded cluster ---------------------------------------------------------------------


def test_the_exporter_logs_in_as_a_role_with_only_pg_monitor(preloaded):
    attributes = preloaded.db.fetchone(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls FROM pg_roles "
        "WHERE rolname = %s", (preloaded.role,))
    assert attributes == (False, False, False, False, False)
    granted = preloaded.db.fetchall(
        "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
        "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s", (preloaded.role,))
    assert granted == [("pg_monitor",)]
    preloaded.exporter.scrape()  # it connects on the first scrape
    connected = preloaded.db.fetchall(
        "SELECT DISTINCT usename, host(client_addr) FROM pg_stat_activity WHERE datname = %s "
        "AND usename = %s", (DBNAME, preloaded.role))
    assert connected == [(preloaded.role, "127.0.0.1")]


def test_scrapes_run_every_query_without_error(preloaded):
    scrape = preloaded.exporter.scrape()
    assert scrape.value("pg_up") == 1
    assert scrape.value("pg_exporter_last_scrape_error") == 0, preloaded.exporter.log()[-3000:]
    [(labels, load_error)] = scrape.samples["pg_exporter_user_queries_load_error"]
    assert labels["filename"].endswith("queries.yaml") and load_error == 0


def test_every_metric_of_the_query_file_is_served_with_its_type_and_labels(preloaded):
    scrape = preloaded.exporter.scrape()
    defined = defined_metrics()
    assert set(REQUIRED) <= set(defined), sorted(set(REQUIRED) - set(defined))
    # With the counters kept and ledgers in every state, every defined metric has series, and the
    # exporter serves no ledger_ metric the file does not define (an unlisted column would be one).
    assert scrape.names("ledger_") == set(defined)
    for name, (usage, labels) in defined.items():
        assert scrape.types[name] == usage.lower(), name
        assert scrape.series(name, *labels), name
    assert scrape.types["ledger_appends_total"] == "counter"
    assert scrape.types["ledger_refusals_total"] == "counter"
    ledgers = set(preloaded.stats())
    for name in ALWAYS:
        assert set(ledger_series(scrape, name)) == ledgers, name
    assert ledgers >= {"public.payments", "public.closed_books", "public.ticks", "ledger.records",
                       "ledger.checkpoints", "ledger.events", "ledger.verify_runs",
                       "public.late_entries", "public.empty_book"}


def test_values_are_those_of_ledger_stats_at_that_moment(preloaded):
    before = preloaded.stats()
    scrape = preloaded.exporter.scrape()
    after = preloaded.stats()
    # Nothing appended or verified in between: the values that do not move with the clock agree.
    ages_before = {ledger: row.pop("checkpoint_age_seconds") for ledger, row in before.items()}
    ages_after = {ledger: row.pop("checkpoint_age_seconds") for ledger, row in after.items()}
    assert before == after

    for metric, column in EXACT.items():
        want = {ledger: float(row[column]) for ledger, row in after.items() if row[column] is not None}
        assert ledger_series(scrape, metric) == want, metric
    # The age grows with the clock: the exporter read it between the two reads of ledger.stats.
    ages = ledger_series(scrape, "ledger_checkpoint_age_seconds")
    assert set(ages) == {ledger for ledger, age in ages_after.items() if age is not None}
    for ledger, age in ages.items():
        assert ages_before[ledger] <= age <= ages_after[ledger], (ledger, ages_before[ledger], age)
    assert scrape.series("ledger_counters_available", "datname") == {(DBNAME,): 1.0}


def test_the_scenario_is_what_the_metrics_say(preloaded):
    """The numbers themselves, for the ledgers whose history this suite wrote."""
    scrape = preloaded.exporter.scrape()
    records = ledger_series(scrape, "ledger_records")
    assert records["public.payments"] == sum(PAYMENTS.values()) + 1
    assert ledger_series(scrape, "ledger_chains")["public.payments"] == 3
    assert ledger_series(scrape, "ledger_unanchored_records")["public.payments"] == 1  # bob's last
    assert ledger_series(scrape, "ledger_appends_total")["public.payments"] == sum(PAYMENTS.values()) + 1
    assert ledger_series(scrape, "ledger_retired") == {
        ledger: float(ledger == "public.closed_books") for ledger in records}
    assert ledger_series(scrape, "ledger_verify_problems")["public.payments"] == 0
    assert ledger_series(scrape, "ledger_checkpoint_signed")["public.payments"] == 0  # no key set
    assert ledger_series(scrape, "ledger_verify_runs_total")["public.payments"] >= 1


def test_refusals_are_counted_by_ledger_and_kind(preloaded):
    scrape = preloaded.exporter.scrape()
    refusals = preloaded.refusals()
    # One row per ledger and kind, zero counts included.
    ledgers = set(preloaded.stats())
    assert set(refusals) == {(ledger, kind) for ledger in ledgers for kind in REFUSAL_KINDS}
    served = scrape.series("ledger_refusals_total", "datname", "ledger", "kind")
    assert served == {(DBNAME, ledger, kind): float(n) for (ledger, kind), n in refusals.items()}
    assert {key: n for key, n in refusals.items() if n} == PROVOKED
    stats = preloaded.stats()
    assert stats["public.payments"]["refusals"] == sum(
        n for (ledger, _), n in PROVOKED.items() if ledger == "public.payments")


def test_unknown_values_are_left_out_never_numbers(preloaded):
    scrape = preloaded.exporter.scrape()
    for name in scrape.names("ledger_"):
        for labels, value in scrape.samples[name]:
            assert not is_nan(value), (name, labels)
    stats = preloaded.stats()
    never_checkpointed = {ledger for ledger, row in stats.items() if row["last_checkpoint"] is None}
    never_verified = {ledger for ledger, row in stats.items() if row["last_verify"] is None}
    no_append = {ledger for ledger, row in stats.items() if row["last_append"] is None}
    assert "public.late_entries" in never_checkpointed & never_verified
    assert "public.empty_book" in no_append
    for name in ["ledger_checkpoint_age_seconds", "ledger_checkpoint_last_timestamp_seconds",
                 "ledger_checkpoint_signed"]:
        assert not set(ledger_series(scrape, name)) & never_checkpointed, name
    for name in ["ledger_verify_problems", "ledger_verify_last_run_timestamp_seconds",
                 "ledger_verify_last_duration_seconds"]:
        assert not set(ledger_series(scrape, name)) & never_verified, name
    assert not set(ledger_series(scrape, "ledger_last_append_timestamp_seconds")) & no_append
    # Known values of the same ledgers are there.
    assert {"public.late_entries", "public.empty_book"} <= set(ledger_series(scrape, "ledger_records"))
    assert ledger_series(scrape, "ledger_appends_total")["public.empty_book"] == 0


def test_each_scrape_reads_the_database_anew(preloaded):
    first = preloaded.exporter.scrape()
    preloaded.db.execute("INSERT INTO ticks VALUES ((SELECT max(id) + 1 FROM ticks))")
    preloaded.db.execute("SELECT count(*) FROM ledger.verify('ticks')")
    second = preloaded.exporter.scrape()
    for metric, grown in [("ledger_records", 1), ("ledger_appends_total", 1),
                          ("ledger_unanchored_records", 1), ("ledger_verify_runs_total", 1)]:
        assert (ledger_series(second, metric)["public.ticks"]
                - ledger_series(first, metric)["public.ticks"]) == grown, metric
    assert (ledger_series(second, "ledger_last_append_timestamp_seconds")["public.ticks"]
            >= ledger_series(first, "ledger_last_append_timestamp_seconds")["public.ticks"])


def test_the_dashboard_uses_only_series_the_exporter_serves(preloaded):
    used = dashboard_metric_names(json.loads(DASHBOARD_JSON.read_text(encoding="utf-8")))
    served = preloaded.exporter.scrape().names()
    assert used and used <= served, sorted(used - served)


# ---- without shared_preload_libraries ----------------------------------------------------------


def test_without_preloading_the_counters_are_unavailable_and_left_out(plain):
    assert plain.db.scalar("SELECT ledger.counters_available()") is False
    assert plain.db.fetchall("SELECT * FROM ledger.refusals") == []
    stats = plain.stats()
    assert all(row[c] is None for row in stats.values() for c in ("appends", "verify_runs", "refusals",
                                                                  "last_append"))
    scrape = plain.exporter.scrape()
    assert scrape.value("pg_exporter_last_scrape_error") == 0, plain.exporter.log()[-3000:]
    assert scrape.series("ledger_counters_available", "datname") == {(DBNAME,): 0.0}
    for name in [*COUNTERS, "ledger_last_append_timestamp_seconds"]:
        assert name not in scrape.samples, name
    # Everything that does not come from the counters is there as with them.
    for name in ALWAYS:
        assert set(ledger_series(scrape, name)) == set(stats), name
    assert ledger_series(scrape, "ledger_records") == {
        ledger: float(row["records"]) for ledger, row in stats.items()}
    assert ledger_series(scrape, "ledger_verify_problems") == {
        ledger: float(row["last_verify_problems"]) for ledger, row in stats.items()
        if row["last_verify"] is not None}
    assert "public.payments" in ledger_series(scrape, "ledger_checkpoint_age_seconds")
    for name in scrape.names("ledger_"):
        assert not any(is_nan(v) for _, v in scrape.samples[name]), name
