/* The common main of every binary: configuration, logging, database,
 * migrations, server, health and the SIGTERM drain. */
#include "onceiot/svc.h"

#include "svc_int.h"

#include "onceiot/audit.h"
#include "onceiot/authrule.h"
#include "onceiot/client.h"

#include "onceiot/config.h"
#include "onceiot/descset.h"
#include "onceiot/log.h"
#include "onceiot/metrics.h"
#include "onceiot/migrate.h"
#include "onceiot/outbox.h"
#include "onceiot/requestid.h"

#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The log writer's ring: at about 300 bytes a line, some 3,500 lines, tens of
 * milliseconds of a busy server's calls, before a caller waits. */
#define SVC_LOG_RING_BYTES (1u << 20)

static rpc_server_t *volatile svc__signal_target;

static void svc__on_signal(int sig)
{
    (void)sig;
    if (svc__signal_target)
        rpc_server_drain(svc__signal_target);
}

db_pool_t *svc_db(const svc_t *svc)
{
    return svc->db;
}

rpc_server_t *svc_server(const svc_t *svc)
{
    return svc->srv;
}

const svc_def_t *svc_def(const svc_t *svc)
{
    return svc->def;
}

void svc_set_state(svc_t *svc, void *state)
{
    svc->state = state;
}

void *svc_state(const svc_t *svc)
{
    return svc->state;
}

/* Loads the configuration; the schema directory defaults to the source tree's
 * schema/<name> so a developer build needs no setting. */
