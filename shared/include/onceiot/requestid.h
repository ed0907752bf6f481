/* Request ids (AIP-155): a retried mutation returns its first answer.
 *
 * A non-idempotent method takes an optional `string request_id`. The handler
 * claims the id inside its own transaction, before it changes anything:
 *
 *   requestid_t rq;
 *   ProtobufCMessage *first = NULL;
 *   rc = requestid_claim_or_status(call, conn, r->request_id, req, &rq, &first);
 *   if (rc < 0) return rc;              // status set (bad id, id reused, db)
 *   if (rc == REQUESTID_REPLAY) { db_rollback(conn); *resp = first; return 0; }
 *   ... the change ...
 *   rc = requestid_record_or_status(call, conn, &rq, out);   // before COMMIT
 *
 * The claim is an INSERT into the schema's request_ids table keyed by (the
 * caller, the method, the id), so a concurrent retry waits on the first
 * attempt's row lock and then sees its answer; an attempt that rolls back
 * leaves no claim. The same id with a different request (a BLAKE2b hash of
 * the packed request) is INVALID_ARGUMENT and changes nothing. An empty id
 * claims nothing (the call is not deduplicated).
 *
 * The caller is the principal's user ("user:<id>") or, for a service, its
 * credential ("service:commerce"): two users never share ids. Answers are
 * stored sealed (XChaCha20-Poly1305, key derived from the service's
 * principal secret), since some hold secrets shown once (CreateApiKey).
 * Ids are kept REQUESTID_KEEP_HOURS and then pruned by the runtime
 * (svc.c, hourly); a retry after that is a new request.
 *
 * The table's DDL belongs to this module and is applied by the runtime in
 * every service schema (svc.c). */
#ifndef ONCEIOT_REQUESTID_H
#define ONCEIOT_REQUESTID_H

#include "onceiot/db.h"
#include "onceiot/migrate.h"
#include "onceiot/rpc.h"

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>

#define REQUESTID_KEEP_HOURS   24
#define REQUESTID_MAX          128 /* characters of [A-Za-z0-9._:-] */
#define REQUESTID_NEW          0
#define REQUESTID_REPLAY       1
#define REQUESTID_N_MIGRATIONS 1
extern const migrate_embedded_t requestid_migrations[REQUESTID_N_MIGRATIONS];

/* A claimed id, between claim and record. */
typedef struct requestid {
    bool active;        /* an id was given and claimed in this transaction */
    const char *caller; /* in the call's arena */
    const char *method;
    const char *id;
} requestid_t;

/* Claims request_id (may be "" or NULL: nothing is claimed) for this call on
 * conn, inside the transaction the change will run in. Returns
 * REQUESTID_NEW (go on, then requestid_record_or_status before commit),
 * REQUESTID_REPLAY with *first set to the first attempt's answer (in the
 * call's arena), or a negative ERR_* code with the call's status set:
 * INVALID_ARGUMENT for a malformed id or one used with a different request,
 * a database error otherwise. Needs the call's verified principal. */
int requestid_claim_or_status(rpc_call_t *call, db_conn_t *conn, const char *request_id,
                              const ProtobufCMessage *req, requestid_t *rq,
                              ProtobufCMessage **first) ONCEIOT_MUSTCHECK;

/* Stores resp as the answer of the claimed id (nothing when rq is not
 * active). Returns 0 or a negative ERR_* code with the status set. */
int requestid_record_or_status(rpc_call_t *call, db_conn_t *conn, const requestid_t *rq,
                               const ProtobufCMessage *resp) ONCEIOT_MUSTCHECK;

/* The usual pair around a change: BEGIN on conn then the claim, and the
 * record then COMMIT (statuses set on failure, as above). */
int requestid_begin_or_status(rpc_call_t *call, db_conn_t *conn, const char *request_id,
                              const ProtobufCMessage *req, requestid_t *rq,
                              ProtobufCMessage **first) ONCEIOT_MUSTCHECK;
int requestid_commit_or_status(rpc_call_t *call, db_conn_t *conn, const requestid_t *rq,
                               const ProtobufCMessage *resp) ONCEIOT_MUSTCHECK;

/* Deletes ids older than keep_hours on conn (outside a transaction).
 * Returns the number deleted or a negative ERR_* code. */
int requestid_prune(db_conn_t *conn, int keep_hours) ONCEIOT_MUSTCHECK;

#endif
