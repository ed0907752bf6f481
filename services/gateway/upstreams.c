/* One persistent channel per upstream service, and a thread that keeps the
 * gateway's health for each upstream's services true, decides when the
 * gateway itself is ready (it can authenticate: identity is SERVING and its
 * verification keys are loaded), and reconnects the channels of an upstream
 * as soon as it is seen back instead of waiting out their connect backoff. */
#include "gateway.h"

#include "grpc/health/v1/health.pb-c.h"
#include "onceiot/config.h"
#include "onceiot/log.h"
#include "onceiot/mem.h"

#include <ctype.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* An upstream that is not SERVING is checked this often (one that comes
 * back is routed to again within about this long). */
#define GW_RECOVERY_POLL_MS 100
/* How long a check of an upstream that is not SERVING may take: one that
 * accepts connections but does not answer (a hung pod) would otherwise hold
 * the checks of every other upstream, and the gateway's readiness, for a
 * whole interval. */
#define GW_DOWN_CHECK_MS  300
#define GW_MAX_BACKOFF_MS 1000

typedef struct gw_upstream {
    char *name;           /* "sims" */
    const char *addr;     /* from ONCEIOT_SIMS_ADDR (points into the environment) */
    rpc_channel_t *ch;    /* persistent HTTP/2 channel */
    grpc_channel **proxy; /* n_proxy channels for proxied calls */
    atomic_uint next;     /* round-robin position in proxy */
    atomic_int last;      /* last health seen, -1 before the first check */
} gw_upstream_t;

struct gw_upstreams {
    gw_upstream_t *u;
    size_t n;
    size_t n_proxy;
    const gw_routes_t *routes;
    rpc_server_t *srv;
    gw_auth_t *auth; /* readiness: its keys are loaded */
    int interval_ms;
    int identity; /* index of the identity upstream, -1 if none */
    bool ready;   /* "" was last set SERVING (only the thread touches it) */
    pthread_t thread;
    bool watching;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping; /* guarded by mu */
};

/* A channel for proxied calls: a subchannel pool of its own (channels to
 * one target otherwise share the global pool and so one connection per
 * address), round robin over the upstream's addresses, the upstream's
 * idempotent reads (retry_methods) retried on UNAVAILABLE, so a replica
 * killed under a read costs no failed call; everything else is not retried
 * (the client decides). */
static grpc_channel *upstreams__proxy_channel(const char *addr, size_t max_message_bytes,
                                              const char *const *retry_methods, size_t n_retry,
                                              bool round_robin)
{
    rpc_channel_cfg_t cfg = {
        .round_robin = round_robin,
        .max_message_bytes = max_message_bytes,
        .retry_methods = retry_methods,
        .n_retry_methods = n_retry,
        /* The health thread resets the backoff when it sees the upstream
         * back; this bounds the wait should it not (core's default grows to
         * 120 s), and is how soon an address that starts answering (a new
         * replica on a listed port) gets calls. */
        .max_reconnect_backoff_ms = GW_MAX_BACKOFF_MS,
        .own_subchannels = true,
    };
    return rpc_channel_create(addr, &cfg);
}

/* The methods of upstream i that a retry cannot harm: unary standard reads
 * (AIP Get and List) under a read scope ("sims:read"). The scope alone is
 * not enough: ChangePassword is under "users:read". Paths point into the
 * routes; *n set. mem_free the array. */
static const char **upstreams__retry_methods(const gw_routes_t *routes, size_t i, size_t *n)
{
    const char **out = mem_calloc(gw_routes_count(routes) + 1, sizeof(*out));
    *n = 0;
    for (size_t k = 0; k < gw_routes_count(routes); k++) {
        const gw_route_t *r = gw_routes_at(routes, k);
        const char *scope = r->rule.scope;
        size_t sl = strlen(scope);
        const char *name = strrchr(r->path, '/');
        if (r->upstream != i || !r->unary || r->rule.internal || sl < 5 ||
            strcmp(scope + sl - 5, ":read") != 0 || !name)
            continue;
        if (strncmp(name + 1, "Get", 3) == 0 || strncmp(name + 1, "List", 4) == 0)
            out[(*n)++] = r->path;
    }
    return out;
}

