/* SQL text shared by the service, its tests and its benchmark (which
 * EXPLAIN the very statements ListTickets prepares). Only macros: no code.
 * Times travel as unix microseconds: (extract(epoch FROM t) * 1000000)::bigint
 * out, 'epoch'::timestamptz + $n * interval '1 microsecond' in (exact). */
#ifndef ONCEIOT_SUPPORT_SQL_H
#define ONCEIOT_SUPPORT_SQL_H

/* The columns support_ticket_from_row reads, selected from tickets AS t. */
#define SUPPORT_TICKET_COLUMNS                                                                     \
    "t.id, t.external_id, t.organization_id, t.created_by, t.subject, t.description, "             \
    "t.priority, t.status, t.category, array_to_string(t.iccids, ',') AS iccids_csv, "             \
    "t.assignee_id, t.resolution, t.reopen_count, "                                                \
    "(extract(epoch FROM t.created_at) * 1000000)::bigint AS created_us, "                         \
    "(extract(epoch FROM t.updated_at) * 1000000)::bigint AS updated_us, "                         \
    "(extract(epoch FROM t.started_at) * 1000000)::bigint AS started_us, "                         \
    "(extract(epoch FROM t.resolved_at) * 1000000)::bigint AS resolved_us, "                       \
    "(extract(epoch FROM t.closed_at) * 1000000)::bigint AS closed_us, "                           \
    "(extract(epoch FROM t.first_response_at) * 1000000)::bigint AS first_response_us, "           \
    "(extract(epoch FROM t.response_due_at) * 1000000)::bigint AS due_us, "                        \
    "coalesce(t.first_response_at, now()) > t.response_due_at AS overdue"

/* ListTickets, one statement per order, 16 parameters:
 *   $1 organization (NULL: all, staff)  $2 status  $3 priority  $4 category
 *   $5 assignee  $6 unassigned (true or NULL)  $7 ICCID
 *   $8 created at or after (µs)  $9 created before (µs)
 *   $10 a customer's search (public document)  $11 staff's search (with notes)
 *   $12 overdue (true or NULL)  $13 due within (seconds)
 *   $14 LIMIT (page + 1)  $15, $16 the page token's key and tie-breaker.
 * Every filter is "($n IS NULL OR condition)"; the statements run with
 * custom plans (db_exec_custom: unnamed, planned for each call's
 * parameters), so PostgreSQL folds the unused filters away and picks the
 * index of the ones used. A customer's
 * search never reads search_staff: only staff's parameter does. */
#define SUPPORT_LIST_FILTERS                                                                       \
    "FROM tickets t WHERE ($1::bigint IS NULL OR t.organization_id = $1) "                         \
    "AND ($2::text IS NULL OR t.status = $2) "                                                     \
    "AND ($3::text IS NULL OR t.priority = $3) "                                                   \
    "AND ($4::text IS NULL OR t.category = $4) "                                                   \
    "AND ($5::bigint IS NULL OR t.assignee_id = $5) "                                              \
    "AND ($6::bool IS NULL OR t.assignee_id IS NULL) "                                             \
    "AND ($7::text IS NULL OR t.iccids @> ARRAY[$7::text]) "                                       \
    "AND ($8::bigint IS NULL OR "                                                                  \
    "t.created_at >= 'epoch'::timestamptz + $8::bigint * interval '1 microsecond') "               \
    "AND ($9::bigint IS NULL OR "                                                                  \
    "t.created_at < 'epoch'::timestamptz + $9::bigint * interval '1 microsecond') "                \
    "AND ($10::text IS NULL OR t.search_public @@ websearch_to_tsquery('english', $10)) "          \
    "AND ($11::text IS NULL OR t.search_staff @@ websearch_to_tsquery('english', $11)) "           \
    "AND ($12::bool IS NULL OR (t.first_response_at IS NULL "                                      \
    "AND t.status IN ('open', 'in_progress') AND t.response_due_at < now())) "                     \
    "AND ($13::bigint IS NULL OR (t.first_response_at IS NULL "                                    \
    "AND t.status IN ('open', 'in_progress') AND t.response_due_at >= now() "                      \
    "AND t.response_due_at <= now() + $13::bigint * interval '1 second')) "

/* Newest first: keyset on (created_at, id) descending. */
#define SUPPORT_LIST_BY_CREATED                                                                    \
    "SELECT " SUPPORT_TICKET_COLUMNS ", "                                                          \
    "(extract(epoch FROM t.created_at) * 1000000)::bigint AS sort_key " SUPPORT_LIST_FILTERS       \
    "AND ($15::bigint IS NULL OR (t.created_at, t.id) < "                                          \
    "('epoch'::timestamptz + $15::bigint * interval '1 microsecond', $16::bigint)) "               \
    "ORDER BY t.created_at DESC, t.id DESC LIMIT $14"

/* Most urgent first, then oldest first: keyset on (priority_rank, id). */
#define SUPPORT_LIST_BY_PRIORITY                                                                   \
    "SELECT " SUPPORT_TICKET_COLUMNS ", t.priority_rank AS sort_key " SUPPORT_LIST_FILTERS         \
    "AND ($15::smallint IS NULL OR (t.priority_rank, t.id) > ($15::smallint, $16::bigint)) "       \
    "ORDER BY t.priority_rank, t.id LIMIT $14"

#endif
