/* Private declarations shared by the identity service's files.
 *
 * main.c owns the identity_t state (keys, pepper, caches); handlers_*.c
 * implement the RPCs; store.c holds every SQL statement; validate.c checks
 * fields before the database sees them; passwords.c hashes and verifies
 * passwords; apikeys.c makes and hashes API key secrets; authcache.c keeps
 * the Authenticate cache and the batched usage counters. */
#ifndef ONCEIOT_IDENTITY_H
#define ONCEIOT_IDENTITY_H

#include "identity/v1/identity.pb-c.h"
#include "onceiot/requestid.h"
#include "onceiot/svc.h"
#include "onceiot/token.h"

#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef Onceiot__Identity__V1__User identity_user_t;
typedef Onceiot__Identity__V1__ApiKey identity_apikey_t;
typedef Onceiot__Common__V1__Role identity_role_t;

#define IDENTITY_CACHE_SECONDS   5     /* how long an Authenticate answer may be reused */
#define IDENTITY_CACHE_SLOTS     16384 /* direct-mapped Authenticate cache */
#define IDENTITY_SECRET_PREFIX   "sk_live_"
#define IDENTITY_SECRET_CHARS    43 /* base62 characters after the prefix (256 bits) */
#define IDENTITY_SECRET_LEN      (8 + IDENTITY_SECRET_CHARS)
#define IDENTITY_KEY_PREFIX_LEN  16 /* "sk_live_" + 8 characters shown in listings */
#define IDENTITY_REFRESH_SECONDS 10 /* suggested GetVerificationKeys polling interval */

/* ---- authcache.c ---- */

/* What an API key stands for, as Authenticate returns it. */
typedef struct identity_auth {
    int64_t key_id;
    int64_t user_id;
    char username[64];
    int64_t organization_id;
    identity_role_t role;
    bool is_superuser;
    int64_t expires_at; /* unix seconds; 0: never */
    char **scopes;      /* owned by whoever holds the struct */
    size_t n_scopes;
} identity_auth_t;

typedef struct identity_cache_slot {
    uint8_t hash[32];
    int64_t valid_until_ms; /* monotonic; 0: empty */
    identity_auth_t auth;
} identity_cache_slot_t;

typedef struct identity_usage {
    int64_t key_id; /* 0: empty slot */
    int64_t n;
    int64_t last_ms; /* unix milliseconds of the latest use */
} identity_usage_t;

typedef struct identity_cache {
    pthread_mutex_t mu;
    identity_cache_slot_t *slots; /* IDENTITY_CACHE_SLOTS */
    identity_usage_t *usage;      /* open addressing on key_id */
    size_t usage_cap, usage_len;
    db_pool_t *pool;
    pthread_t flusher;
    pthread_mutex_t flush_mu;
    pthread_cond_t flush_cv;
    bool flusher_running;
    bool stopping;
} identity_cache_t;

void identity_cache_init(identity_cache_t *c, db_pool_t *pool);
/* Starts the thread that writes usage counts once a second. */
void identity_cache_start(identity_cache_t *c);
/* Stops the thread, writes what is left, frees everything. */
void identity_cache_fini(identity_cache_t *c);
/* Copies a fresh entry for hash into *out (scopes in the arena). */
bool identity_cache_get(identity_cache_t *c, const uint8_t hash[32], arena_t *a,
                        identity_auth_t *out);
/* Remembers auth for IDENTITY_CACHE_SECONDS (scopes are copied). */
void identity_cache_put(identity_cache_t *c, const uint8_t hash[32], const identity_auth_t *auth);
/* Forgets entries of one key (key_id > 0) or of every key of one user. */
void identity_cache_forget(identity_cache_t *c, int64_t key_id, int64_t user_id);
/* Counts one use of a key; written by the flusher. */
void identity_cache_count(identity_cache_t *c, int64_t key_id);
/* Writes the counted uses now (the flusher's work; also used by tests of the
 * service through its fini). Returns 0 or an ERR_* code; counts are kept for
 * the next try on failure. */
int identity_cache_flush(identity_cache_t *c);

/* ---- the service state (main.c) ---- */

typedef struct identity {
    uint8_t sign_sk[64];                     /* Ed25519, libsodium form */
    token_key_t verify_key;                  /* kid + public key */
    uint8_t pepper[32];                      /* BLAKE2b key for API key hashes */
    long token_ttl_s;                        /* login token lifetime */
    char dummy_hash[crypto_pwhash_STRBYTES]; /* verified for unknown users */
    identity_cache_t cache;
    long hash_slots;       /* ONCEIOT_PASSWORD_HASH_SLOTS: concurrent Argon2 calls */
    atomic_long hash_busy; /* slots in use */
} identity_t;

identity_t *identity_of(rpc_call_t *call);

/* ---- passwords.c ---- */

/* Hashes a password with Argon2id (interactive limits). */
int identity_password_hash(const char *password,
                           char out[crypto_pwhash_STRBYTES]) ONCEIOT_MUSTCHECK;
