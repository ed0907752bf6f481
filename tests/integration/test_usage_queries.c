/* The usage queries over a known set of records: per-SIM hours, days and
 * months, raw records page by page, the fleet per day and month (grouped by
 * country or network, with exact distinct SIM counts), top SIMs, the ingest
 * status, tenant isolation of each, every bad input, and retention dropping
 * an old partition while the rollups stay. Real onceiot-sims and
 * onceiot-usage processes on the test PostgreSQL. */
#include "pg_harness.h"
#include "usage_harness.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define HOUR  (3600LL * 1000000)
#define DAY   (24 * HOUR)
#define GHOUR ONCEIOT__USAGE__V1__GRANULARITY__GRANULARITY_HOUR
#define GDAY  ONCEIOT__USAGE__V1__GRANULARITY__GRANULARITY_DAY
#define GMON  ONCEIOT__USAGE__V1__GRANULARITY__GRANULARITY_MONTH

typedef Onceiot__Usage__V1__GetSimUsageResponse sim_usage_t;
typedef Onceiot__Usage__V1__ListUsageRecordsResponse records_t;
typedef Onceiot__Usage__V1__GetFleetUsageResponse fleet_t;
typedef Onceiot__Usage__V1__ListTopSimsResponse top_t;

/* Compaction off: these tests look at the raw partitions (test_usage_compact
 * covers the compacted form). */
static const char *const env[] = {"ONCEIOT_USAGE_MAINTENANCE_S=1",
                                  "ONCEIOT_USAGE_COMPACT_AFTER_DAYS=0", NULL};
static arena_t *arena;
static const char *s1, *s2, *s3; /* organizations 1, 1, 2 */
static int64_t day0;             /* 10 days ago, 00:00 UTC */
static principal_t reader1, reader2, op;

static void setup(void)
{
    usage_h_start(env);
    arena = sims_h_thread_arena();
    s1 = usage_h_sim(1, 1, 1000000000, 1000);
    s2 = usage_h_sim(1, 2, 1000000000, 1000);
    s3 = usage_h_sim(2, 3, 1000000000, 1000);
    reader1 = usage_h_reader(1);
    reader2 = usage_h_reader(2);
    op = usage_h_operator();
    day0 = (usage_h_now_us() / DAY - 10) * DAY;
    usage_rec_t *recs[] = {
        usage_h_rec(arena, s1, day0 + HOUR, 100, 10, 1, 0, "DE", "262", "01"),
        usage_h_rec(arena, s1, day0 + HOUR + 30 * 60 * 1000000LL, 50, 5, 0, 0, "DE", "262", "02"),
        usage_h_rec(arena, s1, day0 + 5 * HOUR, 200, 0, 0, 0, "FR", "208", "10"),
        usage_h_rec(arena, s1, day0 + DAY, 1000, 0, 0, 0, NULL, NULL, NULL),
        usage_h_rec(arena, s1, day0 - 40 * DAY, 5000, 0, 0, 0, NULL, NULL, NULL),
        usage_h_rec(arena, s2, day0 + 2 * HOUR, 10, 0, 0, 3, "DE", "262", "01"),
        usage_h_rec(arena, s2, day0 + DAY + 3 * HOUR, 20, 0, 0, 0, "DE", "262", "01"),
        usage_h_rec(arena, s3, day0 + HOUR, 7, 0, 0, 0, "DE", "262", "01"),
    };
    /* Two batches, so the organization's day has deltas from both. */
    Onceiot__Usage__V1__BatchResult *r;
    rpc_status_t st;
    cr_assert_eq(usage_h_ingest(arena, "fixture-1", recs, 4, &r, &st), 0, "%s", st.message);
    cr_assert_eq(usage_h_ingest(arena, "fixture-2", recs + 4, 4, &r, &st), 0, "%s", st.message);
}

static void teardown(void)
{
    usage_h_stop();
}

TestSuite(usage_queries, .init = setup, .fini = teardown, .timeout = 120);

static Google__Protobuf__Timestamp *ts(int64_t us)
{
    Google__Protobuf__Timestamp *t = arena_alloc(arena, sizeof(*t));
    google__protobuf__timestamp__init(t);
    t->seconds = us / 1000000;
    t->nanos = (int32_t)(us % 1000000) * 1000;
    return t;
}

