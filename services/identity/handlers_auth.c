/* Login, Authenticate and GetVerificationKeys: how callers prove who they
 * are. Login is public; the other two serve only the gateway. */
#include "identity.h"

#include <string.h>

#define LOGIN_FAILED "invalid username or password"
#define KEY_INVALID  "invalid API key"

const char *identity_client_address(const principal_t *p)
{
    return p && p->client_address ? p->client_address : "";
}

/* Every failure of Login looks the same to the caller: unknown user, wrong
 * password, deactivated user, or a username in its backoff window for the
 * client's address. Login is public: the gateway's anonymous principal
 * tells the client's address. */
int identity_login(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Identity__V1__LoginRequest *r = (const void *)req;
    identity_t *id = identity_of(call);
    arena_t *a = rpc_call_arena(call);
    const principal_t *caller;
    int rc = svc_principal_optional_or_status(call, &caller);
    if (rc < 0)
        return rc;
    const char *address = identity_client_address(caller);
    if (!r->username[0] || !r->password[0] || strlen(r->username) > 50 ||
        strlen(r->password) > 1024)
        return rpc_fail(call, ERR_UNAUTHENTICATED, LOGIN_FAILED);
    if ((rc = identity_password_slot_or_status(call)) < 0)
        return rc;
    /* A username names its user in any organization; nothing but the
     * user's own row (and its backoff) is read or changed. */
    if (!svc_db_system_or_status(call))
        return ERR_UNAVAILABLE;
    rc = identity_store_login_locked_or_status(call, r->username, address);
    if (rc < 0)
        return rc;
    if (rc == 1)
        return rpc_fail(call, ERR_UNAUTHENTICATED, LOGIN_FAILED);
    identity_login_row_t row;
    if ((rc = identity_store_login_lookup_or_status(call, r->username, &row)) < 0)
        return rc;
    bool rehash = false;
    /* An unknown user still costs one Argon2id verification. */
    bool ok = identity_password_verify(r->password, row.id ? row.password_hash : id->dummy_hash,
                                       &rehash) &&
              row.id && row.is_active;
    if (!ok) {
        if ((rc = identity_store_login_failed_or_status(call, r->username, address)) < 0)
            return rc;
        return rpc_fail(call, ERR_UNAUTHENTICATED, LOGIN_FAILED);
    }
    char new_hash[crypto_pwhash_STRBYTES];
    if (rehash && identity_password_hash(r->password, new_hash) < 0)
        rehash = false; /* keep the old hash; the next login upgrades it */
    identity_user_t *u;
    int64_t issued_ms;
    rc = identity_store_login_succeeded_or_status(call, row.id, r->username, address,
                                                  rehash ? new_hash : NULL, &u, &issued_ms);
    if (rc < 0)
        return rc;

    token_claims_t c;
    memset(&c, 0, sizeof(c));
    c.user_id = u->id;
    snprintf(c.username, sizeof(c.username), "%s", u->username);
    c.organization_id = u->organization_id;
    c.role = u->role;
    c.is_superuser = u->is_superuser;
    /* The database's clock when the row was read under its lock: a role
     * change, deactivation or new password that follows it gets a later
     * token_not_before, so this token is refused once it stands for a
     * stale role (see identity__user_update). */
    c.issued_at_ms = issued_ms;
    c.expires_at = issued_ms / 1000 + id->token_ttl_s;
    Onceiot__Identity__V1__LoginResponse *out = arena_alloc(a, sizeof(*out));
    onceiot__identity__v1__login_response__init(out);
    out->token = token_sign(id->sign_sk, &c, a);
    identity_timestamp(a, c.expires_at * 1000000, &out->expires_at);
    out->user = u;
    *resp = &out->base;
    return 0;
}

