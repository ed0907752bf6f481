/* The common main of every onceiot binary.
 *
 * svc_main reads the configuration (see the README's table), sets up logging,
 * opens the database pool and applies migrations (for services with a schema:
 * the runtime modules' tables, outbox and request_ids, then the service's
 * own files),
 * starts the gRPC server with the service's handlers plus health and
 * reflection, keeps health in step with the database, and on SIGTERM/SIGINT
 * drains and returns 0. "<binary> migrate" only applies migrations and exits.
 *
 * A service folder's main.c fills an svc_def_t and calls svc_main. */
#ifndef ONCEIOT_SVC_H
#define ONCEIOT_SVC_H

#include "onceiot/db.h"
#include "onceiot/migrate.h"
#include "onceiot/principal.h"
#include "onceiot/rpc.h"
#include <stdbool.h>

typedef struct svc svc_t;

/* A subcommand of a service binary besides serve and migrate (usage's
 * "compact"): run after the configuration, migrations and pool, instead of
 * serving; its return value is the exit status. */
typedef struct svc_command {
    const char *name;
    const char *help; /* one line for the usage text */
    int (*run)(svc_t *svc);
} svc_command_t;

typedef struct svc_def {
    const char *name;                   /* "sims": log name, schema, schema/<name>/ */
    const char *default_listen;         /* "127.0.0.1:50062" */
    bool uses_db;                       /* has a schema and a pool */
    bool authenticated;                 /* requires ONCEIOT_PRINCIPAL_KEY (every product service) */
    const rpc_service_impl_t *services; /* served in addition to health and reflection */
    size_t n_services;
    /* Optional: runs after the pool and migrations, before serving; returns 0
     * or an ERR_* code to abort the start. */
    int (*init)(svc_t *svc);
    void (*fini)(svc_t *svc); /* optional: after the drain */
    /* Optional: the service's periodic upkeep (pruning what grows), run on
     * conn every ONCEIOT_UPKEEP_INTERVAL_S (default hourly) after the
     * runtime's own (expired request ids); returns 0 or an ERR_* code. */
    int (*upkeep)(svc_t *svc, db_conn_t *conn);
    const svc_command_t *commands; /* optional */
    size_t n_commands;
} svc_def_t;

int svc_main(int argc, char **argv, const svc_def_t *def);

/* The running service, as handlers see it through rpc_call_ctx. */
db_pool_t *svc_db(const svc_t *svc);
rpc_server_t *svc_server(const svc_t *svc);
const svc_def_t *svc_def(const svc_t *svc);
/* Service-specific state set by init. */
void svc_set_state(svc_t *svc, void *state);
void *svc_state(const svc_t *svc);

/* This service's own principal secret (NULL unless ONCEIOT_PRINCIPAL_KEY is
 * set): every caller's key is derived from it (principal.h). */
const principal_key_t *svc_principal_key(const svc_t *svc);
/* The key this process signs principals with for callee ("sims"), from
 * ONCEIOT_PRINCIPAL_SIGNING_KEYS, or NULL. */
const principal_key_t *svc_signing_key(const svc_t *svc, const char *callee);
/* Signs this service's own principal ("service:<name>", issuer <name>,
 * superuser) for method of callee into md. Returns 0, or ERR_CONFIG when
 * there is no signing key for callee. */
int svc_sign_as_service(const svc_t *svc, const char *callee, const char *method, arena_t *a,
                        rpc_md_t md[2]) ONCEIOT_MUSTCHECK;
/* Opens *out, a channel to callee at addr (read from the variable addr_var)
 * for calls signed with svc_sign_as_service. ERR_CONFIG, logged naming the
 * variable, when ONCEIOT_PRINCIPAL_SIGNING_KEYS has no key for callee or addr
 * is unusable. */
int svc_open_callee(const svc_t *svc, const char *callee, const char *addr_var, const char *addr,
                    struct rpc_channel **out) ONCEIOT_MUSTCHECK;
/* The caller's verified principal, or NULL with the status set:
 * UNAUTHENTICATED when the call carries no principal or a bad one,
 * PERMISSION_DENIED when its issuer may not call this method (a service not
 * among the method's declared callers, or the gateway on an internal
 * method). */
const principal_t *svc_principal_or_status(rpc_call_t *call);
/* For public methods: a call may come without a principal (*out NULL, 0
 * returned), but one it carries must verify (else UNAUTHENTICATED is set and
 * returned). */
int svc_principal_optional_or_status(rpc_call_t *call, const principal_t **out) ONCEIOT_MUSTCHECK;

/* Returns a database connection for this call, taken on first use and given
 * back when the handler returns. It works for the call's verified principal
 * (svc_principal_or_status, before or after): its organization and
 * superuser flag are the row-level security scope (db_set_scope), so a
 * query missing its organization filter still sees only that organization;
 * a call without a verified principal sees no organization's rows. Its
 * statement timeout is bounded by the call's remaining deadline. On failure the call's status is
 * already set (UNAVAILABLE, RESOURCE_EXHAUSTED or DEADLINE_EXCEEDED) and NULL is returned. */
db_conn_t *svc_db_or_status(rpc_call_t *call);
/* The call's connection scoped to every organization, for what must read
 * across them before any organization is known: internal methods of a caller
 * that is not a superuser (identity's Authenticate and GetVerificationKeys
 * for the gateway) and Login's lookup by username. Only after the caller is
 * verified (or, for Login, on purpose); NULL with the status set on
 * failure. */
db_conn_t *svc_db_system_or_status(rpc_call_t *call);
/* Scopes conn, taken from the pool by the handler itself (a stream that
 * holds no connection between messages), to the call's principal as
 * svc_db_or_status does; no principal: no scope. */
void svc_db_scope(rpc_call_t *call, db_conn_t *conn);
/* Sets the call's status for a failed statement (rc, an ERR_* code from
 * db_*) in the service's own words; PostgreSQL's text, SQLSTATE and
 * constraint go to the log only. conn may be NULL. Returns rc. */
int svc_db_fail(rpc_call_t *call, db_conn_t *conn, int rc);

/* ListAuditRecords (proto/common/v1/audit.proto), the same handler in every
 * service's method table: the service's audit records (audit.h), newest
 * first; an admin's organization's, or (superusers) anyone's. */
int svc_list_audit_records(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp);
/* Runs a statement on the call's connection; on failure sets the call's
 * status from the database error and returns the ERR_* code. */
int svc_exec_or_status(rpc_call_t *call, const db_stmt_t *stmt, const char *const *params,
                       PGresult **res) ONCEIOT_MUSTCHECK;
/* The same with text or binary values (db_exec_values). */
int svc_exec_values_or_status(rpc_call_t *call, const db_stmt_t *stmt, const db_value_t *values,
                              PGresult **res) ONCEIOT_MUSTCHECK;
/* BEGIN / COMMIT on the call's connection, status set on failure. A
 * transaction still open when the handler returns is rolled back as the
 * connection goes back to the pool, so failure paths need no ROLLBACK. */
int svc_begin_or_status(rpc_call_t *call) ONCEIOT_MUSTCHECK;
int svc_commit_or_status(rpc_call_t *call) ONCEIOT_MUSTCHECK;

#endif
