/* Prometheus metrics against the real thing: identity, sims and the gateway
 * with ONCEIOT_METRICS_LISTEN on free ports; every endpoint's output passes
 * Debian's `promtool check metrics`; Debian's `prometheus` server scrapes
 * the three every second and its HTTP API shows a call made through the
 * gateway at the gateway and at sims. */
#include "onceiot/client.h"
#include "onceiot/mem.h"
#include "sims/v1/sims.pb-c.h"
#include "stack_harness.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* GET path from 127.0.0.1:port over HTTP/1.0: the body (mem_free) with
 * *status, or NULL when nothing answered. */
static char *http_get(int port, const char *path, int *status)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return NULL;
    }
    char *req = mem_printf("GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    size_t off = 0, n = strlen(req);
    while (off < n) {
        ssize_t w = write(fd, req + off, n - off);
        cr_assert(w > 0);
        off += (size_t)w;
    }
    mem_free(req);
    size_t cap = 65536, len = 0;
    char *buf = mem_alloc(cap);
    for (;;) {
        if (len + 4096 > cap)
            buf = mem_realloc(buf, cap *= 2);
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    char *body = strstr(buf, "\r\n\r\n");
    if (strncmp(buf, "HTTP/1.", 7) != 0 || !body) {
        mem_free(buf);
        return NULL;
    }
    *status = atoi(buf + 9);
    char *out = mem_strdup(body + 4);
    mem_free(buf);
    return out;
}

/* Percent-encodes a PromQL query for a URL. */
static char *url_encode(const char *s)
{
    char *out = mem_alloc(strlen(s) * 3 + 1), *p = out;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '_' || ch == '.' || ch == '-')
            *p++ = (char)ch;
        else
            p += sprintf(p, "%%%02X", ch);
    }
    *p = '\0';
    return out;
}

