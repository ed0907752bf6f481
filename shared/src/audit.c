/* The audit trail (audit.h): the table, its chain and its verification. */
#include "onceiot/audit.h"

#include "onceiot/err.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* The hash covers every column but the hashes themselves, as one canonical
 * text (a jsonb array; the time as integer microseconds, so the session's
 * time zone plays no part). The functions pin the search path they were made
 * with, so a caller's search_path cannot swap the tables they touch. */
const migrate_embedded_t audit_migrations[AUDIT_N_MIGRATIONS] = {
    {"audit_0001_records",
     "CREATE TABLE audit_records (\n"
     "    seq             bigint NOT NULL,\n"
     "    at              timestamptz NOT NULL DEFAULT clock_timestamp(),\n"
     "    user_id         bigint,\n"
     "    organization_id bigint,\n"
     "    credential      text,\n"
     "    method          text NOT NULL,\n"
     "    resource_type   text,\n"
     "    resource_id     text,\n"
     "    request_id      text,\n"
     "    trace_id        text,\n"
     "    peer            text,\n"
     "    summary         text CHECK (char_length(summary) <= 1000),\n"
     "    prev_hash       bytea NOT NULL,\n"
     "    hash            bytea NOT NULL,\n"
     "    PRIMARY KEY (seq, at)\n"
     ") PARTITION BY RANGE (at);\n"
     "CREATE INDEX audit_records_org ON audit_records (organization_id, at, seq);\n"
     "CREATE TABLE audit_records_default PARTITION OF audit_records DEFAULT;\n"
     "CREATE TABLE audit_chain (\n"
     "    one  boolean PRIMARY KEY DEFAULT true CHECK (one),\n"
     "    seq  bigint NOT NULL,\n"
     "    hash bytea NOT NULL\n"
     ");\n"
     "INSERT INTO audit_chain (seq, hash) VALUES (0, ''::bytea);\n"
     "CREATE FUNCTION audit_hash(prev bytea, r audit_records) RETURNS bytea\n"
     "LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$\n"
     "    SELECT sha256(prev || convert_to(jsonb_build_array(r.seq,\n"
     "        (extract(epoch FROM r.at) * 1000000)::bigint, r.user_id, r.organization_id,\n"
     "        r.credential, r.method, r.resource_type, r.resource_id, r.request_id,\n"
     "        r.trace_id, r.peer, r.summary)::text, 'UTF8'))\n"
     "$$;\n"
     "CREATE FUNCTION audit_append() RETURNS trigger\n"
     "LANGUAGE plpgsql SET search_path FROM CURRENT AS $$\n"
     "DECLARE\n"
     "    head audit_chain%ROWTYPE;\n"
     "BEGIN\n"
     "    SELECT * INTO head FROM audit_chain FOR UPDATE;\n"
     "    NEW.seq := head.seq + 1;\n"
     "    NEW.prev_hash := head.hash;\n"
     "    NEW.hash := audit_hash(head.hash, NEW);\n"
     "    UPDATE audit_chain SET seq = NEW.seq, hash = NEW.hash;\n"
     "    RETURN NEW;\n"
     "END\n"
     "$$;\n"
     "CREATE FUNCTION audit_refuse() RETURNS trigger\n"
     "LANGUAGE plpgsql AS $$\n"
     "BEGIN\n"
     "    RAISE EXCEPTION 'audit records are immutable: % refused', TG_OP\n"
     "        USING ERRCODE = 'insufficient_privilege';\n"
     "END\n"
     "$$;\n"
     "CREATE TRIGGER audit_append BEFORE INSERT ON audit_records\n"
     "    FOR EACH ROW EXECUTE FUNCTION audit_append();\n"
     "CREATE TRIGGER audit_immutable BEFORE UPDATE OR DELETE ON audit_records\n"
     "    FOR EACH ROW EXECUTE FUNCTION audit_refuse();\n"
     "CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit_records\n"
     "    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse();\n"
     "CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit_records_default\n"
     "    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse();\n"
     "REVOKE UPDATE, DELETE, TRUNCATE ON audit_records, audit_records_default FROM CURRENT_USER;\n"
     "CREATE FUNCTION audit_partitions_ensure() RETURNS void\n"
     "LANGUAGE plpgsql SET search_path FROM CURRENT AS $$\n"
     "DECLARE\n"
     "    first timestamptz;\n"
     "    name text;\n"
     "BEGIN\n"
     "    FOR i IN 0..2 LOOP\n"
     "        first := date_trunc('month', now(), 'UTC') + make_interval(months => i);\n"
     "        name := 'audit_records_' || to_char(first AT TIME ZONE 'UTC', 'YYYYMM');\n"
     "        CONTINUE WHEN to_regclass(quote_ident(name)) IS NOT NULL;\n"
     "        EXECUTE format('CREATE TABLE %I PARTITION OF audit_records FOR VALUES FROM (%L) TO "
     "(%L)',\n"
     "                       name, first, first + interval '1 month');\n"
     "        EXECUTE format('CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON %I '\n"
     "                       'FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse()', name);\n"
     "        EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON %I FROM CURRENT_USER', name);\n"
     "    END LOOP;\n"
     "END\n"
     "$$;\n"
     "SELECT audit_partitions_ensure();\n"},
};

