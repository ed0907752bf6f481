#!/usr/bin/env bash
# Bytes per row on disk of the tables that grow with SIMs and time, for the
# capacity model (docs/capacity.md; printed, never asserted).
#
# On a throwaway database with the sims and usage schemas migrated: the
# rows are written straight with SQL (no service), VACUUM ANALYZE, and for
# each table pg_total_relation_size (heap, TOAST, every index; a partitioned
# table summed over its partitions) / its rows:
#   sims.sims, sims.sim_quotas       BENCH_ROWS_SIMS SIMs (tools/gen_sims)
#   sims.sim_events                  5 events a SIM (status and quota events
#                                    with their JSON, today)
#   usage.sim_usage                  BENCH_ROWS_USAGE_SIMS SIMs x
#                                    BENCH_ROWS_PER_DAY records a day x 14
#                                    days, 21 to 8 days ago (usage_fill_raw,
#                                    as tools/bench/compact.sh)
#   usage.sim_usage_hourly, _daily, _daily_network, org_usage_daily
#                                    the rollups of those records, as the
#                                    ingest writes them (one org row per batch)
#   usage.sim_connectivity, _state   the same SIMs x as many samples a day
#                                    (conn_fill_raw)
# then `onceiot-usage compact` (every day older than 7 days), VACUUM, and the
# raw records and samples again: the compacted bytes per record or sample,
# sim_usage_compact and sim_connectivity_compact included, then each part
# alone (the raw partitions keep their indexes' pages after compaction).
#
# usage: tools/stack bench rowsize.sh, or BENCH_PG_URL=postgresql://postgres@...
# tools/bench/rowsize.sh (a superuser URL; ONCEIOT_TEST_PG_URL when unset).
# Tunables: BENCH_ROWS_SIMS (200000), BENCH_ROWS_USAGE_SIMS (10000),
# BENCH_ROWS_PER_DAY (24; compaction packs a SIM's day into one row, so
# its gain depends on it),
# ONCEIOT_BUILD_DIR (build/ of this checkout). Needs psql, python3.
# shellcheck source-path=SCRIPTDIR/../..
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD_DIR="${ONCEIOT_BUILD_DIR:-$ROOT/build}"
BIN="$BUILD_DIR/services"
PG_URL="${BENCH_PG_URL:-${ONCEIOT_TEST_PG_URL:?set BENCH_PG_URL to a superuser URL}}"
N_SIMS="${BENCH_ROWS_SIMS:-200000}"
U_SIMS="${BENCH_ROWS_USAGE_SIMS:-10000}"
PER_DAY="${BENCH_ROWS_PER_DAY:-24}"
DB=onceiot_rowsize_bench
# shellcheck source=tools/lib/proc.sh
source "$ROOT/tools/lib/proc.sh"
# shellcheck source=tools/lib/bench.sh
source "$ROOT/tools/lib/bench.sh"
KEY="$(hex32)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/rowsize-bench.XXXXXX")"
PIDS=()
BENCH_URL=""
trap cleanup EXIT
for b in sims usage; do
    [[ -x "$BIN/onceiot-$b" ]] || die "onceiot-$b is missing: build first"
done

echo "== setting up $DB: $N_SIMS SIMs; usage and connectivity of $U_SIMS SIMs x $PER_DAY a day x 14 days"
bench_db_create sims usage
"$ROOT/tools/gen_sims" "$BENCH_URL" "$N_SIMS" 10
psql -q -v ON_ERROR_STOP=1 "$BENCH_URL" <<SQL
INSERT INTO sims.sim_events (sim_id, organization_id, iccid, occurred_at, event_type,
                             event_category, severity, event_data, description, triggered_by)
SELECT s.id, s.organization_id, s.iccid,
       date_trunc('day', now()) + random() * (now() - date_trunc('day', now())),
       CASE WHEN k % 2 = 0 THEN 'status_changed' ELSE 'quota_threshold_reached' END,
       CASE WHEN k % 2 = 0 THEN 'status' ELSE 'quota' END,
       CASE WHEN k % 2 = 0 THEN 'info' ELSE 'warning' END,
       CASE WHEN k % 2 = 0 THEN '{"from": "Enabled", "to": "Suspended"}'::jsonb
            ELSE '{"quota_type": "data", "used": 858993459, "volume": 1073741824}'::jsonb END,
       '', 'user:' || (1 + k)
  FROM sims.sims s, generate_series(1, 5) k;
SQL
usage_fill_raw "$U_SIMS" "$PER_DAY"
psql -q -v ON_ERROR_STOP=1 "$BENCH_URL" <<SQL
SET search_path = usage;
INSERT INTO sim_usage_hourly (sim_id, hour, organization_id, iccid, volume_rx, volume_tx,
                              sms_mo, sms_mt, session_count, records)
SELECT sim_id, date_trunc('hour', "timestamp"), organization_id, iccid, sum(volume_rx),
       sum(volume_tx), sum(sms_mo), sum(sms_mt), sum(session_count), count(*)
  FROM sim_usage GROUP BY 1, 2, 3, 4;