static int sim_usage(const principal_t *who, const char *iccid, int g, int64_t from, int64_t to,
                     sim_usage_t **out, rpc_status_t *st)
{
    Onceiot__Usage__V1__GetSimUsageRequest req = ONCEIOT__USAGE__V1__GET_SIM_USAGE_REQUEST__INIT;
    req.iccid = (char *)iccid;
    req.granularity = g;
    req.start = from ? ts(from) : NULL;
    req.end = to ? ts(to) : NULL;
    return usage_h_call("GetSimUsage", &req.base,
                        &onceiot__usage__v1__get_sim_usage_response__descriptor, who, arena, out,
                        st);
}

static void expect_violation(int rc, const rpc_status_t *st, const char *field)
{
    cr_assert_lt(rc, 0);
    cr_assert_eq(st->code, GRPC_STATUS_INVALID_ARGUMENT, "%s", st->message);
    cr_assert(usage_h_violation(arena, st, field), "no violation on %s: %s", field, st->message);
}

Test(usage_queries, a_sims_usage_per_hour_day_and_month)
{
    sim_usage_t *u;
    rpc_status_t st;
    cr_assert_eq(sim_usage(&reader1, s1, GHOUR, day0 + 10, day0 + DAY, &u, &st), 0, "%s",
                 st.message);
    cr_assert_eq(u->n_buckets, 2);
    cr_assert_eq(u->buckets[0]->start->seconds, (day0 + HOUR) / 1000000);
    cr_assert_eq(u->buckets[0]->totals->volume_rx, 150);
    cr_assert_eq(u->buckets[0]->totals->total_volume, 165);
    cr_assert_eq(u->buckets[0]->totals->records, 2);
    cr_assert_eq(u->buckets[1]->totals->volume_rx, 200);
    cr_assert_eq(u->totals->total_volume, 365);

    cr_assert_eq(sim_usage(&reader1, s1, GDAY, day0 - 41 * DAY, day0 + 2 * DAY, &u, &st), 0);
    cr_assert_eq(u->n_buckets, 3);
    cr_assert_eq(u->buckets[0]->totals->volume_rx, 5000);
    cr_assert_eq(u->buckets[1]->start->seconds, day0 / 1000000);
    cr_assert_eq(u->buckets[1]->totals->total_volume, 365);
    cr_assert_eq(u->buckets[1]->totals->sms_mo, 1);
    cr_assert_eq(u->buckets[2]->totals->volume_rx, 1000);

    cr_assert_eq(sim_usage(&reader1, s1, GMON, day0 - 41 * DAY, day0 + 2 * DAY, &u, &st), 0);
    int64_t total = 0;
    for (size_t i = 0; i < u->n_buckets; i++) {
        time_t t = (time_t)u->buckets[i]->start->seconds;
        struct tm tm;
        gmtime_r(&t, &tm);
        cr_assert_eq(tm.tm_mday, 1, "a month bucket starts on the 1st");
        total += u->buckets[i]->totals->total_volume;
    }
    cr_assert_geq(u->n_buckets, 2);
    cr_assert_eq(total, 6365);
}

Test(usage_queries, bad_sim_usage_requests_name_the_field)
{
    sim_usage_t *u;
    rpc_status_t st;
    expect_violation(sim_usage(&reader1, s1, GHOUR, day0, day0 + 32 * DAY, &u, &st), &st, "end");
    expect_violation(sim_usage(&reader1, s1, GDAY, 0, day0, &u, &st), &st, "start");
    expect_violation(sim_usage(&reader1, s1, GDAY, day0, 0, &u, &st), &st, "end");
    expect_violation(sim_usage(&reader1, s1, GDAY, day0, day0 - 1, &u, &st), &st, "end");
    expect_violation(sim_usage(&reader1, s1, 0, day0, day0 + DAY, &u, &st), &st, "granularity");
    expect_violation(sim_usage(&reader1, "12", GDAY, day0, day0 + DAY, &u, &st), &st, "iccid");
    expect_violation(sim_usage(&reader1, s1, GDAY, day0 - 1900 * DAY, day0, &u, &st), &st, "end");
}

