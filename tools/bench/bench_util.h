/* Helpers shared by the benchmark clients: a monotonic clock, fatal errors,
 * SQL that must succeed, and percentiles. (bench_usage.c predates this file
 * and still has its own copies.) */
#ifndef ONCEIOT_BENCH_UTIL_H
#define ONCEIOT_BENCH_UTIL_H

#include <libpq-fe.h>
#include <stddef.h>

/* Seconds on CLOCK_MONOTONIC. */
double bench_now_s(void);
/* Prints "error: what: why" and exits 1. */
void bench_die(const char *what, const char *why);
/* Runs q on c; exits on any error. The result is the caller's to PQclear. */
PGresult *bench_sql(PGconn *c, const char *q);
/* Sorts v[0..n) and returns the value at fraction q (0.5: the median). */
double bench_pct(double *v, size_t n, double q);

#endif
