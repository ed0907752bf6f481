-- Row-level security, a second wall behind the organization filter every
-- query already has (docs/schema.md, "Row-level security"). The runtime sets
-- onceiot.org_id and onceiot.superuser transaction-locally from the caller's
-- principal (shared/include/onceiot/db.h); a statement without them sees no
-- organization's rows. FORCE: the service role owns these tables, and owners
-- skip policies otherwise. Policies on a partitioned parent apply to every
-- partition read or written through it.

ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
CREATE POLICY users_superuser ON users
    USING (current_setting('onceiot.superuser', true) = 'true');
CREATE POLICY users_tenant ON users
    USING (organization_id = nullif(current_setting('onceiot.org_id', true), '')::bigint);

-- api_keys has no organization of its own: a row is visible when its users row is
-- (the subquery is under users's policies).
ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY api_keys_superuser ON api_keys
    USING (current_setting('onceiot.superuser', true) = 'true');
CREATE POLICY api_keys_tenant ON api_keys
    USING (EXISTS (SELECT 1 FROM users p WHERE p.id = api_keys.user_id));
