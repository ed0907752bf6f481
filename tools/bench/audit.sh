#!/usr/bin/env bash
# What the audit trail's triggers cost a write (printed, never asserted).
#
# sims' schema is migrated by onceiot-sims into a throwaway database of
# BENCH_SIMS generated SIMs (tools/gen_sims); then pgbench runs the same
# transactions, alternating rounds of BENCH_SECONDS each, in three modes:
#   off       the audit triggers disabled (ALTER TABLE ... DISABLE TRIGGER)
#   internal  the triggers on, no public call named (outbox handlers, upkeep:
#             the statement trigger runs and returns at once)
#   public    the triggers on and onceiot.call set, as the runtime does for a
#             user's call: every statement writes its record, appended to
#             the hash chain at commit
# for two transactions:
#   top-up    one sim_quotas row of a random SIM (as TopUpQuota)
#   bulk      1,000 sims rows' labels (as BulkUpdateSims at its largest)
# and prints transactions per second and the ratios to "off".
#
# usage: BENCH_PG_URL=postgresql://postgres@127.0.0.1:5432/postgres tools/bench/audit.sh
# (a superuser URL; ONCEIOT_TEST_PG_URL when unset). Tunables: BENCH_SIMS
# (100000), BENCH_SECONDS (5), BENCH_ROUNDS (3), BENCH_CLIENTS (4),
# ONCEIOT_BUILD_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD_DIR="${ONCEIOT_BUILD_DIR:-$ROOT/build}"
SIMS_BIN="$BUILD_DIR/services/onceiot-sims"
PG_URL="${BENCH_PG_URL:-${ONCEIOT_TEST_PG_URL:?set BENCH_PG_URL to a superuser URL}}"
N_SIMS="${BENCH_SIMS:-100000}"
SECONDS_RUN="${BENCH_SECONDS:-5}"
ROUNDS="${BENCH_ROUNDS:-3}"
CLIENTS="${BENCH_CLIENTS:-4}"
DB=onceiot_audit_bench
# shellcheck source=../lib/bench.sh
source "$ROOT/tools/lib/bench.sh"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/audit-bench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

die() {
    echo "error: $*" >&2
    exit 1
}
for tool in pgbench psql; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
[[ -x "$SIMS_BIN" ]] || die "$SIMS_BIN is missing: build first"

URL="$(bench_db_url "$PG_URL" "$DB")"
echo "== setting up $DB with $N_SIMS SIMs"
psql -q -v ON_ERROR_STOP=1 "$PG_URL" -c "SET client_min_messages = warning" \
    -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
psql -q -v ON_ERROR_STOP=1 "$URL" -c "CREATE SCHEMA partman" \
    -c "CREATE EXTENSION pg_partman SCHEMA partman" -c "CREATE EXTENSION pg_trgm SCHEMA public"
ONCEIOT_DATABASE_URL="$URL" ONCEIOT_PRINCIPAL_KEY="$(hex32)" ONCEIOT_LOG_LEVEL=warn \
    "$SIMS_BIN" migrate
"$ROOT/tools/gen_sims" "$URL" "$N_SIMS" 10 >/dev/null
psql -q "$URL" -c "ANALYZE sims.sims" -c "ANALYZE sims.sim_quotas"

# The call the runtime would name for a user of organization 1.
CALL='{"u":7,"o":1,"c":"api_key:3","m":"/onceiot.sims.v1.SimService/TopUpQuota","r":"bench","t":"4bf92f3577b34da6a3ce929d0e0e4736","p":"ipv4:127.0.0.1:5000"}'
# script NAME SET-CALL STATEMENT: a pgbench script file.
script() {
    {
        echo "\\set id random(1, $N_SIMS)"
        echo "\\set lo random(1, $((N_SIMS - 1000)))"
        echo "BEGIN;"
        echo "SELECT set_config('onceiot.superuser', 'true', true);"
        [[ "$2" == call ]] && echo "SELECT set_config('onceiot.call', '$CALL', true);"
        echo "$3"
        echo "COMMIT;"
    } >"$WORK/$1.sql"
}
TOPUP="UPDATE sims.sim_quotas SET volume = volume + 1 WHERE sim_id = :id AND quota_type = 'data';"
BULK="UPDATE sims.sims SET label = md5(random()::text) WHERE id BETWEEN :lo AND :lo + 999;"
script topup-nocall none "$TOPUP"
script topup-call call "$TOPUP"
script bulk-nocall none "$BULK"
script bulk-call call "$BULK"

triggers() {
    psql -q -v ON_ERROR_STOP=1 "$URL" -c "ALTER TABLE sims.sim_quotas $1 TRIGGER USER" \
        -c "ALTER TABLE sims.sims $1 TRIGGER USER"
}
# tps FILE CLIENTS: transactions per second of one pgbench run.
tps() {
    pgbench -n -f "$1" -c "$2" -j "$2" -T "$SECONDS_RUN" "$URL" 2>/dev/null |
        awk '/^tps = / { printf "%.0f\n", $3 }'
}
declare -A SUM=()
for ((r = 1; r <= ROUNDS; r++)); do
    line="round $r:"
    for what in topup bulk; do
        c=$CLIENTS
        [[ "$what" == bulk ]] && c=1
        triggers DISABLE
        off=$(tps "$WORK/$what-nocall.sql" "$c")
        triggers ENABLE
        internal=$(tps "$WORK/$what-nocall.sql" "$c")
        public=$(tps "$WORK/$what-call.sql" "$c")
        SUM[$what-off]=$((${SUM[$what-off]:-0} + off))
        SUM[$what-internal]=$((${SUM[$what-internal]:-0} + internal))
        SUM[$what-public]=$((${SUM[$what-public]:-0} + public))
        line+=" $what off $off, internal $internal, public $public tps;"
    done
    echo "    $line"
done
records=$(psql -tAq "$URL" -c "SELECT count(*) FROM sims.audit_pending")
echo
printf '%-36s %10s %10s %10s %9s %9s\n' "transaction (mean of rounds)" "off" "internal" "public" \
    "int/off" "pub/off"
for what in topup bulk; do
    off=$((SUM[$what-off] / ROUNDS)) int=$((SUM[$what-internal] / ROUNDS))
    pub=$((SUM[$what-public] / ROUNDS))
    label="top-up, one sim_quotas row, $CLIENTS clients"
    [[ "$what" == bulk ]] && label="bulk, 1,000 sims rows, 1 client"
    printf '%-36s %10s %10s %10s %9s %9s\n' "$label" "$off" "$int" "$pub" \
        "$(awk -v a="$int" -v b="$off" 'BEGIN { printf "%.2f", b ? a / b : 0 }')" \
        "$(awk -v a="$pub" -v b="$off" 'BEGIN { printf "%.2f", b ? a / b : 0 }')"
done
echo "($records audit records written; no service runs here, so they wait in audit_pending for the chainer)"
psql -q "$PG_URL" -c "DROP DATABASE $DB" >/dev/null
