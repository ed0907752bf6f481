/* The outbox dispatcher's lease against a real cluster: two dispatchers on
 * one table with a handler slower than the lease allows for a whole claim
 * never deliver one row at overlapping times, and rows left leased by a
 * dispatcher that died are delivered by another once the lease ran out. */
#include "onceiot/db.h"
#include "onceiot/mem.h"
#include "onceiot/outbox.h"
#include "pg_harness.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TOPIC      "test.slow"
#define LEASE_MS   1000 /* the dispatchers' lease */
#define HANDLER_MS 150  /* time a slow delivery takes: 10 of them outlast the lease */
#define BATCH      10
#define N_ROWS     10
#define MAX_SENDS  8 /* deliveries recorded per row */
#define WAIT_MS    20000

static char *schema;

typedef struct send {
    int who;            /* the dispatcher: 0 or 1 */
    int attempts;       /* as the handler saw it */
    int64_t start, end; /* monotonic, microseconds */
} send_t;

/* What the handlers saw, per row (key "k<i>"). */
typedef struct record {
    pthread_mutex_t mu;
    int handler_ms;
    send_t sends[N_ROWS][MAX_SENDS];
    int n[N_ROWS];
    int strays; /* keys out of range or more than MAX_SENDS deliveries */
} record_t;

typedef struct disp {
    record_t *rec;
    int who;
    db_pool_t *pool;
    outbox_topic_t topic;
    outbox_t *ob;
} disp_t;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void pause_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* A callee that answers, slowly: records when each delivery ran. */
static outbox_verdict_t slow_handler(void *ctx, const outbox_msg_t *msg, arena_t *a,
                                     const char **why)
{
    (void)a;
    (void)why;
    disp_t *d = ctx;
    int64_t start = now_us();
    if (d->rec->handler_ms > 0)
        pause_ms(d->rec->handler_ms); /* the callee's work, not synchronisation */
    int64_t end = now_us();
    int i = msg->key[0] == 'k' ? atoi(msg->key + 1) : -1;
    pthread_mutex_lock(&d->rec->mu);
    if (i < 0 || i >= N_ROWS || d->rec->n[i] >= MAX_SENDS)
        d->rec->strays++;
    else
        d->rec->sends[i][d->rec->n[i]++] =
            (send_t){.who = d->who, .attempts = msg->attempts, .start = start, .end = end};
    pthread_mutex_unlock(&d->rec->mu);
    return OUTBOX_DONE;
}

static void setup(void)
{
    schema = pgh_fresh_schema("test_outbox");
    char *sql = mem_printf("BEGIN; SET LOCAL search_path TO %s; %s COMMIT;", schema,
                           outbox_migrations[0].sql);
    PQclear(pgh_sql(sql));
    mem_free(sql);
}

static void teardown(void)
{
    pgh_drop_schema(schema);
    mem_free(schema);
}

TestSuite(outbox, .init = setup, .fini = teardown);

static void put_rows(int n)
{
    char *sql = mem_printf("INSERT INTO %s.outbox (topic, key, payload) SELECT '" TOPIC
                           "', 'k' || g, '\\x00'::bytea FROM generate_series(0, %d) g",
                           schema, n - 1);
    PQclear(pgh_sql(sql));
    mem_free(sql);
}

static long count_where(const char *cond)
{
    char *sql = mem_printf("SELECT count(*) FROM %s.outbox WHERE %s", schema, cond);
    PGresult *r = pgh_sql(sql);
    long n = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    mem_free(sql);
    return n;
}

/* Waits (bounded) until count_where(cond) is want; true when it was. */
static bool wait_count(const char *cond, long want)
{
    int64_t until = now_us() + (int64_t)WAIT_MS * 1000;
    while (count_where(cond) != want) {
        if (now_us() > until)
            return false;
        pause_ms(20);
    }
    return true;
}

