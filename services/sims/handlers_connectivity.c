/* ApplyConnectivity: the usage service's connectivity transitions become
 * connectivity_lost / connectivity_restored events, and the latest network
 * becomes the SIM's current_rat, current_country and current_operator.
 *
 * One batch is one transaction: the batch id is claimed first (a replay
 * finds it and changes nothing), then each SIM is locked in ICCID order (so
 * concurrent batches never deadlock) and its transitions are taken in seq
 * order against the SIM's connectivity_seq: already recorded ones are
 * skipped, the next one is recorded, and one that comes before its
 * predecessor refuses the whole batch with ABORTED so the usage service
 * delivers the earlier batch first. The network is written only when its
 * sample is newer than the one shown. */
#include "sims.h"

#include <stdlib.h>
#include <string.h>

#define CONN_MAX 10000

static const db_stmt_t claim_conn_batch = {
    "sims_claim_conn_batch",
    "INSERT INTO processed_connectivity_batches (batch_id, item_count) VALUES ($1, $2) "
    "ON CONFLICT DO NOTHING",
    2};

static const db_stmt_t conn_batch_events = {
    "sims_conn_batch_events",
    "SELECT events FROM processed_connectivity_batches WHERE batch_id = $1", 1};

static const db_stmt_t store_conn_events = {
    "sims_store_conn_events",
    "UPDATE processed_connectivity_batches SET events = $2 WHERE batch_id = $1", 2};

static const db_stmt_t lock_conn_sim = {
    "sims_lock_conn_sim",
    "SELECT id, organization_id, connectivity_seq FROM sims WHERE iccid = $1 FOR UPDATE", 1};

/* $3..$6: the network, applied only when newer than the shown one. */
static const db_stmt_t update_conn_sim = {
    "sims_update_conn_sim",
    "UPDATE sims SET connectivity_seq = $2, "
    "current_rat = CASE WHEN $3::bigint IS NOT NULL AND (network_observed_at IS NULL OR "
    "network_observed_at < 'epoch'::timestamptz + $3 * interval '1 microsecond') THEN $4 ELSE "
    "current_rat END, "
    "current_country = CASE WHEN $3::bigint IS NOT NULL AND (network_observed_at IS NULL OR "
    "network_observed_at < 'epoch'::timestamptz + $3 * interval '1 microsecond') THEN $5 ELSE "
    "current_country END, "
    "current_operator = CASE WHEN $3::bigint IS NOT NULL AND (network_observed_at IS NULL OR "
    "network_observed_at < 'epoch'::timestamptz + $3 * interval '1 microsecond') THEN $6 ELSE "
    "current_operator END, "
    "network_observed_at = CASE WHEN $3::bigint IS NOT NULL AND (network_observed_at IS NULL OR "
    "network_observed_at < 'epoch'::timestamptz + $3 * interval '1 microsecond') THEN "
    "'epoch'::timestamptz + $3 * interval '1 microsecond' ELSE network_observed_at END "
    "WHERE id = $1",
    6};

static int sims__cmp_conn_item(const void *x, const void *y)
{
    const Onceiot__Sims__V1__ConnectivityItem *a = *(Onceiot__Sims__V1__ConnectivityItem *const *)x;
    const Onceiot__Sims__V1__ConnectivityItem *b = *(Onceiot__Sims__V1__ConnectivityItem *const *)y;
    return strcmp(a->iccid, b->iccid);
}

static int64_t sims__us(const Google__Protobuf__Timestamp *ts)
{
    return (int64_t)ts->seconds * 1000000 + ts->nanos / 1000;
}

/* s as a JSON string literal (quotes, backslashes and control characters
 * escaped), in a. */
static const char *sims__json_str(arena_t *a, const char *s)
{
    size_t n = strlen(s);
    char *out = arena_alloc(a, 6 * n + 3), *p = out;
    *p++ = '"';
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\') {
            *p++ = '\\';
            *p++ = (char)*c;
        } else if (*c < 0x20) {
            static const char hex[] = "0123456789abcdef";
            memcpy(p, "\\u00", 4);
            p[4] = hex[*c >> 4];
            p[5] = hex[*c & 15];
            p += 6;
        } else {
            *p++ = (char)*c;
        }
    }
    *p++ = '"';
    *p = '\0';
    return out;
}

/* Records transition t of the locked SIM (id, org) as an event. */
static int sims__record_transition(sims_ctx_t *cx, const char *id, const char *org,
                                   const char *iccid,
                                   const Onceiot__Sims__V1__ConnectivityTransition *t)
{
    arena_t *a = cx->a;
    const char *data = arena_printf(
        a, "{\"seq\": %lld, \"rat\": %s, \"country\": %s, \"operator\": %s, \"cell_id\": %s}",
        (long long)t->seq, sims__json_str(a, t->rat), sims__json_str(a, t->country),
        sims__json_str(a, t->operator_name), sims__json_str(a, t->cell_id));
    sims_event_in_t ev = {
        .sim_id = id,
        .org = org,
        .iccid = iccid,
        .type = t->connected ? "connectivity_restored" : "connectivity_lost",
        .category = "connectivity",
        .severity = t->connected ? "info" : "warning",
        .description = t->connected ? "connectivity restored" : "connectivity lost",
        .data_json = data,
        .occurred_us = sims_i64(cx, sims__us(t->occurred_at)),
    };
    return sims_record_event(cx, &ev);
}

