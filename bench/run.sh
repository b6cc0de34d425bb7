#!/usr/bin/env bash
# bench/run.sh — the ledger extension's performance benchmark, in one run on one throwaway cluster.
#
#   bench/run.sh                  full run (28 minutes on 2 cores at d6f065a's defaults: sections 1-5
#                                 15, section 6 2.4, 7 4.7, 8 4.8, 9 1.0), writes bench/RESULTS.md
#   BENCH_QUICK=1 bench/run.sh    smoke test with small sizes (about 2 minutes), writes
#                                 bench/out/RESULTS-quick.md so it never clobbers the full results
#   BENCH_ONLY=6 bench/run.sh     section 6 alone (on its own fresh cluster): replaces section 6 of
#                                 the existing results file (or adds it), leaves the other sections
#                                 as they are; the section records its own command, time and build.
#                                 Works with BENCH_QUICK=1 (then in bench/out/RESULTS-quick.md).
#   BENCH_ONLY=7 bench/run.sh     section 7 alone, the same way (replaces or adds section 7).
#   BENCH_ONLY=8 bench/run.sh     section 8 alone, the same way (about 7 minutes on 2 cores: 4.8 of
#                                 them the 18 pgbench runs of (b), 1.3 (a), 0.7 the bulk loads of (b);
#                                 estimated from quick runs and a 1M-record run of (a); 30 s quick).
#   BENCH_ONLY=9 bench/run.sh     section 9 alone, the same way (about 1.5 minutes on 2 cores at the
#                                 default SCALE_ROWS=1000000, estimated from a 200000-record run;
#                                 10 s quick); SCALE_ROWS=10000000 BENCH_ONLY=9 bench/run.sh is the
#                                 10M-record run, roughly 12 minutes.
#
# What it measures (every number is compared with a baseline measured in the same run, because the
# machines this runs on are noisy; the report gives ratios and says whether each target is met):
#
#   1. Bulk load: one `INSERT ... SELECT` of BULK_ROWS rows in one transaction (commit included); the
#      user_* variants compute the values in the statement (load_sql), the builtin_* ones read them from
#      a table built before the runs (untimed), where the evidence is precomputed:
#        user_plain     the user's table (ledger.records' columns but seq, prev_hash and hash; primary
#                       key and (anchor_id, ts) index) as it was, without the ledger;
#        user_ledger    the same after `ledger.enable(tbl, 'anchor_id')`;
#        user_evidence  the same with the ledger's three columns and unique (anchor_id, seq) index,
#                       storing constant values, no trigger (reference: the storage alone);
#        user_hand      the same columns and index with the best hand-written alternative: a PL/pgSQL
#                       BEFORE INSERT trigger taking pg_advisory_xact_lock(hashtext(anchor_id::text)),
#                       reading the head with an index lookup and hashing with pgcrypto digest(sha256);
#        builtin_plain  the columns of ledger.records (unique hash), storing the precomputed evidence;
#        builtin_ledger the same after ledger.enable (reference).
#      Fresh tables for every run; BULK_RUNS runs each (interleaved, order rotated); best time wins.
#      Target: user_ledger/user_plain time <= 1.3.
#   1b. An idempotent retry: one INSERT ... SELECT ... ON CONFLICT DO NOTHING of RETRY_ROWS events
#      (64 chains), every tenth already stored, into an event table with a bigint primary key, with
#      the ledger and as the user had it without the ledger; fresh tables, best of RETRY_RUNS.
#      Target: ledger/plain <= 1.3 (the bulk target of the performance issue). Reference: evidence,
#      the plain table with the ledger's columns and (stream, seq) index holding constant values.
#   1c. The same retries from PGBENCH_CLIENTS writers at once (pgbench, batches of 100 overlapping
#      events from random offsets, deadlocks retried): in id order, in chain order, and into a table
#      already holding every event; ledger/plain tps, target >= 1/1.3.
#   2. Single-row autocommit INSERTs with pgbench (-n -M prepared -T PGBENCH_SECONDS), 1 client and
#      PGBENCH_CLIENTS clients on random chains (random anchor among PGBENCH_ANCHORS), into section 1's
#      user table as it was (plain), with the ledger and with the hand-written trigger, plus
#      PGBENCH_CLIENTS clients all on ONE chain (reported), and plain and ledger again with
#      synchronous_commit = off (the CPU cost alone, reported), and the ledger with
#      ledger.shared_heads = off (heads read from the index, reported). PGBENCH_RUNS rounds; each ratio is the median of the per-round ratios. Target: ledger/plain tps >= 0.95
#      on random chains.
#   3. ledger.verify over VERIFY_ROWS records in VERIFY_CHAINS chains: rows/s, against
#        (i)  the one-core physical limit: bench/sha3_limit (Rust, sha3 =0.10.8, the extension's
#             hasher) hashing LIMIT_SAMPLE canonical records exported with ledger.canonical_bytes
#             (by default every record verify reads, so both stream the same bytes through memory),
#             round-robin, until LIMIT_HASHES hashes; and
#        (ii) a hand-written SQL recomputation (lag() window + built-in sha256() over concat_ws).
#      Targets: verify/limit >= 0.5, verify/hand-SQL > 1.
#   3b. ledger.stats' row of that ledger (after a checkpoint of each chain and a verify_all) against
#      SELECT count(*) of it, best of STATS_RUNS; also checks the row's records, chains, unanchored
#      records and appends counter. Reported, no target.
#   The cluster preloads the library, so every append measured above also counts itself.
#   4. Merkle trees and checkpoints, on a ledger with ONE chain of MERKLE_ROWS records:
#        (a) ledger.merkle_root(tbl, chain, 1, n): rows/s against the record-hash limit of 3 (i) and
#            against the one-core limit of Merkle hashing itself (bench/sha3_limit --merkle: the
#            RFC 9162 tree over the same stored hashes, exported with COPY; its root must equal
#            merkle_root's). Best of MERKLE_RUNS, interleaved. No target.
#        (b) ledger.checkpoint(tbl, chain) after CP_NEW new records on that chain (checkpointed
#            before), against the same on a chain of CP_NEW records (checkpointed before); CP_RUNS
#            rounds, each adding CP_NEW records to both, best time each. Target: big/small <= 2.
#        (c) ledger.inclusion_proof and ledger.consistency_proof on the MERKLE_ROWS-record checkpoint
#            (best of PROOF_RUNS) and ledger.verify_checkpoint of it (best of PROOF_RUNS), in ms.
#   5. History-tracked tables, on accounts(id bigint PRIMARY KEY, owner text, balance numeric,
#      status text, updated_at timestamptz):
#        (a) single-row autocommit UPDATEs of a random row of HIST_ROWS rows with pgbench
#            (-n -M prepared -T PGBENCH_SECONDS, 1 client and PGBENCH_CLIENTS clients) on three tables:
#              untracked  no trigger (the baseline);
#              tracked    after ledger.enable_history(tbl);
#              hand       the best hand-written alternative, in the style of the temporal_tables
#                         extension: a PL/pgSQL AFTER row trigger appending each version to a history
#                         table, chained per key with pgcrypto digest(sha256) after an index lookup
#                         of the key's previous version.
#            HIST_RUNS rounds (every other one reversed); each ratio is the median of the per-round
#            ratios. Targets: tracked/untracked tps >= 0.7, tracked/hand > 1. The tracked table
#            verifies (ledger.verify) and the hand-written chains link up after the runs.
#        (b) ledger.verify of a tracked table of HIST_VERIFY_ROWS rows with HIST_VERSIONS versions
#            each: versions/s against the one-core SHA3 limit of 3 (i); also ledger.verify of the
#            history ledger alone (the chains without the state check). Best of HIST_VERIFY_RUNS,
#            interleaved. Reported, no target.
#   6. Retention, on a ledger of RET_ROWS records in RET_CHAINS chains (section 1's columns with a
#      timestamptz column `at` in place of ts, an index on (anchor_id, at), then ledger.enable(tbl,
#      'anchor_id')), loaded by one INSERT ... SELECT in which the older half of every chain comes
#      first, 30 days old (the newer half 1 day old), with ledger.set_retention(tbl, '7 days', 'at'):
#        (a) SELECT * FROM ledger.prune(tbl) of the RET_ROWS / 2 old records (it verifies each, makes a
#            checkpoint covering them and keeps their hashes in ledger.pruned), against plain: a
#            DELETE ... WHERE at < now() - interval '7 days' of the same rows from the user's table as
#            it was without the ledger (the same columns but seq, prev_hash and hash, the same rows, the
#            same primary key and (anchor_id, at) index, no triggers); and the same prune of a third
#            table loaded alike whose chains were all checkpointed before (as the scheduled
#            ledger.checkpoint_all keeps a ledger), so it makes no checkpoint. Autocommit, after a
#            CHECKPOINT; RET_RUNS rounds on fresh tables (order alternating), best time. No target
#            (reported).
#        (b) sizes of the table, each of its indexes (and their total) and ledger.pruned: before the
#            prune, right after it, after a plain VACUUM (not FULL), and after inserting another
#            RET_ROWS / 2 records (one INSERT ... SELECT), against the same on the plain table: the
#            freed space is reused, so the table barely grows (checked: < 5 %). The VACUUM is VERBOSE,
#            for the pages it deleted from each index and how many of them are reusable yet (a deleted
#            btree page is reusable only once no snapshot can need it). Round 1 only.
#        (c) ledger.verify(tbl) before the prune, after it and after the VACUUM: records/s, best of
#            RET_VERIFY_RUNS. Round 1 only; the ledger must verify at every stage.
#   7. Appends on a partitioned ledger, against the same ledger unpartitioned: four tables with
#      section 6's columns (at timestamptz NOT NULL), primary key (rid, at) (a partitioned table's
#      must hold the partition key; the unpartitioned ones get the same) and an index on (anchor_id,
#      at): plain, plain partitioned, ledger, ledger partitioned (ledger.enable(tbl, 'anchor_id')).
#      Partitioned: PARTITION BY RANGE (at), PART_PARTITIONS monthly partitions of the past, the
#      current month's, 3 empty future months (as pg_partman's premake keeps them) and a DEFAULT
#      partition (left empty: a partitioned ledger refuses records there). Every record is dated in
#      the current month, so each append's head lookup first probes the 3 empty partitions after it.
#        (a) one INSERT ... SELECT of PART_ROWS rows over 64 chains (autocommit, after a CHECKPOINT),
#            fresh tables, PART_RUNS runs interleaved (every other one reversed), best time.
#            Target: ledger partitioned / ledger unpartitioned time <= 1.1; plain partitioned /
#            plain reported.
#        (b) single-row autocommit INSERTs with pgbench (-n -M prepared -T PGBENCH_SECONDS, 1 client
#            and PGBENCH_CLIENTS clients, random chain among PGBENCH_ANCHORS) into fresh tables of each
#            kind, PART_PGBENCH_RUNS rounds as in section 2 (median of the per-round ratios). Target:
#            ledger partitioned / ledger unpartitioned tps >= 0.9; plain partitioned / plain reported.
#      After every load both ledgers verify (ledger.verify finds nothing), every chain's seqs are
#      1 to its count, and every row is in the current month's partition.
#   8. Verification on every core, and pgAudit as a peer (about 7 minutes on 2 cores, see above):
#        (a) ledger.verify of a ledger with the columns of ledger.records, 64 chains, VERIFY8_ROWS
#            records (loaded by INSERT ... SELECTs in batches, NPROC sessions at once on disjoint
#            chains; vacuumed, cached), with
#            ledger.verify_threads = 1 (the backend alone) and at its default (RESET: one thread per
#            core), each in a fresh session, VERIFY8_RUNS rounds interleaved, best time; each session
#            also reads its backend's peak RSS (VmHWM of /proc/<pid>/status), against a fresh backend
#            that ran only SELECT 1. Against the SHA3 limit on one core and on every core:
#            bench/sha3_limit --threads 1 and --threads NPROC (nproc) over LIMIT8_SAMPLE canonical records
#            (exported as in section 3), one hash of each a pass, best of 2 x VERIFY8_RUNS passes.
#            Targets: all threads / one thread rows/s >= 1.7; all threads / all-core limit >= 0.5;
#            one thread / one-core limit reported.
#        (b) The cluster is restarted with shared_preload_libraries = 'ledger,pgaudit' (ALTER SYSTEM),
#            CREATE EXTENSION pgaudit (pgaudit.log stays 'none'). Three tables with the user's columns
#            (ledger.records' but seq, prev_hash, hash; primary key, (anchor_id, ts) index): plain;
#            audited, the same table written only by sessions with pgaudit.log = 'write' (SET for
#            the bulk load, PGOPTIONS for pgbench); ledger, the same after ledger.enable(tbl,
#            'anchor_id'). Bulk INSERT ... SELECT of BULK_ROWS rows (fresh tables, BULK_RUNS runs
#            rotated, best time) and pgbench single-row autocommit INSERTs as in section 2 (1 and
#            PGBENCH_CLIENTS clients, random chains, PGBENCH_RUNS8 rounds, median of paired ratios).
#            The server log must hold an 'AUDIT: SESSION' line for every audited write (at least one
#            per bulk run, one per pgbench transaction) and none for the plain and ledger tables.
#            ledger/plain, audited/plain, ledger/audited reported, no target. Afterwards pgaudit is
#            dropped and the cluster restarted as before.
#   9. At scale: a ledger with the columns of ledger.records (create_table's ledger kind) over
#      SCALE_CHAINS chains and the plain table (create_table's plain kind), each loaded in SCALE_STEPS
#      INSERT ... SELECTs of SCALE_ROWS / SCALE_STEPS rows (interleaved, the order alternating):
#      rows/s of each step and ledger/plain, as the tables grow. Then on the ledger: ledger.verify
#      (default threads, best of SCALE_VERIFY_RUNS), ledger.checkpoint of every chain (total and per
#      chain), ledger.inclusion_proof and ledger.consistency_proof on one chain's checkpoint (best of
#      PROOF_RUNS), and bytes per record of the heap and each index, ledger and plain side by side.
#      Reported, no target. About 1.5 minutes at the default 1M records.
#
# Environment (defaults in brackets; quick-mode defaults after the slash):
#   BENCH_QUICK [0]            1 = small sizes, for smoke-testing this script
#   BENCH_ONLY []              6, 7, 8 or 9 = run that section only (sections 1 to 5 need each
#                              other's results, so they run only all together)
#   BENCH_DIR [/tmp/ledger-bench], BENCH_PORT [55440]   the throwaway cluster (re-created every run)
#   BENCH_RESULTS [bench/RESULTS.md / bench/out/RESULTS-quick.md]
#   BENCH_KEEP [0]             1 = keep the cluster's data directory after the run
#   BULK_ROWS [200000/20000]  BULK_ANCHORS [100]  BULK_RUNS [3/2]
#   PGBENCH_SECONDS [10/3]  PGBENCH_CLIENTS [8]  PGBENCH_ANCHORS [1000]  PGBENCH_RUNS [3/1]
#   VERIFY_ROWS [1000000/50000]  VERIFY_CHAINS [100]  VERIFY_RUNS [3/2]
#   LIMIT_SAMPLE [VERIFY_ROWS]  LIMIT_HASHES [VERIFY_ROWS]
#   MERKLE_ROWS [1000000/50000]  MERKLE_RUNS [3/2]  CP_NEW [10000/2000]  CP_RUNS [3]
#   PROOF_RUNS [3]             sections 4 (c) and 9
#   STATS_RUNS [5]  RETRY_ROWS [100000/20000]  RETRY_RUNS [3]
#   HIST_ROWS [100000/5000]  HIST_RUNS [3/1]  HIST_VERIFY_ROWS [1000000/20000]  HIST_VERSIONS [5]
#   HIST_VERIFY_RUNS [1]
#   RET_ROWS [1000000/40000] (a multiple of 2 x RET_CHAINS)  RET_CHAINS [100]  RET_RUNS [2]
#   RET_VERIFY_RUNS [3/2]
#   PART_PARTITIONS [24/4] (past months)  PART_ROWS [200000/10000]  PART_RUNS [3/2]
#   PART_PGBENCH_RUNS [3/1]    section 7's pgbench rounds
#   VERIFY8_ROWS [2000000/50000]  VERIFY8_RUNS [3/2]   section 8 (a)
#   LIMIT8_SAMPLE [1000000/VERIFY8_ROWS]               section 8 (a): canonical records for sha3_limit
#   PGBENCH_RUNS8 [3/1]        section 8 (b)'s pgbench rounds (it also uses BULK_ROWS, BULK_ANCHORS,
#                              BULK_RUNS, PGBENCH_SECONDS, PGBENCH_CLIENTS, PGBENCH_ANCHORS)
#   SCALE_ROWS [1000000/20000] (a multiple of SCALE_STEPS; 10000000 for the 10M run)
#   SCALE_CHAINS [1000]  SCALE_STEPS [10]  SCALE_VERIFY_RUNS [2]   section 9
#
# Needs only what scripts/setup.sh installs (PostgreSQL 15 with contrib: pgbench, pgcrypto; cargo)
# and the extension installed into it (scripts/install.sh); section 8 (b) also needs pgAudit
# (postgresql-15-pgaudit).
# Must run as root or as the postgres OS user (scripts/cluster.sh runs the server as postgres).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# The exact command, with the benchmark's environment variables that were set explicitly.
VARS=(BENCH_ONLY BENCH_QUICK BENCH_DIR BENCH_PORT BENCH_RESULTS BENCH_KEEP BULK_ROWS BULK_ANCHORS BULK_RUNS
      PGBENCH_SECONDS PGBENCH_CLIENTS PGBENCH_ANCHORS PGBENCH_RUNS VERIFY_ROWS VERIFY_CHAINS
      VERIFY_RUNS LIMIT_SAMPLE LIMIT_HASHES MERKLE_ROWS MERKLE_RUNS CP_NEW CP_RUNS PROOF_RUNS STATS_RUNS RETRY_ROWS RETRY_RUNS
      HIST_ROWS HIST_RUNS HIST_VERIFY_ROWS HIST_VERSIONS HIST_VERIFY_RUNS RET_ROWS RET_CHAINS RET_RUNS
      RET_VERIFY_RUNS PART_PARTITIONS PART_ROWS PART_RUNS PART_PGBENCH_RUNS VERIFY8_ROWS VERIFY8_RUNS
      LIMIT8_SAMPLE PGBENCH_RUNS8 SCALE_ROWS SCALE_CHAINS SCALE_STEPS SCALE_VERIFY_RUNS PG_CONFIG)
COMMAND=""
for v in "${VARS[@]}"; do
  if [[ -n ${!v+x} ]]; then COMMAND+="$v=$(printf %q "${!v}") "; fi
done
COMMAND+="bench/run.sh"
for a in "$@"; do COMMAND+=" $(printf %q "$a")"; done

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
PG_BIN=$("$PG_CONFIG" --bindir)
export PG_BIN
export PGOPTIONS="-c client_min_messages=warning"

QUICK=${BENCH_QUICK:-0}
q() { if [[ $QUICK == 1 ]]; then echo "$2"; else echo "$1"; fi; }
BENCH_DIR=${BENCH_DIR:-/tmp/ledger-bench}
BENCH_PORT=${BENCH_PORT:-55440}
BENCH_RESULTS=${BENCH_RESULTS:-$(q bench/RESULTS.md bench/out/RESULTS-quick.md)}
BENCH_KEEP=${BENCH_KEEP:-0}
BULK_ROWS=${BULK_ROWS:-$(q 200000 20000)}
BULK_ANCHORS=${BULK_ANCHORS:-100}
BULK_RUNS=${BULK_RUNS:-$(q 3 2)}
PGBENCH_SECONDS=${PGBENCH_SECONDS:-$(q 10 3)}
PGBENCH_CLIENTS=${PGBENCH_CLIENTS:-8}
PGBENCH_ANCHORS=${PGBENCH_ANCHORS:-1000}
PGBENCH_RUNS=${PGBENCH_RUNS:-$(q 3 1)}
VERIFY_ROWS=${VERIFY_ROWS:-$(q 1000000 50000)}
VERIFY_CHAINS=${VERIFY_CHAINS:-100}
VERIFY_RUNS=${VERIFY_RUNS:-$(q 3 2)}
LIMIT_SAMPLE=${LIMIT_SAMPLE:-$VERIFY_ROWS}
LIMIT_HASHES=${LIMIT_HASHES:-$VERIFY_ROWS}
MERKLE_ROWS=${MERKLE_ROWS:-$(q 1000000 50000)}
MERKLE_RUNS=${MERKLE_RUNS:-$(q 3 2)}
CP_NEW=${CP_NEW:-$(q 10000 2000)}
CP_RUNS=${CP_RUNS:-3}
PROOF_RUNS=${PROOF_RUNS:-3}
STATS_RUNS=${STATS_RUNS:-5}
RETRY_ROWS=${RETRY_ROWS:-$(q 100000 20000)}
RETRY_RUNS=${RETRY_RUNS:-3}
HIST_ROWS=${HIST_ROWS:-$(q 100000 5000)}
HIST_RUNS=${HIST_RUNS:-$(q 3 1)}
HIST_VERIFY_ROWS=${HIST_VERIFY_ROWS:-$(q 1000000 20000)}
HIST_VERSIONS=${HIST_VERSIONS:-5}
HIST_VERIFY_RUNS=${HIST_VERIFY_RUNS:-1}
RET_ROWS=${RET_ROWS:-$(q 1000000 40000)}
RET_CHAINS=${RET_CHAINS:-100}
RET_RUNS=${RET_RUNS:-2}
RET_VERIFY_RUNS=${RET_VERIFY_RUNS:-$(q 3 2)}
PART_PARTITIONS=${PART_PARTITIONS:-$(q 24 4)}
PART_ROWS=${PART_ROWS:-$(q 200000 10000)}
PART_RUNS=${PART_RUNS:-$(q 3 2)}
PART_PGBENCH_RUNS=${PART_PGBENCH_RUNS:-$(q 3 1)}
VERIFY8_ROWS=${VERIFY8_ROWS:-$(q 2000000 50000)}
VERIFY8_RUNS=${VERIFY8_RUNS:-$(q 3 2)}
LIMIT8_SAMPLE=${LIMIT8_SAMPLE:-$(q 1000000 "$VERIFY8_ROWS")}
PGBENCH_RUNS8=${PGBENCH_RUNS8:-$(q 3 1)}
SCALE_ROWS=${SCALE_ROWS:-$(q 1000000 20000)}
SCALE_CHAINS=${SCALE_CHAINS:-1000}
SCALE_STEPS=${SCALE_STEPS:-10}
SCALE_VERIFY_RUNS=${SCALE_VERIFY_RUNS:-2}
ONLY=${BENCH_ONLY:-}
[[ -z $ONLY || $ONLY =~ ^[6-9]$ ]] \
  || { echo "bench: BENCH_ONLY must be 6, 7, 8 or 9 (that section alone) or unset (everything), not '$ONLY'" >&2; exit 2; }

for v in BENCH_PORT BULK_ROWS BULK_ANCHORS BULK_RUNS PGBENCH_SECONDS PGBENCH_CLIENTS PGBENCH_ANCHORS \
         PGBENCH_RUNS VERIFY_ROWS VERIFY_CHAINS VERIFY_RUNS LIMIT_SAMPLE LIMIT_HASHES \
         MERKLE_ROWS MERKLE_RUNS CP_NEW CP_RUNS PROOF_RUNS STATS_RUNS RETRY_ROWS RETRY_RUNS \
         HIST_ROWS HIST_RUNS HIST_VERIFY_ROWS HIST_VERSIONS HIST_VERIFY_RUNS \
         RET_ROWS RET_CHAINS RET_RUNS RET_VERIFY_RUNS PART_PARTITIONS PART_ROWS PART_RUNS PART_PGBENCH_RUNS \
         VERIFY8_ROWS VERIFY8_RUNS LIMIT8_SAMPLE PGBENCH_RUNS8 SCALE_ROWS SCALE_CHAINS SCALE_STEPS SCALE_VERIFY_RUNS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "bench: $v must be a positive integer, not '${!v}'" >&2; exit 2; }
done
((BULK_RUNS >= 2)) || { echo "bench: BULK_RUNS must be at least 2 (best of several runs)" >&2; exit 2; }
((RET_ROWS % (2 * RET_CHAINS) == 0)) \
  || { echo "bench: RET_ROWS must be a multiple of 2 x RET_CHAINS (every chain half old, half new)" >&2; exit 2; }
((SCALE_ROWS % SCALE_STEPS == 0)) \
  || { echo "bench: SCALE_ROWS must be a multiple of SCALE_STEPS (steps of equal size)" >&2; exit 2; }
((SCALE_ROWS >= 2 * SCALE_CHAINS)) \
  || { echo "bench: SCALE_ROWS must be at least 2 x SCALE_CHAINS (proofs need chains of 2 records or more)" >&2; exit 2; }

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

SOCK=$BENCH_DIR/socket
OUT=$ROOT/bench/out
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/ledger-bench-work.XXXXXX)
chmod 755 "$WORK"
SO=$("$PG_CONFIG" --pkglibdir)/ledger.so

