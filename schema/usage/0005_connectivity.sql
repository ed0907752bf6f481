-- Connectivity samples and each SIM's latest state (see docs/schema.md,
-- "usage", connectivity). Requires pg_partman in schema partman, as
-- 0002_usage.sql.

-- Samples, partitioned by day on "timestamp" (pg_partman: made from 30 days
-- back, kept 7 days ahead, 6 months kept; older late samples land in the
-- default partition, pruned by the maintenance). One sample per SIM and
-- instant: the key leads with the SIM (shardable by SIM) and serves
-- ListConnectivity (newest first, keyset on "timestamp").
CREATE TABLE sim_connectivity (
    sim_id          bigint NOT NULL,
    "timestamp"     timestamptz NOT NULL,
    organization_id bigint NOT NULL,
    iccid           text NOT NULL,
    connected       boolean NOT NULL,
    cell_id         text CHECK (char_length(cell_id) <= 50),
    signal_strength smallint CHECK (signal_strength BETWEEN -150 AND 0),
    signal_quality  smallint CHECK (signal_quality BETWEEN 0 AND 100),
    rat             text CHECK (rat IN ('2G', '3G', 'LTE', 'LTE-M', 'NB-IoT', '5G')),
    country_code    text CHECK (country_code ~ '^[A-Z]{2}$'),
    operator_name   text CHECK (char_length(operator_name) <= 100),
    mcc             text CHECK (mcc ~ '^[0-9]{3}$'),
    mnc             text CHECK (mnc ~ '^[0-9]{2,3}$'),
    apn             text CHECK (char_length(apn) <= 100),
    batch_id        text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sim_id, "timestamp")
) PARTITION BY RANGE ("timestamp");

DO $$
DECLARE
    parent text := current_schema() || '.sim_connectivity';
BEGIN
    DELETE FROM partman.part_config WHERE parent_table = parent;
    PERFORM partman.create_parent(p_parent_table => parent, p_control => 'timestamp',
                                  p_type => 'native', p_interval => '1 day', p_premake => 7,
                                  p_start_partition => to_char(now() - interval '30 days',
                                                               'YYYY-MM-DD'));
    UPDATE partman.part_config
       SET retention = '6 months', retention_keep_table = false, infinite_time_partitions = true
     WHERE parent_table = parent;
END;
$$;

-- The latest state of every SIM that has samples: written in the batch's
-- transaction under the row lock, only from a sample newer than last_seen,
-- so a late older sample never overwrites it. since is the first sample of
-- the current connected/disconnected run; transitions counts the changes
-- (the seq of the last one sent to sims).
CREATE TABLE sim_connectivity_state (
    sim_id          bigint PRIMARY KEY,
    organization_id bigint NOT NULL,
    iccid           text NOT NULL,
    connected       boolean,         -- NULL only inside the transaction that creates the row
    since           timestamptz,
    last_seen       timestamptz,
    cell_id         text,
    signal_strength smallint,
    signal_quality  smallint,
    rat             text,
    country_code    text,
    operator_name   text,
    mcc             text,
    mnc             text,
    apn             text,
    transitions     bigint NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
-- ListOfflineSims: the offline SIMs of one organization (or, for the
-- operator, all), longest offline first; only offline rows are indexed.
CREATE INDEX sim_connectivity_state_offline
    ON sim_connectivity_state (organization_id, since, sim_id) WHERE NOT connected;
CREATE INDEX sim_connectivity_state_offline_all
    ON sim_connectivity_state (since, sim_id) WHERE NOT connected;

-- Ingest idempotency of connectivity batches, as ingested_batches for usage
-- (a namespace of its own).
CREATE TABLE ingested_connectivity_batches (
    batch_id     text PRIMARY KEY CHECK (char_length(batch_id) BETWEEN 1 AND 128),
    samples      integer NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now()
);
