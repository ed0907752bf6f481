/* Users: create, read, list, update, deactivate, erase, change password.
 *
 * Tenant rules: superusers manage everyone; a non-superuser admin manages
 * its own organization's users (and not superusers); user and readonly
 * callers see only themselves. Another tenant's user is NOT_FOUND, never
 * PERMISSION_DENIED, so ids leak nothing. */
#include "identity.h"

#include <string.h>

#define ROLE_ADMIN ONCEIOT__COMMON__V1__ROLE__ROLE_ADMIN

/* The update mask paths UpdateUser accepts. */
enum { MASK_FULL_NAME = 1, MASK_EMAIL = 2, MASK_ROLE = 4, MASK_ACTIVE = 8 };

const principal_t *identity_caller_or_status(rpc_call_t *call)
{
    const principal_t *p = svc_principal_or_status(call);
    if (p && p->user_id <= 0) {
        rpc_fail(call, ERR_UNAUTHENTICATED, "this method needs a user's credentials");
        return NULL;
    }
    return p;
}

bool identity_can_see(const principal_t *p, int64_t user_id, int64_t org)
{
    if (p->is_superuser)
        return true;
    if (p->role == ROLE_ADMIN)
        return org == p->organization_id;
    return user_id == p->user_id;
}

bool identity_can_manage(const principal_t *p, int64_t user_id, int64_t org, bool superuser)
{
    return identity_can_see(p, user_id, org) && (!superuser || p->is_superuser);
}

static int identity__not_found(rpc_call_t *call, int64_t id)
{
    return rpc_fail(call, ERR_NOT_FOUND, "no user %lld", (long long)id);
}

/* Loads a user the caller may manage (write): visible, and a superuser
 * only to superusers. Sets the status otherwise. An erased user is still
 * loaded (EraseUser answers it again); the other writes refuse it with
 * identity__not_erased_or_status. */
static int identity__visible_user_or_status(rpc_call_t *call, const principal_t *p, int64_t id,
                                            identity_user_t **out)
{
    if (!p->is_superuser && p->role != ROLE_ADMIN && id != p->user_id)
        return rpc_fail(call, ERR_PERMISSION_DENIED, "only admins manage other users");
    int rc = identity_store_user_get_or_status(call, id, out);
    if (rc < 0)
        return rc;
    if (!identity_can_see(p, id, (*out)->organization_id))
        return identity__not_found(call, id);
    if ((*out)->is_superuser && !p->is_superuser)
        return rpc_fail(call, ERR_PERMISSION_DENIED, "only superusers manage superusers");
    return 0;
}

static int identity__not_erased_or_status(rpc_call_t *call, const identity_user_t *u)
{
    if (u->erased_at)
        return rpc_fail(call, ERR_FAILED_PRECONDITION, "user %lld is erased and cannot change",
                        (long long)u->id);
    return 0;
}

/* A user the caller may change: manageable and not erased. */
static int identity__managed_user_or_status(rpc_call_t *call, const principal_t *p, int64_t id,
                                            identity_user_t **out)
{
    int rc = identity__visible_user_or_status(call, p, id, out);
    return rc < 0 ? rc : identity__not_erased_or_status(call, *out);
}

/* Finds the caller (*p) and checks that it holds the admin role (or is a
 * superuser). Sets the status otherwise. */
static int identity__admin_or_status(rpc_call_t *call, const principal_t **p)
{
    if (!(*p = identity_caller_or_status(call)))
        return ERR_UNAUTHENTICATED;
    if (!(*p)->is_superuser && (*p)->role != ROLE_ADMIN)
        return rpc_fail(call, ERR_PERMISSION_DENIED, "this method needs the admin role");
    return 0;
}

/* Writes the fields of in that bits names to user id and answers with the
 * user. Role and activity are part of cached Authenticate answers, so the
 * user's are forgotten. */
