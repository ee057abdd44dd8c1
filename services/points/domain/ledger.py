"""A member's points account: lots by expiry, held points, debt, and the entries that explain them.

Every change returns the entries that record it; `balance_after` is the available
balance (unexpired lots, holds already taken out) after the entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from services.points.domain.errors import HoldNotPending, InsufficientPoints, InvalidRequest
from services.points.domain.events import BillingEvent
from services.points.domain.policy import EarningPolicy

PENDING, CAPTURED, VOIDED = "pending", "captured", "voided"


@dataclass(slots=True)
class Hold:
    """Points reserved for a redemption or draw, and the lots they were taken from."""

    hold_id: str
    member_id: str
    points: int
    reason: str
    expires_at: datetime
    status: str = PENDING
    captured: int = 0
    lots: dict[datetime, int] = field(default_factory=dict)

    def is_pending_at(self, now: datetime) -> bool:
        return self.status == PENDING and now < self.expires_at


@dataclass(frozen=True, slots=True)
class Entry:
    member_id: str
    kind: str  # accrual, clawback, debt_repaid, hold, capture, void, credit, expiry, adjustment
    delta: int
    balance_after: int
    debt_after: int
    held_after: int
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
        return Entry(self.member_id, kind, delta, self.available, self.debt, self.held, ref, occurred_at)

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
        taken = _earliest(self.lots, points)
        for expires_at, part in taken.items():
            self.lots[expires_at] -= part
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

    def place_hold(
        self, hold_id: str, points: int, reason: str, now: datetime, expires_at: datetime
    ) -> tuple[Hold, list[Entry]]:
        """Move points from available to held, earliest-expiring lots first."""
        if points <= 0:
            raise InvalidRequest("points: must be > 0")
        if points > self.available:
            raise InsufficientPoints(f"{self.member_id} has {self.available} points available, not {points}")
        hold = Hold(hold_id, self.member_id, points, reason, expires_at, lots=self.take_earliest(points))
        self.held += points
        return hold, [self._entry("hold", -points, hold_id, now)]

    def capture(self, hold: Hold, points: int | None, now: datetime) -> list[Entry]:
        """Spend `points` of a pending hold (all by default); the rest goes back to its lots."""
        if not hold.is_pending_at(now):
            raise HoldNotPending(f"hold {hold.hold_id} is {self._hold_state(hold, now)}, not pending")
        points = hold.points if points is None else points
        if not 0 < points <= hold.points:
            raise InvalidRequest(f"points: must be between 1 and the {hold.points} held")
        spent = _earliest(hold.lots, points)
        remainder = {e: p - spent.get(e, 0) for e, p in hold.lots.items() if p - spent.get(e, 0)}
        self.held -= hold.points
        hold.status, hold.captured = CAPTURED, points
        entries = [self._entry("capture", 0, hold.hold_id, now)]
        if remainder:
            entries += self._give_back(remainder, hold.hold_id, now)
        return entries

    def void(self, hold: Hold, now: datetime) -> list[Entry]:
        """Give a pending hold's points back to the lots they came from."""
        if hold.status != PENDING:
            raise HoldNotPending(f"hold {hold.hold_id} is {hold.status}, not pending")
        self.held -= hold.points
        hold.status = VOIDED
        return self._give_back(hold.lots, hold.hold_id, now)

    def _give_back(self, lots: dict[datetime, int], ref: str, now: datetime) -> list[Entry]:
        for expires_at, points in lots.items():
            self.lots[expires_at] = self.lots.get(expires_at, 0) + points
        entries = [self._entry("void", sum(lots.values()), ref, now)]
        # A lot that reached its year end while held expires now, as it would have unheld.
        return entries + self.expire(now)

    @staticmethod
    def _hold_state(hold: Hold, now: datetime) -> str:
        return "expired" if hold.status == PENDING and now >= hold.expires_at else hold.status

    def credit(
        self, points: int, expires_at: datetime, ref: str, now: datetime, kind: str = "credit"
    ) -> list[Entry]:
        """Refunds and prizes: earned now, so they pay debt first like any accrual."""
        if points <= 0:
            raise InvalidRequest("points: must be > 0")
        return self.accrue(points, expires_at, ref, now, kind=kind)

    def adjust(self, delta: int, expires_at: datetime, ref: str, now: datetime) -> list[Entry]:
        """An admin's correction: positive like a credit, negative only out of available points."""
        if delta == 0:
            raise InvalidRequest("delta: must not be 0")
        if delta > 0:
            return self.credit(delta, expires_at, ref, now, kind="adjustment")
        if -delta > self.available:
            raise InsufficientPoints(f"{self.member_id} has {self.available} points available, not {-delta}")
        self.take_earliest(-delta)
        return [self._entry("adjustment", delta, ref, now)]

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


def _earliest(lots: dict[datetime, int], points: int) -> dict[datetime, int]:
    """Which of `lots` `points` come from, earliest expiry first."""
    taken: dict[datetime, int] = {}
    for expires_at in sorted(lots):
        if points <= 0:
            break
        taken[expires_at] = min(points, lots[expires_at])
        points -= taken[expires_at]
    return taken
