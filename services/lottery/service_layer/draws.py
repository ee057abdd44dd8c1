"""Instant draws: hold the cost, decide the draw in one transaction, then capture.

The order, and what a crash at each step leaves behind:
1. record the request (`pending`, payment `held`) — before any hold exists, so
   that a hold can never exist that the lottery does not know about;
2. hold the cost with the points service (hold id derived from campaign and key);
3. one transaction: lock the member's participant row (nonce, limits) and the
   rolled prize's row (stock), write the draw and its event (`drawn`);
4. capture the hold, credit a prize of points, record that (`captured`).
A crash after 1 or 2 leaves a `pending` request: a retry with the same key goes on
from there, and without one the reconciler refuses it and voids its hold. A crash
after 3 leaves a `drawn` draw whose hold the reconciler captures. See
service_layer/reconcile.py for what remains when a hold expires first.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

from services.common.batching import Batcher
from services.common.points_client import PointsRejected
from services.common.points_client import PointsUnavailable as PointsDown
from services.lottery.domain import events
from services.lottery.domain.campaign import INSTANT, Campaign
from services.lottery.domain.draws import CREDIT_DUE, CREDITED, DRAWN, PENDING, REFUSED, Draw
from services.lottery.domain.errors import (
    CampaignClosed,
    IdempotencyConflict,
    LimitReached,
    LotteryError,
    PointsUnavailable,
    refusal,
)
from services.lottery.domain.fairness import roll, rolled_prize, stock_allows
from services.lottery.metrics import (
    DRAW_REFUSALS,
    DRAW_SECONDS,
    DRAWS,
    LIMIT_REJECTIONS,
    PRIZE_CREDITS,
    PRIZES_LEFT,
)
from services.lottery.service_layer import payments
from services.lottery.service_layer.context import Lottery
from services.lottery.service_layer.ports import StoredCampaign

# PointsDown is the points client's "no answer" (unreachable, timeout, 5xx); PointsUnavailable
# is the lottery's own error, the 503 it answers then.
log = logging.getLogger("loyalty.lottery.draws")


async def make_draw(
    lottery: Lottery, campaign_id: str, idempotency_key: str, member_id: str, client_seed: str
) -> Draw:
    """Draw once for a member; the same key and body again answers the same, whatever happened."""
    started = time.perf_counter()
    stored = await lottery.book.get(campaign_id)
    campaign = stored.campaign
    campaign.ensure_kind(INSTANT)
    request = Draw.requested(campaign_id, idempotency_key, member_id, client_seed, campaign.cost_points)
    try:
        await _precheck(lottery, campaign, member_id)
    except (CampaignClosed, LimitReached) as refused:
        # Refused without a hold and without recording the request, unless it is the retry of an
        # earlier one: that still gets its answer.
        async with lottery.store.connection() as repo:
            found = await repo.find_draw(campaign_id, idempotency_key)
        if found is None:
            _count_refusal(refused)
            raise
        return await _answer_again(lottery, request, found)

    # Two batches in flight where rows do not meet (new requests, their payments): less waiting.
    recording = together(lottery, "record", partial(_record_together, lottery), in_flight=2)
    earlier: Draw | None = await recording.call(_key(request), request)
    if earlier is not None:
        if earlier.status != PENDING:
            return await _answer_again(lottery, request, earlier)
        if earlier.request_sha256 != request.request_sha256:
            raise IdempotencyConflict(f"Idempotency-Key {idempotency_key!r} was used for another request")
        # A retry of a request that was interrupted, or a copy racing it: go on from where it is.

    if request.hold_id is not None:
        await _hold(lottery, request)
    try:
        draw, decided_now = await _decide(lottery, stored, request)
        if decided_now:
            _count(draw, campaign)
    except (CampaignClosed, LimitReached) as refused:
        draw = await _refuse(lottery, request, refused)
        if draw.status != DRAWN:
            raise
    if draw.status == REFUSED:
        # The reconciler gave up on this request while it waited for its hold, and may have voided
        # the hold before it was placed: void it again, nothing will ever capture it.
        await _void_quietly(lottery, request)
        return await _answer_again(lottery, request, draw)
    draw = await settle_draw(lottery, draw)
    DRAW_SECONDS.observe(time.perf_counter() - started)
    return draw


async def _precheck(lottery: Lottery, campaign: Campaign, member_id: str) -> None:
    """Refuse early what is sure to be refused, before holding points: it is decided again under lock."""
    now = lottery.clock()
    campaign.ensure_open(now)
    if campaign.per_member_limit is None and campaign.per_member_daily_limit is None:
        return
    async with lottery.store.connection() as repo:
        participant = await repo.find_participant(campaign.campaign_id, member_id)
    if participant is not None:
        participant.ensure_may_draw(campaign, lottery.business_day(now))


async def _hold(lottery: Lottery, request: Draw) -> None:
    assert request.hold_id is not None
    try:
        await lottery.points.hold(
            request.hold_id,
            request.member_id,
            request.cost_points,
            f"lottery draw {request.campaign_id}",
            lottery.draw_hold_ttl_seconds,
        )
    except PointsRejected as rejected:
        error = payments.hold_refused(rejected, request.member_id, request.cost_points)
        await _refuse(lottery, request, error)
        raise error from None
    except PointsDown as down:
        # The hold may or may not exist: the request stays pending, to be retried with the same key
        # (the hold is idempotent) or, if nobody does, refused and voided by the reconciler.
        raise PointsUnavailable(
            f"the points service is unavailable ({down}); retry with the same Idempotency-Key"
        ) from down


async def _decide(lottery: Lottery, stored: StoredCampaign, request: Draw) -> tuple[Draw, bool]:
    """The draw itself; raises CampaignClosed or LimitReached to refuse it.

    Returns the draw and whether it was decided now (rather than by a copy of this request).
    Draws of one campaign requested while its previous batch is being decided are decided
    together, in one transaction (see _decide_together).
    """
    deciding = together(lottery, f"decide {request.campaign_id}", partial(_decide_together, lottery))
    answer: tuple[Draw, bool] = await deciding.call(request.idempotency_key, (stored, request))
    return answer


async def _decide_together(
    lottery: Lottery, batch: Sequence[tuple[StoredCampaign, Draw]]
) -> dict[Hashable, tuple[Draw, bool] | BaseException]:
    """Decide draws of one campaign in one transaction, in the order requested, each exactly as
    it would be decided alone: the campaign, then the draws, the participants and the prizes
    are locked in that order (and each in key order), so no interleaving can pass a limit or a
    prize's stock, and the n-th draw to roll a prize is numbered n.
    """
    stored, requests = batch[0][0], [request for _, request in batch]
    campaign_id = stored.campaign.campaign_id
    answers: dict[Hashable, tuple[Draw, bool] | BaseException] = {}
    async with lottery.store.transaction() as repo:
        closed_at = await repo.lock_campaign_shared(campaign_id)
        campaign = stored.campaign.closed(closed_at, None) if closed_at else stored.campaign
        now = lottery.clock()  # read after the lock: a close or a reveal either waits for us or we see it
        try:
            campaign.ensure_open(now)
        except CampaignClosed as closed:
            return {request.idempotency_key: CampaignClosed(str(closed)) for request in requests}
        current = await repo.lock_draws(campaign_id, [request.idempotency_key for request in requests])
        pending = []
        for request in requests:
            if current[request.idempotency_key].status == PENDING:
                pending.append(request)
            else:  # a copy of this request, or the reconciler, decided it first
                answers[request.idempotency_key] = (current[request.idempotency_key], False)
        participants = await repo.lock_participants(campaign_id, [r.member_id for r in pending])
        today = lottery.business_day(now)
        rolled: list[tuple[Draw, int, str | None]] = []
        for request in pending:
            try:
                nonce = participants[request.member_id].next_nonce(campaign, today)
            except LimitReached as refused:
                answers[request.idempotency_key] = refused
                continue
            u = roll(stored.server_seed, campaign_id, request.member_id, nonce, request.client_seed)
            rolled.append((current[request.idempotency_key], nonce, rolled_prize(u, campaign.prizes)))
        rolls = Counter(prize_id for _, _, prize_id in rolled if prize_id is not None)
        taken = await repo.take_prize_rolls(campaign_id, dict(rolls)) if rolls else {}
        next_seq = {prize_id: taken[prize_id] - count + 1 for prize_id, count in rolls.items()}
        drawn: list[Draw] = []
        for draw, nonce, prize_rolled in rolled:
            prize_id = prize_seq = prize_points = None
            if prize_rolled is not None:
                prize, prize_seq = campaign.prize(prize_rolled), next_seq[prize_rolled]
                next_seq[prize_rolled] += 1
                if stock_allows(prize_seq, prize.stock):
                    prize_id, prize_points = prize.prize_id, prize.points
            drawn.append(draw.drawn(nonce, prize_id, prize_seq, prize_points, now))
            answers[draw.idempotency_key] = (drawn[-1], True)
        if drawn:
            members = {draw.member_id for draw in drawn}
            await repo.save_drawn(
                drawn,
                [participant for member_id, participant in participants.items() if member_id in members],
                [events.draw_made(draw) for draw in drawn],
            )
    return answers


async def _refuse(lottery: Lottery, request: Draw, error: LotteryError) -> Draw:
    """Record why a request was refused (a retry gets the same answer) and give its hold back.

    The hold is voided even when the points service refused to place it: a copy of the same
    request may have placed it meanwhile, and voiding a hold that does not exist is harmless.
    """
    async with lottery.store.connection() as repo:
        current = await repo.save_refused(request.refused(error.code, str(error)))
    if current.status != REFUSED:
        return current
    if current.error == error.code:
        _count_refusal(error)
    return await settle_draw(lottery, current)


async def _void_quietly(lottery: Lottery, request: Draw) -> None:
    if request.hold_id is not None:
        try:
            await payments.void(lottery.points, request.hold_id)
        except PointsDown as down:
            log.warning("hold %s of a refused draw expires by itself: %s", request.hold_id, down)


def _count_refusal(error: LotteryError) -> None:
    DRAW_REFUSALS.labels(error.code).inc()
    if isinstance(error, LimitReached):
        LIMIT_REJECTIONS.labels(error.limit).inc()


async def _answer_again(lottery: Lottery, request: Draw, earlier: Draw) -> Draw:
    if earlier.request_sha256 != request.request_sha256:
        raise IdempotencyConflict(f"Idempotency-Key {request.idempotency_key!r} was used for another request")
    if earlier.status == REFUSED:
        await settle_draw(lottery, earlier)
        raise refusal(earlier.error or "refused", earlier.detail or "")
    return await settle_draw(lottery, earlier)


async def settle_draw(lottery: Lottery, draw: Draw) -> Draw:
    """Capture a drawn draw's hold (void a refused one's), credit a prize of points; record it.

    When the points service is away, the draw is left as it is for the reconciler.
    """
    settled = draw
    try:
        if draw.capture_due:
            assert draw.hold_id is not None
            payment = await payments.capture(
                lottery.points,
                draw.hold_id,
                draw.member_id,
                draw.cost_points,
                f"lottery draw {draw.campaign_id}",
            )
            settled = replace(settled, payment=payment)
        elif draw.void_due:
            assert draw.hold_id is not None
            settled = replace(settled, payment=await payments.void(lottery.points, draw.hold_id))
        if settled.prize_credit == CREDIT_DUE:
            assert settled.prize_points is not None
            await lottery.points.credit(
                settled.credit_id,
                settled.member_id,
                settled.prize_points,
                f"lottery prize {settled.campaign_id}/{settled.prize_id}",
            )
            PRIZE_CREDITS.inc()
            settled = replace(settled, prize_credit=CREDITED)
    except PointsDown as down:
        log.warning("settling draw %s later: %s", draw.draw_id, down)
    except PointsRejected as rejected:
        log.error("settling draw %s: the points service refused: %s", draw.draw_id, rejected)
    if settled != draw:
        saving = together(lottery, "settle", partial(_save_settlements_together, lottery), in_flight=2)
        await saving.call(_key(settled), settled)
    return settled


def together(
    lottery: Lottery, step: str, send: Callable[[Sequence[Any]], Awaitable[Any]], in_flight: int = 1
) -> Batcher[Any, Any]:
    """The batcher of one step: requests making it while its last batch is in flight go together.

    A campaign-day burst of draws then costs a few statements and commits per step, not one each.
    """
    batcher = lottery.batchers.get(step)
    if batcher is None:
        batcher = lottery.batchers[step] = Batcher(send, size=500, in_flight=in_flight)
    return batcher


async def _record_together(lottery: Lottery, requests: Sequence[Draw]) -> dict[Hashable, Draw | None]:
    async with lottery.store.connection() as repo:
        earlier = await repo.insert_draws(requests)
    return {_key(request): found for request, found in zip(requests, earlier, strict=True)}


async def _save_settlements_together(lottery: Lottery, draws: Sequence[Draw]) -> dict[Hashable, None]:
    async with lottery.store.connection() as repo:
        await repo.save_draw_settlement(draws)
    return dict.fromkeys((_key(draw) for draw in draws), None)


def _key(draw: Draw) -> tuple[str, str]:
    return draw.campaign_id, draw.idempotency_key


def _count(draw: Draw, campaign: Campaign) -> None:
    if draw.prize_id is not None:
        DRAWS.labels("won").inc()
        assert draw.prize_seq is not None
        left = campaign.prize(draw.prize_id).stock - draw.prize_seq
        PRIZES_LEFT.labels(draw.campaign_id, draw.prize_id).set(max(left, 0))
    elif draw.prize_seq is not None:
        DRAWS.labels("stock_gone").inc()
    else:
        DRAWS.labels("no_prize").inc()
