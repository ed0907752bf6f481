/* The event listener shared by every WatchEvents stream.
 *
 * One libpq connection (not from the pool) LISTENs on "sims_events"; one
 * thread waits on its socket with poll, reads notifications and hands each
 * (event id, occurrence time) to the subscribers of the event's organization.
 *
 * A subscription takes effect at a sync point: the stream sends a
 * notification "sync <n>" of its own on the same channel, and the listener
 * starts handing events to that subscriber when it reads it. PostgreSQL
 * delivers notifications in commit order, so the subscriber gets exactly the
 * events committed after the sync point and none committed before it, even
 * those whose notices were still on their way when it subscribed.
 * A subscriber's stream reads the row itself. Each subscriber has a bounded
 * queue: one that falls too far behind is told so and its stream ends, rather
 * than the listener buffering without limit.
 *
 * A sync point can only be read by a connection that was listening when it
 * was sent, so a stream sends its sync once the listener is listening, and
 * again if the listener reconnected before reading it. Notifications sent
 * while the listener is reconnecting are lost, so a reconnection ends every
 * active stream with UNAVAILABLE (the client lists what it missed with
 * ListEvents and watches again) rather than let it miss events silently.
 *
 * The thread does nothing but listen: the event table's maintenance runs in
 * the runtime's upkeep (sims_upkeep), so a long maintenance never delays a
 * subscription or an event. */
#include "onceiot/log.h"
#include "sims.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SUB_QUEUE 1024

typedef struct sims_notice {
    int64_t id;
    int64_t us;
} sims_notice_t;

struct sims_sub {
    sims_sub_t *next;
    uint64_t sync;      /* the sync point's number; 0: not sent yet */
    uint64_t sync_conn; /* the listener connection it was sent to */
    bool active;        /* the sync point was read: events are queued */
    bool cut;           /* the listener reconnected after it was active */
    bool all;           /* a superuser: every organization */
    int64_t org;        /* otherwise this one */
    pthread_cond_t cv;
    sims_notice_t q[SUB_QUEUE];
    unsigned head, tail; /* tail - head notices are queued */
    bool lost;           /* the queue overflowed */
};

struct sims_watch {
    pthread_t thread;
    pthread_mutex_t mu;
    sims_sub_t *subs;
    uint64_t next_sync; /* guarded by mu */
    uint64_t conn;      /* guarded by mu: the listening connection's number, 0 while none */
    uint64_t n_conns;   /* connections that reached LISTEN so far */
    int wake[2];        /* written to stop the thread */
    char *url;
    char *schema; /* the service's schema */
};

static void sims__dispatch(sims_watch_t *w, const char *payload)
{
    sims_notice_t n;
    long long id, org, us;
    unsigned long long sync;
    if (sscanf(payload, "sync %llu", &sync) == 1) {
        pthread_mutex_lock(&w->mu);
        for (sims_sub_t *s = w->subs; s; s = s->next)
            if (s->sync == sync) {
                s->active = true;
                pthread_cond_signal(&s->cv);
            }
        pthread_mutex_unlock(&w->mu);
        return;
    }
    if (sscanf(payload, "%lld %lld %lld", &id, &org, &us) != 3)
        return;
    n.id = id;
    n.us = us;
    pthread_mutex_lock(&w->mu);
    for (sims_sub_t *s = w->subs; s; s = s->next) {
        if (!s->active || (!s->all && s->org != org))
            continue;
        if (s->tail - s->head >= SUB_QUEUE)
            s->lost = true;
        else
            s->q[s->tail++ % SUB_QUEUE] = n;
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&w->mu);
}

