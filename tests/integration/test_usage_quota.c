/* Quota accounting from ingested usage, exactly once across crashes: each
 * committed batch's per-SIM usage reaches sims' quotas through the outbox,
 * whatever is killed when, and crossing a threshold produces the sims event
 * a WatchEvents subscriber sees. Real onceiot-sims and onceiot-usage
 * processes on the test PostgreSQL. */
#include "pg_harness.h"
#include "usage_harness.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HOUR (3600LL * 1000000)
#define DATA ONCEIOT__SIMS__V1__QUOTA_TYPE__QUOTA_TYPE_DATA
#define SMS  ONCEIOT__SIMS__V1__QUOTA_TYPE__QUOTA_TYPE_SMS

USAGE_H_SUITE(usage_quota);

static int64_t used(const char *iccid, Onceiot__Sims__V1__QuotaType t)
{
    Onceiot__Sims__V1__GetQuotaRequest req = ONCEIOT__SIMS__V1__GET_QUOTA_REQUEST__INIT;
    req.iccid = (char *)iccid;
    req.quota_type = t;
    principal_t root = sims_h_root();
    ProtobufCMessage *resp;
    rpc_status_t st;
    cr_assert_eq(sims_h_call("GetQuota", &req.base, &onceiot__sims__v1__quota__descriptor, &root,
                             arena, &resp, &st),
                 0, "GetQuota %s: %s", iccid, st.message);
    return ((Onceiot__Sims__V1__Quota *)resp)->used_volume;
}

/* What the test sent and expects the quotas to show. */
typedef struct expect {
    const char *sims[4];
    int64_t data[4], sms[4];
    int batches;
} expect_t;

/* Ingests one batch of 4 records per SIM (prefix-<k>), adding to e. */
static void ingest(expect_t *e, const char *prefix)
{
    usage_rec_t *recs[16];
    int64_t h = usage_h_hour_us() - 2 * HOUR;
    for (int s = 0; s < 4; s++)
        for (int i = 0; i < 4; i++) {
            int64_t rx = 1000 + 10 * e->batches + i, tx = 7 + s;
            int32_t mo = (i + e->batches) % 2, mt = 1;
            recs[s * 4 + i] =
                usage_h_rec(arena, e->sims[s], h + i * 1000000LL, rx, tx, mo, mt, NULL, NULL, NULL);
            e->data[s] += rx + tx;
            e->sms[s] += mo; /* MT SMS are charged by SendSms, not again here */
        }
    Onceiot__Usage__V1__BatchResult *r;
    rpc_status_t st;
    const char *id = arena_printf(arena, "%s-%d", prefix, e->batches++);
    cr_assert_eq(usage_h_ingest(arena, id, recs, 16, &r, &st), 0, "%s: %s", id, st.message);
    cr_assert(!r->replayed);
}

static void make_sims(expect_t *e, long long base)
{
    memset(e, 0, sizeof(*e));
    for (int s = 0; s < 4; s++)
        e->sims[s] = usage_h_sim(1 + s % 2, base + s, 1000000000000, 1000000);
}

static void assert_quotas(const expect_t *e)
{
    cr_assert(usage_h_wait_outbox_empty(60000), "the outbox did not drain (%lld pending)",
              usage_h_sql_int("SELECT count(*) FROM usage.outbox"));
    for (int s = 0; s < 4; s++) {
        cr_assert_eq(used(e->sims[s], DATA), e->data[s], "data of SIM %d", s);
        cr_assert_eq(used(e->sims[s], SMS), e->sms[s], "SMS of SIM %d", s);
    }
}

Test(usage_quota, each_batch_reaches_the_quotas_exactly_once)
{
    expect_t e;
    make_sims(&e, 200);
    for (int b = 0; b < 3; b++)
        ingest(&e, "once");
    assert_quotas(&e);
    /* A replayed batch adds nothing, to usage or to the quotas. */
    e.batches = 1;
    usage_rec_t *recs[] = {
        usage_h_rec(arena, e.sims[0], usage_h_now_us(), 5, 5, 1, 0, NULL, NULL, NULL)};
    Onceiot__Usage__V1__BatchResult *r;
    rpc_status_t st;
    cr_assert_eq(usage_h_ingest(arena, "once-1", recs, 1, &r, &st), 0, "%s", st.message);
    cr_assert(r->replayed);
    assert_quotas(&e);
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM sims.processed_usage_batches WHERE "
                                 "batch_id LIKE 'once-%'"),
                 3);
}

Test(usage_quota, kill_9_of_usage_mid_dispatch_loses_and_doubles_nothing)
{
    expect_t e;
    make_sims(&e, 300);
    ingest(&e, "kill"); /* the ICCIDs are cached from here on */
    cr_assert(usage_h_wait_outbox_empty(30000));
    /* A frozen sims holds the dispatcher inside ApplyUsage with its rows
     * leased; usage dies there; sims then runs whatever reached it. */
    usage_h_freeze_sims();
    for (int b = 0; b < 5; b++)
        ingest(&e, "kill");
    usage_h_kill_usage_while_leased();
    /* And killed again at random moments while it delivers. */
    for (int round = 0; round < 3; round++) {
        for (int b = 0; b < 6; b++)
            ingest(&e, "kill");
        usleep((useconds_t)(rand() % 40000));
        usage_h_restart_usage(SIGKILL);
    }
    assert_quotas(&e);
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM sims.processed_usage_batches WHERE "
                                 "batch_id LIKE 'kill-%'"),
                 e.batches);
}

