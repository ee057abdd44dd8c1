"""The lottery HTTP API (CONTRACT.md §6)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo

import asyncpg
from fastapi import FastAPI, Header, Path
from pydantic import AfterValidator, AwareDatetime, BaseModel, Field, StringConstraints

from services.common.db import TRANSIENT_DB_ERRORS, create_pool
from services.common.http import PrincipalDep, install_service_edge, serve
from services.common.outbox import OutboxRelay
from services.common.points_client import PointsClient
from services.common.validation import ClientId, MemberIdField, Text
from services.lottery.adapters.points import PointsGateway
from services.lottery.adapters.postgres import PostgresStore
from services.lottery.domain.campaign import INSTANT, Campaign, Prize
from services.lottery.domain.draws import Draw, Entry
from services.lottery.domain.errors import LotteryError
from services.lottery.service_layer.ballots import enter_ballot, settle_closed_ballot
from services.lottery.service_layer.campaigns import (
    CampaignView,
    close_campaign,
    create_campaign,
    reveal_campaign,
    view_campaign,
    winners,
)
from services.lottery.service_layer.context import Lottery
from services.lottery.service_layer.draws import make_draw
from services.lottery.service_layer.reconcile import reconcile_once, refresh_prize_gauges
from services.lottery.settings import LotterySettings

log = logging.getLogger("loyalty.lottery.api")
T = TypeVar("T")

ERROR_STATUS = {
    "invalid_request": 422,
    "unknown_campaign": 404,
    "campaign_exists": 409,
    "wrong_campaign_kind": 409,
    "campaign_closed": 409,
    "already_closed": 409,
    "limit_reached": 409,
    "insufficient_points": 409,
    "already_entered": 409,
    "idempotency_conflict": 409,
    "draw_interrupted": 409,
    "entry_interrupted": 409,
    "not_revealed": 409,
    "points_unavailable": 503,
}
RECONCILER_LOCK = 7261004  # one reconciler pass at a time, across every lottery process
MAX_POINTS = 10**12
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


def _plausible(moment: datetime) -> datetime:
    # Far-off years overflow in time zone arithmetic and in Postgres: a 422, not a 500.
    if not 2000 <= moment.year <= 2999:
        raise ValueError("must be between the years 2000 and 2999")
    return moment.astimezone(UTC)


CampaignIdField = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
CampaignId = Annotated[str, Path(pattern=ID_PATTERN, description="1-64 of [A-Za-z0-9_-]")]
Moment = Annotated[AwareDatetime, AfterValidator(_plausible)]
Name = Annotated[Text, StringConstraints(min_length=1, max_length=200)]
IdempotencyKey = Annotated[
    ClientId, Header(alias="Idempotency-Key", description="1-128 printable ASCII characters, one per draw")
]


class PrizeIn(BaseModel):
    prize_id: CampaignIdField
    name: Name
    stock: int = Field(ge=0, le=10**9)
    weight_ppm: int = Field(ge=0, le=1_000_000)
    points: int | None = Field(default=None, gt=0, le=MAX_POINTS, description="a prize of points")


class CampaignIn(BaseModel):
    campaign_id: CampaignIdField
    name: Name
    kind: Literal["instant", "ballot"]
    cost_points: int = Field(ge=0, le=MAX_POINTS)
    starts_at: Moment | None = None
    ends_at: Moment | None = None
    per_member_limit: int | None = Field(default=None, ge=1, le=10**6)
    per_member_daily_limit: int | None = Field(default=None, ge=1, le=10**6)
    prizes: list[PrizeIn] | None = Field(default=None, max_length=100)
    seats: int | None = Field(default=None, ge=1, le=10**7)


class PrizeOut(BaseModel):
    prize_id: str
    name: str
    stock: int
    weight_ppm: int
    points: int | None
    won: int
    remaining: int


class CampaignOut(BaseModel):
    campaign_id: str
    name: str
    kind: str
    status: str
    cost_points: int
    starts_at: datetime | None
    ends_at: datetime | None
    closed_at: datetime | None
    per_member_limit: int | None
    per_member_daily_limit: int | None
    seed_commitment: str
    prizes: list[PrizeOut] | None = None
    draws: int | None = None
    seats: int | None = None
    entries: int | None = None


class DrawIn(BaseModel):
    member_id: MemberIdField
    client_seed: Text = ""


class DrawOut(BaseModel):
    draw_id: str
    campaign_id: str
    member_id: str
    nonce: int
    client_seed: str
    prize_id: str | None
    prize_name: str | None
    prize_points: int | None
    points_spent: int
    drawn_at: datetime


class EntryIn(BaseModel):
    member_id: MemberIdField


class EntryOut(BaseModel):
    campaign_id: str
    member_id: str
    status: str
    points_held: int
    entered_at: datetime


class CloseIn(BaseModel):
    public_entropy: Text | None = None


class CloseOut(BaseModel):
    campaign_id: str
    kind: str
    status: str
    closed_at: datetime
    public_entropy: str | None = None
    entries: int | None = None
    winners: int | None = None


class ResultsOut(BaseModel):
    campaign_id: str
    kind: str
    status: str
    closed_at: datetime | None
    draws: int | None = None
    prizes: list[PrizeOut] | None = None
    seats: int | None = None
    entries: int | None = None
    winners: list[str] | None = None
    payments_pending: int | None = None


def create_app(settings: LotterySettings) -> FastAPI:
    zone = ZoneInfo(settings.business_timezone)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        bootstrap = settings.resolved_kafka_bootstrap()
        pool = await create_pool(
            settings.resolved_database_url(),
            timezone=settings.business_timezone,
            max_size=settings.lottery_db_pool_size,
            # The lottery leaves no session state on a connection (its one session-level
            # advisory lock is always released), so the per-release reset round trip can go.
            reset_sessions=False,
        )
        points = PointsClient(settings.resolved_points_url(), settings.jwt_secret, "lottery")
        lottery = Lottery(
            store=PostgresStore(pool),
            points=PointsGateway(points, settings.lottery_points_concurrency),
            timezone=zone,
            draw_hold_ttl_seconds=settings.lottery_draw_hold_ttl_seconds,
            abandon_after_seconds=settings.lottery_abandon_after_seconds,
            settle_grace_seconds=settings.lottery_settle_grace_seconds,
        )
        stop = asyncio.Event()
        app.state.pool, app.state.bootstrap, app.state.lottery = pool, bootstrap, lottery
        app.state.background = set()
        background: list[asyncio.Task[None]] = []
        try:
            background.append(asyncio.create_task(OutboxRelay(pool, bootstrap, "lottery").run(stop)))
            background.append(
                asyncio.create_task(
                    reconcile_forever(lottery, pool, settings.lottery_reconcile_interval_seconds, stop)
                )
            )
            yield
        finally:
            stop.set()
            for settling in app.state.background:
                settling.cancel()  # idempotent work: the reconciler of the next start finishes it
            await asyncio.gather(*background, *app.state.background, return_exceptions=True)
            await points.close()
            await pool.close()

    app = FastAPI(
        title="Loyalty lottery API",
        version="1",
        description="Provably fair instant-win campaigns and ballots, paid for with points.",
        lifespan=lifespan,
    )
    install_service_edge(
        app, service="lottery", settings=settings, domain_error=LotteryError, statuses=ERROR_STATUS
    )

    def lottery() -> Lottery:
        found: Lottery = app.state.lottery
        return found

    @app.post("/v1/admin/campaigns", status_code=201, response_model=CampaignOut, tags=["admin"])
    async def create(body: CampaignIn, principal: PrincipalDep) -> CampaignOut:
        """Create a campaign with a secret seed; its SHA-256 commitment is public from now on."""
        principal.require_role("admin")
        definition = Campaign(
            campaign_id=body.campaign_id,
            name=body.name,
            kind=body.kind,
            cost_points=body.cost_points,
            seed_commitment="",
            starts_at=body.starts_at,
            ends_at=body.ends_at,
            per_member_limit=body.per_member_limit,
            per_member_daily_limit=body.per_member_daily_limit,
            prizes=tuple(
                Prize(p.prize_id, p.name, p.stock, p.weight_ppm, p.points) for p in body.prizes or ()
            ),
            seats=body.seats,
        )
        campaign, _ = await retrying(lambda: create_campaign(lottery(), definition))
        return campaign_out(CampaignView(campaign, {}), zone)

    @app.post("/v1/admin/campaigns/{campaign_id}/close", response_model=CloseOut, tags=["admin"])
    async def close(
        campaign_id: CampaignId, principal: PrincipalDep, body: CloseIn | None = None
    ) -> CloseOut:
        """End a campaign now; a ballot ranks its entries and settles every hold."""
        principal.require_role("admin")
        entropy = body.public_entropy if body else None
        closure = await retrying(lambda: close_campaign(lottery(), campaign_id, entropy))
        campaign = closure.campaign
        if campaign.kind != INSTANT:
            settle_in_background(campaign_id)
        assert campaign.closed_at is not None
        return CloseOut(
            campaign_id=campaign_id,
            kind=campaign.kind,
            status="closed",
            closed_at=campaign.closed_at.astimezone(zone),
            public_entropy=campaign.public_entropy,
            entries=closure.entries,
            winners=closure.winners,
        )

    def settle_in_background(campaign_id: str) -> None:
        """Winners' holds captured, the others' voided, after the response; the reconciler backs it up."""
        state = lottery()
        if campaign_id in state.settling:
            return
        state.settling.add(campaign_id)
        task = asyncio.create_task(settle_closed_ballot(state, campaign_id))
        tasks: set[asyncio.Task[int]] = app.state.background
        tasks.add(task)

        def done(finished: asyncio.Task[int]) -> None:
            tasks.discard(finished)
            state.settling.discard(campaign_id)
            if not finished.cancelled() and finished.exception() is not None:
                log.error("settling ballot %s", campaign_id, exc_info=finished.exception())

        task.add_done_callback(done)

    @app.get("/v1/campaigns/{campaign_id}", response_model=CampaignOut, tags=["campaigns"])
    async def campaign_info(campaign_id: CampaignId) -> CampaignOut:
        """Public: the campaign, its seed commitment, window and the stock left of each prize."""
        return campaign_out(await view_campaign(lottery(), campaign_id), zone)

    @app.post("/v1/campaigns/{campaign_id}/draws", status_code=201, response_model=DrawOut, tags=["draws"])
    async def draw(
        campaign_id: CampaignId, body: DrawIn, principal: PrincipalDep, idempotency_key: IdempotencyKey
    ) -> DrawOut:
        """Draw once: the cost is held, the draw made, then the cost captured. Same key, same answer."""
        principal.require_member_access(body.member_id)
        made = await retrying(
            lambda: make_draw(lottery(), campaign_id, idempotency_key, body.member_id, body.client_seed)
        )
        return draw_out(made, (await lottery().book.get(campaign_id)).campaign, zone)

    @app.post(
        "/v1/campaigns/{campaign_id}/entries", status_code=201, response_model=EntryOut, tags=["ballots"]
    )
    async def enter(campaign_id: CampaignId, body: EntryIn, principal: PrincipalDep) -> EntryOut:
        """Enter a ballot once; its cost is held until the ballot closes."""
        principal.require_member_access(body.member_id)
        entry = await retrying(lambda: enter_ballot(lottery(), campaign_id, body.member_id))
        return entry_out(entry, zone)

    @app.get("/v1/campaigns/{campaign_id}/results", response_model=ResultsOut, tags=["campaigns"])
    async def results(campaign_id: CampaignId) -> ResultsOut:
        """Public: prizes won so far (instant) or the winners in rank order once closed (ballot)."""
        view = await view_campaign(lottery(), campaign_id)
        campaign = view.campaign
        status = campaign.state(datetime.now(UTC))
        closed_at = campaign.closed_at.astimezone(zone) if campaign.closed_at else None
        if campaign.kind == INSTANT:
            out = campaign_out(view, zone)
            return ResultsOut(campaign_id=campaign_id, kind=campaign.kind, status=status, closed_at=closed_at,
                              draws=view.draws, prizes=out.prizes)  # fmt: skip
        counts = view.entries or {}
        return ResultsOut(
            campaign_id=campaign_id,
            kind=campaign.kind,
            status=status,
            closed_at=closed_at,
            seats=campaign.seats,
            entries=sum(n for s, n in counts.items() if s in ("entered", "won", "lost")),
            winners=await winners(lottery(), campaign_id) if campaign.closed_at else None,
            payments_pending=view.unsettled,
        )

    @app.get("/v1/campaigns/{campaign_id}/reveal", tags=["campaigns"])
    async def reveal(campaign_id: CampaignId) -> dict[str, Any]:
        """Public, once the campaign is over: the seed and every draw or entry, to recompute them all."""
        return (await reveal_campaign(lottery(), campaign_id)).to_json()

    return app


def campaign_out(view: CampaignView, zone: ZoneInfo) -> CampaignOut:
    c = view.campaign

    def local(moment: datetime | None) -> datetime | None:
        return None if moment is None else moment.astimezone(zone)

    prizes = None
    if c.kind == INSTANT:
        prizes = [
            PrizeOut(prize_id=p.prize_id, name=p.name, stock=p.stock, weight_ppm=p.weight_ppm,
                     points=p.points, won=view.won(p.prize_id), remaining=p.stock - view.won(p.prize_id))
            for p in c.prizes
        ]  # fmt: skip
    entries = None
    if view.entries is not None:
        entries = sum(n for s, n in view.entries.items() if s in ("entered", "won", "lost"))
    return CampaignOut(
        campaign_id=c.campaign_id,
        name=c.name,
        kind=c.kind,
        status=c.state(datetime.now(UTC)),
        cost_points=c.cost_points,
        starts_at=local(c.starts_at),
        ends_at=local(c.ends_at),
        closed_at=local(c.closed_at),
        per_member_limit=c.per_member_limit,
        per_member_daily_limit=c.per_member_daily_limit,
        seed_commitment=c.seed_commitment,
        prizes=prizes,
        draws=view.draws if c.kind == INSTANT else None,
        seats=c.seats,
        entries=entries,
    )


def draw_out(draw: Draw, campaign: Campaign, zone: ZoneInfo) -> DrawOut:
    assert draw.nonce is not None and draw.drawn_at is not None
    prize = campaign.prize(draw.prize_id) if draw.prize_id else None
    return DrawOut(
        draw_id=draw.draw_id,
        campaign_id=draw.campaign_id,
        member_id=draw.member_id,
        nonce=draw.nonce,
        client_seed=draw.client_seed,
        prize_id=draw.prize_id,
        prize_name=prize.name if prize else None,
        prize_points=draw.prize_points,
        points_spent=draw.cost_points,
        drawn_at=draw.drawn_at.astimezone(zone),
    )


def entry_out(entry: Entry, zone: ZoneInfo) -> EntryOut:
    assert entry.entered_at is not None
    return EntryOut(
        campaign_id=entry.campaign_id,
        member_id=entry.member_id,
        status=entry.status,
        points_held=entry.cost_points,
        entered_at=entry.entered_at.astimezone(zone),
    )


async def retrying(attempt: Callable[[], Awaitable[T]], attempts: int = 5) -> T:
    """Run a use case again when the database dropped it (every use case is safe to repeat)."""
    for remaining in range(attempts - 1, -1, -1):
        try:
            return await attempt()
        except TRANSIENT_DB_ERRORS:
            if remaining == 0:
                raise
            await asyncio.sleep(0.01 * (attempts - remaining))
    raise AssertionError("unreachable")


async def reconcile_forever(
    lottery: Lottery, pool: asyncpg.Pool, interval: float, stop: asyncio.Event
) -> None:
    """Finish draws and entries that a crash or an outage left half done (service_layer/reconcile.py)."""
    while not stop.is_set():
        try:
            async with pool.acquire() as conn:
                if await conn.fetchval("SELECT pg_try_advisory_lock($1)", RECONCILER_LOCK):
                    try:
                        while await reconcile_once(lottery) and not stop.is_set():
                            pass
                        await refresh_prize_gauges(lottery)
                    finally:
                        await conn.execute("SELECT pg_advisory_unlock($1)", RECONCILER_LOCK)
        except Exception:  # the database or the points service may be away for a while; try again
            log.exception("reconciling failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


def main() -> None:
    settings = LotterySettings()
    serve(create_app(settings), settings.lottery_port)
