/* The shared runtime end to end: a real onceiot-testsvc process against the
 * real test PostgreSQL, called through the runtime's own client. */
#include "onceiot/client.h"
#include "proc_harness.h"
#include "test/v1/test.pb-c.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static ph_proc_t svc;
static rpc_channel_t *ch;
static arena_t *arena;

static void setup(void)
{
    ph_start_testsvc(&svc, (const char *const[]){"ONCEIOT_MAX_MESSAGE_BYTES=65536",
                                                 "ONCEIOT_GRACE_MS=3000", NULL});
    cr_assert(rpc_channel_new(svc.addr, 1 << 20, &ch) == 0);
    arena = arena_new();
}

static void teardown(void)
{
    rpc_channel_free(ch);
    arena_free(arena);
    if (svc.pid) {
        int code = ph_stop(&svc, SIGTERM, 20000);
        cr_expect_eq(code, 0, "testsvc exited with %d (log %s)", code, svc.log);
    }
    cr_expect(!ph_log_has_sanitizer_report(&svc), "sanitizer report in %s", svc.log);
}

TestSuite(runtime, .init = setup, .fini = teardown, .timeout = 120);

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int echo(const Onceiot__Test__V1__EchoRequest *req, const rpc_call_opts_t *opts,
                Onceiot__Test__V1__EchoReply **out, rpc_status_t *st)
{
    ProtobufCMessage *resp = NULL;
    int rc = rpc_unary(ch, "/onceiot.test.v1.TestService/Echo", &req->base,
                       &onceiot__test__v1__echo_reply__descriptor, arena, opts, &resp, st);
    *out = (Onceiot__Test__V1__EchoReply *)resp;
    return rc;
}

static int sleep_call(int millis, bool in_db, int64_t timeout_ms, rpc_status_t *st)
{
    Onceiot__Test__V1__SleepRequest req = ONCEIOT__TEST__V1__SLEEP_REQUEST__INIT;
    req.millis = millis;
    req.in_database = in_db;
    rpc_call_opts_t opts = {.timeout_ms = timeout_ms};
    ProtobufCMessage *resp = NULL;
    return rpc_unary(ch, "/onceiot.test.v1.TestService/Sleep", &req.base,
                     &onceiot__test__v1__sleep_reply__descriptor, arena, &opts, &resp, st);
}

Test(runtime, unary_echo_returns_the_text_and_a_request_id)
{
    Onceiot__Test__V1__EchoRequest req = ONCEIOT__TEST__V1__ECHO_REQUEST__INIT;
    req.text = "hello";
    Onceiot__Test__V1__EchoReply *out;
    rpc_status_t st;
    cr_assert_eq(echo(&req, NULL, &out, &st), 0, "%s", st.message);
    cr_assert_str_eq(out->text, "hello");
    cr_assert_eq(strlen(out->request_id), 32, "a request id is made up when none is sent");

    rpc_md_t md[] = {{"x-request-id", "trace-42", 0}};
    rpc_call_opts_t opts = {.metadata = md, .n_metadata = 1};
    cr_assert_eq(echo(&req, &opts, &out, &st), 0);
    cr_assert_str_eq(out->request_id, "trace-42", "a plain client request id is kept");
}

Test(runtime, handler_failure_maps_to_its_status_and_message)
{
    Onceiot__Test__V1__EchoRequest req = ONCEIOT__TEST__V1__ECHO_REQUEST__INIT;
    req.fail_code = GRPC_STATUS_NOT_FOUND;
    req.fail_message = "no SIM 8988";
    Onceiot__Test__V1__EchoReply *out;
    rpc_status_t st;
    cr_assert_eq(echo(&req, NULL, &out, &st), ERR_NOT_FOUND);
    cr_assert_eq(st.code, GRPC_STATUS_NOT_FOUND);
    cr_assert_str_eq(st.message, "no SIM 8988");
    cr_assert_eq(st.details.len, 0);
}

