#!/usr/bin/env bash
# Benchmark of the sims service (printed, never asserted).
#
# In one run, against a throwaway database holding 1 million generated SIMs
# (tools/gen_sims), with onceiot-identity (its own schema in that database)
# and onceiot-gateway in front of onceiot-sims:
#   1. GetSim calls per second (h2load, real gRPC frames over h2c) through the
#      gateway with an API key of a user in the SIM's organization, next to
#      pgbench running the same SELECT (prepared, same client count); the
#      same calls made to onceiot-sims directly (this script then plays the
#      gateway: it signs principals with the service's key) are printed as a
#      reference;
#   2. ListSims (direct), a page of 100 with a filter (tag "rare"), p50/p99 latency
#      of sequential calls (h2load --log-file);
#   3. ImportSims (direct) rows per second (10000 SIMs per call) next to COPY of the
#      same rows and their sim_created events, with the call set (audited), and
#      to a bare COPY of the SIMs only, batches alternating; with the server
#      side's CPU ms per 10k rows;
#   4. GetSim with a client deadline (grpc-timeout), via the gateway and direct;
#   5. the peer: the seed's stack (FastAPI + asyncpg under uvicorn, 2 workers,
#      tools/bench/peer_fastapi.py) serving the same SELECT over HTTP/1.1 with
#      the same number of calls in flight, and onceiot / FastAPI.
# Every load run is judged by the servers' own gRPC status counters
# (tools/lib/codes.sh): any non-OK answer fails the run.
#
# usage: BENCH_PG_URL=postgresql://postgres@127.0.0.1:5432/postgres tools/bench/sims.sh
# (a superuser URL; ONCEIOT_TEST_PG_URL is used when BENCH_PG_URL is unset).
# Tunables: BENCH_SIMS (1000000), BENCH_CALLS (50000 per GetSim run; the
# direct runs sign a fresh principal each, and one lives 60 s), BENCH_CLIENTS
# (8), BENCH_STREAMS (16), BENCH_PEER (1; 0 skips the FastAPI peer),
# BENCH_PERF_DIR (unset; a folder: each GetSim run is profiled with perf
# record -e cpu-clock -g on sims, and on the gateway for the gateway runs),
# ONCEIOT_BUILD_DIR (build/ of this checkout), BENCH_ONLY (unset; parts to
# run, separated by commas: getsim (1, 4 and 5), list (2), import (3)),
# BENCH_REUSE (0; 1 keeps a bench database already set up), BENCH_DB
# (onceiot_sims_bench; another name keeps two builds' databases apart). Needs h2load,
# pgbench, python3.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD_DIR="${ONCEIOT_BUILD_DIR:-$ROOT/build}"
SIMS_BIN="$BUILD_DIR/services/onceiot-sims"
IDENTITY_BIN="$BUILD_DIR/services/onceiot-identity"
GATEWAY_BIN="$BUILD_DIR/services/onceiot-gateway"
PG_URL="${BENCH_PG_URL:-${ONCEIOT_TEST_PG_URL:?set BENCH_PG_URL to a superuser URL}}"
N_SIMS="${BENCH_SIMS:-1000000}"
CALLS="${BENCH_CALLS:-50000}"
CLIENTS="${BENCH_CLIENTS:-8}"
STREAMS="${BENCH_STREAMS:-16}"
DB="${BENCH_DB:-onceiot_sims_bench}"
# shellcheck source=../lib/proc.sh
source "$ROOT/tools/lib/proc.sh"
# shellcheck source=../lib/bench.sh
source "$ROOT/tools/lib/bench.sh"
# shellcheck source=../lib/codes.sh
source "$ROOT/tools/lib/codes.sh"
# want PART: whether BENCH_ONLY (unset: every part) names PART.
want() {
    [[ -z "${BENCH_ONLY:-}" || ",$BENCH_ONLY," == *",$1,"* ]]
}
KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

WORK="$(mktemp -d "${TMPDIR:-/tmp}/sims-bench.XXXXXX")"
SIMS_PID=""
IDENTITY_PID=""
GATEWAY_PID=""
PEER_PID=""

