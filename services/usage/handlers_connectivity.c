/* Connectivity queries: GetConnectivity (a SIM's latest state),
 * ListConnectivity (its samples, newest first) and ListOfflineSims (the
 * fleet's SIMs offline longer than a duration). Every statement is scoped
 * to the caller's organization; bounds that may be absent are written with
 * coalesce rather than "$n IS NULL OR", so generic plans still use the
 * indexes and prune partitions. */
#include "onceiot/pagetoken.h"
#include "usage.h"
#include "usage_sql.h"

#include <string.h>

static const db_stmt_t get_state = {
    "usage_get_conn_state",
    "SELECT " CONN_SAMPLE_COLUMNS ", transitions, "
    "(extract(epoch FROM since) * 1000000)::bigint AS since_us, "
    "(extract(epoch FROM last_seen) * 1000000)::bigint AS ts_us "
    "FROM sim_connectivity_state WHERE sim_id = $1 AND connected IS NOT NULL",
    1};

static const db_stmt_t list_samples = {"usage_list_conn", USAGE_SQL_LIST_CONNECTIVITY, 5};

/* $1 organization, $2 offline for (µs), $3/$4 the last row's (since, sim_id),
 * $5 limit. Served by the partial index on offline rows. */
#define OFFLINE_SELECT                                                                             \
    "SELECT sim_id, iccid, organization_id, "                                                      \
    "(extract(epoch FROM since) * 1000000)::bigint AS since_us, "                                  \
    "(extract(epoch FROM last_seen) * 1000000)::bigint AS last_us "                                \
    "FROM sim_connectivity_state WHERE NOT connected "
#define OFFLINE_REST                                                                               \
    "AND since < now() - $2::bigint * interval '1 microsecond' "                                   \
    "AND (since, sim_id) > (coalesce('epoch'::timestamptz + $3::bigint * interval "                \
    "'1 microsecond', '-infinity'), coalesce($4::bigint, 0)) "                                     \
    "ORDER BY since, sim_id LIMIT $5"

static const db_stmt_t list_offline_org = {
    "usage_list_offline_org", OFFLINE_SELECT "AND organization_id = $1 " OFFLINE_REST, 5};
static const db_stmt_t list_offline_all = {
    "usage_list_offline_all", OFFLINE_SELECT "AND $1::bigint IS NULL " OFFLINE_REST, 5};

static char *conn__str(arena_t *a, const PGresult *res, int row, const char *col)
{
    const char *v = db_get(res, row, col);
    return arena_strdup(a, v ? v : "");
}

static Google__Protobuf__Int32Value *conn__i32(arena_t *a, const PGresult *res, int row,
                                               const char *col)
{
    if (!db_get(res, row, col))
        return NULL;
    Google__Protobuf__Int32Value *v = arena_alloc(a, sizeof(*v));
    google__protobuf__int32_value__init(v);
    v->value = (int32_t)db_get_int(res, row, col, 0);
    return v;
}

/* A sample from a row with CONN_SAMPLE_COLUMNS and ts_us. */
static Onceiot__Usage__V1__ConnectivitySample *conn__sample(arena_t *a, const PGresult *res,
                                                            int row)
{
    Onceiot__Usage__V1__ConnectivitySample *s = arena_alloc(a, sizeof(*s));
    onceiot__usage__v1__connectivity_sample__init(s);
    s->iccid = conn__str(a, res, row, "iccid");
    s->timestamp = usage_ts(a, db_get_int(res, row, "ts_us", 0));
    s->connected = db_get_bool(res, row, "connected");
    s->cell_id = conn__str(a, res, row, "cell_id");
    s->signal_strength = conn__i32(a, res, row, "signal_strength");
    s->signal_quality = conn__i32(a, res, row, "signal_quality");
    s->rat = conn__str(a, res, row, "rat");
    s->country_code = conn__str(a, res, row, "country_code");
    s->operator_name = conn__str(a, res, row, "operator_name");
    s->mcc = conn__str(a, res, row, "mcc");
    s->mnc = conn__str(a, res, row, "mnc");
    s->apn = conn__str(a, res, row, "apn");
    return s;
}

int usage_get_connectivity(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Usage__V1__GetConnectivityRequest *r = (const void *)req;
    PGresult *res = NULL;
    usage_ctx_t cx;
    int rc = usage_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    usage_valid_iccid(call, USAGE_AT_TOP, "iccid", r->iccid);
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    usage_sim_t sim;
    if ((rc = usage_sim_or_status(&cx, r->iccid, &sim)) < 0)
        return rc;
    const char *params[] = {usage_i64(cx.a, sim.sim_id)};
    if ((rc = usage_exec(&cx, &get_state, params, &res)) < 0)
        goto out;
    if (rc == 0) {
        rc = rpc_fail(call, ERR_NOT_FOUND, "no connectivity sample of SIM %s yet", r->iccid);
        goto out;
    }
    Onceiot__Usage__V1__ConnectivityState *out = arena_alloc(cx.a, sizeof(*out));
    onceiot__usage__v1__connectivity_state__init(out);
    out->latest = conn__sample(cx.a, res, 0);
    out->iccid = out->latest->iccid;
    out->online = out->latest->connected;
    out->last_seen = out->latest->timestamp;
    out->since = usage_ts(cx.a, db_get_int(res, 0, "since_us", 0));
    out->transitions = db_get_int(res, 0, "transitions", 0);
    *resp = &out->base;
    rc = 0;
out:
    PQclear(res);
    return rc;
}

