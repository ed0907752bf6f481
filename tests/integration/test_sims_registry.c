/* The SIM registry against a real onceiot-sims and PostgreSQL: Get, List,
 * Create, Import, Update, BulkUpdate; validation; pagination; tenancy. */
#include "google/protobuf/wrappers.pb-c.h"
#include "pg_harness.h"
#include "sims_harness.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

TestSuite(sims_registry, .init = sims_h_start, .fini = sims_h_stop, .timeout = 120);

#define SIM_D (&onceiot__sims__v1__sim__descriptor)

/* UpdateSim of the fields named in paths. */
static int update(const principal_t *who, const char *iccid, Onceiot__Sims__V1__SimChanges *ch,
                  char **paths, size_t n, Onceiot__Sims__V1__Sim **out, rpc_status_t *st)
{
    Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    mask.paths = paths;
    mask.n_paths = n;
    Onceiot__Sims__V1__UpdateSimRequest req = ONCEIOT__SIMS__V1__UPDATE_SIM_REQUEST__INIT;
    req.iccid = (char *)iccid;
    req.changes = ch;
    req.update_mask = &mask;
    return sims_h_call("UpdateSim", &req.base, SIM_D, who, NULL, (ProtobufCMessage **)out, st);
}

Test(sims_registry, created_sim_is_disabled_and_carries_its_quota_summary)
{
    principal_t admin = sims_h_admin(1);
    const char *iccid = sims_h_iccid(1);
    Onceiot__Sims__V1__Sim *c = sims_h_create(&admin, iccid);
    cr_assert_eq(c->status, ONCEIOT__SIMS__V1__SIM_STATUS__SIM_STATUS_DISABLED);
    cr_assert_eq(c->organization_id, 1);
    Onceiot__Sims__V1__Sim *s;
    rpc_status_t st;
    cr_assert_eq(sims_h_get(&admin, iccid, &s, &st), 0, "%s", st.message);
    cr_assert_str_eq(s->iccid, iccid);
    cr_assert(s->data_quota && s->sms_quota);
    cr_assert_eq(s->data_quota->volume, 1000);
    cr_assert_eq(s->data_quota->remaining_volume, 1000);
    cr_assert_eq(s->sms_quota->volume, 10);
    cr_assert(s->created_at && !s->activation_date);
}

Test(sims_registry, creating_a_known_iccid_is_already_exists_naming_it)
{
    principal_t admin = sims_h_admin(1), staff = sims_h_root();
    const char *iccid = sims_h_iccid(2);
    sims_h_create(&admin, iccid);
    Onceiot__Sims__V1__SimInput in = ONCEIOT__SIMS__V1__SIM_INPUT__INIT;
    in.iccid = (char *)iccid;
    in.organization_id = 2;
    Onceiot__Sims__V1__CreateSimRequest req = ONCEIOT__SIMS__V1__CREATE_SIM_REQUEST__INIT;
    req.sim = &in;
    ProtobufCMessage *resp;
    rpc_status_t st;
    cr_assert_eq(sims_h_call("CreateSim", &req.base, SIM_D, &staff, NULL, &resp, &st),
                 ERR_ALREADY_EXISTS);
    char want[64];
    snprintf(want, sizeof(want), "SIM %s already exists", iccid);
    cr_assert_str_eq(st.message, want);
}

/* Only the operator's staff register SIMs, so no tenant learns from an
 * ALREADY_EXISTS that another tenant holds an ICCID. */
Test(sims_registry, a_tenant_cannot_register_sims_so_cannot_probe_for_other_tenants_iccids)
{
    principal_t owner = sims_h_admin(1), other = sims_h_admin(2);
    const char *known = sims_h_iccid(3), *fresh = sims_h_iccid(4);
    sims_h_create(&owner, known);
    const char *tries[] = {known, fresh};
    for (size_t i = 0; i < 2; i++) {
        Onceiot__Sims__V1__SimInput in = ONCEIOT__SIMS__V1__SIM_INPUT__INIT;
        in.iccid = (char *)tries[i];
        Onceiot__Sims__V1__SimInput *items[] = {&in};
        Onceiot__Sims__V1__CreateSimRequest req = ONCEIOT__SIMS__V1__CREATE_SIM_REQUEST__INIT;
        req.sim = &in;
        Onceiot__Sims__V1__ImportSimsRequest imp = ONCEIOT__SIMS__V1__IMPORT_SIMS_REQUEST__INIT;
        imp.sims = items;
        imp.n_sims = 1;
        ProtobufCMessage *resp;
        rpc_status_t st;
        cr_assert_eq(sims_h_call("CreateSim", &req.base, SIM_D, &other, NULL, &resp, &st),
                     ERR_PERMISSION_DENIED, "%s", st.message);
        cr_assert(!strstr(st.message, tries[i]), "the answer names no ICCID: %s", st.message);
        cr_assert_eq(sims_h_call("ImportSims", &imp.base,
                                 &onceiot__sims__v1__import_sims_response__descriptor, &owner, NULL,
                                 &resp, &st),
                     ERR_PERMISSION_DENIED, "not even the owner's admin: %s", st.message);
    }
    Onceiot__Sims__V1__Sim *s;
    rpc_status_t st;
    cr_assert_eq(sims_h_get(&other, fresh, &s, &st), ERR_NOT_FOUND, "nothing was registered");
    cr_assert_eq(sims_h_get(&owner, fresh, &s, &st), ERR_NOT_FOUND);
}

typedef struct iccid {
    char s[32];
} iccid_t;

