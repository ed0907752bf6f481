/* Row-level security as a second wall (docs/schema.md, "Row-level
 * security"): every service's migrations applied by a service role (not a
 * superuser, no BYPASSRLS, the owner of its tables, as ./tools/stack and the
 * manifests set it up), rows of two organizations written past the policies
 * by the cluster's superuser, then read through the runtime's own pool as
 * that role with queries that have no organization filter at all. A scope
 * of organization 1 sees only organization 1's rows in every table, a
 * superuser (and the runtime's internal work, which uses the same scope)
 * sees both, a connection without a scope sees none; a write of another
 * organization's row is refused. And every table of every schema that has an
 * organization_id column has its policies forced, so a new table cannot be
 * forgotten. */
#include "onceiot/audit.h"
#include "onceiot/db.h"
#include "onceiot/mem.h"
#include "onceiot/migrate.h"
#include "pg_harness.h"
#include "proc_harness.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <string.h>

typedef struct rls_case {
    const char *service;
    const char *seed;          /* superuser SQL, search_path on the schema: one row per org */
    const char *tables[10];    /* each holding exactly one row of organization 1 and one of 2 */
    const char *foreign_write; /* a write of organization 2's row, or NULL */
} rls_case_t;

static const rls_case_t cases[] = {
    {"identity",
     "INSERT INTO users (id, username, email, password_hash, organization_id) OVERRIDING SYSTEM "
     "VALUE VALUES (1001, 'rls_a', 'a@rls.test', 'x', 1), (1002, 'rls_b', 'b@rls.test', 'x', 2);"
     "INSERT INTO api_keys (user_id, key_hash, key_prefix, name) VALUES"
     " (1001, decode(repeat('aa', 32), 'hex'), 'sk_live_aaaaaaaa', 'a'),"
     " (1002, decode(repeat('bb', 32), 'hex'), 'sk_live_bbbbbbbb', 'b')",
     {"users", "api_keys"},
     "INSERT INTO users (username, email, password_hash, organization_id)"
     " VALUES ('rls_c', 'c@rls.test', 'x', 2)"},
    {"sims",
     "INSERT INTO sims (id, organization_id, iccid, tags) OVERRIDING SYSTEM VALUE VALUES"
     " (1001, 1, '8988303000000000001', '{a}'), (1002, 2, '8988303000000000002', '{a}');"
     "INSERT INTO sim_quotas (sim_id, quota_type) VALUES (1001, 'data'), (1002, 'data');"
     "INSERT INTO sim_sms (sim_id, organization_id, iccid, direction, message, encoding, segments)"
     " VALUES (1001, 1, '8988303000000000001', 'MT', 'hi', 'GSM7', 1),"
     " (1002, 2, '8988303000000000002', 'MT', 'hi', 'GSM7', 1);"
     "INSERT INTO sim_events (sim_id, organization_id, iccid, event_type, event_category,"
     " triggered_by) VALUES (1001, 1, '8988303000000000001', 'sim_created', 'registry', 'test'),"
     " (1002, 2, '8988303000000000002', 'sim_created', 'registry', 'test')",
     {"sims", "sim_quotas", "sim_sms", "sim_events", "sim_summaries", "sim_tags"},
     "INSERT INTO sims (organization_id, iccid) VALUES (2, '8988303000000000003')"},
    {"usage",
     "INSERT INTO sim_usage (sim_id, organization_id, iccid, \"timestamp\", batch_id) VALUES"
     " (1, 1, '8988303000000000001', now(), 'b1'), (2, 2, '8988303000000000002', now(), 'b1');"
     "INSERT INTO sim_usage_hourly (sim_id, hour, organization_id, iccid, volume_rx, volume_tx,"
     " sms_mo, sms_mt, session_count, records) SELECT s, date_trunc('hour', now()), s,"
     " '898830300000000000' || s, 1, 1, 0, 0, 1, 1 FROM generate_series(1, 2) s;"
     "INSERT INTO sim_usage_daily (sim_id, day, organization_id, iccid, volume_rx, volume_tx,"
     " sms_mo, sms_mt, session_count, records) SELECT s, current_date, s,"
     " '898830300000000000' || s, 1, 1, 0, 0, 1, 1 FROM generate_series(1, 2) s;"
     "INSERT INTO sim_usage_daily_network (sim_id, day, country, mcc, mnc, organization_id,"
     " volume_rx, volume_tx, sms_mo, sms_mt, session_count, records) SELECT s, current_date,"
     " 'DE', '262', '01', s, 1, 1, 0, 0, 1, 1 FROM generate_series(1, 2) s;"
     "INSERT INTO org_usage_daily (organization_id, day, batch_id, active_sims, volume_rx,"
     " volume_tx, sms_mo, sms_mt, session_count, records) SELECT s, current_date, 'b1', 1, 1, 1,"
     " 0, 0, 1, 1 FROM generate_series(1, 2) s;"
     "INSERT INTO org_usage_daily_network (organization_id, day, country, mcc, mnc, batch_id,"
     " active_sims, volume_rx, volume_tx, sms_mo, sms_mt, session_count, records) SELECT s,"
     " current_date, 'DE', '262', '01', 'b1', 1, 1, 1, 0, 0, 1, 1 FROM generate_series(1, 2) s;"
     "INSERT INTO sim_connectivity (sim_id, \"timestamp\", organization_id, iccid, connected,"
     " batch_id) SELECT s, now(), s, '898830300000000000' || s, true, 'c1'"
     " FROM generate_series(1, 2) s;"
     "INSERT INTO sim_connectivity_state (sim_id, organization_id, iccid) SELECT s, s,"
     " '898830300000000000' || s FROM generate_series(1, 2) s",
     {"sim_usage", "sim_usage_hourly", "sim_usage_daily", "sim_usage_daily_network",
      "org_usage_daily", "org_usage_daily_network", "sim_connectivity", "sim_connectivity_state"},
     "INSERT INTO org_usage_daily (organization_id, day, batch_id, active_sims, volume_rx,"
     " volume_tx, sms_mo, sms_mt, session_count, records)"
     " VALUES (2, current_date, 'b2', 1, 1, 1, 0, 0, 1, 1)"},
    {"commerce",
     "INSERT INTO orders (seq, organization_id, user_id, order_type, currency, total_minor)"
     " OVERRIDING SYSTEM VALUE VALUES (1001, 1, 1, 'sim_card', 'EUR', 100),"
     " (1002, 2, 2, 'sim_card', 'EUR', 100);"
     "INSERT INTO order_items (order_seq, n, product_id, category, product_name, product_sku,"
     " quantity, unit_price_minor, total_minor) SELECT 1000 + s, 1, gen_random_uuid(), 'sim_card', "
     "'p',"
     " 'P-1', 1, 100, 100 FROM generate_series(1, 2) s",
     {"orders", "order_items"},
     "INSERT INTO orders (organization_id, user_id, order_type, currency, total_minor)"
     " VALUES (2, 2, 'sim_card', 'EUR', 100)"},
    {"support",
     "INSERT INTO tickets (id, organization_id, created_by, subject) OVERRIDING SYSTEM VALUE"
     " VALUES (1001, 1, 1, 'a'), (1002, 2, 2, 'b');"
     "INSERT INTO ticket_comments (ticket_id, organization_id, author_id, author_is_staff,"
     " visibility, body) SELECT 1000 + s, s, s, false, 'public', 'c' FROM generate_series(1, 2) s;"
     "INSERT INTO ticket_history (ticket_id, kind, actor_user_id) SELECT 1000 + s, 'created', s"
     " FROM generate_series(1, 2) s",
     {"tickets", "ticket_comments", "ticket_history"},
     "INSERT INTO tickets (organization_id, created_by, subject) VALUES (2, 2, 'c')"},
};

