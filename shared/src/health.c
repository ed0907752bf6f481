/* grpc.health.v1.Health: Check answers from a table of statuses on the I/O
 * thread; Watch streams every change. The table is filled by the server
 * (registered services) and kept true by svc.c (database reachability). */
#include "server_int.h"

#include "grpc/health/v1/health.pb-c.h"

#include <string.h>
#include <time.h>

typedef struct srv_health_entry {
    char *name;
    rpc_health_t status;
    bool held; /* set by the owner before the start: the start leaves it alone */
} srv_health_entry_t;

struct srv_health {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* broadcast on every change */
    srv_health_entry_t *entries;
    size_t n;
    uint64_t version; /* bumped on every change */
    bool shutdown;    /* Watch streams end */
    bool started;     /* srv__health_start ran */
};

srv_health_t *srv__health_new(void)
{
    srv_health_t *h = mem_calloc(1, sizeof(*h));
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    srv__health_add(h, "");
    return h;
}

void srv__health_free(srv_health_t *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->n; i++)
        mem_free(h->entries[i].name);
    mem_free(h->entries);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    mem_free(h);
}

/* Caller holds h->mu. */
static srv_health_entry_t *health__find(srv_health_t *h, const char *name)
{
    for (size_t i = 0; i < h->n; i++)
        if (strcmp(h->entries[i].name, name) == 0)
            return &h->entries[i];
    return NULL;
}

void srv__health_add(srv_health_t *h, const char *service)
{
    pthread_mutex_lock(&h->mu);
    if (!health__find(h, service)) {
        h->entries = mem_realloc(h->entries, (h->n + 1) * sizeof(*h->entries));
        h->entries[h->n].name = mem_strdup(service);
        h->entries[h->n].status = RPC_HEALTH_NOT_SERVING;
        h->entries[h->n].held = false;
        h->n++;
        h->version++;
    }
    pthread_mutex_unlock(&h->mu);
}

void srv__health_set(srv_health_t *h, const char *service, rpc_health_t st)
{
    pthread_mutex_lock(&h->mu);
    srv_health_entry_t *e = health__find(h, service);
    if (!e) {
        h->entries = mem_realloc(h->entries, (h->n + 1) * sizeof(*h->entries));
        e = &h->entries[h->n++];
        e->name = mem_strdup(service);
        e->status = RPC_HEALTH_UNKNOWN;
        e->held = false;
    }
    if (!h->started)
        e->held = true;
    if (e->status != st) {
        e->status = st;
        h->version++;
        pthread_cond_broadcast(&h->cv);
    }
    pthread_mutex_unlock(&h->mu);
}

void srv__health_set_all(srv_health_t *h, rpc_health_t st)
{
    pthread_mutex_lock(&h->mu);
    for (size_t i = 0; i < h->n; i++) {
        if (!h->started)
            h->entries[i].held = true;
        if (h->entries[i].status != st) {
            h->entries[i].status = st;
            h->version++;
        }
    }
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

void srv__health_start(srv_health_t *h)
{
    pthread_mutex_lock(&h->mu);
    h->started = true;
    for (size_t i = 0; i < h->n; i++) {
        if (!h->entries[i].held && h->entries[i].status != RPC_HEALTH_SERVING) {
            h->entries[i].status = RPC_HEALTH_SERVING;
            h->version++;
        }
    }
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

void srv__health_shutdown(srv_health_t *h)
{
    srv__health_set_all(h, RPC_HEALTH_NOT_SERVING);
    pthread_mutex_lock(&h->mu);
    h->shutdown = true;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

/* The status of a name, or -1 when unknown. Caller holds h->mu. */
static int health__status(srv_health_t *h, const char *name)
{
    srv_health_entry_t *e = health__find(h, name);
    return e ? (int)e->status : -1;
}

static int health__check(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    srv_health_t *h = rpc_call_ctx(call);
    const Grpc__Health__V1__HealthCheckRequest *r = (const void *)req;
    pthread_mutex_lock(&h->mu);
    int st = health__status(h, r->service);
    pthread_mutex_unlock(&h->mu);
    if (st < 0)
        return rpc_fail(call, ERR_NOT_FOUND, "unknown service \"%s\"", r->service);
    Grpc__Health__V1__HealthCheckResponse *out = arena_alloc(rpc_call_arena(call), sizeof(*out));
    grpc__health__v1__health_check_response__init(out);
    out->status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)st;
    *resp = &out->base;
    return 0;
}

static int health__watch(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    (void)resp;
    srv_health_t *h = rpc_call_ctx(call);
    const Grpc__Health__V1__HealthCheckRequest *r = (const void *)req;
    int last = -2;
    pthread_mutex_lock(&h->mu);
    for (;;) {
        int st = health__status(h, r->service);
        if (st < 0)
            st = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
        bool done = h->shutdown;
        if (st != last) {
            pthread_mutex_unlock(&h->mu);
            Grpc__Health__V1__HealthCheckResponse out =
                GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
            out.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)st;
            if (rpc_send(call, &out.base) < 0)
                return ERR_CANCELLED;
            last = st;
            pthread_mutex_lock(&h->mu);
            continue; /* re-read: it may have changed while sending */
        }
        if (done || rpc_call_cancelled(call))
            break;
        /* Wake at least once a second to notice a cancelled client. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&h->cv, &h->mu, &ts);
    }
    pthread_mutex_unlock(&h->mu);
    return rpc_call_cancelled(call) ? ERR_CANCELLED : 0;
}

static const rpc_method_impl_t health__methods[] = {
    {"Check", health__check},
    {"Watch", health__watch},
};

const rpc_service_impl_t srv__health_service = {
    .descriptor = &grpc__health__v1__health__descriptor,
    .methods = health__methods,
    .n_methods = 2,
};
