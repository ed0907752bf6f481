/* The sims service's internals: per-call context, shared queries, validation,
 * page tokens and the event watcher, used by the handlers_*.c files. */
#ifndef ONCEIOT_SIMS_H
#define ONCEIOT_SIMS_H

#include "onceiot/pagetoken.h"
#include "onceiot/pbstruct.h"
#include "onceiot/requestid.h"
#include "onceiot/svc.h"
#include "sims/v1/sims.pb-c.h"
#include "sims_sql.h"

#include <stdbool.h>
#include <stdint.h>

typedef Onceiot__Sims__V1__Sim sims_sim_t;
typedef Onceiot__Sims__V1__SimEvent sims_event_t;

/* What every handler needs about its call: who calls, in which tenant, and a
 * database connection. */
typedef struct sims_ctx {
    rpc_call_t *call;
    arena_t *a;
    const principal_t *who;
    const char *org;   /* the caller's organization as text; NULL for superusers (all) */
    const char *actor; /* triggered_by of events: "user:<id>", "api_key:<id>", "service:<n>" */
    requestid_t rq;    /* the call's claimed request id, if any */
} sims_ctx_t;

/* Verifies the principal and fills cx. Returns 0, or an ERR_* code with the
 * call's status set. */
int sims_ctx_or_status(rpc_call_t *call, sims_ctx_t *cx) ONCEIOT_MUSTCHECK;
/* sims_ctx_or_status for a call about one SIM: also checks iccid, recording a
 * violation that the caller's rpc_check_violations reports. */
int sims_ctx_iccid_or_status(rpc_call_t *call, const char *iccid, sims_ctx_t *cx) ONCEIOT_MUSTCHECK;
/* Runs stmt on the call's connection (status set on failure). */
int sims_exec(sims_ctx_t *cx, const db_stmt_t *stmt, const char *const *params,
              PGresult **res) ONCEIOT_MUSTCHECK;
/* The same without setting the status on a database error (the caller
 * words it, e.g. naming the duplicate ICCID; db_errmsg has the details). The
 * status is set only when no connection can be had. */
int sims_exec_quiet(sims_ctx_t *cx, const db_stmt_t *stmt, const char *const *params,
                    PGresult **res) ONCEIOT_MUSTCHECK;
/* BEGIN on the call's connection. An open transaction is rolled back when the
 * connection goes back to the pool, so failure paths need no ROLLBACK. */
int sims_begin(sims_ctx_t *cx) ONCEIOT_MUSTCHECK;
int sims_commit(sims_ctx_t *cx) ONCEIOT_MUSTCHECK;
/* Begins the transaction and claims the call's request id (requestid.h;
 * "" claims nothing). Returns REQUESTID_NEW, REQUESTID_REPLAY with *first
 * the first attempt's answer (the handler answers it as it is), or an ERR_*
 * code with the status set. */
int sims_begin_request_or_status(sims_ctx_t *cx, const char *request_id,
                                 const ProtobufCMessage *req,
                                 ProtobufCMessage **first) ONCEIOT_MUSTCHECK;
/* Records resp as the answer of the claimed request id (if any) and commits. */
int sims_commit_answer(sims_ctx_t *cx, const ProtobufCMessage *resp) ONCEIOT_MUSTCHECK;

/* Text helpers in the call's arena. */
const char *sims_i64(sims_ctx_t *cx, int64_t v);
/* NULL for an empty string (SQL NULL). */
const char *sims_nz(const char *s);

/* ---- store.c: shared queries ---- */

sims_sim_t *sims_sim_from_row(arena_t *a, const PGresult *res, int row);
/* Reads one SIM by ICCID in the caller's tenant. NOT_FOUND (status set)
 * when it does not exist there. */
int sims_load_sim_or_status(sims_ctx_t *cx, const char *iccid, sims_sim_t **out) ONCEIOT_MUSTCHECK;
/* NOT_FOUND (status set) unless the SIM exists in the caller's tenant:
 * for lists and watches of one SIM, whose empty answer must not hide that
 * the SIM is someone else's (or nobody's). On conn, or the call's
 * connection when NULL. */
int sims_visible_or_status(sims_ctx_t *cx, db_conn_t *conn, const char *iccid) ONCEIOT_MUSTCHECK;
/* Locks a SIM row for the rest of the transaction; *id and *org get its
 * keys, *status its status (arena). NOT_FOUND (status set) when missing. */
int sims_lock_sim_or_status(sims_ctx_t *cx, const char *iccid, const char **id, const char **org,
                            const char **status) ONCEIOT_MUSTCHECK;
/* BEGIN, then sims_lock_sim_or_status: the transaction of a change to one SIM. */
int sims_begin_lock_or_status(sims_ctx_t *cx, const char *iccid, const char **id, const char **org,
                              const char **status) ONCEIOT_MUSTCHECK;

