/* The event log against a real onceiot-sims: ListEvents, RecordEvents,
 * WatchEvents; and the query plans of every ListSims filter and order. */
#include "../../services/sims/sims_sql.h"
#include "pg_harness.h"
#include "sims_harness.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

TestSuite(sims_events, .init = sims_h_start, .fini = sims_h_stop, .timeout = 180);

#define EVENTS_D (&onceiot__sims__v1__list_events_response__descriptor)
#define RECORD_D (&onceiot__sims__v1__record_events_response__descriptor)

static int record(const principal_t *who, arena_t *a, const char *iccid, const char *type,
                  const char *category, const char *data, rpc_status_t *st)
{
    Onceiot__Sims__V1__EventInput e = ONCEIOT__SIMS__V1__EVENT_INPUT__INIT;
    e.iccid = (char *)iccid;
    e.event_type = (char *)type;
    e.event_category = (char *)category;
    e.severity = "info";
    if (data) /* an object, else the call is refused client-side: unset data */
        e.data = pbstruct_from_json(a ? a : sims_h.arena, data);
    Onceiot__Sims__V1__EventInput *items[] = {&e};
    Onceiot__Sims__V1__RecordEventsRequest req = ONCEIOT__SIMS__V1__RECORD_EVENTS_REQUEST__INIT;
    req.events = items;
    req.n_events = 1;
    ProtobufCMessage *resp;
    return sims_h_call("RecordEvents", &req.base, RECORD_D, who, a, &resp, st);
}

Test(sims_events, recorded_events_are_listed_newest_first_with_filters_and_pages)
{
    principal_t svc = sims_h_root();
    svc.credential = "service:usage";
    principal_t u = sims_h_user(1);
    const char *iccid = sims_h_iccid(1);
    sims_h_create(&u, iccid);
    rpc_status_t st;
    for (int i = 0; i < 25; i++)
        cr_assert_eq(record(&svc, NULL, iccid, i % 5 ? "pdp_context_created" : "attach",
                            "connectivity", "{\"cell\": 42}", &st),
                     0, "%s", st.message);
    Onceiot__Sims__V1__ListEventsRequest req = ONCEIOT__SIMS__V1__LIST_EVENTS_REQUEST__INIT;
    req.iccid = (char *)iccid;
    req.event_category = "connectivity";
    req.page_size = 4;
    Onceiot__Sims__V1__ListEventsResponse *page;
    int total = 0;
    int64_t last_s = INT64_MAX, last_id = INT64_MAX;
    do {
        cr_assert_eq(sims_h_call("ListEvents", &req.base, EVENTS_D, &u, NULL,
                                 (ProtobufCMessage **)&page, &st),
                     0, "%s", st.message);
        for (size_t i = 0; i < page->n_events; i++) {
            Onceiot__Sims__V1__SimEvent *e = page->events[i];
            int64_t t = e->occurred_at->seconds * 1000000 + e->occurred_at->nanos / 1000;
            cr_assert(t < last_s || (t == last_s && e->id < last_id), "newest first");
            last_s = t;
            last_id = e->id;
            cr_assert_str_eq(e->triggered_by, "service:usage");
            total++;
        }
        req.page_token = page->next_page_token;
    } while (*req.page_token);
    cr_assert_eq(total, 25);
    req.event_type = "attach";
    req.page_size = 100;
    cr_assert_eq(
        sims_h_call("ListEvents", &req.base, EVENTS_D, &u, NULL, (ProtobufCMessage **)&page, &st),
        0);
    cr_assert_eq(page->n_events, 5);
    cr_assert_str_eq(sims_h_json(page->events[0]->data), "{\"cell\":42}");
    Google__Protobuf__Timestamp future = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    future.seconds = time(NULL) + 3600;
    req.since = &future;
    cr_assert_eq(
        sims_h_call("ListEvents", &req.base, EVENTS_D, &u, NULL, (ProtobufCMessage **)&page, &st),
        0);
    cr_assert_eq(page->n_events, 0, "time range");
}

