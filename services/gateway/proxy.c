/* The asynchronous pump: every call to a method the gateway does not serve
 * itself arrives here on an I/O thread, is authenticated, authorized and
 * rate-limited, then relayed to its upstream as raw byte buffers. Nothing
 * here blocks: each step is a batch whose completion (an rpc_tag_t on the
 * server's completion queue) starts the next. The design follows grpc's
 * test/core/end2end/fixtures/proxy.cc.
 *
 * A unary method (by the route) takes three batches: the client's message,
 * then one upstream batch that sends it and receives everything back, then
 * one downstream batch with the reply and status. Each step starts only
 * after the previous one completed, so that path needs no lock. Streaming
 * methods go through the general pump.
 *
 * A gw_call_t holds one reference per batch in flight plus one for its
 * setup; the last reference logs the call and frees it. Pump state is
 * guarded by the call's mutex because completions of one call may run on
 * different I/O threads. */
#include "gateway.h"

#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "onceiot/log.h"
#include "onceiot/mem.h"
#include "onceiot/trace.h"

#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

typedef struct gw_call gw_call_t;

typedef struct gw_op {
    rpc_tag_t tag;
    gw_call_t *c;
} gw_op_t;

struct gw_call {
    gw_t *gw;
    atomic_int refs;
    pthread_mutex_t mu;
    grpc_call *down;           /* the client's call to us */
    grpc_call *up;             /* our call to the upstream, once created */
    grpc_call_details details; /* method of the downstream call */
    grpc_metadata_array md;    /* the client's request metadata */
    arena_t *arena;
    const gw_route_t *route;
    const char *method; /* NUL-terminated copy of details.method */
    const char *upstream;
    char request_id[65];
    trace_ctx_t trace;    /* continued from the client's traceparent, or new */
    char traceparent[56]; /* what the upstream (and identity) are sent */
    int64_t start_ns;
    int64_t up_start_ns; /* when the upstream call started; 0: it did not */
    int64_t user_id;
    int64_t organization_id;
    const char *credential;     /* "api_key:<id>", "token", "anonymous" (in the arena) */
    char *peer;                 /* grpc_call_get_peer of the client's call (gpr_free) */
    const char *client_address; /* the IP of peer (in the arena) */
    int64_t token_issued_ms;    /* the login token's iat, for the stream guard */
    gw_stream_t stream;         /* registered while a stream is relayed */
    gw_op_t t_unary_recv, t_unary_up, t_unary_down;
    gw_op_t t_close, t_up_start, t_up_init, t_down_init, t_down_recv, t_up_send, t_up_recv,
        t_down_send, t_up_status, t_down_status;

    int cancelled;    /* RECV_CLOSE_ON_SERVER: client cancel, deadline, disconnect */
    bool down_closed; /* the downstream call has ended */
    grpc_metadata *up_md;
    size_t n_up_md;
    size_t first_own_md;            /* up_md[first_own_md..] hold our own copied values */
    uint32_t up_md_flags;           /* wait-for-ready or not (gw_upstreams_call_flags) */
    grpc_metadata_array up_init_md; /* upstream's initial metadata, relayed (gw__down_md) */
    grpc_metadata *down_md;         /* what the client gets: up_init_md with our x-trace-id */
    size_t n_down_md;
    grpc_slice trace_value; /* our x-trace-id value (copied; core may keep it) */
    grpc_metadata_array up_trailers;
    grpc_status_code up_status;
    grpc_slice up_details;
    grpc_byte_buffer *c2u; /* client -> upstream message in flight */
    grpc_byte_buffer *u2c; /* upstream -> client message in flight */
    bool half_closed;      /* SEND_CLOSE_FROM_CLIENT started upstream */
    bool init_sent;        /* downstream SEND_INITIAL_METADATA started */
    bool up_msgs_done;     /* no more upstream messages will be read */
    bool down_send_busy;   /* downstream SEND_MESSAGE in flight */
    bool have_status;      /* upstream status received */
    bool status_started;   /* downstream SEND_STATUS_FROM_SERVER started */

    grpc_status_code code; /* final status, for the log */
    const char *message;   /* final message (in the arena), for the log */
    grpc_slice own_details;
    grpc_metadata own_trailer; /* grpc-status-details-bin of our own errors */
    bool has_own_trailer;
};

