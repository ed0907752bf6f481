/* The support service's ticket lifecycle, assignment, comments and SLA
 * through the gateway: every transition valid and invalid with its history,
 * the reopen window, assignment to staff only (checked with identity),
 * internal notes invisible to customers in every read path (comments, get,
 * list and search), first_response_at, and the SLA filters with times set
 * in the test database. */
#include "support_harness.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#define T_DESC   (&onceiot__support__v1__ticket__descriptor)
#define L_DESC   (&onceiot__support__v1__list_tickets_response__descriptor)
#define C_DESC   (&onceiot__support__v1__comment__descriptor)
#define LC_DESC  (&onceiot__support__v1__list_comments_response__descriptor)
#define P(x)     ONCEIOT__SUPPORT__V1__TICKET_PRIORITY__TICKET_PRIORITY_##x
#define S(x)     ONCEIOT__SUPPORT__V1__TICKET_STATUS__TICKET_STATUS_##x
#define H(x)     ONCEIOT__SUPPORT__V1__HISTORY_KIND__HISTORY_KIND_##x
#define PUBLIC   ONCEIOT__SUPPORT__V1__COMMENT_VISIBILITY__COMMENT_VISIBILITY_PUBLIC
#define INTERNAL ONCEIOT__SUPPORT__V1__COMMENT_VISIBILITY__COMMENT_VISIBILITY_INTERNAL

TestSuite(support_lifecycle, .init = supp_h_start, .fini = supp_h_stop, .timeout = 240);

/* Moves a time of ticket id to ago ("2 hours") before now, in the test
 * database. */
static void set_ago(const char *column, int64_t id, const char *ago)
{
    char sql[300];
    snprintf(sql, sizeof(sql),
             "UPDATE support.tickets SET %s = now() - interval '%s' WHERE id = %lld", column, ago,
             (long long)id);
    supp_h_sql(sql);
}

static supp_ticket_t *act_ok(const char *auth, const char *method, int64_t id)
{
    supp_ticket_t *t = NULL;
    rpc_status_t s;
    int rc = strcmp(method, "ResolveTicket") == 0
                 ? supp_h_resolve(auth, id, "replaced the APN profile", &t, &s)
                 : supp_h_act(auth, method, id, &t, &s);
    cr_assert_eq(rc, 0, "%s: %s %s", method, err_grpc_name(s.code), s.message);
    return t;
}

static void act_refused(const char *auth, const char *method, int64_t id, grpc_status_code want)
{
    rpc_status_t s;
    void *t = NULL;
    int rc = strcmp(method, "ResolveTicket") == 0
                 ? supp_h_resolve(auth, id, "done", (supp_ticket_t **)&t, &s)
                 : supp_h_act(auth, method, id, (supp_ticket_t **)&t, &s);
    cr_assert_lt(rc, 0, "%s was allowed", method);
    cr_assert_eq(s.code, want, "%s: %s %s", method, err_grpc_name(s.code), s.message);
}

static supp_ticket_t *comment(const char *auth, int64_t id, const char *body, int visibility,
                              grpc_status_code want)
{
    Onceiot__Support__V1__AddCommentRequest req = ONCEIOT__SUPPORT__V1__ADD_COMMENT_REQUEST__INIT;
    req.ticket_id = id;
    req.body = (char *)body;
    req.visibility = visibility;
    void *c = NULL;
    rpc_status_t s;
    int rc = supp_h_call(auth, "AddComment", &req.base, C_DESC, &c, &s);
    cr_assert_eq(rc < 0 ? s.code : GRPC_STATUS_OK, want, "AddComment: %s %s", err_grpc_name(s.code),
                 s.message);
    return rc < 0 ? NULL : supp_h_get(supp_h.staff, id);
}