Test(sims_events, bad_events_are_refused_all_or_nothing)
{
    principal_t svc = sims_h_root();
    principal_t u = sims_h_user(1);
    const char *iccid = sims_h_iccid(2);
    sims_h_create(&u, iccid);
    rpc_status_t st;
    cr_assert_eq(record(&svc, NULL, iccid, "Bad Type", "connectivity", NULL, &st),
                 ERR_INVALID_ARGUMENT);
    cr_assert_eq(record(&svc, NULL, iccid, "attach", "weather", NULL, &st), ERR_INVALID_ARGUMENT);
    char deep[128]; /* an object around 40 arrays: deeper than 32 */
    snprintf(deep, sizeof(deep), "{\"a\": %.40s%.40s}", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
             "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]");
    cr_assert_eq(record(&svc, NULL, iccid, "attach", "connectivity", deep, &st),
                 ERR_INVALID_ARGUMENT);
    cr_assert(sims_h_violation(&st, "events[0].data"), "%s", st.message);
    cr_assert_eq(record(&svc, NULL, sims_h_iccid(3), "attach", "connectivity", NULL, &st),
                 ERR_NOT_FOUND);
    principal_t other = sims_h_user(2);
    cr_assert_eq(record(&other, NULL, iccid, "attach", "connectivity", NULL, &st), ERR_NOT_FOUND);
    Onceiot__Sims__V1__ListEventsRequest req = ONCEIOT__SIMS__V1__LIST_EVENTS_REQUEST__INIT;
    req.iccid = (char *)iccid;
    req.event_category = "connectivity";
    Onceiot__Sims__V1__ListEventsResponse *page;
    cr_assert_eq(
        sims_h_call("ListEvents", &req.base, EVENTS_D, &u, NULL, (ProtobufCMessage **)&page, &st),
        0);
    cr_assert_eq(page->n_events, 0);
}

/* Event data is a google.protobuf.Struct both ways: what RecordEvents was
 * given, and what the service writes itself (a status change's from/to). */
Test(sims_events, event_data_round_trips_as_a_struct)
{
    principal_t svc = sims_h_root();
    svc.credential = "service:usage";
    principal_t u = sims_h_user(1);
    const char *iccid = sims_h_iccid(4);
    sims_h_create(&u, iccid);
    static const char data[] = "{\"cell\": {\"id\": 42, \"lac\": \"0x1f\"}, \"rssi\": -71.5, "
                               "\"roaming\": false, \"apn\": null, \"hops\": [1, [2, 3], {}], "
                               "\"note\": \"\\\"quoted\\\" \\u00e9\"}";
    rpc_status_t st;
    cr_assert_eq(record(&svc, NULL, iccid, "attach", "connectivity", data, &st), 0, "%s",
                 st.message);
    sims_h_act(&u, "ActivateSim", iccid);
    Onceiot__Sims__V1__ListEventsRequest req = ONCEIOT__SIMS__V1__LIST_EVENTS_REQUEST__INIT;
    req.iccid = (char *)iccid;
    Onceiot__Sims__V1__ListEventsResponse *page;
    cr_assert_eq(
        sims_h_call("ListEvents", &req.base, EVENTS_D, &u, NULL, (ProtobufCMessage **)&page, &st),
        0, "%s", st.message);
    bool attach = false, activated = false;
    for (size_t i = 0; i < page->n_events; i++) {
        const Onceiot__Sims__V1__SimEvent *e = page->events[i];
        cr_assert_not_null(e->data, "%s has data", e->event_type);
        if (strcmp(e->event_type, "attach") == 0) {
            cr_assert_str_eq(sims_h_json(e->data), sims_h_json(sims_h_struct(data)));
            attach = true;
        } else if (strcmp(e->event_type, "sim_activated") == 0) {
            cr_assert_str_eq(sims_h_json(e->data), "{\"from\":\"Disabled\",\"to\":\"Enabled\"}");
            activated = true;
        }
    }
    cr_assert(attach && activated, "both events listed");
}

