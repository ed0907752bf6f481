/* The one table of error codes.
 *
 * Fallible functions return 0 (or a positive count) on success and one of the
 * negative ERR_* codes below on failure. Each code has a name, a default
 * message and the canonical gRPC status it becomes when it ends a call. The
 * table is an X-macro so names, messages and mappings cannot drift apart. */
#ifndef ONCEIOT_ERR_H
#define ONCEIOT_ERR_H

#include <grpc/status.h>

#define ONCEIOT_MUSTCHECK __attribute__((warn_unused_result))

/*  X(name,                grpc status,                        default message) */
#define ERR_MAP(X)                                                                                 \
    X(CANCELLED, GRPC_STATUS_CANCELLED, "the call was cancelled")                                  \
    X(UNKNOWN, GRPC_STATUS_UNKNOWN, "unknown error")                                               \
    X(INVALID_ARGUMENT, GRPC_STATUS_INVALID_ARGUMENT, "invalid argument")                          \
    X(DEADLINE_EXCEEDED, GRPC_STATUS_DEADLINE_EXCEEDED, "deadline exceeded")                       \
    X(NOT_FOUND, GRPC_STATUS_NOT_FOUND, "not found")                                               \
    X(ALREADY_EXISTS, GRPC_STATUS_ALREADY_EXISTS, "already exists")                                \
    X(PERMISSION_DENIED, GRPC_STATUS_PERMISSION_DENIED, "permission denied")                       \
    X(RESOURCE_EXHAUSTED, GRPC_STATUS_RESOURCE_EXHAUSTED, "resource exhausted")                    \
    X(FAILED_PRECONDITION, GRPC_STATUS_FAILED_PRECONDITION, "failed precondition")                 \
    X(ABORTED, GRPC_STATUS_ABORTED, "aborted by a concurrent change; retry")                       \
    X(OUT_OF_RANGE, GRPC_STATUS_OUT_OF_RANGE, "out of range")                                      \
    X(UNIMPLEMENTED, GRPC_STATUS_UNIMPLEMENTED, "method not implemented")                          \
    X(INTERNAL, GRPC_STATUS_INTERNAL, "internal error")                                            \
    X(UNAVAILABLE, GRPC_STATUS_UNAVAILABLE, "service unavailable")                                 \
    X(DATA_LOSS, GRPC_STATUS_DATA_LOSS, "data loss")                                               \
    X(UNAUTHENTICATED, GRPC_STATUS_UNAUTHENTICATED, "unauthenticated")                             \
    X(CONFIG, GRPC_STATUS_INTERNAL, "invalid configuration")                                       \
    X(IO, GRPC_STATUS_INTERNAL, "input/output error")

enum {
    ERR_OK = 0,
    ERR__BASE = -1000, /* codes count up from here so they never collide with -errno */
#define ERR__ENUM(name, status, msg) ERR_##name,
    ERR_MAP(ERR__ENUM)
#undef ERR__ENUM
        ERR__END
};

/* "INVALID_ARGUMENT" for ERR_INVALID_ARGUMENT; "OK" for 0; "?" for anything else. */
const char *err_name(int err);
/* The default human message of an error code. */
const char *err_message(int err);
/* The gRPC status an error code becomes; GRPC_STATUS_OK for 0, UNKNOWN for
 * codes outside the table. */
grpc_status_code err_to_grpc(int err);
/* The error code for a gRPC status (0 for OK). */
int err_from_grpc(grpc_status_code code);
/* The canonical upper-case name of a gRPC status code ("NOT_FOUND"). */
const char *err_grpc_name(grpc_status_code code);

#endif
