"""A member's points account: lots by expiry, held points, debt, and the entries that explain them.

Every change returns the entries that record it; `balance_after` is the available
balance (unexpired lots, holds already taken out) after the entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from services.points.domain.events import BillingEvent
from services.points.domain.policy import EarningPolicy


@dataclass(frozen=True, slots=True)
class Entry:
    member_id: str
    kind: str  # accrual, clawback, debt_repaid, hold, capture, void, credit, expiry, adjustment
    delta: int
    balance_after: int
    debt_after: int
    ref: str
    occurred_at: datetime


@dataclass(slots=True)
class Account:
    member_id: str
    tier: str = "standard"
    lots: dict[datetime, int] = field(default_factory=dict)  # expires_at -> remaining points
    held: int = 0
    debt: int = 0

    @property
    def available(self) -> int:
        return sum(self.lots.values())

    def _entry(self, kind: str, delta: int, ref: str, occurred_at: datetime) -> Entry:
        return Entry(self.member_id, kind, delta, self.available, self.debt, ref, occurred_at)

    def accrue(
        self, points: int, expires_at: datetime, ref: str, occurred_at: datetime, kind: str = "accrual"
    ) -> list[Entry]:
        """Add points; outstanding debt is paid off first, the rest becomes a lot."""
        if points <= 0:
            return []
        repaid = min(self.debt, points)
        self.lots[expires_at] = self.lots.get(expires_at, 0) + points
        entries = [self._entry(kind, points, ref, occurred_at)]
        if repaid:
            self.lots[expires_at] -= repaid
            self._drop_empty_lots()
            self.debt -= repaid
            entries.append(self._entry("debt_repaid", -repaid, ref, occurred_at))
        return entries

    def claw_back(self, points: int, ref: str, occurred_at: datetime) -> list[Entry]:
        """Take points back, earliest-expiring lots first; what is not there becomes debt."""
        if points <= 0:
            return []
        taken = self.take_earliest(points)
        self.debt += points - sum(taken.values())
        return [self._entry("clawback", -sum(taken.values()), ref, occurred_at)]

    def take_earliest(self, points: int) -> dict[datetime, int]:
        """Remove up to `points` from the lots, earliest expiry first; return what came from each."""
        taken: dict[datetime, int] = {}
        for expires_at in sorted(self.lots):
            if points <= 0:
                break
            part = min(points, self.lots[expires_at])
            if part:
                taken[expires_at] = part
                self.lots[expires_at] -= part
                points -= part
        self._drop_empty_lots()
        return taken

    def expire(self, as_of: datetime) -> list[Entry]:
        """Expire every lot whose expiry is at or before `as_of`, one entry per lot."""
        entries = []
        for expires_at in sorted(self.lots):
            if expires_at > as_of:
                break
            remaining = self.lots.pop(expires_at)
            if remaining:
                entries.append(self._entry("expiry", -remaining, f"lot:{expires_at.isoformat()}", expires_at))
        return entries

    def apply_billing_event(self, event: BillingEvent, policy: EarningPolicy) -> list[Entry]:
        """The earning policy for one event; the event's tier becomes the member's tier."""
        self.tier = event.tier
        points = policy.points_for(event)
        if points < 0:
            return self.claw_back(-points, event.event_id, event.occurred_at)
        return self.accrue(points, policy.expiry_for(event.occurred_at), event.event_id, event.occurred_at)

    def _drop_empty_lots(self) -> None:
        for expires_at in [e for e, remaining in self.lots.items() if remaining == 0]:
            del self.lots[expires_at]
