/* The SIM registry: GetSim, ListSims, CreateSim, ImportSims, UpdateSim,
 * BulkUpdateSims and ResolveSims (for the usage service). */
#include "sims.h"

#include <stdlib.h>
#include <string.h>

#define LIST_DEFAULT 100
#define LIST_MAX     1000
#define IMPORT_MAX   10000
#define BULK_MAX     1000

int sims_get_sim(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Sims__V1__GetSimRequest *r = (const void *)req;
    sims_ctx_t cx;
    int rc = sims_ctx_iccid_or_status(call, r->iccid, &cx);
    if (rc < 0 || (rc = rpc_check_violations(call)) < 0)
        return rc;
    sims_sim_t *s;
    if ((rc = sims_load_sim_or_status(&cx, r->iccid, &s)) < 0)
        return rc;
    *resp = &s->base;
    return 0;
}

/* Run with db_exec_custom: generic plans cannot drop the unused
 * "$n IS NULL OR ..." filters. The tag's list runs with db_exec_generic:
 * its scan of sim_tags is the same plan for every tag and page, and
 * planning it was a third of the statement's time (sims_sql.h). */
static const db_stmt_t list_by_iccid = {"sims_list_iccid", SIMS_LIST_BY_ICCID, 12};
static const db_stmt_t list_by_activation = {"sims_list_activation", SIMS_LIST_BY_ACTIVATION, 12};
static const db_stmt_t list_by_label = {"sims_list_label", SIMS_LIST_BY_LABEL, 12};
static const db_stmt_t list_by_tag = {"sims_list_tag", SIMS_LIST_BY_TAG, 12};

/* True when r is a tenant's (cx->org set) and filters by a tag and nothing
 * else: SIMS_LIST_BY_TAG serves it (sims_sql.h). */
static bool sims__tag_only(const sims_ctx_t *cx, const Onceiot__Sims__V1__ListSimsRequest *r)
{
    return cx->org && *r->tag && !r->status && !*r->label_contains && !*r->imei && !*r->msisdn &&
           !*r->ip_address && !*r->iccid_prefix && !r->customer_org_id;
}

int sims_list_sims(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Sims__V1__ListSimsRequest *r = (const void *)req;
    PGresult *res = NULL;
    sims_ctx_t cx;
    int rc = sims_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    int size = pagetoken_page_size(call, r->page_size, LIST_DEFAULT, LIST_MAX);
    const char *status = NULL;
    if (r->status && !(status = sims_status_name(r->status)))
        rpc_violation(call, "status", "unknown status %d", (int)r->status);
    const db_stmt_t *stmt =
        r->order_by == ONCEIOT__SIMS__V1__SIM_ORDER_BY__SIM_ORDER_BY_LABEL ? &list_by_label
        : r->order_by == ONCEIOT__SIMS__V1__SIM_ORDER_BY__SIM_ORDER_BY_ACTIVATION_DATE
            ? &list_by_activation
        : sims__tag_only(&cx, r) ? &list_by_tag
                                 : &list_by_iccid;
    if (r->order_by < 0 || r->order_by > ONCEIOT__SIMS__V1__SIM_ORDER_BY__SIM_ORDER_BY_LABEL)
        rpc_violation(call, "order_by", "unknown order %d", (int)r->order_by);
    sims_valid_imei(call, "imei", r->imei);
    sims_valid_msisdn(call, "msisdn", r->msisdn);
    sims_valid_ip(call, "ip_address", r->ip_address);
    if (*r->iccid_prefix && strspn(r->iccid_prefix, "0123456789") != strlen(r->iccid_prefix))
        rpc_violation(call, "iccid_prefix", "must be digits");
    if (strlen(r->iccid_prefix) > 20)
        rpc_violation(call, "iccid_prefix", "must be at most 20 digits");
    sims_valid_label(call, "label_contains", r->label_contains);
    if (*r->tag)
        sims_valid_tags(call, "tag", (char **)&r->tag, 1);
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;

    const char *params[12] = {
        cx.org,
        status,
        sims_nz(r->label_contains),
        sims_nz(r->tag),
        sims_nz(r->imei),
        sims_nz(r->msisdn),
        sims_nz(r->ip_address),
        sims_nz(r->iccid_prefix),
        r->customer_org_id ? sims_i64(&cx, r->customer_org_id) : NULL,
        sims_i64(&cx, size + 1),
        NULL,
        NULL,
    };
    const char *hash_parts[] = {stmt->name, cx.org,    params[1], params[2], params[3],
                                params[4],  params[5], params[6], params[7], params[8]};
    uint64_t hash = pagetoken_hash(hash_parts, sizeof(hash_parts) / sizeof(hash_parts[0]));
    if (*r->page_token &&
        (rc = pagetoken_decode(call, r->page_token, hash, &params[10], &params[11])) < 0)
        return rc;
    if (stmt == &list_by_tag && !params[10])
        params[10] = ""; /* the first page's key (sims_sql.h) */
    Onceiot__Sims__V1__ListSimsResponse *out = arena_alloc(cx.a, sizeof(*out));
    onceiot__sims__v1__list_sims_response__init(out);
    const sims_page_t page = {.size = size,
                              .hash = hash,
                              .key_col = "sort_key",
                              .last_col = "iccid",
                              .exec = stmt == &list_by_tag ? db_exec_generic : db_exec_custom};
    int n;
    if ((rc = sims_page_exec(&cx, stmt, params, &page, &res, &n, &out->next_page_token)) < 0)
        goto out;
    out->sims = arena_alloc(cx.a, (size_t)(n ? n : 1) * sizeof(*out->sims));
    for (int i = 0; i < n; i++)
        out->sims[out->n_sims++] = sims_sim_from_row(cx.a, res, i);
    *resp = &out->base;
    rc = 0;
out:
    PQclear(res);
    return rc;
}

