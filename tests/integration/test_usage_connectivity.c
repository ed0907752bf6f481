/* Connectivity: samples ingested in batches (idempotent, all or nothing),
 * each SIM's latest state kept exact whatever order samples arrive in, its
 * history page by page, the fleet's SIMs offline longer than a duration,
 * tenant isolation, and the lost/restored events and current network that
 * reach sims exactly once and in order per SIM, across kill -9 of usage,
 * with sims down for a while, and under concurrent batches. Real
 * onceiot-sims and onceiot-usage processes on the test PostgreSQL. */
#include "google/protobuf/duration.pb-c.h"
#include "pg_harness.h"
#include "usage_harness.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SEC  1000000LL
#define MIN  (60 * SEC)
#define HOUR (60 * MIN)
#define DAY  (24 * HOUR)

typedef usage_sample_t sample_t;
typedef Onceiot__Usage__V1__ConnectivityState state_t;

static arena_t *arena;
/* A short lease, so a killed dispatcher's rows are taken again quickly. */
static const char *const env[] = {"ONCEIOT_OUTBOX_LEASE_MS=1500", NULL};

static void setup(void)
{
    usage_h_start(env);
    arena = sims_h_thread_arena();
}

static void teardown(void)
{
    usage_h_stop();
}

TestSuite(usage_connectivity, .init = setup, .fini = teardown, .timeout = 300);

/* One batch as the telemetry pipeline. */
static int ingest(const char *id, sample_t **v, size_t n,
                  Onceiot__Usage__V1__IngestConnectivityResponse **out, rpc_status_t *st)
{
    principal_t w = usage_h_writer();
    return usage_h_ingest_conn(arena, &w, &id, &v, &n, 1, out, st);
}

static void ingest_ok(const char *id, sample_t **v, size_t n)
{
    Onceiot__Usage__V1__IngestConnectivityResponse *r;
    rpc_status_t st;
    cr_assert_eq(ingest(id, v, n, &r, &st), 0, "%s: %s", id, st.message);
    cr_assert_not_null(r);
    cr_assert_eq(r->n_batches, 1);
}

static int list_offline(const Onceiot__Usage__V1__ListOfflineSimsRequest *req,
                        const principal_t *who, Onceiot__Usage__V1__ListOfflineSimsResponse **out,
                        rpc_status_t *st)
{
    return usage_h_call("ListOfflineSims", &req->base,
                        &onceiot__usage__v1__list_offline_sims_response__descriptor, who, arena,
                        out, st);
}

static int list_conn(const Onceiot__Usage__V1__ListConnectivityRequest *req, const principal_t *who,
                     Onceiot__Usage__V1__ListConnectivityResponse **out, rpc_status_t *st)
{
    return usage_h_call("ListConnectivity", &req->base,
                        &onceiot__usage__v1__list_connectivity_response__descriptor, who, arena,
                        out, st);
}

static int get_state(const principal_t *who, const char *iccid, state_t **out, rpc_status_t *st)
{
    Onceiot__Usage__V1__GetConnectivityRequest req =
        ONCEIOT__USAGE__V1__GET_CONNECTIVITY_REQUEST__INIT;
    req.iccid = (char *)iccid;
    return usage_h_call("GetConnectivity", &req.base,
                        &onceiot__usage__v1__connectivity_state__descriptor, who, arena, out, st);
}

static state_t *state_of(const char *iccid)
{
    principal_t op = usage_h_operator();
    state_t *s = NULL;
    rpc_status_t st;
    cr_assert_eq(get_state(&op, iccid, &s, &st), 0, "GetConnectivity %s: %s", iccid, st.message);
    return s;
}

/* The SIM's connectivity events in sims, oldest first (n in *n). */
static Onceiot__Sims__V1__SimEvent **events_of(const char *iccid, size_t *n)
{
    Onceiot__Sims__V1__ListEventsRequest req = ONCEIOT__SIMS__V1__LIST_EVENTS_REQUEST__INIT;
    req.iccid = (char *)iccid;
    req.event_category = "connectivity";
    req.page_size = 1000;
    principal_t root = sims_h_root();
    ProtobufCMessage *resp;
    rpc_status_t st;
    cr_assert_eq(sims_h_call("ListEvents", &req.base,
                             &onceiot__sims__v1__list_events_response__descriptor, &root, arena,
                             &resp, &st),
                 0, "ListEvents %s: %s", iccid, st.message);
    const Onceiot__Sims__V1__ListEventsResponse *r = (const void *)resp;
    Onceiot__Sims__V1__SimEvent **v = arena_alloc(arena, (r->n_events + 1) * sizeof(*v));
    for (size_t i = 0; i < r->n_events; i++)
        v[i] = r->events[r->n_events - 1 - i];
    *n = r->n_events;
    return v;
}

static Onceiot__Sims__V1__Sim *sim_of(const char *iccid)
{
    Onceiot__Sims__V1__GetSimRequest req = ONCEIOT__SIMS__V1__GET_SIM_REQUEST__INIT;
    req.iccid = (char *)iccid;
    principal_t root = sims_h_root();
    ProtobufCMessage *resp;
    rpc_status_t st;
    cr_assert_eq(sims_h_call("GetSim", &req.base, &onceiot__sims__v1__sim__descriptor, &root, arena,
                             &resp, &st),
                 0, "GetSim %s: %s", iccid, st.message);
    return (void *)resp;
}

