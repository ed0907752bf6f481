/* PostgreSQL: a fixed-size pool of libpq connections, prepared statements,
 * transactions, reconnection and the SQLSTATE -> error-code mapping.
 *
 * Only parameterized SQL: statements are static db_stmt_t definitions with
 * $1..$n placeholders, prepared lazily once per connection, and executed with
 * text parameters. Every connection runs with search_path set to the owning
 * service's schema (then public), so SQL names tables without a schema.
 *
 * Errors: functions return 0 (or a row count) or a negative ERR_* code, and
 * leave a human message in db_errmsg(conn):
 *   23505 unique_violation              -> ERR_ALREADY_EXISTS
 *   23503 foreign_key_violation         -> ERR_FAILED_PRECONDITION
 *   23514 check, 23502 not-null, 22xxx  -> ERR_INVALID_ARGUMENT
 *   40001 serialization, 40P01 deadlock -> ERR_ABORTED
 *   57014 query_canceled (statement_timeout) -> ERR_DEADLINE_EXCEEDED
 *   08xxx, 57P01..57P03, lost connection -> ERR_UNAVAILABLE
 *   anything else                       -> ERR_INTERNAL */
#ifndef ONCEIOT_DB_H
#define ONCEIOT_DB_H

#include "onceiot/err.h"
#include "onceiot/mem.h"
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct db_pool db_pool_t;
typedef struct db_conn db_conn_t;

/* A statement, defined once (usually static const) and shared by all
 * connections. */
typedef struct db_stmt {
    const char *name; /* unique per process, used as the prepared-statement name */
    const char *sql;  /* with $1..$n */
    int nparams;
} db_stmt_t;

typedef struct db_opts {
    const char *url;          /* libpq connection URI or key=value string */
    const char *schema;       /* search_path = "<schema>, public" */
    int size;                 /* connections in the pool, >= 1 */
    int statement_timeout_ms; /* default per statement; 0 = none */
    int connect_timeout_ms;   /* per connection attempt */
} db_opts_t;

/* Creates the pool and opens its connections. If the server cannot be
 * reached, the pool is still created (connections are retried with backoff
 * on acquire) and ERR_UNAVAILABLE is returned along with *out, so a service
 * may start and report NOT_SERVING. ERR_CONFIG for an unusable URL. */
int db_pool_open(const db_opts_t *opts, db_pool_t **out) ONCEIOT_MUSTCHECK;
void db_pool_close(db_pool_t *pool);

/* Takes a connection, waiting up to timeout_ms for one to be free (and to
 * reconnect a broken one). ERR_RESOURCE_EXHAUSTED on timeout, ERR_UNAVAILABLE
 * when the server is down. */
int db_pool_acquire(db_pool_t *pool, int64_t timeout_ms, db_conn_t **out) ONCEIOT_MUSTCHECK;
/* Gives a connection back. An open transaction is rolled back first; the
 * scope and timeout set on it end with this checkout. */
void db_pool_release(db_pool_t *pool, db_conn_t *conn);
/* The pool's connections handed out, callers waiting for one, and its
 * size, read under its lock (for metrics). */
void db_pool_stats(db_pool_t *pool, int *in_use, int *waiting, int *size);
/* Runs "SELECT 1" on a free connection (reconnecting if needed). True when
 * the database answered within timeout_ms. */
bool db_pool_ping(db_pool_t *pool, int64_t timeout_ms);

/* Transaction-local settings.
 *
 * Row-level security policies in every service schema read who a statement
 * works for from two settings, with current_setting(name, true):
 *   onceiot.org_id     the organization id as text ('' or unset: none)
 *   onceiot.superuser  'true' or 'false' (unset: not)
 * db_set_scope and db_set_timeout only record values on the checkout; they
 * are sent with set_config(..., true) in the same round trip as the next
 * statement (one pipeline, one Sync): ahead of it for an autocommit statement
 * (which, with its settings, is then one implicit transaction), right after
 * BEGIN for a transaction, and not again until that transaction ends. So
 * they cost no round trip of their own and never outlive the transaction,
 * the checkout or a rollback. A checkout that calls neither sends nothing:
 * its statements see no organization's rows (fail closed). With settings,
 * db_exec_simple takes one statement at a time (the extended protocol).
 *
 * Who calls: the runtime, from the call's verified principal
 * (svc_db_or_status); service-internal work without a principal (outbox
 * handlers, maintenance, upkeep, bootstrap) says so explicitly with
 * db_set_scope(conn, 0, true). */
#define DB_SETTING_ORG_ID    "onceiot.org_id"
#define DB_SETTING_SUPERUSER "onceiot.superuser"
/* The public call the statements work for, as a JSON object (the runtime's,
 * svc_call_db.c): the audit triggers (audit.h) record what they change with it.
 * '' or unset: no public call (internal work), nothing is recorded. */
#define DB_SETTING_CALL "onceiot.call"

/* The organization (org_id > 0, else none) and superuser flag the
 * statements that follow on this connection work for, until release. */
