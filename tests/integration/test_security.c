/* Regression tests for the security review (issue 15): each runs the exploit
 * the review reproduced, through the gateway as an attacker would, against
 * real identity, sims and gateway processes, and expects it to fail. */
#include "google/protobuf/descriptor.pb-c.h"
#include "google/protobuf/field_mask.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "gw_client.h"
#include "identity/v1/identity.pb-c.h"
#include "sims/v1/sims.pb-c.h"
#include "stack_harness.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define IDENTITY "/onceiot.identity.v1.IdentityService/"
#define SIMS     "/onceiot.sims.v1.SimService/"
#define ADMIN    ONCEIOT__COMMON__V1__ROLE__ROLE_ADMIN
#define USER     ONCEIOT__COMMON__V1__ROLE__ROLE_USER
#define D(x)     (&onceiot__identity__v1__##x##__descriptor)

static sh_stack_t st;
static gwc_t g;
static char root[256]; /* "Bearer <bootstrap superuser key>" */

static void start(const char *const *identity_env, const char *const *gateway_env)
{
    sh_start_with_sims(&st, identity_env, gateway_env);
    gwc_open(&g, st.gateway.addr);
    snprintf(root, sizeof(root), "Bearer %s", st.admin_key);
}

static void setup(void)
{
    start(NULL, NULL);
}