static int64_t gw__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void gw__log(gw_call_t *c)
{
    bool bad = c->code == GRPC_STATUS_INTERNAL || c->code == GRPC_STATUS_UNKNOWN ||
               c->code == GRPC_STATUS_DATA_LOSS;
    /* A refused attempt (here or upstream) is a warning with who tried. */
    bool refused =
        c->code == GRPC_STATUS_UNAUTHENTICATED || c->code == GRPC_STATUS_PERMISSION_DENIED;
    log_rec_t r;
    const char *prev = log_set_trace_id(c->trace.trace_id);
    log_begin(&r, bad ? LOG_ERROR : refused ? LOG_WARN : LOG_INFO, "call");
    log_set_trace_id(prev);
    if (!r.on)
        return;
    log_str(&r, "method", c->method);
    log_str(&r, "status", err_grpc_name(c->code));
    log_int(&r, "code", c->code);
    log_double(&r, "duration_ms", (double)(gw__now_ns() - c->start_ns) / 1e6);
    log_str(&r, "peer", c->peer);
    log_str(&r, "request_id", c->request_id);
    log_str(&r, "span_id", c->trace.span_id);
    if (c->trace.parent_span_id[0])
        log_str(&r, "parent_span_id", c->trace.parent_span_id);
    if (c->user_id)
        log_int(&r, "user_id", c->user_id);
    if (refused) {
        log_bool(&r, "refused", true);
        log_str(&r, "credential", c->credential ? c->credential : "none");
        if (c->organization_id)
            log_int(&r, "organization_id", c->organization_id);
    }
    log_str(&r, "upstream", c->upstream);
    if (c->code != GRPC_STATUS_OK && c->message)
        log_str(&r, "message", c->message);
    if (c->cancelled)
        log_bool(&r, "cancelled", true);
    log_end(&r);
}

/* The upstream call started (its status will come). */
static void gw__up_started(gw_call_t *c)
{
    c->up_start_ns = gw__now_ns();
    metrics_rpc_started(c->route->sent);
}

/* The upstream call's status came. */
static void gw__up_ended(gw_call_t *c)
{
    if (!c->up_start_ns)
        return;
    metrics_rpc_handled(c->route->sent, c->up_status, gw__now_ns() - c->up_start_ns);
    if (c->gw->up_handled)
        metrics_by_code_inc(c->gw->up_handled[c->route->upstream], c->up_status);
}

static void gw__unref(gw_call_t *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    gw__log(c);
    if (c->route)
        metrics_rpc_handled(c->route->served, c->code, gw__now_ns() - c->start_ns);
    gw_streams_remove(c->gw->streams, &c->stream);
    gpr_free(c->peer);
    if (c->up)
        grpc_call_unref(c->up);
    grpc_call_unref(c->down);
    for (size_t i = c->first_own_md; c->up_md && i < c->n_up_md; i++)
        grpc_slice_unref(c->up_md[i].value);
    grpc_call_details_destroy(&c->details);
    grpc_metadata_array_destroy(&c->md);
    grpc_metadata_array_destroy(&c->up_init_md);
    grpc_metadata_array_destroy(&c->up_trailers);
    grpc_slice_unref(c->up_details);
    grpc_slice_unref(c->own_details);
    grpc_slice_unref(c->trace_value);
    if (c->has_own_trailer)
        grpc_slice_unref(c->own_trailer.value);
    if (c->c2u)
        grpc_byte_buffer_destroy(c->c2u);
    if (c->u2c)
        grpc_byte_buffer_destroy(c->u2c);
    pthread_mutex_destroy(&c->mu);
    arena_free(c->arena);
    mem_free(c);
}

/* Starts a batch holding a reference for its completion; false if core
 * refused it (the call is already over). */
static bool gw__start(gw_call_t *c, grpc_call *call, const grpc_op *ops, size_t n, gw_op_t *op)
{
    atomic_fetch_add(&c->refs, 1);
    if (grpc_call_start_batch(call, ops, n, &op->tag, NULL) == GRPC_CALL_OK)
        return true;
    atomic_fetch_sub(&c->refs, 1);
    return false;
}

