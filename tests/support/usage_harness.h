/* Calling the usage service in tests: real onceiot-sims (sims_harness) and
 * onceiot-usage processes on fresh schemas of the test cluster, with the
 * test playing the gateway (principals signed with the shared key). Helpers
 * restart either process on its port, keeping its data, for the crash
 * tests. */
#ifndef ONCEIOT_TEST_USAGE_HARNESS_H
#define ONCEIOT_TEST_USAGE_HARNESS_H

#include "onceiot/client.h"
#include "onceiot/principal.h"
#include "proc_harness.h"
#include "sims_harness.h"
#include "usage/v1/usage.pb-c.h"

#include <stdbool.h>
#include <stdint.h>

typedef Onceiot__Usage__V1__UsageRecord usage_rec_t;

typedef struct usage_h {
    ph_proc_t proc; /* onceiot-usage */
    rpc_channel_t *ch;
    const char *const *env; /* extra environment of usage (restarts reuse it) */
} usage_h_t;

extern usage_h_t usage_h;

/* A suite running sims and usage for each test, usage with a short outbox
 * lease (so a killed dispatcher's rows are taken again quickly), and the
 * test's arena in `arena`. */
#define USAGE_H_SUITE(name)                                                                        \
    static arena_t *arena;                                                                         \
    static void usage_h__setup(void)                                                               \
    {                                                                                              \
        static const char *const env[] = {"ONCEIOT_OUTBOX_LEASE_MS=1500", NULL};                   \
        usage_h_start(env);                                                                        \
        arena = sims_h_thread_arena();                                                             \
    }                                                                                              \
    static void usage_h__teardown(void)                                                            \
    {                                                                                              \
        usage_h_stop();                                                                            \
    }                                                                                              \
    TestSuite(name, .init = usage_h__setup, .fini = usage_h__teardown, .timeout = 300)

/* sims_h_start, then onceiot-usage on a dropped "usage" schema with env
 * ("K=V", NULL-terminated, may be NULL; must outlive the suite) added. */
void usage_h_start(const char *const *env);
/* Stops both (SIGTERM), expecting clean exits without sanitizer reports. */
void usage_h_stop(void);
/* Sends sig to usage and waits for it to end (SIGKILL: no clean exit
 * expected), then starts it again on the same port, keeping its schema. */
void usage_h_restart_usage(int sig);
/* Spawns "onceiot-usage cmd" with usage's environment, env (may be NULL)
 * first, and returns at once (ph_stop(p, 0, ...) waits for its exit). */
void usage_h_spawn_command(ph_proc_t *p, const char *cmd, const char *const *env);
/* Freezes sims (SIGSTOP), so the next deliveries hang inside their call. */
void usage_h_freeze_sims(void);
/* Waits up to timeout_ms until the dispatcher holds an outbox row (a
 * delivery under way); false if none. */
bool usage_h_wait_leased(int timeout_ms);
/* Waits until the dispatcher holds an outbox row (inside a call to the
 * frozen sims), kills usage with SIGKILL there and starts it again, then
 * thaws sims, which runs whatever reached it. */
void usage_h_kill_usage_while_leased(void);
/* Stops sims (SIGTERM) / starts it again on the same port with its data. */
void usage_h_stop_sims(void);
void usage_h_start_sims(void);

/* Principals: the telemetry pipeline (superuser, usage:write), a reader of
 * one organization (usage:read, sims:read), an operator (superuser,
 * usage:read). */
principal_t usage_h_writer(void);
principal_t usage_h_reader(int64_t org);
principal_t usage_h_operator(void);

/* Calls UsageService/<method> as who; resp in a. Returns like rpc_unary. */
int usage_h_call(const char *method, const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *resp_desc, const principal_t *who, arena_t *a,
                 void *resp, rpc_status_t *st);

/* A timestamp in a at Unix microseconds us, and back (0 for NULL). */
Google__Protobuf__Timestamp *usage_h_ts(arena_t *a, int64_t us);
int64_t usage_h_ts_us(const Google__Protobuf__Timestamp *t);

