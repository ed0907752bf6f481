-- The test service's one table: a unique name (ALREADY_EXISTS on repeat) and
-- a CHECK constraint (INVALID_ARGUMENT) to exercise the SQLSTATE mapping.
CREATE TABLE items (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL CONSTRAINT items_name_key UNIQUE,
    amount bigint NOT NULL CONSTRAINT items_amount_nonnegative CHECK (amount >= 0)
);