ParameterizedTestParameters(sims_registry, malformed_iccid_is_a_field_violation)
{
    /* Parameters are copied into the test's own process: no pointers. */
    static iccid_t bad[] = {{""},
                            {"123"},
                            {"898800000000000000"},
                            {"898800000000000000012"},
                            {"89880000000000000a1"},
                            {" 8988000000000000001"}};
    return cr_make_param_array(iccid_t, bad, sizeof(bad) / sizeof(bad[0]));
}

ParameterizedTest(iccid_t *iccid, sims_registry, malformed_iccid_is_a_field_violation)
{
    principal_t admin = sims_h_admin(1);
    Onceiot__Sims__V1__Sim *s;
    rpc_status_t st;
    cr_assert_eq(sims_h_get(&admin, iccid->s, &s, &st), ERR_INVALID_ARGUMENT);
    cr_assert(sims_h_violation(&st, "iccid"), "%s", st.message);
}

typedef struct bad_input {
    char field[24];
    char imei[24], msisdn[24], ip[16], tag[16];
    bool label; /* a label of 256 characters */
} bad_input_t;

ParameterizedTestParameters(sims_registry, bad_sim_fields_are_refused_and_nothing_is_stored)
{
    static bad_input_t bad[] = {
        {"sim.imei", .imei = "35000000000000"},
        {"sim.imei", .imei = "3500000000000001"},
        {"sim.msisdn", .msisdn = "1234567890123456"},
        {"sim.msisdn", .msisdn = "+4912345"},
        {"sim.ip_address", .ip = "10.0.0.300"},
        {"sim.tags", .tag = "has space"},
        {"sim.label", .label = true},
    };
    return cr_make_param_array(bad_input_t, bad, sizeof(bad) / sizeof(bad[0]));
}

ParameterizedTest(bad_input_t *b, sims_registry, bad_sim_fields_are_refused_and_nothing_is_stored)
{
    principal_t admin = sims_h_admin(1);
    Onceiot__Sims__V1__SimInput in = ONCEIOT__SIMS__V1__SIM_INPUT__INIT;
    in.iccid = (char *)sims_h_iccid(3);
    char label[300];
    if (b->label) {
        memset(label, 'L', 256);
        label[256] = 0;
        in.label = label;
    }
    if (*b->imei)
        in.imei = (char *)b->imei;
    if (*b->msisdn)
        in.msisdn = (char *)b->msisdn;
    if (*b->ip)
        in.ip_address = (char *)b->ip;
    char *tags[] = {b->tag};
    if (*b->tag) {
        in.tags = tags;
        in.n_tags = 1;
    }
    Onceiot__Sims__V1__CreateSimRequest req = ONCEIOT__SIMS__V1__CREATE_SIM_REQUEST__INIT;
    req.sim = &in;
    ProtobufCMessage *resp;
    rpc_status_t st;
    principal_t staff = sims_h_root();
    cr_assert_eq(sims_h_call("CreateSim", &req.base, SIM_D, &staff, NULL, &resp, &st),
                 ERR_INVALID_ARGUMENT);
    cr_assert(sims_h_violation(&st, b->field), "expected %s in: %s", b->field, st.message);
    Onceiot__Sims__V1__Sim *s;
    cr_assert_eq(sims_h_get(&admin, in.iccid, &s, &st), ERR_NOT_FOUND);
}

/* Metadata is a google.protobuf.Struct: nested objects, arrays, numbers,
 * bools and null come back as they were sent, through CreateSim, GetSim,
 * ImportSims and UpdateSim. */
Test(sims_registry, metadata_objects_round_trip_as_structs)
{
    static const char json[] =
        "{\"site\": \"berlin\", \"floor\": 3, \"ratio\": 2.5, \"big\": 9007199254740992, "
        "\"neg\": -7, \"on\": true, \"off\": false, \"none\": null, \"empty\": {}, \"list\": [], "
        "\"mixed\": [\"a\", 1, [2, {\"deep\": {\"x\": [null, false]}}]], \"utf8\": "
        "\"Stra\u00dfe\"}";
    principal_t staff = sims_h_root(), admin = sims_h_admin(1);
    Onceiot__Sims__V1__SimInput in = ONCEIOT__SIMS__V1__SIM_INPUT__INIT;
    in.iccid = (char *)sims_h_iccid(4);
    in.organization_id = 1;
    in.metadata = sims_h_struct(json);
    const char *want = sims_h_json(in.metadata);
    Onceiot__Sims__V1__CreateSimRequest req = ONCEIOT__SIMS__V1__CREATE_SIM_REQUEST__INIT;
    req.sim = &in;
    Onceiot__Sims__V1__Sim *s;
    rpc_status_t st;
    cr_assert_eq(
        sims_h_call("CreateSim", &req.base, SIM_D, &staff, NULL, (ProtobufCMessage **)&s, &st), 0,
        "%s", st.message);
    cr_assert_str_eq(sims_h_json(s->metadata), want);
    cr_assert_eq(sims_h_get(&admin, in.iccid, &s, &st), 0, "%s", st.message);
    cr_assert_str_eq(sims_h_json(s->metadata), want);
    /* The kinds themselves, not only the text they make. */
    size_t kinds = 0;
    for (size_t i = 0; i < s->metadata->n_fields; i++) {
        const char *k = s->metadata->fields[i]->key;
        const Google__Protobuf__Value *v = s->metadata->fields[i]->value;
        if (strcmp(k, "none") == 0)
            kinds += v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
        else if (strcmp(k, "on") == 0)
            kinds += v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE && v->bool_value;
        else if (strcmp(k, "ratio") == 0)
            kinds += v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE &&
                     v->number_value == 2.5;
        else if (strcmp(k, "mixed") == 0)
            kinds += v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE &&
                     v->list_value->n_values == 3;
        else if (strcmp(k, "empty") == 0)
            kinds += v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE &&
                     v->struct_value->n_fields == 0;
    }
    cr_assert_eq(kinds, 5, "null, bool, number, list and object keep their kinds");
    PGresult *r = pgh_sql(arena_printf(sims_h.arena,
                                       "SELECT metadata->'mixed'->2->1->'deep'->>'x' AS x, "
                                       "jsonb_typeof(metadata->'floor') AS t FROM sims.sims "
                                       "WHERE iccid = '%s'",
                                       in.iccid));
    cr_assert_str_eq(PQgetvalue(r, 0, 0), "[null, false]", "stored as jsonb, not as text");
    cr_assert_str_eq(PQgetvalue(r, 0, 1), "number");
    PQclear(r);

    /* ImportSims carries it the same way; unset is {}. */
    Onceiot__Sims__V1__SimInput in2 = ONCEIOT__SIMS__V1__SIM_INPUT__INIT, in3 = in2;
    in2.iccid = (char *)sims_h_iccid(5);
    in2.organization_id = 1;
    in2.metadata = sims_h_struct("{\"slot\": [1, 2.25, \"x\"]}");
    in3.iccid = (char *)sims_h_iccid(6);
    in3.organization_id = 1;
    Onceiot__Sims__V1__SimInput *items[] = {&in2, &in3};
    Onceiot__Sims__V1__ImportSimsRequest imp = ONCEIOT__SIMS__V1__IMPORT_SIMS_REQUEST__INIT;
    imp.sims = items;
    imp.n_sims = 2;
    ProtobufCMessage *resp;
    cr_assert_eq(sims_h_call("ImportSims", &imp.base,
                             &onceiot__sims__v1__import_sims_response__descriptor, &staff, NULL,
                             &resp, &st),
                 0, "%s", st.message);
    cr_assert_eq(sims_h_get(&admin, in2.iccid, &s, &st), 0, "%s", st.message);
    cr_assert_str_eq(sims_h_json(s->metadata), "{\"slot\":[1,2.25,\"x\"]}");
    cr_assert_eq(sims_h_get(&admin, in3.iccid, &s, &st), 0, "%s", st.message);
    cr_assert(s->metadata && s->metadata->n_fields == 0, "no metadata reads back as {}");
}

