# Helpers of the benchmark scripts in tools/bench (sourced, not run).
#
# A script sets PG_URL (a superuser URL), DB (its throwaway database), BIN
# (the services' build folder) and KEY (the processes' principal secret),
# then calls bench_setup; processes started with bench_start are stopped and
# the database dropped when the script exits.

die() {
    echo "error: $*" >&2
    exit 1
}

bench_cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    [[ -n "${BENCH_URL:-}" ]] && psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $DB" 2>/dev/null
    rm -rf "$WORK"
}

# Checks the tools and binaries (arguments), makes WORK, sets BENCH_URL to DB
# on PG_URL's server and creates DB afresh with pg_partman and pg_trgm.
bench_setup() {
    local tool b
    for tool in psql python3; do
        command -v "$tool" >/dev/null || die "$tool is missing"
    done
    for b in "$@"; do
        [[ -x "$b" ]] || die "$b is missing: build first"
    done
    PIDS=()
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/$DB.XXXXXX")"
    trap bench_cleanup EXIT
    BENCH_URL="$(python3 - "$PG_URL" "$DB" <<'PY'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))
PY
)"
    echo "== setting up $DB"
    psql -q -v ON_ERROR_STOP=1 "$PG_URL" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
    psql -q -v ON_ERROR_STOP=1 "$BENCH_URL" <<'SQL'
CREATE SCHEMA partman;
CREATE EXTENSION pg_partman SCHEMA partman;
CREATE EXTENSION pg_trgm SCHEMA public;
SQL
}

# Applies the migrations of each named service to the bench database.
bench_migrate() {
    local s
    for s in "$@"; do
        ONCEIOT_DATABASE_URL="$BENCH_URL" ONCEIOT_PRINCIPAL_KEY="$KEY" ONCEIOT_LOG_LEVEL=warn \
            "$BIN/onceiot-$s" migrate
    done
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    die "nothing listens on port $1"
}
hex32() {
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'
}
# start NAME PORT VAR=value...: one process in the background, logged in $WORK.
start() {
    local name="$1" port="$2"
    shift 2
    env ONCEIOT_PRINCIPAL_KEY="$KEY" ONCEIOT_LISTEN="127.0.0.1:$port" ONCEIOT_LOG_LEVEL=warn "$@" \
        "$BIN/onceiot-$name" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    wait_port "$port"
}
# start_identity PORT: identity with a bootstrap admin whose API key is
# written to $WORK/admin.key.
start_identity() {
    start identity "$1" ONCEIOT_DATABASE_URL="$BENCH_URL" ONCEIOT_TOKEN_SIGNING_KEY="$(hex32)" \
        ONCEIOT_API_KEY_PEPPER="$(hex32)" ONCEIOT_BOOTSTRAP_ADMIN_PASSWORD=bench-password-long \
        ONCEIOT_BOOTSTRAP_KEY_FILE="$WORK/admin.key"
}