static int svc__config(svc_t *svc, char *err, size_t errlen)
{
    svc_config_t *c = &svc->cfg;
    const svc_def_t *d = svc->def;
    static char default_dir[512];
    snprintf(default_dir, sizeof(default_dir), "%s/%s", ONCEIOT_DEFAULT_SCHEMA_ROOT, d->name);
    const cfg_var_t vars[] = {
        {"ONCEIOT_LISTEN", CFG_ADDR, d->default_listen, true, 0, 0, &c->listen,
         "address to listen on, host:port"},
        {"ONCEIOT_DATABASE_URL", CFG_STRING, NULL, d->uses_db, 0, 0, &c->database_url,
         "PostgreSQL connection URL of this service's role"},
        {"ONCEIOT_DB_POOL_SIZE", CFG_INT, "4", false, 1, 256, &c->pool_size, NULL},
        {"ONCEIOT_DB_STATEMENT_TIMEOUT_MS", CFG_INT, "30000", false, 0, 3600000,
         &c->statement_timeout_ms, NULL},
        {"ONCEIOT_DB_CONNECT_TIMEOUT_MS", CFG_INT, "5000", false, 100, 600000,
         &c->connect_timeout_ms, NULL},
        {"ONCEIOT_SCHEMA_DIR", CFG_STRING, default_dir, false, 0, 0, &c->schema_dir, NULL},
        {"ONCEIOT_MIGRATE_ON_START", CFG_BOOL, "true", false, 0, 0, &c->migrate_on_start, NULL},
        {"ONCEIOT_IO_THREADS", CFG_INT, "2", false, 1, 64, &c->io_threads, NULL},
        {"ONCEIOT_WORKERS", CFG_INT, "4", false, 1, 1024, &c->workers, NULL},
        {"ONCEIOT_QUEUE_LIMIT", CFG_INT, "1024", false, 1, 1000000, &c->queue_limit, NULL},
        {"ONCEIOT_MAX_STREAMS", CFG_INT, "256", false, 1, 100000, &c->max_streams, NULL},
        {"ONCEIOT_MAX_MESSAGE_BYTES", CFG_INT, "4194304", false, 1024, 1073741824,
         &c->max_message_bytes, NULL},
        {"ONCEIOT_GRACE_MS", CFG_INT, "10000", false, 0, 3600000, &c->grace_ms, NULL},
        {"ONCEIOT_MAX_CONNECTION_AGE_MS", CFG_INT, "30000", false, 0, 86400000,
         &c->max_connection_age_ms,
         "a client connection is told to go (GOAWAY) after this, so clients re-resolve; 0: never"},
        {"ONCEIOT_MAX_CONNECTION_AGE_GRACE_MS", CFG_INT, "3600000", false, 0, 86400000,
         &c->max_connection_age_grace_ms,
         "calls on a connection told to go get this long to finish (streams: their lifetime)"},
        {"ONCEIOT_HEALTH_INTERVAL_MS", CFG_INT, "1000", false, 50, 600000, &c->health_interval_ms,
         NULL},
        {"ONCEIOT_UPKEEP_INTERVAL_S", CFG_INT, "3600", false, 1, 86400, &c->upkeep_interval_s,
         "seconds between prunes of expired request ids and the service's own upkeep"},
        {"ONCEIOT_LOG_LEVEL", CFG_STRING, "info", false, 0, 0, &c->log_level, NULL},
        {"ONCEIOT_LOG_WRITER", CFG_BOOL, "true", false, 0, 0, &c->log_writer,
         "a server hands its log lines to a writer thread (false: each caller writes its own)"},
        {"ONCEIOT_PRINCIPAL_KEY", CFG_STRING, NULL, d->authenticated, 0, 0, &c->principal_key_hex,
         "64 hex digits: this service's own secret, from which its callers' keys derive"},
        {"ONCEIOT_PRINCIPAL_SIGNING_KEYS", CFG_STRING, "", false, 0, 0, &c->signing_keys,
         "service:<64 hex>,...: the keys this process signs principals with, per callee"},
        {"ONCEIOT_METRICS_LISTEN", CFG_ADDR, NULL, false, 0, 0, &c->metrics_listen,
         "host:port of the Prometheus endpoint (/metrics); unset: no metrics"},
    };
    int rc = cfg_load(vars, sizeof(vars) / sizeof(vars[0]), err, errlen);
    if (rc < 0)
        return rc;
    if (c->principal_key_hex &&
        principal_key_parse(c->principal_key_hex, &svc->principal_key) < 0) {
        snprintf(err, errlen, "ONCEIOT_PRINCIPAL_KEY: must be 64 hex digits (32 random bytes)");
        return ERR_CONFIG;
    }
    if (principal_signing_keys_parse(c->signing_keys, &svc->signing) < 0) {
        snprintf(err, errlen,
                 "ONCEIOT_PRINCIPAL_SIGNING_KEYS: must be service:<64 hex digits> entries "
                 "separated by commas, each service once (onceiot-keys prints them)");
        return ERR_CONFIG;
    }
    if (log_level_parse(c->log_level) < 0) {
        snprintf(err, errlen, "ONCEIOT_LOG_LEVEL: must be debug, info, warn or error (got \"%s\")",
                 c->log_level);
        return ERR_CONFIG;
    }
    return 0;
}

/* The runtime modules' tables, in every service schema: a service that does
 * not use one has it empty. */
static int svc__migrate(svc_t *svc)
{
    migrate_embedded_t runtime[OUTBOX_N_MIGRATIONS + REQUESTID_N_MIGRATIONS + AUDIT_N_MIGRATIONS];
    memcpy(runtime, outbox_migrations, sizeof(outbox_migrations));
    memcpy(runtime + OUTBOX_N_MIGRATIONS, requestid_migrations, sizeof(requestid_migrations));
    memcpy(runtime + OUTBOX_N_MIGRATIONS + REQUESTID_N_MIGRATIONS, audit_migrations,
           sizeof(audit_migrations));
    char err[1024] = "";
    migrate_result_t res = {0, 0};
    int rc = migrate_run_with(svc->cfg.database_url, svc->def->name, runtime,
                              sizeof(runtime) / sizeof(runtime[0]), svc->cfg.schema_dir, &res, err,
                              sizeof(err));
    if (rc < 0) {
        log_msg(LOG_ERROR, "migrate_failed", "%s", err);
        return rc;
    }
    log_rec_t r;
    log_begin(&r, LOG_INFO, "migrated");
    log_str(&r, "schema", svc->def->name);
    log_int(&r, "applied", res.applied);
    log_int(&r, "total", res.total);
    log_end(&r);
    return 0;
}

