/* Request ids (AIP-155) through the gateway, against real identity, sims and
 * gateway processes: a retry with the same id answers the first answer and
 * changes nothing, the same id for another request is refused, concurrent
 * retries apply once, answers with secrets are stored sealed, ids are per
 * caller, and the runtime's upkeep prunes what would grow without bound. */
#include "gw_client.h"
#include "identity/v1/identity.pb-c.h"
#include "onceiot/requestid.h"
#include "pg_harness.h"
#include "sims/v1/sims.pb-c.h"
#include "stack_harness.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define IDENTITY "/onceiot.identity.v1.IdentityService/"
#define SIMS     "/onceiot.sims.v1.SimService/"
#define DATA     ONCEIOT__SIMS__V1__QUOTA_TYPE__QUOTA_TYPE_DATA
#define SMS      ONCEIOT__SIMS__V1__QUOTA_TYPE__QUOTA_TYPE_SMS
#define ADMIN    ONCEIOT__COMMON__V1__ROLE__ROLE_ADMIN

static sh_stack_t st;
static gwc_t g;
static char root[256]; /* "Bearer <bootstrap superuser key>" */

static void start(const char *const *identity_env)
{
    sh_start_with_sims(&st, identity_env, NULL);
    gwc_open(&g, st.gateway.addr);
    snprintf(root, sizeof(root), "Bearer %s", st.admin_key);
}

static void setup(void)
{
    start(NULL);
}

static void teardown(void)
{
    gwc_close(&g);
    sh_stop(&st);
}

/* A count from SQL with one text parameter. */
static long count_of(const char *sql, const char *param)
{
    const char *params[] = {param};
    return pgh_count(sql, param ? 1 : 0, params);
}

static void create_sim(const char *iccid, int64_t data, int64_t sms)
{
    Onceiot__Sims__V1__SimInput in = ONCEIOT__SIMS__V1__SIM_INPUT__INIT;
    in.iccid = (char *)iccid;
    in.data_volume = data;
    in.sms_volume = sms;
    Onceiot__Sims__V1__CreateSimRequest req = ONCEIOT__SIMS__V1__CREATE_SIM_REQUEST__INIT;
    req.sim = &in;
    Onceiot__Sims__V1__Sim *out = NULL;
    rpc_status_t s;
    cr_assert_eq(gwc_call(&g, root, SIMS "CreateSim", &req.base,
                          &onceiot__sims__v1__sim__descriptor, &out, &s),
                 0, "CreateSim: %s", s.message);
}

static int top_up(gwc_t *c, const char *iccid, int64_t volume, const char *request_id,
                  Onceiot__Sims__V1__Quota **q, rpc_status_t *s)
{
    Onceiot__Sims__V1__TopUpQuotaRequest req = ONCEIOT__SIMS__V1__TOP_UP_QUOTA_REQUEST__INIT;
    req.iccid = (char *)iccid;
    req.quota_type = DATA;
    req.volume = volume;
    req.request_id = (char *)request_id;
    return gwc_call(c, root, SIMS "TopUpQuota", &req.base, &onceiot__sims__v1__quota__descriptor, q,
                    s);
}

static int64_t data_volume(const char *iccid)
{
    Onceiot__Sims__V1__GetQuotaRequest req = ONCEIOT__SIMS__V1__GET_QUOTA_REQUEST__INIT;
    req.iccid = (char *)iccid;
    req.quota_type = DATA;
    Onceiot__Sims__V1__Quota *q = NULL;
    rpc_status_t s;
    cr_assert_eq(gwc_call(&g, root, SIMS "GetQuota", &req.base,
                          &onceiot__sims__v1__quota__descriptor, &q, &s),
                 0, "GetQuota: %s", s.message);
    return q->volume;
}

static long quota_added_events(const char *iccid)
{
    return count_of("SELECT count(*) FROM sims.sim_events WHERE iccid = $1 "
                    "AND event_type = 'quota_added'",
                    iccid);
}

TestSuite(request_ids, .init = setup, .fini = teardown, .timeout = 240);

