"""Everything a lottery use case works with, built once by the entrypoint."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from services.common.batching import Batcher
from services.lottery.domain.campaign import Campaign
from services.lottery.domain.errors import UnknownCampaign
from services.lottery.service_layer.ports import PointsPort, Store, StoredCampaign


def utc_now() -> datetime:
    return datetime.now(UTC)


class CampaignBook:
    """Campaign definitions by id, read once: after creation only `closed_at` changes.

    A cached definition may not know yet that another replica closed the campaign;
    every decision that depends on it re-reads `closed_at` under the campaign lock.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._known: dict[str, StoredCampaign] = {}

    async def get(self, campaign_id: str) -> StoredCampaign:
        found = self._known.get(campaign_id)
        if found is None:
            async with self._store.connection() as repo:
                found = await repo.find_campaign(campaign_id)
            if found is None:
                raise UnknownCampaign(f"no campaign {campaign_id!r}")
            self._known[campaign_id] = found
        return found

    def remember(self, campaign: Campaign) -> None:
        stored = self._known.get(campaign.campaign_id)
        if stored is not None and stored.campaign != campaign:
            self._known[campaign.campaign_id] = replace(stored, campaign=campaign)


@dataclass
class Lottery:
    store: Store
    points: PointsPort
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    # A draw's hold must outlive any outage the reconciler is expected to ride out.
    draw_hold_ttl_seconds: int = 3600
    # An entry's hold lasts until the ballot closes: the longest the points API allows.
    entry_hold_ttl_seconds: int = 7 * 86400
    # A request still pending after this long was interrupted; the reconciler undoes it.
    abandon_after_seconds: float = 60.0
    # The request path settles its own draws; the reconciler leaves them this long first.
    settle_grace_seconds: float = 5.0
    settle_concurrency: int = 16  # the points gateway bounds the calls in flight anyway
    clock: Callable[[], datetime] = utc_now
    book: CampaignBook = field(init=False)
    settling: set[str] = field(default_factory=set)  # ballots this process is settling right now
    # Draw requests waiting to be recorded, decided or settled together, by step (and campaign):
    # see together() in service_layer/draws.py.
    batchers: dict[str, Batcher[Any, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.book = CampaignBook(self.store)

    def business_day(self, moment: datetime) -> date:
        return moment.astimezone(self.timezone).date()
