#!/usr/bin/env bash
# Benchmark of the commerce service (printed, never asserted).
#
# In one run, against a throwaway database, with onceiot-sims,
# onceiot-identity, onceiot-commerce and onceiot-gateway,
# onceiot-bench-commerce (tools/bench/bench_commerce.c) measures through the
# gateway:
#   1. CreateOrder of one data top-up item p50/p99, one call at a time, next
#      to GetProduct on the same path (the baseline);
#   2. orders/s with BENCH_COMMERCE_THREADS clients;
#   3. the time from an order to the SIM's quota updated (the outbox, then
#      sims.TopUpQuota), p50/p99.
#
# usage: BENCH_PG_URL=postgresql://postgres@127.0.0.1:5432/postgres tools/bench/commerce.sh
# (a superuser URL; ONCEIOT_TEST_PG_URL is used when BENCH_PG_URL is unset).
# Tunables: BENCH_COMMERCE_CALLS (2000), BENCH_COMMERCE_THREADS (8),
# ONCEIOT_BUILD_DIR (build/ of this checkout). Needs psql, python3.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD_DIR="${ONCEIOT_BUILD_DIR:-$ROOT/build}"
BIN="$BUILD_DIR/services"
CLIENT="$BUILD_DIR/tools/bench/onceiot-bench-commerce"
PG_URL="${BENCH_PG_URL:-${ONCEIOT_TEST_PG_URL:?set BENCH_PG_URL to a superuser URL}}"
CALLS="${BENCH_COMMERCE_CALLS:-2000}"
THREADS="${BENCH_COMMERCE_THREADS:-8}"
DB=onceiot_commerce_bench
# shellcheck source=../lib/proc.sh
source "$ROOT/tools/lib/proc.sh"
# shellcheck source=../lib/bench.sh
source "$ROOT/tools/lib/bench.sh"
KEY=$(hex32)
WORK="$(mktemp -d "${TMPDIR:-/tmp}/commerce-bench.XXXXXX")"
PIDS=()
BENCH_URL=""
trap cleanup EXIT

for tool in psql python3; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
for b in "$BIN/onceiot-sims" "$BIN/onceiot-identity" "$BIN/onceiot-commerce" \
    "$BIN/onceiot-gateway" "$CLIENT" "$BUILD_DIR/tools/onceiot-health"; do
    [[ -x "$b" ]] || die "$b is missing: build first"
done

echo "== setting up $DB"
bench_db_create sims commerce

SIMS_PORT=$(free_port)
start sims "$SIMS_PORT" ONCEIOT_DATABASE_URL="$BENCH_URL"
ID_PORT=$(free_port)
start_identity "$ID_PORT"
COMMERCE_PORT=$(free_port)
start commerce "$COMMERCE_PORT" ONCEIOT_DATABASE_URL="$BENCH_URL" \
    ONCEIOT_SIMS_ADDR="127.0.0.1:$SIMS_PORT" \
    ONCEIOT_PRINCIPAL_SIGNING_KEYS="$(signing_keys "$KEY" commerce sims)"
GW_PORT=$(free_port)
NOWHERE="127.0.0.1:$(free_port)"
start gateway "$GW_PORT" ONCEIOT_IDENTITY_ADDR="127.0.0.1:$ID_PORT" \
    ONCEIOT_PRINCIPAL_SIGNING_KEYS="$(signing_keys "$KEY" gateway identity sims usage commerce support)" \
    ONCEIOT_SIMS_ADDR="127.0.0.1:$SIMS_PORT" ONCEIOT_COMMERCE_ADDR="127.0.0.1:$COMMERCE_PORT" \
    ONCEIOT_USAGE_ADDR="$NOWHERE" ONCEIOT_SUPPORT_ADDR="$NOWHERE" \
    ONCEIOT_RATE_LIMIT_RPS=10000000 ONCEIOT_RATE_LIMIT_BURST=10000000
# The gateway is SERVING once it can authenticate.
for _ in $(seq 100); do
    [[ -s "$WORK/admin.key" ]] && "$BUILD_DIR/tools/onceiot-health" "127.0.0.1:$GW_PORT" \
        --timeout-ms 1000 >/dev/null 2>&1 && break
    sleep 0.1
done
ADMIN_KEY="$(head -n 1 "$WORK/admin.key")"
[[ -n "$ADMIN_KEY" ]] || die "identity wrote no bootstrap API key"

echo "== $CALLS calls, $THREADS clients"
"$CLIENT" "127.0.0.1:$GW_PORT" "Bearer $ADMIN_KEY" "$CALLS" "$THREADS"
