/* The sims service through the gateway: real identity, sims and gateway
 * processes on the test PostgreSQL. Every sims call goes through the gateway
 * with a credential identity issued (API keys with chosen scopes, or a login
 * token), so these tests cover the route, the gateway's checks of each
 * method's declared scope and role, and the principal reaching sims. */
#include "identity/v1/identity.pb-c.h"
#include "onceiot/client.h"
#include "sims/v1/sims.pb-c.h"
#include "stack_harness.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define SIMS     "/onceiot.sims.v1.SimService/"
#define IDENTITY "/onceiot.identity.v1.IdentityService/"
#define SIM_D    (&onceiot__sims__v1__sim__descriptor)
#define QUOTA_D  (&onceiot__sims__v1__quota__descriptor)
#define SMS_D    (&onceiot__sims__v1__sms__descriptor)
#define LIST_D   (&onceiot__sims__v1__list_sims_response__descriptor)
#define EVENTS_D (&onceiot__sims__v1__list_events_response__descriptor)

typedef Onceiot__Sims__V1__SimStatus status_t;
#define ENABLED    ONCEIOT__SIMS__V1__SIM_STATUS__SIM_STATUS_ENABLED
#define DISABLED   ONCEIOT__SIMS__V1__SIM_STATUS__SIM_STATUS_DISABLED
#define SUSPENDED  ONCEIOT__SIMS__V1__SIM_STATUS__SIM_STATUS_SUSPENDED
#define TERMINATED ONCEIOT__SIMS__V1__SIM_STATUS__SIM_STATUS_TERMINATED
#define DATA       ONCEIOT__SIMS__V1__QUOTA_TYPE__QUOTA_TYPE_DATA

/* A caller: "Bearer <secret>" and, for an API key, the triggered_by that sims
 * records for it. */
typedef struct caller {
    const char *auth;
    const char *actor;
    int64_t org;
} caller_t;

static sh_stack_t st;
static rpc_channel_t *gw;
/* Freed only after the channel: core keeps metadata values without copying
 * them, and the channel's header compressor may look at them later. */
static arena_t *arena;
static char bearer[256];

/* The callers every test has: an admin and a user in organization 1, an
 * admin in organization 2, a readonly user in organization 1 (whose key has
 * sims:read), and a user in organization 1 whose key lacks sims:write. */
static caller_t admin1, user1, admin2, reader1, readonly_scope1;

static rpc_call_opts_t opts_for(const char *auth)
{
    rpc_md_t *md = arena_calloc(arena, 1, sizeof(*md));
    size_t n = 0;
    if (auth)
        md[n++] = (rpc_md_t){"authorization", auth, 0};
    return (rpc_call_opts_t){.timeout_ms = 20000, .metadata = md, .n_metadata = n};
}

static int64_t create_user(const char *name, Onceiot__Common__V1__Role role, int64_t org)
{
    Onceiot__Identity__V1__CreateUserRequest req = ONCEIOT__IDENTITY__V1__CREATE_USER_REQUEST__INIT;
    req.username = (char *)name;
    req.email = arena_printf(arena, "%s@example.com", name);
    req.password = SH_PASSWORD;
    req.full_name = "Sims Tester";
    req.role = role;
    req.organization_id = org;
    rpc_call_opts_t o = opts_for(bearer);
    ProtobufCMessage *resp = NULL;
    rpc_status_t s;
    int rc = rpc_unary(gw, IDENTITY "CreateUser", &req.base,
                       &onceiot__identity__v1__user__descriptor, arena, &o, &resp, &s);
    cr_assert_eq(rc, 0, "CreateUser %s: %s %s", name, err_grpc_name(s.code), s.message);
    return ((Onceiot__Identity__V1__User *)resp)->id;
}

