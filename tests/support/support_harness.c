/* The support test harness (see support_harness.h). */
#include "support_harness.h"

#include "identity/v1/identity.pb-c.h"
#include "pg_harness.h"
#include "sims/v1/sims.pb-c.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#define SUPPORT "/onceiot.support.v1.SupportService/"

supp_h_t supp_h;

static void supp_h__start_support(int port)
{
    PQclear(pgh_sql("SET client_min_messages = warning; DROP SCHEMA IF EXISTS support CASCADE"));
    sh_stack_t *s = &supp_h.st;
    char *key = mem_printf("ONCEIOT_PRINCIPAL_KEY=%s", s->principal_key);
    char *signing = ph_signing_keys_env(s->principal_key, "support",
                                        (const char *const[]){"sims", "identity", NULL});
    char *sims = mem_printf("ONCEIOT_SIMS_ADDR=%s", s->sims.addr);
    char *identity = mem_printf("ONCEIOT_IDENTITY_ADDR=%s", s->identity.addr);
    char *db = mem_printf("ONCEIOT_DATABASE_URL=%s", pgh_url());
    char *schema = ph_source_path("schema");
    char *dir = mem_printf("ONCEIOT_SCHEMA_DIR=%s/support", schema);
    const char *env[] = {key, signing, sims, identity, db, dir, "ONCEIOT_GRACE_MS=3000", NULL};
    char *bin = ph_build_path("services/onceiot-support");
    ph_start_at(&supp_h.support, port, bin, env);
    mem_free(bin);
    mem_free(dir);
    mem_free(schema);
    mem_free(db);
    mem_free(identity);
    mem_free(sims);
    mem_free(signing);
    mem_free(key);
}

static const char *supp_h__key(int64_t user, const char *s1, const char *s2)
{
    const char *scopes[] = {s1, s2};
    return gwc_create_key(&supp_h.g, supp_h.root, user, scopes, s2 ? 2 : 1, NULL, NULL);
}

/* Makes user id a superuser (identity has no API for it: the operator's
 * staff are made in the database) and, unless active, deactivates it. */
static void supp_h__make_staff(int64_t id, bool active)
{
    char sql[200];
    snprintf(sql, sizeof(sql),
             "UPDATE identity.users SET is_superuser = true, is_active = %s WHERE id = %lld",
             active ? "true" : "false", (long long)id);
    supp_h_sql(sql);
}

static const char *supp_h__sim(int64_t org, const char *iccid)
{
    Onceiot__Sims__V1__SimInput in = ONCEIOT__SIMS__V1__SIM_INPUT__INIT;
    in.iccid = (char *)iccid;
    in.organization_id = org;
    Onceiot__Sims__V1__CreateSimRequest req = ONCEIOT__SIMS__V1__CREATE_SIM_REQUEST__INIT;
    req.sim = &in;
    void *out = NULL;
    rpc_status_t s;
    cr_assert_eq(gwc_call(&supp_h.g, supp_h.root, "/onceiot.sims.v1.SimService/CreateSim",
                          &req.base, &onceiot__sims__v1__sim__descriptor, &out, &s),
                 0, "CreateSim %s: %s", iccid, s.message);
    return iccid;
}

void supp_h_start(void)
{
    memset(&supp_h, 0, sizeof(supp_h));
    int port = ph_free_port();
    char addr[96];
    snprintf(addr, sizeof(addr), "ONCEIOT_SUPPORT_ADDR=127.0.0.1:%d", port);
    sh_start_with_sims(&supp_h.st, NULL, (const char *const[]){addr, NULL});
    supp_h__start_support(port);
    /* The gateway routes to support once its health check has seen it. */
    cr_assert(ph_wait_health(supp_h.st.gateway.addr, "onceiot.support.v1.SupportService", 1, 20000),
              "the gateway never saw support SERVING (log %s)", supp_h.st.gateway.log);
    gwc_open(&supp_h.g, supp_h.st.gateway.addr);
    arena_t *a = supp_h.g.arena;
    supp_h.root = arena_printf(a, "Bearer %s", supp_h.st.admin_key);
    supp_h.root_id = 1;
    const Onceiot__Common__V1__Role user = ONCEIOT__COMMON__V1__ROLE__ROLE_USER;
    supp_h.staff_id = gwc_create_user(&supp_h.g, supp_h.root, "staff2", user, 1);
    supp_h__make_staff(supp_h.staff_id, true);
    supp_h.inactive_staff_id = gwc_create_user(&supp_h.g, supp_h.root, "gone", user, 1);
    supp_h__make_staff(supp_h.inactive_staff_id, false);
    supp_h.staff = supp_h__key(supp_h.staff_id, "support:read", "support:write");
    supp_h.cust_a_id = gwc_create_user(&supp_h.g, supp_h.root, "cust_a", user, SUPP_ORG_A);
    supp_h.cust_a = supp_h__key(supp_h.cust_a_id, "support:read", "support:write");
    int64_t reader = gwc_create_user(&supp_h.g, supp_h.root, "reader_a",
                                     ONCEIOT__COMMON__V1__ROLE__ROLE_READONLY, SUPP_ORG_A);
    supp_h.reader_a = supp_h__key(reader, "support:read", NULL);
    int64_t noscope = gwc_create_user(&supp_h.g, supp_h.root, "noscope_a", user, SUPP_ORG_A);
    supp_h.noscope_a = supp_h__key(noscope, "sims:read", NULL);
    supp_h.cust_b_id = gwc_create_user(&supp_h.g, supp_h.root, "cust_b", user, SUPP_ORG_B);
    supp_h.cust_b = supp_h__key(supp_h.cust_b_id, "support:read", "support:write");
    supp_h.sim_a1 = supp_h__sim(SUPP_ORG_A, "8988247000000000011");
    supp_h.sim_a2 = supp_h__sim(SUPP_ORG_A, "8988247000000000029");
    supp_h.sim_b1 = supp_h__sim(SUPP_ORG_B, "8988247000000000037");
}

