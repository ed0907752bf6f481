/* SMS against a real onceiot-sims: encoding and segments, quota, pending,
 * cancel, delivery reports, mobile-originated SMS, listing and tenancy. */
#include "sims_harness.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <string.h>

TestSuite(sims_sms, .init = sims_h_start, .fini = sims_h_stop, .timeout = 120);

#define SMS_D (&onceiot__sims__v1__sms__descriptor)

static int send_sms(const principal_t *who, const char *iccid, const char *text,
                    Onceiot__Sims__V1__Sms **out, rpc_status_t *st)
{
    Onceiot__Sims__V1__SendSmsRequest req = ONCEIOT__SIMS__V1__SEND_SMS_REQUEST__INIT;
    req.iccid = (char *)iccid;
    req.text = (char *)text;
    return sims_h_call("SendSms", &req.base, SMS_D, who, NULL, (ProtobufCMessage **)out, st);
}

/* A new enabled SIM with 10 SMS of quota. */
static const char *enabled_sim(const principal_t *who, long long n)
{
    const char *iccid = sims_h_iccid(n);
    sims_h_create(who, iccid);
    sims_h_act(who, "ActivateSim", iccid);
    return iccid;
}

static char *repeat(const char *unit, int n)
{
    size_t len = strlen(unit);
    char *s = arena_alloc(sims_h.arena, len * (size_t)n + 1);
    for (int i = 0; i < n; i++)
        memcpy(s + len * (size_t)i, unit, len);
    s[len * (size_t)n] = 0;
    return s;
}

typedef struct shape {
    char unit[8]; /* repeated count times */
    int count;
    bool ucs2;
    int segments;
} shape_t;

ParameterizedTestParameters(sims_sms, encoding_and_segments_follow_gsm_rules)
{
    static shape_t s[] = {
        {"a", 160, false, 1},
        {"a", 161, false, 2},
        {"a", 306, false, 2},
        {"a", 307, false, 3},
        {"{", 80, false, 1},
        {"{", 81, false, 2},            /* extension characters count 2 */
        {"\xc3\xbc", 160, false, 1},    /* ü is in the GSM alphabet */
        {"\xe2\x82\xac", 80, false, 1}, /* € is an extension character */
        {"\xc4\x9f", 70, true, 1},
        {"\xc4\x9f", 71, true, 2}, /* ğ is not */
        {"\xc4\x9f", 134, true, 2},
        {"\xc4\x9f", 135, true, 3},
        {"\xf0\x9f\x98\x80", 35, true, 1}, /* an emoji is two UTF-16 units */
        {"\xf0\x9f\x98\x80", 36, true, 2},
    };
    return cr_make_param_array(shape_t, s, sizeof(s) / sizeof(s[0]));
}

ParameterizedTest(shape_t *s, sims_sms, encoding_and_segments_follow_gsm_rules)
{
    principal_t u = sims_h_user(1);
    const char *iccid = enabled_sim(&u, 1);
    Onceiot__Sims__V1__Sms *m;
    rpc_status_t st;
    cr_assert_eq(send_sms(&u, iccid, repeat(s->unit, s->count), &m, &st), 0, "%s", st.message);
    cr_assert_eq(m->encoding, s->ucs2 ? ONCEIOT__SIMS__V1__SMS_ENCODING__SMS_ENCODING_UCS2
                                      : ONCEIOT__SIMS__V1__SMS_ENCODING__SMS_ENCODING_GSM7);
    cr_assert_eq(m->segments, s->segments, "%d x %s", s->count, s->unit);
    cr_assert_eq(m->status, ONCEIOT__SIMS__V1__SMS_STATUS__SMS_STATUS_PENDING);
}

