/* PostgreSQL connection pool (see onceiot/db.h).
 *
 * The pool owns a fixed array of connections guarded by one mutex; a
 * connection taken by db_pool_acquire belongs to that thread alone until it is
 * released, so everything on db_conn_t except in_use is touched without the
 * lock. A connection found dead is closed at once and marked broken; the next
 * acquire that picks it reconnects, with a per-connection backoff so a server
 * that is down costs callers one refused connect, not a wait. */
#include "onceiot/db.h"
#include "onceiot/log.h"
#include "onceiot/mem.h"
#include "onceiot/metrics.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

enum {
    DB__BACKOFF_MIN_MS = 50,
    DB__BACKOFF_MAX_MS = 2000,
    DB__CONNECT_TIMEOUT_DEFAULT_MS = 5000,
};

struct db_conn {
    db_pool_t *pool;
    PGconn *pg;                 /* NULL while broken */
    bool in_use;                /* guarded by pool->mu */
    int64_t retry_at_ms;        /* monotonic time before which no reconnect is tried */
    int backoff_ms;             /* delay after the last failed reconnect; 0 once connected */
    const db_stmt_t **prepared; /* statements prepared on pg */
    int nprepared;              /* entries used in prepared */
    int cap_prepared;           /* entries allocated in prepared */
    int64_t timeout_ms;         /* this checkout's tighter statement_timeout; 0: the default */
    int64_t scope_org;          /* db_set_scope's organization; 0: none */
    bool settings_any;          /* db_set_scope or a tighter db_set_timeout was called */
    bool scope_superuser;       /* db_set_scope's superuser flag */
    bool settings_live;         /* the settings are in effect in the open transaction */
    const char *call_info;      /* db_set_call's JSON (the caller's), or NULL */
    char errmsg[1024];          /* last error message */
    char sqlstate[6];           /* last SQLSTATE */
    char constraint[128];       /* constraint named by the last error */
};

struct db_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;          /* signalled when a connection is given back */
    char *url;                  /* as given, a URI or key=value string */
    char *schema;               /* unquoted schema name */
    int size;                   /* entries in conns */
    int64_t default_timeout_ms; /* statement_timeout every connection starts with */
    int connect_timeout_ms;     /* bound on one connection attempt */
    db_conn_t *conns;
    int in_use;                        /* connections handed out, guarded by mu */
    int waiting;                       /* callers waiting for one, guarded by mu */
    metrics_series_t *acquire_seconds; /* NULL while metrics are off */
};

static int64_t db__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Copies a libpq message without its trailing newline. */
static void db__copy_msg(char *dst, size_t len, const char *msg)
{
    size_t n;

    snprintf(dst, len, "%s", msg != NULL ? msg : "");
    n = strlen(dst);
    while (n > 0 && (dst[n - 1] == '\n' || dst[n - 1] == ' '))
        dst[--n] = '\0';
}

/* Sends server notices and warnings to the log instead of libpq's default of
 * printing them raw on stderr, which would break the one-JSON-object-per-line
 * log. */
static void db__notice(void *arg, const PGresult *res)
{
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    bool warning = severity != NULL && strcmp(severity, "WARNING") == 0;

    log_msg(warning ? LOG_WARN : LOG_DEBUG, "db_notice", "%s: %s",
            severity != NULL ? severity : "NOTICE", msg != NULL ? msg : "");
}

/* Opens one connection and sets up its session: search_path and the default
 * statement_timeout, in one round trip. The connection is made with libpq's
 * non-blocking calls so the attempt ends at deadline_ms (monotonic) whatever
 * the connect_timeout in the URL says. On failure writes the reason to why and
 * returns ERR_UNAVAILABLE. */
