-- API keys: only a keyed BLAKE2b-256 hash of the secret is stored, so a
-- lookup is one probe of the unique index on key_hash.
CREATE TABLE api_keys (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key_hash     bytea NOT NULL,
    key_prefix   text NOT NULL,             -- "sk_live_" + 8 characters, for display
    name         text NOT NULL,
    description  text NOT NULL DEFAULT '',
    scopes       text[] NOT NULL DEFAULT '{}',
    revoked_at   timestamptz,
    expires_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    usage_count  bigint NOT NULL DEFAULT 0,

    CONSTRAINT api_keys_key_hash_key UNIQUE (key_hash),
    CONSTRAINT api_keys_key_hash_length CHECK (octet_length(key_hash) = 32),
    CONSTRAINT api_keys_name_length CHECK (length(name) BETWEEN 1 AND 100),
    CONSTRAINT api_keys_valid_expiry CHECK (expires_at IS NULL OR expires_at > created_at)
);

-- ListApiKeys: WHERE user_id = $1 AND id > $2 ORDER BY id.
CREATE INDEX api_keys_user_id_idx ON api_keys (user_id, id);
