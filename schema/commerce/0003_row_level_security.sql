-- Row-level security, a second wall behind the organization filter every
-- query already has (docs/schema.md, "Row-level security"). The runtime sets
-- onceiot.org_id and onceiot.superuser transaction-locally from the caller's
-- principal (shared/include/onceiot/db.h); a statement without them sees no
-- organization's rows. FORCE: the service role owns these tables, and owners
-- skip policies otherwise. Policies on a partitioned parent apply to every
-- partition read or written through it.

ALTER TABLE orders ENABLE ROW LEVEL SECURITY;
ALTER TABLE orders FORCE ROW LEVEL SECURITY;
CREATE POLICY orders_superuser ON orders
    USING (current_setting('onceiot.superuser', true) = 'true');
CREATE POLICY orders_tenant ON orders
    USING (organization_id = nullif(current_setting('onceiot.org_id', true), '')::bigint);

-- order_items has no organization of its own: a row is visible when its orders row is
-- (the subquery is under orders's policies).
ALTER TABLE order_items ENABLE ROW LEVEL SECURITY;
ALTER TABLE order_items FORCE ROW LEVEL SECURITY;
CREATE POLICY order_items_superuser ON order_items
    USING (current_setting('onceiot.superuser', true) = 'true');
CREATE POLICY order_items_tenant ON order_items
    USING (EXISTS (SELECT 1 FROM orders p WHERE p.seq = order_items.order_seq));
