/* Every SQL statement of the identity service, and the conversion of rows
 * into messages. Times travel as microseconds since the epoch in both
 * directions (exact, unlike float seconds). */
#include "identity.h"

#include "onceiot/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define US(col) "(extract(epoch FROM " col ") * 1000000)::bigint"
#define USER_COLS                                                                                                        \
    "id, username, email, full_name, role, is_active, is_superuser, organization_id, " US("create"                       \
                                                                                          "d_at") " AS created_us, " US( \
        "updated_at") " AS updated_us, " US("last_login_at") " AS last_login_us, " US("erased_at") " AS erased_us"
#define KEY_COLS                                                                                   \
    "k.id, k.user_id, k.name, k.description, array_to_string(k.scopes, ',') AS scopes_csv, "       \
    "k.key_prefix, k.usage_count, "                                                                \
    "(k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())) AS is_active, " US( \
        "k.expires_at") " AS expires_us, " US("k.created_at") " AS created_us, " US("k.last_used_" \
                                                                                    "at") " AS "   \
                                                                                          "last_"  \
                                                                                          "used_"  \
                                                                                          "us"
#define FROM_US(n) "('epoch'::timestamptz + " n "::bigint * interval '1 microsecond')"

static const db_stmt_t identity__user_insert = {
    "identity_user_insert",
    "INSERT INTO users (username, email, password_hash, full_name, role, organization_id) "
    "VALUES ($1, $2, $3, $4, $5, $6) RETURNING " USER_COLS,
    6};
static const db_stmt_t identity__user_get = {"identity_user_get",
                                             "SELECT " USER_COLS " FROM users WHERE id = $1", 1};
static const db_stmt_t identity__user_list = {
    "identity_user_list",
    "SELECT " USER_COLS " FROM users WHERE id > $1 "
    "AND ($2::bigint IS NULL OR organization_id = $2) AND ($3::text IS NULL OR role = $3) "
    "AND ($4::boolean IS NULL OR is_active = $4) ORDER BY id LIMIT $5",
    5};
/* Deactivation and a role change refuse every token issued so far.
 * token_not_before is clock_timestamp() at the row update, taken after this
 * statement holds the row lock: a login that read the old role updated the
 * row, and took its token's issue time, before it released that lock, so its
 * token is strictly older and refused (tokens carry milliseconds; the
 * gateway refuses iat <= not_before). */
static const db_stmt_t identity__user_update = {
    "identity_user_update",
    "UPDATE users SET full_name = CASE WHEN $2::boolean THEN $3 ELSE full_name END, "
    "email = CASE WHEN $4::boolean THEN $5 ELSE email END, "
    "role = CASE WHEN $6::boolean THEN $7 ELSE role END, "
    "is_active = CASE WHEN $8::boolean THEN $9::boolean ELSE is_active END, "
    "token_not_before = CASE WHEN ($8::boolean AND NOT $9::boolean) OR "
    "($6::boolean AND $7 IS DISTINCT FROM role) THEN clock_timestamp() "
    "ELSE token_not_before END "
    "WHERE id = $1 RETURNING " USER_COLS,
    9};
/* EraseUser in one statement: the tombstone, the user's keys revoked with
 * their names cleared, its login failures (by username) and the stored
 * answers of idempotent requests that hold its data (made by it, or a
 * CreateUser/UpdateUser answer holding its username or email, or a
 * CreateApiKey answer holding one of its keys' names) deleted. The
 * tombstone's password hash matches no password; token_not_before stops
 * its tokens. No row: not there, or erased already. */
static const db_stmt_t identity__user_erase = {
    "identity_user_erase",
    "WITH old AS (SELECT id AS old_id, username AS old_username, email AS old_email FROM users "
    "WHERE id = $1 AND erased_at IS NULL FOR UPDATE), "
    "answers AS (DELETE FROM request_ids r USING old WHERE r.caller = 'user:' || old_id "
    "OR ((r.method LIKE '%/CreateUser' OR r.method LIKE '%/UpdateUser') "
    "AND (position(convert_to(old_username, 'UTF8') IN r.response) > 0 "
    "OR position(convert_to(old_email, 'UTF8') IN r.response) > 0)) "
    "OR (r.method LIKE '%/CreateApiKey' AND EXISTS (SELECT 1 FROM api_keys k "
    "WHERE k.user_id = old_id AND position(convert_to(k.name, 'UTF8') IN r.response) > 0)) "
    "RETURNING 1), "
    "keys AS (UPDATE api_keys k SET revoked_at = coalesce(k.revoked_at, now()), "
    "name = 'erased', description = '' FROM old WHERE k.user_id = old_id RETURNING 1), "
    "failures AS (DELETE FROM login_failures f USING old WHERE f.username = old_username "
    "RETURNING 1) "
    "UPDATE users SET username = 'erased-' || id, email = 'erased-' || id || '@erased.invalid', "
    "full_name = '', password_hash = '!erased', is_active = false, "
    "token_not_before = clock_timestamp(), erased_at = now() "
    "FROM old WHERE id = old_id RETURNING " USER_COLS,
    1};
