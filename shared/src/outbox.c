/* The transactional outbox and its dispatcher (see onceiot/outbox.h). */
#include "onceiot/outbox.h"

#include "onceiot/log.h"
#include "onceiot/metrics.h"

#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Pending rows are found through a partial index on what is due; delivered
 * rows are deleted, failed ones kept (failed_at) until an operator acts. */
const migrate_embedded_t outbox_migrations[OUTBOX_N_MIGRATIONS] = {
    {"outbox_0001_table",
     "CREATE TABLE outbox (\n"
     "    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n"
     "    topic           text NOT NULL CHECK (topic ~ '^[a-z][a-z0-9_.]{0,63}$'),\n"
     "    key             text NOT NULL CHECK (char_length(key) BETWEEN 1 AND 200),\n"
     "    payload         bytea NOT NULL,\n"
     "    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),\n"
     "    attempts        integer NOT NULL DEFAULT 0,\n"
     "    next_attempt_at timestamptz NOT NULL DEFAULT now(),\n"
     "    leased_until    timestamptz,\n"
     "    leased_by       text,\n"
     "    last_error      text,\n"
     "    failed_at       timestamptz,\n"
     "    UNIQUE (topic, key)\n"
     ");\n"
     "CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE failed_at IS NULL;\n"},
};

static const db_stmt_t put_stmt = {
    "outbox_put",
    "INSERT INTO outbox (topic, key, payload) VALUES ($1, $2, decode($3, 'base64')) "
    "ON CONFLICT (topic, key) DO NOTHING",
    3};

int outbox_put(db_conn_t *conn, const char *topic, const char *key, const uint8_t *payload,
               size_t len)
{
    size_t b64_len = sodium_base64_encoded_len(len, sodium_base64_VARIANT_ORIGINAL);
    char *b64 = mem_alloc(b64_len);
    sodium_bin2base64(b64, b64_len, payload, len, sodium_base64_VARIANT_ORIGINAL);
    const char *params[] = {topic, key, b64};
    int rc = db_exec(conn, &put_stmt, params, NULL);
    mem_free(b64);
    return rc;
}

/* Takes due rows of our topics that nobody holds (or whose holder's lease
 * ran out), oldest first, and leases them to us. */
static const db_stmt_t claim_stmt = {
    "outbox_claim",
    "WITH c AS (SELECT id FROM outbox WHERE failed_at IS NULL AND next_attempt_at <= now() "
    "AND (leased_until IS NULL OR leased_until < now()) AND topic = ANY($1::text[]) "
    "ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED) "
    "UPDATE outbox o SET leased_until = now() + $3::bigint * interval '1 millisecond', "
    "leased_by = $4, attempts = o.attempts + 1 FROM c WHERE o.id = c.id "
    "RETURNING o.id, o.topic, o.key, encode(o.payload, 'base64') AS payload, o.attempts, "
    "(extract(epoch FROM clock_timestamp() - o.created_at) * 1000)::bigint AS age_ms",
    4};

static const db_stmt_t done_stmt = {"outbox_done",
                                    "DELETE FROM outbox WHERE id = $1 AND leased_by = $2", 2};

/* The backoff doubles per attempt from 100 ms up to $4 ms. */
static const db_stmt_t retry_stmt = {
    "outbox_retry",
    "UPDATE outbox SET leased_until = NULL, leased_by = NULL, last_error = $3, "
    "next_attempt_at = now() + least($4::bigint, 100 * power(2, least(attempts, 20))::bigint) "
    "* interval '1 millisecond' WHERE id = $1 AND leased_by = $2",
    4};

static const db_stmt_t fail_stmt = {
    "outbox_fail",
    "UPDATE outbox SET leased_until = NULL, leased_by = NULL, last_error = $3, "
    "failed_at = now() WHERE id = $1 AND leased_by = $2",
    3};

/* Gives back rows claimed but not tried (after the callee went away, or
 * when half the lease has passed), with the attempt not counted; only rows
 * still leased to us. */
static const db_stmt_t release_stmt = {
    "outbox_release",
    "UPDATE outbox SET leased_until = NULL, leased_by = NULL, attempts = attempts - 1 "
    "WHERE id = ANY($1::bigint[]) AND leased_by = $2",
    2};

