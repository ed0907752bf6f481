/* onceiot-health ADDR [SERVICE] [--timeout-ms N] [--wait-ms N]
 *
 * Calls grpc.health.v1.Health/Check and prints the status. Exits 0 when
 * SERVING, 1 otherwise, 2 on bad usage. With --wait-ms it retries every
 * 100 ms until SERVING or the time is up (what tools/stack waits with). */
#include "grpc/health/v1/health.pb-c.h"
#include "onceiot/client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One Check; returns the status name in *name. */
static bool check_once(rpc_channel_t *ch, const char *service, int64_t timeout_ms,
                       const char **name)
{
    arena_t *a = arena_new();
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)service;
    rpc_call_opts_t opts = {.timeout_ms = timeout_ms};
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    int rc = rpc_unary(ch, "/grpc.health.v1.Health/Check", &req.base,
                       &grpc__health__v1__health_check_response__descriptor, a, &opts, &resp, &st);
    bool serving = false;
    static char buf[160];
    if (rc < 0) {
        snprintf(buf, sizeof(buf), "%s: %s", err_grpc_name(st.code), st.message);
    } else {
        const Grpc__Health__V1__HealthCheckResponse *r = (const void *)resp;
        const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
            &grpc__health__v1__health_check_response__serving_status__descriptor, r->status);
        snprintf(buf, sizeof(buf), "%s", v ? v->name : "UNKNOWN");
        serving = r->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    }
    *name = buf;
    arena_free(a);
    return serving;
}

int main(int argc, char **argv)
{
    const char *addr = NULL;
    const char *service = "";
    long timeout_ms = 2000;
    long wait_ms = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--timeout-ms") == 0 && i + 1 < argc)
            timeout_ms = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--wait-ms") == 0 && i + 1 < argc)
            wait_ms = strtol(argv[++i], NULL, 10);
        else if (!addr)
            addr = argv[i];
        else
            service = argv[i];
    }
    if (!addr || timeout_ms <= 0 || wait_ms < 0) {
        fprintf(stderr, "usage: onceiot-health ADDR [SERVICE] [--timeout-ms N] [--wait-ms N]\n");
        return 2;
    }
    rpc_channel_t *ch = NULL;
    if (rpc_channel_new(addr, 0, &ch) < 0) {
        fprintf(stderr, "onceiot-health: bad address %s\n", addr);
        return 2;
    }
    int64_t end = now_ms() + wait_ms;
    const char *name = "";
    bool ok;
    while (!(ok = check_once(ch, service, timeout_ms, &name)) && now_ms() < end)
        usleep(100 * 1000);
    printf("%s\n", name);
    rpc_channel_free(ch);
    return ok ? 0 : 1;
}
