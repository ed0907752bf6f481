/* Field checks run before any SQL, so a caller learns every bad field at
 * once (google.rpc.BadRequest) and the schema's CHECKs never fire in normal
 * use. The rules are the schema's constraints, repeated here on purpose. */
#include "identity.h"

#include <pthread.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The seed's email CHECK, as PostgreSQL's ~* (case-insensitive) reads it. */
#define IDENTITY_EMAIL_RE "^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Z|a-z]{2,}$"

static regex_t identity__email_re;
static pthread_once_t identity__email_once = PTHREAD_ONCE_INIT;

static void identity__compile_email(void)
{
    if (regcomp(&identity__email_re, IDENTITY_EMAIL_RE, REG_EXTENDED | REG_ICASE | REG_NOSUB) != 0)
        abort();
}

void identity_validate_username(rpc_call_t *call, const char *field, const char *username)
{
    size_t len = strlen(username);
    if (len < 3 || len > 50) {
        rpc_violation(call, field, "must be 3 to 50 characters");
        return;
    }
    for (size_t i = 0; i < len; i++) {
        char c = username[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-')) {
            rpc_violation(call, field, "may contain only letters, digits, '.', '_' and '-'");
            return;
        }
    }
    /* EraseUser's tombstones are "erased-<id>". */
    if (strncasecmp(username, "erased-", 7) == 0)
        rpc_violation(call, field, "may not begin with \"erased-\" (kept for erased users)");
}

void identity_validate_email(rpc_call_t *call, const char *field, const char *email)
{
    pthread_once(&identity__email_once, identity__compile_email);
    size_t len = strlen(email);
    if (len > 254 || regexec(&identity__email_re, email, 0, NULL, 0) != 0)
        rpc_violation(call, field, "must be a valid email address");
    else if (len >= 15 && strcasecmp(email + len - 15, "@erased.invalid") == 0)
        rpc_violation(call, field, "may not be at erased.invalid (kept for erased users)");
}

void identity_validate_password(rpc_call_t *call, const char *field, const char *password)
{
    size_t len = strlen(password);
    if (len < 12)
        rpc_violation(call, field, "must be at least 12 characters");
    else if (len > 1024)
        rpc_violation(call, field, "must be at most 1024 characters");
}

void identity_validate_full_name(rpc_call_t *call, const char *field, const char *full_name)
{
    if (strlen(full_name) > 255)
        rpc_violation(call, field, "must be at most 255 characters");
}

void identity_validate_role(rpc_call_t *call, const char *field, identity_role_t role)
{
    if (role != ONCEIOT__COMMON__V1__ROLE__ROLE_READONLY &&
        role != ONCEIOT__COMMON__V1__ROLE__ROLE_USER &&
        role != ONCEIOT__COMMON__V1__ROLE__ROLE_ADMIN)
        rpc_violation(call, field, "must be ROLE_READONLY, ROLE_USER or ROLE_ADMIN");
}

int32_t identity_validate_page_size(rpc_call_t *call, const char *field, int32_t page_size)
{
    if (page_size < 0 || page_size > 1000) {
        rpc_violation(call, field, "must be between 0 and 1000");
        return 0;
    }
    return page_size == 0 ? 50 : page_size;
}

/* "admin", or "<resource>:<action>" in lower case ("sims:read"). */
static bool identity__scope_ok(const char *s)
{
    if (strcmp(s, "admin") == 0)
        return true;
    const char *colon = strchr(s, ':');
    if (!colon || colon == s || colon[1] == '\0' || strlen(s) > 64)
        return false;
    for (const char *p = s; *p; p++)
        if (p != colon && !((*p >= 'a' && *p <= 'z') || *p == '_'))
            return false;
    return true;
}

void identity_validate_scopes(rpc_call_t *call, const char *field, char **scopes, size_t n)
{
    if (n > 32) {
        rpc_violation(call, field, "at most 32 scopes");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (!identity__scope_ok(scopes[i])) {
            rpc_violation(call, field, "\"%.64s\" is not a scope (\"sims:read\" or \"admin\")",
                          scopes[i]);
            return;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(scopes[i], scopes[j]) == 0) {
                rpc_violation(call, field, "\"%s\" is listed twice", scopes[i]);
                return;
            }
    }
}

const char *identity_role_name(identity_role_t role)
{
    switch (role) {
    case ONCEIOT__COMMON__V1__ROLE__ROLE_ADMIN:
        return "admin";
    case ONCEIOT__COMMON__V1__ROLE__ROLE_USER:
        return "user";
    case ONCEIOT__COMMON__V1__ROLE__ROLE_READONLY:
        return "readonly";
    default:
        return NULL;
    }
}

identity_role_t identity_role_parse(const char *s)
{
    if (s && strcmp(s, "admin") == 0)
        return ONCEIOT__COMMON__V1__ROLE__ROLE_ADMIN;
    if (s && strcmp(s, "user") == 0)
        return ONCEIOT__COMMON__V1__ROLE__ROLE_USER;
    if (s && strcmp(s, "readonly") == 0)
        return ONCEIOT__COMMON__V1__ROLE__ROLE_READONLY;
    return ONCEIOT__COMMON__V1__ROLE__ROLE_UNSPECIFIED;
}

/* ---- page tokens ---- */

typedef struct identity__page {
    uint8_t last_id[8];     /* little-endian */
    uint8_t fingerprint[8]; /* BLAKE2b of the filters */
} identity__page_t;

static void identity__fingerprint(const char *filters, uint8_t out[8])
{
    crypto_generichash(out, 8, (const uint8_t *)filters, strlen(filters), NULL, 0);
}

char *identity_page_token(arena_t *a, int64_t last_id, const char *filters)
{
    identity__page_t p;
    for (int i = 0; i < 8; i++)
        p.last_id[i] = (uint8_t)((uint64_t)last_id >> (8 * i));
    identity__fingerprint(filters, p.fingerprint);
    size_t len = sodium_base64_ENCODED_LEN(sizeof(p), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char *out = arena_alloc(a, len);
    sodium_bin2base64(out, len, (const uint8_t *)&p, sizeof(p),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return out;
}

bool identity_page_token_parse(rpc_call_t *call, const char *field, const char *token,
                               const char *filters, int64_t *last_id)
{
    *last_id = 0;
    if (token[0] == '\0')
        return true;
    identity__page_t p;
    size_t n = 0;
    const char *end = NULL;
    uint8_t fp[8];
    identity__fingerprint(filters, fp);
    if (sodium_base642bin((uint8_t *)&p, sizeof(p), token, strlen(token), NULL, &n, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        n != sizeof(p) || *end != '\0') {
        rpc_violation(call, field, "is not a page token of this method");
        return false;
    }
    if (sodium_memcmp(fp, p.fingerprint, sizeof(fp)) != 0) {
        rpc_violation(call, field, "was made for other filters; repeat the first request's");
        return false;
    }
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p.last_id[i] << (8 * i);
    *last_id = (int64_t)v;
    return true;
}
