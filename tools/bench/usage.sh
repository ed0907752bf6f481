#!/usr/bin/env bash
# Benchmark of the usage service (printed, never asserted).
#
# In one run, against a throwaway database holding BENCH_USAGE_SIMS generated
# SIMs (tools/gen_sims), with onceiot-sims, onceiot-identity,
# onceiot-usage and onceiot-gateway, onceiot-bench-usage
# (tools/bench/bench_usage.c) measures over SIMS x HOURS hourly records:
#   1. ingest through the gateway (IngestUsage, batches of BENCH_USAGE_BATCH,
#      rollups, idempotency and outbox on) in rows/s next to COPY of the same
#      rows into the same raw table;
#   2. the quota lag (usage commit -> sims ApplyUsage) p50/p99 under that load;
#   3. the fleet daily summary (GetFleetUsage) next to the seed's
#      v_daily_usage_summary over the same rows;
#   4. per-SIM daily usage over 6 months (GetSimUsage) p50/p99;
# with the CPU (utime + stime from /proc) per record of the COPY and of the
# ingest with its quota dispatch alone (sims, usage, the gateway and the
# database's backends: the client samples them around each phase); then the
# same over the whole client run (the read phases are in it too).
#
# usage: BENCH_PG_URL=postgresql://postgres@127.0.0.1:5432/postgres tools/bench/usage.sh
# (a superuser URL; ONCEIOT_TEST_PG_URL is used when BENCH_PG_URL is unset).
# Tunables: BENCH_USAGE_SIMS (10000), BENCH_USAGE_HOURS (720), BENCH_USAGE_BATCH
# (1000), ONCEIOT_BUILD_DIR (build/ of this checkout), BENCH_USAGE_LOG_LEVEL
# (the processes' ONCEIOT_LOG_LEVEL, warn), BENCH_USAGE_KEEP_LOGS (a folder
# the processes' logs are copied into at the end; none). The default scale is
# the issue's full one: 7.2M records. Needs psql, python3.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD_DIR="${ONCEIOT_BUILD_DIR:-$ROOT/build}"
BIN="$BUILD_DIR/services"
CLIENT="$BUILD_DIR/tools/bench/onceiot-bench-usage"
PG_URL="${BENCH_PG_URL:-${ONCEIOT_TEST_PG_URL:?set BENCH_PG_URL to a superuser URL}}"
N_SIMS="${BENCH_USAGE_SIMS:-10000}"
HOURS="${BENCH_USAGE_HOURS:-720}"
BATCH="${BENCH_USAGE_BATCH:-1000}"
LOG_LEVEL="${BENCH_USAGE_LOG_LEVEL:-warn}"
KEEP_LOGS="${BENCH_USAGE_KEEP_LOGS:-}"
DB=onceiot_usage_bench
# shellcheck source=../lib/proc.sh
source "$ROOT/tools/lib/proc.sh"
# shellcheck source=../lib/bench.sh
source "$ROOT/tools/lib/bench.sh"
KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
WORK="$(mktemp -d "${TMPDIR:-/tmp}/usage-bench.XXXXXX")"
PIDS=()
BENCH_URL=""

trap cleanup EXIT

for tool in psql python3; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
for b in "$BIN/onceiot-sims" "$BIN/onceiot-identity" "$BIN/onceiot-usage" \
    "$BIN/onceiot-gateway" "$CLIENT"; do
    [[ -x "$b" ]] || die "$b is missing: build first"
done

echo "== setting up $DB with $N_SIMS SIMs"
bench_db_create sims usage
"$ROOT/tools/gen_sims" "$BENCH_URL" "$N_SIMS" 10 >/dev/null

SIMS_PORT=$(free_port)
start sims "$SIMS_PORT" ONCEIOT_DATABASE_URL="$BENCH_URL"
ID_PORT=$(free_port)
start_identity "$ID_PORT"
USAGE_PORT=$(free_port)
start usage "$USAGE_PORT" ONCEIOT_DATABASE_URL="$BENCH_URL" ONCEIOT_SIMS_ADDR="127.0.0.1:$SIMS_PORT" \
    ONCEIOT_PRINCIPAL_SIGNING_KEYS="$(signing_keys "$KEY" usage sims)"
GW_PORT=$(free_port)
NOWHERE="127.0.0.1:$(free_port)"
start gateway "$GW_PORT" ONCEIOT_IDENTITY_ADDR="127.0.0.1:$ID_PORT" \
    ONCEIOT_PRINCIPAL_SIGNING_KEYS="$(signing_keys "$KEY" gateway identity sims usage commerce support)" \
    ONCEIOT_SIMS_ADDR="127.0.0.1:$SIMS_PORT" ONCEIOT_USAGE_ADDR="127.0.0.1:$USAGE_PORT" \
    ONCEIOT_COMMERCE_ADDR="$NOWHERE" ONCEIOT_SUPPORT_ADDR="$NOWHERE" \
    ONCEIOT_RATE_LIMIT_RPS=10000000 ONCEIOT_RATE_LIMIT_BURST=10000000
ADMIN_KEY="$(head -n 1 "$WORK/admin.key")"
[[ -n "$ADMIN_KEY" ]] || die "identity wrote no bootstrap API key"

echo "== $N_SIMS SIMs x $HOURS hourly records, batches of $BATCH"
mapfile -t backends < <(pg_backends "$PG_URL" "$DB")
declare -A before=()
for p in "${PIDS[@]}" "${backends[@]}"; do before[$p]="$(cpu_ticks "$p")"; done
BENCH_USAGE_PIDS="sims=${PIDS[0]} usage=${PIDS[2]} gateway=${PIDS[3]}" \
    "$CLIENT" "127.0.0.1:$GW_PORT" "Bearer $ADMIN_KEY" "$BENCH_URL" "$N_SIMS" "$HOURS" "$BATCH"
mapfile -t backends < <(pg_backends "$PG_URL" "$DB") # a backend opened meanwhile counts whole
names=(sims identity usage gateway)
pg=0
for p in "${backends[@]}"; do pg=$((pg + $(cpu_ticks "$p") - ${before[$p]:-0})); done
line=""
for i in 0 1 2 3; do
    line+="$(awk -v n="${names[i]}" -v d="$(($(cpu_ticks "${PIDS[i]}") - before[${PIDS[i]}]))" \
        -v t="$(getconf CLK_TCK)" -v r="$((N_SIMS * HOURS))" 'BEGIN { printf "%s %.1f, ", n, d / t / r * 1e6 }')"
done
awk -v l="$line" -v d="$pg" -v t="$(getconf CLK_TCK)" -v r="$((N_SIMS * HOURS))" 'BEGIN {
    printf "CPU per record over the client run (us): %spostgres %.1f\n", l, d / t / r * 1e6 }'
