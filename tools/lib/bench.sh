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

# sims_gen KIND OUT ARGS...: a framed onceiot.sims.v1 request written to OUT,
# and on stdout its path and the two headers of a principal signed as the
# gateway with the script's KEY (valid 60 s, a user of organization ORG,
# not a superuser, with scope sims:read; the importer a superuser with
# sims:write too) for h2load (h2_signed). Messages and principals
# are encoded by hand (protobuf wire format; crypto_auth is
# HMAC-SHA-512-256). KIND and ARGS:
#   get ICCID ORG         GetSim of one SIM in organization ORG
#   list ORG [TAG]        ListSims, a page of 100, filtered by TAG if given
#   import FIRST COUNT    ImportSims of COUNT SIMs from number FIRST (superuser)
sims_gen() {
    python3 - "$KEY" "$@" <<'PY'
import base64, hashlib, hmac, struct, sys, time
key = hashlib.blake2b(b"onceiot-principal:gateway", key=bytes.fromhex(sys.argv[1]), digest_size=32).digest()
kind, out = sys.argv[2], sys.argv[3]; args = sys.argv[4:]
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
svc = "/onceiot.sims.v1.SimService/"
if kind == "get":
    method, org, msg = "GetSim", int(args[1]), field(1, args[0])
elif kind == "list":
    method, org = "ListSims", int(args[0])
    msg = field(1, 100) + (field(5, args[1]) if len(args) > 1 else b"")
elif kind == "import":
    method, org, first, n = "ImportSims", 1, int(args[0]), int(args[1])
    msg = b"".join(field(1, field(1, "8988%015d" % i) + field(6, "device %d" % i)
                          + field(4, "35%013d" % i)) for i in range(first, first + n))
# ImportSims is for the operator's staff: the bench's importer is a superuser.
p = (field(1, 1) + field(2, "bench") + field(3, org) + field(4, 3)
     + (field(5, 1) if kind == "import" else b"") + field(6, "sims:read")
     + (field(6, "sims:write") if kind == "import" else b"") + field(8, "token") + field(9, svc + method)
     + field(10, int(time.time() * 1000)) + field(12, "gateway"))
sig = hmac.new(key, p, hashlib.sha512).digest()[:32] + b"gateway"
open(out, "wb").write(b"\0" + struct.pack(">I", len(msg)) + msg)
print(svc + method)
print("x-onceiot-principal-bin: " + base64.b64encode(p).decode())
print("x-onceiot-principal-sig-bin: " + base64.b64encode(sig).decode())
PY
}

# h2_signed PORT META BODY [h2load args...]: h2load against 127.0.0.1:PORT,
# the method and signed principal from META (sims_gen's output), the body
# from BODY.
h2_signed() {
    local port="$1" meta="$2" body="$3"
    shift 3
    h2load "http://127.0.0.1:$port$(sed -n 1p "$meta")" -d "$body" \
        -H 'content-type: application/grpc' -H 'te: trailers' \
        -H "$(sed -n 2p "$meta")" -H "$(sed -n 3p "$meta")" "$@"
}

# h2_latency LOG...: "p50_ms p99_ms n" of the calls in h2load --log-file
# files (the third column is each call's time in microseconds).
h2_latency() {
    cat "$@" | sort -n -k3 | awk '{ v[NR] = $3 } END {
        printf "%.3f %.3f %d\n", v[int(NR * 0.5)] / 1000, v[int(NR * 0.99)] / 1000, NR }'
}

# getsim_sql ICCID_EXPR ORG_EXPR: the SELECT of GetSim (sims_sql.h's
# columns from sim_summaries) for psql or pgbench, the ICCID and
# organization given as SQL expressions.
getsim_sql() {
    cat <<SQL
SELECT s.id, s.iccid, s.imsi, s.msisdn, s.imei, s.imei_lock, s.status, s.label,
       host(s.ip_address) AS ip, s.organization_id, s.customer_org_id,
       array_to_string(s.tags, ',') AS tags_csv, s.metadata::text AS metadata_json,
       (extract(epoch FROM s.activation_date) * 1000000)::bigint AS activation_us,
       (extract(epoch FROM s.suspension_date) * 1000000)::bigint AS suspension_us,
       (extract(epoch FROM s.termination_date) * 1000000)::bigint AS termination_us,
       (extract(epoch FROM s.expiry_date) * 1000000)::bigint AS expiry_us,
       (extract(epoch FROM s.created_at) * 1000000)::bigint AS created_us,
       (extract(epoch FROM s.updated_at) * 1000000)::bigint AS updated_us,
       s.data_volume, s.data_used, s.data_remaining, s.data_threshold_reached,
       s.sms_volume, s.sms_used, s.sms_remaining, s.sms_threshold_reached
  FROM sims.sim_summaries s
 WHERE s.iccid = $1 AND ($2::bigint IS NULL OR s.organization_id = $2::bigint);
SQL
}

