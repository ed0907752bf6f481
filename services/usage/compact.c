/* Compaction of old days (docs/ARCHITECTURE.md, "usage", compaction): every
 * day older than the compaction age that still has raw rows in sim_usage or
 * sim_connectivity is rewritten, in one transaction, into one row per SIM
 * and day of sim_usage_compact / sim_connectivity_compact (column arrays,
 * TOAST-compressed; schema/usage/0007_compaction.sql). A day that already
 * has compacted rows and got late raw rows is merged: the SIMs' compacted
 * rows are decoded back into the raw table first, in the same transaction,
 * then compacted again with the late rows. So a day is always in one form
 * per SIM, a crash rolls the day back to where it was, and a second run
 * finds nothing to do. The caller holds the maintenance lock. */
#include "onceiot/log.h"
#include "usage.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* The instant range of day $1 (a date, UTC), as the raw tables' "timestamp". */
#define DAY_LO(d) "(" d "::date::timestamp AT TIME ZONE 'UTC')"
#define DAY_HI(d) "((" d "::date + 1)::timestamp AT TIME ZONE 'UTC')"
#define IN_DAY(d) "\"timestamp\" >= " DAY_LO(d) " AND \"timestamp\" < " DAY_HI(d)
#define US_OF(x)  "(extract(epoch FROM " x ") * 1000000)::bigint"
#define AT_US(x)  "('epoch'::timestamptz + " x " * interval '1 microsecond')"
#define ORD       " ORDER BY us, k)"

/* Days from $2 days ago to $1 + 1 days ago (UTC) that have raw rows: one
 * probe per day, each pruned at run time to the day's partition (or the
 * default one), which stops at the first row. */
#define DAYS_WITH_ROWS(table, name)                                                                \
    {                                                                                              \
        name,                                                                                      \
            "SELECT d::date AS day FROM generate_series((now() AT TIME ZONE 'UTC')::date - "       \
            "$2::int, "                                                                            \
            "(now() AT TIME ZONE 'UTC')::date - $1::int - 1, interval '1 day') AS d "              \
            "WHERE EXISTS (SELECT 1 FROM " table " WHERE " IN_DAY("d") ") ORDER BY 1",             \
            2                                                                                      \
    }

/* How the compaction of one table is written. */
typedef struct usage_compaction {
    const char *table;   /* for the log */
    int max_age_days;    /* the table's retention: older days are not looked at */
    db_stmt_t days;      /* $1 age, $2 max age: the days to compact */
    db_stmt_t decompact; /* $1 day: compacted rows of SIMs with raw rows back to raw */
    db_stmt_t compact;   /* $1 day, $2 after sim_id, $3 rows: one batch; bound, records */
} usage_compaction_t;

/* The statement's first part selects the batch: the SIMs after $2 up to the
 * one holding the $3-th raw row of the day (all the rest when there are
 * fewer rows), so a batch holds about $3 rows and whole SIMs. */
#define BATCH_BOUND(table)                                                                         \
    "WITH bound AS (SELECT coalesce((SELECT sim_id FROM " table " WHERE " IN_DAY(                  \
        "$1") " AND sim_id > $2::bigint ORDER BY sim_id OFFSET $3::bigint - 1 LIMIT 1), "          \
              "9223372036854775807) AS b), "
#define BATCH_ROWS IN_DAY("$1") " AND sim_id > $2::bigint AND sim_id <= (SELECT b FROM bound)"
#define BATCH_END                                                                                  \
    "SELECT (SELECT b FROM bound) AS bound, count(*) AS sims, coalesce(sum(n), 0) AS records "     \
    "FROM ins"

