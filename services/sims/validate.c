/* Input validation: identifiers, labels, tags, metadata and SMS texts. Each
 * check records a field violation (so one reply lists every bad field) and
 * returns false. */
#include "sims.h"

#include <arpa/inet.h>
#include <string.h>

static bool sims__digits(const char *s, size_t min, size_t max)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (s[n] < '0' || s[n] > '9')
            return false;
    return n >= min && n <= max;
}

bool sims_valid_iccid(rpc_call_t *call, const char *field, const char *iccid)
{
    if (iccid && sims__digits(iccid, 19, 20))
        return true;
    rpc_violation(call, field, "must be 19 or 20 digits");
    return false;
}

bool sims_valid_imei(rpc_call_t *call, const char *field, const char *imei)
{
    if (!imei || !*imei || sims__digits(imei, 15, 15))
        return true;
    rpc_violation(call, field, "must be 15 digits");
    return false;
}

bool sims_valid_msisdn(rpc_call_t *call, const char *field, const char *msisdn)
{
    if (!msisdn || !*msisdn || sims__digits(msisdn, 1, 15))
        return true;
    rpc_violation(call, field, "must be at most 15 digits");
    return false;
}

bool sims_valid_imsi(rpc_call_t *call, const char *field, const char *imsi)
{
    if (!imsi || !*imsi || sims__digits(imsi, 6, 15))
        return true;
    rpc_violation(call, field, "must be 6 to 15 digits");
    return false;
}

/* Counts UTF-8 code points; -1 when s is not valid UTF-8. */
static long sims__utf8_len(const char *s)
{
    long n = 0;
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int extra = *p < 0x80             ? 0
                    : (*p & 0xE0) == 0xC0 ? 1
                    : (*p & 0xF0) == 0xE0 ? 2
                    : (*p & 0xF8) == 0xF0 ? 3
                                          : -1;
        if (extra < 0)
            return -1;
        p++;
        for (int i = 0; i < extra; i++, p++)
            if ((*p & 0xC0) != 0x80)
                return -1;
        n++;
    }
    return n;
}

bool sims_valid_label(rpc_call_t *call, const char *field, const char *label)
{
    long n = label ? sims__utf8_len(label) : 0;
    if (n >= 0 && n <= 255)
        return true;
    rpc_violation(call, field, n < 0 ? "must be UTF-8" : "must be at most 255 characters");
    return false;
}

bool sims_valid_tags(rpc_call_t *call, const char *field, char **tags, size_t n)
{
    if (n > 64) {
        rpc_violation(call, field, "at most 64 tags");
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(tags[i]);
        bool ok = len >= 1 && len <= 64;
        for (size_t k = 0; ok && k < len; k++) {
            char c = tags[i][k];
            ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '_' || c == '.' || c == ':' || c == '/';
        }
        if (!ok) {
            rpc_violation(call, field,
                          "tag %zu must be 1 to 64 characters of letters, digits and -_.:/", i);
            return false;
        }
    }
    return true;
}

#define SIMS_OBJECT_MAX 65536

bool sims_valid_object(rpc_call_t *call, const char *prefix, const ProtobufCMessage *m,
                       const char *name, const Google__Protobuf__Struct *s, uint32_t old_tag,
                       const char **json)
{
    arena_t *a = rpc_call_arena(call);
    *json = NULL;
    for (unsigned i = 0; i < m->n_unknown_fields; i++)
        if (m->unknown_fields[i].tag == old_tag) {
            rpc_violation(call, arena_printf(a, "%s%s_json", prefix, name),
                          "is no longer read: send %s%s, a JSON object (google.protobuf.Struct)",
                          prefix, name);
            return false;
        }
    return pbstruct_to_json(call, arena_printf(a, "%s%s", prefix, name), s, SIMS_OBJECT_MAX, json);
}

