/* The call context shared by the handlers. */
#include "usage.h"

#include <string.h>

int usage_ctx_or_status(rpc_call_t *call, usage_ctx_t *cx)
{
    memset(cx, 0, sizeof(*cx));
    cx->call = call;
    cx->a = rpc_call_arena(call);
    cx->st = svc_state(rpc_call_ctx(call));
    cx->who = svc_principal_or_status(call);
    if (!cx->who)
        return ERR_UNAUTHENTICATED;
    cx->org = cx->who->is_superuser ? NULL : usage_i64(cx->a, cx->who->organization_id);
    return 0;
}

int usage_exec(usage_ctx_t *cx, const db_stmt_t *stmt, const char *const *params, PGresult **res)
{
    return svc_exec_or_status(cx->call, stmt, params, res);
}

int usage_staff_ctx_or_status(rpc_call_t *call, usage_ctx_t *cx)
{
    int rc = usage_ctx_or_status(call, cx);
    if (rc < 0)
        return rc;
    if (!cx->who->is_superuser)
        return rpc_fail(call, ERR_PERMISSION_DENIED,
                        "this method is for the operator's staff (superusers) only");
    return 0;
}

const char *usage_i64(arena_t *a, int64_t v)
{
    return arena_printf(a, "%lld", (long long)v);
}
