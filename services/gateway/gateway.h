/* The gateway's parts: routes (method -> upstream + rule, from the embedded
 * descriptors), upstream channels and their health, authentication and
 * authorization, the per-principal rate limit, and the asynchronous proxy
 * that pumps each call between the client and its service. */
#ifndef ONCEIOT_GATEWAY_H
#define ONCEIOT_GATEWAY_H

#include "common/v1/auth.pb-c.h"
#include "onceiot/authrule.h"
#include "onceiot/client.h"
#include "onceiot/descset.h"
#include "onceiot/metrics.h"
#include "onceiot/principal.h"
#include "onceiot/rpc.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- routes.c ---- */

typedef auth_rule_t gw_rule_t;

typedef struct gw_route {
    const char *path; /* "/onceiot.sims.v1.SimService/GetSim" (the descset's string) */
    size_t upstream;  /* index into the route table's upstream names */
    bool unary;       /* neither side streams: relayed in three batches */
    gw_rule_t rule;
    metrics_rpc_t *served; /* grpc_server_* of calls to the gateway; NULL: metrics off */
    metrics_rpc_t *sent;   /* grpc_client_* of the calls relayed upstream */
} gw_route_t;

typedef struct gw_routes gw_routes_t;

/* The product's services: each has an upstream whether or not its proto is
 * in the descriptor set yet, so their addresses are always required. */
extern const char *const gw_product_upstreams[];
extern const size_t gw_n_product_upstreams;

/* Builds the route table of every method of every onceiot.* service in ds:
 * the upstream is the package's second segment (onceiot.<upstream>.v1).
 * Fails closed: a method without an (onceiot.common.v1.auth) rule, or with
 * one that does not parse, makes it return ERR_CONFIG with err naming the
 * method. The table refers to ds's strings: ds must outlive it. */
int gw_routes_build(const descset_t *ds, gw_routes_t **out, char *err,
                    size_t errlen) ONCEIOT_MUSTCHECK;
void gw_routes_free(gw_routes_t *r);
/* The route of a method path (not NUL-terminated), or NULL when the method is
 * unknown or internal. */
const gw_route_t *gw_routes_find(const gw_routes_t *r, const char *path, size_t len);
/* Every route, internal ones included (for tests and logs). */
size_t gw_routes_count(const gw_routes_t *r);
const gw_route_t *gw_routes_at(const gw_routes_t *r, size_t i);
size_t gw_routes_upstream_count(const gw_routes_t *r);
const char *gw_routes_upstream_name(const gw_routes_t *r, size_t i);
/* The fully-qualified names of the routed services and their upstreams, for
 * the gateway's health. */
size_t gw_routes_service_count(const gw_routes_t *r);
const char *gw_routes_service_name(const gw_routes_t *r, size_t i, size_t *upstream);
/* ---- public_api.c ---- */

/* The descriptor set of full without the internal methods of routes, for
 * the gateway's reflection: *bytes (mem_free) holds it and *out indexes it
 * (descset_free, before freeing *bytes). Returns 0 or ERR_INVALID_ARGUMENT. */
int gw_public_descset(const descset_t *full, const gw_routes_t *routes, uint8_t **bytes,
                      size_t *len, descset_t **out) ONCEIOT_MUSTCHECK;

/* ---- upstreams.c ---- */

typedef struct gw_upstreams gw_upstreams_t;

/* Opens the channels of every upstream of routes, from ONCEIOT_<NAME>_ADDR
 * (all required): one for the gateway's own calls (health, identity) and
 * n_proxy for proxied calls, each its own HTTP/2 connection, so that one
 * connection's serial processing does not cap the gateway. Returns 0, or
 * ERR_CONFIG with err naming the missing variable. */
int gw_upstreams_open(const gw_routes_t *routes, size_t max_message_bytes, size_t n_proxy,
                      gw_upstreams_t **out, char *err, size_t errlen) ONCEIOT_MUSTCHECK;
typedef struct gw_auth gw_auth_t;

/* Starts the thread that checks each upstream's health every interval_ms
 * (every 100 ms while any is not SERVING) and mirrors it into srv's health
 * for the upstream's service names. The gateway's own health ("") is
 * SERVING only while it can authenticate: identity SERVING and auth's
 * verification keys loaded; it and the upstreams' names are NOT_SERVING
 * until the first checks. An upstream seen back has its channels' connect
 * backoff reset, so they reconnect at once. Call before the server starts. */