/* Runs a shell command line; returns its exit status. */
static int run(const char *cmd)
{
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static sh_stack_t st;
static char tmpdir[256];
static pid_t prom_pid;

static void teardown(void)
{
    if (prom_pid > 0) {
        kill(prom_pid, SIGTERM);
        int status;
        for (int i = 0; i < 100 && waitpid(prom_pid, &status, WNOHANG) == 0; i++)
            usleep(100000);
        if (waitpid(prom_pid, &status, WNOHANG) == 0) {
            kill(prom_pid, SIGKILL);
            waitpid(prom_pid, &status, 0);
        }
        prom_pid = 0;
    }
    sh_stop(&st);
    if (tmpdir[0]) {
        char *cmd = mem_printf("rm -rf '%s'", tmpdir);
        (void)run(cmd);
        mem_free(cmd);
    }
}

TestSuite(metrics, .fini = teardown, .timeout = 300);

/* Starts prometheus scraping the targets every second; returns its port. */
static int start_prometheus(const int *ports, size_t n)
{
    char *cfg_path = mem_printf("%s/prometheus.yml", tmpdir);
    FILE *f = fopen(cfg_path, "w");
    cr_assert(f);
    fprintf(f, "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n"
               "  - job_name: onceiot\n    static_configs:\n      - targets: [");
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s'127.0.0.1:%d'", i ? ", " : "", ports[i]);
    fprintf(f, "]\n");
    fclose(f);
    int port = ph_free_port();
    char *listen = mem_printf("--web.listen-address=127.0.0.1:%d", port);
    char *config = mem_printf("--config.file=%s", cfg_path);
    char *data = mem_printf("--storage.tsdb.path=%s/data", tmpdir);
    char *log = mem_printf("%s/prometheus.log", tmpdir);
    prom_pid = fork();
    cr_assert(prom_pid >= 0);
    if (prom_pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execlp("prometheus", "prometheus", config, data, listen, "--log.level=warn", (char *)NULL);
        _exit(127);
    }
    mem_free(log);
    mem_free(data);
    mem_free(config);
    mem_free(listen);
    mem_free(cfg_path);
    /* Ready when /-/ready answers 200: bounded at 30 s. */
    for (int i = 0; i < 300; i++) {
        int status = 0;
        char *body = http_get(port, "/-/ready", &status);
        mem_free(body);
        if (body && status == 200)
            return port;
        usleep(100000);
    }
    cr_assert_fail("prometheus did not become ready (log %s/prometheus.log)", tmpdir);
    return 0;
}

/* Polls an instant query until its JSON answer contains want (bounded at
 * 30 s); returns the last answer (mem_free). */
static char *query_until(int prom_port, const char *q, const char *want)
{
    char *enc = url_encode(q);
    char *path = mem_printf("/api/v1/query?query=%s", enc);
    char *body = NULL;
    for (int i = 0; i < 300; i++) {
        mem_free(body);
        int status = 0;
        body = http_get(prom_port, path, &status);
        if (body && status == 200 && strstr(body, want))
            break;
        usleep(100000);
    }
    mem_free(path);
    mem_free(enc);
    return body;
}

Test(metrics, every_binary_is_scraped_and_shows_a_call_through_the_gateway)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/onceiot-metrics-%d", (int)getpid());
    char *mk = mem_printf("rm -rf '%s' && mkdir -p '%s'", tmpdir, tmpdir);
    cr_assert_eq(run(mk), 0);
    mem_free(mk);

    int ports[3] = {ph_free_port(), ph_free_port(), ph_free_port()};
    while (ports[1] == ports[0])
        ports[1] = ph_free_port();
    while (ports[2] == ports[0] || ports[2] == ports[1])
        ports[2] = ph_free_port();
    char envs[3][64];
    for (int i = 0; i < 3; i++)
        snprintf(envs[i], sizeof(envs[i]), "ONCEIOT_METRICS_LISTEN=127.0.0.1:%d", ports[i]);
    const char *id_env[] = {envs[0], NULL}, *sims_env[] = {envs[1], NULL},
               *gw_env[] = {envs[2], NULL};
    sh_start_with_sims_env(&st, id_env, sims_env, gw_env);

    /* One call through the gateway: ListSims as the admin. */
    rpc_channel_t *ch = NULL;
    cr_assert_eq(rpc_channel_new(st.gateway.addr, 0, &ch), 0);
    arena_t *arena = arena_new();
    char bearer[160];
    snprintf(bearer, sizeof(bearer), "Bearer %s", st.admin_key);
    rpc_md_t md[] = {{"authorization", bearer, strlen(bearer)}};
    rpc_call_opts_t opts = {.timeout_ms = 10000, .metadata = md, .n_metadata = 1};
    Onceiot__Sims__V1__ListSimsRequest req = ONCEIOT__SIMS__V1__LIST_SIMS_REQUEST__INIT;
    Onceiot__Sims__V1__ListSimsResponse *resp = NULL;
    rpc_status_t rs;
    int rc = rpc_unary(ch, "/onceiot.sims.v1.SimService/ListSims", &req.base,
                       &onceiot__sims__v1__list_sims_response__descriptor, arena, &opts,
                       (ProtobufCMessage **)&resp, &rs);
    cr_assert_eq(rc, 0, "ListSims through the gateway: %s", rs.message ? rs.message : "");
    rpc_channel_free(ch);
    arena_free(arena);

    /* Every endpoint: the exposition format passes promtool's check and
     * carries the families dashboards look for. */
    const char *names[3] = {"identity", "sims", "gateway"};
    for (int i = 0; i < 3; i++) {
        int status = 0;
        char *body = http_get(ports[i], "/metrics", &status);
        cr_assert(body, "%s: no answer on its metrics port %d", names[i], ports[i]);
        cr_assert_eq(status, 200, "%s: HTTP %d", names[i], status);
        cr_assert(strstr(body, "# TYPE grpc_server_handled_total counter"), "%s: %s", names[i],
                  body);
        cr_assert(strstr(body, "# TYPE grpc_server_handling_seconds histogram"));
        cr_assert(strstr(body, "process_resident_memory_bytes "));
        cr_assert(strstr(body, "process_open_fds "));
        if (i < 2)
            cr_assert(strstr(body, "onceiot_db_pool_connections_in_use "), "%s", names[i]);
        char *file = mem_printf("%s/%s.prom", tmpdir, names[i]);
        FILE *f = fopen(file, "w");
        cr_assert(f);
        fputs(body, f);
        fclose(f);
        char *cmd = mem_printf("promtool check metrics < '%s' > '%s.check' 2>&1", file, file);
        int prc = run(cmd);
        cr_assert_eq(prc, 0, "%s: promtool check metrics failed (see %s.check)", names[i], file);
        mem_free(cmd);
        mem_free(file);
        mem_free(body);
    }
    {
        int status = 0;
        char *body = http_get(ports[2], "/metrics", &status);
        cr_assert(strstr(body, "grpc_client_handled_total{grpc_type=\"unary\",grpc_service="
                               "\"onceiot.sims.v1.SimService\",grpc_method=\"ListSims\","
                               "grpc_code=\"OK\"} 1\n"),
                  "the gateway's upstream call: %s", body);
        cr_assert(strstr(body, "onceiot_gateway_upstream_handled_total{upstream=\"sims\","
                               "grpc_code=\"OK\"} 1\n"));
        cr_assert(strstr(body, "onceiot_gateway_auth_cache_misses_total 1\n"), "%s", body);
        mem_free(body);
        body = http_get(ports[0], "/nothing", &status);
        cr_assert_eq(status, 404);
        mem_free(body);
    }

    /* The real server scrapes all three and sees the call at both hops. */
    int prom = start_prometheus(ports, 3);
    char *up = query_until(prom, "count(up == 1)", "\"3\"]");
    cr_assert(up && strstr(up, "\"3\"]"), "not every target is up: %s", up ? up : "");
    mem_free(up);
    for (int i = 1; i < 3; i++) {
        char *q = mem_printf("grpc_server_handled_total{instance=\"127.0.0.1:%d\","
                             "grpc_service=\"onceiot.sims.v1.SimService\","
                             "grpc_method=\"ListSims\",grpc_code=\"OK\",grpc_type=\"unary\"}",
                             ports[i]);
        char *ans = query_until(prom, q, "\"1\"]");
        cr_assert(ans && strstr(ans, "\"1\"]"), "%s: %s", names[i], ans ? ans : "");
        mem_free(ans);
        mem_free(q);
    }
}
