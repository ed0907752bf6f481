/* Message nesting read from wire bytes (shared/src/pbnest.c). */
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "onceiot/mem.h"
#include "onceiot/pbnest.h"

#include <criterion/criterion.h>
#include <string.h>

/* A buffer filled from its end, as messages are wrapped from the inside out. */
typedef struct wire {
    uint8_t *buf, *p, *end;
} wire_t;

static wire_t wire_new(size_t cap)
{
    uint8_t *b = mem_alloc(cap);
    return (wire_t){b, b + cap, b + cap};
}

static void put(wire_t *w, uint8_t b)
{
    cr_assert_gt(w->p, w->buf, "wire buffer too small");
    *--w->p = b;
}

/* Writes n as a varint before what is there. */
static void put_varint(wire_t *w, size_t n)
{
    uint8_t v[10];
    size_t k = 0;
    do {
        v[k++] = (uint8_t)((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
        n >>= 7;
    } while (n);
    while (k)
        put(w, v[--k]);
}

/* Wraps everything written so far as the length-delimited field number. */
static void wrap(wire_t *w, uint32_t number)
{
    put_varint(w, (size_t)(w->end - w->p));
    put_varint(w, (size_t)number << 3 | PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED);
}

static size_t wire_len(const wire_t *w)
{
    return (size_t)(w->end - w->p);
}

/* A google.protobuf.Value nesting depth messages: Value{list_value:
 * ListValue{values: Value{...}}}, the innermost Value empty. */
static wire_t values(int depth)
{
    wire_t w = wire_new((size_t)depth * 8 + 16);
    for (int d = depth; d > 1; d--)
        wrap(&w, d % 2 ? 1 /* ListValue.values */ : 6 /* Value.list_value */);
    return w;
}

Test(pbnest, the_limit_counts_every_nested_message)
{
    const ProtobufCMessageDescriptor *d = &google__protobuf__value__descriptor;
    for (int depth = 126; depth <= 130; depth++) {
        wire_t w = values(depth);
        cr_assert_eq(pbnest_within(d, w.p, wire_len(&w), 128), depth <= 128, "depth %d", depth);
        if (depth <= 128) { /* and protobuf-c agrees on what it decodes */
            ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, wire_len(&w), w.p);
            cr_assert_not_null(m, "depth %d decodes", depth);
            protobuf_c_message_free_unpacked(m, NULL);
        }
        mem_free(w.buf);
    }
    wire_t w = values(5);
    cr_assert(pbnest_within(d, w.p, wire_len(&w), 5));
    cr_assert_not(pbnest_within(d, w.p, wire_len(&w), 4));
    mem_free(w.buf);
}

/* The attack the check exists for, at a size a client may send (under the
 * 4 MiB message limit): half a million levels, refused without recursing
 * past the limit. */
Test(pbnest, half_a_million_levels_are_refused)
{
    wire_t w = values(500001);
    cr_assert_lt(wire_len(&w), 4u << 20);
    cr_assert_not(pbnest_within(&google__protobuf__value__descriptor, w.p, wire_len(&w), 128));
    mem_free(w.buf);
}

/* Only fields declared as messages are followed: nesting-shaped bytes in a
 * bytes field, or in a field the type does not know, are not messages to
 * protobuf-c either. */
Test(pbnest, bytes_and_unknown_fields_are_not_followed)
{
    const ProtobufCMessageDescriptor *types[] = {&google__protobuf__bytes_value__descriptor,
                                                 &google__protobuf__struct__descriptor};
    const uint32_t fields[] = {1 /* BytesValue.value */, 100 /* not a field of Struct */};
    for (size_t i = 0; i < 2; i++) {
        wire_t w = values(301);
        wrap(&w, fields[i]);
        cr_assert(pbnest_within(types[i], w.p, wire_len(&w), 2), "%s", types[i]->name);
        ProtobufCMessage *m = protobuf_c_message_unpack(types[i], NULL, wire_len(&w), w.p);
        cr_assert_not_null(m, "%s decodes it without recursing", types[i]->name);
        protobuf_c_message_free_unpacked(m, NULL);
        mem_free(w.buf);
    }
}

/* What is malformed is left to protobuf-c, which refuses it. */
Test(pbnest, malformed_bytes_are_left_to_the_decoder)
{
    const ProtobufCMessageDescriptor *d = &google__protobuf__value__descriptor;
    const uint8_t cut_varint[] = {0x32, 0x80};     /* a length cut short */
    const uint8_t too_long[] = {0x32, 0x7f, 0x00}; /* 127 bytes announced, 1 there */
    const uint8_t group[] = {0x33, 0x34};          /* start and end group */
    const uint8_t fixed[] = {0x09, 1, 2, 3};       /* 8 bytes announced, 3 there */
    const uint8_t long_varint[] = {0x08, 0xff, 0xff, 0xff, 0xff, 0xff,
                                   0xff, 0xff, 0xff, 0xff, 0xff, 0x01}; /* 11 bytes */
    const struct {
        const uint8_t *b;
        size_t n;
    } cases[] = {{cut_varint, sizeof(cut_varint)},
                 {too_long, sizeof(too_long)},
                 {group, sizeof(group)},
                 {fixed, sizeof(fixed)},
                 {long_varint, sizeof(long_varint)}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cr_assert(pbnest_within(d, cases[i].b, cases[i].n, 128), "case %zu", i);
        cr_assert_null(protobuf_c_message_unpack(d, NULL, cases[i].n, cases[i].b), "case %zu", i);
    }
    cr_assert(pbnest_within(d, NULL, 0, 128), "an empty message");
}
