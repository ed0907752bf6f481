/* Ingest: IngestUsage (a stream of batches) and IngestUsageBatch.
 *
 * One batch is one transaction:
 *   1. claim the batch id in ingested_batches (a replay finds it and stops;
 *      a concurrent copy waits on the primary key until the first commits);
 *   2. the raw records, as one INSERT over unnest() arrays (binary
 *      parameters: COPY is not allowed under row-level security);
 *   3. the rollups, aggregated in C first, each one upsert over unnest()
 *      arrays in key order (sim_id, bucket): concurrent batches lock shared
 *      rows in one order and never deadlock, and ON CONFLICT DO UPDATE adds
 *      to the row under its lock, so no update is lost. The per-SIM daily
 *      upsert tells which SIM-days are new (xmax = 0); the organization's
 *      row of deltas for the batch counts them as active SIMs;
 *   4. the outbox row with the batch's per-SIM quota usage;
 *   5. COMMIT, then the dispatcher is woken. */
#include "onceiot/log.h"
#include "usage.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One rollup row being built: a SIM's totals in one bucket (an hour or a
 * day; per network for the network rollup). */
typedef struct usage_agg {
    int64_t sim_id, org, bucket;
    const char *iccid;
    const char *country, *mcc, *mnc; /* "" when unknown; network rollup only */
    int64_t rx, tx, mo, mt, sessions, records;
} usage_agg_t;

static int usage__cmp_agg(const void *x, const void *y)
{
    const usage_agg_t *a = x, *b = y;
    if (a->sim_id != b->sim_id)
        return a->sim_id < b->sim_id ? -1 : 1;
    if (a->bucket != b->bucket)
        return a->bucket < b->bucket ? -1 : 1;
    int c = strcmp(a->country, b->country);
    if (c)
        return c;
    if ((c = strcmp(a->mcc, b->mcc)))
        return c;
    return strcmp(a->mnc, b->mnc);
}

/* Sorts v and merges rows with equal keys; returns the new count. */
static size_t usage__fold(usage_agg_t *v, size_t n)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof(*v), usage__cmp_agg);
    size_t k = 0;
    for (size_t i = 1; i < n; i++) {
        if (usage__cmp_agg(&v[k], &v[i]) == 0) {
            v[k].rx += v[i].rx;
            v[k].tx += v[i].tx;
            v[k].mo += v[i].mo;
            v[k].mt += v[i].mt;
            v[k].sessions += v[i].sessions;
            v[k].records += v[i].records;
        } else {
            v[++k] = v[i];
        }
    }
    return k + 1;
}

/* Column arrays of aggregated rows, in the order of the upserts' unnest. */
enum {
    AGG_SIM,
    AGG_BUCKET, /* hours or days since the epoch; the statement makes the time */
    AGG_ORG,
    AGG_ICCID,
    AGG_RX,
    AGG_TX,
    AGG_MO,
    AGG_MT,
    AGG_SESS,
    AGG_RECS,
    AGG_COUNTRY,
    AGG_MCC,
    AGG_MNC,
    AGG_COLS
};

