/* What the gateway reads from a call before it routes it: the bearer
 * credential and the client's address. Kept apart from the proxy so that
 * the fuzzer drives exactly this code with hostile metadata. */
#include "gateway.h"

#include <string.h>
#include <strings.h>

const char *gw_request_bearer(const grpc_metadata_array *md, arena_t *a)
{
    for (size_t i = 0; i < md->count; i++) {
        const grpc_metadata *m = &md->metadata[i];
        if (grpc_slice_str_cmp(m->key, "authorization") != 0)
            continue;
        const char *v = (const char *)GRPC_SLICE_START_PTR(m->value);
        size_t n = GRPC_SLICE_LENGTH(m->value);
        if (n <= 7 || strncasecmp(v, "bearer ", 7) != 0)
            return NULL;
        v += 7;
        n -= 7;
        while (n && *v == ' ')
            v++, n--;
        while (n && v[n - 1] == ' ')
            n--;
        return n && !memchr(v, '\0', n) ? arena_strndup(a, v, n) : NULL;
    }
    return NULL;
}

const char *gw_request_client_address(arena_t *a, const char *peer)
{
    if (!peer)
        return "";
    const char *v = peer;
    if (strncmp(v, "ipv4:", 5) == 0) {
        v += 5;
        const char *colon = strrchr(v, ':');
        return arena_strndup(a, v, colon ? (size_t)(colon - v) : strlen(v));
    }
    if (strncmp(v, "ipv6:[", 6) == 0) {
        v += 6;
        const char *end = strchr(v, ']');
        return arena_strndup(a, v, end ? (size_t)(end - v) : strlen(v));
    }
    return arena_strdup(a, v);
}