static int db__connect(db_pool_t *pool, int64_t deadline_ms, PGconn **out, char *why, size_t whylen)
{
    /* Keywords after dbname override those expanded from the URL. */
    const char *const keys[] = {"dbname", "application_name", NULL};
    const char *const vals[] = {pool->url, pool->schema, NULL};
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    PGresult *res = NULL;
    char *ident = NULL;
    char *path = NULL;
    char timeout[24];
    const char *params[2];
    int rc = ERR_UNAVAILABLE;
    PGconn *pg = PQconnectStartParams(keys, vals, 1);

    if (pg == NULL) {
        fprintf(stderr, "onceiot: out of memory in PQconnectStartParams\n");
        abort();
    }
    if (PQstatus(pg) == CONNECTION_BAD) {
        db__copy_msg(why, whylen, PQerrorMessage(pg));
        goto out;
    }
    while (st != PGRES_POLLING_OK) {
        struct pollfd pfd = {.fd = PQsocket(pg)};
        int64_t left = deadline_ms - db__now_ms();
        int n;

        if (st == PGRES_POLLING_FAILED) {
            db__copy_msg(why, whylen, PQerrorMessage(pg));
            goto out;
        }
        if (left <= 0) {
            snprintf(why, whylen, "timed out while connecting");
            goto out;
        }
        pfd.events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT;
        n = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
        if (n < 0 && errno != EINTR) {
            snprintf(why, whylen, "poll: %s", strerror(errno));
            goto out;
        }
        if (n > 0)
            st = PQconnectPoll(pg);
    }
    PQsetNoticeReceiver(pg, db__notice, NULL);

    ident = PQescapeIdentifier(pg, pool->schema, strlen(pool->schema));
    if (ident == NULL) {
        db__copy_msg(why, whylen, PQerrorMessage(pg));
        goto out;
    }
    path = mem_printf("%s, public", ident);
    snprintf(timeout, sizeof timeout, "%lld", (long long)pool->default_timeout_ms);
    params[0] = path;
    params[1] = timeout;
    res = PQexecParams(pg,
                       "SELECT pg_catalog.set_config('search_path', $1, false),"
                       " pg_catalog.set_config('statement_timeout', $2, false)",
                       2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        db__copy_msg(why, whylen, PQerrorMessage(pg));
        goto out;
    }
    *out = pg;
    pg = NULL;
    rc = 0;
out:
    PQclear(res);
    PQfreemem(ident);
    mem_free(path);
    PQfinish(pg);
    return rc;
}

/* Closes a connection that can no longer be trusted. Nothing is prepared on
 * its successor; the first acquire that picks it reconnects right away. */
static void db__mark_broken(db_conn_t *c)
{
    PQfinish(c->pg);
    c->pg = NULL;
    c->nprepared = 0;
    c->settings_live = false;
    c->retry_at_ms = 0;
    log_msg(LOG_WARN, "db_connection_lost", "schema %s: %s", c->pool->schema, c->errmsg);
}

static int db__lost(db_conn_t *c)
{
    snprintf(c->errmsg, sizeof c->errmsg, "database connection lost");
    snprintf(c->sqlstate, sizeof c->sqlstate, "08006");
    c->constraint[0] = '\0';
    return ERR_UNAVAILABLE;
}

/* Records the error of a failed result (res may be NULL) and returns its
 * ERR_* code. A failure that left the connection dead closes it and returns
 * ERR_UNAVAILABLE. */
static int db__fail(db_conn_t *c, const PGresult *res)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
    const char *constraint = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);
    char msg[512];

    snprintf(c->sqlstate, sizeof c->sqlstate, "%s", state != NULL ? state : "");
    snprintf(c->constraint, sizeof c->constraint, "%s", constraint != NULL ? constraint : "");
    db__copy_msg(msg, sizeof msg, primary != NULL ? primary : PQerrorMessage(c->pg));
    if (detail != NULL)
        snprintf(c->errmsg, sizeof c->errmsg, "%s (%.500s)", msg, detail);
    else
        snprintf(c->errmsg, sizeof c->errmsg, "%s", msg);

    if (PQstatus(c->pg) == CONNECTION_BAD) {
        snprintf(c->errmsg, sizeof c->errmsg, "database connection lost (%s)", msg);
        db__mark_broken(c);
        return ERR_UNAVAILABLE;
    }
    return state != NULL ? db_map_sqlstate(state) : ERR_INTERNAL;
}

/* Turns a result into a row count or an ERR_* code. Consumes res, unless it
 * succeeded and out is not NULL: then the caller owns it. */
