"""Settings of the redemption service."""

from __future__ import annotations

from pydantic import Field

from services.common.settings import LoyaltySettings


class RedemptionSettings(LoyaltySettings):
    # Long enough for the reconciler to finish an order a crash interrupted, short enough
    # that a forgotten hold does not keep a member's points for long.
    hold_ttl_seconds: int = Field(default=120, ge=10, le=3600)
    # A process that has not beaten for this long is taken for dead; its pending orders are reconciled.
    reconcile_after_seconds: float = Field(default=5.0, ge=0.5)
    reconcile_interval_seconds: float = Field(default=2.0, ge=0.1)

    def resolved_points_url(self) -> str:
        return self.points_url or f"http://127.0.0.1:{self.points_port}"
