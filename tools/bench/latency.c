/* onceiot-bench-latency ADDR METHOD BODY_HEX CALLS [BEARER]
 *
 * One call at a time, CALLS times, each timed on its own: prints
 * "p50 p90 p99 mean" in microseconds. BODY_HEX is the request message in hex
 * (no gRPC frame). With BEARER the calls carry "authorization: Bearer ...".
 * The gateway benchmark runs it against the service and the gateway with
 * the same client, so the difference is what the gateway adds. */
#include "onceiot/client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: %s ADDR METHOD BODY_HEX CALLS [BEARER]\n", argv[0]);
        return 2;
    }
    long calls = strtol(argv[4], NULL, 10);
    size_t hex_len = strlen(argv[3]);
    if (calls < 1 || calls > 10000000 || hex_len % 2) {
        fprintf(stderr, "bad CALLS or BODY_HEX\n");
        return 2;
    }
    uint8_t *body = mem_alloc(hex_len / 2 + 1);
    for (size_t i = 0; i < hex_len / 2; i++)
        body[i] = (uint8_t)strtol((char[]){argv[3][2 * i], argv[3][2 * i + 1], 0}, NULL, 16);
    char *auth = argc > 5 ? mem_printf("Bearer %s", argv[5]) : NULL;
    rpc_md_t md[1] = {{"authorization", auth, 0}};
    rpc_call_opts_t opts = {.timeout_ms = 5000, .metadata = md, .n_metadata = auth ? 1 : 0};

    rpc_channel_t *ch = NULL;
    if (rpc_channel_new(argv[1], 0, &ch) < 0)
        return 2;
    int64_t *lat = mem_calloc((size_t)calls, sizeof(*lat));
    int failed = 0;
    for (long i = -100; i < calls; i++) { /* the first 100 warm the connection and caches */
        arena_t *a = arena_new();
        ProtobufCBinaryData out;
        rpc_status_t st;
        int64_t t0 = now_ns();
        int rc = rpc_unary_raw(ch, argv[2], body, hex_len / 2, a, &opts, &out, &st);
        int64_t t1 = now_ns();
        if (rc < 0 && failed++ == 0)
            fprintf(stderr, "call failed: %s: %s\n", err_grpc_name(st.code), st.message);
        if (i >= 0)
            lat[i] = t1 - t0;
        arena_free(a);
    }
    qsort(lat, (size_t)calls, sizeof(*lat), cmp_i64);
    double sum = 0;
    for (long i = 0; i < calls; i++)
        sum += (double)lat[i];
    printf("%.1f %.1f %.1f %.1f\n", (double)lat[calls / 2] / 1e3, (double)lat[calls * 9 / 10] / 1e3,
           (double)lat[calls * 99 / 100] / 1e3, sum / (double)calls / 1e3);
    rpc_channel_free(ch);
    mem_free(lat);
    mem_free(body);
    mem_free(auth);
    return failed ? 1 : 0;
}
