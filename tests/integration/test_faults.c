/* The fault suite: a write load through the gateway (top-ups, SMS, imports,
 * each with a request id and retried until acknowledged, as a careful
 * client does) while sims, identity and the gateway are each killed with
 * SIGKILL and restarted, and PostgreSQL is restarted. Afterwards every
 * acknowledged write is present exactly once (quota sums, event, SMS and SIM
 * counts) and every process is SERVING again without a manual step.
 * tools/faults runs the same with more load. */
#include "gw_client.h"
#include "pg_harness.h"
#include "sims/v1/sims.pb-c.h"
#include "stack_harness.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SIMS    "/onceiot.sims.v1.SimService/"
#define FLEET   10 /* SIMs the top-ups and SMS go to */
#define WRITERS 4  /* concurrent clients: a fault finds writes in flight */
#define PACE_MS 1  /* between one writer's writes */
#define PHASE   60 /* writes acknowledged between two faults */

static sh_stack_t st;
static gwc_t g;
static char root[256];

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *fleet_iccid(int i)
{
    static char buf[FLEET][24];
    snprintf(buf[i], sizeof(buf[i]), "89883030000%08d", i);
    return buf[i];
}

typedef struct load {
    int ops;             /* at most this many writes, all writers together */
    atomic_int finish;   /* set once the faults are over: the writers stop */
    int64_t deadline_ms; /* monotonic: give up (a failure) after it */
    atomic_int acked;    /* writes acknowledged so far */
    atomic_int stopped;  /* a writer failed: all stop */
} load_t;

/* One writer's share: writes k with k % WRITERS == index, and what it was
 * told was done. */
typedef struct writer {
    load_t *load;
    int index;
    int retries; /* attempts that failed and were repeated */
    int64_t topped[FLEET];
    int topups[FLEET];
    int sms[FLEET];
    int imported;
    char error[512]; /* the failure; "" when none */
} writer_t;

static bool retryable(grpc_status_code c)
{
    return c == GRPC_STATUS_UNAVAILABLE || c == GRPC_STATUS_DEADLINE_EXCEEDED ||
           c == GRPC_STATUS_ABORTED || c == GRPC_STATUS_RESOURCE_EXHAUSTED ||
           c == GRPC_STATUS_UNKNOWN || c == GRPC_STATUS_CANCELLED;
}

/* Write k of the load: a top-up, an SMS or an import of two SIMs. */
static int write_once(gwc_t *c, int k, rpc_status_t *s)
{
    char id[32];
    snprintf(id, sizeof(id), "fault-%d", k);
    int sim = k % FLEET;
    rpc_call_opts_t o = gwc_opts(c, root, 3000);
    ProtobufCMessage *out = NULL;
    switch (k % 3) {
    case 0: {
        Onceiot__Sims__V1__TopUpQuotaRequest r = ONCEIOT__SIMS__V1__TOP_UP_QUOTA_REQUEST__INIT;
        r.iccid = (char *)fleet_iccid(sim);
        r.quota_type = ONCEIOT__SIMS__V1__QUOTA_TYPE__QUOTA_TYPE_DATA;
        r.volume = k + 1;
        r.request_id = id;
        return rpc_unary(c->ch, SIMS "TopUpQuota", &r.base, &onceiot__sims__v1__quota__descriptor,
                         c->arena, &o, &out, s);
    }
    case 1: {
        Onceiot__Sims__V1__SendSmsRequest r = ONCEIOT__SIMS__V1__SEND_SMS_REQUEST__INIT;
        r.iccid = (char *)fleet_iccid(sim);
        r.text = "ping";
        r.request_id = id;
        return rpc_unary(c->ch, SIMS "SendSms", &r.base, &onceiot__sims__v1__sms__descriptor,
                         c->arena, &o, &out, s);
    }
    default: {
        Onceiot__Sims__V1__SimInput in[2] = {ONCEIOT__SIMS__V1__SIM_INPUT__INIT,
                                             ONCEIOT__SIMS__V1__SIM_INPUT__INIT};
        char iccid[2][24];
        Onceiot__Sims__V1__SimInput *items[2];
        for (int i = 0; i < 2; i++) {
            snprintf(iccid[i], sizeof(iccid[i]), "89883031000%08d", 2 * k + i);
            in[i].iccid = iccid[i];
            items[i] = &in[i];
        }
        Onceiot__Sims__V1__ImportSimsRequest r = ONCEIOT__SIMS__V1__IMPORT_SIMS_REQUEST__INIT;
        r.sims = items;
        r.n_sims = 2;
        r.request_id = id;
        return rpc_unary(c->ch, SIMS "ImportSims", &r.base,
                         &onceiot__sims__v1__import_sims_response__descriptor, c->arena, &o, &out,
                         s);
    }
    }
}

