/* SIM lifecycle against a real onceiot-sims: every (status, action) pair,
 * valid or not, its date and its event. */
#include "sims_harness.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <string.h>

TestSuite(sims_lifecycle, .init = sims_h_start, .fini = sims_h_stop, .timeout = 120);

typedef Onceiot__Sims__V1__SimStatus status_t;
#define ENABLED    ONCEIOT__SIMS__V1__SIM_STATUS__SIM_STATUS_ENABLED
#define DISABLED   ONCEIOT__SIMS__V1__SIM_STATUS__SIM_STATUS_DISABLED
#define SUSPENDED  ONCEIOT__SIMS__V1__SIM_STATUS__SIM_STATUS_SUSPENDED
#define EXPIRED    ONCEIOT__SIMS__V1__SIM_STATUS__SIM_STATUS_EXPIRED
#define TERMINATED ONCEIOT__SIMS__V1__SIM_STATUS__SIM_STATUS_TERMINATED

/* Brings a new SIM into status. */
static void reach(const principal_t *who, const char *iccid, status_t status)
{
    sims_h_create(who, iccid);
    switch (status) {
    case ENABLED:
        sims_h_act(who, "ActivateSim", iccid);
        break;
    case SUSPENDED:
        sims_h_act(who, "ActivateSim", iccid);
        sims_h_act(who, "SuspendSim", iccid);
        break;
    case EXPIRED:
        sims_h_act(who, "ActivateSim", iccid);
        sims_h_act(who, "ExpireSim", iccid);
        break;
    case TERMINATED:
        sims_h_act(who, "TerminateSim", iccid);
        break;
    default:
        break;
    }
}

typedef struct transition {
    status_t from;
    char action[16];
    status_t to; /* UNSPECIFIED: refused */
    char event[24];
    char from_name[12];
} transition_t;

ParameterizedTestParameters(sims_lifecycle, each_action_from_each_status)
{
    static transition_t t[] = {
        {DISABLED, "ActivateSim", ENABLED, "sim_activated", "Disabled"},
        {DISABLED, "SuspendSim", 0, "", "Disabled"},
        {DISABLED, "ResumeSim", 0, "", "Disabled"},
        {DISABLED, "TerminateSim", TERMINATED, "sim_terminated", "Disabled"},
        {DISABLED, "ExpireSim", 0, "", "Disabled"},
        {ENABLED, "ActivateSim", 0, "", "Enabled"},
        {ENABLED, "SuspendSim", SUSPENDED, "sim_suspended", "Enabled"},
        {ENABLED, "ResumeSim", 0, "", "Enabled"},
        {ENABLED, "TerminateSim", TERMINATED, "sim_terminated", "Enabled"},
        {ENABLED, "ExpireSim", EXPIRED, "sim_expired", "Enabled"},
        {SUSPENDED, "ActivateSim", 0, "", "Suspended"},
        {SUSPENDED, "SuspendSim", 0, "", "Suspended"},
        {SUSPENDED, "ResumeSim", ENABLED, "sim_resumed", "Suspended"},
        {SUSPENDED, "TerminateSim", TERMINATED, "sim_terminated", "Suspended"},
        {SUSPENDED, "ExpireSim", EXPIRED, "sim_expired", "Suspended"},
        {EXPIRED, "ActivateSim", 0, "", "Expired"},
        {EXPIRED, "SuspendSim", 0, "", "Expired"},
        {EXPIRED, "ResumeSim", 0, "", "Expired"},
        {EXPIRED, "TerminateSim", TERMINATED, "sim_terminated", "Expired"},
        {EXPIRED, "ExpireSim", 0, "", "Expired"},
        {TERMINATED, "ActivateSim", 0, "", "Terminated"},
        {TERMINATED, "SuspendSim", 0, "", "Terminated"},
        {TERMINATED, "ResumeSim", 0, "", "Terminated"},
        {TERMINATED, "TerminateSim", 0, "", "Terminated"},
        {TERMINATED, "ExpireSim", 0, "", "Terminated"},
    };
    return cr_make_param_array(transition_t, t, sizeof(t) / sizeof(t[0]));
}

