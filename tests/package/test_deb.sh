#!/usr/bin/env bash
# Installs the Debian package on a server that never saw the build tree: builds the .deb with
# scripts/package-deb.sh, unpacks a minimal Debian 12 root filesystem with PostgreSQL 15 (made once by
# debootstrap and cached as a tarball), copies in only the .deb, and inside a chroot installs it with
# dpkg, starts a cluster as the chroot's postgres user, and uses the extension and the offline verifier
# as a user of the package would.
#   tests/package/test_deb.sh [--prepare-rootfs]
# Environment: LEDGER_DEBIAN_MIRROR (default http://deb.debian.org/debian, what apt here uses),
# LEDGER_DEB_TEST_PORT (a port in 55480-55489; default: the first one free), XDG_CACHE_HOME,
# LEDGER_DEB (test this .deb, say one a CI run built, instead of building one).
# Needs root (debootstrap, chroot, mount). Prints `package: 1 passed, 0 failed` or `0 passed, 1 failed`.
set -euo pipefail
cd "$(dirname "$0")/../.."

PG_MAJOR=15
SUITE=bookworm
MIRROR=${LEDGER_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# What the image holds beyond minbase: the server, and python3 for the packaged verifier, which the
# package depends on. Nothing else: dpkg -i must find every dependency already there.
ROOTFS_PACKAGES=("postgresql-$PG_MAJOR" python3)
CACHE_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/ledger
SYSTEM_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { echo "package: $*"; }
die() { echo "package: FAILED: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------------
# The root filesystem. Everything that decides its content is in build_rootfs and the variables it
# reads, so their text is the cache key: editing the recipe makes a new tarball.

build_rootfs() {
  local dir=$1
  # mktemp -d makes 0700 directories; as the root of a system, others (postgres, _apt) must enter it.
  chmod 755 "$dir"
  mkdir -p "$CACHE_DIR/debootstrap-debs"
  debootstrap --variant=minbase --cache-dir="$CACHE_DIR/debootstrap-debs" "$SUITE" "$dir" "$MIRROR"
  # Installing the server must neither start it (no init in a chroot) nor create the stock "main"
  # cluster the test does not use; the image leaves out docs, manuals and translations, so that it
  # unpacks faster.
  rm -rf "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* "$dir"/usr/share/locale/*
  printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
  chmod 755 "$dir/usr/sbin/policy-rc.d"
  mkdir -p "$dir/etc/postgresql-common/createcluster.d"
  echo "create_main_cluster = false" >"$dir/etc/postgresql-common/createcluster.d/no-main-cluster.conf"
  printf '%s\n' 'path-exclude=/usr/share/doc/*' 'path-exclude=/usr/share/man/*' \
    'path-exclude=/usr/share/info/*' 'path-exclude=/usr/share/locale/*' >"$dir/etc/dpkg/dpkg.cfg.d/slim-image"
  echo force-unsafe-io >"$dir/etc/dpkg/dpkg.cfg.d/unsafe-io"
  mount_chroot_fs "$dir"
  chroot "$dir" /usr/bin/env -i PATH="$SYSTEM_PATH" LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
    sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends ${ROOTFS_PACKAGES[*]} >/dev/null && apt-get clean"
  umount_chroot_fs "$dir"
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/log/*.log "$dir"/var/log/apt/*
  # The package under test installs its documentation in full, as on a real server.
  rm -f "$dir/etc/dpkg/dpkg.cfg.d/slim-image"
}

rootfs_tarball() {
  local key
  key=$( { declare -f build_rootfs; echo "$SUITE ${ROOTFS_PACKAGES[*]}"; } | sha256sum | cut -c1-12)
  echo "$CACHE_DIR/debian-$SUITE-pg$PG_MAJOR-$key.tar.zst"
}

# Makes the cached tarball unless it is there; under a lock, so concurrent runs build it once.
ensure_rootfs_tarball() {
  local tarball=$1 stage
  mkdir -p "$CACHE_DIR"
  exec {lock}>"$CACHE_DIR/rootfs.lock"
  flock "$lock"
  if [[ -f $tarball ]]; then
    log "root filesystem from cache: $tarball"
  else
    log "building the root filesystem (debootstrap $SUITE, ${ROOTFS_PACKAGES[*]}) for $tarball"
    stage=$(mktemp -d "${TMPDIR:-/tmp}/ledger-rootfs-XXXXXX")
    building_rootfs=$stage
    # In the background and waited for, because a function called as `f || ...` runs with errexit
    # off: a failed step inside it would go unnoticed.
    build_rootfs "$stage" >"$CACHE_DIR/rootfs-build.log" 2>&1 &
    wait $! || {
      tail -n 40 "$CACHE_DIR/rootfs-build.log" >&2
      die "building the root filesystem failed (log: $CACHE_DIR/rootfs-build.log)"
    }
    tar --numeric-owner -C "$stage" -I 'zstd -q -T0 -3' -cf "$tarball.tmp.$$" .
    mv -f "$tarball.tmp.$$" "$tarball"
    remove_tree "$stage"
    building_rootfs=
    # Tarballs of earlier recipes are dead weight now.
    find "$CACHE_DIR" -maxdepth 1 -name "debian-$SUITE-pg$PG_MAJOR-*.tar.zst" ! -path "$tarball" -delete
  fi
  flock -u "$lock"
}

# ---------------------------------------------------------------------------------------------------
# Mounts. /dev is a tmpfs with the few nodes PostgreSQL, dpkg and apt use, not a bind mount of the
# host's: removing the chroot can then never reach the host's devices.

mount_chroot_fs() {
  local dir=$1
  mount -t proc proc "$dir/proc"
  mount -t tmpfs -o mode=755,size=16m tmpfs "$dir/dev"
  mknod -m 666 "$dir/dev/null" c 1 3
  mknod -m 666 "$dir/dev/zero" c 1 5
  mknod -m 666 "$dir/dev/full" c 1 7
  mknod -m 666 "$dir/dev/random" c 1 8
  mknod -m 666 "$dir/dev/urandom" c 1 9
  mknod -m 666 "$dir/dev/tty" c 5 0
  ln -s /proc/self/fd "$dir/dev/fd"
  ln -s /proc/self/fd/0 "$dir/dev/stdin"
  ln -s /proc/self/fd/1 "$dir/dev/stdout"
  ln -s /proc/self/fd/2 "$dir/dev/stderr"
  # PostgreSQL's dynamic shared memory (posix) lives in /dev/shm.
  mkdir -m 1777 "$dir/dev/shm"
  mount -t tmpfs -o mode=1777,size=256m tmpfs "$dir/dev/shm"
}

# Ends what still runs inside the chroot (only this test starts processes there), then unmounts.
umount_chroot_fs() {
  local dir pid root mountpoint
  dir=$(realpath "$1")
  for pid in /proc/[0-9]*; do
    root=$(readlink "$pid/root" 2>/dev/null) || continue
    if [[ $root == "$dir" ]]; then kill -KILL "${pid#/proc/}" 2>/dev/null || true; fi
  done
  # Innermost first: the reverse of /proc/mounts' order.
  while read -r mountpoint; do
    umount "$mountpoint" || umount -l "$mountpoint"
  done < <(awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/mounts | tac)
}

# rm -rf of a chroot, refusing while anything is still mounted inside it.
remove_tree() {
  local dir
  [[ -d $1 ]] || return 0
  dir=$(realpath "$1")
  umount_chroot_fs "$dir"
  if awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { found = 1 } END { exit !found }' /proc/mounts; then
    echo "package: not removing $dir: still mounted" >&2
    return 1
  fi
  rm -rf --one-file-system "$dir"
}

# ---------------------------------------------------------------------------------------------------

need_host_tools() {
  local missing=()
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v zstd >/dev/null || missing+=(zstd)
  command -v flock >/dev/null || missing+=(util-linux)
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    }
  fi
}

free_port() {
  local port
  if [[ -n ${LEDGER_DEB_TEST_PORT:-} ]]; then echo "$LEDGER_DEB_TEST_PORT"; return; fi
  for port in {55480..55489}; do
    # The chroot shares the host's network: a port something listens on is taken.
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return; fi
  done
  die "no free port in 55480-55489"
}

# On any exit of run_test: stop the cluster, unmount and remove the chroot (or a half-built root
# filesystem), stop a build still running.
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup_run() {
  local status=$?
  if [[ -n $root ]]; then stop_cluster; remove_tree "$root" || true; fi
  if [[ -n $building_rootfs ]]; then remove_tree "$building_rootfs" || true; fi
  if [[ -n $build_pid ]]; then kill -- "-$build_pid" 2>/dev/null || true; fi
  if [[ -n $build_log ]]; then rm -f "$build_log"; fi
  exit "$status"
}

run_test() {
  local started=$SECONDS tarball deb
  # Globals, for the EXIT trap: what to stop and remove if a step fails.
  building_rootfs='' root='' build_log='' build_pid=''
  trap cleanup_run EXIT
  # A signal ends the run through the EXIT trap too, so an interrupted run leaves nothing mounted.
  trap 'exit 130' INT TERM HUP
  [[ $(id -u) == 0 ]] || die "needs root (debootstrap, chroot, mount)"
  need_host_tools

  # The build and the root filesystem do not depend on each other: the first run does both at once.
  # The build runs in a session of its own, so that a failure elsewhere can stop it with its children.
  if [[ -n ${LEDGER_DEB:-} ]]; then
    deb=$(realpath "$LEDGER_DEB")
  else
    build_log=$(mktemp)
    PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config setsid scripts/package-deb.sh >"$build_log" 2>&1 &
    build_pid=$!
  fi
  tarball=$(rootfs_tarball)
  ensure_rootfs_tarball "$tarball"
  log "root filesystem ready after $((SECONDS - started)) s"
  if [[ -n $build_pid ]]; then
    wait "$build_pid" || { cat "$build_log" >&2; build_pid=; die "scripts/package-deb.sh failed"; }
    build_pid=
    deb=$(tail -n 1 "$build_log")
    grep '^package-deb: warning' "$build_log" >&2 || true
  fi
  [[ $deb == *.deb && -f $deb ]] || { cat "${build_log:-/dev/null}" >&2; die "no .deb to test (${deb:-none})"; }
  log "testing $deb after $((SECONDS - started)) s"
  # Lintian takes seconds where it is installed; the test does not install it (a hundred Perl
  # packages) but, where it is, holds the package to no error and no warning.
  if command -v lintian >/dev/null; then
    local lintian_out
    lintian_out=$(lintian --fail-on error,warning "$deb" 2>&1) ||
      die "lintian found errors or warnings in $deb:"$'\n'"$lintian_out"
    log "lintian: no error, no warning"
  else
    log "lintian is not installed: not run"
  fi

  root=$(mktemp -d "${TMPDIR:-/tmp}/ledger-deb-chroot-XXXXXX")
  tar --numeric-owner -C "$root" -I zstd -xf "$tarball"
  mount_chroot_fs "$root"
  # Only the package goes in: the chroot never sees the repository or the build tree.
  cp "$deb" "$root/tmp/"
  check_in_chroot "/tmp/$(basename "$deb")"
  stop_cluster
  remove_tree "$root"
  root=
  log "all checks passed in $((SECONDS - started)) s"
}

# As root, or as the chroot's postgres user, with a clean environment: nothing of the host's.
in_chroot() { chroot "$root" /usr/bin/env -i PATH="$SYSTEM_PATH" LANG=C.UTF-8 HOME=/root DEBIAN_FRONTEND=noninteractive "$@"; }
as_postgres() { in_chroot runuser -u postgres -- "$@"; }

PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin
PG_DIR=/var/lib/postgresql/ledger-package-test

stop_cluster() {
  [[ -n ${root:-} && -f $root$PG_DIR/data/postmaster.pid ]] || return 0
  as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
    as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
}

check_in_chroot() {
  local deb=$1 pkg expected listed file ext_dir version port old
  pkg=$(in_chroot dpkg-deb --field "$deb" Package)
  ext_dir=/usr/share/postgresql/$PG_MAJOR/extension

  log "dpkg -i $(basename "$deb")"
  in_chroot dpkg -i "$deb" >"$root/tmp/dpkg-i.log" 2>&1 || { cat "$root/tmp/dpkg-i.log" >&2; die "dpkg -i failed"; }
  # shellcheck disable=SC2016  # ${Status} is dpkg-query's, not the shell's
  [[ $(in_chroot dpkg-query -W -f='${Status}' "$pkg") == "install ok installed" ]] || die "$pkg is not installed"

  listed=$(in_chroot dpkg -L "$pkg")
  expected=(
    "/usr/lib/postgresql/$PG_MAJOR/lib/ledger.so"
    "$ext_dir/ledger.control"
    /usr/bin/ledger-verify-export
    /usr/share/man/man1/ledger-verify-export.1.gz
    "/usr/share/doc/$pkg/copyright"
    "/usr/share/doc/$pkg/README.md"
    "/usr/share/doc/$pkg/FORMAT.md"
    "/usr/share/doc/$pkg/THREAT_MODEL.md"
  )
  version=$(sed -nE "s/^default_version *= *'([^']+)'.*/\1/p" "$root$ext_dir/ledger.control")
  [[ -n $version ]] || die "no default_version in the packaged ledger.control"
  expected+=("$ext_dir/ledger--$version.sql")
  for file in "${expected[@]}"; do
    grep -qxF "$file" <<<"$listed" || die "dpkg -L $pkg does not list $file"
    [[ -f $root$file ]] || die "$file is listed but not installed"
  done
  # Every SQL script in the package is listed too (old releases' install scripts, upgrades).
  while read -r file; do
    grep -qxF "$file" <<<"$listed" || die "dpkg -L $pkg does not list $file"
  done < <(in_chroot dpkg-deb --fsys-tarfile "$deb" | tar -t | sed -n "s|^\.\(.*/ledger--.*\.sql\)$|\1|p")
  if in_chroot ldd "/usr/lib/postgresql/$PG_MAJOR/lib/ledger.so" | grep 'not found'; then
    die "ledger.so needs a library the server does not have"
  fi
  log "dpkg -L lists the ${#expected[@]} expected files; extension version $version"

  port=$(free_port)
  as_postgres mkdir -p "$PG_DIR/socket"
  as_postgres "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
    >/dev/null || die "initdb failed"
  printf '%s\n' "listen_addresses = ''" "port = $port" "unix_socket_directories = '$PG_DIR/socket'" \
    >>"$root$PG_DIR/data/postgresql.conf"
  as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 start >/dev/null || {
    cat "$root$PG_DIR/server.log" >&2
    die "the cluster did not start"
  }
  log "cluster running as postgres in the chroot on port $port"
  psql_in() { local db=$1; shift; as_postgres psql -X -At -v ON_ERROR_STOP=1 -h "$PG_DIR/socket" -p "$port" -U postgres -d "$db" "$@"; }

  psql_in postgres -q >/dev/null <<'SQL' || die "creating and filling a ledger failed"
CREATE EXTENSION ledger;
CREATE TABLE payments (id bigint PRIMARY KEY, account text NOT NULL, amount numeric NOT NULL);
SELECT ledger.enable('payments', chain_by => 'account');
INSERT INTO payments (id, account, amount) VALUES (1, 'alice', 10), (2, 'bob', 5), (3, 'alice', 7.50);
SQL
  [[ $(psql_in postgres -c "SELECT extversion FROM pg_extension WHERE extname = 'ledger'") == "$version" ]] ||
    die "CREATE EXTENSION did not install version $version"
  [[ $(psql_in postgres -c "SELECT string_agg(account || ':' || seq, ',' ORDER BY id) FROM payments") == \
    "alice:1,bob:1,alice:2" ]] || die "the rows were not chained by account"
  [[ $(psql_in postgres -c "SELECT count(*) FROM ledger.verify('payments')") == 0 ]] ||
    die "ledger.verify reported problems on an intact ledger"

  local update_out
  update_out=$(psql_in postgres 2>&1 <<'SQL'
\set VERBOSITY sqlstate
UPDATE payments SET amount = 0 WHERE id = 1;
SQL
  ) && die "an UPDATE of a ledger was allowed"
  grep -qx 'ERROR:  23001' <<<"$update_out" || die "the UPDATE failed otherwise than with 23001: $update_out"
  [[ $(psql_in postgres -c "SELECT amount FROM payments WHERE id = 1") == 10 ]] || die "the UPDATE changed a row"
  log "CREATE EXTENSION, enable, INSERT, verify and the refused UPDATE (23001) as expected"

  psql_in postgres -c "SELECT * FROM ledger.export('payments')" >"$root$PG_DIR/payments.jsonl" || die "export failed"
  in_chroot ledger-verify-export "$PG_DIR/payments.jsonl" >/dev/null 2>&1 ||
    die "ledger-verify-export rejected an intact export"
  # And it does verify: an amount changed in the export is caught (exit 1: problems found).
  grep -q '"7.50"' "$root$PG_DIR/payments.jsonl" || die "the export has no amount 7.50"
  sed 's/"7\.50"/"7.51"/' "$root$PG_DIR/payments.jsonl" >"$root$PG_DIR/tampered.jsonl"
  local verifier_status=0
  in_chroot ledger-verify-export "$PG_DIR/tampered.jsonl" >/dev/null 2>&1 || verifier_status=$?
  [[ $verifier_status == 1 ]] || die "ledger-verify-export exited $verifier_status on a tampered export, not 1"
  log "ledger-verify-export accepts the export and catches a changed amount"

  # Install scripts of older releases in the package: a ledger made under each keeps verifying and
  # appending once the new module is installed (as between an upgrade of the package and ALTER
  # EXTENSION), and after ALTER EXTENSION ledger UPDATE reaches this version.
  local upgrades=0 db
  for file in "$root$ext_dir"/ledger--*.sql; do
    old=$(basename "$file" .sql)
    old=${old#ledger--}
    [[ $old == *--* || $old == "$version" ]] && continue
    db=upgrade_from_${old//[^0-9a-zA-Z]/_}
    psql_in postgres -q -c "CREATE DATABASE $db" || die "CREATE DATABASE $db failed"
    psql_in "$db" -q >/dev/null <<SQL || die "a ledger under version $old failed"
CREATE EXTENSION ledger VERSION '$old';
CREATE TABLE payments (id bigint PRIMARY KEY, account text NOT NULL, amount numeric NOT NULL);
SELECT ledger.enable('payments', chain_by => 'account');
INSERT INTO payments (id, account, amount) VALUES (1, 'alice', 10), (2, 'bob', 5);
SQL
    [[ $(psql_in "$db" -c "SELECT count(*) FROM ledger.verify('payments')") == 0 ]] ||
      die "ledger.verify under version $old reported problems"
    psql_in "$db" -q -c "ALTER EXTENSION ledger UPDATE" || die "ALTER EXTENSION ledger UPDATE from $old failed"
    [[ $(psql_in "$db" -c "SELECT extversion FROM pg_extension WHERE extname = 'ledger'") == "$version" ]] ||
      die "ALTER EXTENSION ledger UPDATE from $old did not reach $version"
    psql_in "$db" -q -c "INSERT INTO payments (id, account, amount) VALUES (3, 'alice', 7.50)" ||
      die "appending after the update from $old failed"
    [[ $(psql_in "$db" -c "SELECT string_agg(account || ':' || seq, ',' ORDER BY id) FROM payments") == \
      "alice:1,bob:1,alice:2" ]] || die "the chain did not continue across the update from $old"
    [[ $(psql_in "$db" -c "SELECT count(*) FROM ledger.verify('payments')") == 0 ]] ||
      die "ledger.verify reported problems after the update from $old"
    [[ $(psql_in "$db" -c "SELECT count(*) FROM ledger.verify()") == 0 ]] ||
      die "ledger.verify() of ledger.records reported problems after the update from $old"
    log "a ledger made under $old verifies and appends after ALTER EXTENSION ledger UPDATE to $version"
    upgrades=$((upgrades + 1))
  done
  ((upgrades)) || log "no older release's install script in the package: no update to check"
}

# --prepare-rootfs: only make (or find) the cached root filesystem, e.g. ahead of a first run.
if [[ ${1:-} == --prepare-rootfs ]]; then
  [[ $(id -u) == 0 ]] || die "needs root (debootstrap, chroot, mount)"
  building_rootfs=''
  trap 'if [[ -n $building_rootfs ]]; then remove_tree "$building_rootfs"; fi' EXIT
  need_host_tools
  ensure_rootfs_tarball "$(rootfs_tarball)"
  exit 0
fi

# run_test runs in a subshell of its own with errexit on (a function called in a condition would run
# with it off), so the closing line is printed however it ends. It runs in the background because a
# shell waiting for a foreground command handles no signal until that command ends: so a TERM (from
# timeout, say) or INT reaches run_test at once, and its EXIT trap cleans up.
set +e
(set -e; run_test) &
test_pid=$!
trap 'kill -TERM "$test_pid" 2>/dev/null' INT TERM HUP
wait "$test_pid"
status=$?
# A trapped signal interrupts wait: wait again, for how run_test ended.
while kill -0 "$test_pid" 2>/dev/null; do
  wait "$test_pid"
  status=$?
done
trap - INT TERM HUP
set -e
if [[ $status == 0 ]]; then
  echo "package: 1 passed, 0 failed"
else
  echo "package: 0 passed, 1 failed"
fi
exit "$status"