static const db_stmt_t identity__user_set_password = {
    "identity_user_set_password",
    "UPDATE users SET password_hash = $2, token_not_before = clock_timestamp() "
    "WHERE id = $1",
    2};
static const db_stmt_t identity__user_password = {
    "identity_user_password", "SELECT password_hash FROM users WHERE id = $1", 1};
static const db_stmt_t identity__login_lookup = {
    "identity_login_lookup", "SELECT id, is_active, password_hash FROM users WHERE username = $1",
    1};
static const db_stmt_t identity__login_locked = {
    "identity_login_locked",
    "SELECT coalesce(locked_until > now(), false) AS locked FROM login_failures "
    "WHERE username = $1 AND client_address = $2",
    2};
/* 3 failures of one username from one client address: 1 s, then doubling,
 * at most 15 minutes. Another address is not held back. */
static const db_stmt_t identity__login_failed = {
    "identity_login_failed",
    "INSERT INTO login_failures AS f (username, client_address, failures) VALUES ($1, $2, 1) "
    "ON CONFLICT (username, client_address) DO UPDATE SET failures = f.failures + 1, updated_at = "
    "now(), "
    "locked_until = CASE WHEN f.failures + 1 >= 3 THEN now() + least(interval '1 second' * "
    "power(2, least(f.failures + 1 - 3, 20)), interval '15 minutes') END",
    2};
static const db_stmt_t identity__login_succeeded = {
    "identity_login_succeeded",
    "WITH cleared AS (DELETE FROM login_failures WHERE username = $2 AND client_address = $4) "
    "UPDATE users SET last_login_at = now(), password_hash = coalesce($3, password_hash) "
    "WHERE id = $1 RETURNING " USER_COLS
    ", floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint AS issued_ms",
    4};
static const db_stmt_t identity__revocations = {
    "identity_revocations",
    "SELECT id, floor(extract(epoch FROM token_not_before) * 1000)::bigint AS not_before_ms "
    "FROM users "
    "WHERE token_not_before > now() - $1::bigint * interval '1 second' ORDER BY id",
    1};
static const db_stmt_t identity__revoked_keys = {
    "identity_revoked_keys",
    "SELECT id FROM api_keys WHERE revoked_at > now() - $1::bigint * interval '1 second' "
    "ORDER BY id",
    1};
static const db_stmt_t identity__key_insert = {
    "identity_key_insert",
    "INSERT INTO api_keys AS k (user_id, key_hash, key_prefix, name, description, scopes, "
    "expires_at) VALUES ($1, $2::bytea, $3, $4, $5, $6::text[], " FROM_US(
        "$7") ") "
              "RETURNING " KEY_COLS,
    7};
static const db_stmt_t identity__key_get = {
    "identity_key_get",
    "SELECT " KEY_COLS
    ", u.organization_id AS owner_org, u.is_superuser AS owner_su FROM api_keys k "
    "JOIN users u ON u.id = k.user_id WHERE k.id = $1",
    1};
static const db_stmt_t identity__key_list = {
    "identity_key_list",
    "SELECT " KEY_COLS " FROM api_keys k WHERE k.user_id = $1 AND k.id > $2 ORDER BY k.id "
    "LIMIT $3",
    3};
static const db_stmt_t identity__key_revoke = {
    "identity_key_revoke",
    "UPDATE api_keys k SET revoked_at = coalesce(k.revoked_at, now()) WHERE k.id = $1 "
    "RETURNING " KEY_COLS,
    1};
