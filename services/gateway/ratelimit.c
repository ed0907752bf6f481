/* Per-principal token buckets in a fixed-size table: a bucket lives in one
 * of a few slots near its key's hash; when they are all taken, the one used
 * least recently is given to the new key (it had stopped calling, or the
 * table is too small, and forgetting it only ever lets calls through). */
#include "gateway.h"

#include "onceiot/mem.h"

#include <pthread.h>

enum { RL_PROBE = 8 };

typedef struct rl_bucket {
    int64_t key;
    int64_t last_ns; /* last refill; 0: empty slot */
    double tokens;
} rl_bucket_t;

struct gw_ratelimit {
    double rps;
    double burst;
    size_t mask; /* slots - 1 (a power of two) */
    rl_bucket_t *slots;
    pthread_mutex_t mu;
};

gw_ratelimit_t *gw_ratelimit_new(double rps, double burst, size_t max_keys)
{
    gw_ratelimit_t *rl = mem_calloc(1, sizeof(*rl));
    size_t n = RL_PROBE;
    while (n < max_keys)
        n <<= 1;
    rl->rps = rps;
    rl->burst = burst < 1 ? 1 : burst;
    rl->mask = n - 1;
    rl->slots = mem_calloc(n, sizeof(*rl->slots));
    pthread_mutex_init(&rl->mu, NULL);
    return rl;
}

void gw_ratelimit_free(gw_ratelimit_t *rl)
{
    if (!rl)
        return;
    pthread_mutex_destroy(&rl->mu);
    mem_free(rl->slots);
    mem_free(rl);
}

static size_t rl__hash(int64_t key)
{
    uint64_t h = (uint64_t)key * 0x9E3779B97F4A7C15ULL;
    return (size_t)(h ^ (h >> 29));
}

bool gw_ratelimit_take(gw_ratelimit_t *rl, int64_t key, int64_t now_ns, int64_t *retry_ms)
{
    *retry_ms = 0;
    if (now_ns <= 0)
        now_ns = 1; /* 0 marks an empty slot */
    pthread_mutex_lock(&rl->mu);
    size_t h = rl__hash(key);
    rl_bucket_t *b = NULL, *oldest = NULL;
    for (size_t i = 0; i < RL_PROBE && !b; i++) {
        rl_bucket_t *s = &rl->slots[(h + i) & rl->mask];
        if (s->last_ns && s->key == key)
            b = s;
        else if (!oldest || s->last_ns < oldest->last_ns)
            oldest = s;
    }
    if (!b) {
        b = oldest;
        b->key = key;
        b->last_ns = now_ns;
        b->tokens = rl->burst;
    }
    if (now_ns > b->last_ns) {
        b->tokens += (double)(now_ns - b->last_ns) / 1e9 * rl->rps;
        if (b->tokens > rl->burst)
            b->tokens = rl->burst;
        b->last_ns = now_ns;
    }
    bool ok = b->tokens >= 1.0;
    if (ok)
        b->tokens -= 1.0;
    else
        *retry_ms = (int64_t)((1.0 - b->tokens) / rl->rps * 1000.0) + 1; /* rounded up */
    pthread_mutex_unlock(&rl->mu);
    return ok;
}
