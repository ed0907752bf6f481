/* Queries: GetSimUsage, ListUsageRecords, GetFleetUsage, ListTopSims and
 * GetIngestStatus. Everything but the raw record list is answered from the
 * rollups; every statement takes the caller's organization (NULL for a
 * superuser's "all"), or a SIM already checked to be the caller's. */
#include "onceiot/pagetoken.h"
#include "usage.h"
#include "usage_sql.h"

#include <string.h>
#include <time.h>

#define HOUR_US        (3600LL * 1000000)
#define DAY_US         (86400LL * 1000000)
#define MAX_HOUR_DAYS  31
#define MAX_RANGE_DAYS 1827 /* 5 years */

#define TOTALS_SUMS                                                                                \
    "sum(volume_rx)::bigint AS volume_rx, sum(volume_tx)::bigint AS volume_tx, "                   \
    "sum(sms_mo)::bigint AS sms_mo, sum(sms_mt)::bigint AS sms_mt, "                               \
    "sum(session_count)::bigint AS session_count, sum(records)::bigint AS records"

static Onceiot__Usage__V1__UsageTotals *usage__totals(arena_t *a, const PGresult *res, int row)
{
    Onceiot__Usage__V1__UsageTotals *t = arena_alloc(a, sizeof(*t));
    onceiot__usage__v1__usage_totals__init(t);
    t->volume_rx = db_get_int(res, row, "volume_rx", 0);
    t->volume_tx = db_get_int(res, row, "volume_tx", 0);
    t->total_volume = t->volume_rx + t->volume_tx;
    t->sms_mo = db_get_int(res, row, "sms_mo", 0);
    t->sms_mt = db_get_int(res, row, "sms_mt", 0);
    t->total_sms = t->sms_mo + t->sms_mt;
    t->session_count = db_get_int(res, row, "session_count", 0);
    t->records = db_get_int(res, row, "records", 0);
    return t;
}

static void usage__add(Onceiot__Usage__V1__UsageTotals *to,
                       const Onceiot__Usage__V1__UsageTotals *t)
{
    to->volume_rx += t->volume_rx;
    to->volume_tx += t->volume_tx;
    to->total_volume += t->total_volume;
    to->sms_mo += t->sms_mo;
    to->sms_mt += t->sms_mt;
    to->total_sms += t->total_sms;
    to->session_count += t->session_count;
    to->records += t->records;
}

/* Checks a required [start, end) of at most max_days; *s and *e get them in
 * microseconds. Records violations (the caller checks them). */
static void usage__range(rpc_call_t *call, const Google__Protobuf__Timestamp *start,
                         const Google__Protobuf__Timestamp *end, int max_days, int64_t *s,
                         int64_t *e)
{
    *s = usage_ts_us(start);
    *e = usage_ts_us(end);
    if (!start)
        rpc_violation(call, "start", "is required");
    if (!end)
        rpc_violation(call, "end", "is required");
    else if (start && *e <= *s)
        rpc_violation(call, "end", "must be after start");
    else if (start && *e - *s > (int64_t)max_days * DAY_US)
        rpc_violation(call, "end", "must be at most %d days after start", max_days);
}

/* The first day of the month of a day (days since the epoch). */
static int64_t usage__month_start(int64_t day)
{
    time_t t = (time_t)(day * 86400);
    struct tm tm;
    gmtime_r(&t, &tm);
    tm.tm_mday = 1;
    tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
    return (int64_t)timegm(&tm) / 86400;
}

/* ---- GetSimUsage ---- */

static const db_stmt_t sim_hourly = {
    "usage_sim_hourly",
    "SELECT extract(epoch FROM hour)::bigint AS bucket_s, volume_rx, volume_tx, sms_mo, sms_mt, "
    "session_count, records FROM sim_usage_hourly "
    "WHERE sim_id = $1 AND hour >= $2::timestamptz AND hour < $3::timestamptz ORDER BY hour",
    3};
static const db_stmt_t sim_daily = {
    "usage_sim_daily",
    "SELECT (day - DATE '1970-01-01')::bigint * 86400 AS bucket_s, volume_rx, volume_tx, sms_mo, "
    "sms_mt, session_count, records FROM sim_usage_daily "
    "WHERE sim_id = $1 AND day >= $2::date AND day < $3::date ORDER BY day",
    3};
