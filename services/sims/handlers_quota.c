/* Quotas: GetQuota, TopUpQuota, SetQuotaPolicy and ApplyUsage (the usage
 * service's idempotent batches). */
#include "sims.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define USAGE_MAX 10000

#define QUOTA_COLUMNS                                                                              \
    "q.quota_type, q.volume, q.used_volume, q.remaining_volume, q.threshold_percentage, "          \
    "q.threshold_volume, q.threshold_reached, q.auto_reload, q.auto_reload_amount, "               \
    "q.last_volume_added, (extract(epoch FROM q.updated_at) * 1000000)::bigint AS updated_us"

static Onceiot__Sims__V1__Quota *sims__quota(arena_t *a, const char *iccid, const PGresult *res)
{
    Onceiot__Sims__V1__Quota *q = arena_alloc(a, sizeof(*q));
    onceiot__sims__v1__quota__init(q);
    q->iccid = arena_strdup(a, iccid);
    const char *t = db_get(res, 0, "quota_type");
    q->quota_type = strcmp(t, "sms") == 0 ? ONCEIOT__SIMS__V1__QUOTA_TYPE__QUOTA_TYPE_SMS
                                          : ONCEIOT__SIMS__V1__QUOTA_TYPE__QUOTA_TYPE_DATA;
    q->volume = db_get_int(res, 0, "volume", 0);
    q->used_volume = db_get_int(res, 0, "used_volume", 0);
    q->remaining_volume = db_get_int(res, 0, "remaining_volume", 0);
    q->threshold_percentage = (int32_t)db_get_int(res, 0, "threshold_percentage", 0);
    q->threshold_volume = db_get_int(res, 0, "threshold_volume", 0);
    q->threshold_reached = db_get_bool(res, 0, "threshold_reached");
    q->auto_reload = db_get_bool(res, 0, "auto_reload");
    q->auto_reload_amount = db_get_int(res, 0, "auto_reload_amount", 0);
    q->last_volume_added = db_get_int(res, 0, "last_volume_added", 0);
    q->updated_at = sims_ts(a, db_get(res, 0, "updated_us"));
    return q;
}

/* Checks iccid and quota_type; *type gets "data" or "sms". */
static int sims__quota_args(rpc_call_t *call, const char *iccid, Onceiot__Sims__V1__QuotaType t,
                            const char **type)
{
    sims_valid_iccid(call, "iccid", iccid);
    if (!(*type = sims_quota_type_name(t)))
        rpc_violation(call, "quota_type", "must be QUOTA_TYPE_DATA or QUOTA_TYPE_SMS");
    return rpc_check_violations(call);
}

/* Answers with a quota row (res) or NOT_FOUND when there is none. */
static int sims__quota_reply(sims_ctx_t *cx, const char *iccid, const char *type, PGresult *res,
                             int rows, ProtobufCMessage **resp)
{
    if (rows == 0)
        return rpc_fail(cx->call, ERR_NOT_FOUND, "SIM %s has no %s quota", iccid, type);
    *resp = &sims__quota(cx->a, iccid, res)->base;
    return 0;
}

/* Checks iccid and quota_type (*type as sims__quota_args gives it), then
 * begins the transaction, claims the request id (optional) and locks the SIM
 * (*id, *org). REQUESTID_REPLAY with *first as sims_begin_request_or_status
 * gives it. */
static int sims__quota_lock_or_status(sims_ctx_t *cx, const char *iccid,
                                      Onceiot__Sims__V1__QuotaType t, const char **type,
                                      const char **id, const char **org, const char *request_id,
                                      const ProtobufCMessage *req, ProtobufCMessage **first)
{
    int rc = sims__quota_args(cx->call, iccid, t, type);
    if (rc < 0 || (rc = sims_begin_request_or_status(cx, request_id, req, first)) != 0)
        return rc;
    return sims_lock_sim_or_status(cx, iccid, id, org, NULL);
}

/* Runs stmt, which changes a quota of the locked SIM and returns its row,
 * records ev, commits (with the answer of a claimed request id) and answers
 * with the quota. */
