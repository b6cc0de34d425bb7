#!/usr/bin/env bash
# Builds a past release from the project's own history and prints the directory of its install tree
# (what `cargo pgrx package` stages: usr/lib/postgresql/15/lib/ledger.so, the control file and the
# install script). Built once per commit from a git worktree, then kept in a cache, so reruns are quick.
#   scripts/release-build.sh VERSION COMMIT
set -euo pipefail
cd "$(dirname "$0")/.."
version=$1 commit=$2
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
major=$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
cache=${LEDGER_RELEASE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ledger/releases}
out=$cache/$version-$(git rev-parse --short=12 "$commit")-pg$major
if [[ -f $out/.complete ]]; then
  echo "$out"
  exit 0
fi
git cat-file -e "$commit^{commit}" 2>/dev/null || { echo "release-build: commit $commit is not in this clone's history" >&2; exit 1; }
mkdir -p "$cache"
tree=$(mktemp -d "$cache/worktree-XXXXXX")
log=$(mktemp)
cleanup() { git worktree remove --force "$tree" >/dev/null 2>&1 || rm -rf "$tree"; git worktree prune; rm -f "$log"; }
trap cleanup EXIT
git worktree add --detach "$tree" "$commit" >/dev/null 2>&1
built=$(grep -m1 '^version' "$tree/Cargo.toml" | cut -d'"' -f2)
[[ $built == "$version" ]] || { echo "release-build: $commit is version $built, not $version" >&2; exit 1; }
# A debug build: an old release is only installed to be upgraded from, and this is minutes faster.
echo "release-build: building ledger $version from $commit (once; cached in $out)" >&2
rm -rf "$out.tmp"
if ! (cd "$tree" && CARGO_TARGET_DIR="$cache/target" cargo pgrx package --debug --pg-config "$PG_CONFIG" --out-dir "$out.tmp") >"$log" 2>&1; then
  cat "$log" >&2
  exit 1
fi
touch "$out.tmp/.complete"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$out"
