/* Connectivity: samples ingested in batches (idempotent, all or nothing),
 * each SIM's latest state kept exact whatever order samples arrive in, its
 * history page by page, the fleet's SIMs offline longer than a duration,
 * tenant isolation, and the lost/restored events and current network that
 * reach sims. Their delivery under faults and concurrent batches:
 * test_usage_connectivity_events.c. Real onceiot-sims and onceiot-usage
 * processes on the test PostgreSQL. */
#include "google/protobuf/duration.pb-c.h"
#include "pg_harness.h"
#include "usage_harness.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEC  1000000LL
#define MIN  (60 * SEC)
#define HOUR (60 * MIN)
#define DAY  (24 * HOUR)

typedef usage_sample_t sample_t;
typedef Onceiot__Usage__V1__ConnectivityState state_t;

USAGE_H_SUITE(usage_connectivity);

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

Test(usage_connectivity, history_and_latest_state_of_a_sim)
{
    const char *sim = usage_h_sim(1, 1, 0, 0);
    int64_t t = usage_h_now_us() - 3 * HOUR;
    sample_t *v[] = {usage_h_sample(arena, sim, t, true, NULL),
                     usage_h_sample(arena, sim, t + MIN, true, NULL),
                     usage_h_sample(arena, sim, t + 2 * MIN, false, NULL),
                     usage_h_sample(arena, sim, t + 3 * MIN, false, NULL),
                     usage_h_sample(arena, sim, t + 4 * MIN, true, "Vodafone")};
    usage_h_conn_ingest_ok("hist-1", v, 5);
    state_t *s = usage_h_conn_state(sim);
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
    cr_assert_neq(usage_h_conn_get(&reader, quiet, &none, &st), 0);
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
    usage_h_conn_ingest_ok("events-1", b1, 3);
    sample_t *b2[] = {usage_h_sample(arena, sim, t + 4 * MIN, false, NULL),
                      usage_h_sample(arena, sim, t + 3 * MIN, true, "Vodafone")};
    usage_h_conn_ingest_ok("events-2", b2, 2);
    usage_h_drain();
    int64_t at[] = {t + 2 * MIN, t + 3 * MIN, t + 4 * MIN};
    usage_h_assert_conn_events(sim, 3, at, true);
    /* The latest sample is disconnected without a network, as was the state
     * before: sims shows none, and was sent none. */
    Onceiot__Sims__V1__Sim *s = usage_h_sim_of(sim);
    cr_assert_str_eq(s->current_operator, "");
    cr_assert_null(s->network_observed_at);

    /* A replayed batch changes nothing, here or in sims. */
    Onceiot__Usage__V1__IngestConnectivityResponse *r;
    rpc_status_t st;
    cr_assert_eq(usage_h_conn_ingest("events-1", b1, 3, &r, &st), 0, "%s", st.message);
    cr_assert(r->batches[0]->replayed);
    cr_assert_eq(r->batches[0]->records, 3);
    cr_assert_eq(r->samples, 0);
    cr_assert_eq(r->replayed_batches, 1);

    /* Back online on another network: restored, and GetSim shows it. */
    sample_t *b3[] = {usage_h_sample(arena, sim, t + 5 * MIN, true, "O2")};
    usage_h_conn_ingest_ok("events-3", b3, 1);
    usage_h_drain();
    int64_t at3[] = {t + 2 * MIN, t + 3 * MIN, t + 4 * MIN, t + 5 * MIN};
    usage_h_assert_conn_events(sim, 4, at3, true);
    s = usage_h_sim_of(sim);
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
    usage_h_conn_ingest_ok("late-1", b1, 2);
    /* Late: older than the state, connected, on another network. */
    sample_t *b2[] = {usage_h_sample(arena, sim, t + 5 * MIN, true, "Late"),
                      usage_h_sample(arena, sim, t + 6 * MIN, true, "Late")};
    usage_h_conn_ingest_ok("late-2", b2, 2);
    state_t *s = usage_h_conn_state(sim);
    cr_assert(!s->online);
    cr_assert_eq(usage_h_ts_us(s->since), t + 10 * MIN);
    cr_assert_eq(usage_h_ts_us(s->last_seen), t + 10 * MIN);
    cr_assert_eq(s->transitions, 1);
    /* A sample sent again under another batch id stays as first stored. */
    sample_t *b3[] = {usage_h_sample(arena, sim, t, false, NULL)};
    usage_h_conn_ingest_ok("late-3", b3, 1);
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM usage.sim_connectivity"), 4);
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM usage.sim_connectivity WHERE connected"), 3);
    usage_h_drain();
    int64_t at[] = {t + 10 * MIN};
    usage_h_assert_conn_events(sim, 1, at, true);
    Onceiot__Sims__V1__Sim *m = usage_h_sim_of(sim);
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
        cr_assert_neq(usage_h_conn_ingest(id, v, 3, NULL, &st), 0, "case %zu was accepted", c);
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
    cr_assert_neq(usage_h_conn_ingest("", one, 1, NULL, &st), 0);
    cr_assert(usage_h_violation(arena, &st, "batch_id"), "%s", st.message);
    char long_id[130];
    memset(long_id, 'b', 129);
    long_id[129] = '\0';
    cr_assert_neq(usage_h_conn_ingest(long_id, one, 1, NULL, &st), 0);
    cr_assert(usage_h_violation(arena, &st, "batch_id"), "%s", st.message);
    cr_assert_neq(usage_h_conn_ingest("empty", one, 0, NULL, &st), 0);
    cr_assert(usage_h_violation(arena, &st, "samples"), "%s", st.message);
    size_t big = 10001;
    sample_t **many = arena_alloc(arena, big * sizeof(*many));
    for (size_t i = 0; i < big; i++)
        many[i] = usage_h_sample(arena, sim, t - (int64_t)i * SEC, false, NULL);
    cr_assert_neq(usage_h_conn_ingest("big", many, big, NULL, &st), 0);
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
    usage_h_conn_ingest_ok("good", v, 3);
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM usage.sim_connectivity"), 3);
}