static int64_t svc__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Every health interval while the database is up: the audit records
 * tracked changes left pending go onto the chain, a batch at a time (at
 * most AUDIT_CHAIN_ROUNDS batches a tick). */
#define AUDIT_CHAIN_BATCH  1000
#define AUDIT_CHAIN_ROUNDS 20
static void svc__chain_audit(svc_t *svc)
{
    db_conn_t *conn = NULL;
    if (db_pool_acquire(svc->db, svc->cfg.health_interval_ms, &conn) < 0)
        return; /* busy or down: at the next tick */
    for (int i = 0; i < AUDIT_CHAIN_ROUNDS; i++) {
        int moved = audit_chain_pending(conn, AUDIT_CHAIN_BATCH);
        if (moved < 0)
            log_msg(LOG_WARN, "audit_chain_failed", "%s", db_errmsg(conn));
        if (moved < AUDIT_CHAIN_BATCH)
            break;
    }
    db_pool_release(svc->db, conn);
}

/* Every upkeep interval while the database is up: request ids past their
 * retention, then the service's own upkeep. A failure is logged and tried
 * again at the next interval. */
static void svc__upkeep(svc_t *svc)
{
    int64_t now = svc__now_ms();
    if (now < svc->next_upkeep_ms)
        return;
    svc->next_upkeep_ms = now + svc->cfg.upkeep_interval_s * 1000;
    db_conn_t *conn = NULL;
    if (db_pool_acquire(svc->db, svc->cfg.health_interval_ms, &conn) < 0) {
        svc->next_upkeep_ms = now; /* busy or down: at the next tick */
        return;
    }
    db_set_scope(conn, 0, true); /* internal work: every organization */
    int pruned = requestid_prune(conn, REQUESTID_KEEP_HOURS);
    if (pruned < 0)
        log_msg(LOG_WARN, "upkeep_failed", "pruning request ids: %s", db_errmsg(conn));
    else if (pruned > 0)
        log_msg(LOG_INFO, "request_ids_pruned", "%d request ids older than %d hours", pruned,
                REQUESTID_KEEP_HOURS);
    int months = audit_upkeep(conn);
    if (months < 0)
        log_msg(LOG_WARN, "upkeep_failed", "audit partitions: %s", db_errmsg(conn));
    else if (months > 0)
        log_msg(LOG_INFO, "audit_months_dropped", "%d months past the %d kept", months,
                AUDIT_KEEP_MONTHS);
    if (svc->def->upkeep) {
        int rc = svc->def->upkeep(svc, conn);
        if (rc < 0)
            log_msg(LOG_WARN, "upkeep_failed", "%s", db_errmsg(conn));
    }
    db_pool_release(svc->db, conn);
}

/* Keeps health true: every interval, the database answers or the service is
 * NOT_SERVING. Runs the upkeep too. Runs until svc->stopping. */
static void *svc__health_main(void *arg)
{
    svc_t *svc = arg;
    bool last = true;
    pthread_mutex_lock(&svc->mu);
    while (!svc->stopping) {
        pthread_mutex_unlock(&svc->mu);
        bool up = db_pool_ping(svc->db, svc->cfg.health_interval_ms);
        if (up != last) {
            log_msg(up ? LOG_INFO : LOG_WARN, "health_changed", "database %s; %s",
                    up ? "reachable" : "unreachable", up ? "SERVING" : "NOT_SERVING");
            last = up;
        }
        rpc_server_set_health(svc->srv, NULL, up ? RPC_HEALTH_SERVING : RPC_HEALTH_NOT_SERVING);
        if (up) {
            svc__chain_audit(svc);
            svc__upkeep(svc);
        }
        pthread_mutex_lock(&svc->mu);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t ns = ts.tv_nsec + (int64_t)svc->cfg.health_interval_ms * 1000000;
        ts.tv_sec += ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        if (!svc->stopping)
            pthread_cond_timedwait(&svc->cv, &svc->mu, &ts);
    }
    pthread_mutex_unlock(&svc->mu);
    return NULL;
}

