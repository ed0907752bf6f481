/* Ingest into the usage service: real onceiot-sims and onceiot-usage
 * processes on the test PostgreSQL, the test playing the gateway. Batches
 * commit atomically and idempotently, bad batches change nothing, and the
 * rollups stay equal to a recomputation from the raw rows under concurrent
 * ingest. */
#include "pg_harness.h"
#include "usage_harness.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BATCH_D (&onceiot__usage__v1__batch_result__descriptor)
#define HOUR    (3600LL * 1000000)
#define DAY     (24 * HOUR)

static arena_t *arena;
static const char *sim1, *sim2, *sim3; /* organizations 1, 1 and 2 */

/* Compaction of org_usage_daily every second, so that it runs beside the
 * ingest of every test here. Raw days are compacted only after 30 days: the
 * late-record test reads back a raw row written 10 days in the past, which
 * the default of 7 days would fold away in the second after its ingest. */
static const char *const env[] = {"ONCEIOT_USAGE_COMPACT_S=1",
                                  "ONCEIOT_USAGE_COMPACT_AFTER_DAYS=30", NULL};

static void setup(void)
{
    usage_h_start(env);
    arena = sims_h_thread_arena();
    sim1 = usage_h_sim(1, 1, 1000000000, 1000);
    sim2 = usage_h_sim(1, 2, 1000000000, 1000);
    sim3 = usage_h_sim(2, 3, 1000000000, 1000);
}

static void teardown(void)
{
    usage_h_stop();
}

TestSuite(usage_ingest, .init = setup, .fini = teardown, .timeout = 300);

static long long raw_rows(void)
{
    return usage_h_sql_int("SELECT count(*) FROM usage.sim_usage");
}

Test(usage_ingest, a_batch_stores_its_records_and_every_rollup)
{
    int64_t h = usage_h_hour_us() - 2 * DAY;
    usage_rec_t *recs[] = {
        usage_h_rec(arena, sim1, h + 60 * 1000000LL, 100, 50, 1, 0, "DE", "262", "01"),
        usage_h_rec(arena, sim1, h + 120 * 1000000LL, 200, 25, 0, 2, "DE", "262", "02"),
        usage_h_rec(arena, sim1, h + HOUR + 5, 1000, 0, 3, 0, NULL, NULL, NULL),
        usage_h_rec(arena, sim2, h + DAY, 7, 8, 0, 0, "FR", "208", "10"),
        usage_h_rec(arena, sim3, h, 1, 1, 1, 1, "DE", "262", "01"),
    };
    Onceiot__Usage__V1__BatchResult *r;
    rpc_status_t st;
    cr_assert_eq(usage_h_ingest(arena, "stores-1", recs, 5, &r, &st), 0, "%s", st.message);
    cr_assert_str_eq(r->batch_id, "stores-1");
    cr_assert_eq(r->records, 5);
    cr_assert(!r->replayed);
    cr_assert_not_null(r->committed_at);
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM usage.sim_usage WHERE batch_id = "
                                 "'stores-1'"),
                 5);
    cr_assert_eq(usage_h_sql_int("SELECT sum(total_volume) FROM usage.sim_usage WHERE batch_id "
                                 "= 'stores-1'"),
                 150 + 225 + 1000 + 15 + 2);
    cr_assert_eq(usage_h_sql_int("SELECT records FROM usage.ingested_batches WHERE batch_id = "
                                 "'stores-1'"),
                 5);
    /* The outbox row and its delivery can both be seen for a moment (sims
     * has committed, the dispatcher has not deleted the row yet): wait for
     * the delivery, then it is there once. */
    cr_assert(usage_h_wait_outbox_empty(10000), "the batch's quota usage was not delivered");
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM sims.processed_usage_batches WHERE "
                                 "batch_id = 'stores-1'"),
                 1, "delivered once");
    usage_h_assert_rollups_exact();
}

