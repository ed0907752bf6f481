/* ImportSims against a real onceiot-sims and PostgreSQL: all or nothing,
 * every field round trips whether some, all or none of a batch's SIMs set
 * it, and a bad item is named by its index. */
#include "pg_harness.h"
#include "sims_harness.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

TestSuite(sims_import, .init = sims_h_start, .fini = sims_h_stop, .timeout = 120);

Test(sims_import, import_is_all_or_nothing_and_names_the_duplicate)
{
    principal_t admin = sims_h_admin(1);
    rpc_status_t st;
    int32_t n = 0;
    cr_assert_eq(sims_h_import(&admin, 100, 2000, &st, &n), 0, "%s", st.message);
    cr_assert_eq(n, 2000);
    /* 1500..2499 overlaps 1500..2099: nothing of it may land. */
    cr_assert_eq(sims_h_import(&admin, 1500, 1000, &st, NULL), ERR_ALREADY_EXISTS);
    cr_assert(strstr(st.message, sims_h_iccid(1500)), "%s", st.message);
    Onceiot__Sims__V1__ListSimsRequest req = ONCEIOT__SIMS__V1__LIST_SIMS_REQUEST__INIT;
    req.page_size = 1000;
    cr_assert_eq(sims_h_count_all(&admin, &req), 2000);
}

/* ImportSims of the n SIMs in v as the operator's staff. */
static int import_items(Onceiot__Sims__V1__SimInput *v, size_t n, rpc_status_t *st)
{
    Onceiot__Sims__V1__ImportSimsRequest req = ONCEIOT__SIMS__V1__IMPORT_SIMS_REQUEST__INIT;
    req.sims = arena_alloc(sims_h.arena, n * sizeof(*req.sims));
    for (size_t i = 0; i < n; i++)
        req.sims[req.n_sims++] = &v[i];
    principal_t staff = sims_h_root();
    ProtobufCMessage *resp;
    return sims_h_call("ImportSims", &req.base,
                       &onceiot__sims__v1__import_sims_response__descriptor, &staff, NULL, &resp,
                       st);
}

/* The batch's columns come as NULL when no SIM sets them and as arrays
 * with gaps when some do: each SIM reads back exactly as sent, the unset
 * fields with their defaults, quotas only where a volume was given, and
 * one sim_created event each. */
