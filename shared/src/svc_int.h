/* The runtime's service state, shared by svc.c (main, configuration,
 * health, upkeep) and svc_call_db.c (a call's database access); not part of
 * the public interface (onceiot/svc.h). */
#ifndef ONCEIOT_SVC_INT_H
#define ONCEIOT_SVC_INT_H

#include "onceiot/authrule.h"
#include "onceiot/metrics.h"
#include "onceiot/principal.h"
#include "onceiot/svc.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct svc_rule {
    const char *path; /* the descriptor set's string */
    auth_rule_t rule;
} svc_rule_t;

typedef struct svc_config {
    const char *listen;
    const char *database_url;
    const char *schema_dir;
    const char *log_level;
    bool log_writer;
    const char *principal_key_hex;
    const char *signing_keys;
    const char *metrics_listen; /* NULL: no metrics */
    long pool_size;
    long statement_timeout_ms;
    long connect_timeout_ms;
    long io_threads;
    long workers;
    long queue_limit;
    long max_streams;
    long max_message_bytes;
    long grace_ms;
    long max_connection_age_ms;
    long max_connection_age_grace_ms;
    long health_interval_ms;
    long upkeep_interval_s;
    bool migrate_on_start;
} svc_config_t;

struct svc {
    const svc_def_t *def;
    svc_config_t cfg;
    db_pool_t *db;
    rpc_server_t *srv;
    void *state;
    principal_key_t principal_key;    /* this service's own secret */
    principal_signing_keys_t signing; /* keys for the services it calls */
    svc_rule_t *rules;                /* every method's auth rule, by path */
    size_t n_rules;
    pthread_t health_thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
    int64_t next_upkeep_ms;                          /* health thread only */
    metrics_series_t *m_in_use, *m_waiting, *m_size; /* the pool's gauges */
};

/* Remembers the call's verified principal and scopes its connection
 * (svc_call_db.c). */
void svc__set_who(rpc_call_t *call, const principal_t *p);

#endif
