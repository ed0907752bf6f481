/* Statements on a checked-out connection (see onceiot/db.h): the
 * transaction-local settings sent in one pipeline with the statement that
 * needs them, prepared and custom-plan statements, text and binary values,
 * transactions, and the errors they end in. The pool and the connections'
 * lifecycle are in db.c. */
#include "db_int.h"
#include "onceiot/mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int db__lost(db_conn_t *c)
{
    snprintf(c->errmsg, sizeof c->errmsg, "database connection lost");
    snprintf(c->sqlstate, sizeof c->sqlstate, "08006");
    c->constraint[0] = '\0';
    return ERR_UNAVAILABLE;
}

/* Records the error of a failed result (res may be NULL) and returns its
 * ERR_* code. A failure that left the connection dead closes it and returns
 * ERR_UNAVAILABLE. */
static int db__fail(db_conn_t *c, const PGresult *res)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
    const char *constraint = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);
    char msg[512];

    snprintf(c->sqlstate, sizeof c->sqlstate, "%s", state != NULL ? state : "");
    snprintf(c->constraint, sizeof c->constraint, "%s", constraint != NULL ? constraint : "");
    db__copy_msg(msg, sizeof msg, primary != NULL ? primary : PQerrorMessage(c->pg));
    if (detail != NULL)
        snprintf(c->errmsg, sizeof c->errmsg, "%s (%.500s)", msg, detail);
    else
        snprintf(c->errmsg, sizeof c->errmsg, "%s", msg);

    if (PQstatus(c->pg) == CONNECTION_BAD) {
        snprintf(c->errmsg, sizeof c->errmsg, "database connection lost (%s)", msg);
        db__mark_broken(c);
        return ERR_UNAVAILABLE;
    }
    return state != NULL ? db_map_sqlstate(state) : ERR_INTERNAL;
}

/* Turns a result into a row count or an ERR_* code. Consumes res, unless it
 * succeeded and out is not NULL: then the caller owns it. */
static int db__finish(db_conn_t *c, PGresult *res, PGresult **out)
{
    ExecStatusType st = PQresultStatus(res);
    int rc;

    switch (st) {
    case PGRES_TUPLES_OK:
        rc = PQntuples(res);
        break;
    case PGRES_COMMAND_OK:
        rc = atoi(PQcmdTuples(res));
        break;
    case PGRES_EMPTY_QUERY:
        rc = 0;
        break;
    case PGRES_FATAL_ERROR:
        rc = db__fail(c, res);
        break;
    default:
        /* COPY and pipeline states are never started by this API; a
         * connection left in one cannot run the next statement. */
        snprintf(c->errmsg, sizeof c->errmsg, "unexpected result status %s", PQresStatus(st));
        c->sqlstate[0] = '\0';
        c->constraint[0] = '\0';
        db__mark_broken(c);
        rc = ERR_INTERNAL;
        break;
    }
    if (c->pg != NULL && PQtransactionStatus(c->pg) == PQTRANS_IDLE)
        c->settings_live = false;
    if (rc >= 0 && out != NULL) {
        *out = res;
        res = NULL;
    }
    PQclear(res);
    return rc;
}

static bool db__is_prepared(const db_conn_t *c, const db_stmt_t *stmt)
{
    for (int i = 0; i < c->nprepared; i++) {
        /* Names, not pointers: the same statement may be defined in two files. */
        if (c->prepared[i] == stmt || strcmp(c->prepared[i]->name, stmt->name) == 0)
            return true;
    }
    return false;
}

static void db__remember_prepared(db_conn_t *c, const db_stmt_t *stmt)
{
    if (c->nprepared == c->cap_prepared) {
        c->cap_prepared = c->cap_prepared != 0 ? c->cap_prepared * 2 : 16;
        c->prepared = mem_realloc(c->prepared, sizeof *c->prepared * (size_t)c->cap_prepared);
    }
    c->prepared[c->nprepared++] = stmt;
}

