/* Calls to the sims service: ICCID resolution for orders and shipments, and
 * the fulfilment dispatcher's TopUpQuota and ImportSims.
 *
 * Each delivery runs in three steps, none holding a connection during the
 * call to sims:
 *   1. lock the order; a cancelled, failed or completed order (or a
 *      fulfilled item) is done; else mark the item dispatched (after which
 *      CancelOrder refuses) and the order PROCESSING; commit;
 *   2. call sims with the item's request id: a delivery repeated after a
 *      crash anywhere is answered from sims' request-id record;
 *   3. mark the item fulfilled (completing the order when it was the last),
 *      or the order FAILED on a permanent refusal; commit. */
#include "commerce.h"
#include "onceiot/log.h"

#include <stdlib.h>
#include <string.h>

#define SIMS_PATH          "/onceiot.sims.v1.SimService/"
#define DELIVER_TIMEOUT_MS 10000 /* well inside the outbox lease */
#define CONN_TIMEOUT_MS    5000

int commerce_sims_call(const commerce_state_t *st, rpc_call_t *parent, int64_t timeout_ms,
                       const char *method, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *resp_desc, arena_t *a,
                       ProtobufCMessage **resp, rpc_status_t *status)
{
    const char *path = arena_printf(a, SIMS_PATH "%s", method);
    rpc_md_t *md = arena_alloc(a, 2 * sizeof(*md));
    /* Checked at start (commerce_init): the key for sims is there. */
    if (svc_sign_as_service(st->svc, "sims", path, a, md) < 0)
        abort();
    rpc_call_opts_t o = {
        .timeout_ms = parent ? 0 : timeout_ms, .parent = parent, .metadata = md, .n_metadata = 2};
    return rpc_unary(st->sims, path, req, resp_desc, a, &o, resp, status);
}

/* ResolveSims of n ICCIDs into orgs (0: unknown); status of the call in *s. */
static int commerce__resolve(const commerce_state_t *st, rpc_call_t *parent, arena_t *a,
                             const char *const *iccids, size_t n, int64_t *orgs, rpc_status_t *s)
{
    Onceiot__Sims__V1__ResolveSimsRequest req = ONCEIOT__SIMS__V1__RESOLVE_SIMS_REQUEST__INIT;
    req.iccids = (char **)iccids;
    req.n_iccids = n;
    ProtobufCMessage *resp = NULL;
    int rc = commerce_sims_call(st, parent, DELIVER_TIMEOUT_MS, "ResolveSims", &req.base,
                                &onceiot__sims__v1__resolve_sims_response__descriptor, a, &resp, s);
    if (rc < 0)
        return rc;
    const Onceiot__Sims__V1__ResolveSimsResponse *r = (const void *)resp;
    for (size_t i = 0; i < n; i++) {
        orgs[i] = 0;
        for (size_t k = 0; k < r->n_sims; k++)
            if (strcmp(r->sims[k]->iccid, iccids[i]) == 0)
                orgs[i] = r->sims[k]->organization_id;
    }
    return 0;
}

int commerce_resolve_or_status(commerce_ctx_t *cx, const char *const *iccids, size_t n,
                               int64_t *orgs)
{
    rpc_status_t s;
    if (commerce__resolve(cx->st, cx->call, cx->a, iccids, n, orgs, &s) < 0) {
        log_msg(LOG_WARN, "resolve_failed", "sims ResolveSims: %s %s", err_grpc_name(s.code),
                s.message);
        return rpc_fail(cx->call, ERR_UNAVAILABLE, "cannot check ICCIDs now (sims: %s); retry",
                        err_grpc_name(s.code));
    }
    return 0;
}

/* Codes after which the same request may succeed later. */
static bool commerce__transient(grpc_status_code c)
{
    return c == GRPC_STATUS_UNAVAILABLE || c == GRPC_STATUS_DEADLINE_EXCEEDED ||
           c == GRPC_STATUS_ABORTED || c == GRPC_STATUS_RESOURCE_EXHAUSTED ||
           c == GRPC_STATUS_CANCELLED || c == GRPC_STATUS_INTERNAL || c == GRPC_STATUS_UNKNOWN ||
           c == GRPC_STATUS_UNAUTHENTICATED; /* a key rotation in progress */
}

/* Step 1 of a top-up: the order of the item keyed key, locked. */
static const db_stmt_t claim_item = {
    "commerce_claim_item",
    "SELECT o.seq, o.status, i.fulfilled_at IS NOT NULL AS fulfilled FROM order_items i "
    "JOIN orders o ON o.seq = i.order_seq WHERE i.fulfilment_key = $1 FOR UPDATE OF o",
    1};
static const db_stmt_t dispatch_item = {
    "commerce_dispatch_item",
    "UPDATE order_items SET dispatched_at = coalesce(dispatched_at, now()) "
    "WHERE fulfilment_key = $1",
    1};
static const db_stmt_t order_processing = {
    "commerce_order_processing",
    "UPDATE orders SET status = 'processing', processing_at = now() "
    "WHERE seq = $1 AND status = 'pending'",
    1};
