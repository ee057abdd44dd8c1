"""Rewards and orders: what may be redeemed, by whom, and what a confirmed order delivers."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

TIERS = ("standard", "silver", "gold", "diamond")
KINDS = ("voucher", "bill_credit", "event_ticket", "physical")
CODED_KINDS = {"voucher": "VCH", "event_ticket": "TKT"}
# Unambiguous characters for codes read aloud at a cinema door or typed into a form.
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
assert len(CODE_ALPHABET) == 32


class RedemptionError(Exception):
    code = "redemption_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)


class UnknownSku(RedemptionError):
    code = "unknown_sku"


class OutOfStock(RedemptionError):
    code = "out_of_stock"


class NotAvailable(RedemptionError):
    code = "not_available"


class TierNotEligible(RedemptionError):
    code = "tier_not_eligible"


class LimitReached(RedemptionError):
    code = "limit_reached"


class InsufficientPoints(RedemptionError):
    code = "insufficient_points"


class IdempotencyConflict(RedemptionError):
    code = "idempotency_conflict"


class UnknownOrder(RedemptionError):
    code = "unknown_order"


class NotCancellable(RedemptionError):
    code = "not_cancellable"


class SkuExists(RedemptionError):
    code = "sku_exists"


class InvalidReward(RedemptionError):
    code = "invalid_request"


class PointsServiceUnavailable(RedemptionError):
    code = "points_unavailable"


FAILURES: dict[str, type[RedemptionError]] = {
    cls.code: cls for cls in (OutOfStock, NotAvailable, TierNotEligible, LimitReached, InsufficientPoints)
}


@dataclass(frozen=True)
class Reward:
    sku: str
    name: str
    kind: str
    points_price: int
    stock: int
    taken: int
    per_member_limit: int | None
    starts_at: datetime | None
    ends_at: datetime | None
    min_tier: str | None

    @property
    def remaining(self) -> int:
        return self.stock - self.taken

    def is_on_sale(self, now: datetime) -> bool:
        return (self.starts_at is None or self.starts_at <= now) and (
            self.ends_at is None or now < self.ends_at
        )

    def check_window(self, now: datetime) -> None:
        if not self.is_on_sale(now):
            raise NotAvailable(f"{self.sku} is on sale {self._window()}, not now")

    def check_tier(self, tier: str) -> None:
        if self.min_tier and TIERS.index(tier) < TIERS.index(self.min_tier):
            raise TierNotEligible(
                f"{self.sku} needs star level {self.min_tier} or above; the member is {tier}"
            )

    def _window(self) -> str:
        start = self.starts_at.isoformat() if self.starts_at else "from any time"
        end = self.ends_at.isoformat() if self.ends_at else "with no end"
        return f"{start} to {end}"


@dataclass(frozen=True)
class Order:
    order_id: str
    member_id: str
    sku: str
    quantity: int
    points_spent: int
    status: str  # pending, confirmed, failed, cancelled
    stage: str  # new, stock_taken, done
    failure: str | None
    hold_id: str
    fulfilment: dict[str, object] | None
    created_at: datetime


def fulfilment_for(
    kind: str, order_id: str, quantity: int, points_spent: int
) -> tuple[str | None, dict[str, object]]:
    """What a confirmed order delivers; vouchers and tickets carry a unique code."""
    if kind in CODED_KINDS:
        # 32 letters: the low 5 bits of a random byte pick one without bias (60 random bits in all).
        letters = "".join(CODE_ALPHABET[b & 31] for b in secrets.token_bytes(12))
        code = f"{CODED_KINDS[kind]}-{letters[:4]}-{letters[4:8]}-{letters[8:]}"
        return code, {"type": kind, "code": code, "quantity": quantity}
    if kind == "bill_credit":
        return None, {"type": kind, "status": "applied to the next bill", "quantity": quantity}
    return None, {"type": kind, "status": "to be shipped", "quantity": quantity}
