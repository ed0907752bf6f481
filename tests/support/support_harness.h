/* The support service through the gateway, for its tests: identity, sims,
 * support and the gateway as real processes on free ports against the test
 * PostgreSQL, and the users the tests act as, each with an API key.
 *
 * Controlled times: tests move a ticket's clock by SQL on the test database
 * (supp_h_sql: created_at, resolved_at), never by a fake clock in the
 * service; the schema's triggers derive response_due_at from created_at. */
#ifndef ONCEIOT_TEST_SUPPORT_HARNESS_H
#define ONCEIOT_TEST_SUPPORT_HARNESS_H

#include "gw_client.h"
#include "stack_harness.h"
#include "support/v1/support.pb-c.h"

#include <stdbool.h>
#include <stdint.h>

#define SUPP_ORG_A 10 /* the customer organization of most tests */
#define SUPP_ORG_B 20 /* another tenant */

typedef Onceiot__Support__V1__Ticket supp_ticket_t;

typedef struct supp_h {
    sh_stack_t st;
    ph_proc_t support;
    gwc_t g;
    /* "Bearer <key>" of each test user. */
    const char *root;      /* the bootstrap superuser (staff), scope admin */
    const char *staff;     /* a second staff user, support:read + support:write */
    const char *cust_a;    /* ROLE_USER of org A, support:read + support:write */
    const char *reader_a;  /* ROLE_READONLY of org A, support:read */
    const char *noscope_a; /* ROLE_USER of org A, sims:read only */
    const char *cust_b;    /* ROLE_USER of org B, support:read + support:write */
    int64_t root_id, staff_id, cust_a_id, cust_b_id;
    int64_t inactive_staff_id; /* a deactivated superuser */
    /* SIMs registered by the operator: two of org A, one of org B. */
    const char *sim_a1, *sim_a2, *sim_b1;
} supp_h_t;

extern supp_h_t supp_h;

/* Starts everything (fresh schemas), makes the users, keys and SIMs. For a
 * suite's .init. */
void supp_h_start(void);
/* Stops every process, expecting clean exits and no sanitizer report. */
void supp_h_stop(void);

/* Calls SupportService/<method> through the gateway as auth (NULL: no
 * credentials). Returns like rpc_unary; *resp in the harness's arena. */
int supp_h_call(const char *auth, const char *method, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *resp_desc, void *resp, rpc_status_t *st);
/* CreateTicket as auth with subject and priority (0: default); asserts. */
supp_ticket_t *supp_h_create(const char *auth, const char *subject,
                             Onceiot__Support__V1__TicketPriority priority);
/* A ticket action (StartTicket, ReopenTicket, CloseTicket) as auth; returns
 * like rpc_unary (out and st may be NULL). ResolveTicket with resolution. */
int supp_h_act(const char *auth, const char *method, int64_t id, supp_ticket_t **out,
               rpc_status_t *st);
int supp_h_resolve(const char *auth, int64_t id, const char *resolution, supp_ticket_t **out,
                   rpc_status_t *st);
/* GetTicket as auth; asserts success. */
supp_ticket_t *supp_h_get(const char *auth, int64_t id);
/* Runs SQL as the test cluster's superuser (asserting success). */
void supp_h_sql(const char *sql);
/* True when a violation of st names field exactly. */
bool supp_h_violation(const rpc_status_t *st, const char *field);

#endif
