/* Compaction of old days (onceiot-usage compact): every query of the usage
 * service answers byte for byte the same before and after, a second run
 * changes nothing, late data for a compacted day is visible and merged,
 * retention drops compacted days, a SIGKILL in the middle of a day leaves
 * the day in its old form, and a second process finds the maintenance lock
 * taken. Real onceiot-sims and onceiot-usage processes on the test
 * PostgreSQL. */
#include "pg_harness.h"
#include "usage_harness.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define HOUR (3600LL * 1000000)
#define DAY  (24 * HOUR)

typedef usage_sample_t sample_t;

/* The served process never compacts by itself here: the tests run the
 * subcommand. */
static const char *const env[] = {"ONCEIOT_USAGE_COMPACT_AFTER_DAYS=0", NULL};
/* The subcommand's own (its variables come first, so they win). */
static const char *const run_env[] = {"ONCEIOT_USAGE_COMPACT_AFTER_DAYS=7", NULL};
static const char *const one_sim_env[] = {"ONCEIOT_USAGE_COMPACT_AFTER_DAYS=7",
                                          "ONCEIOT_USAGE_COMPACT_BATCH=1", NULL};
static arena_t *arena;
static const char *s1, *s2, *s3; /* organizations 1, 1, 2 */
static int64_t day0;             /* 10 days ago, 00:00 UTC */

/* One IngestConnectivity stream of one batch as the pipeline. */
static void ingest_conn(const char *id, sample_t **v, size_t n)
{
    principal_t w = usage_h_writer();
    Onceiot__Usage__V1__IngestConnectivityResponse *r = NULL;
    rpc_status_t st;
    cr_assert_eq(usage_h_ingest_conn(arena, &w, &id, &v, &n, 1, &r, &st), 0, "%s", st.message);
    cr_assert_not_null(r, "no answer to the batch");
}

static void ingest_usage(const char *id, usage_rec_t **v, size_t n)
{
    Onceiot__Usage__V1__BatchResult *r;
    rpc_status_t st;
    cr_assert_eq(usage_h_ingest(arena, id, v, n, &r, &st), 0, "%s", st.message);
}

static void setup(void)
{
    usage_h_start(env);
    arena = sims_h_thread_arena();
    s1 = usage_h_sim(1, 1, 1000000000, 1000);
    s2 = usage_h_sim(1, 2, 1000000000, 1000);
    s3 = usage_h_sim(2, 3, 1000000000, 1000);
    day0 = (usage_h_now_us() / DAY - 10) * DAY;
    int64_t now = usage_h_now_us() - HOUR;
    usage_rec_t *recs[] = {
        usage_h_rec(arena, s1, day0 + HOUR, 100, 10, 1, 0, "DE", "262", "01"),
        usage_h_rec(arena, s1, day0 + HOUR, 50, 5, 0, 0, "DE", "262", "02"), /* same instant */
        usage_h_rec(arena, s1, day0 + 5 * HOUR, 200, 0, 0, 0, "FR", "208", "10"),
        usage_h_rec(arena, s1, day0 + DAY, 1000, 0, 0, 0, NULL, NULL, NULL),
        usage_h_rec(arena, s1, day0 + 2 * DAY + 7, 3000, 1, 0, 2, NULL, NULL, NULL),
        usage_h_rec(arena, s2, day0 + 2 * HOUR, 10, 0, 0, 3, "DE", "262", "01"),
        usage_h_rec(arena, s2, day0 + DAY + 3 * HOUR, 20, 0, 0, 0, "DE", "262", "01"),
        usage_h_rec(arena, s3, day0 + HOUR, 7, 0, 0, 0, "DE", "262", "01"),
        usage_h_rec(arena, s1, now, 1, 1, 0, 0, "DE", "262", "01"), /* recent: stays raw */
    };
    ingest_usage("fixture-1", recs, 5);
    ingest_usage("fixture-2", recs + 5, 4);
    sample_t *samples[] = {
        usage_h_sample(arena, s1, day0 + HOUR, true, NULL),
        usage_h_sample(arena, s1, day0 + 2 * HOUR, false, NULL),
        usage_h_sample(arena, s1, day0 + 3 * HOUR, true, NULL),
        usage_h_sample(arena, s1, day0 + DAY + HOUR, false, NULL),
        usage_h_sample(arena, s2, day0 + HOUR, true, NULL),
        usage_h_sample(arena, s3, day0 + 4 * HOUR, false, NULL),
        usage_h_sample(arena, s1, now, true, NULL),
    };
    ingest_conn("conn-1", samples, 7);
    cr_assert(usage_h_wait_outbox_empty(20000));
}