static const db_stmt_t sim_monthly = {
    "usage_sim_monthly",
    "SELECT (date_trunc('month', day)::date - DATE '1970-01-01')::bigint * 86400 AS "
    "bucket_s, " TOTALS_SUMS
    " FROM sim_usage_daily WHERE sim_id = $1 AND day >= $2::date AND day < $3::date "
    "GROUP BY 1 ORDER BY 1",
    3};

int usage_get_sim_usage(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Usage__V1__GetSimUsageRequest *r = (const void *)req;
    PGresult *res = NULL;
    usage_ctx_t cx;
    int rc = usage_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    usage_valid_iccid(call, USAGE_AT_TOP, "iccid", r->iccid);
    const db_stmt_t *stmt = NULL;
    int max_days = MAX_RANGE_DAYS;
    switch (r->granularity) {
    case ONCEIOT__USAGE__V1__GRANULARITY__GRANULARITY_HOUR:
        stmt = &sim_hourly;
        max_days = MAX_HOUR_DAYS;
        break;
    case ONCEIOT__USAGE__V1__GRANULARITY__GRANULARITY_DAY:
        stmt = &sim_daily;
        break;
    case ONCEIOT__USAGE__V1__GRANULARITY__GRANULARITY_MONTH:
        stmt = &sim_monthly;
        break;
    default:
        rpc_violation(call, "granularity", "must be HOUR, DAY or MONTH");
    }
    int64_t s, e;
    usage__range(call, r->start, r->end, max_days, &s, &e);
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    usage_sim_t sim;
    if ((rc = usage_sim_or_status(&cx, r->iccid, &sim)) < 0)
        return rc;
    const char *from, *to;
    if (stmt == &sim_hourly) {
        from = usage_ts_text(cx.a, usage_floor_div(s, HOUR_US) * HOUR_US);
        to = usage_ts_text(cx.a, e);
    } else {
        int64_t day = usage_floor_div(s, DAY_US);
        from = usage_day_text(cx.a, stmt == &sim_monthly ? usage__month_start(day) : day);
        to = usage_day_text(cx.a, usage_floor_div(e - 1, DAY_US) + 1);
    }
    const char *params[] = {usage_i64(cx.a, sim.sim_id), from, to};
    if ((rc = usage_exec(&cx, stmt, params, &res)) < 0)
        goto out;
    Onceiot__Usage__V1__GetSimUsageResponse *out = arena_alloc(cx.a, sizeof(*out));
    onceiot__usage__v1__get_sim_usage_response__init(out);
    out->iccid = r->iccid;
    out->totals = arena_alloc(cx.a, sizeof(*out->totals));
    onceiot__usage__v1__usage_totals__init(out->totals);
    out->buckets = arena_alloc(cx.a, ((size_t)rc + 1) * sizeof(*out->buckets));
    for (int i = 0; i < rc; i++) {
        Onceiot__Usage__V1__SimUsageBucket *b = arena_alloc(cx.a, sizeof(*b));
        onceiot__usage__v1__sim_usage_bucket__init(b);
        b->start = usage_ts(cx.a, db_get_int(res, i, "bucket_s", 0) * 1000000);
        b->totals = usage__totals(cx.a, res, i);
        usage__add(out->totals, b->totals);
        out->buckets[out->n_buckets++] = b;
    }
    *resp = &out->base;
    rc = 0;
out:
    PQclear(res);
    return rc;
}

/* ---- ListUsageRecords ---- */

/* Newest first, keyset on (timestamp, id), over both forms (usage_sql.h). */
static const db_stmt_t list_records = {"usage_list_records", USAGE_SQL_LIST_RECORDS, 6};

static char *usage__str(arena_t *a, const PGresult *res, int row, const char *col)
{
    const char *v = db_get(res, row, col);
    return arena_strdup(a, v ? v : "");
}