/* Checks one SIM to register; field names are prefixed (e.g. "sims[3].").
 * *metadata gets the JSON text of its metadata. Returns false after
 * recording violations. */
static bool sims__valid_input(sims_ctx_t *cx, const char *prefix,
                              const Onceiot__Sims__V1__SimInput *in, const char **metadata)
{
    rpc_call_t *c = cx->call;
    arena_t *a = cx->a;
    bool ok = sims_valid_iccid(c, arena_printf(a, "%siccid", prefix), in->iccid);
    ok &= sims_valid_imsi(c, arena_printf(a, "%simsi", prefix), in->imsi);
    ok &= sims_valid_msisdn(c, arena_printf(a, "%smsisdn", prefix), in->msisdn);
    ok &= sims_valid_imei(c, arena_printf(a, "%simei", prefix), in->imei);
    ok &= sims_valid_label(c, arena_printf(a, "%slabel", prefix), in->label);
    ok &= sims_valid_ip(c, arena_printf(a, "%sip_address", prefix), in->ip_address);
    ok &= sims_valid_tags(c, arena_printf(a, "%stags", prefix), in->tags, in->n_tags);
    ok &= sims_valid_object(c, prefix, &in->base, "metadata", in->metadata, 10, metadata);
    if (in->data_volume < 0 || in->sms_volume < 0 || in->customer_org_id < 0) {
        rpc_violation(c, arena_printf(a, "%sdata_volume", prefix),
                      "volumes and ids must not be negative");
        ok = false;
    }
    return ok;
}

/* SIMs are registered by the operator's staff (superusers), who provision
 * them and register them to the customer's organization; a tenant may not,
 * or an ALREADY_EXISTS would tell it about another tenant's ICCID. The
 * gateway's rule says the same; this is the second wall. */
static int sims__operator_or_status(sims_ctx_t *cx)
{
    if (cx->who->is_superuser)
        return 0;
    return rpc_fail(cx->call, ERR_PERMISSION_DENIED,
                    "SIMs are registered by the operator's staff (superusers) only");
}

/* The organization a new SIM belongs to: the one the superuser names, or
 * the superuser's own. */
static const char *sims__owner(sims_ctx_t *cx, const Onceiot__Sims__V1__SimInput *in)
{
    return sims_i64(cx, in->organization_id ? in->organization_id : cx->who->organization_id);
}

