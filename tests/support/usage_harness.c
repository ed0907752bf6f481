/* The usage test harness (see usage_harness.h). */
#include "usage_harness.h"

#include "google/protobuf/wrappers.pb-c.h"
#include "pg_harness.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

usage_h_t usage_h;

static char key_env[96];
static char signing_env[256]; /* usage signs for sims */
static char sims_env[96];
static char db_env[600];
static char dir_env[600];

/* Spawns binary with env listening on port (a restart keeps its address),
 * and waits until it is SERVING. */
static void usage_h__spawn_at(ph_proc_t *p, const char *binary, const char *const *env, int port)
{
    size_t n = 0;
    while (env && env[n])
        n++;
    const char **e = mem_calloc(n + 2, sizeof(char *));
    char listen[64];
    snprintf(listen, sizeof(listen), "ONCEIOT_LISTEN=127.0.0.1:%d", port);
    e[0] = listen;
    for (size_t i = 0; i < n; i++)
        e[i + 1] = env[i];
    ph_spawn(p, binary, e);
    mem_free(e);
    p->port = port;
    snprintf(p->addr, sizeof(p->addr), "127.0.0.1:%d", port);
    cr_assert(ph_wait_health(p->addr, "", 1, 30000), "%s did not become SERVING (log %s)", binary,
              p->log);
}

static const char **usage_h__env(void)
{
    size_t n = 0;
    while (usage_h.env && usage_h.env[n])
        n++;
    const char **e = mem_calloc(n + 9, sizeof(char *));
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        e[k++] = usage_h.env[i];
    e[k++] = key_env;
    e[k++] = signing_env;
    e[k++] = sims_env;
    e[k++] = db_env;
    e[k++] = dir_env;
    e[k++] = "ONCEIOT_HEALTH_INTERVAL_MS=100";
    e[k++] = "ONCEIOT_GRACE_MS=3000";
    e[k++] = "ONCEIOT_LOG_LEVEL=warn";
    return e;
}

static void usage_h__start_usage(int port)
{
    const char **env = usage_h__env();
    char *bin = ph_build_path("services/onceiot-usage");
    usage_h__spawn_at(&usage_h.proc, bin, env, port);
    mem_free(bin);
    mem_free(env);
}

void usage_h_spawn_command(ph_proc_t *p, const char *cmd, const char *const *env)
{
    const char **base = usage_h__env();
    size_t n = 0, m = 0;
    while (base[n])
        n++;
    while (env && env[m])
        m++;
    const char **e = mem_calloc(n + m + 1, sizeof(char *));
    for (size_t i = 0; i < m; i++)
        e[i] = env[i]; /* first: they win */
    for (size_t i = 0; i < n; i++)
        e[m + i] = base[i];
    char *bin = ph_build_path("services/onceiot-usage");
    ph_spawn_cmd(p, ph_free_port(), bin, cmd, e);
    mem_free(bin);
    mem_free(e);
    mem_free(base);
}

void usage_h_start(const char *const *env)
{
    sims_h_start();
    memset(&usage_h, 0, sizeof(usage_h));
    usage_h.env = env;
    PQclear(pgh_sql("SET client_min_messages = warning; DROP SCHEMA IF EXISTS usage CASCADE"));
    /* Test processes share one principal secret (sims_h.secret_hex). */
    snprintf(key_env, sizeof(key_env), "ONCEIOT_PRINCIPAL_KEY=%s", sims_h.secret_hex);
    char *signing =
        ph_signing_keys_env(sims_h.secret_hex, "usage", (const char *const[]){"sims", NULL});
    snprintf(signing_env, sizeof(signing_env), "%s", signing);
    mem_free(signing);
    snprintf(sims_env, sizeof(sims_env), "ONCEIOT_SIMS_ADDR=%s", sims_h.proc.addr);
    snprintf(db_env, sizeof(db_env), "ONCEIOT_DATABASE_URL=%s", pgh_url());
    char *schema = ph_source_path("schema");
    snprintf(dir_env, sizeof(dir_env), "ONCEIOT_SCHEMA_DIR=%s/usage", schema);
    mem_free(schema);
    usage_h__start_usage(ph_free_port());
    cr_assert(rpc_channel_new(usage_h.proc.addr, 16 << 20, &usage_h.ch) == 0);
}

