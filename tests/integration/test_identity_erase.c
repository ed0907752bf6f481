/* Erasure of a user (EraseUser) end to end: a real onceiot-identity process
 * on the test PostgreSQL, called directly with principals the test signs (the
 * test plays the gateway); the rest of identity is in test_identity.c. */
#include "identity_harness.h"
#include "pg_harness.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

IH_SUITE(identity_erase);

static int erase(const principal_t *p, int64_t id, user_t **out, rpc_status_t *st)
{
    Onceiot__Identity__V1__EraseUserRequest req = ONCEIOT__IDENTITY__V1__ERASE_USER_REQUEST__INIT;
    req.id = id;
    return ih_call(&h, "EraseUser", &req, D(user), p, out, st);
}

/* Rows of any table of the identity schema whose text holds needle, plus
 * stored request answers (bytea) that hold it. */
static long personal_rows(const char *needle)
{
    PGresult *t = pgh_sql("SELECT table_name FROM information_schema.tables WHERE table_schema = "
                          "'identity' AND table_type = 'BASE TABLE'");
    long n = 0;
    for (int i = 0; i < PQntuples(t); i++) {
        char sql[300];
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM identity.%s x WHERE strpos(lower(row_to_json(x)::text), "
                 "lower($1)) > 0",
                 PQgetvalue(t, i, 0));
        const char *params[] = {needle};
        PGresult *r = pgh_sqlf(sql, 1, params);
        n += atol(PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    PQclear(t);
    const char *params[] = {needle};
    PGresult *r = pgh_sqlf("SELECT count(*) FROM identity.request_ids WHERE "
                           "position(convert_to($1, 'UTF8') IN response) > 0",
                           1, params);
    n += atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    return n;
}

static bool user_mentions(const user_t *u, const char *needle)
{
    return strstr(u->username, needle) || strstr(u->email, needle) || strstr(u->full_name, needle);
}

/* Everything personal of an erased user is gone from every table and every
 * answer (users, keys, login failures, stored request answers), while its id
 * stays; it cannot log in, its key and tokens stop, and it cannot be changed
 * or given a key again. */
Test(identity_erase, an_erased_user_keeps_its_id_and_nothing_personal_of_it_remains)
{
    static const char *const personal[] = {"zelda.quartermain", "Zelda Q. Quartermain",
                                           "zeldas-laptop"};
    Onceiot__Identity__V1__CreateUserRequest cu = ONCEIOT__IDENTITY__V1__CREATE_USER_REQUEST__INIT;
    cu.username = "zelda.quartermain";
    cu.email = "zelda.quartermain@example.com";
    cu.password = "correct horse battery";
    cu.full_name = "Zelda Q. Quartermain";
    cu.role = USER;
    cu.organization_id = 1;
    cu.request_id = "erase-create-zelda";
    user_t *u;
    rpc_status_t st;
    cr_assert_eq(ih_call(&h, "CreateUser", &cu, D(user), su, &u, &st), 0, "%s", st.message);
    login_resp_t *l;
    cr_assert_eq(ih_login(&h, "zelda.quartermain", "correct horse battery", &l, &st), 0, "%s",
                 st.message);
    cr_assert_eq(ih_login_from(&h, "192.0.2.9", "zelda.quartermain", "a wrong password", &l, &st),
                 ERR_UNAUTHENTICATED);
    principal_t *self = ih_principal(&h, u->id, 1, USER, false);
    Onceiot__Identity__V1__CreateApiKeyRequest ck =
        ONCEIOT__IDENTITY__V1__CREATE_API_KEY_REQUEST__INIT;
    ck.name = "zeldas-laptop";
    ck.description = "Zelda Q. Quartermain at home";
    char *scopes[] = {"sims:read"};
    ck.scopes = scopes;
    ck.n_scopes = 1;
    ck.request_id = "erase-key-zelda";
    key_resp_t *k;
    cr_assert_eq(ih_call(&h, "CreateApiKey", &ck, D(create_api_key_response), self, &k, &st), 0,
                 "%s", st.message);
    auth_resp_t *a;
    cr_assert_eq(ih_authenticate(&h, k->secret, &a, &st), 0, "%s", st.message);
    for (size_t i = 0; i < sizeof(personal) / sizeof(*personal); i++)
        cr_assert_gt(personal_rows(personal[i]), 0, "the test's data holds %s", personal[i]);

    int64_t iat = time(NULL);
    user_t *e;
    cr_assert_eq(erase(su, u->id, &e, &st), 0, "%s", st.message);
    cr_assert_eq(e->id, u->id, "the id stays");
    cr_assert_not_null(e->erased_at);
    cr_assert(!e->is_active);
    cr_assert_str_eq(e->username, arena_printf(h.arena, "erased-%lld", (long long)u->id));
    cr_assert_str_eq(e->email,
                     arena_printf(h.arena, "erased-%lld@erased.invalid", (long long)u->id));
    cr_assert_str_eq(e->full_name, "");
    for (size_t i = 0; i < sizeof(personal) / sizeof(*personal); i++)
        cr_assert_eq(personal_rows(personal[i]), 0, "%s is still stored", personal[i]);
    PGresult *r = pgh_sql("SELECT count(*) FROM identity.users WHERE password_hash LIKE '$%' AND "
                          "erased_at IS NOT NULL");
    cr_assert_str_eq(PQgetvalue(r, 0, 0), "0", "no password hash is kept");
    PQclear(r);

    /* Through every method that reads users or keys. */
    int rc;
    user_t *g = ih_get_user(&h, su, u->id, &st, &rc);
    cr_assert_eq(rc, 0, "%s", st.message);
    cr_assert_not_null(g->erased_at);
    Onceiot__Identity__V1__ListUsersRequest lu = ONCEIOT__IDENTITY__V1__LIST_USERS_REQUEST__INIT;
    lu.page_size = 1000;
    Onceiot__Identity__V1__ListUsersResponse *users;
    cr_assert_eq(ih_call(&h, "ListUsers", &lu, D(list_users_response), su, &users, &st), 0);
    for (size_t i = 0; i < users->n_users; i++)
        for (size_t j = 0; j < sizeof(personal) / sizeof(*personal); j++)
            cr_assert(!user_mentions(users->users[i], "zelda"), "ListUsers shows %s",
                      users->users[i]->username);
    Onceiot__Identity__V1__ListApiKeysRequest lk =
        ONCEIOT__IDENTITY__V1__LIST_API_KEYS_REQUEST__INIT;
    lk.user_id = u->id;
    Onceiot__Identity__V1__ListApiKeysResponse *keys;
    cr_assert_eq(ih_call(&h, "ListApiKeys", &lk, D(list_api_keys_response), su, &keys, &st), 0,
                 "%s", st.message);
    cr_assert_eq(keys->n_api_keys, 1);
    cr_assert(!keys->api_keys[0]->is_active, "the key is revoked");
    cr_assert_null(strstr(keys->api_keys[0]->name, "zelda"));
    cr_assert_str_eq(keys->api_keys[0]->description, "");

    /* It stops working at once. */
    cr_assert_eq(ih_login(&h, "zelda.quartermain", "correct horse battery", &l, &st),
                 ERR_UNAUTHENTICATED);
    cr_assert_eq(ih_login(&h, e->username, "correct horse battery", &l, &st), ERR_UNAUTHENTICATED);
    cr_assert_eq(ih_authenticate(&h, k->secret, &a, &st), ERR_UNAUTHENTICATED);
    keys_resp_t *vk = ih_verification_keys(&h);
    bool revoked = false;
    for (size_t i = 0; i < vk->n_revocations; i++)
        revoked |=
            vk->revocations[i]->user_id == u->id && vk->revocations[i]->not_before->seconds >= iat;
    cr_assert(revoked, "its tokens are refused from now on");

    /* Erasing again answers the tombstone; nothing changes it any more. */
    user_t *again;
    cr_assert_eq(erase(su, u->id, &again, &st), 0, "%s", st.message);
    cr_assert_str_eq(again->username, e->username);
    Onceiot__Identity__V1__UpdateUserRequest up = ONCEIOT__IDENTITY__V1__UPDATE_USER_REQUEST__INIT;
    user_t in = ONCEIOT__IDENTITY__V1__USER__INIT;
    in.id = u->id;
    in.full_name = "Zelda again";
    char *paths[] = {"full_name"};
    Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    mask.paths = paths;
    mask.n_paths = 1;
    up.user = &in;
    up.update_mask = &mask;
    user_t *out;
    cr_assert_eq(ih_call(&h, "UpdateUser", &up, D(user), su, &out, &st), ERR_FAILED_PRECONDITION);
    Onceiot__Identity__V1__ChangePasswordRequest cp =
        ONCEIOT__IDENTITY__V1__CHANGE_PASSWORD_REQUEST__INIT;
    cp.user_id = u->id;
    cp.new_password = "another long password";
    Onceiot__Identity__V1__ChangePasswordResponse *cpr;
    cr_assert_eq(ih_call(&h, "ChangePassword", &cp, D(change_password_response), su, &cpr, &st),
                 ERR_FAILED_PRECONDITION);
    ck.request_id = "";
    ck.user_id = u->id;
    cr_assert_eq(ih_call(&h, "CreateApiKey", &ck, D(create_api_key_response), su, &k, &st),
                 ERR_FAILED_PRECONDITION);
    /* (The logins tried above with the old username are counted as for
     * any unknown username, and pruned as those are.) */
    cr_assert_eq(personal_rows("Zelda again"), 0, "the refused calls stored nothing");
    cr_assert_eq(personal_rows("zeldas-laptop"), 0);
}

Test(identity_erase, erase_is_for_admins_of_the_users_organization_and_never_of_yourself)
{
    user_t *u = ih_create_user(&h, su, "yves", 1, USER, "correct horse battery");
    user_t *admin2 = ih_create_user(&h, su, "xena", 2, ADMIN, "correct horse battery");
    user_t *e;
    rpc_status_t st;
    cr_assert_eq(erase(ih_principal(&h, admin2->id, 2, ADMIN, false), u->id, &e, &st),
                 ERR_NOT_FOUND, "another organization's user is not there");
    cr_assert_eq(erase(ih_principal(&h, u->id, 1, USER, false), u->id, &e, &st),
                 ERR_PERMISSION_DENIED, "users do not erase");
    cr_assert_eq(erase(ih_principal(&h, admin2->id, 2, ADMIN, false), admin2->id, &e, &st),
                 ERR_FAILED_PRECONDITION, "nobody erases themselves");
    user_t *admin1 = ih_create_user(&h, su, "wanda", 1, ADMIN, "correct horse battery");
    cr_assert_eq(erase(ih_principal(&h, admin1->id, 1, ADMIN, false), 1, &e, &st),
                 ERR_PERMISSION_DENIED, "only superusers erase superusers");
    cr_assert_eq(erase(su, 0, &e, &st), ERR_INVALID_ARGUMENT);
    cr_assert(ih_violation(&h, &st, "id"));
    cr_assert_eq(erase(su, 999999, &e, &st), ERR_NOT_FOUND);
    int rc;
    user_t *g = ih_get_user(&h, su, u->id, &st, &rc);
    cr_assert_eq(rc, 0);
    cr_assert_null(g->erased_at, "refused erasures changed nothing");
    cr_assert_str_eq(g->username, "yves");
    /* The tombstones' names are kept for them. */
    Onceiot__Identity__V1__CreateUserRequest cu = ONCEIOT__IDENTITY__V1__CREATE_USER_REQUEST__INIT;
    cu.username = "erased-12345";
    cu.email = "someone@erased.invalid";
    cu.password = "correct horse battery";
    cu.role = USER;
    user_t *out;
    cr_assert_eq(ih_call(&h, "CreateUser", &cu, D(user), su, &out, &st), ERR_INVALID_ARGUMENT);
    cr_assert(ih_violation(&h, &st, "username"));
    cr_assert(ih_violation(&h, &st, "email"));
}
