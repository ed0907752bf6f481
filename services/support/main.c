/* onceiot-support: support tickets with their lifecycle, assignment,
 * comments, SLA and search (proto/support/v1/support.proto). */
#include "onceiot/config.h"
#include "onceiot/log.h"
#include "support.h"

#include <string.h>

static const rpc_method_impl_t support_methods[] = {
    {"CreateTicket", support_create_ticket},   {"GetTicket", support_get_ticket},
    {"ListTickets", support_list_tickets},     {"UpdateTicket", support_update_ticket},
    {"AssignTicket", support_assign_ticket},   {"StartTicket", support_start_ticket},
    {"ResolveTicket", support_resolve_ticket}, {"ReopenTicket", support_reopen_ticket},
    {"CloseTicket", support_close_ticket},     {"AddComment", support_add_comment},
    {"ListComments", support_list_comments},   {"ListAuditRecords", svc_list_audit_records},
};

static const rpc_service_impl_t support_service = {
    .descriptor = &onceiot__support__v1__support_service__descriptor,
    .methods = support_methods,
    .n_methods = sizeof(support_methods) / sizeof(support_methods[0]),
};

static support_state_t state;

/* Opens the channels to sims and identity; refuses to start without their
 * addresses or this service's signing keys for them. */
static int support_init(svc_t *svc)
{
    const char *sims_addr = NULL, *identity_addr = NULL;
    long window_s = 0;
    cfg_var_t vars[] = {
        {"ONCEIOT_SIMS_ADDR", CFG_STRING, NULL, true, 0, 0, &sims_addr,
         "host:port of onceiot-sims"},
        {"ONCEIOT_IDENTITY_ADDR", CFG_STRING, NULL, true, 0, 0, &identity_addr,
         "host:port of onceiot-identity"},
        {"ONCEIOT_SUPPORT_REOPEN_WINDOW_S", CFG_INT, "604800", false, 0, 31536000, &window_s, NULL},
    };
    const char *callees[] = {"sims", "identity"};
    for (size_t i = 0; i < 2; i++)
        if (!svc_signing_key(svc, callees[i])) {
            log_msg(LOG_ERROR, "config_invalid",
                    "ONCEIOT_PRINCIPAL_SIGNING_KEYS has no key for %s (onceiot-keys prints it)",
                    callees[i]);
            return ERR_CONFIG;
        }
    char err[256];
    if (cfg_load(vars, sizeof(vars) / sizeof(vars[0]), err, sizeof(err)) < 0) {
        log_msg(LOG_ERROR, "config", "%s", err);
        return ERR_CONFIG;
    }
    state.svc = svc;
    state.reopen_window_s = window_s;
    if (rpc_channel_new(sims_addr, 16 << 20, &state.sims) < 0) {
        log_msg(LOG_ERROR, "config", "ONCEIOT_SIMS_ADDR: cannot use %s", sims_addr);
        return ERR_CONFIG;
    }
    if (rpc_channel_new(identity_addr, 0, &state.identity) < 0) {
        log_msg(LOG_ERROR, "config", "ONCEIOT_IDENTITY_ADDR: cannot use %s", identity_addr);
        rpc_channel_free(state.sims);
        state.sims = NULL;
        return ERR_CONFIG;
    }
    svc_set_state(svc, &state);
    return 0;
}

static void support_fini(svc_t *svc)
{
    (void)svc;
    rpc_channel_free(state.sims);
    rpc_channel_free(state.identity);
    memset(&state, 0, sizeof(state));
}

int main(int argc, char **argv)
{
    static const svc_def_t def = {
        .name = "support",
        .default_listen = "127.0.0.1:50065",
        .uses_db = true,
        .authenticated = true,
        .services = &support_service,
        .n_services = 1,
        .init = support_init,
        .fini = support_fini,
    };
    return svc_main(argc, argv, &def);
}
