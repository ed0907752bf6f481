/* Signing and verifying the principal the gateway (or a calling service)
 * hands to a service, under a key per issuer and callee. */
#include "onceiot/principal.h"

#include <sodium.h>
#include <stdio.h>
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

int principal_signing_keys_parse(const char *list, principal_signing_keys_t *out)
{
    memset(out, 0, sizeof(*out));
    const char *at = list ? list : "";
    while (*at) {
        const char *end = strchr(at, ',');
        size_t n = end ? (size_t)(end - at) : strlen(at);
        const char *colon = memchr(at, ':', n);
        if (!colon || out->n == PRINCIPAL_MAX_AUDIENCES ||
            !principal_issuer_valid(at, (size_t)(colon - at)) || n - (size_t)(colon - at) != 65)
            return ERR_CONFIG;
        principal_signing_key_t *k = &out->keys[out->n];
        memcpy(k->audience, at, (size_t)(colon - at));
        k->audience[colon - at] = '\0';
        char hex[65];
        memcpy(hex, colon + 1, 64);
        hex[64] = '\0';
        if (principal_key_parse(hex, &k->key) < 0)
            return ERR_CONFIG;
        for (size_t i = 0; i < out->n; i++)
            if (strcmp(out->keys[i].audience, k->audience) == 0)
                return ERR_CONFIG;
        out->n++;
        at += n;
        if (*at == ',')
            at++;
    }
    return 0;
}

const principal_key_t *principal_signing_key(const principal_signing_keys_t *keys,
                                             const char *audience)
{
    for (size_t i = 0; i < keys->n; i++)
        if (strcmp(keys->keys[i].audience, audience) == 0)
            return &keys->keys[i].key;
    return NULL;
}

int64_t principal_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool principal_issuer_valid(const char *s, size_t n)
{
    if (n == 0 || n > PRINCIPAL_ISSUER_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return false;
    return true;
}

void principal_key_derive(const principal_key_t *callee_secret, const char *issuer,
                          principal_key_t *out)
{
    char label[64];
    int n = snprintf(label, sizeof(label), "onceiot-principal:%s", issuer);
    crypto_generichash(out->bytes, sizeof(out->bytes), (const uint8_t *)label, (size_t)n,
                       callee_secret->bytes, sizeof(callee_secret->bytes));
    sodium_memzero(label, sizeof(label));
}

void principal_sign(const principal_key_t *key, principal_t *p, const char *method, arena_t *a,
                    rpc_md_t md[2])
{
    if (!p->issuer || !*p->issuer)
        p->issuer = "gateway";
    p->method = (char *)method;
    p->issued_at_ms = principal_now_ms();
    size_t n = onceiot__common__v1__principal__get_packed_size(p);
    uint8_t *buf = arena_alloc(a, n ? n : 1);
    onceiot__common__v1__principal__pack(p, buf);
    /* The signature entry is the MAC followed by the issuer's name, which
     * tells the callee which key to check it with. */
    size_t issuer_len = strlen(p->issuer);
    uint8_t *sig = arena_alloc(a, crypto_auth_BYTES + issuer_len);
    crypto_auth(sig, buf, n, key->bytes);
    memcpy(sig + crypto_auth_BYTES, p->issuer, issuer_len);
    md[0] = (rpc_md_t){PRINCIPAL_MD_KEY, (const char *)buf, n};
    md[1] = (rpc_md_t){PRINCIPAL_SIG_KEY, (const char *)sig, crypto_auth_BYTES + issuer_len};
}

int principal_verify(const principal_key_t *secret, const uint8_t *bytes, size_t len,
                     const uint8_t *sig, size_t sig_len, const char *method, int64_t now_ms,
                     arena_t *a, principal_t **out, const char **why)
{
    *out = NULL;
    *why = "the principal's signature does not verify";
    if (sig_len <= crypto_auth_BYTES)
        return ERR_UNAUTHENTICATED;
    const char *issuer = (const char *)sig + crypto_auth_BYTES;
    size_t issuer_len = sig_len - crypto_auth_BYTES;
    if (!principal_issuer_valid(issuer, issuer_len))
        return ERR_UNAUTHENTICATED;
    char name[PRINCIPAL_ISSUER_MAX + 1];
    memcpy(name, issuer, issuer_len);
    name[issuer_len] = '\0';
    principal_key_t key;
    principal_key_derive(secret, name, &key);
    /* The MAC is checked before a single byte is parsed. */
    int bad = crypto_auth_verify(sig, bytes, len, key.bytes);
    sodium_memzero(&key, sizeof(key));
    if (bad != 0)
        return ERR_UNAUTHENTICATED;
    principal_t *p = onceiot__common__v1__principal__unpack(arena_allocator(a), len, bytes);
    if (!p) {
        *why = "the principal does not parse";
        return ERR_UNAUTHENTICATED;
    }
    if (!p->issuer || strcmp(p->issuer, name) != 0) {
        *why = "the principal names another issuer than its signature";
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