/* A user with an API key holding scopes (as the bootstrap superuser). */
static caller_t user_with_key(const char *name, Onceiot__Common__V1__Role role, int64_t org,
                              const char *const *scopes, size_t n_scopes)
{
    Onceiot__Identity__V1__CreateApiKeyRequest req =
        ONCEIOT__IDENTITY__V1__CREATE_API_KEY_REQUEST__INIT;
    req.name = "sims-gateway-test";
    req.scopes = (char **)scopes;
    req.n_scopes = n_scopes;
    req.user_id = create_user(name, role, org);
    rpc_call_opts_t o = opts_for(bearer);
    ProtobufCMessage *resp = NULL;
    rpc_status_t s;
    int rc = rpc_unary(gw, IDENTITY "CreateApiKey", &req.base,
                       &onceiot__identity__v1__create_api_key_response__descriptor, arena, &o,
                       &resp, &s);
    cr_assert_eq(rc, 0, "CreateApiKey: %s %s", err_grpc_name(s.code), s.message);
    const Onceiot__Identity__V1__CreateApiKeyResponse *r = (const void *)resp;
    return (caller_t){arena_printf(arena, "Bearer %s", r->secret),
                      arena_printf(arena, "api_key:%lld", (long long)r->api_key->id), org};
}

static void setup(void)
{
    sh_start_with_sims(&st, NULL, NULL);
    cr_assert(rpc_channel_new(st.gateway.addr, 4 << 20, &gw) == 0);
    arena = arena_new();
    snprintf(bearer, sizeof(bearer), "Bearer %s", st.admin_key);
    static const char *const both[] = {"sims:read", "sims:write"};
    admin1 = user_with_key("admin1", ONCEIOT__COMMON__V1__ROLE__ROLE_ADMIN, 1, both, 2);
    user1 = user_with_key("user1", ONCEIOT__COMMON__V1__ROLE__ROLE_USER, 1, both, 2);
    admin2 = user_with_key("admin2", ONCEIOT__COMMON__V1__ROLE__ROLE_ADMIN, 2, both, 2);
    /* A readonly user's key can carry read scopes only (identity refuses
     * more); its writes are refused by the gateway all the same. */
    reader1 = user_with_key("reader1", ONCEIOT__COMMON__V1__ROLE__ROLE_READONLY, 1, both, 1);
    readonly_scope1 = user_with_key("scoped1", ONCEIOT__COMMON__V1__ROLE__ROLE_USER, 1, both, 1);
}

static void teardown(void)
{
    rpc_channel_free(gw);
    arena_free(arena);
    sh_stop(&st);
}

TestSuite(sims_gateway, .init = setup, .fini = teardown, .timeout = 240);

/* Calls SimService/<method> through the gateway as who; returns like rpc_unary. */
static int call_in(arena_t *a, const caller_t *who, const char *method, const ProtobufCMessage *req,
                   const ProtobufCMessageDescriptor *resp_desc, void *resp, rpc_status_t *s)
{
    rpc_md_t *md = arena_calloc(a, 1, sizeof(*md));
    md[0] = (rpc_md_t){"authorization", who->auth, 0};
    rpc_call_opts_t o = {.timeout_ms = 20000, .metadata = md, .n_metadata = 1};
    ProtobufCMessage *out = NULL;
    int rc = rpc_unary(gw, arena_printf(a, SIMS "%s", method), req, resp_desc, a, &o, &out, s);
    if (resp)
        *(ProtobufCMessage **)resp = out;
    return rc;
}

static int call(const caller_t *who, const char *method, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *resp_desc, void *resp, rpc_status_t *s)
{
    return call_in(arena, who, method, req, resp_desc, resp, s);
}

static const char *iccid_of(long long n)
{
    return arena_printf(arena, "8988%015lld", n);
}

/* Registers a SIM for who's organization, as the operator's staff do (the
 * bootstrap superuser: tenants may not register SIMs). */
static Onceiot__Sims__V1__Sim *create_sim(const caller_t *who, const char *iccid, const char *label,
                                          const char *tag)
{
    Onceiot__Sims__V1__SimInput in = ONCEIOT__SIMS__V1__SIM_INPUT__INIT;
    in.iccid = (char *)iccid;
    in.organization_id = who->org;
    in.label = (char *)label;
    char *tags[] = {(char *)tag};
    in.tags = tags;
    in.n_tags = tag ? 1 : 0;
    in.data_volume = 1000000;
    in.sms_volume = 10;
    Onceiot__Sims__V1__CreateSimRequest req = ONCEIOT__SIMS__V1__CREATE_SIM_REQUEST__INIT;
    req.sim = &in;
    Onceiot__Sims__V1__Sim *s;
    rpc_status_t stt;
    caller_t staff = {bearer, NULL, 0};
    cr_assert_eq(call(&staff, "CreateSim", &req.base, SIM_D, &s, &stt), 0, "CreateSim %s: %s %s",
                 iccid, err_grpc_name(stt.code), stt.message);
    return s;
}

