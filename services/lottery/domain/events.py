"""Events the lottery publishes on lottery.draws.v1 (keyed by member_id where there is one)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.lottery.domain.campaign import Campaign
from services.lottery.domain.draws import Draw, Entry


@dataclass(frozen=True, slots=True)
class Event:
    """One event, written to the outbox in the same transaction as the change it reports."""

    key: str | None
    payload: dict[str, Any]


def draw_made(draw: Draw) -> Event:
    assert draw.drawn_at is not None
    return Event(draw.member_id, {
        "event_id": f"draw:{draw.draw_id}", "type": "draw", "campaign_id": draw.campaign_id,
        "draw_id": draw.draw_id, "member_id": draw.member_id, "nonce": draw.nonce,
        "client_seed": draw.client_seed, "prize_id": draw.prize_id, "prize_points": draw.prize_points,
        "points_spent": draw.cost_points, "drawn_at": draw.drawn_at.isoformat(),
    })  # fmt: skip


def entry_made(entry: Entry) -> Event:
    assert entry.entered_at is not None
    return Event(entry.member_id, {
        "event_id": f"entry:{entry.campaign_id}:{entry.member_id}", "type": "ballot_entry",
        "campaign_id": entry.campaign_id, "member_id": entry.member_id,
        "points_held": entry.cost_points, "entered_at": entry.entered_at.isoformat(),
    })  # fmt: skip


def ballot_result(campaign: Campaign, member_id: str, rank: int, won: bool) -> Event:
    return Event(member_id, {
        "event_id": f"result:{campaign.campaign_id}:{member_id}", "type": "ballot_result",
        "campaign_id": campaign.campaign_id, "member_id": member_id, "rank": rank, "won": won,
    })  # fmt: skip


def campaign_closed(campaign: Campaign, entries: int | None = None, winners: int | None = None) -> Event:
    assert campaign.closed_at is not None
    payload: dict[str, Any] = {
        "event_id": f"closed:{campaign.campaign_id}", "type": "campaign_closed",
        "campaign_id": campaign.campaign_id, "kind": campaign.kind,
        "closed_at": campaign.closed_at.isoformat(),
    }  # fmt: skip
    if entries is not None:
        payload.update(entries=entries, winners=winners, public_entropy=campaign.public_entropy or "")
    return Event(None, payload)
