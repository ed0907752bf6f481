#!/usr/bin/env bash
# The gateway benchmark: the same unary method (the test service's Echo)
# called directly and through onceiot-gateway-test with an API key, with the
# same h2load concurrency, alternating A/B round by round in one run; prints
# the medians, the ratio (target >= 0.6), the latency the gateway adds
# (h2load's mean per request, at full load and with one call at a time) and
# the gateway's peak RSS (VmHWM) under that load (target < 32 MB), and the
# gateway's CPU time (user + system, from /proc) per call under load: a
# figure that other load on the machine does not skew. Every process runs
# with ONCEIOT_METRICS_LISTEN, and every load run is judged by the servers'
# own grpc_server_handled_total (tools/lib/codes.sh): h2load counts HTTP
# statuses only, and a gRPC error travels as HTTP 200, so any non-OK answer
# fails the run. A second pair (test service and gateway) is scraped every
# second during its rounds, in the same alternation: the ratio scraped /
# unscraped is the cost of serving the metrics.
# Figures are printed, never asserted.
#
# Needs ONCEIOT_TEST_PG_URL (a PostgreSQL superuser URL; tools/stack bench
# exports one). Identity gets a throwaway database of its own, dropped at the
# end. Tunables: BENCH_REQUESTS (50000), BENCH_CLIENTS (8), BENCH_STREAMS (32),
# BENCH_ROUNDS (5), BENCH_GW_IO_THREADS (2, the runtime default), BENCH_GW_UPSTREAM_CHANNELS (1),
# ONCEIOT_BUILD_DIR (build/ of this checkout).
# shellcheck source-path=SCRIPTDIR/../..
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD_DIR="${ONCEIOT_BUILD_DIR:-$ROOT/build}"
TESTSVC="$BUILD_DIR/tests/onceiot-testsvc"
GATEWAY="$BUILD_DIR/tests/onceiot-gateway-test"
IDENTITY="$BUILD_DIR/services/onceiot-identity"
HEALTH="$BUILD_DIR/tools/onceiot-health"
LATENCY="$BUILD_DIR/tools/bench/onceiot-bench-latency"
REQUESTS="${BENCH_REQUESTS:-50000}"
CLIENTS="${BENCH_CLIENTS:-8}"
STREAMS="${BENCH_STREAMS:-32}"
ROUNDS="${BENCH_ROUNDS:-5}"
ECHO_PATH=/onceiot.test.v1.TestService/Echo

source "$ROOT/tools/lib/pg.sh"
source "$ROOT/tools/lib/proc.sh"
source "$ROOT/tools/lib/codes.sh"

die() {
    echo "error: $*" >&2
    exit 1
}

for bin in "$TESTSVC" "$GATEWAY" "$IDENTITY" "$HEALTH" "$LATENCY"; do
    [[ -x "$bin" ]] || die "$bin is missing: build first"
done
command -v h2load >/dev/null || die "h2load is missing (Debian package nghttp2-client)"
command -v psql >/dev/null || die "psql is missing (Debian package postgresql-client)"
[[ -n "${ONCEIOT_TEST_PG_URL:-}" ]] || die "ONCEIOT_TEST_PG_URL is not set"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/onceiot-bench-gw.XXXXXX")"
DB="onceiot_bench_gw_$$"
declare -a STARTED=() USED_PORTS=()