Test(usage_queries, another_organizations_sim_is_not_found)
{
    sim_usage_t *u;
    rpc_status_t st;
    cr_assert_lt(sim_usage(&reader2, s1, GDAY, day0, day0 + DAY, &u, &st), 0);
    cr_assert_eq(st.code, GRPC_STATUS_NOT_FOUND, "%s", st.message);
    cr_assert_lt(sim_usage(&reader1, "8988999999999999999", GDAY, day0, day0 + DAY, &u, &st), 0);
    cr_assert_eq(st.code, GRPC_STATUS_NOT_FOUND, "%s", st.message);
    cr_assert_eq(sim_usage(&reader2, s3, GDAY, day0, day0 + DAY, &u, &st), 0);
    cr_assert_eq(u->totals->volume_rx, 7);
    principal_t root = usage_h_operator();
    cr_assert_eq(sim_usage(&root, s1, GDAY, day0, day0 + DAY, &u, &st), 0, "superusers see all");
}

static int list_records(const principal_t *who, const char *iccid, int size, const char *token,
                        int64_t from, int64_t to, records_t **out, rpc_status_t *st)
{
    Onceiot__Usage__V1__ListUsageRecordsRequest req =
        ONCEIOT__USAGE__V1__LIST_USAGE_RECORDS_REQUEST__INIT;
    req.iccid = (char *)iccid;
    req.page_size = size;
    req.page_token = (char *)(token ? token : "");
    req.start = from ? ts(from) : NULL;
    req.end = to ? ts(to) : NULL;
    return usage_h_call("ListUsageRecords", &req.base,
                        &onceiot__usage__v1__list_usage_records_response__descriptor, who, arena,
                        out, st);
}

/* Waits (10 s at most) until the maintenance (every second here) has moved
 * the fixture's record of 50 days ago out of the default partition; true
 * when it has. */
static bool late_record_moved(void)
{
    for (int i = 0; i < 100; i++) {
        if (usage_h_sql_int("SELECT count(*) FROM ONLY usage.sim_usage_default") == 0)
            return true;
        usleep(100000);
    }
    return false;
}

Test(usage_queries, raw_records_page_newest_first_with_tokens_bound_to_their_filters)
{
    /* Paged once the late record sits in its own partition: a page read
     * while the maintenance moves it may miss it (see the closing note). */
    cr_assert(late_record_moved(), "the default partition still holds rows after 10 s");
    records_t *p;
    rpc_status_t st;
    const char *token = NULL;
    int64_t last = INT64_MAX;
    int seen = 0;
    do {
        cr_assert_eq(list_records(&reader1, s1, 2, token, 0, 0, &p, &st), 0, "%s", st.message);
        for (size_t i = 0; i < p->n_records; i++) {
            int64_t t = p->records[i]->timestamp->seconds * 1000000LL +
                        p->records[i]->timestamp->nanos / 1000;
            cr_assert_lt(t, last, "newest first");
            last = t;
            cr_assert_str_eq(p->records[i]->iccid, s1);
            cr_assert_eq(p->records[i]->total_volume,
                         p->records[i]->volume_rx + p->records[i]->volume_tx);
        }
        seen += (int)p->n_records;
        token = p->next_page_token[0] ? p->next_page_token : NULL;
    } while (token);
    cr_assert_eq(seen, 5);

    cr_assert_eq(list_records(&reader1, s1, 0, NULL, day0, day0 + DAY, &p, &st), 0);
    cr_assert_eq(p->n_records, 3, "the range");
    cr_assert_str_eq(p->records[0]->country, "FR");
    cr_assert_str_eq(p->records[0]->mcc, "208");

    cr_assert_eq(list_records(&reader1, s1, 1, NULL, 0, 0, &p, &st), 0);
    expect_violation(list_records(&reader1, s1, 1, p->next_page_token, day0, 0, &p, &st), &st,
                     "page_token");
    expect_violation(list_records(&reader1, s1, 1, "garbage", 0, 0, &p, &st), &st, "page_token");
    expect_violation(list_records(&reader1, s1, 1001, NULL, 0, 0, &p, &st), &st, "page_size");
    expect_violation(list_records(&reader1, "", 1, NULL, 0, 0, &p, &st), &st, "iccid");
    cr_assert_lt(list_records(&reader2, s1, 1, NULL, 0, 0, &p, &st), 0);
    cr_assert_eq(st.code, GRPC_STATUS_NOT_FOUND);
}

