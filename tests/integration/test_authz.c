/* Every method of every onceiot service, walked from the descriptor set the
 * gateway embeds (so a new method is covered without anyone listing it),
 * called through the gateway by callers who must be refused:
 *   no credentials                       → UNAUTHENTICATED
 *   a key without the method's scope     → PERMISSION_DENIED
 *   a role below the method's minimum    → PERMISSION_DENIED
 *   a customer on a staff-only method    → PERMISSION_DENIED
 *   anyone on an internal method         → UNIMPLEMENTED
 * and by the superuser, who must get past the gateway (any other code).
 * Then, per service, another organization's resource is NOT_FOUND for every
 * method that takes one (found by the request's fields, again for every
 * method). */
#include "commerce/v1/commerce.pb-c.h"
#include "common/v1/auth.pb-c.h"
#include "google/protobuf/field_mask.pb-c.h"
#include "gw_client.h"
#include "identity/v1/identity.pb-c.h"
#include "onceiot/authrule.h"
#include "onceiot/descset.h"
#include "sims/v1/sims.pb-c.h"
#include "stack_harness.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#define ADMIN    ONCEIOT__COMMON__V1__ROLE__ROLE_ADMIN
#define USER     ONCEIOT__COMMON__V1__ROLE__ROLE_USER
#define READONLY ONCEIOT__COMMON__V1__ROLE__ROLE_READONLY
#define IDENTITY "/onceiot.identity.v1.IdentityService/"
#define SIMS     "/onceiot.sims.v1.SimService/"
#define COMMERCE "/onceiot.commerce.v1.CommerceService/"

static sh_stack_t st;
static gwc_t g;
static descset_t *ds;
static char root[256];
/* Organization 2's people: an admin, a user and a readonly user, each
 * with a login token (every scope their role allows). */
static const char *admin2, *user2, *readonly2;
static int64_t admin2_id;

static void setup(void)
{
    /* Anonymous calls come many at once here: lift the public limit. */
    const char *gw_env[] = {"ONCEIOT_PUBLIC_RATE_LIMIT_RPS=100000",
                            "ONCEIOT_PUBLIC_RATE_LIMIT_BURST=100000", NULL};
    sh_start_with_sims(&st, NULL, gw_env);
    sh_add_commerce(&st, gw_env);
    gwc_open(&g, st.gateway.addr);
    snprintf(root, sizeof(root), "Bearer %s", st.admin_key);
    cr_assert_eq(descset_load_embedded(&ds), 0);
    admin2_id = gwc_create_user(&g, root, "admin2", ADMIN, 2);
    gwc_create_user(&g, root, "user2", USER, 2);
    gwc_create_user(&g, root, "readonly2", READONLY, 2);
    admin2 = gwc_login(&g, "admin2", SH_PASSWORD);
    user2 = gwc_login(&g, "user2", SH_PASSWORD);
    readonly2 = gwc_login(&g, "readonly2", SH_PASSWORD);
}

static void teardown(void)
{
    descset_free(ds);
    gwc_close(&g);
    sh_stop(&st);
}

/* An empty request (valid for every message type) as auth; the status. */
static grpc_status_code call_empty(const char *auth, const char *path, rpc_status_t *s)
{
    rpc_call_opts_t o = gwc_opts(&g, auth, 5000);
    ProtobufCBinaryData resp = {0, NULL};
    rpc_unary_raw(g.ch, path, (const uint8_t *)"", 0, g.arena, &o, &resp, s);
    return s->code;
}

static bool is_onceiot(const descset_method_t *m)
{
    return strncmp(m->service, "onceiot.", 8) == 0 && strncmp(m->service, "onceiot.test.", 13);
}

/* A scope the method does not ask for: from another resource. */
static const char *other_scope(const char *scope)
{
    return strncmp(scope, "users:", 6) == 0 ? "sims:read" : "users:read";
}

/* The key of organization 2's admin holding only scope (made once per
 * scope). */
static const char *key_with(const char *scope)
{
    static struct {
        char scope[64];
        const char *auth;
    } made[8];
    static size_t n;
    for (size_t i = 0; i < n; i++)
        if (strcmp(made[i].scope, scope) == 0)
            return made[i].auth;
    cr_assert_lt(n, 8);
    const char *scopes[] = {scope};
    snprintf(made[n].scope, sizeof(made[n].scope), "%s", scope);
    made[n].auth = gwc_create_key(&g, admin2, admin2_id, scopes, 1, NULL, NULL);
    return made[n++].auth;
}

