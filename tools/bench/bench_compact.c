/* Compaction benchmark client (tools/bench/compact.sh): on a database that
 * holds generated usage records, prints the bytes per record of sim_usage
 * (its partitions and indexes, pg_total_relation_size) plus
 * sim_usage_compact, and the latency of ListUsageRecords' very statement
 * (services/usage/usage_sql.h) for random SIMs over one day and over a
 * week (a page of 100), newest first. Run once on raw days and once after
 * `onceiot-usage compact`; the script prints the ratios.
 *
 * usage: onceiot-bench-compact URL LABEL SIMS FIRST_DAY_AGO REPS */
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

/* p50 and p99 in ms of reps executions over [day_ago, day_ago - days). */
static void latency(PGconn *c, long sims, int day_ago, int days, const char *limit, int reps,
                    double *p50, double *p99)
{
    double *v = calloc((size_t)reps, sizeof(double));
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
        double s = now_ms();
        PGresult *r = must(c, PQexecPrepared(c, "list", 6, params, NULL, NULL, 0), "list");
        v[i] = now_ms() - s;
        if (PQntuples(r) != atoi(limit)) {
            fprintf(stderr, "list: %d rows for SIM %s, expected %s\n", PQntuples(r), sim, limit);
            exit(1);
        }
        PQclear(r);
    }
    qsort(v, (size_t)reps, sizeof(double), cmp_double);
    *p50 = v[reps / 2];
    *p99 = v[reps * 99 / 100];
    free(v);
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s URL LABEL SIMS FIRST_DAY_AGO REPS\n", argv[0]);
        return 2;
    }
    PGconn *c = PQconnectdb(argv[1]);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "%s", PQerrorMessage(c));
        return 1;
    }
    long sims = atol(argv[3]);
    int first = atoi(argv[4]), reps = atoi(argv[5]);
    PQclear(must(c, PQexec(c, "SET search_path = usage; SET jit = off"), "set"));
    PGresult *r = must(c,
                       PQexec(c, "SELECT (SELECT coalesce(sum(pg_total_relation_size(inhrelid)), "
                                 "0) FROM pg_inherits WHERE inhparent = 'sim_usage'::regclass) "
                                 "AS raw, pg_total_relation_size('sim_usage_compact') AS compact, "
                                 "(SELECT count(*) FROM sim_usage_all) AS records"),
                       "sizes");
    double raw = atof(PQgetvalue(r, 0, 0)), comp = atof(PQgetvalue(r, 0, 1));
    double records = atof(PQgetvalue(r, 0, 2));
    PQclear(r);
    PQclear(must(c, PQprepare(c, "list", USAGE_SQL_LIST_RECORDS, 6, NULL), "prepare"));
    srand(42);
    double d50, d99, w50, w99;
    /* A whole day (24 records a SIM: a page of 25 holds it all), and the
     * first page of 100 of a week. */
    latency(c, sims, first - 2, 1, "24", reps, &d50, &d99);
    latency(c, sims, first - 2, 7, "101", reps, &w50, &w99);
    printf("%s bytes_per_record %.1f raw_bytes %.0f compact_bytes %.0f records %.0f "
           "day_p50_ms %.3f day_p99_ms %.3f week_p50_ms %.3f week_p99_ms %.3f\n",
           argv[2], (raw + comp) / records, raw, comp, records, d50, d99, w50, w99);
    PQfinish(c);
    return 0;
}
