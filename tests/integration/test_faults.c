/* The fault suite: a write load through the gateway (top-ups, SMS, imports,
 * each with a request id, and usage batches, each with its batch id, all
 * retried until acknowledged, as a careful client does) while sims,
 * identity, usage and the gateway are each killed with SIGKILL and
 * restarted, and PostgreSQL is restarted. One of the kills of usage is aimed
 * at a batch committed in usage whose quota usage is on its way to sims
 * (the outbox row leased, sims frozen inside the call). Afterwards every
 * acknowledged write is present exactly once (quota sums, event, SMS and SIM
 * counts; usage records, their per-SIM sums and every rollup), the usage
 * outbox drains, each SIM's data quota has used exactly the bytes of its
 * acknowledged usage, and every process is SERVING again without a manual
 * step. tools/faults runs the same with more load. */
#include "gw_client.h"
#include "pg_harness.h"
#include "sims/v1/sims.pb-c.h"
#include "stack_harness.h"
#include "usage/v1/usage.pb-c.h"
#include "usage_harness.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SIMS  "/onceiot.sims.v1.SimService/"
#define USAGE "/onceiot.usage.v1.UsageService/"
#define FLEET 10 /* SIMs the top-ups, SMS and usage go to */
#define KINDS 5  /* write k is a top-up, SMS, import, usage, usage by k % KINDS */
#define RECS  3  /* records per usage batch, each for another fleet SIM */
/* The fleet's data quota at import: usage never depletes it (no events,
 * no auto-reload), so used_volume is exactly the usage. */
#define FLEET_DATA (1LL << 40)
#define WRITERS    4  /* concurrent clients: a fault finds writes in flight */
#define PACE_MS    1  /* between one writer's writes */
#define PHASE      60 /* writes acknowledged between two faults */

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
    int64_t base_us;     /* Unix µs: usage records fall in the 2 hours after it */
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
    int batches;              /* usage batches acknowledged */
    int replayed;             /* of them, answered as a replay of an earlier attempt */
    int records[FLEET];       /* usage records acknowledged per SIM */
    int64_t bytes[FLEET];     /* their volume_rx + volume_tx */
    int64_t usage_sms[FLEET]; /* their sms_mo + sms_mt */
    int64_t usage_mo[FLEET];  /* their sms_mo: what the SMS quota is charged */
    char error[512];          /* the failure; "" when none */
} writer_t;

static bool retryable(grpc_status_code c)
{
    return c == GRPC_STATUS_UNAVAILABLE || c == GRPC_STATUS_DEADLINE_EXCEEDED ||
           c == GRPC_STATUS_ABORTED || c == GRPC_STATUS_RESOURCE_EXHAUSTED ||
           c == GRPC_STATUS_UNKNOWN || c == GRPC_STATUS_CANCELLED;
}

/* The SIM of record j of usage batch k: RECS different fleet SIMs. */
static int rec_sim(int k, int j)
{
    return (k + 3 * j) % FLEET;
}

/* Record j of usage batch k: its SIM, volumes and time, derived from k
 * alone, so every attempt of the batch sends the same records. */
static void usage_record(const load_t *l, int k, int j, Onceiot__Usage__V1__UsageRecord *r,
                         Google__Protobuf__Timestamp *ts)
{
    onceiot__usage__v1__usage_record__init(r);
    google__protobuf__timestamp__init(ts);
    r->iccid = (char *)fleet_iccid(rec_sim(k, j));
    ts->seconds = l->base_us / 1000000 + (k * 37 + j * 600) % 7200;
    r->timestamp = ts;
    r->volume_rx = 1000 * (int64_t)(k + 1) + j;
    r->volume_tx = 10 * j + k % 7;
    r->sms_mo = j == 0;
    r->sms_mt = k % 2;
    r->session_count = 1;
    if (j == 1) { /* the network rollups get rows too */
        r->country = "DE";
        r->mcc = "262";
        r->mnc = "01";
    }
}

/* Write k of the load: a top-up, an SMS, an import of two SIMs or a usage
 * batch of RECS records. *replayed: usage said the batch was committed
 * before (by an attempt whose answer was lost). */