static void teardown(void)
{
    usage_h_stop();
}

TestSuite(usage_compact, .init = setup, .fini = teardown, .timeout = 180);

/* Every answer of the service over the fixture, packed, one after another. */
typedef struct answers {
    uint8_t *buf;
    size_t len;
} answers_t;

static void append(answers_t *o, const ProtobufCMessage *resp)
{
    size_t n = protobuf_c_message_get_packed_size(resp);
    uint8_t *b = arena_alloc(arena, o->len + n + 1);
    if (o->len)
        memcpy(b, o->buf, o->len);
    protobuf_c_message_pack(resp, b + o->len);
    o->buf = b;
    o->len += n;
}

static void add(answers_t *o, const char *method, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *desc, const principal_t *who)
{
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    cr_assert_eq(usage_h_call(method, req, desc, who, arena, &resp, &st), 0, "%s: %s", method,
                 st.message);
    append(o, resp);
}

/* Walks ListUsageRecords or ListConnectivity of iccid page by page (pages
 * of 2), range [from, to) (0: open), adding every page. */
static void add_pages(answers_t *o, bool conn, const char *iccid, int64_t from, int64_t to,
                      const principal_t *who)
{
    const char *token = "";
    for (int i = 0; i < 50; i++) {
        ProtobufCMessage *resp = NULL;
        rpc_status_t st;
        const char *next;
        if (conn) {
            Onceiot__Usage__V1__ListConnectivityRequest r =
                ONCEIOT__USAGE__V1__LIST_CONNECTIVITY_REQUEST__INIT;
            r.iccid = (char *)iccid;
            r.page_size = 2;
            r.page_token = (char *)token;
            r.start = from ? usage_h_ts(arena, from) : NULL;
            r.end = to ? usage_h_ts(arena, to) : NULL;
            cr_assert_eq(usage_h_call("ListConnectivity", &r.base,
                                      &onceiot__usage__v1__list_connectivity_response__descriptor,
                                      who, arena, &resp, &st),
                         0, "%s", st.message);
            next = ((Onceiot__Usage__V1__ListConnectivityResponse *)resp)->next_page_token;
        } else {
            Onceiot__Usage__V1__ListUsageRecordsRequest r =
                ONCEIOT__USAGE__V1__LIST_USAGE_RECORDS_REQUEST__INIT;
            r.iccid = (char *)iccid;
            r.page_size = 2;
            r.page_token = (char *)token;
            r.start = from ? usage_h_ts(arena, from) : NULL;
            r.end = to ? usage_h_ts(arena, to) : NULL;
            cr_assert_eq(usage_h_call("ListUsageRecords", &r.base,
                                      &onceiot__usage__v1__list_usage_records_response__descriptor,
                                      who, arena, &resp, &st),
                         0, "%s", st.message);
            next = ((Onceiot__Usage__V1__ListUsageRecordsResponse *)resp)->next_page_token;
        }
        append(o, resp);
        if (!next || !next[0])
            return;
        token = next;
    }
    cr_assert_fail("more than 50 pages");
}