/* True when password matches hash (Argon2id, or a legacy $2a$/$2b$/$2y$
 * bcrypt hash through libcrypt), in constant time for a given hash.
 * *needs_rehash is set when the hash should be replaced by a fresh Argon2id
 * one (legacy, or weaker parameters). */
bool identity_password_verify(const char *password, const char *hash, bool *needs_rehash);

/* Takes one of the identity_t's hash_slots for the rest of the call (given
 * back when the handler returns), so that password hashing never occupies
 * every worker: Authenticate and GetVerificationKeys always find one. When
 * all are taken it sets RESOURCE_EXHAUSTED (with a retry hint) at once. */
int identity_password_slot_or_status(rpc_call_t *call) ONCEIOT_MUSTCHECK;

/* ---- apikeys.c ---- */

/* Makes a new secret: "sk_live_" + 43 base62 characters (NUL-terminated). */
void identity_apikey_generate(char secret[IDENTITY_SECRET_LEN + 1]);
/* True when s has the shape of a secret (so garbage costs no hash). */
bool identity_apikey_well_formed(const char *s);
/* The keyed BLAKE2b-256 of a secret. */
void identity_apikey_hash(const uint8_t pepper[32], const char *secret, uint8_t out[32]);

/* ---- validate.c: each records rpc_violation()s; the caller then calls
 * rpc_check_violations ---- */

void identity_validate_username(rpc_call_t *call, const char *field, const char *username);
void identity_validate_email(rpc_call_t *call, const char *field, const char *email);
void identity_validate_password(rpc_call_t *call, const char *field, const char *password);
void identity_validate_full_name(rpc_call_t *call, const char *field, const char *full_name);
/* Role must be one of readonly/user/admin (not UNSPECIFIED). */
void identity_validate_role(rpc_call_t *call, const char *field, identity_role_t role);
/* 0 becomes 50; negative or above 1000 is a violation. */
int32_t identity_validate_page_size(rpc_call_t *call, const char *field, int32_t page_size);
void identity_validate_scopes(rpc_call_t *call, const char *field, char **scopes, size_t n);
const char *identity_role_name(identity_role_t role);
identity_role_t identity_role_parse(const char *s);
/* A page token: base64url of the last id and a fingerprint of the filters
 * it was made for. Decoding a token made for other filters is a violation. */
char *identity_page_token(arena_t *a, int64_t last_id, const char *filters);
bool identity_page_token_parse(rpc_call_t *call, const char *field, const char *token,
                               const char *filters, int64_t *last_id);

/* ---- store.c: every statement. Functions ending in _or_status have set the
 * call's status when they fail. ---- */

typedef struct identity_login_row {
    int64_t id;
    bool is_active;
    char *password_hash; /* in the arena */
} identity_login_row_t;

int identity_store_user_insert_or_status(rpc_call_t *call, const char *username, const char *email,
                                         const char *hash, const char *full_name,
                                         identity_role_t role, int64_t org,
                                         identity_user_t **out) ONCEIOT_MUSTCHECK;
/* NOT_FOUND ("no user <id>") when absent. */
int identity_store_user_get_or_status(rpc_call_t *call, int64_t id,
                                      identity_user_t **out) ONCEIOT_MUSTCHECK;
/* EraseUser's one statement (store.c); *out NULL when there is no such user
 * or it is erased already. */
int identity_store_user_erase_or_status(rpc_call_t *call, int64_t id,
                                        identity_user_t **out) ONCEIOT_MUSTCHECK;
/* org 0: any; role UNSPECIFIED: any; active -1: any. */
int identity_store_user_list_or_status(rpc_call_t *call, int64_t after_id, int64_t org,
                                       identity_role_t role, int active, int32_t limit,
                                       identity_user_t ***out, size_t *n) ONCEIOT_MUSTCHECK;
/* Updates the fields whose set_* flag is true; deactivation also revokes
 * the user's login tokens. */
int identity_store_user_update_or_status(rpc_call_t *call, int64_t id, bool set_full_name,
                                         const char *full_name, bool set_email, const char *email,
                                         bool set_role, identity_role_t role, bool set_active,
                                         bool active, identity_user_t **out) ONCEIOT_MUSTCHECK;
/* Sets a new hash and refuses the user's older login tokens. */
int identity_store_user_set_password_or_status(rpc_call_t *call, int64_t id,
                                               const char *hash) ONCEIOT_MUSTCHECK;
int identity_store_user_password_or_status(rpc_call_t *call, int64_t id,
                                           char **hash) ONCEIOT_MUSTCHECK;
/* Login: the row for a username; 0 with out->id = 0 when there is none. */
int identity_store_login_lookup_or_status(rpc_call_t *call, const char *username,
                                          identity_login_row_t *out) ONCEIOT_MUSTCHECK;
/* True (1) when the username is in its backoff window for this client
 * address ("" when unknown), 0 otherwise. */
int identity_store_login_locked_or_status(rpc_call_t *call, const char *username,
                                          const char *address) ONCEIOT_MUSTCHECK;