/* Field checks of the request; violations recorded on the call. */
static void sims__check_connectivity(sims_ctx_t *cx,
                                     const Onceiot__Sims__V1__ApplyConnectivityRequest *r)
{
    rpc_call_t *call = cx->call;
    size_t blen = strlen(r->batch_id);
    if (blen == 0 || blen > 128)
        rpc_violation(call, "batch_id", "must be 1 to 128 characters");
    if (r->n_items == 0 || r->n_items > CONN_MAX) {
        rpc_violation(call, "items", "must hold 1 to %d items", CONN_MAX);
        return;
    }
    for (size_t i = 0; i < r->n_items; i++) {
        const Onceiot__Sims__V1__ConnectivityItem *it = r->items[i];
        if (!sims_valid_iccid(call, arena_printf(cx->a, "items[%zu].iccid", i), it->iccid))
            return;
        for (size_t k = 0; k < it->n_transitions; k++) {
            const Onceiot__Sims__V1__ConnectivityTransition *t = it->transitions[k];
            if (t->seq < 1 || !t->occurred_at ||
                (k > 0 && t->seq != it->transitions[k - 1]->seq + 1)) {
                rpc_violation(call, arena_printf(cx->a, "items[%zu].transitions[%zu]", i, k),
                              "must have a time and follow the previous one's seq by one");
                return;
            }
        }
    }
}

int sims_apply_connectivity(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Sims__V1__ApplyConnectivityRequest *r = (const void *)req;
    sims_ctx_t cx;
    PGresult *res = NULL;
    int rc = sims_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    sims__check_connectivity(&cx, r);
    if ((rc = rpc_check_violations(call)) < 0 || (rc = sims_begin(&cx)) < 0)
        return rc;
    Onceiot__Sims__V1__ApplyConnectivityResponse *out = arena_alloc(cx.a, sizeof(*out));
    onceiot__sims__v1__apply_connectivity_response__init(out);
    out->batch_id = r->batch_id;
    const char *claim[] = {r->batch_id, sims_i64(&cx, (int64_t)r->n_items)};
    if ((rc = sims_exec(&cx, &claim_conn_batch, claim, NULL)) < 0)
        return rc;
    if (rc == 0) {
        if ((rc = sims_exec(&cx, &conn_batch_events, claim, &res)) < 0)
            return rc;
        out->replayed = true;
        out->events = (int32_t)db_get_int(res, 0, "events", 0);
        PQclear(res);
        *resp = &out->base;
        return 0;
    }

    Onceiot__Sims__V1__ConnectivityItem **items = arena_alloc(cx.a, r->n_items * sizeof(*items));
    memcpy(items, r->items, r->n_items * sizeof(*items));
    qsort(items, r->n_items, sizeof(*items), sims__cmp_conn_item);
    for (size_t i = 0; i < r->n_items; i++) {
        const Onceiot__Sims__V1__ConnectivityItem *it = items[i];
        const char *params[] = {it->iccid};
        if ((rc = sims_exec(&cx, &lock_conn_sim, params, &res)) < 0)
            return rc;
        if (rc == 0) {
            PQclear(res);
            return rpc_fail(call, ERR_NOT_FOUND, "no SIM %s", it->iccid);
        }
        const char *id = arena_strdup(cx.a, db_get(res, 0, "id"));
        const char *org = arena_strdup(cx.a, db_get(res, 0, "organization_id"));
        int64_t seq = db_get_int(res, 0, "connectivity_seq", 0);
        PQclear(res);
        res = NULL;
        for (size_t k = 0; k < it->n_transitions; k++) {
            const Onceiot__Sims__V1__ConnectivityTransition *t = it->transitions[k];
            if (t->seq <= seq)
                continue; /* recorded before */
            if (t->seq > seq + 1)
                return rpc_fail(call, ERR_ABORTED,
                                "transition %lld of SIM %s comes before %lld; retry later",
                                (long long)t->seq, it->iccid, (long long)seq + 1);
            if ((rc = sims__record_transition(&cx, id, org, it->iccid, t)) < 0)
                return rc;
            seq = t->seq;
            out->events++;
        }
        const char *net_us =
            it->network_observed_at ? sims_i64(&cx, sims__us(it->network_observed_at)) : NULL;
        const char *up[] = {id,
                            sims_i64(&cx, seq),
                            net_us,
                            sims_nz(it->rat),
                            sims_nz(it->country),
                            sims_nz(it->operator_name)};
        if ((rc = sims_exec(&cx, &update_conn_sim, up, NULL)) < 0)
            return rc;
    }
    const char *store[] = {r->batch_id, sims_i64(&cx, out->events)};
    if ((rc = sims_exec(&cx, &store_conn_events, store, NULL)) < 0 || (rc = sims_commit(&cx)) < 0)
        return rc;
    *resp = &out->base;
    return 0;
}
