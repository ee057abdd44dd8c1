"""The points HTTP API (CONTRACT.md §4)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Path, Query, Request
from pydantic import BaseModel

from services.common.auth import TokenVerifier
from services.common.db import create_pool
from services.common.http import (
    PrincipalDep,
    RequestMetricsMiddleware,
    add_ops_routes,
    install_error_handlers,
)
from services.common.kafka import broker_reachable, make_producer
from services.common.outbox import OutboxRelay
from services.points.adapters.queries import read_balance, read_entries
from services.points.domain.errors import InvalidRequest, PointsError
from services.points.settings import PointsSettings

ERROR_STATUS = {
    "insufficient_points": 409,
    "hold_not_pending": 409,
    "idempotency_conflict": 409,
    "unknown_hold": 404,
    "invalid_request": 422,
}

MemberId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,32}$", description="1-32 of [A-Za-z0-9_-]")]


class Expiring(BaseModel):
    points: int
    expires_at: datetime


class BalanceOut(BaseModel):
    member_id: str
    tier: str
    available: int
    held: int
    debt: int
    expiring: list[Expiring]


class EntryOut(BaseModel):
    entry_id: int
    kind: str
    delta: int
    balance_after: int
    debt_after: int
    ref: str
    occurred_at: datetime
    recorded_at: datetime


class EntriesPage(BaseModel):
    entries: list[EntryOut]
    next_cursor: str | None


def create_app(settings: PointsSettings) -> FastAPI:
    zone = ZoneInfo(settings.business_timezone)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        bootstrap = settings.resolved_kafka_bootstrap()
        pool = await create_pool(settings.resolved_database_url(), timezone=settings.business_timezone)
        producer = make_producer(bootstrap)
        stop = asyncio.Event()
        relay_task: asyncio.Task[None] | None = None
        app.state.pool = pool
        app.state.bootstrap = bootstrap
        try:
            await producer.start()
            relay_task = asyncio.create_task(OutboxRelay(pool, producer, "points").run(stop))
            yield
        finally:
            stop.set()
            if relay_task is not None:
                await relay_task
            with contextlib.suppress(Exception):
                await producer.stop()
            await pool.close()

    app = FastAPI(
        title="Loyalty points API",
        version="1",
        description="Balances, history, holds and credits of the points ledger.",
        lifespan=lifespan,
    )
    app.state.verifier = TokenVerifier(settings.jwt_secret, settings.jwt_public_key)
    app.add_middleware(RequestMetricsMiddleware, service="points")
    install_error_handlers(app, PointsError, ERROR_STATUS)

    async def readiness() -> dict[str, bool]:
        database = False
        with contextlib.suppress(Exception):
            database = await app.state.pool.fetchval("SELECT 1") == 1
        return {"database": database, "broker": await broker_reachable(app.state.bootstrap)}

    add_ops_routes(app, readiness)

    @app.get("/v1/members/{member_id}/balance", response_model=BalanceOut, tags=["points"])
    async def balance(member_id: MemberId, principal: PrincipalDep, request: Request) -> BalanceOut:
        """A member's available, held and owed points, and when the available ones expire."""
        principal.require_member_access(member_id)
        async with request.app.state.pool.acquire() as conn:
            found = await read_balance(conn, member_id)
        return BalanceOut(
            member_id=found.member_id,
            tier=found.tier,
            available=found.available,
            held=found.held,
            debt=found.debt,
            expiring=[Expiring(points=p, expires_at=e.astimezone(zone)) for p, e in found.expiring],
        )

    @app.get("/v1/members/{member_id}/entries", response_model=EntriesPage, tags=["points"])
    async def entries(
        member_id: MemberId,
        principal: PrincipalDep,
        request: Request,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: str | None = None,
    ) -> EntriesPage:
        """Every change to a member's points, newest first, a page at a time."""
        principal.require_member_access(member_id)
        before = decode_cursor(cursor) if cursor else None
        async with request.app.state.pool.acquire() as conn:
            rows = await read_entries(conn, member_id, limit + 1, before)
        page = rows[:limit]
        return EntriesPage(
            entries=[
                EntryOut(
                    entry_id=r.entry_id,
                    kind=r.kind,
                    delta=r.delta,
                    balance_after=r.balance_after,
                    debt_after=r.debt_after,
                    ref=r.ref,
                    occurred_at=r.occurred_at.astimezone(zone),
                    recorded_at=r.recorded_at.astimezone(zone),
                )
                for r in page
            ],
            next_cursor=encode_cursor(page[-1].entry_id) if len(rows) > limit else None,
        )

    return app


def encode_cursor(entry_id: int) -> str:
    return base64.urlsafe_b64encode(f"e:{entry_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = text.partition(":")
        if kind != "e" or not value.isdigit():
            raise ValueError(cursor)
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest("cursor: not a cursor this API returned") from None


def run_api(settings: PointsSettings) -> None:
    import uvicorn

    uvicorn.run(
        create_app(settings),
        host="0.0.0.0",
        port=settings.points_port,
        loop="uvloop",
        log_level="warning",
        access_log=False,
    )
