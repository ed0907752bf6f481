/* Server reflection: what grpcurl and other tools use to discover services
 * and message types at run time. Every answer comes from the descriptor set
 * linked into the binary, serving each file's bytes exactly as protoc wrote
 * them. v1 and v1alpha are the same protocol under two names: one handler
 * serves both, with the v1 message types. */
#include "reflection.h"

#include <stdbool.h>
#include <string.h>

typedef Grpc__Reflection__V1__ServerReflectionRequest reflection_req_t;
typedef Grpc__Reflection__V1__ServerReflectionResponse reflection_resp_t;

/* Clients send fully-qualified names, some with protobuf's leading dot. */
static const char *reflection__symbol(const char *name)
{
    return name[0] == '.' ? name + 1 : name;
}

static void reflection__error(reflection_resp_t *resp, arena_t *a, grpc_status_code code,
                              const char *message)
{
    Grpc__Reflection__V1__ErrorResponse *e = arena_alloc(a, sizeof *e);
    grpc__reflection__v1__error_response__init(e);
    e->error_code = (int32_t)code;
    e->error_message = arena_strdup(a, message);
    resp->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
    resp->error_response = e;
}

/* Answers with a file and every file it imports, directly or not, each once
 * and the requested file first (clients resolve imports from the same
 * answer). Files already sent earlier in the stream are sent again: the
 * protocol allows skipping them, but not every client copes. */
static void reflection__files(reflection_resp_t *resp, const descset_t *ds, size_t file, arena_t *a)
{
    size_t n_files = descset_file_count(ds);
    bool *seen = arena_calloc(a, n_files, sizeof *seen);
    size_t *order = arena_calloc(a, n_files, sizeof *order);
    size_t n = 0;
    order[n++] = file;
    seen[file] = true;
    for (size_t i = 0; i < n; i++) {
        const descset_file_t *f = descset_file(ds, order[i]);
        for (size_t j = 0; j < f->n_deps; j++) {
            if (!seen[f->deps[j]]) {
                seen[f->deps[j]] = true;
                order[n++] = f->deps[j];
            }
        }
    }

    Grpc__Reflection__V1__FileDescriptorResponse *fdr = arena_alloc(a, sizeof *fdr);
    grpc__reflection__v1__file_descriptor_response__init(fdr);
    fdr->file_descriptor_proto = arena_calloc(a, n, sizeof *fdr->file_descriptor_proto);
    fdr->n_file_descriptor_proto = n;
    for (size_t i = 0; i < n; i++) {
        const descset_file_t *f = descset_file(ds, order[i]);
        /* protobuf-c's bytes type is not const, but packing only reads it. */
        fdr->file_descriptor_proto[i] =
            (ProtobufCBinaryData){.len = f->len, .data = (uint8_t *)f->bytes};
    }
    resp->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
    resp->file_descriptor_response = fdr;
}

static void reflection__list_services(reflection_resp_t *resp, const descset_t *ds, arena_t *a)
{
    size_t n = descset_service_count(ds);
    Grpc__Reflection__V1__ListServiceResponse *ls = arena_alloc(a, sizeof *ls);
    grpc__reflection__v1__list_service_response__init(ls);
    ls->service = arena_calloc(a, n, sizeof *ls->service);
    ls->n_service = n;
    for (size_t i = 0; i < n; i++) {
        Grpc__Reflection__V1__ServiceResponse *s = arena_alloc(a, sizeof *s);
        grpc__reflection__v1__service_response__init(s);
        s->name = (char *)descset_service_name(ds, i);
        ls->service[i] = s;
    }
    resp->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
    resp->list_services_response = ls;
}

/* The set carries no index of extensions, and no client needs one to work:
 * an existing type answers with no extension numbers (grpcurl's describe asks
 * this of option types and treats an error as fatal). */
static void reflection__extension_numbers(reflection_resp_t *resp, const descset_t *ds,
                                          const char *type, arena_t *a)
{
    const char *name = reflection__symbol(type);
    if (descset_find_symbol(ds, name) < 0) {
        reflection__error(resp, a, GRPC_STATUS_NOT_FOUND,
                          arena_printf(a, "type not found: %s", type));
        return;
    }
    Grpc__Reflection__V1__ExtensionNumberResponse *en = arena_alloc(a, sizeof *en);
    grpc__reflection__v1__extension_number_response__init(en);
    en->base_type_name = arena_strdup(a, name);
    resp->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
    resp->all_extension_numbers_response = en;
}

