"""Draw requests and ballot entries, and the state of the points paid for them.

A draw goes `pending` → `drawn` or `refused`; its payment goes `held` (a hold may
exist) → `captured` (drawn) or `voided` (refused), or stays `none` when the campaign
is free. Ids are derived from what the client sent, so that every retry, and the
reconciler after a crash, talks to the points service about the same hold.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from datetime import datetime

PENDING, DRAWN, REFUSED = "pending", "drawn", "refused"
ENTERED, WON, LOST = "entered", "won", "lost"
NO_PAYMENT, HELD, CAPTURED, VOIDED, UNPAID = "none", "held", "captured", "voided", "unpaid"
CREDIT_DUE, CREDITED = "due", "credited"


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Draw:
    campaign_id: str
    idempotency_key: str
    draw_id: str
    member_id: str
    client_seed: str
    request_sha256: bytes
    hold_id: str | None
    cost_points: int
    status: str = PENDING
    payment: str = NO_PAYMENT
    error: str | None = None
    detail: str | None = None
    nonce: int | None = None
    prize_id: str | None = None
    prize_seq: int | None = None
    prize_points: int | None = None
    prize_credit: str | None = None
    drawn_at: datetime | None = None

    @classmethod
    def requested(
        cls, campaign_id: str, idempotency_key: str, member_id: str, client_seed: str, cost_points: int
    ) -> Draw:
        digest = _digest(campaign_id, idempotency_key)[:32]
        body = json.dumps({"member_id": member_id, "client_seed": client_seed}, sort_keys=True)
        return cls(
            campaign_id=campaign_id,
            idempotency_key=idempotency_key,
            draw_id=f"d{digest}",
            member_id=member_id,
            client_seed=client_seed,
            request_sha256=hashlib.sha256(body.encode()).digest(),
            hold_id=f"lottery-draw-{digest}" if cost_points > 0 else None,
            cost_points=cost_points,
            payment=HELD if cost_points > 0 else NO_PAYMENT,
        )

    @property
    def credit_id(self) -> str:
        """The points credit of a prize of points: one per draw, whoever sends it and how often."""
        return f"lottery-prize-{self.draw_id}"

    def drawn(
        self, nonce: int, prize_id: str | None, prize_seq: int | None, prize_points: int | None, at: datetime
    ) -> Draw:
        return replace(
            self,
            status=DRAWN,
            nonce=nonce,
            prize_id=prize_id,
            prize_seq=prize_seq,
            prize_points=prize_points,
            prize_credit=CREDIT_DUE if prize_points else None,
            drawn_at=at,
        )

    def refused(self, code: str, detail: str) -> Draw:
        return replace(self, status=REFUSED, error=code, detail=detail)

    @property
    def capture_due(self) -> bool:
        return self.status == DRAWN and self.payment == HELD

    @property
    def void_due(self) -> bool:
        return self.status == REFUSED and self.payment == HELD


@dataclass(frozen=True, slots=True)
class Entry:
    campaign_id: str
    member_id: str
    hold_id: str | None
    cost_points: int
    status: str = PENDING
    payment: str = NO_PAYMENT
    error: str | None = None
    detail: str | None = None
    rank: int | None = None
    entered_at: datetime | None = None

    @classmethod
    def requested(cls, campaign_id: str, member_id: str, cost_points: int, attempt: str) -> Entry:
        """`attempt` makes a new hold id when a member enters again after a refused attempt."""
        digest = _digest(campaign_id, member_id)[:24]
        return cls(
            campaign_id=campaign_id,
            member_id=member_id,
            hold_id=f"lottery-entry-{digest}-{attempt}" if cost_points > 0 else None,
            cost_points=cost_points,
            payment=HELD if cost_points > 0 else NO_PAYMENT,
        )

    @property
    def settle_due(self) -> bool:
        return self.status in (WON, LOST) and self.payment == HELD