/* Every table (or view) in a case holds one row of organization 1 and one
 * of 2: what count(*) with no filter returns for each scope. */
static db_stmt_t stmts[64]; /* the pool remembers them: they outlive it */
static int n_stmts;

static int64_t count_as(db_conn_t *c, const char *table, int64_t org, bool superuser, bool scoped)
{
    cr_assert_lt(n_stmts, 64);
    db_stmt_t *st = &stmts[n_stmts];
    *st = (db_stmt_t){mem_printf("test_rls_count_%d", n_stmts),
                      mem_printf("SELECT count(*) AS n FROM %s", table), 0};
    n_stmts++;
    PGresult *res = NULL;
    if (scoped)
        db_set_scope(c, org, superuser);
    int rc = db_exec(c, st, NULL, &res);
    cr_assert_eq(rc, 1, "%s: %s", table, db_errmsg(c));
    int64_t v = db_get_int(res, 0, "n", -1);
    PQclear(res);
    return v;
}

/* The case's schema, migrated by a fresh service role, seeded, and a pool
 * of one connection as that role. */
static db_pool_t *rls_setup(const rls_case_t *k, char **role, char **schema)
{
    *role = pgh_fresh_role("rls");
    char *prefix = mem_printf("rls_%s", k->service);
    *schema = pgh_service_schema(*role, prefix);
    mem_free(prefix);

    char *url = pgh_url_as(*role);
    char *src = ph_source_path("schema");
    char *dir = mem_printf("%s/%s", src, k->service);
    migrate_result_t r;
    char err[512];
    /* The service's files need the runtime's audit functions (audit_track),
     * applied first as the service does. */
    int rc = migrate_run_with(url, *schema, audit_migrations, AUDIT_N_MIGRATIONS, dir, &r, err,
                              sizeof err);
    cr_assert_eq(rc, 0, "%s migrations as a service role: %s", k->service, err);
    mem_free(src);
    mem_free(dir);

    char *sql = mem_printf("SET search_path = %s, public; %s", *schema, k->seed);
    PQclear(pgh_sql(sql));
    mem_free(sql);

    db_opts_t o = {.url = url,
                   .schema = *schema,
                   .size = 1,
                   .statement_timeout_ms = 5000,
                   .connect_timeout_ms = 2000};
    db_pool_t *pool = NULL;
    cr_assert_eq(db_pool_open(&o, &pool), 0);
    mem_free(url);
    return pool;
}

