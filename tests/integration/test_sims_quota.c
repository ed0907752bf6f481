/* Quotas against a real onceiot-sims: GetQuota, TopUpQuota, SetQuotaPolicy and
 * ApplyUsage (events, idempotency, concurrent batches). */
#include "sims_harness.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

TestSuite(sims_quota, .init = sims_h_start, .fini = sims_h_stop, .timeout = 180);

#define DATA  ONCEIOT__SIMS__V1__QUOTA_TYPE__QUOTA_TYPE_DATA
#define SMS   ONCEIOT__SIMS__V1__QUOTA_TYPE__QUOTA_TYPE_SMS
#define QUOTA (&onceiot__sims__v1__quota__descriptor)

static int get_quota(const principal_t *who, const char *iccid, int type,
                     Onceiot__Sims__V1__Quota **out, rpc_status_t *st)
{
    Onceiot__Sims__V1__GetQuotaRequest req = ONCEIOT__SIMS__V1__GET_QUOTA_REQUEST__INIT;
    req.iccid = (char *)iccid;
    req.quota_type = type;
    return sims_h_call("GetQuota", &req.base, QUOTA, who, NULL, (ProtobufCMessage **)out, st);
}

static int apply(const principal_t *who, arena_t *a, const char *batch, const char *iccid,
                 int64_t bytes, int64_t sms, Onceiot__Sims__V1__ApplyUsageResponse **out,
                 rpc_status_t *st)
{
    Onceiot__Sims__V1__UsageItem item = ONCEIOT__SIMS__V1__USAGE_ITEM__INIT;
    item.iccid = (char *)iccid;
    item.data_bytes = bytes;
    item.sms_count = sms;
    Onceiot__Sims__V1__UsageItem *items[] = {&item};
    Onceiot__Sims__V1__ApplyUsageRequest req = ONCEIOT__SIMS__V1__APPLY_USAGE_REQUEST__INIT;
    req.batch_id = (char *)batch;
    req.items = items;
    req.n_items = 1;
    return sims_h_call("ApplyUsage", &req.base,
                       &onceiot__sims__v1__apply_usage_response__descriptor, who, a,
                       (ProtobufCMessage **)out, st);
}

static size_t count_events(const principal_t *who, const char *iccid, const char *type)
{
    Onceiot__Sims__V1__ListEventsRequest req = ONCEIOT__SIMS__V1__LIST_EVENTS_REQUEST__INIT;
    req.iccid = (char *)iccid;
    req.event_type = (char *)type;
    ProtobufCMessage *resp;
    rpc_status_t st;
    cr_assert_eq(sims_h_call("ListEvents", &req.base,
                             &onceiot__sims__v1__list_events_response__descriptor, who, NULL, &resp,
                             &st),
                 0, "%s", st.message);
    return ((Onceiot__Sims__V1__ListEventsResponse *)resp)->n_events;
}

Test(sims_quota, get_quota_returns_the_initial_volume_and_not_found_without_one)
{
    principal_t u = sims_h_user(1), staff = sims_h_root();
    Onceiot__Sims__V1__SimInput in = ONCEIOT__SIMS__V1__SIM_INPUT__INIT;
    in.iccid = (char *)sims_h_iccid(1);
    in.data_volume = 5000;
    in.organization_id = 1;
    Onceiot__Sims__V1__CreateSimRequest creq = ONCEIOT__SIMS__V1__CREATE_SIM_REQUEST__INIT;
    creq.sim = &in;
    ProtobufCMessage *resp;
    rpc_status_t st;
    cr_assert_eq(sims_h_call("CreateSim", &creq.base, &onceiot__sims__v1__sim__descriptor, &staff,
                             NULL, &resp, &st),
                 0, "%s", st.message);
    Onceiot__Sims__V1__Quota *q;
    cr_assert_eq(get_quota(&u, in.iccid, DATA, &q, &st), 0, "%s", st.message);
    cr_assert_eq(q->volume, 5000);
    cr_assert_eq(q->remaining_volume, 5000);
    cr_assert_eq(q->threshold_percentage, 80);
    cr_assert_eq(q->threshold_volume, 4000);
    cr_assert_eq(get_quota(&u, in.iccid, SMS, &q, &st), ERR_NOT_FOUND);
    cr_assert_eq(get_quota(&u, in.iccid, 0, &q, &st), ERR_INVALID_ARGUMENT);
    principal_t other = sims_h_user(2);
    cr_assert_eq(get_quota(&other, in.iccid, DATA, &q, &st), ERR_NOT_FOUND);
}

