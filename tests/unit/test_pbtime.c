/* Timestamps and unix microseconds (shared/src/pbtime.c). */
#include "onceiot/pbtime.h"

#include <criterion/criterion.h>

Test(pbtime, microseconds_round_trip_through_a_timestamp)
{
    arena_t *a = arena_new();
    const int64_t cases[] = {0, 1, 999999, 1000000, 1764680000123456LL, -1, -1000000, -1500001};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        Google__Protobuf__Timestamp *ts = pbtime_from_us(a, cases[i]);
        cr_assert(ts->nanos >= 0 && ts->nanos < 1000000000, "nanos %d", ts->nanos);
        cr_assert_eq(pbtime_us(ts), cases[i]);
        const char *text = pbtime_us_text(a, ts);
        cr_assert_eq(pbtime_us(pbtime_from_us_text(a, text)), cases[i], "%s", text);
    }
    arena_free(a);
}

Test(pbtime, before_1970_rounds_down_so_nanos_stay_positive)
{
    arena_t *a = arena_new();
    Google__Protobuf__Timestamp *ts = pbtime_from_us(a, -1500001);
    cr_assert_eq(ts->seconds, -2);
    cr_assert_eq(ts->nanos, 499999000);
    arena_free(a);
}

Test(pbtime, null_is_sql_null_both_ways)
{
    arena_t *a = arena_new();
    cr_assert_null(pbtime_from_us_text(a, NULL));
    cr_assert_null(pbtime_us_text(a, NULL));
    cr_assert_eq(pbtime_us(NULL), 0);
    arena_free(a);
}
