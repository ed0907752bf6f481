#!/usr/bin/env bash
# Benchmark of the compaction of old days (printed, never asserted).
#
# In one run, on a throwaway database with the usage schema: BENCH_COMPACT_SIMS
# SIMs with 24 hourly records a day (random volumes, a few SMS, one network)
# and as many connectivity samples on the 14 days from 21 to 8 days ago are
# written straight into sim_usage and sim_connectivity; after VACUUM the
# database is copied (the raw one, $DB_raw) and `onceiot-usage compact`
# compacts the original, VACUUM again; then onceiot-bench-compact
# (tools/bench/bench_compact.c) prints for both the bytes per record
# (sim_usage's partitions with their indexes, plus sim_usage_compact) and
# the latency of ListUsageRecords' and ListConnectivity's statements (a
# whole day of a SIM, and the first 100 of a week), with the backend's CPU
# time per execution when PostgreSQL runs on this machine, alternating
# between the two databases execution by execution (so both see the same
# load), and the ratios.
#
# usage: BENCH_PG_URL=postgresql://postgres@127.0.0.1:5432/postgres tools/bench/compact.sh
# (a superuser URL; ONCEIOT_TEST_PG_URL is used when BENCH_PG_URL is unset).
# Tunables: BENCH_COMPACT_SIMS (2000), BENCH_COMPACT_REPS (500),
# ONCEIOT_BUILD_DIR (build/ of this checkout).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD_DIR="${ONCEIOT_BUILD_DIR:-$ROOT/build}"
BIN="$BUILD_DIR/services"
CLIENT="$BUILD_DIR/tools/bench/onceiot-bench-compact"
PG_URL="${BENCH_PG_URL:-${ONCEIOT_TEST_PG_URL:?set BENCH_PG_URL to a superuser URL}}"
N_SIMS="${BENCH_COMPACT_SIMS:-2000}"
REPS="${BENCH_COMPACT_REPS:-500}"
DB=onceiot_compact_bench
# shellcheck source=../lib/proc.sh
source "$ROOT/tools/lib/proc.sh"
# shellcheck source=../lib/bench.sh
source "$ROOT/tools/lib/bench.sh"
KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
WORK="$(mktemp -d "${TMPDIR:-/tmp}/compact-bench.XXXXXX")"
PIDS=()
BENCH_URL=""
# The raw copy goes with the bench database.
drop_raw_copy() {
    psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS ${DB}_raw" 2>/dev/null || true
    cleanup
}
trap drop_raw_copy EXIT

for b in "$BIN/onceiot-usage" "$CLIENT"; do
    [[ -x "$b" ]] || die "$b is missing: build first"
done

echo "== setting up $DB: $N_SIMS SIMs x 24 records and 24 samples x 14 days"
bench_db_create usage
usage_fill_raw "$N_SIMS"
conn_fill_raw "$N_SIMS"
psql -q -v ON_ERROR_STOP=1 "$BENCH_URL" -c "VACUUM ANALYZE"
psql -q -v ON_ERROR_STOP=1 "$PG_URL" -c "DROP DATABASE IF EXISTS ${DB}_raw" \
    -c "CREATE DATABASE ${DB}_raw TEMPLATE $DB"
RAW_URL="$(bench_db_url "$PG_URL" "${DB}_raw")"
echo "== onceiot-usage compact"
usage_compact
"$CLIENT" "$RAW_URL" "$BENCH_URL" "$N_SIMS" 21 "$REPS" >"$WORK/both.txt"
grep '^raw ' "$WORK/both.txt" | tee "$WORK/raw.txt"
grep '^compacted ' "$WORK/both.txt" | tee "$WORK/compacted.txt"
awk -v t="$COMPACT_S" '
    function line(what, k, r, c) {
        printf "%s: p50 %.3f ms raw, %.3f ms compacted (compacted/raw %.2f); p99 %.3f / %.3f; backend CPU p50 %.3f / %.3f ms\n",
            what, v[r, k "_p50_ms"], v[c, k "_p50_ms"], v[c, k "_p50_ms"] / v[r, k "_p50_ms"],
            v[r, k "_p99_ms"], v[c, k "_p99_ms"], v[r, k "_cpu_ms"], v[c, k "_cpu_ms"]
    }
    FNR == 1 { for (i = 2; i < NF; i += 2) v[FILENAME, $i] = $(i + 1) }
    END {
        r = ARGV[1]; c = ARGV[2]
        printf "compaction took %.1f s (%.0f records/s)\n", t, v[r, "records"] / t
        printf "bytes per record: raw %.1f, compacted %.1f: %.1fx smaller\n",
            v[r, "bytes_per_record"], v[c, "bytes_per_record"],
            v[r, "bytes_per_record"] / v[c, "bytes_per_record"]
        line("a whole day of one SIM, records", "day", r, c)
        line("first 100 records of a week", "week", r, c)
        line("a whole day of one SIM, samples", "conn_day", r, c)
        line("first 100 samples of a week", "conn_week", r, c)
    }' "$WORK/raw.txt" "$WORK/compacted.txt"