static const db_stmt_t identity__key_authenticate = {
    "identity_key_authenticate",
    "SELECT k.id AS key_id, k.user_id, array_to_string(k.scopes, ',') AS scopes_csv, "
    "floor(extract(epoch FROM k.expires_at))::bigint AS expires_s, u.username, "
    "u.organization_id, u.role, u.is_superuser FROM api_keys k JOIN users u ON u.id = k.user_id "
    "WHERE k.key_hash = $1::bytea AND k.revoked_at IS NULL "
    "AND (k.expires_at IS NULL OR k.expires_at > now()) AND u.is_active",
    1};
static const db_stmt_t identity__usage_flush = {
    "identity_usage_flush",
    "UPDATE api_keys k SET usage_count = k.usage_count + v.n, "
    "last_used_at = greatest(k.last_used_at, v.at) "
    "FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[]) AS v(id, n, at) "
    "WHERE k.id = v.id",
    3};
static const db_stmt_t identity__bootstrap_lock = {
    "identity_bootstrap_lock",
    "SELECT pg_advisory_xact_lock(hashtextextended('onceiot.identity.bootstrap', 0))", 0};
static const db_stmt_t identity__bootstrap_empty = {
    "identity_bootstrap_empty", "SELECT NOT EXISTS (SELECT 1 FROM users) AS empty", 0};
static const db_stmt_t identity__bootstrap_admin = {
    "identity_bootstrap_admin",
    "INSERT INTO users (username, email, password_hash, full_name, role, is_superuser, "
    "organization_id) VALUES ($1, $2, $3, 'Bootstrap administrator', 'admin', true, 1) "
    "RETURNING id",
    3};
static const db_stmt_t identity__bootstrap_key = {
    "identity_bootstrap_key",
    "INSERT INTO api_keys (user_id, key_hash, key_prefix, name, description, scopes) "
    "VALUES ($1, $2::bytea, $3, 'bootstrap', 'created at the first start', '{admin}')",
    3};

/* ---- helpers ---- */

static char *identity__i64(arena_t *a, int64_t v)
{
    return arena_printf(a, "%lld", (long long)v);
}

static char *identity__bytea(arena_t *a, const uint8_t hash[32])
{
    char *s = arena_alloc(a, 2 + 64 + 1);
    s[0] = '\\';
    s[1] = 'x';
    sodium_bin2hex(s + 2, 65, hash, 32);
    return s;
}

void identity_timestamp(arena_t *a, int64_t us, Google__Protobuf__Timestamp **out)
{
    *out = NULL;
    if (us == 0)
        return;
    Google__Protobuf__Timestamp *t = arena_alloc(a, sizeof(*t));
    google__protobuf__timestamp__init(t);
    t->seconds = us / 1000000;
    t->nanos = (int32_t)(us % 1000000) * 1000;
    if (t->nanos < 0) {
        t->seconds--;
        t->nanos += 1000000000;
    }
    *out = t;
}

static char *identity__col(arena_t *a, const PGresult *res, int r, const char *col)
{
    const char *v = db_get(res, r, col);
    return arena_strdup(a, v ? v : "");
}

static identity_user_t *identity__user_row(arena_t *a, const PGresult *res, int r)
{
    identity_user_t *u = arena_alloc(a, sizeof(*u));
    onceiot__identity__v1__user__init(u);
    u->id = db_get_int(res, r, "id", 0);
    u->username = identity__col(a, res, r, "username");
    u->email = identity__col(a, res, r, "email");
    u->full_name = identity__col(a, res, r, "full_name");
    u->role = identity_role_parse(db_get(res, r, "role"));
    u->is_active = db_get_bool(res, r, "is_active");
    u->is_superuser = db_get_bool(res, r, "is_superuser");
    u->organization_id = db_get_int(res, r, "organization_id", 0);
    identity_timestamp(a, db_get_int(res, r, "created_us", 0), &u->created_at);
    identity_timestamp(a, db_get_int(res, r, "updated_us", 0), &u->updated_at);
    identity_timestamp(a, db_get_int(res, r, "last_login_us", 0), &u->last_login_at);
    identity_timestamp(a, db_get_int(res, r, "erased_us", 0), &u->erased_at);
    return u;
}

/* Splits "a,b,c" (scopes never contain commas) into an arena array. */
static void identity__scopes(arena_t *a, const char *csv, char ***out, size_t *n)
{
    *n = 0;
    *out = NULL;
    if (!csv || !*csv)
        return;
    size_t count = 1;
    for (const char *p = csv; *p; p++)
        count += *p == ',';
    *out = arena_alloc(a, count * sizeof(char *));
    const char *start = csv;
    for (const char *p = csv;; p++) {
        if (*p == ',' || *p == '\0') {
            (*out)[(*n)++] = arena_strndup(a, start, (size_t)(p - start));
            if (*p == '\0')
                break;
            start = p + 1;
        }
    }
}

