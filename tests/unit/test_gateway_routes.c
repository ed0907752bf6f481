/* The gateway's route table, built from descriptor sets that protoc makes in
 * a temporary folder: routing by package, rules read from the method
 * options, and the fail-closed start. */
#include "gateway.h"

#include "onceiot/mem.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct built {
    uint8_t *bytes;
    descset_t *ds;
} built_t;

/* Compiles one proto file (its text) with protoc and loads the set. */
static built_t compile(const char *proto_text)
{
    char dir[] = "/tmp/onceiot-routes-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char *path = mem_printf("%s/onceiot/x/v1/x.proto", dir);
    char *sub = mem_printf("mkdir -p %s/onceiot/x/v1", dir);
    cr_assert_eq(system(sub), 0);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(proto_text, f);
    fclose(f);
    const char *protoc = getenv("ONCEIOT_PROTOC") ? getenv("ONCEIOT_PROTOC") : "protoc";
    const char *src = getenv("ONCEIOT_SOURCE_DIR");
    cr_assert_not_null(src, "ONCEIOT_SOURCE_DIR is not set (run through ctest)");
    char *out = mem_printf("%s/set.pb", dir);
    char *cmd = mem_printf("%s -I%s -I%s/proto -I/usr/include --include_imports "
                           "--descriptor_set_out=%s onceiot/x/v1/x.proto",
                           protoc, dir, src, out);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    f = fopen(out, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    built_t b = {mem_alloc((size_t)len + 1), NULL};
    cr_assert_eq(fread(b.bytes, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    cr_assert_eq(descset_load(b.bytes, (size_t)len, &b.ds), 0);
    char *rm = mem_printf("rm -rf %s", dir);
    cr_assert_eq(system(rm), 0);
    mem_free(rm);
    mem_free(cmd);
    mem_free(out);
    mem_free(sub);
    mem_free(path);
    return b;
}

static void release(built_t *b)
{
    descset_free(b->ds);
    mem_free(b->bytes);
}

#define HEADER                                                                                     \
    "syntax = \"proto3\";\n"                                                                       \
    "package onceiot.sims.v1;\n"                                                                   \
    "import \"common/v1/auth.proto\";\n"                                                           \
    "message M {}\n"

Test(gateway_routes, rules_come_from_method_options_and_route_by_package)
{
    built_t b = compile(HEADER "service SimService {\n"
                               "  rpc GetSim(M) returns (M) { option (onceiot.common.v1.auth) = "
                               "{scope: \"sims:read\", min_role: ROLE_READONLY}; }\n"
                               "  rpc Wipe(M) returns (M) { option deprecated = true; option "
                               "(onceiot.common.v1.auth) = {superuser: true}; }\n"
                               "  rpc Ping(M) returns (M) { option (onceiot.common.v1.auth) = "
                               "{public: true}; }\n"
                               "  rpc Sync(M) returns (M) { option (onceiot.common.v1.auth) = "
                               "{internal: true}; }\n"
                               "}\n");
    gw_routes_t *r = NULL;
    char err[256] = "";
    cr_assert_eq(gw_routes_build(b.ds, &r, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(gw_routes_count(r), 4);

    const char *get = "/onceiot.sims.v1.SimService/GetSim";
    const gw_route_t *route = gw_routes_find(r, get, strlen(get));
    cr_assert_not_null(route);
    cr_assert_str_eq(gw_routes_upstream_name(r, route->upstream), "sims");
    cr_assert_str_eq(route->rule.scope, "sims:read");
    cr_assert_eq(route->rule.min_role, ONCEIOT__COMMON__V1__ROLE__ROLE_READONLY);
    cr_assert(!route->rule.is_public && !route->rule.superuser);

    const char *wipe = "/onceiot.sims.v1.SimService/Wipe";
    route = gw_routes_find(r, wipe, strlen(wipe));
    cr_assert(route && route->rule.superuser, "other options around the rule do not matter");
    const char *ping = "/onceiot.sims.v1.SimService/Ping";
    route = gw_routes_find(r, ping, strlen(ping));
    cr_assert(route && route->rule.is_public);
    const char *sync = "/onceiot.sims.v1.SimService/Sync";
    cr_assert_null(gw_routes_find(r, sync, strlen(sync)), "internal methods are never routed");
    /* A prefix or an extension of a known path is not a route. */
    cr_assert_null(gw_routes_find(r, get, strlen(get) - 1));
    cr_assert_null(gw_routes_find(r, "/onceiot.sims.v1.SimService/GetSimX", 35));
    cr_assert_null(gw_routes_find(r, "/grpc.health.v1.Health/Check", 28));

    /* A NUL inside the client's :path, followed by any number of bytes, never
     * matches the route before it, and nothing is read past either string
     * (buffers of the exact length: ASan sees any overread). */
    for (size_t extra = 0; extra <= 96; extra++) {
        size_t n = strlen(get) + 1 + extra;
        char *path = mem_alloc(n);
        memcpy(path, get, strlen(get) + 1);
        memset(path + strlen(get) + 1, 'A', extra);
        cr_assert_null(gw_routes_find(r, path, n), "NUL + %zu bytes matched a route", extra);
        /* The same bytes without the NUL: longer than any route, still no match. */
        path[strlen(get)] = 'A';
        cr_assert_null(gw_routes_find(r, path, n));
        mem_free(path);
    }
    cr_assert_null(gw_routes_find(r, "", 0));

    size_t up;
    cr_assert_eq(gw_routes_service_count(r), 1);
    cr_assert_str_eq(gw_routes_service_name(r, 0, &up), "onceiot.sims.v1.SimService");
    cr_assert_str_eq(gw_routes_upstream_name(r, up), "sims");
    /* The five product upstreams are always there (their addresses are required). */
    cr_assert_eq(gw_routes_upstream_count(r), gw_n_product_upstreams);
    gw_routes_free(r);
    release(&b);
}

Test(gateway_routes, a_method_without_a_rule_refuses_the_start)
{
    built_t b = compile(HEADER "service SimService {\n"
                               "  rpc GetSim(M) returns (M) { option (onceiot.common.v1.auth) = "
                               "{scope: \"sims:read\"}; }\n"
                               "  rpc Forgotten(M) returns (M);\n"
                               "}\n");
    gw_routes_t *r = NULL;
    char err[256] = "";
    cr_assert_eq(gw_routes_build(b.ds, &r, err, sizeof(err)), ERR_CONFIG);
    cr_assert_null(r);
    cr_assert(strstr(err, "/onceiot.sims.v1.SimService/Forgotten"), "%s", err);
    cr_assert(strstr(err, "fail closed"), "%s", err);
    release(&b);
}

Test(gateway_routes, a_new_service_package_becomes_an_upstream)
{
    const char *text = "syntax = \"proto3\";\n"
                       "package onceiot.billing.v1;\n"
                       "import \"common/v1/auth.proto\";\n"
                       "message M {}\n"
                       "service BillingService {\n"
                       "  rpc Pay(M) returns (M) { option (onceiot.common.v1.auth) = "
                       "{scope: \"billing:write\", min_role: ROLE_USER}; }\n"
                       "}\n";
    built_t b = compile(text);
    gw_routes_t *r = NULL;
    char err[256] = "";
    cr_assert_eq(gw_routes_build(b.ds, &r, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(gw_routes_upstream_count(r), gw_n_product_upstreams + 1);
    cr_assert_str_eq(gw_routes_upstream_name(r, gw_n_product_upstreams), "billing");
    gw_routes_free(r);
    release(&b);
}

Test(gateway_routes, malformed_options_are_an_error_not_a_missing_rule)
{
    gw_rule_t rule;
    /* Field 50100, length-delimited, claiming 9 bytes where 1 follows. */
    const uint8_t bad[] = {0xa2, 0xbb, 0x18, 0x09, 0x08};
    cr_assert_eq(auth_rule_from_options(bad, sizeof(bad), &rule), ERR_INVALID_ARGUMENT);
    /* Only "deprecated = true" (field 33, varint). */
    const uint8_t none[] = {0x88, 0x02, 0x01};
    cr_assert_eq(auth_rule_from_options(none, sizeof(none), &rule), 0);
    /* The rule {superuser: true}. */
    const uint8_t su[] = {0xa2, 0xbb, 0x18, 0x02, 0x20, 0x01};
    cr_assert_eq(auth_rule_from_options(su, sizeof(su), &rule), 1);
    cr_assert(rule.superuser);
}
