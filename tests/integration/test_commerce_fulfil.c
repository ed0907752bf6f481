/* Fulfilment exactly once, through the gateway: top-up items reach the
 * SIM's quota once each whatever crashes when (kill -9 of commerce in the
 * middle of delivering an order, sims down for a while), and a permanent
 * refusal by sims fails the order. Real identity, sims, commerce and gateway
 * processes; the outbox lease is 2 s so a killed dispatcher's rows come
 * back quickly. */
#include "commerce_harness.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#define D(x)       (&onceiot__commerce__v1__##x##__descriptor)
#define CAT(x)     ONCEIOT__COMMERCE__V1__CATEGORY__CATEGORY_##x
#define STATUS(x)  ONCEIOT__COMMERCE__V1__ORDER_STATUS__ORDER_STATUS_##x
#define USER       ONCEIOT__COMMON__V1__ROLE__ROLE_USER
#define QUOTA_DATA ONCEIOT__SIMS__V1__QUOTA_TYPE__QUOTA_TYPE_DATA
#define MIB        1048576LL
#define ITEMS      100

static const char *buyer;

static void setup(void)
{
    ch_start();
    buyer = ch_user("buyer1", USER, 1,
                    (const char *const[]){"commerce:read", "commerce:write", "sims:read", NULL});
}

TestSuite(commerce_fulfil, .init = setup, .fini = ch_stop, .timeout = 300);

/* One order of ITEMS top-up items of product on iccid (ITEMS deliveries to
 * sims, each with its own request id). */
static ch_order_t *order_many(const char *product, const char *iccid)
{
    Onceiot__Commerce__V1__OrderItemInput it[ITEMS], *items[ITEMS];
    for (int i = 0; i < ITEMS; i++) {
        onceiot__commerce__v1__order_item_input__init(&it[i]);
        it[i].product_id = (char *)product;
        it[i].quantity = 1;
        it[i].iccid = (char *)iccid;
        items[i] = &it[i];
    }
    Onceiot__Commerce__V1__CreateOrderRequest req =
        ONCEIOT__COMMERCE__V1__CREATE_ORDER_REQUEST__INIT;
    req.items = items;
    req.n_items = ITEMS;
    ch_order_t *o = NULL;
    rpc_status_t st;
    cr_assert_eq(ch_call(buyer, "CreateOrder", &req.base, D(order), &o, &st), 0, "%s", st.message);
    cr_assert_eq(o->n_items, ITEMS);
    return o;
}

static long long fulfilled(const char *order_id)
{
    char sql[200];
    snprintf(sql, sizeof(sql),
             "SELECT count(fulfilled_at) FROM commerce.order_items i JOIN commerce.orders o "
             "ON o.seq = i.order_seq WHERE o.id = '%s'",
             order_id);
    return ch_sql_int(sql);
}

Test(commerce_fulfil, top_ups_apply_exactly_once_across_kill_9_of_commerce)
{
    ch_product_t *p = ch_product(CAT(DATA_TOPUP), "DATA-1M", 10, "EUR", -1, MIB);
    const char *iccid = ch_sim(1, 1, 5, 0);
    for (int round = 0; round < 3; round++) {
        ch_order_t *o = order_many(p->id, iccid);
        /* Killed while it delivers the order's items (sends in flight,
         * applied but not recorded, not yet sent). */
        usleep(20000 * (useconds_t)round);
        ch_restart_commerce(SIGKILL);
        cr_assert(ch_wait_status(o->id, STATUS(COMPLETED), 60000), "round %d never completed",
                  round);
        cr_assert_eq(fulfilled(o->id), ITEMS);
    }
    cr_assert_eq(ch_quota(iccid, QUOTA_DATA), 5 + 3 * ITEMS * MIB, "each item exactly once");
    cr_assert_eq(ch_sql_int("SELECT count(*) FROM commerce.outbox"), 0);
}

Test(commerce_fulfil, top_ups_wait_while_sims_is_down_and_then_apply_once)
{
    ch_product_t *p = ch_product(CAT(DATA_TOPUP), "DATA-1M", 10, "EUR", -1, MIB);
    const char *iccid = ch_sim(1, 2, 0, 0);
    ch_order_t *o = order_many(p->id, iccid);
    ch_kill_sims();
    long long before = fulfilled(o->id);
    sleep(2);
    cr_assert_lt(before, ITEMS, "the order was delivered before sims went down");
    cr_assert_eq(fulfilled(o->id), before, "nothing is fulfilled while sims is down");
    cr_assert_neq(ch_get_order(buyer, o->id)->status, STATUS(FAILED),
                  "an unreachable sims is no reason to fail");
    ch_start_sims();
    cr_assert(ch_wait_status(o->id, STATUS(COMPLETED), 60000), "never completed");
    cr_assert_eq(ch_quota(iccid, QUOTA_DATA), ITEMS * MIB, "each item exactly once");
}

Test(commerce_fulfil, a_permanent_refusal_by_sims_fails_the_order)
{
    /* sims keeps a quota's threshold in 64 bits (volume x percentage): 100
     * x 2^53 bytes more is refused for good (INVALID_ARGUMENT). */
    ch_product_t *p = ch_product(CAT(DATA_TOPUP), "DATA-HUGE", 10, "EUR", -1, INT64_C(1) << 53);
    const char *iccid = ch_sim(1, 3, 1000, 0);
    ch_order_t *o = NULL;
    rpc_status_t st;
    cr_assert_eq(ch_order1(buyer, p->id, 100, iccid, NULL, &o, &st), 0, "%s", st.message);
    cr_assert(ch_wait_status(o->id, STATUS(FAILED), 20000), "never failed");
    ch_order_t *f = ch_get_order(buyer, o->id);
    cr_assert_not_null(f->failed_at);
    cr_assert(*f->failure_reason, "the reason is kept");
    cr_assert_eq(ch_quota(iccid, QUOTA_DATA), 1000);
    cr_assert_eq(ch_sql_int("SELECT count(failed_at) FROM commerce.outbox"), 1,
                 "the refused row stays for operators");
}
