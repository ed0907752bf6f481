/* The gRPC client for service-to-service calls.
 *
 * A channel is one persistent HTTP/2 connection (re-established by core as
 * needed) to one target; share it between threads. Calls are synchronous:
 * each runs on its own completion queue and blocks the calling thread.
 *
 * When a call is made from inside a handler, pass that call as the parent:
 * its deadline and cancellation propagate to the outgoing call.
 *
 * Results: every call fills an rpc_status_t. The function returns 0 when the
 * status is OK and otherwise the ERR_* code for the status (err_from_grpc),
 * so `if (rpc_unary(...) < 0)` is the whole check. */
#ifndef ONCEIOT_CLIENT_H
#define ONCEIOT_CLIENT_H

#include "onceiot/err.h"
#include "onceiot/mem.h"
#include "onceiot/rpc.h"
#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>

typedef struct rpc_channel rpc_channel_t;

typedef struct rpc_status {
    grpc_status_code code;
    const char *message;         /* in the arena; "" when none */
    ProtobufCBinaryData details; /* serialized google.rpc.Status, or empty */
} rpc_status_t;

typedef struct rpc_md {
    const char *key; /* lower-case; "-bin" suffix for binary values */
    const char *value;
    size_t len; /* 0 means strlen(value) */
} rpc_md_t;

typedef struct rpc_call_opts {
    int64_t timeout_ms;       /* 0: none (or the parent's deadline) */
    rpc_call_t *parent;       /* server call to inherit deadline and cancellation from */
    const rpc_md_t *metadata; /* sent with the call */
    size_t n_metadata;
    /* Wait while the channel (re)connects instead of failing at once with
     * UNAVAILABLE; the deadline bounds the wait, so set one. */
    bool wait_for_ready;
} rpc_call_opts_t;

/* How a core channel is made. With round_robin, a channel spreads its calls
 * over all the addresses its target resolves to ("dns:///sims:50062" on a
 * headless Service: one per pod; "ipv4:127.0.0.1:1,127.0.0.1:2"); otherwise
 * core's pick_first sends everything over one connection (but, unlike round
 * robin, queues a call on a broken connection while it reconnects instead of
 * failing it: the callers' kill-and-restart behaviour is built on that). It
 * re-resolves when a server ends a connection (ONCEIOT_MAX_CONNECTION_AGE_MS)
 * and at most every RPC_CHANNEL_MIN_RERESOLVE_MS. */
#define RPC_CHANNEL_MIN_RERESOLVE_MS 5000
typedef struct rpc_channel_cfg {
    size_t max_message_bytes;         /* both directions; 0: 4 MiB */
    const char *const *retry_methods; /* "/pkg.Svc/Method" safe to repeat: retried on UNAVAILABLE */
    size_t n_retry_methods;           /* 0: retries off, a failure is seen at once */
    int max_reconnect_backoff_ms;     /* 0: core's (grows to 120 s) */
    bool own_subchannels;             /* a subchannel pool (so connections) of its own */
    bool round_robin;                 /* spread calls over every address (else pick_first) */
} rpc_channel_cfg_t;
/* The one place channels are made: a core channel to target with cfg
 * (grpc_channel_destroy it). */
grpc_channel *rpc_channel_create(const char *target, const rpc_channel_cfg_t *cfg);

/* Opens a channel to target ("127.0.0.1:50061", "dns:///sims:50061") made by
 * rpc_channel_create: pick_first, retries off so a failure is seen at once;
 * max_message_bytes bounds both directions (0: 4 MiB). */
int rpc_channel_new(const char *target, size_t max_message_bytes,
                    rpc_channel_t **out) ONCEIOT_MUSTCHECK;
void rpc_channel_free(rpc_channel_t *ch);
/* The core channel, for code that proxies (the gateway). */
grpc_channel *rpc_channel_grpc(rpc_channel_t *ch);

/* A typed unary call. *resp is unpacked into the arena with resp_desc. */
int rpc_unary(rpc_channel_t *ch, const char *method, const ProtobufCMessage *req,
              const ProtobufCMessageDescriptor *resp_desc, arena_t *arena,
              const rpc_call_opts_t *opts, ProtobufCMessage **resp, rpc_status_t *st);
/* The same with bytes forwarded unchanged both ways. */
int rpc_unary_raw(rpc_channel_t *ch, const char *method, const uint8_t *req, size_t req_len,
                  arena_t *arena, const rpc_call_opts_t *opts, ProtobufCBinaryData *resp,
                  rpc_status_t *st);

/* A streaming call of any kind. Send and receive may be interleaved from one
 * thread; rpc_stream_finish must end every opened stream. */
typedef struct rpc_stream rpc_stream_t;

int rpc_stream_open(rpc_channel_t *ch, const char *method, arena_t *arena,
                    const rpc_call_opts_t *opts, rpc_stream_t **out) ONCEIOT_MUSTCHECK;
int rpc_stream_send(rpc_stream_t *s, const ProtobufCMessage *msg) ONCEIOT_MUSTCHECK;
int rpc_stream_send_raw(rpc_stream_t *s, const uint8_t *data, size_t len) ONCEIOT_MUSTCHECK;
/* Half-closes: the server sees the end of the client's stream. */
int rpc_stream_close_send(rpc_stream_t *s) ONCEIOT_MUSTCHECK;
/* Waits for the server's response headers (initial metadata), which a
 * server may send before its first message to say it is ready. Returns 0,
 * or ERR_CANCELLED when the call ended without them. A server that fails
 * the call sends headers with its status: then the next rpc_stream_recv
 * ends the stream and rpc_stream_finish has the status. */
int rpc_stream_headers(rpc_stream_t *s) ONCEIOT_MUSTCHECK;
/* The first value of response header key (lower-case) once the headers are
 * in (rpc_stream_headers or a receive returned), copied into the stream's
 * arena; NULL when the server sent no such header. */
const char *rpc_stream_header(rpc_stream_t *s, const char *key);
/* 1 with *msg set, 0 at the end of the server's stream, <0 on error. */
int rpc_stream_recv(rpc_stream_t *s, const ProtobufCMessageDescriptor *desc,
                    ProtobufCMessage **msg) ONCEIOT_MUSTCHECK;
int rpc_stream_recv_raw(rpc_stream_t *s, ProtobufCBinaryData *msg) ONCEIOT_MUSTCHECK;
/* Cancels the call (the server sees CANCELLED). */
void rpc_stream_cancel(rpc_stream_t *s);
/* Waits for the final status, frees the stream, returns like rpc_unary. */
int rpc_stream_finish(rpc_stream_t *s, rpc_status_t *st);

/* Decodes the BadRequest field violations in a status's details into
 * parallel arrays in the arena. Returns the number found (0 if none). */
size_t rpc_status_violations(const rpc_status_t *st, arena_t *arena, const char ***fields,
                             const char ***descriptions);

#endif
