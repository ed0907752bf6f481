/* The identity service end to end: a real onceiot-identity process on the
 * test PostgreSQL, called directly with principals the test signs (the test
 * plays the gateway). */
#include "identity/v1/identity.pb-c.h"
#include "identity_harness.h"
#include "onceiot/token.h"
#include "pg_harness.h"

#include <criterion/criterion.h>
#include <crypt.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

IH_SUITE(identity);

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static token_key_t published_key(void)
{
    keys_resp_t *k = ih_verification_keys(&h);
    token_key_t key;
    snprintf(key.kid, sizeof(key.kid), "%s", k->keys[0]->kid);
    memcpy(key.public_key, k->keys[0]->public_key.data, 32);
    return key;
}

static int64_t count_users(void)
{
    return pgh_count("SELECT count(*) FROM identity.users", 0, NULL);
}

static bool contains(const void *hay, size_t len, const char *needle)
{
    return memmem(hay, len, needle, strlen(needle)) != NULL;
}

/* ---- bootstrap ---- */

Test(identity, bootstrap_key_file_is_private_and_authenticates_as_superuser_admin)
{
    struct stat sb;
    cr_assert_eq(stat(h.key_file, &sb), 0, "no key file %s", h.key_file);
    cr_assert_eq(sb.st_mode & 0777, 0600);
    FILE *f = fopen(h.key_file, "r");
    char secret[128] = "";
    cr_assert(fgets(secret, sizeof(secret), f));
    fclose(f);
    cr_assert_eq(strlen(secret), 51, "exactly the secret, no newline: \"%s\"", secret);
    auth_resp_t *a;
    rpc_status_t st;
    cr_assert_eq(ih_authenticate(&h, secret, &a, &st), 0, "%s", st.message);
    cr_assert(a->principal->is_superuser);
    cr_assert_eq(a->principal->role, ADMIN);
    cr_assert_eq(a->principal->organization_id, 1);
    cr_assert_str_eq(a->principal->username, "admin");
    cr_assert_eq(a->principal->n_scopes, 1);
    cr_assert_str_eq(a->principal->scopes[0], "admin");
    cr_assert_eq(a->cache_seconds, 5);
    cr_assert(ph_log_contains(&h.proc, "\"bootstrap_admin\""));
    cr_assert(!ph_log_contains(&h.proc, secret), "the key's secret is in the log");
    cr_assert(!ph_log_contains(&h.proc, IH_ADMIN_PASS), "a configured password is never logged");
    login_resp_t *l;
    cr_assert_eq(ih_login(&h, "admin", IH_ADMIN_PASS, &l, &st), 0, "%s", st.message);
}

Test(identity, restart_does_not_create_a_second_admin)
{
    cr_assert_eq(count_users(), 1);
    ih_stop(&h);
    unlink(h.key_file);
    ih_start(&h, false);
    cr_assert_eq(count_users(), 1);
    struct stat sb;
    cr_assert_neq(stat(h.key_file, &sb), 0, "no new key file on a restart");
    cr_assert(!ph_log_contains(&h.proc, "\"bootstrap_admin\""));
}

/* ---- principals ---- */

Test(identity, calls_without_or_with_a_forged_principal_are_unauthenticated)
{
    rpc_status_t st;
    int rc;
    ih_get_user(&h, NULL, 1, &st, &rc);
    cr_assert_eq(rc, ERR_UNAUTHENTICATED);
    cr_assert_eq(st.code, GRPC_STATUS_UNAUTHENTICATED);

    /* Signed with a key that is not the shared one. */
    principal_key_t real = h.pkey;
    h.pkey.bytes[0] ^= 1;
    ih_get_user(&h, su, 1, &st, &rc);
    h.pkey = real;
    cr_assert_eq(rc, ERR_UNAUTHENTICATED);

    /* A principal issued for another method. */
    principal_t p = *su;
    rpc_md_t md[2];
    principal_sign(&h.pkey, &p, "/onceiot.identity.v1.IdentityService/ListUsers", h.arena, md);
    Onceiot__Identity__V1__GetUserRequest req = ONCEIOT__IDENTITY__V1__GET_USER_REQUEST__INIT;
    req.id = 1;
    rpc_call_opts_t opts = {.metadata = md, .n_metadata = 2, .timeout_ms = 5000};
    ProtobufCMessage *out;
    cr_assert_eq(rpc_unary(h.ch, "/onceiot.identity.v1.IdentityService/GetUser", &req.base, D(user),
                           h.arena, &opts, &out, &st),
                 ERR_UNAUTHENTICATED);

    /* The real thing works. */
    user_t *u = ih_get_user(&h, su, 1, &st, &rc);
    cr_assert_eq(rc, 0, "%s", st.message);
    cr_assert_str_eq(u->username, "admin");
}

