/* The PostgreSQL pool against a real cluster: statements, errors, deadlines,
 * transactions, exhaustion and surviving a server restart. */
#include "onceiot/db.h"
#include "onceiot/mem.h"
#include "pg_harness.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static char *schema;    /* this test's schema, holding the items table */
static db_pool_t *pool; /* two connections to schema */

static const db_stmt_t insert_item = {
    "test_db_insert_item", "INSERT INTO items (name, qty, note) VALUES ($1, $2, $3) RETURNING id",
    3};
static const db_stmt_t get_item = {"test_db_get_item",
                                   "SELECT name, qty, note, flag FROM items WHERE id = $1", 1};
static const db_stmt_t count_items = {"test_db_count_items",
                                      "SELECT count(*) AS n FROM items WHERE qty >= $1", 1};

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static db_pool_t *open_pool(const char *url, const char *in_schema, int size)
{
    db_opts_t opts = {.url = url,
                      .schema = in_schema,
                      .size = size,
                      .statement_timeout_ms = 5000,
                      .connect_timeout_ms = 2000};
    db_pool_t *p = NULL;
    int rc = db_pool_open(&opts, &p);

    cr_assert_eq(rc, 0, "db_pool_open: %s", err_name(rc));
    cr_assert_not_null(p);
    return p;
}

static void setup(void)
{
    char *sql;

    schema = pgh_fresh_schema("test_db");
    sql = mem_printf("CREATE TABLE %s.items (id bigserial PRIMARY KEY,"
                     " name text NOT NULL CONSTRAINT items_name_key UNIQUE,"
                     " qty integer NOT NULL DEFAULT 0 CONSTRAINT items_qty_check CHECK (qty >= 0),"
                     " note text, flag boolean)",
                     schema);
    PQclear(pgh_sql(sql));
    mem_free(sql);
    pool = open_pool(pgh_url(), schema, 2);
}

static void teardown(void)
{
    db_pool_close(pool);
    pool = NULL;
    /* A test that stopped the cluster may have failed before starting it. */
    pgh_start();
    pgh_drop_schema(schema);
    mem_free(schema);
}

TestSuite(db, .init = setup, .fini = teardown);

static db_conn_t *acquire(db_pool_t *p)
{
    db_conn_t *c = NULL;
    int rc = db_pool_acquire(p, 2000, &c);

    cr_assert_eq(rc, 0, "db_pool_acquire: %s", err_name(rc));
    return c;
}

/* Inserts an item and returns 0 or the error of db_exec. */
static int insert(db_conn_t *c, const char *name, const char *qty, const char *note)
{
    const char *params[3] = {name, qty, note};

    return db_exec(c, &insert_item, params, NULL);
}

/* The single text value of a one-row query. */
static char *query_value(db_conn_t *c, const char *sql, const char *column)
{
    PGresult *res = PQexec(db_pgconn(c), sql);
    char *v;

    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQresultErrorMessage(res));
    v = mem_strdup(db_get(res, 0, column));
    PQclear(res);
    return v;
}

struct sqlstate_case {
    char state[6];
    int err;
};