static int db__finish(db_conn_t *c, PGresult *res, PGresult **out)
{
    ExecStatusType st = PQresultStatus(res);
    int rc;

    switch (st) {
    case PGRES_TUPLES_OK:
        rc = PQntuples(res);
        break;
    case PGRES_COMMAND_OK:
        rc = atoi(PQcmdTuples(res));
        break;
    case PGRES_EMPTY_QUERY:
        rc = 0;
        break;
    case PGRES_FATAL_ERROR:
        rc = db__fail(c, res);
        break;
    default:
        /* COPY and pipeline states are never started by this API; a
         * connection left in one cannot run the next statement. */
        snprintf(c->errmsg, sizeof c->errmsg, "unexpected result status %s", PQresStatus(st));
        c->sqlstate[0] = '\0';
        c->constraint[0] = '\0';
        db__mark_broken(c);
        rc = ERR_INTERNAL;
        break;
    }
    if (c->pg != NULL && PQtransactionStatus(c->pg) == PQTRANS_IDLE)
        c->settings_live = false;
    if (rc >= 0 && out != NULL) {
        *out = res;
        res = NULL;
    }
    PQclear(res);
    return rc;
}

static bool db__is_prepared(const db_conn_t *c, const db_stmt_t *stmt)
{
    for (int i = 0; i < c->nprepared; i++) {
        /* Names, not pointers: the same statement may be defined in two files. */
        if (c->prepared[i] == stmt || strcmp(c->prepared[i]->name, stmt->name) == 0)
            return true;
    }
    return false;
}

static void db__remember_prepared(db_conn_t *c, const db_stmt_t *stmt)
{
    if (c->nprepared == c->cap_prepared) {
        c->cap_prepared = c->cap_prepared != 0 ? c->cap_prepared * 2 : 16;
        c->prepared = mem_realloc(c->prepared, sizeof *c->prepared * (size_t)c->cap_prepared);
    }
    c->prepared[c->nprepared++] = stmt;
}

/* True unless the idle connection's socket already tells that the server has
 * gone (PostgreSQL sends a termination message and closes the socket when it
 * shuts down or kills the backend). One poll(2) with no wait; it spares the
 * caller a failed statement after a restart. */
static bool db__looks_alive(PGconn *pg)
{
    struct pollfd pfd = {.fd = PQsocket(pg), .events = POLLIN | POLLRDHUP};
    PGnotify *n;

    if (pfd.fd < 0)
        return false;
    if (poll(&pfd, 1, 0) <= 0)
        return true;
    if (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR))
        return false;
    /* Readable but still open: a notification or a notice. */
    if (!PQconsumeInput(pg))
        return false;
    while ((n = PQnotifies(pg)) != NULL)
        PQfreemem(n);
    return PQstatus(pg) == CONNECTION_OK;
}

/* Makes sure a connection just taken from the pool is usable, reconnecting a
 * broken one by deadline_ms. On failure schedules the next attempt with
 * exponential backoff and returns ERR_UNAVAILABLE. */
static int db__ensure_connected(db_pool_t *pool, db_conn_t *c, int64_t deadline_ms)
{
    int64_t limit = db__now_ms() + pool->connect_timeout_ms;
    char why[512];
    PGconn *pg;

    if (c->pg != NULL && !db__looks_alive(c->pg)) {
        snprintf(c->errmsg, sizeof c->errmsg, "the server closed the idle connection");
        db__mark_broken(c);
    }
    if (c->pg != NULL)
        return 0;
    if (db__connect(pool, limit < deadline_ms ? limit : deadline_ms, &pg, why, sizeof why) < 0) {
        c->backoff_ms = c->backoff_ms == 0 ? DB__BACKOFF_MIN_MS : c->backoff_ms * 2;
        if (c->backoff_ms > DB__BACKOFF_MAX_MS)
            c->backoff_ms = DB__BACKOFF_MAX_MS;
        c->retry_at_ms = db__now_ms() + c->backoff_ms;
        log_msg(LOG_WARN, "db_reconnect", "schema %s: cannot connect: %s; next attempt in %d ms",
                pool->schema, why, c->backoff_ms);
        snprintf(c->errmsg, sizeof c->errmsg, "database unavailable: %s", why);
        return ERR_UNAVAILABLE;
    }
    c->pg = pg;
    c->backoff_ms = 0;
    log_msg(LOG_WARN, "db_reconnect", "schema %s: reconnected", pool->schema);
    return 0;
}