cleanup() {
    local -a alive=()
    local pid
    for pid in "${STARTED[@]}"; do
        proc_alive "$pid" && alive+=("$pid")
    done
    ((${#alive[@]})) && proc_stop_pids 10 "${alive[@]}"
    wait 2>/dev/null || true
    psql "$ONCEIOT_TEST_PG_URL" -qc "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free port on 127.0.0.1 not handed out before in this run.
next_addr() {
    local port
    port="$(pg_free_port "${USED_PORTS[@]}")"
    USED_PORTS+=("$port")
    echo "127.0.0.1:$port"
}

# Starts a binary with env assignments and waits for SERVING; sets LAST_PID.
start() {
    local name="$1" addr="$2" bin="$3"
    shift 3
    env ONCEIOT_LISTEN="$addr" ONCEIOT_LOG_LEVEL=warn "$@" "$bin" </dev/null \
        >"$WORK/$name.log" 2>&1 &
    LAST_PID=$!
    STARTED+=("$LAST_PID")
    if ! "$HEALTH" "$addr" --wait-ms 20000 >/dev/null; then
        tail -n 20 "$WORK/$name.log" >&2
        die "$name did not become SERVING on $addr"
    fi
}

hex32() {
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'
}

psql "$ONCEIOT_TEST_PG_URL" -qc "CREATE DATABASE $DB" >/dev/null
ID_URL="$(sed -E "s#/[^/?]*(\?|$)#/$DB\1#" <<<"${ONCEIOT_TEST_PG_URL%/}")"
[[ "$ID_URL" == *"/$DB"* ]] || ID_URL="${ONCEIOT_TEST_PG_URL%/}/$DB"
KEY="$(hex32)"
SVC_ADDR="$(next_addr)"
ID_ADDR="$(next_addr)"
GW_ADDR="$(next_addr)"
NOWHERE="$(next_addr)"

SVC_METRICS="$(next_addr)"
start testsvc "$SVC_ADDR" "$TESTSVC" ONCEIOT_DATABASE_URL="$ONCEIOT_TEST_PG_URL" \
    ONCEIOT_SCHEMA_DIR="$ROOT/tests/testsvc/schema" ONCEIOT_METRICS_LISTEN="$SVC_METRICS"
SVC_PID="$LAST_PID"
MSVC_ADDR="$(next_addr)"
MSVC_METRICS="$(next_addr)"
start testsvc-metrics "$MSVC_ADDR" "$TESTSVC" ONCEIOT_DATABASE_URL="$ONCEIOT_TEST_PG_URL" \
    ONCEIOT_SCHEMA_DIR="$ROOT/tests/testsvc/schema" ONCEIOT_METRICS_LISTEN="$MSVC_METRICS"
MSVC_PID="$LAST_PID"
start identity "$ID_ADDR" "$IDENTITY" ONCEIOT_DATABASE_URL="$ID_URL" ONCEIOT_PRINCIPAL_KEY="$KEY" \
    ONCEIOT_TOKEN_SIGNING_KEY="$(hex32)" ONCEIOT_API_KEY_PEPPER="$(hex32)" \
    ONCEIOT_BOOTSTRAP_ADMIN_PASSWORD=bench-password-long ONCEIOT_BOOTSTRAP_KEY_FILE="$WORK/admin.key"
# start_gateway NAME ADDR TEST_ADDR [VAR=value...]
start_gateway() {
    local name="$1" addr="$2" test_addr="$3"
    shift 3
    start "$name" "$addr" "$GATEWAY" ONCEIOT_PRINCIPAL_SIGNING_KEYS="$(signing_keys "$KEY" gateway identity sims usage commerce support test)" \
        ONCEIOT_IDENTITY_ADDR="$ID_ADDR" ONCEIOT_TEST_ADDR="$test_addr" ONCEIOT_SIMS_ADDR="$NOWHERE" \
        ONCEIOT_USAGE_ADDR="$NOWHERE" ONCEIOT_COMMERCE_ADDR="$NOWHERE" ONCEIOT_SUPPORT_ADDR="$NOWHERE" \
        ONCEIOT_RATE_LIMIT_RPS=10000000 ONCEIOT_RATE_LIMIT_BURST=10000000 ONCEIOT_IO_THREADS="${BENCH_GW_IO_THREADS:-2}" \
        ONCEIOT_UPSTREAM_CHANNELS="${BENCH_GW_UPSTREAM_CHANNELS:-1}" "$@"
}
GW_METRICS="$(next_addr)"
start_gateway gateway "$GW_ADDR" "$SVC_ADDR" ONCEIOT_METRICS_LISTEN="$GW_METRICS"
GW_PID="$LAST_PID"
MGW_ADDR="$(next_addr)"
MGW_METRICS="$(next_addr)"
start_gateway gateway-metrics "$MGW_ADDR" "$MSVC_ADDR" ONCEIOT_METRICS_LISTEN="$MGW_METRICS"
MGW_PID="$LAST_PID"
API_KEY="$(head -n 1 "$WORK/admin.key")"
[[ -n "$API_KEY" ]] || die "identity wrote no bootstrap API key"

# EchoRequest{text: "hello"} in a gRPC frame.
printf '\x00\x00\x00\x00\x07\x0a\x05hello' >"$WORK/echo.bin"

# The metrics endpoint of the server listening on addr.
metrics_of() {
    case "$1" in
    "$SVC_ADDR") echo "$SVC_METRICS" ;;
    "$MSVC_ADDR") echo "$MSVC_METRICS" ;;
    "$GW_ADDR") echo "$GW_METRICS" ;;
    "$MGW_ADDR") echo "$MGW_METRICS" ;;
    *) die "no metrics endpoint for $1" ;;
    esac
}

