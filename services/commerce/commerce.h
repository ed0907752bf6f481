/* The commerce service's internals: the call context, product and order
 * rows, validation, JSON specifications, the calls to sims and the
 * fulfilment dispatcher, used by the handlers_*.c files. */
#ifndef ONCEIOT_COMMERCE_H
#define ONCEIOT_COMMERCE_H

#include "commerce/v1/commerce.pb-c.h"
#include "onceiot/client.h"
#include "onceiot/outbox.h"
#include "onceiot/pagetoken.h"
#include "onceiot/pbstruct.h"
#include "onceiot/svc.h"
#include "sims/v1/sims.pb-c.h"

#include <stdbool.h>
#include <stdint.h>

#define COMMERCE_MAX_ITEMS      100   /* items of one order */
#define COMMERCE_MAX_QUANTITY   10000 /* units of one item */
#define COMMERCE_MAX_SHIPPED    10000 /* SIM cards of one order (one ImportSims) */
#define COMMERCE_TOPIC_TOP_UP   "sims.top_up"
#define COMMERCE_TOPIC_REGISTER "sims.register"

typedef Onceiot__Commerce__V1__Product commerce_product_t;
typedef Onceiot__Commerce__V1__Order commerce_order_t;

/* The service state handed to handlers through svc_state. */
typedef struct commerce_state {
    svc_t *svc;
    rpc_channel_t *sims; /* onceiot-sims: ResolveSims, TopUpQuota, ImportSims */
    outbox_t *outbox;
} commerce_state_t;

/* What every handler needs about its call. */
typedef struct commerce_ctx {
    rpc_call_t *call;
    arena_t *a;
    commerce_state_t *st;
    const principal_t *who;
    const char *org; /* the caller's organization as text; NULL for superusers (all) */
} commerce_ctx_t;

/* ---- context.c ---- */

/* Verifies the principal and fills cx. Returns 0, or an ERR_* code with the
 * call's status set. */
int commerce_ctx_or_status(rpc_call_t *call, commerce_ctx_t *cx) ONCEIOT_MUSTCHECK;
/* commerce_ctx_or_status for the staff's methods: the gateway already
 * enforces the rule; this keeps the service safe on its own. */
int commerce_staff_ctx_or_status(rpc_call_t *call, commerce_ctx_t *cx) ONCEIOT_MUSTCHECK;
/* Runs stmt on the call's connection (status set on failure). */
int commerce_exec(commerce_ctx_t *cx, const db_stmt_t *stmt, const char *const *params,
                  PGresult **res) ONCEIOT_MUSTCHECK;
/* BEGIN / COMMIT on the call's connection (status set on failure). An open
 * transaction is rolled back when the connection goes back to the pool. */
int commerce_begin(commerce_ctx_t *cx) ONCEIOT_MUSTCHECK;
int commerce_commit(commerce_ctx_t *cx) ONCEIOT_MUSTCHECK;
const char *commerce_i64(arena_t *a, int64_t v);
/* Unix microseconds (text, may be NULL) to a Timestamp in a, and back. */
Google__Protobuf__Timestamp *commerce_ts(arena_t *a, const char *us);
const char *commerce_ts_param(arena_t *a, const Google__Protobuf__Timestamp *ts);

/* ---- validate.c: each records a field violation and returns false ---- */

bool commerce_valid_uuid(rpc_call_t *call, const char *field, const char *id);
bool commerce_valid_iccid(rpc_call_t *call, const char *field, const char *iccid);
bool commerce_valid_money(rpc_call_t *call, const char *field,
                          const Onceiot__Commerce__V1__Money *m);
/* Category names as stored ("data_topup") and the enum; NULL / 0 when unknown. */
const char *commerce_category_name(Onceiot__Commerce__V1__Category c);
Onceiot__Commerce__V1__Category commerce_category_enum(const char *name);
const char *commerce_status_name(Onceiot__Commerce__V1__OrderStatus s);
Onceiot__Commerce__V1__OrderStatus commerce_status_enum(const char *name);
const char *commerce_type_name(Onceiot__Commerce__V1__OrderType t);
Onceiot__Commerce__V1__OrderType commerce_type_enum(const char *name);
/* The specification key a top-up category needs ("volume_bytes",
 * "sms_count"), or NULL for other categories. */
const char *commerce_topup_key(const char *category);

/* ---- validate.c: specifications (google.protobuf.Struct, onceiot/pbstruct.h) ---- */

/* Checks the specifications of a product of category (stored name): at
 * most 16 KiB of JSON (pbstruct_to_json's rules), and a top-up's volume key
 * a whole number from 1 to 2^53. *json gets their JSON text for the jsonb
 * parameter. Records violations on field. */
