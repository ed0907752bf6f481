/* The commerce test harness (see commerce_harness.h). */
#include "commerce_harness.h"

#include "pg_harness.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

ch_t ch;

void ch_start(void)
{
    memset(&ch, 0, sizeof(ch));
    sh_start_with_sims(&ch.st, NULL, NULL);
    sh_add_commerce(&ch.st, (const char *const[]){"ONCEIOT_RATE_LIMIT_RPS=100000",
                                                  "ONCEIOT_RATE_LIMIT_BURST=100000", NULL});
    gwc_open(&ch.g, ch.st.gateway.addr);
    ch.root = arena_printf(ch.g.arena, "Bearer %s", ch.st.admin_key);
    static const char *const staff_scopes[] = {"commerce:read", "commerce:write", "sims:read",
                                               "sims:write"};
    ch.staff = gwc_create_key(&ch.g, ch.root, 0, staff_scopes, 4, NULL, NULL);
}

void ch_stop(void)
{
    gwc_close(&ch.g);
    sh_stop(&ch.st);
}

void ch_restart_commerce(int sig)
{
    sh_restart_commerce(&ch.st, sig);
}

void ch_kill_sims(void)
{
    sh_kill_sims(&ch.st);
}

void ch_start_sims(void)
{
    sh_restart_sims(&ch.st);
}

const char *ch_user(const char *name, Onceiot__Common__V1__Role role, int64_t org,
                    const char *const *scopes)
{
    size_t n = 0;
    while (scopes[n])
        n++;
    int64_t id = gwc_create_user(&ch.g, ch.root, name, role, org);
    return gwc_create_key(&ch.g, ch.root, id, scopes, n, NULL, NULL);
}

const char *ch_sim(int64_t org, long n, int64_t data_volume, int64_t sms_volume)
{
    Onceiot__Sims__V1__SimInput in = ONCEIOT__SIMS__V1__SIM_INPUT__INIT;
    in.iccid = arena_printf(ch.g.arena, "8949%015ld", n);
    in.organization_id = org;
    in.data_volume = data_volume;
    in.sms_volume = sms_volume;
    Onceiot__Sims__V1__CreateSimRequest req = ONCEIOT__SIMS__V1__CREATE_SIM_REQUEST__INIT;
    req.sim = &in;
    Onceiot__Sims__V1__Sim *sim = NULL;
    rpc_status_t st;
    int rc = gwc_call(&ch.g, ch.staff, CH_SIMS "CreateSim", &req.base,
                      &onceiot__sims__v1__sim__descriptor, &sim, &st);
    cr_assert_eq(rc, 0, "CreateSim %s: %s %s", in.iccid, err_grpc_name(st.code), st.message);
    return in.iccid;
}

int64_t ch_quota(const char *iccid, Onceiot__Sims__V1__QuotaType type)
{
    Onceiot__Sims__V1__GetQuotaRequest req = ONCEIOT__SIMS__V1__GET_QUOTA_REQUEST__INIT;
    req.iccid = (char *)iccid;
    req.quota_type = type;
    Onceiot__Sims__V1__Quota *q = NULL;
    rpc_status_t st;
    int rc = gwc_call(&ch.g, ch.staff, CH_SIMS "GetQuota", &req.base,
                      &onceiot__sims__v1__quota__descriptor, &q, &st);
    cr_assert_eq(rc, 0, "GetQuota %s: %s %s", iccid, err_grpc_name(st.code), st.message);
    return q->volume;
}

/* A Struct {key: number} in a. */
static Google__Protobuf__Struct *ch__spec(arena_t *a, const char *key, double v)
{
    Google__Protobuf__Value *val = arena_alloc(a, sizeof(*val));
    google__protobuf__value__init(val);
    val->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
    val->number_value = v;
    Google__Protobuf__Struct__FieldsEntry *e = arena_alloc(a, sizeof(*e));
    google__protobuf__struct__fields_entry__init(e);
    e->key = (char *)key;
    e->value = val;
    Google__Protobuf__Struct *s = arena_alloc(a, sizeof(*s));
    google__protobuf__struct__init(s);
    s->fields = arena_alloc(a, sizeof(*s->fields));
    s->fields[0] = e;
    s->n_fields = 1;
    return s;
}

