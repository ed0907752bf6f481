/* The gateway end to end: real identity, test service and gateway processes
 * on the test PostgreSQL; every call goes through the gateway unless a test
 * says otherwise. */
#include "google/protobuf/any.pb-c.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "identity/v1/identity.pb-c.h"
#include "onceiot/client.h"
#include "onceiot/principal.h"
#include "onceiot/token.h"
#include "stack_harness.h"
#include "test/v1/test.pb-c.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define ECHO     "/onceiot.test.v1.TestService/Echo"
#define SLEEP    "/onceiot.test.v1.TestService/Sleep"
#define COUNT    "/onceiot.test.v1.TestService/Count"
#define SUM      "/onceiot.test.v1.TestService/Sum"
#define INSERT   "/onceiot.test.v1.TestService/Insert"
#define IDENTITY "/onceiot.identity.v1.IdentityService/"

static sh_stack_t st;
static rpc_channel_t *gw;
static arena_t *arena;
static char bearer[256];

static void start_with(const char *const *identity_env, const char *const *gateway_env)
{
    sh_start(&st, identity_env, gateway_env);
    cr_assert(rpc_channel_new(st.gateway.addr, 1 << 20, &gw) == 0);
    arena = arena_new();
    snprintf(bearer, sizeof(bearer), "Bearer %s", st.admin_key);
}

static void setup(void)
{
    start_with(NULL, NULL);
}