Test(sims_events, events_land_in_daily_partitions_managed_by_pg_partman)
{
    PGresult *r = pgh_sql("SELECT count(*) AS n FROM pg_inherits "
                          "WHERE inhparent = 'sims.sim_events'::regclass");
    cr_assert_geq(atoi(PQgetvalue(r, 0, 0)), 8, "today and 7 days ahead");
    PQclear(r);
    r = pgh_sql("SELECT retention, retention_keep_table FROM partman.part_config "
                "WHERE parent_table = 'sims.sim_events'");
    cr_assert_eq(PQntuples(r), 1);
    cr_assert_str_eq(PQgetvalue(r, 0, 0), "1 year");
    cr_assert_str_eq(PQgetvalue(r, 0, 1), "f");
    PQclear(r);
}

/* The next event of a watch (the i-th, for the message); fails the test
 * when the stream ends instead. */
static Onceiot__Sims__V1__SimEvent *next_event(rpc_stream_t *s, int i)
{
    ProtobufCMessage *m;
    if (rpc_stream_recv(s, &onceiot__sims__v1__sim_event__descriptor, &m) != 1) {
        rpc_status_t st;
        rpc_stream_finish(s, &st);
        cr_assert_fail("event %d: the stream ended: %s: %s", i, err_grpc_name(st.code), st.message);
    }
    return (Onceiot__Sims__V1__SimEvent *)m;
}

/* Opens a watch of u's organization (category "": every event) on ch and
 * waits for it to take effect. */
static rpc_stream_t *watch(rpc_channel_t *ch, principal_t *u, const char *category)
{
    Onceiot__Sims__V1__WatchEventsRequest req = ONCEIOT__SIMS__V1__WATCH_EVENTS_REQUEST__INIT;
    req.event_category = (char *)category;
    const char *path = "/onceiot.sims.v1.SimService/WatchEvents";
    rpc_md_t *md = arena_alloc(sims_h.arena, 2 * sizeof(*md));
    principal_sign(&sims_h.key, u, path, sims_h.arena, md);
    rpc_call_opts_t opts = {.timeout_ms = 20000, .metadata = md, .n_metadata = 2};
    rpc_stream_t *s;
    cr_assert_eq(rpc_stream_open(ch, path, sims_h.arena, &opts, &s), 0);
    cr_assert_eq(rpc_stream_send(s, &req.base), 0);
    cr_assert_eq(rpc_stream_close_send(s), 0);
    cr_assert_eq(rpc_stream_headers(s), 0, "the subscription took effect");
    return s;
}

/* Events of the watcher's organization written by another caller after the
 * subscription took effect (the response headers say when) reach it, in
 * order; another organization's and those from before do not. */
Test(sims_events, a_watcher_sees_events_written_by_another_caller_in_its_organization)
{
    principal_t u1 = sims_h_user(1), u2 = sims_h_user(2), svc = sims_h_root();
    svc.credential = "service:usage";
    const char *mine = sims_h_iccid(10), *theirs = sims_h_iccid(11);
    sims_h_create(&u1, mine);
    sims_h_create(&u2, theirs);
    rpc_status_t st;
    cr_assert_eq(record(&svc, NULL, mine, "detach", "connectivity", NULL, &st), 0, "%s",
                 st.message);
    rpc_stream_t *s = watch(sims_h.ch, &u1, "connectivity");
    static const char *const types[] = {"attach", "pdp_context_created", "pdp_context_deleted"};
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(record(&svc, NULL, theirs, "attach", "connectivity", NULL, &st), 0);
        cr_assert_eq(record(&svc, NULL, mine, types[i], "connectivity", NULL, &st), 0, "%s",
                     st.message);
    }
    for (int i = 0; i < 3; i++) {
        Onceiot__Sims__V1__SimEvent *e = next_event(s, i);
        cr_assert_str_eq(e->iccid, mine, "only the watcher's organization");
        cr_assert_eq(e->organization_id, 1);
        cr_assert_str_eq(e->event_type, types[i], "in commit order, none from before the watch");
        cr_assert_str_eq(e->triggered_by, "service:usage");
    }
    rpc_stream_cancel(s);
    rpc_stream_finish(s, &st);
    cr_assert_eq(st.code, GRPC_STATUS_CANCELLED);
}

/* ---- plans ---- */

typedef struct plan_case {
    char name[24];
    char order;         /* 'i' iccid, 't' iccid with a tag, 'a' activation date, 'l' label */
    char params[9][40]; /* $2..$9 and $1 last; "" is NULL */
} plan_case_t;