static int identity__save_user_or_status(rpc_call_t *call, int64_t id, int bits,
                                         const identity_user_t *in, ProtobufCMessage **resp)
{
    identity_user_t *u;
    int rc = identity_store_user_update_or_status(call, id, bits & MASK_FULL_NAME, in->full_name,
                                                  bits & MASK_EMAIL, in->email, bits & MASK_ROLE,
                                                  in->role, bits & MASK_ACTIVE, in->is_active, &u);
    if (rc < 0)
        return rc;
    identity_cache_forget(&identity_of(call)->cache, 0, id);
    *resp = &u->base;
    return 0;
}

int identity_create_user(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Identity__V1__CreateUserRequest *r = (const void *)req;
    const principal_t *p;
    int rc = identity__admin_or_status(call, &p);
    if (rc < 0)
        return rc;
    identity_validate_username(call, "username", r->username);
    identity_validate_email(call, "email", r->email);
    identity_validate_password(call, "password", r->password);
    identity_validate_full_name(call, "full_name", r->full_name);
    identity_role_t role = r->role ? r->role : ONCEIOT__COMMON__V1__ROLE__ROLE_USER;
    identity_validate_role(call, "role", role);
    if (r->organization_id < 0)
        rpc_violation(call, "organization_id", "must be positive");
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    /* Only superusers choose the organization; others create in their own. */
    int64_t org = p->is_superuser && r->organization_id ? r->organization_id : p->organization_id;
    char hash[crypto_pwhash_STRBYTES];
    if ((rc = identity_password_slot_or_status(call)) < 0)
        return rc;
    if ((rc = identity_password_hash(r->password, hash)) < 0)
        return rpc_fail(call, rc, "the password could not be hashed; retry");
    /* Hashed before the transaction, so no connection waits on Argon2; a
     * replayed request id hashes for nothing, which is rare. */
    db_conn_t *conn = svc_db_or_status(call);
    requestid_t rq;
    if ((rc = requestid_begin_or_status(call, conn, r->request_id, req, &rq, resp)) != 0)
        return rc < 0 ? rc : 0; /* or the first answer, replayed */
    identity_user_t *u;
    rc = identity_store_user_insert_or_status(call, r->username, r->email, hash, r->full_name, role,
                                              org, &u);
    if (rc < 0 || (rc = requestid_commit_or_status(call, conn, &rq, &u->base)) < 0)
        return rc;
    *resp = &u->base;
    return 0;
}

int identity_get_user(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Identity__V1__GetUserRequest *r = (const void *)req;
    /* Besides users, the services the rule lists (support, checking that an
     * assignee is active staff) call it with their own principal: a
     * superuser without a user id, who sees any user. */
    const principal_t *p = svc_principal_or_status(call);
    if (p && p->user_id <= 0 && strncmp(p->credential, "service:", 8) != 0) {
        rpc_fail(call, ERR_UNAUTHENTICATED, "this method needs a user's credentials");
        return ERR_UNAUTHENTICATED;
    }
    if (!p)
        return ERR_UNAUTHENTICATED;
    if (r->id <= 0)
        rpc_violation(call, "id", "must be positive");
    int rc = rpc_check_violations(call);
    if (rc < 0)
        return rc;
    if (!p->is_superuser && p->role != ROLE_ADMIN && r->id != p->user_id)
        return identity__not_found(call, r->id);
    identity_user_t *u;
    if ((rc = identity_store_user_get_or_status(call, r->id, &u)) < 0)
        return rc;
    if (!identity_can_see(p, u->id, u->organization_id))
        return identity__not_found(call, r->id);
    *resp = &u->base;
    return 0;
}