static void usage__agg_params(arena_t *a, const usage_agg_t *v, size_t n, db_value_t *params)
{
    static const int ints[] = {AGG_SIM, AGG_BUCKET, AGG_ORG,  AGG_RX,  AGG_TX,
                               AGG_MO,  AGG_MT,     AGG_SESS, AGG_RECS};
    static const int texts[] = {AGG_ICCID, AGG_COUNTRY, AGG_MCC, AGG_MNC};
    int64_t *num[AGG_COLS];
    const char **str[AGG_COLS];
    for (size_t c = 0; c < sizeof(ints) / sizeof(ints[0]); c++)
        num[ints[c]] = arena_alloc(a, (n + 1) * sizeof(int64_t));
    for (size_t c = 0; c < sizeof(texts) / sizeof(texts[0]); c++)
        str[texts[c]] = arena_alloc(a, (n + 1) * sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        num[AGG_SIM][i] = v[i].sim_id;
        num[AGG_BUCKET][i] = v[i].bucket;
        num[AGG_ORG][i] = v[i].org;
        num[AGG_RX][i] = v[i].rx;
        num[AGG_TX][i] = v[i].tx;
        num[AGG_MO][i] = v[i].mo;
        num[AGG_MT][i] = v[i].mt;
        num[AGG_SESS][i] = v[i].sessions;
        num[AGG_RECS][i] = v[i].records;
        str[AGG_ICCID][i] = v[i].iccid;
        str[AGG_COUNTRY][i] = v[i].country;
        str[AGG_MCC][i] = v[i].mcc;
        str[AGG_MNC][i] = v[i].mnc;
    }
    for (size_t c = 0; c < sizeof(ints) / sizeof(ints[0]); c++)
        params[ints[c]] = db_value_int8_array(a, num[ints[c]], NULL, n);
    for (size_t c = 0; c < sizeof(texts) / sizeof(texts[0]); c++)
        params[texts[c]] = db_value_text_array(a, str[texts[c]], n);
}

#define ADD_TOTALS(t)                                                                              \
    "volume_rx = " t ".volume_rx + EXCLUDED.volume_rx, volume_tx = " t                             \
    ".volume_tx + EXCLUDED.volume_tx, sms_mo = " t ".sms_mo + EXCLUDED.sms_mo, sms_mt = " t        \
    ".sms_mt + EXCLUDED.sms_mt, session_count = " t                                                \
    ".session_count + EXCLUDED.session_count, records = " t ".records + EXCLUDED.records"

static const db_stmt_t claim_batch = {
    "usage_claim_batch",
    "INSERT INTO ingested_batches (batch_id, records) VALUES ($1, $2) ON CONFLICT DO NOTHING "
    "RETURNING (extract(epoch FROM committed_at) * 1000000)::bigint AS at_us",
    2};

static const db_stmt_t replayed_batch = {
    "usage_replayed_batch",
    "SELECT records, (extract(epoch FROM committed_at) * 1000000)::bigint AS at_us "
    "FROM ingested_batches WHERE batch_id = $1",
    1};

static const db_stmt_t insert_raw = {
    "usage_insert_raw",
    "INSERT INTO sim_usage (sim_id, organization_id, iccid, \"timestamp\", volume_rx, volume_tx, "
    "sms_mo, sms_mt, session_count, mcc, mnc, country, rat, batch_id) "
    "SELECT u.sim_id, u.org, u.iccid, " EPOCH_US(
        "u.us") ", u.rx, u.tx, u.mo, u.mt, u.sess, "
                "u.mcc, u.mnc, u.country, u.rat, $14 FROM unnest($1::bigint[], $2::bigint[], "
                "$3::text[], "
                "$4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], "
                "$9::bigint[], "
                "$10::text[], "
                "$11::text[], $12::text[], $13::text[]) "
                "AS u(sim_id, org, iccid, us, rx, tx, mo, mt, sess, mcc, mnc, country, rat)",
    14};

static const db_stmt_t upsert_hourly = {
    "usage_upsert_hourly",
    "INSERT INTO sim_usage_hourly AS h (sim_id, hour, organization_id, iccid, volume_rx, "
    "volume_tx, sms_mo, sms_mt, session_count, records) "
    "SELECT u.sim_id, " EPOCH_HOUR(
        "u.h") ", u.org, u.iccid, u.rx, u.tx, u.mo, u.mt, u.sess, "
               "u.recs FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], "
               "$5::bigint[], "
               "$6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[]) "
               "AS u(sim_id, h, org, iccid, rx, tx, mo, mt, sess, recs) "
               "ON CONFLICT (sim_id, hour) DO UPDATE SET " ADD_TOTALS("h"),
    10};

/* The per-SIM daily upsert and, in the same statement, the organization's
 * deltas of this batch: new SIM-days (xmax = 0 marks a row this statement
 * inserted) are the active SIMs it adds. */