Test(identity, gateway_methods_refuse_other_callers)
{
    Onceiot__Identity__V1__AuthenticateRequest req =
        ONCEIOT__IDENTITY__V1__AUTHENTICATE_REQUEST__INIT;
    req.secret = "sk_live_x";
    auth_resp_t *a;
    rpc_status_t st;
    cr_assert_eq(ih_call(&h, "Authenticate", &req, D(authenticate_response), NULL, &a, &st),
                 ERR_UNAUTHENTICATED);
    cr_assert_eq(ih_call(&h, "Authenticate", &req, D(authenticate_response), su, &a, &st),
                 ERR_PERMISSION_DENIED);
    Onceiot__Identity__V1__GetVerificationKeysRequest vk =
        ONCEIOT__IDENTITY__V1__GET_VERIFICATION_KEYS_REQUEST__INIT;
    keys_resp_t *k;
    cr_assert_eq(
        ih_call(&h, "GetVerificationKeys", &vk, D(get_verification_keys_response), NULL, &k, &st),
        ERR_UNAUTHENTICATED);
}

/* ---- users ---- */

Test(identity, create_user_then_get_returns_it)
{
    user_t *u = ih_create_user(&h, su, "alice", 0, USER, "correct horse battery");
    cr_assert_gt(u->id, 1);
    cr_assert_str_eq(u->username, "alice");
    cr_assert_str_eq(u->email, "alice@example.com");
    cr_assert_eq(u->role, USER);
    cr_assert(u->is_active);
    cr_assert(!u->is_superuser);
    cr_assert_eq(u->organization_id, 1, "a superuser's 0 means its own organization");
    cr_assert_not_null(u->created_at);
    cr_assert_null(u->last_login_at);
    rpc_status_t st;
    int rc;
    user_t *g = ih_get_user(&h, su, u->id, &st, &rc);
    cr_assert_eq(rc, 0);
    cr_assert_str_eq(g->username, "alice");
    ih_get_user(&h, su, 99999, &st, &rc);
    cr_assert_eq(rc, ERR_NOT_FOUND);
    ih_get_user(&h, su, 0, &st, &rc);
    cr_assert_eq(rc, ERR_INVALID_ARGUMENT);
}

Test(identity, create_user_bad_inputs_name_each_field_and_change_nothing)
{
    Onceiot__Identity__V1__CreateUserRequest req = ONCEIOT__IDENTITY__V1__CREATE_USER_REQUEST__INIT;
    req.username = "ab";
    req.email = "not-an-email";
    req.password = "short";
    req.role = 9;
    user_t *u;
    rpc_status_t st;
    cr_assert_eq(ih_call(&h, "CreateUser", &req, D(user), su, &u, &st), ERR_INVALID_ARGUMENT);
    cr_assert(ih_violation(&h, &st, "username"), "%s", st.message);
    cr_assert(ih_violation(&h, &st, "email"), "%s", st.message);
    cr_assert(ih_violation(&h, &st, "password"), "%s", st.message);
    cr_assert(ih_violation(&h, &st, "role"), "%s", st.message);
    req.username = "bad name!";
    req.email = "ok@example.com";
    req.password = "long enough password";
    req.role = USER;
    cr_assert_eq(ih_call(&h, "CreateUser", &req, D(user), su, &u, &st), ERR_INVALID_ARGUMENT);
    cr_assert(ih_violation(&h, &st, "username"));
    cr_assert_eq(count_users(), 1);
}

Test(identity, duplicate_username_or_email_is_already_exists)
{
    ih_create_user(&h, su, "bob", 0, USER, "correct horse battery");
    Onceiot__Identity__V1__CreateUserRequest req = ONCEIOT__IDENTITY__V1__CREATE_USER_REQUEST__INIT;
    req.username = "bob";
    req.email = "other@example.com";
    req.password = "correct horse battery";
    user_t *u;
    rpc_status_t st;
    cr_assert_eq(ih_call(&h, "CreateUser", &req, D(user), su, &u, &st), ERR_ALREADY_EXISTS);
    cr_assert_eq(st.code, GRPC_STATUS_ALREADY_EXISTS);
    req.username = "bobby";
    req.email = "BOB@example.com";
    cr_assert_eq(ih_call(&h, "CreateUser", &req, D(user), su, &u, &st), ERR_ALREADY_EXISTS,
                 "emails are unique whatever their case");
}