int db_set_timeout(db_conn_t *conn, int64_t timeout_ms)
{
    int64_t dflt = conn->pool->default_timeout_ms;

    /* statement_timeout = 0 would mean "none": an expired deadline must
     * instead make the next statement fail at once. */
    if (timeout_ms <= 0)
        timeout_ms = 1;
    if (timeout_ms > INT_MAX)
        timeout_ms = INT_MAX;
    /* Only a bound tighter than the session's default is worth sending. */
    if (dflt > 0 && timeout_ms >= dflt)
        timeout_ms = 0;
    if (timeout_ms == conn->timeout_ms)
        return 0;
    conn->timeout_ms = timeout_ms;
    conn->settings_any = true;
    conn->settings_live = false;
    return 0;
}

void db_set_scope(db_conn_t *conn, int64_t org_id, bool superuser)
{
    if (conn->settings_any && org_id == conn->scope_org && superuser == conn->scope_superuser)
        return;
    conn->scope_org = org_id > 0 ? org_id : 0;
    conn->scope_superuser = superuser;
    conn->settings_any = true;
    conn->settings_live = false;
}

void db_set_call(db_conn_t *conn, const char *json)
{
    if (conn->settings_any && conn->call_info == json)
        return;
    conn->call_info = json;
    conn->settings_any = true;
    conn->settings_live = false;
}

/* The transaction-local settings, one prepared statement sent ahead of (or,
 * for BEGIN, right after) the statement that needs them. */
static const db_stmt_t db__settings = {
    "onceiot_db_settings",
    "SELECT pg_catalog.set_config('" DB_SETTING_ORG_ID "', $1, true),"
    " pg_catalog.set_config('" DB_SETTING_SUPERUSER "', $2, true),"
    " pg_catalog.set_config('statement_timeout', $3, true),"
    " pg_catalog.set_config('" DB_SETTING_CALL "', $4, true)",
    4};

/* The parameters of db__settings, written into bufs. */
static void db__settings_params(const db_conn_t *c, char bufs[2][24], const char *params[4])
{
    int64_t t = c->timeout_ms > 0 ? c->timeout_ms : c->pool->default_timeout_ms;

    bufs[0][0] = '\0';
    if (c->scope_org > 0)
        snprintf(bufs[0], 24, "%lld", (long long)c->scope_org);
    snprintf(bufs[1], 24, "%lld", (long long)t);
    params[0] = bufs[0];
    params[1] = c->scope_superuser ? "true" : "false";
    params[2] = bufs[1];
    params[3] = c->call_info ? c->call_info : "";
}

/* The most steps one round trip carries: the settings, the plan mode and
 * the statement. */
#define DB__MAX_STEPS 3

/* One step of a pipelined round trip: a prepared statement (prepared first
 * in the same round trip if this connection has not yet) or fixed SQL. */
typedef struct db__step {
    const db_stmt_t *stmt;     /* or NULL, then sql */
    const char *sql;           /* a single statement, planned for its parameters */
    int nparams;               /* sql's parameters */
    const char *const *params; /* stmt's (or sql's) parameters */
    const int *lengths;        /* of binary parameters (or NULL: all text) */
    const int *formats;        /* 1 for a binary parameter (or NULL: all text) */
} db__step_t;

static int db__pipeline_lost(db_conn_t *c)
{
    char msg[512];

    db__copy_msg(msg, sizeof msg, PQerrorMessage(c->pg));
    snprintf(c->errmsg, sizeof c->errmsg, "database connection lost (%s)", msg);
    snprintf(c->sqlstate, sizeof c->sqlstate, "08006");
    c->constraint[0] = '\0';
    db__mark_broken(c);
    return ERR_UNAVAILABLE;
}