Test(sims_quota, top_up_adds_volume_and_records_quota_added)
{
    principal_t u = sims_h_user(1);
    const char *iccid = sims_h_iccid(2);
    sims_h_create(&u, iccid);
    Onceiot__Sims__V1__TopUpQuotaRequest req = ONCEIOT__SIMS__V1__TOP_UP_QUOTA_REQUEST__INIT;
    req.iccid = (char *)iccid;
    req.quota_type = DATA;
    req.volume = 500;
    Onceiot__Sims__V1__Quota *q;
    rpc_status_t st;
    cr_assert_eq(
        sims_h_call("TopUpQuota", &req.base, QUOTA, &u, NULL, (ProtobufCMessage **)&q, &st), 0,
        "%s", st.message);
    cr_assert_eq(q->volume, 1500);
    cr_assert_eq(q->last_volume_added, 500);
    cr_assert_eq(count_events(&u, iccid, "quota_added"), 1);
    req.volume = 0;
    cr_assert_eq(
        sims_h_call("TopUpQuota", &req.base, QUOTA, &u, NULL, (ProtobufCMessage **)&q, &st),
        ERR_INVALID_ARGUMENT);
    req.volume = 5;
    principal_t other = sims_h_user(2);
    cr_assert_eq(
        sims_h_call("TopUpQuota", &req.base, QUOTA, &other, NULL, (ProtobufCMessage **)&q, &st),
        ERR_NOT_FOUND);
}

Test(sims_quota, quota_policy_is_validated_and_moves_the_threshold)
{
    principal_t u = sims_h_user(1);
    const char *iccid = sims_h_iccid(3);
    sims_h_create(&u, iccid);
    Onceiot__Sims__V1__SetQuotaPolicyRequest req =
        ONCEIOT__SIMS__V1__SET_QUOTA_POLICY_REQUEST__INIT;
    req.iccid = (char *)iccid;
    req.quota_type = DATA;
    Onceiot__Sims__V1__Quota *q;
    rpc_status_t st;
    int bad[] = {0, 101, -5};
    for (int i = 0; i < 3; i++) {
        req.threshold_percentage = bad[i];
        cr_assert_eq(
            sims_h_call("SetQuotaPolicy", &req.base, QUOTA, &u, NULL, (ProtobufCMessage **)&q, &st),
            ERR_INVALID_ARGUMENT);
    }
    req.threshold_percentage = 50;
    req.auto_reload = true;
    cr_assert_eq(
        sims_h_call("SetQuotaPolicy", &req.base, QUOTA, &u, NULL, (ProtobufCMessage **)&q, &st),
        ERR_INVALID_ARGUMENT, "auto reload needs an amount");
    req.auto_reload_amount = 250;
    cr_assert_eq(
        sims_h_call("SetQuotaPolicy", &req.base, QUOTA, &u, NULL, (ProtobufCMessage **)&q, &st), 0,
        "%s", st.message);
    cr_assert_eq(q->threshold_volume, 500);
    cr_assert(q->auto_reload);
    cr_assert_eq(q->auto_reload_amount, 250);
}