static void drain(void)
{
    if (usage_h_wait_outbox_empty(90000))
        return;
    PGresult *r = pgh_sql(
        "SELECT (SELECT string_agg(key || ' ' || attempts || ' ' || coalesce(last_error, '-'), "
        "'; ' ORDER BY id) FROM usage.outbox), (SELECT string_agg(batch_id || ':' || events, ' ' "
        "ORDER BY processed_at) FROM sims.processed_connectivity_batches), (SELECT "
        "string_agg(iccid || ':' || connectivity_seq, ' ') FROM sims.sims)");
    cr_assert_fail("the outbox did not drain: %s\napplied: %s\nsims: %s", PQgetvalue(r, 0, 0),
                   PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2));
    PQclear(r);
}

/* Asserts the SIM's events are lost/restored alternating, numbered 1..n in
 * order, at the given times (µs, may be NULL), and that sims counts n. */
static void assert_events(const char *iccid, size_t want, const int64_t *at, bool first_lost)
{
    size_t n;
    Onceiot__Sims__V1__SimEvent **ev = events_of(iccid, &n);
    cr_assert_eq(n, want, "SIM %s has %zu connectivity events, not %zu", iccid, n, want);
    for (size_t i = 0; i < n; i++) {
        bool lost = (i % 2 == 0) == first_lost;
        cr_assert_str_eq(ev[i]->event_type, lost ? "connectivity_lost" : "connectivity_restored",
                         "event %zu of %s", i, iccid);
        cr_assert_str_eq(ev[i]->triggered_by, "service:usage");
        double seq = 0;
        for (size_t k = 0; ev[i]->data && k < ev[i]->data->n_fields; k++)
            if (strcmp(ev[i]->data->fields[k]->key, "seq") == 0)
                seq = ev[i]->data->fields[k]->value->number_value;
        cr_assert_eq(seq, (double)(i + 1), "event %zu of %s: seq %g", i, iccid, seq);
        if (at)
            cr_assert_eq(usage_h_ts_us(ev[i]->occurred_at), at[i], "time of event %zu", i);
    }
    char q[200];
    snprintf(q, sizeof(q), "SELECT connectivity_seq FROM sims.sims WHERE iccid = '%s'", iccid);
    cr_assert_eq(usage_h_sql_int(q), (long long)want);
}

Test(usage_connectivity, history_and_latest_state_of_a_sim)
{
    const char *sim = usage_h_sim(1, 1, 0, 0);
    int64_t t = usage_h_now_us() - 3 * HOUR;
    sample_t *v[] = {usage_h_sample(arena, sim, t, true, NULL),
                     usage_h_sample(arena, sim, t + MIN, true, NULL),
                     usage_h_sample(arena, sim, t + 2 * MIN, false, NULL),
                     usage_h_sample(arena, sim, t + 3 * MIN, false, NULL),
                     usage_h_sample(arena, sim, t + 4 * MIN, true, "Vodafone")};
    ingest_ok("hist-1", v, 5);
    state_t *s = state_of(sim);
    cr_assert(s->online);
    cr_assert_eq(usage_h_ts_us(s->since), t + 4 * MIN);
    cr_assert_eq(usage_h_ts_us(s->last_seen), t + 4 * MIN);
    cr_assert_str_eq(s->latest->operator_name, "Vodafone");
    cr_assert_str_eq(s->latest->rat, "LTE");
    cr_assert_str_eq(s->latest->country_code, "DE");
    cr_assert_str_eq(s->latest->cell_id, "cell-4711");
    cr_assert_str_eq(s->latest->apn, "iot.1nce.net");
    cr_assert_eq(s->latest->signal_strength->value, -85);
    cr_assert_eq(s->latest->signal_quality->value, 70);
    cr_assert_eq(s->transitions, 2);

    /* History, newest first, two per page, then a range. */
    principal_t reader = usage_h_reader(1);
    Onceiot__Usage__V1__ListConnectivityRequest req =
        ONCEIOT__USAGE__V1__LIST_CONNECTIVITY_REQUEST__INIT;
    req.iccid = (char *)sim;
    req.page_size = 2;
    int64_t seen[8];
    size_t n_seen = 0;
    for (int page = 0; page < 5; page++) {
        Onceiot__Usage__V1__ListConnectivityResponse *r;
        rpc_status_t st;
        cr_assert_eq(list_conn(&req, &reader, &r, &st), 0, "%s", st.message);
        for (size_t i = 0; i < r->n_samples; i++) {
            cr_assert_lt(n_seen, 8);
            seen[n_seen++] = usage_h_ts_us(r->samples[i]->timestamp);
        }
        if (!r->next_page_token[0])
            break;
        req.page_token = r->next_page_token;
    }
    cr_assert_eq(n_seen, 5);
    for (size_t i = 0; i < 5; i++)
        cr_assert_eq(seen[i], t + (int64_t)(4 - i) * MIN, "sample %zu", i);
    req.page_token = "";
    req.page_size = 0;
    req.start = usage_h_ts(arena, t + MIN);
    req.end = usage_h_ts(arena, t + 3 * MIN);
    Onceiot__Usage__V1__ListConnectivityResponse *r;
    rpc_status_t st;
    cr_assert_eq(list_conn(&req, &reader, &r, &st), 0, "%s", st.message);
    cr_assert_eq(r->n_samples, 2);
    cr_assert_eq(usage_h_ts_us(r->samples[0]->timestamp), t + 2 * MIN);
    cr_assert(!r->samples[0]->connected);
    cr_assert_null(r->samples[0]->signal_strength);
    cr_assert_eq(usage_h_ts_us(r->samples[1]->timestamp), t + MIN);

    /* A page token is bound to its range. */
    req.page_size = 1;
    cr_assert_eq(list_conn(&req, &reader, &r, &st), 0, "%s", st.message);
    req.page_token = r->next_page_token;
    req.start = usage_h_ts(arena, t);
    cr_assert_neq(list_conn(&req, &reader, &r, &st), 0);
    cr_assert_eq(st.code, GRPC_STATUS_INVALID_ARGUMENT);

    /* A SIM without samples has no state. */
    const char *quiet = usage_h_sim(1, 2, 0, 0);
    state_t *none;
    cr_assert_neq(get_state(&reader, quiet, &none, &st), 0);
    cr_assert_eq(st.code, GRPC_STATUS_NOT_FOUND);
}

