# shellcheck shell=bash
# A throwaway stack for a benchmark: a bench database with sims and usage
# migrated and generated SIMs, then onceiot-sims, -identity, -usage and
# -gateway on free ports, logged in a work folder, stopped (and the database
# dropped) on exit. Sourced by tools/bench/connectivity.sh, on top of
# tools/lib/bench.sh (die, free_port, start, cleanup, ...).
#
# bench_stack_up PG_URL DB SIMS sets BENCH_URL (the bench database),
# GW_PORT and ADMIN_KEY (a superuser API key), SIMS_PORT, SIMS_PID,
# IDENTITY_PID and GATEWAY_PID, and SIMS_METRICS and GW_METRICS (the metrics endpoints of sims
# and the gateway, for tools/lib/codes.sh). Needs psql and python3;
# BUILD_DIR and ROOT set by the caller.

# shellcheck source=tools/lib/proc.sh
source "$ROOT/tools/lib/proc.sh"
# shellcheck source=tools/lib/bench.sh
source "$ROOT/tools/lib/bench.sh"

KEY="$(hex32)"
BIN="$BUILD_DIR/services"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/bench-stack.XXXXXX")"
PIDS=()
BENCH_URL=""
trap cleanup EXIT

bench_stack_up() {
    PG_URL="$1" DB="$2"
    local n_sims="$3" b
    for b in psql python3; do
        command -v "$b" >/dev/null || die "$b is missing"
    done
    for b in sims identity usage gateway; do
        [[ -x "$BIN/onceiot-$b" ]] || die "onceiot-$b is missing: build first"
    done
    echo "== setting up $DB with $n_sims SIMs"
    bench_db_create sims usage
    "$ROOT/tools/gen_sims" "$BENCH_URL" "$n_sims" 10

    local id_port usage_port nowhere
    SIMS_PORT=$(free_port)
    SIMS_METRICS="127.0.0.1:$(free_port)"
    start sims "$SIMS_PORT" ONCEIOT_DATABASE_URL="$BENCH_URL" ONCEIOT_METRICS_LISTEN="$SIMS_METRICS"
    SIMS_PID="${PIDS[-1]}"
    id_port=$(free_port)
    start_identity "$id_port"
    IDENTITY_PID="${PIDS[-1]}"
    usage_port=$(free_port)
    start usage "$usage_port" ONCEIOT_DATABASE_URL="$BENCH_URL" \
        ONCEIOT_SIMS_ADDR="127.0.0.1:$SIMS_PORT" \
        ONCEIOT_PRINCIPAL_SIGNING_KEYS="$(signing_keys "$KEY" usage sims)"
    GW_PORT=$(free_port)
    GW_METRICS="127.0.0.1:$(free_port)"
    nowhere="127.0.0.1:$(free_port)"
    start gateway "$GW_PORT" ONCEIOT_IDENTITY_ADDR="127.0.0.1:$id_port" \
        ONCEIOT_PRINCIPAL_SIGNING_KEYS="$(signing_keys "$KEY" gateway identity sims usage \
            commerce support)" \
        ONCEIOT_SIMS_ADDR="127.0.0.1:$SIMS_PORT" ONCEIOT_USAGE_ADDR="127.0.0.1:$usage_port" \
        ONCEIOT_COMMERCE_ADDR="$nowhere" ONCEIOT_SUPPORT_ADDR="$nowhere" \
        ONCEIOT_RATE_LIMIT_RPS=10000000 ONCEIOT_RATE_LIMIT_BURST=10000000 \
        ONCEIOT_METRICS_LISTEN="$GW_METRICS"
    GATEWAY_PID="${PIDS[-1]}"
    ADMIN_KEY="$(head -n 1 "$WORK/admin.key")"
    [[ -n "$ADMIN_KEY" ]] || die "identity wrote no bootstrap API key"
}
