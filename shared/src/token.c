/* PASETO v4.public login tokens; see onceiot/token.h and
 * https://github.com/paseto-standard/paseto-spec (Version4.md, Common.md).
 *
 * Verification works on the stack only: tokens are small, bounded here, and
 * the gateway verifies one per call. */
#include "onceiot/token.h"

#include "token_int.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TOKEN_HEADER      "v4.public."
#define TOKEN_HEADER_LEN  (sizeof(TOKEN_HEADER) - 1)
#define TOKEN_MAX_LEN     4096 /* whole token, characters */
#define TOKEN_MAX_MESSAGE 1024 /* claims JSON, bytes */
#define TOKEN_MAX_FOOTER  256  /* footer JSON, bytes */
#define TOKEN_B64         sodium_base64_VARIANT_URLSAFE_NO_PADDING

void token_kid(const uint8_t public_key[32], char kid[40])
{
    uint8_t h[32];
    crypto_generichash(h, sizeof(h), public_key, 32, NULL, 0);
    memcpy(kid, "k1.", 3);
    sodium_bin2hex(kid + 3, 40 - 3, h, 8);
}

/* ---- PAE (pre-authentication encoding) ---- */

static size_t token__pae_len(size_t message_len, size_t footer_len)
{
    /* count, then length + bytes of header, message, footer and the empty
     * implicit assertion */
    return 8 + 8 + TOKEN_HEADER_LEN + 8 + message_len + 8 + footer_len + 8;
}

static uint8_t *token__le64(uint8_t *p, uint64_t n)
{
    /* The spec clears the top bit so the value also reads as a signed int. */
    n &= UINT64_MAX >> 1;
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(n & 0xff);
        n >>= 8;
    }
    return p + 8;
}

static uint8_t *token__piece(uint8_t *p, const uint8_t *data, size_t len)
{
    p = token__le64(p, len);
    if (len)
        memcpy(p, data, len);
    return p + len;
}

/* Writes the PAE of the four pieces into out (token__pae_len bytes). */
static void token__pae(uint8_t *out, const uint8_t *message, size_t message_len,
                       const uint8_t *footer, size_t footer_len)
{
    uint8_t *p = token__le64(out, 4);
    p = token__piece(p, (const uint8_t *)TOKEN_HEADER, TOKEN_HEADER_LEN);
    p = token__piece(p, message, message_len);
    p = token__piece(p, footer, footer_len);
    token__piece(p, NULL, 0);
}

char *token__sign_raw(const uint8_t secret_key[64], const uint8_t *message, size_t message_len,
                      const uint8_t *footer, size_t footer_len, arena_t *a)
{
    uint8_t *pae = arena_alloc(a, token__pae_len(message_len, footer_len));
    token__pae(pae, message, message_len, footer, footer_len);
    size_t body_len = message_len + crypto_sign_BYTES;
    uint8_t *body = arena_alloc(a, body_len);
    memcpy(body, message, message_len);
    crypto_sign_detached(body + message_len, NULL, pae, token__pae_len(message_len, footer_len),
                         secret_key);

    size_t body_b64 = sodium_base64_ENCODED_LEN(body_len, TOKEN_B64);
    size_t footer_b64 = footer_len ? sodium_base64_ENCODED_LEN(footer_len, TOKEN_B64) : 0;
    char *out = arena_alloc(a, TOKEN_HEADER_LEN + body_b64 + 1 + footer_b64 + 1);
    memcpy(out, TOKEN_HEADER, TOKEN_HEADER_LEN);
    sodium_bin2base64(out + TOKEN_HEADER_LEN, body_b64, body, body_len, TOKEN_B64);
    if (footer_len) {
        char *f = out + strlen(out);
        *f++ = '.';
        sodium_bin2base64(f, footer_b64, footer, footer_len, TOKEN_B64);
    }
    return out;
}

/* Decodes exactly the base64url text [s, s+len) into out (at most cap
 * bytes). Returns the decoded length, or -1 when the text is not canonical
 * unpadded base64url or does not fit. */
static long token__unb64(const char *s, size_t len, uint8_t *out, size_t cap)
{
    size_t n = 0;
    const char *end = NULL;
    if (sodium_base642bin(out, cap, s, len, NULL, &n, &end, TOKEN_B64) != 0 || end != s + len)
        return -1;
    return (long)n;
}

/* Splits a token into its base64 body and footer (footer_len 0 when absent)
 * and decodes the footer. Returns 0 or ERR_UNAUTHENTICATED. */