/* The client's response headers: the upstream's (up_init_md; nothing yet
 * when we answer ourselves) with the trace id header replaced by ours, so
 * the client gets it back whoever ends the call. Sets down_md/n_down_md. */
static void gw__down_md(gw_call_t *c)
{
    const grpc_metadata_array *up = &c->up_init_md;
    c->down_md = arena_calloc(c->arena, up->count + 1, sizeof(grpc_metadata));
    c->n_down_md = 0;
    for (size_t i = 0; i < up->count; i++)
        if (grpc_slice_str_cmp(up->metadata[i].key, TRACE_RESPONSE_HEADER) != 0)
            c->down_md[c->n_down_md++] = up->metadata[i];
    c->down_md[c->n_down_md].key = grpc_slice_from_static_string(TRACE_RESPONSE_HEADER);
    c->down_md[c->n_down_md++].value = c->trace_value;
}

/* ---- finishing a call ourselves (before an upstream call exists) ---- */

static void gw__down_status_done(rpc_tag_t *tag, bool ok)
{
    (void)ok;
    gw__unref(((gw_op_t *)tag)->c);
}

/* Packs a google.rpc.Status carrying a RetryInfo for the
 * grpc-status-details-bin trailer. */
static ProtobufCBinaryData gw__retry_details(gw_call_t *c, int64_t retry_ms)
{
    Google__Protobuf__Duration delay = GOOGLE__PROTOBUF__DURATION__INIT;
    delay.seconds = retry_ms / 1000;
    delay.nanos = (int32_t)(retry_ms % 1000) * 1000000;
    Google__Rpc__RetryInfo info = GOOGLE__RPC__RETRY_INFO__INIT;
    info.retry_delay = &delay;
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    any.type_url = "type.googleapis.com/google.rpc.RetryInfo";
    any.value.len = google__rpc__retry_info__get_packed_size(&info);
    any.value.data = arena_alloc(c->arena, any.value.len + 1);
    google__rpc__retry_info__pack(&info, any.value.data);
    Google__Protobuf__Any *details[] = {&any};
    Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
    st.code = GRPC_STATUS_RESOURCE_EXHAUSTED;
    st.message = (char *)c->message;
    st.n_details = 1;
    st.details = details;
    ProtobufCBinaryData out;
    out.len = google__rpc__status__get_packed_size(&st);
    out.data = arena_alloc(c->arena, out.len + 1);
    google__rpc__status__pack(&st, out.data);
    return out;
}

/* Ends the downstream call with our own status: initial metadata and status
 * in one batch (core sends nothing without initial metadata). details, if
 * set, is a packed google.rpc.Status. */
static void gw__fail(gw_call_t *c, int err, const char *message, const ProtobufCBinaryData *details)
{
    c->code = err_to_grpc(err);
    c->message = arena_strdup(c->arena, message);
    c->own_details = grpc_slice_from_copied_string(message);
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    gw__down_md(c);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = c->n_down_md;
    ops[0].data.send_initial_metadata.metadata = c->down_md;
    ops[1].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[1].data.send_status_from_server.status = c->code;
    ops[1].data.send_status_from_server.status_details = &c->own_details;
    if (details && details->len) {
        c->own_trailer.key = grpc_slice_from_static_string("grpc-status-details-bin");
        c->own_trailer.value =
            grpc_slice_from_copied_buffer((const char *)details->data, details->len);
        c->has_own_trailer = true;
        ops[1].data.send_status_from_server.trailing_metadata_count = 1;
        ops[1].data.send_status_from_server.trailing_metadata = &c->own_trailer;
    }
    gw__start(c, c->down, ops, 2, &c->t_down_status);
}

/* ---- the pump ---- */

static void gw__up_recv(gw_call_t *c);
static void gw__down_recv(gw_call_t *c);

/* Fills op with the SEND_STATUS_FROM_SERVER that relays the upstream's
 * status, message and trailers, and records them for the log. */
