/* A call's database access (svc.h): the call's one connection, scoped to
 * its principal and its public call (for the audit trail), bounded by its
 * deadline, and the statuses database errors become. */
#include "onceiot/svc.h"

#include "onceiot/log.h"
#include "svc_int.h"

#include <stdio.h>
#include <string.h>

/* ---- per-call database access ---- */

int svc_db_fail(rpc_call_t *call, db_conn_t *conn, int rc)
{
    /* PostgreSQL's own text names tables, types and values of our schema:
     * it goes to the log with the call's request id, never to the client. */
    const char *state = conn ? db_sqlstate(conn) : "";
    const char *constraint = conn ? db_constraint(conn) : "";
    log_rec_t r;
    log_begin(&r, rc == ERR_INTERNAL ? LOG_ERROR : LOG_WARN, "db_error");
    log_str(&r, "method", rpc_call_method(call));
    log_str(&r, "request_id", rpc_call_request_id(call));
    log_str(&r, "sqlstate", state);
    if (constraint[0])
        log_str(&r, "constraint", constraint);
    log_str(&r, "detail", conn ? db_errmsg(conn) : "no connection");
    log_end(&r);
    switch (rc) {
    case ERR_ALREADY_EXISTS:
        return rpc_fail(call, rc, "it already exists%s%s", constraint[0] ? ": " : "", constraint);
    case ERR_INVALID_ARGUMENT:
        if (strncmp(state, "22", 2) == 0)
            return rpc_fail(call, rc, "a value has the wrong form or is out of range");
        if (strcmp(state, "23502") == 0)
            return rpc_fail(call, rc, "a required value is missing");
        return rpc_fail(call, rc, "a value breaks the rule %s",
                        constraint[0] ? constraint : "of the schema");
    case ERR_ABORTED:
        return rpc_fail(call, rc, "the change conflicted with a concurrent one; retry");
    case ERR_DEADLINE_EXCEEDED:
        return rpc_fail(call, rc, "the deadline expired while the database worked");
    case ERR_UNAVAILABLE:
        return rpc_fail(call, rc, "the database is unavailable; retry");
    default:
        return rpc_fail(call, rc, "the database could not do it (request id %s)",
                        rpc_call_request_id(call));
    }
}

typedef struct svc_call_db {
    db_pool_t *pool;        /* NULL until a connection is taken */
    db_conn_t *conn;        /* the call's connection, or NULL */
    const principal_t *who; /* the verified principal, or NULL */
    const char *call_json;  /* DB_SETTING_CALL for a public call, made once */
} svc_call_db_t;

/* The call's database state in rpc_call_local, made on first use. */
static svc_call_db_t *svc__call_db(rpc_call_t *call)
{
    svc_call_db_t *d = rpc_call_local(call);
    if (!d) {
        d = arena_alloc(rpc_call_arena(call), sizeof(*d));
        *d = (svc_call_db_t){0};
        rpc_call_set_local(call, d);
    }
    return d;
}

/* Appends s to buf as the inside of a JSON string (quotes and backslashes
 * escaped, control characters dropped: every value here is an identifier). */
static void svc__json_str(char *buf, size_t cap, size_t *len, const char *s)
{
    for (; s && *s && *len + 3 < cap; s++) {
        if ((unsigned char)*s < 0x20)
            continue;
        if (*s == '"' || *s == '\\')
            buf[(*len)++] = '\\';
        buf[(*len)++] = *s;
    }
}

/* DB_SETTING_CALL of a public call (a user's, through the gateway), in the
 * call's arena; NULL for a service's call (internal work is not audited). */
static const char *svc__call_json(rpc_call_t *call, const principal_t *who)
{
    if (!who || strcmp(who->issuer, "gateway") != 0 || !who->credential ||
        strncmp(who->credential, "service:", 8) == 0)
        return NULL;
    const char *keys[] = {"c", "m", "r", "t", "p"};
    const char *vals[] = {who->credential, rpc_call_method(call), rpc_call_request_id(call),
                          rpc_call_trace_id(call), rpc_call_peer(call)};
    char buf[1024];
    size_t len = (size_t)snprintf(buf, sizeof(buf), "{\"u\":%lld,\"o\":%lld",
                                  (long long)who->user_id, (long long)who->organization_id);
    for (size_t i = 0; i < sizeof(keys) / sizeof(*keys); i++) {
        if (!vals[i] || !*vals[i] || len + 16 > sizeof(buf))
            continue;
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, ",\"%s\":\"", keys[i]);
        svc__json_str(buf, sizeof(buf), &len, vals[i]);
        buf[len++] = '"';
    }
    buf[len++] = '}';
    return arena_strndup(rpc_call_arena(call), buf, len);
}

