/* The streams the gateway relays, bounded by their credentials: a
 * streaming call is registered when it is connected upstream and a thread
 * checks every registered stream each second. A stream ends with
 * UNAUTHENTICATED when its credential expires or is revoked (as identity
 * publishes revocations through GetVerificationKeys), and with UNAVAILABLE
 * when it reaches the longest lifetime, so that clients reconnect and are
 * authenticated again. Registration also caps the open streams of one
 * organization, so one tenant cannot take every stream slot of a service. */
#include "gateway.h"

#include "onceiot/log.h"
#include "onceiot/mem.h"

#include <pthread.h>
#include <time.h>

struct gw_streams {
    gw_auth_t *auth;
    long max_per_org;   /* 0: no cap */
    long lifetime_s;    /* longest life of a stream */
    long check_ms;      /* how often streams are checked */
    long grace_ms;      /* API keys: revocations this much before the start count */
    pthread_mutex_t mu; /* guards the list, the counts and stopping */
    pthread_cond_t cv;
    gw_stream_t head; /* circular list of open streams */
    size_t n;
    bool stopping;
    bool started;
    pthread_t thread;
};

static int64_t streams__mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t streams__wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

gw_streams_t *gw_streams_new(gw_auth_t *auth, const gw_streams_opts_t *o)
{
    gw_streams_t *s = mem_calloc(1, sizeof(*s));
    s->auth = auth;
    s->max_per_org = o->max_per_org;
    s->lifetime_s = o->lifetime_s;
    s->check_ms = o->check_ms;
    s->grace_ms = o->key_grace_ms;
    s->head.next = s->head.prev = &s->head;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    return s;
}

/* Why a stream must end now (NULL: it may go on); *code is its status. */
static const char *streams__verdict(gw_streams_t *s, const gw_stream_t *st, int64_t now_mono,
                                    int64_t now_wall, grpc_status_code *code)
{
    *code = GRPC_STATUS_UNAUTHENTICATED;
    if (st->expires_at && now_wall / 1000 >= st->expires_at)
        return "the stream's credential expired";
    /* A token is revoked when the user's not_before reaches its issue time.
     * An API key's principal may come from a cache up to grace_ms old, so a
     * user revocation shortly before the stream began counts too. */
    int64_t since = st->key_id ? st->started_wall_ms - s->grace_ms : st->issued_ms;
    if (gw_auth_user_revoked(s->auth, st->user_id, since))
        return "the stream's credential was revoked (the user was deactivated, changed role or "
               "password)";
    if (st->key_id && gw_auth_key_revoked(s->auth, st->key_id))
        return "the stream's API key was revoked";
    if (now_mono - st->started_mono_ms >= s->lifetime_s * 1000) {
        *code = GRPC_STATUS_UNAVAILABLE;
        return "the stream reached its longest lifetime; open a new one";
    }
    return NULL;
}

int gw_streams_check(gw_streams_t *s)
{
    int ended = 0;
    int64_t now_mono = streams__mono_ms(), now_wall = streams__wall_ms();
    pthread_mutex_lock(&s->mu);
    for (gw_stream_t *st = s->head.next; st != &s->head; st = st->next) {
        grpc_status_code code;
        const char *why = st->ended ? NULL : streams__verdict(s, st, now_mono, now_wall, &code);
        if (!why)
            continue;
        /* Cancelling the client's call also cancels its upstream child. */
        st->ended = true;
        grpc_call_cancel_with_status(st->down, code, why, NULL);
        log_rec_t r;
        log_begin(&r, LOG_INFO, "stream_ended");
        log_str(&r, "method", st->method);
        log_int(&r, "user_id", st->user_id);
        log_str(&r, "reason", why);
        log_end(&r);
        ended++;
    }
    pthread_mutex_unlock(&s->mu);
    return ended;
}

static void *streams__main(void *arg)
{
    gw_streams_t *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += s->check_ms / 1000;
        ts.tv_nsec += (s->check_ms % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        if (s->stopping)
            break;
        pthread_mutex_unlock(&s->mu);
        gw_streams_check(s);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

void gw_streams_start(gw_streams_t *s)
{
    s->started = pthread_create(&s->thread, NULL, streams__main, s) == 0;
}

void gw_streams_free(gw_streams_t *s)
{
    if (!s)
        return;
    if (s->started) {
        pthread_mutex_lock(&s->mu);
        s->stopping = true;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
    }
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    mem_free(s);
}

int gw_streams_add(gw_streams_t *s, gw_stream_t *st, grpc_call *down, const char *method,
                   const principal_t *p, int64_t issued_ms, int64_t key_id)
{
    st->down = down;
    st->method = method;
    st->org = p->organization_id;
    st->user_id = p->user_id;
    st->expires_at = p->expires_at;
    st->issued_ms = issued_ms;
    st->key_id = key_id;
    st->started_mono_ms = streams__mono_ms();
    st->started_wall_ms = streams__wall_ms();
    st->ended = false;
    pthread_mutex_lock(&s->mu);
    if (s->max_per_org > 0) {
        long same = 0;
        for (gw_stream_t *o = s->head.next; o != &s->head; o = o->next)
            same += o->org == st->org;
        if (same >= s->max_per_org) {
            pthread_mutex_unlock(&s->mu);
            st->next = st->prev = NULL;
            return ERR_RESOURCE_EXHAUSTED;
        }
    }
    st->next = &s->head;
    st->prev = s->head.prev;
    s->head.prev->next = st;
    s->head.prev = st;
    s->n++;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

void gw_streams_remove(gw_streams_t *s, gw_stream_t *st)
{
    if (!st->next)
        return;
    pthread_mutex_lock(&s->mu);
    st->prev->next = st->next;
    st->next->prev = st->prev;
    st->next = st->prev = NULL;
    s->n--;
    pthread_mutex_unlock(&s->mu);
}