/* Sends the n steps (and the prepares they need) in one pipeline ended by
 * one Sync, so they cost one round trip; outside a transaction block they
 * run as one implicit transaction, which is what makes set_config(..., true)
 * reach the statement after it. Returns the row count of step keep (its
 * result handed over in *out as db_exec does) or the first error. */
static int db__pipeline(db_conn_t *c, const db__step_t *steps, int n, int keep, PGresult **out)
{
    const db_stmt_t *prepares[2 * DB__MAX_STEPS] = {NULL}; /* per query sent: what it prepares */
    int kept[2 * DB__MAX_STEPS]; /* per query sent: the step whose result it is, or -1 */
    int nq = 0;
    int rc = 0;
    int rows = 0;
    PGresult *res;

    if (!PQenterPipelineMode(c->pg))
        return db__pipeline_lost(c);
    for (int i = 0; i < n; i++) {
        const db_stmt_t *st = steps[i].stmt;
        int ok;

        if (st != NULL && !db__is_prepared(c, st)) {
            if (!PQsendPrepare(c->pg, st->name, st->sql, st->nparams, NULL))
                return db__pipeline_lost(c);
            prepares[nq] = st;
            kept[nq++] = -1;
        }
        if (st != NULL)
            ok = PQsendQueryPrepared(c->pg, st->name, st->nparams, steps[i].params,
                                     steps[i].lengths, steps[i].formats, 0);
        else
            ok = PQsendQueryParams(c->pg, steps[i].sql, steps[i].nparams, NULL, steps[i].params,
                                   NULL, NULL, 0);
        if (!ok)
            return db__pipeline_lost(c);
        prepares[nq] = NULL;
        kept[nq++] = i;
    }
    if (!PQpipelineSync(c->pg))
        return db__pipeline_lost(c);
    for (int q = 0; q < nq; q++) {
        bool got = false;

        while ((res = PQgetResult(c->pg)) != NULL) {
            ExecStatusType st = PQresultStatus(res);

            got = true;
            if (st == PGRES_PIPELINE_ABORTED) {
                PQclear(res);
                continue;
            }
            if (rc == 0 && kept[q] == keep) {
                int r = db__finish(c, res, out);
                if (r < 0)
                    rc = r;
                else
                    rows = r;
            } else {
                if (rc == 0 && st == PGRES_FATAL_ERROR)
                    rc = db__fail(c, res);
                else if (st == PGRES_COMMAND_OK && prepares[q] != NULL)
                    db__remember_prepared(c, prepares[q]);
                PQclear(res);
            }
            if (c->pg == NULL)
                return rc < 0 ? rc : db__lost(c);
        }
        if (!got)
            return db__pipeline_lost(c);
    }
    res = PQgetResult(c->pg);
    if (PQresultStatus(res) != PGRES_PIPELINE_SYNC) {
        PQclear(res);
        return db__pipeline_lost(c);
    }
    PQclear(res);
    if (!PQexitPipelineMode(c->pg))
        return db__pipeline_lost(c);
    return rc < 0 ? rc : rows;
}

/* True when this checkout's settings must go with the next statement: they
 * were given (db_set_scope, a tighter db_set_timeout) and are not in effect
 * in an open transaction. */
static bool db__needs_settings(const db_conn_t *c)
{
    return c->settings_any && !c->settings_live;
}

/* After a round trip that carried the settings: they stay in effect while
 * the transaction block it opened or continued is open. */
static void db__settings_sent(db_conn_t *c, int rc)
{
    if (rc >= 0 && c->pg != NULL && PQtransactionStatus(c->pg) == PQTRANS_INTRANS)
        c->settings_live = true;
}

/* The statement step and, ahead of it in the same round trip, this
 * checkout's settings (db__needs_settings). */
static int db__exec_with_settings(db_conn_t *c, const db__step_t *step, PGresult **res)
{
    char bufs[2][24];
    const char *sp[4];

    db__settings_params(c, bufs, sp);
    db__step_t steps[2] = {{.stmt = &db__settings, .params = sp}, *step};
    int rc = db__pipeline(c, steps, 2, 1, res);
    db__settings_sent(c, rc);
    return rc;
}

