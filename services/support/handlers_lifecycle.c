/* The ticket lifecycle (StartTicket, ResolveTicket, ReopenTicket,
 * CloseTicket) and AssignTicket. Each locks the ticket, checks the change
 * against its current state, applies it and records it in the ticket's
 * history, in one transaction. The state machine is drawn in
 * proto/support/v1/support.proto. */
#include "support.h"

#include <string.h>

#define RESOLUTION_MAX 10000

typedef struct support_transition {
    const char *to;      /* new status */
    const char *from[3]; /* statuses it may be applied to; NULL-terminated */
    const char *verb;    /* for messages: "started" */
} support_transition_t;

static const support_transition_t start = {"in_progress", {"open"}, "started"};
static const support_transition_t resolve = {"resolved", {"open", "in_progress"}, "resolved"};
static const support_transition_t reopen = {"open", {"resolved"}, "reopened"};
static const support_transition_t close_ = {"closed", {"resolved"}, "closed"};

/* Sets the status and the times that go with it: started_at, resolved_at
 * and the resolution (cleared again by a reopen), closed_at; a resolution
 * is an answer, so it also sets first_response_at if none came before. */
static const db_stmt_t set_status = {
    "support_set_status",
    "UPDATE tickets SET status = $2, "
    "started_at = CASE WHEN $2 = 'in_progress' THEN now() ELSE started_at END, "
    "resolved_at = CASE WHEN $2 = 'resolved' THEN now() WHEN $2 = 'open' THEN NULL "
    "ELSE resolved_at END, "
    "resolution = CASE WHEN $2 = 'resolved' THEN $3 WHEN $2 = 'open' THEN NULL "
    "ELSE resolution END, "
    "closed_at = CASE WHEN $2 = 'closed' THEN now() ELSE closed_at END, "
    "reopen_count = reopen_count + CASE WHEN $2 = 'open' THEN 1 ELSE 0 END, "
    "first_response_at = CASE WHEN $2 = 'resolved' THEN coalesce(first_response_at, now()) "
    "ELSE first_response_at END WHERE id = $1",
    3};

static int support__transition(rpc_call_t *call, int64_t id, const char *resolution,
                               ProtobufCMessage **resp, const support_transition_t *tr)
{
    support_ctx_t cx;
    int rc = support_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    support_valid_id(call, "id", id);
    if (tr == &resolve)
        support_valid_text(call, "resolution", resolution, 1, RESOLUTION_MAX);
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    support_locked_t lk;
    if ((rc = support_begin_lock_or_status(&cx, id, &lk)) < 0)
        return rc;
    bool allowed = false;
    for (int i = 0; tr->from[i]; i++)
        allowed |= strcmp(tr->from[i], lk.status) == 0;
    if (!allowed)
        return rpc_fail(call, ERR_FAILED_PRECONDITION, "ticket %lld is %s and cannot be %s",
                        (long long)id, lk.status, tr->verb);
    if (tr == &reopen && !lk.reopenable)
        return rpc_fail(call, ERR_FAILED_PRECONDITION,
                        "ticket %lld was resolved more than %ld seconds ago and cannot be "
                        "reopened; open a new ticket",
                        (long long)id, cx.st->reopen_window_s);
    const char *params[] = {lk.id, tr->to, tr == &resolve ? resolution : NULL};
    if ((rc = support_exec(&cx, &set_status, params, NULL)) < 0 ||
        (rc = support_record_history(&cx, lk.id, "status", lk.status, tr->to, NULL, NULL)) < 0)
        return rc;
    return support_commit_answer(&cx, id, resp);
}

int support_start_ticket(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Support__V1__TicketActionRequest *r = (const void *)req;
    return support__transition(call, r->id, NULL, resp, &start);
}

int support_resolve_ticket(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Support__V1__ResolveTicketRequest *r = (const void *)req;
    return support__transition(call, r->id, r->resolution, resp, &resolve);
}

int support_reopen_ticket(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Support__V1__TicketActionRequest *r = (const void *)req;
    return support__transition(call, r->id, NULL, resp, &reopen);
}

int support_close_ticket(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Support__V1__TicketActionRequest *r = (const void *)req;
    return support__transition(call, r->id, NULL, resp, &close_);
}

static const db_stmt_t set_assignee = {"support_set_assignee",
                                       "UPDATE tickets SET assignee_id = $2 WHERE id = $1", 2};

int support_assign_ticket(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Support__V1__AssignTicketRequest *r = (const void *)req;
    support_ctx_t cx;
    int rc = support_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    support_valid_id(call, "id", r->id);
    if (r->assignee_id < 0)
        rpc_violation(call, "assignee_id", "must not be negative");
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    /* The gateway lets only superusers through; a service principal (also a
     * superuser) must name a staff user all the same. */
    if (!cx.staff)
        return rpc_fail(call, ERR_PERMISSION_DENIED, "only staff assign tickets");
    /* Asked before the transaction: no row lock is held across the call. */
    if (r->assignee_id && (rc = support_check_staff_or_status(&cx, r->assignee_id)) < 0)
        return rc;
    support_locked_t lk;
    if ((rc = support_begin_lock_or_status(&cx, r->id, &lk)) < 0)
        return rc;
    if (strcmp(lk.status, "closed") == 0)
        return rpc_fail(call, ERR_FAILED_PRECONDITION, "ticket %lld is closed", (long long)r->id);
    if (lk.assignee_id != r->assignee_id) {
        const char *to = r->assignee_id ? support_i64(&cx, r->assignee_id) : NULL;
        const char *from = lk.assignee_id ? support_i64(&cx, lk.assignee_id) : NULL;
        const char *params[] = {lk.id, to};
        if ((rc = support_exec(&cx, &set_assignee, params, NULL)) < 0 ||
            (rc = support_record_history(&cx, lk.id, "assigned", NULL, NULL, from, to)) < 0)
            return rc;
    }
    return support_commit_answer(&cx, r->id, resp);
}
