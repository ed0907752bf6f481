/* Synchronous gRPC client calls on the core API: one pluck completion queue
 * per call, so a call blocks only its own thread. */
#include "onceiot/client.h"

#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "onceiot/log.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <string.h>

struct rpc_channel {
    grpc_channel *ch;
    size_t max_message;
};

struct rpc_stream {
    grpc_completion_queue *cq;
    grpc_call *call;
    arena_t *arena;
    size_t max_message;
    bool md_received;
    bool send_closed;
    grpc_metadata_array initial_md;
    grpc_metadata *send_md; /* sent with the call, kept until the first batch completes */
    size_t n_send_md;
};

/* The service config: round robin (or core's default), and for each retried method a retry of
 * UNAVAILABLE (the server went away before answering; the next attempt goes
 * to another address), three attempts at most, within the call's deadline.
 * Returned with mem_printf. */
static char *client__service_config(const rpc_channel_cfg_t *cfg)
{
    char *names = mem_strdup("");
    for (size_t i = 0; i < cfg->n_retry_methods; i++) {
        const char *path = cfg->retry_methods[i];
        const char *slash = strrchr(path, '/');
        if (path[0] != '/' || !slash || slash == path)
            continue;
        char *next = mem_printf("%s%s{\"service\":\"%.*s\",\"method\":\"%s\"}", names,
                                *names ? "," : "", (int)(slash - path - 1), path + 1, slash + 1);
        mem_free(names);
        names = next;
    }
    char *retry = *names ? mem_printf("\"methodConfig\":[{\"name\":[%s],\"retryPolicy\":{"
                                      "\"maxAttempts\":3,\"initialBackoff\":\"0.02s\","
                                      "\"maxBackoff\":\"0.2s\",\"backoffMultiplier\":2,"
                                      "\"retryableStatusCodes\":[\"UNAVAILABLE\"]}}]",
                                      names)
                         : mem_strdup("");
    const char *lb = cfg->round_robin ? "\"loadBalancingConfig\":[{\"round_robin\":{}}]" : "";
    char *out = mem_printf("{%s%s%s}", lb, *lb && *retry ? "," : "", retry);
    mem_free(retry);
    mem_free(names);
    return out;
}

grpc_channel *rpc_channel_create(const char *target, const rpc_channel_cfg_t *cfg)
{
    int max = cfg->max_message_bytes ? (int)cfg->max_message_bytes : 4 << 20;
    char *sc = client__service_config(cfg);
    grpc_arg args[7] = {
        {GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, {.integer = max}},
        {GRPC_ARG_INTEGER, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, {.integer = max}},
        /* On for every channel, with a retry policy only for the methods
         * listed: a call core knows the server never saw (sent as a GOAWAY
         * of connection age arrived, or refused past the GOAWAY's last
         * stream) is then sent again on another connection, whatever the
         * method; off, it failed UNAVAILABLE "GOAWAY received". */
        {GRPC_ARG_INTEGER, GRPC_ARG_ENABLE_RETRIES, {.integer = 1}},
        {GRPC_ARG_STRING, GRPC_ARG_SERVICE_CONFIG, {.string = sc}},
        {GRPC_ARG_INTEGER,
         GRPC_ARG_DNS_MIN_TIME_BETWEEN_RESOLUTIONS_MS,
         {.integer = RPC_CHANNEL_MIN_RERESOLVE_MS}},
    };
    size_t n = 5;
    if (cfg->own_subchannels)
        args[n++] =
            (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, {.integer = 1}};
    if (cfg->max_reconnect_backoff_ms > 0)
        args[n++] = (grpc_arg){GRPC_ARG_INTEGER,
                               GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
                               {.integer = cfg->max_reconnect_backoff_ms}};
    grpc_channel_args cargs = {n, args};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(target, creds, &cargs);
    grpc_channel_credentials_release(creds);
    mem_free(sc); /* core copied the arguments */
    return ch;
}

