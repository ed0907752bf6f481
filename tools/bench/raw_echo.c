/* onceiot-raw-echo PORT [SLOTS]
 *
 * The baseline of tools/bench/run: the leanest correct unary server on the
 * same gRPC core the runtime uses, without the runtime. It serves
 * /onceiot.test.v1.TestService/Echo on 127.0.0.1:PORT by sending the request
 * bytes back unchanged (an EchoRequest with only its text set is a valid
 * EchoReply), and answers any other method UNIMPLEMENTED. One thread drives
 * one completion queue and answers every call inline with a single batch;
 * SLOTS (default 64) requests are kept posted. SIGTERM or SIGINT shut it
 * down cleanly. */
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ECHO_MAX_SLOTS = 1024, ECHO_GRACE_MS = 2000 };

#define ECHO_METHOD "/onceiot.test.v1.TestService/Echo"

/* A slot is one posted request, then the reply batch of the call it
 * received, then a posted request again. Its address is its tag. */
typedef struct echo_slot {
    bool generic;  /* request_call (any method) instead of Echo */
    bool replying; /* the reply batch is in flight */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_call_details details; /* generic slots only */
    grpc_byte_buffer *payload; /* Echo slots only: the request message */
    int cancelled;             /* written by core */
} echo_slot_t;

typedef struct echo_server {
    grpc_server *server;
    grpc_completion_queue *cq;
    void *method; /* core's handle of ECHO_METHOD */
    echo_slot_t slots[ECHO_MAX_SLOTS];
    int n_slots;
    int live;             /* slots with a request or a batch outstanding */
    atomic_bool stopping; /* set by the signal thread before shutdown */
    char shutdown_tag;    /* its address is the shutdown notification's tag */
    sigset_t signals;
} echo_server_t;

/* Posts the slot's request; on failure (only while shutting down) the slot
 * is retired. */
static void echo_post(echo_server_t *es, echo_slot_t *s)
{
    s->call = NULL;
    s->payload = NULL;
    s->replying = false;
    grpc_metadata_array_init(&s->md);
    grpc_call_error e;
    if (s->generic) {
        grpc_call_details_init(&s->details);
        e = grpc_server_request_call(es->server, &s->call, &s->details, &s->md, es->cq, es->cq, s);
    } else {
        e = grpc_server_request_registered_call(es->server, es->method, &s->call, &s->deadline,
                                                &s->md, &s->payload, es->cq, es->cq, s);
    }
    if (e != GRPC_CALL_OK) {
        grpc_metadata_array_destroy(&s->md);
        if (s->generic)
            grpc_call_details_destroy(&s->details);
        es->live--;
    }
}

/* Releases what the slot's call held; re-posts the slot unless the server is
 * stopping, in which case the slot is retired. */
static void echo_release(echo_server_t *es, echo_slot_t *s)
{
    if (s->call)
        grpc_call_unref(s->call);
    if (s->payload)
        grpc_byte_buffer_destroy(s->payload);
    grpc_metadata_array_destroy(&s->md);
    if (s->generic)
        grpc_call_details_destroy(&s->details);
    if (atomic_load(&es->stopping))
        es->live--;
    else
        echo_post(es, s);
}

/* Answers the call just received with one batch: initial metadata, the
 * request bytes back (Echo) and the status, plus the close-on-server op so
 * the batch completes only when core is done with the call. */
static void echo_reply(echo_server_t *es, echo_slot_t *s)
{
    grpc_op ops[4];
    size_t n = 0;
    memset(ops, 0, sizeof(ops));
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    grpc_status_code code = GRPC_STATUS_OK;
    grpc_slice details = grpc_empty_slice();
    if (s->generic) {
        code = GRPC_STATUS_UNIMPLEMENTED;
        details = grpc_slice_from_static_string("unknown method");
    } else if (!s->payload) {
        code = GRPC_STATUS_INVALID_ARGUMENT;
        details = grpc_slice_from_static_string("a unary call needs one message");
    } else {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = s->payload;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = code;
    ops[n++].data.send_status_from_server.status_details = &details;
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n++].data.recv_close_on_server.cancelled = &s->cancelled;
    s->replying = true;
    if (grpc_call_start_batch(s->call, ops, n, s, NULL) != GRPC_CALL_OK) {
        /* Not expected with a well-formed batch; the call is dropped. */
        fprintf(stderr, "onceiot-raw-echo: grpc_call_start_batch failed\n");
        echo_release(es, s);
    }
}

static void echo_on_event(echo_server_t *es, echo_slot_t *s, bool ok)
{
    if (s->replying || !ok) {
        /* A finished reply, or a request cancelled by shutdown. */
        echo_release(es, s);
        return;
    }
    echo_reply(es, s);
}

