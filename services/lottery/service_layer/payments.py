"""Settling the holds of draws and entries with the points service.

Every call here is idempotent on the points side (same hold or credit id, same
answer), so the request path and the reconciler may both try, in any order, as
often as they need to.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from services.common.points_client import PointsRejected, PointsUnavailable
from services.lottery.domain.draws import CAPTURED, UNPAID, VOIDED
from services.lottery.domain.errors import InsufficientPoints, LotteryError, refusal
from services.lottery.metrics import PAYMENTS
from services.lottery.service_layer.ports import PointsPort

log = logging.getLogger("loyalty.lottery.payments")

LATE_CHARGE_TTL_SECONDS = 300


async def capture(points: PointsPort, hold_id: str, member_id: str, amount: int, reason: str) -> str:
    """Spend a held payment; return `captured`, or `unpaid` if it can no longer be taken.

    A hold only stops being pending before we capture it if it expired (the lottery
    or the points service was away longer than its ttl). The draw or seat stands, so
    the points are then charged afresh; a member who no longer has them is `unpaid`
    (counted, logged, for someone to follow up).
    Raises PointsUnavailable when the points service cannot say: try again later.
    """
    try:
        await points.capture(hold_id)
        PAYMENTS.labels("captured").inc()
        return CAPTURED
    except PointsRejected as rejected:
        if rejected.code not in ("hold_not_pending", "unknown_hold"):
            raise
        log.warning("hold %s is %s; charging %d points afresh", hold_id, rejected.code, amount)
    late_id = f"{hold_id}-late"
    try:
        await points.hold(late_id, member_id, amount, f"{reason} (late charge)", LATE_CHARGE_TTL_SECONDS)
        await points.capture(late_id)
    except PointsRejected as rejected:
        log.error("could not charge %s %d points for %s: %s", member_id, amount, hold_id, rejected)
        PAYMENTS.labels("unpaid").inc()
        return UNPAID
    PAYMENTS.labels("late_charge").inc()
    return CAPTURED


async def void(points: PointsPort, hold_id: str) -> str:
    """Give held points back; a hold that never got placed has nothing to give back.

    Raises PointsUnavailable when the points service cannot say: try again later.
    """
    try:
        await points.void(hold_id)
    except PointsRejected as rejected:
        return _voided(hold_id, rejected.code, str(rejected))
    return _voided(hold_id, None, "")


def _voided(hold_id: str, error: str | None, detail: str) -> str:
    if error not in (None, "unknown_hold"):
        # Only a captured hold cannot be voided, and nothing captures a refused draw's hold.
        log.error("voiding hold %s: %s: %s", hold_id, error, detail)
    PAYMENTS.labels("voided").inc()
    return VOIDED


@dataclass(frozen=True)
class Charge:
    """A held payment to capture: what capture() takes."""

    hold_id: str
    member_id: str
    amount: int
    reason: str


async def settle_many(points: PointsPort, charges: Sequence[Charge], voids: Sequence[str]) -> dict[str, str]:
    """capture() every charge and void() every hold, as those would, in one call to the points
    service; return the outcome by hold_id.

    A charge whose hold can no longer be captured is charged afresh, as capture() does. A hold
    the points service could not settle now is left out of the answer: try it again later.
    Raises PointsUnavailable when the points service cannot say.
    """
    answers = await points.settle([c.hold_id for c in charges], list(voids))
    outcome: dict[str, str] = {}
    for charge in charges:
        answer = answers.get(charge.hold_id, {})
        if answer.get("status") == "captured":
            PAYMENTS.labels("captured").inc()
            outcome[charge.hold_id] = CAPTURED
        elif answer.get("error") in ("hold_not_pending", "unknown_hold"):
            try:
                outcome[charge.hold_id] = await capture(
                    points, charge.hold_id, charge.member_id, charge.amount, charge.reason
                )
            except (PointsRejected, PointsUnavailable) as failed:
                log.warning("charging hold %s later: %s", charge.hold_id, failed)
        else:
            log.warning("capturing hold %s later: %s", charge.hold_id, answer)
    for hold_id in voids:
        answer = answers.get(hold_id, {"error": "no_answer"})
        outcome[hold_id] = _voided(hold_id, answer.get("error"), str(answer.get("detail", "")))
    return outcome


def hold_refused(rejected: PointsRejected, member_id: str, cost_points: int) -> LotteryError:
    """The lottery's answer when the points service will not hold a draw's or an entry's cost."""
    if rejected.code == "insufficient_points":
        return InsufficientPoints(f"{member_id} has fewer than {cost_points} points available")
    return refusal(rejected.code, f"the points service refused the hold: {rejected.detail}")