ParameterizedTestParameters(db_sqlstate, maps_each_sqlstate_to_the_documented_code)
{
    static struct sqlstate_case cases[] = {
        {"23505", ERR_ALREADY_EXISTS},   {"23503", ERR_FAILED_PRECONDITION},
        {"23514", ERR_INVALID_ARGUMENT}, {"23502", ERR_INVALID_ARGUMENT},
        {"22001", ERR_INVALID_ARGUMENT}, {"22003", ERR_INVALID_ARGUMENT},
        {"22007", ERR_INVALID_ARGUMENT}, {"22P02", ERR_INVALID_ARGUMENT},
        {"22012", ERR_INVALID_ARGUMENT}, {"40001", ERR_ABORTED},
        {"40P01", ERR_ABORTED},          {"57014", ERR_DEADLINE_EXCEEDED},
        {"08000", ERR_UNAVAILABLE},      {"08001", ERR_UNAVAILABLE},
        {"08006", ERR_UNAVAILABLE},      {"08P01", ERR_UNAVAILABLE},
        {"57P01", ERR_UNAVAILABLE},      {"57P02", ERR_UNAVAILABLE},
        {"57P03", ERR_UNAVAILABLE},      {"23P01", ERR_INTERNAL},
        {"23001", ERR_INTERNAL},         {"40002", ERR_INTERNAL},
        {"42P01", ERR_INTERNAL},         {"42601", ERR_INTERNAL},
        {"53300", ERR_INTERNAL},         {"57P04", ERR_INTERNAL},
        {"XX000", ERR_INTERNAL},         {"", ERR_INTERNAL},
        {"2350", ERR_INTERNAL},
    };

    return cr_make_param_array(struct sqlstate_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct sqlstate_case *c, db_sqlstate, maps_each_sqlstate_to_the_documented_code)
{
    int got = db_map_sqlstate(c->state);

    cr_assert_eq(got, c->err, "SQLSTATE \"%s\" mapped to %s, want %s", c->state, err_name(got),
                 err_name(c->err));
}

Test(db_sqlstate, null_sqlstate_is_internal)
{
    cr_assert_eq(db_map_sqlstate(NULL), ERR_INTERNAL);
}

Test(db, statement_is_prepared_once_per_connection_and_reused)
{
    static const db_stmt_t prepared = {
        "test_db_prepared",
        "SELECT count(*) AS n, min(prepare_time)::text AS at FROM pg_prepared_statements"
        " WHERE name = $1",
        1};
    const char *name[1] = {count_items.name};
    const char *zero[1] = {"0"};
    db_pool_t *one = open_pool(pgh_url(), schema, 1);
    db_conn_t *c = acquire(one);
    PGresult *res = NULL;
    char *first_at;

    for (int i = 0; i < 3; i++)
        cr_assert_eq(db_exec(c, &count_items, zero, NULL), 1, "%s", db_errmsg(c));
    cr_assert_eq(db_exec(c, &prepared, name, &res), 1, "%s", db_errmsg(c));
    cr_assert_eq(db_get_int(res, 0, "n", -1), 1);
    first_at = mem_strdup(db_get(res, 0, "at"));
    PQclear(res);
    db_pool_release(one, c);

    /* The same connection, taken again, still has it and does not prepare
     * it anew. */
    c = acquire(one);
    cr_assert_eq(db_exec(c, &count_items, zero, NULL), 1, "%s", db_errmsg(c));
    cr_assert_eq(db_exec(c, &prepared, name, &res), 1, "%s", db_errmsg(c));
    cr_assert_eq(db_get_int(res, 0, "n", -1), 1);
    cr_assert_str_eq(db_get(res, 0, "at"), first_at);
    PQclear(res);
    mem_free(first_at);
    db_pool_release(one, c);
    db_pool_close(one);
}

Test(db, custom_plan_statement_answers_each_call_and_is_never_prepared)
{
    static const db_stmt_t custom = {
        "test_db_custom",
        "SELECT count(*) AS n FROM generate_series(1, 10) g WHERE ($1::int IS NULL OR g <= $1)", 1};
    static const db_stmt_t prepared = {
        "test_db_custom_prepared",
        "SELECT count(*) AS n FROM pg_prepared_statements WHERE name = $1", 1};
    const char *name[1] = {custom.name};
    db_pool_t *one = open_pool(pgh_url(), schema, 1);
    db_conn_t *c = acquire(one);
    PGresult *res = NULL;

    /* More calls than PostgreSQL's five custom plans before a generic one. */
    for (int i = 0; i < 8; i++) {
        const char *limit[1] = {i % 2 ? NULL : (i == 0 ? "3" : "7")};
        cr_assert_eq(db_exec_custom(c, &custom, limit, &res), 1, "%s", db_errmsg(c));
        cr_assert_eq(db_get_int(res, 0, "n", -1), i % 2 ? 10 : (i == 0 ? 3 : 7), "call %d", i);
        PQclear(res);
        res = NULL;
    }
    cr_assert_eq(db_exec(c, &prepared, name, &res), 1, "%s", db_errmsg(c));
    cr_assert_eq(db_get_int(res, 0, "n", -1), 0, "a custom-plan statement was prepared");
    PQclear(res);
    db_pool_release(one, c);
    db_pool_close(one);
}

Test(db, parameters_with_quotes_unicode_and_nulls_round_trip)
{
    const char *evil = "O'Brien \"quoted\" \\ back; DROP TABLE items; -- Zürich ☃";
    db_conn_t *c = acquire(pool);
    const char *params[3] = {evil, "7", NULL};
    const char *id[1];
    PGresult *res = NULL;

    cr_assert_eq(db_exec(c, &insert_item, params, &res), 1, "%s", db_errmsg(c));
    id[0] = db_get(res, 0, "id");
    {
        PGresult *row = NULL;

        cr_assert_eq(db_exec(c, &get_item, id, &row), 1, "%s", db_errmsg(c));
        cr_assert_str_eq(db_get(row, 0, "name"), evil);
        cr_assert_eq(db_get_int(row, 0, "qty", -1), 7);
        cr_assert_null(db_get(row, 0, "note"));
        cr_assert_eq(db_get_int(row, 0, "note", -42), -42);
        cr_assert_not(db_get_bool(row, 0, "flag"));
        PQclear(row);
    }
    PQclear(res);
    db_pool_release(pool, c);
}

Test(db, exec_returns_rows_returned_or_affected)
{
    static const db_stmt_t bump = {"test_db_bump", "UPDATE items SET qty = qty + 1", 0};
    static const db_stmt_t none = {"test_db_none", "DELETE FROM items WHERE name = $1", 1};
    const char *zero[1] = {"0"};
    const char *nobody[1] = {"nobody"};
    db_conn_t *c = acquire(pool);

    cr_assert_eq(insert(c, "a", "1", NULL), 1);
    cr_assert_eq(insert(c, "b", "1", NULL), 1);
    cr_assert_eq(insert(c, "c", "1", "x"), 1);
    cr_assert_eq(db_exec(c, &bump, NULL, NULL), 3);
    cr_assert_eq(db_exec(c, &none, nobody, NULL), 0);
    cr_assert_eq(db_exec(c, &count_items, zero, NULL), 1);
    cr_assert_eq(db_exec_simple(c, "SELECT name FROM items"), 3);
    db_pool_release(pool, c);
}

Test(db, column_helpers_read_by_name)
{
    db_conn_t *c = acquire(pool);
    PGresult *res = PQexec(db_pgconn(c), "SELECT 9007199254740993::bigint AS big, true AS yes,"
                                         " false AS no, NULL::int AS nothing");

    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK);
    cr_assert_eq(db_get_int(res, 0, "big", 0), 9007199254740993LL);
    cr_assert(db_get_bool(res, 0, "yes"));
    cr_assert_not(db_get_bool(res, 0, "no"));
    cr_assert_not(db_get_bool(res, 0, "nothing"));
    cr_assert_eq(db_get_int(res, 0, "nothing", 5), 5);
    PQclear(res);
    db_pool_release(pool, c);
}

