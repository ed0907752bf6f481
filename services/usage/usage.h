/* The usage service's internals: service state, the call context, ICCID
 * resolution through sims, the quota dispatcher and the maintenance thread,
 * used by the handlers_*.c files. */
#ifndef ONCEIOT_USAGE_H
#define ONCEIOT_USAGE_H

#include "onceiot/client.h"
#include "onceiot/outbox.h"
#include "onceiot/svc.h"
#include "sims/v1/sims.pb-c.h"
#include "usage/v1/usage.pb-c.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define USAGE_MAX_RECORDS    10000
#define USAGE_MAX_BATCH_ID   128
#define USAGE_RETENTION_DAYS 730               /* raw records: 2 years (partman's retention) */
#define USAGE_FUTURE_US      (300 * 1000000LL) /* records may be at most 5 minutes ahead */
#define USAGE_TOPIC_QUOTA    "sims.apply_usage"
/* Connectivity samples are accepted up to 180 days back: within partman's
 * 6-month retention, so an accepted sample is never already expired. */
#define USAGE_CONN_RETENTION_DAYS 180
#define USAGE_TOPIC_CONNECTIVITY  "sims.apply_connectivity"

typedef struct usage_cache usage_cache_t;
typedef struct usage_maint usage_maint_t;

/* The service state handed to handlers through svc_state. */
typedef struct usage_state {
    svc_t *svc;
    rpc_channel_t *sims; /* onceiot-sims: ResolveSims, ApplyUsage */
    usage_cache_t *cache;
    outbox_t *outbox;
    usage_maint_t *maint;
} usage_state_t;

/* What every handler needs about its call. */
typedef struct usage_ctx {
    rpc_call_t *call;
    arena_t *a;
    usage_state_t *st;
    const principal_t *who;
    const char *org; /* the caller's organization as text; NULL for superusers (all) */
} usage_ctx_t;

/* Verifies the principal and fills cx. Returns 0, or an ERR_* code with the
 * call's status set. */
int usage_ctx_or_status(rpc_call_t *call, usage_ctx_t *cx) ONCEIOT_MUSTCHECK;
/* usage_ctx_or_status for the operator's methods (ingest, status): the
 * gateway already enforces the rule; this keeps the service safe on its own.
 * PERMISSION_DENIED (status set) for anyone but a superuser. */
int usage_staff_ctx_or_status(rpc_call_t *call, usage_ctx_t *cx) ONCEIOT_MUSTCHECK;
/* Where a checked value sits in a request: "<list>[<i>].<field>", or the
 * bare field when list is NULL (USAGE_AT_TOP). The name is printed only
 * for a violation, never for a value that passes: a batch checks 1,000
 * records and three names a record. */
typedef struct usage_at {
    const char *list;
    size_t i;
} usage_at_t;
#define USAGE_AT_TOP ((usage_at_t){NULL, 0})
/* The field's name at at, in a. */
const char *usage_field_name(arena_t *a, usage_at_t at, const char *field);
/* A valid ICCID (19 or 20 digits), else a violation on field at at. */
bool usage_valid_iccid(rpc_call_t *call, usage_at_t at, const char *field, const char *iccid);
/* Runs stmt on the call's connection (status set on failure). */
int usage_exec(usage_ctx_t *cx, const db_stmt_t *stmt, const char *const *params,
               PGresult **res) ONCEIOT_MUSTCHECK;
const char *usage_i64(arena_t *a, int64_t v);

/* ---- sims.c: calls to the sims service ---- */

/* Fills md[0..1] with the usage service's own principal ("service:usage",
 * superuser) for method, signed for the callee. The one place that knows how
 * this service vouches for itself. */
void usage_service_principal(const usage_state_t *st, const char *method, arena_t *a,
                             rpc_md_t md[2]);
/* Calls SimService/<method> as the usage service; parent (optional) lends
 * its deadline and cancellation, else timeout_ms bounds the call. */
int usage_sims_call(const usage_state_t *st, rpc_call_t *parent, int64_t timeout_ms,
                    const char *method, const ProtobufCMessage *req,
                    const ProtobufCMessageDescriptor *resp_desc, arena_t *a,
                    ProtobufCMessage **resp, rpc_status_t *status);

typedef struct usage_sim {
    int64_t sim_id;
    int64_t org; /* 0: unknown ICCID */
} usage_sim_t;

/* An in-process map ICCID → SIM, bounded (cleared when full: SIMs never
 * change organization, so an entry never goes stale, only cold). */
usage_cache_t *usage_cache_new(size_t max_entries);
void usage_cache_free(usage_cache_t *c);