static int svc__open_db(svc_t *svc)
{
    db_opts_t o = {
        .url = svc->cfg.database_url,
        .schema = svc->def->name,
        .size = (int)svc->cfg.pool_size,
        .statement_timeout_ms = (int)svc->cfg.statement_timeout_ms,
        .connect_timeout_ms = (int)svc->cfg.connect_timeout_ms,
    };
    int rc = db_pool_open(&o, &svc->db);
    if (rc == ERR_UNAVAILABLE) {
        /* Start anyway: health says NOT_SERVING until the database is back. */
        log_msg(LOG_WARN, "db_unavailable", "database unreachable at start; retrying");
        return 0;
    }
    if (rc < 0)
        log_msg(LOG_ERROR, "db_config", "cannot use ONCEIOT_DATABASE_URL");
    return rc;
}

static int svc__rule_cmp(const void *a, const void *b)
{
    return strcmp(((const svc_rule_t *)a)->path, ((const svc_rule_t *)b)->path);
}

/* Reads every method's (onceiot.common.v1.auth) rule from the embedded
 * descriptor set, so that callers are checked without parsing per call. */
static int svc__load_rules(svc_t *svc)
{
    const descset_t *ds = rpc_server_descset(svc->srv);
    size_t n = descset_method_count(ds);
    svc->rules = mem_calloc(n ? n : 1, sizeof(*svc->rules));
    for (size_t i = 0; i < n; i++) {
        const descset_method_t *m = descset_method_at(ds, i);
        svc_rule_t *r = &svc->rules[svc->n_rules];
        int found = m->options ? auth_rule_from_options(m->options, m->options_len, &r->rule) : 0;
        if (found < 0) {
            log_msg(LOG_ERROR, "rules_invalid", "%s: its auth rule does not parse", m->path);
            return ERR_CONFIG;
        }
        if (found == 1) {
            r->path = m->path;
            svc->n_rules++;
        }
    }
    qsort(svc->rules, svc->n_rules, sizeof(*svc->rules), svc__rule_cmp);
    return 0;
}

static const auth_rule_t *svc__rule(const svc_t *svc, const char *path)
{
    svc_rule_t key = {.path = path};
    const svc_rule_t *r = bsearch(&key, svc->rules, svc->n_rules, sizeof(key), svc__rule_cmp);
    return r ? &r->rule : NULL;
}

/* Before every scrape: the pool's counts. */
static void svc__collect_pool(void *arg)
{
    svc_t *svc = arg;
    int in_use, waiting, size;
    db_pool_stats(svc->db, &in_use, &waiting, &size);
    metrics_set(svc->m_in_use, in_use);
    metrics_set(svc->m_waiting, waiting);
    metrics_set(svc->m_size, size);
}

static void svc__metrics_pool(svc_t *svc)
{
    svc->m_in_use = metrics_gauge_plain("onceiot_db_pool_connections_in_use",
                                        "Database connections handed out to callers.");
    svc->m_waiting = metrics_gauge_plain("onceiot_db_pool_waiting",
                                         "Callers waiting for a database connection.");
    svc->m_size =
        metrics_gauge_plain("onceiot_db_pool_connections", "Database connections in the pool.");
    metrics_collector_add(svc__collect_pool, svc);
}