static const usage_compaction_t usage_tables[] = {
    {
        "sim_usage",
        USAGE_RETENTION_DAYS + 1,
        DAYS_WITH_ROWS("sim_usage", "usage_compact_days"),
        {"usage_decompact",
         "WITH c AS (DELETE FROM sim_usage_compact c WHERE c.day = $1::date AND EXISTS (SELECT 1 "
         "FROM sim_usage u WHERE u.sim_id = c.sim_id AND u." IN_DAY(
             "$1") ") RETURNING c AS r) "
                   "INSERT INTO sim_usage (id, sim_id, organization_id, iccid, \"timestamp\", "
                   "volume_rx, "
                   "volume_tx, sms_mo, sms_mt, session_count, mcc, mnc, country, rat, batch_id, "
                   "created_at) SELECT d.id, (c.r).sim_id, (c.r).organization_id, "
                   "(c.r).iccid, " AT_US(
                       "d.ts_us") ", d.volume_rx, d.volume_tx, d.sms_mo, d.sms_mt, "
                                  "d.session_count, "
                                  "d.mcc, d.mnc, d.country, d.rat, d.batch_id, " AT_US(
                                      "d.created_us") " FROM c CROSS JOIN LATERAL "
                                                      "sim_usage_decoded(c.r) d",
         1},
        {"usage_compact_batch",
         BATCH_BOUND(
             "sim_usage") "gone AS (DELETE FROM sim_usage WHERE " BATCH_ROWS
                          " RETURNING sim_id, organization_id, iccid, id AS k, " US_OF(
                              "\"timestamp\"") " AS us, volume_rx, volume_tx, sms_mo, "
                                               "sms_mt, session_count, mcc, mnc, country, "
                                               "rat, batch_id, " US_OF(
                                                   "created_at") " AS cus), "
                                                                 "enc AS (SELECT *, k - lag(k, 1, "
                                                                 "0::bigint) OVER w AS dk, us - "
                                                                 "lag(us, 1, 0::bigint) "
                                                                 "OVER w AS dus, cus - lag(cus, 1, "
                                                                 "0::bigint) OVER w AS dcus FROM "
                                                                 "gone "
                                                                 "WINDOW w AS (PARTITION BY sim_id "
                                                                 "ORDER BY us, k)), "
                                                                 "ins AS (INSERT INTO "
                                                                 "sim_usage_compact (sim_id, day, "
                                                                 "organization_id, iccid, records, "
                                                                 "id, ts, volume_rx, volume_tx, "
                                                                 "sms_mo, sms_mt, session_count, "
                                                                 "mcc, mnc, country, rat, "
                                                                 "batch_id, created_at) SELECT "
                                                                 "sim_id, $1::date, "
                                                                 "organization_id, iccid, "
                                                                 "count(*), "
                                                                 "array_agg(dk" ORD
                                                                 ", array_agg(dus" ORD
                                                                 ", array_agg(volume_rx" ORD
                                                                 ", array_agg(volume_tx" ORD
                                                                 ", array_agg(sms_mo" ORD
                                                                 ", array_agg(sms_mt" ORD
                                                                 ", array_agg(session_count" ORD
                                                                 ", array_agg(mcc" ORD
                                                                 ", array_agg(mnc" ORD
                                                                 ", array_agg(country" ORD
                                                                 ", array_agg(rat" ORD
                                                                 ", array_agg(batch_id" ORD
                                                                 ", array_agg(dcus" ORD
                                                                 " FROM enc GROUP BY sim_id, "
                                                                 "organization_id, iccid "
                                                                 "RETURNING records AS "
                                                                 "n) " BATCH_END,
         3},
    },
    {
        "sim_connectivity",
        USAGE_CONN_RETENTION_DAYS + 5,
        DAYS_WITH_ROWS("sim_connectivity", "usage_compact_conn_days"),
        /* A sample sent again after its day was compacted is a duplicate:
         * the compacted one (the first written) wins, as ON CONFLICT DO
         * NOTHING of the ingest would have had it. */
        {"usage_decompact_conn",
         "WITH c AS (DELETE FROM sim_connectivity_compact c WHERE c.day = $1::date AND EXISTS "
         "(SELECT 1 FROM sim_connectivity u WHERE u.sim_id = c.sim_id AND u." IN_DAY(
             "$1") ") RETURNING c AS r) "
                   "INSERT INTO sim_connectivity AS s (sim_id, \"timestamp\", organization_id, "
                   "iccid, connected, cell_id, signal_strength, signal_quality, rat, "
                   "country_code, operator_name, mcc, mnc, apn, batch_id, created_at) "
                   "SELECT (c.r).sim_id, " AT_US(
                       "d.ts_us") ", (c.r).organization_id, (c.r).iccid, d.connected, "
                                  "d.cell_id, d.signal_strength, d.signal_quality, d.rat, "
                                  "d.country_code, d.operator_name, d.mcc, d.mnc, d.apn, "
                                  "d.batch_id, " AT_US(
                                      "d.created_us") " FROM c CROSS JOIN LATERAL "
                                                      "sim_connectivity_decoded(c.r) d "
                                                      "ON CONFLICT (sim_id, \"timestamp\") DO "
                                                      "UPDATE SET connected = EXCLUDED.connected, "
                                                      "cell_id = EXCLUDED.cell_id, "
                                                      "signal_strength = "
                                                      "EXCLUDED.signal_strength, "
                                                      "signal_quality = EXCLUDED.signal_quality, "
                                                      "rat = EXCLUDED.rat, country_code = "
                                                      "EXCLUDED.country_code, operator_name = "
                                                      "EXCLUDED.operator_name, mcc = "
                                                      "EXCLUDED.mcc, mnc = EXCLUDED.mnc, apn = "
                                                      "EXCLUDED.apn, batch_id = "
                                                      "EXCLUDED.batch_id, created_at = "
                                                      "EXCLUDED.created_at",
         1},
        {"usage_compact_conn_batch",
         BATCH_BOUND(
             "sim_connectivity") "gone AS (DELETE FROM sim_connectivity WHERE " BATCH_ROWS
                                 " RETURNING sim_id, organization_id, iccid, 0 AS k, " US_OF(
                                     "\"timestamp\"") " AS us, connected, cell_id, "
                                                      "signal_strength, signal_quality, "
                                                      "rat, country_code, operator_name, "
                                                      "mcc, mnc, apn, batch_id, " US_OF(
                                                          "created_at") " AS cus), "
                                                                        "enc AS (SELECT *, us - "
                                                                        "lag(us, 1, 0::bigint) "
                                                                        "OVER w AS dus, cus - "
                                                                        "lag(cus, 1, "
                                                                        "0::bigint) OVER w AS dcus "
                                                                        "FROM gone WINDOW w AS "
                                                                        "(PARTITION BY sim_id "
                                                                        "ORDER BY us)), "
                                                                        "ins AS (INSERT INTO "
                                                                        "sim_connectivity_compact "
                                                                        "(sim_id, day, "
                                                                        "organization_id, iccid, "
                                                                        "samples, ts, connected, "
                                                                        "cell_id, signal_strength, "
                                                                        "signal_quality, rat, "
                                                                        "country_code, "
                                                                        "operator_name, mcc, mnc, "
                                                                        "apn, batch_id, "
                                                                        "created_at) SELECT "
                                                                        "sim_id, $1::date, "
                                                                        "organization_id, iccid, "
                                                                        "count(*), "
                                                                        "array_agg(dus" ORD
                                                                        ", array_agg(connected" ORD
                                                                        ", array_agg(cell_id" ORD
                                                                        ", "
                                                                        "array_agg(signal_"
                                                                        "strength" ORD ", "
                                                                        "array_agg(signal_"
                                                                        "quality" ORD
                                                                        ", array_agg(rat" ORD ", "
                                                                        "array_agg(country_code" ORD
                                                                        ", "
                                                                        "array_agg(operator_"
                                                                        "name" ORD
                                                                        ", array_agg(mcc" ORD
                                                                        ", array_agg(mnc" ORD
                                                                        ", array_agg(apn" ORD
                                                                        ", array_agg(batch_id" ORD
                                                                        ", array_agg(dcus" ORD
                                                                        " FROM enc GROUP BY "
                                                                        "sim_id, organization_id, "
                                                                        "iccid RETURNING samples "
                                                                        "AS n) " BATCH_END,
         3},
    },
};