static int fleet(const principal_t *who, int g, int group, int64_t org, int64_t from, int64_t to,
                 fleet_t **out, rpc_status_t *st)
{
    Onceiot__Usage__V1__GetFleetUsageRequest req =
        ONCEIOT__USAGE__V1__GET_FLEET_USAGE_REQUEST__INIT;
    req.granularity = g;
    req.group_by = group;
    req.organization_id = org;
    req.start = from ? ts(from) : NULL;
    req.end = to ? ts(to) : NULL;
    return usage_h_call("GetFleetUsage", &req.base,
                        &onceiot__usage__v1__get_fleet_usage_response__descriptor, who, arena, out,
                        st);
}

/* The bucket with this start (and key, "" for none), or NULL. */
static const Onceiot__Usage__V1__FleetUsageBucket *bucket(const fleet_t *f, int64_t start_us,
                                                          const char *key)
{
    for (size_t i = 0; i < f->n_buckets; i++) {
        const Onceiot__Usage__V1__FleetUsageBucket *b = f->buckets[i];
        char k[16];
        snprintf(k, sizeof(k), "%s%s%s", b->country, b->mcc, b->mnc);
        if (b->start->seconds == start_us / 1000000 && strcmp(k, key) == 0)
            return b;
    }
    return NULL;
}

Test(usage_queries, the_fleet_per_day_with_exact_active_sims)
{
    fleet_t *f;
    rpc_status_t st;
    cr_assert_eq(fleet(&reader1, GDAY, 0, 0, day0, day0 + 2 * DAY, &f, &st), 0, "%s", st.message);
    cr_assert_eq(f->n_buckets, 2);
    cr_assert_eq(f->buckets[0]->active_sims, 2);
    cr_assert_eq(f->buckets[0]->totals->volume_rx, 360);
    cr_assert_eq(f->buckets[0]->totals->total_sms, 4);
    cr_assert_eq(f->buckets[1]->active_sims, 2);
    cr_assert_eq(f->buckets[1]->totals->volume_rx, 1020);

    cr_assert_eq(fleet(&reader2, GDAY, 0, 0, day0, day0 + 2 * DAY, &f, &st), 0);
    cr_assert_eq(f->n_buckets, 1);
    cr_assert_eq(f->buckets[0]->active_sims, 1);
    cr_assert_eq(f->buckets[0]->totals->volume_rx, 7);

    cr_assert_eq(fleet(&op, GDAY, 0, 0, day0, day0 + DAY, &f, &st), 0, "%s", st.message);
    cr_assert_eq(f->buckets[0]->active_sims, 3, "every organization for a superuser");
    cr_assert_eq(f->buckets[0]->totals->volume_rx, 367);
    cr_assert_eq(fleet(&op, GDAY, 0, 2, day0, day0 + DAY, &f, &st), 0);
    cr_assert_eq(f->buckets[0]->totals->volume_rx, 7);

    cr_assert_lt(fleet(&reader1, GDAY, 0, 2, day0, day0 + DAY, &f, &st), 0);
    cr_assert_eq(st.code, GRPC_STATUS_PERMISSION_DENIED, "%s", st.message);
    expect_violation(fleet(&reader1, GHOUR, 0, 0, day0, day0 + DAY, &f, &st), &st, "granularity");
    expect_violation(fleet(&reader1, GDAY, 7, 0, day0, day0 + DAY, &f, &st), &st, "group_by");
    expect_violation(fleet(&reader1, GDAY, 0, 0, 0, day0 + DAY, &f, &st), &st, "start");
}