static const db_stmt_t stats_stmt = {
    "outbox_stats",
    "SELECT count(*) FILTER (WHERE failed_at IS NULL) AS pending, "
    "coalesce((extract(epoch FROM clock_timestamp() - min(created_at) "
    "FILTER (WHERE failed_at IS NULL)) * 1000)::bigint, 0) AS oldest_ms, "
    "count(*) FILTER (WHERE failed_at IS NOT NULL) AS failed, "
    "(SELECT last_error FROM outbox WHERE last_error IS NOT NULL "
    "ORDER BY coalesce(failed_at, next_attempt_at) DESC LIMIT 1) AS last_error FROM outbox",
    0};

int outbox_read_stats(db_conn_t *conn, outbox_stats_t *out)
{
    PGresult *res = NULL;
    memset(out, 0, sizeof(*out));
    int rc = db_exec(conn, &stats_stmt, NULL, &res);
    if (rc < 0)
        return rc;
    out->pending = db_get_int(res, 0, "pending", 0);
    out->oldest_age_ms = db_get_int(res, 0, "oldest_ms", 0);
    out->failed = db_get_int(res, 0, "failed", 0);
    const char *e = db_get(res, 0, "last_error");
    snprintf(out->last_error, sizeof(out->last_error), "%s", e ? e : "");
    PQclear(res);
    return 0;
}

#define LAG_LOG_MS 10000

struct outbox {
    outbox_opts_t o;
    char owner[128]; /* leased_by of our rows */
    const char *topics_array;
    arena_t *arena; /* owner-lifetime strings */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
    bool notified;
};

static int64_t outbox__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits up to ms for a notice or the stop; true when stopping. */
static bool outbox__wait(outbox_t *ob, int64_t ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    int64_t ns = until.tv_nsec + ms * 1000000;
    until.tv_sec += ns / 1000000000;
    until.tv_nsec = ns % 1000000000;
    pthread_mutex_lock(&ob->mu);
    while (!ob->stopping && !ob->notified)
        if (pthread_cond_timedwait(&ob->cv, &ob->mu, &until) == ETIMEDOUT)
            break;
    ob->notified = false;
    bool stop = ob->stopping;
    pthread_mutex_unlock(&ob->mu);
    return stop;
}

static const outbox_topic_t *outbox__topic(const outbox_t *ob, const char *name)
{
    for (size_t i = 0; i < ob->o.n_topics; i++)
        if (strcmp(ob->o.topics[i].topic, name) == 0)
            return &ob->o.topics[i];
    return NULL;
}

/* Runs one statement on a connection of its own from the pool. */
static int outbox__exec(outbox_t *ob, const db_stmt_t *stmt, const char *const *params,
                        PGresult **res)
{
    db_conn_t *conn = NULL;
    int rc = db_pool_acquire(ob->o.pool, 2000, &conn);
    if (rc < 0)
        return rc;
    rc = db_exec(conn, stmt, params, res);
    if (rc < 0)
        log_msg(LOG_WARN, "outbox_db", "%s: %s", stmt->name, db_errmsg(conn));
    db_pool_release(ob->o.pool, conn);
    return rc;
}

/* The lag gauges, refreshed with the lag log (metrics read no table). */
static struct {
    metrics_series_t *pending, *oldest, *failed;
} outbox__metrics;
static pthread_once_t outbox__metrics_once = PTHREAD_ONCE_INIT;

static void outbox__metrics_init(void)
{
    outbox__metrics.pending =
        metrics_gauge_plain("onceiot_outbox_pending", "Outbox rows not yet delivered.");
    outbox__metrics.oldest =
        metrics_gauge_plain("onceiot_outbox_oldest_age_seconds",
                            "Age of the oldest undelivered outbox row (0 when none).");
    outbox__metrics.failed = metrics_gauge_plain("onceiot_outbox_failed",
                                                 "Outbox rows refused for good by their callee.");
}

/* Every LAG_LOG_MS: the lag gauges, and one line with the lag while rows
 * are pending. */
static void outbox__log_lag(outbox_t *ob, int64_t *last_ms)
{
    int64_t now = outbox__now_ms();
    if (now - *last_ms < LAG_LOG_MS)
        return;
    *last_ms = now;
    db_conn_t *conn = NULL;
    outbox_stats_t s;
    if (db_pool_acquire(ob->o.pool, 1000, &conn) < 0)
        return;
    int rc = outbox_read_stats(conn, &s);
    db_pool_release(ob->o.pool, conn);
    if (rc == 0) {
        pthread_once(&outbox__metrics_once, outbox__metrics_init);
        metrics_set(outbox__metrics.pending, (double)s.pending);
        metrics_set(outbox__metrics.oldest, (double)s.oldest_age_ms / 1000.0);
        metrics_set(outbox__metrics.failed, (double)s.failed);
    }
    if (rc < 0 || (s.pending == 0 && s.failed == 0))
        return;
    log_rec_t r;
    log_begin(&r, s.failed ? LOG_WARN : LOG_INFO, "outbox_lag");
    log_int(&r, "pending", s.pending);
    log_int(&r, "oldest_age_ms", s.oldest_age_ms);
    log_int(&r, "failed", s.failed);
    log_str(&r, "last_error", s.last_error);
    log_end(&r);
}