Test(sims_sms, bad_texts_and_disabled_sims_are_refused)
{
    principal_t u = sims_h_user(1);
    const char *iccid = enabled_sim(&u, 2);
    Onceiot__Sims__V1__Sms *m;
    rpc_status_t st;
    cr_assert_eq(send_sms(&u, iccid, "", &m, &st), ERR_INVALID_ARGUMENT);
    cr_assert_eq(send_sms(&u, iccid, repeat("a", 1601), &m, &st), ERR_INVALID_ARGUMENT);
    cr_assert_eq(send_sms(&u, iccid, "\xff\xfe", &m, &st), ERR_INVALID_ARGUMENT);
    cr_assert_eq(send_sms(&u, "123", "hi", &m, &st), ERR_INVALID_ARGUMENT);
    const char *disabled = sims_h_iccid(3);
    sims_h_create(&u, disabled);
    cr_assert_eq(send_sms(&u, disabled, "hi", &m, &st), ERR_FAILED_PRECONDITION);
    cr_assert(strstr(st.message, "Disabled"), "%s", st.message);
    principal_t other = sims_h_user(2);
    cr_assert_eq(send_sms(&other, iccid, "hi", &m, &st), ERR_NOT_FOUND);
}

Test(sims_sms, sending_consumes_sms_quota_until_depleted)
{
    principal_t u = sims_h_user(1);
    const char *iccid = enabled_sim(&u, 4); /* 10 SMS */
    Onceiot__Sims__V1__Sms *m;
    rpc_status_t st;
    cr_assert_eq(send_sms(&u, iccid, repeat("a", 400), &m, &st), 0, "%s", st.message);
    cr_assert_eq(m->segments, 3);
    for (int i = 0; i < 7; i++)
        cr_assert_eq(send_sms(&u, iccid, "ping", &m, &st), 0, "%s", st.message);
    cr_assert_eq(send_sms(&u, iccid, "one too many", &m, &st), ERR_FAILED_PRECONDITION);
    Onceiot__Sims__V1__GetQuotaRequest q = ONCEIOT__SIMS__V1__GET_QUOTA_REQUEST__INIT;
    q.iccid = (char *)iccid;
    q.quota_type = ONCEIOT__SIMS__V1__QUOTA_TYPE__QUOTA_TYPE_SMS;
    Onceiot__Sims__V1__Quota *quota;
    cr_assert_eq(sims_h_call("GetQuota", &q.base, &onceiot__sims__v1__quota__descriptor, &u, NULL,
                             (ProtobufCMessage **)&quota, &st),
                 0);
    cr_assert_eq(quota->remaining_volume, 0);
}

static int64_t sms_remaining(const principal_t *who, const char *iccid)
{
    Onceiot__Sims__V1__GetQuotaRequest q = ONCEIOT__SIMS__V1__GET_QUOTA_REQUEST__INIT;
    q.iccid = (char *)iccid;
    q.quota_type = ONCEIOT__SIMS__V1__QUOTA_TYPE__QUOTA_TYPE_SMS;
    Onceiot__Sims__V1__Quota *quota;
    rpc_status_t st;
    cr_assert_eq(sims_h_call("GetQuota", &q.base, &onceiot__sims__v1__quota__descriptor, who, NULL,
                             (ProtobufCMessage **)&quota, &st),
                 0, "%s", st.message);
    return quota->remaining_volume;
}

static int sms_op(const char *method, const principal_t *who, const char *iccid, int64_t id,
                  Onceiot__Sims__V1__Sms **out, rpc_status_t *st)
{
    Onceiot__Sims__V1__GetSmsRequest req = ONCEIOT__SIMS__V1__GET_SMS_REQUEST__INIT;
    req.iccid = (char *)iccid;
    req.id = id;
    return sims_h_call(method, &req.base, SMS_D, who, NULL, (ProtobufCMessage **)out, st);
}

static int report(const principal_t *who, const char *iccid, int64_t id, int status,
                  Onceiot__Sims__V1__Sms **out, rpc_status_t *st)
{
    Onceiot__Sims__V1__UpdateSmsStatusRequest req =
        ONCEIOT__SIMS__V1__UPDATE_SMS_STATUS_REQUEST__INIT;
    req.iccid = (char *)iccid;
    req.id = id;
    req.status = status;
    req.error_message = "no answer";
    return sims_h_call("UpdateSmsStatus", &req.base, SMS_D, who, NULL, (ProtobufCMessage **)out,
                       st);
}