/* Ways a metadata Struct is refused; all but OLD_STRING are Structs a
 * client can send that have no JSON form within the limits. */
typedef enum { TOO_DEEP, TOO_LARGE, NOT_FINITE, NO_KIND, OLD_STRING } bad_struct_t;

typedef struct bad_metadata {
    bad_struct_t kind;
    char field[32]; /* the violation's field, after the prefix */
} bad_metadata_t;

/* Sets the bad metadata of kind on m (a SimInput or SimChanges, whose
 * metadata is *slot and whose retired metadata_json string was old_tag). */
static void bad_metadata(bad_struct_t kind, ProtobufCMessage *m, Google__Protobuf__Struct **slot,
                         uint32_t old_tag)
{
    arena_t *a = sims_h.arena;
    if (kind == TOO_DEEP || kind == TOO_LARGE) {
        char *json;
        if (kind == TOO_DEEP) { /* 33 levels: the object and 32 arrays */
            json = arena_printf(a, "{\"a\": %.32s1%.32s}", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
                                "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]");
        } else { /* 64 KiB of JSON and a few bytes more */
            char *x = arena_alloc(a, 65537);
            memset(x, 'x', 65536);
            x[65536] = 0;
            json = arena_printf(a, "{\"x\": \"%s\"}", x);
        }
        *slot = sims_h_struct(json);
        return;
    }
    if (kind == OLD_STRING) {
        /* protobuf-c packs an unknown field's data as is: the length first. */
        static const char old[] = "\x0c{\"floor\": 3}";
        ProtobufCMessageUnknownField *u = arena_calloc(a, 1, sizeof(*u));
        u->tag = old_tag;
        u->wire_type = PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED;
        u->len = sizeof(old) - 1;
        u->data = (uint8_t *)old;
        m->unknown_fields = u;
        m->n_unknown_fields = 1;
        return;
    }
    Google__Protobuf__Value *v = arena_alloc(a, sizeof(*v));
    google__protobuf__value__init(v);
    if (kind == NOT_FINITE) {
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
        v->number_value = 1e308 * 10; /* infinity */
    }
    Google__Protobuf__Struct__FieldsEntry *e = arena_alloc(a, sizeof(*e));
    google__protobuf__struct__fields_entry__init(e);
    e->key = "n";
    e->value = v;
    Google__Protobuf__Struct *s = arena_alloc(a, sizeof(*s));
    google__protobuf__struct__init(s);
    s->fields = arena_alloc(a, sizeof(*s->fields));
    s->fields[0] = e;
    s->n_fields = 1;
    *slot = s;
}

ParameterizedTestParameters(sims_registry, bad_metadata_is_refused_naming_the_field)
{
    static bad_metadata_t bad[] = {
        {TOO_DEEP, "metadata"}, {TOO_LARGE, "metadata"},       {NOT_FINITE, "metadata"},
        {NO_KIND, "metadata"},  {OLD_STRING, "metadata_json"},
    };
    return cr_make_param_array(bad_metadata_t, bad, sizeof(bad) / sizeof(bad[0]));
}

/* Refused by CreateSim (nothing stored) and by UpdateSim (nothing changed),
 * INVALID_ARGUMENT naming the field. */