static identity_apikey_t *identity__key_row(arena_t *a, const PGresult *res, int r)
{
    identity_apikey_t *k = arena_alloc(a, sizeof(*k));
    onceiot__identity__v1__api_key__init(k);
    k->id = db_get_int(res, r, "id", 0);
    k->user_id = db_get_int(res, r, "user_id", 0);
    k->name = identity__col(a, res, r, "name");
    k->description = identity__col(a, res, r, "description");
    identity__scopes(a, db_get(res, r, "scopes_csv"), &k->scopes, &k->n_scopes);
    k->prefix = identity__col(a, res, r, "key_prefix");
    k->is_active = db_get_bool(res, r, "is_active");
    k->usage_count = db_get_int(res, r, "usage_count", 0);
    identity_timestamp(a, db_get_int(res, r, "expires_us", 0), &k->expires_at);
    identity_timestamp(a, db_get_int(res, r, "created_us", 0), &k->created_at);
    identity_timestamp(a, db_get_int(res, r, "last_used_us", 0), &k->last_used_at);
    return k;
}

/* Runs a statement expected to return at most one row; NOT_FOUND with the
 * given noun when it returns none. */
static int identity__one_or_status(rpc_call_t *call, const db_stmt_t *stmt,
                                   const char *const *params, const char *noun, int64_t id,
                                   PGresult **res)
{
    int rc = svc_exec_or_status(call, stmt, params, res);
    if (rc < 0)
        return rc;
    if (PQntuples(*res) == 0) {
        PQclear(*res);
        *res = NULL;
        return rpc_fail(call, ERR_NOT_FOUND, "no %s %lld", noun, (long long)id);
    }
    return 0;
}

/* ---- users ---- */

int identity_store_user_insert_or_status(rpc_call_t *call, const char *username, const char *email,
                                         const char *hash, const char *full_name,
                                         identity_role_t role, int64_t org, identity_user_t **out)
{
    arena_t *a = rpc_call_arena(call);
    const char *p[] = {
        username, email, hash, full_name, identity_role_name(role), identity__i64(a, org)};
    PGresult *res = NULL;
    db_conn_t *conn = svc_db_or_status(call);
    if (!conn)
        return ERR_UNAVAILABLE;
    int rc = db_exec(conn, &identity__user_insert, p, &res);
    if (rc < 0) {
        if (rc == ERR_ALREADY_EXISTS && strcmp(db_constraint(conn), "users_email_lower_key") == 0)
            return rpc_fail(call, rc, "a user with this email already exists");
        if (rc == ERR_ALREADY_EXISTS)
            return rpc_fail(call, rc, "username \"%s\" is taken", username);
        return svc_db_fail(call, conn, rc);
    }
    *out = identity__user_row(a, res, 0);
    PQclear(res);
    return 0;
}

int identity_store_user_get_or_status(rpc_call_t *call, int64_t id, identity_user_t **out)
{
    arena_t *a = rpc_call_arena(call);
    const char *p[] = {identity__i64(a, id)};
    PGresult *res;
    int rc = identity__one_or_status(call, &identity__user_get, p, "user", id, &res);
    if (rc < 0)
        return rc;
    *out = identity__user_row(a, res, 0);
    PQclear(res);
    return 0;
}

int identity_store_user_erase_or_status(rpc_call_t *call, int64_t id, identity_user_t **out)
{
    arena_t *a = rpc_call_arena(call);
    const char *p[] = {identity__i64(a, id)};
    PGresult *res;
    int rc = svc_exec_or_status(call, &identity__user_erase, p, &res);
    if (rc < 0)
        return rc;
    *out = PQntuples(res) ? identity__user_row(a, res, 0) : NULL;
    PQclear(res);
    return 0;
}