Test(sims_quota, usage_records_threshold_depletion_and_auto_reload_events)
{
    principal_t u = sims_h_user(1);
    const char *iccid = sims_h_iccid(4);
    sims_h_create(&u, iccid); /* data 1000, threshold 80 % */
    Onceiot__Sims__V1__ApplyUsageResponse *r;
    rpc_status_t st;
    cr_assert_eq(apply(&u, NULL, "b1", iccid, 700, 0, &r, &st), 0, "%s", st.message);
    cr_assert_eq(r->outcomes[0]->data_remaining, 300);
    cr_assert_eq(r->outcomes[0]->n_events, 0);
    cr_assert_eq(apply(&u, NULL, "b2", iccid, 150, 0, &r, &st), 0, "%s", st.message);
    cr_assert_eq(r->outcomes[0]->n_events, 1);
    cr_assert_str_eq(r->outcomes[0]->events[0], "quota_threshold_reached");
    cr_assert_eq(apply(&u, NULL, "b3", iccid, 150, 0, &r, &st), 0, "%s", st.message);
    cr_assert_eq(r->outcomes[0]->data_remaining, 0);
    cr_assert_str_eq(r->outcomes[0]->events[0], "quota_depleted");
    cr_assert_eq(count_events(&u, iccid, "quota_threshold_reached"), 1);
    cr_assert_eq(count_events(&u, iccid, "quota_depleted"), 1);

    Onceiot__Sims__V1__SetQuotaPolicyRequest pol =
        ONCEIOT__SIMS__V1__SET_QUOTA_POLICY_REQUEST__INIT;
    pol.iccid = (char *)iccid;
    pol.quota_type = DATA;
    pol.threshold_percentage = 80;
    pol.auto_reload = true;
    pol.auto_reload_amount = 1000;
    ProtobufCMessage *resp;
    cr_assert_eq(sims_h_call("SetQuotaPolicy", &pol.base, QUOTA, &u, NULL, &resp, &st), 0);
    Onceiot__Sims__V1__TopUpQuotaRequest top = ONCEIOT__SIMS__V1__TOP_UP_QUOTA_REQUEST__INIT;
    top.iccid = (char *)iccid;
    top.quota_type = DATA;
    top.volume = 100;
    cr_assert_eq(sims_h_call("TopUpQuota", &top.base, QUOTA, &u, NULL, &resp, &st), 0);
    cr_assert_eq(apply(&u, NULL, "b4", iccid, 100, 0, &r, &st), 0, "%s", st.message);
    cr_assert_eq(r->outcomes[0]->n_events, 2, "depleted, then reloaded");
    cr_assert_str_eq(r->outcomes[0]->events[1], "auto_topup_triggered");
    cr_assert_eq(r->outcomes[0]->data_remaining, 1000);
    cr_assert_eq(count_events(&u, iccid, "auto_topup_triggered"), 1);
}

Test(sims_quota, a_repeated_batch_changes_nothing_and_returns_the_first_answer)
{
    principal_t u = sims_h_user(1);
    const char *iccid = sims_h_iccid(5);
    sims_h_create(&u, iccid);
    Onceiot__Sims__V1__ApplyUsageResponse *r1, *r2;
    rpc_status_t st;
    cr_assert_eq(apply(&u, NULL, "batch-x", iccid, 850, 1, &r1, &st), 0, "%s", st.message);
    cr_assert(!r1->replayed);
    cr_assert_eq(apply(&u, NULL, "batch-x", iccid, 850, 1, &r2, &st), 0, "%s", st.message);
    cr_assert(r2->replayed);
    cr_assert_eq(r2->outcomes[0]->data_remaining, r1->outcomes[0]->data_remaining);
    cr_assert_eq(r2->outcomes[0]->n_events, r1->outcomes[0]->n_events);
    Onceiot__Sims__V1__Quota *q;
    cr_assert_eq(get_quota(&u, iccid, DATA, &q, &st), 0);
    cr_assert_eq(q->used_volume, 850, "applied once");
    cr_assert_eq(get_quota(&u, iccid, SMS, &q, &st), 0);
    cr_assert_eq(q->used_volume, 1);
    cr_assert_eq(count_events(&u, iccid, "quota_threshold_reached"), 1);
}