INSERT INTO sim_usage_daily (sim_id, day, organization_id, iccid, volume_rx, volume_tx,
                             sms_mo, sms_mt, session_count, records)
SELECT sim_id, ("timestamp" AT TIME ZONE 'UTC')::date, organization_id, iccid, sum(volume_rx),
       sum(volume_tx), sum(sms_mo), sum(sms_mt), sum(session_count), count(*)
  FROM sim_usage GROUP BY 1, 2, 3, 4;
INSERT INTO sim_usage_daily_network (sim_id, day, country, mcc, mnc, organization_id, volume_rx,
                                     volume_tx, sms_mo, sms_mt, session_count, records)
SELECT sim_id, ("timestamp" AT TIME ZONE 'UTC')::date, country, mcc, mnc, organization_id,
       sum(volume_rx), sum(volume_tx), sum(sms_mo), sum(sms_mt), sum(session_count), count(*)
  FROM sim_usage GROUP BY 1, 2, 3, 4, 5, 6;
INSERT INTO org_usage_daily (organization_id, day, batch_id, active_sims, volume_rx, volume_tx,
                             sms_mo, sms_mt, session_count, records)
SELECT organization_id, ("timestamp" AT TIME ZONE 'UTC')::date, batch_id, count(DISTINCT sim_id),
       sum(volume_rx), sum(volume_tx), sum(sms_mo), sum(sms_mt), sum(session_count), count(*)
  FROM sim_usage GROUP BY 1, 2, 3;
SQL
conn_fill_raw "$U_SIMS" "$PER_DAY"
psql -q -v ON_ERROR_STOP=1 "$BENCH_URL" <<SQL
SET search_path = usage;
INSERT INTO sim_connectivity_state (sim_id, organization_id, iccid, connected, since, last_seen,
                                    cell_id, signal_strength, signal_quality, rat, country_code,
                                    operator_name, mcc, mnc, apn, transitions)
SELECT DISTINCT ON (sim_id) sim_id, organization_id, iccid, connected, "timestamp", "timestamp",
       cell_id, signal_strength, signal_quality, rat, country_code, operator_name, mcc, mnc, apn, 3
  FROM sim_connectivity ORDER BY sim_id, "timestamp" DESC;
SQL
psql -q -v ON_ERROR_STOP=1 "$BENCH_URL" -c "VACUUM ANALYZE"

# row ROWS_SQL TABLE...: "tables rows bytes bytes/row" of the tables (and
# their partitions) now, the rows counted by ROWS_SQL.
row() {
    local rows bytes sql="$1"
    shift
    rows="$(psql -tA "$BENCH_URL" -c "$sql")"
    bytes="$(pg_bytes "$BENCH_URL" "$@")"
    local IFS=+
    awk -v t="$*" -v r="$rows" -v b="$bytes" \
        'BEGIN { printf "%-50s %10d %14d %10.1f\n", t, r, b, (r > 0 ? b / r : 0) }'
}
count() {
    echo "SELECT count(*) FROM $1"
}

printf '%-50s %10s %14s %10s\n' table rows bytes bytes/row
for t in sims.sims sims.sim_quotas sims.sim_events usage.sim_usage usage.sim_usage_hourly \
    usage.sim_usage_daily usage.sim_usage_daily_network usage.org_usage_daily \
    usage.sim_connectivity usage.sim_connectivity_state; do
    row "$(count "$t")" "$t"
done
records="$(psql -tA "$BENCH_URL" -c "SELECT count(*) FROM usage.sim_usage")"
samples="$(psql -tA "$BENCH_URL" -c "SELECT count(*) FROM usage.sim_connectivity")"

echo "== onceiot-usage compact (days older than 7)"
usage_compact
printf '%-50s %10s %14s %10s\n' "compacted (raw left + compact)" "raw rows" bytes bytes/row
row "SELECT $records" usage.sim_usage usage.sim_usage_compact
row "SELECT $records" usage.sim_usage_compact
row "SELECT $records" usage.sim_usage
row "SELECT $samples" usage.sim_connectivity usage.sim_connectivity_compact
row "SELECT $samples" usage.sim_connectivity_compact
row "SELECT $samples" usage.sim_connectivity
# What the compacted days' raw partitions still hold: VACUUM gives back their
# empty heap pages, not their indexes' (a B-tree file does not shrink).
psql -tA "$BENCH_URL" -c "SELECT 'raw partitions left: heap ' || sum(pg_relation_size(p.relid))
    || ' B, indexes ' || sum(pg_indexes_size(p.relid)) || ' B'
    FROM pg_partition_tree('usage.sim_usage') p WHERE p.isleaf"
awk -v t="$COMPACT_S" -v n="$((records + samples))" \
    'BEGIN { printf "compaction took %.1f s (%.0f records and samples/s)\n", t, n / t }'
