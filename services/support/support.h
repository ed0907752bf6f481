/* The support service's internals: per-call context, ticket queries, the
 * calls to sims and identity, and validation, used by the handlers_*.c
 * files. */
#ifndef ONCEIOT_SUPPORT_H
#define ONCEIOT_SUPPORT_H

#include "onceiot/pagetoken.h"
#include "onceiot/requestid.h"
#include "onceiot/svc.h"
#include "support/v1/support.pb-c.h"
#include "support_sql.h"

#include <stdbool.h>
#include <stdint.h>

typedef Onceiot__Support__V1__Ticket support_ticket_t;
typedef Onceiot__Support__V1__Comment support_comment_t;

/* The service state handed to handlers through svc_state. */
typedef struct support_state {
    svc_t *svc;
    rpc_channel_t *sims;     /* ResolveSims: ICCIDs on tickets */
    rpc_channel_t *identity; /* GetUser: assignees are active staff */
    long reopen_window_s;    /* how long after resolved_at a ticket may reopen */
} support_state_t;

/* What every handler needs about its call. */
typedef struct support_ctx {
    rpc_call_t *call;
    arena_t *a;
    const support_state_t *st;
    const principal_t *who;
    bool staff;        /* a superuser: sees and triages every organization */
    const char *org;   /* the caller's organization as text; NULL for staff (all) */
    const char *actor; /* the caller's user id as text (0 for a service) */
    requestid_t rq;    /* the call's claimed request id, if any */
} support_ctx_t;

/* Verifies the principal and fills cx. Returns 0, or an ERR_* code with the
 * call's status set. */
int support_ctx_or_status(rpc_call_t *call, support_ctx_t *cx) ONCEIOT_MUSTCHECK;
/* Runs stmt on the call's connection (status set on failure). */
int support_exec(support_ctx_t *cx, const db_stmt_t *stmt, const char *const *params,
                 PGresult **res) ONCEIOT_MUSTCHECK;
const char *support_i64(support_ctx_t *cx, int64_t v);
/* NULL for an empty string (SQL NULL). */
const char *support_nz(const char *s);

/* ---- store.c ---- */

/* A ticket row as every read selects it (SUPPORT_TICKET_COLUMNS over t,
 * support_sql.h). */
support_ticket_t *support_ticket_from_row(arena_t *a, const PGresult *res, int row);
/* Reads one ticket in the caller's tenant (with its history when
 * with_history). NOT_FOUND (status set) when it does not exist there. */
int support_load_ticket_or_status(support_ctx_t *cx, int64_t id, bool with_history,
                                  support_ticket_t **out) ONCEIOT_MUSTCHECK;

/* A ticket locked for the rest of the transaction. */
typedef struct support_locked {
    const char *id;      /* text */
    const char *org;     /* its organization, text */
    const char *status;  /* "open", ... */
    int64_t assignee_id; /* 0: none */
    bool reopenable;     /* resolved within the reopen window */
} support_locked_t;
/* BEGIN, then locks ticket id of the caller's tenant. NOT_FOUND (status
 * set) when it does not exist there. */
int support_begin_lock_or_status(support_ctx_t *cx, int64_t id,
                                 support_locked_t *out) ONCEIOT_MUSTCHECK;
/* Records one history entry of the locked ticket in the transaction. A NULL
 * from/to is SQL NULL. */
int support_record_history(support_ctx_t *cx, const char *ticket_id, const char *kind,
                           const char *from_status, const char *to_status,
                           const char *from_assignee, const char *to_assignee) ONCEIOT_MUSTCHECK;
/* Reads the ticket back inside the transaction, records it as the answer
 * of the call's claimed request id (if any), commits, and answers it. */
int support_commit_answer(support_ctx_t *cx, int64_t id, ProtobufCMessage **resp) ONCEIOT_MUSTCHECK;

/* ---- validate.c: names as stored and the proto enums ---- */

const char *support_status_name(Onceiot__Support__V1__TicketStatus s);
Onceiot__Support__V1__TicketStatus support_status_enum(const char *name);
const char *support_priority_name(Onceiot__Support__V1__TicketPriority p);
Onceiot__Support__V1__TicketPriority support_priority_enum(const char *name);
const char *support_category_name(Onceiot__Support__V1__TicketCategory c);
Onceiot__Support__V1__TicketCategory support_category_enum(const char *name);

/* Each records a field violation and returns false. */
bool support_valid_id(rpc_call_t *call, const char *field, int64_t id);
bool support_valid_subject(rpc_call_t *call, const char *field, const char *s);
bool support_valid_text(rpc_call_t *call, const char *field, const char *s, size_t min, size_t max);
bool support_valid_external_id(rpc_call_t *call, const char *field, const char *s);
/* ICCIDs: 19 or 20 digits each, at most 100, no duplicates. */
bool support_valid_iccids(rpc_call_t *call, const char *field, char **iccids, size_t n);

/* ---- calls.c: the sims and identity services ---- */

/* Checks that every ICCID is a SIM of organization org (through sims'
 * ResolveSims). One that is not gets a violation on "<field>[i]" (the same
 * words for unknown and foreign SIMs); UNAVAILABLE (status set) when sims
 * cannot answer. Returns 0 or the ERR_* code. */
int support_check_iccids_or_status(support_ctx_t *cx, const char *field, char **iccids, size_t n,
                                   int64_t org) ONCEIOT_MUSTCHECK;
/* Checks through identity's GetUser that user_id is an active staff user
 * (superuser). FAILED_PRECONDITION (status set) when not, UNAVAILABLE when
 * identity cannot answer. */
int support_check_staff_or_status(support_ctx_t *cx, int64_t user_id) ONCEIOT_MUSTCHECK;

/* Handlers, one group per file. */
int support_create_ticket(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int support_get_ticket(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int support_list_tickets(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int support_update_ticket(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int support_assign_ticket(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int support_start_ticket(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int support_resolve_ticket(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int support_reopen_ticket(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int support_close_ticket(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int support_add_comment(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int support_list_comments(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);

#endif
