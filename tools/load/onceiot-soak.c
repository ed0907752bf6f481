/* onceiot-soak ADDR BEARER SECONDS [THREADS [RATE]]
 *
 * Mixed load through the gateway for SECONDS: each thread registers its own
 * SIMs, then loops over reads (GetSim, ListSims, ListEvents, ListUsers,
 * ListTickets) and writes (TopUpQuota and SendSms with request ids,
 * CreateTicket, ImportSims of a new SIM), one call at a time with a short
 * pause that keeps all threads together at RATE calls per second (default
 * 100, under the gateway's per-caller limit: a refusal by the limit counts
 * as an error). Every tenth second it prints a line "t=<s> calls=<n> errors=<n>";
 * at the end, the calls per method and every unexpected status with its
 * count. Exit 0 when no call failed, 1 otherwise. tools/soak runs it and
 * samples the processes meanwhile. */
#include "identity/v1/identity.pb-c.h"
#include "onceiot/client.h"
#include "sims/v1/sims.pb-c.h"
#include "support/v1/support.pb-c.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SIMS     "/onceiot.sims.v1.SimService/"
#define SUPPORT  "/onceiot.support.v1.SupportService/"
#define IDENTITY "/onceiot.identity.v1.IdentityService/"
#define OWN_SIMS 20
#define KINDS    9

static const char *const kind_names[KINDS] = {"GetSim",    "ListSims",     "ListEvents",
                                              "ListUsers", "ListTickets",  "TopUpQuota",
                                              "SendSms",   "CreateTicket", "ImportSims"};

typedef struct soak {
    const char *addr;
    char auth[256];
    int64_t end_ms;
    int pause_us; /* per thread, between calls */
    atomic_long calls;
    atomic_long errors;
    atomic_long by_kind[KINDS];
    pthread_mutex_t mu; /* guards the error table */
    char error_text[32][256];
    long error_count[32];
    int n_errors;
} soak_t;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Counts an unexpected status under its method and code (the first
 * message of each kept as a sample). */
static void soak__error(soak_t *s, int kind, const rpc_status_t *st)
{
    char key[96];
    int klen = snprintf(key, sizeof(key), "%s %s", kind_names[kind], err_grpc_name(st->code));
    atomic_fetch_add(&s->errors, 1);
    pthread_mutex_lock(&s->mu);
    int i = 0;
    while (i < s->n_errors && strncmp(s->error_text[i], key, (size_t)klen) != 0)
        i++;
    if (i == s->n_errors && s->n_errors < 32)
        snprintf(s->error_text[s->n_errors++], sizeof(s->error_text[0]), "%s (e.g. %.120s)", key,
                 st->message ? st->message : "");
    if (i < 32)
        s->error_count[i]++;
    pthread_mutex_unlock(&s->mu);
}

typedef struct worker {
    soak_t *s;
    int index;
    rpc_channel_t *ch;
    long seq; /* request ids and new ICCIDs of this worker */
} worker_t;

/* The n-th SIM of a worker in this run (19 digits, new in every run). */
static const char *iccid_of(arena_t *a, int worker, long n)
{
    return arena_printf(a, "89883%04ld%02d%08ld", (long)getpid() % 10000, worker, n);
}

