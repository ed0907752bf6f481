/* Validation of ingested batches, and time helpers. */
#include "usage.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* Beyond this many, a refused batch's answer lists no more violations. */
#define MAX_VIOLATIONS 32

int64_t usage_floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

int64_t usage_ts_us(const Google__Protobuf__Timestamp *ts)
{
    return ts ? (int64_t)ts->seconds * 1000000 + ts->nanos / 1000 : 0;
}

Google__Protobuf__Timestamp *usage_ts(arena_t *a, int64_t us)
{
    Google__Protobuf__Timestamp *ts = arena_alloc(a, sizeof(*ts));
    google__protobuf__timestamp__init(ts);
    ts->seconds = usage_floor_div(us, 1000000);
    ts->nanos = (int32_t)((us - ts->seconds * 1000000) * 1000);
    return ts;
}

const char *usage_ts_text(arena_t *a, int64_t us)
{
    time_t s = (time_t)usage_floor_div(us, 1000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    return arena_printf(a, "%04d-%02d-%02d %02d:%02d:%02d.%06lld+00", tm.tm_year + 1900,
                        tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                        (long long)(us - (int64_t)s * 1000000));
}

const char *usage_day_text(arena_t *a, int64_t day)
{
    time_t s = (time_t)(day * 86400);
    struct tm tm;
    gmtime_r(&s, &tm);
    return arena_printf(a, "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
}

static bool usage__digits(const char *s, size_t min, size_t max)
{
    size_t n = strlen(s);
    if (n < min || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

bool usage_valid_iccid(rpc_call_t *call, const char *field, const char *iccid)
{
    if (!iccid[0])
        rpc_violation(call, field, "is required");
    else if (!usage__digits(iccid, 19, 20))
        rpc_violation(call, field, "must be 19 or 20 digits");
    else
        return true;
    return false;
}

static const char *const rats[] = {"2G", "3G", "LTE", "LTE-M", "NB-IoT", "5G"};

/* One record's problems, each as a violation on records[i].<field>; returns
 * how many it found. */
static int usage__check_record(rpc_call_t *call, size_t i, const Onceiot__Usage__V1__UsageRecord *r,
                               int64_t now_us)
{
    arena_t *a = rpc_call_arena(call);
    int bad = 0;
#define BAD(field, ...)                                                                            \
    do {                                                                                           \
        rpc_violation(call, arena_printf(a, "records[%zu]." field, i), __VA_ARGS__);               \
        bad++;                                                                                     \
    } while (0)
    if (!usage_valid_iccid(call, arena_printf(a, "records[%zu].iccid", i), r->iccid))
        bad++;
    if (!r->timestamp) {
        BAD("timestamp", "is required");
    } else {
        int64_t us = usage_ts_us(r->timestamp);
        if (us > now_us + USAGE_FUTURE_US)
            BAD("timestamp", "is more than 5 minutes in the future");
        else if (us < now_us - (int64_t)USAGE_RETENTION_DAYS * 86400 * 1000000)
            BAD("timestamp", "is older than the retention of %d days", USAGE_RETENTION_DAYS);
    }
    if (r->volume_rx < 0)
        BAD("volume_rx", "must not be negative");
    if (r->volume_tx < 0)
        BAD("volume_tx", "must not be negative");
    if (r->volume_rx > INT64_MAX / 4 || r->volume_tx > INT64_MAX / 4)
        BAD("volume_rx", "is too large");
    if (r->sms_mo < 0)
        BAD("sms_mo", "must not be negative");
    if (r->sms_mt < 0)
        BAD("sms_mt", "must not be negative");
    if (r->session_count < 0)
        BAD("session_count", "must not be negative");
    if (r->total_volume != 0 && r->total_volume != r->volume_rx + r->volume_tx)
        BAD("total_volume", "is derived (volume_rx + volume_tx); leave it unset");
    if (r->mcc[0] && !usage__digits(r->mcc, 3, 3))
        BAD("mcc", "must be 3 digits");
    if (r->mnc[0] && (!usage__digits(r->mnc, 2, 3) || !r->mcc[0]))
        BAD("mnc", "must be 2 or 3 digits, with mcc");
    if (r->country[0] && (strlen(r->country) != 2 || r->country[0] < 'A' || r->country[0] > 'Z' ||
                          r->country[1] < 'A' || r->country[1] > 'Z'))
        BAD("country", "must be an ISO 3166-1 alpha-2 code in capitals, like DE");
    if (r->rat[0]) {
        bool known = false;
        for (size_t k = 0; k < sizeof(rats) / sizeof(rats[0]); k++)
            known |= strcmp(r->rat, rats[k]) == 0;
        if (!known)
            BAD("rat", "must be one of 2G, 3G, LTE, LTE-M, NB-IoT, 5G");
    }
#undef BAD
    return bad;
}

bool usage_valid_batch(rpc_call_t *call, const Onceiot__Usage__V1__IngestUsageBatchRequest *b,
                       int64_t now_us)
{
    int bad = 0;
    size_t blen = strlen(b->batch_id);
    if (blen == 0 || blen > USAGE_MAX_BATCH_ID) {
        rpc_violation(call, "batch_id", "must be 1 to %d characters", USAGE_MAX_BATCH_ID);
        bad++;
    }
    if (b->n_records == 0 || b->n_records > USAGE_MAX_RECORDS) {
        rpc_violation(call, "records", "must hold 1 to %d records (got %zu)", USAGE_MAX_RECORDS,
                      b->n_records);
        return false;
    }
    for (size_t i = 0; i < b->n_records && bad < MAX_VIOLATIONS; i++)
        bad += usage__check_record(call, i, b->records[i], now_us);
    return bad == 0;
}