static void gw__status_op(gw_call_t *c, grpc_op *op)
{
    c->code = c->up_status;
    c->message = arena_strndup(c->arena, (const char *)GRPC_SLICE_START_PTR(c->up_details),
                               GRPC_SLICE_LENGTH(c->up_details));
    grpc_slice *details = &c->up_details;
    if (c->up_status == GRPC_STATUS_UNAVAILABLE && c->up_init_md.count == 0) {
        /* Most likely the transport: say which service is down. */
        c->message = arena_printf(c->arena, "%s is unavailable: %s", c->upstream, c->message);
        c->own_details = grpc_slice_from_copied_string(c->message);
        details = &c->own_details;
    }
    memset(op, 0, sizeof(*op));
    op->op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    op->data.send_status_from_server.status = c->up_status;
    op->data.send_status_from_server.status_details = details;
    op->data.send_status_from_server.trailing_metadata_count = c->up_trailers.count;
    op->data.send_status_from_server.trailing_metadata = c->up_trailers.metadata;
}

/* Relays the upstream's status once everything before it has gone out: the
 * initial metadata, every message. Caller holds c->mu. */
static void gw__try_status(gw_call_t *c)
{
    if (!c->have_status || !c->up_msgs_done || c->down_send_busy || !c->init_sent ||
        c->status_started)
        return;
    c->status_started = true;
    grpc_op op;
    gw__status_op(c, &op);
    gw__start(c, c->down, &op, 1, &c->t_down_status);
}

/* ---- the unary path ---- */

/* The reply went out (or the client is gone); nothing is left to do. */
static void gw__on_unary_down(rpc_tag_t *tag, bool ok)
{
    (void)ok;
    gw__unref(((gw_op_t *)tag)->c);
}

/* The upstream call is over: relay its initial metadata, its reply if any,
 * and its status in one batch. ok is ignored: a failure shows in the
 * status, which RECV_STATUS_ON_CLIENT always fills. */
static void gw__on_unary_up(rpc_tag_t *tag, bool ok)
{
    (void)ok;
    gw_call_t *c = ((gw_op_t *)tag)->c;
    gw__up_ended(c);
    grpc_op ops[3];
    size_t n = 0;
    memset(ops, 0, sizeof(ops));
    gw__down_md(c);
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].data.send_initial_metadata.count = c->n_down_md;
    ops[n++].data.send_initial_metadata.metadata = c->down_md;
    if (c->u2c) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = c->u2c;
    }
    gw__status_op(c, &ops[n++]);
    gw__start(c, c->down, ops, n, &c->t_unary_down);
    gw__unref(c);
}

/* The client's message (or its half-close) is in: send it upstream with
 * the metadata, half-close, and receive the whole answer, in one batch. */
static void gw__on_unary_recv(rpc_tag_t *tag, bool ok)
{
    gw_call_t *c = ((gw_op_t *)tag)->c;
    if (!ok) {
        /* The client is gone before its message arrived. */
        c->code = GRPC_STATUS_CANCELLED;
        grpc_call_cancel(c->up, NULL);
        gw__unref(c);
        return;
    }
    grpc_op ops[6];
    size_t n = 0;
    memset(ops, 0, sizeof(ops));
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].flags = c->up_md_flags;
    ops[n].data.send_initial_metadata.count = c->n_up_md;
    ops[n++].data.send_initial_metadata.metadata = c->up_md;
    if (c->c2u) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = c->c2u;
    }
    ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[n++].data.recv_initial_metadata.recv_initial_metadata = &c->up_init_md;
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n++].data.recv_message.recv_message = &c->u2c;
    ops[n].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[n].data.recv_status_on_client.status = &c->up_status;
    ops[n].data.recv_status_on_client.status_details = &c->up_details;
    ops[n++].data.recv_status_on_client.trailing_metadata = &c->up_trailers;
    if (gw__start(c, c->up, ops, n, &c->t_unary_up))
        gw__up_started(c);
    else
        c->code = GRPC_STATUS_CANCELLED; /* cancelled through the parent */
    gw__unref(c);
}

static void gw__on_close(rpc_tag_t *tag, bool ok)
{
    (void)ok;
    gw_call_t *c = ((gw_op_t *)tag)->c;
    pthread_mutex_lock(&c->mu);
    c->down_closed = true;
    /* Propagation cancels the child too; this is for calls core already
     * considered finished on our side. */
    if (c->cancelled && c->up)
        grpc_call_cancel(c->up, NULL);
    pthread_mutex_unlock(&c->mu);
    gw__unref(c);
}