ParameterizedTest(bad_metadata_t *b, sims_registry, bad_metadata_is_refused_naming_the_field)
{
    principal_t staff = sims_h_root(), admin = sims_h_admin(1);
    Onceiot__Sims__V1__SimInput in = ONCEIOT__SIMS__V1__SIM_INPUT__INIT;
    in.iccid = (char *)sims_h_iccid(7);
    in.organization_id = 1;
    bad_metadata(b->kind, &in.base, &in.metadata, 10);
    Onceiot__Sims__V1__CreateSimRequest req = ONCEIOT__SIMS__V1__CREATE_SIM_REQUEST__INIT;
    req.sim = &in;
    ProtobufCMessage *resp;
    rpc_status_t st;
    cr_assert_eq(sims_h_call("CreateSim", &req.base, SIM_D, &staff, NULL, &resp, &st),
                 ERR_INVALID_ARGUMENT, "%s", st.message);
    const char *field = arena_printf(sims_h.arena, "sim.%s", b->field);
    cr_assert(sims_h_violation(&st, field), "expected %s in: %s", field, st.message);
    Onceiot__Sims__V1__Sim *s;
    cr_assert_eq(sims_h_get(&admin, in.iccid, &s, &st), ERR_NOT_FOUND, "nothing was stored");

    const char *iccid = sims_h_iccid(8);
    sims_h_create(&admin, iccid);
    Onceiot__Sims__V1__SimChanges ch = ONCEIOT__SIMS__V1__SIM_CHANGES__INIT;
    ch.metadata = sims_h_struct("{\"kept\": true}");
    char *paths[] = {"metadata", "label"};
    ch.label = "first";
    cr_assert_eq(update(&admin, iccid, &ch, paths, 2, &s, &st), 0, "%s", st.message);
    Onceiot__Sims__V1__SimChanges bad = ONCEIOT__SIMS__V1__SIM_CHANGES__INIT;
    bad.label = "second";
    bad_metadata(b->kind, &bad.base, &bad.metadata, 5);
    cr_assert_eq(update(&admin, iccid, &bad, paths, 2, &s, &st), ERR_INVALID_ARGUMENT, "%s",
                 st.message);
    field = arena_printf(sims_h.arena, "changes.%s", b->field);
    cr_assert(sims_h_violation(&st, field), "expected %s in: %s", field, st.message);
    cr_assert_eq(sims_h_get(&admin, iccid, &s, &st), 0, "%s", st.message);
    cr_assert_str_eq(sims_h_json(s->metadata), "{\"kept\":true}", "nothing changed");
    cr_assert_str_eq(s->label, "first", "nothing changed");
}

/* The bytes of a CreateSimRequest whose SIM's metadata nests levels
 * objects, {"a": {"a": ...}}, built from the inside out (protobuf-c would
 * recurse as deep to pack it). Returns the request in a BytesValue, whose
 * field 1 has the wire form of CreateSimRequest.sim. */
static Google__Protobuf__BytesValue *deep_create_request(const char *iccid, size_t levels,
                                                         size_t *size)
{
    size_t cap = levels * 16 + 64;
    uint8_t *buf = arena_alloc(sims_h.arena, cap), *end = buf + cap, *p = end;
#define PUT(b) (*--p = (uint8_t)(b))
    /* A length before the bytes that follow it, as a varint. */
#define PUT_LEN(n)                                                                                 \
    do {                                                                                           \
        uint8_t v[10];                                                                             \
        size_t k = 0, x = (n);                                                                     \
        do {                                                                                       \
            v[k++] = (uint8_t)((x & 0x7f) | (x > 0x7f ? 0x80 : 0));                                \
            x >>= 7;                                                                               \
        } while (x);                                                                               \
        while (k)                                                                                  \
            PUT(v[--k]);                                                                           \
    } while (0)
    for (size_t i = 0; i < levels; i++) {
        size_t n = (size_t)(end - p); /* the Struct inside */
        PUT_LEN(n);
        PUT(0x2a); /* Value.struct_value = 5 */
        n = (size_t)(end - p);
        PUT_LEN(n);
        PUT(0x12); /* FieldsEntry.value = 2 */
        PUT('a');
        PUT(1);
        PUT(0x0a); /* FieldsEntry.key = 1 */
        n = (size_t)(end - p);
        PUT_LEN(n);
        PUT(0x0a); /* Struct.fields = 1 */
        cr_assert_gt(p - buf, 32, "buffer");
    }
    size_t n = (size_t)(end - p);
    PUT_LEN(n);
    PUT(0x72); /* SimInput.metadata = 14 */
    for (size_t i = strlen(iccid); i > 0; i--)
        PUT(iccid[i - 1]);
    PUT(strlen(iccid));
    PUT(0x0a); /* SimInput.iccid = 1 */
#undef PUT_LEN
#undef PUT
    Google__Protobuf__BytesValue *bv = arena_alloc(sims_h.arena, sizeof(*bv));
    google__protobuf__bytes_value__init(bv);
    bv->value.data = p;
    bv->value.len = (size_t)(end - p);
    *size = bv->value.len;
    return bv;
}

/* protobuf-c recurses once per nested message: a Struct nested 100000 deep
 * would run the server's thread off its stack. It is refused on its bytes,
 * before decoding, and the server goes on serving. A Struct just within the
 * limit of the bytes is refused by the Struct check instead. */
