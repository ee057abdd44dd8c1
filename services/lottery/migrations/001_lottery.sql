-- The lottery: campaigns, their prizes, draws and ballot entries. member_id is in
-- every per-member key so that the tables can be sharded like the ledger.
CREATE SCHEMA IF NOT EXISTS lottery;

CREATE TABLE lottery.campaigns (
    campaign_id             text PRIMARY KEY,
    name                    text NOT NULL,
    kind                    text NOT NULL CHECK (kind IN ('instant', 'ballot')),
    cost_points             bigint NOT NULL CHECK (cost_points >= 0),
    starts_at               timestamptz,
    ends_at                 timestamptz,
    per_member_limit        int CHECK (per_member_limit > 0),
    per_member_daily_limit  int CHECK (per_member_daily_limit > 0),
    seats                   int CHECK (seats > 0),
    -- Secret until the campaign is over; only GET /reveal ever returns it.
    server_seed             bytea NOT NULL CHECK (length(server_seed) = 32),
    seed_commitment         text NOT NULL,
    definition_sha256       bytea NOT NULL,  -- makes creating the same campaign again idempotent
    public_entropy          text,
    closed_at               timestamptz,
    created_at              timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE lottery.prizes (
    campaign_id  text NOT NULL REFERENCES lottery.campaigns,
    position     int NOT NULL,  -- creation order: the order the weights are summed in
    prize_id     text NOT NULL,
    name         text NOT NULL,
    stock        bigint NOT NULL CHECK (stock >= 0),
    weight_ppm   int NOT NULL CHECK (weight_ppm BETWEEN 0 AND 1000000),
    points       bigint CHECK (points > 0),
    -- Draws whose roll landed on this prize so far; the first `stock` of them won it.
    rolled       bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign_id, prize_id),
    UNIQUE (campaign_id, position)
);

-- One row per member and campaign, locked by each of the member's draws: the
-- nonce and the limits are decided under this lock.
CREATE TABLE lottery.participants (
    campaign_id  text NOT NULL,
    member_id    text NOT NULL,
    draws        int NOT NULL DEFAULT 0,  -- = the nonce of the member's latest draw
    day          date,                    -- business day (Asia/Shanghai) of the latest draw
    day_draws    int NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign_id, member_id)
);

-- Every draw request, from before its hold is placed until its payment is settled.
--   status:  pending (not decided yet) -> drawn | refused
--   payment: none (free, or no hold) | held (a hold may exist) -> captured | voided | unpaid
-- A drawn draw's hold is captured, a refused one's voided; the reconciler finishes
-- whatever a crash left half done.
CREATE TABLE lottery.draws (
    campaign_id      text NOT NULL,
    idempotency_key  text NOT NULL,
    draw_id          text NOT NULL UNIQUE,
    member_id        text NOT NULL,
    client_seed      text NOT NULL,
    request_sha256   bytea NOT NULL,
    hold_id          text,
    cost_points      bigint NOT NULL,
    status           text NOT NULL CHECK (status IN ('pending', 'drawn', 'refused')),
    payment          text NOT NULL CHECK (payment IN ('none', 'held', 'captured', 'voided', 'unpaid')),
    error            text,  -- why a refused draw was refused: the answer to a retry
    detail           text,
    nonce            int,
    prize_id         text,
    prize_seq        bigint,  -- this draw was the n-th to roll its prize
    prize_points     bigint,
    prize_credit     text CHECK (prize_credit IN ('due', 'credited')),
    drawn_at         timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, idempotency_key),
    UNIQUE (campaign_id, member_id, nonce)
);
CREATE INDEX draws_unsettled ON lottery.draws (updated_at)
    WHERE status = 'pending' OR payment = 'held' OR prize_credit = 'due';

-- Ballot entries, one per member.
--   status:  pending -> entered -> won | lost;  pending -> refused (deleted once its hold is voided)
CREATE TABLE lottery.entries (
    campaign_id  text NOT NULL,
    member_id    text NOT NULL,
    hold_id      text,
    cost_points  bigint NOT NULL,
    status       text NOT NULL CHECK (status IN ('pending', 'entered', 'refused', 'won', 'lost')),
    payment      text NOT NULL CHECK (payment IN ('none', 'held', 'captured', 'voided', 'unpaid')),
    error        text,
    detail       text,
    rank         int,
    entered_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, member_id)
);
CREATE INDEX entries_unsettled ON lottery.entries (campaign_id, updated_at)
    WHERE status IN ('pending', 'refused') OR (status IN ('won', 'lost') AND payment = 'held');

-- Transactional outbox (services/common/outbox.py relays it to Kafka).
CREATE TABLE lottery.outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic       text NOT NULL,
    key         text,
    payload     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
