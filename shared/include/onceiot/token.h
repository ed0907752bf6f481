/* Login tokens: PASETO v4.public (Ed25519 over the PAE of header, claims
 * JSON and footer; https://github.com/paseto-standard/paseto-spec).
 *
 * identity signs them with its private key; the gateway verifies them
 * locally with the public keys identity publishes (GetVerificationKeys), so a
 * token costs no database round trip. The footer carries {"kid":"..."} to
 * pick the key; rotating the key (a new kid, the old one no longer
 * published) makes older tokens fail. */
#ifndef ONCEIOT_TOKEN_H
#define ONCEIOT_TOKEN_H

#include "common/v1/auth.pb-c.h"
#include "onceiot/err.h"
#include "onceiot/mem.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct token_claims {
    int64_t user_id;                /* "sub" */
    char username[64];              /* "usr" */
    int64_t organization_id;        /* "org" */
    Onceiot__Common__V1__Role role; /* "role": "admin" | "user" | "readonly" */
    bool is_superuser;              /* "su" */
    int64_t issued_at_ms;           /* "iat", unix milliseconds (RFC 3339 with .mmm in the token) */
    int64_t expires_at;             /* "exp", unix seconds (RFC 3339 in the token) */
    char kid[40];                   /* from the footer */
} token_claims_t;

typedef struct token_key {
    char kid[40];
    uint8_t public_key[32];
} token_key_t;

/* The kid of a public key: "k1." + the first 8 bytes of its BLAKE2b hash, hex. */
void token_kid(const uint8_t public_key[32], char kid[40]);

/* Signs claims (their kid is ignored: the key's is used) with an Ed25519
 * secret key (libsodium's 64-byte form). Returns the token in the arena. */
char *token_sign(const uint8_t secret_key[64], const token_claims_t *claims, arena_t *a);

/* How far a token's iat may lie ahead of the verifier's clock. identity
 * stamps iat with PostgreSQL's clock, the gateway checks it with its own
 * (time(), which on Linux reads the coarse clock and trails
 * clock_gettime by up to a tick); without a leeway a token can be refused as
 * "not valid yet" the instant it is issued. */
#define TOKEN_CLOCK_SKEW_S 30

/* Verifies a token against the published keys at unix time now: the format,
 * the footer's kid among keys, the signature, and
 * iat <= now + TOKEN_CLOCK_SKEW_S, now < exp. Returns 0 with *out filled, or
 * ERR_UNAUTHENTICATED with *why set. */
int token_verify(const token_key_t *keys, size_t n_keys, const char *token, int64_t now,
                 token_claims_t *out, const char **why) ONCEIOT_MUSTCHECK;

#endif
