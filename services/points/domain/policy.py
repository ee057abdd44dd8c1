"""The earning policy: how many points a billing event is worth and when they expire."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from services.points.domain.events import TIERS, BillingEvent

DEFAULT_POLICY_FILE = Path(__file__).resolve().parent.parent / "policy.toml"


@dataclass(frozen=True)
class EarningPolicy:
    multiplier_per_mille: dict[str, int]
    fixed_points: dict[str, int]
    fen_per_unit: int
    timezone: ZoneInfo
    years_valid_after: int
    # When each year begins in the policy's zone, as a UTC instant: expiry_for runs once per
    # event, and a UTC datetime is cheap to compare and to hash as a lot's key.
    _year_starts: dict[int, datetime] = field(default_factory=dict, compare=False, repr=False)

    def points_for_amount(self, amount_fen: int, tier: str) -> int:
        """Points for a non-negative amount: whole units first, then the tier multiplier."""
        units = abs(amount_fen) // self.fen_per_unit
        return units * self.multiplier_per_mille[tier] // 1000

    def points_for(self, event: BillingEvent) -> int:
        """Signed points of an event: positive accrues, negative claws back."""
        if event.type in self.fixed_points:
            return self.fixed_points[event.type]
        assert event.amount_fen is not None
        points = self.points_for_amount(event.amount_fen, event.tier)
        return -points if event.amount_fen < 0 else points

    def expiry_for(self, moment: datetime) -> datetime:
        """The end of year Y + years_valid_after, Y being `moment`'s year in the policy's zone
        (as a UTC instant)."""
        year = moment.year  # in the moment's own offset: the zone's year is this one or a neighbour
        if moment >= self._year_start(year + 1):
            year += 1
        elif moment < self._year_start(year):
            year -= 1
        return self._year_start(year + self.years_valid_after + 1)

    def _year_start(self, year: int) -> datetime:
        start = self._year_starts.get(year)
        if start is None:
            start = self._year_starts[year] = datetime(year, 1, 1, tzinfo=self.timezone).astimezone(UTC)
        return start


def load_policy(path: Path | None = None) -> EarningPolicy:
    """Read and check a policy file; a bad file fails at start, with the file named."""
    path = path or DEFAULT_POLICY_FILE
    with path.open("rb") as f:
        raw: dict[str, Any] = tomllib.load(f)
    try:
        multipliers = {tier: int(raw["multiplier_per_mille"][tier]) for tier in TIERS}
        fixed = {kind: int(raw["fixed_points"][kind]) for kind in ("contract_renewed", "service_activated")}
        fen_per_unit = int(raw["amounts"]["fen_per_unit"])
        timezone = ZoneInfo(str(raw["expiry"]["timezone"]))
        years = int(raw["expiry"]["years_valid_after"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"earning policy {path}: missing or invalid setting {exc}") from None
    if fen_per_unit <= 0 or years < 0 or any(v < 0 for v in [*multipliers.values(), *fixed.values()]):
        raise ValueError(f"earning policy {path}: amounts and multipliers must not be negative")
    return EarningPolicy(multipliers, fixed, fen_per_unit, timezone, years)
