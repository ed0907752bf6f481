-- Row-level security on the compacted forms of 0007, as 0006 does for the
-- raw tables: a statement sees its organization's days, or all of them for
-- a superuser or the service's internal work (compaction, retention).

ALTER TABLE sim_usage_compact ENABLE ROW LEVEL SECURITY;
ALTER TABLE sim_usage_compact FORCE ROW LEVEL SECURITY;
CREATE POLICY sim_usage_compact_superuser ON sim_usage_compact
    USING (current_setting('onceiot.superuser', true) = 'true');
CREATE POLICY sim_usage_compact_tenant ON sim_usage_compact
    USING (organization_id = nullif(current_setting('onceiot.org_id', true), '')::bigint);

ALTER TABLE sim_connectivity_compact ENABLE ROW LEVEL SECURITY;
ALTER TABLE sim_connectivity_compact FORCE ROW LEVEL SECURITY;
CREATE POLICY sim_connectivity_compact_superuser ON sim_connectivity_compact
    USING (current_setting('onceiot.superuser', true) = 'true');
CREATE POLICY sim_connectivity_compact_tenant ON sim_connectivity_compact
    USING (organization_id = nullif(current_setting('onceiot.org_id', true), '')::bigint);