Test(request_ids, a_retried_top_up_adds_once_and_answers_the_first_answer)
{
    const char *iccid = "8988303000000001001";
    create_sim(iccid, 1000, 0);
    Onceiot__Sims__V1__Quota *first = NULL, *again = NULL;
    rpc_status_t s;
    cr_assert_eq(top_up(&g, iccid, 500, "topup-1", &first, &s), 0, "%s", s.message);
    cr_assert_eq(first->volume, 1500);
    cr_assert_eq(top_up(&g, iccid, 500, "topup-1", &again, &s), 0, "%s", s.message);
    cr_assert_eq(again->volume, 1500, "the retry answers the first answer");
    cr_assert_eq(again->last_volume_added, 500);
    cr_assert_eq(data_volume(iccid), 1500, "added once");
    cr_assert_eq(quota_added_events(iccid), 1);

    /* The same id for another request is refused and changes nothing. */
    Onceiot__Sims__V1__Quota *other = NULL;
    cr_assert_lt(top_up(&g, iccid, 700, "topup-1", &other, &s), 0);
    cr_assert_eq(s.code, GRPC_STATUS_INVALID_ARGUMENT, "%s %s", err_grpc_name(s.code), s.message);
    cr_assert(strstr(s.message, "topup-1") && strstr(s.message, "different request"), "%s",
              s.message);
    cr_assert_eq(data_volume(iccid), 1500);

    /* Without an id, every call is a new request. */
    cr_assert_eq(top_up(&g, iccid, 1, "", &other, &s), 0, "%s", s.message);
    cr_assert_eq(top_up(&g, iccid, 1, "", &other, &s), 0, "%s", s.message);
    cr_assert_eq(data_volume(iccid), 1502);
    /* A new id is a new request. */
    cr_assert_eq(top_up(&g, iccid, 500, "topup-2", &other, &s), 0, "%s", s.message);
    cr_assert_eq(data_volume(iccid), 2002);
    cr_assert_eq(quota_added_events(iccid), 4);
}

Test(request_ids, malformed_request_ids_are_refused_and_change_nothing)
{
    const char *iccid = "8988303000000001002";
    create_sim(iccid, 1000, 0);
    char too_long[REQUESTID_MAX + 2];
    memset(too_long, 'a', sizeof(too_long) - 1);
    too_long[sizeof(too_long) - 1] = '\0';
    const char *bad[] = {"has space", "semi;colon", "ünïcode", too_long};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        Onceiot__Sims__V1__Quota *q = NULL;
        rpc_status_t s;
        cr_assert_lt(top_up(&g, iccid, 10, bad[i], &q, &s), 0, "id %zu accepted", i);
        cr_assert_eq(s.code, GRPC_STATUS_INVALID_ARGUMENT, "%s", s.message);
        cr_assert(strstr(s.message, "request_id"), "names the field: %s", s.message);
    }
    cr_assert_eq(data_volume(iccid), 1000);
    cr_assert_eq(count_of("SELECT count(*) FROM sims.request_ids", NULL), 0);
}

#define RACERS 8

typedef struct racer {
    gwc_t c;
    const char *iccid;
    pthread_barrier_t *go;
    int rc;
    int64_t volume;
    char message[256];
} racer_t;

static void *race(void *arg)
{
    racer_t *r = arg;
    pthread_barrier_wait(r->go);
    Onceiot__Sims__V1__Quota *q = NULL;
    rpc_status_t s;
    r->rc = top_up(&r->c, r->iccid, 250, "same-retry", &q, &s);
    if (r->rc == 0)
        r->volume = q->volume;
    else
        snprintf(r->message, sizeof(r->message), "%s", s.message);
    return NULL;
}

/* Eight copies of one request at the same moment: the first claim wins, the
 * others wait on its row lock and then answer its answer. */
Test(request_ids, concurrent_retries_apply_once)
{
    const char *iccid = "8988303000000001003";
    create_sim(iccid, 1000, 0);
    racer_t r[RACERS];
    pthread_t t[RACERS];
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, RACERS);
    for (int i = 0; i < RACERS; i++) {
        memset(&r[i], 0, sizeof(r[i]));
        gwc_open(&r[i].c, st.gateway.addr);
        r[i].iccid = iccid;
        r[i].go = &go;
    }
    for (int i = 0; i < RACERS; i++)
        pthread_create(&t[i], NULL, race, &r[i]);
    for (int i = 0; i < RACERS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&go);
    for (int i = 0; i < RACERS; i++) {
        cr_expect_eq(r[i].rc, 0, "racer %d: %s", i, r[i].message);
        cr_expect_eq(r[i].volume, 1250, "racer %d saw %lld", i, (long long)r[i].volume);
        gwc_close(&r[i].c);
    }
    cr_assert_eq(data_volume(iccid), 1250, "applied once");
    cr_assert_eq(quota_added_events(iccid), 1);
}

static Onceiot__Identity__V1__CreateApiKeyResponse *
create_key(const char *auth, const char *request_id, const char *name, rpc_status_t *s)
{
    const char *scopes[] = {"sims:read"};
    Onceiot__Identity__V1__CreateApiKeyRequest req =
        ONCEIOT__IDENTITY__V1__CREATE_API_KEY_REQUEST__INIT;
    req.name = (char *)name;
    req.scopes = (char **)scopes;
    req.n_scopes = 1;
    req.request_id = (char *)request_id;
    Onceiot__Identity__V1__CreateApiKeyResponse *r = NULL;
    if (gwc_call(&g, auth, IDENTITY "CreateApiKey", &req.base,
                 &onceiot__identity__v1__create_api_key_response__descriptor, &r, s) < 0)
        return NULL;
    return r;
}