ParameterizedTestParameters(sims_events, every_list_filter_and_order_uses_an_index)
{
    /* params: status, label, tag, imei, msisdn, ip, iccid prefix, customer org */
    static plan_case_t c[] = {
        {"no filter", 'i', {""}},
        {"status", 'i', {"Suspended"}},
        {"label substring", 'i', {"", "ice 0123"}},
        {"tag", 't', {"", "", "rare"}},
        {"imei", 'i', {"", "", "", "350000000012345"}},
        {"msisdn", 'i', {"", "", "", "", "4900012345"}},
        {"ip address", 'i', {"", "", "", "", "", "10.0.48.57"}},
        {"iccid prefix", 'i', {"", "", "", "", "", "", "898800000000001"}},
        {"customer org", 'i', {"", "", "", "", "", "", "", "17"}},
        {"order activation", 'a', {""}},
        {"order label", 'l', {""}},
        {"status by label", 'l', {"Suspended"}},
    };
    return cr_make_param_array(plan_case_t, c, sizeof(c) / sizeof(c[0]));
}

ParameterizedTest(plan_case_t *c, sims_events, every_list_filter_and_order_uses_an_index)
{
    /* 20 000 SIMs in 4 organizations; 1 in 50 suspended, 1 in 100 tagged
     * "rare", 1 in 20 with a customer organization. */
    PQclear(pgh_sql(
        "INSERT INTO sims.sims (organization_id, iccid, status, label, imei, msisdn, ip_address, "
        "customer_org_id, tags, activation_date) "
        "SELECT 1 + g % 4, '8988' || lpad(g::text, 15, '0'), "
        "CASE WHEN g % 50 = 0 THEN 'Suspended' ELSE 'Enabled' END, "
        "'device ' || lpad(g::text, 5, '0'), '35' || lpad(g::text, 13, '0'), "
        "'49' || lpad(g::text, 8, '0'), ('10.0.0.0'::inet + g), "
        "CASE WHEN g % 20 = 0 THEN g % 40 END, "
        "CASE WHEN g % 100 = 0 THEN ARRAY['rare', 'fleet'] ELSE ARRAY['fleet'] END, "
        "now() - g * interval '1 minute' FROM generate_series(1, 20000) AS g;"
        "INSERT INTO sims.sim_quotas (sim_id, quota_type, volume) "
        "SELECT id, t, 1000000 FROM sims.sims, unnest(ARRAY['data', 'sms']) AS t;"
        "ANALYZE sims.sims; ANALYZE sims.sim_quotas"));
    PGconn *conn = PQconnectdb(pgh_url());
    cr_assert(PQstatus(conn) == CONNECTION_OK);
    const char *sql = c->order == 'a'   ? SIMS_LIST_BY_ACTIVATION
                      : c->order == 'l' ? SIMS_LIST_BY_LABEL
                      : c->order == 't' ? SIMS_LIST_BY_TAG
                                        : SIMS_LIST_BY_ICCID;
    char *prep = mem_printf("PREPARE q(bigint, text, text, text, text, text, inet, text, bigint, "
                            "bigint, text, text) AS %s",
                            sql);
    PGresult *r = PQexec(conn, "SET search_path = sims, public; "
                               "SET plan_cache_mode = force_custom_plan");
    cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s", PQerrorMessage(conn));
    PQclear(r);
    r = PQexec(conn, prep);
    cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s", PQerrorMessage(conn));
    PQclear(r);
    mem_free(prep);
    const char *params[12] = {"2"};
    for (int i = 0; i < 8; i++)
        params[i + 1] = *c->params[i] ? c->params[i] : NULL;
    params[9] = "101";
    char *plan = pgh_explain_execute(conn, "q", params, 12);
    PQfinish(conn);
    printf("-- ListSims %s (organization 2 of 4, 20000 SIMs)\n%s\n", c->name, plan);
    fflush(stdout);
    cr_assert(!strstr(plan, "Seq Scan on sims") && !strstr(plan, "Seq Scan on sim_quotas"),
              "%s:\n%s", c->name, plan);
    cr_assert(strstr(plan, "Index"), "%s:\n%s", c->name, plan);
    mem_free(plan);
}

