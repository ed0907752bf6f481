-- The audit trail records every change a public call makes to these tables
-- (audit_track: the runtime's, see shared/include/onceiot/audit.h). The
-- event log is not tracked: events are themselves the record of changes.
SELECT audit_track('sims', 'iccid', 'organization_id');
SELECT audit_track('sim_quotas', 'sim_id,quota_type');
SELECT audit_track('sim_sms', 'id', 'organization_id');