static answers_t all_answers(void)
{
    answers_t o = {NULL, 0};
    principal_t r1 = usage_h_reader(1), op = usage_h_operator();
    const char *sims[] = {s1, s2, s3};
    int64_t ranges[][2] = {{0, 0}, {day0, day0 + DAY}, {day0 + HOUR, day0 + 2 * DAY}};
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 3; k++) {
            add_pages(&o, false, sims[i], ranges[k][0], ranges[k][1], &op);
            add_pages(&o, true, sims[i], ranges[k][0], ranges[k][1], &op);
        }
    for (int g = 1; g <= 3; g++) {
        Onceiot__Usage__V1__GetSimUsageRequest r = ONCEIOT__USAGE__V1__GET_SIM_USAGE_REQUEST__INIT;
        r.iccid = (char *)s1;
        r.granularity = g;
        r.start = usage_h_ts(arena, day0 - (g == 1 ? 0 : 40 * DAY));
        r.end = usage_h_ts(arena, day0 + 3 * DAY);
        add(&o, "GetSimUsage", &r.base, &onceiot__usage__v1__get_sim_usage_response__descriptor,
            &r1);
    }
    for (int g = 2; g <= 3; g++)
        for (int by = 0; by <= 2; by++) {
            Onceiot__Usage__V1__GetFleetUsageRequest r =
                ONCEIOT__USAGE__V1__GET_FLEET_USAGE_REQUEST__INIT;
            r.granularity = g;
            r.group_by = by;
            r.start = usage_h_ts(arena, day0 - 40 * DAY);
            r.end = usage_h_ts(arena, day0 + 11 * DAY);
            add(&o, "GetFleetUsage", &r.base,
                &onceiot__usage__v1__get_fleet_usage_response__descriptor, &op);
        }
    Onceiot__Usage__V1__ListTopSimsRequest t = ONCEIOT__USAGE__V1__LIST_TOP_SIMS_REQUEST__INIT;
    t.by = ONCEIOT__USAGE__V1__TOP_SIMS_BY__TOP_SIMS_BY_DATA;
    t.start = usage_h_ts(arena, day0);
    t.end = usage_h_ts(arena, day0 + 11 * DAY);
    add(&o, "ListTopSims", &t.base, &onceiot__usage__v1__list_top_sims_response__descriptor, &op);
    for (int i = 0; i < 3; i++) {
        Onceiot__Usage__V1__GetConnectivityRequest r =
            ONCEIOT__USAGE__V1__GET_CONNECTIVITY_REQUEST__INIT;
        r.iccid = (char *)sims[i];
        add(&o, "GetConnectivity", &r.base, &onceiot__usage__v1__connectivity_state__descriptor,
            &op);
    }
    Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
    d.seconds = 60;
    Onceiot__Usage__V1__ListOfflineSimsRequest off =
        ONCEIOT__USAGE__V1__LIST_OFFLINE_SIMS_REQUEST__INIT;
    off.offline_for = &d;
    add(&o, "ListOfflineSims", &off.base,
        &onceiot__usage__v1__list_offline_sims_response__descriptor, &op);
    return o;
}

static bool same(answers_t a, answers_t b)
{
    return a.len == b.len && memcmp(a.buf, b.buf, a.len) == 0;
}

/* Runs "onceiot-usage compact" with extra env (may be NULL); returns its exit status. */
static int compact(const char *const *extra)
{
    ph_proc_t p;
    usage_h_spawn_command(&p, "compact", extra ? extra : run_env);
    int code = ph_stop(&p, 0, 60000);
    cr_expect(!ph_log_has_sanitizer_report(&p), "sanitizer report in %s", p.log);
    return code;
}

static long long old_raw(void)
{
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT (SELECT count(*) FROM usage.sim_usage WHERE \"timestamp\" < now() - "
             "interval '7 days') + (SELECT count(*) FROM usage.sim_connectivity WHERE "
             "\"timestamp\" < now() - interval '7 days')");
    return usage_h_sql_int(sql);
}

#define COMPACT_SUM                                                                                \
    "SELECT hashtext(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) FROM ("              \
    "SELECT sim_id, day, records, id, ts, volume_rx, mcc, batch_id, created_at FROM "              \
    "usage.sim_usage_compact UNION ALL SELECT sim_id, day, samples, NULL, ts, NULL, mcc, "         \
    "batch_id, created_at FROM usage.sim_connectivity_compact) x"

Test(usage_compact, every_answer_is_the_same_after_compaction_and_a_second_run_changes_nothing)
{
    answers_t before = all_answers();
    cr_assert_gt(old_raw(), 0);
    cr_assert_eq(compact(NULL), 0);
    cr_assert_eq(old_raw(), 0, "the old days are compacted");
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM usage.sim_usage_compact"), 6);
    cr_assert_eq(usage_h_sql_int("SELECT sum(records) FROM usage.sim_usage_compact"), 8);
    cr_assert_eq(usage_h_sql_int("SELECT sum(samples) FROM usage.sim_connectivity_compact"), 6);
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM usage.sim_usage"), 1, "recent stays raw");
    cr_assert(same(before, all_answers()), "an answer changed with compaction");
    long long sum = usage_h_sql_int(COMPACT_SUM);
    cr_assert_eq(compact(NULL), 0);
    cr_assert_eq(usage_h_sql_int(COMPACT_SUM), sum, "a second run changed the compacted rows");
    cr_assert(same(before, all_answers()));
}

