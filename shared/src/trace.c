/* W3C traceparent: strict parsing, continuing or starting a trace. */
#include "onceiot/trace.h"

#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static int trace__hex(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1; /* uppercase is invalid too */
}

/* True when s[0..n) is lowercase hex and not all zero (when nonzero). */
static bool trace__hex_field(const uint8_t *s, size_t n, bool nonzero)
{
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        int v = trace__hex(s[i]);
        if (v < 0)
            return false;
        any = any || v != 0;
    }
    return any || !nonzero;
}

bool trace_parse(const uint8_t *s, size_t n, trace_ctx_t *out)
{
    /* version(2) - trace-id(32) - parent-id(16) - flags(2) */
    if (n < 55 || !trace__hex_field(s, 2, false))
        return false;
    int version = trace__hex(s[0]) * 16 + trace__hex(s[1]);
    if (version == 0xff || (version == 0 && n != 55) || (n > 55 && s[55] != '-'))
        return false;
    if (s[2] != '-' || s[35] != '-' || s[52] != '-')
        return false;
    if (!trace__hex_field(s + 3, 32, true) || !trace__hex_field(s + 36, 16, true) ||
        !trace__hex_field(s + 53, 2, false))
        return false;
    memcpy(out->trace_id, s + 3, 32);
    out->trace_id[32] = '\0';
    memcpy(out->parent_span_id, s + 36, 16);
    out->parent_span_id[16] = '\0';
    out->flags = (uint8_t)(trace__hex(s[53]) * 16 + trace__hex(s[54]));
    return true;
}

void trace_random_hex(char *out, size_t n)
{
    static _Thread_local uint64_t state;
    if (state == 0 && getrandom(&state, sizeof(state), 0) != sizeof(state)) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        state = ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) | 1;
    }
    static const char digits[] = "0123456789abcdef";
    bool any = false;
    for (size_t i = 0; i < n; i += 16) {
        /* xorshift64*: unique in practice, not secret. */
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        uint64_t v = state * 0x2545F4914F6CDD1DULL;
        for (size_t k = 0; k < 16 && i + k < n; k++, v >>= 4) {
            out[i + k] = digits[v & 15];
            any = any || (v & 15) != 0;
        }
    }
    if (n && !any)
        out[n - 1] = '1'; /* an all-zero id is invalid */
    out[n] = '\0';
}

void trace_from_metadata(const grpc_metadata_array *md, trace_ctx_t *out)
{
    const grpc_metadata *found = NULL;
    int seen = 0;
    for (size_t i = 0; i < md->count; i++)
        if (grpc_slice_str_cmp(md->metadata[i].key, "traceparent") == 0 && seen++ == 0)
            found = &md->metadata[i];
    if (seen != 1 ||
        !trace_parse(GRPC_SLICE_START_PTR(found->value), GRPC_SLICE_LENGTH(found->value), out)) {
        trace_random_hex(out->trace_id, 32);
        out->parent_span_id[0] = '\0';
        out->flags = 0;
    }
    trace_random_hex(out->span_id, 16);
}

void trace_header(const trace_ctx_t *t, char out[56])
{
    snprintf(out, 56, "00-%s-%s-%02x", t->trace_id, t->span_id, t->flags);
}
