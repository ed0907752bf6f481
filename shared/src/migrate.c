/* Schema migrations (see onceiot/migrate.h).
 *
 * Everything about the directory is checked before the database is touched,
 * and everything about what was applied before is checked before anything new
 * runs, so a refused run changes nothing. */
#include "onceiot/migrate.h"
#include "onceiot/db.h"
#include "onceiot/log.h"
#include "onceiot/mem.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <libpq-fe.h>
#include <limits.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct migrate_file {
    long version;                                    /* the numeric prefix */
    char *name;                                      /* file name, e.g. "0002_users.sql" */
    char *sql;                                       /* file contents, NUL-terminated */
    char checksum[crypto_generichash_BYTES * 2 + 1]; /* hex BLAKE2b-256 of the contents */
    bool applied;                                    /* recorded in schema_migrations */
} migrate_file_t;

typedef struct migrate_files {
    migrate_file_t *v;
    int n;
    int cap;
} migrate_files_t;

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* The primary message of a failed result, with its detail, and libpq's own
 * message when the server sent none. Returns the ERR_* code of the failure. */
static int pg_failure(PGconn *pg, const PGresult *res, char *msg, size_t len)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
    size_t n;

    if (primary == NULL)
        primary = PQerrorMessage(pg);
    if (detail != NULL)
        snprintf(msg, len, "%s (%s)", primary, detail);
    else
        snprintf(msg, len, "%s", primary);
    n = strlen(msg);
    while (n > 0 && msg[n - 1] == '\n')
        msg[--n] = '\0';
    if (PQstatus(pg) == CONNECTION_BAD)
        return ERR_UNAVAILABLE;
    return state != NULL ? db_map_sqlstate(state) : ERR_INTERNAL;
}

/* Runs one internal statement with text parameters and checks it. On
 * success hands the result to *out (or clears it); on failure writes
 * "<what>: <message>" to err. */
static int run(PGconn *pg, const char *sql, int nparams, const char *const *params, PGresult **out,
               const char *what, char *err, size_t errlen)
{
    PGresult *res = PQexecParams(pg, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    char msg[512];
    int rc = 0;

    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        rc = pg_failure(pg, res, msg, sizeof msg);
        set_err(err, errlen, "%s: %s", what, msg);
        goto out;
    }
    if (out != NULL) {
        *out = res;
        res = NULL;
    }
out:
    PQclear(res);
    return rc;
}

static void notice(void *arg, const PGresult *res)
{
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

    log_msg(LOG_DEBUG, "migration_notice", "%s", msg != NULL ? msg : "");
}

/* Parses "NNNN_name.sql": digits, an underscore, a non-empty name and the
 * .sql suffix. Anything else in the directory is not a migration. */
static bool parse_name(const char *name, long *version)
{
    size_t len = strlen(name);
    size_t digits = 0;

    while (isdigit((unsigned char)name[digits]))
        digits++;
    if (digits == 0 || digits > 9 || name[digits] != '_')
        return false;
    if (len < digits + 1 + 1 + 4 || strcmp(name + len - 4, ".sql") != 0)
        return false;
    *version = strtol(name, NULL, 10);
    return true;
}

