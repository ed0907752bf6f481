/* The sims test harness (see sims_harness.h). */
#include "sims_harness.h"
#include "pg_harness.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

sims_h_t sims_h;

static pthread_mutex_t arenas_mu = PTHREAD_MUTEX_INITIALIZER;
static arena_t *arenas[64];
static size_t n_arenas;

arena_t *sims_h_thread_arena(void)
{
    pthread_mutex_lock(&arenas_mu);
    cr_assert_lt(n_arenas, 64);
    arena_t *a = arenas[n_arenas++] = arena_new();
    pthread_mutex_unlock(&arenas_mu);
    return a;
}

static const char key_hex[] = "5ea15ea15ea15ea15ea15ea15ea15ea15ea15ea15ea15ea15ea15ea15ea15ea1";

void sims_h_start(void)
{
    const char *url = pgh_url();
    PQclear(pgh_sql("SET client_min_messages = warning;"
                    "CREATE SCHEMA IF NOT EXISTS partman;"
                    "CREATE EXTENSION IF NOT EXISTS pg_partman SCHEMA partman;"
                    "CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public;"
                    "DROP SCHEMA IF EXISTS sims CASCADE"));
    sims_h.secret_hex = key_hex;
    ph_issuer_key(key_hex, "gateway", &sims_h.key);
    ph_issuer_key(key_hex, "usage", &sims_h.usage_key);
    ph_issuer_key(key_hex, "network", &sims_h.network_key);
    char *db = mem_printf("ONCEIOT_DATABASE_URL=%s", url);
    char *key = mem_printf("ONCEIOT_PRINCIPAL_KEY=%s", key_hex);
    char *dir_path = ph_source_path("schema");
    char *dir = mem_printf("ONCEIOT_SCHEMA_DIR=%s/sims", dir_path);
    const char *env[] = {db,
                         key,
                         dir,
                         "ONCEIOT_HEALTH_INTERVAL_MS=100",
                         "ONCEIOT_GRACE_MS=3000",
                         "ONCEIOT_LOG_LEVEL=warn",
                         NULL};
    char *bin = ph_build_path("services/onceiot-sims");
    ph_start(&sims_h.proc, bin, env);
    mem_free(bin);
    mem_free(db);
    mem_free(key);
    mem_free(dir);
    mem_free(dir_path);
    sims_h.target = sims_h.proc.addr;
    cr_assert(rpc_channel_new(sims_h.target, 16 << 20, &sims_h.ch) == 0);
    sims_h.arena = arena_new();
}

void sims_h_stop(void)
{
    rpc_channel_free(sims_h.ch);
    sims_h.ch = NULL;
    arena_free(sims_h.arena);
    sims_h.arena = NULL;
    for (size_t i = 0; i < n_arenas; i++)
        arena_free(arenas[i]);
    n_arenas = 0;
    if (sims_h.proc.pid) {
        int code = ph_stop(&sims_h.proc, SIGTERM, 20000);
        cr_expect_eq(code, 0, "sims exited with %d (log %s)", code, sims_h.proc.log);
    }
    cr_expect(!ph_log_has_sanitizer_report(&sims_h.proc), "sanitizer report in %s",
              sims_h.proc.log);
}

static principal_t sims_h__principal(int64_t org, Onceiot__Common__V1__Role role, bool root)
{
    static char *scopes[] = {"sims:read", "sims:write"};
    principal_t p = ONCEIOT__COMMON__V1__PRINCIPAL__INIT;
    p.user_id = 1000 + org;
    p.username = "tester";
    p.organization_id = org;
    p.role = role;
    p.is_superuser = root;
    p.scopes = scopes;
    p.n_scopes = 2;
    p.credential = "token";
    return p;
}

principal_t sims_h_user(int64_t org)
{
    return sims_h__principal(org, ONCEIOT__COMMON__V1__ROLE__ROLE_USER, false);
}

principal_t sims_h_admin(int64_t org)
{
    return sims_h__principal(org, ONCEIOT__COMMON__V1__ROLE__ROLE_ADMIN, false);
}

