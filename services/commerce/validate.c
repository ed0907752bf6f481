/* Field checks and the names of the enums as stored. */
#include "commerce.h"

#include <ctype.h>
#include <math.h>
#include <string.h>

bool commerce_valid_uuid(rpc_call_t *call, const char *field, const char *id)
{
    /* 8-4-4-4-12 hex digits, the text form PostgreSQL's uuid reads. */
    static const char shape[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";
    bool ok = id && strlen(id) == sizeof(shape) - 1;
    for (size_t i = 0; ok && shape[i]; i++)
        ok = shape[i] == '-' ? id[i] == '-' : isxdigit((unsigned char)id[i]) != 0;
    if (!ok)
        rpc_violation(call, field, "must be an id as the server gave it (a UUID)");
    return ok;
}

bool commerce_valid_iccid(rpc_call_t *call, const char *field, const char *iccid)
{
    size_t n = iccid ? strlen(iccid) : 0;
    bool ok = (n == 19 || n == 20) && strspn(iccid, "0123456789") == n;
    if (!ok)
        rpc_violation(call, field, "must be an ICCID of 19 or 20 digits");
    return ok;
}

bool commerce_valid_money(rpc_call_t *call, const char *field,
                          const Onceiot__Commerce__V1__Money *m)
{
    arena_t *a = rpc_call_arena(call);
    if (!m) {
        rpc_violation(call, field, "is required");
        return false;
    }
    bool ok = true;
    const char *c = m->currency_code;
    if (strlen(c) != 3 || strspn(c, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != 3) {
        rpc_violation(call, arena_printf(a, "%s.currency_code", field),
                      "must be an ISO 4217 code such as \"EUR\"");
        ok = false;
    }
    if (m->amount_minor < 0) {
        rpc_violation(call, arena_printf(a, "%s.amount_minor", field), "must not be negative");
        ok = false;
    }
    return ok;
}

static const char *const category_names[] = {
    [ONCEIOT__COMMERCE__V1__CATEGORY__CATEGORY_SIM_CARD] = "sim_card",
    [ONCEIOT__COMMERCE__V1__CATEGORY__CATEGORY_DATA_TOPUP] = "data_topup",
    [ONCEIOT__COMMERCE__V1__CATEGORY__CATEGORY_SMS_TOPUP] = "sms_topup",
    [ONCEIOT__COMMERCE__V1__CATEGORY__CATEGORY_HARDWARE] = "hardware",
    [ONCEIOT__COMMERCE__V1__CATEGORY__CATEGORY_SERVICE] = "service",
};

static const char *const status_names[] = {
    [ONCEIOT__COMMERCE__V1__ORDER_STATUS__ORDER_STATUS_PENDING] = "pending",
    [ONCEIOT__COMMERCE__V1__ORDER_STATUS__ORDER_STATUS_PROCESSING] = "processing",
    [ONCEIOT__COMMERCE__V1__ORDER_STATUS__ORDER_STATUS_COMPLETED] = "completed",
    [ONCEIOT__COMMERCE__V1__ORDER_STATUS__ORDER_STATUS_CANCELLED] = "cancelled",
    [ONCEIOT__COMMERCE__V1__ORDER_STATUS__ORDER_STATUS_FAILED] = "failed",
};

static const char *const type_names[] = {
    [ONCEIOT__COMMERCE__V1__ORDER_TYPE__ORDER_TYPE_SIM_CARD] = "sim_card",
    [ONCEIOT__COMMERCE__V1__ORDER_TYPE__ORDER_TYPE_DATA_TOPUP] = "data_topup",
    [ONCEIOT__COMMERCE__V1__ORDER_TYPE__ORDER_TYPE_SMS_TOPUP] = "sms_topup",
    [ONCEIOT__COMMERCE__V1__ORDER_TYPE__ORDER_TYPE_HARDWARE] = "hardware",
    [ONCEIOT__COMMERCE__V1__ORDER_TYPE__ORDER_TYPE_SERVICE] = "service",
    [ONCEIOT__COMMERCE__V1__ORDER_TYPE__ORDER_TYPE_MIXED] = "mixed",
};

/* names[v] for 0 < v < n, else NULL. */
static const char *commerce__name(const char *const *names, size_t n, int v)
{
    return v > 0 && (size_t)v < n ? names[v] : NULL;
}

/* The index of name in names (0 when absent or NULL). */
static int commerce__index(const char *const *names, size_t n, const char *name)
{
    for (size_t i = 1; name && i < n; i++)
        if (strcmp(names[i], name) == 0)
            return (int)i;
    return 0;
}

#define N_OF(x) (sizeof(x) / sizeof((x)[0]))

const char *commerce_category_name(Onceiot__Commerce__V1__Category c)
{
    return commerce__name(category_names, N_OF(category_names), (int)c);
}

Onceiot__Commerce__V1__Category commerce_category_enum(const char *name)
{
    return (Onceiot__Commerce__V1__Category)commerce__index(category_names, N_OF(category_names),
                                                            name);
}

const char *commerce_status_name(Onceiot__Commerce__V1__OrderStatus s)
{
    return commerce__name(status_names, N_OF(status_names), (int)s);
}

Onceiot__Commerce__V1__OrderStatus commerce_status_enum(const char *name)
{
    return (Onceiot__Commerce__V1__OrderStatus)commerce__index(status_names, N_OF(status_names),
                                                               name);
}

const char *commerce_type_name(Onceiot__Commerce__V1__OrderType t)
{
    return commerce__name(type_names, N_OF(type_names), (int)t);
}

Onceiot__Commerce__V1__OrderType commerce_type_enum(const char *name)
{
    return (Onceiot__Commerce__V1__OrderType)commerce__index(type_names, N_OF(type_names), name);
}

const char *commerce_topup_key(const char *category)
{
    if (strcmp(category, "data_topup") == 0)
        return "volume_bytes";
    if (strcmp(category, "sms_topup") == 0)
        return "sms_count";
    return NULL;
}

#define SPEC_MAX_JSON  16384
#define SPEC_MAX_EXACT 9007199254740992.0 /* 2^53 */

bool commerce_valid_specs(rpc_call_t *call, const char *field, const char *category,
                          const Google__Protobuf__Struct *s, const char **json)
{
    if (!pbstruct_to_json(call, field, s, SPEC_MAX_JSON, json))
        return false;
    const char *key = category ? commerce_topup_key(category) : NULL;
    if (!key)
        return true;
    const Google__Protobuf__Value *v = NULL;
    for (size_t i = 0; s && i < s->n_fields; i++)
        if (s->fields[i]->key && strcmp(s->fields[i]->key, key) == 0)
            v = s->fields[i]->value;
    double d =
        v && v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE ? v->number_value : 0;
    if (!(d >= 1 && d <= SPEC_MAX_EXACT && d == floor(d))) {
        rpc_violation(call, arena_printf(rpc_call_arena(call), "%s.%s", field, key),
                      "a %s product needs %s, a whole number from 1 to 2^53", category, key);
        return false;
    }
    return true;
}