void usage_h_stop(void)
{
    rpc_channel_free(usage_h.ch);
    usage_h.ch = NULL;
    if (usage_h.proc.pid) {
        int code = ph_stop(&usage_h.proc, SIGTERM, 20000);
        cr_expect_eq(code, 0, "usage exited with %d (log %s)", code, usage_h.proc.log);
    }
    cr_expect(!ph_log_has_sanitizer_report(&usage_h.proc), "sanitizer report in %s",
              usage_h.proc.log);
    sims_h_stop();
}

void usage_h_restart_usage(int sig)
{
    int port = usage_h.proc.port;
    int code = ph_stop(&usage_h.proc, sig, 20000);
    if (sig == SIGTERM)
        cr_expect_eq(code, 0, "usage exited with %d (log %s)", code, usage_h.proc.log);
    cr_expect(!ph_log_has_sanitizer_report(&usage_h.proc), "sanitizer report in %s",
              usage_h.proc.log);
    usage_h__start_usage(port);
}

void usage_h_stop_sims(void)
{
    int port = sims_h.proc.port;
    int code = ph_stop(&sims_h.proc, SIGTERM, 20000);
    cr_expect_eq(code, 0, "sims exited with %d (log %s)", code, sims_h.proc.log);
    cr_expect(!ph_log_has_sanitizer_report(&sims_h.proc), "sanitizer report in %s",
              sims_h.proc.log);
    sims_h.proc.port = port;
}

void usage_h_start_sims(void)
{
    char key[96];
    snprintf(key, sizeof(key), "ONCEIOT_PRINCIPAL_KEY=%s", sims_h.secret_hex);
    char *schema = ph_source_path("schema");
    char *dir = mem_printf("ONCEIOT_SCHEMA_DIR=%s/sims", schema);
    const char *env[] = {key,
                         db_env,
                         dir,
                         "ONCEIOT_HEALTH_INTERVAL_MS=100",
                         "ONCEIOT_GRACE_MS=3000",
                         "ONCEIOT_LOG_LEVEL=warn",
                         NULL};
    char *bin = ph_build_path("services/onceiot-sims");
    usage_h__spawn_at(&sims_h.proc, bin, env, sims_h.proc.port);
    mem_free(bin);
    mem_free(dir);
    mem_free(schema);
}

static principal_t usage_h__principal(int64_t org, bool root, char **scopes, size_t n)
{
    principal_t p = ONCEIOT__COMMON__V1__PRINCIPAL__INIT;
    p.user_id = 2000 + org;
    p.username = "usage-tester";
    p.organization_id = org;
    p.role =
        root ? ONCEIOT__COMMON__V1__ROLE__ROLE_ADMIN : ONCEIOT__COMMON__V1__ROLE__ROLE_READONLY;
    p.is_superuser = root;
    p.scopes = scopes;
    p.n_scopes = n;
    p.credential = "token";
    return p;
}

principal_t usage_h_writer(void)
{
    static char *scopes[] = {"usage:write"};
    return usage_h__principal(1, true, scopes, 1);
}

principal_t usage_h_reader(int64_t org)
{
    static char *scopes[] = {"usage:read", "sims:read"};
    return usage_h__principal(org, false, scopes, 2);
}

principal_t usage_h_operator(void)
{
    static char *scopes[] = {"usage:read"};
    return usage_h__principal(1, true, scopes, 1);
}

int usage_h_call(const char *method, const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *resp_desc, const principal_t *who, arena_t *a,
                 void *resp, rpc_status_t *st)
{
    const char *path = arena_printf(a, "/onceiot.usage.v1.UsageService/%s", method);
    rpc_md_t *md = arena_alloc(a, 2 * sizeof(*md));
    principal_t p = *who;
    principal_sign(&sims_h.key, &p, path, a, md);
    rpc_call_opts_t opts = {.timeout_ms = 60000, .metadata = md, .n_metadata = 2};
    ProtobufCMessage *out = NULL;
    int rc = rpc_unary(usage_h.ch, path, req, resp_desc, a, &opts, &out, st);
    if (resp)
        *(ProtobufCMessage **)resp = out;
    return rc;
}

Google__Protobuf__Timestamp *usage_h_ts(arena_t *a, int64_t us)
{
    Google__Protobuf__Timestamp *t = arena_alloc(a, sizeof(*t));
    google__protobuf__timestamp__init(t);
    t->seconds = us / 1000000;
    t->nanos = (int32_t)(us % 1000000) * 1000;
    return t;
}

int64_t usage_h_ts_us(const Google__Protobuf__Timestamp *t)
{
    return t ? (int64_t)t->seconds * 1000000 + t->nanos / 1000 : 0;
}