int reflection__answer(const descset_t *ds, const reflection_req_t *req, arena_t *a,
                       reflection_resp_t **out)
{
    reflection_resp_t *resp = arena_alloc(a, sizeof *resp);
    grpc__reflection__v1__server_reflection_response__init(resp);
    /* Echoed as the protocol asks; packing only reads the request. */
    resp->valid_host = req->host;
    resp->original_request = (reflection_req_t *)req;

    long file;
    switch (req->message_request_case) {
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
        file = descset_find_file(ds, req->file_by_filename);
        if (file < 0) {
            reflection__error(resp, a, GRPC_STATUS_NOT_FOUND,
                              arena_printf(a, "file not found: %s", req->file_by_filename));
        } else {
            reflection__files(resp, ds, (size_t)file, a);
        }
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
        file = descset_find_symbol(ds, reflection__symbol(req->file_containing_symbol));
        if (file < 0) {
            reflection__error(resp, a, GRPC_STATUS_NOT_FOUND,
                              arena_printf(a, "symbol not found: %s", req->file_containing_symbol));
        } else {
            reflection__files(resp, ds, (size_t)file, a);
        }
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION:
        reflection__error(resp, a, GRPC_STATUS_NOT_FOUND,
                          arena_printf(a, "extension %d of %s not found",
                                       req->file_containing_extension->extension_number,
                                       req->file_containing_extension->containing_type));
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
        reflection__extension_numbers(resp, ds, req->all_extension_numbers_of_type, a);
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
        reflection__list_services(resp, ds, a);
        break;
    default:
        /* No request set, or one newer than this protocol version. gRPC's own
         * reflection service answers these with UNIMPLEMENTED too. */
        reflection__error(resp, a, GRPC_STATUS_UNIMPLEMENTED, "unsupported reflection request");
        break;
    }
    *out = resp;
    return 0;
}

/* ServerReflectionInfo: one answer per request, until the client closes its
 * side. Each answer is built in an arena of its own, so a long-lived
 * reflection stream does not grow with the answers it has sent. */
static int reflection__info(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    /* The context is the server's pointer to the set to serve. */
    const descset_t *ds = *(const descset_t *const *)rpc_call_ctx(call);
    ProtobufCMessage *msg = NULL;
    int rc;
    while ((rc = rpc_recv(call, &msg)) > 0) {
        arena_t *a = arena_new();
        reflection_resp_t *answer = NULL;
        rc = reflection__answer(ds, (const reflection_req_t *)msg, a, &answer);
        if (rc == 0) {
            rc = rpc_send(call, &answer->base);
        }
        arena_free(a);
        if (rc < 0) {
            break;
        }
    }
    return rc;
}

static const rpc_method_impl_t reflection__methods[] = {
    {.name = "ServerReflectionInfo", .fn = reflection__info},
};

const rpc_service_impl_t reflection_v1_service = {
    .descriptor = &grpc__reflection__v1__server_reflection__descriptor,
    .methods = reflection__methods,
    .n_methods = 1,
};

/* v1alpha is not generated: its messages are wire-identical to v1, so its
 * only method takes and returns the v1 types. */
static const ProtobufCMethodDescriptor reflection__v1alpha_methods[] = {
    {"ServerReflectionInfo", &grpc__reflection__v1__server_reflection_request__descriptor,
     &grpc__reflection__v1__server_reflection_response__descriptor},
};
static const unsigned reflection__v1alpha_method_index[] = {0};
static const ProtobufCServiceDescriptor reflection__v1alpha_descriptor = {
    .magic = PROTOBUF_C__SERVICE_DESCRIPTOR_MAGIC,
    .name = "grpc.reflection.v1alpha.ServerReflection",
    .short_name = "ServerReflection",
    .c_name = "Grpc__Reflection__V1alpha__ServerReflection",
    .package = "grpc.reflection.v1alpha",
    .n_methods = 1,
    .methods = reflection__v1alpha_methods,
    .method_indices_by_name = reflection__v1alpha_method_index,
};

const rpc_service_impl_t reflection_v1alpha_service = {
    .descriptor = &reflection__v1alpha_descriptor,
    .methods = reflection__methods,
    .n_methods = 1,
};