int identity_authenticate(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Identity__V1__AuthenticateRequest *r = (const void *)req;
    identity_t *id = identity_of(call);
    arena_t *a = rpc_call_arena(call);
    /* Internal: the runtime lets only its declared caller, the gateway as
     * "service:gateway", through. */
    if (!svc_principal_or_status(call))
        return ERR_UNAUTHENTICATED;
    int rc;
    if (!identity_apikey_well_formed(r->secret))
        return rpc_fail(call, ERR_UNAUTHENTICATED, KEY_INVALID);
    uint8_t hash[32];
    identity_apikey_hash(id->pepper, r->secret, hash);
    identity_auth_t auth;
    if (!identity_cache_get(&id->cache, hash, a, &auth)) {
        /* The key's organization is what this finds out: the lookup runs
         * over every organization. */
        if (!svc_db_system_or_status(call))
            return ERR_UNAVAILABLE;
        if ((rc = identity_store_key_authenticate_or_status(call, hash, &auth)) < 0)
            return rc;
        if (rc == 0)
            return rpc_fail(call, ERR_UNAUTHENTICATED, KEY_INVALID);
        identity_cache_put(&id->cache, hash, &auth);
    }
    /* A cached key may have expired since it was cached. */
    if (auth.expires_at && auth.expires_at <= principal_now_ms() / 1000)
        return rpc_fail(call, ERR_UNAUTHENTICATED, KEY_INVALID);
    identity_cache_count(&id->cache, auth.key_id);

    principal_t *p = arena_alloc(a, sizeof(*p));
    onceiot__common__v1__principal__init(p);
    p->user_id = auth.user_id;
    p->username = arena_strdup(a, auth.username);
    p->organization_id = auth.organization_id;
    p->role = auth.role;
    p->is_superuser = auth.is_superuser;
    p->scopes = auth.scopes;
    p->n_scopes = auth.n_scopes;
    p->expires_at = auth.expires_at;
    p->credential = arena_printf(a, "api_key:%lld", (long long)auth.key_id);
    Onceiot__Identity__V1__AuthenticateResponse *out = arena_alloc(a, sizeof(*out));
    onceiot__identity__v1__authenticate_response__init(out);
    out->principal = p;
    out->cache_seconds = IDENTITY_CACHE_SECONDS;
    *resp = &out->base;
    return 0;
}

int identity_get_verification_keys(rpc_call_t *call, const ProtobufCMessage *req,
                                   ProtobufCMessage **resp)
{
    (void)req;
    identity_t *id = identity_of(call);
    arena_t *a = rpc_call_arena(call);
    /* Internal: the runtime lets only its declared caller, the gateway as
     * "service:gateway", through. */
    if (!svc_principal_or_status(call))
        return ERR_UNAUTHENTICATED;
    int rc;
    Onceiot__Identity__V1__GetVerificationKeysResponse *out = arena_alloc(a, sizeof(*out));
    onceiot__identity__v1__get_verification_keys_response__init(out);
    Onceiot__Identity__V1__VerificationKey *k = arena_alloc(a, sizeof(*k));
    onceiot__identity__v1__verification_key__init(k);
    k->kid = id->verify_key.kid;
    k->public_key.data = id->verify_key.public_key;
    k->public_key.len = sizeof(id->verify_key.public_key);
    out->keys = arena_alloc(a, sizeof(*out->keys));
    out->keys[0] = k;
    out->n_keys = 1;
    /* Revocations of every organization, for the gateway. */
    if (!svc_db_system_or_status(call))
        return ERR_UNAVAILABLE;
    /* Older revocations cover only tokens that have expired anyway. */
    rc = identity_store_revocations_or_status(call, id->token_ttl_s + 60, &out->revocations,
                                              &out->n_revocations);
    if (rc < 0)
        return rc;
    rc = identity_store_revoked_keys_or_status(call, id->token_ttl_s + 60, &out->revoked_api_keys,
                                               &out->n_revoked_api_keys);
    if (rc < 0)
        return rc;
    out->refresh_seconds = IDENTITY_REFRESH_SECONDS;
    *resp = &out->base;
    return 0;
}
