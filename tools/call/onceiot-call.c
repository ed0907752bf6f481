/* onceiot-call ADDR METHOD [--bearer-file FILE] [--timeout-ms N] [--wait-ms N]
 *
 * Makes one unary call of METHOD ("/onceiot.identity.v1.IdentityService/
 * ListUsers") with an empty request (every field at its default), with
 * "authorization: Bearer <first line of FILE>" when given, and prints the
 * status: "OK" or "CODE: message". Exits 0 on OK, 1 otherwise, 2 on bad
 * usage. With --wait-ms it retries every 10 ms until OK or the time is up and
 * also prints how long that took: tools/stack waits with it for an
 * authenticated call to work, tools/recovery measures with it. */
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

/* The first line of path, or NULL. */
static char *read_secret(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char buf[512];
    char *line = fgets(buf, sizeof(buf), f);
    fclose(f);
    if (!line)
        return NULL;
    buf[strcspn(buf, "\r\n")] = '\0';
    return buf[0] ? mem_printf("Bearer %s", buf) : NULL;
}

/* One call; *out gets the status as text (static). */
static bool call_once(rpc_channel_t *ch, const char *method, const char *auth, long timeout_ms,
                      const char **out)
{
    static char buf[512];
    arena_t *a = arena_new();
    rpc_md_t md[] = {{"authorization", auth, 0}};
    rpc_call_opts_t opts = {.timeout_ms = timeout_ms, .metadata = md, .n_metadata = auth ? 1 : 0};
    ProtobufCBinaryData resp;
    rpc_status_t st;
    int rc = rpc_unary_raw(ch, method, (const uint8_t *)"", 0, a, &opts, &resp, &st);
    if (rc == 0)
        snprintf(buf, sizeof(buf), "OK");
    else
        snprintf(buf, sizeof(buf), "%s: %s", err_grpc_name(st.code), st.message);
    arena_free(a);
    *out = buf;
    return rc == 0;
}

int main(int argc, char **argv)
{
    const char *addr = NULL, *method = NULL, *bearer_file = NULL;
    long timeout_ms = 2000, wait_ms = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--timeout-ms") == 0 && i + 1 < argc)
            timeout_ms = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--wait-ms") == 0 && i + 1 < argc)
            wait_ms = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--bearer-file") == 0 && i + 1 < argc)
            bearer_file = argv[++i];
        else if (!addr)
            addr = argv[i];
        else if (!method)
            method = argv[i];
        else
            addr = NULL; /* one argument too many: usage */
    }
    if (!addr || !method || method[0] != '/' || timeout_ms <= 0 || wait_ms < 0) {
        fprintf(stderr, "usage: onceiot-call ADDR /pkg.Service/Method [--bearer-file FILE] "
                        "[--timeout-ms N] [--wait-ms N]\n");
        return 2;
    }
    char *auth = NULL;
    if (bearer_file && !(auth = read_secret(bearer_file))) {
        fprintf(stderr, "onceiot-call: no credential in %s\n", bearer_file);
        return 2;
    }
    rpc_channel_t *ch = NULL;
    if (rpc_channel_new(addr, 0, &ch) < 0) {
        fprintf(stderr, "onceiot-call: bad address %s\n", addr);
        mem_free(auth);
        return 2;
    }
    int64_t start = now_ms(), end = start + wait_ms;
    const char *status = "";
    long attempts = 0;
    bool ok;
    do {
        attempts++;
        ok = call_once(ch, method, auth, timeout_ms, &status);
    } while (!ok && now_ms() < end && usleep(10 * 1000) == 0);
    if (wait_ms)
        printf("%s (after %lld ms, %ld attempts)\n", status, (long long)(now_ms() - start),
               attempts);
    else
        printf("%s\n", status);
    rpc_channel_free(ch);
    mem_free(auth);
    return ok ? 0 : 1;
}
