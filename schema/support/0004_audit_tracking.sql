-- The audit trail records every change a public call makes to these tables
-- (audit_track: the runtime's, see shared/include/onceiot/audit.h).
SELECT audit_track('tickets', 'id', 'organization_id');
SELECT audit_track('ticket_comments', 'id', 'organization_id');
SELECT audit_track('sla_policies', 'priority');
