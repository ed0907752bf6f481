/* Request ids (AIP-155): see onceiot/requestid.h. */
#include "onceiot/requestid.h"

#include "onceiot/log.h"
#include "onceiot/svc.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

/* response is NULL only inside the claiming transaction: a committed row
 * always has its answer (requestid_record_or_status runs before COMMIT). */
const migrate_embedded_t requestid_migrations[REQUESTID_N_MIGRATIONS] = {
    {"requestid_0001_table",
     "CREATE TABLE request_ids (\n"
     "    caller       text NOT NULL,\n"
     "    method       text NOT NULL,\n"
     "    request_id   text NOT NULL CHECK (char_length(request_id) BETWEEN 1 AND 128),\n"
     "    request_hash bytea NOT NULL,\n"
     "    response     bytea,\n"
     "    created_at   timestamptz NOT NULL DEFAULT now(),\n"
     "    PRIMARY KEY (caller, method, request_id)\n"
     ");\n"
     "CREATE INDEX request_ids_created ON request_ids (created_at);\n"},
};

static const db_stmt_t claim_stmt = {
    "requestid_claim",
    "INSERT INTO request_ids (caller, method, request_id, request_hash) "
    "VALUES ($1, $2, $3, decode($4, 'hex')) ON CONFLICT DO NOTHING",
    4};
static const db_stmt_t first_stmt = {
    "requestid_first",
    "SELECT encode(request_hash, 'hex') AS hash, encode(response, 'base64') AS response "
    "FROM request_ids WHERE caller = $1 AND method = $2 AND request_id = $3",
    3};
static const db_stmt_t record_stmt = {"requestid_record",
                                      "UPDATE request_ids SET response = decode($4, 'base64') "
                                      "WHERE caller = $1 AND method = $2 AND request_id = $3",
                                      4};
/* In slices, so that one prune never holds many row locks at once. */
static const db_stmt_t prune_stmt = {
    "requestid_prune",
    "DELETE FROM request_ids WHERE ctid = ANY (ARRAY(SELECT ctid FROM request_ids "
    "WHERE created_at < now() - $1::int * interval '1 hour' LIMIT 10000))",
    1};

#define HASH_LEN crypto_generichash_BYTES /* 32 */

static bool requestid__valid(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > REQUESTID_MAX)
        return false;
    return strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-") == n;
}

/* The sealing key of this service: derived from its principal secret, so
 * every replica has it and nothing else needs configuring. */
static int requestid__key(rpc_call_t *call,
                          uint8_t key[crypto_aead_xchacha20poly1305_ietf_KEYBYTES])
{
    const principal_key_t *secret = svc_principal_key(rpc_call_ctx(call));
    if (!secret)
        return rpc_fail(call, ERR_INTERNAL, "request ids need the service's principal secret");
    static const char ctx[] = "onceiot-request-ids";
    crypto_generichash(key, crypto_aead_xchacha20poly1305_ietf_KEYBYTES, (const uint8_t *)ctx,
                       sizeof(ctx) - 1, secret->bytes, sizeof(secret->bytes));
    return 0;
}

/* Additional data of a sealed answer: the row's key, so an answer cannot be
 * moved to another row. */
static const char *requestid__ad(arena_t *a, const requestid_t *rq, size_t *len)
{
    const char *ad = arena_printf(a, "%s\n%s\n%s", rq->caller, rq->method, rq->id);
    *len = strlen(ad);
    return ad;
}

static void *requestid__pack(arena_t *a, const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = arena_alloc(a, *len + 1);
    protobuf_c_message_pack(m, buf);
    return buf;
}

/* The hash of a request, in hex (65 bytes with the NUL). */
static void requestid__hash(arena_t *a, const ProtobufCMessage *req, char hex[2 * HASH_LEN + 1])
{
    size_t len;
    const uint8_t *bytes = requestid__pack(a, req, &len);
    uint8_t h[HASH_LEN];
    crypto_generichash(h, sizeof(h), bytes, len, NULL, 0);
    sodium_bin2hex(hex, 2 * HASH_LEN + 1, h, sizeof(h));
}

