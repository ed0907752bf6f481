/* onceiot-commerce: the product catalog and orders, with top-ups and SIM
 * cards fulfilled through sims exactly once (proto/commerce/v1/commerce.proto). */
#include "commerce.h"
#include "onceiot/config.h"
#include "onceiot/log.h"

#include <string.h>

static const rpc_method_impl_t commerce_methods[] = {
    {"CreateProduct", commerce_create_product},
    {"GetProduct", commerce_get_product},
    {"ListProducts", commerce_list_products},
    {"UpdateProduct", commerce_update_product},
    {"DeactivateProduct", commerce_deactivate_product},
    {"CreateOrder", commerce_create_order},
    {"GetOrder", commerce_get_order},
    {"ListOrders", commerce_list_orders},
    {"CancelOrder", commerce_cancel_order},
    {"ProcessOrder", commerce_process_order},
    {"ShipOrder", commerce_ship_order},
    {"ListAuditRecords", svc_list_audit_records},
};

static const rpc_service_impl_t commerce_service = {
    .descriptor = &onceiot__commerce__v1__commerce_service__descriptor,
    .methods = commerce_methods,
    .n_methods = sizeof(commerce_methods) / sizeof(commerce_methods[0]),
};

static commerce_state_t state;

static const outbox_topic_t commerce_topics[] = {
    {COMMERCE_TOPIC_TOP_UP, commerce_deliver_top_up, &state},
    {COMMERCE_TOPIC_REGISTER, commerce_deliver_register, &state},
};

/* Opens the channel to sims and starts the fulfilment dispatcher. */
static int commerce_init(svc_t *svc)
{
    const char *sims_addr = NULL;
    long lease_ms = 0;
    cfg_var_t vars[] = {
        {"ONCEIOT_SIMS_ADDR", CFG_STRING, NULL, true, 0, 0, &sims_addr,
         "host:port of onceiot-sims"},
        {"ONCEIOT_OUTBOX_LEASE_MS", CFG_INT, "30000", false, 1000, 3600000, &lease_ms, NULL},
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
    svc_set_state(svc, &state);
    const outbox_opts_t o = {
        .pool = svc_db(svc),
        .service = "commerce",
        .topics = commerce_topics,
        .n_topics = sizeof(commerce_topics) / sizeof(commerce_topics[0]),
        .lease_ms = (int)lease_ms,
    };
    return outbox_start(&o, &state.outbox);
}

static void commerce_fini(svc_t *svc)
{
    (void)svc;
    outbox_stop(state.outbox);
    rpc_channel_free(state.sims);
    memset(&state, 0, sizeof(state));
}

int main(int argc, char **argv)
{
    static const svc_def_t def = {
        .name = "commerce",
        .default_listen = "127.0.0.1:50064",
        .uses_db = true,
        .authenticated = true,
        .services = &commerce_service,
        .n_services = 1,
        .init = commerce_init,
        .fini = commerce_fini,
    };
    return svc_main(argc, argv, &def);
}