/* Two replicas on one database: a watcher on one sees the events written
 * through the other (the trigger's NOTIFY reaches every replica's
 * listener), in commit order. */
Test(sims_events, a_watcher_on_one_replica_sees_events_written_through_another)
{
    principal_t u1 = sims_h_user(1), svc = sims_h_root();
    svc.credential = "service:usage";
    const char *iccid = sims_h_iccid(20);
    sims_h_create(&u1, iccid);
    char *db = mem_printf("ONCEIOT_DATABASE_URL=%s", pgh_url());
    char *key = mem_printf("ONCEIOT_PRINCIPAL_KEY=%s", sims_h.secret_hex);
    char *schema = ph_source_path("schema");
    char *dir = mem_printf("ONCEIOT_SCHEMA_DIR=%s/sims", schema);
    const char *env[] = {db, key, dir, "ONCEIOT_GRACE_MS=3000", "ONCEIOT_LOG_LEVEL=warn", NULL};
    char *bin = ph_build_path("services/onceiot-sims");
    ph_proc_t other;
    ph_start(&other, bin, env);
    rpc_channel_t *ch;
    cr_assert_eq(rpc_channel_new(other.addr, 1 << 22, &ch), 0);

    rpc_stream_t *s = watch(ch, &u1, "");
    static const char *const types[] = {"attach", "pdp_context_created", "detach"};
    rpc_status_t st;
    for (int i = 0; i < 3; i++)
        cr_assert_eq(record(&svc, NULL, iccid, types[i], "connectivity", NULL, &st), 0, "%s",
                     st.message);
    for (int i = 0; i < 3; i++) {
        Onceiot__Sims__V1__SimEvent *e = next_event(s, i);
        cr_assert_str_eq(e->iccid, iccid);
        cr_assert_str_eq(e->event_type, types[i], "every event, in commit order");
    }
    rpc_stream_cancel(s);
    rpc_stream_finish(s, &st);
    cr_assert_eq(st.code, GRPC_STATUS_CANCELLED);
    rpc_channel_free(ch);
    cr_assert_eq(ph_stop(&other, SIGTERM, 10000), 0);
    cr_assert(!ph_log_has_sanitizer_report(&other));
    mem_free(bin);
    mem_free(dir);
    mem_free(schema);
    mem_free(key);
    mem_free(db);
}

/* Notifications sent while the listener reconnects are lost: a watch that
 * was active ends with UNAVAILABLE instead of missing events silently, and
 * a watch opened after the loss takes effect on the new connection (its sync
 * point is sent again once the listener listens) and sees new events. */
Test(sims_events, a_lost_listener_connection_ends_active_watches_and_new_ones_work)
{
    principal_t u1 = sims_h_user(1), svc = sims_h_root();
    svc.credential = "service:usage";
    const char *iccid = sims_h_iccid(30);
    sims_h_create(&u1, iccid);
    rpc_stream_t *s = watch(sims_h.ch, &u1, "");
    PGresult *r = pgh_sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                          "WHERE query = 'LISTEN sims_events'");
    cr_assert_str_eq(PQgetvalue(r, 0, 0), "1", "the listener's one backend was terminated");
    PQclear(r);
    ProtobufCMessage *m = NULL;
    cr_assert_eq(rpc_stream_recv(s, &onceiot__sims__v1__sim_event__descriptor, &m), 0,
                 "the stream ends");
    rpc_status_t st;
    rpc_stream_finish(s, &st);
    cr_assert_eq(st.code, GRPC_STATUS_UNAVAILABLE, "%s: %s", err_grpc_name(st.code), st.message);
    cr_assert(strstr(st.message, "ListEvents"), "%s", st.message);

    rpc_stream_t *again = watch(sims_h.ch, &u1, "");
    cr_assert_eq(record(&svc, NULL, iccid, "attach", "connectivity", NULL, &st), 0, "%s",
                 st.message);
    Onceiot__Sims__V1__SimEvent *e = next_event(again, 0);
    cr_assert_str_eq(e->iccid, iccid);
    cr_assert_str_eq(e->event_type, "attach");
    rpc_stream_cancel(again);
    rpc_stream_finish(again, &st);
    cr_assert_eq(st.code, GRPC_STATUS_CANCELLED);
}

