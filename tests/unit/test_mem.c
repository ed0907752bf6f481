/* Heap wrappers and per-call arenas: alignment, many small and some large
 * allocations that all stay usable, strings, and protobuf-c unpacking into an
 * arena. Leaks and overruns show under the sanitizer build. */
#include "google/protobuf/any.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "onceiot/mem.h"

#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

static arena_t *a;

static void setup(void)
{
    a = arena_new();
}

static void teardown(void)
{
    arena_free(a);
}

TestSuite(mem, .init = setup, .fini = teardown);

/* A byte pattern that differs per allocation and per offset. */
static unsigned char pattern(size_t alloc, size_t off)
{
    return (unsigned char)(alloc * 131 + off * 7 + 1);
}

Test(mem, every_allocation_is_aligned_to_16)
{
    static const size_t sizes[] = {1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 100, 1000, 2047, 2049, 5000};
    for (int round = 0; round < 20; round++)
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            void *p = arena_alloc(a, sizes[i]);
            cr_assert_not_null(p);
            cr_assert_eq((uintptr_t)p % 16, 0, "%zu bytes at %p", sizes[i], p);
        }
    cr_assert_eq((uintptr_t)arena_alloc(a, 0) % 16, 0, "a zero-byte request is aligned too");
    cr_assert_eq((uintptr_t)arena_calloc(a, 3, 5) % 16, 0);
    cr_assert_eq((uintptr_t)arena_strdup(a, "x") % 16, 0);
}

Test(mem, many_small_and_a_few_large_allocations_are_all_usable)
{
    enum { N = 5000 };
    static unsigned char *ptrs[N];
    static size_t lens[N];
    for (size_t i = 0; i < N; i++) {
        /* Mostly small, every 500th one larger than a block. */
        lens[i] = i % 500 == 499 ? 20000 + i : 1 + i % 97;
        ptrs[i] = arena_alloc(a, lens[i]);
        for (size_t k = 0; k < lens[i]; k++)
            ptrs[i][k] = pattern(i, k);
    }
    /* Nothing was overwritten by a later allocation. */
    for (size_t i = 0; i < N; i++)
        for (size_t k = 0; k < lens[i]; k++)
            cr_assert_eq(ptrs[i][k], pattern(i, k), "allocation %zu byte %zu", i, k);
}

Test(mem, a_large_allocation_leaves_the_current_block_usable)
{
    char *small1 = arena_strdup(a, "before");
    unsigned char *big = arena_alloc(a, 1 << 20);
    memset(big, 0xab, 1 << 20);
    char *small2 = arena_strdup(a, "after");
    cr_assert_str_eq(small1, "before");
    cr_assert_str_eq(small2, "after");
    cr_assert_eq(big[0], 0xab);
    cr_assert_eq(big[(1 << 20) - 1], 0xab);
    /* The small ones share a block: the big one did not push them apart. */
    cr_assert_lt((size_t)(small2 - small1), 4096);
}

/* A gateway call uses about 1.4 kB of its arena: that much comes out of the
 * arena's own allocation, with no block of its own. */
Test(mem, the_first_allocations_share_the_arenas_own_allocation)
{
    unsigned char *first = arena_alloc(a, 16);
    unsigned char *last = arena_alloc(a, 1400);
    cr_assert_lt((size_t)(first - (unsigned char *)a), 2048, "%p in arena %p", first, (void *)a);
    cr_assert_leq((size_t)(last + 1400 - (unsigned char *)a), 2048, "%p in arena %p", last,
                  (void *)a);
    memset(last, 0x5a, 1400);
    /* Past it, allocations go on in a block of their own, all usable. */
    unsigned char *next = arena_alloc(a, 1000);
    memset(next, 0xa5, 1000);
    cr_assert_eq(last[1399], 0x5a);
    cr_assert_eq(next[0], 0xa5);
}

Test(mem, calloc_zeroes)
{
    /* Dirty the arena's memory first so zeroes cannot be luck. */
    for (int i = 0; i < 10; i++)
        memset(arena_alloc(a, 500), 0xff, 500);
    unsigned char *p = arena_calloc(a, 100, 7);
    for (size_t i = 0; i < 700; i++)
        cr_assert_eq(p[i], 0, "byte %zu", i);
    void *h = mem_calloc(33, 3);
    for (size_t i = 0; i < 99; i++)
        cr_assert_eq(((unsigned char *)h)[i], 0);
    mem_free(h);
}

Test(mem, arena_strings_are_copies)
{
    char src[] = "hello world";
    char *d = arena_strdup(a, src);
    char *n = arena_strndup(a, src, 5);
    char *longer = arena_strndup(a, "abc", 100);
    src[0] = 'J';
    cr_assert_str_eq(d, "hello world");
    cr_assert_str_eq(n, "hello");
    cr_assert_str_eq(longer, "abc", "strndup stops at the terminator");
    cr_assert_str_eq(arena_strndup(a, "abc", 0), "");
}

