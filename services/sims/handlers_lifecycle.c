/* Lifecycle actions: Activate, Suspend, Resume, Terminate and Expire. Each
 * locks the SIM, checks the transition from its current status, sets the
 * status and its date and records the event, in one transaction. */
#include "sims.h"

#include <string.h>

typedef struct sims_action {
    const char *to;      /* new status */
    const char *from[5]; /* statuses it may be applied to; NULL-terminated */
    const char *event;   /* event type */
    const char *verb;    /* for messages: "activated" */
} sims_action_t;

static const sims_action_t activate = {"Enabled", {"Disabled"}, "sim_activated", "activated"};
static const sims_action_t suspend = {"Suspended", {"Enabled"}, "sim_suspended", "suspended"};
static const sims_action_t resume = {"Enabled", {"Suspended"}, "sim_resumed", "resumed"};
static const sims_action_t terminate = {
    "Terminated", {"Enabled", "Disabled", "Suspended", "Expired"}, "sim_terminated", "terminated"};
static const sims_action_t expire = {"Expired", {"Enabled", "Suspended"}, "sim_expired", "expired"};

static const db_stmt_t set_status = {
    "sims_set_status",
    "UPDATE sims SET status = $2, "
    "activation_date = CASE WHEN $2 = 'Enabled' THEN coalesce(activation_date, now()) "
    "ELSE activation_date END, "
    "suspension_date = CASE WHEN $2 = 'Suspended' THEN now() ELSE suspension_date END, "
    "termination_date = CASE WHEN $2 = 'Terminated' THEN now() ELSE termination_date END, "
    "expiry_date = CASE WHEN $2 = 'Expired' THEN now() ELSE expiry_date END "
    "WHERE id = $1",
    2};

static int sims__act(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp,
                     const sims_action_t *act)
{
    const Onceiot__Sims__V1__SimActionRequest *r = (const void *)req;
    sims_ctx_t cx;
    int rc = sims_ctx_iccid_or_status(call, r->iccid, &cx);
    if (rc < 0)
        return rc;
    if (strlen(r->reason) > 1000)
        rpc_violation(call, "reason", "must be at most 1000 characters");
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    const char *id, *org, *status;
    if ((rc = sims_begin_lock_or_status(&cx, r->iccid, &id, &org, &status)) < 0)
        return rc;
    bool allowed = false;
    for (int i = 0; act->from[i]; i++)
        allowed |= strcmp(act->from[i], status) == 0;
    if (!allowed)
        return rpc_fail(call, ERR_FAILED_PRECONDITION, "SIM %s is %s and cannot be %s", r->iccid,
                        status, act->verb);
    const char *params[] = {id, act->to};
    if ((rc = sims_exec(&cx, &set_status, params, NULL)) < 0)
        return rc;
    sims_event_in_t ev = {
        .sim_id = id,
        .org = org,
        .iccid = r->iccid,
        .type = act->event,
        .category = "status",
        .description = *r->reason ? r->reason : arena_printf(cx.a, "SIM %s", act->verb),
        .data_json = arena_printf(cx.a, "{\"from\": \"%s\", \"to\": \"%s\"}", status, act->to),
    };
    sims_sim_t *s;
    if ((rc = sims_record_event(&cx, &ev)) < 0 ||
        (rc = sims_load_sim_or_status(&cx, r->iccid, &s)) < 0 || (rc = sims_commit(&cx)) < 0)
        return rc;
    *resp = &s->base;
    return 0;
}

int sims_activate_sim(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    return sims__act(call, req, resp, &activate);
}

int sims_suspend_sim(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    return sims__act(call, req, resp, &suspend);
}

int sims_resume_sim(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    return sims__act(call, req, resp, &resume);
}

int sims_terminate_sim(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    return sims__act(call, req, resp, &terminate);
}

int sims_expire_sim(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    return sims__act(call, req, resp, &expire);
}