Test(usage_connectivity, transitions_become_events_once_in_order_and_the_network_follows)
{
    const char *sim = usage_h_sim(1, 10, 0, 0);
    int64_t t = usage_h_now_us() - 2 * HOUR;
    /* Shuffled within the batch: the order is the samples' time. */
    sample_t *b1[] = {usage_h_sample(arena, sim, t + 2 * MIN, false, NULL),
                      usage_h_sample(arena, sim, t, true, NULL),
                      usage_h_sample(arena, sim, t + MIN, true, NULL)};
    ingest_ok("events-1", b1, 3);
    sample_t *b2[] = {usage_h_sample(arena, sim, t + 4 * MIN, false, NULL),
                      usage_h_sample(arena, sim, t + 3 * MIN, true, "Vodafone")};
    ingest_ok("events-2", b2, 2);
    drain();
    int64_t at[] = {t + 2 * MIN, t + 3 * MIN, t + 4 * MIN};
    assert_events(sim, 3, at, true);
    /* The latest sample is disconnected without a network, as was the state
     * before: sims shows none, and was sent none. */
    Onceiot__Sims__V1__Sim *s = sim_of(sim);
    cr_assert_str_eq(s->current_operator, "");
    cr_assert_null(s->network_observed_at);

    /* A replayed batch changes nothing, here or in sims. */
    Onceiot__Usage__V1__IngestConnectivityResponse *r;
    rpc_status_t st;
    cr_assert_eq(ingest("events-1", b1, 3, &r, &st), 0, "%s", st.message);
    cr_assert(r->batches[0]->replayed);
    cr_assert_eq(r->batches[0]->records, 3);
    cr_assert_eq(r->samples, 0);
    cr_assert_eq(r->replayed_batches, 1);

    /* Back online on another network: restored, and GetSim shows it. */
    sample_t *b3[] = {usage_h_sample(arena, sim, t + 5 * MIN, true, "O2")};
    ingest_ok("events-3", b3, 1);
    drain();
    int64_t at3[] = {t + 2 * MIN, t + 3 * MIN, t + 4 * MIN, t + 5 * MIN};
    assert_events(sim, 4, at3, true);
    s = sim_of(sim);
    cr_assert_str_eq(s->current_operator, "O2");
    cr_assert_str_eq(s->current_rat, "LTE");
    cr_assert_str_eq(s->current_country, "DE");
    cr_assert_eq(usage_h_ts_us(s->network_observed_at), t + 5 * MIN);
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM usage.sim_connectivity"), 6);
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM sims.processed_connectivity_batches"), 3);
}

Test(usage_connectivity, a_late_older_sample_never_overwrites_a_newer_state)
{
    const char *sim = usage_h_sim(1, 20, 0, 0);
    int64_t t = usage_h_now_us() - 5 * HOUR;
    sample_t *b1[] = {usage_h_sample(arena, sim, t, true, NULL),
                      usage_h_sample(arena, sim, t + 10 * MIN, false, NULL)};
    ingest_ok("late-1", b1, 2);
    /* Late: older than the state, connected, on another network. */
    sample_t *b2[] = {usage_h_sample(arena, sim, t + 5 * MIN, true, "Late"),
                      usage_h_sample(arena, sim, t + 6 * MIN, true, "Late")};
    ingest_ok("late-2", b2, 2);
    state_t *s = state_of(sim);
    cr_assert(!s->online);
    cr_assert_eq(usage_h_ts_us(s->since), t + 10 * MIN);
    cr_assert_eq(usage_h_ts_us(s->last_seen), t + 10 * MIN);
    cr_assert_eq(s->transitions, 1);
    /* A sample sent again under another batch id stays as first stored. */
    sample_t *b3[] = {usage_h_sample(arena, sim, t, false, NULL)};
    ingest_ok("late-3", b3, 1);
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM usage.sim_connectivity"), 4);
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM usage.sim_connectivity WHERE connected"), 3);
    drain();
    int64_t at[] = {t + 10 * MIN};
    assert_events(sim, 1, at, true);
    Onceiot__Sims__V1__Sim *m = sim_of(sim);
    cr_assert_str_eq(m->current_operator, "");
    cr_assert_null(m->network_observed_at);
}

typedef struct bad_case {
    const char *field; /* the violation expected */
    void (*spoil)(sample_t **v, const char *other);
} bad_case_t;

