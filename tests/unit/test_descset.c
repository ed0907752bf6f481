/* The descriptor-set index, loaded from a set that protoc builds here from the
 * test service, health, reflection, and two small protos written by the
 * fixture (nested types, a custom method option, a chain of imports). */
#include "descset_fixture.h"
#include "google/protobuf/descriptor.pb-c.h"
#include "onceiot/descset.h"
#include "onceiot/mem.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Imports descriptor.proto itself and through base.proto, so the import
 * graph has a chain and a diamond. */
static const char opt_proto[] = "syntax = \"proto3\";\n"
                                "package onceiot.opttest.v1;\n"
                                "import \"google/protobuf/descriptor.proto\";\n"
                                "import \"opt/v1/base.proto\";\n"
                                "enum Color { COLOR_UNSPECIFIED = 0; RED = 1; }\n"
                                "message Outer {\n"
                                "  message Inner {\n"
                                "    enum Kind { KIND_UNSPECIFIED = 0; }\n"
                                "    Kind kind = 1;\n"
                                "  }\n"
                                "  Inner inner = 1;\n"
                                "  google.protobuf.MethodOptions opts = 2;\n"
                                "}\n"
                                "service OptService {\n"
                                "  rpc Guarded(Outer) returns (Outer) { option deprecated = true; "
                                "option (rule) = \"admin\"; }\n"
                                "  rpc Plain(Outer) returns (stream Outer);\n"
                                "}\n";
static const char base_proto[] = "syntax = \"proto3\";\n"
                                 "package onceiot.opttest.v1;\n"
                                 "import \"google/protobuf/descriptor.proto\";\n"
                                 "extend google.protobuf.MethodOptions { string rule = 50001; }\n";

static uint8_t *set_bytes;
static size_t set_len;
static descset_t *ds;

static void setup(void)
{
    const dsf_file_t extra[] = {{"opt/v1/opt.proto", opt_proto}, {"opt/v1/base.proto", base_proto}};
    set_bytes = dsf_build(extra, 2, &set_len);
    cr_assert_eq(descset_load(set_bytes, set_len, &ds), 0);
}

static void teardown(void)
{
    descset_free(ds);
    ds = NULL;
    mem_free(set_bytes);
    set_bytes = NULL;
}

TestSuite(descset, .init = setup, .fini = teardown);

/* A set holding the given files' bytes, each wrapped as field 1. */
static uint8_t *wrap_files(const descset_file_t *const *files, size_t n, size_t *len)
{
    size_t cap = 0;
    for (size_t i = 0; i < n; i++) {
        cap += 1 + 10 + files[i]->len; /* key, longest length varint, bytes */
    }
    uint8_t *buf = mem_alloc(cap);
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        buf[used++] = 0x0a;
        for (size_t v = files[i]->len;; v >>= 7) {
            buf[used++] = (uint8_t)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
            if (v < 0x80) {
                break;
            }
        }
        memcpy(buf + used, files[i]->bytes, files[i]->len);
        used += files[i]->len;
    }
    *len = used;
    return buf;
}

static size_t file_index(const char *name)
{
    long i = descset_find_file(ds, name);
    cr_assert_geq(i, 0, "file %s not in the set", name);
    return (size_t)i;
}

Test(descset, indexes_every_file_by_name)
{
    static const char *names[] = {
        "test/v1/test.proto",
        "common/v1/auth.proto",
        "opt/v1/opt.proto",
        "opt/v1/base.proto",
        "google/protobuf/descriptor.proto",
        "grpc/health/v1/health.proto",
        "grpc/reflection/v1/reflection.proto",
        "grpc/reflection/v1alpha/reflection.proto",
    };
    cr_assert_eq(descset_file_count(ds), sizeof names / sizeof names[0]);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        cr_assert_str_eq(descset_file(ds, file_index(names[i]))->name, names[i]);
    }
    cr_assert_eq(descset_find_file(ds, "nope/v1/nope.proto"), -1);
    cr_assert_null(descset_file(ds, descset_file_count(ds)));
}

