/* onceiot-identity: users, API keys, login tokens and the authentication the
 * gateway relies on. This file wires configuration, keys, the bootstrap admin
 * and the usage flusher; the methods live in handlers_*.c. */
#include "identity.h"

#include "onceiot/config.h"
#include "onceiot/log.h"

#include <stdio.h>
#include <string.h>

static identity_t identity__state;

identity_t *identity_of(rpc_call_t *call)
{
    return svc_state(rpc_call_ctx(call));
}

static int identity__hex32(const char *name, const char *hex, uint8_t out[32])
{
    size_t n = 0;
    if (strlen(hex) != 64 || sodium_hex2bin(out, 32, hex, 64, NULL, &n, NULL) != 0 || n != 32) {
        log_msg(LOG_ERROR, "config_invalid", "%s: must be 64 hex digits (32 random bytes)", name);
        return ERR_CONFIG;
    }
    return 0;
}

static int identity__init(svc_t *svc)
{
    identity_t *id = &identity__state;
    const char *signing_hex = NULL, *pepper_hex = NULL, *admin_user = NULL, *admin_email = NULL,
               *admin_password = NULL, *key_file = NULL, *password_file = NULL;
    const cfg_var_t vars[] = {
        {"ONCEIOT_TOKEN_SIGNING_KEY", CFG_STRING, NULL, true, 0, 0, &signing_hex,
         "64 hex digits: the Ed25519 seed that signs login tokens"},
        {"ONCEIOT_API_KEY_PEPPER", CFG_STRING, NULL, true, 0, 0, &pepper_hex,
         "64 hex digits: the BLAKE2b key of stored API key hashes"},
        {"ONCEIOT_TOKEN_TTL_S", CFG_INT, "900", false, 60, 86400, &id->token_ttl_s,
         "lifetime of login tokens in seconds"},
        {"ONCEIOT_BOOTSTRAP_ADMIN_USERNAME", CFG_STRING, "admin", false, 0, 0, &admin_user,
         "username of the first admin, created on an empty users table"},
        {"ONCEIOT_BOOTSTRAP_ADMIN_EMAIL", CFG_STRING, "admin@onceiot.local", false, 0, 0,
         &admin_email, "email of the first admin"},
        {"ONCEIOT_BOOTSTRAP_ADMIN_PASSWORD", CFG_STRING, NULL, false, 0, 0, &admin_password,
         "password of the first admin; generated when unset"},
        {"ONCEIOT_BOOTSTRAP_PASSWORD_FILE", CFG_STRING, NULL, false, 0, 0, &password_file,
         "where a generated first-admin password is written (mode 0600); default: the key "
         "file's path + \".password\""},
        {"ONCEIOT_PASSWORD_HASH_SLOTS", CFG_INT, "2", false, 1, 64, &id->hash_slots,
         "password hashes (Login, ChangePassword, CreateUser) computed at once; more are "
         "refused with RESOURCE_EXHAUSTED so that API-key checks always find a worker"},
        {"ONCEIOT_BOOTSTRAP_KEY_FILE", CFG_STRING, NULL, false, 0, 0, &key_file,
         "where to write the first admin's API key (mode 0600)"},
    };
    char err[512];
    if (cfg_load(vars, sizeof(vars) / sizeof(vars[0]), err, sizeof(err)) < 0) {
        log_msg(LOG_ERROR, "config_invalid", "%s", err);
        return ERR_CONFIG;
    }
    uint8_t seed[32];
    int rc = identity__hex32("ONCEIOT_TOKEN_SIGNING_KEY", signing_hex, seed);
    if (rc < 0 || (rc = identity__hex32("ONCEIOT_API_KEY_PEPPER", pepper_hex, id->pepper)) < 0)
        return rc;
    crypto_sign_seed_keypair(id->verify_key.public_key, id->sign_sk, seed);
    sodium_memzero(seed, sizeof(seed));
    token_kid(id->verify_key.public_key, id->verify_key.kid);

    /* Unknown usernames are checked against this hash so that they take as
     * long as known ones. */
    char dummy[IDENTITY_SECRET_LEN + 1];
    identity_apikey_generate(dummy);
    rc = identity_password_hash(dummy, id->dummy_hash);
    sodium_memzero(dummy, sizeof(dummy));
    if (rc < 0)
        return rc;

    char generated[25];
    bool generate = !admin_password || !*admin_password;
    char *default_password_file = NULL;
    if (generate && (!password_file || !*password_file)) {
        if (!key_file || !*key_file) {
            log_msg(LOG_ERROR, "config_invalid",
                    "ONCEIOT_BOOTSTRAP_ADMIN_PASSWORD is unset, and neither "
                    "ONCEIOT_BOOTSTRAP_PASSWORD_FILE nor ONCEIOT_BOOTSTRAP_KEY_FILE says where a "
                    "generated password may be written (it is never logged)");
            return ERR_CONFIG;
        }
        password_file = default_password_file = mem_printf("%s.password", key_file);
    }
    if (generate) {
        char secret[IDENTITY_SECRET_LEN + 1];
        identity_apikey_generate(secret);
        memcpy(generated, secret + 8, sizeof(generated) - 1);
        generated[sizeof(generated) - 1] = '\0';
        sodium_memzero(secret, sizeof(secret));
        admin_password = generated;
    }
    identity_cache_init(&id->cache, svc_db(svc));
    svc_set_state(svc, id);
    rc = identity_store_bootstrap(id, svc_db(svc), admin_user, admin_email, admin_password,
                                  generate ? password_file : NULL, key_file);
    sodium_memzero(generated, sizeof(generated));
    mem_free(default_password_file);
    if (rc < 0) {
        identity_cache_fini(&id->cache);
        return rc;
    }
    identity_cache_start(&id->cache);
    log_rec_t r;
    log_begin(&r, LOG_INFO, "identity_ready");
    log_str(&r, "kid", id->verify_key.kid);
    log_int(&r, "token_ttl_s", id->token_ttl_s);
    log_end(&r);
    return 0;
}

static void identity__fini(svc_t *svc)
{
    (void)svc;
    identity_cache_fini(&identity__state.cache);
    sodium_memzero(&identity__state, sizeof(identity__state));
}

static const rpc_method_impl_t identity__methods[] = {
    {"CreateUser", identity_create_user},
    {"GetUser", identity_get_user},
    {"ListUsers", identity_list_users},
    {"UpdateUser", identity_update_user},
    {"DeactivateUser", identity_deactivate_user},
    {"EraseUser", identity_erase_user},
    {"ChangePassword", identity_change_password},
    {"Login", identity_login},
    {"CreateApiKey", identity_create_api_key},
    {"ListApiKeys", identity_list_api_keys},
    {"GetApiKey", identity_get_api_key},
    {"RevokeApiKey", identity_revoke_api_key},
    {"Authenticate", identity_authenticate},
    {"GetVerificationKeys", identity_get_verification_keys},
    {"ListAuditRecords", svc_list_audit_records},
};

static const rpc_service_impl_t identity__service = {
    .descriptor = &onceiot__identity__v1__identity_service__descriptor,
    .methods = identity__methods,
    .n_methods = sizeof(identity__methods) / sizeof(identity__methods[0]),
};

int main(int argc, char **argv)
{
    static const svc_def_t def = {
        .name = "identity",
        .default_listen = "127.0.0.1:50061",
        .uses_db = true,
        .authenticated = true,
        .services = &identity__service,
        .n_services = 1,
        .init = identity__init,
        .fini = identity__fini,
        .upkeep = identity_upkeep,
    };
    return svc_main(argc, argv, &def);
}