Test(sims_registry, a_struct_nested_past_the_limit_is_refused_before_decoding)
{
    principal_t staff = sims_h_root(), admin = sims_h_admin(1);
    const size_t levels[] = {100000, 50, 35};
    for (size_t i = 0; i < 3; i++) {
        const char *iccid = sims_h_iccid(10 + (long long)i);
        size_t size;
        Google__Protobuf__BytesValue *req = deep_create_request(iccid, levels[i], &size);
        ProtobufCMessage *resp;
        rpc_status_t st;
        cr_assert_eq(sims_h_call("CreateSim", &req->base, SIM_D, &staff, NULL, &resp, &st),
                     ERR_INVALID_ARGUMENT, "%zu levels (%zu bytes): %s", levels[i], size,
                     st.message);
        /* Request, SIM input, the innermost Struct and 3 messages a level. */
        if (levels[i] * 3 + 3 > 128)
            cr_assert(strstr(st.message, "nests messages more than 128 deep"), "%s", st.message);
        else
            cr_assert(sims_h_violation(&st, "sim.metadata"), "%s", st.message);
        Onceiot__Sims__V1__Sim *s;
        cr_assert_eq(sims_h_get(&admin, iccid, &s, &st), ERR_NOT_FOUND, "%s", st.message);
    }
    cr_assert_not_null(sims_h_create(&admin, sims_h_iccid(20)), "still serving");
}

Test(sims_registry, every_filter_and_order_returns_the_matching_sims)
{
    principal_t admin = sims_h_admin(1);
    rpc_status_t st;
    cr_assert_eq(sims_h_import(&admin, 1, 300, &st, NULL), 0, "%s", st.message);
    sims_h_act(&admin, "ActivateSim", sims_h_iccid(42));
    sims_h_act(&admin, "ActivateSim", sims_h_iccid(7));
    Onceiot__Sims__V1__ListSimsRequest req = ONCEIOT__SIMS__V1__LIST_SIMS_REQUEST__INIT;
    req.page_size = 1000;
    Onceiot__Sims__V1__ListSimsResponse *page;

    req.status = ONCEIOT__SIMS__V1__SIM_STATUS__SIM_STATUS_ENABLED;
    cr_assert_eq(sims_h_list(&admin, &req, &page, &st), 0, "%s", st.message);
    cr_assert_eq(page->n_sims, 2);
    req.status = 0;

    req.label_contains = "r 0004";
    cr_assert_eq(sims_h_count_all(&admin, &req), 10, "tracker 00040..00049");
    req.label_contains = "";

    req.tag = "eu";
    cr_assert_eq(sims_h_count_all(&admin, &req), 150);
    req.tag = "";

    req.imei = (char *)arena_printf(sims_h.arena, "35%013d", 17);
    cr_assert_eq(sims_h_list(&admin, &req, &page, &st), 0, "%s", st.message);
    cr_assert_eq(page->n_sims, 1);
    cr_assert_str_eq(page->sims[0]->iccid, sims_h_iccid(17));
    req.imei = "";

    req.msisdn = (char *)arena_printf(sims_h.arena, "49%010d", 18);
    cr_assert_eq(sims_h_count_all(&admin, &req), 1);
    req.msisdn = "";

    req.ip_address = "10.0.1.4"; /* SIM 260 */
    cr_assert_eq(sims_h_list(&admin, &req, &page, &st), 0, "%s", st.message);
    cr_assert_eq(page->n_sims, 1);
    cr_assert_str_eq(page->sims[0]->iccid, sims_h_iccid(260));
    req.ip_address = "";

    req.iccid_prefix = (char *)arena_printf(sims_h.arena, "8988%013d", 1);
    cr_assert_eq(sims_h_count_all(&admin, &req), 100, "SIMs 100..199");
    req.iccid_prefix = "";

    req.customer_org_id = 2;
    cr_assert_eq(sims_h_count_all(&admin, &req), 100);
    req.customer_org_id = 0;

    req.order_by = ONCEIOT__SIMS__V1__SIM_ORDER_BY__SIM_ORDER_BY_ACTIVATION_DATE;
    req.page_size = 2;
    cr_assert_eq(sims_h_list(&admin, &req, &page, &st), 0, "%s", st.message);
    cr_assert_str_eq(page->sims[0]->iccid, sims_h_iccid(42), "activated first comes first");
    cr_assert_str_eq(page->sims[1]->iccid, sims_h_iccid(7));
    req.page_size = 7;
    cr_assert_eq(sims_h_count_all(&admin, &req), 300);

    req.order_by = ONCEIOT__SIMS__V1__SIM_ORDER_BY__SIM_ORDER_BY_LABEL;
    req.page_size = 1;
    req.page_token = "";
    cr_assert_eq(sims_h_list(&admin, &req, &page, &st), 0, "%s", st.message);
    cr_assert_str_eq(page->sims[0]->label, "tracker 00001");
    req.page_size = 13;
    cr_assert_eq(sims_h_count_all(&admin, &req), 300);
}

/* Found by fuzz_pagetoken: labels are up to 255 characters, 1020 bytes of
 * UTF-8, and a page token carrying one was once longer than decode took
 * back, so the next page of a list by label failed. */
Test(sims_registry, paging_by_the_longest_labels_reaches_every_sim)
{
    principal_t admin = sims_h_admin(1);
    char label[4 * 255 + 2];
    for (int i = 0; i < 3; i++) {
        const char *iccid = sims_h_iccid(60 + i);
        sims_h_create(&admin, iccid);
        size_t n = 0;
        for (int k = 0; k < 254; k++)
            n += (size_t)snprintf(label + n, sizeof(label) - n, "\xf0\x9f\x93\xa1"); /* 📡 */
        snprintf(label + n, sizeof(label) - n, "%d", i);
        Onceiot__Sims__V1__SimChanges ch = ONCEIOT__SIMS__V1__SIM_CHANGES__INIT;
        ch.label = label;
        char *paths[] = {"label"};
        Onceiot__Sims__V1__Sim *s;
        rpc_status_t st;
        cr_assert_eq(update(&admin, iccid, &ch, paths, 1, &s, &st), 0, "%s", st.message);
    }
    Onceiot__Sims__V1__ListSimsRequest req = ONCEIOT__SIMS__V1__LIST_SIMS_REQUEST__INIT;
    req.order_by = ONCEIOT__SIMS__V1__SIM_ORDER_BY__SIM_ORDER_BY_LABEL;
    req.page_size = 1;
    int seen = 0;
    Onceiot__Sims__V1__ListSimsResponse *page;
    rpc_status_t st;
    do {
        cr_assert_eq(sims_h_list(&admin, &req, &page, &st), 0, "page %d: %s", seen, st.message);
        seen += (int)page->n_sims;
        req.page_token = page->next_page_token;
    } while (*req.page_token && seen < 10);
    cr_assert_eq(seen, 3);
}

