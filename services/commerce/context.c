/* The call context and small helpers shared by the handlers. */
#include "commerce.h"
#include "onceiot/pbtime.h"

#include <stdlib.h>
#include <string.h>

int commerce_ctx_or_status(rpc_call_t *call, commerce_ctx_t *cx)
{
    memset(cx, 0, sizeof(*cx));
    cx->call = call;
    cx->a = rpc_call_arena(call);
    cx->st = svc_state(rpc_call_ctx(call));
    cx->who = svc_principal_or_status(call);
    if (!cx->who)
        return ERR_UNAUTHENTICATED;
    cx->org = cx->who->is_superuser ? NULL : commerce_i64(cx->a, cx->who->organization_id);
    return 0;
}

int commerce_staff_ctx_or_status(rpc_call_t *call, commerce_ctx_t *cx)
{
    int rc = commerce_ctx_or_status(call, cx);
    if (rc < 0)
        return rc;
    if (!cx->who->is_superuser)
        return rpc_fail(call, ERR_PERMISSION_DENIED,
                        "this method is for the operator's staff (superusers) only");
    return 0;
}

int commerce_exec(commerce_ctx_t *cx, const db_stmt_t *stmt, const char *const *params,
                  PGresult **res)
{
    return svc_exec_or_status(cx->call, stmt, params, res);
}

/* Runs fixed SQL on the call's connection (status set on failure). */
static int commerce__simple(commerce_ctx_t *cx, const char *sql)
{
    db_conn_t *conn = svc_db_or_status(cx->call);
    if (!conn)
        return ERR_UNAVAILABLE;
    int rc = db_exec_simple(conn, sql);
    return rc < 0 ? svc_db_fail(cx->call, conn, rc) : 0;
}

int commerce_begin(commerce_ctx_t *cx)
{
    return commerce__simple(cx, "BEGIN");
}

int commerce_commit(commerce_ctx_t *cx)
{
    return commerce__simple(cx, "COMMIT");
}

const char *commerce_i64(arena_t *a, int64_t v)
{
    return arena_printf(a, "%lld", (long long)v);
}

Google__Protobuf__Timestamp *commerce_ts(arena_t *a, const char *us)
{
    return pbtime_from_us_text(a, us);
}

const char *commerce_ts_param(arena_t *a, const Google__Protobuf__Timestamp *ts)
{
    return pbtime_us_text(a, ts);
}
