/* One persistent channel per upstream service, and a thread that keeps the
 * gateway's health for each upstream's services true. */
#include "gateway.h"

#include "grpc/health/v1/health.pb-c.h"
#include "onceiot/config.h"
#include "onceiot/log.h"
#include "onceiot/mem.h"

#include <ctype.h>
#include <grpc/grpc_security.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

typedef struct gw_upstream {
    char *name;           /* "sims" */
    const char *addr;     /* from ONCEIOT_SIMS_ADDR (points into the environment) */
    rpc_channel_t *ch;    /* persistent HTTP/2 channel */
    grpc_channel **proxy; /* n_proxy channels for proxied calls */
    atomic_uint next;     /* round-robin position in proxy */
    int last;             /* last health seen, -1 before the first check */
} gw_upstream_t;

struct gw_upstreams {
    gw_upstream_t *u;
    size_t n;
    size_t n_proxy;
    const gw_routes_t *routes;
    rpc_server_t *srv;
    int interval_ms;
    pthread_t thread;
    bool watching;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping; /* guarded by mu */
};

/* A channel with a subchannel pool of its own: channels to one address
 * otherwise share the global pool and so one connection. Retries are off
 * (the client decides), message limits are the gateway's. */
static grpc_channel *upstreams__proxy_channel(const char *addr, size_t max_message_bytes)
{
    grpc_arg args[] = {
        {GRPC_ARG_INTEGER,
         GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
         {.integer = (int)max_message_bytes}},
        {GRPC_ARG_INTEGER, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, {.integer = (int)max_message_bytes}},
        {GRPC_ARG_INTEGER, GRPC_ARG_ENABLE_RETRIES, {.integer = 0}},
        {GRPC_ARG_INTEGER, GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, {.integer = 1}},
    };
    grpc_channel_args cargs = {sizeof(args) / sizeof(args[0]), args};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(addr, creds, &cargs);
    grpc_channel_credentials_release(creds);
    return ch;
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
    cfg_var_t *vars = mem_calloc(n, sizeof(*vars));
    char **names = mem_calloc(n, sizeof(*names));
    for (size_t i = 0; i < n; i++) {
        u->u[i].name = mem_strdup(gw_routes_upstream_name(routes, i));
        u->u[i].last = -1;
        names[i] = mem_printf("ONCEIOT_%s_ADDR", u->u[i].name);
        for (char *p = names[i]; *p; p++)
            *p = (char)toupper((unsigned char)*p);
        vars[i] = (cfg_var_t){
            names[i], CFG_ADDR, NULL,          true,
            0,        0,        &u->u[i].addr, "address of an upstream service, host:port"};
    }
    int rc = cfg_load(vars, n, err, errlen);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = rpc_channel_new(u->u[i].addr, max_message_bytes, &u->u[i].ch);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        u->u[i].proxy = mem_calloc(u->n_proxy, sizeof(grpc_channel *));
        for (size_t k = 0; k < u->n_proxy; k++)
            u->u[i].proxy[k] = upstreams__proxy_channel(u->u[i].addr, max_message_bytes);
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

/* Checks every upstream each interval and sets the health of its services
 * at the gateway, every time: the server marks all names SERVING when it
 * starts, and this corrects it within one interval. */
static void *upstreams__watch_main(void *arg)
{
    gw_upstreams_t *u = arg;
    pthread_mutex_lock(&u->mu);
    while (!u->stopping) {
        pthread_mutex_unlock(&u->mu);
        for (size_t i = 0; i < u->n; i++) {
            int st = upstreams__check(&u->u[i], u->interval_ms);
            if (st != u->u[i].last) {
                log_rec_t r;
                log_begin(&r, st == RPC_HEALTH_SERVING ? LOG_INFO : LOG_WARN, "upstream_health");
                log_str(&r, "upstream", u->u[i].name);
                log_str(&r, "addr", u->u[i].addr);
                log_str(&r, "status", st == RPC_HEALTH_SERVING ? "SERVING" : "NOT_SERVING");
                log_end(&r);
                u->u[i].last = st;
            }
            for (size_t k = 0; k < gw_routes_service_count(u->routes); k++) {
                size_t up;
                const char *name = gw_routes_service_name(u->routes, k, &up);
                if (up == i)
                    rpc_server_set_health(u->srv, name, (rpc_health_t)st);
            }
        }
        pthread_mutex_lock(&u->mu);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t ns = ts.tv_nsec + (int64_t)u->interval_ms * 1000000;
        ts.tv_sec += ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        if (!u->stopping)
            pthread_cond_timedwait(&u->cv, &u->mu, &ts);
    }
    pthread_mutex_unlock(&u->mu);
    return NULL;
}

void gw_upstreams_watch(gw_upstreams_t *u, rpc_server_t *srv, int interval_ms)
{
    u->srv = srv;
    u->interval_ms = interval_ms;
    u->watching = pthread_create(&u->thread, NULL, upstreams__watch_main, u) == 0;
}

void gw_upstreams_free(gw_upstreams_t *u)
{
    if (!u)
        return;
    if (u->watching) {
        pthread_mutex_lock(&u->mu);
        u->stopping = true;
        pthread_cond_broadcast(&u->cv);
        pthread_mutex_unlock(&u->mu);
        pthread_join(u->thread, NULL);
    }
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