#define N_TABLES (sizeof(usage_tables) / sizeof(usage_tables[0]))

/* Compacts one day of t in one transaction. Returns the records compacted
 * (>= 0) or a negative ERR_* code (rolled back, logged by the caller). */
static int64_t usage__compact_day(db_conn_t *conn, const usage_compaction_t *t, const char *day,
                                  long batch_rows)
{
    char after[24] = "0", rows[24];
    snprintf(rows, sizeof(rows), "%ld", batch_rows);
    int64_t records = 0;
    int rc = db_begin(conn);
    if (rc < 0)
        return rc;
    const char *p1[] = {day};
    if ((rc = db_exec(conn, &t->decompact, p1, NULL)) < 0)
        goto fail;
    for (;;) {
        PGresult *res = NULL;
        const char *p3[] = {day, after, rows};
        if ((rc = db_exec(conn, &t->compact, p3, &res)) < 0)
            goto fail;
        int64_t bound = db_get_int(res, 0, "bound", INT64_MAX);
        records += db_get_int(res, 0, "records", 0);
        PQclear(res);
        if (bound == INT64_MAX)
            break;
        snprintf(after, sizeof(after), "%" PRId64, bound);
    }
    if ((rc = db_commit(conn)) < 0)
        return rc;
    return records;
fail:
    db_rollback(conn);
    return rc;
}