int db_pool_open(const db_opts_t *opts, db_pool_t **out)
{
    db_pool_t *pool = NULL;
    pthread_condattr_t ca;
    PQconninfoOption *info;
    char *perr = NULL;
    char why[512];
    int rc = 0;

    *out = NULL;
    if (opts == NULL || opts->url == NULL || opts->schema == NULL || opts->schema[0] == '\0' ||
        opts->size < 1) {
        log_msg(LOG_ERROR, "db_config", "database options need a URL, a schema and a size >= 1");
        return ERR_CONFIG;
    }
    info = PQconninfoParse(opts->url, &perr);
    if (info == NULL) {
        char msg[256];

        db__copy_msg(msg, sizeof msg, perr != NULL ? perr : "out of memory");
        log_msg(LOG_ERROR, "db_config", "invalid database URL: %s", msg);
        PQfreemem(perr);
        return ERR_CONFIG;
    }
    PQconninfoFree(info);

    pool = mem_calloc(1, sizeof *pool);
    pthread_mutex_init(&pool->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&pool->cv, &ca);
    pthread_condattr_destroy(&ca);
    pool->url = mem_strdup(opts->url);
    pool->schema = mem_strdup(opts->schema);
    pool->size = opts->size;
    static const double bounds[] = {0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5};
    pool->acquire_seconds =
        metrics_series(metrics_histogram("onceiot_db_pool_acquire_seconds",
                                         "Time callers waited for a free database connection.",
                                         NULL, bounds, sizeof(bounds) / sizeof(bounds[0])),
                       NULL);
    pool->default_timeout_ms = opts->statement_timeout_ms > 0 ? opts->statement_timeout_ms : 0;
    pool->connect_timeout_ms =
        opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : DB__CONNECT_TIMEOUT_DEFAULT_MS;
    pool->conns = mem_calloc((size_t)pool->size, sizeof *pool->conns);
    for (int i = 0; i < pool->size; i++) {
        db_conn_t *c = &pool->conns[i];

        c->pool = pool;
        /* After one failure the rest stay unconnected (due for a retry on
         * acquire) rather than making the caller wait size times. */
        if (rc != 0)
            continue;
        if (db__connect(pool, db__now_ms() + pool->connect_timeout_ms, &c->pg, why, sizeof why) <
            0) {
            log_msg(LOG_WARN, "db_connect", "schema %s: cannot connect: %s", pool->schema, why);
            rc = ERR_UNAVAILABLE;
            continue;
        }
    }
    *out = pool;
    return rc;
}

void db_pool_close(db_pool_t *pool)
{
    if (pool == NULL)
        return;
    for (int i = 0; i < pool->size; i++) {
        PQfinish(pool->conns[i].pg);
        mem_free(pool->conns[i].prepared);
    }
    pthread_cond_destroy(&pool->cv);
    pthread_mutex_destroy(&pool->mu);
    mem_free(pool->conns);
    mem_free(pool->url);
    mem_free(pool->schema);
    mem_free(pool);
}

static int64_t db__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void db_pool_stats(db_pool_t *pool, int *in_use, int *waiting, int *size)
{
    pthread_mutex_lock(&pool->mu);
    *in_use = pool->in_use;
    *waiting = pool->waiting;
    *size = pool->size;
    pthread_mutex_unlock(&pool->mu);
}

int db_pool_acquire(db_pool_t *pool, int64_t timeout_ms, db_conn_t **out)
{
    int64_t started_ns = pool->acquire_seconds ? db__now_ns() : 0;
    int64_t deadline = db__now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    struct timespec until = {.tv_sec = deadline / 1000, .tv_nsec = (deadline % 1000) * 1000000};
    db_conn_t *c = NULL;
    int rc = 0;

    *out = NULL;
    pthread_mutex_lock(&pool->mu);
    for (;;) {
        db_conn_t *due = NULL;
        bool any_free = false;
        int64_t now = db__now_ms();

        for (int i = 0; i < pool->size && c == NULL; i++) {
            db_conn_t *x = &pool->conns[i];

            if (x->in_use)
                continue;
            any_free = true;
            if (x->pg != NULL)
                c = x;
            else if (due == NULL && x->retry_at_ms <= now)
                due = x;
        }
        if (c == NULL)
            c = due;
        if (c != NULL)
            break;
        if (any_free) {
            /* Every free connection is broken and waiting out its backoff:
             * the server is down, and waiting would not change that. */
            rc = ERR_UNAVAILABLE;
            break;
        }
        pool->waiting++;
        int w = pthread_cond_timedwait(&pool->cv, &pool->mu, &until);
        pool->waiting--;
        if (w == ETIMEDOUT) {
            rc = ERR_RESOURCE_EXHAUSTED;
            break;
        }
    }
    if (c != NULL) {
        c->in_use = true;
        pool->in_use++;
    }
    pthread_mutex_unlock(&pool->mu);
    if (pool->acquire_seconds)
        metrics_observe(pool->acquire_seconds, (double)(db__now_ns() - started_ns) / 1e9);
    if (rc != 0)
        return rc;

    rc = db__ensure_connected(pool, c, deadline);
    if (rc < 0) {
        pthread_mutex_lock(&pool->mu);
        c->in_use = false;
        pool->in_use--;
        /* Waiters learn at once that the server is down. */
        pthread_cond_broadcast(&pool->cv);
        pthread_mutex_unlock(&pool->mu);
        return rc;
    }
    c->errmsg[0] = '\0';
    c->sqlstate[0] = '\0';
    c->constraint[0] = '\0';
    c->timeout_ms = 0;
    c->scope_org = 0;
    c->scope_superuser = false;
    c->settings_any = false;
    c->settings_live = false;
    c->call_info = NULL;
    *out = c;
    return 0;
}

