/* Migrations against a real cluster: order, idempotence, refusals, failures
 * and concurrent runs. */
#include "onceiot/db.h"
#include "onceiot/mem.h"
#include "onceiot/migrate.h"
#include "pg_harness.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *schema;   /* not created: migrate_run creates it */
static char dir[64];   /* this test's migrations directory */
static char err[1024]; /* the message of the last migrate_run */

static void setup(void)
{
    schema = pgh_unique_name("test_migrate");
    snprintf(dir, sizeof dir, "/tmp/onceiot-migrate-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    DIR *d = opendir(dir);
    struct dirent *e;

    while (d != NULL && (e = readdir(d)) != NULL) {
        char *path;

        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        path = mem_printf("%s/%s", dir, e->d_name);
        if (unlink(path) != 0)
            rmdir(path);
        mem_free(path);
    }
    if (d != NULL)
        closedir(d);
    rmdir(dir);
    pgh_drop_schema(schema);
    mem_free(schema);
}

TestSuite(migrate, .init = setup, .fini = teardown);

static void write_file(const char *name, const char *content)
{
    char *path = mem_printf("%s/%s", dir, name);
    FILE *f = fopen(path, "w");

    cr_assert_not_null(f, "cannot write %s", path);
    fputs(content, f);
    fclose(f);
    mem_free(path);
}

static void remove_file(const char *name)
{
    char *path = mem_printf("%s/%s", dir, name);

    cr_assert_eq(unlink(path), 0);
    mem_free(path);
}

static int run(migrate_result_t *r)
{
    return migrate_run(pgh_url(), schema, dir, r, err, sizeof err);
}

/* The rows of a query on this test's schema, formatted with schema. */
static PGresult *query(const char *fmt)
{
    char *sql = mem_printf(fmt, schema);
    PGresult *res = pgh_sql(sql);

    mem_free(sql);
    return res;
}

static int64_t count(const char *fmt)
{
    PGresult *res = query(fmt);
    int64_t n = db_get_int(res, 0, "n", -1);

    PQclear(res);
    return n;
}

static void checksum_hex(const char *content, char *hex, size_t len)
{
    unsigned char hash[crypto_generichash_BYTES];

    cr_assert(sodium_init() >= 0);
    crypto_generichash(hash, sizeof hash, (const unsigned char *)content, strlen(content), NULL, 0);
    sodium_bin2hex(hex, len, hash, sizeof hash);
}

static const char create_sql[] = "CREATE TABLE steps (step int NOT NULL, seq serial);\n";
static const char second_sql[] = "INSERT INTO steps (step) VALUES (2);\n";
static const char tenth_sql[] = "INSERT INTO steps (step) VALUES (10);\n";

static void write_three(void)
{
    /* Numeric order differs from name order here: "10_" sorts before "1_". */
    write_file("1_create.sql", create_sql);
    write_file("2_second.sql", second_sql);
    write_file("10_tenth.sql", tenth_sql);
}

Test(migrate, applies_files_in_numeric_order_and_records_them)
{
    migrate_result_t r;
    char hex[crypto_generichash_BYTES * 2 + 1];
    PGresult *res;
    int rc;

    write_three();
    rc = run(&r);
    cr_assert_eq(rc, 0, "%s: %s", err_name(rc), err);
    cr_assert_eq(r.applied, 3);
    cr_assert_eq(r.total, 3);
    cr_assert_str_eq(err, "");

    res = query("SELECT step FROM %s.steps ORDER BY seq");
    cr_assert_eq(PQntuples(res), 2);
    cr_assert_eq(db_get_int(res, 0, "step", -1), 2);
    cr_assert_eq(db_get_int(res, 1, "step", -1), 10);
    PQclear(res);

    res = query("SELECT version, name, checksum, applied_at IS NOT NULL AS stamped"
                " FROM %s.schema_migrations ORDER BY version");
    cr_assert_eq(PQntuples(res), 3);
    cr_assert_eq(db_get_int(res, 0, "version", -1), 1);
    cr_assert_str_eq(db_get(res, 0, "name"), "1_create.sql");
    checksum_hex(create_sql, hex, sizeof hex);
    cr_assert_str_eq(db_get(res, 0, "checksum"), hex);
    cr_assert_eq(db_get_int(res, 1, "version", -1), 2);
    cr_assert_eq(db_get_int(res, 2, "version", -1), 10);
    cr_assert_str_eq(db_get(res, 2, "name"), "10_tenth.sql");
    checksum_hex(tenth_sql, hex, sizeof hex);
    cr_assert_str_eq(db_get(res, 2, "checksum"), hex);
    cr_assert(db_get_bool(res, 2, "stamped"));
    PQclear(res);
}

Test(migrate, second_run_applies_nothing)
{
    migrate_result_t r;
    int rc;

    write_three();
    cr_assert_eq(run(&r), 0, "%s", err);
    rc = run(&r);
    cr_assert_eq(rc, 0, "%s: %s", err_name(rc), err);
    cr_assert_eq(r.applied, 0);
    cr_assert_eq(r.total, 3);
    cr_assert_eq(count("SELECT count(*) AS n FROM %s.steps"), 2);
    cr_assert_eq(count("SELECT count(*) AS n FROM %s.schema_migrations"), 3);
}

Test(migrate, new_files_are_applied_after_earlier_runs)
{
    migrate_result_t r;

    write_file("1_create.sql", create_sql);
    cr_assert_eq(run(&r), 0, "%s", err);
    write_file("2_second.sql", second_sql);
    cr_assert_eq(run(&r), 0, "%s", err);
    cr_assert_eq(r.applied, 1);
    cr_assert_eq(r.total, 2);
    cr_assert_eq(count("SELECT count(*) AS n FROM %s.steps"), 1);
}

Test(migrate, changed_file_is_refused_and_nothing_is_applied)
{
    migrate_result_t r;
    int rc;

    write_file("1_create.sql", create_sql);
    write_file("2_second.sql", second_sql);
    cr_assert_eq(run(&r), 0, "%s", err);
    write_file("2_second.sql", "INSERT INTO steps (step) VALUES (22);\n");
    write_file("3_third.sql", "INSERT INTO steps (step) VALUES (3);\n");
    rc = run(&r);
    cr_assert_eq(rc, ERR_FAILED_PRECONDITION, "got %s: %s", err_name(rc), err);
    cr_assert(strstr(err, "migration 2_second.sql was changed after it was applied") != NULL, "%s",
              err);
    cr_assert(strstr(err, "add a new migration instead") != NULL, "%s", err);
    cr_assert_eq(r.applied, 0);
    cr_assert_eq(count("SELECT count(*) AS n FROM %s.schema_migrations"), 2);
    cr_assert_eq(count("SELECT count(*) AS n FROM %s.steps"), 1);
}

Test(migrate, applied_file_that_disappeared_is_refused)
{
    migrate_result_t r;
    int rc;

    write_file("1_create.sql", create_sql);
    write_file("2_second.sql", second_sql);
    cr_assert_eq(run(&r), 0, "%s", err);
    remove_file("2_second.sql");
    write_file("3_third.sql", "INSERT INTO steps (step) VALUES (3);\n");
    rc = run(&r);
    cr_assert_eq(rc, ERR_FAILED_PRECONDITION, "got %s: %s", err_name(rc), err);
    cr_assert(strstr(err, "2_second.sql") != NULL && strstr(err, "missing") != NULL, "%s", err);
    cr_assert_eq(count("SELECT count(*) AS n FROM %s.schema_migrations"), 2);
}

Test(migrate, file_numbered_below_an_applied_one_is_refused)
{
    migrate_result_t r;
    int rc;

    write_file("1_create.sql", create_sql);
    write_file("3_third.sql", "INSERT INTO steps (step) VALUES (3);\n");
    cr_assert_eq(run(&r), 0, "%s", err);
    write_file("2_second.sql", second_sql);
    rc = run(&r);
    cr_assert_eq(rc, ERR_FAILED_PRECONDITION, "got %s: %s", err_name(rc), err);
    cr_assert(strstr(err, "2_second.sql is older than 3_third.sql") != NULL, "%s", err);
    cr_assert_eq(count("SELECT count(*) AS n FROM %s.steps"), 1);
}

Test(migrate, failing_sql_rolls_back_that_file_only_and_names_it)
{
    migrate_result_t r;
    PGresult *res;
    int rc;

    write_file("1_create.sql", create_sql);
    write_file("2_bad.sql", "INSERT INTO steps (step) VALUES (2);\n"
                            "CREATE TABLE half (x int);\n"
                            "INSERT INTO nosuch VALUES (1);\n");
    write_file("3_third.sql", "INSERT INTO steps (step) VALUES (3);\n");
    rc = run(&r);
    cr_assert_eq(rc, ERR_INTERNAL, "got %s: %s", err_name(rc), err);
    cr_assert(strncmp(err, "migration 2_bad.sql failed: ", 28) == 0, "%s", err);
    cr_assert(strstr(err, "\"nosuch\" does not exist") != NULL, "%s", err);
    cr_assert(strstr(err, "line 3") != NULL, "%s", err);
    cr_assert_eq(r.applied, 1);
    cr_assert_eq(count("SELECT count(*) AS n FROM %s.schema_migrations"), 1);
    cr_assert_eq(count("SELECT count(*) AS n FROM %s.steps"), 0);
    res = query("SELECT to_regclass('%s.half') IS NULL AS gone");
    cr_assert(db_get_bool(res, 0, "gone"));
    PQclear(res);

    /* Fixed, the rest goes through. */
    write_file("2_bad.sql", second_sql);
    rc = run(&r);
    cr_assert_eq(rc, 0, "%s: %s", err_name(rc), err);
    cr_assert_eq(r.applied, 2);
    cr_assert_eq(count("SELECT count(*) AS n FROM %s.steps"), 2);
}

Test(migrate, error_codes_follow_the_sqlstate)
{
    migrate_result_t r;
    int rc;

    write_file("1_create.sql", "CREATE TABLE u (x int UNIQUE); INSERT INTO u VALUES (1), (1);");
    rc = run(&r);
    cr_assert_eq(rc, ERR_ALREADY_EXISTS, "got %s: %s", err_name(rc), err);
    cr_assert(strstr(err, "migration 1_create.sql failed: duplicate key") != NULL, "%s", err);
}

Test(migrate, file_that_ends_the_transaction_itself_is_refused)
{
    migrate_result_t r;
    int rc;

    write_file("1_create.sql", create_sql);
    write_file("2_commit.sql", "INSERT INTO steps (step) VALUES (2); COMMIT;");
    rc = run(&r);
    cr_assert_eq(rc, ERR_FAILED_PRECONDITION, "got %s: %s", err_name(rc), err);
    cr_assert(strstr(err, "2_commit.sql") != NULL, "%s", err);
    cr_assert_eq(count("SELECT count(*) AS n FROM %s.schema_migrations"), 1);
}

struct runner {
    int rc;
    migrate_result_t result;
    char err[512];
};

static void *run_concurrently(void *arg)
{
    struct runner *r = arg;

    r->rc = migrate_run(pgh_url(), schema, dir, &r->result, r->err, sizeof r->err);
    return NULL;
}

Test(migrate, concurrent_runs_all_succeed_and_apply_each_file_once)
{
    struct runner runners[3] = {0};
    pthread_t t[3];
    int applied = 0;
    PGresult *res;

    /* The pause keeps the first runner inside its lock while the others
     * arrive. The schema does not exist yet, so they also race to create it. */
    write_file("1_create.sql", create_sql);
    write_file("2_slow.sql", "SELECT pg_sleep(0.3); INSERT INTO steps (step) VALUES (2);");
    write_file("3_third.sql", "INSERT INTO steps (step) VALUES (3);");
    for (int i = 0; i < 3; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, run_concurrently, &runners[i]), 0);
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        cr_assert_eq(runners[i].rc, 0, "runner %d: %s: %s", i, err_name(runners[i].rc),
                     runners[i].err);
        cr_assert_eq(runners[i].result.total, 3);
        applied += runners[i].result.applied;
    }
    cr_assert_eq(applied, 3);
    res = query("SELECT step, count(*) AS n FROM %s.steps GROUP BY step ORDER BY step");
    cr_assert_eq(PQntuples(res), 2);
    cr_assert_eq(db_get_int(res, 0, "n", -1), 1);
    cr_assert_eq(db_get_int(res, 1, "n", -1), 1);
    PQclear(res);
}

