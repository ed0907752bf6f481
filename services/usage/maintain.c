/* Upkeep of the usage tables, run at start and then every interval on a
 * pool connection, by one process of the database at a time (an advisory
 * lock): pg_partman creates the raw tables' partitions ahead and drops those
 * past the retention (so no pg_partman_bgw is needed), compacted days,
 * rollups and batch ids are pruned past their own retention, late rows are
 * moved out of the default partition into partitions of their days, and
 * days past the compaction age are compacted (compact.c). More often
 * (every compact interval) the organizations' per-batch rows are folded into
 * one row per organization and day. */
#include "onceiot/log.h"
#include "usage.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

struct usage_maint {
    db_pool_t *pool;
    char schema[64];
    usage_compact_opts_t compaction;
    long interval_s;
    long compact_s; /* seconds between compactions of org_usage_daily */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
};

static const db_stmt_t partman = {"usage_partman", "SELECT partman.run_maintenance($1)", 1};
/* Late records older than the oldest partition (partitions are made from 30
 * days back when the table is created, then ahead) land in the default
 * partition; this moves them into partitions of their own days, which it
 * creates, so the retention drops them with their day like any other row.
 * total_volume is generated, so it is left to PostgreSQL. Up to 100 days a
 * run. */
static const db_stmt_t move_late = {"usage_move_late",
                                    "SELECT partman.partition_data_time($1, p_batch_count => 100, "
                                    "p_ignored_columns => ARRAY['total_volume']) AS moved",
                                    1};
/* Rows that fell into the default partition (older than the partitions made
 * when the table was created) are not dropped with a partition. */
static const db_stmt_t prune[] = {
    {"usage_prune_default",
     "DELETE FROM sim_usage_default WHERE \"timestamp\" < now() - interval '2 years'", 0},
    {"usage_prune_hourly", "DELETE FROM sim_usage_hourly WHERE hour < now() - interval '2 years'",
     0},
    {"usage_prune_daily",
     "DELETE FROM sim_usage_daily WHERE day < current_date - interval '5 years'", 0},
    {"usage_prune_network",
     "DELETE FROM sim_usage_daily_network WHERE day < current_date - interval '5 years'", 0},
    {"usage_prune_org", "DELETE FROM org_usage_daily WHERE day < current_date - interval '5 years'",
     0},
    {"usage_prune_conn_default",
     "DELETE FROM sim_connectivity_default WHERE \"timestamp\" < now() - interval '6 months'", 0},
    {"usage_prune_conn_batches",
     "DELETE FROM ingested_connectivity_batches WHERE committed_at < now() - interval '30 days'",
     0},
    {"usage_prune_batches",
     "DELETE FROM ingested_batches WHERE committed_at < now() - interval '30 days'", 0},
};

/* Folds the per-batch rows of org_usage_daily into one row per organization
 * and day (batch_id '', which no batch can have), adding to the one already
 * there. Exact: every column is a sum of deltas, active_sims included. Safe
 * beside ingest, which only inserts rows of new batch ids (those committed
 * after this statement's snapshot wait for the next run), and beside another
 * replica's compaction: a row it deleted first is skipped here once its
 * transaction commits, so no delta is counted twice. The folded rows are
 * written in key order, so two compactions never deadlock on them. */
static const db_stmt_t compact = {
    "usage_compact_org",
    "WITH gone AS (DELETE FROM org_usage_daily WHERE batch_id <> '' RETURNING *) "
    "INSERT INTO org_usage_daily AS o (organization_id, day, batch_id, active_sims, volume_rx, "
    "volume_tx, sms_mo, sms_mt, session_count, records) "
    "SELECT organization_id, day, '', sum(active_sims), sum(volume_rx), sum(volume_tx), "
    "sum(sms_mo), sum(sms_mt), sum(session_count), sum(records) FROM gone "
    "GROUP BY organization_id, day ORDER BY organization_id, day "
    "ON CONFLICT (organization_id, day, batch_id) DO UPDATE SET "
    "active_sims = o.active_sims + EXCLUDED.active_sims, volume_rx = o.volume_rx + "
    "EXCLUDED.volume_rx, volume_tx = o.volume_tx + EXCLUDED.volume_tx, sms_mo = o.sms_mo + "
    "EXCLUDED.sms_mo, sms_mt = o.sms_mt + EXCLUDED.sms_mt, session_count = o.session_count + "
    "EXCLUDED.session_count, records = o.records + EXCLUDED.records",
    0};

static void usage__compact(usage_maint_t *m)
{
    db_conn_t *conn = NULL;
    if (db_pool_acquire(m->pool, 5000, &conn) < 0) {
        log_msg(LOG_WARN, "compaction_skipped", "no database connection");
        return;
    }
    db_set_scope(conn, 0, true); /* internal: every organization's rows */
    int rc = db_exec(conn, &compact, NULL, NULL);
    if (rc < 0)
        log_msg(LOG_WARN, "compaction_failed", "%s", db_errmsg(conn));
    else if (rc > 0)
        log_msg(LOG_DEBUG, "compacted", "%d organization days", rc);
    db_pool_release(m->pool, conn);
}

/* The maintenance lock of a schema: one session advisory lock (the two-key
 * form, apart from the migrations' one-key lock), so replicas of one
 * database never maintain or compact at once; it goes with the session if
 * the process dies. */
static const db_stmt_t lock_maint = {
    "usage_lock_maint",
    "SELECT pg_try_advisory_lock(hashtext('onceiot.usage.maintenance'), hashtext($1)) AS locked",
    1};
static const db_stmt_t unlock_maint = {
    "usage_unlock_maint",
    "SELECT pg_advisory_unlock(hashtext('onceiot.usage.maintenance'), hashtext($1))", 1};
