/* Tickets: CreateTicket, GetTicket, ListTickets and UpdateTicket. */
#include "google/protobuf/field_mask.pb-c.h"
#include "onceiot/pbtime.h"
#include "support.h"

#include <string.h>

#define LIST_DEFAULT     50
#define LIST_MAX         500
#define QUERY_MAX        200
#define DUE_WITHIN_MAX_S (90LL * 86400)
#define DESCRIPTION_MAX  20000

static const db_stmt_t insert_ticket = {
    "support_insert_ticket",
    "INSERT INTO tickets (organization_id, created_by, subject, description, priority, "
    "category, iccids) VALUES ($1, $2, $3, $4, $5, $6, $7::text[]) RETURNING id",
    7};

int support_create_ticket(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Support__V1__CreateTicketRequest *r = (const void *)req;
    support_ctx_t cx;
    int rc = support_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    support_valid_subject(call, "subject", r->subject);
    support_valid_text(call, "description", r->description, 0, DESCRIPTION_MAX);
    const char *priority = r->priority ? support_priority_name(r->priority) : "medium";
    if (!priority)
        rpc_violation(call, "priority", "unknown priority %d", (int)r->priority);
    const char *category = r->category ? support_category_name(r->category) : "general";
    if (!category)
        rpc_violation(call, "category", "unknown category %d", (int)r->category);
    if (r->organization_id < 0)
        rpc_violation(call, "organization_id", "must not be negative");
    support_valid_iccids(call, "iccids", r->iccids, r->n_iccids);
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    /* Only staff choose the organization; others open tickets in their own. */
    int64_t org = cx.staff && r->organization_id ? r->organization_id : cx.who->organization_id;
    if (org <= 0)
        return rpc_fail(call, ERR_INVALID_ARGUMENT, "the caller has no organization");
    if ((rc = support_check_iccids_or_status(&cx, "iccids", r->iccids, r->n_iccids, org)) < 0)
        return rc;
    /* The ICCIDs are checked before the transaction: no claim waits on a
     * call to sims. A retry is checked again, then replayed. */
    db_conn_t *conn = svc_db_or_status(call);
    if (!conn)
        return ERR_UNAVAILABLE;
    if ((rc = requestid_begin_or_status(call, conn, r->request_id, req, &cx.rq, resp)) != 0)
        return rc < 0 ? rc : 0; /* or the first answer, replayed */
    const char *params[] = {support_i64(&cx, org),
                            cx.actor,
                            r->subject,
                            r->description,
                            priority,
                            category,
                            db_text_array(cx.a, (const char *const *)r->iccids, r->n_iccids)};
    PGresult *res = NULL;
    if ((rc = support_exec(&cx, &insert_ticket, params, &res)) < 0)
        return rc;
    const char *id = arena_strdup(cx.a, db_get(res, 0, "id"));
    int64_t id_num = db_get_int(res, 0, "id", 0);
    PQclear(res);
    if ((rc = support_record_history(&cx, id, "created", NULL, "open", NULL, NULL)) < 0)
        return rc;
    return support_commit_answer(&cx, id_num, resp);
}

int support_get_ticket(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Support__V1__GetTicketRequest *r = (const void *)req;
    support_ctx_t cx;
    int rc = support_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    support_valid_id(call, "id", r->id);
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    support_ticket_t *t;
    if ((rc = support_load_ticket_or_status(&cx, r->id, true, &t)) < 0)
        return rc;
    *resp = &t->base;
    return 0;
}

static const db_stmt_t list_by_created = {"support_list_created", SUPPORT_LIST_BY_CREATED, 16};
static const db_stmt_t list_by_priority = {"support_list_priority", SUPPORT_LIST_BY_PRIORITY, 16};

