/* Reading products and orders: rows to messages, and the queries that the
 * handlers and the dispatcher share. */
#include "commerce.h"

#include <string.h>

/* A Money in a. */
static Onceiot__Commerce__V1__Money *store__money(arena_t *a, const char *currency, int64_t minor)
{
    Onceiot__Commerce__V1__Money *m = arena_alloc(a, sizeof(*m));
    onceiot__commerce__v1__money__init(m);
    m->currency_code = arena_strdup(a, currency);
    m->amount_minor = minor;
    return m;
}

commerce_product_t *commerce_product_from_row(arena_t *a, const PGresult *res, int row)
{
    commerce_product_t *p = arena_alloc(a, sizeof(*p));
    onceiot__commerce__v1__product__init(p);
    p->id = arena_strdup(a, db_get(res, row, "id"));
    p->name = arena_strdup(a, db_get(res, row, "name"));
    p->description = arena_strdup(a, db_get(res, row, "description"));
    p->sku = arena_strdup(a, db_get(res, row, "sku"));
    p->category = commerce_category_enum(db_get(res, row, "category"));
    p->price =
        store__money(a, db_get(res, row, "currency"), db_get_int(res, row, "price_minor", 0));
    p->active = db_get_bool(res, row, "is_active");
    if (db_get(res, row, "stock")) {
        p->stock = arena_alloc(a, sizeof(*p->stock));
        google__protobuf__int64_value__init(p->stock);
        p->stock->value = db_get_int(res, row, "stock", 0);
    }
    p->specifications = pbstruct_from_json(a, db_get(res, row, "specs"));
    p->created_at = commerce_ts(a, db_get(res, row, "created_us"));
    p->updated_at = commerce_ts(a, db_get(res, row, "updated_us"));
    return p;
}

static const db_stmt_t order_items = {
    "commerce_order_items",
    "SELECT n, product_id, product_name, product_sku, category, quantity, unit_price_minor, "
    "total_minor, iccid, topup_volume, array_to_string(shipped_iccids, ',') AS shipped, "
    "(extract(epoch FROM fulfilled_at) * 1000000)::bigint AS fulfilled_us, "
    "order_seq FROM order_items WHERE order_seq = ANY($1::bigint[]) "
    "ORDER BY array_position($1::bigint[], order_seq), n",
    1};

/* Splits a comma-separated list (ICCIDs never hold commas) into out. */
static void store__split(arena_t *a, const char *csv, char ***out, size_t *n)
{
    *n = 0;
    *out = NULL;
    if (!csv || !*csv)
        return;
    size_t cap = 1;
    for (const char *p = csv; *p; p++)
        cap += *p == ',';
    *out = arena_alloc(a, cap * sizeof(char *));
    for (const char *p = csv;;) {
        size_t len = strcspn(p, ",");
        (*out)[(*n)++] = arena_strndup(a, p, len);
        if (!p[len])
            break;
        p += len + 1;
    }
}

/* The order in row r of res, without its items. */
static commerce_order_t *store__order_row(arena_t *a, const PGresult *res, int r)
{
    commerce_order_t *o = arena_alloc(a, sizeof(*o));
    onceiot__commerce__v1__order__init(o);
    o->id = arena_strdup(a, db_get(res, r, "id"));
    o->organization_id = db_get_int(res, r, "organization_id", 0);
    o->user_id = db_get_int(res, r, "user_id", 0);
    o->order_type = commerce_type_enum(db_get(res, r, "order_type"));
    o->status = commerce_status_enum(db_get(res, r, "status"));
    o->total = store__money(a, db_get(res, r, "currency"), db_get_int(res, r, "total_minor", 0));
    o->notes = arena_strdup(a, db_get(res, r, "notes"));
    const char *why = db_get(res, r, "failure_reason");
    o->failure_reason = arena_strdup(a, why ? why : "");
    o->ordered_at = commerce_ts(a, db_get(res, r, "ordered_us"));
    o->processing_at = commerce_ts(a, db_get(res, r, "processing_us"));
    o->shipped_at = commerce_ts(a, db_get(res, r, "shipped_us"));
    o->completed_at = commerce_ts(a, db_get(res, r, "completed_us"));
    o->cancelled_at = commerce_ts(a, db_get(res, r, "cancelled_us"));
    o->failed_at = commerce_ts(a, db_get(res, r, "failed_us"));
    o->updated_at = commerce_ts(a, db_get(res, r, "updated_us"));
    return o;
}

