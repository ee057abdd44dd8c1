-- Two-phase spending: a hold reserves points (taken from lots, remembered in
-- `lots`), a capture spends them, a void or expiry gives them back to those lots.
CREATE TABLE points.holds (
    hold_id         text PRIMARY KEY,
    member_id       text NOT NULL,
    points          bigint NOT NULL CHECK (points > 0),
    reason          text NOT NULL,
    status          text NOT NULL CHECK (status IN ('pending', 'captured', 'voided')),
    captured        bigint NOT NULL DEFAULT 0 CHECK (captured >= 0 AND captured <= points),
    lots            jsonb NOT NULL,  -- {"<lot expires_at>": points taken from it}
    request_sha256  bytea NOT NULL,
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz
);
CREATE INDEX holds_pending_by_expiry ON points.holds (expires_at) WHERE status = 'pending';
CREATE INDEX holds_by_member ON points.holds (member_id);

-- Idempotency keys of credits and adjustments, with the first answer given.
CREATE TABLE points.requests (
    kind            text NOT NULL,
    request_id      text NOT NULL,
    member_id       text NOT NULL,
    request_sha256  bytea NOT NULL,
    response        jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, request_id)
);