static void gw__on_up_start(rpc_tag_t *tag, bool ok)
{
    (void)ok; /* a failed send shows up in the status */
    gw__unref(((gw_op_t *)tag)->c);
}

static void gw__on_down_init(rpc_tag_t *tag, bool ok)
{
    (void)ok;
    gw__unref(((gw_op_t *)tag)->c);
}

static void gw__on_up_init(rpc_tag_t *tag, bool ok)
{
    gw_call_t *c = ((gw_op_t *)tag)->c;
    pthread_mutex_lock(&c->mu);
    grpc_op op;
    memset(&op, 0, sizeof(op));
    gw__down_md(c);
    op.op = GRPC_OP_SEND_INITIAL_METADATA;
    op.data.send_initial_metadata.count = c->n_down_md;
    op.data.send_initial_metadata.metadata = c->down_md;
    gw__start(c, c->down, &op, 1, &c->t_down_init);
    c->init_sent = true;
    if (ok)
        gw__up_recv(c);
    else
        c->up_msgs_done = true;
    gw__try_status(c);
    pthread_mutex_unlock(&c->mu);
    gw__unref(c);
}

/* Caller holds c->mu. */
static void gw__up_recv(gw_call_t *c)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->u2c;
    if (!gw__start(c, c->up, &op, 1, &c->t_up_recv))
        c->up_msgs_done = true;
}

static void gw__on_up_recv(rpc_tag_t *tag, bool ok)
{
    gw_call_t *c = ((gw_op_t *)tag)->c;
    pthread_mutex_lock(&c->mu);
    if (ok && c->u2c) {
        grpc_op op;
        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_SEND_MESSAGE;
        op.data.send_message.send_message = c->u2c;
        c->down_send_busy = gw__start(c, c->down, &op, 1, &c->t_down_send);
        if (!c->down_send_busy) {
            c->up_msgs_done = true;
            grpc_call_cancel(c->up, NULL);
        }
    } else {
        c->up_msgs_done = true;
    }
    gw__try_status(c);
    pthread_mutex_unlock(&c->mu);
    gw__unref(c);
}

static void gw__on_down_send(rpc_tag_t *tag, bool ok)
{
    gw_call_t *c = ((gw_op_t *)tag)->c;
    pthread_mutex_lock(&c->mu);
    grpc_byte_buffer_destroy(c->u2c);
    c->u2c = NULL;
    c->down_send_busy = false;
    if (ok) {
        gw__up_recv(c);
    } else {
        /* The client is gone: stop the upstream too. */
        c->up_msgs_done = true;
        grpc_call_cancel(c->up, NULL);
    }
    gw__try_status(c);
    pthread_mutex_unlock(&c->mu);
    gw__unref(c);
}

static void gw__on_up_status(rpc_tag_t *tag, bool ok)
{
    (void)ok;
    gw_call_t *c = ((gw_op_t *)tag)->c;
    gw__up_ended(c);
    pthread_mutex_lock(&c->mu);
    c->have_status = true;
    gw__try_status(c);
    pthread_mutex_unlock(&c->mu);
    gw__unref(c);
}

/* Caller holds c->mu. */
static void gw__down_recv(gw_call_t *c)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->c2u;
    gw__start(c, c->down, &op, 1, &c->t_down_recv);
}

static void gw__on_down_recv(rpc_tag_t *tag, bool ok)
{
    gw_call_t *c = ((gw_op_t *)tag)->c;
    pthread_mutex_lock(&c->mu);
    if (ok) {
        grpc_op op;
        memset(&op, 0, sizeof(op));
        if (c->c2u) {
            op.op = GRPC_OP_SEND_MESSAGE;
            op.data.send_message.send_message = c->c2u;
        } else {
            op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
            c->half_closed = true;
        }
        gw__start(c, c->up, &op, 1, &c->t_up_send);
    }
    /* Otherwise the client is gone; cancellation reaches the upstream. */
    pthread_mutex_unlock(&c->mu);
    gw__unref(c);
}

