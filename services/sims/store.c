/* Queries shared by the handlers: the call context, reading SIMs and events,
 * recording events and consuming quota. */
#include "onceiot/pbtime.h"
#include "sims.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sims_ctx_or_status(rpc_call_t *call, sims_ctx_t *cx)
{
    memset(cx, 0, sizeof(*cx));
    cx->call = call;
    cx->a = rpc_call_arena(call);
    cx->who = svc_principal_or_status(call);
    if (!cx->who)
        return ERR_UNAUTHENTICATED;
    cx->org = cx->who->is_superuser ? NULL : sims_i64(cx, cx->who->organization_id);
    const char *cred = cx->who->credential ? cx->who->credential : "";
    if (strncmp(cred, "api_key:", 8) == 0 || strncmp(cred, "service:", 8) == 0)
        cx->actor = cred;
    else
        cx->actor = arena_printf(cx->a, "user:%lld", (long long)cx->who->user_id);
    return 0;
}

int sims_ctx_iccid_or_status(rpc_call_t *call, const char *iccid, sims_ctx_t *cx)
{
    int rc = sims_ctx_or_status(call, cx);
    if (rc < 0)
        return rc;
    sims_valid_iccid(call, "iccid", iccid);
    return 0;
}

int sims_exec(sims_ctx_t *cx, const db_stmt_t *stmt, const char *const *params, PGresult **res)
{
    return svc_exec_or_status(cx->call, stmt, params, res);
}

int sims_exec_quiet(sims_ctx_t *cx, const db_stmt_t *stmt, const char *const *params,
                    PGresult **res)
{
    db_conn_t *conn = svc_db_or_status(cx->call);
    if (!conn)
        return ERR_UNAVAILABLE;
    return db_exec(conn, stmt, params, res);
}

int sims_begin(sims_ctx_t *cx)
{
    return svc_begin_or_status(cx->call);
}

int sims_commit(sims_ctx_t *cx)
{
    return svc_commit_or_status(cx->call);
}

int sims_begin_request_or_status(sims_ctx_t *cx, const char *request_id,
                                 const ProtobufCMessage *req, ProtobufCMessage **first)
{
    return requestid_begin_or_status(cx->call, svc_db_or_status(cx->call), request_id, req, &cx->rq,
                                     first);
}

int sims_commit_answer(sims_ctx_t *cx, const ProtobufCMessage *resp)
{
    return requestid_commit_or_status(cx->call, svc_db_or_status(cx->call), &cx->rq, resp);
}

const char *sims_i64(sims_ctx_t *cx, int64_t v)
{
    return arena_printf(cx->a, "%lld", (long long)v);
}

const char *sims_nz(const char *s)
{
    return s && *s ? s : NULL;
}

Google__Protobuf__Timestamp *sims_ts(arena_t *a, const char *us)
{
    return pbtime_from_us_text(a, us);
}

const char *sims_ts_param(sims_ctx_t *cx, const Google__Protobuf__Timestamp *ts)
{
    return pbtime_us_text(cx->a, ts);
}

static const char *const status_names[] = {
    [ONCEIOT__SIMS__V1__SIM_STATUS__SIM_STATUS_ENABLED] = "Enabled",
    [ONCEIOT__SIMS__V1__SIM_STATUS__SIM_STATUS_DISABLED] = "Disabled",
    [ONCEIOT__SIMS__V1__SIM_STATUS__SIM_STATUS_SUSPENDED] = "Suspended",
    [ONCEIOT__SIMS__V1__SIM_STATUS__SIM_STATUS_EXPIRED] = "Expired",
    [ONCEIOT__SIMS__V1__SIM_STATUS__SIM_STATUS_TERMINATED] = "Terminated",
};

const char *sims_status_name(Onceiot__Sims__V1__SimStatus st)
{
    if ((int)st <= 0 || (size_t)st >= sizeof(status_names) / sizeof(status_names[0]))
        return NULL;
    return status_names[st];
}

