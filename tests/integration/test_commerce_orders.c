/* Orders through the gateway: server-side pricing and snapshots, exact
 * totals, bad orders refused without a trace, the lifecycle and its
 * timestamps, shipping SIM cards into sims, tenancy, and no oversell under
 * Real identity, sims, commerce and gateway processes. */
#include "commerce_harness.h"
#include "google/protobuf/field_mask.pb-c.h"

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define D(x)       (&onceiot__commerce__v1__##x##__descriptor)
#define CAT(x)     ONCEIOT__COMMERCE__V1__CATEGORY__CATEGORY_##x
#define STATUS(x)  ONCEIOT__COMMERCE__V1__ORDER_STATUS__ORDER_STATUS_##x
#define USER       ONCEIOT__COMMON__V1__ROLE__ROLE_USER
#define QUOTA_DATA ONCEIOT__SIMS__V1__QUOTA_TYPE__QUOTA_TYPE_DATA
#define GIB        1073741824LL

/* buyer1/buyer2: users of organizations 1 and 2 with commerce:read+write
 * and sims:read. */
static const char *buyer1, *buyer2;

static void setup(void)
{
    ch_start();
    static const char *const scopes[] = {"commerce:read", "commerce:write", "sims:read", NULL};
    buyer1 = ch_user("buyer1", USER, 1, scopes);
    buyer2 = ch_user("buyer2", USER, 2, scopes);
}

TestSuite(commerce_orders, .init = setup, .fini = ch_stop, .timeout = 300);

static int order_call(const char *auth, const char *method, const char *id, ch_order_t **out,
                      rpc_status_t *st)
{
    Onceiot__Commerce__V1__GetOrderRequest req = ONCEIOT__COMMERCE__V1__GET_ORDER_REQUEST__INIT;
    req.id = (char *)id; /* CancelOrder and ProcessOrder take the same one field */
    return ch_call(auth, method, &req.base, D(order), out, st);
}

static long long stock_of(const char *product_id)
{
    char sql[160];
    snprintf(sql, sizeof(sql), "SELECT stock FROM commerce.products WHERE id = '%s'", product_id);
    return ch_sql_int(sql);
}

Test(commerce_orders, a_top_up_is_priced_by_the_server_and_reaches_the_quota)
{
    ch_product_t *p = ch_product(CAT(DATA_TOPUP), "DATA-1G", 499, "EUR", -1, GIB);
    const char *iccid = ch_sim(1, 1, 1000, 0);
    ch_order_t *o = NULL;
    rpc_status_t st;
    cr_assert_eq(ch_order1(buyer1, p->id, 2, iccid, NULL, &o, &st), 0, "%s", st.message);
    cr_assert_eq(o->organization_id, 1);
    cr_assert_eq(o->order_type, ONCEIOT__COMMERCE__V1__ORDER_TYPE__ORDER_TYPE_DATA_TOPUP);
    cr_assert_eq(o->total->amount_minor, 998);
    cr_assert_str_eq(o->total->currency_code, "EUR");
    cr_assert_eq(o->n_items, 1);
    cr_assert_str_eq(o->items[0]->product_sku, "DATA-1G");
    cr_assert_eq(o->items[0]->unit_price->amount_minor, 499);
    cr_assert_eq(o->items[0]->topup_volume, 2 * GIB);
    cr_assert_not_null(o->ordered_at);
    cr_assert(ch_wait_status(o->id, STATUS(COMPLETED), 10000), "never completed");
    cr_assert_eq(ch_quota(iccid, QUOTA_DATA), 1000 + 2 * GIB);
    ch_order_t *done = ch_get_order(buyer1, o->id);
    cr_assert_not_null(done->processing_at);
    cr_assert_not_null(done->completed_at);
    cr_assert_not_null(done->items[0]->fulfilled_at);
    cr_assert_null(done->cancelled_at);

    /* A later price change leaves the placed order's snapshot alone. */
    Onceiot__Commerce__V1__Money m = ONCEIOT__COMMERCE__V1__MONEY__INIT;
    m.currency_code = "EUR";
    m.amount_minor = 599;
    ch_product_t up = ONCEIOT__COMMERCE__V1__PRODUCT__INIT;
    up.id = p->id;
    up.price = &m;
    char *paths[] = {"price"};
    Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    mask.paths = paths;
    mask.n_paths = 1;
    Onceiot__Commerce__V1__UpdateProductRequest u =
        ONCEIOT__COMMERCE__V1__UPDATE_PRODUCT_REQUEST__INIT;
    u.product = &up;
    u.update_mask = &mask;
    ch_product_t *after = NULL;
    cr_assert_eq(ch_call(ch.staff, "UpdateProduct", &u.base, D(product), &after, &st), 0);
    cr_assert_eq(ch_get_order(buyer1, o->id)->total->amount_minor, 998);
    ch_order_t *o2 = NULL;
    cr_assert_eq(ch_order1(buyer1, p->id, 1, iccid, NULL, &o2, &st), 0, "%s", st.message);
    cr_assert_eq(o2->total->amount_minor, 599);
}

Test(commerce_orders, a_client_cannot_send_a_price)
{
    ch_product_t *p = ch_product(CAT(HARDWARE), "ROUTER", 12345, "EUR", -1, 0);
    /* A CreateOrderRequest whose item carries extra fields 4 and 5 (as a
     * tampering client would add "unit_price" and "total"): unknown to the
     * schema, so ignored; the catalog prices the order. */
    Onceiot__Commerce__V1__OrderItemInput it = ONCEIOT__COMMERCE__V1__ORDER_ITEM_INPUT__INIT;
    it.product_id = p->id;
    it.quantity = 1;
    uint8_t item[128];
    size_t n = onceiot__commerce__v1__order_item_input__pack(&it, item);
    item[n++] = 4 << 3; /* field 4, varint 1 */
    item[n++] = 1;
    item[n++] = 5 << 3; /* field 5, varint 1 */
    item[n++] = 1;
    uint8_t req[160];
    size_t len = 0;
    req[len++] = 1 << 3 | 2; /* items, length-delimited */
    req[len++] = (uint8_t)n;
    memcpy(req + len, item, n);
    len += n;
    rpc_call_opts_t o = gwc_opts(&ch.g, buyer1, 20000);
    ProtobufCBinaryData resp = {0, NULL};
    rpc_status_t st;
    cr_assert_eq(
        rpc_unary_raw(ch.g.ch, CH_COMMERCE "CreateOrder", req, len, ch.g.arena, &o, &resp, &st), 0,
        "%s", st.message);
    ch_order_t *order = onceiot__commerce__v1__order__unpack(NULL, resp.len, resp.data);
    cr_assert_not_null(order);
    cr_expect_eq(order->total->amount_minor, 12345);
    cr_expect_eq(order->items[0]->unit_price->amount_minor, 12345);
    onceiot__commerce__v1__order__free_unpacked(order, NULL);
}

/* One CreateOrder of the given items (product, quantity, iccid triples). */
static int order_n(const char *auth, size_t n, const char *const *products, const int64_t *qty,
                   const char *const *iccids, ch_order_t **out, rpc_status_t *st)
{
    Onceiot__Commerce__V1__OrderItemInput **items =
        arena_alloc(ch.g.arena, (n ? n : 1) * sizeof(*items));
    for (size_t i = 0; i < n; i++) {
        items[i] = arena_alloc(ch.g.arena, sizeof(**items));
        onceiot__commerce__v1__order_item_input__init(items[i]);
        items[i]->product_id = (char *)products[i];
        items[i]->quantity = qty[i];
        items[i]->iccid = (char *)(iccids && iccids[i] ? iccids[i] : "");
    }
    Onceiot__Commerce__V1__CreateOrderRequest req =
        ONCEIOT__COMMERCE__V1__CREATE_ORDER_REQUEST__INIT;
    req.items = items;
    req.n_items = n;
    return ch_call(auth, "CreateOrder", &req.base, D(order), out, st);
}

Test(commerce_orders, bad_orders_are_refused_and_change_nothing)
{
    ch_product_t *sims = ch_product(CAT(SIM_CARD), "SIM-5", 250, "EUR", 5, 0);
    ch_product_t *usd = ch_product(CAT(HARDWARE), "USD-MODEM", 100, "USD", -1, 0);
    ch_product_t *dear = ch_product(CAT(HARDWARE), "DEAR", INT64_MAX / 2, "EUR", -1, 0);
    ch_product_t *data = ch_product(CAT(DATA_TOPUP), "DATA-X", 100, "EUR", -1, INT64_C(1) << 50);
    ch_product_t *gone = ch_product(CAT(HARDWARE), "GONE", 100, "EUR", -1, 0);
    Onceiot__Commerce__V1__DeactivateProductRequest d =
        ONCEIOT__COMMERCE__V1__DEACTIVATE_PRODUCT_REQUEST__INIT;
    d.id = gone->id;
    ch_product_t *ignored = NULL;
    rpc_status_t st;
    cr_assert_eq(ch_call(ch.staff, "DeactivateProduct", &d.base, D(product), &ignored, &st), 0);
    const char *mine = ch_sim(1, 11, 0, 0);
    const char *theirs = ch_sim(2, 12, 0, 0);
    const char *unknown = "8949000000000999999";
    const char *nobody = "00000000-0000-0000-0000-000000000000";
    struct {
        int code;
        const char *field; /* NULL: no violation expected */
        size_t n;
        const char *products[2];
        int64_t qty[2];
        const char *iccids[2];
    } cases[] = {
        {ERR_NOT_FOUND, NULL, 1, {nobody}, {1}, {NULL}},
        {ERR_FAILED_PRECONDITION, NULL, 1, {gone->id}, {1}, {NULL}},
        {ERR_INVALID_ARGUMENT, "items[0].product_id", 1, {"nope"}, {1}, {NULL}},
        {ERR_INVALID_ARGUMENT, "items[0].quantity", 1, {sims->id}, {0}, {NULL}},
        {ERR_INVALID_ARGUMENT, "items[0].quantity", 1, {sims->id}, {-3}, {NULL}},
        {ERR_INVALID_ARGUMENT, "items[0].quantity", 1, {sims->id}, {10001}, {NULL}},
        {ERR_INVALID_ARGUMENT, "items[0].quantity", 1, {dear->id}, {3}, {NULL}},
        {ERR_INVALID_ARGUMENT, "items[0].quantity", 1, {data->id}, {10000}, {mine}},
        {ERR_INVALID_ARGUMENT, "items[1].product_id", 2, {sims->id, usd->id}, {1, 1}, {NULL}},
        {ERR_INVALID_ARGUMENT, "items[0].iccid", 1, {data->id}, {1}, {NULL}},
        {ERR_INVALID_ARGUMENT, "items[0].iccid", 1, {sims->id}, {1}, {mine}},
        {ERR_INVALID_ARGUMENT, "items[0].iccid", 1, {data->id}, {1}, {"12345"}},
        {ERR_NOT_FOUND, NULL, 1, {data->id}, {1}, {theirs}},
        {ERR_NOT_FOUND, NULL, 1, {data->id}, {1}, {unknown}},
        {ERR_FAILED_PRECONDITION, NULL, 1, {sims->id}, {6}, {NULL}},
        {ERR_INVALID_ARGUMENT, "items", 0, {NULL}, {0}, {NULL}},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ch_order_t *o = NULL;
        int rc =
            order_n(buyer1, cases[i].n, cases[i].products, cases[i].qty, cases[i].iccids, &o, &st);
        cr_expect_eq(rc, cases[i].code, "case %zu: %d (%s), expected %d", i, rc, st.message,
                     cases[i].code);
        if (cases[i].field)
            cr_expect(ch_violation(&st, cases[i].field), "case %zu: no violation on %s (%s)", i,
                      cases[i].field, st.message);
    }
    /* 101 items. */
    const char *many[101];
    int64_t ones[101];
    for (size_t i = 0; i < 101; i++) {
        many[i] = sims->id;
        ones[i] = 1;
    }
    ch_order_t *o = NULL;
    cr_assert_eq(order_n(buyer1, 101, many, ones, NULL, &o, &st), ERR_INVALID_ARGUMENT);
    cr_assert(ch_violation(&st, "items"));
    cr_assert_eq(ch_sql_int("SELECT count(*) FROM commerce.orders"), 0, "no order was stored");
    cr_assert_eq(ch_sql_int("SELECT count(*) FROM commerce.outbox"), 0);
    cr_assert_eq(stock_of(sims->id), 5, "no stock was taken");
    /* Exact sums across items: 2 x 250 + 3 x 250 from two lines. */
    const char *two[] = {sims->id, sims->id};
    int64_t q[] = {2, 3};
    cr_assert_eq(order_n(buyer1, 2, two, q, NULL, &o, &st), 0, "%s", st.message);
    cr_assert_eq(o->total->amount_minor, 1250);
    cr_assert_eq(stock_of(sims->id), 0);
}

Test(commerce_orders, cancel_returns_the_stock_and_final_states_stay_final)
{
    ch_product_t *p = ch_product(CAT(HARDWARE), "GW-5", 5000, "EUR", 5, 0);
    ch_order_t *o = NULL, *x = NULL;
    rpc_status_t st;
    cr_assert_eq(ch_order1(buyer1, p->id, 2, NULL, NULL, &o, &st), 0, "%s", st.message);
    cr_assert_eq(o->status, STATUS(PENDING));
    cr_assert_eq(stock_of(p->id), 3);
    cr_assert_eq(order_call(buyer2, "CancelOrder", o->id, &x, &st), ERR_NOT_FOUND,
                 "another organization's order does not exist for it");
    cr_assert_eq(order_call(buyer1, "CancelOrder", o->id, &x, &st), 0, "%s", st.message);
    cr_assert_eq(x->status, STATUS(CANCELLED));
    cr_assert_not_null(x->cancelled_at);
    cr_assert_eq(stock_of(p->id), 5);
    cr_assert_eq(order_call(buyer1, "CancelOrder", o->id, &x, &st), ERR_FAILED_PRECONDITION);
    cr_assert(strstr(st.message, "cancelled"), "%s", st.message);
    cr_assert_eq(order_call(ch.staff, "ProcessOrder", o->id, &x, &st), ERR_FAILED_PRECONDITION);
    cr_assert_eq(stock_of(p->id), 5, "cancelling twice returns the stock once");

    /* PROCESSING may still be cancelled; customers may not process. */
    cr_assert_eq(ch_order1(buyer1, p->id, 1, NULL, NULL, &o, &st), 0, "%s", st.message);
    cr_assert_eq(order_call(buyer1, "ProcessOrder", o->id, &x, &st), ERR_PERMISSION_DENIED);
    cr_assert_eq(order_call(ch.staff, "ProcessOrder", o->id, &x, &st), 0, "%s", st.message);
    cr_assert_eq(x->status, STATUS(PROCESSING));
    cr_assert_not_null(x->processing_at);
    cr_assert_eq(order_call(ch.staff, "ProcessOrder", o->id, &x, &st), ERR_FAILED_PRECONDITION);
    cr_assert_eq(order_call(buyer1, "CancelOrder", o->id, &x, &st), 0, "%s", st.message);
    cr_assert_eq(stock_of(p->id), 5);

    /* A completed top-up cannot be cancelled. */
    ch_product_t *t = ch_product(CAT(SMS_TOPUP), "SMS-100", 300, "EUR", -1, 100);
    const char *iccid = ch_sim(1, 21, 0, 5);
    cr_assert_eq(ch_order1(buyer1, t->id, 1, iccid, NULL, &o, &st), 0, "%s", st.message);
    cr_assert(ch_wait_status(o->id, STATUS(COMPLETED), 10000));
    cr_assert_eq(order_call(buyer1, "CancelOrder", o->id, &x, &st), ERR_FAILED_PRECONDITION);
    cr_assert_eq(ch_quota(iccid, ONCEIOT__SIMS__V1__QUOTA_TYPE__QUOTA_TYPE_SMS), 105);
}

static int ship(const char *auth, const char *id, int item, const char *const *iccids, size_t n,
                ch_order_t **out, rpc_status_t *st)
{
    Onceiot__Commerce__V1__ShippedItem s = ONCEIOT__COMMERCE__V1__SHIPPED_ITEM__INIT;
    s.item = item;
    s.iccids = (char **)iccids;
    s.n_iccids = n;
    Onceiot__Commerce__V1__ShippedItem *items[] = {&s};
    Onceiot__Commerce__V1__ShipOrderRequest req = ONCEIOT__COMMERCE__V1__SHIP_ORDER_REQUEST__INIT;
    req.id = (char *)id;
    req.items = items;
    req.n_items = item ? 1 : 0;
    return ch_call(auth, "ShipOrder", &req.base, D(order), out, st);
}

Test(commerce_orders, shipped_sim_cards_are_registered_for_the_ordering_organization)
{
    ch_product_t *p = ch_product(CAT(SIM_CARD), "SIM-PACK", 200, "EUR", 10, 0);
    ch_order_t *o = NULL, *x = NULL;
    rpc_status_t st;
    cr_assert_eq(ch_order1(buyer2, p->id, 2, NULL, NULL, &o, &st), 0, "%s", st.message);
    const char *iccids[] = {"8949000000000700001", "8949000000000700002", "8949000000000700003"};
    cr_assert_eq(ship(buyer2, o->id, 1, iccids, 2, &x, &st), ERR_PERMISSION_DENIED);
    cr_assert_eq(ship(ch.staff, o->id, 1, iccids, 3, &x, &st), ERR_INVALID_ARGUMENT,
                 "three ICCIDs for two cards");
    cr_assert_eq(ship(ch.staff, o->id, 0, iccids, 0, &x, &st), ERR_INVALID_ARGUMENT);
    const char *dup[] = {iccids[0], iccids[0]};
    cr_assert_eq(ship(ch.staff, o->id, 1, dup, 2, &x, &st), ERR_INVALID_ARGUMENT);
    const char *taken[] = {ch_sim(1, 31, 0, 0), iccids[1]};
    cr_assert_eq(ship(ch.staff, o->id, 1, taken, 2, &x, &st), ERR_ALREADY_EXISTS, "%s", st.message);

    cr_assert_eq(ship(ch.staff, o->id, 1, iccids, 2, &x, &st), 0, "%s", st.message);
    cr_assert_eq(x->status, STATUS(PROCESSING));
    cr_assert_not_null(x->shipped_at);
    cr_assert_eq(x->items[0]->n_shipped_iccids, 2);
    cr_assert(ch_wait_status(o->id, STATUS(COMPLETED), 10000), "never completed");
    cr_assert_eq(ship(ch.staff, o->id, 1, iccids, 2, &x, &st), ERR_FAILED_PRECONDITION);
    cr_assert_eq(order_call(buyer2, "CancelOrder", o->id, &x, &st), ERR_FAILED_PRECONDITION);
    /* The cards are SIMs of organization 2 now, visible to its users only. */
    for (int i = 0; i < 2; i++) {
        Onceiot__Sims__V1__GetSimRequest g = ONCEIOT__SIMS__V1__GET_SIM_REQUEST__INIT;
        g.iccid = (char *)iccids[i];
        Onceiot__Sims__V1__Sim *sim = NULL;
        cr_assert_eq(gwc_call(&ch.g, buyer2, CH_SIMS "GetSim", &g.base,
                              &onceiot__sims__v1__sim__descriptor, &sim, &st),
                     0, "%s", st.message);
        cr_assert_eq(sim->organization_id, 2);
        cr_assert_eq(gwc_call(&ch.g, buyer1, CH_SIMS "GetSim", &g.base,
                              &onceiot__sims__v1__sim__descriptor, &sim, &st),
                     ERR_NOT_FOUND);
    }
    /* A top-up only order has nothing to ship. */
    ch_product_t *t = ch_product(CAT(SMS_TOPUP), "SMS-10", 50, "EUR", -1, 10);
    const char *mine = ch_sim(2, 32, 0, 0);
    cr_assert_eq(ch_order1(buyer2, t->id, 1, mine, NULL, &o, &st), 0, "%s", st.message);
    cr_assert_eq(ship(ch.staff, o->id, 0, NULL, 0, &x, &st), ERR_FAILED_PRECONDITION);
}

Test(commerce_orders, each_organization_sees_only_its_orders)
{
    ch_product_t *p = ch_product(CAT(SERVICE), "SVC", 100, "EUR", -1, 0);
    ch_order_t *o = NULL, *x = NULL;
    rpc_status_t st;
    const char *ids[5];
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(ch_order1(buyer1, p->id, 1, NULL, NULL, &o, &st), 0, "%s", st.message);
        ids[i] = o->id;
    }
    cr_assert_eq(ch_order1(buyer2, p->id, 1, NULL, NULL, &o, &st), 0, "%s", st.message);
    cr_assert_eq(order_call(buyer2, "GetOrder", ids[0], &x, &st), ERR_NOT_FOUND);
    cr_assert_eq(order_call(buyer1, "GetOrder", ids[0], &x, &st), 0);
    cr_assert_eq(order_call(ch.staff, "GetOrder", o->id, &x, &st), 0, "superusers see all");

    Onceiot__Commerce__V1__ListOrdersRequest req = ONCEIOT__COMMERCE__V1__LIST_ORDERS_REQUEST__INIT;
    req.page_size = 2;
    int seen = 0, pages = 0;
    do {
        Onceiot__Commerce__V1__ListOrdersResponse *r = NULL;
        cr_assert_eq(ch_call(buyer1, "ListOrders", &req.base, D(list_orders_response), &r, &st), 0,
                     "%s", st.message);
        for (size_t i = 0; i < r->n_orders; i++, seen++) {
            cr_assert_str_eq(r->orders[i]->id, ids[4 - seen], "newest first, no gaps or repeats");
            cr_assert_eq(r->orders[i]->n_items, 1);
        }
        req.page_token = r->next_page_token;
        pages++;
    } while (*req.page_token && pages < 10);
    cr_assert_eq(seen, 5);
    Onceiot__Commerce__V1__ListOrdersResponse *r = NULL;
    req.page_token = "";
    req.page_size = 100;
    cr_assert_eq(ch_call(ch.staff, "ListOrders", &req.base, D(list_orders_response), &r, &st), 0);
    cr_assert_eq(r->n_orders, 6);
    req.status = STATUS(CANCELLED);
    cr_assert_eq(ch_call(buyer1, "ListOrders", &req.base, D(list_orders_response), &r, &st), 0);
    cr_assert_eq(r->n_orders, 0);
    req.status = STATUS(PENDING);
    req.order_type = ONCEIOT__COMMERCE__V1__ORDER_TYPE__ORDER_TYPE_SERVICE;
    cr_assert_eq(ch_call(buyer2, "ListOrders", &req.base, D(list_orders_response), &r, &st), 0);
    cr_assert_eq(r->n_orders, 1);
    Google__Protobuf__Timestamp future = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    future.seconds = x->ordered_at->seconds + 3600;
    req.ordered_after = &future;
    cr_assert_eq(ch_call(buyer2, "ListOrders", &req.base, D(list_orders_response), &r, &st), 0);
    cr_assert_eq(r->n_orders, 0);
    req.ordered_before = x->ordered_at;
    cr_assert_eq(ch_call(buyer2, "ListOrders", &req.base, D(list_orders_response), &r, &st),
                 ERR_INVALID_ARGUMENT);
}

