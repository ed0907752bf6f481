/* Calling the gateway as a user would. */
#include "gw_client.h"

#include "identity/v1/identity.pb-c.h"
#include "stack_harness.h"

#include <criterion/criterion.h>

#define IDENTITY "/onceiot.identity.v1.IdentityService/"

void gwc_open(gwc_t *g, const char *addr)
{
    cr_assert_eq(rpc_channel_new(addr, 1 << 22, &g->ch), 0);
    g->arena = arena_new();
}

void gwc_close(gwc_t *g)
{
    rpc_channel_free(g->ch);
    arena_free(g->arena);
}

rpc_call_opts_t gwc_opts(gwc_t *g, const char *auth, int64_t timeout_ms)
{
    rpc_md_t *md = arena_calloc(g->arena, 1, sizeof(*md));
    size_t n = 0;
    if (auth)
        md[n++] = (rpc_md_t){"authorization", auth, 0};
    return (rpc_call_opts_t){
        .timeout_ms = timeout_ms ? timeout_ms : 20000, .metadata = md, .n_metadata = n};
}

int gwc_call(gwc_t *g, const char *auth, const char *method, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *resp_desc, void *resp, rpc_status_t *st)
{
    rpc_call_opts_t o = gwc_opts(g, auth, 0);
    return rpc_unary(g->ch, method, req, resp_desc, g->arena, &o, (ProtobufCMessage **)resp, st);
}

int64_t gwc_create_user(gwc_t *g, const char *auth, const char *name,
                        Onceiot__Common__V1__Role role, int64_t org)
{
    Onceiot__Identity__V1__CreateUserRequest req = ONCEIOT__IDENTITY__V1__CREATE_USER_REQUEST__INIT;
    req.username = (char *)name;
    req.email = arena_printf(g->arena, "%s@example.com", name);
    req.password = SH_PASSWORD;
    req.full_name = "Test User";
    req.role = role;
    req.organization_id = org;
    Onceiot__Identity__V1__User *u = NULL;
    rpc_status_t st;
    int rc = gwc_call(g, auth, IDENTITY "CreateUser", &req.base,
                      &onceiot__identity__v1__user__descriptor, &u, &st);
    cr_assert_eq(rc, 0, "CreateUser %s: %s %s", name, err_grpc_name(st.code), st.message);
    return u->id;
}

const char *gwc_create_key(gwc_t *g, const char *auth, int64_t user_id, const char *const *scopes,
                           size_t n, int64_t *key_id, rpc_status_t *st)
{
    Onceiot__Identity__V1__CreateApiKeyRequest req =
        ONCEIOT__IDENTITY__V1__CREATE_API_KEY_REQUEST__INIT;
    req.name = "test";
    req.scopes = (char **)scopes;
    req.n_scopes = n;
    req.user_id = user_id;
    Onceiot__Identity__V1__CreateApiKeyResponse *r = NULL;
    rpc_status_t own;
    int rc =
        gwc_call(g, auth, IDENTITY "CreateApiKey", &req.base,
                 &onceiot__identity__v1__create_api_key_response__descriptor, &r, st ? st : &own);
    if (rc < 0 && st)
        return NULL;
    cr_assert_eq(rc, 0, "CreateApiKey: %s %s", err_grpc_name(own.code), own.message);
    if (key_id)
        *key_id = r->api_key->id;
    return arena_printf(g->arena, "Bearer %s", r->secret);
}

const char *gwc_login(gwc_t *g, const char *username, const char *password)
{
    Onceiot__Identity__V1__LoginRequest req = ONCEIOT__IDENTITY__V1__LOGIN_REQUEST__INIT;
    req.username = (char *)username;
    req.password = (char *)password;
    Onceiot__Identity__V1__LoginResponse *r = NULL;
    rpc_status_t st;
    int rc = gwc_call(g, NULL, IDENTITY "Login", &req.base,
                      &onceiot__identity__v1__login_response__descriptor, &r, &st);
    cr_assert_eq(rc, 0, "Login %s: %s %s", username, err_grpc_name(st.code), st.message);
    return arena_printf(g->arena, "Bearer %s", r->token);
}
