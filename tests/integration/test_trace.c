/* W3C trace context through the gateway, against real identity, test
 * service and gateway processes: the client's traceparent is continued at
 * both hops, a new trace is started when it is absent or invalid (and the
 * invalid one is never logged or echoed), every log line of the call carries
 * the trace id (the access lines of both hops and a handler's own line), and
 * the response header x-trace-id returns it, also when the gateway itself
 * refuses the call. */
#include "gw_client.h"
#include "onceiot/trace.h"
#include "stack_harness.h"
#include "test/v1/test.pb-c.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define ECHO  "/onceiot.test.v1.TestService/Echo"
#define SLEEP "/onceiot.test.v1.TestService/Sleep"
#define TID   "4bf92f3577b34da6a3ce929d0e0e4736"
#define PID   "00f067aa0ba902b7"

static sh_stack_t st;
static gwc_t g;
static char root[256];

static void setup(void)
{
    sh_start(&st, NULL, NULL);
    gwc_open(&g, st.gateway.addr);
    snprintf(root, sizeof(root), "Bearer %s", st.admin_key);
}

static void teardown(void)
{
    gwc_close(&g);
    sh_stop(&st);
}

TestSuite(trace, .init = setup, .fini = teardown, .timeout = 120);

typedef struct reply {
    rpc_status_t st;
    const char *trace_header; /* x-trace-id of the response, or NULL */
    ProtobufCMessage *msg;
} reply_t;

/* A unary call through the gateway as a stream, to see the response
 * headers; traceparent NULL sends none. */
static void call(const char *method, const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *resp_desc, const char *auth,
                 const char *traceparent, reply_t *out)
{
    rpc_md_t md[2];
    size_t n = 0;
    if (auth)
        md[n++] = (rpc_md_t){"authorization", auth, 0};
    if (traceparent)
        md[n++] = (rpc_md_t){"traceparent", traceparent, 0};
    rpc_call_opts_t o = {.timeout_ms = 20000, .metadata = md, .n_metadata = n};
    rpc_stream_t *s = NULL;
    cr_assert_eq(rpc_stream_open(g.ch, method, g.arena, &o, &s), 0);
    /* The gateway may refuse the call before it reads the message: then
     * sending fails and the status says why. */
    int sent = rpc_stream_send(s, req);
    if (sent == 0)
        sent = rpc_stream_close_send(s);
    (void)sent;
    out->msg = NULL;
    if (rpc_stream_recv(s, resp_desc, &out->msg) < 0)
        out->msg = NULL;
    out->trace_header = rpc_stream_header(s, TRACE_RESPONSE_HEADER);
    (void)rpc_stream_finish(s, &out->st);
}

static void echo(const char *auth, const char *traceparent, reply_t *out)
{
    Onceiot__Test__V1__EchoRequest req = ONCEIOT__TEST__V1__ECHO_REQUEST__INIT;
    req.text = "hello";
    call(ECHO, &req.base, &onceiot__test__v1__echo_reply__descriptor, auth, traceparent, out);
}

/* Copies into out (when given) the first line of p's log holding both a and
 * b, waiting up to 10 s for it: access lines are written when a call's last
 * reference goes, which may be just after the client has its answer. */
static bool log_line(const ph_proc_t *p, const char *a, const char *b, char *out, size_t outlen)
{
    for (int tries = 0; tries < 1000; tries++) {
        FILE *f = fopen(p->log, "r");
        char line[4096];
        bool found = false;
        while (f && !found && fgets(line, sizeof(line), f))
            found = strstr(line, a) && strstr(line, b);
        if (f)
            fclose(f);
        if (found) {
            if (out)
                snprintf(out, outlen, "%s", line);
            return true;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL); /* polling a file: there is nothing to wait on */
    }
    return false;
}

/* The value of "key":"..." in a log line, into out. */
static void field(const char *line, const char *key, char *out, size_t outlen)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\":\"", key);
    const char *p = strstr(line, pat);
    cr_assert_not_null(p, "no %s in %s", key, line);
    p += strlen(pat);
    const char *e = strchr(p, '"');
    snprintf(out, outlen, "%.*s", (int)(e - p), p);
}

static bool lower_hex(const char *s, size_t n)
{
    return s && strlen(s) == n && strspn(s, "0123456789abcdef") == n && strspn(s, "0") != n;
}

/* Both access lines of a call carry the trace id; the service's parent
 * span is the gateway's span, not the client's. */
