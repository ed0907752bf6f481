/* Quotas against a real onceiot-sims: GetQuota, TopUpQuota, SetQuotaPolicy and
 * ApplyUsage (events, idempotency, concurrent batches). */
#include "sims_harness.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

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

/* Sends req as who; the answer is in a (the harness's arena when NULL). */
static int apply_req(const principal_t *who, arena_t *a,
                     const Onceiot__Sims__V1__ApplyUsageRequest *req, ProtobufCMessage **out,
                     rpc_status_t *st)
{
    return sims_h_call("ApplyUsage", &req->base,
                       &onceiot__sims__v1__apply_usage_response__descriptor, who, a, out, st);
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
    return apply_req(who, a, &req, (ProtobufCMessage **)out, st);
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

/* Sets the data quota's threshold and auto-reload by amount. */
static void set_auto_reload(const principal_t *who, const char *iccid, int pct, int64_t amount)
{
    Onceiot__Sims__V1__SetQuotaPolicyRequest pol =
        ONCEIOT__SIMS__V1__SET_QUOTA_POLICY_REQUEST__INIT;
    pol.iccid = (char *)iccid;
    pol.quota_type = DATA;
    pol.threshold_percentage = pct;
    pol.auto_reload = true;
    pol.auto_reload_amount = amount;
    ProtobufCMessage *resp;
    rpc_status_t st;
    cr_assert_eq(sims_h_call("SetQuotaPolicy", &pol.base, QUOTA, who, NULL, &resp, &st), 0, "%s",
                 st.message);
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

    set_auto_reload(&u, iccid, 80, 1000);
    ProtobufCMessage *resp;
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
    cr_assert_eq(apply_req(&u, NULL, &req, &resp, &st), ERR_NOT_FOUND);
    cr_assert(strstr(st.message, b.iccid), "%s", st.message);
    Onceiot__Sims__V1__Quota *q;
    cr_assert_eq(get_quota(&u, iccid, DATA, &q, &st), 0);
    cr_assert_eq(q->used_volume, 0);
    /* The id was not used up: the corrected batch goes through. */
    req.n_items = 1;
    cr_assert_eq(apply_req(&u, NULL, &req, &resp, &st), 0, "%s", st.message);
    a.data_bytes = -1;
    req.batch_id = "negative";
    cr_assert_eq(apply_req(&u, NULL, &req, &resp, &st), ERR_INVALID_ARGUMENT);
    req.batch_id = "";
    a.data_bytes = 1;
    cr_assert_eq(apply_req(&u, NULL, &req, &resp, &st), ERR_INVALID_ARGUMENT);
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

/* Registers a SIM of organization 1 with the given volumes (0: no quota of
 * that type, unmetered). */
static void create_sim(const char *iccid, int64_t data, int64_t sms)
{
    Onceiot__Sims__V1__SimInput in = ONCEIOT__SIMS__V1__SIM_INPUT__INIT;
    in.iccid = (char *)iccid;
    in.organization_id = 1;
    in.data_volume = data;
    in.sms_volume = sms;
    Onceiot__Sims__V1__CreateSimRequest req = ONCEIOT__SIMS__V1__CREATE_SIM_REQUEST__INIT;
    req.sim = &in;
    principal_t staff = sims_h_root();
    ProtobufCMessage *resp;
    rpc_status_t st;
    cr_assert_eq(sims_h_call("CreateSim", &req.base, &onceiot__sims__v1__sim__descriptor, &staff,
                             NULL, &resp, &st),
                 0, "CreateSim %s: %s", iccid, st.message);
}

#define BIG 240 /* SIMs in the large batch */

/* SIM k of the large batch: its usage, and the answer the quota rules give
 * for it (data 1000 with the threshold at 800, SMS 10 with it at 8; every
 * seventh SIM reloads 1000 bytes when depleted; every eleventh has no SMS
 * quota). */
typedef struct big_case {
    char iccid[24];
    int64_t data, sms;
    int64_t data_left, sms_left;
    const char *events[6];
    size_t n_events;
} big_case_t;

static void big_case(long k, big_case_t *c)
{
    static const int64_t data[] = {0, 300, 850, 1000, 1200};
    static const int64_t sms[] = {0, 5, 10};
    memset(c, 0, sizeof(*c));
    snprintf(c->iccid, sizeof(c->iccid), "%s", sims_h_iccid(1000 + k));
    c->data = data[k % 5];
    c->sms = sms[k % 3];
    bool reload = k % 7 == 0, sms_quota = k % 11 != 0;
    c->data_left = c->data >= 1000 ? 0 : 1000 - c->data;
    if (c->data >= 800)
        c->events[c->n_events++] = "quota_threshold_reached";
    if (c->data >= 1000) {
        c->events[c->n_events++] = "quota_depleted";
        if (reload) {
            c->events[c->n_events++] = "auto_topup_triggered";
            c->data_left = 2000 - c->data;
        }
    }
    c->sms_left = sms_quota ? 10 - c->sms : -1;
    if (sms_quota && c->sms >= 8)
        c->events[c->n_events++] = "quota_threshold_reached";
    if (sms_quota && c->sms >= 10)
        c->events[c->n_events++] = "quota_depleted";
}

Test(sims_quota, a_large_batch_gives_each_sim_its_own_outcome_and_events_once, .timeout = 300)
{
    principal_t u = sims_h_user(1);
    big_case_t *c = arena_alloc(sims_h.arena, BIG * sizeof(*c));
    Onceiot__Sims__V1__UsageItem *items = arena_alloc(sims_h.arena, (BIG + 1) * sizeof(*items));
    Onceiot__Sims__V1__UsageItem **ptrs = arena_alloc(sims_h.arena, (BIG + 1) * sizeof(*ptrs));
    for (long k = 0; k < BIG; k++) {
        big_case(k, &c[k]);
        create_sim(c[k].iccid, 1000, k % 11 ? 10 : 0);
        if (k % 7 == 0) {
            Onceiot__Sims__V1__SetQuotaPolicyRequest pol =
                ONCEIOT__SIMS__V1__SET_QUOTA_POLICY_REQUEST__INIT;
            pol.iccid = c[k].iccid;
            pol.quota_type = DATA;
            pol.threshold_percentage = 80;
            pol.auto_reload = true;
            pol.auto_reload_amount = 1000;
            ProtobufCMessage *resp;
            rpc_status_t st;
            cr_assert_eq(sims_h_call("SetQuotaPolicy", &pol.base, QUOTA, &u, NULL, &resp, &st), 0,
                         "%s", st.message);
        }
    }
    /* Sent in descending ICCID order, with an unknown SIM in the middle
     * first: the whole batch fails and nothing of it is applied. */
    for (long k = 0; k < BIG; k++) {
        onceiot__sims__v1__usage_item__init(&items[k]);
        items[k].iccid = c[BIG - 1 - k].iccid;
        items[k].data_bytes = c[BIG - 1 - k].data;
        items[k].sms_count = c[BIG - 1 - k].sms;
        ptrs[k] = &items[k];
    }
    onceiot__sims__v1__usage_item__init(&items[BIG]);
    items[BIG].iccid = (char *)sims_h_iccid(999999);
    items[BIG].data_bytes = 1;
    Onceiot__Sims__V1__UsageItem *with_unknown[BIG + 1];
    for (long k = 0; k < BIG / 2; k++)
        with_unknown[k] = ptrs[k];
    with_unknown[BIG / 2] = &items[BIG];
    for (long k = BIG / 2; k < BIG; k++)
        with_unknown[k + 1] = ptrs[k];
    Onceiot__Sims__V1__ApplyUsageRequest req = ONCEIOT__SIMS__V1__APPLY_USAGE_REQUEST__INIT;
    req.batch_id = "big";
    req.items = with_unknown;
    req.n_items = BIG + 1;
    ProtobufCMessage *resp;
    rpc_status_t st;
    cr_assert_eq(apply_req(&u, NULL, &req, &resp, &st), ERR_NOT_FOUND);
    cr_assert(strstr(st.message, items[BIG].iccid), "%s", st.message);
    Onceiot__Sims__V1__Quota *q;
    for (long k = 0; k < BIG; k += 37) {
        cr_assert_eq(get_quota(&u, c[k].iccid, DATA, &q, &st), 0, "%s", st.message);
        cr_assert_eq(q->used_volume, 0, "SIM %ld: nothing applied", k);
    }

    req.items = ptrs;
    req.n_items = BIG;
    cr_assert_eq(apply_req(&u, NULL, &req, &resp, &st), 0, "%s", st.message);
    Onceiot__Sims__V1__ApplyUsageResponse *r = (void *)resp;
    cr_assert(!r->replayed);
    cr_assert_eq(r->n_outcomes, BIG);
    for (long k = 0; k < BIG; k++) {
        const Onceiot__Sims__V1__UsageOutcome *o = r->outcomes[k];
        cr_assert_str_eq(o->iccid, c[k].iccid, "outcomes in ICCID order");
        cr_assert_eq(o->data_remaining, c[k].data_left, "SIM %ld data", k);
        cr_assert_eq(o->sms_remaining, c[k].sms_left, "SIM %ld sms", k);
        cr_assert_eq(o->n_events, c[k].n_events, "SIM %ld events", k);
        for (size_t e = 0; e < o->n_events; e++)
            cr_assert_str_eq(o->events[e], c[k].events[e], "SIM %ld event %zu", k, e);
    }
    /* Recorded once each, and the quotas hold what the answer says. */
    for (long k = 0; k < 35; k++) {
        size_t thresholds = 0, depleted = 0, reloads = 0;
        for (size_t e = 0; e < c[k].n_events; e++) {
            thresholds += strcmp(c[k].events[e], "quota_threshold_reached") == 0;
            depleted += strcmp(c[k].events[e], "quota_depleted") == 0;
            reloads += strcmp(c[k].events[e], "auto_topup_triggered") == 0;
        }
        cr_assert_eq(count_events(&u, c[k].iccid, "quota_threshold_reached"), thresholds, "%ld", k);
        cr_assert_eq(count_events(&u, c[k].iccid, "quota_depleted"), depleted, "%ld", k);
        cr_assert_eq(count_events(&u, c[k].iccid, "auto_topup_triggered"), reloads, "%ld", k);
        cr_assert_eq(get_quota(&u, c[k].iccid, DATA, &q, &st), 0, "%s", st.message);
        cr_assert_eq(q->used_volume, c[k].data);
        cr_assert_eq(q->remaining_volume, c[k].data_left);
    }
    /* The replay answers the same, changes nothing. */
    cr_assert_eq(apply_req(&u, NULL, &req, &resp, &st), 0, "%s", st.message);
    Onceiot__Sims__V1__ApplyUsageResponse *again = (void *)resp;
    cr_assert(again->replayed);
    cr_assert_eq(again->n_outcomes, BIG);
    for (long k = 0; k < BIG; k++)
        cr_assert_eq(again->outcomes[k]->data_remaining, c[k].data_left);
    cr_assert_eq(get_quota(&u, c[3].iccid, DATA, &q, &st), 0);
    cr_assert_eq(q->used_volume, c[3].data);
}

Test(sims_quota, a_batch_naming_a_sim_twice_is_refused_and_applies_nothing)
{
    principal_t u = sims_h_user(1);
    const char *a = sims_h_iccid(20), *b = sims_h_iccid(21);
    create_sim(a, 1000, 10);
    create_sim(b, 1000, 10);
    Onceiot__Sims__V1__UsageItem x = ONCEIOT__SIMS__V1__USAGE_ITEM__INIT, y = x, z = x;
    x.iccid = (char *)a;
    x.data_bytes = 10;
    y.iccid = (char *)b;
    y.data_bytes = 10;
    z.iccid = (char *)a;
    z.data_bytes = 20;
    Onceiot__Sims__V1__UsageItem *items[] = {&x, &y, &z};
    Onceiot__Sims__V1__ApplyUsageRequest req = ONCEIOT__SIMS__V1__APPLY_USAGE_REQUEST__INIT;
    req.batch_id = "twice";
    req.items = items;
    req.n_items = 3;
    ProtobufCMessage *resp;
    rpc_status_t st;
    cr_assert_eq(apply_req(&u, NULL, &req, &resp, &st), ERR_INVALID_ARGUMENT, "%s", st.message);
    cr_assert(sims_h_violation(&st, "items[2].iccid"), "%s", st.message);
    Onceiot__Sims__V1__Quota *q;
    cr_assert_eq(get_quota(&u, a, DATA, &q, &st), 0);
    cr_assert_eq(q->used_volume, 0);
    cr_assert_eq(get_quota(&u, b, DATA, &q, &st), 0);
    cr_assert_eq(q->used_volume, 0);
    /* The id was not used up. */
    req.n_items = 2;
    cr_assert_eq(apply_req(&u, NULL, &req, &resp, &st), 0, "%s", st.message);
    cr_assert(!((Onceiot__Sims__V1__ApplyUsageResponse *)resp)->replayed);
    cr_assert_eq(get_quota(&u, a, DATA, &q, &st), 0);
    cr_assert_eq(q->used_volume, 10);
}

#define SHARED_SIMS 40
#define ROUNDS      15

typedef struct overlap {
    int n;
    const char *const *iccids; /* SHARED_SIMS SIMs every worker's batches name */
    arena_t *arena;
    int failures;
    char error[256];
} overlap_t;

/* Batches naming every shared SIM, each worker in its own order (rotated
 * and, for odd workers, reversed), so an item-order lock would deadlock. */
static void *run_overlapping(void *arg)
{
    overlap_t *w = arg;
    principal_t u = sims_h_user(1);
    Onceiot__Sims__V1__UsageItem items[SHARED_SIMS];
    Onceiot__Sims__V1__UsageItem *ptrs[SHARED_SIMS];
    for (int i = 0; i < ROUNDS; i++) {
        for (int k = 0; k < SHARED_SIMS; k++) {
            int s = (k + w->n * 7 + i) % SHARED_SIMS;
            if (w->n % 2)
                s = SHARED_SIMS - 1 - s;
            onceiot__sims__v1__usage_item__init(&items[k]);
            items[k].iccid = (char *)w->iccids[s];
            items[k].data_bytes = 1;
            items[k].sms_count = 0;
            ptrs[k] = &items[k];
        }
        char batch[64];
        snprintf(batch, sizeof(batch), "overlap-%d-%d", w->n, i);
        Onceiot__Sims__V1__ApplyUsageRequest req = ONCEIOT__SIMS__V1__APPLY_USAGE_REQUEST__INIT;
        req.batch_id = batch;
        req.items = ptrs;
        req.n_items = SHARED_SIMS;
        ProtobufCMessage *resp;
        rpc_status_t st;
        if (apply_req(&u, w->arena, &req, &resp, &st) != 0 && w->failures++ == 0)
            snprintf(w->error, sizeof(w->error), "%s: %s %s", batch, err_grpc_name(st.code),
                     st.message);
    }
    return NULL;
}

Test(sims_quota, concurrent_batches_over_the_same_sims_in_any_order_never_deadlock)
{
    principal_t u = sims_h_user(1);
    const char *iccids[SHARED_SIMS];
    for (int k = 0; k < SHARED_SIMS; k++) {
        iccids[k] = sims_h_iccid(500 + k);
        create_sim(iccids[k], 1000, 10);
    }
    pthread_t th[THREADS];
    overlap_t w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (overlap_t){.n = i, .iccids = iccids, .arena = sims_h_thread_arena()};
        cr_assert_eq(pthread_create(&th[i], NULL, run_overlapping, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < THREADS; i++)
        cr_assert_eq(w[i].failures, 0, "worker %d: %d failures, first: %s", i, w[i].failures,
                     w[i].error);
    for (int k = 0; k < SHARED_SIMS; k++) {
        Onceiot__Sims__V1__Quota *q;
        rpc_status_t st;
        cr_assert_eq(get_quota(&u, iccids[k], DATA, &q, &st), 0, "%s", st.message);
        cr_assert_eq(q->used_volume, THREADS * ROUNDS, "SIM %d: every batch applied once", k);
    }
}

static int64_t quota_updated_us(const principal_t *who, const char *iccid)
{
    Onceiot__Sims__V1__Quota *q;
    rpc_status_t st;
    cr_assert_eq(get_quota(who, iccid, DATA, &q, &st), 0, "%s", st.message);
    cr_assert_not_null(q->updated_at);
    return q->updated_at->seconds * 1000000 + q->updated_at->nanos / 1000;
}

/* The bulk statements set updated_at themselves and the trigger covers the
 * rest (schema 0009): every path that changes a quota moves it. */
Test(sims_quota, updated_at_moves_with_usage_reloads_top_ups_and_policies)
{
    principal_t u = sims_h_user(1);
    const char *iccid = sims_h_iccid(8);
    sims_h_create(&u, iccid);
    int64_t t = quota_updated_us(&u, iccid);
    Onceiot__Sims__V1__ApplyUsageResponse *r;
    rpc_status_t st;
    usleep(2000);
    cr_assert_eq(apply(&u, NULL, "upd-1", iccid, 10, 0, &r, &st), 0, "%s", st.message);
    int64_t after_usage = quota_updated_us(&u, iccid);
    cr_assert_gt(after_usage, t, "ApplyUsage's UPDATE");

    usleep(2000);
    set_auto_reload(&u, iccid, 90, 500);
    ProtobufCMessage *resp;
    int64_t after_policy = quota_updated_us(&u, iccid);
    cr_assert_gt(after_policy, after_usage, "the trigger, for a statement that leaves it");

    usleep(2000);
    cr_assert_eq(apply(&u, NULL, "upd-2", iccid, 990, 0, &r, &st), 0, "%s", st.message);
    cr_assert_eq(r->outcomes[0]->data_remaining, 500, "depleted, then reloaded");
    int64_t after_reload = quota_updated_us(&u, iccid);
    cr_assert_gt(after_reload, after_policy, "the reload's UPDATE");

    Onceiot__Sims__V1__TopUpQuotaRequest top = ONCEIOT__SIMS__V1__TOP_UP_QUOTA_REQUEST__INIT;
    top.iccid = (char *)iccid;
    top.quota_type = DATA;
    top.volume = 100;
    usleep(2000);
    cr_assert_eq(sims_h_call("TopUpQuota", &top.base, QUOTA, &u, NULL, &resp, &st), 0, "%s",
                 st.message);
    cr_assert_gt(quota_updated_us(&u, iccid), after_reload, "TopUpQuota");
}
