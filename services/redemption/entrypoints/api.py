"""The redemption HTTP API (CONTRACT.md §5): catalog, stock and orders."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import asyncpg
from fastapi import FastAPI, Header, Path, Query, Request
from pydantic import BaseModel, Field, model_validator

from services.common.db import create_pool
from services.common.http import PrincipalDep, install_service_edge, serve
from services.common.outbox import OutboxRelay
from services.common.points_client import PointsClient
from services.common.validation import ClientId, ClientIdPath, MemberIdField, Text
from services.redemption import metrics
from services.redemption.adapters.postgres import RedemptionStore
from services.redemption.domain.model import (
    InvalidReward,
    Order,
    RedemptionError,
    Reward,
    UnknownSku,
)
from services.redemption.service_layer.orders import OrderRequest, OrderService, find_order
from services.redemption.settings import RedemptionSettings

log = logging.getLogger("loyalty.redemption.api")

ERROR_STATUS = {
    "unknown_sku": 404,
    "unknown_order": 404,
    "out_of_stock": 409,
    "insufficient_points": 409,
    "limit_reached": 409,
    "idempotency_conflict": 409,
    "not_available": 409,
    "not_cancellable": 409,
    "sku_exists": 409,
    "tier_not_eligible": 403,
    "invalid_request": 422,
    "points_unavailable": 503,
}

Sku = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
SkuPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
Tier = Literal["standard", "silver", "gold", "diamond"]
MAX_PRICE = 10**9


class RewardIn(BaseModel):
    sku: Sku
    name: Annotated[Text, Field(min_length=1)]
    kind: Literal["voucher", "bill_credit", "event_ticket", "physical"]
    points_price: int = Field(gt=0, le=MAX_PRICE)
    stock: int = Field(ge=0, le=10**9)
    per_member_limit: int | None = Field(default=None, gt=0, le=10**6)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    min_tier: Tier | None = None

    @model_validator(mode="after")
    def window_is_ordered(self) -> RewardIn:
        problem = _window_problem(self.starts_at, self.ends_at)
        if problem:
            raise ValueError(problem)
        return self


class RewardPatch(BaseModel):
    name: Annotated[Text, Field(min_length=1)] | None = None
    points_price: int | None = Field(default=None, gt=0, le=MAX_PRICE)
    stock: int | None = Field(default=None, ge=0, le=10**9)
    per_member_limit: int | None = Field(default=None, gt=0, le=10**6)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    min_tier: Tier | None = None


class RewardOut(BaseModel):
    sku: str
    name: str
    kind: str
    points_price: int
    stock: int
    remaining: int
    per_member_limit: int | None
    starts_at: datetime | None
    ends_at: datetime | None
    min_tier: str | None


class RewardsOut(BaseModel):
    rewards: list[RewardOut]


class OrderIn(BaseModel):
    member_id: MemberIdField
    sku: Sku
    quantity: int = Field(default=1, ge=1, le=100)


class OrderOut(BaseModel):
    order_id: str
    status: str
    member_id: str
    sku: str
    quantity: int
    points_spent: int
    fulfilment: dict[str, Any] | None
    created_at: datetime


class OrdersPage(BaseModel):
    orders: list[OrderOut]
    next_cursor: str | None


def create_app(settings: RedemptionSettings) -> FastAPI:
    zone = ZoneInfo(settings.business_timezone)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        bootstrap = settings.resolved_kafka_bootstrap()
        pool = await create_pool(
            settings.resolved_database_url(),
            timezone=settings.business_timezone,
            max_size=20,
            reset_sessions=False,
        )
        points = PointsClient(settings.resolved_points_url(), settings.jwt_secret, "redemption")
        store = RedemptionStore(
            pool, instance_id=f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        )
        # Its own connection: a pool busy with a campaign-day rush must not silence the heartbeat.
        heartbeat_conn = await asyncpg.connect(settings.resolved_database_url())
        await store.heartbeat(heartbeat_conn)
        app.state.pool, app.state.bootstrap, app.state.store = pool, bootstrap, store
        app.state.orders = OrderService(store, points, settings.hold_ttl_seconds)
        stop = asyncio.Event()
        background: list[asyncio.Task[None]] = []
        try:
            background += [
                asyncio.create_task(OutboxRelay(pool, bootstrap, "redemption").run(stop)),
                asyncio.create_task(reconcile_forever(app.state.orders, settings, stop)),
                asyncio.create_task(measure_stock_forever(store, stop)),
                asyncio.create_task(beat_forever(store, heartbeat_conn, stop)),
            ]
            yield
        finally:
            stop.set()
            await asyncio.gather(*background, return_exceptions=True)
            await points.close()
            await heartbeat_conn.close()
            await pool.close()

    app = FastAPI(
        title="Loyalty redemption API",
        version="1",
        description="Reward catalog, stock and orders paid with points.",
        lifespan=lifespan,
    )
    install_service_edge(
        app, service="redemption", settings=settings, domain_error=RedemptionError, statuses=ERROR_STATUS
    )

    def reward_out(reward: Reward) -> RewardOut:
        return RewardOut(
            sku=reward.sku,
            name=reward.name,
            kind=reward.kind,
            points_price=reward.points_price,
            stock=reward.stock,
            remaining=reward.remaining,
            per_member_limit=reward.per_member_limit,
            starts_at=reward.starts_at.astimezone(zone) if reward.starts_at else None,
            ends_at=reward.ends_at.astimezone(zone) if reward.ends_at else None,
            min_tier=reward.min_tier,
        )

    def order_out(order: Order) -> OrderOut:
        return OrderOut(
            order_id=order.order_id,
            status=order.status,
            member_id=order.member_id,
            sku=order.sku,
            quantity=order.quantity,
            points_spent=order.points_spent,
            fulfilment=order.fulfilment,
            created_at=order.created_at.astimezone(zone),
        )

    @app.post("/v1/admin/rewards", status_code=201, response_model=RewardOut, tags=["catalog"])
    async def create_reward(body: RewardIn, principal: PrincipalDep, request: Request) -> RewardOut:
        """Put a reward on the catalog."""
        principal.require_role("admin")
        reward = Reward(
            body.sku, body.name, body.kind, body.points_price, body.stock, 0, body.per_member_limit,
            body.starts_at, body.ends_at, body.min_tier,
        )  # fmt: skip
        created = await request.app.state.store.create_reward(reward)
        metrics.STOCK_REMAINING.labels(created.sku).set(created.remaining)
        return reward_out(created)

    @app.patch("/v1/admin/rewards/{sku}", response_model=RewardOut, tags=["catalog"])
    async def change_reward(
        sku: SkuPath, body: RewardPatch, principal: PrincipalDep, request: Request
    ) -> RewardOut:
        """Change a reward's stock, price, window, limit or minimum star level."""
        principal.require_role("admin")
        store: RedemptionStore = request.app.state.store
        current = await store.get_reward(sku)
        if current is None:
            raise UnknownSku(f"no reward with sku {sku!r}")
        changes = body.model_dump(exclude_unset=True)
        problem = _window_problem(
            changes.get("starts_at", current.starts_at), changes.get("ends_at", current.ends_at)
        )
        if problem:
            raise InvalidReward(problem)
        updated = await store.update_reward(sku, changes)
        if updated is None:
            raise UnknownSku(f"no reward with sku {sku!r}")
        metrics.STOCK_REMAINING.labels(updated.sku).set(updated.remaining)
        return reward_out(updated)

    @app.get("/v1/rewards", response_model=RewardsOut, tags=["catalog"])
    async def rewards(
        principal: PrincipalDep, request: Request, include_inactive: bool = False
    ) -> RewardsOut:
        """Rewards on sale now, with the stock that remains (admins may ask for all)."""
        if include_inactive:
            principal.require_role("admin")
        found = await request.app.state.store.list_rewards(None if include_inactive else now())
        return RewardsOut(rewards=[reward_out(r) for r in found])

    @app.post("/v1/redemptions", status_code=201, response_model=OrderOut, tags=["orders"])
    async def redeem(
        body: OrderIn,
        principal: PrincipalDep,
        request: Request,
        idempotency_key: Annotated[ClientId | None, Header()] = None,
    ) -> OrderOut:
        """Spend points on a reward; retries with the same Idempotency-Key get the same order."""
        if idempotency_key is None:
            raise InvalidReward("the Idempotency-Key header is required")
        principal.require_member_access(body.member_id)
        order_request = OrderRequest(body.member_id, body.sku, body.quantity, idempotency_key)
        return order_out(await request.app.state.orders.place(order_request, now()))

    @app.get("/v1/redemptions/{order_id}", response_model=OrderOut, tags=["orders"])
    async def get_order(order_id: ClientIdPath, principal: PrincipalDep, request: Request) -> OrderOut:
        """One order."""
        order = await find_order(request.app.state.store, order_id)
        principal.require_member_access(order.member_id)
        return order_out(order)

    @app.get("/v1/members/{member_id}/redemptions", response_model=OrdersPage, tags=["orders"])
    async def member_orders(
        member_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,32}$")],
        principal: PrincipalDep,
        request: Request,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: str | None = None,
    ) -> OrdersPage:
        """A member's orders, newest first."""
        principal.require_member_access(member_id)
        before = _decode_cursor(cursor) if cursor else None
        found = await request.app.state.store.member_orders(member_id, limit + 1, before)
        page = found[:limit]
        next_cursor = _encode_cursor(page[-1].created_at) if len(found) > limit else None
        return OrdersPage(orders=[order_out(o) for o in page], next_cursor=next_cursor)

    @app.post("/v1/redemptions/{order_id}/cancel", tags=["orders"])
    async def cancel(order_id: ClientIdPath, principal: PrincipalDep, request: Request) -> dict[str, str]:
        """Cancel a confirmed order: its points are credited back and its stock returns."""
        principal.require_role("member", "admin")
        order = await find_order(request.app.state.store, order_id)
        principal.require_member_access(order.member_id)
        cancelled = await request.app.state.orders.cancel(order)
        return {"order_id": cancelled.order_id, "status": cancelled.status}

    return app


