#!/usr/bin/env bash
# Runs every test tier against a real PostgreSQL: pure Rust, in-database (#[pg_test]), the pg_regress
# contract, the offline verifier, the multi-connection integration suite, and the adversarial suite
# (guards, superuser tampering, crashes, replicas, stress, odd and fuzzed input), the upgrade from every
# release, monitoring (a real postgres_exporter and pg_cron) and the client examples.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
bash scripts/setup-examples.sh || exit 1
bash scripts/setup-monitoring.sh || exit 1

passed=0 failed=0
tier() {
  local name=$1; shift
  echo "=== $name"
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "=== $name FAILED"; fi
}

regress() {
  local dir port=${LEDGER_REGRESS_PORT:-55431}
  dir=$(mktemp -d /tmp/ledger-regress-XXXXXX)
  scripts/cluster.sh start "$dir" "$port" || return 1
  REGRESS_OUT="$dir/out" scripts/regress.sh "$dir/socket" "$port"
  local status=$?
  scripts/cluster.sh stop "$dir"
  [[ $status == 0 ]] && rm -rf "$dir"
  return $status
}

tier "pure logic (cargo test)" cargo test -p ledger-core --quiet
# cargo pgrx test installs its own debug build into PostgreSQL, so the release install comes after it.
tier "in-database unit tests (cargo pgrx test)" scripts/pg-test.sh
tier "install into PostgreSQL 15" scripts/install.sh
tier "Debian package on a fresh Debian 12 (dpkg -i in a chroot)" tests/package/test_deb.sh
tier "SQL contract (pg_regress)" regress
tier "offline verifier (pytest)" python3 -m pytest -q tests/python
tier "multi-connection integration (pytest)" python3 -m pytest -q tests/integration
tier "multi-connection integration on a server preloading the library: shared chain heads (pytest)" \
  env LEDGER_PYTEST_PRELOAD=1 python3 -m pytest -q tests/integration
tier "adversarial: attacks on real servers (pytest)" python3 -m pytest -q -s tests/adversarial
tier "monitoring: postgres_exporter scrape, Grafana dashboard, pg_cron schedule (pytest)" \
  python3 -m pytest -q tests/monitoring
tier "upgrade from every release: ALTER EXTENSION ledger UPDATE, fresh and upgraded catalogs alike (pytest)" \
  python3 -m pytest -q tests/upgrade
tier "client examples: psycopg, SQLAlchemy + Alembic, node-postgres, tokio-postgres, JDBC (pytest)" \
  python3 -m pytest -q tests/examples

echo "tiers: $passed passed, $failed failed"
[[ $failed == 0 ]]