Test(runtime, field_violations_travel_as_bad_request_details)
{
    Onceiot__Test__V1__EchoRequest req = ONCEIOT__TEST__V1__ECHO_REQUEST__INIT;
    char *v[] = {"iccid: must be 19 or 20 digits", "page_size: must be at most 1000"};
    req.violations = v;
    req.n_violations = 2;
    Onceiot__Test__V1__EchoReply *out;
    rpc_status_t st;
    cr_assert_eq(echo(&req, NULL, &out, &st), ERR_INVALID_ARGUMENT);
    cr_assert_eq(st.code, GRPC_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(st.message, "iccid: must be 19 or 20 digits"), "%s", st.message);
    const char **fields, **descs;
    size_t n = rpc_status_violations(&st, arena, &fields, &descs);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(fields[0], "iccid");
    cr_assert_str_eq(descs[0], "must be 19 or 20 digits");
    cr_assert_str_eq(fields[1], "page_size");
}

Test(runtime, server_streaming_sends_every_reply_then_ok)
{
    Onceiot__Test__V1__CountRequest req = ONCEIOT__TEST__V1__COUNT_REQUEST__INIT;
    req.count = 25;
    rpc_stream_t *s;
    cr_assert_eq(rpc_stream_open(ch, "/onceiot.test.v1.TestService/Count", arena, NULL, &s), 0);
    cr_assert_eq(rpc_stream_send(s, &req.base), 0);
    cr_assert_eq(rpc_stream_close_send(s), 0);
    int n = 0;
    ProtobufCMessage *m;
    while (rpc_stream_recv(s, &onceiot__test__v1__count_reply__descriptor, &m) == 1)
        cr_assert_eq(((Onceiot__Test__V1__CountReply *)m)->n, ++n);
    rpc_status_t st;
    cr_assert_eq(rpc_stream_finish(s, &st), 0, "%s", st.message);
    cr_assert_eq(n, 25);
}

Test(runtime, client_streaming_receives_every_message)
{
    rpc_stream_t *s;
    cr_assert_eq(rpc_stream_open(ch, "/onceiot.test.v1.TestService/Sum", arena, NULL, &s), 0);
    for (int i = 1; i <= 100; i++) {
        Onceiot__Test__V1__SumRequest req = ONCEIOT__TEST__V1__SUM_REQUEST__INIT;
        req.value = i;
        cr_assert_eq(rpc_stream_send(s, &req.base), 0);
    }
    cr_assert_eq(rpc_stream_close_send(s), 0);
    ProtobufCMessage *m;
    cr_assert_eq(rpc_stream_recv(s, &onceiot__test__v1__sum_reply__descriptor, &m), 1);
    Onceiot__Test__V1__SumReply *r = (Onceiot__Test__V1__SumReply *)m;
    rpc_status_t st;
    cr_assert_eq(rpc_stream_finish(s, &st), 0);
    cr_assert_eq(r->total, 5050);
    cr_assert_eq(r->messages, 100);
}

Test(runtime, deadline_interrupts_a_slow_handler)
{
    rpc_status_t st;
    int64_t t0 = now_ms();
    cr_assert_eq(sleep_call(5000, false, 200, &st), ERR_DEADLINE_EXCEEDED);
    cr_assert_eq(st.code, GRPC_STATUS_DEADLINE_EXCEEDED);
    cr_assert_lt(now_ms() - t0, 3000);
}

Test(runtime, deadline_bounds_the_sql_statement)
{
    rpc_status_t st;
    int64_t t0 = now_ms();
    cr_assert_eq(sleep_call(5000, true, 300, &st), ERR_DEADLINE_EXCEEDED);
    cr_assert_lt(now_ms() - t0, 3000);
    /* The connection went back to the pool in a usable state: a full pool's
     * worth of calls still run. */
    for (int i = 0; i < 10; i++)
        cr_assert_eq(sleep_call(1, true, 5000, &st), 0, "%s", st.message);
}

