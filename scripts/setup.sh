#!/usr/bin/env bash
# Installs what building and testing ledger needs, idempotently: fast when all is present.
# Debian packages (PostgreSQL 15 server + headers, clang for bindgen, sudo for pgrx's --runas, locales,
# pg_partman for the partitioned-ledger tests, pgAudit for the benchmark's peer),
# cargo-pgrx at the exact version the crate pins, and pgrx's config pointed at the system pg_config.
set -euo pipefail

PGRX_VERSION=0.18.0
PG_MAJOR=${PG_MAJOR:-15}
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/$PG_MAJOR/bin/pg_config}

command -v cargo >/dev/null || {
  echo "setup: cargo not found; install the Rust toolchain (rustup, Rust 1.85 or later) first" >&2
  exit 1
}

need_apt=()
for pkg in "postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR" "postgresql-$PG_MAJOR-partman" "postgresql-$PG_MAJOR-pgaudit" libclang-dev clang sudo locales; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  echo "setup: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# A locale whose decimal separator is a comma, so the tests can show lc_numeric changes no hash.
if ! locale -a 2>/dev/null | grep -qix 'de_DE.utf-\?8'; then
  echo "setup: generating the de_DE.UTF-8 locale"
  localedef -i de_DE -f UTF-8 de_DE.UTF-8
fi

if ! cargo pgrx --version 2>/dev/null | grep -q " $PGRX_VERSION\$"; then
  echo "setup: installing cargo-pgrx $PGRX_VERSION (takes several minutes)"
  cargo install cargo-pgrx --version "$PGRX_VERSION" --locked --quiet
fi

pgrx_home=${PGRX_HOME:-$HOME/.pgrx}
if ! grep -qs "^pg$PG_MAJOR = \"$PG_CONFIG\"" "$pgrx_home/config.toml"; then
  echo "setup: pointing pgrx at $PG_CONFIG"
  cargo pgrx init "--pg$PG_MAJOR" "$PG_CONFIG"
fi

# Test runners and drivers (the offline verifier itself needs only the standard library). Debian's
# own Python has no pip until python3-pip is installed, and refuses system-wide installs (PEP 668)
# unless told otherwise; a Python of one's own (pyenv, a venv) takes them as they are.
here=$(cd "$(dirname "$0")/.." && pwd)
if ! python3 -m pip --version >/dev/null 2>&1; then
  echo "setup: installing python3-pip"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
fi
PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
  -r "$here/requirements-test.txt"
