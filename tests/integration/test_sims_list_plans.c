/* ListSims filtered by a tag in ICCID order (sims_sql.h's SIMS_LIST_BY_TAG,
 * the text the service runs) under row-level security, as production runs
 * it: the sims migrations applied by a service role (not a superuser, the
 * owner of the tables, bound by their forced policies), statements sent
 * through the runtime's pool as that role with the caller's scope. Over
 * 100 000 SIMs in two organizations, 2 000 of each tagged "rare": a page of
 * 100 reads the tag's entries of sim_tags in order and about as many rows
 * as it returns (the plain query walked the organization's SIMs filtering
 * each: the GIN index on tags cannot serve a filter that must run after the
 * policies). And its pages
 * are those of the plain query (SIMS_LIST_BY_ICCID, the same filters), also
 * after tags are added, removed and repeated, SIMs deleted and moved to
 * another organization. The plans are printed for docs/ARCHITECTURE.md. */
#include "../../services/sims/sims_sql.h"
#include "onceiot/audit.h"
#include "onceiot/db.h"
#include "onceiot/mem.h"
#include "onceiot/migrate.h"
#include "pg_harness.h"
#include "proc_harness.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PAGE     100
#define WALK_MAX 5000 /* SIMs a walk through the pages reads at most */

static char *role;
static char *schema;
static db_pool_t *pool;

/* Every organization-scoped statement the tests run; the pool remembers
 * statements by their address, so they live as long as the process. */
static const db_stmt_t by_tag = {"test_list_by_tag", SIMS_LIST_BY_TAG, 12};
static const db_stmt_t plain = {"test_list_plain", SIMS_LIST_BY_ICCID, 12};
static const db_stmt_t explain = {"test_list_explain",
                                  "EXPLAIN (ANALYZE, FORMAT JSON) " SIMS_LIST_BY_TAG, 12};
static const db_stmt_t explain_text = {"test_list_explain_text",
                                       "EXPLAIN (ANALYZE, COSTS OFF) " SIMS_LIST_BY_TAG, 12};

/* Applies the migrations in dir (the runtime's audit functions first, as
 * the service does) as the service role at url. */
static void migrate(const char *url, const char *dir)
{
    migrate_result_t r;
    char err[512];
    int rc = migrate_run_with(url, schema, audit_migrations, AUDIT_N_MIGRATIONS, dir, &r, err,
                              sizeof err);
    cr_assert_eq(rc, 0, "sims migrations (%s) as a service role: %s", dir, err);
}

/* A fresh service role migrates a fresh schema (the runtime's audit
 * functions first, as the service does); the cluster's superuser writes the
 * SIMs past the policies: SIM g (of 100 000) is in organization 1 + g % 2,
 * tagged "fleet", and also "rare" when g % 50 is 0 or 1 (2 000 rare SIMs in
 * each organization, spread over its ICCIDs); 2 000 more are tagged "late"
 * (twice over: a tag repeated); each has a data quota. */