Test(runtime, database_errors_map_to_canonical_codes)
{
    Onceiot__Test__V1__InsertRequest req = ONCEIOT__TEST__V1__INSERT_REQUEST__INIT;
    req.name = "alpha";
    req.amount = 5;
    ProtobufCMessage *resp;
    rpc_status_t st;
    const char *m = "/onceiot.test.v1.TestService/Insert";
    const ProtobufCMessageDescriptor *d = &onceiot__test__v1__insert_reply__descriptor;
    cr_assert_eq(rpc_unary(ch, m, &req.base, d, arena, NULL, &resp, &st), 0, "%s", st.message);
    cr_assert_eq(rpc_unary(ch, m, &req.base, d, arena, NULL, &resp, &st), ERR_ALREADY_EXISTS);
    cr_assert_eq(st.code, GRPC_STATUS_ALREADY_EXISTS);
    req.name = "beta";
    req.amount = -1;
    cr_assert_eq(rpc_unary(ch, m, &req.base, d, arena, NULL, &resp, &st), ERR_INVALID_ARGUMENT);
}

Test(runtime, unknown_method_is_unimplemented)
{
    ProtobufCBinaryData out;
    rpc_status_t st;
    cr_assert_eq(rpc_unary_raw(ch, "/onceiot.test.v1.TestService/Nope", (const uint8_t *)"", 0,
                               arena, NULL, &out, &st),
                 ERR_UNIMPLEMENTED);
    cr_assert_eq(st.code, GRPC_STATUS_UNIMPLEMENTED);
}

Test(runtime, oversized_message_is_refused_and_the_server_stays_up)
{
    size_t n = 100 * 1024;
    char *big = arena_alloc(arena, n + 1);
    memset(big, 'x', n);
    big[n] = '\0';
    Onceiot__Test__V1__EchoRequest req = ONCEIOT__TEST__V1__ECHO_REQUEST__INIT;
    req.text = big;
    Onceiot__Test__V1__EchoReply *out;
    rpc_status_t st;
    cr_assert_eq(echo(&req, NULL, &out, &st), ERR_RESOURCE_EXHAUSTED, "got %s: %s",
                 err_grpc_name(st.code), st.message);
    req.text = "still here";
    cr_assert_eq(echo(&req, NULL, &out, &st), 0);
}

/* Garbage bodies: each must get INVALID_ARGUMENT or INTERNAL, never a crash.
 * Parameters are copied into the test's process, so they hold bytes, not
 * pointers. */
typedef struct garbage {
    char bytes[16];
    size_t len;
} garbage_t;

