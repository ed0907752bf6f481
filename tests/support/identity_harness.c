/* See identity_harness.h. */
#include "identity_harness.h"

#include "pg_harness.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void ih_start(ih_t *h, bool fresh)
{
    if (fresh) {
        memset(h, 0, sizeof(*h));
        pgh_drop_schema("identity");
        char *dir = ph_build_path("testlogs");
        snprintf(h->key_file, sizeof(h->key_file), "%s/identity-admin-%d.key", dir, (int)getpid());
        mem_free(dir);
        unlink(h->key_file);
        ph_issuer_key(IH_PRINCIPAL_KEY, "gateway", &h->pkey);
    }
    if (!h->arena)
        h->arena = arena_new();
    char *schema_dir = ph_source_path("schema/identity");
    char *db = mem_printf("ONCEIOT_DATABASE_URL=%s", pgh_url());
    char *dir = mem_printf("ONCEIOT_SCHEMA_DIR=%s", schema_dir);
    char *key_file = mem_printf("ONCEIOT_BOOTSTRAP_KEY_FILE=%s", h->key_file);
    const char *env[] = {db,
                         dir,
                         key_file,
                         "ONCEIOT_PRINCIPAL_KEY=" IH_PRINCIPAL_KEY,
                         "ONCEIOT_TOKEN_SIGNING_KEY=" IH_SIGNING_SEED,
                         "ONCEIOT_API_KEY_PEPPER=" IH_PEPPER,
                         "ONCEIOT_BOOTSTRAP_ADMIN_PASSWORD=" IH_ADMIN_PASS,
                         "ONCEIOT_HEALTH_INTERVAL_MS=200",
                         "ONCEIOT_GRACE_MS=3000",
                         NULL};
    char *bin = ph_build_path("services/onceiot-identity");
    ph_start(&h->proc, bin, env);
    mem_free(bin);
    mem_free(db);
    mem_free(dir);
    mem_free(key_file);
    mem_free(schema_dir);
    cr_assert_eq(rpc_channel_new(h->proc.addr, 0, &h->ch), 0);
}

void ih_stop(ih_t *h)
{
    rpc_channel_free(h->ch);
    h->ch = NULL;
    if (h->proc.pid) {
        int code = ph_stop(&h->proc, SIGTERM, 20000);
        cr_expect_eq(code, 0, "onceiot-identity exited with %d (log %s)", code, h->proc.log);
    }
    cr_expect(!ph_log_has_sanitizer_report(&h->proc), "sanitizer report in %s", h->proc.log);
}

principal_t *ih_principal(ih_t *h, int64_t user_id, int64_t org, Onceiot__Common__V1__Role role,
                          bool superuser)
{
    principal_t *p = arena_alloc(h->arena, sizeof(*p));
    onceiot__common__v1__principal__init(p);
    p->user_id = user_id;
    p->username = "tester";
    p->organization_id = org;
    p->role = role;
    p->is_superuser = superuser;
    /* As the gateway signs a login token's principal: every scope. */
    static char *all_scopes[] = {"admin"};
    p->scopes = all_scopes;
    p->n_scopes = 1;
    p->credential = "token";
    return p;
}

principal_t *ih_gateway(ih_t *h)
{
    principal_t *p = ih_principal(h, 0, 0, ONCEIOT__COMMON__V1__ROLE__ROLE_UNSPECIFIED, false);
    p->credential = "service:gateway";
    return p;
}

int ih_call(ih_t *h, const char *method, const void *req, const ProtobufCMessageDescriptor *desc,
            const principal_t *p, void *resp, rpc_status_t *st)
{
    char *full = arena_printf(h->arena, "/onceiot.identity.v1.IdentityService/%s", method);
    rpc_md_t md[2];
    rpc_call_opts_t opts = {.timeout_ms = 20000};
    if (p) {
        /* principal_sign sets method and time on its argument. */
        principal_t *copy = arena_alloc(h->arena, sizeof(*copy));
        *copy = *p;
        principal_sign(&h->pkey, copy, full, h->arena, md);
        opts.metadata = md;
        opts.n_metadata = 2;
    }
    return rpc_unary(h->ch, full, req, desc, h->arena, &opts, resp, st);
}

bool ih_violation(ih_t *h, const rpc_status_t *st, const char *field)
{
    const char **fields, **descs;
    size_t n = rpc_status_violations(st, h->arena, &fields, &descs);
    for (size_t i = 0; i < n; i++)
        if (strcmp(fields[i], field) == 0)
            return true;
    return false;
}

void ih_setup(ih_t *h, principal_t **su)
{
    cr_assert(sodium_init() >= 0);
    ih_start(h, true);
    *su = ih_principal(h, 1, 1, ONCEIOT__COMMON__V1__ROLE__ROLE_ADMIN, true);
}