static Onceiot__Sims__V1__ListEventsResponse *events(const principal_t *who, const char *iccid)
{
    Onceiot__Sims__V1__ListEventsRequest req = ONCEIOT__SIMS__V1__LIST_EVENTS_REQUEST__INIT;
    req.iccid = (char *)iccid;
    req.event_category = "status";
    ProtobufCMessage *resp;
    rpc_status_t st;
    cr_assert_eq(sims_h_call("ListEvents", &req.base,
                             &onceiot__sims__v1__list_events_response__descriptor, who, NULL, &resp,
                             &st),
                 0, "%s", st.message);
    return (Onceiot__Sims__V1__ListEventsResponse *)resp;
}

ParameterizedTest(transition_t *t, sims_lifecycle, each_action_from_each_status)
{
    principal_t user = sims_h_user(3);
    const char *iccid = sims_h_iccid(500);
    reach(&user, iccid, t->from);
    size_t before = events(&user, iccid)->n_events;
    Onceiot__Sims__V1__SimActionRequest req = ONCEIOT__SIMS__V1__SIM_ACTION_REQUEST__INIT;
    req.iccid = (char *)iccid;
    Onceiot__Sims__V1__Sim *s;
    rpc_status_t st;
    int rc = sims_h_call(t->action, &req.base, &onceiot__sims__v1__sim__descriptor, &user, NULL,
                         (ProtobufCMessage **)&s, &st);
    Onceiot__Sims__V1__ListEventsResponse *ev = events(&user, iccid);
    if (!t->to) {
        cr_assert_eq(rc, ERR_FAILED_PRECONDITION, "%s from %s: %s", t->action, t->from_name,
                     st.message);
        cr_assert(strstr(st.message, t->from_name), "names the status: %s", st.message);
        cr_assert_eq(ev->n_events, before, "a refused action writes no event");
        return;
    }
    cr_assert_eq(rc, 0, "%s from %s: %s", t->action, t->from_name, st.message);
    cr_assert_eq(s->status, t->to);
    cr_assert_eq(ev->n_events, before + 1);
    cr_assert_str_eq(ev->events[0]->event_type, t->event, "newest first");
    /* ExpireSim is internal: the network side calls it as itself. */
    cr_assert_str_eq(ev->events[0]->triggered_by,
                     strcmp(t->action, "ExpireSim") == 0 ? "service:network" : "user:1003");
    switch (t->to) {
    case ENABLED:
        cr_assert(s->activation_date);
        break;
    case SUSPENDED:
        cr_assert(s->suspension_date);
        break;
    case TERMINATED:
        cr_assert(s->termination_date);
        break;
    case EXPIRED:
        cr_assert(s->expiry_date);
        break;
    default:
        break;
    }
}

Test(sims_lifecycle, actions_on_another_organizations_sim_are_not_found)
{
    principal_t a = sims_h_user(1), b = sims_h_user(2);
    const char *iccid = sims_h_iccid(501);
    reach(&a, iccid, ENABLED);
    static const char *const actions[] = {"ActivateSim", "SuspendSim", "ResumeSim", "TerminateSim",
                                          "ExpireSim"};
    for (size_t i = 0; i < 5; i++) {
        Onceiot__Sims__V1__SimActionRequest req = ONCEIOT__SIMS__V1__SIM_ACTION_REQUEST__INIT;
        req.iccid = (char *)iccid;
        ProtobufCMessage *resp;
        rpc_status_t st;
        cr_assert_eq(sims_h_call(actions[i], &req.base, &onceiot__sims__v1__sim__descriptor, &b,
                                 NULL, &resp, &st),
                     ERR_NOT_FOUND, "%s", actions[i]);
    }
    Onceiot__Sims__V1__ListEventsRequest req = ONCEIOT__SIMS__V1__LIST_EVENTS_REQUEST__INIT;
    req.iccid = (char *)iccid;
    ProtobufCMessage *resp;
    rpc_status_t st;
    cr_assert_eq(sims_h_call("ListEvents", &req.base,
                             &onceiot__sims__v1__list_events_response__descriptor, &b, NULL, &resp,
                             &st),
                 ERR_NOT_FOUND, "another organization's SIM is not listed as empty");
}

Test(sims_lifecycle, an_api_key_caller_is_named_in_the_event)
{
    principal_t p = sims_h_user(1);
    p.credential = "api_key:77";
    const char *iccid = sims_h_iccid(502);
    reach(&p, iccid, ENABLED);
    Onceiot__Sims__V1__ListEventsResponse *ev = events(&p, iccid);
    cr_assert_str_eq(ev->events[0]->triggered_by, "api_key:77");
}
