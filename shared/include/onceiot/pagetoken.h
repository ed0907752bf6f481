/* Opaque keyset page tokens for List methods.
 *
 * A token carries the sort key and tie-breaker of the last row of a page and
 * a hash of the list's filters and order, so a token used with other filters
 * is refused instead of silently answering a wrong page. Lists continue with
 * "(key, tiebreak) > (last key, last tiebreak)" (or < for newest first), never
 * OFFSET. */
#ifndef ONCEIOT_PAGETOKEN_H
#define ONCEIOT_PAGETOKEN_H

#include "onceiot/mem.h"
#include "onceiot/rpc.h"

#include <stddef.h>
#include <stdint.h>

/* A hash of a list's filters and order (NULL parts allowed). */
uint64_t pagetoken_hash(const char *const *parts, size_t n);
/* The longest key or tie-breaker a token carries, in bytes: every list's
 * keys fit (the longest is a SIM label, 255 characters, at most 1020 bytes
 * of UTF-8), and every token encode makes, decode takes back. */
#define PAGETOKEN_MAX_KEY 1024

/* base64url of {version, hash, key, last}; key and last are text of at most
 * PAGETOKEN_MAX_KEY bytes each. */
const char *pagetoken_encode(arena_t *a, uint64_t hash, const char *key, const char *last);
/* Decodes a token made for hash. ERR_INVALID_ARGUMENT (violation on
 * page_token recorded, status set) when it is malformed or was made for
 * other filters. */
int pagetoken_decode(rpc_call_t *call, const char *token, uint64_t hash, const char **key,
                     const char **last) ONCEIOT_MUSTCHECK;
/* Page size: 0 → def; above max or negative → violation, returns -1. */
int pagetoken_page_size(rpc_call_t *call, int32_t asked, int def, int max);

#endif
