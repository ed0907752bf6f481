/* Who is calling, and may they: login tokens verified locally with the keys
 * identity publishes (polled in the background with the revocations), API
 * keys checked by identity's Authenticate (asynchronously, on the server's
 * completion queue) and cached briefly, and the rule check. */
#include "gateway.h"

#include "identity/v1/identity.pb-c.h"
#include "onceiot/log.h"
#include "onceiot/mem.h"
#include "onceiot/token.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define AUTH_METHOD  "/onceiot.identity.v1.IdentityService/Authenticate"
#define KEYS_METHOD  "/onceiot.identity.v1.IdentityService/GetVerificationKeys"
#define AUTH_PROBE   4
#define NEGATIVE_TTL 1 /* seconds a refused key stays refused without asking */

typedef struct auth_revocation {
    int64_t user_id;
    int64_t not_before_ms; /* unix ms: tokens issued at or before it are refused */
} auth_revocation_t;

/* One published key set; replaced whole, freed when its last reader is done. */
typedef struct auth_keys {
    atomic_int refs;
    token_key_t *keys;
    size_t n_keys;
    auth_revocation_t *revocations; /* sorted by user_id */
    size_t n_revocations;
    int64_t *revoked_keys; /* API key ids, sorted */
    size_t n_revoked_keys;
} auth_keys_t;

typedef struct auth_entry {
    uint8_t hash[32];   /* keyed BLAKE2b of the secret; the secret is never kept */
    int64_t expires_ns; /* monotonic; 0: empty */
    uint8_t *packed;    /* the principal; NULL for a refused key */
    size_t len;
} auth_entry_t;

struct gw_auth {
    gw_auth_opts_t o;
    uint8_t hash_key[crypto_generichash_KEYBYTES]; /* random per process */

    pthread_mutex_t mu; /* guards keys, cache and stopping */
    pthread_cond_t cv;
    auth_keys_t *keys; /* NULL until identity first answers */
    auth_entry_t *cache;
    size_t cache_mask;
    bool stopping;
    bool refresh; /* fetch now instead of waiting out the interval */
    pthread_t thread;
    bool started;
    bool fetch_failing; /* only the polling thread touches it */
};

static int64_t auth__mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void auth__keys_unref(auth_keys_t *k)
{
    if (!k || atomic_fetch_sub(&k->refs, 1) != 1)
        return;
    mem_free(k->keys);
    mem_free(k->revocations);
    mem_free(k->revoked_keys);
    mem_free(k);
}

gw_auth_t *gw_auth_new(const gw_auth_opts_t *opts)
{
    gw_auth_t *a = mem_calloc(1, sizeof(*a));
    a->o = *opts;
    randombytes_buf(a->hash_key, sizeof(a->hash_key));
    size_t n = AUTH_PROBE;
    while (n < opts->cache_entries)
        n <<= 1;
    a->cache = mem_calloc(n, sizeof(*a->cache));
    a->cache_mask = n - 1;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    return a;
}

void gw_auth_free(gw_auth_t *a)
{
    if (!a)
        return;
    if (a->started) {
        pthread_mutex_lock(&a->mu);
        a->stopping = true;
        pthread_cond_broadcast(&a->cv);
        pthread_mutex_unlock(&a->mu);
        pthread_join(a->thread, NULL);
    }
    auth__keys_unref(a->keys);
    for (size_t i = 0; i <= a->cache_mask; i++)
        mem_free(a->cache[i].packed);
    mem_free(a->cache);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    mem_free(a);
}

/* The gateway's own principal for a call to identity, signed for method. */
static void auth__service_md(const gw_auth_t *a, const char *method, arena_t *arena, rpc_md_t md[2])
{
    principal_t *p = arena_alloc(arena, sizeof(*p));
    onceiot__common__v1__principal__init(p);
    p->credential = "service:gateway";
    principal_sign(a->o.key, p, method, arena, md);
}

/* ---- verification keys ---- */

static int auth__rev_cmp(const void *x, const void *y)
{
    const auth_revocation_t *a = x, *b = y;
    return a->user_id < b->user_id ? -1 : a->user_id > b->user_id;
}

static int auth__id_cmp(const void *x, const void *y)
{
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return a < b ? -1 : a > b;
}

