"""An independent reading of CONTRACT.md §2's earning policy, to check the ledger against.

Deliberately written from the contract alone, without the services' code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")
MULTIPLIER = {"standard": 1000, "silver": 1200, "gold": 1500, "diamond": 2000}
FIXED = {"contract_renewed": 500, "service_activated": 200}


@dataclass
class Expected:
    tier: str = "standard"
    lots: dict[int, int] = field(default_factory=dict)  # last valid year -> points
    debt: int = 0

    @property
    def available(self) -> int:
        return sum(self.lots.values())


def apply(state: Expected, event: dict[str, Any]) -> None:
    state.tier = event.get("tier") or "standard"
    if event["type"] in FIXED:
        earn(state, FIXED[event["type"]], event["occurred_at"])
        return
    amount = event["amount_fen"]
    points = (abs(amount) // 100) * MULTIPLIER[state.tier] // 1000
    if amount >= 0:
        earn(state, points, event["occurred_at"])
    else:
        for year in sorted(state.lots):
            taken = min(points, state.lots[year])
            state.lots[year] -= taken
            points -= taken
        state.debt += points
        state.lots = {y: p for y, p in state.lots.items() if p}


def earn(state: Expected, points: int, occurred_at: str) -> None:
    repaid = min(state.debt, points)
    state.debt -= repaid
    if points - repaid:
        year = datetime.fromisoformat(occurred_at).astimezone(SHANGHAI).year + 1
        state.lots[year] = state.lots.get(year, 0) + points - repaid


def expected_ledger(valid_events_in_order: list[dict[str, Any]]) -> dict[str, Expected]:
    """Members' expected state after the first occurrence of each event_id, in order."""
    members: dict[str, Expected] = {}
    seen: set[str] = set()
    for event in valid_events_in_order:
        if event["event_id"] in seen:
            continue
        seen.add(event["event_id"])
        apply(members.setdefault(event["member_id"], Expected()), event)
    return members


def last_valid_year(expires_at: datetime) -> int:
    """The year a lot is valid through: the instant it expires is the start of the next year."""
    return (expires_at.astimezone(SHANGHAI).replace(tzinfo=None)).year - 1