static int sims__quota_change(sims_ctx_t *cx, const char *iccid, const char *type,
                              const db_stmt_t *stmt, const char *const *params,
                              const sims_event_in_t *ev, ProtobufCMessage **resp)
{
    PGresult *res = NULL;
    int rc = sims_exec(cx, stmt, params, &res);
    if (rc < 0 || (rc = sims_record_event(cx, ev)) < 0 ||
        (rc = sims__quota_reply(cx, iccid, type, res, 1, resp)) < 0)
        goto out;
    rc = sims_commit_answer(cx, *resp);
out:
    PQclear(res);
    return rc;
}

static const db_stmt_t get_quota = {
    "sims_get_quota",
    "SELECT s.id, " QUOTA_COLUMNS " FROM sims s LEFT JOIN sim_quotas q "
    "ON q.sim_id = s.id AND q.quota_type = $3 WHERE s.iccid = $1 AND " SIMS_ORG_FILTER(
        "s.organization_id", "$2"),
    3};

int sims_get_quota(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Sims__V1__GetQuotaRequest *r = (const void *)req;
    PGresult *res = NULL;
    sims_ctx_t cx;
    const char *type;
    int rc = sims_ctx_or_status(call, &cx);
    if (rc < 0 || (rc = sims__quota_args(call, r->iccid, r->quota_type, &type)) < 0)
        return rc;
    const char *params[] = {r->iccid, cx.org, type};
    if ((rc = sims_exec(&cx, &get_quota, params, &res)) < 0)
        goto out;
    if (rc == 0) {
        rc = rpc_fail(call, ERR_NOT_FOUND, "no SIM %s", r->iccid);
        goto out;
    }
    rc = sims__quota_reply(&cx, r->iccid, type, res, db_get(res, 0, "quota_type") ? 1 : 0, resp);
out:
    PQclear(res);
    return rc;
}

static const db_stmt_t top_up = {
    "sims_top_up",
    "INSERT INTO sim_quotas AS q (sim_id, quota_type, volume, last_volume_added) "
    "VALUES ($1, $2, $3, $3) ON CONFLICT (sim_id, quota_type) DO UPDATE "
    "SET volume = q.volume + EXCLUDED.volume, last_volume_added = EXCLUDED.volume "
    "RETURNING " QUOTA_COLUMNS,
    3};

int sims_top_up_quota(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Sims__V1__TopUpQuotaRequest *r = (const void *)req;
    sims_ctx_t cx;
    const char *type, *id, *org;
    int rc = sims_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    if (r->volume <= 0)
        rpc_violation(call, "volume", "must be positive");
    if ((rc = sims__quota_lock_or_status(&cx, r->iccid, r->quota_type, &type, &id, &org,
                                         r->request_id, req, resp)) != 0)
        return rc < 0 ? rc : 0; /* or the first answer, replayed */
    const char *params[] = {id, type, sims_i64(&cx, r->volume)};
    const sims_event_in_t ev = {
        .sim_id = id,
        .org = org,
        .iccid = r->iccid,
        .type = "quota_added",
        .category = "quota",
        .description = arena_printf(cx.a, "%lld added to the %s quota", (long long)r->volume, type),
        .data_json = arena_printf(cx.a, "{\"quota_type\": \"%s\", \"added\": %lld}", type,
                                  (long long)r->volume),
    };
    return sims__quota_change(&cx, r->iccid, type, &top_up, params, &ev, resp);
}

static const db_stmt_t set_policy = {
    "sims_set_policy",
    "INSERT INTO sim_quotas AS q (sim_id, quota_type, threshold_percentage, auto_reload, "
    "auto_reload_amount) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (sim_id, quota_type) DO UPDATE "
    "SET threshold_percentage = EXCLUDED.threshold_percentage, "
    "auto_reload = EXCLUDED.auto_reload, auto_reload_amount = EXCLUDED.auto_reload_amount "
    "RETURNING " QUOTA_COLUMNS,
    5};