Test(sims_sms, only_pending_sms_can_be_cancelled_and_reports_only_move_forward)
{
    principal_t u = sims_h_user(1), other = sims_h_user(2);
    const char *iccid = enabled_sim(&u, 5);
    Onceiot__Sims__V1__Sms *a, *b, *m;
    rpc_status_t st;
    cr_assert_eq(send_sms(&u, iccid, "first", &a, &st), 0);
    cr_assert_eq(send_sms(&u, iccid, "second", &b, &st), 0);
    cr_assert_eq(sms_op("GetSms", &u, iccid, a->id, &m, &st), 0);
    cr_assert_str_eq(m->text, "first");
    cr_assert_eq(sms_op("GetSms", &other, iccid, a->id, &m, &st), ERR_NOT_FOUND);
    cr_assert_eq(sms_op("CancelSms", &other, iccid, a->id, &m, &st), ERR_NOT_FOUND);
    cr_assert_eq(sms_op("CancelSms", &u, iccid, a->id, &m, &st), 0, "%s", st.message);
    cr_assert_eq(m->status, ONCEIOT__SIMS__V1__SMS_STATUS__SMS_STATUS_CANCELLED);
    cr_assert_eq(sms_op("CancelSms", &u, iccid, a->id, &m, &st), ERR_FAILED_PRECONDITION);
    cr_assert(strstr(st.message, "cancelled"), "%s", st.message);

    const int SENT = ONCEIOT__SIMS__V1__SMS_STATUS__SMS_STATUS_SENT;
    const int DELIVERED = ONCEIOT__SIMS__V1__SMS_STATUS__SMS_STATUS_DELIVERED;
    const int FAILED = ONCEIOT__SIMS__V1__SMS_STATUS__SMS_STATUS_FAILED;
    cr_assert_eq(report(&u, iccid, a->id, SENT, &m, &st), ERR_FAILED_PRECONDITION);
    cr_assert_eq(report(&u, iccid, b->id, SENT, &m, &st), 0, "%s", st.message);
    cr_assert(m->sent_at);
    cr_assert_eq(sms_op("CancelSms", &u, iccid, b->id, &m, &st), ERR_FAILED_PRECONDITION);
    cr_assert_eq(report(&u, iccid, b->id, DELIVERED, &m, &st), 0, "%s", st.message);
    cr_assert(m->delivered_at);
    cr_assert_eq(report(&u, iccid, b->id, SENT, &m, &st), ERR_FAILED_PRECONDITION);
    cr_assert_eq(report(&u, iccid, b->id, FAILED, &m, &st), ERR_FAILED_PRECONDITION);
    cr_assert_eq(
        report(&u, iccid, b->id, ONCEIOT__SIMS__V1__SMS_STATUS__SMS_STATUS_PENDING, &m, &st),
        ERR_INVALID_ARGUMENT);
    Onceiot__Sims__V1__Sms *c;
    cr_assert_eq(send_sms(&u, iccid, "third", &c, &st), 0);
    cr_assert_eq(report(&u, iccid, c->id, FAILED, &m, &st), 0, "%s", st.message);
    cr_assert_str_eq(m->error_message, "no answer");
    cr_assert(m->failed_at);
}

Test(sims_sms, cancelling_a_pending_sms_gives_its_segments_back_once)
{
    principal_t u = sims_h_user(1);
    const char *iccid = enabled_sim(&u, 7);
    int64_t before = sms_remaining(&u, iccid);
    Onceiot__Sims__V1__Sms *sent, *m;
    rpc_status_t st;
    cr_assert_eq(send_sms(&u, iccid, repeat("a", 400), &sent, &st), 0, "%s", st.message);
    cr_assert_eq(sent->segments, 3);
    cr_assert_eq(sms_remaining(&u, iccid), before - 3);
    cr_assert_eq(sms_op("CancelSms", &u, iccid, sent->id, &m, &st), 0, "%s", st.message);
    cr_assert_eq(sms_remaining(&u, iccid), before);
    cr_assert_eq(sms_op("CancelSms", &u, iccid, sent->id, &m, &st), ERR_FAILED_PRECONDITION);
    cr_assert_eq(sms_remaining(&u, iccid), before, "a second cancel gives nothing back");
}

