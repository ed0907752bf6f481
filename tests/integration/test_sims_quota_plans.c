/* The plans of ApplyUsage's quota statements (sims_sql.h, the very text the
 * service prepares): over 10 000 SIMs with a data and an SMS quota each,
 * after many updates (dead row versions), a batch of 1 000 SIMs probes
 * sim_quotas_pkey per input row and never reads all of sim_quotas. Planned
 * as custom plans (the arrays as constants), as each connection's first five
 * executions are, where the batch's size once made the planner pick a hash
 * join over a sequential scan. Run as the cluster's superuser (no row-level
 * security), as the tests' and the bench's services run. The plans are
 * printed for docs/ARCHITECTURE.md. */
#include "../../services/sims/sims_sql.h"
#include "pg_harness.h"
#include "sims_harness.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

/* 10 000 SIMs in 10 organizations, each with both quotas, every quota updated
 * three times or four (one batch's worth of dead row versions and more). */
static void setup(void)
{
    sims_h_start();
    PQclear(pgh_sql("SET search_path = sims, public;"
                    "INSERT INTO sims (organization_id, iccid) SELECT 1 + g % 10, "
                    "'8988303' || lpad(g::text, 12, '0') FROM generate_series(1, 10000) AS g;"
                    "INSERT INTO sim_quotas (sim_id, quota_type, volume) SELECT id, t, 1000000000 "
                    "FROM sims, unnest(ARRAY['data', 'sms']) AS t;"
                    "UPDATE sim_quotas SET used_volume = used_volume + 1 WHERE quota_type = 'data';"
                    "UPDATE sim_quotas SET used_volume = used_volume + 1 WHERE quota_type = 'data';"
                    "UPDATE sim_quotas SET used_volume = used_volume + 1;"
                    "UPDATE sim_quotas SET used_volume = used_volume + 1 WHERE sim_id % 3 = 0;"
                    "ANALYZE sims; ANALYZE sim_quotas; SET search_path = public"));
}

TestSuite(sims_quota_plans, .init = setup, .fini = sims_h_stop, .timeout = 180);

/* Prepares sql as q(types) and returns the text of EXPLAIN EXECUTE with the
 * arrays of a batch of 1 000 SIMs in ICCID order (every tenth), data before
 * SMS: ids, types and, when amounts, the amounts (most SMS quotas 0). */
static char *plan_of(const char *types, const char *sql, bool amounts)
{
    PGconn *conn = PQconnectdb(pgh_url());
    cr_assert(PQstatus(conn) == CONNECTION_OK);
    char *prep = mem_printf("SET search_path = sims, public; "
                            "SET plan_cache_mode = force_custom_plan; PREPARE q(%s) AS %s",
                            types, sql);
    PGresult *r = PQexec(conn, prep);
    mem_free(prep);
    cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s", PQerrorMessage(conn));
    PQclear(r);
    r = PQexec(conn, "SELECT array_agg(id ORDER BY iccid, t)::text, "
                     "array_agg(t ORDER BY iccid, t)::text, array_agg(CASE WHEN t = 'data' "
                     "THEN 1000 WHEN id % 7 = 0 THEN 1 ELSE 0 END ORDER BY iccid, t)::text "
                     "FROM sims, unnest(ARRAY['data', 'sms']) AS t WHERE id % 10 = 0");
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQerrorMessage(conn));
    const char *values[] = {PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2)};
    char *plan = pgh_explain_execute(conn, "q", values, amounts ? 3 : 2);
    PQclear(r);
    PQfinish(conn);
    return plan;
}

/* Asserts that the plan of sql (named name) probes sim_quotas_pkey and never
 * scans all of sim_quotas. */
static void expect_index_probes(const char *name, const char *types, const char *sql, bool amounts)
{
    char *plan = plan_of(types, sql, amounts);
    printf("-- %s, 1000 SIMs of 10000\n%s\n", name, plan);
    fflush(stdout);
    cr_assert(!strstr(plan, "Seq Scan on sim_quotas"), "%s:\n%s", name, plan);
    cr_assert(strstr(plan, "Index Scan using sim_quotas_pkey"), "%s:\n%s", name, plan);
    mem_free(plan);
}

Test(sims_quota_plans, consume_all_probes_the_primary_key_per_input_row)
{
    expect_index_probes("sims_consume_all", "bigint[], text[], bigint[]", SIMS_CONSUME_ALL, true);
}

Test(sims_quota_plans, reload_all_probes_the_primary_key_per_input_row)
{
    expect_index_probes("sims_reload_all", "bigint[], text[]", SIMS_RELOAD_ALL, false);
}
