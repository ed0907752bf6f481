/* The usage service through the gateway, as its users call it: identity,
 * sims, usage and the gateway as real processes; the telemetry pipeline
 * ingests with a superuser API key scoped usage:write (client-streaming
 * through the proxy), customers read with keys scoped usage:read, and a
 * WatchEvents subscriber sees the quota threshold the ingested usage
 * crosses. Covers the route, each method's declared rule and tenancy. */
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "identity/v1/identity.pb-c.h"
#include "onceiot/client.h"
#include "sims/v1/sims.pb-c.h"
#include "stack_harness.h"
#include "usage/v1/usage.pb-c.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define USAGE    "/onceiot.usage.v1.UsageService/"
#define SIMS     "/onceiot.sims.v1.SimService/"
#define IDENTITY "/onceiot.identity.v1.IdentityService/"
#define DAY_US   (86400LL * 1000000)

static sh_stack_t st;
static rpc_channel_t *gw;
/* Freed after the channel (core may look at metadata values later). */
static arena_t *arena;
static arena_t *writer_arena;
/* telemetry: superuser key with usage:write; reader1/2: usage:read +
 * sims:read in organizations 1 and 2; noscope1: sims:read only; writer1: a
 * non-superuser holding usage:write. */
static const char *root, *telemetry, *reader1, *reader2, *noscope1, *writer1;

static int64_t create_user(const char *name, Onceiot__Common__V1__Role role, int64_t org)
{
    Onceiot__Identity__V1__CreateUserRequest req = ONCEIOT__IDENTITY__V1__CREATE_USER_REQUEST__INIT;
    req.username = (char *)name;
    req.email = arena_printf(arena, "%s@example.com", name);
    req.password = SH_PASSWORD;
    req.full_name = "Usage Tester";
    req.role = role;
    req.organization_id = org;
    rpc_md_t md[] = {{"authorization", root, 0}};
    rpc_call_opts_t o = {.timeout_ms = 20000, .metadata = md, .n_metadata = 1};
    ProtobufCMessage *resp = NULL;
    rpc_status_t s;
    cr_assert_eq(rpc_unary(gw, IDENTITY "CreateUser", &req.base,
                           &onceiot__identity__v1__user__descriptor, arena, &o, &resp, &s),
                 0, "CreateUser %s: %s", name, s.message);
    return ((Onceiot__Identity__V1__User *)resp)->id;
}

/* "Bearer <secret>" of a new API key with scopes for user_id (0: root). */
static const char *key_for(int64_t user_id, const char *s1, const char *s2)
{
    Onceiot__Identity__V1__CreateApiKeyRequest req =
        ONCEIOT__IDENTITY__V1__CREATE_API_KEY_REQUEST__INIT;
    char *scopes[] = {(char *)s1, (char *)s2};
    req.name = "usage-gateway-test";
    req.scopes = scopes;
    req.n_scopes = s2 ? 2 : 1;
    req.user_id = user_id;
    rpc_md_t md[] = {{"authorization", root, 0}};
    rpc_call_opts_t o = {.timeout_ms = 20000, .metadata = md, .n_metadata = 1};
    ProtobufCMessage *resp = NULL;
    rpc_status_t s;
    cr_assert_eq(rpc_unary(gw, IDENTITY "CreateApiKey", &req.base,
                           &onceiot__identity__v1__create_api_key_response__descriptor, arena, &o,
                           &resp, &s),
                 0, "CreateApiKey: %s", s.message);
    return arena_printf(arena, "Bearer %s",
                        ((Onceiot__Identity__V1__CreateApiKeyResponse *)resp)->secret);
}

static void setup(void)
{
    sh_start_with_sims(&st, NULL, NULL);
    sh_add_usage(&st, NULL);
    cr_assert(rpc_channel_new(st.gateway.addr, 16 << 20, &gw) == 0);
    arena = arena_new();
    writer_arena = arena_new();
    root = arena_printf(arena, "Bearer %s", st.admin_key);
    telemetry = key_for(0, "usage:write", NULL);
    reader1 = key_for(create_user("reader1", ONCEIOT__COMMON__V1__ROLE__ROLE_READONLY, 1),
                      "usage:read", "sims:read");
    reader2 = key_for(create_user("reader2", ONCEIOT__COMMON__V1__ROLE__ROLE_READONLY, 2),
                      "usage:read", "sims:read");
    noscope1 = key_for(create_user("noscope1", ONCEIOT__COMMON__V1__ROLE__ROLE_USER, 1),
                       "sims:read", NULL);
    writer1 = key_for(create_user("writer1", ONCEIOT__COMMON__V1__ROLE__ROLE_ADMIN, 1),
                      "usage:write", "usage:read");
}