Test(sims_registry, page_size_and_filters_are_validated)
{
    principal_t admin = sims_h_admin(1);
    Onceiot__Sims__V1__ListSimsRequest req = ONCEIOT__SIMS__V1__LIST_SIMS_REQUEST__INIT;
    Onceiot__Sims__V1__ListSimsResponse *page;
    rpc_status_t st;
    req.page_size = 1001;
    cr_assert_eq(sims_h_list(&admin, &req, &page, &st), ERR_INVALID_ARGUMENT);
    cr_assert(sims_h_violation(&st, "page_size"));
    req.page_size = 10;
    req.iccid_prefix = "89a";
    req.imei = "12";
    req.ip_address = "nope";
    cr_assert_eq(sims_h_list(&admin, &req, &page, &st), ERR_INVALID_ARGUMENT);
    cr_assert(sims_h_violation(&st, "iccid_prefix") && sims_h_violation(&st, "imei") &&
                  sims_h_violation(&st, "ip_address"),
              "%s", st.message);
}

Test(sims_registry, a_page_token_used_with_other_filters_is_invalid)
{
    principal_t admin = sims_h_admin(1);
    rpc_status_t st;
    cr_assert_eq(sims_h_import(&admin, 1, 30, &st, NULL), 0, "%s", st.message);
    Onceiot__Sims__V1__ListSimsRequest req = ONCEIOT__SIMS__V1__LIST_SIMS_REQUEST__INIT;
    req.page_size = 10;
    Onceiot__Sims__V1__ListSimsResponse *page;
    cr_assert_eq(sims_h_list(&admin, &req, &page, &st), 0);
    cr_assert(*page->next_page_token);
    req.page_token = page->next_page_token;
    req.tag = "eu";
    cr_assert_eq(sims_h_list(&admin, &req, &page, &st), ERR_INVALID_ARGUMENT);
    cr_assert(sims_h_violation(&st, "page_token"));
    req.tag = "";
    req.page_token = "garbage!";
    cr_assert_eq(sims_h_list(&admin, &req, &page, &st), ERR_INVALID_ARGUMENT);
}

/* The inserter of pages_stay_correct_while_sims_are_inserted: it registers
 * SIMs (numbers ending in 25: before, between and after the existing ones)
 * until told to stop, at most AHEAD more than the pages read so far, so the
 * inserts spread over the whole paging. Failures are recorded, not asserted
 * (Criterion's assertions belong to the test's own thread). */
typedef struct inserter {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* broadcast on every insert and every page */
    arena_t *arena;
    bool stop;       /* guarded by mu */
    int pages;       /* pages read; guarded by mu */
    int inserted;    /* guarded by mu */
    int failures;    /* guarded by mu */
    char error[256]; /* the first failure */
} inserter_t;

#define MAX_INSERTS 1000
#define AHEAD       3

static void *insert_while_paging(void *arg)
{
    inserter_t *in = arg;
    principal_t staff = sims_h_root();
    for (long long i = 0; i < MAX_INSERTS; i++) {
        pthread_mutex_lock(&in->mu);
        while (!in->stop && in->inserted >= in->pages + AHEAD)
            pthread_cond_wait(&in->cv, &in->mu);
        bool stop = in->stop;
        pthread_mutex_unlock(&in->mu);
        if (stop)
            break;
        Onceiot__Sims__V1__SimInput sim = ONCEIOT__SIMS__V1__SIM_INPUT__INIT;
        sim.iccid = arena_printf(in->arena, "8988%015lld", i * 50 + 25);
        sim.organization_id = 1;
        Onceiot__Sims__V1__CreateSimRequest req = ONCEIOT__SIMS__V1__CREATE_SIM_REQUEST__INIT;
        req.sim = &sim;
        ProtobufCMessage *resp;
        rpc_status_t st;
        int rc = sims_h_call("CreateSim", &req.base, SIM_D, &staff, in->arena, &resp, &st);
        pthread_mutex_lock(&in->mu);
        if (rc == 0) {
            in->inserted++;
        } else if (in->failures++ == 0) {
            snprintf(in->error, sizeof(in->error), "CreateSim %s: %s: %s", sim.iccid,
                     err_grpc_name(st.code), st.message);
        }
        pthread_cond_broadcast(&in->cv);
        pthread_mutex_unlock(&in->mu);
        if (rc != 0)
            break;
    }
    return NULL;
}

/* Before page k (from 0): waits (up to 10 s) until the inserter has
 * registered more than k SIMs; returns how many it has. */
static int inserted_before_page(inserter_t *in, int k)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&in->mu);
    while (in->inserted <= k && !in->failures)
        if (pthread_cond_timedwait(&in->cv, &in->mu, &until) != 0)
            break;
    int got = in->inserted;
    pthread_mutex_unlock(&in->mu);
    return got;
}

static void page_read(inserter_t *in)
{
    pthread_mutex_lock(&in->mu);
    in->pages++;
    pthread_cond_broadcast(&in->cv);
    pthread_mutex_unlock(&in->mu);
}