int usage_list_usage_records(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Usage__V1__ListUsageRecordsRequest *r = (const void *)req;
    PGresult *res = NULL;
    usage_ctx_t cx;
    int rc = usage_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    usage_sim_list_t l;
    if ((rc = usage_sim_list_or_status(&cx, "records", r->iccid, r->page_size, r->start, r->end,
                                       r->page_token, &l)) < 0)
        return rc;
    int size = l.size;
    uint64_t hash = l.hash;
    const char *params[] = {usage_i64(cx.a, l.sim.sim_id), l.from, l.to,
                            usage_i64(cx.a, size + 1),     l.key,  l.last};
    if ((rc = usage_exec(&cx, &list_records, params, &res)) < 0)
        goto out;
    Onceiot__Usage__V1__ListUsageRecordsResponse *out = arena_alloc(cx.a, sizeof(*out));
    onceiot__usage__v1__list_usage_records_response__init(out);
    int n = rc > size ? size : rc;
    out->records = arena_alloc(cx.a, ((size_t)n + 1) * sizeof(*out->records));
    for (int i = 0; i < n; i++) {
        Onceiot__Usage__V1__UsageRecord *u = arena_alloc(cx.a, sizeof(*u));
        onceiot__usage__v1__usage_record__init(u);
        u->iccid = usage__str(cx.a, res, i, "iccid");
        u->timestamp = usage_ts(cx.a, db_get_int(res, i, "ts_us", 0));
        u->volume_rx = db_get_int(res, i, "volume_rx", 0);
        u->volume_tx = db_get_int(res, i, "volume_tx", 0);
        u->total_volume = db_get_int(res, i, "total_volume", 0);
        u->sms_mo = (int32_t)db_get_int(res, i, "sms_mo", 0);
        u->sms_mt = (int32_t)db_get_int(res, i, "sms_mt", 0);
        u->session_count = (int32_t)db_get_int(res, i, "session_count", 0);
        u->mcc = usage__str(cx.a, res, i, "mcc");
        u->mnc = usage__str(cx.a, res, i, "mnc");
        u->country = usage__str(cx.a, res, i, "country");
        u->rat = usage__str(cx.a, res, i, "rat");
        out->records[out->n_records++] = u;
    }
    if (rc > size)
        out->next_page_token = (char *)pagetoken_encode(cx.a, hash, db_get(res, n - 1, "ts_us"),
                                                        db_get(res, n - 1, "id"));
    *resp = &out->base;
    rc = 0;
out:
    PQclear(res);
    return rc;
}

/* ---- GetFleetUsage and ListTopSims: the organization they read ---- */

/* The organization a fleet query reads: the caller's own, or for a
 * superuser the one asked for (NULL: all). Another organization asked for by
 * anyone else is PERMISSION_DENIED (status set, returns false). */
static bool usage__fleet_org(usage_ctx_t *cx, int64_t asked, const char **org)
{
    if (!cx->org) {
        *org = asked ? usage_i64(cx->a, asked) : NULL;
        return true;
    }
    if (asked && asked != cx->who->organization_id) {
        rpc_fail(cx->call, ERR_PERMISSION_DENIED,
                 "only the operator's staff may read another organization's fleet");
        return false;
    }
    *org = cx->org;
    return true;
}

#define ORG_FILTER   "($1::bigint IS NULL OR organization_id = $1::bigint)"
#define DAY_RANGE    " AND day >= $2::date AND day < $3::date"
#define DAY_BUCKET   "(day - DATE '1970-01-01')::bigint * 86400"
#define MONTH_OF     "date_trunc('month', day)::date"
#define MONTH_BUCKET "(" MONTH_OF " - DATE '1970-01-01')::bigint * 86400"

/* Per day, ungrouped: the organization's deltas (one row per batch and day),
 * whose active_sims add up to the exact distinct count. */
static const db_stmt_t fleet_day = {
    "usage_fleet_day",
    "SELECT " DAY_BUCKET " AS bucket_s, '' AS country, '' AS mcc, '' AS mnc, "
    "sum(active_sims)::bigint AS active_sims, " TOTALS_SUMS
    " FROM org_usage_daily WHERE " ORG_FILTER DAY_RANGE " GROUP BY day ORDER BY day",
    3};
/* Per month: totals from the deltas; distinct SIMs of a month cannot be
 * added up from days, so they are counted in the per-SIM daily rollup. */
static const db_stmt_t fleet_month = {
    "usage_fleet_month",
    "WITH t AS (SELECT " MONTH_OF " AS m, " TOTALS_SUMS
    " FROM org_usage_daily WHERE " ORG_FILTER DAY_RANGE " GROUP BY 1), a AS (SELECT " MONTH_OF
    " AS m, count(DISTINCT sim_id) AS active_sims "
    "FROM sim_usage_daily WHERE " ORG_FILTER DAY_RANGE " GROUP BY 1) "
    "SELECT (t.m - DATE '1970-01-01')::bigint * 86400 AS bucket_s, '' AS country, '' AS mcc, "
    "'' AS mnc, coalesce(a.active_sims, 0) AS active_sims, t.* FROM t LEFT JOIN a USING (m) "
    "ORDER BY t.m",
    3};
