/* Starting identity + testsvc + gateway for the gateway tests. */
#include "stack_harness.h"
#include "usage_harness.h"

#include "onceiot/mem.h"

#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void sh__hex32(char out[65])
{
    uint8_t b[32];
    randombytes_buf(b, sizeof(b));
    sodium_bin2hex(out, 65, b, sizeof(b));
}

static void sh__sql(const char *sql)
{
    const char *url = getenv("ONCEIOT_TEST_PG_URL");
    cr_assert(url, "ONCEIOT_TEST_PG_URL is not set; run tests via ./tools/stack test");
    PGconn *c = PQconnectdb(url);
    cr_assert(PQstatus(c) == CONNECTION_OK, "test database: %s", PQerrorMessage(c));
    PGresult *r = PQexec(c, sql);
    cr_assert(PQresultStatus(r) == PGRES_COMMAND_OK, "%s", PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
}

/* Reads the first line of path into out; false if it is not there yet. */
static bool sh__read_line(const char *path, char *out, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    bool ok = fgets(out, (int)cap, f) != NULL;
    fclose(f);
    if (ok)
        out[strcspn(out, "\r\n")] = '\0';
    return ok && out[0];
}

/* Joins base and extra entries into one NULL-terminated array (arena-less:
 * the caller frees the array only). */
static const char **sh__env(const char *const *base, size_t n_base, const char *const *extra)
{
    size_t n_extra = 0;
    while (extra && extra[n_extra])
        n_extra++;
    const char **env = mem_calloc(n_base + n_extra + 1, sizeof(char *));
    /* The caller's entries first: the first match wins in getenv. */
    for (size_t i = 0; i < n_extra; i++)
        env[i] = extra[i];
    for (size_t i = 0; i < n_base; i++)
        env[n_extra + i] = base[i];
    return env;
}

/* Starts the gateway with the stack's addresses on port (0: a free one);
 * wait: until SERVING. */
static void sh__launch_gateway(sh_stack_t *s, const char *const *gateway_env, bool wait, int port)
{
    char key[96], identity[96], test[96];
    snprintf(key, sizeof(key), "ONCEIOT_PRINCIPAL_KEY=%s", s->principal_key);
    snprintf(identity, sizeof(identity), "ONCEIOT_IDENTITY_ADDR=%s", s->identity.addr);
    snprintf(test, sizeof(test), "ONCEIOT_TEST_ADDR=%s", s->testsvc.addr);
    /* The product services not under test point at a port nothing uses. */
    char down[96];
    snprintf(down, sizeof(down), "127.0.0.1:%d", ph_free_port());
    char sims[128], usage[128], commerce[128], support[128];
    snprintf(sims, sizeof(sims), "ONCEIOT_SIMS_ADDR=%s", s->sims.pid ? s->sims.addr : down);
    snprintf(usage, sizeof(usage), "ONCEIOT_USAGE_ADDR=%s", s->usage.pid ? s->usage.addr : down);
    snprintf(commerce, sizeof(commerce), "ONCEIOT_COMMERCE_ADDR=%s",
             s->commerce.pid ? s->commerce.addr : down);
    snprintf(support, sizeof(support), "ONCEIOT_SUPPORT_ADDR=%s", down);
    /* The gateway signs for every upstream with its key for each. */
    char *signing = ph_signing_keys_env(
        s->principal_key, "gateway",
        (const char *const[]){"identity", "sims", "usage", "commerce", "support", "test", NULL});
    const char *base[] = {key, signing, identity, test, sims, usage, commerce, support};
    const char **env = sh__env(base, sizeof(base) / sizeof(*base), gateway_env);
    char *bin = ph_build_path("tests/onceiot-gateway-test");
    if (!port)
        port = ph_free_port();
    if (wait)
        ph_start_at(&s->gateway, port, bin, env);
    else
        ph_spawn_at(&s->gateway, port, bin, env);
    mem_free(bin);
    mem_free(env);
    mem_free(signing);
}

void sh_start_gateway(sh_stack_t *s, const char *const *gateway_env)
{
    sh__launch_gateway(s, gateway_env, true, 0);
}

/* Starts onceiot-sims with the stack's key on port (0: a free one), on a
 * fresh "sims" schema unless it is a restart (port given). */
static void sh__start_sims(sh_stack_t *s, int port, const char *const *sims_env)
{
    if (!port)
        sh__sql("SET client_min_messages = warning;"
                "CREATE SCHEMA IF NOT EXISTS partman;"
                "CREATE EXTENSION IF NOT EXISTS pg_partman SCHEMA partman;"
                "CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public;"
                "DROP SCHEMA IF EXISTS sims CASCADE");
    char *key = mem_printf("ONCEIOT_PRINCIPAL_KEY=%s", s->principal_key);
    char *db = mem_printf("ONCEIOT_DATABASE_URL=%s", getenv("ONCEIOT_TEST_PG_URL"));
    char *schema = ph_source_path("schema");
    char *dir = mem_printf("ONCEIOT_SCHEMA_DIR=%s/sims", schema);
    const char *base[] = {key, db, dir, "ONCEIOT_HEALTH_INTERVAL_MS=100", "ONCEIOT_GRACE_MS=3000"};
    const char **env = sh__env(base, sizeof(base) / sizeof(*base), sims_env);
    char *bin = ph_build_path("services/onceiot-sims");
    ph_start_at(&s->sims, port ? port : ph_free_port(), bin, env);
    mem_free(bin);
    mem_free(env);
    mem_free(dir);
    mem_free(schema);
    mem_free(db);
    mem_free(key);
}

/* The environments of onceiot-commerce and onceiot-usage (kept for
 * restarts). */
static char *commerce_env[10];
static char *usage_env[10];

/* The kept environment of p (commerce or usage). */
static char **sh__callee_env(sh_stack_t *s, const ph_proc_t *p)
{
    return p == &s->commerce ? commerce_env : usage_env;
}

/* Starts onceiot-<name> (commerce or usage, p its process) with its kept
 * environment on port (0: a free one) and waits until it is SERVING. */
static void sh__start_callee(sh_stack_t *s, ph_proc_t *p, int port)
{
    char *bin =
        ph_build_path(p == &s->commerce ? "services/onceiot-commerce" : "services/onceiot-usage");
    ph_start_at(p, port ? port : ph_free_port(), bin, (const char *const *)sh__callee_env(s, p));
    mem_free(bin);
}

/* A service that calls sims and runs an outbox (commerce, usage) on a
 * freshly dropped schema of its name, outbox lease 2 s; then the gateway
 * again (with gateway_env), now routing the service to it. */
static void sh__add_callee(sh_stack_t *s, const char *name, ph_proc_t *p,
                           const char *const *gateway_env)
{
    cr_assert(s->sims.pid, "%s needs sims: sh_start_with_sims first", name);
    char *drop =
        mem_printf("SET client_min_messages = warning; DROP SCHEMA IF EXISTS %s CASCADE", name);
    sh__sql(drop);
    mem_free(drop);
    char *schema = ph_source_path("schema");
    char **env = sh__callee_env(s, p);
    env[0] = mem_printf("ONCEIOT_PRINCIPAL_KEY=%s", s->principal_key);
    env[1] = ph_signing_keys_env(s->principal_key, name, (const char *const[]){"sims", NULL});
    env[2] = mem_printf("ONCEIOT_SIMS_ADDR=%s", s->sims.addr);
    env[3] = mem_printf("ONCEIOT_DATABASE_URL=%s", getenv("ONCEIOT_TEST_PG_URL"));
    env[4] = mem_printf("ONCEIOT_SCHEMA_DIR=%s/%s", schema, name);
    env[5] = mem_strdup("ONCEIOT_GRACE_MS=3000");
    env[6] = mem_strdup("ONCEIOT_OUTBOX_LEASE_MS=2000");
    env[7] = NULL;
    mem_free(schema);
    sh__start_callee(s, p, 0);
    int code = ph_stop(&s->gateway, SIGTERM, 20000);
    cr_assert_eq(code, 0, "gateway exit %d (log %s)", code, s->gateway.log);
    sh_start_gateway(s, gateway_env);
}

void sh_add_commerce(sh_stack_t *s, const char *const *gateway_env)
{
    sh__add_callee(s, "commerce", &s->commerce, gateway_env);
}

void sh_add_usage(sh_stack_t *s, const char *const *gateway_env)
{
    sh__add_callee(s, "usage", &s->usage, gateway_env);
}

void sh_restart_commerce(sh_stack_t *s, int sig)
{
    int port = s->commerce.port;
    ph_stop(&s->commerce, sig, 20000);
    cr_assert(!ph_log_has_sanitizer_report(&s->commerce), "sanitizer report in %s",
              s->commerce.log);
    sh__start_callee(s, &s->commerce, port);
}

bool sh_kill_usage_mid_delivery(sh_stack_t *s, void (*commit)(void *), void *arg, int timeout_ms)
{
    cr_assert(s->usage.pid && s->sims.pid, "sh_kill_usage_mid_delivery: usage and sims first");
    int port = s->usage.port;
    kill(s->sims.pid, SIGSTOP);
    if (commit)
        commit(arg);
    bool leased = usage_h_wait_leased(timeout_ms);
    ph_stop(&s->usage, SIGKILL, 5000);
    kill(s->sims.pid, SIGCONT);
    sh__start_callee(s, &s->usage, port);
    return leased;
}

void sh_kill_sims(sh_stack_t *s)
{
    if (s->sims.pid)
        ph_stop(&s->sims, SIGKILL, 5000);
}

void sh_restart_sims(sh_stack_t *s)
{
    sh__start_sims(s, s->sims.port, NULL);
}

/* Fresh keys and schema for a new stack; the bootstrap key file is reset. */
static void sh__prepare(sh_stack_t *s)
{
    memset(s, 0, sizeof(*s));
    cr_assert(sodium_init() >= 0);
    sh__hex32(s->principal_key);
    sh__hex32(s->signing_seed);
    sh__hex32(s->pepper);
    sh__sql("SET client_min_messages = warning; DROP SCHEMA IF EXISTS identity CASCADE");
    snprintf(s->key_file, sizeof(s->key_file), "/tmp/onceiot-gw-admin-%d.key", (int)getpid());
    unlink(s->key_file);
}

/* Starts identity on port (0: a free one), waits until it is SERVING and
 * reads the bootstrap admin's key. */
static void sh__start_identity(sh_stack_t *s, int port, const char *const *identity_env)
{
    char key[96], signing[96], pepper[96], db[512], kf[300];
    snprintf(key, sizeof(key), "ONCEIOT_PRINCIPAL_KEY=%s", s->principal_key);
    snprintf(signing, sizeof(signing), "ONCEIOT_TOKEN_SIGNING_KEY=%s", s->signing_seed);
    snprintf(pepper, sizeof(pepper), "ONCEIOT_API_KEY_PEPPER=%s", s->pepper);
    snprintf(db, sizeof(db), "ONCEIOT_DATABASE_URL=%s", getenv("ONCEIOT_TEST_PG_URL"));
    snprintf(kf, sizeof(kf), "ONCEIOT_BOOTSTRAP_KEY_FILE=%s", s->key_file);
    const char *base[] = {key, signing, pepper,
                          db,  kf,      "ONCEIOT_BOOTSTRAP_ADMIN_PASSWORD=" SH_PASSWORD};
    const char **env = sh__env(base, sizeof(base) / sizeof(*base), identity_env);
    char *bin = ph_build_path("services/onceiot-identity");
    ph_start_at(&s->identity, port ? port : ph_free_port(), bin, env);
    mem_free(bin);
    mem_free(env);
    cr_assert(sh__read_line(s->key_file, s->admin_key, sizeof(s->admin_key)),
              "identity wrote no bootstrap key to %s (log %s)", s->key_file, s->identity.log);
}

static void sh__start_testsvc(sh_stack_t *s, int port, bool fresh)
{
    char key[96];
    snprintf(key, sizeof(key), "ONCEIOT_PRINCIPAL_KEY=%s", s->principal_key);
    ph_start_testsvc_at(&s->testsvc, port ? port : ph_free_port(), fresh,
                        (const char *const[]){key, NULL});
}

/* sh_start, with sims behind the gateway when with_sims. */
static void sh__start(sh_stack_t *s, bool with_sims, const char *const *identity_env,
                      const char *const *sims_env, const char *const *gateway_env)
{
    sh__prepare(s);
    sh__start_identity(s, 0, identity_env);
    sh__start_testsvc(s, 0, true);
    if (with_sims)
        sh__start_sims(s, 0, sims_env);
    sh_start_gateway(s, gateway_env);
    /* The gateway is SERVING only once it has identity's keys. */
    cr_assert(ph_log_contains(&s->gateway, "verification_keys_loaded"),
              "the gateway SERVING without identity's verification keys (log %s)", s->gateway.log);
}

void sh_start_gateway_first(sh_stack_t *s, const char *const *gateway_env)
{
    sh__prepare(s);
    sh__start_testsvc(s, 0, true);
    /* identity's address is known before anything listens there. */
    s->identity.port = ph_free_port();
    snprintf(s->identity.addr, sizeof(s->identity.addr), "127.0.0.1:%d", s->identity.port);
    sh__launch_gateway(s, gateway_env, false, 0);
    /* Answering at all (any status) is when the test can look. */
    for (int i = 0; i < 600 && ph_health(s->gateway.addr, "") < 0; i++)
        usleep(50000);
    cr_assert(ph_health(s->gateway.addr, "") >= 0, "the gateway never answered (log %s)",
              s->gateway.log);
}

void sh_start_identity(sh_stack_t *s, const char *const *identity_env)
{
    sh__start_identity(s, s->identity.port, identity_env);
}

void sh_restart_testsvc(sh_stack_t *s)
{
    int port = s->testsvc.port;
    if (s->testsvc.pid)
        ph_stop(&s->testsvc, SIGKILL, 5000);
    sh__start_testsvc(s, port, false);
}

void sh_kill_restart(sh_stack_t *s, ph_proc_t *p)
{
    int port = p->port;
    cr_assert(p->pid, "not running");
    ph_stop(p, SIGKILL, 5000);
    if (p == &s->identity)
        sh__start_identity(s, port, NULL);
    else if (p == &s->sims)
        sh__start_sims(s, port, NULL);
    else if (p == &s->gateway)
        sh__launch_gateway(s, NULL, true, port);
    else if (p == &s->commerce || p == &s->usage)
        sh__start_callee(s, p, port);
    else
        cr_assert_fail("sh_kill_restart: identity, sims, commerce, usage or the gateway");
}

void sh_start(sh_stack_t *s, const char *const *identity_env, const char *const *gateway_env)
{
    sh__start(s, false, identity_env, NULL, gateway_env);
}

void sh_start_with_sims(sh_stack_t *s, const char *const *identity_env,
                        const char *const *gateway_env)
{
    sh__start(s, true, identity_env, NULL, gateway_env);
}

void sh_start_with_sims_env(sh_stack_t *s, const char *const *identity_env,
                            const char *const *sims_env, const char *const *gateway_env)
{
    sh__start(s, true, identity_env, sims_env, gateway_env);
}

static void sh__stop_one(ph_proc_t *p)
{
    if (p->pid) {
        int code = ph_stop(p, SIGTERM, 20000);
        cr_expect_eq(code, 0, "exit code %d (log %s)", code, p->log);
    }
    cr_expect(!ph_log_has_sanitizer_report(p), "sanitizer report in %s", p->log);
}

void sh_stop(sh_stack_t *s)
{
    sh__stop_one(&s->gateway);
    ph_proc_t *callees[] = {&s->commerce, &s->usage};
    for (size_t c = 0; c < 2; c++) {
        if (callees[c]->pid || callees[c]->log[0])
            sh__stop_one(callees[c]);
        char **env = sh__callee_env(s, callees[c]);
        for (size_t i = 0; env[i]; i++) {
            mem_free(env[i]);
            env[i] = NULL;
        }
    }
    if (s->sims.pid)
        sh__stop_one(&s->sims);
    sh__stop_one(&s->testsvc);
    sh__stop_one(&s->identity);
    unlink(s->key_file);
}