die() {
    echo "error: $*" >&2
    exit 1
}
cleanup() {
    local pid
    for pid in "$PEER_PID" "$GATEWAY_PID" "$IDENTITY_PID" "$SIMS_PID"; do
        [[ -n "$pid" ]] || continue
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

for tool in h2load pgbench python3 psql curl; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
for bin in "$SIMS_BIN" "$IDENTITY_BIN" "$GATEWAY_BIN"; do
    [[ -x "$bin" ]] || die "$bin is missing: build first"
done

# The bench database's URL: the superuser URL with its database replaced.
BENCH_URL="$(bench_db_url "$PG_URL" "$DB")"

if [[ "${BENCH_REUSE:-0}" == 1 ]] && psql -tA "$BENCH_URL" -c "SELECT 1 FROM sims.sims LIMIT 1" \
    >/dev/null 2>&1; then
    echo "== reusing $DB (BENCH_REUSE=1)"
else
    echo "== setting up $DB with $N_SIMS SIMs"
    psql -q -v ON_ERROR_STOP=1 "$PG_URL" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
    psql -q -v ON_ERROR_STOP=1 "$BENCH_URL" <<'SQL'
CREATE SCHEMA partman;
CREATE EXTENSION pg_partman SCHEMA partman;
CREATE EXTENSION pg_trgm SCHEMA public;
SQL
    ONCEIOT_DATABASE_URL="$BENCH_URL" ONCEIOT_PRINCIPAL_KEY="$KEY" ONCEIOT_LOG_LEVEL=warn \
        "$SIMS_BIN" migrate
    "$ROOT/tools/gen_sims" "$BENCH_URL" "$N_SIMS" 10
fi

PORT=$(free_port)
SIMS_METRICS="127.0.0.1:$(free_port)"
ONCEIOT_METRICS_LISTEN="$SIMS_METRICS" ONCEIOT_DATABASE_URL="$BENCH_URL" ONCEIOT_PRINCIPAL_KEY="$KEY" ONCEIOT_LISTEN="127.0.0.1:$PORT" \
    ONCEIOT_LOG_LEVEL=warn ONCEIOT_WORKERS=8 ONCEIOT_DB_POOL_SIZE=8 \
    "$SIMS_BIN" >"$WORK/sims.log" 2>&1 &
SIMS_PID=$!
wait_port "$PORT"

# Identity on a fresh schema of the bench database (so its bootstrap admin
# and API key are made again on a reused database), then the gateway.
psql -q -v ON_ERROR_STOP=1 "$BENCH_URL" -c "SET client_min_messages = warning" \
    -c "DROP SCHEMA IF EXISTS identity CASCADE"
ID_PORT=$(free_port)
ONCEIOT_DATABASE_URL="$BENCH_URL" ONCEIOT_PRINCIPAL_KEY="$KEY" ONCEIOT_LISTEN="127.0.0.1:$ID_PORT" \
    ONCEIOT_LOG_LEVEL=warn ONCEIOT_TOKEN_SIGNING_KEY="$(hex32)" ONCEIOT_API_KEY_PEPPER="$(hex32)" \
    ONCEIOT_BOOTSTRAP_ADMIN_PASSWORD=bench-password-long ONCEIOT_BOOTSTRAP_KEY_FILE="$WORK/admin.key" \
    "$IDENTITY_BIN" >"$WORK/identity.log" 2>&1 &
IDENTITY_PID=$!
wait_port "$ID_PORT"
GW_PORT=$(free_port)
GW_METRICS="127.0.0.1:$(free_port)"
NOWHERE="127.0.0.1:$(free_port)"
ONCEIOT_METRICS_LISTEN="$GW_METRICS" ONCEIOT_PRINCIPAL_SIGNING_KEYS="$(signing_keys "$KEY" gateway identity sims usage commerce support test)" ONCEIOT_LISTEN="127.0.0.1:$GW_PORT" ONCEIOT_LOG_LEVEL=warn \
    ONCEIOT_IDENTITY_ADDR="127.0.0.1:$ID_PORT" ONCEIOT_SIMS_ADDR="127.0.0.1:$PORT" \
    ONCEIOT_USAGE_ADDR="$NOWHERE" ONCEIOT_COMMERCE_ADDR="$NOWHERE" ONCEIOT_SUPPORT_ADDR="$NOWHERE" \
    ONCEIOT_RATE_LIMIT_RPS=10000000 ONCEIOT_RATE_LIMIT_BURST=10000000 \
    "$GATEWAY_BIN" >"$WORK/gateway.log" 2>&1 &
GATEWAY_PID=$!
wait_port "$GW_PORT"
ADMIN_KEY="$(head -n 1 "$WORK/admin.key")"
[[ -n "$ADMIN_KEY" ]] || die "identity wrote no bootstrap API key"

# A user in organization $1 (role user) and an API key of theirs with
# sims:read, made through the gateway with the bootstrap admin's key; prints
# the key's secret.
make_key() {
    python3 - "$GW_PORT" "$ADMIN_KEY" "$1" <<'PY'
import struct, subprocess, sys, time
port, admin, org = sys.argv[1], sys.argv[2], int(sys.argv[3])
def varint(n):
    b = bytearray()
    while True:
        x = n & 0x7F; n >>= 7
        b.append(x | (0x80 if n else 0))
        if not n: return bytes(b)
def field(num, v):
    if isinstance(v, int): return varint(num << 3) + varint(v)
    if isinstance(v, str): v = v.encode()
    return varint(num << 3 | 2) + varint(len(v)) + v
def fields(buf):
    out, i = {}, 0
    while i < len(buf):
        key, shift = 0, 0
        while True:
            b = buf[i]; i += 1; key |= (b & 0x7F) << shift; shift += 7
            if b < 0x80: break
        num, wt = key >> 3, key & 7
        val, shift = 0, 0
        while True:
            b = buf[i]; i += 1; val |= (b & 0x7F) << shift; shift += 7
            if b < 0x80: break
        if wt == 2:
            val, i = buf[i:i + val], i + val
        out.setdefault(num, val)
    return out
def call(method, msg):
    r = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-H", "content-type: application/grpc",
                        "-H", "te: trailers", "-H", "authorization: Bearer " + admin,
                        "--data-binary", "@-", "-D", "/dev/stderr",
                        "http://127.0.0.1:%s/onceiot.identity.v1.IdentityService/%s" % (port, method)],
                       input=b"\0" + struct.pack(">I", len(msg)) + msg, capture_output=True, check=True)
    if len(r.stdout) < 5 or b"grpc-status: 0" not in r.stderr:
        sys.exit("error: %s failed: %s" % (method, r.stderr.decode(errors="replace")))
    return fields(r.stdout[5:])
