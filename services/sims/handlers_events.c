/* The event log: ListEvents, RecordEvents and WatchEvents. */
#include "sims.h"

#include <string.h>

#define EVENTS_DEFAULT 100
#define EVENTS_MAX     1000
#define RECORD_MAX     1000
#define WATCH_POLL_MS  500
#define WATCH_SYNC_MS  10000 /* longest wait for a subscription to take effect */

static const db_stmt_t list_events = {
    "sims_list_events",
    "SELECT " SIMS_EVENT_COLUMNS " FROM sim_events e JOIN sims s ON s.id = e.sim_id "
    "WHERE s.iccid = $1 AND " SIMS_ORG_FILTER(
        "s.organization_id",
        "$2") " AND ($3::text IS NULL OR e.event_type = $3) AND ($4::text IS NULL OR "
              "e.event_category = $4)"
              " AND ($5::text IS NULL OR e.severity = $5)"
              " AND ($6::bigint IS NULL OR e.occurred_at >= 'epoch'::timestamptz + $6 * interval "
              "'1 microsecond')"
              " AND ($7::bigint IS NULL OR e.occurred_at < 'epoch'::timestamptz + $7 * interval '1 "
              "microsecond')"
              " AND ($8::bigint IS NULL OR (e.occurred_at, e.id) < ('epoch'::timestamptz + $8 * "
              "interval "
              "'1 microsecond', $9::bigint)) ORDER BY e.occurred_at DESC, e.id DESC LIMIT $10",
    10};

int sims_list_events(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Sims__V1__ListEventsRequest *r = (const void *)req;
    PGresult *res = NULL;
    sims_ctx_t cx;
    int rc = sims_ctx_iccid_or_status(call, r->iccid, &cx);
    if (rc < 0)
        return rc;
    int size = pagetoken_page_size(call, r->page_size, EVENTS_DEFAULT, EVENTS_MAX);
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    const char *params[] = {r->iccid,
                            cx.org,
                            sims_nz(r->event_type),
                            sims_nz(r->event_category),
                            sims_nz(r->severity),
                            sims_ts_param(&cx, r->since),
                            sims_ts_param(&cx, r->until),
                            NULL,
                            NULL,
                            sims_i64(&cx, size + 1)};
    const char *parts[] = {"events",  r->iccid,  cx.org,    params[2],
                           params[3], params[4], params[5], params[6]};
    uint64_t hash = pagetoken_hash(parts, sizeof(parts) / sizeof(parts[0]));
    if (*r->page_token &&
        (rc = pagetoken_decode(call, r->page_token, hash, &params[7], &params[8])) < 0)
        return rc;
    Onceiot__Sims__V1__ListEventsResponse *out = arena_alloc(cx.a, sizeof(*out));
    onceiot__sims__v1__list_events_response__init(out);
    const sims_page_t page = {
        .size = size, .hash = hash, .key_col = "occurred_us", .last_col = "id"};
    int n;
    rc = sims_page_exec(&cx, &list_events, params, &page, &res, &n, &out->next_page_token);
    if (rc < 0 || (n == 0 && (rc = sims_visible_or_status(&cx, NULL, r->iccid)) < 0))
        goto out;
    out->events = arena_alloc(cx.a, (size_t)(n ? n : 1) * sizeof(*out->events));
    for (int i = 0; i < n; i++)
        out->events[out->n_events++] = sims_event_from_row(cx.a, res, i);
    *resp = &out->base;
    rc = 0;
out:
    PQclear(res);
    return rc;
}

static bool sims__one_of(const char *s, const char *const *set)
{
    for (; *set; set++)
        if (strcmp(s, *set) == 0)
            return true;
    return false;
}

static const char *const categories[] = {"status",       "quota",    "sms",
                                         "connectivity", "registry", NULL};
static const char *const severities[] = {"info", "warning", "error", "critical", NULL};

/* True when s is a lower-case event type: a letter, then up to 63 letters,
 * digits or underscores. */
static bool sims__event_type(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64 || s[0] < 'a' || s[0] > 'z')
        return false;
    return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_") == n;
}