Test(descset, keeps_each_file_exactly_as_written)
{
    /* Wrapping every file again as field 1 must give back the input byte for byte. */
    const descset_file_t **files = mem_calloc(descset_file_count(ds), sizeof *files);
    for (size_t i = 0; i < descset_file_count(ds); i++) {
        files[i] = descset_file(ds, i);
        cr_assert(files[i]->bytes >= set_bytes &&
                      files[i]->bytes + files[i]->len <= set_bytes + set_len,
                  "file bytes must point into the input");
    }
    size_t len;
    uint8_t *again = wrap_files(files, descset_file_count(ds), &len);
    cr_assert_eq(len, set_len);
    cr_assert_arr_eq(again, set_bytes, set_len);
    mem_free(again);
    mem_free(files);
}

Test(descset, resolves_imports_to_file_indexes)
{
    const descset_file_t *opt = descset_file(ds, file_index("opt/v1/opt.proto"));
    cr_assert_eq(opt->n_deps, 2);
    cr_assert_eq(opt->deps[0], file_index("google/protobuf/descriptor.proto"));
    cr_assert_eq(opt->deps[1], file_index("opt/v1/base.proto"));
    const descset_file_t *base = descset_file(ds, file_index("opt/v1/base.proto"));
    cr_assert_eq(base->n_deps, 1);
    cr_assert_eq(base->deps[0], file_index("google/protobuf/descriptor.proto"));
    const descset_file_t *test = descset_file(ds, file_index("test/v1/test.proto"));
    cr_assert_eq(test->n_deps, 1);
    cr_assert_eq(test->deps[0], file_index("common/v1/auth.proto"));
}

