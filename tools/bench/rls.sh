#!/usr/bin/env bash
# What row-level security costs GetSim (printed, never asserted).
#
# onceiot-sims runs as a service role (not a superuser: superusers skip every
# policy) on a throwaway database of BENCH_SIMS generated SIMs, and is called
# directly (this script signs the principals, as sims.sh does) with h2load.
# In one run, alternating rounds of BENCH_SECONDS each:
#   rls      the policies forced (as deployed)
#   norls    the same binary, sims and sim_quotas not forced (the owning role
#            skips their policies; the scope is still sent)
#   rls+dl   the policies forced, every call with a client deadline
#            (grpc-timeout 5S, tighter than the 30 s default, so the
#            statement_timeout travels with the statement)
#   main+dl  with MAIN_SIMS_BIN (an onceiot-sims built from main, before this
#            change) and the policies not forced: its per-call SET of
#            statement_timeout and its reset, round trips of their own
# and prints calls per second and the ratios. Every round is checked before
# and after with one call that must answer grpc-status 0.
#
# usage: BENCH_PG_URL=postgresql://postgres@127.0.0.1:5432/postgres tools/bench/rls.sh
# (a superuser URL; ONCEIOT_TEST_PG_URL when unset). Tunables: BENCH_SIMS
# (200000), BENCH_SECONDS (5, < 60), BENCH_ROUNDS (3), BENCH_CLIENTS (8),
# BENCH_STREAMS (16), MAIN_SIMS_BIN, ONCEIOT_BUILD_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD_DIR="${ONCEIOT_BUILD_DIR:-$ROOT/build}"
SIMS_BIN="$BUILD_DIR/services/onceiot-sims"
PG_URL="${BENCH_PG_URL:-${ONCEIOT_TEST_PG_URL:?set BENCH_PG_URL to a superuser URL}}"
N_SIMS="${BENCH_SIMS:-200000}"
SECONDS_RUN="${BENCH_SECONDS:-5}"
ROUNDS="${BENCH_ROUNDS:-3}"
CLIENTS="${BENCH_CLIENTS:-8}"
STREAMS="${BENCH_STREAMS:-16}"
DB=onceiot_rls_bench
ROLE=onceiot_rls_bench_sims
# shellcheck source=../lib/proc.sh
source "$ROOT/tools/lib/proc.sh"
# shellcheck source=../lib/bench.sh
source "$ROOT/tools/lib/bench.sh"
KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
WORK="$(mktemp -d "${TMPDIR:-/tmp}/rls-bench.XXXXXX")"
PIDS=()

die() {
    echo "error: $*" >&2
    exit 1
}
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
for tool in h2load python3 psql curl; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
[[ -x "$SIMS_BIN" ]] || die "$SIMS_BIN is missing: build first"

SU_URL="$(bench_db_url "$PG_URL" "$DB")"
PW=$(hex32)
# The service role's URL: the superuser URL's host and port, the role's credentials.
ROLE_URL="$(python3 - "$SU_URL" "$ROLE" "$PW" <<'PY'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
host = p.hostname + (":%d" % p.port if p.port else "")
print(u.urlunsplit(p._replace(netloc="%s:%s@%s" % (sys.argv[2], sys.argv[3], host))))
PY
)"

echo "== setting up $DB with $N_SIMS SIMs, onceiot-sims as role $ROLE"
psql -q -v ON_ERROR_STOP=1 "$PG_URL" -c "SET client_min_messages = warning" \
    -c "DROP DATABASE IF EXISTS $DB" -c "DROP ROLE IF EXISTS $ROLE" \
    -c "CREATE ROLE $ROLE LOGIN PASSWORD '$PW'" -c "CREATE DATABASE $DB"
psql -q -v ON_ERROR_STOP=1 "$SU_URL" <<SQL
CREATE SCHEMA partman;
CREATE EXTENSION pg_partman SCHEMA partman;
CREATE EXTENSION pg_trgm SCHEMA public;
GRANT ALL ON SCHEMA partman TO $ROLE;
GRANT ALL ON ALL TABLES IN SCHEMA partman TO $ROLE;
GRANT ALL ON ALL SEQUENCES IN SCHEMA partman TO $ROLE;
GRANT EXECUTE ON ALL ROUTINES IN SCHEMA partman TO $ROLE;
CREATE SCHEMA sims AUTHORIZATION $ROLE;
SQL
ONCEIOT_DATABASE_URL="$ROLE_URL" ONCEIOT_PRINCIPAL_KEY="$KEY" ONCEIOT_LOG_LEVEL=warn \
    "$SIMS_BIN" migrate
"$ROOT/tools/gen_sims" "$SU_URL" "$N_SIMS" 10 >/dev/null
psql -q "$SU_URL" -c "ANALYZE sims.sims" -c "ANALYZE sims.sim_quotas"

