/* How deep a protobuf message nests, read from its wire bytes before
 * protobuf-c decodes it. protobuf-c recurses once per nested message and has
 * no limit of its own, and recursive types (google.protobuf.Struct, Value,
 * ListValue) let a client nest as deep as its bytes allow: a few MiB of
 * Value{struct_value: Struct{fields: {"": Value{...}}}} would overflow a
 * thread's stack. The server refuses such a request before decoding it. */
#ifndef ONCEIOT_PBNEST_H
#define ONCEIOT_PBNEST_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Messages a request may nest, the request itself being 1. Far above what
 * the product's types need (a Struct PBSTRUCT_MAX_DEPTH deep is about 100),
 * far below what a worker's or stream thread's stack can decode. */
#define PBNEST_MAX_DEPTH 128

/* True unless the message of type d encoded in data[0..len) nests more than
 * max_depth messages. Only fields that d (and the types it names) declare as
 * messages are followed, so a bytes or string field that happens to look
 * like a message costs nothing; unknown fields are skipped, as protobuf-c
 * keeps them undecoded. Malformed bytes are not judged here (true): the
 * decoder refuses them. Allocates nothing; recursion is bounded by
 * max_depth. */
bool pbnest_within(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len,
                   int max_depth);

#endif
