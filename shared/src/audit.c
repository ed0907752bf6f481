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
    /* Changes recorded by the database itself: statement-level triggers on
     * the tables a service tracks (audit_track) write one record per
     * statement and organization, in the statement's transaction (appended
     * to the chain by the runtime's chainer soon after), for the public call
     * the runtime names in onceiot.call (svc.c); internal work (no call) is
     * not recorded.
     * Column names, never values: a summary must hold no secret and nothing
     * an erasure would have to take back. */
    {"audit_0002_tracking",
     "-- A row's name: the value of key's column, or of its two columns\n"
     "-- ('a,b'), '/' between (one expression, so the planner inlines it).\n"
     "CREATE FUNCTION audit_key(j jsonb, key text) RETURNS text\n"
     "LANGUAGE sql IMMUTABLE AS $$\n"
     "    SELECT CASE WHEN strpos(key, ',') = 0 THEN j ->> key\n"
     "                ELSE (j ->> split_part(key, ',', 1)) || '/' ||\n"
     "                     (j ->> split_part(key, ',', 2)) END\n"
     "$$;\n"
     "-- Inserted or deleted rows by organization: how many, the first's name\n"
     "-- and the names of the first ones.\n"
     "CREATE FUNCTION audit_groups(rows jsonb[], key text, org_col text, caller_org bigint,\n"
     "    OUT org bigint, OUT n bigint, OUT first_id text, OUT ids text) RETURNS SETOF record\n"
     "LANGUAGE sql IMMUTABLE AS $$\n"
     "    SELECT coalesce((j ->> org_col)::bigint, caller_org), count(*),\n"
     "           min(audit_key(j, key)),\n"
     "           left(string_agg(audit_key(j, key), ',' ORDER BY audit_key(j, key)), 900)\n"
     "    FROM unnest(rows) AS j GROUP BY 1\n"
     "$$;\n"
     "CREATE FUNCTION audit_changes() RETURNS trigger\n"
     "LANGUAGE plpgsql SET search_path FROM CURRENT AS $$\n"
     "DECLARE\n"
     "    c jsonb := nullif(current_setting('onceiot.call', true), '')::jsonb;\n"
     "    key text := TG_ARGV[0];\n"
     "    org_col text := nullif(TG_ARGV[1], '');\n"
     "    g record;\n"
     "    rows jsonb[];\n"
     "BEGIN\n"
     "    IF c IS NULL THEN\n"
     "        RETURN NULL;\n"
     "    END IF;\n"
     "    -- Each branch names only the transition table its trigger has (a\n"
     "    -- statement is planned when it first runs).\n"
     "    IF TG_OP = 'INSERT' THEN\n"
     "        rows := ARRAY(SELECT to_jsonb(x) FROM new_rows x);\n"
     "    ELSE\n"
     "        rows := ARRAY(SELECT to_jsonb(x) FROM old_rows x);\n"
     "    END IF;\n"
     "    FOR g IN SELECT * FROM audit_groups(rows, key, org_col, (c ->> 'o')::bigint) LOOP\n"
     "        PERFORM audit_changes_record(c, g.org, g.n, g.first_id, g.ids, NULL, TG_OP,\n"
     "                                     TG_TABLE_NAME);\n"
     "    END LOOP;\n"
     "    RETURN NULL;\n"
     "END\n"
     "$$;\n"
     "CREATE FUNCTION audit_updates() RETURNS trigger\n"
     "LANGUAGE plpgsql SET search_path FROM CURRENT AS $$\n"
     "DECLARE\n"
     "    c jsonb := nullif(current_setting('onceiot.call', true), '')::jsonb;\n"
     "    key text := TG_ARGV[0];\n"
     "    org_col text := nullif(TG_ARGV[1], '');\n"
     "    g record;\n"
     "BEGIN\n"
     "    IF c IS NULL THEN\n"
     "        RETURN NULL;\n"
     "    END IF;\n"
     "    FOR g IN\n"
     "        WITH o AS MATERIALIZED (SELECT audit_key(j, key) AS k, j\n"
     "                                FROM (SELECT to_jsonb(x) AS j FROM old_rows x) r),\n"
     "             n AS MATERIALIZED (SELECT audit_key(j, key) AS k, j\n"
     "                                FROM (SELECT to_jsonb(x) AS j FROM new_rows x) r),\n"
     "             ch AS (SELECT n.k, n.j, e.key AS col FROM o JOIN n ON o.k = n.k,\n"
     "                    LATERAL jsonb_each(n.j) e\n"
     "                    WHERE e.value IS DISTINCT FROM o.j -> e.key AND e.key <> 'updated_at')\n"
     "        SELECT coalesce((j ->> org_col)::bigint, (c ->> 'o')::bigint) AS org,\n"
     "               count(DISTINCT k) AS n, min(k) AS first_id,\n"
     "               left(string_agg(DISTINCT k, ','), 900) AS ids,\n"
     "               string_agg(DISTINCT col, ',') AS cols\n"
     "        FROM ch GROUP BY 1\n"
     "    LOOP\n"
     "        PERFORM audit_changes_record(c, g.org, g.n, g.first_id, g.ids, g.cols, TG_OP,\n"
     "                                     TG_TABLE_NAME);\n"
     "    END LOOP;\n"
     "    RETURN NULL;\n"
     "END\n"
     "$$;\n"
     "-- A statement's records, committed with the change they record, wait\n"
     "-- here until the runtime's chainer (audit_chain_pending) appends them to\n"
     "-- the hash chain: writers never wait for each other on the chain head.\n"
     "CREATE TABLE audit_pending (\n"
     "    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n"
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
     "    summary         text\n"
     ");\n"
     "CREATE FUNCTION audit_changes_record(c jsonb, org bigint, n bigint, first_id text,\n"
     "                                     ids text, cols text, op text, tbl text) RETURNS void\n"
     "LANGUAGE sql SET search_path FROM CURRENT AS $$\n"
     "    INSERT INTO audit_pending (user_id, organization_id, credential, method, resource_type,\n"
     "                               resource_id, request_id, trace_id, peer, summary)\n"
     "    VALUES (nullif((c ->> 'u')::bigint, 0), nullif(org, 0), c ->> 'c',\n"
     "            coalesce(c ->> 'm', '?'), tbl,\n"
     "            CASE WHEN n = 1 THEN first_id ELSE n || ' rows' END,\n"
     "            c ->> 'r', c ->> 't', c ->> 'p',\n"
     "            left(lower(op) || coalesce(' ' || cols, '') ||\n"
     "                 CASE WHEN n > 1 THEN ' (' || ids || ')' ELSE '' END, 1000))\n"
     "$$;\n"
     "-- Appends up to batch pending records to the chain, oldest first, in one\n"
     "-- transaction (the chain head is locked, so one chainer at a time);\n"
     "-- returns how many.\n"
     "CREATE FUNCTION audit_chain_pending(batch int) RETURNS int\n"
     "LANGUAGE plpgsql SET search_path FROM CURRENT AS $$\n"
     "DECLARE\n"
     "    moved int;\n"
     "BEGIN\n"
     "    PERFORM 1 FROM audit_chain FOR UPDATE;\n"
     "    WITH picked AS (\n"
     "        DELETE FROM audit_pending WHERE id IN\n"
     "            (SELECT id FROM audit_pending ORDER BY id LIMIT batch)\n"
     "        RETURNING *)\n"
     "    INSERT INTO audit_records (at, user_id, organization_id, credential, method,\n"
     "                               resource_type, resource_id, request_id, trace_id, peer,\n"
     "                               summary)\n"
     "    SELECT at, user_id, organization_id, credential, method, resource_type, resource_id,\n"
     "           request_id, trace_id, peer, summary FROM picked ORDER BY id;\n"
     "    GET DIAGNOSTICS moved = ROW_COUNT;\n"
     "    RETURN moved;\n"
     "END\n"
     "$$;\n"
     "-- Records every public call's inserts, updates (that change a column\n"
     "-- other than updated_at) and deletes of tbl, whose rows are named by\n"
     "-- the columns in key (one, or two as 'a,b') and belong to the organization in\n"
     "-- org_col ('': the caller's organization).\n"
     "CREATE FUNCTION audit_track(tbl regclass, key text, org_col text DEFAULT '')\n"
     "RETURNS void LANGUAGE plpgsql AS $$\n"
     "BEGIN\n"
     "    IF cardinality(string_to_array(key, ',')) > 2 THEN\n"
     "        RAISE EXCEPTION 'audit_track: a key of one or two columns, not %', key;\n"
     "    END IF;\n"
     "    EXECUTE format('CREATE TRIGGER audit_inserts AFTER INSERT ON %s REFERENCING NEW TABLE '\n"
     "                   'AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION audit_changes(%L, %L)',\n"
     "                   tbl, key, org_col);\n"
     "    EXECUTE format('CREATE TRIGGER audit_deletes AFTER DELETE ON %s REFERENCING OLD TABLE '\n"
     "                   'AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION audit_changes(%L, %L)',\n"
     "                   tbl, key, org_col);\n"
     "    EXECUTE format('CREATE TRIGGER audit_updates AFTER UPDATE ON %s REFERENCING OLD TABLE '\n"
     "                   'AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT '\n"
     "                   'EXECUTE FUNCTION audit_updates(%L, %L)', tbl, key, org_col);\n"
     "END\n"
     "$$;\n"},
    /* Row-level security as on every organization's table (docs/schema.md):
     * a tenant reads its own organization's records, a superuser all; any
     * scope appends (the tracking triggers write the changed rows'
     * organization, which the writer's scope allowed it to change). */
    {"audit_0003_row_level_security",
     "ALTER TABLE audit_records ENABLE ROW LEVEL SECURITY;\n"
     "ALTER TABLE audit_records FORCE ROW LEVEL SECURITY;\n"
     "CREATE POLICY audit_records_superuser ON audit_records FOR SELECT\n"
     "    USING (current_setting('onceiot.superuser', true) = 'true');\n"
     "CREATE POLICY audit_records_tenant ON audit_records FOR SELECT\n"
     "    USING (organization_id = nullif(current_setting('onceiot.org_id', true), '')::bigint);\n"
     "CREATE POLICY audit_records_append ON audit_records FOR INSERT WITH CHECK (true);\n"
     "-- An UPDATE or DELETE reaches the triggers that refuse it (a clear error\n"
     "-- rather than zero rows changed).\n"
     "CREATE POLICY audit_records_refused_update ON audit_records FOR UPDATE USING (true);\n"
     "CREATE POLICY audit_records_refused_delete ON audit_records FOR DELETE USING (true);\n"
     "ALTER TABLE audit_pending ENABLE ROW LEVEL SECURITY;\n"
     "ALTER TABLE audit_pending FORCE ROW LEVEL SECURITY;\n"
     "-- Rows live only inside their writer's transaction (moved at its commit).\n"
     "CREATE POLICY audit_pending_writer ON audit_pending USING (true) WITH CHECK (true);\n"},
    /* Retention: whole months past AUDIT_KEEP_MONTHS are dropped, oldest
     * first, and the anchor keeps the seq and hash of the newest record
     * dropped, where audit_verify then starts the chain. The anchor only
     * moves forward, so dropping recent months (or the anchor) is still
     * found: a gap after the anchor, or a chain that does not start at it. */
    {"audit_0004_retention",
     "CREATE TABLE audit_anchor (\n"
     "    one  boolean PRIMARY KEY DEFAULT true CHECK (one),\n"
     "    seq  bigint NOT NULL,\n"
     "    hash bytea NOT NULL\n"
     ");\n"
     "INSERT INTO audit_anchor (seq, hash) VALUES (0, ''::bytea);\n"
     "CREATE FUNCTION audit_anchor_forward() RETURNS trigger\n"
     "LANGUAGE plpgsql AS $$\n"
     "BEGIN\n"
     "    IF NEW.seq < OLD.seq THEN\n"
     "        RAISE EXCEPTION 'the audit anchor only moves forward'\n"
     "            USING ERRCODE = 'insufficient_privilege';\n"
     "    END IF;\n"
     "    RETURN NEW;\n"
     "END\n"
     "$$;\n"
     "CREATE TRIGGER audit_anchor_forward BEFORE UPDATE ON audit_anchor\n"
     "    FOR EACH ROW EXECUTE FUNCTION audit_anchor_forward();\n"
     "CREATE TRIGGER audit_anchor_kept BEFORE DELETE ON audit_anchor\n"
     "    FOR EACH ROW EXECUTE FUNCTION audit_refuse();\n"
     "CREATE TRIGGER audit_anchor_no_truncate BEFORE TRUNCATE ON audit_anchor\n"
     "    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse();\n"
     "REVOKE DELETE, TRUNCATE ON audit_anchor FROM CURRENT_USER;\n"
     "-- Drops the monthly partitions that ended more than keep_months months\n"
     "-- ago, oldest first, while no record left in another partition is older\n"
     "-- in the chain; returns how many. One caller at a time per schema.\n"
     "CREATE FUNCTION audit_drop_expired(keep_months int) RETURNS int\n"
     "LANGUAGE plpgsql SET search_path FROM CURRENT AS $$\n"
     "DECLARE\n"
     "    part record;\n"
     "    top record;\n"
     "    dropped int := 0;\n"
     "    scope text := current_setting('onceiot.superuser', true);\n"
     "BEGIN\n"
     "    -- Every organization's records decide what may go; the caller's scope\n"
     "    -- is put back before returning.\n"
     "    PERFORM set_config('onceiot.superuser', 'true', true);\n"
     "    PERFORM pg_advisory_xact_lock(hashtext('audit_drop_expired ' || current_schema()));\n"
     "    FOR part IN\n"
     "        SELECT c.oid, c.relname, to_date(substr(c.relname, 15), 'YYYYMM') AS month\n"
     "        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid\n"
     "        WHERE i.inhparent = 'audit_records'::regclass\n"
     "          AND c.relname ~ '^audit_records_[0-9]{6}$'\n"
     "        ORDER BY 3\n"
     "    LOOP\n"
     "        EXIT WHEN part.month + make_interval(months => keep_months + 1) > now();\n"
     "        EXECUTE format('SELECT seq, hash FROM %I ORDER BY seq DESC LIMIT 1', part.relname)\n"
     "            INTO top;\n"
     "        IF top.seq IS NOT NULL THEN\n"
     "            EXIT WHEN EXISTS (SELECT 1 FROM audit_records r\n"
     "                              WHERE r.seq < top.seq AND r.tableoid <> part.oid);\n"
     "            UPDATE audit_anchor SET seq = top.seq, hash = top.hash;\n"
     "        END IF;\n"
     "        EXECUTE format('DROP TABLE %I', part.relname);\n"
     "        dropped := dropped + 1;\n"
     "    END LOOP;\n"
     "    PERFORM set_config('onceiot.superuser', coalesce(scope, ''), true);\n"
     "    RETURN dropped;\n"
     "END\n"
     "$$;\n"},
    /* Inserts and deletes of a tracked table are recorded by a trigger
     * function of its own, which audit_track makes from the table's key and
     * organization columns: it reads those columns of the transition table
     * instead of turning every row into jsonb as audit_changes does (250-450
     * ms of a 10000-row insert into sims, 30-45 ms with its own function).
     * The records are the same. Updates keep audit_updates, which compares
     * whole rows. The tables tracked before get their functions here. */
    {"audit_0005_table_functions",
     "-- A column's value in a row's name, as an expression of the transition\n"
     "-- table's row x: the text audit_key read from the row's jsonb (the column's\n"
     "-- own text for these types, where the two are the same; else the jsonb's).\n"
     "CREATE FUNCTION audit_key_expr(tbl regclass, col text) RETURNS text\n"
     "LANGUAGE plpgsql STABLE AS $$\n"
     "DECLARE\n"
     "    typ regtype := (SELECT atttypid FROM pg_attribute\n"
     "                    WHERE attrelid = tbl AND attname = col AND attnum > 0 AND NOT "
     "attisdropped);\n"
     "BEGIN\n"
     "    IF typ IS NULL THEN\n"
     "        RAISE EXCEPTION 'audit_track: % has no column %', tbl, col;\n"
     "    END IF;\n"
     "    IF typ IN ('text'::regtype, 'varchar'::regtype, 'int2'::regtype, 'int4'::regtype,\n"
     "               'int8'::regtype) THEN\n"
     "        RETURN format('x.%I::text', col);\n"
     "    END IF;\n"
     "    RETURN format('(to_jsonb(x.%I) #>> ''{}'')', col);\n"
     "END\n"
     "$$;\n"
     "-- Makes tbl's own trigger function for its inserts and deletes, and those\n"
     "-- two triggers: it records what audit_changes(key, org_col) does, reading\n"
     "-- only the key's and the organization's columns of the transition table.\n"
     "CREATE FUNCTION audit_track_rows(tbl regclass, key text, org_col text) RETURNS void\n"
     "LANGUAGE plpgsql AS $$\n"
     "DECLARE\n"
     "    fn text := format('%I', 'audit_of_' || (SELECT relname FROM pg_class WHERE oid = tbl));\n"
     "    cols text[] := string_to_array(key, ',');\n"
     "    k text := audit_key_expr(tbl, cols[1]);\n"
     "    o text := 'NULL::bigint';\n"
     "    groups text;\n"
     "    each text;\n"
     "BEGIN\n"
     "    IF cardinality(cols) = 2 THEN\n"
     "        k := format('%s || ''/'' || %s', k, audit_key_expr(tbl, cols[2]));\n"
     "    END IF;\n"
     "    IF org_col <> '' THEN\n"
     "        o := format('(%s)::bigint', audit_key_expr(tbl, org_col));\n"
     "    END IF;\n"
     "    -- By organization: how many, the first's name and the first names.\n"
     "    groups := format('SELECT coalesce(o, (c ->> ''o'')::bigint) AS org, count(*) AS n, '\n"
     "                     'min(k) AS first_id, left(string_agg(k, '','' ORDER BY k), 900) AS ids "
     "'\n"
     "                     'FROM (SELECT %s AS o, %s AS k FROM %%s x) r GROUP BY 1 ORDER BY 1', o, "
     "k);\n"
     "    each := 'FOR g IN %s LOOP\n"
     "            PERFORM audit_changes_record(c, g.org, g.n, g.first_id, g.ids, NULL, TG_OP,\n"
     "                                         TG_TABLE_NAME);\n"
     "        END LOOP;';\n"
     "    -- Each branch names only the transition table its trigger has.\n"
     "    EXECUTE format('CREATE OR REPLACE FUNCTION %s() RETURNS trigger\n"
     "LANGUAGE plpgsql SET search_path FROM CURRENT AS $f$\n"
     "DECLARE\n"
     "    c jsonb := nullif(current_setting(''onceiot.call'', true), '''')::jsonb;\n"
     "    g record;\n"
     "BEGIN\n"
     "    IF c IS NULL THEN\n"
     "        RETURN NULL;\n"
     "    END IF;\n"
     "    IF TG_OP = ''INSERT'' THEN\n"
     "        %s\n"
     "    ELSE\n"
     "        %s\n"
     "    END IF;\n"
     "    RETURN NULL;\n"
     "END\n"
     "$f$', fn, format(each, format(groups, 'new_rows')), format(each, format(groups, "
     "'old_rows')));\n"
     "    EXECUTE format('DROP TRIGGER IF EXISTS audit_inserts ON %s', tbl);\n"
     "    EXECUTE format('DROP TRIGGER IF EXISTS audit_deletes ON %s', tbl);\n"
     "    EXECUTE format('CREATE TRIGGER audit_inserts AFTER INSERT ON %s REFERENCING NEW TABLE '\n"
     "                   'AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION %s()', tbl, fn);\n"
     "    EXECUTE format('CREATE TRIGGER audit_deletes AFTER DELETE ON %s REFERENCING OLD TABLE '\n"
     "                   'AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION %s()', tbl, fn);\n"
     "END\n"
     "$$;\n"
     "CREATE OR REPLACE FUNCTION audit_track(tbl regclass, key text, org_col text DEFAULT '')\n"
     "RETURNS void LANGUAGE plpgsql AS $$\n"
     "BEGIN\n"
     "    IF cardinality(string_to_array(key, ',')) > 2 THEN\n"
     "        RAISE EXCEPTION 'audit_track: a key of one or two columns, not %', key;\n"
     "    END IF;\n"
     "    PERFORM audit_track_rows(tbl, key, org_col);\n"
     "    EXECUTE format('CREATE TRIGGER audit_updates AFTER UPDATE ON %s REFERENCING OLD TABLE '\n"
     "                   'AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT '\n"
     "                   'EXECUTE FUNCTION audit_updates(%L, %L)', tbl, key, org_col);\n"
     "END\n"
     "$$;\n"
     "-- The tables tracked before, with their insert trigger's arguments.\n"
     "SELECT audit_track_rows(t.tgrelid::regclass, a[1], a[2])\n"
     "FROM pg_trigger t, string_to_array(encode(t.tgargs, 'escape'), '\\000') AS a\n"
     "WHERE t.tgname = 'audit_inserts' AND t.tgfoid = 'audit_changes'::regproc AND t.tgparentid = "
     "0;\n"},
};

