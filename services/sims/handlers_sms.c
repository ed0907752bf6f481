/* SMS: SendSms, GetSms, ListSms, CancelSms, ReceiveSms and UpdateSmsStatus. */
#include "sims.h"

#include <string.h>

#define SMS_LIST_DEFAULT 50
#define SMS_LIST_MAX     500

#define SMS_COLUMNS                                                                                \
    "m.id, m.iccid, m.direction, m.message, m.encoding, m.segments, m.status, m.error_message, "   \
    "(extract(epoch FROM m.created_at) * 1000000)::bigint AS created_us, "                         \
    "(extract(epoch FROM m.sent_at) * 1000000)::bigint AS sent_us, "                               \
    "(extract(epoch FROM m.delivered_at) * 1000000)::bigint AS delivered_us, "                     \
    "(extract(epoch FROM m.failed_at) * 1000000)::bigint AS failed_us"

static const char *const sms_status_names[] = {
    [ONCEIOT__SIMS__V1__SMS_STATUS__SMS_STATUS_PENDING] = "pending",
    [ONCEIOT__SIMS__V1__SMS_STATUS__SMS_STATUS_SENT] = "sent",
    [ONCEIOT__SIMS__V1__SMS_STATUS__SMS_STATUS_DELIVERED] = "delivered",
    [ONCEIOT__SIMS__V1__SMS_STATUS__SMS_STATUS_FAILED] = "failed",
    [ONCEIOT__SIMS__V1__SMS_STATUS__SMS_STATUS_CANCELLED] = "cancelled",
    [ONCEIOT__SIMS__V1__SMS_STATUS__SMS_STATUS_RECEIVED] = "received",
};
#define N_SMS_STATUS (sizeof(sms_status_names) / sizeof(sms_status_names[0]))

static const char *sims__sms_status_name(Onceiot__Sims__V1__SmsStatus st)
{
    return (int)st > 0 && (size_t)st < N_SMS_STATUS ? sms_status_names[st] : NULL;
}

static Onceiot__Sims__V1__Sms *sims__sms(arena_t *a, const PGresult *res, int row)
{
    Onceiot__Sims__V1__Sms *m = arena_alloc(a, sizeof(*m));
    onceiot__sims__v1__sms__init(m);
    m->id = db_get_int(res, row, "id", 0);
    m->iccid = arena_strdup(a, db_get(res, row, "iccid"));
    m->direction = strcmp(db_get(res, row, "direction"), "MO") == 0
                       ? ONCEIOT__SIMS__V1__SMS_DIRECTION__SMS_DIRECTION_MO
                       : ONCEIOT__SIMS__V1__SMS_DIRECTION__SMS_DIRECTION_MT;
    m->text = arena_strdup(a, db_get(res, row, "message"));
    m->encoding = strcmp(db_get(res, row, "encoding"), "UCS2") == 0
                      ? ONCEIOT__SIMS__V1__SMS_ENCODING__SMS_ENCODING_UCS2
                      : ONCEIOT__SIMS__V1__SMS_ENCODING__SMS_ENCODING_GSM7;
    m->segments = (int32_t)db_get_int(res, row, "segments", 1);
    const char *st = db_get(res, row, "status");
    for (size_t i = 1; i < N_SMS_STATUS; i++)
        if (strcmp(sms_status_names[i], st) == 0)
            m->status = (Onceiot__Sims__V1__SmsStatus)i;
    const char *err = db_get(res, row, "error_message");
    m->error_message = arena_strdup(a, err ? err : "");
    m->created_at = sims_ts(a, db_get(res, row, "created_us"));
    m->sent_at = sims_ts(a, db_get(res, row, "sent_us"));
    m->delivered_at = sims_ts(a, db_get(res, row, "delivered_us"));
    m->failed_at = sims_ts(a, db_get(res, row, "failed_us"));
    return m;
}

static const db_stmt_t insert_sms = {
    "sims_insert_sms",
    "INSERT INTO sim_sms AS m (sim_id, organization_id, iccid, direction, message, encoding, "
    "segments, status, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, "
    "coalesce('epoch'::timestamptz + $9::bigint * interval '1 microsecond', now())) "
    "RETURNING " SMS_COLUMNS,
    9};