/* One call of kind; returns its status code. */
static int soak__call(worker_t *w, int kind, arena_t *a, rpc_status_t *st)
{
    soak_t *s = w->s;
    rpc_md_t md = {"authorization", s->auth, 0};
    rpc_call_opts_t o = {.timeout_ms = 10000, .metadata = &md, .n_metadata = 1};
    ProtobufCMessage *out = NULL;
    const char *own = iccid_of(a, w->index, rand() % OWN_SIMS);
    /* Unique across runs too: the same id for another request is refused. */
    char *rid = arena_printf(a, "soak-%ld-%d-%ld", (long)getpid(), w->index, w->seq++);
    switch (kind) {
    case 0: {
        Onceiot__Sims__V1__GetSimRequest r = ONCEIOT__SIMS__V1__GET_SIM_REQUEST__INIT;
        r.iccid = (char *)own;
        return rpc_unary(w->ch, SIMS "GetSim", &r.base, &onceiot__sims__v1__sim__descriptor, a, &o,
                         &out, st);
    }
    case 1: {
        Onceiot__Sims__V1__ListSimsRequest r = ONCEIOT__SIMS__V1__LIST_SIMS_REQUEST__INIT;
        r.page_size = 50;
        return rpc_unary(w->ch, SIMS "ListSims", &r.base,
                         &onceiot__sims__v1__list_sims_response__descriptor, a, &o, &out, st);
    }
    case 2: {
        Onceiot__Sims__V1__ListEventsRequest r = ONCEIOT__SIMS__V1__LIST_EVENTS_REQUEST__INIT;
        r.iccid = (char *)own;
        r.page_size = 20;
        return rpc_unary(w->ch, SIMS "ListEvents", &r.base,
                         &onceiot__sims__v1__list_events_response__descriptor, a, &o, &out, st);
    }
    case 3: {
        Onceiot__Identity__V1__ListUsersRequest r = ONCEIOT__IDENTITY__V1__LIST_USERS_REQUEST__INIT;
        return rpc_unary(w->ch, IDENTITY "ListUsers", &r.base,
                         &onceiot__identity__v1__list_users_response__descriptor, a, &o, &out, st);
    }
    case 4: {
        Onceiot__Support__V1__ListTicketsRequest r =
            ONCEIOT__SUPPORT__V1__LIST_TICKETS_REQUEST__INIT;
        r.page_size = 20;
        return rpc_unary(w->ch, SUPPORT "ListTickets", &r.base,
                         &onceiot__support__v1__list_tickets_response__descriptor, a, &o, &out, st);
    }
    case 5: {
        Onceiot__Sims__V1__TopUpQuotaRequest r = ONCEIOT__SIMS__V1__TOP_UP_QUOTA_REQUEST__INIT;
        r.iccid = (char *)own;
        r.quota_type = ONCEIOT__SIMS__V1__QUOTA_TYPE__QUOTA_TYPE_SMS;
        r.volume = 2;
        r.request_id = rid;
        return rpc_unary(w->ch, SIMS "TopUpQuota", &r.base, &onceiot__sims__v1__quota__descriptor,
                         a, &o, &out, st);
    }
    case 6: {
        Onceiot__Sims__V1__SendSmsRequest r = ONCEIOT__SIMS__V1__SEND_SMS_REQUEST__INIT;
        r.iccid = (char *)own;
        r.text = "status?";
        r.request_id = rid;
        return rpc_unary(w->ch, SIMS "SendSms", &r.base, &onceiot__sims__v1__sms__descriptor, a, &o,
                         &out, st);
    }
    case 7: {
        Onceiot__Support__V1__CreateTicketRequest r =
            ONCEIOT__SUPPORT__V1__CREATE_TICKET_REQUEST__INIT;
        r.subject = "modem offline";
        r.description = "the tracker stopped reporting after a firmware update";
        char *iccids[] = {(char *)own};
        r.iccids = iccids;
        r.n_iccids = 1;
        r.request_id = rid;
        return rpc_unary(w->ch, SUPPORT "CreateTicket", &r.base,
                         &onceiot__support__v1__ticket__descriptor, a, &o, &out, st);
    }
    case 8: {
        /* A new SIM, beyond the worker's own ones. */
        Onceiot__Sims__V1__SimInput in = ONCEIOT__SIMS__V1__SIM_INPUT__INIT;
        in.iccid = (char *)iccid_of(a, w->index, OWN_SIMS + w->seq);
        Onceiot__Sims__V1__SimInput *items[] = {&in};
        Onceiot__Sims__V1__ImportSimsRequest r = ONCEIOT__SIMS__V1__IMPORT_SIMS_REQUEST__INIT;
        r.sims = items;
        r.n_sims = 1;
        r.request_id = rid;
        return rpc_unary(w->ch, SIMS "ImportSims", &r.base,
                         &onceiot__sims__v1__import_sims_response__descriptor, a, &o, &out, st);
    }
    }
    return 0;
}