Test(usage_connectivity, another_organizations_sim_is_not_found)
{
    const char *mine = usage_h_sim(1, 40, 0, 0);
    const char *theirs = usage_h_sim(2, 41, 0, 0);
    int64_t t = usage_h_now_us() - 3 * HOUR;
    sample_t *v[] = {usage_h_sample(arena, mine, t, false, NULL),
                     usage_h_sample(arena, theirs, t, false, NULL)};
    usage_h_conn_ingest_ok("tenants-1", v, 2);
    principal_t reader2 = usage_h_reader(2);
    state_t *s;
    rpc_status_t st;
    cr_assert_neq(usage_h_conn_get(&reader2, mine, &s, &st), 0);
    cr_assert_eq(st.code, GRPC_STATUS_NOT_FOUND, "%s", st.message);
    cr_assert_eq(usage_h_conn_get(&reader2, theirs, &s, &st), 0, "%s", st.message);
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
    usage_h_conn_ingest_ok("offline-1", v, n);
    usage_h_conn_ingest_ok("offline-2", w, 1);
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

Test(usage_connectivity, bad_query_input_is_invalid_argument_naming_the_field)
{
    const char *sim = usage_h_sim(1, 500, 0, 0);
    sample_t *v[] = {usage_h_sample(arena, sim, usage_h_now_us() - HOUR, true, NULL)};
    usage_h_conn_ingest_ok("query-bad", v, 1);
    principal_t reader = usage_h_reader(1);
    state_t *s;
    rpc_status_t st;
    cr_assert_neq(usage_h_conn_get(&reader, "12ab", &s, &st), 0);
    cr_assert(usage_h_violation(arena, &st, "iccid"), "%s", st.message);
    cr_assert_neq(usage_h_conn_get(&reader, "", &s, &st), 0);
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
    usage_h_conn_ingest_ok("query-bad-2", w, 2);
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
