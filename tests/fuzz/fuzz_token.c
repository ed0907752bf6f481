/* Login tokens as the gateway receives them: any text verified against a
 * published key (PASETO v4.public parse, footer, kid, signature, claims
 * JSON). Half the inputs start from a valid token's prefix so the fuzzer
 * gets past the header. */
#include "onceiot/token.h"

#include <sodium.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t pk[32], sk[64];
    static token_key_t key;
    static int ready;
    if (!ready) {
        if (sodium_init() < 0)
            __builtin_trap();
        uint8_t seed[32] = {1};
        crypto_sign_seed_keypair(pk, sk, seed);
        token_kid(pk, key.kid);
        memcpy(key.public_key, pk, 32);
        ready = 1;
    }
    arena_t *a = arena_new();
    char *text = arena_alloc(a, size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    token_claims_t claims;
    const char *why = NULL;
    int rc = token_verify(&key, 1, text, 1900000000, &claims, &why);
    if (rc < 0 && !why)
        __builtin_trap();
    /* A valid token with a username made from the input (identity's
     * alphabet and its 3 to 50 characters) must verify and round-trip. */
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-";
    token_claims_t in = {.user_id = 1,
                         .organization_id = 2,
                         .issued_at_ms = 1800000000000,
                         .expires_at = 2000000000};
    in.role = ONCEIOT__COMMON__V1__ROLE__ROLE_USER;
    size_t n = size < 50 ? size : 50;
    if (n < 3 || data[0] % 32 != 0) { /* signing is slow: one input in 32 */
        arena_free(a);
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        in.username[i] = alphabet[data[i] % (sizeof(alphabet) - 1)];
    in.username[n] = '\0';
    char *tok = token_sign(sk, &in, a);
    if (token_verify(&key, 1, tok, 1900000000, &claims, &why) != 0 ||
        strcmp(claims.username, in.username) != 0 || claims.user_id != 1)
        __builtin_trap();
    arena_free(a);
    return 0;
}
