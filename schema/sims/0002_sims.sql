-- The SIM registry, quotas, SMS and the event log (see docs/schema.md, "sims").
-- Requires the extensions pg_trgm (schema public) and pg_partman (schema
-- partman), created by a superuser before this runs.

-- One row per SIM card. The ICCID is unique across all tenants (it names a
-- physical card); every query also filters by organization_id.
CREATE TABLE sims (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id  bigint NOT NULL,
    iccid            text NOT NULL,
    imsi             text,
    msisdn           text,
    imei             text,
    imei_lock        boolean NOT NULL DEFAULT false,
    status           text NOT NULL DEFAULT 'Disabled',
    label            text NOT NULL DEFAULT '',
    ip_address       inet,
    ipv6_address     inet,
    customer_org_id  bigint,
    current_rat      text,
    current_country  text,
    current_operator text,
    activation_date  timestamptz,
    suspension_date  timestamptz,
    termination_date timestamptz,
    expiry_date      timestamptz,
    tags             text[] NOT NULL DEFAULT '{}',
    metadata         jsonb NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    last_synced_at   timestamptz,
    CONSTRAINT sims_iccid_format CHECK (iccid ~ '^[0-9]{19,20}$'),
    CONSTRAINT sims_iccid_unique UNIQUE (iccid),
    CONSTRAINT sims_status_valid
        CHECK (status IN ('Enabled', 'Disabled', 'Expired', 'Suspended', 'Terminated')),
    CONSTRAINT sims_imsi_format CHECK (imsi ~ '^[0-9]{6,15}$'),
    CONSTRAINT sims_msisdn_format CHECK (msisdn ~ '^[0-9]{1,15}$'),
    CONSTRAINT sims_imei_format CHECK (imei ~ '^[0-9]{15}$'),
    CONSTRAINT sims_label_length CHECK (char_length(label) <= 255),
    CONSTRAINT sims_metadata_object CHECK (jsonb_typeof(metadata) = 'object'),
    CONSTRAINT sims_tags_count CHECK (cardinality(tags) <= 64)
);

-- Each ListSims order is a (organization_id, key, iccid) btree walked with a
-- keyset condition; each equality filter has its own index. Never-activated
-- SIMs sort last through the coalesce (a row comparison cannot skip NULLs).
CREATE UNIQUE INDEX sims_org_iccid ON sims (organization_id, iccid);
CREATE INDEX sims_org_activation
    ON sims (organization_id, coalesce(activation_date, 'infinity'::timestamptz), iccid);
CREATE INDEX sims_org_label ON sims (organization_id, label, iccid);
CREATE INDEX sims_org_status ON sims (organization_id, status, iccid);
CREATE INDEX sims_org_customer ON sims (organization_id, customer_org_id, iccid);
CREATE INDEX sims_imei ON sims (imei) WHERE imei IS NOT NULL;
CREATE INDEX sims_msisdn ON sims (msisdn) WHERE msisdn IS NOT NULL;
CREATE INDEX sims_ip ON sims (ip_address) WHERE ip_address IS NOT NULL;
CREATE INDEX sims_tags ON sims USING gin (tags);
CREATE INDEX sims_label_trgm ON sims USING gin (label gin_trgm_ops);

CREATE TRIGGER sims_updated_at BEFORE UPDATE ON sims
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Data (bytes) and SMS (messages) quota per SIM. remaining_volume,
-- threshold_volume and threshold_reached are generated columns, so they can
-- never be out of step with volume and used_volume, whoever writes the row.
CREATE TABLE sim_quotas (
    sim_id               bigint NOT NULL REFERENCES sims (id) ON DELETE CASCADE,
    quota_type           text NOT NULL CHECK (quota_type IN ('data', 'sms')),
    volume               bigint NOT NULL DEFAULT 0 CHECK (volume >= 0),
    used_volume          bigint NOT NULL DEFAULT 0 CHECK (used_volume >= 0),
    threshold_percentage integer NOT NULL DEFAULT 80
        CHECK (threshold_percentage BETWEEN 1 AND 100),
    remaining_volume     bigint GENERATED ALWAYS AS (greatest(volume - used_volume, 0)) STORED,
    threshold_volume     bigint GENERATED ALWAYS AS (volume * threshold_percentage / 100) STORED,
    threshold_reached    boolean GENERATED ALWAYS AS
        (volume > 0 AND used_volume >= volume * threshold_percentage / 100) STORED,
    last_volume_added    bigint,
    auto_reload          boolean NOT NULL DEFAULT false,
    auto_reload_amount   bigint NOT NULL DEFAULT 0 CHECK (auto_reload_amount >= 0),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sim_id, quota_type),
    CONSTRAINT sim_quotas_reload_amount CHECK (NOT auto_reload OR auto_reload_amount > 0)
);
CREATE INDEX sim_quotas_threshold ON sim_quotas (sim_id) WHERE threshold_reached;