Test(db, reading_a_missing_column_aborts, .signal = SIGABRT)
{
    PGresult *res = pgh_sql("SELECT 1 AS present");

    (void)db_get(res, 0, "absent");
    PQclear(res);
}

Test(db, unique_violation_is_already_exists_with_constraint)
{
    db_conn_t *c = acquire(pool);
    int rc;

    cr_assert_eq(insert(c, "dup", "1", NULL), 1);
    rc = insert(c, "dup", "2", NULL);
    cr_assert_eq(rc, ERR_ALREADY_EXISTS, "got %s: %s", err_name(rc), db_errmsg(c));
    cr_assert_str_eq(db_sqlstate(c), "23505");
    cr_assert_str_eq(db_constraint(c), "items_name_key");
    cr_assert(strstr(db_errmsg(c), "duplicate key") != NULL, "%s", db_errmsg(c));
    cr_assert(strstr(db_errmsg(c), "Key (name)=(dup)") != NULL, "%s", db_errmsg(c));
    /* The connection stays usable after an error outside a transaction. */
    cr_assert_eq(insert(c, "other", "1", NULL), 1, "%s", db_errmsg(c));
    db_pool_release(pool, c);
}

Test(db, check_and_not_null_and_bad_input_are_invalid_argument)
{
    db_conn_t *c = acquire(pool);
    int rc;

    rc = insert(c, "neg", "-1", NULL);
    cr_assert_eq(rc, ERR_INVALID_ARGUMENT, "got %s", err_name(rc));
    cr_assert_str_eq(db_sqlstate(c), "23514");
    cr_assert_str_eq(db_constraint(c), "items_qty_check");

    rc = insert(c, NULL, "1", NULL);
    cr_assert_eq(rc, ERR_INVALID_ARGUMENT, "got %s", err_name(rc));
    cr_assert_str_eq(db_sqlstate(c), "23502");

    rc = insert(c, "abc", "twelve", NULL);
    cr_assert_eq(rc, ERR_INVALID_ARGUMENT, "got %s", err_name(rc));
    cr_assert_str_eq(db_sqlstate(c), "22P02");
    cr_assert_str_eq(db_constraint(c), "");
    db_pool_release(pool, c);
}

Test(db, statement_timeout_is_deadline_exceeded_and_restored_on_release)
{
    db_pool_t *one = open_pool(pgh_url(), schema, 1);
    db_conn_t *c = acquire(one);
    int64_t t0;
    char *v;
    int rc;

    cr_assert_eq(db_set_timeout(c, 50), 0, "%s", db_errmsg(c));
    t0 = now_ms();
    rc = db_exec_simple(c, "SELECT pg_sleep(1)");
    cr_assert_eq(rc, ERR_DEADLINE_EXCEEDED, "got %s: %s", err_name(rc), db_errmsg(c));
    cr_assert_lt(now_ms() - t0, 900);
    cr_assert_str_eq(db_sqlstate(c), "57014");
    db_pool_release(one, c);

    c = acquire(one);
    v = query_value(c, "SELECT current_setting('statement_timeout') AS t", "t");
    cr_assert_str_eq(v, "5s");
    mem_free(v);
    db_pool_release(one, c);
    db_pool_close(one);
}

