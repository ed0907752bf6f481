-- Users (the seed's users table, improved; see docs/schema.md, "identity").
CREATE TABLE users (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username         text NOT NULL,
    email            text NOT NULL,
    password_hash    text NOT NULL,        -- $argon2id$... (or a legacy $2b$ bcrypt hash)
    full_name        text NOT NULL DEFAULT '',
    role             text NOT NULL DEFAULT 'user',
    is_active        boolean NOT NULL DEFAULT true,
    is_superuser     boolean NOT NULL DEFAULT false,
    organization_id  bigint NOT NULL,
    token_not_before timestamptz,          -- login tokens issued before this are refused
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    last_login_at    timestamptz,

    CONSTRAINT users_username_key UNIQUE (username),
    CONSTRAINT users_username_length CHECK (length(username) BETWEEN 3 AND 50),
    CONSTRAINT users_username_chars CHECK (username ~ '^[A-Za-z0-9._-]+$'),
    CONSTRAINT users_email_format
        CHECK (email ~* '^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Z|a-z]{2,}$'),
    CONSTRAINT users_email_length CHECK (length(email) <= 254),
    CONSTRAINT users_full_name_length CHECK (length(full_name) <= 255),
    CONSTRAINT users_role_valid CHECK (role IN ('admin', 'user', 'readonly')),
    CONSTRAINT users_organization_positive CHECK (organization_id > 0)
);

-- Emails are unique whatever their case (citext is an extension; lower() is not).
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));
-- Tenant listings: WHERE organization_id = $1 AND id > $2 ORDER BY id.
CREATE INDEX users_organization_id_idx ON users (organization_id, id);
-- GetVerificationKeys lists recent revocations only.
CREATE INDEX users_token_not_before_idx ON users (token_not_before)
    WHERE token_not_before IS NOT NULL;

CREATE TRIGGER users_set_updated_at BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
