/* Compaction benchmark client (tools/bench/compact.sh): on two databases
 * that hold the same generated usage records and connectivity samples, one
 * as written (raw) and one after `onceiot-usage compact`, prints for each
 * the bytes per record of sim_usage (its partitions and indexes,
 * pg_total_relation_size) plus sim_usage_compact, and the latency of
 * ListUsageRecords' and ListConnectivity's very statements
 * (services/usage/usage_sql.h) for random SIMs over one day and over a
 * week (a page of 100), newest first, with the CPU time the backend spent
 * on each execution (its /proc/PID/schedstat, so only when the server runs
 * on this machine; -1 otherwise). Each execution on the raw database is
 * followed by the same one on the compacted database, so both see the same
 * load on a shared machine; the script prints the ratios.
 *
 * usage: onceiot-bench-compact RAW_URL COMPACTED_URL SIMS FIRST_DAY_AGO REPS */
#include "../../services/usage/usage_sql.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static PGresult *must(PGconn *c, PGresult *r, const char *what)
{
    ExecStatusType s = PQresultStatus(r);
    if (s != PGRES_TUPLES_OK && s != PGRES_COMMAND_OK) {
        fprintf(stderr, "%s: %s", what, PQerrorMessage(c));
        exit(1);
    }
    return r;
}

/* The CPU time the backend has used so far, in ms, from the first field of
 * its schedstat (nanoseconds on a CPU); -1 when it cannot be read. */
static double backend_cpu_ms(const char *schedstat)
{
    FILE *f = fopen(schedstat, "r");
    unsigned long long ns;
    if (!f)
        return -1;
    int got = fscanf(f, "%llu", &ns);
    fclose(f);
    return got == 1 ? (double)ns / 1e6 : -1;
}

/* One of the two databases: its connection and its backend's schedstat. */
typedef struct bench_db {
    PGconn *c;
    char schedstat[64];
    char sizes[160]; /* the start of its line: label and sizes */
} bench_db_t;

/* One measured statement over [day_ago, day_ago - days) on one database:
 * the p50 and p99 of its latency and the p50 of the backend's CPU time, in
 * ms. */
typedef struct timing {
    double p50, p99, cpu50;
} timing_t;

static timing_t timing_of(double *v, double *cpu, int reps)
{
    qsort(v, (size_t)reps, sizeof(double), cmp_double);
    qsort(cpu, (size_t)reps, sizeof(double), cmp_double);
    timing_t out = {v[reps / 2], v[reps * 99 / 100], cpu[reps / 2]};
    return out;
}

/* Runs the prepared statement stmt (n_params of SIM, start, end, limit and
 * the token's NULLs) reps times for random SIMs, each time on dbs[0] and
 * then on dbs[1]; every execution must return limit rows. out[i] is the
 * timing on dbs[i]. */
static void latency(bench_db_t dbs[2], const char *stmt, int n_params, long sims, int day_ago,
                    int days, const char *limit, int reps, timing_t out[2])
{
    double *v = calloc((size_t)reps * 4, sizeof(double));
    char sim[32], from[64], to[64];
    time_t t = time(NULL) / 86400 * 86400 - (time_t)day_ago * 86400;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(from, sizeof(from), "%Y-%m-%d 00:00:00+00", &tm);
    t += (time_t)days * 86400;
    gmtime_r(&t, &tm);
    strftime(to, sizeof(to), "%Y-%m-%d 00:00:00+00", &tm);
    for (int i = 0; i < reps; i++) {
        snprintf(sim, sizeof(sim), "%ld", 1 + rand() % sims);
        const char *params[] = {sim, from, to, limit, NULL, NULL};
        for (int d = 0; d < 2; d++) {
            PGconn *c = dbs[d].c;
            double c0 = backend_cpu_ms(dbs[d].schedstat), s = now_ms();
            PGresult *r = must(c, PQexecPrepared(c, stmt, n_params, params, NULL, NULL, 0), stmt);
            v[(size_t)d * 2 * reps + i] = now_ms() - s;
            double c1 = backend_cpu_ms(dbs[d].schedstat);
            v[((size_t)d * 2 + 1) * reps + i] = c0 < 0 || c1 < 0 ? -1 : c1 - c0;
            if (PQntuples(r) != atoi(limit)) {
                fprintf(stderr, "%s: %d rows for SIM %s, expected %s\n", stmt, PQntuples(r), sim,
                        limit);
                exit(1);
            }
            PQclear(r);
        }
    }
    for (int d = 0; d < 2; d++)
        out[d] = timing_of(v + (size_t)d * 2 * reps, v + ((size_t)d * 2 + 1) * reps, reps);
    free(v);
}

