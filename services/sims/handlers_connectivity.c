/* ApplyConnectivity: the usage service's connectivity transitions become
 * connectivity_lost / connectivity_restored events, and the latest network
 * becomes the SIM's current_rat, current_country and current_operator.
 *
 * One batch is one transaction of five statements, whatever its size: the
 * batch id is claimed first (a replay finds it and changes nothing), then
 * all its SIMs are locked at once in ICCID order (so concurrent batches
 * never deadlock) and, in C, each SIM's transitions are taken in seq order
 * against its connectivity_seq: already recorded ones are skipped, the next
 * one becomes an event, and one that comes before its predecessor refuses
 * the whole batch with ABORTED so the usage service delivers the earlier
 * batch first. Then the events (one INSERT, in ICCID and seq order) and the
 * SIMs (one UPDATE; the network is written only when its sample is newer
 * than the one shown). */
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

/* The batch's SIMs ($1: ICCIDs in byte order), locked in that order. */
static const db_stmt_t lock_conn_sims = {
    "sims_lock_conn_sims",
    "SELECT id, organization_id, iccid, connectivity_seq FROM sims WHERE iccid = ANY($1::text[]) "
    "ORDER BY iccid COLLATE \"C\" FOR UPDATE",
    1};

/* Each locked SIM's new seq and, when newer than the shown one (u.at, epoch
 * microseconds, NULL: none observed), its network. The arrays reach unnest
 * through scalar subqueries, so every plan, generic or custom, expects few
 * rows and probes sims_pkey per SIM (tests/integration/
 * test_sims_quota_plans.c has the story). */
#define SIMS_NET_NEWER                                                                             \
    "u.at IS NOT NULL AND (s.network_observed_at IS NULL OR s.network_observed_at < "              \
    "'epoch'::timestamptz + u.at * interval '1 microsecond')"
