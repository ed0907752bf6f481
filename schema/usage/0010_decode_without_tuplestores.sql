-- The decoders of 0007, same signatures and the same rows, made cheaper per
-- compacted row (issue 9: per-SIM history no slower on compacted days than
-- on raw days). A multi-argument unnest(...) WITH ORDINALITY in FROM is a
-- function scan: it materializes every row of the day in a tuplestore
-- before the first comes out. One unnest per array in the select list runs
-- as a ProjectSet instead (the arrays in lockstep, as the multi-argument
-- form pairs them), streaming. The running sums that undo the deltas are
-- int8 additions (int8_running_sum over int8pl) rather than sum(bigint),
-- whose state and result are numeric. The order stays explicit: the window
-- orders by the element's ordinal n, 1 to the length, also an unnest (of
-- the positions of a zero-filled array): generate_series would do, but
-- the planner takes it for 1000 rows (unnest: 10), and with that
-- ListConnectivity's generic plan costs more than a custom one, so every
-- call was planned again (1.2 ms instead of 0.25 on the benchmark). The
-- bodies are SQL-standard (BEGIN ATOMIC): parsed once here, so
-- int8_running_sum is bound whatever the caller's search_path, and still
-- inlined. Measured in docs/ARCHITECTURE.md ("usage compaction").

-- The running total of a bigint column in a window: int8pl on a bigint
-- state; the first value starts it (no initial value), NULLs are skipped
-- (int8pl is strict), and an overflow is an error, not a wrapped value. The
-- sums it is used for are the stored ids and times, which fit.
CREATE AGGREGATE int8_running_sum(bigint) (SFUNC = int8pl, STYPE = bigint, PARALLEL = SAFE);

CREATE OR REPLACE FUNCTION sim_usage_decoded(c sim_usage_compact)
RETURNS TABLE (id bigint, ts_us bigint, volume_rx bigint, volume_tx bigint, sms_mo integer,
               sms_mt integer, session_count integer, mcc text, mnc text, country text,
               rat text, batch_id text, created_us bigint)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT int8_running_sum(u.id) OVER w, int8_running_sum(u.ts) OVER w, u.volume_rx,
           u.volume_tx, u.sms_mo, u.sms_mt, u.session_count, u.mcc, u.mnc, u.country, u.rat,
           u.batch_id, int8_running_sum(u.created_at) OVER w
    FROM (SELECT unnest(c.id) AS id, unnest(c.ts) AS ts, unnest(c.volume_rx) AS volume_rx,
                 unnest(c.volume_tx) AS volume_tx, unnest(c.sms_mo) AS sms_mo,
                 unnest(c.sms_mt) AS sms_mt, unnest(c.session_count) AS session_count,
                 unnest(c.mcc) AS mcc, unnest(c.mnc) AS mnc, unnest(c.country) AS country,
                 unnest(c.rat) AS rat, unnest(c.batch_id) AS batch_id,
                 unnest(c.created_at) AS created_at,
                 unnest(array_positions(array_fill(0, ARRAY[cardinality(c.ts)]), 0)) AS n) u
    WINDOW w AS (ORDER BY u.n ROWS UNBOUNDED PRECEDING);
END;

CREATE OR REPLACE FUNCTION sim_connectivity_decoded(c sim_connectivity_compact)
RETURNS TABLE (ts_us bigint, connected boolean, cell_id text, signal_strength smallint,
               signal_quality smallint, rat text, country_code text, operator_name text,
               mcc text, mnc text, apn text, batch_id text, created_us bigint)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT int8_running_sum(u.ts) OVER w, u.connected, u.cell_id, u.signal_strength,
           u.signal_quality, u.rat, u.country_code, u.operator_name, u.mcc, u.mnc, u.apn,
           u.batch_id, int8_running_sum(u.created_at) OVER w
    FROM (SELECT unnest(c.ts) AS ts, unnest(c.connected) AS connected,
                 unnest(c.cell_id) AS cell_id, unnest(c.signal_strength) AS signal_strength,
                 unnest(c.signal_quality) AS signal_quality, unnest(c.rat) AS rat,
                 unnest(c.country_code) AS country_code,
                 unnest(c.operator_name) AS operator_name, unnest(c.mcc) AS mcc,
                 unnest(c.mnc) AS mnc, unnest(c.apn) AS apn, unnest(c.batch_id) AS batch_id,
                 unnest(c.created_at) AS created_at,
                 unnest(array_positions(array_fill(0, ARRAY[cardinality(c.ts)]), 0)) AS n) u
    WINDOW w AS (ORDER BY u.n ROWS UNBOUNDED PRECEDING);
END;
