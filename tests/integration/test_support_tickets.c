/* The support service's tickets through the gateway: CreateTicket (with
 * ICCIDs checked by sims), GetTicket, ListTickets (filters, order, keyset
 * pages, full-text search), UpdateTicket, every method's rule and tenant
 * isolation. Real identity, sims, support and gateway processes. */
#include "google/protobuf/field_mask.pb-c.h"
#include "support_harness.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#define T_DESC (&onceiot__support__v1__ticket__descriptor)
#define L_DESC (&onceiot__support__v1__list_tickets_response__descriptor)
#define P(x)   ONCEIOT__SUPPORT__V1__TICKET_PRIORITY__TICKET_PRIORITY_##x
#define S(x)   ONCEIOT__SUPPORT__V1__TICKET_STATUS__TICKET_STATUS_##x
#define C(x)   ONCEIOT__SUPPORT__V1__TICKET_CATEGORY__TICKET_CATEGORY_##x

TestSuite(support_tickets, .init = supp_h_start, .fini = supp_h_stop, .timeout = 240);

typedef Onceiot__Support__V1__ListTicketsRequest list_req_t;
typedef Onceiot__Support__V1__ListTicketsResponse list_resp_t;

static list_resp_t *list_ok(const char *auth, list_req_t *req)
{
    list_resp_t *r = NULL;
    rpc_status_t s;
    cr_assert_eq(supp_h_call(auth, "ListTickets", &req->base, L_DESC, &r, &s), 0,
                 "ListTickets: %s %s", err_grpc_name(s.code), s.message);
    return r;
}

static bool has_ticket(const list_resp_t *r, int64_t id)
{
    for (size_t i = 0; i < r->n_tickets; i++)
        if (r->tickets[i]->id == id)
            return true;
    return false;
}

Test(support_tickets, a_customer_opens_a_ticket_about_its_sims_and_reads_it_back)
{
    Onceiot__Support__V1__CreateTicketRequest req =
        ONCEIOT__SUPPORT__V1__CREATE_TICKET_REQUEST__INIT;
    req.subject = "No data session on two modems";
    req.description = "Since 9:00 both devices fail to attach.";
    req.priority = P(HIGH);
    req.category = C(CONNECTIVITY);
    char *iccids[] = {(char *)supp_h.sim_a1, (char *)supp_h.sim_a2};
    req.iccids = iccids;
    req.n_iccids = 2;
    req.organization_id = SUPP_ORG_B; /* ignored for a customer */
    supp_ticket_t *t = NULL;
    rpc_status_t s;
    cr_assert_eq(supp_h_call(supp_h.cust_a, "CreateTicket", &req.base, T_DESC, &t, &s), 0, "%s",
                 s.message);
    cr_assert_gt(t->id, 0);
    cr_assert_eq(t->organization_id, SUPP_ORG_A);
    cr_assert_eq(t->created_by, supp_h.cust_a_id);
    cr_assert_eq(t->status, S(OPEN));
    cr_assert_eq(t->priority, P(HIGH));
    cr_assert_eq(t->category, C(CONNECTIVITY));
    cr_assert_eq(t->n_iccids, 2);
    cr_assert_str_eq(t->iccids[0], supp_h.sim_a1);
    cr_assert_eq(t->assignee_id, 0);
    cr_assert_null(t->first_response_at);
    cr_assert_not_null(t->created_at);
    /* High: a first response is due 4 hours after creation. */
    cr_assert_eq(t->response_due_at->seconds - t->created_at->seconds, 4 * 3600);
    cr_assert_not(t->response_overdue);
    cr_assert_eq(t->n_history, 1);
    cr_assert_eq(t->history[0]->kind, ONCEIOT__SUPPORT__V1__HISTORY_KIND__HISTORY_KIND_CREATED);
    cr_assert_eq(t->history[0]->to_status, S(OPEN));
    cr_assert_eq(t->history[0]->actor_user_id, supp_h.cust_a_id);

    supp_ticket_t *g = supp_h_get(supp_h.reader_a, t->id);
    cr_assert_str_eq(g->subject, req.subject);
    cr_assert_str_eq(g->description, req.description);
    cr_assert_eq(g->n_history, 1);
    /* Staff see it too. */
    cr_assert_eq(supp_h_get(supp_h.staff, t->id)->organization_id, SUPP_ORG_A);
}

