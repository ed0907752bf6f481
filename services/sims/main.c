/* onceiot-sims: the SIM registry, lifecycle, quotas, SMS and the event log
 * (proto/sims/v1/sims.proto). */
#include "onceiot/config.h"
#include "onceiot/log.h"
#include "sims.h"

static const rpc_method_impl_t sims_methods[] = {
    {"GetSim", sims_get_sim},
    {"ListSims", sims_list_sims},
    {"CreateSim", sims_create_sim},
    {"ImportSims", sims_import_sims},
    {"UpdateSim", sims_update_sim},
    {"BulkUpdateSims", sims_bulk_update_sims},
    {"ActivateSim", sims_activate_sim},
    {"SuspendSim", sims_suspend_sim},
    {"ResumeSim", sims_resume_sim},
    {"TerminateSim", sims_terminate_sim},
    {"ExpireSim", sims_expire_sim},
    {"GetQuota", sims_get_quota},
    {"TopUpQuota", sims_top_up_quota},
    {"SetQuotaPolicy", sims_set_quota_policy},
    {"ApplyUsage", sims_apply_usage},
    {"ResolveSims", sims_resolve_sims},
    {"SendSms", sims_send_sms},
    {"GetSms", sims_get_sms},
    {"ListSms", sims_list_sms},
    {"CancelSms", sims_cancel_sms},
    {"ReceiveSms", sims_receive_sms},
    {"UpdateSmsStatus", sims_update_sms_status},
    {"ListEvents", sims_list_events},
    {"RecordEvents", sims_record_events},
    {"WatchEvents", sims_watch_events},
    {"ApplyConnectivity", sims_apply_connectivity},
    {"ListAuditRecords", svc_list_audit_records},
};

static const rpc_service_impl_t sims_service = {
    .descriptor = &onceiot__sims__v1__sim_service__descriptor,
    .methods = sims_methods,
    .n_methods = sizeof(sims_methods) / sizeof(sims_methods[0]),
};

static sims_state_t state;

static const db_stmt_t maintain_events = {"sims_maintain_events",
                                          "SELECT partman.run_maintenance($1 || '.sim_events')", 1};

/* The runtime's periodic upkeep (at start and hourly, on a pool connection
 * scoped to every organization): pg_partman's maintenance of the event log
 * (partitions made ahead, those past retention dropped; partman takes its
 * own advisory lock, so replicas do not run it at once), and the ApplyUsage
 * and connectivity batch ids older than 30 days (usage retries a batch
 * within hours, never weeks). Each step is logged and the next tried when
 * one fails. */
static int sims_upkeep(svc_t *svc, db_conn_t *conn)
{
    static const char *const prunes[] = {
        "DELETE FROM processed_usage_batches WHERE processed_at < now() - interval '30 days'",
        "DELETE FROM processed_connectivity_batches "
        "WHERE processed_at < now() - interval '30 days'",
    };
    const char *params[] = {svc_def(svc)->name};
    PGresult *res = NULL;
    int failed = 0;
    if (db_exec(conn, &maintain_events, params, &res) < 0) {
        log_msg(LOG_WARN, "partman_maintenance", "%s", db_errmsg(conn));
        failed = ERR_INTERNAL;
    }
    PQclear(res);
    for (size_t i = 0; i < sizeof(prunes) / sizeof(prunes[0]); i++)
        if (db_exec_simple(conn, prunes[i]) < 0) {
            log_msg(LOG_WARN, "prune_batches", "%s", db_errmsg(conn));
            failed = ERR_INTERNAL;
        }
    return failed;
}

/* Starts the event listener on its own connection (the runtime already
 * validated the URL; it is read again here because the listener must not
 * take a pool connection for the life of the process). */
static int sims_init(svc_t *svc)
{
    const char *url = NULL;
    cfg_var_t vars[] = {
        {"ONCEIOT_DATABASE_URL", CFG_STRING, NULL, true, 0, 0, &url, "PostgreSQL URL"},
    };
    char err[256];
    if (cfg_load(vars, 1, err, sizeof(err)) < 0) {
        log_msg(LOG_ERROR, "config", "%s", err);
        return ERR_CONFIG;
    }
    int rc = sims_watch_start(url, svc_def(svc)->name, &state.watch);
    if (rc < 0)
        return rc;
    svc_set_state(svc, &state);
    return 0;
}

static void sims_fini(svc_t *svc)
{
    (void)svc;
    sims_watch_stop(state.watch);
    state.watch = NULL;
}

int main(int argc, char **argv)
{
    static const svc_def_t def = {
        .name = "sims",
        .default_listen = "127.0.0.1:50062",
        .uses_db = true,
        .authenticated = true,
        .services = &sims_service,
        .n_services = 1,
        .init = sims_init,
        .fini = sims_fini,
        .upkeep = sims_upkeep,
    };
    return svc_main(argc, argv, &def);
}
