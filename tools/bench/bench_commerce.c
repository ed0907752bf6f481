/* The commerce benchmark's client (run by tools/bench/commerce.sh, which
 * starts the processes). Prints figures and ratios; asserts nothing. Through
 * the gateway, with a data top-up product (1 MiB, unlimited stock) and one
 * SIM per thread:
 *   1. CreateOrder of one top-up item, one call at a time: p50/p99, next to
 *      GetProduct (authentication, routing and one indexed read) as the
 *      baseline of the same path;
 *   2. orders/s with THREADS clients at once;
 *   3. order to quota updated: CreateOrder, then GetQuota polled every
 *      millisecond until the SIM's volume has grown: p50/p99.
 *
 * usage: onceiot-bench-commerce GATEWAY_ADDR "Bearer <superuser key>" CALLS THREADS */
#include "commerce/v1/commerce.pb-c.h"
#include "onceiot/client.h"
#include "sims/v1/sims.pb-c.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define COMMERCE "/onceiot.commerce.v1.CommerceService/"
#define SIMS     "/onceiot.sims.v1.SimService/"
#define MIB      1048576

static const char *gw_addr, *auth;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what, const rpc_status_t *st)
{
    fprintf(stderr, "error: %s: %s %s\n", what, err_grpc_name(st->code), st->message);
    exit(1);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts v and prints its p50 and p99 in ms; returns the p50. */
static double print_pct(const char *what, double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    double p50 = v[n / 2] * 1e3, p99 = v[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1] * 1e3;
    printf("  %-34s p50 %7.2f ms   p99 %7.2f ms   (%d calls)\n", what, p50, p99, n);
    return p50;
}

/* One unary call through the gateway as the bench's key. */
static int call(rpc_channel_t *ch, arena_t *a, const char *path, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *d, void *resp, rpc_status_t *st)
{
    rpc_md_t *md = arena_alloc(a, sizeof(*md));
    md[0] = (rpc_md_t){"authorization", auth, 0};
    rpc_call_opts_t o = {.timeout_ms = 30000, .metadata = md, .n_metadata = 1};
    return rpc_unary(ch, path, req, d, a, &o, (ProtobufCMessage **)resp, st);
}

static const char *make_product(rpc_channel_t *ch, arena_t *a)
{
    Google__Protobuf__Value v = GOOGLE__PROTOBUF__VALUE__INIT;
    v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
    v.number_value = MIB;
    Google__Protobuf__Struct__FieldsEntry e = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
    e.key = "volume_bytes";
    e.value = &v;
    Google__Protobuf__Struct__FieldsEntry *fields[] = {&e};
    Google__Protobuf__Struct spec = GOOGLE__PROTOBUF__STRUCT__INIT;
    spec.fields = fields;
    spec.n_fields = 1;
    Onceiot__Commerce__V1__Money m = ONCEIOT__COMMERCE__V1__MONEY__INIT;
    m.currency_code = "EUR";
    m.amount_minor = 100;
    Onceiot__Commerce__V1__Product p = ONCEIOT__COMMERCE__V1__PRODUCT__INIT;
    p.name = "Bench 1 MiB";
    p.sku = "BENCH-1M";
    p.category = ONCEIOT__COMMERCE__V1__CATEGORY__CATEGORY_DATA_TOPUP;
    p.price = &m;
    p.specifications = &spec;
    Onceiot__Commerce__V1__CreateProductRequest req =
        ONCEIOT__COMMERCE__V1__CREATE_PRODUCT_REQUEST__INIT;
    req.product = &p;
    Onceiot__Commerce__V1__Product *out = NULL;
    rpc_status_t st;
    if (call(ch, a, COMMERCE "CreateProduct", &req.base,
             &onceiot__commerce__v1__product__descriptor, &out, &st) < 0)
        die("CreateProduct", &st);
    return arena_strdup(a, out->id);
}

/* A SIM of the caller's organization with an empty data quota. */
static const char *make_sim(rpc_channel_t *ch, arena_t *a, int n)
{
    Onceiot__Sims__V1__SimInput in = ONCEIOT__SIMS__V1__SIM_INPUT__INIT;
    in.iccid = arena_printf(a, "8949777%012d", n);
    Onceiot__Sims__V1__CreateSimRequest req = ONCEIOT__SIMS__V1__CREATE_SIM_REQUEST__INIT;
    req.sim = &in;
    Onceiot__Sims__V1__Sim *out = NULL;
    rpc_status_t st;
    if (call(ch, a, SIMS "CreateSim", &req.base, &onceiot__sims__v1__sim__descriptor, &out, &st) <
        0)
        die("CreateSim", &st);
    return in.iccid;
}

static int64_t quota(rpc_channel_t *ch, arena_t *a, const char *iccid)
{
    Onceiot__Sims__V1__GetQuotaRequest req = ONCEIOT__SIMS__V1__GET_QUOTA_REQUEST__INIT;
    req.iccid = (char *)iccid;
    req.quota_type = ONCEIOT__SIMS__V1__QUOTA_TYPE__QUOTA_TYPE_DATA;
    Onceiot__Sims__V1__Quota *q = NULL;
    rpc_status_t st;
    int rc =
        call(ch, a, SIMS "GetQuota", &req.base, &onceiot__sims__v1__quota__descriptor, &q, &st);
    if (rc < 0 && st.code != GRPC_STATUS_NOT_FOUND)
        die("GetQuota", &st);
    return rc < 0 ? 0 : q->volume;
}

static void order(rpc_channel_t *ch, arena_t *a, const char *product, const char *iccid)
{
    Onceiot__Commerce__V1__OrderItemInput it = ONCEIOT__COMMERCE__V1__ORDER_ITEM_INPUT__INIT;
    it.product_id = (char *)product;
    it.quantity = 1;
    it.iccid = (char *)iccid;
    Onceiot__Commerce__V1__OrderItemInput *items[] = {&it};
    Onceiot__Commerce__V1__CreateOrderRequest req =
        ONCEIOT__COMMERCE__V1__CREATE_ORDER_REQUEST__INIT;
    req.items = items;
    req.n_items = 1;
    Onceiot__Commerce__V1__Order *o = NULL;
    rpc_status_t st;
    if (call(ch, a, COMMERCE "CreateOrder", &req.base, &onceiot__commerce__v1__order__descriptor,
             &o, &st) < 0)
        die("CreateOrder", &st);
}

typedef struct worker {
    const char *product, *iccid;
    int calls;
} worker_t;

static void *run_worker(void *arg)
{
    worker_t *w = arg;
    rpc_channel_t *ch = NULL;
    if (rpc_channel_new(gw_addr, 1 << 22, &ch) < 0)
        exit(1);
    for (int i = 0; i < w->calls; i++) {
        arena_t *a = arena_new();
        order(ch, a, w->product, w->iccid);
        arena_free(a);
    }
    rpc_channel_free(ch);
    return NULL;
}

/* Waits until the SIM's volume reaches want (the outbox drained). */
static void wait_quota(rpc_channel_t *ch, const char *iccid, int64_t want)
{
    for (int i = 0; i < 600000; i++) {
        arena_t *a = arena_new();
        int64_t v = quota(ch, a, iccid);
        arena_free(a);
        if (v >= want)
            return;
        usleep(1000);
    }
    fprintf(stderr, "error: quota of %s never reached %lld\n", iccid, (long long)want);
    exit(1);
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s GATEWAY_ADDR \"Bearer <key>\" CALLS THREADS\n", argv[0]);
        return 2;
    }
    gw_addr = argv[1];
    auth = argv[2];
    int calls = atoi(argv[3]), threads = atoi(argv[4]);
    if (calls < 10 || threads < 1 || threads > 64)
        return 2;
    rpc_channel_t *ch = NULL;
    if (rpc_channel_new(gw_addr, 1 << 22, &ch) < 0)
        return 1;
    arena_t *keep = arena_new();
    const char *product = make_product(ch, keep);
    const char **iccids = arena_alloc(keep, (size_t)(threads + 1) * sizeof(char *));
    for (int t = 0; t <= threads; t++)
        iccids[t] = make_sim(ch, keep, t);
    for (int i = 0; i < 20; i++) { /* warm-up */
        arena_t *a = arena_new();
        order(ch, a, product, iccids[0]);
        arena_free(a);
    }
    wait_quota(ch, iccids[0], 20 * MIB);

    printf("== CreateOrder (one data top-up item) through the gateway, one call at a time\n");
    double *lat = calloc((size_t)calls, sizeof(double));
    for (int i = 0; i < calls; i++) {
        arena_t *a = arena_new();
        Onceiot__Commerce__V1__GetProductRequest g =
            ONCEIOT__COMMERCE__V1__GET_PRODUCT_REQUEST__INIT;
        g.id = (char *)product;
        Onceiot__Commerce__V1__Product *p = NULL;
        rpc_status_t st;
        double t0 = now_s();
        if (call(ch, a, COMMERCE "GetProduct", &g.base, &onceiot__commerce__v1__product__descriptor,
                 &p, &st) < 0)
            die("GetProduct", &st);
        lat[i] = now_s() - t0;
        arena_free(a);
    }
    double base = print_pct("GetProduct (baseline)", lat, calls);
    for (int i = 0; i < calls; i++) {
        arena_t *a = arena_new();
        double t0 = now_s();
        order(ch, a, product, iccids[0]);
        lat[i] = now_s() - t0;
        arena_free(a);
    }
    double co = print_pct("CreateOrder", lat, calls);
    printf("  CreateOrder / GetProduct p50: %.2fx\n", co / base);
    wait_quota(ch, iccids[0], (int64_t)(20 + calls) * MIB);

    printf("== CreateOrder throughput, %d clients at once\n", threads);
    pthread_t *tid = calloc((size_t)threads, sizeof(pthread_t));
    worker_t *w = calloc((size_t)threads, sizeof(worker_t));
    int per = calls / threads > 0 ? calls / threads : 1;
    double t0 = now_s();
    for (int t = 0; t < threads; t++) {
        w[t] = (worker_t){product, iccids[t + 1], per};
        pthread_create(&tid[t], NULL, run_worker, &w[t]);
    }
    for (int t = 0; t < threads; t++)
        pthread_join(tid[t], NULL);
    double dt = now_s() - t0;
    printf("  %d orders in %.2f s: %.0f orders/s\n", per * threads, dt, per * threads / dt);
    for (int t = 0; t < threads; t++)
        wait_quota(ch, iccids[t + 1], (int64_t)per * MIB);
    printf("  every order's top-up applied %.2f s after the first order\n", now_s() - t0);

    printf("== order to quota updated (CreateOrder, then GetQuota every 1 ms)\n");
    int lag_n = calls < 200 ? calls : 200;
    int64_t have = quota(ch, keep, iccids[0]);
    for (int i = 0; i < lag_n; i++) {
        arena_t *a = arena_new();
        double s = now_s();
        order(ch, a, product, iccids[0]);
        arena_free(a);
        have += MIB;
        wait_quota(ch, iccids[0], have);
        lat[i] = now_s() - s;
    }
    print_pct("order -> quota", lat, lag_n);
    free(lat);
    free(tid);
    free(w);
    arena_free(keep);
    rpc_channel_free(ch);
    return 0;
}