static int svc__serve(svc_t *svc)
{
    rpc_server_opts_t o = {
        .listen = svc->cfg.listen,
        .io_threads = (int)svc->cfg.io_threads,
        .workers = (int)svc->cfg.workers,
        .queue_limit = (int)svc->cfg.queue_limit,
        .max_streams = (int)svc->cfg.max_streams,
        .max_message_bytes = (size_t)svc->cfg.max_message_bytes,
        .grace_ms = (int)svc->cfg.grace_ms,
        .max_connection_age_ms = (int)svc->cfg.max_connection_age_ms,
        .max_connection_age_grace_ms = (int)svc->cfg.max_connection_age_grace_ms,
        .descset = descset_embedded,
        .descset_len = (size_t)(descset_embedded_end - descset_embedded),
    };
    int rc = rpc_server_new(&o, &svc->srv);
    if (rc < 0)
        return rc;
    if ((rc = svc__load_rules(svc)) < 0)
        return rc;
    for (size_t i = 0; i < svc->def->n_services; i++) {
        rc = rpc_server_add_service(svc->srv, &svc->def->services[i], svc);
        if (rc < 0)
            return rc;
    }
    if (svc->def->init && (rc = svc->def->init(svc)) < 0) {
        log_msg(LOG_ERROR, "init_failed", "%s", err_message(rc));
        return rc;
    }
    /* Signals are handled only once there is a server to drain. */
    svc__signal_target = svc->srv;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = svc__on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (svc->cfg.metrics_listen) {
        if (svc->db)
            svc__metrics_pool(svc);
        if ((rc = metrics_http_start(svc->cfg.metrics_listen, NULL)) < 0)
            goto stop_metrics;
    }
    rc = rpc_server_start(svc->srv, NULL);
    if (rc < 0)
        goto stop_metrics;
    if (svc->db) {
        rpc_server_set_health(svc->srv, NULL,
                              db_pool_ping(svc->db, svc->cfg.connect_timeout_ms)
                                  ? RPC_HEALTH_SERVING
                                  : RPC_HEALTH_NOT_SERVING);
        pthread_create(&svc->health_thread, NULL, svc__health_main, svc);
    }
    rc = rpc_server_wait(svc->srv);
    /* No scrape reads the pool or the service after this. */
    metrics_http_stop();
    metrics_collector_remove(svc__collect_pool, svc);
    if (svc->db) {
        pthread_mutex_lock(&svc->mu);
        svc->stopping = true;
        pthread_cond_broadcast(&svc->cv);
        pthread_mutex_unlock(&svc->mu);
        pthread_join(svc->health_thread, NULL);
    }
    svc__signal_target = NULL;
    if (svc->def->fini)
        svc->def->fini(svc);
    /* A drain that had to cancel calls still ends the process normally. */
    return 0;
stop_metrics:
    metrics_http_stop();
    metrics_collector_remove(svc__collect_pool, svc);
    return rc;
}

/* "<binary> audit-verify": walks this service's audit chain. Exit 0 when
 * intact, 3 when broken (the first bad record on stderr), 1 on error. */
static int svc__audit_verify(svc_t *svc)
{
    db_opts_t o = {
        .url = svc->cfg.database_url,
        .schema = svc->def->name,
        .size = 1,
        .statement_timeout_ms = (int)svc->cfg.statement_timeout_ms,
        .connect_timeout_ms = (int)svc->cfg.connect_timeout_ms,
    };
    db_pool_t *pool = NULL;
    db_conn_t *conn = NULL;
    audit_verdict_t v;
    int rc = db_pool_open(&o, &pool);
    if (rc == 0)
        rc = db_pool_acquire(pool, svc->cfg.connect_timeout_ms, &conn);
    if (rc == 0)
        rc = audit_verify(conn, &v);
    if (rc < 0)
        fprintf(stderr, "%s: audit-verify: %s\n", svc->def->name,
                conn ? db_errmsg(conn) : "cannot connect to ONCEIOT_DATABASE_URL");
    else if (rc == 1)
        fprintf(stderr, "%s: audit chain BROKEN at seq %lld after %lld records: %s\n",
                svc->def->name, (long long)v.bad_seq, (long long)v.checked, v.why);
    else
        printf("%s: audit chain intact: %lld records\n", svc->def->name, (long long)v.checked);
    if (conn)
        db_pool_release(pool, conn);
    db_pool_close(pool);
    return rc < 0 ? 1 : rc == 1 ? 3 : 0;
}

static void svc__usage(const svc_def_t *def, const char *prog)
{
    fprintf(stderr,
            "usage: %s [serve|migrate|audit-verify%s]\n"
            "  serve         (default) apply migrations, then serve gRPC until SIGTERM\n"
            "  migrate       apply pending migrations and exit\n"
            "  audit-verify  check the audit trail's hash chain (exit 3 when broken)\n",
            prog, def->n_commands ? "|..." : "");
    for (size_t i = 0; i < def->n_commands; i++)
        fprintf(stderr, "  %-13s %s\n", def->commands[i].name, def->commands[i].help);
    fprintf(stderr, "Configuration comes from ONCEIOT_* environment variables (see README).\n");
}

