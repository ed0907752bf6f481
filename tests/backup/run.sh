#!/usr/bin/env bash
# tools/stack backup, restore, basebackup and pitr on a whole stack of their
# own (a private run folder, free ports, the binaries of BUILD_DIR):
#   1. up; a marker row; backup; down; the cluster removed; restore; up: the
#      admin's API key, only in the restored database, authenticates a call
#      through the gateway again, and the marker is back.
#   2. basebackup; row A; the time T; row B; down; pitr T; up: A is there, B
#      is not, and the stack serves.
# usage: run.sh BUILD_DIR SOURCE_DIR
set -euo pipefail

build=${1:?usage: run.sh BUILD_DIR SOURCE_DIR}
src=${2:?usage: run.sh BUILD_DIR SOURCE_DIR}
run=$(mktemp -d "${TMPDIR:-/tmp}/onceiot-backup.XXXXXX")
chmod 0755 "$run"
export ONCEIOT_RUN_DIR=$run ONCEIOT_STACK_BUILD_DIR=$build
for n in GATEWAY IDENTITY SIMS USAGE COMMERCE SUPPORT; do
    export "ONCEIOT_${n}_PORT=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
done
stack=$src/tools/stack
trap '"$stack" down >/dev/null 2>&1 || true; rm -rf "$run"' EXIT
fail() {
    echo "FAIL: $*"
    tail -n 20 "$run/log/postgres.log" 2>/dev/null || true
    exit 1
}
sql() {
    runuser -u postgres -- /usr/lib/postgresql/15/bin/psql -X -At -v ON_ERROR_STOP=1 \
        -h "$run/pg/sock" -p "$(cat "$run/pg/port")" -d onceiot -c "$1"
}
call() {
    "$build/tools/onceiot-call" "127.0.0.1:$ONCEIOT_GATEWAY_PORT" \
        /onceiot.identity.v1.IdentityService/ListUsers --bearer-file "$run/admin.key" --timeout-ms 5000
}

"$stack" up >"$run/up.log" 2>&1 || { cat "$run/up.log"; fail "up"; }
sql "CREATE TABLE public.backup_marker (v text); INSERT INTO public.backup_marker VALUES ('kept')"
file=$("$stack" backup | tail -n 1)
[[ -s "$file" && "$file" == "$run/backups/onceiot-"*.dump ]] || fail "no dump written ($file)"
"$stack" restore "$file" >/dev/null 2>&1 && fail "restore into a running stack was allowed"
"$stack" down >/dev/null
rm -rf "$run/pg"
"$stack" restore "$file" || fail "restore"
"$stack" up >"$run/up.log" 2>&1 || { cat "$run/up.log"; fail "up after restore"; }
[[ "$(call)" == OK ]] || fail "the restored API key does not authenticate through the gateway"
[[ "$(sql "SELECT string_agg(v, ',') FROM public.backup_marker")" == kept ]] || fail "marker lost"

"$stack" basebackup || fail "basebackup"
sql "CREATE TABLE public.pitr (v text); INSERT INTO public.pitr VALUES ('A')"
t=$(sql "SELECT clock_timestamp() AT TIME ZONE 'UTC'")
sql "INSERT INTO public.pitr VALUES ('B')"
[[ "$(sql "SELECT string_agg(v, ',' ORDER BY v) FROM public.pitr")" == A,B ]] || fail "rows not written"
"$stack" down >/dev/null
"$stack" pitr "$t" || fail "pitr"
[[ "$(sql "SELECT string_agg(v, ',' ORDER BY v) FROM public.pitr")" == A ]] ||
    fail "after pitr to $t: $(sql "SELECT string_agg(v, ',' ORDER BY v) FROM public.pitr") (want A)"
"$stack" up >"$run/up.log" 2>&1 || { cat "$run/up.log"; fail "up after pitr"; }
[[ "$(call)" == OK ]] || fail "no authenticated call after pitr"
echo "2 passed, 0 failed"
