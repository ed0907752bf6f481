-- Shared helpers of this service's schema. Migrations run with search_path
-- set to the service's schema, so unqualified names land there.

-- Keeps updated_at true on every UPDATE (the seed's update_updated_at_column,
-- with timestamptz instead of timestamp: all times are stored in UTC).
CREATE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at = now();
    RETURN NEW;
END;
$$;