name = "bench%d" % int(time.time() * 1000)
user = call("CreateUser", field(1, name) + field(2, name + "@example.com")
            + field(3, "bench-password-long") + field(4, "Bench User") + field(5, 2) + field(6, org))
key = call("CreateApiKey", field(1, "bench") + field(3, "sims:read") + field(5, user[1]))
print(key[2].decode())
PY
}

# h2load through the gateway: the method from sims_gen's output in $1, the body
# in $2, the API key instead of a signed principal.
h2gw() {
    local meta="$1" body="$2"
    shift 2
    h2load "http://127.0.0.1:$GW_PORT$(sed -n 1p "$meta")" -d "$body" \
        -H 'content-type: application/grpc' -H 'te: trailers' -H "authorization: Bearer $API_KEY" "$@"
}

# h2load against one method of sims: the body in $2, the method and signed
# principal from sims_gen's output in $1.
h2() {
    h2_signed "$PORT" "$@"
}

# One call with curl: dies unless its grpc-status is 0 (h2load counts HTTP
# statuses only, and gRPC errors travel with HTTP 200). With a third
# argument "gw", through the gateway with the API key.
check() {
    local meta="$1" body="$2" port="$PORT" status
    local -a auth=(-H "$(sed -n 2p "$meta")" -H "$(sed -n 3p "$meta")")
    if [[ "${3:-}" == gw ]]; then
        port="$GW_PORT"
        auth=(-H "authorization: Bearer $API_KEY")
    fi
    status=$(curl -s --http2-prior-knowledge -H 'content-type: application/grpc' -H 'te: trailers' \
        "${auth[@]}" --data-binary "@$body" -D - \
        -o /dev/null "http://127.0.0.1:$port$(sed -n 1p "$meta")" | tr -d '\r' |
        awk -F': ' '$1 == "grpc-status" { print $2 }')
    [[ "$status" == 0 ]] || die "$(sed -n 1p "$meta") answered grpc-status ${status:-none}"
}