static int token__split(const char *token, const char **body, size_t *body_len, uint8_t *footer,
                        size_t *footer_len, const char **why)
{
    size_t len = strnlen(token, TOKEN_MAX_LEN + 1);
    if (len > TOKEN_MAX_LEN || len < TOKEN_HEADER_LEN ||
        memcmp(token, TOKEN_HEADER, TOKEN_HEADER_LEN) != 0) {
        *why = "not a v4.public token";
        return ERR_UNAUTHENTICATED;
    }
    *body = token + TOKEN_HEADER_LEN;
    const char *dot = memchr(*body, '.', len - TOKEN_HEADER_LEN);
    *body_len = dot ? (size_t)(dot - *body) : len - TOKEN_HEADER_LEN;
    *footer_len = 0;
    if (dot) {
        size_t f_len = len - (size_t)(dot + 1 - token);
        long n = f_len ? token__unb64(dot + 1, f_len, footer, TOKEN_MAX_FOOTER) : -1;
        if (n <= 0) {
            *why = "the token's footer is malformed";
            return ERR_UNAUTHENTICATED;
        }
        *footer_len = (size_t)n;
    }
    return 0;
}

/* Checks the body's signature with public_key over the PAE; on success the
 * message is in message[0..*message_len). */
static int token__open(const uint8_t public_key[32], const char *body, size_t body_len,
                       const uint8_t *footer, size_t footer_len, uint8_t *message,
                       size_t *message_len, const char **why)
{
    uint8_t raw[TOKEN_MAX_MESSAGE + crypto_sign_BYTES];
    long n = token__unb64(body, body_len, raw, sizeof(raw));
    if (n < (long)crypto_sign_BYTES) {
        *why = "the token's body is malformed";
        return ERR_UNAUTHENTICATED;
    }
    size_t m_len = (size_t)n - crypto_sign_BYTES;
    uint8_t pae[8 + 8 + TOKEN_HEADER_LEN + 8 + TOKEN_MAX_MESSAGE + 8 + TOKEN_MAX_FOOTER + 8];
    token__pae(pae, raw, m_len, footer, footer_len);
    if (crypto_sign_verify_detached(raw + m_len, pae, token__pae_len(m_len, footer_len),
                                    public_key) != 0) {
        *why = "the token's signature does not verify";
        return ERR_UNAUTHENTICATED;
    }
    memcpy(message, raw, m_len);
    *message_len = m_len;
    return 0;
}

int token__open_raw(const uint8_t public_key[32], const char *token, arena_t *a, uint8_t **message,
                    size_t *message_len, uint8_t **footer, size_t *footer_len, const char **why)
{
    const char *body;
    size_t body_len;
    uint8_t f[TOKEN_MAX_FOOTER], m[TOKEN_MAX_MESSAGE];
    int rc = token__split(token, &body, &body_len, f, footer_len, why);
    if (rc < 0)
        return rc;
    rc = token__open(public_key, body, body_len, f, *footer_len, m, message_len, why);
    if (rc < 0)
        return rc;
    *message = arena_alloc(a, *message_len + 1);
    memcpy(*message, m, *message_len);
    *footer = arena_alloc(a, *footer_len + 1);
    memcpy(*footer, f, *footer_len);
    return 0;
}

/* ---- the claims and footer JSON: a strict parser for what we write ---- */

typedef struct token__field {
    const char *key;
    bool is_bool;
    char *str; /* string value, NUL-terminated */
    size_t cap;
    bool *boolean;
    bool seen;
} token__field_t;

typedef struct token__json {
    const uint8_t *p, *end;
} token__json_t;