static const db_stmt_t fulfil_item = {
    "commerce_fulfil_item",
    "UPDATE order_items SET fulfilled_at = coalesce(fulfilled_at, now()) "
    "WHERE fulfilment_key = $1",
    1};
static const db_stmt_t fulfil_sims = {
    "commerce_fulfil_sims",
    "UPDATE order_items SET fulfilled_at = now() WHERE order_seq = $1 AND category = 'sim_card' "
    "AND fulfilled_at IS NULL",
    1};
static const db_stmt_t fail_order = {
    "commerce_fail_order",
    "UPDATE orders SET status = 'failed', failed_at = now(), failure_reason = $2 "
    "WHERE seq = $1 AND status IN ('pending', 'processing')",
    2};
static const db_stmt_t claim_order = {
    "commerce_claim_order", "SELECT o.seq, o.status FROM orders o WHERE o.id = $1::uuid FOR UPDATE",
    1};

/* A delivery's database steps on one pooled connection. */
typedef struct deliver {
    const commerce_state_t *st;
    db_conn_t *conn;
    const char **why;
    arena_t *a;
} deliver_t;

static int deliver__acquire(deliver_t *d)
{
    int rc = db_pool_acquire(svc_db(d->st->svc), CONN_TIMEOUT_MS, &d->conn);
    if (rc < 0)
        *d->why = "no database connection";
    else
        db_set_scope(d->conn, 0, true); /* fulfilment: the order's organization, any */
    return rc;
}

static void deliver__release(deliver_t *d)
{
    if (d->conn)
        db_pool_release(svc_db(d->st->svc), d->conn);
    d->conn = NULL;
}

/* Runs stmt with params on d's connection; on failure records why. */
static int deliver__exec(deliver_t *d, const db_stmt_t *stmt, const char *const *params,
                         PGresult **res)
{
    int rc = db_exec(d->conn, stmt, params, res);
    if (rc < 0)
        *d->why = arena_printf(d->a, "%s: %s", stmt->name, db_errmsg(d->conn));
    return rc;
}

static int deliver__begin(deliver_t *d)
{
    int rc = deliver__acquire(d);
    if (rc == 0 && (rc = db_begin(d->conn)) < 0)
        *d->why = arena_printf(d->a, "BEGIN: %s", db_errmsg(d->conn));
    return rc;
}

static int deliver__commit(deliver_t *d)
{
    int rc = db_commit(d->conn);
    if (rc < 0)
        *d->why = arena_printf(d->a, "COMMIT: %s", db_errmsg(d->conn));
    deliver__release(d);
    return rc;
}

/* Step 3 after a permanent refusal: the order seq is FAILED with reason. */
static outbox_verdict_t deliver__fail(deliver_t *d, const char *seq, const char *reason)
{
    const char *params[] = {seq, reason};
    if (deliver__begin(d) < 0 || deliver__exec(d, &fail_order, params, NULL) < 0 ||
        deliver__commit(d) < 0) {
        deliver__release(d);
        return OUTBOX_RETRY;
    }
    log_msg(LOG_ERROR, "order_failed", "order %s: %s", seq, reason);
    *d->why = reason;
    return OUTBOX_FAILED;
}

/* Step 1 of a top-up. Returns 1 when the item is to be sent, 0 when there is
 * nothing to do, negative on a database error; *seq gets the order. */
static int deliver__claim_top_up(deliver_t *d, const char *key, const char **seq)
{
    PGresult *res = NULL;
    const char *params[] = {key};
    int rc = deliver__begin(d);
    if (rc < 0 || (rc = deliver__exec(d, &claim_item, params, &res)) < 0)
        goto out;
    if (rc == 0) { /* no such item (the order is gone): nothing to send */
        rc = deliver__commit(d);
        goto out;
    }
    *seq = arena_strdup(d->a, db_get(res, 0, "seq"));
    const char *status = db_get(res, 0, "status");
    if (db_get_bool(res, 0, "fulfilled") ||
        !(strcmp(status, "pending") == 0 || strcmp(status, "processing") == 0)) {
        rc = deliver__commit(d);
        goto out;
    }
    const char *seq_params[] = {*seq};
    if ((rc = deliver__exec(d, &dispatch_item, params, NULL)) < 0 ||
        (rc = deliver__exec(d, &order_processing, seq_params, NULL)) < 0 ||
        (rc = deliver__commit(d)) < 0)
        goto out;
    rc = 1;
out:
    PQclear(res);
    deliver__release(d);
    return rc;
}

