/* Opaque keyset page tokens (see onceiot/pagetoken.h).
 *
 * A token is base64url (no padding) of: version byte, 8-byte hash of the
 * list's filters and order, then two length-prefixed strings: the sort key of
 * the last row returned and its tie-breaker (ICCID or id). Lists continue with
 * "(key, tiebreak) > (last key, last tiebreak)", so rows inserted between
 * pages never shift what comes next. The hash makes a token used with other
 * filters an error instead of a silently wrong page. Tokens are not secret: a
 * forged one only moves the start of a list the caller may read anyway. */
#include "onceiot/pagetoken.h"

#include <sodium.h>
#include <string.h>

#define TOKEN_VERSION 1
/* Decoded: version, hash, two strings with their 2-byte lengths. */
#define TOKEN_MAX_BYTES (1 + 8 + 2 * (2 + PAGETOKEN_MAX_KEY))
#define TOKEN_MAX       ((TOKEN_MAX_BYTES + 2) / 3 * 4) /* its base64 */

uint64_t pagetoken_hash(const char *const *parts, size_t n)
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, 8);
    for (size_t i = 0; i < n; i++) {
        const char *p = parts[i] ? parts[i] : "\x01null";
        crypto_generichash_update(&st, (const unsigned char *)p, strlen(p) + 1);
    }
    unsigned char out[8];
    crypto_generichash_final(&st, out, sizeof(out));
    uint64_t h = 0;
    for (int i = 0; i < 8; i++)
        h = h << 8 | out[i];
    return h;
}

static size_t pagetoken__put_str(unsigned char *p, const char *s)
{
    size_t n = strlen(s);
    p[0] = (unsigned char)(n >> 8);
    p[1] = (unsigned char)n;
    memcpy(p + 2, s, n);
    return n + 2;
}

const char *pagetoken_encode(arena_t *a, uint64_t hash, const char *key, const char *last)
{
    size_t cap = 1 + 8 + 4 + strlen(key) + strlen(last);
    unsigned char *buf = arena_alloc(a, cap);
    size_t n = 0;
    buf[n++] = TOKEN_VERSION;
    for (int i = 7; i >= 0; i--)
        buf[n++] = (unsigned char)(hash >> (8 * i));
    n += pagetoken__put_str(buf + n, key);
    n += pagetoken__put_str(buf + n, last);
    size_t out_len = sodium_base64_encoded_len(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char *out = arena_alloc(a, out_len);
    sodium_bin2base64(out, out_len, buf, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return out;
}

static const char *pagetoken__get_str(arena_t *a, const unsigned char *p, size_t len, size_t *off)
{
    if (*off + 2 > len)
        return NULL;
    size_t n = (size_t)p[*off] << 8 | p[*off + 1];
    if (*off + 2 + n > len)
        return NULL;
    const char *s = arena_strndup(a, (const char *)p + *off + 2, n);
    if (strlen(s) != n)
        return NULL;
    *off += 2 + n;
    return s;
}

int pagetoken_decode(rpc_call_t *call, const char *token, uint64_t hash, const char **key,
                     const char **last)
{
    arena_t *a = rpc_call_arena(call);
    size_t tlen = strlen(token);
    if (tlen > TOKEN_MAX)
        goto bad;
    unsigned char *buf = arena_alloc(a, tlen / 4 * 3 + 3);
    size_t len = 0, off = 9;
    if (sodium_base642bin(buf, tlen / 4 * 3 + 3, token, tlen, NULL, &len, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        len < 9 || buf[0] != TOKEN_VERSION)
        goto bad;
    uint64_t h = 0;
    for (int i = 1; i <= 8; i++)
        h = h << 8 | buf[i];
    if (h != hash) {
        rpc_violation(call, "page_token",
                      "was made for other filters or another order; start again without it");
        return rpc_check_violations(call);
    }
    *key = pagetoken__get_str(a, buf, len, &off);
    *last = *key ? pagetoken__get_str(a, buf, len, &off) : NULL;
    if (!*last || off != len)
        goto bad;
    return 0;
bad:
    rpc_violation(call, "page_token", "is not a token this service made");
    return rpc_check_violations(call);
}

int pagetoken_page_size(rpc_call_t *call, int32_t asked, int def, int max)
{
    if (asked == 0)
        return def;
    if (asked < 0 || asked > max) {
        rpc_violation(call, "page_size", "must be between 1 and %d", max);
        return -1;
    }
    return asked;
}
