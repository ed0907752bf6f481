/* The usage benchmark's client (run by tools/bench/usage.sh, which starts
 * the processes and loads the SIMs). Prints figures and ratios; asserts
 * nothing. In one run, over the same generated records (SIMS SIMs × HOURS
 * hourly records, time-major as a pipeline sends them):
 *   1. COPY of the records into usage.sim_usage (the baseline), then TRUNCATE;
 *   2. the same records through the gateway: IngestUsage streams of batches
 *      of BATCH records (rollups, idempotency and outbox on), rows/s;
 *   3. quota lag: usage commit → sims ApplyUsage, p50/p99, under that load;
 *   4. the fleet daily summary over the 30 days: GetFleetUsage via the
 *      gateway next to the seed's v_daily_usage_summary over the same rows;
 *   5. per-SIM daily usage over 6 months (GetSimUsage DAY) p50/p99;
 * and the CPU per record of the ingest and its quota dispatch alone (from
 * the start of 2 to the end of 3): of the processes named in
 * BENCH_USAGE_PIDS ("name=pid ...") and of the bench database's backends.
 *
 * usage: onceiot-bench-usage GATEWAY_ADDR "Bearer <key>" PG_URL SIMS HOURS BATCH
 * PG_URL is a superuser URL of the bench database (sims and usage schemas). */
#include "onceiot/client.h"
#include "usage/v1/usage.pb-c.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *why)
{
    fprintf(stderr, "error: %s: %s\n", what, why);
    exit(1);
}

static PGresult *sql(PGconn *c, const char *q)
{
    PGresult *r = PQexec(c, q);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        die(q, PQerrorMessage(c));
    return r;
}

