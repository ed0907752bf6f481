#!/usr/bin/env bash
# Benchmark of the usage service's connectivity (printed, never asserted).
#
# In one run, against a throwaway database holding BENCH_CONN_SIMS generated
# SIMs, with onceiot-sims, -identity, -usage and -gateway,
# onceiot-bench-connectivity (tools/bench/bench_connectivity.c) measures:
#   1. ingest through the gateway (IngestConnectivity, batches of
#      BENCH_CONN_BATCH samples; latest state, transitions, idempotency and
#      outbox on) of SIMS x BENCH_CONN_SAMPLES samples, in rows/s next to
#      COPY of the same rows into the same table, and how long the events
#      and networks took to reach sims;
#   2. ListOfflineSims ("offline longer than 1 h", pages of 100) via the
#      gateway over BENCH_CONN_STATES SIM states: p50/p99 of first pages and
#      of a walk deep into one organization's list, with the plan.
#
# usage: BENCH_PG_URL=postgresql://postgres@127.0.0.1:5432/postgres tools/bench/connectivity.sh
# (a superuser URL; ONCEIOT_TEST_PG_URL is used when BENCH_PG_URL is unset).
# Tunables: BENCH_CONN_SIMS (10000), BENCH_CONN_SAMPLES (60), BENCH_CONN_BATCH
# (1000), BENCH_CONN_STATES (1000000), ONCEIOT_BUILD_DIR (build/ of this
# checkout). Needs psql, python3.
# shellcheck source-path=SCRIPTDIR/../..
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD_DIR="${ONCEIOT_BUILD_DIR:-$ROOT/build}"
CLIENT="$BUILD_DIR/tools/bench/onceiot-bench-connectivity"
PG_URL="${BENCH_PG_URL:-${ONCEIOT_TEST_PG_URL:?set BENCH_PG_URL to a superuser URL}}"
N_SIMS="${BENCH_CONN_SIMS:-10000}"
SAMPLES="${BENCH_CONN_SAMPLES:-60}"
BATCH="${BENCH_CONN_BATCH:-1000}"
STATES="${BENCH_CONN_STATES:-1000000}"
# shellcheck source=tools/lib/bench_stack.sh
source "$ROOT/tools/lib/bench_stack.sh"
[[ -x "$CLIENT" ]] || die "$CLIENT is missing: build first"

bench_stack_up "$PG_URL" onceiot_connectivity_bench "$N_SIMS"
echo "== $N_SIMS SIMs x $SAMPLES samples (one a minute), batches of $BATCH; $STATES SIM states"
"$CLIENT" "127.0.0.1:$GW_PORT" "Bearer $ADMIN_KEY" "$BENCH_URL" "$N_SIMS" "$SAMPLES" "$BATCH" \
    "$STATES"