/* ---- ApplyConnectivity (the usage service's transitions) ---- */

#define CONN_D (&onceiot__sims__v1__apply_connectivity_response__descriptor)

static Onceiot__Sims__V1__ConnectivityTransition *transition(int64_t seq, bool connected,
                                                             int64_t at_s)
{
    arena_t *a = sims_h.arena;
    Onceiot__Sims__V1__ConnectivityTransition *t = arena_alloc(a, sizeof(*t));
    onceiot__sims__v1__connectivity_transition__init(t);
    t->seq = seq;
    t->connected = connected;
    t->occurred_at = arena_alloc(a, sizeof(*t->occurred_at));
    google__protobuf__timestamp__init(t->occurred_at);
    t->occurred_at->seconds = at_s;
    t->rat = "LTE";
    t->country = "DE";
    t->operator_name = "Telekom";
    t->cell_id = "cell \"7\"";
    return t;
}

/* An item of n transitions seq first.. alternating from lost; with a
 * network observed at net_s (0: none). */
static Onceiot__Sims__V1__ConnectivityItem *conn_item(const char *iccid, int64_t first, size_t n,
                                                      int64_t net_s, const char *rat)
{
    arena_t *a = sims_h.arena;
    Onceiot__Sims__V1__ConnectivityItem *it = arena_alloc(a, sizeof(*it));
    onceiot__sims__v1__connectivity_item__init(it);
    it->iccid = (char *)iccid;
    it->transitions = arena_alloc(a, (n + 1) * sizeof(*it->transitions));
    for (size_t k = 0; k < n; k++)
        it->transitions[it->n_transitions++] =
            transition(first + (int64_t)k, (first + (int64_t)k) % 2 == 0, 1700000000 + first + k);
    if (net_s) {
        it->network_observed_at = arena_alloc(a, sizeof(*it->network_observed_at));
        google__protobuf__timestamp__init(it->network_observed_at);
        it->network_observed_at->seconds = net_s;
        it->rat = (char *)rat;
        it->country = "FR";
        it->operator_name = "Orange";
    }
    return it;
}

static int apply_conn(const char *batch, Onceiot__Sims__V1__ConnectivityItem **items, size_t n,
                      Onceiot__Sims__V1__ApplyConnectivityResponse **out, rpc_status_t *st)
{
    principal_t u = sims_h_user(1);
    Onceiot__Sims__V1__ApplyConnectivityRequest req =
        ONCEIOT__SIMS__V1__APPLY_CONNECTIVITY_REQUEST__INIT;
    req.batch_id = (char *)batch;
    req.items = items;
    req.n_items = n;
    return sims_h_call("ApplyConnectivity", &req.base, CONN_D, &u, NULL, (ProtobufCMessage **)out,
                       st);
}

static size_t conn_events(const char *iccid)
{
    principal_t u = sims_h_user(1);
    Onceiot__Sims__V1__ListEventsRequest req = ONCEIOT__SIMS__V1__LIST_EVENTS_REQUEST__INIT;
    req.iccid = (char *)iccid;
    req.event_category = "connectivity";
    Onceiot__Sims__V1__ListEventsResponse *r;
    rpc_status_t st;
    cr_assert_eq(
        sims_h_call("ListEvents", &req.base, EVENTS_D, &u, NULL, (ProtobufCMessage **)&r, &st), 0,
        "%s", st.message);
    return r->n_events;
}

static Onceiot__Sims__V1__Sim *get_sim(const char *iccid)
{
    principal_t u = sims_h_user(1);
    Onceiot__Sims__V1__GetSimRequest req = ONCEIOT__SIMS__V1__GET_SIM_REQUEST__INIT;
    req.iccid = (char *)iccid;
    Onceiot__Sims__V1__Sim *s;
    rpc_status_t st;
    cr_assert_eq(sims_h_call("GetSim", &req.base, &onceiot__sims__v1__sim__descriptor, &u, NULL,
                             (ProtobufCMessage **)&s, &st),
                 0, "%s", st.message);
    return s;
}

static const char *current_rat(const char *iccid)
{
    return get_sim(iccid)->current_rat;
}