static int read_file(const char *path, char **out, size_t *outlen, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0;
    size_t cap = 0;
    size_t n;
    int rc = 0;

    if (f == NULL) {
        set_err(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return ERR_IO;
    }
    do {
        if (cap - len < 4096) {
            cap = cap != 0 ? cap * 2 : 8192;
            buf = mem_realloc(buf, cap + 1);
        }
        n = fread(buf + len, 1, cap - len, f);
        len += n;
    } while (n > 0);
    if (ferror(f)) {
        set_err(err, errlen, "cannot read %s: %s", path, strerror(errno));
        rc = ERR_IO;
        goto out;
    }
    buf[len] = '\0';
    *out = buf;
    *outlen = len;
    buf = NULL;
out:
    mem_free(buf);
    fclose(f);
    return rc;
}

static int by_version(const void *a, const void *b)
{
    long va = ((const migrate_file_t *)a)->version;
    long vb = ((const migrate_file_t *)b)->version;

    return (va > vb) - (va < vb);
}

static void free_files(migrate_files_t *fs)
{
    for (int i = 0; i < fs->n; i++) {
        mem_free(fs->v[i].name);
        mem_free(fs->v[i].sql);
    }
    mem_free(fs->v);
}

/* Reads every migration of dir, sorted by version, with its checksum. */
static int load_dir(const char *dir, migrate_files_t *fs, char *err, size_t errlen)
{
    unsigned char hash[crypto_generichash_BYTES];
    DIR *d = opendir(dir);
    struct dirent *e;
    char *path = NULL;
    int rc = 0;

    if (d == NULL) {
        set_err(err, errlen, "cannot open migrations directory %s: %s", dir, strerror(errno));
        return ERR_IO;
    }
    while ((e = readdir(d)) != NULL) {
        migrate_file_t *f;
        struct stat st;
        size_t len;
        long version;

        if (!parse_name(e->d_name, &version))
            continue;
        mem_free(path);
        path = mem_printf("%s/%s", dir, e->d_name);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        if (fs->n == fs->cap) {
            fs->cap = fs->cap != 0 ? fs->cap * 2 : 16;
            fs->v = mem_realloc(fs->v, sizeof *fs->v * (size_t)fs->cap);
        }
        f = &fs->v[fs->n];
        memset(f, 0, sizeof *f);
        rc = read_file(path, &f->sql, &len, err, errlen);
        if (rc < 0)
            goto out;
        f->version = version;
        f->name = mem_strdup(e->d_name);
        fs->n++;
        /* PQexec takes a C string: a NUL would silently cut the file short. */
        if (strlen(f->sql) != len) {
            set_err(err, errlen, "migration %s contains a NUL byte", f->name);
            rc = ERR_CONFIG;
            goto out;
        }
        crypto_generichash(hash, sizeof hash, (const unsigned char *)f->sql, len, NULL, 0);
        sodium_bin2hex(f->checksum, sizeof f->checksum, hash, sizeof hash);
    }
    if (fs->n > 1)
        qsort(fs->v, (size_t)fs->n, sizeof *fs->v, by_version);
    for (int i = 1; i < fs->n; i++) {
        if (fs->v[i].version == fs->v[i - 1].version) {
            set_err(err, errlen, "migrations %s and %s have the same version %ld; renumber one",
                    fs->v[i - 1].name, fs->v[i].name, fs->v[i].version);
            rc = ERR_CONFIG;
            goto out;
        }
    }
out:
    mem_free(path);
    closedir(d);
    return rc;
}

/* The runtime's migrations as files with versions -1, -2, ... (in order). */
static void load_runtime(const migrate_embedded_t *rt, size_t n, migrate_files_t *fs)
{
    unsigned char hash[crypto_generichash_BYTES];

    fs->v = n > 0 ? mem_calloc(n, sizeof *fs->v) : NULL;
    fs->n = fs->cap = (int)n;
    for (size_t i = 0; i < n; i++) {
        migrate_file_t *f = &fs->v[i];

        f->version = -(long)i - 1;
        f->name = mem_strdup(rt[i].name);
        f->sql = mem_strdup(rt[i].sql);
        crypto_generichash(hash, sizeof hash, (const unsigned char *)f->sql, strlen(f->sql), NULL,
                           0);
        sodium_bin2hex(f->checksum, sizeof f->checksum, hash, sizeof hash);
    }
}

/* Marks the runtime migrations already applied; one whose SQL changed since
 * is refused like a changed file. */
static int verify_runtime(PGconn *pg, const char *ident, migrate_files_t *fs, char *err,
                          size_t errlen)
{
    PGresult *res = NULL;
    char *sql = mem_printf("CREATE TABLE IF NOT EXISTS %s.runtime_migrations ("
                           "name text PRIMARY KEY, checksum text NOT NULL,"
                           " applied_at timestamptz NOT NULL DEFAULT now())",
                           ident);
    int rc = run(pg, sql, 0, NULL, NULL, "creating runtime_migrations", err, errlen);

    mem_free(sql);
    sql = mem_printf("SELECT name, checksum FROM %s.runtime_migrations", ident);
    if (rc == 0)
        rc = run(pg, sql, 0, NULL, &res, "reading applied runtime migrations", err, errlen);
    for (int row = 0; rc == 0 && row < PQntuples(res); row++) {
        for (int i = 0; i < fs->n; i++) {
            if (strcmp(fs->v[i].name, db_get(res, row, "name")) != 0)
                continue;
            if (strcmp(fs->v[i].checksum, db_get(res, row, "checksum")) != 0) {
                set_err(err, errlen,
                        "runtime migration %s was changed after it was applied; the runtime "
                        "must add a new one instead",
                        fs->v[i].name);
                rc = ERR_FAILED_PRECONDITION;
                break;
            }
            fs->v[i].applied = true;
        }
    }
    PQclear(res);
    mem_free(sql);
    return rc;
}

/* Creates the schema unless it exists. Checking first lets a service whose
 * role owns its schema but may not create schemas in the database run. */
static int ensure_schema(PGconn *pg, const char *schema, const char *ident, char *err,
                         size_t errlen)
{
    const char *params[1] = {schema};
    PGresult *res = NULL;
    char *sql = NULL;
    int rc;

    rc = run(pg, "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1", 1, params, &res,
             "looking up the schema", err, errlen);
    if (rc < 0 || PQntuples(res) > 0)
        goto out;
    sql = mem_printf("CREATE SCHEMA IF NOT EXISTS %s", ident);
    rc = run(pg, sql, 0, NULL, NULL, "creating the schema", err, errlen);
out:
    mem_free(sql);
    PQclear(res);
    return rc;
}

/* Compares what was applied with the files: every recorded version needs its
 * file, unchanged, and no pending file may sort before an applied one (it
 * would run after migrations that were written assuming it did not exist). */
static int verify(PGconn *pg, const char *ident, migrate_files_t *fs, char *err, size_t errlen)
{
    const migrate_file_t *latest = NULL;
    PGresult *res = NULL;
    char *sql = mem_printf("SELECT version, name, checksum FROM %s.schema_migrations"
                           " ORDER BY version",
                           ident);
    int rc;

    rc = run(pg, sql, 0, NULL, &res, "reading applied migrations", err, errlen);
    if (rc < 0)
        goto out;
    for (int row = 0; row < PQntuples(res); row++) {
        migrate_file_t key = {.version = (long)db_get_int(res, row, "version", 0)};
        migrate_file_t *f =
            fs->n > 0 ? bsearch(&key, fs->v, (size_t)fs->n, sizeof *fs->v, by_version) : NULL;
        const char *recorded = db_get(res, row, "checksum");

        if (f == NULL) {
            set_err(err, errlen,
                    "migration %s (version %ld) was applied but its file is missing; restore it",
                    db_get(res, row, "name"), key.version);
            rc = ERR_FAILED_PRECONDITION;
            goto out;
        }
        if (strcmp(recorded, f->checksum) != 0) {
            set_err(err, errlen,
                    "migration %s was changed after it was applied (recorded checksum %.12s…, "
                    "file now %.12s…); add a new migration instead",
                    f->name, recorded, f->checksum);
            rc = ERR_FAILED_PRECONDITION;
            goto out;
        }
        f->applied = true;
        latest = f;
    }
    for (int i = 0; latest != NULL && i < fs->n && fs->v[i].version < latest->version; i++) {
        if (!fs->v[i].applied) {
            set_err(err, errlen,
                    "migration %s is older than %s, which is already applied; give it a number "
                    "above %ld",
                    fs->v[i].name, latest->name, latest->version);
            rc = ERR_FAILED_PRECONDITION;
            goto out;
        }
    }
out:
    PQclear(res);
    mem_free(sql);
    return rc;
}

/* The 1-based line of a 1-based character position in sql (PostgreSQL counts
 * characters, not bytes). */
static int line_of(const char *sql, long pos)
{
    int line = 1;

    for (const char *p = sql; *p != '\0' && pos > 1; p++) {
        if (((unsigned char)*p & 0xC0) != 0x80)
            pos--;
        if (*p == '\n')
            line++;
    }
    return line;
}

/* Applies one migration and records it, in one transaction: a file in
 * schema_migrations, a runtime migration (version < 0) in
 * runtime_migrations. */
static int apply(PGconn *pg, const char *ident, const migrate_file_t *f, char *err, size_t errlen)
{
    char version[24];
    char *path = mem_printf("%s, public", ident);
    bool runtime = f->version < 0;
    char *insert = runtime ? mem_printf("INSERT INTO %s.runtime_migrations (name, checksum)"
                                        " VALUES ($1, $2)",
                                        ident)
                           : mem_printf("INSERT INTO %s.schema_migrations (version, name, checksum)"
                                        " VALUES ($1, $2, $3)",
                                        ident);
    const char *path_params[1] = {path};
    const char *row[3] = {version, f->name, f->checksum};
    PGresult *res = NULL;
    PGTransactionStatusType ts;
    ExecStatusType st;
    char what[300];
    char msg[512];
    int rc;

    snprintf(version, sizeof version, "%ld", f->version);
    snprintf(what, sizeof what, "migration %s failed", f->name);
    rc = run(pg, "BEGIN", 0, NULL, NULL, what, err, errlen);
    if (rc < 0)
        goto out;
    rc = run(pg, "SELECT pg_catalog.set_config('search_path', $1, true)", 1, path_params, NULL,
             what, err, errlen);
    if (rc < 0)
        goto out;
    res = PQexec(pg, f->sql);
    st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY) {
        const char *pos = PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION);

        rc = pg_failure(pg, res, msg, sizeof msg);
        if (st != PGRES_FATAL_ERROR)
            snprintf(msg, sizeof msg, "unsupported result %s (COPY FROM STDIN?)", PQresStatus(st));
        if (pos != NULL)
            set_err(err, errlen, "%s: %s (line %d)", what, msg, line_of(f->sql, atol(pos)));
        else
            set_err(err, errlen, "%s: %s", what, msg);
        goto out;
    }
    ts = PQtransactionStatus(pg);
    if (ts != PQTRANS_INTRANS) {
        set_err(err, errlen, "%s: it must not end the transaction itself (COMMIT or ROLLBACK)",
                what);
        rc = ERR_FAILED_PRECONDITION;
        goto out;
    }
    rc = runtime ? run(pg, insert, 2, row + 1, NULL, what, err, errlen)
                 : run(pg, insert, 3, row, NULL, what, err, errlen);
    if (rc < 0)
        goto out;
    PQclear(res);
    res = NULL;
    rc = run(pg, "COMMIT", 0, NULL, &res, what, err, errlen);
    if (rc == 0 && strcmp(PQcmdStatus(res), "COMMIT") != 0) {
        set_err(err, errlen, "%s: the transaction was rolled back", what);
        rc = ERR_ABORTED;
    }