int gw_upstreams_open(const gw_routes_t *routes, size_t max_message_bytes, size_t n_proxy,
                      gw_upstreams_t **out, char *err, size_t errlen)
{
    *out = NULL;
    size_t n = gw_routes_upstream_count(routes);
    gw_upstreams_t *u = mem_calloc(1, sizeof(*u));
    u->u = mem_calloc(n, sizeof(*u->u));
    u->n = n;
    u->n_proxy = n_proxy ? n_proxy : 1;
    u->routes = routes;
    pthread_mutex_init(&u->mu, NULL);
    pthread_cond_init(&u->cv, NULL);
    cfg_var_t *vars = mem_calloc(n + 1, sizeof(*vars));
    bool rr = false;
    char **names = mem_calloc(n, sizeof(*names));
    u->identity = -1;
    for (size_t i = 0; i < n; i++) {
        u->u[i].name = mem_strdup(gw_routes_upstream_name(routes, i));
        atomic_init(&u->u[i].last, -1);
        if (strcmp(u->u[i].name, "identity") == 0)
            u->identity = (int)i;
        names[i] = mem_printf("ONCEIOT_%s_ADDR", u->u[i].name);
        for (char *p = names[i]; *p; p++)
            *p = (char)toupper((unsigned char)*p);
        vars[i] = (cfg_var_t){
            names[i], CFG_ADDR, NULL,          true,
            0,        0,        &u->u[i].addr, "address of an upstream service, host:port"};
    }
    vars[n] = (cfg_var_t){"ONCEIOT_UPSTREAM_ROUND_ROBIN",
                          CFG_BOOL,
                          "false",
                          false,
                          0,
                          0,
                          &rr,
                          "spread proxied calls over every address of an upstream (round robin; "
                          "the manifests set it with headless Services)"};
    int rc = cfg_load(vars, n + 1, err, errlen);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = rpc_channel_new(u->u[i].addr, max_message_bytes, &u->u[i].ch);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        u->u[i].proxy = mem_calloc(u->n_proxy, sizeof(grpc_channel *));
        size_t n_retry;
        const char **retry = upstreams__retry_methods(routes, i, &n_retry);
        for (size_t k = 0; k < u->n_proxy; k++)
            u->u[i].proxy[k] =
                upstreams__proxy_channel(u->u[i].addr, max_message_bytes, retry, n_retry, rr);
        mem_free(retry);
    }
    for (size_t i = 0; i < n; i++)
        mem_free(names[i]);
    mem_free(names);
    mem_free(vars);
    if (rc < 0) {
        gw_upstreams_free(u);
        return rc;
    }
    *out = u;
    return 0;
}

/* One Check("") on an upstream: 1 SERVING, 2 NOT_SERVING (or unreachable). */
static int upstreams__check(gw_upstream_t *up, int timeout_ms)
{
    arena_t *a = arena_new();
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = "";
    rpc_call_opts_t opts = {.timeout_ms = timeout_ms};
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    int rc = rpc_unary(up->ch, "/grpc.health.v1.Health/Check", &req.base,
                       &grpc__health__v1__health_check_response__descriptor, a, &opts, &resp, &st);
    int out = rc == 0 && ((Grpc__Health__V1__HealthCheckResponse *)resp)->status ==
                             GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                  ? RPC_HEALTH_SERVING
                  : RPC_HEALTH_NOT_SERVING;
    arena_free(a);
    return out;
}

/* The upstream is back: its channels reconnect now rather than when their
 * connect backoff (grown while it was down) ends, so calls waiting for them
 * (wait-for-ready) go through at once. */