bool sims_valid_ip(rpc_call_t *call, const char *field, const char *ip)
{
    unsigned char buf[16];
    if (!ip || !*ip || inet_pton(AF_INET, ip, buf) == 1 || inet_pton(AF_INET6, ip, buf) == 1)
        return true;
    rpc_violation(call, field, "must be an IPv4 or IPv6 address");
    return false;
}

const char *sims_tags_csv(arena_t *a, char **tags, size_t n)
{
    size_t len = 1;
    for (size_t i = 0; i < n; i++)
        len += strlen(tags[i]) + 1;
    char *out = arena_alloc(a, len), *p = out;
    for (size_t i = 0; i < n; i++) {
        if (i)
            *p++ = ',';
        size_t l = strlen(tags[i]);
        memcpy(p, tags[i], l);
        p += l;
    }
    *p = 0;
    return out;
}

/* The GSM 03.38 default alphabet (basic set) as Unicode code points. */
static const unsigned gsm_basic[] = {
    '@',   0xA3,  '$',   0xA5, 0xE8,  0xE9, 0xF9,  0xEC,  0xF2,  0xC7,  '\n',  0xD8,
    0xF8,  '\r',  0xC5,  0xE5, 0x394, '_',  0x3A6, 0x393, 0x39B, 0x3A9, 0x3A0, 0x3A8,
    0x3A3, 0x398, 0x39E, 0xC6, 0xE6,  0xDF, 0xC9,  ' ',   '!',   '"',   '#',   0xA4,
    0xA1,  0xC4,  0xD6,  0xD1, 0xDC,  0xA7, 0xBF,  0xE4,  0xF6,  0xF1,  0xFC,  0xE0,
};
/* Characters of the extension table: each takes an escape plus itself. */
static const unsigned gsm_ext[] = {0x0C, '^', '{', '}', '\\', '[', '~', ']', '|', 0x20AC};

/* 1 for a basic GSM-7 character, 2 for an extension one, 0 for neither. */
static int sims__gsm_septets(unsigned cp)
{
    if ((cp >= '%' && cp <= '?') || (cp >= 'A' && cp <= 'Z') || (cp >= 'a' && cp <= 'z'))
        return 1;
    for (size_t i = 0; i < sizeof(gsm_basic) / sizeof(gsm_basic[0]); i++)
        if (gsm_basic[i] == cp)
            return 1;
    for (size_t i = 0; i < sizeof(gsm_ext) / sizeof(gsm_ext[0]); i++)
        if (gsm_ext[i] == cp)
            return 2;
    return 0;
}

bool sims_sms_measure(rpc_call_t *call, const char *field, const char *text, sims_sms_shape_t *out)
{
    memset(out, 0, sizeof(*out));
    long chars = text ? sims__utf8_len(text) : 0;
    if (chars <= 0 || chars > 1600) {
        rpc_violation(call, field, chars < 0 ? "must be UTF-8" : "must be 1 to 1600 characters");
        return false;
    }
    int septets = 0, utf16 = 0;
    bool gsm = true;
    const unsigned char *p = (const unsigned char *)text;
    while (*p) {
        unsigned cp;
        int extra = *p < 0x80 ? 0 : (*p & 0xE0) == 0xC0 ? 1 : (*p & 0xF0) == 0xE0 ? 2 : 3;
        cp = extra == 0 ? *p : extra == 1 ? *p & 0x1F : extra == 2 ? *p & 0x0F : *p & 0x07;
        p++;
        for (int i = 0; i < extra; i++, p++)
            cp = (cp << 6) | (*p & 0x3F);
        int s = sims__gsm_septets(cp);
        if (!s)
            gsm = false;
        septets += s;
        utf16 += cp > 0xFFFF ? 2 : 1;
    }
    out->chars = (int)chars;
    out->ucs2 = !gsm;
    if (gsm) {
        out->units = septets;
        out->segments = septets <= 160 ? 1 : (septets + 152) / 153;
    } else {
        out->units = utf16;
        out->segments = utf16 <= 70 ? 1 : (utf16 + 66) / 67;
    }
    return true;
}
