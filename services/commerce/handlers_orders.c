/* Orders: CreateOrder (pricing, stock, the fulfilment outbox), GetOrder,
 * ListOrders, CancelOrder, ProcessOrder and ShipOrder. */
#include "commerce.h"
#include "onceiot/requestid.h"

#include <stdlib.h>
#include <string.h>

#define LIST_DEFAULT 50
#define LIST_MAX     500

/* One product an order names, as the catalog has it now. */
typedef struct order_product {
    const char *id, *name, *sku, *category, *currency;
    int64_t price;
    bool active;
    bool limited;   /* stock is counted */
    int64_t unit;   /* top-ups: volume of one unit */
    int64_t wanted; /* units of it in this order */
} order_product_t;

static const db_stmt_t read_products = {
    "commerce_order_products",
    "SELECT p.id, p.name, p.sku, p.category, p.price_minor, p.currency, p.is_active, "
    "p.stock IS NOT NULL AS limited, CASE p.category "
    "WHEN 'data_topup' THEN (p.specifications ->> 'volume_bytes')::bigint "
    "WHEN 'sms_topup' THEN (p.specifications ->> 'sms_count')::bigint END AS unit "
    "FROM products p WHERE p.id = ANY($1::uuid[])",
    1};

/* Takes wanted units of a limited product; 0 rows when fewer are left (or it
 * was deactivated meanwhile). The row lock makes concurrent orders of the last
 * units wait for each other, and the WHERE is evaluated again on the row they
 * waited for: never oversold. */
static const db_stmt_t reserve_stock = {
    "commerce_reserve_stock",
    "UPDATE products SET stock = stock - $2 WHERE id = $1::uuid AND is_active "
    "AND stock >= $2 RETURNING stock",
    2};

static const db_stmt_t return_stock = {
    "commerce_return_stock",
    "UPDATE products SET stock = stock + $2 WHERE id = $1::uuid AND stock IS NOT NULL", 2};

static const db_stmt_t insert_order = {
    "commerce_insert_order",
    "INSERT INTO orders (organization_id, user_id, order_type, currency, total_minor, notes) "
    "VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq, id",
    6};

static const db_stmt_t insert_items = {
    "commerce_insert_items",
    "INSERT INTO order_items (order_seq, n, product_id, category, product_name, product_sku, "
    "quantity, unit_price_minor, total_minor, iccid, topup_volume, fulfilment_key) "
    "SELECT $1, * FROM unnest($2::int[], $3::uuid[], $4::text[], $5::text[], $6::text[], "
    "$7::bigint[], $8::bigint[], $9::bigint[], $10::text[], $11::bigint[], $12::text[])",
    12};

static int orders__cmp_id(const void *x, const void *y)
{
    return strcmp((*(order_product_t *const *)x)->id, (*(order_product_t *const *)y)->id);
}

/* The product of id among n, or NULL. */
static order_product_t *orders__find(order_product_t *ps, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(ps[i].id, id) == 0)
            return &ps[i];
    return NULL;
}

/* Checks the request's shape (no database). */
static int orders__check_create(commerce_ctx_t *cx,
                                const Onceiot__Commerce__V1__CreateOrderRequest *r)
{
    rpc_call_t *call = cx->call;
    if (r->n_items == 0 || r->n_items > COMMERCE_MAX_ITEMS)
        rpc_violation(call, "items", "must hold 1 to %d items", COMMERCE_MAX_ITEMS);
    if (strlen(r->notes) > 2000)
        rpc_violation(call, "notes", "must be at most 2000 characters");
    for (size_t i = 0; i < r->n_items && i < COMMERCE_MAX_ITEMS; i++) {
        const Onceiot__Commerce__V1__OrderItemInput *it = r->items[i];
        commerce_valid_uuid(call, arena_printf(cx->a, "items[%zu].product_id", i), it->product_id);
        if (it->quantity < 1 || it->quantity > COMMERCE_MAX_QUANTITY)
            rpc_violation(call, arena_printf(cx->a, "items[%zu].quantity", i), "must be 1 to %d",
                          COMMERCE_MAX_QUANTITY);
        if (*it->iccid)
            commerce_valid_iccid(call, arena_printf(cx->a, "items[%zu].iccid", i), it->iccid);
    }
    return rpc_check_violations(call);
}