/* Row-level security sees the principal's organization and superuser flag;
 * a call without a verified principal gets no scope (sees no rows). The
 * audit triggers see who made a public call (svc__call_json). */
static void svc__scope(rpc_call_t *call, const principal_t *who, db_conn_t *conn)
{
    if (!who)
        return;
    db_set_scope(conn, who->organization_id, who->is_superuser);
    svc_call_db_t *d = svc__call_db(call);
    if (!d->call_json)
        d->call_json = svc__call_json(call, who);
    if (d->call_json)
        db_set_call(conn, d->call_json);
}

/* Remembers the call's verified principal, and scopes its connection. */
void svc__set_who(rpc_call_t *call, const principal_t *p)
{
    svc_call_db_t *d = svc__call_db(call);
    d->who = p;
    if (d->conn)
        svc__scope(call, p, d->conn);
}

void svc_db_scope(rpc_call_t *call, db_conn_t *conn)
{
    svc_call_db_t *d = rpc_call_local(call);
    svc__scope(call, d ? d->who : NULL, conn);
}

static void svc__release_conn(void *arg)
{
    svc_call_db_t *d = arg;
    db_pool_release(d->pool, d->conn);
    d->conn = NULL;
}

/* Takes the call's connection (once per call, kept in rpc_call_local and
 * given back by a defer when the handler returns), scoped to the call's
 * principal and bounded by its deadline. Sets the status on error. */
static int svc__call_conn(rpc_call_t *call, db_conn_t **out)
{
    svc_call_db_t *d = svc__call_db(call);
    if (d->conn) {
        *out = d->conn;
        return 0;
    }
    *out = NULL;
    svc_t *svc = rpc_call_ctx(call);
    int64_t left = rpc_call_remaining_ms(call);
    if (left == 0)
        return rpc_fail(call, ERR_DEADLINE_EXCEEDED, "the deadline expired");
    int64_t wait = left < svc->cfg.connect_timeout_ms ? left : svc->cfg.connect_timeout_ms;
    db_conn_t *conn = NULL;
    int rc = db_pool_acquire(svc->db, wait, &conn);
    if (rc < 0)
        return rpc_fail(call, rc,
                        rc == ERR_RESOURCE_EXHAUSTED ? "no database connection became free in time"
                                                     : "the database is unavailable");
    d->pool = svc->db;
    d->conn = conn;
    rpc_call_defer(call, svc__release_conn, d);
    svc__scope(call, d->who, conn);
    if (left != INT64_MAX && (rc = db_set_timeout(conn, left)) < 0)
        return svc_db_fail(call, conn, rc);
    *out = conn;
    return 0;
}

db_conn_t *svc_db_or_status(rpc_call_t *call)
{
    db_conn_t *conn;
    return svc__call_conn(call, &conn) < 0 ? NULL : conn;
}

db_conn_t *svc_db_system_or_status(rpc_call_t *call)
{
    db_conn_t *conn;
    if (svc__call_conn(call, &conn) < 0)
        return NULL;
    db_set_scope(conn, 0, true);
    return conn;
}

int svc_exec_or_status(rpc_call_t *call, const db_stmt_t *stmt, const char *const *params,
                       PGresult **res)
{
    db_conn_t *conn;
    int rc = svc__call_conn(call, &conn);
    if (rc < 0)
        return rc;
    rc = db_exec(conn, stmt, params, res);
    return rc < 0 ? svc_db_fail(call, conn, rc) : rc;
}

int svc_exec_values_or_status(rpc_call_t *call, const db_stmt_t *stmt, const db_value_t *values,
                              PGresult **res)
{
    db_conn_t *conn;
    int rc = svc__call_conn(call, &conn);
    if (rc < 0)
        return rc;
    rc = db_exec_values(conn, stmt, values, res);
    return rc < 0 ? svc_db_fail(call, conn, rc) : rc;
}

static int svc__simple_or_status(rpc_call_t *call, const char *sql)
{
    db_conn_t *conn;
    int rc = svc__call_conn(call, &conn);
    if (rc < 0)
        return rc;
    rc = db_exec_simple(conn, sql);
    if (rc < 0)
        return svc_db_fail(call, conn, rc);
    return 0;
}

int svc_begin_or_status(rpc_call_t *call)
{
    return svc__simple_or_status(call, "BEGIN");
}

int svc_commit_or_status(rpc_call_t *call)
{
    return svc__simple_or_status(call, "COMMIT");
}