static int act(const caller_t *who, const char *method, const char *iccid,
               Onceiot__Sims__V1__Sim **out, rpc_status_t *s)
{
    Onceiot__Sims__V1__SimActionRequest req = ONCEIOT__SIMS__V1__SIM_ACTION_REQUEST__INIT;
    req.iccid = (char *)iccid;
    return call(who, method, &req.base, SIM_D, out, s);
}

static int get_sim(const caller_t *who, const char *iccid, Onceiot__Sims__V1__Sim **out,
                   rpc_status_t *s)
{
    Onceiot__Sims__V1__GetSimRequest req = ONCEIOT__SIMS__V1__GET_SIM_REQUEST__INIT;
    req.iccid = (char *)iccid;
    return call(who, "GetSim", &req.base, SIM_D, out, s);
}

static int top_up_in(arena_t *a, const caller_t *who, const char *iccid, int64_t volume,
                     Onceiot__Sims__V1__Quota **out, rpc_status_t *s)
{
    Onceiot__Sims__V1__TopUpQuotaRequest req = ONCEIOT__SIMS__V1__TOP_UP_QUOTA_REQUEST__INIT;
    req.iccid = (char *)iccid;
    req.quota_type = DATA;
    req.volume = volume;
    return call_in(a, who, "TopUpQuota", &req.base, QUOTA_D, out, s);
}

static int send_sms(const caller_t *who, const char *iccid, const char *text,
                    Onceiot__Sims__V1__Sms **out, rpc_status_t *s)
{
    Onceiot__Sims__V1__SendSmsRequest req = ONCEIOT__SIMS__V1__SEND_SMS_REQUEST__INIT;
    req.iccid = (char *)iccid;
    req.text = (char *)text;
    return call(who, "SendSms", &req.base, SMS_D, out, s);
}

static int get_sms(const caller_t *who, const char *iccid, int64_t id, Onceiot__Sims__V1__Sms **out,
                   rpc_status_t *s)
{
    Onceiot__Sims__V1__GetSmsRequest req = ONCEIOT__SIMS__V1__GET_SMS_REQUEST__INIT;
    req.iccid = (char *)iccid;
    req.id = id;
    return call(who, "GetSms", &req.base, SMS_D, out, s);
}

static Onceiot__Sims__V1__ListEventsResponse *events(const caller_t *who, const char *iccid,
                                                     const char *category)
{
    Onceiot__Sims__V1__ListEventsRequest req = ONCEIOT__SIMS__V1__LIST_EVENTS_REQUEST__INIT;
    req.iccid = (char *)iccid;
    req.event_category = (char *)category;
    Onceiot__Sims__V1__ListEventsResponse *r;
    rpc_status_t s;
    cr_assert_eq(call(who, "ListEvents", &req.base, EVENTS_D, &r, &s), 0, "ListEvents: %s",
                 s.message);
    return r;
}

static int update_label(const caller_t *who, const char *iccid, const char *label,
                        Onceiot__Sims__V1__Sim **out, rpc_status_t *s)
{
    Onceiot__Sims__V1__SimChanges ch = ONCEIOT__SIMS__V1__SIM_CHANGES__INIT;
    ch.label = (char *)label;
    ch.imei = "356938035643809"; /* not in the mask: must stay unchanged */
    char *tags[] = {"moved", "blue"};
    ch.tags = tags;
    ch.n_tags = 2;
    char *paths[] = {"label", "tags"};
    Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    mask.paths = paths;
    mask.n_paths = 2;
    Onceiot__Sims__V1__UpdateSimRequest req = ONCEIOT__SIMS__V1__UPDATE_SIM_REQUEST__INIT;
    req.iccid = (char *)iccid;
    req.changes = &ch;
    req.update_mask = &mask;
    return call(who, "UpdateSim", &req.base, SIM_D, out, s);
}

/* ---- registry ---- */

