#!/usr/bin/env bash
# Installs what the client examples (examples/) need, idempotently: fast when all is present.
# Debian packages (PostgreSQL's JDBC driver, a JDK, Node.js and npm when missing), the examples'
# Python packages (examples/requirements.txt) and the Node example's packages (its package-lock.json).
# The Rust example needs only cargo, which scripts/setup.sh already requires; its test builds it.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)

need_apt=()
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
installed libpostgresql-jdbc-java || need_apt+=(libpostgresql-jdbc-java)
command -v javac >/dev/null || need_apt+=(default-jdk-headless)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
if ((${#need_apt[@]})); then
  echo "setup-examples: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# pip checks the pins against what is installed and downloads nothing when they match.
PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
  -r "$here/examples/requirements.txt"

# npm ci deletes and reinstalls node_modules every time; skip it while node_modules was installed from
# this very lock file (its checksum is noted there after each install).
node_example=$here/examples/node-pg
lock_sum=$(sha256sum "$node_example/package-lock.json" | cut -d' ' -f1)
if [[ $(cat "$node_example/node_modules/.installed-from-lock" 2>/dev/null) != "$lock_sum" ]]; then
  echo "setup-examples: npm ci in examples/node-pg"
  (cd "$node_example" && npm ci --silent --no-audit --no-fund)
  echo "$lock_sum" >"$node_example/node_modules/.installed-from-lock"
fi