static void gw__on_up_send(rpc_tag_t *tag, bool ok)
{
    gw_call_t *c = ((gw_op_t *)tag)->c;
    pthread_mutex_lock(&c->mu);
    if (c->c2u) {
        grpc_byte_buffer_destroy(c->c2u);
        c->c2u = NULL;
    }
    if (ok && !c->half_closed)
        gw__down_recv(c);
    pthread_mutex_unlock(&c->mu);
    gw__unref(c);
}

/* Headers never copied upstream: credentials, principals (only ours may
 * exist), and what HTTP/2 and core manage themselves. */
static bool gw__hop_header(const grpc_slice key)
{
    static const char *const exact[] = {
        "authorization", "host",        "te",      "content-type",      "user-agent",
        "connection",    "keep-alive",  "upgrade", "transfer-encoding", "proxy-authorization",
        "x-request-id",  "traceparent",
    };
    static const char *const prefixes[] = {"x-onceiot-principal", "grpc-", ":", "proxy-"};
    size_t n = GRPC_SLICE_LENGTH(key);
    const char *k = (const char *)GRPC_SLICE_START_PTR(key);
    for (size_t i = 0; i < sizeof(exact) / sizeof(*exact); i++)
        if (strlen(exact[i]) == n && strncasecmp(k, exact[i], n) == 0)
            return true;
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(*prefixes); i++) {
        size_t pn = strlen(prefixes[i]);
        if (n >= pn && strncasecmp(k, prefixes[i], pn) == 0)
            return true;
    }
    return false;
}

/* Authorized: build the upstream metadata, create the upstream call as a
 * child of the downstream one (deadline and cancellation propagate), and
 * start pumping. p is the caller's principal, or the anonymous one of a
 * public method. */
static void gw__connect(gw_call_t *c, principal_t *p)
{
    gw_t *gw = c->gw;
    c->up_md = arena_calloc(c->arena, c->md.count + 4, sizeof(grpc_metadata));
    /* The client's tracestate belongs to its trace: dropped when we had to
     * start a new one. */
    bool keep_state = c->trace.parent_span_id[0] != '\0';
    for (size_t i = 0; i < c->md.count; i++)
        if (!gw__hop_header(c->md.metadata[i].key) &&
            (keep_state || grpc_slice_str_cmp(c->md.metadata[i].key, "tracestate") != 0))
            c->up_md[c->n_up_md++] = c->md.metadata[i];
    /* Our own values are copied: core's header compression may hold them
     * after the call, longer than the arena. gw__unref drops them. */
    c->first_own_md = c->n_up_md;
    c->up_md[c->n_up_md].key = grpc_slice_from_static_string("x-request-id");
    c->up_md[c->n_up_md++].value = grpc_slice_from_copied_string(c->request_id);
    c->up_md[c->n_up_md].key = grpc_slice_from_static_string("traceparent");
    c->up_md[c->n_up_md++].value = grpc_slice_from_copied_string(c->traceparent);
    rpc_md_t signed_md[2];
    principal_sign(gw->up_keys[c->route->upstream], p, c->method, c->arena, signed_md);
    for (int i = 0; i < 2; i++) {
        c->up_md[c->n_up_md].key = grpc_slice_from_static_string(signed_md[i].key);
        c->up_md[c->n_up_md++].value =
            grpc_slice_from_copied_buffer(signed_md[i].value, signed_md[i].len);
    }

    pthread_mutex_lock(&c->mu);
    if (c->down_closed) {
        /* The client left while we authenticated; nothing to relay. */
        c->code = GRPC_STATUS_CANCELLED;
        pthread_mutex_unlock(&c->mu);
        return;
    }
    c->up_md_flags =
        gw_upstreams_call_flags(gw->upstreams, c->route->upstream, c->details.deadline);
    c->up =
        grpc_channel_create_call(gw_upstreams_proxy_channel(gw->upstreams, c->route->upstream),
                                 c->down, GRPC_PROPAGATE_DEFAULTS, rpc_server_cq(gw->srv),
                                 c->details.method, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    grpc_op op;
    memset(&op, 0, sizeof(op));
    if (c->route->unary) {
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &c->c2u;
        gw__start(c, c->down, &op, 1, &c->t_unary_recv);
        pthread_mutex_unlock(&c->mu);
        return;
    }
    op.op = GRPC_OP_SEND_INITIAL_METADATA;
    op.flags = c->up_md_flags;
    op.data.send_initial_metadata.count = c->n_up_md;
    op.data.send_initial_metadata.metadata = c->up_md;
    gw__start(c, c->up, &op, 1, &c->t_up_start);
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_INITIAL_METADATA;
    op.data.recv_initial_metadata.recv_initial_metadata = &c->up_init_md;
    if (!gw__start(c, c->up, &op, 1, &c->t_up_init)) {
        c->init_sent = true; /* nothing will come; let the status through */
        c->up_msgs_done = true;
    }
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.status = &c->up_status;
    op.data.recv_status_on_client.status_details = &c->up_details;
    op.data.recv_status_on_client.trailing_metadata = &c->up_trailers;
    if (gw__start(c, c->up, &op, 1, &c->t_up_status))
        gw__up_started(c);
    gw__down_recv(c);
    pthread_mutex_unlock(&c->mu);
}

/* Answers RESOURCE_EXHAUSTED with a RetryInfo of retry_ms. */
static void gw__fail_rate(gw_call_t *c, const char *who, int64_t retry_ms)
{
    c->message = arena_printf(c->arena, "rate limit exceeded for this %s; retry in %lld ms", who,
                              (long long)retry_ms);
    ProtobufCBinaryData d = gw__retry_details(c, retry_ms);
    gw__fail(c, ERR_RESOURCE_EXHAUSTED, c->message, &d);
}

/* A 64-bit FNV-1a of a string: the rate-limit key of a client address. */
static int64_t gw__address_key(const char *s)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 0x100000001b3u;
    return (int64_t)(h >> 1);
}

