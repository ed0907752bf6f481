/* Running onceiot-identity in integration tests, with the test playing the
 * gateway: it signs principals with the shared key and calls the service
 * directly. */
#ifndef ONCEIOT_TEST_IDENTITY_HARNESS_H
#define ONCEIOT_TEST_IDENTITY_HARNESS_H

#include "identity/v1/identity.pb-c.h"
#include "onceiot/client.h"
#include "onceiot/principal.h"
#include "proc_harness.h"

#include <stdbool.h>

#define IH_PRINCIPAL_KEY "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#define IH_SIGNING_SEED  "4242424242424242424242424242424242424242424242424242424242424242"
#define IH_PEPPER        "7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e"
#define IH_ADMIN_PASS    "bootstrap-password-123"

#define D(x)     (&onceiot__identity__v1__##x##__descriptor)
#define ADMIN    ONCEIOT__COMMON__V1__ROLE__ROLE_ADMIN
#define USER     ONCEIOT__COMMON__V1__ROLE__ROLE_USER
#define READONLY ONCEIOT__COMMON__V1__ROLE__ROLE_READONLY

typedef Onceiot__Identity__V1__User user_t;
typedef Onceiot__Identity__V1__LoginResponse login_resp_t;
typedef Onceiot__Identity__V1__CreateApiKeyResponse key_resp_t;
typedef Onceiot__Identity__V1__AuthenticateResponse auth_resp_t;
typedef Onceiot__Identity__V1__GetVerificationKeysResponse keys_resp_t;

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

/* A suite's fixture: a fresh service, and *su the bootstrap admin's
 * principal (id 1, organization 1, superuser). ih_teardown stops it and
 * frees what the suite kept in h->arena. */
void ih_setup(ih_t *h, principal_t **su);
void ih_teardown(ih_t *h);
/* Declares a criterion suite (include <criterion/criterion.h> first) whose
 * tests find the fixture in h and su. */
#define IH_SUITE(name)                                                                             \
    static ih_t h;                                                                                 \
    static principal_t *su;                                                                        \
    static void ih__setup(void)                                                                    \
    {                                                                                              \
        ih_setup(&h, &su);                                                                         \
    }                                                                                              \
    static void ih__teardown(void)                                                                 \
    {                                                                                              \
        ih_teardown(&h);                                                                           \
    }                                                                                              \
    TestSuite(name, .init = ih__setup, .fini = ih__teardown, .timeout = 120)

/* The calls most tests make, as principal as (the answers in h->arena). */
/* CreateUser of username@example.com, asserting success. */
Onceiot__Identity__V1__User *ih_create_user(ih_t *h, const principal_t *as, const char *username,
                                            int64_t org, Onceiot__Common__V1__Role role,
                                            const char *password);
/* Login without a principal, as the gateway's public path calls it. */
int ih_login(ih_t *h, const char *username, const char *password,
             Onceiot__Identity__V1__LoginResponse **out, rpc_status_t *st);
/* CreateApiKey with one scope (expires_at: unix seconds, 0 for none),
 * asserting success. */
Onceiot__Identity__V1__CreateApiKeyResponse *ih_create_key(ih_t *h, const principal_t *as,
                                                           int64_t user_id, const char *scope,
                                                           int64_t expires_at);
/* Authenticate as the gateway. */
int ih_authenticate(ih_t *h, const char *secret, Onceiot__Identity__V1__AuthenticateResponse **out,
                    rpc_status_t *st);
/* GetUser; *rc is ih_call's answer. */
Onceiot__Identity__V1__User *ih_get_user(ih_t *h, const principal_t *as, int64_t id,
                                         rpc_status_t *st, int *rc);
/* Login with an anonymous principal from a client address, as the gateway
 * signs it for a public call. */
int ih_login_from(ih_t *h, const char *address, const char *username, const char *password,
                  Onceiot__Identity__V1__LoginResponse **out, rpc_status_t *st);
/* GetVerificationKeys as the gateway, asserting one 32-byte key. */
Onceiot__Identity__V1__GetVerificationKeysResponse *ih_verification_keys(ih_t *h);

#endif