int identity_list_users(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Identity__V1__ListUsersRequest *r = (const void *)req;
    const principal_t *p = identity_caller_or_status(call);
    if (!p)
        return ERR_UNAUTHENTICATED;
    arena_t *a = rpc_call_arena(call);
    int32_t limit = identity_validate_page_size(call, "page_size", r->page_size);
    if (r->role)
        identity_validate_role(call, "role", r->role);
    int active = -1;
    if (strcmp(r->active, "true") == 0)
        active = 1;
    else if (strcmp(r->active, "false") == 0)
        active = 0;
    else if (r->active[0])
        rpc_violation(call, "active", "must be \"true\", \"false\" or empty");
    if (r->organization_id < 0)
        rpc_violation(call, "organization_id", "must be positive");
    bool admin = p->is_superuser || p->role == ROLE_ADMIN;
    int64_t org = p->is_superuser ? r->organization_id : p->organization_id;
    /* A user or readonly caller lists itself only. */
    int64_t self = admin ? 0 : p->user_id;
    char *filters = arena_printf(a, "users|org=%lld|role=%d|active=%d|self=%lld", (long long)org,
                                 (int)r->role, active, (long long)self);
    int64_t after = 0;
    identity_page_token_parse(call, "page_token", r->page_token, filters, &after);
    int rc = rpc_check_violations(call);
    if (rc < 0)
        return rc;

    Onceiot__Identity__V1__ListUsersResponse *out = arena_alloc(a, sizeof(*out));
    onceiot__identity__v1__list_users_response__init(out);
    identity_user_t **users = NULL;
    size_t n = 0;
    if (self) {
        identity_user_t *u;
        if (after < self && (rc = identity_store_user_get_or_status(call, self, &u)) == 0 &&
            (!r->role || u->role == r->role) && (active < 0 || u->is_active == (active == 1))) {
            users = arena_alloc(a, sizeof(*users));
            users[n++] = u;
        }
        if (rc < 0)
            return rc;
    } else {
        rc = identity_store_user_list_or_status(call, after, org, r->role, active, limit + 1,
                                                &users, &n);
        if (rc < 0)
            return rc;
        if (n > (size_t)limit) {
            n = (size_t)limit;
            out->next_page_token = identity_page_token(a, users[n - 1]->id, filters);
        }
    }
    out->users = users;
    out->n_users = n;
    *resp = &out->base;
    return 0;
}

static int identity__mask(rpc_call_t *call, const Google__Protobuf__FieldMask *m)
{
    static const struct {
        const char *path;
        int bit;
    } known[] = {{"full_name", MASK_FULL_NAME},
                 {"email", MASK_EMAIL},
                 {"role", MASK_ROLE},
                 {"is_active", MASK_ACTIVE}};
    int bits = 0;
    if (!m || m->n_paths == 0) {
        rpc_violation(call, "update_mask", "must name the fields to change");
        return 0;
    }
    for (size_t i = 0; i < m->n_paths; i++) {
        int bit = 0;
        for (size_t k = 0; k < sizeof(known) / sizeof(known[0]) && !bit; k++)
            if (strcmp(m->paths[i], known[k].path) == 0)
                bit = known[k].bit;
        if (!bit)
            rpc_violation(call, "update_mask",
                          "\"%.64s\" is not one of full_name, email, role, is_active", m->paths[i]);
        bits |= bit;
    }
    return bits;
}

int identity_update_user(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Identity__V1__UpdateUserRequest *r = (const void *)req;
    const principal_t *p;
    int rc = identity__admin_or_status(call, &p);
    if (rc < 0)
        return rc;
    const identity_user_t *in = r->user;
    if (!in || in->id <= 0)
        rpc_violation(call, "user.id", "must be positive");
    int bits = identity__mask(call, r->update_mask);
    if (in && (bits & MASK_EMAIL))
        identity_validate_email(call, "user.email", in->email);
    if (in && (bits & MASK_FULL_NAME))
        identity_validate_full_name(call, "user.full_name", in->full_name);
    if (in && (bits & MASK_ROLE))
        identity_validate_role(call, "user.role", in->role);
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    identity_user_t *u;
    if ((rc = identity__managed_user_or_status(call, p, in->id, &u)) < 0)
        return rc;
    return identity__save_user_or_status(call, in->id, bits, in, resp);
}

/* An admin's call about user id (the request's "id"): the caller, or the
 * status. */
static int identity__admin_on_or_status(rpc_call_t *call, int64_t id, const principal_t **p)
{
    int rc = identity__admin_or_status(call, p);
    if (rc < 0)
        return rc;
    if (id <= 0)
        rpc_violation(call, "id", "must be positive");
    return rpc_check_violations(call);
}