static Google__Protobuf__Int32Value *usage_h__i32(arena_t *a, int32_t v)
{
    Google__Protobuf__Int32Value *w = arena_alloc(a, sizeof(*w));
    google__protobuf__int32_value__init(w);
    w->value = v;
    return w;
}

usage_sample_t *usage_h_sample(arena_t *a, const char *iccid, int64_t us, bool connected,
                               const char *op)
{
    usage_sample_t *s = arena_alloc(a, sizeof(*s));
    onceiot__usage__v1__connectivity_sample__init(s);
    s->iccid = (char *)iccid;
    s->timestamp = usage_h_ts(a, us);
    s->connected = connected;
    if (connected) {
        s->rat = "LTE";
        s->country_code = "DE";
        s->operator_name = (char *)(op ? op : "Telekom");
        s->mcc = "262";
        s->mnc = "01";
        s->cell_id = "cell-4711";
        s->apn = "iot.1nce.net";
        s->signal_strength = usage_h__i32(a, -85);
        s->signal_quality = usage_h__i32(a, 70);
    }
    return s;
}

int usage_h_ingest_conn(arena_t *a, const principal_t *who, const char *const *ids,
                        usage_sample_t ***batches, const size_t *ns, size_t n_batches,
                        Onceiot__Usage__V1__IngestConnectivityResponse **out, rpc_status_t *st)
{
    static const char path[] = "/onceiot.usage.v1.UsageService/IngestConnectivity";
    rpc_md_t *md = arena_alloc(a, 2 * sizeof(*md));
    principal_t signer = *who;
    principal_sign(&sims_h.key, &signer, path, a, md);
    rpc_call_opts_t o = {.timeout_ms = 60000, .metadata = md, .n_metadata = 2};
    rpc_stream_t *s;
    memset(st, 0, sizeof(*st));
    if (rpc_stream_open(usage_h.ch, path, a, &o, &s) < 0) {
        st->code = GRPC_STATUS_UNAVAILABLE;
        return -1;
    }
    for (size_t b = 0; b < n_batches; b++) {
        Onceiot__Usage__V1__IngestConnectivityBatchRequest r =
            ONCEIOT__USAGE__V1__INGEST_CONNECTIVITY_BATCH_REQUEST__INIT;
        r.batch_id = (char *)ids[b];
        r.samples = batches[b];
        r.n_samples = ns[b];
        if (rpc_stream_send(s, &r.base) < 0)
            break;
    }
    /* A refused batch ends the call early: the status below says why. */
    int closed = rpc_stream_close_send(s);
    ProtobufCMessage *m = NULL;
    int got =
        closed < 0
            ? 0
            : rpc_stream_recv(s, &onceiot__usage__v1__ingest_connectivity_response__descriptor, &m);
    int rc = rpc_stream_finish(s, st);
    if (out)
        *out = got == 1 ? (void *)m : NULL;
    return rc;
}

int usage_h_conn_ingest(const char *id, usage_sample_t **v, size_t n,
                        Onceiot__Usage__V1__IngestConnectivityResponse **out, rpc_status_t *st)
{
    principal_t w = usage_h_writer();
    return usage_h_ingest_conn(sims_h.arena, &w, &id, &v, &n, 1, out, st);
}

void usage_h_conn_ingest_ok(const char *id, usage_sample_t **v, size_t n)
{
    Onceiot__Usage__V1__IngestConnectivityResponse *r;
    rpc_status_t st;
    cr_assert_eq(usage_h_conn_ingest(id, v, n, &r, &st), 0, "%s: %s", id, st.message);
    cr_assert_not_null(r);
    cr_assert_eq(r->n_batches, 1);
}

int usage_h_conn_get(const principal_t *who, const char *iccid,
                     Onceiot__Usage__V1__ConnectivityState **out, rpc_status_t *st)
{
    Onceiot__Usage__V1__GetConnectivityRequest req =
        ONCEIOT__USAGE__V1__GET_CONNECTIVITY_REQUEST__INIT;
    req.iccid = (char *)iccid;
    return usage_h_call("GetConnectivity", &req.base,
                        &onceiot__usage__v1__connectivity_state__descriptor, who, sims_h.arena, out,
                        st);
}

