"""The order saga over points holds: hold points → take stock → capture; void on any failure.

Each step is committed before the next, and the order row says how far it got, so a
crash anywhere leaves an order the reconciler can finish (capture) or undo (void,
give the stock back). The points service voids a forgotten hold at its ttl by itself,
so points are never lost even if the reconciler is down.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from services.common.points_client import PointsRejected, PointsUnavailable
from services.redemption import metrics
from services.redemption.adapters.postgres import OrderSettled, RedemptionStore
from services.redemption.domain.model import (
    FAILURES,
    IdempotencyConflict,
    LimitReached,
    NotCancellable,
    Order,
    OutOfStock,
    PointsServiceUnavailable,
    RedemptionError,
    Reward,
    UnknownOrder,
    UnknownSku,
    fulfilment_for,
)

log = logging.getLogger("loyalty.redemption.orders")


class Points(Protocol):
    async def hold(
        self, hold_id: str, member_id: str, points: int, reason: str, ttl_seconds: int = 300
    ) -> dict[str, object]: ...

    async def capture(self, hold_id: str, points: int | None = None) -> dict[str, object]: ...

    async def void(self, hold_id: str) -> dict[str, object]: ...

    async def get_hold(self, hold_id: str) -> dict[str, object] | None: ...

    async def credit(self, credit_id: str, member_id: str, points: int, reason: str) -> dict[str, object]: ...

    async def balance(self, member_id: str) -> dict[str, object]: ...


@dataclass(frozen=True)
class OrderRequest:
    member_id: str
    sku: str
    quantity: int
    idempotency_key: str

    def fingerprint(self) -> bytes:
        body = {"member_id": self.member_id, "sku": self.sku, "quantity": self.quantity}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest()


class OrderService:
    def __init__(self, store: RedemptionStore, points: Points, hold_ttl_seconds: int = 120) -> None:
        self.store = store
        self.points = points
        self.hold_ttl_seconds = hold_ttl_seconds

    async def place(self, request: OrderRequest, now: datetime) -> Order:
        """Redeem, or return what the first request under this Idempotency-Key got."""
        reward = await self.store.get_reward(request.sku)
        if reward is None:
            raise UnknownSku(f"no reward with sku {request.sku!r}")
        failure = await self._precheck(request, reward, now)
        order, fingerprint, created = await self.store.start_order(
            str(uuid.uuid4()), request.member_id, request.idempotency_key, request.fingerprint(),
            reward, request.quantity, failure.code if failure else None,
        )  # fmt: skip
        if not created:
            if fingerprint != request.fingerprint():
                raise IdempotencyConflict("this Idempotency-Key was used for another order")
            return self._answer(await self._settled(order))
        if failure:
            metrics.ORDERS.labels(request.sku, failure.code).inc()
            raise failure

        try:
            await self.points.hold(
                order.hold_id, order.member_id, order.points_spent,
                f"redemption {order.order_id}: {order.quantity} x {order.sku}", self.hold_ttl_seconds,
            )  # fmt: skip
        except PointsRejected as rejected:
            metrics.SAGA_STEPS.labels("hold", "rejected").inc()
            code = rejected.code if rejected.code in FAILURES else "insufficient_points"
            return self._answer(await self.store.fail_order(order.order_id, code))
        except PointsUnavailable as exc:
            metrics.SAGA_STEPS.labels("hold", "unavailable").inc()
            raise PointsServiceUnavailable(f"order {order.order_id} is pending: {exc}") from None
        metrics.SAGA_STEPS.labels("hold", "ok").inc()

        try:
            await self.store.take_stock(order, reward.per_member_limit)
        except OrderSettled:
            # The reconciler gave up on this order while it was slow: undo the hold, report.
            await self._void_quietly(order.hold_id)
            return self._answer(await self._settled(order))
        except (OutOfStock, LimitReached) as refused:
            metrics.SAGA_STEPS.labels("take_stock", refused.code).inc()
            await self._void_quietly(order.hold_id)
            return self._answer(await self.store.fail_order(order.order_id, refused.code))
        metrics.SAGA_STEPS.labels("take_stock", "ok").inc()
        return self._answer(await self._capture_and_confirm(order, reward.kind))

    async def cancel(self, order: Order) -> Order:
        """Give a confirmed order's points back (as a credit) and its units back on sale."""
        if order.status == "cancelled":
            return order
        if order.status != "confirmed":
            raise NotCancellable(f"order {order.order_id} is {order.status}; only confirmed orders cancel")
        try:
            # Credit first: it is idempotent by credit_id, so a crash before the next line repeats safely.
            await self.points.credit(
                f"refund-{order.order_id}", order.member_id, order.points_spent,
                f"cancelled order {order.order_id}",
            )  # fmt: skip
        except PointsUnavailable as exc:
            raise PointsServiceUnavailable(f"cannot refund order {order.order_id} now: {exc}") from None
        cancelled = await self.store.cancel_order(order.order_id)
        metrics.ORDERS.labels(order.sku, "cancelled").inc()
        return cancelled

    async def reconcile(self, owner_silent_seconds: float) -> int:
        """Finish or undo orders a crashed process left pending; return how many."""
        settled = 0
        orphans = await self.store.orphaned_orders(owner_silent_seconds, stuck_seconds=self.hold_ttl_seconds)
        for order in orphans:
            try:
                action = await self._reconcile_one(order)
            except PointsUnavailable as exc:
                log.warning("reconciler: points service unavailable (%s); later", exc)
                break
            if action:
                metrics.RECONCILER_ACTIONS.labels(action).inc()
                log.info("reconciler: order %s %s", order.order_id, action)
                settled += 1
        return settled

    async def _reconcile_one(self, order: Order) -> str | None:
        hold = await self.points.get_hold(order.hold_id)
        status = None if hold is None else hold["status"]
        if order.stage == "new":
            # Stock was never taken: whatever happened to the hold, the order cannot go on.
            if status == "pending":
                await self._void_quietly(order.hold_id)
            await self.store.fail_order(order.order_id, "abandoned")
            return "voided"
        if status in ("pending", "captured"):
            reward = await self.store.get_reward(order.sku)
            assert reward is not None
            confirmed = await self._capture_and_confirm(order, reward.kind)
            return "confirmed" if confirmed.status == "confirmed" else None
        await self.store.fail_order(order.order_id, "hold_expired")
        return "released"

    async def _capture_and_confirm(self, order: Order, kind: str) -> Order:
        try:
            await self.points.capture(order.hold_id)
        except PointsRejected:
            # The hold expired or was voided meanwhile: nothing was spent, so give the stock back.
            metrics.SAGA_STEPS.labels("capture", "rejected").inc()
            return await self.store.fail_order(order.order_id, "hold_expired")
        except PointsUnavailable as exc:
            metrics.SAGA_STEPS.labels("capture", "unavailable").inc()
            raise PointsServiceUnavailable(f"order {order.order_id} is pending: {exc}") from None
        metrics.SAGA_STEPS.labels("capture", "ok").inc()
        code, fulfilment = fulfilment_for(kind, order.order_id, order.quantity, order.points_spent)
        confirmed = await self.store.confirm_order(order, code, fulfilment)
        if confirmed.status == "confirmed":
            metrics.ORDERS.labels(order.sku, "confirmed").inc()
        return confirmed

    async def _precheck(self, request: OrderRequest, reward: Reward, now: datetime) -> RedemptionError | None:
        """Refusals that need no side effect: window, stock already gone, star level."""
        try:
            reward.check_window(now)
            if reward.remaining < request.quantity:
                raise OutOfStock(f"{reward.sku} has {reward.remaining} left")
            if reward.per_member_limit is not None and request.quantity > reward.per_member_limit:
                raise LimitReached(f"at most {reward.per_member_limit} of {reward.sku} per member")
            if reward.min_tier:
                try:
                    balance = await self.points.balance(request.member_id)
                except PointsUnavailable as exc:
                    raise PointsServiceUnavailable(f"cannot check the member's star level: {exc}") from None
                reward.check_tier(str(balance["tier"]))
        except PointsServiceUnavailable:
            raise
        except RedemptionError as refused:
            return refused
        return None

    async def _settled(self, order: Order, wait_seconds: float = 10.0) -> Order:
        """A copy of a request still in flight waits for the first one to finish."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while order.status == "pending" and loop.time() < deadline:
            await asyncio.sleep(0.05)
            found = await self.store.get_order(order.order_id)
            assert found is not None
            order = found
        if order.status == "pending":
            raise PointsServiceUnavailable(f"order {order.order_id} is still being processed; ask again")
        return order

    def _answer(self, order: Order) -> Order:
        """Confirmed and cancelled orders are answers; a failed one is its error."""
        if order.status == "failed":
            if order.failure in FAILURES:
                metrics.ORDERS.labels(order.sku, order.failure).inc()
                raise FAILURES[order.failure](f"order {order.order_id}: {order.failure}")
            metrics.ORDERS.labels(order.sku, "failed").inc()
            raise PointsServiceUnavailable(
                f"order {order.order_id} failed ({order.failure}); try a new order"
            )
        return order

    async def _void_quietly(self, hold_id: str) -> None:
        try:
            await self.points.void(hold_id)
        except (PointsRejected, PointsUnavailable) as exc:
            # The hold then expires at its ttl by itself; nothing is spent either way.
            log.warning("void of %s failed (%s); it will expire", hold_id, exc)


async def find_order(store: RedemptionStore, order_id: str) -> Order:
    order = await store.get_order(order_id)
    if order is None:
        raise UnknownOrder(f"no order {order_id!r}")
    return order