Test(db, expired_deadline_fails_the_next_statement_fast)
{
    db_conn_t *c = acquire(pool);
    int64_t t0;
    int rc;

    cr_assert_eq(db_set_timeout(c, -5), 0, "%s", db_errmsg(c));
    t0 = now_ms();
    rc = db_exec_simple(c, "SELECT pg_sleep(0.5)");
    cr_assert_eq(rc, ERR_DEADLINE_EXCEEDED, "got %s", err_name(rc));
    cr_assert_lt(now_ms() - t0, 400);
    db_pool_release(pool, c);
}

Test(db, timeout_set_inside_a_rolled_back_transaction_still_applies)
{
    db_conn_t *c = acquire(pool);
    int rc;

    /* ROLLBACK undoes the SET; setting the same value again must resend it. */
    cr_assert_eq(db_begin(c), 0);
    cr_assert_eq(db_set_timeout(c, 50), 0, "%s", db_errmsg(c));
    db_rollback(c);
    cr_assert_eq(db_set_timeout(c, 50), 0, "%s", db_errmsg(c));
    rc = db_exec_simple(c, "SELECT pg_sleep(1)");
    cr_assert_eq(rc, ERR_DEADLINE_EXCEEDED, "got %s", err_name(rc));
    db_pool_release(pool, c);
}

Test(db, release_rolls_back_an_open_transaction)
{
    db_pool_t *one = open_pool(pgh_url(), schema, 1);
    const char *zero[1] = {"0"};
    PGresult *res = NULL;
    db_conn_t *c = acquire(one);

    cr_assert_eq(db_begin(c), 0, "%s", db_errmsg(c));
    cr_assert_eq(insert(c, "uncommitted", "1", NULL), 1, "%s", db_errmsg(c));
    db_pool_release(one, c);

    c = acquire(one);
    cr_assert_eq(PQtransactionStatus(db_pgconn(c)), PQTRANS_IDLE);
    cr_assert_eq(db_exec(c, &count_items, zero, &res), 1, "%s", db_errmsg(c));
    cr_assert_eq(db_get_int(res, 0, "n", -1), 0);
    PQclear(res);

    /* A failed transaction is cleared too, so the next user can work. */
    cr_assert_eq(db_begin(c), 0);
    cr_assert_lt(insert(c, "bad", "-1", NULL), 0);
    cr_assert_eq(PQtransactionStatus(db_pgconn(c)), PQTRANS_INERROR);
    db_pool_release(one, c);
    c = acquire(one);
    cr_assert_eq(insert(c, "good", "1", NULL), 1, "%s", db_errmsg(c));
    db_pool_release(one, c);
    db_pool_close(one);
}

Test(db, commit_of_a_failed_transaction_is_aborted)
{
    db_conn_t *c = acquire(pool);
    const char *zero[1] = {"0"};
    PGresult *res = NULL;
    int rc;

    cr_assert_eq(db_begin(c), 0);
    cr_assert_eq(insert(c, "first", "1", NULL), 1);
    cr_assert_eq(insert(c, "second", "-1", NULL), ERR_INVALID_ARGUMENT);
    rc = db_commit(c);
    cr_assert_eq(rc, ERR_ABORTED, "got %s", err_name(rc));
    cr_assert_eq(db_exec(c, &count_items, zero, &res), 1, "%s", db_errmsg(c));
    cr_assert_eq(db_get_int(res, 0, "n", -1), 0);
    PQclear(res);
    db_pool_release(pool, c);
}

Test(db, exhausted_pool_is_resource_exhausted_after_the_timeout)
{
    db_conn_t *a = acquire(pool);
    db_conn_t *b = acquire(pool);
    db_conn_t *c = NULL;
    int64_t t0 = now_ms();
    int rc = db_pool_acquire(pool, 150, &c);
    int64_t waited = now_ms() - t0;

    cr_assert_eq(rc, ERR_RESOURCE_EXHAUSTED, "got %s", err_name(rc));
    cr_assert_null(c);
    cr_assert_geq(waited, 140);
    cr_assert_lt(waited, 2000);
    db_pool_release(pool, a);
    cr_assert_eq(db_pool_acquire(pool, 150, &c), 0);
    cr_assert_eq(c, a);
    db_pool_release(pool, b);
    db_pool_release(pool, c);
}

