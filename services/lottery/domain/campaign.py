"""Campaigns, their prizes and the per-member counters that enforce draw limits."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime

from services.lottery.domain.errors import (
    CampaignClosed,
    InvalidRequest,
    LimitReached,
    WrongCampaignKind,
)
from services.lottery.domain.fairness import ROLL_RANGE

INSTANT, BALLOT = "instant", "ballot"
SCHEDULED, OPEN, ENDED, CLOSED = "scheduled", "open", "ended", "closed"


@dataclass(frozen=True, slots=True)
class Prize:
    prize_id: str
    name: str
    stock: int
    weight_ppm: int
    points: int | None = None  # a prize of points is credited to the winner's ledger


@dataclass(frozen=True, slots=True)
class Campaign:
    campaign_id: str
    name: str
    kind: str
    cost_points: int
    seed_commitment: str
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    per_member_limit: int | None = None
    per_member_daily_limit: int | None = None
    prizes: tuple[Prize, ...] = ()  # instant campaigns, in creation order
    seats: int | None = None  # ballots
    closed_at: datetime | None = None
    public_entropy: str | None = None  # ballots, given when they are closed

    def validate(self) -> None:
        """Refuse a definition that could not be drawn fairly or at all."""
        if self.kind == INSTANT:
            if not self.prizes:
                raise InvalidRequest("prizes: an instant campaign needs at least one prize")
            if self.seats is not None:
                raise InvalidRequest("seats: only a ballot has seats")
            ids = [p.prize_id for p in self.prizes]
            if len(set(ids)) != len(ids):
                raise InvalidRequest("prizes: prize_id must be unique within the campaign")
            total = sum(p.weight_ppm for p in self.prizes)
            if total > ROLL_RANGE:
                raise InvalidRequest(f"prizes: weights sum to {total:,} ppm, more than {ROLL_RANGE:,}")
        elif self.kind == BALLOT:
            if self.prizes:
                raise InvalidRequest("prizes: a ballot has seats, not prizes")
            if self.seats is None:
                raise InvalidRequest("seats: a ballot needs seats")
        else:
            raise InvalidRequest(f"kind: must be {INSTANT!r} or {BALLOT!r}")
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise InvalidRequest("ends_at: must be after starts_at")

    def state(self, now: datetime) -> str:
        if self.closed_at is not None:
            return CLOSED
        if self.starts_at is not None and now < self.starts_at:
            return SCHEDULED
        if self.ends_at is not None and now >= self.ends_at:
            return ENDED
        return OPEN

    def ensure_kind(self, kind: str) -> None:
        if self.kind != kind:
            raise WrongCampaignKind(f"campaign {self.campaign_id!r} is a{'n' * (self.kind == INSTANT)} "
                                    f"{self.kind} campaign")  # fmt: skip

    def ensure_open(self, now: datetime) -> None:
        state = self.state(now)
        if state == SCHEDULED:
            assert self.starts_at is not None
            raise CampaignClosed(f"campaign {self.campaign_id!r} opens at {self.starts_at.isoformat()}")
        if state == ENDED:
            assert self.ends_at is not None
            raise CampaignClosed(f"campaign {self.campaign_id!r} ended at {self.ends_at.isoformat()}")
        if state == CLOSED:
            raise CampaignClosed(f"campaign {self.campaign_id!r} is closed")

    def revealable(self, now: datetime) -> bool:
        """An instant campaign once it ended or was closed; a ballot only once closed.

        A ballot's seed stays secret until close, because close is when the public
        entropy is fixed: revealing the seed before would let whoever picks the
        entropy pick the winners.
        """
        state = self.state(now)
        return state == CLOSED or (self.kind == INSTANT and state == ENDED)

    def prize(self, prize_id: str) -> Prize:
        return next(p for p in self.prizes if p.prize_id == prize_id)

    def closed(self, at: datetime, public_entropy: str | None) -> Campaign:
        return replace(self, closed_at=at, public_entropy=public_entropy)


@dataclass(slots=True)
class Participant:
    """One member in one campaign: how many draws so far (= the last nonce) and today."""

    campaign_id: str
    member_id: str
    draws: int = 0
    day: date | None = None  # business day of the latest draw
    day_draws: int = 0

    def ensure_may_draw(self, campaign: Campaign, today: date) -> None:
        """Refuse one more draw past the campaign's total or daily limit."""
        drawn_today = self.day_draws if self.day == today else 0
        if campaign.per_member_limit is not None and self.draws >= campaign.per_member_limit:
            raise LimitReached(
                f"{self.member_id} has made all {campaign.per_member_limit} draws allowed in this campaign",
                "total",
            )
        if campaign.per_member_daily_limit is not None and drawn_today >= campaign.per_member_daily_limit:
            raise LimitReached(
                f"{self.member_id} has made all {campaign.per_member_daily_limit} draws allowed today",
                "daily",
            )

    def next_nonce(self, campaign: Campaign, today: date) -> int:
        """Count one more draw, refusing it past a limit; return its nonce (1-based)."""
        self.ensure_may_draw(campaign, today)
        drawn_today = self.day_draws if self.day == today else 0
        self.draws += 1
        self.day = today
        self.day_draws = drawn_today + 1
        return self.draws
