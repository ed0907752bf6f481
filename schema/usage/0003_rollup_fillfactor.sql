-- The per-SIM rollups are updated in place by every batch that adds to an
-- existing bucket (a day's row by each hour of that day). The updates change
-- no indexed column, so with room on the page they are HOT: no new index
-- entries, and no bottom-up index deletion to clean up after them. Applies to
-- pages written from now on.
ALTER TABLE sim_usage_hourly SET (fillfactor = 70);
ALTER TABLE sim_usage_daily SET (fillfactor = 50);
ALTER TABLE sim_usage_daily_network SET (fillfactor = 50);