/* Opens a stored answer (base64 of nonce ‖ ciphertext) into a message of the
 * method's response type, in the call's arena. */
static int requestid__open_or_status(rpc_call_t *call, const requestid_t *rq, const char *b64,
                                     ProtobufCMessage **out)
{
    arena_t *a = rpc_call_arena(call);
    const ProtobufCMessageDescriptor *desc = rpc_call_response_descriptor(call);
    uint8_t key[crypto_aead_xchacha20poly1305_ietf_KEYBYTES];
    int rc = requestid__key(call, key);
    if (rc < 0)
        return rc;
    size_t b64_len = strlen(b64);
    uint8_t *sealed = arena_alloc(a, b64_len + 1);
    size_t sealed_len = 0;
    size_t ad_len;
    const char *ad = requestid__ad(a, rq, &ad_len);
    unsigned long long plain_len = 0;
    uint8_t *plain = NULL;
    const size_t nonce_len = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
    if (sodium_base642bin(sealed, b64_len + 1, b64, b64_len, "\n", &sealed_len, NULL,
                          sodium_base64_VARIANT_ORIGINAL) == 0 &&
        sealed_len >= nonce_len + crypto_aead_xchacha20poly1305_ietf_ABYTES) {
        plain = arena_alloc(a, sealed_len + 1);
        if (crypto_aead_xchacha20poly1305_ietf_decrypt(plain, &plain_len, NULL, sealed + nonce_len,
                                                       sealed_len - nonce_len, (const uint8_t *)ad,
                                                       ad_len, sealed, key) != 0)
            plain = NULL;
    }
    sodium_memzero(key, sizeof(key));
    ProtobufCMessage *m =
        plain && desc ? protobuf_c_message_unpack(desc, arena_allocator(a), plain_len, plain)
                      : NULL;
    if (!m) {
        log_msg(LOG_ERROR, "request_id_unreadable",
                "the stored answer of request id %s is unreadable", rq->id);
        return rpc_fail(call, ERR_INTERNAL, "the first answer to request_id %s cannot be read",
                        rq->id);
    }
    *out = m;
    return 0;
}

int requestid_claim_or_status(rpc_call_t *call, db_conn_t *conn, const char *request_id,
                              const ProtobufCMessage *req, requestid_t *rq,
                              ProtobufCMessage **first)
{
    memset(rq, 0, sizeof(*rq));
    if (first)
        *first = NULL;
    if (!request_id || !*request_id)
        return REQUESTID_NEW;
    if (!requestid__valid(request_id)) {
        rpc_violation(call, "request_id", "must be 1 to %d characters of A-Z a-z 0-9 . _ : -",
                      REQUESTID_MAX);
        return rpc_check_violations(call);
    }
    const principal_t *p = svc_principal_or_status(call);
    if (!p)
        return ERR_UNAUTHENTICATED;
    arena_t *a = rpc_call_arena(call);
    rq->caller = p->user_id > 0 ? arena_printf(a, "user:%lld", (long long)p->user_id)
                                : arena_printf(a, "%s", p->credential ? p->credential : "");
    rq->method = rpc_call_method(call);
    rq->id = request_id;
    char hash[2 * HASH_LEN + 1];
    requestid__hash(a, req, hash);
    const char *claim[] = {rq->caller, rq->method, rq->id, hash};
    int rc = db_exec(conn, &claim_stmt, claim, NULL);
    if (rc < 0)
        return svc_db_fail(call, conn, rc);
    if (rc == 1) {
        rq->active = true;
        return REQUESTID_NEW;
    }
    /* Taken: by a committed attempt (a concurrent one was waited for). */
    PGresult *res = NULL;
    rc = db_exec(conn, &first_stmt, claim, &res);
    if (rc < 0) {
        rc = svc_db_fail(call, conn, rc);
        goto out;
    }
    const char *stored = rc ? db_get(res, 0, "hash") : NULL;
    const char *answer = rc ? db_get(res, 0, "response") : NULL;
    if (!stored || strcmp(stored, hash) != 0) {
        rc = rpc_fail(call, ERR_INVALID_ARGUMENT,
                      "request_id %s was used for a different request; use a new id for a new "
                      "request",
                      rq->id);
        goto out;
    }
    if (!answer) {
        rc = rpc_fail(call, ERR_INTERNAL, "request_id %s has no recorded answer", rq->id);
        goto out;
    }
    if ((rc = requestid__open_or_status(call, rq, answer, first)) == 0)
        rc = REQUESTID_REPLAY;
out:
    PQclear(res);
    return rc;
}

