-- Per-username login backoff, in the database so every replica sees it.
-- After 3 consecutive failures a username waits 1 s, doubling per failure,
-- at most 15 minutes; a successful login deletes the row.
CREATE TABLE login_failures (
    username     text PRIMARY KEY,
    failures     integer NOT NULL DEFAULT 0,
    locked_until timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
