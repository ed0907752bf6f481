/* The usage service's per-SIM list statements over both forms of a day
 * (raw rows and compacted rows), shared with the compaction benchmark
 * (tools/bench/bench_compact.c), so it times the very SQL the service runs:
 * ListUsageRecords (handlers_query.c) and ListConnectivity
 * (handlers_connectivity.c). */
#ifndef ONCEIOT_USAGE_SQL_H
#define ONCEIOT_USAGE_SQL_H

/* The bounds of a per-SIM list over both forms of its days ($2 start, $3
 * end, $5 the page token's time in microseconds, all optional): lo/hi in
 * microseconds (hi exclusive: the token's own instant stays in, its id
 * decides), the UTC days they fall on, for the compacted rows, and
 * whole_below: the days before it lie wholly inside the range, the token
 * included (without a token, every day before the end's day; with one,
 * every day before the token's, which the token may cut). */
#define LIST_BOUNDS                                                                                \
    "b AS (SELECT coalesce((extract(epoch FROM $2::timestamptz) * 1000000)::bigint, "              \
    "-9223372036854775808) AS lo, least(coalesce((extract(epoch FROM $3::timestamptz) * "          \
    "1000000)::bigint, 9223372036854775807), $5::bigint + 1) AS hi, least($3::timestamptz, "       \
    "'epoch'::timestamptz + ($5::bigint + 1) * interval '1 microsecond') AS hi_ts), "              \
    "bd AS (SELECT lo, hi, coalesce(($2::timestamptz AT TIME ZONE 'UTC')::date, '-infinity') AS "  \
    "lo_day, coalesce(((hi_ts - interval '1 microsecond') AT TIME ZONE 'UTC')::date, "             \
    "'infinity') AS hi_day, CASE WHEN $5::bigint IS NULL THEN coalesce(($3::timestamptz AT TIME "  \
    "ZONE 'UTC')::date, 'infinity') ELSE ((hi_ts - interval '1 microsecond') AT TIME ZONE "        \
    "'UTC')::date END AS whole_below FROM b), "
/* The oldest compacted day of SIM $1 a page of $4 can reach: every day
 * before whole_below holds all its rows, so once such days newer than a day
 * hold $4 rows, that day and older ones cannot be on the page. Read from the
 * primary key alone (count INCLUDEd); the page then decodes the days from it
 * to hi_day, one range of the key. */
#define LIST_OLDEST_DAY(table, count)                                                              \
    "oldest AS (SELECT min(w.day) AS day FROM (SELECT c.day, coalesce(sum(c." count                \
    ") FILTER (WHERE c.day < bd.whole_below) OVER (ORDER BY c.day DESC ROWS BETWEEN UNBOUNDED "    \
    "PRECEDING AND 1 PRECEDING), 0) AS before FROM " table " c, bd WHERE c.sim_id = $1 "           \
    "AND c.day >= bd.lo_day AND c.day <= bd.hi_day) w WHERE w.before < $4), "
/* The compacted days a page decodes: from the oldest it can reach to hi_day.
 * A range of one day skips the oldest step (its InitPlan then never runs). */
#define LIST_DAY_RANGE                                                                             \
    "c.day >= CASE WHEN bd.lo_day >= bd.hi_day THEN bd.lo_day ELSE (SELECT day FROM oldest) END "  \
    "AND c.day <= bd.hi_day "

/* ListUsageRecords: $1 sim_id, $2/$3 the range (optional), $4 the page size
 * + 1, $5/$6 the page token's time (microseconds) and id (optional). Newest
 * first, keyset on (timestamp, id), over the raw rows and the compacted days
 * alike: the page of each form, then the page of both. */