int rpc_channel_new(const char *target, size_t max_message_bytes, rpc_channel_t **out)
{
    *out = NULL;
    if (!target || !*target)
        return ERR_CONFIG;
    if (max_message_bytes == 0)
        max_message_bytes = 4u << 20;
    grpc_init();
    rpc_channel_t *c = mem_calloc(1, sizeof(*c));
    c->ch =
        rpc_channel_create(target, &(rpc_channel_cfg_t){.max_message_bytes = max_message_bytes});
    c->max_message = max_message_bytes;
    *out = c;
    return 0;
}

void rpc_channel_free(rpc_channel_t *ch)
{
    if (!ch)
        return;
    grpc_channel_destroy(ch->ch);
    mem_free(ch);
    grpc_shutdown();
}

grpc_channel *rpc_channel_grpc(rpc_channel_t *ch)
{
    return ch->ch;
}

/* ---- one call ---- */

static gpr_timespec client__deadline(const rpc_call_opts_t *opts)
{
    if (!opts || opts->timeout_ms <= 0)
        return gpr_inf_future(GPR_CLOCK_REALTIME);
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                        gpr_time_from_millis(opts->timeout_ms, GPR_TIMESPAN));
}

static grpc_call *client__create(rpc_channel_t *ch, grpc_completion_queue *cq, const char *method,
                                 const rpc_call_opts_t *opts)
{
    grpc_call *parent = opts && opts->parent ? rpc_call_grpc(opts->parent) : NULL;
    /* A copy: core's header compression may keep the :path after the call,
     * longer than a method name built in a call's arena. */
    grpc_slice m = grpc_slice_from_copied_string(method);
    grpc_call *call = grpc_channel_create_call(ch->ch, parent, GRPC_PROPAGATE_DEFAULTS, cq, m, NULL,
                                               client__deadline(opts), NULL);
    grpc_slice_unref(m);
    return call;
}

/* Builds the metadata array of opts in the arena. Keys and values are copied
 * into slices of their own: core's header compression may keep them after
 * the call, longer than the caller's strings. client__metadata_free drops
 * our references once the call is over. */
static grpc_metadata *client__metadata(const rpc_call_opts_t *opts, arena_t *a, size_t *n)
{
    *n = opts ? opts->n_metadata : 0;
    /* A call made from inside a handler continues the handler's trace,
     * unless the caller sends a traceparent of its own. */
    bool trace = opts && opts->parent;
    for (size_t i = 0; trace && i < *n; i++)
        trace = strcmp(opts->metadata[i].key, "traceparent") != 0;
    if (*n == 0 && !trace)
        return NULL;
    grpc_metadata *md = arena_calloc(a, *n + 1, sizeof(*md));
    for (size_t i = 0; i < *n; i++) {
        const rpc_md_t *m = &opts->metadata[i];
        md[i].key = grpc_slice_from_copied_string(m->key);
        md[i].value = grpc_slice_from_copied_buffer(m->value, m->len ? m->len : strlen(m->value));
    }
    if (trace) {
        char tp[56];
        rpc_call_traceparent(opts->parent, tp);
        md[*n].key = grpc_slice_from_static_string("traceparent");
        md[*n].value = grpc_slice_from_copied_string(tp);
        (*n)++;
    }
    return md;
}

/* The flags of the call's SEND_INITIAL_METADATA: wait-for-ready when asked. */
static uint32_t client__md_flags(const rpc_call_opts_t *opts)
{
    if (!opts || !opts->wait_for_ready)
        return 0;
    return GRPC_INITIAL_METADATA_WAIT_FOR_READY |
           GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET;
}

static void client__metadata_free(grpc_metadata *md, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        grpc_slice_unref(md[i].key);
        grpc_slice_unref(md[i].value);
    }
}

