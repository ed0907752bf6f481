# Process helpers for tools/stack (sourced, not run).
#
# A process we started has a pid file PID_DIR/<name>.pid; it counts as ours
# only while that pid is alive and its command line starts with the binary we
# would start, so a recycled pid is never mistaken for ours (or signalled).
# Needs PID_DIR and LOG_DIR.

# True if the process pid runs binary bin (the first word of its cmdline).
proc_is_ours() {
    local pid="$1" bin="$2" argv0
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    # sed reads to the end (head could kill tr with SIGPIPE under pipefail)
    argv0="$(tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline" | sed -n 1p)" || return 1
    [[ "$argv0" == "$bin" ]]
}

# Prints the pid of our running process name (binary bin) and succeeds, or
# removes a stale pid file and fails.
proc_pid() {
    local name="$1" bin="$2" file="$PID_DIR/$1.pid" pid
    [[ -f "$file" ]] || return 1
    pid="$(<"$file")"
    if proc_is_ours "$pid" "$bin"; then
        echo "$pid"
        return 0
    fi
    rm -f "$file"
    return 1
}

# Starts bin in the background in a session of its own, detached from the
# terminal, with stdout and stderr appended to LOG_DIR/<name>.log and its pid
# in PID_DIR/<name>.pid. Arguments after bin are NAME=value pairs added to
# its environment. setsid execs in place (we are not a group leader in a
# script), so $! is the service's own pid.
proc_start() {
    local name="$1" bin="$2"
    shift 2
    local log="$LOG_DIR/$name.log"
    printf '\n=== %s started by tools/stack\n' "$(date -Is)" >>"$log"
    setsid env "$@" "$bin" </dev/null >>"$log" 2>&1 &
    echo "$!" >"$PID_DIR/$name.pid"
}

# True while pid runs. A process that exited but is not yet reaped (a zombie)
# does not count, though kill -0 still finds it.
proc_alive() {
    [[ -e "/proc/$1" ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

# Sends SIGTERM to the given pids, waits up to grace seconds for all of them
# to exit, then SIGKILLs those left.
proc_stop_pids() {
    local grace="$1"
    shift
    local -a pids=("$@")
    local pid tick alive
    ((${#pids[@]})) || return 0
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for ((tick = 0; tick < grace * 10; tick++)); do
        alive=0
        for pid in "${pids[@]}"; do
            proc_alive "$pid" && alive=1
        done
        ((alive)) || return 0
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        if proc_alive "$pid"; then
            echo "warning: pid $pid did not stop within ${grace}s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
}

# Prints the last lines of the log of name to stderr.
proc_log_tail() {
    local log="$LOG_DIR/$1.log"
    echo "---- last lines of $log" >&2
    tail -n "${2:-30}" "$log" >&2 || true
    echo "----" >&2
}

# ONCEIOT_PRINCIPAL_SIGNING_KEYS of issuer $2 for the callees $3..., when
# every service has the principal secret $1 (as in the benchmarks): each
# callee's key for the issuer is BLAKE2b-256 keyed with that secret of
# "onceiot-principal:<issuer>" (shared/include/onceiot/principal.h).
signing_keys() {
    local secret="$1" issuer="$2" k out="" c
    shift 2
    k="$(/usr/bin/python3 -c 'import hashlib, sys; print(hashlib.blake2b(("onceiot-principal:" + sys.argv[2]).encode(), key=bytes.fromhex(sys.argv[1]), digest_size=32).hexdigest())' "$secret" "$issuer")"
    for c in "$@"; do
        out+="${out:+,}$c:$k"
    done
    echo "$out"
}
