/* The plans of ListTickets: every filter, search and order of the very
 * statements the service prepares (support_sql.h) uses an index over 20 000
 * tickets in 20 organizations, for a customer (one organization) and for
 * staff (all). The plans are printed for docs/schema.md. */
#include "../../services/support/support_sql.h"
#include "pg_harness.h"
#include "proc_harness.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

static ph_proc_t support;

/* onceiot-support on a fresh schema applies the migrations; it needs no
 * peer to start (its channels connect on first use). */
static void setup(void)
{
    PQclear(pgh_sql("SET client_min_messages = warning; DROP SCHEMA IF EXISTS support CASCADE"));
    char *db = mem_printf("ONCEIOT_DATABASE_URL=%s", pgh_url());
    char *schema = ph_source_path("schema");
    char *dir = mem_printf("ONCEIOT_SCHEMA_DIR=%s/support", schema);
    char *signing =
        ph_signing_keys_env("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
                            "support", (const char *const[]){"sims", "identity", NULL});
    const char *env[] = {
        "ONCEIOT_PRINCIPAL_KEY=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        signing,
        db,
        dir,
        "ONCEIOT_SIMS_ADDR=127.0.0.1:9",
        "ONCEIOT_IDENTITY_ADDR=127.0.0.1:9",
        NULL};
    char *bin = ph_build_path("services/onceiot-support");
    ph_start(&support, bin, env);
    mem_free(bin);
    mem_free(signing);
    mem_free(dir);
    mem_free(schema);
    mem_free(db);
    /* 1 in 200 tickets is about an offline modem, 1 in 20 in progress, 1 in
     * 50 assigned, 1 in 100 names a SIM; most got their first response; 1 in
     * 10 has a public comment, 1 in 10 an internal note. */
    PQclear(pgh_sql(
        "INSERT INTO support.tickets (organization_id, created_by, subject, description, priority, "
        "status, category, iccids, assignee_id, first_response_at, created_at, resolution) "
        "SELECT 1 + g % 20, 1000 + g % 20, "
        "CASE WHEN g % 200 = 0 THEN 'modem offline since ' || g ELSE 'question ' || g END, "
        "'ticket number ' || g || ' about invoice ' || (g % 97), "
        "(ARRAY['low', 'medium', 'high', 'critical'])[1 + g % 4], "
        "CASE WHEN g % 20 = 0 THEN 'in_progress' WHEN g % 3 = 0 THEN 'closed' ELSE 'open' END, "
        "'general', CASE WHEN g % 100 = 0 THEN ARRAY['8988' || lpad(g::text, 15, '0')] "
        "ELSE '{}' END, CASE WHEN g % 50 = 0 THEN 7 END, "
        "CASE WHEN g % 10 <> 0 THEN now() END, now() - g * interval '10 minutes', "
        "CASE WHEN g % 3 = 0 AND g % 20 <> 0 THEN 'done' END "
        "FROM generate_series(1, 20000) AS g;"
        "INSERT INTO support.ticket_comments (ticket_id, organization_id, author_id, "
        "author_is_staff, visibility, body) "
        "SELECT id, organization_id, 7, true, CASE WHEN id % 20 = 0 THEN 'internal' "
        "ELSE 'public' END, 'we replaced part ' || id FROM support.tickets WHERE id % 10 = 0;"
        "ANALYZE support.tickets; ANALYZE support.ticket_comments"));
}

static void teardown(void)
{
    if (support.pid) {
        int code = ph_stop(&support, SIGTERM, 20000);
        cr_expect_eq(code, 0, "support exited with %d (log %s)", code, support.log);
    }
    cr_expect(!ph_log_has_sanitizer_report(&support), "sanitizer report in %s", support.log);
}

typedef struct plan_case {
    /* Inline arrays: Criterion hands the parameters to the test's own
     * process, where pointers into this one would be meaningless. */
    char name[32];
    char order;          /* 'c' created, 'p' priority */
    char params[13][24]; /* $1..$13 ("" is NULL) */
} plan_case_t;

ParameterizedTestParameters(support_plans, every_list_filter_search_and_order_uses_an_index)
{
    /* $1 org, $2 status, $3 priority, $4 category, $5 assignee, $6 unassigned,
     * $7 ICCID, $8 after, $9 before, $10 public search, $11 staff search,
     * $12 overdue, $13 due within (s) */
    static plan_case_t c[] = {
        {"customer, no filter", 'c', {"2"}},
        {"customer, search", 'c', {"2", "", "", "", "", "", "", "", "", "modem offline"}},
        {"customer, status", 'c', {"2", "in_progress"}},
        {"customer, ICCID", 'c', {"2", "", "", "", "", "", "8988000000000000200"}},
        {"customer, by priority", 'p', {"2"}},
        {"staff, no filter", 'c', {""}},
        {"staff, search", 'c', {"", "", "", "", "", "", "", "", "", "", "modem offline"}},
        {"staff, search by priority", 'p', {"", "", "", "", "", "", "", "", "", "", "modem"}},
        {"staff, assignee", 'c', {"", "", "", "", "7"}},
        {"staff, overdue", 'p', {"", "", "", "", "", "", "", "", "", "", "", "true"}},
        {"staff, due within 1 h", 'p', {"", "", "", "", "", "", "", "", "", "", "", "", "3600"}},
    };
    return cr_make_param_array(plan_case_t, c, sizeof(c) / sizeof(c[0]));
}

ParameterizedTest(plan_case_t *c, support_plans, every_list_filter_search_and_order_uses_an_index,
                  .init = setup, .fini = teardown, .timeout = 120)
{
    PGconn *conn = PQconnectdb(pgh_url());
    cr_assert(PQstatus(conn) == CONNECTION_OK);
    PGresult *r = PQexec(conn, "SET search_path = support, public; "
                               "SET plan_cache_mode = force_custom_plan");
    cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s", PQerrorMessage(conn));
    PQclear(r);
    char *prep = mem_printf("PREPARE q(bigint, text, text, text, bigint, bool, text, bigint, "
                            "bigint, text, text, bool, bigint, bigint, text, bigint) AS %s",
                            c->order == 'p' ? SUPPORT_LIST_BY_PRIORITY : SUPPORT_LIST_BY_CREATED);
    r = PQexec(conn, prep);
    mem_free(prep);
    cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s", PQerrorMessage(conn));
    PQclear(r);
    /* A page of 50: LIMIT 51. */
    const char *values[16] = {NULL};
    for (int i = 0; i < 13; i++)
        values[i] = *c->params[i] ? c->params[i] : NULL;
    values[13] = "51";
    char *plan = pgh_explain_execute(conn, "q", values, 16);
    PQfinish(conn);
    printf("-- ListTickets %s (20000 tickets, 20 organizations)\n%s\n", c->name, plan);
    fflush(stdout);
    cr_assert(!strstr(plan, "Seq Scan on tickets"), "%s:\n%s", c->name, plan);
    /* A customer's search reads the public document only. */
    if (*c->params[0])
        cr_assert(!strstr(plan, "search_staff"), "%s:\n%s", c->name, plan);
    mem_free(plan);
}