static const db_stmt_t write_stmt = {
    "audit_write",
    "INSERT INTO audit_records (user_id, organization_id, credential, method, resource_type, "
    "resource_id, request_id, trace_id, peer, summary) "
    "VALUES (NULLIF($1::bigint, 0), NULLIF($2::bigint, 0), $3, $4, $5, $6, $7, $8, $9, "
    "left($10, 1000)) RETURNING seq",
    10};

int64_t audit_write(db_conn_t *conn, const audit_record_t *r)
{
    char user[24], org[24];
    snprintf(user, sizeof(user), "%" PRId64, r->user_id);
    snprintf(org, sizeof(org), "%" PRId64, r->organization_id);
    const char *params[] = {
        user,           org,           r->credential, r->method, r->resource_type,
        r->resource_id, r->request_id, r->trace_id,   r->peer,   r->summary};
    PGresult *res = NULL;
    int rc = db_exec(conn, &write_stmt, params, &res);
    if (rc < 0)
        return rc;
    int64_t seq = db_get_int(res, 0, "seq", 0);
    PQclear(res);
    return seq > 0 ? seq : ERR_INTERNAL;
}

static const db_stmt_t walk_stmt = {
    "audit_walk",
    "SELECT seq, encode(prev_hash, 'hex') AS prev, encode(hash, 'hex') AS hash, "
    "encode(audit_hash(prev_hash, r), 'hex') AS expect "
    "FROM audit_records r WHERE seq > $1 ORDER BY seq LIMIT 5000",
    1};

static const db_stmt_t head_stmt = {"audit_head",
                                    "SELECT seq, encode(hash, 'hex') AS hash FROM audit_chain", 0};

static int audit__broken(audit_verdict_t *out, int64_t seq, const char *why)
{
    out->bad_seq = seq;
    snprintf(out->why, sizeof(out->why), "%s", why);
    return 1;
}

/* Walks in pages of seq, keeping only the previous record's seq and hash. */
int audit_verify(db_conn_t *conn, audit_verdict_t *out)
{
    memset(out, 0, sizeof(*out));
    int64_t last = 0;
    char last_hash[65] = "";
    int rc;
    for (;;) {
        char after[24];
        snprintf(after, sizeof(after), "%" PRId64, last);
        const char *params[] = {after};
        PGresult *res = NULL;
        if ((rc = db_exec(conn, &walk_stmt, params, &res)) < 0)
            return rc;
        int n = rc;
        for (int i = 0; i < n; i++) {
            int64_t seq = db_get_int(res, i, "seq", 0);
            const char *why = NULL;
            if (seq != last + 1)
                why = "a record is missing before this one";
            else if (strcmp(db_get(res, i, "prev"), last_hash) != 0)
                why = "the link to the previous record is broken";
            else if (strcmp(db_get(res, i, "hash"), db_get(res, i, "expect")) != 0)
                why = "the record does not match its hash (altered)";
            if (why) {
                PQclear(res);
                return audit__broken(out, seq != last + 1 ? last + 1 : seq, why);
            }
            last = seq;
            snprintf(last_hash, sizeof(last_hash), "%s", db_get(res, i, "hash"));
            out->checked++;
        }
        PQclear(res);
        if (n < 5000)
            break;
    }
    PGresult *res = NULL;
    if ((rc = db_exec(conn, &head_stmt, NULL, &res)) < 0)
        return rc;
    int64_t head = rc == 1 ? db_get_int(res, 0, "seq", -1) : -1;
    bool same = rc == 1 && strcmp(db_get(res, 0, "hash"), last_hash) == 0;
    PQclear(res);
    if (head != last)
        return audit__broken(out, last + 1,
                             head > last ? "the newest records are missing"
                                         : "the chain head is behind the records");
    if (!same)
        return audit__broken(out, last, "the chain head does not match the newest record");
    return 0;
}

static const db_stmt_t ensure_stmt = {"audit_ensure", "SELECT audit_partitions_ensure()", 0};

int audit_upkeep(db_conn_t *conn)
{
    int rc = db_exec(conn, &ensure_stmt, NULL, NULL);
    return rc < 0 ? rc : 0;
}