struct delayed_release {
    db_pool_t *pool;
    db_conn_t *conn;
};

static void *release_later(void *arg)
{
    struct delayed_release *d = arg;

    usleep(100 * 1000);
    db_pool_release(d->pool, d->conn);
    return NULL;
}

Test(db, waiting_acquire_gets_a_connection_when_one_is_released)
{
    struct delayed_release d = {.pool = pool};
    db_conn_t *b = acquire(pool);
    db_conn_t *c = NULL;
    pthread_t t;
    int64_t t0;

    d.conn = acquire(pool);
    t0 = now_ms();
    cr_assert_eq(pthread_create(&t, NULL, release_later, &d), 0);
    cr_assert_eq(db_pool_acquire(pool, 5000, &c), 0);
    cr_assert_geq(now_ms() - t0, 80);
    cr_assert_eq(c, d.conn);
    pthread_join(t, NULL);
    db_pool_release(pool, c);
    db_pool_release(pool, b);
}

static void *hammer(void *arg)
{
    const char *zero[1] = {"0"};
    long failures = 0;

    for (int i = 0; i < 50; i++) {
        db_conn_t *c = NULL;

        if (db_pool_acquire(pool, 5000, &c) < 0) {
            failures++;
            continue;
        }
        if (db_exec(c, &count_items, zero, NULL) != 1)
            failures++;
        db_pool_release(pool, c);
    }
    return (void *)failures;
}

Test(db, many_threads_share_the_pool)
{
    pthread_t t[4];

    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, hammer, NULL), 0);
    for (int i = 0; i < 4; i++) {
        void *failures;

        pthread_join(t[i], &failures);
        cr_assert_eq((long)failures, 0, "thread %d had %ld failures", i, (long)failures);
    }
}

Test(db, serialization_failure_is_aborted)
{
    db_conn_t *a = acquire(pool);
    db_conn_t *b = acquire(pool);
    int rc;

    cr_assert_eq(insert(a, "x", "1", NULL), 1);
    cr_assert_eq(db_exec_simple(a, "BEGIN ISOLATION LEVEL SERIALIZABLE"), 0);
    cr_assert_eq(db_exec_simple(b, "BEGIN ISOLATION LEVEL SERIALIZABLE"), 0);
    cr_assert_eq(db_exec_simple(a, "SELECT qty FROM items WHERE name = 'x'"), 1);
    cr_assert_eq(db_exec_simple(b, "SELECT qty FROM items WHERE name = 'x'"), 1);
    cr_assert_eq(db_exec_simple(a, "UPDATE items SET qty = qty + 1 WHERE name = 'x'"), 1);
    cr_assert_eq(db_commit(a), 0, "%s", db_errmsg(a));
    rc = db_exec_simple(b, "UPDATE items SET qty = qty + 10 WHERE name = 'x'");
    cr_assert_eq(rc, ERR_ABORTED, "got %s: %s", err_name(rc), db_errmsg(b));
    cr_assert_str_eq(db_sqlstate(b), "40001");
    db_rollback(b);
    db_pool_release(pool, a);
    db_pool_release(pool, b);
}

Test(db, search_path_and_application_name_follow_the_schema)
{
    char *odd = pgh_fresh_schema("test_db \"odd\" Schema");
    db_pool_t *p = open_pool(pgh_url(), odd, 1);
    db_conn_t *c = acquire(p);
    const char *params[1] = {odd};
    PGresult *res;
    char *v;

    v = query_value(c, "SELECT current_schema() AS s", "s");
    cr_assert_str_eq(v, odd);
    mem_free(v);
    v = query_value(c, "SELECT current_setting('application_name') AS a", "a");
    cr_assert_str_eq(v, odd);
    mem_free(v);
    cr_assert_eq(db_exec_simple(c, "CREATE TABLE unqualified (x int)"), 0, "%s", db_errmsg(c));
    res = pgh_sqlf("SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'unqualified'", 1,
                   params);
    cr_assert_eq(PQntuples(res), 1);
    PQclear(res);
    db_pool_release(p, c);
    db_pool_close(p);
    pgh_drop_schema(odd);
    mem_free(odd);
}

/* The server process of a connection, for terminating it from outside. */
static char *backend_pid(db_conn_t *c)
{
    return query_value(c, "SELECT pg_backend_pid()::text AS pid", "pid");
}

static void terminate(const char *pid)
{
    const char *params[1] = {pid};
    PGresult *res = pgh_sqlf("SELECT pg_terminate_backend($1::int, 5000) AS done", 1, params);

    cr_assert_str_eq(db_get(res, 0, "done"), "t");
    PQclear(res);
}

