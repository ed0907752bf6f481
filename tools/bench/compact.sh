#!/usr/bin/env bash
# Benchmark of the compaction of old days (printed, never asserted).
#
# In one run, on a throwaway database with the usage schema: BENCH_COMPACT_SIMS
# SIMs with 24 hourly records a day (random volumes, a few SMS, one network)
# on the 14 days from 21 to 8 days ago are written straight into sim_usage;
# after VACUUM, onceiot-bench-compact (tools/bench/bench_compact.c) prints the
# bytes per record (sim_usage's partitions with their indexes, plus
# sim_usage_compact) and the latency of ListUsageRecords' statement (a whole
# day of a SIM, and the first 100 records of a week); then
# `onceiot-usage compact` compacts them, VACUUM again, the same measurement
# on compacted days, and the ratios.
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
trap cleanup EXIT

for b in "$BIN/onceiot-usage" "$CLIENT"; do
    [[ -x "$b" ]] || die "$b is missing: build first"
done

echo "== setting up $DB: $N_SIMS SIMs x 24 records x 14 days"
bench_db_create usage
psql -q -v ON_ERROR_STOP=1 "$BENCH_URL" <<SQL
SET search_path = usage;
INSERT INTO sim_usage (sim_id, organization_id, iccid, "timestamp", volume_rx, volume_tx,
                       sms_mo, sms_mt, session_count, mcc, mnc, country, rat, batch_id)
SELECT s, 1 + s % 10, '89883030' || lpad(s::text, 11, '0'),
       date_trunc('day', now()) - interval '21 days' + h * interval '1 hour'
           + (s % 3600) * interval '1 second',
       (random() * 1000000)::bigint, (random() * 200000)::bigint, (random() < 0.05)::int,
       (random() < 0.02)::int, (random() * 3)::int, '262', '01', 'DE', 'LTE',
       'bench-' || h || '-' || (s / 1000)
FROM generate_series(1, $N_SIMS) s, generate_series(0, 24 * 14 - 1) h;
VACUUM ANALYZE;
SQL
"$CLIENT" "$BENCH_URL" raw "$N_SIMS" 21 "$REPS" | tee "$WORK/raw.txt"
echo "== onceiot-usage compact"
start_s=$(date +%s.%N)
ONCEIOT_DATABASE_URL="$BENCH_URL" ONCEIOT_PRINCIPAL_KEY="$KEY" ONCEIOT_LOG_LEVEL=warn \
    "$BIN/onceiot-usage" compact
end_s=$(date +%s.%N)
psql -q -v ON_ERROR_STOP=1 "$BENCH_URL" -c "VACUUM ANALYZE"
"$CLIENT" "$BENCH_URL" compacted "$N_SIMS" 21 "$REPS" | tee "$WORK/compacted.txt"
awk -v t="$(echo "$end_s - $start_s" | bc)" '
    FNR == 1 { for (i = 2; i < NF; i += 2) v[FILENAME, $i] = $(i + 1) }
    END {
        r = ARGV[1]; c = ARGV[2]
        printf "compaction took %.1f s (%.0f records/s)\n", t, v[r, "records"] / t
        printf "bytes per record: raw %.1f, compacted %.1f: %.1fx smaller\n",
            v[r, "bytes_per_record"], v[c, "bytes_per_record"],
            v[r, "bytes_per_record"] / v[c, "bytes_per_record"]
        printf "a day of one SIM: p50 %.3f ms raw, %.3f ms compacted (compacted/raw %.2f); p99 %.3f / %.3f\n",
            v[r, "day_p50_ms"], v[c, "day_p50_ms"], v[c, "day_p50_ms"] / v[r, "day_p50_ms"],
            v[r, "day_p99_ms"], v[c, "day_p99_ms"]
        printf "first 100 of a week: p50 %.3f ms raw, %.3f ms compacted (compacted/raw %.2f); p99 %.3f / %.3f\n",
            v[r, "week_p50_ms"], v[c, "week_p50_ms"], v[c, "week_p50_ms"] / v[r, "week_p50_ms"],
            v[r, "week_p99_ms"], v[c, "week_p99_ms"]
    }' "$WORK/raw.txt" "$WORK/compacted.txt"