Test(support_lifecycle, a_ticket_goes_through_every_valid_transition_with_history)
{
    supp_ticket_t *t = supp_h_create(supp_h.cust_a, "lifecycle", 0);
    supp_ticket_t *u = act_ok(supp_h.staff, "StartTicket", t->id);
    cr_assert_eq(u->status, S(IN_PROGRESS));
    cr_assert_not_null(u->started_at);
    u = act_ok(supp_h.staff, "ResolveTicket", t->id);
    cr_assert_eq(u->status, S(RESOLVED));
    cr_assert_str_eq(u->resolution, "replaced the APN profile");
    cr_assert_not_null(u->resolved_at);
    /* The resolution is the first answer. */
    cr_assert_not_null(u->first_response_at);
    u = act_ok(supp_h.cust_a, "ReopenTicket", t->id);
    cr_assert_eq(u->status, S(OPEN));
    cr_assert_str_eq(u->resolution, "");
    cr_assert_null(u->resolved_at);
    cr_assert_eq(u->reopen_count, 1);
    /* Open may be resolved directly. */
    u = act_ok(supp_h.root, "ResolveTicket", t->id);
    cr_assert_eq(u->status, S(RESOLVED));
    u = act_ok(supp_h.cust_a, "CloseTicket", t->id);
    cr_assert_eq(u->status, S(CLOSED));
    cr_assert_not_null(u->closed_at);

    const struct {
        Onceiot__Support__V1__TicketStatus from, to;
        int64_t actor;
    } want[] = {
        {S(UNSPECIFIED), S(OPEN), supp_h.cust_a_id},    {S(OPEN), S(IN_PROGRESS), supp_h.staff_id},
        {S(IN_PROGRESS), S(RESOLVED), supp_h.staff_id}, {S(RESOLVED), S(OPEN), supp_h.cust_a_id},
        {S(OPEN), S(RESOLVED), supp_h.root_id},         {S(RESOLVED), S(CLOSED), supp_h.cust_a_id},
    };
    cr_assert_eq(u->n_history, 6);
    for (size_t i = 0; i < 6; i++) {
        cr_assert_eq(u->history[i]->kind, i ? H(STATUS) : H(CREATED));
        cr_assert_eq(u->history[i]->from_status, want[i].from, "entry %zu", i);
        cr_assert_eq(u->history[i]->to_status, want[i].to, "entry %zu", i);
        cr_assert_eq(u->history[i]->actor_user_id, want[i].actor, "entry %zu", i);
        cr_assert_not_null(u->history[i]->at);
        if (i)
            cr_assert_geq(u->history[i]->at->seconds, u->history[i - 1]->at->seconds);
    }
}

Test(support_lifecycle, invalid_transitions_are_failed_precondition_and_change_nothing)
{
    supp_ticket_t *t = supp_h_create(supp_h.cust_a, "invalid transitions", 0);
    /* open */
    act_refused(supp_h.staff, "ReopenTicket", t->id, GRPC_STATUS_FAILED_PRECONDITION);
    act_refused(supp_h.staff, "CloseTicket", t->id, GRPC_STATUS_FAILED_PRECONDITION);
    /* in progress */
    act_ok(supp_h.staff, "StartTicket", t->id);
    act_refused(supp_h.staff, "StartTicket", t->id, GRPC_STATUS_FAILED_PRECONDITION);
    act_refused(supp_h.staff, "ReopenTicket", t->id, GRPC_STATUS_FAILED_PRECONDITION);
    act_refused(supp_h.cust_a, "CloseTicket", t->id, GRPC_STATUS_FAILED_PRECONDITION);
    /* resolving needs a resolution */
    rpc_status_t s;
    supp_ticket_t *out = NULL;
    cr_assert_lt(supp_h_resolve(supp_h.staff, t->id, "", &out, &s), 0);
    cr_assert_eq(s.code, GRPC_STATUS_INVALID_ARGUMENT);
    cr_assert(supp_h_violation(&s, "resolution"));
    /* resolved */
    act_ok(supp_h.staff, "ResolveTicket", t->id);
    act_refused(supp_h.staff, "StartTicket", t->id, GRPC_STATUS_FAILED_PRECONDITION);
    act_refused(supp_h.staff, "ResolveTicket", t->id, GRPC_STATUS_FAILED_PRECONDITION);
    /* closed is final */
    act_ok(supp_h.staff, "CloseTicket", t->id);
    const char *all[] = {"StartTicket", "ResolveTicket", "ReopenTicket", "CloseTicket"};
    for (size_t i = 0; i < 4; i++)
        act_refused(supp_h.staff, all[i], t->id, GRPC_STATUS_FAILED_PRECONDITION);
    comment(supp_h.cust_a, t->id, "still broken", PUBLIC, GRPC_STATUS_FAILED_PRECONDITION);
    Onceiot__Support__V1__AssignTicketRequest ar =
        ONCEIOT__SUPPORT__V1__ASSIGN_TICKET_REQUEST__INIT;
    ar.id = t->id;
    ar.assignee_id = supp_h.staff_id;
    cr_assert_lt(supp_h_call(supp_h.staff, "AssignTicket", &ar.base, T_DESC, &out, &s), 0);
    cr_assert_eq(s.code, GRPC_STATUS_FAILED_PRECONDITION);
    /* The message names the status. */
    cr_assert_lt(supp_h_act(supp_h.staff, "StartTicket", t->id, &out, &s), 0);
    cr_assert(strstr(s.message, "closed"), "%s", s.message);
    supp_ticket_t *now = supp_h_get(supp_h.staff, t->id);
    cr_assert_eq(now->status, S(CLOSED));
    cr_assert_eq(now->n_history, 4, "refused transitions left history: %zu", now->n_history);
    /* Customers may not start or resolve, unknown ids are NOT_FOUND. */
    supp_ticket_t *t2 = supp_h_create(supp_h.cust_a, "customer actions", 0);
    act_refused(supp_h.cust_a, "StartTicket", t2->id, GRPC_STATUS_PERMISSION_DENIED);
    act_refused(supp_h.cust_a, "ResolveTicket", t2->id, GRPC_STATUS_PERMISSION_DENIED);
    act_refused(supp_h.staff, "StartTicket", 999999, GRPC_STATUS_NOT_FOUND);
    act_refused(supp_h.staff, "StartTicket", 0, GRPC_STATUS_INVALID_ARGUMENT);
}