# start_sims NAME BIN [VAR=value...]: sets STARTED to its port (not in a
# subshell: its pid must reach PIDS, so the cleanup stops it).
start_sims() {
    local name="$1" bin="$2" port
    shift 2
    port=$(free_port)
    env ONCEIOT_DATABASE_URL="$ROLE_URL" ONCEIOT_PRINCIPAL_KEY="$KEY" \
        ONCEIOT_LISTEN="127.0.0.1:$port" ONCEIOT_LOG_LEVEL=warn ONCEIOT_WORKERS=8 \
        ONCEIOT_DB_POOL_SIZE=8 "$@" "$bin" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    wait_port "$port"
    STARTED="$port"
}
start_sims sims "$SIMS_BIN"
PORT="$STARTED"
MAIN_PORT=""
if [[ -n "${MAIN_SIMS_BIN:-}" ]]; then
    # Its migrations are behind this schema's: it must not try them.
    start_sims main "$MAIN_SIMS_BIN" ONCEIOT_MIGRATE_ON_START=false
    MAIN_PORT="$STARTED"
fi

N=$((N_SIMS / 2 + 7)) # one of the generated SIMs
ICCID=$(printf '8988%015d' $N)
ORG=$((1 + N % 10))
# A signed GetSim of organization $ORG (a user, not a superuser): the framed
# request in $WORK/get.bin, the path and principal headers in $WORK/get.meta.
gen() {
    sims_gen get "$WORK/get.bin" "$ICCID" "$ORG" >"$WORK/get.meta"
}
check() {
    local port="$1" status
    status=$(curl -s --http2-prior-knowledge -H 'content-type: application/grpc' -H 'te: trailers' \
        -H "$(sed -n 2p "$WORK/get.meta")" -H "$(sed -n 3p "$WORK/get.meta")" \
        --data-binary "@$WORK/get.bin" -D - -o /dev/null \
        "http://127.0.0.1:$port$(sed -n 1p "$WORK/get.meta")" | tr -d '\r' |
        awk -F': ' '$1 == "grpc-status" { print $2 }')
    [[ "$status" == 0 ]] || die "GetSim on port $port answered grpc-status ${status:-none}"
}
force() {
    local how="$1"
    psql -q -v ON_ERROR_STOP=1 "$SU_URL" -c "ALTER TABLE sims.sims $how FORCE ROW LEVEL SECURITY" \
        -c "ALTER TABLE sims.sim_quotas $how FORCE ROW LEVEL SECURITY"
}
# run PORT [h2load options...]: prints calls per second.
run() {
    local port="$1"
    shift
    gen
    check "$port"
    h2_signed "$port" "$WORK/get.meta" "$WORK/get.bin" -D "$SECONDS_RUN" -c "$CLIENTS" \
        -m "$STREAMS" "$@" >"$WORK/h2.out"
    check "$port"
    awk '/^finished in/ {gsub(",", ""); print $4}' "$WORK/h2.out"
}

declare -A sum
configs=(rls norls rls+dl)
[[ -n "$MAIN_PORT" ]] && configs+=(main+dl)
for c in "${configs[@]}"; do sum[$c]=0; done
gen
force ""
check "$PORT"
h2load "http://127.0.0.1:$PORT$(sed -n 1p "$WORK/get.meta")" -d "$WORK/get.bin" -n 4000 -c 2 -m 4 \
    -H 'content-type: application/grpc' -H 'te: trailers' -H "$(sed -n 2p "$WORK/get.meta")" \
    -H "$(sed -n 3p "$WORK/get.meta")" >/dev/null # warm-up
echo "== GetSim direct, $CLIENTS connections x $STREAMS streams, $ROUNDS rounds of ${SECONDS_RUN}s per configuration"
for ((r = 1; r <= ROUNDS; r++)); do
    for c in "${configs[@]}"; do
        case "$c" in
        rls) force "" && v=$(run "$PORT") ;;
        norls) force NO && v=$(run "$PORT") ;;
        rls+dl) force "" && v=$(run "$PORT" -H 'grpc-timeout: 5S') ;;
        main+dl) force NO && v=$(run "$MAIN_PORT" -H 'grpc-timeout: 5S') ;;
        esac
        printf '  round %d %-8s %10.0f calls/s\n' "$r" "$c" "$v"
        sum[$c]=$(python3 -c "print(${sum[$c]} + $v)")
    done
done
force ""
python3 - "${configs[@]}" <<PY
import sys
s = {$(for c in "${configs[@]}"; do printf '"%s": %s, ' "$c" "${sum[$c]}"; done)}
n = $ROUNDS
for c in sys.argv[1:]:
    print("  %-8s %10.0f calls/s (mean)" % (c, s[c] / n))
print("  GetSim with RLS / without:             %.3f" % (s["rls"] / s["norls"]))
print("  with a deadline / without (RLS):       %.3f" % (s["rls+dl"] / s["rls"]))
if "main+dl" in s:
    print("  with a deadline, this change / main:   %.3f" % (s["rls+dl"] / s["main+dl"]))
PY