/* utime + stime of pid in clock ticks (0 when it is gone). */
static long cpu_ticks(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the fields after "(comm)" */
    long utime = 0, stime = 0;
    if (p &&
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %ld %ld", &utime, &stime) != 2)
        utime = stime = 0;
    return utime + stime;
}

enum { CPU_MAX = 64 };

/* CPU ticks of the named processes and of the database's client backends
 * at one moment. */
typedef struct cpu_sample {
    int n, pid[CPU_MAX];
    char name[CPU_MAX][16]; /* "" for a backend */
    long ticks[CPU_MAX];
} cpu_sample_t;

static void cpu_sample(PGconn *c, cpu_sample_t *s)
{
    s->n = 0;
    const char *env = getenv("BENCH_USAGE_PIDS");
    char name[16];
    int pid, used;
    for (const char *p = env ? env : "";
         s->n < CPU_MAX && sscanf(p, " %15[^=]=%d%n", name, &pid, &used) == 2; p += used, s->n++) {
        snprintf(s->name[s->n], sizeof(s->name[s->n]), "%s", name);
        s->pid[s->n] = pid;
    }
    PGresult *r = sql(c, "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                         "AND backend_type = 'client backend'");
    for (int i = 0; i < PQntuples(r) && s->n < CPU_MAX; i++, s->n++) {
        s->name[s->n][0] = '\0';
        s->pid[s->n] = atoi(PQgetvalue(r, i, 0));
    }
    PQclear(r);
    for (int i = 0; i < s->n; i++)
        s->ticks[i] = cpu_ticks(s->pid[i]);
}

/* Prints each named process's CPU and the backends' (this client's own
 * too: the COPY's) between a and b per record; a backend that appeared
 * meanwhile counts whole. */
static void cpu_print(const char *what, const cpu_sample_t *a, const cpu_sample_t *b, long records)
{
    double per = 1e6 / (double)sysconf(_SC_CLK_TCK) / (double)records, pg = 0;
    printf("CPU per record of %s (us):", what);
    for (int i = 0; i < b->n; i++) {
        long before = 0;
        for (int k = 0; k < a->n; k++)
            if (a->pid[k] == b->pid[i])
                before = a->ticks[k];
        double d = (double)(b->ticks[i] - before) * per;
        if (b->name[i][0])
            printf(" %s %.1f,", b->name[i], d);
        else
            pg += d;
    }
    printf(" postgres %.1f\n", pg);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Record k of the data set: hour k / sims, SIM k % sims. */
typedef struct gen {
    long sims, hours;
    int64_t start_s; /* the first hour */
} gen_t;

static void record(const gen_t *g, long k, char iccid[32], int64_t *ts, int64_t *rx, int64_t *tx,
                   int *mo, int *mt, const char **country, const char **mcc, const char **mnc)
{
    static const char *const net[3][3] = {
        {"DE", "262", "01"}, {"DE", "262", "02"}, {"FR", "208", "10"}};
    long s = k % g->sims, h = k / g->sims;
    snprintf(iccid, 32, "8988%015ld", s + 1);
    *ts = g->start_s + h * 3600 + s % 3600;
    uint64_t x = (uint64_t)k * 2654435761u;
    *rx = (int64_t)(x % 200000);
    *tx = (int64_t)(x % 30000);
    *mo = (int)(x % 7 == 0);
    *mt = (int)(x % 11 == 0);
    const char *const *n = net[(s + h / 24) % 3];
    *country = n[0];
    *mcc = n[1];
    *mnc = n[2];
}

static void bench_copy(PGconn *c, const gen_t *g, double *rate)
{
    long n = g->sims * g->hours;
    PGresult *r = sql(c, "SELECT id, organization_id FROM sims.sims ORDER BY iccid");
    if (PQntuples(r) < g->sims)
        die("sims", "fewer SIMs than asked for");
    long *ids = malloc(sizeof(long) * (size_t)g->sims),
         *orgs = malloc(sizeof(long) * (size_t)g->sims);
    for (long i = 0; i < g->sims; i++) {
        ids[i] = atol(PQgetvalue(r, (int)i, 0));
        orgs[i] = atol(PQgetvalue(r, (int)i, 1));
    }
    PQclear(r);
    double t0 = now_s();
    PGresult *cr = PQexec(c, "COPY usage.sim_usage (sim_id, organization_id, iccid, "
                             "\"timestamp\", volume_rx, volume_tx, sms_mo, sms_mt, "
                             "session_count, mcc, mnc, country, batch_id) FROM STDIN");
    if (PQresultStatus(cr) != PGRES_COPY_IN)
        die("COPY", PQerrorMessage(c));
    PQclear(cr);
    char *buf = malloc(1 << 20);
    size_t len = 0;
    for (long k = 0; k < n; k++) {
        char iccid[32];
        int64_t ts, rx, tx;
        int mo, mt;
        const char *country, *mcc, *mnc;
        record(g, k, iccid, &ts, &rx, &tx, &mo, &mt, &country, &mcc, &mnc);
        long s = k % g->sims;
        time_t t = (time_t)ts;
        struct tm tm;
        gmtime_r(&t, &tm);
        len += (size_t)snprintf(buf + len, 512,
                                "%ld\t%ld\t%s\t%04d-%02d-%02d "
                                "%02d:%02d:%02d+00\t%lld\t%lld\t%d\t%d\t1\t%s\t%s\t%s\tcopy\n",
                                ids[s], orgs[s], iccid, tm.tm_year + 1900, tm.tm_mon + 1,
                                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (long long)rx,
                                (long long)tx, mo, mt, mcc, mnc, country);
        if (len > (1 << 20) - 512 || k == n - 1) {
            if (PQputCopyData(c, buf, (int)len) != 1)
                die("COPY", PQerrorMessage(c));
            len = 0;
        }
    }
    if (PQputCopyEnd(c, NULL) != 1)
        die("COPY end", PQerrorMessage(c));
    PGresult *done = PQgetResult(c);
    if (PQresultStatus(done) != PGRES_COMMAND_OK)
        die("COPY", PQerrorMessage(c));
    PQclear(done);
    double t1 = now_s();
    *rate = n / (t1 - t0);
    printf("COPY into usage.sim_usage: %ld rows in %.2f s = %.0f rows/s\n", n, t1 - t0, *rate);
    PQclear(sql(c, "TRUNCATE usage.sim_usage"));
    free(buf);
    free(ids);
    free(orgs);
}

static void bench_ingest(rpc_channel_t *gw, const char *auth, const gen_t *g, long batch,
                         double copy_rate)
{
    long n = g->sims * g->hours;
    rpc_md_t md[] = {{"authorization", auth, 0}};
    rpc_call_opts_t o = {.timeout_ms = 3600000, .metadata = md, .n_metadata = 1};
    arena_t *a = arena_new();
    rpc_stream_t *s;
    double t0 = now_s();
    if (rpc_stream_open(gw, "/onceiot.usage.v1.UsageService/IngestUsage", a, &o, &s) < 0)
        die("IngestUsage", "cannot open the stream");
    Onceiot__Usage__V1__UsageRecord *recs = calloc((size_t)batch, sizeof(*recs));
    Onceiot__Usage__V1__UsageRecord **ptrs = calloc((size_t)batch, sizeof(*ptrs));
    Google__Protobuf__Timestamp *tss = calloc((size_t)batch, sizeof(*tss));
    char(*iccids)[32] = calloc((size_t)batch, 32);
    long b = 0;
    for (long k = 0; k < n; k += batch, b++) {
        long m = n - k < batch ? n - k : batch;
        for (long i = 0; i < m; i++) {
            Onceiot__Usage__V1__UsageRecord *r = &recs[i];
            onceiot__usage__v1__usage_record__init(r);
            google__protobuf__timestamp__init(&tss[i]);
            int64_t ts;
            int mo, mt;
            const char *country, *mcc, *mnc;
            record(g, k + i, iccids[i], &ts, &r->volume_rx, &r->volume_tx, &mo, &mt, &country, &mcc,
                   &mnc);
            r->iccid = iccids[i];
            tss[i].seconds = ts;
            r->timestamp = &tss[i];
            r->sms_mo = mo;
            r->sms_mt = mt;
            r->session_count = 1;
            r->country = (char *)country;
            r->mcc = (char *)mcc;
            r->mnc = (char *)mnc;
            ptrs[i] = r;
        }
        char id[64];
        snprintf(id, sizeof(id), "bench-%ld", b);
        Onceiot__Usage__V1__IngestUsageBatchRequest req =
            ONCEIOT__USAGE__V1__INGEST_USAGE_BATCH_REQUEST__INIT;
        req.batch_id = id;
        req.records = ptrs;
        req.n_records = (size_t)m;
        if (rpc_stream_send(s, &req.base) < 0)
            break;
    }
    (void)!rpc_stream_close_send(s);
    ProtobufCMessage *resp = NULL;
    (void)!rpc_stream_recv(s, &onceiot__usage__v1__ingest_usage_response__descriptor, &resp);
    rpc_status_t st;
    if (rpc_stream_finish(s, &st) < 0)
        die("IngestUsage", st.message);
    double t1 = now_s();
    double rate = n / (t1 - t0);
    printf("IngestUsage via the gateway: %ld rows in %ld batches in %.2f s = %.0f rows/s\n", n, b,
           t1 - t0, rate);
    printf("ratio ingest / COPY: %.2f (target >= 0.5)\n", rate / copy_rate);
    free(recs);
    free(ptrs);
    free(tss);
    free(iccids);
    arena_free(a);
}

static void bench_lag(PGconn *c)
{
    double t0 = now_s();
    for (;;) {
        PGresult *r = sql(c, "SELECT count(*) FROM usage.outbox");
        long pending = atol(PQgetvalue(r, 0, 0));
        PQclear(r);
        if (pending == 0 || now_s() - t0 > 1800)
            break;
        struct timespec ts = {0, 200 * 1000000};
        nanosleep(&ts, NULL);
    }
    printf("outbox drained %.1f s after the last batch was committed\n", now_s() - t0);
    PGresult *r = sql(c, "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY l), "
                         "percentile_cont(0.99) WITHIN GROUP (ORDER BY l), count(*) FROM "
                         "(SELECT extract(epoch FROM p.processed_at - b.committed_at) * 1000 AS l "
                         "FROM usage.ingested_batches b JOIN sims.processed_usage_batches p "
                         "USING (batch_id) WHERE b.batch_id LIKE 'bench-%') x");
    printf("quota lag (usage commit -> sims ApplyUsage) p50 %.0f ms, p99 %.0f ms (n=%s)\n",
           atof(PQgetvalue(r, 0, 0)), atof(PQgetvalue(r, 0, 1)), PQgetvalue(r, 0, 2));
    PQclear(r);
}

static double call_ms(rpc_channel_t *gw, const char *auth, const char *method,
                      const ProtobufCMessage *req, const ProtobufCMessageDescriptor *d)
{
    rpc_md_t md[] = {{"authorization", auth, 0}};
    rpc_call_opts_t o = {.timeout_ms = 600000, .metadata = md, .n_metadata = 1};
    arena_t *a = arena_new();
    ProtobufCMessage *resp;
    rpc_status_t st;
    double t0 = now_s();
    if (rpc_unary(gw, method, req, d, a, &o, &resp, &st) < 0)
        die(method, st.message);
    double ms = (now_s() - t0) * 1000;
    arena_free(a);
    return ms;
}

static void bench_queries(rpc_channel_t *gw, const char *auth, PGconn *c, const gen_t *g)
{
    PQclear(sql(c, "ANALYZE usage.sim_usage"));
    enum { RUNS = 5, CALLS = 500 };
    double view[RUNS], fleet[RUNS];
    for (int i = 0; i < RUNS; i++) {
        double t0 = now_s();
        PQclear(sql(c, "SELECT * FROM usage.v_daily_usage_summary"));
        view[i] = (now_s() - t0) * 1000;
    }
    Google__Protobuf__Timestamp from = GOOGLE__PROTOBUF__TIMESTAMP__INIT, to = from;
    from.seconds = g->start_s - 86400;
    to.seconds = g->start_s + g->hours * 3600 + 86400;
    Onceiot__Usage__V1__GetFleetUsageRequest f = ONCEIOT__USAGE__V1__GET_FLEET_USAGE_REQUEST__INIT;
    f.granularity = ONCEIOT__USAGE__V1__GRANULARITY__GRANULARITY_DAY;
    f.start = &from;
    f.end = &to;
    for (int i = 0; i < RUNS; i++)
        fleet[i] = call_ms(gw, auth, "/onceiot.usage.v1.UsageService/GetFleetUsage", &f.base,
                           &onceiot__usage__v1__get_fleet_usage_response__descriptor);
    qsort(view, RUNS, sizeof(double), cmp_double);
    qsort(fleet, RUNS, sizeof(double), cmp_double);
    printf("fleet daily summary: v_daily_usage_summary %.1f ms, GetFleetUsage via the gateway "
           "%.2f ms (medians of %d)\n",
           view[RUNS / 2], fleet[RUNS / 2], RUNS);
    printf("ratio view / GetFleetUsage: %.0fx (target >= 1000)\n",
           view[RUNS / 2] / fleet[RUNS / 2]);

    double lat[CALLS];
    Google__Protobuf__Timestamp six = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    six.seconds = to.seconds - 183 * 86400;
    for (int i = 0; i < CALLS; i++) {
        char iccid[32];
        snprintf(iccid, sizeof(iccid), "8988%015ld", (long)(i * 7919L % g->sims) + 1);
        Onceiot__Usage__V1__GetSimUsageRequest q = ONCEIOT__USAGE__V1__GET_SIM_USAGE_REQUEST__INIT;
        q.iccid = iccid;
        q.granularity = ONCEIOT__USAGE__V1__GRANULARITY__GRANULARITY_DAY;
        q.start = &six;
        q.end = &to;
        lat[i] = call_ms(gw, auth, "/onceiot.usage.v1.UsageService/GetSimUsage", &q.base,
                         &onceiot__usage__v1__get_sim_usage_response__descriptor);
    }
    qsort(lat, CALLS, sizeof(double), cmp_double);
    printf("GetSimUsage DAY over 6 months via the gateway: p50 %.2f ms, p99 %.2f ms (n=%d)\n",
           lat[CALLS / 2], lat[CALLS * 99 / 100], CALLS);
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: %s GATEWAY_ADDR AUTHORIZATION PG_URL SIMS HOURS BATCH\n", argv[0]);
        return 2;
    }
    gen_t g = {.sims = atol(argv[4]), .hours = atol(argv[5])};
    long batch = atol(argv[6]);
    /* The records end an hour ago: every one is valid for ingest. */
    g.start_s = (time(NULL) / 3600 - 1 - g.hours) * 3600;
    grpc_init();
    rpc_channel_t *gw;
    if (rpc_channel_new(argv[1], 64 << 20, &gw) < 0)
        die("gateway", argv[1]);
    PGconn *c = PQconnectdb(argv[3]);
    if (PQstatus(c) != CONNECTION_OK)
        die("database", PQerrorMessage(c));
    double copy_rate;
    cpu_sample_t t0, t1;
    cpu_sample(c, &t0);
    bench_copy(c, &g, &copy_rate);
    cpu_sample(c, &t1);
    cpu_print("COPY", &t0, &t1, g.sims * g.hours);
    cpu_sample(c, &t0);
    bench_ingest(gw, argv[2], &g, batch, copy_rate);
    bench_lag(c);
    cpu_sample(c, &t1);
    cpu_print("the ingest and its quota dispatch", &t0, &t1, g.sims * g.hours);
    bench_queries(gw, argv[2], c, &g);
    PQfinish(c);
    rpc_channel_free(gw);
    grpc_shutdown();
    return 0;
}