static void rls_teardown(db_pool_t *pool, char *role, char *schema)
{
    db_pool_close(pool);
    for (int i = 0; i < n_stmts; i++) {
        mem_free((char *)stmts[i].name);
        mem_free((char *)stmts[i].sql);
    }
    n_stmts = 0;
    pgh_drop_service_schema(schema, role);
}

ParameterizedTestParameters(rls, a_query_without_its_organization_filter_sees_only_its_own_rows)
{
    /* Indices: the parameters reach the test by value, and pointers to
     * this process's strings would not survive that. */
    static int idx[] = {0, 1, 2, 3, 4};
    _Static_assert(sizeof idx / sizeof idx[0] == sizeof cases / sizeof cases[0], "one per case");
    return cr_make_param_array(int, idx, sizeof idx / sizeof idx[0]);
}

ParameterizedTest(int *which, rls, a_query_without_its_organization_filter_sees_only_its_own_rows)
{
    const rls_case_t *k = &cases[*which];
    char *role, *schema;
    db_pool_t *pool = rls_setup(k, &role, &schema);
    db_conn_t *c = NULL;

    for (size_t i = 0; i < sizeof k->tables / sizeof k->tables[0] && k->tables[i]; i++) {
        const char *t = k->tables[i];
        /* A fresh checkout: no scope at all. */
        cr_assert_eq(db_pool_acquire(pool, 2000, &c), 0);
        cr_expect_eq(count_as(c, t, 0, false, false), 0, "%s: no scope sees nothing", t);
        cr_expect_eq(count_as(c, t, 1, false, true), 1, "%s: organization 1 sees its row", t);
        cr_expect_eq(count_as(c, t, 3, false, true), 0, "%s: organization 3 sees nothing", t);
        cr_expect_eq(count_as(c, t, 0, true, true), 2, "%s: a superuser sees both", t);
        /* A transaction keeps the scope set at its BEGIN. */
        db_set_scope(c, 2, false);
        cr_assert_eq(db_begin(c), 0, "%s", db_errmsg(c));
        cr_expect_eq(count_as(c, t, 2, false, false), 1, "%s: in a transaction", t);
        cr_expect_eq(count_as(c, t, 2, false, false), 1, "%s: its second statement", t);
        cr_assert_eq(db_commit(c), 0, "%s", db_errmsg(c));
        db_pool_release(pool, c);
    }
    cr_assert_eq(db_pool_acquire(pool, 2000, &c), 0);
    if (k->foreign_write) {
        static db_stmt_t st; /* outlives the pool, as every statement */
        st = (db_stmt_t){"test_rls_foreign_write", k->foreign_write, 0};
        db_set_scope(c, 1, false);
        int rc = db_exec(c, &st, NULL, NULL);
        cr_expect_lt(rc, 0, "organization 1 wrote organization 2's row");
        cr_expect_str_eq(db_sqlstate(c), "42501", "%s", db_errmsg(c));
        db_set_scope(c, 2, false);
        cr_expect_eq(db_exec(c, &st, NULL, NULL), 1, "its own organization may: %s", db_errmsg(c));
    }
    db_pool_release(pool, c);

    /* Every table with an organization has its policies forced, and the role
     * is one they apply to. */
    const char *params[] = {schema, role};
    PGresult *res = pgh_sqlf(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'organization_id'"
        " WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
        "   AND NOT (c.relrowsecurity AND c.relforcerowsecurity"
        "            AND EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid))"
        " UNION ALL SELECT rolname FROM pg_roles WHERE rolname = $2 AND (rolsuper OR rolbypassrls)",
        2, params);
    cr_expect_eq(PQntuples(res), 0, "without forced row-level security: %s",
                 PQntuples(res) ? PQgetvalue(res, 0, 0) : "");
    PQclear(res);
    rls_teardown(pool, role, schema);
}
