/* The server: registration, completion-queue threads, the worker pool,
 * stream threads and the drain. What a handler sees of its call is in
 * call.c; the health service in health.c. */
#include "server_int.h"

#include "onceiot/log.h"
#include "reflection.h"

#include <errno.h>
#include <fcntl.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Requests kept posted per registered method; core queues calls beyond these
 * until a request is re-posted, which happens at once on arrival. */
enum { SRV_SLOTS_PER_METHOD = 8 };

typedef struct srv_slot {
    srv_tag_t tag;
    rpc_server_t *srv;
    srv_method_t *m; /* NULL: request_call for unregistered methods */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    grpc_call_details details;
} srv_slot_t;

struct rpc_server {
    rpc_server_opts_t opts;
    grpc_server *server;
    grpc_completion_queue *cq;
    descset_t *ds;
    const descset_t *reflect_ds; /* what reflection serves: ds unless replaced */
    srv_health_t *health;

    srv_method_t *methods;
    size_t n_methods;
    rpc_proxy_fn proxy;
    void *proxy_ctx;

    pthread_t *io;
    pthread_t *workers;
    bool started;

    pthread_mutex_t mu;     /* guards the fields below */
    pthread_cond_t work_cv; /* work queued or stopping */
    pthread_cond_t idle_cv; /* a call ended, or shutdown notified */
    rpc_call_t *q_head, *q_tail;
    int q_len;
    int streams;      /* stream threads running */
    int idle_workers; /* workers waiting on work_cv */
    bool stopping_workers;
    bool shutdown_notified;

    /* Counted without the lock: they change on every call, and only the
     * drain, which polls, waits for them to reach zero. */
    atomic_int calls; /* rpc_call_t alive */
    atomic_int slots; /* request slots posted */
    atomic_bool draining;
    int wake_pipe[2]; /* written by rpc_server_drain (signal-safe) */
    srv_tag_t shutdown_tag;
};

static void srv__shutdown_done(srv_tag_t *tag, bool ok);

static int64_t srv__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

bool srv__draining(const rpc_server_t *srv)
{
    return atomic_load(&srv->draining);
}

size_t srv__max_message(const rpc_server_t *srv)
{
    return srv->opts.max_message_bytes;
}

void srv__call_ended(rpc_server_t *srv)
{
    atomic_fetch_sub(&srv->calls, 1);
}

