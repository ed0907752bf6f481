-- Row-level security, a second wall behind the organization filter every
-- query already has (docs/schema.md, "Row-level security"). The runtime sets
-- onceiot.org_id and onceiot.superuser transaction-locally from the caller's
-- principal (shared/include/onceiot/db.h); a statement without them sees no
-- organization's rows. FORCE: the service role owns these tables, and owners
-- skip policies otherwise. Policies on a partitioned parent apply to every
-- partition read or written through it.

ALTER TABLE sims ENABLE ROW LEVEL SECURITY;
ALTER TABLE sims FORCE ROW LEVEL SECURITY;
CREATE POLICY sims_superuser ON sims
    USING (current_setting('onceiot.superuser', true) = 'true');
CREATE POLICY sims_tenant ON sims
    USING (organization_id = nullif(current_setting('onceiot.org_id', true), '')::bigint);

-- sim_quotas has no organization of its own: a row is visible when its sims row is
-- (the subquery is under sims's policies).
ALTER TABLE sim_quotas ENABLE ROW LEVEL SECURITY;
ALTER TABLE sim_quotas FORCE ROW LEVEL SECURITY;
CREATE POLICY sim_quotas_superuser ON sim_quotas
    USING (current_setting('onceiot.superuser', true) = 'true');
CREATE POLICY sim_quotas_tenant ON sim_quotas
    USING (EXISTS (SELECT 1 FROM sims p WHERE p.id = sim_quotas.sim_id));

ALTER TABLE sim_sms ENABLE ROW LEVEL SECURITY;
ALTER TABLE sim_sms FORCE ROW LEVEL SECURITY;
CREATE POLICY sim_sms_superuser ON sim_sms
    USING (current_setting('onceiot.superuser', true) = 'true');
CREATE POLICY sim_sms_tenant ON sim_sms
    USING (organization_id = nullif(current_setting('onceiot.org_id', true), '')::bigint);

ALTER TABLE sim_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE sim_events FORCE ROW LEVEL SECURITY;
CREATE POLICY sim_events_superuser ON sim_events
    USING (current_setting('onceiot.superuser', true) = 'true');
CREATE POLICY sim_events_tenant ON sim_events
    USING (organization_id = nullif(current_setting('onceiot.org_id', true), '')::bigint);