/* A token of organization 2 with a role below min (NULL when none is). */
static const char *below(Onceiot__Common__V1__Role min)
{
    if (min == ADMIN)
        return user2;
    if (min == USER)
        return readonly2;
    return NULL;
}

#define EXPECT_CODE(auth, m, want, who)                                                            \
    do {                                                                                           \
        rpc_status_t s_;                                                                           \
        grpc_status_code c_ = call_empty(auth, (m)->path, &s_);                                    \
        cr_expect_eq(c_, want, "%s as %s: %s (%s), want %s", (m)->path, who, err_grpc_name(c_),    \
                     s_.message, err_grpc_name(want));                                             \
        checked++;                                                                                 \
    } while (0)

TestSuite(authz, .init = setup, .fini = teardown, .timeout = 300);

Test(authz, every_method_refuses_every_caller_its_rule_excludes)
{
    size_t n = descset_method_count(ds), methods = 0, checked = 0;
    for (size_t i = 0; i < n; i++) {
        const descset_method_t *m = descset_method_at(ds, i);
        if (!is_onceiot(m))
            continue;
        methods++;
        auth_rule_t rule;
        int found = m->options ? auth_rule_from_options(m->options, m->options_len, &rule) : 0;
        cr_expect_eq(found, 1, "%s has no (onceiot.common.v1.auth) rule", m->path);
        if (found != 1)
            continue;
        if (rule.internal) {
            EXPECT_CODE(NULL, m, GRPC_STATUS_UNIMPLEMENTED, "anonymous");
            EXPECT_CODE(root, m, GRPC_STATUS_UNIMPLEMENTED, "the superuser");
            continue;
        }
        if (rule.is_public)
            continue; /* Login: anyone; its own tests cover it */
        EXPECT_CODE(NULL, m, GRPC_STATUS_UNAUTHENTICATED, "anonymous");
        EXPECT_CODE("Bearer sk_live_not-a-key", m, GRPC_STATUS_UNAUTHENTICATED, "a bad key");
        if (rule.scope[0])
            EXPECT_CODE(key_with(other_scope(rule.scope)), m, GRPC_STATUS_PERMISSION_DENIED,
                        "a key without its scope");
        const char *low = below(rule.min_role);
        if (low)
            EXPECT_CODE(low, m, GRPC_STATUS_PERMISSION_DENIED, "a role below its minimum");
        if (rule.superuser)
            EXPECT_CODE(admin2, m, GRPC_STATUS_PERMISSION_DENIED, "a customer admin");
        /* The superuser passes the gateway: whatever the service says of
         * an empty request, it is not the gateway's refusal. */
        rpc_status_t s;
        grpc_status_code c = call_empty(root, m->path, &s);
        cr_expect(c != GRPC_STATUS_UNAUTHENTICATED && c != GRPC_STATUS_PERMISSION_DENIED &&
                      c != GRPC_STATUS_UNIMPLEMENTED,
                  "%s as the superuser: %s (%s)", m->path, err_grpc_name(c), s.message);
        checked++;
    }
    cr_assert_gt(methods, 40, "walked %zu methods", methods);
    cr_log_info("%zu methods, %zu refusals checked", methods, checked);
}

/* ---- another organization's resources ---- */

/* Fills the fields of a request that are not the resource with values that
 * pass validation, so that only the resource decides: enums their first
 * non-zero value, numbers 1, a short text (and name), a field mask naming
 * mask_path, sub-messages empty, timestamps unset. */