Onceiot__Sims__V1__SimStatus sims_status_enum(const char *name)
{
    for (size_t i = 1; name && i < sizeof(status_names) / sizeof(status_names[0]); i++)
        if (strcmp(status_names[i], name) == 0)
            return (Onceiot__Sims__V1__SimStatus)i;
    return ONCEIOT__SIMS__V1__SIM_STATUS__SIM_STATUS_UNSPECIFIED;
}

const char *sims_quota_type_name(Onceiot__Sims__V1__QuotaType t)
{
    switch (t) {
    case ONCEIOT__SIMS__V1__QUOTA_TYPE__QUOTA_TYPE_DATA:
        return "data";
    case ONCEIOT__SIMS__V1__QUOTA_TYPE__QUOTA_TYPE_SMS:
        return "sms";
    default:
        return NULL;
    }
}

static char *sims__str(arena_t *a, const PGresult *res, int row, const char *col)
{
    const char *v = db_get(res, row, col);
    return arena_strdup(a, v ? v : "");
}

static Onceiot__Sims__V1__QuotaSummary *sims__summary(arena_t *a, const PGresult *res, int row,
                                                      const char *prefix)
{
    char col[64];
    snprintf(col, sizeof(col), "%s_volume", prefix);
    if (!db_get(res, row, col))
        return NULL;
    Onceiot__Sims__V1__QuotaSummary *q = arena_alloc(a, sizeof(*q));
    onceiot__sims__v1__quota_summary__init(q);
    q->volume = db_get_int(res, row, col, 0);
    snprintf(col, sizeof(col), "%s_used", prefix);
    q->used_volume = db_get_int(res, row, col, 0);
    snprintf(col, sizeof(col), "%s_remaining", prefix);
    q->remaining_volume = db_get_int(res, row, col, 0);
    snprintf(col, sizeof(col), "%s_threshold_reached", prefix);
    q->threshold_reached = db_get_bool(res, row, col);
    return q;
}

sims_sim_t *sims_sim_from_row(arena_t *a, const PGresult *res, int row)
{
    sims_sim_t *s = arena_alloc(a, sizeof(*s));
    onceiot__sims__v1__sim__init(s);
    s->iccid = sims__str(a, res, row, "iccid");
    s->imsi = sims__str(a, res, row, "imsi");
    s->msisdn = sims__str(a, res, row, "msisdn");
    s->imei = sims__str(a, res, row, "imei");
    s->imei_lock = db_get_bool(res, row, "imei_lock");
    s->status = sims_status_enum(db_get(res, row, "status"));
    s->label = sims__str(a, res, row, "label");
    s->ip_address = sims__str(a, res, row, "ip");
    s->organization_id = db_get_int(res, row, "organization_id", 0);
    s->customer_org_id = db_get_int(res, row, "customer_org_id", 0);
    const char *csv = db_get(res, row, "tags_csv");
    if (csv && *csv) {
        size_t n = 1;
        for (const char *p = csv; *p; p++)
            n += *p == ',';
        s->tags = arena_alloc(a, n * sizeof(char *));
        const char *start = csv;
        for (const char *p = csv;; p++) {
            if (*p == ',' || !*p) {
                s->tags[s->n_tags++] = arena_strndup(a, start, (size_t)(p - start));
                if (!*p)
                    break;
                start = p + 1;
            }
        }
    }
    s->metadata = pbstruct_from_json(a, db_get(res, row, "metadata_json"));
    s->activation_date = sims_ts(a, db_get(res, row, "activation_us"));
    s->suspension_date = sims_ts(a, db_get(res, row, "suspension_us"));
    s->termination_date = sims_ts(a, db_get(res, row, "termination_us"));
    s->expiry_date = sims_ts(a, db_get(res, row, "expiry_us"));
    s->created_at = sims_ts(a, db_get(res, row, "created_us"));
    s->updated_at = sims_ts(a, db_get(res, row, "updated_us"));
    s->data_quota = sims__summary(a, res, row, "data");
    s->sms_quota = sims__summary(a, res, row, "sms");
    s->current_rat = sims__str(a, res, row, "current_rat");
    s->current_country = sims__str(a, res, row, "current_country");
    s->current_operator = sims__str(a, res, row, "current_operator");
    s->network_observed_at = sims_ts(a, db_get(res, row, "network_us"));
    return s;
}

