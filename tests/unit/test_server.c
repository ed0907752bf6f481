/* The server in-process: registration checks against the descriptor set,
 * dispatch of every method kind to handlers defined here, default statuses,
 * the bounded worker queue, a busy port, and a clean drain. Calls go through
 * the runtime's own client over 127.0.0.1. */
#include "onceiot/client.h"
#include "onceiot/descset.h"
#include "onceiot/rpc.h"
#include "proc_harness.h"
#include "test/v1/test.pb-c.h"

#include <criterion/criterion.h>
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SVC "/onceiot.test.v1.TestService/"

/* What the handlers saw, and the gate that holds Sleep calls. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int sleeping;     /* Sleep handlers entered so far */
    bool open;        /* Sleep handlers may return */
    bool count_shape; /* Count got a request and no response slot */
    bool sum_shape;   /* Sum got no request and a response slot */
    void *ctx_seen;   /* rpc_call_ctx in the last Echo */
} seen = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, false, false, false, NULL};

static int ctx_marker;

/* Unary: the text in upper case and its length, so the reply is computed. */
static int h_echo(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Test__V1__EchoRequest *r = (const void *)req;
    arena_t *a = rpc_call_arena(call);
    char *up = arena_strdup(a, r->text);
    for (char *p = up; *p; p++)
        *p = (char)toupper((unsigned char)*p);
    Onceiot__Test__V1__EchoReply *out = arena_alloc(a, sizeof(*out));
    onceiot__test__v1__echo_reply__init(out);
    out->text = arena_printf(a, "%s:%zu", up, strlen(r->text));
    out->request_id = (char *)rpc_call_request_id(call);
    seen.ctx_seen = rpc_call_ctx(call);
    *resp = &out->base;
    return 0;
}

/* Unary: blocks until the test opens the gate (or the call goes away). */
static int h_sleep(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Test__V1__SleepRequest *r = (const void *)req;
    pthread_mutex_lock(&seen.mu);
    seen.sleeping++;
    pthread_cond_broadcast(&seen.cv);
    while (!seen.open && !rpc_call_cancelled(call)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&seen.cv, &seen.mu, &ts);
    }
    pthread_mutex_unlock(&seen.mu);
    Onceiot__Test__V1__SleepReply *out = arena_alloc(rpc_call_arena(call), sizeof(*out));
    onceiot__test__v1__sleep_reply__init(out);
    out->slept_millis = r->millis;
    *resp = &out->base;
    return 0;
}

