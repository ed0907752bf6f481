/* API keys: create (the only time the secret is shown), list, get, revoke.
 * A key belongs to a user; the tenant rules are the user's. */
#include "identity.h"

#include <string.h>

#define ROLE_ADMIN ONCEIOT__COMMON__V1__ROLE__ROLE_ADMIN
#define ROLE_USER  ONCEIOT__COMMON__V1__ROLE__ROLE_USER

static int identity__no_key(rpc_call_t *call, int64_t id)
{
    return rpc_fail(call, ERR_NOT_FOUND, "no API key %lld", (long long)id);
}

/* Resolves the user whose keys a call is about (0: the caller) and the role
 * that bounds their keys' scopes. Others' keys are for admins of their
 * organization (or superusers) only, and a superuser's keys for superusers
 * only: anyone else gets NOT_FOUND, as for any user they may not see.
 * making: the call makes a key (refused for an erased user). */
static int identity__key_owner_or_status(rpc_call_t *call, const principal_t *p, int64_t user_id,
                                         bool making, int64_t *owner, identity_role_t *role,
                                         bool *superuser)
{
    *owner = user_id ? user_id : p->user_id;
    *role = p->role;
    *superuser = p->is_superuser;
    if (*owner == p->user_id)
        return 0;
    if (!p->is_superuser && p->role != ROLE_ADMIN)
        return rpc_fail(call, ERR_NOT_FOUND, "no user %lld", (long long)*owner);
    identity_user_t *u;
    int rc = identity_store_user_get_or_status(call, *owner, &u);
    if (rc < 0)
        return rc;
    if (!identity_can_manage(p, u->id, u->organization_id, u->is_superuser))
        return rpc_fail(call, ERR_NOT_FOUND, "no user %lld", (long long)*owner);
    *role = u->role;
    *superuser = u->is_superuser;
    /* Keys are read for an erased user (all revoked), never made. */
    if (u->erased_at && making)
        return rpc_fail(call, ERR_FAILED_PRECONDITION, "user %lld is erased", (long long)u->id);
    return 0;
}

/* True when a key of a user with this role may carry scope: readonly users
 * read ("*:read"), users everything but "admin", admins everything. */
static bool identity__role_allows(identity_role_t role, bool superuser, const char *scope)
{
    if (superuser || role == ROLE_ADMIN)
        return true;
    if (strcmp(scope, "admin") == 0)
        return false;
    if (role == ROLE_USER)
        return true;
    size_t n = strlen(scope);
    return n > 5 && strcmp(scope + n - 5, ":read") == 0;
}

/* A new key never carries more than its creator could use: every scope must
 * be one the creating credential holds (a login token holds every scope;
 * an API key its own, "admin" standing for all), and one the owner's role
 * allows. Records a violation on "scopes" for the first that is not. */
static void identity__check_grant(rpc_call_t *call, const principal_t *p, identity_role_t role,
                                  bool superuser, char **scopes, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!principal_has_scope(p, scopes[i])) {
            rpc_violation(call, "scopes",
                          "\"%s\" is not a scope of the credential creating the key; a key "
                          "can grant only scopes it holds",
                          scopes[i]);
            return;
        }
        if (!identity__role_allows(role, superuser, scopes[i])) {
            rpc_violation(call, "scopes",
                          "the key's owner has role %s, which does not allow \"%s\"",
                          identity_role_name(role), scopes[i]);
            return;
        }
    }
}

int identity_create_api_key(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Identity__V1__CreateApiKeyRequest *r = (const void *)req;
    identity_t *id = identity_of(call);
    arena_t *a = rpc_call_arena(call);
    const principal_t *p = identity_caller_or_status(call);
    if (!p)
        return ERR_UNAUTHENTICATED;
    if (!p->is_superuser && !principal_role_at_least(p->role, ROLE_USER))
        return rpc_fail(call, ERR_PERMISSION_DENIED, "readonly users cannot create API keys");
    size_t name_len = strlen(r->name);
    if (name_len < 1 || name_len > 100)
        rpc_violation(call, "name", "must be 1 to 100 characters");
    if (strlen(r->description) > 1000)
        rpc_violation(call, "description", "must be at most 1000 characters");
    identity_validate_scopes(call, "scopes", r->scopes, r->n_scopes);
    int64_t expires_us = 0;
    if (r->expires_at) {
        expires_us = r->expires_at->seconds * 1000000 + r->expires_at->nanos / 1000;
        if (r->expires_at->nanos < 0 || r->expires_at->nanos > 999999999 ||
            expires_us <= principal_now_ms() * 1000)
            rpc_violation(call, "expires_at", "must be in the future");
    }
    if (r->user_id < 0)
        rpc_violation(call, "user_id", "must be positive, or 0 for yourself");
    int rc = rpc_check_violations(call);
    if (rc < 0)
        return rc;
    int64_t owner;
    identity_role_t owner_role;
    bool owner_su;
    if ((rc = identity__key_owner_or_status(call, p, r->user_id, true, &owner, &owner_role,
                                            &owner_su)) < 0)
        return rc;
    identity__check_grant(call, p, owner_role, owner_su, r->scopes, r->n_scopes);
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;

    char *secret = arena_alloc(a, IDENTITY_SECRET_LEN + 1);
    identity_apikey_generate(secret);
    uint8_t hash[32];
    identity_apikey_hash(id->pepper, secret, hash);
    char prefix[IDENTITY_KEY_PREFIX_LEN + 1];
    memcpy(prefix, secret, IDENTITY_KEY_PREFIX_LEN);
    prefix[IDENTITY_KEY_PREFIX_LEN] = '\0';
    /* A replay answers the first key and its secret (stored sealed). */
    db_conn_t *conn = svc_db_or_status(call);
    requestid_t rq;
    if ((rc = requestid_begin_or_status(call, conn, r->request_id, req, &rq, resp)) != 0)
        return rc < 0 ? rc : 0;
    identity_apikey_t *k;
    rc = identity_store_key_insert_or_status(call, owner, hash, prefix, r->name, r->description,
                                             r->scopes, r->n_scopes, expires_us, &k);
    if (rc < 0)
        return rc;
    Onceiot__Identity__V1__CreateApiKeyResponse *out = arena_alloc(a, sizeof(*out));
    onceiot__identity__v1__create_api_key_response__init(out);
    out->api_key = k;
    out->secret = secret;
    if ((rc = requestid_commit_or_status(call, conn, &rq, &out->base)) < 0)
        return rc;
    *resp = &out->base;
    return 0;
}

