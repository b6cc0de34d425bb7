#!/usr/bin/env bash
# Builds the extension (release) and installs it into the local PostgreSQL 15.
# Each file is copied next to its destination and renamed over it: servers that already loaded
# ledger.so keep their mapping of the old file instead of crashing on a file rewritten under them.
set -euo pipefail
cd "$(dirname "$0")/.."
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
major=$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
staged=target/release/ledger-pg$major
# pgrx adds to its staging directory and never empties it: start it afresh, so no script of an
# earlier build is installed.
rm -rf "$staged"
cargo pgrx package --pg-config "$PG_CONFIG" >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
[[ -d $staged ]] || { echo "install: no package in $staged" >&2; exit 1; }
# pgrx stages this version's install script and the upgrade scripts; older releases' install
# scripts are kept in sql/ as they were released, and installed too (as the Debian package does).
extension_dir=$staged$("$PG_CONFIG" --sharedir)/extension
for script in sql/ledger--*.sql; do
  [[ -e $extension_dir/$(basename "$script") ]] || cp "$script" "$extension_dir/"
done
(cd "$staged" && find . -type f) | while read -r file; do
  dest=${file#.}
  mkdir -p "$(dirname "$dest")"
  cp "$staged/$file" "$dest.tmp.$$"
  chmod 644 "$dest.tmp.$$"
  mv -f "$dest.tmp.$$" "$dest"
done
