/* W3C traceparent: what is accepted, what starts a new trace, and what is
 * sent on. */
#include "onceiot/trace.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#define TID "4bf92f3577b34da6a3ce929d0e0e4736"
#define PID "00f067aa0ba902b7"

static bool parse(const char *s, trace_ctx_t *t)
{
    return trace_parse((const uint8_t *)s, strlen(s), t);
}

static bool lower_hex(const char *s, size_t n)
{
    return strlen(s) == n && strspn(s, "0123456789abcdef") == n && strspn(s, "0") != n;
}

Test(trace, a_valid_version_00_header_is_read)
{
    trace_ctx_t t;
    memset(&t, 0, sizeof(t));
    cr_assert(parse("00-" TID "-" PID "-01", &t));
    cr_assert_str_eq(t.trace_id, TID);
    cr_assert_str_eq(t.parent_span_id, PID);
    cr_assert_eq(t.flags, 1);
    cr_assert(parse("00-" TID "-" PID "-00", &t));
    cr_assert_eq(t.flags, 0);
}

Test(trace, a_later_version_may_carry_more_after_a_dash)
{
    trace_ctx_t t;
    cr_assert(parse("01-" TID "-" PID "-01", &t));
    cr_assert(parse("cc-" TID "-" PID "-01-what-the-future-holds", &t));
    cr_assert_str_eq(t.trace_id, TID);
    cr_assert_not(parse("cc-" TID "-" PID "-01what", &t));
}

Test(trace, invalid_headers_are_refused)
{
    static const char *const bad[] = {
        "",
        "00",
        "00-" TID "-" PID "-0",                           /* short */
        "00-" TID "-" PID "-01-",                         /* 00 is exactly 55 bytes */
        "00-" TID "-" PID "-01x",                         /* ditto */
        "ff-" TID "-" PID "-01",                          /* version ff */
        "0g-" TID "-" PID "-01",                          /* version not hex */
        "00-00000000000000000000000000000000-" PID "-01", /* trace id all zero */
        "00-" TID "-0000000000000000-01",                 /* parent id all zero */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-" PID "-01", /* uppercase */
        "00-" TID "-00F067AA0BA902B7-01",                 /* uppercase */
        "00-" TID "-" PID "-0X",                          /* flags not hex */
        "00_" TID "-" PID "-01",                          /* separators */
        "00-" TID "_" PID "-01",
        "00-" TID "-" PID "_01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-" PID "0-01", /* fields shifted */
        "00-" TID "-" PID "-0\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        trace_ctx_t t;
        memset(&t, 'x', sizeof(t));
        cr_assert_not(parse(bad[i], &t), "accepted %s", bad[i]);
        cr_assert_eq(t.trace_id[0], 'x', "left alone on failure");
    }
}

/* Metadata as core hands it over. */
static void md_of(grpc_metadata_array *a, grpc_metadata *md, const char *const *kv, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        md[i].key = grpc_slice_from_static_string(kv[2 * i]);
        md[i].value = grpc_slice_from_static_string(kv[2 * i + 1]);
    }
    a->count = n;
    a->capacity = n;
    a->metadata = md;
}

Test(trace, a_valid_traceparent_is_continued_with_a_span_of_our_own)
{
    const char *kv[] = {"x-other", "1", "traceparent", "00-" TID "-" PID "-01"};
    grpc_metadata md[2];
    grpc_metadata_array a;
    md_of(&a, md, kv, 2);
    trace_ctx_t t;
    trace_from_metadata(&a, &t);
    cr_assert_str_eq(t.trace_id, TID);
    cr_assert_str_eq(t.parent_span_id, PID);
    cr_assert(lower_hex(t.span_id, 16));
    cr_assert_str_neq(t.span_id, PID);
    char h[56];
    trace_header(&t, h);
    char want[56];
    snprintf(want, sizeof(want), "00-%s-%s-01", TID, t.span_id);
    cr_assert_str_eq(h, want);
    trace_ctx_t back;
    cr_assert(parse(h, &back), "what we send parses");
}

Test(trace, an_absent_invalid_or_repeated_traceparent_starts_a_new_trace)
{
    const char *none[] = {"x-other", "1"};
    const char *bad[] = {"traceparent", "00-" TID "-0000000000000000-01"};
    const char *twice[] = {"traceparent", "00-" TID "-" PID "-01", "traceparent",
                           "00-" TID "-" PID "-01"};
    const char *const *cases[] = {none, bad, twice};
    size_t counts[] = {1, 1, 2};
    char seen[3][33];
    for (int i = 0; i < 3; i++) {
        grpc_metadata md[2];
        grpc_metadata_array a;
        md_of(&a, md, cases[i], counts[i]);
        trace_ctx_t t;
        trace_from_metadata(&a, &t);
        cr_assert(lower_hex(t.trace_id, 32), "case %d: %s", i, t.trace_id);
        cr_assert_str_neq(t.trace_id, TID, "case %d keeps nothing of the input", i);
        cr_assert_str_eq(t.parent_span_id, "");
        cr_assert_eq(t.flags, 0);
        cr_assert(lower_hex(t.span_id, 16));
        memcpy(seen[i], t.trace_id, 33);
    }
    cr_assert_str_neq(seen[0], seen[1]);
    cr_assert_str_neq(seen[1], seen[2]);
}

Test(trace, random_hex_is_lowercase_and_never_all_zero)
{
    for (size_t n = 1; n <= 40; n++) {
        char buf[41];
        trace_random_hex(buf, n);
        cr_assert_eq(strlen(buf), n);
        cr_assert_eq(strspn(buf, "0123456789abcdef"), n);
        cr_assert_neq(strspn(buf, "0"), n);
    }
}