def now() -> datetime:
    return datetime.now(UTC)


def _window_problem(starts_at: datetime | None, ends_at: datetime | None) -> str | None:
    for name, moment in (("starts_at", starts_at), ("ends_at", ends_at)):
        if moment is not None and moment.tzinfo is None:
            return f"{name}: needs a time zone offset"
    if starts_at and ends_at and ends_at <= starts_at:
        return "ends_at: must be after starts_at"
    return None


def _encode_cursor(created_at: datetime) -> str:
    return base64.urlsafe_b64encode(created_at.isoformat().encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> datetime:
    try:
        moment = datetime.fromisoformat(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidReward("cursor: not a cursor this API returned") from None
    if moment.tzinfo is None:
        raise InvalidReward("cursor: not a cursor this API returned")
    return moment


async def reconcile_forever(orders: OrderService, settings: RedemptionSettings, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await orders.reconcile(settings.reconcile_after_seconds)
        except Exception:  # a database or network hiccup: the next round tries again
            log.exception("reconciler round failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.reconcile_interval_seconds)


async def beat_forever(store: RedemptionStore, conn: asyncpg.Connection, stop: asyncio.Event) -> None:
    """Tell the other processes' reconcilers that this one is alive and owns its in-flight orders."""
    while not stop.is_set():
        with contextlib.suppress(Exception):
            await store.heartbeat(conn)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def measure_stock_forever(store: RedemptionStore, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(Exception):
            for sku, remaining in await store.stock_levels():
                metrics.STOCK_REMAINING.labels(sku).set(remaining)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 5.0)


def main() -> None:
    settings = RedemptionSettings()
    serve(create_app(settings), settings.redemption_port)