int svc_main(int argc, char **argv, const svc_def_t *def)
{
    const char *cmd = argc > 1 ? argv[1] : "serve";
    const svc_command_t *command = NULL;
    for (size_t i = 0; i < def->n_commands; i++)
        if (strcmp(cmd, def->commands[i].name) == 0)
            command = &def->commands[i];
    if (strcmp(cmd, "serve") != 0 && strcmp(cmd, "migrate") != 0 &&
        strcmp(cmd, "audit-verify") != 0 && !command) {
        svc__usage(def, argv[0]);
        return 2;
    }
    svc_t svc;
    memset(&svc, 0, sizeof(svc));
    svc.def = def;
    pthread_mutex_init(&svc.mu, NULL);
    pthread_cond_init(&svc.cv, NULL);
    log_init(def->name, LOG_INFO);
    char err[512];
    if (svc__config(&svc, err, sizeof(err)) < 0) {
        log_msg(LOG_ERROR, "config_invalid", "%s", err);
        fprintf(stderr, "%s: configuration error: %s\n", def->name, err);
        return 2;
    }
    log_init(def->name, (log_level_t)log_level_parse(svc.cfg.log_level));
    if (svc.cfg.metrics_listen) {
        /* Before the server registers its methods and the pool opens, so
         * both get their series. */
        metrics_enable();
        metrics_process_register();
    }
    if (sodium_init() < 0) {
        log_msg(LOG_ERROR, "sodium_init", "libsodium failed to initialise");
        return 1;
    }
    if (strcmp(cmd, "audit-verify") == 0) {
        if (!def->uses_db) {
            fprintf(stderr, "%s has no audit trail\n", def->name);
            return 2;
        }
        int vrc = svc__audit_verify(&svc);
        pthread_mutex_destroy(&svc.mu);
        pthread_cond_destroy(&svc.cv);
        return vrc;
    }
    int rc = 0;
    if (def->uses_db && (svc.cfg.migrate_on_start || strcmp(cmd, "migrate") == 0))
        rc = svc__migrate(&svc);
    if (rc == 0 && command) {
        int status = def->uses_db ? svc__open_db(&svc) : 0;
        if (status == 0)
            status = command->run(&svc);
        db_pool_close(svc.db);
        pthread_mutex_destroy(&svc.mu);
        pthread_cond_destroy(&svc.cv);
        return status < 0 ? 1 : status;
    }
    if (rc == 0 && strcmp(cmd, "serve") == 0) {
        /* A server logs a line per call: off the call path (log.h). */
        if (svc.cfg.log_writer && log_writer_start(SVC_LOG_RING_BYTES) < 0)
            log_msg(LOG_WARN, "log_writer", "no writer thread: lines are written by their callers");
        if (def->uses_db)
            rc = svc__open_db(&svc);
        if (rc == 0)
            rc = svc__serve(&svc);
    }
    rpc_server_free(svc.srv);
    mem_free(svc.rules);
    db_pool_close(svc.db);
    pthread_mutex_destroy(&svc.mu);
    pthread_cond_destroy(&svc.cv);
    if (rc == 0)
        log_msg(LOG_INFO, "exit", "stopped cleanly");
    log_writer_stop();
    return rc == 0 ? 0 : 1;
}

const principal_key_t *svc_principal_key(const svc_t *svc)
{
    return svc->cfg.principal_key_hex ? &svc->principal_key : NULL;
}

/* Who may speak on a method (the principal is verified): the gateway for
 * the users it authenticated, on public methods; a service only as itself
 * ("service:<issuer>") and only on methods whose rule lists it among the
 * callers, internal methods included. Returns 0 or ERR_UNAUTHENTICATED or
 * ERR_PERMISSION_DENIED with *why. */
