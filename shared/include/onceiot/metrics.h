/* Prometheus metrics: counters, gauges and histograms with labels, rendered
 * in the text exposition format 0.0.4 and served over HTTP (libmicrohttpd)
 * on ONCEIOT_METRICS_LISTEN.
 *
 * The registry is process-wide. A family (name, help, label names) is
 * registered once; a series is one combination of label values, found or
 * created under the family's lock and then kept by the caller, so the hot
 * path is one relaxed atomic add on the series and takes no lock.
 *
 * Metrics are off until metrics_enable: then every constructor returns NULL
 * and every update function accepts NULL and does nothing, so a binary
 * without ONCEIOT_METRICS_LISTEN pays one branch per update. */
#ifndef ONCEIOT_METRICS_H
#define ONCEIOT_METRICS_H

#include "onceiot/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct metrics_family metrics_family_t;
typedef struct metrics_series metrics_series_t;

/* Turns metrics on for the process (before any family is registered). */
void metrics_enable(void);
bool metrics_enabled(void);

/* Registers (or finds, when the name is already registered) a family.
 * labels is a NULL-terminated list of label names (NULL: none); strings must
 * outlive the process (literals). bounds are a histogram's upper bucket
 * bounds, ascending, without +Inf. Return NULL while metrics are off. */
metrics_family_t *metrics_counter(const char *name, const char *help, const char *const *labels);
metrics_family_t *metrics_gauge(const char *name, const char *help, const char *const *labels);
metrics_family_t *metrics_histogram(const char *name, const char *help, const char *const *labels,
                                    const double *bounds, size_t n_bounds);

/* The one series of a label-less counter or gauge (registered if new). */
metrics_series_t *metrics_counter_plain(const char *name, const char *help);
metrics_series_t *metrics_gauge_plain(const char *name, const char *help);

/* The series of f with these label values (as many as the family has label
 * names; copied), created on first use. Takes the family's lock: keep the
 * result. NULL when f is NULL. */
metrics_series_t *metrics_series(metrics_family_t *f, const char *const *values);

/* Counter: adds n. */
void metrics_inc(metrics_series_t *s, uint64_t n);
/* Gauge (or a counter mirrored from elsewhere, e.g. /proc): sets the value. */
void metrics_set(metrics_series_t *s, double v);
/* Histogram: records one observation (sum kept to 1e-9 of the unit). */
void metrics_observe(metrics_series_t *s, double v);

/* A function run before every scrape that refreshes gauges (metrics_set)
 * from state it reads cheaply (a pool's counts, /proc). Runs on the HTTP
 * thread; arg must stay valid until metrics_collector_remove. */
typedef void (*metrics_collect_fn)(void *arg);
void metrics_collector_add(metrics_collect_fn fn, void *arg);
void metrics_collector_remove(metrics_collect_fn fn, void *arg);

/* Registers the process_* metrics (resident memory, CPU seconds, open fds,
 * start time), read from /proc at scrape time. */
void metrics_process_register(void);

/* Renders every family into a fresh NUL-terminated buffer (mem_free);
 * *len gets its length. Runs the collectors first. */
char *metrics_render(size_t *len);

/* Serves GET /metrics on listen ("host:port"; port 0 picks one, reported in
 * *port_out when not NULL) from a thread of libmicrohttpd's. Returns 0 or
 * ERR_UNAVAILABLE when the address cannot be bound. */
int metrics_http_start(const char *listen, int *port_out) ONCEIOT_MUSTCHECK;
/* Stops the HTTP server (no scrape runs after it returns). Idempotent. */
void metrics_http_stop(void);

/* ---- gRPC calls, go-grpc-prometheus names ---- */

/* One method's series for one side: grpc_server_* (or grpc_client_*):
 * started_total, handled_total by code, handling_seconds. */
typedef struct metrics_rpc metrics_rpc_t;

/* For method path "/pkg.Service/Method" with its streaming kind; client
 * selects the grpc_client_* families. NULL while metrics are off or when
 * path is not of that form. Lives as long as the process. */
metrics_rpc_t *metrics_rpc_new(const char *path, bool client_streaming, bool server_streaming,
                               bool client);
void metrics_rpc_started(metrics_rpc_t *m);
/* The call ended with grpc status code after duration_ns. */
void metrics_rpc_handled(metrics_rpc_t *m, int code, int64_t duration_ns);

/* A counter by gRPC status code for fixed other labels: each code's series
 * is created on first use and then kept. */
typedef struct metrics_by_code metrics_by_code_t;
/* family's last label must be the code's (grpc_code); values are the others. */
metrics_by_code_t *metrics_by_code_new(metrics_family_t *f, const char *const *values);
void metrics_by_code_inc(metrics_by_code_t *m, int code);

#endif
