/* What the gateway reads from a client before anything else: the :path
 * (route lookup over every method of the product's descriptor set), the
 * request metadata (authorization, x-request-id, traceparent) and the peer
 * string.
 * Input: the first line is the path, each further line "key:value" one
 * metadata entry; the last line is also taken as a peer. */
#include "gateway.h"
#include "onceiot/descset.h"
#include "onceiot/trace.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_MD 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static gw_routes_t *routes;
    static descset_t *ds; /* kept for the process: the routes point into it */
    if (!routes) {
        char err[256];
        if (descset_load_embedded(&ds) < 0 || gw_routes_build(ds, &routes, err, sizeof(err)) < 0)
            __builtin_trap();
    }
    const uint8_t *end = data + size;
    const uint8_t *nl = memchr(data, '\n', size);
    size_t path_len = nl ? (size_t)(nl - data) : size;
    const gw_route_t *r = gw_routes_find(routes, (const char *)data, path_len);
    if (r && (path_len == 0 || memchr(data, '\0', path_len)))
        __builtin_trap(); /* no route for an empty path or one holding a NUL */

    grpc_metadata md[MAX_MD];
    grpc_metadata_array arr = {0, MAX_MD, md};
    const uint8_t *line = nl ? nl + 1 : end, *last = line;
    while (line < end && arr.count < MAX_MD) {
        const uint8_t *e = memchr(line, '\n', (size_t)(end - line));
        if (!e)
            e = end;
        const uint8_t *colon = memchr(line, ':', (size_t)(e - line));
        const uint8_t *v = colon ? colon + 1 : e;
        md[arr.count].key =
            grpc_slice_from_static_buffer(line, (size_t)((colon ? colon : e) - line));
        md[arr.count].value = grpc_slice_from_static_buffer(v, (size_t)(e - v));
        arr.count++;
        last = line;
        line = e + 1;
    }
    arena_t *a = arena_new();
    const char *bearer = gw_request_bearer(&arr, a);
    if (bearer && (!*bearer || bearer[0] == ' ' || bearer[strlen(bearer) - 1] == ' '))
        __builtin_trap(); /* trimmed and never empty */
    char id[65];
    rpc_request_id(&arr, id);
    size_t n = strlen(id);
    if (n == 0 || n > 64 ||
        strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                   "0123456789._-") != n)
        __builtin_trap(); /* safe to log and forward */
    /* Whatever the traceparent, the trace is well formed; a continued one
     * is exactly what a valid header said, and what we send on parses. */
    trace_ctx_t t;
    trace_from_metadata(&arr, &t);
    if (strlen(t.trace_id) != 32 || strspn(t.trace_id, "0123456789abcdef") != 32 ||
        strspn(t.trace_id, "0") == 32 || strlen(t.span_id) != 16 ||
        strspn(t.span_id, "0123456789abcdef") != 16)
        __builtin_trap();
    for (size_t i = 0; i < arr.count; i++) {
        trace_ctx_t p;
        const uint8_t *v = GRPC_SLICE_START_PTR(md[i].value);
        if (trace_parse(v, GRPC_SLICE_LENGTH(md[i].value), &p) &&
            (memcmp(v + 3, p.trace_id, 32) != 0 || memcmp(v + 36, p.parent_span_id, 16) != 0))
            __builtin_trap();
    }
    char header[56];
    trace_header(&t, header);
    trace_ctx_t again;
    if (!trace_parse((const uint8_t *)header, strlen(header), &again) ||
        strcmp(again.trace_id, t.trace_id) != 0 || strcmp(again.parent_span_id, t.span_id) != 0)
        __builtin_trap();
    size_t peer_len = (size_t)(end - last);
    char *peer = arena_alloc(a, peer_len + 1);
    memcpy(peer, last, peer_len);
    peer[peer_len] = '\0';
    (void)gw_request_client_address(a, peer);
    arena_free(a);
    return 0;
}
