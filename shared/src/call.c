/* One call's life on the server side, and the API a handler uses: metadata,
 * deadline, status, streaming send and receive. */
#include "server_int.h"

#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "onceiot/log.h"
#include "onceiot/pbnest.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static int64_t call__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void call__sync_done(srv_tag_t *tag, bool ok)
{
    rpc_call_t *c = (rpc_call_t *)((char *)tag - offsetof(rpc_call_t, sync_tag));
    pthread_mutex_lock(&c->sync_mu);
    c->sync_done = true;
    c->sync_ok = ok;
    pthread_cond_signal(&c->sync_cv);
    pthread_mutex_unlock(&c->sync_mu);
}

static void call__close_done(srv_tag_t *tag, bool ok)
{
    (void)ok;
    rpc_call_t *c = (rpc_call_t *)((char *)tag - offsetof(rpc_call_t, close_tag));
    if (c->client_cancelled)
        atomic_store(&c->cancelled, true);
    srv__call_unref(c);
}

static void call__finish_done(srv_tag_t *tag, bool ok)
{
    (void)ok;
    rpc_call_t *c = (rpc_call_t *)((char *)tag - offsetof(rpc_call_t, finish_tag));
    srv__call_unref(c);
}

/* A client's id is kept when it is short and plain, so ids in logs are
 * always safe to print and grep, and safe to forward. */
static bool call__plain_id(const uint8_t *p, size_t n)
{
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        uint8_t ch = p[i];
        bool ok = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
                  (ch >= 'A' && ch <= 'Z') || ch == '-' || ch == '_' || ch == '.';
        if (!ok)
            return false;
    }
    return true;
}

void rpc_request_id(const grpc_metadata_array *md, char out[65])
{
    for (size_t i = 0; i < md->count; i++) {
        const grpc_metadata *m = &md->metadata[i];
        if (grpc_slice_str_cmp(m->key, "x-request-id") != 0)
            continue;
        size_t n = GRPC_SLICE_LENGTH(m->value);
        if (call__plain_id(GRPC_SLICE_START_PTR(m->value), n)) {
            memcpy(out, GRPC_SLICE_START_PTR(m->value), n);
            out[n] = '\0';
            return;
        }
        break;
    }
    trace_random_hex(out, 32);
}

rpc_call_t *srv__call_new(rpc_server_t *srv, const srv_method_t *m, grpc_call *call,
                          gpr_timespec deadline)
{
    rpc_call_t *c = mem_calloc(1, sizeof(*c));
    c->srv = srv;
    c->m = m;
    c->call = call;
    c->deadline = deadline;
    c->arena = arena_new();
    c->method = m ? m->path : "";
    c->start_ns = call__now_ns();
    c->code = GRPC_STATUS_OK;
    if (m)
        metrics_rpc_started(m->metrics);
    atomic_init(&c->refs, 2);
    atomic_init(&c->cancelled, false);
    c->close_tag.fn = call__close_done;
    c->finish_tag.fn = call__finish_done;
    c->sync_tag.fn = call__sync_done;
    pthread_mutex_init(&c->sync_mu, NULL);
    pthread_cond_init(&c->sync_cv, NULL);
    grpc_call_details_init(&c->details);
    grpc_metadata_array_init(&c->md);

    grpc_op op = {0};
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->client_cancelled;
    if (grpc_call_start_batch(call, &op, 1, &c->close_tag, NULL) != GRPC_CALL_OK)
        atomic_fetch_sub(&c->refs, 1);
    return c;
}

/* Called once the request metadata is in place (after srv__call_new): the
 * request id and the trace. */
static void call__take_request_id(rpc_call_t *c)
{
    rpc_request_id(&c->md, c->request_id);
    trace_from_metadata(&c->md, &c->trace);
}