ParameterizedTestParameters(runtime, garbage_bytes_never_crash)
{
    static garbage_t cases[] = {
        {"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 11},     /* an endless varint */
        {"\x0a\xff\xff\xff\xff\x0f", 6},                          /* a length past the end */
        {"\x0b\x0c\x0d", 3},                                      /* group tags */
        {"\x0a\x05hi", 4},                                        /* a truncated string */
        {"\x0f", 1},                                              /* wire type 7 */
        {"\x10\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", 12}, /* an 11-byte varint */
        {"\x00\x00\x00", 3},                                      /* field number 0 */
    };
    return cr_make_param_array(garbage_t, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(garbage_t *g, runtime, garbage_bytes_never_crash)
{
    ProtobufCBinaryData out;
    rpc_status_t st;
    int rc = rpc_unary_raw(ch, "/onceiot.test.v1.TestService/Echo", (const uint8_t *)g->bytes,
                           g->len, arena, NULL, &out, &st);
    cr_assert(st.code == GRPC_STATUS_INVALID_ARGUMENT || st.code == GRPC_STATUS_INTERNAL,
              "got %s (%d): %s", err_grpc_name(st.code), rc, st.message);
    cr_assert_eq(ph_health(svc.addr, ""), 1, "the server still serves");
}

Test(runtime, client_cancel_is_noticed_by_the_server)
{
    Onceiot__Test__V1__CountRequest req = ONCEIOT__TEST__V1__COUNT_REQUEST__INIT;
    req.count = 1000;
    req.interval_millis = 20;
    rpc_stream_t *s;
    cr_assert_eq(rpc_stream_open(ch, "/onceiot.test.v1.TestService/Count", arena, NULL, &s), 0);
    cr_assert_eq(rpc_stream_send(s, &req.base), 0);
    ProtobufCMessage *m;
    cr_assert_eq(rpc_stream_recv(s, &onceiot__test__v1__count_reply__descriptor, &m), 1);
    rpc_stream_cancel(s);
    rpc_status_t st;
    cr_assert_eq(rpc_stream_finish(s, &st), ERR_CANCELLED);
    /* The server logs the call as cancelled once its handler stops. */
    bool seen = false;
    for (int i = 0; i < 100 && !seen; i++) {
        seen = ph_log_contains(&svc, "\"method\":\"/onceiot.test.v1.TestService/Count\"") &&
               ph_log_contains(&svc, "\"cancelled\":true");
        usleep(50 * 1000);
    }
    cr_assert(seen, "the server never noticed the cancel (%s)", svc.log);
}

Test(runtime, health_and_reflection_are_always_served)
{
    cr_assert_eq(ph_health(svc.addr, ""), 1);
    cr_assert_eq(ph_health(svc.addr, "onceiot.test.v1.TestService"), 1);
    cr_assert_eq(ph_health(svc.addr, "no.such.Service"), -1, "unknown service is NOT_FOUND");
}

/* A Sleep call on a thread of its own, with its own channel (opened and
 * closed by the test's thread: the worker asserts nothing). */
struct slow_call {
    int millis;
    rpc_channel_t *ch;
    pthread_t thread;
    int rc;
    grpc_status_code code;
};

static void *slow_call_main(void *arg)
{
    struct slow_call *r = arg;
    rpc_channel_t *c2 = r->ch;
    arena_t *a = arena_new();
    Onceiot__Test__V1__SleepRequest req = ONCEIOT__TEST__V1__SLEEP_REQUEST__INIT;
    req.millis = r->millis;
    ProtobufCMessage *resp;
    rpc_status_t st;
    r->rc = rpc_unary(c2, "/onceiot.test.v1.TestService/Sleep", &req.base,
                      &onceiot__test__v1__sleep_reply__descriptor, a, NULL, &resp, &st);
    r->code = st.code;
    arena_free(a);
    return NULL;
}

static void slow_call_start(struct slow_call *r)
{
    cr_assert_eq(rpc_channel_new(svc.addr, 0, &r->ch), 0);
    cr_assert_eq(pthread_create(&r->thread, NULL, slow_call_main, r), 0);
}

static void slow_call_join(struct slow_call *r)
{
    pthread_join(r->thread, NULL);
    rpc_channel_free(r->ch);
    r->ch = NULL;
}

/* Waits (up to 10 s) until the service's log has needle. */
static bool log_shows(const char *needle)
{
    for (int i = 0; i < 1000 && !ph_log_contains(&svc, needle); i++)
        usleep(10 * 1000);
    return ph_log_contains(&svc, needle);
}

Test(runtime, sigterm_drains_a_call_in_flight_then_exits_zero)
{
    struct slow_call r = {.millis = 1500};
    slow_call_start(&r);
    cr_assert(log_shows("\"event\":\"sleep_started\""), "the call is in its handler");
    kill(svc.pid, SIGTERM);
    /* While draining, health says NOT_SERVING or the server is already gone
     * for new connections; it never says SERVING again. */
    cr_assert(log_shows("\"event\":\"drain_started\""));
    cr_assert_neq(ph_health(svc.addr, ""), 1, "health must not say SERVING during a drain");
    slow_call_join(&r);
    cr_assert_eq(r.rc, 0, "the call in flight completes (status %s)", err_grpc_name(r.code));
    cr_assert_eq(r.code, GRPC_STATUS_OK);
    cr_assert_eq(ph_stop(&svc, 0, 10000), 0);
    cr_assert(ph_log_contains(&svc, "\"event\":\"drain_finished\""));
    cr_assert(ph_log_contains(&svc, "\"clean\":true"));
}

Test(runtime, drain_cancels_calls_that_outlive_the_grace)
{
    /* The grace is 3 s; this call would take 20 s. */
    struct slow_call r = {.millis = 20000};
    int64_t t0 = now_ms();
    slow_call_start(&r);
    cr_assert(log_shows("\"event\":\"sleep_started\""), "the call is in its handler");
    kill(svc.pid, SIGTERM);
    slow_call_join(&r);
    cr_assert_eq(r.rc, ERR_UNAVAILABLE, "the call was cut short: %s", err_grpc_name(r.code));
    cr_assert_eq(ph_stop(&svc, 0, 10000), 0, "a drain that cancels still exits 0");
    cr_assert_lt(now_ms() - t0, 10000);
    cr_assert(ph_log_contains(&svc, "\"clean\":false"));
}

/* ---- the log writer thread (log.h), on in servers; the harness turns it
 * off for every other test ---- */

static ph_proc_t wsvc;

/* Lines of wsvc's log that record an Echo call. */
static int echo_lines(void)
{
    FILE *f = fopen(wsvc.log, "r");
    if (!f)
        return -1;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof(line), f))
        n += strstr(line, "\"event\":\"call\"") && strstr(line, "TestService/Echo");
    fclose(f);
    return n;
}

/* Every call's line reaches the file while the server runs (a millisecond
 * or so after the call) and none is lost or written twice at a clean exit. */
Test(log_writer, every_calls_line_is_written_once_while_running_and_at_exit, .timeout = 120)
{
    enum { CALLS = 3000 };
    ph_start_testsvc(
        &wsvc, (const char *const[]){"ONCEIOT_LOG_WRITER=true", "ONCEIOT_LOG_LEVEL=info", NULL});
    rpc_channel_t *c;
    cr_assert(rpc_channel_new(wsvc.addr, 1 << 20, &c) == 0);
    arena_t *a = arena_new();
    Onceiot__Test__V1__EchoRequest req = ONCEIOT__TEST__V1__ECHO_REQUEST__INIT;
    req.text = "logged";
    for (int i = 0; i < CALLS; i++) {
        ProtobufCMessage *resp = NULL;
        rpc_status_t st;
        cr_assert_eq(rpc_unary(c, "/onceiot.test.v1.TestService/Echo", &req.base,
                               &onceiot__test__v1__echo_reply__descriptor, a, NULL, &resp, &st),
                     0, "%s", st.message);
        if (i % 100 == 99) {
            arena_free(a);
            a = arena_new();
        }
    }
    int seen = -1;
    for (int i = 0; i < 500 && (seen = echo_lines()) < CALLS; i++)
        usleep(10 * 1000);
    cr_assert_eq(seen, CALLS, "lines in the log while the server runs");
    /* A last burst, then SIGTERM at once: the ring is written at exit. */
    for (int i = 0; i < 200; i++) {
        ProtobufCMessage *resp = NULL;
        rpc_status_t st;
        cr_assert_eq(rpc_unary(c, "/onceiot.test.v1.TestService/Echo", &req.base,
                               &onceiot__test__v1__echo_reply__descriptor, a, NULL, &resp, &st),
                     0, "%s", st.message);
    }
    rpc_channel_free(c);
    arena_free(a);
    cr_assert_eq(ph_stop(&wsvc, SIGTERM, 20000), 0);
    cr_assert_eq(echo_lines(), CALLS + 200, "every line once after a clean exit");
    cr_assert(ph_log_contains(&wsvc, "\"event\":\"exit\""), "the exit line is the ring's last");
    cr_assert(!ph_log_has_sanitizer_report(&wsvc), "sanitizer report in %s", wsvc.log);
}