Test(sims_registry, pages_stay_correct_while_sims_are_inserted)
{
    principal_t admin = sims_h_admin(1);
    rpc_status_t st;
    /* Existing SIMs: every 50th number from 50 (none ends in 25). */
    Onceiot__Sims__V1__ImportSimsRequest imp = ONCEIOT__SIMS__V1__IMPORT_SIMS_REQUEST__INIT;
    imp.sims = arena_alloc(sims_h.arena, 1000 * sizeof(*imp.sims));
    for (int i = 1; i <= 1000; i++) {
        Onceiot__Sims__V1__SimInput *in = arena_alloc(sims_h.arena, sizeof(*in));
        onceiot__sims__v1__sim_input__init(in);
        in->iccid = (char *)sims_h_iccid((long long)i * 50);
        in->organization_id = 1;
        imp.sims[imp.n_sims++] = in;
    }
    ProtobufCMessage *resp;
    principal_t staff = sims_h_root();
    cr_assert_eq(sims_h_call("ImportSims", &imp.base,
                             &onceiot__sims__v1__import_sims_response__descriptor, &staff, NULL,
                             &resp, &st),
                 0, "%s", st.message);
    inserter_t ins = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    ins.arena = sims_h_thread_arena();
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, insert_while_paging, &ins), 0);
    Onceiot__Sims__V1__ListSimsRequest req = ONCEIOT__SIMS__V1__LIST_SIMS_REQUEST__INIT;
    req.page_size = 25;
    static char seen[1001];
    char prev[32] = "";
    Onceiot__Sims__V1__ListSimsResponse *page;
    int pages = 0, first = -1, last = -1;
    do {
        /* Page k is read once more than k SIMs were inserted, and the
         * inserter stays at most AHEAD inserts ahead of the pages: the inserts
         * run alongside the paging from its first page to its last. */
        last = inserted_before_page(&ins, pages);
        if (first < 0)
            first = last;
        cr_assert_eq(sims_h_list(&admin, &req, &page, &st), 0, "%s", st.message);
        pages++;
        page_read(&ins);
        for (size_t i = 0; i < page->n_sims; i++) {
            const char *iccid = page->sims[i]->iccid;
            cr_assert_gt(strcmp(iccid, prev), 0, "order broken or duplicate at %s", iccid);
            snprintf(prev, sizeof(prev), "%s", iccid);
            long long n = atoll(iccid + 4);
            if (n % 50 == 0)
                seen[n / 50]++;
        }
        req.page_token = page->next_page_token;
    } while (*req.page_token);
    pthread_mutex_lock(&ins.mu);
    ins.stop = true;
    pthread_mutex_unlock(&ins.mu);
    pthread_join(th, NULL);
    cr_assert_eq(ins.failures, 0, "%s", ins.error);
    cr_assert_geq(pages, 40, "1000 existing SIMs in pages of 25");
    cr_assert_leq(first, AHEAD, "few inserts before the first page (%d)", first);
    cr_assert_geq(last, pages, "inserts kept coming until the last page (%d, %d pages)", last,
                  pages);
    for (int i = 1; i <= 1000; i++)
        cr_assert_eq(seen[i], 1, "pre-existing SIM %d seen %d times", i * 50, seen[i]);
}

Test(sims_registry, update_changes_only_the_masked_fields)
{
    principal_t user = sims_h_user(1), admin = sims_h_admin(1);
    const char *iccid = sims_h_iccid(9);
    sims_h_create(&admin, iccid);
    Onceiot__Sims__V1__SimChanges ch = ONCEIOT__SIMS__V1__SIM_CHANGES__INIT;
    ch.label = "pump 7";
    ch.imei = "350000000000007";
    ch.imei_lock = true;
    char *tags[] = {"pumps", "site:berlin"};
    ch.tags = tags;
    ch.n_tags = 2;
    ch.metadata = sims_h_struct("{\"floor\": 3, \"rooms\": [\"a\", {\"b\": null}]}");
    ch.customer_org_id = 77;
    char *paths[] = {"label", "imei", "imei_lock", "tags", "metadata"};
    Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    mask.paths = paths;
    mask.n_paths = 5;
    Onceiot__Sims__V1__UpdateSimRequest req = ONCEIOT__SIMS__V1__UPDATE_SIM_REQUEST__INIT;
    req.iccid = (char *)iccid;
    req.changes = &ch;
    req.update_mask = &mask;
    Onceiot__Sims__V1__Sim *s;
    rpc_status_t st;
    cr_assert_eq(
        sims_h_call("UpdateSim", &req.base, SIM_D, &user, NULL, (ProtobufCMessage **)&s, &st), 0,
        "%s", st.message);
    cr_assert_str_eq(s->label, "pump 7");
    cr_assert_str_eq(s->imei, "350000000000007");
    cr_assert(s->imei_lock);
    cr_assert_eq(s->n_tags, 2);
    cr_assert_str_eq(s->tags[1], "site:berlin");
    cr_assert_str_eq(sims_h_json(s->metadata), "{\"floor\":3,\"rooms\":[\"a\",{\"b\":null}]}");
    cr_assert_eq(s->customer_org_id, 0, "not in the mask");

    char *bad[] = {"status"};
    mask.paths = bad;
    mask.n_paths = 1;
    cr_assert_eq(
        sims_h_call("UpdateSim", &req.base, SIM_D, &user, NULL, (ProtobufCMessage **)&s, &st),
        ERR_INVALID_ARGUMENT);
    cr_assert(sims_h_violation(&st, "update_mask"));
    char *old[] = {"metadata_json"}; /* not an alias: the old field would clear the metadata */
    mask.paths = old;
    cr_assert_eq(
        sims_h_call("UpdateSim", &req.base, SIM_D, &user, NULL, (ProtobufCMessage **)&s, &st),
        ERR_INVALID_ARGUMENT);
    cr_assert(sims_h_violation(&st, "update_mask") && strstr(st.message, "replaced by metadata"),
              "%s", st.message);
    mask.n_paths = 0;
    cr_assert_eq(
        sims_h_call("UpdateSim", &req.base, SIM_D, &user, NULL, (ProtobufCMessage **)&s, &st),
        ERR_INVALID_ARGUMENT);
}

