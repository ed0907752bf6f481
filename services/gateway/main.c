/* onceiot-gateway: the one authenticated entry that routes every call to its
 * service.
 *
 * It serves health and reflection for the whole API itself and proxies every
 * other call (see proxy.c). It refuses to start when an upstream address is
 * missing or a public method lacks its auth rule. It owns no tables. */
#include "gateway.h"

#include "onceiot/config.h"
#include "onceiot/log.h"
#include "onceiot/mem.h"
#include "onceiot/svc.h"

typedef struct gw_config {
    long max_message_bytes;
    long rate_rps;
    long rate_burst;
    long rate_keys;
    long public_rps;
    long public_burst;
    long streams_per_org;
    long stream_lifetime_s;
    long stream_check_ms;
    long auth_cache_s;
    long auth_cache_entries;
    long auth_timeout_ms;
    long health_interval_ms;
    long upstream_channels;
} gw_config_t;

static gw_t gw__state;

static void gw__fini(svc_t *svc)
{
    gw_t *gw = svc_state(svc);
    if (!gw)
        return;
    gw_streams_free(gw->streams);
    /* The upstreams' health thread asks auth whether the gateway is ready. */
    gw_upstreams_stop(gw->upstreams);
    gw_auth_free(gw->auth);
    gw_ratelimit_free(gw->public_ratelimit);
    gw_upstreams_free(gw->upstreams);
    gw_ratelimit_free(gw->ratelimit);
    gw_routes_free(gw->routes);
    descset_free(gw->public_ds);
    mem_free(gw->up_keys);
    mem_free(gw->up_handled);
    mem_free(gw->public_bytes);
    svc_set_state(svc, NULL);
}

