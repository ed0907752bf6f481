/* Queries shared by the handlers: the call context, reading and locking
 * tickets, and their history. */
#include "onceiot/pbtime.h"
#include "support.h"

#include <stdlib.h>
#include <string.h>

int support_ctx_or_status(rpc_call_t *call, support_ctx_t *cx)
{
    memset(cx, 0, sizeof(*cx));
    cx->call = call;
    cx->a = rpc_call_arena(call);
    cx->st = svc_state(rpc_call_ctx(call));
    cx->who = svc_principal_or_status(call);
    if (!cx->who)
        return ERR_UNAUTHENTICATED;
    cx->staff = cx->who->is_superuser;
    cx->org = cx->staff ? NULL : support_i64(cx, cx->who->organization_id);
    cx->actor = support_i64(cx, cx->who->user_id);
    return 0;
}

int support_exec(support_ctx_t *cx, const db_stmt_t *stmt, const char *const *params,
                 PGresult **res)
{
    return svc_exec_or_status(cx->call, stmt, params, res);
}

const char *support_i64(support_ctx_t *cx, int64_t v)
{
    return arena_printf(cx->a, "%lld", (long long)v);
}

const char *support_nz(const char *s)
{
    return s && *s ? s : NULL;
}

static char *support__str(arena_t *a, const PGresult *res, int row, const char *col)
{
    const char *v = db_get(res, row, col);
    return arena_strdup(a, v ? v : "");
}

/* Splits a comma-separated list (ICCIDs never hold a comma) into *out. */
static void support__csv(arena_t *a, const char *csv, char ***out, size_t *n)
{
    *n = 0;
    if (!csv || !*csv)
        return;
    size_t cap = 1;
    for (const char *p = csv; *p; p++)
        cap += *p == ',';
    *out = arena_alloc(a, cap * sizeof(char *));
    const char *start = csv;
    for (const char *p = csv;; p++) {
        if (*p == ',' || !*p) {
            (*out)[(*n)++] = arena_strndup(a, start, (size_t)(p - start));
            if (!*p)
                break;
            start = p + 1;
        }
    }
}

support_ticket_t *support_ticket_from_row(arena_t *a, const PGresult *res, int row)
{
    support_ticket_t *t = arena_alloc(a, sizeof(*t));
    onceiot__support__v1__ticket__init(t);
    t->id = db_get_int(res, row, "id", 0);
    t->external_id = support__str(a, res, row, "external_id");
    t->organization_id = db_get_int(res, row, "organization_id", 0);
    t->created_by = db_get_int(res, row, "created_by", 0);
    t->subject = support__str(a, res, row, "subject");
    t->description = support__str(a, res, row, "description");
    t->priority = support_priority_enum(db_get(res, row, "priority"));
    t->status = support_status_enum(db_get(res, row, "status"));
    t->category = support_category_enum(db_get(res, row, "category"));
    support__csv(a, db_get(res, row, "iccids_csv"), &t->iccids, &t->n_iccids);
    t->assignee_id = db_get_int(res, row, "assignee_id", 0);
    t->resolution = support__str(a, res, row, "resolution");
    t->reopen_count = (int32_t)db_get_int(res, row, "reopen_count", 0);
    t->created_at = pbtime_from_us_text(a, db_get(res, row, "created_us"));
    t->updated_at = pbtime_from_us_text(a, db_get(res, row, "updated_us"));
    t->started_at = pbtime_from_us_text(a, db_get(res, row, "started_us"));
    t->resolved_at = pbtime_from_us_text(a, db_get(res, row, "resolved_us"));
    t->closed_at = pbtime_from_us_text(a, db_get(res, row, "closed_us"));
    t->first_response_at = pbtime_from_us_text(a, db_get(res, row, "first_response_us"));
    t->response_due_at = pbtime_from_us_text(a, db_get(res, row, "due_us"));
    t->response_overdue = db_get_bool(res, row, "overdue");
    return t;
}

static const db_stmt_t get_ticket = {
    "support_get_ticket",
    "SELECT " SUPPORT_TICKET_COLUMNS " FROM tickets t "
    "WHERE t.id = $1 AND ($2::bigint IS NULL OR t.organization_id = $2)",
    2};

static const db_stmt_t get_history = {
    "support_get_history",
    "SELECT kind, from_status, to_status, from_assignee_id, to_assignee_id, actor_user_id, "
    "(extract(epoch FROM at) * 1000000)::bigint AS at_us "
    "FROM ticket_history WHERE ticket_id = $1 ORDER BY id",
    1};