int identity_store_user_list_or_status(rpc_call_t *call, int64_t after_id, int64_t org,
                                       identity_role_t role, int active, int32_t limit,
                                       identity_user_t ***out, size_t *n)
{
    arena_t *a = rpc_call_arena(call);
    const char *p[] = {identity__i64(a, after_id), org ? identity__i64(a, org) : NULL,
                       identity_role_name(role), active < 0 ? NULL : (active ? "true" : "false"),
                       identity__i64(a, limit)};
    PGresult *res;
    int rc = svc_exec_or_status(call, &identity__user_list, p, &res);
    if (rc < 0)
        return rc;
    *n = (size_t)PQntuples(res);
    *out = arena_alloc(a, (*n ? *n : 1) * sizeof(**out));
    for (size_t i = 0; i < *n; i++)
        (*out)[i] = identity__user_row(a, res, (int)i);
    PQclear(res);
    return 0;
}

int identity_store_user_update_or_status(rpc_call_t *call, int64_t id, bool set_full_name,
                                         const char *full_name, bool set_email, const char *email,
                                         bool set_role, identity_role_t role, bool set_active,
                                         bool active, identity_user_t **out)
{
    arena_t *a = rpc_call_arena(call);
    const char *p[] = {identity__i64(a, id),
                       set_full_name ? "true" : "false",
                       full_name,
                       set_email ? "true" : "false",
                       email,
                       set_role ? "true" : "false",
                       set_role ? identity_role_name(role) : NULL,
                       set_active ? "true" : "false",
                       active ? "true" : "false"};
    PGresult *res = NULL;
    db_conn_t *conn = svc_db_or_status(call);
    if (!conn)
        return ERR_UNAVAILABLE;
    int rc = db_exec(conn, &identity__user_update, p, &res);
    if (rc == ERR_ALREADY_EXISTS)
        return rpc_fail(call, rc, "a user with this email already exists");
    if (rc < 0)
        return svc_db_fail(call, conn, rc);
    if (PQntuples(res) == 0) {
        PQclear(res);
        return rpc_fail(call, ERR_NOT_FOUND, "no user %lld", (long long)id);
    }
    *out = identity__user_row(a, res, 0);
    PQclear(res);
    return 0;
}

int identity_store_user_set_password_or_status(rpc_call_t *call, int64_t id, const char *hash)
{
    const char *p[] = {identity__i64(rpc_call_arena(call), id), hash};
    int rc = svc_exec_or_status(call, &identity__user_set_password, p, NULL);
    if (rc == 0)
        return rpc_fail(call, ERR_NOT_FOUND, "no user %lld", (long long)id);
    return rc < 0 ? rc : 0;
}

int identity_store_user_password_or_status(rpc_call_t *call, int64_t id, char **hash)
{
    arena_t *a = rpc_call_arena(call);
    const char *p[] = {identity__i64(a, id)};
    PGresult *res;
    int rc = identity__one_or_status(call, &identity__user_password, p, "user", id, &res);
    if (rc < 0)
        return rc;
    *hash = identity__col(a, res, 0, "password_hash");
    PQclear(res);
    return 0;
}

/* ---- login ---- */

int identity_store_login_lookup_or_status(rpc_call_t *call, const char *username,
                                          identity_login_row_t *out)
{
    const char *p[] = {username};
    PGresult *res;
    memset(out, 0, sizeof(*out));
    int rc = svc_exec_or_status(call, &identity__login_lookup, p, &res);
    if (rc < 0)
        return rc;
    if (PQntuples(res) == 1) {
        out->id = db_get_int(res, 0, "id", 0);
        out->is_active = db_get_bool(res, 0, "is_active");
        out->password_hash = identity__col(rpc_call_arena(call), res, 0, "password_hash");
    }
    PQclear(res);
    return 0;
}

int identity_store_login_locked_or_status(rpc_call_t *call, const char *username,
                                          const char *address)
{
    const char *p[] = {username, address};
    PGresult *res;
    int rc = svc_exec_or_status(call, &identity__login_locked, p, &res);
    if (rc < 0)
        return rc;
    int locked = PQntuples(res) == 1 && db_get_bool(res, 0, "locked");
    PQclear(res);
    return locked;
}

int identity_store_login_failed_or_status(rpc_call_t *call, const char *username,
                                          const char *address)
{
    const char *p[] = {username, address};
    int rc = svc_exec_or_status(call, &identity__login_failed, p, NULL);
    return rc < 0 ? rc : 0;
}

/* Failures of usernames nobody has are kept an hour (they only slow down a
 * guesser, and anyone can make new ones); a real user's streak is forgotten
 * after a week without failures. Locked rows stay until their lock ends. */