void db_pool_release(db_pool_t *pool, db_conn_t *conn)
{
    if (conn == NULL)
        return;
    if (conn->pg != NULL) {
        switch (PQtransactionStatus(conn->pg)) {
        case PQTRANS_IDLE:
            break;
        case PQTRANS_INTRANS:
        case PQTRANS_INERROR:
            db_rollback(conn);
            break;
        default:
            snprintf(conn->errmsg, sizeof conn->errmsg, "connection released mid-statement");
            db__mark_broken(conn);
            break;
        }
    }
    /* The settings were transaction-local: nothing of this caller's scope or
     * deadline outlives the rollback above. */
    pthread_mutex_lock(&pool->mu);
    conn->in_use = false;
    pool->in_use--;
    pthread_cond_signal(&pool->cv);
    pthread_mutex_unlock(&pool->mu);
}

/* Sends SELECT 1 asynchronously so that an unresponsive server cannot hold
 * the caller past deadline_ms; a connection that misses the deadline has a
 * query in flight and is closed. */
static bool db__ping(db_conn_t *c, int64_t deadline_ms)
{
    PGresult *res;
    bool ok;

    if (!PQsendQuery(c->pg, "SELECT 1"))
        goto broken;
    while (PQisBusy(c->pg)) {
        struct pollfd pfd = {.fd = PQsocket(c->pg), .events = POLLIN};
        int64_t left = deadline_ms - db__now_ms();

        if (left <= 0 ||
            (poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left) < 0 && errno != EINTR))
            goto broken;
        if (!PQconsumeInput(c->pg))
            goto broken;
    }
    res = PQgetResult(c->pg);
    ok = PQresultStatus(res) == PGRES_TUPLES_OK;
    PQclear(res);
    while ((res = PQgetResult(c->pg)) != NULL)
        PQclear(res);
    if (!ok && PQstatus(c->pg) == CONNECTION_BAD)
        goto broken;
    return ok;
broken:
    db__copy_msg(c->errmsg, sizeof c->errmsg, PQerrorMessage(c->pg));
    db__mark_broken(c);
    return false;
}

bool db_pool_ping(db_pool_t *pool, int64_t timeout_ms)
{
    int64_t deadline = db__now_ms() + timeout_ms;
    db_conn_t *c;
    bool ok;

    if (db_pool_acquire(pool, timeout_ms, &c) < 0)
        return false;
    ok = db__ping(c, deadline);
    db_pool_release(pool, c);
    return ok;
}

int db_set_timeout(db_conn_t *conn, int64_t timeout_ms)
{
    int64_t dflt = conn->pool->default_timeout_ms;

    /* statement_timeout = 0 would mean "none": an expired deadline must
     * instead make the next statement fail at once. */
    if (timeout_ms <= 0)
        timeout_ms = 1;
    if (timeout_ms > INT_MAX)
        timeout_ms = INT_MAX;
    /* Only a bound tighter than the session's default is worth sending. */
    if (dflt > 0 && timeout_ms >= dflt)
        timeout_ms = 0;
    if (timeout_ms == conn->timeout_ms)
        return 0;
    conn->timeout_ms = timeout_ms;
    conn->settings_any = true;
    conn->settings_live = false;
    return 0;
}