out:
    PQclear(res);
    if (rc < 0) {
        ts = PQtransactionStatus(pg);
        if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR)
            PQclear(PQexec(pg, "ROLLBACK"));
    }
    mem_free(insert);
    mem_free(path);
    return rc;
}

int migrate_run(const char *db_url, const char *schema, const char *dir, migrate_result_t *result,
                char *err, size_t errlen)
{
    return migrate_run_with(db_url, schema, NULL, 0, dir, result, err, errlen);
}

int migrate_run_with(const char *db_url, const char *schema, const migrate_embedded_t *runtime,
                     size_t n_runtime, const char *dir, migrate_result_t *result, char *err,
                     size_t errlen)
{
    static const char lock_sql[] =
        "SELECT pg_catalog.pg_advisory_lock(hashtextextended('onceiot.migrate.' || $1, 0))";
    static const char unlock_sql[] =
        "SELECT pg_catalog.pg_advisory_unlock(hashtextextended('onceiot.migrate.' || $1, 0))";
    const char *schema_param[1] = {schema};
    migrate_files_t files = {0};
    migrate_files_t rt = {0};
    PQconninfoOption *info = NULL;
    PGconn *pg = NULL;
    char *ident = NULL;
    char *table_sql = NULL;
    char *perr = NULL;
    bool locked = false;
    int rc;

    result->applied = 0;
    result->total = 0;
    set_err(err, errlen, "%s", "");
    if (db_url == NULL || schema == NULL || schema[0] == '\0' || dir == NULL) {
        set_err(err, errlen, "migrations need a database URL, a schema and a directory");
        return ERR_CONFIG;
    }
    if (sodium_init() < 0) {
        set_err(err, errlen, "libsodium failed to initialize");
        return ERR_INTERNAL;
    }
    rc = load_dir(dir, &files, err, errlen);
    if (rc < 0)
        goto out;
    load_runtime(runtime, n_runtime, &rt);
    result->total = files.n + rt.n;

    info = PQconninfoParse(db_url, &perr);
    if (info == NULL) {
        set_err(err, errlen, "invalid database URL: %s", perr != NULL ? perr : "out of memory");
        rc = ERR_CONFIG;
        goto out;
    }
    pg = PQconnectdb(db_url);
    if (PQstatus(pg) != CONNECTION_OK) {
        char msg[512];

        pg_failure(pg, NULL, msg, sizeof msg);
        set_err(err, errlen, "cannot connect to the database: %s", msg);
        rc = ERR_UNAVAILABLE;
        goto out;
    }
    PQsetNoticeReceiver(pg, notice, NULL);
    ident = PQescapeIdentifier(pg, schema, strlen(schema));
    if (ident == NULL) {
        set_err(err, errlen, "bad schema name: %s", PQerrorMessage(pg));
        rc = ERR_CONFIG;
        goto out;
    }

    /* The lock comes first: concurrent CREATE SCHEMA/TABLE IF NOT EXISTS can
     * still collide on the catalog's unique indexes. */
    rc = run(pg, lock_sql, 1, schema_param, NULL, "taking the migration lock", err, errlen);
    if (rc < 0)
        goto out;
    locked = true;
    /* Migrations are the service's own work on every organization's rows
     * (a backfill must see them through the row-level security policies). */
    rc = run(pg, "SELECT pg_catalog.set_config('" DB_SETTING_SUPERUSER "', 'true', false)", 0, NULL,
             NULL, "setting the migration's scope", err, errlen);
    if (rc < 0)
        goto out;
    rc = ensure_schema(pg, schema, ident, err, errlen);
    if (rc < 0)
        goto out;
    table_sql = mem_printf("CREATE TABLE IF NOT EXISTS %s.schema_migrations ("
                           "version integer PRIMARY KEY, name text NOT NULL,"
                           " checksum text NOT NULL,"
                           " applied_at timestamptz NOT NULL DEFAULT now())",
                           ident);
    rc = run(pg, table_sql, 0, NULL, NULL, "creating schema_migrations", err, errlen);
    if (rc < 0)
        goto out;
    rc = verify(pg, ident, &files, err, errlen);
    if (rc < 0)
        goto out;
    rc = verify_runtime(pg, ident, &rt, err, errlen);
    if (rc < 0)
        goto out;
    for (int i = 0; i < rt.n + files.n; i++) {
        migrate_file_t *f = i < rt.n ? &rt.v[i] : &files.v[i - rt.n];
        log_rec_t r;

        if (f->applied)
            continue;
        rc = apply(pg, ident, f, err, errlen);
        if (rc < 0)
            goto out;
        result->applied++;
        log_begin(&r, LOG_INFO, "migration_applied");
        log_str(&r, "schema", schema);
        log_str(&r, "file", f->name);
        log_int(&r, "version", f->version);
        log_end(&r);
    }
out:
    /* Closing the session would release the lock too; unlocking explicitly
     * lets a waiting replica go on before our connection teardown. */
    if (locked && PQtransactionStatus(pg) == PQTRANS_IDLE)
        PQclear(PQexecParams(pg, unlock_sql, 1, NULL, schema_param, NULL, NULL, 0));
    mem_free(table_sql);
    PQfreemem(ident);
    PQfreemem(perr);
    PQconninfoFree(info);
    PQfinish(pg);
    free_files(&files);
    free_files(&rt);
    return rc;
}
