#!/usr/bin/env bash
# Runs the pg_regress files in tests/pg_regress against a running cluster with ledger installed.
#   scripts/regress.sh HOST PORT
set -euo pipefail
cd "$(dirname "$0")/.."
host=$1 port=$2
pgxs=$(/usr/lib/postgresql/15/bin/pg_config --pgxs)
out=${REGRESS_OUT:-$(mktemp -d)}
mkdir -p "$out" && chmod 777 "$out"
tests=$(cat tests/pg_regress/schedule)
if ! "$(dirname "$pgxs")/../test/regress/pg_regress" --host="$host" --port="$port" --user=postgres \
     --inputdir=tests/pg_regress --outputdir="$out" --dbname=ledger_regression $tests; then
  cat "$out/regression.diffs" 2>/dev/null || true
  exit 1
fi
