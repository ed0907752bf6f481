-- After compaction has moved a day's raw rows out, TRUNCATE gives the day's
-- partition its heap and index pages back: DELETE leaves the index pages
-- allocated until retention drops the partition (about 52 B a record,
-- docs/capacity.md). Nothing happens when the day has raw rows again (late
-- data, compacted at the next run), when the day has no partition of its
-- own (the default partition is never truncated), or when the partition is
-- busy for 100 ms (tried at the next run). Returns whether it truncated.
CREATE FUNCTION usage_reclaim_day(parent text, day date) RETURNS boolean
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    p record;
    has_rows boolean;
BEGIN
    SELECT * INTO p FROM partman.show_partition_name(current_schema() || '.' || parent,
                                                     day::text);
    IF NOT p.table_exists THEN
        RETURN false;
    END IF;
    PERFORM set_config('lock_timeout', '100ms', true);
    EXECUTE format('LOCK TABLE %I.%I IN ACCESS EXCLUSIVE MODE', p.partition_schema,
                   p.partition_table);
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.%I)', p.partition_schema, p.partition_table)
        INTO has_rows;
    IF has_rows THEN
        RETURN false;
    END IF;
    EXECUTE format('TRUNCATE %I.%I', p.partition_schema, p.partition_table);
    RETURN true;
EXCEPTION WHEN lock_not_available THEN
    RETURN false;
END
$$;
