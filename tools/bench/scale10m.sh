#!/usr/bin/env bash
# The measured point at 10 million SIMs (issue 14; printed, never asserted).
#
# In one run, on one throwaway database with onceiot-sims, -identity, -usage
# and -gateway (tools/lib/bench_stack.sh): BENCH_SCALE_SMALL SIMs are
# generated (tools/gen_sims), measured, then grown in the same database to
# BENCH_SCALE_LARGE SIMs and measured again with the same services; for
# each size it prints
#   1. GetSim direct to onceiot-sims (principals signed as the gateway), one
#      call at a time: 10 SIMs spread over the table, 200 calls each, p50/p99
#      (h2load --log-file);
#   2. ListSims direct, a page of 100 of organization 1 (a tenth of the
#      SIMs), without a filter and with the tag filter "rare" (1 in 10 of
#      that organization's SIMs), 500 sequential calls each, p50/p99;
#   3. the same SELECT as GetSim with pgbench, one client, a random SIM per
#      transaction: PostgreSQL's time per query as a client sees it (with
#      the loopback round trip), and EXPLAIN ANALYZE's execution time;
#   4. CPU per GetSim of each hop: BENCH_CALLS calls through the gateway
#      (the bootstrap superuser's API key, cached after the first call),
#      8 connections x 16 streams, and the utime + stime (/proc/PID/stat) the
#      gateway, sims, identity and the database's backends spent meanwhile,
#      divided by the calls; then the same direct to sims, and ListSims
#      (organization 1, no filter) direct, a quarter as many calls;
#   5. sims.sims and sims.sim_quotas on disk (heap, TOAST and indexes) per SIM,
#      and the generation time;
# then the large / small ratios. Every load run is judged by the servers'
# own gRPC status counters (tools/lib/codes.sh): any non-OK answer fails it.
# Generating 10 million SIMs takes minutes and about 10 GB (check df).
#
# usage: tools/stack bench scale10m.sh, or BENCH_PG_URL=postgresql://postgres@...
# tools/bench/scale10m.sh (a superuser URL; ONCEIOT_TEST_PG_URL when unset).
# Tunables: BENCH_SCALE_SMALL (1000000), BENCH_SCALE_LARGE (10000000),
# BENCH_CALLS (20000), ONCEIOT_BUILD_DIR (build/ of this checkout). Needs
# h2load, pgbench, psql, python3, curl.
# shellcheck source-path=SCRIPTDIR/../..
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD_DIR="${ONCEIOT_BUILD_DIR:-$ROOT/build}"
PG_URL="${BENCH_PG_URL:-${ONCEIOT_TEST_PG_URL:?set BENCH_PG_URL to a superuser URL}}"
SMALL="${BENCH_SCALE_SMALL:-1000000}"
LARGE="${BENCH_SCALE_LARGE:-10000000}"
CALLS="${BENCH_CALLS:-20000}"
DB=onceiot_scale_bench
# shellcheck source=tools/lib/bench_stack.sh
source "$ROOT/tools/lib/bench_stack.sh"
# shellcheck source=tools/lib/codes.sh
source "$ROOT/tools/lib/codes.sh"
for b in h2load pgbench curl; do
    command -v "$b" >/dev/null || die "$b is missing"
done
((LARGE > SMALL)) || die "BENCH_SCALE_LARGE must exceed BENCH_SCALE_SMALL"
TCK="$(getconf CLK_TCK)"

df -h "$(dirname "$WORK")" | sed 's/^/disk before: /'
t0=$(date +%s.%N)
bench_stack_up "$PG_URL" "$DB" "$SMALL"
t1=$(date +%s.%N)
psql -q "$BENCH_URL" -c "VACUUM (ANALYZE) sims.sims" -c "VACUUM (ANALYZE) sims.sim_quotas"