static void spoil_unknown(sample_t **v, const char *other)
{
    (void)other;
    v[1]->iccid = "8988303999999999999";
}
static void spoil_strength(sample_t **v, const char *other)
{
    (void)other;
    v[1]->signal_strength->value = 5;
}
static void spoil_quality(sample_t **v, const char *other)
{
    (void)other;
    v[1]->signal_quality->value = 101;
}
static void spoil_future(sample_t **v, const char *other)
{
    (void)other;
    v[1]->timestamp = usage_h_ts(arena, usage_h_now_us() + 10 * MIN);
}
static void spoil_old(sample_t **v, const char *other)
{
    (void)other;
    v[1]->timestamp = usage_h_ts(arena, usage_h_now_us() - 181 * DAY);
}
static void spoil_missing_ts(sample_t **v, const char *other)
{
    (void)other;
    v[1]->timestamp = NULL;
}
static void spoil_rat(sample_t **v, const char *other)
{
    (void)other;
    v[1]->rat = "4G";
}
static void spoil_country(sample_t **v, const char *other)
{
    (void)other;
    v[1]->country_code = "deu";
}
static void spoil_mnc(sample_t **v, const char *other)
{
    (void)other;
    v[1]->mcc = "";
}
static void spoil_operator(sample_t **v, const char *other)
{
    (void)other;
    char *op = arena_alloc(arena, 102);
    memset(op, 'x', 101);
    op[101] = '\0';
    v[1]->operator_name = op;
}
static void spoil_duplicate(sample_t **v, const char *other)
{
    (void)other;
    v[1]->timestamp = v[0]->timestamp;
}
static void spoil_iccid(sample_t **v, const char *other)
{
    (void)other;
    v[1]->iccid = "12ab";
}
/* Another organization's SIM is fine for the operator's pipeline: it is
 * the good case, so the batch after it must commit. */
static void spoil_nothing(sample_t **v, const char *other)
{
    v[1]->iccid = (char *)other;
}

Test(usage_connectivity, a_bad_sample_refuses_the_whole_batch_naming_its_field)
{
    const char *sim = usage_h_sim(1, 30, 0, 0);
    const char *other = usage_h_sim(2, 31, 0, 0);
    const bad_case_t cases[] = {
        {"samples[1].iccid", spoil_unknown},
        {"samples[1].signal_strength", spoil_strength},
        {"samples[1].signal_quality", spoil_quality},
        {"samples[1].timestamp", spoil_future},
        {"samples[1].timestamp", spoil_old},
        {"samples[1].timestamp", spoil_missing_ts},
        {"samples[1].rat", spoil_rat},
        {"samples[1].country_code", spoil_country},
        {"samples[1].mnc", spoil_mnc},
        {"samples[1].operator_name", spoil_operator},
        {"samples[1].timestamp", spoil_duplicate},
        {"samples[1].iccid", spoil_iccid},
    };
    int64_t t = usage_h_now_us() - HOUR;
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        sample_t *v[] = {usage_h_sample(arena, sim, t, true, NULL),
                         usage_h_sample(arena, sim, t + SEC, true, NULL),
                         usage_h_sample(arena, sim, t + 2 * SEC, false, NULL)};
        cases[c].spoil(v, other);
        const char *id = arena_printf(arena, "bad-%zu", c);
        rpc_status_t st;
        cr_assert_neq(ingest(id, v, 3, NULL, &st), 0, "case %zu was accepted", c);
        cr_assert_eq(st.code, GRPC_STATUS_INVALID_ARGUMENT, "case %zu: %s", c, st.message);
        cr_assert(usage_h_violation(arena, &st, cases[c].field), "case %zu: %s does not name %s", c,
                  st.message, cases[c].field);
    }
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM usage.sim_connectivity"), 0);
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM usage.sim_connectivity_state"), 0);
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM usage.ingested_connectivity_batches"), 0);
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM usage.outbox"), 0);

    /* The batch shape itself: an empty or over-long id, no samples, too many. */
    sample_t *one[] = {usage_h_sample(arena, sim, t, true, NULL)};
    rpc_status_t st;
    cr_assert_neq(ingest("", one, 1, NULL, &st), 0);
    cr_assert(usage_h_violation(arena, &st, "batch_id"), "%s", st.message);
    char long_id[130];
    memset(long_id, 'b', 129);
    long_id[129] = '\0';
    cr_assert_neq(ingest(long_id, one, 1, NULL, &st), 0);
    cr_assert(usage_h_violation(arena, &st, "batch_id"), "%s", st.message);
    cr_assert_neq(ingest("empty", one, 0, NULL, &st), 0);
    cr_assert(usage_h_violation(arena, &st, "samples"), "%s", st.message);
    size_t big = 10001;
    sample_t **many = arena_alloc(arena, big * sizeof(*many));
    for (size_t i = 0; i < big; i++)
        many[i] = usage_h_sample(arena, sim, t - (int64_t)i * SEC, false, NULL);
    cr_assert_neq(ingest("big", many, big, NULL, &st), 0);
    cr_assert(usage_h_violation(arena, &st, "samples"), "%s", st.message);

    /* A customer may not ingest (the gateway refuses it first; usage too). */
    principal_t reader = usage_h_reader(1);
    const char *id = "customer";
    size_t n1 = 1;
    sample_t **b = one;
    cr_assert_neq(usage_h_ingest_conn(arena, &reader, &id, &b, &n1, 1, NULL, &st), 0);
    cr_assert_eq(st.code, GRPC_STATUS_PERMISSION_DENIED, "%s", st.message);

    /* The good case commits (the pipeline writes any organization's SIM). */
    sample_t *v[] = {usage_h_sample(arena, sim, t, true, NULL),
                     usage_h_sample(arena, sim, t + SEC, true, NULL),
                     usage_h_sample(arena, sim, t + 2 * SEC, false, NULL)};
    spoil_nothing(v, other);
    ingest_ok("good", v, 3);
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM usage.sim_connectivity"), 3);
}