int sims_set_quota_policy(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Sims__V1__SetQuotaPolicyRequest *r = (const void *)req;
    sims_ctx_t cx;
    const char *type, *id, *org;
    int rc = sims_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    if (r->threshold_percentage < 1 || r->threshold_percentage > 100)
        rpc_violation(call, "threshold_percentage", "must be between 1 and 100");
    if (r->auto_reload_amount < 0 || (r->auto_reload && r->auto_reload_amount == 0))
        rpc_violation(call, "auto_reload_amount", "must be positive when auto_reload is on");
    if ((rc = sims__quota_lock_or_status(&cx, r->iccid, r->quota_type, &type, &id, &org, NULL, NULL,
                                         NULL)) < 0)
        return rc;
    const char *params[] = {id, type, sims_i64(&cx, r->threshold_percentage),
                            r->auto_reload ? "t" : "f", sims_i64(&cx, r->auto_reload_amount)};
    const sims_event_in_t ev = {
        .sim_id = id,
        .org = org,
        .iccid = r->iccid,
        .type = "quota_policy_changed",
        .category = "quota",
        .data_json = arena_printf(cx.a,
                                  "{\"quota_type\": \"%s\", \"threshold_percentage\": %d, "
                                  "\"auto_reload\": %s, \"auto_reload_amount\": %lld}",
                                  type, r->threshold_percentage, r->auto_reload ? "true" : "false",
                                  (long long)r->auto_reload_amount),
    };
    return sims__quota_change(&cx, r->iccid, type, &set_policy, params, &ev, resp);
}

static const db_stmt_t claim_batch = {
    "sims_claim_batch",
    "INSERT INTO processed_usage_batches (batch_id, item_count, response) VALUES ($1, $2, '') "
    "ON CONFLICT DO NOTHING",
    2};
static const db_stmt_t batch_response = {
    "sims_batch_response", "SELECT response FROM processed_usage_batches WHERE batch_id = $1", 1};
static const db_stmt_t store_response = {
    "sims_store_response",
    "UPDATE processed_usage_batches SET response = decode($2, 'base64') WHERE batch_id = $1", 2};

/* An item of a batch and its place in the request (named in violations). */
typedef struct sims_item {
    const Onceiot__Sims__V1__UsageItem *it;
    size_t index;
} sims_item_t;

/* Byte order of ICCIDs, as the lock statement's ORDER BY ... COLLATE "C". */
static int sims__cmp_item(const void *x, const void *y)
{
    const sims_item_t *a = x, *b = y;
    int c = strcmp(a->it->iccid, b->it->iccid);
    return c ? c : (a->index > b->index) - (a->index < b->index);
}

/* The batch's SIMs, locked in ICCID byte order: concurrent batches take
 * their common SIMs in one order and never deadlock. LockRows runs above
 * the sort, so the rows are locked in the order they are returned. */
static const db_stmt_t lock_sims = {
    "sims_lock_sims",
    "SELECT id, organization_id, iccid FROM sims WHERE iccid = ANY($1::text[]) "
    "AND " SIMS_ORG_FILTER("organization_id", "$2") " ORDER BY iccid COLLATE \"C\" FOR UPDATE",
    2};

/* Their text is in sims_sql.h (the plan test EXPLAINs it). */
static const db_stmt_t consume_all = {"sims_consume_all", SIMS_CONSUME_ALL, 3};
static const db_stmt_t reload_all = {"sims_reload_all", SIMS_RELOAD_ALL, 2};

/* The answer a batch got the first time (bytea, escaped as PostgreSQL's hex
 * output), marked replayed. */
static int sims__replay(sims_ctx_t *cx, const char *batch_id, ProtobufCMessage **resp)
{
    PGresult *res = NULL;
    const char *params[] = {batch_id};
    int rc = sims_exec(cx, &batch_response, params, &res);
    if (rc < 0)
        goto out;
    size_t len = 0;
    unsigned char *bytes =
        rc ? PQunescapeBytea((const unsigned char *)db_get(res, 0, "response"), &len) : NULL;
    Onceiot__Sims__V1__ApplyUsageResponse *out =
        bytes ? onceiot__sims__v1__apply_usage_response__unpack(arena_allocator(cx->a), len, bytes)
              : NULL;
    PQfreemem(bytes);
    if (!out) {
        rc = rpc_fail(cx->call, ERR_INTERNAL, "the stored answer of batch %s is unreadable",
                      batch_id);
        goto out;
    }
    out->replayed = true;
    *resp = &out->base;
    rc = 0;
out:
    PQclear(res);
    return rc;
}

