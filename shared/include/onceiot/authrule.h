/* Who may call a method: the (onceiot.common.v1.auth) rule declared on it in
 * the .proto (proto/common/v1/auth.proto), as the gateway and the services
 * read it from their embedded descriptor sets. */
#ifndef ONCEIOT_AUTHRULE_H
#define ONCEIOT_AUTHRULE_H

#include "common/v1/auth.pb-c.h"
#include "onceiot/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUTH_RULE_MAX_CALLERS 8

typedef struct auth_rule {
    bool is_public;                          /* no credentials needed */
    bool superuser;                          /* superusers only */
    bool internal;                           /* never routed by the gateway */
    char scope[64];                          /* required scope; "" for none */
    Onceiot__Common__V1__Role min_role;      /* ROLE_UNSPECIFIED: any role */
    char callers[AUTH_RULE_MAX_CALLERS][32]; /* services that may call it themselves */
    size_t n_callers;
} auth_rule_t;

/* Reads the rule (field 50100) out of serialized MethodOptions. Returns 1
 * with *rule set, 0 when there is none, or ERR_INVALID_ARGUMENT when the
 * bytes do not parse or a value is too long. */
int auth_rule_from_options(const uint8_t *opts, size_t len, auth_rule_t *rule) ONCEIOT_MUSTCHECK;
/* True when issuer ("usage") is among the rule's callers. */
bool auth_rule_allows_caller(const auth_rule_t *rule, const char *issuer);

#endif
