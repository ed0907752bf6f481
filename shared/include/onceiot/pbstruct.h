/* google.protobuf.Struct on the wire, a jsonb object in PostgreSQL: JSON
 * objects that clients send and read as native JSON (grpcurl, every
 * generated client) and that the services keep as jsonb. Struct numbers are
 * doubles: integral values are written as JSON integers (what jsonb and SQL
 * casts read), and only integers up to 2^53 are exact. */
#ifndef ONCEIOT_PBSTRUCT_H
#define ONCEIOT_PBSTRUCT_H

#include "google/protobuf/struct.pb-c.h"
#include "onceiot/mem.h"
#include "onceiot/rpc.h"

#include <stdbool.h>
#include <stddef.h>

/* Nesting of objects and arrays a Struct may have, the Struct itself being 1. */
#define PBSTRUCT_MAX_DEPTH 32

/* The JSON object text of s for a jsonb parameter, compact with sorted keys,
 * in the call's arena, into *json; a NULL s is "{}". False, with a violation
 * recorded on field and *json NULL, when s has no JSON form (a value without
 * a kind, NaN or infinity, a string or key that is not UTF-8), nests deeper
 * than PBSTRUCT_MAX_DEPTH, or its text is longer than max_bytes. */
bool pbstruct_to_json(rpc_call_t *call, const char *field, const Google__Protobuf__Struct *s,
                      size_t max_bytes, const char **json) ONCEIOT_MUSTCHECK;

/* The Struct of JSON object text (a jsonb column read as text), in a. NULL
 * for NULL, text that is not JSON, and JSON that is not an object. */
Google__Protobuf__Struct *pbstruct_from_json(arena_t *a, const char *json);

#endif
