/* The connectivity benchmark's client (run by tools/bench/connectivity.sh,
 * which starts the processes and loads the SIMs). Prints figures and
 * ratios; asserts nothing. In one run:
 *   1. COPY of SIMS x SAMPLES generated samples into usage.sim_connectivity
 *      (the baseline), then TRUNCATE;
 *   2. the same samples through the gateway: IngestConnectivity streams of
 *      batches of BATCH samples (latest state, transitions, idempotency and
 *      outbox on), rows/s, and how long the outbox took to drain into sims;
 *   3. "offline longer than 1 h": the state table filled up to STATES SIMs
 *      (SQL, a third offline), then ListOfflineSims via the gateway for one
 *      organization, first pages and pages deep in the list, p50/p99, with
 *      the statement's plan.
 *
 * usage: onceiot-bench-connectivity GATEWAY_ADDR "Bearer <key>" PG_URL SIMS SAMPLES BATCH STATES
 * PG_URL is a superuser URL of the bench database (sims and usage schemas). */
#include "bench_util.h"
#include "google/protobuf/duration.pb-c.h"
#include "onceiot/client.h"
#include "usage/v1/usage.pb-c.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Sample k of the data set: round k / sims (one a minute), SIM k % sims; a
 * SIM drops for two rounds out of every twelve. */
typedef struct gen {
    long sims, rounds;
    int64_t start_s;
} gen_t;

typedef struct smp {
    char iccid[32];
    int64_t ts;
    bool connected;
    int strength, quality;
    const char *rat, *country, *op, *mcc, *mnc;
    char cell[16];
} smp_t;

static void sample(const gen_t *g, long k, smp_t *s)
{
    long i = k % g->sims, r = k / g->sims;
    snprintf(s->iccid, sizeof(s->iccid), "8988%015ld", i + 1);
    s->ts = g->start_s + r * 60 + i % 60;
    s->connected = (r + i) % 12 < 10;
    uint64_t x = (uint64_t)k * 2654435761u;
    s->strength = -60 - (int)(x % 60);
    s->quality = (int)(x % 101);
    static const char *const net[3][4] = {{"LTE", "DE", "Telekom", "262"},
                                          {"NB-IoT", "DE", "Vodafone", "262"},
                                          {"LTE-M", "FR", "Orange", "208"}};
    const char *const *n = net[(i + r / 30) % 3];
    s->rat = n[0];
    s->country = n[1];
    s->op = n[2];
    s->mcc = n[3];
    s->mnc = "01";
    snprintf(s->cell, sizeof(s->cell), "c%ld", (long)(x % 5000));
}