/* Resolves n ICCIDs (valid format) into out[], asking sims once for those
 * not cached. Unknown ICCIDs get org 0. Returns 0 or an ERR_* code with the
 * call's status set (sims unreachable: UNAVAILABLE). */
int usage_resolve_or_status(usage_ctx_t *cx, const char *const *iccids, size_t n,
                            usage_sim_t *out) ONCEIOT_MUSTCHECK;
/* One SIM of the caller's organization (any for superusers): NOT_FOUND
 * (status set) when unknown or another organization's. */
int usage_sim_or_status(usage_ctx_t *cx, const char *iccid, usage_sim_t *out) ONCEIOT_MUSTCHECK;

/* What a per-SIM list (ListUsageRecords, ListConnectivity) reads from its
 * request: the SIM, the page size, the range as text (NULL when open) and
 * the page token's key and tie-breaker (NULL on the first page). */
typedef struct usage_sim_list {
    usage_sim_t sim;
    int size;
    uint64_t hash; /* of list, iccid and range: the page token's binding */
    const char *from, *to;
    const char *key, *last;
} usage_sim_list_t;
/* Checks and reads a per-SIM list's request (violations reported, the SIM
 * NOT_FOUND unless it is the caller's). Returns 0 or an ERR_* code with the
 * call's status set. */
int usage_sim_list_or_status(usage_ctx_t *cx, const char *list, const char *iccid,
                             int32_t page_size, const Google__Protobuf__Timestamp *start,
                             const Google__Protobuf__Timestamp *end, const char *page_token,
                             usage_sim_list_t *out) ONCEIOT_MUSTCHECK;

/* The outbox handler of USAGE_TOPIC_QUOTA: sends a batch's per-SIM usage
 * (a packed ApplyUsageRequest) to sims.ApplyUsage. ctx is the state. */
outbox_verdict_t usage_apply_quota(void *ctx, const outbox_msg_t *msg, arena_t *a,
                                   const char **why);

/* ---- connectivity.c: connectivity ingest and its delivery to sims ---- */

/* Checks a connectivity batch (violations on "samples[i].<field>" and
 * batch_id). Returns false when anything is wrong. */
bool usage_valid_connectivity(rpc_call_t *call,
                              const Onceiot__Usage__V1__IngestConnectivityBatchRequest *b,
                              int64_t now_us);
/* The outbox handler of USAGE_TOPIC_CONNECTIVITY: sends a batch's
 * transitions and networks (a packed ApplyConnectivityRequest) to
 * sims.ApplyConnectivity. ctx is the state. */
outbox_verdict_t usage_apply_connectivity(void *ctx, const outbox_msg_t *msg, arena_t *a,
                                          const char **why);

/* ---- maintain.c: partitions, rollup retention, compaction ---- */

/* ---- compact.c: compaction of old days ---- */

typedef struct usage_compact_opts {
    long after_days; /* days older than this are compacted; 0: never */
    long batch_rows; /* raw rows per statement (whole SIMs), within a day's transaction */
} usage_compact_opts_t;

typedef struct usage_compact_stats {
    int64_t days;    /* days compacted (of both tables) */
    int64_t records; /* raw rows rewritten */
    int64_t failed;  /* days whose transaction failed (rolled back, tried next run) */
} usage_compact_stats_t;

/* Compacts every day of sim_usage and sim_connectivity older than
 * o->after_days that has raw rows, one transaction per day, on conn. The
 * caller holds the maintenance lock. Returns 0, or a negative ERR_* code
 * when a day failed (the others are done; *out says what happened). */
int usage_compact_run(db_conn_t *conn, const usage_compact_opts_t *o,
                      usage_compact_stats_t *out) ONCEIOT_MUSTCHECK;

/* Runs maintenance (usage_maint_run) at start and every interval_s on a
 * pool connection: pg_partman's run_maintenance for sim_usage and
 * sim_connectivity (partitions ahead, drop past retention), compacted days
 * past the same retention, hourly rollups past the raw retention, daily
 * rollups past 5 years, batch ids past 30 days, then compaction. Every compact_s (and after each
 * maintenance) folds org_usage_daily's per-batch rows into one row per
 * organization and day. */
int usage_maint_start(db_pool_t *pool, const char *schema, long interval_s, long compact_s,
                      const usage_compact_opts_t *compaction,
                      usage_maint_t **out) ONCEIOT_MUSTCHECK;
/* One maintenance run (partitions, retention, late rows, compaction of old
 * days) on conn, under the schema's maintenance lock (a session advisory
 * lock), so replicas of one database take turns and only one works. Returns
 * 0, 1 when another process holds the lock (nothing done), or a negative
 * ERR_* code. */
int usage_maint_run(db_conn_t *conn, const char *schema, const usage_compact_opts_t *compaction,
                    usage_compact_stats_t *stats) ONCEIOT_MUSTCHECK;
