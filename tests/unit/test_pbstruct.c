/* google.protobuf.Struct <-> JSON text (shared/src/pbstruct.c). */
#include "onceiot/pbstruct.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

static Google__Protobuf__Value *value(arena_t *a, Google__Protobuf__Value__KindCase kind)
{
    Google__Protobuf__Value *v = arena_alloc(a, sizeof(*v));
    google__protobuf__value__init(v);
    v->kind_case = kind;
    return v;
}

static Google__Protobuf__Value *number(arena_t *a, double d)
{
    Google__Protobuf__Value *v = value(a, GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE);
    v->number_value = d;
    return v;
}

/* A Struct of n (key, value) pairs. */
static Google__Protobuf__Struct *object(arena_t *a, size_t n, const char *const *keys,
                                        Google__Protobuf__Value **values)
{
    Google__Protobuf__Struct *s = arena_alloc(a, sizeof(*s));
    google__protobuf__struct__init(s);
    s->fields = arena_alloc(a, (n ? n : 1) * sizeof(*s->fields));
    for (size_t i = 0; i < n; i++) {
        Google__Protobuf__Struct__FieldsEntry *e = arena_alloc(a, sizeof(*e));
        google__protobuf__struct__fields_entry__init(e);
        e->key = (char *)keys[i];
        e->value = values[i];
        s->fields[s->n_fields++] = e;
    }
    return s;
}

static Google__Protobuf__Struct *one(arena_t *a, const char *key, Google__Protobuf__Value *v)
{
    return object(a, 1, &key, &v);
}

/* pbstruct_to_json on a detached call: the text, or NULL with the status
 * message (the violations) in *why. */
static const char *to_json(arena_t *a, const Google__Protobuf__Struct *s, size_t max,
                           const char **why)
{
    rpc_call_t *call = rpc_call_detached_new();
    const char *json = NULL;
    bool ok = pbstruct_to_json(call, "thing.data", s, max, &json);
    cr_assert_eq(ok, json != NULL);
    if (!ok) {
        cr_assert_eq(rpc_check_violations(call), ERR_INVALID_ARGUMENT);
        *why = arena_strdup(a, rpc_call_detached_message(call));
    }
    json = json ? arena_strdup(a, json) : NULL;
    rpc_call_detached_free(call);
    return json;
}

Test(pbstruct, every_kind_is_written_as_its_json_with_sorted_keys)
{
    arena_t *a = arena_new();
    Google__Protobuf__Value *list = value(a, GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE);
    list->list_value = arena_alloc(a, sizeof(*list->list_value));
    google__protobuf__list_value__init(list->list_value);
    Google__Protobuf__Value *items[] = {number(a, 1),
                                        value(a, GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE),
                                        value(a, GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE)};
    items[2]->struct_value = object(a, 0, NULL, NULL);
    list->list_value->values = items;
    list->list_value->n_values = 3;
    Google__Protobuf__Value *t = value(a, GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE);
    t->bool_value = true;
    Google__Protobuf__Value *str = value(a, GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE);
    str->string_value = "Stra\xc3\x9f"
                        "e \"q\"";
    const char *keys[] = {"z", "list", "t", "half", "big", "past", "neg", "s"};
    Google__Protobuf__Value *vals[] = {number(a, 3),
                                       list,
                                       t,
                                       number(a, 2.5),
                                       number(a, 9007199254740992.0),
                                       number(a, 18014398509481984.0),
                                       number(a, -7),
                                       str};
    const char *why = NULL;
    const char *json = to_json(a, object(a, 8, keys, vals), SIZE_MAX, &why);
    cr_assert_str_eq(json, "{\"big\":9007199254740992,\"half\":2.5,\"list\":[1,null,{}],\"neg\":-7,"
                           "\"past\":18014398509481984.0,\"s\":\"Stra\xc3\x9f"
                           "e \\\"q\\\"\","
                           "\"t\":true,\"z\":3}");
    /* Back from the text (as PostgreSQL returns it) and out again. */
    Google__Protobuf__Struct *back = pbstruct_from_json(a, json);
    cr_assert_not_null(back);
    cr_assert_str_eq(to_json(a, back, SIZE_MAX, &why), json);
    arena_free(a);
}

