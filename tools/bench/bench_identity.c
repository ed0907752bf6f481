/* Benchmark of the identity service (printed, never asserted):
 *   1. token verifications per second in-process (token_verify in a loop),
 *   2. Authenticate calls per second for one warm API key, from a few
 *      threads through the runtime's client (the test plays the gateway and
 *      signs one principal per thread: principals live 60 s),
 *   3. Login latency over 20 logins (Argon2id dominates).
 *
 * usage: onceiot-bench-identity ADDR SECRET USERNAME PASSWORD [THREADS] [SECONDS]
 * with ONCEIOT_PRINCIPAL_KEY set to identity's principal secret (the tool
 * derives the gateway's key from it).
 *
 * The synchronous client runs one call per thread at a time, so on a small
 * machine it measures the client as much as the server. For the server's
 * rate, drive it with h2load instead:
 *   onceiot-bench-identity h2load-input SECRET BODY_FILE
 * writes a framed AuthenticateRequest to BODY_FILE and prints the two
 * principal headers (valid 60 s) as h2load -H arguments. */
#include "identity/v1/identity.pb-c.h"
#include "onceiot/client.h"
#include "onceiot/principal.h"
#include "onceiot/token.h"

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define AUTH_METHOD  "/onceiot.identity.v1.IdentityService/Authenticate"
#define LOGIN_METHOD "/onceiot.identity.v1.IdentityService/Login"

static double bench__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void bench__tokens(void)
{
    uint8_t pk[32], sk[64];
    crypto_sign_keypair(pk, sk);
    token_key_t key;
    token_kid(pk, key.kid);
    memcpy(key.public_key, pk, 32);
    token_claims_t c;
    memset(&c, 0, sizeof(c));
    c.user_id = 42;
    snprintf(c.username, sizeof(c.username), "bench");
    c.organization_id = 1;
    c.role = ONCEIOT__COMMON__V1__ROLE__ROLE_USER;
    c.issued_at_ms = (int64_t)time(NULL) * 1000;
    c.expires_at = c.issued_at_ms / 1000 + 900;
    arena_t *a = arena_new();
    const char *tok = token_sign(sk, &c, a);
    const int n = 100000;
    double t0 = bench__now();
    for (int i = 0; i < n; i++) {
        token_claims_t out;
        const char *why;
        if (token_verify(&key, 1, tok, c.issued_at_ms / 1000, &out, &why) != 0) {
            fprintf(stderr, "verify failed: %s\n", why);
            exit(1);
        }
    }
    double dt = bench__now() - t0;
    printf("token_verify: %d verifications in %.2f s = %.0f/s (%.1f us each, one core)\n", n, dt,
           n / dt, dt / n * 1e6);
    arena_free(a);
}

typedef struct bench_worker {
    rpc_channel_t *ch;
    const principal_key_t *key;
    const char *secret;
    double until;
    long calls, errors;
} bench_worker_t;

static void *bench__auth_main(void *arg)
{
    bench_worker_t *w = arg;
    arena_t *sign = arena_new();
    principal_t p = ONCEIOT__COMMON__V1__PRINCIPAL__INIT;
    p.credential = "service:gateway";
    rpc_md_t md[2];
    principal_sign(w->key, &p, AUTH_METHOD, sign, md);
    rpc_call_opts_t opts = {.metadata = md, .n_metadata = 2, .timeout_ms = 5000};
    Onceiot__Identity__V1__AuthenticateRequest req =
        ONCEIOT__IDENTITY__V1__AUTHENTICATE_REQUEST__INIT;
    req.secret = (char *)w->secret;
    while (bench__now() < w->until) {
        for (int i = 0; i < 64; i++) {
            arena_t *a = arena_new();
            ProtobufCMessage *resp;
            rpc_status_t st;
            if (rpc_unary(w->ch, AUTH_METHOD, &req.base,
                          &onceiot__identity__v1__authenticate_response__descriptor, a, &opts,
                          &resp, &st) == 0)
                w->calls++;
            else if (w->errors++ == 0)
                fprintf(stderr, "Authenticate: %s\n", st.message);
            arena_free(a);
        }
    }
    arena_free(sign);
    return NULL;
}

static void bench__authenticate(const char *addr, const principal_key_t *key, const char *secret,
                                int threads, int seconds)
{
    bench_worker_t w[64];
    pthread_t t[64];
    double t0 = bench__now();
    for (int i = 0; i < threads; i++) {
        memset(&w[i], 0, sizeof(w[i]));
        /* A channel per thread: several HTTP/2 connections, as a gateway
         * with a few replicas would have. */
        if (rpc_channel_new(addr, 0, &w[i].ch) < 0) {
            fprintf(stderr, "cannot open a channel to %s\n", addr);
            exit(1);
        }
        w[i].key = key;
        w[i].secret = secret;
        w[i].until = t0 + seconds;
        pthread_create(&t[i], NULL, bench__auth_main, &w[i]);
    }
    long calls = 0, errors = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        calls += w[i].calls;
        errors += w[i].errors;
        rpc_channel_free(w[i].ch);
    }
    double dt = bench__now() - t0;
    printf("Authenticate (warm key): %ld calls in %.2f s from %d threads = %.0f/s, %ld errors\n",
           calls, dt, threads, calls / dt, errors);
}