static void bench_copy(PGconn *c, const gen_t *g, double *rate)
{
    long n = g->sims * g->rounds;
    PGresult *r = bench_sql(c, "SELECT id, organization_id FROM sims.sims ORDER BY iccid");
    if (PQntuples(r) < g->sims)
        bench_die("sims", "fewer SIMs than asked for");
    long *ids = malloc(sizeof(long) * (size_t)g->sims),
         *orgs = malloc(sizeof(long) * (size_t)g->sims);
    for (long i = 0; i < g->sims; i++) {
        ids[i] = atol(PQgetvalue(r, (int)i, 0));
        orgs[i] = atol(PQgetvalue(r, (int)i, 1));
    }
    PQclear(r);
    double t0 = bench_now_s();
    PGresult *cr = PQexec(c, "COPY usage.sim_connectivity (sim_id, \"timestamp\", "
                             "organization_id, iccid, connected, cell_id, signal_strength, "
                             "signal_quality, rat, country_code, operator_name, mcc, mnc, apn, "
                             "batch_id) FROM STDIN");
    if (PQresultStatus(cr) != PGRES_COPY_IN)
        bench_die("COPY", PQerrorMessage(c));
    PQclear(cr);
    char *buf = malloc(1 << 20);
    size_t len = 0;
    for (long k = 0; k < n; k++) {
        smp_t s;
        sample(g, k, &s);
        long i = k % g->sims;
        time_t t = (time_t)s.ts;
        struct tm tm;
        gmtime_r(&t, &tm);
        len +=
            (size_t)snprintf(buf + len, 512,
                             "%ld\t%04d-%02d-%02d %02d:%02d:%02d+00\t%ld\t%s\t%s\t%s\t%d\t%d\t%s"
                             "\t%s\t%s\t%s\t%s\tiot.bench\tcopy\n",
                             ids[i], tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                             tm.tm_min, tm.tm_sec, orgs[i], s.iccid, s.connected ? "t" : "f",
                             s.cell, s.strength, s.quality, s.rat, s.country, s.op, s.mcc, s.mnc);
        if (len > (1 << 20) - 512 || k == n - 1) {
            if (PQputCopyData(c, buf, (int)len) != 1)
                bench_die("COPY", PQerrorMessage(c));
            len = 0;
        }
    }
    if (PQputCopyEnd(c, NULL) != 1)
        bench_die("COPY end", PQerrorMessage(c));
    PGresult *done = PQgetResult(c);
    if (PQresultStatus(done) != PGRES_COMMAND_OK)
        bench_die("COPY", PQerrorMessage(c));
    PQclear(done);
    double t1 = bench_now_s();
    *rate = n / (t1 - t0);
    printf("COPY into usage.sim_connectivity: %ld rows in %.2f s = %.0f rows/s\n", n, t1 - t0,
           *rate);
    PQclear(bench_sql(c, "TRUNCATE usage.sim_connectivity"));
    free(buf);
    free(ids);
    free(orgs);
}

static void bench_ingest(rpc_channel_t *gw, const char *auth, PGconn *c, const gen_t *g, long batch,
                         double copy_rate)
{
    long n = g->sims * g->rounds;
    rpc_md_t md[] = {{"authorization", auth, 0}};
    rpc_call_opts_t o = {.timeout_ms = 3600000, .metadata = md, .n_metadata = 1};
    arena_t *a = arena_new();
    rpc_stream_t *st;
    double t0 = bench_now_s();
    if (rpc_stream_open(gw, "/onceiot.usage.v1.UsageService/IngestConnectivity", a, &o, &st) < 0)
        bench_die("IngestConnectivity", "cannot open the stream");
    Onceiot__Usage__V1__ConnectivitySample *v = calloc((size_t)batch, sizeof(*v));
    Onceiot__Usage__V1__ConnectivitySample **ptrs = calloc((size_t)batch, sizeof(*ptrs));
    Google__Protobuf__Timestamp *tss = calloc((size_t)batch, sizeof(*tss));
    Google__Protobuf__Int32Value *ss = calloc((size_t)batch, sizeof(*ss)),
                                 *sq = calloc((size_t)batch, sizeof(*sq));
    smp_t *raw = calloc((size_t)batch, sizeof(*raw));
    long b = 0;
    for (long k = 0; k < n; k += batch, b++) {
        long m = n - k < batch ? n - k : batch;
        for (long i = 0; i < m; i++) {
            smp_t *s = &raw[i];
            sample(g, k + i, s);
            Onceiot__Usage__V1__ConnectivitySample *p = &v[i];
            onceiot__usage__v1__connectivity_sample__init(p);
            google__protobuf__timestamp__init(&tss[i]);
            google__protobuf__int32_value__init(&ss[i]);
            google__protobuf__int32_value__init(&sq[i]);
            tss[i].seconds = s->ts;
            ss[i].value = s->strength;
            sq[i].value = s->quality;
            p->iccid = s->iccid;
            p->timestamp = &tss[i];
            p->connected = s->connected;
            p->cell_id = s->cell;
            p->signal_strength = &ss[i];
            p->signal_quality = &sq[i];
            p->rat = (char *)s->rat;
            p->country_code = (char *)s->country;
            p->operator_name = (char *)s->op;
            p->mcc = (char *)s->mcc;
            p->mnc = (char *)s->mnc;
            p->apn = "iot.bench";
            ptrs[i] = p;
        }
        char id[64];
        snprintf(id, sizeof(id), "bench-%ld", b);
        Onceiot__Usage__V1__IngestConnectivityBatchRequest req =
            ONCEIOT__USAGE__V1__INGEST_CONNECTIVITY_BATCH_REQUEST__INIT;
        req.batch_id = id;
        req.samples = ptrs;
        req.n_samples = (size_t)m;
        if (rpc_stream_send(st, &req.base) < 0)
            break;
    }
    (void)!rpc_stream_close_send(st);
    ProtobufCMessage *resp = NULL;
    (void)!rpc_stream_recv(st, &onceiot__usage__v1__ingest_connectivity_response__descriptor,
                           &resp);
    rpc_status_t s;
    if (rpc_stream_finish(st, &s) < 0)
        bench_die("IngestConnectivity", s.message);
    double t1 = bench_now_s();
    double rate = n / (t1 - t0);
    printf("IngestConnectivity via the gateway: %ld rows in %ld batches in %.2f s = %.0f rows/s\n",
           n, b, t1 - t0, rate);
    printf("ratio ingest / COPY: %.2f (target >= 0.5)\n", rate / copy_rate);
    for (double w0 = bench_now_s();;) {
        PGresult *r = bench_sql(c, "SELECT count(*) FROM usage.outbox");
        long pending = atol(PQgetvalue(r, 0, 0));
        PQclear(r);
        if (pending == 0 || bench_now_s() - w0 > 1800) {
            printf("outbox (events, networks) drained into sims %.1f s after the last batch\n",
                   bench_now_s() - w0);
            break;
        }
        struct timespec ts = {0, 200 * 1000000};
        nanosleep(&ts, NULL);
    }
    PGresult *r =
        bench_sql(c, "SELECT (SELECT count(*) FROM sims.sim_events WHERE event_category = "
                     "'connectivity'), (SELECT sum(transitions) FROM "
                     "usage.sim_connectivity_state)");
    printf("connectivity events in sims: %s (transitions counted by usage: %s)\n",
           PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1));
    PQclear(r);
    free(v);
    free(ptrs);
    free(tss);
    free(ss);
    free(sq);
    free(raw);
    arena_free(a);
}