static const db_stmt_t usage__reclaim = {"usage_reclaim_day",
                                         "SELECT usage_reclaim_day($1, $2::date) AS truncated", 2};

/* Gives a compacted day's emptied raw partition its pages back (schema
 * 0009); a failure only costs the space, so it is logged, not returned. */
static void usage__reclaim_day(db_conn_t *conn, const usage_compaction_t *t, const char *day)
{
    const char *p[] = {t->table, day};
    PGresult *res = NULL;
    if (db_exec(conn, &usage__reclaim, p, &res) < 0) {
        log_msg(LOG_WARN, "reclaim_failed", "%s %s: %s", t->table, day, db_errmsg(conn));
        return;
    }
    if (db_get_bool(res, 0, "truncated"))
        log_msg(LOG_INFO, "day_reclaimed", "%s %s: emptied partition truncated", t->table, day);
    PQclear(res);
}

int usage_compact_run(db_conn_t *conn, const usage_compact_opts_t *o, usage_compact_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    if (o->after_days <= 0)
        return 0;
    char age[24];
    snprintf(age, sizeof(age), "%ld", o->after_days);
    for (size_t i = 0; i < N_TABLES; i++) {
        const usage_compaction_t *t = &usage_tables[i];
        char max_age[24];
        snprintf(max_age, sizeof(max_age), "%d", t->max_age_days);
        const char *params[] = {age, max_age};
        PGresult *res = NULL;
        /* The probes of every day add up to a cost that would have the
         * planner compile them (JIT) for seconds; each is tiny. */
        int rc = db_begin(conn);
        if (rc == 0 && (rc = db_exec_simple(conn, "SET LOCAL jit = off")) == 0)
            rc = db_exec(conn, &t->days, params, &res);
        db_rollback(conn);
        if (rc < 0) {
            log_msg(LOG_WARN, "compaction_failed", "%s: %s", t->table, db_errmsg(conn));
            PQclear(res);
            return rc;
        }
        int n = PQntuples(res);
        for (int d = 0; d < n; d++) {
            const char *day = db_get(res, d, "day");
            int64_t recs = usage__compact_day(conn, t, day, o->batch_rows);
            if (recs < 0) {
                log_msg(LOG_WARN, "compaction_failed", "%s %s: %s", t->table, day, db_errmsg(conn));
                out->failed++;
                continue;
            }
            out->days++;
            out->records += recs;
            usage__reclaim_day(conn, t, day);
            log_msg(LOG_INFO, "day_compacted", "%s %s: %lld rows", t->table, day, (long long)recs);
        }
        PQclear(res);
    }
    return out->failed ? ERR_INTERNAL : 0;
}
