#!/usr/bin/env bash
# Benchmark of the support service (printed, never asserted).
#
# In one run, against a throwaway database holding BENCH_SUPPORT_TICKETS
# generated tickets in 100 organizations (with public comments on 30% and
# internal notes on 10% of them), with onceiot-identity, onceiot-support and
# onceiot-gateway, onceiot-bench-support (tools/bench/bench_support.c)
# measures ListTickets with a full-text search, one call at a time, p50/p99,
# as a customer (one organization) and as staff (all), through the gateway
# and as the service's own statement alone; then EXPLAIN ANALYZE of a
# customer and a staff search.
#
# usage: BENCH_PG_URL=postgresql://postgres@127.0.0.1:5432/postgres tools/bench/support.sh
# (a superuser URL; ONCEIOT_TEST_PG_URL is used when BENCH_PG_URL is unset).
# Tunables: BENCH_SUPPORT_TICKETS (100000), BENCH_SUPPORT_CALLS (500 per
# line), ONCEIOT_BUILD_DIR (build/ of this checkout). Needs psql, python3.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD_DIR="${ONCEIOT_BUILD_DIR:-$ROOT/build}"
BIN="$BUILD_DIR/services"
CLIENT="$BUILD_DIR/tools/bench/onceiot-bench-support"
PG_URL="${BENCH_PG_URL:-${ONCEIOT_TEST_PG_URL:?set BENCH_PG_URL to a superuser URL}}"
N_TICKETS="${BENCH_SUPPORT_TICKETS:-100000}"
CALLS="${BENCH_SUPPORT_CALLS:-500}"
DB=onceiot_support_bench
# shellcheck source=../lib/proc.sh
source "$ROOT/tools/lib/proc.sh"
# shellcheck source=../lib/bench.sh
source "$ROOT/tools/lib/bench.sh"
KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
WORK="$(mktemp -d "${TMPDIR:-/tmp}/support-bench.XXXXXX")"
PIDS=()
BENCH_URL=""

trap cleanup EXIT

for tool in psql python3; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
for b in "$BIN/onceiot-identity" "$BIN/onceiot-support" "$BIN/onceiot-gateway" "$CLIENT" \
    "$BUILD_DIR/tools/onceiot-health"; do
    [[ -x "$b" ]] || die "$b is missing: build first"
done

BENCH_URL="$(bench_db_url "$PG_URL" "$DB")"

echo "== setting up $DB with $N_TICKETS tickets"
psql -q -v ON_ERROR_STOP=1 "$PG_URL" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
ONCEIOT_DATABASE_URL="$BENCH_URL" ONCEIOT_PRINCIPAL_KEY="$KEY" ONCEIOT_LOG_LEVEL=warn \
    "$BIN/onceiot-support" migrate
# Subjects and descriptions draw from 40 common words and 2000 rare codes
# (e0000..e1999); most tickets are closed; created over the last year.
t0=$(date +%s)
psql -q -v ON_ERROR_STOP=1 -v n="$N_TICKETS" "$BENCH_URL" <<'SQL'
SELECT setseed(0.42) \g /dev/null
CREATE TEMP TABLE vocab AS SELECT ARRAY['modem', 'offline', 'roaming', 'apn', 'invoice', 'late',
    'firmware', 'update', 'signal', 'network', 'attach', 'reject', 'imei', 'lock', 'quota',
    'topup', 'order', 'shipment', 'activation', 'suspend', 'latency', 'timeout', 'sms',
    'delivery', 'gateway', 'api', 'certificate', 'vpn', 'firewall', 'coverage', 'outage',
    'billing', 'refund', 'contract', 'renewal', 'battery', 'antenna', 'configuration',
    'profile', 'esim'] AS w;
INSERT INTO support.tickets (organization_id, created_by, subject, description, priority,
                             category, status, resolution, first_response_at, created_at)