int usage_list_connectivity(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Usage__V1__ListConnectivityRequest *r = (const void *)req;
    PGresult *res = NULL;
    usage_ctx_t cx;
    int rc = usage_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    usage_sim_list_t l;
    if ((rc = usage_sim_list_or_status(&cx, "connectivity", r->iccid, r->page_size, r->start,
                                       r->end, r->page_token, &l)) < 0)
        return rc;
    int size = l.size;
    const char *params[] = {usage_i64(cx.a, l.sim.sim_id), l.from, l.to, usage_i64(cx.a, size + 1),
                            l.key};
    if ((rc = usage_exec(&cx, &list_samples, params, &res)) < 0)
        goto out;
    Onceiot__Usage__V1__ListConnectivityResponse *out = arena_alloc(cx.a, sizeof(*out));
    onceiot__usage__v1__list_connectivity_response__init(out);
    int n = rc > size ? size : rc;
    out->samples = arena_alloc(cx.a, ((size_t)n + 1) * sizeof(*out->samples));
    for (int i = 0; i < n; i++)
        out->samples[out->n_samples++] = conn__sample(cx.a, res, i);
    if (rc > size)
        out->next_page_token =
            (char *)pagetoken_encode(cx.a, l.hash, db_get(res, n - 1, "ts_us"), "");
    *resp = &out->base;
    rc = 0;
out:
    PQclear(res);
    return rc;
}

int usage_list_offline_sims(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Usage__V1__ListOfflineSimsRequest *r = (const void *)req;
    PGresult *res = NULL;
    usage_ctx_t cx;
    int rc = usage_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    int64_t for_us =
        r->offline_for ? r->offline_for->seconds * 1000000 + r->offline_for->nanos / 1000 : 0;
    if (!r->offline_for || for_us <= 0 || r->offline_for->seconds > 10LL * 366 * 86400)
        rpc_violation(call, "offline_for", "is required: more than 0 and at most 10 years");
    int size = pagetoken_page_size(call, r->page_size, 100, 1000);
    const char *org = NULL;
    if (!cx.org)
        org = r->organization_id ? usage_i64(cx.a, r->organization_id) : NULL;
    else if (r->organization_id && r->organization_id != cx.who->organization_id)
        return rpc_fail(call, ERR_PERMISSION_DENIED,
                        "only the operator's staff may read another organization's fleet");
    else
        org = cx.org;
    const char *for_text = usage_i64(cx.a, for_us);
    const char *parts[] = {"offline", for_text, org};
    uint64_t hash = pagetoken_hash(parts, 3);
    const char *key = NULL, *last = NULL;
    if (r->page_token[0] && pagetoken_decode(call, r->page_token, hash, &key, &last) < 0)
        return ERR_INVALID_ARGUMENT;
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    const char *params[] = {org, for_text, key, last, usage_i64(cx.a, size + 1)};
    if ((rc = usage_exec(&cx, org ? &list_offline_org : &list_offline_all, params, &res)) < 0)
        goto out;
    Onceiot__Usage__V1__ListOfflineSimsResponse *out = arena_alloc(cx.a, sizeof(*out));
    onceiot__usage__v1__list_offline_sims_response__init(out);
    int n = rc > size ? size : rc;
    out->sims = arena_alloc(cx.a, ((size_t)n + 1) * sizeof(*out->sims));
    for (int i = 0; i < n; i++) {
        Onceiot__Usage__V1__OfflineSim *s = arena_alloc(cx.a, sizeof(*s));
        onceiot__usage__v1__offline_sim__init(s);
        s->iccid = conn__str(cx.a, res, i, "iccid");
        s->organization_id = db_get_int(res, i, "organization_id", 0);
        s->offline_since = usage_ts(cx.a, db_get_int(res, i, "since_us", 0));
        s->last_seen = usage_ts(cx.a, db_get_int(res, i, "last_us", 0));
        out->sims[out->n_sims++] = s;
    }
    if (rc > size)
        out->next_page_token = (char *)pagetoken_encode(cx.a, hash, db_get(res, n - 1, "since_us"),
                                                        db_get(res, n - 1, "sim_id"));
    *resp = &out->base;
    rc = 0;
out:
    PQclear(res);
    return rc;
}