typedef Onceiot__Usage__V1__ConnectivitySample usage_sample_t;
/* A connectivity sample in a: connected ones are on LTE with op (NULL:
 * Telekom) in DE, with a cell and signal; disconnected ones carry no
 * network. */
usage_sample_t *usage_h_sample(arena_t *a, const char *iccid, int64_t us, bool connected,
                               const char *op);
/* Sends n_batches batches (ids[b], ns[b] samples each) over one
 * IngestConnectivity stream as who; the answer in *out (a; may be NULL).
 * Returns like rpc_stream_finish. No Criterion asserts: threads call it. */
int usage_h_ingest_conn(arena_t *a, const principal_t *who, const char *const *ids,
                        usage_sample_t ***batches, const size_t *ns, size_t n_batches,
                        Onceiot__Usage__V1__IngestConnectivityResponse **out, rpc_status_t *st);

/* The connectivity tests' calls, in sims_h.arena (the test's own thread
 * only), asserting unless they return a code: one batch
 * as the writer (usage_h_ingest_conn) and the same, asserting it was
 * stored; GetConnectivity as who, and as the operator; the SIM's
 * connectivity events in sims, oldest first (*n of them); the SIM in sims. */
int usage_h_conn_ingest(const char *id, usage_sample_t **v, size_t n,
                        Onceiot__Usage__V1__IngestConnectivityResponse **out, rpc_status_t *st);
void usage_h_conn_ingest_ok(const char *id, usage_sample_t **v, size_t n);
int usage_h_conn_get(const principal_t *who, const char *iccid,
                     Onceiot__Usage__V1__ConnectivityState **out, rpc_status_t *st);
Onceiot__Usage__V1__ConnectivityState *usage_h_conn_state(const char *iccid);
Onceiot__Sims__V1__SimEvent **usage_h_conn_events(const char *iccid, size_t *n);
Onceiot__Sims__V1__Sim *usage_h_sim_of(const char *iccid);
/* Asserts the SIM's events are lost/restored alternating (the first lost
 * when first_lost), numbered 1..want in order, from usage, at the given
 * times (µs; at may be NULL), and that sims counts want. */
void usage_h_assert_conn_events(const char *iccid, size_t want, const int64_t *at, bool first_lost);
/* Waits up to 90 s for the outbox to drain; fails naming what is pending,
 * the connectivity batches sims applied and each SIM's count. */
void usage_h_drain(void);

/* A record in a (country, mcc, mnc may be NULL). */
usage_rec_t *usage_h_rec(arena_t *a, const char *iccid, int64_t ts_us, int64_t rx, int64_t tx,
                         int32_t mo, int32_t mt, const char *country, const char *mcc,
                         const char *mnc);
/* IngestUsageBatch of n records as the writer. */
int usage_h_ingest(arena_t *a, const char *batch_id, usage_rec_t **recs, size_t n,
                   Onceiot__Usage__V1__BatchResult **out, rpc_status_t *st);
/* True when a violation of st names field exactly. */
bool usage_h_violation(arena_t *a, const rpc_status_t *st, const char *field);

/* Creates a SIM of org in sims (data quota data_volume bytes, SMS quota
 * sms_volume) and returns its ICCID (arena of sims_h). */
const char *usage_h_sim(int64_t org, long long n, int64_t data_volume, int64_t sms_volume);

/* Opens WatchEvents of one SIM as a user of org (category NULL: any), for
 * 30 s, the request sent; memory in a. The caller reads the stream (and may
 * wait for the subscription with rpc_stream_headers). */
rpc_stream_t *usage_h_watch(arena_t *a, int64_t org, const char *iccid, const char *category);

/* Unix microseconds now, and at the start of the current UTC hour. */
int64_t usage_h_now_us(void);
int64_t usage_h_hour_us(void);

/* One integer from SQL run as the test cluster's superuser. */
long long usage_h_sql_int(const char *sql);
/* Asserts that every rollup (hourly, daily, per network, per organization
 * per day with its active SIMs) equals a recomputation from the raw rows,
 * in both directions. */
void usage_h_assert_rollups_exact(void);
/* Waits until the usage outbox is empty (every batch reached the quotas);
 * false after timeout_ms. */
bool usage_h_wait_outbox_empty(int timeout_ms);

#endif
