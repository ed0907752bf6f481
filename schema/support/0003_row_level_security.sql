-- Row-level security, a second wall behind the organization filter every
-- query already has (docs/schema.md, "Row-level security"). The runtime sets
-- onceiot.org_id and onceiot.superuser transaction-locally from the caller's
-- principal (shared/include/onceiot/db.h); a statement without them sees no
-- organization's rows. FORCE: the service role owns these tables, and owners
-- skip policies otherwise. Policies on a partitioned parent apply to every
-- partition read or written through it.

ALTER TABLE tickets ENABLE ROW LEVEL SECURITY;
ALTER TABLE tickets FORCE ROW LEVEL SECURITY;
CREATE POLICY tickets_superuser ON tickets
    USING (current_setting('onceiot.superuser', true) = 'true');
CREATE POLICY tickets_tenant ON tickets
    USING (organization_id = nullif(current_setting('onceiot.org_id', true), '')::bigint);

ALTER TABLE ticket_comments ENABLE ROW LEVEL SECURITY;
ALTER TABLE ticket_comments FORCE ROW LEVEL SECURITY;
CREATE POLICY ticket_comments_superuser ON ticket_comments
    USING (current_setting('onceiot.superuser', true) = 'true');
CREATE POLICY ticket_comments_tenant ON ticket_comments
    USING (organization_id = nullif(current_setting('onceiot.org_id', true), '')::bigint);

-- ticket_history has no organization of its own: a row is visible when its tickets row is
-- (the subquery is under tickets's policies).
ALTER TABLE ticket_history ENABLE ROW LEVEL SECURITY;
ALTER TABLE ticket_history FORCE ROW LEVEL SECURITY;
CREATE POLICY ticket_history_superuser ON ticket_history
    USING (current_setting('onceiot.superuser', true) = 'true');
CREATE POLICY ticket_history_tenant ON ticket_history
    USING (EXISTS (SELECT 1 FROM tickets p WHERE p.id = ticket_history.ticket_id));