/* Checks the request: batch id, size, every item (ICCID, no negative
 * usage, no ICCID twice). Returns rpc_check_violations. *sorted gets the
 * items in ICCID byte order. */
static int sims__usage_args(sims_ctx_t *cx, const Onceiot__Sims__V1__ApplyUsageRequest *r,
                            sims_item_t **sorted)
{
    rpc_call_t *call = cx->call;
    size_t blen = strlen(r->batch_id);
    if (blen == 0 || blen > 128)
        rpc_violation(call, "batch_id", "must be 1 to 128 characters");
    if (r->n_items == 0 || r->n_items > USAGE_MAX) {
        rpc_violation(call, "items", "must hold 1 to %d items", USAGE_MAX);
        return rpc_check_violations(call);
    }
    for (size_t i = 0; i < r->n_items; i++) {
        const Onceiot__Sims__V1__UsageItem *it = r->items[i];
        if (!sims_valid_iccid(call, arena_printf(cx->a, "items[%zu].iccid", i), it->iccid))
            return rpc_check_violations(call);
        if (it->data_bytes < 0 || it->sms_count < 0) {
            rpc_violation(call, arena_printf(cx->a, "items[%zu]", i), "usage must not be negative");
            return rpc_check_violations(call);
        }
    }
    sims_item_t *v = arena_alloc(cx->a, r->n_items * sizeof(*v));
    for (size_t i = 0; i < r->n_items; i++)
        v[i] = (sims_item_t){r->items[i], i};
    qsort(v, r->n_items, sizeof(*v), sims__cmp_item);
    for (size_t i = 1; i < r->n_items; i++)
        if (strcmp(v[i - 1].it->iccid, v[i].it->iccid) == 0) {
            rpc_violation(call, arena_printf(cx->a, "items[%zu].iccid", v[i].index),
                          "ICCID %s is also items[%zu]: one item per SIM", v[i].it->iccid,
                          v[i - 1].index);
            break;
        }
    *sorted = v;
    return rpc_check_violations(call);
}

/* Locks the batch's SIMs (n items in ICCID order); ids[i] and orgs[i] get
 * item i's SIM. NOT_FOUND (status set) naming the first unknown ICCID. */
static int sims__lock_items_or_status(sims_ctx_t *cx, const sims_item_t *v, size_t n,
                                      const char **ids, const char **orgs)
{
    const char **iccids = arena_alloc(cx->a, n * sizeof(char *));
    for (size_t i = 0; i < n; i++)
        iccids[i] = v[i].it->iccid;
    PGresult *res = NULL;
    const db_value_t params[] = {db_value_text_array(cx->a, iccids, n), db_value_text(cx->org)};
    int rc = svc_exec_values_or_status(cx->call, &lock_sims, params, &res);
    if (rc < 0)
        goto out;
    /* Both sides are in byte order: the first mismatch is the first unknown. */
    int rows = rc;
    size_t i = 0;
    for (; i < n && (int)i < rows; i++) {
        if (strcmp(db_get(res, (int)i, "iccid"), iccids[i]) != 0)
            break;
        ids[i] = arena_strdup(cx->a, db_get(res, (int)i, "id"));
        orgs[i] = arena_strdup(cx->a, db_get(res, (int)i, "organization_id"));
    }
    rc = i == n ? 0 : rpc_fail(cx->call, ERR_NOT_FOUND, "no SIM %s", iccids[i]);
out:
    PQclear(res);
    return rc;
}

/* The quota types of a batch: input row 2i is item i's data, 2i + 1 its SMS. */
static const char *const sims__usage_types[2] = {"data", "sms"};