/* Grouped by country or network: the per-SIM per-network daily rollup,
 * which also holds the membership the distinct count needs. */
#define FLEET_GROUPED(name, bucket, keys, cols)                                                    \
    static const db_stmt_t name = {"usage_" #name,                                                 \
                                   "SELECT " bucket " AS bucket_s, " cols                          \
                                   ", count(DISTINCT sim_id) AS active_sims, " TOTALS_SUMS         \
                                   " FROM sim_usage_daily_network WHERE " ORG_FILTER DAY_RANGE     \
                                   " GROUP BY 1, " keys " ORDER BY 1, " keys,                      \
                                   3}
FLEET_GROUPED(fleet_day_country, DAY_BUCKET, "country", "country, '' AS mcc, '' AS mnc");
FLEET_GROUPED(fleet_day_network, DAY_BUCKET, "mcc, mnc", "'' AS country, mcc, mnc");
FLEET_GROUPED(fleet_month_country, MONTH_BUCKET, "country", "country, '' AS mcc, '' AS mnc");
FLEET_GROUPED(fleet_month_network, MONTH_BUCKET, "mcc, mnc", "'' AS country, mcc, mnc");

int usage_get_fleet_usage(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Usage__V1__GetFleetUsageRequest *r = (const void *)req;
    PGresult *res = NULL;
    usage_ctx_t cx;
    int rc = usage_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    static const db_stmt_t *const stmts[2][3] = {
        {&fleet_day, &fleet_day_country, &fleet_day_network},
        {&fleet_month, &fleet_month_country, &fleet_month_network},
    };
    bool month = r->granularity == ONCEIOT__USAGE__V1__GRANULARITY__GRANULARITY_MONTH;
    if (!month && r->granularity != ONCEIOT__USAGE__V1__GRANULARITY__GRANULARITY_DAY)
        rpc_violation(call, "granularity", "must be DAY or MONTH");
    if ((int)r->group_by < 0 || (int)r->group_by > 2)
        rpc_violation(call, "group_by", "must be NONE, COUNTRY or NETWORK");
    int64_t s, e;
    usage__range(call, r->start, r->end, MAX_RANGE_DAYS, &s, &e);
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    const char *org;
    if (!usage__fleet_org(&cx, r->organization_id, &org))
        return ERR_PERMISSION_DENIED;
    int64_t day = usage_floor_div(s, DAY_US);
    const char *params[] = {org, usage_day_text(cx.a, month ? usage__month_start(day) : day),
                            usage_day_text(cx.a, usage_floor_div(e - 1, DAY_US) + 1)};
    if ((rc = usage_exec(&cx, stmts[month][r->group_by], params, &res)) < 0)
        goto out;
    Onceiot__Usage__V1__GetFleetUsageResponse *out = arena_alloc(cx.a, sizeof(*out));
    onceiot__usage__v1__get_fleet_usage_response__init(out);
    out->buckets = arena_alloc(cx.a, ((size_t)rc + 1) * sizeof(*out->buckets));
    for (int i = 0; i < rc; i++) {
        Onceiot__Usage__V1__FleetUsageBucket *b = arena_alloc(cx.a, sizeof(*b));
        onceiot__usage__v1__fleet_usage_bucket__init(b);
        b->start = usage_ts(cx.a, db_get_int(res, i, "bucket_s", 0) * 1000000);
        b->country = usage__str(cx.a, res, i, "country");
        b->mcc = usage__str(cx.a, res, i, "mcc");
        b->mnc = usage__str(cx.a, res, i, "mnc");
        b->active_sims = db_get_int(res, i, "active_sims", 0);
        b->totals = usage__totals(cx.a, res, i);
        out->buckets[out->n_buckets++] = b;
    }
    *resp = &out->base;
    rc = 0;
out:
    PQclear(res);
    return rc;
}

/* ---- ListTopSims ---- */

#define TOP_SIMS(name, order)                                                                      \
    static const db_stmt_t name = {"usage_" #name,                                                 \
                                   "SELECT iccid, organization_id, " TOTALS_SUMS                   \
                                   " FROM sim_usage_daily WHERE " ORG_FILTER DAY_RANGE             \
                                   " GROUP BY sim_id, iccid, organization_id ORDER BY " order      \
                                   " DESC, iccid "                                                 \
                                   "LIMIT $4",                                                     \
                                   4}
TOP_SIMS(top_by_data, "sum(volume_rx) + sum(volume_tx)");
TOP_SIMS(top_by_sms, "sum(sms_mo) + sum(sms_mt)");