static const db_stmt_t identity__login_prune = {
    "identity_login_prune",
    "DELETE FROM login_failures f WHERE (f.locked_until IS NULL OR f.locked_until < now()) "
    "AND (f.updated_at < now() - interval '7 days' OR (f.updated_at < now() - interval '1 hour' "
    "AND NOT EXISTS (SELECT 1 FROM users u WHERE u.username = f.username)))",
    0};

int identity_upkeep(svc_t *svc, db_conn_t *conn)
{
    (void)svc;
    int rc = db_exec(conn, &identity__login_prune, NULL, NULL);
    if (rc > 0)
        log_msg(LOG_INFO, "login_failures_pruned", "%d stale login backoff rows", rc);
    return rc < 0 ? rc : 0;
}

int identity_store_login_succeeded_or_status(rpc_call_t *call, int64_t id, const char *username,
                                             const char *address, const char *new_hash,
                                             identity_user_t **out, int64_t *issued_ms)
{
    arena_t *a = rpc_call_arena(call);
    const char *p[] = {identity__i64(a, id), username, new_hash, address};
    PGresult *res;
    int rc = identity__one_or_status(call, &identity__login_succeeded, p, "user", id, &res);
    if (rc < 0)
        return rc;
    *out = identity__user_row(a, res, 0);
    *issued_ms = db_get_int(res, 0, "issued_ms", 0);
    PQclear(res);
    return 0;
}

int identity_store_revocations_or_status(rpc_call_t *call, long within_s,
                                         Onceiot__Identity__V1__TokenRevocation ***out, size_t *n)
{
    arena_t *a = rpc_call_arena(call);
    const char *p[] = {identity__i64(a, within_s)};
    PGresult *res;
    int rc = svc_exec_or_status(call, &identity__revocations, p, &res);
    if (rc < 0)
        return rc;
    *n = (size_t)PQntuples(res);
    *out = arena_alloc(a, (*n ? *n : 1) * sizeof(**out));
    for (size_t i = 0; i < *n; i++) {
        Onceiot__Identity__V1__TokenRevocation *t = arena_alloc(a, sizeof(*t));
        onceiot__identity__v1__token_revocation__init(t);
        t->user_id = db_get_int(res, (int)i, "id", 0);
        identity_timestamp(a, db_get_int(res, (int)i, "not_before_ms", 0) * 1000, &t->not_before);
        (*out)[i] = t;
    }
    PQclear(res);
    return 0;
}

int identity_store_revoked_keys_or_status(rpc_call_t *call, long within_s, int64_t **out, size_t *n)
{
    arena_t *a = rpc_call_arena(call);
    const char *p[] = {identity__i64(a, within_s)};
    PGresult *res;
    int rc = svc_exec_or_status(call, &identity__revoked_keys, p, &res);
    if (rc < 0)
        return rc;
    *n = (size_t)PQntuples(res);
    *out = arena_alloc(a, (*n ? *n : 1) * sizeof(**out));
    for (size_t i = 0; i < *n; i++)
        (*out)[i] = db_get_int(res, (int)i, "id", 0);
    PQclear(res);
    return 0;
}

/* ---- API keys ---- */

static char *identity__text_array(arena_t *a, char **items, size_t n)
{
    /* Scopes are validated to [a-z_:], so quoting each is enough. */
    size_t len = 3;
    for (size_t i = 0; i < n; i++)
        len += strlen(items[i]) + 3;
    char *s = arena_alloc(a, len);
    size_t at = 0;
    s[at++] = '{';
    for (size_t i = 0; i < n; i++)
        at += (size_t)snprintf(s + at, len - at, "%s\"%s\"", i ? "," : "", items[i]);
    s[at++] = '}';
    s[at] = '\0';
    return s;
}

int identity_store_key_insert_or_status(rpc_call_t *call, int64_t user_id, const uint8_t hash[32],
                                        const char *prefix, const char *name,
                                        const char *description, char **scopes, size_t n_scopes,
                                        int64_t expires_us, identity_apikey_t **out)
{
    arena_t *a = rpc_call_arena(call);
    const char *p[] = {identity__i64(a, user_id),
                       identity__bytea(a, hash),
                       prefix,
                       name,
                       description,
                       identity__text_array(a, scopes, n_scopes),
                       expires_us ? identity__i64(a, expires_us) : NULL};
    PGresult *res;
    int rc = svc_exec_or_status(call, &identity__key_insert, p, &res);
    if (rc < 0)
        return rc;
    *out = identity__key_row(a, res, 0);
    PQclear(res);
    return 0;
}