static void fill(ProtobufCMessage *msg, arena_t *a, const char *mask_path)
{
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        void *at = (char *)msg + f->offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED)
            continue;
        switch (f->type) {
        case PROTOBUF_C_TYPE_ENUM: {
            const ProtobufCEnumDescriptor *e = f->descriptor;
            for (unsigned k = 0; k < e->n_values; k++)
                if (e->values[k].value != 0) {
                    *(int *)at = e->values[k].value;
                    break;
                }
            break;
        }
        case PROTOBUF_C_TYPE_INT32:
            *(int32_t *)at = 1;
            break;
        case PROTOBUF_C_TYPE_INT64:
            *(int64_t *)at = 1;
            break;
        case PROTOBUF_C_TYPE_STRING:
            if (strcmp(f->name, "text") == 0 || strcmp(f->name, "reason") == 0 ||
                strcmp(f->name, "name") == 0)
                *(const char **)at = "hi";
            else if (strstr(f->name, "password"))
                *(const char **)at = "a-long-enough-password-2";
            break;
        case PROTOBUF_C_TYPE_MESSAGE: {
            const ProtobufCMessageDescriptor *sd = f->descriptor;
            ProtobufCMessage *sub = arena_calloc(a, 1, sd->sizeof_message);
            protobuf_c_message_init(sd, sub);
            if (sd == &google__protobuf__field_mask__descriptor) {
                Google__Protobuf__FieldMask *fm = (Google__Protobuf__FieldMask *)sub;
                fm->paths = arena_alloc(a, sizeof(char *));
                fm->paths[0] = (char *)mask_path;
                fm->n_paths = 1;
            } else if (strcmp(sd->name, "google.protobuf.Timestamp") == 0) {
                break; /* unset: the default range */
            }
            *(ProtobufCMessage **)at = sub;
            break;
        }
        default:
            break;
        }
    }
}

static void set_string(ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f, const char *v,
                       arena_t *a)
{
    void *at = (char *)msg + f->offset;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        *(size_t *)((char *)msg + f->quantifier_offset) = 1;
        char **vals = arena_alloc(a, sizeof(char *));
        vals[0] = (char *)v;
        *(char ***)at = vals;
    } else {
        *(const char **)at = v;
    }
}

static void set_int64(ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f, int64_t v)
{
    *(int64_t *)((char *)msg + f->offset) = v;
}

static const auth_rule_t *rule_of(const char *path, auth_rule_t *rule)
{
    const descset_method_t *m = descset_find_method(ds, path);
    cr_assert_not_null(m, "%s is not in the descriptor set", path);
    cr_assert_eq(auth_rule_from_options(m->options, m->options_len, rule), 1);
    return rule;
}

/* Calls path with msg as auth (server-streaming methods: the first message
 * or the status, within a short deadline). */
static grpc_status_code call_msg(const char *auth, const char *path, const ProtobufCMessage *msg,
                                 const ProtobufCMessageDescriptor *out, bool streaming,
                                 ProtobufCMessage **resp, rpc_status_t *s)
{
    rpc_call_opts_t o = gwc_opts(&g, auth, 5000);
    *resp = NULL;
    if (!streaming) {
        rpc_unary(g.ch, path, msg, out, g.arena, &o, resp, s);
        return s->code;
    }
    rpc_stream_t *str;
    cr_assert_eq(rpc_stream_open(g.ch, path, g.arena, &o, &str), 0);
    if (rpc_stream_send(str, msg) == 0 && rpc_stream_close_send(str) == 0 &&
        rpc_stream_recv(str, out, resp) > 0)
        rpc_stream_cancel(str); /* a message: not refused */
    rpc_stream_finish(str, s);
    return *resp ? GRPC_STATUS_OK : s->code;
}

/* Every public method of svc whose request names a resource through one of
 * the fields in names gets org 1's resource (value) from organization 2's
 * admin and must answer NOT_FOUND (a bulk method: NOT_FOUND per item, in
 * a result's `code`). Returns the number of methods tried. */