Test(usage_queries, the_fleet_by_country_and_network_counts_each_sim_once)
{
    fleet_t *f;
    rpc_status_t st;
    cr_assert_eq(fleet(&reader1, GDAY, ONCEIOT__USAGE__V1__FLEET_GROUP_BY__FLEET_GROUP_BY_COUNTRY,
                       0, day0, day0 + 2 * DAY, &f, &st),
                 0, "%s", st.message);
    const Onceiot__Usage__V1__FleetUsageBucket *b = bucket(f, day0, "DE");
    cr_assert_not_null(b);
    cr_assert_eq(b->active_sims, 2, "s1 on two German networks counts once");
    cr_assert_eq(b->totals->volume_rx, 160);
    cr_assert_eq(bucket(f, day0, "FR")->active_sims, 1);
    cr_assert_eq(bucket(f, day0, "FR")->totals->volume_rx, 200);
    cr_assert_eq(bucket(f, day0 + DAY, "")->totals->volume_rx, 1000, "unknown country");
    cr_assert_eq(bucket(f, day0 + DAY, "DE")->active_sims, 1);

    cr_assert_eq(fleet(&reader1, GDAY, ONCEIOT__USAGE__V1__FLEET_GROUP_BY__FLEET_GROUP_BY_NETWORK,
                       0, day0, day0 + DAY, &f, &st),
                 0);
    cr_assert_eq(bucket(f, day0, "26201")->active_sims, 2);
    cr_assert_eq(bucket(f, day0, "26201")->totals->volume_rx, 110);
    cr_assert_eq(bucket(f, day0, "26202")->active_sims, 1);
    cr_assert_eq(bucket(f, day0, "20810")->totals->volume_rx, 200);

    cr_assert_eq(fleet(&reader1, GMON, ONCEIOT__USAGE__V1__FLEET_GROUP_BY__FLEET_GROUP_BY_COUNTRY,
                       0, day0, day0 + 2 * DAY, &f, &st),
                 0);
    int64_t de = 0;
    for (size_t i = 0; i < f->n_buckets; i++)
        if (!strcmp(f->buckets[i]->country, "DE"))
            de += f->buckets[i]->totals->volume_rx;
    cr_assert_eq(de, 180);
}

Test(usage_queries, the_fleet_per_month_counts_distinct_sims_of_the_month)
{
    fleet_t *f;
    rpc_status_t st;
    cr_assert_eq(fleet(&reader1, GMON, 0, 0, day0 - 41 * DAY, day0 + 2 * DAY, &f, &st), 0, "%s",
                 st.message);
    int64_t total = 0, most = 0;
    for (size_t i = 0; i < f->n_buckets; i++) {
        total += f->buckets[i]->totals->volume_rx;
        if (f->buckets[i]->active_sims > most)
            most = f->buckets[i]->active_sims;
    }
    cr_assert_eq(total, 6380);
    cr_assert_eq(most, 2, "s1 and s2, each once although active on several days");
}

static int top(const principal_t *who, int by, int limit, top_t **out, rpc_status_t *st)
{
    Onceiot__Usage__V1__ListTopSimsRequest req = ONCEIOT__USAGE__V1__LIST_TOP_SIMS_REQUEST__INIT;
    req.start = ts(day0 - 41 * DAY);
    req.end = ts(day0 + 2 * DAY);
    req.by = by;
    req.limit = limit;
    return usage_h_call("ListTopSims", &req.base,
                        &onceiot__usage__v1__list_top_sims_response__descriptor, who, arena, out,
                        st);
}

Test(usage_queries, top_sims_by_data_and_by_sms_in_the_callers_organization)
{
    top_t *t;
    rpc_status_t st;
    cr_assert_eq(top(&reader1, 0, 0, &t, &st), 0, "%s", st.message);
    cr_assert_eq(t->n_sims, 2);
    cr_assert_str_eq(t->sims[0]->iccid, s1);
    cr_assert_eq(t->sims[0]->totals->total_volume, 6365);
    cr_assert_str_eq(t->sims[1]->iccid, s2);
    cr_assert_eq(top(&reader1, ONCEIOT__USAGE__V1__TOP_SIMS_BY__TOP_SIMS_BY_SMS, 1, &t, &st), 0);
    cr_assert_eq(t->n_sims, 1);
    cr_assert_str_eq(t->sims[0]->iccid, s2);
    cr_assert_eq(t->sims[0]->totals->total_sms, 3);
    cr_assert_eq(top(&reader2, 0, 0, &t, &st), 0);
    cr_assert_eq(t->n_sims, 1);
    cr_assert_str_eq(t->sims[0]->iccid, s3);
    expect_violation(top(&reader1, 0, 101, &t, &st), &st, "limit");
    expect_violation(top(&reader1, 5, 1, &t, &st), &st, "by");
}