cleanup() {
  local rc=$?
  set +e
  if [[ -f $BENCH_DIR/data/postmaster.pid ]]; then
    log "stopping the cluster in $BENCH_DIR"
    scripts/cluster.sh stop "$BENCH_DIR"
  fi
  [[ -f $BENCH_DIR/server.log ]] && cp "$BENCH_DIR/server.log" "$OUT/server.log"
  if [[ $BENCH_KEEP != 1 && -d $BENCH_DIR ]]; then rm -rf "$BENCH_DIR"; fi
  rm -rf "$WORK"
  ((rc == 0)) || log "failed (exit $rc); logs in $OUT"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

psql_() { "$PG_BIN/psql" -h "$SOCK" -p "$BENCH_PORT" -U postgres -d postgres -X -q -At -v ON_ERROR_STOP=1 "$@"; }
calc() { awk "BEGIN { printf \"%.${2:-3}f\", $1 }"; }
# met VALUE OP TARGET -> "met" / "**not met**"
met() { if awk "BEGIN { exit !($1 $2 $3) }"; then echo "met"; else echo "**not met**"; fi; }
min_of() { printf '%s\n' "$@" | sort -g | head -1; }
max_of() { printf '%s\n' "$@" | sort -g | tail -1; }
no_crash() {
  if grep -q "terminated by signal" "$BENCH_DIR/server.log"; then
    grep "terminated by signal" "$BENCH_DIR/server.log" >&2
    die "a backend crashed during: $1 (see $OUT/server.log). Was ledger.so reinstalled during the run?"
  fi
}

# ------------------------------------------------------------------------------------------------
# Environment facts and the cluster
# ------------------------------------------------------------------------------------------------
[[ -x $PG_BIN/pgbench ]] || die "pgbench not found in $PG_BIN"
[[ -f $SO ]] || die "ledger.so is not installed in $("$PG_CONFIG" --pkglibdir); run: scripts/install.sh"
STARTED=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
NPROC=$(nproc)
CPU=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git status --porcelain -- src core sql Cargo.toml Cargo.lock ledger.control 2>/dev/null | wc -l)
SO_SUM=$(sha256sum "$SO" | cut -c1-16)
SO_TIME=$(date -u -r "$SO" '+%Y-%m-%d %H:%M:%S UTC')

if [[ -e $BENCH_DIR ]]; then
  # Only ever remove what looks like a cluster this script made.
  if [[ -n $(ls -A "$BENCH_DIR") && ! -f $BENCH_DIR/data/PG_VERSION ]]; then
    die "$BENCH_DIR exists and is not a cluster directory; set BENCH_DIR elsewhere"
  fi
  scripts/cluster.sh stop "$BENCH_DIR"
  rm -rf "$BENCH_DIR"
fi
log "starting a fresh cluster in $BENCH_DIR on port $BENCH_PORT"
# Preloaded, so every append below also counts itself in shared memory (ledger.stats' counters).
CONF=("shared_buffers = '1GB'" "max_wal_size = '4GB'" "checkpoint_timeout = '30min'"
      "shared_preload_libraries = 'ledger'")
scripts/cluster.sh start "$BENCH_DIR" "$BENCH_PORT" "${CONF[@]}"
PG_VERSION=$(psql_ -c "SELECT version()")
psql_ -c "CREATE EXTENSION pgcrypto" || die "CREATE EXTENSION pgcrypto failed (postgresql-contrib missing?)"
psql_ -c "CREATE EXTENSION ledger" \
  || die "CREATE EXTENSION ledger failed; install it: scripts/install.sh"
[[ $(psql_ -c "SELECT ledger.counters_available()") == t ]] || die "the counters are not kept although preloaded"

# ------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------
# create_table KIND NAME CHAIN_COLUMN: a fresh table with the columns of ledger.records.
create_table() {
  local kind=$1 t=$2
  {
    echo "DROP TABLE IF EXISTS $t;"
    cat <<SQL
CREATE TABLE $t (
    rid       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    anchor_id uuid NOT NULL,
    slot      text,
    kind      text,
    ts        timestamptz DEFAULT now(),
    seq       bigint,
    prev_hash char(64),
    hash      char(64) UNIQUE,
    payload   jsonb,
    sig       bytea,
    producer  text,
    version   text DEFAULT 'v1'
);
CREATE INDEX ON $t (anchor_id, ts);
SQL
    case $kind in
      plain) ;;
      ledger) echo "SELECT ledger.enable('$t', 'anchor_id');" ;;
      hand) hand_trigger_sql "$t" ;;
      *) die "unknown table kind $kind" ;;
    esac
  } | psql_ >/dev/null
}

# hand_trigger_sql TABLE: the hand-written alternative on a table with seq, prev_hash and hash columns:
# a unique (anchor_id, seq) index and a PL/pgSQL BEFORE INSERT trigger that chains each row.
hand_trigger_sql() {
  local t=$1
  cat <<SQL
CREATE UNIQUE INDEX ON $t (anchor_id, seq);
CREATE OR REPLACE FUNCTION ${t}_append() RETURNS trigger LANGUAGE plpgsql AS \$fn\$
DECLARE
  head_seq  bigint;
  head_hash char(64);
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext(NEW.anchor_id::text));
  SELECT seq, hash INTO head_seq, head_hash FROM $t
   WHERE anchor_id = NEW.anchor_id ORDER BY seq DESC LIMIT 1;
  NEW.seq := coalesce(head_seq, 0) + 1;
  NEW.prev_hash := head_hash;
  NEW.hash := encode(digest(concat_ws('|', NEW.rid, NEW.anchor_id, NEW.slot, NEW.kind, NEW.ts, NEW.seq,
                NEW.prev_hash, NEW.payload, NEW.sig, NEW.producer, NEW.version), 'sha256'), 'hex');
  RETURN NEW;
END
\$fn\$;
CREATE TRIGGER zz_hand_append BEFORE INSERT ON $t FOR EACH ROW EXECUTE FUNCTION ${t}_append();
SQL
}

# user_table KIND NAME: a fresh table with the user's columns (ledger.records' but seq, prev_hash and
# hash), its primary key and (anchor_id, ts) index: the table as the user had it before the ledger.
#   plain, audited  as it is (audited differs only in the sessions writing it);
#   ledger          then ledger.enable(tbl, 'anchor_id') (adding seq, prev_hash, hash, the unique
#                   (anchor_id, seq) index and the triggers);
#   evidence        with the ledger's three columns and unique (anchor_id, seq) index but no trigger,
#                   filled by the load with evidence_values: what storing the evidence costs before
#                   anything is hashed;
#   hand            with those columns, the index and the hand-written trigger.
user_table() {
  {
    echo "DROP TABLE IF EXISTS $2;"
    echo "CREATE TABLE $2 (rid uuid PRIMARY KEY DEFAULT gen_random_uuid(), anchor_id uuid NOT NULL, slot text,"
    echo "  kind text, ts timestamptz DEFAULT now(), payload jsonb, sig bytea, producer text, version text DEFAULT 'v1');"
    echo "CREATE INDEX ON $2 (anchor_id, ts);"
    case $1 in
      plain | audited) ;;
      ledger) echo "SELECT ledger.enable('$2', 'anchor_id');" ;;
      evidence) echo "ALTER TABLE $2 ADD COLUMN seq bigint, ADD COLUMN prev_hash char(64), ADD COLUMN hash char(64);"
                echo "CREATE UNIQUE INDEX ON $2 (anchor_id, seq);" ;;
      hand) echo "ALTER TABLE $2 ADD COLUMN seq bigint, ADD COLUMN prev_hash char(64), ADD COLUMN hash char(64);"
            hand_trigger_sql "$2" ;;
      *) die "unknown user table kind $1" ;;
    esac
  } | psql_ >/dev/null
}

anchor_expr() { echo "('00000000-0000-0000-0000-' || lpad(($1)::text, 12, '0'))::uuid"; }

# evidence_values SEQ: the evidence columns' values for a table storing them without a trigger:
# SEQ and constant hex strings (so nothing is hashed or computed per row).
evidence_values() { echo "$1, repeat('a', 64), repeat('b', 64)"; }

# load_sql KIND TABLE ROWS CHAINS [FIRST [FILTER]]: one INSERT ... SELECT, timed from before BEGIN to
# after COMMIT, of rows i = FIRST (default 1) to FIRST + ROWS - 1 (record i on chain i % CHAINS + 1),
# only those for which the condition FILTER on i holds, if given. KIND plain also stores seq, prev_hash
# and hash computed cheaply (md5), evidence stores evidence_values, any other kind leaves them out.
load_sql() {
  local kind=$1 t=$2 rows=$3 chains=$4 first=${5:-1} where=${6:+ WHERE $6} cols="" vals=""
  case $kind in
    plain)
      cols=", seq, prev_hash, hash"
      vals=", i, md5((i - 1)::text) || md5((i - 1)::text), md5(i::text) || md5(i::text)" ;;
    evidence)
      cols=", seq, prev_hash, hash"
      vals=", $(evidence_values i)" ;;
  esac
  cat <<SQL
CHECKPOINT;
SELECT clock_timestamp() AS t0 \\gset
BEGIN;
INSERT INTO $t (anchor_id, slot, kind, payload, sig, producer$cols)
SELECT $(anchor_expr "i % $chains + 1"), 'slot-' || (i % 10), 'payment',
       jsonb_build_object('i', i, 'note', 'payment ' || i), decode(md5(i::text), 'hex'), 'bench'$vals
FROM generate_series($first, $((first + rows - 1))) AS i$where;
COMMIT;
SELECT round(extract(epoch FROM clock_timestamp() - :'t0')::numeric, 4);
SQL
}