int identity_store_key_get_or_status(rpc_call_t *call, int64_t id, identity_apikey_t **out,
                                     int64_t *owner_org, bool *owner_superuser)
{
    arena_t *a = rpc_call_arena(call);
    const char *p[] = {identity__i64(a, id)};
    PGresult *res;
    int rc = identity__one_or_status(call, &identity__key_get, p, "API key", id, &res);
    if (rc < 0)
        return rc;
    *out = identity__key_row(a, res, 0);
    *owner_org = db_get_int(res, 0, "owner_org", 0);
    *owner_superuser = db_get_bool(res, 0, "owner_su");
    PQclear(res);
    return 0;
}

int identity_store_key_list_or_status(rpc_call_t *call, int64_t user_id, int64_t after_id,
                                      int32_t limit, identity_apikey_t ***out, size_t *n)
{
    arena_t *a = rpc_call_arena(call);
    const char *p[] = {identity__i64(a, user_id), identity__i64(a, after_id),
                       identity__i64(a, limit)};
    PGresult *res;
    int rc = svc_exec_or_status(call, &identity__key_list, p, &res);
    if (rc < 0)
        return rc;
    *n = (size_t)PQntuples(res);
    *out = arena_alloc(a, (*n ? *n : 1) * sizeof(**out));
    for (size_t i = 0; i < *n; i++)
        (*out)[i] = identity__key_row(a, res, (int)i);
    PQclear(res);
    return 0;
}

int identity_store_key_revoke_or_status(rpc_call_t *call, int64_t id, identity_apikey_t **out)
{
    arena_t *a = rpc_call_arena(call);
    const char *p[] = {identity__i64(a, id)};
    PGresult *res;
    int rc = identity__one_or_status(call, &identity__key_revoke, p, "API key", id, &res);
    if (rc < 0)
        return rc;
    *out = identity__key_row(a, res, 0);
    PQclear(res);
    return 0;
}

int identity_store_key_authenticate_or_status(rpc_call_t *call, const uint8_t hash[32],
                                              identity_auth_t *out)
{
    arena_t *a = rpc_call_arena(call);
    const char *p[] = {identity__bytea(a, hash)};
    PGresult *res;
    int rc = svc_exec_or_status(call, &identity__key_authenticate, p, &res);
    if (rc < 0)
        return rc;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return 0;
    }
    memset(out, 0, sizeof(*out));
    out->key_id = db_get_int(res, 0, "key_id", 0);
    out->user_id = db_get_int(res, 0, "user_id", 0);
    snprintf(out->username, sizeof(out->username), "%s", db_get(res, 0, "username"));
    out->organization_id = db_get_int(res, 0, "organization_id", 0);
    out->role = identity_role_parse(db_get(res, 0, "role"));
    out->is_superuser = db_get_bool(res, 0, "is_superuser");
    out->expires_at = db_get_int(res, 0, "expires_s", 0);
    identity__scopes(a, db_get(res, 0, "scopes_csv"), &out->scopes, &out->n_scopes);
    PQclear(res);
    return 1;
}

/* ---- outside calls: bootstrap and usage ---- */

/* Writes the secret to path, readable by the owner only, replacing any old
 * file. */
/* Writes a secret to a new or truncated file of mode 0600, refusing a link. */
static int identity__write_key_file(const char *path, const char *secret)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return ERR_IO;
    size_t len = strlen(secret);
    int rc = 0;
    if (fchmod(fd, 0600) != 0 || write(fd, secret, len) != (ssize_t)len || fsync(fd) != 0)
        rc = ERR_IO;
    if (close(fd) != 0)
        rc = ERR_IO;
    return rc;
}