/* Every ICCID of the request must be a SIM of the caller's organization
 * (superusers included: an order tops up its own organization's SIMs).
 * NOT_FOUND naming the first that is not, before anything is written. */
static int orders__check_iccids(commerce_ctx_t *cx,
                                const Onceiot__Commerce__V1__CreateOrderRequest *r)
{
    const char **iccids = arena_alloc(cx->a, r->n_items * sizeof(char *));
    size_t n = 0;
    for (size_t i = 0; i < r->n_items; i++)
        if (*r->items[i]->iccid)
            iccids[n++] = r->items[i]->iccid;
    if (n == 0)
        return 0;
    int64_t *orgs = arena_alloc(cx->a, n * sizeof(*orgs));
    int rc = commerce_resolve_or_status(cx, iccids, n, orgs);
    if (rc < 0)
        return rc;
    for (size_t i = 0, k = 0; i < r->n_items; i++) {
        if (!*r->items[i]->iccid)
            continue;
        if (orgs[k++] != cx->who->organization_id)
            return rpc_fail(cx->call, ERR_NOT_FOUND, "items[%zu].iccid: no SIM %s", i,
                            r->items[i]->iccid);
    }
    return 0;
}

/* Reads the products of the request into *out (one per distinct id). */
static int orders__load_products(commerce_ctx_t *cx,
                                 const Onceiot__Commerce__V1__CreateOrderRequest *r,
                                 order_product_t **out, size_t *n_out)
{
    const char **ids = arena_alloc(cx->a, r->n_items * sizeof(char *));
    for (size_t i = 0; i < r->n_items; i++)
        ids[i] = r->items[i]->product_id;
    const char *params[] = {db_text_array(cx->a, ids, r->n_items)};
    PGresult *res = NULL;
    int rc = commerce_exec(cx, &read_products, params, &res);
    if (rc < 0)
        return rc;
    order_product_t *ps = arena_calloc(cx->a, (size_t)(rc ? rc : 1), sizeof(*ps));
    for (int i = 0; i < rc; i++) {
        ps[i] = (order_product_t){
            .id = arena_strdup(cx->a, db_get(res, i, "id")),
            .name = arena_strdup(cx->a, db_get(res, i, "name")),
            .sku = arena_strdup(cx->a, db_get(res, i, "sku")),
            .category = arena_strdup(cx->a, db_get(res, i, "category")),
            .currency = arena_strdup(cx->a, db_get(res, i, "currency")),
            .price = db_get_int(res, i, "price_minor", 0),
            .active = db_get_bool(res, i, "is_active"),
            .limited = db_get_bool(res, i, "limited"),
            .unit = db_get_int(res, i, "unit", 0),
        };
    }
    PQclear(res);
    *out = ps;
    *n_out = (size_t)rc;
    return 0;
}

/* The priced items of an order, one column array each for insert_items. */
typedef struct order_lines {
    const char **n, **product, **category, **name, **sku, **qty, **unit, **total, **iccid, **volume,
        **key;
} order_lines_t;

/* Prices the request against the products: every product known and active,
 * top-ups with an ICCID and others without, one currency, totals and volumes
 * without overflow. Fills lines (keys excepted), *total, *currency, *type.
 * Status set on failure. */