static void call__log(rpc_call_t *c)
{
    bool quiet = c->m && c->m->quiet && c->code == GRPC_STATUS_OK;
    bool bad = c->code == GRPC_STATUS_INTERNAL || c->code == GRPC_STATUS_UNKNOWN ||
               c->code == GRPC_STATUS_DATA_LOSS;
    bool refused =
        c->code == GRPC_STATUS_UNAUTHENTICATED || c->code == GRPC_STATUS_PERMISSION_DENIED;
    log_rec_t r;
    const char *prev = log_set_trace_id(c->trace.trace_id);
    log_begin(&r, quiet ? LOG_DEBUG : bad ? LOG_ERROR : refused ? LOG_WARN : LOG_INFO, "call");
    log_set_trace_id(prev);
    if (!r.on)
        return;
    log_str(&r, "method", c->method);
    log_str(&r, "status", err_grpc_name(c->code));
    log_int(&r, "code", c->code);
    log_double(&r, "duration_ms", (double)(call__now_ns() - c->start_ns) / 1e6);
    log_str(&r, "peer", rpc_call_peer(c));
    log_str(&r, "request_id", c->request_id);
    log_str(&r, "span_id", c->trace.span_id);
    if (c->trace.parent_span_id[0])
        log_str(&r, "parent_span_id", c->trace.parent_span_id);
    if (refused)
        log_bool(&r, "refused", true);
    if (c->code != GRPC_STATUS_OK && c->message)
        log_str(&r, "message", c->message);
    if (atomic_load(&c->cancelled))
        log_bool(&r, "cancelled", true);
    log_end(&r);
}

void srv__call_unref(rpc_call_t *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    if (!c->request_id[0])
        call__take_request_id(c);
    call__log(c);
    /* Unknown methods are not counted: their names are the client's. */
    if (c->m)
        metrics_rpc_handled(c->m->metrics, c->code, call__now_ns() - c->start_ns);
    rpc_server_t *srv = c->srv;
    grpc_call_unref(c->call);
    grpc_metadata_array_destroy(&c->md);
    grpc_call_details_destroy(&c->details);
    if (c->payload)
        grpc_byte_buffer_destroy(c->payload);
    if (c->recv_buf)
        grpc_byte_buffer_destroy(c->recv_buf);
    if (c->has_trailer)
        grpc_slice_unref(c->trailer.value);
    grpc_slice_unref(c->finish_details);
    if (c->initial_md_sent) {
        grpc_slice_unref(c->initial_md[0].value);
        grpc_slice_unref(c->initial_md[1].value);
    }
    if (c->peer)
        gpr_free(c->peer);
    pthread_mutex_destroy(&c->sync_mu);
    pthread_cond_destroy(&c->sync_cv);
    arena_free(c->arena);
    mem_free(c);
    srv__call_ended(srv);
}

/* ---- messages ---- */

/* Copies a received buffer into one block of arena a. */
static ProtobufCBinaryData call__read(arena_t *a, grpc_byte_buffer *bb)
{
    grpc_byte_buffer_reader reader;
    ProtobufCBinaryData out = {0, NULL};
    if (!grpc_byte_buffer_reader_init(&reader, bb))
        return out;
    grpc_slice s = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    out.len = GRPC_SLICE_LENGTH(s);
    out.data = arena_alloc(a, out.len ? out.len : 1);
    memcpy(out.data, GRPC_SLICE_START_PTR(s), out.len);
    grpc_slice_unref(s);
    return out;
}

/* Decodes a received request (what: "request", "streamed request") into
 * arena a: 0 with *msg set, or ERR_INVALID_ARGUMENT with the status set when
 * it is not a valid message of the method's input type or nests messages
 * deeper than PBNEST_MAX_DEPTH (checked on the bytes first: protobuf-c's
 * recursion would otherwise run off the thread's stack). */
static int call__unpack_or_status(rpc_call_t *c, arena_t *a, grpc_byte_buffer *bb, const char *what,
                                  ProtobufCMessage **msg)
{
    *msg = NULL;
    ProtobufCBinaryData b = call__read(a, bb);
    if (b.data && !pbnest_within(c->m->input, b.data, b.len, PBNEST_MAX_DEPTH))
        return rpc_fail(c, ERR_INVALID_ARGUMENT, "the %s nests messages more than %d deep", what,
                        PBNEST_MAX_DEPTH);
    if (b.data)
        *msg = protobuf_c_message_unpack(c->m->input, arena_allocator(a), b.len, b.data);
    if (!*msg)
        return rpc_fail(c, ERR_INVALID_ARGUMENT, "the %s is not a valid %s message", what,
                        c->m->input->name);
    return 0;
}

/* Packs a message into a byte buffer core can send; NULL if it is larger
 * than the server's maximum message size. */
static grpc_byte_buffer *call__pack(rpc_call_t *c, const ProtobufCMessage *msg)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    if (n > srv__max_message(c->srv))
        return NULL;
    grpc_slice s = grpc_slice_malloc(n);
    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

