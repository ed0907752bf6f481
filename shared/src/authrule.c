/* The (onceiot.common.v1.auth) rule of a method, read from its serialized
 * MethodOptions: protobuf-c does not know extensions, so the option is found
 * by a small wire-level scan and then unpacked. Used by the gateway (routes)
 * and by every service (which callers a method accepts). */
#include "onceiot/authrule.h"

#include <stdio.h>
#include <string.h>

enum { AUTHRULE_FIELD = 50100 }; /* extend MethodOptions { AuthRule auth = 50100; } */

/* Reads a varint; returns the bytes used or 0 when truncated or too long. */
static size_t authrule__varint(const uint8_t *p, size_t len, uint64_t *v)
{
    *v = 0;
    for (size_t i = 0; i < len && i < 10; i++) {
        *v |= (uint64_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80))
            return i + 1;
    }
    return 0;
}

int auth_rule_from_options(const uint8_t *opts, size_t len, auth_rule_t *rule)
{
    const uint8_t *found = NULL;
    size_t found_len = 0;
    size_t pos = 0;
    while (pos < len) {
        uint64_t key, v;
        size_t n = authrule__varint(opts + pos, len - pos, &key);
        if (!n)
            return ERR_INVALID_ARGUMENT;
        pos += n;
        switch (key & 7) {
        case 0:
            if (!(n = authrule__varint(opts + pos, len - pos, &v)))
                return ERR_INVALID_ARGUMENT;
            pos += n;
            break;
        case 1:
            pos += 8;
            break;
        case 5:
            pos += 4;
            break;
        case 2:
            if (!(n = authrule__varint(opts + pos, len - pos, &v)) || v > len - pos - n)
                return ERR_INVALID_ARGUMENT;
            pos += n;
            /* Repeated occurrences of a message field merge; ours are
             * written once by protoc, so the last one is the rule. */
            if (key >> 3 == AUTHRULE_FIELD) {
                found = opts + pos;
                found_len = (size_t)v;
            }
            pos += (size_t)v;
            break;
        default:
            return ERR_INVALID_ARGUMENT; /* groups are not used in options */
        }
        if (pos > len)
            return ERR_INVALID_ARGUMENT;
    }
    if (!found)
        return 0;
    Onceiot__Common__V1__AuthRule *r =
        onceiot__common__v1__auth_rule__unpack(NULL, found_len, found);
    if (!r)
        return ERR_INVALID_ARGUMENT;
    memset(rule, 0, sizeof(*rule));
    rule->is_public = r->public_;
    rule->superuser = r->superuser;
    rule->internal = r->internal;
    rule->min_role = r->min_role;
    int rc = 1;
    if (r->scope && strlen(r->scope) >= sizeof(rule->scope))
        rc = ERR_INVALID_ARGUMENT;
    else
        snprintf(rule->scope, sizeof(rule->scope), "%s", r->scope ? r->scope : "");
    if (r->n_callers > AUTH_RULE_MAX_CALLERS)
        rc = ERR_INVALID_ARGUMENT;
    for (size_t i = 0; rc == 1 && i < r->n_callers; i++) {
        if (strlen(r->callers[i]) >= sizeof(rule->callers[0]))
            rc = ERR_INVALID_ARGUMENT;
        else
            snprintf(rule->callers[rule->n_callers++], sizeof(rule->callers[0]), "%s",
                     r->callers[i]);
    }
    onceiot__common__v1__auth_rule__free_unpacked(r, NULL);
    return rc;
}

bool auth_rule_allows_caller(const auth_rule_t *rule, const char *issuer)
{
    for (size_t i = 0; i < rule->n_callers; i++)
        if (strcmp(rule->callers[i], issuer) == 0)
            return true;
    return false;
}