int support_list_tickets(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Support__V1__ListTicketsRequest *r = (const void *)req;
    PGresult *res = NULL;
    support_ctx_t cx;
    int rc = support_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    int size = pagetoken_page_size(call, r->page_size, LIST_DEFAULT, LIST_MAX);
    const char *status = NULL, *priority = NULL, *category = NULL;
    if (r->status && !(status = support_status_name(r->status)))
        rpc_violation(call, "status", "unknown status %d", (int)r->status);
    if (r->priority && !(priority = support_priority_name(r->priority)))
        rpc_violation(call, "priority", "unknown priority %d", (int)r->priority);
    if (r->category && !(category = support_category_name(r->category)))
        rpc_violation(call, "category", "unknown category %d", (int)r->category);
    if (r->assignee_id < 0)
        rpc_violation(call, "assignee_id", "must not be negative");
    if (r->assignee_id && r->unassigned)
        rpc_violation(call, "unassigned", "cannot be combined with assignee_id");
    if (*r->iccid)
        support_valid_iccids(call, "iccid", (char **)&r->iccid, 1);
    support_valid_text(call, "query", r->query, 0, QUERY_MAX);
    if (r->order_by < 0 ||
        r->order_by > ONCEIOT__SUPPORT__V1__TICKET_ORDER_BY__TICKET_ORDER_BY_PRIORITY)
        rpc_violation(call, "order_by", "unknown order %d", (int)r->order_by);
    const char *due_within = NULL;
    if (r->response_due_within) {
        const Google__Protobuf__Duration *d = r->response_due_within;
        if (d->seconds < 0 || d->nanos < 0 || d->seconds > DUE_WITHIN_MAX_S ||
            (d->seconds == 0 && d->nanos == 0))
            rpc_violation(call, "response_due_within", "must be more than 0 and at most 90 days");
        else
            due_within = support_i64(&cx, d->seconds + (d->nanos > 0));
        if (r->response_overdue)
            rpc_violation(call, "response_overdue", "cannot be combined with response_due_within");
    }
    if (r->organization_id < 0)
        rpc_violation(call, "organization_id", "must not be negative");
    const char *after = pbtime_us_text(cx.a, r->created_after);
    const char *before = pbtime_us_text(cx.a, r->created_before);
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    const char *org = cx.org;
    if (cx.staff && r->organization_id)
        org = support_i64(&cx, r->organization_id);
    const char *query = support_nz(r->query);
    const db_stmt_t *stmt =
        r->order_by == ONCEIOT__SUPPORT__V1__TICKET_ORDER_BY__TICKET_ORDER_BY_PRIORITY
            ? &list_by_priority
            : &list_by_created;
    const char *params[16] = {
        org,
        status,
        priority,
        category,
        r->assignee_id ? support_i64(&cx, r->assignee_id) : NULL,
        r->unassigned ? "true" : NULL,
        support_nz(r->iccid),
        after,
        before,
        cx.staff ? NULL : query,
        cx.staff ? query : NULL,
        r->response_overdue ? "true" : NULL,
        due_within,
        support_i64(&cx, size + 1),
        NULL,
        NULL,
    };
    /* The caller's staff flag is part of the filters: a page token made by
     * staff is not a customer's. */
    const char *hash_parts[] = {stmt->name, cx.staff ? "staff" : "customer",
                                params[0],  params[1],
                                params[2],  params[3],
                                params[4],  params[5],
                                params[6],  params[7],
                                params[8],  query,
                                params[11], params[12]};
    uint64_t hash = pagetoken_hash(hash_parts, sizeof(hash_parts) / sizeof(hash_parts[0]));
    if (*r->page_token &&
        (rc = pagetoken_decode(call, r->page_token, hash, &params[14], &params[15])) < 0)
        return rc;
    db_conn_t *conn = svc_db_or_status(call);
    if (!conn)
        return ERR_UNAVAILABLE;
    if ((rc = db_exec_custom(conn, stmt, params, &res)) < 0)
        return svc_db_fail(call, conn, rc);
    Onceiot__Support__V1__ListTicketsResponse *out = arena_alloc(cx.a, sizeof(*out));
    onceiot__support__v1__list_tickets_response__init(out);
    int n = rc > size ? size : rc;
    if (rc > size)
        out->next_page_token = (char *)pagetoken_encode(cx.a, hash, db_get(res, n - 1, "sort_key"),
                                                        db_get(res, n - 1, "id"));
    out->tickets = arena_alloc(cx.a, (size_t)(n ? n : 1) * sizeof(*out->tickets));
    for (int i = 0; i < n; i++)
        out->tickets[out->n_tickets++] = support_ticket_from_row(cx.a, res, i);
    PQclear(res);
    *resp = &out->base;
    return 0;
}

/* The fields UpdateTicket may change. */
enum {
    F_SUBJECT = 1 << 0,
    F_DESCRIPTION = 1 << 1,
    F_PRIORITY = 1 << 2,
    F_CATEGORY = 1 << 3,
    F_ICCIDS = 1 << 4,
    F_EXTERNAL_ID = 1 << 5,
};