/* The values a SimInput (with the JSON text of its metadata) gives the
 * columns of a new SIM, in the order of the parameters $1 to $13 of
 * create_sim. */
#define SIM_INPUT_VALUES 13
static void sims__input_values(sims_ctx_t *cx, const Onceiot__Sims__V1__SimInput *in,
                               const char *metadata, const char **v)
{
    v[0] = sims__owner(cx, in);
    v[1] = in->iccid;
    v[2] = sims_nz(in->imsi);
    v[3] = sims_nz(in->msisdn);
    v[4] = sims_nz(in->imei);
    v[5] = in->imei_lock ? "t" : "f";
    v[6] = sims_nz(in->label);
    v[7] = sims_nz(in->ip_address);
    v[8] = in->customer_org_id ? sims_i64(cx, in->customer_org_id) : NULL;
    v[9] = sims_tags_csv(cx->a, in->tags, in->n_tags);
    v[10] = metadata;
    v[11] = sims_i64(cx, in->data_volume);
    v[12] = sims_i64(cx, in->sms_volume);
}

static const db_stmt_t create_sim = {
    "sims_create",
    "WITH s AS (INSERT INTO sims (organization_id, iccid, imsi, msisdn, imei, imei_lock, label, "
    "ip_address, customer_org_id, tags, metadata) VALUES ($1, $2, $3, $4, $5, $6, "
    "coalesce($7, ''), $8::inet, $9, string_to_array(coalesce($10, ''), ','), "
    "coalesce($11, '{}')::jsonb) RETURNING id), "
    "qd AS (INSERT INTO sim_quotas (sim_id, quota_type, volume, last_volume_added) "
    "SELECT id, 'data', $12, $12 FROM s WHERE $12::bigint > 0), "
    "qs AS (INSERT INTO sim_quotas (sim_id, quota_type, volume, last_volume_added) "
    "SELECT id, 'sms', $13, $13 FROM s WHERE $13::bigint > 0) "
    "SELECT id FROM s",
    13};

int sims_create_sim(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Sims__V1__CreateSimRequest *r = (const void *)req;
    PGresult *res = NULL;
    sims_ctx_t cx;
    int rc = sims_ctx_or_status(call, &cx);
    if (rc < 0 || (rc = sims__operator_or_status(&cx)) < 0)
        return rc;
    const char *metadata = NULL;
    if (!r->sim)
        rpc_violation(call, "sim", "is required");
    else
        sims__valid_input(&cx, "sim.", r->sim, &metadata);
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    const Onceiot__Sims__V1__SimInput *in = r->sim;
    const char *params[SIM_INPUT_VALUES];
    sims__input_values(&cx, in, metadata, params);
    if ((rc = sims_begin_request_or_status(&cx, r->request_id, req, resp)) != 0)
        return rc < 0 ? rc : 0; /* or the first answer, replayed */
    if ((rc = sims_exec_quiet(&cx, &create_sim, params, &res)) < 0) {
        if (rc == ERR_ALREADY_EXISTS)
            rpc_fail(call, rc, "SIM %s already exists", in->iccid);
        else if (rc != ERR_UNAVAILABLE)
            svc_db_fail(call, svc_db_or_status(call), rc);
        goto out;
    }
    sims_event_in_t ev = {.sim_id = db_get(res, 0, "id"),
                          .org = params[0],
                          .iccid = in->iccid,
                          .type = "sim_created",
                          .category = "registry",
                          .description = "SIM registered"};
    sims_sim_t *s;
    if ((rc = sims_record_event(&cx, &ev)) < 0 ||
        (rc = sims_load_sim_or_status(&cx, in->iccid, &s)) < 0 ||
        (rc = sims_commit_answer(&cx, &s->base)) < 0)
        goto out;
    *resp = &s->base;
    rc = 0;
out:
    PQclear(res);
    return rc;
}