Test(sims_quota, a_batch_naming_an_unknown_sim_applies_nothing)
{
    principal_t u = sims_h_user(1);
    const char *iccid = sims_h_iccid(6);
    sims_h_create(&u, iccid);
    Onceiot__Sims__V1__UsageItem a = ONCEIOT__SIMS__V1__USAGE_ITEM__INIT, b = a;
    a.iccid = (char *)iccid;
    a.data_bytes = 10;
    b.iccid = (char *)sims_h_iccid(999);
    b.data_bytes = 10;
    Onceiot__Sims__V1__UsageItem *items[] = {&a, &b};
    Onceiot__Sims__V1__ApplyUsageRequest req = ONCEIOT__SIMS__V1__APPLY_USAGE_REQUEST__INIT;
    req.batch_id = "with-unknown";
    req.items = items;
    req.n_items = 2;
    ProtobufCMessage *resp;
    rpc_status_t st;
    cr_assert_eq(sims_h_call("ApplyUsage", &req.base,
                             &onceiot__sims__v1__apply_usage_response__descriptor, &u, NULL, &resp,
                             &st),
                 ERR_NOT_FOUND);
    cr_assert(strstr(st.message, b.iccid), "%s", st.message);
    Onceiot__Sims__V1__Quota *q;
    cr_assert_eq(get_quota(&u, iccid, DATA, &q, &st), 0);
    cr_assert_eq(q->used_volume, 0);
    /* The id was not used up: the corrected batch goes through. */
    req.n_items = 1;
    cr_assert_eq(sims_h_call("ApplyUsage", &req.base,
                             &onceiot__sims__v1__apply_usage_response__descriptor, &u, NULL, &resp,
                             &st),
                 0, "%s", st.message);
    a.data_bytes = -1;
    req.batch_id = "negative";
    cr_assert_eq(sims_h_call("ApplyUsage", &req.base,
                             &onceiot__sims__v1__apply_usage_response__descriptor, &u, NULL, &resp,
                             &st),
                 ERR_INVALID_ARGUMENT);
    req.batch_id = "";
    a.data_bytes = 1;
    cr_assert_eq(sims_h_call("ApplyUsage", &req.base,
                             &onceiot__sims__v1__apply_usage_response__descriptor, &u, NULL, &resp,
                             &st),
                 ERR_INVALID_ARGUMENT);
}

#define THREADS 6
#define BATCHES 30
#define AMOUNT  4 /* (6 * 30 + 30) * 4 = 840 of 1000 bytes: the 80 % threshold is crossed once */

typedef struct worker {
    int n;
    const char *iccid;
    arena_t *arena;
    pthread_barrier_t *together; /* the shared batches start at once in every thread */
    int failures;                /* calls that failed or answered wrongly */
    char error[256];             /* the first of them */
    int applied_shared;          /* shared batches this worker's call applied (not replayed) */
    int thresholds;              /* quota_threshold_reached in the answers it applied */
} worker_t;

/* Records a failure of w; assertions stay in the test's own thread. */
static void worker_fail(worker_t *w, const char *what, const char *batch, const rpc_status_t *st)
{
    if (w->failures++ == 0)
        snprintf(w->error, sizeof(w->error), "%s %s: %s: %s", what, batch,
                 st ? err_grpc_name(st->code) : "-", st ? st->message : "");
}

static int thresholds_in(const Onceiot__Sims__V1__ApplyUsageResponse *r)
{
    int n = 0;
    for (size_t i = 0; i < r->n_outcomes; i++)
        for (size_t k = 0; k < r->outcomes[i]->n_events; k++)
            n += strcmp(r->outcomes[i]->events[k], "quota_threshold_reached") == 0;
    return n;
}

/* Each round: a batch of the worker's own, sent twice (the retry must be a
 * no-op), then one batch id every worker sends at the same moment (only one
 * of them may apply it). */
