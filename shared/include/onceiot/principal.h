/* The signed principal: how a service learns who is calling.
 *
 * The gateway authenticates the caller, fills an onceiot.common.v1.Principal
 * and signs it (HMAC) for the one service it calls; a service calling another
 * service signs a principal of its own ("service:<name>"). The principal
 * names the method it was issued for and when, so a captured one cannot be
 * replayed on another method or later than PRINCIPAL_MAX_AGE_MS.
 *
 * Keys: every service has a secret of its own (ONCEIOT_PRINCIPAL_KEY). The
 * key an issuer signs with for that service is derived from the service's
 * secret and the issuer's name (principal_key_derive), and handed to the
 * issuer by whoever deploys (ONCEIOT_PRINCIPAL_SIGNING_KEYS, made by
 * onceiot-keys). So a service checks every issuer with its own secret, and
 * an issuer holds keys only for the services it calls under its own name: a
 * compromised commerce cannot sign as the gateway, nor for another callee.
 * The signature entry carries the issuer's name after the MAC. */
#ifndef ONCEIOT_PRINCIPAL_H
#define ONCEIOT_PRINCIPAL_H

#include "common/v1/auth.pb-c.h"
#include "onceiot/client.h"
#include "onceiot/err.h"
#include "onceiot/mem.h"

#include <stdint.h>

#define PRINCIPAL_MD_KEY        "x-onceiot-principal-bin"
#define PRINCIPAL_SIG_KEY       "x-onceiot-principal-sig-bin"
#define PRINCIPAL_MAX_AGE_MS    60000
#define PRINCIPAL_ISSUER_MAX    31 /* [a-z0-9-] */
#define PRINCIPAL_MAX_AUDIENCES 16

typedef Onceiot__Common__V1__Principal principal_t;

typedef struct principal_key {
    uint8_t bytes[32];
} principal_key_t;

/* The keys one process signs with, one per service it calls. */
typedef struct principal_signing_key {
    char audience[PRINCIPAL_ISSUER_MAX + 1]; /* "sims" */
    principal_key_t key;
} principal_signing_key_t;

typedef struct principal_signing_keys {
    principal_signing_key_t keys[PRINCIPAL_MAX_AUDIENCES];
    size_t n;
} principal_signing_keys_t;

/* Parses 64 hex digits. Returns 0 or ERR_CONFIG. */
int principal_key_parse(const char *hex, principal_key_t *out) ONCEIOT_MUSTCHECK;
/* Parses "audience:<64 hex>,audience:<64 hex>" (empty: none). Returns 0 or
 * ERR_CONFIG (bad name, bad hex, an audience twice, too many). */
int principal_signing_keys_parse(const char *list, principal_signing_keys_t *out) ONCEIOT_MUSTCHECK;
/* The key for audience, or NULL. */
const principal_key_t *principal_signing_key(const principal_signing_keys_t *keys,
                                             const char *audience);
/* The key issuer signs with for the service whose secret is callee_secret. */
void principal_key_derive(const principal_key_t *callee_secret, const char *issuer,
                          principal_key_t *out);
/* True when s (n bytes) is a usable issuer or audience name. */
bool principal_issuer_valid(const char *s, size_t n);

/* Sets p->method and p->issued_at_ms (and p->issuer to "gateway" when it is
 * unset), packs and signs it with key (the issuer's key for the callee), and
 * fills md[0] (principal) and md[1] (signature and issuer) with values in
 * the arena, ready for rpc_call_opts_t.metadata. */
void principal_sign(const principal_key_t *key, principal_t *p, const char *method, arena_t *a,
                    rpc_md_t md[2]);

/* Checks a packed principal and its signature entry for method at now_ms,
 * with the callee's own secret (the issuer's key is derived from it).
 * Returns 0 with *out unpacked into the arena, or ERR_UNAUTHENTICATED with
 * *why set to a short reason (bad signature, wrong method, too old,
 * malformed). Who may call what is the caller's to check (svc.c). */
int principal_verify(const principal_key_t *secret, const uint8_t *bytes, size_t len,
                     const uint8_t *sig, size_t sig_len, const char *method, int64_t now_ms,
                     arena_t *a, principal_t **out, const char **why) ONCEIOT_MUSTCHECK;

/* Unix time in milliseconds. */
int64_t principal_now_ms(void);

/* Role order helpers: true when role is at least min. */
bool principal_role_at_least(Onceiot__Common__V1__Role role, Onceiot__Common__V1__Role min);
/* True when the principal carries scope, or "admin". */
bool principal_has_scope(const principal_t *p, const char *scope);

#endif