static void call__initial_md_op(rpc_call_t *c, grpc_op *op)
{
    if (!c->request_id[0])
        call__take_request_id(c);
    c->initial_md[0].key = grpc_slice_from_static_string("x-request-id");
    /* Copied: core's header compression may keep the value after the call. */
    c->initial_md[0].value = grpc_slice_from_copied_string(c->request_id);
    c->initial_md[1].key = grpc_slice_from_static_string(TRACE_RESPONSE_HEADER);
    c->initial_md[1].value = grpc_slice_from_copied_string(c->trace.trace_id);
    op->op = GRPC_OP_SEND_INITIAL_METADATA;
    op->data.send_initial_metadata.count = 2;
    op->data.send_initial_metadata.metadata = c->initial_md;
    c->initial_md_sent = true;
}

/* Runs one batch and waits for it; false if core refused or it failed. */
static bool call__sync(rpc_call_t *c, grpc_op *ops, size_t n)
{
    c->sync_done = false;
    if (grpc_call_start_batch(c->call, ops, n, &c->sync_tag, NULL) != GRPC_CALL_OK)
        return false;
    pthread_mutex_lock(&c->sync_mu);
    while (!c->sync_done)
        pthread_cond_wait(&c->sync_cv, &c->sync_mu);
    pthread_mutex_unlock(&c->sync_mu);
    return c->sync_ok;
}

static int call__send_bb(rpc_call_t *c, grpc_byte_buffer *bb)
{
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    if (!c->initial_md_sent)
        call__initial_md_op(c, &ops[n++]);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = bb;
    n++;
    bool ok = call__sync(c, ops, n);
    grpc_byte_buffer_destroy(bb);
    return ok ? 0 : ERR_CANCELLED;
}

int rpc_send_headers(rpc_call_t *c)
{
    if (c->initial_md_sent)
        return 0;
    if (rpc_call_cancelled(c))
        return ERR_CANCELLED;
    grpc_op op;
    memset(&op, 0, sizeof(op));
    call__initial_md_op(c, &op);
    return call__sync(c, &op, 1) ? 0 : ERR_CANCELLED;
}

int rpc_send(rpc_call_t *c, const ProtobufCMessage *msg)
{
    if (rpc_call_cancelled(c))
        return ERR_CANCELLED;
    grpc_byte_buffer *bb = call__pack(c, msg);
    if (!bb)
        return rpc_fail(c, ERR_INTERNAL, "a reply exceeds the maximum message size");
    return call__send_bb(c, bb);
}

/* Receives the next buffer into c->recv_buf: 1, 0 at the end, or ERR_CANCELLED. */
static int call__recv_bb(rpc_call_t *c)
{
    if (c->recv_buf) {
        grpc_byte_buffer_destroy(c->recv_buf);
        c->recv_buf = NULL;
    }
    grpc_op op = {0};
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_buf;
    if (!call__sync(c, &op, 1))
        return ERR_CANCELLED;
    if (!c->recv_buf)
        return rpc_call_cancelled(c) ? ERR_CANCELLED : 0;
    return 1;
}

int rpc_recv(rpc_call_t *c, ProtobufCMessage **msg)
{
    return rpc_recv_in(c, c->arena, msg);
}

int rpc_recv_in(rpc_call_t *c, arena_t *a, ProtobufCMessage **msg)
{
    *msg = NULL;
    int rc = call__recv_bb(c);
    if (rc <= 0)
        return rc;
    rc = call__unpack_or_status(c, a, c->recv_buf, "streamed request", msg);
    return rc < 0 ? rc : 1;
}

/* ---- status ---- */

rpc_call_t *rpc_call_detached_new(void)
{
    rpc_call_t *c = mem_calloc(1, sizeof(*c));
    c->arena = arena_new();
    c->method = "";
    c->code = GRPC_STATUS_OK;
    return c;
}

grpc_status_code rpc_call_detached_code(const rpc_call_t *c)
{
    return c->code;
}

const char *rpc_call_detached_message(const rpc_call_t *c)
{
    return c->message ? c->message : "";
}

void rpc_call_detached_free(rpc_call_t *c)
{
    if (!c)
        return;
    arena_free(c->arena);
    mem_free(c);
}

int rpc_fail(rpc_call_t *c, int err, const char *fmt, ...)
{
    if (c->status_set || err >= 0)
        return err;
    c->status_set = true;
    c->code = err_to_grpc(err);
    va_list ap;
    va_start(ap, fmt);
    c->message = arena_vprintf(c->arena, fmt, ap);
    va_end(ap);
    return err;
}

void rpc_violation(rpc_call_t *c, const char *field, const char *fmt, ...)
{
    srv_violation_t *v = arena_alloc(c->arena, sizeof(*v));
    v->field = arena_strdup(c->arena, field);
    va_list ap;
    va_start(ap, fmt);
    v->description = arena_vprintf(c->arena, fmt, ap);
    va_end(ap);
    v->next = c->violations;
    c->violations = v;
    c->n_violations++;
}