/* Every page of one SIM's records and samples over the whole time and over
 * [from, to), walked in pages of 2. */
static answers_t sim_pages(const char *iccid, int64_t from, int64_t to)
{
    answers_t o = {NULL, 0};
    principal_t op = usage_h_operator();
    for (int conn = 0; conn <= 1; conn++) {
        add_pages(&o, conn, iccid, 0, 0, &op);
        add_pages(&o, conn, iccid, from, to, &op);
    }
    return o;
}

/* A page's newest compacted day may be cut, by the page token (whole time)
 * or by the range's end (to 12:00 of the second day): that day's rows
 * cannot fill the page, so the older day must still be read. One record or
 * sample on day0, three on the next day at 01:00, 02:00 and 20:00. */
Test(usage_compact, a_page_whose_newest_day_is_cut_still_reaches_the_older_days)
{
    const char *s4 = usage_h_sim(1, 4, 1000000000, 1000);
    int64_t next = day0 + DAY,
            hours[] = {day0 + HOUR, next + HOUR, next + 2 * HOUR, next + 20 * HOUR};
    usage_rec_t *recs[4];
    sample_t *samples[4];
    for (int i = 0; i < 4; i++) {
        recs[i] = usage_h_rec(arena, s4, hours[i], 10 + i, 0, 0, 0, "DE", "262", "01");
        samples[i] = usage_h_sample(arena, s4, hours[i], i % 2 == 0, NULL);
    }
    ingest_usage("cut-1", recs, 4);
    ingest_conn("cut-conn", samples, 4);
    cr_assert(usage_h_wait_outbox_empty(20000));
    answers_t before = sim_pages(s4, day0, next + 12 * HOUR);
    cr_assert_eq(compact(NULL), 0);
    cr_assert_eq(old_raw(), 0);
    cr_assert(same(before, sim_pages(s4, day0, next + 12 * HOUR)),
              "a page over a cut day lost the older day's rows");
}

Test(usage_compact, late_data_for_a_compacted_day_is_visible_counted_once_and_merged)
{
    cr_assert_eq(compact(NULL), 0);
    usage_rec_t *late[] = {usage_h_rec(arena, s1, day0 + 3 * HOUR, 40, 0, 0, 0, NULL, NULL, NULL)};
    ingest_usage("late-1", late, 1);
    ingest_usage("late-1", late, 1); /* a retry changes nothing */
    sample_t *again[] = {usage_h_sample(arena, s1, day0 + 2 * HOUR, true, NULL),
                         usage_h_sample(arena, s1, day0 + 4 * HOUR, false, NULL)};
    ingest_conn("late-conn", again, 2); /* one sent again (differently), one new */
    answers_t with_late = all_answers();
    /* Visible in the raw list, once in the day's rollup. */
    cr_assert_eq(
        usage_h_sql_int("SELECT d.volume_rx FROM usage.sim_usage_daily d JOIN "
                        "usage.sim_usage_compact c USING (sim_id, day) WHERE c.records = 3"),
        390);
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM usage.sim_connectivity_all WHERE "
                                 "\"timestamp\" < now() - interval '7 days'"),
                 8, "the raw duplicate is stored until the merge");
    cr_assert_eq(compact(NULL), 0);
    cr_assert_eq(old_raw(), 0);
    cr_assert_eq(usage_h_sql_int("SELECT sum(records) FROM usage.sim_usage_compact"), 9);
    cr_assert_eq(usage_h_sql_int("SELECT sum(samples) FROM usage.sim_connectivity_compact"), 7,
                 "the duplicate sample is kept once");
    cr_assert(same(with_late, all_answers()), "an answer changed with the merge");
}

Test(usage_compact, retention_drops_compacted_days)
{
    cr_assert_eq(compact(NULL), 0);
    cr_assert_gt(usage_h_sql_int("SELECT count(*) FROM usage.sim_usage_compact"), 0);
    PQclear(pgh_sql("UPDATE partman.part_config SET retention = '5 days' WHERE parent_table IN "
                    "('usage.sim_usage', 'usage.sim_connectivity')"));
    cr_assert_eq(compact(NULL), 0);
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM usage.sim_usage_compact"), 0);
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM usage.sim_connectivity_compact"), 0);
}