void usage_maint_stop(usage_maint_t *m);

/* ---- validate.c ---- */

/* Checks every record of a batch, recording violations named
 * "<prefix>records[i].<field>" (at most a few dozen), and the batch id. now_us
 * is the time the batch is judged at. Returns false when anything is wrong. */
bool usage_valid_batch(rpc_call_t *call, const Onceiot__Usage__V1__IngestUsageBatchRequest *b,
                       int64_t now_us);
/* The batch id (1..USAGE_MAX_BATCH_ID characters) and the number of items
 * (1..USAGE_MAX_RECORDS, field items): returns the violations recorded, or
 * -1 when the count is wrong (the items are not worth checking). */
int usage_check_batch_shape(rpc_call_t *call, const char *batch_id, const char *items, size_t n);
/* A required timestamp at most 5 minutes ahead of now_us and within
 * retention_days; else a violation on field at at. */
bool usage_check_time(rpc_call_t *call, usage_at_t at, const char *field,
                      const Google__Protobuf__Timestamp *ts, int64_t now_us, int retention_days);
/* The optional network fields of a record or sample ("" when unknown). */
typedef struct usage_network {
    const char *mcc, *mnc, *country, *rat;
} usage_network_t;
/* Checks them, recording violations on their fields at at (the country's
 * field is named country_field); returns how many it found. */
int usage_check_network(rpc_call_t *call, usage_at_t at, const char *country_field,
                        const usage_network_t *n);
/* Epoch microseconds, hours and days (bigint) as PostgreSQL values, in a
 * statement's text: the numbers travel as binary int8, which the server
 * reads without parsing a timestamp. */
#define EPOCH_US(x)   "('epoch'::timestamptz + " x " * interval '1 microsecond')"
#define EPOCH_HOUR(x) "('epoch'::timestamptz + " x " * interval '1 hour')"
#define EPOCH_DAY(x)  "(DATE '1970-01-01' + " x "::int)"
/* Unix microseconds of a Timestamp. */
int64_t usage_ts_us(const Google__Protobuf__Timestamp *ts);
Google__Protobuf__Timestamp *usage_ts(arena_t *a, int64_t us);
/* "YYYY-MM-DD HH:MM:SS.ffffff+00" and "YYYY-MM-DD" in the arena. */
const char *usage_ts_text(arena_t *a, int64_t us);
const char *usage_day_text(arena_t *a, int64_t day);
/* Floor division helpers: hours and days since the epoch. */
int64_t usage_floor_div(int64_t a, int64_t b);

/* Handlers. */
/* Begins a batch's transaction on conn and claims batch_id (n records)
 * with claim (INSERT ... ON CONFLICT DO NOTHING RETURNING at_us). An id
 * committed before is read back with replayed (records, at_us): returns 1
 * with *out the first commit's result and the transaction rolled back, 0
 * with *out the new result and the transaction open, or a negative ERR_*
 * code (db_errmsg on conn). */
int usage_claim_batch(db_conn_t *conn, const db_stmt_t *claim, const db_stmt_t *replayed,
                      const char *batch_id, size_t n, arena_t *scratch, arena_t *out_a,
                      Onceiot__Usage__V1__BatchResult **out) ONCEIOT_MUSTCHECK;
/* One batch of a client stream: validates and commits m into the rollups
 * (scratch for the work, keep for *out), or sets the status. */
typedef int (*usage_ingest_fn)(usage_ctx_t *cx, arena_t *scratch, arena_t *keep,
                               const ProtobufCMessage *m, Onceiot__Usage__V1__BatchResult **out);
/* What a stream of batches did: each batch's result (in cx's arena), the
 * records newly committed and the batches replayed. */
typedef struct usage_stream_result {
    Onceiot__Usage__V1__BatchResult **batches;
    size_t n_batches;
    int32_t records;
    int32_t replayed;
} usage_stream_result_t;
/* Receives a client stream of batches until its end, one batch at a time
 * in its own arena, each through ingest_one ("usage", "connectivity" in the
 * log). Returns 0, or the first failure (its status set; the batches before
 * it stay committed). */
int usage_ingest_stream(usage_ctx_t *cx, usage_ingest_fn ingest_one, const char *what,
                        usage_stream_result_t *out) ONCEIOT_MUSTCHECK;
int usage_ingest_usage(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int usage_ingest_usage_batch(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int usage_get_sim_usage(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int usage_list_usage_records(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int usage_get_fleet_usage(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int usage_list_top_sims(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int usage_get_ingest_status(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int usage_ingest_connectivity(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int usage_get_connectivity(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int usage_list_connectivity(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int usage_list_offline_sims(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);

#endif