Test(usage_ingest, a_replayed_batch_changes_nothing_and_says_so)
{
    int64_t h = usage_h_hour_us() - HOUR;
    usage_rec_t *recs[] = {usage_h_rec(arena, sim1, h, 10, 10, 1, 1, NULL, NULL, NULL),
                           usage_h_rec(arena, sim2, h + 1, 20, 20, 0, 0, NULL, NULL, NULL)};
    Onceiot__Usage__V1__BatchResult *first, *again;
    rpc_status_t st;
    cr_assert_eq(usage_h_ingest(arena, "replay-1", recs, 2, &first, &st), 0, "%s", st.message);
    long long rows = raw_rows();
    long long hourly = usage_h_sql_int("SELECT sum(records) FROM usage.sim_usage_hourly");
    long long org = usage_h_sql_int("SELECT sum(records) FROM usage.org_usage_daily");
    /* The retry may even carry other records: the batch id decides. */
    recs[1]->volume_rx = 999;
    cr_assert_eq(usage_h_ingest(arena, "replay-1", recs, 2, &again, &st), 0, "%s", st.message);
    cr_assert(again->replayed);
    cr_assert_eq(again->records, 2);
    cr_assert_eq(again->committed_at->seconds, first->committed_at->seconds);
    cr_assert_eq(raw_rows(), rows);
    cr_assert_eq(usage_h_sql_int("SELECT sum(records) FROM usage.sim_usage_hourly"), hourly);
    cr_assert_eq(usage_h_sql_int("SELECT sum(records) FROM usage.org_usage_daily"), org);
    usage_h_assert_rollups_exact();
}

/* ---- two copies at once ---- */

typedef struct copy_arg {
    arena_t *a;
    usage_rec_t **recs;
    size_t n;
    const char *id;
    int rc;
    bool replayed;
    char msg[200];
} copy_arg_t;

static void *send_copy(void *p)
{
    copy_arg_t *c = p;
    Onceiot__Usage__V1__BatchResult *r = NULL;
    rpc_status_t st;
    c->rc = usage_h_ingest(c->a, c->id, c->recs, c->n, &r, &st);
    if (c->rc == 0)
        c->replayed = r->replayed;
    else
        snprintf(c->msg, sizeof(c->msg), "%s", st.message);
    return NULL;
}

Test(usage_ingest, concurrent_copies_of_a_batch_apply_exactly_once)
{
    enum { COPIES = 4, RECS = 300 };
    int64_t h = usage_h_hour_us() - 3 * HOUR;
    usage_rec_t **recs = arena_alloc(arena, RECS * sizeof(*recs));
    for (int i = 0; i < RECS; i++)
        recs[i] = usage_h_rec(arena, i % 2 ? sim1 : sim3, h + i * 1000000LL, i, 1, 0, 0, "DE",
                              "262", "01");
    long long before = raw_rows();
    for (int round = 0; round < 3; round++) {
        const char *id = arena_printf(arena, "copies-%d", round);
        copy_arg_t args[COPIES];
        pthread_t th[COPIES];
        for (int i = 0; i < COPIES; i++) {
            args[i] = (copy_arg_t){.a = sims_h_thread_arena(), .recs = recs, .n = RECS, .id = id};
            pthread_create(&th[i], NULL, send_copy, &args[i]);
        }
        int applied = 0;
        for (int i = 0; i < COPIES; i++) {
            pthread_join(th[i], NULL);
            cr_assert_eq(args[i].rc, 0, "copy %d: %s", i, args[i].msg);
            applied += !args[i].replayed;
        }
        cr_assert_eq(applied, 1, "round %d: %d copies applied", round, applied);
    }
    cr_assert_eq(raw_rows(), before + 3 * RECS);
    usage_h_assert_rollups_exact();
}

/* ---- bad batches ---- */

typedef struct bad_case {
    char name[40];
    char field[40]; /* the violation expected */
} bad_case_t;