static const db_stmt_t get_sim = {
    "sims_get_sim",
    "SELECT " SIMS_SIM_COLUMNS
    " FROM sim_summaries s WHERE s.iccid = $1 AND " SIMS_ORG_FILTER("s.organization_id", "$2"),
    2};

int sims_load_sim_or_status(sims_ctx_t *cx, const char *iccid, sims_sim_t **out)
{
    PGresult *res = NULL;
    const char *params[] = {iccid, cx->org};
    int rc = sims_exec(cx, &get_sim, params, &res);
    if (rc < 0)
        goto out;
    if (rc == 0) {
        rc = rpc_fail(cx->call, ERR_NOT_FOUND, "no SIM %s", iccid);
        goto out;
    }
    *out = sims_sim_from_row(cx->a, res, 0);
    rc = 0;
out:
    PQclear(res);
    return rc;
}

static const db_stmt_t lock_sim = {
    "sims_lock_sim",
    "SELECT id, organization_id, status FROM sims WHERE iccid = $1 AND " SIMS_ORG_FILTER(
        "organization_id", "$2") " FOR UPDATE",
    2};

int sims_lock_sim_or_status(sims_ctx_t *cx, const char *iccid, const char **id, const char **org,
                            const char **status)
{
    PGresult *res = NULL;
    const char *params[] = {iccid, cx->org};
    int rc = sims_exec(cx, &lock_sim, params, &res);
    if (rc < 0)
        goto out;
    if (rc == 0) {
        rc = rpc_fail(cx->call, ERR_NOT_FOUND, "no SIM %s", iccid);
        goto out;
    }
    *id = arena_strdup(cx->a, db_get(res, 0, "id"));
    *org = arena_strdup(cx->a, db_get(res, 0, "organization_id"));
    if (status)
        *status = arena_strdup(cx->a, db_get(res, 0, "status"));
    rc = 0;
out:
    PQclear(res);
    return rc;
}

static const db_stmt_t sim_visible = {
    "sims_sim_visible",
    "SELECT 1 FROM sims WHERE iccid = $1 AND " SIMS_ORG_FILTER("organization_id", "$2"), 2};

int sims_visible_or_status(sims_ctx_t *cx, db_conn_t *conn, const char *iccid)
{
    const char *params[] = {iccid, cx->org};
    int rc = conn ? db_exec(conn, &sim_visible, params, NULL)
                  : sims_exec(cx, &sim_visible, params, NULL);
    if (rc < 0 && conn)
        return svc_db_fail(cx->call, conn, rc);
    if (rc == 0)
        return rpc_fail(cx->call, ERR_NOT_FOUND, "no SIM %s", iccid);
    return rc < 0 ? rc : 0;
}

int sims_begin_lock_or_status(sims_ctx_t *cx, const char *iccid, const char **id, const char **org,
                              const char **status)
{
    int rc = sims_begin(cx);
    if (rc < 0)
        return rc;
    return sims_lock_sim_or_status(cx, iccid, id, org, status);
}

/* Any number of events in one statement, in the order given (ids ascend
 * with it). */
static const db_stmt_t insert_events = {
    "sims_insert_events",
    "INSERT INTO sim_events (sim_id, organization_id, iccid, event_type, event_category, "
    "severity, description, event_data, triggered_by, occurred_at) "
    "SELECT u.sim_id, u.org, u.iccid, u.type, u.category, coalesce(u.severity, 'info'), "
    "coalesce(u.description, ''), coalesce(u.data, '{}')::jsonb, $9, "
    "coalesce('epoch'::timestamptz + u.us * interval '1 microsecond', now()) "
    "FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], "
    "$7::text[], $8::text[], $10::bigint[]) WITH ORDINALITY "
    "AS u(sim_id, org, iccid, type, category, severity, description, data, us, ord) "
    "ORDER BY u.ord",
    10};

