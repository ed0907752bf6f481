/* Calls to other services, each signed with this service's own principal
 * ("service:support"): sims' ResolveSims for the ICCIDs on a ticket, and
 * identity's GetUser for assignees. */
#include "identity/v1/identity.pb-c.h"
#include "onceiot/log.h"
#include "sims/v1/sims.pb-c.h"
#include "support.h"

#include <string.h>

/* A unary call to callee's method as this service, inside the handler's
 * call (its deadline and cancellation propagate). */
static int support__call(support_ctx_t *cx, rpc_channel_t *ch, const char *callee, const char *path,
                         const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                         ProtobufCMessage **resp, rpc_status_t *st)
{
    rpc_md_t *md = arena_alloc(cx->a, 2 * sizeof(*md));
    /* Checked at start (support_init): the keys for sims and identity are there. */
    int rc = svc_sign_as_service(cx->st->svc, callee, path, cx->a, md);
    if (rc < 0)
        return rpc_fail(cx->call, ERR_INTERNAL, "no signing key for %s", callee);
    rpc_call_opts_t o = {.parent = cx->call, .metadata = md, .n_metadata = 2};
    if (rpc_call_remaining_ms(cx->call) == INT64_MAX)
        o.timeout_ms = 10000; /* never wait for ever on another service */
    return rpc_unary(ch, path, req, resp_desc, cx->a, &o, resp, st);
}

int support_check_iccids_or_status(support_ctx_t *cx, const char *field, char **iccids, size_t n,
                                   int64_t org)
{
    if (n == 0)
        return 0;
    Onceiot__Sims__V1__ResolveSimsRequest req = ONCEIOT__SIMS__V1__RESOLVE_SIMS_REQUEST__INIT;
    req.iccids = iccids;
    req.n_iccids = n;
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    int rc =
        support__call(cx, cx->st->sims, "sims", "/onceiot.sims.v1.SimService/ResolveSims",
                      &req.base, &onceiot__sims__v1__resolve_sims_response__descriptor, &resp, &st);
    if (rc < 0) {
        log_msg(LOG_WARN, "resolve_failed", "sims ResolveSims: %s %s", err_grpc_name(st.code),
                st.message);
        return rpc_fail(cx->call, ERR_UNAVAILABLE, "cannot check the ICCIDs now (sims: %s)",
                        err_grpc_name(st.code));
    }
    const Onceiot__Sims__V1__ResolveSimsResponse *r = (const void *)resp;
    /* At most 100 ICCIDs: a nested loop is cheaper than sorting. */
    for (size_t i = 0; i < n; i++) {
        bool ours = false;
        for (size_t k = 0; k < r->n_sims && !ours; k++)
            ours = strcmp(r->sims[k]->iccid, iccids[i]) == 0 && r->sims[k]->organization_id == org;
        if (!ours)
            /* The same words for an unknown SIM and another tenant's. */
            rpc_violation(cx->call, arena_printf(cx->a, "%s[%zu]", field, i),
                          "no SIM %s in the ticket's organization", iccids[i]);
    }
    return rpc_check_violations(cx->call);
}

int support_check_staff_or_status(support_ctx_t *cx, int64_t user_id)
{
    Onceiot__Identity__V1__GetUserRequest req = ONCEIOT__IDENTITY__V1__GET_USER_REQUEST__INIT;
    req.id = user_id;
    ProtobufCMessage *resp = NULL;
    rpc_status_t st;
    int rc = support__call(cx, cx->st->identity, "identity",
                           "/onceiot.identity.v1.IdentityService/GetUser", &req.base,
                           &onceiot__identity__v1__user__descriptor, &resp, &st);
    if (rc < 0 && st.code == GRPC_STATUS_NOT_FOUND)
        return rpc_fail(cx->call, ERR_FAILED_PRECONDITION, "user %lld is not a staff member",
                        (long long)user_id);
    if (rc < 0) {
        log_msg(LOG_WARN, "get_user_failed", "identity GetUser: %s %s", err_grpc_name(st.code),
                st.message);
        return rpc_fail(cx->call, ERR_UNAVAILABLE, "cannot check the assignee now (identity: %s)",
                        err_grpc_name(st.code));
    }
    const Onceiot__Identity__V1__User *u = (const void *)resp;
    if (!u->is_superuser)
        return rpc_fail(cx->call, ERR_FAILED_PRECONDITION, "user %lld is not a staff member",
                        (long long)user_id);
    if (!u->is_active)
        return rpc_fail(cx->call, ERR_FAILED_PRECONDITION, "user %lld is deactivated",
                        (long long)user_id);
    return 0;
}