/* db_exec with optional binary parameters (lengths and formats as libpq's). */
static int db__exec(db_conn_t *conn, const db_stmt_t *stmt, const char *const *params,
                    const int *lengths, const int *formats, PGresult **res)
{
    int rc;

    if (res != NULL)
        *res = NULL;
    if (conn->pg == NULL)
        return db__lost(conn);
    if (db__needs_settings(conn))
        return db__exec_with_settings(
            conn,
            &(db__step_t){.stmt = stmt, .params = params, .lengths = lengths, .formats = formats},
            res);
    if (!db__is_prepared(conn, stmt)) {
        rc =
            db__finish(conn, PQprepare(conn->pg, stmt->name, stmt->sql, stmt->nparams, NULL), NULL);
        if (rc < 0)
            return rc;
        db__remember_prepared(conn, stmt);
    }
    return db__finish(
        conn, PQexecPrepared(conn->pg, stmt->name, stmt->nparams, params, lengths, formats, 0),
        res);
}

int db_exec(db_conn_t *conn, const db_stmt_t *stmt, const char *const *params, PGresult **res)
{
    return db__exec(conn, stmt, params, NULL, NULL, res);
}

int db_exec_values(db_conn_t *conn, const db_stmt_t *stmt, const db_value_t *values, PGresult **res)
{
    const char *params[DB_MAX_VALUES];
    int lengths[DB_MAX_VALUES], formats[DB_MAX_VALUES];

    if (stmt->nparams > DB_MAX_VALUES) {
        snprintf(conn->errmsg, sizeof conn->errmsg, "%s: more than %d values", stmt->name,
                 DB_MAX_VALUES);
        conn->sqlstate[0] = conn->constraint[0] = '\0';
        return ERR_INTERNAL;
    }
    for (int i = 0; i < stmt->nparams; i++) {
        params[i] = values[i].data;
        lengths[i] = values[i].len;
        formats[i] = values[i].binary ? 1 : 0;
    }
    return db__exec(conn, stmt, params, lengths, formats, res);
}

/* db_exec_generic's plan mode, transaction-local like the settings. */
static const db_stmt_t db__generic_plan = {
    "onceiot_db_generic_plan",
    "SELECT pg_catalog.set_config('plan_cache_mode', 'force_generic_plan', true)", 0};

int db_exec_generic(db_conn_t *conn, const db_stmt_t *stmt, const char *const *params,
                    PGresult **res)
{
    if (res != NULL)
        *res = NULL;
    if (conn->pg == NULL)
        return db__lost(conn);
    if (PQtransactionStatus(conn->pg) != PQTRANS_IDLE) {
        snprintf(conn->errmsg, sizeof conn->errmsg,
                 "%s: db_exec_generic runs outside a transaction block only", stmt->name);
        conn->sqlstate[0] = conn->constraint[0] = '\0';
        return ERR_INTERNAL;
    }
    char bufs[2][24];
    const char *sp[4];
    db__step_t steps[DB__MAX_STEPS];
    int n = 0;
    bool settings = db__needs_settings(conn);

    if (settings) {
        db__settings_params(conn, bufs, sp);
        steps[n++] = (db__step_t){.stmt = &db__settings, .params = sp};
    }
    steps[n++] = (db__step_t){.stmt = &db__generic_plan};
    steps[n++] = (db__step_t){.stmt = stmt, .params = params};
    int rc = db__pipeline(conn, steps, n, n - 1, res);
    if (settings)
        db__settings_sent(conn, rc);
    return rc;
}