int sims_insert_events(sims_ctx_t *cx, const sims_event_in_t *ev, size_t n)
{
    if (n == 0)
        return 0;
    enum { SIM, ORG, ICCID, TYPE, CATEGORY, SEVERITY, DESCRIPTION, DATA, OCCURRED, COLS };
    const char **col[COLS];
    for (int c = 0; c < COLS; c++)
        col[c] = arena_alloc(cx->a, n * sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        col[SIM][i] = ev[i].sim_id;
        col[ORG][i] = ev[i].org;
        col[ICCID][i] = ev[i].iccid;
        col[TYPE][i] = ev[i].type;
        col[CATEGORY][i] = ev[i].category;
        col[SEVERITY][i] = ev[i].severity;
        col[DESCRIPTION][i] = ev[i].description;
        col[DATA][i] = ev[i].data_json;
        col[OCCURRED][i] = ev[i].occurred_us;
    }
    const char *params[10];
    for (int c = 0; c < DATA + 1; c++)
        params[c] = db_text_array(cx->a, col[c], n);
    params[8] = cx->actor;
    params[9] = db_text_array(cx->a, col[OCCURRED], n);
    int rc = sims_exec(cx, &insert_events, params, NULL);
    return rc < 0 ? rc : 0;
}

int sims_record_event(sims_ctx_t *cx, const sims_event_in_t *ev)
{
    return sims_insert_events(cx, ev, 1);
}

sims_event_t *sims_event_from_row(arena_t *a, const PGresult *res, int row)
{
    sims_event_t *e = arena_alloc(a, sizeof(*e));
    onceiot__sims__v1__sim_event__init(e);
    e->id = db_get_int(res, row, "id", 0);
    e->iccid = sims__str(a, res, row, "iccid");
    e->event_type = sims__str(a, res, row, "event_type");
    e->event_category = sims__str(a, res, row, "event_category");
    e->severity = sims__str(a, res, row, "severity");
    e->description = sims__str(a, res, row, "description");
    e->data = pbstruct_from_json(a, db_get(res, row, "data_json"));
    e->triggered_by = sims__str(a, res, row, "triggered_by");
    e->organization_id = db_get_int(res, row, "organization_id", 0);
    e->occurred_at = sims_ts(a, db_get(res, row, "occurred_us"));
    return e;
}

sims_quota_after_t sims_quota_after(const PGresult *res, int row, int64_t n)
{
    return (sims_quota_after_t){
        .n = n,
        .volume = db_get_int(res, row, "volume", 0),
        .used = db_get_int(res, row, "used_volume", 0),
        .remaining = db_get_int(res, row, "remaining_volume", 0),
        .threshold = db_get_int(res, row, "threshold_volume", 0),
        .threshold_reached = db_get_bool(res, row, "threshold_reached"),
        .auto_reload = db_get_bool(res, row, "auto_reload"),
    };
}

size_t sims_quota_events(sims_ctx_t *cx, const sims_quota_after_t *q, const sims_event_in_t *who,
                         const char *quota_type, sims_event_in_t ev[3], bool *reload)
{
    int64_t prev_used = q->used - q->n;
    bool was_reached = q->volume > 0 && prev_used >= q->threshold;
    bool was_depleted = q->volume - prev_used <= 0;
    const char *data =
        arena_printf(cx->a, "{\"quota_type\": \"%s\", \"volume\": %lld, \"used\": %lld}",
                     quota_type, (long long)q->volume, (long long)q->used);
    size_t n = 0;
    *reload = false;
    if (q->threshold_reached && !was_reached) {
        ev[n] = *who;
        ev[n].type = "quota_threshold_reached";
        ev[n].severity = "warning";
        ev[n].description = arena_printf(cx->a, "%s quota threshold reached", quota_type);
        ev[n++].data_json = data;
    }
    if (q->remaining == 0 && !was_depleted) {
        ev[n] = *who;
        ev[n].type = "quota_depleted";
        ev[n].severity = "warning";
        ev[n].description = arena_printf(cx->a, "%s quota depleted", quota_type);
        ev[n++].data_json = data;
        if (q->auto_reload) {
            *reload = true;
            ev[n] = *who;
            ev[n].type = "auto_topup_triggered";
            ev[n].severity = "info";
            ev[n].description = arena_printf(cx->a, "%s quota reloaded automatically", quota_type);
            ev[n++].data_json = data;
        }
    }
    for (size_t i = 0; i < n; i++)
        ev[i].category = "quota";
    return n;
}