# The SIM the GetSim runs read, and its organization.
N=123457
ICCID=$(printf '8988%015d' $N)
ORG=$((1 + N % 10))

API_KEY="$(make_key "$ORG")"
[[ -n "$API_KEY" ]] || die "no API key for organization $ORG"

# The req/s of an h2load output file.
rps_of() {
    awk '/^finished in/ {gsub(",", ""); print $4}' "$1"
}

# One counted GetSim run: getsim_run NAME gw|direct [h2load args...]; the
# output in $WORK/NAME.out. The direct runs sign a fresh principal first.
getsim_run() {
    local name="$1" via="$2" metrics="$SIMS_METRICS"
    shift 2
    [[ "$via" == gw ]] && metrics="$GW_METRICS"
    [[ "$via" == direct ]] && sims_gen get "$WORK/get.bin" "$ICCID" "$ORG" >"$WORK/get.meta"
    codes_mark "$name" "$metrics"
    local -a perf_pids=()
    if [[ -n "${BENCH_PERF_DIR:-}" ]]; then
        mkdir -p "$BENCH_PERF_DIR"
        perf record -q -e cpu-clock -F 999 -g -p "$SIMS_PID" -o "$BENCH_PERF_DIR/$name-sims.data" \
            2>/dev/null &
        perf_pids+=($!)
        if [[ "$via" == gw ]]; then
            perf record -q -e cpu-clock -F 999 -g -p "$GATEWAY_PID" \
                -o "$BENCH_PERF_DIR/$name-gateway.data" 2>/dev/null &
            perf_pids+=($!)
        fi
        sleep 1 # perf attaches
    fi
    if [[ "$via" == gw ]]; then
        h2gw "$WORK/get.meta" "$WORK/get.bin" -n "$CALLS" -c "$CLIENTS" -m "$STREAMS" "$@" \
            >"$WORK/$name.out"
    else
        h2 "$WORK/get.meta" "$WORK/get.bin" -n "$CALLS" -c "$CLIENTS" -m "$STREAMS" "$@" \
            >"$WORK/$name.out"
    fi
    local p
    for p in "${perf_pids[@]}"; do
        kill -INT "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    codes_check "$name" "$metrics" "$CALLS"
}

if want getsim; then
    echo "== GetSim: via the gateway and direct to onceiot-sims (h2load -n $CALLS, $CLIENTS connections x $STREAMS streams) vs pgbench ($CLIENTS clients, as many transactions)"
    getsim_sql "'$ICCID'" "$ORG" >"$WORK/getsim.sql"
    sims_gen get "$WORK/get.bin" "$ICCID" "$ORG" >"$WORK/get.meta"
    check "$WORK/get.meta" "$WORK/get.bin"
    check "$WORK/get.meta" "$WORK/get.bin" gw
    h2gw "$WORK/get.meta" "$WORK/get.bin" -n 2000 -c 2 -m 4 >/dev/null # warm-up (caches the key)
    h2 "$WORK/get.meta" "$WORK/get.bin" -n 2000 -c 2 -m 4 >/dev/null   # warm-up
    getsim_run getgw gw
    getsim_run get direct
    getsim_run getgw_dl gw -H 'grpc-timeout: 10S'
    getsim_run get_dl direct -H 'grpc-timeout: 10S'
    pgbench -n -M prepared -c "$CLIENTS" -j 2 -t "$((CALLS / CLIENTS))" -f "$WORK/getsim.sql" \
        "$BENCH_URL" >"$WORK/pgbench.out" 2>&1 || {
        cat "$WORK/pgbench.out" >&2
        die "pgbench failed"
    }
    pg_tps=$(awk '/^tps =/ {print $3}' "$WORK/pgbench.out")
    gw_rps=$(rps_of "$WORK/getgw.out")
    grpc_rps=$(rps_of "$WORK/get.out")
    gwdl_rps=$(rps_of "$WORK/getgw_dl.out")
    dl_rps=$(rps_of "$WORK/get_dl.out")
    printf 'GetSim via the gateway (API key):     %s calls/s (%s OK, counted by the gateway)\n' "$gw_rps" "$CALLS"
    printf 'GetSim direct to onceiot-sims:        %s calls/s (%s OK, counted by sims)\n' "$grpc_rps" "$CALLS"
    printf 'GetSim via the gateway, deadline 10s: %s calls/s\n' "$gwdl_rps"
    printf 'GetSim direct, deadline 10s:          %s calls/s\n' "$dl_rps"
    printf 'same SELECT via pgbench:              %s tps\n' "$pg_tps"
    awk -v g="$gw_rps" -v a="$grpc_rps" -v gd="$gwdl_rps" -v ad="$dl_rps" -v b="$pg_tps" 'BEGIN {
        printf "ratio gateway / pgbench: %.2f (target >= 0.5)\n", g / b
        printf "ratio direct / pgbench:  %.2f (target >= 0.7)\n", a / b
        printf "ratio with deadline / pgbench: gateway %.2f, direct %.2f\n", gd / b, ad / b }'