/* Reloads the quotas of the n input rows in rows[] (auto-reload after
 * depletion) in one statement; remaining[row] gets what each has now. */
static int sims__reload_all(sims_ctx_t *cx, const char *const *ids, const size_t *rows, size_t n,
                            int64_t *remaining)
{
    if (n == 0)
        return 0;
    int64_t *sim = arena_alloc(cx->a, n * sizeof(int64_t));
    const char **type = arena_alloc(cx->a, n * sizeof(char *));
    for (size_t k = 0; k < n; k++) {
        sim[k] = strtoll(ids[rows[k] / 2], NULL, 10);
        type[k] = sims__usage_types[rows[k] % 2];
    }
    PGresult *res = NULL;
    const db_value_t params[] = {db_value_int8_array(cx->a, sim, NULL, n),
                                 db_value_text_array(cx->a, type, n)};
    int rc = svc_exec_values_or_status(cx->call, &reload_all, params, &res);
    for (int k = 0; rc > 0 && k < rc; k++)
        remaining[rows[db_get_int(res, k, "ord", 1) - 1]] =
            db_get_int(res, k, "remaining_volume", 0);
    PQclear(res);
    return rc < 0 ? rc : 0;
}

/* Applies the usage of n locked items (ICCID order) in a constant number of
 * statements: one UPDATE of every quota, one reload of those depleted with
 * auto-reload on, one INSERT of the events; fills out's outcomes in item
 * order. */
static int sims__consume_all(sims_ctx_t *cx, const sims_item_t *v, size_t n, const char *const *ids,
                             const char *const *orgs, Onceiot__Sims__V1__ApplyUsageResponse *out)
{
    size_t rows = 2 * n;
    int64_t *sim = arena_alloc(cx->a, rows * sizeof(int64_t));
    const char **type = arena_alloc(cx->a, rows * sizeof(char *));
    int64_t *amount = arena_alloc(cx->a, rows * sizeof(int64_t));
    int64_t *remaining = arena_alloc(cx->a, rows * sizeof(int64_t));
    sims_quota_after_t *after = arena_alloc(cx->a, rows * sizeof(*after));
    bool *metered = arena_alloc(cx->a, rows * sizeof(bool));
    for (size_t r = 0; r < rows; r++) {
        const Onceiot__Sims__V1__UsageItem *it = v[r / 2].it;
        sim[r] = strtoll(ids[r / 2], NULL, 10);
        type[r] = sims__usage_types[r % 2];
        amount[r] = r % 2 ? it->sms_count : it->data_bytes;
        remaining[r] = -1; /* unmetered unless the UPDATE finds the quota */
        metered[r] = false;
    }
    PGresult *res = NULL;
    const db_value_t params[] = {db_value_int8_array(cx->a, sim, NULL, rows),
                                 db_value_text_array(cx->a, type, rows),
                                 db_value_int8_array(cx->a, amount, NULL, rows)};
    int rc = svc_exec_values_or_status(cx->call, &consume_all, params, &res);
    if (rc < 0)
        goto out;
    for (int k = 0; k < rc; k++) {
        size_t r = (size_t)db_get_int(res, k, "ord", 1) - 1;
        const Onceiot__Sims__V1__UsageItem *it = v[r / 2].it;
        after[r] = sims_quota_after(res, k, r % 2 ? it->sms_count : it->data_bytes);
        remaining[r] = after[r].remaining;
        metered[r] = true;
    }

    /* Events in the order the item-by-item loop recorded them: by ICCID,
     * data before SMS, threshold before depletion before reload. */
    sims_event_in_t *ev = arena_alloc(cx->a, 3 * rows * sizeof(*ev));
    const char **ev_types = arena_alloc(cx->a, 3 * rows * sizeof(char *));
    size_t *n_ev = arena_alloc(cx->a, rows * sizeof(size_t));
    size_t *reloads = arena_alloc(cx->a, rows * sizeof(size_t));
    size_t total = 0, n_reloads = 0;
    for (size_t r = 0; r < rows; r++) {
        n_ev[r] = 0;
        if (!metered[r])
            continue;
        const sims_event_in_t who = {
            .sim_id = ids[r / 2], .org = orgs[r / 2], .iccid = v[r / 2].it->iccid};
        bool reload;
        n_ev[r] = sims_quota_events(cx, &after[r], &who, type[r], ev + total, &reload);
        for (size_t k = 0; k < n_ev[r]; k++)
            ev_types[total + k] = ev[total + k].type;
        total += n_ev[r];
        if (reload)
            reloads[n_reloads++] = r;
    }
    if ((rc = sims__reload_all(cx, ids, reloads, n_reloads, remaining)) < 0 ||
        (rc = sims_insert_events(cx, ev, total)) < 0)
        goto out;

    out->outcomes = arena_alloc(cx->a, n * sizeof(*out->outcomes));
    const char **next_ev = ev_types;
    for (size_t i = 0; i < n; i++) {
        Onceiot__Sims__V1__UsageOutcome *o = arena_alloc(cx->a, sizeof(*o));
        onceiot__sims__v1__usage_outcome__init(o);
        o->iccid = v[i].it->iccid;
        o->data_remaining = remaining[2 * i];
        o->sms_remaining = remaining[2 * i + 1];
        o->n_events = n_ev[2 * i] + n_ev[2 * i + 1];
        o->events = (char **)next_ev;
        next_ev += o->n_events;
        out->outcomes[out->n_outcomes++] = o;
    }
    rc = 0;
out:
    PQclear(res);
    return rc;
}

