/* Internals shared by server.c (lifecycle and dispatch), call.c (what a
 * handler sees) and health.c. Not part of the public interface. */
#ifndef ONCEIOT_SERVER_INT_H
#define ONCEIOT_SERVER_INT_H

#include "onceiot/descset.h"
#include "onceiot/metrics.h"
#include "onceiot/rpc.h"
#include "onceiot/trace.h"

#include <pthread.h>
#include <stdatomic.h>

/* Every completion-queue tag is one of these (rpc.h), embedded in a larger
 * struct; the I/O thread calls fn with the batch's success flag. */
typedef rpc_tag_t srv_tag_t;

typedef struct srv_method {
    char *path; /* "/pkg.Svc/Method" */
    const ProtobufCMessageDescriptor *input;
    const ProtobufCMessageDescriptor *output;
    rpc_handler_fn fn;
    void *ctx; /* rpc_call_ctx */
    bool client_streaming;
    bool server_streaming;
    bool run_inline;        /* cheap and non-blocking: answer on the I/O thread */
    bool quiet;             /* log at debug level (health probes) */
    void *registered;       /* core's handle */
    metrics_rpc_t *metrics; /* grpc_server_* series; NULL while metrics are off */
} srv_method_t;

typedef struct srv_defer {
    void (*fn)(void *);
    void *arg;
    struct srv_defer *next;
} srv_defer_t;

typedef struct srv_violation {
    const char *field;
    const char *description;
    struct srv_violation *next;
} srv_violation_t;

struct rpc_call {
    rpc_server_t *srv;
    const srv_method_t *m; /* NULL for a call to an unregistered method */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;    /* request metadata, owned by the call */
    grpc_call_details details; /* method/host of unregistered calls */
    grpc_byte_buffer *payload; /* first message of unary/server-streaming calls */
    arena_t *arena;
    const char *method; /* path, in the arena or m->path */
    char *peer;         /* gpr_free */
    char request_id[65]; /* "" until taken from md, with trace */
    trace_ctx_t trace;
    int64_t start_ns;

    /* Outcome. */
    bool status_set;
    grpc_status_code code;
    const char *message;             /* in the arena */
    ProtobufCBinaryData details_bin; /* packed google.rpc.Status, in the arena */
    srv_violation_t *violations;     /* newest first */
    size_t n_violations;
    srv_defer_t *defers;
    void *local; /* rpc_call_local */

    /* Lifecycle: one reference for the close-on-server op, one for the reply. */
    atomic_int refs;
    srv_tag_t close_tag;
    int client_cancelled; /* written by core */
    atomic_bool cancelled;
    srv_tag_t finish_tag;
    grpc_slice finish_details; /* slices kept alive until the final batch completes */
    grpc_metadata trailer;
    grpc_metadata initial_md[2]; /* x-request-id, x-trace-id */
    bool has_trailer;
    bool initial_md_sent;

    /* Blocking operations of streaming handlers. */
    srv_tag_t sync_tag;
    pthread_mutex_t sync_mu;
    pthread_cond_t sync_cv;
    bool sync_done;
    bool sync_ok;
    grpc_byte_buffer *recv_buf;

    rpc_call_t *qnext; /* worker queue link */
};

/* call.c */
rpc_call_t *srv__call_new(rpc_server_t *srv, const srv_method_t *m, grpc_call *call,
                          gpr_timespec deadline);
/* Starts the final batch (initial metadata if unsent, the message if any and
 * the status). resp may be NULL. Consumes the reply reference. */
void srv__call_finish(rpc_call_t *c, const ProtobufCMessage *resp);
/* Drops one reference; the last one logs the call and frees it. */
void srv__call_unref(rpc_call_t *c);
/* Runs the handler (unpacking the first message), the defers and finishes. */
void srv__call_run(rpc_call_t *c);

/* server.c */
bool srv__draining(const rpc_server_t *srv);
size_t srv__max_message(const rpc_server_t *srv);
void srv__call_ended(rpc_server_t *srv);

/* health.c */
typedef struct srv_health srv_health_t;
srv_health_t *srv__health_new(void);
void srv__health_free(srv_health_t *h);
void srv__health_set(srv_health_t *h, const char *service, rpc_health_t st);
/* Every known name set to st (used at start and at drain). */
void srv__health_set_all(srv_health_t *h, rpc_health_t st);
void srv__health_add(srv_health_t *h, const char *service);
/* At the server's start: every name SERVING except those set before it
 * (srv__health_set), which keep the status their owner gave them. */
void srv__health_start(srv_health_t *h);
extern const rpc_service_impl_t srv__health_service; /* ctx: srv_health_t * */
/* Sets everything NOT_SERVING and ends Watch streams (after telling them). */
void srv__health_shutdown(srv_health_t *h);

#endif
