/* Password hashing: Argon2id for everything new; bcrypt only to verify the
 * old system's hashes, which are then replaced at the next login. */
#include "identity.h"

#include <crypt.h>
#include <string.h>

int identity_password_hash(const char *password, char out[crypto_pwhash_STRBYTES])
{
    if (crypto_pwhash_str(out, password, strlen(password), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                          crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0)
        return ERR_RESOURCE_EXHAUSTED; /* Argon2id could not get its memory */
    return 0;
}

static void identity__slot_release(void *arg)
{
    atomic_fetch_sub((atomic_long *)arg, 1);
}

int identity_password_slot_or_status(rpc_call_t *call)
{
    identity_t *id = identity_of(call);
    if (atomic_fetch_add(&id->hash_busy, 1) >= id->hash_slots) {
        atomic_fetch_sub(&id->hash_busy, 1);
        return rpc_fail(call, ERR_RESOURCE_EXHAUSTED,
                        "too many password checks in progress; retry in a second");
    }
    rpc_call_defer(call, identity__slot_release, &id->hash_busy);
    return 0;
}

static bool identity__is_bcrypt(const char *hash)
{
    return strncmp(hash, "$2b$", 4) == 0 || strncmp(hash, "$2a$", 4) == 0 ||
           strncmp(hash, "$2y$", 4) == 0;
}

bool identity_password_verify(const char *password, const char *hash, bool *needs_rehash)
{
    *needs_rehash = false;
    if (strncmp(hash, "$argon2id$", 10) == 0) {
        if (crypto_pwhash_str_verify(hash, password, strlen(password)) != 0)
            return false;
        *needs_rehash = crypto_pwhash_str_needs_rehash(hash, crypto_pwhash_OPSLIMIT_INTERACTIVE,
                                                       crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0;
        return true;
    }
    if (!identity__is_bcrypt(hash))
        return false;
    /* crypt_rn recomputes the hash with the stored salt and cost; the two
     * strings are then compared in constant time. The struct is large, so
     * it lives on the heap rather than a worker's stack. */
    struct crypt_data *data = mem_calloc(1, sizeof(*data));
    const char *got = crypt_rn(password, hash, data, (int)sizeof(*data));
    size_t len = strlen(hash);
    bool ok = got && got[0] != '*' && strlen(got) == len && sodium_memcmp(got, hash, len) == 0;
    sodium_memzero(data, sizeof(*data));
    mem_free(data);
    *needs_rehash = ok;
    return ok;
}