/* The API key id of a principal's "api_key:<id>" credential, or 0. */
static int64_t gw__key_id(const principal_t *p)
{
    if (!p->credential || strncmp(p->credential, "api_key:", 8) != 0)
        return 0;
    return strtoll(p->credential + 8, NULL, 10);
}

/* Authenticated (p) or public (p NULL): authorize, rate-limit (per user, or
 * per client address for public methods), bound a stream by its
 * credential, connect. */
static void gw__proceed(gw_call_t *c, principal_t *p)
{
    gw_t *gw = c->gw;
    int64_t retry_ms = 0;
    if (!p) {
        if (!gw_ratelimit_take(gw->public_ratelimit, gw__address_key(c->client_address),
                               gw__now_ns(), &retry_ms)) {
            gw__fail_rate(c, "client address", retry_ms);
            return;
        }
        p = arena_alloc(c->arena, sizeof(*p));
        onceiot__common__v1__principal__init(p);
        p->credential = "anonymous";
        p->client_address = (char *)c->client_address;
        gw__connect(c, p);
        return;
    }
    c->user_id = p->user_id;
    c->organization_id = p->organization_id;
    c->credential = p->credential;
    p->client_address = (char *)c->client_address;
    const char *why = NULL;
    if (gw_authorize(&c->route->rule, p, &why) < 0) {
        gw__fail(c, ERR_PERMISSION_DENIED, why, NULL);
        return;
    }
    if (!gw_ratelimit_take(gw->ratelimit, p->user_id, gw__now_ns(), &retry_ms)) {
        gw__fail_rate(c, "caller", retry_ms);
        return;
    }
    if (!c->route->unary && gw_streams_add(gw->streams, &c->stream, c->down, c->method, p,
                                           c->token_issued_ms, gw__key_id(p)) < 0) {
        gw__fail(c, ERR_RESOURCE_EXHAUSTED,
                 "this organization has as many streams open as it may; close one first", NULL);
        return;
    }
    gw__connect(c, p);
}

static void gw__on_key(void *arg, int rc, principal_t *p, const char *why)
{
    gw_call_t *c = arg;
    if (rc < 0)
        gw__fail(c, rc, why, NULL);
    else
        gw__proceed(c, p);
    gw__unref(c);
}

