/* SQL text shared by the service and its tests (the EXPLAIN test runs the
 * very statements ListSims prepares). Only macros: no code. */
#ifndef ONCEIOT_SIMS_SQL_H
#define ONCEIOT_SIMS_SQL_H

/* The columns sims_sim_from_row reads, selected from sim_summaries AS s. */
#define SIMS_SIM_COLUMNS                                                                           \
    "s.id, s.iccid, s.imsi, s.msisdn, s.imei, s.imei_lock, s.status, s.label, "                    \
    "host(s.ip_address) AS ip, s.organization_id, s.customer_org_id, "                             \
    "array_to_string(s.tags, ',') AS tags_csv, s.metadata::text AS metadata_json, "                \
    "(extract(epoch FROM s.activation_date) * 1000000)::bigint AS activation_us, "                 \
    "(extract(epoch FROM s.suspension_date) * 1000000)::bigint AS suspension_us, "                 \
    "(extract(epoch FROM s.termination_date) * 1000000)::bigint AS termination_us, "               \
    "(extract(epoch FROM s.expiry_date) * 1000000)::bigint AS expiry_us, "                         \
    "(extract(epoch FROM s.created_at) * 1000000)::bigint AS created_us, "                         \
    "(extract(epoch FROM s.updated_at) * 1000000)::bigint AS updated_us, "                         \
    "s.data_volume, s.data_used, s.data_remaining, s.data_threshold_reached, "                     \
    "s.sms_volume, s.sms_used, s.sms_remaining, s.sms_threshold_reached, "                         \
    "s.current_rat, s.current_country, s.current_operator, "                                       \
    "(extract(epoch FROM s.network_observed_at) * 1000000)::bigint AS network_us"

/* The organization filter every tenant-scoped query carries: $n is the
 * caller's organization, or NULL for a superuser. */
#define SIMS_ORG_FILTER(col, n) "(" n "::bigint IS NULL OR " col " = " n "::bigint)"

/* ListSims. Every filter is "$n IS NULL OR condition": the statements run
 * with custom plans (db_exec_custom: unnamed, planned per call), so PostgreSQL folds
 * the unused filters away and picks the index that serves the rest.
 *   $1 organization (NULL: all)  $2 status  $3 label substring  $4 tag
 *   $5 imei  $6 msisdn  $7 ip address  $8 iccid prefix (digits)
 *   $9 customer organization  $10 page size + 1
 *   $11 last sort key  $12 last iccid (keyset; NULL on the first page) */
#define SIMS_LIST_WHERE                                                                            \
    SIMS_ORG_FILTER("s.organization_id", "$1")                                                     \
    " AND ($2::text IS NULL OR s.status = $2)"                                                     \
    " AND ($3::text IS NULL OR s.label ILIKE '%' || replace(replace(replace($3, '\\', '\\\\'), "   \
    "'%', '\\%'), '_', '\\_') || '%')"                                                             \
    " AND ($4::text IS NULL OR s.tags @> ARRAY[$4::text])"                                         \
    " AND ($5::text IS NULL OR s.imei = $5)"                                                       \
    " AND ($6::text IS NULL OR s.msisdn = $6)"                                                     \
    " AND ($7::inet IS NULL OR s.ip_address = $7)"                                                 \
    " AND ($8::text IS NULL OR (s.iccid >= $8 AND s.iccid < $8 || ':'))"                           \
    " AND ($9::bigint IS NULL OR s.customer_org_id = $9)"

#define SIMS_LIST_BY_ICCID                                                                         \
    "SELECT " SIMS_SIM_COLUMNS ", s.iccid AS sort_key FROM sim_summaries s WHERE " SIMS_LIST_WHERE \
    " AND ($12::text IS NULL OR s.iccid > $11::text)" /* key and iccid are one here */             \
    " ORDER BY s.iccid LIMIT $10"

/* A tenant's ListSims ($1 not NULL) filtered by a tag and nothing else, in
 * ICCID order: the page's entries of sim_tags (schema/sims/0007_sim_tags.sql)
 * in (organization, tag, ICCID) order, then their SIMs, so a page reads as
 * many entries as it returns. The filter on sims.tags above cannot use its
 * GIN index under row-level security (arraycontains is not leakproof), and
 * in a join the planner multiplies the estimates of both tables' policies
 * and the tag filter, expects fewer rows than the page and sorts all the
 * tag's SIMs: the LIMIT inside makes the walk in order explicit.
 * SIMS_LIST_WHERE only rechecks the SIMs (it names every parameter, as the
 * others); with another filter set it would make pages short, so the
 * service uses this statement only without one. It runs on its generic
 * plan (db_exec_generic), and planning anew for each call was 0.5 to 0.8 ms
 * of the statement's 2 ms. So that plan's scan of sim_tags starts at the
 * page's key on any page, $11 is '' on the first (every ICCID sorts after
 * it), never NULL: under the policies only a leakproof condition is an
 * index condition, and neither "$11 IS NULL OR" nor coalesce($11, '') is
 * one until a custom plan folds it ($12, the same ICCID, only rechecks). */