int identity_list_api_keys(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Identity__V1__ListApiKeysRequest *r = (const void *)req;
    arena_t *a = rpc_call_arena(call);
    const principal_t *p = identity_caller_or_status(call);
    if (!p)
        return ERR_UNAUTHENTICATED;
    int32_t limit = identity_validate_page_size(call, "page_size", r->page_size);
    if (r->user_id < 0)
        rpc_violation(call, "user_id", "must be positive, or 0 for yourself");
    int64_t owner_hint = r->user_id ? r->user_id : p->user_id;
    char *filters = arena_printf(a, "keys|user=%lld", (long long)owner_hint);
    int64_t after = 0;
    identity_page_token_parse(call, "page_token", r->page_token, filters, &after);
    int rc = rpc_check_violations(call);
    if (rc < 0)
        return rc;
    int64_t owner;
    identity_role_t owner_role;
    bool owner_su;
    if ((rc = identity__key_owner_or_status(call, p, r->user_id, false, &owner, &owner_role,
                                            &owner_su)) < 0)
        return rc;
    identity_apikey_t **keys;
    size_t n;
    if ((rc = identity_store_key_list_or_status(call, owner, after, limit + 1, &keys, &n)) < 0)
        return rc;
    Onceiot__Identity__V1__ListApiKeysResponse *out = arena_alloc(a, sizeof(*out));
    onceiot__identity__v1__list_api_keys_response__init(out);
    if (n > (size_t)limit) {
        n = (size_t)limit;
        out->next_page_token = identity_page_token(a, keys[n - 1]->id, filters);
    }
    out->api_keys = keys;
    out->n_api_keys = n;
    *resp = &out->base;
    return 0;
}

/* Finds the caller (*p) and loads a key it may see (its owner is one the
 * caller may manage). */
static int identity__visible_key_or_status(rpc_call_t *call, int64_t key_id, const principal_t **p,
                                           identity_apikey_t **out)
{
    if (!(*p = identity_caller_or_status(call)))
        return ERR_UNAUTHENTICATED;
    if (key_id <= 0)
        rpc_violation(call, "id", "must be positive");
    int rc = rpc_check_violations(call);
    if (rc < 0)
        return rc;
    int64_t owner_org;
    bool owner_su;
    if ((rc = identity_store_key_get_or_status(call, key_id, out, &owner_org, &owner_su)) < 0)
        return rc;
    if (!identity_can_manage(*p, (*out)->user_id, owner_org, owner_su))
        return identity__no_key(call, key_id);
    return 0;
}

int identity_get_api_key(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Identity__V1__GetApiKeyRequest *r = (const void *)req;
    const principal_t *p;
    identity_apikey_t *k;
    int rc = identity__visible_key_or_status(call, r->id, &p, &k);
    if (rc < 0)
        return rc;
    *resp = &k->base;
    return 0;
}

int identity_revoke_api_key(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Identity__V1__RevokeApiKeyRequest *r = (const void *)req;
    const principal_t *p;
    identity_apikey_t *k;
    int rc = identity__visible_key_or_status(call, r->id, &p, &k);
    if (rc < 0)
        return rc;
    if (!p->is_superuser && !principal_role_at_least(p->role, ROLE_USER))
        return rpc_fail(call, ERR_PERMISSION_DENIED, "readonly users cannot revoke API keys");
    if ((rc = identity_store_key_revoke_or_status(call, r->id, &k)) < 0)
        return rc;
    identity_cache_forget(&identity_of(call)->cache, r->id, 0);
    *resp = &k->base;
    return 0;
}
