/* onceiot-usage: usage records with exact rollups, and the quota accounting
 * that follows them (proto/usage/v1/usage.proto). */
#include "onceiot/config.h"
#include "onceiot/log.h"
#include "usage.h"

#include <string.h>

static const rpc_method_impl_t usage_methods[] = {
    {"IngestUsage", usage_ingest_usage},          {"IngestUsageBatch", usage_ingest_usage_batch},
    {"GetSimUsage", usage_get_sim_usage},         {"ListUsageRecords", usage_list_usage_records},
    {"GetFleetUsage", usage_get_fleet_usage},     {"ListTopSims", usage_list_top_sims},
    {"GetIngestStatus", usage_get_ingest_status}, {"IngestConnectivity", usage_ingest_connectivity},
    {"GetConnectivity", usage_get_connectivity},  {"ListConnectivity", usage_list_connectivity},
    {"ListOfflineSims", usage_list_offline_sims}, {"ListAuditRecords", svc_list_audit_records},
};

static const rpc_service_impl_t usage_service = {
    .descriptor = &onceiot__usage__v1__usage_service__descriptor,
    .methods = usage_methods,
    .n_methods = sizeof(usage_methods) / sizeof(usage_methods[0]),
};

static usage_state_t state;

static const outbox_topic_t usage_topics[] = {
    {USAGE_TOPIC_QUOTA, usage_apply_quota, &state},
    {USAGE_TOPIC_CONNECTIVITY, usage_apply_connectivity, &state},
};

/* The compaction's settings (also read by the compact subcommand). */
static int usage__compaction_config(usage_compact_opts_t *o)
{
    cfg_var_t vars[] = {
        {"ONCEIOT_USAGE_COMPACT_AFTER_DAYS", CFG_INT, "7", false, 0, 3650, &o->after_days,
         "days older than this are compacted (0: never)"},
        {"ONCEIOT_USAGE_COMPACT_BATCH", CFG_INT, "20000", false, 1, 1000000, &o->batch_rows,
         "raw rows per compaction statement"},
    };
    char err[256];
    if (cfg_load(vars, sizeof(vars) / sizeof(vars[0]), err, sizeof(err)) < 0) {
        log_msg(LOG_ERROR, "config", "%s", err);
        return ERR_CONFIG;
    }
    return 0;
}

/* onceiot-usage compact: one maintenance run now (partitions, retention,
 * compaction of every day past the age), under the maintenance lock. Exit
 * status 0 when done, 3 when another process holds the lock, 1 on failure. */
static int usage_compact_command(svc_t *svc)
{
    usage_compact_opts_t o;
    if (usage__compaction_config(&o) < 0)
        return 2;
    db_conn_t *conn = NULL;
    if (db_pool_acquire(svc_db(svc), 5000, &conn) < 0) {
        log_msg(LOG_ERROR, "compaction_failed", "no database connection");
        return 1;
    }
    usage_compact_stats_t st;
    int rc = usage_maint_run(conn, svc_def(svc)->name, &o, &st);
    db_pool_release(svc_db(svc), conn);
    if (rc == 1)
        return 3;
    log_msg(rc < 0 ? LOG_ERROR : LOG_INFO, "compaction_done", "%lld days, %lld rows, %lld failed",
            (long long)st.days, (long long)st.records, (long long)st.failed);
    return rc < 0 ? 1 : 0;
}

/* Opens the channel to sims, starts the quota dispatcher and the
 * maintenance thread. */
static int usage_init(svc_t *svc)
{
    const char *sims_addr = NULL;
    long lease_ms = 0, maint_s = 0, compact_s = 0, cache_entries = 0;
    usage_compact_opts_t compaction;
    if (usage__compaction_config(&compaction) < 0)
        return ERR_CONFIG;
    cfg_var_t vars[] = {
        {"ONCEIOT_SIMS_ADDR", CFG_STRING, NULL, true, 0, 0, &sims_addr,
         "host:port of onceiot-sims"},
        {"ONCEIOT_OUTBOX_LEASE_MS", CFG_INT, "30000", false, 1000, 3600000, &lease_ms, NULL},
        {"ONCEIOT_USAGE_MAINTENANCE_S", CFG_INT, "3600", false, 1, 86400, &maint_s, NULL},
        {"ONCEIOT_USAGE_COMPACT_S", CFG_INT, "10", false, 1, 86400, &compact_s, NULL},
        {"ONCEIOT_USAGE_ICCID_CACHE", CFG_INT, "200000", false, 16, 100000000, &cache_entries,
         NULL},
    };
    char err[256];
    if (cfg_load(vars, sizeof(vars) / sizeof(vars[0]), err, sizeof(err)) < 0) {
        log_msg(LOG_ERROR, "config", "%s", err);
        return ERR_CONFIG;
    }
    state.svc = svc;
    int rc = svc_open_callee(svc, "sims", "ONCEIOT_SIMS_ADDR", sims_addr, &state.sims);
    if (rc < 0)
        return rc;
    state.cache = usage_cache_new((size_t)cache_entries);
    svc_set_state(svc, &state);
    const outbox_opts_t o = {
        .pool = svc_db(svc),
        .service = "usage",
        .topics = usage_topics,
        .n_topics = sizeof(usage_topics) / sizeof(usage_topics[0]),
        .lease_ms = (int)lease_ms,
    };
    if ((rc = outbox_start(&o, &state.outbox)) < 0)
        return rc;
    return usage_maint_start(svc_db(svc), svc_def(svc)->name, maint_s, compact_s, &compaction,
                             &state.maint);
}

static void usage_fini(svc_t *svc)
{
    (void)svc;
    usage_maint_stop(state.maint);
    outbox_stop(state.outbox);
    rpc_channel_free(state.sims);
    usage_cache_free(state.cache);
    memset(&state, 0, sizeof(state));
}

int main(int argc, char **argv)
{
    static const svc_command_t commands[] = {
        {"compact", "run partition maintenance and compaction of old days once, then exit",
         usage_compact_command},
    };
    static const svc_def_t def = {
        .name = "usage",
        .default_listen = "127.0.0.1:50063",
        .uses_db = true,
        .authenticated = true,
        .services = &usage_service,
        .n_services = 1,
        .init = usage_init,
        .fini = usage_fini,
        .commands = commands,
        .n_commands = sizeof(commands) / sizeof(commands[0]),
    };
    return svc_main(argc, argv, &def);
}
