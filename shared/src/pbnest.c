/* Message nesting read from wire bytes (onceiot/pbnest.h). */
#include "onceiot/pbnest.h"

/* Reads a varint at p[*i..len) into *v; false when it is cut short or
 * longer than ten bytes. */
static bool pbnest__varint(const uint8_t *p, size_t len, size_t *i, uint64_t *v)
{
    uint64_t out = 0;
    for (unsigned shift = 0; shift < 70 && *i < len; shift += 7) {
        uint8_t b = p[(*i)++];
        out |= (uint64_t)(b & 0x7f) << (shift < 64 ? shift : 63);
        if (!(b & 0x80)) {
            *v = out;
            return true;
        }
    }
    return false;
}

bool pbnest_within(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t len, int max_depth)
{
    if (max_depth < 1)
        return false;
    size_t i = 0;
    while (i < len) {
        uint64_t key, n;
        if (!pbnest__varint(p, len, &i, &key))
            return true;
        switch (key & 7) {
        case PROTOBUF_C_WIRE_TYPE_VARINT:
            if (!pbnest__varint(p, len, &i, &n))
                return true;
            break;
        case PROTOBUF_C_WIRE_TYPE_64BIT:
            if (len - i < 8)
                return true;
            i += 8;
            break;
        case PROTOBUF_C_WIRE_TYPE_32BIT:
            if (len - i < 4)
                return true;
            i += 4;
            break;
        case PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED: {
            if (!pbnest__varint(p, len, &i, &n) || n > len - i)
                return true;
            uint64_t number = key >> 3;
            const ProtobufCFieldDescriptor *f =
                number <= UINT32_MAX ? protobuf_c_message_descriptor_get_field(d, (unsigned)number)
                                     : NULL;
            if (f && f->type == PROTOBUF_C_TYPE_MESSAGE &&
                !pbnest_within(f->descriptor, p + i, (size_t)n, max_depth - 1))
                return false;
            i += (size_t)n;
            break;
        }
        default:
            return true; /* groups and bad wire types: protobuf-c refuses them */
        }
    }
    return true;
}