static size_t foreign_resource_not_found(const ProtobufCServiceDescriptor *svc,
                                         const char *const *names, size_t n_names,
                                         const char *string_value, int64_t int_value,
                                         const char *mask_path)
{
    size_t tried = 0;
    for (unsigned i = 0; i < svc->n_methods; i++) {
        const ProtobufCMethodDescriptor *md = &svc->methods[i];
        char path[256];
        snprintf(path, sizeof(path), "/%s/%s", svc->name, md->name);
        auth_rule_t rule;
        if (rule_of(path, &rule)->internal || rule.superuser || rule.is_public)
            continue;
        const ProtobufCFieldDescriptor *f = NULL;
        for (size_t k = 0; k < n_names && !f; k++)
            f = protobuf_c_message_descriptor_get_field_by_name(md->input, names[k]);
        if (!f)
            continue;
        ProtobufCMessage *msg = arena_calloc(g.arena, 1, md->input->sizeof_message);
        protobuf_c_message_init(md->input, msg);
        fill(msg, g.arena, mask_path);
        if (f->type == PROTOBUF_C_TYPE_STRING)
            set_string(msg, f, string_value, g.arena);
        else
            set_int64(msg, f, int_value);
        const descset_method_t *dm = descset_find_method(ds, path);
        ProtobufCMessage *resp;
        rpc_status_t s;
        grpc_status_code c =
            call_msg(admin2, path, msg, md->output, dm->server_streaming, &resp, &s);
        tried++;
        if (c == GRPC_STATUS_OK && f->label == PROTOBUF_C_LABEL_REPEATED) {
            /* Bulk: per-item results, each with a google.rpc.Code. */
            const ProtobufCFieldDescriptor *rf =
                &md->output->fields[0]; /* the results, first by convention */
            cr_assert_eq(rf->label, PROTOBUF_C_LABEL_REPEATED, "%s", path);
            size_t nr = *(size_t *)((char *)resp + rf->quantifier_offset);
            cr_expect_eq(nr, 1, "%s: one result per item", path);
            ProtobufCMessage *item =
                nr ? (*(ProtobufCMessage ***)((char *)resp + rf->offset))[0] : NULL;
            const ProtobufCFieldDescriptor *cf =
                item ? protobuf_c_message_descriptor_get_field_by_name(item->descriptor, "code")
                     : NULL;
            cr_expect(cf && *(int32_t *)((char *)item + cf->offset) == GRPC_STATUS_NOT_FOUND,
                      "%s: another organization's item is not NOT_FOUND", path);
            continue;
        }
        cr_expect_eq(c, GRPC_STATUS_NOT_FOUND, "%s on another organization's %s: %s (%s)", path,
                     f->name, err_grpc_name(c), s.message);
    }
    return tried;
}

Test(authz, another_organizations_sim_is_not_found_by_every_sims_method)
{
    const char *iccid = "8988303000000002001";
    Onceiot__Sims__V1__SimInput in = ONCEIOT__SIMS__V1__SIM_INPUT__INIT;
    in.iccid = (char *)iccid;
    in.data_volume = 1000;
    in.sms_volume = 10;
    in.organization_id = 1;
    Onceiot__Sims__V1__CreateSimRequest req = ONCEIOT__SIMS__V1__CREATE_SIM_REQUEST__INIT;
    req.sim = &in;
    Onceiot__Sims__V1__Sim *sim = NULL;
    rpc_status_t s;
    cr_assert_eq(gwc_call(&g, root, SIMS "CreateSim", &req.base,
                          &onceiot__sims__v1__sim__descriptor, &sim, &s),
                 0, "%s", s.message);
    Onceiot__Sims__V1__SimActionRequest act = ONCEIOT__SIMS__V1__SIM_ACTION_REQUEST__INIT;
    act.iccid = (char *)iccid;
    cr_assert_eq(gwc_call(&g, root, SIMS "ActivateSim", &act.base,
                          &onceiot__sims__v1__sim__descriptor, &sim, &s),
                 0, "%s", s.message);
    const char *names[] = {"iccid", "iccids"};
    size_t tried = foreign_resource_not_found(&onceiot__sims__v1__sim_service__descriptor, names, 2,
                                              iccid, 0, "label");
    cr_assert_geq(tried, 15, "tried %zu methods", tried);
    /* Nothing changed: the SIM, its quotas, its SMS. */
    cr_assert_eq(
        gwc_call(&g, root, SIMS "GetSim", &act.base, &onceiot__sims__v1__sim__descriptor, &sim, &s),
        0, "%s", s.message);
    cr_assert_str_eq(sim->label, "");
    cr_assert_eq(sim->status, ONCEIOT__SIMS__V1__SIM_STATUS__SIM_STATUS_ENABLED);
}

