/* The commerce service in tests, as its users call it: identity, sims,
 * commerce and the gateway as real processes on free ports against the test
 * PostgreSQL (fresh identity, sims and commerce schemas), with helpers to
 * make users, SIMs and products and to call CommerceService through the
 * gateway. The helpers assert on failure unless they return a status; they
 * are for the test's main thread (Criterion asserts must not run in worker
 * threads: those call ch_call_on with a channel of their own). */
#ifndef ONCEIOT_TEST_COMMERCE_HARNESS_H
#define ONCEIOT_TEST_COMMERCE_HARNESS_H

#include "commerce/v1/commerce.pb-c.h"
#include "gw_client.h"
#include "sims/v1/sims.pb-c.h"
#include "stack_harness.h"

#include <stdbool.h>
#include <stdint.h>

#define CH_COMMERCE "/onceiot.commerce.v1.CommerceService/"
#define CH_SIMS     "/onceiot.sims.v1.SimService/"

typedef Onceiot__Commerce__V1__Product ch_product_t;
typedef Onceiot__Commerce__V1__Order ch_order_t;

typedef struct ch {
    sh_stack_t st;     /* identity, sims, commerce, gateway */
    gwc_t g;           /* the main thread's gateway client */
    const char *root;  /* "Bearer <bootstrap superuser key>" */
    const char *staff; /* a superuser key with commerce:read, commerce:write, sims:read */
} ch_t;

extern ch_t ch;

/* Starts the stack (commerce with a 2 s outbox lease) and makes the staff
 * key. */
void ch_start(void);
/* Stops every process, expecting clean exits and no sanitizer reports. */
void ch_stop(void);
/* Sends sig to commerce, waits for its end, starts it again on its port
 * with its data and waits until it is SERVING. */
void ch_restart_commerce(int sig);
/* kill -9 of sims; ch_start_sims starts it again on its port, keeping its
 * data. */
void ch_kill_sims(void);
void ch_start_sims(void);

/* A user of org with role and an API key with the scopes (NULL-terminated);
 * returns "Bearer <secret>". */
const char *ch_user(const char *name, Onceiot__Common__V1__Role role, int64_t org,
                    const char *const *scopes);
/* Registers a new SIM (ICCID made from n) for org through the gateway, with
 * data and SMS quotas; returns its ICCID. */
const char *ch_sim(int64_t org, long n, int64_t data_volume, int64_t sms_volume);
/* The remaining volume of a SIM's quota (type DATA or SMS), read as staff. */
int64_t ch_quota(const char *iccid, Onceiot__Sims__V1__QuotaType type);

/* Creates an active product as staff; stock < 0: unlimited; volume: the
 * top-up's specification (ignored for other categories). */
ch_product_t *ch_product(Onceiot__Commerce__V1__Category category, const char *sku, int64_t price,
                         const char *currency, int64_t stock, int64_t volume);

/* A CommerceService call through the gateway on the main client; returns
 * like rpc_unary, the response (in ch.g's arena) in *resp. */
int ch_call(const char *auth, const char *method, const ProtobufCMessage *req,
            const ProtobufCMessageDescriptor *resp_desc, void *resp, rpc_status_t *st);
/* The same on another client (a worker thread's). */
int ch_call_on(gwc_t *g, const char *auth, const char *method, const ProtobufCMessage *req,
               const ProtobufCMessageDescriptor *resp_desc, void *resp, rpc_status_t *st);
/* CreateOrder of one item; returns like rpc_unary. */
int ch_order1(const char *auth, const char *product_id, int64_t quantity, const char *iccid,
              const char *request_id, ch_order_t **out, rpc_status_t *st);
/* GetOrder as auth (asserts). */
ch_order_t *ch_get_order(const char *auth, const char *id);
/* Polls GetOrder (as staff) until the order has status, up to timeout_ms. */
bool ch_wait_status(const char *id, Onceiot__Commerce__V1__OrderStatus status, int timeout_ms);
/* A number from SQL run as the superuser (first column of the first row). */
long long ch_sql_int(const char *sql);
/* True when st carries a BadRequest violation on field. */
bool ch_violation(const rpc_status_t *st, const char *field);

#endif
