/* Running real onceiot processes in tests: free ports, start with an
 * environment, wait for SERVING, signal and reap, and check the process's
 * log for sanitizer reports. */
#ifndef ONCEIOT_TEST_PROC_HARNESS_H
#define ONCEIOT_TEST_PROC_HARNESS_H

#include "onceiot/principal.h"

#include <stdbool.h>
#include <sys/types.h>

typedef struct ph_proc {
    pid_t pid; /* 0 when not running */
    int port;
    char addr[64]; /* "127.0.0.1:<port>" */
    char log[512]; /* stdout+stderr of the process */
} ph_proc_t;

/* A TCP port on 127.0.0.1 that nothing listens on right now. */
int ph_free_port(void);
/* ${ONCEIOT_BUILD_DIR}/<rel>, in a static buffer per call site's copy (mem_printf). */
char *ph_build_path(const char *rel);
char *ph_source_path(const char *rel);

/* Starts binary (a path) with the current environment plus env ("K=V" entries,
 * NULL-terminated; may be NULL) plus ONCEIOT_LISTEN on a free port. Does not
 * wait. Asserts that the fork worked. */
void ph_spawn(ph_proc_t *p, const char *binary, const char *const *env);
/* ph_spawn on a given port (say, the port of a process that was killed, so
 * that its clients find it again). */
void ph_spawn_at(ph_proc_t *p, int port, const char *binary, const char *const *env);
/* ph_spawn_at with one argument (a subcommand; NULL: none). */
void ph_spawn_cmd(ph_proc_t *p, int port, const char *binary, const char *arg,
                  const char *const *env);
/* Health of a service name at addr: 0 UNKNOWN, 1 SERVING, 2 NOT_SERVING,
 * -1 when the call failed. */
int ph_health(const char *addr, const char *service);
/* Polls until health(addr, service) == want or timeout_ms pass. */
bool ph_wait_health(const char *addr, const char *service, int want, int timeout_ms);
/* ph_spawn + wait until SERVING (asserts, printing the log's tail on failure). */
void ph_start(ph_proc_t *p, const char *binary, const char *const *env);
void ph_start_at(ph_proc_t *p, int port, const char *binary, const char *const *env);
/* Sends sig and waits up to timeout_ms for the exit (SIGKILL after that).
 * Returns the exit code, or 128+signal if killed by one. */
int ph_stop(ph_proc_t *p, int sig, int timeout_ms);
/* True when the process's log has a sanitizer or leak report. */
bool ph_log_has_sanitizer_report(const ph_proc_t *p);
/* True when the log contains needle. */
bool ph_log_contains(const ph_proc_t *p, const char *needle);

/* The key issuer signs principals with for a test service whose
 * ONCEIOT_PRINCIPAL_KEY is secret_hex (tests give every process the same
 * secret, so the key does not depend on the callee). Asserts on bad hex. */
void ph_issuer_key(const char *secret_hex, const char *issuer, principal_key_t *out);
/* "ONCEIOT_PRINCIPAL_SIGNING_KEYS=<callee>:<key>,..." for issuer and each of
 * the NULL-terminated callees (mem_free it). */
char *ph_signing_keys_env(const char *secret_hex, const char *issuer, const char *const *callees);
/* Starts onceiot-testsvc against the test database (ONCEIOT_TEST_PG_URL) with
 * a freshly dropped "testsvc" schema; extra env as for ph_spawn. */
void ph_start_testsvc(ph_proc_t *p, const char *const *env);
/* The same on a given port; fresh: drop the schema first (else keep it, as a
 * restart does). */
void ph_start_testsvc_at(ph_proc_t *p, int port, bool fresh, const char *const *env);

#endif