static const db_stmt_t write_stmt = {
    "audit_write",
    "INSERT INTO audit_records (user_id, organization_id, credential, method, resource_type, "
    "resource_id, request_id, trace_id, peer, summary) "
    "VALUES (NULLIF($1::bigint, 0), NULLIF($2::bigint, 0), $3, $4, $5, $6, $7, $8, $9, "
    "left($10, 1000))",
    10};

/* The record's seq is the head's: the insert moved it, and the transaction
 * holds it until commit. (RETURNING would need the record to be readable in
 * the connection's scope.) */
static const db_stmt_t written_seq_stmt = {"audit_written_seq", "SELECT seq FROM audit_chain", 0};

int64_t audit_write(db_conn_t *conn, const audit_record_t *r)
{
    char user[24], org[24];
    snprintf(user, sizeof(user), "%" PRId64, r->user_id);
    snprintf(org, sizeof(org), "%" PRId64, r->organization_id);
    const char *params[] = {
        user,           org,           r->credential, r->method, r->resource_type,
        r->resource_id, r->request_id, r->trace_id,   r->peer,   r->summary};
    PGresult *res = NULL;
    int rc = db_exec(conn, &write_stmt, params, NULL);
    if (rc < 0)
        return rc;
    if ((rc = db_exec(conn, &written_seq_stmt, NULL, &res)) < 0)
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

static const db_stmt_t anchor_stmt = {
    "audit_anchor", "SELECT seq, encode(hash, 'hex') AS hash FROM audit_anchor", 0};

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
    /* The whole chain, every organization's records (row-level security). */
    db_set_scope(conn, 0, true);
    memset(out, 0, sizeof(*out));
    /* From the anchor: the newest record retention dropped (0, '' if none). */
    PGresult *anchor = NULL;
    int rc = db_exec(conn, &anchor_stmt, NULL, &anchor);
    if (rc < 0)
        return rc;
    int64_t last = rc == 1 ? db_get_int(anchor, 0, "seq", 0) : 0;
    char last_hash[65] = "";
    snprintf(last_hash, sizeof(last_hash), "%s", rc == 1 ? db_get(anchor, 0, "hash") : "");
    PQclear(anchor);
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

static const db_stmt_t chain_stmt = {"audit_chain_pending",
                                     "SELECT audit_chain_pending($1::int) AS moved", 1};

int audit_chain_pending(db_conn_t *conn, int batch)
{
    char n[16];
    snprintf(n, sizeof(n), "%d", batch);
    const char *params[] = {n};
    PGresult *res = NULL;
    db_set_scope(conn, 0, true);
    int rc = db_exec(conn, &chain_stmt, params, &res);
    if (rc < 0)
        return rc;
    int moved = (int)db_get_int(res, 0, "moved", 0);
    PQclear(res);
    return moved;
}

static const db_stmt_t ensure_stmt = {"audit_ensure", "SELECT audit_partitions_ensure()", 0};

static const db_stmt_t drop_stmt = {"audit_drop_expired",
                                    "SELECT audit_drop_expired($1::int) AS dropped", 1};

int audit_upkeep(db_conn_t *conn)
{
    int rc = db_exec(conn, &ensure_stmt, NULL, NULL);
    if (rc < 0)
        return rc;
    char keep[16];
    snprintf(keep, sizeof(keep), "%d", AUDIT_KEEP_MONTHS);
    const char *params[] = {keep};
    PGresult *res = NULL;
    if ((rc = db_exec(conn, &drop_stmt, params, &res)) < 0)
        return rc;
    int dropped = (int)db_get_int(res, 0, "dropped", 0);
    PQclear(res);
    return dropped;
}