Test(db, statement_on_a_killed_connection_is_unavailable_then_reconnects)
{
    db_pool_t *one = open_pool(pgh_url(), schema, 1);
    const char *zero[1] = {"0"};
    db_conn_t *c = acquire(one);
    char *pid = backend_pid(c);
    char *pid2;
    char *v;
    int rc;

    cr_assert_eq(db_exec(c, &count_items, zero, NULL), 1);
    terminate(pid);
    rc = db_exec(c, &count_items, zero, NULL);
    cr_assert_eq(rc, ERR_UNAVAILABLE, "got %s", err_name(rc));
    cr_assert(strncmp(db_errmsg(c), "database connection lost", 24) == 0, "%s", db_errmsg(c));
    cr_assert_null(db_pgconn(c));
    cr_assert_eq(db_exec_simple(c, "SELECT 1"), ERR_UNAVAILABLE);
    db_pool_release(one, c);

    /* The next acquire reconnects: new server process, same session setup,
     * and the statement is prepared again. */
    c = acquire(one);
    pid2 = backend_pid(c);
    cr_assert_str_neq(pid2, pid);
    cr_assert_eq(db_exec(c, &count_items, zero, NULL), 1, "%s", db_errmsg(c));
    v = query_value(c, "SELECT current_schema() AS s", "s");
    cr_assert_str_eq(v, schema);
    mem_free(v);
    v = query_value(c, "SELECT current_setting('statement_timeout') AS t", "t");
    cr_assert_str_eq(v, "5s");
    mem_free(v);
    db_pool_release(one, c);
    mem_free(pid);
    mem_free(pid2);
    db_pool_close(one);
}

Test(db, idle_connection_killed_by_the_server_is_replaced_on_acquire)
{
    db_pool_t *one = open_pool(pgh_url(), schema, 1);
    const char *zero[1] = {"0"};
    db_conn_t *c = acquire(one);
    char *pid = backend_pid(c);

    db_pool_release(one, c);
    terminate(pid);
    c = acquire(one);
    cr_assert_eq(db_exec(c, &count_items, zero, NULL), 1, "%s", db_errmsg(c));
    db_pool_release(one, c);
    mem_free(pid);
    db_pool_close(one);
}

Test(db, pool_survives_a_server_restart)
{
    const char *zero[1] = {"0"};
    db_conn_t *a = acquire(pool);
    db_conn_t *b = acquire(pool);
    int64_t t0;
    int unavailable = 0;
    bool ok = false;

    cr_assert_eq(db_exec(a, &count_items, zero, NULL), 1);
    cr_assert_eq(db_exec(b, &count_items, zero, NULL), 1);
    db_pool_release(pool, a);
    db_pool_release(pool, b);

    pgh_stop();
    pgh_start();
    t0 = now_ms();
    while (!ok && now_ms() - t0 < 5000) {
        db_conn_t *c = NULL;
        int rc = db_pool_acquire(pool, 1000, &c);

        if (rc == 0) {
            rc = db_exec(c, &count_items, zero, NULL);
            db_pool_release(pool, c);
        }
        ok = rc == 1;
        if (!ok) {
            cr_assert_eq(rc, ERR_UNAVAILABLE, "got %s", err_name(rc));
            unavailable++;
            usleep(50 * 1000);
        }
    }
    cr_assert(ok, "the pool did not recover within 5 s (%d failures)", unavailable);

    /* Both connections work again. */
    a = acquire(pool);
    b = acquire(pool);
    cr_assert_eq(db_exec(a, &count_items, zero, NULL), 1, "%s", db_errmsg(a));
    cr_assert_eq(db_exec(b, &count_items, zero, NULL), 1, "%s", db_errmsg(b));
    db_pool_release(pool, a);
    db_pool_release(pool, b);
}

Test(db, ping_is_false_while_the_server_is_down_and_true_after)
{
    db_conn_t *c = NULL;
    int64_t t0;
    bool up = false;
    int rc;

    cr_assert(db_pool_ping(pool, 1000));
    pgh_stop();
    t0 = now_ms();
    cr_assert_not(db_pool_ping(pool, 1000));
    cr_assert_not(db_pool_ping(pool, 1000));
    rc = db_pool_acquire(pool, 1000, &c);
    cr_assert_eq(rc, ERR_UNAVAILABLE, "got %s", err_name(rc));
    cr_assert_lt(now_ms() - t0, 1000, "a down server must be reported quickly");

    pgh_start();
    t0 = now_ms();
    while (!up && now_ms() - t0 < 5000) {
        up = db_pool_ping(pool, 1000);
        if (!up)
            usleep(50 * 1000);
    }
    cr_assert(up, "ping still false 5 s after the restart");
}