/* Gives back the claimed rows from..n-1 of res untried (still ours only). */
static void outbox__release(outbox_t *ob, PGresult *res, int from, int n, arena_t *a)
{
    if (from >= n)
        return;
    const char **ids = arena_alloc(a, (size_t)(n - from) * sizeof(char *));
    for (int k = from; k < n; k++)
        ids[k - from] = db_get(res, k, "id");
    const char *p[] = {db_text_array(a, ids, (size_t)(n - from)), ob->owner};
    (void)!outbox__exec(ob, &release_stmt, p, NULL);
}

typedef enum outbox_pass {
    OUTBOX_PASS_ALL,     /* every claimed row was tried */
    OUTBOX_PASS_BACKOFF, /* the callee asked us to back off; the rest was released */
    OUTBOX_PASS_CUT,     /* half the lease had passed; the rest was released, still due */
} outbox_pass_t;

/* Delivers the claimed rows in res, claimed at claimed_ms (monotonic, taken
 * before the claim statement, so no later than the lease's start). A row is
 * started only while less than half the lease has passed: the other half is
 * the margin in which a handler (bounded well inside it) finishes before
 * another dispatcher may take the row again. */
static outbox_pass_t outbox__deliver(outbox_t *ob, PGresult *res, int n, int64_t claimed_ms)
{
    for (int i = 0; i < n; i++) {
        arena_t *a = arena_new();
        if (outbox__now_ms() - claimed_ms >= ob->o.lease_ms / 2) {
            outbox__release(ob, res, i, n, a);
            arena_free(a);
            return OUTBOX_PASS_CUT;
        }
        const char *id = db_get(res, i, "id");
        const char *b64 = db_get(res, i, "payload");
        size_t cap = strlen(b64) + 1, len = 0;
        uint8_t *bytes = arena_alloc(a, cap);
        outbox_msg_t m = {
            .id = strtoll(id, NULL, 10),
            .topic = db_get(res, i, "topic"),
            .key = db_get(res, i, "key"),
            .payload = bytes,
            .attempts = (int)db_get_int(res, i, "attempts", 1),
            .age_ms = db_get_int(res, i, "age_ms", 0),
        };
        const char *why = NULL;
        outbox_verdict_t v = OUTBOX_FAILED;
        const outbox_topic_t *t = outbox__topic(ob, m.topic);
        if (sodium_base642bin(bytes, cap, b64, strlen(b64), "\r\n", &len, NULL,
                              sodium_base64_VARIANT_ORIGINAL) != 0)
            why = "the payload is not readable";
        else if (t) {
            m.len = len;
            v = t->fn(t->ctx, &m, a, &why);
        }
        const char *owner = ob->owner;
        char backoff[24];
        snprintf(backoff, sizeof(backoff), "%d", ob->o.max_backoff_ms);
        const char *err = why ? why : (v == OUTBOX_DONE ? NULL : "no reason given");
        if (v == OUTBOX_DONE) {
            const char *p[] = {id, owner};
            (void)!outbox__exec(ob, &done_stmt, p, NULL);
        } else if (v == OUTBOX_RETRY) {
            const char *p[] = {id, owner, err, backoff};
            (void)!outbox__exec(ob, &retry_stmt, p, NULL);
        } else {
            const char *p[] = {id, owner, err};
            (void)!outbox__exec(ob, &fail_stmt, p, NULL);
            log_rec_t r;
            log_begin(&r, LOG_ERROR, "outbox_failed");
            log_str(&r, "topic", m.topic);
            log_str(&r, "key", m.key);
            log_str(&r, "error", err);
            log_end(&r);
        }
        if (v == OUTBOX_RETRY) {
            log_rec_t r;
            log_begin(&r, LOG_WARN, "outbox_retry");
            log_str(&r, "topic", m.topic);
            log_str(&r, "key", m.key);
            log_int(&r, "attempts", m.attempts);
            log_str(&r, "error", err);
            log_end(&r);
            outbox__release(ob, res, i + 1, n, a);
            arena_free(a);
            return OUTBOX_PASS_BACKOFF;
        }
        arena_free(a);
    }
    return OUTBOX_PASS_ALL;
}

