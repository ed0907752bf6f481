#!/usr/bin/env bash
# The identity benchmark (printed, never asserted): Authenticate calls per
# second for one warm API key (h2load sending real gRPC frames, the bench
# playing the gateway with one signed principal), token verifications per
# second in-process, and Login latency (Argon2id dominates), all from
# onceiot-bench-identity.
#
# Needs ONCEIOT_TEST_PG_URL (tools/stack bench exports one); identity gets a
# throwaway database, dropped at the end. Tunables: BENCH_REQUESTS (50000),
# BENCH_CLIENTS (8), BENCH_STREAMS (32), ONCEIOT_BUILD_DIR.
# shellcheck source-path=SCRIPTDIR/../..
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD_DIR="${ONCEIOT_BUILD_DIR:-$ROOT/build}"
IDENTITY="$BUILD_DIR/services/onceiot-identity"
BENCH="$BUILD_DIR/tools/bench/onceiot-bench-identity"
HEALTH="$BUILD_DIR/tools/onceiot-health"
REQUESTS="${BENCH_REQUESTS:-50000}"
AUTH_PATH=/onceiot.identity.v1.IdentityService/Authenticate

source "$ROOT/tools/lib/pg.sh"
source "$ROOT/tools/lib/proc.sh"
source "$ROOT/tools/lib/codes.sh"

die() {
    echo "error: $*" >&2
    exit 1
}

for bin in "$IDENTITY" "$BENCH" "$HEALTH"; do
    [[ -x "$bin" ]] || die "$bin is missing: build first"
done
[[ -n "${ONCEIOT_TEST_PG_URL:-}" ]] || die "ONCEIOT_TEST_PG_URL is not set"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/onceiot-bench-id.XXXXXX")"
DB="onceiot_bench_id_$$"
PID=""
cleanup() {
    [[ -n "$PID" ]] && proc_alive "$PID" && proc_stop_pids 10 "$PID"
    wait 2>/dev/null || true
    psql "$ONCEIOT_TEST_PG_URL" -qc "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

hex32() {
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'
}

psql "$ONCEIOT_TEST_PG_URL" -qc "CREATE DATABASE $DB" >/dev/null
URL="${ONCEIOT_TEST_PG_URL%/*}/$DB"
ADDR="127.0.0.1:$(pg_free_port)"
METRICS="127.0.0.1:$(pg_free_port "${ADDR##*:}")"
export ONCEIOT_PRINCIPAL_KEY
ONCEIOT_PRINCIPAL_KEY="$(hex32)"
env ONCEIOT_LISTEN="$ADDR" ONCEIOT_METRICS_LISTEN="$METRICS" ONCEIOT_LOG_LEVEL=warn ONCEIOT_DATABASE_URL="$URL" \
    ONCEIOT_TOKEN_SIGNING_KEY="$(hex32)" ONCEIOT_API_KEY_PEPPER="$(hex32)" \
    ONCEIOT_BOOTSTRAP_ADMIN_PASSWORD=bench-password-long \
    ONCEIOT_BOOTSTRAP_KEY_FILE="$WORK/admin.key" "$IDENTITY" </dev/null >"$WORK/identity.log" 2>&1 &
PID=$!
"$HEALTH" "$ADDR" --wait-ms 20000 >/dev/null || {
    tail -n 20 "$WORK/identity.log" >&2
    die "identity did not become SERVING"
}
SECRET="$(cat "$WORK/admin.key")"

echo "== identity on $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
"$BENCH" "$ADDR" "$SECRET" admin bench-password-long 4 3

# h2load: the server's Authenticate rate for a warm key.
headers="$("$BENCH" h2load-input "$SECRET" "$WORK/auth.bin")"
declare -a hdr=()
eval "hdr=($headers)"
h2load -n 2000 -c 4 -m 8 -t 1 -d "$WORK/auth.bin" -H 'content-type: application/grpc' \
    -H 'te: trailers' "${hdr[@]}" "http://$ADDR$AUTH_PATH" >/dev/null # warm-up
# h2load counts HTTP statuses only: identity's own grpc_server_handled_total
# says whether every Authenticate answered OK.
codes_mark auth "$METRICS"
out="$(h2load -n "$REQUESTS" -c "${BENCH_CLIENTS:-8}" -m "${BENCH_STREAMS:-32}" -t 1 \
    -d "$WORK/auth.bin" -H 'content-type: application/grpc' -H 'te: trailers' "${hdr[@]}" \
    "http://$ADDR$AUTH_PATH" 2>&1)"
rps="$(awk '/^finished in/ {print $4}' <<<"$out")"
codes_check auth "$METRICS" "$REQUESTS"
ok="$REQUESTS"
printf 'Authenticate, warm key (h2load -n %s): %s req/s, %s OK (counted by identity) (target >= 20000/s)\n' \
    "$REQUESTS" "$rps" "$ok"