/* Counts a wrong password (Login, or ChangePassword's old password). */
int identity_store_login_failed_or_status(rpc_call_t *call, const char *username,
                                          const char *address) ONCEIOT_MUSTCHECK;
/* The hourly upkeep (svc_def_t.upkeep): prunes stale login backoff rows. */
int identity_upkeep(svc_t *svc, db_conn_t *conn) ONCEIOT_MUSTCHECK;
/* Clears the address's backoff, records last_login_at and (if new_hash) the
 * upgraded hash; returns the user and the database's clock at the row's
 * update (unix ms), which is the token's issue time. */
int identity_store_login_succeeded_or_status(rpc_call_t *call, int64_t id, const char *username,
                                             const char *address, const char *new_hash,
                                             identity_user_t **out,
                                             int64_t *issued_ms) ONCEIOT_MUSTCHECK;
int identity_store_revocations_or_status(rpc_call_t *call, long within_s,
                                         Onceiot__Identity__V1__TokenRevocation ***out,
                                         size_t *n) ONCEIOT_MUSTCHECK;

/* Ids of API keys revoked in the last within_s seconds. */
int identity_store_revoked_keys_or_status(rpc_call_t *call, long within_s, int64_t **out,
                                          size_t *n) ONCEIOT_MUSTCHECK;
/* expires_us 0: never. */
int identity_store_key_insert_or_status(rpc_call_t *call, int64_t user_id, const uint8_t hash[32],
                                        const char *prefix, const char *name,
                                        const char *description, char **scopes, size_t n_scopes,
                                        int64_t expires_us,
                                        identity_apikey_t **out) ONCEIOT_MUSTCHECK;
/* The key, its owner's organization and whether the owner is a superuser;
 * NOT_FOUND when absent. */
int identity_store_key_get_or_status(rpc_call_t *call, int64_t id, identity_apikey_t **out,
                                     int64_t *owner_org, bool *owner_superuser) ONCEIOT_MUSTCHECK;
int identity_store_key_list_or_status(rpc_call_t *call, int64_t user_id, int64_t after_id,
                                      int32_t limit, identity_apikey_t ***out,
                                      size_t *n) ONCEIOT_MUSTCHECK;
int identity_store_key_revoke_or_status(rpc_call_t *call, int64_t id,
                                        identity_apikey_t **out) ONCEIOT_MUSTCHECK;
/* Authenticate's lookup: 1 with *out filled (scopes in the arena) when the
 * hash names a usable key (not revoked, not expired, active owner), 0 when
 * not. */
int identity_store_key_authenticate_or_status(rpc_call_t *call, const uint8_t hash[32],
                                              identity_auth_t *out) ONCEIOT_MUSTCHECK;

/* Bootstrap at start (not in a call): creates the first admin, and an
 * "admin" API key written to key_file when one is given, if and only if the
 * users table is empty; logs "bootstrap_admin" when it did. A generated
 * password is written to password_file (mode 0600, before the commit) and
 * never logged; password_file is NULL when the password was configured. */
int identity_store_bootstrap(identity_t *id, db_pool_t *pool, const char *username,
                             const char *email, const char *password, const char *password_file,
                             const char *key_file) ONCEIOT_MUSTCHECK;
/* One UPDATE for a batch of usage counts. */
int identity_store_usage_flush(db_conn_t *conn, const identity_usage_t *rows,
                               size_t n) ONCEIOT_MUSTCHECK;

/* ---- tenant rules (handlers_users.c) ---- */

/* The client address a principal carries ("" without one). */
const char *identity_client_address(const principal_t *p);
/* The verified caller, or NULL with UNAUTHENTICATED set. */
const principal_t *identity_caller_or_status(rpc_call_t *call);
/* True when caller may see a user of org with id user_id: superusers all,
 * admins their organization, others themselves. */
bool identity_can_see(const principal_t *p, int64_t user_id, int64_t org);
/* identity_can_see, and a superuser target only for superusers: what the
 * caller may act on (its keys, its password). */
bool identity_can_manage(const principal_t *p, int64_t user_id, int64_t org, bool superuser);
void identity_timestamp(arena_t *a, int64_t us, Google__Protobuf__Timestamp **out);

/* Handlers. */
int identity_create_user(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp);
int identity_get_user(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp);
int identity_list_users(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp);
int identity_update_user(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp);
int identity_deactivate_user(rpc_call_t *call, const ProtobufCMessage *req,
                             ProtobufCMessage **resp);
int identity_erase_user(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp);
int identity_change_password(rpc_call_t *call, const ProtobufCMessage *req,
                             ProtobufCMessage **resp);
int identity_login(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp);
int identity_authenticate(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp);
int identity_get_verification_keys(rpc_call_t *call, const ProtobufCMessage *req,
                                   ProtobufCMessage **resp);
int identity_create_api_key(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp);
int identity_list_api_keys(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp);
int identity_get_api_key(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp);
int identity_revoke_api_key(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp);

#endif