Test(support_tickets, each_priority_has_its_documented_response_time)
{
    const struct {
        Onceiot__Support__V1__TicketPriority p;
        int64_t seconds;
    } cases[] = {
        {P(CRITICAL), 3600},
        {P(HIGH), 4 * 3600},
        {P(MEDIUM), 86400},
        {P(LOW), 3 * 86400},
        {P(UNSPECIFIED), 86400} /* medium */,
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        supp_ticket_t *t = supp_h_create(supp_h.cust_a, "priority", cases[i].p);
        cr_assert_eq(t->response_due_at->seconds - t->created_at->seconds, cases[i].seconds,
                     "priority %d", (int)cases[i].p);
    }
}

Test(support_tickets, staff_open_tickets_for_a_customer_organization)
{
    Onceiot__Support__V1__CreateTicketRequest req =
        ONCEIOT__SUPPORT__V1__CREATE_TICKET_REQUEST__INIT;
    req.subject = "Proactive: maintenance on the core network";
    req.organization_id = SUPP_ORG_B;
    char *iccids[] = {(char *)supp_h.sim_b1};
    req.iccids = iccids;
    req.n_iccids = 1;
    supp_ticket_t *t = NULL;
    rpc_status_t s;
    cr_assert_eq(supp_h_call(supp_h.staff, "CreateTicket", &req.base, T_DESC, &t, &s), 0, "%s",
                 s.message);
    cr_assert_eq(t->organization_id, SUPP_ORG_B);
    cr_assert_eq(supp_h_get(supp_h.cust_b, t->id)->id, t->id);
}

/* One bad field per case; each is INVALID_ARGUMENT naming the field, and
 * nothing is stored. */