principal_t sims_h_root(void)
{
    return sims_h__principal(1, ONCEIOT__COMMON__V1__ROLE__ROLE_ADMIN, true);
}

int sims_h_call(const char *method, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *resp_desc, const principal_t *who, arena_t *arena,
                ProtobufCMessage **resp, rpc_status_t *st)
{
    arena_t *a = arena ? arena : sims_h.arena;
    const char *path = arena_printf(a, "/onceiot.sims.v1.SimService/%s", method);
    rpc_md_t md[2];
    rpc_call_opts_t opts = {.timeout_ms = 30000, .metadata = md, .n_metadata = 2};
    if (sims_h.authorization) {
        md[0] = (rpc_md_t){"authorization", arena_printf(a, "Bearer %s", sims_h.authorization), 0};
        opts.n_metadata = 1;
    } else {
        /* Internal methods take only their declared callers, each signing
         * as itself; the test speaks for them. */
        principal_t p = *who;
        const principal_key_t *key = &sims_h.key;
        static const char *const by_usage[] = {"ApplyUsage", "ApplyConnectivity", "RecordEvents"};
        static const char *const by_network[] = {"ExpireSim", "ReceiveSms", "UpdateSmsStatus"};
        for (size_t i = 0; i < sizeof(by_usage) / sizeof(*by_usage); i++)
            if (strcmp(method, by_usage[i]) == 0) {
                p.issuer = "usage";
                key = &sims_h.usage_key;
            }
        for (size_t i = 0; i < sizeof(by_network) / sizeof(*by_network); i++)
            if (strcmp(method, by_network[i]) == 0) {
                p.issuer = "network";
                key = &sims_h.network_key;
            }
        if (key != &sims_h.key)
            p.credential = arena_printf(a, "service:%s", p.issuer);
        principal_sign(key, &p, path, a, md);
    }
    return rpc_unary(sims_h.ch, path, req, resp_desc, a, &opts, resp, st);
}

bool sims_h_violation(const rpc_status_t *st, const char *field)
{
    const char **fields, **descs;
    size_t n = rpc_status_violations(st, sims_h.arena, &fields, &descs);
    for (size_t i = 0; i < n; i++)
        if (strcmp(fields[i], field) == 0)
            return true;
    return false;
}

const char *sims_h_iccid(long long n)
{
    return arena_printf(sims_h.arena, "8988%015lld", n);
}

Google__Protobuf__Struct *sims_h_struct(const char *json)
{
    Google__Protobuf__Struct *s = pbstruct_from_json(sims_h.arena, json);
    cr_assert(s, "not a JSON object: %s", json);
    return s;
}

const char *sims_h_json(const Google__Protobuf__Struct *s)
{
    rpc_call_t *call = rpc_call_detached_new();
    const char *json = NULL;
    bool ok = pbstruct_to_json(call, "struct", s, SIZE_MAX, &json);
    json = ok ? arena_strdup(sims_h.arena, json) : NULL;
    rpc_call_detached_free(call);
    cr_assert(ok, "a Struct without a JSON form");
    return json;
}

Onceiot__Sims__V1__Sim *sims_h_create(const principal_t *who, const char *iccid)
{
    Onceiot__Sims__V1__SimInput in = ONCEIOT__SIMS__V1__SIM_INPUT__INIT;
    in.iccid = (char *)iccid;
    in.data_volume = 1000;
    in.sms_volume = 10;
    in.organization_id = who->organization_id;
    Onceiot__Sims__V1__CreateSimRequest req = ONCEIOT__SIMS__V1__CREATE_SIM_REQUEST__INIT;
    req.sim = &in;
    ProtobufCMessage *resp;
    rpc_status_t st;
    principal_t staff = sims_h_root();
    int rc = sims_h_call("CreateSim", &req.base, &onceiot__sims__v1__sim__descriptor, &staff, NULL,
                         &resp, &st);
    cr_assert_eq(rc, 0, "CreateSim %s: %s", iccid, st.message);
    return (Onceiot__Sims__V1__Sim *)resp;
}

