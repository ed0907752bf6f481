-- Support tickets, their comments and history (docs/schema.md, "support").

-- The response time each priority promises: a ticket must get its first
-- staff response by created_at + response_within. Operators may change the
-- rows; tickets created later (or re-prioritised) use the new values.
CREATE TABLE sla_policies (
    priority        text PRIMARY KEY CHECK (priority IN ('low', 'medium', 'high', 'critical')),
    response_within interval NOT NULL CHECK (response_within > interval '0')
);
INSERT INTO sla_policies VALUES
    ('critical', interval '1 hour'),
    ('high', interval '4 hours'),
    ('medium', interval '1 day'),
    ('low', interval '3 days');

CREATE TABLE tickets (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    external_id       text UNIQUE CHECK (external_id ~ '^[A-Za-z0-9._:#/-]{1,100}$'),
    organization_id   bigint NOT NULL CHECK (organization_id > 0),
    created_by        bigint NOT NULL,
    subject           text NOT NULL CHECK (length(subject) BETWEEN 1 AND 255),
    description       text NOT NULL DEFAULT '' CHECK (length(description) <= 20000),
    priority          text NOT NULL DEFAULT 'medium'
                      CHECK (priority IN ('low', 'medium', 'high', 'critical')),
    -- 0 critical .. 3 low: the key of "most urgent first".
    priority_rank     smallint GENERATED ALWAYS AS (
                          CASE priority WHEN 'critical' THEN 0 WHEN 'high' THEN 1
                                        WHEN 'medium' THEN 2 ELSE 3 END) STORED,
    status            text NOT NULL DEFAULT 'open'
                      CHECK (status IN ('open', 'in_progress', 'resolved', 'closed')),
    category          text NOT NULL DEFAULT 'general'
                      CHECK (category IN ('general', 'connectivity', 'sim_management', 'billing',
                                          'orders', 'api')),
    iccids            text[] NOT NULL DEFAULT '{}' CHECK (cardinality(iccids) <= 100),
    assignee_id       bigint,
    resolution        text CHECK (length(resolution) BETWEEN 1 AND 10000),
    reopen_count      integer NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    resolved_at       timestamptz,
    closed_at         timestamptz,
    first_response_at timestamptz,
    response_due_at   timestamptz NOT NULL,
    -- What a customer's search may match: subject, description and public
    -- comments. What staff search: the same plus internal notes. Two
    -- documents, so a customer's search can never match a word that occurs
    -- only in an internal note. Both kept by triggers (below).
    search_public     tsvector NOT NULL DEFAULT ''::tsvector,
    search_staff      tsvector NOT NULL DEFAULT ''::tsvector,
    CONSTRAINT tickets_resolution_when_resolved
        CHECK ((status IN ('resolved', 'closed')) = (resolution IS NOT NULL))
);

-- Lists: newest first per organization (and across all for staff), most
-- urgent first, by status, by assignee, by SIM; the SLA queue; search.
CREATE INDEX tickets_org_created ON tickets (organization_id, created_at DESC, id DESC);
CREATE INDEX tickets_created ON tickets (created_at DESC, id DESC);
CREATE INDEX tickets_org_priority ON tickets (organization_id, priority_rank, id);
CREATE INDEX tickets_org_status ON tickets (organization_id, status, created_at DESC, id DESC);
CREATE INDEX tickets_assignee ON tickets (assignee_id, created_at DESC, id DESC)
    WHERE assignee_id IS NOT NULL;
-- The GIN indexes take each change at once (fastupdate off): tickets are
-- written at human pace, and a pending list would make every search scan it
-- (the planner then prefers a sequential scan over a freshly loaded table).
CREATE INDEX tickets_iccids ON tickets USING gin (iccids) WITH (fastupdate = off);
CREATE INDEX tickets_awaiting_response ON tickets (response_due_at)
    WHERE first_response_at IS NULL AND status IN ('open', 'in_progress');
CREATE INDEX tickets_search_public ON tickets USING gin (search_public) WITH (fastupdate = off);
CREATE INDEX tickets_search_staff ON tickets USING gin (search_staff) WITH (fastupdate = off);

CREATE TRIGGER tickets_updated_at BEFORE UPDATE ON tickets
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE ticket_comments (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ticket_id       bigint NOT NULL REFERENCES tickets ON DELETE CASCADE,
    organization_id bigint NOT NULL,
    author_id       bigint NOT NULL,
    author_is_staff boolean NOT NULL,
    visibility      text NOT NULL CHECK (visibility IN ('public', 'internal')),
    body            text NOT NULL CHECK (length(body) BETWEEN 1 AND 10000),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ticket_comments_internal_by_staff CHECK (visibility = 'public' OR author_is_staff)
);
CREATE INDEX ticket_comments_ticket ON ticket_comments (ticket_id, id);

CREATE TABLE ticket_history (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ticket_id        bigint NOT NULL REFERENCES tickets ON DELETE CASCADE,
    kind             text NOT NULL CHECK (kind IN ('created', 'status', 'assigned')),
    from_status      text,
    to_status        text,
    from_assignee_id bigint,
    to_assignee_id   bigint,
    actor_user_id    bigint NOT NULL,
    at               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ticket_history_ticket ON ticket_history (ticket_id, id);

-- The functions keep the search_path of this migration (the service's
-- schema), so the triggers also work for an operator's session.

-- The search documents of a ticket from its text and comments: subject
-- weighs most, then the description, then comments.
CREATE FUNCTION ticket_search_doc(subject text, description text, ticket bigint, staff boolean)
RETURNS tsvector
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT setweight(to_tsvector('english', subject), 'A')
        || setweight(to_tsvector('english', description), 'B')
        || setweight(to_tsvector('english', coalesce(
               (SELECT string_agg(c.body, ' ' ORDER BY c.id) FROM ticket_comments c
                 WHERE c.ticket_id = ticket AND (staff OR c.visibility = 'public')), '')), 'C')
$$;

-- Keeps the due time and the search documents of a ticket true: the due
-- time follows created_at and the priority, the documents the text.
CREATE FUNCTION tickets_derive() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    NEW.response_due_at = NEW.created_at
        + (SELECT response_within FROM sla_policies WHERE priority = NEW.priority);
    IF TG_OP = 'INSERT' OR NEW.subject IS DISTINCT FROM OLD.subject
       OR NEW.description IS DISTINCT FROM OLD.description THEN
        NEW.search_public = ticket_search_doc(NEW.subject, NEW.description, NEW.id, false);
        NEW.search_staff = ticket_search_doc(NEW.subject, NEW.description, NEW.id, true);
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER tickets_derive_insert BEFORE INSERT ON tickets
    FOR EACH ROW EXECUTE FUNCTION tickets_derive();
CREATE TRIGGER tickets_derive_update BEFORE UPDATE OF subject, description, priority, created_at
    ON tickets FOR EACH ROW EXECUTE FUNCTION tickets_derive();

-- A new comment joins the staff document, and the public one when public.
CREATE FUNCTION ticket_comments_index() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE tickets t SET
        search_staff = t.search_staff || setweight(to_tsvector('english', NEW.body), 'C'),
        search_public = CASE WHEN NEW.visibility = 'public'
            THEN t.search_public || setweight(to_tsvector('english', NEW.body), 'C')
            ELSE t.search_public END
    WHERE t.id = NEW.ticket_id;
    RETURN NULL;
END;
$$;
CREATE TRIGGER ticket_comments_index AFTER INSERT ON ticket_comments
    FOR EACH ROW EXECUTE FUNCTION ticket_comments_index();