/* The writer: each write is repeated with its request id until it is
 * acknowledged; a refusal that is not transient, or the deadline, stops the
 * load with the reason (asserted on after the join). */
static void *writer(void *arg)
{
    writer_t *w = arg;
    load_t *l = w->load;
    gwc_t c;
    if (rpc_channel_new(st.gateway.addr, 1 << 22, &c.ch) < 0) {
        snprintf(w->error, sizeof(w->error), "no channel");
        atomic_store(&l->stopped, 1);
        return NULL;
    }
    c.arena = arena_new();
    for (int k = w->index; k < l->ops && !atomic_load(&l->stopped) && !atomic_load(&l->finish);
         k += WRITERS) {
        for (;;) {
            rpc_status_t s;
            if (write_once(&c, k, &s) == 0)
                break;
            if (!retryable(s.code) || now_ms() > l->deadline_ms) {
                snprintf(w->error, sizeof(w->error), "write %d: %s %s", k, err_grpc_name(s.code),
                         s.message);
                break;
            }
            w->retries++;
            usleep(50 * 1000);
        }
        if (w->error[0]) {
            atomic_store(&l->stopped, 1);
            break;
        }
        if (k % 3 == 0) {
            w->topped[k % FLEET] += k + 1;
            w->topups[k % FLEET]++;
        } else if (k % 3 == 1)
            w->sms[k % FLEET]++;
        else
            w->imported += 2;
        atomic_fetch_add(&l->acked, 1);
        arena_free(c.arena);
        c.arena = arena_new();
        usleep(PACE_MS * 1000); /* spread over the faults, not done before them */
    }
    rpc_channel_free(c.ch);
    arena_free(c.arena);
    return NULL;
}

/* Waits (bounded by the load's deadline) until the load has acknowledged
 * PHASE more writes (or stopped), so each fault hits a running load. */
static void wait_phase(load_t *l)
{
    int n = atomic_load(&l->acked) + PHASE;
    while (atomic_load(&l->acked) < n && !atomic_load(&l->stopped) && now_ms() < l->deadline_ms)
        usleep(20 * 1000);
}

static long sql_long(const char *sql, const char *param)
{
    const char *params[] = {param};
    PGresult *r = pgh_sqlf(sql, param ? 1 : 0, params);
    long v = PQntuples(r) ? atol(PQgetvalue(r, 0, 0)) : 0;
    PQclear(r);
    return v;
}

static void setup(void)
{
    sh_start_with_sims(&st, NULL, NULL);
    gwc_open(&g, st.gateway.addr);
    snprintf(root, sizeof(root), "Bearer %s", st.admin_key);
    Onceiot__Sims__V1__SimInput in[FLEET], *items[FLEET];
    for (int i = 0; i < FLEET; i++) {
        onceiot__sims__v1__sim_input__init(&in[i]);
        in[i].iccid = (char *)fleet_iccid(i);
        in[i].sms_volume = 100000;
        items[i] = &in[i];
    }
    Onceiot__Sims__V1__ImportSimsRequest r = ONCEIOT__SIMS__V1__IMPORT_SIMS_REQUEST__INIT;
    r.sims = items;
    r.n_sims = FLEET;
    Onceiot__Sims__V1__ImportSimsResponse *out;
    rpc_status_t s;
    cr_assert_eq(gwc_call(&g, root, SIMS "ImportSims", &r.base,
                          &onceiot__sims__v1__import_sims_response__descriptor, &out, &s),
                 0, "%s", s.message);
    for (int i = 0; i < FLEET; i++) {
        Onceiot__Sims__V1__SimActionRequest a = ONCEIOT__SIMS__V1__SIM_ACTION_REQUEST__INIT;
        a.iccid = (char *)fleet_iccid(i);
        Onceiot__Sims__V1__Sim *sim;
        cr_assert_eq(gwc_call(&g, root, SIMS "ActivateSim", &a.base,
                              &onceiot__sims__v1__sim__descriptor, &sim, &s),
                     0, "%s", s.message);
    }
}

static void teardown(void)
{
    gwc_close(&g);
    sh_stop(&st);
}