Test(support_tickets, bad_create_requests_name_the_field_and_store_nothing)
{
    char long_subject[300];
    memset(long_subject, 'x', 256);
    long_subject[256] = '\0';
    char *long_desc = arena_alloc(supp_h.g.arena, 20002);
    memset(long_desc, 'd', 20001);
    long_desc[20001] = '\0';
    char *bad_fmt[] = {"12345"};
    char *dup[] = {(char *)supp_h.sim_a1, (char *)supp_h.sim_a1};
    char *foreign[] = {(char *)supp_h.sim_b1};
    char *unknown[] = {(char *)supp_h.sim_a1, "8988247000000099999"};
    const struct {
        const char *subject, *description;
        int priority, category;
        char **iccids;
        size_t n;
        const char *field;
    } cases[] = {
        {"", "", 0, 0, NULL, 0, "subject"},
        {"   ", "", 0, 0, NULL, 0, "subject"},
        {long_subject, "", 0, 0, NULL, 0, "subject"},
        {"\xff\xfe", "", 0, 0, NULL, 0, "subject"},
        {"ok", long_desc, 0, 0, NULL, 0, "description"},
        {"ok", "", 99, 0, NULL, 0, "priority"},
        {"ok", "", 0, 99, NULL, 0, "category"},
        {"ok", "", 0, 0, bad_fmt, 1, "iccids[0]"},
        {"ok", "", 0, 0, dup, 2, "iccids[1]"},
        {"ok", "", 0, 0, foreign, 1, "iccids[0]"},
        {"ok", "", 0, 0, unknown, 2, "iccids[1]"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        Onceiot__Support__V1__CreateTicketRequest req =
            ONCEIOT__SUPPORT__V1__CREATE_TICKET_REQUEST__INIT;
        req.subject = (char *)cases[i].subject;
        req.description = (char *)cases[i].description;
        req.priority = cases[i].priority;
        req.category = cases[i].category;
        req.iccids = cases[i].iccids;
        req.n_iccids = cases[i].n;
        void *t = NULL;
        rpc_status_t s;
        cr_assert_lt(supp_h_call(supp_h.cust_a, "CreateTicket", &req.base, T_DESC, &t, &s), 0,
                     "case %zu was accepted", i);
        cr_assert_eq(s.code, GRPC_STATUS_INVALID_ARGUMENT, "case %zu: %s %s", i,
                     err_grpc_name(s.code), s.message);
        cr_assert(supp_h_violation(&s, cases[i].field), "case %zu: no violation on %s (%s)", i,
                  cases[i].field, s.message);
    }
    list_req_t lr = ONCEIOT__SUPPORT__V1__LIST_TICKETS_REQUEST__INIT;
    cr_assert_eq(list_ok(supp_h.staff, &lr)->n_tickets, 0, "a refused ticket was stored");
}

Test(support_tickets, another_organizations_ticket_is_not_found_in_every_method)
{
    supp_ticket_t *t = supp_h_create(supp_h.cust_a, "roaming broken", 0);
    rpc_status_t s;
    void *out = NULL;
    cr_assert_lt(supp_h_act(supp_h.cust_b, "CloseTicket", t->id, NULL, &s), 0);
    cr_assert_eq(s.code, GRPC_STATUS_NOT_FOUND, "%s", err_grpc_name(s.code));
    cr_assert_lt(supp_h_act(supp_h.cust_b, "ReopenTicket", t->id, NULL, &s), 0);
    cr_assert_eq(s.code, GRPC_STATUS_NOT_FOUND);
    Onceiot__Support__V1__GetTicketRequest g = ONCEIOT__SUPPORT__V1__GET_TICKET_REQUEST__INIT;
    g.id = t->id;
    cr_assert_lt(supp_h_call(supp_h.cust_b, "GetTicket", &g.base, T_DESC, &out, &s), 0);
    cr_assert_eq(s.code, GRPC_STATUS_NOT_FOUND);
    cr_assert_str_eq(s.message, arena_printf(supp_h.g.arena, "no ticket %lld", (long long)t->id));
    Onceiot__Support__V1__UpdateTicketRequest u = ONCEIOT__SUPPORT__V1__UPDATE_TICKET_REQUEST__INIT;
    Onceiot__Support__V1__Ticket nt = ONCEIOT__SUPPORT__V1__TICKET__INIT;
    nt.subject = "taken over";
    char *paths[] = {"subject"};
    Google__Protobuf__FieldMask m = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    m.paths = paths;
    m.n_paths = 1;
    u.id = t->id;
    u.ticket = &nt;
    u.update_mask = &m;
    cr_assert_lt(supp_h_call(supp_h.cust_b, "UpdateTicket", &u.base, T_DESC, &out, &s), 0);
    cr_assert_eq(s.code, GRPC_STATUS_NOT_FOUND);
    Onceiot__Support__V1__AddCommentRequest c = ONCEIOT__SUPPORT__V1__ADD_COMMENT_REQUEST__INIT;
    c.ticket_id = t->id;
    c.body = "hello";
    cr_assert_lt(supp_h_call(supp_h.cust_b, "AddComment", &c.base,
                             &onceiot__support__v1__comment__descriptor, &out, &s),
                 0);
    cr_assert_eq(s.code, GRPC_STATUS_NOT_FOUND);
    Onceiot__Support__V1__ListCommentsRequest lc =
        ONCEIOT__SUPPORT__V1__LIST_COMMENTS_REQUEST__INIT;
    lc.ticket_id = t->id;
    cr_assert_lt(supp_h_call(supp_h.cust_b, "ListComments", &lc.base,
                             &onceiot__support__v1__list_comments_response__descriptor, &out, &s),
                 0);
    cr_assert_eq(s.code, GRPC_STATUS_NOT_FOUND);
    /* Lists: B sees nothing of A's, even asking for A's organization. */
    list_req_t lr = ONCEIOT__SUPPORT__V1__LIST_TICKETS_REQUEST__INIT;
    lr.organization_id = SUPP_ORG_A;
    cr_assert_eq(list_ok(supp_h.cust_b, &lr)->n_tickets, 0);
    lr.organization_id = 0;
    lr.query = "roaming";
    cr_assert_eq(list_ok(supp_h.cust_b, &lr)->n_tickets, 0);
    cr_assert(has_ticket(list_ok(supp_h.cust_a, &lr), t->id));
    /* Nothing changed. */
    supp_ticket_t *after = supp_h_get(supp_h.cust_a, t->id);
    cr_assert_str_eq(after->subject, "roaming broken");
    cr_assert_eq(after->status, S(OPEN));
}

/* Each method's rule as the gateway applies it. */
Test(support_tickets, every_method_applies_its_rule)
{
    supp_ticket_t *t = supp_h_create(supp_h.cust_a, "rules", 0);
    const ProtobufCMessageDescriptor *comment = &onceiot__support__v1__comment__descriptor;
    const ProtobufCMessageDescriptor *comments =
        &onceiot__support__v1__list_comments_response__descriptor;
    const struct {
        const char *method;
        bool read;  /* support:read, readonly may call */
        bool staff; /* superusers only */
        const ProtobufCMessageDescriptor *resp;
    } methods[] = {
        {"CreateTicket", false, false, T_DESC},  {"GetTicket", true, false, T_DESC},
        {"ListTickets", true, false, L_DESC},    {"UpdateTicket", false, false, T_DESC},
        {"AssignTicket", false, true, T_DESC},   {"StartTicket", false, true, T_DESC},
        {"ResolveTicket", false, true, T_DESC},  {"ReopenTicket", false, false, T_DESC},
        {"CloseTicket", false, false, T_DESC},   {"AddComment", false, false, comment},
        {"ListComments", true, false, comments},
    };
    /* An empty request of any method: only the rule decides before it is
     * read (the id is refused after the rule, with INVALID_ARGUMENT). */
    Onceiot__Support__V1__GetTicketRequest empty = ONCEIOT__SUPPORT__V1__GET_TICKET_REQUEST__INIT;
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        const char *m = methods[i].method;
        rpc_status_t s;
        void *out = NULL;
        cr_assert_lt(supp_h_call(NULL, m, &empty.base, methods[i].resp, &out, &s), 0);
        cr_assert_eq(s.code, GRPC_STATUS_UNAUTHENTICATED, "%s without credentials: %s", m,
                     err_grpc_name(s.code));
        cr_assert_lt(supp_h_call(supp_h.noscope_a, m, &empty.base, methods[i].resp, &out, &s), 0);
        cr_assert_eq(s.code, GRPC_STATUS_PERMISSION_DENIED, "%s without scope: %s", m,
                     err_grpc_name(s.code));
        int rc = supp_h_call(supp_h.reader_a, m, &empty.base, methods[i].resp, &out, &s);
        if (methods[i].read)
            cr_assert(rc == 0 || s.code == GRPC_STATUS_INVALID_ARGUMENT, "%s as readonly: %s %s", m,
                      err_grpc_name(s.code), s.message);
        else
            cr_assert_eq(s.code, GRPC_STATUS_PERMISSION_DENIED, "%s as readonly: %s", m,
                         err_grpc_name(s.code));
        rc = supp_h_call(supp_h.cust_a, m, &empty.base, methods[i].resp, &out, &s);
        if (methods[i].staff)
            cr_assert_eq(s.code, GRPC_STATUS_PERMISSION_DENIED, "%s as a customer: %s", m,
                         err_grpc_name(s.code));
        else
            cr_assert(rc == 0 || s.code == GRPC_STATUS_INVALID_ARGUMENT, "%s as a customer: %s %s",
                      m, err_grpc_name(s.code), s.message);
        rc = supp_h_call(supp_h.staff, m, &empty.base, methods[i].resp, &out, &s);
        cr_assert(rc == 0 || s.code == GRPC_STATUS_INVALID_ARGUMENT, "%s as staff: %s %s", m,
                  err_grpc_name(s.code), s.message);
    }
    cr_assert_eq(supp_h_get(supp_h.cust_a, t->id)->status, S(OPEN));
}

