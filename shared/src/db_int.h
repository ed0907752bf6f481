/* The database module's private parts (shared/src/db.c, db_exec.c): the
 * pool and connection structs and the helpers both files use. Not for
 * callers outside the module: they see onceiot/db.h. */
#ifndef ONCEIOT_DB_INT_H
#define ONCEIOT_DB_INT_H

#include "onceiot/db.h"
#include "onceiot/metrics.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct db_conn {
    db_pool_t *pool;
    PGconn *pg;                 /* NULL while broken */
    bool in_use;                /* guarded by pool->mu */
    int64_t retry_at_ms;        /* monotonic time before which no reconnect is tried */
    int backoff_ms;             /* delay after the last failed reconnect; 0 once connected */
    const db_stmt_t **prepared; /* statements prepared on pg */
    int nprepared;              /* entries used in prepared */
    int cap_prepared;           /* entries allocated in prepared */
    int64_t timeout_ms;         /* this checkout's tighter statement_timeout; 0: the default */
    int64_t scope_org;          /* db_set_scope's organization; 0: none */
    bool settings_any;          /* db_set_scope or a tighter db_set_timeout was called */
    bool scope_superuser;       /* db_set_scope's superuser flag */
    bool settings_live;         /* the settings are in effect in the open transaction */
    const char *call_info;      /* db_set_call's JSON (the caller's), or NULL */
    char errmsg[1024];          /* last error message */
    char sqlstate[6];           /* last SQLSTATE */
    char constraint[128];       /* constraint named by the last error */
};

struct db_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;          /* signalled when a connection is given back */
    char *url;                  /* as given, a URI or key=value string */
    char *schema;               /* unquoted schema name */
    int size;                   /* entries in conns */
    int64_t default_timeout_ms; /* statement_timeout every connection starts with */
    int connect_timeout_ms;     /* bound on one connection attempt */
    db_conn_t *conns;
    int in_use;                        /* connections handed out, guarded by mu */
    int waiting;                       /* callers waiting for one, guarded by mu */
    metrics_series_t *acquire_seconds; /* NULL while metrics are off */
};

/* Copies a libpq message without its trailing newline (db.c). */
void db__copy_msg(char *dst, size_t len, const char *msg);
/* Closes a connection that can no longer be trusted (db.c). */
void db__mark_broken(db_conn_t *c);

#endif