/* Stores an SMS for a locked SIM, records its event and answers with it. */
static int sims__store_sms(sims_ctx_t *cx, const char *id, const char *org, const char *iccid,
                           bool mo, const char *text, const sims_sms_shape_t *shape,
                           const char *at_us, ProtobufCMessage **resp)
{
    PGresult *res = NULL;
    const char *params[] = {id,
                            org,
                            iccid,
                            mo ? "MO" : "MT",
                            text,
                            shape->ucs2 ? "UCS2" : "GSM7",
                            sims_i64(cx, shape->segments),
                            mo ? "received" : "pending",
                            at_us};
    int rc = sims_exec(cx, &insert_sms, params, &res);
    if (rc < 0)
        goto out;
    Onceiot__Sims__V1__Sms *m = sims__sms(cx->a, res, 0);
    sims_event_in_t ev = {
        .sim_id = id,
        .org = org,
        .iccid = iccid,
        .type = mo ? "sms_mo_received" : "sms_mt_queued",
        .category = "sms",
        .description = mo ? "SMS received from the device" : "SMS queued for the device",
        .data_json = arena_printf(cx->a, "{\"sms_id\": %lld, \"segments\": %d}", (long long)m->id,
                                  shape->segments),
        .occurred_us = at_us,
    };
    if ((rc = sims_record_event(cx, &ev)) < 0 || (rc = sims_commit_answer(cx, &m->base)) < 0)
        goto out;
    *resp = &m->base;
    rc = 0;
out:
    PQclear(res);
    return rc;
}

/* Starts SendSms and ReceiveSms: fills cx, checks iccid and measures text
 * into *shape, then begins the transaction, claims the request id (SendSms;
 * REQUESTID_REPLAY with *first) and locks the SIM (*id, *org and *status as
 * sims_lock_sim_or_status gives them). */
static int sims__sms_sim_or_status(rpc_call_t *call, const char *iccid, const char *text,
                                   sims_ctx_t *cx, sims_sms_shape_t *shape, const char **id,
                                   const char **org, const char **status, const char *request_id,
                                   const ProtobufCMessage *req, ProtobufCMessage **first)
{
    int rc = sims_ctx_iccid_or_status(call, iccid, cx);
    if (rc < 0)
        return rc;
    sims_sms_measure(call, "text", text, shape);
    if ((rc = rpc_check_violations(call)) < 0 ||
        (rc = sims_begin_request_or_status(cx, request_id, req, first)) != 0)
        return rc;
    return sims_lock_sim_or_status(cx, iccid, id, org, status);
}

int sims_send_sms(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Sims__V1__SendSmsRequest *r = (const void *)req;
    sims_ctx_t cx;
    sims_sms_shape_t shape;
    const char *id, *org, *status;
    int rc = sims__sms_sim_or_status(call, r->iccid, r->text, &cx, &shape, &id, &org, &status,
                                     r->request_id, req, resp);
    if (rc != 0)
        return rc < 0 ? rc : 0; /* or the first answer, replayed */
    if (strcmp(status, "Enabled") != 0)
        return rpc_fail(call, ERR_FAILED_PRECONDITION, "SIM %s is %s; SMS need an enabled SIM",
                        r->iccid, status);
    int64_t left;
    const char *ev[3];
    size_t n_ev;
    if ((rc = sims_consume_quota(&cx, id, org, r->iccid, "sms", shape.segments, true, &left, ev,
                                 &n_ev)) < 0)
        return rc;
    return sims__store_sms(&cx, id, org, r->iccid, false, r->text, &shape, NULL, resp);
}

int sims_receive_sms(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Sims__V1__ReceiveSmsRequest *r = (const void *)req;
    sims_ctx_t cx;
    sims_sms_shape_t shape;
    const char *id, *org;
    int rc = sims__sms_sim_or_status(call, r->iccid, r->text, &cx, &shape, &id, &org, NULL, NULL,
                                     NULL, NULL);
    if (rc < 0)
        return rc;
    return sims__store_sms(&cx, id, org, r->iccid, true, r->text, &shape,
                           sims_ts_param(&cx, r->received_at), resp);
}

static const db_stmt_t get_sms = {
    "sims_get_sms",
    "SELECT " SMS_COLUMNS " FROM sim_sms m WHERE m.id = $1 AND m.iccid = $2 AND " SIMS_ORG_FILTER(
        "m.organization_id", "$3"),
    3};

/* Reads one SMS of a SIM of the caller's; NOT_FOUND (status set) if none. */
static int sims__load_sms(sims_ctx_t *cx, int64_t id, const char *iccid,
                          Onceiot__Sims__V1__Sms **out)
{
    PGresult *res = NULL;
    const char *params[] = {sims_i64(cx, id), iccid, cx->org};
    int rc = sims_exec(cx, &get_sms, params, &res);
    if (rc < 0)
        goto out;
    if (rc == 0) {
        rc = rpc_fail(cx->call, ERR_NOT_FOUND, "no SMS %lld for SIM %s", (long long)id, iccid);
        goto out;
    }
    *out = sims__sms(cx->a, res, 0);
    rc = 0;
out:
    PQclear(res);
    return rc;
}