# One h2load run; prints "<req/s> <mean ms>". h2load sees HTTP statuses
# only, so the run fails unless the server counted n calls answered OK and
# none with another gRPC status.
load_once() {
    local addr="$1" n="$2" c="$3" m="$4" out
    codes_mark run "$(metrics_of "$addr")"
    out="$(h2load -n "$n" -c "$c" -m "$m" -t 1 -d "$WORK/echo.bin" \
        -H 'content-type: application/grpc' -H 'te: trailers' \
        -H "authorization: Bearer $API_KEY" "http://$addr$ECHO_PATH" 2>&1)" || {
        echo "$out" >&2
        die "h2load failed against $addr"
    }
    awk -v n="$n" '
        function ms(v) {
            if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
            if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
            if (v ~ /s$/) return substr(v, 1, length(v) - 1) * 1000
            return -1
        }
        /^finished in/ { rps = $4 }
        /^requests:/ { ok = $8 }
        /^time for request:/ { mean = ms($6) }
        END {
            if (ok != n || rps == "") exit 1
            printf "%s %.3f\n", rps, mean
        }' <<<"$out" || {
        echo "$out" >&2
        die "not every request against $addr succeeded"
    }
    codes_check run "$(metrics_of "$addr")" "$n"
}

# A gateway's CPU time so far (utime + stime, in clock ticks); default the
# plain one.
gw_ticks() {
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/${1:-$GW_PID}/stat"
}

# Scrapes both metrics endpoints every second, as Prometheus would, until
# killed; fails the run on a non-200 answer.
scraper() {
    local hostport
    while :; do
        for hostport in "$MSVC_METRICS" "$MGW_METRICS"; do
            exec 3<>"/dev/tcp/${hostport%:*}/${hostport#*:}"
            printf 'GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n' >&3
            local status=""
            read -r status <&3 || true
            [[ "$status" == *' 200 '* ]] || echo "scrape of $hostport failed" >&2
            cat <&3 >/dev/null
            exec 3<&-
        done
        sleep 1
    done
}

median() {
    tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'
}

# Warm-up: the API key is cached after the first call.
load_once "$GW_ADDR" 2000 "$CLIENTS" "$STREAMS" >/dev/null
load_once "$SVC_ADDR" 2000 "$CLIENTS" "$STREAMS" >/dev/null
load_once "$MGW_ADDR" 2000 "$CLIENTS" "$STREAMS" >/dev/null

declare -A RPS=() LAT=() LAT1=()
GW_TICKS=0
MGW_TICKS=0
SVC_TICKS=0
MSVC_TICKS=0
for ((r = 1; r <= ROUNDS; r++)); do
    for target in direct gateway metrics; do
        addr="$SVC_ADDR"
        [[ "$target" == gateway ]] && addr="$GW_ADDR"
        [[ "$target" == metrics ]] && addr="$MGW_ADDR"
        t0="$(gw_ticks)"
        m0="$(gw_ticks "$MGW_PID")"
        s0="$(gw_ticks "$SVC_PID")"
        ms0="$(gw_ticks "$MSVC_PID")"
        scrape_pid=
        if [[ "$target" == metrics ]]; then
            scraper &
            scrape_pid=$!
        fi
        res="$(load_once "$addr" "$REQUESTS" "$CLIENTS" "$STREAMS")"
        [[ -n "$scrape_pid" ]] && { kill "$scrape_pid"; wait "$scrape_pid" 2>/dev/null || true; }
        [[ "$target" == gateway ]] && GW_TICKS=$((GW_TICKS + $(gw_ticks) - t0))
        [[ "$target" == gateway ]] && SVC_TICKS=$((SVC_TICKS + $(gw_ticks "$SVC_PID") - s0))
        [[ "$target" == metrics ]] && MGW_TICKS=$((MGW_TICKS + $(gw_ticks "$MGW_PID") - m0))
        [[ "$target" == metrics ]] && MSVC_TICKS=$((MSVC_TICKS + $(gw_ticks "$MSVC_PID") - ms0))
        RPS[$target]+="${res% *} "
        LAT[$target]+="${res#* } "
    done