fi

if [[ "${BENCH_PEER:-1}" == 1 ]] && want getsim; then
    echo "== peer: FastAPI + asyncpg under uvicorn (2 workers), the same SELECT over HTTP/1.1, $((CLIENTS * STREAMS)) connections (the calls in flight above)"
    if ! /usr/bin/python3 -c 'import fastapi, uvicorn, asyncpg, uvloop' 2>/dev/null; then
        die "the peer needs Debian's python3-fastapi python3-uvicorn python3-asyncpg python3-uvloop (tools/install-deps --bench installs them)"
    fi
    PEER_PORT=$(free_port)
    PEER_DB_URL="$BENCH_URL" /usr/bin/python3 -m uvicorn --app-dir "$ROOT/tools/bench" \
        --host 127.0.0.1 --port "$PEER_PORT" --workers 2 --loop uvloop --no-access-log \
        --log-level warning peer_fastapi:app >"$WORK/peer.log" 2>&1 &
    PEER_PID=$!
    wait_port "$PEER_PORT"
    peer_url="http://127.0.0.1:$PEER_PORT/sims/$ICCID?org=$ORG"
    [[ "$(curl -sf "$peer_url")" == *"\"iccid\":\"$ICCID\""* ]] || die "the FastAPI peer does not answer the SIM"
    h2load --h1 -n 2000 -c 8 "$peer_url" >/dev/null # warm-up (both workers' pools)
    h2load --h1 -n "$CALLS" -c "$((CLIENTS * STREAMS))" -t 1 "$peer_url" >"$WORK/peer.out"
    peer_ok=$(awk '/^status codes:/ {gsub(",", ""); print $3}' "$WORK/peer.out")
    [[ "$peer_ok" == "$CALLS" ]] || { cat "$WORK/peer.out" >&2; die "the peer answered $peer_ok of $CALLS with 2xx"; }
    peer_rps=$(rps_of "$WORK/peer.out")
    printf 'GetSim via FastAPI + asyncpg:     %s req/s (%s HTTP 2xx)\n' "$peer_rps" "$peer_ok"
    awk -v g="$gw_rps" -v a="$grpc_rps" -v p="$peer_rps" -v b="$pg_tps" 'BEGIN {
        printf "ratio FastAPI / pgbench: %.2f\n", p / b
        printf "onceiot / FastAPI: gateway %.1fx, direct %.1fx\n", g / p, a / p }'
    kill -TERM "$PEER_PID" 2>/dev/null || true
    wait "$PEER_PID" 2>/dev/null || true
    PEER_PID=""
fi

if want list; then
    echo "== ListSims: page of 100 with tag filter \"rare\" (organization 1 holds them), 500 sequential calls"
    sims_gen list "$WORK/list.bin" 1 rare >"$WORK/list.meta"
    check "$WORK/list.meta" "$WORK/list.bin"
    codes_mark list "$SIMS_METRICS"
    h2 "$WORK/list.meta" "$WORK/list.bin" -n 500 -c 1 -m 1 --log-file="$WORK/list.log" >/dev/null
    codes_check list "$SIMS_METRICS" 500
    read -r p50 p99 n < <(h2_latency "$WORK/list.log")
    printf 'ListSims p50 %.2f ms, p99 %.2f ms (n=%d; target p50 <= 3 ms, p99 <= 6 ms)\n' "$p50" "$p99" "$n"