static void upstreams__reconnect(gw_upstreams_t *u, gw_upstream_t *up)
{
    for (size_t k = 0; k < u->n_proxy; k++) {
        grpc_channel_reset_connect_backoff(up->proxy[k]);
        (void)grpc_channel_check_connectivity_state(up->proxy[k], 1);
    }
}

/* Sets the gateway's health for the services of upstream i. */
static void upstreams__mirror(gw_upstreams_t *u, size_t i, int st)
{
    for (size_t k = 0; k < gw_routes_service_count(u->routes); k++) {
        size_t up;
        const char *name = gw_routes_service_name(u->routes, k, &up);
        if (up == i)
            rpc_server_set_health(u->srv, name, (rpc_health_t)st);
    }
}

static int64_t upstreams__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Checks upstream i and sets the health of its services at the gateway.
 * Returns the status seen. */
static int upstreams__check_one(gw_upstreams_t *u, size_t i)
{
    gw_upstream_t *up = &u->u[i];
    int last = atomic_load(&up->last);
    /* A down upstream's health channel is in backoff too: without the
     * reset, the check would fail fast until the backoff ends. */
    if (last != RPC_HEALTH_SERVING)
        grpc_channel_reset_connect_backoff(rpc_channel_grpc(up->ch));
    int st = upstreams__check(up, last == RPC_HEALTH_SERVING || u->interval_ms < GW_DOWN_CHECK_MS
                                      ? u->interval_ms
                                      : GW_DOWN_CHECK_MS);
    if (st != last) {
        log_rec_t r;
        log_begin(&r, st == RPC_HEALTH_SERVING ? LOG_INFO : LOG_WARN, "upstream_health");
        log_str(&r, "upstream", up->name);
        log_str(&r, "addr", up->addr);
        log_str(&r, "status", st == RPC_HEALTH_SERVING ? "SERVING" : "NOT_SERVING");
        log_end(&r);
        if (st == RPC_HEALTH_SERVING) {
            upstreams__reconnect(u, up);
            if ((int)i == u->identity && u->auth)
                gw_auth_refresh(u->auth); /* new keys or revocations, at once */
        }
        atomic_store(&up->last, st);
    }
    upstreams__mirror(u, i, st);
    return st;
}

/* Sets the gateway's own health: ready means a caller can be authenticated,
 * identity answers and its verification keys are here. Returns it. */
static bool upstreams__readiness(gw_upstreams_t *u)
{
    bool ready = (u->identity < 0 || atomic_load(&u->u[u->identity].last) == RPC_HEALTH_SERVING) &&
                 (!u->auth || gw_auth_ready(u->auth));
    if (ready != u->ready) {
        log_msg(
            ready ? LOG_INFO : LOG_WARN, "gateway_health", "%s",
            ready ? "SERVING: callers can be authenticated"
                  : "NOT_SERVING: callers cannot be authenticated (identity or its keys missing)");
        u->ready = ready;
    }
    rpc_server_set_health(u->srv, "", ready ? RPC_HEALTH_SERVING : RPC_HEALTH_NOT_SERVING);
    return ready;
}

/* Checks a SERVING upstream every interval and one that is not every
 * GW_RECOVERY_POLL_MS (whichever is shorter), so an upstream that comes back
 * is seen within about that; readiness is re-evaluated just as often while
 * the gateway is not ready. */
