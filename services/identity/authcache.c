/* The Authenticate cache and the batched usage counters.
 *
 * The gateway asks for the same few keys over and over, so answers are
 * reused for IDENTITY_CACHE_SECONDS. The cache is direct-mapped on the key
 * hash (already uniformly random): bounded by construction, a collision just
 * replaces the older entry. Revocations and deactivations made through this
 * process forget entries at once; those made through another replica take
 * effect within the cache time (the gateway's own cache adds its time too).
 *
 * Uses are counted in memory and written once a second by one UPDATE, so a
 * hot key costs no database write per call. */
#include "identity.h"

#include "onceiot/log.h"

#include <string.h>
#include <time.h>

static int64_t identity__mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void identity__free_scopes(identity_auth_t *a)
{
    for (size_t i = 0; i < a->n_scopes; i++)
        mem_free(a->scopes[i]);
    mem_free(a->scopes);
    a->scopes = NULL;
    a->n_scopes = 0;
}

void identity_cache_init(identity_cache_t *c, db_pool_t *pool)
{
    memset(c, 0, sizeof(*c));
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->flush_mu, NULL);
    pthread_cond_init(&c->flush_cv, NULL);
    c->slots = mem_calloc(IDENTITY_CACHE_SLOTS, sizeof(*c->slots));
    c->usage_cap = 64;
    c->usage = mem_calloc(c->usage_cap, sizeof(*c->usage));
    c->pool = pool;
}

static identity_cache_slot_t *identity__slot(identity_cache_t *c, const uint8_t hash[32])
{
    uint64_t h;
    memcpy(&h, hash, sizeof(h));
    return &c->slots[h % IDENTITY_CACHE_SLOTS];
}

bool identity_cache_get(identity_cache_t *c, const uint8_t hash[32], arena_t *a,
                        identity_auth_t *out)
{
    bool hit = false;
    int64_t now = identity__mono_ms();
    pthread_mutex_lock(&c->mu);
    identity_cache_slot_t *s = identity__slot(c, hash);
    if (s->valid_until_ms > now && sodium_memcmp(s->hash, hash, 32) == 0) {
        *out = s->auth;
        out->scopes = arena_alloc(a, (s->auth.n_scopes ? s->auth.n_scopes : 1) * sizeof(char *));
        for (size_t i = 0; i < s->auth.n_scopes; i++)
            out->scopes[i] = arena_strdup(a, s->auth.scopes[i]);
        hit = true;
    }
    pthread_mutex_unlock(&c->mu);
    return hit;
}

void identity_cache_put(identity_cache_t *c, const uint8_t hash[32], const identity_auth_t *auth)
{
    char **scopes = mem_calloc(auth->n_scopes ? auth->n_scopes : 1, sizeof(char *));
    for (size_t i = 0; i < auth->n_scopes; i++)
        scopes[i] = mem_strdup(auth->scopes[i]);
    pthread_mutex_lock(&c->mu);
    identity_cache_slot_t *s = identity__slot(c, hash);
    identity__free_scopes(&s->auth);
    memcpy(s->hash, hash, 32);
    s->auth = *auth;
    s->auth.scopes = scopes;
    s->valid_until_ms = identity__mono_ms() + IDENTITY_CACHE_SECONDS * 1000;
    pthread_mutex_unlock(&c->mu);
}

void identity_cache_forget(identity_cache_t *c, int64_t key_id, int64_t user_id)
{
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < IDENTITY_CACHE_SLOTS; i++) {
        identity_cache_slot_t *s = &c->slots[i];
        if (s->valid_until_ms &&
            (key_id > 0 ? s->auth.key_id == key_id : s->auth.user_id == user_id)) {
            identity__free_scopes(&s->auth);
            s->valid_until_ms = 0;
        }
    }
    pthread_mutex_unlock(&c->mu);
}

/* ---- usage counters: open addressing on key id, grown at half full ---- */

static identity_usage_t *identity__usage_find(identity_usage_t *t, size_t cap, int64_t key_id)
{
    size_t i = (size_t)((uint64_t)key_id * 0x9E3779B97F4A7C15ull) & (cap - 1);
    while (t[i].key_id && t[i].key_id != key_id)
        i = (i + 1) & (cap - 1);
    return &t[i];
}