/* Starts a call about one SMS of a SIM: fills cx and checks iccid and id,
 * recording violations that the caller's rpc_check_violations reports. */
static int sims__sms_ctx_or_status(rpc_call_t *call, const char *iccid, int64_t id, sims_ctx_t *cx)
{
    int rc = sims_ctx_iccid_or_status(call, iccid, cx);
    if (rc < 0)
        return rc;
    if (id <= 0)
        rpc_violation(call, "id", "must be positive");
    return 0;
}

int sims_get_sms(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Sims__V1__GetSmsRequest *r = (const void *)req;
    sims_ctx_t cx;
    int rc = sims__sms_ctx_or_status(call, r->iccid, r->id, &cx);
    if (rc < 0 || (rc = rpc_check_violations(call)) < 0)
        return rc;
    Onceiot__Sims__V1__Sms *m;
    if ((rc = sims__load_sms(&cx, r->id, r->iccid, &m)) < 0)
        return rc;
    *resp = &m->base;
    return 0;
}

/* Moves an SMS from one of the statuses in from (a PostgreSQL array) to
 * status, setting the matching date. */
static const db_stmt_t move_sms = {
    "sims_move_sms",
    "UPDATE sim_sms m SET status = $4, "
    "sent_at = CASE WHEN $4 = 'sent' THEN coalesce('epoch'::timestamptz + $6::bigint * interval "
    "'1 microsecond', now()) ELSE sent_at END, "
    "delivered_at = CASE WHEN $4 = 'delivered' THEN coalesce('epoch'::timestamptz + $6::bigint * "
    "interval '1 microsecond', now()) ELSE delivered_at END, "
    "failed_at = CASE WHEN $4 = 'failed' THEN coalesce('epoch'::timestamptz + $6::bigint * "
    "interval '1 microsecond', now()) ELSE failed_at END, "
    "error_message = CASE WHEN $4 = 'failed' THEN $7 ELSE error_message END "
    "WHERE m.id = $1 AND m.iccid = $2 AND " SIMS_ORG_FILTER(
        "m.organization_id",
        "$3") " AND "
              "m.direction = 'MT' AND m.status = ANY ($5::text[]) RETURNING " SMS_COLUMNS
              ", m.sim_id, m.organization_id",
    7};

/* A cancelled SMS never left: its segments go back to the SIM's SMS quota
 * (no row: the SIM's SMS are not metered, nothing to give back). */
static const db_stmt_t refund_sms = {
    "sims_refund_sms",
    "UPDATE sim_quotas SET used_volume = greatest(used_volume - $2::bigint, 0) "
    "WHERE sim_id = $1 AND quota_type = 'sms'",
    2};

static int sims__move(sims_ctx_t *cx, const char *iccid, int64_t sms_id, const char *to,
                      const char *from, const char *at_us, const char *error,
                      ProtobufCMessage **resp)
{
    PGresult *res = NULL;
    const char *params[] = {sims_i64(cx, sms_id), iccid, cx->org, to, from, at_us, error};
    int rc = sims_begin(cx);
    if (rc < 0 || (rc = sims_exec(cx, &move_sms, params, &res)) < 0)
        goto out;
    if (rc == 0) {
        Onceiot__Sims__V1__Sms *cur;
        if ((rc = sims__load_sms(cx, sms_id, iccid, &cur)) < 0)
            goto out;
        rc = rpc_fail(cx->call, ERR_FAILED_PRECONDITION, "SMS %lld is %s and cannot become %s",
                      (long long)sms_id, sms_status_names[cur->status], to);
        goto out;
    }
    Onceiot__Sims__V1__Sms *m = sims__sms(cx->a, res, 0);
    sims_event_in_t ev = {
        .sim_id = db_get(res, 0, "sim_id"),
        .org = db_get(res, 0, "organization_id"),
        .iccid = iccid,
        .type = arena_printf(cx->a, "sms_%s", to),
        .category = "sms",
        .severity = strcmp(to, "failed") == 0 ? "warning" : "info",
        .description = arena_printf(cx->a, "SMS %lld %s", (long long)sms_id, to),
        .data_json = arena_printf(cx->a, "{\"sms_id\": %lld}", (long long)sms_id),
    };
    if ((rc = sims_record_event(cx, &ev)) < 0)
        goto out;
    if (strcmp(to, "cancelled") == 0) {
        const char *refund[] = {ev.sim_id, sims_i64(cx, m->segments)};
        if ((rc = sims_exec(cx, &refund_sms, refund, NULL)) < 0)
            goto out;
    }
    if ((rc = sims_commit(cx)) < 0)
        goto out;
    *resp = &m->base;
    rc = 0;
out:
    PQclear(res);
    return rc;
}