Test(commerce_orders, a_retried_create_order_returns_the_first_order)
{
    ch_product_t *p = ch_product(CAT(DATA_TOPUP), "DATA-RETRY", 100, "EUR", 10, 1000);
    const char *iccid = ch_sim(1, 41, 0, 0);
    ch_order_t *a = NULL, *b = NULL;
    rpc_status_t st;
    cr_assert_eq(ch_order1(buyer1, p->id, 2, iccid, "retry-1", &a, &st), 0, "%s", st.message);
    cr_assert_eq(ch_order1(buyer1, p->id, 2, iccid, "retry-1", &b, &st), 0, "%s", st.message);
    cr_assert_str_eq(a->id, b->id, "the same order");
    cr_assert_eq(ch_order1(buyer1, p->id, 3, iccid, "retry-1", &b, &st), ERR_INVALID_ARGUMENT,
                 "the same id with another request");
    cr_assert_eq(ch_order1(buyer1, p->id, 2, iccid, "bad id!", &b, &st), ERR_INVALID_ARGUMENT);
    /* Another user's id space is its own. */
    const char *other = ch_sim(2, 42, 0, 0);
    cr_assert_eq(ch_order1(buyer2, p->id, 2, other, "retry-1", &b, &st), 0, "%s", st.message);
    cr_assert_str_neq(a->id, b->id);
    cr_assert(ch_wait_status(a->id, STATUS(COMPLETED), 10000));
    cr_assert_eq(ch_sql_int("SELECT count(*) FROM commerce.orders"), 2);
    cr_assert_eq(stock_of(p->id), 6, "reserved once per order");
    cr_assert_eq(ch_quota(iccid, QUOTA_DATA), 2000, "topped up once");
}