static int bench__cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void bench__login(const char *addr, const char *username, const char *password)
{
    rpc_channel_t *ch;
    if (rpc_channel_new(addr, 0, &ch) < 0)
        exit(1);
    Onceiot__Identity__V1__LoginRequest req = ONCEIOT__IDENTITY__V1__LOGIN_REQUEST__INIT;
    req.username = (char *)username;
    req.password = (char *)password;
    enum { N = 20 };
    double ms[N];
    for (int i = 0; i < N; i++) {
        arena_t *a = arena_new();
        ProtobufCMessage *resp;
        rpc_status_t st;
        rpc_call_opts_t opts = {.timeout_ms = 10000};
        double t0 = bench__now();
        int rc =
            rpc_unary(ch, LOGIN_METHOD, &req.base,
                      &onceiot__identity__v1__login_response__descriptor, a, &opts, &resp, &st);
        ms[i] = (bench__now() - t0) * 1000;
        if (rc != 0) {
            fprintf(stderr, "Login: %s\n", st.message);
            exit(1);
        }
        arena_free(a);
    }
    qsort(ms, N, sizeof(ms[0]), bench__cmp);
    printf("Login (Argon2id interactive): p50 %.1f ms, p90 %.1f ms, min %.1f ms over %d logins\n",
           ms[N / 2], ms[N * 9 / 10], ms[0], N);
    rpc_channel_free(ch);
}

/* Writes the gRPC frame of AuthenticateRequest{secret} and prints the
 * gateway's signed principal as base64 header values for h2load. */
static int bench__h2load_input(const principal_key_t *key, const char *secret, const char *path)
{
    Onceiot__Identity__V1__AuthenticateRequest req =
        ONCEIOT__IDENTITY__V1__AUTHENTICATE_REQUEST__INIT;
    req.secret = (char *)secret;
    size_t n = onceiot__identity__v1__authenticate_request__get_packed_size(&req);
    uint8_t *frame = mem_alloc(5 + n);
    frame[0] = 0;
    frame[1] = (uint8_t)(n >> 24);
    frame[2] = (uint8_t)(n >> 16);
    frame[3] = (uint8_t)(n >> 8);
    frame[4] = (uint8_t)n;
    onceiot__identity__v1__authenticate_request__pack(&req, frame + 5);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(frame, 1, 5 + n, f) != 5 + n || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        return 1;
    }
    mem_free(frame);
    arena_t *a = arena_new();
    principal_t p = ONCEIOT__COMMON__V1__PRINCIPAL__INIT;
    p.credential = "service:gateway";
    rpc_md_t md[2];
    principal_sign(key, &p, AUTH_METHOD, a, md);
    for (int i = 0; i < 2; i++) {
        char b64[1024];
        sodium_bin2base64(b64, sizeof(b64), (const uint8_t *)md[i].value, md[i].len,
                          sodium_base64_VARIANT_ORIGINAL);
        printf("-H '%s: %s' ", md[i].key, b64);
    }
    printf("\n");
    arena_free(a);
    return 0;
}

/* The gateway's key for identity, derived from identity's secret
 * (ONCEIOT_PRINCIPAL_KEY): this tool plays the gateway. */
static int bench__gateway_key(principal_key_t *key)
{
    principal_key_t secret;
    if (sodium_init() < 0 || principal_key_parse(getenv("ONCEIOT_PRINCIPAL_KEY"), &secret) < 0)
        return -1;
    principal_key_derive(&secret, "gateway", key);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "h2load-input") == 0) {
        principal_key_t key;
        if (bench__gateway_key(&key) < 0)
            return 2;
        return bench__h2load_input(&key, argv[2], argv[3]);
    }
    if (argc < 5) {
        fprintf(stderr, "usage: %s ADDR SECRET USERNAME PASSWORD [THREADS] [SECONDS]\n", argv[0]);
        return 2;
    }
    principal_key_t key;
    if (bench__gateway_key(&key) < 0) {
        fprintf(stderr, "set ONCEIOT_PRINCIPAL_KEY to identity's 64 hex digits\n");
        return 2;
    }
    int threads = argc > 5 ? atoi(argv[5]) : 4;
    int seconds = argc > 6 ? atoi(argv[6]) : 5;
    if (threads < 1 || threads > 64 || seconds < 1)
        return 2;
    grpc_init();
    bench__tokens();
    bench__authenticate(argv[1], &key, argv[2], threads, seconds);
    bench__login(argv[1], argv[3], argv[4]);
    grpc_shutdown();
    return 0;
}