Test(authz, another_organizations_user_and_key_are_not_found_by_every_identity_method)
{
    int64_t user1 = gwc_create_user(&g, root, "user1", USER, 1);
    const char *scopes[] = {"sims:read"};
    int64_t key1 = 0;
    gwc_create_key(&g, root, user1, scopes, 1, &key1, NULL);
    const char *users[] = {"user_id"};
    size_t tried = foreign_resource_not_found(&onceiot__identity__v1__identity_service__descriptor,
                                              users, 1, NULL, user1, "full_name");
    /* "id" is a user's for the user methods and a key's for the key methods. */
    const char *ids[] = {"id"};
    const ProtobufCServiceDescriptor *svc = &onceiot__identity__v1__identity_service__descriptor;
    for (unsigned i = 0; i < svc->n_methods; i++) {
        const ProtobufCMethodDescriptor *md = &svc->methods[i];
        if (!protobuf_c_message_descriptor_get_field_by_name(md->input, "id"))
            continue;
        bool key = strstr(md->name, "ApiKey") != NULL;
        ProtobufCServiceDescriptor one = *svc;
        one.methods = md;
        one.n_methods = 1;
        tried += foreign_resource_not_found(&one, ids, 1, NULL, key ? key1 : user1, "full_name");
    }
    cr_assert_geq(tried, 7, "tried %zu methods", tried);
    /* Nothing changed: the user is active with its name, the key unrevoked. */
    Onceiot__Identity__V1__GetUserRequest gu = ONCEIOT__IDENTITY__V1__GET_USER_REQUEST__INIT;
    gu.id = user1;
    Onceiot__Identity__V1__User *u = NULL;
    rpc_status_t s;
    cr_assert_eq(gwc_call(&g, root, IDENTITY "GetUser", &gu.base,
                          &onceiot__identity__v1__user__descriptor, &u, &s),
                 0, "%s", s.message);
    cr_assert(u->is_active);
    cr_assert_str_eq(u->full_name, "Test User");
    Onceiot__Identity__V1__GetApiKeyRequest gk = ONCEIOT__IDENTITY__V1__GET_API_KEY_REQUEST__INIT;
    gk.id = key1;
    Onceiot__Identity__V1__ApiKey *k = NULL;
    cr_assert_eq(gwc_call(&g, root, IDENTITY "GetApiKey", &gk.base,
                          &onceiot__identity__v1__api_key__descriptor, &k, &s),
                 0, "%s", s.message);
    cr_assert(k->is_active, "the key is not revoked");
}

Test(authz, another_organizations_order_is_not_found_by_every_commerce_method)
{
    Onceiot__Commerce__V1__Money m = ONCEIOT__COMMERCE__V1__MONEY__INIT;
    m.currency_code = "EUR";
    m.amount_minor = 100;
    Onceiot__Commerce__V1__Product p = ONCEIOT__COMMERCE__V1__PRODUCT__INIT;
    p.name = "Gateway";
    p.sku = "GW";
    p.category = ONCEIOT__COMMERCE__V1__CATEGORY__CATEGORY_HARDWARE;
    p.price = &m;
    Onceiot__Commerce__V1__CreateProductRequest cp =
        ONCEIOT__COMMERCE__V1__CREATE_PRODUCT_REQUEST__INIT;
    cp.product = &p;
    Onceiot__Commerce__V1__Product *made = NULL;
    rpc_status_t s;
    cr_assert_eq(gwc_call(&g, root, COMMERCE "CreateProduct", &cp.base,
                          &onceiot__commerce__v1__product__descriptor, &made, &s),
                 0, "%s", s.message);
    gwc_create_user(&g, root, "buyer1", USER, 1);
    const char *buyer1 = gwc_login(&g, "buyer1", SH_PASSWORD);
    Onceiot__Commerce__V1__OrderItemInput it = ONCEIOT__COMMERCE__V1__ORDER_ITEM_INPUT__INIT;
    it.product_id = made->id;
    it.quantity = 1;
    Onceiot__Commerce__V1__OrderItemInput *items[] = {&it};
    Onceiot__Commerce__V1__CreateOrderRequest co =
        ONCEIOT__COMMERCE__V1__CREATE_ORDER_REQUEST__INIT;
    co.items = items;
    co.n_items = 1;
    Onceiot__Commerce__V1__Order *o = NULL;
    cr_assert_eq(gwc_call(&g, buyer1, COMMERCE "CreateOrder", &co.base,
                          &onceiot__commerce__v1__order__descriptor, &o, &s),
                 0, "%s", s.message);
    const char *names[] = {"id"};
    size_t tried = foreign_resource_not_found(&onceiot__commerce__v1__commerce_service__descriptor,
                                              names, 1, o->id, 0, "name");
    cr_assert_geq(tried, 3, "tried %zu methods", tried);
    /* Nothing changed: the order is still pending, with its stock. */
    Onceiot__Commerce__V1__GetOrderRequest go = ONCEIOT__COMMERCE__V1__GET_ORDER_REQUEST__INIT;
    go.id = o->id;
    cr_assert_eq(gwc_call(&g, buyer1, COMMERCE "GetOrder", &go.base,
                          &onceiot__commerce__v1__order__descriptor, &o, &s),
                 0, "%s", s.message);
    cr_assert_eq(o->status, ONCEIOT__COMMERCE__V1__ORDER_STATUS__ORDER_STATUS_PENDING);
}