static Onceiot__Support__V1__HistoryKind support__kind(const char *k)
{
    if (strcmp(k, "created") == 0)
        return ONCEIOT__SUPPORT__V1__HISTORY_KIND__HISTORY_KIND_CREATED;
    if (strcmp(k, "status") == 0)
        return ONCEIOT__SUPPORT__V1__HISTORY_KIND__HISTORY_KIND_STATUS;
    return ONCEIOT__SUPPORT__V1__HISTORY_KIND__HISTORY_KIND_ASSIGNED;
}

static int support__load_history(support_ctx_t *cx, support_ticket_t *t)
{
    PGresult *res = NULL;
    const char *params[] = {support_i64(cx, t->id)};
    int rc = support_exec(cx, &get_history, params, &res);
    if (rc < 0)
        return rc;
    int n = PQntuples(res);
    t->history = arena_alloc(cx->a, (size_t)(n ? n : 1) * sizeof(*t->history));
    for (int i = 0; i < n; i++) {
        Onceiot__Support__V1__TicketHistoryEntry *h = arena_alloc(cx->a, sizeof(*h));
        onceiot__support__v1__ticket_history_entry__init(h);
        h->kind = support__kind(db_get(res, i, "kind"));
        h->from_status = support_status_enum(db_get(res, i, "from_status"));
        h->to_status = support_status_enum(db_get(res, i, "to_status"));
        h->from_assignee_id = db_get_int(res, i, "from_assignee_id", 0);
        h->to_assignee_id = db_get_int(res, i, "to_assignee_id", 0);
        h->actor_user_id = db_get_int(res, i, "actor_user_id", 0);
        h->at = pbtime_from_us_text(cx->a, db_get(res, i, "at_us"));
        t->history[t->n_history++] = h;
    }
    PQclear(res);
    return 0;
}

int support_load_ticket_or_status(support_ctx_t *cx, int64_t id, bool with_history,
                                  support_ticket_t **out)
{
    PGresult *res = NULL;
    const char *params[] = {support_i64(cx, id), cx->org};
    int rc = support_exec(cx, &get_ticket, params, &res);
    if (rc < 0)
        return rc;
    if (rc == 0) {
        PQclear(res);
        return rpc_fail(cx->call, ERR_NOT_FOUND, "no ticket %lld", (long long)id);
    }
    *out = support_ticket_from_row(cx->a, res, 0);
    PQclear(res);
    return with_history ? support__load_history(cx, *out) : 0;
}

static const db_stmt_t lock_ticket = {
    "support_lock_ticket",
    "SELECT id, organization_id, status, assignee_id, "
    "status = 'resolved' AND resolved_at > now() - $3::bigint * interval '1 second' "
    "AS reopenable FROM tickets "
    "WHERE id = $1 AND ($2::bigint IS NULL OR organization_id = $2) FOR UPDATE",
    3};

int support_begin_lock_or_status(support_ctx_t *cx, int64_t id, support_locked_t *out)
{
    int rc = svc_begin_or_status(cx->call);
    if (rc < 0)
        return rc;
    PGresult *res = NULL;
    const char *params[] = {support_i64(cx, id), cx->org, support_i64(cx, cx->st->reopen_window_s)};
    if ((rc = support_exec(cx, &lock_ticket, params, &res)) < 0)
        return rc;
    if (rc == 0) {
        PQclear(res);
        return rpc_fail(cx->call, ERR_NOT_FOUND, "no ticket %lld", (long long)id);
    }
    out->id = arena_strdup(cx->a, db_get(res, 0, "id"));
    out->org = arena_strdup(cx->a, db_get(res, 0, "organization_id"));
    out->status = arena_strdup(cx->a, db_get(res, 0, "status"));
    out->assignee_id = db_get_int(res, 0, "assignee_id", 0);
    out->reopenable = db_get_bool(res, 0, "reopenable");
    PQclear(res);
    return 0;
}

static const db_stmt_t add_history = {
    "support_add_history",
    "INSERT INTO ticket_history (ticket_id, kind, from_status, to_status, from_assignee_id, "
    "to_assignee_id, actor_user_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    7};

int support_record_history(support_ctx_t *cx, const char *ticket_id, const char *kind,
                           const char *from_status, const char *to_status,
                           const char *from_assignee, const char *to_assignee)
{
    const char *params[] = {ticket_id,     kind,        from_status, to_status,
                            from_assignee, to_assignee, cx->actor};
    return support_exec(cx, &add_history, params, NULL);
}

int support_commit_answer(support_ctx_t *cx, int64_t id, ProtobufCMessage **resp)
{
    support_ticket_t *t;
    int rc = support_load_ticket_or_status(cx, id, true, &t);
    if (rc < 0 || (rc = requestid_commit_or_status(cx->call, svc_db_or_status(cx->call), &cx->rq,
                                                   &t->base)) < 0)
        return rc;
    *resp = &t->base;
    return 0;
}
