/* Connectivity events and state under faults and concurrency: the
 * lost/restored events reach sims exactly once and in order per SIM across
 * kill -9 of usage and with sims down for a while; concurrent batches of the
 * same SIMs, and first batches of new SIMs sent together, keep every state
 * exact and the events in order; a watcher sees them live. Real onceiot-sims
 * and onceiot-usage processes on the test PostgreSQL. */
#include "pg_harness.h"
#include "usage_harness.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SEC  1000000LL
#define MIN  (60 * SEC)
#define HOUR (60 * MIN)

typedef usage_sample_t sample_t;
typedef Onceiot__Usage__V1__ConnectivityState state_t;

USAGE_H_SUITE(usage_connectivity_events);

/* Transitions of SIMs made by the test, one batch per call: each batch flips
 * every SIM once (two samples: still in the old state, then the new one). */
typedef struct flips {
    const char *sims[3];
    int64_t t;   /* time of the next sample */
    int batches; /* batches sent */
    bool online; /* the state every SIM is in */
    int64_t *at; /* times of the transitions (the same for every SIM) */
    size_t n_at;
} flips_t;

static void flip(flips_t *f, const char *prefix)
{
    sample_t *v[6];
    for (int s = 0; s < 3; s++) {
        v[2 * s] = usage_h_sample(arena, f->sims[s], f->t, f->online, NULL);
        v[2 * s + 1] = usage_h_sample(arena, f->sims[s], f->t + SEC, !f->online, NULL);
    }
    f->at[f->n_at++] = f->t + SEC;
    f->online = !f->online;
    f->t += MIN;
    usage_h_conn_ingest_ok(arena_printf(arena, "%s-%d", prefix, f->batches++), v, 6);
}

static void make_flips(flips_t *f, long long base)
{
    memset(f, 0, sizeof(*f));
    for (int s = 0; s < 3; s++)
        f->sims[s] = usage_h_sim(1 + s % 2, base + s, 0, 0);
    f->t = usage_h_now_us() - 4 * HOUR;
    f->online = true;
    f->at = arena_alloc(arena, 64 * sizeof(int64_t));
}

/* The first batch's first sample sets the state without an event, so the
 * events are every flip, starting with a loss. */
static void assert_flips(const flips_t *f)
{
    usage_h_drain();
    for (int s = 0; s < 3; s++)
        usage_h_assert_conn_events(f->sims[s], f->n_at, f->at, true);
}

Test(usage_connectivity_events, events_exactly_once_across_kill_9_of_usage)
{
    flips_t f;
    make_flips(&f, 100);
    flip(&f, "kill");
    usage_h_drain();
    /* A frozen sims holds the dispatcher inside ApplyConnectivity with its
     * rows leased; usage dies there; sims then runs whatever reached it. */
    usage_h_freeze_sims();
    for (int b = 0; b < 4; b++)
        flip(&f, "kill");
    usage_h_kill_usage_while_leased();
    /* And killed again at random moments while it delivers. */
    for (int round = 0; round < 3; round++) {
        for (int b = 0; b < 4; b++)
            flip(&f, "kill");
        usleep((useconds_t)(rand() % 40000));
        usage_h_restart_usage(SIGKILL);
    }
    assert_flips(&f);
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM sims.processed_connectivity_batches"),
                 f.batches);
}

Test(usage_connectivity_events, events_wait_while_sims_is_down_and_arrive_in_order)
{
    flips_t f;
    make_flips(&f, 200);
    flip(&f, "down");
    usage_h_drain();
    usage_h_stop_sims();
    for (int b = 0; b < 5; b++)
        flip(&f, "down"); /* cached ICCIDs: ingest goes on without sims */
    sleep(1);
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM usage.outbox"), 5);
    usage_h_start_sims();
    assert_flips(&f);
    Onceiot__Sims__V1__Sim *s = usage_h_sim_of(f.sims[0]);
    cr_assert_str_eq(s->current_operator, f.online ? "Telekom" : "");
}

/* ---- concurrent batches of the same SIMs ---- */

/* A writer thread: its SIMs, and for the new-SIM rounds below, each
 * round's new SIMs and the barrier that starts it. */
typedef struct writer {
    const char *const *sims;
    const char *(*fresh)[4];
    pthread_barrier_t *go;
    int id;
    arena_t *a;
    int failures;
    char first[200];
} writer_t;