Test(usage_connectivity, another_organizations_sim_is_not_found)
{
    const char *mine = usage_h_sim(1, 40, 0, 0);
    const char *theirs = usage_h_sim(2, 41, 0, 0);
    int64_t t = usage_h_now_us() - 3 * HOUR;
    sample_t *v[] = {usage_h_sample(arena, mine, t, false, NULL),
                     usage_h_sample(arena, theirs, t, false, NULL)};
    ingest_ok("tenants-1", v, 2);
    principal_t reader2 = usage_h_reader(2);
    state_t *s;
    rpc_status_t st;
    cr_assert_neq(get_state(&reader2, mine, &s, &st), 0);
    cr_assert_eq(st.code, GRPC_STATUS_NOT_FOUND, "%s", st.message);
    cr_assert_eq(get_state(&reader2, theirs, &s, &st), 0, "%s", st.message);
    Onceiot__Usage__V1__ListConnectivityRequest lr =
        ONCEIOT__USAGE__V1__LIST_CONNECTIVITY_REQUEST__INIT;
    lr.iccid = (char *)mine;
    Onceiot__Usage__V1__ListConnectivityResponse *l;
    cr_assert_neq(list_conn(&lr, &reader2, &l, &st), 0);
    cr_assert_eq(st.code, GRPC_STATUS_NOT_FOUND, "%s", st.message);

    /* The offline list holds the caller's SIMs only; another organization's
     * list is for the operator's staff. */
    Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
    d.seconds = 3600;
    Onceiot__Usage__V1__ListOfflineSimsRequest req =
        ONCEIOT__USAGE__V1__LIST_OFFLINE_SIMS_REQUEST__INIT;
    req.offline_for = &d;
    Onceiot__Usage__V1__ListOfflineSimsResponse *r;
    cr_assert_eq(list_offline(&req, &reader2, &r, &st), 0, "%s", st.message);
    cr_assert_eq(r->n_sims, 1);
    cr_assert_str_eq(r->sims[0]->iccid, theirs);
    req.organization_id = 1;
    cr_assert_neq(list_offline(&req, &reader2, &r, &st), 0);
    cr_assert_eq(st.code, GRPC_STATUS_PERMISSION_DENIED, "%s", st.message);
    principal_t op = usage_h_operator();
    cr_assert_eq(list_offline(&req, &op, &r, &st), 0, "%s", st.message);
    cr_assert_eq(r->n_sims, 1);
    cr_assert_str_eq(r->sims[0]->iccid, mine);
}

Test(usage_connectivity, offline_sims_longer_than_a_duration_page_by_page)
{
    int64_t now = usage_h_now_us();
    const char *sims[6];
    sample_t *v[12];
    size_t n = 0;
    /* SIM k went offline (k + 1) * 30 + 1 minutes ago, after being online;
     * SIM 5 is online. */
    for (int k = 0; k < 6; k++) {
        sims[k] = usage_h_sim(1, 50 + k, 0, 0);
        int64_t off = now - ((k + 1) * 30 + 1) * MIN;
        v[n++] = usage_h_sample(arena, sims[k], off - MIN, true, NULL);
        v[n++] = usage_h_sample(arena, sims[k], off, k == 5, NULL);
    }
    const char *other = usage_h_sim(2, 60, 0, 0);
    sample_t *w[] = {usage_h_sample(arena, other, now - 10 * HOUR, false, NULL)};
    ingest_ok("offline-1", v, n);
    ingest_ok("offline-2", w, 1);
    Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
    d.seconds = 3600;
    Onceiot__Usage__V1__ListOfflineSimsRequest req =
        ONCEIOT__USAGE__V1__LIST_OFFLINE_SIMS_REQUEST__INIT;
    req.offline_for = &d;
    req.page_size = 2;
    principal_t reader = usage_h_reader(1);
    const char *got[8];
    size_t n_got = 0;
    for (int page = 0; page < 5; page++) {
        Onceiot__Usage__V1__ListOfflineSimsResponse *r;
        rpc_status_t st;
        cr_assert_eq(list_offline(&req, &reader, &r, &st), 0, "%s", st.message);
        for (size_t i = 0; i < r->n_sims; i++) {
            cr_assert_lt(n_got, 8);
            cr_assert_eq(r->sims[i]->organization_id, 1);
            got[n_got++] = r->sims[i]->iccid;
        }
        if (!r->next_page_token[0])
            break;
        req.page_token = r->next_page_token;
    }
    /* Offline longer than an hour: SIMs 1..4 (61..151 minutes), longest first. */
    cr_assert_eq(n_got, 4);
    for (size_t i = 0; i < 4; i++)
        cr_assert_str_eq(got[i], sims[4 - i], "position %zu", i);

    /* Bad input. */
    Onceiot__Usage__V1__ListOfflineSimsResponse *r;
    rpc_status_t st;
    req.page_token = "";
    req.offline_for = NULL;
    cr_assert_neq(list_offline(&req, &reader, &r, &st), 0);
    cr_assert(usage_h_violation(arena, &st, "offline_for"), "%s", st.message);
    d.seconds = -5;
    req.offline_for = &d;
    cr_assert_neq(list_offline(&req, &reader, &r, &st), 0);
    cr_assert(usage_h_violation(arena, &st, "offline_for"), "%s", st.message);
    d.seconds = 3600;
    req.page_size = 5000;
    cr_assert_neq(list_offline(&req, &reader, &r, &st), 0);
    cr_assert_eq(st.code, GRPC_STATUS_INVALID_ARGUMENT);
    req.page_size = 0;
    req.page_token = "garbage";
    cr_assert_neq(list_offline(&req, &reader, &r, &st), 0);
    cr_assert(usage_h_violation(arena, &st, "page_token"), "%s", st.message);
}

