/* Page tokens as clients send them back: any text decoded by the runtime's
 * keyset tokens (pagetoken.h) and by identity's, against a filter hash; a
 * token the runtime made must decode to what it was made from. */
#include "identity.h"
#include "onceiot/pagetoken.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = mem_alloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    rpc_call_t *call = rpc_call_detached_new();
    arena_t *a = rpc_call_arena(call);
    const char *parts[] = {"sims", "org=1"};
    uint64_t hash = pagetoken_hash(parts, 2);
    const char *key = NULL, *last = NULL;
    int rc = pagetoken_decode(call, text, hash, &key, &last);
    if (rc < 0 && rpc_call_detached_code(call) != GRPC_STATUS_INVALID_ARGUMENT)
        __builtin_trap(); /* a bad token is the client's mistake, never ours */
    rpc_call_detached_free(call);

    call = rpc_call_detached_new();
    a = rpc_call_arena(call);
    int64_t after = 0;
    identity_page_token_parse(call, "page_token", text, "users|org=1", &after);
    /* Round trip: the input split in two as key and last (each within the
     * documented bound). */
    if (size > 2 * PAGETOKEN_MAX_KEY)
        size = 2 * PAGETOKEN_MAX_KEY;
    size_t half = size / 2;
    char *k = arena_alloc(a, half + 1), *l = arena_alloc(a, size - half + 1);
    memcpy(k, data, half);
    k[half] = '\0';
    memcpy(l, data + half, size - half);
    l[size - half] = '\0';
    const char *tok = pagetoken_encode(a, hash, k, l);
    if (pagetoken_decode(call, tok, hash, &key, &last) < 0 || strcmp(key, k) != 0 ||
        strcmp(last, l) != 0)
        __builtin_trap();
    rpc_call_detached_free(call);
    mem_free(text);
    return 0;
}