int usage_list_top_sims(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Usage__V1__ListTopSimsRequest *r = (const void *)req;
    PGresult *res = NULL;
    usage_ctx_t cx;
    int rc = usage_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    if (r->limit < 0 || r->limit > 100)
        rpc_violation(call, "limit", "must be between 1 and 100");
    if (r->by != ONCEIOT__USAGE__V1__TOP_SIMS_BY__TOP_SIMS_BY_DATA &&
        r->by != ONCEIOT__USAGE__V1__TOP_SIMS_BY__TOP_SIMS_BY_SMS)
        rpc_violation(call, "by", "must be DATA or SMS");
    int64_t s, e;
    usage__range(call, r->start, r->end, MAX_RANGE_DAYS, &s, &e);
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    const char *org;
    if (!usage__fleet_org(&cx, r->organization_id, &org))
        return ERR_PERMISSION_DENIED;
    const char *params[] = {org, usage_day_text(cx.a, usage_floor_div(s, DAY_US)),
                            usage_day_text(cx.a, usage_floor_div(e - 1, DAY_US) + 1),
                            usage_i64(cx.a, r->limit ? r->limit : 10)};
    const db_stmt_t *stmt =
        r->by == ONCEIOT__USAGE__V1__TOP_SIMS_BY__TOP_SIMS_BY_SMS ? &top_by_sms : &top_by_data;
    if ((rc = usage_exec(&cx, stmt, params, &res)) < 0)
        goto out;
    Onceiot__Usage__V1__ListTopSimsResponse *out = arena_alloc(cx.a, sizeof(*out));
    onceiot__usage__v1__list_top_sims_response__init(out);
    out->sims = arena_alloc(cx.a, ((size_t)rc + 1) * sizeof(*out->sims));
    for (int i = 0; i < rc; i++) {
        Onceiot__Usage__V1__TopSim *t = arena_alloc(cx.a, sizeof(*t));
        onceiot__usage__v1__top_sim__init(t);
        t->iccid = usage__str(cx.a, res, i, "iccid");
        t->organization_id = db_get_int(res, i, "organization_id", 0);
        t->totals = usage__totals(cx.a, res, i);
        out->sims[out->n_sims++] = t;
    }
    *resp = &out->base;
    rc = 0;
out:
    PQclear(res);
    return rc;
}

/* ---- GetIngestStatus ---- */

#define RECENT_BATCHES 20

static const db_stmt_t recent_batches = {
    "usage_recent_batches",
    "SELECT batch_id, records, (extract(epoch FROM committed_at) * 1000000)::bigint AS at_us "
    "FROM ingested_batches ORDER BY committed_at DESC, batch_id LIMIT $1",
    1};

int usage_get_ingest_status(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    (void)req;
    PGresult *res = NULL;
    usage_ctx_t cx;
    int rc = usage_staff_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    db_conn_t *conn = svc_db_or_status(call);
    if (!conn)
        return ERR_UNAVAILABLE;
    outbox_stats_t s;
    if ((rc = outbox_read_stats(conn, &s)) < 0)
        return rpc_fail(call, rc, "%s", db_errmsg(conn));
    const char *params[] = {usage_i64(cx.a, RECENT_BATCHES)};
    if ((rc = usage_exec(&cx, &recent_batches, params, &res)) < 0)
        goto out;
    Onceiot__Usage__V1__IngestStatus *out = arena_alloc(cx.a, sizeof(*out));
    onceiot__usage__v1__ingest_status__init(out);
    out->outbox_pending = s.pending;
    out->outbox_oldest_age_ms = s.oldest_age_ms;
    out->outbox_failed = s.failed;
    out->outbox_last_error = arena_strdup(cx.a, s.last_error);
    out->recent_batches = arena_alloc(cx.a, ((size_t)rc + 1) * sizeof(*out->recent_batches));
    for (int i = 0; i < rc; i++) {
        Onceiot__Usage__V1__BatchResult *b = arena_alloc(cx.a, sizeof(*b));
        onceiot__usage__v1__batch_result__init(b);
        b->batch_id = usage__str(cx.a, res, i, "batch_id");
        b->records = (int32_t)db_get_int(res, i, "records", 0);
        b->committed_at = usage_ts(cx.a, db_get_int(res, i, "at_us", 0));
        out->recent_batches[out->n_recent_batches++] = b;
    }
    *resp = &out->base;
    rc = 0;
out:
    PQclear(res);
    return rc;
}