static void teardown(void)
{
    gwc_close(&g);
    sh_stop(&st);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The id of the bootstrap superuser's key (its only one). */
static int64_t root_key_id(void)
{
    Onceiot__Identity__V1__ListApiKeysRequest req =
        ONCEIOT__IDENTITY__V1__LIST_API_KEYS_REQUEST__INIT;
    Onceiot__Identity__V1__ListApiKeysResponse *r = NULL;
    rpc_status_t s;
    cr_assert_eq(
        gwc_call(&g, root, IDENTITY "ListApiKeys", &req.base, D(list_api_keys_response), &r, &s), 0,
        "%s", s.message);
    cr_assert_eq(r->n_api_keys, 1);
    return r->api_keys[0]->id;
}

static int get_user(const char *auth, int64_t id, rpc_status_t *s)
{
    Onceiot__Identity__V1__GetUserRequest req = ONCEIOT__IDENTITY__V1__GET_USER_REQUEST__INIT;
    req.id = id;
    Onceiot__Identity__V1__User *u = NULL;
    return gwc_call(&g, auth, IDENTITY "GetUser", &req.base, D(user), &u, s);
}

TestSuite(security, .init = setup, .fini = teardown, .timeout = 240);

/* 1. An organization-1 admin who is not a superuser cannot touch the
 * bootstrap superuser's keys: mint, list, get or revoke. */
Test(security, an_org_admin_cannot_manage_a_superusers_keys)
{
    int64_t admin = gwc_create_user(&g, root, "org1admin", ADMIN, 1);
    const char *tok = gwc_login(&g, "org1admin", SH_PASSWORD);
    rpc_status_t s;
    const char *admin_scope[] = {"admin"};
    cr_assert_null(gwc_create_key(&g, tok, 1, admin_scope, 1, NULL, &s));
    cr_assert_eq(s.code, GRPC_STATUS_NOT_FOUND, "%s %s", err_grpc_name(s.code), s.message);

    Onceiot__Identity__V1__ListApiKeysRequest lreq =
        ONCEIOT__IDENTITY__V1__LIST_API_KEYS_REQUEST__INIT;
    lreq.user_id = 1;
    void *out = NULL;
    cr_assert_lt(
        gwc_call(&g, tok, IDENTITY "ListApiKeys", &lreq.base, D(list_api_keys_response), &out, &s),
        0);
    cr_assert_eq(s.code, GRPC_STATUS_NOT_FOUND);
    int64_t key = root_key_id();
    Onceiot__Identity__V1__GetApiKeyRequest greq = ONCEIOT__IDENTITY__V1__GET_API_KEY_REQUEST__INIT;
    greq.id = key;
    cr_assert_lt(gwc_call(&g, tok, IDENTITY "GetApiKey", &greq.base, D(api_key), &out, &s), 0);
    cr_assert_eq(s.code, GRPC_STATUS_NOT_FOUND);
    Onceiot__Identity__V1__RevokeApiKeyRequest rreq =
        ONCEIOT__IDENTITY__V1__REVOKE_API_KEY_REQUEST__INIT;
    rreq.id = key;
    cr_assert_lt(gwc_call(&g, tok, IDENTITY "RevokeApiKey", &rreq.base, D(api_key), &out, &s), 0);
    cr_assert_eq(s.code, GRPC_STATUS_NOT_FOUND);
    cr_assert_eq(get_user(root, 1, &s), 0, "the root key still works: %s", s.message);

    /* Its own organization's plain users stay manageable. */
    int64_t plain = gwc_create_user(&g, tok, "org1plain", USER, 1);
    const char *sims_read[] = {"sims:read"};
    cr_assert_not_null(gwc_create_key(&g, tok, plain, sims_read, 1, NULL, NULL));
    (void)admin;
}

/* 2. A users:read key of an org admin cannot reset another user's password. */
Test(security, changing_another_users_password_needs_users_write)
{
    int64_t admin = gwc_create_user(&g, root, "pwadmin", ADMIN, 2);
    int64_t victim = gwc_create_user(&g, root, "pwvictim", USER, 2);
    const char *read_only[] = {"users:read"};
    const char *admin_tok = gwc_login(&g, "pwadmin", SH_PASSWORD);
    const char *narrow = gwc_create_key(&g, admin_tok, admin, read_only, 1, NULL, NULL);

    Onceiot__Identity__V1__ChangePasswordRequest req =
        ONCEIOT__IDENTITY__V1__CHANGE_PASSWORD_REQUEST__INIT;
    req.user_id = victim;
    req.new_password = "attacker-chosen-password";
    void *out = NULL;
    rpc_status_t s;
    cr_assert_lt(gwc_call(&g, narrow, IDENTITY "ChangePassword", &req.base,
                          D(change_password_response), &out, &s),
                 0);
    cr_assert_eq(s.code, GRPC_STATUS_PERMISSION_DENIED, "%s %s", err_grpc_name(s.code), s.message);
    gwc_login(&g, "pwvictim", SH_PASSWORD); /* the old password still works */

    const char *write[] = {"users:read", "users:write"};
    const char *wide = gwc_create_key(&g, admin_tok, admin, write, 2, NULL, NULL);
    cr_assert_eq(gwc_call(&g, wide, IDENTITY "ChangePassword", &req.base,
                          D(change_password_response), &out, &s),
                 0, "%s", s.message);
}

/* 3. A key mints keys with at most its own scopes, and never beyond what the
 * owner's role allows. */
Test(security, a_key_never_grants_more_than_it_holds)
{
    int64_t user = gwc_create_user(&g, root, "minter", USER, 3);
    int64_t admin = gwc_create_user(&g, root, "adminminter", ADMIN, 3);
    const char *keys_write[] = {"keys:write"};
    const char *user_tok = gwc_login(&g, "minter", SH_PASSWORD);
    const char *admin_tok = gwc_login(&g, "adminminter", SH_PASSWORD);
    const char *user_key = gwc_create_key(&g, user_tok, user, keys_write, 1, NULL, NULL);
    const char *admin_key = gwc_create_key(&g, admin_tok, admin, keys_write, 1, NULL, NULL);

    rpc_status_t s;
    const char *more[] = {"sims:write", "sims:read", "users:read"};
    cr_assert_null(gwc_create_key(&g, user_key, 0, more, 3, NULL, &s));
    cr_assert_eq(s.code, GRPC_STATUS_INVALID_ARGUMENT, "%s", s.message);
    cr_assert(strstr(s.message, "scopes"), "%s", s.message);
    const char *admin_scope[] = {"admin"};
    cr_assert_null(gwc_create_key(&g, admin_key, 0, admin_scope, 1, NULL, &s));
    cr_assert_eq(s.code, GRPC_STATUS_INVALID_ARGUMENT, "%s", s.message);
    /* A subset of its own is fine. */
    cr_assert_not_null(gwc_create_key(&g, user_key, 0, keys_write, 1, NULL, NULL));
    /* A login token holds every scope, bounded by the role. */
    cr_assert_not_null(gwc_create_key(&g, user_tok, 0, more, 3, NULL, NULL));
    cr_assert_null(gwc_create_key(&g, user_tok, 0, admin_scope, 1, NULL, &s));
    cr_assert_eq(s.code, GRPC_STATUS_INVALID_ARGUMENT, "%s", s.message);
    cr_assert_not_null(gwc_create_key(&g, admin_tok, 0, admin_scope, 1, NULL, NULL));
}

static void set_role(int64_t id, Onceiot__Common__V1__Role role)
{
    Onceiot__Identity__V1__User u = ONCEIOT__IDENTITY__V1__USER__INIT;
    u.id = id;
    u.role = role;
    char *paths[] = {"role"};
    Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    mask.paths = paths;
    mask.n_paths = 1;
    Onceiot__Identity__V1__UpdateUserRequest req = ONCEIOT__IDENTITY__V1__UPDATE_USER_REQUEST__INIT;
    req.user = &u;
    req.update_mask = &mask;
    void *out = NULL;
    rpc_status_t s;
    cr_assert_eq(gwc_call(&g, root, IDENTITY "UpdateUser", &req.base, D(user), &out, &s), 0, "%s",
                 s.message);
}

/* 4. A token issued in the same second as (just before) a demotion stops
 * working once the gateway learns the revocation; a new login after it gets
 * the new role. */
Test(security, a_demotion_refuses_tokens_of_the_same_second, .timeout = 120)
{
    enum { N = 3 };
    int64_t ids[N];
    const char *toks[N];
    for (int i = 0; i < N; i++) {
        char name[32];
        snprintf(name, sizeof(name), "demoted%d", i);
        ids[i] = gwc_create_user(&g, root, name, ADMIN, 4);
        toks[i] = gwc_login(&g, name, SH_PASSWORD);
        set_role(ids[i], USER); /* milliseconds after the login */
    }
    rpc_status_t s;
    for (int i = 0; i < N; i++) {
        int64_t until = mono_ms() + 30000;
        int rc;
        while ((rc = get_user(toks[i], ids[i], &s)) == 0 && mono_ms() < until)
            usleep(200000);
        cr_assert_lt(rc, 0, "token %d still works after the demotion", i);
        cr_assert_eq(s.code, GRPC_STATUS_UNAUTHENTICATED, "%s", s.message);
    }
    usleep(10000);
    const char *fresh = gwc_login(&g, "demoted0", SH_PASSWORD);
    cr_assert_eq(get_user(fresh, ids[0], &s), 0, "a login after the demotion works: %s", s.message);
    Onceiot__Identity__V1__CreateUserRequest req = ONCEIOT__IDENTITY__V1__CREATE_USER_REQUEST__INIT;
    req.username = "made-by-demoted";
    req.email = "mbd@example.com";
    req.password = SH_PASSWORD;
    req.role = ADMIN;
    void *out = NULL;
    cr_assert_lt(gwc_call(&g, fresh, IDENTITY "CreateUser", &req.base, D(user), &out, &s), 0);
    cr_assert_eq(s.code, GRPC_STATUS_PERMISSION_DENIED, "%s", s.message);
}

/* Opens WatchEvents as auth with a deadline. */
static rpc_stream_t *watch(const char *auth, int64_t timeout_ms)
{
    Onceiot__Sims__V1__WatchEventsRequest req = ONCEIOT__SIMS__V1__WATCH_EVENTS_REQUEST__INIT;
    rpc_call_opts_t o = gwc_opts(&g, auth, timeout_ms);
    rpc_stream_t *s = NULL;
    cr_assert_eq(rpc_stream_open(g.ch, SIMS "WatchEvents", g.arena, &o, &s), 0);
    cr_assert_eq(rpc_stream_send(s, &req.base), 0);
    cr_assert_eq(rpc_stream_close_send(s), 0);
    return s;
}

/* Reads until the stream ends; returns its final status code. */
static grpc_status_code watch_end(rpc_stream_t *s, rpc_status_t *status)
{
    ProtobufCMessage *ev = NULL;
    while (rpc_stream_recv(s, &onceiot__sims__v1__sim_event__descriptor, &ev) > 0)
        ;
    rpc_stream_finish(s, status);
    return status->code;
}

/* 5a. A stream opened with an API key ends when the key is revoked. */
Test(security, a_stream_ends_when_its_key_is_revoked, .timeout = 120)
{
    int64_t u = gwc_create_user(&g, root, "watcher", ADMIN, 5);
    const char *tok = gwc_login(&g, "watcher", SH_PASSWORD);
    const char *scopes[] = {"sims:read"};
    int64_t key_id;
    const char *key = gwc_create_key(&g, tok, u, scopes, 1, &key_id, NULL);
    rpc_stream_t *s = watch(key, 60000);
    usleep(500000);
    Onceiot__Identity__V1__RevokeApiKeyRequest rreq =
        ONCEIOT__IDENTITY__V1__REVOKE_API_KEY_REQUEST__INIT;
    rreq.id = key_id;
    void *out = NULL;
    rpc_status_t rs;
    cr_assert_eq(gwc_call(&g, tok, IDENTITY "RevokeApiKey", &rreq.base, D(api_key), &out, &rs), 0);
    int64_t t0 = mono_ms();
    rpc_status_t status;
    cr_assert_eq(watch_end(s, &status), GRPC_STATUS_UNAUTHENTICATED, "%s %s",
                 err_grpc_name(status.code), status.message);
    cr_assert_lt(mono_ms() - t0, 30000);
}

/* 5b. A stream ends when its credential expires, and any stream at the
 * longest lifetime. */
Test(security, a_stream_ends_at_its_credentials_expiry_and_lifetime, .timeout = 120)
{
    teardown();
    start(NULL, (const char *const[]){"ONCEIOT_STREAM_LIFETIME_S=3", NULL});
    int64_t u = gwc_create_user(&g, root, "expiring", ADMIN, 6);
    const char *tok = gwc_login(&g, "expiring", SH_PASSWORD);
    Onceiot__Identity__V1__CreateApiKeyRequest req =
        ONCEIOT__IDENTITY__V1__CREATE_API_KEY_REQUEST__INIT;
    char *scopes[] = {"sims:read"};
    Google__Protobuf__Timestamp exp = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    exp.seconds = time(NULL) + 2;
    req.name = "short";
    req.scopes = scopes;
    req.n_scopes = 1;
    req.user_id = u;
    req.expires_at = &exp;
    Onceiot__Identity__V1__CreateApiKeyResponse *r = NULL;
    rpc_status_t s;
    cr_assert_eq(
        gwc_call(&g, tok, IDENTITY "CreateApiKey", &req.base, D(create_api_key_response), &r, &s),
        0, "%s", s.message);
    rpc_stream_t *w = watch(arena_printf(g.arena, "Bearer %s", r->secret), 60000);
    rpc_status_t status;
    cr_assert_eq(watch_end(w, &status), GRPC_STATUS_UNAUTHENTICATED, "%s %s",
                 err_grpc_name(status.code), status.message);
    cr_assert(strstr(status.message, "expired"), "%s", status.message);

    int64_t t0 = mono_ms();
    w = watch(tok, 60000);
    cr_assert_eq(watch_end(w, &status), GRPC_STATUS_UNAVAILABLE, "%s %s",
                 err_grpc_name(status.code), status.message);
    int64_t took = mono_ms() - t0;
    cr_assert(took >= 2500 && took < 15000, "lifetime cap after %lld ms", (long long)took);
}

/* 12. One organization cannot hold more than its share of streams. */
Test(security, streams_are_capped_per_organization, .timeout = 120)
{
    teardown();
    start(NULL, (const char *const[]){"ONCEIOT_MAX_STREAMS_PER_ORG=2", NULL});
    gwc_create_user(&g, root, "greedy", ADMIN, 7);
    gwc_create_user(&g, root, "neighbour", ADMIN, 8);
    const char *greedy = gwc_login(&g, "greedy", SH_PASSWORD);
    const char *neighbour = gwc_login(&g, "neighbour", SH_PASSWORD);
    rpc_stream_t *a = watch(greedy, 60000), *b = watch(greedy, 60000);
    usleep(500000);
    rpc_status_t status;
    cr_assert_eq(watch_end(watch(greedy, 60000), &status), GRPC_STATUS_RESOURCE_EXHAUSTED, "%s %s",
                 err_grpc_name(status.code), status.message);
    /* The other organization still gets a stream: it runs to its deadline. */
    cr_assert_eq(watch_end(watch(neighbour, 1500), &status), GRPC_STATUS_DEADLINE_EXCEEDED, "%s %s",
                 err_grpc_name(status.code), status.message);
    rpc_stream_cancel(a);
    rpc_stream_cancel(b);
    watch_end(a, &status);
    watch_end(b, &status);
    /* Closed streams give their places back. */
    usleep(300000);
    cr_assert_eq(watch_end(watch(greedy, 1500), &status), GRPC_STATUS_DEADLINE_EXCEEDED, "%s %s",
                 err_grpc_name(status.code), status.message);
}

typedef struct flood {
    atomic_bool stop;
    atomic_int logins, limited, other;
    gwc_t *g;
} flood_t;

/* Logs in with random usernames until told to stop (bounded by time). */
static void *flood_logins(void *arg)
{
    flood_t *f = arg;
    arena_t *a = arena_new();
    int64_t until = mono_ms() + 10000;
    for (int i = 0; !atomic_load(&f->stop) && mono_ms() < until; i++) {
        Onceiot__Identity__V1__LoginRequest req = ONCEIOT__IDENTITY__V1__LOGIN_REQUEST__INIT;
        req.username = arena_printf(a, "nobody-%d-%d", (int)(intptr_t)pthread_self() & 0xffff, i);
        req.password = "not-the-password";
        rpc_call_opts_t o = {.timeout_ms = 5000};
        ProtobufCMessage *out = NULL;
        rpc_status_t s;
        rpc_unary(f->g->ch, IDENTITY "Login", &req.base,
                  &onceiot__identity__v1__login_response__descriptor, a, &o, &out, &s);
        atomic_fetch_add(&f->logins, 1);
        if (s.code == GRPC_STATUS_RESOURCE_EXHAUSTED)
            atomic_fetch_add(&f->limited, 1);
        else if (s.code != GRPC_STATUS_UNAUTHENTICATED)
            atomic_fetch_add(&f->other, 1);
    }
    arena_free(a);
    return NULL;
}

/* 7. A flood of Logins does not stop API-key authentication (every call
 * goes to identity's Authenticate: the gateway's cache is off). */
Test(security, a_login_flood_does_not_block_api_keys, .timeout = 120)
{
    teardown();
    start(NULL, (const char *const[]){"ONCEIOT_AUTH_CACHE_S=0", NULL});
    enum { THREADS = 24 };
    flood_t f = {.g = &g};
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, flood_logins, &f), 0);
    int failures = 0;
    rpc_status_t s, last = {0};
    for (int i = 0; i < 40; i++) {
        if (get_user(root, 1, &s) < 0) {
            failures++;
            last = s;
        }
        usleep(50000);
    }
    atomic_store(&f.stop, true);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    cr_assert_eq(failures, 0, "%d API-key calls failed, last %s %s", failures,
                 err_grpc_name(last.code), last.message ? last.message : "");
    cr_assert_gt(atomic_load(&f.limited), 0, "no Login was rate-limited (%d logins)",
                 atomic_load(&f.logins));
    cr_assert_eq(atomic_load(&f.other), 0,
                 "Logins ended other than UNAUTHENTICATED/RESOURCE_EXHAUSTED");
}

