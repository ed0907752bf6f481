/* PASETO v4.public login tokens: signing, verification, and the spec's own
 * test vectors. */
#include "../../shared/src/token_int.h"
#include "onceiot/token.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <sodium.h>
#include <string.h>

#define NOW 1795622400 /* 2026-11-25T16:00:00Z */

static uint8_t pk[32], sk[64], other_pk[32], other_sk[64];
static token_key_t key, other_key;
static arena_t *arena;

static void setup(void)
{
    cr_assert(sodium_init() >= 0);
    crypto_sign_keypair(pk, sk);
    crypto_sign_keypair(other_pk, other_sk);
    token_kid(pk, key.kid);
    memcpy(key.public_key, pk, 32);
    token_kid(other_pk, other_key.kid);
    memcpy(other_key.public_key, other_pk, 32);
    arena = arena_new();
}

static void teardown(void)
{
    arena_free(arena);
}

TestSuite(token, .init = setup, .fini = teardown);

static token_claims_t sample(void)
{
    token_claims_t c;
    memset(&c, 0, sizeof(c));
    c.user_id = 42;
    strcpy(c.username, "alice");
    c.organization_id = 7;
    c.role = ONCEIOT__COMMON__V1__ROLE__ROLE_ADMIN;
    c.is_superuser = true;
    c.issued_at_ms = NOW * 1000LL;
    c.expires_at = NOW + 900;
    return c;
}

static int verify(const char *tok, int64_t now, token_claims_t *out, const char **why)
{
    return token_verify(&key, 1, tok, now, out, why);
}

Test(token, kid_is_k1_and_sixteen_hex_digits)
{
    cr_assert_eq(strlen(key.kid), 19);
    cr_assert_eq(strncmp(key.kid, "k1.", 3), 0);
    cr_assert_neq(strcmp(key.kid, other_key.kid), 0);
}

Test(token, round_trip_keeps_every_claim)
{
    token_claims_t c = sample();
    char *tok = token_sign(sk, &c, arena);
    cr_assert_eq(strncmp(tok, "v4.public.", 10), 0);
    token_claims_t out;
    const char *why = NULL;
    cr_assert_eq(verify(tok, NOW + 10, &out, &why), 0, "%s", why);
    cr_assert_eq(out.user_id, 42);
    cr_assert_str_eq(out.username, "alice");
    cr_assert_eq(out.organization_id, 7);
    cr_assert_eq(out.role, ONCEIOT__COMMON__V1__ROLE__ROLE_ADMIN);
    cr_assert(out.is_superuser);
    cr_assert_eq(out.issued_at_ms, NOW * 1000LL);
    cr_assert_eq(out.expires_at, NOW + 900);
    cr_assert_str_eq(out.kid, key.kid);
}

Test(token, issue_time_keeps_its_milliseconds)
{
    token_claims_t c = sample();
    c.issued_at_ms = NOW * 1000LL + 123;
    char *tok = token_sign(sk, &c, arena);
    token_claims_t out;
    const char *why;
    cr_assert_eq(token_verify(&key, 1, tok, NOW, &out, &why), 0, "%s", why);
    cr_assert_eq(out.issued_at_ms, NOW * 1000LL + 123);
}

Test(token, claims_are_the_documented_json)
{
    token_claims_t c = sample();
    c.role = ONCEIOT__COMMON__V1__ROLE__ROLE_READONLY;
    c.is_superuser = false;
    char *tok = token_sign(sk, &c, arena);
    uint8_t *m, *f;
    size_t m_len, f_len;
    const char *why;
    cr_assert_eq(token__open_raw(pk, tok, arena, &m, &m_len, &f, &f_len, &why), 0);
    m[m_len] = '\0';
    f[f_len] = '\0';
    cr_assert_str_eq((char *)m,
                     "{\"sub\":\"42\",\"usr\":\"alice\",\"org\":\"7\",\"role\":\"readonly\","
                     "\"su\":false,\"iat\":\"2026-11-25T16:00:00.000Z\",\"exp\":"
                     "\"2026-11-25T16:15:00Z\"}");
    char want[64];
    snprintf(want, sizeof(want), "{\"kid\":\"%s\"}", key.kid);
    cr_assert_str_eq((char *)f, want);
}

Test(token, username_with_quotes_is_escaped_and_survives)
{
    token_claims_t c = sample();
    strcpy(c.username, "a\"b\\c");
    char *tok = token_sign(sk, &c, arena);
    token_claims_t out;
    const char *why = NULL;
    cr_assert_eq(verify(tok, NOW, &out, &why), 0, "%s", why);
    cr_assert_str_eq(out.username, "a\"b\\c");
}