void db_set_scope(db_conn_t *conn, int64_t org_id, bool superuser)
{
    if (conn->settings_any && org_id == conn->scope_org && superuser == conn->scope_superuser)
        return;
    conn->scope_org = org_id > 0 ? org_id : 0;
    conn->scope_superuser = superuser;
    conn->settings_any = true;
    conn->settings_live = false;
}

void db_set_call(db_conn_t *conn, const char *json)
{
    if (conn->settings_any && conn->call_info == json)
        return;
    conn->call_info = json;
    conn->settings_any = true;
    conn->settings_live = false;
}

/* The transaction-local settings, one prepared statement sent ahead of (or,
 * for BEGIN, right after) the statement that needs them. */
static const db_stmt_t db__settings = {
    "onceiot_db_settings",
    "SELECT pg_catalog.set_config('" DB_SETTING_ORG_ID "', $1, true),"
    " pg_catalog.set_config('" DB_SETTING_SUPERUSER "', $2, true),"
    " pg_catalog.set_config('statement_timeout', $3, true),"
    " pg_catalog.set_config('" DB_SETTING_CALL "', $4, true)",
    4};

/* The parameters of db__settings, written into bufs. */
static void db__settings_params(const db_conn_t *c, char bufs[2][24], const char *params[4])
{
    int64_t t = c->timeout_ms > 0 ? c->timeout_ms : c->pool->default_timeout_ms;

    bufs[0][0] = '\0';
    if (c->scope_org > 0)
        snprintf(bufs[0], 24, "%lld", (long long)c->scope_org);
    snprintf(bufs[1], 24, "%lld", (long long)t);
    params[0] = bufs[0];
    params[1] = c->scope_superuser ? "true" : "false";
    params[2] = bufs[1];
    params[3] = c->call_info ? c->call_info : "";
}

/* One step of a pipelined round trip: a prepared statement (prepared first
 * in the same round trip if this connection has not yet) or fixed SQL. */
typedef struct db__step {
    const db_stmt_t *stmt;     /* or NULL, then sql */
    const char *sql;           /* a single statement, planned for its parameters */
    int nparams;               /* sql's parameters */
    const char *const *params; /* stmt's (or sql's) parameters */
    const int *lengths;        /* of binary parameters (or NULL: all text) */
    const int *formats;        /* 1 for a binary parameter (or NULL: all text) */
} db__step_t;

static int db__pipeline_lost(db_conn_t *c)
{
    char msg[512];

    db__copy_msg(msg, sizeof msg, PQerrorMessage(c->pg));
    snprintf(c->errmsg, sizeof c->errmsg, "database connection lost (%s)", msg);
    snprintf(c->sqlstate, sizeof c->sqlstate, "08006");
    c->constraint[0] = '\0';
    db__mark_broken(c);
    return ERR_UNAVAILABLE;
}

/* Sends the n steps (and the prepares they need) in one pipeline ended by
 * one Sync, so they cost one round trip; outside a transaction block they
 * run as one implicit transaction, which is what makes set_config(..., true)
 * reach the statement after it. Returns the row count of step keep (its
 * result handed over in *out as db_exec does) or the first error. */