ParameterizedTestParameters(usage_ingest, a_bad_record_refuses_the_whole_batch)
{
    static bad_case_t cases[] = {
        {"unknown iccid", "records[1].iccid"},
        {"bad iccid", "records[1].iccid"},
        {"missing iccid", "records[1].iccid"},
        {"missing timestamp", "records[1].timestamp"},
        {"future", "records[1].timestamp"},
        {"too old", "records[1].timestamp"},
        {"negative rx", "records[1].volume_rx"},
        {"negative tx", "records[1].volume_tx"},
        {"negative mo", "records[1].sms_mo"},
        {"negative mt", "records[1].sms_mt"},
        {"negative sessions", "records[1].session_count"},
        {"bad mcc", "records[1].mcc"},
        {"mnc without mcc", "records[1].mnc"},
        {"bad country", "records[1].country"},
        {"bad rat", "records[1].rat"},
        {"total_volume set", "records[1].total_volume"},
        {"empty batch id", "batch_id"},
        {"long batch id", "batch_id"},
        {"no records", "records"},
        {"too many records", "records"},
    };
    return cr_make_param_array(bad_case_t, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(bad_case_t *c, usage_ingest, a_bad_record_refuses_the_whole_batch)
{
    int64_t now = usage_h_now_us();
    size_t n = 3;
    usage_rec_t **recs = arena_alloc(arena, 10001 * sizeof(*recs));
    for (size_t i = 0; i < 10001; i++)
        recs[i] = usage_h_rec(arena, sim1, now - HOUR, 1, 1, 0, 0, NULL, NULL, NULL);
    usage_rec_t *r = recs[1];
    const char *id = arena_printf(arena, "bad-%s", c->name);
    if (!strcmp(c->name, "unknown iccid"))
        r->iccid = "8988999999999999999";
    else if (!strcmp(c->name, "bad iccid"))
        r->iccid = "89x8";
    else if (!strcmp(c->name, "missing iccid"))
        r->iccid = "";
    else if (!strcmp(c->name, "missing timestamp"))
        r->timestamp = NULL;
    else if (!strcmp(c->name, "future"))
        r->timestamp->seconds = now / 1000000 + 6 * 60;
    else if (!strcmp(c->name, "too old"))
        r->timestamp->seconds = now / 1000000 - 731LL * 86400;
    else if (!strcmp(c->name, "negative rx"))
        r->volume_rx = -1;
    else if (!strcmp(c->name, "negative tx"))
        r->volume_tx = -1;
    else if (!strcmp(c->name, "negative mo"))
        r->sms_mo = -1;
    else if (!strcmp(c->name, "negative mt"))
        r->sms_mt = -1;
    else if (!strcmp(c->name, "negative sessions"))
        r->session_count = -1;
    else if (!strcmp(c->name, "bad mcc"))
        r->mcc = "26";
    else if (!strcmp(c->name, "mnc without mcc"))
        r->mnc = "01";
    else if (!strcmp(c->name, "bad country"))
        r->country = "de";
    else if (!strcmp(c->name, "bad rat"))
        r->rat = "4G";
    else if (!strcmp(c->name, "total_volume set"))
        r->total_volume = 5;
    else if (!strcmp(c->name, "empty batch id"))
        id = "";
    else if (!strcmp(c->name, "long batch id"))
        id = arena_printf(arena, "%0129d", 7);
    else if (!strcmp(c->name, "no records"))
        n = 0;
    else if (!strcmp(c->name, "too many records"))
        n = 10001;
    long long rows = raw_rows();
    long long batches = usage_h_sql_int("SELECT count(*) FROM usage.ingested_batches");
    Onceiot__Usage__V1__BatchResult *out;
    rpc_status_t st;
    cr_assert_lt(usage_h_ingest(arena, id, recs, n, &out, &st), 0);
    cr_assert_eq(st.code, GRPC_STATUS_INVALID_ARGUMENT, "%s: %s", c->name, st.message);
    cr_assert(usage_h_violation(arena, &st, c->field), "%s: no violation on %s (%s)", c->name,
              c->field, st.message);
    cr_assert_eq(raw_rows(), rows, "nothing stored");
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM usage.ingested_batches"), batches);
}

Test(usage_ingest, only_the_operators_pipeline_may_ingest)
{
    usage_rec_t *recs[] = {
        usage_h_rec(arena, sim1, usage_h_now_us(), 1, 1, 0, 0, NULL, NULL, NULL)};
    Onceiot__Usage__V1__IngestUsageBatchRequest req =
        ONCEIOT__USAGE__V1__INGEST_USAGE_BATCH_REQUEST__INIT;
    req.batch_id = "not-staff";
    req.records = recs;
    req.n_records = 1;
    principal_t reader = usage_h_reader(1);
    rpc_status_t st;
    cr_assert_lt(usage_h_call("IngestUsageBatch", &req.base, BATCH_D, &reader, arena, NULL, &st),
                 0);
    cr_assert_eq(st.code, GRPC_STATUS_PERMISSION_DENIED, "%s", st.message);
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM usage.ingested_batches WHERE batch_id = "
                                 "'not-staff'"),
                 0);
}