Test(sims_registry, bulk_update_reports_each_iccid)
{
    principal_t user = sims_h_user(1), admin = sims_h_admin(1), other = sims_h_admin(2);
    sims_h_create(&admin, sims_h_iccid(1));
    sims_h_create(&admin, sims_h_iccid(2));
    sims_h_create(&other, sims_h_iccid(3));
    char *ids[] = {(char *)sims_h_iccid(1), (char *)sims_h_iccid(3), "42", (char *)sims_h_iccid(2)};
    Onceiot__Sims__V1__SimChanges ch = ONCEIOT__SIMS__V1__SIM_CHANGES__INIT;
    ch.label = "bulk";
    char *paths[] = {"label"};
    Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    mask.paths = paths;
    mask.n_paths = 1;
    Onceiot__Sims__V1__BulkUpdateSimsRequest req =
        ONCEIOT__SIMS__V1__BULK_UPDATE_SIMS_REQUEST__INIT;
    req.iccids = ids;
    req.n_iccids = 4;
    req.changes = &ch;
    req.update_mask = &mask;
    Onceiot__Sims__V1__BulkUpdateSimsResponse *out;
    rpc_status_t st;
    cr_assert_eq(sims_h_call("BulkUpdateSims", &req.base,
                             &onceiot__sims__v1__bulk_update_sims_response__descriptor, &user, NULL,
                             (ProtobufCMessage **)&out, &st),
                 0, "%s", st.message);
    cr_assert_eq(out->updated, 2);
    cr_assert_eq(out->n_results, 4);
    cr_assert_eq(out->results[0]->code, 0);
    cr_assert_eq(out->results[1]->code, GRPC_STATUS_NOT_FOUND, "another tenant's SIM");
    cr_assert_eq(out->results[2]->code, GRPC_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(out->results[3]->code, 0);
    Onceiot__Sims__V1__Sim *s;
    cr_assert_eq(sims_h_get(&other, sims_h_iccid(3), &s, &st), 0);
    cr_assert_str_eq(s->label, "", "the other tenant's SIM is unchanged");
}

Test(sims_registry, another_organization_sees_nothing_and_a_superuser_everything)
{
    principal_t a = sims_h_admin(1), b = sims_h_admin(2), root = sims_h_root();
    const char *iccid = sims_h_iccid(5);
    sims_h_create(&a, iccid);
    Onceiot__Sims__V1__Sim *s;
    rpc_status_t st;
    cr_assert_eq(sims_h_get(&b, iccid, &s, &st), ERR_NOT_FOUND);
    cr_assert_eq(sims_h_get(&root, iccid, &s, &st), 0);
    Onceiot__Sims__V1__ListSimsRequest req = ONCEIOT__SIMS__V1__LIST_SIMS_REQUEST__INIT;
    Onceiot__Sims__V1__ListSimsResponse *page;
    cr_assert_eq(sims_h_list(&b, &req, &page, &st), 0);
    cr_assert_eq(page->n_sims, 0);
    cr_assert_eq(sims_h_list(&root, &req, &page, &st), 0);
    cr_assert_eq(page->n_sims, 1);

    Onceiot__Sims__V1__SimChanges ch = ONCEIOT__SIMS__V1__SIM_CHANGES__INIT;
    char *paths[] = {"label"};
    Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    mask.paths = paths;
    mask.n_paths = 1;
    Onceiot__Sims__V1__UpdateSimRequest up = ONCEIOT__SIMS__V1__UPDATE_SIM_REQUEST__INIT;
    up.iccid = (char *)iccid;
    up.changes = &ch;
    up.update_mask = &mask;
    cr_assert_eq(sims_h_call("UpdateSim", &up.base, SIM_D, &b, NULL, (ProtobufCMessage **)&s, &st),
                 ERR_NOT_FOUND);
}

Test(sims_registry, calls_without_a_valid_principal_are_unauthenticated)
{
    Onceiot__Sims__V1__GetSimRequest req = ONCEIOT__SIMS__V1__GET_SIM_REQUEST__INIT;
    req.iccid = (char *)sims_h_iccid(1);
    ProtobufCMessage *resp;
    rpc_status_t st;
    cr_assert_eq(rpc_unary(sims_h.ch, "/onceiot.sims.v1.SimService/GetSim", &req.base, SIM_D,
                           sims_h.arena, NULL, &resp, &st),
                 ERR_UNAUTHENTICATED);
    principal_key_t wrong = sims_h.key;
    wrong.bytes[0] ^= 1;
    principal_t p = sims_h_admin(1);
    rpc_md_t md[2];
    principal_sign(&wrong, &p, "/onceiot.sims.v1.SimService/GetSim", sims_h.arena, md);
    rpc_call_opts_t opts = {.metadata = md, .n_metadata = 2};
    cr_assert_eq(rpc_unary(sims_h.ch, "/onceiot.sims.v1.SimService/GetSim", &req.base, SIM_D,
                           sims_h.arena, &opts, &resp, &st),
                 ERR_UNAUTHENTICATED);
}