static void *upstreams__watch_main(void *arg)
{
    gw_upstreams_t *u = arg;
    int64_t interval = (int64_t)u->interval_ms * 1000000;
    int64_t poll = (int64_t)GW_RECOVERY_POLL_MS * 1000000;
    if (poll > interval)
        poll = interval;
    int64_t *next = mem_calloc(u->n, sizeof(*next));
    pthread_mutex_lock(&u->mu);
    while (!u->stopping) {
        pthread_mutex_unlock(&u->mu);
        int64_t wake = INT64_MAX;
        for (size_t i = 0; i < u->n; i++) {
            if (next[i] <= upstreams__now_ns()) {
                int st = upstreams__check_one(u, i);
                next[i] = upstreams__now_ns() + (st == RPC_HEALTH_SERVING ? interval : poll);
                /* Ready as soon as identity and its keys are, not after the
                 * checks of the other upstreams. */
                if (!u->ready)
                    upstreams__readiness(u);
            }
            if (next[i] < wake)
                wake = next[i];
        }
        if (!upstreams__readiness(u) && upstreams__now_ns() + poll < wake)
            wake = upstreams__now_ns() + poll;
        int64_t wait_ns = wake - upstreams__now_ns();
        pthread_mutex_lock(&u->mu);
        if (wait_ns > 0 && !u->stopping) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            int64_t ns = ts.tv_nsec + wait_ns;
            ts.tv_sec += ns / 1000000000;
            ts.tv_nsec = ns % 1000000000;
            pthread_cond_timedwait(&u->cv, &u->mu, &ts);
        }
    }
    pthread_mutex_unlock(&u->mu);
    mem_free(next);
    return NULL;
}

void gw_upstreams_watch(gw_upstreams_t *u, rpc_server_t *srv, gw_auth_t *auth, int interval_ms)
{
    u->srv = srv;
    u->auth = auth;
    u->interval_ms = interval_ms;
    /* Not ready until the first checks say so; the server would otherwise
     * start every name SERVING. */
    rpc_server_set_health(srv, "", RPC_HEALTH_NOT_SERVING);
    for (size_t i = 0; i < u->n; i++)
        upstreams__mirror(u, i, RPC_HEALTH_NOT_SERVING);
    u->watching = pthread_create(&u->thread, NULL, upstreams__watch_main, u) == 0;
}

uint32_t gw_upstreams_call_flags(const gw_upstreams_t *u, size_t i, gpr_timespec deadline)
{
    if (atomic_load(&u->u[i].last) == RPC_HEALTH_NOT_SERVING)
        return 0; /* known down: say so at once */
    if (gpr_time_cmp(deadline, gpr_inf_future(deadline.clock_type)) == 0)
        return 0; /* nothing would bound the wait */
    return GRPC_INITIAL_METADATA_WAIT_FOR_READY |
           GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET;
}

void gw_upstreams_stop(gw_upstreams_t *u)
{
    if (!u || !u->watching)
        return;
    pthread_mutex_lock(&u->mu);
    u->stopping = true;
    pthread_cond_broadcast(&u->cv);
    pthread_mutex_unlock(&u->mu);
    pthread_join(u->thread, NULL);
    u->watching = false;
}

void gw_upstreams_free(gw_upstreams_t *u)
{
    if (!u)
        return;
    gw_upstreams_stop(u);
    for (size_t i = 0; i < u->n; i++) {
        for (size_t k = 0; u->u[i].proxy && k < u->n_proxy; k++)
            grpc_channel_destroy(u->u[i].proxy[k]);
        mem_free(u->u[i].proxy);
        rpc_channel_free(u->u[i].ch);
        mem_free(u->u[i].name);
    }
    mem_free(u->u);
    pthread_mutex_destroy(&u->mu);
    pthread_cond_destroy(&u->cv);
    mem_free(u);
}

rpc_channel_t *gw_upstreams_channel(const gw_upstreams_t *u, size_t i)
{
    return u->u[i].ch;
}

grpc_channel *gw_upstreams_proxy_channel(gw_upstreams_t *u, size_t i)
{
    gw_upstream_t *up = &u->u[i];
    return up->proxy[atomic_fetch_add_explicit(&up->next, 1, memory_order_relaxed) % u->n_proxy];
}

const char *gw_upstreams_name(const gw_upstreams_t *u, size_t i)
{
    return u->u[i].name;
}

rpc_channel_t *gw_upstreams_find(const gw_upstreams_t *u, const char *name)
{
    for (size_t i = 0; i < u->n; i++)
        if (strcmp(u->u[i].name, name) == 0)
            return u->u[i].ch;
    return NULL;
}
