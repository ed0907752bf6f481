/* google.protobuf.Timestamp and the unix microseconds the services store
 * and compute with (PostgreSQL's extract(epoch ...) * 1000000). */
#ifndef ONCEIOT_PBTIME_H
#define ONCEIOT_PBTIME_H

#include "google/protobuf/timestamp.pb-c.h"
#include "onceiot/mem.h"

#include <stdint.h>

/* A Timestamp of us (floor division: times before 1970 keep nanos in
 * [0, 1e9)), in a. */
Google__Protobuf__Timestamp *pbtime_from_us(arena_t *a, int64_t us);
/* The same from a decimal text (a column); NULL for NULL. */
Google__Protobuf__Timestamp *pbtime_from_us_text(arena_t *a, const char *us);
/* Unix microseconds of ts. */
int64_t pbtime_to_us(const Google__Protobuf__Timestamp *ts);

#endif