/* The worker's own SIMs, enabled, with SMS volume for the load. */
static int soak__prepare(worker_t *w)
{
    arena_t *a = arena_new();
    rpc_md_t md = {"authorization", w->s->auth, 0};
    rpc_call_opts_t o = {.timeout_ms = 10000, .metadata = &md, .n_metadata = 1};
    Onceiot__Sims__V1__SimInput in[OWN_SIMS], *items[OWN_SIMS];
    for (int i = 0; i < OWN_SIMS; i++) {
        onceiot__sims__v1__sim_input__init(&in[i]);
        in[i].iccid = (char *)iccid_of(a, w->index, i);
        in[i].sms_volume = 1000000;
        items[i] = &in[i];
    }
    Onceiot__Sims__V1__ImportSimsRequest r = ONCEIOT__SIMS__V1__IMPORT_SIMS_REQUEST__INIT;
    r.sims = items;
    r.n_sims = OWN_SIMS;
    r.request_id = arena_printf(a, "soak-prepare-%d-%ld", w->index, (long)getpid());
    ProtobufCMessage *out;
    rpc_status_t st;
    int rc = rpc_unary(w->ch, SIMS "ImportSims", &r.base,
                       &onceiot__sims__v1__import_sims_response__descriptor, a, &o, &out, &st);
    if (rc < 0 && st.code != GRPC_STATUS_ALREADY_EXISTS) {
        fprintf(stderr, "prepare: ImportSims: %s %s\n", err_grpc_name(st.code), st.message);
        arena_free(a);
        return -1;
    }
    for (int i = 0; i < OWN_SIMS; i++) {
        Onceiot__Sims__V1__SimActionRequest act = ONCEIOT__SIMS__V1__SIM_ACTION_REQUEST__INIT;
        act.iccid = in[i].iccid;
        rc = rpc_unary(w->ch, SIMS "ActivateSim", &act.base, &onceiot__sims__v1__sim__descriptor, a,
                       &o, &out, &st);
        if (rc < 0 && st.code != GRPC_STATUS_FAILED_PRECONDITION) { /* already enabled */
            fprintf(stderr, "prepare: ActivateSim: %s %s\n", err_grpc_name(st.code), st.message);
            arena_free(a);
            return -1;
        }
    }
    arena_free(a);
    return 0;
}

static void *soak__worker(void *arg)
{
    worker_t *w = arg;
    soak_t *s = w->s;
    if (soak__prepare(w) < 0) {
        atomic_fetch_add(&s->errors, 1);
        return NULL;
    }
    /* Reads four times as often as writes; imports rarely. */
    static const int mix[] = {0, 0, 1, 2, 3, 4, 0, 1, 2, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 8};
    size_t n_mix = sizeof(mix) / sizeof(mix[0]);
    for (size_t i = (size_t)w->index; now_ms() < s->end_ms; i++) {
        int kind = mix[i % n_mix];
        arena_t *a = arena_new();
        rpc_status_t st;
        if (soak__call(w, kind, a, &st) < 0)
            soak__error(s, kind, &st);
        atomic_fetch_add(&s->calls, 1);
        atomic_fetch_add(&s->by_kind[kind], 1);
        arena_free(a);
        usleep((useconds_t)s->pause_us);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s ADDR BEARER SECONDS [THREADS]\n", argv[0]);
        return 2;
    }
    long seconds = strtol(argv[3], NULL, 10);
    int threads = argc > 4 ? atoi(argv[4]) : 4;
    int rate = argc > 5 ? atoi(argv[5]) : 100;
    if (seconds < 1 || seconds > 86400 || threads < 1 || threads > 64 || rate < 1 ||
        rate > 100000) {
        fprintf(stderr, "SECONDS 1..86400, THREADS 1..64, RATE 1..100000\n");
        return 2;
    }
    static soak_t s;
    s.addr = argv[1];
    snprintf(s.auth, sizeof(s.auth), "Bearer %s", argv[2]);
    pthread_mutex_init(&s.mu, NULL);
    s.end_ms = now_ms() + seconds * 1000;
    s.pause_us = (int)(1000000LL * threads / rate);
    worker_t *w = mem_calloc((size_t)threads, sizeof(*w));
    pthread_t *t = mem_calloc((size_t)threads, sizeof(*t));
    for (int i = 0; i < threads; i++) {
        w[i].s = &s;
        w[i].index = i;
        if (rpc_channel_new(s.addr, 1 << 22, &w[i].ch) < 0) {
            fprintf(stderr, "cannot open a channel to %s\n", s.addr);
            return 1;
        }
        pthread_create(&t[i], NULL, soak__worker, &w[i]);
    }
    int64_t start = now_ms();
    while (now_ms() < s.end_ms) {
        sleep(10);
        printf("t=%llds calls=%ld errors=%ld\n", (long long)((now_ms() - start) / 1000),
               atomic_load(&s.calls), atomic_load(&s.errors));
        fflush(stdout);
    }
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        rpc_channel_free(w[i].ch);
    }
    printf("calls per method:");
    for (int k = 0; k < KINDS; k++)
        if (atomic_load(&s.by_kind[k]))
            printf(" %s=%ld", kind_names[k], atomic_load(&s.by_kind[k]));
    printf("\nunexpected errors: %ld\n", atomic_load(&s.errors));
    for (int i = 0; i < s.n_errors; i++)
        printf("  %6ld  %s\n", s.error_count[i], s.error_text[i]);
    mem_free(w);
    mem_free(t);
    return atomic_load(&s.errors) ? 1 : 0;
}