/* ---- the stream ---- */

static rpc_stream_t *open_stream(arena_t *a)
{
    const char *path = "/onceiot.usage.v1.UsageService/IngestUsage";
    rpc_md_t *md = arena_alloc(a, 2 * sizeof(*md));
    principal_t w = usage_h_writer();
    principal_sign(&sims_h.key, &w, path, a, md);
    rpc_call_opts_t o = {.timeout_ms = 60000, .metadata = md, .n_metadata = 2};
    rpc_stream_t *s;
    cr_assert_eq(rpc_stream_open(usage_h.ch, path, a, &o, &s), 0);
    return s;
}

static void send_batch(rpc_stream_t *s, const char *id, usage_rec_t **recs, size_t n)
{
    Onceiot__Usage__V1__IngestUsageBatchRequest b =
        ONCEIOT__USAGE__V1__INGEST_USAGE_BATCH_REQUEST__INIT;
    b.batch_id = (char *)id;
    b.records = recs;
    b.n_records = n;
    cr_assert_eq(rpc_stream_send(s, &b.base), 0);
}

Test(usage_ingest, a_stream_commits_each_batch_and_reports_replays)
{
    int64_t h = usage_h_hour_us() - 5 * HOUR;
    usage_rec_t *a[] = {usage_h_rec(arena, sim1, h, 5, 5, 0, 0, NULL, NULL, NULL)};
    usage_rec_t *b[] = {usage_h_rec(arena, sim2, h, 6, 6, 0, 0, NULL, NULL, NULL),
                        usage_h_rec(arena, sim2, h + 1, 6, 6, 0, 0, NULL, NULL, NULL)};
    rpc_stream_t *s = open_stream(arena);
    send_batch(s, "stream-a", a, 1);
    send_batch(s, "stream-b", b, 2);
    send_batch(s, "stream-a", a, 1);
    cr_assert_eq(rpc_stream_close_send(s), 0);
    ProtobufCMessage *m = NULL;
    cr_assert_eq(rpc_stream_recv(s, &onceiot__usage__v1__ingest_usage_response__descriptor, &m), 1);
    rpc_status_t st;
    cr_assert_eq(rpc_stream_finish(s, &st), 0, "%s", st.message);
    const Onceiot__Usage__V1__IngestUsageResponse *r = (const void *)m;
    cr_assert_eq(r->n_batches, 3);
    cr_assert_eq(r->records, 3);
    cr_assert_eq(r->replayed_batches, 1);
    cr_assert(!r->batches[0]->replayed && !r->batches[1]->replayed && r->batches[2]->replayed);
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM usage.sim_usage WHERE batch_id LIKE "
                                 "'stream-%'"),
                 3);
}

