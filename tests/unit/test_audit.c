/* The audit trail's table against a real cluster, as a service role would
 * own it: the chain, its verification after tampering by a superuser, and
 * the refusals of UPDATE, DELETE and TRUNCATE to the service role. */
#include "onceiot/audit.h"
#include "onceiot/db.h"
#include "onceiot/mem.h"
#include "onceiot/migrate.h"
#include "pg_harness.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char *role; /* owns the schema of the same name, like a service role */
static char *url;
static db_pool_t *pool;
static db_conn_t *conn;
static char dir[64];

static void setup(void)
{
    role = pgh_unique_name("audit");
    char *r = pgh_fresh_role(role);
    mem_free(role);
    role = r;
    PGresult *res = pgh_sql("SELECT current_database() AS d");
    char *sql =
        mem_printf("GRANT CREATE ON DATABASE \"%s\" TO \"%s\"", PQgetvalue(res, 0, 0), role);
    PQclear(res);
    PQclear(pgh_sql(sql));
    mem_free(sql);
    url = pgh_url_as(role);
    /* No service files: only the module's own migration. */
    snprintf(dir, sizeof(dir), "/tmp/onceiot-audit-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    char err[1024] = "";
    migrate_result_t mr = {0, 0};
    cr_assert_eq(migrate_run_with(url, role, audit_migrations, AUDIT_N_MIGRATIONS, dir, &mr, err,
                                  sizeof(err)),
                 0, "%s", err);
    db_opts_t o = {.url = url, .schema = role, .size = 1, .connect_timeout_ms = 5000};
    cr_assert_eq(db_pool_open(&o, &pool), 0);
    cr_assert_eq(db_pool_acquire(pool, 5000, &conn), 0);
}

static void teardown(void)
{
    if (conn)
        db_pool_release(pool, conn);
    db_pool_close(pool);
    pgh_drop_schema(role);
    pgh_drop_role(role);
    mem_free(url);
    mem_free(role);
    rmdir(dir);
}

TestSuite(audit, .init = setup, .fini = teardown);

/* Writes n records, one transaction each. */
static void write_n(int n)
{
    for (int i = 0; i < n; i++) {
        char id[16], summary[64];
        snprintf(id, sizeof(id), "%d", i + 1);
        snprintf(summary, sizeof(summary), "status: ACTIVE -> SUSPENDED (%d)", i);
        audit_record_t r = {.user_id = 7,
                            .organization_id = 2,
                            .credential = "api_key:3",
                            .method = "/onceiot.sims.v1.SimService/SuspendSim",
                            .resource_type = "sim",
                            .resource_id = id,
                            .request_id = "rq-1",
                            .peer = "127.0.0.1",
                            .summary = summary};
        cr_assert_eq(db_begin(conn), 0);
        cr_assert_gt(audit_write(conn, &r), 0, "%s", db_errmsg(conn));
        cr_assert_eq(db_commit(conn), 0);
    }
}

/* SQL as the superuser on this schema, with triggers off (as an owner who
 * dropped them, or a superuser, could). */
static void tamper(const char *stmt)
{
    char *sql = mem_printf("SET session_replication_role = replica; %s; "
                           "SET session_replication_role = origin",
                           stmt);
    char *q = mem_printf("SET search_path = \"%s\"; %s", role, sql);
    PQclear(pgh_sql(q));
    mem_free(q);
    mem_free(sql);
}

static int verify(audit_verdict_t *v)
{
    int rc = audit_verify(conn, v);
    cr_assert_geq(rc, 0, "%s", db_errmsg(conn));
    return rc;
}

Test(audit, records_are_numbered_and_the_chain_verifies)
{
    write_n(3);
    audit_verdict_t v;
    cr_assert_eq(verify(&v), 0, "%s", v.why);
    cr_assert_eq(v.checked, 3);
    PGresult *res = NULL;
    static const db_stmt_t q = {"t_rows",
                                "SELECT string_agg(seq::text, ',' ORDER BY seq) AS s, "
                                "bool_and(organization_id = 2 AND credential = 'api_key:3') AS ok "
                                "FROM audit_records",
                                0};
    cr_assert_eq(db_exec(conn, &q, NULL, &res), 1);
    cr_assert_str_eq(db_get(res, 0, "s"), "1,2,3");
    cr_assert(db_get_bool(res, 0, "ok"));
    PQclear(res);
}

Test(audit, a_rolled_back_write_leaves_no_gap)
{
    write_n(1);
    audit_record_t r = {.method = "/x.Y/Z"};
    cr_assert_eq(db_begin(conn), 0);
    cr_assert_eq(audit_write(conn, &r), 2);
    db_rollback(conn);
    write_n(1);
    audit_verdict_t v;
    cr_assert_eq(verify(&v), 0, "%s", v.why);
    cr_assert_eq(v.checked, 2);
}

Test(audit, the_service_role_cannot_update_delete_or_truncate)
{
    write_n(2);
    const char *refused[] = {
        "UPDATE audit_records SET summary = 'nothing happened'",
        "DELETE FROM audit_records WHERE seq = 1",
        "TRUNCATE audit_records",
        "TRUNCATE audit_records_default",
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
        cr_assert_lt(db_exec_simple(conn, refused[i]), 0, "%s was allowed", refused[i]);
    /* Each month's partition refuses too, also with the privileges granted
     * back: the triggers stand on their own. */
    PGresult *res = pgh_sqlf("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON "
                             "c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                             "WHERE n.nspname = $1 AND c.relname <> 'audit_records_default' "
                             "ORDER BY 1 LIMIT 1",
                             1, (const char *[]){role});
    cr_assert_eq(PQntuples(res), 1, "no monthly partition was made");
    char *part = mem_strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    cr_assert_eq(db_exec_simple(conn, "GRANT UPDATE, DELETE, TRUNCATE ON audit_records, "
                                      "audit_records_default TO CURRENT_USER"),
                 0);
    char *sql[] = {mem_printf("DELETE FROM %s", part), mem_printf("TRUNCATE %s", part),
                   mem_strdup("UPDATE audit_records SET summary = ''"),
                   mem_strdup("DELETE FROM audit_records")};
    for (size_t i = 0; i < 4; i++) {
        if (i < 2) {
            char *g = mem_printf("GRANT DELETE, TRUNCATE ON %s TO CURRENT_USER", part);
            cr_assert_eq(db_exec_simple(conn, g), 0);
            mem_free(g);
        }
        cr_assert_lt(db_exec_simple(conn, sql[i]), 0, "%s was allowed", sql[i]);
        mem_free(sql[i]);
    }
    mem_free(part);
    audit_verdict_t v;
    cr_assert_eq(verify(&v), 0, "%s", v.why);
    cr_assert_eq(v.checked, 2);
}

Test(audit, verify_finds_an_altered_record)
{
    write_n(3);
    tamper("UPDATE audit_records SET summary = 'nothing happened' WHERE seq = 2");
    audit_verdict_t v;
    cr_assert_eq(verify(&v), 1);
    cr_assert_eq(v.bad_seq, 2, "%s", v.why);
}

Test(audit, verify_finds_a_removed_record)
{
    write_n(3);
    tamper("DELETE FROM audit_records WHERE seq = 2");
    audit_verdict_t v;
    cr_assert_eq(verify(&v), 1);
    cr_assert_eq(v.bad_seq, 2, "%s", v.why);
}

Test(audit, verify_finds_removed_newest_records)
{
    write_n(3);
    tamper("DELETE FROM audit_records WHERE seq = 3");
    audit_verdict_t v;
    cr_assert_eq(verify(&v), 1);
    cr_assert_eq(v.bad_seq, 3, "%s", v.why);
}

Test(audit, verify_finds_a_record_rewritten_with_a_fresh_hash)
{
    /* Someone who recomputes the altered record's hash still breaks the
     * next record's link. */
    write_n(3);
    tamper("UPDATE audit_records r SET summary = 'nothing', hash = audit_hash(prev_hash, "
           "ROW(r.seq, r.at, r.user_id, r.organization_id, r.credential, r.method, "
           "r.resource_type, r.resource_id, r.request_id, r.trace_id, r.peer, 'nothing', "
           "r.prev_hash, r.hash)::audit_records) WHERE seq = 1");
    audit_verdict_t v;
    cr_assert_eq(verify(&v), 1);
    cr_assert_eq(v.bad_seq, 2, "%s", v.why);
}

/* Retention: a month past AUDIT_KEEP_MONTHS is dropped whole, the chain
 * then verifies from the anchor (the newest record dropped), the anchor
 * never moves back, and a recent month dropped by hand is still found. */
Test(audit, expired_months_are_dropped_and_the_chain_verifies_from_the_anchor)
{
    cr_assert_eq(db_exec_simple(conn, "CREATE TABLE audit_records_201701 PARTITION OF "
                                      "audit_records FOR VALUES FROM ('2017-01-01') TO "
                                      "('2017-02-01')"),
                 0, "%s", db_errmsg(conn));
    for (int i = 0; i < 3; i++)
        cr_assert_geq(db_exec_simple(conn, "INSERT INTO audit_records (at, method, summary) "
                                           "VALUES ('2017-01-15', '/old.Service/Change', 'old')"),
                      0, "%s", db_errmsg(conn));
    write_n(2);
    audit_verdict_t v;
    cr_assert_eq(verify(&v), 0, "%s", v.why);
    cr_assert_eq(v.checked, 5);

    cr_assert_eq(audit_upkeep(conn), 1, "one month dropped: %s", db_errmsg(conn));
    cr_assert_eq(audit_upkeep(conn), 0, "and only once");
    PGresult *res = pgh_sqlf("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = "
                             "c.relnamespace WHERE n.nspname = $1 AND c.relname = "
                             "'audit_records_201701'",
                             1, (const char *[]){role});
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "0", "the 2017 partition is gone");
    PQclear(res);
    cr_assert_eq(verify(&v), 0, "%s", v.why);
    cr_assert_eq(v.checked, 2, "the chain starts after the anchor");

    cr_assert_lt(db_exec_simple(conn, "UPDATE audit_anchor SET seq = 0"), 0,
                 "the anchor does not move back");
    cr_assert_lt(db_exec_simple(conn, "DELETE FROM audit_anchor"), 0);

    /* This month's records dropped by hand: a gap after the anchor. */
    res = pgh_sqlf("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                   "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND "
                   "c.relname = 'audit_records_' || to_char(now() AT TIME ZONE 'UTC', 'YYYYMM')",
                   1, (const char *[]){role});
    cr_assert_eq(PQntuples(res), 1);
    char *drop = mem_printf("DROP TABLE %s", PQgetvalue(res, 0, 0));
    PQclear(res);
    cr_assert_eq(db_exec_simple(conn, drop), 0, "%s", db_errmsg(conn));
    mem_free(drop);
    cr_assert_eq(verify(&v), 1, "the dropped month is found");
}