/* Sets a ticket's creation time to ago_s seconds before now (the due time
 * follows by the schema's trigger). */
static void set_created_ago(int64_t id, long ago_s)
{
    char sql[200];
    snprintf(sql, sizeof(sql),
             "UPDATE support.tickets SET created_at = now() - interval '%ld seconds' "
             "WHERE id = %lld",
             ago_s, (long long)id);
    supp_h_sql(sql);
}

Test(support_tickets, list_filters_order_and_pages)
{
    /* Six tickets of org A, each created an hour before the next. */
    const struct {
        const char *subject;
        Onceiot__Support__V1__TicketPriority p;
        Onceiot__Support__V1__TicketCategory c;
        const char *iccid;
    } spec[] = {
        {"billing question", P(LOW), C(BILLING), NULL},
        {"modem offline", P(CRITICAL), C(CONNECTIVITY), "8988247000000000011"},
        {"order missing", P(MEDIUM), C(ORDERS), NULL},
        {"api returns 500", P(HIGH), C(API), NULL},
        {"second modem offline", P(CRITICAL), C(CONNECTIVITY), "8988247000000000029"},
        {"invoice copy", P(LOW), C(BILLING), NULL},
    };
    int64_t ids[6];
    for (int i = 0; i < 6; i++) {
        Onceiot__Support__V1__CreateTicketRequest req =
            ONCEIOT__SUPPORT__V1__CREATE_TICKET_REQUEST__INIT;
        req.subject = (char *)spec[i].subject;
        req.priority = spec[i].p;
        req.category = spec[i].c;
        char *iccid = (char *)spec[i].iccid;
        req.iccids = &iccid;
        req.n_iccids = iccid ? 1 : 0;
        supp_ticket_t *t = NULL;
        rpc_status_t s;
        cr_assert_eq(supp_h_call(supp_h.cust_a, "CreateTicket", &req.base, T_DESC, &t, &s), 0, "%s",
                     s.message);
        ids[i] = t->id;
        set_created_ago(t->id, (6 - i) * 3600L);
    }
    supp_ticket_t *other = supp_h_create(supp_h.cust_b, "modem offline at B", P(CRITICAL));
    cr_assert_eq(supp_h_act(supp_h.staff, "StartTicket", ids[1], NULL, NULL), 0);

    list_req_t lr = ONCEIOT__SUPPORT__V1__LIST_TICKETS_REQUEST__INIT;
    list_resp_t *r = list_ok(supp_h.cust_a, &lr);
    cr_assert_eq(r->n_tickets, 6);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(r->tickets[i]->id, ids[5 - i], "newest first");
    cr_assert_eq(r->tickets[0]->n_history, 0, "lists carry no history");

    lr.status = S(IN_PROGRESS);
    r = list_ok(supp_h.cust_a, &lr);
    cr_assert_eq(r->n_tickets, 1);
    cr_assert_eq(r->tickets[0]->id, ids[1]);
    lr.status = 0;
    lr.priority = P(CRITICAL);
    r = list_ok(supp_h.cust_a, &lr);
    cr_assert_eq(r->n_tickets, 2);
    cr_assert_eq(r->tickets[0]->id, ids[4]);
    lr.priority = 0;
    lr.category = C(BILLING);
    r = list_ok(supp_h.cust_a, &lr);
    cr_assert_eq(r->n_tickets, 2);
    cr_assert_eq(r->tickets[0]->id, ids[5]);
    cr_assert_eq(r->tickets[1]->id, ids[0]);
    lr.category = 0;
    lr.iccid = "8988247000000000029";
    r = list_ok(supp_h.cust_a, &lr);
    cr_assert_eq(r->n_tickets, 1);
    cr_assert_eq(r->tickets[0]->id, ids[4]);
    lr.iccid = "";
    /* Created in [4.5 h ago, 1.5 h ago): tickets 2, 3 and 4. */
    Google__Protobuf__Timestamp after = GOOGLE__PROTOBUF__TIMESTAMP__INIT,
                                before = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    supp_ticket_t *newest = supp_h_get(supp_h.cust_a, ids[5]);
    after.seconds = newest->created_at->seconds - 16200 + 3600;
    before.seconds = newest->created_at->seconds - 5400 + 3600;
    lr.created_after = &after;
    lr.created_before = &before;
    r = list_ok(supp_h.cust_a, &lr);
    cr_assert_eq(r->n_tickets, 3, "got %zu", r->n_tickets);
    cr_assert_eq(r->tickets[0]->id, ids[4]);
    cr_assert_eq(r->tickets[2]->id, ids[2]);
    lr.created_after = lr.created_before = NULL;

    /* Most urgent first, then oldest first. */
    lr.order_by = ONCEIOT__SUPPORT__V1__TICKET_ORDER_BY__TICKET_ORDER_BY_PRIORITY;
    r = list_ok(supp_h.cust_a, &lr);
    const int64_t by_priority[] = {ids[1], ids[4], ids[3], ids[2], ids[0], ids[5]};
    cr_assert_eq(r->n_tickets, 6);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(r->tickets[i]->id, by_priority[i], "position %d", i);

    /* Pages of 4 in both orders see every ticket once. */
    for (int order = 0; order < 2; order++) {
        list_req_t pr = ONCEIOT__SUPPORT__V1__LIST_TICKETS_REQUEST__INIT;
        pr.order_by = order;
        pr.page_size = 4;
        int seen = 0, pages = 0;
        do {
            r = list_ok(supp_h.cust_a, &pr);
            for (size_t i = 0; i < r->n_tickets; i++, seen++)
                cr_assert_eq(r->tickets[i]->id, order ? by_priority[seen] : ids[5 - seen]);
            pr.page_token = r->next_page_token;
            pages++;
        } while (*r->next_page_token && pages < 10);
        cr_assert_eq(seen, 6);
        cr_assert_eq(pages, 2);
    }
    /* A token is bound to its filters. */
    list_req_t pr = ONCEIOT__SUPPORT__V1__LIST_TICKETS_REQUEST__INIT;
    pr.page_size = 2;
    r = list_ok(supp_h.cust_a, &pr);
    pr.page_token = r->next_page_token;
    pr.priority = P(LOW);
    rpc_status_t s;
    void *out = NULL;
    cr_assert_lt(supp_h_call(supp_h.cust_a, "ListTickets", &pr.base, L_DESC, &out, &s), 0);
    cr_assert_eq(s.code, GRPC_STATUS_INVALID_ARGUMENT);
    cr_assert(supp_h_violation(&s, "page_token"));

    /* Staff see both organizations, or one. */
    list_req_t sr = ONCEIOT__SUPPORT__V1__LIST_TICKETS_REQUEST__INIT;
    sr.query = "modem";
    r = list_ok(supp_h.staff, &sr);
    cr_assert_eq(r->n_tickets, 3);
    sr.organization_id = SUPP_ORG_B;
    r = list_ok(supp_h.staff, &sr);
    cr_assert_eq(r->n_tickets, 1);
    cr_assert_eq(r->tickets[0]->id, other->id);
    /* Full-text search stems: "modems" finds "modem". */
    list_req_t q = ONCEIOT__SUPPORT__V1__LIST_TICKETS_REQUEST__INIT;
    q.query = "offline modems -second";
    r = list_ok(supp_h.cust_a, &q);
    cr_assert_eq(r->n_tickets, 1);
    cr_assert_eq(r->tickets[0]->id, ids[1]);
}