fi

want import || exit 0
echo "== ImportSims (5 calls of 10000 SIMs) vs COPY of the same rows, alternating batches"
# The fair COPY does what ImportSims does in its transaction: the SIMs (ids
# reserved from the table's sequence) and a sim_created event each, with the
# call's onceiot.call set (the audit triggers record it); the bare COPY
# loads the SIMs only, no call (no audit record). Batches alternate
# (ImportSims, fair COPY, bare COPY, ...) so load on the shared machine hits
# all three. CPU is the server side's: the PostgreSQL cluster (the
# postmaster's reaped backends and its live children) plus, for ImportSims,
# onceiot-sims, from /proc/<pid>/stat (utime + stime).
first=$(psql -tA "$BENCH_URL" -c "SELECT coalesce(max(substr(iccid, 5)::bigint), 0) + 1000 FROM sims.sims")
id0=$(psql -tA "$BENCH_URL" -c "SELECT setval(s, nextval(s) + 50000) - 50000 + 1 FROM
    pg_get_serial_sequence('sims.sims', 'id') AS s")
PG_PM=$(psql -tA "$BENCH_URL" -c "SELECT split_part(pg_read_file('postmaster.pid'), E'\n', 1)")
CALL_JSON='{"u":1,"o":1,"c":"bench","m":"/bench/Copy"}'
for i in 0 1 2 3 4; do # bodies and files made before the clock starts
    sims_gen import "$WORK/imp$i.bin" $((first + i * 10000)) 10000 >"$WORK/imp$i.meta"
    awk -v f=$((first + 100000 + i * 10000)) -v id=$((id0 + i * 10000)) -v sims="$WORK/fair$i.sims" \
        -v ev="$WORK/fair$i.events" 'BEGIN { for (k = 0; k < 10000; k++) {
        printf "%d\t1\t8988%015d\tdevice %d\t35%013d\n", id + k, f + k, f + k, f + k > sims
        printf "%d\t1\t8988%015d\tsim_created\tregistry\tSIM imported\tbench\n", id + k, f + k > ev } }'
    awk -v f=$((first + 200000 + i * 10000)) 'BEGIN { for (i = f; i < f + 10000; i++)
        printf "1\t8988%015d\tdevice %d\t35%013d\n", i, i, i }' >"$WORK/bare$i.sims"
done
# cpu_ticks PID: utime + stime of PID, of its children reaped and alive
# (processes that end while cat reads are left out).
cpu_ticks() {
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v p="$1" '{ pid = $1; s = $0; sub(/^.*\) /, "", s)
        split(s, f, " ")
        if (pid == p) t += f[12] + f[13] + f[14] + f[15]; else if (f[2] == p) t += f[12] + f[13] }
        END { print t }'
}
now() { date +%s.%N; }
TICK_MS=$((1000 / $(getconf CLK_TCK)))
# Autovacuum off on the written tables while the batches run: a vacuum or
# analyze of sims (trigram indexes) would otherwise land in one side's CPU.
AUTOVAC_TABLES=(sims.sims sims.sim_quotas) # (sim_events is partitioned: no such option)
for t in "${AUTOVAC_TABLES[@]}"; do
    psql -q -v ON_ERROR_STOP=1 "$BENCH_URL" -c "ALTER TABLE $t SET (autovacuum_enabled = false)"
