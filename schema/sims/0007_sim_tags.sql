-- A tenant's ListSims filtered by a tag, in ICCID order (see docs/schema.md,
-- "sim_tags"): one row per tag of each SIM, kept exact by triggers on sims in
-- the same statement as the change. Under the forced row-level security of
-- sims the GIN index on sims.tags cannot serve "tags @> ARRAY[tag]"
-- (arraycontains is not leakproof, so it must run after the policies, as a
-- filter), and the plain query read the organization's SIMs filtering each;
-- here a page of 100 is 100 entries of one btree range, in order, each
-- joined to its SIM. The key holds every column a page reads (the policy's
-- organization too): once vacuumed, a page is an index-only scan, which the
-- planner prefers to reading all of a large tag's entries and sorting them.
-- A tenant's list only: a superuser's (every organization) is served as
-- before, by sims. NULL elements of a tags array (only SQL can write them)
-- have no entry: no tag filter matches them.
CREATE TABLE sim_tags (
    organization_id bigint NOT NULL,
    tag             text NOT NULL,
    iccid           text NOT NULL,
    sim_id          bigint NOT NULL REFERENCES sims (id) ON DELETE CASCADE,
    PRIMARY KEY (organization_id, tag, iccid) INCLUDE (sim_id)
);
-- The foreign key's cascade finds a SIM's tags.
CREATE INDEX sim_tags_sim ON sim_tags (sim_id);
-- Tags are not spread evenly over organizations (a fleet's tag lives in one):
-- the planner estimates (organization, tag) pairs from their common values.
CREATE STATISTICS sim_tags_org_tag (ndistinct, dependencies, mcv)
    ON organization_id, tag FROM sim_tags;

-- The functions keep the search_path of this migration (the service's
-- schema), so the triggers also work for an operator's session (say, COPY
-- into sims.sims). Inserts (ImportSims: thousands of rows in one statement)
-- are handled per statement from the transition table. Deletes follow the
-- foreign key.
CREATE FUNCTION sim_tags_inserted() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO sim_tags (organization_id, tag, iccid, sim_id)
    SELECT DISTINCT n.organization_id, t.tag, n.iccid, n.id
      FROM sim_tags_new n, unnest(n.tags) AS t(tag) WHERE t.tag IS NOT NULL;
    RETURN NULL;
END;
$$;
CREATE TRIGGER sim_tags_inserted AFTER INSERT ON sims
    REFERENCING NEW TABLE AS sim_tags_new
    FOR EACH STATEMENT EXECUTE FUNCTION sim_tags_inserted();

-- Updates are per row, and only for rows whose tags (or organization, or
-- ICCID) changed: the WHEN condition is checked without calling the
-- function, so the frequent updates of other columns (connectivity, status)
-- cost nothing here. A transition table would hold every updated row.
CREATE FUNCTION sim_tags_updated() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    DELETE FROM sim_tags
     WHERE sim_id = OLD.id
       AND ((organization_id, iccid) IS DISTINCT FROM (NEW.organization_id, NEW.iccid)
            OR array_position(NEW.tags, tag) IS NULL);
    INSERT INTO sim_tags (organization_id, tag, iccid, sim_id)
    SELECT DISTINCT NEW.organization_id, t, NEW.iccid, NEW.id FROM unnest(NEW.tags) AS t
     WHERE t IS NOT NULL
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END;
$$;
CREATE TRIGGER sim_tags_updated AFTER UPDATE OF tags, organization_id, iccid ON sims
    FOR EACH ROW
    WHEN ((OLD.tags, OLD.organization_id, OLD.iccid)
          IS DISTINCT FROM (NEW.tags, NEW.organization_id, NEW.iccid))
    EXECUTE FUNCTION sim_tags_updated();

-- The same wall as sims (0005_row_level_security.sql). The triggers write
-- under the caller's scope: a tenant only ever writes its own SIMs' tags.
ALTER TABLE sim_tags ENABLE ROW LEVEL SECURITY;
ALTER TABLE sim_tags FORCE ROW LEVEL SECURITY;
CREATE POLICY sim_tags_superuser ON sim_tags
    USING (current_setting('onceiot.superuser', true) = 'true');
CREATE POLICY sim_tags_tenant ON sim_tags
    USING (organization_id = nullif(current_setting('onceiot.org_id', true), '')::bigint);

-- The backfill: the migration connection's scope is a superuser's
-- (shared/src/migrate.c), so it reads every organization's SIMs.
INSERT INTO sim_tags (organization_id, tag, iccid, sim_id)
SELECT DISTINCT s.organization_id, t.tag, s.iccid, s.id
  FROM sims s, unnest(s.tags) AS t(tag) WHERE t.tag IS NOT NULL;
ANALYZE sim_tags;
