/* The catalog through the gateway: staff create, update (field mask) and
 * deactivate products; every authenticated caller gets and lists the active
 * ones, by category, one keyset page at a time; bad input is refused and
 * changes nothing; the methods' rules hold. Real identity, sims, commerce
 * and gateway processes. */
#include "commerce_harness.h"
#include "google/protobuf/field_mask.pb-c.h"

#include <criterion/criterion.h>
#include <string.h>

#define D(x)     (&onceiot__commerce__v1__##x##__descriptor)
#define CAT(x)   ONCEIOT__COMMERCE__V1__CATEGORY__CATEGORY_##x
#define USER     ONCEIOT__COMMON__V1__ROLE__ROLE_USER
#define READONLY ONCEIOT__COMMON__V1__ROLE__ROLE_READONLY

static const char *reader; /* organization 1, commerce:read */

static void setup(void)
{
    ch_start();
    reader = ch_user("reader1", READONLY, 1, (const char *const[]){"commerce:read", NULL});
}

TestSuite(commerce_catalog, .init = setup, .fini = ch_stop, .timeout = 240);

static int create(const ch_product_t *p, ch_product_t **out, rpc_status_t *st)
{
    Onceiot__Commerce__V1__CreateProductRequest req =
        ONCEIOT__COMMERCE__V1__CREATE_PRODUCT_REQUEST__INIT;
    req.product = (ch_product_t *)p;
    return ch_call(ch.staff, "CreateProduct", &req.base, D(product), out, st);
}

static int get(const char *auth, const char *id, ch_product_t **out, rpc_status_t *st)
{
    Onceiot__Commerce__V1__GetProductRequest req = ONCEIOT__COMMERCE__V1__GET_PRODUCT_REQUEST__INIT;
    req.id = (char *)id;
    return ch_call(auth, "GetProduct", &req.base, D(product), out, st);
}

Test(commerce_catalog, a_created_product_reads_back_with_its_specifications)
{
    ch_product_t *p = ch_product(CAT(DATA_TOPUP), "TOPUP-1GB", 499, "EUR", -1, 1073741824);
    cr_assert_eq(strlen(p->id), 36);
    cr_assert(p->active);
    cr_assert_null(p->stock, "a top-up's stock is unlimited (unset)");
    ch_product_t *got = NULL;
    rpc_status_t st;
    cr_assert_eq(get(reader, p->id, &got, &st), 0, "%s", st.message);
    cr_assert_str_eq(got->sku, "TOPUP-1GB");
    cr_assert_eq(got->category, CAT(DATA_TOPUP));
    cr_assert_eq(got->price->amount_minor, 499);
    cr_assert_str_eq(got->price->currency_code, "EUR");
    cr_assert_eq(got->specifications->n_fields, 1);
    cr_assert_str_eq(got->specifications->fields[0]->key, "volume_bytes");
    cr_assert_eq(got->specifications->fields[0]->value->number_value, 1073741824.0);
    cr_assert_not_null(got->created_at);

    ch_product_t *sims = ch_product(CAT(SIM_CARD), "SIM-IND", 250, "EUR", 10, 0);
    cr_assert_eq(sims->stock->value, 10);
}

