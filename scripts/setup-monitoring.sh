#!/usr/bin/env bash
# Installs what the monitoring files (monitoring/) and their tests (tests/monitoring/) need,
# idempotently: fast when all is present. Debian's Prometheus exporter for PostgreSQL and pg_cron for
# PostgreSQL 15, and the Python packages pinned in monitoring/requirements.txt.
#
# The exporter's package would start a system service on :9187 that scrapes the local "main" cluster;
# the tests start exporters of their own on 127.0.0.1, so the service is kept from starting during the
# install (policy-rc.d) and is stopped and disabled if it runs anyway.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
PG_MAJOR=${PG_MAJOR:-15}
EXPORTER_PACKAGE=prometheus-postgres-exporter
EXPORTER_SERVICE=prometheus-postgres-exporter

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

need_apt=()
installed "$EXPORTER_PACKAGE" || need_apt+=("$EXPORTER_PACKAGE")
installed "postgresql-$PG_MAJOR-cron" || need_apt+=("postgresql-$PG_MAJOR-cron")
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
if ((${#need_apt[@]})); then
  echo "setup-monitoring: installing ${need_apt[*]}"
  # invoke-rc.d asks /usr/sbin/policy-rc.d whether a package may start its service; 101 means no.
  # Containers often have one already (then it stays as it is); otherwise one is put there for the
  # install and removed after.
  policy=/usr/sbin/policy-rc.d
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\n# setup-monitoring.sh: no service starts during its install\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# Whatever happened at install time (or on an earlier run without the policy), the packaged service
# must neither run nor start at boot.
if [[ -d /run/systemd/system ]]; then
  if systemctl is-enabled --quiet "$EXPORTER_SERVICE" 2>/dev/null \
     || systemctl is-active --quiet "$EXPORTER_SERVICE" 2>/dev/null; then
    echo "setup-monitoring: stopping and disabling the $EXPORTER_SERVICE service"
    systemctl disable --now --quiet "$EXPORTER_SERVICE"
  fi
elif [[ -x /etc/init.d/$EXPORTER_SERVICE ]]; then
  if /etc/init.d/"$EXPORTER_SERVICE" status >/dev/null 2>&1; then
    echo "setup-monitoring: stopping the $EXPORTER_SERVICE service"
    /etc/init.d/"$EXPORTER_SERVICE" stop >/dev/null || true
  fi
  # Takes it out of the runlevels, so a boot does not start it either.
  update-rc.d "$EXPORTER_SERVICE" disable >/dev/null 2>&1 || true
fi

# pip checks the pins against what is installed and downloads nothing when they match.
PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
  -r "$here/monitoring/requirements.txt"
