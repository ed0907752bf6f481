/* google.protobuf.Timestamp and unix microseconds, the form services read
 * and write times in SQL ((extract(epoch FROM t) * 1000000)::bigint, and
 * 'epoch'::timestamptz + $n * interval '1 microsecond' back). Times before
 * 1970 round towards minus infinity, so nanos stay in 0..999999999. */
#ifndef ONCEIOT_PBTIME_H
#define ONCEIOT_PBTIME_H

#include "google/protobuf/timestamp.pb-c.h"
#include "onceiot/mem.h"

#include <stdint.h>

/* A Timestamp in the arena for us microseconds. */
Google__Protobuf__Timestamp *pbtime_from_us(arena_t *a, int64_t us);
/* The same from decimal text (a column); NULL for NULL (SQL NULL). */
Google__Protobuf__Timestamp *pbtime_from_us_text(arena_t *a, const char *us);
/* Microseconds of ts (sub-microsecond nanos dropped); 0 for NULL. */
int64_t pbtime_us(const Google__Protobuf__Timestamp *ts);
/* The same as decimal text in the arena, for a $n parameter; NULL for NULL. */
const char *pbtime_us_text(arena_t *a, const Google__Protobuf__Timestamp *ts);

#endif