static int orders__price(commerce_ctx_t *cx, const Onceiot__Commerce__V1__CreateOrderRequest *r,
                         order_product_t *ps, size_t n_ps, order_lines_t *l, int64_t *total,
                         const char **currency, const char **type)
{
    rpc_call_t *call = cx->call;
    arena_t *a = cx->a;
    *total = 0;
    *currency = NULL;
    *type = NULL;
    for (size_t i = 0; i < r->n_items; i++) {
        const Onceiot__Commerce__V1__OrderItemInput *it = r->items[i];
        order_product_t *p = orders__find(ps, n_ps, it->product_id);
        if (!p)
            return rpc_fail(call, ERR_NOT_FOUND, "items[%zu].product_id: no product %s", i,
                            it->product_id);
        if (!p->active)
            return rpc_fail(call, ERR_FAILED_PRECONDITION,
                            "items[%zu]: product %s (%s) is no longer sold", i, p->id, p->sku);
        bool topup = commerce_topup_key(p->category) != NULL;
        if (topup && !*it->iccid)
            rpc_violation(call, arena_printf(a, "items[%zu].iccid", i),
                          "a %s item needs the ICCID of the SIM to top up", p->category);
        if (!topup && *it->iccid)
            rpc_violation(call, arena_printf(a, "items[%zu].iccid", i),
                          "only top-ups take an ICCID");
        if (*currency && strcmp(*currency, p->currency) != 0)
            rpc_violation(call, arena_printf(a, "items[%zu].product_id", i),
                          "is priced in %s, the order in %s: one order, one currency", p->currency,
                          *currency);
        *currency = *currency ? *currency : p->currency;
        *type = !*type || strcmp(*type, p->category) == 0 ? p->category : "mixed";
        int64_t line, volume = 0;
        if (__builtin_mul_overflow(p->price, it->quantity, &line) ||
            __builtin_add_overflow(*total, line, total))
            rpc_violation(call, arena_printf(a, "items[%zu].quantity", i),
                          "makes the order's total overflow 64-bit minor units");
        if (topup && __builtin_mul_overflow(p->unit, it->quantity, &volume))
            rpc_violation(call, arena_printf(a, "items[%zu].quantity", i),
                          "makes the top-up volume overflow");
        if (__builtin_add_overflow(p->wanted, it->quantity, &p->wanted))
            abort(); /* at most 100 x 10000 */
        l->n[i] = commerce_i64(a, (int64_t)i + 1);
        l->product[i] = p->id;
        l->category[i] = p->category;
        l->name[i] = p->name;
        l->sku[i] = p->sku;
        l->qty[i] = commerce_i64(a, it->quantity);
        l->unit[i] = commerce_i64(a, p->price);
        l->total[i] = commerce_i64(a, line);
        l->iccid[i] = topup ? it->iccid : NULL;
        l->volume[i] = topup ? commerce_i64(a, volume) : NULL;
    }
    return rpc_check_violations(call);
}

/* Reserves the units of every limited product, in id order so concurrent
 * orders lock rows in one order (no deadlock). FAILED_PRECONDITION naming
 * the first product without enough units left. */
static int orders__reserve(commerce_ctx_t *cx, order_product_t *ps, size_t n)
{
    order_product_t **sorted = arena_alloc(cx->a, (n ? n : 1) * sizeof(*sorted));
    for (size_t i = 0; i < n; i++)
        sorted[i] = &ps[i];
    qsort(sorted, n, sizeof(*sorted), orders__cmp_id);
    for (size_t i = 0; i < n; i++) {
        if (!sorted[i]->limited || sorted[i]->wanted == 0)
            continue;
        const char *params[] = {sorted[i]->id, commerce_i64(cx->a, sorted[i]->wanted)};
        int rc = commerce_exec(cx, &reserve_stock, params, NULL);
        if (rc < 0)
            return rc;
        if (rc == 0)
            return rpc_fail(cx->call, ERR_FAILED_PRECONDITION,
                            "product %s (%s): fewer than %lld units left", sorted[i]->id,
                            sorted[i]->sku, (long long)sorted[i]->wanted);
    }
    return 0;
}

/* Writes one outbox row per top-up item: sims.TopUpQuota of the item's
 * volume, with the item's fulfilment key as the request id. */
static int orders__put_top_ups(commerce_ctx_t *cx, const order_lines_t *l, size_t n)
{
    db_conn_t *conn = svc_db_or_status(cx->call);
    if (!conn)
        return ERR_UNAVAILABLE;
    for (size_t i = 0; i < n; i++) {
        if (!l->key[i])
            continue;
        Onceiot__Sims__V1__TopUpQuotaRequest t = ONCEIOT__SIMS__V1__TOP_UP_QUOTA_REQUEST__INIT;
        t.iccid = (char *)l->iccid[i];
        t.quota_type = strcmp(l->category[i], "data_topup") == 0
                           ? ONCEIOT__SIMS__V1__QUOTA_TYPE__QUOTA_TYPE_DATA
                           : ONCEIOT__SIMS__V1__QUOTA_TYPE__QUOTA_TYPE_SMS;
        t.volume = strtoll(l->volume[i], NULL, 10);
        t.request_id = (char *)l->key[i];
        size_t len = protobuf_c_message_get_packed_size(&t.base);
        uint8_t *buf = arena_alloc(cx->a, len ? len : 1);
        protobuf_c_message_pack(&t.base, buf);
        int rc = outbox_put(conn, COMMERCE_TOPIC_TOP_UP, l->key[i], buf, len);
        if (rc < 0)
            return svc_db_fail(cx->call, conn, rc);
    }
    return 0;
}