static int svc__caller_allowed(const svc_t *svc, const char *method, const principal_t *p,
                               const char **why)
{
    const auth_rule_t *rule = svc__rule(svc, method);
    bool listed = rule && auth_rule_allows_caller(rule, p->issuer);
    char own[PRINCIPAL_ISSUER_MAX + 16];
    snprintf(own, sizeof(own), "service:%s", p->issuer);
    bool as_itself = p->credential && strcmp(p->credential, own) == 0;
    if (strcmp(p->issuer, "gateway") == 0) {
        if (rule && rule->internal && !(listed && as_itself)) {
            *why = "the gateway does not call this internal method";
            return ERR_PERMISSION_DENIED;
        }
        return 0;
    }
    if (!as_itself) {
        *why = "a service's principal must stand for that service (\"service:<issuer>\")";
        return ERR_UNAUTHENTICATED;
    }
    if (!listed) {
        *why = "this service may not call this method (it is not among the method's callers)";
        return ERR_PERMISSION_DENIED;
    }
    return 0;
}

/* Verifies the call's principal and who may call the method with it.
 * Returns 1 with *out, 0 when the call carries none, or
 * ERR_UNAUTHENTICATED / ERR_PERMISSION_DENIED with *why. */
static int svc__principal(rpc_call_t *call, principal_t **out, const char **why)
{
    svc_t *svc = rpc_call_ctx(call);
    const principal_key_t *key = svc_principal_key(svc);
    const uint8_t *bytes, *sig;
    size_t len, sig_len;
    *out = NULL;
    *why = "the call carries no principal; call through the gateway";
    if (!key || !rpc_call_metadata_bin(call, PRINCIPAL_MD_KEY, &bytes, &len))
        return 0;
    if (!rpc_call_metadata_bin(call, PRINCIPAL_SIG_KEY, &sig, &sig_len))
        return ERR_UNAUTHENTICATED;
    principal_t *p;
    if (principal_verify(key, bytes, len, sig, sig_len, rpc_call_method(call), principal_now_ms(),
                         rpc_call_arena(call), &p, why) < 0)
        return ERR_UNAUTHENTICATED;
    int rc = svc__caller_allowed(svc, rpc_call_method(call), p, why);
    if (rc < 0)
        return rc;
    *out = p;
    return 1;
}

const principal_t *svc_principal_or_status(rpc_call_t *call)
{
    principal_t *p;
    const char *why;
    int rc = svc__principal(call, &p, &why);
    if (rc == 1) {
        svc__set_who(call, p);
        return p;
    }
    rpc_fail(call, rc < 0 ? rc : ERR_UNAUTHENTICATED, "%s", why);
    return NULL;
}

int svc_principal_optional_or_status(rpc_call_t *call, const principal_t **out)
{
    principal_t *p;
    const char *why;
    int rc = svc__principal(call, &p, &why);
    *out = p;
    if (rc == 1)
        svc__set_who(call, p);
    if (rc < 0)
        return rpc_fail(call, rc, "%s", why);
    return 0;
}

const principal_key_t *svc_signing_key(const svc_t *svc, const char *callee)
{
    return principal_signing_key(&svc->signing, callee);
}

int svc_sign_as_service(const svc_t *svc, const char *callee, const char *method, arena_t *a,
                        rpc_md_t md[2])
{
    const principal_key_t *key = svc_signing_key(svc, callee);
    if (!key)
        return ERR_CONFIG;
    principal_t *p = arena_alloc(a, sizeof(*p));
    onceiot__common__v1__principal__init(p);
    p->issuer = (char *)svc->def->name;
    p->credential = arena_printf(a, "service:%s", svc->def->name);
    p->is_superuser = true;
    principal_sign(key, p, method, a, md);
    return 0;
}

int svc_open_callee(const svc_t *svc, const char *callee, const char *addr_var, const char *addr,
                    rpc_channel_t **out)
{
    if (!svc_signing_key(svc, callee)) {
        log_msg(LOG_ERROR, "config_invalid",
                "ONCEIOT_PRINCIPAL_SIGNING_KEYS has no key for %s (onceiot-keys prints it)",
                callee);
        return ERR_CONFIG;
    }
    if (rpc_channel_new(addr, 64 << 20, out) < 0) {
        log_msg(LOG_ERROR, "config", "%s: cannot use %s", addr_var, addr);
        return ERR_CONFIG;
    }
    return 0;
}