Test(sims_gateway, create_get_list_and_update_work_with_api_keys)
{
    for (int i = 0; i < 5; i++)
        create_sim(&admin1, iccid_of(100 + i), arena_printf(arena, "pump-%d", i), "field");
    create_sim(&admin1, iccid_of(200), "gateway box", NULL);

    Onceiot__Sims__V1__Sim *s;
    rpc_status_t stt;
    cr_assert_eq(get_sim(&user1, iccid_of(102), &s, &stt), 0, "%s", stt.message);
    cr_assert_str_eq(s->iccid, iccid_of(102));
    cr_assert_str_eq(s->label, "pump-2");
    cr_assert_eq(s->status, DISABLED);
    cr_assert_eq(s->organization_id, 1, "the admin's organization");
    cr_assert_not_null(s->data_quota, "the quota summary comes with the SIM");
    cr_assert_eq(s->data_quota->volume, 1000000);
    cr_assert_eq(s->data_quota->remaining_volume, 1000000);
    cr_assert_not_null(s->sms_quota);
    cr_assert_eq(s->sms_quota->volume, 10);

    /* A filtered list in pages of 2: 3 pages, every pump once, in ICCID order. */
    Onceiot__Sims__V1__ListSimsRequest req = ONCEIOT__SIMS__V1__LIST_SIMS_REQUEST__INIT;
    req.page_size = 2;
    req.label_contains = "pump";
    int seen = 0, pages = 0;
    do {
        Onceiot__Sims__V1__ListSimsResponse *r;
        cr_assert_eq(call(&reader1, "ListSims", &req.base, LIST_D, &r, &stt), 0, "%s", stt.message);
        pages++;
        cr_assert_leq(r->n_sims, 2);
        for (size_t i = 0; i < r->n_sims; i++, seen++)
            cr_assert_str_eq(r->sims[i]->iccid, iccid_of(100 + seen));
        req.page_token = r->next_page_token;
    } while (req.page_token && req.page_token[0] && pages < 10);
    cr_assert_eq(seen, 5, "the label filter keeps the pumps only");
    cr_assert_eq(pages, 3);

    cr_assert_eq(update_label(&user1, iccid_of(100), "pump-moved", &s, &stt), 0, "%s", stt.message);
    cr_assert_str_eq(s->label, "pump-moved");
    cr_assert_eq(s->n_tags, 2);
    cr_assert_eq(get_sim(&user1, iccid_of(100), &s, &stt), 0);
    cr_assert_str_eq(s->label, "pump-moved");
    cr_assert(!s->imei || !s->imei[0], "imei is not in the mask: %s", s->imei);
    cr_assert_str_eq(s->tags[0], "moved");
    cr_assert_str_eq(s->tags[1], "blue");
}

Test(sims_gateway, a_bad_iccid_is_invalid_argument_with_its_field_violation_intact)
{
    Onceiot__Sims__V1__Sim *s;
    rpc_status_t stt;
    cr_assert_eq(get_sim(&user1, "89880000000000000a1", &s, &stt), ERR_INVALID_ARGUMENT);
    const char **fields, **descs;
    size_t n = rpc_status_violations(&stt, arena, &fields, &descs);
    cr_assert_geq(n, 1, "the BadRequest details survive the gateway: %s", stt.message);
    cr_assert_str_eq(fields[0], "iccid");
    cr_assert(descs[0] && descs[0][0], "the violation says what is wrong");
}

Test(sims_gateway, a_login_token_works_for_get_sim)
{
    create_sim(&admin1, iccid_of(300), "via token", NULL);
    Onceiot__Identity__V1__LoginRequest req = ONCEIOT__IDENTITY__V1__LOGIN_REQUEST__INIT;
    req.username = "user1";
    req.password = SH_PASSWORD;
    rpc_call_opts_t o = opts_for(NULL);
    ProtobufCMessage *resp;
    rpc_status_t stt;
    cr_assert_eq(rpc_unary(gw, IDENTITY "Login", &req.base,
                           &onceiot__identity__v1__login_response__descriptor, arena, &o, &resp,
                           &stt),
                 0, "Login: %s", stt.message);
    caller_t token = {
        arena_printf(arena, "Bearer %s", ((Onceiot__Identity__V1__LoginResponse *)resp)->token),
        NULL, 1};
    Onceiot__Sims__V1__Sim *s;
    cr_assert_eq(get_sim(&token, iccid_of(300), &s, &stt), 0, "%s", stt.message);
    cr_assert_str_eq(s->label, "via token");
}