Test(migrate, duplicate_version_is_refused_before_touching_the_database)
{
    migrate_result_t r;
    const char *params[1];
    PGresult *res;
    int rc;

    write_file("1_create.sql", create_sql);
    write_file("0001_again.sql", second_sql);
    rc = run(&r);
    cr_assert_eq(rc, ERR_CONFIG, "got %s: %s", err_name(rc), err);
    cr_assert(strstr(err, "0001_again.sql") != NULL && strstr(err, "1_create.sql") != NULL, "%s",
              err);
    cr_assert(strstr(err, "same version 1") != NULL, "%s", err);
    params[0] = schema;
    res = pgh_sqlf("SELECT 1 FROM pg_namespace WHERE nspname = $1", 1, params);
    cr_assert_eq(PQntuples(res), 0, "the schema must not have been created");
    PQclear(res);
}

Test(migrate, files_that_are_not_migrations_are_ignored)
{
    migrate_result_t r;
    char *sub = mem_printf("%s/4_directory.sql", dir);
    int rc;

    write_file("1_create.sql", create_sql);
    write_file("README.md", "not SQL");
    write_file("2_notes.txt", "not SQL");
    write_file("3_backup.sql~", "not SQL");
    write_file(".5_hidden.sql", "not SQL");
    write_file("x_6.sql", "not SQL");
    write_file("7.sql", "not SQL");
    cr_assert_eq(mkdir(sub, 0700), 0);
    rc = run(&r);
    cr_assert_eq(rc, 0, "%s: %s", err_name(rc), err);
    cr_assert_eq(r.total, 1);
    cr_assert_eq(r.applied, 1);
    mem_free(sub);
}