done
HWM_KB="$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$GW_PID/status")"
RSS_KB="$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$GW_PID/status")"

# One call at a time: the latency the gateway adds to a single call.
for target in direct gateway; do
    addr="$SVC_ADDR"
    [[ "$target" == gateway ]] && addr="$GW_ADDR"
    for ((r = 1; r <= 3; r++)); do
        res="$(load_once "$addr" 5000 1 1)"
        LAT1[$target]+="${res#* } "
    done
done

# Percentiles, one call at a time, same client for both: "p50 p90 p99 mean" in us.
LAT_DIRECT="$("$LATENCY" "$SVC_ADDR" "$ECHO_PATH" 0a0568656c6c6f 3000)"
LAT_GW="$("$LATENCY" "$GW_ADDR" "$ECHO_PATH" 0a0568656c6c6f 3000 "$API_KEY")"

d_rps="$(median <<<"${RPS[direct]}")"
g_rps="$(median <<<"${RPS[gateway]}")"
d_lat="$(median <<<"${LAT[direct]}")"
g_lat="$(median <<<"${LAT[gateway]}")"
echo "gateway benchmark: Echo, $REQUESTS calls x $ROUNDS rounds, $CLIENTS connections x $STREAMS streams (medians)"
printf '  %-28s %10s req/s   mean %7s ms\n' "direct (testsvc)" "$d_rps" "$d_lat"
printf '  %-28s %10s req/s   mean %7s ms\n' "through the gateway (API key)" "$g_rps" "$g_lat"
awk -v g="$g_rps" -v d="$d_rps" -v gl="$g_lat" -v dl="$d_lat" 'BEGIN {
    printf "  ratio gateway/direct: %.2f (target >= 0.6)\n", g / d
    printf "  added mean latency under load: %.3f ms\n", gl - dl }'
d1="$(median <<<"${LAT1[direct]}")"
g1="$(median <<<"${LAT1[gateway]}")"
awk -v g="$g1" -v d="$d1" 'BEGIN {
    printf "  one call at a time: direct %.3f ms, gateway %.3f ms, added %.3f ms (means; target p50 < 0.3 ms)\n", d, g, g - d }'
read -r dp50 _ dp99 _ <<<"$LAT_DIRECT"
read -r gp50 _ gp99 _ <<<"$LAT_GW"
awk -v dp50="$dp50" -v dp99="$dp99" -v gp50="$gp50" -v gp99="$gp99" 'BEGIN {
    printf "  one call at a time (3000 calls, runtime client): direct p50 %.0f us p99 %.0f us, gateway p50 %.0f us p99 %.0f us\n", dp50, dp99, gp50, gp99
    printf "  added latency: p50 %.3f ms, p99 %.3f ms (target p50 < 0.3 ms)\n", (gp50 - dp50) / 1000, (gp99 - dp99) / 1000 }'
awk -v t="$GW_TICKS" -v hz="$(getconf CLK_TCK)" -v n="$((REQUESTS * ROUNDS))" 'BEGIN {
    printf "  gateway CPU under load: %.1f us per call (user + system)\n", t / hz * 1e6 / n }'
printf '  gateway memory: VmHWM %d kB, VmRSS %d kB after the load (target < 32 MB)\n' "$HWM_KB" "$RSS_KB"
m_rps="$(median <<<"${RPS[metrics]}")"
m_lat="$(median <<<"${LAT[metrics]}")"
printf '  %-28s %10s req/s   mean %7s ms (the second pair)\n' "scraped every second" "$m_rps" "$m_lat"
awk -v m="$m_rps" -v g="$g_rps" -v mt="$MGW_TICKS" -v gt="$GW_TICKS" -v ms="$MSVC_TICKS" -v st="$SVC_TICKS" -v hz="$(getconf CLK_TCK)" -v n="$((REQUESTS * ROUNDS))" 'BEGIN {
    printf "  ratio scraped / unscraped through the gateway: %.3f req/s\n", m / g
    printf "  CPU per call, scraped / unscraped: gateway %.1f / %.1f us, test service %.1f / %.1f us\n", mt / hz * 1e6 / n, gt / hz * 1e6 / n, ms / hz * 1e6 / n, st / hz * 1e6 / n }'
echo "  req/s per round, unscraped: ${RPS[gateway]}"
echo "  req/s per round, scraped:   ${RPS[metrics]}"