Test(usage_queries, ingest_status_is_for_the_operators_staff)
{
    Onceiot__Usage__V1__GetIngestStatusRequest req =
        ONCEIOT__USAGE__V1__GET_INGEST_STATUS_REQUEST__INIT;
    Onceiot__Usage__V1__IngestStatus *s;
    rpc_status_t st;
    cr_assert_eq(usage_h_call("GetIngestStatus", &req.base,
                              &onceiot__usage__v1__ingest_status__descriptor, &op, arena, &s, &st),
                 0, "%s", st.message);
    cr_assert_eq(s->n_recent_batches, 2);
    cr_assert_str_eq(s->recent_batches[0]->batch_id, "fixture-2");
    cr_assert_eq(s->recent_batches[1]->records, 4);
    cr_assert(usage_h_wait_outbox_empty(20000));
    cr_assert_eq(usage_h_call("GetIngestStatus", &req.base,
                              &onceiot__usage__v1__ingest_status__descriptor, &op, arena, &s, &st),
                 0);
    cr_assert_eq(s->outbox_pending, 0);
    cr_assert_eq(s->outbox_oldest_age_ms, 0);
    cr_assert_lt(usage_h_call("GetIngestStatus", &req.base,
                              &onceiot__usage__v1__ingest_status__descriptor, &reader1, arena, &s,
                              &st),
                 0);
    cr_assert_eq(st.code, GRPC_STATUS_PERMISSION_DENIED);
}

Test(usage_queries, retention_drops_an_old_partition_and_the_rollups_stay)
{
    char part[64], sql[300];
    time_t t = (time_t)(day0 / 1000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(part, sizeof(part), "sim_usage_p%04d_%02d_%02d", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM pg_tables WHERE schemaname = 'usage' AND tablename = '%s'",
             part);
    cr_assert_eq(usage_h_sql_int(sql), 1, "%s exists", part);
    /* Ten days is "old" once the retention says 5 days; the service's own
     * maintenance (every second here) drops the partition. */
    PQclear(pgh_sql("UPDATE partman.part_config SET retention = '5 days' "
                    "WHERE parent_table = 'usage.sim_usage'"));
    for (int i = 0; i < 200 && usage_h_sql_int(sql) == 1; i++)
        usleep(50000);
    cr_assert_eq(usage_h_sql_int(sql), 0, "%s was not dropped", part);

    records_t *p;
    rpc_status_t st;
    cr_assert_eq(list_records(&reader1, s1, 0, NULL, day0, day0 + DAY, &p, &st), 0, "%s",
                 st.message);
    cr_assert_eq(p->n_records, 0, "the raw records of that day are gone");
    sim_usage_t *u;
    cr_assert_eq(sim_usage(&reader1, s1, GDAY, day0, day0 + DAY, &u, &st), 0);
    cr_assert_eq(u->totals->total_volume, 365, "the daily rollup stays");
    fleet_t *f;
    cr_assert_eq(fleet(&reader1, GDAY, 0, 0, day0, day0 + DAY, &f, &st), 0);
    cr_assert_eq(f->buckets[0]->active_sims, 2);
}

Test(usage_queries, a_record_older_than_the_partitions_moves_to_a_partition_of_its_day)
{
    /* The fixture's record of 50 days ago is older than the partitions made
     * at creation (30 days back): it arrived in the default partition, and
     * the maintenance (every second here) moves it to its day's. */
    time_t t = (time_t)((day0 - 40 * DAY) / 1000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char sql[300];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM usage.sim_usage WHERE tableoid = "
             "'usage.sim_usage_p%04d_%02d_%02d'::regclass AND volume_rx = 5000",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
    cr_assert(late_record_moved(), "the default partition still holds rows after 10 s");
    cr_assert_eq(usage_h_sql_int(sql), 1, "the record is in its day's partition");
    records_t *p;
    rpc_status_t st;
    cr_assert_eq(list_records(&reader1, s1, 0, NULL, day0 - 41 * DAY, day0 - 39 * DAY, &p, &st), 0,
                 "%s", st.message);
    cr_assert_eq(p->n_records, 1, "and reads as before");
    cr_assert_eq(p->records[0]->volume_rx, 5000);
}