Test(identity, update_user_changes_only_the_masked_fields)
{
    user_t *u = ih_create_user(&h, su, "carol", 0, USER, "correct horse battery");
    user_t in = *u;
    in.full_name = "Carol C.";
    in.email = "carol@new.example.org";
    in.role = READONLY;
    char *paths[] = {"full_name", "email"};
    Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    mask.paths = paths;
    mask.n_paths = 2;
    Onceiot__Identity__V1__UpdateUserRequest req = ONCEIOT__IDENTITY__V1__UPDATE_USER_REQUEST__INIT;
    req.user = &in;
    req.update_mask = &mask;
    user_t *out;
    rpc_status_t st;
    cr_assert_eq(ih_call(&h, "UpdateUser", &req, D(user), su, &out, &st), 0, "%s", st.message);
    cr_assert_str_eq(out->full_name, "Carol C.");
    cr_assert_str_eq(out->email, "carol@new.example.org");
    cr_assert_eq(out->role, USER, "role was not in the mask");

    /* A role change refuses the tokens that carry the old role. */
    char *role[] = {"role"};
    mask.paths = role;
    mask.n_paths = 1;
    cr_assert_eq(ih_call(&h, "UpdateUser", &req, D(user), su, &out, &st), 0, "%s", st.message);
    cr_assert_eq(out->role, READONLY);
    keys_resp_t *vk = ih_verification_keys(&h);
    bool revoked = false;
    for (size_t i = 0; i < vk->n_revocations; i++)
        revoked |= vk->revocations[i]->user_id == u->id;
    cr_assert(revoked);

    char *bad[] = {"password_hash"};
    mask.paths = bad;
    mask.n_paths = 1;
    cr_assert_eq(ih_call(&h, "UpdateUser", &req, D(user), su, &out, &st), ERR_INVALID_ARGUMENT);
    cr_assert(ih_violation(&h, &st, "update_mask"));
    mask.n_paths = 0;
    cr_assert_eq(ih_call(&h, "UpdateUser", &req, D(user), su, &out, &st), ERR_INVALID_ARGUMENT);
    char *email[] = {"email"};
    mask.paths = email;
    mask.n_paths = 1;
    in.email = "broken";
    cr_assert_eq(ih_call(&h, "UpdateUser", &req, D(user), su, &out, &st), ERR_INVALID_ARGUMENT);
    cr_assert(ih_violation(&h, &st, "user.email"));
}

Test(identity, list_users_pages_by_id_and_rejects_a_token_for_other_filters)
{
    for (int i = 0; i < 5; i++)
        ih_create_user(&h, su, arena_printf(h.arena, "pager%d", i), 3, READONLY,
                       "correct horse battery");
    ih_create_user(&h, su, "pager-other", 3, USER, "correct horse battery");
    Onceiot__Identity__V1__ListUsersRequest req = ONCEIOT__IDENTITY__V1__LIST_USERS_REQUEST__INIT;
    req.organization_id = 3;
    req.role = READONLY;
    req.page_size = 2;
    int seen = 0, pages = 0;
    int64_t last = 0;
    Onceiot__Identity__V1__ListUsersResponse *out;
    rpc_status_t st;
    do {
        cr_assert_eq(ih_call(&h, "ListUsers", &req, D(list_users_response), su, &out, &st), 0, "%s",
                     st.message);
        for (size_t i = 0; i < out->n_users; i++) {
            cr_assert_gt(out->users[i]->id, last, "ids ascend across pages");
            last = out->users[i]->id;
            cr_assert_eq(out->users[i]->role, READONLY);
            cr_assert_eq(out->users[i]->organization_id, 3);
        }
        seen += (int)out->n_users;
        pages++;
        req.page_token = out->next_page_token;
    } while (out->next_page_token[0] && pages < 10);
    cr_assert_eq(seen, 5);
    cr_assert_eq(pages, 3);

    /* A token from one query is refused for another. */
    req.page_token = "";
    cr_assert_eq(ih_call(&h, "ListUsers", &req, D(list_users_response), su, &out, &st), 0);
    req.page_token = out->next_page_token;
    req.role = USER;
    cr_assert_eq(ih_call(&h, "ListUsers", &req, D(list_users_response), su, &out, &st),
                 ERR_INVALID_ARGUMENT);
    cr_assert(ih_violation(&h, &st, "page_token"));
    req.page_token = "garbage!";
    cr_assert_eq(ih_call(&h, "ListUsers", &req, D(list_users_response), su, &out, &st),
                 ERR_INVALID_ARGUMENT);
    req.page_token = "";
    req.page_size = 1001;
    req.active = "maybe";
    cr_assert_eq(ih_call(&h, "ListUsers", &req, D(list_users_response), su, &out, &st),
                 ERR_INVALID_ARGUMENT);
    cr_assert(ih_violation(&h, &st, "page_size"));
    cr_assert(ih_violation(&h, &st, "active"));
}