static void gw__authenticate(gw_call_t *c)
{
    gw_t *gw = c->gw;
    if (c->route->rule.is_public) {
        gw__proceed(c, NULL);
        return;
    }
    const char *secret = gw_request_bearer(&c->md, c->arena);
    if (!secret) {
        gw__fail(c, ERR_UNAUTHENTICATED,
                 "missing credentials: send \"authorization: Bearer <API key or login token>\"",
                 NULL);
        return;
    }
    principal_t *p = NULL;
    const char *why = NULL;
    if (strncmp(secret, "v4.public.", 10) == 0) {
        if (gw_auth_token(gw->auth, secret, c->arena, &p, &c->token_issued_ms, &why) < 0)
            gw__fail(c, ERR_UNAUTHENTICATED, why, NULL);
        else
            gw__proceed(c, p);
        return;
    }
    int rc = gw_auth_key_cached(gw->auth, secret, c->arena, &p);
    metrics_inc(rc == 0 ? gw->auth_cache_misses : gw->auth_cache_hits, 1);
    if (rc == 1) {
        gw__proceed(c, p);
    } else if (rc < 0) {
        gw__fail(c, ERR_UNAUTHENTICATED, "the API key is not valid (unknown, revoked or expired)",
                 NULL);
    } else {
        atomic_fetch_add(&c->refs, 1); /* held by the lookup until gw__on_key */
        gw_auth_key_lookup(gw->auth, rpc_server_cq(gw->srv), secret, c->request_id, c->traceparent,
                           c->arena, gw__on_key, c);
    }
}

void gw_proxy(void *ctx, grpc_call *call, grpc_call_details *details, grpc_metadata_array *md)
{
    gw_t *gw = ctx;
    gw_call_t *c = mem_calloc(1, sizeof(*c));
    c->gw = gw;
    atomic_init(&c->refs, 1); /* the setup's, dropped at the end of this function */
    pthread_mutex_init(&c->mu, NULL);
    c->down = call;
    c->details = *details;
    c->md = *md;
    c->arena = arena_new();
    c->start_ns = gw__now_ns();
    c->code = GRPC_STATUS_OK;
    c->up_details = grpc_empty_slice();
    c->own_details = grpc_empty_slice();
    grpc_metadata_array_init(&c->up_init_md);
    grpc_metadata_array_init(&c->up_trailers);
    gw_op_t *ops[] = {&c->t_unary_recv, &c->t_unary_up, &c->t_unary_down, &c->t_close,
                      &c->t_up_start,   &c->t_up_init,  &c->t_down_init,  &c->t_down_recv,
                      &c->t_up_send,    &c->t_up_recv,  &c->t_down_send,  &c->t_up_status,
                      &c->t_down_status};
    void (*fns[])(rpc_tag_t *, bool) = {
        gw__on_unary_recv, gw__on_unary_up,  gw__on_unary_down,   gw__on_close,   gw__on_up_start,
        gw__on_up_init,    gw__on_down_init, gw__on_down_recv,    gw__on_up_send, gw__on_up_recv,
        gw__on_down_send,  gw__on_up_status, gw__down_status_done};
    for (size_t i = 0; i < sizeof(ops) / sizeof(*ops); i++) {
        ops[i]->tag.fn = fns[i];
        ops[i]->c = c;
    }
    c->method = arena_strndup(c->arena, (const char *)GRPC_SLICE_START_PTR(details->method),
                              GRPC_SLICE_LENGTH(details->method));
    rpc_request_id(&c->md, c->request_id);
    trace_from_metadata(&c->md, &c->trace);
    trace_header(&c->trace, c->traceparent);
    c->trace_value = grpc_slice_from_copied_string(c->trace.trace_id);
    c->peer = grpc_call_get_peer(call);
    c->client_address = gw_request_client_address(c->arena, c->peer);

    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->cancelled;
    gw__start(c, call, &op, 1, &c->t_close);

    c->route = gw_routes_find(gw->routes, (const char *)GRPC_SLICE_START_PTR(details->method),
                              GRPC_SLICE_LENGTH(details->method));
    if (!c->route) {
        gw__fail(c, ERR_UNIMPLEMENTED, arena_printf(c->arena, "unknown method %s", c->method),
                 NULL);
    } else {
        c->upstream = gw_upstreams_name(gw->upstreams, c->route->upstream);
        metrics_rpc_started(c->route->served);
        gw__authenticate(c);
    }
    gw__unref(c);
}