/* Adds n uses at last_ms; the caller holds c->mu. */
static void identity__usage_add(identity_cache_t *c, int64_t key_id, int64_t n, int64_t last_ms)
{
    if ((c->usage_len + 1) * 2 > c->usage_cap) {
        size_t cap = c->usage_cap * 2;
        identity_usage_t *t = mem_calloc(cap, sizeof(*t));
        for (size_t i = 0; i < c->usage_cap; i++)
            if (c->usage[i].key_id)
                *identity__usage_find(t, cap, c->usage[i].key_id) = c->usage[i];
        mem_free(c->usage);
        c->usage = t;
        c->usage_cap = cap;
    }
    identity_usage_t *u = identity__usage_find(c->usage, c->usage_cap, key_id);
    if (!u->key_id) {
        u->key_id = key_id;
        c->usage_len++;
    }
    u->n += n;
    if (last_ms > u->last_ms)
        u->last_ms = last_ms;
}

void identity_cache_count(identity_cache_t *c, int64_t key_id)
{
    int64_t now = principal_now_ms();
    pthread_mutex_lock(&c->mu);
    identity__usage_add(c, key_id, 1, now);
    pthread_mutex_unlock(&c->mu);
}

int identity_cache_flush(identity_cache_t *c)
{
    /* Take the counts out under the lock; the SQL runs without it. */
    pthread_mutex_lock(&c->mu);
    identity_usage_t *t = c->usage;
    size_t cap = c->usage_cap, len = c->usage_len;
    if (len == 0) {
        pthread_mutex_unlock(&c->mu);
        return 0;
    }
    c->usage_cap = 64;
    c->usage_len = 0;
    c->usage = mem_calloc(c->usage_cap, sizeof(*c->usage));
    pthread_mutex_unlock(&c->mu);

    identity_usage_t *rows = mem_alloc(len * sizeof(*rows));
    size_t n = 0;
    for (size_t i = 0; i < cap; i++)
        if (t[i].key_id)
            rows[n++] = t[i];
    db_conn_t *conn = NULL;
    int rc = db_pool_acquire(c->pool, 5000, &conn);
    if (rc == 0) {
        db_set_scope(conn, 0, true); /* internal: keys of every organization */
        rc = identity_store_usage_flush(conn, rows, n);
        if (rc < 0)
            log_msg(LOG_WARN, "usage_flush_failed", "%s", db_errmsg(conn));
        db_pool_release(c->pool, conn);
    }
    if (rc < 0) {
        /* Keep the counts for the next try. */
        pthread_mutex_lock(&c->mu);
        for (size_t i = 0; i < n; i++)
            identity__usage_add(c, rows[i].key_id, rows[i].n, rows[i].last_ms);
        pthread_mutex_unlock(&c->mu);
    }
    mem_free(rows);
    mem_free(t);
    return rc;
}

static void *identity__flusher_main(void *arg)
{
    identity_cache_t *c = arg;
    pthread_mutex_lock(&c->flush_mu);
    while (!c->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&c->flush_cv, &c->flush_mu, &ts);
        pthread_mutex_unlock(&c->flush_mu);
        (void)identity_cache_flush(c); /* failures are logged and retried */
        pthread_mutex_lock(&c->flush_mu);
    }
    pthread_mutex_unlock(&c->flush_mu);
    return NULL;
}

void identity_cache_start(identity_cache_t *c)
{
    if (pthread_create(&c->flusher, NULL, identity__flusher_main, c) == 0)
        c->flusher_running = true;
}

void identity_cache_fini(identity_cache_t *c)
{
    if (c->flusher_running) {
        pthread_mutex_lock(&c->flush_mu);
        c->stopping = true;
        pthread_cond_broadcast(&c->flush_cv);
        pthread_mutex_unlock(&c->flush_mu);
        pthread_join(c->flusher, NULL);
        c->flusher_running = false;
    }
    if (identity_cache_flush(c) < 0)
        log_msg(LOG_WARN, "usage_lost", "the last usage counts could not be written");
    for (size_t i = 0; i < IDENTITY_CACHE_SLOTS; i++)
        identity__free_scopes(&c->slots[i].auth);
    mem_free(c->slots);
    mem_free(c->usage);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->flush_mu);
    pthread_cond_destroy(&c->flush_cv);
}