Test(identity, another_organizations_users_are_not_found)
{
    user_t *victim = ih_create_user(&h, su, "victim", 1, USER, "correct horse battery");
    user_t *admin2 = ih_create_user(&h, su, "admin-two", 2, ADMIN, "correct horse battery");
    user_t *peer = ih_create_user(&h, su, "peer-two", 2, USER, "correct horse battery");
    principal_t *p = ih_principal(&h, admin2->id, 2, ADMIN, false);
    rpc_status_t st;
    int rc;
    ih_get_user(&h, p, victim->id, &st, &rc);
    cr_assert_eq(rc, ERR_NOT_FOUND);
    cr_assert_eq(st.code, GRPC_STATUS_NOT_FOUND);
    ih_get_user(&h, p, peer->id, &st, &rc);
    cr_assert_eq(rc, 0, "own organization: %s", st.message);

    Onceiot__Identity__V1__DeactivateUserRequest d =
        ONCEIOT__IDENTITY__V1__DEACTIVATE_USER_REQUEST__INIT;
    d.id = victim->id;
    user_t *out;
    cr_assert_eq(ih_call(&h, "DeactivateUser", &d, D(user), p, &out, &st), ERR_NOT_FOUND);
    d.id = 1;
    cr_assert_eq(ih_call(&h, "DeactivateUser", &d, D(user), p, &out, &st), ERR_NOT_FOUND,
                 "the superuser lives in organization 1");

    Onceiot__Identity__V1__ListUsersRequest l = ONCEIOT__IDENTITY__V1__LIST_USERS_REQUEST__INIT;
    l.organization_id = 1; /* ignored for non-superusers */
    Onceiot__Identity__V1__ListUsersResponse *lr;
    cr_assert_eq(ih_call(&h, "ListUsers", &l, D(list_users_response), p, &lr, &st), 0);
    cr_assert_eq(lr->n_users, 2);
    for (size_t i = 0; i < lr->n_users; i++)
        cr_assert_eq(lr->users[i]->organization_id, 2);

    /* Creating "in organization 1" lands in the admin's own. */
    Onceiot__Identity__V1__CreateUserRequest c = ONCEIOT__IDENTITY__V1__CREATE_USER_REQUEST__INIT;
    c.username = "planted";
    c.email = "planted@example.com";
    c.password = "correct horse battery";
    c.organization_id = 1;
    cr_assert_eq(ih_call(&h, "CreateUser", &c, D(user), p, &out, &st), 0, "%s", st.message);
    cr_assert_eq(out->organization_id, 2);

    /* Another organization's API keys are not found either. */
    key_resp_t *k = ih_create_key(&h, su, victim->id, "sims:read", 0);
    Onceiot__Identity__V1__GetApiKeyRequest g = ONCEIOT__IDENTITY__V1__GET_API_KEY_REQUEST__INIT;
    g.id = k->api_key->id;
    Onceiot__Identity__V1__ApiKey *ak;
    cr_assert_eq(ih_call(&h, "GetApiKey", &g, D(api_key), p, &ak, &st), ERR_NOT_FOUND);
    Onceiot__Identity__V1__RevokeApiKeyRequest r =
        ONCEIOT__IDENTITY__V1__REVOKE_API_KEY_REQUEST__INIT;
    r.id = k->api_key->id;
    cr_assert_eq(ih_call(&h, "RevokeApiKey", &r, D(api_key), p, &ak, &st), ERR_NOT_FOUND);
    cr_assert_eq(ih_authenticate(&h, k->secret, (auth_resp_t **)&ak, &st), 0, "still active");
}

Test(identity, plain_users_see_only_themselves)
{
    user_t *me = ih_create_user(&h, su, "plain", 1, USER, "correct horse battery");
    user_t *other = ih_create_user(&h, su, "neighbour", 1, USER, "correct horse battery");
    principal_t *p = ih_principal(&h, me->id, 1, USER, false);
    rpc_status_t st;
    int rc;
    ih_get_user(&h, p, other->id, &st, &rc);
    cr_assert_eq(rc, ERR_NOT_FOUND);
    user_t *u = ih_get_user(&h, p, me->id, &st, &rc);
    cr_assert_eq(rc, 0);
    cr_assert_str_eq(u->username, "plain");
    Onceiot__Identity__V1__ListUsersRequest l = ONCEIOT__IDENTITY__V1__LIST_USERS_REQUEST__INIT;
    Onceiot__Identity__V1__ListUsersResponse *lr;
    cr_assert_eq(ih_call(&h, "ListUsers", &l, D(list_users_response), p, &lr, &st), 0);
    cr_assert_eq(lr->n_users, 1);
    cr_assert_eq(lr->users[0]->id, me->id);
    Onceiot__Identity__V1__CreateUserRequest c = ONCEIOT__IDENTITY__V1__CREATE_USER_REQUEST__INIT;
    c.username = "sneaky";
    c.email = "sneaky@example.com";
    c.password = "correct horse battery";
    cr_assert_eq(ih_call(&h, "CreateUser", &c, D(user), p, &u, &st), ERR_PERMISSION_DENIED);
}

Test(identity, change_password_needs_the_old_one_for_yourself_only)
{
    user_t *me = ih_create_user(&h, su, "changer", 1, USER, "correct horse battery");
    principal_t *p = ih_principal(&h, me->id, 1, USER, false);
    Onceiot__Identity__V1__ChangePasswordRequest req =
        ONCEIOT__IDENTITY__V1__CHANGE_PASSWORD_REQUEST__INIT;
    req.new_password = "a brand new passphrase";
    Onceiot__Identity__V1__ChangePasswordResponse *out;
    rpc_status_t st;
    cr_assert_eq(ih_call(&h, "ChangePassword", &req, D(change_password_response), p, &out, &st),
                 ERR_INVALID_ARGUMENT);
    cr_assert(ih_violation(&h, &st, "old_password"));
    req.old_password = "wrong old password";
    cr_assert_eq(ih_call(&h, "ChangePassword", &req, D(change_password_response), p, &out, &st),
                 ERR_PERMISSION_DENIED);
    req.old_password = "correct horse battery";
    cr_assert_eq(ih_call(&h, "ChangePassword", &req, D(change_password_response), p, &out, &st), 0,
                 "%s", st.message);
    login_resp_t *l;
    cr_assert_eq(ih_login(&h, "changer", "correct horse battery", &l, &st), ERR_UNAUTHENTICATED);
    cr_assert_eq(ih_login(&h, "changer", "a brand new passphrase", &l, &st), 0, "%s", st.message);

    /* An admin sets another user's password without the old one; a plain
     * user cannot touch someone else's. */
    req.user_id = me->id;
    req.old_password = "";
    req.new_password = "set by the admin 123";
    cr_assert_eq(ih_call(&h, "ChangePassword", &req, D(change_password_response), su, &out, &st), 0,
                 "%s", st.message);
    cr_assert_eq(ih_login(&h, "changer", "set by the admin 123", &l, &st), 0);
    req.user_id = 1;
    cr_assert_eq(ih_call(&h, "ChangePassword", &req, D(change_password_response), p, &out, &st),
                 ERR_PERMISSION_DENIED);
}

