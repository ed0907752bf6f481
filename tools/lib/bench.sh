# Helpers of the benchmark scripts (tools/bench/*.sh), sourced after they
# set their globals. die, free_port, wait_port and hex32 need nothing;
# bench_db_url needs nothing; start and cleanup use the script's KEY (the
# processes' principal secret), BIN (the services' folder), WORK (a
# scratch folder), PIDS (an array), optionally LOG_LEVEL (the processes'
# ONCEIOT_LOG_LEVEL, warn) and KEEP_LOGS (a folder the logs are copied to
# at exit), and for cleanup BENCH_URL, PG_URL, DB.
# shellcheck shell=bash

die() {
    echo "error: $*" >&2
    exit 1
}

# A TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until something listens on 127.0.0.1:$1 (10 s at most).
wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    die "nothing listens on port $1"
}

# 32 random bytes in hex.
hex32() {
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'
}

# bench_db_url URL DB: the superuser URL with its database replaced.
bench_db_url() {
    python3 - "$1" "$2" <<'PY'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))
PY
}

# bench_db_create SERVICE...: a fresh database $DB on $PG_URL (BENCH_URL
# set to it) with pg_partman and pg_trgm, and each service's migrations
# applied.
bench_db_create() {
    BENCH_URL="$(bench_db_url "$PG_URL" "$DB")"
    psql -q -v ON_ERROR_STOP=1 "$PG_URL" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
    psql -q -v ON_ERROR_STOP=1 "$BENCH_URL" <<'SQL'
CREATE SCHEMA partman;
CREATE EXTENSION pg_partman SCHEMA partman;
CREATE EXTENSION pg_trgm SCHEMA public;
SQL
    local s
    for s in "$@"; do
        ONCEIOT_DATABASE_URL="$BENCH_URL" ONCEIOT_PRINCIPAL_KEY="$KEY" ONCEIOT_LOG_LEVEL=warn \
            "$BIN/onceiot-$s" migrate
    done
}

# start_identity PORT: onceiot-identity on the bench database with fresh
# keys; its bootstrap superuser's API key is then in $WORK/admin.key.
start_identity() {
    start identity "$1" ONCEIOT_DATABASE_URL="$BENCH_URL" ONCEIOT_TOKEN_SIGNING_KEY="$(hex32)" \
        ONCEIOT_API_KEY_PEPPER="$(hex32)" ONCEIOT_BOOTSTRAP_ADMIN_PASSWORD=bench-password-long \
        ONCEIOT_BOOTSTRAP_KEY_FILE="$WORK/admin.key"
}

# start NAME PORT VAR=value...: onceiot-NAME in the background on PORT,
# logged in $WORK/NAME.log, its pid added to PIDS; returns once it listens.
start() {
    local name="$1" port="$2"
    shift 2
    env ONCEIOT_PRINCIPAL_KEY="$KEY" ONCEIOT_LISTEN="127.0.0.1:$port" \
        ONCEIOT_LOG_LEVEL="${LOG_LEVEL:-warn}" "$@" \
        "$BIN/onceiot-$name" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    wait_port "$port"
}

# The EXIT trap: stops the started processes, drops the bench database (once
# its URL was made) and removes WORK.
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    [[ -n "${BENCH_URL:-}" ]] && psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $DB" 2>/dev/null
    if [[ -n "${KEEP_LOGS:-}" ]]; then
        mkdir -p "$KEEP_LOGS"
        cp "$WORK"/*.log "$KEEP_LOGS"/ 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