/* 8. ChangePassword's old-password check backs off like Login. */
Test(security, wrong_old_passwords_back_off)
{
    gwc_create_user(&g, root, "guessed", USER, 9);
    const char *tok = gwc_login(&g, "guessed", SH_PASSWORD);
    Onceiot__Identity__V1__ChangePasswordRequest req =
        ONCEIOT__IDENTITY__V1__CHANGE_PASSWORD_REQUEST__INIT;
    req.new_password = "a-new-long-password";
    void *out = NULL;
    rpc_status_t s;
    for (int i = 0; i < 3; i++) {
        req.old_password = arena_printf(g.arena, "guess-%d", i);
        cr_assert_lt(gwc_call(&g, tok, IDENTITY "ChangePassword", &req.base,
                              D(change_password_response), &out, &s),
                     0);
        cr_assert_eq(s.code, GRPC_STATUS_PERMISSION_DENIED, "%s", s.message);
    }
    req.old_password = SH_PASSWORD; /* right, but in the backoff window */
    cr_assert_lt(gwc_call(&g, tok, IDENTITY "ChangePassword", &req.base,
                          D(change_password_response), &out, &s),
                 0);
    cr_assert_eq(s.code, GRPC_STATUS_RESOURCE_EXHAUSTED, "%s %s", err_grpc_name(s.code), s.message);
}

