"""The reconciler: finishes what a crash or an outage of the points service left half done.

It runs in every lottery API process (one pass at a time across processes) and:
- refuses draws and entries still `pending` after `abandon_after_seconds` (their
  request died between recording it and deciding it) and voids their holds;
- captures the holds of `drawn` draws, voids those of `refused` ones, credits
  prizes of points still due;
- captures the winners' and voids the losers' holds of closed ballots.

The residual case: a `drawn` draw (or a ballot winner) whose hold expired before
anyone could capture it — the lottery or the points service was away for longer
than the hold's ttl (1 hour for draws, 7 days for entries). The draw stands, so
the cost is charged afresh with a new hold; if the member no longer has the points
the payment is recorded `unpaid`, logged and counted in
loyalty_lottery_payments_total{action="unpaid"} for someone to follow up.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from services.lottery.domain.draws import CAPTURED, CREDITED, VOIDED, Draw
from services.lottery.metrics import PRIZES_LEFT, RECONCILED
from services.lottery.service_layer.ballots import settle_ballot, undo_refused_entry
from services.lottery.service_layer.context import Lottery
from services.lottery.service_layer.draws import settle_draw

log = logging.getLogger("loyalty.lottery.reconcile")

BATCH = 500


async def reconcile_once(lottery: Lottery) -> int:
    """One pass; return how many draws and entries it finished."""
    now = lottery.clock()
    abandoned = now - timedelta(seconds=lottery.abandon_after_seconds)
    left_alone = now - timedelta(seconds=lottery.settle_grace_seconds)
    async with lottery.store.connection() as repo:
        refused_draws = await repo.abandon_pending_draws(abandoned, BATCH)
        refused_entries = await repo.abandon_pending_entries(abandoned, BATCH)
        draws = await repo.draws_to_settle(left_alone, BATCH)
        undo = await repo.refused_entries(left_alone, BATCH)
        entries = [
            e for e in await repo.entries_to_settle(None, BATCH) if e.campaign_id not in lottery.settling
        ]
    if refused_draws or refused_entries:
        log.warning("refused %d draws and %d entries interrupted before they were decided",
                    refused_draws, refused_entries)  # fmt: skip
        RECONCILED.labels("abandoned").inc(refused_draws + refused_entries)

    gate = asyncio.Semaphore(lottery.settle_concurrency)

    async def settle(draw: Draw) -> bool:
        async with gate:
            after = await settle_draw(lottery, draw)
        for action, done in (
            ("captured", after.payment == CAPTURED and draw.payment != CAPTURED),
            ("voided", after.payment == VOIDED and draw.payment != VOIDED),
            ("credited", after.prize_credit == CREDITED and draw.prize_credit != CREDITED),
        ):
            if done:
                RECONCILED.labels(action).inc()
        return after != draw

    finished = sum(await asyncio.gather(*(settle(d) for d in draws)))
    undone = [await undo_refused_entry(lottery, entry) for entry in undo]
    settled = await settle_ballot(lottery, entries)
    if settled:
        RECONCILED.labels("ballot_settled").inc(settled)
    return finished + sum(undone) + settled


async def refresh_prize_gauges(lottery: Lottery) -> None:
    """Every replica exports the same stock left, whoever made the draws."""
    async with lottery.store.connection() as repo:
        for campaign_id, prize_id, left in await repo.prizes_left():
            PRIZES_LEFT.labels(campaign_id, prize_id).set(left)
