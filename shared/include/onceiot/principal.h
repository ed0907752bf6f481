/* The signed principal: how a service learns who is calling.
 *
 * The gateway authenticates the caller, fills an onceiot.common.v1.Principal
 * and signs it with a key shared only by the gateway and the services
 * (ONCEIOT_PRINCIPAL_KEY). The principal names the method it was issued for
 * and when, so a captured one cannot be replayed on another method or later
 * than PRINCIPAL_MAX_AGE_MS. Services verify it and trust nothing else. */
#ifndef ONCEIOT_PRINCIPAL_H
#define ONCEIOT_PRINCIPAL_H

#include "common/v1/auth.pb-c.h"
#include "onceiot/client.h"
#include "onceiot/err.h"
#include "onceiot/mem.h"

#include <stdint.h>

#define PRINCIPAL_MD_KEY     "x-onceiot-principal-bin"
#define PRINCIPAL_SIG_KEY    "x-onceiot-principal-sig-bin"
#define PRINCIPAL_MAX_AGE_MS 60000

typedef Onceiot__Common__V1__Principal principal_t;

typedef struct principal_key {
    uint8_t bytes[32];
} principal_key_t;

/* Parses 64 hex digits. Returns 0 or ERR_CONFIG. */
int principal_key_parse(const char *hex, principal_key_t *out) ONCEIOT_MUSTCHECK;

/* Sets p->method and p->issued_at_ms, packs and signs it, and fills md[0]
 * (principal) and md[1] (signature) with values in the arena, ready for
 * rpc_call_opts_t.metadata. */
void principal_sign(const principal_key_t *key, principal_t *p, const char *method, arena_t *a,
                    rpc_md_t md[2]);

/* Checks a packed principal and its signature for method at now_ms. Returns
 * 0 with *out unpacked into the arena, or ERR_UNAUTHENTICATED with *why set
 * to a short reason (bad signature, wrong method, too old, malformed). */
int principal_verify(const principal_key_t *key, const uint8_t *bytes, size_t len,
                     const uint8_t *sig, size_t sig_len, const char *method, int64_t now_ms,
                     arena_t *a, principal_t **out, const char **why) ONCEIOT_MUSTCHECK;

/* Unix time in milliseconds. */
int64_t principal_now_ms(void);

/* Role order helpers: true when role is at least min. */
bool principal_role_at_least(Onceiot__Common__V1__Role role, Onceiot__Common__V1__Role min);
/* True when the principal carries scope, or "admin". */
bool principal_has_scope(const principal_t *p, const char *scope);

#endif