static int sims__cmp_str(const void *x, const void *y)
{
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

/* All or nothing: one plain INSERT (no ON CONFLICT: its speculative
 * insertion checks each unique index before and after every row) puts every
 * SIM in straight from the arrays, with a sim_created event each and, when
 * the batch sets volumes, their quotas. A known ICCID fails the statement;
 * back at the savepoint, import_known names the first one known and the
 * transaction is rolled back. The arrays are binary; a column no SIM of the
 * batch sets comes as NULL (unnest pads it: the column's default). */
static const db_stmt_t import_sims = {
    "sims_import",
    "WITH ins AS (INSERT INTO sims (organization_id, iccid, imsi, msisdn, imei, imei_lock, label, "
    "ip_address, customer_org_id, tags, metadata) SELECT org, iccid, imsi, msisdn, imei, "
    "coalesce(imei_lock = 1, false), coalesce(label, ''), ip::inet, customer_org_id, "
    "string_to_array(coalesce(tags_csv, ''), ','), coalesce(metadata::jsonb, '{}') "
    "FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], "
    "$7::text[], $8::text[], $9::bigint[], $10::text[], $11::text[]) AS t(org, iccid, imsi, "
    "msisdn, imei, imei_lock, label, ip, customer_org_id, tags_csv, metadata) "
    "RETURNING id, iccid, organization_id), "
    "q AS (INSERT INTO sim_quotas (sim_id, quota_type, volume, last_volume_added) "
    "SELECT ins.id, v.t, v.vol, v.vol FROM ins "
    "JOIN unnest($2::text[], $12::bigint[], $13::bigint[]) AS i(iccid, data_volume, sms_volume) "
    "USING (iccid) "
    "CROSS JOIN LATERAL (VALUES ('data', i.data_volume), ('sms', i.sms_volume)) AS v(t, vol) "
    "WHERE v.vol > 0 AND ($12::bigint[] IS NOT NULL OR $13::bigint[] IS NOT NULL)), "
    "ev AS (INSERT INTO sim_events (sim_id, organization_id, iccid, event_type, event_category, "
    "description, triggered_by) SELECT id, organization_id, iccid, 'sim_created', 'registry', "
    "'SIM imported', $14 FROM ins) "
    "SELECT count(*) AS imported FROM ins",
    14};

/* The superuser's scope sees every organization's ICCIDs. */
static const db_stmt_t import_known = {
    "sims_import_known", "SELECT min(iccid) AS iccid FROM sims WHERE iccid = ANY($1::text[])", 1};

/* After import_sims failed with ERR_ALREADY_EXISTS: the status naming the
 * first ICCID of the batch (params[1]) that is known. Returns an ERR_* code. */
static int sims__known_iccid_status(sims_ctx_t *cx, db_conn_t *conn, const db_value_t *params)
{
    PGresult *res = NULL;
    int rc = db_exec_simple(conn, "ROLLBACK TO SAVEPOINT sims_import");
    if (rc >= 0)
        rc = db_exec_values(conn, &import_known, &params[1], &res);
    if (rc < 0)
        return svc_db_fail(cx->call, conn, rc);
    const char *known = rc == 1 ? db_get(res, 0, "iccid") : NULL;
    rc = known ? rpc_fail(cx->call, ERR_ALREADY_EXISTS,
                          "SIM %s already exists; nothing was imported", known)
               : rpc_fail(cx->call, ERR_ABORTED,
                          "a SIM of the batch was imported meanwhile; "
                          "nothing was imported");
    PQclear(res);
    return rc; /* the connection's release rolls the transaction back */
}

/* A text column of a batch: NULL when no SIM sets it. */
static db_value_t sims__text_column(arena_t *a, const char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (v[i])
            return db_value_text_array(a, v, n);
    return db_value_text(NULL);
}

/* An integer column of a batch, unset where null[i]: NULL when no SIM sets
 * it. */
static db_value_t sims__int_column(arena_t *a, const int64_t *v, const bool *null, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!null[i])
            return db_value_int8_array(a, v, null, n);
    return db_value_text(NULL);
}