Test(support_lifecycle, a_resolved_ticket_reopens_only_within_the_window)
{
    supp_ticket_t *t = supp_h_create(supp_h.cust_a, "reopen window", 0);
    act_ok(supp_h.staff, "ResolveTicket", t->id);
    /* Resolved 6 days ago: inside the default 7 days. */
    set_ago("resolved_at", t->id, "6 days");
    act_ok(supp_h.cust_a, "ReopenTicket", t->id);
    act_ok(supp_h.staff, "ResolveTicket", t->id);
    set_ago("resolved_at", t->id, "8 days");
    rpc_status_t s;
    supp_ticket_t *out = NULL;
    cr_assert_lt(supp_h_act(supp_h.cust_a, "ReopenTicket", t->id, &out, &s), 0);
    cr_assert_eq(s.code, GRPC_STATUS_FAILED_PRECONDITION);
    cr_assert(strstr(s.message, "open a new ticket"), "%s", s.message);
    /* It can still be closed. */
    cr_assert_eq(act_ok(supp_h.cust_a, "CloseTicket", t->id)->status, S(CLOSED));
}

static int assign(const char *auth, int64_t id, int64_t to, supp_ticket_t **out, rpc_status_t *s)
{
    Onceiot__Support__V1__AssignTicketRequest ar =
        ONCEIOT__SUPPORT__V1__ASSIGN_TICKET_REQUEST__INIT;
    ar.id = id;
    ar.assignee_id = to;
    return supp_h_call(auth, "AssignTicket", &ar.base, T_DESC, out, s);
}

