"""Ballot entries: one per member, the cost held until the ballot is closed.

The same three steps as a draw (record, hold, commit in one transaction); at close
the winners' holds are captured and everyone else's voided (`settle_ballot`).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Sequence
from dataclasses import replace

from services.common.points_client import PointsRejected
from services.common.points_client import PointsUnavailable as PointsDown
from services.lottery.domain import events
from services.lottery.domain.campaign import BALLOT
from services.lottery.domain.draws import ENTERED, PENDING, REFUSED, WON, Entry
from services.lottery.domain.errors import (
    AlreadyEntered,
    CampaignClosed,
    EntryInterrupted,
    LotteryError,
    PointsUnavailable,
    refusal,
)
from services.lottery.metrics import BALLOT_ENTRIES
from services.lottery.service_layer import payments
from services.lottery.service_layer.context import Lottery

# PointsDown is the points client's "no answer" (unreachable, timeout, 5xx); PointsUnavailable
# is the lottery's own error, the 503 it answers then.
log = logging.getLogger("loyalty.lottery.ballots")

# Holds settled in one call to the points service: its most (POST /v1/holds/settle).
SETTLE_CHUNK = 1000


async def enter_ballot(lottery: Lottery, campaign_id: str, member_id: str) -> Entry:
    """Enter a member into a ballot and hold its cost; a second entry is refused (already_entered)."""
    stored = await lottery.book.get(campaign_id)
    campaign = stored.campaign
    campaign.ensure_kind(BALLOT)
    try:
        campaign.ensure_open(lottery.clock())
    except CampaignClosed:
        async with lottery.store.connection() as repo:
            earlier = await repo.find_entry(campaign_id, member_id)
        _refuse_second_entry(earlier)
        raise

    request = Entry.requested(campaign_id, member_id, campaign.cost_points, attempt=secrets.token_hex(4))
    async with lottery.store.connection() as repo:
        earlier = await repo.insert_entry(request)
    if earlier is not None:
        _refuse_second_entry(earlier)
        request = earlier  # an interrupted attempt, or a copy racing this one: go on with its hold

    if request.hold_id is not None:
        await _hold(lottery, request)
    try:
        async with lottery.store.transaction() as repo:
            closed_at = await repo.lock_campaign_shared(campaign_id)
            now = lottery.clock()
            (campaign.closed(closed_at, None) if closed_at else campaign).ensure_open(now)
            current = await repo.lock_entry(campaign_id, member_id)
            if current is None or current.hold_id != request.hold_id:
                raise EntryInterrupted("this entry attempt was interrupted and undone; enter again")
            _refuse_second_entry(current)
            entry = replace(current, status=ENTERED, entered_at=now)
            await repo.save_entered(entry, events.entry_made(entry))
    except CampaignClosed as closed:
        await _refuse(lottery, request, closed)
        raise
    except EntryInterrupted:
        # Undone by the reconciler, perhaps before this hold was placed: nothing will capture it.
        if request.hold_id is not None:
            with contextlib.suppress(PointsDown):
                await payments.void(lottery.points, request.hold_id)
        raise
    BALLOT_ENTRIES.inc()
    return entry


def _refuse_second_entry(earlier: Entry | None) -> None:
    if earlier is None or earlier.status == PENDING:
        return
    if earlier.status == REFUSED:
        # Its hold is being given back; once it is, the member may enter again.
        raise refusal(earlier.error or "refused", f"{earlier.detail} (the entry is being undone; try again)")
    raise AlreadyEntered(f"{earlier.member_id} has already entered ballot {earlier.campaign_id!r}")


async def _hold(lottery: Lottery, entry: Entry) -> None:
    assert entry.hold_id is not None
    try:
        await lottery.points.hold(
            entry.hold_id,
            entry.member_id,
            entry.cost_points,
            f"lottery ballot {entry.campaign_id}",
            lottery.entry_hold_ttl_seconds,
        )
    except PointsRejected as rejected:
        error = payments.hold_refused(rejected, entry.member_id, entry.cost_points)
        await _refuse(lottery, entry, error)
        raise error from None
    except PointsDown as down:
        raise PointsUnavailable(f"the points service is unavailable ({down}); try again") from down


async def _refuse(lottery: Lottery, entry: Entry, error: LotteryError) -> None:
    async with lottery.store.connection() as repo:
        current = await repo.save_refused_entry(replace(entry, status=REFUSED, error=error.code,
                                                        detail=str(error)))  # fmt: skip
    if current is not None and current.status == REFUSED:
        await undo_refused_entry(lottery, current)


async def undo_refused_entry(lottery: Lottery, entry: Entry) -> bool:
    """Void a refused entry's hold, then forget the entry so the member may try again."""
    try:
        if entry.hold_id is not None:
            await payments.void(lottery.points, entry.hold_id)
    except PointsDown as down:
        log.warning("voiding refused entry %s/%s later: %s", entry.campaign_id, entry.member_id, down)
        return False
    async with lottery.store.connection() as repo:
        await repo.delete_refused_entry(entry)
    return True


async def settle_ballot(lottery: Lottery, entries: Sequence[Entry]) -> int:
    """Capture the winners' holds and void the others', a thousand to a call to the points
    service; return how many were settled now."""
    due = [e for e in entries if e.settle_due]
    settled: list[Entry] = []
    for start in range(0, len(due), SETTLE_CHUNK):
        chunk = due[start : start + SETTLE_CHUNK]
        charges, voids = [], []
        for entry in chunk:
            assert entry.hold_id is not None
            if entry.status == WON:
                reason = f"lottery ballot {entry.campaign_id}"
                charges.append(payments.Charge(entry.hold_id, entry.member_id, entry.cost_points, reason))
            else:
                voids.append(entry.hold_id)
        try:
            outcome = await payments.settle_many(lottery.points, charges, voids)
        except (PointsDown, PointsRejected) as failed:
            log.warning("settling %d ballot entries later: %s", len(chunk), failed)
            break
        settled += [replace(e, payment=outcome[e.hold_id]) for e in chunk if e.hold_id in outcome]
    if settled:
        async with lottery.store.connection() as repo:
            await repo.save_entry_settlement(settled)
    return len(settled)


async def settle_closed_ballot(lottery: Lottery, campaign_id: str, chunk: int = 1000) -> int:
    """Settle every entry of a closed ballot, a chunk at a time; return how many."""
    total = 0
    while True:
        async with lottery.store.connection() as repo:
            due = await repo.entries_to_settle(campaign_id, chunk)
        if not due:
            return total
        settled = await settle_ballot(lottery, due)
        total += settled
        if settled < len(due):
            return total  # the points service is struggling: the reconciler takes over
