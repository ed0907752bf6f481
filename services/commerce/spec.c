/* Product specifications: google.protobuf.Struct on the wire, a jsonb object
 * in the table. JSON goes through jansson; Struct numbers are doubles, so
 * integral values are written as JSON integers (what jsonb and the top-up
 * check read) and only integers up to 2^53 are exact. */
#include "commerce.h"

#include <jansson.h>
#include <math.h>
#include <string.h>

#define SPEC_MAX_JSON  16384
#define SPEC_MAX_DEPTH 16
#define SPEC_MAX_EXACT 9007199254740992.0 /* 2^53 */

static json_t *spec__from_struct(const Google__Protobuf__Struct *s, int depth);

/* The JSON of one Value; NULL for an unset kind, NaN, infinity or nesting
 * deeper than SPEC_MAX_DEPTH. */
static json_t *spec__from_value(const Google__Protobuf__Value *v, int depth)
{
    if (!v || depth > SPEC_MAX_DEPTH)
        return NULL;
    switch (v->kind_case) {
    case GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE:
        return json_null();
    case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE: {
        double d = v->number_value;
        if (!isfinite(d))
            return NULL;
        if (d == floor(d) && fabs(d) <= SPEC_MAX_EXACT)
            return json_integer((json_int_t)d);
        return json_real(d);
    }
    case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE:
        return json_string(v->string_value);
    case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE:
        return json_boolean(v->bool_value);
    case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
        return spec__from_struct(v->struct_value, depth + 1);
    case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE: {
        json_t *arr = json_array();
        const Google__Protobuf__ListValue *l = v->list_value;
        for (size_t i = 0; l && i < l->n_values; i++) {
            json_t *e = spec__from_value(l->values[i], depth + 1);
            if (!e) {
                json_decref(arr);
                return NULL;
            }
            json_array_append_new(arr, e);
        }
        return arr;
    }
    default:
        return NULL;
    }
}

static json_t *spec__from_struct(const Google__Protobuf__Struct *s, int depth)
{
    json_t *obj = json_object();
    for (size_t i = 0; s && i < s->n_fields; i++) {
        json_t *e = spec__from_value(s->fields[i]->value, depth + 1);
        if (!e || !s->fields[i]->key) {
            json_decref(e);
            json_decref(obj);
            return NULL;
        }
        json_object_set_new(obj, s->fields[i]->key, e);
    }
    return obj;
}

/* The JSON text of s in a, or NULL when it cannot be written. */
static const char *spec__dump(arena_t *a, const Google__Protobuf__Struct *s)
{
    json_t *j = spec__from_struct(s, 0);
    if (!j)
        return NULL;
    char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    if (!text)
        return NULL;
    char *out = arena_strdup(a, text);
    free(text);
    return out;
}

const char *commerce_struct_json(arena_t *a, const Google__Protobuf__Struct *s)
{
    const char *j = s ? spec__dump(a, s) : NULL;
    return j ? j : "{}";
}

static Google__Protobuf__Struct *spec__to_struct(arena_t *a, json_t *obj);

static Google__Protobuf__Value *spec__to_value(arena_t *a, json_t *j)
{
    Google__Protobuf__Value *v = arena_alloc(a, sizeof(*v));
    google__protobuf__value__init(v);
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
        v->struct_value = spec__to_struct(a, j);
        break;
    case JSON_ARRAY: {
        Google__Protobuf__ListValue *l = arena_alloc(a, sizeof(*l));
        google__protobuf__list_value__init(l);
        size_t n = json_array_size(j);
        l->values = arena_alloc(a, (n ? n : 1) * sizeof(*l->values));
        for (size_t i = 0; i < n; i++)
            l->values[l->n_values++] = spec__to_value(a, json_array_get(j, i));
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
        v->list_value = l;
        break;
    }
    case JSON_STRING:
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
        v->string_value = arena_strdup(a, json_string_value(j));
        break;
    case JSON_INTEGER:
    case JSON_REAL:
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
        v->number_value = json_number_value(j);
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE;
        v->bool_value = json_is_true(j);
        break;
    default:
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
        v->null_value = GOOGLE__PROTOBUF__NULL_VALUE__NULL_VALUE;
        break;
    }
    return v;
}

static Google__Protobuf__Struct *spec__to_struct(arena_t *a, json_t *obj)
{
    Google__Protobuf__Struct *s = arena_alloc(a, sizeof(*s));
    google__protobuf__struct__init(s);
    size_t n = json_object_size(obj);
    s->fields = arena_alloc(a, (n ? n : 1) * sizeof(*s->fields));
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val)
    {
        Google__Protobuf__Struct__FieldsEntry *e = arena_alloc(a, sizeof(*e));
        google__protobuf__struct__fields_entry__init(e);
        e->key = arena_strdup(a, key);
        e->value = spec__to_value(a, val);
        s->fields[s->n_fields++] = e;
    }
    return s;
}

Google__Protobuf__Struct *commerce_json_struct(arena_t *a, const char *json)
{
    if (!json)
        return NULL;
    json_t *j = json_loads(json, JSON_DECODE_INT_AS_REAL, NULL);
    if (!j)
        return NULL;
    Google__Protobuf__Struct *s = json_is_object(j) ? spec__to_struct(a, j) : NULL;
    json_decref(j);
    return s;
}

bool commerce_valid_specs(rpc_call_t *call, const char *field, const char *category,
                          const Google__Protobuf__Struct *s)
{
    arena_t *a = rpc_call_arena(call);
    const char *json = s ? spec__dump(a, s) : "{}";
    if (!json) {
        rpc_violation(call, field, "must be JSON: no NaN or infinity, at most %d levels deep",
                      SPEC_MAX_DEPTH);
        return false;
    }
    if (strlen(json) > SPEC_MAX_JSON) {
        rpc_violation(call, field, "must be at most %d bytes of JSON", SPEC_MAX_JSON);
        return false;
    }
    const char *key = category ? commerce_topup_key(category) : NULL;
    if (!key)
        return true;
    const Google__Protobuf__Value *v = NULL;
    for (size_t i = 0; s && i < s->n_fields; i++)
        if (strcmp(s->fields[i]->key, key) == 0)
            v = s->fields[i]->value;
    double d =
        v && v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE ? v->number_value : 0;
    if (!(d >= 1 && d <= SPEC_MAX_EXACT && d == floor(d))) {
        rpc_violation(call, arena_printf(a, "%s.%s", field, key),
                      "a %s product needs %s, a whole number from 1 to 2^53", category, key);
        return false;
    }
    return true;
}