Test(support_tickets, bad_list_requests_name_the_field)
{
    Google__Protobuf__Duration zero = GOOGLE__PROTOBUF__DURATION__INIT;
    Google__Protobuf__Duration huge = GOOGLE__PROTOBUF__DURATION__INIT;
    huge.seconds = 91LL * 86400;
    Google__Protobuf__Duration hour = GOOGLE__PROTOBUF__DURATION__INIT;
    hour.seconds = 3600;
    char long_query[300];
    memset(long_query, 'q', 201);
    long_query[201] = '\0';
    for (int i = 0; i < 10; i++) {
        list_req_t lr = ONCEIOT__SUPPORT__V1__LIST_TICKETS_REQUEST__INIT;
        const char *field = NULL;
        switch (i) {
        case 0:
            lr.status = 9;
            field = "status";
            break;
        case 1:
            lr.priority = 9;
            field = "priority";
            break;
        case 2:
            lr.category = 9;
            field = "category";
            break;
        case 3:
            lr.page_size = 501;
            field = "page_size";
            break;
        case 4:
            lr.iccid = "89x";
            field = "iccid[0]";
            break;
        case 5:
            lr.query = long_query;
            field = "query";
            break;
        case 6:
            lr.response_due_within = &zero;
            field = "response_due_within";
            break;
        case 7:
            lr.response_due_within = &huge;
            field = "response_due_within";
            break;
        case 8:
            lr.response_due_within = &hour;
            lr.response_overdue = true;
            field = "response_overdue";
            break;
        default:
            lr.assignee_id = 1;
            lr.unassigned = true;
            field = "unassigned";
            break;
        }
        void *out = NULL;
        rpc_status_t s;
        cr_assert_lt(supp_h_call(supp_h.staff, "ListTickets", &lr.base, L_DESC, &out, &s), 0,
                     "case %d accepted", i);
        cr_assert_eq(s.code, GRPC_STATUS_INVALID_ARGUMENT, "case %d: %s", i, err_grpc_name(s.code));
        cr_assert(supp_h_violation(&s, field), "case %d: no violation on %s (%s)", i, field,
                  s.message);
    }
}

