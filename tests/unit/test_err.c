/* The error table: every ERR_* code has a name, a message and the gRPC status
 * it becomes, and the canonical codes survive a round trip through gRPC. */
#include "onceiot/err.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <string.h>

/* One row per code, written out by hand so the test does not share the
 * X-macro it checks. */
typedef struct err_row {
    int err;
    const char *name;
    grpc_status_code status;
} err_row_t;

static const err_row_t rows[] = {
    {ERR_CANCELLED, "CANCELLED", GRPC_STATUS_CANCELLED},
    {ERR_UNKNOWN, "UNKNOWN", GRPC_STATUS_UNKNOWN},
    {ERR_INVALID_ARGUMENT, "INVALID_ARGUMENT", GRPC_STATUS_INVALID_ARGUMENT},
    {ERR_DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED", GRPC_STATUS_DEADLINE_EXCEEDED},
    {ERR_NOT_FOUND, "NOT_FOUND", GRPC_STATUS_NOT_FOUND},
    {ERR_ALREADY_EXISTS, "ALREADY_EXISTS", GRPC_STATUS_ALREADY_EXISTS},
    {ERR_PERMISSION_DENIED, "PERMISSION_DENIED", GRPC_STATUS_PERMISSION_DENIED},
    {ERR_RESOURCE_EXHAUSTED, "RESOURCE_EXHAUSTED", GRPC_STATUS_RESOURCE_EXHAUSTED},
    {ERR_FAILED_PRECONDITION, "FAILED_PRECONDITION", GRPC_STATUS_FAILED_PRECONDITION},
    {ERR_ABORTED, "ABORTED", GRPC_STATUS_ABORTED},
    {ERR_OUT_OF_RANGE, "OUT_OF_RANGE", GRPC_STATUS_OUT_OF_RANGE},
    {ERR_UNIMPLEMENTED, "UNIMPLEMENTED", GRPC_STATUS_UNIMPLEMENTED},
    {ERR_INTERNAL, "INTERNAL", GRPC_STATUS_INTERNAL},
    {ERR_UNAVAILABLE, "UNAVAILABLE", GRPC_STATUS_UNAVAILABLE},
    {ERR_DATA_LOSS, "DATA_LOSS", GRPC_STATUS_DATA_LOSS},
    {ERR_UNAUTHENTICATED, "UNAUTHENTICATED", GRPC_STATUS_UNAUTHENTICATED},
    {ERR_CONFIG, "CONFIG", GRPC_STATUS_INTERNAL},
    {ERR_IO, "IO", GRPC_STATUS_INTERNAL},
};
enum { N_ROWS = sizeof(rows) / sizeof(rows[0]) };

Test(err, every_code_has_a_name_a_message_and_its_grpc_status)
{
    cr_assert_eq(N_ROWS, ERR__END - ERR__BASE - 1, "the test lists every code of the table");
    for (size_t i = 0; i < N_ROWS; i++) {
        const err_row_t *r = &rows[i];
        cr_assert_str_eq(err_name(r->err), r->name);
        const char *msg = err_message(r->err);
        cr_assert_not_null(msg);
        cr_assert_gt(strlen(msg), 3, "%s has a real message", r->name);
        cr_assert_eq(err_to_grpc(r->err), r->status, "%s maps to %s, not %s", r->name,
                     err_grpc_name(r->status), err_grpc_name(err_to_grpc(r->err)));
    }
}

Test(err, messages_are_distinct_and_human)
{
    for (size_t i = 0; i < N_ROWS; i++)
        for (size_t j = i + 1; j < N_ROWS; j++)
            cr_assert_str_neq(err_message(rows[i].err), err_message(rows[j].err), "%s and %s",
                              rows[i].name, rows[j].name);
    cr_assert_str_eq(err_message(ERR_NOT_FOUND), "not found");
    cr_assert_str_eq(err_message(ERR_CONFIG), "invalid configuration");
}

Test(err, codes_never_collide_with_negative_errno)
{
    for (size_t i = 0; i < N_ROWS; i++)
        cr_assert_lt(rows[i].err, -200, "%s is %d: Linux errno values stay below 200", rows[i].name,
                     rows[i].err);
}

Test(err, ok_is_zero_everywhere)
{
    cr_assert_eq(ERR_OK, 0);
    cr_assert_str_eq(err_name(0), "OK");
    cr_assert_str_eq(err_message(0), "ok");
    cr_assert_eq(err_to_grpc(0), GRPC_STATUS_OK);
    cr_assert_eq(err_from_grpc(GRPC_STATUS_OK), 0);
}

ParameterizedTestParameters(err, unknown_codes_are_unknown)
{
    static int codes[] = {ERR__BASE, ERR__END, ERR__BASE - 1, -1, -22, 1, 42, -500};
    return cr_make_param_array(int, codes, sizeof(codes) / sizeof(codes[0]));
}

ParameterizedTest(int *code, err, unknown_codes_are_unknown)
{
    cr_assert_str_eq(err_name(*code), "?", "err_name(%d)", *code);
    cr_assert_eq(err_to_grpc(*code), GRPC_STATUS_UNKNOWN, "err_to_grpc(%d)", *code);
    cr_assert_str_eq(err_message(*code), "unknown error");
}

/* The sixteen canonical non-OK statuses, each owned by the code of the same
 * name. */
ParameterizedTestParameters(err, canonical_codes_round_trip_through_grpc)
{
    static int codes[] = {
        ERR_CANCELLED,
        ERR_UNKNOWN,
        ERR_INVALID_ARGUMENT,
        ERR_DEADLINE_EXCEEDED,
        ERR_NOT_FOUND,
        ERR_ALREADY_EXISTS,
        ERR_PERMISSION_DENIED,
        ERR_RESOURCE_EXHAUSTED,
        ERR_FAILED_PRECONDITION,
        ERR_ABORTED,
        ERR_OUT_OF_RANGE,
        ERR_UNIMPLEMENTED,
        ERR_INTERNAL,
        ERR_UNAVAILABLE,
        ERR_DATA_LOSS,
        ERR_UNAUTHENTICATED,
    };
    return cr_make_param_array(int, codes, sizeof(codes) / sizeof(codes[0]));
}

ParameterizedTest(int *code, err, canonical_codes_round_trip_through_grpc)
{
    grpc_status_code s = err_to_grpc(*code);
    cr_assert_neq(s, GRPC_STATUS_OK);
    cr_assert_eq(err_from_grpc(s), *code, "%s -> %s -> %s", err_name(*code), err_grpc_name(s),
                 err_name(err_from_grpc(s)));
    cr_assert_str_eq(err_grpc_name(s), err_name(*code), "the names agree");
}

Test(err, internal_is_the_canonical_code_for_config_and_io)
{
    cr_assert_eq(err_from_grpc(err_to_grpc(ERR_CONFIG)), ERR_INTERNAL);
    cr_assert_eq(err_from_grpc(err_to_grpc(ERR_IO)), ERR_INTERNAL);
}

Test(err, unknown_grpc_statuses_become_err_unknown)
{
    cr_assert_eq(err_from_grpc((grpc_status_code)17), ERR_UNKNOWN);
    cr_assert_eq(err_from_grpc((grpc_status_code)99), ERR_UNKNOWN);
    cr_assert_eq(err_from_grpc((grpc_status_code)-1), ERR_UNKNOWN);
}

Test(err, grpc_names_cover_all_seventeen_codes)
{
    static const char *const names[] = {
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    cr_assert_eq(sizeof(names) / sizeof(names[0]), 17);
    for (int i = 0; i < 17; i++)
        cr_assert_str_eq(err_grpc_name((grpc_status_code)i), names[i], "code %d", i);
    cr_assert_eq(GRPC_STATUS_UNAUTHENTICATED, 16, "core numbers the codes as we do");
}

Test(err, grpc_names_of_out_of_range_codes_are_unknown)
{
    cr_assert_str_eq(err_grpc_name((grpc_status_code)17), "UNKNOWN");
    cr_assert_str_eq(err_grpc_name((grpc_status_code)1000), "UNKNOWN");
    cr_assert_str_eq(err_grpc_name((grpc_status_code)-1), "UNKNOWN");
}
