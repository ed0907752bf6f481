/* The transactional outbox: a message to another service is written in the
 * same transaction as the change it follows, and a dispatcher thread delivers
 * it afterwards, retrying until the handler says it is done. With an
 * idempotent callee (keyed by the message's key) that is exactly once in
 * effect, whatever crashes when.
 *
 * Users: usage → sims.ApplyUsage (per-SIM usage of each batch), commerce →
 * sims.TopUpQuota (fulfilment), usage → sims.RecordEvents (connectivity).
 *
 * The table lives in the service's own schema. Its DDL belongs to this
 * module: outbox_migrations is handed to svc_def_t.runtime_migrations, and
 * the runtime's migrator applies it before the service's own files.
 *
 * Delivery: rows are claimed with FOR UPDATE SKIP LOCKED and leased for
 * lease_ms to one dispatcher (owner "<service>:<host>:<pid>:<random>"), so
 * replicas never send one row at the same time; a dead replica's rows are
 * taken again when the lease runs out. A dispatcher starts a claimed row only
 * while less than half the lease has passed since the claim (a monotonic
 * clock read before the claim statement) and gives the rest of the claim
 * back at once, so a handler must finish within half the lease (bound its
 * call's deadline): then two sends of one row never overlap. No order is
 * promised between rows (a released row keeps its place: it is claimed
 * again before newer ones). */
#ifndef ONCEIOT_OUTBOX_H
#define ONCEIOT_OUTBOX_H

#include "onceiot/db.h"
#include "onceiot/mem.h"
#include "onceiot/migrate.h"

#include <stddef.h>
#include <stdint.h>

/* The outbox table's migrations, for svc_def_t.runtime_migrations (with
 * n_runtime_migrations = OUTBOX_N_MIGRATIONS). */
#define OUTBOX_N_MIGRATIONS 1
extern const migrate_embedded_t outbox_migrations[OUTBOX_N_MIGRATIONS];

/* Writes one message inside the caller's open transaction. key is the
 * idempotency key the callee sees (unique per topic among pending rows).
 * Returns 1 when written, 0 when a pending row with this topic and key
 * exists already, or a negative ERR_* code (db_errmsg has the message). */
int outbox_put(db_conn_t *conn, const char *topic, const char *key, const uint8_t *payload,
               size_t len) ONCEIOT_MUSTCHECK;

typedef enum outbox_verdict {
    OUTBOX_DONE,   /* delivered: the row is deleted */
    OUTBOX_RETRY,  /* not now (callee unreachable, timeout): again after a backoff */
    OUTBOX_FAILED, /* refused for good: kept with failed_at and the reason for operators */
} outbox_verdict_t;

typedef struct outbox_msg {
    int64_t id;
    const char *topic;
    const char *key;
    const uint8_t *payload;
    size_t len;
    int attempts;   /* deliveries tried, this one included */
    int64_t age_ms; /* since outbox_put */
} outbox_msg_t;

/* Delivers one message; runs on the dispatcher thread, outside any
 * transaction. *why (optional, in a) explains a RETRY or FAILED verdict.
 * Memory from a lives until the verdict is recorded. */
typedef outbox_verdict_t (*outbox_handler_fn)(void *ctx, const outbox_msg_t *msg, arena_t *a,
                                              const char **why);

typedef struct outbox_topic {
    const char *topic; /* "sims.apply_usage" */
    outbox_handler_fn fn;
    void *ctx;
} outbox_topic_t;

typedef struct outbox_opts {
    db_pool_t *pool;              /* the service's pool; one connection is taken per step */
    const char *service;          /* for logs and the lease owner */
    const outbox_topic_t *topics; /* one handler per topic; rows of other topics stay */
    size_t n_topics;
    int batch;          /* rows claimed at once; 0: 32 */
    int lease_ms;       /* 0: 30000; rows are started only in its first half */
    int poll_ms;        /* idle wait between claims when not notified; 0: 500 */
    int max_backoff_ms; /* ceiling of the retry backoff; 0: 30000 */
} outbox_opts_t;

typedef struct outbox outbox_t;

/* Starts the dispatcher thread. The options' strings and topics must
 * outlive it. */
int outbox_start(const outbox_opts_t *opts, outbox_t **out) ONCEIOT_MUSTCHECK;
/* Wakes the dispatcher (after a commit that put rows) instead of waiting
 * for the next poll. Thread-safe, cheap. */
void outbox_notify(outbox_t *ob);
/* Stops the thread after the delivery in progress; rows in flight keep their
 * lease and are delivered again later (callees are idempotent). */
void outbox_stop(outbox_t *ob);

typedef struct outbox_stats {
    int64_t pending;       /* rows not yet delivered (not failed) */
    int64_t oldest_age_ms; /* age of the oldest pending row; 0 when none */
    int64_t failed;        /* rows refused for good */
    char last_error[256];  /* the latest error recorded on a row; "" when none */
} outbox_stats_t;

/* Reads the lag on conn (any connection of the service). */
int outbox_read_stats(db_conn_t *conn, outbox_stats_t *out) ONCEIOT_MUSTCHECK;

#endif