/* Flips one base64 character at position pos (from the start, or from the
 * end when negative). */
static char *flip(const char *tok, long pos)
{
    char *t = arena_strdup(arena, tok);
    size_t i = pos >= 0 ? (size_t)pos : strlen(t) + (size_t)pos;
    t[i] = t[i] == 'A' ? 'B' : 'A';
    return t;
}

Test(token, tampered_message_is_refused)
{
    token_claims_t c = sample();
    char *tok = token_sign(sk, &c, arena);
    token_claims_t out;
    const char *why;
    cr_assert_eq(verify(flip(tok, 14), NOW, &out, &why), ERR_UNAUTHENTICATED);
    cr_assert_str_eq(why, "the token's signature does not verify");
}

Test(token, tampered_signature_is_refused)
{
    token_claims_t c = sample();
    char *tok = token_sign(sk, &c, arena);
    const char *dot = strrchr(tok, '.');
    token_claims_t out;
    const char *why;
    cr_assert_eq(verify(flip(tok, (long)(dot - tok) - 5), NOW, &out, &why), ERR_UNAUTHENTICATED);
}

Test(token, tampered_footer_is_refused)
{
    token_claims_t c = sample();
    char *tok = token_sign(sk, &c, arena);
    token_claims_t out;
    const char *why;
    cr_assert_eq(verify(flip(tok, -3), NOW, &out, &why), ERR_UNAUTHENTICATED);
    /* A footer naming the right kid but re-encoded with spaces changes the
     * signed bytes. */
    char *body = arena_strndup(arena, tok, (size_t)(strrchr(tok, '.') - tok));
    char footer[64], b64[128];
    snprintf(footer, sizeof(footer), "{ \"kid\":\"%s\"}", key.kid);
    sodium_bin2base64(b64, sizeof(b64), (uint8_t *)footer, strlen(footer),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char *forged = arena_printf(arena, "%s.%s", body, b64);
    cr_assert_eq(verify(forged, NOW, &out, &why), ERR_UNAUTHENTICATED);
    cr_assert_str_eq(why, "the token's signature does not verify");
}

Test(token, token_signed_by_another_key_is_refused)
{
    token_claims_t c = sample();
    char *tok = token_sign(other_sk, &c, arena);
    token_claims_t out;
    const char *why;
    cr_assert_eq(verify(tok, NOW, &out, &why), ERR_UNAUTHENTICATED);
    cr_assert_str_eq(why, "the token was signed by an unknown key");
    /* Published under our kid, the other key's signature still fails. */
    token_key_t lying = other_key;
    memcpy(lying.public_key, pk, 32);
    cr_assert_eq(token_verify(&lying, 1, tok, NOW, &out, &why), ERR_UNAUTHENTICATED);
    cr_assert_str_eq(why, "the token's signature does not verify");
    /* With both keys published, it verifies. */
    token_key_t both[2] = {key, other_key};
    cr_assert_eq(token_verify(both, 2, tok, NOW, &out, &why), 0);
}

Test(token, unknown_kid_is_refused)
{
    token_claims_t c = sample();
    char *tok = token_sign(sk, &c, arena);
    token_claims_t out;
    const char *why;
    cr_assert_eq(token_verify(&other_key, 1, tok, NOW, &out, &why), ERR_UNAUTHENTICATED);
    cr_assert_eq(token_verify(NULL, 0, tok, NOW, &out, &why), ERR_UNAUTHENTICATED);
}

Test(token, expired_token_is_refused)
{
    token_claims_t c = sample();
    char *tok = token_sign(sk, &c, arena);
    token_claims_t out;
    const char *why;
    cr_assert_eq(verify(tok, NOW + 899, &out, &why), 0);
    cr_assert_eq(verify(tok, NOW + 900, &out, &why), ERR_UNAUTHENTICATED);
    cr_assert_str_eq(why, "the token has expired");
}

Test(token, token_from_the_future_is_refused)
{
    token_claims_t c = sample();
    char *tok = token_sign(sk, &c, arena);
    token_claims_t out;
    const char *why;
    /* Within the leeway a verifier whose clock trails the issuer's accepts
     * it; beyond it the token is refused. */
    cr_assert_eq(verify(tok, NOW - 1, &out, &why), 0, "%s", why);
    cr_assert_eq(verify(tok, NOW - TOKEN_CLOCK_SKEW_S, &out, &why), 0, "%s", why);
    cr_assert_eq(verify(tok, NOW - TOKEN_CLOCK_SKEW_S - 1, &out, &why), ERR_UNAUTHENTICATED);
    cr_assert_str_eq(why, "the token is not valid yet");
}

/* Criterion runs each case in a fresh process, where pointers into the
 * parent's data mean nothing: cases carry their text inline. */
typedef struct text_case {
    char s[320];
} text_case_t;

ParameterizedTestParameters(token, garbage_is_refused)
{
    static text_case_t cases[] = {
        {""},
        {"v4.public."},
        {"v4.public.."},
        {"v4.local.AAAA"},
        {"v3.public.AAAA.AAAA"},
        {"v4.public.AAAA"},
        {"v4.public.!!!!.eyJraWQiOiJ4In0"},
        {"v4.public.AAAA."},
        {"v4.public.AAAA.eyJraWQiOiJ4In0="},
        {"Bearer v4.public.AAAA"},
    };
    return cr_make_param_array(text_case_t, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(text_case_t *tok, token, garbage_is_refused)
{
    token_claims_t out;
    const char *why = NULL;
    cr_assert_eq(verify(tok->s, NOW, &out, &why), ERR_UNAUTHENTICATED);
    cr_assert_not_null(why);
}

/* Signs arbitrary claims JSON with our key and footer: the signature is
 * right, so only the strict claims parser stands between it and a login. */
static int verify_claims(const char *json)
{
    char footer[64];
    snprintf(footer, sizeof(footer), "{\"kid\":\"%s\"}", key.kid);
    char *tok = token__sign_raw(sk, (const uint8_t *)json, strlen(json), (const uint8_t *)footer,
                                strlen(footer), arena);
    token_claims_t out;
    const char *why = NULL;
    return verify(tok, NOW, &out, &why);
}

ParameterizedTestParameters(token, malformed_claims_are_refused)
{
    static text_case_t cases[] = {
        {""},
        {"{}"},
        {"[]"},
        {"{\"sub\":\"42\"}"},
        /* role not one of ours */
        {"{\"sub\":\"1\",\"usr\":\"a\",\"org\":\"1\",\"role\":\"root\",\"su\":false,"
         "\"iat\":\"2026-11-25T16:00:00.000Z\",\"exp\":\"2026-11-25T17:00:00Z\"}"},
        /* number instead of string */
        {"{\"sub\":1,\"usr\":\"a\",\"org\":\"1\",\"role\":\"user\",\"su\":false,"
         "\"iat\":\"2026-11-25T16:00:00.000Z\",\"exp\":\"2026-11-25T17:00:00Z\"}"},
        /* duplicate key */
        {"{\"sub\":\"1\",\"sub\":\"2\",\"usr\":\"a\",\"org\":\"1\",\"role\":\"user\",\"su\":false,"
         "\"iat\":\"2026-11-25T16:00:00.000Z\",\"exp\":\"2026-11-25T17:00:00Z\"}"},
        /* unknown key */
        {"{\"sub\":\"1\",\"usr\":\"a\",\"org\":\"1\",\"role\":\"user\",\"su\":false,\"x\":\"y\","
         "\"iat\":\"2026-11-25T16:00:00.000Z\",\"exp\":\"2026-11-25T17:00:00Z\"}"},
        /* impossible date */
        {"{\"sub\":\"1\",\"usr\":\"a\",\"org\":\"1\",\"role\":\"user\",\"su\":false,"
         "\"iat\":\"2026-02-30T16:00:00Z\",\"exp\":\"2026-11-25T17:00:00Z\"}"},
        /* offset instead of Z */
        {"{\"sub\":\"1\",\"usr\":\"a\",\"org\":\"1\",\"role\":\"user\",\"su\":false,"
         "\"iat\":\"2026-11-25T16:00:00+00:00\",\"exp\":\"2026-11-25T17:00:00Z\"}"},
        /* trailing garbage */
        {"{\"sub\":\"1\",\"usr\":\"a\",\"org\":\"1\",\"role\":\"user\",\"su\":false,"
         "\"iat\":\"2026-11-25T16:00:00.000Z\",\"exp\":\"2026-11-25T17:00:00Z\"}x"},
        /* negative id */
        {"{\"sub\":\"-1\",\"usr\":\"a\",\"org\":\"1\",\"role\":\"user\",\"su\":false,"
         "\"iat\":\"2026-11-25T16:00:00.000Z\",\"exp\":\"2026-11-25T17:00:00Z\"}"},
        /* su as a string */
        {"{\"sub\":\"1\",\"usr\":\"a\",\"org\":\"1\",\"role\":\"user\",\"su\":\"true\","
         "\"iat\":\"2026-11-25T16:00:00.000Z\",\"exp\":\"2026-11-25T17:00:00Z\"}"},
    };
    return cr_make_param_array(text_case_t, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(text_case_t *json, token, malformed_claims_are_refused)
{
    cr_assert_eq(verify_claims(json->s), ERR_UNAUTHENTICATED, "accepted: %s", json->s);
}

Test(token, well_formed_hand_written_claims_with_spaces_verify)
{
    cr_assert_eq(
        verify_claims("{ \"exp\" : \"2026-11-25T17:00:00Z\", \"iat\":\"2026-11-25T16:00:00.000Z\","
                      "\"su\":true,\"role\":\"user\",\"org\":\"3\",\"usr\":\"b\\u0041\","
                      "\"sub\":\"9\" }"),
        0);
}

/* PASETO's published vectors (paseto-standard/test-vectors, v4.json). */
static void hex(const char *h, uint8_t *out, size_t n)
{
    size_t len = 0;
    cr_assert_eq(sodium_hex2bin(out, n, h, strlen(h), NULL, &len, NULL), 0);
    cr_assert_eq(len, n);
}

static const char vec_sk[] = "b4cbfb43df4ce210727d953e4a713307fa19bb7d9f85041438d9e11b942a3774"
                             "1eb9dbbbbc047c03fd70604e0071f0987e16b28b757225c11f00415d0e20b1a2";
static const char vec_pk[] = "1eb9dbbbbc047c03fd70604e0071f0987e16b28b757225c11f00415d0e20b1a2";
static const char vec_msg[] =
    "{\"data\":\"this is a signed message\",\"exp\":\"2022-01-01T00:00:00+00:00\"}";

Test(token, spec_vector_4_S_1_without_footer)
{
    uint8_t s[64], p[32];
    hex(vec_sk, s, 64);
    hex(vec_pk, p, 32);
    const char *want =
        "v4.public.eyJkYXRhIjoidGhpcyBpcyBhIHNpZ25lZCBtZXNzYWdlIiwiZXhwIjoiMjAyMi0w"
        "MS0wMVQwMDowMDowMCswMDowMCJ9bg_XBBzds8lTZShVlwwKSgeKpLT3yukTw6JUz3W4h_ExsQV-"
        "P0V54zemZDcAxFaSeef1QlXEFtkqxT1ciiQEDA";
    char *tok = token__sign_raw(s, (const uint8_t *)vec_msg, strlen(vec_msg), NULL, 0, arena);
    cr_assert_str_eq(tok, want);
    uint8_t *m, *f;
    size_t m_len, f_len;
    const char *why;
    cr_assert_eq(token__open_raw(p, want, arena, &m, &m_len, &f, &f_len, &why), 0);
    cr_assert_eq(m_len, strlen(vec_msg));
    cr_assert_eq(memcmp(m, vec_msg, m_len), 0);
    cr_assert_eq(f_len, 0);
}

Test(token, spec_vector_4_S_2_with_footer)
{
    uint8_t s[64], p[32];
    hex(vec_sk, s, 64);
    hex(vec_pk, p, 32);
    const char *footer = "{\"kid\":\"zVhMiPBP9fRf2snEcT7gFTioeA9COcNy9DfgL1W60haN\"}";
    const char *want =
        "v4.public.eyJkYXRhIjoidGhpcyBpcyBhIHNpZ25lZCBtZXNzYWdlIiwiZXhwIjoiMjAyMi0w"
        "MS0wMVQwMDowMDowMCswMDowMCJ9v3Jt8mx_TdM2ceTGoqwrh4yDFn0XsHvvV_D0DtwQxVrJEBMl"
        "0F2caAdgnpKlt4p7xBnx1HcO-SPo8FPp214HDw.eyJraWQiOiJ6VmhNaVBCUDlmUmYyc25FY1Q3"
        "Z0ZUaW9lQTlDT2NOeTlEZmdMMVc2MGhhTiJ9";
    char *tok = token__sign_raw(s, (const uint8_t *)vec_msg, strlen(vec_msg),
                                (const uint8_t *)footer, strlen(footer), arena);
    cr_assert_str_eq(tok, want);
    uint8_t *m, *f;
    size_t m_len, f_len;
    const char *why;
    cr_assert_eq(token__open_raw(p, want, arena, &m, &m_len, &f, &f_len, &why), 0);
    cr_assert_eq(f_len, strlen(footer));
    cr_assert_eq(memcmp(f, footer, f_len), 0);
    /* The same token with one signature bit changed fails. */
    cr_assert_eq(token__open_raw(p, flip(want, 150), arena, &m, &m_len, &f, &f_len, &why),
                 ERR_UNAUTHENTICATED);
}