/* Connects to url, prepares both statements and writes the database's
 * sizes after label into db->sizes. */
static void open_db(bench_db_t *db, const char *url, const char *label)
{
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "%s", PQerrorMessage(c));
        exit(1);
    }
    PQclear(must(c, PQexec(c, "SET search_path = usage; SET jit = off"), "set"));
    PGresult *r = must(c,
                       PQexec(c, "SELECT (SELECT coalesce(sum(pg_total_relation_size(inhrelid)), "
                                 "0) FROM pg_inherits WHERE inhparent = 'sim_usage'::regclass) "
                                 "AS raw, pg_total_relation_size('sim_usage_compact') AS compact, "
                                 "(SELECT count(*) FROM sim_usage_all) AS records, "
                                 "pg_backend_pid() AS pid"),
                       "sizes");
    double raw = atof(PQgetvalue(r, 0, 0)), comp = atof(PQgetvalue(r, 0, 1));
    double records = atof(PQgetvalue(r, 0, 2));
    snprintf(db->schedstat, sizeof(db->schedstat), "/proc/%s/schedstat", PQgetvalue(r, 0, 3));
    PQclear(r);
    snprintf(db->sizes, sizeof(db->sizes),
             "%s bytes_per_record %.1f raw_bytes %.0f compact_bytes %.0f records %.0f", label,
             (raw + comp) / records, raw, comp, records);
    PQclear(must(c, PQprepare(c, "list", USAGE_SQL_LIST_RECORDS, 6, NULL), "prepare"));
    PQclear(must(c, PQprepare(c, "conn", USAGE_SQL_LIST_CONNECTIVITY, 5, NULL), "prepare"));
    db->c = c;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s RAW_URL COMPACTED_URL SIMS FIRST_DAY_AGO REPS\n", argv[0]);
        return 2;
    }
    long sims = atol(argv[3]);
    int first = atoi(argv[4]), reps = atoi(argv[5]);
    const char *labels[] = {"raw", "compacted"};
    bench_db_t dbs[2];
    for (int d = 0; d < 2; d++)
        open_db(&dbs[d], argv[1 + d], labels[d]);
    srand(42);
    /* A whole day (24 records a SIM: a page of 25 holds it all), and the
     * first page of 100 of a week; records, then samples. */
    const char *stmts[] = {"list", "conn"}, *prefix[] = {"", "conn_"};
    int n_params[] = {6, 5};
    timing_t day[2][2], week[2][2];
    for (int q = 0; q < 2; q++) {
        latency(dbs, stmts[q], n_params[q], sims, first - 2, 1, "24", reps, day[q]);
        latency(dbs, stmts[q], n_params[q], sims, first - 2, 7, "101", reps, week[q]);
    }
    for (int d = 0; d < 2; d++) {
        fputs(dbs[d].sizes, stdout);
        for (int q = 0; q < 2; q++) {
            timing_t a = day[q][d], w = week[q][d];
            printf(" %sday_p50_ms %.3f %sday_p99_ms %.3f %sday_cpu_ms %.3f %sweek_p50_ms %.3f "
                   "%sweek_p99_ms %.3f %sweek_cpu_ms %.3f",
                   prefix[q], a.p50, prefix[q], a.p99, prefix[q], a.cpu50, prefix[q], w.p50,
                   prefix[q], w.p99, prefix[q], w.cpu50);
        }
        printf("\n");
        PQfinish(dbs[d].c);
    }
    return 0;
}
