/* Heap wrappers that abort on exhaustion, and per-call arenas. */
#include "onceiot/mem.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* jemalloc reads this at start (it is ignored where jemalloc is not linked,
 * as in sanitizer builds; MALLOC_CONF in the environment still overrides it).
 * A server's load comes in bursts: give freed pages back to the system
 * within a second instead of keeping them for good, from a background thread
 * so the call path never pays for it. Two arenas instead of four per CPU of
 * the host: our threads are few, and a pod's CPU limit is not what jemalloc
 * sees (gateway under load: VmHWM 50 -> 41 MB, CPU per call unchanged). */
const char *malloc_conf = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,narenas:2";

static void mem__oom(size_t n)
{
    /* No allocation here: stderr is unbuffered and the message is fixed. */
    fprintf(stderr, "{\"level\":\"error\",\"event\":\"out_of_memory\",\"bytes\":%zu}\n", n);
    abort();
}

void *mem_alloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        mem__oom(n);
    return p;
}

void *mem_calloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        mem__oom(count * size);
    return p;
}

void *mem_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        mem__oom(n);
    return q;
}

char *mem_strdup(const char *s)
{
    return mem_strndup(s, strlen(s));
}

char *mem_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *d = mem_alloc(len + 1);
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

char *mem_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        mem__oom(strlen(fmt));
    va_end(ap);
    return s;
}

void mem_free(void *p)
{
    free(p);
}

/* An arena is a chain of blocks; allocations bump a pointer in the newest
 * block. Requests larger than a quarter block get a block of their own so a
 * big message does not waste the rest of the current one. The first block
 * is small and lives in the arena's own allocation: a gateway call uses
 * about 1.4 kB of its arena, and a request that needs more gets 8 kB blocks
 * after it. Sizes are jemalloc size classes with their headers included
 * (an 8 kB block plus its header used to take the 10 kB class). */
enum { ARENA_ALLOC = 8192, ARENA_FIRST_ALLOC = 2048, ARENA_ALIGN = 16 };

typedef struct arena_block {
    struct arena_block *next; /* older block */
    size_t size;              /* usable bytes in data */
    size_t used;              /* bytes handed out from data */
    _Alignas(ARENA_ALIGN) unsigned char data[];
} arena_block_t;

enum { ARENA_BLOCK = ARENA_ALLOC - sizeof(arena_block_t) };

struct arena {
    arena_block_t *head;                         /* newest block */
    size_t total;                                /* bytes handed out */
    ProtobufCAllocator pbc;                      /* protobuf-c view of this arena */
    _Alignas(ARENA_ALIGN) unsigned char first[]; /* the first block, in this allocation */
};

static void *arena__pbc_alloc(void *data, size_t n)
{
    return arena_alloc(data, n);
}

static void arena__pbc_free(void *data, void *p)
{
    (void)data;
    (void)p; /* freed with the arena */
}

arena_t *arena_new(void)
{
    arena_t *a = mem_alloc(ARENA_FIRST_ALLOC);
    arena_block_t *b = (arena_block_t *)a->first;
    b->next = NULL;
    b->size = ARENA_FIRST_ALLOC - sizeof(*a) - sizeof(*b);
    b->used = 0;
    a->head = b;
    a->total = 0;
    a->pbc.alloc = arena__pbc_alloc;
    a->pbc.free = arena__pbc_free;
    a->pbc.allocator_data = a;
    return a;
}

void arena_free(arena_t *a)
{
    if (!a)
        return;
    arena_block_t *b = a->head;
    while (b) {
        arena_block_t *next = b->next;
        if (b != (arena_block_t *)a->first)
            mem_free(b);
        b = next;
    }
    mem_free(a);
}

static arena_block_t *arena__block(size_t size)
{
    arena_block_t *b = mem_alloc(sizeof(*b) + size);
    b->next = NULL;
    b->size = size;
    b->used = 0;
    return b;
}

void *arena_alloc(arena_t *a, size_t n)
{
    size_t need = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (need == 0)
        need = ARENA_ALIGN;
    a->total += need;
    arena_block_t *h = a->head;
    if (h && h->size - h->used >= need) {
        void *p = h->data + h->used;
        h->used += need;
        return p;
    }
    if (need > ARENA_BLOCK / 4) {
        /* A private block, linked behind the head so the head keeps its room. */
        arena_block_t *b = arena__block(need);
        b->used = need;
        if (h) {
            b->next = h->next;
            h->next = b;
        } else {
            a->head = b;
        }
        return b->data;
    }
    arena_block_t *b = arena__block(ARENA_BLOCK);
    b->next = h;
    a->head = b;
    b->used = need;
    return b->data;
}

void *arena_calloc(arena_t *a, size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size)
        mem__oom(SIZE_MAX);
    void *p = arena_alloc(a, count * size);
    memset(p, 0, count * size);
    return p;
}

char *arena_strdup(arena_t *a, const char *s)
{
    return arena_strndup(a, s, strlen(s));
}

char *arena_strndup(arena_t *a, const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *d = arena_alloc(a, len + 1);
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

char *arena_vprintf(arena_t *a, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        n = 0;
    char *s = arena_alloc(a, (size_t)n + 1);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    return s;
}

char *arena_printf(arena_t *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = arena_vprintf(a, fmt, ap);
    va_end(ap);
    return s;
}

ProtobufCAllocator *arena_allocator(arena_t *a)
{
    return &a->pbc;
}

size_t arena_used(const arena_t *a)
{
    return a->total;
}