# measure LABEL N: the figures above for a table of N SIMs, written to
# $WORK/LABEL.txt as "name value" lines (and printed).
measure() {
    local label="$1" n="$2" out="$WORK/$1.txt" i sim p50 p99
    : >"$out"
    echo "== $label: $n SIMs"
    # 1. GetSim, one call at a time, 10 SIMs spread over the table.
    rm -f "$WORK"/get-*.log
    codes_mark "get-$label" "$SIMS_METRICS"
    for i in $(seq 0 9); do
        sim=$((1 + i * (n / 10) + n / 23))
        sims_gen get "$WORK/get.bin" "$(printf '8988%015d' "$sim")" $((1 + sim % 10)) \
            >"$WORK/get.meta"
        h2_signed "$SIMS_PORT" "$WORK/get.meta" "$WORK/get.bin" -n 200 -c 1 -m 1 \
            --log-file="$WORK/get-$i.log" >/dev/null
    done
    codes_check "get-$label" "$SIMS_METRICS" 2000
    read -r p50 p99 _ < <(h2_latency "$WORK"/get-*.log)
    printf 'getsim_p50_ms %s\ngetsim_p99_ms %s\n' "$p50" "$p99" >>"$out"
    # 2. ListSims, organization 1, without and with the filter.
    local kind
    for kind in all rare; do
        if [[ "$kind" == all ]]; then
            sims_gen list "$WORK/list.bin" 1 >"$WORK/list.meta"
        else
            sims_gen list "$WORK/list.bin" 1 rare >"$WORK/list.meta"
        fi
        codes_mark "list-$kind-$label" "$SIMS_METRICS"
        h2_signed "$SIMS_PORT" "$WORK/list.meta" "$WORK/list.bin" -n 500 -c 1 -m 1 \
            --log-file="$WORK/list-$kind.log" >/dev/null
        codes_check "list-$kind-$label" "$SIMS_METRICS" 500
        read -r p50 p99 _ < <(h2_latency "$WORK/list-$kind.log")
        printf 'list_%s_p50_ms %s\nlist_%s_p99_ms %s\n' "$kind" "$p50" "$kind" "$p99" >>"$out"
    done
    # 3. PostgreSQL alone: pgbench, one client, a random SIM each time.
    { echo "\\set n random(1, $n)"; getsim_sql "'8988' || lpad(CAST(:n AS text), 15, '0')" "(1 + :n % 10)"; } \
        >"$WORK/getsim.sql"
    pgbench -n -M prepared -c 1 -t 5000 -f "$WORK/getsim.sql" "$BENCH_URL" >"$WORK/pgbench.out" 2>&1 ||
        { cat "$WORK/pgbench.out" >&2; die "pgbench failed"; }
    awk '/^latency average/ { print "pg_getsim_ms", $4 }' "$WORK/pgbench.out" >>"$out"
    sim=$((n / 2 + 77))
    # shellcheck disable=SC2016 # $1 and $2 are the statement's parameters
    psql -q "$BENCH_URL" -c "PREPARE g(text, bigint) AS $(getsim_sql '$1' '$2' | tr -d ';')" \
        -c "EXECUTE g('$(printf '8988%015d' "$sim")', $((1 + sim % 10)))" \
        -c "EXPLAIN (ANALYZE, TIMING OFF) EXECUTE g('$(printf '8988%015d' $((sim + 1)))', $((1 + (sim + 1) % 10)))" |
        awk '/Execution Time/ { print "pg_getsim_exec_ms", $3 }' >>"$out"
    # 4. CPU per call of each hop.
    local via pids_pg before after wall ncalls
    for via in gw direct list; do
        ncalls="$CALLS"
        # warm-up at the same concurrency: every pool connection open
        sims_gen get "$WORK/get.bin" "$(printf '8988%015d' 4321)" 2 >"$WORK/get.meta"
        h2_signed "$SIMS_PORT" "$WORK/get.meta" "$WORK/get.bin" -n 2000 -c 8 -m 16 >/dev/null
        mapfile -t pids_pg < <(pg_backends "$PG_URL" "$DB")
        local -a procs=("$GATEWAY_PID" "$SIMS_PID" "$IDENTITY_PID")
        local -a b=()
        for i in "${procs[@]}"; do b+=("$(cpu_ticks "$i")"); done
        before="$(cpu_ticks "${pids_pg[@]}")"
        if [[ "$via" == gw ]]; then
            codes_mark "cpu-$via-$label" "$GW_METRICS"
            h2load "http://127.0.0.1:$GW_PORT$(sed -n 1p "$WORK/get.meta")" -d "$WORK/get.bin" \
                -H 'content-type: application/grpc' -H 'te: trailers' \
                -H "authorization: Bearer $ADMIN_KEY" -n "$CALLS" -c 8 -m 16 >"$WORK/cpu.out"
            codes_check "cpu-$via-$label" "$GW_METRICS" "$CALLS"
        elif [[ "$via" == direct ]]; then
            codes_mark "cpu-$via-$label" "$SIMS_METRICS"
            h2_signed "$SIMS_PORT" "$WORK/get.meta" "$WORK/get.bin" -n "$CALLS" -c 8 -m 16 \
                >"$WORK/cpu.out"
            codes_check "cpu-$via-$label" "$SIMS_METRICS" "$CALLS"
        else
            ncalls=$((CALLS / 4))
            sims_gen list "$WORK/list.bin" 1 >"$WORK/list.meta"
            codes_mark "cpu-$via-$label" "$SIMS_METRICS"
            h2_signed "$SIMS_PORT" "$WORK/list.meta" "$WORK/list.bin" -n "$ncalls" -c 8 -m 16 \
                >"$WORK/cpu.out"
            codes_check "cpu-$via-$label" "$SIMS_METRICS" "$ncalls"
        fi
        mapfile -t pids_pg < <(pg_backends "$PG_URL" "$DB") # a backend opened meanwhile counts whole
        after="$(cpu_ticks "${pids_pg[@]}")"
        wall=$(awk '/^finished in/ {gsub(",", ""); print $4}' "$WORK/cpu.out")
        local names=(gateway sims identity)
        for i in 0 1 2; do
            awk -v n="${via}_cpu_us_${names[i]}" -v d="$(($(cpu_ticks "${procs[i]}") - b[i]))" \
                -v t="$TCK" -v c="$ncalls" 'BEGIN { printf "%s %.1f\n", n, d / t / c * 1e6 }' >>"$out"
        done
        awk -v n="${via}_cpu_us_postgres" -v d="$((after - before))" -v t="$TCK" -v c="$ncalls" \
            'BEGIN { printf "%s %.1f\n", n, d / t / c * 1e6 }' >>"$out"
        echo "${via}_calls_per_s $wall" >>"$out"
    done
    # 5. Bytes per SIM.
    awk -v s="$(pg_bytes "$BENCH_URL" sims.sims)" -v q="$(pg_bytes "$BENCH_URL" sims.sim_quotas)" \
        -v n="$n" 'BEGIN { printf "sims_bytes_per_sim %.0f\nquotas_bytes_per_sim %.0f\n", s / n, q / n }' \
        >>"$out"
    sed 's/^/  /' "$out"
}