int sims_record_events(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Sims__V1__RecordEventsRequest *r = (const void *)req;
    sims_ctx_t cx;
    int rc = sims_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    if (r->n_events == 0 || r->n_events > RECORD_MAX)
        rpc_violation(call, "events", "must hold 1 to %d events", RECORD_MAX);
    const char **data = arena_calloc(cx.a, r->n_events ? r->n_events : 1, sizeof(*data));
    for (size_t i = 0; i < r->n_events && i < RECORD_MAX; i++) {
        const Onceiot__Sims__V1__EventInput *e = r->events[i];
        const char *f = arena_printf(cx.a, "events[%zu].", i);
        bool ok = sims_valid_iccid(call, arena_printf(cx.a, "%siccid", f), e->iccid);
        if (!sims__event_type(e->event_type)) {
            rpc_violation(call, arena_printf(cx.a, "%sevent_type", f),
                          "must be a lower-case identifier of at most 64 characters");
            ok = false;
        }
        if (!sims__one_of(e->event_category, categories)) {
            rpc_violation(call, arena_printf(cx.a, "%sevent_category", f),
                          "must be status, quota, sms, connectivity or registry");
            ok = false;
        }
        if (*e->severity && !sims__one_of(e->severity, severities)) {
            rpc_violation(call, arena_printf(cx.a, "%sseverity", f),
                          "must be info, warning, error or critical");
            ok = false;
        }
        ok &= sims_valid_object(call, f, &e->base, "data", e->data, 6, &data[i]);
        if (!ok)
            break;
    }
    if ((rc = rpc_check_violations(call)) < 0 || (rc = sims_begin(&cx)) < 0)
        return rc;
    for (size_t i = 0; i < r->n_events; i++) {
        const Onceiot__Sims__V1__EventInput *e = r->events[i];
        const char *id, *org;
        if ((rc = sims_lock_sim_or_status(&cx, e->iccid, &id, &org, NULL)) < 0)
            return rc;
        sims_event_in_t ev = {.sim_id = id,
                              .org = org,
                              .iccid = e->iccid,
                              .type = e->event_type,
                              .category = e->event_category,
                              .severity = sims_nz(e->severity),
                              .description = e->description,
                              .data_json = data[i],
                              .occurred_us = sims_ts_param(&cx, e->occurred_at)};
        if ((rc = sims_record_event(&cx, &ev)) < 0)
            return rc;
    }
    if ((rc = sims_commit(&cx)) < 0)
        return rc;
    Onceiot__Sims__V1__RecordEventsResponse *out = arena_alloc(cx.a, sizeof(*out));
    onceiot__sims__v1__record_events_response__init(out);
    out->recorded = (int32_t)r->n_events;
    *resp = &out->base;
    return 0;
}

static const db_stmt_t watched_event = {
    "sims_watched_event",
    "SELECT " SIMS_EVENT_COLUMNS " FROM sim_events e WHERE e.id = $1 AND e.occurred_at = "
    "'epoch'::timestamptz + $2::bigint * interval '1 microsecond' AND " SIMS_ORG_FILTER(
        "e.organization_id", "$3") " AND ($4::text IS NULL OR e.iccid = $4)"
                                   " AND ($5::text IS NULL OR e.event_type = $5) AND ($6::text IS "
                                   "NULL OR e.event_category = $6)",
    6};

/* Reads one notified event (if it passes the stream's filters) and sends it.
 * A pool connection is taken per event, not for the stream's lifetime, so
 * idle watchers hold none. Memory comes from a scratch arena freed here, so
 * a long stream does not grow its call's arena. */
static int sims__send_event(sims_ctx_t *cx, const Onceiot__Sims__V1__WatchEventsRequest *r,
                            const char *id, const char *us)
{
    db_pool_t *pool = svc_db(rpc_call_ctx(cx->call));
    db_conn_t *conn = NULL;
    PGresult *res = NULL;
    arena_t *a = arena_new();
    int rc = db_pool_acquire(pool, 5000, &conn);
    if (rc < 0) {
        rc = rpc_fail(cx->call, rc, "no database connection for the watch");
        goto out;
    }
    svc_db_scope(cx->call, conn);
    const char *params[] = {
        id, us, cx->org, sims_nz(r->iccid), sims_nz(r->event_type), sims_nz(r->event_category)};
    rc = db_exec(conn, &watched_event, params, &res);
    if (rc < 0) {
        rc = svc_db_fail(cx->call, conn, rc);
        goto out;
    }
    rc = rc ? rpc_send(cx->call, &sims_event_from_row(a, res, 0)->base) : 0;
out:
    PQclear(res);
    if (conn)
        db_pool_release(pool, conn);
    arena_free(a);
    return rc;
}