static void teardown(void)
{
    rpc_channel_free(gw);
    arena_free(arena);
    sh_stop(&st);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Call options carrying "authorization: <auth>" (NULL: none) plus extra. */
static rpc_call_opts_t opts_with(const char *auth, const rpc_md_t *extra, size_t n_extra,
                                 int64_t timeout_ms)
{
    rpc_md_t *md = arena_calloc(arena, n_extra + 1, sizeof(*md));
    size_t n = 0;
    if (auth)
        md[n++] = (rpc_md_t){"authorization", auth, 0};
    for (size_t i = 0; i < n_extra; i++)
        md[n++] = extra[i];
    return (rpc_call_opts_t){
        .timeout_ms = timeout_ms ? timeout_ms : 10000, .metadata = md, .n_metadata = n};
}

static int echo_as(const char *auth, const char *text, Onceiot__Test__V1__EchoReply **out,
                   rpc_status_t *s)
{
    Onceiot__Test__V1__EchoRequest req = ONCEIOT__TEST__V1__ECHO_REQUEST__INIT;
    req.text = (char *)text;
    rpc_call_opts_t o = opts_with(auth, NULL, 0, 0);
    ProtobufCMessage *resp = NULL;
    int rc = rpc_unary(gw, ECHO, &req.base, &onceiot__test__v1__echo_reply__descriptor, arena, &o,
                       &resp, s);
    if (out)
        *out = (Onceiot__Test__V1__EchoReply *)resp;
    return rc;
}

static int insert_as(const char *auth, rpc_status_t *s)
{
    Onceiot__Test__V1__InsertRequest req = ONCEIOT__TEST__V1__INSERT_REQUEST__INIT;
    req.name = arena_printf(arena, "item-%lld-%d", (long long)now_ms(), rand());
    req.amount = 1;
    rpc_call_opts_t o = opts_with(auth, NULL, 0, 0);
    ProtobufCMessage *resp = NULL;
    return rpc_unary(gw, INSERT, &req.base, &onceiot__test__v1__insert_reply__descriptor, arena, &o,
                     &resp, s);
}

/* Creates a user (as the bootstrap superuser) and returns its id. */
static int64_t create_user(const char *name, Onceiot__Common__V1__Role role, int64_t org)
{
    Onceiot__Identity__V1__CreateUserRequest req = ONCEIOT__IDENTITY__V1__CREATE_USER_REQUEST__INIT;
    req.username = (char *)name;
    req.email = arena_printf(arena, "%s@example.com", name);
    req.password = SH_PASSWORD;
    req.full_name = "Test User";
    req.role = role;
    req.organization_id = org;
    rpc_call_opts_t o = opts_with(bearer, NULL, 0, 0);
    ProtobufCMessage *resp = NULL;
    rpc_status_t s;
    int rc = rpc_unary(gw, IDENTITY "CreateUser", &req.base,
                       &onceiot__identity__v1__user__descriptor, arena, &o, &resp, &s);
    cr_assert_eq(rc, 0, "CreateUser %s: %s %s", name, err_grpc_name(s.code), s.message);
    return ((Onceiot__Identity__V1__User *)resp)->id;
}

/* Creates an API key for a user with the given scopes; returns "Bearer <secret>"
 * and the key's id. */
static const char *create_key(int64_t user_id, const char *const *scopes, size_t n, int64_t *key_id)
{
    Onceiot__Identity__V1__CreateApiKeyRequest req =
        ONCEIOT__IDENTITY__V1__CREATE_API_KEY_REQUEST__INIT;
    req.name = "test";
    req.scopes = (char **)scopes;
    req.n_scopes = n;
    req.user_id = user_id;
    rpc_call_opts_t o = opts_with(bearer, NULL, 0, 0);
    ProtobufCMessage *resp = NULL;
    rpc_status_t s;
    int rc = rpc_unary(gw, IDENTITY "CreateApiKey", &req.base,
                       &onceiot__identity__v1__create_api_key_response__descriptor, arena, &o,
                       &resp, &s);
    cr_assert_eq(rc, 0, "CreateApiKey: %s %s", err_grpc_name(s.code), s.message);
    const Onceiot__Identity__V1__CreateApiKeyResponse *r = (const void *)resp;
    if (key_id)
        *key_id = r->api_key->id;
    return arena_printf(arena, "Bearer %s", r->secret);
}

/* Logs in (no credentials needed: Login is public) and returns "Bearer <token>". */
static const char *login(const char *username)
{
    Onceiot__Identity__V1__LoginRequest req = ONCEIOT__IDENTITY__V1__LOGIN_REQUEST__INIT;
    req.username = (char *)username;
    req.password = SH_PASSWORD;
    rpc_call_opts_t o = opts_with(NULL, NULL, 0, 0);
    ProtobufCMessage *resp = NULL;
    rpc_status_t s;
    int rc = rpc_unary(gw, IDENTITY "Login", &req.base,
                       &onceiot__identity__v1__login_response__descriptor, arena, &o, &resp, &s);
    cr_assert_eq(rc, 0, "Login: %s %s", err_grpc_name(s.code), s.message);
    return arena_printf(arena, "Bearer %s", ((Onceiot__Identity__V1__LoginResponse *)resp)->token);
}

static int get_user(const char *auth, int64_t id, const rpc_md_t *extra, size_t n_extra,
                    rpc_status_t *s)
{
    Onceiot__Identity__V1__GetUserRequest req = ONCEIOT__IDENTITY__V1__GET_USER_REQUEST__INIT;
    req.id = id;
    rpc_call_opts_t o = opts_with(auth, extra, n_extra, 0);
    ProtobufCMessage *resp = NULL;
    return rpc_unary(gw, IDENTITY "GetUser", &req.base, &onceiot__identity__v1__user__descriptor,
                     arena, &o, &resp, s);
}

static int health_of(const char *service)
{
    return ph_health(st.gateway.addr, service);
}

TestSuite(gateway, .init = setup, .fini = teardown, .timeout = 180);

/* ---- routing ---- */

Test(gateway, unary_call_is_relayed_with_bytes_and_request_id_intact)
{
    Onceiot__Test__V1__EchoRequest req = ONCEIOT__TEST__V1__ECHO_REQUEST__INIT;
    req.text = "h\xc3\xa9llo through the gateway";
    rpc_md_t md[] = {{"x-request-id", "trace-gw-42", 0}};
    rpc_call_opts_t o = opts_with(bearer, md, 1, 0);
    ProtobufCBinaryData out;
    rpc_status_t s;
    size_t n = onceiot__test__v1__echo_request__get_packed_size(&req);
    uint8_t *buf = arena_alloc(arena, n);
    onceiot__test__v1__echo_request__pack(&req, buf);
    cr_assert_eq(rpc_unary_raw(gw, ECHO, buf, n, arena, &o, &out, &s), 0, "%s", s.message);
    Onceiot__Test__V1__EchoReply *r =
        onceiot__test__v1__echo_reply__unpack(arena_allocator(arena), out.len, out.data);
    cr_assert_not_null(r);
    cr_assert_str_eq(r->text, req.text);
    cr_assert_str_eq(r->request_id, "trace-gw-42", "x-request-id reaches the service");
    /* The gateway logs a call once core is done with it, just after the reply. */
    for (int i = 0; i < 40 && !ph_log_contains(&st.gateway, "\"request_id\":\"trace-gw-42\""); i++)
        usleep(50000);
    cr_assert(ph_log_contains(&st.gateway, "\"request_id\":\"trace-gw-42\""));
    cr_assert(ph_log_contains(&st.gateway, "\"upstream\":\"test\""));
}

Test(gateway, server_and_client_streaming_are_relayed)
{
    rpc_call_opts_t o = opts_with(bearer, NULL, 0, 0);
    rpc_stream_t *s = NULL;
    cr_assert_eq(rpc_stream_open(gw, COUNT, arena, &o, &s), 0);
    Onceiot__Test__V1__CountRequest creq = ONCEIOT__TEST__V1__COUNT_REQUEST__INIT;
    creq.count = 50;
    cr_assert_eq(rpc_stream_send(s, &creq.base), 0);
    cr_assert_eq(rpc_stream_close_send(s), 0);
    ProtobufCMessage *m;
    int n = 0, rc;
    while ((rc = rpc_stream_recv(s, &onceiot__test__v1__count_reply__descriptor, &m)) > 0)
        cr_assert_eq(((Onceiot__Test__V1__CountReply *)m)->n, ++n);
    rpc_status_t stt;
    cr_assert_eq(rpc_stream_finish(s, &stt), 0, "%s", stt.message);
    cr_assert_eq(n, 50);

    cr_assert_eq(rpc_stream_open(gw, SUM, arena, &o, &s), 0);
    for (int i = 1; i <= 100; i++) {
        Onceiot__Test__V1__SumRequest sreq = ONCEIOT__TEST__V1__SUM_REQUEST__INIT;
        sreq.value = i;
        cr_assert_eq(rpc_stream_send(s, &sreq.base), 0);
    }
    cr_assert_eq(rpc_stream_close_send(s), 0);
    cr_assert_eq(rpc_stream_recv(s, &onceiot__test__v1__sum_reply__descriptor, &m), 1);
    cr_assert_eq(((Onceiot__Test__V1__SumReply *)m)->total, 5050);
    cr_assert_eq(((Onceiot__Test__V1__SumReply *)m)->messages, 100);
    cr_assert_eq(rpc_stream_finish(s, &stt), 0, "%s", stt.message);
}

Test(gateway, status_message_and_bad_request_details_reach_the_client)
{
    Onceiot__Test__V1__EchoRequest req = ONCEIOT__TEST__V1__ECHO_REQUEST__INIT;
    req.text = "x";
    char *v[] = {"iccid: must have 19 or 20 digits", "imei: must be 15 digits"};
    req.violations = v;
    req.n_violations = 2;
    rpc_call_opts_t o = opts_with(bearer, NULL, 0, 0);
    ProtobufCMessage *resp = NULL;
    rpc_status_t s;
    int rc = rpc_unary(gw, ECHO, &req.base, &onceiot__test__v1__echo_reply__descriptor, arena, &o,
                       &resp, &s);
    cr_assert_eq(rc, ERR_INVALID_ARGUMENT);
    const char **fields, **descs;
    cr_assert_eq(rpc_status_violations(&s, arena, &fields, &descs), 2);
    cr_assert_str_eq(fields[0], "iccid");
    cr_assert_str_eq(descs[1], "must be 15 digits");

    req.n_violations = 0;
    req.fail_code = GRPC_STATUS_FAILED_PRECONDITION;
    req.fail_message = "the SIM is terminated";
    rc = rpc_unary(gw, ECHO, &req.base, &onceiot__test__v1__echo_reply__descriptor, arena, &o,
                   &resp, &s);
    cr_assert_eq(s.code, GRPC_STATUS_FAILED_PRECONDITION);
    cr_assert_str_eq(s.message, "the SIM is terminated");
}

Test(gateway, deadline_propagates_to_the_upstream)
{
    Onceiot__Test__V1__SleepRequest req = ONCEIOT__TEST__V1__SLEEP_REQUEST__INIT;
    req.millis = 5000;
    rpc_call_opts_t o = opts_with(bearer, NULL, 0, 300);
    ProtobufCMessage *resp = NULL;
    rpc_status_t s;
    int64_t t0 = now_ms();
    int rc = rpc_unary(gw, SLEEP, &req.base, &onceiot__test__v1__sleep_reply__descriptor, arena, &o,
                       &resp, &s);
    int64_t took = now_ms() - t0;
    cr_assert_eq(rc, ERR_DEADLINE_EXCEEDED, "%s", s.message);
    cr_assert_lt(took, 2000, "took %lld ms", (long long)took);
    /* The service saw the deadline too and stopped sleeping. */
    for (int i = 0; i < 40 && !ph_log_contains(&st.testsvc, "deadline exceeded while sleeping");
         i++)
        usleep(50000);
    cr_assert(ph_log_contains(&st.testsvc, "deadline exceeded while sleeping"));
}

Test(gateway, client_cancel_propagates_to_the_upstream)
{
    rpc_call_opts_t o = opts_with(bearer, NULL, 0, 0);
    rpc_stream_t *s = NULL;
    cr_assert_eq(rpc_stream_open(gw, COUNT, arena, &o, &s), 0);
    Onceiot__Test__V1__CountRequest creq = ONCEIOT__TEST__V1__COUNT_REQUEST__INIT;
    creq.count = 1000;
    creq.interval_millis = 20;
    cr_assert_eq(rpc_stream_send(s, &creq.base), 0);
    cr_assert_eq(rpc_stream_close_send(s), 0);
    ProtobufCMessage *m;
    cr_assert_eq(rpc_stream_recv(s, &onceiot__test__v1__count_reply__descriptor, &m), 1);
    rpc_stream_cancel(s);
    rpc_status_t stt;
    cr_assert_eq(rpc_stream_finish(s, &stt), ERR_CANCELLED);
    for (int i = 0; i < 60 && !ph_log_contains(&st.testsvc, "\"cancelled\":true"); i++)
        usleep(50000);
    cr_assert(ph_log_contains(&st.testsvc, "\"cancelled\":true"),
              "the test service saw the cancel (log %s)", st.testsvc.log);
}

Test(gateway, unknown_and_internal_methods_are_unimplemented)
{
    rpc_call_opts_t o = opts_with(bearer, NULL, 0, 0);
    ProtobufCBinaryData out;
    rpc_status_t s;
    cr_assert_eq(rpc_unary_raw(gw, "/onceiot.test.v1.TestService/Nope", (const uint8_t *)"", 0,
                               arena, &o, &out, &s),
                 ERR_UNIMPLEMENTED);
    cr_assert_eq(
        rpc_unary_raw(gw, "/other.Svc/Method", (const uint8_t *)"", 0, arena, &o, &out, &s),
        ERR_UNIMPLEMENTED);
    Onceiot__Identity__V1__AuthenticateRequest req =
        ONCEIOT__IDENTITY__V1__AUTHENTICATE_REQUEST__INIT;
    req.secret = st.admin_key;
    ProtobufCMessage *resp = NULL;
    cr_assert_eq(rpc_unary(gw, IDENTITY "Authenticate", &req.base,
                           &onceiot__identity__v1__authenticate_response__descriptor, arena, &o,
                           &resp, &s),
                 ERR_UNIMPLEMENTED, "internal methods are never routed");
    cr_assert_eq(rpc_unary(gw, IDENTITY "GetVerificationKeys", &req.base,
                           &onceiot__identity__v1__get_verification_keys_response__descriptor,
                           arena, &o, &resp, &s),
                 ERR_UNIMPLEMENTED);
}

Test(gateway, health_reports_each_upstream_and_a_down_upstream_is_unavailable)
{
    cr_assert(ph_wait_health(st.gateway.addr, "onceiot.test.v1.TestService", 1, 5000));
    cr_assert(ph_wait_health(st.gateway.addr, "onceiot.identity.v1.IdentityService", 1, 5000));
    cr_assert_eq(ph_stop(&st.testsvc, SIGTERM, 20000), 0);
    cr_assert(ph_wait_health(st.gateway.addr, "onceiot.test.v1.TestService", 2, 5000));
    /* Known to be down: calls fail at once instead of waiting for it. */
    rpc_status_t s;
    int64_t t0 = now_ms();
    cr_assert_eq(echo_as(bearer, "x", NULL, &s), ERR_UNAVAILABLE);
    cr_assert_lt(now_ms() - t0, 5000, "at once, not at the 10 s deadline");
    cr_assert(strstr(s.message, "test is unavailable"), "message: %s", s.message);
    cr_assert_eq(health_of(""), 1, "the gateway itself stays SERVING");
    cr_assert_eq(health_of("onceiot.identity.v1.IdentityService"), 1);
}

/* ---- readiness and reconnection ---- */

Test(gateway, started_before_identity_it_is_serving_only_once_it_can_authenticate)
{
    teardown();
    sh_start_gateway_first(&st, NULL);
    cr_assert(rpc_channel_new(st.gateway.addr, 1 << 20, &gw) == 0);
    arena = arena_new();
    cr_assert_eq(health_of(""), 2, "NOT_SERVING while identity is not there");
    cr_assert_eq(health_of("grpc.health.v1.Health"), 1, "alive all the same (liveness)");
    /* Give the gateway's channel to identity time to fall into connect
     * backoff: its checks find nothing to connect to, and it says so. */
    for (int i = 0; i < 100 && !ph_log_contains(&st.gateway, "\"upstream\":\"identity\""); i++)
        usleep(50000);
    cr_assert(ph_log_contains(&st.gateway, "\"upstream\":\"identity\""));
    cr_assert_eq(health_of(""), 2);
    sh_start_identity(&st, NULL);
    snprintf(bearer, sizeof(bearer), "Bearer %s", st.admin_key);
    cr_assert(ph_wait_health(st.gateway.addr, "", 1, 10000), "SERVING once identity is (log %s)",
              st.gateway.log);
    /* The very first authenticated calls work: an API key (identity's
     * Authenticate) and a login token (identity's verification keys). */
    rpc_status_t s;
    cr_assert_eq(echo_as(bearer, "first", NULL, &s), 0, "%s: %s", err_grpc_name(s.code), s.message);
    cr_assert_eq(echo_as(login("admin"), "token", NULL, &s), 0, "%s: %s", err_grpc_name(s.code),
                 s.message);
}

/* Milliseconds of the day of the first line of p's log holding needle, or
 * -1. */
static long log_ms(const ph_proc_t *p, const char *needle)
{
    FILE *f = fopen(p->log, "r");
    if (!f)
        return -1;
    char line[4096];
    long ms = -1;
    int h, m, sec, milli;
    while (ms < 0 && fgets(line, sizeof(line), f)) {
        const char *t = strstr(line, "\"ts\":\"");
        if (strstr(line, needle) && t && (t = strchr(t + 6, 'T')) &&
            sscanf(t, "T%d:%d:%d.%dZ", &h, &m, &sec, &milli) == 4)
            ms = ((h * 60L + m) * 60 + sec) * 1000 + milli;
    }
    fclose(f);
    return ms;
}

/* Four upstreams that accept connections and never answer (hung pods), and
 * a long health interval: the gateway is SERVING as soon as identity and its
 * keys are, and the one live upstream after them is seen within a short
 * check of each hung one, not after an interval per hung upstream (20 s). */
Test(gateway, hung_upstreams_hold_back_neither_readiness_nor_the_other_checks, .timeout = 90)
{
    teardown();
    int hole = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    cr_assert(bind(hole, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(hole, 64) == 0 &&
              getsockname(hole, (struct sockaddr *)&sa, &len) == 0);
    char env[4][96];
    const char *names[] = {"SIMS", "USAGE", "COMMERCE", "SUPPORT"};
    for (int i = 0; i < 4; i++)
        snprintf(env[i], sizeof(env[i]), "ONCEIOT_%s_ADDR=127.0.0.1:%d", names[i],
                 ntohs(sa.sin_port));
    start_with(NULL, (const char *const[]){env[0], env[1], env[2], env[3],
                                           "ONCEIOT_HEALTH_INTERVAL_MS=5000", NULL});
    cr_assert(ph_wait_health(st.gateway.addr, "onceiot.test.v1.TestService", 1, 10000));
    long started = log_ms(&st.gateway, "\"event\":\"server_started\"");
    long serving = log_ms(&st.gateway, "SERVING: callers can be authenticated");
    long test_up = log_ms(&st.gateway, "\"upstream\":\"test\"");
    cr_assert(started >= 0 && serving >= 0 && test_up >= 0, "log %s", st.gateway.log);
    cr_assert_lt(serving - started, 4000, "SERVING %ld ms after start", serving - started);
    cr_assert_lt(test_up - started, 4000, "test seen %ld ms after start", test_up - started);
    rpc_status_t s;
    cr_assert_eq(echo_as(bearer, "through", NULL, &s), 0, "%s", s.message);
    close(hole);
}

/* The upstream was restarted between two health checks (a long interval
 * here): the gateway does not know it was away, so calls wait for the
 * channel to reconnect within their deadline instead of failing at once. */
Test(gateway, a_call_to_a_reconnecting_upstream_waits_within_its_deadline)
{
    teardown();
    start_with(NULL, (const char *const[]){"ONCEIOT_HEALTH_INTERVAL_MS=600000", NULL});
    /* The gateway's first check of the upstream is done (it comes after
     * those of the upstreams that are down here), so the next is 10 minutes
     * away: the kill below is one the gateway does not see. */
    cr_assert(ph_wait_health(st.gateway.addr, "onceiot.test.v1.TestService", 1, 10000));
    rpc_status_t s;
    cr_assert_eq(echo_as(bearer, "connected", NULL, &s), 0, "%s", s.message);
    int port = st.testsvc.port;
    ph_stop(&st.testsvc, SIGKILL, 5000);
    Onceiot__Test__V1__EchoRequest req = ONCEIOT__TEST__V1__ECHO_REQUEST__INIT;
    req.text = "waiting";
    ProtobufCMessage *resp = NULL;
    rpc_call_opts_t o = opts_with(bearer, NULL, 0, 500);
    /* A call may still have gone out on the connection that just died (it
     * fails UNAVAILABLE: wait-for-ready covers only calls not yet sent);
     * once the gateway has seen the connection end, calls wait. */
    int rc = ERR_UNAVAILABLE, unavailable = 0;
    int64_t took = 0;
    while (rc == ERR_UNAVAILABLE && unavailable < 3) {
        int64_t t0 = now_ms();
        rc = rpc_unary(gw, ECHO, &req.base, &onceiot__test__v1__echo_reply__descriptor, arena, &o,
                       &resp, &s);
        took = now_ms() - t0;
        unavailable += rc == ERR_UNAVAILABLE;
    }
    cr_assert_eq(rc, ERR_DEADLINE_EXCEEDED, "waited for the upstream, got %s: %s (%d at once)",
                 err_grpc_name(s.code), s.message, unavailable);
    cr_assert_geq(took, 400, "waited out the deadline (%lld ms)", (long long)took);
    /* Back on the same port: the next call goes through. */
    ph_start_testsvc_at(
        &st.testsvc, port, false,
        (const char *const[]){arena_printf(arena, "ONCEIOT_PRINCIPAL_KEY=%s", st.principal_key),
                              NULL});
    o = opts_with(bearer, NULL, 0, 10000);
    rc = rpc_unary(gw, ECHO, &req.base, &onceiot__test__v1__echo_reply__descriptor, arena, &o,
                   &resp, &s);
    cr_assert_eq(rc, 0, "%s: %s", err_grpc_name(s.code), s.message);
}

Test(gateway, an_upstream_killed_and_restarted_is_routed_to_again_within_a_second)
{
    rpc_status_t s;
    cr_assert_eq(echo_as(bearer, "connected", NULL, &s), 0, "%s", s.message);
    int port = st.testsvc.port;
    ph_stop(&st.testsvc, SIGKILL, 5000);
    cr_assert(ph_wait_health(st.gateway.addr, "onceiot.test.v1.TestService", 2, 5000),
              "the gateway saw it go");
    /* Calls keep coming while it is away for a few seconds, long enough
     * for the channels' connect backoff to grow past a second. */
    for (int64_t t = now_ms(); now_ms() - t < 3000;) {
        (void)echo_as(bearer, "down", NULL, &s);
        usleep(100000);
    }
    ph_start_testsvc_at(
        &st.testsvc, port, false,
        (const char *const[]){arena_printf(arena, "ONCEIOT_PRINCIPAL_KEY=%s", st.principal_key),
                              NULL});
    /* From the moment the service itself says SERVING. */
    int64_t t0 = now_ms(), took = -1;
    while (now_ms() - t0 < 10000) {
        Onceiot__Test__V1__EchoRequest req = ONCEIOT__TEST__V1__ECHO_REQUEST__INIT;
        req.text = "back";
        rpc_call_opts_t o = opts_with(bearer, NULL, 0, 200);
        ProtobufCMessage *resp = NULL;
        if (rpc_unary(gw, ECHO, &req.base, &onceiot__test__v1__echo_reply__descriptor, arena, &o,
                      &resp, &s) == 0) {
            took = now_ms() - t0;
            break;
        }
        usleep(10000);
    }
    cr_log_info("routed again %lld ms after the restarted service was SERVING", (long long)took);
    cr_assert(took >= 0, "never routed again: %s: %s", err_grpc_name(s.code), s.message);
    cr_assert_lt(took, 1000, "routed again after %lld ms", (long long)took);
}

Test(gateway, upstream_killed_mid_stream_gives_unavailable)
{
    rpc_call_opts_t o = opts_with(bearer, NULL, 0, 0);
    rpc_stream_t *s = NULL;
    cr_assert_eq(rpc_stream_open(gw, COUNT, arena, &o, &s), 0);
    Onceiot__Test__V1__CountRequest creq = ONCEIOT__TEST__V1__COUNT_REQUEST__INIT;
    creq.count = 1000;
    creq.interval_millis = 20;
    cr_assert_eq(rpc_stream_send(s, &creq.base), 0);
    cr_assert_eq(rpc_stream_close_send(s), 0);
    ProtobufCMessage *m;
    cr_assert_eq(rpc_stream_recv(s, &onceiot__test__v1__count_reply__descriptor, &m), 1);
    ph_stop(&st.testsvc, SIGKILL, 5000);
    int rc;
    while ((rc = rpc_stream_recv(s, &onceiot__test__v1__count_reply__descriptor, &m)) > 0) {
    }
    rpc_status_t stt;
    cr_assert_eq(rpc_stream_finish(s, &stt), ERR_UNAVAILABLE, "%s: %s", err_grpc_name(stt.code),
                 stt.message);
    cr_assert_eq(health_of(""), 1);
}

/* One thread's share of concurrent Echo calls through the gateway. */
typedef struct echo_loop {
    int calls;
    int failed;
    char first[256]; /* the first failure */
} echo_loop_t;

static void *echo_loop_main(void *arg)
{
    echo_loop_t *l = arg;
    arena_t *a = arena_new();
    rpc_md_t md = {"authorization", bearer, 0};
    for (int i = 0; i < l->calls; i++) {
        Onceiot__Test__V1__EchoRequest req = ONCEIOT__TEST__V1__ECHO_REQUEST__INIT;
        req.text = "aged";
        rpc_call_opts_t o = {.timeout_ms = 10000, .metadata = &md, .n_metadata = 1};
        ProtobufCMessage *resp = NULL;
        rpc_status_t s;
        if (rpc_unary(gw, ECHO, &req.base, &onceiot__test__v1__echo_reply__descriptor, a, &o, &resp,
                      &s) != 0 &&
            l->failed++ == 0)
            snprintf(l->first, sizeof(l->first), "%s: %s", err_grpc_name(s.code), s.message);
        if (i % 64 == 63) {
            arena_free(a);
            a = arena_new();
        }
    }
    arena_free(a);
    return NULL;
}

/* A server ages its connections out with a GOAWAY (the runtime's
 * ONCEIOT_MAX_CONNECTION_AGE_MS). A call the gateway starts on such a
 * connection as the GOAWAY arrives never reached the server and is sent
 * again on a new connection, whatever the method: none of many concurrent
 * calls fails while the test service (no method of which is retried: it has
 * no standard reads) ages its connections every 20 ms. */
Test(gateway, calls_racing_a_connection_age_goaway_are_sent_again, .timeout = 120)
{
    teardown();
    start_with(NULL, (const char *const[]){"ONCEIOT_RATE_LIMIT_RPS=1000000",
                                           "ONCEIOT_RATE_LIMIT_BURST=1000000", NULL});
    int port = st.testsvc.port;
    ph_stop(&st.testsvc, SIGTERM, 10000);
    ph_start_testsvc_at(
        &st.testsvc, port, false,
        (const char *const[]){arena_printf(arena, "ONCEIOT_PRINCIPAL_KEY=%s", st.principal_key),
                              "ONCEIOT_MAX_CONNECTION_AGE_MS=20", NULL});
    rpc_status_t s;
    int64_t until = now_ms() + 10000;
    while (echo_as(bearer, "back", NULL, &s) != 0 && now_ms() < until)
        usleep(20000);
    enum { THREADS = 16, CALLS = 300 };
    echo_loop_t loops[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        loops[i] = (echo_loop_t){.calls = CALLS};
        cr_assert_eq(pthread_create(&th[i], NULL, echo_loop_main, &loops[i]), 0);
    }
    int failed = 0;
    const char *first = NULL;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        failed += loops[i].failed;
        if (loops[i].failed && !first)
            first = loops[i].first;
    }
    cr_assert_eq(failed, 0, "%d of %d calls failed, first: %s", failed, THREADS * CALLS, first);
}

/* ---- authentication and authorization ---- */

Test(gateway, public_methods_need_no_credentials_and_others_do)
{
    rpc_status_t s;
    cr_assert_eq(echo_as(NULL, "x", NULL, &s), ERR_UNAUTHENTICATED);
    cr_assert_eq(echo_as("Basic abc", "x", NULL, &s), ERR_UNAUTHENTICATED);
    cr_assert_eq(
        echo_as("Bearer sk_live_notakeyatall000000000000000000000000000000", "x", NULL, &s),
        ERR_UNAUTHENTICATED);
    cr_assert_eq(echo_as("Bearer v4.public.garbage", "x", NULL, &s), ERR_UNAUTHENTICATED);
    cr_assert(ph_log_contains(&st.gateway, "\"status\":\"UNAUTHENTICATED\""));
    cr_assert(ph_log_contains(&st.gateway, "\"refused\":true,\"credential\":\"none\""),
              "a refused attempt without credentials is logged as one");
    cr_assert_eq(health_of(""), 1, "health needs no credentials");
    const char *token = login("admin");
    Onceiot__Test__V1__EchoReply *r;
    cr_assert_eq(echo_as(token, "with a token", &r, &s), 0, "%s", s.message);
    cr_assert_str_eq(r->text, "with a token");
}

Test(gateway, roles_and_scopes_are_enforced)
{
    int64_t ro = create_user("reader1", ONCEIOT__COMMON__V1__ROLE__ROLE_READONLY, 0);
    int64_t us = create_user("user1", ONCEIOT__COMMON__V1__ROLE__ROLE_USER, 0);
    const char *all[] = {"test:read", "test:write"};
    (void)ro;
    /* A readonly user's key cannot carry a write scope; its login token
     * holds every scope, so the role is what refuses the write. */
    const char *ro_key = login("reader1");
    const char *us_key_read = create_key(us, all, 1, NULL);
    const char *us_key_all = create_key(us, all, 2, NULL);
    rpc_status_t s;
    cr_assert_eq(echo_as(ro_key, "x", NULL, &s), 0, "%s", s.message);
    cr_assert_eq(insert_as(ro_key, &s), ERR_PERMISSION_DENIED, "readonly caller on a write");
    cr_assert_eq(insert_as(us_key_read, &s), ERR_PERMISSION_DENIED, "key lacks test:write");
    cr_assert_eq(insert_as(us_key_all, &s), 0, "%s", s.message);
    const char *users_only[] = {"users:read"};
    const char *no_test = create_key(us, users_only, 1, NULL);
    cr_assert_eq(echo_as(no_test, "x", NULL, &s), ERR_PERMISSION_DENIED);
    /* Each refusal is a warning that says who tried, with what. */
    cr_assert(ph_log_contains(&st.gateway,
                              "\"level\":\"warn\",\"service\":\"gateway\",\"event\":\"call\""),
              "refusals are warnings");
    cr_assert(ph_log_contains(&st.gateway, "\"status\":\"PERMISSION_DENIED\""));
    cr_assert(ph_log_contains(&st.gateway, arena_printf(arena, "\"user_id\":%lld", (long long)us)));
    cr_assert(ph_log_contains(&st.gateway, "\"refused\":true,\"credential\":\"api_key:"),
              "with the credential");
    cr_assert(ph_log_contains(&st.gateway, "\"refused\":true,\"credential\":\"token\""));
}

Test(gateway, admin_of_another_organization_gets_not_found)
{
    create_user("otheradmin", ONCEIOT__COMMON__V1__ROLE__ROLE_ADMIN, 2);
    const char *token = login("otheradmin");
    rpc_status_t s;
    cr_assert_eq(get_user(token, 1, NULL, 0, &s), ERR_NOT_FOUND, "%s: %s", err_grpc_name(s.code),
                 s.message);
    cr_assert_eq(get_user(bearer, 1, NULL, 0, &s), 0, "%s", s.message);
}

Test(gateway, revoked_key_is_refused_after_the_cache_expires)
{
    teardown();
    start_with(NULL, (const char *const[]){"ONCEIOT_AUTH_CACHE_S=1", NULL});
    int64_t us = create_user("user2", ONCEIOT__COMMON__V1__ROLE__ROLE_USER, 0);
    const char *scopes[] = {"test:read"};
    int64_t key_id;
    const char *key = create_key(us, scopes, 1, &key_id);
    rpc_status_t s;
    cr_assert_eq(echo_as(key, "x", NULL, &s), 0, "%s", s.message);
    Onceiot__Identity__V1__RevokeApiKeyRequest req =
        ONCEIOT__IDENTITY__V1__REVOKE_API_KEY_REQUEST__INIT;
    req.id = key_id;
    rpc_call_opts_t o = opts_with(bearer, NULL, 0, 0);
    ProtobufCMessage *resp = NULL;
    cr_assert_eq(rpc_unary(gw, IDENTITY "RevokeApiKey", &req.base,
                           &onceiot__identity__v1__api_key__descriptor, arena, &o, &resp, &s),
                 0, "%s", s.message);
    int64_t t0 = now_ms();
    int rc;
    while ((rc = echo_as(key, "x", NULL, &s)) == 0 && now_ms() - t0 < 10000)
        usleep(100000);
    cr_assert_eq(rc, ERR_UNAUTHENTICATED, "%s", s.message);
    cr_assert_lt(now_ms() - t0, 8000, "revocation took %lld ms", (long long)(now_ms() - t0));
}

Test(gateway, expired_token_is_unauthenticated)
{
    /* A token signed with identity's own key, whose lifetime is over. */
    uint8_t seed[32], pk[32], sk[64];
    size_t len;
    cr_assert(sodium_hex2bin(seed, 32, st.signing_seed, 64, NULL, &len, NULL) == 0);
    crypto_sign_seed_keypair(pk, sk, seed);
    token_claims_t c;
    memset(&c, 0, sizeof(c));
    c.user_id = 1;
    snprintf(c.username, sizeof(c.username), "admin");
    c.organization_id = 1;
    c.role = ONCEIOT__COMMON__V1__ROLE__ROLE_ADMIN;
    c.is_superuser = true;
    c.issued_at_ms = ((int64_t)time(NULL) - 120) * 1000;
    c.expires_at = (int64_t)time(NULL) - 60;
    const char *expired = arena_printf(arena, "Bearer %s", token_sign(sk, &c, arena));
    rpc_status_t s;
    cr_assert_eq(echo_as(expired, "x", NULL, &s), ERR_UNAUTHENTICATED, "%s", s.message);
    c.expires_at = (int64_t)time(NULL) + 600;
    const char *valid = arena_printf(arena, "Bearer %s", token_sign(sk, &c, arena));
    cr_assert_eq(echo_as(valid, "x", NULL, &s), 0, "the same token unexpired passes: %s",
                 s.message);
}

Test(gateway, principals_are_the_gateways_own)
{
    /* A principal forged without the key, sent straight to identity. */
    principal_key_t wrong;
    randombytes_buf(wrong.bytes, sizeof(wrong.bytes));
    principal_t p = ONCEIOT__COMMON__V1__PRINCIPAL__INIT;
    p.user_id = 1;
    p.organization_id = 1;
    p.role = ONCEIOT__COMMON__V1__ROLE__ROLE_ADMIN;
    p.is_superuser = true;
    rpc_md_t md[2];
    principal_sign(&wrong, &p, IDENTITY "GetUser", arena, md);
    rpc_channel_t *direct;
    cr_assert_eq(rpc_channel_new(st.identity.addr, 0, &direct), 0);
    Onceiot__Identity__V1__GetUserRequest req = ONCEIOT__IDENTITY__V1__GET_USER_REQUEST__INIT;
    req.id = 1;
    rpc_call_opts_t o = {.timeout_ms = 5000, .metadata = md, .n_metadata = 2};
    ProtobufCMessage *resp = NULL;
    rpc_status_t s;
    int rc = rpc_unary(direct, IDENTITY "GetUser", &req.base,
                       &onceiot__identity__v1__user__descriptor, arena, &o, &resp, &s);
    rpc_channel_free(direct);
    cr_assert_eq(rc, ERR_UNAUTHENTICATED, "%s", s.message);

    /* The same forged principal, correctly signed even, is stripped by the
     * gateway: identity sees the readonly caller, not a superuser. */
    int64_t ro = create_user("reader2", ONCEIOT__COMMON__V1__ROLE__ROLE_READONLY, 0);
    const char *scopes[] = {"users:read"};
    const char *ro_key = create_key(ro, scopes, 1, NULL);
    principal_key_t right;
    ph_issuer_key(st.principal_key, "gateway", &right);
    principal_sign(&right, &p, IDENTITY "GetUser", arena, md);
    cr_assert_eq(get_user(ro_key, 1, md, 2, &s), ERR_NOT_FOUND, "%s: %s", err_grpc_name(s.code),
                 s.message);
    cr_assert_eq(get_user(ro_key, ro, md, 2, &s), 0, "%s", s.message);
}

Test(gateway, rate_limit_gives_resource_exhausted_with_retry_info)
{
    teardown();
    start_with(NULL, (const char *const[]){"ONCEIOT_RATE_LIMIT_RPS=1", "ONCEIOT_RATE_LIMIT_BURST=3",
                                           NULL});
    rpc_status_t s;
    int rc = 0, ok = 0;
    for (int i = 0; i < 10 && (rc = echo_as(bearer, "x", NULL, &s)) == 0; i++)
        ok++;
    cr_assert_eq(rc, ERR_RESOURCE_EXHAUSTED, "%s", s.message);
    cr_assert_leq(ok, 3);
    cr_assert(strstr(s.message, "retry in"), "%s", s.message);
    Google__Rpc__Status *status =
        google__rpc__status__unpack(arena_allocator(arena), s.details.len, s.details.data);
    cr_assert_not_null(status);
    cr_assert_eq(status->n_details, 1);
    cr_assert_str_eq(status->details[0]->type_url, "type.googleapis.com/google.rpc.RetryInfo");
    Google__Rpc__RetryInfo *ri = google__rpc__retry_info__unpack(
        arena_allocator(arena), status->details[0]->value.len, status->details[0]->value.data);
    cr_assert_not_null(ri);
    cr_assert_not_null(ri->retry_delay);
    int64_t ms = ri->retry_delay->seconds * 1000 + ri->retry_delay->nanos / 1000000;
    cr_assert(ms > 0 && ms <= 1001, "retry in %lld ms", (long long)ms);
    usleep((useconds_t)(ms + 50) * 1000);
    cr_assert_eq(echo_as(bearer, "x", NULL, &s), 0, "after the hint the call passes: %s",
                 s.message);
}