static bool client__run(grpc_completion_queue *cq, grpc_call *call, grpc_op *ops, size_t n)
{
    static char tag;
    if (grpc_call_start_batch(call, ops, n, &tag, NULL) != GRPC_CALL_OK)
        return false;
    grpc_event ev = grpc_completion_queue_pluck(cq, &tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    return ev.type == GRPC_OP_COMPLETE && ev.success;
}

static void client__cq_destroy(grpc_completion_queue *cq)
{
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_destroy(cq);
}

static ProtobufCBinaryData client__read(grpc_byte_buffer *bb, arena_t *a)
{
    ProtobufCBinaryData out = {0, NULL};
    grpc_byte_buffer_reader r;
    if (!grpc_byte_buffer_reader_init(&r, bb))
        return out;
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    out.len = GRPC_SLICE_LENGTH(s);
    out.data = arena_alloc(a, out.len ? out.len : 1);
    memcpy(out.data, GRPC_SLICE_START_PTR(s), out.len);
    grpc_slice_unref(s);
    return out;
}

/* Fills st from a received status and trailing metadata; returns the ERR code. */
static int client__status(rpc_status_t *st, grpc_status_code code, grpc_slice details,
                          const grpc_metadata_array *trailers, arena_t *a)
{
    st->code = code;
    st->message =
        arena_strndup(a, (const char *)GRPC_SLICE_START_PTR(details), GRPC_SLICE_LENGTH(details));
    st->details.len = 0;
    st->details.data = NULL;
    for (size_t i = 0; trailers && i < trailers->count; i++) {
        const grpc_metadata *m = &trailers->metadata[i];
        if (grpc_slice_str_cmp(m->key, "grpc-status-details-bin") == 0) {
            st->details.len = GRPC_SLICE_LENGTH(m->value);
            st->details.data = arena_alloc(a, st->details.len ? st->details.len : 1);
            memcpy(st->details.data, GRPC_SLICE_START_PTR(m->value), st->details.len);
        }
    }
    return err_from_grpc(code);
}

static void client__local_status(rpc_status_t *st, int err, const char *msg)
{
    st->code = err_to_grpc(err);
    st->message = msg;
    st->details.len = 0;
    st->details.data = NULL;
}

int rpc_unary_raw(rpc_channel_t *ch, const char *method, const uint8_t *req, size_t req_len,
                  arena_t *arena, const rpc_call_opts_t *opts, ProtobufCBinaryData *resp,
                  rpc_status_t *st)
{
    resp->len = 0;
    resp->data = NULL;
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_call *call = client__create(ch, cq, method, opts);
    size_t n_md = 0;
    grpc_metadata *md = client__metadata(opts, arena, &n_md);
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)req, req_len);
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    grpc_byte_buffer *recv = NULL;
    grpc_metadata_array initial, trailing;
    grpc_metadata_array_init(&initial);
    grpc_metadata_array_init(&trailing);
    grpc_status_code code = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();

    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].flags = client__md_flags(opts);
    ops[0].data.send_initial_metadata.count = n_md;
    ops[0].data.send_initial_metadata.metadata = md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.status = &code;
    ops[5].data.recv_status_on_client.status_details = &details;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing;

    int rc;
    if (!client__run(cq, call, ops, 6)) {
        rc = ERR_INTERNAL;
        client__local_status(st, rc, "the call could not be started");
    } else {
        rc = client__status(st, code, details, &trailing, arena);
        if (rc == 0 && recv)
            *resp = client__read(recv, arena);
        else if (rc == 0) {
            rc = ERR_INTERNAL;
            client__local_status(st, rc, "the server sent OK without a reply");
        }
    }
    if (recv)
        grpc_byte_buffer_destroy(recv);
    grpc_byte_buffer_destroy(send);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&initial);
    grpc_metadata_array_destroy(&trailing);
    grpc_call_unref(call);
    client__metadata_free(md, n_md);
    client__cq_destroy(cq);
    return rc;
}