int sims_import_sims(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Sims__V1__ImportSimsRequest *r = (const void *)req;
    PGresult *res = NULL;
    sims_ctx_t cx;
    int rc = sims_ctx_or_status(call, &cx);
    if (rc < 0 || (rc = sims__operator_or_status(&cx)) < 0)
        return rc;
    size_t n = r->n_sims;
    if (n == 0 || n > IMPORT_MAX)
        rpc_violation(call, "sims", "must hold 1 to %d SIMs", IMPORT_MAX);
    const char **metadata = arena_calloc(cx.a, n ? n : 1, sizeof(*metadata));
    for (size_t i = 0; i < n && i < IMPORT_MAX; i++)
        if (!sims__valid_input(&cx, arena_printf(cx.a, "sims[%zu].", i), r->sims[i], &metadata[i]))
            break; /* one bad item is enough to refuse the batch; keep the reply short */
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    const char **sorted = arena_alloc(cx.a, n * sizeof(char *));
    for (size_t i = 0; i < n; i++)
        sorted[i] = r->sims[i]->iccid;
    qsort(sorted, n, sizeof(char *), sims__cmp_str);
    for (size_t i = 1; i < n; i++)
        if (strcmp(sorted[i - 1], sorted[i]) == 0) {
            rpc_violation(call, "sims", "ICCID %s appears more than once", sorted[i]);
            return rpc_check_violations(call);
        }

    /* The columns, in the order of the statement's parameters. */
    enum { ORG, LOCK, CUSTOMER, DATA, SMS, N_INT };
    enum { ICCID, IMSI, MSISDN, IMEI, LABEL, IP, TAGS, METADATA, N_TEXT };
    int64_t *iv[N_INT];
    bool *unset[N_INT];
    const char **tv[N_TEXT];
    for (int c = 0; c < N_INT; c++) {
        iv[c] = arena_alloc(cx.a, n * sizeof(int64_t));
        unset[c] = arena_alloc(cx.a, n * sizeof(bool));
    }
    for (int c = 0; c < N_TEXT; c++)
        tv[c] = arena_alloc(cx.a, n * sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        const Onceiot__Sims__V1__SimInput *in = r->sims[i];
        iv[ORG][i] = in->organization_id ? in->organization_id : cx.who->organization_id;
        iv[LOCK][i] = in->imei_lock;
        iv[CUSTOMER][i] = in->customer_org_id;
        iv[DATA][i] = in->data_volume;
        iv[SMS][i] = in->sms_volume;
        for (int c = 0; c < N_INT; c++)
            unset[c][i] = c != ORG && iv[c][i] == 0;
        tv[ICCID][i] = in->iccid;
        tv[IMSI][i] = sims_nz(in->imsi);
        tv[MSISDN][i] = sims_nz(in->msisdn);
        tv[IMEI][i] = sims_nz(in->imei);
        tv[LABEL][i] = sims_nz(in->label);
        tv[IP][i] = sims_nz(in->ip_address);
        tv[TAGS][i] = in->n_tags ? sims_tags_csv(cx.a, in->tags, in->n_tags) : NULL;
        tv[METADATA][i] = metadata[i];
    }
    const db_value_t params[] = {
        sims__int_column(cx.a, iv[ORG], unset[ORG], n),
        db_value_text_array(cx.a, tv[ICCID], n),
        sims__text_column(cx.a, tv[IMSI], n),
        sims__text_column(cx.a, tv[MSISDN], n),
        sims__text_column(cx.a, tv[IMEI], n),
        sims__int_column(cx.a, iv[LOCK], unset[LOCK], n),
        sims__text_column(cx.a, tv[LABEL], n),
        sims__text_column(cx.a, tv[IP], n),
        sims__int_column(cx.a, iv[CUSTOMER], unset[CUSTOMER], n),
        sims__text_column(cx.a, tv[TAGS], n),
        sims__text_column(cx.a, tv[METADATA], n),
        sims__int_column(cx.a, iv[DATA], unset[DATA], n),
        sims__int_column(cx.a, iv[SMS], unset[SMS], n),
        db_value_text(cx.actor),
    };
    if ((rc = sims_begin_request_or_status(&cx, r->request_id, req, resp)) != 0)
        return rc < 0 ? rc : 0; /* or the first answer, replayed */
    db_conn_t *conn = svc_db_or_status(call);
    if (!conn) {
        rc = ERR_UNAVAILABLE;
        goto out;
    }
    if ((rc = db_exec_simple(conn, "SAVEPOINT sims_import")) >= 0)
        rc = db_exec_values(conn, &import_sims, params, &res);
    if (rc == ERR_ALREADY_EXISTS) {
        rc = sims__known_iccid_status(&cx, conn, params);
        goto out;
    }
    if (rc < 0) {
        svc_db_fail(call, conn, rc);
        goto out;
    }
    Onceiot__Sims__V1__ImportSimsResponse *out = arena_alloc(cx.a, sizeof(*out));
    onceiot__sims__v1__import_sims_response__init(out);
    out->imported = (int32_t)db_get_int(res, 0, "imported", 0);
    if ((rc = sims_commit_answer(&cx, &out->base)) < 0)
        goto out;
    *resp = &out->base;
    rc = 0;
out:
    PQclear(res);
    return rc;
}

