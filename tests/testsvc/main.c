/* onceiot-testsvc: a service that exists only to exercise the runtime in
 * integration tests and benchmarks (see tests/proto/test/v1/test.proto). */
#include "onceiot/log.h"
#include "onceiot/svc.h"
#include "test/v1/test.pb-c.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static int test_echo(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Test__V1__EchoRequest *r = (const void *)req;
    for (size_t i = 0; i < r->n_violations; i++) {
        const char *colon = strchr(r->violations[i], ':');
        char field[128];
        snprintf(field, sizeof(field), "%.*s", colon ? (int)(colon - r->violations[i]) : 0,
                 r->violations[i]);
        rpc_violation(call, field, "%s", colon ? colon + 1 + (colon[1] == ' ') : r->violations[i]);
    }
    int rc = rpc_check_violations(call);
    if (rc < 0)
        return rc;
    if (r->fail_code)
        return rpc_fail(call, err_from_grpc((grpc_status_code)r->fail_code), "%s", r->fail_message);
    Onceiot__Test__V1__EchoReply *out = arena_alloc(rpc_call_arena(call), sizeof(*out));
    onceiot__test__v1__echo_reply__init(out);
    out->text = r->text;
    out->request_id = (char *)rpc_call_request_id(call);
    out->trace_id = (char *)rpc_call_trace_id(call);
    *resp = &out->base;
    return 0;
}

static const db_stmt_t sleep_stmt = {"test_sleep", "SELECT pg_sleep($1::float8 / 1000.0)", 1};

/* Sleeps in slices so a cancelled or expired call stops early. */
static int test_sleep(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Test__V1__SleepRequest *r = (const void *)req;
    if (r->millis < 0 || r->millis > 600000) {
        rpc_violation(call, "millis", "must be between 0 and 600000");
        return rpc_check_violations(call);
    }
    /* Tests wait for this line to know the call is in its handler. */
    log_msg(LOG_INFO, "sleep_started", "sleeping %d ms (request %s)", r->millis,
            rpc_call_request_id(call));
    if (r->in_database) {
        char ms[16];
        snprintf(ms, sizeof(ms), "%d", r->millis);
        const char *params[] = {ms};
        int rc = svc_exec_or_status(call, &sleep_stmt, params, NULL);
        if (rc < 0)
            return rc;
    } else {
        for (int slept = 0; slept < r->millis; slept += 10) {
            if (rpc_call_cancelled(call))
                return rpc_call_remaining_ms(call) == 0
                           ? rpc_fail(call, ERR_DEADLINE_EXCEEDED,
                                      "deadline exceeded while sleeping")
                           : rpc_fail(call, ERR_CANCELLED, "cancelled while sleeping");
            struct timespec ts = {0, 10 * 1000000};
            nanosleep(&ts, NULL);
        }
    }
    Onceiot__Test__V1__SleepReply *out = arena_alloc(rpc_call_arena(call), sizeof(*out));
    onceiot__test__v1__sleep_reply__init(out);
    out->slept_millis = r->millis;
    *resp = &out->base;
    return 0;
}

static int test_count(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    (void)resp;
    const Onceiot__Test__V1__CountRequest *r = (const void *)req;
    if (r->count < 0 || r->interval_millis < 0) {
        rpc_violation(call, r->count < 0 ? "count" : "interval_millis", "must not be negative");
        return rpc_check_violations(call);
    }
    for (int i = 1; i <= r->count; i++) {
        Onceiot__Test__V1__CountReply out = ONCEIOT__TEST__V1__COUNT_REPLY__INIT;
        out.n = i;
        int rc = rpc_send(call, &out.base);
        if (rc < 0)
            return rc;
        if (r->interval_millis) {
            struct timespec ts = {r->interval_millis / 1000,
                                  (r->interval_millis % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    return 0;
}

static int test_sum(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    (void)req;
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

static const db_stmt_t insert_stmt = {
    "test_insert", "INSERT INTO items (name, amount) VALUES ($1, $2) RETURNING id", 2};

static int test_insert(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Test__V1__InsertRequest *r = (const void *)req;
    char amount[32];
    snprintf(amount, sizeof(amount), "%lld", (long long)r->amount);
    const char *params[] = {r->name, amount};
    PGresult *res = NULL;
    int rc = svc_exec_or_status(call, &insert_stmt, params, &res);
    if (rc < 0)
        return rc;
    Onceiot__Test__V1__InsertReply *out = arena_alloc(rpc_call_arena(call), sizeof(*out));
    onceiot__test__v1__insert_reply__init(out);
    out->id = db_get_int(res, 0, "id", 0);
    PQclear(res);
    *resp = &out->base;
    return 0;
}

static const rpc_method_impl_t test_methods[] = {
    {"Echo", test_echo}, {"Sleep", test_sleep},   {"Count", test_count},
    {"Sum", test_sum},   {"Insert", test_insert},
};

static const rpc_service_impl_t test_service = {
    .descriptor = &onceiot__test__v1__test_service__descriptor,
    .methods = test_methods,
    .n_methods = sizeof(test_methods) / sizeof(test_methods[0]),
};

int main(int argc, char **argv)
{
    static const svc_def_t def = {
        .name = "testsvc",
        .default_listen = "127.0.0.1:0",
        .uses_db = true,
        .services = &test_service,
        .n_services = 1,
    };
    return svc_main(argc, argv, &def);
}
