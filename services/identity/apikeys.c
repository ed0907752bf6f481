/* API key secrets: 256 random bits as base62 behind a recognisable prefix,
 * stored only as a keyed hash. A fast keyed hash (not a password hash) is
 * right here: the secret has full entropy, so there is nothing to stretch,
 * and the gateway needs the lookup to be one index probe. */
#include "identity.h"

#include <string.h>

static const char identity__base62[] =
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

void identity_apikey_generate(char secret[IDENTITY_SECRET_LEN + 1])
{
    memcpy(secret, IDENTITY_SECRET_PREFIX, 8);
    size_t n = 0;
    while (n < IDENTITY_SECRET_CHARS) {
        uint8_t buf[64];
        randombytes_buf(buf, sizeof(buf));
        /* Rejection sampling: 248 = 4 * 62, so every character is equally
         * likely (43 of them carry 256 bits). */
        for (size_t i = 0; i < sizeof(buf) && n < IDENTITY_SECRET_CHARS; i++)
            if (buf[i] < 248)
                secret[8 + n++] = identity__base62[buf[i] % 62];
        sodium_memzero(buf, sizeof(buf));
    }
    secret[IDENTITY_SECRET_LEN] = '\0';
}

bool identity_apikey_well_formed(const char *s)
{
    if (strnlen(s, IDENTITY_SECRET_LEN + 1) != IDENTITY_SECRET_LEN ||
        strncmp(s, IDENTITY_SECRET_PREFIX, 8) != 0)
        return false;
    for (size_t i = 8; i < IDENTITY_SECRET_LEN; i++)
        if (!strchr(identity__base62, s[i]) || s[i] == '\0')
            return false;
    return true;
}

void identity_apikey_hash(const uint8_t pepper[32], const char *secret, uint8_t out[32])
{
    crypto_generichash(out, 32, (const uint8_t *)secret, strlen(secret), pepper, 32);
}
