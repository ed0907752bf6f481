/* Server reflection's answers, request by request, from a descriptor set that
 * protoc builds here: the test service, health, both reflection protos, and
 * two small protos written by the fixture so that imports form a chain with a
 * shared leaf (opt.proto -> base.proto -> descriptor.proto, and opt.proto ->
 * descriptor.proto). Each answer is packed and parsed again, so what is
 * checked is what a client would receive. */
#include "../../shared/src/reflection.h"
#include "descset_fixture.h"
#include "google/protobuf/descriptor.pb-c.h"
#include "onceiot/descset.h"
#include "onceiot/mem.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef Grpc__Reflection__V1__ServerReflectionRequest req_t;
typedef Grpc__Reflection__V1__ServerReflectionResponse resp_t;

static const char opt_proto[] = "syntax = \"proto3\";\n"
                                "package onceiot.opttest.v1;\n"
                                "import \"google/protobuf/descriptor.proto\";\n"
                                "import \"opt/v1/base.proto\";\n"
                                "message Outer {\n"
                                "  message Inner { int32 n = 1; }\n"
                                "  Inner inner = 1;\n"
                                "  google.protobuf.MethodOptions opts = 2;\n"
                                "}\n"
                                "service OptService {\n"
                                "  rpc Get(Outer) returns (Outer) { option (rule) = \"admin\"; }\n"
                                "}\n";
static const char base_proto[] = "syntax = \"proto3\";\n"
                                 "package onceiot.opttest.v1;\n"
                                 "import \"google/protobuf/descriptor.proto\";\n"
                                 "extend google.protobuf.MethodOptions { string rule = 50001; }\n";

static uint8_t *set_bytes;
static size_t set_len;
static descset_t *ds;
static arena_t *arena;

static void setup(void)
{
    const dsf_file_t extra[] = {{"opt/v1/opt.proto", opt_proto}, {"opt/v1/base.proto", base_proto}};
    set_bytes = dsf_build(extra, 2, &set_len);
    cr_assert_eq(descset_load(set_bytes, set_len, &ds), 0);
    arena = arena_new();
}

static void teardown(void)
{
    arena_free(arena);
    arena = NULL;
    descset_free(ds);
    ds = NULL;
    mem_free(set_bytes);
    set_bytes = NULL;
}

TestSuite(reflection, .init = setup, .fini = teardown);

/* Answers a request, then packs and parses the answer as a client would. */
static const resp_t *ask(const req_t *req)
{
    resp_t *resp = NULL;
    cr_assert_eq(reflection__answer(ds, req, arena, &resp), 0);
    cr_assert_not_null(resp);
    size_t len = protobuf_c_message_get_packed_size(&resp->base);
    uint8_t *buf = arena_alloc(arena, len);
    cr_assert_eq(protobuf_c_message_pack(&resp->base, buf), len);
    const resp_t *got =
        grpc__reflection__v1__server_reflection_response__unpack(arena_allocator(arena), len, buf);
    cr_assert_not_null(got, "the answer does not parse");
    cr_assert_str_eq(got->valid_host, req->host);
    cr_assert_not_null(got->original_request);
    cr_assert_eq(got->original_request->message_request_case, req->message_request_case);
    return got;
}

static req_t by_filename(const char *name)
{
    req_t req = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
    req.host = "localhost:50051";
    req.message_request_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME;
    req.file_by_filename = (char *)name;
    return req;
}

static req_t by_symbol(const char *symbol)
{
    req_t req = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
    req.host = "localhost:50051";
    req.message_request_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL;
    req.file_containing_symbol = (char *)symbol;
    return req;
}

/* Checks that a response carries exactly the named files, in order, each as
 * the exact bytes of the set. */