static void *write_batches(void *p)
{
    writer_t *w = p;
    principal_t who = usage_h_writer();
    unsigned seed = (unsigned)w->id * 7919u + 1;
    int64_t base = usage_h_now_us() - 2 * HOUR;
    for (int b = 0; b < 8; b++) {
        sample_t *v[12];
        for (int i = 0; i < 12; i++) {
            /* Distinct instants per writer, random order and states. */
            int64_t us = base + ((int64_t)(rand_r(&seed) % 100000) * 8 + w->id) * 1000;
            v[i] = usage_h_sample(w->a, w->sims[i % 4], us, rand_r(&seed) % 2, NULL);
            for (int k = 0; k < i; k++)
                if (k % 4 == i % 4 && usage_h_ts_us(v[k]->timestamp) == us)
                    v[i]->timestamp = usage_h_ts(w->a, us + 8000000);
        }
        const char *id = arena_printf(w->a, "conc-%d-%d", w->id, b);
        size_t n = 12;
        sample_t **vv = v;
        rpc_status_t st;
        if (usage_h_ingest_conn(w->a, &who, &id, &vv, &n, 1, NULL, &st) != 0 && w->failures++ == 0)
            snprintf(w->first, sizeof(w->first), "%s", st.message);
    }
    return NULL;
}

