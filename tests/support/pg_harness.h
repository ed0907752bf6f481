/* The PostgreSQL test cluster: its superuser URL, superuser SQL, throwaway
 * schemas and roles, and stopping/starting it.
 *
 * The cluster is private to the test run; ./tools/stack test starts it and
 * sets ONCEIOT_TEST_PG_URL (superuser URL), ONCEIOT_TEST_PGDATA (data
 * directory) and ONCEIOT_TEST_PGBIN (directory holding pg_ctl). Helpers fail
 * the current Criterion test on any error. Strings returned are freed with
 * mem_free. */
#ifndef ONCEIOT_PG_HARNESS_H
#define ONCEIOT_PG_HARNESS_H

#include <libpq-fe.h>

/* The superuser URL of the test cluster; fails the test if it is not set. */
const char *pgh_url(void);
/* Runs SQL (one or more statements) as the superuser, asserting success.
 * Returns the result of the last statement; PQclear it. */
PGresult *pgh_sql(const char *sql);
/* Runs one statement with text parameters as the superuser, asserting
 * success. PQclear the result. */
PGresult *pgh_sqlf(const char *sql, int nparams, const char *const *params);
/* The first column of the first row of such a statement as a number (a
 * count(*), say). */
long pgh_count(const char *sql, int nparams, const char *const *params);
/* EXPLAIN EXECUTE of the statement prepared as name on conn with n text
 * values (NULL: SQL NULL), asserting success; returns the plan's lines, one
 * a line (mem_free it). EXPLAIN EXECUTE takes no bind parameters: the values
 * go in as literals, which is what a custom plan sees anyway. */
char *pgh_explain_execute(PGconn *conn, const char *name, const char *const *values, int n);
/* Returns prefix + "_" + a random suffix: a name no other test uses. */
char *pgh_unique_name(const char *prefix);
/* Creates a new schema, owned by the superuser, and returns its name. */
char *pgh_fresh_schema(const char *prefix);
/* Creates a new schema owned by role, for migrations applied as that role
 * (a service role, bound by row-level security), and returns its name: first
 * the extensions the sims migrations need, pg_trgm (schema public) and
 * pg_partman (schema partman), role granted what partman's functions use. */
char *pgh_service_schema(const char *role, const char *prefix);
/* Drops a schema made by pgh_service_schema, partman's records of its
 * tables and then role, and frees both names. */
void pgh_drop_service_schema(char *schema, char *role);
/* Creates a new LOGIN role (no superuser, no CREATEDB) whose password is its
 * name, and returns its name. */
char *pgh_fresh_role(const char *prefix);
/* The test cluster's URL, as a key=value string, for logging in as role. */
char *pgh_url_as(const char *role);
/* Drops a schema and everything in it, if it exists. */
void pgh_drop_schema(const char *schema);
/* Drops a role (after what it owns), if it exists. */
void pgh_drop_role(const char *role);
/* Stops the cluster (fast shutdown) and waits until it is down. */
void pgh_stop(void);
/* Starts the cluster if it is not running and waits until it accepts
 * connections; safe to call from a fixture's fini. */
void pgh_start(void);

#endif
