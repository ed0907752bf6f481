/* Calls to the sims service: the service principal, ICCID resolution with
 * its cache, and the quota dispatcher's ApplyUsage. */
#include "onceiot/log.h"
#include "usage.h"

#include <stdlib.h>
#include <string.h>

#define SIMS_PATH "/onceiot.sims.v1.SimService/"

void usage_service_principal(const usage_state_t *st, const char *method, arena_t *a,
                             rpc_md_t md[2])
{
    /* Checked at start (usage's init): the key for sims is there. */
    if (svc_sign_as_service(st->svc, "sims", method, a, md) < 0)
        abort();
}

int usage_sims_call(const usage_state_t *st, rpc_call_t *parent, int64_t timeout_ms,
                    const char *method, const ProtobufCMessage *req,
                    const ProtobufCMessageDescriptor *resp_desc, arena_t *a,
                    ProtobufCMessage **resp, rpc_status_t *status)
{
    const char *path = arena_printf(a, SIMS_PATH "%s", method);
    rpc_md_t *md = arena_alloc(a, 2 * sizeof(*md));
    usage_service_principal(st, path, a, md);
    rpc_call_opts_t o = {
        .timeout_ms = parent ? 0 : timeout_ms, .parent = parent, .metadata = md, .n_metadata = 2};
    return rpc_unary(st->sims, path, req, resp_desc, a, &o, resp, status);
}

/* ---- the ICCID cache: open addressing, linear probing ---- */

typedef struct usage_slot {
    char iccid[24]; /* "" when empty */
    usage_sim_t sim;
} usage_slot_t;

struct usage_cache {
    pthread_rwlock_t lock;
    usage_slot_t *slots;
    size_t cap; /* a power of two, twice max */
    size_t max, used;
};

usage_cache_t *usage_cache_new(size_t max_entries)
{
    usage_cache_t *c = mem_calloc(1, sizeof(*c));
    pthread_rwlock_init(&c->lock, NULL);
    c->max = max_entries;
    c->cap = 16;
    while (c->cap < 2 * max_entries)
        c->cap <<= 1;
    c->slots = mem_calloc(c->cap, sizeof(*c->slots));
    return c;
}

void usage_cache_free(usage_cache_t *c)
{
    if (!c)
        return;
    pthread_rwlock_destroy(&c->lock);
    mem_free(c->slots);
    mem_free(c);
}

static size_t usage__hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return (size_t)h;
}

static bool usage__cache_get(usage_cache_t *c, const char *iccid, usage_sim_t *out)
{
    bool found = false;
    pthread_rwlock_rdlock(&c->lock);
    for (size_t i = usage__hash(iccid) & (c->cap - 1);; i = (i + 1) & (c->cap - 1)) {
        if (!c->slots[i].iccid[0])
            break;
        if (strcmp(c->slots[i].iccid, iccid) == 0) {
            *out = c->slots[i].sim;
            found = true;
            break;
        }
    }
    pthread_rwlock_unlock(&c->lock);
    return found;
}

static void usage__cache_put(usage_cache_t *c, const char *iccid, usage_sim_t sim)
{
    if (strlen(iccid) >= sizeof(c->slots[0].iccid))
        return;
    pthread_rwlock_wrlock(&c->lock);
    if (c->used >= c->max) {
        memset(c->slots, 0, c->cap * sizeof(*c->slots));
        c->used = 0;
    }
    for (size_t i = usage__hash(iccid) & (c->cap - 1);; i = (i + 1) & (c->cap - 1)) {
        if (!c->slots[i].iccid[0]) {
            strcpy(c->slots[i].iccid, iccid);
            c->slots[i].sim = sim;
            c->used++;
            break;
        }
        if (strcmp(c->slots[i].iccid, iccid) == 0)
            break;
    }
    pthread_rwlock_unlock(&c->lock);
}

static int usage__cmp_resolved(const void *x, const void *y)
{
    const Onceiot__Sims__V1__ResolvedSim *a = *(Onceiot__Sims__V1__ResolvedSim *const *)x;
    const Onceiot__Sims__V1__ResolvedSim *b = *(Onceiot__Sims__V1__ResolvedSim *const *)y;
    return strcmp(a->iccid, b->iccid);
}

