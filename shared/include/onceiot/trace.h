/* W3C Trace Context (https://www.w3.org/TR/trace-context/): the traceparent
 * header a call arrives with is continued (same trace id, the caller's span
 * as parent, a span of our own), or a new trace is started when it is
 * absent or invalid. An invalid header is never kept or echoed: only ids
 * this module made or checked reach logs and other hops. */
#ifndef ONCEIOT_TRACE_H
#define ONCEIOT_TRACE_H

#include <grpc/grpc.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct trace_ctx {
    char trace_id[33];       /* 32 lowercase hex digits, never all zero */
    char span_id[17];        /* this hop's span: 16 lowercase hex digits */
    char parent_span_id[17]; /* the caller's span; "" when the trace started here */
    uint8_t flags;           /* trace-flags, carried as received (00 for a new trace) */
} trace_ctx_t;

/* Parses a traceparent value (n bytes, not NUL-terminated). Version 00 is
 * exactly "00-<32 hex>-<16 hex>-<2 hex>", lowercase, ids not all zero; a
 * later version (01..fe) may carry more after a further "-", version ff is
 * invalid. On success fills trace_id, parent_span_id and flags of out (not
 * span_id) and returns true; otherwise returns false and leaves out alone. */
bool trace_parse(const uint8_t *s, size_t n, trace_ctx_t *out);
/* The trace of a call with request metadata md: its single traceparent
 * continued, or a new trace when there is none, more than one, or it does
 * not parse. Always gives a fresh span_id. */
void trace_from_metadata(const grpc_metadata_array *md, trace_ctx_t *out);
/* The traceparent to send the next hop: our trace id with our span as its
 * parent ("00-<trace_id>-<span_id>-<flags>"). */
void trace_header(const trace_ctx_t *t, char out[56]);
/* n random lowercase hex digits, not all zero, NUL-terminated in out
 * (n + 1 bytes). Fast and unique in practice, not secret. */
void trace_random_hex(char *out, size_t n);

/* The response header (initial metadata) that carries the trace id back. */
#define TRACE_RESPONSE_HEADER "x-trace-id"

#endif
