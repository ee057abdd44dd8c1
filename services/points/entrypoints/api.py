"""The points HTTP API (CONTRACT.md §4)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo

import asyncpg
from fastapi import FastAPI, Path, Query, Request
from pydantic import BaseModel, Field, ValidationError, model_validator

from services.common.db import TRANSIENT_DB_ERRORS, create_pool
from services.common.http import PrincipalDep, describe_invalid, install_service_edge, serve
from services.common.outbox import OutboxRelay
from services.common.validation import ClientId, ClientIdPath, MemberIdField, Text
from services.points.adapters.postgres import PostgresLedger, ledger_transaction
from services.points.adapters.queries import read_balance, read_entries
from services.points.domain.errors import InvalidRequest, PointsError, UnknownHold
from services.points.domain.ledger import PENDING, Hold
from services.points.domain.policy import load_policy
from services.points.metrics import HOLDS_EXPIRED, HOLDS_OPEN, HOLDS_OVERDUE
from services.points.service_layer.spending import (
    AdjustmentRequest,
    CreditRequest,
    HoldRequest,
    adjust,
    capture_hold,
    credit,
    place_hold,
    place_holds,
    settle_holds,
    void_expired_holds,
    void_hold,
)
from services.points.settings import PointsSettings

log = logging.getLogger("loyalty.points.api")
T = TypeVar("T")

SETTLE_MAX = 1000
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
    held_after: int
    ref: str
    occurred_at: datetime
    recorded_at: datetime


class EntriesPage(BaseModel):
    entries: list[EntryOut]
    next_cursor: str | None


MAX_POINTS = 10**12


class HoldIn(BaseModel):
    hold_id: ClientId
    member_id: MemberIdField
    points: int = Field(gt=0, le=MAX_POINTS)
    reason: Text = ""
    ttl_seconds: int = Field(default=300, ge=1, le=7 * 86400)


class HoldOut(BaseModel):
    hold_id: str
    member_id: str
    status: str
    points: int
    expires_at: datetime


class HoldsIn(BaseModel):
    # Each item is checked on its own, so that one bad hold is answered, not the whole batch refused.
    holds: list[dict[str, Any]] = Field(min_length=1, max_length=SETTLE_MAX)


class PlacedHold(BaseModel):
    """A hold as POST /v1/holds would answer it, or the error it would have given."""

    hold_id: str
    member_id: str | None = None
    status: str | None = None
    points: int | None = None
    expires_at: datetime | None = None
    error: str | None = None
    detail: str | None = None


class HoldsOut(BaseModel):
    holds: list[PlacedHold]


class CaptureIn(BaseModel):
    points: int | None = Field(default=None, gt=0, le=MAX_POINTS)


class CaptureOut(BaseModel):
    hold_id: str
    status: str
    points: int


class VoidOut(BaseModel):
    hold_id: str
    status: str


class SettleIn(BaseModel):
    capture: list[ClientId] = Field(default_factory=list, max_length=SETTLE_MAX)
    void: list[ClientId] = Field(default_factory=list, max_length=SETTLE_MAX)

    @model_validator(mode="after")
    def one_outcome_per_hold(self) -> SettleIn:
        if not self.capture and not self.void:
            raise ValueError("name at least one hold to capture or void")
        if len(self.capture) + len(self.void) > SETTLE_MAX:
            raise ValueError(f"at most {SETTLE_MAX} holds in one request")
        both = sorted(set(self.capture) & set(self.void))
        if both:
            raise ValueError(f"hold(s) both to capture and to void: {', '.join(both[:5])}")
        return self


class SettledHold(BaseModel):
    """A hold as capture or void would answer it, or the error they would have given."""

    hold_id: str
    status: str | None = None
    points: int | None = None
    error: str | None = None
    detail: str | None = None


class SettleOut(BaseModel):
    holds: list[SettledHold]


class CreditIn(BaseModel):
    credit_id: ClientId
    member_id: MemberIdField
    points: int = Field(gt=0, le=MAX_POINTS)
    reason: Text = ""


class AdjustmentIn(BaseModel):
    adjustment_id: ClientId
    member_id: MemberIdField
    delta: int = Field(ge=-MAX_POINTS, le=MAX_POINTS)
    reason: Text = ""


def create_app(settings: PointsSettings) -> FastAPI:
    zone = ZoneInfo(settings.business_timezone)
    policy = load_policy(settings.policy_file)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        bootstrap = settings.resolved_kafka_bootstrap()
        # The API leaves no session state on its connections, so asyncpg's reset round trip is skipped.
        pool = await create_pool(
            settings.resolved_database_url(),
            timezone=settings.business_timezone,
            max_size=20,
            reset_sessions=False,
        )
        stop = asyncio.Event()
        app.state.pool = pool
        app.state.bootstrap = bootstrap
        background: list[asyncio.Task[None]] = []
        try:
            background.append(asyncio.create_task(OutboxRelay(pool, bootstrap, "points").run(stop)))
            background.append(asyncio.create_task(void_expired_holds_forever(pool, stop)))
            background.append(asyncio.create_task(measure_holds(pool, stop)))
            yield
        finally:
            stop.set()
            await asyncio.gather(*background, return_exceptions=True)
            await pool.close()

    app = FastAPI(
        title="Loyalty points API",
        version="1",
        description="Balances, history, holds and credits of the points ledger.",
        lifespan=lifespan,
    )
    install_service_edge(
        app, service="points", settings=settings, domain_error=PointsError, statuses=ERROR_STATUS
    )

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
                    held_after=r.held_after,
                    ref=r.ref,
                    occurred_at=r.occurred_at.astimezone(zone),
                    recorded_at=r.recorded_at.astimezone(zone),
                )
                for r in page
            ],
            next_cursor=encode_cursor(page[-1].entry_id) if len(rows) > limit else None,
        )

    def unit_of_work() -> AbstractAsyncContextManager[PostgresLedger]:
        return ledger_transaction(app.state.pool)

    @app.post("/v1/holds", status_code=201, response_model=HoldOut, tags=["spending"])
    async def create_hold(body: HoldIn, principal: PrincipalDep) -> HoldOut:
        """Reserve a member's points (earliest-expiring first) until captured, voided or expired."""
        principal.require_role("service", "admin")
        request = HoldRequest(body.hold_id, body.member_id, body.points, body.reason, body.ttl_seconds)
        hold = await retrying(lambda: place_hold(unit_of_work, request, now()))
        return HoldOut(
            hold_id=hold.hold_id,
            member_id=hold.member_id,
            status=PENDING,
            points=hold.points,
            expires_at=hold.expires_at.astimezone(zone),
        )

    @app.post("/v1/holds/batch", response_model=HoldsOut, response_model_exclude_none=True, tags=["spending"])
    async def create_holds(body: HoldsIn, principal: PrincipalDep) -> HoldsOut:
        """Place up to 1,000 holds in one transaction (an extension of §4).

        Each item is a POST /v1/holds body, placed as that call would place it and answered
        in the order given, with that call's answer or its error code; one that cannot be
        placed does not stop the others.
        """
        principal.require_role("service", "admin")
        answers: list[PlacedHold | HoldRequest] = []
        for index, item in enumerate(body.holds):
            try:
                valid = HoldIn.model_validate(item)
            except ValidationError as invalid:
                hold_id = item.get("hold_id")
                answers.append(PlacedHold(
                    hold_id=hold_id if isinstance(hold_id, str) else f"#{index}",
                    error="invalid_request", detail=describe_invalid(invalid.errors()),
                ))  # fmt: skip
                continue
            answers.append(
                HoldRequest(valid.hold_id, valid.member_id, valid.points, valid.reason, valid.ttl_seconds)
            )
        requests = [a for a in answers if isinstance(a, HoldRequest)]
        results = iter(await retrying(lambda: place_holds(unit_of_work, requests, now())) if requests else [])
        return HoldsOut(holds=[a if isinstance(a, PlacedHold) else placed(a.hold_id, next(results))
                               for a in answers])  # fmt: skip

    def placed(hold_id: str, result: Hold | PointsError) -> PlacedHold:
        if isinstance(result, PointsError):
            return PlacedHold(hold_id=hold_id, error=result.code, detail=str(result))
        return PlacedHold(
            hold_id=hold_id,
            member_id=result.member_id,
            status=PENDING,
            points=result.points,
            expires_at=result.expires_at.astimezone(zone),
        )

    @app.post("/v1/holds/{hold_id}/capture", response_model=CaptureOut, tags=["spending"])
    async def capture(
        hold_id: ClientIdPath, principal: PrincipalDep, body: CaptureIn | None = None
    ) -> CaptureOut:
        """Spend a pending hold, all of it or `points` of it; the rest returns to the member."""
        principal.require_role("service", "admin")
        points = body.points if body else None
        hold = await retrying(lambda: capture_hold(unit_of_work, hold_id, points, now()))
        return CaptureOut(hold_id=hold.hold_id, status=hold.status, points=hold.captured)

    @app.post("/v1/holds/settle", response_model=SettleOut, tags=["spending"])
    async def settle(body: SettleIn, principal: PrincipalDep) -> SettleOut:
        """Capture (in full) and void up to 1,000 holds in one transaction (an extension of §4).

        Each hold is settled as its own capture or void call would settle it, and answered in
        the order asked (captures first); a hold that cannot be settled gets that call's error
        code and does not stop the others.
        """
        principal.require_role("service", "admin")
        results = await retrying(lambda: settle_holds(unit_of_work, body.capture, body.void, now()))
        return SettleOut(
            holds=[
                SettledHold(hold_id=hold_id, error=r.code, detail=str(r))
                if isinstance(r, PointsError)
                else SettledHold(hold_id=hold_id, status=r.status, points=r.captured or None)
                for hold_id, r in results.items()
            ]
        )

    @app.post("/v1/holds/{hold_id}/void", response_model=VoidOut, tags=["spending"])
    async def void(hold_id: ClientIdPath, principal: PrincipalDep) -> VoidOut:
        """Give a pending hold's points back to the lots they came from."""
        principal.require_role("service", "admin")
        hold = await retrying(lambda: void_hold(unit_of_work, hold_id, now()))
        return VoidOut(hold_id=hold.hold_id, status=hold.status)

    @app.get("/v1/holds/{hold_id}", response_model=HoldOut, tags=["spending"])
    async def get_hold(hold_id: ClientIdPath, principal: PrincipalDep, request: Request) -> HoldOut:
        """A hold's current state (for reconcilers)."""
        principal.require_role("service", "admin")
        async with request.app.state.pool.acquire() as conn:
            found = await PostgresLedger(conn).find_hold(hold_id)
        if found is None:
            raise UnknownHold(f"no hold {hold_id!r}")
        hold = found[0]
        status = "voided" if hold.status == PENDING and hold.expires_at <= now() else hold.status
        return HoldOut(
            hold_id=hold.hold_id,
            member_id=hold.member_id,
            status=status,
            points=hold.points,
            expires_at=hold.expires_at.astimezone(zone),
        )

    @app.post("/v1/credits", status_code=201, tags=["spending"])
    async def create_credit(body: CreditIn, principal: PrincipalDep) -> dict[str, Any]:
        """Give a member points (refunds, prizes); they expire like points earned today."""
        principal.require_role("service", "admin")
        request = CreditRequest(body.credit_id, body.member_id, body.points, body.reason)
        return await retrying(lambda: credit(unit_of_work, request, policy, now()))

    @app.post("/v1/admin/adjustments", status_code=201, tags=["spending"])
    async def create_adjustment(body: AdjustmentIn, principal: PrincipalDep) -> dict[str, Any]:
        """Correct a member's points by hand; a negative delta only out of available points."""
        principal.require_role("admin")
        request = AdjustmentRequest(body.adjustment_id, body.member_id, body.delta, body.reason)
        return await retrying(lambda: adjust(unit_of_work, request, policy, now()))

    return app