/* ---- lifecycle, quota, SMS, events ---- */

Test(sims_gateway, lifecycle_actions_write_events_naming_the_api_key)
{
    const char *iccid = iccid_of(400);
    create_sim(&admin1, iccid, NULL, NULL);
    static const struct {
        const char *method;
        status_t to;
        const char *event;
    } steps[] = {{"ActivateSim", ENABLED, "sim_activated"},
                 {"SuspendSim", SUSPENDED, "sim_suspended"},
                 {"ResumeSim", ENABLED, "sim_resumed"},
                 {"TerminateSim", TERMINATED, "sim_terminated"}};
    Onceiot__Sims__V1__Sim *s;
    rpc_status_t stt;
    for (size_t i = 0; i < 4; i++) {
        cr_assert_eq(act(&user1, steps[i].method, iccid, &s, &stt), 0, "%s: %s", steps[i].method,
                     stt.message);
        cr_assert_eq(s->status, steps[i].to, "%s", steps[i].method);
    }
    cr_assert_not_null(s->termination_date);
    /* Terminated is final: each action is refused and writes nothing. */
    cr_assert_eq(act(&user1, "ResumeSim", iccid, &s, &stt), ERR_FAILED_PRECONDITION);
    cr_assert(strstr(stt.message, "Terminated"), "names the status: %s", stt.message);
    cr_assert_eq(act(&user1, "ActivateSim", iccid, &s, &stt), ERR_FAILED_PRECONDITION);

    Onceiot__Sims__V1__ListEventsResponse *ev = events(&reader1, iccid, "status");
    cr_assert_eq(ev->n_events, 4, "one event per valid action");
    for (size_t i = 0; i < 4; i++) {
        const Onceiot__Sims__V1__SimEvent *e = ev->events[3 - i]; /* newest first */
        cr_assert_str_eq(e->event_type, steps[i].event);
        cr_assert_str_eq(e->triggered_by, user1.actor);
        cr_assert_eq(e->organization_id, 1);
    }
}

Test(sims_gateway, quota_top_up_and_sms_round_trip)
{
    const char *iccid = iccid_of(500);
    create_sim(&admin1, iccid, NULL, NULL);
    Onceiot__Sims__V1__Quota *q;
    rpc_status_t stt;
    cr_assert_eq(top_up_in(arena, &user1, iccid, 500000, &q, &stt), 0, "%s", stt.message);
    cr_assert_eq(q->volume, 1500000);
    cr_assert_eq(q->last_volume_added, 500000);
    Onceiot__Sims__V1__GetQuotaRequest gq = ONCEIOT__SIMS__V1__GET_QUOTA_REQUEST__INIT;
    gq.iccid = (char *)iccid;
    gq.quota_type = DATA;
    cr_assert_eq(call(&reader1, "GetQuota", &gq.base, QUOTA_D, &q, &stt), 0, "%s", stt.message);
    cr_assert_eq(q->volume, 1500000);
    cr_assert_eq(q->remaining_volume, 1500000);
    cr_assert_eq(q->quota_type, DATA);
    Onceiot__Sims__V1__ListEventsResponse *ev = events(&user1, iccid, "quota");
    cr_assert_geq(ev->n_events, 1);
    cr_assert_str_eq(ev->events[0]->event_type, "quota_added");
    cr_assert_str_eq(ev->events[0]->triggered_by, user1.actor);

    Onceiot__Sims__V1__Sms *m;
    Onceiot__Sims__V1__Sim *s;
    cr_assert_eq(act(&user1, "ActivateSim", iccid, &s, &stt), 0, "%s", stt.message);
    cr_assert_eq(send_sms(&user1, iccid, "hello device", &m, &stt), 0, "%s", stt.message);
    cr_assert_gt(m->id, 0);
    cr_assert_eq(m->status, ONCEIOT__SIMS__V1__SMS_STATUS__SMS_STATUS_PENDING);
    int64_t id = m->id;
    cr_assert_eq(get_sms(&reader1, iccid, id, &m, &stt), 0, "%s", stt.message);
    cr_assert_eq(m->id, id);
    cr_assert_str_eq(m->text, "hello device");
    cr_assert_eq(m->direction, ONCEIOT__SIMS__V1__SMS_DIRECTION__SMS_DIRECTION_MT);
    cr_assert_eq(m->encoding, ONCEIOT__SIMS__V1__SMS_ENCODING__SMS_ENCODING_GSM7);
    cr_assert_eq(m->segments, 1);
}