/* Server-streaming: sends 1..count. */
static int h_count(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Test__V1__CountRequest *r = (const void *)req;
    seen.count_shape = req != NULL && resp == NULL;
    for (int i = 1; i <= r->count; i++) {
        Onceiot__Test__V1__CountReply out = ONCEIOT__TEST__V1__COUNT_REPLY__INIT;
        out.n = i;
        int rc = rpc_send(call, &out.base);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Client-streaming: adds up every value. */
static int h_sum(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    seen.sum_shape = req == NULL && resp != NULL;
    int64_t total = 0;
    int32_t n = 0;
    ProtobufCMessage *m;
    int rc;
    while ((rc = rpc_recv(call, &m)) > 0) {
        total += ((const Onceiot__Test__V1__SumRequest *)m)->value;
        n++;
    }
    if (rc < 0)
        return rc;
    Onceiot__Test__V1__SumReply *out = arena_alloc(rpc_call_arena(call), sizeof(*out));
    onceiot__test__v1__sum_reply__init(out);
    out->total = total;
    out->messages = n;
    *resp = &out->base;
    return 0;
}

/* Unary with mistakes on request: "ghost" returns ERR_NOT_FOUND without
 * rpc_fail, "forgetful" returns 0 without a reply. */
static int h_insert(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Test__V1__InsertRequest *r = (const void *)req;
    if (strcmp(r->name, "ghost") == 0)
        return ERR_NOT_FOUND;
    if (strcmp(r->name, "forgetful") == 0)
        return 0;
    Onceiot__Test__V1__InsertReply *out = arena_alloc(rpc_call_arena(call), sizeof(*out));
    onceiot__test__v1__insert_reply__init(out);
    out->id = r->amount * 2;
    *resp = &out->base;
    return 0;
}

static const rpc_method_impl_t full[] = {
    {"Echo", h_echo}, {"Sleep", h_sleep}, {"Count", h_count}, {"Sum", h_sum}, {"Insert", h_insert},
};

static const rpc_service_impl_t full_service = {
    .descriptor = &onceiot__test__v1__test_service__descriptor,
    .methods = full,
    .n_methods = sizeof(full) / sizeof(full[0]),
};

static uint8_t *descset_bytes;
static size_t descset_len;
static rpc_server_t *srv; /* the running server, if any */
static int port;
static char addr[64];
static rpc_channel_t *ch;
static arena_t *arena;

/* Reads the test service's descriptor set, which CMake builds next to it. */
static void setup(void)
{
    char *path = ph_build_path("tests/onceiot-testsvc.descset");
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot read %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    cr_assert_gt(n, 0);
    descset_len = (size_t)n;
    descset_bytes = mem_alloc(descset_len);
    cr_assert_eq(fread(descset_bytes, 1, descset_len, f), descset_len);
    fclose(f);
    mem_free(path);
    arena = arena_new();
}

static void open_gate(void)
{
    pthread_mutex_lock(&seen.mu);
    seen.open = true;
    pthread_cond_broadcast(&seen.cv);
    pthread_mutex_unlock(&seen.mu);
}

static void stop_server(void)
{
    rpc_channel_free(ch);
    ch = NULL;
    if (srv) {
        rpc_server_drain(srv);
        cr_expect_eq(rpc_server_wait(srv), 0, "every call finished within the grace");
        rpc_server_free(srv);
        srv = NULL;
    }
}

static void teardown(void)
{
    /* Never leave a handler blocked: the drain would wait for it. */
    open_gate();
    stop_server();
    arena_free(arena);
    mem_free(descset_bytes);
}

TestSuite(server, .init = setup, .fini = teardown, .timeout = 60);

static rpc_server_opts_t options(const char *listen, int workers, int queue_limit)
{
    rpc_server_opts_t o = {
        .listen = listen,
        .io_threads = 2,
        .workers = workers,
        .queue_limit = queue_limit,
        .max_streams = 8,
        .max_message_bytes = 1 << 20,
        .grace_ms = 5000,
        .descset = descset_bytes,
        .descset_len = descset_len,
    };
    return o;
}

static rpc_server_t *new_server(const char *listen, int workers, int queue_limit)
{
    rpc_server_opts_t o = options(listen, workers, queue_limit);
    rpc_server_t *s = NULL;
    cr_assert_eq(rpc_server_new(&o, &s), 0);
    cr_assert_not_null(s);
    return s;
}

/* Starts the full test service on a free port and opens a channel to it. */
static void start_server(int workers, int queue_limit)
{
    srv = new_server("127.0.0.1:0", workers, queue_limit);
    cr_assert_eq(rpc_server_add_service(srv, &full_service, &ctx_marker), 0);
    cr_assert_eq(rpc_server_start(srv, &port), 0);
    cr_assert_gt(port, 0);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    cr_assert_eq(rpc_channel_new(addr, 0, &ch), 0);
}

/* Registers a table on a fresh server and returns what add_service said. */
static int try_register(const rpc_service_impl_t *svc)
{
    rpc_server_t *s = new_server("127.0.0.1:0", 1, 1);
    int rc = rpc_server_add_service(s, svc, NULL);
    rpc_server_free(s);
    return rc;
}

Test(server, a_table_missing_a_handler_is_refused)
{
    rpc_method_impl_t t[] = {
        {"Echo", h_echo}, {"Sleep", h_sleep}, {"Count", h_count}, {"Insert", h_insert}};
    rpc_service_impl_t svc = {&onceiot__test__v1__test_service__descriptor, t, 4};
    cr_assert_eq(try_register(&svc), ERR_INVALID_ARGUMENT);
}

Test(server, a_handler_naming_no_method_is_refused)
{
    rpc_method_impl_t t[] = {{"Echo", h_echo}, {"Sleep", h_sleep},   {"Count", h_count},
                             {"Sum", h_sum},   {"Insert", h_insert}, {"Delete", h_insert}};
    rpc_service_impl_t svc = {&onceiot__test__v1__test_service__descriptor, t, 6};
    cr_assert_eq(try_register(&svc), ERR_INVALID_ARGUMENT);
}

Test(server, a_service_absent_from_the_descriptor_set_is_refused)
{
    /* The same methods under a name the descriptor set does not know. */
    ProtobufCServiceDescriptor other = onceiot__test__v1__test_service__descriptor;
    other.name = "onceiot.test.v1.OtherService";
    other.short_name = "OtherService";
    rpc_service_impl_t svc = {&other, full, sizeof(full) / sizeof(full[0])};
    cr_assert_eq(try_register(&svc), ERR_INVALID_ARGUMENT);
}

Test(server, a_full_table_is_accepted_and_a_server_never_started_frees_cleanly)
{
    cr_assert_eq(try_register(&full_service), 0);
}

Test(server, streaming_kinds_come_from_the_descriptor_set)
{
    srv = new_server("127.0.0.1:0", 1, 1);
    const descset_t *ds = rpc_server_descset(srv);
    const descset_method_t *count = descset_find_method(ds, SVC "Count");
    const descset_method_t *sum = descset_find_method(ds, SVC "Sum");
    const descset_method_t *echo = descset_find_method(ds, SVC "Echo");
    cr_assert(count && sum && echo);
    cr_assert(count->server_streaming && !count->client_streaming);
    cr_assert(sum->client_streaming && !sum->server_streaming);
    cr_assert(!echo->client_streaming && !echo->server_streaming);
    rpc_server_free(srv);
    srv = NULL;
}

Test(server, unary_handler_returns_a_computed_reply)
{
    start_server(2, 16);
    Onceiot__Test__V1__EchoRequest req = ONCEIOT__TEST__V1__ECHO_REQUEST__INIT;
    req.text = "sim card";
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    rpc_md_t md[] = {{"x-request-id", "req-7", 0}};
    rpc_call_opts_t opts = {.timeout_ms = 5000, .metadata = md, .n_metadata = 1};
    cr_assert_eq(rpc_unary(ch, SVC "Echo", &req.base, &onceiot__test__v1__echo_reply__descriptor,
                           arena, &opts, &resp, &st),
                 0, "%s: %s", err_grpc_name(st.code), st.message);
    const Onceiot__Test__V1__EchoReply *out = (const void *)resp;
    cr_assert_str_eq(out->text, "SIM CARD:8");
    cr_assert_str_eq(out->request_id, "req-7");
    cr_assert_eq(seen.ctx_seen, &ctx_marker, "the handler sees the ctx given at registration");

    Onceiot__Test__V1__InsertRequest ins = ONCEIOT__TEST__V1__INSERT_REQUEST__INIT;
    ins.name = "ok";
    ins.amount = 21;
    cr_assert_eq(rpc_unary(ch, SVC "Insert", &ins.base,
                           &onceiot__test__v1__insert_reply__descriptor, arena, &opts, &resp, &st),
                 0);
    cr_assert_eq(((Onceiot__Test__V1__InsertReply *)resp)->id, 42);
}

Test(server, server_streaming_sends_every_reply)
{
    start_server(2, 16);
    Onceiot__Test__V1__CountRequest req = ONCEIOT__TEST__V1__COUNT_REQUEST__INIT;
    req.count = 7;
    rpc_call_opts_t opts = {.timeout_ms = 5000};
    rpc_stream_t *s;
    cr_assert_eq(rpc_stream_open(ch, SVC "Count", arena, &opts, &s), 0);
    cr_assert_eq(rpc_stream_send(s, &req.base), 0);
    cr_assert_eq(rpc_stream_close_send(s), 0);
    int n = 0;
    ProtobufCMessage *m;
    int rc;
    while ((rc = rpc_stream_recv(s, &onceiot__test__v1__count_reply__descriptor, &m)) == 1)
        cr_assert_eq(((Onceiot__Test__V1__CountReply *)m)->n, ++n);
    cr_assert_eq(rc, 0);
    rpc_status_t st;
    cr_assert_eq(rpc_stream_finish(s, &st), 0, "%s", st.message);
    cr_assert_eq(n, 7);
    cr_assert(seen.count_shape, "Count ran as server-streaming: request, no response slot");
}

Test(server, client_streaming_sums_every_message)
{
    start_server(2, 16);
    rpc_call_opts_t opts = {.timeout_ms = 5000};
    rpc_stream_t *s;
    cr_assert_eq(rpc_stream_open(ch, SVC "Sum", arena, &opts, &s), 0);
    for (int i = 1; i <= 10; i++) {
        Onceiot__Test__V1__SumRequest req = ONCEIOT__TEST__V1__SUM_REQUEST__INIT;
        req.value = i * 1000000000LL;
        cr_assert_eq(rpc_stream_send(s, &req.base), 0);
    }
    cr_assert_eq(rpc_stream_close_send(s), 0);
    ProtobufCMessage *m;
    cr_assert_eq(rpc_stream_recv(s, &onceiot__test__v1__sum_reply__descriptor, &m), 1);
    const Onceiot__Test__V1__SumReply *r = (const void *)m;
    rpc_status_t st;
    cr_assert_eq(rpc_stream_finish(s, &st), 0, "%s", st.message);
    cr_assert_eq(r->total, 55000000000LL);
    cr_assert_eq(r->messages, 10);
    cr_assert(seen.sum_shape, "Sum ran as client-streaming: no request, a response slot");
}

Test(server, an_error_code_without_rpc_fail_gets_the_default_message)
{
    start_server(2, 16);
    Onceiot__Test__V1__InsertRequest req = ONCEIOT__TEST__V1__INSERT_REQUEST__INIT;
    req.name = "ghost";
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    rpc_call_opts_t opts = {.timeout_ms = 5000};
    cr_assert_eq(rpc_unary(ch, SVC "Insert", &req.base,
                           &onceiot__test__v1__insert_reply__descriptor, arena, &opts, &resp, &st),
                 ERR_NOT_FOUND);
    cr_assert_eq(st.code, GRPC_STATUS_NOT_FOUND);
    cr_assert_str_eq(st.message, "not found");
}

Test(server, success_without_a_reply_is_internal)
{
    start_server(2, 16);
    Onceiot__Test__V1__InsertRequest req = ONCEIOT__TEST__V1__INSERT_REQUEST__INIT;
    req.name = "forgetful";
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    rpc_call_opts_t opts = {.timeout_ms = 5000};
    cr_assert_eq(rpc_unary(ch, SVC "Insert", &req.base,
                           &onceiot__test__v1__insert_reply__descriptor, arena, &opts, &resp, &st),
                 ERR_INTERNAL);
    cr_assert_eq(st.code, GRPC_STATUS_INTERNAL);
}

Test(server, unknown_methods_are_unimplemented_and_health_is_served)
{
    start_server(2, 16);
    ProtobufCBinaryData out;
    rpc_status_t st;
    rpc_call_opts_t opts = {.timeout_ms = 5000};
    cr_assert_eq(rpc_unary_raw(ch, SVC "Nope", (const uint8_t *)"", 0, arena, &opts, &out, &st),
                 ERR_UNIMPLEMENTED);
    cr_assert_eq(ph_health(addr, ""), 1);
    cr_assert_eq(ph_health(addr, "onceiot.test.v1.TestService"), 1);
    cr_assert_eq(ph_health(addr, "onceiot.test.v1.OtherService"), -1);
}

Test(server, health_set_before_the_start_is_kept_and_the_rest_starts_serving)
{
    srv = new_server("127.0.0.1:0", 2, 16);
    cr_assert_eq(rpc_server_add_service(srv, &full_service, &ctx_marker), 0);
    /* A server that is ready only later (the gateway) says so first. */
    rpc_server_set_health(srv, "", RPC_HEALTH_NOT_SERVING);
    cr_assert_eq(rpc_server_start(srv, &port), 0);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    cr_assert_eq(ph_health(addr, ""), 2, "kept NOT_SERVING through the start");
    cr_assert_eq(ph_health(addr, "onceiot.test.v1.TestService"), 1, "the others start SERVING");
    cr_assert_eq(ph_health(addr, "grpc.health.v1.Health"), 1);
    rpc_server_set_health(srv, "", RPC_HEALTH_SERVING);
    cr_assert_eq(ph_health(addr, ""), 1);
}

Test(server, a_second_server_on_the_same_port_fails)
{
    start_server(2, 16);
    rpc_server_t *second = new_server(addr, 1, 1);
    cr_assert_eq(rpc_server_add_service(second, &full_service, NULL), 0);
    int p2 = -1;
    cr_assert_eq(rpc_server_start(second, &p2), ERR_UNAVAILABLE, "reuseport must be off");
    rpc_server_free(second);
    cr_assert_eq(ph_health(addr, ""), 1, "the first server still serves");
}

struct bg_call {
    pthread_t thread;
    int rc;
    grpc_status_code code;
};

static void *sleep_call_main(void *arg)
{
    struct bg_call *b = arg;
    arena_t *a = arena_new();
    Onceiot__Test__V1__SleepRequest req = ONCEIOT__TEST__V1__SLEEP_REQUEST__INIT;
    req.millis = 1;
    ProtobufCMessage *resp;
    rpc_status_t st;
    rpc_call_opts_t opts = {.timeout_ms = 20000};
    b->rc = rpc_unary(ch, SVC "Sleep", &req.base, &onceiot__test__v1__sleep_reply__descriptor, a,
                      &opts, &resp, &st);
    b->code = st.code;
    arena_free(a);
    return NULL;
}

static int sleeping_now(void)
{
    pthread_mutex_lock(&seen.mu);
    int n = seen.sleeping;
    pthread_mutex_unlock(&seen.mu);
    return n;
}

static bool wait_sleeping(int want, int timeout_ms)
{
    for (int i = 0; i < timeout_ms / 10; i++) {
        if (sleeping_now() >= want)
            return true;
        usleep(10 * 1000);
    }
    return false;
}

Test(server, a_full_worker_queue_answers_resource_exhausted)
{
    start_server(1, 1);
    struct bg_call first = {0}, second = {0};
    pthread_create(&first.thread, NULL, sleep_call_main, &first);
    cr_assert(wait_sleeping(1, 5000), "the first call reached the only worker");
    pthread_create(&second.thread, NULL, sleep_call_main, &second);
    for (int i = 0; i < 500 && rpc_server_queued(srv) < 1; i++)
        usleep(10 * 1000);
    cr_assert_eq(rpc_server_queued(srv), 1, "the second call waits in the queue");
    cr_assert_eq(sleeping_now(), 1, "the second call is queued, not running");

    Onceiot__Test__V1__SleepRequest req = ONCEIOT__TEST__V1__SLEEP_REQUEST__INIT;
    ProtobufCMessage *resp;
    rpc_status_t st;
    rpc_call_opts_t opts = {.timeout_ms = 3000};
    int rc = rpc_unary(ch, SVC "Sleep", &req.base, &onceiot__test__v1__sleep_reply__descriptor,
                       arena, &opts, &resp, &st);
    cr_assert_eq(rc, ERR_RESOURCE_EXHAUSTED, "got %s: %s", err_grpc_name(st.code), st.message);
    cr_assert_eq(st.code, GRPC_STATUS_RESOURCE_EXHAUSTED);

    /* Streams have threads of their own and still run while the queue is full. */
    Onceiot__Test__V1__CountRequest creq = ONCEIOT__TEST__V1__COUNT_REQUEST__INIT;
    creq.count = 2;
    rpc_stream_t *s;
    cr_assert_eq(rpc_stream_open(ch, SVC "Count", arena, &opts, &s), 0);
    cr_assert_eq(rpc_stream_send(s, &creq.base), 0);
    cr_assert_eq(rpc_stream_close_send(s), 0);
    ProtobufCMessage *m;
    int got = 0;
    while (rpc_stream_recv(s, &onceiot__test__v1__count_reply__descriptor, &m) == 1)
        got++;
    cr_assert_eq(rpc_stream_finish(s, &st), 0, "%s", st.message);
    cr_assert_eq(got, 2);

    open_gate();
    pthread_join(first.thread, NULL);
    pthread_join(second.thread, NULL);
    cr_assert_eq(first.rc, 0, "first: %s", err_grpc_name(first.code));
    cr_assert_eq(second.rc, 0, "second: %s", err_grpc_name(second.code));
    cr_assert_eq(sleeping_now(), 2);
}

Test(server, drain_after_calls_returns_zero_and_frees_everything)
{
    start_server(2, 16);
    for (int i = 0; i < 20; i++) {
        Onceiot__Test__V1__EchoRequest req = ONCEIOT__TEST__V1__ECHO_REQUEST__INIT;
        req.text = "x";
        ProtobufCMessage *resp;
        rpc_status_t st;
        cr_assert_eq(rpc_unary(ch, SVC "Echo", &req.base,
                               &onceiot__test__v1__echo_reply__descriptor, arena, NULL, &resp, &st),
                     0);
    }
    rpc_channel_free(ch);
    ch = NULL;
    rpc_server_drain(srv);
    cr_assert_eq(rpc_server_wait(srv), 0);
    rpc_server_free(srv);
    srv = NULL;
}