Test(support_lifecycle, tickets_are_assigned_to_active_staff_only_and_reassigned_with_history)
{
    supp_ticket_t *t = supp_h_create(supp_h.cust_a, "assign me", 0);
    supp_ticket_t *u = NULL;
    rpc_status_t s;
    cr_assert_eq(assign(supp_h.root, t->id, supp_h.staff_id, &u, &s), 0, "%s", s.message);
    cr_assert_eq(u->assignee_id, supp_h.staff_id);
    cr_assert_eq(assign(supp_h.staff, t->id, supp_h.root_id, &u, &s), 0, "%s", s.message);
    cr_assert_eq(u->assignee_id, supp_h.root_id);
    /* The same assignee again records nothing. */
    cr_assert_eq(assign(supp_h.staff, t->id, supp_h.root_id, &u, &s), 0, "%s", s.message);
    /* Not staff, deactivated staff, nobody: refused. */
    const int64_t bad[] = {supp_h.cust_a_id, supp_h.inactive_staff_id, 987654};
    for (size_t i = 0; i < 3; i++) {
        void *out = NULL;
        cr_assert_lt(assign(supp_h.staff, t->id, bad[i], (supp_ticket_t **)&out, &s), 0,
                     "assigned to %lld", (long long)bad[i]);
        cr_assert_eq(s.code, GRPC_STATUS_FAILED_PRECONDITION, "%lld: %s %s", (long long)bad[i],
                     err_grpc_name(s.code), s.message);
    }
    /* Customers may not assign (the gateway refuses: staff only). */
    void *out = NULL;
    cr_assert_lt(assign(supp_h.cust_a, t->id, supp_h.staff_id, (supp_ticket_t **)&out, &s), 0);
    cr_assert_eq(s.code, GRPC_STATUS_PERMISSION_DENIED);
    /* Bad ids name their field; an unknown ticket is NOT_FOUND. */
    cr_assert_lt(assign(supp_h.staff, 0, -1, (supp_ticket_t **)&out, &s), 0);
    cr_assert_eq(s.code, GRPC_STATUS_INVALID_ARGUMENT);
    cr_assert(supp_h_violation(&s, "id") && supp_h_violation(&s, "assignee_id"), "%s", s.message);
    cr_assert_lt(assign(supp_h.staff, 999999, supp_h.staff_id, (supp_ticket_t **)&out, &s), 0);
    cr_assert_eq(s.code, GRPC_STATUS_NOT_FOUND);
    /* The assignee filter and the unassigned one. */
    supp_ticket_t *t2 = supp_h_create(supp_h.cust_a, "nobody's", 0);
    Onceiot__Support__V1__ListTicketsRequest lr = ONCEIOT__SUPPORT__V1__LIST_TICKETS_REQUEST__INIT;
    lr.assignee_id = supp_h.root_id;
    Onceiot__Support__V1__ListTicketsResponse *r = NULL;
    cr_assert_eq(supp_h_call(supp_h.staff, "ListTickets", &lr.base, L_DESC, &r, &s), 0);
    cr_assert_eq(r->n_tickets, 1);
    cr_assert_eq(r->tickets[0]->id, t->id);
    lr.assignee_id = 0;
    lr.unassigned = true;
    cr_assert_eq(supp_h_call(supp_h.cust_a, "ListTickets", &lr.base, L_DESC, &r, &s), 0);
    cr_assert_eq(r->n_tickets, 1);
    cr_assert_eq(r->tickets[0]->id, t2->id);
    /* Unassign. */
    cr_assert_eq(assign(supp_h.staff, t->id, 0, &u, &s), 0, "%s", s.message);
    cr_assert_eq(u->assignee_id, 0);
    /* created, staff_id, root_id, none */
    cr_assert_eq(u->n_history, 4);
    const int64_t from[] = {0, 0, supp_h.staff_id, supp_h.root_id};
    const int64_t to[] = {0, supp_h.staff_id, supp_h.root_id, 0};
    for (size_t i = 1; i < 4; i++) {
        cr_assert_eq(u->history[i]->kind, H(ASSIGNED));
        cr_assert_eq(u->history[i]->from_assignee_id, from[i], "entry %zu", i);
        cr_assert_eq(u->history[i]->to_assignee_id, to[i], "entry %zu", i);
    }
    cr_assert_eq(u->history[3]->actor_user_id, supp_h.staff_id);
}

static Onceiot__Support__V1__ListCommentsResponse *comments(const char *auth, int64_t id)
{
    Onceiot__Support__V1__ListCommentsRequest req =
        ONCEIOT__SUPPORT__V1__LIST_COMMENTS_REQUEST__INIT;
    req.ticket_id = id;
    Onceiot__Support__V1__ListCommentsResponse *r = NULL;
    rpc_status_t s;
    cr_assert_eq(supp_h_call(auth, "ListComments", &req.base, LC_DESC, &r, &s), 0, "%s", s.message);
    return r;
}

static size_t search(const char *auth, const char *query)
{
    Onceiot__Support__V1__ListTicketsRequest lr = ONCEIOT__SUPPORT__V1__LIST_TICKETS_REQUEST__INIT;
    lr.query = (char *)query;
    Onceiot__Support__V1__ListTicketsResponse *r = NULL;
    rpc_status_t s;
    cr_assert_eq(supp_h_call(auth, "ListTickets", &lr.base, L_DESC, &r, &s), 0, "%s", s.message);
    return r->n_tickets;
}