Test(usage_connectivity_events, concurrent_batches_keep_the_state_exact_and_the_events_in_order)
{
    const char *sims[4];
    for (int s = 0; s < 4; s++)
        sims[s] = usage_h_sim(1, 300 + s, 0, 0);
    /* Resolve the ICCIDs once so the writers race on the tables only. */
    sample_t *warm[4];
    for (int s = 0; s < 4; s++)
        warm[s] = usage_h_sample(arena, sims[s], usage_h_now_us() - 3 * HOUR, true, NULL);
    usage_h_conn_ingest_ok("conc-warm", warm, 4);
    writer_t w[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (writer_t){.sims = sims, .id = i, .a = sims_h_thread_arena()};
        pthread_create(&th[i], NULL, write_batches, &w[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(w[i].failures, 0, "writer %d: %s", i, w[i].first);
    /* Every state is the newest sample of its SIM. */
    cr_assert_eq(
        usage_h_sql_int("SELECT count(*) FROM usage.sim_connectivity_state s JOIN LATERAL "
                        "(SELECT * FROM usage.sim_connectivity c WHERE c.sim_id = s.sim_id "
                        "ORDER BY \"timestamp\" DESC LIMIT 1) c ON true "
                        "WHERE c.\"timestamp\" = s.last_seen AND c.connected = s.connected"),
        4);
    usage_h_drain();
    /* Events alternate, numbered without gaps, as many as the state counts. */
    for (int s = 0; s < 4; s++) {
        state_t *st = usage_h_conn_state(sims[s]);
        size_t n;
        Onceiot__Sims__V1__SimEvent **ev = usage_h_conn_events(sims[s], &n);
        cr_assert_eq((int64_t)n, st->transitions, "SIM %d", s);
        if (n > 0)
            usage_h_assert_conn_events(sims[s], n, NULL, true);
        for (size_t i = 1; i < n; i++)
            cr_assert_geq(usage_h_ts_us(ev[i]->occurred_at), usage_h_ts_us(ev[i - 1]->occurred_at));
    }
}

/* ---- concurrent first batches of new SIMs ---- */

#define NEW_ROUNDS 6

/* Each round, one batch of the 4 known SIMs and that round's 4 new ones, in
 * an order of this writer's, sent with the other writers' at once: each
 * first finds SIMs without a state row, and all create them together while
 * they hold the known SIMs' rows. */
static void *write_new_sims(void *p)
{
    writer_t *w = p;
    principal_t who = usage_h_writer();
    unsigned seed = (unsigned)w->id * 104729u + 3;
    int64_t base = usage_h_now_us() - 2 * HOUR;
    for (int r = 0; r < NEW_ROUNDS; r++) {
        sample_t *v[8];
        for (int i = 0; i < 8; i++) {
            int k = (i + w->id) % 8; /* every writer starts elsewhere */
            const char *iccid = k < 4 ? w->sims[k] : w->fresh[r][k - 4];
            /* Distinct instants per writer and round. */
            int64_t us = base + ((int64_t)r * 40 + w->id * 8 + i) * 1000000;
            v[i] = usage_h_sample(w->a, iccid, us, rand_r(&seed) % 2, NULL);
        }
        const char *id = arena_printf(w->a, "new-%d-%d", w->id, r);
        size_t n = 8;
        sample_t **vv = v;
        rpc_status_t st;
        pthread_barrier_wait(w->go);
        if (usage_h_ingest_conn(w->a, &who, &id, &vv, &n, 1, NULL, &st) != 0 && w->failures++ == 0)
            snprintf(w->first, sizeof(w->first), "round %d: %s", r, st.message);
    }
    return NULL;
}

Test(usage_connectivity_events, concurrent_first_batches_of_new_sims_create_each_state_once)
{
    const char *known[4], *fresh[NEW_ROUNDS][4];
    sample_t *warm[4];
    for (int s = 0; s < 4; s++) {
        known[s] = usage_h_sim(1, 500 + s, 0, 0);
        warm[s] = usage_h_sample(arena, known[s], usage_h_now_us() - 3 * HOUR, true, NULL);
    }
    for (int r = 0; r < NEW_ROUNDS; r++)
        for (int s = 0; s < 4; s++)
            fresh[r][s] = usage_h_sim(1, 600 + r * 4 + s, 0, 0);
    usage_h_conn_ingest_ok("new-warm", warm, 4);
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 4);
    writer_t w[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (writer_t){
            .sims = known, .fresh = fresh, .go = &go, .id = i, .a = sims_h_thread_arena()};
        pthread_create(&th[i], NULL, write_new_sims, &w[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&go);
    /* No batch deadlocked or failed; each SIM has one state, its newest sample. */
    for (int i = 0; i < 4; i++)
        cr_assert_eq(w[i].failures, 0, "writer %d: %s", i, w[i].first);
    cr_assert_eq(usage_h_sql_int("SELECT count(*) FROM usage.sim_connectivity"),
                 4 + 4 * NEW_ROUNDS * 8);
    cr_assert_eq(
        usage_h_sql_int("SELECT count(*) FROM usage.sim_connectivity_state s JOIN LATERAL "
                        "(SELECT * FROM usage.sim_connectivity c WHERE c.sim_id = s.sim_id "
                        "ORDER BY \"timestamp\" DESC LIMIT 1) c ON true "
                        "WHERE c.\"timestamp\" = s.last_seen AND c.connected = s.connected"),
        4 + 4 * NEW_ROUNDS);
    usage_h_drain();
    /* Each SIM's events alternate, numbered without gaps, as the state counts. */
    for (int s = 0; s < 4 + 4 * NEW_ROUNDS; s++) {
        const char *iccid = s < 4 ? known[s] : fresh[(s - 4) / 4][(s - 4) % 4];
        state_t *st = usage_h_conn_state(iccid);
        size_t n;
        Onceiot__Sims__V1__SimEvent **ev = usage_h_conn_events(iccid, &n);
        cr_assert_eq((int64_t)n, st->transitions, "SIM %s", iccid);
        if (n > 0)
            usage_h_assert_conn_events(iccid, n, NULL,
                                       strcmp(ev[0]->event_type, "connectivity_lost") == 0);
    }
}

Test(usage_connectivity_events, a_watcher_sees_lost_and_restored_live_in_order)
{
    const char *sim = usage_h_sim(3, 400, 0, 0);
    int64_t t = usage_h_now_us() - HOUR;
    sample_t *first[] = {usage_h_sample(arena, sim, t, true, NULL)};
    usage_h_conn_ingest_ok("watch-0", first, 1);
    rpc_stream_t *s = usage_h_watch(arena, 3, sim, "connectivity");
    cr_assert_eq(rpc_stream_headers(s), 0, "the subscription took effect");
    /* Two batches, each with a loss and a restoration. */
    for (int b = 0; b < 2; b++) {
        sample_t *v[] = {usage_h_sample(arena, sim, t + (2 * b + 1) * MIN, false, NULL),
                         usage_h_sample(arena, sim, t + (2 * b + 2) * MIN, true, NULL)};
        usage_h_conn_ingest_ok(arena_printf(arena, "watch-%d", b + 1), v, 2);
    }
    for (int i = 0; i < 4; i++) {
        ProtobufCMessage *m;
        rpc_status_t st;
        if (rpc_stream_recv(s, &onceiot__sims__v1__sim_event__descriptor, &m) != 1) {
            rpc_stream_finish(s, &st);
            cr_assert_fail("event %d: the stream ended: %s", i, st.message);
        }
        const Onceiot__Sims__V1__SimEvent *e = (const void *)m;
        cr_assert_str_eq(e->iccid, sim);
        cr_assert_str_eq(e->event_type, i % 2 ? "connectivity_restored" : "connectivity_lost",
                         "event %d in order", i);
        cr_assert_eq(usage_h_ts_us(e->occurred_at), t + (i + 1) * MIN);
    }
    rpc_stream_cancel(s);
    rpc_status_t st;
    rpc_stream_finish(s, &st);
}