static void setup(void)
{
    role = pgh_fresh_role("sims_list");
    schema = pgh_service_schema(role, "sims_list");

    /* The SIMs are written before 0007_sim_tags.sql, which fills sim_tags
     * from them, and more after it, through the trigger. */
    char *url = pgh_url_as(role);
    char *src = ph_source_path("schema");
    char *dir = mem_printf("%s/sims", src);
    char early[] = "/tmp/sims_list_plans.XXXXXX";
    cr_assert(mkdtemp(early));
    DIR *d = opendir(dir);
    cr_assert(d);
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.' || strncmp(e->d_name, "0007", 4) >= 0)
            continue;
        char *from = mem_printf("%s/%s", dir, e->d_name),
             *to = mem_printf("%s/%s", early, e->d_name);
        cr_assert_eq(symlink(from, to), 0);
        mem_free(from);
        mem_free(to);
    }
    closedir(d);
    migrate(url, early);
    char *sql =
        mem_printf("SET search_path = %s, public;"
                   "INSERT INTO sims (organization_id, iccid, label, tags) SELECT 1 + g %% 2,"
                   " '8988303' || lpad(g::text, 12, '0'), 'device ' || g,"
                   " CASE WHEN g %% 50 IN (0, 1) THEN '{rare,fleet}'::text[] ELSE '{fleet}' END"
                   " FROM generate_series(1, 100000) AS g",
                   schema);
    PQclear(pgh_sql(sql));
    mem_free(sql);
    migrate(url, dir);
    sql = mem_printf(
        "SET search_path = %s, public;"
        "INSERT INTO sims (organization_id, iccid, tags) SELECT 1 + g %% 2,"
        " '8988304' || lpad(g::text, 12, '0'), '{late,late}' FROM generate_series(1, 2000) AS g;"
        "INSERT INTO sim_quotas (sim_id, quota_type, volume) SELECT id, 'data', 1000 FROM sims;"
        "ANALYZE sims; ANALYZE sim_quotas",
        schema);
    PQclear(pgh_sql(sql));
    mem_free(sql);
    /* As autovacuum does after a load (inserts alone trigger it): the pages
     * become all-visible, and a page of entries an index-only scan. */
    sql = mem_printf("VACUUM (ANALYZE) %s.sim_tags", schema);
    PQclear(pgh_sql(sql));
    mem_free(sql);
    char *rm = mem_printf("rm -r %s", early);
    cr_assert_eq(system(rm), 0);
    mem_free(rm);
    mem_free(src);
    mem_free(dir);

    db_opts_t o = {.url = url,
                   .schema = schema,
                   .size = 1,
                   .statement_timeout_ms = 20000,
                   .connect_timeout_ms = 2000};
    cr_assert_eq(db_pool_open(&o, &pool), 0);
    mem_free(url);
}

static void teardown(void)
{
    db_pool_close(pool);
    pgh_drop_service_schema(schema, role);
}

TestSuite(sims_list_plans, .init = setup, .fini = teardown, .timeout = 180);

/* Runs stmt with the ListSims parameters (after NULL: the first page) as
 * org's tenant, asserting success. PQclear the result. */
static PGresult *run(const db_stmt_t *stmt, const char *org, const char *tag, int limit,
                     const char *after)
{
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit);
    /* The first page's key is '' (what the tag's statement needs, and the
     * plain one ignores while $12 is NULL). */
    const char *params[12] = {
        org, NULL, NULL, tag, NULL, NULL, NULL, NULL, NULL, lim, after ? after : "", after};
    db_conn_t *c = NULL;
    cr_assert_eq(db_pool_acquire(pool, 2000, &c), 0);
    db_set_scope(c, strtoll(org, NULL, 10), false);
    PGresult *res = NULL;
    /* As the service runs them: the tag's list on its generic plan. */
    int rc = stmt == &by_tag ? db_exec_generic(c, stmt, params, &res)
                             : db_exec_custom(c, stmt, params, &res);
    cr_assert_geq(rc, 0, "%s: %s", stmt->name, db_errmsg(c));
    db_pool_release(pool, c);
    return res;
}

/* EXPLAIN (ANALYZE, opts) of SIMS_LIST_BY_TAG with run's parameters as org's
 * tenant: planned for them (a custom plan), or, when generic, the generic
 * plan the service runs (PostgreSQL 15 explains a prepared statement's
 * generic plan only through EXECUTE under force_generic_plan). PQclear the
 * result. */