measure small "$SMALL"
echo "== growing to $LARGE SIMs (tools/gen_sims from $((SMALL + 1)))"
t2=$(date +%s.%N)
"$ROOT/tools/gen_sims" "$BENCH_URL" $((LARGE - SMALL)) 10 $((SMALL + 1))
psql -q "$BENCH_URL" -c "VACUUM (ANALYZE) sims.sims" -c "VACUUM (ANALYZE) sims.sim_quotas"
t3=$(date +%s.%N)
df -h "$(dirname "$WORK")" | sed 's/^/disk after: /'
measure large "$LARGE"

echo "== $LARGE SIMs next to $SMALL SIMs (large / small)"
awk -v gs="$(echo "$t1 - $t0" | bc)" -v gl="$(echo "$t3 - $t2" | bc)" -v s="$SMALL" -v l="$LARGE" '
    FNR == NR { a[$1] = $2; order[++n] = $1; next } { b[$1] = $2 }
    END {
        printf "%-28s %12s %12s %8s\n", "figure", s " SIMs", l " SIMs", "ratio"
        for (i = 1; i <= n; i++) {
            k = order[i]
            printf "%-28s %12s %12s %8.2f\n", k, a[k], b[k], (a[k] > 0 ? b[k] / a[k] : 0)
        }
        printf "generation: %d SIMs (with the stack start) %.0f s; %d more (with VACUUM ANALYZE) %.0f s\n",
            s, gs, l - s, gl
    }' "$WORK/small.txt" "$WORK/large.txt"
