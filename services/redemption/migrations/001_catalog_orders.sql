-- Reward catalog, stock and orders. `taken` counts units of pending and
-- confirmed orders; a conditional UPDATE keeps taken <= stock under any concurrency.
CREATE SCHEMA IF NOT EXISTS redemption;

CREATE TABLE redemption.rewards (
    sku               text PRIMARY KEY,
    name              text NOT NULL,
    kind              text NOT NULL CHECK (kind IN ('voucher', 'bill_credit', 'event_ticket', 'physical')),
    points_price      bigint NOT NULL CHECK (points_price > 0),
    stock             bigint NOT NULL CHECK (stock >= 0),
    taken             bigint NOT NULL DEFAULT 0 CHECK (taken >= 0 AND taken <= stock),
    per_member_limit  int CHECK (per_member_limit > 0),
    starts_at         timestamptz,
    ends_at           timestamptz,
    min_tier          text CHECK (min_tier IN ('standard', 'silver', 'gold', 'diamond')),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Units of a sku a member holds in pending or confirmed orders, for per-member limits.
CREATE TABLE redemption.member_quantities (
    member_id  text NOT NULL,
    sku        text NOT NULL REFERENCES redemption.rewards (sku),
    quantity   int NOT NULL CHECK (quantity >= 0),
    PRIMARY KEY (member_id, sku)
);

-- stage: new (order recorded) -> held (points held) -> stock_taken -> done.
CREATE TABLE redemption.orders (
    order_id         text PRIMARY KEY,
    member_id        text NOT NULL,
    idempotency_key  text NOT NULL,
    request_sha256   bytea NOT NULL,
    sku              text NOT NULL REFERENCES redemption.rewards (sku),
    quantity         int NOT NULL CHECK (quantity > 0),
    points_spent     bigint NOT NULL CHECK (points_spent > 0),
    status           text NOT NULL CHECK (status IN ('pending', 'confirmed', 'failed', 'cancelled')),
    stage            text NOT NULL CHECK (stage IN ('new', 'stock_taken', 'done')),
    failure          text,
    hold_id          text NOT NULL,
    owner            text NOT NULL,  -- the API process running its saga (redemption.instances)
    fulfilment_code  text UNIQUE,
    fulfilment       jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (member_id, idempotency_key)
);
CREATE INDEX orders_by_member ON redemption.orders (member_id, created_at DESC);
CREATE INDEX orders_pending ON redemption.orders (updated_at) WHERE status = 'pending';

-- Live API processes. The reconciler takes over a pending order only when its owner
-- stopped beating (it crashed), never while the owner may still be working on it.
CREATE TABLE redemption.instances (
    instance_id  text PRIMARY KEY,
    seen_at      timestamptz NOT NULL
);

CREATE TABLE redemption.outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic       text NOT NULL,
    key         text,
    payload     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
