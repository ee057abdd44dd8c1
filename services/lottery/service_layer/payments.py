"""Settling the holds of draws and entries with the points service.

Every call here is idempotent on the points side (same hold or credit id, same
answer), so the request path and the reconciler may both try, in any order, as
often as they need to.
"""

from __future__ import annotations

import logging

from services.common.points_client import PointsRejected
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
        if rejected.code != "unknown_hold":
            # Only a captured hold cannot be voided, and nothing captures a refused draw's hold.
            log.error("voiding hold %s: %s", hold_id, rejected)
    PAYMENTS.labels("voided").inc()
    return VOIDED


def hold_refused(rejected: PointsRejected, member_id: str, cost_points: int) -> LotteryError:
    """The lottery's answer when the points service will not hold a draw's or an entry's cost."""
    if rejected.code == "insufficient_points":
        return InsufficientPoints(f"{member_id} has fewer than {cost_points} points available")
    return refusal(rejected.code, f"the points service refused the hold: {rejected.detail}")