int rpc_check_violations(rpc_call_t *c)
{
    if (c->n_violations == 0)
        return 0;
    /* The list is newest first; the message reads in the order recorded. */
    const srv_violation_t **order = arena_alloc(c->arena, c->n_violations * sizeof(*order));
    size_t i = c->n_violations;
    for (const srv_violation_t *v = c->violations; v; v = v->next)
        order[--i] = v;
    size_t cap = 64;
    for (i = 0; i < c->n_violations; i++)
        cap += strlen(order[i]->field) + strlen(order[i]->description) + 4;
    char *msg = arena_alloc(c->arena, cap);
    int off = snprintf(msg, cap, "invalid request: ");
    for (i = 0; i < c->n_violations; i++)
        off += snprintf(msg + off, cap - (size_t)off, "%s%s: %s", i ? "; " : "", order[i]->field,
                        order[i]->description);
    return rpc_fail(c, ERR_INVALID_ARGUMENT, "%s", msg);
}

/* Packs the recorded field violations as google.rpc.Status{BadRequest}. */
static void call__pack_violations(rpc_call_t *c)
{
    arena_t *a = c->arena;
    Google__Rpc__BadRequest br = GOOGLE__RPC__BAD_REQUEST__INIT;
    br.n_field_violations = c->n_violations;
    br.field_violations = arena_alloc(a, c->n_violations * sizeof(*br.field_violations));
    size_t i = c->n_violations;
    for (const srv_violation_t *v = c->violations; v; v = v->next) {
        Google__Rpc__BadRequest__FieldViolation *fv = arena_alloc(a, sizeof(*fv));
        google__rpc__bad_request__field_violation__init(fv);
        fv->field = (char *)v->field;
        fv->description = (char *)v->description;
        br.field_violations[--i] = fv;
    }
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    any.type_url = "type.googleapis.com/google.rpc.BadRequest";
    any.value.len = google__rpc__bad_request__get_packed_size(&br);
    any.value.data = arena_alloc(a, any.value.len);
    google__rpc__bad_request__pack(&br, any.value.data);
    Google__Protobuf__Any *anys[1] = {&any};
    Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
    st.code = c->code;
    st.message = (char *)(c->message ? c->message : "");
    st.n_details = 1;
    st.details = anys;
    c->details_bin.len = google__rpc__status__get_packed_size(&st);
    c->details_bin.data = arena_alloc(a, c->details_bin.len);
    google__rpc__status__pack(&st, c->details_bin.data);
}

void srv__call_finish(rpc_call_t *c, const ProtobufCMessage *resp)
{
    grpc_op ops[3];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    grpc_byte_buffer *bb = NULL;
    if (resp && c->code == GRPC_STATUS_OK) {
        bb = call__pack(c, resp);
        if (!bb)
            rpc_fail(c, ERR_INTERNAL, "the reply exceeds the maximum message size");
    }
    if (c->code == GRPC_STATUS_INVALID_ARGUMENT && c->n_violations && !c->details_bin.len)
        call__pack_violations(c);
    if (!c->initial_md_sent)
        call__initial_md_op(c, &ops[n++]);
    if (bb) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = bb;
        n++;
    }
    const char *msg = c->message ? c->message : "";
    c->finish_details = grpc_slice_from_copied_string(msg);
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = c->code;
    ops[n].data.send_status_from_server.status_details = c->code ? &c->finish_details : NULL;
    if (c->details_bin.len) {
        c->trailer.key = grpc_slice_from_static_string("grpc-status-details-bin");
        c->trailer.value =
            grpc_slice_from_copied_buffer((const char *)c->details_bin.data, c->details_bin.len);
        c->has_trailer = true;
        ops[n].data.send_status_from_server.trailing_metadata_count = 1;
        ops[n].data.send_status_from_server.trailing_metadata = &c->trailer;
    }
    n++;
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, &c->finish_tag, NULL);
    if (bb)
        grpc_byte_buffer_destroy(bb); /* core took its own reference to the slices */
    if (e != GRPC_CALL_OK)
        srv__call_unref(c);
}

static void call__run_defers(rpc_call_t *c)
{
    while (c->defers) {
        srv_defer_t *d = c->defers;
        c->defers = d->next;
        d->fn(d->arg);
    }
}

