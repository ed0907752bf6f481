-- Connectivity from the usage service (see docs/schema.md, "sims"): the
-- seed's current_rat, current_country and current_operator follow the latest
-- sample (network_observed_at is that sample's time, so an older sample
-- delivered late never overwrites a newer network), and connectivity_seq is
-- the number of the last connectivity transition recorded as an event, so
-- transitions are recorded exactly once and in order per SIM.
ALTER TABLE sims
    ADD COLUMN network_observed_at timestamptz,
    ADD COLUMN connectivity_seq bigint NOT NULL DEFAULT 0 CHECK (connectivity_seq >= 0),
    ADD CONSTRAINT sims_current_rat_valid
        CHECK (current_rat IN ('2G', '3G', 'LTE', 'LTE-M', 'NB-IoT', '5G')),
    ADD CONSTRAINT sims_current_country_format CHECK (current_country ~ '^[A-Z]{2}$'),
    ADD CONSTRAINT sims_current_operator_length CHECK (char_length(current_operator) <= 100);

-- The views expand s.* when created: made again so they carry the new column.
DROP VIEW v_active_sims;
DROP VIEW sim_summaries;
CREATE VIEW sim_summaries AS
SELECT s.*,
       qd.volume AS data_volume, qd.used_volume AS data_used,
       qd.remaining_volume AS data_remaining, qd.threshold_reached AS data_threshold_reached,
       qs.volume AS sms_volume, qs.used_volume AS sms_used,
       qs.remaining_volume AS sms_remaining, qs.threshold_reached AS sms_threshold_reached
FROM sims s
LEFT JOIN sim_quotas qd ON qd.sim_id = s.id AND qd.quota_type = 'data'
LEFT JOIN sim_quotas qs ON qs.sim_id = s.id AND qs.quota_type = 'sms';
CREATE VIEW v_active_sims AS
SELECT * FROM sim_summaries WHERE status = 'Enabled';

-- ApplyConnectivity's idempotency: the batch id is claimed first in the
-- batch's transaction (a retry finds it and changes nothing; a concurrent
-- copy waits on the key). Pruned after 30 days with the usage batch ids.
CREATE TABLE processed_connectivity_batches (
    batch_id     text PRIMARY KEY CHECK (char_length(batch_id) BETWEEN 1 AND 128),
    item_count   integer NOT NULL,
    events       integer NOT NULL DEFAULT 0,
    processed_at timestamptz NOT NULL DEFAULT now()
);