/* 10. PostgreSQL's own words never reach the client. */
Test(security, database_errors_are_worded_by_us)
{
    /* A time 285000 years before 1970, before PostgreSQL's first timestamp
     * (4713 BC): it refuses the comparison (22008).
     * (Invalid JSON no longer reaches it: metadata is a Struct.) */
    Onceiot__Sims__V1__SimInput in = ONCEIOT__SIMS__V1__SIM_INPUT__INIT;
    in.iccid = "8988303000000000105";
    Onceiot__Sims__V1__CreateSimRequest req = ONCEIOT__SIMS__V1__CREATE_SIM_REQUEST__INIT;
    req.sim = &in;
    void *out = NULL;
    rpc_status_t s;
    cr_assert_eq(gwc_call(&g, root, SIMS "CreateSim", &req.base,
                          &onceiot__sims__v1__sim__descriptor, &out, &s),
                 0, "%s", s.message);
    Google__Protobuf__Timestamp far = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    far.seconds = -9000000000000LL;
    Onceiot__Sims__V1__ListEventsRequest list = ONCEIOT__SIMS__V1__LIST_EVENTS_REQUEST__INIT;
    list.iccid = in.iccid;
    list.since = &far;
    cr_assert_lt(gwc_call(&g, root, SIMS "ListEvents", &list.base,
                          &onceiot__sims__v1__list_events_response__descriptor, &out, &s),
                 0);
    cr_assert_eq(s.code, GRPC_STATUS_INVALID_ARGUMENT, "%s", s.message);
    cr_assert(!strstr(s.message, "timestamp") && !strstr(s.message, "22008") &&
                  !strstr(s.message, "ERROR"),
              "raw database text: %s", s.message);
    cr_assert(ph_log_contains(&st.sims, "db_error"), "the detail is logged");
}