/* Connects with the service's schema on the search path and LISTENs. */
static PGconn *sims__listen(const char *url, const char *schema)
{
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK) {
        log_msg(LOG_WARN, "watch_connect", "%s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    (void)schema; /* the channel is per database; the listener reads no table */
    PGresult *r = PQexec(c, "LISTEN sims_events");
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) {
        log_msg(LOG_WARN, "watch_listen", "%s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* Hands out every notification libpq has queued. */
static void sims__drain_notifies(sims_watch_t *w, PGconn *c)
{
    PGnotify *note;
    while ((note = PQnotifies(c))) {
        sims__dispatch(w, note->extra);
        PQfreemem(note);
    }
}

/* Records that a connection is listening (n > 0) or that none is (n == 0).
 * Losing one cuts every active subscriber: notifications sent while no
 * connection listened are gone. */
static void sims__set_conn(sims_watch_t *w, bool listening)
{
    pthread_mutex_lock(&w->mu);
    w->conn = listening ? ++w->n_conns : 0;
    if (!listening)
        for (sims_sub_t *s = w->subs; s; s = s->next)
            if (s->active) {
                s->cut = true;
                pthread_cond_signal(&s->cv);
            }
    pthread_mutex_unlock(&w->mu);
}

static void *sims__listener(void *arg)
{
    sims_watch_t *w = arg;
    PGconn *c = NULL;
    for (;;) {
        if (!c) {
            if (!(c = sims__listen(w->url, w->schema))) {
                struct pollfd p = {w->wake[0], POLLIN, 0};
                if (poll(&p, 1, 1000) > 0)
                    break;
                continue;
            }
            sims__set_conn(w, true);
        }
        struct pollfd p[2] = {{PQsocket(c), POLLIN, 0}, {w->wake[0], POLLIN, 0}};
        int n = poll(p, 2, 1000);
        if (n < 0 && errno != EINTR)
            break;
        if (p[1].revents)
            break;
        if (n <= 0)
            continue;
        if (!PQconsumeInput(c)) {
            log_msg(LOG_WARN, "watch_lost", "%s", PQerrorMessage(c));
            sims__set_conn(w, false);
            PQfinish(c);
            c = NULL;
            continue;
        }
        sims__drain_notifies(w, c);
    }
    PQfinish(c);
    return NULL;
}

int sims_watch_start(const char *url, const char *schema, sims_watch_t **out)
{
    sims_watch_t *w = mem_calloc(1, sizeof(*w));
    pthread_mutex_init(&w->mu, NULL);
    w->url = mem_strdup(url);
    w->schema = mem_strdup(schema);
    if (pipe(w->wake) != 0 || pthread_create(&w->thread, NULL, sims__listener, w) != 0) {
        log_msg(LOG_ERROR, "watch_start", "cannot start the event listener: %s", strerror(errno));
        pthread_mutex_destroy(&w->mu);
        mem_free(w->url);
        mem_free(w->schema);
        mem_free(w);
        return ERR_INTERNAL;
    }
    *out = w;
    return 0;
}

void sims_watch_stop(sims_watch_t *w)
{
    if (!w)
        return;
    ssize_t n = write(w->wake[1], "x", 1);
    (void)n;
    pthread_join(w->thread, NULL);
    close(w->wake[0]);
    close(w->wake[1]);
    pthread_mutex_destroy(&w->mu);
    mem_free(w->url);
    mem_free(w->schema);
    mem_free(w);
}

sims_sub_t *sims_watch_subscribe(sims_watch_t *w, const char *org)
{
    sims_sub_t *s = mem_calloc(1, sizeof(*s));
    s->all = org == NULL;
    s->org = org ? strtoll(org, NULL, 10) : 0;
    pthread_cond_init(&s->cv, NULL);
    pthread_mutex_lock(&w->mu);
    s->next = w->subs;
    w->subs = s;
    pthread_mutex_unlock(&w->mu);
    return s;
}

const char *sims_watch_sync_due(sims_watch_t *w, sims_sub_t *s, arena_t *a)
{
    uint64_t n = 0;
    pthread_mutex_lock(&w->mu);
    if (!s->active && w->conn && s->sync_conn != w->conn) {
        n = s->sync = ++w->next_sync;
        s->sync_conn = w->conn;
    }
    pthread_mutex_unlock(&w->mu);
    return n ? arena_printf(a, "sync %" PRIu64, n) : NULL;
}

/* The CLOCK_REALTIME time timeout_ms from now, for pthread_cond_timedwait. */
static struct timespec sims__deadline(int timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    return until;
}

bool sims_watch_active(sims_watch_t *w, sims_sub_t *s, int timeout_ms)
{
    struct timespec until = sims__deadline(timeout_ms);
    pthread_mutex_lock(&w->mu);
    while (!s->active)
        if (pthread_cond_timedwait(&s->cv, &w->mu, &until) == ETIMEDOUT)
            break;
    bool active = s->active;
    pthread_mutex_unlock(&w->mu);
    return active;
}

void sims_watch_unsubscribe(sims_watch_t *w, sims_sub_t *s)
{
    pthread_mutex_lock(&w->mu);
    for (sims_sub_t **p = &w->subs; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    pthread_mutex_unlock(&w->mu);
    pthread_cond_destroy(&s->cv);
    mem_free(s);
}

int sims_watch_next(sims_watch_t *w, sims_sub_t *s, int timeout_ms, arena_t *a, const char **id,
                    const char **occurred_us)
{
    struct timespec until = sims__deadline(timeout_ms);
    int rc = 0;
    pthread_mutex_lock(&w->mu);
    while (s->head == s->tail && !s->lost && !s->cut)
        if (pthread_cond_timedwait(&s->cv, &w->mu, &until) == ETIMEDOUT)
            break;
    if (s->lost) {
        rc = ERR_RESOURCE_EXHAUSTED;
    } else if (s->cut && s->head == s->tail) {
        rc = ERR_UNAVAILABLE;
    } else if (s->head != s->tail) {
        sims_notice_t n = s->q[s->head++ % SUB_QUEUE];
        *id = arena_printf(a, "%" PRId64, n.id);
        *occurred_us = arena_printf(a, "%" PRId64, n.us);
        rc = 1;
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}