/* One event to record in the current transaction. */
typedef struct sims_event_in {
    const char *sim_id, *org, *iccid;
    const char *type, *category, *severity; /* severity NULL: "info" */
    const char *description;                /* NULL: "" */
    const char *data_json;                  /* NULL: {} */
    const char *occurred_us;                /* NULL: now() */
} sims_event_in_t;
int sims_record_event(sims_ctx_t *cx, const sims_event_in_t *ev) ONCEIOT_MUSTCHECK;
/* Records n events (n may be 0) in one statement, in the order given. */
int sims_insert_events(sims_ctx_t *cx, const sims_event_in_t *ev, size_t n) ONCEIOT_MUSTCHECK;

sims_event_t *sims_event_from_row(arena_t *a, const PGresult *res, int row);
#define SIMS_EVENT_COLUMNS                                                                         \
    "e.id, e.iccid, e.event_type, e.event_category, e.severity, e.description, "                   \
    "e.event_data::text AS data_json, e.triggered_by, e.organization_id, "                         \
    "(extract(epoch FROM e.occurred_at) * 1000000)::bigint AS occurred_us"

/* A quota as consuming n units left it (the consuming UPDATE's RETURNING:
 * volume, used_volume, remaining_volume, threshold_volume,
 * threshold_reached, auto_reload). The state before is derived from it:
 * consuming does not change the volume. */
typedef struct sims_quota_after {
    int64_t n; /* units just consumed */
    int64_t volume, used, remaining, threshold;
    bool threshold_reached, auto_reload;
} sims_quota_after_t;
sims_quota_after_t sims_quota_after(const PGresult *res, int row, int64_t n);
/* The events that consumption caused, in the order they are to be recorded
 * (threshold reached, depleted, auto-reload: at most 3, into ev; sim_id, org
 * and iccid copied from who, strings in the call's arena). Returns their
 * count; *reload says the quota must now be reloaded by its
 * auto_reload_amount (auto_topup_triggered is then among the events). */
size_t sims_quota_events(sims_ctx_t *cx, const sims_quota_after_t *q, const sims_event_in_t *who,
                         const char *quota_type, sims_event_in_t ev[3], bool *reload);

/* Consumes n units of a quota of a locked SIM and records the threshold,
 * depletion and auto-reload events that the change causes. With
 * require_remaining the quota must have n units left (else
 * FAILED_PRECONDITION, status set). *remaining gets what is left (-1 when the
 * SIM has no such quota: unmetered); events[] gets the event types recorded
 * (at most 3). */
int sims_consume_quota(sims_ctx_t *cx, const char *sim_id, const char *org, const char *iccid,
                       const char *quota_type, int64_t n, bool require_remaining,
                       int64_t *remaining, const char **events, size_t *n_events) ONCEIOT_MUSTCHECK;

/* Timestamps: unix microseconds (text, may be NULL) to a Timestamp, and back. */
Google__Protobuf__Timestamp *sims_ts(arena_t *a, const char *us);
const char *sims_ts_param(sims_ctx_t *cx, const Google__Protobuf__Timestamp *ts);

/* Status names as stored ("Enabled") and the proto enum. */
const char *sims_status_name(Onceiot__Sims__V1__SimStatus st);
Onceiot__Sims__V1__SimStatus sims_status_enum(const char *name);
const char *sims_quota_type_name(Onceiot__Sims__V1__QuotaType t);

/* ---- validate.c: each records a field violation and returns false ---- */

bool sims_valid_iccid(rpc_call_t *call, const char *field, const char *iccid);
bool sims_valid_imei(rpc_call_t *call, const char *field, const char *imei);
bool sims_valid_msisdn(rpc_call_t *call, const char *field, const char *msisdn);
bool sims_valid_imsi(rpc_call_t *call, const char *field, const char *imsi);
bool sims_valid_label(rpc_call_t *call, const char *field, const char *label);
bool sims_valid_tags(rpc_call_t *call, const char *field, char **tags, size_t n);
/* A JSON object field of m (SIM metadata, event data): the field named
 * prefix + name holds s, whose JSON text (pbstruct_to_json, at most 64 KiB)
 * goes to *json. The JSON string field it replaced, number old_tag, named
 * name + "_json", is refused when a client still sends it: the server no
 * longer reads it, and taking it silently would lose the client's data. */
bool sims_valid_object(rpc_call_t *call, const char *prefix, const ProtobufCMessage *m,
                       const char *name, const Google__Protobuf__Struct *s, uint32_t old_tag,
                       const char **json);
bool sims_valid_ip(rpc_call_t *call, const char *field, const char *ip);