Test(migrate, empty_directory_creates_the_bookkeeping_only)
{
    migrate_result_t r;
    int rc = run(&r);

    cr_assert_eq(rc, 0, "%s: %s", err_name(rc), err);
    cr_assert_eq(r.total, 0);
    cr_assert_eq(count("SELECT count(*) AS n FROM %s.schema_migrations"), 0);
}

Test(migrate, role_that_owns_its_schema_but_cannot_create_schemas_can_migrate)
{
    char *role = pgh_fresh_role("test_migrate_role");
    char *url = pgh_url_as(role);
    char *sql = mem_printf("CREATE SCHEMA %s AUTHORIZATION %s", schema, role);
    migrate_result_t r;
    PGresult *res;
    int rc;

    PQclear(pgh_sql(sql));
    write_file("1_create.sql", create_sql);
    rc = migrate_run(url, schema, dir, &r, err, sizeof err);
    cr_assert_eq(rc, 0, "%s: %s", err_name(rc), err);
    cr_assert_eq(r.applied, 1);
    res = query("SELECT tableowner AS owner FROM pg_tables"
                " WHERE schemaname = '%s' AND tablename = 'steps'");
    cr_assert_str_eq(db_get(res, 0, "owner"), role);
    PQclear(res);
    pgh_drop_schema(schema);
    pgh_drop_role(role);
    mem_free(sql);
    mem_free(url);
    mem_free(role);
}

Test(migrate, unusable_inputs_are_reported)
{
    migrate_result_t r;
    char *bad_dir = mem_printf("%s/nope", dir);
    int rc;

    rc = migrate_run(pgh_url(), schema, bad_dir, &r, err, sizeof err);
    cr_assert_eq(rc, ERR_IO, "got %s", err_name(rc));
    cr_assert(strstr(err, bad_dir) != NULL, "%s", err);
    rc = migrate_run("nosuchoption=1", schema, dir, &r, err, sizeof err);
    cr_assert_eq(rc, ERR_CONFIG, "got %s: %s", err_name(rc), err);
    rc =
        migrate_run("postgresql://postgres@127.0.0.1:1/postgres", schema, dir, &r, err, sizeof err);
    cr_assert_eq(rc, ERR_UNAVAILABLE, "got %s: %s", err_name(rc), err);
    cr_assert(strstr(err, "cannot connect") != NULL, "%s", err);
    mem_free(bad_dir);
}