SELECT 1 + g % 100, 1000 + g % 100,
       w[1 + floor(random() * 40)::int] || ' ' || w[1 + floor(random() * 40)::int]
           || ' e' || lpad(floor(random() * 2000)::int::text, 4, '0'),
       (SELECT string_agg(w[1 + floor(random() * 40)::int + 0 * k], ' ') FROM generate_series(1, 8) k)
           || ' e' || lpad(floor(random() * 2000)::int::text, 4, '0')
           || ' e' || lpad(floor(random() * 2000)::int::text, 4, '0'),
       (ARRAY['low', 'medium', 'high', 'critical'])[1 + g % 4],
       (ARRAY['general', 'connectivity', 'sim_management', 'billing', 'orders', 'api'])[1 + g % 6],
       s, CASE WHEN s IN ('resolved', 'closed') THEN 'fixed' END,
       CASE WHEN s <> 'open' THEN now() END, now() - random() * interval '365 days'
FROM vocab, generate_series(1, :n) AS g,
     LATERAL (SELECT CASE WHEN g % 10 < 6 THEN 'closed' WHEN g % 10 = 6 THEN 'resolved'
                          WHEN g % 10 = 7 THEN 'in_progress' ELSE 'open' END AS s) st;
INSERT INTO support.ticket_comments (ticket_id, organization_id, author_id, author_is_staff,
                                     visibility, body)
SELECT t.id, t.organization_id, 1, true, CASE WHEN t.id % 10 = 0 THEN 'internal' ELSE 'public' END,
       (SELECT string_agg(w[1 + floor(random() * 40)::int + 0 * k], ' ') FROM generate_series(1, 6) k)
FROM vocab, support.tickets t WHERE t.id % 10 IN (0, 1, 2, 3);
VACUUM ANALYZE support.tickets;
VACUUM ANALYZE support.ticket_comments;
SQL
echo "loaded in $(($(date +%s) - t0)) s: $(psql -tA "$BENCH_URL" -c "SELECT count(*) FROM support.tickets") tickets, $(psql -tA "$BENCH_URL" -c "SELECT count(*) FROM support.ticket_comments") comments"

NOWHERE="127.0.0.1:$(free_port)"
ID_PORT=$(free_port)
start_identity "$ID_PORT"
# ListTickets calls neither sims nor identity: sims is nowhere.
SUPPORT_PORT=$(free_port)
start support "$SUPPORT_PORT" ONCEIOT_DATABASE_URL="$BENCH_URL" ONCEIOT_SIMS_ADDR="$NOWHERE" \
    ONCEIOT_IDENTITY_ADDR="127.0.0.1:$ID_PORT" \
    ONCEIOT_PRINCIPAL_SIGNING_KEYS="$(signing_keys "$KEY" support sims identity)"
GW_PORT=$(free_port)
start gateway "$GW_PORT" ONCEIOT_IDENTITY_ADDR="127.0.0.1:$ID_PORT" \
    ONCEIOT_PRINCIPAL_SIGNING_KEYS="$(signing_keys "$KEY" gateway identity sims usage commerce support)" \
    ONCEIOT_SIMS_ADDR="$NOWHERE" ONCEIOT_USAGE_ADDR="$NOWHERE" ONCEIOT_COMMERCE_ADDR="$NOWHERE" \
    ONCEIOT_SUPPORT_ADDR="127.0.0.1:$SUPPORT_PORT" \
    ONCEIOT_RATE_LIMIT_RPS=10000000 ONCEIOT_RATE_LIMIT_BURST=10000000
ADMIN_KEY="$(head -n 1 "$WORK/admin.key")"
[[ -n "$ADMIN_KEY" ]] || die "identity wrote no bootstrap API key"
# The gateway routes once its health checks have seen identity and support.
"$BUILD_DIR/tools/onceiot-health" "127.0.0.1:$GW_PORT" onceiot.support.v1.SupportService \
    --timeout-ms 500 --wait-ms 10000 >/dev/null || die "the gateway never saw support SERVING"

echo "== ListTickets with a text search"
"$CLIENT" "127.0.0.1:$GW_PORT" "Bearer $ADMIN_KEY" "$BENCH_URL" "$CALLS"
