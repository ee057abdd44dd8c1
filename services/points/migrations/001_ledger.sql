-- The points ledger. member_id leads every primary key and hot index so the
-- tables can be sharded by member_id (see deploy/CAPACITY.md).
CREATE SCHEMA IF NOT EXISTS points;

CREATE TABLE points.members (
    member_id   text PRIMARY KEY,
    tier        text NOT NULL DEFAULT 'standard',
    available   bigint NOT NULL DEFAULT 0 CHECK (available >= 0),
    held        bigint NOT NULL DEFAULT 0 CHECK (held >= 0),
    debt        bigint NOT NULL DEFAULT 0 CHECK (debt >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Points by expiry: one lot per member and expiry instant.
CREATE TABLE points.lots (
    member_id   text NOT NULL,
    expires_at  timestamptz NOT NULL,
    remaining   bigint NOT NULL CHECK (remaining > 0),
    PRIMARY KEY (member_id, expires_at)
);
CREATE INDEX lots_by_expiry ON points.lots (expires_at);

-- The idempotency boundary: one row per applied billing event, written in the
-- same transaction as its entries. event_id is unique across members, so a
-- conflicting duplicate is caught even when it names another member.
CREATE TABLE points.billing_events (
    event_id          text PRIMARY KEY,
    member_id         text NOT NULL,
    type              text NOT NULL,
    points            bigint NOT NULL,
    payload_sha256    bytea NOT NULL,
    occurred_at       timestamptz NOT NULL,
    source_partition  int NOT NULL,
    source_offset     bigint NOT NULL,
    applied_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE points.entries (
    member_id      text NOT NULL,
    entry_id       bigint GENERATED ALWAYS AS IDENTITY,
    kind           text NOT NULL CHECK (kind IN ('accrual', 'clawback', 'debt_repaid', 'hold',
                       'capture', 'void', 'credit', 'expiry', 'adjustment')),
    delta          bigint NOT NULL,
    balance_after  bigint NOT NULL CHECK (balance_after >= 0),
    debt_after     bigint NOT NULL,
    held_after     bigint NOT NULL,
    ref            text NOT NULL,
    occurred_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (member_id, entry_id)
);

-- Every rejected billing record, once per source position.
CREATE TABLE points.dead_letters (
    topic        text NOT NULL,
    partition    int NOT NULL,
    "offset"     bigint NOT NULL,
    reason       text NOT NULL,
    detail       text NOT NULL,
    raw          text NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset")
);
CREATE INDEX dead_letters_by_reason ON points.dead_letters (reason);

-- Transactional outbox (services/common/outbox.py relays it to Kafka).
CREATE TABLE points.outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic       text NOT NULL,
    key         text,
    payload     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
