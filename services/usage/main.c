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
    {"ListOfflineSims", usage_list_offline_sims},
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

/* Opens the channel to sims, starts the quota dispatcher and the
 * maintenance thread. */
static int usage_init(svc_t *svc)
{
    const char *sims_addr = NULL;
    long lease_ms = 0, maint_s = 0, compact_s = 0, cache_entries = 0;
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
    return usage_maint_start(svc_db(svc), svc_def(svc)->name, maint_s, compact_s, &state.maint);
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
    static const svc_def_t def = {
        .name = "usage",
        .default_listen = "127.0.0.1:50063",
        .uses_db = true,
        .authenticated = true,
        .services = &usage_service,
        .n_services = 1,
        .init = usage_init,
        .fini = usage_fini,
    };
    return svc_main(argc, argv, &def);
}