/* Which fields an update mask names; false (violation recorded) for an
 * unknown or empty mask. */
typedef struct sims_mask {
    bool label, imei, imei_lock, tags, metadata, customer;
} sims_mask_t;

static bool sims__mask(rpc_call_t *call, const Google__Protobuf__FieldMask *m, sims_mask_t *out)
{
    memset(out, 0, sizeof(*out));
    if (!m || m->n_paths == 0) {
        rpc_violation(call, "update_mask", "must name at least one field");
        return false;
    }
    for (size_t i = 0; i < m->n_paths; i++) {
        const char *p = m->paths[i];
        if (strncmp(p, "changes.", 8) == 0)
            p += 8;
        bool *f = strcmp(p, "label") == 0             ? &out->label
                  : strcmp(p, "imei") == 0            ? &out->imei
                  : strcmp(p, "imei_lock") == 0       ? &out->imei_lock
                  : strcmp(p, "tags") == 0            ? &out->tags
                  : strcmp(p, "metadata") == 0        ? &out->metadata
                  : strcmp(p, "customer_org_id") == 0 ? &out->customer
                                                      : NULL;
        if (strcmp(p, "metadata_json") == 0) {
            /* Not an alias of metadata: a client still sending the string
             * field would clear the metadata it meant to set. */
            rpc_violation(call, "update_mask",
                          "metadata_json was replaced by metadata, a JSON object "
                          "(google.protobuf.Struct)");
            return false;
        }
        if (!f) {
            rpc_violation(call, "update_mask",
                          "unknown field \"%s\" (label, imei, imei_lock, tags, metadata, "
                          "customer_org_id)",
                          m->paths[i]);
            return false;
        }
        *f = true;
    }
    return true;
}

/* Checks the masked fields of c; *metadata gets the JSON text of its
 * metadata when the mask names it. */
static bool sims__valid_changes(rpc_call_t *call, const Onceiot__Sims__V1__SimChanges *c,
                                const sims_mask_t *m, const char **metadata)
{
    bool ok = true;
    if (m->label)
        ok &= sims_valid_label(call, "changes.label", c->label);
    if (m->imei)
        ok &= sims_valid_imei(call, "changes.imei", c->imei);
    if (m->tags)
        ok &= sims_valid_tags(call, "changes.tags", c->tags, c->n_tags);
    if (m->metadata)
        ok &= sims_valid_object(call, "changes.", &c->base, "metadata", c->metadata, 5, metadata);
    if (m->customer && c->customer_org_id < 0) {
        rpc_violation(call, "changes.customer_org_id", "must not be negative");
        ok = false;
    }
    return ok;
}

