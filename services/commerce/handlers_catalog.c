/* The catalog: CreateProduct, GetProduct, ListProducts, UpdateProduct and
 * DeactivateProduct. */
#include "commerce.h"

#include <string.h>

#define LIST_DEFAULT 50
#define LIST_MAX     500

/* Records violations of the product's own fields (prefix "product.");
 * category is checked by the caller (it is fixed after creation). */
static void catalog__check_name(rpc_call_t *call, const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 200)
        rpc_violation(call, "product.name", "must be 1 to 200 characters");
}

static void catalog__check_description(rpc_call_t *call, const char *d)
{
    if (strlen(d) > 4000)
        rpc_violation(call, "product.description", "must be at most 4000 characters");
}

static void catalog__check_sku(rpc_call_t *call, const char *sku)
{
    size_t n = strlen(sku);
    if (n == 0 || n > 64 ||
        strspn(sku, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") != n)
        rpc_violation(call, "product.sku", "must be 1 to 64 of A-Z a-z 0-9 . _ -");
}

static void catalog__check_stock(rpc_call_t *call, const Google__Protobuf__Int64Value *stock)
{
    if (stock && stock->value < 0)
        rpc_violation(call, "product.stock", "must not be negative (unset: unlimited)");
}

static const char *catalog__stock_param(arena_t *a, const Google__Protobuf__Int64Value *stock)
{
    return stock ? commerce_i64(a, stock->value) : NULL;
}

static const db_stmt_t insert_product = {
    "commerce_insert_product",
    "INSERT INTO products AS p (name, description, sku, category, price_minor, currency, stock, "
    "specifications) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb) "
    "RETURNING " COMMERCE_PRODUCT_COLUMNS,
    8};

int commerce_create_product(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Commerce__V1__CreateProductRequest *r = (const void *)req;
    commerce_ctx_t cx;
    int rc = commerce_staff_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    const commerce_product_t *p = r->product;
    if (!p) {
        rpc_violation(call, "product", "is required");
        return rpc_check_violations(call);
    }
    const char *category = commerce_category_name(p->category);
    if (!category)
        rpc_violation(call, "product.category", "must be one of the categories");
    catalog__check_name(call, p->name);
    catalog__check_description(call, p->description);
    catalog__check_sku(call, p->sku);
    commerce_valid_money(call, "product.price", p->price);
    catalog__check_stock(call, p->stock);
    const char *specs = NULL;
    commerce_valid_specs(call, "product.specifications", category, p->specifications, &specs);
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    const char *params[] = {p->name,
                            p->description,
                            p->sku,
                            category,
                            commerce_i64(cx.a, p->price->amount_minor),
                            p->price->currency_code,
                            catalog__stock_param(cx.a, p->stock),
                            specs};
    PGresult *res = NULL;
    if ((rc = commerce_exec(&cx, &insert_product, params, &res)) < 0)
        return rc;
    *resp = &commerce_product_from_row(cx.a, res, 0)->base;
    PQclear(res);
    return 0;
}

static const db_stmt_t get_product = {"commerce_get_product",
                                      "SELECT " COMMERCE_PRODUCT_COLUMNS " FROM products p "
                                      "WHERE p.id = $1::uuid AND (p.is_active OR $2::boolean)",
                                      2};

/* Answers with the first row of res, or NOT_FOUND naming id. */
static int catalog__reply(commerce_ctx_t *cx, const char *id, PGresult *res, int rows,
                          ProtobufCMessage **resp)
{
    int rc = 0;
    if (rows == 0)
        rc = rpc_fail(cx->call, ERR_NOT_FOUND, "no product %s", id);
    else
        *resp = &commerce_product_from_row(cx->a, res, 0)->base;
    PQclear(res);
    return rc;
}

int commerce_get_product(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Commerce__V1__GetProductRequest *r = (const void *)req;
    commerce_ctx_t cx;
    int rc = commerce_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    commerce_valid_uuid(call, "id", r->id);
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    const char *params[] = {r->id, cx.who->is_superuser ? "true" : "false"};
    PGresult *res = NULL;
    if ((rc = commerce_exec(&cx, &get_product, params, &res)) < 0)
        return rc;
    return catalog__reply(&cx, r->id, res, rc, resp);
}

static const db_stmt_t list_products = {
    "commerce_list_products",
    "SELECT p.seq, " COMMERCE_PRODUCT_COLUMNS " FROM products p "
    "WHERE ($1::text IS NULL OR p.category = $1) AND (p.is_active OR $2::boolean) "
    "AND ($3::bigint IS NULL OR p.seq > $3) ORDER BY p.seq LIMIT $4",
    4};

int commerce_list_products(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Commerce__V1__ListProductsRequest *r = (const void *)req;
    commerce_ctx_t cx;
    int rc = commerce_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    int size = pagetoken_page_size(call, r->page_size, LIST_DEFAULT, LIST_MAX);
    const char *category = NULL;
    if (r->category && !(category = commerce_category_name(r->category)))
        rpc_violation(call, "category", "unknown category %d", (int)r->category);
    if (r->include_inactive && !cx.who->is_superuser)
        rpc_violation(call, "include_inactive", "is for the operator's staff only");
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    const char *inactive = r->include_inactive ? "true" : "false";
    const char *hash_parts[] = {list_products.name, category, inactive};
    uint64_t hash = pagetoken_hash(hash_parts, 3);
    const char *after = NULL, *unused = NULL;
    if (*r->page_token && (rc = pagetoken_decode(call, r->page_token, hash, &after, &unused)) < 0)
        return rc;
    const char *params[] = {category, inactive, after, commerce_i64(cx.a, size + 1)};
    PGresult *res = NULL;
    if ((rc = commerce_exec(&cx, &list_products, params, &res)) < 0)
        return rc;
    Onceiot__Commerce__V1__ListProductsResponse *out = arena_alloc(cx.a, sizeof(*out));
    onceiot__commerce__v1__list_products_response__init(out);
    int n = rc > size ? size : rc;
    out->products = arena_alloc(cx.a, (size_t)(n ? n : 1) * sizeof(*out->products));
    for (int i = 0; i < n; i++)
        out->products[out->n_products++] = commerce_product_from_row(cx.a, res, i);
    if (rc > size)
        out->next_page_token = (char *)pagetoken_encode(cx.a, hash, db_get(res, n - 1, "seq"), "");
    PQclear(res);
    *resp = &out->base;
    return 0;
}

static const db_stmt_t lock_product = {
    "commerce_lock_product",
    "SELECT " COMMERCE_PRODUCT_COLUMNS " FROM products p WHERE p.id = $1::uuid FOR UPDATE", 1};

static const db_stmt_t update_product = {
    "commerce_update_product",
    "UPDATE products p SET "
    "name = CASE WHEN $2 THEN $3 ELSE p.name END, "
    "description = CASE WHEN $4 THEN $5 ELSE p.description END, "
    "sku = CASE WHEN $6 THEN $7 ELSE p.sku END, "
    "price_minor = CASE WHEN $8 THEN $9::bigint ELSE p.price_minor END, "
    "currency = CASE WHEN $8 THEN $10 ELSE p.currency END, "
    "stock = CASE WHEN $11 THEN $12::bigint ELSE p.stock END, "
    "specifications = CASE WHEN $13 THEN $14::jsonb ELSE p.specifications END, "
    "is_active = CASE WHEN $15 THEN $16::boolean ELSE p.is_active END "
    "WHERE p.id = $1::uuid RETURNING " COMMERCE_PRODUCT_COLUMNS,
    16};

/* The fields an update mask may name, in the order of update_product's
 * flags. */
enum { UP_NAME, UP_DESCRIPTION, UP_SKU, UP_PRICE, UP_STOCK, UP_SPECS, UP_ACTIVE, UP_N };
static const char *const update_paths[UP_N] = {"name",  "description",    "sku",   "price",
                                               "stock", "specifications", "active"};

int commerce_update_product(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Commerce__V1__UpdateProductRequest *r = (const void *)req;
    commerce_ctx_t cx;
    int rc = commerce_staff_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    const commerce_product_t *p = r->product;
    if (!p) {
        rpc_violation(call, "product", "is required");
        return rpc_check_violations(call);
    }
    commerce_valid_uuid(call, "product.id", p->id);
    bool set[UP_N] = {false};
    size_t n_paths = r->update_mask ? r->update_mask->n_paths : 0;
    if (n_paths == 0)
        rpc_violation(call, "update_mask", "names no field");
    for (size_t i = 0; i < n_paths; i++) {
        size_t k = 0;
        while (k < UP_N && strcmp(r->update_mask->paths[i], update_paths[k]) != 0)
            k++;
        if (k == UP_N)
            rpc_violation(call, "update_mask",
                          "\"%.64s\" is not one of name, description, sku, price, stock, "
                          "specifications, active",
                          r->update_mask->paths[i]);
        else
            set[k] = true;
    }
    if (set[UP_NAME])
        catalog__check_name(call, p->name);
    if (set[UP_DESCRIPTION])
        catalog__check_description(call, p->description);
    if (set[UP_SKU])
        catalog__check_sku(call, p->sku);
    if (set[UP_PRICE])
        commerce_valid_money(call, "product.price", p->price);
    if (set[UP_STOCK])
        catalog__check_stock(call, p->stock);
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    PGresult *res = NULL;
    const char *lock_params[] = {p->id};
    if ((rc = commerce_begin(&cx)) < 0 ||
        (rc = commerce_exec(&cx, &lock_product, lock_params, &res)) < 0)
        return rc;
    if (rc == 0)
        return catalog__reply(&cx, p->id, res, 0, resp);
    const char *category = db_get(res, 0, "category");
    const char *specs = NULL;
    if (set[UP_SPECS])
        commerce_valid_specs(call, "product.specifications", category, p->specifications, &specs);
    PQclear(res);
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    const char *t = "true", *f = "false";
    const char *params[] = {p->id,
                            set[UP_NAME] ? t : f,
                            p->name,
                            set[UP_DESCRIPTION] ? t : f,
                            p->description,
                            set[UP_SKU] ? t : f,
                            p->sku,
                            set[UP_PRICE] ? t : f,
                            p->price ? commerce_i64(cx.a, p->price->amount_minor) : NULL,
                            p->price ? p->price->currency_code : NULL,
                            set[UP_STOCK] ? t : f,
                            catalog__stock_param(cx.a, p->stock),
                            set[UP_SPECS] ? t : f,
                            specs,
                            set[UP_ACTIVE] ? t : f,
                            p->active ? t : f};
    if ((rc = commerce_exec(&cx, &update_product, params, &res)) < 0)
        return rc;
    if ((rc = commerce_commit(&cx)) < 0) {
        PQclear(res);
        return rc;
    }
    return catalog__reply(&cx, p->id, res, 1, resp);
}

static const db_stmt_t deactivate_product = {
    "commerce_deactivate_product",
    "UPDATE products p SET is_active = false WHERE p.id = $1::uuid "
    "RETURNING " COMMERCE_PRODUCT_COLUMNS,
    1};

int commerce_deactivate_product(rpc_call_t *call, const ProtobufCMessage *req,
                                ProtobufCMessage **resp)
{
    const Onceiot__Commerce__V1__DeactivateProductRequest *r = (const void *)req;
    commerce_ctx_t cx;
    int rc = commerce_staff_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    commerce_valid_uuid(call, "id", r->id);
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    const char *params[] = {r->id};
    PGresult *res = NULL;
    if ((rc = commerce_exec(&cx, &deactivate_product, params, &res)) < 0)
        return rc;
    return catalog__reply(&cx, r->id, res, rc, resp);
}