static const db_stmt_t update_conn_sims = {
    "sims_update_conn_sims",
    "UPDATE sims s SET connectivity_seq = u.seq, updated_at = now(), "
    "current_rat = CASE WHEN " SIMS_NET_NEWER " THEN u.rat ELSE s.current_rat END, "
    "current_country = CASE WHEN " SIMS_NET_NEWER " THEN u.country ELSE s.current_country END, "
    "current_operator = CASE WHEN " SIMS_NET_NEWER " THEN u.operator ELSE s.current_operator END, "
    "network_observed_at = CASE WHEN " SIMS_NET_NEWER
    " THEN 'epoch'::timestamptz + u.at * interval '1 microsecond' ELSE s.network_observed_at END "
    "FROM unnest((SELECT $1::bigint[]), (SELECT $2::bigint[]), (SELECT $3::bigint[]), "
    "(SELECT $4::text[]), (SELECT $5::text[]), (SELECT $6::text[])) "
    "AS u(id, seq, at, rat, country, operator) WHERE s.id = u.id",
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

/* Transition t of the locked SIM (id, org) as an event. */
static sims_event_in_t sims__transition_event(sims_ctx_t *cx, const char *id, const char *org,
                                              const char *iccid,
                                              const Onceiot__Sims__V1__ConnectivityTransition *t)
{
    arena_t *a = cx->a;
    const char *data = arena_printf(
        a, "{\"seq\": %lld, \"rat\": %s, \"country\": %s, \"operator\": %s, \"cell_id\": %s}",
        (long long)t->seq, sims__json_str(a, t->rat), sims__json_str(a, t->country),
        sims__json_str(a, t->operator_name), sims__json_str(a, t->cell_id));
    return (sims_event_in_t){
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

/* Items in ICCID byte order, the order their SIMs are locked in; a second
 * item of one SIM is a violation (usage sends one per SIM). */
static Onceiot__Sims__V1__ConnectivityItem **
sims__sorted_items(sims_ctx_t *cx, const Onceiot__Sims__V1__ApplyConnectivityRequest *r)
{
    Onceiot__Sims__V1__ConnectivityItem **items = arena_alloc(cx->a, r->n_items * sizeof(*items));
    memcpy(items, r->items, r->n_items * sizeof(*items));
    qsort(items, r->n_items, sizeof(*items), sims__cmp_conn_item);
    for (size_t i = 1; i < r->n_items; i++)
        if (strcmp(items[i - 1]->iccid, items[i]->iccid) == 0) {
            rpc_violation(cx->call, "items", "ICCID %s has more than one item", items[i]->iccid);
            break;
        }
    return items;
}

/* The SIMs' columns of update_conn_sims, one row per item. */
typedef struct sims_conn_rows {
    int64_t *id, *seq, *at;
    bool *no_at;
    const char **rat, **country, **op;
} sims_conn_rows_t;

int sims_apply_connectivity(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Sims__V1__ApplyConnectivityRequest *r = (const void *)req;
    sims_ctx_t cx;
    PGresult *res = NULL;
    int rc = sims_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    sims__check_connectivity(&cx, r);
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    size_t n = r->n_items;
    Onceiot__Sims__V1__ConnectivityItem **items = sims__sorted_items(&cx, r);
    if ((rc = rpc_check_violations(call)) < 0 || (rc = sims_begin(&cx)) < 0)
        return rc;
    Onceiot__Sims__V1__ApplyConnectivityResponse *out = arena_alloc(cx.a, sizeof(*out));
    onceiot__sims__v1__apply_connectivity_response__init(out);
    out->batch_id = r->batch_id;
    const char *claim[] = {r->batch_id, sims_i64(&cx, (int64_t)n)};
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

    const char **iccids = arena_alloc(cx.a, n * sizeof(char *));
    size_t n_ev = 0;
    for (size_t i = 0; i < n; i++) {
        iccids[i] = items[i]->iccid;
        n_ev += items[i]->n_transitions;
    }
    const db_value_t lock[] = {db_value_text_array(cx.a, iccids, n)};
    if ((rc = svc_exec_values_or_status(call, &lock_conn_sims, lock, &res)) < 0)
        return rc;
    sims_conn_rows_t u = {
        .id = arena_alloc(cx.a, n * sizeof(int64_t)),
        .seq = arena_alloc(cx.a, n * sizeof(int64_t)),
        .at = arena_alloc(cx.a, n * sizeof(int64_t)),
        .no_at = arena_alloc(cx.a, n),
        .rat = arena_alloc(cx.a, n * sizeof(char *)),
        .country = arena_alloc(cx.a, n * sizeof(char *)),
        .op = arena_alloc(cx.a, n * sizeof(char *)),
    };
    sims_event_in_t *ev = arena_alloc(cx.a, (n_ev + 1) * sizeof(*ev));
    n_ev = 0;
    /* Both sides are in byte order: the first mismatch is the first unknown. */
    int rows = rc;
    for (size_t i = 0; i < n; i++) {
        const Onceiot__Sims__V1__ConnectivityItem *it = items[i];
        if ((int)i >= rows || strcmp(db_get(res, (int)i, "iccid"), it->iccid) != 0) {
            rc = rpc_fail(call, ERR_NOT_FOUND, "no SIM %s", it->iccid);
            goto out;
        }
        const char *id = arena_strdup(cx.a, db_get(res, (int)i, "id"));
        const char *org = arena_strdup(cx.a, db_get(res, (int)i, "organization_id"));
        int64_t seq = db_get_int(res, (int)i, "connectivity_seq", 0);
        for (size_t k = 0; k < it->n_transitions; k++) {
            const Onceiot__Sims__V1__ConnectivityTransition *t = it->transitions[k];
            if (t->seq <= seq)
                continue; /* recorded before */
            if (t->seq > seq + 1) {
                rc = rpc_fail(call, ERR_ABORTED,
                              "transition %lld of SIM %s comes before %lld; retry later",
                              (long long)t->seq, it->iccid, (long long)seq + 1);
                goto out;
            }
            ev[n_ev++] = sims__transition_event(&cx, id, org, it->iccid, t);
            seq = t->seq;
        }
        u.id[i] = strtoll(id, NULL, 10);
        u.seq[i] = seq;
        u.no_at[i] = it->network_observed_at == NULL;
        u.at[i] = u.no_at[i] ? 0 : sims__us(it->network_observed_at);
        u.rat[i] = sims_nz(it->rat);
        u.country[i] = sims_nz(it->country);
        u.op[i] = sims_nz(it->operator_name);
    }
    out->events = (int32_t)n_ev;
    const db_value_t up[] = {
        db_value_int8_array(cx.a, u.id, NULL, n),    db_value_int8_array(cx.a, u.seq, NULL, n),
        db_value_int8_array(cx.a, u.at, u.no_at, n), db_value_text_array(cx.a, u.rat, n),
        db_value_text_array(cx.a, u.country, n),     db_value_text_array(cx.a, u.op, n)};
    const char *store[] = {r->batch_id, sims_i64(&cx, out->events)};
    if ((rc = sims_insert_events(&cx, ev, n_ev)) < 0 ||
        (rc = svc_exec_values_or_status(call, &update_conn_sims, up, NULL)) < 0 ||
        (rc = sims_exec(&cx, &store_conn_events, store, NULL)) < 0 || (rc = sims_commit(&cx)) < 0)
        goto out;
    *resp = &out->base;
    rc = 0;
out:
    PQclear(res);
    return rc;
}
