-- Compaction of old days (the seed's TimescaleDB compression, see
-- docs/schema.md, "usage", compaction). A day older than 7 days is
-- rewritten, in one transaction per day, from its raw rows into one row per
-- SIM and day holding the day's values as arrays in (timestamp, id) order:
-- column-wise, segmented by SIM, TOAST-compressed (pglz, the server's
-- default: it compressed this data 20% better than lz4). Monotonic columns
-- (ids, times) are stored as deltas from the previous element (the first
-- from 0), so regular series compress to almost nothing. Lossless: every
-- column of the raw row is kept (total_volume is derived).
--
-- The tables are not partitioned: pg_partman 4.7 does not give new
-- partitions the parent's toast_tuple_target, and without it rows under
-- 2 kB (a SIM's 24 hourly records) would not be compressed at all. One row
-- per SIM and day is small enough for retention by DELETE (the maintenance
-- drops the days past retention every run, like the default partitions).

CREATE TABLE sim_usage_compact (
    sim_id          bigint NOT NULL,
    day             date NOT NULL,         -- UTC
    organization_id bigint NOT NULL,
    iccid           text NOT NULL,
    records         integer NOT NULL CHECK (records > 0),
    id              bigint[] NOT NULL,     -- deltas
    ts              bigint[] NOT NULL,     -- unix microseconds, deltas
    volume_rx       bigint[] NOT NULL,
    volume_tx       bigint[] NOT NULL,
    sms_mo          integer[] NOT NULL,
    sms_mt          integer[] NOT NULL,
    session_count   integer[] NOT NULL,
    mcc             text[] NOT NULL,       -- elements NULL when unknown
    mnc             text[] NOT NULL,
    country         text[] NOT NULL,
    rat             text[] NOT NULL,
    batch_id        text[] NOT NULL,
    created_at      bigint[] NOT NULL,     -- unix microseconds, deltas
    compacted_at    timestamptz NOT NULL DEFAULT now(),
    -- ListUsageRecords sizes its read of a SIM's days from records alone
    -- (an index-only scan).
    PRIMARY KEY (sim_id, day) INCLUDE (records)
) WITH (toast_tuple_target = 128, autovacuum_vacuum_scale_factor = 0.05);
-- Kept inline, compressed: out-of-line TOAST would cost a second lookup per row.
ALTER TABLE sim_usage_compact
    ALTER COLUMN id SET STORAGE MAIN, ALTER COLUMN ts SET STORAGE MAIN,
    ALTER COLUMN volume_rx SET STORAGE MAIN, ALTER COLUMN volume_tx SET STORAGE MAIN,
    ALTER COLUMN sms_mo SET STORAGE MAIN, ALTER COLUMN sms_mt SET STORAGE MAIN,
    ALTER COLUMN session_count SET STORAGE MAIN, ALTER COLUMN mcc SET STORAGE MAIN,
    ALTER COLUMN mnc SET STORAGE MAIN, ALTER COLUMN country SET STORAGE MAIN,
    ALTER COLUMN rat SET STORAGE MAIN, ALTER COLUMN batch_id SET STORAGE MAIN,
    ALTER COLUMN created_at SET STORAGE MAIN;

CREATE TABLE sim_connectivity_compact (
    sim_id          bigint NOT NULL,
    day             date NOT NULL,         -- UTC
    organization_id bigint NOT NULL,
    iccid           text NOT NULL,
    samples         integer NOT NULL CHECK (samples > 0),
    ts              bigint[] NOT NULL,     -- unix microseconds, deltas
    connected       boolean[] NOT NULL,
    cell_id         text[] NOT NULL,
    signal_strength smallint[] NOT NULL,
    signal_quality  smallint[] NOT NULL,
    rat             text[] NOT NULL,
    country_code    text[] NOT NULL,
    operator_name   text[] NOT NULL,
    mcc             text[] NOT NULL,
    mnc             text[] NOT NULL,
    apn             text[] NOT NULL,
    batch_id        text[] NOT NULL,
    created_at      bigint[] NOT NULL,     -- unix microseconds, deltas
    compacted_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sim_id, day) INCLUDE (samples)
) WITH (toast_tuple_target = 128, autovacuum_vacuum_scale_factor = 0.05);
ALTER TABLE sim_connectivity_compact
    ALTER COLUMN ts SET STORAGE MAIN, ALTER COLUMN connected SET STORAGE MAIN,
    ALTER COLUMN cell_id SET STORAGE MAIN, ALTER COLUMN signal_strength SET STORAGE MAIN,
    ALTER COLUMN signal_quality SET STORAGE MAIN, ALTER COLUMN rat SET STORAGE MAIN,
    ALTER COLUMN country_code SET STORAGE MAIN, ALTER COLUMN operator_name SET STORAGE MAIN,
    ALTER COLUMN mcc SET STORAGE MAIN, ALTER COLUMN mnc SET STORAGE MAIN,
    ALTER COLUMN apn SET STORAGE MAIN, ALTER COLUMN batch_id SET STORAGE MAIN,
    ALTER COLUMN created_at SET STORAGE MAIN;