static void check_both_hops(const char *trace_id, const char *client_span)
{
    char needle[96], gw_line[4096], svc_line[4096], gw_span[32], svc_parent[32], svc_span[32];
    snprintf(needle, sizeof(needle), "\"event\":\"call\",\"trace_id\":\"%s\"", trace_id);
    cr_assert(log_line(&st.gateway, needle, ECHO, gw_line, sizeof(gw_line)),
              "the gateway's access line has trace_id %s", trace_id);
    cr_assert(log_line(&st.testsvc, needle, ECHO, svc_line, sizeof(svc_line)),
              "the service's access line has trace_id %s", trace_id);
    field(gw_line, "span_id", gw_span, sizeof(gw_span));
    field(svc_line, "span_id", svc_span, sizeof(svc_span));
    field(svc_line, "parent_span_id", svc_parent, sizeof(svc_parent));
    cr_assert(lower_hex(gw_span, 16) && lower_hex(svc_span, 16));
    cr_assert_str_eq(svc_parent, gw_span, "the gateway sent its own span as the parent");
    cr_assert_str_neq(svc_span, gw_span);
    if (client_span) {
        char gw_parent[32];
        field(gw_line, "parent_span_id", gw_parent, sizeof(gw_parent));
        cr_assert_str_eq(gw_parent, client_span);
        cr_assert_str_neq(gw_span, client_span);
    } else {
        cr_assert_null(strstr(gw_line, "parent_span_id"), "a new trace has no parent: %s", gw_line);
    }
}

Test(trace, a_client_traceparent_is_continued_at_both_hops_and_returned)
{
    reply_t r;
    echo(root, "00-" TID "-" PID "-01", &r);
    cr_assert_eq(r.st.code, GRPC_STATUS_OK, "%s", r.st.message);
    cr_assert_str_eq(r.trace_header, TID, "the response header returns the trace id");
    const Onceiot__Test__V1__EchoReply *e = (const void *)r.msg;
    cr_assert_str_eq(e->trace_id, TID, "the handler sees it (rpc_call_trace_id)");
    check_both_hops(TID, PID);
}

Test(trace, without_a_traceparent_a_new_trace_is_shared_by_both_hops)
{
    reply_t r;
    echo(root, NULL, &r);
    cr_assert_eq(r.st.code, GRPC_STATUS_OK, "%s", r.st.message);
    cr_assert(lower_hex(r.trace_header, 32), "a valid new trace id: %s", r.trace_header);
    const Onceiot__Test__V1__EchoReply *e = (const void *)r.msg;
    cr_assert_str_eq(e->trace_id, r.trace_header, "the service got the gateway's trace");
    check_both_hops(r.trace_header, NULL);
    reply_t again;
    echo(root, NULL, &again);
    cr_assert_str_neq(again.trace_header, r.trace_header, "each call starts its own trace");
}

Test(trace, an_invalid_traceparent_is_replaced_and_never_echoed)
{
    const char *bad[] = {
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-" PID "-01", /* uppercase */
        "00-00000000000000000000000000000000-" PID "-01", /* all-zero trace id */
        "ff-" TID "-" PID "-01",                          /* version ff */
        "00-" TID "-" PID "-01-\"injected\":\"x\"",       /* version 00 with more */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        reply_t r;
        echo(root, bad[i], &r);
        cr_assert_eq(r.st.code, GRPC_STATUS_OK, "%s", r.st.message);
        cr_assert(lower_hex(r.trace_header, 32), "case %zu: %s", i, r.trace_header);
        cr_assert_str_neq(r.trace_header, TID, "case %zu: nothing of the input is kept", i);
        cr_assert(!strstr(bad[i], r.trace_header));
        const Onceiot__Test__V1__EchoReply *e = (const void *)r.msg;
        cr_assert_str_eq(e->trace_id, r.trace_header);
        check_both_hops(r.trace_header, NULL);
    }
    cr_assert_not(ph_log_contains(&st.gateway, "4BF92F3577B34DA6"), "raw input never logged");
    cr_assert_not(ph_log_contains(&st.testsvc, "4BF92F3577B34DA6"));
    cr_assert_not(ph_log_contains(&st.testsvc, "injected"));
}

Test(trace, a_handlers_own_log_line_carries_the_trace_id)
{
    Onceiot__Test__V1__SleepRequest req = ONCEIOT__TEST__V1__SLEEP_REQUEST__INIT;
    req.millis = 1;
    reply_t r;
    call(SLEEP, &req.base, &onceiot__test__v1__sleep_reply__descriptor, root,
         "00-" TID "-" PID "-00", &r);
    cr_assert_eq(r.st.code, GRPC_STATUS_OK, "%s", r.st.message);
    cr_assert(
        log_line(&st.testsvc, "\"event\":\"sleep_started\",\"trace_id\":\"" TID "\"", "", NULL, 0),
        "the line the handler logged during the call has the trace id");
}

Test(trace, a_call_the_gateway_refuses_still_returns_its_trace_id)
{
    reply_t r;
    echo(NULL, "00-" TID "-" PID "-01", &r);
    cr_assert_eq(r.st.code, GRPC_STATUS_UNAUTHENTICATED, "%s", r.st.message);
    cr_assert_str_eq(r.trace_header, TID);
    cr_assert(log_line(&st.gateway, "\"event\":\"call\",\"trace_id\":\"" TID "\"",
                       "UNAUTHENTICATED", NULL, 0));
}
