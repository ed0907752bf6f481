/* The audit trail: one append-only, hash-chained table per service schema.
 *
 * A record says when (the database clock), who (user, organization,
 * credential: "api_key:<id>", "token" or "service:<name>"), what (method,
 * resource type and id, a short summary that never holds a secret), and
 * where from (request id, trace id, peer). It is written inside the
 * transaction of the change it describes, so there is never one without the
 * other.
 *
 * Chain: an insert trigger takes the one-row chain head (audit_chain) FOR
 * UPDATE, numbers the record seq = head + 1, sets prev_hash to the head's
 * hash and hash = sha256(prev_hash || the record's canonical text), and
 * moves the head, all in the writer's transaction. Concurrent writers of a
 * service therefore serialise on the head row until they commit; a rolled
 * back writer leaves no gap. audit_verify walks the chain in seq order and
 * finds a removed record (a gap, a broken link, a head ahead of the last
 * record) or an altered one (a hash that does not match its content).
 *
 * Immutable for the service: UPDATE, DELETE and TRUNCATE are revoked from
 * the owning role and refused by triggers on the table and each partition.
 * (The owner could grant them back or drop the triggers; the chain is what
 * detects that.)
 *
 * Partitioned by month on `at` (native range partitioning; partitions for
 * the current and the next two months are made by the migration and by
 * audit_upkeep, run with the runtime's upkeep; a DEFAULT partition catches
 * anything else). Retention is long (AUDIT_KEEP_MONTHS): audit_upkeep drops
 * whole months past it and keeps the seq and hash of the newest record
 * dropped as the chain's anchor (audit_anchor, which only moves forward).
 *
 * The table's DDL belongs to this module and is applied by the runtime in
 * every service schema (svc.c). */
#ifndef ONCEIOT_AUDIT_H
#define ONCEIOT_AUDIT_H

#include "onceiot/db.h"
#include "onceiot/migrate.h"

#include <stdint.h>

#define AUDIT_N_MIGRATIONS 5
#define AUDIT_KEEP_MONTHS  84
#define AUDIT_SUMMARY_MAX  1000 /* characters */
extern const migrate_embedded_t audit_migrations[AUDIT_N_MIGRATIONS];

typedef struct audit_record {
    int64_t user_id;           /* 0: none (a service) */
    int64_t organization_id;   /* 0: none */
    const char *credential;    /* "api_key:7", "token", "service:usage"; may be NULL */
    const char *method;        /* "/onceiot.sims.v1.SimService/SuspendSim" */
    const char *resource_type; /* "sim"; may be NULL */
    const char *resource_id;   /* "8988303000000000001"; may be NULL */
    const char *request_id;    /* may be NULL */
    const char *trace_id;      /* 32 hex digits or NULL */
    const char *peer;          /* may be NULL */
    const char *summary;       /* what changed, never a secret; may be NULL */
} audit_record_t;

/* Writes r inside the caller's open transaction on conn. Returns the
 * record's seq (> 0) or a negative ERR_* code (db_errmsg has the message). */
int64_t audit_write(db_conn_t *conn, const audit_record_t *r) ONCEIOT_MUSTCHECK;

typedef struct audit_verdict {
    int64_t checked; /* records walked */
    int64_t bad_seq; /* the first record found wrong (or missing); 0 when intact */
    char why[128];   /* what was wrong; "" when intact */
} audit_verdict_t;

/* Walks the chain of conn's schema (outside a transaction or inside one),
 * with conn scoped to every organization (db_set_scope) from then on.
 * Returns 0 when intact, 1 when broken (out says where and why), or a
 * negative ERR_* code. */
int audit_verify(db_conn_t *conn, audit_verdict_t *out) ONCEIOT_MUSTCHECK;

/* Appends up to batch records that tracked changes left in audit_pending to
 * the chain, oldest first (the runtime calls it every health interval);
 * conn is scoped to every organization from then on. Returns how many, or
 * a negative ERR_* code. */
int audit_chain_pending(db_conn_t *conn, int batch) ONCEIOT_MUSTCHECK;

/* Makes the partitions of the current and the next two months, and drops
 * the months past AUDIT_KEEP_MONTHS (moving the anchor audit_verify starts
 * from). Returns the number of months dropped or a negative ERR_* code. */
int audit_upkeep(db_conn_t *conn) ONCEIOT_MUSTCHECK;

#endif