static void disp_start(disp_t *d, record_t *rec, int who)
{
    d->rec = rec;
    d->who = who;
    db_opts_t dbo = {.url = pgh_url(),
                     .schema = schema,
                     .size = 2,
                     .statement_timeout_ms = 5000,
                     .connect_timeout_ms = 2000};
    cr_assert_eq(db_pool_open(&dbo, &d->pool), 0);
    d->topic = (outbox_topic_t){.topic = TOPIC, .fn = slow_handler, .ctx = d};
    outbox_opts_t o = {.pool = d->pool,
                       .service = who ? "outbox_test_b" : "outbox_test_a",
                       .topics = &d->topic,
                       .n_topics = 1,
                       .batch = BATCH,
                       .lease_ms = LEASE_MS,
                       .poll_ms = 50};
    cr_assert_eq(outbox_start(&o, &d->ob), 0);
}

static void disp_stop(disp_t *d)
{
    outbox_stop(d->ob);
    db_pool_close(d->pool);
}

static void record_init(record_t *rec, int handler_ms)
{
    memset(rec, 0, sizeof(*rec));
    pthread_mutex_init(&rec->mu, NULL);
    rec->handler_ms = handler_ms;
}

Test(outbox, two_dispatchers_never_deliver_one_row_at_overlapping_times, .timeout = 60)
{
    record_t rec;
    record_init(&rec, HANDLER_MS);
    put_rows(N_ROWS);
    disp_t a, b;
    /* a claims every row (one claim holds more than its lease can deliver),
     * then b joins and takes whatever it finds due. */
    disp_start(&a, &rec, 0);
    bool claimed = wait_count("leased_by IS NOT NULL", N_ROWS);
    disp_start(&b, &rec, 1);
    bool emptied = wait_count("true", 0);
    disp_stop(&a);
    disp_stop(&b);

    cr_assert(claimed, "the first dispatcher never held all %d rows", N_ROWS);
    cr_assert(emptied, "rows left after %d ms: %ld", WAIT_MS, count_where("true"));
    cr_assert_eq(rec.strays, 0);
    for (int i = 0; i < N_ROWS; i++) {
        cr_assert_gt(rec.n[i], 0, "row k%d was never delivered", i);
        int first_attempt = rec.sends[i][0].attempts;
        for (int s = 0; s < rec.n[i]; s++) {
            const send_t *x = &rec.sends[i][s];
            if (x->attempts < first_attempt)
                first_attempt = x->attempts;
            for (int t = s + 1; t < rec.n[i]; t++) {
                const send_t *y = &rec.sends[i][t];
                cr_assert(!(x->start < y->end && y->start < x->end),
                          "row k%d: dispatcher %d sent it during [%lld, %lld] us while "
                          "dispatcher %d did during [%lld, %lld] us",
                          i, x->who, (long long)x->start, (long long)x->end, y->who,
                          (long long)y->start, (long long)y->end);
            }
        }
        /* Rows given back untried do not count an attempt. */
        cr_assert_eq(first_attempt, 1, "row k%d: first delivery was attempt %d", i, first_attempt);
    }
    pthread_mutex_destroy(&rec.mu);
}

Test(outbox, rows_of_a_dead_dispatcher_are_delivered_after_its_lease, .timeout = 60)
{
    record_t rec;
    record_init(&rec, 0);
    put_rows(N_ROWS);
    /* A replica claims every row, as the dispatcher's claim does, and dies. */
    int64_t claimed_us = now_us();
    char *sql = mem_printf("UPDATE %s.outbox SET leased_until = now() + interval '%d ms', "
                           "leased_by = 'dead:replica', attempts = attempts + 1",
                           schema, LEASE_MS);
    PQclear(pgh_sql(sql));
    mem_free(sql);
    disp_t b;
    disp_start(&b, &rec, 1);
    bool emptied = wait_count("true", 0);
    disp_stop(&b);

    cr_assert(emptied, "rows left after %d ms: %ld", WAIT_MS, count_where("true"));
    cr_assert_eq(rec.strays, 0);
    for (int i = 0; i < N_ROWS; i++) {
        cr_assert_eq(rec.n[i], 1, "row k%d delivered %d times", i, rec.n[i]);
        const send_t *x = &rec.sends[i][0];
        cr_assert_geq(x->start - claimed_us, (int64_t)LEASE_MS * 1000,
                      "row k%d was sent %lld us after the dead replica's claim, inside its lease",
                      i, (long long)(x->start - claimed_us));
        cr_assert_eq(x->attempts, 2);
    }
    pthread_mutex_destroy(&rec.mu);
}
