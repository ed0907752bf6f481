/* PostgreSQL connection pool (see onceiot/db.h).
 *
 * The pool owns a fixed array of connections guarded by one mutex; a
 * connection taken by db_pool_acquire belongs to that thread alone until it is
 * released, so everything on db_conn_t except in_use is touched without the
 * lock. A connection found dead is closed at once and marked broken; the next
 * acquire that picks it reconnects, with a per-connection backoff so a server
 * that is down costs callers one refused connect, not a wait. */
#include "db_int.h"
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
#include <time.h>

enum {
    DB__BACKOFF_MIN_MS = 50,
    DB__BACKOFF_MAX_MS = 2000,
    DB__CONNECT_TIMEOUT_DEFAULT_MS = 5000,
};

static int64_t db__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Copies a libpq message without its trailing newline. */
void db__copy_msg(char *dst, size_t len, const char *msg)
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
void db__mark_broken(db_conn_t *c)
{
    PQfinish(c->pg);
    c->pg = NULL;
    c->nprepared = 0;
    c->settings_live = false;
    c->retry_at_ms = 0;
    log_msg(LOG_WARN, "db_connection_lost", "schema %s: %s", c->pool->schema, c->errmsg);
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