static int64_t sim_updated_us(const char *iccid)
{
    const Google__Protobuf__Timestamp *t = get_sim(iccid)->updated_at;
    cr_assert_not_null(t);
    return t->seconds * 1000000 + t->nanos / 1000;
}

Test(sims_events, apply_connectivity_records_each_transition_once_and_refuses_whole_batches)
{
    principal_t u = sims_h_user(1);
    const char *a = sims_h_iccid(71), *b = sims_h_iccid(72);
    sims_h_create(&u, a);
    sims_h_create(&u, b);
    Onceiot__Sims__V1__ApplyConnectivityResponse *r;
    rpc_status_t st;

    int64_t created = sim_updated_us(a);
    usleep(2000);
    /* Given out of ICCID order: b's one transition, a's two and network. */
    Onceiot__Sims__V1__ConnectivityItem *first[] = {conn_item(b, 1, 1, 0, NULL),
                                                    conn_item(a, 1, 2, 1700000100, "5G")};
    cr_assert_eq(apply_conn("conn-1", first, 2, &r, &st), 0, "%s", st.message);
    cr_assert_eq(r->events, 3);
    cr_assert_not(r->replayed);
    cr_assert_eq(conn_events(a), 2);
    cr_assert_eq(conn_events(b), 1);
    cr_assert_str_eq(current_rat(a), "5G");
    cr_assert_str_eq(current_rat(b), "");
    cr_assert_gt(sim_updated_us(a), created, "the batch's UPDATE moves updated_at");

    /* A replay changes nothing and answers as the first time. */
    cr_assert_eq(apply_conn("conn-1", first, 2, &r, &st), 0, "%s", st.message);
    cr_assert(r->replayed);
    cr_assert_eq(r->events, 3);
    cr_assert_eq(conn_events(a), 2);

    /* Already recorded transitions are skipped; an older network is not
     * shown over a newer one. */
    Onceiot__Sims__V1__ConnectivityItem *again[] = {conn_item(a, 2, 2, 1700000050, "2G")};
    cr_assert_eq(apply_conn("conn-2", again, 1, &r, &st), 0, "%s", st.message);
    cr_assert_eq(r->events, 1);
    cr_assert_eq(conn_events(a), 3);
    cr_assert_str_eq(current_rat(a), "5G");

    /* A gap in b (at 1, given 3) refuses the whole batch, a's part too. */
    Onceiot__Sims__V1__ConnectivityItem *gap[] = {conn_item(a, 4, 1, 1700000200, "LTE"),
                                                  conn_item(b, 3, 1, 0, NULL)};
    cr_assert_eq(apply_conn("conn-3", gap, 2, &r, &st), ERR_ABORTED);
    cr_assert(strstr(st.message, b), "%s", st.message);
    cr_assert_eq(conn_events(a), 3);
    cr_assert_str_eq(current_rat(a), "5G");

    /* An unknown SIM refuses the batch naming it; the id stays unused. */
    const char *unknown = sims_h_iccid(79);
    Onceiot__Sims__V1__ConnectivityItem *unk[] = {conn_item(a, 4, 1, 1700000200, "LTE"),
                                                  conn_item(unknown, 1, 1, 0, NULL)};
    cr_assert_eq(apply_conn("conn-4", unk, 2, &r, &st), ERR_NOT_FOUND);
    cr_assert(strstr(st.message, unknown), "%s", st.message);
    cr_assert_eq(conn_events(a), 3);

    /* Two items of one SIM are a bad request. */
    Onceiot__Sims__V1__ConnectivityItem *twice[] = {conn_item(a, 4, 1, 0, NULL),
                                                    conn_item(a, 5, 1, 0, NULL)};
    cr_assert_eq(apply_conn("conn-5", twice, 2, &r, &st), ERR_INVALID_ARGUMENT);
    cr_assert(sims_h_violation(&st, "items"), "%s", st.message);

    /* The refused ids are still free: conn-4 without the unknown SIM. */
    cr_assert_eq(apply_conn("conn-4", unk, 1, &r, &st), 0, "%s", st.message);
    cr_assert_eq(r->events, 1);
    cr_assert_eq(conn_events(a), 4);
    cr_assert_str_eq(current_rat(a), "LTE");
}
