/* The audit trail end to end: calls through the gateway to identity and
 * sims, and the records the database wrote for them in the same
 * transactions (audit.h, audit_track): who, with which credential, which
 * method and resource, the request id, the trace id the client sent, the
 * peer; nothing for reads, refusals, failures or internal work; every chain
 * intact; concurrent writers each recorded and never deadlocked. */
#include "common/v1/audit.pb-c.h"
#include "gw_client.h"
#include "identity/v1/identity.pb-c.h"
#include "pg_harness.h"
#include "sims/v1/sims.pb-c.h"
#include "stack_harness.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SIMS    "/onceiot.sims.v1.SimService/"
#define ICCID_A "89883030000000000701"
#define ICCID_B "89883030000000000702"
#define TRACE   "4bf92f3577b34da6a3ce929d0e0e4736"

static sh_stack_t st;
static gwc_t g;
static char root[256];

static long sql_long(const char *sql)
{
    PGresult *r = pgh_sql(sql);
    long v = PQntuples(r) ? atol(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return v;
}

static char *sql_text(const char *sql)
{
    PGresult *r = pgh_sql(sql);
    char *v = arena_strdup(g.arena,
                           PQntuples(r) && !PQgetisnull(r, 0, 0) ? PQgetvalue(r, 0, 0) : "(null)");
    PQclear(r);
    return v;
}

/* Waits (bounded) until the runtime's chainer has put every pending record
 * of the schema on its chain (every health interval). */
static void chained(const char *schema)
{
    char sql[160];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s.audit_pending", schema);
    long left = -1;
    for (int i = 0; i < 200 && (left = sql_long(sql)) != 0; i++)
        usleep(50 * 1000);
    cr_assert_eq(left, 0, "%s: records still pending after 10 s", schema);
}

/* Every record of sims, chained or not yet. */
static long sims_records(void)
{
    return sql_long("SELECT (SELECT count(*) FROM sims.audit_records) + (SELECT count(*) FROM "
                    "sims.audit_pending)");
}

static void setup(void)
{
    sh_start_with_sims(&st, NULL, NULL);
    gwc_open(&g, st.gateway.addr);
    snprintf(root, sizeof(root), "Bearer %s", st.admin_key);
    Onceiot__Sims__V1__SimInput in[2] = {ONCEIOT__SIMS__V1__SIM_INPUT__INIT,
                                         ONCEIOT__SIMS__V1__SIM_INPUT__INIT};
    Onceiot__Sims__V1__SimInput *items[] = {&in[0], &in[1]};
    in[0].iccid = ICCID_A;
    in[1].iccid = ICCID_B;
    Onceiot__Sims__V1__ImportSimsRequest r = ONCEIOT__SIMS__V1__IMPORT_SIMS_REQUEST__INIT;
    r.sims = items;
    r.n_sims = 2;
    Onceiot__Sims__V1__ImportSimsResponse *out;
    rpc_status_t s;
    cr_assert_eq(gwc_call(&g, root, SIMS "ImportSims", &r.base,
                          &onceiot__sims__v1__import_sims_response__descriptor, &out, &s),
                 0, "%s", s.message);
}

static void teardown(void)
{
    gwc_close(&g);
    sh_stop(&st);
}

TestSuite(audit_trail, .init = setup, .fini = teardown, .timeout = 240);

/* TopUpQuota of volume on iccid as auth, with a traceparent. */
static int top_up(gwc_t *c, const char *auth, const char *iccid, int64_t volume, rpc_status_t *s)
{
    rpc_md_t md[] = {{"authorization", auth, 0},
                     {"traceparent", "00-" TRACE "-00f067aa0ba902b7-01", 0}};
    rpc_call_opts_t o = {.timeout_ms = 20000, .metadata = md, .n_metadata = 2};
    Onceiot__Sims__V1__TopUpQuotaRequest r = ONCEIOT__SIMS__V1__TOP_UP_QUOTA_REQUEST__INIT;
    r.iccid = (char *)iccid;
    r.quota_type = ONCEIOT__SIMS__V1__QUOTA_TYPE__QUOTA_TYPE_DATA;
    r.volume = volume;
    ProtobufCMessage *out = NULL;
    return rpc_unary(c->ch, SIMS "TopUpQuota", &r.base, &onceiot__sims__v1__quota__descriptor,
                     c->arena, &o, &out, s);
}

static int sim_action(const char *auth, const char *method, const char *iccid, rpc_status_t *s)
{
    Onceiot__Sims__V1__SimActionRequest a = ONCEIOT__SIMS__V1__SIM_ACTION_REQUEST__INIT;
    a.iccid = (char *)iccid;
    Onceiot__Sims__V1__Sim *sim;
    return gwc_call(&g, auth, arena_printf(g.arena, SIMS "%s", method), &a.base,
                    &onceiot__sims__v1__sim__descriptor, &sim, s);
}

/* Every chain of the schema intact: seq 1..n without a gap, each hash the
 * record's, each link the previous hash, the head at the newest; nothing
 * left pending. */
static void assert_chain(const char *schema)
{
    chained(schema);
    char sql[600];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM (SELECT seq, hash, prev_hash, lag(hash) OVER (ORDER BY seq) "
             "AS before, row_number() OVER (ORDER BY seq) AS k, %s.audit_hash(prev_hash, r) AS "
             "expect FROM %s.audit_records r) x WHERE seq <> k OR hash <> expect OR prev_hash <> "
             "coalesce(before, ''::bytea)",
             schema, schema);
    cr_assert_eq(sql_long(sql), 0, "%s: the chain is broken", schema);
    snprintf(sql, sizeof(sql),
             "SELECT (SELECT seq FROM %s.audit_chain) = (SELECT coalesce(max(seq), 0) FROM "
             "%s.audit_records)::bigint",
             schema, schema);
    cr_assert_str_eq(sql_text(sql), "t", "%s: the head is the newest record", schema);
}

Test(audit_trail, every_change_is_recorded_with_who_what_and_where_and_nothing_else_is)
{
    /* identity: a user made by the bootstrap admin with its API key. */
    int64_t uid = gwc_create_user(&g, root, "auditee", ONCEIOT__COMMON__V1__ROLE__ROLE_ADMIN, 7);
    chained("identity");
    char sql[700];
    snprintf(sql, sizeof(sql),
             "SELECT concat_ws('|', user_id, organization_id, credential LIKE 'api_key:%%', "
             "method, resource_type, resource_id, summary, request_id IS NOT NULL, "
             "trace_id ~ '^[0-9a-f]{32}$', peer LIKE 'ipv%%') FROM identity.audit_records "
             "WHERE resource_type = 'users' AND resource_id = '%lld' AND summary = 'insert'",
             (long long)uid);
    cr_assert_str_eq(sql_text(sql),
                     arena_printf(g.arena,
                                  "1|7|t|/onceiot.identity.v1.IdentityService/CreateUser|users|"
                                  "%lld|insert|t|t|t",
                                  (long long)uid));

    /* sims: the import, an activation, a top-up with the client's trace. */
    chained("sims");
    cr_assert_eq(sql_long("SELECT count(*) FROM sims.audit_records WHERE method LIKE "
                          "'%/ImportSims' AND resource_type = 'sims' AND resource_id = '2 rows' "
                          "AND summary = 'insert (" ICCID_A "," ICCID_B ")' AND user_id = 1"),
                 1, "one record for the import's two SIMs");
    rpc_status_t s;
    cr_assert_eq(sim_action(root, "ActivateSim", ICCID_A, &s), 0, "%s", s.message);
    chained("sims");
    cr_assert(strstr(sql_text("SELECT summary FROM sims.audit_records WHERE method LIKE "
                              "'%/ActivateSim' AND resource_id = '" ICCID_A "'"),
                     "status"),
              "the summary names the changed columns");
    cr_assert_eq(top_up(&g, root, ICCID_A, 1000, &s), 0, "%s", s.message);
    chained("sims");
    cr_assert_eq(sql_long("SELECT count(*) FROM sims.audit_records WHERE method LIKE "
                          "'%/TopUpQuota' AND resource_type = 'sim_quotas' AND trace_id = '" TRACE
                          "' AND organization_id = 1"),
                 1, "the client's trace id is on the record");

    /* Nothing for a read, a refusal, bad input or a call that fails. */
    long before = sims_records();
    cr_assert_eq(sim_action(root, "GetSim", ICCID_A, &s), 0, "%s", s.message);
    const char *other =
        gwc_create_key(&g, root, uid, (const char *const[]){"sims:write"}, 1, NULL, NULL);
    cr_assert_eq(sim_action(other, "SuspendSim", ICCID_A, &s), ERR_NOT_FOUND,
                 "another organization's SIM");
    cr_assert_eq(top_up(&g, root, ICCID_A, -5, &s), ERR_INVALID_ARGUMENT);
    cr_assert_eq(sim_action(root, "ActivateSim", "89883030000000009999", &s), ERR_NOT_FOUND);
    cr_assert_eq(sims_records(), before, "reads, refusals and failed calls write no record");

    /* Internal work is not a public call: identity counts the keys' uses in
     * the background (once a second), and records nothing for it. */
    usleep(1500 * 1000);
    cr_assert_eq(sql_long("SELECT (SELECT count(*) FROM identity.audit_records WHERE summary LIKE "
                          "'%usage_count%') + (SELECT count(*) FROM identity.audit_pending WHERE "
                          "summary LIKE '%usage_count%')"),
                 0);
    cr_assert_gt(sql_long("SELECT sum(usage_count) FROM identity.api_keys"), 0,
                 "(the uses were counted)");
    assert_chain("identity");
    assert_chain("sims");
}

enum { WRITERS = 4, EACH = 25 };

typedef struct writer {
    int index;
    int failures;
    char first[256];
} writer_t;

/* Top-ups on both SIMs in turn (so writers cross on rows) next to
 * activations and suspensions of the SIMs. */
static void *writer(void *arg)
{
    writer_t *w = arg;
    gwc_t c;
    gwc_open(&c, st.gateway.addr);
    for (int i = 0; i < EACH; i++) {
        rpc_status_t s;
        const char *iccid = (i + w->index) % 2 ? ICCID_A : ICCID_B;
        if (top_up(&c, root, iccid, 1 + i, &s) < 0 && !w->failures++)
            snprintf(w->first, sizeof(w->first), "top-up %d: %s %s", i, err_grpc_name(s.code),
                     s.message);
    }
    gwc_close(&c);
    return NULL;
}

Test(audit_trail, concurrent_writers_are_each_recorded_and_never_deadlock)
{
    long before = sql_long("SELECT count(*) FROM sims.audit_records WHERE method LIKE "
                           "'%/TopUpQuota'");
    writer_t w[WRITERS];
    pthread_t t[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        w[i] = (writer_t){.index = i};
        pthread_create(&t[i], NULL, writer, &w[i]);
    }
    for (int i = 0; i < WRITERS; i++) {
        pthread_join(t[i], NULL);
        cr_expect_eq(w[i].failures, 0, "writer %d: %s", i, w[i].first);
    }
    chained("sims");
    cr_assert_eq(sql_long("SELECT count(*) FROM sims.audit_records WHERE method LIKE "
                          "'%/TopUpQuota'") -
                     before,
                 WRITERS * EACH, "one record per top-up");
    assert_chain("sims");
}

#define LIST_AUDIT "/onceiot.identity.v1.IdentityService/ListAuditRecords"

static int list_audit(const char *auth, int64_t org, const char *method, int32_t page_size,
                      const char *token, Onceiot__Common__V1__ListAuditRecordsResponse **out,
                      rpc_status_t *s)
{
    Onceiot__Common__V1__ListAuditRecordsRequest r =
        ONCEIOT__COMMON__V1__LIST_AUDIT_RECORDS_REQUEST__INIT;
    r.organization_id = org;
    r.method = (char *)(method ? method : "");
    r.page_size = page_size;
    r.page_token = (char *)(token ? token : "");
    return gwc_call(&g, auth, LIST_AUDIT, &r.base,
                    &onceiot__common__v1__list_audit_records_response__descriptor, out, s);
}

Test(audit_trail, admins_list_their_organizations_records_and_superusers_everyones)
{
    int64_t auditor =
        gwc_create_user(&g, root, "auditor", ONCEIOT__COMMON__V1__ROLE__ROLE_ADMIN, 7);
    const char *key = gwc_create_key(
        &g, root, auditor, (const char *const[]){"audit:read", "users:write"}, 2, NULL, NULL);
    int64_t seven = gwc_create_user(&g, key, "seven", ONCEIOT__COMMON__V1__ROLE__ROLE_USER, 7);
    int64_t one = gwc_create_user(&g, root, "one", ONCEIOT__COMMON__V1__ROLE__ROLE_USER, 1);
    chained("identity");

    Onceiot__Common__V1__ListAuditRecordsResponse *l;
    rpc_status_t s;
    cr_assert_eq(list_audit(key, 0, NULL, 0, NULL, &l, &s), 0, "%s", s.message);
    bool saw_seven = false;
    for (size_t i = 0; i < l->n_records; i++) {
        cr_assert_eq(l->records[i]->organization_id, 7, "only the admin's organization");
        if (i)
            cr_assert_lt(l->records[i]->seq, l->records[i - 1]->seq, "newest first");
        saw_seven |=
            !strcmp(l->records[i]->resource_id, arena_printf(g.arena, "%lld", (long long)seven)) &&
            l->records[i]->user_id == auditor && l->records[i]->time;
    }
    cr_assert(saw_seven, "the admin's own CreateUser is there, by the admin");
    cr_assert_eq(list_audit(key, 1, NULL, 0, NULL, &l, &s), ERR_NOT_FOUND,
                 "another organization is not there");

    /* A superuser sees every organization, and pages. */
    cr_assert_eq(
        list_audit(root, 0, "/onceiot.identity.v1.IdentityService/CreateUser", 0, NULL, &l, &s), 0,
        "%s", s.message);
    bool saw_one = false, saw_org7 = false;
    for (size_t i = 0; i < l->n_records; i++) {
        cr_assert_str_eq(l->records[i]->method, "/onceiot.identity.v1.IdentityService/CreateUser");
        saw_one |=
            !strcmp(l->records[i]->resource_id, arena_printf(g.arena, "%lld", (long long)one));
        saw_org7 |= l->records[i]->organization_id == 7;
    }
    cr_assert(saw_one && saw_org7, "both organizations' CreateUser records");
    size_t all = l->n_records;
    cr_assert_geq(all, 3);
    const char *token = NULL;
    size_t seen = 0;
    int64_t last = INT64_MAX;
    for (int page = 0; page < 10; page++) {
        cr_assert_eq(list_audit(root, 0, "/onceiot.identity.v1.IdentityService/CreateUser", 1,
                                token, &l, &s),
                     0, "%s", s.message);
        cr_assert_leq(l->n_records, 1);
        if (l->n_records) {
            cr_assert_lt(l->records[0]->seq, last);
            last = l->records[0]->seq;
            seen++;
        }
        if (!l->next_page_token[0])
            break;
        token = arena_strdup(g.arena, l->next_page_token);
    }
    cr_assert_eq(seen, all, "the pages hold every record once");
    cr_assert_eq(list_audit(root, 0, NULL, 1, token ? token : "bad", &l, &s), ERR_INVALID_ARGUMENT,
                 "a token for other filters");

    /* Not for users, nor for keys without the scope. */
    const char *user_key =
        gwc_create_key(&g, root, seven, (const char *const[]){"audit:read"}, 1, NULL, NULL);
    cr_assert_eq(list_audit(user_key, 0, NULL, 0, NULL, &l, &s), ERR_PERMISSION_DENIED);
    const char *no_scope =
        gwc_create_key(&g, root, auditor, (const char *const[]){"users:read"}, 1, NULL, NULL);
    cr_assert_eq(list_audit(no_scope, 0, NULL, 0, NULL, &l, &s), ERR_PERMISSION_DENIED);
}
