/* Every public method's request as the services receive it: the first two
 * bytes pick a method of the product's descriptor set, the rest is decoded
 * as its request type (its nesting checked on the bytes first, then
 * protobuf-c into an arena, as the server does), then
 * the field validators the handlers run are applied to every field by name,
 * in nested messages too, on a detached call: no database, no server. A
 * decoded request must pack to its computed size. (It need not decode
 * again: protobuf-c 1.4.1 keeps a field numbered 0, sent as the
 * non-canonical tag 80 00, as an unknown field and re-encodes it as 00,
 * which its own decoder refuses. Harmless to us: no service re-encodes a
 * request.) */
#include "commerce.h"
#include "identity.h"
#include "onceiot/descset.h"
#include "onceiot/pbnest.h"
#include "sims.h"
#include "support/v1/support.pb-c.h"
#include "usage.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The services of the product, as protobuf-c generates them; every
 * onceiot service of the descriptor set must be here (else the fuzzer
 * stops at once, naming none: add the new service's descriptor). */
static const ProtobufCServiceDescriptor *const services[] = {
    &onceiot__identity__v1__identity_service__descriptor,
    &onceiot__sims__v1__sim_service__descriptor,
    &onceiot__usage__v1__usage_service__descriptor,
    &onceiot__commerce__v1__commerce_service__descriptor,
    &onceiot__support__v1__support_service__descriptor,
};
#define N_SERVICES  (sizeof(services) / sizeof(services[0]))
#define MAX_METHODS 256

static const ProtobufCMessageDescriptor *inputs[MAX_METHODS];
static size_t n_inputs;

static void fuzz__index(void)
{
    descset_t *ds;
    if (descset_load_embedded(&ds) < 0)
        __builtin_trap();
    for (size_t i = 0; i < descset_service_count(ds); i++) {
        const char *name = descset_service_name(ds, i);
        if (strncmp(name, "onceiot.", 8) != 0)
            continue;
        size_t k = 0;
        while (k < N_SERVICES && strcmp(services[k]->name, name) != 0)
            k++;
        if (k == N_SERVICES)
            __builtin_trap(); /* a service of the set is missing from services[] */
        for (unsigned m = 0; m < services[k]->n_methods && n_inputs < MAX_METHODS; m++)
            inputs[n_inputs++] = services[k]->methods[m].input;
    }
    descset_free(ds);
}

static void fuzz__string(rpc_call_t *call, arena_t *a, const char *name, const char *v)
{
    if (!v)
        return;
    if (strcmp(name, "iccid") == 0) {
        sims_valid_iccid(call, name, v);
        usage_valid_iccid(call, USAGE_AT_TOP, name, v);
    } else if (strcmp(name, "imei") == 0) {
        sims_valid_imei(call, name, v);
    } else if (strcmp(name, "msisdn") == 0) {
        sims_valid_msisdn(call, name, v);
    } else if (strcmp(name, "imsi") == 0) {
        sims_valid_imsi(call, name, v);
    } else if (strcmp(name, "label") == 0) {
        sims_valid_label(call, name, v);
    } else if (strcmp(name, "ip_address") == 0) {
        sims_valid_ip(call, name, v);
    } else if (strcmp(name, "text") == 0) {
        sims_sms_shape_t shape;
        sims_sms_measure(call, name, v, &shape);
    } else if (strcmp(name, "username") == 0) {
        identity_validate_username(call, name, v);
    } else if (strcmp(name, "email") == 0) {
        identity_validate_email(call, name, v);
    } else if (strstr(name, "password")) {
        identity_validate_password(call, name, v);
    } else if (strcmp(name, "full_name") == 0) {
        identity_validate_full_name(call, name, v);
    } else if (strcmp(name, "id") == 0 || strcmp(name, "product_id") == 0) {
        commerce_valid_uuid(call, name, v); /* the string ids are commerce's */
    } else if (strcmp(name, "page_token") == 0) {
        int64_t last = 0;
        identity_page_token_parse(call, name, v, "users", &last);
        const char *key, *after;
        (void)pagetoken_decode(call, v, 42, &key, &after);
    }
    (void)a;
}

static void fuzz__message(rpc_call_t *call, arena_t *a, const ProtobufCMessage *msg, int depth)
{
    /* Any depth: pbnest bounds it, and the conversion must hold there. */
    if (msg && msg->descriptor == &google__protobuf__struct__descriptor) {
        const char *json;
        if (pbstruct_to_json(call, "struct", (const Google__Protobuf__Struct *)msg, 65536, &json) &&
            !pbstruct_from_json(a, json))
            __builtin_trap(); /* the text it wrote must read back */
        return;
    }
    if (!msg || depth > 8)
        return;
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *at = (const char *)msg + f->offset;
        size_t n = f->label == PROTOBUF_C_LABEL_REPEATED
                       ? *(const size_t *)((const char *)msg + f->quantifier_offset)
                       : 1;
        if (f->type == PROTOBUF_C_TYPE_STRING) {
            if (f->label != PROTOBUF_C_LABEL_REPEATED) {
                fuzz__string(call, a, f->name, *(char *const *)at);
                continue;
            }
            char **v = *(char **const *)at;
            if (strcmp(f->name, "tags") == 0)
                sims_valid_tags(call, f->name, v, n);
            else if (strcmp(f->name, "scopes") == 0)
                identity_validate_scopes(call, f->name, v, n);
            else
                for (size_t k = 0; k < n; k++)
                    fuzz__string(call, a, strcmp(f->name, "iccids") == 0 ? "iccid" : f->name, v[k]);
        } else if (f->type == PROTOBUF_C_TYPE_INT32 && strcmp(f->name, "page_size") == 0) {
            (void)identity_validate_page_size(call, f->name, *(const int32_t *)at);
            (void)pagetoken_page_size(call, *(const int32_t *)at, 100, 1000);
        } else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
            if (f->label != PROTOBUF_C_LABEL_REPEATED) {
                fuzz__message(call, a, *(ProtobufCMessage *const *)at, depth + 1);
                continue;
            }
            ProtobufCMessage **v = *(ProtobufCMessage * *const *)at;
            for (size_t k = 0; k < n; k++)
                fuzz__message(call, a, v[k], depth + 1);
        }
    }
    if (d == &onceiot__commerce__v1__money__descriptor)
        commerce_valid_money(call, "price", (const Onceiot__Commerce__V1__Money *)msg);
    if (d == &onceiot__commerce__v1__product__descriptor) {
        const Onceiot__Commerce__V1__Product *p = (const void *)msg;
        const char *json;
        commerce_valid_specs(call, "specifications", commerce_category_name(p->category),
                             p->specifications, &json);
    }
    if (d == &onceiot__usage__v1__ingest_usage_batch_request__descriptor)
        usage_valid_batch(call, (const Onceiot__Usage__V1__IngestUsageBatchRequest *)msg,
                          1800000000000000);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!n_inputs)
        fuzz__index();
    if (size < 2)
        return 0;
    const ProtobufCMessageDescriptor *d = inputs[((size_t)data[0] << 8 | data[1]) % n_inputs];
    rpc_call_t *call = rpc_call_detached_new();
    arena_t *a = rpc_call_arena(call);
    ProtobufCMessage *m = pbnest_within(d, data + 2, size - 2, PBNEST_MAX_DEPTH)
                              ? protobuf_c_message_unpack(d, arena_allocator(a), size - 2, data + 2)
                              : NULL;
    if (m) {
        fuzz__message(call, a, m, 0);
        (void)rpc_check_violations(call);
        size_t len = protobuf_c_message_get_packed_size(m);
        uint8_t *buf = arena_alloc(a, len + 1);
        if (protobuf_c_message_pack(m, buf) != len)
            __builtin_trap();
    }
    rpc_call_detached_free(call);
    return 0;
}
