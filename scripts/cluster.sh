#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the demo and the tests, run as the postgres OS user.
#   scripts/cluster.sh start DIR PORT [extra postgresql.conf lines...]
#   scripts/cluster.sh stop DIR
# Connect with: psql -h DIR/socket -p PORT -U postgres
set -euo pipefail

PG_BIN=${PG_BIN:-$(/usr/lib/postgresql/15/bin/pg_config --bindir)}
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
as_postgres() { if [[ $(id -un) == postgres ]]; then "$@"; else runuser -u postgres -- "$@"; fi; }

case ${1:-} in
  start)
    dir=$2 port=$3; shift 3
    mkdir -p "$dir/socket"
    chown -R postgres: "$dir"
    if [[ ! -f $dir/data/PG_VERSION ]]; then
      as_postgres "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log"
      {
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $port"
        echo "unix_socket_directories = '$dir/socket'"
        echo "max_connections = 100"
        echo "fsync = on"
        for line in "$@"; do echo "$line"; done
      } >>"$dir/data/postgresql.conf"
    fi
    as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null
    ;;
  stop)
    dir=$2
    [[ -f $dir/data/postmaster.pid ]] && as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    ;;
  *)
    echo "usage: $0 start DIR PORT [conf lines...] | stop DIR" >&2
    exit 2
    ;;
esac