int db_exec_custom(db_conn_t *conn, const db_stmt_t *stmt, const char *const *params,
                   PGresult **res)
{
    if (res != NULL)
        *res = NULL;
    if (conn->pg == NULL)
        return db__lost(conn);
    if (db__needs_settings(conn))
        return db__exec_with_settings(
            conn, &(db__step_t){.sql = stmt->sql, .nparams = stmt->nparams, .params = params}, res);
    return db__finish(
        conn, PQexecParams(conn->pg, stmt->sql, stmt->nparams, NULL, params, NULL, NULL, 0), res);
}

/* True when sql starts with word (any case) followed by a non-letter. */
static bool db__starts_with(const char *sql, const char *word)
{
    size_t n = strlen(word);

    while (*sql == ' ' || *sql == '\n' || *sql == '\t')
        sql++;
    return strncasecmp(sql, word, n) == 0 &&
           !((sql[n] >= 'a' && sql[n] <= 'z') || (sql[n] >= 'A' && sql[n] <= 'Z'));
}

int db_exec_simple(db_conn_t *conn, const char *sql)
{
    bool ends = db__starts_with(sql, "COMMIT") || db__starts_with(sql, "ROLLBACK") ||
                db__starts_with(sql, "END") || db__starts_with(sql, "ABORT");
    int rc;

    if (conn->pg == NULL)
        return db__lost(conn);
    if (ends || !db__needs_settings(conn)) {
        rc = db__finish(conn, PQexec(conn->pg, sql), NULL);
        if (ends)
            conn->settings_live = false;
        return rc;
    }
    char bufs[2][24];
    const char *sp[4];

    db__settings_params(conn, bufs, sp);
    if (db__starts_with(sql, "BEGIN") || db__starts_with(sql, "START")) {
        /* The settings belong inside the block BEGIN opens. */
        db__step_t steps[2] = {{.sql = sql}, {.stmt = &db__settings, .params = sp}};
        rc = db__pipeline(conn, steps, 2, 0, NULL);
    } else {
        db__step_t steps[2] = {{.stmt = &db__settings, .params = sp}, {.sql = sql}};
        rc = db__pipeline(conn, steps, 2, 1, NULL);
    }
    db__settings_sent(conn, rc);
    return rc;
}

int db_begin(db_conn_t *conn)
{
    int rc = db_exec_simple(conn, "BEGIN");

    return rc < 0 ? rc : 0;
}

int db_commit(db_conn_t *conn)
{
    PGresult *res = NULL;
    int rc;

    if (conn->pg == NULL)
        return db__lost(conn);
    rc = db__finish(conn, PQexec(conn->pg, "COMMIT"), &res);
    if (rc < 0)
        return rc;
    /* COMMIT of a transaction that already failed succeeds as ROLLBACK. */
    if (strcmp(PQcmdStatus(res), "ROLLBACK") == 0) {
        snprintf(conn->errmsg, sizeof conn->errmsg,
                 "the transaction was rolled back because a statement in it failed");
        snprintf(conn->sqlstate, sizeof conn->sqlstate, "25P02");
        conn->constraint[0] = '\0';
        rc = ERR_ABORTED;
    } else {
        rc = 0;
    }
    PQclear(res);
    return rc;
}

void db_rollback(db_conn_t *conn)
{
    PGTransactionStatusType ts;
    PGresult *res;

    if (conn->pg == NULL)
        return;
    ts = PQtransactionStatus(conn->pg);
    if (ts != PQTRANS_INTRANS && ts != PQTRANS_INERROR)
        return;
    /* Keep the message of the error that led here: report the rollback's own
     * failure only through the connection being closed. */
    res = PQexec(conn->pg, "ROLLBACK");
    conn->settings_live = false;
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        db__mark_broken(conn);
    PQclear(res);
}

const char *db_errmsg(const db_conn_t *conn)
{
    return conn->errmsg;
}

const char *db_sqlstate(const db_conn_t *conn)
{
    return conn->sqlstate;
}

const char *db_constraint(const db_conn_t *conn)
{
    return conn->constraint;
}

PGconn *db_pgconn(db_conn_t *conn)
{
    return conn->pg;
}