/* The row lock taken by the UPDATE serializes concurrent consumers of one
 * quota, so no increment is lost; the previous state is derived from the
 * new one (volume does not change here). */
static const db_stmt_t consume = {
    "sims_consume",
    "UPDATE sim_quotas SET used_volume = used_volume + $3::bigint "
    "WHERE sim_id = $1 AND quota_type = $2 AND ($4::bool IS NOT TRUE OR remaining_volume >= $3) "
    "RETURNING volume, used_volume, remaining_volume, threshold_volume, threshold_reached, "
    "auto_reload",
    4};

static const db_stmt_t quota_exists = {
    "sims_quota_exists",
    "SELECT remaining_volume FROM sim_quotas WHERE sim_id = $1 AND quota_type = $2", 2};

static const db_stmt_t auto_reload = {
    "sims_auto_reload",
    "UPDATE sim_quotas SET volume = volume + auto_reload_amount, "
    "last_volume_added = auto_reload_amount WHERE sim_id = $1 AND quota_type = $2 "
    "RETURNING remaining_volume",
    2};

int sims_consume_quota(sims_ctx_t *cx, const char *sim_id, const char *org, const char *iccid,
                       const char *quota_type, int64_t n, bool require_remaining,
                       int64_t *remaining, const char **events, size_t *n_events)
{
    PGresult *res = NULL;
    *n_events = 0;
    *remaining = -1;
    const char *params[] = {sim_id, quota_type, sims_i64(cx, n), require_remaining ? "t" : "f"};
    int rc = sims_exec(cx, &consume, params, &res);
    if (rc < 0)
        goto out;
    if (rc == 0) {
        PQclear(res);
        res = NULL;
        rc = sims_exec(cx, &quota_exists, params, &res);
        if (rc < 0)
            goto out;
        if (rc > 0 || require_remaining) {
            rc = rpc_fail(cx->call, ERR_FAILED_PRECONDITION,
                          "SIM %s has not enough %s quota left (%lld needed)", iccid, quota_type,
                          (long long)n);
            goto out;
        }
        rc = 0; /* no quota of this type: unmetered */
        goto out;
    }
    sims_quota_after_t q = sims_quota_after(res, 0, n);
    *remaining = q.remaining;
    const sims_event_in_t who = {.sim_id = sim_id, .org = org, .iccid = iccid};
    sims_event_in_t ev[3];
    bool reload;
    *n_events = sims_quota_events(cx, &q, &who, quota_type, ev, &reload);
    for (size_t i = 0; i < *n_events; i++)
        events[i] = ev[i].type;
    if (reload) {
        PQclear(res);
        res = NULL;
        if ((rc = sims_exec(cx, &auto_reload, params, &res)) < 0)
            goto out;
        *remaining = db_get_int(res, 0, "remaining_volume", 0);
    }
    rc = sims_insert_events(cx, ev, *n_events);
out:
    PQclear(res);
    return rc;
}

int sims_page_exec(sims_ctx_t *cx, const db_stmt_t *stmt, const char *const *params,
                   const sims_page_t *page, PGresult **res, int *n, char **next)
{
    int rc;
    if (page->exec) {
        db_conn_t *conn = svc_db_or_status(cx->call);
        if (!conn)
            return ERR_UNAVAILABLE;
        if ((rc = page->exec(conn, stmt, params, res)) < 0)
            return svc_db_fail(cx->call, conn, rc);
    } else if ((rc = sims_exec(cx, stmt, params, res)) < 0) {
        return rc;
    }
    *n = rc > page->size ? page->size : rc;
    if (rc > page->size)
        *next =
            (char *)pagetoken_encode(cx->a, page->hash, db_get(*res, *n - 1, page->key_col),
                                     page->last_col ? db_get(*res, *n - 1, page->last_col) : "");
    return 0;
}