typedef struct sims_sms_shape {
    bool ucs2;    /* false: GSM-7 */
    int units;    /* septets (GSM-7, extension characters count 2) or UTF-16 units */
    int chars;    /* code points */
    int segments; /* SMS parts needed */
} sims_sms_shape_t;
/* Measures an SMS text (UTF-8). False with a violation on field when it is
 * empty, not UTF-8 or longer than 1600 characters. */
bool sims_sms_measure(rpc_call_t *call, const char *field, const char *text, sims_sms_shape_t *out);

/* Joins tags with ',' (tags never contain one) for string_to_array($n, ','). */
const char *sims_tags_csv(arena_t *a, char **tags, size_t n);

/* ---- store.c: list pages (tokens from onceiot/pagetoken.h) ---- */

/* How a list's rows page: its query asks for size + 1 rows, and the extra one
 * says that a next page exists. */
typedef struct sims_page {
    int size;             /* rows a page answers with */
    uint64_t hash;        /* pagetoken_hash of the list's filters and order */
    const char *key_col;  /* column of the last row that is the next token's key */
    const char *last_col; /* column that is its tie-breaker; NULL: none ("") */
    /* How stmt runs: db_exec_custom (planned for each call), db_exec_generic
     * (planned once), or NULL: sims_exec (prepared, PostgreSQL's choice). */
    int (*exec)(db_conn_t *conn, const db_stmt_t *stmt, const char *const *params, PGresult **res);
} sims_page_t;
/* Runs a list's stmt (status set on failure). *n gets the rows to answer
 * with (at most page->size) and, when more came, *next the token of the next
 * page; otherwise *next is left alone. *res is the caller's to PQclear. */
int sims_page_exec(sims_ctx_t *cx, const db_stmt_t *stmt, const char *const *params,
                   const sims_page_t *page, PGresult **res, int *n, char **next) ONCEIOT_MUSTCHECK;

/* ---- watch.c: one LISTEN connection shared by every WatchEvents stream ---- */

typedef struct sims_watch sims_watch_t;
typedef struct sims_sub sims_sub_t;

/* Starts the listener thread on its own connection to url. */
int sims_watch_start(const char *url, const char *schema, sims_watch_t **out) ONCEIOT_MUSTCHECK;
void sims_watch_stop(sims_watch_t *w);
/* Subscribes to the events of org (NULL: all). The subscription takes
 * effect once a sync payload, sent with pg_notify on the "sims_events"
 * channel, reaches the listener: from then on the subscriber gets every
 * event committed after that notification, none committed before. */
sims_sub_t *sims_watch_subscribe(sims_watch_t *w, const char *org);
/* The sync payload to send now (copied into a), or NULL when there is none
 * to send: the subscription is active, no connection is listening yet, or
 * the payload already went to the connection listening now. Call it until
 * the subscription is active: a sync sent to a connection that was then lost
 * is due again once the listener has reconnected. */
const char *sims_watch_sync_due(sims_watch_t *w, sims_sub_t *s, arena_t *a);
/* Waits up to timeout_ms for the subscription to take effect; false if it
 * has not (the listener is not connected). */
bool sims_watch_active(sims_watch_t *w, sims_sub_t *s, int timeout_ms);
void sims_watch_unsubscribe(sims_watch_t *w, sims_sub_t *s);
/* Waits up to timeout_ms for the next event notice: returns 1 with *id and
 * *occurred_us (text, copied into a), 0 on timeout, ERR_RESOURCE_EXHAUSTED
 * when the subscriber fell too far behind and lost notices, ERR_UNAVAILABLE
 * once the notices queued before the listener lost its connection are out
 * (those sent while it reconnected are lost). */
int sims_watch_next(sims_watch_t *w, sims_sub_t *s, int timeout_ms, arena_t *a, const char **id,
                    const char **occurred_us);

/* The service state handed to handlers through svc_state. */
typedef struct sims_state {
    sims_watch_t *watch;
} sims_state_t;

/* Handlers, one group per file. */
int sims_get_sim(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int sims_list_sims(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int sims_create_sim(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int sims_import_sims(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int sims_update_sim(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int sims_bulk_update_sims(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int sims_activate_sim(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int sims_suspend_sim(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int sims_resume_sim(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int sims_terminate_sim(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int sims_expire_sim(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int sims_get_quota(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int sims_top_up_quota(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int sims_set_quota_policy(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int sims_apply_usage(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int sims_resolve_sims(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int sims_send_sms(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int sims_get_sms(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int sims_list_sms(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int sims_cancel_sms(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int sims_receive_sms(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int sims_update_sms_status(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int sims_list_events(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int sims_record_events(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int sims_watch_events(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int sims_apply_connectivity(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);

#endif