/* Item row i of ir, in the currency of its order. */
static Onceiot__Commerce__V1__OrderItem *store__item_row(arena_t *a, const PGresult *ir, int i,
                                                         const char *currency)
{
    Onceiot__Commerce__V1__OrderItem *it = arena_alloc(a, sizeof(*it));
    onceiot__commerce__v1__order_item__init(it);
    it->item = (int32_t)db_get_int(ir, i, "n", 0);
    it->product_id = arena_strdup(a, db_get(ir, i, "product_id"));
    it->product_name = arena_strdup(a, db_get(ir, i, "product_name"));
    it->product_sku = arena_strdup(a, db_get(ir, i, "product_sku"));
    it->category = commerce_category_enum(db_get(ir, i, "category"));
    it->quantity = db_get_int(ir, i, "quantity", 0);
    it->unit_price = store__money(a, currency, db_get_int(ir, i, "unit_price_minor", 0));
    it->total_price = store__money(a, currency, db_get_int(ir, i, "total_minor", 0));
    const char *iccid = db_get(ir, i, "iccid");
    it->iccid = arena_strdup(a, iccid ? iccid : "");
    it->topup_volume = db_get_int(ir, i, "topup_volume", 0);
    store__split(a, db_get(ir, i, "shipped"), &it->shipped_iccids, &it->n_shipped_iccids);
    it->fulfilled_at = commerce_ts(a, db_get(ir, i, "fulfilled_us"));
    return it;
}

int commerce_orders_from_rows(db_conn_t *conn, arena_t *a, const PGresult *res, int n,
                              commerce_order_t **out)
{
    const char **seqs = arena_alloc(a, (size_t)(n ? n : 1) * sizeof(char *));
    for (int r = 0; r < n; r++) {
        out[r] = store__order_row(a, res, r);
        seqs[r] = db_get(res, r, "seq");
    }
    if (n == 0)
        return 0;
    PGresult *ir = NULL;
    const char *params[] = {db_text_array(a, seqs, (size_t)n)};
    int rows = db_exec(conn, &order_items, params, &ir);
    if (rows < 0)
        return rows;
    /* Items come grouped by order, in the order of seqs. */
    int next = 0;
    for (int r = 0; r < n; r++) {
        int first = next;
        while (next < rows && strcmp(db_get(ir, next, "order_seq"), seqs[r]) == 0)
            next++;
        commerce_order_t *o = out[r];
        o->items = arena_alloc(a, (size_t)(next > first ? next - first : 1) * sizeof(*o->items));
        for (int i = first; i < next; i++)
            o->items[o->n_items++] = store__item_row(a, ir, i, o->total->currency_code);
    }
    PQclear(ir);
    return 0;
}

static const db_stmt_t order_by_id = {
    "commerce_order_by_id",
    "SELECT " COMMERCE_ORDER_COLUMNS " FROM orders o "
    "WHERE o.id = $1::uuid AND ($2::bigint IS NULL OR o.organization_id = $2)",
    2};
static const db_stmt_t order_by_id_lock = {
    "commerce_order_by_id_lock",
    "SELECT " COMMERCE_ORDER_COLUMNS " FROM orders o "
    "WHERE o.id = $1::uuid AND ($2::bigint IS NULL OR o.organization_id = $2) FOR UPDATE",
    2};
static const db_stmt_t order_by_seq = {
    "commerce_order_by_seq", "SELECT " COMMERCE_ORDER_COLUMNS " FROM orders o WHERE o.seq = $1", 1};

int commerce_load_order_or_status(commerce_ctx_t *cx, const char *id, bool lock,
                                  commerce_order_t **out, const char **seq)
{
    PGresult *res = NULL;
    const char *params[] = {id, cx->org};
    int rc = commerce_exec(cx, lock ? &order_by_id_lock : &order_by_id, params, &res);
    if (rc < 0)
        return rc;
    if (rc == 0) {
        rc = rpc_fail(cx->call, ERR_NOT_FOUND, "no order %s", id);
        goto out;
    }
    if (seq)
        *seq = arena_strdup(cx->a, db_get(res, 0, "seq"));
    db_conn_t *conn = svc_db_or_status(cx->call);
    if (!conn) {
        rc = ERR_UNAVAILABLE;
        goto out;
    }
    if ((rc = commerce_orders_from_rows(conn, cx->a, res, 1, out)) < 0)
        rc = svc_db_fail(cx->call, conn, rc);
out:
    PQclear(res);
    return rc;
}

int commerce_read_order(db_conn_t *conn, arena_t *a, const char *seq, commerce_order_t **out)
{
    PGresult *res = NULL;
    const char *params[] = {seq};
    int rc = db_exec(conn, &order_by_seq, params, &res);
    if (rc > 0)
        rc = commerce_orders_from_rows(conn, a, res, 1, out);
    else if (rc == 0)
        rc = 1;
    PQclear(res);
    return rc;
}

static const db_stmt_t complete_if_done = {
    "commerce_complete_if_done",
    "UPDATE orders SET status = 'completed', completed_at = now(), "
    "processing_at = coalesce(processing_at, now()) "
    "WHERE seq = $1 AND status IN ('pending', 'processing') AND NOT EXISTS "
    "(SELECT 1 FROM order_items WHERE order_seq = $1 AND fulfilled_at IS NULL)",
    1};

int commerce_complete_if_done(db_conn_t *conn, const char *seq)
{
    const char *params[] = {seq};
    int rc = db_exec(conn, &complete_if_done, params, NULL);
    return rc < 0 ? rc : 0;
}