Test(mem, arena_printf_formats_short_and_long_strings)
{
    cr_assert_str_eq(arena_printf(a, "%s-%d-%05.1f", "sim", 42, 3.14159), "sim-42-003.1");
    cr_assert_str_eq(arena_printf(a, "%s", ""), "");
    char big[10001];
    memset(big, 'q', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    char *s = arena_printf(a, "<%s>", big);
    cr_assert_eq(strlen(s), 10002);
    cr_assert_eq(s[0], '<');
    cr_assert_eq(s[10001], '>');
    cr_assert_eq(s[5000], 'q');
}

Test(mem, arena_used_grows_with_every_allocation)
{
    cr_assert_eq(arena_used(a), 0);
    size_t last = 0;
    for (size_t n = 1; n < 3000; n += 37) {
        arena_alloc(a, n);
        cr_assert_geq(arena_used(a), last + n, "after %zu bytes", n);
        last = arena_used(a);
    }
    arena_alloc(a, 100000);
    cr_assert_geq(arena_used(a), last + 100000);
}

Test(mem, heap_wrappers_copy_format_and_grow)
{
    char *s = mem_strdup("abc");
    cr_assert_str_eq(s, "abc");
    char *n = mem_strndup("abcdef", 2);
    cr_assert_str_eq(n, "ab");
    char *f = mem_printf("%s/%d", "x", 7);
    cr_assert_str_eq(f, "x/7");
    unsigned char *p = mem_alloc(16);
    for (int i = 0; i < 16; i++)
        p[i] = (unsigned char)i;
    p = mem_realloc(p, 1 << 16);
    for (int i = 0; i < 16; i++)
        cr_assert_eq(p[i], i, "realloc keeps the contents");
    p[(1 << 16) - 1] = 1;
    mem_free(p);
    mem_free(s);
    mem_free(n);
    mem_free(f);
    mem_free(NULL);
    arena_free(NULL);
}

/* protobuf-c can unpack a message with nested messages, repeated fields,
 * strings and bytes entirely from the arena; freeing it is the arena's job. */
Test(mem, protobuf_c_unpacks_into_the_arena)
{
    /* Pack a google.rpc.Status with two Any details on the heap. */
    uint8_t payload[300];
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)i;
    Google__Protobuf__Any d1 = GOOGLE__PROTOBUF__ANY__INIT;
    d1.type_url = "type.googleapis.com/google.rpc.BadRequest";
    d1.value.data = payload;
    d1.value.len = sizeof(payload);
    Google__Protobuf__Any d2 = GOOGLE__PROTOBUF__ANY__INIT;
    d2.type_url = "type.googleapis.com/google.rpc.RetryInfo";
    Google__Protobuf__Any *details[] = {&d1, &d2};
    Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
    st.code = 5;
    st.message = "no SIM \"8988\"";
    st.details = details;
    st.n_details = 2;
    size_t len = google__rpc__status__get_packed_size(&st);
    uint8_t *buf = mem_alloc(len);
    cr_assert_eq(google__rpc__status__pack(&st, buf), len);

    size_t before = arena_used(a);
    Google__Rpc__Status *out = google__rpc__status__unpack(arena_allocator(a), len, buf);
    /* The packed bytes can go: the message owns copies in the arena. */
    memset(buf, 0, len);
    mem_free(buf);
    cr_assert_not_null(out);
    cr_assert_gt(arena_used(a), before, "the message came from the arena");
    cr_assert_eq(out->code, 5);
    cr_assert_str_eq(out->message, "no SIM \"8988\"");
    cr_assert_eq(out->n_details, 2);
    cr_assert_str_eq(out->details[0]->type_url, "type.googleapis.com/google.rpc.BadRequest");
    cr_assert_eq(out->details[0]->value.len, sizeof(payload));
    cr_assert_arr_eq(out->details[0]->value.data, payload, sizeof(payload));
    cr_assert_str_eq(out->details[1]->type_url, "type.googleapis.com/google.rpc.RetryInfo");
    cr_assert_eq(out->details[1]->value.len, 0);
    /* The allocator's free is a no-op: this must not free arena memory. */
    google__rpc__status__free_unpacked(out, arena_allocator(a));
}

Test(mem, protobuf_c_rejects_garbage_without_leaking)
{
    static const uint8_t garbage[] = {0x12, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01};
    Google__Rpc__Status *out =
        google__rpc__status__unpack(arena_allocator(a), sizeof(garbage), garbage);
    cr_assert_null(out);
}

Test(mem, two_arenas_are_independent)
{
    arena_t *b = arena_new();
    char *x = arena_strdup(a, "in a");
    char *y = arena_strdup(b, "in b");
    cr_assert_str_eq(y, "in b");
    arena_free(b);
    cr_assert_str_eq(x, "in a", "freeing one arena leaves the other alone");
    cr_assert_eq(arena_allocator(a)->allocator_data, a);
}
