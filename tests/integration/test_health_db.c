/* Health tells the truth about the database: a real onceiot-testsvc goes
 * NOT_SERVING when PostgreSQL stops, refuses database calls quickly with
 * UNAVAILABLE meanwhile, and is SERVING again (and reconnected) once
 * PostgreSQL is back. Stops and starts the shared test cluster. */
#include "grpc/health/v1/health.pb-c.h"
#include "onceiot/client.h"
#include "pg_harness.h"
#include "proc_harness.h"
#include "test/v1/test.pb-c.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <time.h>

#define TEST_SERVICE "onceiot.test.v1.TestService"

enum { SERVING = 1, NOT_SERVING = 2 };

static ph_proc_t svc;
static rpc_channel_t *ch;
static arena_t *arena;

static void setup(void)
{
    ph_start_testsvc(&svc, NULL);
    cr_assert(rpc_channel_new(svc.addr, 0, &ch) == 0);
    arena = arena_new();
}

/* Reads a health Watch stream on its own thread and records each status. */
typedef struct watcher {
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    int statuses[16];
    int n;
    int finish_rc;
} watcher_t;

static watcher_t w = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void teardown(void)
{
    /* Whatever failed, the next test gets its cluster back. */
    pgh_start();
    if (svc.pid) {
        int code = ph_stop(&svc, SIGTERM, 20000);
        cr_expect_eq(code, 0, "testsvc exited with %d (log %s)", code, svc.log);
    }
    /* The drain ended any Watch stream, so the watcher has returned. */
    if (w.started)
        pthread_join(w.thread, NULL);
    rpc_channel_free(ch);
    arena_free(arena);
    cr_expect(!ph_log_has_sanitizer_report(&svc), "sanitizer report in %s", svc.log);
}

TestSuite(health_db, .init = setup, .fini = teardown, .timeout = 120);

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Inserts a row with a fresh name, with a 2 s deadline. */
static int insert(rpc_status_t *st)
{
    static int seq;
    char name[64];
    snprintf(name, sizeof(name), "item-%d-%lld", ++seq, (long long)now_ms());
    Onceiot__Test__V1__InsertRequest req = ONCEIOT__TEST__V1__INSERT_REQUEST__INIT;
    req.name = name;
    req.amount = 1;
    rpc_call_opts_t opts = {.timeout_ms = 2000};
    ProtobufCMessage *resp;
    return rpc_unary(ch, "/onceiot.test.v1.TestService/Insert", &req.base,
                     &onceiot__test__v1__insert_reply__descriptor, arena, &opts, &resp, st);
}

static bool wait_both(int want, int timeout_ms)
{
    return ph_wait_health(svc.addr, "", want, timeout_ms) &&
           ph_wait_health(svc.addr, TEST_SERVICE, want, timeout_ms);
}

Test(health_db, health_follows_the_database_and_calls_recover)
{
    rpc_status_t st;
    cr_assert_eq(ph_health(svc.addr, ""), SERVING);
    cr_assert_eq(ph_health(svc.addr, TEST_SERVICE), SERVING);
    cr_assert_eq(insert(&st), 0, "%s", st.message);

    pgh_stop();
    int64_t t0 = now_ms();
    cr_assert(wait_both(NOT_SERVING, 5000), "still not NOT_SERVING 5 s after the database stopped");
    cr_assert_lt(now_ms() - t0, 5000);

    t0 = now_ms();
    int rc = insert(&st);
    cr_assert_eq(rc, ERR_UNAVAILABLE, "got %s: %s", err_grpc_name(st.code), st.message);
    cr_assert_eq(st.code, GRPC_STATUS_UNAVAILABLE);
    cr_assert_lt(now_ms() - t0, 2500, "refused, not hung");
    cr_assert_eq(ph_health(svc.addr, ""), NOT_SERVING, "still up and answering");

    pgh_start();
    t0 = now_ms();
    cr_assert(wait_both(SERVING, 10000), "not SERVING 10 s after the database came back");
    /* The pool reconnects: a call succeeds soon after health recovered. */
    do {
        rc = insert(&st);
    } while (rc != 0 && now_ms() - t0 < 10000);
    cr_assert_eq(rc, 0, "no successful insert after the restart: %s", st.message);
    cr_assert(ph_log_contains(&svc, "\"event\":\"health_changed\""));
}

static int watched(int i)
{
    pthread_mutex_lock(&w.mu);
    int s = i < w.n ? w.statuses[i] : -1;
    pthread_mutex_unlock(&w.mu);
    return s;
}

static bool wait_watched(int index, int want, int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    while (now_ms() < end) {
        if (watched(index) == want)
            return true;
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL);
    }
    return false;
}

/* Watches "" until it has seen SERVING, NOT_SERVING, SERVING, then cancels;
 * the stream's deadline bounds it if that never happens. */
static void *watch_main(void *arg)
{
    (void)arg;
    arena_t *a = arena_new();
    rpc_call_opts_t opts = {.timeout_ms = 60000};
    rpc_stream_t *s;
    if (rpc_stream_open(ch, "/grpc.health.v1.Health/Watch", a, &opts, &s) < 0) {
        arena_free(a);
        return NULL;
    }
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = "";
    ProtobufCMessage *m;
    if (rpc_stream_send(s, &req.base) == 0 && rpc_stream_close_send(s) == 0) {
        while (rpc_stream_recv(s, &grpc__health__v1__health_check_response__descriptor, &m) == 1) {
            int st = (int)((Grpc__Health__V1__HealthCheckResponse *)m)->status;
            pthread_mutex_lock(&w.mu);
            if (w.n < 16)
                w.statuses[w.n++] = st;
            bool done = w.n >= 3;
            pthread_mutex_unlock(&w.mu);
            if (done)
                break;
        }
        rpc_stream_cancel(s);
    }
    rpc_status_t st;
    w.finish_rc = rpc_stream_finish(s, &st);
    arena_free(a);
    return NULL;
}

Test(health_db, a_watch_stream_sees_serving_not_serving_serving)
{
    cr_assert_eq(pthread_create(&w.thread, NULL, watch_main, NULL), 0);
    w.started = true;
    cr_assert(wait_watched(0, SERVING, 5000), "the first status is SERVING, sent at once");
    pgh_stop();
    cr_assert(wait_watched(1, NOT_SERVING, 5000), "NOT_SERVING within 5 s of the stop");
    pgh_start();
    cr_assert(wait_watched(2, SERVING, 10000), "SERVING within 10 s of the start");
    pthread_join(w.thread, NULL);
    w.started = false;
    cr_assert_eq(w.finish_rc, ERR_CANCELLED, "the stream stayed open until the client cancelled");
}