static const db_stmt_t update_sim = {
    "sims_update",
    "UPDATE sims SET "
    "label = CASE WHEN $3::bool THEN coalesce($4, '') ELSE label END, "
    "imei = CASE WHEN $5::bool THEN $6 ELSE imei END, "
    "imei_lock = CASE WHEN $7::bool THEN $8::bool ELSE imei_lock END, "
    "tags = CASE WHEN $9::bool THEN string_to_array(coalesce($10, ''), ',') ELSE tags END, "
    "metadata = CASE WHEN $11::bool THEN coalesce($12, '{}')::jsonb ELSE metadata END, "
    "customer_org_id = CASE WHEN $13::bool THEN $14::bigint ELSE customer_org_id END "
    "WHERE iccid = $1 AND " SIMS_ORG_FILTER("organization_id",
                                            "$2") " RETURNING id, organization_id",
    14};

/* Applies one change to one SIM with its sim_updated event, in one
 * transaction. ERR_NOT_FOUND when the SIM is not the caller's: the status is
 * left unset (a bulk update reports it per item); other errors set it. */
static int sims__update_one(sims_ctx_t *cx, const char *iccid,
                            const Onceiot__Sims__V1__SimChanges *c, const sims_mask_t *m,
                            const char *metadata, const char *fields)
{
    PGresult *res = NULL;
    const char *params[] = {
        iccid,
        cx->org,
        m->label ? "t" : "f",
        c->label,
        m->imei ? "t" : "f",
        sims_nz(c->imei),
        m->imei_lock ? "t" : "f",
        c->imei_lock ? "t" : "f",
        m->tags ? "t" : "f",
        sims_tags_csv(cx->a, c->tags, c->n_tags),
        m->metadata ? "t" : "f",
        metadata,
        m->customer ? "t" : "f",
        c->customer_org_id ? sims_i64(cx, c->customer_org_id) : NULL,
    };
    int rc = sims_begin(cx);
    if (rc < 0)
        return rc;
    if ((rc = sims_exec(cx, &update_sim, params, &res)) < 0)
        goto out;
    if (rc == 0) {
        db_rollback(svc_db_or_status(cx->call));
        rc = ERR_NOT_FOUND;
        goto out;
    }
    sims_event_in_t ev = {.sim_id = db_get(res, 0, "id"),
                          .org = db_get(res, 0, "organization_id"),
                          .iccid = iccid,
                          .type = "sim_updated",
                          .category = "registry",
                          .description = arena_printf(cx->a, "changed %s", fields)};
    if ((rc = sims_record_event(cx, &ev)) < 0 || (rc = sims_commit(cx)) < 0)
        goto out;
    rc = 0;
out:
    PQclear(res);
    return rc;
}

static const char *sims__fields(arena_t *a, const Google__Protobuf__FieldMask *m)
{
    const char *out = "";
    for (size_t i = 0; i < m->n_paths; i++)
        out = arena_printf(a, "%s%s%s", out, i ? ", " : "", m->paths[i]);
    return out;
}

int sims_update_sim(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Sims__V1__UpdateSimRequest *r = (const void *)req;
    sims_ctx_t cx;
    int rc = sims_ctx_iccid_or_status(call, r->iccid, &cx);
    if (rc < 0)
        return rc;
    static const Onceiot__Sims__V1__SimChanges none = ONCEIOT__SIMS__V1__SIM_CHANGES__INIT;
    const Onceiot__Sims__V1__SimChanges *c = r->changes ? r->changes : &none;
    sims_mask_t m;
    const char *metadata = NULL;
    if (sims__mask(call, r->update_mask, &m))
        sims__valid_changes(call, c, &m, &metadata);
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    rc = sims__update_one(&cx, r->iccid, c, &m, metadata, sims__fields(cx.a, r->update_mask));
    if (rc == ERR_NOT_FOUND)
        return rpc_fail(call, rc, "no SIM %s", r->iccid);
    if (rc < 0)
        return rc;
    sims_sim_t *s;
    if ((rc = sims_load_sim_or_status(&cx, r->iccid, &s)) < 0)
        return rc;
    *resp = &s->base;
    return 0;
}