Test(sims_sms, received_sms_are_listed_with_filters_and_pages)
{
    principal_t u = sims_h_user(1);
    const char *iccid = enabled_sim(&u, 6);
    Onceiot__Sims__V1__Sms *m;
    rpc_status_t st;
    for (int i = 0; i < 3; i++)
        cr_assert_eq(send_sms(&u, iccid, "down", &m, &st), 0);
    for (int i = 0; i < 5; i++) {
        Onceiot__Sims__V1__ReceiveSmsRequest req = ONCEIOT__SIMS__V1__RECEIVE_SMS_REQUEST__INIT;
        req.iccid = (char *)iccid;
        req.text = "up";
        cr_assert_eq(
            sims_h_call("ReceiveSms", &req.base, SMS_D, &u, NULL, (ProtobufCMessage **)&m, &st), 0,
            "%s", st.message);
        cr_assert_eq(m->direction, ONCEIOT__SIMS__V1__SMS_DIRECTION__SMS_DIRECTION_MO);
        cr_assert_eq(m->status, ONCEIOT__SIMS__V1__SMS_STATUS__SMS_STATUS_RECEIVED);
    }
    Onceiot__Sims__V1__ListSmsRequest req = ONCEIOT__SIMS__V1__LIST_SMS_REQUEST__INIT;
    req.iccid = (char *)iccid;
    req.page_size = 2;
    req.direction = ONCEIOT__SIMS__V1__SMS_DIRECTION__SMS_DIRECTION_MO;
    int total = 0;
    int64_t last = INT64_MAX;
    Onceiot__Sims__V1__ListSmsResponse *page;
    do {
        cr_assert_eq(sims_h_call("ListSms", &req.base,
                                 &onceiot__sims__v1__list_sms_response__descriptor, &u, NULL,
                                 (ProtobufCMessage **)&page, &st),
                     0, "%s", st.message);
        for (size_t i = 0; i < page->n_sms; i++) {
            cr_assert_lt(page->sms[i]->id, last, "newest first, no repeats");
            last = page->sms[i]->id;
            cr_assert_str_eq(page->sms[i]->text, "up");
            total++;
        }
        req.page_token = page->next_page_token;
    } while (*req.page_token);
    cr_assert_eq(total, 5);
    req.direction = 0;
    req.page_size = 100;
    req.status = ONCEIOT__SIMS__V1__SMS_STATUS__SMS_STATUS_PENDING;
    cr_assert_eq(sims_h_call("ListSms", &req.base,
                             &onceiot__sims__v1__list_sms_response__descriptor, &u, NULL,
                             (ProtobufCMessage **)&page, &st),
                 0);
    cr_assert_eq(page->n_sms, 3);
    principal_t other = sims_h_user(2);
    cr_assert_eq(sims_h_call("ListSms", &req.base,
                             &onceiot__sims__v1__list_sms_response__descriptor, &other, NULL,
                             (ProtobufCMessage **)&page, &st),
                 ERR_NOT_FOUND, "another organization's SIM is not listed as empty");
}

Test(sims_sms, receive_and_reports_for_another_organizations_sim_are_not_found)
{
    principal_t owner = sims_h_user(1), other = sims_h_user(2);
    const char *iccid = enabled_sim(&owner, 7);
    Onceiot__Sims__V1__Sms *m;
    rpc_status_t st;
    cr_assert_eq(send_sms(&owner, iccid, "hello", &m, &st), 0);
    int64_t id = m->id;
    Onceiot__Sims__V1__ReceiveSmsRequest req = ONCEIOT__SIMS__V1__RECEIVE_SMS_REQUEST__INIT;
    req.iccid = (char *)iccid;
    req.text = "up";
    cr_assert_eq(
        sims_h_call("ReceiveSms", &req.base, SMS_D, &other, NULL, (ProtobufCMessage **)&m, &st),
        ERR_NOT_FOUND);
    cr_assert_eq(report(&other, iccid, id, ONCEIOT__SIMS__V1__SMS_STATUS__SMS_STATUS_SENT, &m, &st),
                 ERR_NOT_FOUND);
    cr_assert_eq(sms_op("GetSms", &owner, iccid, id, &m, &st), 0);
    cr_assert_eq(m->status, ONCEIOT__SIMS__V1__SMS_STATUS__SMS_STATUS_PENDING);
}