void gw_upstreams_watch(gw_upstreams_t *u, rpc_server_t *srv, gw_auth_t *auth, int interval_ms);
/* The flags of the SEND_INITIAL_METADATA of a proxied call to upstream i
 * with this deadline: wait-for-ready (the call waits, within its deadline,
 * for a channel that is connecting or in backoff) unless the upstream is
 * known to be down or the call has no deadline; then it fails at once with
 * UNAVAILABLE. */
uint32_t gw_upstreams_call_flags(const gw_upstreams_t *u, size_t i, gpr_timespec deadline);
/* Stops the health thread (which reads the auth state: stop it before
 * gw_auth_free). Idempotent. */
void gw_upstreams_stop(gw_upstreams_t *u);
/* Stops the health thread and closes the channels. */
void gw_upstreams_free(gw_upstreams_t *u);
rpc_channel_t *gw_upstreams_channel(const gw_upstreams_t *u, size_t i);
/* The channel for the next proxied call to upstream i (round robin). */
grpc_channel *gw_upstreams_proxy_channel(gw_upstreams_t *u, size_t i);
const char *gw_upstreams_name(const gw_upstreams_t *u, size_t i);
/* The channel of a named upstream, or NULL. */
rpc_channel_t *gw_upstreams_find(const gw_upstreams_t *u, const char *name);

/* ---- auth.c ---- */

typedef struct gw_auth_opts {
    rpc_channel_t *identity;    /* where Authenticate and GetVerificationKeys go */
    const principal_key_t *key; /* the gateway's key for identity */
    int cache_seconds;          /* API-key answers are kept at most this long */
    size_t cache_entries;       /* bound on the API-key cache */
    int auth_timeout_ms;        /* deadline of an Authenticate call */
} gw_auth_opts_t;

gw_auth_t *gw_auth_new(const gw_auth_opts_t *opts);
/* Starts the thread polling identity's verification keys and revocations. */
void gw_auth_start(gw_auth_t *a);
/* True once identity's verification keys have been loaded (they stay
 * loaded while identity is away). */
bool gw_auth_ready(gw_auth_t *a);
/* Makes the polling thread fetch the keys now (identity just came back). */
void gw_auth_refresh(gw_auth_t *a);
void gw_auth_free(gw_auth_t *a);

/* Verifies a login token locally. Returns 0 with *out (in arena) and the
 * token's issue time (unix ms) in *issued_ms, or ERR_UNAUTHENTICATED with
 * *why. */
int gw_auth_token(gw_auth_t *a, const char *token, arena_t *arena, principal_t **out,
                  int64_t *issued_ms, const char **why) ONCEIOT_MUSTCHECK;
/* True when identity has published a revocation of user_id's credentials
 * at or after since_ms (unix ms): deactivation, role or password change. */
bool gw_auth_user_revoked(gw_auth_t *a, int64_t user_id, int64_t since_ms);
/* True when identity has published that API key key_id was revoked. */
bool gw_auth_key_revoked(gw_auth_t *a, int64_t key_id);
/* Looks an API key up in the cache: 1 with *out (in arena) on a cached
 * principal, ERR_UNAUTHENTICATED on a cached refusal, 0 on a miss. */
int gw_auth_key_cached(gw_auth_t *a, const char *secret, arena_t *arena,
                       principal_t **out) ONCEIOT_MUSTCHECK;

/* Completion of gw_auth_key_lookup: rc 0 with p (in the arena given), or a
 * negative ERR_* with why (UNAUTHENTICATED for a bad key, UNAVAILABLE when
 * identity cannot answer). Runs on an I/O thread. */
typedef void (*gw_auth_done_fn)(void *arg, int rc, principal_t *p, const char *why);
/* Asks identity's Authenticate about an API key without blocking: the call
 * runs on cq (the server's, whose threads dispatch rpc_tag_t) and done runs
 * when it ends. Caches the answer. request_id and traceparent (the call's
 * trace, trace_header) go along for the logs. */
void gw_auth_key_lookup(gw_auth_t *a, grpc_completion_queue *cq, const char *secret,
                        const char *request_id, const char *traceparent, arena_t *arena,
                        gw_auth_done_fn done, void *arg);

/* Checks a principal against a rule. Returns 0, or ERR_PERMISSION_DENIED
 * with *why. */