static const struct {
    const char *path;
    int flag;
} update_fields[] = {
    {"subject", F_SUBJECT},   {"description", F_DESCRIPTION}, {"priority", F_PRIORITY},
    {"category", F_CATEGORY}, {"iccids", F_ICCIDS},           {"external_id", F_EXTERNAL_ID},
};

static const db_stmt_t update_ticket = {
    "support_update_ticket",
    "UPDATE tickets SET subject = coalesce($2, subject), "
    "description = coalesce($3, description), priority = coalesce($4, priority), "
    "category = coalesce($5, category), iccids = coalesce($6::text[], iccids), "
    "external_id = CASE WHEN $7::bool THEN $8 ELSE external_id END WHERE id = $1",
    8};

int support_update_ticket(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Support__V1__UpdateTicketRequest *r = (const void *)req;
    support_ctx_t cx;
    int rc = support_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    support_valid_id(call, "id", r->id);
    int mask = 0;
    const Google__Protobuf__FieldMask *m = r->update_mask;
    if (!m || m->n_paths == 0)
        rpc_violation(call, "update_mask", "must name at least one field");
    for (size_t i = 0; m && i < m->n_paths; i++) {
        int flag = 0;
        for (size_t k = 0; k < sizeof(update_fields) / sizeof(update_fields[0]); k++)
            if (strcmp(m->paths[i], update_fields[k].path) == 0)
                flag = update_fields[k].flag;
        if (!flag)
            rpc_violation(call, "update_mask",
                          "unknown or read-only field \"%s\" (subject, description, priority, "
                          "category, iccids, external_id)",
                          m->paths[i]);
        mask |= flag;
    }
    Onceiot__Support__V1__Ticket empty = ONCEIOT__SUPPORT__V1__TICKET__INIT;
    const support_ticket_t *t = r->ticket ? r->ticket : &empty;
    const char *priority = NULL, *category = NULL;
    if (mask & F_SUBJECT)
        support_valid_subject(call, "ticket.subject", t->subject);
    if (mask & F_DESCRIPTION)
        support_valid_text(call, "ticket.description", t->description, 0, DESCRIPTION_MAX);
    if ((mask & F_PRIORITY) && !(priority = support_priority_name(t->priority)))
        rpc_violation(call, "ticket.priority", "unknown priority %d", (int)t->priority);
    if ((mask & F_CATEGORY) && !(category = support_category_name(t->category)))
        rpc_violation(call, "ticket.category", "unknown category %d", (int)t->category);
    if (mask & F_ICCIDS)
        support_valid_iccids(call, "ticket.iccids", t->iccids, t->n_iccids);
    if (mask & F_EXTERNAL_ID)
        support_valid_external_id(call, "ticket.external_id", t->external_id);
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    if ((mask & F_EXTERNAL_ID) && !cx.staff)
        return rpc_fail(call, ERR_PERMISSION_DENIED, "only staff set external_id");
    /* The ICCIDs are checked against the ticket's organization before the
     * transaction: no row lock is held across a call to sims. */
    support_ticket_t *cur;
    if ((rc = support_load_ticket_or_status(&cx, r->id, false, &cur)) < 0)
        return rc;
    if ((mask & F_ICCIDS) &&
        (rc = support_check_iccids_or_status(&cx, "ticket.iccids", t->iccids, t->n_iccids,
                                             cur->organization_id)) < 0)
        return rc;
    support_locked_t lk;
    if ((rc = support_begin_lock_or_status(&cx, r->id, &lk)) < 0)
        return rc;
    if (strcmp(lk.status, "closed") == 0)
        return rpc_fail(call, ERR_FAILED_PRECONDITION, "ticket %lld is closed", (long long)r->id);
    const char *params[] = {
        lk.id,
        mask & F_SUBJECT ? t->subject : NULL,
        mask & F_DESCRIPTION ? t->description : NULL,
        priority,
        category,
        mask & F_ICCIDS ? db_text_array(cx.a, (const char *const *)t->iccids, t->n_iccids) : NULL,
        mask & F_EXTERNAL_ID ? "true" : "false",
        support_nz(t->external_id),
    };
    db_conn_t *conn = svc_db_or_status(call);
    if (!conn)
        return ERR_UNAVAILABLE;
    rc = db_exec(conn, &update_ticket, params, NULL);
    if (rc == ERR_ALREADY_EXISTS)
        return rpc_fail(call, ERR_ALREADY_EXISTS, "another ticket has external_id %s",
                        t->external_id);
    if (rc < 0)
        return svc_db_fail(call, conn, rc);
    return support_commit_answer(&cx, r->id, resp);
}