void db_set_scope(db_conn_t *conn, int64_t org_id, bool superuser);
/* The public call (DB_SETTING_CALL's JSON, which must outlive the checkout
 * or the next db_set_call) the statements that follow work for, until
 * release; NULL: none. Sent with the settings above. */
void db_set_call(db_conn_t *conn, const char *json);
/* Bounds the statements that follow on this connection (until release) to
 * timeout_ms (<= 0: the next statement fails at once), to fit SQL inside a
 * call's remaining deadline. Sent with the settings above, and only when it
 * is tighter than the pool's default. Returns 0. */
int db_set_timeout(db_conn_t *conn, int64_t timeout_ms) ONCEIOT_MUSTCHECK;

/* Executes a prepared statement with text parameters (NULL entries are SQL
 * NULL). On success returns the number of rows affected or returned and, if
 * res is not NULL, hands over the result (PQclear it). */
int db_exec(db_conn_t *conn, const db_stmt_t *stmt, const char *const *params,
            PGresult **res) ONCEIOT_MUSTCHECK;
/* As db_exec, but planned anew for this call's parameters: the statement is
 * sent unnamed (parse, bind and execute in one round trip) and never
 * prepared, so PostgreSQL folds "$n IS NULL OR ..." filters away without a
 * SET plan_cache_mode round trip of its own. */
int db_exec_custom(db_conn_t *conn, const db_stmt_t *stmt, const char *const *params,
                   PGresult **res) ONCEIOT_MUSTCHECK;
/* As db_exec, but always with the generic plan: planned once per connection,
 * whatever the parameters. For a statement whose best plan does not depend
 * on them, where PostgreSQL's plan cache, comparing estimates, would plan it
 * again for every call (a "LIMIT $n" makes the generic plan look costlier).
 * plan_cache_mode is set transaction-locally in the same round trip, so it
 * runs outside a transaction block only (else ERR_INTERNAL). */
int db_exec_generic(db_conn_t *conn, const db_stmt_t *stmt, const char *const *params,
                    PGresult **res) ONCEIOT_MUSTCHECK;
/* Executes fixed SQL with no parameters (BEGIN, SET ...). */
int db_exec_simple(db_conn_t *conn, const char *sql) ONCEIOT_MUSTCHECK;

int db_begin(db_conn_t *conn) ONCEIOT_MUSTCHECK;  /* BEGIN */
int db_commit(db_conn_t *conn) ONCEIOT_MUSTCHECK; /* COMMIT; maps a failed commit */
void db_rollback(db_conn_t *conn);                /* ROLLBACK if a transaction is open */

/* The message of the last error on this connection ("" if none). */
const char *db_errmsg(const db_conn_t *conn);
/* The SQLSTATE of the last error ("" if none). */
const char *db_sqlstate(const db_conn_t *conn);
/* The constraint named by the last error, or "" (helps name the bad field). */
const char *db_constraint(const db_conn_t *conn);
PGconn *db_pgconn(db_conn_t *conn);

/* A PostgreSQL array literal ("{"a","b",NULL}") of n text values in the
 * arena, for one $n parameter that unnest() or ANY() reads; NULL entries are
 * SQL NULL. Batches travel as one array per column, not one row per
 * statement. */
const char *db_text_array(arena_t *a, const char *const *v, size_t n);

/* A statement's parameter as text or in PostgreSQL's binary format. Binary
 * arrays spare the server array_in's parsing, which costs a bulk upsert of
 * a thousand rows about a third of its CPU (docs/ARCHITECTURE.md, "Usage
 * ingest"). The element types must be the parameter's: int8 for a
 * $n::bigint[], text for a $n::text[]. */
typedef struct db_value {
    const char *data; /* NULL: SQL NULL */
    int len;          /* bytes of a binary value */
    bool binary;
} db_value_t;
enum { DB_MAX_VALUES = 32 };
/* A text parameter (NULL: SQL NULL). */
db_value_t db_value_text(const char *s);
/* n integers as a binary int8[] (bigint[]); entry i is SQL NULL where
 * null[i] is true (null may be NULL: none are). */
db_value_t db_value_int8_array(arena_t *a, const int64_t *v, const bool *null, size_t n);
/* n booleans as a binary bool[]. */
db_value_t db_value_bool_array(arena_t *a, const bool *v, size_t n);
/* n strings as a binary text[]; NULL entries are SQL NULL. */
db_value_t db_value_text_array(arena_t *a, const char *const *v, size_t n);
/* db_exec with such parameters (at most DB_MAX_VALUES). */
int db_exec_values(db_conn_t *conn, const db_stmt_t *stmt, const db_value_t *values,
                   PGresult **res) ONCEIOT_MUSTCHECK;

/* Maps a SQLSTATE to an ERR_* code, as in the table above. */
int db_map_sqlstate(const char *sqlstate);

/* Column helpers: the value of a named column in row r, or NULL for SQL NULL.
 * Aborts if the column does not exist (a programming error). */
const char *db_get(const PGresult *res, int row, const char *column);
int64_t db_get_int(const PGresult *res, int row, const char *column, int64_t if_null);
bool db_get_bool(const PGresult *res, int row, const char *column);

#endif