# The hand-written chain must be intact: every record links to its predecessor.
check_hand_chain() {
  local t=$1 rows=$2 chains=$3 got
  got=$(psql_ -c "SELECT count(*) FILTER (WHERE seq = 1 AND prev_hash IS NULL)
                        + count(*) FILTER (WHERE prev_hash = lag_hash AND seq = lag_seq + 1)
                  FROM (SELECT seq, prev_hash, lag(hash) OVER w AS lag_hash, lag(seq) OVER w AS lag_seq
                        FROM $t WINDOW w AS (PARTITION BY anchor_id ORDER BY seq)) s")
  [[ $got == "$rows" ]] || die "hand-written chain of $t is broken: $got of $rows records link up"
}
check_ledger() {
  local t=$1 problems
  problems=$(psql_ -c "SELECT count(*) FROM ledger.verify('$t')")
  [[ $problems == 0 ]] || die "ledger.verify('$t') reports $problems problems"
}
# Both in autocommit, so the commit is included.
timed_statement() {  # SQL -> seconds
  psql_ <<SQL | tail -1
SELECT clock_timestamp() AS t0 \\gset
$1;
SELECT round(extract(epoch FROM clock_timestamp() - :'t0')::numeric, 4);
SQL
}
timed_query() {  # SQL -> "result seconds"
  psql_ <<SQL | tail -1
SELECT clock_timestamp() AS t0 \\gset
SELECT ($1) AS result \\gset
SELECT :'result' || ' ' || round(extract(epoch FROM clock_timestamp() - :'t0')::numeric, 4);
SQL
}
per_run() { echo "$*" | sed 's/ *$//; s/ /, /g'; }
# bench/sha3_limit, built once (sections 3, 4 and 8).
LIMIT_TARGET_DIR=$ROOT/target/sha3_limit
SHA3_LIMIT=$LIMIT_TARGET_DIR/release/sha3_limit
cargo_build() { cargo build --release --locked --quiet --manifest-path bench/sha3_limit/Cargo.toml \
                  --target-dir "$LIMIT_TARGET_DIR" "$@"; }
build_sha3_limit() { cargo_build --offline 2>/dev/null || cargo_build || die "cannot build bench/sha3_limit"; }

# pgbench results, shared by sections 2, 5, 7 and 8: PGB_TPS[config] holds a config's tps of every
# round ("tps tps ..."), PGB_BEST[config] its best.
declare -A PGB_TPS=() PGB_BEST=()
tps_of() { printf '%.0f' "${PGB_BEST[$1]}"; }
# Ratios are paired: run k of one variant / run k of the other, which ran moments before or after
# it in the same round. An fsync-bound tps follows the disk's latency, which drifts over minutes,
# so one lucky run of either side would decide a ratio of bests; the median of paired ratios
# cancels the drift shared within a round.
paired_ratios() {
  local -a l p
  read -r -a l <<<"${PGB_TPS[$1]}"
  read -r -a p <<<"${PGB_TPS[$2]}"
  for i in "${!l[@]}"; do calc "${l[$i]} / ${p[$i]}" 2; echo; done
}
median() { sort -g | awk '{ v[NR] = $1 } END { printf "%.2f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
paired_median() { paired_ratios "$1" "$2" | median; }
# timed_pgbench WHAT SCRIPT CLIENTS [PGOPTIONS]: `pgbench -n -M prepared -T PGBENCH_SECONDS` of SCRIPT
# from CLIENTS clients (-j min(CLIENTS, nproc)); its output goes to the pgbench log, and a failure,
# an error it reports or a crash dies naming WHAT. Sets PGB_RUN_TPS and PGB_RUN_COUNT (transactions).
timed_pgbench() {
  local what=$1 script=$2 clients=$3 options=${4:-$PGOPTIONS} jobs out
  jobs=$((clients < NPROC ? clients : NPROC))
  out=$WORK/pgbench_${what// /_}.log
  PGOPTIONS=$options "$PG_BIN/pgbench" -h "$SOCK" -p "$BENCH_PORT" -U postgres -n -M prepared -c "$clients" -j "$jobs" \
    -T "$PGBENCH_SECONDS" -f "$script" postgres >"$out" 2>&1 || {
    cat "$out" >&2
    die "pgbench failed: $what"
  }
  cat "$out" >>"$OUT/pgbench.log"
  no_crash "pgbench $what"
  if grep -qiE "aborted|error" "$out"; then cat "$out" >&2; die "pgbench reported errors: $what"; fi
  PGB_RUN_TPS=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$out")
  PGB_RUN_COUNT=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
  [[ -n $PGB_RUN_TPS && -n $PGB_RUN_COUNT ]] || { cat "$out" >&2; die "no tps or transaction count in pgbench output: $what"; }
}
# pgbench_rounds PREFIX RUNS RUNNER LABEL CONFIG...: RUNS rounds, each running `RUNNER CONFIG`
# (the config's words are its arguments; it prints the tps) for every config, every other round in
# reverse so neither side of a ratio always goes first. A config's tps go to PGB_TPS[PREFIX CONFIG]
# (PGB_TPS[CONFIG] with an empty prefix), its best to PGB_BEST.
pgbench_rounds() {
  local prefix=$1 runs=$2 runner=$3 label=$4 run i config key tps
  shift 4
  local -a configs=("$@") order
  for ((run = 1; run <= runs; run++)); do
    order=("${configs[@]}")
    if ((run % 2 == 0)); then
      order=()
      for ((i = ${#configs[@]} - 1; i >= 0; i--)); do order+=("${configs[$i]}"); done
    fi
    for config in "${order[@]}"; do
      # shellcheck disable=SC2086  # word splitting wanted: the config's words are the arguments
      tps=$("$runner" $config)
      key=${prefix:+$prefix }$config
      PGB_TPS[$key]+="$tps "
      log "$label run $run/$runs: $config: $tps tps"
    done
  done
  for config in "${configs[@]}"; do
    key=${prefix:+$prefix }$config
    # shellcheck disable=SC2086
    PGB_BEST[$key]=$(max_of ${PGB_TPS[$key]})
  done
}

# Sections 1 to 5 (not indented) run only all together; BENCH_ONLY=6 or 7 skips them.
if [[ -z $ONLY ]]; then
# ------------------------------------------------------------------------------------------------
# 1. Bulk INSERT ... SELECT
# ------------------------------------------------------------------------------------------------
# The built-in schema's variants load their rows from one table built before the runs (untimed), so
# the plain one stores evidence precomputed outside the timed statement: seq per chain and md5s.
psql_ >/dev/null <<SQL
DROP TABLE IF EXISTS bulk_source;
CREATE TABLE bulk_source AS
SELECT i, $(anchor_expr "i % $BULK_ANCHORS + 1") AS anchor_id, 'slot-' || (i % 10) AS slot, 'payment' AS kind,
       jsonb_build_object('i', i, 'note', 'payment ' || i) AS payload, decode(md5(i::text), 'hex') AS sig,
       'bench' AS producer, (i / $BULK_ANCHORS + 1)::bigint AS seq,
       md5((i - 1)::text) || md5((i - 1)::text) AS prev_hash, md5(i::text) || md5(i::text) AS hash
FROM generate_series(1, $BULK_ROWS) AS i;
VACUUM (ANALYZE) bulk_source;
SQL
# source_load_sql TABLE WITH_EVIDENCE: as load_sql, one INSERT ... SELECT of every bulk_source row;
# WITH_EVIDENCE (yes/no) also stores the precomputed seq, prev_hash and hash.
source_load_sql() {
  local cols="anchor_id, slot, kind, payload, sig, producer"
  [[ $2 == yes ]] && cols+=", seq, prev_hash, hash"
  cat <<SQL
CHECKPOINT;
SELECT clock_timestamp() AS t0 \\gset
BEGIN;
INSERT INTO $1 ($cols) SELECT $cols FROM bulk_source;
COMMIT;
SELECT round(extract(epoch FROM clock_timestamp() - :'t0')::numeric, 4);
SQL
}
# Variants: user_* is the user's table (user_table), loaded as load_sql does (the values computed in
# the statement, the evidence variant storing constants); builtin_* the columns of ledger.records
# (create_table), loaded from bulk_source.
declare -A BULK_TIMES=()
KINDS=(user_plain user_ledger user_evidence user_hand builtin_plain builtin_ledger)
for ((run = 1; run <= BULK_RUNS; run++)); do
  for ((k = 0; k < ${#KINDS[@]}; k++)); do
    variant=${KINDS[$(((k + run - 1) % ${#KINDS[@]}))]}   # rotate the order from run to run
    schema=${variant%%_*} kind=${variant#*_} t=bulk_$variant evidence=no
    psql_ -c "DROP TABLE IF EXISTS $(printf 'bulk_%s, ' "${KINDS[@]}" | sed 's/, $//')" >/dev/null
    if [[ $schema == user ]]; then user_table "$kind" "$t"; else create_table "$kind" "$t"; fi
    if [[ $schema == user ]]; then
      load=user
      [[ $kind == evidence ]] && load=evidence
      secs=$(load_sql "$load" "$t" "$BULK_ROWS" "$BULK_ANCHORS" | psql_ | tail -1)
    else
      [[ $kind == plain ]] && evidence=yes
      secs=$(source_load_sql "$t" "$evidence" | psql_ | tail -1)
    fi
    no_crash "bulk load into $t"
    rows=$(psql_ -c "SELECT count(*) FROM $t")
    [[ $rows == "$BULK_ROWS" ]] || die "$t holds $rows rows, not $BULK_ROWS"
    if ((run == BULK_RUNS)); then
      case $kind in
        ledger) check_ledger "$t" ;;
        hand) check_hand_chain "$t" "$BULK_ROWS" "$BULK_ANCHORS" ;;
      esac
    fi
    BULK_TIMES[$variant]+="$secs "
    log "bulk run $run/$BULK_RUNS: $variant $BULK_ROWS rows in ${secs}s"
  done
done
psql_ -c "DROP TABLE IF EXISTS bulk_source, $(printf 'bulk_%s, ' "${KINDS[@]}" | sed 's/, $//')" >/dev/null
declare -A BULK_BEST=()
for variant in "${KINDS[@]}"; do
  # shellcheck disable=SC2086
  BULK_BEST[$variant]=$(min_of ${BULK_TIMES[$variant]})
done
BULK_LEDGER_RATIO=$(calc "${BULK_BEST[user_ledger]} / ${BULK_BEST[user_plain]}" 2)
BULK_EVIDENCE_RATIO=$(calc "${BULK_BEST[user_evidence]} / ${BULK_BEST[user_plain]}" 2)
BULK_LEDGER_VS_EVIDENCE=$(calc "${BULK_BEST[user_ledger]} / ${BULK_BEST[user_evidence]}" 2)
BULK_HAND_RATIO=$(calc "${BULK_BEST[user_hand]} / ${BULK_BEST[user_plain]}" 2)
BULK_BUILTIN_RATIO=$(calc "${BULK_BEST[builtin_ledger]} / ${BULK_BEST[builtin_plain]}" 2)

# 1b. An idempotent retry: INSERT ... SELECT ... ON CONFLICT DO NOTHING of RETRY_ROWS events over 64
# chains, every tenth already stored (spread through the batch and across the chains), into an event
# table with the ledger and into the same table without it.
# The evidence variant is the ledger's storage without the ledger: the same columns and (stream, seq)
# index that ledger.enable adds, filled with constant values (no trigger, no hashing), so the cost of
# storing the evidence is told apart from the cost of computing it.
EVIDENCE_COLUMNS="seq bigint NOT NULL, prev_hash char(64), hash char(64) NOT NULL"
retry_select() {  # KIND STEP: the events' SELECT
  local extra=""
  if [[ $1 == evidence ]]; then extra=", $(evidence_values i)"; fi
  echo "SELECT i, 's' || (i % 64), 'created', jsonb_build_object('i', i)$extra FROM generate_series(1, $RETRY_ROWS, $2) i"
}
retry_table() {  # KIND NAME [STEP]: a fresh event table holding every STEP-th event (every tenth)
  local columns="id bigint PRIMARY KEY, stream text NOT NULL, type text NOT NULL, data jsonb NOT NULL"
  if [[ $1 == evidence ]]; then columns+=", $EVIDENCE_COLUMNS"; fi
  psql_ -c "DROP TABLE IF EXISTS $2" -c "CREATE TABLE $2 ($columns)"
  if [[ $1 == ledger ]]; then psql_ -c "SELECT ledger.enable('$2', chain_by => 'stream')" >/dev/null; fi
  if [[ $1 == evidence ]]; then psql_ -c "CREATE UNIQUE INDEX ON $2 (stream, seq)"; fi
  psql_ -c "INSERT INTO $2 $(retry_select "$1" "${3:-10}")" -c "VACUUM (ANALYZE) $2" -c "CHECKPOINT" >/dev/null
}
declare -A RETRY_TIMES=()
for ((run = 1; run <= RETRY_RUNS; run++)); do
  for kind in plain ledger evidence; do
    retry_table "$kind" "retry_$kind"
    secs=$(timed_statement "INSERT INTO retry_$kind $(retry_select "$kind" 1) ON CONFLICT DO NOTHING")
    no_crash "the retry into retry_$kind"
    [[ $(psql_ -c "SELECT count(*) FROM retry_$kind") == "$RETRY_ROWS" ]] || die "retry_$kind: not every event stored once"
    RETRY_TIMES[$kind]+="$secs "
    log "retry run $run/$RETRY_RUNS: $kind ${secs}s"
  done
done
[[ $(psql_ -c "SELECT count(*) FROM ledger.verify('retry_ledger')") == 0 ]] || die "retry_ledger does not verify"
psql_ -c "DROP TABLE retry_plain, retry_ledger, retry_evidence" >/dev/null
# shellcheck disable=SC2086
RETRY_PLAIN=$(min_of ${RETRY_TIMES[plain]})
# shellcheck disable=SC2086
RETRY_LEDGER=$(min_of ${RETRY_TIMES[ledger]})
RETRY_RATIO=$(calc "$RETRY_LEDGER / $RETRY_PLAIN" 2)
# shellcheck disable=SC2086
RETRY_EVIDENCE=$(min_of ${RETRY_TIMES[evidence]})
RETRY_EVIDENCE_RATIO=$(calc "$RETRY_EVIDENCE / $RETRY_PLAIN" 2)
RETRY_LEDGER_VS_EVIDENCE=$(calc "$RETRY_LEDGER / $RETRY_EVIDENCE" 2)

# 1c. The same retries from PGBENCH_CLIENTS writers at once: each transaction re-sends a batch of 100
# consecutive events from a random offset, ON CONFLICT DO NOTHING, so batches overlap each other and
# the events already stored. Three variants: (a) the batch in id order, every tenth event stored
# before (so most rows are first deliveries, and two batches can take chain locks in opposite
# orders: a deadlock (40P01) is retried by pgbench (--max-tries), as a consumer would retry it);
# (b) the same batches ordered by stream (the chain column), the order the README recommends;
# (c) in id order into a table already holding every event (pure re-deliveries).
declare -A RETRY_TPS=() RETRY_RETRIED=() RETRY_TPS_BEST=() RETRY_TPS_RATIO=()
RETRY_VARIANTS=(unordered ordered stored)
for variant in "${RETRY_VARIANTS[@]}"; do
  order="" step=10
  if [[ $variant == ordered ]]; then order=" ORDER BY 2, 1"; fi
  if [[ $variant == stored ]]; then step=1; fi
  {
    echo "\\set start random(1, $((RETRY_ROWS - 99)))"
    echo "INSERT INTO retry_KIND SELECT i, 's' || (i % 64), 'created', jsonb_build_object('i', i)" \
         "FROM generate_series(:start, :start + 99) i$order ON CONFLICT DO NOTHING;"
  } >"$WORK/retry_batches_$variant.sql"
  for ((run = 1; run <= RETRY_RUNS; run++)); do
    for kind in plain ledger; do
      retry_table "$kind" "retry_$kind" "$step"
      sed "s/retry_KIND/retry_$kind/" "$WORK/retry_batches_$variant.sql" >"$WORK/retry_batches_$kind.sql"
      out=$WORK/retry_pgbench_$kind.log
      "$PG_BIN/pgbench" -h "$SOCK" -p "$BENCH_PORT" -U postgres -n -M prepared -c "$PGBENCH_CLIENTS" \
        -j "$((PGBENCH_CLIENTS < NPROC ? PGBENCH_CLIENTS : NPROC))" -T "$PGBENCH_SECONDS" --max-tries=1000 \
        -f "$WORK/retry_batches_$kind.sql" postgres >"$out" 2>&1 || { cat "$out" >&2; die "pgbench retries failed: $variant $kind"; }
      cat "$out" >>"$OUT/pgbench.log"
      no_crash "concurrent retries ($variant) into retry_$kind"
      if grep -qiE "aborted|error" "$out"; then cat "$out" >&2; die "pgbench reported errors: retries ($variant) into $kind"; fi
      tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$out")
      [[ -n $tps ]] || { cat "$out" >&2; die "no tps in pgbench output"; }
      RETRY_TPS[$variant.$kind]+="$tps "
      RETRY_RETRIED[$variant.$kind]+="$(sed -n 's/^number of transactions retried: \([0-9]*\).*/\1/p' "$out") "
      log "concurrent retry ($variant) run $run/$RETRY_RUNS: $kind $tps tps"
    done
    [[ $(psql_ -c "SELECT count(*) FROM ledger.verify('retry_ledger')") == 0 ]] || die "retry_ledger does not verify"
  done
  for kind in plain ledger; do
    # shellcheck disable=SC2086
    RETRY_TPS_BEST[$variant.$kind]=$(max_of ${RETRY_TPS[$variant.$kind]})
  done
  RETRY_TPS_RATIO[$variant]=$(calc "${RETRY_TPS_BEST[$variant.ledger]} / ${RETRY_TPS_BEST[$variant.plain]}" 2)
done
psql_ -c "DROP TABLE retry_plain, retry_ledger" >/dev/null

# ------------------------------------------------------------------------------------------------
# 2. pgbench: single-row autocommit INSERTs
# ------------------------------------------------------------------------------------------------
# Every variant runs the same INSERT of the user's columns: plain is the user's table as it was, ledger
# and hand fill seq, prev_hash and hash themselves (user_table).
for chains in random one; do
  if [[ $chains == random ]]; then a="\\set a random(1, $PGBENCH_ANCHORS)"; else a="\\set a 1"; fi
  {
    echo "$a"
    echo "INSERT INTO pgb_KIND (anchor_id, slot, kind, payload, producer)" \
         "VALUES ($(anchor_expr ":a"), 'slot-1', 'payment', jsonb_build_object('a', (:a)::int, 'note', 'payment'), 'bench');"
  } >"$WORK/pgb_$chains.sql"
  for kind in plain ledger hand; do sed "s/pgb_KIND/pgb_$kind/" "$WORK/pgb_$chains.sql" >"$WORK/pgb_${kind}_$chains.sql"; done
done

# run_pgbench KIND CHAINS CLIENTS [async|lookup] -> tps; async: synchronous_commit = off, so no
# commit waits for its WAL flush and the run measures CPU cost alone; lookup: ledger.shared_heads =
# off, so every transaction's append reads its chain's head from the index, as on a server that does
# not preload the library.
run_pgbench() {
  local kind=$1 chains=$2 clients=$3 commit=${4:-sync} options=$PGOPTIONS
  [[ $commit == async ]] && options+=" -c synchronous_commit=off"
  [[ $commit == lookup ]] && options+=" -c ledger.shared_heads=off"
  user_table "$kind" "pgb_$kind"
  psql_ -c "CHECKPOINT" >/dev/null
  timed_pgbench "$kind $chains c$clients $commit" "$WORK/pgb_${kind}_$chains.sql" "$clients" "$options"
  case $kind in
    ledger) check_ledger "pgb_ledger" ;;
    hand) check_hand_chain "pgb_hand" "$(psql_ -c "SELECT count(*) FROM pgb_hand")" 0 ;;
  esac
  echo "$PGB_RUN_TPS"
}

: >"$OUT/pgbench.log"
PGB_CONFIGS=("plain random 1" "ledger random 1" "hand random 1"
             "plain random $PGBENCH_CLIENTS" "ledger random $PGBENCH_CLIENTS" "hand random $PGBENCH_CLIENTS"
             "ledger one $PGBENCH_CLIENTS" "hand one $PGBENCH_CLIENTS"
             "ledger random 1 lookup" "ledger random $PGBENCH_CLIENTS lookup" "ledger one $PGBENCH_CLIENTS lookup"
             "plain random $PGBENCH_CLIENTS async" "ledger random $PGBENCH_CLIENTS async")
pgbench_rounds "" "$PGBENCH_RUNS" run_pgbench "pgbench" "${PGB_CONFIGS[@]}"
psql_ -c "DROP TABLE IF EXISTS pgb_plain, pgb_ledger, pgb_hand" >/dev/null
C=$PGBENCH_CLIENTS
PAIRED_1=$(paired_ratios "ledger random 1" "plain random 1" | paste -sd' ')
PAIRED_C=$(paired_ratios "ledger random $C" "plain random $C" | paste -sd' ')
PGB_R1=$(paired_median "ledger random 1" "plain random 1")
PGB_RC=$(paired_median "ledger random $C" "plain random $C")
PGB_RONE=$(paired_median "ledger one $C" "plain random $C")
PGB_H1=$(paired_median "hand random 1" "plain random 1")
PGB_HC=$(paired_median "hand random $C" "plain random $C")
PGB_HONE=$(paired_median "hand one $C" "plain random $C")
PGB_LH_ONE=$(paired_median "ledger one $C" "hand one $C")
PGB_ASYNC=$(paired_median "ledger random $C async" "plain random $C async")
PGB_L1=$(paired_median "ledger random 1 lookup" "plain random 1")
PGB_LC=$(paired_median "ledger random $C lookup" "plain random $C")
PGB_LONE=$(paired_median "ledger one $C lookup" "plain random $C")
BEST_R1=$(calc "${PGB_BEST[ledger random 1]} / ${PGB_BEST[plain random 1]}" 2)
BEST_RC=$(calc "${PGB_BEST[ledger random $C]} / ${PGB_BEST[plain random $C]}" 2)

# ------------------------------------------------------------------------------------------------
# 3. ledger.verify vs the SHA3 limit and hand-written SQL
# ------------------------------------------------------------------------------------------------
log "loading $VERIFY_ROWS records in $VERIFY_CHAINS chains into a ledger for verify"
create_table ledger verify_ledger
VERIFY_LOAD=$(load_sql ledger verify_ledger "$VERIFY_ROWS" "$VERIFY_CHAINS" | psql_ | tail -1)
no_crash "loading verify_ledger"
psql_ -c "VACUUM (ANALYZE) verify_ledger" -c "CHECKPOINT" >/dev/null
VERIFY_MB=$(psql_ -c "SELECT round(pg_table_size('verify_ledger') / 1048576.0)")
psql_ -c "SELECT count(*) FROM verify_ledger" >/dev/null   # warm the cache

HAND_VERIFY_SQL="SELECT count(*) FILTER (WHERE recomputed IS DISTINCT FROM hash OR prev_hash IS DISTINCT FROM expected_prev)
FROM (SELECT hash, prev_hash,
             lag(hash) OVER (PARTITION BY anchor_id ORDER BY seq) AS expected_prev,
             encode(sha256(convert_to(concat_ws('|', rid, anchor_id, slot, kind, ts, seq, prev_hash,
                                                payload, sig, producer, version), 'UTF8')), 'hex') AS recomputed
      FROM verify_ledger) s"
HAND_VERIFY_PLAN=$(psql_ -c "EXPLAIN (COSTS OFF) $HAND_VERIFY_SQL" | sed 's/^/    /')
log "exporting $LIMIT_SAMPLE canonical records and building bench/sha3_limit"
STEP=$(((VERIFY_ROWS / LIMIT_SAMPLE) > 1 ? VERIFY_ROWS / LIMIT_SAMPLE : 1))
psql_ -c "SELECT encode(ledger.canonical_bytes('verify_ledger', anchor_id::text, seq), 'hex') || ' ' || hash
          FROM verify_ledger WHERE seq % $STEP = 0 ORDER BY anchor_id, seq LIMIT $LIMIT_SAMPLE" \
  >"$WORK/canonical.hex"
SAMPLE_N=$(wc -l <"$WORK/canonical.hex")
((SAMPLE_N > 0)) || die "no canonical records exported"
build_sha3_limit
: >"$OUT/sha3_limit.out"

# Interleaved: ledger.verify, the hand-written SQL, the SHA3 limit (2 passes), VERIFY_RUNS times.
# A CPU-bound run on a shared 2-core machine can be slowed by half by a neighbour, so each variant
# gets several chances at an undisturbed run, and its best counts.
VERIFY_TIMES="" HAND_VERIFY_TIMES="" LIMIT_RATES=""
for ((run = 1; run <= VERIFY_RUNS; run++)); do
  res=$(timed_query "SELECT count(*) FROM ledger.verify('verify_ledger')")
  read -r problems secs <<<"$res"
  no_crash "ledger.verify"
  [[ $problems == 0 ]] || die "ledger.verify reported $problems problems on an intact ledger"
  VERIFY_TIMES+="$secs "
  log "verify run $run/$VERIFY_RUNS: ledger.verify ${secs}s"
  res=$(timed_query "$HAND_VERIFY_SQL")
  read -r _ secs <<<"$res"
  HAND_VERIFY_TIMES+="$secs "
  log "verify run $run/$VERIFY_RUNS: hand-written SQL ${secs}s"
  "$LIMIT_TARGET_DIR/release/sha3_limit" "$WORK/canonical.hex" "$LIMIT_HASHES" 2 >"$WORK/limit.out" \
    || die "sha3_limit failed"
  cat "$WORK/limit.out" >>"$OUT/sha3_limit.out"
  rate=$(sed -n 's/^hashes_per_sec //p' "$WORK/limit.out")
  [[ -n $rate ]] || die "sha3_limit printed no rate"
  LIMIT_RATES+="$rate "
  log "verify run $run/$VERIFY_RUNS: sha3_limit $rate hashes/s"
done
# shellcheck disable=SC2086
VERIFY_BEST=$(min_of $VERIFY_TIMES)
# shellcheck disable=SC2086
HAND_VERIFY_BEST=$(min_of $HAND_VERIFY_TIMES)
VERIFY_RPS=$(calc "$VERIFY_ROWS / $VERIFY_BEST" 0)
HAND_VERIFY_RPS=$(calc "$VERIFY_ROWS / $HAND_VERIFY_BEST" 0)
# shellcheck disable=SC2086
LIMIT_HPS=$(max_of $LIMIT_RATES)
LIMIT_BYTES=$(sed -n 's/^mean_record_bytes //p' "$WORK/limit.out")

VERIFY_LIMIT_RATIO=$(calc "$VERIFY_RPS / $LIMIT_HPS" 2)
VERIFY_HAND_RATIO=$(calc "$VERIFY_RPS / $HAND_VERIFY_RPS" 2)

# 3b. What a dashboard pays: ledger.stats' row for this ledger (heads, newest checkpoints and runs,
# counters) once its chains are checkpointed and verified, against counting its records.
psql_ -c "SELECT count(*) FROM ledger.checkpoint('verify_ledger')" >/dev/null
psql_ -c "SELECT count(*) FROM ledger.verify_all()" >/dev/null
STATS_SQL="SELECT records || '/' || chains || '/' || unanchored_records || '/' || appends FROM ledger.stats WHERE ledger = 'public.verify_ledger'"
STATS_TIMES="" COUNT_TIMES="" STATS_ROW=""
for ((run = 1; run <= STATS_RUNS; run++)); do
  read -r STATS_ROW secs <<<"$(timed_query "$STATS_SQL")"
  STATS_TIMES+="$secs "
  read -r _ secs <<<"$(timed_query "SELECT count(*) FROM verify_ledger")"
  COUNT_TIMES+="$secs "
done
[[ $STATS_ROW == "$VERIFY_ROWS/$VERIFY_CHAINS/0/$VERIFY_ROWS" ]] \
  || die "ledger.stats says records/chains/unanchored/appends $STATS_ROW, expected $VERIFY_ROWS/$VERIFY_CHAINS/0/$VERIFY_ROWS"
# shellcheck disable=SC2086
STATS_BEST=$(min_of $STATS_TIMES)
# shellcheck disable=SC2086
COUNT_BEST=$(min_of $COUNT_TIMES)
STATS_MS=$(calc "$STATS_BEST * 1000" 1)
COUNT_MS=$(calc "$COUNT_BEST * 1000" 1)
STATS_RATIO=$(calc "$STATS_BEST / $COUNT_BEST" 3)

# ------------------------------------------------------------------------------------------------
# 4. Merkle trees and checkpoints
# ------------------------------------------------------------------------------------------------
psql_ -c "DROP TABLE IF EXISTS verify_ledger" >/dev/null   # section 3 is done; keep the cache for this one
CHAIN1=00000000-0000-0000-0000-000000000001               # anchor_expr 1: the one chain of these tables
log "loading $MERKLE_ROWS records in ONE chain into a ledger for the Merkle measurements"
create_table ledger merkle_ledger
MERKLE_LOAD=$(load_sql ledger merkle_ledger "$MERKLE_ROWS" 1 | psql_ | tail -1)
no_crash "loading merkle_ledger"
psql_ -c "VACUUM (ANALYZE) merkle_ledger" -c "CHECKPOINT" >/dev/null
MERKLE_MB=$(psql_ -c "SELECT round(pg_table_size('merkle_ledger') / 1048576.0)")
n=$(psql_ -c "SELECT count(*) FILTER (WHERE anchor_id = '$CHAIN1') || ' ' || max(seq) FROM merkle_ledger")
[[ $n == "$MERKLE_ROWS $MERKLE_ROWS" ]] || die "merkle_ledger: expected one chain of $MERKLE_ROWS records, got (count, max seq) $n"

# (a) merkle_root against the one-core limits. The tool gets exactly the leaves merkle_root uses.
"$PG_BIN/psql" -h "$SOCK" -p "$BENCH_PORT" -U postgres -d postgres -X -q -v ON_ERROR_STOP=1 \
  -c "COPY (SELECT hash FROM merkle_ledger WHERE anchor_id = '$CHAIN1' ORDER BY seq) TO STDOUT" \
  >"$WORK/merkle_leaves.hex" || die "COPY of the record hashes failed"
[[ $(wc -l <"$WORK/merkle_leaves.hex") == "$MERKLE_ROWS" ]] || die "COPY exported the wrong number of hashes"
"$LIMIT_TARGET_DIR/release/sha3_limit" --merkle-selftest >>"$OUT/sha3_limit.out" \
  || die "bench/sha3_limit's Merkle tree does not reproduce the test vectors of docs/FORMAT.md"
MERKLE_TIMES="" MERKLE_LIMIT_RATES="" MERKLE_ROOT="" MERKLE_TOOL_ROOT=""
for ((run = 1; run <= MERKLE_RUNS; run++)); do
  res=$(timed_query "SELECT ledger.merkle_root('merkle_ledger', '$CHAIN1', 1, $MERKLE_ROWS)")
  read -r root secs <<<"$res"
  no_crash "ledger.merkle_root"
  [[ -z $MERKLE_ROOT || $root == "$MERKLE_ROOT" ]] || die "merkle_root changed between runs: $MERKLE_ROOT, $root"
  MERKLE_ROOT=$root
  MERKLE_TIMES+="$secs "
  log "merkle run $run/$MERKLE_RUNS: ledger.merkle_root ${secs}s"
  "$LIMIT_TARGET_DIR/release/sha3_limit" --merkle "$WORK/merkle_leaves.hex" 2 >"$WORK/merkle_limit.out" \
    || die "sha3_limit --merkle failed"
  cat "$WORK/merkle_limit.out" >>"$OUT/sha3_limit.out"
  rate=$(sed -n 's/^leaves_per_sec //p' "$WORK/merkle_limit.out")
  MERKLE_TOOL_ROOT=$(sed -n 's/^root //p' "$WORK/merkle_limit.out")
  [[ -n $rate ]] || die "sha3_limit --merkle printed no rate"
  MERKLE_LIMIT_RATES+="$rate "
  log "merkle run $run/$MERKLE_RUNS: sha3_limit --merkle $rate leaves/s"
done
[[ $MERKLE_TOOL_ROOT == "$MERKLE_ROOT" ]] \
  || die "roots differ: ledger.merkle_root $MERKLE_ROOT, bench/sha3_limit --merkle $MERKLE_TOOL_ROOT"
# shellcheck disable=SC2086
MERKLE_BEST=$(min_of $MERKLE_TIMES)
MERKLE_RPS=$(calc "$MERKLE_ROWS / $MERKLE_BEST" 0)
# shellcheck disable=SC2086
MERKLE_LIMIT_LPS=$(max_of $MERKLE_LIMIT_RATES)
MERKLE_VS_SHA3=$(calc "$MERKLE_RPS / $LIMIT_HPS" 2)
MERKLE_VS_MLIMIT=$(calc "$MERKLE_RPS / $MERKLE_LIMIT_LPS" 2)

# (b) checkpoint cost: CP_NEW new records on the big chain vs on a chain of CP_NEW records.
# timed_checkpoint TABLE -> "cid record_count seconds"
timed_checkpoint() {
  psql_ <<SQL | tail -1
CHECKPOINT;
SELECT clock_timestamp() AS t0 \\gset
SELECT * FROM ledger.checkpoint('$1', '$CHAIN1') \\gset cp_
SELECT :'cp_cid' || ' ' || :'cp_record_count' || ' ' || round(extract(epoch FROM clock_timestamp() - :'t0')::numeric, 4);
SQL
}
append_records() { load_sql ledger "$1" "$2" 1 | psql_ >/dev/null; no_crash "appending to $1"; }
create_table ledger cp_small
append_records cp_small "$CP_NEW"
psql_ -c "VACUUM (ANALYZE) cp_small" >/dev/null
read -r CID_BIG n CP_FIRST_BIG <<<"$(timed_checkpoint merkle_ledger)"
[[ $n == "$MERKLE_ROWS" ]] || die "the first checkpoint of merkle_ledger covers $n records"
read -r _ n CP_FIRST_SMALL <<<"$(timed_checkpoint cp_small)"
[[ $n == "$CP_NEW" ]] || die "the first checkpoint of cp_small covers $n records"
no_crash "the first checkpoints"
CP_ROOT=$(psql_ -c "SELECT merkle_root FROM ledger.checkpoints WHERE cid = '$CID_BIG'")
[[ $CP_ROOT == "$MERKLE_ROOT" ]] || die "the checkpoint's root $CP_ROOT is not merkle_root's $MERKLE_ROOT"
log "first checkpoints: $MERKLE_ROWS records ${CP_FIRST_BIG}s, $CP_NEW records ${CP_FIRST_SMALL}s"
CP_BIG_TIMES="" CP_SMALL_TIMES="" CID_LAST=""
for ((run = 1; run <= CP_RUNS; run++)); do
  for t in merkle_ledger cp_small; do
    append_records "$t" "$CP_NEW"
    read -r cid n secs <<<"$(timed_checkpoint "$t")"
    no_crash "ledger.checkpoint($t)"
    if [[ $t == merkle_ledger ]]; then
      [[ $n == $((MERKLE_ROWS + run * CP_NEW)) ]] || die "checkpoint of $t covers $n records"
      CP_BIG_TIMES+="$secs " CID_LAST=$cid
    else
      [[ $n == $(((run + 1) * CP_NEW)) ]] || die "checkpoint of $t covers $n records"
      CP_SMALL_TIMES+="$secs "
    fi
    log "checkpoint run $run/$CP_RUNS: $t ($n records, $CP_NEW new) ${secs}s"
  done
done
# shellcheck disable=SC2086
CP_BIG_BEST=$(min_of $CP_BIG_TIMES)
# shellcheck disable=SC2086
CP_SMALL_BEST=$(min_of $CP_SMALL_TIMES)
CP_RATIO=$(calc "$CP_BIG_BEST / $CP_SMALL_BEST" 2)
CP_LAST_N=$((MERKLE_ROWS + CP_RUNS * CP_NEW))
n=$(psql_ -c "SELECT count(*) FILTER (WHERE ok IS FALSE) FROM ledger.verify_checkpoint('$CID_LAST')")
[[ $n == 0 ]] || die "verify_checkpoint of the newest checkpoint of merkle_ledger fails $n check(s)"

# (c) proofs on the MERKLE_ROWS-record checkpoint, and verify_checkpoint of it.
PROOF_SEQ=$((MERKLE_ROWS / 2 + 1))
LEAF_HASH=$(psql_ -c "SELECT hash FROM merkle_ledger WHERE anchor_id = '$CHAIN1' AND seq = $PROOF_SEQ")
n=$(psql_ -c "SELECT ledger.verify_inclusion('$LEAF_HASH', ledger.inclusion_proof('$CID_BIG', $PROOF_SEQ), '$MERKLE_ROOT')
               AND ledger.verify_consistency(ledger.consistency_proof('$CID_BIG', '$CID_LAST'))")
[[ $n == t ]] || die "the inclusion or consistency proof does not verify"
INCL_TIMES="" CONS_TIMES="" VCP_TIMES=""
for ((run = 1; run <= PROOF_RUNS; run++)); do
  read -r _ secs <<<"$(timed_query "SELECT length(ledger.inclusion_proof('$CID_BIG', $PROOF_SEQ)::text)")"
  INCL_TIMES+="$(calc "$secs * 1000" 1) "
  read -r _ secs <<<"$(timed_query "SELECT length(ledger.consistency_proof('$CID_BIG', '$CID_LAST')::text)")"
  CONS_TIMES+="$(calc "$secs * 1000" 1) "
  read -r n secs <<<"$(timed_query "SELECT count(*) FILTER (WHERE ok IS FALSE) FROM ledger.verify_checkpoint('$CID_BIG')")"
  [[ $n == 0 ]] || die "verify_checkpoint of the $MERKLE_ROWS-record checkpoint fails $n check(s)"
  VCP_TIMES+="$(calc "$secs * 1000" 1) "
  no_crash "proofs"
  log "proof run $run/$PROOF_RUNS: inclusion, consistency, verify_checkpoint (ms): $(echo "$INCL_TIMES" | awk '{print $NF}'), $(echo "$CONS_TIMES" | awk '{print $NF}'), $(echo "$VCP_TIMES" | awk '{print $NF}')"
done
# shellcheck disable=SC2086
INCL_BEST=$(min_of $INCL_TIMES)
# shellcheck disable=SC2086
CONS_BEST=$(min_of $CONS_TIMES)
# shellcheck disable=SC2086
VCP_BEST=$(min_of $VCP_TIMES)
# ------------------------------------------------------------------------------------------------
# 5. History-tracked tables
# ------------------------------------------------------------------------------------------------
# Keys per transaction when filling a tracked table: every key's chain lock is held to the end of
# the transaction, and the lock table has room for max_locks_per_transaction (64) x max_connections
# (100) locks, so one statement writing many thousands of keys fails with "out of shared memory"
# (so does ledger.enable_history of a table already holding that many rows). The tables are
# therefore tracked while empty and filled in batches; every variant the same way.
HIST_BATCH=1000
HIST_COLUMNS="id bigint PRIMARY KEY, owner text NOT NULL, balance numeric NOT NULL, status text NOT NULL,
              updated_at timestamptz NOT NULL DEFAULT now()"
# hist_table KIND NAME: an empty accounts table, untracked, tracked or with the hand-written history.
hist_table() {
  local kind=$1 t=$2
  {
    echo "DROP TABLE IF EXISTS $t, ${t}_history;"
    echo "CREATE TABLE $t ($HIST_COLUMNS);"
    case $kind in
      untracked) ;;
      tracked) echo "SELECT ledger.enable_history('$t');" ;;
      hand)
        # temporal_tables' shape (an AFTER row trigger writing the version to a history table) plus
        # a SHA-256 chain per key: the previous version's hash by an index lookup on (key, seq).
        # Writers of one row are ordered by its row lock (held by the UPDATE until commit), so
        # under READ COMMITTED the lookup sees the previous writer's version.
        cat <<SQL
CREATE TABLE ${t}_history (
    key       bigint NOT NULL,
    seq       bigint NOT NULL,
    op        text NOT NULL,
    at        timestamptz NOT NULL,
    role      text NOT NULL,
    txid      bigint NOT NULL,
    "row"     jsonb,
    prev_hash char(64),
    hash      char(64) NOT NULL,
    PRIMARY KEY (key, seq)
);
CREATE OR REPLACE FUNCTION ${t}_version() RETURNS trigger LANGUAGE plpgsql AS \$fn\$
DECLARE
  k         bigint;
  r         jsonb;
  head_seq  bigint;
  head_hash char(64);
  v_seq     bigint;
  v_op      text := lower(TG_OP);
BEGIN
  IF TG_OP = 'DELETE' THEN k := OLD.id; ELSE k := NEW.id; r := to_jsonb(NEW); END IF;
  SELECT seq, hash INTO head_seq, head_hash FROM ${t}_history
   WHERE key = k ORDER BY seq DESC LIMIT 1;
  v_seq := coalesce(head_seq, 0) + 1;
  INSERT INTO ${t}_history VALUES (k, v_seq, v_op, now(), current_user, txid_current(), r, head_hash,
    encode(digest(concat_ws('|', k, v_seq, v_op, now(), current_user, txid_current(), r, head_hash), 'sha256'), 'hex'));
  RETURN NULL;
END
\$fn\$;
CREATE TRIGGER zz_hand_history AFTER INSERT OR UPDATE OR DELETE ON $t FOR EACH ROW EXECUTE FUNCTION ${t}_version();
SQL
        ;;
      *) die "unknown history table kind $kind" ;;
    esac
  } | psql_ >/dev/null
}
# hist_fill_sql TABLE FIRST LAST VERSIONS: psql input inserting keys FIRST..LAST, then updating each
# VERSIONS - 1 times, HIST_BATCH keys per transaction.
hist_fill_sql() {
  local t=$1 first=$2 last=$3 versions=$4
  cat <<SQL
SELECT format('INSERT INTO $t SELECT i, ''owner-'' || i, 1000, ''open'', now() FROM generate_series(%s, %s) i',
              b, least(b + $HIST_BATCH - 1, $last))
  FROM generate_series($first, $last, $HIST_BATCH) b \\gexec
SELECT format('UPDATE $t SET balance = balance + 1, updated_at = now() WHERE id BETWEEN %s AND %s',
              b, least(b + $HIST_BATCH - 1, $last))
  FROM generate_series(2, $versions) v, generate_series($first, $last, $HIST_BATCH) b ORDER BY v, b \\gexec
SQL
}
# The hand-written chains must link up: seq 1 has no predecessor, every later one its predecessor's hash.
check_hand_history() {
  local t=$1 got want
  read -r got want <<<"$(psql_ -F ' ' -c "SELECT count(*) FILTER (WHERE (seq = 1 AND prev_hash IS NULL)
                                                   OR (seq = lag_seq + 1 AND prev_hash = lag_hash)), count(*)
                  FROM (SELECT seq, prev_hash, lag(hash) OVER w AS lag_hash, lag(seq) OVER w AS lag_seq
                        FROM $t WINDOW w AS (PARTITION BY key ORDER BY seq)) s")"
  [[ $got == "$want" ]] || die "hand-written history $t is broken: $got of $want versions link up"
}

# (a) pgbench: single-row autocommit UPDATEs of a random row. One table per variant, filled once
# (HIST_ROWS rows, one version each), updated by every round.
log "filling three $HIST_ROWS-row accounts tables (untracked, tracked, hand-written history)"
HIST_KINDS=(untracked tracked hand)
for kind in "${HIST_KINDS[@]}"; do
  hist_table "$kind" "hist_$kind"
  hist_fill_sql "hist_$kind" 1 "$HIST_ROWS" 1 | psql_ >/dev/null
  no_crash "filling hist_$kind"
  psql_ -c "VACUUM (ANALYZE) hist_$kind" >/dev/null
  [[ $(psql_ -c "SELECT count(*) FROM hist_$kind") == "$HIST_ROWS" ]] || die "hist_$kind does not hold $HIST_ROWS rows"
  {
    echo "\\set id random(1, $HIST_ROWS)"
    echo "UPDATE hist_$kind SET balance = balance + 1, updated_at = now() WHERE id = :id;"
  } >"$WORK/hist_$kind.sql"
done
psql_ -c "VACUUM (ANALYZE) hist_tracked_history" -c "VACUUM (ANALYZE) hist_hand_history" >/dev/null

# hist_pgbench KIND CLIENTS -> tps
hist_pgbench() {
  local kind=$1 clients=$2
  psql_ -c "CHECKPOINT" >/dev/null
  timed_pgbench "hist $kind c$clients" "$WORK/hist_$kind.sql" "$clients"
  echo "$PGB_RUN_TPS"
}
HIST_CONFIGS=("untracked 1" "tracked 1" "hand 1"
              "untracked $PGBENCH_CLIENTS" "tracked $PGBENCH_CLIENTS" "hand $PGBENCH_CLIENTS")
pgbench_rounds hist "$HIST_RUNS" hist_pgbench "history pgbench" "${HIST_CONFIGS[@]}"
# Every UPDATE was recorded: the tracked table verifies (its chains and the table against their
# replay), the hand-written chains link up, and both histories hold one version per row change.
check_ledger hist_tracked
check_hand_history hist_hand_history
HIST_UPDATES=""
for kind in tracked hand; do
  n=$(psql_ -c "SELECT (SELECT count(*) FROM hist_${kind}_history) - $HIST_ROWS")
  HIST_UPDATES+="$n "
done
no_crash "the history pgbench runs"
psql_ -c "DROP TABLE hist_untracked, hist_tracked, hist_tracked_history, hist_hand, hist_hand_history" >/dev/null
HIST_R1=$(paired_median "hist tracked 1" "hist untracked 1")
HIST_RC=$(paired_median "hist tracked $C" "hist untracked $C")
HIST_H1=$(paired_median "hist hand 1" "hist untracked 1")
HIST_HC=$(paired_median "hist hand $C" "hist untracked $C")
HIST_TH1=$(paired_median "hist tracked 1" "hist hand 1")
HIST_THC=$(paired_median "hist tracked $C" "hist hand $C")
HIST_PAIRED_1=$(paired_ratios "hist tracked 1" "hist untracked 1" | paste -sd' ')
HIST_PAIRED_C=$(paired_ratios "hist tracked $C" "hist untracked $C" | paste -sd' ')

# (b) ledger.verify of a tracked table of HIST_VERIFY_ROWS rows, HIST_VERSIONS versions each, filled
# by NPROC sessions at once on disjoint key ranges.
HIST_VERSIONS_N=$((HIST_VERIFY_ROWS * HIST_VERSIONS))
log "filling a tracked table of $HIST_VERIFY_ROWS rows with $HIST_VERSIONS versions each ($NPROC sessions)"
hist_table tracked hist_verify
t0=$(date +%s.%N)
pids=()
for ((s = 0; s < NPROC; s++)); do
  first=$((s * HIST_VERIFY_ROWS / NPROC + 1)) last=$(((s + 1) * HIST_VERIFY_ROWS / NPROC))
  ((first <= last)) || continue
  hist_fill_sql hist_verify "$first" "$last" "$HIST_VERSIONS" | psql_ >/dev/null &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || die "filling hist_verify failed"; done
HIST_VERIFY_LOAD=$(calc "$(date +%s.%N) - $t0" 1)
no_crash "filling hist_verify"
psql_ -c "VACUUM (ANALYZE) hist_verify" -c "VACUUM (ANALYZE) hist_verify_history" -c "CHECKPOINT" >/dev/null
n=$(psql_ -c "SELECT count(*) FROM hist_verify_history")
[[ $n == "$HIST_VERSIONS_N" ]] || die "hist_verify_history holds $n versions, not $HIST_VERSIONS_N"
HIST_VERIFY_MB=$(psql_ -c "SELECT round((pg_table_size('hist_verify') + pg_table_size('hist_verify_history')) / 1048576.0)")
HIST_VERIFY_TIMES="" HIST_CHAINS_TIMES=""
for ((run = 1; run <= HIST_VERIFY_RUNS; run++)); do
  read -r problems secs <<<"$(timed_query "SELECT count(*) FROM ledger.verify('hist_verify')")"
  no_crash "ledger.verify of a tracked table"
  [[ $problems == 0 ]] || die "ledger.verify('hist_verify') reported $problems problems"
  HIST_VERIFY_TIMES+="$secs "
  log "history verify run $run/$HIST_VERIFY_RUNS: ledger.verify(tracked table) ${secs}s"
  read -r problems secs <<<"$(timed_query "SELECT count(*) FROM ledger.verify('hist_verify_history')")"
  [[ $problems == 0 ]] || die "ledger.verify('hist_verify_history') reported $problems problems"
  HIST_CHAINS_TIMES+="$secs "
  log "history verify run $run/$HIST_VERIFY_RUNS: ledger.verify(its history ledger) ${secs}s"
done
psql_ -c "DROP TABLE hist_verify, hist_verify_history" >/dev/null
# shellcheck disable=SC2086
HIST_VERIFY_RPS=$(calc "$HIST_VERSIONS_N / $(min_of $HIST_VERIFY_TIMES)" 0)
# shellcheck disable=SC2086
HIST_CHAINS_RPS=$(calc "$HIST_VERSIONS_N / $(min_of $HIST_CHAINS_TIMES)" 0)
HIST_VERIFY_LIMIT=$(calc "$HIST_VERIFY_RPS / $LIMIT_HPS" 2)
HIST_CHAINS_LIMIT=$(calc "$HIST_CHAINS_RPS / $LIMIT_HPS" 2)
fi  # sections 1 to 5

# Section 6 (not indented) runs in a full run, after sections 1 to 5, and alone (BENCH_ONLY=6).
if [[ -z $ONLY || $ONLY == 6 ]]; then
# ------------------------------------------------------------------------------------------------
# 6. Retention: ledger.prune against a plain DELETE, the space it frees, verify before and after
# ------------------------------------------------------------------------------------------------
RET_STARTED=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
RET_T0=$(date +%s)
RET_HALF=$((RET_ROWS / 2))
RET_PER_CHAIN=$((RET_HALF / RET_CHAINS))   # old records per chain: the prune removes its seqs 1 to this
RET_KEEP="7 days"
RET_CUTOFF="now() - interval '$RET_KEEP'"  # what the plain DELETE removes; the prune's own cutoff
RET_NOW=$(psql_ -c "SELECT now()")         # every record's at, in both tables, is relative to this
# ret_table KIND NAME: the user's table (section 1's columns with a timestamptz at in place of ts,
# its primary key and an index on (anchor_id, at)); the ledger variant then gets ledger.enable (seq,
# prev_hash, hash, the unique (anchor_id, seq) index, the triggers) and the retention.
ret_table() {
  {
    echo "DROP TABLE IF EXISTS $2;"
    echo "CREATE TABLE $2 (rid uuid PRIMARY KEY, anchor_id uuid NOT NULL, slot text, kind text,"
    echo "  at timestamptz NOT NULL, payload jsonb, sig bytea, producer text, version text DEFAULT 'v1');"
    echo "CREATE INDEX ON $2 (anchor_id, at);"
    if [[ $1 == ledger ]]; then
      echo "SELECT ledger.enable('$2', 'anchor_id');"
      echo "SELECT ledger.set_retention('$2', '$RET_KEEP', 'at');"
    fi
  } | psql_ >/dev/null
}
# ret_load TABLE FIRST LAST -> seconds: records FIRST..LAST in one INSERT ... SELECT, in the order of
# i, chain (i - 1) % RET_CHAINS + 1: the first RET_HALF, the older half of every chain, are 30 days
# old, the others 1 day (plus i ms, so no two are equal). The same rows for both tables.
ret_load() {
  psql_ -c "CHECKPOINT" >/dev/null
  timed_statement "INSERT INTO $1 (rid, anchor_id, slot, kind, at, payload, sig, producer)
SELECT md5(i::text)::uuid, $(anchor_expr "(i - 1) % $RET_CHAINS + 1"), 'slot-' || (i % 10), 'payment',
       '$RET_NOW'::timestamptz - CASE WHEN i <= $RET_HALF THEN interval '30 days' ELSE interval '1 day' END
         + i * interval '1 ms',
       jsonb_build_object('i', i, 'note', 'payment ' || i), decode(md5(i::text), 'hex'), 'bench'
FROM generate_series($2, $3) AS i"
}
# ret_sizes STAGE LEDGER PLAIN: the bytes of both tables (pg_table_size), each of their indexes, their
# indexes' total and ledger.pruned (pg_total_relation_size) as RET_SIZE[STAGE key]; RET_SIZE_KEYS
# lists the keys (kind:what:name) in the report's order.
declare -A RET_SIZE=()
RET_SIZE_KEYS=()
RET_STAGES=(before pruned vacuumed refilled)
ret_sizes() {
  local stage=$1 out key bytes
  out=$(psql_ -c "SELECT k || '|' || b FROM (
      SELECT 1 AS o, 'ledger:table:$2' AS k, pg_table_size('$2') AS b
      UNION ALL SELECT 2, 'ledger:index:' || indexrelid::regclass, pg_relation_size(indexrelid)
                FROM pg_index WHERE indrelid = '$2'::regclass
      UNION ALL SELECT 3, 'ledger:indexes:', pg_indexes_size('$2')
      UNION ALL SELECT 4, 'ledger:pruned:ledger.pruned', pg_total_relation_size('ledger.pruned')
      UNION ALL SELECT 5, 'plain:table:$3', pg_table_size('$3')
      UNION ALL SELECT 6, 'plain:index:' || indexrelid::regclass, pg_relation_size(indexrelid)
                FROM pg_index WHERE indrelid = '$3'::regclass
      UNION ALL SELECT 7, 'plain:indexes:', pg_indexes_size('$3')) s ORDER BY o, k")
  RET_SIZE_KEYS=()
  while IFS='|' read -r key bytes; do
    RET_SIZE[$stage $key]=$bytes
    RET_SIZE_KEYS+=("$key")
  done <<<"$out"
}
# ret_verify TABLE WHEN -> the seconds of RET_VERIFY_RUNS runs of ledger.verify; each must find nothing.
ret_verify() {
  local times="" problems secs r
  for ((r = 1; r <= RET_VERIFY_RUNS; r++)); do
    read -r problems secs <<<"$(timed_query "SELECT count(*) FROM ledger.verify('$1')")"
    no_crash "ledger.verify('$1') $2"
    [[ $problems == 0 ]] || die "ledger.verify('$1') $2 reports $problems problems"
    times+="$secs "
    log "retention: verify $2, run $r/$RET_VERIFY_RUNS: ${secs}s"
  done
  echo "$times"
}
# ret_check TABLE ROWS OLD: the table holds ROWS rows, OLD of them older than the retention.
ret_check() {
  local got
  got=$(psql_ -c "SELECT count(*) || '/' || count(*) FILTER (WHERE at < $RET_CUTOFF) FROM $1")
  [[ $got == "$2/$3" ]] || die "$1 holds (rows/old rows) $got, expected $2/$3"
}

RET_PRUNE_TIMES="" RET_DELETE_TIMES="" RET_LOAD_TIMES="" RET_PLAIN_LOAD_TIMES="" RET_CP_PRUNE_TIMES=""
for ((run = 1; run <= RET_RUNS; run++)); do
  # A new name each round: ledger.pruned keeps a dropped ledger's hashes under its name, and a new
  # ledger of that name would start its chains after them.
  RL=ret_ledger_$run RP=ret_plain_$run RC=ret_checkpointed_$run
  log "retention round $run/$RET_RUNS: loading $RET_ROWS records ($RET_CHAINS chains) into $RL, $RC and $RP"
  ret_table ledger "$RL"
  ret_table ledger "$RC"
  ret_table plain "$RP"
  secs=$(ret_load "$RL" 1 "$RET_ROWS")
  no_crash "loading $RL"
  RET_LOAD_TIMES+="$secs "
  ret_load "$RC" 1 "$RET_ROWS" >/dev/null
  secs=$(ret_load "$RP" 1 "$RET_ROWS")
  RET_PLAIN_LOAD_TIMES+="$secs "
  # $RC as the scheduled ledger.checkpoint_all keeps a ledger: every chain checkpointed already.
  psql_ -c "SELECT count(*) FROM ledger.checkpoint('$RC')" >/dev/null
  psql_ -c "VACUUM (ANALYZE) $RL" -c "VACUUM (ANALYZE) $RC" -c "VACUUM (ANALYZE) $RP" -c "CHECKPOINT" >/dev/null
  ret_check "$RL" "$RET_ROWS" "$RET_HALF"
  ret_check "$RP" "$RET_ROWS" "$RET_HALF"
  # Every chain: seqs 1 to RET_PER_CHAIN old, the next RET_PER_CHAIN new.
  n=$(psql_ -c "SELECT count(*) FROM (SELECT anchor_id FROM $RL GROUP BY 1
                 HAVING max(seq) FILTER (WHERE at < $RET_CUTOFF) = $RET_PER_CHAIN
                    AND min(seq) FILTER (WHERE at >= $RET_CUTOFF) = $RET_PER_CHAIN + 1
                    AND max(seq) = 2 * $RET_PER_CHAIN) s")
  [[ $n == "$RET_CHAINS" ]] || die "$RL: $n of $RET_CHAINS chains have their $RET_PER_CHAIN old records first"
  if ((run == 1)); then
    RET_MB=$(psql_ -c "SELECT round(pg_table_size('$RL') / 1048576.0)")
    ret_sizes before "$RL" "$RP"
    RET_VERIFY_BEFORE=$(ret_verify "$RL" "before the prune")
  fi
  # The prunes and the DELETE, each in autocommit after a CHECKPOINT; every other round plain first.
  order=(ledger checkpointed plain)
  ((run % 2 == 1)) || order=(plain checkpointed ledger)
  for kind in "${order[@]}"; do
    psql_ -c "CHECKPOINT" >/dev/null
    if [[ $kind == checkpointed ]]; then
      read -r got secs <<<"$(timed_query "SELECT count(*) || '/' || sum(pruned) FROM ledger.prune('$RC')")"
      [[ $got == "$RET_CHAINS/$RET_HALF" ]] || die "ledger.prune('$RC') returned (chains/pruned) $got, expected $RET_CHAINS/$RET_HALF"
      RET_CP_PRUNE_TIMES+="$secs "
      log "retention round $run/$RET_RUNS: ledger.prune of $RET_HALF checkpointed records ${secs}s"
    elif [[ $kind == ledger ]]; then
      read -r got secs <<<"$(timed_query "SELECT count(*) || '/' || sum(pruned) || '/' || min(through_seq) || '/' || max(through_seq) FROM ledger.prune('$RL')")"
      no_crash "ledger.prune('$RL')"
      [[ $got == "$RET_CHAINS/$RET_HALF/$RET_PER_CHAIN/$RET_PER_CHAIN" ]] \
        || die "ledger.prune('$RL') returned (chains/pruned/min through/max through) $got, expected $RET_CHAINS/$RET_HALF/$RET_PER_CHAIN/$RET_PER_CHAIN"
      RET_PRUNE_TIMES+="$secs "
      log "retention round $run/$RET_RUNS: ledger.prune of $RET_HALF records ${secs}s"
    else
      secs=$(timed_statement "DELETE FROM $RP WHERE at < $RET_CUTOFF")
      RET_DELETE_TIMES+="$secs "
      log "retention round $run/$RET_RUNS: plain DELETE of $RET_HALF rows ${secs}s"
    fi
  done
  ret_check "$RL" "$RET_HALF" 0
  ret_check "$RP" "$RET_HALF" 0
  if ((run == 1)); then
    ret_sizes pruned "$RL" "$RP"
    # What the prune kept and made: the hashes (runs of up to 4096), a checkpoint of each chain.
    read -r RET_KEPT_ROWS RET_KEPT_RECORDS RET_KEPT_BYTES <<<"$(psql_ -F ' ' -c "SELECT count(*), sum(last_seq - first_seq + 1),
        sum(octet_length(hashes)) FROM ledger.pruned WHERE ledger = 'public.$RL'")"
    [[ $RET_KEPT_RECORDS == "$RET_HALF" && $RET_KEPT_BYTES == $((32 * RET_HALF)) ]] \
      || die "ledger.pruned keeps $RET_KEPT_RECORDS records in $RET_KEPT_BYTES bytes, expected $RET_HALF in $((32 * RET_HALF))"
    read -r RET_CPS RET_CP_RECORDS <<<"$(psql_ -F ' ' -c "SELECT count(*), coalesce(sum(record_count), 0)
        FROM ledger.checkpoints WHERE ledger = 'public.$RL'")"
    RET_VERIFY_PRUNED=$(ret_verify "$RL" "after the prune")
    # VERBOSE: it reports, per index, the pages it deleted and how many of them are reusable yet.
    RET_VACUUM_LEDGER=$(timed_statement "VACUUM (VERBOSE) $RL" 2>"$WORK/ret_vacuum.log") \
      || { cat "$WORK/ret_vacuum.log" >&2; die "VACUUM of $RL failed"; }
    RET_VACUUM_PLAIN=$(timed_statement "VACUUM (VERBOSE) $RP" 2>>"$WORK/ret_vacuum.log") \
      || { cat "$WORK/ret_vacuum.log" >&2; die "VACUUM of $RP failed"; }
    cat "$WORK/ret_vacuum.log" >"$OUT/retention_vacuum.log"
    RET_VACUUM_INDEXES=$(sed -n 's/^index "\(ret_[^"]*\)": pages: [0-9]* in total, \([0-9]*\) newly deleted, [0-9]* currently deleted, \([0-9]*\) reusable$/`\1` \2 deleted, \3 reusable/p' \
                           "$WORK/ret_vacuum.log" | paste -sd ';' | sed 's/;/; /g')
    [[ -n $RET_VACUUM_INDEXES ]] || die "VACUUM (VERBOSE) reported no index of $RL or $RP (see $OUT/retention_vacuum.log)"
    log "retention: VACUUM ${RET_VACUUM_LEDGER}s (ledger), ${RET_VACUUM_PLAIN}s (plain)"
    ret_sizes vacuumed "$RL" "$RP"
    RET_VERIFY_VACUUMED=$(ret_verify "$RL" "after the VACUUM")
    # The space is reusable: RET_HALF more records (new ones) into each.
    RET_REFILL_LEDGER=$(ret_load "$RL" $((RET_ROWS + 1)) $((RET_ROWS + RET_HALF)))
    no_crash "inserting into $RL after the prune"
    RET_REFILL_PLAIN=$(ret_load "$RP" $((RET_ROWS + 1)) $((RET_ROWS + RET_HALF)))
    log "retention: $RET_HALF more records ${RET_REFILL_LEDGER}s (ledger), ${RET_REFILL_PLAIN}s (plain)"
    ret_sizes refilled "$RL" "$RP"
    ret_check "$RL" "$RET_ROWS" 0
    ret_check "$RP" "$RET_ROWS" 0
    check_ledger "$RL"
  fi
  psql_ -c "DROP TABLE $RL, $RC, $RP" >/dev/null
done
# shellcheck disable=SC2086
RET_PRUNE_BEST=$(min_of $RET_PRUNE_TIMES)
# shellcheck disable=SC2086
RET_DELETE_BEST=$(min_of $RET_DELETE_TIMES)
RET_RATIO=$(calc "$RET_PRUNE_BEST / $RET_DELETE_BEST" 2)
RET_PRUNE_RPS=$(calc "$RET_HALF / $RET_PRUNE_BEST" 0)
# shellcheck disable=SC2086
RET_CP_PRUNE_BEST=$(min_of $RET_CP_PRUNE_TIMES)
RET_CP_RATIO=$(calc "$RET_CP_PRUNE_BEST / $RET_DELETE_BEST" 2)
RET_CP_PRUNE_RPS=$(calc "$RET_HALF / $RET_CP_PRUNE_BEST" 0)
RET_DELETE_RPS=$(calc "$RET_HALF / $RET_DELETE_BEST" 0)
# shellcheck disable=SC2086
RET_LOAD_BEST=$(min_of $RET_LOAD_TIMES)
# shellcheck disable=SC2086
RET_PLAIN_LOAD_BEST=$(min_of $RET_PLAIN_LOAD_TIMES)
RET_REFILL_RATIO=$(calc "$RET_REFILL_LEDGER / $RET_REFILL_PLAIN" 2)
# shellcheck disable=SC2086
RET_VB=$(min_of $RET_VERIFY_BEFORE)
# shellcheck disable=SC2086
RET_VP=$(min_of $RET_VERIFY_PRUNED)
# shellcheck disable=SC2086
RET_VV=$(min_of $RET_VERIFY_VACUUMED)
RET_VB_RPS=$(calc "$RET_ROWS / $RET_VB" 0)
RET_VP_RPS=$(calc "$RET_HALF / $RET_VP" 0)
RET_VV_RPS=$(calc "$RET_HALF / $RET_VV" 0)
mb() { calc "$1 / 1048576" 1; }
ret_mb() { mb "${RET_SIZE[$1 $2]}"; }   # STAGE KEY -> MB
# ret_growth KEY -> "MB (percent)": what inserting RET_HALF records after the VACUUM added;
# ret_growth_pct KEY -> the percent alone.
ret_growth_pct() { calc "100 * (${RET_SIZE[refilled $1]} - ${RET_SIZE[vacuumed $1]}) / ${RET_SIZE[vacuumed $1]}" 1; }
ret_growth() {
  echo "$(calc "(${RET_SIZE[refilled $1]} - ${RET_SIZE[vacuumed $1]}) / 1048576" 1) MB ($(ret_growth_pct "$1") %)"
}
RET_KEY_LT="ledger:table:ret_ledger_1" RET_KEY_LI="ledger:indexes:" RET_KEY_PT="plain:table:ret_plain_1" RET_KEY_PI="plain:indexes:"
RET_LEDGER_GROWTH=$(ret_growth "$RET_KEY_LT")
RET_PLAIN_GROWTH=$(ret_growth "$RET_KEY_PT")
RET_LEDGER_IGROWTH=$(ret_growth "$RET_KEY_LI")
RET_PLAIN_IGROWTH=$(ret_growth "$RET_KEY_PI")
RET_LEDGER_GROWTH_PCT=$(ret_growth_pct "$RET_KEY_LT")
RET_PLAIN_GROWTH_PCT=$(ret_growth_pct "$RET_KEY_PT")
RET_FINISHED=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
RET_MINUTES=$(calc "($(date +%s) - $RET_T0) / 60" 1)
fi  # section 6

# Section 7 (not indented) runs in a full run, after section 6, and alone (BENCH_ONLY=7).
if [[ -z $ONLY || $ONLY == 7 ]]; then
# ------------------------------------------------------------------------------------------------
# 7. Appends on a partitioned ledger, against the same ledger unpartitioned
# ------------------------------------------------------------------------------------------------
PART_STARTED=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
PART_T0=$(date +%s)
PART_FUTURE=3   # empty partitions after the current month's, as pg_partman's premake keeps them
PART_CHAINS=64
PART_KINDS=(plain plain_part ledger ledger_part)
if [[ $ONLY == 7 ]]; then : >"$OUT/pgbench.log"; fi   # else section 2 began it
# The month is fixed here, once: every record's at lies in the PART_SPAN (at most an hour, never
# before the month's start) before PART_NOW, so all go into the current month's partition, even in a
# run that goes on past the month's end.
IFS='|' read -r PART_NOW PART_MONTH PART_NEXT PART_SPAN PART_SUFFIX PART_FIRST PART_LAST PART_FROM_SHOWN PART_NOW_SHOWN \
  <<<"$(psql_ -F '|' -c "
  SELECT now(), m, m + interval '1 month', least(interval '1 hour', now() - m), to_char(m, 'YYYY_MM'),
         to_char(m - interval '$PART_PARTITIONS months', 'YYYY-MM'), to_char(m + interval '$PART_FUTURE months', 'YYYY-MM'),
         to_char(greatest(m, now() - interval '1 hour'), 'YYYY-MM-DD HH24:MI:SS'), to_char(now(), 'YYYY-MM-DD HH24:MI:SS TZ')
  FROM date_trunc('month', now()) AS m")"
[[ -n $PART_SUFFIX ]] || die "could not compute the current month's bounds"
# part_table KIND NAME: a fresh table with section 6's columns (section 1's with a timestamptz at
# in place of ts), primary key (rid, at) and an index on (anchor_id, at). KIND plain, plain_part,
# ledger or ledger_part; *_part: PARTITION BY RANGE (at), with PART_PARTITIONS monthly partitions of
# the past, the current month's (NAME_YYYY_MM), PART_FUTURE empty future months and a default
# partition; ledger*: then ledger.enable(tbl, 'anchor_id').
part_table() {
  local kind=$1 t=$2 by=""
  if [[ $kind == *_part ]]; then by=" PARTITION BY RANGE (at)"; fi
  {
    echo "DROP TABLE IF EXISTS $t;"
    echo "CREATE TABLE $t (rid uuid DEFAULT gen_random_uuid(), anchor_id uuid NOT NULL, slot text, kind text,"
    echo "  at timestamptz NOT NULL, payload jsonb, sig bytea, producer text, version text DEFAULT 'v1',"
    echo "  PRIMARY KEY (rid, at))$by;"
    echo "CREATE INDEX ON $t (anchor_id, at);"
    if [[ $kind == *_part ]]; then
      echo "SELECT format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',"
      echo "              '${t}_' || to_char(m, 'YYYY_MM'), '$t', m, m + interval '1 month')"
      echo "  FROM generate_series('$PART_MONTH'::timestamptz - interval '$PART_PARTITIONS months',"
      echo "                       '$PART_MONTH'::timestamptz + interval '$PART_FUTURE months', interval '1 month') AS m \\gexec"
      echo "CREATE TABLE ${t}_default PARTITION OF $t DEFAULT;"
    fi
    if [[ $kind == ledger* ]]; then echo "SELECT ledger.enable('$t', 'anchor_id');"; fi
  } | psql_ >/dev/null
}
# part_load TABLE -> seconds: PART_ROWS records over PART_CHAINS chains in one INSERT ... SELECT
# (autocommit, its commit included, after a CHECKPOINT); the same rows for every table, their at
# scattered over the PART_SPAN before PART_NOW.
part_load() {
  psql_ -c "CHECKPOINT" >/dev/null
  timed_statement "INSERT INTO $1 (rid, anchor_id, slot, kind, at, payload, sig, producer)
SELECT md5(i::text)::uuid, $(anchor_expr "i % $PART_CHAINS + 1"), 'slot-' || (i % 10), 'payment',
       '$PART_NOW'::timestamptz - interval '$PART_SPAN' * ((i * 0.618033988749895) % 1)::float8,
       jsonb_build_object('i', i, 'note', 'payment ' || i), decode(md5(i::text), 'hex'), 'bench'
FROM generate_series(1, $PART_ROWS) AS i"
}
# part_check KIND TABLE ROWS [CHAINS]: TABLE holds ROWS rows, all in the current month (and, if
# partitioned, in its partition); a ledger verifies (ledger.verify finds nothing) and every chain's
# seqs are dense, 1 to its count without gaps or repeats (and there are CHAINS chains, if given).
part_check() {
  local kind=$1 t=$2 rows=$3 chains=${4:-} where="at >= '$PART_MONTH' AND at < '$PART_NEXT'" got
  if [[ $kind == *_part ]]; then where+=" AND tableoid = '${t}_$PART_SUFFIX'::regclass"; fi
  got=$(psql_ -c "SELECT count(*) || '/' || count(*) FILTER (WHERE $where) FROM $t")
  [[ $got == "$rows/$rows" ]] || die "$t holds (rows/rows in the current month's partition) $got, expected $rows/$rows"
  [[ $kind == ledger* ]] || return 0
  check_ledger "$t"
  got=$(psql_ -c "SELECT count(*) || '/' || count(*) FILTER (WHERE lo = 1 AND hi = n AND seqs = n)
                  FROM (SELECT min(seq) AS lo, max(seq) AS hi, count(*) AS n, count(DISTINCT seq) AS seqs
                        FROM $t GROUP BY anchor_id) s")
  [[ ${got%/*} == "${got#*/}" && ${got%/*} != 0 ]] || die "$t: of its (chains/dense chains) $got, not every chain's seqs are 1 to its count"
  [[ -z $chains || ${got%/*} == "$chains" ]] || die "$t has ${got%/*} chains, not $chains"
}

# (a) Bulk: fresh tables each run, one at a time; every other run in reverse order.
declare -A PART_TIMES=()
for ((run = 1; run <= PART_RUNS; run++)); do
  order=("${PART_KINDS[@]}")
  ((run % 2 == 1)) || order=(ledger_part ledger plain_part plain)
  for kind in "${order[@]}"; do
    part_table "$kind" "part_$kind"
    secs=$(part_load "part_$kind")
    no_crash "bulk load into part_$kind"
    part_check "$kind" "part_$kind" "$PART_ROWS" "$PART_CHAINS"
    psql_ -c "DROP TABLE part_$kind" >/dev/null
    PART_TIMES[$kind]+="$secs "
    log "partitioned bulk run $run/$PART_RUNS: $kind $PART_ROWS rows in ${secs}s"
  done
done
declare -A PART_BEST=()
for kind in "${PART_KINDS[@]}"; do
  # shellcheck disable=SC2086
  PART_BEST[$kind]=$(min_of ${PART_TIMES[$kind]})
done
PART_BULK_RATIO=$(calc "${PART_BEST[ledger_part]} / ${PART_BEST[ledger]}" 2)
PART_BULK_PLAIN_RATIO=$(calc "${PART_BEST[plain_part]} / ${PART_BEST[plain]}" 2)
PART_BULK_LP=$(calc "${PART_BEST[ledger]} / ${PART_BEST[plain]}" 2)
PART_BULK_LP_PART=$(calc "${PART_BEST[ledger_part]} / ${PART_BEST[plain_part]}" 2)

# (b) pgbench: single-row autocommit INSERTs on random chains into a fresh table of each kind.
for kind in "${PART_KINDS[@]}"; do
  {
    echo "\\set a random(1, $PGBENCH_ANCHORS)"
    echo "INSERT INTO part_$kind (anchor_id, slot, kind, at, payload, producer)" \
         "VALUES ($(anchor_expr ":a"), 'slot-1', 'payment', '$PART_NOW'::timestamptz - interval '$PART_SPAN' * random()," \
         "jsonb_build_object('a', (:a)::int, 'note', 'payment'), 'bench');"
  } >"$WORK/part_$kind.sql"
done
# part_pgbench KIND CLIENTS -> tps; the table then holds every insert pgbench counted, and is checked.
part_pgbench() {
  local kind=$1 clients=$2
  part_table "$kind" "part_$kind"
  psql_ -c "CHECKPOINT" >/dev/null
  timed_pgbench "part_$kind c$clients" "$WORK/part_$kind.sql" "$clients"
  part_check "$kind" "part_$kind" "$PGB_RUN_COUNT"
  psql_ -c "DROP TABLE part_$kind" >/dev/null
  echo "$PGB_RUN_TPS"
}
PART_CONFIGS=()
for clients in 1 "$PGBENCH_CLIENTS"; do
  for kind in "${PART_KINDS[@]}"; do PART_CONFIGS+=("$kind $clients"); done
done
pgbench_rounds part "$PART_PGBENCH_RUNS" part_pgbench "partitioned pgbench" "${PART_CONFIGS[@]}"
PC=$PGBENCH_CLIENTS
PART_PGB_1=$(paired_median "part ledger_part 1" "part ledger 1")
PART_PGB_C=$(paired_median "part ledger_part $PC" "part ledger $PC")
PART_PGB_PLAIN_1=$(paired_median "part plain_part 1" "part plain 1")
PART_PGB_PLAIN_C=$(paired_median "part plain_part $PC" "part plain $PC")
PART_PGB_LP_1=$(paired_median "part ledger 1" "part plain 1")
PART_PGB_LP_C=$(paired_median "part ledger $PC" "part plain $PC")
PART_PAIRED_1=$(paired_ratios "part ledger_part 1" "part ledger 1" | paste -sd' ')
PART_PAIRED_C=$(paired_ratios "part ledger_part $PC" "part ledger $PC" | paste -sd' ')
PART_FINISHED=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
PART_MINUTES=$(calc "($(date +%s) - $PART_T0) / 60" 1)
fi  # section 7

# Section 8 (not indented) runs in a full run, after section 7, and alone (BENCH_ONLY=8).
if [[ -z $ONLY || $ONLY == 8 ]]; then
# ------------------------------------------------------------------------------------------------
# 8. Verification on every core, and pgAudit as a peer
# ------------------------------------------------------------------------------------------------
V8_STARTED=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
V8_T0=$(date +%s)
V8_CHAINS=64
V8_BATCH=500000   # records per INSERT ... SELECT (one transaction each) while loading
if [[ $ONLY == 8 ]]; then : >"$OUT/pgbench.log"; : >"$OUT/sha3_limit.out"; fi   # else sections 2, 3 began them

# (a) ledger.verify with one thread and with every core, against the SHA3 limit on one and on every core.
log "loading $VERIFY8_ROWS records in $V8_CHAINS chains into a ledger for verify on every core ($NPROC sessions)"
create_table ledger verify8
# NPROC sessions at once, each on its own chains (chain c + 1 for c % NPROC = the session's number),
# so no two wait for each other's chain locks; V8_BATCH records a transaction.
t0=$(date +%s.%N)
pids=()
for ((s = 0; s < NPROC; s++)); do
  for ((first = 1; first <= VERIFY8_ROWS; first += V8_BATCH)); do
    n=$((VERIFY8_ROWS - first + 1 < V8_BATCH ? VERIFY8_ROWS - first + 1 : V8_BATCH))
    load_sql ledger verify8 "$n" "$V8_CHAINS" "$first" "i % $V8_CHAINS % $NPROC = $s" | sed '/^CHECKPOINT;$/d'
  done | psql_ >/dev/null &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || die "loading verify8 failed"; done
V8_LOAD=$(calc "$(date +%s.%N) - $t0" 1)
no_crash "loading verify8"
psql_ -c "VACUUM (ANALYZE) verify8" -c "CHECKPOINT" >/dev/null
n=$(psql_ -c "SELECT count(*) || '/' || count(DISTINCT anchor_id) FROM verify8")
[[ $n == "$VERIFY8_ROWS/$V8_CHAINS" ]] || die "verify8 holds (records/chains) $n, expected $VERIFY8_ROWS/$V8_CHAINS"
V8_MB=$(psql_ -c "SELECT round(pg_table_size('verify8') / 1048576.0)")
psql_ -c "SELECT count(*) FROM verify8" >/dev/null   # warm the cache
log "loaded verify8 ($V8_MB MB) in ${V8_LOAD}s"

# The backend's peak resident set (kB) and its shared memory resident now (kB), from /proc (superuser).
V8_PROC="pg_read_file('/proc/' || pg_backend_pid() || '/status')"
V8_RSS_SQL="(regexp_match($V8_PROC, 'VmHWM:\s+(\d+) kB'))[1] || ' ' || (regexp_match($V8_PROC, 'RssShmem:\s+(\d+) kB'))[1]"
# verify8_session THREADS -> "problems seconds peak_rss_kb shmem_kb": ledger.verify of verify8 in a
# fresh session with ledger.verify_threads = THREADS, or at its default (THREADS = default: RESET),
# then that backend's VmHWM and RssShmem.
verify8_session() {
  local set="RESET ledger.verify_threads"
  [[ $1 == default ]] || set="SET ledger.verify_threads = $1"
  psql_ <<SQL | tail -1
$set;
SELECT clock_timestamp() AS t0 \\gset
SELECT count(*) AS problems FROM ledger.verify('verify8') \\gset
SELECT :'problems' || ' ' || round(extract(epoch FROM clock_timestamp() - :'t0')::numeric, 4) || ' ' || $V8_RSS_SQL;
SQL
}
read -r V8_REF_HWM V8_REF_SHMEM <<<"$(psql_ -c "SELECT 1" -c "SELECT $V8_RSS_SQL" | tail -1)"
[[ $V8_REF_HWM =~ ^[0-9]+$ ]] || die "could not read VmHWM from /proc/<pid>/status with pg_read_file"
V8_DEFAULT_THREADS=$(psql_ -c "RESET ledger.verify_threads" -c "SELECT current_setting('ledger.verify_threads', true)" | tail -1)

log "exporting up to $LIMIT8_SAMPLE canonical records of verify8 for bench/sha3_limit"
V8_STEP=$(((VERIFY8_ROWS / LIMIT8_SAMPLE) > 1 ? VERIFY8_ROWS / LIMIT8_SAMPLE : 1))
# NPROC sessions at once, each exporting the chains the same session loaded (COPY, which streams:
# psql would hold a SELECT's result of most of a gigabyte in memory), then the first LIMIT8_SAMPLE
# lines of all.
t0=$(date +%s.%N)
pids=()
for ((s = 0; s < NPROC; s++)); do
  psql_ -c "COPY (SELECT encode(ledger.canonical_bytes('verify8', anchor_id::text, seq), 'hex') || ' ' || hash
            FROM verify8 WHERE seq % $V8_STEP = 0 AND (right(anchor_id::text, 12)::int - 1) % $NPROC = $s
            ORDER BY anchor_id, seq LIMIT $LIMIT8_SAMPLE) TO STDOUT" >"$WORK/canonical8.$s.hex" &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || die "exporting the canonical records of verify8 failed"; done
for ((s = 0; s < NPROC; s++)); do cat "$WORK/canonical8.$s.hex"; rm -f "$WORK/canonical8.$s.hex"; done \
  | awk -v n="$LIMIT8_SAMPLE" 'NR <= n' >"$WORK/canonical8.hex"
V8_EXPORT=$(calc "$(date +%s.%N) - $t0" 1)
V8_SAMPLE_N=$(wc -l <"$WORK/canonical8.hex")
((V8_SAMPLE_N > 0)) || die "no canonical records exported from verify8"
build_sha3_limit
# limit8 THREADS -> hashes/s: as many hashes a pass as records exported, best of 2 x VERIFY8_RUNS
# passes (one run of the tool: reading and checking a million records costs it seconds).
V8_PASSES=$((2 * VERIFY8_RUNS))
limit8() {
  local rate
  "$SHA3_LIMIT" --threads "$1" "$WORK/canonical8.hex" "$V8_SAMPLE_N" "$V8_PASSES" >"$WORK/limit8.out" \
    || die "sha3_limit --threads $1 failed"
  cat "$WORK/limit8.out" >>"$OUT/sha3_limit.out"
  [[ $(sed -n 's/^checked_against_stored_hash //p' "$WORK/limit8.out") == "$V8_SAMPLE_N" ]] \
    || die "sha3_limit did not check every exported record against its stored hash"
  rate=$(sed -n 's/^hashes_per_sec //p' "$WORK/limit8.out")
  [[ -n $rate ]] || die "sha3_limit --threads $1 printed no rate"
  echo "$rate"
}

# Interleaved rounds: one thread and every core, the order alternating; then the two limits.
declare -A V8_TIMES=() V8_HWM=() V8_SHMEM=() V8_LIMIT=()
for ((run = 1; run <= VERIFY8_RUNS; run++)); do
  order=(1 default)
  ((run % 2 == 1)) || order=(default 1)
  for threads in "${order[@]}"; do
    read -r problems secs hwm shmem <<<"$(verify8_session "$threads")"
    no_crash "ledger.verify('verify8') with ledger.verify_threads = $threads"
    [[ $problems == 0 ]] || die "ledger.verify('verify8') (verify_threads $threads) reported $problems problems on an intact ledger"
    [[ $hwm =~ ^[0-9]+$ ]] || die "no VmHWM read after ledger.verify"
    V8_TIMES[$threads]+="$secs " V8_HWM[$threads]+="$hwm " V8_SHMEM[$threads]+="$shmem "
    log "verify8 run $run/$VERIFY8_RUNS: ledger.verify (verify_threads $threads) ${secs}s, peak RSS $hwm kB"
  done
done
for threads in 1 "$NPROC"; do
  V8_LIMIT[$threads]=$(limit8 "$threads")
  log "verify8: sha3_limit --threads $threads ${V8_LIMIT[$threads]} hashes/s (best of $V8_PASSES passes)"
done
psql_ -c "DROP TABLE verify8" >/dev/null
rm -f "$WORK/canonical8.hex"
# shellcheck disable=SC2086
V8_ONE_BEST=$(min_of ${V8_TIMES[1]})
# shellcheck disable=SC2086
V8_ALL_BEST=$(min_of ${V8_TIMES[default]})
V8_ONE_RPS=$(calc "$VERIFY8_ROWS / $V8_ONE_BEST" 0)
V8_ALL_RPS=$(calc "$VERIFY8_ROWS / $V8_ALL_BEST" 0)
V8_LIMIT_ONE=${V8_LIMIT[1]}
V8_LIMIT_ALL=${V8_LIMIT[$NPROC]}
V8_LIMIT_BYTES=$(sed -n 's/^mean_record_bytes //p' "$WORK/limit8.out")
V8_SPEEDUP=$(calc "$V8_ALL_RPS / $V8_ONE_RPS" 2)
V8_ALL_VS_LIMIT=$(calc "$V8_ALL_RPS / $V8_LIMIT_ALL" 2)
V8_ONE_VS_LIMIT=$(calc "$V8_ONE_RPS / $V8_LIMIT_ONE" 2)
V8_LIMIT_SPEEDUP=$(calc "$V8_LIMIT_ALL / $V8_LIMIT_ONE" 2)
# shellcheck disable=SC2086
V8_HWM_ONE=$(max_of ${V8_HWM[1]})
# shellcheck disable=SC2086
V8_HWM_ALL=$(max_of ${V8_HWM[default]})
# shellcheck disable=SC2086
V8_SHMEM_ONE=$(max_of ${V8_SHMEM[1]})
# shellcheck disable=SC2086
V8_SHMEM_ALL=$(max_of ${V8_SHMEM[default]})
kb_mb() { calc "$1 / 1024" 1; }

# (b) pgAudit as a peer: the same user table plain, audited by pgAudit, and a ledger.
AUDIT_SO=$("$PG_CONFIG" --pkglibdir)/pgaudit.so
[[ -f $AUDIT_SO ]] || die "pgAudit is not installed in $("$PG_CONFIG" --pkglibdir) (scripts/setup.sh installs postgresql-15-pgaudit)"
# restart_cluster: scripts/cluster.sh applies its conf lines only at initdb, so a changed setting is
# set with ALTER SYSTEM (postgresql.auto.conf) and takes effect at this restart; the server log
# (pg_ctl -l) is appended to, so no_crash still sees all of it.
restart_cluster() {
  scripts/cluster.sh stop "$BENCH_DIR"
  scripts/cluster.sh start "$BENCH_DIR" "$BENCH_PORT"
}
log "restarting the cluster with shared_preload_libraries = 'ledger,pgaudit'"
psql_ -c "ALTER SYSTEM SET shared_preload_libraries = 'ledger', 'pgaudit'" >/dev/null   # a list: two strings
restart_cluster
psql_ -c "CREATE EXTENSION pgaudit" >/dev/null || die "CREATE EXTENSION pgaudit failed"
AUDIT_VERSION=$(psql_ -c "SELECT extversion FROM pg_extension WHERE extname = 'pgaudit'")
[[ $(psql_ -c "SHOW shared_preload_libraries" | tr -d ' ') == "ledger,pgaudit" ]] || die "pgaudit is not preloaded after the restart"
[[ $(psql_ -c "SHOW pgaudit.log") == none ]] || die "pgaudit.log is not 'none' by default"
AUDIT_PGOPTIONS="$PGOPTIONS -c pgaudit.log=write"
AUDIT_KINDS=(plain audited ledger)
# audit_lines TABLE [OFFSET] -> the number of pgAudit session lines naming TABLE in the server log
# (from byte OFFSET on, default all of it); log_size -> the log's size now, an OFFSET.
audit_lines() {
  tail -c +"$((${2:-0} + 1))" "$BENCH_DIR/server.log" \
    | awk -v t="$1" '/AUDIT: SESSION/ && index($0, t) { n++ } END { print n + 0 }'
}
log_size() { stat -c %s "$BENCH_DIR/server.log"; }
# audit_check KIND OFFSET WRITES: after a run into aud_KIND that began when the log had OFFSET bytes
# and made WRITES audited statements, the log holds at least WRITES new lines naming it (audited)
# or none (plain, ledger).
audit_check() {
  local n
  n=$(audit_lines "aud_$1" "$2")
  if [[ $1 == audited ]]; then
    ((n >= $3)) || die "the server log holds $n pgAudit lines for aud_audited's run, expected at least $3"
  else
    ((n == 0)) || die "the server log holds $n pgAudit lines for aud_$1, which no audited session wrote"
  fi
}

declare -A AUD_TIMES=()
for ((run = 1; run <= BULK_RUNS; run++)); do
  for ((k = 0; k < 3; k++)); do
    kind=${AUDIT_KINDS[$(((k + run - 1) % 3))]}   # rotate the order from run to run
    psql_ -c "DROP TABLE IF EXISTS aud_plain, aud_audited, aud_ledger" >/dev/null
    user_table "$kind" "aud_$kind"
    before=$(log_size)
    {
      if [[ $kind == audited ]]; then echo "SET pgaudit.log = 'write';"; fi
      load_sql user "aud_$kind" "$BULK_ROWS" "$BULK_ANCHORS"
    } >"$WORK/aud_bulk.sql"
    secs=$(psql_ -f "$WORK/aud_bulk.sql" | tail -1)
    no_crash "bulk load into aud_$kind"
    [[ $(psql_ -c "SELECT count(*) FROM aud_$kind") == "$BULK_ROWS" ]] || die "aud_$kind does not hold $BULK_ROWS rows"
    audit_check "$kind" "$before" 1
    if [[ $kind == ledger ]]; then check_ledger aud_ledger; fi
    AUD_TIMES[$kind]+="$secs "
    log "pgaudit bulk run $run/$BULK_RUNS: $kind $BULK_ROWS rows in ${secs}s"
  done
done
psql_ -c "DROP TABLE IF EXISTS aud_plain, aud_audited, aud_ledger" >/dev/null
declare -A AUD_BEST=()
for kind in "${AUDIT_KINDS[@]}"; do
  # shellcheck disable=SC2086
  AUD_BEST[$kind]=$(min_of ${AUD_TIMES[$kind]})
done
AUD_BULK_LP=$(calc "${AUD_BEST[ledger]} / ${AUD_BEST[plain]}" 2)
AUD_BULK_AP=$(calc "${AUD_BEST[audited]} / ${AUD_BEST[plain]}" 2)
AUD_BULK_LA=$(calc "${AUD_BEST[ledger]} / ${AUD_BEST[audited]}" 2)

for kind in "${AUDIT_KINDS[@]}"; do
  {
    echo "\\set a random(1, $PGBENCH_ANCHORS)"
    echo "INSERT INTO aud_$kind (anchor_id, slot, kind, payload, producer)" \
         "VALUES ($(anchor_expr ":a"), 'slot-1', 'payment', jsonb_build_object('a', (:a)::int, 'note', 'payment'), 'bench');"
  } >"$WORK/aud_$kind.sql"
done
# aud_pgbench KIND CLIENTS -> tps, into a fresh aud_KIND; the audited one with pgaudit.log = 'write'.
aud_pgbench() {
  local kind=$1 clients=$2 n before options=$PGOPTIONS
  [[ $kind != audited ]] || options=$AUDIT_PGOPTIONS
  user_table "$kind" "aud_$kind"
  psql_ -c "CHECKPOINT" >/dev/null
  before=$(log_size)
  timed_pgbench "aud_$kind c$clients" "$WORK/aud_$kind.sql" "$clients" "$options"
  n=$PGB_RUN_COUNT
  [[ $(psql_ -c "SELECT count(*) FROM aud_$kind") == "$n" ]] || die "aud_$kind does not hold the $n rows pgbench inserted"
  audit_check "$kind" "$before" "$n"
  if [[ $kind == ledger ]]; then check_ledger aud_ledger; fi
  psql_ -c "DROP TABLE aud_$kind" >/dev/null
  echo "$PGB_RUN_TPS"
}
AUD_CONFIGS=()
for clients in 1 "$PGBENCH_CLIENTS"; do
  for kind in "${AUDIT_KINDS[@]}"; do AUD_CONFIGS+=("$kind $clients"); done
done
pgbench_rounds aud "$PGBENCH_RUNS8" aud_pgbench "pgaudit pgbench" "${AUD_CONFIGS[@]}"
AC=$PGBENCH_CLIENTS
AUD_PGB_LP_1=$(paired_median "aud ledger 1" "aud plain 1")
AUD_PGB_LP_C=$(paired_median "aud ledger $AC" "aud plain $AC")
AUD_PGB_AP_1=$(paired_median "aud audited 1" "aud plain 1")
AUD_PGB_AP_C=$(paired_median "aud audited $AC" "aud plain $AC")
AUD_PGB_LA_1=$(paired_median "aud ledger 1" "aud audited 1")
AUD_PGB_LA_C=$(paired_median "aud ledger $AC" "aud audited $AC")
# What the log holds, all runs together: the audited table's writes, and nothing of the other two.
AUD_LINES=$(audit_lines aud_audited)
((AUD_LINES > 0)) || die "the server log holds no pgAudit line for aud_audited"
for kind in plain ledger; do
  n=$(audit_lines "aud_$kind")
  ((n == 0)) || die "the server log holds $n pgAudit lines for aud_$kind"
done
AUD_SAMPLE=$({ grep -m1 'AUDIT: SESSION.*INSERT INTO aud_audited' "$BENCH_DIR/server.log" || true; } | sed 's/^.*\(AUDIT: SESSION\)/\1/' | cut -c1-160)
AUD_LOG_MB=$(calc "$(stat -c %s "$BENCH_DIR/server.log") / 1048576" 1)
# Back as before: pgaudit's event triggers would fail without its library, so the extension goes first.
log "dropping pgaudit and restarting the cluster with shared_preload_libraries = 'ledger'"
psql_ -c "DROP EXTENSION pgaudit" -c "ALTER SYSTEM RESET shared_preload_libraries" >/dev/null
restart_cluster
[[ $(psql_ -c "SHOW shared_preload_libraries") == ledger ]] || die "the cluster did not come back with shared_preload_libraries = 'ledger'"
no_crash "section 8"
V8_FINISHED=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
V8_MINUTES=$(calc "($(date +%s) - $V8_T0) / 60" 1)
fi  # section 8

# Section 9 (not indented) runs in a full run, after section 8, and alone (BENCH_ONLY=9).
if [[ -z $ONLY || $ONLY == 9 ]]; then
# ------------------------------------------------------------------------------------------------
# 9. At scale
# ------------------------------------------------------------------------------------------------
SCALE_STARTED=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
SCALE_T0=$(date +%s)
SCALE_STEP_ROWS=$((SCALE_ROWS / SCALE_STEPS))
SCALE_PER_CHAIN=$((SCALE_ROWS / SCALE_CHAINS))   # records of chain 1 (record i is on chain i % SCALE_CHAINS + 1)
CHAIN1=00000000-0000-0000-0000-000000000001     # anchor_expr 1
log "loading $SCALE_ROWS records ($SCALE_CHAINS chains) into scale_ledger and scale_plain in $SCALE_STEPS steps"
create_table ledger scale_ledger
create_table plain scale_plain
declare -A SCALE_SECS=()
for ((step = 1; step <= SCALE_STEPS; step++)); do
  first=$(((step - 1) * SCALE_STEP_ROWS + 1))
  order=(ledger plain)
  ((step % 2 == 1)) || order=(plain ledger)
  for kind in "${order[@]}"; do
    secs=$(load_sql "$kind" "scale_$kind" "$SCALE_STEP_ROWS" "$SCALE_CHAINS" "$first" | psql_ | tail -1)
    no_crash "step $step of loading scale_$kind"
    SCALE_SECS[$kind $step]=$secs
  done
  log "scale step $step/$SCALE_STEPS: $SCALE_STEP_ROWS rows to $((step * SCALE_STEP_ROWS)): ledger ${SCALE_SECS[ledger $step]}s, plain ${SCALE_SECS[plain $step]}s"
done
for kind in ledger plain; do
  n=$(psql_ -c "SELECT count(*) FROM scale_$kind")
  [[ $n == "$SCALE_ROWS" ]] || die "scale_$kind holds $n rows, not $SCALE_ROWS"
done
# Every chain's seqs are 1 to its count, without gaps or repeats.
n=$(psql_ -c "SELECT count(*) || '/' || count(*) FILTER (WHERE lo = 1 AND hi = n AND seqs = n)
              FROM (SELECT min(seq) AS lo, max(seq) AS hi, count(*) AS n, count(DISTINCT seq) AS seqs
                    FROM scale_ledger GROUP BY anchor_id) s")
[[ $n == "$SCALE_CHAINS/$SCALE_CHAINS" ]] || die "scale_ledger: of its (chains/dense chains) $n, expected $SCALE_CHAINS/$SCALE_CHAINS"
psql_ -c "VACUUM (ANALYZE) scale_ledger" -c "VACUUM (ANALYZE) scale_plain" -c "CHECKPOINT" >/dev/null

# Bytes per record: the heap (main fork), each index (named by its definition, so the two tables'
# line up) and everything (pg_total_relation_size), as SCALE_SIZE[kind key]; SCALE_SIZE_KEYS in order.
declare -A SCALE_SIZE=() SCALE_SIZE_SEEN=()
SCALE_SIZE_KEYS=()
for kind in ledger plain; do
  while IFS='|' read -r key bytes; do
    SCALE_SIZE[$kind $key]=$bytes
    [[ -n ${SCALE_SIZE_SEEN[$key]:-} ]] || SCALE_SIZE_KEYS+=("$key")
    SCALE_SIZE_SEEN[$key]=1
  done <<<"$(psql_ -c "SELECT k || '|' || b FROM (
      SELECT 1 AS o, 'heap' AS k, pg_relation_size('scale_$kind') AS b
      UNION ALL SELECT 2, 'index:' || regexp_replace(pg_get_indexdef(indexrelid), '^CREATE (UNIQUE )?INDEX \S+ ON \S+ USING (\w+) ', '\1\2 '),
                       pg_relation_size(indexrelid)
                FROM pg_index WHERE indrelid = 'scale_$kind'::regclass
      UNION ALL SELECT 3, 'total', pg_total_relation_size('scale_$kind')) s ORDER BY o, k")"
done
SCALE_TOTAL_RATIO=$(calc "${SCALE_SIZE[ledger total]} / ${SCALE_SIZE[plain total]}" 2)
SCALE_MB=$(calc "${SCALE_SIZE[ledger total]} / 1048576" 0)

SCALE_VERIFY_TIMES=""
for ((run = 1; run <= SCALE_VERIFY_RUNS; run++)); do
  read -r problems secs <<<"$(timed_query "SELECT count(*) FROM ledger.verify('scale_ledger')")"
  no_crash "ledger.verify('scale_ledger')"
  [[ $problems == 0 ]] || die "ledger.verify('scale_ledger') reported $problems problems"
  SCALE_VERIFY_TIMES+="$secs "
  log "scale: verify run $run/$SCALE_VERIFY_RUNS ${secs}s"
done
# shellcheck disable=SC2086
SCALE_VERIFY_BEST=$(min_of $SCALE_VERIFY_TIMES)
SCALE_VERIFY_RPS=$(calc "$SCALE_ROWS / $SCALE_VERIFY_BEST" 0)
SCALE_THREADS=$(psql_ -c "SELECT current_setting('ledger.verify_threads', true)")

psql_ -c "CHECKPOINT" >/dev/null
read -r got SCALE_CP_SECS <<<"$(timed_query "SELECT count(*) || '/' || sum(record_count) FROM ledger.checkpoint('scale_ledger')")"
no_crash "ledger.checkpoint('scale_ledger')"
[[ $got == "$SCALE_CHAINS/$SCALE_ROWS" ]] || die "ledger.checkpoint('scale_ledger') made (checkpoints/records) $got, expected $SCALE_CHAINS/$SCALE_ROWS"
SCALE_CP_MS=$(calc "$SCALE_CP_SECS * 1000 / $SCALE_CHAINS" 2)
log "scale: checkpoint of $SCALE_CHAINS chains ${SCALE_CP_SECS}s"
# One chain's checkpoint, and a newer one after SCALE_NEW more records on that chain.
SCALE_NEW=$((SCALE_PER_CHAIN / 10 > 0 ? SCALE_PER_CHAIN / 10 : 1))
SCALE_CID=$(psql_ -c "SELECT cid FROM ledger.checkpoints WHERE ledger = 'public.scale_ledger' AND chain = '$CHAIN1'")
load_sql ledger scale_ledger "$SCALE_NEW" 1 $((SCALE_ROWS + 1)) | psql_ >/dev/null
SCALE_CID2=$(psql_ -c "SELECT cid FROM ledger.checkpoint('scale_ledger', '$CHAIN1')")
n=$(psql_ -c "SELECT string_agg(record_count::text, '/' ORDER BY seq) FROM ledger.checkpoints WHERE ledger = 'public.scale_ledger' AND chain = '$CHAIN1'")
[[ $n == "$SCALE_PER_CHAIN/$((SCALE_PER_CHAIN + SCALE_NEW))" ]] || die "chain 1 of scale_ledger has checkpoints of $n records, expected $SCALE_PER_CHAIN/$((SCALE_PER_CHAIN + SCALE_NEW))"
SCALE_PROOF_SEQ=$((SCALE_PER_CHAIN / 2 + 1))
n=$(psql_ -c "SELECT ledger.verify_inclusion(r.hash, ledger.inclusion_proof('$SCALE_CID', $SCALE_PROOF_SEQ), c.merkle_root, c.record_count)
                 AND ledger.verify_consistency(ledger.consistency_proof('$SCALE_CID', '$SCALE_CID2'))
              FROM scale_ledger r, ledger.checkpoints c
              WHERE r.anchor_id = '$CHAIN1' AND r.seq = $SCALE_PROOF_SEQ AND c.cid = '$SCALE_CID'")
[[ $n == t ]] || die "the inclusion or consistency proof on scale_ledger does not verify"
SCALE_INCL_TIMES="" SCALE_CONS_TIMES=""
for ((run = 1; run <= PROOF_RUNS; run++)); do
  read -r _ secs <<<"$(timed_query "SELECT length(ledger.inclusion_proof('$SCALE_CID', $SCALE_PROOF_SEQ)::text)")"
  SCALE_INCL_TIMES+="$(calc "$secs * 1000" 1) "
  read -r _ secs <<<"$(timed_query "SELECT length(ledger.consistency_proof('$SCALE_CID', '$SCALE_CID2')::text)")"
  SCALE_CONS_TIMES+="$(calc "$secs * 1000" 1) "
  no_crash "proofs on scale_ledger"
done
# shellcheck disable=SC2086
SCALE_INCL_BEST=$(min_of $SCALE_INCL_TIMES)
# shellcheck disable=SC2086
SCALE_CONS_BEST=$(min_of $SCALE_CONS_TIMES)
# (c) Proofs on one chain of SCALE_ROWS records (in the 10M run, a 10,000,000-record chain), against
# the same proofs on chain 1 above: both read a few tiles (ledger.subtrees), so they grow with log n.
psql_ -c "DROP TABLE scale_plain" >/dev/null
log "scale: loading $SCALE_ROWS records on one chain into scale_one"
create_table ledger scale_one
SCALE_ONE_LOAD=$(load_sql ledger scale_one "$SCALE_ROWS" 1 | psql_ | tail -1)
no_crash "loading scale_one"
psql_ -c "VACUUM (ANALYZE) scale_one" -c "CHECKPOINT" >/dev/null
read -r SCALE_ONE_CID SCALE_ONE_CP_SECS <<<"$(timed_query "SELECT cid FROM ledger.checkpoint('scale_one', '$CHAIN1')")"
no_crash "ledger.checkpoint('scale_one')"
load_sql ledger scale_one "$SCALE_NEW" 1 $((SCALE_ROWS + 1)) | psql_ >/dev/null
SCALE_ONE_CID2=$(psql_ -c "SELECT cid FROM ledger.checkpoint('scale_one', '$CHAIN1')")
SCALE_ONE_SEQ=$((SCALE_ROWS / 2 + 1))
n=$(psql_ -c "SELECT ledger.verify_inclusion(r.hash, ledger.inclusion_proof('$SCALE_ONE_CID', $SCALE_ONE_SEQ), c.merkle_root, c.record_count)
                 AND ledger.verify_consistency(ledger.consistency_proof('$SCALE_ONE_CID', '$SCALE_ONE_CID2'))
                 AND c.record_count = $SCALE_ROWS
              FROM scale_one r, ledger.checkpoints c WHERE r.seq = $SCALE_ONE_SEQ AND c.cid = '$SCALE_ONE_CID'")
[[ $n == t ]] || die "the inclusion or consistency proof on scale_one does not verify"
SCALE_ONE_SUBTREES=$(psql_ -c "SELECT count(*) FROM ledger.subtrees WHERE ledger = 'public.scale_one'")
SCALE_ONE_INCL_TIMES="" SCALE_ONE_CONS_TIMES=""
for ((run = 1; run <= PROOF_RUNS; run++)); do
  read -r _ secs <<<"$(timed_query "SELECT length(ledger.inclusion_proof('$SCALE_ONE_CID', $SCALE_ONE_SEQ)::text)")"
  SCALE_ONE_INCL_TIMES+="$(calc "$secs * 1000" 1) "
  read -r _ secs <<<"$(timed_query "SELECT length(ledger.consistency_proof('$SCALE_ONE_CID', '$SCALE_ONE_CID2')::text)")"
  SCALE_ONE_CONS_TIMES+="$(calc "$secs * 1000" 1) "
  no_crash "proofs on scale_one"
done
# shellcheck disable=SC2086
SCALE_ONE_INCL_BEST=$(min_of $SCALE_ONE_INCL_TIMES)
# shellcheck disable=SC2086
SCALE_ONE_CONS_BEST=$(min_of $SCALE_ONE_CONS_TIMES)
SCALE_ONE_INCL_GROWTH=$(calc "$SCALE_ONE_INCL_BEST / $SCALE_INCL_BEST" 2)
SCALE_ONE_CONS_GROWTH=$(calc "$SCALE_ONE_CONS_BEST / $SCALE_CONS_BEST" 2)
SCALE_LOG_GROWTH=$(calc "log($SCALE_ROWS) / log($SCALE_PER_CHAIN)" 2)
SCALE_N_GROWTH=$(calc "$SCALE_ROWS / $SCALE_PER_CHAIN" 0)
log "scale: proofs on $SCALE_ROWS records: inclusion $SCALE_ONE_INCL_BEST ms, consistency $SCALE_ONE_CONS_BEST ms"
psql_ -c "DROP TABLE scale_ledger, scale_one" >/dev/null
# The first and the last step: ledger/plain rows/s at each, and each table's rows/s at the last
# step / at the first (1: no slower as it grows).
SCALE_FIRST_RATIO=$(calc "${SCALE_SECS[plain 1]} / ${SCALE_SECS[ledger 1]}" 2)
SCALE_LAST_RATIO=$(calc "${SCALE_SECS[plain $SCALE_STEPS]} / ${SCALE_SECS[ledger $SCALE_STEPS]}" 2)
SCALE_LEDGER_TREND=$(calc "${SCALE_SECS[ledger 1]} / ${SCALE_SECS[ledger $SCALE_STEPS]}" 2)
SCALE_PLAIN_TREND=$(calc "${SCALE_SECS[plain 1]} / ${SCALE_SECS[plain $SCALE_STEPS]}" 2)
SCALE_FINISHED=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
SCALE_MINUTES=$(calc "($(date +%s) - $SCALE_T0) / 60" 1)
fi  # section 9
no_crash "the whole run"

SO_SUM_END=$(sha256sum "$SO" | cut -c1-16)
FINISHED=$(date -u '+%Y-%m-%d %H:%M:%S UTC')

# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------
DIRTY_NOTE=""
((DIRTY == 0)) || DIRTY_NOTE=" (working tree has $DIRTY uncommitted change(s) under src/, core/, sql/ or the manifests; the installed build may include them)"
SO_NOTE=""
[[ $SO_SUM == "$SO_SUM_END" ]] || SO_NOTE="

> **Warning:** ledger.so changed during the run ($SO_SUM → $SO_SUM_END): backends started after the change ran a different build. Re-run."
QUICK_NOTE=""
[[ $QUICK != 1 ]] || QUICK_NOTE="

> **Quick mode** (BENCH_QUICK=1): sizes are too small for the numbers to mean much; this run only checks that the benchmark works."

# provenance STARTED FINISHED: what was measured, how and on what.
provenance() {
  cat <<EOF
| | |
|---|---|
| command | \`$COMMAND\` |
| started / finished | $1 / $2 |
| machine | $NPROC CPUs (\`nproc\`), $CPU |
| PostgreSQL | $PG_VERSION |
| ledger commit | \`$COMMIT\`$DIRTY_NOTE |
| installed ledger.so | sha256 \`$SO_SUM…\`, built $SO_TIME |
| cluster | fresh \`initdb\` by scripts/cluster.sh; defaults except $(printf '`%s`, ' "${CONF[@]}")fsync on |
EOF
}
report_head() {
  cat <<EOF
# ledger benchmark results

Written by \`bench/run.sh\`; re-run it to refresh this file (it overwrites it; \`BENCH_ONLY=N bench/run.sh\`
with N = 6, 7, 8 or 9 refreshes that section alone, which then says how it was measured).$QUICK_NOTE$SO_NOTE

$(provenance "$STARTED" "$FINISHED")

## How to read this

The machine is small and noisy, so absolute numbers are not comparable between runs or machines; each
measurement is compared with a baseline measured in the same run on the same cluster, and only the
ratios matter. Every variant runs several times, interleaved, and the best run counts (the best run is
the one least disturbed by noise). *plain* is the same table with no triggers (the cost of storing
the rows at all); *ledger* is the table after \`ledger.enable(tbl, 'anchor_id')\`; *hand* is the best
hand-written alternative (PL/pgSQL trigger with an advisory lock per chain, an index lookup of the
chain head and pgcrypto SHA-256), shown for context. Time ratios are *ledger time / plain time*
(lower is better); throughput ratios are *ledger tps or rows/s / baseline* (higher is better).
"met" / "**not met**" compares each ratio with its target.
EOF
}
report_sections_1_to_5() {
  cat <<EOF
## 1. Bulk load: one \`INSERT ... SELECT\` of $BULK_ROWS rows ($BULK_ANCHORS chains), one transaction

Time from before \`BEGIN\` to after \`COMMIT\`, fresh table each run, best of $BULK_RUNS, the six variants
interleaved, the order rotated from run to run.

A user's table (\`ledger.records\`' columns but \`seq\`, \`prev_hash\` and \`hash\`, with its primary key
and \`(anchor_id, ts)\` index), as it was and with the ledger; the \`SELECT\` computes each row's values
(\`jsonb_build_object\`, \`md5\`) over \`generate_series\`:

| variant | best time | runs (s) | ratio to plain | target | |
|---|---:|---|---:|---|---|
| plain (the table as it was, without the ledger) | ${BULK_BEST[user_plain]} s | $(per_run ${BULK_TIMES[user_plain]}) | 1.00 | | |
| **ledger** (after \`ledger.enable(tbl, 'anchor_id')\`) | ${BULK_BEST[user_ledger]} s | $(per_run ${BULK_TIMES[user_ledger]}) | **$BULK_LEDGER_RATIO** | ledger/plain ≤ 1.3 | $(met "$BULK_LEDGER_RATIO" "<=" 1.3) |
| evidence (the ledger's columns and unique \`(anchor_id, seq)\` index, constant values, no trigger) | ${BULK_BEST[user_evidence]} s | $(per_run ${BULK_TIMES[user_evidence]}) | $BULK_EVIDENCE_RATIO | (reference) | |
| hand-written trigger (the same columns and index) | ${BULK_BEST[user_hand]} s | $(per_run ${BULK_TIMES[user_hand]}) | $BULK_HAND_RATIO | (reference) | |

The evidence row is what storing the ledger's columns and index costs before anything is hashed
(each row grows by a bigint and two 64-character hex strings, and every insert updates one more
index): ledger/evidence is **$BULK_LEDGER_VS_EVIDENCE**, the part of the ratio the trigger adds.

The built-in schema (the columns of \`ledger.records\`, with a unique \`hash\`), against the same
table without the trigger storing the same evidence precomputed; both read their rows from a table
built before the runs (seq per chain, \`prev_hash\` and \`hash\` from md5s):

| variant | best time | runs (s) | ratio to plain | |
|---|---:|---|---:|---|
| plain (evidence precomputed) | ${BULK_BEST[builtin_plain]} s | $(per_run ${BULK_TIMES[builtin_plain]}) | 1.00 | |
| **ledger** | ${BULK_BEST[builtin_ledger]} s | $(per_run ${BULK_TIMES[builtin_ledger]}) | **$BULK_BUILTIN_RATIO** | (reference) |

### 1b. An idempotent retry: \`INSERT ... SELECT ... ON CONFLICT DO NOTHING\` of $RETRY_ROWS events, every tenth already stored

An event table \`(id bigint PRIMARY KEY, stream text, type text, data jsonb)\` holding every tenth event,
with the ledger (\`ledger.enable(tbl, chain_by => 'stream')\`, 64 chains) and as it was without it; the
duplicates are spread through the batch and across the chains. Best of $RETRY_RUNS, fresh tables.

| variant | best time | runs (s) | ratio | target | |
|---|---:|---|---:|---|---|
| plain (the table without the ledger) | $RETRY_PLAIN s | $(per_run ${RETRY_TIMES[plain]}) | 1.00 | | |
| **ledger** | $RETRY_LEDGER s | $(per_run ${RETRY_TIMES[ledger]}) | **$RETRY_RATIO** | ledger/plain ≤ 1.3 | $(met "$RETRY_RATIO" "<=" 1.3) |
| evidence (the ledger's columns and index, constant values, no trigger) | $RETRY_EVIDENCE s | $(per_run ${RETRY_TIMES[evidence]}) | $RETRY_EVIDENCE_RATIO | (reference) | |

The evidence row is what storing the ledger's columns costs this narrow table before anything is
hashed: ledger/evidence is **$RETRY_LEDGER_VS_EVIDENCE**, the part of the ratio the trigger adds.

### 1c. The same retries from $PGBENCH_CLIENTS writers at once

Each transaction re-sends a batch of 100 consecutive events from a random offset with \`ON CONFLICT DO
NOTHING\` (\`pgbench -n -M prepared -c $PGBENCH_CLIENTS -T $PGBENCH_SECONDS --max-tries=1000\`), so batches
overlap each other and the events already stored; a deadlock between two batches that lock chains in
opposite orders (40P01) is retried, as a consumer would. Best of $RETRY_RUNS, fresh tables; the ledger
verifies after each. *(a)* batches in id order into the table holding every tenth event (most rows
are first deliveries, spread over all 64 chains); *(b)* the same batches ordered by the chain column
(\`ORDER BY stream, id\`); *(c)* batches in id order into a table that already holds every event
(re-deliveries only: no row is stored, and none takes a chain lock).

| variant | table | best tps | runs (tps) | transactions retried per run | ratio | target | |
|---|---|---:|---|---|---:|---|---|
$(for variant in "${RETRY_VARIANTS[@]}"; do
  case $variant in
    unordered) label="(a) id order, every tenth stored" ;;
    ordered) label="(b) chain order, every tenth stored" ;;
    stored) label="(c) id order, every event stored" ;;
  esac
  echo "| $label | plain | ${RETRY_TPS_BEST[$variant.plain]} | $(per_run ${RETRY_TPS[$variant.plain]}) | $(per_run ${RETRY_RETRIED[$variant.plain]}) | 1.00 | | |"
  echo "| $label | **ledger** | ${RETRY_TPS_BEST[$variant.ledger]} | $(per_run ${RETRY_TPS[$variant.ledger]}) | $(per_run ${RETRY_RETRIED[$variant.ledger]}) | **${RETRY_TPS_RATIO[$variant]}** | ledger/plain ≥ 0.77 (1/1.3) | $(met "${RETRY_TPS_RATIO[$variant]}" ">=" 0.77) |"
done)

In (a) and (b) every batch appends to all 64 chains, and a chain's lock is held until its appender
commits (until its commit record is written), so batches that both store rows run one after another, and in (a) two of them that reach
the chains in different orders deadlock, again and again while most rows are new; a plain table's
batches only wait for each other on a shared id. Rows already stored take no chain lock, so each
variant speeds up as its table fills.

## 2. Single-row autocommit INSERTs (pgbench)

The user's table of section 1: *plain* as it was, *ledger* after \`ledger.enable(tbl, 'anchor_id')\`, *hand*
with the ledger's columns and index and the hand-written trigger; every variant runs the same INSERT of
the user's columns. \`pgbench -n -M prepared -T $PGBENCH_SECONDS\`, one INSERT per transaction, fsync on; *random* picks one of
$PGBENCH_ANCHORS chains per transaction, *one* puts every insert on the same chain. $PGBENCH_RUNS
round(s), each running every variant once, back to back (every other round in reverse order); -j = min(clients, nproc). The tps columns
are the best run of each variant; every ratio is the **median over the rounds of the ratio within a
round** (run k / run k), because an fsync-bound tps follows the disk's latency, which drifts over
minutes: a ratio of bests would be decided by whichever side had one lucky run.

| clients | chains | plain tps | ledger tps | ledger/plain | target | | hand tps | hand/plain |
|---:|---|---:|---:|---:|---|---|---:|---:|
| 1 | random | $(tps_of "plain random 1") | $(tps_of "ledger random 1") | **$PGB_R1** | ≥ 0.95 | $(met "$PGB_R1" ">=" 0.95) | $(tps_of "hand random 1") | $PGB_H1 |
| $C | random | $(tps_of "plain random $C") | $(tps_of "ledger random $C") | **$PGB_RC** | ≥ 0.95 | $(met "$PGB_RC" ">=" 0.95) | $(tps_of "hand random $C") | $PGB_HC |
| $C | one | (random: $(tps_of "plain random $C")) | $(tps_of "ledger one $C") | **$PGB_RONE** | ≥ 0.8 | $(met "$PGB_RONE" ">=" 0.8) | $(tps_of "hand one $C") | $PGB_HONE |

Per-round ledger/plain, 1 client: $(per_run $PAIRED_1); $C clients: $(per_run $PAIRED_C). For comparison,
the ratio of the best runs: 1 client $BEST_R1, $C clients $BEST_RC.

All runs (tps): $(for config in "${PGB_CONFIGS[@]}"; do printf '%s: %s; ' "$config" "$(per_run $(printf '%.0f ' ${PGB_TPS[$config]}))"; done | sed 's/; $/./')

On one chain the appends are serialized by the chain's lock. The ledger releases it once the
appender's commit record is written, before the record is flushed (early lock release, README
"Concurrency"), so the next append waits for the previous one's execution only and the flushes are
shared as a plain table's writers share them; the hand-written trigger's advisory lock is held
through the flush, one commit per flush. The one-chain ratio is against plain on random chains
(a plain table has no chains); the performance issue's target 3 is ≥ 0.8. Ledger/hand on one
chain = $PGB_LH_ONE.

The CPU cost alone (no target): with \`synchronous_commit = off\` no commit waits for its WAL flush,
and $C clients on random chains give plain $(tps_of "plain random $C async") tps, ledger
$(tps_of "ledger random $C async") tps (best runs): ledger/plain **$PGB_ASYNC** (median per round). Each append takes its chain's lock and head,
inserts into the \`(chain, seq)\` index, and hashes the record; with the flush counted, as above, those costs are a smaller share.

The chain's head comes from shared memory (the cluster preloads the library; README, "Concurrency"):
the last appender of the chain left it there. With \`ledger.shared_heads = off\` (every append reads
the head from the index, as on a server that does not preload the library), in the same rounds:
ledger/plain 1 client **$PGB_L1** ($(tps_of "ledger random 1 lookup") tps), $C clients **$PGB_LC**
($(tps_of "ledger random $C lookup") tps), $C clients on one chain **$PGB_LONE** ($(tps_of "ledger one $C lookup") tps).

## 3. \`ledger.verify\` over $VERIFY_ROWS records ($VERIFY_CHAINS chains, table $VERIFY_MB MB, cached)

Best of $VERIFY_RUNS, interleaved (verify, hand-written SQL, SHA3 limit, repeated). Loading the records (one \`INSERT ... SELECT\` into the ledger) took $VERIFY_LOAD s.

| what | rows/s | ratio | target | |
|---|---:|---:|---|---|
| **\`ledger.verify\`** (\`SELECT count(*) FROM ledger.verify(...)\`; runs: $(per_run $VERIFY_TIMES) s) | $VERIFY_RPS | | | |
| (i) one-core SHA3-256 limit (bench/sha3_limit: $SAMPLE_N records of mean $LIMIT_BYTES bytes, $LIMIT_HASHES hashes per pass; runs: $(per_run $LIMIT_RATES) hashes/s) | $LIMIT_HPS | verify/limit **$VERIFY_LIMIT_RATIO** | ≥ 0.5 | $(met "$VERIFY_LIMIT_RATIO" ">=" 0.5) |
| (ii) hand-written SQL recomputation (runs: $(per_run $HAND_VERIFY_TIMES) s) | $HAND_VERIFY_RPS | verify/hand **$VERIFY_HAND_RATIO** | > 1 | $(met "$VERIFY_HAND_RATIO" ">" 1) |

(i) hashes the exact bytes the extension hashes (\`ledger.canonical_bytes\` of $(
if ((STEP == 1)); then echo "every record, as verify reads them all"; else echo "every ${STEP}th seq of each chain"; fi
); the tool checks each digest against the stored \`hash\`) with the same \`sha3\` crate, in a tight
loop on one core, from memory: no tuple access, no encoding, no link checks. (ii) is the query below with PostgreSQL's
built-in, hardware-accelerated \`sha256()\` over \`concat_ws\` text (not the canonical encoding; it is a
stand-in for the cost of what a DBA would write), default settings (JIT on), plan:

\`\`\`
$HAND_VERIFY_PLAN
\`\`\`

### 3b. Reading \`ledger.stats\` on that ledger

What a dashboard's scrape costs: the \`ledger.stats\` row of the $VERIFY_ROWS-record ledger, after one
checkpoint of each chain and one \`ledger.verify_all\` (it reads each chain's head, newest checkpoint and
newest run, and the counters; it said records/chains/unanchored/appends = $STATS_ROW), against
\`SELECT count(*)\` of the same table (the scan a dashboard would otherwise run). Best of $STATS_RUNS,
interleaved.

| query | best | runs (s) |
|---|---:|---|
| \`SELECT ... FROM ledger.stats WHERE ledger = 'public.verify_ledger'\` | **$STATS_MS ms** | $(per_run $STATS_TIMES) |
| \`SELECT count(*) FROM verify_ledger\` | $COUNT_MS ms | $(per_run $COUNT_TIMES) |
| ratio stats / count | **$STATS_RATIO** | (reported; lower is better) |

The cluster preloads the library (\`shared_preload_libraries = 'ledger'\`), so every append measured
in sections 1 and 2 also counted itself in shared memory.

## 4. Merkle trees and checkpoints

One ledger table with ONE chain (\`ledger.enable(tbl, 'anchor_id')\`, every record on anchor
\`$CHAIN1\`) of $MERKLE_ROWS records (table $MERKLE_MB MB, cached; loading took $MERKLE_LOAD s),
on the same cluster, after sections 1-3.

### (a) \`ledger.merkle_root(tbl, chain, 1, $MERKLE_ROWS)\`

Best of $MERKLE_RUNS, interleaved with the Merkle limit. A tree over n leaves costs 2n − 1 SHA3-256 calls on
33-byte (leaf) and 65-byte (node) inputs, each one Keccak block, cheaper than hashing a
$LIMIT_BYTES-byte record (three blocks); so merkle_root is compared both with the record-hash limit of
section 3 (i) and with the one-core limit of Merkle hashing itself: \`bench/sha3_limit --merkle\`
computes the RFC 9162 tree hash exactly as docs/FORMAT.md specifies (checked against its test vectors)
over the same $MERKLE_ROWS stored hashes (exported with \`COPY ... TO STDOUT\` in seq order, decoded
before timing), with the same \`sha3\` crate, on one core. Its root equals \`ledger.merkle_root\`'s:
\`$MERKLE_ROOT\` (and the checkpoint of these records states the same root).

| what | rows/s | ratio | target | |
|---|---:|---:|---|---|
| **\`ledger.merkle_root\`** (runs: $(per_run $MERKLE_TIMES) s) | $MERKLE_RPS | | | |
| (i) one-core SHA3-256 record-hash limit (section 3 (i), hashes/s) | $LIMIT_HPS | merkle_root/limit **$MERKLE_VS_SHA3** | none | |
| (ii) one-core Merkle-tree limit (bench/sha3_limit --merkle, leaves/s; runs: $(per_run $MERKLE_LIMIT_RATES)) | $MERKLE_LIMIT_LPS | merkle_root/Merkle limit **$MERKLE_VS_MLIMIT** | none | |

### (b) Checkpoint cost: \`SELECT * FROM ledger.checkpoint(tbl, chain)\` after $CP_NEW new records

*big*: the chain above, checkpointed at $MERKLE_ROWS records (that first checkpoint, a full tree, took
$CP_FIRST_BIG s); *small*: a chain of $CP_NEW records in its own table, checkpointed (took $CP_FIRST_SMALL s).
Each of $CP_RUNS rounds appends $CP_NEW records to each (one \`INSERT ... SELECT\`), runs \`CHECKPOINT\`,
then times the ledger checkpoint; the big chain ends at $CP_LAST_N records. Best of $CP_RUNS.

| chain | best time | runs (s) | ratio | target | |
|---|---:|---|---:|---|---|
| small ($CP_NEW records + $CP_NEW new per round) | $CP_SMALL_BEST s | $(per_run $CP_SMALL_TIMES) | 1.00 | | |
| **big** ($MERKLE_ROWS records + $CP_NEW new per round) | $CP_BIG_BEST s | $(per_run $CP_BIG_TIMES) | big/small **$CP_RATIO** | ≤ 2 | $(met "$CP_RATIO" "<=" 2) |

### (c) Proofs and \`ledger.verify_checkpoint\` on the $MERKLE_ROWS-record checkpoint

They read the tiles of the tree they need: the subtree roots the checkpoints stored in
\`ledger.subtrees\` and at most two runs of 256 record hashes (section 9 (c) has them on a chain of
SCALE_ROWS records). Best of $PROOF_RUNS; no target here. Each proof was checked
once with \`ledger.verify_inclusion\` / \`ledger.verify_consistency\`, and \`verify_checkpoint\` reported no
failed check.

| call | best (ms) | runs (ms) |
|---|---:|---|
| \`ledger.inclusion_proof(cid, $PROOF_SEQ)\` | $INCL_BEST | $(per_run $INCL_TIMES) |
| \`ledger.consistency_proof(cid of $MERKLE_ROWS, cid of $CP_LAST_N)\` | $CONS_BEST | $(per_run $CONS_TIMES) |
| \`ledger.verify_checkpoint(cid)\` (\`count(*) FILTER (WHERE ok IS FALSE)\`) | $VCP_BEST | $(per_run $VCP_TIMES) |

## 5. History-tracked tables

An accounts table \`(id bigint PRIMARY KEY, owner text, balance numeric, status text, updated_at
timestamptz)\` in three variants: *untracked* (no trigger: the baseline), *tracked*
(\`ledger.enable_history(tbl)\`: every change appends a version to the history ledger, chained by
primary key) and *hand*, the best hand-written alternative in the style of the temporal_tables
extension: a PL/pgSQL \`AFTER\` row trigger inserting the version (op, time, role, transaction, the row
as jsonb) into a history table, chained per key with pgcrypto \`digest(..., 'sha256')\` after an index
lookup of the key's previous version on \`(key, seq)\`. Each table was tracked while empty and filled
with $HIST_ROWS rows, $HIST_BATCH per transaction (each key a version; see below why in batches).

### (a) Single-row autocommit UPDATEs (pgbench)

\`UPDATE tbl SET balance = balance + 1, updated_at = now() WHERE id = :id\` with a random id among
$HIST_ROWS, \`pgbench -n -M prepared -T $PGBENCH_SECONDS\`, fsync on, -j = min(clients, nproc).
$HIST_RUNS round(s), each running every variant once on the same three tables (every other round in
reverse order). The tps columns are the best run of each variant; every ratio is the median over the
rounds of the ratio within a round, as in section 2.

| clients | untracked tps | tracked tps | tracked/untracked | target | | hand tps | hand/untracked | tracked/hand | target | |
|---:|---:|---:|---:|---|---|---:|---:|---:|---|---|
| 1 | $(tps_of "hist untracked 1") | $(tps_of "hist tracked 1") | **$HIST_R1** | ≥ 0.7 | $(met "$HIST_R1" ">=" 0.7) | $(tps_of "hist hand 1") | $HIST_H1 | **$HIST_TH1** | > 1 | $(met "$HIST_TH1" ">" 1) |
| $C | $(tps_of "hist untracked $C") | $(tps_of "hist tracked $C") | **$HIST_RC** | ≥ 0.7 | $(met "$HIST_RC" ">=" 0.7) | $(tps_of "hist hand $C") | $HIST_HC | **$HIST_THC** | > 1 | $(met "$HIST_THC" ">" 1) |

Per-round tracked/untracked, 1 client: $(per_run $HIST_PAIRED_1); $C clients: $(per_run $HIST_PAIRED_C).
All runs (tps): $(for config in "${HIST_CONFIGS[@]}"; do printf '%s: %s; ' "$config" "$(per_run "$(printf '%.0f ' ${PGB_TPS[hist $config]})")"; done | sed 's/; $/./')

After the runs \`ledger.verify\` of the tracked table reported nothing (its history's chains, and the
table equal to their replay), the hand-written chains linked up, and the histories had recorded
$(echo "$HIST_UPDATES" | awk '{print $1}') (tracked) and $(echo "$HIST_UPDATES" | awk '{print $2}') (hand) updates
beyond the rows' first versions.

### (b) \`ledger.verify\` of a tracked table: $HIST_VERIFY_ROWS rows, $HIST_VERSIONS versions each

$HIST_VERSIONS_N versions (table and history $HIST_VERIFY_MB MB); filling it ($HIST_VERIFY_ROWS inserts,
then $((HIST_VERSIONS - 1)) updates of every row, $HIST_BATCH keys per transaction, $NPROC sessions at once)
took $HIST_VERIFY_LOAD s. Best of $HIST_VERIFY_RUNS, interleaved; rates are versions per second.

| what | versions/s | ratio to the one-core SHA3 limit of 3 (i) ($LIMIT_HPS hashes/s) |
|---|---:|---:|
| **\`ledger.verify(tbl)\`**: the history's chains and the table against their replay (runs: $(per_run $HIST_VERIFY_TIMES) s) | $HIST_VERIFY_RPS | **$HIST_VERIFY_LIMIT** (reported) |
| \`ledger.verify(tbl_history)\`: the chains alone (runs: $(per_run $HIST_CHAINS_TIMES) s) | $HIST_CHAINS_RPS | $HIST_CHAINS_LIMIT |

The difference between the two rows is the state check (the current table against the last version
of each key). The section 3 (i) limit hashes records of that ledger's shape; a version here is a
different size, so the ratio is a guide, not an exact bound.

Why in batches: each key's chain lock is held to the end of its transaction, and the lock table has
room for max_locks_per_transaction × max_connections (64 × 100 by default) locks, so one statement
writing many thousands of keys of a tracked table (or \`ledger.enable_history\` of a table already
holding that many rows) fails with "out of shared memory".
EOF
}
# Section 6, the same in a full run and alone (BENCH_ONLY=6): it says how it was measured, so it can
# be refreshed alone in a file whose header describes an earlier full run.
report_section_6() {
  local key kind what name label stage row
  cat <<EOF
## 6. Retention: \`ledger.prune\` of $RET_HALF of $RET_ROWS records ($RET_CHAINS chains)

$RET_WHERE

$(provenance "$RET_STARTED" "$RET_FINISHED")

A ledger of $RET_ROWS records in $RET_CHAINS chains ($RET_MB MB): section 1's columns with a
\`timestamptz\` column \`at\` in place of \`ts\` (\`rid uuid PRIMARY KEY, anchor_id uuid, slot text, kind
text, at timestamptz, payload jsonb, sig bytea, producer text, version text\`) and an index on
\`(anchor_id, at)\`, then \`ledger.enable(tbl, 'anchor_id')\` (which adds \`seq\`, \`prev_hash\`, \`hash\`, the
unique \`(anchor_id, seq)\` index and the triggers) and \`ledger.set_retention(tbl, '$RET_KEEP', 'at')\`.
It is loaded by one \`INSERT ... SELECT\` in which the older half of every chain comes first: seqs 1 to
$RET_PER_CHAIN of each chain are 30 days old, seqs $((RET_PER_CHAIN + 1)) to $((2 * RET_PER_CHAIN)) one day old. *plain* is the
user's table as it was without the ledger: the same columns but \`seq\`, \`prev_hash\` and \`hash\`, the
same rows, the same primary key and \`(anchor_id, at)\` index, no triggers. Loading took
$RET_LOAD_BEST s (ledger) and $RET_PLAIN_LOAD_BEST s (plain); the tables were then vacuumed and analyzed.

### (a) \`SELECT * FROM ledger.prune(tbl)\` against a plain \`DELETE\`

The prune, against \`DELETE FROM plain WHERE at < now() - interval '$RET_KEEP'\` of the same rows; each in
autocommit (its commit included) after a \`CHECKPOINT\`, on fresh tables in each of $RET_RUNS round(s)
(every other round plain first); best time. The prune returned $RET_CHAINS chains, $RET_HALF records
pruned, through seq $RET_PER_CHAIN of each: it read and verified each record it removed (recomputing its hash
and its link to the one before), made $RET_CPS checkpoint(s) covering $RET_CP_RECORDS records (no checkpoint
covered them before: one per chain, over all its records), kept the $RET_HALF hashes in \`ledger.pruned\`
($RET_KEPT_ROWS rows of up to 4096, $(mb "$RET_KEPT_BYTES") MB of hashes) and deleted the records; the DELETE
removed the same $RET_HALF rows. The second prune is of a third table loaded alike, every chain of
which was checkpointed before (untimed): it makes no checkpoint, as with the scheduled
\`ledger.checkpoint_all\`.

| variant | best time | runs (s) | records/s | ratio | target |
|---|---:|---|---:|---:|---|
| plain \`DELETE\` (the table without the ledger) | $RET_DELETE_BEST s | $(per_run $RET_DELETE_TIMES) | $RET_DELETE_RPS | 1.00 | |
| **\`ledger.prune\`** | $RET_PRUNE_BEST s | $(per_run $RET_PRUNE_TIMES) | $RET_PRUNE_RPS | **$RET_RATIO** | none (reported) |
| **\`ledger.prune\`**, every chain checkpointed before (as \`checkpoint_all\` keeps a ledger) | $RET_CP_PRUNE_BEST s | $(per_run $RET_CP_PRUNE_TIMES) | $RET_CP_PRUNE_RPS | **$RET_CP_RATIO** | none (reported) |

### (b) Space: before the prune, after it, after \`VACUUM\`, after $RET_HALF more records

Sizes in MB: a table's is \`pg_table_size\` (heap, TOAST, free space and visibility maps), an index's
\`pg_relation_size\`, \`ledger.pruned\`'s \`pg_total_relation_size\` (its heap, the TOAST holding the
hashes, its indexes). The \`VACUUM\` is a plain one (not \`FULL\`; it took $RET_VACUUM_LEDGER s on the ledger,
$RET_VACUUM_PLAIN s on plain); then $RET_HALF new records went into each table (one \`INSERT ... SELECT\`:
$RET_REFILL_LEDGER s into the ledger, $RET_REFILL_PLAIN s into plain, ratio $RET_REFILL_RATIO).

| relation | before the prune | after the prune | after \`VACUUM\` | after $RET_HALF more records |
|---|---:|---:|---:|---:|
EOF
  for key in "${RET_SIZE_KEYS[@]}"; do
    IFS=: read -r kind what name <<<"$key"
    case $what in
      table) label="**$kind table** \`$name\`" ;;
      index) label="&nbsp;&nbsp;index \`$name\`" ;;
      indexes) label="$kind indexes, total" ;;
      pruned) label="\`ledger.pruned\` (all ledgers; none pruned before)" ;;
    esac
    row="| $label"
    for stage in "${RET_STAGES[@]}"; do row+=" | $(ret_mb "$stage" "$key")"; done
    echo "$row |"
  done
  cat <<EOF

What the $RET_HALF new records added after the \`VACUUM\` (MB, and percent of the size after the \`VACUUM\`); the
freed space of the table is reused if it barely grows (the check below: less than 5 %):

| | ledger | plain |
|---|---:|---:|
| table | **$RET_LEDGER_GROWTH** | **$RET_PLAIN_GROWTH** |
| indexes, total | $RET_LEDGER_IGROWTH | $RET_PLAIN_IGROWTH |
| the table grew less than 5 % | $(met "$RET_LEDGER_GROWTH_PCT" "<" 5) | $(met "$RET_PLAIN_GROWTH_PCT" "<" 5) |

Where the indexes grow, they grow on both tables alike. \`VACUUM (VERBOSE)\` reported, in pages:
$RET_VACUUM_INDEXES. An index ordered by chain, then time or seq, kept the pruned records' entries
on pages of their own, which the VACUUM emptied and deleted; PostgreSQL reuses a deleted btree page
only once no snapshot can still need it, which a later \`VACUUM\` records, so until then new entries
extend the index instead.

\`ledger.pruned\` keeps 32 bytes per pruned record (plus its rows' own columns, and a ledger's columns of its
own); the ledger verified after the new records.

### (c) \`ledger.verify(tbl)\` before and after the prune

\`SELECT count(*) FROM ledger.verify(tbl)\`, best of $RET_VERIFY_RUNS at each stage, reporting nothing at
each; after the prune it starts each chain after its pruned part (its first kept record linked to the
last kept hash), so it reads and hashes $RET_HALF records.

| when | records verified | best | runs (s) | records/s |
|---|---:|---:|---|---:|
| before the prune | $RET_ROWS | $RET_VB s | $(per_run $RET_VERIFY_BEFORE) | $RET_VB_RPS |
| after the prune (before \`VACUUM\`) | $RET_HALF | $RET_VP s | $(per_run $RET_VERIFY_PRUNED) | $RET_VP_RPS |
| after the \`VACUUM\` | $RET_HALF | $RET_VV s | $(per_run $RET_VERIFY_VACUUMED) | $RET_VV_RPS |
EOF
}

# Section 7, the same in a full run and alone (BENCH_ONLY=7), like section 6.
report_section_7() {
  local c all=""
  for c in "${PART_CONFIGS[@]}"; do
    # shellcheck disable=SC2086
    all+="$c: $(per_run "$(printf '%.0f ' ${PGB_TPS[part $c]})"); "
  done
  cat <<EOF2
## 7. Appends on a partitioned ledger ($((PART_PARTITIONS + 1 + PART_FUTURE)) monthly partitions and a default)

$PART_WHERE

$(provenance "$PART_STARTED" "$PART_FINISHED")

Four tables with section 6's columns (section 1's with \`at timestamptz NOT NULL\` in place of \`ts\`:
\`rid uuid, anchor_id uuid, slot text, kind text, at timestamptz, payload jsonb, sig bytea, producer
text, version text\`), primary key \`(rid, at)\` (a partitioned table's must hold its partition key; the
unpartitioned tables have the same, so the four are alike) and an index on \`(anchor_id, at)\`:
*plain* (no triggers), *plain, partitioned*, *ledger* (after \`ledger.enable(tbl, 'anchor_id')\`, which
adds \`seq\`, \`prev_hash\`, \`hash\`, the \`(anchor_id, seq)\` index and the triggers) and *ledger,
partitioned* (the same \`ledger.enable\` of the partitioned table; its \`(anchor_id, seq)\` index is not
unique, as PostgreSQL requires the partition key in a partitioned table's unique index). The
partitioned ones are \`PARTITION BY RANGE (at)\` with $PART_PARTITIONS monthly partitions of the past
(from $PART_FIRST), the current month's (\`tbl_$PART_SUFFIX\`, from $PART_MONTH to $PART_NEXT), $PART_FUTURE empty
future months (to $PART_LAST, as pg_partman's premake keeps them) and a \`DEFAULT\` partition (left
empty: a partitioned ledger refuses records there), made before \`ledger.enable\`. Every record is dated
in the current month, its \`at\` between $PART_FROM_SHOWN and $PART_NOW_SHOWN (the section's start;
the span is an hour unless the month began less than an hour before), so every append goes into the
current month's partition, and a ledger append's head lookup, which probes the partitions from the last back,
first probes the $PART_FUTURE empty ones after it.

**Baseline:** the partitioned ledger is compared with the unpartitioned ledger (same columns, key,
index, rows, in the same run on the same cluster); the plain tables show, for reference, what the
partitioning costs without the ledger.

### (a) Bulk load: one \`INSERT ... SELECT\` of $PART_ROWS rows ($PART_CHAINS chains)

In autocommit (its commit included) after a \`CHECKPOINT\`, into a fresh table each run; the same rows
into each table. $PART_RUNS runs of the four, interleaved (every other run in reverse order); best time.

| variant | best time | runs (s) | partitioned / unpartitioned | target | |
|---|---:|---|---:|---|---|
| plain | ${PART_BEST[plain]} s | $(per_run "${PART_TIMES[plain]}") | | | |
| plain, partitioned | ${PART_BEST[plain_part]} s | $(per_run "${PART_TIMES[plain_part]}") | $PART_BULK_PLAIN_RATIO | (reference) | |
| ledger | ${PART_BEST[ledger]} s | $(per_run "${PART_TIMES[ledger]}") | | | |
| **ledger, partitioned** | ${PART_BEST[ledger_part]} s | $(per_run "${PART_TIMES[ledger_part]}") | **$PART_BULK_RATIO** | ≤ 1.1 | $(met "$PART_BULK_RATIO" "<=" 1.1) |

For reference, ledger/plain: $PART_BULK_LP unpartitioned, $PART_BULK_LP_PART partitioned.

### (b) Single-row autocommit INSERTs (pgbench)

\`pgbench -n -M prepared -T $PGBENCH_SECONDS\`, one INSERT per transaction on a random chain of
$PGBENCH_ANCHORS (\`at\` a random time in the same span), fsync on, -j = min(clients, nproc), into a fresh
table for each run. $PART_PGBENCH_RUNS round(s), each running every variant once, back to back (every
other round in reverse order). The tps columns are the best run of each variant; every ratio is the
median over the rounds of the ratio within a round, as in section 2.

| clients | plain tps | plain, partitioned tps | partitioned / unpartitioned | ledger tps | ledger, partitioned tps | partitioned / unpartitioned | target | |
|---:|---:|---:|---:|---:|---:|---:|---|---|
| 1 | $(tps_of "part plain 1") | $(tps_of "part plain_part 1") | $PART_PGB_PLAIN_1 | $(tps_of "part ledger 1") | $(tps_of "part ledger_part 1") | **$PART_PGB_1** | ≥ 0.9 | $(met "$PART_PGB_1" ">=" 0.9) |
| $PC | $(tps_of "part plain $PC") | $(tps_of "part plain_part $PC") | $PART_PGB_PLAIN_C | $(tps_of "part ledger $PC") | $(tps_of "part ledger_part $PC") | **$PART_PGB_C** | ≥ 0.9 | $(met "$PART_PGB_C" ">=" 0.9) |

Per-round ledger partitioned / unpartitioned, 1 client: $(per_run "$PART_PAIRED_1"); $PC clients:
$(per_run "$PART_PAIRED_C"). For reference, ledger/plain unpartitioned: 1 client $PART_PGB_LP_1, $PC clients
$PART_PGB_LP_C.

All runs (tps): ${all%; }.

After every load (bulk and pgbench) each table held every row inserted (for pgbench, one per
transaction it counted), all in the current month's partition; \`ledger.verify\` of both ledgers found
nothing, and every chain's seqs were 1 to its number of records, without gaps or repeats.
EOF2
}


# Section 8, the same in a full run and alone (BENCH_ONLY=8), like section 6.
report_section_8() {
  local c all="" k ref_priv one_priv all_priv
  for c in "${AUD_CONFIGS[@]}"; do
    # shellcheck disable=SC2086
    all+="$c: $(per_run "$(printf '%.0f ' ${PGB_TPS[aud $c]})"); "
  done
  ref_priv=$(kb_mb "$((V8_REF_HWM - V8_REF_SHMEM))")
  one_priv=$(kb_mb "$((V8_HWM_ONE - V8_SHMEM_ONE))")
  all_priv=$(kb_mb "$((V8_HWM_ALL - V8_SHMEM_ALL))")
  cat <<EOF
## 8. Verification on every core, and pgAudit as a peer

$V8_WHERE

$(provenance "$V8_STARTED" "$V8_FINISHED")

### (a) \`ledger.verify\` on every core: $VERIFY8_ROWS records ($V8_CHAINS chains, table $V8_MB MB, cached), on $NPROC cores

A ledger with the columns of \`ledger.records\` (section 1's built-in-schema ledger table: \`ledger.enable(tbl, 'anchor_id')\`)
of $VERIFY8_ROWS records in $V8_CHAINS chains, loaded by \`INSERT ... SELECT\`s of up to $V8_BATCH records, $NPROC
sessions at once each on its own chains ($V8_LOAD s), then vacuumed, analyzed and read once. \`SELECT count(*) FROM ledger.verify(tbl)\`, each
run in a fresh session, with \`SET ledger.verify_threads = 1\` (the backend alone, the previous
behaviour) and at the setting's default (\`RESET\`: \`ledger.verify_threads\` = $V8_DEFAULT_THREADS, one thread
per core, so $NPROC on this machine's $NPROC cores; the backend reads and encodes the records, the extra
threads only hash them). $VERIFY8_RUNS rounds, the order alternating, best time; every run reported no
problem. The SHA3-256 limit, after the rounds: \`bench/sha3_limit --threads N\` over $V8_SAMPLE_N canonical
records (\`ledger.canonical_bytes\` of $(
if ((V8_STEP == 1)); then echo "every record"; else echo "every ${V8_STEP}th seq of each chain"; fi
), mean $V8_LIMIT_BYTES bytes, each checked against its stored \`hash\`; exporting them, $NPROC sessions at
once, took $V8_EXPORT s), $V8_SAMPLE_N hashes a pass, best of $V8_PASSES passes (one run of the tool for each N);
with N threads each hashes its own interleaved slice of the records round-robin, and the rate is all
their hashes over the wall time of the pass.

| what | rows/s | runs |
|---|---:|---|
| \`ledger.verify\`, \`ledger.verify_threads = 1\` | $V8_ONE_RPS | $(per_run "${V8_TIMES[1]}") s |
| **\`ledger.verify\`, default ($NPROC threads)** | **$V8_ALL_RPS** | $(per_run "${V8_TIMES[default]}") s |
| one-core SHA3-256 limit (\`sha3_limit --threads 1\`, hashes/s) | $V8_LIMIT_ONE | best of $V8_PASSES passes |
| all-core SHA3-256 limit (\`sha3_limit --threads $NPROC\`, hashes/s) | $V8_LIMIT_ALL | best of $V8_PASSES passes |

| ratio | value | target | |
|---|---:|---|---|
| verify, all threads / verify, one thread | **$V8_SPEEDUP** | ≥ 1.7 | $(met "$V8_SPEEDUP" ">=" 1.7) |
| verify, all threads / all-core SHA3 limit | **$V8_ALL_VS_LIMIT** | ≥ 0.5 | $(met "$V8_ALL_VS_LIMIT" ">=" 0.5) |
| verify, one thread / one-core SHA3 limit | $V8_ONE_VS_LIMIT | (reported) | |
| all-core / one-core SHA3 limit (what the machine's cores give) | $V8_LIMIT_SPEEDUP | (reference) | |

The backend's peak memory: \`VmHWM\` of \`/proc/<pid>/status\`, read with \`pg_read_file\` in the same session
after the verify (the maximum over the runs), against a fresh backend that ran only \`SELECT 1\`. \`VmHWM\`
counts every page the process touched, including the shared buffers it read (up to the table's
$V8_MB MB, the same for one thread and all); \`RssShmem\` (read at the same time) is that shared part,
so peak minus shared is about the backend's own memory.

| backend | peak RSS (\`VmHWM\`) | shared (\`RssShmem\`) | peak − shared |
|---|---:|---:|---:|
| fresh, \`SELECT 1\` only (reference) | $(kb_mb "$V8_REF_HWM") MB | $(kb_mb "$V8_REF_SHMEM") MB | $ref_priv MB |
| \`ledger.verify\`, one thread | $(kb_mb "$V8_HWM_ONE") MB | $(kb_mb "$V8_SHMEM_ONE") MB | $one_priv MB |
| \`ledger.verify\`, $NPROC threads | $(kb_mb "$V8_HWM_ALL") MB | $(kb_mb "$V8_SHMEM_ALL") MB | $all_priv MB |

### (b) pgAudit as a peer (pgAudit $AUDIT_VERSION)

What Amazon recommends in place of its retired QLDB is audit logging of the database with pgAudit. The
cluster was restarted with \`shared_preload_libraries = 'ledger,pgaudit'\` (\`ALTER SYSTEM\`, then
scripts/cluster.sh stop and start), then \`CREATE EXTENSION pgaudit\`; \`pgaudit.log\` stayed \`'none'\` but in
the sessions writing the audited table. Three tables with the user's columns (\`ledger.records\`' but
\`seq\`, \`prev_hash\`, \`hash\`: \`rid uuid PRIMARY KEY, anchor_id uuid, slot text, kind text, ts timestamptz,
payload jsonb, sig bytea, producer text, version text\`) and an index on \`(anchor_id, ts)\`:

- *plain*: no trigger, not audited (the baseline);
- *audited*: the same table, written only by sessions with \`pgaudit.log = 'write'\` (\`SET\` in the
  bulk load's session, \`PGOPTIONS='-c pgaudit.log=write'\` for pgbench): every \`INSERT\` is logged;
- *ledger*: the same table after \`ledger.enable(tbl, 'anchor_id')\` (adds \`seq\`, \`prev_hash\`, \`hash\`,
  the \`(anchor_id, seq)\` index and the triggers), not audited.

What each guarantees: **pgAudit** writes a log of the statements run (who, when, what) to the server
log, with no tamper evidence: whoever can write the table or the log can change history and leave no
trace. **The ledger** chains every record's SHA3-256 hash to the one before in its chain and fixes the
chains in Merkle checkpoints, so a changed, inserted or removed record is detected, in SQL
(\`ledger.verify\`, \`ledger.verify_checkpoint\`) and offline from an export.

#### Bulk load: one \`INSERT ... SELECT\` of $BULK_ROWS rows ($BULK_ANCHORS chains), one transaction

As section 1: timed from before \`BEGIN\` to after \`COMMIT\`, after a \`CHECKPOINT\`, fresh table each run,
$BULK_RUNS runs of the three (the order rotated), best time.

| variant | best time | runs (s) | ratio to plain |
|---|---:|---|---:|
| plain | ${AUD_BEST[plain]} s | $(per_run "${AUD_TIMES[plain]}") | 1.00 |
| audited (pgAudit) | ${AUD_BEST[audited]} s | $(per_run "${AUD_TIMES[audited]}") | $AUD_BULK_AP |
| **ledger** | ${AUD_BEST[ledger]} s | $(per_run "${AUD_TIMES[ledger]}") | **$AUD_BULK_LP** |

ledger/audited: **$AUD_BULK_LA** (reported, no target). pgAudit logs one line per statement, however
many rows it writes.

#### Single-row autocommit INSERTs (pgbench)

As section 2: \`pgbench -n -M prepared -T $PGBENCH_SECONDS\`, one INSERT per transaction on a random chain of
$PGBENCH_ANCHORS, fsync on, -j = min(clients, nproc), a fresh table for each run; $PGBENCH_RUNS8 round(s),
each running every variant once (every other round in reverse order). The tps columns are the best run
of each variant; every ratio is the median over the rounds of the ratio within a round.

| clients | plain tps | audited tps | ledger tps | audited/plain | ledger/plain | **ledger/audited** |
|---:|---:|---:|---:|---:|---:|---:|
| 1 | $(tps_of "aud plain 1") | $(tps_of "aud audited 1") | $(tps_of "aud ledger 1") | $AUD_PGB_AP_1 | $AUD_PGB_LP_1 | **$AUD_PGB_LA_1** |
| $AC | $(tps_of "aud plain $AC") | $(tps_of "aud audited $AC") | $(tps_of "aud ledger $AC") | $AUD_PGB_AP_C | $AUD_PGB_LP_C | **$AUD_PGB_LA_C** |

All runs (tps): ${all%; }. The ratios are reported, no target.

The audit really ran: after every audited run the server log held at least one new \`AUDIT: SESSION\`
line naming the table per statement (one per bulk load, one per pgbench transaction counted), $AUD_LINES
in all, and none ever named the plain or ledger table (the server log reached $AUD_LOG_MB MB). The first:

\`\`\`
$AUD_SAMPLE
\`\`\`

Afterwards pgaudit was dropped and the cluster restarted with \`shared_preload_libraries = 'ledger'\`, as before.
EOF
}

# Section 9, the same in a full run and alone (BENCH_ONLY=9), like section 6.
report_section_9() {
  local step before ls ps lr pr key label
  cat <<EOF
## 9. At scale: $SCALE_ROWS records in $SCALE_CHAINS chains

$SCALE_WHERE

$(provenance "$SCALE_STARTED" "$SCALE_FINISHED")

Two tables with the columns of \`ledger.records\`: *ledger* (the built-in schema of section 1, after
\`ledger.enable(tbl, 'anchor_id')\`) and *plain* (the same table with no triggers, \`seq\`, \`prev_hash\`,
\`hash\` computed cheaply in the \`SELECT\` with md5, so it stores the same columns). Each was loaded in
$SCALE_STEPS steps of $SCALE_STEP_ROWS rows, one \`INSERT ... SELECT\` per step (record i on chain
i % $SCALE_CHAINS + 1, so every chain grows at every step), timed from before \`BEGIN\` to after \`COMMIT\`,
after a \`CHECKPOINT\`; the two alternate, the order reversed every other step. The 10M-record run:
\`SCALE_ROWS=10000000 BENCH_ONLY=9 bench/run.sh\`.

### (a) The append rate as the tables grow

| step | rows before | ledger (s) | ledger rows/s | plain (s) | plain rows/s | ledger/plain rows/s |
|---:|---:|---:|---:|---:|---:|---:|
EOF
  for ((step = 1; step <= SCALE_STEPS; step++)); do
    before=$(((step - 1) * SCALE_STEP_ROWS))
    ls=${SCALE_SECS[ledger $step]} ps=${SCALE_SECS[plain $step]}
    lr=$(calc "$SCALE_STEP_ROWS / $ls" 0) pr=$(calc "$SCALE_STEP_ROWS / $ps" 0)
    echo "| $step | $before | $ls | $lr | $ps | $pr | $(calc "$ps / $ls" 2) |"
  done
  cat <<EOF

The last step's rows/s / the first step's: ledger **$SCALE_LEDGER_TREND**, plain $SCALE_PLAIN_TREND (1.00: no slower
as the table grows); ledger/plain rows/s **$SCALE_FIRST_RATIO** at the first step, **$SCALE_LAST_RATIO** at the last.
Reported, no target.

### (b) Verify, checkpoint every chain, proofs

On the ledger of $SCALE_ROWS records ($SCALE_MB MB with its indexes), vacuumed and analyzed; in autocommit.

| call | best | runs | rate |
|---|---:|---|---:|
| \`SELECT count(*) FROM ledger.verify(tbl)\` (default \`ledger.verify_threads\` = $SCALE_THREADS, $NPROC cores; no problem found) | $SCALE_VERIFY_BEST s | $(per_run "$SCALE_VERIFY_TIMES") s | $SCALE_VERIFY_RPS records/s |
| \`SELECT ... FROM ledger.checkpoint(tbl)\`: the first checkpoint of each of the $SCALE_CHAINS chains ($SCALE_PER_CHAIN records each), after a \`CHECKPOINT\` | $SCALE_CP_SECS s | (one run) | $SCALE_CP_MS ms per chain |
| \`ledger.inclusion_proof(cid, $SCALE_PROOF_SEQ)\` on one chain's checkpoint ($SCALE_PER_CHAIN records) | $SCALE_INCL_BEST ms | $(per_run "$SCALE_INCL_TIMES") ms | |
| \`ledger.consistency_proof\` from that checkpoint to the chain's next ($((SCALE_PER_CHAIN + SCALE_NEW)) records, after $SCALE_NEW more) | $SCALE_CONS_BEST ms | $(per_run "$SCALE_CONS_TIMES") ms | |

Best of $SCALE_VERIFY_RUNS (verify) and of $PROOF_RUNS (proofs); each proof was checked once with
\`ledger.verify_inclusion\` (with the checkpoint's root and size) and \`ledger.verify_consistency\`.

### (c) Proofs on one chain of $SCALE_ROWS records

A ledger of the same shape with every record on one chain (one \`INSERT ... SELECT\`, $SCALE_ONE_LOAD s),
checkpointed ($SCALE_ONE_CP_SECS s; the checkpoint stored $SCALE_ONE_SUBTREES subtree roots in
\`ledger.subtrees\`, one per 256 records and one per 65,536), then $SCALE_NEW more records and a second
checkpoint. Against the same proofs on (b)'s chain of $SCALE_PER_CHAIN records: $SCALE_N_GROWTH times the
records, $SCALE_LOG_GROWTH times their logarithm. Best of $PROOF_RUNS; each proof checked as in (b).

| call | best | runs | / (b)'s | target | |
|---|---:|---|---:|---|---|
| \`ledger.inclusion_proof(cid, $SCALE_ONE_SEQ)\` | $SCALE_ONE_INCL_BEST ms | $(per_run "$SCALE_ONE_INCL_TIMES") ms | $SCALE_ONE_INCL_GROWTH | < 10 ms | $(met "$SCALE_ONE_INCL_BEST" "<" 10) |
| \`ledger.consistency_proof\` ($SCALE_ROWS to $((SCALE_ROWS + SCALE_NEW)) records) | $SCALE_ONE_CONS_BEST ms | $(per_run "$SCALE_ONE_CONS_TIMES") ms | $SCALE_ONE_CONS_GROWTH | < 10 ms | $(met "$SCALE_ONE_CONS_BEST" "<" 10) |

### (d) Bytes per record

After the load ($SCALE_ROWS rows each) and \`VACUUM (ANALYZE)\`: \`pg_relation_size\` of the heap (main fork)
and of each index (\`pg_index\`), and \`pg_total_relation_size\` (all of it, with TOAST and the maps),
divided by the rows.

| relation | ledger bytes/record | plain bytes/record | ledger MB | plain MB |
|---|---:|---:|---:|---:|
EOF
  for key in "${SCALE_SIZE_KEYS[@]}"; do
    case $key in
      heap) label="heap" ;;
      total) label="**total** (\`pg_total_relation_size\`)" ;;
      index:*) label="index \`${key#index:}\`" ;;
    esac
    echo "| $label | $(scale_cell ledger "$key" per) | $(scale_cell plain "$key" per) | $(scale_cell ledger "$key" mb) | $(scale_cell plain "$key" mb) |"
  done
  cat <<EOF

ledger/plain in all: **$SCALE_TOTAL_RATIO**. Both tables store the same columns; the ledger adds the unique
\`(anchor_id, seq)\` index that \`ledger.enable\` makes.
EOF
}
# scale_cell KIND KEY per|mb: bytes per record or MB of one relation of section 9, or "—" if that
# table has no such index.
scale_cell() {
  local b=${SCALE_SIZE[$1 $2]:-}
  if [[ -z $b ]]; then echo "—"; elif [[ $3 == per ]]; then calc "$b / $SCALE_ROWS" 1; else calc "$b / 1048576" 1; fi
}

mkdir -p "$(dirname "$BENCH_RESULTS")"
# section_where N MINUTES: how section N (6 to 9, which can also run alone) was measured; before the
# results file is written.
section_where() {
  if [[ -z $ONLY ]]; then
    echo "Measured in the run described at the top of this file, on its cluster after sections 1-$(($1 - 1)) ($2 min)."
  elif [[ -f $BENCH_RESULTS ]]; then
    echo "Measured alone (\`BENCH_ONLY=$1\`) by the command below, on its own fresh cluster, not in the run described at the top of this file ($2 min).$QUICK_NOTE$SO_NOTE"
  else
    echo "Measured alone (\`BENCH_ONLY=$1\`) by the run described at the top of this file ($2 min)."
  fi
}
if [[ -z $ONLY || $ONLY == 6 ]]; then
  RET_WHERE=$(section_where 6 "$RET_MINUTES")
  report_section_6 >"$WORK/section6.md"
fi
if [[ -z $ONLY || $ONLY == 7 ]]; then
  PART_WHERE=$(section_where 7 "$PART_MINUTES")
  report_section_7 >"$WORK/section7.md"
fi
if [[ -z $ONLY || $ONLY == 8 ]]; then
  V8_WHERE=$(section_where 8 "$V8_MINUTES")
  report_section_8 >"$WORK/section8.md"
fi
if [[ -z $ONLY || $ONLY == 9 ]]; then
  SCALE_WHERE=$(section_where 9 "$SCALE_MINUTES")
  report_section_9 >"$WORK/section9.md"
fi
if [[ -z $ONLY ]]; then
  { report_head; echo; report_sections_1_to_5
    for n in 6 7 8 9; do echo; cat "$WORK/section$n.md"; done; } >"$BENCH_RESULTS.tmp"
elif [[ -f $BENCH_RESULTS ]]; then
  # Section ONLY in place of the one there (up to the next "## N." heading), else before the first
  # section after it, else at the end; every other line as it was.
  awk -v sec="$ONLY" -v new="$WORK/section$ONLY.md" '
    function emit(  line) { while ((getline line < new) > 0) print line; close(new); done = 1 }
    /^## [0-9]+[a-z]?\. / {
      n = $2 + 0
      if (skipping) { skipping = 0; print "" }
      if (n == sec + 0 && !done) { emit(); skipping = 1; next }
      if (n > sec + 0 && !done) { emit(); print "" }
    }
    skipping { next }
    { print }
    END { if (!done) { print ""; emit() } }' "$BENCH_RESULTS" >"$BENCH_RESULTS.tmp"
  [[ $(grep -c "^## $ONLY\\. " "$BENCH_RESULTS.tmp") == 1 ]] || die "could not put section $ONLY into $BENCH_RESULTS"
else
  { report_head; echo; cat "$WORK/section$ONLY.md"; } >"$BENCH_RESULTS.tmp"
fi
mv "$BENCH_RESULTS.tmp" "$BENCH_RESULTS"
log "done: $BENCH_RESULTS"
echo
if [[ -z $ONLY ]]; then
echo "bulk ledger/plain $BULK_LEDGER_RATIO (<= 1.3), evidence/plain $BULK_EVIDENCE_RATIO, hand/plain $BULK_HAND_RATIO; built-in schema ledger/plain $BULK_BUILTIN_RATIO"
echo "retry ON CONFLICT DO NOTHING ledger/plain $RETRY_RATIO (<= 1.3), evidence/plain $RETRY_EVIDENCE_RATIO, ledger/evidence $RETRY_LEDGER_VS_EVIDENCE"
echo "concurrent retries ($PGBENCH_CLIENTS writers) ledger/plain tps: id order ${RETRY_TPS_RATIO[unordered]}, chain order ${RETRY_TPS_RATIO[ordered]}, all stored ${RETRY_TPS_RATIO[stored]} (>= 0.77)"
echo "pgbench ledger/plain: 1 client $PGB_R1, $C clients $PGB_RC (>= 0.95); $C clients one chain $PGB_RONE, CPU alone $PGB_ASYNC (reported); ratios of best runs $BEST_R1, $BEST_RC; heads looked up: $PGB_L1, $PGB_LC, one chain $PGB_LONE"
echo "verify $VERIFY_RPS rows/s; limit $LIMIT_HPS (ratio $VERIFY_LIMIT_RATIO, >= 0.5); hand SQL $HAND_VERIFY_RPS (ratio $VERIFY_HAND_RATIO, > 1)"
echo "ledger.stats on $VERIFY_ROWS records: $STATS_MS ms; count(*) $COUNT_MS ms; ratio $STATS_RATIO"
echo "merkle_root $MERKLE_RPS rows/s; /record-hash limit $MERKLE_VS_SHA3, /Merkle limit $MERKLE_LIMIT_LPS = $MERKLE_VS_MLIMIT"
echo "checkpoint after $CP_NEW new: big $CP_BIG_BEST s, small $CP_SMALL_BEST s, ratio $CP_RATIO (<= 2)"
echo "inclusion_proof $INCL_BEST ms, consistency_proof $CONS_BEST ms, verify_checkpoint $VCP_BEST ms"
echo "history UPDATEs tracked/untracked: 1 client $HIST_R1, $C clients $HIST_RC (>= 0.7); tracked/hand $HIST_TH1, $HIST_THC (> 1)"
echo "verify of a tracked table ($HIST_VERSIONS_N versions): $HIST_VERIFY_RPS versions/s, /limit $HIST_VERIFY_LIMIT; its history alone $HIST_CHAINS_RPS"
fi
if [[ -z $ONLY || $ONLY == 6 ]]; then
echo "retention: ledger.prune of $RET_HALF records $RET_PRUNE_BEST s ($RET_CP_PRUNE_BEST s checkpointed before), plain DELETE $RET_DELETE_BEST s, ratio $RET_RATIO ($RET_CP_RATIO) (no target); after VACUUM + $RET_HALF more: ledger table $RET_LEDGER_GROWTH, plain $RET_PLAIN_GROWTH; verify $RET_VB_RPS records/s before, $RET_VV_RPS after"
fi
if [[ -z $ONLY || $ONLY == 7 ]]; then
echo "partitioned ledger/unpartitioned ledger: bulk $PART_BULK_RATIO (<= 1.1; plain $PART_BULK_PLAIN_RATIO), pgbench tps 1 client $PART_PGB_1, $PC clients $PART_PGB_C (>= 0.9; plain $PART_PGB_PLAIN_1, $PART_PGB_PLAIN_C)"
fi
if [[ -z $ONLY || $ONLY == 8 ]]; then
echo "verify on $NPROC cores: $V8_ALL_RPS rows/s, one thread $V8_ONE_RPS: ratio $V8_SPEEDUP (>= 1.7); /all-core limit $V8_LIMIT_ALL = $V8_ALL_VS_LIMIT (>= 0.5); one thread/one-core limit $V8_ONE_VS_LIMIT; peak RSS one thread $(kb_mb "$V8_HWM_ONE") MB, all $(kb_mb "$V8_HWM_ALL") MB, fresh backend $(kb_mb "$V8_REF_HWM") MB"
echo "pgaudit: bulk ledger/plain $AUD_BULK_LP, audited/plain $AUD_BULK_AP, ledger/audited $AUD_BULK_LA; pgbench ledger/audited 1 client $AUD_PGB_LA_1, $AC clients $AUD_PGB_LA_C (audited/plain $AUD_PGB_AP_1, $AUD_PGB_AP_C; ledger/plain $AUD_PGB_LP_1, $AUD_PGB_LP_C)"
fi
if [[ -z $ONLY || $ONLY == 9 ]]; then
echo "at scale ($SCALE_ROWS records, $SCALE_CHAINS chains): ledger/plain rows/s first step $SCALE_FIRST_RATIO, last $SCALE_LAST_RATIO (ledger last/first step $SCALE_LEDGER_TREND); verify $SCALE_VERIFY_RPS records/s; checkpoint of every chain $SCALE_CP_SECS s ($SCALE_CP_MS ms per chain); inclusion $SCALE_INCL_BEST ms, consistency $SCALE_CONS_BEST ms; bytes ledger/plain $SCALE_TOTAL_RATIO"
fi