/* Compacted days go with the retention pg_partman applies to their raw
 * partitions ($1 the parent; none while it has no retention). */
static const db_stmt_t prune_compact[] = {
    {"usage_prune_compact",
     "DELETE FROM sim_usage_compact WHERE day + 1 <= ((now() - (SELECT retention::interval FROM "
     "partman.part_config WHERE parent_table = $1)) AT TIME ZONE 'UTC')::date",
     1},
    {"usage_prune_conn_compact",
     "DELETE FROM sim_connectivity_compact WHERE day + 1 <= ((now() - (SELECT "
     "retention::interval FROM partman.part_config WHERE parent_table = $1)) AT TIME ZONE "
     "'UTC')::date",
     1},
};

int usage_maint_run(db_conn_t *conn, const char *schema, const usage_compact_opts_t *compaction,
                    usage_compact_stats_t *stats)
{
    char parents[2][128];
    snprintf(parents[0], sizeof(parents[0]), "%s.sim_usage", schema);
    snprintf(parents[1], sizeof(parents[1]), "%s.sim_connectivity", schema);
    memset(stats, 0, sizeof(*stats));
    db_set_scope(conn, 0, true); /* internal: every organization's rows */
    PGresult *res = NULL;
    const char *sp[] = {schema};
    int rc = db_exec(conn, &lock_maint, sp, &res);
    bool locked = rc >= 0 && db_get_bool(res, 0, "locked");
    PQclear(res);
    res = NULL;
    if (rc < 0)
        return rc;
    if (!locked) {
        log_msg(LOG_INFO, "maintenance_busy", "another process holds the maintenance lock of %s",
                schema);
        return 1;
    }
    for (int i = 0; i < 2; i++) {
        const char *params[] = {parents[i]};
        if (db_exec(conn, &partman, params, NULL) < 0)
            log_msg(LOG_WARN, "partman_maintenance", "%s", db_errmsg(conn));
        if (db_exec(conn, &prune_compact[i], params, NULL) < 0)
            log_msg(LOG_WARN, "maintenance_prune", "%s: %s", prune_compact[i].name,
                    db_errmsg(conn));
    }
    for (size_t i = 0; i < sizeof(prune) / sizeof(prune[0]); i++) {
        if (db_exec(conn, &prune[i], NULL, NULL) < 0)
            log_msg(LOG_WARN, "maintenance_prune", "%s: %s", prune[i].name, db_errmsg(conn));
    }
    const char *params[] = {parents[0]}; /* sim_usage's late rows (sim_connectivity's stay) */
    if (db_exec(conn, &move_late, params, &res) < 0)
        log_msg(LOG_WARN, "maintenance_late_rows", "%s", db_errmsg(conn));
    else if (db_get_int(res, 0, "moved", 0) > 0)
        log_msg(LOG_INFO, "late_rows_moved", "%lld rows out of the default partition",
                (long long)db_get_int(res, 0, "moved", 0));
    PQclear(res);
    /* Compaction after the late rows moved: they are compacted with their day. */
    rc = usage_compact_run(conn, compaction, stats);
    if (db_exec(conn, &unlock_maint, sp, NULL) < 0)
        log_msg(LOG_WARN, "maintenance_unlock", "%s", db_errmsg(conn));
    log_msg(LOG_DEBUG, "maintenance_done", "%s", schema);
    return rc < 0 ? rc : 0;
}

static void usage__maintain(usage_maint_t *m)
{
    db_conn_t *conn = NULL;
    if (db_pool_acquire(m->pool, 5000, &conn) < 0) {
        log_msg(LOG_WARN, "maintenance_skipped", "no database connection");
        return;
    }
    usage_compact_stats_t stats;
    if (usage_maint_run(conn, m->schema, &m->compaction, &stats) < 0)
        log_msg(LOG_WARN, "maintenance_failed", "%s", db_errmsg(conn));
    db_pool_release(m->pool, conn);
}

static int64_t usage__now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec;
}

static void *usage__maint_main(void *arg)
{
    usage_maint_t *m = arg;
    int64_t next_maint = 0;
    pthread_mutex_lock(&m->mu);
    while (!m->stopping) {
        pthread_mutex_unlock(&m->mu);
        if (usage__now_s() >= next_maint) {
            usage__maintain(m);
            next_maint = usage__now_s() + m->interval_s;
        }
        usage__compact(m);
        pthread_mutex_lock(&m->mu);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += m->compact_s < m->interval_s ? m->compact_s : m->interval_s;
        while (!m->stopping)
            if (pthread_cond_timedwait(&m->cv, &m->mu, &until) == ETIMEDOUT)
                break;
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

int usage_maint_start(db_pool_t *pool, const char *schema, long interval_s, long compact_s,
                      const usage_compact_opts_t *compaction, usage_maint_t **out)
{
    usage_maint_t *m = mem_calloc(1, sizeof(*m));
    m->pool = pool;
    m->interval_s = interval_s;
    m->compact_s = compact_s;
    snprintf(m->schema, sizeof(m->schema), "%s", schema);
    m->compaction = *compaction;
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    if (pthread_create(&m->thread, NULL, usage__maint_main, m) != 0) {
        log_msg(LOG_ERROR, "maintenance_start", "%s", strerror(errno));
        pthread_mutex_destroy(&m->mu);
        pthread_cond_destroy(&m->cv);
        mem_free(m);
        return ERR_INTERNAL;
    }
    *out = m;
    return 0;
}

void usage_maint_stop(usage_maint_t *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->stopping = true;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
    pthread_join(m->thread, NULL);
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    mem_free(m);
}