int rpc_unary(rpc_channel_t *ch, const char *method, const ProtobufCMessage *req,
              const ProtobufCMessageDescriptor *resp_desc, arena_t *arena,
              const rpc_call_opts_t *opts, ProtobufCMessage **resp, rpc_status_t *st)
{
    *resp = NULL;
    size_t n = protobuf_c_message_get_packed_size(req);
    uint8_t *buf = arena_alloc(arena, n ? n : 1);
    protobuf_c_message_pack(req, buf);
    ProtobufCBinaryData raw;
    int rc = rpc_unary_raw(ch, method, buf, n, arena, opts, &raw, st);
    if (rc < 0)
        return rc;
    *resp = protobuf_c_message_unpack(resp_desc, arena_allocator(arena), raw.len, raw.data);
    if (!*resp) {
        client__local_status(st, ERR_INTERNAL, "the reply does not parse");
        return ERR_INTERNAL;
    }
    return 0;
}

/* ---- streams ---- */

int rpc_stream_open(rpc_channel_t *ch, const char *method, arena_t *arena,
                    const rpc_call_opts_t *opts, rpc_stream_t **out)
{
    rpc_stream_t *s = mem_calloc(1, sizeof(*s));
    s->cq = grpc_completion_queue_create_for_pluck(NULL);
    s->call = client__create(ch, s->cq, method, opts);
    s->arena = arena;
    s->max_message = ch->max_message;
    grpc_metadata_array_init(&s->initial_md);
    s->send_md = client__metadata(opts, arena, &s->n_send_md);
    grpc_op op = {0};
    op.op = GRPC_OP_SEND_INITIAL_METADATA;
    op.flags = client__md_flags(opts);
    op.data.send_initial_metadata.count = s->n_send_md;
    op.data.send_initial_metadata.metadata = s->send_md;
    /* A failure here shows up in the final status. */
    (void)client__run(s->cq, s->call, &op, 1);
    *out = s;
    return 0;
}

int rpc_stream_send_raw(rpc_stream_t *s, const uint8_t *data, size_t len)
{
    grpc_slice sl = grpc_slice_from_copied_buffer((const char *)data, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    grpc_op op = {0};
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = bb;
    bool ok = client__run(s->cq, s->call, &op, 1);
    grpc_byte_buffer_destroy(bb);
    return ok ? 0 : ERR_CANCELLED;
}

int rpc_stream_send(rpc_stream_t *s, const ProtobufCMessage *msg)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = mem_alloc(n ? n : 1);
    protobuf_c_message_pack(msg, buf);
    int rc = rpc_stream_send_raw(s, buf, n);
    mem_free(buf);
    return rc;
}

int rpc_stream_close_send(rpc_stream_t *s)
{
    if (s->send_closed)
        return 0;
    s->send_closed = true;
    grpc_op op = {0};
    op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    return client__run(s->cq, s->call, &op, 1) ? 0 : ERR_CANCELLED;
}

const char *rpc_stream_header(rpc_stream_t *s, const char *key)
{
    if (!s->md_received)
        return NULL;
    for (size_t i = 0; i < s->initial_md.count; i++) {
        const grpc_metadata *m = &s->initial_md.metadata[i];
        if (grpc_slice_str_cmp(m->key, key) == 0)
            return arena_strndup(s->arena, (const char *)GRPC_SLICE_START_PTR(m->value),
                                 GRPC_SLICE_LENGTH(m->value));
    }
    return NULL;
}

/* Adds RECV_INITIAL_METADATA to the first batch that receives anything;
 * returns the number of ops written to ops (0 or 1). */
static size_t client__initial_md_op(rpc_stream_t *s, grpc_op *ops)
{
    if (s->md_received)
        return 0;
    s->md_received = true;
    ops[0].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[0].data.recv_initial_metadata.recv_initial_metadata = &s->initial_md;
    return 1;
}