/* A port on 127.0.0.1 that nothing listens on. */
static int closed_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    cr_assert_geq(fd, 0);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

Test(db, open_against_an_unreachable_server_returns_the_pool_and_unavailable)
{
    char *url = mem_printf("postgresql://postgres@127.0.0.1:%d/postgres", closed_port());
    db_opts_t opts = {.url = url, .schema = "nowhere", .size = 2, .connect_timeout_ms = 1000};
    db_pool_t *p = NULL;
    db_conn_t *c = NULL;
    int64_t t0;
    int rc = db_pool_open(&opts, &p);

    cr_assert_eq(rc, ERR_UNAVAILABLE, "got %s", err_name(rc));
    cr_assert_not_null(p);
    t0 = now_ms();
    for (int i = 0; i < 4; i++) {
        rc = db_pool_acquire(p, 1000, &c);
        cr_assert_eq(rc, ERR_UNAVAILABLE, "got %s", err_name(rc));
    }
    cr_assert_not(db_pool_ping(p, 1000));
    cr_assert_lt(now_ms() - t0, 1000);
    db_pool_close(p);
    mem_free(url);
}

Test(db, open_with_a_bad_url_is_config_error)
{
    db_opts_t opts = {.url = "nosuchoption=1", .schema = "s", .size = 1};
    db_pool_t *p = NULL;

    cr_assert_eq(db_pool_open(&opts, &p), ERR_CONFIG);
    cr_assert_null(p);
    opts.url = pgh_url();
    opts.size = 0;
    cr_assert_eq(db_pool_open(&opts, &p), ERR_CONFIG);
    cr_assert_null(p);
}

static const db_stmt_t read_scope = {
    "test_db_read_scope",
    "SELECT coalesce(current_setting('onceiot.org_id', true), '') AS org,"
    " coalesce(current_setting('onceiot.superuser', true), '') AS su,"
    " current_setting('statement_timeout') AS t",
    0};

/* The scope and timeout one statement sees, as "org/superuser/timeout". */
static char *scope_seen(db_conn_t *c)
{
    PGresult *res = NULL;
    int rc = db_exec(c, &read_scope, NULL, &res);
    char *v;

    cr_assert_eq(rc, 1, "%s: %s", err_name(rc), db_errmsg(c));
    v = mem_printf("%s/%s/%s", db_get(res, 0, "org"), db_get(res, 0, "su"), db_get(res, 0, "t"));
    PQclear(res);
    return v;
}

static void assert_seen(char *got, const char *want)
{
    cr_assert_str_eq(got, want);
    mem_free(got);
}

Test(db, scope_and_timeout_reach_an_autocommit_statement_and_end_with_it)
{
    db_conn_t *c = acquire(pool);

    db_set_scope(c, 42, false);
    cr_assert_eq(db_set_timeout(c, 1500), 0);
    assert_seen(scope_seen(c), "42/false/1500ms");
    /* Transaction-local: the session itself (a raw query) never holds them,
     * so nothing is left to restore and no SET of its own was sent. */
    assert_seen(query_value(c,
                            "SELECT coalesce(current_setting('onceiot.org_id', true), '') || '/' ||"
                            " current_setting('statement_timeout') AS v",
                            "v"),
                "/5s");
    /* Each autocommit statement is its own transaction: it gets them again. */
    assert_seen(scope_seen(c), "42/false/1500ms");
    db_pool_release(pool, c);

    /* The next checkout starts with no scope and the default timeout. */
    c = acquire(pool);
    assert_seen(scope_seen(c), "//5s");
    db_pool_release(pool, c);
}

Test(db, scope_set_at_begin_holds_for_the_whole_transaction)
{
    db_conn_t *c = acquire(pool);

    db_set_scope(c, 0, true);
    cr_assert_eq(db_begin(c), 0, "%s", db_errmsg(c));
    assert_seen(query_value(c, "SELECT current_setting('onceiot.superuser', true) AS v", "v"),
                "true");
    assert_seen(scope_seen(c), "/true/5s");
    /* A new scope inside the transaction is sent with the next statement. */
    db_set_scope(c, 7, false);
    assert_seen(scope_seen(c), "7/false/5s");
    cr_assert_eq(db_commit(c), 0, "%s", db_errmsg(c));
    assert_seen(
        query_value(c, "SELECT coalesce(current_setting('onceiot.org_id', true), '') AS v", "v"),
        "");
    /* BEGIN through db_exec_simple opens the block before the settings. */
    cr_assert_eq(db_exec_simple(c, "BEGIN"), 0, "%s", db_errmsg(c));
    assert_seen(query_value(c, "SELECT current_setting('onceiot.org_id', true) AS v", "v"), "7");
    db_rollback(c);
    /* After the rollback the next statement carries them again. */
    assert_seen(scope_seen(c), "7/false/5s");
    db_pool_release(pool, c);
}