Test(descset, finds_the_file_defining_each_kind_of_symbol)
{
    static const struct {
        const char *symbol;
        const char *file;
    } cases[] = {
        {"onceiot.test.v1.EchoRequest", "test/v1/test.proto"},       /* message */
        {"onceiot.test.v1.EchoRequest.text", "test/v1/test.proto"},  /* field */
        {"onceiot.test.v1.TestService", "test/v1/test.proto"},       /* service */
        {"onceiot.test.v1.TestService.Count", "test/v1/test.proto"}, /* method */
        {"onceiot.opttest.v1.Color", "opt/v1/opt.proto"},            /* enum */
        {"onceiot.opttest.v1.Outer.Inner", "opt/v1/opt.proto"},      /* nested message */
        {"onceiot.opttest.v1.Outer.Inner.Kind", "opt/v1/opt.proto"}, /* nested enum */
        {"onceiot.opttest.v1.Outer.Inner.kind", "opt/v1/opt.proto"}, /* nested field */
        {"onceiot.opttest.v1.rule", "opt/v1/base.proto"},            /* extension */
        {"google.protobuf.DescriptorProto.ExtensionRange", "google/protobuf/descriptor.proto"},
        {"grpc.health.v1.HealthCheckResponse.ServingStatus", "grpc/health/v1/health.proto"},
        {"grpc.reflection.v1alpha.ServerReflection", "grpc/reflection/v1alpha/reflection.proto"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        long got = descset_find_symbol(ds, cases[i].symbol);
        cr_assert_eq(got, (long)file_index(cases[i].file), "%s: got file %ld", cases[i].symbol,
                     got);
    }
}

Test(descset, unknown_symbols_are_not_found)
{
    cr_assert_eq(descset_find_symbol(ds, "onceiot.test.v1.NoSuchMessage"), -1);
    cr_assert_eq(descset_find_symbol(ds, "onceiot.test.v1"), -1, "a package is not a symbol");
    cr_assert_eq(descset_find_symbol(ds, "EchoRequest"), -1, "names must be fully qualified");
    cr_assert_eq(descset_find_symbol(ds, ""), -1);
    cr_assert_eq(descset_find_symbol(ds, NULL), -1);
}

Test(descset, lists_services_in_file_order)
{
    size_t n = descset_service_count(ds);
    cr_assert_eq(n, 5);
    long last = -1;
    bool test_seen = false, health_seen = false;
    for (size_t i = 0; i < n; i++) {
        const char *name = descset_service_name(ds, i);
        long file = descset_find_symbol(ds, name);
        cr_assert_geq(file, last, "%s is out of file order", name);
        last = file;
        test_seen = test_seen || strcmp(name, "onceiot.test.v1.TestService") == 0;
        health_seen = health_seen || strcmp(name, "grpc.health.v1.Health") == 0;
    }
    cr_assert(test_seen && health_seen);
    cr_assert_null(descset_service_name(ds, n));
}

Test(descset, methods_carry_their_streaming_kind)
{
    static const struct {
        const char *path;
        bool client, server;
    } cases[] = {
        {"/onceiot.test.v1.TestService/Echo", false, false},
        {"/onceiot.test.v1.TestService/Count", false, true},
        {"/onceiot.test.v1.TestService/Sum", true, false},
        {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", true, true},
        {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", true, true},
        {"/onceiot.opttest.v1.OptService/Plain", false, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const descset_method_t *m = descset_find_method(ds, cases[i].path);
        cr_assert_not_null(m, "%s not found", cases[i].path);
        cr_assert_str_eq(m->path, cases[i].path);
        cr_assert_eq(m->client_streaming, cases[i].client, "%s", cases[i].path);
        cr_assert_eq(m->server_streaming, cases[i].server, "%s", cases[i].path);
    }
    cr_assert_null(descset_find_method(ds, "/onceiot.test.v1.TestService/Nope"));
    cr_assert_null(descset_find_method(ds, "onceiot.test.v1.TestService.Echo"));
}

Test(descset, methods_name_their_service_and_types_without_leading_dot)
{
    const descset_method_t *m = descset_find_method(ds, "/onceiot.test.v1.TestService/Echo");
    cr_assert_not_null(m);
    cr_assert_str_eq(m->service, "onceiot.test.v1.TestService");
    cr_assert_str_eq(m->input_type, "onceiot.test.v1.EchoRequest");
    cr_assert_str_eq(m->output_type, "onceiot.test.v1.EchoReply");
    /* Echo declares its (onceiot.common.v1.auth) rule: the options survive. */
    cr_assert_not_null(m->options);

    /* Iteration sees the same methods as lookup: TestService has five. */
    size_t in_test_service = 0;
    for (size_t i = 0; i < descset_method_count(ds); i++) {
        const descset_method_t *at = descset_method_at(ds, i);
        cr_assert_eq(descset_find_method(ds, at->path), at);
        in_test_service += strcmp(at->service, "onceiot.test.v1.TestService") == 0;
    }
    cr_assert_eq(in_test_service, 5);
    cr_assert_null(descset_method_at(ds, descset_method_count(ds)));
}

Test(descset, method_options_keep_custom_options)
{
    const descset_method_t *m = descset_find_method(ds, "/onceiot.opttest.v1.OptService/Guarded");
    cr_assert_not_null(m);
    cr_assert_not_null(m->options);
    Google__Protobuf__MethodOptions *o =
        google__protobuf__method_options__unpack(NULL, m->options_len, m->options);
    cr_assert_not_null(o);
    cr_assert(o->has_deprecated && o->deprecated);
    cr_assert_eq(o->base.n_unknown_fields, 1);
    const ProtobufCMessageUnknownField *u = &o->base.unknown_fields[0];
    cr_assert_eq(u->tag, 50001);
    cr_assert_not_null(memmem(u->data, u->len, "admin", 5));
    google__protobuf__method_options__free_unpacked(o, NULL);

    cr_assert_null(descset_find_method(ds, "/onceiot.opttest.v1.OptService/Plain")->options);
}

Test(descset, rejects_a_set_missing_an_import)
{
    const descset_file_t *files[] = {descset_file(ds, file_index("opt/v1/opt.proto"))};
    size_t len;
    uint8_t *buf = wrap_files(files, 1, &len);
    descset_t *other = NULL;
    cr_assert_eq(descset_load(buf, len, &other), ERR_INVALID_ARGUMENT);
    cr_assert_null(other);
    mem_free(buf);
}

Test(descset, rejects_a_file_given_twice)
{
    const descset_file_t *test = descset_file(ds, file_index("test/v1/test.proto"));
    const descset_file_t *files[] = {test, test};
    size_t len;
    uint8_t *buf = wrap_files(files, 2, &len);
    descset_t *other = NULL;
    cr_assert_eq(descset_load(buf, len, &other), ERR_INVALID_ARGUMENT);
    mem_free(buf);
}

Test(descset, skips_fields_other_than_files)
{
    /* A file without imports, so the one-file set is complete. */
    const descset_file_t *test = descset_file(ds, file_index("google/protobuf/descriptor.proto"));
    size_t len;
    uint8_t *files = wrap_files(&test, 1, &len);
    /* field 2 varint, field 3 fixed64, field 4 bytes, field 5 fixed32, then the file */
    static const uint8_t extra[] = {0x10, 0x96, 0x01, 0x19, 1,   2,    3, 4, 5, 6, 7,
                                    8,    0x22, 0x02, 'h',  'i', 0x2d, 1, 2, 3, 4};
    uint8_t *buf = mem_alloc(sizeof extra + len);
    memcpy(buf, extra, sizeof extra);
    memcpy(buf + sizeof extra, files, len);
    descset_t *other = NULL;
    cr_assert_eq(descset_load(buf, sizeof extra + len, &other), 0);
    cr_assert_eq(descset_file_count(other), 1);
    cr_assert_eq(descset_find_symbol(other, "google.protobuf.FileDescriptorSet.file"), 0);
    cr_assert_eq(descset_file(other, 0)->bytes, buf + sizeof extra + (len - test->len));
    descset_free(other);
    mem_free(files);
    mem_free(buf);
}

Test(descset, rejects_a_truncated_set)
{
    descset_t *other = NULL;
    for (size_t cut = 1; cut < 64; cut++) {
        cr_assert_eq(descset_load(set_bytes, set_len - cut, &other), ERR_INVALID_ARGUMENT,
                     "cut %zu", cut);
    }
}

Test(descset_load, empty_set_has_nothing)
{
    descset_t *empty = NULL;
    cr_assert_eq(descset_load(NULL, 0, &empty), 0);
    cr_assert_eq(descset_file_count(empty), 0);
    cr_assert_eq(descset_service_count(empty), 0);
    cr_assert_eq(descset_method_count(empty), 0);
    cr_assert_eq(descset_find_file(empty, "test/v1/test.proto"), -1);
    cr_assert_eq(descset_find_symbol(empty, "onceiot.test.v1.EchoRequest"), -1);
    cr_assert_null(descset_find_method(empty, "/onceiot.test.v1.TestService/Echo"));
    descset_free(empty);
}

typedef struct garbage {
    const char *what;
    uint8_t bytes[16];
    size_t len;
} garbage_t;

ParameterizedTestParameters(descset_load, rejects_garbage)
{
    static garbage_t cases[] = {
        {"text", "not a descset", 13},
        {"field number zero", {0x00, 0x01}, 2},
        {"group wire type", {0x0b, 0x0c}, 2},
        {"file as a varint", {0x08, 0x01}, 2},
        {"file longer than the input", {0x0a, 0x05, 0x0a}, 3},
        {"length overflows",
         {0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
         11},
        {"unterminated key", {0x8a}, 1},
        {"eleven-byte varint",
         {0x10, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00},
         12},
        {"file that does not parse", {0x0a, 0x02, 0x0a, 0x05}, 4},
        {"file without a name", {0x0a, 0x00}, 2},
        {"message without a name", {0x0a, 0x07, 0x0a, 0x01, 'a', 0x22, 0x02, 0x12, 0x00}, 9},
    };
    return cr_make_param_array(garbage_t, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(garbage_t *g, descset_load, rejects_garbage)
{
    descset_t *out = NULL;
    cr_assert_eq(descset_load(g->bytes, g->len, &out), ERR_INVALID_ARGUMENT, "%s", g->what);
    cr_assert_null(out, "%s", g->what);
}
