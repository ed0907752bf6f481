# shellcheck shell=bash
# gRPC status counting for the benchmarks. h2load counts HTTP statuses only,
# and a gRPC error travels as HTTP 200 with a grpc-status trailer; so every
# measured process runs with ONCEIOT_METRICS_LISTEN and each load run is
# judged by the server's own grpc_server_handled_total (shared/src/metrics.c),
# read before and after the run.
#
#   codes_snapshot HOSTPORT        prints "code count" lines (all methods summed)
#   codes_mark NAME HOSTPORT       remembers a snapshot under NAME (in $WORK)
#   codes_check NAME HOSTPORT N    dies unless, since codes_mark, the server
#                                  handled at least N calls with OK and none
#                                  with any other code
# Needs curl and WORK (a scratch folder) set by the caller.

codes_snapshot() {
    curl -sf "http://$1/metrics" |
        awk '/^grpc_server_handled_total\{/ {
            if (match($0, /grpc_code="[^"]*"/)) n[substr($0, RSTART + 11, RLENGTH - 12)] += $NF
        } END { for (c in n) printf "%s %d\n", c, n[c] }' | sort
}

codes_mark() {
    codes_snapshot "$2" >"$WORK/codes.$1" ||
        { echo "error: cannot read the metrics of $2" >&2; exit 1; }
}

codes_check() {
    local name="$1" hostport="$2" want="$3" now
    now="$(codes_snapshot "$hostport")" ||
        { echo "error: cannot read the metrics of $hostport" >&2; exit 1; }
    awk -v want="$want" -v name="$name" -v hp="$hostport" '
        FILENAME != "-" { before[$1] = $2; next } # (FNR == NR would take all when it is empty)
        { d = $2 - before[$1]; if ($1 == "OK") ok = d; else if (d > 0) bad = bad " " $1 "=" d }
        END {
            if (bad != "" || ok < want) {
                printf "error: %s: %s answered %d OK of %d calls, non-OK:%s\n", name, hp, ok, want, \
                    (bad == "" ? " none" : bad) > "/dev/stderr"
                exit 1
            }
        }' "$WORK/codes.$name" - <<<"$now" || exit 1
}