/* ---- login and tokens ---- */

Test(identity, login_returns_a_token_the_published_key_verifies)
{
    user_t *u = ih_create_user(&h, su, "dave", 4, ADMIN, "correct horse battery");
    login_resp_t *l;
    rpc_status_t st;
    cr_assert_eq(ih_login(&h, "dave", "correct horse battery", &l, &st), 0, "%s", st.message);
    cr_assert_eq(strncmp(l->token, "v4.public.", 10), 0);
    cr_assert_eq(l->user->id, u->id);
    cr_assert_not_null(l->user->last_login_at, "last_login_at is recorded");
    token_key_t key = published_key();
    token_claims_t c;
    const char *why = NULL;
    int64_t now = time(NULL);
    cr_assert_eq(token_verify(&key, 1, l->token, now, &c, &why), 0, "%s", why);
    cr_assert_eq(c.user_id, u->id);
    cr_assert_str_eq(c.username, "dave");
    cr_assert_eq(c.organization_id, 4);
    cr_assert_eq(c.role, ADMIN);
    cr_assert(!c.is_superuser);
    cr_assert_eq(c.expires_at - c.issued_at_ms / 1000, 900);
    cr_assert_eq(l->expires_at->seconds, c.expires_at);
}

Test(identity, wrong_password_and_unknown_user_get_the_same_answer)
{
    ih_create_user(&h, su, "erin", 1, USER, "correct horse battery");
    login_resp_t *l;
    rpc_status_t st;
    cr_assert_eq(ih_login(&h, "erin", "wrong password!!", &l, &st), ERR_UNAUTHENTICATED);
    char *msg = arena_strdup(h.arena, st.message);
    cr_assert_str_eq(msg, "invalid username or password");
    cr_assert_eq(ih_login(&h, "nobody-here", "wrong password!!", &l, &st), ERR_UNAUTHENTICATED);
    cr_assert_str_eq(st.message, msg);
    cr_assert_eq(ih_login(&h, "", "", &l, &st), ERR_UNAUTHENTICATED);
    cr_assert_str_eq(st.message, msg);
    cr_assert(!ph_log_contains(&h.proc, "wrong password!!"), "passwords never reach the log");
}

Test(identity, repeated_failures_slow_down_one_username)
{
    ih_create_user(&h, su, "frank", 1, USER, "correct horse battery");
    login_resp_t *l;
    rpc_status_t st;
    for (int i = 0; i < 3; i++)
        cr_assert_eq(ih_login(&h, "frank", "not the password", &l, &st), ERR_UNAUTHENTICATED);
    cr_assert_eq(ih_login(&h, "frank", "correct horse battery", &l, &st), ERR_UNAUTHENTICATED,
                 "locked for a second after three failures");
    cr_assert_str_eq(st.message, "invalid username or password");
    sleep_ms(1300);
    cr_assert_eq(ih_login(&h, "frank", "correct horse battery", &l, &st), 0, "%s", st.message);
    PGresult *r = pgh_sql("SELECT count(*) FROM identity.login_failures WHERE username = 'frank'");
    cr_assert_str_eq(PQgetvalue(r, 0, 0), "0", "success clears the backoff");
    PQclear(r);
}

Test(identity, failures_from_one_address_do_not_lock_the_user_out_elsewhere)
{
    ih_create_user(&h, su, "hank", 1, USER, "correct horse battery");
    login_resp_t *l;
    rpc_status_t st;
    for (int i = 0; i < 3; i++)
        cr_assert_eq(ih_login_from(&h, "192.0.2.1", "hank", "not the password", &l, &st),
                     ERR_UNAUTHENTICATED);
    cr_assert_eq(ih_login_from(&h, "192.0.2.1", "hank", "correct horse battery", &l, &st),
                 ERR_UNAUTHENTICATED, "the attacking address waits");
    cr_assert_eq(ih_login_from(&h, "198.51.100.7", "hank", "correct horse battery", &l, &st), 0,
                 "the user logs in from elsewhere: %s", st.message);
    cr_assert_eq(ih_login_from(&h, "192.0.2.1", "hank", "correct horse battery", &l, &st),
                 ERR_UNAUTHENTICATED, "a success elsewhere does not lift the attacker's wait");
}

