-- GetVerificationKeys lists recently revoked keys (the gateway ends their
-- streams); revoked keys are few, so the index is partial.
CREATE INDEX api_keys_revoked_at_idx ON api_keys (revoked_at) WHERE revoked_at IS NOT NULL;