Onceiot__Usage__V1__ConnectivityState *usage_h_conn_state(const char *iccid)
{
    principal_t op = usage_h_operator();
    Onceiot__Usage__V1__ConnectivityState *s = NULL;
    rpc_status_t st;
    cr_assert_eq(usage_h_conn_get(&op, iccid, &s, &st), 0, "GetConnectivity %s: %s", iccid,
                 st.message);
    return s;
}

Onceiot__Sims__V1__SimEvent **usage_h_conn_events(const char *iccid, size_t *n)
{
    arena_t *a = sims_h.arena;
    Onceiot__Sims__V1__ListEventsRequest req = ONCEIOT__SIMS__V1__LIST_EVENTS_REQUEST__INIT;
    req.iccid = (char *)iccid;
    req.event_category = "connectivity";
    req.page_size = 1000;
    principal_t root = sims_h_root();
    ProtobufCMessage *resp;
    rpc_status_t st;
    cr_assert_eq(sims_h_call("ListEvents", &req.base,
                             &onceiot__sims__v1__list_events_response__descriptor, &root, a, &resp,
                             &st),
                 0, "ListEvents %s: %s", iccid, st.message);
    const Onceiot__Sims__V1__ListEventsResponse *r = (const void *)resp;
    Onceiot__Sims__V1__SimEvent **v = arena_alloc(a, (r->n_events + 1) * sizeof(*v));
    for (size_t i = 0; i < r->n_events; i++)
        v[i] = r->events[r->n_events - 1 - i];
    *n = r->n_events;
    return v;
}

Onceiot__Sims__V1__Sim *usage_h_sim_of(const char *iccid)
{
    principal_t root = sims_h_root();
    Onceiot__Sims__V1__Sim *s = NULL;
    rpc_status_t st;
    cr_assert_eq(sims_h_get(&root, iccid, &s, &st), 0, "GetSim %s: %s", iccid, st.message);
    return s;
}

void usage_h_assert_conn_events(const char *iccid, size_t want, const int64_t *at, bool first_lost)
{
    size_t n;
    Onceiot__Sims__V1__SimEvent **ev = usage_h_conn_events(iccid, &n);
    cr_assert_eq(n, want, "SIM %s has %zu connectivity events, not %zu", iccid, n, want);
    for (size_t i = 0; i < n; i++) {
        bool lost = (i % 2 == 0) == first_lost;
        cr_assert_str_eq(ev[i]->event_type, lost ? "connectivity_lost" : "connectivity_restored",
                         "event %zu of %s", i, iccid);
        cr_assert_str_eq(ev[i]->triggered_by, "service:usage");
        double seq = 0;
        for (size_t k = 0; ev[i]->data && k < ev[i]->data->n_fields; k++)
            if (strcmp(ev[i]->data->fields[k]->key, "seq") == 0)
                seq = ev[i]->data->fields[k]->value->number_value;
        cr_assert_eq(seq, (double)(i + 1), "event %zu of %s: seq %g", i, iccid, seq);
        if (at)
            cr_assert_eq(usage_h_ts_us(ev[i]->occurred_at), at[i], "time of event %zu", i);
    }
    char q[200];
    snprintf(q, sizeof(q), "SELECT connectivity_seq FROM sims.sims WHERE iccid = '%s'", iccid);
    cr_assert_eq(usage_h_sql_int(q), (long long)want);
}

void usage_h_drain(void)
{
    if (usage_h_wait_outbox_empty(90000))
        return;
    PGresult *r = pgh_sql(
        "SELECT (SELECT string_agg(key || ' ' || attempts || ' ' || coalesce(last_error, '-'), "
        "'; ' ORDER BY id) FROM usage.outbox), (SELECT string_agg(batch_id || ':' || events, ' ' "
        "ORDER BY processed_at) FROM sims.processed_connectivity_batches), (SELECT "
        "string_agg(iccid || ':' || connectivity_seq, ' ') FROM sims.sims)");
    cr_assert_fail("the outbox did not drain: %s\napplied: %s\nsims: %s", PQgetvalue(r, 0, 0),
                   PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2));
    PQclear(r);
}

usage_rec_t *usage_h_rec(arena_t *a, const char *iccid, int64_t ts_us, int64_t rx, int64_t tx,
                         int32_t mo, int32_t mt, const char *country, const char *mcc,
                         const char *mnc)
{
    usage_rec_t *r = arena_alloc(a, sizeof(*r));
    onceiot__usage__v1__usage_record__init(r);
    r->iccid = (char *)iccid;
    r->timestamp = usage_h_ts(a, ts_us);
    r->volume_rx = rx;
    r->volume_tx = tx;
    r->sms_mo = mo;
    r->sms_mt = mt;
    r->session_count = 1;
    if (country)
        r->country = (char *)country;
    if (mcc)
        r->mcc = (char *)mcc;
    if (mnc)
        r->mnc = (char *)mnc;
    return r;
}