static int gw__init(svc_t *svc)
{
    gw_config_t c;
    const cfg_var_t vars[] = {
        {"ONCEIOT_MAX_MESSAGE_BYTES", CFG_INT, "4194304", false, 1024, 1073741824,
         &c.max_message_bytes, NULL},
        {"ONCEIOT_RATE_LIMIT_RPS", CFG_INT, "200", false, 1, 10000000, &c.rate_rps,
         "calls per second each principal may make through this gateway replica (per replica: N "
         "replicas allow about N times this)"},
        {"ONCEIOT_RATE_LIMIT_BURST", CFG_INT, "400", false, 1, 10000000, &c.rate_burst,
         "calls a principal may make at once before the rate applies"},
        {"ONCEIOT_RATE_LIMIT_KEYS", CFG_INT, "65536", false, 16, 16777216, &c.rate_keys, NULL},
        {"ONCEIOT_PUBLIC_RATE_LIMIT_RPS", CFG_INT, "5", false, 1, 10000000, &c.public_rps,
         "calls per second to public methods (Login) per client address, per gateway replica"},
        {"ONCEIOT_PUBLIC_RATE_LIMIT_BURST", CFG_INT, "20", false, 1, 10000000, &c.public_burst,
         "calls to public methods a client address may make at once"},
        {"ONCEIOT_MAX_STREAMS_PER_ORG", CFG_INT, "32", false, 0, 1000000, &c.streams_per_org,
         "streams one organization may have open through this gateway replica (0: no cap)"},
        {"ONCEIOT_STREAM_LIFETIME_S", CFG_INT, "3600", false, 1, 86400, &c.stream_lifetime_s,
         "longest life of a relayed stream; then it ends with UNAVAILABLE"},
        {"ONCEIOT_STREAM_CHECK_MS", CFG_INT, "1000", false, 10, 60000, &c.stream_check_ms,
         "how often open streams are checked against expiry and revocations"},
        {"ONCEIOT_AUTH_CACHE_S", CFG_INT, "5", false, 0, 3600, &c.auth_cache_s,
         "seconds an API key's answer is cached (revocation takes effect within this, at every "
         "replica)"},
        {"ONCEIOT_AUTH_CACHE_ENTRIES", CFG_INT, "16384", false, 16, 16777216, &c.auth_cache_entries,
         NULL},
        {"ONCEIOT_AUTH_TIMEOUT_MS", CFG_INT, "2000", false, 10, 60000, &c.auth_timeout_ms, NULL},
        {"ONCEIOT_HEALTH_INTERVAL_MS", CFG_INT, "1000", false, 50, 600000, &c.health_interval_ms,
         NULL},
        {"ONCEIOT_UPSTREAM_CHANNELS", CFG_INT, "1", false, 1, 64, &c.upstream_channels,
         "HTTP/2 connections to each upstream that proxied calls are spread over"},
    };
    char err[512];
    int rc = cfg_load(vars, sizeof(vars) / sizeof(vars[0]), err, sizeof(err));
    if (rc < 0) {
        log_msg(LOG_ERROR, "config_invalid", "%s", err);
        return rc;
    }
    gw_t *gw = &gw__state;
    gw->srv = svc_server(svc);
    svc_set_state(svc, gw);
    rc = gw_routes_build(rpc_server_descset(gw->srv), &gw->routes, err, sizeof(err));
    if (rc < 0) {
        log_msg(LOG_ERROR, "routes_invalid", "%s", err);
        goto done;
    }
    /* A key for every upstream: each service checks the gateway's
     * principals with its own secret. */
    size_t n_up = gw_routes_upstream_count(gw->routes);
    gw->up_keys = mem_calloc(n_up, sizeof(*gw->up_keys));
    for (size_t i = 0; i < n_up; i++) {
        const char *name = gw_routes_upstream_name(gw->routes, i);
        if (!(gw->up_keys[i] = svc_signing_key(svc, name))) {
            log_msg(LOG_ERROR, "config_invalid",
                    "ONCEIOT_PRINCIPAL_SIGNING_KEYS has no key for %s (onceiot-keys prints them)",
                    name);
            rc = ERR_CONFIG;
            goto done;
        }
    }
    if (metrics_enabled()) {
        static const char *const up_labels[] = {"upstream", "grpc_code", NULL};
        metrics_family_t *f = metrics_counter(
            "onceiot_gateway_upstream_handled_total",
            "Calls the gateway relayed to each upstream, by the upstream's status code.",
            up_labels);
        gw->up_handled = mem_calloc(n_up, sizeof(*gw->up_handled));
        for (size_t i = 0; i < n_up; i++) {
            const char *v[] = {gw_routes_upstream_name(gw->routes, i)};
            gw->up_handled[i] = metrics_by_code_new(f, v);
        }
        gw->auth_cache_hits = metrics_counter_plain("onceiot_gateway_auth_cache_hits_total",
                                                    "API keys answered from the gateway's cache.");
        gw->auth_cache_misses =
            metrics_counter_plain("onceiot_gateway_auth_cache_misses_total",
                                  "API keys the gateway had to ask identity about.");
    }
    size_t public_len;
    rc = gw_public_descset(rpc_server_descset(gw->srv), gw->routes, &gw->public_bytes, &public_len,
                           &gw->public_ds);
    if (rc < 0) {
        log_msg(LOG_ERROR, "routes_invalid", "the descriptor set does not parse");
        goto done;
    }
    rpc_server_set_reflection(gw->srv, gw->public_ds);
    rc = gw_upstreams_open(gw->routes, (size_t)c.max_message_bytes, (size_t)c.upstream_channels,
                           &gw->upstreams, err, sizeof(err));
    if (rc < 0) {
        log_msg(LOG_ERROR, "config_invalid", "%s", err);
        goto done;
    }
    gw_auth_opts_t ao = {
        .identity = gw_upstreams_find(gw->upstreams, "identity"),
        .key = svc_signing_key(svc, "identity"),
        .cache_seconds = (int)c.auth_cache_s,
        .cache_entries = (size_t)c.auth_cache_entries,
        .auth_timeout_ms = (int)c.auth_timeout_ms,
    };
    gw->auth = gw_auth_new(&ao);
    gw->ratelimit = gw_ratelimit_new((double)c.rate_rps, (double)c.rate_burst, (size_t)c.rate_keys);
    gw->public_ratelimit =
        gw_ratelimit_new((double)c.public_rps, (double)c.public_burst, (size_t)c.rate_keys);
    /* An API-key principal may be as old as both caches (ours and
     * identity's own, IDENTITY_CACHE_SECONDS) allow. */
    gw_streams_opts_t so = {.max_per_org = c.streams_per_org,
                            .lifetime_s = c.stream_lifetime_s,
                            .check_ms = c.stream_check_ms,
                            .key_grace_ms = (c.auth_cache_s + 5) * 1000};
    gw->streams = gw_streams_new(gw->auth, &so);
    rpc_server_set_proxy(gw->srv, gw_proxy, gw);
    gw_auth_start(gw->auth);
    gw_streams_start(gw->streams);
    gw_upstreams_watch(gw->upstreams, gw->srv, gw->auth, (int)c.health_interval_ms);

    log_rec_t r;
    log_begin(&r, LOG_INFO, "routes_loaded");
    log_int(&r, "methods", (long long)gw_routes_count(gw->routes));
    log_int(&r, "services", (long long)gw_routes_service_count(gw->routes));
    log_end(&r);
done:
    if (rc < 0)
        gw__fini(svc);
    return rc;
}

int main(int argc, char **argv)
{
    static const svc_def_t def = {
        .name = "gateway",
        .default_listen = "127.0.0.1:50051",
        .uses_db = false,
        .authenticated = false, /* no caller signs for it: it signs for others */
        .init = gw__init,
        .fini = gw__fini,
    };
    return svc_main(argc, argv, &def);
}
