-- Row-level security, a second wall behind the organization filter every
-- query already has (docs/schema.md, "Row-level security"). The runtime sets
-- onceiot.org_id and onceiot.superuser transaction-locally from the caller's
-- principal (shared/include/onceiot/db.h); a statement without them sees no
-- organization's rows. FORCE: the service role owns these tables, and owners
-- skip policies otherwise. Policies on a partitioned parent apply to every
-- partition read or written through it.

ALTER TABLE sim_usage ENABLE ROW LEVEL SECURITY;
ALTER TABLE sim_usage FORCE ROW LEVEL SECURITY;
CREATE POLICY sim_usage_superuser ON sim_usage
    USING (current_setting('onceiot.superuser', true) = 'true');
CREATE POLICY sim_usage_tenant ON sim_usage
    USING (organization_id = nullif(current_setting('onceiot.org_id', true), '')::bigint);

ALTER TABLE sim_usage_hourly ENABLE ROW LEVEL SECURITY;
ALTER TABLE sim_usage_hourly FORCE ROW LEVEL SECURITY;
CREATE POLICY sim_usage_hourly_superuser ON sim_usage_hourly
    USING (current_setting('onceiot.superuser', true) = 'true');
CREATE POLICY sim_usage_hourly_tenant ON sim_usage_hourly
    USING (organization_id = nullif(current_setting('onceiot.org_id', true), '')::bigint);

ALTER TABLE sim_usage_daily ENABLE ROW LEVEL SECURITY;
ALTER TABLE sim_usage_daily FORCE ROW LEVEL SECURITY;
CREATE POLICY sim_usage_daily_superuser ON sim_usage_daily
    USING (current_setting('onceiot.superuser', true) = 'true');
CREATE POLICY sim_usage_daily_tenant ON sim_usage_daily
    USING (organization_id = nullif(current_setting('onceiot.org_id', true), '')::bigint);

ALTER TABLE sim_usage_daily_network ENABLE ROW LEVEL SECURITY;
ALTER TABLE sim_usage_daily_network FORCE ROW LEVEL SECURITY;
CREATE POLICY sim_usage_daily_network_superuser ON sim_usage_daily_network
    USING (current_setting('onceiot.superuser', true) = 'true');
CREATE POLICY sim_usage_daily_network_tenant ON sim_usage_daily_network
    USING (organization_id = nullif(current_setting('onceiot.org_id', true), '')::bigint);

ALTER TABLE org_usage_daily ENABLE ROW LEVEL SECURITY;
ALTER TABLE org_usage_daily FORCE ROW LEVEL SECURITY;
CREATE POLICY org_usage_daily_superuser ON org_usage_daily
    USING (current_setting('onceiot.superuser', true) = 'true');
CREATE POLICY org_usage_daily_tenant ON org_usage_daily
    USING (organization_id = nullif(current_setting('onceiot.org_id', true), '')::bigint);

ALTER TABLE org_usage_daily_network ENABLE ROW LEVEL SECURITY;
ALTER TABLE org_usage_daily_network FORCE ROW LEVEL SECURITY;
CREATE POLICY org_usage_daily_network_superuser ON org_usage_daily_network
    USING (current_setting('onceiot.superuser', true) = 'true');
CREATE POLICY org_usage_daily_network_tenant ON org_usage_daily_network
    USING (organization_id = nullif(current_setting('onceiot.org_id', true), '')::bigint);

ALTER TABLE sim_connectivity ENABLE ROW LEVEL SECURITY;
ALTER TABLE sim_connectivity FORCE ROW LEVEL SECURITY;
CREATE POLICY sim_connectivity_superuser ON sim_connectivity
    USING (current_setting('onceiot.superuser', true) = 'true');
CREATE POLICY sim_connectivity_tenant ON sim_connectivity
    USING (organization_id = nullif(current_setting('onceiot.org_id', true), '')::bigint);

ALTER TABLE sim_connectivity_state ENABLE ROW LEVEL SECURITY;
ALTER TABLE sim_connectivity_state FORCE ROW LEVEL SECURITY;
CREATE POLICY sim_connectivity_state_superuser ON sim_connectivity_state
    USING (current_setting('onceiot.superuser', true) = 'true');
CREATE POLICY sim_connectivity_state_tenant ON sim_connectivity_state
    USING (organization_id = nullif(current_setting('onceiot.org_id', true), '')::bigint);