/* Fetches the key set once. Returns 0 and the suggested refresh in seconds. */
static int auth__fetch_keys(gw_auth_t *a, int *refresh_s)
{
    arena_t *arena = arena_new();
    rpc_md_t md[2];
    auth__service_md(a, KEYS_METHOD, arena, md);
    rpc_call_opts_t opts = {.timeout_ms = 2000, .metadata = md, .n_metadata = 2};
    Onceiot__Identity__V1__GetVerificationKeysRequest req =
        ONCEIOT__IDENTITY__V1__GET_VERIFICATION_KEYS_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    rpc_status_t st;
    int rc = rpc_unary(a->o.identity, KEYS_METHOD, &req.base,
                       &onceiot__identity__v1__get_verification_keys_response__descriptor, arena,
                       &opts, &out, &st);
    if (rc < 0) {
        /* Logged once per outage, not on every retry. */
        if (!a->fetch_failing)
            log_msg(LOG_WARN, "verification_keys_failed",
                    "identity's GetVerificationKeys: %s: %s; retrying every second",
                    err_grpc_name(st.code), st.message);
        a->fetch_failing = true;
        goto done;
    }
    a->fetch_failing = false;
    const Onceiot__Identity__V1__GetVerificationKeysResponse *r = (const void *)out;
    auth_keys_t *k = mem_calloc(1, sizeof(*k));
    atomic_init(&k->refs, 1);
    k->keys = mem_calloc(r->n_keys ? r->n_keys : 1, sizeof(*k->keys));
    for (size_t i = 0; i < r->n_keys; i++) {
        const Onceiot__Identity__V1__VerificationKey *vk = r->keys[i];
        if (vk->public_key.len != 32 || !vk->kid || strlen(vk->kid) >= sizeof(k->keys[0].kid))
            continue; /* not a key we can use; its tokens fail as unknown */
        snprintf(k->keys[k->n_keys].kid, sizeof(k->keys[0].kid), "%s", vk->kid);
        memcpy(k->keys[k->n_keys].public_key, vk->public_key.data, 32);
        k->n_keys++;
    }
    k->revocations = mem_calloc(r->n_revocations ? r->n_revocations : 1, sizeof(auth_revocation_t));
    for (size_t i = 0; i < r->n_revocations; i++) {
        k->revocations[i].user_id = r->revocations[i]->user_id;
        const Google__Protobuf__Timestamp *nb = r->revocations[i]->not_before;
        k->revocations[i].not_before_ms = nb ? nb->seconds * 1000 + nb->nanos / 1000000 : 0;
    }
    k->n_revocations = r->n_revocations;
    qsort(k->revocations, k->n_revocations, sizeof(*k->revocations), auth__rev_cmp);
    k->n_revoked_keys = r->n_revoked_api_keys;
    k->revoked_keys = mem_calloc(k->n_revoked_keys ? k->n_revoked_keys : 1, sizeof(int64_t));
    if (k->n_revoked_keys)
        memcpy(k->revoked_keys, r->revoked_api_keys, k->n_revoked_keys * sizeof(int64_t));
    qsort(k->revoked_keys, k->n_revoked_keys, sizeof(int64_t), auth__id_cmp);
    *refresh_s = r->refresh_seconds > 0 && r->refresh_seconds <= 300 ? r->refresh_seconds : 5;
    pthread_mutex_lock(&a->mu);
    auth_keys_t *old = a->keys;
    a->keys = k;
    pthread_mutex_unlock(&a->mu);
    if (!old)
        log_msg(LOG_INFO, "verification_keys_loaded", "%zu keys, %zu revocations", k->n_keys,
                k->n_revocations);
    auth__keys_unref(old);
done:
    arena_free(arena);
    return rc;
}

/* Polls identity: every refresh interval once it answers, every second
 * until it does. */