static const db_stmt_t watch_sync = {"sims_watch_sync", "SELECT pg_notify('sims_events', $1)", 1};

/* Sends a sync point with pg_notify, in a transaction of its own on a pool
 * connection (not held for the stream). */
static int sims__notify_sync(rpc_call_t *call, const char *payload)
{
    db_pool_t *pool = svc_db(rpc_call_ctx(call));
    db_conn_t *conn = NULL;
    PGresult *res = NULL;
    int rc = db_pool_acquire(pool, 5000, &conn);
    if (rc < 0)
        return rpc_fail(call, rc, "no database connection for the watch");
    svc_db_scope(call, conn);
    const char *params[] = {payload};
    rc = db_exec(conn, &watch_sync, params, &res);
    PQclear(res);
    db_pool_release(pool, conn);
    return rc < 0 ? rpc_fail(call, rc, "cannot subscribe to the events") : 0;
}

/* Makes the subscription take effect (see watch.c): checks the watched SIM
 * is the caller's, then sends the sync point once the listener listens (and
 * again if it reconnected before reading it) and waits until the listener
 * has read it. Then tells the client with the response headers. */
static int sims__subscribe_or_status(sims_ctx_t *cx, const char *iccid, sims_watch_t *w,
                                     sims_sub_t *sub)
{
    rpc_call_t *call = cx->call;
    arena_t *a = arena_new();
    int rc = 0;
    if (*iccid) {
        db_pool_t *pool = svc_db(rpc_call_ctx(call));
        db_conn_t *conn = NULL;
        if ((rc = db_pool_acquire(pool, 5000, &conn)) < 0) {
            rc = rpc_fail(call, rc, "no database connection for the watch");
            goto out;
        }
        svc_db_scope(call, conn);
        rc = sims_visible_or_status(cx, conn, iccid);
        db_pool_release(pool, conn);
        if (rc < 0)
            goto out;
    }
    for (int waited = 0;; waited += WATCH_POLL_MS) {
        const char *payload = sims_watch_sync_due(w, sub, a);
        if (payload && (rc = sims__notify_sync(call, payload)) < 0)
            goto out;
        if (sims_watch_active(w, sub, WATCH_POLL_MS))
            break;
        if (rpc_call_cancelled(call)) {
            rc = ERR_CANCELLED;
            goto out;
        }
        if (waited >= WATCH_SYNC_MS) {
            rc = rpc_fail(call, ERR_UNAVAILABLE, "the event listener is not connected; retry");
            goto out;
        }
    }
    rc = rpc_send_headers(call);
out:
    arena_free(a);
    return rc;
}

int sims_watch_events(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Sims__V1__WatchEventsRequest *r = (const void *)req;
    sims_ctx_t cx;
    int rc = sims_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    if (*r->iccid)
        sims_valid_iccid(call, "iccid", r->iccid);
    if (*r->event_category && !sims__one_of(r->event_category, categories))
        rpc_violation(call, "event_category",
                      "must be status, quota, sms, connectivity or registry");
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    sims_state_t *st = svc_state(rpc_call_ctx(call));
    sims_sub_t *sub = sims_watch_subscribe(st->watch, cx.org);
    arena_t *scratch = arena_new();
    rc = sims__subscribe_or_status(&cx, r->iccid, st->watch, sub);
    while (rc >= 0 && !rpc_call_cancelled(call)) {
        const char *id, *us;
        int got = sims_watch_next(st->watch, sub, WATCH_POLL_MS, scratch, &id, &us);
        if (got == ERR_RESOURCE_EXHAUSTED)
            rc = rpc_fail(call, got,
                          "the watcher fell behind and missed events; list them "
                          "with ListEvents and watch again");
        else if (got == ERR_UNAVAILABLE)
            rc = rpc_fail(call, got,
                          "the event listener lost its database connection; list the "
                          "events since the last one seen with ListEvents and watch again");
        else if (got == 1)
            rc = sims__send_event(&cx, r, id, us);
        if (got == 1) {
            arena_free(scratch);
            scratch = arena_new();
        }
    }
    arena_free(scratch);
    sims_watch_unsubscribe(st->watch, sub);
    return rc == ERR_CANCELLED ? 0 : rc;
}