/* 13. Reflection at the gateway shows no internal method. */
Test(security, gateway_reflection_hides_internal_methods)
{
    const char *symbols[] = {"onceiot.identity.v1.IdentityService", "onceiot.sims.v1.SimService"};
    const char *hidden[] = {"Authenticate", "GetVerificationKeys", "ApplyUsage",  "ExpireSim",
                            "ReceiveSms",   "UpdateSmsStatus",     "RecordEvents"};
    for (size_t k = 0; k < 2; k++) {
        rpc_call_opts_t o = gwc_opts(&g, NULL, 10000);
        rpc_stream_t *s = NULL;
        cr_assert_eq(rpc_stream_open(g.ch,
                                     "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                     g.arena, &o, &s),
                     0);
        Grpc__Reflection__V1__ServerReflectionRequest req =
            GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
        req.message_request_case =
            GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL;
        req.file_containing_symbol = (char *)symbols[k];
        cr_assert_eq(rpc_stream_send(s, &req.base), 0);
        cr_assert_eq(rpc_stream_close_send(s), 0);
        Grpc__Reflection__V1__ServerReflectionResponse *resp = NULL;
        cr_assert_eq(rpc_stream_recv(s,
                                     &grpc__reflection__v1__server_reflection_response__descriptor,
                                     (ProtobufCMessage **)&resp),
                     1);
        cr_assert_not_null(resp->file_descriptor_response);
        const Grpc__Reflection__V1__FileDescriptorResponse *fr = resp->file_descriptor_response;
        cr_assert_gt(fr->n_file_descriptor_proto, 0);
        Google__Protobuf__FileDescriptorProto *f = google__protobuf__file_descriptor_proto__unpack(
            NULL, fr->file_descriptor_proto[0].len, fr->file_descriptor_proto[0].data);
        cr_assert_not_null(f);
        cr_assert_eq(f->n_service, 1);
        size_t public_methods = 0;
        for (size_t m = 0; m < f->service[0]->n_method; m++) {
            for (size_t h = 0; h < sizeof(hidden) / sizeof(*hidden); h++)
                cr_assert_str_neq(f->service[0]->method[m]->name, hidden[h]);
            public_methods++;
        }
        cr_assert_gt(public_methods, 3, "public methods are still listed");
        google__protobuf__file_descriptor_proto__free_unpacked(f, NULL);
        rpc_status_t status;
        while (rpc_stream_recv(s, &grpc__reflection__v1__server_reflection_response__descriptor,
                               (ProtobufCMessage **)&resp) > 0)
            ;
        cr_assert_eq(rpc_stream_finish(s, &status), 0, "%s", status.message);
    }
}

/* 14. A generated bootstrap password goes to a 0600 file, never the log. */
Test(security, a_generated_bootstrap_password_is_never_logged)
{
    teardown();
    start((const char *const[]){"ONCEIOT_BOOTSTRAP_ADMIN_PASSWORD=", NULL}, NULL);
    char path[300], password[128] = "";
    snprintf(path, sizeof(path), "%s.password", st.key_file);
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0, "no %s", path);
    cr_assert_eq(sb.st_mode & 0777, 0600);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    cr_assert_not_null(fgets(password, sizeof(password), f));
    fclose(f);
    unlink(path);
    cr_assert_geq(strlen(password), 20);
    cr_assert(!ph_log_contains(&st.identity, password), "the password is in identity's log");
    gwc_login(&g, "admin", password);
}