static void *auth__keys_main(void *arg)
{
    gw_auth_t *a = arg;
    pthread_mutex_lock(&a->mu);
    while (!a->stopping) {
        pthread_mutex_unlock(&a->mu);
        int refresh_s = 1;
        if (auth__fetch_keys(a, &refresh_s) < 0)
            refresh_s = 1;
        pthread_mutex_lock(&a->mu);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += refresh_s;
        if (!a->stopping && !a->refresh)
            pthread_cond_timedwait(&a->cv, &a->mu, &ts);
        a->refresh = false;
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

void gw_auth_start(gw_auth_t *a)
{
    a->started = pthread_create(&a->thread, NULL, auth__keys_main, a) == 0;
}

bool gw_auth_ready(gw_auth_t *a)
{
    pthread_mutex_lock(&a->mu);
    bool ready = a->keys != NULL;
    pthread_mutex_unlock(&a->mu);
    return ready;
}

void gw_auth_refresh(gw_auth_t *a)
{
    pthread_mutex_lock(&a->mu);
    a->refresh = true;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

/* The current key set with a reference the caller drops, or NULL. */
static auth_keys_t *auth__keys_ref(gw_auth_t *a)
{
    pthread_mutex_lock(&a->mu);
    auth_keys_t *k = a->keys;
    if (k)
        atomic_fetch_add(&k->refs, 1);
    pthread_mutex_unlock(&a->mu);
    return k;
}

/* The revocation of user_id in k, or NULL. */
static const auth_revocation_t *auth__revocation(const auth_keys_t *k, int64_t user_id)
{
    auth_revocation_t key = {user_id, 0};
    return bsearch(&key, k->revocations, k->n_revocations, sizeof(key), auth__rev_cmp);
}

bool gw_auth_user_revoked(gw_auth_t *a, int64_t user_id, int64_t since_ms)
{
    auth_keys_t *k = auth__keys_ref(a);
    if (!k)
        return false;
    const auth_revocation_t *rev = auth__revocation(k, user_id);
    bool revoked = rev && rev->not_before_ms >= since_ms;
    auth__keys_unref(k);
    return revoked;
}

bool gw_auth_key_revoked(gw_auth_t *a, int64_t key_id)
{
    auth_keys_t *k = auth__keys_ref(a);
    if (!k)
        return false;
    bool revoked =
        bsearch(&key_id, k->revoked_keys, k->n_revoked_keys, sizeof(int64_t), auth__id_cmp) != NULL;
    auth__keys_unref(k);
    return revoked;
}

int gw_auth_token(gw_auth_t *a, const char *token, arena_t *arena, principal_t **out,
                  int64_t *issued_ms, const char **why)
{
    *out = NULL;
    auth_keys_t *k = auth__keys_ref(a);
    if (!k) {
        *why = "login tokens cannot be verified yet (no keys from identity); retry shortly";
        return ERR_UNAUTHENTICATED;
    }
    token_claims_t c;
    int rc = token_verify(k->keys, k->n_keys, token, (int64_t)time(NULL), &c, why);
    if (rc == 0) {
        const auth_revocation_t *rev = auth__revocation(k, c.user_id);
        /* At or before: identity takes a token's time and a revocation's
         * from its database clock in the order of the row lock, so a token
         * of the same millisecond may predate the change. */
        if (rev && c.issued_at_ms <= rev->not_before_ms) {
            *why = "the token was revoked (the user was deactivated or changed password)";
            rc = ERR_UNAUTHENTICATED;
        }
    }
    auth__keys_unref(k);
    if (rc < 0)
        return ERR_UNAUTHENTICATED;
    principal_t *p = arena_alloc(arena, sizeof(*p));
    onceiot__common__v1__principal__init(p);
    p->user_id = c.user_id;
    p->username = arena_strdup(arena, c.username);
    p->organization_id = c.organization_id;
    p->role = c.role;
    p->is_superuser = c.is_superuser;
    /* A login token is the user's own session: every scope, bounded by the
     * user's role (which the rules check separately). */
    p->scopes = arena_alloc(arena, sizeof(char *));
    p->scopes[0] = "admin";
    p->n_scopes = 1;
    p->expires_at = c.expires_at;
    p->credential = "token";
    *out = p;
    *issued_ms = c.issued_at_ms;
    return 0;
}

/* ---- API-key cache ---- */

static void auth__hash(const gw_auth_t *a, const char *secret, uint8_t out[32])
{
    crypto_generichash(out, 32, (const uint8_t *)secret, strlen(secret), a->hash_key,
                       sizeof(a->hash_key));
}

int gw_auth_key_cached(gw_auth_t *a, const char *secret, arena_t *arena, principal_t **out)
{
    *out = NULL;
    uint8_t h[32];
    auth__hash(a, secret, h);
    int64_t now = auth__mono_ns();
    int rc = 0;
    pthread_mutex_lock(&a->mu);
    size_t base = (size_t)h[0] | (size_t)h[1] << 8 | (size_t)h[2] << 16 | (size_t)h[3] << 24;
    for (size_t i = 0; i < AUTH_PROBE; i++) {
        auth_entry_t *e = &a->cache[(base + i) & a->cache_mask];
        if (e->expires_ns <= now || sodium_memcmp(e->hash, h, 32) != 0)
            continue;
        if (!e->packed) {
            rc = ERR_UNAUTHENTICATED;
        } else {
            *out =
                onceiot__common__v1__principal__unpack(arena_allocator(arena), e->len, e->packed);
            rc = *out ? 1 : 0;
        }
        break;
    }
    pthread_mutex_unlock(&a->mu);
    return rc;
}

/* Caches an answer for ttl_s seconds (p NULL: the key was refused). */
static void auth__key_store(gw_auth_t *a, const uint8_t h[32], const principal_t *p, int ttl_s)
{
    if (ttl_s <= 0)
        return;
    uint8_t *packed = NULL;
    size_t len = 0;
    if (p) {
        len = onceiot__common__v1__principal__get_packed_size(p);
        packed = mem_alloc(len ? len : 1);
        onceiot__common__v1__principal__pack(p, packed);
    }
    int64_t now = auth__mono_ns();
    pthread_mutex_lock(&a->mu);
    size_t base = (size_t)h[0] | (size_t)h[1] << 8 | (size_t)h[2] << 16 | (size_t)h[3] << 24;
    auth_entry_t *slot = NULL;
    for (size_t i = 0; i < AUTH_PROBE; i++) {
        auth_entry_t *e = &a->cache[(base + i) & a->cache_mask];
        if (sodium_memcmp(e->hash, h, 32) == 0 || e->expires_ns <= now) {
            slot = e;
            break;
        }
        if (!slot || e->expires_ns < slot->expires_ns)
            slot = e; /* the entry closest to expiry makes room */
    }
    mem_free(slot->packed);
    memcpy(slot->hash, h, 32);
    slot->packed = packed;
    slot->len = len;
    slot->expires_ns = now + (int64_t)ttl_s * 1000000000;
    pthread_mutex_unlock(&a->mu);
}

/* ---- asynchronous Authenticate ---- */

typedef struct auth_lookup {
    rpc_tag_t tag;
    gw_auth_t *a;
    grpc_call *call;
    uint8_t hash[32];
    arena_t *own;   /* request bytes and signed metadata */
    arena_t *arena; /* the caller's: the principal is unpacked there */
    gw_auth_done_fn done;
    void *arg;
    grpc_metadata send_md[4];
    grpc_byte_buffer *send_buf;
    grpc_byte_buffer *recv_buf;
    grpc_metadata_array init_md;
    grpc_metadata_array trailers;
    grpc_status_code status;
    grpc_slice details;
} auth_lookup_t;

static void auth__lookup_free(auth_lookup_t *l)
{
    if (l->call)
        grpc_call_unref(l->call);
    if (l->send_buf)
        grpc_byte_buffer_destroy(l->send_buf);
    if (l->recv_buf)
        grpc_byte_buffer_destroy(l->recv_buf);
    grpc_metadata_array_destroy(&l->init_md);
    grpc_metadata_array_destroy(&l->trailers);
    grpc_slice_unref(l->details);
    for (int i = 0; i < 4; i++)
        grpc_slice_unref(l->send_md[i].value);
    arena_free(l->own);
    mem_free(l);
}

static void auth__lookup_done(rpc_tag_t *tag, bool ok)
{
    auth_lookup_t *l = (auth_lookup_t *)tag;
    gw_auth_t *a = l->a;
    const char *why = NULL;
    principal_t *p = NULL;
    int rc;
    if (!ok || l->status == GRPC_STATUS_UNAVAILABLE || l->status == GRPC_STATUS_DEADLINE_EXCEEDED) {
        rc = ERR_UNAVAILABLE;
        why = "identity is unavailable: API keys cannot be checked right now";
    } else if (l->status == GRPC_STATUS_UNAUTHENTICATED) {
        rc = ERR_UNAUTHENTICATED;
        why = "the API key is not valid (unknown, revoked or expired)";
        auth__key_store(a, l->hash, NULL, NEGATIVE_TTL);
    } else if (l->status != GRPC_STATUS_OK || !l->recv_buf) {
        rc = ERR_UNAVAILABLE;
        why = arena_printf(l->arena, "identity could not check the API key: %s: %.*s",
                           err_grpc_name(l->status), (int)GRPC_SLICE_LENGTH(l->details),
                           (const char *)GRPC_SLICE_START_PTR(l->details));
    } else {
        grpc_byte_buffer_reader r;
        Onceiot__Identity__V1__AuthenticateResponse *resp = NULL;
        if (grpc_byte_buffer_reader_init(&r, l->recv_buf)) {
            grpc_slice s = grpc_byte_buffer_reader_readall(&r);
            grpc_byte_buffer_reader_destroy(&r);
            resp = onceiot__identity__v1__authenticate_response__unpack(
                arena_allocator(l->arena), GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
            grpc_slice_unref(s);
        }
        if (!resp || !resp->principal) {
            rc = ERR_UNAVAILABLE;
            why = "identity's answer does not parse";
        } else {
            rc = 0;
            p = resp->principal;
            int ttl = a->o.cache_seconds;
            if (resp->cache_seconds < ttl)
                ttl = resp->cache_seconds;
            if (p->expires_at) {
                int64_t left = p->expires_at - (int64_t)time(NULL);
                if (left < ttl)
                    ttl = (int)(left > 0 ? left : 0);
            }
            auth__key_store(a, l->hash, p, ttl);
        }
    }
    l->done(l->arg, rc, p, why);
    auth__lookup_free(l);
}

void gw_auth_key_lookup(gw_auth_t *a, grpc_completion_queue *cq, const char *secret,
                        const char *request_id, const char *traceparent, arena_t *arena,
                        gw_auth_done_fn done, void *arg)
{
    auth_lookup_t *l = mem_calloc(1, sizeof(*l));
    l->tag.fn = auth__lookup_done;
    l->a = a;
    l->own = arena_new();
    l->arena = arena;
    l->done = done;
    l->arg = arg;
    l->details = grpc_empty_slice();
    grpc_metadata_array_init(&l->init_md);
    grpc_metadata_array_init(&l->trailers);
    auth__hash(a, secret, l->hash);

    Onceiot__Identity__V1__AuthenticateRequest req =
        ONCEIOT__IDENTITY__V1__AUTHENTICATE_REQUEST__INIT;
    req.secret = (char *)secret;
    size_t n = onceiot__identity__v1__authenticate_request__get_packed_size(&req);
    uint8_t *buf = arena_alloc(l->own, n ? n : 1);
    onceiot__identity__v1__authenticate_request__pack(&req, buf);
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)buf, n);
    l->send_buf = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);

    rpc_md_t md[2];
    auth__service_md(a, AUTH_METHOD, l->own, md);
    for (int i = 0; i < 2; i++) {
        l->send_md[i].key = grpc_slice_from_static_string(md[i].key);
        l->send_md[i].value = grpc_slice_from_copied_buffer(md[i].value, md[i].len);
    }
    /* Values are copied: core's header compression may hold them after the
     * call, longer than l->own. */
    l->send_md[2].key = grpc_slice_from_static_string("x-request-id");
    l->send_md[2].value = grpc_slice_from_copied_string(request_id);
    l->send_md[3].key = grpc_slice_from_static_string("traceparent");
    l->send_md[3].value = grpc_slice_from_copied_string(traceparent);

    gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                         gpr_time_from_millis(a->o.auth_timeout_ms, GPR_TIMESPAN));
    l->call =
        grpc_channel_create_call(rpc_channel_grpc(a->o.identity), NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                 grpc_slice_from_static_string(AUTH_METHOD), NULL, deadline, NULL);
    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    /* identity reconnecting (say, just restarted) is waited for within the
     * deadline rather than failing the caller at once. */
    ops[0].flags =
        GRPC_INITIAL_METADATA_WAIT_FOR_READY | GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET;
    ops[0].data.send_initial_metadata.count = 4;
    ops[0].data.send_initial_metadata.metadata = l->send_md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = l->send_buf;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &l->init_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &l->recv_buf;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.status = &l->status;
    ops[5].data.recv_status_on_client.status_details = &l->details;
    ops[5].data.recv_status_on_client.trailing_metadata = &l->trailers;
    if (grpc_call_start_batch(l->call, ops, 6, &l->tag, NULL) != GRPC_CALL_OK) {
        /* Only a programming error gets here; answer as if identity were down. */
        l->done(l->arg, ERR_UNAVAILABLE, NULL, "identity is unavailable");
        auth__lookup_free(l);
    }
}

/* ---- authorization ---- */

int gw_authorize(const gw_rule_t *rule, const principal_t *p, const char **why)
{
    if (rule->is_public)
        return 0;
    if (rule->superuser && !p->is_superuser) {
        *why = "this method is for the operator's staff (superusers) only";
        return ERR_PERMISSION_DENIED;
    }
    if (rule->min_role != ONCEIOT__COMMON__V1__ROLE__ROLE_UNSPECIFIED && !p->is_superuser &&
        !principal_role_at_least(p->role, rule->min_role)) {
        *why = "the caller's role is too low for this method";
        return ERR_PERMISSION_DENIED;
    }
    if (rule->scope[0] && !principal_has_scope(p, rule->scope)) {
        *why = "the credential lacks the scope this method needs";
        return ERR_PERMISSION_DENIED;
    }
    return 0;
}