# cpu_ticks PID...: user + system CPU of the processes so far, in clock
# ticks (getconf CLK_TCK a second); a pid gone is counted 0.
cpu_ticks() {
    local pid stat total=0 rest
    for pid in "$@"; do
        stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || continue
        rest="${stat##*) }" # the fields after "(comm)": state is field 3
        read -r -a f <<<"$rest"
        total=$((total + f[11] + f[12])) # utime (14) and stime (15)
    done
    echo "$total"
}

# pg_backends URL DB: the pids of the client backends connected to DB now
# (the services' pools), one a line.
pg_backends() {
    psql -tA "$1" -c "SELECT pid FROM pg_stat_activity WHERE datname = '$2'
        AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
}

# pg_bytes URL TABLE...: pg_total_relation_size (heap, TOAST, indexes) of
# the tables, a partitioned one summed over its partitions.
pg_bytes() {
    local url="$1" list="" t
    shift
    for t in "$@"; do
        list+="${list:+,}'$t'"
    done
    psql -tA "$url" -c "SELECT coalesce(sum(pg_total_relation_size(coalesce(p.relid, t))), 0)
        FROM unnest(ARRAY[$list]::regclass[]) t LEFT JOIN LATERAL pg_partition_tree(t) p ON true"
}

# usage_fill_raw SIMS [PER_DAY]: SIMS SIMs with PER_DAY (24) records a day,
# evenly spaced (random volumes, a few SMS, one network, a batch id per 1000
# SIMs and record time) on the 14 days from 21 to 8 days ago, written
# straight into usage.sim_usage of BENCH_URL (days compaction takes).
usage_fill_raw() {
    psql -q -v ON_ERROR_STOP=1 "$BENCH_URL" <<SQL
SET search_path = usage;
INSERT INTO sim_usage (sim_id, organization_id, iccid, "timestamp", volume_rx, volume_tx,
                       sms_mo, sms_mt, session_count, mcc, mnc, country, rat, batch_id)
SELECT s, 1 + s % 10, '89883030' || lpad(s::text, 11, '0'),
       date_trunc('day', now()) - interval '21 days' + h * (interval '1 day' / ${2:-24})
           + (s % 3600) * interval '1 second',
       (random() * 1000000)::bigint, (random() * 200000)::bigint, (random() < 0.05)::int,
       (random() < 0.02)::int, (random() * 3)::int, '262', '01', 'DE', 'LTE',
       'bench-' || h || '-' || (s / 1000)
FROM generate_series(1, $1) s, generate_series(0, ${2:-24} * 14 - 1) h;
SQL
}

# conn_fill_raw SIMS [PER_DAY]: the connectivity samples of usage_fill_raw's
# SIMs and days, PER_DAY (24) a day at the same instants (95% connected, a
# few cells, random signal, one network and APN), written straight into
# usage.sim_connectivity of BENCH_URL; no state rows.
conn_fill_raw() {
    psql -q -v ON_ERROR_STOP=1 "$BENCH_URL" <<SQL
SET search_path = usage;
INSERT INTO sim_connectivity (sim_id, "timestamp", organization_id, iccid, connected, cell_id,
                              signal_strength, signal_quality, rat, country_code, operator_name,
                              mcc, mnc, apn, batch_id)
SELECT s, date_trunc('day', now()) - interval '21 days' + h * (interval '1 day' / ${2:-24})
           + (s % 3600) * interval '1 second',
       1 + s % 10, '89883030' || lpad(s::text, 11, '0'), random() < 0.95,
       'cell-' || (s * 7 + h % 5) % 100000, -(50 + (random() * 60)::int),
       (random() * 100)::int, 'LTE', 'DE', 'Telekom', '262', '01', 'iot.example',
       'conn-' || h || '-' || (s / 1000)
  FROM generate_series(1, $1) s, generate_series(0, ${2:-24} * 14 - 1) h;
SQL
}

# usage_compact: `onceiot-usage compact` on BENCH_URL (every day older than
# 7 days; needs KEY and BIN), then VACUUM ANALYZE; COMPACT_S is how long the
# compaction took, in seconds.
usage_compact() {
    local start_s end_s
    start_s=$(date +%s.%N)
    ONCEIOT_DATABASE_URL="$BENCH_URL" ONCEIOT_PRINCIPAL_KEY="$KEY" ONCEIOT_LOG_LEVEL=warn \
        "$BIN/onceiot-usage" compact
    end_s=$(date +%s.%N)
    COMPACT_S="$(echo "$end_s - $start_s" | bc)"
    psql -q -v ON_ERROR_STOP=1 "$BENCH_URL" -c "VACUUM ANALYZE"
}