void supp_h_stop(void)
{
    gwc_close(&supp_h.g);
    if (supp_h.support.pid) {
        int code = ph_stop(&supp_h.support, SIGTERM, 20000);
        cr_expect_eq(code, 0, "support exited with %d (log %s)", code, supp_h.support.log);
    }
    cr_expect(!ph_log_has_sanitizer_report(&supp_h.support), "sanitizer report in %s",
              supp_h.support.log);
    sh_stop(&supp_h.st);
}

int supp_h_call(const char *auth, const char *method, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *resp_desc, void *resp, rpc_status_t *st)
{
    const char *path = arena_printf(supp_h.g.arena, SUPPORT "%s", method);
    return gwc_call(&supp_h.g, auth, path, req, resp_desc, resp, st);
}

supp_ticket_t *supp_h_create(const char *auth, const char *subject,
                             Onceiot__Support__V1__TicketPriority priority)
{
    Onceiot__Support__V1__CreateTicketRequest req =
        ONCEIOT__SUPPORT__V1__CREATE_TICKET_REQUEST__INIT;
    req.subject = (char *)subject;
    req.description = "created by the support tests";
    req.priority = priority;
    supp_ticket_t *t = NULL;
    rpc_status_t s;
    cr_assert_eq(supp_h_call(auth, "CreateTicket", &req.base,
                             &onceiot__support__v1__ticket__descriptor, &t, &s),
                 0, "CreateTicket: %s %s", err_grpc_name(s.code), s.message);
    return t;
}

int supp_h_act(const char *auth, const char *method, int64_t id, supp_ticket_t **out,
               rpc_status_t *st)
{
    Onceiot__Support__V1__TicketActionRequest req =
        ONCEIOT__SUPPORT__V1__TICKET_ACTION_REQUEST__INIT;
    req.id = id;
    supp_ticket_t *own = NULL;
    rpc_status_t own_st;
    return supp_h_call(auth, method, &req.base, &onceiot__support__v1__ticket__descriptor,
                       out ? out : &own, st ? st : &own_st);
}

int supp_h_resolve(const char *auth, int64_t id, const char *resolution, supp_ticket_t **out,
                   rpc_status_t *st)
{
    Onceiot__Support__V1__ResolveTicketRequest req =
        ONCEIOT__SUPPORT__V1__RESOLVE_TICKET_REQUEST__INIT;
    req.id = id;
    req.resolution = (char *)resolution;
    return supp_h_call(auth, "ResolveTicket", &req.base, &onceiot__support__v1__ticket__descriptor,
                       out, st);
}

supp_ticket_t *supp_h_get(const char *auth, int64_t id)
{
    Onceiot__Support__V1__GetTicketRequest req = ONCEIOT__SUPPORT__V1__GET_TICKET_REQUEST__INIT;
    req.id = id;
    supp_ticket_t *t = NULL;
    rpc_status_t s;
    cr_assert_eq(supp_h_call(auth, "GetTicket", &req.base,
                             &onceiot__support__v1__ticket__descriptor, &t, &s),
                 0, "GetTicket %lld: %s %s", (long long)id, err_grpc_name(s.code), s.message);
    return t;
}

void supp_h_sql(const char *sql)
{
    PQclear(pgh_sql(sql));
}

bool supp_h_violation(const rpc_status_t *st, const char *field)
{
    const char **fields = NULL, **descs = NULL;
    size_t n = rpc_status_violations(st, supp_h.g.arena, &fields, &descs);
    for (size_t i = 0; i < n; i++)
        if (strcmp(fields[i], field) == 0)
            return true;
    return false;
}