static void token__ws(token__json_t *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int token__hex4(const uint8_t *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int c = p[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Reads a JSON string into out (cap bytes with the NUL). Only ASCII escapes
 * are accepted: our writer never produces anything else. */
static bool token__string(token__json_t *j, char *out, size_t cap)
{
    if (j->p >= j->end || *j->p != '"')
        return false;
    j->p++;
    size_t n = 0;
    while (j->p < j->end && *j->p != '"') {
        int c = *j->p++;
        if (c < 0x20)
            return false;
        if (c == '\\') {
            if (j->p >= j->end)
                return false;
            int e = *j->p++;
            if (e == '"' || e == '\\' || e == '/')
                c = e;
            else if (e == 'u' && j->end - j->p >= 4 && (c = token__hex4(j->p)) > 0 && c < 0x80)
                j->p += 4;
            else
                return false;
        }
        if (n + 1 >= cap)
            return false;
        out[n++] = (char)c;
    }
    if (j->p >= j->end)
        return false;
    j->p++;
    out[n] = '\0';
    return true;
}

static bool token__literal(token__json_t *j, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
        return false;
    j->p += n;
    return true;
}

/* Parses one flat JSON object whose keys are exactly the fields given (each
 * once, no others) with string or boolean values as declared. */
static bool token__object(const uint8_t *data, size_t len, token__field_t *fields, size_t n)
{
    token__json_t j = {data, data + len};
    token__ws(&j);
    if (j.p >= j.end || *j.p++ != '{')
        return false;
    for (;;) {
        token__ws(&j);
        char key[16];
        if (!token__string(&j, key, sizeof(key)))
            return false;
        token__field_t *f = NULL;
        for (size_t i = 0; i < n && !f; i++)
            if (strcmp(fields[i].key, key) == 0)
                f = &fields[i];
        if (!f || f->seen)
            return false;
        f->seen = true;
        token__ws(&j);
        if (j.p >= j.end || *j.p++ != ':')
            return false;
        token__ws(&j);
        if (f->is_bool) {
            if (token__literal(&j, "true"))
                *f->boolean = true;
            else if (token__literal(&j, "false"))
                *f->boolean = false;
            else
                return false;
        } else if (!token__string(&j, f->str, f->cap)) {
            return false;
        }
        token__ws(&j);
        if (j.p >= j.end)
            return false;
        if (*j.p == '}') {
            j.p++;
            break;
        }
        if (*j.p++ != ',')
            return false;
    }
    token__ws(&j);
    for (size_t i = 0; i < n; i++)
        if (!fields[i].seen)
            return false;
    return j.p == j.end;
}

/* A positive decimal int64 without sign or leading zeros. */
static bool token__id(const char *s, int64_t *out)
{
    size_t len = strlen(s);
    if (len == 0 || len > 19 || s[0] == '0')
        return false;
    int64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9' || v > (INT64_MAX - (s[i] - '0')) / 10)
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

/* Exactly "YYYY-MM-DDTHH:MM:SSZ", a real date, as unix seconds. */
/* Parses RFC 3339 UTC "YYYY-MM-DDTHH:MM:SSZ", or with milliseconds when
 * with_ms ("YYYY-MM-DDTHH:MM:SS.mmmZ", also accepting the whole-second form),
 * into unix seconds, or milliseconds when with_ms. */
static bool token__time(const char *s, bool with_ms, int64_t *out)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:ddZ";
    static const char shape_ms[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    size_t n = strlen(s);
    const char *want_shape;
    if (n == sizeof(shape) - 1)
        want_shape = shape;
    else if (with_ms && n == sizeof(shape_ms) - 1)
        want_shape = shape_ms;
    else
        return false;
    for (size_t i = 0; want_shape[i]; i++)
        if (want_shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != want_shape[i])
            return false;
    struct tm tm = {0};
    tm.tm_year = atoi(s) - 1900;
    tm.tm_mon = atoi(s + 5) - 1;
    tm.tm_mday = atoi(s + 8);
    tm.tm_hour = atoi(s + 11);
    tm.tm_min = atoi(s + 14);
    tm.tm_sec = atoi(s + 17);
    struct tm want = tm;
    time_t t = timegm(&tm);
    /* timegm normalises 30 February into March; a real date survives. */
    if (tm.tm_year != want.tm_year || tm.tm_mon != want.tm_mon || tm.tm_mday != want.tm_mday ||
        tm.tm_hour != want.tm_hour || tm.tm_min != want.tm_min || tm.tm_sec != want.tm_sec)
        return false;
    *out = (int64_t)t;
    if (with_ms)
        *out = *out * 1000 + (want_shape == shape_ms ? atoi(s + 20) : 0);
    return true;
}

/* Formats unix milliseconds (with_ms) or seconds as RFC 3339 UTC. */
static void token__format_time(int64_t t, bool with_ms, char out[32])
{
    time_t tt = (time_t)(with_ms ? t / 1000 : t);
    struct tm tm;
    gmtime_r(&tt, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    if (with_ms)
        snprintf(out + n, 32 - n, ".%03dZ", (int)(t % 1000));
    else
        snprintf(out + n, 32 - n, "Z");
}

static const char *token__role_name(Onceiot__Common__V1__Role role)
{
    switch (role) {
    case ONCEIOT__COMMON__V1__ROLE__ROLE_ADMIN:
        return "admin";
    case ONCEIOT__COMMON__V1__ROLE__ROLE_USER:
        return "user";
    default:
        return "readonly";
    }
}

static bool token__parse_claims(const uint8_t *m, size_t len, token_claims_t *c)
{
    char sub[24], org[24], role[16], iat[32], exp[32];
    bool su = false;
    token__field_t f[] = {
        {"sub", false, sub, sizeof(sub), NULL, false},
        {"usr", false, c->username, sizeof(c->username), NULL, false},
        {"org", false, org, sizeof(org), NULL, false},
        {"role", false, role, sizeof(role), NULL, false},
        {"su", true, NULL, 0, &su, false},
        {"iat", false, iat, sizeof(iat), NULL, false},
        {"exp", false, exp, sizeof(exp), NULL, false},
    };
    if (!token__object(m, len, f, sizeof(f) / sizeof(f[0])) || !token__id(sub, &c->user_id) ||
        !token__id(org, &c->organization_id) || !token__time(iat, true, &c->issued_at_ms) ||
        !token__time(exp, false, &c->expires_at) || c->username[0] == '\0')
        return false;
    if (strcmp(role, "admin") == 0)
        c->role = ONCEIOT__COMMON__V1__ROLE__ROLE_ADMIN;
    else if (strcmp(role, "user") == 0)
        c->role = ONCEIOT__COMMON__V1__ROLE__ROLE_USER;
    else if (strcmp(role, "readonly") == 0)
        c->role = ONCEIOT__COMMON__V1__ROLE__ROLE_READONLY;
    else
        return false;
    c->is_superuser = su;
    return true;
}

/* Appends s as JSON string content: quotes, backslashes and control
 * characters escaped. Returns the new length, or cap when it does not fit. */
static size_t token__escape(char *out, size_t at, size_t cap, const char *s)
{
    for (; *s && at < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            at += (size_t)snprintf(out + at, cap - at, "\\%c", c);
        else if (c < 0x20)
            at += (size_t)snprintf(out + at, cap - at, "\\u%04x", c);
        else
            out[at++] = (char)c;
    }
    return at < cap ? at : cap;
}

char *token_sign(const uint8_t secret_key[64], const token_claims_t *claims, arena_t *a)
{
    char iat[32], exp[32], usr[sizeof(claims->username) * 6 + 1];
    token__format_time(claims->issued_at_ms, true, iat);
    token__format_time(claims->expires_at, false, exp);
    size_t n = token__escape(usr, 0, sizeof(usr) - 1, claims->username);
    usr[n] = '\0';
    char *m = arena_printf(a,
                           "{\"sub\":\"%lld\",\"usr\":\"%s\",\"org\":\"%lld\",\"role\":\"%s\","
                           "\"su\":%s,\"iat\":\"%s\",\"exp\":\"%s\"}",
                           (long long)claims->user_id, usr, (long long)claims->organization_id,
                           token__role_name(claims->role), claims->is_superuser ? "true" : "false",
                           iat, exp);
    uint8_t pk[32];
    crypto_sign_ed25519_sk_to_pk(pk, secret_key);
    char kid[40];
    token_kid(pk, kid);
    char *footer = arena_printf(a, "{\"kid\":\"%s\"}", kid);
    return token__sign_raw(secret_key, (const uint8_t *)m, strlen(m), (const uint8_t *)footer,
                           strlen(footer), a);
}

int token_verify(const token_key_t *keys, size_t n_keys, const char *token, int64_t now,
                 token_claims_t *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    const char *body;
    size_t body_len, footer_len, m_len;
    uint8_t footer[TOKEN_MAX_FOOTER], m[TOKEN_MAX_MESSAGE];
    int rc = token__split(token ? token : "", &body, &body_len, footer, &footer_len, why);
    if (rc < 0)
        return rc;
    token__field_t kid = {"kid", false, out->kid, sizeof(out->kid), NULL, false};
    if (footer_len == 0 || !token__object(footer, footer_len, &kid, 1)) {
        *why = "the token's footer carries no key id";
        return ERR_UNAUTHENTICATED;
    }
    const token_key_t *key = NULL;
    for (size_t i = 0; i < n_keys && !key; i++)
        if (strcmp(keys[i].kid, out->kid) == 0)
            key = &keys[i];
    if (!key) {
        *why = "the token was signed by an unknown key";
        return ERR_UNAUTHENTICATED;
    }
    rc = token__open(key->public_key, body, body_len, footer, footer_len, m, &m_len, why);
    if (rc < 0)
        return rc;
    if (!token__parse_claims(m, m_len, out)) {
        *why = "the token's claims are malformed";
        return ERR_UNAUTHENTICATED;
    }
    if (out->issued_at_ms / 1000 > now + TOKEN_CLOCK_SKEW_S) {
        *why = "the token is not valid yet";
        return ERR_UNAUTHENTICATED;
    }
    if (now >= out->expires_at) {
        *why = "the token has expired";
        return ERR_UNAUTHENTICATED;
    }
    return 0;
}
