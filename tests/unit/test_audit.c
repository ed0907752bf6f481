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

/* Applies the module's first n migrations to the schema. */
static void migrate_to(size_t n)
{
    char err[1024] = "";
    migrate_result_t mr = {0, 0};
    cr_assert_eq(migrate_run_with(url, role, audit_migrations, n, dir, &mr, err, sizeof(err)), 0,
                 "%s", err);
}

/* A schema with the module's first n migrations. */
static void setup_at(size_t n)
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
    /* No service files: only the module's own migrations. */
    snprintf(dir, sizeof(dir), "/tmp/onceiot-audit-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    migrate_to(n);
    db_opts_t o = {.url = url, .schema = role, .size = 1, .connect_timeout_ms = 5000};
    cr_assert_eq(db_pool_open(&o, &pool), 0);
    cr_assert_eq(db_pool_acquire(pool, 5000, &conn), 0);
}

static void setup(void)
{
    setup_at(AUDIT_N_MIGRATIONS);
}

static void teardown(void)
{
    PQclear(pgh_sql("RESET ROLE")); /* after a failed in_schema */
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

/* Before audit_0005: tables tracked with audit_changes. */
static void setup_0004(void)
{
    setup_at(4);
}

TestSuite(audit_upgrade, .init = setup_0004, .fini = teardown);

/* SQL as the schema's role; the last result's first value, or "". */
static char *in_schema(const char *sql)
{
    char *q = mem_printf("SET ROLE \"%s\"; SET search_path = \"%s\"; SET TIME ZONE 'UTC'; %s", role,
                         role, sql);
    PGresult *res = pgh_sql(q);
    mem_free(q);
    char *v = mem_strdup(PQntuples(res) ? PQgetvalue(res, 0, 0) : "");
    PQclear(res);
    return v;
}

/* One call's inserts and deletes of t (named by id and a timestamptz,
 * in its rows' organizations, some none) and of s (named by code, in the
 * caller's organization); returns the records they left, in one text (the
 * table's name as X), and clears them and the tables. */
static char *tracked_changes(const char *t, const char *s)
{
    char *sql = mem_printf(
        "BEGIN; SELECT set_config('onceiot.call', '{\"u\":7,\"o\":2,\"c\":\"token\","
        "\"m\":\"/m\",\"r\":\"rq-1\"}', true); "
        "INSERT INTO %s (id, at, org) SELECT i, timestamptz '2026-01-01 00:00+00' + i * "
        "interval '1 minute', CASE WHEN i %% 4 > 0 THEN i %% 3 END FROM generate_series(1, 30) i; "
        "INSERT INTO %s (id, at, org) VALUES (31, '2026-02-01 10:00+00', 5); "
        "DELETE FROM %s WHERE id <= 5 OR id = 31; "
        "INSERT INTO %s (code) SELECT 'c' || i FROM generate_series(1, 12) i; "
        "DELETE FROM %s WHERE code > 'c5'; COMMIT",
        t, t, t, s, s);
    mem_free(in_schema(sql));
    mem_free(sql);
    sql = mem_printf(
        "SELECT string_agg(concat_ws('|', user_id, organization_id, credential, method, tbl, "
        "resource_id, request_id, summary), E'\\n' ORDER BY tbl, organization_id, summary) "
        "FROM (SELECT *, CASE resource_type WHEN '%s' THEN 'T' WHEN '%s' THEN 'S' END AS tbl "
        "FROM audit_pending) p",
        t, s);
    char *changes = in_schema(sql);
    mem_free(sql);
    sql = mem_printf("TRUNCATE audit_pending, %s, %s", t, s);
    mem_free(in_schema(sql));
    mem_free(sql);
    return changes;
}

Test(audit_upgrade, tracked_tables_get_their_own_functions_and_the_same_records)
{
    mem_free(in_schema("CREATE TABLE t (id bigint, at timestamptz, org bigint); "
                       "CREATE TABLE s (code text); "
                       "SELECT audit_track('t', 'id,at', 'org'); SELECT audit_track('s', 'code')"));
    char *before = tracked_changes("t", "s");
    /* By organization (0 and none are no organization's, none the caller's
     * 2): t's inserts in 0, 1, 2 and 5, its deletes in 0, 1, 2 and 5; s's
     * insert and delete in 2. A single row is named by its key's jsonb text. */
    int lines = 1;
    for (const char *c = before; *c; c++)
        lines += *c == '\n';
    cr_assert_eq(lines, 10, "%s", before);
    cr_assert_not_null(strstr(before, "7|5|token|/m|T|31/2026-02-01T10:00:00+00:00|rq-1|insert\n"),
                       "%s", before);

    migrate_to(AUDIT_N_MIGRATIONS);
    char *fns = in_schema("SELECT string_agg(tgrelid::regclass || ' ' || tgname || ' ' || "
                          "tgfoid::regproc, ', ' ORDER BY tgrelid::regclass::text, tgname) "
                          "FROM pg_trigger "
                          "WHERE tgrelid IN ('t'::regclass, 's'::regclass)");
    cr_assert_str_eq(fns, "s audit_deletes audit_of_s, s audit_inserts audit_of_s, s "
                          "audit_updates audit_updates, t audit_deletes audit_of_t, t "
                          "audit_inserts audit_of_t, t audit_updates audit_updates");
    char *after = tracked_changes("t", "s");
    cr_assert_str_eq(after, before);

    /* Tables tracked after the upgrade too. */
    mem_free(
        in_schema("CREATE TABLE t2 (id bigint, at timestamptz, org bigint); "
                  "CREATE TABLE s2 (code text); "
                  "SELECT audit_track('t2', 'id,at', 'org'); SELECT audit_track('s2', 'code')"));
    char *fresh = tracked_changes("t2", "s2");
    cr_assert_str_eq(fresh, before);
    mem_free(fns);
    mem_free(before);
    mem_free(after);
    mem_free(fresh);
}