int usage_resolve_or_status(usage_ctx_t *cx, const char *const *iccids, size_t n, usage_sim_t *out)
{
    const char **missing = arena_alloc(cx->a, (n + 1) * sizeof(char *));
    size_t n_missing = 0;
    for (size_t i = 0; i < n; i++) {
        out[i] = (usage_sim_t){0, 0};
        if (!usage__cache_get(cx->st->cache, iccids[i], &out[i]))
            missing[n_missing++] = iccids[i];
    }
    if (n_missing == 0)
        return 0;
    Onceiot__Sims__V1__ResolveSimsRequest req = ONCEIOT__SIMS__V1__RESOLVE_SIMS_REQUEST__INIT;
    req.iccids = (char **)missing;
    req.n_iccids = n_missing;
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    int rc =
        usage_sims_call(cx->st, cx->call, 0, "ResolveSims", &req.base,
                        &onceiot__sims__v1__resolve_sims_response__descriptor, cx->a, &resp, &st);
    if (rc < 0) {
        log_msg(LOG_WARN, "resolve_failed", "sims ResolveSims: %s %s", err_grpc_name(st.code),
                st.message);
        return rpc_fail(cx->call, ERR_UNAVAILABLE,
                        "cannot resolve ICCIDs now (sims: %s); retry the batch",
                        err_grpc_name(st.code));
    }
    const Onceiot__Sims__V1__ResolveSimsResponse *r = (const void *)resp;
    for (size_t k = 0; k < r->n_sims; k++)
        usage__cache_put(cx->st->cache, r->sims[k]->iccid,
                         (usage_sim_t){r->sims[k]->sim_id, r->sims[k]->organization_id});
    /* From the answer itself, not the cache: a full cache may just have been
     * cleared. */
    if (r->n_sims == 0)
        return 0; /* none known: every missing one stays unknown */
    qsort(r->sims, r->n_sims, sizeof(*r->sims), usage__cmp_resolved);
    for (size_t i = 0; i < n; i++) {
        if (out[i].org != 0)
            continue;
        Onceiot__Sims__V1__ResolvedSim key = ONCEIOT__SIMS__V1__RESOLVED_SIM__INIT, *kp = &key;
        key.iccid = (char *)iccids[i];
        Onceiot__Sims__V1__ResolvedSim **hit =
            bsearch(&kp, r->sims, r->n_sims, sizeof(*r->sims), usage__cmp_resolved);
        if (hit)
            out[i] = (usage_sim_t){(*hit)->sim_id, (*hit)->organization_id};
    }
    return 0;
}

int usage_sim_or_status(usage_ctx_t *cx, const char *iccid, usage_sim_t *out)
{
    int rc = usage_resolve_or_status(cx, &iccid, 1, out);
    if (rc < 0)
        return rc;
    if (out->org == 0 || (cx->org && out->org != cx->who->organization_id))
        return rpc_fail(cx->call, ERR_NOT_FOUND, "no SIM %s", iccid);
    return 0;
}

/* Codes after which the same request may succeed later. */
static bool usage__transient(grpc_status_code c)
{
    switch (c) {
    case GRPC_STATUS_UNAVAILABLE:
    case GRPC_STATUS_DEADLINE_EXCEEDED:
    case GRPC_STATUS_ABORTED:
    case GRPC_STATUS_RESOURCE_EXHAUSTED:
    case GRPC_STATUS_CANCELLED:
    case GRPC_STATUS_INTERNAL:
    case GRPC_STATUS_UNKNOWN:
    case GRPC_STATUS_UNAUTHENTICATED: /* a key rotation in progress */
        return true;
    default:
        return false;
    }
}

/* The call's deadline stays well inside the outbox lease. */
#define APPLY_TIMEOUT_MS 10000

outbox_verdict_t usage_apply_quota(void *ctx, const outbox_msg_t *msg, arena_t *a, const char **why)
{
    const usage_state_t *st = ctx;
    Onceiot__Sims__V1__ApplyUsageRequest *req =
        onceiot__sims__v1__apply_usage_request__unpack(arena_allocator(a), msg->len, msg->payload);
    if (!req) {
        *why = "the payload is not an ApplyUsageRequest";
        return OUTBOX_FAILED;
    }
    ProtobufCMessage *resp = NULL;
    rpc_status_t s;
    int rc = usage_sims_call(st, NULL, APPLY_TIMEOUT_MS, "ApplyUsage", &req->base,
                             &onceiot__sims__v1__apply_usage_response__descriptor, a, &resp, &s);
    if (rc == 0) {
        log_rec_t r;
        log_begin(&r, LOG_DEBUG, "quota_applied");
        log_str(&r, "batch_id", msg->key);
        log_int(&r, "sims", (long long)req->n_items);
        log_int(&r, "lag_ms", msg->age_ms);
        log_bool(&r, "replayed", ((Onceiot__Sims__V1__ApplyUsageResponse *)resp)->replayed);
        log_end(&r);
        return OUTBOX_DONE;
    }
    *why = arena_printf(a, "sims ApplyUsage: %s %s", err_grpc_name(s.code), s.message);
    return usage__transient(s.code) ? OUTBOX_RETRY : OUTBOX_FAILED;
}