#define SIMS_LIST_BY_TAG                                                                           \
    "SELECT " SIMS_SIM_COLUMNS ", s.iccid AS sort_key"                                             \
    " FROM (SELECT t.sim_id, t.iccid FROM sim_tags t"                                              \
    " WHERE t.organization_id = $1::bigint AND t.tag = $4::text"                                   \
    " AND t.iccid > $11::text AND ($12::text IS NULL OR t.iccid > $12::text)"                      \
    " ORDER BY t.iccid LIMIT $10) t"                                                               \
    " JOIN sim_summaries s ON s.id = t.sim_id WHERE " SIMS_LIST_WHERE                              \
    " ORDER BY t.iccid LIMIT $10"

#define SIMS_ACTIVATION_KEY "coalesce(s.activation_date, 'infinity'::timestamptz)"
#define SIMS_LIST_BY_ACTIVATION                                                                    \
    "SELECT " SIMS_SIM_COLUMNS ", " SIMS_ACTIVATION_KEY "::text AS sort_key"                       \
    " FROM sim_summaries s WHERE " SIMS_LIST_WHERE                                                 \
    " AND ($12::text IS NULL OR (" SIMS_ACTIVATION_KEY ", s.iccid) > ($11::timestamptz, $12))"     \
    " ORDER BY " SIMS_ACTIVATION_KEY ", s.iccid LIMIT $10"

#define SIMS_LIST_BY_LABEL                                                                         \
    "SELECT " SIMS_SIM_COLUMNS ", s.label AS sort_key FROM sim_summaries s WHERE " SIMS_LIST_WHERE \
    " AND ($12::text IS NULL OR (s.label, s.iccid) > ($11::text, $12))"                            \
    " ORDER BY s.label, s.iccid LIMIT $10"

/* ApplyUsage's statements. $1 SIM ids, $2 quota types, ($3 amounts): one
 * input row per quota, u.ord its position in the arrays.
 *
 * The arrays reach unnest through scalar subqueries (InitPlans), so the
 * planner never sees their length: it plans the input as a few rows
 * (unnest's default estimate), as in the generic plan the prepared statement
 * gets after five executions, and probes sim_quotas_pkey once per input row
 * whatever the batch's size, for any table of more than a few pages. Given the arrays as constants
 * (the first five custom plans of each connection), it estimated the whole batch and, for a table
 * of up to some tens of thousands of quotas, chose a hash join over a sequential scan of all of
 * sim_quotas (tests/integration/test_sims_quota_plans.c, docs/ARCHITECTURE.md). */

/* Every quota of a batch in one statement. As in sims_consume_quota, the row
 * lock of the UPDATE serializes consumers and the state before is derived
 * from the one after (the batch's SIMs are locked first, in ICCID order:
 * sims_lock_sims). Quotas the batch does not use (n = 0, most SMS quotas)
 * are only read, not rewritten: their outcome needs what is left, and nothing
 * else changes. SIMs without a quota of a type return no row for it:
 * unmetered. */
#define SIMS_CONSUMED_COLUMNS                                                                      \
    "q.volume, q.used_volume, q.remaining_volume, q.threshold_volume, q.threshold_reached, "       \
    "q.auto_reload"
#define SIMS_CONSUME_ALL                                                                           \
    "WITH u AS (SELECT * FROM unnest((SELECT $1::bigint[]), (SELECT $2::text[]), "                 \
    "(SELECT $3::bigint[])) WITH ORDINALITY AS u(sim_id, quota_type, n, ord)), "                   \
    "c AS (UPDATE sim_quotas q SET used_volume = q.used_volume + u.n, updated_at = now() FROM u "  \
    "WHERE u.n > 0 AND q.sim_id = u.sim_id AND q.quota_type = u.quota_type "                       \
    "RETURNING u.ord, " SIMS_CONSUMED_COLUMNS ") "                                                 \
    "SELECT * FROM c UNION ALL SELECT u.ord, " SIMS_CONSUMED_COLUMNS " FROM u JOIN sim_quotas q "  \
    "ON q.sim_id = u.sim_id AND q.quota_type = u.quota_type WHERE u.n = 0"

/* The auto-reload of the depleted quotas of a batch; returns what each has
 * now. */
#define SIMS_RELOAD_ALL                                                                            \
    "UPDATE sim_quotas q SET volume = q.volume + q.auto_reload_amount, "                           \
    "last_volume_added = q.auto_reload_amount, updated_at = now() "                                \
    "FROM unnest((SELECT $1::bigint[]), (SELECT $2::text[])) WITH ORDINALITY "                     \
    "AS u(sim_id, quota_type, ord) "                                                               \
    "WHERE q.sim_id = u.sim_id AND q.quota_type = u.quota_type "                                   \
    "RETURNING u.ord, q.remaining_volume"

#endif
