/* Calling the sims service in tests: a real onceiot-sims process on a fresh
 * "sims" schema of the test cluster, and typed calls made as a chosen
 * principal.
 *
 * By default the tests play the gateway: each call carries a principal signed
 * with the key the process was started with. To run the same tests through
 * the gateway, point sims_h.target at it and set sims_h.authorization (sent as
 * "authorization: Bearer <value>" instead of a signed principal). */
#ifndef ONCEIOT_TEST_SIMS_HARNESS_H
#define ONCEIOT_TEST_SIMS_HARNESS_H

#include "onceiot/client.h"
#include "onceiot/pbstruct.h"
#include "onceiot/principal.h"
#include "proc_harness.h"
#include "sims/v1/sims.pb-c.h"

typedef struct sims_h {
    ph_proc_t proc;              /* the sims process */
    const char *target;          /* where calls go (proc.addr unless changed) */
    const char *authorization;   /* NULL: sign principals; else a bearer credential */
    const char *secret_hex;      /* the process's ONCEIOT_PRINCIPAL_KEY */
    principal_key_t key;         /* the gateway's key for the process */
    principal_key_t usage_key;   /* the usage service's (ApplyUsage, RecordEvents) */
    principal_key_t network_key; /* the network side's (ExpireSim, ReceiveSms, ...) */
    rpc_channel_t *ch;
    arena_t *arena; /* freed by sims_h_stop */
} sims_h_t;

extern sims_h_t sims_h;

/* Drops the sims schema, makes sure pg_partman (schema partman) and pg_trgm
 * exist, starts onceiot-sims and opens a channel. For a suite's .init. */
void sims_h_start(void);
/* Stops the process (asserting a clean exit without sanitizer reports). */
void sims_h_stop(void);

/* A new arena for a test thread, freed by sims_h_stop after the channel
 * (call it from the test's own thread and hand the arena over: it asserts):
 * the runtime's client hands metadata to core without copying it, and the
 * channel's header compressor may look at earlier calls' values later. */
arena_t *sims_h_thread_arena(void);

/* Principals the tests act as. */
principal_t sims_h_user(int64_t org);  /* ROLE_USER, sims:read + sims:write */
principal_t sims_h_admin(int64_t org); /* ROLE_ADMIN */
principal_t sims_h_root(void);         /* a superuser (all organizations) */

/* Calls SimService/<method> as who. Returns like rpc_unary; the response is
 * in arena (sims_h.arena when NULL). Thread-safe with distinct arenas. */
int sims_h_call(const char *method, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *resp_desc, const principal_t *who, arena_t *arena,
                ProtobufCMessage **resp, rpc_status_t *st);

/* Shorthands over sims_h_call for the common cases; they assert success, so
 * call them from the test's own thread only. sims_h_create registers a SIM
 * (1000 bytes of data, 10 SMS) for who's organization as the operator's
 * staff do (a superuser: tenants may not register SIMs). */
Onceiot__Sims__V1__Sim *sims_h_create(const principal_t *who, const char *iccid);
Onceiot__Sims__V1__Sim *sims_h_act(const principal_t *who, const char *method, const char *iccid);
/* GetSim and ListSims as who, returning like sims_h_call (the answer in
 * sims_h.arena); sims_h_count_all pages through req (from its first page)
 * and counts, asserting each page succeeds. */
int sims_h_get(const principal_t *who, const char *iccid, Onceiot__Sims__V1__Sim **out,
               rpc_status_t *st);
int sims_h_list(const principal_t *who, Onceiot__Sims__V1__ListSimsRequest *req,
                Onceiot__Sims__V1__ListSimsResponse **out, rpc_status_t *st);
size_t sims_h_count_all(const principal_t *who, Onceiot__Sims__V1__ListSimsRequest *req);
/* Imports n SIMs numbered from first into who's organization as the
 * operator's staff (a superuser), with labels, IMEIs, MSISDNs, addresses,
 * tags and a quota made from the number; returns the call's result and, on
 * success, how many were imported. */
int sims_h_import(const principal_t *who, long long first, int n, rpc_status_t *st,
                  int32_t *imported);
/* sims_h_import's request, in sims_h.arena: the test's own thread only. */
Onceiot__Sims__V1__ImportSimsRequest *sims_h_import_request(const principal_t *who, long long first,
                                                            int n);
/* True when a violation in st's BadRequest names field exactly. */
bool sims_h_violation(const rpc_status_t *st, const char *field);
/* An ICCID made of prefix and a number, 19 digits. */
const char *sims_h_iccid(long long n);

/* JSON objects (SIM metadata, event data) as the tests write them: the
 * Struct of JSON object text (asserting it is one), and the canonical text
 * of a Struct (compact, sorted keys, integral numbers as integers; NULL is
 * "{}"), both in sims_h.arena: the test's own thread only. */
Google__Protobuf__Struct *sims_h_struct(const char *json);
const char *sims_h_json(const Google__Protobuf__Struct *s);

#endif
