"""Settings of the lottery service."""

from __future__ import annotations

from pydantic import Field

from services.common.settings import LoyaltySettings


class LotterySettings(LoyaltySettings):
    # A draw's hold outlives any outage the reconciler should ride out (see service_layer/reconcile.py).
    lottery_draw_hold_ttl_seconds: int = Field(default=3600, ge=60, le=7 * 86400)
    lottery_reconcile_interval_seconds: float = Field(default=2.0, gt=0, le=3600)
    # A request pending this long was interrupted: its hold is given back.
    lottery_abandon_after_seconds: float = Field(default=60.0, ge=1, le=86400)
    lottery_settle_grace_seconds: float = Field(default=5.0, ge=0, le=3600)
    lottery_db_pool_size: int = Field(default=20, ge=2, le=200)
    # Calls to the points API in flight at once (see adapters/points.py).
    lottery_points_concurrency: int = Field(default=8, ge=1, le=200)

    def resolved_points_url(self) -> str:
        return self.points_url or f"http://127.0.0.1:{self.points_port}"