static PGresult *explain_of(bool generic, const char *opts, const char *org, const char *tag,
                            int limit, const char *after)
{
    if (!generic)
        return run(strcmp(opts, "FORMAT JSON") == 0 ? &explain : &explain_text, org, tag, limit,
                   after);
    static bool prepared; /* on the pool's one connection */
    db_conn_t *c = NULL;
    cr_assert_eq(db_pool_acquire(pool, 2000, &c), 0);
    db_set_scope(c, strtoll(org, NULL, 10), false);
    if (!prepared) {
        cr_assert_geq(
            db_exec_simple(c, "PREPARE test_list_generic(bigint, text, text, text, text, "
                              "text, inet, text, bigint, bigint, text, text) AS " SIMS_LIST_BY_TAG),
            0, "%s", db_errmsg(c));
        prepared = true;
    }
    char *last = after ? mem_printf("'%s'", after) : mem_strdup("NULL");
    char *sql = mem_printf("EXPLAIN (ANALYZE, %s) EXECUTE test_list_generic(%s, NULL, NULL, '%s', "
                           "NULL, NULL, NULL, NULL, NULL, %d, '%s', %s)",
                           opts, org, tag, limit, after ? after : "", last);
    const db_stmt_t st = {"test_list_explain_generic", sql, 0};
    PGresult *res = NULL;
    cr_assert_geq(db_exec_simple(c, "SET plan_cache_mode = force_generic_plan"), 0);
    int rc = db_exec_custom(c, &st, NULL, &res);
    cr_assert_geq(rc, 0, "%s: %s", sql, db_errmsg(c));
    cr_assert_geq(db_exec_simple(c, "RESET plan_cache_mode"), 0);
    db_pool_release(pool, c);
    mem_free(sql);
    mem_free(last);
    return res;
}

/* Runs sql as org's tenant (or a superuser when org is 0), asserting success;
 * returns the rows it changed. */
static int write_as(int64_t org, const char *sql)
{
    static db_stmt_t st[16]; /* outlive the pool, as every statement */
    static int n;
    cr_assert_lt(n, 16);
    st[n] = (db_stmt_t){mem_printf("test_list_write_%d", n), sql, 0};
    db_conn_t *c = NULL;
    cr_assert_eq(db_pool_acquire(pool, 2000, &c), 0);
    db_set_scope(c, org, org == 0);
    int rc = db_exec(c, &st[n++], NULL, NULL);
    cr_assert_geq(rc, 0, "%s: %s", sql, db_errmsg(c));
    db_pool_release(pool, c);
    return rc;
}

/* Text that grows by doubling (a page of pages would be quadratic). */
typedef struct text {
    char *s;
    size_t len, cap;
} text_t;

static void text_add(text_t *t, const char *v, char sep)
{
    size_t n = strlen(v);
    if (t->len + n + 2 > t->cap) {
        t->cap = 2 * (t->len + n + 2);
        t->s = mem_realloc(t->s, t->cap);
    }
    memcpy(t->s + t->len, v, n);
    t->len += n;
    t->s[t->len++] = sep;
    t->s[t->len] = '\0';
}

/* The pages of the tag's list for org through stmt, up
 * to WALK_MAX SIMs, as text: one line per SIM with every column. *n gets
 * the number of SIMs, and every page but the last has PAGE of them.
 * mem_free the text. */
static char *all_pages(const db_stmt_t *stmt, const char *org, const char *tag, int *n)
{
    text_t text = {mem_strdup(""), 0, 1};
    char *after = NULL;
    *n = 0;
    for (;;) {
        PGresult *res = run(stmt, org, tag, PAGE, after);
        int rows = PQntuples(res), fields = PQnfields(res);
        for (int i = 0; i < rows; i++)
            for (int f = 0; f < fields; f++)
                text_add(&text, PQgetisnull(res, i, f) ? "\\N" : PQgetvalue(res, i, f),
                         f + 1 < fields ? '|' : '\n');
        *n += rows;
        mem_free(after);
        after = rows ? mem_strdup(db_get(res, rows - 1, "iccid")) : NULL;
        PQclear(res);
        if (rows < PAGE || *n >= WALK_MAX)
            break;
    }
    mem_free(after);
    return text.s;
}

/* Asserts that the tag's pages for org through SIMS_LIST_BY_TAG are the
 * plain query's, n SIMs in all (at most WALK_MAX). */
