/* The audit trail's call side (audit.h): a record filled from the call and
 * its principal. Apart from audit.c so that code without a server (tools,
 * unit tests) links the table's functions alone. */
#include "onceiot/audit.h"

#include "onceiot/svc.h"

#include <string.h>

static bool audit__hex(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* The smallest reading of traceparent that is safe to store: version "00",
 * a 32-hex-digit trace id that is not all zeros. */
const char *audit_trace_id(rpc_call_t *call)
{
    const uint8_t *v;
    size_t n;
    if (!rpc_call_metadata_bin(call, "traceparent", &v, &n) || n != 55 || v[0] != '0' ||
        v[1] != '0' || v[2] != '-' || v[35] != '-' || !audit__hex(v + 3, 32))
        return NULL;
    static const char zeros[32] = "00000000000000000000000000000000";
    if (memcmp(v + 3, zeros, 32) == 0)
        return NULL;
    char *out = arena_alloc(rpc_call_arena(call), 33);
    memcpy(out, v + 3, 32);
    out[32] = '\0';
    return out;
}

int audit_write_call_or_status(rpc_call_t *call, db_conn_t *conn, const principal_t *p,
                               const char *resource_type, const char *resource_id,
                               const char *summary)
{
    audit_record_t r = {
        .user_id = p ? p->user_id : 0,
        .organization_id = p ? p->organization_id : 0,
        .credential = p && p->credential && p->credential[0] ? p->credential : NULL,
        .method = rpc_call_method(call),
        .resource_type = resource_type,
        .resource_id = resource_id,
        .request_id = rpc_call_request_id(call),
        .trace_id = audit_trace_id(call),
        .peer = p && p->client_address && p->client_address[0] ? p->client_address
                                                               : rpc_call_peer(call),
        .summary = summary,
    };
    int64_t rc = audit_write(conn, &r);
    if (rc < 0)
        return svc_db_fail(call, conn, (int)rc);
    return 0;
}
