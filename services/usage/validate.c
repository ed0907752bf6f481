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

const char *usage_field_name(arena_t *a, usage_at_t at, const char *field)
{
    return at.list ? arena_printf(a, "%s[%zu].%s", at.list, at.i, field) : field;
}

bool usage_valid_iccid(rpc_call_t *call, usage_at_t at, const char *field, const char *iccid)
{
    if (iccid[0] && usage__digits(iccid, 19, 20))
        return true;
    rpc_violation(call, usage_field_name(rpc_call_arena(call), at, field),
                  iccid[0] ? "must be 19 or 20 digits" : "is required");
    return false;
}

static const char *const rats[] = {"2G", "3G", "LTE", "LTE-M", "NB-IoT", "5G"};

/* One record's problems, each as a violation on records[i].<field>; returns
 * how many it found. */
static int usage__check_record(rpc_call_t *call, size_t i, const Onceiot__Usage__V1__UsageRecord *r,
                               int64_t now_us)
{
    arena_t *a = rpc_call_arena(call);
    const usage_at_t at = {"records", i};
    int bad = 0;
#define BAD(field, ...)                                                                            \
    do {                                                                                           \
        rpc_violation(call, usage_field_name(a, at, field), __VA_ARGS__);                          \
        bad++;                                                                                     \
    } while (0)
    if (!usage_valid_iccid(call, at, "iccid", r->iccid))
        bad++;
    if (!usage_check_time(call, at, "timestamp", r->timestamp, now_us, USAGE_RETENTION_DAYS))
        bad++;
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
    const usage_network_t net = {r->mcc, r->mnc, r->country, r->rat};
    bad += usage_check_network(call, at, "country", &net);
#undef BAD
    return bad;
}

bool usage_check_time(rpc_call_t *call, usage_at_t at, const char *field,
                      const Google__Protobuf__Timestamp *ts, int64_t now_us, int retention_days)
{
    int64_t us = usage_ts_us(ts);
    bool future = ts && us > now_us + USAGE_FUTURE_US;
    bool late = ts && us < now_us - (int64_t)retention_days * 86400 * 1000000;
    if (ts && !future && !late)
        return true;
    const char *name = usage_field_name(rpc_call_arena(call), at, field);
    if (!ts)
        rpc_violation(call, name, "is required");
    else if (future)
        rpc_violation(call, name, "is more than 5 minutes in the future");
    else
        rpc_violation(call, name, "is older than the retention of %d days", retention_days);
    return false;
}

int usage_check_network(rpc_call_t *call, usage_at_t at, const char *country_field,
                        const usage_network_t *n)
{
    arena_t *a = rpc_call_arena(call);
    int bad = 0;
#define BAD(field, ...)                                                                            \
    do {                                                                                           \
        rpc_violation(call, usage_field_name(a, at, field), __VA_ARGS__);                          \
        bad++;                                                                                     \
    } while (0)
    if (n->mcc[0] && !usage__digits(n->mcc, 3, 3))
        BAD("mcc", "must be 3 digits");
    if (n->mnc[0] && (!usage__digits(n->mnc, 2, 3) || !n->mcc[0]))
        BAD("mnc", "must be 2 or 3 digits, with mcc");
    if (n->country[0] && (strlen(n->country) != 2 || n->country[0] < 'A' || n->country[0] > 'Z' ||
                          n->country[1] < 'A' || n->country[1] > 'Z'))
        BAD(country_field, "must be an ISO 3166-1 alpha-2 code in capitals, like DE");
    if (n->rat[0]) {
        bool known = false;
        for (size_t k = 0; k < sizeof(rats) / sizeof(rats[0]); k++)
            known |= strcmp(n->rat, rats[k]) == 0;
        if (!known)
            BAD("rat", "must be one of 2G, 3G, LTE, LTE-M, NB-IoT, 5G");
    }
#undef BAD
    return bad;
}

int usage_check_batch_shape(rpc_call_t *call, const char *batch_id, const char *items, size_t n)
{
    int bad = 0;
    size_t blen = strlen(batch_id);
    if (blen == 0 || blen > USAGE_MAX_BATCH_ID) {
        rpc_violation(call, "batch_id", "must be 1 to %d characters", USAGE_MAX_BATCH_ID);
        bad++;
    }
    if (n == 0 || n > USAGE_MAX_RECORDS) {
        rpc_violation(call, items, "must hold 1 to %d %s (got %zu)", USAGE_MAX_RECORDS, items, n);
        return -1;
    }
    return bad;
}

bool usage_valid_batch(rpc_call_t *call, const Onceiot__Usage__V1__IngestUsageBatchRequest *b,
                       int64_t now_us)
{
    int bad = usage_check_batch_shape(call, b->batch_id, "records", b->n_records);
    if (bad < 0)
        return false;
    for (size_t i = 0; i < b->n_records && bad < MAX_VIOLATIONS; i++)
        bad += usage__check_record(call, i, b->records[i], now_us);
    return bad == 0;
}