int usage_h_ingest(arena_t *a, const char *batch_id, usage_rec_t **recs, size_t n,
                   Onceiot__Usage__V1__BatchResult **out, rpc_status_t *st)
{
    Onceiot__Usage__V1__IngestUsageBatchRequest req =
        ONCEIOT__USAGE__V1__INGEST_USAGE_BATCH_REQUEST__INIT;
    req.batch_id = (char *)batch_id;
    req.records = recs;
    req.n_records = n;
    principal_t w = usage_h_writer();
    return usage_h_call("IngestUsageBatch", &req.base,
                        &onceiot__usage__v1__batch_result__descriptor, &w, a, out, st);
}

bool usage_h_violation(arena_t *a, const rpc_status_t *st, const char *field)
{
    const char **fields, **descs;
    size_t n = rpc_status_violations(st, a, &fields, &descs);
    for (size_t i = 0; i < n; i++)
        if (strcmp(fields[i], field) == 0)
            return true;
    return false;
}

const char *usage_h_sim(int64_t org, long long n, int64_t data_volume, int64_t sms_volume)
{
    /* SIMs are registered by the operator's staff into the tenant's organization. */
    principal_t admin = sims_h_root();
    const char *iccid = sims_h_iccid(n);
    Onceiot__Sims__V1__SimInput in = ONCEIOT__SIMS__V1__SIM_INPUT__INIT;
    in.iccid = (char *)iccid;
    in.organization_id = org;
    in.data_volume = data_volume;
    in.sms_volume = sms_volume;
    Onceiot__Sims__V1__CreateSimRequest req = ONCEIOT__SIMS__V1__CREATE_SIM_REQUEST__INIT;
    req.sim = &in;
    ProtobufCMessage *resp;
    rpc_status_t st;
    int rc = sims_h_call("CreateSim", &req.base, &onceiot__sims__v1__sim__descriptor, &admin, NULL,
                         &resp, &st);
    cr_assert_eq(rc, 0, "CreateSim %s: %s", iccid, st.message);
    return iccid;
}

rpc_stream_t *usage_h_watch(arena_t *a, int64_t org, const char *iccid, const char *category)
{
    const char *path = "/onceiot.sims.v1.SimService/WatchEvents";
    rpc_md_t *md = arena_alloc(a, 2 * sizeof(*md));
    principal_t u = sims_h_user(org);
    principal_sign(&sims_h.key, &u, path, a, md);
    rpc_call_opts_t o = {.timeout_ms = 30000, .metadata = md, .n_metadata = 2};
    rpc_stream_t *s;
    cr_assert_eq(rpc_stream_open(sims_h.ch, path, a, &o, &s), 0);
    Onceiot__Sims__V1__WatchEventsRequest wr = ONCEIOT__SIMS__V1__WATCH_EVENTS_REQUEST__INIT;
    wr.iccid = (char *)iccid;
    wr.event_category = (char *)(category ? category : "");
    cr_assert_eq(rpc_stream_send(s, &wr.base), 0);
    cr_assert_eq(rpc_stream_close_send(s), 0);
    return s;
}

int64_t usage_h_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t usage_h_hour_us(void)
{
    int64_t h = 3600LL * 1000000;
    return usage_h_now_us() / h * h;
}

long long usage_h_sql_int(const char *sql)
{
    PGresult *r = pgh_sql(sql);
    cr_assert_eq(PQntuples(r), 1, "%s: %d rows", sql, PQntuples(r));
    long long v = PQgetisnull(r, 0, 0) ? 0 : strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return v;
}

void usage_h_freeze_sims(void)
{
    kill(sims_h.proc.pid, SIGSTOP);
}

bool usage_h_wait_leased(int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited += 20) {
        if (usage_h_sql_int("SELECT count(*) FROM usage.outbox WHERE leased_by IS NOT NULL"))
            return true;
        usleep(20000);
    }
    return false;
}

void usage_h_kill_usage_while_leased(void)
{
    cr_assert(usage_h_wait_leased(4000), "the dispatcher never took a row");
    usage_h_restart_usage(SIGKILL);
    kill(sims_h.proc.pid, SIGCONT);
}