/* Transitions of SIMs made by the test, one batch per call: each batch flips
 * every SIM once (two samples: still in the old state, then the new one). */
typedef struct flips {
    const char *sims[3];
    int64_t t;   /* time of the next sample */
    int batches; /* batches sent */
    bool online; /* the state every SIM is in */
    int64_t *at; /* times of the transitions (the same for every SIM) */
    size_t n_at;
} flips_t;

static void flip(flips_t *f, const char *prefix)
{
    sample_t *v[6];
    for (int s = 0; s < 3; s++) {
        v[2 * s] = usage_h_sample(arena, f->sims[s], f->t, f->online, NULL);
        v[2 * s + 1] = usage_h_sample(arena, f->sims[s], f->t + SEC, !f->online, NULL);
    }
    f->at[f->n_at++] = f->t + SEC;
    f->online = !f->online;
    f->t += MIN;
    ingest_ok(arena_printf(arena, "%s-%d", prefix, f->batches++), v, 6);
}

static void make_flips(flips_t *f, long long base)
{
    memset(f, 0, sizeof(*f));
    for (int s = 0; s < 3; s++)
        f->sims[s] = usage_h_sim(1 + s % 2, base + s, 0, 0);
    f->t = usage_h_now_us() - 4 * HOUR;
    f->online = true;
    f->at = arena_alloc(arena, 64 * sizeof(int64_t));
}

/* The first batch's first sample sets the state without an event, so the
 * events are every flip, starting with a loss. */
static void assert_flips(const flips_t *f)
{
    drain();
    for (int s = 0; s < 3; s++)
        assert_events(f->sims[s], f->n_at, f->at, true);
}

Test(usage_connectivity, events_exactly_once_across_kill_9_of_usage)
{
    flips_t f;
    make_flips(&f, 100);
    flip(&f, "kill");
    drain();
    /* A frozen sims holds the dispatcher inside ApplyConnectivity with its
     * rows leased; usage dies there; sims then runs whatever reached it. */
    usage_h_freeze_sims();
    for (int b = 0; b < 4; b++)
        flip(&f, "kill");
    usage_h_kill_usage_while_leased();
    /* And killed again at random moments while it delivers. */
    for (int round = 0; round < 3; round++) {
        for (int b = 0; b < 4; b++)
            flip(&f, "kill");
        usleep((useconds_t)(rand() % 40000));
        usage_h_restart_usage(SIGKILL);
    }
    assert_flips(&f);
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM sims.processed_connectivity_batches"),
                 f.batches);
}

Test(usage_connectivity, events_wait_while_sims_is_down_and_arrive_in_order)
{
    flips_t f;
    make_flips(&f, 200);
    flip(&f, "down");
    drain();
    usage_h_stop_sims();
    for (int b = 0; b < 5; b++)
        flip(&f, "down"); /* cached ICCIDs: ingest goes on without sims */
    sleep(1);
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM usage.outbox"), 5);
    usage_h_start_sims();
    assert_flips(&f);
    Onceiot__Sims__V1__Sim *s = sim_of(f.sims[0]);
    cr_assert_str_eq(s->current_operator, f.online ? "Telekom" : "");
}

/* ---- concurrent batches of the same SIMs ---- */

/* A writer thread: its SIMs, and for the new-SIM rounds below, each
 * round's new SIMs and the barrier that starts it. */
typedef struct writer {
    const char *const *sims;
    const char *(*fresh)[4];
    pthread_barrier_t *go;
    int id;
    arena_t *a;
    int failures;
    char first[200];
} writer_t;

static void *write_batches(void *p)
{
    writer_t *w = p;
    principal_t who = usage_h_writer();
    unsigned seed = (unsigned)w->id * 7919u + 1;
    int64_t base = usage_h_now_us() - 2 * HOUR;
    for (int b = 0; b < 8; b++) {
        sample_t *v[12];
        for (int i = 0; i < 12; i++) {
            /* Distinct instants per writer, random order and states. */
            int64_t us = base + ((int64_t)(rand_r(&seed) % 100000) * 8 + w->id) * 1000;
            v[i] = usage_h_sample(w->a, w->sims[i % 4], us, rand_r(&seed) % 2, NULL);
            for (int k = 0; k < i; k++)
                if (k % 4 == i % 4 && usage_h_ts_us(v[k]->timestamp) == us)
                    v[i]->timestamp = usage_h_ts(w->a, us + 8000000);
        }
        const char *id = arena_printf(w->a, "conc-%d-%d", w->id, b);
        size_t n = 12;
        sample_t **vv = v;
        rpc_status_t st;
        if (usage_h_ingest_conn(w->a, &who, &id, &vv, &n, 1, NULL, &st) != 0 && w->failures++ == 0)
            snprintf(w->first, sizeof(w->first), "%s", st.message);
    }
    return NULL;
}

