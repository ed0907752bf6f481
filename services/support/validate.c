/* Names as stored and the proto enums, and the checks of request fields. */
#include "support.h"

#include <string.h>

/* Index i of each table is the enum value i; [0] (unspecified) is NULL. */
static const char *const status_names[] = {NULL, "open", "in_progress", "resolved", "closed"};
static const char *const priority_names[] = {NULL, "low", "medium", "high", "critical"};
static const char *const category_names[] = {NULL,      "general", "connectivity", "sim_management",
                                             "billing", "orders",  "api"};

#define N(t) (sizeof(t) / sizeof((t)[0]))

static const char *support__name(const char *const *names, size_t n, int v)
{
    return v > 0 && (size_t)v < n ? names[v] : NULL;
}

static int support__enum(const char *const *names, size_t n, const char *name)
{
    for (size_t i = 1; name && i < n; i++)
        if (strcmp(names[i], name) == 0)
            return (int)i;
    return 0;
}

const char *support_status_name(Onceiot__Support__V1__TicketStatus s)
{
    return support__name(status_names, N(status_names), (int)s);
}

Onceiot__Support__V1__TicketStatus support_status_enum(const char *name)
{
    return (Onceiot__Support__V1__TicketStatus)support__enum(status_names, N(status_names), name);
}

const char *support_priority_name(Onceiot__Support__V1__TicketPriority p)
{
    return support__name(priority_names, N(priority_names), (int)p);
}

Onceiot__Support__V1__TicketPriority support_priority_enum(const char *name)
{
    return (Onceiot__Support__V1__TicketPriority)support__enum(priority_names, N(priority_names),
                                                               name);
}

const char *support_category_name(Onceiot__Support__V1__TicketCategory c)
{
    return support__name(category_names, N(category_names), (int)c);
}

Onceiot__Support__V1__TicketCategory support_category_enum(const char *name)
{
    return (Onceiot__Support__V1__TicketCategory)support__enum(category_names, N(category_names),
                                                               name);
}

bool support_valid_id(rpc_call_t *call, const char *field, int64_t id)
{
    if (id > 0)
        return true;
    rpc_violation(call, field, "must be positive");
    return false;
}

/* Code points of a UTF-8 string, or -1 when it is not valid UTF-8. */
static long support__chars(const char *s)
{
    long n = 0;
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int len = *p < 0x80         ? 1
                  : (*p >> 5) == 6  ? 2
                  : (*p >> 4) == 14 ? 3
                  : (*p >> 3) == 30 ? 4
                                    : 0;
        if (len == 0)
            return -1;
        for (int i = 1; i < len; i++)
            if ((p[i] & 0xC0) != 0x80)
                return -1;
        p += len;
        n++;
    }
    return n;
}

bool support_valid_text(rpc_call_t *call, const char *field, const char *s, size_t min, size_t max)
{
    long n = support__chars(s ? s : "");
    if (n < 0) {
        rpc_violation(call, field, "must be UTF-8");
        return false;
    }
    if ((size_t)n < min || (size_t)n > max) {
        if (min > 0)
            rpc_violation(call, field, "must be %zu to %zu characters", min, max);
        else
            rpc_violation(call, field, "must be at most %zu characters", max);
        return false;
    }
    return true;
}

bool support_valid_subject(rpc_call_t *call, const char *field, const char *s)
{
    if (!support_valid_text(call, field, s, 1, 255))
        return false;
    if (strspn(s, " \t\r\n") == strlen(s)) {
        rpc_violation(call, field, "must not be blank");
        return false;
    }
    return true;
}

bool support_valid_external_id(rpc_call_t *call, const char *field, const char *s)
{
    size_t n = strlen(s);
    if (n == 0)
        return true; /* none */
    if (n > 100 ||
        strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:#/-") != n) {
        rpc_violation(call, field, "must be 1 to 100 characters of [A-Za-z0-9._:#/-]");
        return false;
    }
    return true;
}

bool support_valid_iccids(rpc_call_t *call, const char *field, char **iccids, size_t n)
{
    bool ok = true;
    if (n > 100) {
        rpc_violation(call, field, "at most 100 ICCIDs");
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(iccids[i]);
        const char *f = arena_printf(rpc_call_arena(call), "%s[%zu]", field, i);
        if (len < 19 || len > 20 || strspn(iccids[i], "0123456789") != len) {
            rpc_violation(call, f, "must be 19 or 20 digits");
            ok = false;
            continue;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(iccids[i], iccids[j]) == 0) {
                rpc_violation(call, f, "repeats %s", iccids[i]);
                ok = false;
                break;
            }
    }
    return ok;
}