static int db__pipeline(db_conn_t *c, const db__step_t *steps, int n, int keep, PGresult **out)
{
    const db_stmt_t *prepares[4] = {NULL}; /* per query sent: the statement it prepares */
    int kept[4];                           /* per query sent: the step whose result it is, or -1 */
    int nq = 0;
    int rc = 0;
    int rows = 0;
    PGresult *res;

    if (!PQenterPipelineMode(c->pg))
        return db__pipeline_lost(c);
    for (int i = 0; i < n; i++) {
        const db_stmt_t *st = steps[i].stmt;
        int ok;

        if (st != NULL && !db__is_prepared(c, st)) {
            if (!PQsendPrepare(c->pg, st->name, st->sql, st->nparams, NULL))
                return db__pipeline_lost(c);
            prepares[nq] = st;
            kept[nq++] = -1;
        }
        if (st != NULL)
            ok = PQsendQueryPrepared(c->pg, st->name, st->nparams, steps[i].params,
                                     steps[i].lengths, steps[i].formats, 0);
        else
            ok = PQsendQueryParams(c->pg, steps[i].sql, steps[i].nparams, NULL, steps[i].params,
                                   NULL, NULL, 0);
        if (!ok)
            return db__pipeline_lost(c);
        prepares[nq] = NULL;
        kept[nq++] = i;
    }
    if (!PQpipelineSync(c->pg))
        return db__pipeline_lost(c);
    for (int q = 0; q < nq; q++) {
        bool got = false;

        while ((res = PQgetResult(c->pg)) != NULL) {
            ExecStatusType st = PQresultStatus(res);

            got = true;
            if (st == PGRES_PIPELINE_ABORTED) {
                PQclear(res);
                continue;
            }
            if (rc == 0 && kept[q] == keep) {
                int r = db__finish(c, res, out);
                if (r < 0)
                    rc = r;
                else
                    rows = r;
            } else {
                if (rc == 0 && st == PGRES_FATAL_ERROR)
                    rc = db__fail(c, res);
                else if (st == PGRES_COMMAND_OK && prepares[q] != NULL)
                    db__remember_prepared(c, prepares[q]);
                PQclear(res);
            }
            if (c->pg == NULL)
                return rc < 0 ? rc : db__lost(c);
        }
        if (!got)
            return db__pipeline_lost(c);
    }
    res = PQgetResult(c->pg);
    if (PQresultStatus(res) != PGRES_PIPELINE_SYNC) {
        PQclear(res);
        return db__pipeline_lost(c);
    }
    PQclear(res);
    if (!PQexitPipelineMode(c->pg))
        return db__pipeline_lost(c);
    return rc < 0 ? rc : rows;
}

/* True when this checkout's settings must go with the next statement: they
 * were given (db_set_scope, a tighter db_set_timeout) and are not in effect
 * in an open transaction. */
static bool db__needs_settings(const db_conn_t *c)
{
    return c->settings_any && !c->settings_live;
}

/* After a round trip that carried the settings: they stay in effect while
 * the transaction block it opened or continued is open. */
static void db__settings_sent(db_conn_t *c, int rc)
{
    if (rc >= 0 && c->pg != NULL && PQtransactionStatus(c->pg) == PQTRANS_INTRANS)
        c->settings_live = true;
}

/* The statement step and, ahead of it in the same round trip, this
 * checkout's settings (db__needs_settings). */
static int db__exec_with_settings(db_conn_t *c, const db__step_t *step, PGresult **res)
{
    char bufs[2][24];
    const char *sp[4];

    db__settings_params(c, bufs, sp);
    db__step_t steps[2] = {{.stmt = &db__settings, .params = sp}, *step};
    int rc = db__pipeline(c, steps, 2, 1, res);
    db__settings_sent(c, rc);
    return rc;
}

/* db_exec with optional binary parameters (lengths and formats as libpq's). */
static int db__exec(db_conn_t *conn, const db_stmt_t *stmt, const char *const *params,
                    const int *lengths, const int *formats, PGresult **res)
{
    int rc;

    if (res != NULL)
        *res = NULL;
    if (conn->pg == NULL)
        return db__lost(conn);
    if (db__needs_settings(conn))
        return db__exec_with_settings(
            conn,
            &(db__step_t){.stmt = stmt, .params = params, .lengths = lengths, .formats = formats},
            res);
    if (!db__is_prepared(conn, stmt)) {
        rc =
            db__finish(conn, PQprepare(conn->pg, stmt->name, stmt->sql, stmt->nparams, NULL), NULL);
        if (rc < 0)
            return rc;
        db__remember_prepared(conn, stmt);
    }
    return db__finish(
        conn, PQexecPrepared(conn->pg, stmt->name, stmt->nparams, params, lengths, formats, 0),
        res);
}

int db_exec(db_conn_t *conn, const db_stmt_t *stmt, const char *const *params, PGresult **res)
{
    return db__exec(conn, stmt, params, NULL, NULL, res);
}

int db_exec_values(db_conn_t *conn, const db_stmt_t *stmt, const db_value_t *values, PGresult **res)
{
    const char *params[DB_MAX_VALUES];
    int lengths[DB_MAX_VALUES], formats[DB_MAX_VALUES];

    if (stmt->nparams > DB_MAX_VALUES) {
        snprintf(conn->errmsg, sizeof conn->errmsg, "%s: more than %d values", stmt->name,
                 DB_MAX_VALUES);
        conn->sqlstate[0] = conn->constraint[0] = '\0';
        return ERR_INTERNAL;
    }
    for (int i = 0; i < stmt->nparams; i++) {
        params[i] = values[i].data;
        lengths[i] = values[i].len;
        formats[i] = values[i].binary ? 1 : 0;
    }
    return db__exec(conn, stmt, params, lengths, formats, res);
}

