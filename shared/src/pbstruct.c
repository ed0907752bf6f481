/* google.protobuf.Struct <-> JSON text, through jansson (onceiot/pbstruct.h). */
#include "onceiot/pbstruct.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PBSTRUCT_MAX_EXACT 9007199254740992.0 /* 2^53 */

/* Why a Struct has no JSON form. */
typedef enum {
    PBSTRUCT_OK,
    PBSTRUCT_E_DEPTH,  /* deeper than PBSTRUCT_MAX_DEPTH */
    PBSTRUCT_E_NUMBER, /* NaN or infinity */
    PBSTRUCT_E_KIND,   /* a Value without a kind, or an entry without a value */
    PBSTRUCT_E_UTF8,   /* a string or key that is not UTF-8 */
} pbstruct__err_t;

static json_t *pbstruct__object(const Google__Protobuf__Struct *s, int depth, pbstruct__err_t *e);

/* The JSON of one value; NULL with *e set when it has none. depth is the
 * nesting of the container holding v. */
static json_t *pbstruct__value(const Google__Protobuf__Value *v, int depth, pbstruct__err_t *e)
{
    json_t *j = NULL;
    switch (v ? v->kind_case : GOOGLE__PROTOBUF__VALUE__KIND__NOT_SET) {
    case GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE:
        return json_null();
    case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE: {
        double d = v->number_value;
        if (!isfinite(d)) {
            *e = PBSTRUCT_E_NUMBER;
            return NULL;
        }
        if (d == floor(d) && fabs(d) <= PBSTRUCT_MAX_EXACT)
            return json_integer((json_int_t)d);
        return json_real(d);
    }
    case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE:
        if (!(j = json_string(v->string_value ? v->string_value : "")))
            *e = PBSTRUCT_E_UTF8;
        return j;
    case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE:
        return json_boolean(v->bool_value);
    case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
        return pbstruct__object(v->struct_value, depth + 1, e);
    case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE: {
        if (depth + 1 > PBSTRUCT_MAX_DEPTH) {
            *e = PBSTRUCT_E_DEPTH;
            return NULL;
        }
        json_t *arr = json_array();
        const Google__Protobuf__ListValue *l = v->list_value;
        for (size_t i = 0; l && i < l->n_values; i++) {
            json_t *item = pbstruct__value(l->values[i], depth + 1, e);
            if (!item) {
                json_decref(arr);
                return NULL;
            }
            json_array_append_new(arr, item);
        }
        return arr;
    }
    default:
        *e = PBSTRUCT_E_KIND;
        return NULL;
    }
}

/* The JSON object of s (NULL: {}) at nesting depth. */
static json_t *pbstruct__object(const Google__Protobuf__Struct *s, int depth, pbstruct__err_t *e)
{
    if (depth > PBSTRUCT_MAX_DEPTH) {
        *e = PBSTRUCT_E_DEPTH;
        return NULL;
    }
    json_t *obj = json_object();
    for (size_t i = 0; s && i < s->n_fields; i++) {
        const Google__Protobuf__Struct__FieldsEntry *f = s->fields[i];
        json_t *v = pbstruct__value(f->value, depth, e);
        if (!v) {
            json_decref(obj);
            return NULL;
        }
        /* A repeated key is a map entry sent twice: the last one wins, as
         * protobuf's map semantics say. */
        if (json_object_set_new(obj, f->key ? f->key : "", v) < 0) {
            *e = PBSTRUCT_E_UTF8;
            json_decref(obj);
            return NULL;
        }
    }
    return obj;
}

bool pbstruct_to_json(rpc_call_t *call, const char *field, const Google__Protobuf__Struct *s,
                      size_t max_bytes, const char **json)
{
    *json = NULL;
    pbstruct__err_t e = PBSTRUCT_OK;
    json_t *j = pbstruct__object(s, 1, &e);
    if (!j) {
        switch (e) {
        case PBSTRUCT_E_DEPTH:
            rpc_violation(call, field, "must nest objects and arrays at most %d levels deep",
                          PBSTRUCT_MAX_DEPTH);
            break;
        case PBSTRUCT_E_NUMBER:
            rpc_violation(call, field, "numbers must be finite (no NaN or infinity in JSON)");
            break;
        case PBSTRUCT_E_UTF8:
            rpc_violation(call, field, "strings and keys must be UTF-8");
            break;
        default:
            rpc_violation(call, field,
                          "every value must be set (null, number, string, bool, "
                          "object or list)");
            break;
        }
        return false;
    }
    char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    if (!text)
        abort(); /* jansson fails only when out of memory, as mem_* would */
    size_t n = strlen(text);
    if (n > max_bytes) {
        free(text);
        rpc_violation(call, field, "must be at most %zu bytes as JSON (it is %zu)", max_bytes, n);
        return false;
    }
    *json = arena_strdup(rpc_call_arena(call), text);
    free(text);
    return true;
}

static Google__Protobuf__Struct *pbstruct__struct(arena_t *a, json_t *obj);

static Google__Protobuf__Value *pbstruct__from(arena_t *a, json_t *j)
{
    Google__Protobuf__Value *v = arena_alloc(a, sizeof(*v));
    google__protobuf__value__init(v);
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
        v->struct_value = pbstruct__struct(a, j);
        break;
    case JSON_ARRAY: {
        Google__Protobuf__ListValue *l = arena_alloc(a, sizeof(*l));
        google__protobuf__list_value__init(l);
        size_t n = json_array_size(j);
        l->values = arena_alloc(a, (n ? n : 1) * sizeof(*l->values));
        for (size_t i = 0; i < n; i++)
            l->values[l->n_values++] = pbstruct__from(a, json_array_get(j, i));
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

static Google__Protobuf__Struct *pbstruct__struct(arena_t *a, json_t *obj)
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
        e->value = pbstruct__from(a, val);
        s->fields[s->n_fields++] = e;
    }
    return s;
}

Google__Protobuf__Struct *pbstruct_from_json(arena_t *a, const char *json)
{
    if (!json)
        return NULL;
    /* Integers as doubles: jsonb numbers beyond int64 still load, and a
     * Struct number is a double anyway. */
    json_t *j = json_loads(json, JSON_DECODE_INT_AS_REAL, NULL);
    if (!j)
        return NULL;
    Google__Protobuf__Struct *s = json_is_object(j) ? pbstruct__struct(a, j) : NULL;
    json_decref(j);
    return s;
}