/* The event written before the stream opened (sim_created) is not sent: the
 * watcher sees what is committed once its subscription is in effect, which
 * the response headers announce. */
Test(sims_gateway, a_watcher_sees_an_event_written_by_another_caller)
{
    const char *iccid = iccid_of(600);
    create_sim(&admin1, iccid, NULL, NULL);
    Onceiot__Sims__V1__WatchEventsRequest req = ONCEIOT__SIMS__V1__WATCH_EVENTS_REQUEST__INIT;
    req.iccid = (char *)iccid;
    rpc_call_opts_t o = opts_for(reader1.auth);
    rpc_stream_t *s;
    cr_assert_eq(rpc_stream_open(gw, SIMS "WatchEvents", arena, &o, &s), 0);
    cr_assert_eq(rpc_stream_send(s, &req.base), 0);
    cr_assert_eq(rpc_stream_close_send(s), 0);
    cr_assert_eq(rpc_stream_headers(s), 0, "the subscription took effect");
    rpc_status_t stt;
    cr_assert_eq(top_up_in(arena, &admin1, iccid, 1, NULL, &stt), 0, "%s", stt.message);
    ProtobufCMessage *m;
    cr_assert_eq(rpc_stream_recv(s, &onceiot__sims__v1__sim_event__descriptor, &m), 1,
                 "the watcher got an event through the gateway");
    const Onceiot__Sims__V1__SimEvent *e = (const void *)m;
    cr_assert_str_eq(e->iccid, iccid);
    cr_assert_str_eq(e->event_type, "quota_added", "not the sim_created from before the watch");
    cr_assert_str_eq(e->triggered_by, admin1.actor, "written by the other caller");
    cr_assert_eq(e->organization_id, 1);
    rpc_stream_cancel(s);
    rpc_stream_finish(s, &stt);
    cr_assert_eq(stt.code, GRPC_STATUS_CANCELLED);
}

/* ---- tenancy and access ---- */

Test(sims_gateway, another_organization_gets_not_found_for_every_call_on_the_sim)
{
    const char *iccid = iccid_of(700);
    create_sim(&admin1, iccid, "org one's", NULL);
    Onceiot__Sims__V1__Sms *m;
    Onceiot__Sims__V1__Sim *s;
    rpc_status_t stt;
    cr_assert_eq(act(&user1, "ActivateSim", iccid, &s, &stt), 0, "%s", stt.message);
    cr_assert_eq(send_sms(&user1, iccid, "mine", &m, &stt), 0, "%s", stt.message);
    int64_t sms_id = m->id;

    cr_assert_eq(get_sim(&admin2, iccid, &s, &stt), ERR_NOT_FOUND, "GetSim");
    cr_assert_eq(update_label(&admin2, iccid, "stolen", &s, &stt), ERR_NOT_FOUND, "UpdateSim");
    static const char *const actions[] = {"ActivateSim", "SuspendSim", "ResumeSim", "TerminateSim"};
    for (size_t i = 0; i < 4; i++)
        cr_assert_eq(act(&admin2, actions[i], iccid, &s, &stt), ERR_NOT_FOUND, "%s", actions[i]);
    Onceiot__Sims__V1__GetQuotaRequest gq = ONCEIOT__SIMS__V1__GET_QUOTA_REQUEST__INIT;
    gq.iccid = (char *)iccid;
    gq.quota_type = DATA;
    Onceiot__Sims__V1__Quota *q;
    cr_assert_eq(call(&admin2, "GetQuota", &gq.base, QUOTA_D, &q, &stt), ERR_NOT_FOUND, "GetQuota");
    cr_assert_eq(top_up_in(arena, &admin2, iccid, 5, &q, &stt), ERR_NOT_FOUND, "TopUpQuota");
    cr_assert_eq(send_sms(&admin2, iccid, "hi", &m, &stt), ERR_NOT_FOUND, "SendSms");
    cr_assert_eq(get_sms(&admin2, iccid, sms_id, &m, &stt), ERR_NOT_FOUND, "GetSms");
    Onceiot__Sims__V1__ListEventsRequest le = ONCEIOT__SIMS__V1__LIST_EVENTS_REQUEST__INIT;
    le.iccid = (char *)iccid;
    Onceiot__Sims__V1__ListEventsResponse *evs;
    cr_assert_eq(call(&admin2, "ListEvents", &le.base, EVENTS_D, &evs, &stt), ERR_NOT_FOUND,
                 "ListEvents");

    Onceiot__Sims__V1__ListSimsRequest req = ONCEIOT__SIMS__V1__LIST_SIMS_REQUEST__INIT;
    Onceiot__Sims__V1__ListSimsResponse *r;
    cr_assert_eq(call(&admin2, "ListSims", &req.base, LIST_D, &r, &stt), 0, "%s", stt.message);
    cr_assert_eq(r->n_sims, 0, "organization 2 has no SIMs");

    /* Nothing changed for the owner. */
    cr_assert_eq(get_sim(&user1, iccid, &s, &stt), 0);
    cr_assert_str_eq(s->label, "org one's");
    cr_assert_eq(s->status, ENABLED);
    cr_assert_eq(s->data_quota->volume, 1000000);
}