Test(support_lifecycle, internal_notes_never_reach_customers_in_any_read_path)
{
    supp_ticket_t *t = supp_h_create(supp_h.cust_a, "gateway timeouts", 0);
    comment(supp_h.cust_a, t->id, "It happens every night around marmalade o'clock.", PUBLIC,
            GRPC_STATUS_OK);
    comment(supp_h.staff, t->id, "Customer is on the zebracorn legacy APN; escalate.", INTERNAL,
            GRPC_STATUS_OK);
    comment(supp_h.staff, t->id, "We are looking into it.", PUBLIC, GRPC_STATUS_OK);
    /* Customers cannot write internal notes. */
    comment(supp_h.cust_a, t->id, "sneaky", INTERNAL, GRPC_STATUS_PERMISSION_DENIED);
    comment(supp_h.cust_a, t->id, "", PUBLIC, GRPC_STATUS_INVALID_ARGUMENT);
    comment(supp_h.cust_a, t->id, "x", 7, GRPC_STATUS_INVALID_ARGUMENT);

    /* ListComments: staff see three, customers (and readonly) two. */
    Onceiot__Support__V1__ListCommentsResponse *r = comments(supp_h.staff, t->id);
    cr_assert_eq(r->n_comments, 3);
    cr_assert_eq(r->comments[1]->visibility, INTERNAL);
    cr_assert(r->comments[1]->author_is_staff);
    const char *readers[] = {supp_h.cust_a, supp_h.reader_a};
    for (size_t k = 0; k < 2; k++) {
        r = comments(readers[k], t->id);
        cr_assert_eq(r->n_comments, 2);
        for (size_t i = 0; i < r->n_comments; i++) {
            cr_assert_eq(r->comments[i]->visibility, PUBLIC);
            cr_assert_null(strstr(r->comments[i]->body, "zebracorn"));
        }
        /* Search: the note's words match for staff only. */
        cr_assert_eq(search(readers[k], "zebracorn"), 0, "a customer's search saw a note");
        cr_assert_eq(search(readers[k], "legacy APN escalate"), 0);
        cr_assert_eq(search(readers[k], "marmalade"), 1, "public comments are searchable");
        cr_assert_eq(search(readers[k], "looking"), 1);
        /* Get and list carry no comment text at all. */
        supp_ticket_t *g = supp_h_get(readers[k], t->id);
        cr_assert_null(strstr(g->description, "zebracorn"));
    }
    cr_assert_eq(search(supp_h.staff, "zebracorn"), 1);
    cr_assert_eq(search(supp_h.staff, "marmalade"), 1);
    /* Still true after the subject changes (the documents are rebuilt). */
    supp_h_sql("UPDATE support.tickets SET subject = 'gateway timeouts at night'");
    cr_assert_eq(search(supp_h.cust_a, "zebracorn"), 0);
    cr_assert_eq(search(supp_h.cust_a, "marmalade"), 1);
    cr_assert_eq(search(supp_h.staff, "zebracorn"), 1);

    /* Pages of comments. */
    Onceiot__Support__V1__ListCommentsRequest req =
        ONCEIOT__SUPPORT__V1__LIST_COMMENTS_REQUEST__INIT;
    req.ticket_id = t->id;
    req.page_size = 1;
    rpc_status_t s;
    int seen = 0;
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(supp_h_call(supp_h.cust_a, "ListComments", &req.base, LC_DESC, &r, &s), 0);
        seen += (int)r->n_comments;
        if (!*r->next_page_token)
            break;
        req.page_token = r->next_page_token;
    }
    cr_assert_eq(seen, 2);
}

Test(support_lifecycle, the_first_public_staff_reply_sets_first_response_at)
{
    supp_ticket_t *t = supp_h_create(supp_h.cust_a, "first response", P(CRITICAL));
    supp_ticket_t *u = comment(supp_h.cust_a, t->id, "any news?", PUBLIC, GRPC_STATUS_OK);
    cr_assert_null(u->first_response_at);
    u = comment(supp_h.staff, t->id, "note to self", INTERNAL, GRPC_STATUS_OK);
    cr_assert_null(u->first_response_at, "an internal note is no response");
    u = comment(supp_h.staff, t->id, "On it.", PUBLIC, GRPC_STATUS_OK);
    cr_assert_not_null(u->first_response_at);
    int64_t first = u->first_response_at->seconds * 1000000000LL + u->first_response_at->nanos;
    cr_assert_not(u->response_overdue);
    u = comment(supp_h.root, t->id, "Fixed soon.", PUBLIC, GRPC_STATUS_OK);
    cr_assert_eq(u->first_response_at->seconds * 1000000000LL + u->first_response_at->nanos, first);
}

