/* ListAuditRecords, the same on every service's API (svc.h): a service's
 * own records (audit.h), newest first, keyset-paged by seq. */
#include "common/v1/audit.pb-c.h"
#include "onceiot/audit.h"
#include "onceiot/pagetoken.h"
#include "onceiot/pbtime.h"
#include "onceiot/svc.h"

#include <string.h>

#define AUDIT_LIST_DEFAULT 50
#define AUDIT_LIST_MAX     500

static const db_stmt_t audit_list_stmt = {
    "audit_list",
    "SELECT seq, (extract(epoch FROM at) * 1000000)::bigint AS at_us, user_id, organization_id, "
    "credential, method, resource_type, resource_id, request_id, trace_id, peer, summary "
    "FROM audit_records "
    "WHERE ($1::bigint IS NULL OR organization_id = $1) "
    "AND ($2::bigint IS NULL OR at >= 'epoch'::timestamptz + $2::bigint * interval '1 "
    "microsecond') "
    "AND ($3::bigint IS NULL OR at < 'epoch'::timestamptz + $3::bigint * interval '1 microsecond') "
    "AND ($4::bigint IS NULL OR user_id = $4) AND ($5::text IS NULL OR method = $5) "
    "AND ($6::text IS NULL OR resource_type = $6) AND ($7::text IS NULL OR resource_id = $7) "
    "AND ($8::bigint IS NULL OR seq < $8) ORDER BY seq DESC LIMIT $9",
    9};

static const char *audit__nonempty(const char *s)
{
    return s && *s ? s : NULL;
}

static char *audit__col(arena_t *a, const PGresult *res, int r, const char *col)
{
    const char *v = db_get(res, r, col);
    return arena_strdup(a, v ? v : "");
}

int svc_list_audit_records(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Common__V1__ListAuditRecordsRequest *r = (const void *)req;
    const principal_t *p = svc_principal_or_status(call);
    if (!p)
        return ERR_UNAUTHENTICATED;
    if (!p->is_superuser && p->role != ONCEIOT__COMMON__V1__ROLE__ROLE_ADMIN)
        return rpc_fail(call, ERR_PERMISSION_DENIED, "only admins read the audit trail");
    /* Another tenant is not there, as everywhere. */
    if (!p->is_superuser && r->organization_id && r->organization_id != p->organization_id)
        return rpc_fail(call, ERR_NOT_FOUND, "no organization %lld", (long long)r->organization_id);
    arena_t *a = rpc_call_arena(call);
    int64_t org = p->is_superuser ? r->organization_id : p->organization_id;
    int64_t start = pbtime_us(r->start_time), end = pbtime_us(r->end_time);
    if (r->organization_id < 0)
        rpc_violation(call, "organization_id", "must not be negative");
    if (r->by_user_id < 0)
        rpc_violation(call, "by_user_id", "must not be negative");
    if (r->start_time && r->end_time && end <= start)
        rpc_violation(call, "end_time", "must be after start_time");
    if (audit__nonempty(r->resource_id) && !audit__nonempty(r->resource_type))
        rpc_violation(call, "resource_id", "needs resource_type");
    int limit = pagetoken_page_size(call, r->page_size, AUDIT_LIST_DEFAULT, AUDIT_LIST_MAX);
    const char *org_s = org ? arena_printf(a, "%lld", (long long)org) : NULL;
    const char *start_s = r->start_time ? arena_printf(a, "%lld", (long long)start) : NULL;
    const char *end_s = r->end_time ? arena_printf(a, "%lld", (long long)end) : NULL;
    const char *user_s = r->by_user_id ? arena_printf(a, "%lld", (long long)r->by_user_id) : NULL;
    const char *parts[] = {"audit",
                           org_s,
                           start_s,
                           end_s,
                           user_s,
                           audit__nonempty(r->method),
                           audit__nonempty(r->resource_type),
                           audit__nonempty(r->resource_id)};
    uint64_t hash = pagetoken_hash(parts, sizeof(parts) / sizeof(*parts));
    const char *before = NULL, *unused;
    if (audit__nonempty(r->page_token) &&
        pagetoken_decode(call, r->page_token, hash, &before, &unused) < 0)
        return ERR_INVALID_ARGUMENT;
    int rc = rpc_check_violations(call);
    if (rc < 0)
        return rc;
    db_conn_t *conn = svc_db_or_status(call);
    if (!conn)
        return ERR_UNAVAILABLE;
    const char *params[] = {org_s,
                            start_s,
                            end_s,
                            user_s,
                            audit__nonempty(r->method),
                            audit__nonempty(r->resource_type),
                            audit__nonempty(r->resource_id),
                            before,
                            arena_printf(a, "%d", limit + 1)};
    PGresult *res = NULL;
    if ((rc = db_exec_custom(conn, &audit_list_stmt, params, &res)) < 0)
        return svc_db_fail(call, conn, rc);
    int n = PQntuples(res);
    Onceiot__Common__V1__ListAuditRecordsResponse *out = arena_alloc(a, sizeof(*out));
    onceiot__common__v1__list_audit_records_response__init(out);
    size_t keep = (size_t)(n > limit ? limit : n);
    out->records = arena_alloc(a, (keep ? keep : 1) * sizeof(*out->records));
    for (size_t i = 0; i < keep; i++) {
        Onceiot__Common__V1__AuditRecord *rec = arena_alloc(a, sizeof(*rec));
        onceiot__common__v1__audit_record__init(rec);
        int row = (int)i;
        rec->seq = db_get_int(res, row, "seq", 0);
        rec->time = pbtime_from_us(a, db_get_int(res, row, "at_us", 0));
        rec->user_id = db_get_int(res, row, "user_id", 0);
        rec->organization_id = db_get_int(res, row, "organization_id", 0);
        rec->credential = audit__col(a, res, row, "credential");
        rec->method = audit__col(a, res, row, "method");
        rec->resource_type = audit__col(a, res, row, "resource_type");
        rec->resource_id = audit__col(a, res, row, "resource_id");
        rec->request_id = audit__col(a, res, row, "request_id");
        rec->trace_id = audit__col(a, res, row, "trace_id");
        rec->peer = audit__col(a, res, row, "peer");
        rec->summary = audit__col(a, res, row, "summary");
        out->records[out->n_records++] = rec;
    }
    if (n > limit && keep)
        out->next_page_token = (char *)pagetoken_encode(
            a, hash, arena_printf(a, "%lld", (long long)out->records[keep - 1]->seq), "");
    PQclear(res);
    *resp = &out->base;
    return 0;
}