Test(sims_gateway, the_gateway_enforces_each_methods_role_and_scope)
{
    const char *iccid = iccid_of(800);
    create_sim(&admin1, iccid, NULL, NULL);
    Onceiot__Sims__V1__Sim *s;
    rpc_status_t stt;
    /* Both may read. */
    cr_assert_eq(get_sim(&reader1, iccid, &s, &stt), 0, "%s", stt.message);
    cr_assert_eq(get_sim(&readonly_scope1, iccid, &s, &stt), 0, "%s", stt.message);

    /* A readonly user's key, even with sims:write, changes nothing. */
    cr_assert_eq(act(&reader1, "ActivateSim", iccid, &s, &stt), ERR_PERMISSION_DENIED);
    cr_assert_eq(update_label(&reader1, iccid, "x", &s, &stt), ERR_PERMISSION_DENIED);
    Onceiot__Sims__V1__Sms *m;
    cr_assert_eq(send_sms(&reader1, iccid, "x", &m, &stt), ERR_PERMISSION_DENIED);
    /* A user's key without sims:write neither. */
    cr_assert_eq(act(&readonly_scope1, "ActivateSim", iccid, &s, &stt), ERR_PERMISSION_DENIED);
    cr_assert_eq(update_label(&readonly_scope1, iccid, "x", &s, &stt), ERR_PERMISSION_DENIED);
    Onceiot__Sims__V1__Quota *q;
    cr_assert_eq(top_up_in(arena, &readonly_scope1, iccid, 5, &q, &stt), ERR_PERMISSION_DENIED);

    /* Registering SIMs is for the operator's staff: not even a tenant's
     * admin may (admin1 below). */
    Onceiot__Sims__V1__SimInput in = ONCEIOT__SIMS__V1__SIM_INPUT__INIT;
    in.iccid = (char *)iccid_of(801);
    Onceiot__Sims__V1__SimInput *items[] = {&in};
    Onceiot__Sims__V1__ImportSimsRequest imp = ONCEIOT__SIMS__V1__IMPORT_SIMS_REQUEST__INIT;
    imp.sims = items;
    imp.n_sims = 1;
    ProtobufCMessage *resp;
    cr_assert_eq(call(&user1, "ImportSims", &imp.base,
                      &onceiot__sims__v1__import_sims_response__descriptor, &resp, &stt),
                 ERR_PERMISSION_DENIED, "%s", stt.message);
    Onceiot__Sims__V1__CreateSimRequest cr = ONCEIOT__SIMS__V1__CREATE_SIM_REQUEST__INIT;
    cr.sim = &in;
    cr_assert_eq(call(&user1, "CreateSim", &cr.base, SIM_D, &resp, &stt), ERR_PERMISSION_DENIED);
    cr_assert_eq(call(&admin1, "CreateSim", &cr.base, SIM_D, &resp, &stt), ERR_PERMISSION_DENIED);
    cr_assert_eq(call(&admin1, "ImportSims", &imp.base,
                      &onceiot__sims__v1__import_sims_response__descriptor, &resp, &stt),
                 ERR_PERMISSION_DENIED, "%s", stt.message);
    cr_assert_eq(get_sim(&admin1, iccid_of(801), &s, &stt), ERR_NOT_FOUND, "nothing was created");

    cr_assert_eq(get_sim(&user1, iccid, &s, &stt), 0);
    cr_assert_eq(s->status, DISABLED, "no refused call changed the SIM");
    cr_assert(!s->label || !s->label[0]);
    cr_assert_eq(events(&user1, iccid, "status")->n_events, 0);
}