static void teardown(void)
{
    rpc_channel_free(gw);
    arena_free(arena);
    arena_free(writer_arena);
    sh_stop(&st);
}

TestSuite(usage_gateway, .init = setup, .fini = teardown, .timeout = 240);

static int call_in(arena_t *a, const char *auth, const char *path, const ProtobufCMessage *req,
                   const ProtobufCMessageDescriptor *d, void *resp, rpc_status_t *s)
{
    rpc_md_t *md = arena_calloc(a, 1, sizeof(*md));
    md[0] = (rpc_md_t){"authorization", auth, 0};
    rpc_call_opts_t o = {.timeout_ms = 30000, .metadata = md, .n_metadata = auth ? 1 : 0};
    ProtobufCMessage *out = NULL;
    int rc = rpc_unary(gw, path, req, d, a, &o, &out, s);
    if (resp)
        *(ProtobufCMessage **)resp = out;
    return rc;
}

/* A SIM of org made by the superuser, with a data quota of `data` bytes. */
static const char *make_sim(int64_t org, long long n, int64_t data)
{
    const char *iccid = arena_printf(arena, "8988%015lld", n);
    Onceiot__Sims__V1__SimInput in = ONCEIOT__SIMS__V1__SIM_INPUT__INIT;
    in.iccid = (char *)iccid;
    in.data_volume = data;
    in.organization_id = org;
    Onceiot__Sims__V1__CreateSimRequest req = ONCEIOT__SIMS__V1__CREATE_SIM_REQUEST__INIT;
    req.sim = &in;
    rpc_status_t s;
    cr_assert_eq(call_in(arena, root, SIMS "CreateSim", &req.base,
                         &onceiot__sims__v1__sim__descriptor, NULL, &s),
                 0, "CreateSim: %s", s.message);
    return iccid;
}