static int update(const char *auth, int64_t id, Onceiot__Support__V1__Ticket *nt,
                  const char *const *paths, size_t n, supp_ticket_t **out, rpc_status_t *s)
{
    Onceiot__Support__V1__UpdateTicketRequest u = ONCEIOT__SUPPORT__V1__UPDATE_TICKET_REQUEST__INIT;
    Google__Protobuf__FieldMask m = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    m.paths = (char **)paths;
    m.n_paths = n;
    u.id = id;
    u.ticket = nt;
    u.update_mask = &m;
    return supp_h_call(auth, "UpdateTicket", &u.base, T_DESC, out, s);
}

Test(support_tickets, update_changes_only_the_masked_fields)
{
    supp_ticket_t *t = supp_h_create(supp_h.cust_a, "printer on fire", P(LOW));
    Onceiot__Support__V1__Ticket nt = ONCEIOT__SUPPORT__V1__TICKET__INIT;
    nt.subject = "router on fire";
    nt.description = "ignored: not in the mask";
    nt.priority = P(CRITICAL);
    char *iccids[] = {(char *)supp_h.sim_a2};
    nt.iccids = iccids;
    nt.n_iccids = 1;
    const char *paths[] = {"subject", "priority", "iccids"};
    supp_ticket_t *u = NULL;
    rpc_status_t s;
    cr_assert_eq(update(supp_h.cust_a, t->id, &nt, paths, 3, &u, &s), 0, "%s", s.message);
    cr_assert_str_eq(u->subject, "router on fire");
    cr_assert_str_eq(u->description, t->description);
    cr_assert_eq(u->priority, P(CRITICAL));
    /* The due time follows the new priority. */
    cr_assert_eq(u->response_due_at->seconds - u->created_at->seconds, 3600);
    cr_assert_eq(u->n_iccids, 1);
    cr_assert_str_eq(u->iccids[0], supp_h.sim_a2);
    /* Search follows the new subject. */
    list_req_t q = ONCEIOT__SUPPORT__V1__LIST_TICKETS_REQUEST__INIT;
    q.query = "router";
    cr_assert(has_ticket(list_ok(supp_h.cust_a, &q), t->id));
    q.query = "printer";
    cr_assert_not(has_ticket(list_ok(supp_h.cust_a, &q), t->id));

    /* Bad masks and values. */
    supp_ticket_t *out = NULL;
    const char *unknown[] = {"status"};
    cr_assert_lt(update(supp_h.cust_a, t->id, &nt, unknown, 1, &out, &s), 0);
    cr_assert(supp_h_violation(&s, "update_mask"), "%s", s.message);
    cr_assert_lt(update(supp_h.cust_a, t->id, &nt, NULL, 0, &out, &s), 0);
    cr_assert(supp_h_violation(&s, "update_mask"));
    Onceiot__Support__V1__Ticket bad = ONCEIOT__SUPPORT__V1__TICKET__INIT;
    bad.subject = "";
    bad.priority = 42;
    char *foreign[] = {(char *)supp_h.sim_b1};
    bad.iccids = foreign;
    bad.n_iccids = 1;
    const char *p1[] = {"subject", "priority"};
    cr_assert_lt(update(supp_h.cust_a, t->id, &bad, p1, 2, &out, &s), 0);
    cr_assert(supp_h_violation(&s, "ticket.subject"));
    cr_assert(supp_h_violation(&s, "ticket.priority"));
    const char *p2[] = {"iccids"};
    cr_assert_lt(update(supp_h.cust_a, t->id, &bad, p2, 1, &out, &s), 0);
    cr_assert(supp_h_violation(&s, "ticket.iccids[0]"), "%s", s.message);

    /* external_id: staff only, unique. */
    Onceiot__Support__V1__Ticket ext = ONCEIOT__SUPPORT__V1__TICKET__INIT;
    ext.external_id = "JIRA-4711";
    const char *p3[] = {"external_id"};
    cr_assert_lt(update(supp_h.cust_a, t->id, &ext, p3, 1, &out, &s), 0);
    cr_assert_eq(s.code, GRPC_STATUS_PERMISSION_DENIED);
    cr_assert_eq(update(supp_h.staff, t->id, &ext, p3, 1, &u, &s), 0, "%s", s.message);
    cr_assert_str_eq(u->external_id, "JIRA-4711");
    supp_ticket_t *t2 = supp_h_create(supp_h.cust_a, "another", 0);
    cr_assert_lt(update(supp_h.staff, t2->id, &ext, p3, 1, &out, &s), 0);
    cr_assert_eq(s.code, GRPC_STATUS_ALREADY_EXISTS, "%s", err_grpc_name(s.code));
    ext.external_id = "bad id with spaces";
    cr_assert_lt(update(supp_h.staff, t2->id, &ext, p3, 1, &out, &s), 0);
    cr_assert(supp_h_violation(&s, "ticket.external_id"));

    /* Nothing of the refused updates stuck. */
    supp_ticket_t *now = supp_h_get(supp_h.cust_a, t->id);
    cr_assert_str_eq(now->subject, "router on fire");
    cr_assert_eq(now->priority, P(CRITICAL));
    cr_assert_str_eq(now->iccids[0], supp_h.sim_a2);
    cr_assert_str_eq(supp_h_get(supp_h.cust_a, t2->id)->external_id, "");
}