static int write_once(gwc_t *c, const load_t *l, int k, bool *replayed, rpc_status_t *s)
{
    char id[32];
    snprintf(id, sizeof(id), "fault-%d", k);
    int sim = (k / KINDS) % FLEET;
    rpc_call_opts_t o = gwc_opts(c, root, 3000);
    ProtobufCMessage *out = NULL;
    switch (k % KINDS) {
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
    case 2: {
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
    default: {
        Onceiot__Usage__V1__UsageRecord rec[RECS], *recs[RECS];
        Google__Protobuf__Timestamp ts[RECS];
        for (int j = 0; j < RECS; j++) {
            usage_record(l, k, j, &rec[j], &ts[j]);
            recs[j] = &rec[j];
        }
        Onceiot__Usage__V1__IngestUsageBatchRequest r =
            ONCEIOT__USAGE__V1__INGEST_USAGE_BATCH_REQUEST__INIT;
        r.batch_id = id;
        r.records = recs;
        r.n_records = RECS;
        int rc = rpc_unary(c->ch, USAGE "IngestUsageBatch", &r.base,
                           &onceiot__usage__v1__batch_result__descriptor, c->arena, &o, &out, s);
        if (rc == 0)
            *replayed = ((Onceiot__Usage__V1__BatchResult *)out)->replayed;
        return rc;
    }
    }
}

/* Write k, repeated with its request id until it is acknowledged, then
 * counted in w. False (w->error says why) on a refusal that is not
 * transient, or at the load's deadline. */
static bool write_acked(gwc_t *c, writer_t *w, int k)
{
    load_t *l = w->load;
    bool replayed = false;
    for (;;) {
        rpc_status_t s;
        if (write_once(c, l, k, &replayed, &s) == 0)
            break;
        if (!retryable(s.code) || now_ms() > l->deadline_ms) {
            snprintf(w->error, sizeof(w->error), "write %d: %s %s", k, err_grpc_name(s.code),
                     s.message);
            return false;
        }
        w->retries++;
        usleep(50 * 1000);
    }
    int sim = (k / KINDS) % FLEET;
    if (k % KINDS == 0) {
        w->topped[sim] += k + 1;
        w->topups[sim]++;
    } else if (k % KINDS == 1)
        w->sms[sim]++;
    else if (k % KINDS == 2)
        w->imported += 2;
    else {
        w->batches++;
        w->replayed += replayed;
        for (int j = 0; j < RECS; j++) {
            Onceiot__Usage__V1__UsageRecord r;
            Google__Protobuf__Timestamp ts;
            usage_record(l, k, j, &r, &ts);
            w->records[rec_sim(k, j)]++;
            w->bytes[rec_sim(k, j)] += r.volume_rx + r.volume_tx;
            w->usage_sms[rec_sim(k, j)] += r.sms_mo + r.sms_mt;
            w->usage_mo[rec_sim(k, j)] += r.sms_mo;
        }
    }
    atomic_fetch_add(&l->acked, 1);
    return true;
}

/* The writer: writes k with k % WRITERS == index; a failed write stops the
 * whole load (asserted on after the join). */
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
        if (!write_acked(&c, w, k)) {
            atomic_store(&l->stopped, 1);
            break;
        }
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
    sh_add_usage(&st, NULL);
    gwc_open(&g, st.gateway.addr);
    snprintf(root, sizeof(root), "Bearer %s", st.admin_key);
    Onceiot__Sims__V1__SimInput in[FLEET], *items[FLEET];
    for (int i = 0; i < FLEET; i++) {
        onceiot__sims__v1__sim_input__init(&in[i]);
        in[i].iccid = (char *)fleet_iccid(i);
        in[i].sms_volume = 100000;
        in[i].data_volume = FLEET_DATA;
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

/* The usage batch an aimed kill of usage catches in delivery: write k of
 * the main thread's share (w), through g. */
typedef struct aimed_write {
    writer_t *w;
    int k;
} aimed_write_t;

static void commit_aimed(void *arg)
{
    aimed_write_t *a = arg;
    if (!write_acked(&g, a->w, a->k))
        atomic_store(&a->w->load->stopped, 1);
}

/* One fault of a round: p killed with SIGKILL and started again; aimed: at
 * a usage batch's delivery to sims (p is usage). */
typedef struct victim {
    ph_proc_t *p;
    const char *name;
    bool aimed;
} victim_t;

/* The sum of column over the usage records of one SIM. */
static long usage_sum(const char *column, const char *iccid)
{
    char *sql =
        mem_printf("SELECT coalesce(sum(%s), 0) FROM usage.sim_usage WHERE iccid = $1", column);
    long v = sql_long(sql, iccid);
    mem_free(sql);
    return v;
}

Test(faults, every_acknowledged_write_survives_kills_and_a_database_restart_exactly_once)
{
    /* tools/faults: more rounds of the same faults, so more load. */
    int rounds = getenv("ONCEIOT_FAULT_ROUNDS") ? atoi(getenv("ONCEIOT_FAULT_ROUNDS")) : 1;
    if (rounds < 1 || rounds > 30)
        rounds = 1;
    int ops = 20000 * rounds;
    /* Usage records 3 to 1 hours old: well inside the raw retention and
     * never compacted (older than 7 days), never in the future. */
    load_t l = {.ops = ops,
                .base_us = usage_h_now_us() - 3 * 3600 * 1000000LL,
                .deadline_ms = now_ms() + 60000 + 20000 * (int64_t)rounds};
    /* w[WRITERS] is the main thread's: the batches of the aimed kills. */
    writer_t w[WRITERS + 1];
    pthread_t t[WRITERS];
    for (int i = 0; i <= WRITERS; i++) {
        memset(&w[i], 0, sizeof(w[i]));
        w[i].load = &l;
        w[i].index = i;
        if (i < WRITERS)
            pthread_create(&t[i], NULL, writer, &w[i]);
    }
    /* The gateway four times: a call it dies in the middle of has often been
     * committed by sims or usage already, so only the request or batch id
     * stops the retry from applying it again. Usage twice: once at any
     * moment, once while it delivers a committed batch's quota usage to
     * sims, so the delivery is repeated by the restarted dispatcher and only
     * sims' batch id keeps it from draining the quota twice. */
    const victim_t victims[] = {
        {&st.sims, "sims", false},       {&st.gateway, "gateway", false},
        {&st.usage, "usage", true},      {&st.identity, "identity", false},
        {&st.gateway, "gateway", false}, {&st.sims, "sims", false},
        {&st.usage, "usage", false},     {&st.gateway, "gateway", false},
        {&st.gateway, "gateway", false},
    };
    size_t n_victims = sizeof(victims) / sizeof(victims[0]);
    int aimed = 0, aimed_hit = 0;
    for (size_t v = 0; v < n_victims * (size_t)rounds; v++) {
        const victim_t *vi = &victims[v % n_victims];
        wait_phase(&l);
        int64_t t0 = now_ms();
        if (vi->aimed) {
            aimed++;
            /* A usage write beyond the writers' ks. */
            aimed_write_t a = {&w[WRITERS], ops + (int)v * KINDS + 3};
            aimed_hit += sh_kill_usage_mid_delivery(&st, commit_aimed, &a, 10000);
        } else
            sh_kill_restart(&st, vi->p);
        cr_log_info("%s killed and SERVING again after %lld ms", vi->name,
                    (long long)(now_ms() - t0));
        if (v % n_victims == n_victims - 1) {
            wait_phase(&l);
            pgh_stop();
            pgh_start();
        }
    }
    wait_phase(&l); /* writes go on after the last restart */
    atomic_store(&l.finish, 1);
    int retries = 0, imported = 0, batches = 0, replayed = 0, records = 0;
    int64_t topped[FLEET] = {0}, bytes[FLEET] = {0}, usage_sms[FLEET] = {0}, usage_mo[FLEET] = {0};
    int topups[FLEET] = {0}, sms[FLEET] = {0}, recs[FLEET] = {0};
    for (int i = 0; i <= WRITERS; i++) {
        if (i < WRITERS)
            pthread_join(t[i], NULL);
        cr_expect_str_empty(w[i].error, "writer %d stopped: %s", i, w[i].error);
        retries += w[i].retries;
        imported += w[i].imported;
        batches += w[i].batches;
        replayed += w[i].replayed;
        for (int k = 0; k < FLEET; k++) {
            topped[k] += w[i].topped[k];
            topups[k] += w[i].topups[k];
            sms[k] += w[i].sms[k];
            recs[k] += w[i].records[k];
            bytes[k] += w[i].bytes[k];
            usage_sms[k] += w[i].usage_sms[k];
            usage_mo[k] += w[i].usage_mo[k];
            records += w[i].records[k];
        }
    }
    int acked = atomic_load(&l.acked);
    cr_assert_lt(acked, ops, "the load ended before the faults did");
    cr_log_info("%d writes acknowledged, %d attempts repeated", acked, retries);
    cr_log_info("%d usage batches (%d records) acknowledged, %d of them as a replay", batches,
                records, replayed);
    cr_log_info("%d of %d aimed kills of usage hit a delivery in flight", aimed_hit, aimed);
    cr_assert_gt(retries, 0, "the faults were seen by the client (else they proved nothing)");
    cr_expect_eq(aimed_hit, aimed, "an aimed kill of usage found no delivery in flight");

    /* Every committed batch's quota usage reaches sims (bounded wait). */
    int64_t t0 = now_ms();
    bool drained = usage_h_wait_outbox_empty(60000);
    cr_log_info("usage outbox drained %lld ms after the load ended", (long long)(now_ms() - t0));
    cr_assert(drained, "usage outbox not drained: %lld rows, %lld failed",
              usage_h_sql_int("SELECT count(*) FROM usage.outbox"),
              usage_h_sql_int("SELECT count(*) FROM usage.outbox WHERE failed_at IS NOT NULL"));

    for (int i = 0; i < FLEET; i++) {
        const char *iccid = fleet_iccid(i);
        cr_expect_eq(sql_long("SELECT coalesce(sum(q.volume), 0) FROM sims.sim_quotas q JOIN "
                              "sims.sims s ON s.id = q.sim_id WHERE s.iccid = $1 AND "
                              "q.quota_type = 'data'",
                              iccid),
                     FLEET_DATA + topped[i], "SIM %d: data volume", i);
        cr_expect_eq(sql_long("SELECT count(*) FROM sims.sim_events WHERE iccid = $1 AND "
                              "event_type = 'quota_added'",
                              iccid),
                     topups[i], "SIM %d: quota_added events", i);
        cr_expect_eq(sql_long("SELECT count(*) FROM sims.sim_sms WHERE iccid = $1", iccid), sms[i],
                     "SIM %d: SMS", i);
        cr_expect_eq(sql_long("SELECT q.used_volume FROM sims.sim_quotas q JOIN sims.sims s ON "
                              "s.id = q.sim_id WHERE s.iccid = $1 AND q.quota_type = 'sms'",
                              iccid),
                     sms[i] + usage_mo[i], "SIM %d: SMS quota used (sent + usage's MO)", i);
        cr_expect_eq(sql_long("SELECT q.used_volume FROM sims.sim_quotas q JOIN sims.sims s ON "
                              "s.id = q.sim_id WHERE s.iccid = $1 AND q.quota_type = 'data'",
                              iccid),
                     bytes[i], "SIM %d: data quota used", i);
        cr_expect_eq(sql_long("SELECT count(*) FROM usage.sim_usage WHERE iccid = $1", iccid),
                     recs[i], "SIM %d: usage records", i);
        cr_expect_eq(usage_sum("total_volume", iccid), bytes[i], "SIM %d: usage bytes", i);
        cr_expect_eq(usage_sum("sms_mo + sms_mt", iccid), usage_sms[i], "SIM %d: usage SMS", i);
    }
    cr_expect_eq(sql_long("SELECT count(DISTINCT batch_id) FROM usage.sim_usage", NULL), batches,
                 "usage batches stored");
    cr_expect_eq(sql_long("SELECT count(*) FROM sims.processed_usage_batches", NULL), batches,
                 "usage batches applied to the quotas");
    usage_h_assert_rollups_exact();
    cr_expect_eq(sql_long("SELECT count(*) FROM sims.sims WHERE iccid LIKE $1", "89883031%"),
                 imported, "imported SIMs");
    const ph_proc_t *all[] = {&st.identity, &st.sims, &st.usage, &st.gateway};
    for (int i = 0; i < 4; i++)
        cr_expect(ph_wait_health(all[i]->addr, "", 1, 10000), "%s is not SERVING", all[i]->addr);
}
