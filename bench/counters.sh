#!/usr/bin/env bash
# What the counters in shared memory cost an append: pgbench single-row autocommit INSERTs into the same
# ledger table on two clusters, one preloading the library (counters on) and one not (counters off),
# with synchronous_commit = off so that the CPU cost is not hidden behind WAL flushes; ROUNDS rounds
# alternating the two, RUN_SECONDS each. Writes bench/COUNTERS.md.
#   bench/counters.sh            (ROUNDS [4], RUN_SECONDS [10], CLIENTS [1])
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-4} RUN_SECONDS=${RUN_SECONDS:-10} CLIENTS=${CLIENTS:-1}
PG_BIN=$(/usr/lib/postgresql/15/bin/pg_config --bindir)
work=$(mktemp -d /tmp/ledger-counters-XXXXXX)
chmod 755 "$work"
declare -A port=([on]=55437 [off]=55438)
cleanup() { for c in on off; do scripts/cluster.sh stop "$work/$c" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
for c in on off; do
  extra=()
  [[ $c == on ]] && extra=("shared_preload_libraries = 'ledger'")
  scripts/cluster.sh start "$work/$c" "${port[$c]}" "synchronous_commit = off" "shared_buffers = '512MB'" "${extra[@]}"
  "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$work/$c/socket" -p "${port[$c]}" -U postgres -d postgres \
    -c "CREATE EXTENSION ledger" \
    -c "CREATE TABLE t (id bigserial PRIMARY KEY, anchor int NOT NULL, body text NOT NULL)" \
    -c "SELECT ledger.enable('t', chain_by => 'anchor')" >/dev/null
done
printf '\\set a random(1, 1000)\nINSERT INTO t (anchor, body) VALUES (:a, %s);\n' "'x'" >"$work/insert.pgb"
rows="" ratios=""
for ((round = 1; round <= ROUNDS; round++)); do
  declare -A tps=()
  for c in on off; do
    tps[$c]=$("$PG_BIN/pgbench" -n -M prepared -T "$RUN_SECONDS" -c "$CLIENTS" -j "$CLIENTS" -f "$work/insert.pgb" \
      -h "$work/$c/socket" -p "${port[$c]}" -U postgres postgres 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
  done
  ratio=$(awk "BEGIN { printf \"%.2f\", ${tps[on]} / ${tps[off]} }")
  rows+="| $round | ${tps[on]%.*} | ${tps[off]%.*} | $ratio |"$'\n'
  ratios+="$ratio "
done
counted=$("$PG_BIN/psql" -X -At -h "$work/on/socket" -p "${port[on]}" -U postgres -d postgres \
  -c "SELECT appends || ' of ' || records FROM ledger.stats WHERE ledger = 'public.t'")
median=$(printf '%s\n' $ratios | sort -g | awk '{ v[NR] = $1 } END { printf "%.2f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
cat >bench/COUNTERS.md <<EOF
# The counters' cost

Written by \`bench/counters.sh\` (ROUNDS=$ROUNDS RUN_SECONDS=$RUN_SECONDS CLIENTS=$CLIENTS) on $(date -u '+%Y-%m-%d %H:%M UTC'), commit \`$(git rev-parse --short HEAD)\`.
pgbench single-row autocommit INSERTs (\`-M prepared\`, random chain among 1000) into the same ledger
table on two clusters, \`synchronous_commit = off\` (the CPU cost alone): *on* preloads the library, so
each commit counts its appends in shared memory; *off* does not. Rounds alternate the two.

| round | counters on (tps) | counters off (tps) | on/off |
|---:|---:|---:|---:|
$rows
Median on/off: **$median** (1.00 = no cost). The counters on the *on* cluster said: $counted appends.
EOF
cat bench/COUNTERS.md
