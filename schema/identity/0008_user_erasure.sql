-- EraseUser (the right to erasure): when a user's personal data was replaced
-- by a tombstone. NULL for every user that was not erased.
ALTER TABLE users ADD COLUMN erased_at timestamptz;