-- A compacted row's records, as the raw table's columns (times in unix
-- microseconds), in (timestamp, id) order. The one decoder: queries,
-- decompression and the views below use it (inlined by the planner).
CREATE FUNCTION sim_usage_decoded(c sim_usage_compact)
RETURNS TABLE (id bigint, ts_us bigint, volume_rx bigint, volume_tx bigint, sms_mo integer,
               sms_mt integer, session_count integer, mcc text, mnc text, country text,
               rat text, batch_id text, created_us bigint)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (sum(u.id) OVER w)::bigint, (sum(u.ts) OVER w)::bigint, u.volume_rx, u.volume_tx,
           u.sms_mo, u.sms_mt, u.session_count, u.mcc, u.mnc, u.country, u.rat, u.batch_id,
           (sum(u.created_at) OVER w)::bigint
    FROM unnest(c.id, c.ts, c.volume_rx, c.volume_tx, c.sms_mo, c.sms_mt, c.session_count,
                c.mcc, c.mnc, c.country, c.rat, c.batch_id, c.created_at) WITH ORDINALITY
         AS u(id, ts, volume_rx, volume_tx, sms_mo, sms_mt, session_count, mcc, mnc, country,
              rat, batch_id, created_at, n)
    WINDOW w AS (ORDER BY u.n ROWS UNBOUNDED PRECEDING)
$$;

CREATE FUNCTION sim_connectivity_decoded(c sim_connectivity_compact)
RETURNS TABLE (ts_us bigint, connected boolean, cell_id text, signal_strength smallint,
               signal_quality smallint, rat text, country_code text, operator_name text,
               mcc text, mnc text, apn text, batch_id text, created_us bigint)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (sum(u.ts) OVER w)::bigint, u.connected, u.cell_id, u.signal_strength,
           u.signal_quality, u.rat, u.country_code, u.operator_name, u.mcc, u.mnc, u.apn,
           u.batch_id, (sum(u.created_at) OVER w)::bigint
    FROM unnest(c.ts, c.connected, c.cell_id, c.signal_strength, c.signal_quality, c.rat,
                c.country_code, c.operator_name, c.mcc, c.mnc, c.apn, c.batch_id,
                c.created_at) WITH ORDINALITY
         AS u(ts, connected, cell_id, signal_strength, signal_quality, rat, country_code,
              operator_name, mcc, mnc, apn, batch_id, created_at, n)
    WINDOW w AS (ORDER BY u.n ROWS UNBOUNDED PRECEDING)
$$;

-- Every record and sample in either form, for operators' ad-hoc queries.
CREATE VIEW sim_usage_all AS
SELECT id, sim_id, organization_id, iccid, "timestamp", volume_rx, volume_tx, total_volume,
       sms_mo, sms_mt, session_count, mcc, mnc, country, rat, batch_id, created_at
FROM sim_usage
UNION ALL
SELECT d.id, c.sim_id, c.organization_id, c.iccid,
       'epoch'::timestamptz + d.ts_us * interval '1 microsecond', d.volume_rx, d.volume_tx,
       d.volume_rx + d.volume_tx, d.sms_mo, d.sms_mt, d.session_count, d.mcc, d.mnc, d.country,
       d.rat, d.batch_id, 'epoch'::timestamptz + d.created_us * interval '1 microsecond'
FROM sim_usage_compact c CROSS JOIN LATERAL sim_usage_decoded(c) d;

CREATE VIEW sim_connectivity_all AS
SELECT sim_id, "timestamp", organization_id, iccid, connected, cell_id, signal_strength,
       signal_quality, rat, country_code, operator_name, mcc, mnc, apn, batch_id, created_at
FROM sim_connectivity
UNION ALL
SELECT c.sim_id, 'epoch'::timestamptz + d.ts_us * interval '1 microsecond', c.organization_id,
       c.iccid, d.connected, d.cell_id, d.signal_strength, d.signal_quality, d.rat,
       d.country_code, d.operator_name, d.mcc, d.mnc, d.apn, d.batch_id,
       'epoch'::timestamptz + d.created_us * interval '1 microsecond'
FROM sim_connectivity_compact c CROSS JOIN LATERAL sim_connectivity_decoded(c) d;

-- The seed's view keeps answering over compacted days.
CREATE OR REPLACE VIEW v_daily_usage_summary AS
SELECT date("timestamp" AT TIME ZONE 'UTC') AS date,
       count(DISTINCT sim_id) AS active_sims,
       sum(total_volume) AS total_data,
       sum(sms_mo + sms_mt) AS total_sms
FROM sim_usage_all
GROUP BY 1
ORDER BY 1 DESC;