#define USAGE_SQL_LIST_RECORDS                                                                     \
    "WITH raw AS (SELECT id, iccid, (extract(epoch FROM \"timestamp\") * 1000000)::bigint AS "     \
    "ts_us, volume_rx, volume_tx, total_volume, sms_mo, sms_mt, session_count, mcc, mnc, "         \
    "country, rat FROM sim_usage WHERE sim_id = $1 "                                               \
    "AND \"timestamp\" >= coalesce($2::timestamptz, '-infinity') "                                 \
    "AND \"timestamp\" < coalesce($3::timestamptz, 'infinity') "                                   \
    "AND (\"timestamp\", id) < (coalesce('epoch'::timestamptz + $5::bigint * interval "            \
    "'1 microsecond', 'infinity'), coalesce($6::bigint, 9223372036854775807)) "                    \
    "ORDER BY \"timestamp\" DESC, id DESC LIMIT $4), " LIST_BOUNDS LIST_OLDEST_DAY(                \
        "sim_usage_compact", "records") "comp AS (SELECT d.id, c.iccid, d.ts_us, d.volume_rx, "    \
                                        "d.volume_tx, d.volume_rx + d.volume_tx AS total_volume, " \
                                        "d.sms_mo, d.sms_mt, d.session_count, d.mcc, d.mnc, "      \
                                        "d.country, d.rat FROM sim_usage_compact c CROSS JOIN "    \
                                        "LATERAL sim_usage_decoded(c) d, bd WHERE c.sim_id = $1 "  \
                                        "AND " LIST_DAY_RANGE "AND d.ts_us >= bd.lo "              \
                                        "AND d.ts_us < bd.hi AND ($5::bigint IS NULL OR "          \
                                        "(d.ts_us, d.id) < ($5::bigint, $6::bigint)) "             \
                                        "ORDER BY d.ts_us DESC, d.id DESC LIMIT $4) "              \
                                        "SELECT * FROM raw UNION ALL SELECT * FROM comp ORDER BY " \
                                        "ts_us DESC, id DESC LIMIT $4"

/* A connectivity sample's columns as GetConnectivity and ListConnectivity
 * read them. */
#define CONN_SAMPLE_COLUMNS                                                                        \
    "iccid, connected, cell_id, signal_strength, signal_quality, rat, country_code, "              \
    "operator_name, mcc, mnc, apn"

/* ListConnectivity: $1 sim_id, $2/$3 the range (optional), $4 the page size
 * + 1, $5 the page token's time (microseconds, optional). Newest first,
 * keyset on the timestamp, over the raw samples and the compacted days
 * alike. A raw sample of a compacted day that is already there compacted
 * (sent again after the day was compacted) is left out: the first written
 * wins, as the ingest's ON CONFLICT DO NOTHING has it, and the next
 * compaction drops it. */
#define USAGE_SQL_LIST_CONNECTIVITY                                                                \
    "WITH raw AS (SELECT " CONN_SAMPLE_COLUMNS                                                     \
    ", (extract(epoch FROM \"timestamp\") * 1000000)::bigint AS ts_us "                            \
    "FROM sim_connectivity s WHERE sim_id = $1 "                                                   \
    "AND \"timestamp\" >= coalesce($2::timestamptz, '-infinity') "                                 \
    "AND \"timestamp\" < least(coalesce($3::timestamptz, 'infinity'), "                            \
    "coalesce('epoch'::timestamptz + $5::bigint * interval '1 microsecond', 'infinity')) "         \
    "AND NOT EXISTS (SELECT 1 FROM sim_connectivity_compact c CROSS JOIN LATERAL "                 \
    "sim_connectivity_decoded(c) d WHERE c.sim_id = $1 AND c.day = (s.\"timestamp\" AT TIME "      \
    "ZONE 'UTC')::date AND d.ts_us = (extract(epoch FROM s.\"timestamp\") * 1000000)::bigint) "    \
    "ORDER BY \"timestamp\" DESC LIMIT $4), " LIST_BOUNDS LIST_OLDEST_DAY(                         \
        "sim_connectivity_compact",                                                                \
        "samples") "comp AS (SELECT c.iccid, d.connected, d.cell_id, d.signal_strength, "          \
                   "d.signal_quality, d.rat, d.country_code, d.operator_name, d.mcc, d.mnc, "      \
                   "d.apn, d.ts_us FROM sim_connectivity_compact c CROSS JOIN LATERAL "            \
                   "sim_connectivity_decoded(c) d, bd WHERE c.sim_id = $1 AND " LIST_DAY_RANGE     \
                   "AND d.ts_us >= bd.lo AND d.ts_us < bd.hi AND ($5::bigint IS "                  \
                   "NULL OR d.ts_us < $5::bigint) ORDER BY d.ts_us DESC LIMIT $4) "                \
                   "SELECT * FROM raw UNION ALL SELECT * FROM comp ORDER BY ts_us DESC LIMIT $4"

#endif