Test(sims_gateway, internal_methods_are_not_reachable_through_the_gateway)
{
    const char *iccid = iccid_of(900);
    create_sim(&admin1, iccid, NULL, NULL);
    caller_t root = {bearer, NULL, 0};
    Onceiot__Sims__V1__SimActionRequest action = ONCEIOT__SIMS__V1__SIM_ACTION_REQUEST__INIT;
    action.iccid = (char *)iccid;
    Onceiot__Sims__V1__UsageItem item = ONCEIOT__SIMS__V1__USAGE_ITEM__INIT;
    item.iccid = (char *)iccid;
    item.data_bytes = 100;
    Onceiot__Sims__V1__UsageItem *items[] = {&item};
    Onceiot__Sims__V1__ApplyUsageRequest usage = ONCEIOT__SIMS__V1__APPLY_USAGE_REQUEST__INIT;
    usage.batch_id = "gw-batch";
    usage.items = items;
    usage.n_items = 1;
    Onceiot__Sims__V1__EventInput ev = ONCEIOT__SIMS__V1__EVENT_INPUT__INIT;
    ev.iccid = (char *)iccid;
    ev.event_type = "attach";
    ev.event_category = "connectivity";
    ev.severity = "info";
    Onceiot__Sims__V1__EventInput *evs[] = {&ev};
    Onceiot__Sims__V1__RecordEventsRequest record = ONCEIOT__SIMS__V1__RECORD_EVENTS_REQUEST__INIT;
    record.events = evs;
    record.n_events = 1;
    Onceiot__Sims__V1__ReceiveSmsRequest mo = ONCEIOT__SIMS__V1__RECEIVE_SMS_REQUEST__INIT;
    mo.iccid = (char *)iccid;
    mo.text = "from the device";
    Onceiot__Sims__V1__UpdateSmsStatusRequest dr =
        ONCEIOT__SIMS__V1__UPDATE_SMS_STATUS_REQUEST__INIT;
    dr.iccid = (char *)iccid;
    dr.id = 1;
    const struct {
        const char *method;
        const ProtobufCMessage *req;
    } internal[] = {{"ExpireSim", &action.base},
                    {"ApplyUsage", &usage.base},
                    {"RecordEvents", &record.base},
                    {"ReceiveSms", &mo.base},
                    {"UpdateSmsStatus", &dr.base}};
    const caller_t *callers[] = {&admin1, &root};
    for (size_t c = 0; c < 2; c++)
        for (size_t i = 0; i < 5; i++) {
            ProtobufCMessage *resp;
            rpc_status_t stt;
            cr_assert_eq(call(callers[c], internal[i].method, internal[i].req, SIM_D, &resp, &stt),
                         ERR_UNIMPLEMENTED, "%s as %s: %s %s", internal[i].method,
                         c ? "the superuser" : "an admin", err_grpc_name(stt.code), stt.message);
        }
    /* None of them reached sims. */
    Onceiot__Sims__V1__Sim *s;
    rpc_status_t stt;
    cr_assert_eq(get_sim(&admin1, iccid, &s, &stt), 0);
    cr_assert_eq(s->status, DISABLED);
    cr_assert_eq(s->data_quota->used_volume, 0);
    cr_assert_eq(events(&admin1, iccid, "connectivity")->n_events, 0);
}