static const db_stmt_t upsert_daily = {
    "usage_upsert_daily",
    "WITH input AS MATERIALIZED (SELECT u.sim_id, " EPOCH_DAY(
        "u.d") " AS day, "
               "u.organization_id, u.iccid, u.volume_rx, u.volume_tx, u.sms_mo, u.sms_mt, "
               "u.session_count, "
               "u.records FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], "
               "$5::bigint[], "
               "$6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[]) AS "
               "u(sim_id, d, "
               "organization_id, iccid, volume_rx, volume_tx, sms_mo, sms_mt, session_count, "
               "records)), "
               "up AS (INSERT INTO sim_usage_daily AS d (sim_id, day, organization_id, iccid, "
               "volume_rx, "
               "volume_tx, sms_mo, sms_mt, session_count, records) SELECT * FROM input "
               "ON CONFLICT (sim_id, day) DO UPDATE SET " ADD_TOTALS(
                   "d") " RETURNING d.sim_id, d.day, (d.xmax = 0) AS fresh) "
                        "INSERT INTO org_usage_daily (organization_id, day, batch_id, active_sims, "
                        "volume_rx, volume_tx, sms_mo, sms_mt, session_count, records) "
                        "SELECT i.organization_id, i.day, $11, count(*) FILTER (WHERE up.fresh), "
                        "sum(i.volume_rx), sum(i.volume_tx), sum(i.sms_mo), sum(i.sms_mt), "
                        "sum(i.session_count), sum(i.records) FROM input i JOIN up USING (sim_id, "
                        "day) "
                        "GROUP BY i.organization_id, i.day",
    11};

static const db_stmt_t upsert_network = {
    "usage_upsert_network",
    "INSERT INTO sim_usage_daily_network AS n (sim_id, day, organization_id, volume_rx, "
    "volume_tx, sms_mo, sms_mt, session_count, records, country, mcc, mnc) "
    "SELECT u.sim_id, " EPOCH_DAY(
        "u.d") ", u.org, u.rx, u.tx, u.mo, u.mt, u.sess, u.recs, "
               "u.country, u.mcc, u.mnc FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], "
               "$4::bigint[], "
               "$5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::text[], "
               "$11::text[], $12::text[]) AS u(sim_id, d, org, rx, tx, mo, mt, sess, recs, "
               "country, mcc, mnc) "
               "ON CONFLICT (sim_id, day, country, mcc, mnc) DO UPDATE SET " ADD_TOTALS("n"),
    12};

static const char *usage__nz(const char *s)
{
    return s && *s ? s : NULL;
}