/* Reads the order seq on the call's connection into *resp. */
static int orders__reply_seq(commerce_ctx_t *cx, const char *seq, ProtobufCMessage **resp)
{
    db_conn_t *conn = svc_db_or_status(cx->call);
    if (!conn)
        return ERR_UNAVAILABLE;
    commerce_order_t *o = NULL;
    int rc = commerce_read_order(conn, cx->a, seq, &o);
    if (rc < 0)
        return svc_db_fail(cx->call, conn, rc);
    if (rc > 0)
        return rpc_fail(cx->call, ERR_INTERNAL, "order %s vanished", seq);
    *resp = &o->base;
    return 0;
}

int commerce_create_order(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Commerce__V1__CreateOrderRequest *r = (const void *)req;
    commerce_ctx_t cx;
    int rc = commerce_ctx_or_status(call, &cx);
    if (rc < 0 || (rc = orders__check_create(&cx, r)) < 0 ||
        (rc = orders__check_iccids(&cx, r)) < 0)
        return rc;
    order_product_t *ps = NULL;
    size_t n_ps = 0;
    order_lines_t l;
    const char ***cols[] = {&l.n,    &l.product, &l.category, &l.name,   &l.sku, &l.qty,
                            &l.unit, &l.total,   &l.iccid,    &l.volume, &l.key};
    for (size_t c = 0; c < sizeof(cols) / sizeof(cols[0]); c++)
        *cols[c] = arena_calloc(cx.a, r->n_items, sizeof(char *));
    int64_t total = 0;
    const char *currency = NULL, *type = NULL;
    PGresult *res = NULL;
    /* A retry with the request id of a placed order gets that order back. */
    requestid_t rq;
    ProtobufCMessage *first = NULL;
    db_conn_t *conn = svc_db_or_status(call);
    if (!conn)
        return ERR_UNAVAILABLE;
    if ((rc = requestid_begin_or_status(call, conn, r->request_id, req, &rq, &first)) != 0) {
        if (rc == REQUESTID_REPLAY)
            *resp = first;
        return rc < 0 ? rc : 0;
    }
    if ((rc = orders__load_products(&cx, r, &ps, &n_ps)) < 0 ||
        (rc = orders__price(&cx, r, ps, n_ps, &l, &total, &currency, &type)) < 0 ||
        (rc = orders__reserve(&cx, ps, n_ps)) < 0)
        return rc;
    const char *order_params[] = {commerce_i64(cx.a, cx.who->organization_id),
                                  commerce_i64(cx.a, cx.who->user_id),
                                  type,
                                  currency,
                                  commerce_i64(cx.a, total),
                                  r->notes};
    if ((rc = commerce_exec(&cx, &insert_order, order_params, &res)) < 0)
        return rc;
    const char *seq = arena_strdup(cx.a, db_get(res, 0, "seq"));
    const char *id = arena_strdup(cx.a, db_get(res, 0, "id"));
    PQclear(res);
    for (size_t i = 0; i < r->n_items; i++)
        if (l.iccid[i])
            l.key[i] = arena_printf(cx.a, "order-%s-item-%zu", id, i + 1);
    size_t n = r->n_items;
    const char *item_params[] = {seq,
                                 db_text_array(cx.a, l.n, n),
                                 db_text_array(cx.a, l.product, n),
                                 db_text_array(cx.a, l.category, n),
                                 db_text_array(cx.a, l.name, n),
                                 db_text_array(cx.a, l.sku, n),
                                 db_text_array(cx.a, l.qty, n),
                                 db_text_array(cx.a, l.unit, n),
                                 db_text_array(cx.a, l.total, n),
                                 db_text_array(cx.a, l.iccid, n),
                                 db_text_array(cx.a, l.volume, n),
                                 db_text_array(cx.a, l.key, n)};
    if ((rc = commerce_exec(&cx, &insert_items, item_params, NULL)) < 0 ||
        (rc = orders__put_top_ups(&cx, &l, n)) < 0 ||
        (rc = orders__reply_seq(&cx, seq, resp)) < 0 ||
        (rc = requestid_commit_or_status(call, conn, &rq, *resp)) < 0)
        return rc;
    outbox_notify(cx.st->outbox);
    return 0;
}

