#!/usr/bin/env bash
# Builds the extension (release) and installs it into the local PostgreSQL 15.
# Each file is copied next to its destination and renamed over it: servers that already loaded
# ledger.so keep their mapping of the old file instead of crashing on a file rewritten under them.
set -euo pipefail
cd "$(dirname "$0")/.."
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo pgrx package --pg-config "$PG_CONFIG" >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
major=$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
staged=target/release/ledger-pg$major
[[ -d $staged ]] || { echo "install: no package in $staged" >&2; exit 1; }
(cd "$staged" && find . -type f) | while read -r file; do
  dest=${file#.}
  mkdir -p "$(dirname "$dest")"
  cp "$staged/$file" "$dest.tmp.$$"
  chmod 644 "$dest.tmp.$$"
  mv -f "$dest.tmp.$$" "$dest"
done