Test(usage_ingest, a_stream_stops_at_a_bad_batch_and_keeps_the_ones_before)
{
    int64_t h = usage_h_hour_us() - 6 * HOUR;
    usage_rec_t *good[] = {usage_h_rec(arena, sim1, h, 5, 5, 0, 0, NULL, NULL, NULL)};
    usage_rec_t *bad[] = {usage_h_rec(arena, sim1, h, 5, 5, 0, 0, NULL, NULL, NULL),
                          usage_h_rec(arena, sim1, h, -5, 5, 0, 0, NULL, NULL, NULL)};
    rpc_stream_t *s = open_stream(arena);
    send_batch(s, "stop-good", good, 1);
    send_batch(s, "stop-bad", bad, 2);
    (void)!rpc_stream_close_send(s);
    ProtobufCMessage *m = NULL;
    (void)!rpc_stream_recv(s, &onceiot__usage__v1__ingest_usage_response__descriptor, &m);
    rpc_status_t st;
    cr_assert_lt(rpc_stream_finish(s, &st), 0);
    cr_assert_eq(st.code, GRPC_STATUS_INVALID_ARGUMENT, "%s", st.message);
    cr_assert(usage_h_violation(arena, &st, "records[1].volume_rx"), "%s", st.message);
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM usage.ingested_batches WHERE batch_id = "
                                 "'stop-good'"),
                 1);
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM usage.ingested_batches WHERE batch_id = "
                                 "'stop-bad'"),
                 0);
}

/* ---- late and out of order ---- */

Test(usage_ingest, late_and_out_of_order_records_land_in_their_buckets)
{
    const char *sim = usage_h_sim(1, 50, 1000000000, 1000);
    int64_t now = usage_h_hour_us();
    /* Newest first, then one 10 days late, then the hour in between. */
    int64_t t[] = {now - HOUR + 10, now - 3 * HOUR + 20, now - 10 * DAY + 30, now - 2 * HOUR + 40};
    for (int i = 0; i < 4; i++) {
        usage_rec_t *r[] = {
            usage_h_rec(arena, sim, t[i], 100 * (i + 1), 0, 0, 0, NULL, NULL, NULL)};
        Onceiot__Usage__V1__BatchResult *out;
        rpc_status_t st;
        cr_assert_eq(usage_h_ingest(arena, arena_printf(arena, "late-%d", i), r, 1, &out, &st), 0,
                     "%s", st.message);
    }
    for (int i = 0; i < 4; i++) {
        char sql[400];
        snprintf(sql, sizeof(sql),
                 "SELECT volume_rx FROM usage.sim_usage_hourly WHERE iccid = '%s' AND hour = "
                 "'epoch'::timestamptz + %lld * interval '1 hour'",
                 sim, (long long)(t[i] / HOUR));
        cr_assert_eq(usage_h_sql_int(sql), 100 * (i + 1), "hour of record %d", i);
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM usage.sim_usage WHERE iccid = '%s' AND \"timestamp\" = "
                 "'epoch'::timestamptz + %lld * interval '1 microsecond'",
                 sim, (long long)t[i]);
        cr_assert_eq(usage_h_sql_int(sql), 1);
    }
    usage_h_assert_rollups_exact();
}

/* ---- random concurrent ingest ---- */

enum { THREADS = 6, BATCHES = 12, PER_BATCH = 150, SIMS = 10 };

typedef struct writer {
    int id;
    arena_t *a;
    const char **sims;
    unsigned seed;
    int failures;
    char first[240];
} writer_t;