outbox_verdict_t commerce_deliver_top_up(void *ctx, const outbox_msg_t *msg, arena_t *a,
                                         const char **why)
{
    deliver_t d = {.st = ctx, .why = why, .a = a};
    Onceiot__Sims__V1__TopUpQuotaRequest *req =
        onceiot__sims__v1__top_up_quota_request__unpack(arena_allocator(a), msg->len, msg->payload);
    if (!req) {
        *why = "the payload is not a TopUpQuotaRequest";
        return OUTBOX_FAILED;
    }
    const char *seq = NULL;
    int rc = deliver__claim_top_up(&d, msg->key, &seq);
    if (rc <= 0)
        return rc < 0 ? OUTBOX_RETRY : OUTBOX_DONE;
    ProtobufCMessage *resp = NULL;
    rpc_status_t s;
    rc = commerce_sims_call(d.st, NULL, DELIVER_TIMEOUT_MS, "TopUpQuota", &req->base,
                            &onceiot__sims__v1__quota__descriptor, a, &resp, &s);
    if (rc < 0) {
        const char *reason = arena_printf(a, "sims TopUpQuota %s: %s %s", req->iccid,
                                          err_grpc_name(s.code), s.message);
        if (commerce__transient(s.code)) {
            *why = reason;
            return OUTBOX_RETRY;
        }
        return deliver__fail(&d, seq, reason);
    }
    const char *key_params[] = {msg->key};
    if (deliver__begin(&d) < 0 || deliver__exec(&d, &fulfil_item, key_params, NULL) < 0 ||
        commerce_complete_if_done(d.conn, seq) < 0 || deliver__commit(&d) < 0) {
        deliver__release(&d);
        return OUTBOX_RETRY; /* sent again: sims answers from its request-id record */
    }
    log_rec_t r;
    log_begin(&r, LOG_INFO, "top_up_fulfilled");
    log_str(&r, "key", msg->key);
    log_int(&r, "volume", (long long)req->volume);
    log_int(&r, "lag_ms", msg->age_ms);
    log_end(&r);
    return OUTBOX_DONE;
}

/* After ALREADY_EXISTS from ImportSims: true when every ICCID is now a SIM
 * of org (an earlier delivery of this shipment registered them). */
static bool deliver__registered_to(deliver_t *d, const Onceiot__Sims__V1__ImportSimsRequest *req,
                                   int64_t org)
{
    const char **iccids = arena_alloc(d->a, (req->n_sims ? req->n_sims : 1) * sizeof(char *));
    for (size_t i = 0; i < req->n_sims; i++)
        iccids[i] = req->sims[i]->iccid;
    int64_t *orgs = arena_alloc(d->a, (req->n_sims ? req->n_sims : 1) * sizeof(*orgs));
    rpc_status_t s;
    if (commerce__resolve(d->st, NULL, d->a, iccids, req->n_sims, orgs, &s) < 0)
        return false;
    for (size_t i = 0; i < req->n_sims; i++)
        if (orgs[i] != org)
            return false;
    return true;
}

outbox_verdict_t commerce_deliver_register(void *ctx, const outbox_msg_t *msg, arena_t *a,
                                           const char **why)
{
    deliver_t d = {.st = ctx, .why = why, .a = a};
    Onceiot__Sims__V1__ImportSimsRequest *req =
        onceiot__sims__v1__import_sims_request__unpack(arena_allocator(a), msg->len, msg->payload);
    /* The key is "order-<uuid>-ship". */
    if (!req || req->n_sims == 0 || strlen(msg->key) != 6 + 36 + 5) {
        *why = "the payload is not a shipment's ImportSimsRequest";
        return OUTBOX_FAILED;
    }
    const char *id = arena_strndup(a, msg->key + 6, 36);
    const char *params[] = {id};
    PGresult *res = NULL;
    if (deliver__begin(&d) < 0 || deliver__exec(&d, &claim_order, params, &res) < 0) {
        deliver__release(&d);
        return OUTBOX_RETRY;
    }
    bool open = PQntuples(res) == 1 && strcmp(db_get(res, 0, "status"), "processing") == 0;
    const char *seq = open ? arena_strdup(a, db_get(res, 0, "seq")) : NULL;
    PQclear(res);
    if (deliver__commit(&d) < 0)
        return OUTBOX_RETRY;
    if (!open)
        return OUTBOX_DONE;
    ProtobufCMessage *resp = NULL;
    rpc_status_t s;
    int rc = commerce_sims_call(d.st, NULL, DELIVER_TIMEOUT_MS * 3, "ImportSims", &req->base,
                                &onceiot__sims__v1__import_sims_response__descriptor, a, &resp, &s);
    if (rc < 0 && s.code == GRPC_STATUS_ALREADY_EXISTS &&
        deliver__registered_to(&d, req, req->sims[0]->organization_id))
        rc = 0;
    if (rc < 0) {
        const char *reason =
            arena_printf(a, "sims ImportSims: %s %s", err_grpc_name(s.code), s.message);
        if (commerce__transient(s.code)) {
            *why = reason;
            return OUTBOX_RETRY;
        }
        return deliver__fail(&d, seq, reason);
    }
    const char *seq_params[] = {seq};
    if (deliver__begin(&d) < 0 || deliver__exec(&d, &fulfil_sims, seq_params, NULL) < 0 ||
        commerce_complete_if_done(d.conn, seq) < 0 || deliver__commit(&d) < 0) {
        deliver__release(&d);
        return OUTBOX_RETRY;
    }
    log_msg(LOG_INFO, "sims_registered", "order %s: %zu SIM cards", id, req->n_sims);
    return OUTBOX_DONE;
}