def now() -> datetime:
    return datetime.now(UTC)


async def retrying(attempt: Callable[[], Awaitable[T]], attempts: int = 5) -> T:
    """Run a use case again when a concurrent transaction won a race (deadlock, same new id)."""
    for remaining in range(attempts - 1, -1, -1):
        try:
            return await attempt()
        except TRANSIENT_DB_ERRORS:
            if remaining == 0:
                raise
            await asyncio.sleep(0.01 * (attempts - remaining))
    raise AssertionError("unreachable")


async def void_expired_holds_forever(pool: asyncpg.Pool, stop: asyncio.Event) -> None:
    """A pending hold past its ttl gives its points back, whoever forgot it."""
    while not stop.is_set():
        try:
            voided = await void_expired_holds(partial(ledger_transaction, pool), now())
            if voided:
                HOLDS_EXPIRED.inc(voided)
                log.info("voided %d expired holds", voided)
                continue
        except Exception:  # the database may be away for a moment; try again shortly
            log.exception("voiding expired holds failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def measure_holds(pool: asyncpg.Pool, stop: asyncio.Event) -> None:
    """Holds open and overdue, for the alert on holds that nobody resolves."""
    while not stop.is_set():
        with contextlib.suppress(*TRANSIENT_DB_ERRORS):
            row = await pool.fetchrow(
                """SELECT count(*) AS open, count(*) FILTER (WHERE expires_at <= now()) AS overdue
                   FROM points.holds WHERE status = 'pending'"""
            )
            assert row is not None
            HOLDS_OPEN.set(row["open"])
            HOLDS_OVERDUE.set(row["overdue"])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 5)


def encode_cursor(entry_id: int) -> str:
    return base64.urlsafe_b64encode(f"e:{entry_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = text.partition(":")
        if kind != "e" or not value.isdigit() or len(value) > 18:
            raise ValueError(cursor)
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest("cursor: not a cursor this API returned") from None


def main() -> None:
    settings = PointsSettings()
    serve(create_app(settings), settings.points_port)
