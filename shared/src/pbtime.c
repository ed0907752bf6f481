/* Timestamps and unix microseconds (see pbtime.h). */
#include "onceiot/pbtime.h"

#include <stdlib.h>

Google__Protobuf__Timestamp *pbtime_from_us(arena_t *a, int64_t us)
{
    Google__Protobuf__Timestamp *ts = arena_alloc(a, sizeof(*ts));
    google__protobuf__timestamp__init(ts);
    int64_t sec = us / 1000000, rem = us % 1000000;
    if (rem < 0) {
        rem += 1000000;
        sec--;
    }
    ts->seconds = sec;
    ts->nanos = (int32_t)(rem * 1000);
    return ts;
}

Google__Protobuf__Timestamp *pbtime_from_us_text(arena_t *a, const char *us)
{
    return us ? pbtime_from_us(a, strtoll(us, NULL, 10)) : NULL;
}

int64_t pbtime_us(const Google__Protobuf__Timestamp *ts)
{
    return ts ? (int64_t)ts->seconds * 1000000 + ts->nanos / 1000 : 0;
}

const char *pbtime_us_text(arena_t *a, const Google__Protobuf__Timestamp *ts)
{
    return ts ? arena_printf(a, "%lld", (long long)pbtime_us(ts)) : NULL;
}
