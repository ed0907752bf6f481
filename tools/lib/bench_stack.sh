# shellcheck shell=bash
# A throwaway stack for a benchmark: a bench database with sims and usage
# migrated and generated SIMs, then onceiot-sims, -identity, -usage and
# -gateway on free ports, logged in a work folder, stopped (and the database
# dropped) on exit. Sourced by tools/bench/connectivity.sh.
#
# bench_stack_up PG_URL DB SIMS sets BENCH_URL (the bench database),
# GW_PORT and ADMIN_KEY (a superuser API key). Needs psql and python3;
# BUILD_DIR and ROOT set by the caller.

# shellcheck source=tools/lib/proc.sh
source "$ROOT/tools/lib/proc.sh"

BS_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
BS_WORK="$(mktemp -d "${TMPDIR:-/tmp}/bench-stack.XXXXXX")"
BS_PIDS=()
BS_PG_URL=""
BS_DB=""
BENCH_URL=""

bs_die() {
    echo "error: $*" >&2
    exit 1
}

bs_cleanup() {
    local pid
    for pid in "${BS_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    [[ -n "$BENCH_URL" ]] && psql -q "$BS_PG_URL" -c "DROP DATABASE IF EXISTS $BS_DB" 2>/dev/null
    rm -rf "$BS_WORK"
}
trap bs_cleanup EXIT

bs_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

bs_wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    bs_die "nothing listens on port $1"
}

bs_hex32() {
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'
}

# bs_start NAME PORT VAR=value...: one process in the background.
bs_start() {
    local name="$1" port="$2"
    shift 2
    env ONCEIOT_PRINCIPAL_KEY="$BS_KEY" ONCEIOT_LISTEN="127.0.0.1:$port" ONCEIOT_LOG_LEVEL=warn \
        "$@" "$BUILD_DIR/services/onceiot-$name" >"$BS_WORK/$name.log" 2>&1 &
    BS_PIDS+=($!)
    bs_wait_port "$port"
}

bench_stack_up() {
    BS_PG_URL="$1" BS_DB="$2"
    local n_sims="$3" b
    for b in psql python3; do
        command -v "$b" >/dev/null || bs_die "$b is missing"
    done
    for b in sims identity usage gateway; do
        [[ -x "$BUILD_DIR/services/onceiot-$b" ]] || bs_die "onceiot-$b is missing: build first"
    done
    BENCH_URL="$(python3 - "$BS_PG_URL" "$BS_DB" <<'PY'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))
PY
)"
    echo "== setting up $BS_DB with $n_sims SIMs"
    psql -q -v ON_ERROR_STOP=1 "$BS_PG_URL" -c "DROP DATABASE IF EXISTS $BS_DB" \
        -c "CREATE DATABASE $BS_DB"
    psql -q -v ON_ERROR_STOP=1 "$BENCH_URL" <<'SQL'
CREATE SCHEMA partman;
CREATE EXTENSION pg_partman SCHEMA partman;
CREATE EXTENSION pg_trgm SCHEMA public;
SQL
    for b in sims usage; do
        ONCEIOT_DATABASE_URL="$BENCH_URL" ONCEIOT_PRINCIPAL_KEY="$BS_KEY" ONCEIOT_LOG_LEVEL=warn \
            "$BUILD_DIR/services/onceiot-$b" migrate
    done
    "$ROOT/tools/gen_sims" "$BENCH_URL" "$n_sims" 10 >/dev/null

    local sims_port id_port usage_port nowhere
    sims_port=$(bs_free_port)
    bs_start sims "$sims_port" ONCEIOT_DATABASE_URL="$BENCH_URL"
    id_port=$(bs_free_port)
    bs_start identity "$id_port" ONCEIOT_DATABASE_URL="$BENCH_URL" \
        ONCEIOT_TOKEN_SIGNING_KEY="$(bs_hex32)" ONCEIOT_API_KEY_PEPPER="$(bs_hex32)" \
        ONCEIOT_BOOTSTRAP_ADMIN_PASSWORD=bench-password-long \
        ONCEIOT_BOOTSTRAP_KEY_FILE="$BS_WORK/admin.key"
    usage_port=$(bs_free_port)
    bs_start usage "$usage_port" ONCEIOT_DATABASE_URL="$BENCH_URL" \
        ONCEIOT_SIMS_ADDR="127.0.0.1:$sims_port" \
        ONCEIOT_PRINCIPAL_SIGNING_KEYS="$(signing_keys "$BS_KEY" usage sims)"
    GW_PORT=$(bs_free_port)
    nowhere="127.0.0.1:$(bs_free_port)"
    bs_start gateway "$GW_PORT" ONCEIOT_IDENTITY_ADDR="127.0.0.1:$id_port" \
        ONCEIOT_PRINCIPAL_SIGNING_KEYS="$(signing_keys "$BS_KEY" gateway identity sims usage \
            commerce support)" \
        ONCEIOT_SIMS_ADDR="127.0.0.1:$sims_port" ONCEIOT_USAGE_ADDR="127.0.0.1:$usage_port" \
        ONCEIOT_COMMERCE_ADDR="$nowhere" ONCEIOT_SUPPORT_ADDR="$nowhere" \
        ONCEIOT_RATE_LIMIT_RPS=10000000 ONCEIOT_RATE_LIMIT_BURST=10000000
    ADMIN_KEY="$(head -n 1 "$BS_WORK/admin.key")"
    [[ -n "$ADMIN_KEY" ]] || bs_die "identity wrote no bootstrap API key"
}