Test(db, timeout_looser_than_the_default_is_not_sent)
{
    db_conn_t *c = acquire(pool);

    cr_assert_eq(db_set_timeout(c, 60000), 0);
    assert_seen(scope_seen(c), "//5s");
    db_pool_release(pool, c);
}

Test(db, statement_error_with_the_settings_is_reported_and_the_connection_stays_usable)
{
    db_conn_t *c = acquire(pool);
    int rc;

    db_set_scope(c, 3, false);
    rc = insert(c, "dup-scope", "-1", NULL);
    cr_assert_eq(rc, ERR_INVALID_ARGUMENT, "got %s", err_name(rc));
    cr_assert_str_eq(db_constraint(c), "items_qty_check");
    cr_assert_eq(db_exec_simple(c, "SELECT 1 AS one"), 1, "%s", db_errmsg(c));
    assert_seen(scope_seen(c), "3/false/5s");
    db_pool_release(pool, c);
}

/* db_exec_custom (ListSims' custom plans) carries the scope in its round trip
 * too: without it a forced policy would hide every row of such a query. */
Test(db, custom_plan_statement_gets_the_scope_and_timeout)
{
    db_conn_t *c = acquire(pool);
    PGresult *res = NULL;

    db_set_scope(c, 42, false);
    cr_assert_eq(db_set_timeout(c, 1500), 0);
    int rc = db_exec_custom(c, &read_scope, NULL, &res);
    cr_assert_eq(rc, 1, "%s: %s", err_name(rc), db_errmsg(c));
    char *v =
        mem_printf("%s/%s/%s", db_get(res, 0, "org"), db_get(res, 0, "su"), db_get(res, 0, "t"));
    PQclear(res);
    assert_seen(v, "42/false/1500ms");
    db_pool_release(pool, c);
}

/* db_exec_generic (ListSims by a tag): a LIMIT $1 statement, whose custom
 * plans PostgreSQL's plan cache would keep choosing, runs on its generic
 * plan from the first call, answers each call's parameters, and the plan
 * mode ends with the call's implicit transaction. */
Test(db, generic_plan_statement_is_planned_once_and_the_mode_ends_with_the_call)
{
    static const db_stmt_t generic = {"test_db_generic",
                                      "SELECT g AS v, current_setting('plan_cache_mode') AS mode"
                                      " FROM generate_series(1, 1000) g ORDER BY g LIMIT $1",
                                      1};
    static const db_stmt_t plans = {
        "test_db_generic_plans",
        "SELECT generic_plans, custom_plans, current_setting('plan_cache_mode') AS mode"
        " FROM pg_prepared_statements WHERE name = $1",
        1};
    const char *name[1] = {generic.name};
    db_pool_t *one = open_pool(pgh_url(), schema, 1);
    db_conn_t *c = acquire(one);
    PGresult *res = NULL;

    for (int i = 0; i < 8; i++) {
        char lim[8];
        snprintf(lim, sizeof lim, "%d", 1 + i * 3);
        const char *limit[1] = {lim};
        cr_assert_eq(db_exec_generic(c, &generic, limit, &res), 1 + i * 3, "%s", db_errmsg(c));
        cr_assert_str_eq(db_get(res, 0, "mode"), "force_generic_plan");
        PQclear(res);
        res = NULL;
    }
    cr_assert_eq(db_exec(c, &plans, name, &res), 1, "%s", db_errmsg(c));
    cr_assert_eq(db_get_int(res, 0, "generic_plans", -1), 8);
    cr_assert_eq(db_get_int(res, 0, "custom_plans", -1), 0);
    cr_assert_str_eq(db_get(res, 0, "mode"), "auto", "the plan mode outlived its call");
    PQclear(res);
    res = NULL;

    /* The scope travels with it, as with every statement. */
    db_set_scope(c, 42, false);
    cr_assert_eq(db_exec_generic(c, &read_scope, NULL, &res), 1, "%s", db_errmsg(c));
    cr_assert_str_eq(db_get(res, 0, "org"), "42");
    PQclear(res);
    res = NULL;

    /* Inside a transaction block the mode would outlive the statement. */
    cr_assert_eq(db_begin(c), 0);
    const char *two[1] = {"2"};
    cr_assert_eq(db_exec_generic(c, &generic, two, &res), ERR_INTERNAL);
    cr_assert_null(res);
    cr_assert(strstr(db_errmsg(c), "outside a transaction block") != NULL, "%s", db_errmsg(c));
    db_rollback(c);
    db_pool_release(one, c);
    db_pool_close(one);
}