/* Every rollup equals what the raw rows say, in both directions. */
void usage_h_assert_rollups_exact(void)
{
    static const char *const checks[] = {
        /* hourly */
        "WITH r AS (SELECT sim_id, date_trunc('hour', \"timestamp\" AT TIME ZONE 'UTC') AS b, "
        "organization_id, iccid, sum(volume_rx) rx, sum(volume_tx) tx, sum(sms_mo) mo, "
        "sum(sms_mt) mt, sum(session_count) s, count(*) n FROM usage.sim_usage GROUP BY 1, 2, 3, "
        "4), h AS (SELECT sim_id, hour AT TIME ZONE 'UTC' AS b, organization_id, iccid, "
        "volume_rx::numeric, volume_tx::numeric, sms_mo, sms_mt, session_count, records "
        "FROM usage.sim_usage_hourly) "
        "SELECT (SELECT count(*) FROM (SELECT * FROM r EXCEPT SELECT * FROM h) x) + "
        "(SELECT count(*) FROM (SELECT * FROM h EXCEPT SELECT * FROM r) y)",
        /* daily */
        "WITH r AS (SELECT sim_id, (\"timestamp\" AT TIME ZONE 'UTC')::date AS b, "
        "organization_id, iccid, sum(volume_rx) rx, sum(volume_tx) tx, sum(sms_mo) mo, "
        "sum(sms_mt) mt, sum(session_count) s, count(*) n FROM usage.sim_usage GROUP BY 1, 2, 3, "
        "4), d AS (SELECT sim_id, day, organization_id, iccid, volume_rx::numeric, "
        "volume_tx::numeric, sms_mo, sms_mt, session_count, records FROM usage.sim_usage_daily) "
        "SELECT (SELECT count(*) FROM (SELECT * FROM r EXCEPT SELECT * FROM d) x) + "
        "(SELECT count(*) FROM (SELECT * FROM d EXCEPT SELECT * FROM r) y)",
        /* per network */
        "WITH r AS (SELECT sim_id, (\"timestamp\" AT TIME ZONE 'UTC')::date AS b, "
        "coalesce(country, '') c, coalesce(mcc, '') mc, coalesce(mnc, '') mn, organization_id, "
        "sum(volume_rx) rx, sum(volume_tx) tx, sum(sms_mo) mo, sum(sms_mt) mt, "
        "sum(session_count) s, count(*) n FROM usage.sim_usage GROUP BY 1, 2, 3, 4, 5, 6), "
        "d AS (SELECT sim_id, day, country, mcc, mnc, organization_id, volume_rx::numeric, "
        "volume_tx::numeric, sms_mo, sms_mt, session_count, records "
        "FROM usage.sim_usage_daily_network) "
        "SELECT (SELECT count(*) FROM (SELECT * FROM r EXCEPT SELECT * FROM d) x) + "
        "(SELECT count(*) FROM (SELECT * FROM d EXCEPT SELECT * FROM r) y)",
        /* per organization per day, with the distinct active SIMs */
        "WITH r AS (SELECT organization_id, (\"timestamp\" AT TIME ZONE 'UTC')::date AS b, "
        "count(DISTINCT sim_id)::numeric a, sum(volume_rx) rx, sum(volume_tx) tx, "
        "sum(sms_mo)::numeric mo, sum(sms_mt)::numeric mt, sum(session_count)::numeric s, "
        "count(*)::numeric n FROM usage.sim_usage GROUP BY 1, 2), "
        "o AS (SELECT organization_id, day, sum(active_sims), sum(volume_rx), sum(volume_tx), "
        "sum(sms_mo), sum(sms_mt), sum(session_count), sum(records) "
        "FROM usage.org_usage_daily GROUP BY 1, 2) "
        "SELECT (SELECT count(*) FROM (SELECT * FROM r EXCEPT SELECT * FROM o) x) + "
        "(SELECT count(*) FROM (SELECT * FROM o EXCEPT SELECT * FROM r) y)",
    };
    static const char *const names[] = {"hourly", "daily", "network", "organization daily"};
    for (size_t i = 0; i < 4; i++)
        cr_assert_eq(usage_h_sql_int(checks[i]), 0, "the %s rollup differs from the raw rows",
                     names[i]);
}

bool usage_h_wait_outbox_empty(int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited += 50) {
        if (usage_h_sql_int("SELECT count(*) FROM usage.outbox") == 0)
            return true;
        usleep(50000);
    }
    return false;
}