/* Waits until a backend runs the compaction statement and waits for a lock. */
static bool compaction_waits(int timeout_ms)
{
    for (int i = 0; i < timeout_ms / 20; i++) {
        if (usage_h_sql_int("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                            "'Lock' AND query LIKE '%INSERT INTO sim_usage_compact%'") > 0)
            return true;
        usleep(20000);
    }
    return false;
}

Test(usage_compact, sigkill_mid_day_leaves_the_old_form_and_a_second_process_waits_its_turn)
{
    answers_t before = all_answers();
    long long raw = old_raw();
    /* One SIM per statement; s2's rows of day0 locked by the test, so the
     * compaction of day0 does s1, then waits inside its transaction. */
    PGconn *hold = PQconnectdb(pgh_url());
    cr_assert_eq(PQstatus(hold), CONNECTION_OK);
    char sql[300];
    snprintf(sql, sizeof(sql),
             "BEGIN; SELECT 1 FROM usage.sim_usage WHERE iccid = '%s' AND \"timestamp\" < "
             "now() - interval '7 days' FOR UPDATE",
             s2);
    PGresult *r = PQexec(hold, sql);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQerrorMessage(hold));
    PQclear(r);
    ph_proc_t a;
    usage_h_spawn_command(&a, "compact", one_sim_env);
    cr_assert(compaction_waits(30000), "the compaction never reached the locked SIM");
    /* Another process meanwhile: the maintenance lock is taken. */
    ph_proc_t b;
    usage_h_spawn_command(&b, "compact", run_env);
    cr_assert_eq(ph_stop(&b, 0, 30000), 3, "the second process did not see the lock (%s)", b.log);
    cr_assert_eq(ph_stop(&a, SIGKILL, 5000), 128 + SIGKILL);
    PQclear(PQexec(hold, "ROLLBACK"));
    PQfinish(hold);
    /* The killed process's backend ends its transaction without a commit. */
    for (int i = 0;
         i < 500 && usage_h_sql_int("SELECT count(*) FROM pg_stat_activity WHERE "
                                    "query LIKE '%INSERT INTO sim_usage_compact%' "
                                    "AND state <> 'idle' AND pid <> pg_backend_pid()") > 0;
         i++)
        usleep(20000);
    cr_assert_eq(old_raw(), raw, "the day is in its old form");
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM usage.sim_usage_compact"), 0);
    cr_assert(same(before, all_answers()));
    cr_assert_eq(compact(one_sim_env), 0);
    cr_assert_eq(old_raw(), 0);
    cr_assert(same(before, all_answers()));
}

/* A compacted day's raw partition, emptied by the compaction, is truncated:
 * its heap is gone and each index is back to its one meta page (a DELETE
 * alone keeps the index pages until retention drops the day). */
Test(usage_compact, a_compacted_days_emptied_partition_gives_its_pages_back)
{
    cr_assert_eq(compact(NULL), 0);
    char sql[900];
    snprintf(sql, sizeof(sql),
             "WITH p AS (SELECT format('%%I.%%I', partition_schema, partition_table)::regclass AS "
             "r FROM partman.show_partition_name('usage.sim_usage', to_char('epoch'::timestamptz "
             "+ %lld * interval '1 microsecond', 'YYYY-MM-DD'))) SELECT (pg_relation_size(r) = 0 "
             "AND (SELECT sum(pg_relation_size(indexrelid)) FROM pg_index WHERE indrelid = r) = "
             "8192 * (SELECT count(*) FROM pg_index WHERE indrelid = r))::int FROM p",
             (long long)day0);
    cr_assert_eq(usage_h_sql_int(sql), 1, "the day's partition still holds pages");
    /* Late data for that day lands in the truncated partition as before. */
    usage_rec_t *late[] = {usage_h_rec(arena, s1, day0 + 4 * HOUR, 9, 0, 0, 0, NULL, NULL, NULL)};
    ingest_usage("reclaim-late", late, 1);
    cr_assert_eq(old_raw(), 1);
}