Test(commerce_catalog, bad_products_are_refused_naming_the_field)
{
    Onceiot__Commerce__V1__Money eur = ONCEIOT__COMMERCE__V1__MONEY__INIT;
    eur.currency_code = "EUR";
    eur.amount_minor = 100;
    struct {
        const char *field;
        const char *sku, *currency, *name;
        int64_t amount;
        Onceiot__Commerce__V1__Category cat;
        bool no_spec, negative_stock;
    } cases[] = {
        {"product.sku", "bad sku!", "EUR", "n", 1, CAT(HARDWARE), false, false},
        {"product.price.currency_code", "S1", "eur", "n", 1, CAT(HARDWARE), false, false},
        {"product.price.currency_code", "S2", "EURO", "n", 1, CAT(HARDWARE), false, false},
        {"product.price.amount_minor", "S3", "EUR", "n", -1, CAT(HARDWARE), false, false},
        {"product.name", "S4", "EUR", "", 1, CAT(HARDWARE), false, false},
        {"product.category", "S5", "EUR", "n", 1, CAT(UNSPECIFIED), false, false},
        {"product.specifications.volume_bytes", "S6", "EUR", "n", 1, CAT(DATA_TOPUP), true, false},
        {"product.specifications.sms_count", "S7", "EUR", "n", 1, CAT(SMS_TOPUP), true, false},
        {"product.stock", "S8", "EUR", "n", 1, CAT(HARDWARE), false, true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ch_product_t p = ONCEIOT__COMMERCE__V1__PRODUCT__INIT;
        Onceiot__Commerce__V1__Money m = eur;
        Google__Protobuf__Int64Value stock = GOOGLE__PROTOBUF__INT64_VALUE__INIT;
        m.currency_code = (char *)cases[i].currency;
        m.amount_minor = cases[i].amount;
        p.name = (char *)cases[i].name;
        p.sku = (char *)cases[i].sku;
        p.category = cases[i].cat;
        p.price = &m;
        if (cases[i].negative_stock) {
            stock.value = -1;
            p.stock = &stock;
        }
        ch_product_t *out = NULL;
        rpc_status_t st;
        cr_expect_eq(create(&p, &out, &st), ERR_INVALID_ARGUMENT, "case %zu", i);
        cr_expect(ch_violation(&st, cases[i].field), "case %zu: no violation on %s (%s)", i,
                  cases[i].field, st.message);
    }
    cr_assert_eq(ch_sql_int("SELECT count(*) FROM commerce.products"), 0, "nothing was stored");
    /* A duplicate SKU. */
    ch_product(CAT(HARDWARE), "DUP", 100, "EUR", -1, 0);
    ch_product_t p = ONCEIOT__COMMERCE__V1__PRODUCT__INIT;
    p.name = "again";
    p.sku = "DUP";
    p.category = CAT(HARDWARE);
    p.price = &eur;
    ch_product_t *out = NULL;
    rpc_status_t st;
    cr_assert_eq(create(&p, &out, &st), ERR_ALREADY_EXISTS, "%s", st.message);
}

Test(commerce_catalog, only_staff_change_the_catalog)
{
    const char *writer = ch_user("writer1", ONCEIOT__COMMON__V1__ROLE__ROLE_ADMIN, 1,
                                 (const char *const[]){"commerce:read", "commerce:write", NULL});
    ch_product_t *p = ch_product(CAT(HARDWARE), "MODEM", 9900, "EUR", 5, 0);
    ch_product_t q = ONCEIOT__COMMERCE__V1__PRODUCT__INIT;
    Onceiot__Commerce__V1__Money m = ONCEIOT__COMMERCE__V1__MONEY__INIT;
    m.currency_code = "EUR";
    q.name = "mine";
    q.sku = "MINE";
    q.category = CAT(HARDWARE);
    q.price = &m;
    Onceiot__Commerce__V1__CreateProductRequest c =
        ONCEIOT__COMMERCE__V1__CREATE_PRODUCT_REQUEST__INIT;
    c.product = &q;
    Onceiot__Commerce__V1__DeactivateProductRequest d =
        ONCEIOT__COMMERCE__V1__DEACTIVATE_PRODUCT_REQUEST__INIT;
    d.id = p->id;
    ch_product_t *out = NULL;
    rpc_status_t st;
    cr_assert_eq(ch_call(writer, "CreateProduct", &c.base, D(product), &out, &st),
                 ERR_PERMISSION_DENIED, "%s", st.message);
    cr_assert_eq(ch_call(writer, "DeactivateProduct", &d.base, D(product), &out, &st),
                 ERR_PERMISSION_DENIED, "%s", st.message);
    cr_assert_eq(ch_call(NULL, "GetProduct", &d.base, D(product), &out, &st), ERR_UNAUTHENTICATED,
                 "%s", st.message);
    const char *noscope = ch_user("noscope1", USER, 1, (const char *const[]){"sims:read", NULL});
    cr_assert_eq(get(noscope, p->id, &out, &st), ERR_PERMISSION_DENIED, "%s", st.message);
}

Test(commerce_catalog, update_changes_only_the_masked_fields)
{
    ch_product_t *p = ch_product(CAT(SIM_CARD), "SIM-M2M", 300, "EUR", 100, 0);
    ch_product_t ch_p = ONCEIOT__COMMERCE__V1__PRODUCT__INIT;
    Onceiot__Commerce__V1__Money m = ONCEIOT__COMMERCE__V1__MONEY__INIT;
    m.currency_code = "USD";
    m.amount_minor = 350;
    ch_p.id = p->id;
    ch_p.name = "ignored: not in the mask";
    ch_p.price = &m;
    char *paths[] = {"price", "stock"};
    Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    mask.paths = paths;
    mask.n_paths = 2;
    Onceiot__Commerce__V1__UpdateProductRequest req =
        ONCEIOT__COMMERCE__V1__UPDATE_PRODUCT_REQUEST__INIT;
    req.product = &ch_p;
    req.update_mask = &mask;
    ch_product_t *out = NULL;
    rpc_status_t st;
    cr_assert_eq(ch_call(ch.staff, "UpdateProduct", &req.base, D(product), &out, &st), 0, "%s",
                 st.message);
    cr_assert_str_eq(out->name, p->name);
    cr_assert_eq(out->price->amount_minor, 350);
    cr_assert_str_eq(out->price->currency_code, "USD");
    cr_assert_null(out->stock, "stock unset in the request and in the mask: unlimited now");

    char *bad[] = {"category"};
    mask.paths = bad;
    mask.n_paths = 1;
    cr_assert_eq(ch_call(ch.staff, "UpdateProduct", &req.base, D(product), &out, &st),
                 ERR_INVALID_ARGUMENT);
    cr_assert(ch_violation(&st, "update_mask"));
    mask.n_paths = 0;
    cr_assert_eq(ch_call(ch.staff, "UpdateProduct", &req.base, D(product), &out, &st),
                 ERR_INVALID_ARGUMENT);
    ch_p.id = "00000000-0000-0000-0000-000000000000";
    mask.paths = paths;
    mask.n_paths = 1;
    cr_assert_eq(ch_call(ch.staff, "UpdateProduct", &req.base, D(product), &out, &st),
                 ERR_NOT_FOUND, "%s", st.message);
}

Test(commerce_catalog, a_deactivated_product_is_hidden_from_customers_not_from_staff)
{
    ch_product_t *p = ch_product(CAT(SERVICE), "SUPPORT-PLUS", 1000, "EUR", -1, 0);
    Onceiot__Commerce__V1__DeactivateProductRequest d =
        ONCEIOT__COMMERCE__V1__DEACTIVATE_PRODUCT_REQUEST__INIT;
    d.id = p->id;
    ch_product_t *out = NULL;
    rpc_status_t st;
    cr_assert_eq(ch_call(ch.staff, "DeactivateProduct", &d.base, D(product), &out, &st), 0);
    cr_assert(!out->active);
    cr_assert_eq(ch_call(ch.staff, "DeactivateProduct", &d.base, D(product), &out, &st), 0,
                 "deactivating twice is fine");
    cr_assert_eq(get(reader, p->id, &out, &st), ERR_NOT_FOUND, "%s", st.message);
    cr_assert_eq(get(ch.staff, p->id, &out, &st), 0, "%s", st.message);
    cr_assert_eq(get(reader, "not-a-uuid", &out, &st), ERR_INVALID_ARGUMENT);
}

Test(commerce_catalog, lists_page_by_category_without_gaps_or_repeats)
{
    for (int i = 0; i < 7; i++)
        ch_product(CAT(SMS_TOPUP), arena_printf(ch.g.arena, "SMS-%d", i), 100 + i, "EUR", -1, 100);
    ch_product(CAT(HARDWARE), "ROUTER", 5000, "EUR", 3, 0);
    ch_product_t *gone = ch_product(CAT(SMS_TOPUP), "SMS-GONE", 1, "EUR", -1, 10);
    Onceiot__Commerce__V1__DeactivateProductRequest d =
        ONCEIOT__COMMERCE__V1__DEACTIVATE_PRODUCT_REQUEST__INIT;
    d.id = gone->id;
    ch_product_t *out = NULL;
    rpc_status_t st;
    cr_assert_eq(ch_call(ch.staff, "DeactivateProduct", &d.base, D(product), &out, &st), 0);

    Onceiot__Commerce__V1__ListProductsRequest req =
        ONCEIOT__COMMERCE__V1__LIST_PRODUCTS_REQUEST__INIT;
    req.category = CAT(SMS_TOPUP);
    req.page_size = 3;
    int seen = 0, pages = 0;
    do {
        Onceiot__Commerce__V1__ListProductsResponse *r = NULL;
        cr_assert_eq(ch_call(reader, "ListProducts", &req.base, D(list_products_response), &r, &st),
                     0, "%s", st.message);
        for (size_t i = 0; i < r->n_products; i++) {
            cr_assert_str_eq(r->products[i]->sku, arena_printf(ch.g.arena, "SMS-%d", seen));
            cr_assert_eq(r->products[i]->category, CAT(SMS_TOPUP));
            seen++;
        }
        req.page_token = r->next_page_token;
        pages++;
    } while (*req.page_token && pages < 10);
    cr_assert_eq(seen, 7, "every active SMS pack once, the inactive one not");
    cr_assert_eq(pages, 3);

    /* A token is bound to its filters. */
    req.page_size = 2;
    req.page_token = "";
    Onceiot__Commerce__V1__ListProductsResponse *r = NULL;
    cr_assert_eq(ch_call(reader, "ListProducts", &req.base, D(list_products_response), &r, &st), 0);
    req.page_token = r->next_page_token;
    req.category = CAT(HARDWARE);
    cr_assert_eq(ch_call(reader, "ListProducts", &req.base, D(list_products_response), &r, &st),
                 ERR_INVALID_ARGUMENT);
    /* include_inactive is for staff. */
    req.page_token = "";
    req.category = 0;
    req.include_inactive = true;
    cr_assert_eq(ch_call(reader, "ListProducts", &req.base, D(list_products_response), &r, &st),
                 ERR_INVALID_ARGUMENT);
    req.page_size = 100;
    cr_assert_eq(ch_call(ch.staff, "ListProducts", &req.base, D(list_products_response), &r, &st),
                 0);
    cr_assert_eq(r->n_products, 9);
}
