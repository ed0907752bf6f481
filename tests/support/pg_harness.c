/* PostgreSQL test-cluster harness (see pg_harness.h). */
#include "pg_harness.h"
#include "onceiot/mem.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static PGconn *pgh_conn; /* the superuser connection of this test process */

static void pgh__close(void)
{
    PQfinish(pgh_conn);
    pgh_conn = NULL;
}

const char *pgh_url(void)
{
    const char *url = getenv("ONCEIOT_TEST_PG_URL");

    if (url == NULL || url[0] == '\0')
        cr_assert_fail("ONCEIOT_TEST_PG_URL is not set; run tests via ./tools/stack test");
    return url;
}

static const char *pgh__env(const char *name)
{
    const char *v = getenv(name);

    if (v == NULL || v[0] == '\0')
        cr_assert_fail("%s is not set; run tests via ./tools/stack test", name);
    return v;
}

/* Keeps "drop cascades to ..." notices out of the test output. */
static void pgh__quiet(void *arg, const char *message) {}

/* The superuser connection, reconnected if the cluster was restarted. */
static PGconn *pgh__conn(void)
{
    static bool registered;

    if (pgh_conn == NULL) {
        pgh_conn = PQconnectdb(pgh_url());
        if (!registered)
            atexit(pgh__close);
        registered = true;
        PQsetNoticeProcessor(pgh_conn, pgh__quiet, NULL);
    } else if (PQstatus(pgh_conn) != CONNECTION_OK) {
        PQreset(pgh_conn);
    }
    cr_assert(PQstatus(pgh_conn) == CONNECTION_OK, "cannot connect to the test cluster: %s",
              PQerrorMessage(pgh_conn));
    return pgh_conn;
}

static PGresult *pgh__check(PGresult *res, const char *sql)
{
    ExecStatusType st = PQresultStatus(res);

    cr_assert(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "SQL failed: %s\n%s",
              PQresultErrorMessage(res), sql);
    return res;
}

/* A connection that died with the cluster is only noticed on use: retry a
 * failed statement once on a fresh connection when that was the cause. */
PGresult *pgh_sql(const char *sql)
{
    PGresult *res = PQexec(pgh__conn(), sql);

    if (PQstatus(pgh_conn) == CONNECTION_BAD) {
        PQclear(res);
        res = PQexec(pgh__conn(), sql);
    }
    return pgh__check(res, sql);
}

PGresult *pgh_sqlf(const char *sql, int nparams, const char *const *params)
{
    PGresult *res = PQexecParams(pgh__conn(), sql, nparams, NULL, params, NULL, NULL, 0);

    if (PQstatus(pgh_conn) == CONNECTION_BAD) {
        PQclear(res);
        res = PQexecParams(pgh__conn(), sql, nparams, NULL, params, NULL, NULL, 0);
    }
    return pgh__check(res, sql);
}

long pgh_count(const char *sql, int nparams, const char *const *params)
{
    PGresult *res = pgh_sqlf(sql, nparams, params);
    long n = atol(PQgetvalue(res, 0, 0));
    PQclear(res);
    return n;
}

char *pgh_unique_name(const char *prefix)
{
    unsigned char rnd[5];
    char hex[sizeof rnd * 2 + 1];

    cr_assert(sodium_init() >= 0);
    randombytes_buf(rnd, sizeof rnd);
    sodium_bin2hex(hex, sizeof hex, rnd, sizeof rnd);
    return mem_printf("%s_%s", prefix, hex);
}

/* Runs a statement built around one quoted identifier. */
static void pgh__ident_sql(const char *fmt, const char *ident_raw)
{
    char *ident = PQescapeIdentifier(pgh__conn(), ident_raw, strlen(ident_raw));
    char *sql;

    cr_assert(ident != NULL, "%s", PQerrorMessage(pgh_conn));
    sql = mem_printf(fmt, ident, ident);
    PQclear(pgh_sql(sql));
    mem_free(sql);
    PQfreemem(ident);
}

char *pgh_fresh_schema(const char *prefix)
{
    char *name = pgh_unique_name(prefix);

    pgh__ident_sql("CREATE SCHEMA %s", name);
    return name;
}

char *pgh_service_schema(const char *role, const char *prefix)
{
    char *name = pgh_unique_name(prefix);
    char *sql = mem_printf(
        "SET client_min_messages = warning;"
        "CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public;"
        "CREATE SCHEMA IF NOT EXISTS partman;"
        "CREATE EXTENSION IF NOT EXISTS pg_partman SCHEMA partman;"
        "GRANT ALL ON SCHEMA partman TO %1$s; GRANT ALL ON ALL TABLES IN SCHEMA partman TO %1$s;"
        "GRANT ALL ON ALL SEQUENCES IN SCHEMA partman TO %1$s;"
        "GRANT EXECUTE ON ALL ROUTINES IN SCHEMA partman TO %1$s;"
        "CREATE SCHEMA %2$s AUTHORIZATION %1$s",
        role, name);

    PQclear(pgh_sql(sql));
    mem_free(sql);
    return name;
}

void pgh_drop_service_schema(char *schema, char *role)
{
    char *sql =
        mem_printf("DELETE FROM partman.part_config WHERE parent_table LIKE '%s.%%'", schema);

    PQclear(pgh_sql(sql));
    mem_free(sql);
    pgh_drop_schema(schema);
    pgh_drop_role(role);
    mem_free(schema);
    mem_free(role);
}

