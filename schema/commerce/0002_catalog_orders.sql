-- The catalog, orders and their items (the seed's products, orders and
-- order_items, made strict: see docs/schema.md).

-- Money: integer minor units with an ISO 4217 code (three upper-case letters).
CREATE DOMAIN currency_code AS text CHECK (VALUE ~ '^[A-Z]{3}$');
CREATE DOMAIN category AS text
    CHECK (VALUE IN ('sim_card', 'data_topup', 'sms_topup', 'hardware', 'service'));

CREATE TABLE products (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- keyset order
    id uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,   -- the stable external id
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description text NOT NULL DEFAULT '' CHECK (length(description) <= 4000),
    sku text NOT NULL UNIQUE CHECK (sku ~ '^[A-Za-z0-9._-]{1,64}$'),
    category category NOT NULL,
    price_minor bigint NOT NULL CHECK (price_minor >= 0),
    currency currency_code NOT NULL,
    is_active boolean NOT NULL DEFAULT true,
    stock bigint CHECK (stock >= 0), -- NULL: unlimited
    specifications jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(specifications) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- A top-up says how much it adds, as a positive integer.
    CONSTRAINT products_topup_volume CHECK (
        category NOT IN ('data_topup', 'sms_topup')
        OR (jsonb_typeof(specifications -> (CASE category WHEN 'data_topup' THEN 'volume_bytes'
                                                          ELSE 'sms_count' END)) = 'number'
            AND (specifications ->> (CASE category WHEN 'data_topup' THEN 'volume_bytes'
                                                   ELSE 'sms_count' END)) ~ '^[1-9][0-9]{0,15}$'))
);
CREATE INDEX products_active_category ON products (category, seq) WHERE is_active;
CREATE TRIGGER products_updated_at BEFORE UPDATE ON products
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE orders (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- keyset order (newest first)
    id uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    organization_id bigint NOT NULL,
    user_id bigint NOT NULL,
    order_type text NOT NULL CHECK (order_type IN ('sim_card', 'data_topup', 'sms_topup',
                                                   'hardware', 'service', 'mixed')),
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'processing', 'completed', 'cancelled', 'failed')),
    currency currency_code NOT NULL,
    total_minor bigint NOT NULL CHECK (total_minor >= 0), -- the sum of the items' totals
    notes text NOT NULL DEFAULT '' CHECK (length(notes) <= 2000),
    failure_reason text,
    ordered_at timestamptz NOT NULL DEFAULT now(),
    processing_at timestamptz,
    shipped_at timestamptz,
    completed_at timestamptz,
    cancelled_at timestamptz,
    failed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- Each final status has its timestamp and only its own.
    CONSTRAINT orders_completed_at CHECK ((status = 'completed') = (completed_at IS NOT NULL)),
    CONSTRAINT orders_cancelled_at CHECK ((status = 'cancelled') = (cancelled_at IS NOT NULL)),
    CONSTRAINT orders_failed_at CHECK ((status = 'failed') = (failed_at IS NOT NULL)
                                       AND (failed_at IS NULL OR failure_reason IS NOT NULL)),
    CONSTRAINT orders_processing_at CHECK (status <> 'processing' OR processing_at IS NOT NULL)
);
CREATE INDEX orders_org_seq ON orders (organization_id, seq DESC);
CREATE INDEX orders_status ON orders (status, seq DESC);
CREATE TRIGGER orders_updated_at BEFORE UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Forward-only transitions, whoever writes the row.
CREATE FUNCTION orders_check_transition() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status <> OLD.status AND NOT (
        (OLD.status = 'pending' AND NEW.status IN ('processing', 'completed', 'cancelled', 'failed'))
        OR (OLD.status = 'processing' AND NEW.status IN ('completed', 'cancelled', 'failed'))) THEN
        RAISE EXCEPTION 'order % cannot go from % to %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER orders_transition BEFORE UPDATE OF status ON orders
    FOR EACH ROW EXECUTE FUNCTION orders_check_transition();

CREATE TABLE order_items (
    order_seq bigint NOT NULL REFERENCES orders (seq) ON DELETE CASCADE,
    n integer NOT NULL CHECK (n BETWEEN 1 AND 100), -- position in the order
    product_id uuid NOT NULL, -- the product's id (no FK: a snapshot outlives it)
    category category NOT NULL,
    product_name text NOT NULL,
    product_sku text NOT NULL,
    quantity bigint NOT NULL CHECK (quantity BETWEEN 1 AND 10000),
    unit_price_minor bigint NOT NULL CHECK (unit_price_minor >= 0),
    total_minor bigint NOT NULL,
    iccid text CHECK (iccid ~ '^[0-9]{19,20}$'),
    topup_volume bigint CHECK (topup_volume > 0),
    fulfilment_key text UNIQUE, -- the outbox key and sims request id of a top-up
    dispatched_at timestamptz,  -- first handed to sims (no cancel after that)
    shipped_iccids text[],
    fulfilled_at timestamptz,
    PRIMARY KEY (order_seq, n),
    CONSTRAINT order_items_total CHECK (total_minor = unit_price_minor * quantity),
    CONSTRAINT order_items_topup CHECK (
        (category IN ('data_topup', 'sms_topup'))
        = (iccid IS NOT NULL AND topup_volume IS NOT NULL AND fulfilment_key IS NOT NULL)),
    CONSTRAINT order_items_shipped CHECK (
        shipped_iccids IS NULL
        OR (category = 'sim_card' AND cardinality(shipped_iccids) = quantity))
);
