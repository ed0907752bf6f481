-- The audit trail records every change a public call makes to these tables
-- (audit_track: the runtime's, see shared/include/onceiot/audit.h).
SELECT audit_track('products', 'id');
SELECT audit_track('orders', 'id', 'organization_id');