int commerce_get_order(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Commerce__V1__GetOrderRequest *r = (const void *)req;
    commerce_ctx_t cx;
    int rc = commerce_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    commerce_valid_uuid(call, "id", r->id);
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    commerce_order_t *o = NULL;
    if ((rc = commerce_load_order_or_status(&cx, r->id, false, &o, NULL)) < 0)
        return rc;
    *resp = &o->base;
    return 0;
}

static const db_stmt_t list_orders = {
    "commerce_list_orders",
    "SELECT " COMMERCE_ORDER_COLUMNS " FROM orders o "
    "WHERE ($1::bigint IS NULL OR o.organization_id = $1) AND ($2::text IS NULL OR o.status = $2) "
    "AND ($3::text IS NULL OR o.order_type = $3) "
    "AND ($4::bigint IS NULL OR o.ordered_at >= 'epoch'::timestamptz + $4 * interval '1 us') "
    "AND ($5::bigint IS NULL OR o.ordered_at < 'epoch'::timestamptz + $5 * interval '1 us') "
    "AND ($6::bigint IS NULL OR o.seq < $6) ORDER BY o.seq DESC LIMIT $7",
    7};

int commerce_list_orders(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Commerce__V1__ListOrdersRequest *r = (const void *)req;
    commerce_ctx_t cx;
    int rc = commerce_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    int size = pagetoken_page_size(call, r->page_size, LIST_DEFAULT, LIST_MAX);
    const char *status = NULL, *type = NULL;
    if (r->status && !(status = commerce_status_name(r->status)))
        rpc_violation(call, "status", "unknown status %d", (int)r->status);
    if (r->order_type && !(type = commerce_type_name(r->order_type)))
        rpc_violation(call, "order_type", "unknown type %d", (int)r->order_type);
    const char *after = commerce_ts_param(cx.a, r->ordered_after);
    const char *before = commerce_ts_param(cx.a, r->ordered_before);
    if (after && before && strtoll(after, NULL, 10) >= strtoll(before, NULL, 10))
        rpc_violation(call, "ordered_before", "must be after ordered_after");
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    const char *hash_parts[] = {list_orders.name, cx.org, status, type, after, before};
    uint64_t hash = pagetoken_hash(hash_parts, sizeof(hash_parts) / sizeof(hash_parts[0]));
    const char *below = NULL, *unused = NULL;
    if (*r->page_token && (rc = pagetoken_decode(call, r->page_token, hash, &below, &unused)) < 0)
        return rc;
    const char *params[] = {
        cx.org, status, type, after, before, below, commerce_i64(cx.a, size + 1)};
    PGresult *res = NULL;
    if ((rc = commerce_exec(&cx, &list_orders, params, &res)) < 0)
        return rc;
    Onceiot__Commerce__V1__ListOrdersResponse *out = arena_alloc(cx.a, sizeof(*out));
    onceiot__commerce__v1__list_orders_response__init(out);
    int rows = rc, n = rows > size ? size : rows;
    out->orders = arena_alloc(cx.a, (size_t)(n ? n : 1) * sizeof(*out->orders));
    db_conn_t *conn = svc_db_or_status(call);
    if (!conn) {
        rc = ERR_UNAVAILABLE;
        goto out;
    }
    if ((rc = commerce_orders_from_rows(conn, cx.a, res, n, out->orders)) < 0) {
        rc = svc_db_fail(call, conn, rc);
        goto out;
    }
    out->n_orders = (size_t)n;
    if (rows > size)
        out->next_page_token = (char *)pagetoken_encode(cx.a, hash, db_get(res, n - 1, "seq"), "");
    *resp = &out->base;
    rc = 0;
out:
    PQclear(res);
    return rc;
}