void ih_teardown(ih_t *h)
{
    ih_stop(h);
    unlink(h->key_file);
    arena_free(h->arena);
}

Onceiot__Identity__V1__User *ih_create_user(ih_t *h, const principal_t *as, const char *username,
                                            int64_t org, Onceiot__Common__V1__Role role,
                                            const char *password)
{
    Onceiot__Identity__V1__CreateUserRequest req = ONCEIOT__IDENTITY__V1__CREATE_USER_REQUEST__INIT;
    req.username = (char *)username;
    req.email = arena_printf(h->arena, "%s@example.com", username);
    req.password = (char *)password;
    req.full_name = "Test User";
    req.role = role;
    req.organization_id = org;
    Onceiot__Identity__V1__User *u = NULL;
    rpc_status_t st;
    cr_assert_eq(ih_call(h, "CreateUser", &req, D(user), as, &u, &st), 0, "%s", st.message);
    return u;
}

int ih_login(ih_t *h, const char *username, const char *password,
             Onceiot__Identity__V1__LoginResponse **out, rpc_status_t *st)
{
    Onceiot__Identity__V1__LoginRequest req = ONCEIOT__IDENTITY__V1__LOGIN_REQUEST__INIT;
    req.username = (char *)username;
    req.password = (char *)password;
    return ih_call(h, "Login", &req, D(login_response), NULL, out, st);
}

Onceiot__Identity__V1__CreateApiKeyResponse *ih_create_key(ih_t *h, const principal_t *as,
                                                           int64_t user_id, const char *scope,
                                                           int64_t expires_at)
{
    Onceiot__Identity__V1__CreateApiKeyRequest req =
        ONCEIOT__IDENTITY__V1__CREATE_API_KEY_REQUEST__INIT;
    req.name = "test key";
    char *scopes[] = {(char *)scope};
    req.scopes = scopes;
    req.n_scopes = 1;
    req.user_id = user_id;
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    if (expires_at) {
        ts.seconds = expires_at;
        req.expires_at = &ts;
    }
    Onceiot__Identity__V1__CreateApiKeyResponse *out = NULL;
    rpc_status_t st;
    cr_assert_eq(ih_call(h, "CreateApiKey", &req, D(create_api_key_response), as, &out, &st), 0,
                 "%s", st.message);
    return out;
}

int ih_authenticate(ih_t *h, const char *secret, Onceiot__Identity__V1__AuthenticateResponse **out,
                    rpc_status_t *st)
{
    Onceiot__Identity__V1__AuthenticateRequest req =
        ONCEIOT__IDENTITY__V1__AUTHENTICATE_REQUEST__INIT;
    req.secret = (char *)secret;
    return ih_call(h, "Authenticate", &req, D(authenticate_response), ih_gateway(h), out, st);
}

Onceiot__Identity__V1__User *ih_get_user(ih_t *h, const principal_t *as, int64_t id,
                                         rpc_status_t *st, int *rc)
{
    Onceiot__Identity__V1__GetUserRequest req = ONCEIOT__IDENTITY__V1__GET_USER_REQUEST__INIT;
    req.id = id;
    Onceiot__Identity__V1__User *u = NULL;
    *rc = ih_call(h, "GetUser", &req, D(user), as, &u, st);
    return u;
}

Onceiot__Identity__V1__GetVerificationKeysResponse *ih_verification_keys(ih_t *h)
{
    Onceiot__Identity__V1__GetVerificationKeysRequest req =
        ONCEIOT__IDENTITY__V1__GET_VERIFICATION_KEYS_REQUEST__INIT;
    Onceiot__Identity__V1__GetVerificationKeysResponse *out = NULL;
    rpc_status_t st;
    cr_assert_eq(ih_call(h, "GetVerificationKeys", &req, D(get_verification_keys_response),
                         ih_gateway(h), &out, &st),
                 0, "%s", st.message);
    cr_assert_eq(out->n_keys, 1);
    cr_assert_eq(out->keys[0]->public_key.len, 32);
    return out;
}

int ih_login_from(ih_t *h, const char *address, const char *username, const char *password,
                  Onceiot__Identity__V1__LoginResponse **out, rpc_status_t *st)
{
    principal_t *p = ih_principal(h, 0, 0, ONCEIOT__COMMON__V1__ROLE__ROLE_UNSPECIFIED, false);
    p->credential = "anonymous";
    p->n_scopes = 0;
    p->client_address = (char *)address;
    Onceiot__Identity__V1__LoginRequest req = ONCEIOT__IDENTITY__V1__LOGIN_REQUEST__INIT;
    req.username = (char *)username;
    req.password = (char *)password;
    return ih_call(h, "Login", &req, D(login_response), p, out, st);
}