int identity_deactivate_user(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Identity__V1__DeactivateUserRequest *r = (const void *)req;
    const principal_t *p;
    int rc = identity__admin_on_or_status(call, r->id, &p);
    if (rc < 0)
        return rc;
    identity_user_t *u;
    if ((rc = identity__managed_user_or_status(call, p, r->id, &u)) < 0)
        return rc;
    if (!u->is_active) {
        *resp = &u->base;
        return 0;
    }
    identity_user_t inactive = ONCEIOT__IDENTITY__V1__USER__INIT;
    inactive.is_active = false;
    return identity__save_user_or_status(call, r->id, MASK_ACTIVE, &inactive, resp);
}

int identity_erase_user(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Identity__V1__EraseUserRequest *r = (const void *)req;
    const principal_t *p;
    int rc = identity__admin_on_or_status(call, r->id, &p);
    if (rc < 0)
        return rc;
    if (r->id == p->user_id)
        return rpc_fail(call, ERR_FAILED_PRECONDITION, "you cannot erase yourself");
    identity_user_t *u;
    if ((rc = identity__visible_user_or_status(call, p, r->id, &u)) < 0)
        return rc;
    if (u->erased_at) {
        *resp = &u->base;
        return 0;
    }
    if ((rc = identity_store_user_erase_or_status(call, r->id, &u)) < 0)
        return rc;
    /* No row: a concurrent EraseUser of the same user won it; the answer is
     * its tombstone. */
    if (!u && (rc = identity_store_user_get_or_status(call, r->id, &u)) < 0)
        return rc;
    identity_cache_forget(&identity_of(call)->cache, 0, r->id);
    *resp = &u->base;
    return 0;
}

int identity_change_password(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Identity__V1__ChangePasswordRequest *r = (const void *)req;
    const principal_t *p = identity_caller_or_status(call);
    if (!p)
        return ERR_UNAUTHENTICATED;
    int64_t target = r->user_id ? r->user_id : p->user_id;
    bool self = target == p->user_id;
    if (r->user_id < 0)
        rpc_violation(call, "user_id", "must be positive, or 0 for yourself");
    identity_validate_password(call, "new_password", r->new_password);
    if (self && !r->old_password[0])
        rpc_violation(call, "old_password", "is required to change your own password");
    int rc = rpc_check_violations(call);
    if (rc < 0)
        return rc;
    if ((rc = identity_password_slot_or_status(call)) < 0)
        return rc;
    const char *address = identity_client_address(p);
    if (self) {
        /* The old password is guessed no faster here than at Login: the
         * same backoff, per username and client address. */
        rc = identity_store_login_locked_or_status(call, p->username, address);
        if (rc < 0)
            return rc;
        if (rc == 1)
            return rpc_fail(call, ERR_RESOURCE_EXHAUSTED,
                            "too many wrong passwords from this address; wait and retry");
        char *hash;
        bool rehash;
        if ((rc = identity_store_user_password_or_status(call, target, &hash)) < 0)
            return rc;
        if (!identity_password_verify(r->old_password, hash, &rehash)) {
            if ((rc = identity_store_login_failed_or_status(call, p->username, address)) < 0)
                return rc;
            return rpc_fail(call, ERR_PERMISSION_DENIED, "the old password is wrong");
        }
    } else {
        /* Setting another user's password is a write to that user. */
        if (!principal_has_scope(p, "users:write"))
            return rpc_fail(call, ERR_PERMISSION_DENIED,
                            "changing another user's password needs the \"users:write\" scope");
        identity_user_t *u;
        if ((rc = identity__managed_user_or_status(call, p, target, &u)) < 0)
            return rc;
    }
    char hash[crypto_pwhash_STRBYTES];
    if ((rc = identity_password_hash(r->new_password, hash)) < 0)
        return rpc_fail(call, rc, "the password could not be hashed; retry");
    if ((rc = identity_store_user_set_password_or_status(call, target, hash)) < 0)
        return rc;
    Onceiot__Identity__V1__ChangePasswordResponse *out =
        arena_alloc(rpc_call_arena(call), sizeof(*out));
    onceiot__identity__v1__change_password_response__init(out);
    *resp = &out->base;
    return 0;
}