static void *outbox__main(void *arg)
{
    outbox_t *ob = arg;
    char batch[16], lease[24];
    snprintf(batch, sizeof(batch), "%d", ob->o.batch);
    snprintf(lease, sizeof(lease), "%d", ob->o.lease_ms);
    int64_t backoff = 0, last_lag_log = 0;
    for (;;) {
        if (backoff > 0 && outbox__wait(ob, backoff))
            break;
        pthread_mutex_lock(&ob->mu);
        bool stop = ob->stopping;
        pthread_mutex_unlock(&ob->mu);
        if (stop)
            break;
        PGresult *res = NULL;
        const char *p[] = {ob->topics_array, batch, lease, ob->owner};
        int64_t claimed_ms = outbox__now_ms();
        int n = outbox__exec(ob, &claim_stmt, p, &res);
        if (n < 0) {
            /* The database is away: try again, slower each time. */
            backoff = backoff ? backoff * 2 : 100;
            if (backoff > ob->o.max_backoff_ms)
                backoff = ob->o.max_backoff_ms;
            continue;
        }
        outbox_pass_t pass = outbox__deliver(ob, res, n, claimed_ms);
        PQclear(res);
        outbox__log_lag(ob, &last_lag_log);
        if (pass == OUTBOX_PASS_BACKOFF) {
            backoff = backoff ? backoff * 2 : 100;
            if (backoff > ob->o.max_backoff_ms)
                backoff = ob->o.max_backoff_ms;
        } else {
            backoff = 0;
            /* A full or cut claim means more may be due at once. */
            if (pass == OUTBOX_PASS_ALL && n < ob->o.batch && outbox__wait(ob, ob->o.poll_ms))
                break;
        }
    }
    return NULL;
}

int outbox_start(const outbox_opts_t *opts, outbox_t **out)
{
    outbox_t *ob = mem_calloc(1, sizeof(*ob));
    ob->o = *opts;
    if (ob->o.batch <= 0)
        ob->o.batch = 32;
    if (ob->o.lease_ms <= 0)
        ob->o.lease_ms = 30000;
    if (ob->o.poll_ms <= 0)
        ob->o.poll_ms = 500;
    if (ob->o.max_backoff_ms <= 0)
        ob->o.max_backoff_ms = 30000;
    ob->arena = arena_new();
    const char **names = arena_alloc(ob->arena, (opts->n_topics + 1) * sizeof(char *));
    for (size_t i = 0; i < opts->n_topics; i++)
        names[i] = opts->topics[i].topic;
    ob->topics_array = db_text_array(ob->arena, names, opts->n_topics);
    char host[64] = "";
    gethostname(host, sizeof(host) - 1);
    uint32_t rnd = randombytes_random();
    snprintf(ob->owner, sizeof(ob->owner), "%s:%s:%d:%08x", opts->service, host, (int)getpid(),
             rnd);
    pthread_mutex_init(&ob->mu, NULL);
    pthread_cond_init(&ob->cv, NULL);
    if (pthread_create(&ob->thread, NULL, outbox__main, ob) != 0) {
        log_msg(LOG_ERROR, "outbox_start", "cannot start the dispatcher: %s", strerror(errno));
        pthread_mutex_destroy(&ob->mu);
        pthread_cond_destroy(&ob->cv);
        arena_free(ob->arena);
        mem_free(ob);
        return ERR_INTERNAL;
    }
    *out = ob;
    return 0;
}

void outbox_notify(outbox_t *ob)
{
    if (!ob)
        return;
    pthread_mutex_lock(&ob->mu);
    ob->notified = true;
    pthread_cond_signal(&ob->cv);
    pthread_mutex_unlock(&ob->mu);
}

void outbox_stop(outbox_t *ob)
{
    if (!ob)
        return;
    pthread_mutex_lock(&ob->mu);
    ob->stopping = true;
    pthread_cond_signal(&ob->cv);
    pthread_mutex_unlock(&ob->mu);
    pthread_join(ob->thread, NULL);
    pthread_mutex_destroy(&ob->mu);
    pthread_cond_destroy(&ob->cv);
    arena_free(ob->arena);
    mem_free(ob);
}