static void *write_batches(void *p)
{
    writer_t *w = p;
    int64_t base = usage_h_hour_us() - 3 * DAY;
    for (int b = 0; b < BATCHES; b++) {
        usage_rec_t **recs = arena_alloc(w->a, PER_BATCH * sizeof(*recs));
        for (int i = 0; i < PER_BATCH; i++) {
            static const char *const nets[][3] = {
                {"DE", "262", "01"}, {"DE", "262", "02"}, {"FR", "208", "10"}, {NULL, NULL, NULL}};
            const char *const *n = nets[rand_r(&w->seed) % 4];
            recs[i] = usage_h_rec(
                w->a, w->sims[rand_r(&w->seed) % SIMS],
                base + (int64_t)(rand_r(&w->seed) % (3 * 24)) * HOUR + rand_r(&w->seed) % 1000,
                rand_r(&w->seed) % 100000, rand_r(&w->seed) % 5000, (int32_t)(rand_r(&w->seed) % 3),
                (int32_t)(rand_r(&w->seed) % 2), n[0], n[1], n[2]);
        }
        /* Every fourth batch is also sent again under another writer's id. */
        const char *id = arena_printf(w->a, "rand-%d-%d", w->id, b);
        if (b % 4 == 3)
            id = arena_printf(w->a, "rand-%d-%d", (w->id + 1) % THREADS, b - 1);
        Onceiot__Usage__V1__BatchResult *out;
        rpc_status_t st;
        if (usage_h_ingest(w->a, id, recs, PER_BATCH, &out, &st) < 0 && w->failures++ == 0)
            snprintf(w->first, sizeof(w->first), "%s: %s %s", id, err_grpc_name(st.code),
                     st.message);
    }
    return NULL;
}

Test(usage_ingest, random_concurrent_ingest_keeps_every_rollup_exact)
{
    const char *sims[SIMS];
    for (int i = 0; i < SIMS; i++)
        sims[i] = usage_h_sim(1 + i % 3, 100 + i, 1000000000000, 1000000);
    writer_t w[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (writer_t){.id = i, .a = sims_h_thread_arena(), .sims = sims, .seed = 77u + i};
        pthread_create(&th[i], NULL, write_batches, &w[i]);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < THREADS; i++)
        cr_assert_eq(w[i].failures, 0, "writer %d: %d failures, first %s", i, w[i].failures,
                     w[i].first);
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM usage.sim_usage WHERE batch_id LIKE "
                                 "'rand-%'"),
                 (long long)THREADS * (BATCHES - BATCHES / 4) * PER_BATCH);
    usage_h_assert_rollups_exact();
}

Test(usage_ingest, the_organizations_rows_fold_into_one_a_day_and_stay_exact)
{
    int64_t h = usage_h_hour_us() - 3 * DAY;
    for (int b = 0; b < 12; b++) {
        usage_rec_t *recs[] = {
            usage_h_rec(arena, sim1, h + (b % 3) * DAY + b, 100 + b, 5, b % 2, 0, "DE", "262",
                        "01"),
            usage_h_rec(arena, sim2, h + (b % 2) * DAY + b, 7, 1, 0, 1, NULL, NULL, NULL),
            usage_h_rec(arena, sim3, h + b * HOUR, 1, 1, 1, 1, "FR", "208", "10"),
        };
        char id[32];
        snprintf(id, sizeof(id), "fold-%d", b);
        Onceiot__Usage__V1__BatchResult *r;
        rpc_status_t st;
        cr_assert_eq(usage_h_ingest(arena, id, recs, 3, &r, &st), 0, "%s", st.message);
    }
    /* The compaction (every second here) leaves one row per organization
     * and day, each as exact as the per-batch rows were. */
    long long unfolded = -1;
    for (int i = 0; i < 100 && unfolded != 0; i++) {
        unfolded =
            usage_h_sql_int("SELECT count(*) FROM usage.org_usage_daily WHERE batch_id <> ''");
        if (unfolded)
            usleep(100000);
    }
    cr_assert_eq(unfolded, 0, "rows still unfolded after 10 s");
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM usage.org_usage_daily"),
                 usage_h_sql_int("SELECT count(DISTINCT (organization_id, (\"timestamp\" AT TIME "
                                 "ZONE 'UTC')::date)) FROM usage.sim_usage"));
    usage_h_assert_rollups_exact();
    /* A later batch adds a row of its own, folded in turn. */
    usage_rec_t *late[] = {usage_h_rec(arena, sim1, h, 5, 5, 0, 0, NULL, NULL, NULL)};
    Onceiot__Usage__V1__BatchResult *r;
    rpc_status_t st;
    cr_assert_eq(usage_h_ingest(arena, "fold-late", late, 1, &r, &st), 0, "%s", st.message);
    usage_h_assert_rollups_exact();
}