static Onceiot__Usage__V1__UsageRecord *rec(const char *iccid, int64_t us, int64_t rx)
{
    Onceiot__Usage__V1__UsageRecord *r = arena_alloc(arena, sizeof(*r));
    onceiot__usage__v1__usage_record__init(r);
    r->iccid = (char *)iccid;
    r->timestamp = arena_alloc(arena, sizeof(*r->timestamp));
    google__protobuf__timestamp__init(r->timestamp);
    r->timestamp->seconds = us / 1000000;
    r->volume_rx = rx;
    r->volume_tx = 1;
    r->country = "DE";
    return r;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int ingest_unary(const char *auth, const char *id, Onceiot__Usage__V1__UsageRecord **recs,
                        size_t n, rpc_status_t *s)
{
    Onceiot__Usage__V1__IngestUsageBatchRequest req =
        ONCEIOT__USAGE__V1__INGEST_USAGE_BATCH_REQUEST__INIT;
    req.batch_id = (char *)id;
    req.records = recs;
    req.n_records = n;
    return call_in(arena, auth, USAGE "IngestUsageBatch", &req.base,
                   &onceiot__usage__v1__batch_result__descriptor, NULL, s);
}

Test(usage_gateway, the_pipeline_streams_batches_and_each_tenant_reads_its_own)
{
    const char *a = make_sim(1, 1, 1000000000), *b = make_sim(2, 2, 1000000000);
    int64_t t = now_us() - 3600LL * 1000000;
    rpc_md_t md[] = {{"authorization", telemetry, 0}};
    rpc_call_opts_t o = {.timeout_ms = 30000, .metadata = md, .n_metadata = 1};
    rpc_stream_t *s;
    cr_assert_eq(rpc_stream_open(gw, USAGE "IngestUsage", arena, &o, &s), 0);
    for (int k = 0; k < 3; k++) {
        Onceiot__Usage__V1__UsageRecord *recs[] = {rec(a, t + k, 100), rec(b, t + k, 1000)};
        Onceiot__Usage__V1__IngestUsageBatchRequest req =
            ONCEIOT__USAGE__V1__INGEST_USAGE_BATCH_REQUEST__INIT;
        req.batch_id = arena_printf(arena, "gw-%d", k % 2); /* the third is a replay */
        req.records = recs;
        req.n_records = 2;
        cr_assert_eq(rpc_stream_send(s, &req.base), 0);
    }
    cr_assert_eq(rpc_stream_close_send(s), 0);
    ProtobufCMessage *m = NULL;
    cr_assert_eq(rpc_stream_recv(s, &onceiot__usage__v1__ingest_usage_response__descriptor, &m), 1);
    rpc_status_t stt;
    cr_assert_eq(rpc_stream_finish(s, &stt), 0, "%s", stt.message);
    const Onceiot__Usage__V1__IngestUsageResponse *r = (const void *)m;
    cr_assert_eq(r->records, 4);
    cr_assert_eq(r->replayed_batches, 1);

    Onceiot__Usage__V1__GetSimUsageRequest q = ONCEIOT__USAGE__V1__GET_SIM_USAGE_REQUEST__INIT;
    q.iccid = (char *)a;
    q.granularity = ONCEIOT__USAGE__V1__GRANULARITY__GRANULARITY_DAY;
    Google__Protobuf__Timestamp from = GOOGLE__PROTOBUF__TIMESTAMP__INIT, to = from;
    from.seconds = (t - DAY_US) / 1000000;
    to.seconds = (t + DAY_US) / 1000000;
    q.start = &from;
    q.end = &to;
    Onceiot__Usage__V1__GetSimUsageResponse *u;
    cr_assert_eq(call_in(arena, reader1, USAGE "GetSimUsage", &q.base,
                         &onceiot__usage__v1__get_sim_usage_response__descriptor, &u, &stt),
                 0, "%s", stt.message);
    cr_assert_eq(u->totals->total_volume, 202);
    cr_assert_eq(call_in(arena, reader2, USAGE "GetSimUsage", &q.base,
                         &onceiot__usage__v1__get_sim_usage_response__descriptor, &u, &stt),
                 ERR_NOT_FOUND, "another organization's SIM");

    Onceiot__Usage__V1__GetFleetUsageRequest f = ONCEIOT__USAGE__V1__GET_FLEET_USAGE_REQUEST__INIT;
    f.granularity = ONCEIOT__USAGE__V1__GRANULARITY__GRANULARITY_DAY;
    f.start = &from;
    f.end = &to;
    Onceiot__Usage__V1__GetFleetUsageResponse *fl;
    cr_assert_eq(call_in(arena, reader2, USAGE "GetFleetUsage", &f.base,
                         &onceiot__usage__v1__get_fleet_usage_response__descriptor, &fl, &stt),
                 0, "%s", stt.message);
    int64_t total = 0;
    for (size_t i = 0; i < fl->n_buckets; i++)
        total += fl->buckets[i]->totals->total_volume;
    cr_assert_eq(total, 2002, "only organization 2's SIM");

    Onceiot__Usage__V1__ListTopSimsRequest tq = ONCEIOT__USAGE__V1__LIST_TOP_SIMS_REQUEST__INIT;
    tq.start = &from;
    tq.end = &to;
    Onceiot__Usage__V1__ListTopSimsResponse *top;
    cr_assert_eq(call_in(arena, reader1, USAGE "ListTopSims", &tq.base,
                         &onceiot__usage__v1__list_top_sims_response__descriptor, &top, &stt),
                 0, "%s", stt.message);
    cr_assert_eq(top->n_sims, 1);
    cr_assert_str_eq(top->sims[0]->iccid, a);

    Onceiot__Usage__V1__ListUsageRecordsRequest lr =
        ONCEIOT__USAGE__V1__LIST_USAGE_RECORDS_REQUEST__INIT;
    lr.iccid = (char *)b;
    Onceiot__Usage__V1__ListUsageRecordsResponse *recs;
    cr_assert_eq(call_in(arena, reader2, USAGE "ListUsageRecords", &lr.base,
                         &onceiot__usage__v1__list_usage_records_response__descriptor, &recs, &stt),
                 0, "%s", stt.message);
    cr_assert_eq(recs->n_records, 2);
    cr_assert_eq(call_in(arena, reader1, USAGE "ListUsageRecords", &lr.base,
                         &onceiot__usage__v1__list_usage_records_response__descriptor, &recs, &stt),
                 ERR_NOT_FOUND);

    Onceiot__Usage__V1__GetIngestStatusRequest gs =
        ONCEIOT__USAGE__V1__GET_INGEST_STATUS_REQUEST__INIT;
    Onceiot__Usage__V1__IngestStatus *is;
    cr_assert_eq(call_in(arena, root, USAGE "GetIngestStatus", &gs.base,
                         &onceiot__usage__v1__ingest_status__descriptor, &is, &stt),
                 0, "%s", stt.message);
    cr_assert_eq(is->n_recent_batches, 2);
}

Test(usage_gateway, each_method_keeps_to_its_declared_rule)
{
    const char *a = make_sim(1, 3, 1000000000);
    Onceiot__Usage__V1__UsageRecord *recs[] = {rec(a, now_us(), 5)};
    rpc_status_t s;
    cr_assert_eq(ingest_unary(writer1, "rule-1", recs, 1, &s), ERR_PERMISSION_DENIED,
                 "usage:write without being staff: %s", s.message);
    cr_assert_eq(ingest_unary(reader1, "rule-2", recs, 1, &s), ERR_PERMISSION_DENIED);
    cr_assert_eq(ingest_unary(NULL, "rule-3", recs, 1, &s), ERR_UNAUTHENTICATED);
    cr_assert_eq(ingest_unary(telemetry, "rule-4", recs, 1, &s), 0, "%s", s.message);

    Onceiot__Usage__V1__ListTopSimsRequest tq = ONCEIOT__USAGE__V1__LIST_TOP_SIMS_REQUEST__INIT;
    Google__Protobuf__Timestamp from = GOOGLE__PROTOBUF__TIMESTAMP__INIT, to = from;
    from.seconds = now_us() / 1000000 - 86400;
    to.seconds = from.seconds + 2 * 86400;
    tq.start = &from;
    tq.end = &to;
    cr_assert_eq(call_in(arena, noscope1, USAGE "ListTopSims", &tq.base,
                         &onceiot__usage__v1__list_top_sims_response__descriptor, NULL, &s),
                 ERR_PERMISSION_DENIED, "no usage:read");
    cr_assert_eq(call_in(arena, writer1, USAGE "ListTopSims", &tq.base,
                         &onceiot__usage__v1__list_top_sims_response__descriptor, NULL, &s),
                 0, "%s", s.message);
    Onceiot__Usage__V1__GetIngestStatusRequest gs =
        ONCEIOT__USAGE__V1__GET_INGEST_STATUS_REQUEST__INIT;
    cr_assert_eq(call_in(arena, writer1, USAGE "GetIngestStatus", &gs.base,
                         &onceiot__usage__v1__ingest_status__descriptor, NULL, &s),
                 ERR_PERMISSION_DENIED, "staff only");
}

typedef struct poker {
    const char *iccid;
    int stop;
    int failures;
    char first[200];
} poker_t;

/* Changes the SIM's quota policy (same values) until the watcher has seen
 * one event, so the subscription is known to be registered. */
static void *poke(void *p)
{
    poker_t *w = p;
    while (!__atomic_load_n(&w->stop, __ATOMIC_SEQ_CST)) {
        Onceiot__Sims__V1__SetQuotaPolicyRequest req =
            ONCEIOT__SIMS__V1__SET_QUOTA_POLICY_REQUEST__INIT;
        req.iccid = (char *)w->iccid;
        req.quota_type = ONCEIOT__SIMS__V1__QUOTA_TYPE__QUOTA_TYPE_DATA;
        req.threshold_percentage = 80;
        rpc_status_t s;
        if (call_in(writer_arena, root, SIMS "SetQuotaPolicy", &req.base,
                    &onceiot__sims__v1__quota__descriptor, NULL, &s) < 0 &&
            w->failures++ == 0)
            snprintf(w->first, sizeof(w->first), "%s", s.message);
        struct timespec ts = {0, 50 * 1000000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

Test(usage_gateway, ingested_usage_fires_the_threshold_event_a_customer_watches)
{
    const char *a = make_sim(1, 4, 1000);
    Onceiot__Sims__V1__WatchEventsRequest wr = ONCEIOT__SIMS__V1__WATCH_EVENTS_REQUEST__INIT;
    wr.iccid = (char *)a;
    rpc_md_t md[] = {{"authorization", reader1, 0}};
    rpc_call_opts_t o = {.timeout_ms = 60000, .metadata = md, .n_metadata = 1};
    rpc_stream_t *s;
    cr_assert_eq(rpc_stream_open(gw, SIMS "WatchEvents", arena, &o, &s), 0);
    cr_assert_eq(rpc_stream_send(s, &wr.base), 0);
    cr_assert_eq(rpc_stream_close_send(s), 0);
    poker_t w = {.iccid = a};
    pthread_t th;
    pthread_create(&th, NULL, poke, &w);
    ProtobufCMessage *m;
    int rc = rpc_stream_recv(s, &onceiot__sims__v1__sim_event__descriptor, &m);
    __atomic_store_n(&w.stop, 1, __ATOMIC_SEQ_CST);
    pthread_join(th, NULL);
    cr_assert_eq(rc, 1, "the watcher saw no event");
    cr_assert_eq(w.failures, 0, "%s", w.first);

    Onceiot__Usage__V1__UsageRecord *recs[] = {rec(a, now_us() - 2000000, 500),
                                               rec(a, now_us() - 1000000, 349)};
    rpc_status_t stt;
    cr_assert_eq(ingest_unary(telemetry, "threshold-gw", recs, 2, &stt), 0, "%s", stt.message);
    bool seen = false;
    while (!seen) {
        cr_assert_eq(rpc_stream_recv(s, &onceiot__sims__v1__sim_event__descriptor, &m), 1,
                     "the stream ended before quota_threshold_reached");
        const Onceiot__Sims__V1__SimEvent *e = (const void *)m;
        seen = strcmp(e->event_type, "quota_threshold_reached") == 0;
    }
    rpc_stream_cancel(s);
    rpc_stream_finish(s, &stt);
    Onceiot__Sims__V1__GetQuotaRequest gq = ONCEIOT__SIMS__V1__GET_QUOTA_REQUEST__INIT;
    gq.iccid = (char *)a;
    gq.quota_type = ONCEIOT__SIMS__V1__QUOTA_TYPE__QUOTA_TYPE_DATA;
    Onceiot__Sims__V1__Quota *q;
    cr_assert_eq(call_in(arena, reader1, SIMS "GetQuota", &gq.base,
                         &onceiot__sims__v1__quota__descriptor, &q, &stt),
                 0, "%s", stt.message);
    cr_assert_eq(q->used_volume, 851);
    cr_assert(q->threshold_reached);
}

Test(usage_gateway, the_gateway_reflects_the_usage_api)
{
    rpc_call_opts_t o = {.timeout_ms = 20000};
    rpc_stream_t *s;
    cr_assert_eq(rpc_stream_open(gw, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                 arena, &o, &s),
                 0);
    Grpc__Reflection__V1__ServerReflectionRequest req =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
    req.message_request_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES;
    req.list_services = "*";
    cr_assert_eq(rpc_stream_send(s, &req.base), 0);
    req.message_request_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL;
    req.file_containing_symbol = "onceiot.usage.v1.UsageService.IngestUsage";
    cr_assert_eq(rpc_stream_send(s, &req.base), 0);
    cr_assert_eq(rpc_stream_close_send(s), 0);
    ProtobufCMessage *m;
    cr_assert_eq(
        rpc_stream_recv(s, &grpc__reflection__v1__server_reflection_response__descriptor, &m), 1);
    const Grpc__Reflection__V1__ServerReflectionResponse *r = (const void *)m;
    cr_assert_not_null(r->list_services_response);
    bool listed = false;
    for (size_t i = 0; i < r->list_services_response->n_service; i++)
        listed |=
            !strcmp(r->list_services_response->service[i]->name, "onceiot.usage.v1.UsageService");
    cr_assert(listed, "UsageService is listed");
    cr_assert_eq(
        rpc_stream_recv(s, &grpc__reflection__v1__server_reflection_response__descriptor, &m), 1);
    r = (const void *)m;
    cr_assert_not_null(r->file_descriptor_response, "the file defining IngestUsage");
    cr_assert_gt(r->file_descriptor_response->n_file_descriptor_proto, 0);
    const ProtobufCBinaryData *f = &r->file_descriptor_response->file_descriptor_proto[0];
    cr_assert(memmem(f->data, f->len, "usage/v1/usage.proto", 20), "usage.proto first");
    rpc_status_t stt;
    rpc_stream_finish(s, &stt);
}