static void assert_files(const resp_t *resp, const char *const *names, size_t n)
{
    cr_assert_eq(
        resp->message_response_case,
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE);
    const Grpc__Reflection__V1__FileDescriptorResponse *fdr = resp->file_descriptor_response;
    cr_assert_eq(fdr->n_file_descriptor_proto, n, "got %zu files, want %zu",
                 fdr->n_file_descriptor_proto, n);
    for (size_t i = 0; i < n; i++) {
        const ProtobufCBinaryData *got = &fdr->file_descriptor_proto[i];
        Google__Protobuf__FileDescriptorProto *fd = google__protobuf__file_descriptor_proto__unpack(
            arena_allocator(arena), got->len, got->data);
        cr_assert_not_null(fd);
        cr_assert_str_eq(fd->name, names[i], "file %zu", i);
        const descset_file_t *want = descset_file(ds, (size_t)descset_find_file(ds, names[i]));
        cr_assert_eq(got->len, want->len);
        cr_assert_arr_eq(got->data, want->bytes, want->len);
    }
}

static void assert_error(const resp_t *resp, grpc_status_code code, const char *mentions)
{
    cr_assert_eq(resp->message_response_case,
                 GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE);
    cr_assert_eq(resp->error_response->error_code, (int32_t)code);
    cr_assert_not_null(strstr(resp->error_response->error_message, mentions), "message: %s",
                       resp->error_response->error_message);
}