Test(usage_connectivity, concurrent_batches_keep_the_state_exact_and_the_events_in_order)
{
    const char *sims[4];
    for (int s = 0; s < 4; s++)
        sims[s] = usage_h_sim(1, 300 + s, 0, 0);
    /* Resolve the ICCIDs once so the writers race on the tables only. */
    sample_t *warm[4];
    for (int s = 0; s < 4; s++)
        warm[s] = usage_h_sample(arena, sims[s], usage_h_now_us() - 3 * HOUR, true, NULL);
    ingest_ok("conc-warm", warm, 4);
    writer_t w[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (writer_t){.sims = sims, .id = i, .a = sims_h_thread_arena()};
        pthread_create(&th[i], NULL, write_batches, &w[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(w[i].failures, 0, "writer %d: %s", i, w[i].first);
    /* Every state is the newest sample of its SIM. */
    cr_assert_eq(
        usage_h_sql_int("SELECT count(*) FROM usage.sim_connectivity_state s JOIN LATERAL "
                        "(SELECT * FROM usage.sim_connectivity c WHERE c.sim_id = s.sim_id "
                        "ORDER BY \"timestamp\" DESC LIMIT 1) c ON true "
                        "WHERE c.\"timestamp\" = s.last_seen AND c.connected = s.connected"),
        4);
    drain();
    /* Events alternate, numbered without gaps, as many as the state counts. */
    for (int s = 0; s < 4; s++) {
        state_t *st = state_of(sims[s]);
        size_t n;
        Onceiot__Sims__V1__SimEvent **ev = events_of(sims[s], &n);
        cr_assert_eq((int64_t)n, st->transitions, "SIM %d", s);
        if (n > 0)
            assert_events(sims[s], n, NULL, true);
        for (size_t i = 1; i < n; i++)
            cr_assert_geq(usage_h_ts_us(ev[i]->occurred_at), usage_h_ts_us(ev[i - 1]->occurred_at));
    }
}

/* ---- concurrent first batches of new SIMs ---- */

#define NEW_ROUNDS 6

/* Each round, one batch of the 4 known SIMs and that round's 4 new ones, in
 * an order of this writer's, sent with the other writers' at once: each
 * first finds SIMs without a state row, and all create them together while
 * they hold the known SIMs' rows. */
static void *write_new_sims(void *p)
{
    writer_t *w = p;
    principal_t who = usage_h_writer();
    unsigned seed = (unsigned)w->id * 104729u + 3;
    int64_t base = usage_h_now_us() - 2 * HOUR;
    for (int r = 0; r < NEW_ROUNDS; r++) {
        sample_t *v[8];
        for (int i = 0; i < 8; i++) {
            int k = (i + w->id) % 8; /* every writer starts elsewhere */
            const char *iccid = k < 4 ? w->sims[k] : w->fresh[r][k - 4];
            /* Distinct instants per writer and round. */
            int64_t us = base + ((int64_t)r * 40 + w->id * 8 + i) * 1000000;
            v[i] = usage_h_sample(w->a, iccid, us, rand_r(&seed) % 2, NULL);
        }
        const char *id = arena_printf(w->a, "new-%d-%d", w->id, r);
        size_t n = 8;
        sample_t **vv = v;
        rpc_status_t st;
        pthread_barrier_wait(w->go);
        if (usage_h_ingest_conn(w->a, &who, &id, &vv, &n, 1, NULL, &st) != 0 && w->failures++ == 0)
            snprintf(w->first, sizeof(w->first), "round %d: %s", r, st.message);
    }
    return NULL;
}

Test(usage_connectivity, concurrent_first_batches_of_new_sims_create_each_state_once)
{
    const char *known[4], *fresh[NEW_ROUNDS][4];
    sample_t *warm[4];
    for (int s = 0; s < 4; s++) {
        known[s] = usage_h_sim(1, 500 + s, 0, 0);
        warm[s] = usage_h_sample(arena, known[s], usage_h_now_us() - 3 * HOUR, true, NULL);
    }
    for (int r = 0; r < NEW_ROUNDS; r++)
        for (int s = 0; s < 4; s++)
            fresh[r][s] = usage_h_sim(1, 600 + r * 4 + s, 0, 0);
    ingest_ok("new-warm", warm, 4);
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 4);
    writer_t w[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (writer_t){
            .sims = known, .fresh = fresh, .go = &go, .id = i, .a = sims_h_thread_arena()};
        pthread_create(&th[i], NULL, write_new_sims, &w[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&go);
    /* No batch deadlocked or failed; each SIM has one state, its newest sample. */
    for (int i = 0; i < 4; i++)
        cr_assert_eq(w[i].failures, 0, "writer %d: %s", i, w[i].first);
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM usage.sim_connectivity"),
                 4 + 4 * NEW_ROUNDS * 8);
    cr_assert_eq(
        usage_h_sql_int("SELECT count(*) FROM usage.sim_connectivity_state s JOIN LATERAL "
                        "(SELECT * FROM usage.sim_connectivity c WHERE c.sim_id = s.sim_id "
                        "ORDER BY \"timestamp\" DESC LIMIT 1) c ON true "
                        "WHERE c.\"timestamp\" = s.last_seen AND c.connected = s.connected"),
        4 + 4 * NEW_ROUNDS);
    drain();
    /* Each SIM's events alternate, numbered without gaps, as the state counts. */
    for (int s = 0; s < 4 + 4 * NEW_ROUNDS; s++) {
        const char *iccid = s < 4 ? known[s] : fresh[(s - 4) / 4][(s - 4) % 4];
        state_t *st = state_of(iccid);
        size_t n;
        Onceiot__Sims__V1__SimEvent **ev = events_of(iccid, &n);
        cr_assert_eq((int64_t)n, st->transitions, "SIM %s", iccid);
        if (n > 0)
            assert_events(iccid, n, NULL, strcmp(ev[0]->event_type, "connectivity_lost") == 0);
    }
}

Test(usage_connectivity, a_watcher_sees_lost_and_restored_live_in_order)
{
    const char *sim = usage_h_sim(3, 400, 0, 0);
    int64_t t = usage_h_now_us() - HOUR;
    sample_t *first[] = {usage_h_sample(arena, sim, t, true, NULL)};
    ingest_ok("watch-0", first, 1);
    rpc_stream_t *s = usage_h_watch(arena, 3, sim, "connectivity");
    cr_assert_eq(rpc_stream_headers(s), 0, "the subscription took effect");
    /* Two batches, each with a loss and a restoration. */
    for (int b = 0; b < 2; b++) {
        sample_t *v[] = {usage_h_sample(arena, sim, t + (2 * b + 1) * MIN, false, NULL),
                         usage_h_sample(arena, sim, t + (2 * b + 2) * MIN, true, NULL)};
        ingest_ok(arena_printf(arena, "watch-%d", b + 1), v, 2);
    }
    for (int i = 0; i < 4; i++) {
        ProtobufCMessage *m;
        rpc_status_t st;
        if (rpc_stream_recv(s, &onceiot__sims__v1__sim_event__descriptor, &m) != 1) {
            rpc_stream_finish(s, &st);
            cr_assert_fail("event %d: the stream ended: %s", i, st.message);
        }
        const Onceiot__Sims__V1__SimEvent *e = (const void *)m;
        cr_assert_str_eq(e->iccid, sim);
        cr_assert_str_eq(e->event_type, i % 2 ? "connectivity_restored" : "connectivity_lost",
                         "event %d in order", i);
        cr_assert_eq(usage_h_ts_us(e->occurred_at), t + (i + 1) * MIN);
    }
    rpc_stream_cancel(s);
    rpc_status_t st;
    rpc_stream_finish(s, &st);
}

Test(usage_connectivity, bad_query_input_is_invalid_argument_naming_the_field)
{
    const char *sim = usage_h_sim(1, 500, 0, 0);
    sample_t *v[] = {usage_h_sample(arena, sim, usage_h_now_us() - HOUR, true, NULL)};
    ingest_ok("query-bad", v, 1);
    principal_t reader = usage_h_reader(1);
    state_t *s;
    rpc_status_t st;
    cr_assert_neq(get_state(&reader, "12ab", &s, &st), 0);
    cr_assert(usage_h_violation(arena, &st, "iccid"), "%s", st.message);
    cr_assert_neq(get_state(&reader, "", &s, &st), 0);
    cr_assert(usage_h_violation(arena, &st, "iccid"), "%s", st.message);

    Onceiot__Usage__V1__ListConnectivityRequest req =
        ONCEIOT__USAGE__V1__LIST_CONNECTIVITY_REQUEST__INIT;
    Onceiot__Usage__V1__ListConnectivityResponse *r;
    req.iccid = "12ab";
    cr_assert_neq(list_conn(&req, &reader, &r, &st), 0);
    cr_assert(usage_h_violation(arena, &st, "iccid"), "%s", st.message);
    req.iccid = (char *)sim;
    req.start = usage_h_ts(arena, usage_h_now_us());
    req.end = usage_h_ts(arena, usage_h_now_us() - HOUR);
    cr_assert_neq(list_conn(&req, &reader, &r, &st), 0);
    cr_assert(usage_h_violation(arena, &st, "end"), "%s", st.message);
    req.start = req.end = NULL;
    req.page_size = 1001;
    cr_assert_neq(list_conn(&req, &reader, &r, &st), 0);
    cr_assert(usage_h_violation(arena, &st, "page_size"), "%s", st.message);
    req.page_size = 0;
    req.page_token = "not-a-token";
    cr_assert_neq(list_conn(&req, &reader, &r, &st), 0);
    cr_assert(usage_h_violation(arena, &st, "page_token"), "%s", st.message);
    /* A token of another SIM's list is refused, not read as this one's. */
    const char *other = usage_h_sim(1, 501, 0, 0);
    sample_t *w[] = {usage_h_sample(arena, other, usage_h_now_us() - HOUR, true, NULL),
                     usage_h_sample(arena, other, usage_h_now_us() - HOUR + SEC, true, NULL)};
    ingest_ok("query-bad-2", w, 2);
    req.iccid = (char *)other;
    req.page_token = "";
    req.page_size = 1;
    cr_assert_eq(list_conn(&req, &reader, &r, &st), 0, "%s", st.message);
    cr_assert(r->next_page_token[0]);
    req.iccid = (char *)sim;
    req.page_token = r->next_page_token;
    cr_assert_neq(list_conn(&req, &reader, &r, &st), 0);
    cr_assert(usage_h_violation(arena, &st, "page_token"), "%s", st.message);
}