Test(usage_quota, batches_wait_while_sims_is_down_and_arrive_once_it_is_back)
{
    expect_t e;
    make_sims(&e, 400);
    ingest(&e, "down");
    cr_assert(usage_h_wait_outbox_empty(30000));
    usage_h_stop_sims();
    for (int b = 0; b < 5; b++)
        ingest(&e, "down"); /* cached ICCIDs: ingest goes on without sims */
    /* The lag shows in GetIngestStatus. */
    principal_t op = usage_h_operator();
    Onceiot__Usage__V1__GetIngestStatusRequest req =
        ONCEIOT__USAGE__V1__GET_INGEST_STATUS_REQUEST__INIT;
    Onceiot__Usage__V1__IngestStatus *s = NULL;
    for (int i = 0; i < 100; i++) {
        rpc_status_t st;
        cr_assert_eq(usage_h_call("GetIngestStatus", &req.base,
                                  &onceiot__usage__v1__ingest_status__descriptor, &op, arena, &s,
                                  &st),
                     0, "%s", st.message);
        if (s->outbox_last_error[0])
            break;
        usleep(50000);
    }
    cr_assert_eq(s->outbox_pending, 5);
    cr_assert_gt(s->outbox_oldest_age_ms, 0);
    cr_assert(strstr(s->outbox_last_error, "UNAVAILABLE"), "%s", s->outbox_last_error);
    cr_assert_geq(s->n_recent_batches, 6);
    cr_assert_str_eq(s->recent_batches[0]->batch_id, "down-5");
    usage_h_start_sims();
    assert_quotas(&e);
}

typedef struct policy_writer {
    const char *iccid;
    arena_t *a;
    bool stop;
    int failures;
    char first[200];
} policy_writer_t;

static void *write_policy(void *p)
{
    policy_writer_t *w = p;
    principal_t admin = sims_h_admin(3);
    while (!__atomic_load_n(&w->stop, __ATOMIC_SEQ_CST)) {
        Onceiot__Sims__V1__SetQuotaPolicyRequest req =
            ONCEIOT__SIMS__V1__SET_QUOTA_POLICY_REQUEST__INIT;
        req.iccid = (char *)w->iccid;
        req.quota_type = DATA;
        req.threshold_percentage = 80;
        ProtobufCMessage *resp;
        rpc_status_t st;
        if (sims_h_call("SetQuotaPolicy", &req.base, &onceiot__sims__v1__quota__descriptor, &admin,
                        w->a, &resp, &st) < 0 &&
            w->failures++ == 0)
            snprintf(w->first, sizeof(w->first), "%s", st.message);
        usleep(50000);
    }
    return NULL;
}

Test(usage_quota, ingested_usage_crossing_a_threshold_reaches_a_watcher)
{
    const char *iccid = usage_h_sim(3, 500, 1000, 10); /* threshold 80%: 800 bytes */
    rpc_stream_t *s = usage_h_watch(arena, 3, iccid, NULL);
    /* Events written before sims registered the watch are not sent: a
     * writer changes the SIM's policy (same values) until one arrives. */
    policy_writer_t w = {.iccid = iccid, .a = sims_h_thread_arena()};
    pthread_t th;
    pthread_create(&th, NULL, write_policy, &w);
    ProtobufCMessage *first = NULL;
    int frc = rpc_stream_recv(s, &onceiot__sims__v1__sim_event__descriptor, &first);
    __atomic_store_n(&w.stop, true, __ATOMIC_SEQ_CST);
    pthread_join(th, NULL);
    cr_assert_eq(frc, 1, "no event reached the watcher");
    cr_assert_eq(w.failures, 0, "SetQuotaPolicy failed: %s", w.first);
    usage_rec_t *recs[] = {
        usage_h_rec(arena, iccid, usage_h_now_us() - 1000000, 500, 0, 0, 0, NULL, NULL, NULL),
        usage_h_rec(arena, iccid, usage_h_now_us() - 500000, 300, 50, 0, 0, NULL, NULL, NULL)};
    Onceiot__Usage__V1__BatchResult *r;
    rpc_status_t st;
    cr_assert_eq(usage_h_ingest(arena, "threshold-1", recs, 2, &r, &st), 0, "%s", st.message);
    bool seen = false;
    while (!seen) {
        ProtobufCMessage *m;
        int rc = rpc_stream_recv(s, &onceiot__sims__v1__sim_event__descriptor, &m);
        cr_assert_eq(rc, 1, "the stream ended before quota_threshold_reached");
        const Onceiot__Sims__V1__SimEvent *ev = (const void *)m;
        cr_assert_str_eq(ev->iccid, iccid);
        seen = strcmp(ev->event_type, "quota_threshold_reached") == 0;
        if (seen)
            cr_assert_str_eq(ev->triggered_by, "service:usage");
    }
    rpc_stream_cancel(s);
    rpc_stream_finish(s, &st);
    cr_assert_eq(used(iccid, DATA), 850);
}
