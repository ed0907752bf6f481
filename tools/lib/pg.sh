# PostgreSQL cluster helpers for tools/stack (sourced, not run).
#
# A cluster lives in one folder ("cluster dir"), entirely private to this
# checkout:
#   <dir>/data        the data directory (owned by the cluster owner, 0700)
#   <dir>/sock        the Unix socket directory (owned by the cluster owner, 0700)
#   <dir>/port        the TCP port chosen when the cluster was created
# PostgreSQL refuses to run as root, so when we are root the cluster belongs to
# the "postgres" system user and every server-side command runs as that user.
# Nothing here ever touches a cluster outside the given folder.

PGBIN="${PGBIN:-/usr/lib/postgresql/15/bin}"

# The operating-system user that owns and runs our clusters.
pg_owner() {
    if ((EUID == 0)); then
        echo postgres
    else
        id -un
    fi
}

# Runs a command as the cluster owner, from / so that an unreadable current
# directory does not bother initdb or pg_ctl.
pg_as_owner() {
    if ((EUID == 0)); then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

# Fails with a clear message unless the cluster owner can reach dir (search
# permission on every folder above it). Names the first folder in the way.
pg_check_reachable() {
    local dir="$1"
    pg_as_owner test -x "$dir" && return 0
    local path="" part
    local -a parts
    IFS=/ read -ra parts <<<"${dir#/}"
    for part in "${parts[@]}"; do
        path="$path/$part"
        if ! pg_as_owner test -x "$path"; then
            echo "error: the PostgreSQL user '$(pg_owner)' cannot enter $path." >&2
            echo "       Allow it with 'chmod o+x $path' or use a checkout under a folder others can enter." >&2
            return 1
        fi
    done
    return 1
}

# True if something listens on TCP port $1 (IPv4 or IPv6), from /proc so no
# extra tool is needed.
pg_port_in_use() {
    local hex f
    local -a tables=()
    hex="$(printf '%04X' "$1")"
    for f in /proc/net/tcp /proc/net/tcp6; do
        [[ -r "$f" ]] && tables+=("$f")
    done
    awk -v p="$hex" 'FNR > 1 && $4 == "0A" { split($2, a, ":"); if (a[2] == p) found = 1 }
        END { exit !found }' "${tables[@]}"
}

# Prints a free TCP port from 20000-29999 that is not one of the arguments.
pg_free_port() {
    local port _
    for _ in $(seq 1 200); do
        port=$((20000 + RANDOM % 10000))
        [[ " $* " == *" $port "* ]] && continue
        pg_port_in_use "$port" || {
            echo "$port"
            return 0
        }
    done
    echo "error: found no free TCP port in 20000-29999" >&2
    return 1
}

pg_port() {
    cat "$1/port"
}

# True if dir holds a complete cluster: the port file is written last, so a
# creation cut short is redone rather than started half-configured.
pg_exists() {
    [[ -f "$1/port" && -f "$1/data/PG_VERSION" ]]
}

# Creates a new cluster in dir, replacing an incomplete one. mode is "dev"
# (scram over TCP) or "test" (trust over TCP, tuned for throwaway data).
# Extra arguments are ports the new cluster must not take.
pg_init() {
    local dir="$1" mode="$2"
    shift 2
    local owner port sock="$dir/sock"
    owner="$(pg_owner)"
    if ((${#sock} + 20 > 107)); then
        echo "error: socket path $sock is too long for a Unix socket; use a shorter checkout path" >&2
        return 1
    fi
    port="$(pg_free_port "$@")"
    rm -rf "$dir/data" "$sock" "$dir/port"
    mkdir -p "$dir/data" "$sock"
    chmod 0755 "$dir"
    chmod 0700 "$dir/data" "$sock"
    chown "$owner:" "$dir/data" "$sock"
    pg_as_owner "$PGBIN/initdb" -D "$dir/data" -U postgres -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 --no-instructions >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        return 1
    }
    pg__write_conf "$dir" "$mode" "$port" | pg_as_owner tee -a "$dir/data/postgresql.conf" >/dev/null
    pg__write_hba "$mode" | pg_as_owner tee "$dir/data/pg_hba.conf" >/dev/null
    echo "$port" >"$dir/port"
}

pg__write_conf() {
    local dir="$1" mode="$2" port="$3"
    cat <<EOF

# Written by tools/stack: a private cluster for this checkout only.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/sock'
unix_socket_permissions = 0700
max_connections = 200
EOF
    if [[ "$mode" == test ]]; then
        # Test data is thrown away after each run: durability only costs time.
        cat <<EOF
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    fi
}

# Over the socket (a folder only the owner can enter) the superuser needs no
# password; over TCP everyone uses scram, except in the throwaway test cluster.
pg__write_hba() {
    local tcp_auth=scram-sha-256
    [[ "$1" == test ]] && tcp_auth=trust
    cat <<EOF
# TYPE  DATABASE USER     ADDRESS       METHOD
local   all      postgres               trust
local   all      all                    scram-sha-256
host    all      all      127.0.0.1/32  $tcp_auth
EOF
}

# True if the cluster of dir runs. pg_ctl status alone is fooled for a moment
# after a kill -9: the dead postmaster stays a zombie until it is reaped.
pg_running() {
    [[ -d "$1/data" ]] && pg_as_owner "$PGBIN/pg_ctl" status -D "$1/data" >/dev/null 2>&1 ||
        return 1
    local pid
    pid="$(head -n 1 "$1/data/postmaster.pid" 2>/dev/null)" || return 1
    ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
}

# Starts the cluster of dir unless it runs, logging to logfile. A
# postmaster.pid left by a crash is handled by PostgreSQL itself, but right
# after a kill -9 the dead postmaster (until reaped) and its old backends
# still count as running for a moment, hence the retries.
pg_start() {
    local dir="$1" log="$2" port _
    pg_running "$dir" && return 0
    port="$(pg_port "$dir")"
    if pg_port_in_use "$port"; then
        echo "error: port $port (of the cluster in $dir) is taken by another program" >&2
        return 1
    fi
    touch "$log"
    chown "$(pg_owner):" "$log"
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        if pg_as_owner "$PGBIN/pg_ctl" start -w -t 60 -D "$dir/data" -l "$log" >/dev/null 2>&1; then
            return 0
        fi
        sleep 1
        pg_running "$dir" && return 0
    done
    echo "error: PostgreSQL in $dir did not start; end of $log:" >&2
    tail -n 20 "$log" >&2
    return 1
}

# Stops the cluster of dir if it runs. mode: fast (default) or immediate.
pg_stop() {
    local dir="$1" mode="${2:-fast}"
    pg_running "$dir" || return 0
    pg_as_owner "$PGBIN/pg_ctl" stop -w -t 60 -m "$mode" -D "$dir/data" >/dev/null
}

# Runs psql as the superuser over the socket of dir against database db,
# stopping at the first error. Further arguments go to psql.
pg_psql() {
    local dir="$1" db="$2"
    shift 2
    pg_as_owner "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir/sock" -p "$(pg_port "$dir")" \
        -U postgres -d "$db" "$@"
}

# The superuser URL over the socket of dir.
pg_socket_url() {
    echo "postgresql://postgres@/$2?host=$1/sock&port=$(pg_port "$1")"
}

# Prints the password of a service role, making one (192 random bits) the
# first time. The file is readable by its owner only.
pg_service_password() {
    local file="$1/$2.password"
    if [[ ! -s "$file" ]]; then
        (
            umask 077
            od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$file"
        )
    fi
    chmod 0600 "$file"
    cat "$file"
}

# Makes database db, and for each service a LOGIN role onceiot_<svc> with its
# password and a schema <svc> owned by it; then the extensions the
# migrations expect a superuser to have made: pg_trgm in schema public, and
# pg_partman in schema partman, usable by the roles named in partman_users.
# Safe to run any number of times: an existing role gets its stored password
# again.
pg_bootstrap() {
    local dir="$1" db="$2" partman_users="$3"
    shift 3
    local svc pw
    echo "SELECT 'CREATE DATABASE $db' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$db')\\gexec" |
        pg_psql "$dir" postgres
    {
        echo "SET client_min_messages = warning;"
        for svc in "$@"; do
            pw="$(pg_service_password "$dir" "$svc")"
            cat <<EOF
\\set role onceiot_$svc
\\set schema $svc
\\set pw $pw
SELECT format('CREATE ROLE %I LOGIN', :'role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role')\\gexec
ALTER ROLE :"role" WITH LOGIN PASSWORD :'pw';
CREATE SCHEMA IF NOT EXISTS :"schema" AUTHORIZATION :"role";
ALTER SCHEMA :"schema" OWNER TO :"role";
EOF
        done
        cat <<EOF
CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public;
CREATE SCHEMA IF NOT EXISTS partman;
CREATE EXTENSION IF NOT EXISTS pg_partman SCHEMA partman;
GRANT ALL ON SCHEMA partman TO $partman_users;
GRANT ALL ON ALL TABLES IN SCHEMA partman TO $partman_users;
GRANT ALL ON ALL SEQUENCES IN SCHEMA partman TO $partman_users;
GRANT EXECUTE ON ALL ROUTINES IN SCHEMA partman TO $partman_users;
EOF
    } | pg_psql "$dir" "$db"
}