int rpc_server_new(const rpc_server_opts_t *opts, rpc_server_t **out)
{
    *out = NULL;
    if (opts->io_threads < 1 || opts->workers < 1 || opts->queue_limit < 1 ||
        opts->max_streams < 1 || opts->max_message_bytes < 1024 || opts->grace_ms < 0 ||
        opts->max_connection_age_ms < 0 || opts->max_connection_age_grace_ms < 0 || !opts->listen) {
        log_msg(LOG_ERROR, "server_config", "invalid server options");
        return ERR_CONFIG;
    }
    descset_t *ds = NULL;
    int rc = descset_load(opts->descset, opts->descset_len, &ds);
    if (rc < 0) {
        log_msg(LOG_ERROR, "server_config", "the embedded descriptor set does not parse");
        return rc;
    }
    grpc_init();
    rpc_server_t *srv = mem_calloc(1, sizeof(*srv));
    srv->opts = *opts;
    srv->opts.listen = mem_strdup(opts->listen);
    srv->ds = ds;
    srv->health = srv__health_new();
    srv->shutdown_tag.fn = srv__shutdown_done;
    pthread_mutex_init(&srv->mu, NULL);
    pthread_cond_init(&srv->work_cv, NULL);
    pthread_cond_init(&srv->idle_cv, NULL);
    if (pipe2(srv->wake_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
        abort();

    grpc_arg args[] = {
        {GRPC_ARG_INTEGER,
         GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
         {.integer = (int)opts->max_message_bytes}},
        {GRPC_ARG_INTEGER,
         GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
         {.integer = (int)opts->max_message_bytes}},
        {GRPC_ARG_INTEGER, GRPC_ARG_ALLOW_REUSEPORT, {.integer = 0}},
        /* Clients keep an HTTP/2 connection for ever unless told: an aged
         * connection gets a GOAWAY, so a client re-resolves the name and
         * spreads its calls over the replicas there now (new pods included);
         * its calls in flight finish within the grace. */
        {GRPC_ARG_INTEGER,
         GRPC_ARG_MAX_CONNECTION_AGE_MS,
         {.integer = opts->max_connection_age_ms ? opts->max_connection_age_ms : INT_MAX}},
        {GRPC_ARG_INTEGER,
         GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
         {.integer =
              opts->max_connection_age_grace_ms ? opts->max_connection_age_grace_ms : INT_MAX}},
    };
    grpc_channel_args cargs = {sizeof(args) / sizeof(args[0]), args};
    srv->server = grpc_server_create(&cargs, NULL);
    srv->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv->server, srv->cq, NULL);

    /* Built-in services, served by every binary. */
    srv->reflect_ds = srv->ds;
    if (rpc_server_add_service(srv, &srv__health_service, srv->health) < 0 ||
        rpc_server_add_service(srv, &reflection_v1_service, &srv->reflect_ds) < 0 ||
        rpc_server_add_service(srv, &reflection_v1alpha_service, &srv->reflect_ds) < 0) {
        rpc_server_free(srv);
        return ERR_INVALID_ARGUMENT;
    }
    *out = srv;
    return 0;
}

const descset_t *rpc_server_descset(const rpc_server_t *srv)
{
    return srv->ds;
}

void rpc_server_set_reflection(rpc_server_t *srv, const descset_t *ds)
{
    srv->reflect_ds = ds;
}

/* Finds the handler of a method in the service's table; NULL if absent. */
static rpc_handler_fn srv__find_handler(const rpc_service_impl_t *svc, const char *name)
{
    for (size_t i = 0; i < svc->n_methods; i++)
        if (strcmp(svc->methods[i].name, name) == 0)
            return svc->methods[i].fn;
    return NULL;
}

/* Checks a service table against its descriptor and the descriptor set
 * before anything is registered, so a refused table leaves no trace. */
static int srv__check_service(const rpc_server_t *srv, const rpc_service_impl_t *svc)
{
    const ProtobufCServiceDescriptor *d = svc->descriptor;
    for (size_t i = 0; i < svc->n_methods; i++) {
        bool found = false;
        for (unsigned j = 0; j < d->n_methods; j++)
            found = found || strcmp(d->methods[j].name, svc->methods[i].name) == 0;
        if (!found) {
            log_msg(LOG_ERROR, "server_config", "%s has no method %s", d->name,
                    svc->methods[i].name);
            return ERR_INVALID_ARGUMENT;
        }
    }
    for (unsigned j = 0; j < d->n_methods; j++) {
        char *path = mem_printf("/%s/%s", d->name, d->methods[j].name);
        const char *why = !srv__find_handler(svc, d->methods[j].name) ? "no handler"
                          : !descset_find_method(srv->ds, path)
                              ? "missing from the embedded descriptor set"
                              : NULL;
        for (size_t k = 0; !why && k < srv->n_methods; k++)
            if (strcmp(srv->methods[k].path, path) == 0)
                why = "registered twice";
        if (why)
            log_msg(LOG_ERROR, "server_config", "%s: %s", path, why);
        mem_free(path);
        if (why)
            return ERR_INVALID_ARGUMENT;
    }
    return 0;
}

int rpc_server_add_service(rpc_server_t *srv, const rpc_service_impl_t *svc, void *ctx)
{
    const ProtobufCServiceDescriptor *d = svc->descriptor;
    if (srv->started)
        return ERR_FAILED_PRECONDITION;
    int rc = srv__check_service(srv, svc);
    if (rc < 0)
        return rc;
    srv->methods =
        mem_realloc(srv->methods, (srv->n_methods + d->n_methods) * sizeof(srv_method_t));
    for (unsigned j = 0; j < d->n_methods; j++) {
        const ProtobufCMethodDescriptor *md = &d->methods[j];
        srv_method_t *m = &srv->methods[srv->n_methods++];
        memset(m, 0, sizeof(*m));
        m->path = mem_printf("/%s/%s", d->name, md->name);
        const descset_method_t *dm = descset_find_method(srv->ds, m->path);
        m->input = md->input;
        m->output = md->output;
        m->fn = srv__find_handler(svc, md->name);
        m->ctx = ctx;
        m->client_streaming = dm->client_streaming;
        m->server_streaming = dm->server_streaming;
        m->run_inline = svc == &srv__health_service && strcmp(md->name, "Check") == 0;
        m->quiet = svc == &srv__health_service;
        m->metrics = metrics_rpc_new(m->path, m->client_streaming, m->server_streaming, false);
        m->registered = grpc_server_register_method(
            srv->server, m->path, NULL,
            m->client_streaming ? GRPC_SRM_PAYLOAD_NONE : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER,
            0);
    }
    srv__health_add(srv->health, d->name);
    return 0;
}

void rpc_server_set_proxy(rpc_server_t *srv, rpc_proxy_fn fn, void *ctx)
{
    srv->proxy = fn;
    srv->proxy_ctx = ctx;
}

int rpc_server_queued(rpc_server_t *srv)
{
    pthread_mutex_lock(&srv->mu);
    int n = srv->q_len;
    pthread_mutex_unlock(&srv->mu);
    return n;
}

grpc_completion_queue *rpc_server_cq(rpc_server_t *srv)
{
    return srv->cq;
}

void rpc_server_set_health(rpc_server_t *srv, const char *service, rpc_health_t status)
{
    if (srv__draining(srv))
        return; /* a draining server stays NOT_SERVING */
    if (service)
        srv__health_set(srv->health, service, status);
    else
        srv__health_set_all(srv->health, status);
}

/* ---- request slots ---- */

static void srv__slot_done(srv_tag_t *tag, bool ok);

static void srv__slot_post(srv_slot_t *s)
{
    rpc_server_t *srv = s->srv;
    s->call = NULL;
    s->payload = NULL;
    grpc_metadata_array_init(&s->md);
    grpc_call_error e;
    if (s->m) {
        e = grpc_server_request_registered_call(
            srv->server, s->m->registered, &s->call, &s->deadline, &s->md,
            s->m->client_streaming ? NULL : &s->payload, srv->cq, srv->cq, &s->tag);
    } else {
        grpc_call_details_init(&s->details);
        e = grpc_server_request_call(srv->server, &s->call, &s->details, &s->md, srv->cq, srv->cq,
                                     &s->tag);
    }
    if (e != GRPC_CALL_OK) {
        /* Only happens while shutting down. */
        grpc_metadata_array_destroy(&s->md);
        if (!s->m)
            grpc_call_details_destroy(&s->details);
        atomic_fetch_sub(&srv->slots, 1);
        mem_free(s);
    }
}

static void srv__slot_new(rpc_server_t *srv, srv_method_t *m)
{
    srv_slot_t *s = mem_calloc(1, sizeof(*s));
    s->tag.fn = srv__slot_done;
    s->srv = srv;
    s->m = m;
    atomic_fetch_add(&srv->slots, 1);
    srv__slot_post(s);
}

static void *srv__stream_main(void *arg);
static void srv__enqueue(rpc_server_t *srv, rpc_call_t *c);

/* Answers a call on the I/O thread without running a handler. */
static void srv__reject(rpc_call_t *c, int err, const char *msg)
{
    rpc_fail(c, err, "%s", msg);
    srv__call_finish(c, NULL);
}

static void srv__dispatch(rpc_server_t *srv, rpc_call_t *c)
{
    if (srv__draining(srv)) {
        srv__reject(c, ERR_UNAVAILABLE, "the server is shutting down");
        return;
    }
    if (rpc_call_remaining_ms(c) == 0) {
        srv__reject(c, ERR_DEADLINE_EXCEEDED, "the deadline expired before the call started");
        return;
    }
    const srv_method_t *m = c->m;
    if (!m) {
        srv__reject(c, ERR_UNIMPLEMENTED, arena_printf(c->arena, "unknown method %s", c->method));
        return;
    }
    if (m->run_inline) {
        srv__call_run(c);
        return;
    }
    if (m->client_streaming || m->server_streaming) {
        pthread_mutex_lock(&srv->mu);
        bool room = srv->streams < srv->opts.max_streams;
        if (room)
            srv->streams++;
        pthread_mutex_unlock(&srv->mu);
        if (!room) {
            srv__reject(c, ERR_RESOURCE_EXHAUSTED, "too many concurrent streams");
            return;
        }
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        if (pthread_create(&t, &attr, srv__stream_main, c) != 0) {
            pthread_mutex_lock(&srv->mu);
            srv->streams--;
            pthread_mutex_unlock(&srv->mu);
            srv__reject(c, ERR_RESOURCE_EXHAUSTED, "cannot start a stream thread");
        }
        pthread_attr_destroy(&attr);
        return;
    }
    srv__enqueue(srv, c);
}

static void srv__slot_done(srv_tag_t *tag, bool ok)
{
    srv_slot_t *s = (srv_slot_t *)tag;
    rpc_server_t *srv = s->srv;
    if (!ok) {
        /* The server is shutting down: this request will not be re-posted. */
        grpc_metadata_array_destroy(&s->md);
        if (!s->m)
            grpc_call_details_destroy(&s->details);
        atomic_fetch_sub(&srv->slots, 1);
        mem_free(s);
        return;
    }
    if (!s->m && srv->proxy && !srv__draining(srv)) {
        /* The proxy owns the call, its metadata and details from here. */
        grpc_call *call = s->call;
        grpc_call_details details = s->details;
        grpc_metadata_array md = s->md;
        srv__slot_post(s);
        srv->proxy(srv->proxy_ctx, call, &details, &md);
        return;
    }
    atomic_fetch_add(&srv->calls, 1);
    rpc_call_t *c = srv__call_new(srv, s->m, s->call, s->deadline);
    c->md = s->md; /* ownership moves to the call */
    c->payload = s->payload;
    if (!s->m) {
        c->details = s->details;
        c->deadline = s->details.deadline; /* request_call reports it here */
        c->method = arena_strndup(c->arena, (const char *)GRPC_SLICE_START_PTR(s->details.method),
                                  GRPC_SLICE_LENGTH(s->details.method));
    }
    srv__slot_post(s);
    srv__dispatch(srv, c);
}

/* ---- workers and stream threads ---- */

static void srv__enqueue(rpc_server_t *srv, rpc_call_t *c)
{
    pthread_mutex_lock(&srv->mu);
    if (srv->q_len >= srv->opts.queue_limit) {
        pthread_mutex_unlock(&srv->mu);
        srv__reject(c, ERR_RESOURCE_EXHAUSTED, "the server is overloaded; retry later");
        return;
    }
    c->qnext = NULL;
    if (srv->q_tail)
        srv->q_tail->qnext = c;
    else
        srv->q_head = c;
    srv->q_tail = c;
    srv->q_len++;
    /* A busy worker takes the next call itself when it finishes. */
    if (srv->idle_workers > 0)
        pthread_cond_signal(&srv->work_cv);
    pthread_mutex_unlock(&srv->mu);
}

static void *srv__worker_main(void *arg)
{
    rpc_server_t *srv = arg;
    pthread_mutex_lock(&srv->mu);
    for (;;) {
        while (!srv->q_head && !srv->stopping_workers) {
            srv->idle_workers++;
            pthread_cond_wait(&srv->work_cv, &srv->mu);
            srv->idle_workers--;
        }
        if (!srv->q_head)
            break;
        rpc_call_t *c = srv->q_head;
        srv->q_head = c->qnext;
        if (!srv->q_head)
            srv->q_tail = NULL;
        srv->q_len--;
        pthread_mutex_unlock(&srv->mu);
        srv__call_run(c);
        pthread_mutex_lock(&srv->mu);
    }
    pthread_mutex_unlock(&srv->mu);
    return NULL;
}

static void *srv__stream_main(void *arg)
{
    rpc_call_t *c = arg;
    rpc_server_t *srv = c->srv;
    srv__call_run(c);
    pthread_mutex_lock(&srv->mu);
    srv->streams--;
    pthread_mutex_unlock(&srv->mu);
    return NULL;
}

static void *srv__io_main(void *arg)
{
    rpc_server_t *srv = arg;
    for (;;) {
        grpc_event ev =
            grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        srv_tag_t *tag = ev.tag;
        tag->fn(tag, ev.success != 0);
    }
    return NULL;
}

static void srv__shutdown_done(srv_tag_t *tag, bool ok)
{
    (void)ok;
    rpc_server_t *srv = (rpc_server_t *)((char *)tag - offsetof(rpc_server_t, shutdown_tag));
    pthread_mutex_lock(&srv->mu);
    srv->shutdown_notified = true;
    pthread_cond_broadcast(&srv->idle_cv);
    pthread_mutex_unlock(&srv->mu);
}

int rpc_server_start(rpc_server_t *srv, int *port_out)
{
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(srv->server, srv->opts.listen, creds);
    grpc_server_credentials_release(creds);
    if (port == 0) {
        log_msg(LOG_ERROR, "listen_failed", "cannot listen on %s (address in use or invalid)",
                srv->opts.listen);
        return ERR_UNAVAILABLE;
    }
    grpc_server_start(srv->server);
    srv->started = true;
    srv__health_start(srv->health);

    for (size_t i = 0; i < srv->n_methods; i++)
        for (int k = 0; k < SRV_SLOTS_PER_METHOD; k++)
            srv__slot_new(srv, &srv->methods[i]);
    for (int k = 0; k < SRV_SLOTS_PER_METHOD; k++)
        srv__slot_new(srv, NULL);

    srv->io = mem_calloc((size_t)srv->opts.io_threads, sizeof(pthread_t));
    for (int i = 0; i < srv->opts.io_threads; i++)
        pthread_create(&srv->io[i], NULL, srv__io_main, srv);
    srv->workers = mem_calloc((size_t)srv->opts.workers, sizeof(pthread_t));
    for (int i = 0; i < srv->opts.workers; i++)
        pthread_create(&srv->workers[i], NULL, srv__worker_main, srv);

    if (port_out)
        *port_out = port;
    log_rec_t r;
    log_begin(&r, LOG_INFO, "server_started");
    log_str(&r, "listen", srv->opts.listen);
    log_int(&r, "port", port);
    log_int(&r, "workers", srv->opts.workers);
    log_int(&r, "io_threads", srv->opts.io_threads);
    log_end(&r);
    return 0;
}

void rpc_server_drain(rpc_server_t *srv)
{
    /* Only async-signal-safe calls here: an atomic store and write(2). */
    atomic_store(&srv->draining, true);
    char b = 1;
    ssize_t w = write(srv->wake_pipe[1], &b, 1);
    (void)w;
}

/* Waits on idle_cv until pred(srv) holds or deadline_ns passes; returns pred. */
static bool srv__wait_until(rpc_server_t *srv, bool (*pred)(rpc_server_t *), int64_t deadline_ns)
{
    pthread_mutex_lock(&srv->mu);
    while (!pred(srv)) {
        int64_t left = deadline_ns - srv__now_ns();
        if (left <= 0)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t ns = ts.tv_nsec + (left < 100000000 ? left : 100000000);
        ts.tv_sec += ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        pthread_cond_timedwait(&srv->idle_cv, &srv->mu, &ts);
    }
    bool ok = pred(srv);
    pthread_mutex_unlock(&srv->mu);
    return ok;
}

static bool srv__is_shut(rpc_server_t *srv)
{
    return srv->shutdown_notified;
}

static bool srv__is_idle(rpc_server_t *srv)
{
    return srv->shutdown_notified && atomic_load(&srv->calls) == 0 && atomic_load(&srv->slots) == 0;
}

int rpc_server_wait(rpc_server_t *srv)
{
    struct pollfd pfd = {.fd = srv->wake_pipe[0], .events = POLLIN};
    while (!srv__draining(srv)) {
        if (poll(&pfd, 1, 1000) < 0 && errno != EINTR)
            break;
    }
    int64_t t0 = srv__now_ns();
    log_msg(LOG_INFO, "drain_started", "refusing new calls; in-flight calls have %d ms",
            srv->opts.grace_ms);
    srv__health_shutdown(srv->health);
    grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->shutdown_tag);

    int rc = 0;
    int64_t grace_end = t0 + (int64_t)srv->opts.grace_ms * 1000000;
    if (!srv__wait_until(srv, srv__is_shut, grace_end)) {
        rc = ERR_DEADLINE_EXCEEDED;
        log_msg(LOG_WARN, "drain_grace_expired", "cancelling the calls still in flight");
        grpc_server_cancel_all_calls(srv->server);
    }
    /* After the cancel, handlers still blocked (e.g. in SQL) finish within
     * their statement timeout; core is done with every call once they do. */
    srv__wait_until(srv, srv__is_idle, INT64_MAX);

    pthread_mutex_lock(&srv->mu);
    srv->stopping_workers = true;
    pthread_cond_broadcast(&srv->work_cv);
    pthread_mutex_unlock(&srv->mu);
    for (int i = 0; i < srv->opts.workers; i++)
        pthread_join(srv->workers[i], NULL);
    grpc_completion_queue_shutdown(srv->cq);
    for (int i = 0; i < srv->opts.io_threads; i++)
        pthread_join(srv->io[i], NULL);
    srv->started = false;

    log_rec_t r;
    log_begin(&r, LOG_INFO, "drain_finished");
    log_int(&r, "duration_ms", (srv__now_ns() - t0) / 1000000);
    log_bool(&r, "clean", rc == 0);
    log_end(&r);
    return rc;
}

void rpc_server_free(rpc_server_t *srv)
{
    if (!srv)
        return;
    if (srv->started) {
        /* Freeing a running server is a programming error: drain first. */
        abort();
    }
    if (srv->io == NULL) {
        /* Never started: core still wants a shutdown before destroy. */
        grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->shutdown_tag);
        srv->shutdown_tag.fn = NULL;
        grpc_completion_queue_shutdown(srv->cq);
        while (
            grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
            GRPC_QUEUE_SHUTDOWN) {
        }
    }
    grpc_server_destroy(srv->server);
    grpc_completion_queue_destroy(srv->cq);
    for (size_t i = 0; i < srv->n_methods; i++)
        mem_free(srv->methods[i].path);
    mem_free(srv->methods);
    mem_free(srv->io);
    mem_free(srv->workers);
    srv__health_free(srv->health);
    descset_free(srv->ds);
    close(srv->wake_pipe[0]);
    close(srv->wake_pipe[1]);
    pthread_mutex_destroy(&srv->mu);
    pthread_cond_destroy(&srv->work_cv);
    pthread_cond_destroy(&srv->idle_cv);
    mem_free((char *)srv->opts.listen);
    mem_free(srv);
    grpc_shutdown();
}