Test(sims_import, import_round_trips_fields_some_sims_set_and_others_do_not)
{
    Onceiot__Sims__V1__SimInput v[5];
    for (int i = 0; i < 5; i++) {
        onceiot__sims__v1__sim_input__init(&v[i]);
        v[i].iccid = (char *)sims_h_iccid(300 + i);
        v[i].organization_id = 1;
    }
    static char *tags[] = {"fleet-a", "eu"};
    v[0].imsi = "262011234567890";
    v[0].msisdn = "491701234567";
    v[0].imei = "351234567890123";
    v[0].imei_lock = true;
    v[0].label = "all set";
    v[0].ip_address = "10.1.2.3";
    v[0].customer_org_id = 2;
    v[0].tags = tags;
    v[0].n_tags = 2;
    v[0].metadata = sims_h_struct("{\"slot\": 3}");
    v[0].data_volume = 5000;
    v[0].sms_volume = 7;
    v[2].label = "label only";
    v[2].data_volume = 100;
    v[3].imei_lock = true;
    v[3].sms_volume = 3;
    v[3].customer_org_id = 3;
    rpc_status_t st;
    cr_assert_eq(import_items(v, 4, &st), 0, "%s", st.message);
    cr_assert_eq(import_items(&v[4], 1, &st), 0, "%s", st.message); /* no column set at all */

    principal_t admin = sims_h_admin(1);
    Onceiot__Sims__V1__Sim *s[5];
    for (int i = 0; i < 5; i++)
        cr_assert_eq(sims_h_get(&admin, v[i].iccid, &s[i], &st), 0, "%s", st.message);
    cr_assert_str_eq(s[0]->imsi, "262011234567890");
    cr_assert_str_eq(s[0]->msisdn, "491701234567");
    cr_assert_str_eq(s[0]->imei, "351234567890123");
    cr_assert(s[0]->imei_lock);
    cr_assert_str_eq(s[0]->label, "all set");
    cr_assert_str_eq(s[0]->ip_address, "10.1.2.3");
    cr_assert_eq(s[0]->customer_org_id, 2);
    cr_assert_eq(s[0]->n_tags, 2);
    cr_assert_str_eq(s[0]->tags[0], "fleet-a");
    cr_assert_str_eq(s[0]->tags[1], "eu");
    cr_assert_str_eq(sims_h_json(s[0]->metadata), "{\"slot\":3}");
    cr_assert(s[0]->data_quota && s[0]->data_quota->volume == 5000);
    cr_assert(s[0]->sms_quota && s[0]->sms_quota->volume == 7);
    for (int i = 1; i < 5; i++) {
        cr_assert_str_eq(s[i]->imsi, "", "sims[%d]", i);
        cr_assert_str_eq(s[i]->msisdn, "");
        cr_assert_str_eq(s[i]->imei, "");
        cr_assert_str_eq(s[i]->ip_address, "");
        cr_assert_eq(s[i]->n_tags, 0);
        cr_assert_str_eq(sims_h_json(s[i]->metadata), "{}");
        cr_assert_eq(s[i]->organization_id, 1);
    }
    cr_assert_str_eq(s[1]->label, "");
    cr_assert(!s[1]->imei_lock && !s[1]->customer_org_id && !s[1]->data_quota && !s[1]->sms_quota);
    cr_assert_str_eq(s[2]->label, "label only");
    cr_assert(!s[2]->imei_lock && !s[2]->customer_org_id && !s[2]->sms_quota);
    cr_assert(s[2]->data_quota && s[2]->data_quota->volume == 100);
    cr_assert_str_eq(s[3]->label, "");
    cr_assert(s[3]->imei_lock && s[3]->customer_org_id == 3 && !s[3]->data_quota);
    cr_assert(s[3]->sms_quota && s[3]->sms_quota->volume == 3);
    cr_assert_str_eq(s[4]->label, "");
    cr_assert(!s[4]->imei_lock && !s[4]->customer_org_id && !s[4]->data_quota && !s[4]->sms_quota);
    PGresult *res = pgh_sql("SELECT count(*) AS n, count(DISTINCT iccid) AS d, "
                            "(SELECT count(*) FROM sims.sim_quotas) AS q FROM sims.sim_events "
                            "WHERE event_type = 'sim_created' AND description = 'SIM imported'");
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "5");
    cr_assert_str_eq(PQgetvalue(res, 0, 1), "5");
    cr_assert_str_eq(PQgetvalue(res, 0, 2), "4");
    PQclear(res);

    /* A batch holding one known ICCID names it (the smallest such) and
     * leaves nothing: no SIM, quota or event. */
    Onceiot__Sims__V1__SimInput w[3];
    for (int i = 0; i < 3; i++) {
        onceiot__sims__v1__sim_input__init(&w[i]);
        w[i].organization_id = 1;
        w[i].data_volume = 10;
    }
    w[0].iccid = (char *)sims_h_iccid(310);
    w[1].iccid = (char *)sims_h_iccid(303);
    w[2].iccid = (char *)sims_h_iccid(301);
    cr_assert_eq(import_items(w, 3, &st), ERR_ALREADY_EXISTS);
    cr_assert(strstr(st.message, sims_h_iccid(301)), "%s", st.message);
    res = pgh_sql("SELECT (SELECT count(*) FROM sims.sims) || ' ' || "
                  "(SELECT count(*) FROM sims.sim_quotas) || ' ' || "
                  "(SELECT count(*) FROM sims.sim_events)");
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "5 4 5");
    PQclear(res);
}

Test(sims_import, import_of_a_bad_item_names_its_index)
{
    principal_t staff = sims_h_root();
    Onceiot__Sims__V1__SimInput a = ONCEIOT__SIMS__V1__SIM_INPUT__INIT, b = a;
    a.iccid = (char *)sims_h_iccid(7);
    b.iccid = "12";
    Onceiot__Sims__V1__SimInput *items[] = {&a, &b};
    Onceiot__Sims__V1__ImportSimsRequest req = ONCEIOT__SIMS__V1__IMPORT_SIMS_REQUEST__INIT;
    req.sims = items;
    req.n_sims = 2;
    ProtobufCMessage *resp;
    rpc_status_t st;
    cr_assert_eq(sims_h_call("ImportSims", &req.base,
                             &onceiot__sims__v1__import_sims_response__descriptor, &staff, NULL,
                             &resp, &st),
                 ERR_INVALID_ARGUMENT);
    cr_assert(sims_h_violation(&st, "sims[1].iccid"), "%s", st.message);
    req.n_sims = 0;
    cr_assert_eq(sims_h_call("ImportSims", &req.base,
                             &onceiot__sims__v1__import_sims_response__descriptor, &staff, NULL,
                             &resp, &st),
                 ERR_INVALID_ARGUMENT);
}