static void *run_batches(void *arg)
{
    worker_t *w = arg;
    principal_t u = sims_h_user(1);
    for (int i = 0; i < BATCHES; i++) {
        char batch[64];
        snprintf(batch, sizeof(batch), "w%d-%d", w->n, i);
        Onceiot__Sims__V1__ApplyUsageResponse *r;
        rpc_status_t st;
        for (int k = 0; k < 2; k++) {
            if (apply(&u, w->arena, batch, w->iccid, AMOUNT, 0, &r, &st) != 0)
                worker_fail(w, "ApplyUsage", batch, &st);
            else if (r->replayed != (k == 1))
                worker_fail(w, k ? "a retry was applied again" : "a new batch was replayed", batch,
                            NULL);
            else if (!r->replayed)
                w->thresholds += thresholds_in(r);
        }
        snprintf(batch, sizeof(batch), "shared-%d", i);
        pthread_barrier_wait(w->together);
        if (apply(&u, w->arena, batch, w->iccid, AMOUNT, 0, &r, &st) != 0) {
            worker_fail(w, "ApplyUsage", batch, &st);
        } else if (!r->replayed) {
            w->applied_shared++;
            w->thresholds += thresholds_in(r);
        }
    }
    return NULL;
}

Test(sims_quota, concurrent_batches_for_one_sim_lose_no_update_and_apply_each_once)
{
    principal_t u = sims_h_user(1);
    const char *iccid = sims_h_iccid(7);
    sims_h_create(&u, iccid);
    pthread_barrier_t together;
    cr_assert_eq(pthread_barrier_init(&together, NULL, THREADS), 0);
    pthread_t th[THREADS];
    worker_t w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker_t){.n = i, .iccid = iccid, .together = &together};
        w[i].arena = sims_h_thread_arena();
        cr_assert_eq(pthread_create(&th[i], NULL, run_batches, &w[i]), 0);
    }
    int applied_shared = 0, thresholds = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        applied_shared += w[i].applied_shared;
        thresholds += w[i].thresholds;
    }
    pthread_barrier_destroy(&together);
    for (int i = 0; i < THREADS; i++)
        cr_assert_eq(w[i].failures, 0, "worker %d: %d failures, first: %s", i, w[i].failures,
                     w[i].error);
    cr_assert_eq(applied_shared, BATCHES, "each batch id sent by %d threads at once applied once",
                 THREADS);
    cr_assert_eq(thresholds, 1, "quota_threshold_reached answered once");
    cr_assert_eq(count_events(&u, iccid, "quota_threshold_reached"), 1, "and recorded once");
    Onceiot__Sims__V1__Quota *q;
    rpc_status_t st;
    cr_assert_eq(get_quota(&u, iccid, DATA, &q, &st), 0);
    cr_assert_eq(q->used_volume, (THREADS + 1) * BATCHES * AMOUNT);
    cr_assert_eq(q->remaining_volume, 1000 - (THREADS + 1) * BATCHES * AMOUNT);
    cr_assert(q->threshold_reached);
}

Test(sims_quota, policy_and_usage_for_another_organizations_sim_are_not_found)
{
    principal_t owner = sims_h_user(1), other = sims_h_user(2);
    const char *iccid = sims_h_iccid(8);
    sims_h_create(&owner, iccid);
    Onceiot__Sims__V1__SetQuotaPolicyRequest pol =
        ONCEIOT__SIMS__V1__SET_QUOTA_POLICY_REQUEST__INIT;
    pol.iccid = (char *)iccid;
    pol.quota_type = DATA;
    pol.threshold_percentage = 10;
    ProtobufCMessage *resp;
    rpc_status_t st;
    cr_assert_eq(sims_h_call("SetQuotaPolicy", &pol.base, QUOTA, &other, NULL, &resp, &st),
                 ERR_NOT_FOUND);
    Onceiot__Sims__V1__ApplyUsageResponse *r;
    cr_assert_eq(apply(&other, NULL, "foreign", iccid, 10, 0, &r, &st), ERR_NOT_FOUND);
    Onceiot__Sims__V1__Quota *q;
    cr_assert_eq(get_quota(&owner, iccid, DATA, &q, &st), 0);
    cr_assert_eq(q->threshold_percentage, 80);
    cr_assert_eq(q->used_volume, 0);
}