int requestid_record_or_status(rpc_call_t *call, db_conn_t *conn, const requestid_t *rq,
                               const ProtobufCMessage *resp)
{
    if (!rq->active)
        return 0;
    arena_t *a = rpc_call_arena(call);
    uint8_t key[crypto_aead_xchacha20poly1305_ietf_KEYBYTES];
    int rc = requestid__key(call, key);
    if (rc < 0)
        return rc;
    size_t len;
    const uint8_t *plain = requestid__pack(a, resp, &len);
    const size_t nonce_len = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
    size_t sealed_len = nonce_len + len + crypto_aead_xchacha20poly1305_ietf_ABYTES;
    uint8_t *sealed = arena_alloc(a, sealed_len);
    randombytes_buf(sealed, nonce_len);
    size_t ad_len;
    const char *ad = requestid__ad(a, rq, &ad_len);
    unsigned long long clen = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(sealed + nonce_len, &clen, plain, len,
                                               (const uint8_t *)ad, ad_len, NULL, sealed, key);
    sodium_memzero(key, sizeof(key));
    size_t b64_len = sodium_base64_encoded_len(sealed_len, sodium_base64_VARIANT_ORIGINAL);
    char *b64 = arena_alloc(a, b64_len);
    sodium_bin2base64(b64, b64_len, sealed, nonce_len + (size_t)clen,
                      sodium_base64_VARIANT_ORIGINAL);
    const char *params[] = {rq->caller, rq->method, rq->id, b64};
    rc = db_exec(conn, &record_stmt, params, NULL);
    if (rc < 0)
        return svc_db_fail(call, conn, rc);
    return 0;
}

int requestid_begin_or_status(rpc_call_t *call, db_conn_t *conn, const char *request_id,
                              const ProtobufCMessage *req, requestid_t *rq,
                              ProtobufCMessage **first)
{
    if (!conn)
        return ERR_UNAVAILABLE; /* svc_db_or_status set the status */
    int rc = db_begin(conn);
    if (rc < 0)
        return svc_db_fail(call, conn, rc);
    return requestid_claim_or_status(call, conn, request_id, req, rq, first);
}

int requestid_commit_or_status(rpc_call_t *call, db_conn_t *conn, const requestid_t *rq,
                               const ProtobufCMessage *resp)
{
    int rc = requestid_record_or_status(call, conn, rq, resp);
    if (rc < 0)
        return rc;
    if ((rc = db_commit(conn)) < 0)
        return svc_db_fail(call, conn, rc);
    return 0;
}

int requestid_prune(db_conn_t *conn, int keep_hours)
{
    char hours[16];
    snprintf(hours, sizeof(hours), "%d", keep_hours);
    const char *params[] = {hours};
    int total = 0;
    for (int i = 0; i < 100; i++) {
        int rc = db_exec(conn, &prune_stmt, params, NULL);
        if (rc < 0)
            return rc;
        total += rc;
        if (rc < 10000)
            break;
    }
    return total;
}