Onceiot__Sims__V1__Sim *sims_h_act(const principal_t *who, const char *method, const char *iccid)
{
    Onceiot__Sims__V1__SimActionRequest req = ONCEIOT__SIMS__V1__SIM_ACTION_REQUEST__INIT;
    req.iccid = (char *)iccid;
    ProtobufCMessage *resp;
    rpc_status_t st;
    int rc =
        sims_h_call(method, &req.base, &onceiot__sims__v1__sim__descriptor, who, NULL, &resp, &st);
    cr_assert_eq(rc, 0, "%s %s: %s", method, iccid, st.message);
    return (Onceiot__Sims__V1__Sim *)resp;
}

int sims_h_get(const principal_t *who, const char *iccid, Onceiot__Sims__V1__Sim **out,
               rpc_status_t *st)
{
    Onceiot__Sims__V1__GetSimRequest req = ONCEIOT__SIMS__V1__GET_SIM_REQUEST__INIT;
    req.iccid = (char *)iccid;
    return sims_h_call("GetSim", &req.base, &onceiot__sims__v1__sim__descriptor, who, NULL,
                       (ProtobufCMessage **)out, st);
}

int sims_h_list(const principal_t *who, Onceiot__Sims__V1__ListSimsRequest *req,
                Onceiot__Sims__V1__ListSimsResponse **out, rpc_status_t *st)
{
    return sims_h_call("ListSims", &req->base, &onceiot__sims__v1__list_sims_response__descriptor,
                       who, NULL, (ProtobufCMessage **)out, st);
}

size_t sims_h_count_all(const principal_t *who, Onceiot__Sims__V1__ListSimsRequest *req)
{
    size_t total = 0;
    Onceiot__Sims__V1__ListSimsResponse *page;
    rpc_status_t st;
    req->page_token = "";
    do {
        cr_assert_eq(sims_h_list(who, req, &page, &st), 0, "%s", st.message);
        total += page->n_sims;
        req->page_token = page->next_page_token;
    } while (*req->page_token);
    return total;
}

Onceiot__Sims__V1__ImportSimsRequest *sims_h_import_request(const principal_t *who, long long first,
                                                            int n)
{
    arena_t *a = sims_h.arena;
    Onceiot__Sims__V1__ImportSimsRequest *req = arena_alloc(a, sizeof(*req));
    onceiot__sims__v1__import_sims_request__init(req);
    req->sims = arena_alloc(a, (size_t)n * sizeof(*req->sims));
    static char *tags[] = {"fleet-a", "eu"};
    for (int i = 0; i < n; i++) {
        Onceiot__Sims__V1__SimInput *in = arena_alloc(a, sizeof(*in));
        onceiot__sims__v1__sim_input__init(in);
        in->iccid = (char *)sims_h_iccid(first + i);
        in->label = arena_printf(a, "tracker %05lld", first + i);
        in->imei = arena_printf(a, "35%013lld", first + i);
        in->msisdn = arena_printf(a, "49%010lld", first + i);
        in->ip_address = arena_printf(a, "10.%lld.%lld.%lld", ((first + i) >> 16) & 255,
                                      ((first + i) >> 8) & 255, (first + i) & 255);
        in->customer_org_id = (first + i) % 3 + 1;
        in->tags = tags;
        in->n_tags = (first + i) % 2 ? 2 : 1;
        in->data_volume = 1 << 20;
        in->organization_id = who->organization_id;
        req->sims[req->n_sims++] = in;
    }
    return req;
}

int sims_h_import(const principal_t *who, long long first, int n, rpc_status_t *st,
                  int32_t *imported)
{
    Onceiot__Sims__V1__ImportSimsRequest *req = sims_h_import_request(who, first, n);
    ProtobufCMessage *resp;
    principal_t staff = sims_h_root();
    int rc =
        sims_h_call("ImportSims", &req->base, &onceiot__sims__v1__import_sims_response__descriptor,
                    &staff, NULL, &resp, st);
    if (rc == 0 && imported)
        *imported = ((Onceiot__Sims__V1__ImportSimsResponse *)resp)->imported;
    return rc;
}