/* Begins a transaction and locks the order id of the caller's tenant; a
 * status other than one of allowed (NULL-terminated) is FAILED_PRECONDITION. */
static int orders__lock_in(commerce_ctx_t *cx, const char *id, const char *const *allowed,
                           const char *action, commerce_order_t **o, const char **seq)
{
    commerce_valid_uuid(cx->call, "id", id);
    int rc = rpc_check_violations(cx->call);
    if (rc < 0 || (rc = commerce_begin(cx)) < 0 ||
        (rc = commerce_load_order_or_status(cx, id, true, o, seq)) < 0)
        return rc;
    const char *status = commerce_status_name((*o)->status);
    for (size_t i = 0; allowed[i]; i++)
        if (strcmp(allowed[i], status) == 0)
            return 0;
    return rpc_fail(cx->call, ERR_FAILED_PRECONDITION, "order %s is %s: it cannot be %s", id,
                    status, action);
}

static const char *const open_statuses[] = {"pending", "processing", NULL};

static const db_stmt_t started_items = {
    "commerce_started_items",
    "SELECT 1 FROM order_items WHERE order_seq = $1 AND "
    "(dispatched_at IS NOT NULL OR fulfilled_at IS NOT NULL OR shipped_iccids IS NOT NULL) LIMIT 1",
    1};

static const db_stmt_t cancel_order = {
    "commerce_cancel_order",
    "UPDATE orders SET status = 'cancelled', cancelled_at = now() WHERE seq = $1", 1};

/* Gives back the stock an order reserved, product by product in id order
 * (the order reservations lock them in). */
