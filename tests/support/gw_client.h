/* Calling the gateway as a user would, for tests: credentials in the
 * "authorization" header, users, API keys and login tokens made through the
 * public API. Every helper asserts on failure unless it returns the status. */
#ifndef ONCEIOT_TEST_GW_CLIENT_H
#define ONCEIOT_TEST_GW_CLIENT_H

#include "common/v1/auth.pb-c.h"
#include "onceiot/client.h"

typedef struct gwc {
    rpc_channel_t *ch;
    arena_t *arena; /* responses and metadata; freed after the channel */
} gwc_t;

void gwc_open(gwc_t *g, const char *addr);
void gwc_close(gwc_t *g);
/* Options with "authorization: <auth>" (NULL: none) and a deadline. */
rpc_call_opts_t gwc_opts(gwc_t *g, const char *auth, int64_t timeout_ms);
/* A unary call; returns like rpc_unary. */
int gwc_call(gwc_t *g, const char *auth, const char *method, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *resp_desc, void *resp, rpc_status_t *st);
/* CreateUser as auth (password SH_PASSWORD); returns the id. */
int64_t gwc_create_user(gwc_t *g, const char *auth, const char *name,
                        Onceiot__Common__V1__Role role, int64_t org);
/* CreateApiKey as auth for user_id (0: the caller). Returns "Bearer <secret>"
 * and the key's id, or NULL with *st when st is given and the call failed. */
const char *gwc_create_key(gwc_t *g, const char *auth, int64_t user_id, const char *const *scopes,
                           size_t n, int64_t *key_id, rpc_status_t *st);
/* Login; returns "Bearer <token>". */
const char *gwc_login(gwc_t *g, const char *username, const char *password);

#endif