static int usage__cmp_str(const void *x, const void *y)
{
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

/* The batch's quota usage per SIM as a packed ApplyUsageRequest: data is
 * volume_rx + volume_tx; SMS are the mobile-originated ones (sims charges a
 * mobile-terminated SMS when SendSms accepts it, so counting sms_mt again
 * would charge it twice). NULL when the batch used nothing. */
static uint8_t *usage__quota_payload(arena_t *a, const char *batch_id, const usage_agg_t *daily,
                                     size_t n, size_t *len)
{
    Onceiot__Sims__V1__ApplyUsageRequest req = ONCEIOT__SIMS__V1__APPLY_USAGE_REQUEST__INIT;
    req.batch_id = (char *)batch_id;
    req.items = arena_alloc(a, (n + 1) * sizeof(*req.items));
    for (size_t i = 0; i < n;) {
        Onceiot__Sims__V1__UsageItem *it = arena_alloc(a, sizeof(*it));
        onceiot__sims__v1__usage_item__init(it);
        it->iccid = (char *)daily[i].iccid;
        size_t k = i;
        for (; k < n && daily[k].sim_id == daily[i].sim_id; k++) {
            it->data_bytes += daily[k].rx + daily[k].tx;
            it->sms_count += daily[k].mo;
        }
        i = k;
        if (it->data_bytes > 0 || it->sms_count > 0)
            req.items[req.n_items++] = it;
    }
    if (req.n_items == 0)
        return NULL;
    *len = onceiot__sims__v1__apply_usage_request__get_packed_size(&req);
    uint8_t *buf = arena_alloc(a, *len + 1);
    onceiot__sims__v1__apply_usage_request__pack(&req, buf);
    return buf;
}

int usage_claim_batch(db_conn_t *conn, const db_stmt_t *claim, const db_stmt_t *replayed,
                      const char *batch_id, size_t n, arena_t *scratch, arena_t *out_a,
                      Onceiot__Usage__V1__BatchResult **out)
{
    PGresult *res = NULL;
    int rc = db_begin(conn);
    const char *params[] = {batch_id, usage_i64(scratch, (int64_t)n)};
    if (rc < 0 || (rc = db_exec(conn, claim, params, &res)) < 0)
        return rc;
    bool seen = rc == 0;
    if (seen) {
        /* Seen before (perhaps just now, by a concurrent copy we waited for). */
        PQclear(res);
        res = NULL;
        if ((rc = db_exec(conn, replayed, params, &res)) < 0)
            return rc;
        db_rollback(conn);
    }
    Onceiot__Usage__V1__BatchResult *r = arena_alloc(out_a, sizeof(*r));
    onceiot__usage__v1__batch_result__init(r);
    r->batch_id = arena_strdup(out_a, batch_id);
    r->replayed = seen;
    r->records = seen ? (int32_t)db_get_int(res, 0, "records", 0) : (int32_t)n;
    r->committed_at = usage_ts(out_a, db_get_int(res, 0, "at_us", 0));
    PQclear(res);
    *out = r;
    return seen ? 1 : 0;
}

/* Validates, resolves and commits one batch. scratch holds everything made
 * for it (freed by the caller after); the result is allocated in out_a.
 * Returns 0 or an ERR_* code with the call's status set. */
static int usage__ingest_one(usage_ctx_t *cx, arena_t *scratch, arena_t *out_a,
                             const ProtobufCMessage *msg, Onceiot__Usage__V1__BatchResult **out)
{
    const Onceiot__Usage__V1__IngestUsageBatchRequest *b = (const void *)msg;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t now_us = (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
    if (!usage_valid_batch(cx->call, b, now_us))
        return rpc_check_violations(cx->call);
    size_t n = b->n_records;

    /* Distinct ICCIDs, resolved in one call for those not cached. */
    const char **iccids = arena_alloc(scratch, n * sizeof(char *));
    for (size_t i = 0; i < n; i++)
        iccids[i] = b->records[i]->iccid;
    qsort(iccids, n, sizeof(char *), usage__cmp_str);
    size_t n_distinct = 0;
    for (size_t i = 0; i < n; i++)
        if (n_distinct == 0 || strcmp(iccids[n_distinct - 1], iccids[i]) != 0)
            iccids[n_distinct++] = iccids[i];
    usage_sim_t *sims = arena_alloc(scratch, n_distinct * sizeof(*sims));
    int rc = usage_resolve_or_status(cx, iccids, n_distinct, sims);
    if (rc < 0)
        return rc;
    usage_sim_t *of = arena_alloc(scratch, n * sizeof(*of));
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        const char *key = b->records[i]->iccid;
        const char **hit = bsearch(&key, iccids, n_distinct, sizeof(char *), usage__cmp_str);
        of[i] = sims[hit - iccids];
        if (of[i].org == 0 && bad++ < 32)
            rpc_violation(cx->call, arena_printf(cx->a, "records[%zu].iccid", i),
                          "unknown ICCID %s", key);
    }
    if ((rc = rpc_check_violations(cx->call)) < 0)
        return rc;

    /* Raw columns and rollup rows, all built before the transaction so
     * that it holds its row locks only while PostgreSQL works. */
    enum { R_SIM, R_ORG, R_TS, R_RX, R_TX, R_MO, R_MT, R_SESS, R_INTS };
    enum { R_ICCID, R_MCC, R_MNC, R_COUNTRY, R_RAT, R_TEXTS };
    int64_t *num[R_INTS];
    const char **str[R_TEXTS];
    for (int c = 0; c < R_INTS; c++)
        num[c] = arena_alloc(scratch, n * sizeof(int64_t));
    for (int c = 0; c < R_TEXTS; c++)
        str[c] = arena_alloc(scratch, n * sizeof(char *));
    usage_agg_t *hourly = arena_alloc(scratch, n * sizeof(usage_agg_t));
    usage_agg_t *daily = arena_alloc(scratch, n * sizeof(usage_agg_t));
    usage_agg_t *network = arena_alloc(scratch, n * sizeof(usage_agg_t));
    for (size_t i = 0; i < n; i++) {
        const Onceiot__Usage__V1__UsageRecord *r = b->records[i];
        int64_t us = usage_ts_us(r->timestamp);
        num[R_SIM][i] = of[i].sim_id;
        num[R_ORG][i] = of[i].org;
        num[R_TS][i] = us;
        num[R_RX][i] = r->volume_rx;
        num[R_TX][i] = r->volume_tx;
        num[R_MO][i] = r->sms_mo;
        num[R_MT][i] = r->sms_mt;
        num[R_SESS][i] = r->session_count;
        str[R_ICCID][i] = r->iccid;
        str[R_MCC][i] = usage__nz(r->mcc);
        str[R_MNC][i] = usage__nz(r->mnc);
        str[R_COUNTRY][i] = usage__nz(r->country);
        str[R_RAT][i] = usage__nz(r->rat);
        usage_agg_t g = {
            .sim_id = of[i].sim_id,
            .org = of[i].org,
            .bucket = usage_floor_div(us, 3600LL * 1000000),
            .iccid = r->iccid,
            .country = "",
            .mcc = "",
            .mnc = "",
            .rx = r->volume_rx,
            .tx = r->volume_tx,
            .mo = r->sms_mo,
            .mt = r->sms_mt,
            .sessions = r->session_count,
            .records = 1,
        };
        hourly[i] = g;
        g.bucket = usage_floor_div(us, 86400LL * 1000000);
        daily[i] = g;
        g.country = r->country;
        g.mcc = r->mcc;
        g.mnc = r->mnc;
        network[i] = g;
    }
    size_t n_hourly = usage__fold(hourly, n);
    size_t n_daily = usage__fold(daily, n);
    size_t n_network = usage__fold(network, n);
    /* The statements' parameters, in their order: binary arrays, which
     * PostgreSQL reads without parsing. */
    db_value_t raw[] = {db_value_int8_array(scratch, num[R_SIM], NULL, n),
                        db_value_int8_array(scratch, num[R_ORG], NULL, n),
                        db_value_text_array(scratch, str[R_ICCID], n),
                        db_value_int8_array(scratch, num[R_TS], NULL, n),
                        db_value_int8_array(scratch, num[R_RX], NULL, n),
                        db_value_int8_array(scratch, num[R_TX], NULL, n),
                        db_value_int8_array(scratch, num[R_MO], NULL, n),
                        db_value_int8_array(scratch, num[R_MT], NULL, n),
                        db_value_int8_array(scratch, num[R_SESS], NULL, n),
                        db_value_text_array(scratch, str[R_MCC], n),
                        db_value_text_array(scratch, str[R_MNC], n),
                        db_value_text_array(scratch, str[R_COUNTRY], n),
                        db_value_text_array(scratch, str[R_RAT], n),
                        db_value_text(b->batch_id)};
    db_value_t hp[AGG_COLS], dp[AGG_COLS + 1], p[AGG_COLS];
    usage__agg_params(scratch, hourly, n_hourly, hp);
    usage__agg_params(scratch, daily, n_daily, dp);
    dp[AGG_RECS + 1] = db_value_text(b->batch_id);
    usage__agg_params(scratch, network, n_network, p);
    /* The network statement takes the columns without iccid, names last. */
    const db_value_t np[] = {p[AGG_SIM],  p[AGG_BUCKET],  p[AGG_ORG], p[AGG_RX],
                             p[AGG_TX],   p[AGG_MO],      p[AGG_MT],  p[AGG_SESS],
                             p[AGG_RECS], p[AGG_COUNTRY], p[AGG_MCC], p[AGG_MNC]};
    size_t len = 0;
    uint8_t *payload = usage__quota_payload(scratch, b->batch_id, daily, n_daily, &len);

    db_conn_t *conn = svc_db_or_status(cx->call);
    if (!conn)
        return ERR_UNAVAILABLE;
    PGresult *res = NULL;
    if ((rc = usage_claim_batch(conn, &claim_batch, &replayed_batch, b->batch_id, n, scratch, out_a,
                                out)) != 0) {
        if (rc > 0)
            return 0; /* replayed */
        goto db_fail;
    }
    if ((rc = db_exec_values(conn, &insert_raw, raw, NULL)) < 0 ||
        (rc = db_exec_values(conn, &upsert_hourly, hp, NULL)) < 0 ||
        (rc = db_exec_values(conn, &upsert_daily, dp, NULL)) < 0 ||
        (rc = db_exec_values(conn, &upsert_network, np, NULL)) < 0)
        goto db_fail;
    if (payload && (rc = outbox_put(conn, USAGE_TOPIC_QUOTA, b->batch_id, payload, len)) < 0)
        goto db_fail;
    if ((rc = db_commit(conn)) < 0)
        goto db_fail;
    if (payload)
        outbox_notify(cx->st->outbox);
    return 0;
db_fail:
    PQclear(res);
    log_msg(LOG_WARN, "ingest_failed", "batch %s: %s", b->batch_id, db_errmsg(conn));
    db_rollback(conn);
    return rpc_fail(cx->call, rc, "batch %s was not stored: %s", b->batch_id, db_errmsg(conn));
}

int usage_ingest_usage_batch(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    usage_ctx_t cx;
    int rc = usage_staff_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    arena_t *scratch = arena_new();
    Onceiot__Usage__V1__BatchResult *out = NULL;
    rc = usage__ingest_one(&cx, scratch, cx.a, (const void *)req, &out);
    arena_free(scratch);
    if (rc < 0)
        return rc;
    *resp = &out->base;
    return 0;
}

int usage_ingest_stream(usage_ctx_t *cx, usage_ingest_fn ingest_one, const char *what,
                        usage_stream_result_t *out)
{
    memset(out, 0, sizeof(*out));
    size_t cap = 0;
    for (;;) {
        /* Each batch (message, columns, rollups) lives in its own arena, so a
         * long stream holds one batch at a time. */
        arena_t *scratch = arena_new();
        ProtobufCMessage *m = NULL;
        int rc = rpc_recv_in(cx->call, scratch, &m);
        if (rc <= 0) {
            arena_free(scratch);
            return rc;
        }
        Onceiot__Usage__V1__BatchResult *r = NULL;
        rc = ingest_one(cx, scratch, cx->a, m, &r);
        arena_free(scratch);
        if (rc < 0) {
            log_msg(LOG_INFO, "ingest_stream_stopped", "%s: after %zu committed batches", what,
                    out->n_batches);
            return rc;
        }
        if (out->n_batches == cap) {
            cap = cap ? cap * 2 : 16;
            Onceiot__Usage__V1__BatchResult **v = arena_alloc(cx->a, cap * sizeof(*v));
            if (out->n_batches)
                memcpy(v, out->batches, out->n_batches * sizeof(*v));
            out->batches = v;
        }
        out->batches[out->n_batches++] = r;
        if (r->replayed)
            out->replayed++;
        else
            out->records += r->records;
    }
}

int usage_ingest_usage(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    (void)req;
    usage_ctx_t cx;
    usage_stream_result_t got;
    int rc = usage_staff_ctx_or_status(call, &cx);
    if (rc < 0 || (rc = usage_ingest_stream(&cx, usage__ingest_one, "usage", &got)) < 0)
        return rc;
    Onceiot__Usage__V1__IngestUsageResponse *out = arena_alloc(cx.a, sizeof(*out));
    onceiot__usage__v1__ingest_usage_response__init(out);
    out->batches = got.batches;
    out->n_batches = got.n_batches;
    out->records = got.records;
    out->replayed_batches = got.replayed;
    *resp = &out->base;
    return 0;
}