static Onceiot__Support__V1__ListTicketsResponse *sla(bool overdue, int64_t within_s)
{
    Onceiot__Support__V1__ListTicketsRequest lr = ONCEIOT__SUPPORT__V1__LIST_TICKETS_REQUEST__INIT;
    Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
    d.seconds = within_s;
    lr.response_overdue = overdue;
    lr.response_due_within = within_s ? &d : NULL;
    lr.order_by = ONCEIOT__SUPPORT__V1__TICKET_ORDER_BY__TICKET_ORDER_BY_PRIORITY;
    Onceiot__Support__V1__ListTicketsResponse *r = NULL;
    rpc_status_t s;
    cr_assert_eq(supp_h_call(supp_h.staff, "ListTickets", &lr.base, L_DESC, &r, &s), 0, "%s",
                 s.message);
    return r;
}

Test(support_lifecycle, sla_filters_find_overdue_and_soon_due_tickets)
{
    /* Times are set in the database: created_at moves, and the due time
     * follows it by the schema's trigger. */
    supp_ticket_t *late = supp_h_create(supp_h.cust_a, "critical, 2 h old", P(CRITICAL));
    set_ago("created_at", late->id, "2 hours");
    supp_ticket_t *soon = supp_h_create(supp_h.cust_a, "high, 3 h old", P(HIGH));
    set_ago("created_at", soon->id, "3 hours");
    supp_ticket_t *answered =
        supp_h_create(supp_h.cust_b, "critical, 2 h old, answered", P(CRITICAL));
    set_ago("created_at", answered->id, "2 hours");
    comment(supp_h.staff, answered->id, "Answered late.", PUBLIC, GRPC_STATUS_OK);
    supp_ticket_t *resolved =
        supp_h_create(supp_h.cust_b, "critical, 2 h old, resolved", P(CRITICAL));
    set_ago("created_at", resolved->id, "2 hours");
    act_ok(supp_h.staff, "ResolveTicket", resolved->id);
    supp_ticket_t *fresh = supp_h_create(supp_h.cust_a, "low, new", P(LOW));

    Onceiot__Support__V1__ListTicketsResponse *r = sla(true, 0);
    cr_assert_eq(r->n_tickets, 1, "overdue: %zu", r->n_tickets);
    cr_assert_eq(r->tickets[0]->id, late->id);
    cr_assert(r->tickets[0]->response_overdue);
    /* Due within 2 hours: the high one (due in 1 h), not the overdue one. */
    r = sla(false, 7200);
    cr_assert_eq(r->n_tickets, 1, "due within 2 h: %zu", r->n_tickets);
    cr_assert_eq(r->tickets[0]->id, soon->id);
    cr_assert_not(r->tickets[0]->response_overdue);
    /* Within 4 days: the high one and the low one. */
    r = sla(false, 4 * 86400);
    cr_assert_eq(r->n_tickets, 2);
    cr_assert_eq(r->tickets[0]->id, soon->id);
    cr_assert_eq(r->tickets[1]->id, fresh->id);
    /* Late answers stay marked as overdue on the ticket. */
    cr_assert(supp_h_get(supp_h.staff, answered->id)->response_overdue);
    cr_assert_not(supp_h_get(supp_h.staff, fresh->id)->response_overdue);
    /* Customers filter their own organization only. */
    Onceiot__Support__V1__ListTicketsRequest lr = ONCEIOT__SUPPORT__V1__LIST_TICKETS_REQUEST__INIT;
    lr.response_overdue = true;
    rpc_status_t s;
    cr_assert_eq(supp_h_call(supp_h.cust_b, "ListTickets", &lr.base, L_DESC, &r, &s), 0);
    cr_assert_eq(r->n_tickets, 0);
}