Test(reflection, list_services_names_every_service)
{
    req_t req = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
    req.message_request_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES;
    req.list_services = "*";
    const resp_t *resp = ask(&req);
    cr_assert_eq(
        resp->message_response_case,
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE);
    const Grpc__Reflection__V1__ListServiceResponse *ls = resp->list_services_response;
    static const char *want[] = {
        "onceiot.test.v1.TestService",
        "onceiot.opttest.v1.OptService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    };
    cr_assert_eq(ls->n_service, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        bool found = false;
        for (size_t j = 0; j < ls->n_service; j++) {
            found = found || strcmp(ls->service[j]->name, want[i]) == 0;
        }
        cr_assert(found, "%s is not listed", want[i]);
    }
    cr_assert_str_eq(resp->original_request->list_services, "*");
}

Test(reflection, file_without_imports_comes_alone)
{
    req_t req = by_filename("google/protobuf/descriptor.proto");
    const char *desc[] = {"google/protobuf/descriptor.proto"};
    const resp_t *resp = ask(&req);
    assert_files(resp, desc, 1);
    cr_assert_str_eq(resp->original_request->file_by_filename, "google/protobuf/descriptor.proto");

    req = by_filename("grpc/health/v1/health.proto");
    const char *health[] = {"grpc/health/v1/health.proto"};
    assert_files(ask(&req), health, 1);
}

Test(reflection, file_comes_first_then_each_transitive_import_once)
{
    req_t req = by_filename("opt/v1/opt.proto");
    const char *want[] = {"opt/v1/opt.proto", "google/protobuf/descriptor.proto",
                          "opt/v1/base.proto"};
    assert_files(ask(&req), want, 3);
}

Test(reflection, symbol_of_each_kind_finds_its_file_and_imports)
{
    const char *opt[] = {"opt/v1/opt.proto", "google/protobuf/descriptor.proto",
                         "opt/v1/base.proto"};
    static const char *symbols[] = {
        "onceiot.opttest.v1.OptService",     /* service */
        "onceiot.opttest.v1.OptService.Get", /* method */
        "onceiot.opttest.v1.Outer",          /* message */
        "onceiot.opttest.v1.Outer.Inner",    /* nested message */
        ".onceiot.opttest.v1.Outer.Inner",   /* with protobuf's leading dot */
    };
    for (size_t i = 0; i < sizeof symbols / sizeof symbols[0]; i++) {
        req_t req = by_symbol(symbols[i]);
        const resp_t *resp = ask(&req);
        assert_files(resp, opt, 3);
        cr_assert_str_eq(resp->original_request->file_containing_symbol, symbols[i]);
    }

    req_t req = by_symbol("onceiot.test.v1.EchoRequest");
    const char *test[] = {"test/v1/test.proto", "common/v1/auth.proto",
                          "google/protobuf/descriptor.proto"};
    assert_files(ask(&req), test, 3);
    req = by_symbol("onceiot.opttest.v1.rule");
    const char *base[] = {"opt/v1/base.proto", "google/protobuf/descriptor.proto"};
    assert_files(ask(&req), base, 2);
}

Test(reflection, unknown_file_or_symbol_is_not_found)
{
    req_t req = by_filename("nope/v1/nope.proto");
    assert_error(ask(&req), GRPC_STATUS_NOT_FOUND, "nope/v1/nope.proto");
    req = by_symbol("onceiot.test.v1.NoSuchThing");
    assert_error(ask(&req), GRPC_STATUS_NOT_FOUND, "onceiot.test.v1.NoSuchThing");
    req = by_symbol("");
    assert_error(ask(&req), GRPC_STATUS_NOT_FOUND, "symbol");
}

Test(reflection, extension_numbers_of_a_known_type_are_an_empty_list)
{
    req_t req = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
    req.message_request_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE;
    req.all_extension_numbers_of_type = ".google.protobuf.MethodOptions";
    const resp_t *resp = ask(&req);
    cr_assert_eq(
        resp->message_response_case,
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE);
    cr_assert_str_eq(resp->all_extension_numbers_response->base_type_name,
                     "google.protobuf.MethodOptions");
    cr_assert_eq(resp->all_extension_numbers_response->n_extension_number, 0);

    req.all_extension_numbers_of_type = "google.protobuf.NoSuchOptions";
    assert_error(ask(&req), GRPC_STATUS_NOT_FOUND, "google.protobuf.NoSuchOptions");
}

Test(reflection, file_containing_extension_is_not_found)
{
    Grpc__Reflection__V1__ExtensionRequest ext = GRPC__REFLECTION__V1__EXTENSION_REQUEST__INIT;
    ext.containing_type = "google.protobuf.MethodOptions";
    ext.extension_number = 50001;
    req_t req = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
    req.message_request_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION;
    req.file_containing_extension = &ext;
    const resp_t *resp = ask(&req);
    assert_error(resp, GRPC_STATUS_NOT_FOUND, "50001");
    cr_assert_eq(resp->original_request->file_containing_extension->extension_number, 50001);
}

Test(reflection, request_without_a_question_is_unimplemented)
{
    req_t req = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
    req.host = "example";
    assert_error(ask(&req), GRPC_STATUS_UNIMPLEMENTED, "unsupported");
}

Test(reflection, v1alpha_serves_the_v1_messages)
{
    const ProtobufCServiceDescriptor *alpha = reflection_v1alpha_service.descriptor;
    const ProtobufCServiceDescriptor *v1 = reflection_v1_service.descriptor;
    cr_assert_str_eq(alpha->name, "grpc.reflection.v1alpha.ServerReflection");
    cr_assert_str_eq(v1->name, "grpc.reflection.v1.ServerReflection");
    cr_assert_eq(alpha->n_methods, 1);
    cr_assert_str_eq(alpha->methods[0].name, "ServerReflectionInfo");
    cr_assert_eq(alpha->methods[0].input, v1->methods[0].input);
    cr_assert_eq(alpha->methods[0].output, v1->methods[0].output);

    /* Each table's handler names its descriptor's method, and the server will
     * find both paths (bidi) in the set. */
    const rpc_service_impl_t *impls[] = {&reflection_v1_service, &reflection_v1alpha_service};
    for (size_t i = 0; i < 2; i++) {
        cr_assert_eq(impls[i]->n_methods, 1);
        cr_assert_str_eq(impls[i]->methods[0].name, impls[i]->descriptor->methods[0].name);
        cr_assert_not_null(impls[i]->methods[0].fn);
        char *path = arena_printf(arena, "/%s/ServerReflectionInfo", impls[i]->descriptor->name);
        const descset_method_t *m = descset_find_method(ds, path);
        cr_assert_not_null(m, "%s", path);
        cr_assert(m->client_streaming && m->server_streaming);
    }
}
