# Backup, restore and point-in-time recovery of the development cluster, for
# tools/stack (sourced, not run; uses its RUN_DIR, PG_DIR, SERVICES, say, die,
# dev_pg_up, proc_pid, bin_of and tools/lib/pg.sh).
#
#   .run/backups/onceiot-<UTC time>.dump   pg_dump custom format of the whole
#                                          database (every service's schema,
#                                          partman, extensions) in one snapshot
#   .run/wal-archive/                      WAL segments archived by the cluster
#                                          once `basebackup` has turned it on
#   .run/basebackups/<UTC time>/           pg_basebackup copies (plain format)

BACKUP_DIR="$RUN_DIR/backups"
WAL_ARCHIVE_DIR="$RUN_DIR/wal-archive"
BASEBACKUP_DIR="$RUN_DIR/basebackups"
BACKUP_DB=onceiot

backup__utc_stamp() {
    date -u +%Y%m%dT%H%M%SZ
}

# Fails unless every service of the stack is stopped.
backup__require_stopped() {
    local name running=()
    for name in "${PROCESSES[@]}"; do
        proc_pid "$name" "$(bin_of "$name")" >/dev/null && running+=("$name")
    done
    ((${#running[@]} == 0)) || die "stop the stack first (tools/stack down): ${running[*]} running"
}

# Runs a PostgreSQL client program (pg_dump, pg_restore, ...) as the cluster
# owner against the development cluster over its socket.
backup__pg() {
    local prog="$1"
    shift
    pg_as_owner "$PGBIN/$prog" -h "$PG_DIR/sock" -p "$(pg_port "$PG_DIR")" -U postgres "$@"
}

# tools/stack backup: one consistent dump (a single snapshot) of the whole
# database into .run/backups/onceiot-<time>.dump; the services may run.
cmd_backup() {
    dev_pg_up >/dev/null
    mkdir -p "$BACKUP_DIR"
    local file
    file="$BACKUP_DIR/$BACKUP_DB-$(backup__utc_stamp).dump"
    [[ -e "$file" ]] && die "$file exists already (one backup a second)"
    # Written under a temporary name: a dump cut short never looks complete.
    if ! backup__pg pg_dump --format=custom --compress=6 --dbname="$BACKUP_DB" >"$file.partial"; then
        rm -f "$file.partial"
        die "pg_dump failed"
    fi
    chmod 0600 "$file.partial"
    mv "$file.partial" "$file"
    local schemas
    schemas="$(pg_as_owner "$PGBIN/pg_restore" --list <"$file" |
        awk '$4 == "SCHEMA" { print $6 }' | sort | tr '\n' ' ')"
    say "backup written: $file ($(du -h "$file" | cut -f1); schemas: ${schemas% })"
    echo "$file"
}

# tools/stack restore FILE: replaces the database with the dump in FILE. The
# services must be stopped; PostgreSQL is started (and made, with the service
# roles, if .run/pg is gone). Start the stack again with tools/stack up.
cmd_restore() {
    local file="${1:-}"
    [[ -n "$file" ]] || die "usage: tools/stack restore FILE (a dump made by tools/stack backup)"
    [[ -r "$file" ]] || die "cannot read $file"
    backup__require_stopped
    dev_pg_up >/dev/null
    pg_as_owner "$PGBIN/pg_restore" --list <"$file" >/dev/null ||
        die "$file is not a pg_dump custom-format archive"
    say "restoring $file into database $BACKUP_DB"
    pg_psql "$PG_DIR" postgres -c "DROP DATABASE IF EXISTS $BACKUP_DB WITH (FORCE)" \
        -c "CREATE DATABASE $BACKUP_DB"
    # Roles are not in a dump: dev_pg_up has made them (owners and grants
    # refer to them). One transaction: a failed restore leaves it empty.
    if ! backup__pg pg_restore --exit-on-error --single-transaction --dbname="$BACKUP_DB" <"$file"; then
        die "pg_restore failed; the database $BACKUP_DB is empty (restore again, or tools/stack up for a new one)"
    fi
    pg_bootstrap "$PG_DIR" "$BACKUP_DB" "onceiot_sims, onceiot_usage" "${SERVICES[@]}"
    say "restored; start the stack with tools/stack up"
}

# Turns WAL archiving into .run/wal-archive on (restarting PostgreSQL if it
# was off) and lets the superuser make base backups over the socket.
backup__archiving_on() {
    local owner
    owner="$(pg_owner)"
    mkdir -p "$WAL_ARCHIVE_DIR"
    chown "$owner:" "$WAL_ARCHIVE_DIR"
    chmod 0700 "$WAL_ARCHIVE_DIR"
    if ! grep -q '^local[[:space:]]\+replication[[:space:]]\+postgres' "$PG_DIR/data/pg_hba.conf"; then
        echo "local   replication postgres               trust" |
            pg_as_owner tee -a "$PG_DIR/data/pg_hba.conf" >/dev/null
        pg_psql "$PG_DIR" postgres -c "SELECT pg_reload_conf()" >/dev/null
    fi
    local mode
    mode="$(pg_psql "$PG_DIR" postgres -At -c "SHOW archive_mode")"
    [[ "$mode" == on ]] && return 0
    say "turning WAL archiving on ($WAL_ARCHIVE_DIR); restarting postgres"
    pg_psql "$PG_DIR" postgres \
        -c "ALTER SYSTEM SET wal_level = replica" \
        -c "ALTER SYSTEM SET archive_mode = on" \
        -c "ALTER SYSTEM SET archive_command = 'test ! -f $WAL_ARCHIVE_DIR/%f && cp %p $WAL_ARCHIVE_DIR/%f'" \
        -c "ALTER SYSTEM SET archive_timeout = '60s'"
    pg_stop "$PG_DIR" fast
    pg_start "$PG_DIR" "$LOG_DIR/postgres.log"
}

# tools/stack basebackup: turns archiving on if needed and writes a base
# backup to .run/basebackups/<time>/; the services may run.
cmd_basebackup() {
    dev_pg_up >/dev/null
    backup__archiving_on
    mkdir -p "$BASEBACKUP_DIR"
    chmod 0755 "$BASEBACKUP_DIR"
    local dir
    dir="$BASEBACKUP_DIR/$(backup__utc_stamp)"
    [[ -e "$dir" ]] && die "$dir exists already (one base backup a second)"
    mkdir "$dir.partial"
    chown "$(pg_owner):" "$dir.partial"
    chmod 0700 "$dir.partial"
    if ! backup__pg pg_basebackup --pgdata="$dir.partial" --format=plain --wal-method=stream \
        --checkpoint=fast --no-sync; then
        rm -rf "$dir.partial"
        die "pg_basebackup failed"
    fi
    # A base backup is a valid start for any target after its end.
    date -u +%s%N >"$dir.partial/onceiot-finished"
    mv "$dir.partial" "$dir"
    say "base backup written: $dir"
}

# Makes the cluster archive the WAL written so far and waits (30 s at most)
# until it is in the archive.
backup__archive_now() {
    local wal archived _
    wal="$(pg_psql "$PG_DIR" postgres -At -c "SELECT pg_walfile_name(pg_switch_wal())")"
    for _ in $(seq 1 300); do
        archived="$(pg_psql "$PG_DIR" postgres -At -c "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")"
        [[ -n "$archived" && ! "$archived" < "$wal" ]] && return 0
        sleep 0.1
    done
    die "WAL segment $wal was not archived within 30 s (see $LOG_DIR/postgres.log)"
}

# tools/stack pitr TIME: the cluster as it was at TIME (anything date -d
# reads; UTC unless it says otherwise): the newest base backup finished
# before TIME, with the archived WAL replayed up to TIME. The services must
# be stopped. The data directory it replaces is kept as
# .run/pg/data.before-pitr-<time>.
cmd_pitr() {
    local when="${1:-}" target epoch
    [[ -n "$when" ]] || die "usage: tools/stack pitr TIME (e.g. '2026-12-02 17:30:05.250')"
    epoch="$(TZ=UTC date -d "$when" +%s%N)" || die "cannot read the time '$when'"
    target="$(TZ=UTC date -d "$when" '+%Y-%m-%d %H:%M:%S.%6N+00')"
    backup__require_stopped
    local base="" b
    for b in "$BASEBACKUP_DIR"/*/; do
        b="${b%/}"
        [[ -f "$b/onceiot-finished" && "$b" != *.partial ]] || continue
        (($(<"$b/onceiot-finished") < epoch)) && base="$b"
    done
    [[ -n "$base" ]] || die "no base backup finished before $target (make one with tools/stack basebackup)"
    [[ -d "$WAL_ARCHIVE_DIR" ]] || die "no WAL archive in $WAL_ARCHIVE_DIR"
    if pg_running "$PG_DIR"; then
        backup__archive_now
        pg_stop "$PG_DIR" fast
    fi
    local old
    old="$PG_DIR/data.before-pitr-$(backup__utc_stamp)"
    say "recovering to $target from $base (the current data goes to $old)"
    mv "$PG_DIR/data" "$old"
    cp -a "$base" "$PG_DIR/data"
    rm -f "$PG_DIR/data/onceiot-finished"
    chmod 0700 "$PG_DIR/data"
    # Unarchived WAL of the old cluster is not needed: archive_now has
    # archived everything it wrote up to its stop.
    rm -rf "$PG_DIR/data/pg_wal/"*
    mkdir -p "$PG_DIR/data/pg_wal/archive_status"
    chown -R "$(pg_owner):" "$PG_DIR/data"
    cat <<EOF | pg_as_owner tee "$PG_DIR/data/onceiot-pitr.conf" >/dev/null
restore_command = 'cp $WAL_ARCHIVE_DIR/%f %p'
recovery_target_time = '$target'
recovery_target_action = 'promote'
EOF
    echo "include_if_exists = 'onceiot-pitr.conf'  # tools/stack pitr" |
        pg_as_owner tee -a "$PG_DIR/data/postgresql.conf" >/dev/null
    pg_as_owner touch "$PG_DIR/data/recovery.signal"
    if ! pg_start "$PG_DIR" "$LOG_DIR/postgres.log"; then
        die "recovery failed (the data before it is in $old)"
    fi
    local _
    for _ in $(seq 1 600); do
        [[ "$(pg_psql "$PG_DIR" postgres -At -c "SELECT pg_is_in_recovery()")" == f ]] && break
        sleep 0.1
    done
    [[ "$(pg_psql "$PG_DIR" postgres -At -c "SELECT pg_is_in_recovery()")" == f ]] ||
        die "PostgreSQL is still recovering after 60 s (see $LOG_DIR/postgres.log)"
    pg_as_owner rm -f "$PG_DIR/data/onceiot-pitr.conf"
    grep -E 'recovery stopping|last completed transaction' "$LOG_DIR/postgres.log" | tail -n 2 || true
    say "recovered to $target; start the stack with tools/stack up"
}