Test(identity, deactivated_user_cannot_log_in_and_its_tokens_and_keys_stop)
{
    user_t *u = ih_create_user(&h, su, "gina", 1, USER, "correct horse battery");
    login_resp_t *l;
    rpc_status_t st;
    cr_assert_eq(ih_login(&h, "gina", "correct horse battery", &l, &st), 0);
    int64_t iat = time(NULL);
    principal_t *p = ih_principal(&h, u->id, 1, USER, false);
    key_resp_t *k = ih_create_key(&h, p, 0, "sims:read", 0);
    auth_resp_t *a;
    cr_assert_eq(ih_authenticate(&h, k->secret, &a, &st), 0, "%s", st.message);

    Onceiot__Identity__V1__DeactivateUserRequest d =
        ONCEIOT__IDENTITY__V1__DEACTIVATE_USER_REQUEST__INIT;
    d.id = u->id;
    user_t *out;
    cr_assert_eq(ih_call(&h, "DeactivateUser", &d, D(user), su, &out, &st), 0, "%s", st.message);
    cr_assert(!out->is_active);
    cr_assert_eq(ih_login(&h, "gina", "correct horse battery", &l, &st), ERR_UNAUTHENTICATED);
    cr_assert_str_eq(st.message, "invalid username or password");
    cr_assert_eq(ih_authenticate(&h, k->secret, &a, &st), ERR_UNAUTHENTICATED,
                 "the cached answer was forgotten");
    keys_resp_t *vk = ih_verification_keys(&h);
    bool revoked = false;
    for (size_t i = 0; i < vk->n_revocations; i++)
        if (vk->revocations[i]->user_id == u->id)
            revoked = vk->revocations[i]->not_before->seconds * 1000 +
                          vk->revocations[i]->not_before->nanos / 1000000 >=
                      iat * 1000;
    cr_assert(revoked, "tokens issued so far are refused from now on");
}

Test(identity, tampered_foreign_and_expired_tokens_are_refused)
{
    ih_create_user(&h, su, "hank", 1, USER, "correct horse battery");
    login_resp_t *l;
    rpc_status_t st;
    cr_assert_eq(ih_login(&h, "hank", "correct horse battery", &l, &st), 0);
    token_key_t key = published_key();
    token_claims_t c;
    const char *why;
    int64_t now = time(NULL);
    char *t = arena_strdup(h.arena, l->token);
    t[20] = t[20] == 'A' ? 'B' : 'A';
    cr_assert_eq(token_verify(&key, 1, t, now, &c, &why), ERR_UNAUTHENTICATED);

    uint8_t pk[32], sk[64];
    crypto_sign_keypair(pk, sk);
    cr_assert_eq(token_verify(&key, 1, l->token, now, &c, &why), 0);
    c.issued_at_ms = now * 1000;
    c.expires_at = now + 900;
    char *foreign = token_sign(sk, &c, h.arena);
    cr_assert_eq(token_verify(&key, 1, foreign, now, &c, &why), ERR_UNAUTHENTICATED);

    /* The service's own key, but an expired token. */
    uint8_t seed[32];
    size_t n;
    cr_assert_eq(sodium_hex2bin(seed, 32, IH_SIGNING_SEED, 64, NULL, &n, NULL), 0);
    crypto_sign_seed_keypair(pk, sk, seed);
    cr_assert_eq(token_verify(&key, 1, l->token, now, &c, &why), 0);
    c.issued_at_ms = (now - 2000) * 1000;
    c.expires_at = now - 1000;
    char *old = token_sign(sk, &c, h.arena);
    cr_assert_eq(token_verify(&key, 1, old, now, &c, &why), ERR_UNAUTHENTICATED);
    cr_assert_str_eq(why, "the token has expired");
}