Test(pbstruct, null_is_an_empty_object)
{
    arena_t *a = arena_new();
    const char *why = NULL;
    cr_assert_str_eq(to_json(a, NULL, 2, &why), "{}");
    arena_free(a);
}

Test(pbstruct, text_from_postgresql_that_is_no_object_gives_no_struct)
{
    arena_t *a = arena_new();
    cr_assert_null(pbstruct_from_json(a, NULL));
    cr_assert_null(pbstruct_from_json(a, "[1, 2]"));
    cr_assert_null(pbstruct_from_json(a, "\"text\""));
    cr_assert_null(pbstruct_from_json(a, "{not json}"));
    Google__Protobuf__Struct *s = pbstruct_from_json(a, "{\"n\": 123456789012345678901234567890}");
    cr_assert(s && s->n_fields == 1, "an integer beyond int64 still loads, as a double");
    cr_assert_eq(s->fields[0]->value->number_value, 123456789012345678901234567890.0);
    arena_free(a);
}

/* n containers deep: the object and n - 1 nested lists, as a Struct. */
static Google__Protobuf__Struct *nested(arena_t *a, int n)
{
    Google__Protobuf__Value *v = number(a, 1);
    for (int i = 1; i < n; i++) {
        Google__Protobuf__Value *l = value(a, GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE);
        l->list_value = arena_alloc(a, sizeof(*l->list_value));
        google__protobuf__list_value__init(l->list_value);
        l->list_value->values = arena_alloc(a, sizeof(v));
        l->list_value->values[0] = v;
        l->list_value->n_values = 1;
        v = l;
    }
    return one(a, "a", v);
}

Test(pbstruct, nesting_is_limited_and_the_violation_names_the_field)
{
    arena_t *a = arena_new();
    const char *why = NULL;
    cr_assert_not_null(to_json(a, nested(a, PBSTRUCT_MAX_DEPTH), SIZE_MAX, &why));
    cr_assert_null(to_json(a, nested(a, PBSTRUCT_MAX_DEPTH + 1), SIZE_MAX, &why));
    cr_assert(strstr(why, "thing.data: must nest objects and arrays at most 32 levels deep"), "%s",
              why);
    arena_free(a);
}

Test(pbstruct, the_size_limit_is_on_the_json_text)
{
    arena_t *a = arena_new();
    Google__Protobuf__Value *str = value(a, GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE);
    str->string_value = "12345";
    const char *why = NULL;
    Google__Protobuf__Struct *s = one(a, "k", str); /* {"k":"12345"}: 13 bytes */
    cr_assert_str_eq(to_json(a, s, 13, &why), "{\"k\":\"12345\"}");
    cr_assert_null(to_json(a, s, 12, &why));
    cr_assert(strstr(why, "thing.data: must be at most 12 bytes as JSON (it is 13)"), "%s", why);
    arena_free(a);
}

Test(pbstruct, values_without_a_json_form_are_refused)
{
    arena_t *a = arena_new();
    const char *why = NULL;
    cr_assert_null(to_json(a, one(a, "n", number(a, NAN)), SIZE_MAX, &why));
    cr_assert(strstr(why, "thing.data: numbers must be finite"), "%s", why);
    cr_assert_null(to_json(a, one(a, "n", number(a, -INFINITY)), SIZE_MAX, &why));
    cr_assert_null(
        to_json(a, one(a, "n", value(a, GOOGLE__PROTOBUF__VALUE__KIND__NOT_SET)), SIZE_MAX, &why));
    cr_assert(strstr(why, "thing.data: every value must be set"), "%s", why);
    cr_assert_null(to_json(a, one(a, "n", NULL), SIZE_MAX, &why), "an entry without a value");
    Google__Protobuf__Value *bad = value(a, GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE);
    bad->string_value = "\xff\xfe";
    cr_assert_null(to_json(a, one(a, "s", bad), SIZE_MAX, &why));
    cr_assert(strstr(why, "thing.data: strings and keys must be UTF-8"), "%s", why);
    cr_assert_null(to_json(a, one(a, "\xc3", number(a, 1)), SIZE_MAX, &why), "a key");
    arena_free(a);
}
