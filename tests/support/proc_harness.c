/* Process harness for integration tests; see proc_harness.h. */
#include "proc_harness.h"

#include "grpc/health/v1/health.pb-c.h"
#include "onceiot/client.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static int64_t ph__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void ph__sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int ph_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
    socklen_t len = sizeof(a);
    cr_assert(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    close(fd);
    return ntohs(a.sin_port);
}

char *ph_build_path(const char *rel)
{
    const char *b = getenv("ONCEIOT_BUILD_DIR");
    cr_assert(b, "ONCEIOT_BUILD_DIR is not set; run the tests through ctest");
    return mem_printf("%s/%s", b, rel);
}

char *ph_source_path(const char *rel)
{
    const char *b = getenv("ONCEIOT_SOURCE_DIR");
    cr_assert(b, "ONCEIOT_SOURCE_DIR is not set; run the tests through ctest");
    return mem_printf("%s/%s", b, rel);
}

void ph_spawn(ph_proc_t *p, const char *binary, const char *const *env)
{
    ph_spawn_at(p, ph_free_port(), binary, env);
}

void ph_spawn_at(ph_proc_t *p, int port, const char *binary, const char *const *env)
{
    ph_spawn_cmd(p, port, binary, NULL, env);
}

void ph_spawn_cmd(ph_proc_t *p, int port, const char *binary, const char *arg,
                  const char *const *env)
{
    memset(p, 0, sizeof(*p));
    p->port = port;
    snprintf(p->addr, sizeof(p->addr), "127.0.0.1:%d", p->port);
    const char *base = strrchr(binary, '/');
    base = base ? base + 1 : binary;
    char *dir = ph_build_path("testlogs");
    mkdir(dir, 0755);
    snprintf(p->log, sizeof(p->log), "%s/%s-%d-%lld.log", dir, base, p->port,
             (long long)ph__now_ms());
    mem_free(dir);

    size_t n_env = 0;
    while (environ[n_env])
        n_env++;
    size_t n_extra = 0;
    while (env && env[n_extra])
        n_extra++;
    char **envp = mem_calloc(n_env + n_extra + 3, sizeof(char *));
    size_t k = 0;
    /* Later entries win in getenv's first-match search only if placed first. */
    for (size_t i = 0; i < n_extra; i++)
        envp[k++] = (char *)env[i];
    char listen[96];
    snprintf(listen, sizeof(listen), "ONCEIOT_LISTEN=%s", p->addr);
    envp[k++] = listen;
    /* Each line is in the log file when its call returns, so that a test's
     * "the secret is not in the log" reads every line written so far. The
     * writer thread has its own tests (test_runtime.c), which set this. */
    envp[k++] = "ONCEIOT_LOG_WRITER=false";
    for (size_t i = 0; i < n_env; i++)
        envp[k++] = environ[i];

    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork failed");
    if (pid == 0) {
        /* Dies with the test process, even when that one crashes. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(p->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        char *argv[] = {(char *)binary, (char *)arg, NULL};
        execve(binary, argv, envp);
        _exit(127);
    }
    mem_free(envp);
    p->pid = pid;
}

int ph_health(const char *addr, const char *service)
{
    rpc_channel_t *ch = NULL;
    if (rpc_channel_new(addr, 0, &ch) < 0)
        return -1;
    arena_t *a = arena_new();
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)service;
    rpc_call_opts_t opts = {.timeout_ms = 1000};
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    int rc = rpc_unary(ch, "/grpc.health.v1.Health/Check", &req.base,
                       &grpc__health__v1__health_check_response__descriptor, a, &opts, &resp, &st);
    int out = rc < 0 ? -1 : (int)((Grpc__Health__V1__HealthCheckResponse *)resp)->status;
    arena_free(a);
    rpc_channel_free(ch);
    return out;
}

bool ph_wait_health(const char *addr, const char *service, int want, int timeout_ms)
{
    int64_t end = ph__now_ms() + timeout_ms;
    do {
        if (ph_health(addr, service) == want)
            return true;
        ph__sleep_ms(50);
    } while (ph__now_ms() < end);
    return false;
}

static void ph__print_log_tail(const ph_proc_t *p)
{
    FILE *f = fopen(p->log, "r");
    if (!f)
        return;
    char line[1024];
    fprintf(stderr, "---- %s ----\n", p->log);
    while (fgets(line, sizeof(line), f))
        fputs(line, stderr);
    fclose(f);
}

void ph_start(ph_proc_t *p, const char *binary, const char *const *env)
{
    ph_start_at(p, ph_free_port(), binary, env);
}

void ph_start_at(ph_proc_t *p, int port, const char *binary, const char *const *env)
{
    ph_spawn_at(p, port, binary, env);
    if (!ph_wait_health(p->addr, "", 1, 30000)) {
        ph__print_log_tail(p);
        cr_assert_fail("%s did not become SERVING on %s", binary, p->addr);
    }
}

int ph_stop(ph_proc_t *p, int sig, int timeout_ms)
{
    if (!p->pid)
        return -1;
    kill(p->pid, sig);
    int64_t end = ph__now_ms() + timeout_ms;
    int status = 0;
    for (;;) {
        pid_t r = waitpid(p->pid, &status, WNOHANG);
        if (r == p->pid)
            break;
        if (ph__now_ms() >= end) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &status, 0);
            break;
        }
        ph__sleep_ms(20);
    }
    p->pid = 0;
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

bool ph_log_contains(const ph_proc_t *p, const char *needle)
{
    FILE *f = fopen(p->log, "r");
    if (!f)
        return false;
    char line[4096];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f))
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

bool ph_log_has_sanitizer_report(const ph_proc_t *p)
{
    return ph_log_contains(p, "ERROR: AddressSanitizer") ||
           ph_log_contains(p, "ERROR: LeakSanitizer") || ph_log_contains(p, "runtime error:");
}

void ph_start_testsvc(ph_proc_t *p, const char *const *env)
{
    ph_start_testsvc_at(p, ph_free_port(), true, env);
}

void ph_start_testsvc_at(ph_proc_t *p, int port, bool fresh, const char *const *env)
{
    const char *url = getenv("ONCEIOT_TEST_PG_URL");
    cr_assert(url, "ONCEIOT_TEST_PG_URL is not set; run tests via ./tools/stack test");
    if (fresh) {
        PGconn *c = PQconnectdb(url);
        cr_assert(PQstatus(c) == CONNECTION_OK, "test database: %s", PQerrorMessage(c));
        PGresult *r =
            PQexec(c, "SET client_min_messages = warning; DROP SCHEMA IF EXISTS testsvc CASCADE");
        cr_assert(PQresultStatus(r) == PGRES_COMMAND_OK, "%s", PQerrorMessage(c));
        PQclear(r);
        PQfinish(c);
    }

    char *db = mem_printf("ONCEIOT_DATABASE_URL=%s", url);
    char *dir_path = ph_source_path("tests/testsvc/schema");
    char *dir = mem_printf("ONCEIOT_SCHEMA_DIR=%s", dir_path);
    const char *all[32];
    size_t k = 0;
    all[k++] = db;
    all[k++] = dir;
    all[k++] = "ONCEIOT_HEALTH_INTERVAL_MS=100";
    for (size_t i = 0; env && env[i] && k < 31; i++)
        all[k++] = env[i];
    all[k] = NULL;
    char *bin = ph_build_path("tests/onceiot-testsvc");
    ph_start_at(p, port, bin, all);
    mem_free(bin);
    mem_free(db);
    mem_free(dir);
    mem_free(dir_path);
}

void ph_issuer_key(const char *secret_hex, const char *issuer, principal_key_t *out)
{
    principal_key_t secret;
    cr_assert_eq(principal_key_parse(secret_hex, &secret), 0, "bad test secret");
    principal_key_derive(&secret, issuer, out);
}

char *ph_signing_keys_env(const char *secret_hex, const char *issuer, const char *const *callees)
{
    principal_key_t k;
    ph_issuer_key(secret_hex, issuer, &k);
    char hex[65];
    sodium_bin2hex(hex, sizeof(hex), k.bytes, sizeof(k.bytes));
    char *out = mem_strdup("ONCEIOT_PRINCIPAL_SIGNING_KEYS=");
    for (size_t i = 0; callees[i]; i++) {
        char *next = mem_printf("%s%s%s:%s", out, i ? "," : "", callees[i], hex);
        mem_free(out);
        out = next;
    }
    return out;
}