ch_product_t *ch_product(Onceiot__Commerce__V1__Category category, const char *sku, int64_t price,
                         const char *currency, int64_t stock, int64_t volume)
{
    arena_t *a = ch.g.arena;
    ch_product_t p = ONCEIOT__COMMERCE__V1__PRODUCT__INIT;
    Onceiot__Commerce__V1__Money m = ONCEIOT__COMMERCE__V1__MONEY__INIT;
    Google__Protobuf__Int64Value s = GOOGLE__PROTOBUF__INT64_VALUE__INIT;
    p.name = arena_printf(a, "Product %s", sku);
    p.description = "for tests";
    p.sku = (char *)sku;
    p.category = category;
    m.currency_code = (char *)currency;
    m.amount_minor = price;
    p.price = &m;
    if (stock >= 0) {
        s.value = stock;
        p.stock = &s;
    }
    if (category == ONCEIOT__COMMERCE__V1__CATEGORY__CATEGORY_DATA_TOPUP)
        p.specifications = ch__spec(a, "volume_bytes", (double)volume);
    else if (category == ONCEIOT__COMMERCE__V1__CATEGORY__CATEGORY_SMS_TOPUP)
        p.specifications = ch__spec(a, "sms_count", (double)volume);
    Onceiot__Commerce__V1__CreateProductRequest req =
        ONCEIOT__COMMERCE__V1__CREATE_PRODUCT_REQUEST__INIT;
    req.product = &p;
    ch_product_t *out = NULL;
    rpc_status_t st;
    int rc = ch_call(ch.staff, "CreateProduct", &req.base,
                     &onceiot__commerce__v1__product__descriptor, &out, &st);
    cr_assert_eq(rc, 0, "CreateProduct %s: %s %s", sku, err_grpc_name(st.code), st.message);
    return out;
}

int ch_call_on(gwc_t *g, const char *auth, const char *method, const ProtobufCMessage *req,
               const ProtobufCMessageDescriptor *resp_desc, void *resp, rpc_status_t *st)
{
    const char *path = arena_printf(g->arena, CH_COMMERCE "%s", method);
    return gwc_call(g, auth, path, req, resp_desc, resp, st);
}

int ch_call(const char *auth, const char *method, const ProtobufCMessage *req,
            const ProtobufCMessageDescriptor *resp_desc, void *resp, rpc_status_t *st)
{
    return ch_call_on(&ch.g, auth, method, req, resp_desc, resp, st);
}

int ch_order1(const char *auth, const char *product_id, int64_t quantity, const char *iccid,
              const char *request_id, ch_order_t **out, rpc_status_t *st)
{
    Onceiot__Commerce__V1__OrderItemInput it = ONCEIOT__COMMERCE__V1__ORDER_ITEM_INPUT__INIT;
    it.product_id = (char *)product_id;
    it.quantity = quantity;
    it.iccid = (char *)(iccid ? iccid : "");
    Onceiot__Commerce__V1__OrderItemInput *items[] = {&it};
    Onceiot__Commerce__V1__CreateOrderRequest req =
        ONCEIOT__COMMERCE__V1__CREATE_ORDER_REQUEST__INIT;
    req.items = items;
    req.n_items = 1;
    req.request_id = (char *)(request_id ? request_id : "");
    return ch_call(auth, "CreateOrder", &req.base, &onceiot__commerce__v1__order__descriptor, out,
                   st);
}

ch_order_t *ch_get_order(const char *auth, const char *id)
{
    Onceiot__Commerce__V1__GetOrderRequest req = ONCEIOT__COMMERCE__V1__GET_ORDER_REQUEST__INIT;
    req.id = (char *)id;
    ch_order_t *o = NULL;
    rpc_status_t st;
    int rc =
        ch_call(auth, "GetOrder", &req.base, &onceiot__commerce__v1__order__descriptor, &o, &st);
    cr_assert_eq(rc, 0, "GetOrder %s: %s %s", id, err_grpc_name(st.code), st.message);
    return o;
}

bool ch_wait_status(const char *id, Onceiot__Commerce__V1__OrderStatus status, int timeout_ms)
{
    for (int waited = 0;; waited += 50) {
        if (ch_get_order(ch.staff, id)->status == status)
            return true;
        if (waited >= timeout_ms)
            return false;
        usleep(50000);
    }
}

long long ch_sql_int(const char *sql)
{
    PGresult *r = pgh_sql(sql);
    cr_assert(PQntuples(r) == 1, "%s: %d rows", sql, PQntuples(r));
    long long v = PQgetisnull(r, 0, 0) ? 0 : strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return v;
}

bool ch_violation(const rpc_status_t *st, const char *field)
{
    const char **fields = NULL, **descs = NULL;
    size_t n = rpc_status_violations(st, ch.g.arena, &fields, &descs);
    for (size_t i = 0; i < n; i++)
        if (strcmp(fields[i], field) == 0)
            return true;
    return false;
}