void srv__call_run(rpc_call_t *c)
{
    const srv_method_t *m = c->m;
    ProtobufCMessage *req = NULL;
    ProtobufCMessage *resp = NULL;
    int rc = 0;
    if (rpc_call_cancelled(c)) {
        /* The client gave up while the call waited for a worker. */
        rc = rpc_fail(c, ERR_CANCELLED, "cancelled before it ran");
    } else if (!m->client_streaming) {
        if (!c->payload)
            rc = rpc_fail(c, ERR_INVALID_ARGUMENT, "the request message is missing");
        else
            rc = call__unpack_or_status(c, c->arena, c->payload, "request", &req);
    }
    /* Every line the handler logs carries the call's trace id. */
    const char *prev = log_set_trace_id(rpc_call_trace_id(c));
    if (rc == 0)
        rc = m->fn(c, req, m->server_streaming ? NULL : &resp);
    call__run_defers(c);
    log_set_trace_id(prev);
    if (rc == 0 && !m->server_streaming && !resp && !c->status_set)
        rc = rpc_fail(c, ERR_INTERNAL, "the handler returned no reply");
    if (rc < 0 && !c->status_set)
        rpc_fail(c, rc, "%s", err_message(rc));
    srv__call_finish(c, rc == 0 ? resp : NULL);
}

/* ---- what a handler can ask ---- */

void *rpc_call_ctx(const rpc_call_t *c)
{
    return c->m ? c->m->ctx : NULL;
}

arena_t *rpc_call_arena(rpc_call_t *c)
{
    return c->arena;
}

const char *rpc_call_method(const rpc_call_t *c)
{
    return c->method;
}

const ProtobufCMessageDescriptor *rpc_call_response_descriptor(const rpc_call_t *c)
{
    return c->m ? c->m->output : NULL;
}

const char *rpc_call_peer(const rpc_call_t *c)
{
    rpc_call_t *mc = (rpc_call_t *)c;
    if (!mc->peer)
        mc->peer = grpc_call_get_peer(mc->call);
    return mc->peer;
}

const char *rpc_call_request_id(const rpc_call_t *c)
{
    rpc_call_t *mc = (rpc_call_t *)c;
    if (!mc->request_id[0])
        call__take_request_id(mc);
    return mc->request_id;
}

const char *rpc_call_trace_id(const rpc_call_t *c)
{
    rpc_call_t *mc = (rpc_call_t *)c;
    if (!mc->request_id[0])
        call__take_request_id(mc);
    return mc->trace.trace_id;
}

void rpc_call_traceparent(const rpc_call_t *c, char out[56])
{
    rpc_call_trace_id(c);
    trace_header(&c->trace, out);
}

bool rpc_call_metadata_bin(rpc_call_t *c, const char *key, const uint8_t **data, size_t *len)
{
    size_t klen = strlen(key);
    for (size_t i = 0; i < c->md.count; i++) {
        const grpc_slice *k = &c->md.metadata[i].key;
        if (GRPC_SLICE_LENGTH(*k) == klen && memcmp(GRPC_SLICE_START_PTR(*k), key, klen) == 0) {
            *data = GRPC_SLICE_START_PTR(c->md.metadata[i].value);
            *len = GRPC_SLICE_LENGTH(c->md.metadata[i].value);
            return true;
        }
    }
    return false;
}

int64_t rpc_call_remaining_ms(const rpc_call_t *c)
{
    if (gpr_time_cmp(c->deadline, gpr_inf_future(c->deadline.clock_type)) == 0)
        return INT64_MAX;
    gpr_timespec d = gpr_convert_clock_type(c->deadline, GPR_CLOCK_MONOTONIC);
    gpr_timespec now = gpr_now(GPR_CLOCK_MONOTONIC);
    if (gpr_time_cmp(d, now) <= 0)
        return 0;
    gpr_timespec left = gpr_time_sub(d, now);
    int64_t ms = left.tv_sec * 1000 + left.tv_nsec / 1000000;
    return ms > 0 ? ms : 1;
}

bool rpc_call_cancelled(const rpc_call_t *c)
{
    return atomic_load(&c->cancelled) || rpc_call_remaining_ms(c) == 0;
}

void rpc_call_defer(rpc_call_t *c, void (*fn)(void *), void *arg)
{
    srv_defer_t *d = arena_alloc(c->arena, sizeof(*d));
    d->fn = fn;
    d->arg = arg;
    d->next = c->defers;
    c->defers = d;
}

void *rpc_call_local(const rpc_call_t *c)
{
    return c->local;
}

void rpc_call_set_local(rpc_call_t *c, void *p)
{
    c->local = p;
}

grpc_call *rpc_call_grpc(rpc_call_t *c)
{
    return c->call;
}