int gw_authorize(const gw_rule_t *rule, const principal_t *p, const char **why) ONCEIOT_MUSTCHECK;

/* ---- ratelimit.c ---- */

typedef struct gw_ratelimit gw_ratelimit_t;

/* A token bucket per key refilled at rps up to burst; at most max_keys
 * buckets are kept (the least recently used are forgotten). */
gw_ratelimit_t *gw_ratelimit_new(double rps, double burst, size_t max_keys);
void gw_ratelimit_free(gw_ratelimit_t *rl);
/* Takes one token for key at now_ns (monotonic). Returns true if allowed;
 * otherwise false with *retry_ms, when a token will be there. */
bool gw_ratelimit_take(gw_ratelimit_t *rl, int64_t key, int64_t now_ns, int64_t *retry_ms);

/* ---- streams.c ---- */

/* A relayed stream, as the stream guard sees it (embedded in the call). */
typedef struct gw_stream {
    struct gw_stream *prev, *next; /* NULL when not registered */
    grpc_call *down;               /* the client's call: cancelled to end it */
    const char *method;
    int64_t org, user_id;
    int64_t expires_at;      /* unix seconds; 0: never */
    int64_t issued_ms;       /* login token: its iat (unix ms) */
    int64_t key_id;          /* API key: its id; 0 for a token */
    int64_t started_mono_ms; /* for the lifetime cap */
    int64_t started_wall_ms;
    bool ended; /* cancelled by the guard */
} gw_stream_t;

typedef struct gw_streams_opts {
    long max_per_org;  /* open streams per organization; 0: no cap */
    long lifetime_s;   /* longest life of one stream */
    long check_ms;     /* how often the guard looks */
    long key_grace_ms; /* API-key answers may be this old (the auth cache) */
} gw_streams_opts_t;

typedef struct gw_streams gw_streams_t;

gw_streams_t *gw_streams_new(gw_auth_t *auth, const gw_streams_opts_t *o);
/* Starts the guard thread that runs gw_streams_check every check_ms. */
void gw_streams_start(gw_streams_t *s);
void gw_streams_free(gw_streams_t *s);
/* Registers a stream for principal p (issued_ms of its token, or key_id of
 * its API key). Returns 0, or ERR_RESOURCE_EXHAUSTED when p's organization
 * already has max_per_org streams open (st is then not registered). */
int gw_streams_add(gw_streams_t *s, gw_stream_t *st, grpc_call *down, const char *method,
                   const principal_t *p, int64_t issued_ms, int64_t key_id) ONCEIOT_MUSTCHECK;
/* Unregisters st (nothing when it is not registered). */
void gw_streams_remove(gw_streams_t *s, gw_stream_t *st);
/* Ends every stream whose credential expired or was revoked, or that is
 * older than the lifetime; returns how many it ended. */
int gw_streams_check(gw_streams_t *s);

/* ---- request.c ---- */

/* The credential of "authorization: Bearer <credential>" (case-insensitive
 * scheme, spaces trimmed), NUL-terminated in a; NULL when the header is
 * missing, of another scheme, empty or holds a NUL byte. */
const char *gw_request_bearer(const grpc_metadata_array *md, arena_t *a);
/* The IP address of a core peer string ("ipv4:1.2.3.4:5678" -> "1.2.3.4",
 * "ipv6:[::1]:5678" -> "::1"; other forms whole, NULL -> ""), in a. */
const char *gw_request_client_address(arena_t *a, const char *peer);

/* ---- proxy.c ---- */

typedef struct gw {
    rpc_server_t *srv;
    gw_routes_t *routes;
    gw_upstreams_t *upstreams;
    gw_auth_t *auth;
    gw_ratelimit_t *ratelimit;        /* per user */
    gw_ratelimit_t *public_ratelimit; /* public methods, per client address */
    gw_streams_t *streams;
    uint8_t *public_bytes; /* the descriptor set reflection serves */
    descset_t *public_ds;
    const principal_key_t **up_keys; /* per upstream index: signs the principal sent there */
    metrics_by_code_t **up_handled;  /* per upstream index: its calls' codes (NULL: off) */
    metrics_series_t *auth_cache_hits, *auth_cache_misses; /* API keys */
} gw_t;

/* The rpc_proxy_fn of the gateway (ctx is a gw_t). */
void gw_proxy(void *ctx, grpc_call *call, grpc_call_details *details, grpc_metadata_array *md);

#endif