Test(identity, legacy_bcrypt_hash_is_upgraded_on_login)
{
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    cr_assert_not_null(crypt_gensalt_rn("$2b$", 5, NULL, 0, setting, sizeof(setting)));
    struct crypt_data data;
    memset(&data, 0, sizeof(data));
    const char *hash = crypt_rn("legacy password 1", setting, &data, sizeof(data));
    cr_assert(hash && strncmp(hash, "$2b$", 4) == 0);
    const char *params[] = {hash};
    PQclear(pgh_sqlf("INSERT INTO identity.users (username, email, password_hash, role, "
                     "organization_id) VALUES ('legacy', 'legacy@example.com', $1, 'user', 1)",
                     1, params));
    login_resp_t *l;
    rpc_status_t st;
    cr_assert_eq(ih_login(&h, "legacy", "legacy password 2", &l, &st), ERR_UNAUTHENTICATED);
    cr_assert_eq(ih_login(&h, "legacy", "legacy password 1", &l, &st), 0, "%s", st.message);
    PGresult *r = pgh_sql("SELECT password_hash FROM identity.users WHERE username = 'legacy'");
    cr_assert_eq(strncmp(PQgetvalue(r, 0, 0), "$argon2id$", 10), 0, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    cr_assert_eq(ih_login(&h, "legacy", "legacy password 1", &l, &st), 0, "the new hash verifies");
}

/* ---- API keys ---- */

Test(identity, api_key_secret_appears_only_in_the_creating_response)
{
    key_resp_t *k = ih_create_key(&h, su, 0, "sims:read", 0);
    cr_assert_eq(strlen(k->secret), 51);
    cr_assert_eq(strncmp(k->secret, "sk_live_", 8), 0);
    cr_assert_eq(strncmp(k->api_key->prefix, k->secret, 16), 0);
    cr_assert_eq(strlen(k->api_key->prefix), 16);
    cr_assert(k->api_key->is_active);
    uint8_t pepper[32], hash[32];
    size_t n;
    cr_assert_eq(sodium_hex2bin(pepper, 32, IH_PEPPER, 64, NULL, &n, NULL), 0);
    crypto_generichash(hash, 32, (const uint8_t *)k->secret, strlen(k->secret), pepper, 32);
    char hash_hex[65];
    sodium_bin2hex(hash_hex, sizeof(hash_hex), hash, 32);
    PGresult *r = pgh_sql("SELECT encode(key_hash, 'hex') FROM identity.api_keys "
                          "WHERE name = 'test key'");
    cr_assert_str_eq(PQgetvalue(r, 0, 0), hash_hex, "the keyed BLAKE2b hash is what is stored");
    PQclear(r);

    auth_resp_t *a;
    rpc_status_t st;
    cr_assert_eq(ih_authenticate(&h, k->secret, &a, &st), 0, "%s", st.message);
    cr_assert_eq(a->principal->user_id, 1);
    cr_assert_str_eq(a->principal->scopes[0], "sims:read");
    cr_assert_str_eq(a->principal->credential,
                     arena_printf(h.arena, "api_key:%lld", (long long)k->api_key->id));

    /* Every other response, as bytes on the wire. */
    Onceiot__Identity__V1__ListApiKeysRequest lr =
        ONCEIOT__IDENTITY__V1__LIST_API_KEYS_REQUEST__INIT;
    ProtobufCBinaryData raw;
    size_t len = onceiot__identity__v1__list_api_keys_request__get_packed_size(&lr);
    uint8_t *buf = arena_alloc(h.arena, len + 1);
    onceiot__identity__v1__list_api_keys_request__pack(&lr, buf);
    principal_t p = *su;
    rpc_md_t md[2];
    const char *m = "/onceiot.identity.v1.IdentityService/ListApiKeys";
    principal_sign(&h.pkey, &p, m, h.arena, md);
    rpc_call_opts_t opts = {.metadata = md, .n_metadata = 2, .timeout_ms = 5000};
    cr_assert_eq(rpc_unary_raw(h.ch, m, buf, len, h.arena, &opts, &raw, &st), 0, "%s", st.message);
    cr_assert(contains(raw.data, raw.len, k->api_key->prefix), "the listing shows the prefix");
    cr_assert(!contains(raw.data, raw.len, k->secret));
    cr_assert(!contains(raw.data, raw.len, hash_hex));
    cr_assert(!contains(raw.data, raw.len, k->secret + 8));

    Onceiot__Identity__V1__GetApiKeyRequest g = ONCEIOT__IDENTITY__V1__GET_API_KEY_REQUEST__INIT;
    g.id = k->api_key->id;
    len = onceiot__identity__v1__get_api_key_request__get_packed_size(&g);
    buf = arena_alloc(h.arena, len + 1);
    onceiot__identity__v1__get_api_key_request__pack(&g, buf);
    p = *su;
    m = "/onceiot.identity.v1.IdentityService/GetApiKey";
    principal_sign(&h.pkey, &p, m, h.arena, md);
    cr_assert_eq(rpc_unary_raw(h.ch, m, buf, len, h.arena, &opts, &raw, &st), 0, "%s", st.message);
    cr_assert(contains(raw.data, raw.len, k->api_key->prefix));
    cr_assert(!contains(raw.data, raw.len, k->secret + 8));
    cr_assert(!contains(raw.data, raw.len, hash_hex));

    cr_assert(!ph_log_contains(&h.proc, k->secret + 8), "the secret is not in the log");
    cr_assert(!ph_log_contains(&h.proc, hash_hex), "nor its hash");
}

Test(identity, revoked_key_is_refused_at_once)
{
    key_resp_t *k = ih_create_key(&h, su, 0, "sims:write", 0);
    auth_resp_t *a;
    rpc_status_t st;
    cr_assert_eq(ih_authenticate(&h, k->secret, &a, &st), 0, "%s", st.message);
    Onceiot__Identity__V1__RevokeApiKeyRequest r =
        ONCEIOT__IDENTITY__V1__REVOKE_API_KEY_REQUEST__INIT;
    r.id = k->api_key->id;
    Onceiot__Identity__V1__ApiKey *out;
    cr_assert_eq(ih_call(&h, "RevokeApiKey", &r, D(api_key), su, &out, &st), 0, "%s", st.message);
    cr_assert(!out->is_active);
    cr_assert_eq(ih_authenticate(&h, k->secret, &a, &st), ERR_UNAUTHENTICATED);
    cr_assert_str_eq(st.message, "invalid API key");
    cr_assert_eq(ih_call(&h, "RevokeApiKey", &r, D(api_key), su, &out, &st), 0, "idempotent");
    cr_assert_eq(
        ih_authenticate(&h, "sk_live_0000000000000000000000000000000000000000000", &a, &st),
        ERR_UNAUTHENTICATED);
    cr_assert_eq(ih_authenticate(&h, "garbage", &a, &st), ERR_UNAUTHENTICATED);
    cr_assert_str_eq(st.message, "invalid API key");
}

Test(identity, expired_key_is_refused)
{
    key_resp_t *k = ih_create_key(&h, su, 0, "sims:read", time(NULL) + 2);
    cr_assert_not_null(k->api_key->expires_at);
    auth_resp_t *a;
    rpc_status_t st;
    cr_assert_eq(ih_authenticate(&h, k->secret, &a, &st), 0, "%s", st.message);
    cr_assert_eq(a->principal->expires_at, k->api_key->expires_at->seconds);
    sleep_ms(2600);
    cr_assert_eq(ih_authenticate(&h, k->secret, &a, &st), ERR_UNAUTHENTICATED,
                 "refused even while cached");
}

Test(identity, create_api_key_bad_inputs_name_each_field)
{
    Onceiot__Identity__V1__CreateApiKeyRequest req =
        ONCEIOT__IDENTITY__V1__CREATE_API_KEY_REQUEST__INIT;
    char *scopes[] = {"SIMS read"};
    req.scopes = scopes;
    req.n_scopes = 1;
    Google__Protobuf__Timestamp past = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    past.seconds = time(NULL) - 10;
    req.expires_at = &past;
    key_resp_t *out;
    rpc_status_t st;
    cr_assert_eq(ih_call(&h, "CreateApiKey", &req, D(create_api_key_response), su, &out, &st),
                 ERR_INVALID_ARGUMENT);
    cr_assert(ih_violation(&h, &st, "name"));
    cr_assert(ih_violation(&h, &st, "scopes"));
    cr_assert(ih_violation(&h, &st, "expires_at"));
    /* A plain user may not mint an "admin" key. */
    user_t *u = ih_create_user(&h, su, "ivan", 1, USER, "correct horse battery");
    principal_t *p = ih_principal(&h, u->id, 1, USER, false);
    char *admin[] = {"admin"};
    req.name = "escalate";
    req.scopes = admin;
    req.expires_at = NULL;
    cr_assert_eq(ih_call(&h, "CreateApiKey", &req, D(create_api_key_response), p, &out, &st),
                 ERR_INVALID_ARGUMENT);
    PGresult *r = pgh_sql("SELECT count(*) FROM identity.api_keys");
    cr_assert_str_eq(PQgetvalue(r, 0, 0), "1", "only the bootstrap key exists");
    PQclear(r);
}

Test(identity, usage_is_counted_in_batches)
{
    key_resp_t *k = ih_create_key(&h, su, 0, "usage:write", 0);
    auth_resp_t *a;
    rpc_status_t st;
    for (int i = 0; i < 25; i++)
        cr_assert_eq(ih_authenticate(&h, k->secret, &a, &st), 0, "%s", st.message);
    Onceiot__Identity__V1__GetApiKeyRequest g = ONCEIOT__IDENTITY__V1__GET_API_KEY_REQUEST__INIT;
    g.id = k->api_key->id;
    Onceiot__Identity__V1__ApiKey *out = NULL;
    for (int tries = 0; tries < 30; tries++) {
        cr_assert_eq(ih_call(&h, "GetApiKey", &g, D(api_key), su, &out, &st), 0, "%s", st.message);
        if (out->usage_count == 25)
            break;
        sleep_ms(200);
    }
    cr_assert_eq(out->usage_count, 25);
    cr_assert_not_null(out->last_used_at);
    cr_assert_geq(out->last_used_at->seconds, out->created_at->seconds);
}

Test(identity, list_api_keys_pages_and_an_admin_lists_its_users_keys)
{
    user_t *u = ih_create_user(&h, su, "julia", 1, USER, "correct horse battery");
    principal_t *p = ih_principal(&h, u->id, 1, USER, false);
    for (int i = 0; i < 3; i++)
        ih_create_key(&h, p, 0, "sims:read", 0);
    Onceiot__Identity__V1__ListApiKeysRequest req =
        ONCEIOT__IDENTITY__V1__LIST_API_KEYS_REQUEST__INIT;
    req.page_size = 2;
    Onceiot__Identity__V1__ListApiKeysResponse *out;
    rpc_status_t st;
    cr_assert_eq(ih_call(&h, "ListApiKeys", &req, D(list_api_keys_response), p, &out, &st), 0);
    cr_assert_eq(out->n_api_keys, 2);
    cr_assert_neq(out->next_page_token[0], '\0');
    req.page_token = out->next_page_token;
    cr_assert_eq(ih_call(&h, "ListApiKeys", &req, D(list_api_keys_response), p, &out, &st), 0);
    cr_assert_eq(out->n_api_keys, 1);
    cr_assert_str_eq(out->next_page_token, "");
    req.page_token = "";
    req.user_id = u->id;
    req.page_size = 0;
    cr_assert_eq(ih_call(&h, "ListApiKeys", &req, D(list_api_keys_response), su, &out, &st), 0);
    cr_assert_eq(out->n_api_keys, 3);
    req.user_id = 1;
    cr_assert_eq(ih_call(&h, "ListApiKeys", &req, D(list_api_keys_response), p, &out, &st),
                 ERR_NOT_FOUND, "a plain user cannot list another user's keys");
}