int rpc_stream_headers(rpc_stream_t *s)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    if (client__initial_md_op(s, &op) == 0)
        return 0;
    return client__run(s->cq, s->call, &op, 1) ? 0 : ERR_CANCELLED;
}

int rpc_stream_recv_raw(rpc_stream_t *s, ProtobufCBinaryData *msg)
{
    msg->len = 0;
    msg->data = NULL;
    grpc_byte_buffer *bb = NULL;
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    size_t n = client__initial_md_op(s, ops);
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n].data.recv_message.recv_message = &bb;
    n++;
    if (!client__run(s->cq, s->call, ops, n))
        return ERR_CANCELLED;
    if (!bb)
        return 0;
    *msg = client__read(bb, s->arena);
    grpc_byte_buffer_destroy(bb);
    return 1;
}

int rpc_stream_recv(rpc_stream_t *s, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **msg)
{
    *msg = NULL;
    ProtobufCBinaryData raw;
    int rc = rpc_stream_recv_raw(s, &raw);
    if (rc <= 0)
        return rc;
    *msg = protobuf_c_message_unpack(desc, arena_allocator(s->arena), raw.len, raw.data);
    return *msg ? 1 : ERR_INTERNAL;
}

void rpc_stream_cancel(rpc_stream_t *s)
{
    grpc_call_cancel(s->call, NULL);
}

int rpc_stream_finish(rpc_stream_t *s, rpc_status_t *st)
{
    grpc_metadata_array trailing;
    grpc_metadata_array_init(&trailing);
    grpc_status_code code = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[3];
    memset(ops, 0, sizeof(ops));
    size_t n = client__initial_md_op(s, ops);
    ops[n].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[n].data.recv_status_on_client.status = &code;
    ops[n].data.recv_status_on_client.status_details = &details;
    ops[n].data.recv_status_on_client.trailing_metadata = &trailing;
    n++;
    if (!s->send_closed) {
        /* The server may be waiting for the end of our stream; if the call
         * is already over, the status below says why. */
        s->send_closed = true;
        ops[n].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        n++;
    }
    int rc;
    if (client__run(s->cq, s->call, ops, n)) {
        rc = client__status(st, code, details, &trailing, s->arena);
    } else {
        rc = ERR_INTERNAL;
        client__local_status(st, rc, "the stream could not be finished");
    }
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&trailing);
    grpc_metadata_array_destroy(&s->initial_md);
    grpc_call_unref(s->call);
    client__metadata_free(s->send_md, s->n_send_md);
    client__cq_destroy(s->cq);
    mem_free(s);
    return rc;
}

size_t rpc_status_violations(const rpc_status_t *st, arena_t *arena, const char ***fields,
                             const char ***descriptions)
{
    *fields = NULL;
    *descriptions = NULL;
    if (!st->details.len)
        return 0;
    Google__Rpc__Status *s =
        google__rpc__status__unpack(arena_allocator(arena), st->details.len, st->details.data);
    if (!s)
        return 0;
    for (size_t i = 0; i < s->n_details; i++) {
        const Google__Protobuf__Any *any = s->details[i];
        const char *t = any->type_url ? strrchr(any->type_url, '/') : NULL;
        if (!t || strcmp(t + 1, "google.rpc.BadRequest") != 0)
            continue;
        Google__Rpc__BadRequest *br = google__rpc__bad_request__unpack(
            arena_allocator(arena), any->value.len, any->value.data);
        if (!br)
            return 0;
        *fields = arena_calloc(arena, br->n_field_violations + 1, sizeof(char *));
        *descriptions = arena_calloc(arena, br->n_field_violations + 1, sizeof(char *));
        for (size_t k = 0; k < br->n_field_violations; k++) {
            (*fields)[k] = br->field_violations[k]->field;
            (*descriptions)[k] = br->field_violations[k]->description;
        }
        return br->n_field_violations;
    }
    return 0;
}
