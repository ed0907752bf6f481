/* Internals of token.c that the unit tests check against the PASETO spec's
 * published test vectors (whose claims are not ours). */
#ifndef ONCEIOT_TOKEN_INT_H
#define ONCEIOT_TOKEN_INT_H

#include "onceiot/mem.h"

#include <stddef.h>
#include <stdint.h>

/* Builds "v4.public." + base64url(message || sig) [+ "." + base64url(footer)]
 * with sig = Ed25519 over PAE("v4.public.", message, footer, ""). An empty
 * footer is left out, as the spec says. Returns the token in the arena. */
char *token__sign_raw(const uint8_t secret_key[64], const uint8_t *message, size_t message_len,
                      const uint8_t *footer, size_t footer_len, arena_t *a);

/* Checks the signature of a v4.public token against one public key and, on
 * success, returns 0 with the message and footer decoded into the arena.
 * Returns ERR_UNAUTHENTICATED with *why set otherwise. */
int token__open_raw(const uint8_t public_key[32], const char *token, arena_t *a, uint8_t **message,
                    size_t *message_len, uint8_t **footer, size_t *footer_len, const char **why);

#endif
