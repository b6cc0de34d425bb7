#!/usr/bin/env bash
# Runs the #[pg_test] tests: cargo pgrx test needs a not-yet-existing data directory and a non-root user.
set -euo pipefail
cd "$(dirname "$0")/.."
pgdata=$(mktemp -d -u /tmp/ledger-pgtest-XXXXXX)
trap 'rm -rf "$pgdata"' EXIT
runas=()
[[ $(id -u) == 0 ]] && runas=(--runas postgres)
cargo pgrx test pg15 "${runas[@]}" --pgdata "$pgdata"