static void expect_same_pages(const char *org, const char *tag, int n)
{
    int n_tag, n_plain;
    struct timespec t0, t1, t2;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char *a = all_pages(&by_tag, org, tag, &n_tag);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    char *b = all_pages(&plain, org, tag, &n_plain);
    clock_gettime(CLOCK_MONOTONIC, &t2);
    printf("-- organization %s, tag %s: %d SIMs, by tag %.0f ms, plain %.0f ms\n", org, tag, n_tag,
           (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6,
           (t2.tv_sec - t1.tv_sec) * 1e3 + (t2.tv_nsec - t1.tv_nsec) / 1e6);
    fflush(stdout);
    cr_expect_eq(n_plain, n, "organization %s, tag %s: %d SIMs", org, tag, n_plain);
    cr_expect_eq(n_tag, n_plain, "organization %s, tag %s", org, tag);
    cr_expect_str_eq(a, b, "organization %s, tag %s", org, tag);
    mem_free(a);
    mem_free(b);
}

/* Asserts that the page of org's list of tag after the ICCID after (NULL:
 * the first) reads sim_tags_pkey, and at most
 * ten rows per SIM of the page in all its scans (what each node read and
 * returned, summed by PostgreSQL from the JSON plan). */
static void expect_bounded_plan(bool generic, const char *who, const char *org, const char *tag,
                                const char *after)
{
    PGresult *res = explain_of(generic, "COSTS OFF", org, tag, PAGE + 1, after);
    printf("-- ListSims by tag \"%s\", %s, page of %d%s, %s plan\n", tag, who, PAGE,
           after ? ", a later page" : "", generic ? "the generic" : "a custom");
    for (int i = 0; i < PQntuples(res); i++)
        printf("%s\n", PQgetvalue(res, i, 0));
    fflush(stdout);
    PQclear(res);

    res = explain_of(generic, "FORMAT JSON", org, tag, PAGE + 1, after);
    const char *params[] = {PQgetvalue(res, 0, 0)};
    PGresult *sum = pgh_sqlf("SELECT coalesce(sum(((n->>'Actual Rows')::numeric"
                             " + coalesce((n->>'Rows Removed by Filter')::numeric, 0)"
                             " + coalesce((n->>'Rows Removed by Index Recheck')::numeric, 0))"
                             " * (n->>'Actual Loops')::numeric), 0)::bigint AS read,"
                             " count(*) FILTER (WHERE n->>'Index Name' = 'sim_tags_pkey') AS uses,"
                             " (SELECT ($1::jsonb)->0->'Plan'->>'Actual Rows') AS returned"
                             " FROM jsonb_path_query($1::jsonb, 'strict $.**') AS n"
                             " WHERE jsonb_typeof(n) = 'object' AND n->>'Node Type' LIKE '%Scan%'",
                             1, params);
    long long read = strtoll(PQgetvalue(sum, 0, 0), NULL, 10);
    long long uses = strtoll(PQgetvalue(sum, 0, 1), NULL, 10);
    long long returned = strtoll(PQgetvalue(sum, 0, 2), NULL, 10);
    printf("-- %s: %lld rows read in its scans for %lld returned\n\n", who, read, returned);
    fflush(stdout);
    cr_expect_eq(returned, PAGE + 1, "%s", who);
    cr_expect_gt(uses, 0, "%s: no scan of sim_tags_pkey:\n%s", who, PQgetvalue(res, 0, 0));
    cr_expect_leq(read, 10 * (PAGE + 1), "%s: %lld rows read:\n%s", who, read,
                  PQgetvalue(res, 0, 0));
    PQclear(sum);
    PQclear(res);
}

/* expect_bounded_plan for the plan the service runs (generic) and for one
 * planned for the page's parameters. */
static void expect_bounded(const char *who, const char *org, const char *tag, const char *after)
{
    expect_bounded_plan(true, who, org, tag, after);
    expect_bounded_plan(false, who, org, tag, after);
}

Test(sims_list_plans, a_page_by_tag_reads_about_as_many_rows_as_it_returns)
{
    /* The 1 000th rare SIM of organization 1: g = 50 000. */
    const char *after = "8988303000000050000";
    expect_bounded("a tenant", "1", "rare", NULL);
    expect_bounded("a tenant", "1", "rare", after);
    expect_bounded("a tenant", "2", "fleet", after);
}

Test(sims_list_plans, pages_by_tag_are_the_plain_querys_after_every_change)
{
    expect_same_pages("1", "rare", 2000);
    expect_same_pages("2", "rare", 2000);
    expect_same_pages("2", "fleet", WALK_MAX);
    expect_same_pages("1", "late", 1000);

    /* As the tenant: "rare" removed from 50 SIMs (every 2 000th), added to
     * 100 others (twice over), another tag added to 10 (and a NULL element
     * and one more tag, removed again: the NULL stays), the labels of all
     * rare SIMs changed (the tags not); 20 rare SIMs deleted. A superuser
     * moves 5 rare SIMs to organization 2. The "late" SIMs are left alone. */
    cr_expect_eq(write_as(1, "UPDATE sims SET tags = array_remove(tags, 'rare')"
                             " WHERE iccid < '8988304' AND substr(iccid, 8)::int % 2000 = 0"),
                 50);
    cr_expect_eq(write_as(1, "UPDATE sims SET tags = tags || '{rare,rare}'"
                             " WHERE iccid < '8988304' AND substr(iccid, 8)::int % 1000 = 110"),
                 100);
    cr_expect_eq(write_as(1, "UPDATE sims SET tags = tags || '{new}'"
                             " WHERE iccid < '8988304' AND substr(iccid, 8)::int % 10000 = 200"),
                 10);
    cr_expect_eq(write_as(1, "UPDATE sims SET tags = tags || ARRAY[NULL, 'gone']"
                             " WHERE iccid < '8988304' AND substr(iccid, 8)::int % 10000 = 200"),
                 10);
    cr_expect_eq(write_as(1, "UPDATE sims SET tags = array_remove(tags, 'gone')"
                             " WHERE iccid < '8988304' AND substr(iccid, 8)::int % 10000 = 200"),
                 10);
    cr_expect_eq(write_as(1, "UPDATE sims SET label = 'relabelled' WHERE 'rare' = ANY (tags)"),
                 2050);
    cr_expect_eq(write_as(1, "DELETE FROM sims WHERE iccid < '8988304'"
                             " AND substr(iccid, 8)::int % 5000 = 1000"),
                 20);
    cr_expect_eq(write_as(0, "UPDATE sims SET organization_id = 2"
                             " WHERE iccid < '8988304' AND substr(iccid, 8)::int % 20000 = 600"),
                 5);
    cr_expect_eq(write_as(2, "UPDATE sims SET tags = '{}' WHERE organization_id = 1"), 0,
                 "another organization's SIMs are out of reach");

    /* Organization 1: 2 000 - 50 + 100 - 10 (half the deleted were no
     * longer rare) - 5 moved = 2 035 rare. */
    expect_same_pages("1", "rare", 2035);
    expect_same_pages("2", "rare", 2005);
    expect_same_pages("1", "new", 10);
    expect_same_pages("1", "gone", 0);
    expect_same_pages("2", "late", 1000);

    /* And sim_tags is exactly the SIMs' tags, no more, no less. */
    char *sql = mem_printf(
        "SET search_path = %s; SELECT count(*) FROM ("
        "(SELECT organization_id, t, iccid, id FROM sims, unnest(tags) t WHERE t IS NOT NULL"
        " EXCEPT SELECT organization_id, tag, iccid, sim_id FROM sim_tags) UNION ALL"
        "(SELECT organization_id, tag, iccid, sim_id FROM sim_tags EXCEPT"
        " SELECT organization_id, t, iccid, id FROM sims, unnest(tags) t WHERE t IS NOT NULL)) d",
        schema);
    PGresult *res = pgh_sql(sql);
    cr_expect_str_eq(PQgetvalue(res, 0, 0), "0", "sim_tags differs from the SIMs' tags");
    PQclear(res);
    mem_free(sql);
}