static double call_ms(rpc_channel_t *gw, const char *auth, const ProtobufCMessage *req,
                      Onceiot__Usage__V1__ListOfflineSimsResponse **out, arena_t *a)
{
    rpc_md_t md[] = {{"authorization", auth, 0}};
    rpc_call_opts_t o = {.timeout_ms = 600000, .metadata = md, .n_metadata = 1};
    ProtobufCMessage *resp;
    rpc_status_t st;
    double t0 = bench_now_s();
    if (rpc_unary(gw, "/onceiot.usage.v1.UsageService/ListOfflineSims", req,
                  &onceiot__usage__v1__list_offline_sims_response__descriptor, a, &o, &resp,
                  &st) < 0)
        bench_die("ListOfflineSims", st.message);
    *out = (void *)resp;
    return (bench_now_s() - t0) * 1000;
}

static void bench_offline(rpc_channel_t *gw, const char *auth, PGconn *c, long states)
{
    /* More SIM states than sims holds: ListOfflineSims reads only usage's
     * state table. SIM ids above the ingested ones; 10 organizations; one in
     * three offline, since a random time in the last 48 h. */
    char q[1024];
    snprintf(q, sizeof(q),
             "INSERT INTO usage.sim_connectivity_state (sim_id, organization_id, iccid, "
             "connected, since, last_seen, rat, transitions) "
             "SELECT 10000000 + g, 1 + g %% 10, '8999' || lpad(g::text, 15, '0'), g %% 3 <> 0, "
             "now() - ((hashint4(g)::bigint + 2147483648) %% 172800) * interval '1 second', "
             "now() - interval "
             "'1 minute', 'LTE', 1 FROM generate_series(1, %ld) g",
             states);
    double t0 = bench_now_s();
    PQclear(bench_sql(c, "SELECT count(*) FROM usage.sim_connectivity_state"));
    PQclear(bench_sql(c, q));
    PQclear(bench_sql(c, "ANALYZE usage.sim_connectivity_state"));
    PGresult *r =
        bench_sql(c, "SELECT count(*), count(*) FILTER (WHERE NOT connected), count(*) "
                     "FILTER (WHERE NOT connected AND organization_id = 3 AND since < now() "
                     "- interval '1 hour') FROM usage.sim_connectivity_state");
    printf("SIM states: %s (%s offline; organization 3 offline > 1 h: %s), made in %.1f s\n",
           PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2), bench_now_s() - t0);
    PQclear(r);
    r = bench_sql(
        c, "EXPLAIN SELECT sim_id, iccid FROM usage.sim_connectivity_state WHERE NOT "
           "connected AND organization_id = 3 AND since < now() - interval '1 hour' AND "
           "(since, sim_id) > ('-infinity'::timestamptz, 0) ORDER BY since, sim_id LIMIT 101");
    printf("plan:\n");
    for (int i = 0; i < PQntuples(r); i++)
        printf("    %s\n", PQgetvalue(r, i, 0));
    PQclear(r);

    enum { CALLS = 500, DEEP = 200 };
    Google__Protobuf__Duration hour = GOOGLE__PROTOBUF__DURATION__INIT;
    hour.seconds = 3600;
    Onceiot__Usage__V1__ListOfflineSimsRequest req =
        ONCEIOT__USAGE__V1__LIST_OFFLINE_SIMS_REQUEST__INIT;
    req.offline_for = &hour;
    req.page_size = 100;
    double first[CALLS], deep[DEEP];
    arena_t *a = arena_new();
    for (int i = 0; i < CALLS; i++) {
        req.organization_id = 1 + i % 10;
        Onceiot__Usage__V1__ListOfflineSimsResponse *out;
        first[i] = call_ms(gw, auth, &req.base, &out, a);
    }
    /* Walks organization 3's list page by page. */
    req.organization_id = 3;
    long listed = 0;
    size_t pages = 0;
    for (int i = 0; i < DEEP; i++, pages++) {
        Onceiot__Usage__V1__ListOfflineSimsResponse *out;
        deep[i] = call_ms(gw, auth, &req.base, &out, a);
        listed += (long)out->n_sims;
        if (!out->next_page_token[0]) {
            pages++;
            break;
        }
        req.page_token = arena_strdup(a, out->next_page_token);
    }
    double f50 = bench_pct(first, CALLS, 0.5), f99 = bench_pct(first, CALLS, 0.99);
    double d50 = bench_pct(deep, pages, 0.5), d99 = bench_pct(deep, pages, 0.99);
    printf("ListOfflineSims (offline > 1 h, page of 100) via the gateway over %ld SIM states: "
           "first page p50 %.2f ms, p99 %.2f ms (n=%d); walking %ld SIMs page by page: p50 %.2f "
           "ms, p99 %.2f ms (n=%zu)\n",
           states, f50, f99, CALLS, listed, d50, d99, pages);
    arena_free(a);
}

int main(int argc, char **argv)
{
    if (argc != 8) {
        fprintf(stderr, "usage: %s GATEWAY_ADDR AUTHORIZATION PG_URL SIMS SAMPLES BATCH STATES\n",
                argv[0]);
        return 2;
    }
    gen_t g = {.sims = atol(argv[4]), .rounds = atol(argv[5])};
    long batch = atol(argv[6]), states = atol(argv[7]);
    /* The samples end a few minutes ago: every one is valid for ingest. */
    g.start_s = time(NULL) - 300 - g.rounds * 60;
    grpc_init();
    rpc_channel_t *gw;
    if (rpc_channel_new(argv[1], 64 << 20, &gw) < 0)
        bench_die("gateway", argv[1]);
    PGconn *c = PQconnectdb(argv[3]);
    if (PQstatus(c) != CONNECTION_OK)
        bench_die("database", PQerrorMessage(c));
    double copy_rate;
    bench_copy(c, &g, &copy_rate);
    bench_ingest(gw, argv[2], c, &g, batch, copy_rate);
    bench_offline(gw, argv[2], c, states);
    PQfinish(c);
    rpc_channel_free(gw);
    grpc_shutdown();
    return 0;
}