int db_exec_custom(db_conn_t *conn, const db_stmt_t *stmt, const char *const *params,
                   PGresult **res)
{
    if (res != NULL)
        *res = NULL;
    if (conn->pg == NULL)
        return db__lost(conn);
    if (db__needs_settings(conn))
        return db__exec_with_settings(
            conn, &(db__step_t){.sql = stmt->sql, .nparams = stmt->nparams, .params = params}, res);
    return db__finish(
        conn, PQexecParams(conn->pg, stmt->sql, stmt->nparams, NULL, params, NULL, NULL, 0), res);
}

/* True when sql starts with word (any case) followed by a non-letter. */
static bool db__starts_with(const char *sql, const char *word)
{
    size_t n = strlen(word);

    while (*sql == ' ' || *sql == '\n' || *sql == '\t')
        sql++;
    return strncasecmp(sql, word, n) == 0 &&
           !((sql[n] >= 'a' && sql[n] <= 'z') || (sql[n] >= 'A' && sql[n] <= 'Z'));
}

int db_exec_simple(db_conn_t *conn, const char *sql)
{
    bool ends = db__starts_with(sql, "COMMIT") || db__starts_with(sql, "ROLLBACK") ||
                db__starts_with(sql, "END") || db__starts_with(sql, "ABORT");
    int rc;

    if (conn->pg == NULL)
        return db__lost(conn);
    if (ends || !db__needs_settings(conn)) {
        rc = db__finish(conn, PQexec(conn->pg, sql), NULL);
        if (ends)
            conn->settings_live = false;
        return rc;
    }
    char bufs[2][24];
    const char *sp[4];

    db__settings_params(conn, bufs, sp);
    if (db__starts_with(sql, "BEGIN") || db__starts_with(sql, "START")) {
        /* The settings belong inside the block BEGIN opens. */
        db__step_t steps[2] = {{.sql = sql}, {.stmt = &db__settings, .params = sp}};
        rc = db__pipeline(conn, steps, 2, 0, NULL);
    } else {
        db__step_t steps[2] = {{.stmt = &db__settings, .params = sp}, {.sql = sql}};
        rc = db__pipeline(conn, steps, 2, 1, NULL);
    }
    db__settings_sent(conn, rc);
    return rc;
}

int db_begin(db_conn_t *conn)
{
    int rc = db_exec_simple(conn, "BEGIN");

    return rc < 0 ? rc : 0;
}

int db_commit(db_conn_t *conn)
{
    PGresult *res = NULL;
    int rc;

    if (conn->pg == NULL)
        return db__lost(conn);
    rc = db__finish(conn, PQexec(conn->pg, "COMMIT"), &res);
    if (rc < 0)
        return rc;
    /* COMMIT of a transaction that already failed succeeds as ROLLBACK. */
    if (strcmp(PQcmdStatus(res), "ROLLBACK") == 0) {
        snprintf(conn->errmsg, sizeof conn->errmsg,
                 "the transaction was rolled back because a statement in it failed");
        snprintf(conn->sqlstate, sizeof conn->sqlstate, "25P02");
        conn->constraint[0] = '\0';
        rc = ERR_ABORTED;
    } else {
        rc = 0;
    }
    PQclear(res);
    return rc;
}

void db_rollback(db_conn_t *conn)
{
    PGTransactionStatusType ts;
    PGresult *res;

    if (conn->pg == NULL)
        return;
    ts = PQtransactionStatus(conn->pg);
    if (ts != PQTRANS_INTRANS && ts != PQTRANS_INERROR)
        return;
    /* Keep the message of the error that led here: report the rollback's own
     * failure only through the connection being closed. */
    res = PQexec(conn->pg, "ROLLBACK");
    conn->settings_live = false;
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        db__mark_broken(conn);
    PQclear(res);
}

const char *db_errmsg(const db_conn_t *conn)
{
    return conn->errmsg;
}

const char *db_sqlstate(const db_conn_t *conn)
{
    return conn->sqlstate;
}

const char *db_constraint(const db_conn_t *conn)
{
    return conn->constraint;
}

PGconn *db_pgconn(db_conn_t *conn)
{
    return conn->pg;
}