CREATE TRIGGER sim_quotas_updated_at BEFORE UPDATE ON sim_quotas
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- A SIM with its quota summary, so GetSim and ListSims are one query each.
CREATE VIEW sim_summaries AS
SELECT s.*,
       qd.volume AS data_volume, qd.used_volume AS data_used,
       qd.remaining_volume AS data_remaining, qd.threshold_reached AS data_threshold_reached,
       qs.volume AS sms_volume, qs.used_volume AS sms_used,
       qs.remaining_volume AS sms_remaining, qs.threshold_reached AS sms_threshold_reached
FROM sims s
LEFT JOIN sim_quotas qd ON qd.sim_id = s.id AND qd.quota_type = 'data'
LEFT JOIN sim_quotas qs ON qs.sim_id = s.id AND qs.quota_type = 'sms';

-- The seed's v_active_sims, kept for operators' ad-hoc queries.
CREATE VIEW v_active_sims AS
SELECT * FROM sim_summaries WHERE status = 'Enabled';

-- SMS to (MT) and from (MO) a SIM.
CREATE TABLE sim_sms (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sim_id          bigint NOT NULL REFERENCES sims (id) ON DELETE CASCADE,
    organization_id bigint NOT NULL,
    iccid           text NOT NULL,
    sms_id          text UNIQUE,
    direction       text NOT NULL CHECK (direction IN ('MO', 'MT')),
    message         text NOT NULL CHECK (char_length(message) BETWEEN 1 AND 1600),
    encoding        text NOT NULL CHECK (encoding IN ('GSM7', 'UCS2')),
    segments        integer NOT NULL CHECK (segments >= 1),
    status          text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sent', 'delivered', 'failed', 'cancelled', 'received')),
    error_message   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    delivered_at    timestamptz,
    failed_at       timestamptz
);
CREATE INDEX sim_sms_sim_id ON sim_sms (sim_id, id DESC);

-- The event log: partitioned by day (pg_partman creates partitions 7 days
-- ahead and drops those older than a year). The primary key must include the
-- partition key.
CREATE TABLE sim_events (
    id              bigint GENERATED BY DEFAULT AS IDENTITY,
    sim_id          bigint NOT NULL,
    organization_id bigint NOT NULL,
    iccid           text NOT NULL,
    occurred_at     timestamptz NOT NULL DEFAULT now(),
    event_type      text NOT NULL CHECK (event_type ~ '^[a-z][a-z0-9_]{0,63}$'),
    event_category  text NOT NULL
        CHECK (event_category IN ('status', 'quota', 'sms', 'connectivity', 'registry')),
    severity        text NOT NULL DEFAULT 'info'
        CHECK (severity IN ('info', 'warning', 'error', 'critical')),
    event_data      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(event_data) = 'object'),
    description     text NOT NULL DEFAULT '',
    triggered_by    text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, occurred_at)
) PARTITION BY RANGE (occurred_at);
CREATE INDEX sim_events_sim_time ON sim_events (sim_id, occurred_at DESC, id DESC);

-- Watchers learn of new events through NOTIFY, sent at commit: the payload
-- "<id> <organization_id> <occurred_at as unix microseconds>" lets the
-- listener read the row with partition pruning.
CREATE FUNCTION sim_events_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sims_events', NEW.id || ' ' || NEW.organization_id || ' '
                      || (extract(epoch FROM NEW.occurred_at) * 1000000)::bigint);
    RETURN NULL;
END;
$$;
CREATE TRIGGER sim_events_notify AFTER INSERT ON sim_events
    FOR EACH ROW EXECUTE FUNCTION sim_events_notify();

DO $$
DECLARE
    parent text := current_schema() || '.sim_events';
BEGIN
    -- A schema dropped and created again leaves its old partman row behind.
    DELETE FROM partman.part_config WHERE parent_table = parent;
    PERFORM partman.create_parent(p_parent_table => parent, p_control => 'occurred_at',
                                  p_type => 'native', p_interval => '1 day', p_premake => 7);
    UPDATE partman.part_config
       SET retention = '1 year', retention_keep_table = false, infinite_time_partitions = true
     WHERE parent_table = parent;
END;
$$;

-- ApplyUsage idempotency: a batch id is stored with the answer it got, in the
-- same transaction as its effects, so a retried batch returns that answer and
-- changes nothing.
CREATE TABLE processed_usage_batches (
    batch_id     text PRIMARY KEY CHECK (char_length(batch_id) BETWEEN 1 AND 128),
    item_count   integer NOT NULL,
    response     bytea NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);
