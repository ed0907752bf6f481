/* A small onceiot stack for gateway tests: identity (with a bootstrap admin
 * and its API key), the test service and onceiot-gateway-test, all real
 * processes on free ports, against the test PostgreSQL; optionally
 * onceiot-sims behind the gateway too (sh_start_with_sims), and then
 * onceiot-commerce and onceiot-usage (sh_add_commerce, sh_add_usage). */
#ifndef ONCEIOT_TEST_STACK_HARNESS_H
#define ONCEIOT_TEST_STACK_HARNESS_H

#include "proc_harness.h"

#include <stdbool.h>

/* The password of the bootstrap admin ("admin"); tests give their users the same. */
#define SH_PASSWORD "a-long-enough-password"

typedef struct sh_stack {
    ph_proc_t identity;
    ph_proc_t testsvc;
    ph_proc_t gateway;
    ph_proc_t sims;         /* pid 0 unless started by sh_start_with_sims */
    ph_proc_t commerce;     /* pid 0 unless started by sh_add_commerce */
    ph_proc_t usage;        /* pid 0 unless started by sh_add_usage */
    char principal_key[65]; /* hex, shared by the three */
    char admin_key[128];    /* the bootstrap admin's API key (superuser, scope "admin") */
    char key_file[256];
    char signing_seed[65]; /* identity's ONCEIOT_TOKEN_SIGNING_KEY (an Ed25519 seed, hex) */
    char pepper[65];       /* identity's ONCEIOT_API_KEY_PEPPER */
} sh_stack_t;

/* Starts identity on a freshly dropped "identity" schema, the test service
 * and the gateway, each with its env ("K=V", NULL-terminated, may be NULL)
 * added, and waits until all are SERVING and the gateway has identity's
 * verification keys. Fails the test on any error. */
void sh_start(sh_stack_t *s, const char *const *identity_env, const char *const *gateway_env);
/* sh_start plus onceiot-sims on a freshly dropped "sims" schema (the
 * superuser first makes sure pg_partman, in schema partman, and pg_trgm
 * exist), with the stack's principal key; the gateway routes
 * onceiot.sims.v1 to it instead of to an unused port. */
void sh_start_with_sims(sh_stack_t *s, const char *const *identity_env,
                        const char *const *gateway_env);
/* sh_start_with_sims with sims_env added to sims' environment too. */
void sh_start_with_sims_env(sh_stack_t *s, const char *const *identity_env,
                            const char *const *sims_env, const char *const *gateway_env);
/* After sh_start_with_sims: onceiot-commerce on a freshly dropped "commerce"
 * schema (calling that sims, outbox lease 2 s), then the gateway again
 * (with gateway_env) routing onceiot.commerce.v1 to it. */
void sh_add_commerce(sh_stack_t *s, const char *const *gateway_env);
/* The same for onceiot-usage on a freshly dropped "usage" schema, the
 * gateway then routing onceiot.usage.v1 to it. */
void sh_add_usage(sh_stack_t *s, const char *const *gateway_env);
/* Kills usage with SIGKILL while its dispatcher delivers a batch's quota
 * usage: freezes sims (SIGSTOP), calls commit(arg) (may be NULL; it
 * ingests a batch, which needs no sims once usage has cached its ICCIDs),
 * waits up to timeout_ms until an outbox row is leased (its ApplyUsage then
 * hangs in the frozen sims), kills usage, thaws sims and starts usage again
 * on its port with its data. Returns whether a leased row was seen (false:
 * killed at the timeout anyway). */
bool sh_kill_usage_mid_delivery(sh_stack_t *s, void (*commit)(void *), void *arg, int timeout_ms);
/* Sends sig to commerce, waits for its end, starts it again on its port
 * with its data and waits until it is SERVING. */
void sh_restart_commerce(sh_stack_t *s, int sig);
/* kill -9 of sims (started by sh_start_with_sims); sh_restart_sims starts
 * it again on the same port with its data and waits until it is SERVING. */
void sh_kill_sims(sh_stack_t *s);
void sh_restart_sims(sh_stack_t *s);
/* Starts (again) only the gateway, e.g. after sh_stop_gateway. */
void sh_start_gateway(sh_stack_t *s, const char *const *gateway_env);
/* The start-up race: the test service, then the gateway before identity
 * (which is given a port nothing listens on yet). Returns once the gateway
 * answers health; sh_start_identity then starts identity on that port. */
void sh_start_gateway_first(sh_stack_t *s, const char *const *gateway_env);
void sh_start_identity(sh_stack_t *s, const char *const *identity_env);
/* kill -9 of the test service, then the same service started again on the
 * same port with its data (waits until it is SERVING). */
void sh_restart_testsvc(sh_stack_t *s);
/* kill -9 of identity, sims, commerce, usage or the gateway (p is
 * &s->identity, ...), then the same process started again on its port with
 * its data and the stack's own environment (a test's extra env is not
 * repeated); waits until it is SERVING. */
void sh_kill_restart(sh_stack_t *s, ph_proc_t *p);
/* SIGTERM to every process still running; expects clean exits and no
 * sanitizer reports. */
void sh_stop(sh_stack_t *s);

#endif
