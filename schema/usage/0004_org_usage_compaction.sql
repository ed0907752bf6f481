-- org_usage_daily takes one row of deltas per batch, organization and day
-- (append-only, so concurrent batches never wait for each other); the
-- service folds them every ONCEIOT_USAGE_COMPACT_S into one row per
-- organization and day with batch_id '' (see docs/schema.md). This index
-- finds the rows still to fold without reading the folded ones.
CREATE INDEX org_usage_daily_unfolded ON org_usage_daily (organization_id, day)
    WHERE batch_id <> '';