TestSuite(faults, .init = setup, .fini = teardown, .timeout = 560);

Test(faults, every_acknowledged_write_survives_kills_and_a_database_restart_exactly_once)
{
    /* tools/faults: more rounds of the same faults, so more load. */
    int rounds = getenv("ONCEIOT_FAULT_ROUNDS") ? atoi(getenv("ONCEIOT_FAULT_ROUNDS")) : 1;
    if (rounds < 1 || rounds > 30)
        rounds = 1;
    int ops = 20000 * rounds;
    load_t l = {.ops = ops, .deadline_ms = now_ms() + 60000 + 16000 * (int64_t)rounds};
    writer_t w[WRITERS];
    pthread_t t[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        memset(&w[i], 0, sizeof(w[i]));
        w[i].load = &l;
        w[i].index = i;
        pthread_create(&t[i], NULL, writer, &w[i]);
    }
    /* The gateway four times: a call it dies in the middle of has often been
     * committed by sims already, so only the request id stops the retry
     * from applying it again. */
    ph_proc_t *victims[] = {&st.sims, &st.gateway, &st.identity, &st.gateway,
                            &st.sims, &st.gateway, &st.gateway};
    size_t n_victims = sizeof(victims) / sizeof(victims[0]);
    for (size_t v = 0; v < n_victims * (size_t)rounds; v++) {
        wait_phase(&l);
        int64_t t0 = now_ms();
        const char *name = victims[v % n_victims] == &st.sims      ? "sims"
                           : victims[v % n_victims] == &st.gateway ? "gateway"
                                                                   : "identity";
        sh_kill_restart(&st, victims[v % n_victims]);
        cr_log_info("%s killed and SERVING again after %lld ms", name, (long long)(now_ms() - t0));
        if (v % n_victims == n_victims - 1) {
            wait_phase(&l);
            pgh_stop();
            pgh_start();
        }
    }
    wait_phase(&l); /* writes go on after the last restart */
    atomic_store(&l.finish, 1);
    int retries = 0, imported = 0;
    int64_t topped[FLEET] = {0};
    int topups[FLEET] = {0}, sms[FLEET] = {0};
    for (int i = 0; i < WRITERS; i++) {
        pthread_join(t[i], NULL);
        cr_expect_str_empty(w[i].error, "writer %d stopped: %s", i, w[i].error);
        retries += w[i].retries;
        imported += w[i].imported;
        for (int k = 0; k < FLEET; k++) {
            topped[k] += w[i].topped[k];
            topups[k] += w[i].topups[k];
            sms[k] += w[i].sms[k];
        }
    }
    int acked = atomic_load(&l.acked);
    cr_assert_lt(acked, ops, "the load ended before the faults did");
    cr_log_info("%d writes acknowledged, %d attempts repeated", acked, retries);
    cr_assert_gt(retries, 0, "the faults were seen by the client (else they proved nothing)");

    for (int i = 0; i < FLEET; i++) {
        const char *iccid = fleet_iccid(i);
        cr_expect_eq(sql_long("SELECT coalesce(sum(q.volume), 0) FROM sims.sim_quotas q JOIN "
                              "sims.sims s ON s.id = q.sim_id WHERE s.iccid = $1 AND "
                              "q.quota_type = 'data'",
                              iccid),
                     topped[i], "SIM %d: data volume", i);
        cr_expect_eq(sql_long("SELECT count(*) FROM sims.sim_events WHERE iccid = $1 AND "
                              "event_type = 'quota_added'",
                              iccid),
                     topups[i], "SIM %d: quota_added events", i);
        cr_expect_eq(sql_long("SELECT count(*) FROM sims.sim_sms WHERE iccid = $1", iccid), sms[i],
                     "SIM %d: SMS", i);
        cr_expect_eq(sql_long("SELECT q.used_volume FROM sims.sim_quotas q JOIN sims.sims s ON "
                              "s.id = q.sim_id WHERE s.iccid = $1 AND q.quota_type = 'sms'",
                              iccid),
                     sms[i], "SIM %d: SMS quota used", i);
    }
    cr_expect_eq(sql_long("SELECT count(*) FROM sims.sims WHERE iccid LIKE $1", "89883031%"),
                 imported, "imported SIMs");
    const ph_proc_t *all[] = {&st.identity, &st.sims, &st.gateway};
    for (int i = 0; i < 3; i++)
        cr_expect(ph_wait_health(all[i]->addr, "", 1, 10000), "%s is not SERVING", all[i]->addr);
}
