/* Connectivity ingest (IngestConnectivity) and its delivery to sims.
 *
 * One batch is one transaction:
 *   1. claim the batch id in ingested_connectivity_batches (a replay finds it
 *      and stops; a concurrent copy waits on the key until the first commits);
 *   2. lock the batch's SIMs' state rows in sim_id order, so concurrent
 *      batches of one SIM take turns and never deadlock. When a SIM has no
 *      row yet, the transaction is rolled back and run again from step 1,
 *      this time creating the missing rows (empty, in sim_id order) before
 *      the lock: a batch of known SIMs, the usual case, skips that insert;
 *   3. in C, each SIM's samples newer than its state, in time order: each
 *      change of connected is a transition numbered after the state's count;
 *      the newest sample becomes the state. Older samples are history only;
 *   4. the state rows and the samples (one statement each over unnest()
 *      arrays; a sample stored before under another batch id stays as it was);
 *   5. one outbox row with the transitions and changed networks, for
 *      sims.ApplyConnectivity (keyed by the batch id), then COMMIT. */
#include "onceiot/log.h"
#include "usage.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CONN_MAX_VIOLATIONS 32

/* True when s has no control characters and at most max bytes. */
static bool conn__text(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

/* One sample's problems as violations on samples[i].<field>; returns how
 * many. */
static int conn__check_sample(rpc_call_t *call, size_t i,
                              const Onceiot__Usage__V1__ConnectivitySample *s, int64_t now_us)
{
    arena_t *a = rpc_call_arena(call);
    const usage_at_t at = {"samples", i};
    int bad = 0;
#define BAD(field, ...)                                                                            \
    do {                                                                                           \
        rpc_violation(call, usage_field_name(a, at, field), __VA_ARGS__);                          \
        bad++;                                                                                     \
    } while (0)
    if (!usage_valid_iccid(call, at, "iccid", s->iccid))
        bad++;
    if (!usage_check_time(call, at, "timestamp", s->timestamp, now_us, USAGE_CONN_RETENTION_DAYS))
        bad++;
    if (s->signal_strength && (s->signal_strength->value < -150 || s->signal_strength->value > 0))
        BAD("signal_strength", "must be -150 to 0 dBm");
    if (s->signal_quality && (s->signal_quality->value < 0 || s->signal_quality->value > 100))
        BAD("signal_quality", "must be 0 to 100");
    const usage_network_t net = {s->mcc, s->mnc, s->country_code, s->rat};
    bad += usage_check_network(call, at, "country_code", &net);
    if (!conn__text(s->cell_id, 50))
        BAD("cell_id", "must be at most 50 characters without control characters");
    if (!conn__text(s->operator_name, 100))
        BAD("operator_name", "must be at most 100 characters without control characters");
    if (!conn__text(s->apn, 100))
        BAD("apn", "must be at most 100 characters without control characters");
#undef BAD
    return bad;
}

/* Sample indices sorted by (ICCID, time): the order duplicates are found in
 * and, per SIM, the order transitions are computed in. */
typedef struct conn_ref {
    const Onceiot__Usage__V1__ConnectivitySample *s;
    size_t i;   /* index in the batch */
    int64_t us; /* its time */
    usage_sim_t sim;
} conn_ref_t;

static int conn__cmp_ref(const void *x, const void *y)
{
    const conn_ref_t *a = x, *b = y;
    int c = strcmp(a->s->iccid, b->s->iccid);
    if (c)
        return c;
    if (a->us != b->us)
        return a->us < b->us ? -1 : 1;
    return a->i < b->i ? -1 : a->i > b->i;
}

static int conn__cmp_sim(const void *x, const void *y)
{
    const conn_ref_t *a = x, *b = y;
    if (a->sim.sim_id != b->sim.sim_id)
        return a->sim.sim_id < b->sim.sim_id ? -1 : 1;
    if (a->us != b->us)
        return a->us < b->us ? -1 : 1;
    return 0;
}

bool usage_valid_connectivity(rpc_call_t *call,
                              const Onceiot__Usage__V1__IngestConnectivityBatchRequest *b,
                              int64_t now_us)
{
    int bad = usage_check_batch_shape(call, b->batch_id, "samples", b->n_samples);
    if (bad < 0)
        return false;
    for (size_t i = 0; i < b->n_samples && bad < CONN_MAX_VIOLATIONS; i++)
        bad += conn__check_sample(call, i, b->samples[i], now_us);
    if (bad)
        return false;
    /* Two samples of one SIM at one instant contradict each other. */
    arena_t *a = rpc_call_arena(call);
    conn_ref_t *v = arena_alloc(a, b->n_samples * sizeof(*v));
    for (size_t i = 0; i < b->n_samples; i++)
        v[i] = (conn_ref_t){b->samples[i], i, usage_ts_us(b->samples[i]->timestamp), {0, 0}};
    qsort(v, b->n_samples, sizeof(*v), conn__cmp_ref);
    for (size_t k = 1; k < b->n_samples && bad < CONN_MAX_VIOLATIONS; k++)
        if (v[k].us == v[k - 1].us && strcmp(v[k].s->iccid, v[k - 1].s->iccid) == 0) {
            rpc_violation(call, arena_printf(a, "samples[%zu].timestamp", v[k].i),
                          "samples[%zu] has the same SIM and timestamp", v[k - 1].i);
            bad++;
        }
    return bad == 0;
}

static const db_stmt_t claim_conn = {
    "usage_claim_conn",
    "INSERT INTO ingested_connectivity_batches (batch_id, samples) VALUES ($1, $2) "
    "ON CONFLICT DO NOTHING "
    "RETURNING (extract(epoch FROM committed_at) * 1000000)::bigint AS at_us",
    2};

static const db_stmt_t replayed_conn = {
    "usage_replayed_conn",
    "SELECT samples AS records, (extract(epoch FROM committed_at) * 1000000)::bigint AS at_us "
    "FROM ingested_connectivity_batches WHERE batch_id = $1",
    1};

/* Creates the missing state rows (sim_id order: a concurrent batch creating
 * the same rows waits on the first it shares and holds none of ours), run
 * only when the lock below found a SIM without one: it costs an index probe
 * per SIM (about 1.8 ms for 1,000 SIMs) even when every row exists. The
 * lock takes every row in sim_id order and reads each SIM's state before
 * the batch. A lock without a write: the UPDATE below writes each row once. */
static const db_stmt_t create_state = {
    "usage_create_conn_state",
    "INSERT INTO sim_connectivity_state (sim_id, organization_id, iccid) "
    "SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[]) ON CONFLICT (sim_id) DO NOTHING",
    3};

static const db_stmt_t lock_state = {
    "usage_lock_conn_state",
    "SELECT sim_id, connected, transitions, rat, country_code, operator_name, "
    "(extract(epoch FROM last_seen) * 1000000)::bigint AS last_us "
    "FROM sim_connectivity_state WHERE sim_id = ANY($1::bigint[]) ORDER BY sim_id FOR UPDATE",
    1};

static const db_stmt_t update_state = {
    "usage_update_conn_state",
    "UPDATE sim_connectivity_state s SET connected = u.connected, "
    "since = coalesce(" EPOCH_US(
        "u.since") ", s.since), "
                   "last_seen = " EPOCH_US(
                       "u.last_seen") ", cell_id = u.cell_id, signal_strength = u.signal_strength, "
                                      "signal_quality = u.signal_quality, rat = u.rat, "
                                      "country_code = u.country_code, "
                                      "operator_name = u.operator_name, mcc = u.mcc, mnc = u.mnc, "
                                      "apn = u.apn, "
                                      "transitions = u.transitions, updated_at = now() "
                                      "FROM unnest($1::bigint[], $2::bool[], $3::bigint[], "
                                      "$4::bigint[], $5::text[], "
                                      "$6::bigint[], $7::bigint[], $8::text[], $9::text[], "
                                      "$10::text[], $11::text[], "
                                      "$12::text[], $13::text[], $14::bigint[]) AS u(sim_id, "
                                      "connected, since, last_seen, cell_id, "
                                      "signal_strength, signal_quality, rat, country_code, "
                                      "operator_name, mcc, mnc, apn, "
                                      "transitions) WHERE s.sim_id = u.sim_id",
    14};

/* The samples: plain, and (after a unique violation) keeping a sample
 * stored before. */
#define CONN_INSERT_SAMPLES                                                                        \
    "INSERT INTO sim_connectivity (sim_id, \"timestamp\", organization_id, iccid, connected, "     \
    "cell_id, signal_strength, signal_quality, rat, country_code, operator_name, mcc, mnc, apn, "  \
    "batch_id) "                                                                                   \
    "SELECT u.sim_id, " EPOCH_US("u.us") ", u.org, u.iccid, u.connected, u.cell, u.ss, u.sq, "     \
                                         "u.rat, u.cc, u.op, u.mcc, u.mnc, u.apn, $15 "            \
                                         "FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], "  \
                                         "$4::text[], $5::bool[], $6::text[], "                    \
                                         "$7::bigint[], $8::bigint[], $9::text[], $10::text[], "   \
                                         "$11::text[], $12::text[], $13::text[], "                 \
                                         "$14::text[]) AS u(sim_id, us, org, iccid, connected, "   \
                                         "cell, ss, sq, rat, cc, op, mcc, mnc, apn) "
static const db_stmt_t insert_samples = {"usage_insert_conn", CONN_INSERT_SAMPLES, 15};
static const db_stmt_t insert_samples_keep = {"usage_insert_conn_keep",
                                              CONN_INSERT_SAMPLES " ON CONFLICT DO NOTHING", 15};

static const char *conn__nz(const char *s)
{
    return s && *s ? s : NULL;
}

static bool conn__same(const char *stored, const char *sample)
{
    return strcmp(stored ? stored : "", sample) == 0;
}

/* Columns shared by the state update and the samples, in the statements'
 * order: the sample's own values. */
enum { C_CELL, C_SS, C_SQ, C_RAT, C_CC, C_OP, C_MCC, C_MNC, C_APN, C_NCOLS };

/* A column array of n entries in a. */
static const char **conn__col(arena_t *a, size_t n)
{
    return arena_alloc(a, (n + 1) * sizeof(char *));
}

/* Those columns for n rows: text, and the two signals as integers. */
typedef struct conn_cols {
    const char **text[C_NCOLS]; /* all but C_SS and C_SQ */
    int64_t *sig[2];            /* C_SS, C_SQ */
    bool *sig_null[2];
} conn_cols_t;

static void conn__cols_init(arena_t *a, conn_cols_t *c, size_t n)
{
    for (int k = 0; k < C_NCOLS; k++)
        c->text[k] = k == C_SS || k == C_SQ ? NULL : conn__col(a, n);
    for (int k = 0; k < 2; k++) {
        c->sig[k] = arena_alloc(a, (n + 1) * sizeof(int64_t));
        c->sig_null[k] = arena_alloc(a, n + 1);
    }
}

/* Row j of c gets sample s's values. */
static void conn__cols_set(conn_cols_t *c, size_t j,
                           const Onceiot__Usage__V1__ConnectivitySample *s)
{
    const Google__Protobuf__Int32Value *sig[2] = {s->signal_strength, s->signal_quality};
    for (int k = 0; k < 2; k++) {
        c->sig_null[k][j] = sig[k] == NULL;
        c->sig[k][j] = sig[k] ? sig[k]->value : 0;
    }
    c->text[C_CELL][j] = conn__nz(s->cell_id);
    c->text[C_RAT][j] = conn__nz(s->rat);
    c->text[C_CC][j] = conn__nz(s->country_code);
    c->text[C_OP][j] = conn__nz(s->operator_name);
    c->text[C_MCC][j] = conn__nz(s->mcc);
    c->text[C_MNC][j] = conn__nz(s->mnc);
    c->text[C_APN][j] = conn__nz(s->apn);
}

/* The C_NCOLS parameters of c's n rows. */
static void conn__cols_values(arena_t *a, const conn_cols_t *c, size_t n, db_value_t *out)
{
    for (int k = 0; k < C_NCOLS; k++)
        out[k] = k == C_SS || k == C_SQ
                     ? db_value_int8_array(a, c->sig[k - C_SS], c->sig_null[k - C_SS], n)
                     : db_value_text_array(a, c->text[k], n);
}

static Onceiot__Sims__V1__ConnectivityTransition *
conn__transition(arena_t *a, int64_t seq, const Onceiot__Usage__V1__ConnectivitySample *s,
                 int64_t us)
{
    Onceiot__Sims__V1__ConnectivityTransition *t = arena_alloc(a, sizeof(*t));
    onceiot__sims__v1__connectivity_transition__init(t);
    t->seq = seq;
    t->connected = s->connected;
    t->occurred_at = usage_ts(a, us);
    t->rat = s->rat;
    t->country = s->country_code;
    t->operator_name = s->operator_name;
    t->cell_id = s->cell_id;
    return t;
}

/* What the batch changes: the state rows to write and the sims message. */
typedef struct conn_plan {
    size_t n_state;
    int64_t *sim, *since_us, *last_us, *seq; /* update_state's columns */
    bool *connected, *since_null;
    conn_cols_t cols;
    Onceiot__Sims__V1__ApplyConnectivityRequest msg;
} conn_plan_t;

/* Step 3: walks each SIM's samples (v sorted by sim and time) against its
 * locked state (res of lock_state, in sim_id order). */
static void conn__plan(arena_t *a, const conn_ref_t *v, size_t n, const PGresult *res,
                       const char *batch_id, conn_plan_t *p)
{
    int rows = PQntuples(res);
    memset(p, 0, sizeof(*p));
    size_t m = (size_t)rows + 1;
    p->sim = arena_alloc(a, m * sizeof(int64_t));
    p->since_us = arena_alloc(a, m * sizeof(int64_t));
    p->last_us = arena_alloc(a, m * sizeof(int64_t));
    p->seq = arena_alloc(a, m * sizeof(int64_t));
    p->connected = arena_alloc(a, m);
    p->since_null = arena_alloc(a, m);
    conn__cols_init(a, &p->cols, m);
    onceiot__sims__v1__apply_connectivity_request__init(&p->msg);
    p->msg.batch_id = (char *)batch_id;
    p->msg.items = arena_alloc(a, ((size_t)rows + 1) * sizeof(*p->msg.items));
    size_t i = 0;
    for (int r = 0; r < rows; r++) {
        int64_t sim_id = db_get_int(res, r, "sim_id", 0);
        bool known = db_get(res, r, "connected") != NULL;
        bool connected = known && db_get_bool(res, r, "connected");
        int64_t last_us = db_get_int(res, r, "last_us", INT64_MIN);
        int64_t seq = db_get_int(res, r, "transitions", 0);
        while (i < n && v[i].sim.sim_id < sim_id)
            i++;
        size_t end = i;
        while (end < n && v[end].sim.sim_id == sim_id)
            end++;
        Onceiot__Sims__V1__ConnectivityItem *it = arena_alloc(a, sizeof(*it));
        onceiot__sims__v1__connectivity_item__init(it);
        it->iccid = (char *)v[i].s->iccid;
        it->transitions = arena_alloc(a, (end - i + 1) * sizeof(*it->transitions));
        const conn_ref_t *latest = NULL;
        int64_t since_us = 0;
        bool new_run = false; /* since_us starts a run (else the stored since stays) */
        for (size_t k = i; k < end; k++) {
            if (v[k].us <= last_us)
                continue; /* older than the state: history only */
            if (!known) {
                since_us = v[k].us;
                known = new_run = true;
            } else if (v[k].s->connected != connected) {
                it->transitions[it->n_transitions++] = conn__transition(a, ++seq, v[k].s, v[k].us);
                since_us = v[k].us;
                new_run = true;
            }
            connected = v[k].s->connected;
            latest = &v[k];
        }
        i = end;
        if (!latest)
            continue;
        const Onceiot__Usage__V1__ConnectivitySample *s = latest->s;
        size_t j = p->n_state++;
        p->sim[j] = sim_id;
        p->connected[j] = s->connected;
        p->since_us[j] = since_us;
        p->since_null[j] = !new_run;
        p->last_us[j] = latest->us;
        conn__cols_set(&p->cols, j, s);
        p->seq[j] = seq;
        bool net_changed = !conn__same(db_get(res, r, "rat"), s->rat) ||
                           !conn__same(db_get(res, r, "country_code"), s->country_code) ||
                           !conn__same(db_get(res, r, "operator_name"), s->operator_name);
        if (net_changed) {
            it->network_observed_at = usage_ts(a, latest->us);
            it->rat = s->rat;
            it->country = s->country_code;
            it->operator_name = s->operator_name;
        }
        if (net_changed || it->n_transitions)
            p->msg.items[p->msg.n_items++] = it;
    }
}

/* The samples, first without an arbiter: ON CONFLICT costs the INSERT about
 * 40 % more (an index probe per row before each insert), and a sample stored
 * before is rare (a pipeline resending it under a new batch id). When there
 * is one, the savepoint undoes the plain INSERT and the second form keeps
 * the stored sample. */
static int conn__insert_samples(db_conn_t *conn, const db_value_t *ins)
{
    int rc = db_exec_simple(conn, "SAVEPOINT usage_conn_samples");
    if (rc >= 0)
        rc = db_exec_values(conn, &insert_samples, ins, NULL);
    if (rc == ERR_ALREADY_EXISTS && (rc = db_exec_simple(conn, "ROLLBACK TO SAVEPOINT "
                                                               "usage_conn_samples")) >= 0)
        rc = db_exec_values(conn, &insert_samples_keep, ins, NULL);
    return rc;
}

static int conn__ingest_one(usage_ctx_t *cx, arena_t *scratch, arena_t *out_a,
                            const ProtobufCMessage *msg, Onceiot__Usage__V1__BatchResult **out)
{
    const Onceiot__Usage__V1__IngestConnectivityBatchRequest *b = (const void *)msg;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t now_us = (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
    if (!usage_valid_connectivity(cx->call, b, now_us))
        return rpc_check_violations(cx->call);
    size_t n = b->n_samples;

    /* Distinct ICCIDs (sorted with their samples), resolved at once. */
    conn_ref_t *v = arena_alloc(scratch, n * sizeof(*v));
    for (size_t i = 0; i < n; i++)
        v[i] = (conn_ref_t){b->samples[i], i, usage_ts_us(b->samples[i]->timestamp), {0, 0}};
    qsort(v, n, sizeof(*v), conn__cmp_ref);
    const char **iccids = arena_alloc(scratch, n * sizeof(char *));
    size_t n_distinct = 0;
    for (size_t i = 0; i < n; i++)
        if (n_distinct == 0 || strcmp(iccids[n_distinct - 1], v[i].s->iccid) != 0)
            iccids[n_distinct++] = v[i].s->iccid;
    usage_sim_t *sims = arena_alloc(scratch, n_distinct * sizeof(*sims));
    int rc = usage_resolve_or_status(cx, iccids, n_distinct, sims);
    if (rc < 0)
        return rc;
    int bad = 0;
    for (size_t i = 0, d = 0; i < n; i++) {
        if (strcmp(iccids[d], v[i].s->iccid) != 0)
            d++;
        v[i].sim = sims[d];
        if (v[i].sim.org == 0 && bad++ < CONN_MAX_VIOLATIONS)
            rpc_violation(cx->call, arena_printf(cx->a, "samples[%zu].iccid", v[i].i),
                          "unknown ICCID %s", v[i].s->iccid);
    }
    if ((rc = rpc_check_violations(cx->call)) < 0)
        return rc;
    qsort(v, n, sizeof(*v), conn__cmp_sim);

    /* The samples' columns, and the SIMs in sim_id order for the lock. */
    enum { S_SIM, S_TS, S_ORG, S_NUM };
    int64_t *num[S_NUM];
    for (int c = 0; c < S_NUM; c++)
        num[c] = arena_alloc(scratch, n * sizeof(int64_t));
    const char **iccid = conn__col(scratch, n);
    bool *connected = arena_alloc(scratch, n);
    conn_cols_t cols;
    conn__cols_init(scratch, &cols, n);
    int64_t *lk_sim = arena_alloc(scratch, n_distinct * sizeof(int64_t));
    int64_t *lk_org = arena_alloc(scratch, n_distinct * sizeof(int64_t));
    const char **lk_iccid = conn__col(scratch, n_distinct);
    size_t n_lock = 0;
    for (size_t i = 0; i < n; i++) {
        num[S_SIM][i] = v[i].sim.sim_id;
        num[S_TS][i] = v[i].us;
        num[S_ORG][i] = v[i].sim.org;
        iccid[i] = v[i].s->iccid;
        connected[i] = v[i].s->connected;
        conn__cols_set(&cols, i, v[i].s);
        if (i == 0 || v[i].sim.sim_id != v[i - 1].sim.sim_id) {
            lk_sim[n_lock] = v[i].sim.sim_id;
            lk_org[n_lock] = v[i].sim.org;
            lk_iccid[n_lock] = v[i].s->iccid;
            n_lock++;
        }
    }

    db_conn_t *conn = svc_db_or_status(cx->call);
    if (!conn)
        return ERR_UNAVAILABLE;
    PGresult *res = NULL;
    const db_value_t lp[] = {db_value_int8_array(scratch, lk_sim, NULL, n_lock),
                             db_value_int8_array(scratch, lk_org, NULL, n_lock),
                             db_value_text_array(scratch, lk_iccid, n_lock)};
    /* Steps 1 and 2: first without creating state rows, then (a SIM had
     * none) again with. */
    for (bool create = false;; create = true) {
        if ((rc = usage_claim_batch(conn, &claim_conn, &replayed_conn, b->batch_id, n, scratch,
                                    out_a, out)) != 0) {
            if (rc > 0)
                return 0; /* replayed */
            goto db_fail;
        }
        if ((create && (rc = db_exec_values(conn, &create_state, lp, NULL)) < 0) ||
            (rc = db_exec_values(conn, &lock_state, lp, &res)) < 0)
            goto db_fail;
        if (create || (size_t)rc == n_lock)
            break;
        PQclear(res);
        res = NULL;
        db_rollback(conn);
    }
    conn_plan_t plan;
    conn__plan(scratch, v, n, res, b->batch_id, &plan);
    PQclear(res);
    res = NULL;
    if (plan.n_state > 0) {
        size_t k = plan.n_state;
        db_value_t up[4 + C_NCOLS + 1] = {
            db_value_int8_array(scratch, plan.sim, NULL, k),
            db_value_bool_array(scratch, plan.connected, k),
            db_value_int8_array(scratch, plan.since_us, plan.since_null, k),
            db_value_int8_array(scratch, plan.last_us, NULL, k)};
        conn__cols_values(scratch, &plan.cols, k, up + 4);
        up[4 + C_NCOLS] = db_value_int8_array(scratch, plan.seq, NULL, k);
        if ((rc = db_exec_values(conn, &update_state, up, NULL)) < 0)
            goto db_fail;
    }
    db_value_t ins[5 + C_NCOLS + 1] = {db_value_int8_array(scratch, num[S_SIM], NULL, n),
                                       db_value_int8_array(scratch, num[S_TS], NULL, n),
                                       db_value_int8_array(scratch, num[S_ORG], NULL, n),
                                       db_value_text_array(scratch, iccid, n),
                                       db_value_bool_array(scratch, connected, n)};
    conn__cols_values(scratch, &cols, n, ins + 5);
    ins[5 + C_NCOLS] = db_value_text(b->batch_id);
    if ((rc = conn__insert_samples(conn, ins)) < 0)
        goto db_fail;
    bool put = plan.msg.n_items > 0;
    if (put) {
        size_t len = onceiot__sims__v1__apply_connectivity_request__get_packed_size(&plan.msg);
        uint8_t *buf = arena_alloc(scratch, len + 1);
        onceiot__sims__v1__apply_connectivity_request__pack(&plan.msg, buf);
        if ((rc = outbox_put(conn, USAGE_TOPIC_CONNECTIVITY, b->batch_id, buf, len)) < 0)
            goto db_fail;
    }
    if ((rc = db_commit(conn)) < 0)
        goto db_fail;
    if (put)
        outbox_notify(cx->st->outbox);
    return 0;
db_fail:
    PQclear(res);
    log_msg(LOG_WARN, "connectivity_ingest_failed", "batch %s: %s", b->batch_id, db_errmsg(conn));
    db_rollback(conn);
    return rpc_fail(cx->call, rc, "batch %s was not stored: %s", b->batch_id, db_errmsg(conn));
}

int usage_ingest_connectivity(rpc_call_t *call, const ProtobufCMessage *req,
                              ProtobufCMessage **resp)
{
    (void)req;
    usage_ctx_t cx;
    usage_stream_result_t got;
    int rc = usage_staff_ctx_or_status(call, &cx);
    if (rc < 0 || (rc = usage_ingest_stream(&cx, conn__ingest_one, "connectivity", &got)) < 0)
        return rc;
    Onceiot__Usage__V1__IngestConnectivityResponse *out = arena_alloc(cx.a, sizeof(*out));
    onceiot__usage__v1__ingest_connectivity_response__init(out);
    out->batches = got.batches;
    out->n_batches = got.n_batches;
    out->samples = got.records;
    out->replayed_batches = got.replayed;
    *resp = &out->base;
    return 0;
}

/* Codes after which the same delivery may succeed later; ABORTED is also
 * sims' answer to a transition that arrives before its predecessor. */
static bool conn__transient(grpc_status_code c)
{
    return c == GRPC_STATUS_UNAVAILABLE || c == GRPC_STATUS_DEADLINE_EXCEEDED ||
           c == GRPC_STATUS_ABORTED || c == GRPC_STATUS_RESOURCE_EXHAUSTED ||
           c == GRPC_STATUS_CANCELLED || c == GRPC_STATUS_INTERNAL || c == GRPC_STATUS_UNKNOWN ||
           c == GRPC_STATUS_UNAUTHENTICATED;
}

/* Well inside the outbox lease. */
#define CONN_APPLY_TIMEOUT_MS 10000
/* Predecessors delivered per page, and at most before giving up for now. */
#define CONN_PRED_PAGE 64
#define CONN_PRED_MAX  4096

/* Sends one packed ApplyConnectivityRequest to sims. */
static outbox_verdict_t conn__send(const usage_state_t *st, const char *key, const uint8_t *payload,
                                   size_t len, int64_t age_ms, arena_t *a, const char **why)
{
    Onceiot__Sims__V1__ApplyConnectivityRequest *req =
        onceiot__sims__v1__apply_connectivity_request__unpack(arena_allocator(a), len, payload);
    if (!req) {
        *why = "the payload is not an ApplyConnectivityRequest";
        return OUTBOX_FAILED;
    }
    ProtobufCMessage *resp = NULL;
    rpc_status_t s;
    int rc =
        usage_sims_call(st, NULL, CONN_APPLY_TIMEOUT_MS, "ApplyConnectivity", &req->base,
                        &onceiot__sims__v1__apply_connectivity_response__descriptor, a, &resp, &s);
    if (rc == 0) {
        const Onceiot__Sims__V1__ApplyConnectivityResponse *r = (const void *)resp;
        log_rec_t lr;
        log_begin(&lr, LOG_DEBUG, "connectivity_applied");
        log_str(&lr, "batch_id", key);
        log_int(&lr, "sims", (long long)req->n_items);
        log_int(&lr, "events", r->events);
        log_int(&lr, "lag_ms", age_ms);
        log_bool(&lr, "replayed", r->replayed);
        log_end(&lr);
        return OUTBOX_DONE;
    }
    *why =
        arena_printf(a, "sims ApplyConnectivity %s: %s %s", key, err_grpc_name(s.code), s.message);
    return conn__transient(s.code) ? OUTBOX_RETRY : OUTBOX_FAILED;
}

/* Pending connectivity rows older than a given one, oldest first. */
static const db_stmt_t predecessors = {
    "usage_conn_predecessors",
    "SELECT id, key, encode(payload, 'base64') AS payload FROM outbox "
    "WHERE topic = $1 AND id > $2 AND id < $3 AND failed_at IS NULL ORDER BY id LIMIT $4",
    4};

/* Delivers the pending connectivity rows older than msg first (their rows
 * stay; the dispatcher delivers them again later, a replay at sims). The
 * outbox promises no order between rows, but a SIM's transitions must
 * arrive in order, and a SIM's rows have ids in the order of its
 * transitions (the second batch takes its outbox id after the first
 * committed, under the state row's lock). */
static outbox_verdict_t conn__send_predecessors(const usage_state_t *st, const outbox_msg_t *msg,
                                                arena_t *a, const char **why)
{
    db_pool_t *pool = svc_db(st->svc);
    db_conn_t *conn = NULL;
    if (db_pool_acquire(pool, 5000, &conn) < 0) {
        *why = "no database connection for the predecessors";
        return OUTBOX_RETRY;
    }
    outbox_verdict_t v = OUTBOX_DONE;
    const char *after = "0";
    for (int sent = 0; sent < CONN_PRED_MAX && v == OUTBOX_DONE;) {
        PGresult *res = NULL;
        const char *params[] = {USAGE_TOPIC_CONNECTIVITY, after, usage_i64(a, msg->id),
                                usage_i64(a, CONN_PRED_PAGE)};
        int rc = db_exec(conn, &predecessors, params, &res);
        if (rc < 0) {
            *why = arena_printf(a, "predecessors of %s: %s", msg->key, db_errmsg(conn));
            v = OUTBOX_RETRY;
            break;
        }
        for (int i = 0; i < rc && v == OUTBOX_DONE; i++, sent++) {
            const char *b64 = db_get(res, i, "payload");
            size_t cap = strlen(b64), len = 0;
            uint8_t *bin = arena_alloc(a, cap + 1);
            /* encode() breaks its base64 into lines. */
            if (sodium_base642bin(bin, cap, b64, cap, "\r\n", &len, NULL,
                                  sodium_base64_VARIANT_ORIGINAL) != 0) {
                *why = arena_printf(a, "the payload of %s is not readable", db_get(res, i, "key"));
                v = OUTBOX_RETRY;
                break;
            }
            v = conn__send(st, db_get(res, i, "key"), bin, len, msg->age_ms, a, why);
            if (v == OUTBOX_FAILED)
                v = OUTBOX_DONE; /* refused for good: its own delivery records that */
        }
        if (rc > 0)
            after = arena_strdup(a, db_get(res, rc - 1, "id"));
        PQclear(res);
        if (rc < CONN_PRED_PAGE)
            break;
    }
    db_pool_release(pool, conn);
    return v;
}

outbox_verdict_t usage_apply_connectivity(void *ctx, const outbox_msg_t *msg, arena_t *a,
                                          const char **why)
{
    const usage_state_t *st = ctx;
    outbox_verdict_t v = conn__send_predecessors(st, msg, a, why);
    if (v != OUTBOX_DONE)
        return v;
    return conn__send(st, msg->key, msg->payload, msg->len, msg->age_ms, a, why);
}