bool commerce_valid_specs(rpc_call_t *call, const char *field, const char *category,
                          const Google__Protobuf__Struct *s, const char **json);

/* ---- store.c: rows ---- */

#define COMMERCE_PRODUCT_COLUMNS                                                                   \
    "p.id, p.name, p.description, p.sku, p.category, p.price_minor, p.currency, p.is_active, "     \
    "p.stock, p.specifications::text AS specs, "                                                   \
    "(extract(epoch FROM p.created_at) * 1000000)::bigint AS created_us, "                         \
    "(extract(epoch FROM p.updated_at) * 1000000)::bigint AS updated_us"
commerce_product_t *commerce_product_from_row(arena_t *a, const PGresult *res, int row);

#define COMMERCE_ORDER_COLUMNS                                                                     \
    "o.seq, o.id, o.organization_id, o.user_id, o.order_type, o.status, o.currency, "              \
    "o.total_minor, o.notes, o.failure_reason, "                                                   \
    "(extract(epoch FROM o.ordered_at) * 1000000)::bigint AS ordered_us, "                         \
    "(extract(epoch FROM o.processing_at) * 1000000)::bigint AS processing_us, "                   \
    "(extract(epoch FROM o.shipped_at) * 1000000)::bigint AS shipped_us, "                         \
    "(extract(epoch FROM o.completed_at) * 1000000)::bigint AS completed_us, "                     \
    "(extract(epoch FROM o.cancelled_at) * 1000000)::bigint AS cancelled_us, "                     \
    "(extract(epoch FROM o.failed_at) * 1000000)::bigint AS failed_us, "                           \
    "(extract(epoch FROM o.updated_at) * 1000000)::bigint AS updated_us"
/* The n orders in the rows of res (COMMERCE_ORDER_COLUMNS) into out[], with
 * their items read on conn in one statement. 0 or a negative ERR_* code. */
int commerce_orders_from_rows(db_conn_t *conn, arena_t *a, const PGresult *res, int n,
                              commerce_order_t **out) ONCEIOT_MUSTCHECK;
/* Reads the order with external id (text) in the caller's tenant, with its
 * items; lock: FOR UPDATE of the order row (inside a transaction). *seq gets
 * its internal key. NOT_FOUND (status set) when it is not there. */
int commerce_load_order_or_status(commerce_ctx_t *cx, const char *id, bool lock,
                                  commerce_order_t **out, const char **seq) ONCEIOT_MUSTCHECK;
/* The same on a bare connection (the dispatcher), any organization: 0 and
 * *out, 1 when there is no such order, or a negative ERR_* code. */
int commerce_read_order(db_conn_t *conn, arena_t *a, const char *seq,
                        commerce_order_t **out) ONCEIOT_MUSTCHECK;
/* Completes the order (seq) when it is PROCESSING or PENDING and every item
 * is fulfilled, on conn inside its transaction. */
int commerce_complete_if_done(db_conn_t *conn, const char *seq) ONCEIOT_MUSTCHECK;

/* ---- sims.c: calls to the sims service and the fulfilment dispatcher ---- */

/* Calls SimService/<method> as the commerce service ("service:commerce",
 * superuser); parent (optional) lends its deadline and cancellation, else
 * timeout_ms bounds the call. */
int commerce_sims_call(const commerce_state_t *st, rpc_call_t *parent, int64_t timeout_ms,
                       const char *method, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *resp_desc, arena_t *a,
                       ProtobufCMessage **resp, rpc_status_t *status);
/* The organization of each of n ICCIDs (0: unknown) in orgs[], with one
 * ResolveSims. UNAVAILABLE (status set) when sims cannot answer. */
int commerce_resolve_or_status(commerce_ctx_t *cx, const char *const *iccids, size_t n,
                               int64_t *orgs) ONCEIOT_MUSTCHECK;
/* Outbox handlers: COMMERCE_TOPIC_TOP_UP (a packed TopUpQuotaRequest, its
 * request_id the item's fulfilment key) and COMMERCE_TOPIC_REGISTER (a packed
 * ImportSimsRequest, its request_id "order-<id>-ship"). ctx is the state. */
outbox_verdict_t commerce_deliver_top_up(void *ctx, const outbox_msg_t *msg, arena_t *a,
                                         const char **why);
outbox_verdict_t commerce_deliver_register(void *ctx, const outbox_msg_t *msg, arena_t *a,
                                           const char **why);

/* Handlers. */
int commerce_create_product(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int commerce_get_product(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int commerce_list_products(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int commerce_update_product(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int commerce_deactivate_product(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int commerce_create_order(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int commerce_get_order(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int commerce_list_orders(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int commerce_cancel_order(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int commerce_process_order(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);
int commerce_ship_order(rpc_call_t *, const ProtobufCMessage *, ProtobufCMessage **);

#endif