/* Waits for SIGTERM or SIGINT (blocked in every thread), then starts the
 * shutdown; the event loop notices and finishes it. */
static void *echo_signal_main(void *arg)
{
    echo_server_t *es = arg;
    int sig;
    sigwait(&es->signals, &sig);
    atomic_store(&es->stopping, true);
    grpc_server_shutdown_and_notify(es->server, es->cq, &es->shutdown_tag);
    return NULL;
}

/* Runs the completion queue until the shutdown notification has come and
 * every slot is retired. In-flight calls get ECHO_GRACE_MS, then are
 * cancelled. */
static void echo_loop(echo_server_t *es)
{
    const gpr_timespec forever = gpr_inf_future(GPR_CLOCK_MONOTONIC);
    gpr_timespec wait_until = forever;
    bool notified = false;
    bool grace_started = false;
    while (!notified || es->live > 0) {
        if (!grace_started && atomic_load(&es->stopping)) {
            grace_started = true;
            wait_until = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                      gpr_time_from_millis(ECHO_GRACE_MS, GPR_TIMESPAN));
        }
        grpc_event ev = grpc_completion_queue_next(es->cq, wait_until, NULL);
        if (ev.type == GRPC_QUEUE_TIMEOUT) {
            /* The grace is over: cancel what is still in flight; its batches
             * then complete and retire their slots. */
            grpc_server_cancel_all_calls(es->server);
            wait_until = forever;
            continue;
        }
        if (ev.type != GRPC_OP_COMPLETE)
            break;
        if (ev.tag == &es->shutdown_tag)
            notified = true;
        else
            echo_on_event(es, ev.tag, ev.success != 0);
    }
}

int main(int argc, char **argv)
{
    static echo_server_t es;
    long port = argc >= 2 ? strtol(argv[1], NULL, 10) : 0;
    long slots = argc >= 3 ? strtol(argv[2], NULL, 10) : 64;
    if (argc < 2 || argc > 3 || port < 1 || port > 65535 || slots < 1 ||
        slots > ECHO_MAX_SLOTS - 1) {
        fprintf(stderr, "usage: onceiot-raw-echo PORT [SLOTS (1-%d)]\n", ECHO_MAX_SLOTS - 1);
        return 2;
    }
    /* Blocked before grpc_init so that core's own threads inherit the mask
     * and only the signal thread ever takes these signals. */
    sigemptyset(&es.signals);
    sigaddset(&es.signals, SIGTERM);
    sigaddset(&es.signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &es.signals, NULL);

    grpc_init();
    grpc_arg args[] = {{GRPC_ARG_INTEGER, GRPC_ARG_ALLOW_REUSEPORT, {.integer = 0}}};
    grpc_channel_args cargs = {1, args};
    es.server = grpc_server_create(&cargs, NULL);
    es.cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(es.server, es.cq, NULL);
    es.method = grpc_server_register_method(es.server, ECHO_METHOD, NULL,
                                            GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%ld", port);
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    int bound = grpc_server_add_http2_port(es.server, addr, creds);
    grpc_server_credentials_release(creds);
    int rc = 0;
    if (bound == 0) {
        fprintf(stderr, "onceiot-raw-echo: cannot listen on %s\n", addr);
        rc = 1;
        /* Core wants a shutdown before destroy even if never started. */
        grpc_server_shutdown_and_notify(es.server, es.cq, &es.shutdown_tag);
        grpc_completion_queue_shutdown(es.cq);
        while (grpc_completion_queue_next(es.cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
               GRPC_QUEUE_SHUTDOWN) {
        }
        goto out;
    }
    grpc_server_start(es.server);

    /* Slot 0 takes calls to unknown methods, the rest take Echo calls. */
    es.n_slots = (int)slots + 1;
    for (int i = 0; i < es.n_slots; i++) {
        es.slots[i].generic = i == 0;
        es.live++;
        echo_post(&es, &es.slots[i]);
    }
    pthread_t sig_thread;
    pthread_create(&sig_thread, NULL, echo_signal_main, &es);
    printf("onceiot-raw-echo: listening on %s with %ld slots\n", addr, slots);
    fflush(stdout);

    echo_loop(&es);
    pthread_join(sig_thread, NULL);
    grpc_completion_queue_shutdown(es.cq);
    while (grpc_completion_queue_next(es.cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
out:
    grpc_server_destroy(es.server);
    grpc_completion_queue_destroy(es.cq);
    grpc_shutdown();
    return rc;
}
