/* Running onceiot-identity in integration tests, with the test playing the
 * gateway: it signs principals with the shared key and calls the service
 * directly. */
#ifndef ONCEIOT_TEST_IDENTITY_HARNESS_H
#define ONCEIOT_TEST_IDENTITY_HARNESS_H

#include "onceiot/client.h"
#include "onceiot/principal.h"
#include "proc_harness.h"

#include <stdbool.h>

#define IH_PRINCIPAL_KEY "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#define IH_SIGNING_SEED  "4242424242424242424242424242424242424242424242424242424242424242"
#define IH_PEPPER        "7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e"
#define IH_ADMIN_PASS    "bootstrap-password-123"

typedef struct ih {
    ph_proc_t proc;
    rpc_channel_t *ch;
    arena_t *arena;       /* responses and principals; freed by ih_stop */
    principal_key_t pkey; /* the gateway's signing key */
    char key_file[256];   /* where the bootstrap admin key goes */
} ih_t;

/* Starts the service. fresh: drop the identity schema first (a new
 * database); otherwise keep it (a restart). */
void ih_start(ih_t *h, bool fresh);
/* Stops it (SIGTERM), asserting a clean exit and no sanitizer report. */
void ih_stop(ih_t *h);

/* A principal as the gateway would sign it. */
principal_t *ih_principal(ih_t *h, int64_t user_id, int64_t org, Onceiot__Common__V1__Role role,
                          bool superuser);
/* The gateway's own principal ("service:gateway"). */
principal_t *ih_gateway(ih_t *h);

/* Calls method ("Login") of IdentityService with principal p (NULL: none).
 * Returns like rpc_unary; *resp is in h->arena. */
int ih_call(ih_t *h, const char *method, const void *req, const ProtobufCMessageDescriptor *desc,
            const principal_t *p, void *resp, rpc_status_t *st);

/* True when any violation in st names field. */
bool ih_violation(ih_t *h, const rpc_status_t *st, const char *field);

#endif