static int orders__return_stock(commerce_ctx_t *cx, const commerce_order_t *o)
{
    order_product_t *ps = arena_calloc(cx->a, o->n_items ? o->n_items : 1, sizeof(*ps));
    size_t n = 0;
    for (size_t i = 0; i < o->n_items; i++) {
        order_product_t *p = orders__find(ps, n, o->items[i]->product_id);
        if (!p) {
            p = &ps[n++];
            p->id = o->items[i]->product_id;
        }
        p->wanted += o->items[i]->quantity;
    }
    order_product_t **sorted = arena_alloc(cx->a, (n ? n : 1) * sizeof(*sorted));
    for (size_t i = 0; i < n; i++)
        sorted[i] = &ps[i];
    qsort(sorted, n, sizeof(*sorted), orders__cmp_id);
    for (size_t i = 0; i < n; i++) {
        const char *params[] = {sorted[i]->id, commerce_i64(cx->a, sorted[i]->wanted)};
        int rc = commerce_exec(cx, &return_stock, params, NULL);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int commerce_cancel_order(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Commerce__V1__CancelOrderRequest *r = (const void *)req;
    commerce_ctx_t cx;
    commerce_order_t *o = NULL;
    const char *seq = NULL;
    int rc = commerce_ctx_or_status(call, &cx);
    if (rc < 0 || (rc = orders__lock_in(&cx, r->id, open_statuses, "cancelled", &o, &seq)) < 0)
        return rc;
    const char *params[] = {seq};
    if ((rc = commerce_exec(&cx, &started_items, params, NULL)) < 0)
        return rc;
    if (rc > 0 || o->shipped_at)
        return rpc_fail(call, ERR_FAILED_PRECONDITION,
                        "order %s: fulfilment has begun (an item was sent to sims or shipped)",
                        r->id);
    if ((rc = orders__return_stock(&cx, o)) < 0 ||
        (rc = commerce_exec(&cx, &cancel_order, params, NULL)) < 0 ||
        (rc = orders__reply_seq(&cx, seq, resp)) < 0 || (rc = commerce_commit(&cx)) < 0)
        return rc;
    return 0;
}

static const db_stmt_t process_order = {
    "commerce_process_order",
    "UPDATE orders SET status = 'processing', processing_at = now() WHERE seq = $1", 1};

int commerce_process_order(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Commerce__V1__ProcessOrderRequest *r = (const void *)req;
    static const char *const pending[] = {"pending", NULL};
    commerce_ctx_t cx;
    commerce_order_t *o = NULL;
    const char *seq = NULL;
    int rc = commerce_staff_ctx_or_status(call, &cx);
    if (rc < 0 || (rc = orders__lock_in(&cx, r->id, pending, "processed", &o, &seq)) < 0)
        return rc;
    const char *params[] = {seq};
    if ((rc = commerce_exec(&cx, &process_order, params, NULL)) < 0 ||
        (rc = orders__reply_seq(&cx, seq, resp)) < 0 || (rc = commerce_commit(&cx)) < 0)
        return rc;
    return 0;
}

static const db_stmt_t ship_item = {
    "commerce_ship_item",
    "UPDATE order_items SET shipped_iccids = $3::text[] WHERE order_seq = $1 AND n = $2", 3};

static const db_stmt_t ship_order = {
    "commerce_ship_order",
    "UPDATE orders SET shipped_at = now(), status = 'processing', "
    "processing_at = coalesce(processing_at, now()) WHERE seq = $1",
    1};

static const db_stmt_t fulfil_goods = {
    "commerce_fulfil_goods",
    "UPDATE order_items SET fulfilled_at = now() WHERE order_seq = $1 "
    "AND category IN ('hardware', 'service') AND fulfilled_at IS NULL",
    1};

/* Matches the shipment against the order's items: every SIM card item has
 * one entry with exactly quantity ICCIDs, no entry names another item, no
 * ICCID twice. Fills sims[] (*n of them) for ImportSims. */
static int orders__check_shipment(commerce_ctx_t *cx, const commerce_order_t *o,
                                  const Onceiot__Commerce__V1__ShipOrderRequest *r,
                                  const char ***iccids, size_t *n)
{
    rpc_call_t *call = cx->call;
    size_t total = 0;
    for (size_t k = 0; k < r->n_items; k++)
        total += r->items[k]->n_iccids;
    if (total > COMMERCE_MAX_SHIPPED)
        return rpc_fail(call, ERR_INVALID_ARGUMENT, "at most %d SIM cards per shipment",
                        COMMERCE_MAX_SHIPPED);
    *iccids = arena_alloc(cx->a, (total ? total : 1) * sizeof(char *));
    *n = 0;
    bool goods = false;
    for (size_t i = 0; i < o->n_items; i++) {
        const Onceiot__Commerce__V1__OrderItem *it = o->items[i];
        bool sim = it->category == ONCEIOT__COMMERCE__V1__CATEGORY__CATEGORY_SIM_CARD;
        goods |= sim || it->category == ONCEIOT__COMMERCE__V1__CATEGORY__CATEGORY_HARDWARE ||
                 it->category == ONCEIOT__COMMERCE__V1__CATEGORY__CATEGORY_SERVICE;
        const Onceiot__Commerce__V1__ShippedItem *s = NULL;
        for (size_t k = 0; k < r->n_items; k++)
            if (r->items[k]->item == it->item)
                s = r->items[k];
        if (sim && (!s || (int64_t)s->n_iccids != it->quantity))
            rpc_violation(call, "items", "item %d (%lld SIM cards) needs exactly %lld ICCIDs",
                          it->item, (long long)it->quantity, (long long)it->quantity);
        if (!sim && s && s->n_iccids)
            rpc_violation(call, "items", "item %d is not a SIM card item: no ICCIDs", it->item);
    }
    for (size_t k = 0; k < r->n_items; k++) {
        const Onceiot__Commerce__V1__ShippedItem *s = r->items[k];
        if (s->item < 1 || (size_t)s->item > o->n_items)
            rpc_violation(call, arena_printf(cx->a, "items[%zu].item", k),
                          "the order has no item %d", s->item);
        for (size_t j = 0; j < s->n_iccids; j++) {
            const char *field = arena_printf(cx->a, "items[%zu].iccids[%zu]", k, j);
            if (!commerce_valid_iccid(call, field, s->iccids[j]))
                continue;
            for (size_t m = 0; m < *n; m++)
                if (strcmp((*iccids)[m], s->iccids[j]) == 0)
                    rpc_violation(call, field, "ICCID %s is listed twice", s->iccids[j]);
            (*iccids)[(*n)++] = s->iccids[j];
        }
    }
    if (!goods)
        return rpc_fail(call, ERR_FAILED_PRECONDITION,
                        "order %s has nothing to ship (top-ups only)", o->id);
    return rpc_check_violations(call);
}

/* Puts the registration of the shipped SIM cards (ImportSims for the
 * order's organization, request id "order-<id>-ship") into the outbox. */
static int orders__put_register(commerce_ctx_t *cx, const commerce_order_t *o,
                                const char *const *iccids, size_t n)
{
    db_conn_t *conn = svc_db_or_status(cx->call);
    if (!conn)
        return ERR_UNAVAILABLE;
    Onceiot__Sims__V1__ImportSimsRequest imp = ONCEIOT__SIMS__V1__IMPORT_SIMS_REQUEST__INIT;
    imp.sims = arena_alloc(cx->a, n * sizeof(*imp.sims));
    for (size_t i = 0; i < n; i++) {
        Onceiot__Sims__V1__SimInput *in = arena_alloc(cx->a, sizeof(*in));
        onceiot__sims__v1__sim_input__init(in);
        in->iccid = (char *)iccids[i];
        in->organization_id = o->organization_id;
        imp.sims[imp.n_sims++] = in;
    }
    imp.request_id = arena_printf(cx->a, "order-%s-ship", o->id);
    size_t len = protobuf_c_message_get_packed_size(&imp.base);
    uint8_t *buf = arena_alloc(cx->a, len ? len : 1);
    protobuf_c_message_pack(&imp.base, buf);
    int rc = outbox_put(conn, COMMERCE_TOPIC_REGISTER, imp.request_id, buf, len);
    return rc < 0 ? svc_db_fail(cx->call, conn, rc) : 0;
}

/* The ICCIDs must not be registered yet (checked again by ImportSims). */
static int orders__check_unregistered(commerce_ctx_t *cx, const char *const *iccids, size_t n)
{
    int64_t *orgs = arena_alloc(cx->a, n * sizeof(*orgs));
    int rc = commerce_resolve_or_status(cx, iccids, n, orgs);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++)
        if (orgs[i] != 0)
            return rpc_fail(cx->call, ERR_ALREADY_EXISTS, "ICCID %s is registered already",
                            iccids[i]);
    return 0;
}

int commerce_ship_order(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Commerce__V1__ShipOrderRequest *r = (const void *)req;
    commerce_ctx_t cx;
    commerce_order_t *o = NULL;
    const char *seq = NULL;
    const char **iccids = NULL;
    size_t n = 0;
    int rc = commerce_staff_ctx_or_status(call, &cx);
    if (rc < 0 || (rc = orders__lock_in(&cx, r->id, open_statuses, "shipped", &o, &seq)) < 0)
        return rc;
    if (o->shipped_at)
        return rpc_fail(call, ERR_FAILED_PRECONDITION, "order %s is shipped already", r->id);
    if ((rc = orders__check_shipment(&cx, o, r, &iccids, &n)) < 0 ||
        (n && (rc = orders__check_unregistered(&cx, iccids, n)) < 0))
        return rc;
    const char *params[] = {seq};
    for (size_t k = 0; k < r->n_items; k++) {
        if (!r->items[k]->n_iccids)
            continue;
        const char *item_params[] = {
            seq, commerce_i64(cx.a, r->items[k]->item),
            db_text_array(cx.a, (const char *const *)r->items[k]->iccids, r->items[k]->n_iccids)};
        if ((rc = commerce_exec(&cx, &ship_item, item_params, NULL)) < 0)
            return rc;
    }
    db_conn_t *conn = svc_db_or_status(call);
    if (!conn)
        return ERR_UNAVAILABLE;
    if ((rc = commerce_exec(&cx, &ship_order, params, NULL)) < 0 ||
        (rc = commerce_exec(&cx, &fulfil_goods, params, NULL)) < 0 ||
        (n && (rc = orders__put_register(&cx, o, iccids, n)) < 0))
        return rc;
    if ((rc = commerce_complete_if_done(conn, seq)) < 0)
        return svc_db_fail(call, conn, rc);
    if ((rc = orders__reply_seq(&cx, seq, resp)) < 0 || (rc = commerce_commit(&cx)) < 0)
        return rc;
    outbox_notify(cx.st->outbox);
    return 0;
}
