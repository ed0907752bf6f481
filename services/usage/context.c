/* The call context shared by the handlers. */
#include "onceiot/pagetoken.h"
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

int usage_sim_list_or_status(usage_ctx_t *cx, const char *list, const char *iccid,
                             int32_t page_size, const Google__Protobuf__Timestamp *start,
                             const Google__Protobuf__Timestamp *end, const char *page_token,
                             usage_sim_list_t *out)
{
    rpc_call_t *call = cx->call;
    memset(out, 0, sizeof(*out));
    usage_valid_iccid(call, USAGE_AT_TOP, "iccid", iccid);
    out->size = pagetoken_page_size(call, page_size, 100, 1000);
    out->from = start ? usage_ts_text(cx->a, usage_ts_us(start)) : NULL;
    out->to = end ? usage_ts_text(cx->a, usage_ts_us(end)) : NULL;
    if (start && end && usage_ts_us(end) <= usage_ts_us(start))
        rpc_violation(call, "end", "must be after start");
    const char *parts[] = {list, iccid, out->from, out->to};
    out->hash = pagetoken_hash(parts, 4);
    if (page_token[0] && pagetoken_decode(call, page_token, out->hash, &out->key, &out->last) < 0)
        return ERR_INVALID_ARGUMENT;
    int rc = rpc_check_violations(call);
    if (rc < 0)
        return rc;
    return usage_sim_or_status(cx, iccid, &out->sim);
}