Test(request_ids, a_replayed_api_key_is_the_first_key_and_its_secret_is_stored_sealed)
{
    rpc_status_t s;
    Onceiot__Identity__V1__CreateApiKeyResponse *a = create_key(root, "key-1", "ci", &s);
    cr_assert_not_null(a, "%s", s.message);
    Onceiot__Identity__V1__CreateApiKeyResponse *b = create_key(root, "key-1", "ci", &s);
    cr_assert_not_null(b, "%s", s.message);
    cr_assert_eq(b->api_key->id, a->api_key->id);
    cr_assert_str_eq(b->secret, a->secret, "the first secret, shown again to its creator");
    cr_assert_eq(count_of("SELECT count(*) FROM identity.api_keys WHERE name = $1", "ci"), 1);
    /* The answer is kept, but not readable in the database. */
    cr_assert_eq(count_of("SELECT count(*) FROM identity.request_ids", NULL), 1);
    cr_assert_eq(count_of("SELECT count(*) FROM identity.request_ids WHERE "
                          "position(convert_to($1, 'UTF8') IN response) > 0 OR "
                          "position(convert_to(substr($1, 1, 16), 'UTF8') IN response) > 0",
                          a->secret),
                 0);
    /* Sealed to its row: moved to another caller who sends the very same
     * request, it is unreadable, never that caller's answer. */
    int64_t dave = gwc_create_user(&g, root, "dave", ADMIN, 2);
    const char *tok = gwc_login(&g, "dave", SH_PASSWORD);
    char *caller = mem_printf("user:%lld", (long long)dave);
    const char *params[] = {caller};
    PQclear(pgh_sqlf("UPDATE identity.request_ids SET caller = $1 WHERE request_id = 'key-1'", 1,
                     params));
    mem_free(caller);
    cr_assert_null(create_key(tok, "key-1", "ci", &s));
    cr_assert_eq(s.code, GRPC_STATUS_INTERNAL, "%s %s", err_grpc_name(s.code), s.message);
    cr_assert(ph_log_contains(&st.identity, "request_id_unreadable"));
}

Test(request_ids, ids_are_per_caller)
{
    gwc_create_user(&g, root, "alice", ADMIN, 2);
    gwc_create_user(&g, root, "bob", ADMIN, 2);
    const char *alice = gwc_login(&g, "alice", SH_PASSWORD);
    const char *bob = gwc_login(&g, "bob", SH_PASSWORD);
    rpc_status_t s;
    Onceiot__Identity__V1__CreateApiKeyResponse *a = create_key(alice, "deploy-7", "k", &s);
    cr_assert_not_null(a, "%s", s.message);
    Onceiot__Identity__V1__CreateApiKeyResponse *b = create_key(bob, "deploy-7", "k", &s);
    cr_assert_not_null(b, "bob's id is his own: %s", s.message);
    cr_assert_neq(a->api_key->id, b->api_key->id);
    cr_assert_str_neq(a->secret, b->secret);
}