/* One of two imports racing each other. */
typedef struct racer {
    Onceiot__Sims__V1__ImportSimsRequest *req;
    arena_t *arena;
    int rc;
    rpc_status_t st;
} racer_t;

static void *race_main(void *arg)
{
    racer_t *r = arg;
    principal_t staff = sims_h_root();
    ProtobufCMessage *resp;
    r->rc = sims_h_call("ImportSims", &r->req->base,
                        &onceiot__sims__v1__import_sims_response__descriptor, &staff, r->arena,
                        &resp, &r->st);
    return NULL;
}

/* Two imports whose batches share 500 ICCIDs, sent at once, ten times: the
 * one that commits first lands whole, the other changes nothing and says
 * why (ALREADY_EXISTS naming a shared ICCID when it waited for the first;
 * ABORTED when the two deadlocked, which the second batch's reversed order
 * makes possible). Never both, never a part of either. */
Test(sims_import, two_overlapping_imports_at_once_land_one_whole_and_nothing_of_the_other)
{
    principal_t admin = sims_h_admin(1);
    enum { ROUNDS = 10, N = 1500, SHARED = 500 };
    int outcomes[2] = {0, 0}; /* ALREADY_EXISTS, ABORTED */
    for (int round = 0; round < ROUNDS; round++) {
        long long base = 100000 + (long long)round * 10000;
        racer_t r[2] = {{.arena = sims_h_thread_arena()}, {.arena = sims_h_thread_arena()}};
        r[0].req = sims_h_import_request(&admin, base, N);
        r[1].req = sims_h_import_request(&admin, base + N - SHARED, N);
        if (round % 2) { /* the second batch in descending order */
            Onceiot__Sims__V1__SimInput **v = r[1].req->sims;
            for (size_t i = 0, j = N - 1; i < j; i++, j--) {
                Onceiot__Sims__V1__SimInput *t = v[i];
                v[i] = v[j];
                v[j] = t;
            }
        }
        pthread_t th[2];
        for (int i = 0; i < 2; i++)
            cr_assert_eq(pthread_create(&th[i], NULL, race_main, &r[i]), 0);
        for (int i = 0; i < 2; i++)
            pthread_join(th[i], NULL);
        int won = r[0].rc == 0 ? 0 : 1, lost = 1 - won;
        cr_assert_eq(r[won].rc, 0, "round %d: neither landed: %s / %s", round, r[0].st.message,
                     r[1].st.message);
        cr_assert(r[lost].rc == ERR_ALREADY_EXISTS || r[lost].rc == ERR_ABORTED,
                  "round %d: the other got %s: %s", round, err_grpc_name(r[lost].st.code),
                  r[lost].st.message);
        outcomes[r[lost].rc == ERR_ABORTED]++;
        const char *why = r[lost].st.message;
        if (r[lost].rc == ERR_ALREADY_EXISTS)
            cr_assert(strstr(why, "already exists"), "%s", why);
        else
            cr_assert(strstr(why, "concurrent") || strstr(why, "meanwhile"), "%s", why);
        /* The winner's SIMs, each with its sim_created event, and nothing else. */
        const char *range[] = {sims_h_iccid(base), sims_h_iccid(base + 2 * N - SHARED - 1)};
        long sims =
            pgh_count("SELECT count(*) FROM sims.sims WHERE iccid BETWEEN $1 AND $2", 2, range);
        long events = pgh_count("SELECT count(*) FROM sims.sim_events WHERE event_type = "
                                "'sim_created' AND iccid BETWEEN $1 AND $2",
                                2, range);
        cr_assert_eq(sims, N, "round %d: %ld SIMs landed", round, sims);
        cr_assert_eq(events, N, "round %d: %ld sim_created events", round, events);
        const char *ends[] = {r[won].req->sims[0]->iccid, r[won].req->sims[N - 1]->iccid};
        long own = pgh_count("SELECT count(*) FROM sims.sims WHERE iccid IN ($1, $2)", 2, ends);
        cr_assert_eq(own, 2, "round %d: the SIMs that landed are the winner's", round);
    }
    cr_log_info("the losing import: %d ALREADY_EXISTS, %d ABORTED", outcomes[0], outcomes[1]);
}