int identity_store_bootstrap(identity_t *id, db_pool_t *pool, const char *username,
                             const char *email, const char *password, const char *password_file,
                             const char *key_file)
{
    db_conn_t *conn = NULL;
    PGresult *res = NULL;
    char hash[crypto_pwhash_STRBYTES];
    int rc = db_pool_acquire(pool, 10000, &conn);
    if (rc < 0)
        goto out;
    db_set_scope(conn, 0, true); /* internal: is any user there at all? */
    /* The advisory lock makes replicas starting together create one admin:
     * the second waits, then finds the table no longer empty. */
    if ((rc = db_begin(conn)) < 0 ||
        (rc = db_exec(conn, &identity__bootstrap_lock, NULL, NULL)) < 0 ||
        (rc = db_exec(conn, &identity__bootstrap_empty, NULL, &res)) < 0)
        goto out;
    bool empty = db_get_bool(res, 0, "empty");
    PQclear(res);
    res = NULL;
    if (!empty) {
        db_rollback(conn);
        goto out;
    }
    if ((rc = identity_password_hash(password, hash)) < 0)
        goto out;
    const char *p_admin[] = {username, email, hash};
    if ((rc = db_exec(conn, &identity__bootstrap_admin, p_admin, &res)) < 0)
        goto out;
    char admin_id[24];
    snprintf(admin_id, sizeof(admin_id), "%s", db_get(res, 0, "id"));
    PQclear(res);
    res = NULL;
    if (key_file && *key_file) {
        char secret[IDENTITY_SECRET_LEN + 1], hex[2 + 64 + 1] = "\\x";
        uint8_t key_hash[32];
        identity_apikey_generate(secret);
        identity_apikey_hash(id->pepper, secret, key_hash);
        sodium_bin2hex(hex + 2, 65, key_hash, 32);
        char prefix[IDENTITY_KEY_PREFIX_LEN + 1];
        memcpy(prefix, secret, IDENTITY_KEY_PREFIX_LEN);
        prefix[IDENTITY_KEY_PREFIX_LEN] = '\0';
        const char *p_key[] = {admin_id, hex, prefix};
        if ((rc = db_exec(conn, &identity__bootstrap_key, p_key, NULL)) < 0)
            goto out;
        /* Written before the commit: if the file cannot be written, no key
         * exists that nobody knows. */
        rc = identity__write_key_file(key_file, secret);
        sodium_memzero(secret, sizeof(secret));
        if (rc < 0) {
            log_msg(LOG_ERROR, "bootstrap_key_file", "cannot write %s: %s", key_file,
                    strerror(errno));
            goto out;
        }
    }
    /* A generated password goes to its file, never to the log; written
     * before the commit for the same reason as the key. */
    if (password_file && (rc = identity__write_key_file(password_file, password)) < 0) {
        log_msg(LOG_ERROR, "bootstrap_password_file", "cannot write %s: %s", password_file,
                strerror(errno));
        goto out;
    }
    rc = db_commit(conn);
    if (rc == 0) {
        log_rec_t r;
        log_begin(&r, LOG_WARN, "bootstrap_admin");
        log_str(&r, "username", username);
        log_int(&r, "user_id", atoll(admin_id));
        log_bool(&r, "key_file_written", key_file && *key_file);
        if (password_file)
            log_str(&r, "password_file", password_file);
        log_end(&r);
    }
out:
    if (rc < 0 && conn)
        log_msg(LOG_ERROR, "bootstrap_failed", "%s", db_errmsg(conn));
    sodium_memzero(hash, sizeof(hash));
    PQclear(res);
    if (conn) {
        db_rollback(conn);
        db_pool_release(pool, conn);
    }
    return rc;
}

int identity_store_usage_flush(db_conn_t *conn, const identity_usage_t *rows, size_t n)
{
    /* Three parallel array literals: ids, counts, times. */
    size_t cap = 2 + n * 48;
    char *ids = mem_alloc(cap), *counts = mem_alloc(cap), *times = mem_alloc(cap);
    size_t i_at = 0, c_at = 0, t_at = 0;
    for (size_t i = 0; i < n; i++) {
        const char *sep = i ? "," : "{";
        time_t s = (time_t)(rows[i].last_ms / 1000);
        struct tm tm;
        gmtime_r(&s, &tm);
        char ts[32];
        strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);
        i_at += (size_t)snprintf(ids + i_at, cap - i_at, "%s%lld", sep, (long long)rows[i].key_id);
        c_at += (size_t)snprintf(counts + c_at, cap - c_at, "%s%lld", sep, (long long)rows[i].n);
        t_at += (size_t)snprintf(times + t_at, cap - t_at, "%s\"%s.%03d+00\"", sep, ts,
                                 (int)(rows[i].last_ms % 1000));
    }
    snprintf(ids + i_at, cap - i_at, "}");
    snprintf(counts + c_at, cap - c_at, "}");
    snprintf(times + t_at, cap - t_at, "}");
    const char *p[] = {ids, counts, times};
    int rc = db_exec(conn, &identity__usage_flush, p, NULL);
    mem_free(ids);
    mem_free(counts);
    mem_free(times);
    return rc < 0 ? rc : 0;
}