static int create_with_id(const char *auth, const char *subject, const char *request_id,
                          supp_ticket_t **t, rpc_status_t *s)
{
    Onceiot__Support__V1__CreateTicketRequest req =
        ONCEIOT__SUPPORT__V1__CREATE_TICKET_REQUEST__INIT;
    req.subject = (char *)subject;
    req.request_id = (char *)request_id;
    return supp_h_call(auth, "CreateTicket", &req.base, T_DESC, t, s);
}

Test(support_tickets, a_retried_create_with_its_request_id_opens_one_ticket)
{
    supp_ticket_t *first = NULL, *again = NULL;
    rpc_status_t s;
    cr_assert_eq(create_with_id(supp_h.cust_a, "SIM lost", "retry-1", &first, &s), 0, "%s",
                 s.message);
    /* A later change does not alter the replayed answer: the first one. */
    cr_assert_eq(supp_h_act(supp_h.staff, "StartTicket", first->id, NULL, NULL), 0);
    cr_assert_eq(create_with_id(supp_h.cust_a, "SIM lost", "retry-1", &again, &s), 0, "%s",
                 s.message);
    cr_assert_eq(again->id, first->id);
    cr_assert_eq(again->status, S(OPEN));
    list_req_t lr = ONCEIOT__SUPPORT__V1__LIST_TICKETS_REQUEST__INIT;
    cr_assert_eq(list_ok(supp_h.cust_a, &lr)->n_tickets, 1);
    /* The same id with another request is refused and opens nothing. */
    supp_ticket_t *out = NULL;
    cr_assert_lt(create_with_id(supp_h.cust_a, "SIM found", "retry-1", &out, &s), 0);
    cr_assert_eq(s.code, GRPC_STATUS_INVALID_ARGUMENT, "%s", err_grpc_name(s.code));
    cr_assert_lt(create_with_id(supp_h.cust_a, "SIM lost", "not an id!", &out, &s), 0);
    cr_assert(supp_h_violation(&s, "request_id"), "%s", s.message);
    /* Ids are the caller's: another user's "retry-1" is a new ticket, and no
     * id at all is never deduplicated. */
    cr_assert_eq(create_with_id(supp_h.cust_b, "SIM lost", "retry-1", &out, &s), 0, "%s",
                 s.message);
    cr_assert_neq(out->id, first->id);
    cr_assert_eq(create_with_id(supp_h.cust_a, "SIM lost", "", &out, &s), 0);
    cr_assert_eq(create_with_id(supp_h.cust_a, "SIM lost", "", &again, &s), 0);
    cr_assert_neq(out->id, again->id);
    cr_assert_eq(list_ok(supp_h.cust_a, &lr)->n_tickets, 3);
}