int sims_bulk_update_sims(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Sims__V1__BulkUpdateSimsRequest *r = (const void *)req;
    sims_ctx_t cx;
    int rc = sims_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    static const Onceiot__Sims__V1__SimChanges none = ONCEIOT__SIMS__V1__SIM_CHANGES__INIT;
    const Onceiot__Sims__V1__SimChanges *c = r->changes ? r->changes : &none;
    sims_mask_t m;
    if (r->n_iccids == 0 || r->n_iccids > BULK_MAX)
        rpc_violation(call, "iccids", "must hold 1 to %d ICCIDs", BULK_MAX);
    const char *metadata = NULL;
    if (sims__mask(call, r->update_mask, &m))
        sims__valid_changes(call, c, &m, &metadata);
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    const char *fields = sims__fields(cx.a, r->update_mask);
    Onceiot__Sims__V1__BulkUpdateSimsResponse *out = arena_alloc(cx.a, sizeof(*out));
    onceiot__sims__v1__bulk_update_sims_response__init(out);
    out->results = arena_alloc(cx.a, r->n_iccids * sizeof(*out->results));
    for (size_t i = 0; i < r->n_iccids; i++) {
        Onceiot__Sims__V1__BulkUpdateResult *item = arena_alloc(cx.a, sizeof(*item));
        onceiot__sims__v1__bulk_update_result__init(item);
        item->iccid = r->iccids[i];
        const char *id = r->iccids[i];
        bool valid = strlen(id) >= 19 && strlen(id) <= 20 && strspn(id, "0123456789") == strlen(id);
        if (!valid) {
            item->code = GRPC_STATUS_INVALID_ARGUMENT;
            item->message = "iccid must be 19 or 20 digits";
        } else if ((rc = sims__update_one(&cx, id, c, &m, metadata, fields)) == ERR_NOT_FOUND) {
            item->code = GRPC_STATUS_NOT_FOUND;
            item->message = arena_printf(cx.a, "no SIM %s", id);
        } else if (rc < 0) {
            return rc; /* the database refused the change itself: the whole call fails */
        } else {
            out->updated++;
        }
        out->results[out->n_results++] = item;
    }
    *resp = &out->base;
    return 0;
}

#define RESOLVE_MAX 10000

static const db_stmt_t resolve_sims = {
    "sims_resolve",
    "SELECT iccid, id, organization_id FROM sims WHERE iccid = ANY($1::text[]) "
    "AND " SIMS_ORG_FILTER("organization_id", "$2"),
    2};

/* One index probe per ICCID in one statement; unknown ICCIDs are simply not
 * in the answer (the usage service names them in its own error). */
int sims_resolve_sims(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Sims__V1__ResolveSimsRequest *r = (const void *)req;
    PGresult *res = NULL;
    sims_ctx_t cx;
    int rc = sims_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    if (r->n_iccids == 0 || r->n_iccids > RESOLVE_MAX)
        rpc_violation(call, "iccids", "must hold 1 to %d ICCIDs", RESOLVE_MAX);
    for (size_t i = 0; i < r->n_iccids && i < RESOLVE_MAX; i++)
        if (!sims_valid_iccid(call, arena_printf(cx.a, "iccids[%zu]", i), r->iccids[i]))
            break;
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    const char *params[] = {db_text_array(cx.a, (const char *const *)r->iccids, r->n_iccids),
                            cx.org};
    if ((rc = sims_exec(&cx, &resolve_sims, params, &res)) < 0)
        goto out;
    Onceiot__Sims__V1__ResolveSimsResponse *out = arena_alloc(cx.a, sizeof(*out));
    onceiot__sims__v1__resolve_sims_response__init(out);
    out->sims = arena_alloc(cx.a, (size_t)rc * sizeof(*out->sims) + 1);
    for (int i = 0; i < rc; i++) {
        Onceiot__Sims__V1__ResolvedSim *s = arena_alloc(cx.a, sizeof(*s));
        onceiot__sims__v1__resolved_sim__init(s);
        s->iccid = arena_strdup(cx.a, db_get(res, i, "iccid"));
        s->sim_id = db_get_int(res, i, "id", 0);
        s->organization_id = db_get_int(res, i, "organization_id", 0);
        out->sims[out->n_sims++] = s;
    }
    *resp = &out->base;
    rc = 0;
out:
    PQclear(res);
    return rc;
}
