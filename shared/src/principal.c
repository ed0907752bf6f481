/* Signing and verifying the principal the gateway hands to services. */
#include "onceiot/principal.h"

#include <sodium.h>
#include <string.h>
#include <time.h>

int principal_key_parse(const char *hex, principal_key_t *out)
{
    size_t bin_len = 0;
    if (!hex || strlen(hex) != 64 ||
        sodium_hex2bin(out->bytes, sizeof(out->bytes), hex, 64, NULL, &bin_len, NULL) != 0 ||
        bin_len != sizeof(out->bytes))
        return ERR_CONFIG;
    return 0;
}

int64_t principal_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void principal_sign(const principal_key_t *key, principal_t *p, const char *method, arena_t *a,
                    rpc_md_t md[2])
{
    p->method = (char *)method;
    p->issued_at_ms = principal_now_ms();
    size_t n = onceiot__common__v1__principal__get_packed_size(p);
    uint8_t *buf = arena_alloc(a, n ? n : 1);
    onceiot__common__v1__principal__pack(p, buf);
    uint8_t *mac = arena_alloc(a, crypto_auth_BYTES);
    crypto_auth(mac, buf, n, key->bytes);
    md[0] = (rpc_md_t){PRINCIPAL_MD_KEY, (const char *)buf, n};
    md[1] = (rpc_md_t){PRINCIPAL_SIG_KEY, (const char *)mac, crypto_auth_BYTES};
}

int principal_verify(const principal_key_t *key, const uint8_t *bytes, size_t len,
                     const uint8_t *sig, size_t sig_len, const char *method, int64_t now_ms,
                     arena_t *a, principal_t **out, const char **why)
{
    *out = NULL;
    /* The MAC is checked before a single byte is parsed. */
    if (sig_len != crypto_auth_BYTES || crypto_auth_verify(sig, bytes, len, key->bytes) != 0) {
        *why = "the principal's signature does not verify";
        return ERR_UNAUTHENTICATED;
    }
    principal_t *p = onceiot__common__v1__principal__unpack(arena_allocator(a), len, bytes);
    if (!p) {
        *why = "the principal does not parse";
        return ERR_UNAUTHENTICATED;
    }
    if (!p->method || strcmp(p->method, method) != 0) {
        *why = "the principal was issued for another method";
        return ERR_UNAUTHENTICATED;
    }
    if (p->issued_at_ms > now_ms + 5000 || now_ms - p->issued_at_ms > PRINCIPAL_MAX_AGE_MS) {
        *why = "the principal is too old";
        return ERR_UNAUTHENTICATED;
    }
    if (p->expires_at && p->expires_at * 1000 <= now_ms) {
        *why = "the credential has expired";
        return ERR_UNAUTHENTICATED;
    }
    *out = p;
    return 0;
}

bool principal_role_at_least(Onceiot__Common__V1__Role role, Onceiot__Common__V1__Role min)
{
    return (int)role >= (int)min;
}

bool principal_has_scope(const principal_t *p, const char *scope)
{
    for (size_t i = 0; i < p->n_scopes; i++)
        if (strcmp(p->scopes[i], scope) == 0 || strcmp(p->scopes[i], "admin") == 0)
            return true;
    return false;
}
