/* Binary parameters (db_values.c, db_exec_values) against a real cluster:
 * what the encoders build is what PostgreSQL reads back. */
#include "onceiot/db.h"
#include "onceiot/mem.h"
#include "pg_harness.h"

#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

static char *schema;    /* this test's (empty) schema */
static db_pool_t *pool; /* one connection to it */
static db_conn_t *c;    /* checked out for each test */
static arena_t *a;      /* the values' memory, for each test */

static void setup(void)
{
    schema = pgh_fresh_schema("test_db_values");
    db_opts_t opts = {.url = pgh_url(),
                      .schema = schema,
                      .size = 1,
                      .statement_timeout_ms = 5000,
                      .connect_timeout_ms = 2000};
    int rc = db_pool_open(&opts, &pool);
    cr_assert_eq(rc, 0, "db_pool_open: %s", err_name(rc));
    rc = db_pool_acquire(pool, 2000, &c);
    cr_assert_eq(rc, 0, "db_pool_acquire: %s", err_name(rc));
    a = arena_new();
}

static void teardown(void)
{
    arena_free(a);
    db_pool_release(pool, c);
    db_pool_close(pool);
    pgh_drop_schema(schema);
    mem_free(schema);
}

TestSuite(db_values, .init = setup, .fini = teardown);

static const db_stmt_t echo_arrays = {
    "test_db_echo_arrays",
    "SELECT u.n, u.t, cardinality($1::bigint[]) AS nn, cardinality($2::text[]) AS nt, $3 AS tag "
    "FROM unnest($1::bigint[], $2::text[]) WITH ORDINALITY AS u(n, t, ord) ORDER BY u.ord",
    3};

Test(db_values, binary_arrays_round_trip_with_nulls_extremes_and_text_parameters)
{
    const int64_t ints[] = {INT64_MIN, -1, 0, 1, INT64_MAX};
    const char *texts[] = {"plain", NULL, "", "it's \"quoted\", {braced} \\ \xc3\xa9", "NULL"};
    db_value_t v[] = {db_value_int8_array(a, ints, NULL, 5), db_value_text_array(a, texts, 5),
                      db_value_text("tag")};
    PGresult *res = NULL;
    int rc = db_exec_values(c, &echo_arrays, v, &res);
    cr_assert_eq(rc, 5, "db_exec_values: %d %s", rc, db_errmsg(c));
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(db_get_int(res, i, "n", 7), ints[i], "row %d", i);
        if (texts[i] == NULL)
            cr_assert_null(db_get(res, i, "t"), "row %d", i);
        else
            cr_assert_str_eq(db_get(res, i, "t"), texts[i], "row %d", i);
        cr_assert_str_eq(db_get(res, i, "tag"), "tag");
    }
    PQclear(res);

    /* Empty arrays are arrays of no elements, not NULL. */
    db_value_t e[] = {db_value_int8_array(a, NULL, NULL, 0), db_value_text_array(a, NULL, 0),
                      db_value_text(NULL)};
    cr_assert_eq(db_exec_values(c, &echo_arrays, e, NULL), 0, "%s", db_errmsg(c));
    static const db_stmt_t sizes = {"test_db_empty_sizes",
                                    "SELECT cardinality($1::bigint[]) AS nn, "
                                    "cardinality($2::text[]) AS nt, $3::text IS NULL AS x",
                                    3};
    cr_assert_eq(db_exec_values(c, &sizes, e, &res), 1, "%s", db_errmsg(c));
    cr_assert_eq(db_get_int(res, 0, "nn", -1), 0);
    cr_assert_eq(db_get_int(res, 0, "nt", -1), 0);
    cr_assert(db_get_bool(res, 0, "x"));
    PQclear(res);
}

Test(db_values, binary_array_of_the_wrong_element_type_is_an_error_not_a_crash)
{
    const char *texts[] = {"1", "2"};
    /* text[] where the statement declares bigint[] */
    db_value_t v[] = {db_value_text_array(a, texts, 2), db_value_text_array(a, texts, 2),
                      db_value_text("x")};
    int rc = db_exec_values(c, &echo_arrays, v, NULL);
    cr_assert_lt(rc, 0);
    cr_assert(strstr(db_errmsg(c), "element type") != NULL, "%s", db_errmsg(c));
    /* The connection still answers. */
    const int64_t ints[] = {3};
    db_value_t ok[] = {db_value_int8_array(a, ints, NULL, 1), db_value_text_array(a, texts, 1),
                       db_value_text("x")};
    cr_assert_eq(db_exec_values(c, &echo_arrays, ok, NULL), 1, "%s", db_errmsg(c));
}

Test(db_values, binary_values_go_with_the_checkout_settings_in_one_round_trip)
{
    db_set_scope(c, 42, false);
    static const db_stmt_t org_and_sum = {"test_db_org_and_sum",
                                          "SELECT current_setting('" DB_SETTING_ORG_ID
                                          "', true) AS org, "
                                          "(SELECT sum(x) FROM unnest($1::bigint[]) x) AS total",
                                          1};
    const int64_t ints[] = {40, 2};
    db_value_t v[] = {db_value_int8_array(a, ints, NULL, 2)};
    PGresult *res = NULL;
    cr_assert_eq(db_exec_values(c, &org_and_sum, v, &res), 1, "%s", db_errmsg(c));
    cr_assert_str_eq(db_get(res, 0, "org"), "42");
    cr_assert_eq(db_get_int(res, 0, "total", 0), 42);
    PQclear(res);
}

Test(db_values, binary_int8_array_carries_nulls_where_the_mask_says)
{
    const int64_t ints[] = {7, 99, -3, 0};
    const bool null[] = {false, true, false, true};
    db_value_t v[] = {db_value_int8_array(a, ints, null, 4)};
    static const db_stmt_t nulls = {"test_db_int8_nulls",
                                    "SELECT u.n, u.n IS NULL AS isnull FROM unnest($1::bigint[]) "
                                    "WITH ORDINALITY AS u(n, ord) ORDER BY u.ord",
                                    1};
    PGresult *res = NULL;
    cr_assert_eq(db_exec_values(c, &nulls, v, &res), 4, "%s", db_errmsg(c));
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(db_get_bool(res, i, "isnull"), null[i], "row %d", i);
        if (!null[i])
            cr_assert_eq(db_get_int(res, i, "n", 1), ints[i], "row %d", i);
    }
    PQclear(res);
}

Test(db_values, binary_bool_array_round_trips)
{
    const bool bools[] = {true, false, false, true};
    db_value_t v[] = {db_value_bool_array(a, bools, 4)};
    static const db_stmt_t echo_bools = {"test_db_echo_bools",
                                         "SELECT u.b FROM unnest($1::bool[]) WITH ORDINALITY "
                                         "AS u(b, ord) ORDER BY u.ord",
                                         1};
    PGresult *res = NULL;
    cr_assert_eq(db_exec_values(c, &echo_bools, v, &res), 4, "%s", db_errmsg(c));
    for (int i = 0; i < 4; i++)
        cr_assert_eq(db_get_bool(res, i, "b"), bools[i], "row %d", i);
    PQclear(res);
    db_value_t e[] = {db_value_bool_array(a, NULL, 0)};
    cr_assert_eq(db_exec_values(c, &echo_bools, e, NULL), 0, "%s", db_errmsg(c));
}
