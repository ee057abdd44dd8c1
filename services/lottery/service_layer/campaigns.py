"""Use cases of campaign admin and the public views of a campaign: info, results, reveal."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from dataclasses import asdict, dataclass, replace

from services.lottery.domain import events
from services.lottery.domain.campaign import BALLOT, INSTANT, Campaign
from services.lottery.domain.errors import (
    AlreadyClosed,
    CampaignExists,
    InvalidRequest,
    NotRevealed,
    UnknownCampaign,
)
from services.lottery.domain.fairness import SEED_BYTES, rank_entries, seed_commitment
from services.lottery.domain.reveal import Reveal
from services.lottery.metrics import BALLOTS_CLOSED_SECONDS, PRIZES_LEFT
from services.lottery.service_layer.context import Lottery
from services.lottery.service_layer.ports import StoredCampaign


def definition_fingerprint(campaign: Campaign) -> bytes:
    """What makes two creation requests "the same campaign": everything but the seed."""
    body = asdict(replace(campaign, seed_commitment="", closed_at=None, public_entropy=None))
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).digest()


async def create_campaign(lottery: Lottery, definition: Campaign) -> tuple[Campaign, bool]:
    """Make a campaign with a fresh secret seed; the same definition again returns the first one.

    Returns the campaign (with its seed commitment) and whether it was created now.
    """
    definition.validate()
    fingerprint = definition_fingerprint(definition)
    server_seed = secrets.token_bytes(SEED_BYTES)
    campaign = replace(definition, seed_commitment=seed_commitment(server_seed), closed_at=None)
    async with lottery.store.transaction() as repo:
        created = await repo.insert_campaign(StoredCampaign(campaign, server_seed, fingerprint))
        if created:
            for prize in campaign.prizes:
                PRIZES_LEFT.labels(campaign.campaign_id, prize.prize_id).set(prize.stock)
            return campaign, True
        existing = await repo.find_campaign(campaign.campaign_id)
    assert existing is not None
    if existing.definition_sha256 != fingerprint:
        raise CampaignExists(f"campaign {campaign.campaign_id!r} exists with another definition")
    return existing.campaign, False


@dataclass(frozen=True)
class Closure:
    campaign: Campaign
    entries: int | None = None  # ballots
    winners: int | None = None


async def close_campaign(lottery: Lottery, campaign_id: str, public_entropy: str | None) -> Closure:
    """End a campaign now. A ballot ranks its entries and fixes its winners in the same transaction.

    Closing again answers the same; a ballot closed with other public entropy cannot be redrawn.
    """
    stored = await lottery.book.get(campaign_id)
    definition = stored.campaign
    if definition.kind == INSTANT and public_entropy is not None:
        raise InvalidRequest("public_entropy: only a ballot's ranking uses public entropy")
    entropy = (public_entropy or "") if definition.kind == BALLOT else None
    started = asyncio.get_running_loop().time()
    async with lottery.store.transaction() as repo:
        closed_at, closed_entropy = await repo.lock_campaign_exclusive(campaign_id)
        if closed_at is not None:
            campaign = definition.closed(closed_at, closed_entropy)
            if definition.kind == BALLOT and (closed_entropy or "") != entropy:
                raise AlreadyClosed(f"ballot {campaign_id!r} was closed with other public entropy")
            lottery.book.remember(campaign)
            return await _closure(lottery, campaign)
        campaign = definition.closed(lottery.clock(), entropy)
        if campaign.kind == INSTANT:
            await repo.close_campaign(campaign, [events.campaign_closed(campaign)])
            closure = Closure(campaign)
        else:
            assert campaign.seats is not None
            ranked = rank_entries(
                stored.server_seed, entropy or "", campaign_id, await repo.entered_members(campaign_id)
            )
            await repo.save_ballot_results(campaign_id, ranked, campaign.seats)
            winners = min(campaign.seats, len(ranked))
            results = [
                events.ballot_result(campaign, member_id, rank, rank <= campaign.seats)
                for rank, member_id in enumerate(ranked, start=1)
            ]
            await repo.close_campaign(
                campaign, [*results, events.campaign_closed(campaign, len(ranked), winners)]
            )
            closure = Closure(campaign, len(ranked), winners)
    if campaign.kind == BALLOT:
        BALLOTS_CLOSED_SECONDS.observe(asyncio.get_running_loop().time() - started)
    lottery.book.remember(campaign)
    return closure


async def _closure(lottery: Lottery, campaign: Campaign) -> Closure:
    if campaign.kind == INSTANT:
        return Closure(campaign)
    async with lottery.store.connection() as repo:
        counts = await repo.entry_counts(campaign.campaign_id)
    return Closure(campaign, counts.get("won", 0) + counts.get("lost", 0), counts.get("won", 0))


@dataclass(frozen=True)
class CampaignView:
    campaign: Campaign
    rolls: dict[str, int]  # instant: how many draws rolled each prize (the first `stock` won it)
    draws: int = 0
    entries: dict[str, int] | None = None  # ballots: entries by status
    unsettled: int = 0  # ballots: closed, but the hold not captured or voided yet

    def won(self, prize_id: str) -> int:
        return min(self.rolls.get(prize_id, 0), self.campaign.prize(prize_id).stock)


async def view_campaign(lottery: Lottery, campaign_id: str) -> CampaignView:
    """The campaign as anyone may see it: definition, state, stock left, how many took part."""
    async with lottery.store.transaction() as repo:
        current = await repo.find_campaign(campaign_id)
        if current is None:
            raise UnknownCampaign(f"no campaign {campaign_id!r}")
        campaign = current.campaign
        if campaign.kind == INSTANT:
            rolls = await repo.prize_rolls(campaign_id)
            view = CampaignView(campaign, rolls, draws=await repo.draw_count(campaign_id))
        else:
            view = CampaignView(
                campaign,
                {},
                entries=await repo.entry_counts(campaign_id),
                unsettled=await repo.unsettled_entry_count(campaign_id),
            )
    lottery.book.remember(campaign)
    return view


async def winners(lottery: Lottery, campaign_id: str) -> list[str]:
    async with lottery.store.connection() as repo:
        return await repo.winners(campaign_id)


async def reveal_campaign(lottery: Lottery, campaign_id: str) -> Reveal:
    """The seed and every outcome, once nothing can change any more (409 not_revealed before)."""
    async with lottery.store.connection() as repo:
        current = await repo.find_campaign(campaign_id)
    if current is None:
        raise UnknownCampaign(f"no campaign {campaign_id!r}")
    campaign = current.campaign
    if not campaign.revealable(lottery.clock()):
        raise NotRevealed(
            f"campaign {campaign_id!r} is not over yet; its seed is revealed "
            + ("once it is closed" if campaign.kind == BALLOT else "once it ends or is closed")
        )
    async with lottery.store.transaction() as repo:
        if campaign.closed_at is None:
            # Over by the clock only: wait for draws that started before the end to commit (they
            # hold this lock shared; any draw after it finds the campaign ended).
            await repo.lock_campaign_exclusive(campaign_id)
        if campaign.kind == INSTANT:
            draws = await repo.revealed_draws(campaign_id)
            entries = []
        else:
            draws, entries = [], await repo.revealed_entries(campaign_id)
    return Reveal(
        campaign_id=campaign.campaign_id,
        kind=campaign.kind,
        seed_commitment=campaign.seed_commitment,
        server_seed=current.server_seed,
        timezone=lottery.timezone.key,
        prizes=campaign.prizes,
        seats=campaign.seats,
        per_member_limit=campaign.per_member_limit,
        per_member_daily_limit=campaign.per_member_daily_limit,
        public_entropy=campaign.public_entropy,
        draws=tuple(draws),
        entries=tuple(entries),
    )