Test(request_ids, create_user_import_and_send_sms_replay_their_first_answer)
{
    /* CreateUser. */
    Onceiot__Identity__V1__CreateUserRequest u = ONCEIOT__IDENTITY__V1__CREATE_USER_REQUEST__INIT;
    u.username = "carol";
    u.email = "carol@example.com";
    u.password = SH_PASSWORD;
    u.full_name = "Carol";
    u.role = ADMIN;
    u.organization_id = 3;
    u.request_id = "new-user-carol";
    Onceiot__Identity__V1__User *u1 = NULL, *u2 = NULL;
    rpc_status_t s;
    cr_assert_eq(gwc_call(&g, root, IDENTITY "CreateUser", &u.base,
                          &onceiot__identity__v1__user__descriptor, &u1, &s),
                 0, "%s", s.message);
    cr_assert_eq(gwc_call(&g, root, IDENTITY "CreateUser", &u.base,
                          &onceiot__identity__v1__user__descriptor, &u2, &s),
                 0, "the retry is not ALREADY_EXISTS: %s", s.message);
    cr_assert_eq(u2->id, u1->id);

    /* ImportSims. */
    Onceiot__Sims__V1__SimInput in[2] = {ONCEIOT__SIMS__V1__SIM_INPUT__INIT,
                                         ONCEIOT__SIMS__V1__SIM_INPUT__INIT};
    in[0].iccid = "8988303000000001010";
    in[1].iccid = "8988303000000001011";
    in[0].sms_volume = in[1].sms_volume = 10;
    Onceiot__Sims__V1__SimInput *items[] = {&in[0], &in[1]};
    Onceiot__Sims__V1__ImportSimsRequest im = ONCEIOT__SIMS__V1__IMPORT_SIMS_REQUEST__INIT;
    im.sims = items;
    im.n_sims = 2;
    im.request_id = "import-2026-12-02";
    for (int i = 0; i < 2; i++) {
        Onceiot__Sims__V1__ImportSimsResponse *r = NULL;
        cr_assert_eq(gwc_call(&g, root, SIMS "ImportSims", &im.base,
                              &onceiot__sims__v1__import_sims_response__descriptor, &r, &s),
                     0, "attempt %d: %s", i, s.message);
        cr_assert_eq(r->imported, 2);
    }
    cr_assert_eq(count_of("SELECT count(*) FROM sims.sim_events WHERE event_type = 'sim_created' "
                          "AND iccid LIKE $1",
                          "898830300000000101%"),
                 2);

    /* SendSms: one SMS, one unit of quota. */
    Onceiot__Sims__V1__SimActionRequest act = ONCEIOT__SIMS__V1__SIM_ACTION_REQUEST__INIT;
    act.iccid = in[0].iccid;
    Onceiot__Sims__V1__Sim *sim = NULL;
    cr_assert_eq(gwc_call(&g, root, SIMS "ActivateSim", &act.base,
                          &onceiot__sims__v1__sim__descriptor, &sim, &s),
                 0, "%s", s.message);
    Onceiot__Sims__V1__SendSmsRequest sms = ONCEIOT__SIMS__V1__SEND_SMS_REQUEST__INIT;
    sms.iccid = in[0].iccid;
    sms.text = "reboot";
    sms.request_id = "sms-reboot-1";
    Onceiot__Sims__V1__Sms *m1 = NULL, *m2 = NULL;
    cr_assert_eq(
        gwc_call(&g, root, SIMS "SendSms", &sms.base, &onceiot__sims__v1__sms__descriptor, &m1, &s),
        0, "%s", s.message);
    cr_assert_eq(
        gwc_call(&g, root, SIMS "SendSms", &sms.base, &onceiot__sims__v1__sms__descriptor, &m2, &s),
        0, "%s", s.message);
    cr_assert_eq(m2->id, m1->id);
    cr_assert_eq(count_of("SELECT count(*) FROM sims.sim_sms WHERE iccid = $1", in[0].iccid), 1);
    cr_assert_eq(count_of("SELECT used_volume FROM sims.sim_quotas q JOIN sims.sims s "
                          "ON s.id = q.sim_id WHERE s.iccid = $1 AND q.quota_type = 'sms'",
                          in[0].iccid),
                 1);
}

static bool wait_until_zero(const char *sql, const char *param, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 100) {
        if (count_of(sql, param) == 0)
            return true;
        usleep(100 * 1000);
    }
    return false;
}

/* The runtime's upkeep (every second here) deletes request ids past 24
 * hours and, in identity, backoff rows of usernames nobody has; a real
 * user's recent streak and fresh rows stay. */
static void setup_upkeep(void)
{
    const char *env[] = {"ONCEIOT_UPKEEP_INTERVAL_S=1", NULL};
    start(env);
}

TestSuite(request_ids_upkeep, .init = setup_upkeep, .fini = teardown, .timeout = 240);

Test(request_ids_upkeep, expired_ids_and_stale_login_failures_are_pruned)
{
    PQclear(pgh_sql("INSERT INTO identity.request_ids (caller, method, request_id, request_hash, "
                    "response, created_at) VALUES "
                    "('user:1', '/m', 'old', '\\x00', '\\x00', now() - interval '25 hours'), "
                    "('user:1', '/m', 'new', '\\x00', '\\x00', now() - interval '23 hours')"));
    PQclear(pgh_sql("INSERT INTO identity.login_failures (username, client_address, failures, "
                    "updated_at) VALUES "
                    "('nobody-old', '10.0.0.1', 2, now() - interval '2 hours'), "
                    "('nobody-new', '10.0.0.1', 2, now()), "
                    "('admin', '10.0.0.1', 2, now() - interval '2 hours')"));
    cr_assert(wait_until_zero("SELECT count(*) FROM identity.request_ids WHERE request_id = $1",
                              "old", 10000),
              "the expired id is pruned");
    cr_assert(wait_until_zero("SELECT count(*) FROM identity.login_failures WHERE username = $1",
                              "nobody-old", 10000),
              "the unknown username's stale row is pruned");
    cr_assert_eq(count_of("SELECT count(*) FROM identity.request_ids WHERE request_id = $1", "new"),
                 1);
    cr_assert_eq(
        count_of("SELECT count(*) FROM identity.login_failures WHERE username = $1", "nobody-new"),
        1);
    cr_assert_eq(
        count_of("SELECT count(*) FROM identity.login_failures WHERE username = $1", "admin"), 1);
}
