/* Stock under concurrency, through the gateway: 8 buyers of the last 3
 * units of a product at once; exactly 3 orders are placed, the others are
 * refused, and the stock ends at 0 (never below). The workers record their
 * results and the main thread asserts after the join. */
#include "commerce_harness.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>

#define D(x)   (&onceiot__commerce__v1__##x##__descriptor)
#define CAT(x) ONCEIOT__COMMERCE__V1__CATEGORY__CATEGORY_##x
#define USER   ONCEIOT__COMMON__V1__ROLE__ROLE_USER

static const char *buyer1, *buyer2;

static void setup(void)
{
    ch_start();
    static const char *const scopes[] = {"commerce:read", "commerce:write", NULL};
    buyer1 = ch_user("buyer1", USER, 1, scopes);
    buyer2 = ch_user("buyer2", USER, 2, scopes);
}

TestSuite(commerce_stock, .init = setup, .fini = ch_stop, .timeout = 240);

#define BUYERS 8

typedef struct buyer {
    pthread_barrier_t *start;
    const char *auth, *product, *addr;
    int rc;        /* CreateOrder's result */
    char why[128]; /* its status message */
} buyer_t;

/* Runs in a worker: records its result, asserts nothing. */
static void *buy(void *arg)
{
    buyer_t *b = arg;
    gwc_t g;
    if (rpc_channel_new(b->addr, 1 << 22, &g.ch) < 0) {
        b->rc = -1000;
        return NULL;
    }
    g.arena = arena_new();
    Onceiot__Commerce__V1__OrderItemInput it = ONCEIOT__COMMERCE__V1__ORDER_ITEM_INPUT__INIT;
    it.product_id = (char *)b->product;
    it.quantity = 1;
    Onceiot__Commerce__V1__OrderItemInput *items[] = {&it};
    Onceiot__Commerce__V1__CreateOrderRequest req =
        ONCEIOT__COMMERCE__V1__CREATE_ORDER_REQUEST__INIT;
    req.items = items;
    req.n_items = 1;
    ch_order_t *o = NULL;
    rpc_status_t st;
    pthread_barrier_wait(b->start);
    b->rc = ch_call_on(&g, b->auth, "CreateOrder", &req.base, D(order), &o, &st);
    snprintf(b->why, sizeof(b->why), "%s", b->rc < 0 ? st.message : "");
    rpc_channel_free(g.ch);
    arena_free(g.arena);
    return NULL;
}

Test(commerce_stock, eight_buyers_of_the_last_three_units_never_oversell)
{
    ch_product_t *p = ch_product(CAT(SIM_CARD), "LAST-3", 250, "EUR", 3, 0);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, BUYERS);
    buyer_t b[BUYERS];
    pthread_t t[BUYERS];
    for (int i = 0; i < BUYERS; i++) {
        b[i] = (buyer_t){.start = &start,
                         .auth = i % 2 ? buyer1 : buyer2,
                         .product = p->id,
                         .addr = ch.st.gateway.addr};
        cr_assert_eq(pthread_create(&t[i], NULL, buy, &b[i]), 0);
    }
    for (int i = 0; i < BUYERS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&start);
    int sold = 0, refused = 0;
    for (int i = 0; i < BUYERS; i++) {
        if (b[i].rc == 0)
            sold++;
        else if (b[i].rc == ERR_FAILED_PRECONDITION)
            refused++;
        else
            cr_expect(false, "buyer %d: %d %s", i, b[i].rc, b[i].why);
    }
    cr_assert_eq(sold, 3, "%d sold", sold);
    cr_assert_eq(refused, BUYERS - 3);
    cr_assert_eq(ch_sql_int("SELECT stock FROM commerce.products"), 0);
    cr_assert_eq(ch_sql_int("SELECT coalesce(sum(quantity), 0) FROM commerce.order_items"), 3);
}