done
declare -A wall cpu
for i in 0 1 2 3 4; do
    codes_mark "import$i" "$SIMS_METRICS"
    p0=$(cpu_ticks "$PG_PM") s0=$(cpu_ticks "$SIMS_PID") t0=$(now)
    h2 "$WORK/imp$i.meta" "$WORK/imp$i.bin" -n 1 -c 1 >/dev/null
    t1=$(now) p1=$(cpu_ticks "$PG_PM") s1=$(cpu_ticks "$SIMS_PID")
    codes_check "import$i" "$SIMS_METRICS" 1
    wall[import]+="$t0 $t1 " cpu[import]=$((${cpu[import]:-0} + p1 - p0 + s1 - s0))
    cpu[sims]=$((${cpu[sims]:-0} + s1 - s0))
    p0=$(cpu_ticks "$PG_PM") t0=$(now)
    psql -q -v ON_ERROR_STOP=1 "$BENCH_URL" -c "BEGIN" \
        -c "SELECT set_config('onceiot.call', '$CALL_JSON', true)" \
        -c "\\copy sims.sims (id, organization_id, iccid, label, imei) FROM '$WORK/fair$i.sims'" \
        -c "\\copy sims.sim_events (sim_id, organization_id, iccid, event_type, event_category, description, triggered_by) FROM '$WORK/fair$i.events'" \
        -c "COMMIT" >/dev/null
    t1=$(now) p1=$(cpu_ticks "$PG_PM")
    wall[fair]+="$t0 $t1 " cpu[fair]=$((${cpu[fair]:-0} + p1 - p0))
    p0=$(cpu_ticks "$PG_PM") t0=$(now)
    psql -q -v ON_ERROR_STOP=1 "$BENCH_URL" \
        -c "\\copy sims.sims (organization_id, iccid, label, imei) FROM '$WORK/bare$i.sims'"
    t1=$(now) p1=$(cpu_ticks "$PG_PM")
    wall[bare]+="$t0 $t1 " cpu[bare]=$((${cpu[bare]:-0} + p1 - p0))
done
for t in "${AUTOVAC_TABLES[@]}"; do
    psql -q -v ON_ERROR_STOP=1 "$BENCH_URL" -c "ALTER TABLE $t RESET (autovacuum_enabled)"
done
# Every side stored its 50000 SIMs (and the two first their events).
read -r imported fair bare events < <(psql -tA -F ' ' "$BENCH_URL" -c "SELECT
    count(*) FILTER (WHERE iccid BETWEEN '8988' || lpad('$first', 15, '0')
                                     AND '8988' || lpad('$((first + 49999))', 15, '0')),
    count(*) FILTER (WHERE iccid BETWEEN '8988' || lpad('$((first + 100000))', 15, '0')
                                     AND '8988' || lpad('$((first + 149999))', 15, '0')),
    count(*) FILTER (WHERE iccid BETWEEN '8988' || lpad('$((first + 200000))', 15, '0')
                                     AND '8988' || lpad('$((first + 249999))', 15, '0')),
    (SELECT count(*) FROM sims.sim_events WHERE event_type = 'sim_created'
        AND iccid >= '8988' || lpad('$first', 15, '0'))
    FROM sims.sims WHERE iccid >= '8988' || lpad('$first', 15, '0')")
[[ "$imported $fair $bare $events" == "50000 50000 50000 100000" ]] ||
    die "stored: ImportSims $imported, fair COPY $fair, bare COPY $bare of 50000 SIMs, $events of 100000 events"
# side: rows/s over its five batches (their wall-clock sum), CPU ms per 10k rows.
for side in import fair bare; do
    awk -v side="$side" -v w="${wall[$side]}" -v c="${cpu[$side]}" -v ms="$TICK_MS" 'BEGIN {
        n = split(w, t, " "); s = 0; for (k = 1; k < n; k += 2) s += t[k + 1] - t[k]
        printf "%s %.0f %.0f %.3f\n", side, 50000 / s, c * ms / 5, s }'
done >"$WORK/import.res"
awk -v sims=$((cpu[sims] * TICK_MS / 5)) '{ rps[$1] = $2; cpu[$1] = $3; s[$1] = $4 } END {
    printf "ImportSims:            50000 rows in %.2f s = %6.0f rows/s, CPU %4.0f ms per 10k rows (PostgreSQL %.0f + onceiot-sims %.0f)\n", s["import"], rps["import"], cpu["import"], cpu["import"] - sims, sims
    printf "COPY SIMs + events:    50000 rows in %.2f s = %6.0f rows/s, CPU %4.0f ms per 10k rows (PostgreSQL), call set (audited)\n", s["fair"], rps["fair"], cpu["fair"]
    printf "COPY SIMs only (bare): 50000 rows in %.2f s = %6.0f rows/s, CPU %4.0f ms per 10k rows (PostgreSQL)\n", s["bare"], rps["bare"], cpu["bare"]
    printf "ratio ImportSims / COPY SIMs + events: %.2f (target >= 0.6); / bare COPY: %.2f\n", rps["import"] / rps["fair"], rps["import"] / rps["bare"]
}' "$WORK/import.res"