char *pgh_fresh_role(const char *prefix)
{
    char *name = pgh_unique_name(prefix);
    char *ident = PQescapeIdentifier(pgh__conn(), name, strlen(name));
    char *password = PQescapeLiteral(pgh_conn, name, strlen(name));
    char *sql = mem_printf("CREATE ROLE %s LOGIN PASSWORD %s", ident, password);

    PQclear(pgh_sql(sql));
    mem_free(sql);
    PQfreemem(password);
    PQfreemem(ident);
    return name;
}

/* Appends key='value' with the quoting of libpq's key=value syntax. */
static char *pgh__append_kv(char *s, const char *key, const char *value)
{
    size_t len = strlen(s);
    char *out = mem_realloc(s, len + strlen(key) + 2 * strlen(value) + 5);
    char *p = out + len;

    p += sprintf(p, "%s%s='", len > 0 ? " " : "", key);
    for (const char *v = value; *v != '\0'; v++) {
        if (*v == '\'' || *v == '\\')
            *p++ = '\\';
        *p++ = *v;
    }
    *p++ = '\'';
    *p = '\0';
    return out;
}

char *pgh_url_as(const char *role)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(pgh_url(), &perr);
    char *s = mem_strdup("");

    cr_assert(opts != NULL, "ONCEIOT_TEST_PG_URL: %s", perr != NULL ? perr : "out of memory");
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (strcmp(o->keyword, "user") == 0 || strcmp(o->keyword, "password") == 0)
            continue;
        if (o->val != NULL)
            s = pgh__append_kv(s, o->keyword, o->val);
    }
    s = pgh__append_kv(s, "user", role);
    s = pgh__append_kv(s, "password", role);
    PQconninfoFree(opts);
    return s;
}

void pgh_drop_schema(const char *schema)
{
    pgh__ident_sql("DROP SCHEMA IF EXISTS %s CASCADE", schema);
}

void pgh_drop_role(const char *role)
{
    const char *params[1] = {role};
    PGresult *res = pgh_sqlf("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", 1, params);
    bool exists = PQntuples(res) > 0;

    PQclear(res);
    if (exists)
        pgh__ident_sql("DROP OWNED BY %s CASCADE; DROP ROLE %s", role);
}

/* Runs pg_ctl with args (NULL-terminated) as the postgres user when we are
 * root, since PostgreSQL refuses to run as root. Returns its exit status. */
static int pgh__pg_ctl(const char *const *args)
{
    const char *argv[16];
    char *pg_ctl = mem_printf("%s/pg_ctl", pgh__env("ONCEIOT_TEST_PGBIN"));
    int n = 0;
    int status = 0;
    pid_t pid;

    if (geteuid() == 0) {
        argv[n++] = "runuser";
        argv[n++] = "-u";
        argv[n++] = "postgres";
        argv[n++] = "--";
    }
    argv[n++] = pg_ctl;
    for (int i = 0; args[i] != NULL && n < 15; i++)
        argv[n++] = args[i];
    argv[n] = NULL;

    pid = fork();
    cr_assert(pid >= 0, "fork failed");
    if (pid == 0) {
        /* The postgres user may not be allowed into our working directory,
         * and pg_ctl's progress dots would clutter the test output. */
        int devnull = open("/dev/null", O_WRONLY);

        if (chdir("/") != 0 || devnull < 0 || dup2(devnull, STDOUT_FILENO) < 0)
            _exit(127);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    while (waitpid(pid, &status, 0) < 0)
        ;
    mem_free(pg_ctl);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void pgh_stop(void)
{
    const char *const args[] = {"-D", pgh__env("ONCEIOT_TEST_PGDATA"), "-w", "-m", "fast", "stop",
                                NULL};

    pgh__close();
    cr_assert_eq(pgh__pg_ctl(args), 0, "pg_ctl stop failed");
}

void pgh_start(void)
{
    const char *data = pgh__env("ONCEIOT_TEST_PGDATA");
    const char *const status[] = {"-D", data, "status", NULL};
    const char *log = getenv("ONCEIOT_TEST_PGLOG");
    char *logfile =
        log != NULL && log[0] != '\0' ? mem_strdup(log) : mem_printf("%s/onceiot-test.log", data);
    const char *const args[] = {"-D", data, "-w", "-l", logfile, "start", NULL};

    /* pg_ctl status exits with 3 when the server is not running. */
    if (pgh__pg_ctl(status) != 0)
        cr_assert_eq(pgh__pg_ctl(args), 0, "pg_ctl start failed (log: %s)", logfile);
    mem_free(logfile);
}

char *pgh_explain_execute(PGconn *conn, const char *name, const char *const *values, int n)
{
    char *call = mem_printf("EXPLAIN EXECUTE %s(", name);
    for (int i = 0; i < n; i++) {
        char *lit = values[i] ? PQescapeLiteral(conn, values[i], strlen(values[i])) : NULL;
        char *next = mem_printf("%s%s%s", call, lit ? lit : "NULL", i < n - 1 ? ", " : ")");
        PQfreemem(lit);
        mem_free(call);
        call = next;
    }
    PGresult *r = PQexec(conn, call);
    mem_free(call);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQerrorMessage(conn));
    char *plan = mem_strdup("");
    for (int i = 0; i < PQntuples(r); i++) {
        char *next = mem_printf("%s%s\n", plan, PQgetvalue(r, i, 0));
        mem_free(plan);
        plan = next;
    }
    PQclear(r);
    return plan;
}