/* Idempotent: the batch id is claimed first in the same transaction as the
 * usage; a concurrent duplicate waits on the claim's unique index and then
 * sees it. The batch's SIMs are locked in ICCID order so concurrent batches
 * never deadlock, then every quota is consumed at once (a constant number
 * of statements, whatever the batch's size). An unknown ICCID fails the
 * whole batch (NOT_FOUND, nothing applied, the id stays unclaimed). */
int sims_apply_usage(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Sims__V1__ApplyUsageRequest *r = (const void *)req;
    sims_ctx_t cx;
    sims_item_t *items = NULL;
    int rc = sims_ctx_or_status(call, &cx);
    if (rc < 0 || (rc = sims__usage_args(&cx, r, &items)) < 0)
        return rc;
    if ((rc = sims_begin(&cx)) < 0)
        return rc;
    const char *claim[] = {r->batch_id, sims_i64(&cx, (int64_t)r->n_items)};
    if ((rc = sims_exec(&cx, &claim_batch, claim, NULL)) < 0)
        return rc;
    if (rc == 0)
        return sims__replay(&cx, r->batch_id, resp);

    const char **ids = arena_alloc(cx.a, r->n_items * sizeof(char *));
    const char **orgs = arena_alloc(cx.a, r->n_items * sizeof(char *));
    if ((rc = sims__lock_items_or_status(&cx, items, r->n_items, ids, orgs)) < 0)
        return rc;
    Onceiot__Sims__V1__ApplyUsageResponse *out = arena_alloc(cx.a, sizeof(*out));
    onceiot__sims__v1__apply_usage_response__init(out);
    out->batch_id = r->batch_id;
    if ((rc = sims__consume_all(&cx, items, r->n_items, ids, orgs, out)) < 0)
        return rc;
    size_t len = onceiot__sims__v1__apply_usage_response__get_packed_size(out);
    uint8_t *packed = arena_alloc(cx.a, len + 1);
    onceiot__sims__v1__apply_usage_response__pack(out, packed);
    size_t b64_len = sodium_base64_encoded_len(len, sodium_base64_VARIANT_ORIGINAL);
    char *b64 = arena_alloc(cx.a, b64_len);
    sodium_bin2base64(b64, b64_len, packed, len, sodium_base64_VARIANT_ORIGINAL);
    const char *store[] = {r->batch_id, b64};
    if ((rc = sims_exec(&cx, &store_response, store, NULL)) < 0 || (rc = sims_commit(&cx)) < 0)
        return rc;
    *resp = &out->base;
    return 0;
}