int sims_cancel_sms(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Sims__V1__GetSmsRequest *r = (const void *)req;
    sims_ctx_t cx;
    int rc = sims__sms_ctx_or_status(call, r->iccid, r->id, &cx);
    if (rc < 0 || (rc = rpc_check_violations(call)) < 0)
        return rc;
    return sims__move(&cx, r->iccid, r->id, "cancelled", "{pending}", NULL, NULL, resp);
}

int sims_update_sms_status(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Sims__V1__UpdateSmsStatusRequest *r = (const void *)req;
    sims_ctx_t cx;
    int rc = sims__sms_ctx_or_status(call, r->iccid, r->id, &cx);
    if (rc < 0)
        return rc;
    const char *from = NULL;
    switch (r->status) {
    case ONCEIOT__SIMS__V1__SMS_STATUS__SMS_STATUS_SENT:
        from = "{pending}";
        break;
    case ONCEIOT__SIMS__V1__SMS_STATUS__SMS_STATUS_DELIVERED:
    case ONCEIOT__SIMS__V1__SMS_STATUS__SMS_STATUS_FAILED:
        from = "{pending,sent}";
        break;
    default:
        rpc_violation(call, "status", "must be SENT, DELIVERED or FAILED");
    }
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    return sims__move(&cx, r->iccid, r->id, sims__sms_status_name(r->status), from,
                      sims_ts_param(&cx, r->at), sims_nz(r->error_message), resp);
}

static const db_stmt_t list_sms = {
    "sims_list_sms",
    "SELECT " SMS_COLUMNS " FROM sim_sms m JOIN sims s ON s.id = m.sim_id "
    "WHERE s.iccid = $1 AND " SIMS_ORG_FILTER(
        "s.organization_id",
        "$2") " AND ($3::text IS NULL OR m.direction = $3) AND ($4::text IS NULL OR m.status = $4)"
              " AND ($5::bigint IS NULL OR m.created_at >= 'epoch'::timestamptz + $5 * interval '1 "
              "microsecond')"
              " AND ($6::bigint IS NULL OR m.created_at < 'epoch'::timestamptz + $6 * interval '1 "
              "microsecond')"
              " AND ($7::bigint IS NULL OR m.id < $7) ORDER BY m.id DESC LIMIT $8",
    8};

int sims_list_sms(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Sims__V1__ListSmsRequest *r = (const void *)req;
    PGresult *res = NULL;
    sims_ctx_t cx;
    int rc = sims_ctx_iccid_or_status(call, r->iccid, &cx);
    if (rc < 0)
        return rc;
    int size = pagetoken_page_size(call, r->page_size, SMS_LIST_DEFAULT, SMS_LIST_MAX);
    const char *status = NULL;
    if (r->status && !(status = sims__sms_status_name(r->status)))
        rpc_violation(call, "status", "unknown status %d", (int)r->status);
    const char *dir = r->direction == ONCEIOT__SIMS__V1__SMS_DIRECTION__SMS_DIRECTION_MO   ? "MO"
                      : r->direction == ONCEIOT__SIMS__V1__SMS_DIRECTION__SMS_DIRECTION_MT ? "MT"
                                                                                           : NULL;
    if (r->direction && !dir)
        rpc_violation(call, "direction", "unknown direction %d", (int)r->direction);
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    const char *params[] = {r->iccid,
                            cx.org,
                            dir,
                            status,
                            sims_ts_param(&cx, r->since),
                            sims_ts_param(&cx, r->until),
                            NULL,
                            sims_i64(&cx, size + 1)};
    const char *parts[] = {"sms", r->iccid, cx.org, dir, status, params[4], params[5]};
    uint64_t hash = pagetoken_hash(parts, sizeof(parts) / sizeof(parts[0]));
    const char *unused;
    if (*r->page_token &&
        (rc = pagetoken_decode(call, r->page_token, hash, &params[6], &unused)) < 0)
        return rc;
    Onceiot__Sims__V1__ListSmsResponse *out = arena_alloc(cx.a, sizeof(*out));
    onceiot__sims__v1__list_sms_response__init(out);
    const sims_page_t page = {.size = size, .hash = hash, .key_col = "id"};
    int n;
    if ((rc = sims_page_exec(&cx, &list_sms, params, &page, &res, &n, &out->next_page_token)) < 0 ||
        (n == 0 && (rc = sims_visible_or_status(&cx, NULL, r->iccid)) < 0))
        goto out;
    out->sms = arena_alloc(cx.a, (size_t)(n ? n : 1) * sizeof(*out->sms));
    for (int i = 0; i < n; i++)
        out->sms[out->n_sms++] = sims__sms(cx.a, res, i);
    *resp = &out->base;
    rc = 0;
out:
    PQclear(res);
    return rc;
}
