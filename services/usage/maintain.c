/* Upkeep of the usage tables, run at start and then every interval on a
 * pool connection: pg_partman creates the raw table's partitions ahead and
 * drops those past the retention (so no pg_partman_bgw is needed), and the
 * rollups and batch ids are pruned past their own retention. */
#include "onceiot/log.h"
#include "usage.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

struct usage_maint {
    db_pool_t *pool;
    char parent[128];      /* "<schema>.sim_usage" */
    char conn_parent[128]; /* "<schema>.sim_connectivity" */
    long interval_s;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
};

static const db_stmt_t partman = {"usage_partman", "SELECT partman.run_maintenance($1)", 1};
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

static void usage__maintain(usage_maint_t *m)
{
    db_conn_t *conn = NULL;
    if (db_pool_acquire(m->pool, 5000, &conn) < 0) {
        log_msg(LOG_WARN, "maintenance_skipped", "no database connection");
        return;
    }
    const char *params[] = {m->parent};
    if (db_exec(conn, &partman, params, NULL) < 0)
        log_msg(LOG_WARN, "partman_maintenance", "%s", db_errmsg(conn));
    params[0] = m->conn_parent;
    if (db_exec(conn, &partman, params, NULL) < 0)
        log_msg(LOG_WARN, "partman_maintenance", "%s", db_errmsg(conn));
    for (size_t i = 0; i < sizeof(prune) / sizeof(prune[0]); i++) {
        int rc = db_exec(conn, &prune[i], NULL, NULL);
        if (rc < 0)
            log_msg(LOG_WARN, "maintenance_prune", "%s: %s", prune[i].name, db_errmsg(conn));
    }
    db_pool_release(m->pool, conn);
    log_msg(LOG_DEBUG, "maintenance_done", "%s", m->parent);
}

static void *usage__maint_main(void *arg)
{
    usage_maint_t *m = arg;
    pthread_mutex_lock(&m->mu);
    while (!m->stopping) {
        pthread_mutex_unlock(&m->mu);
        usage__maintain(m);
        pthread_mutex_lock(&m->mu);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += m->interval_s;
        while (!m->stopping)
            if (pthread_cond_timedwait(&m->cv, &m->mu, &until) == ETIMEDOUT)
                break;
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

int usage_maint_start(db_pool_t *pool, const char *schema, long interval_s, usage_maint_t **out)
{
    usage_maint_t *m = mem_calloc(1, sizeof(*m));
    m->pool = pool;
    m->interval_s = interval_s;
    snprintf(m->parent, sizeof(m->parent), "%s.sim_usage", schema);
    snprintf(m->conn_parent, sizeof(m->conn_parent), "%s.sim_connectivity", schema);
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
