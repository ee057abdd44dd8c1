"""Settings of the points service (worker and API)."""

from __future__ import annotations

from datetime import time
from pathlib import Path

from pydantic import Field

from services.common.settings import LoyaltySettings


class PointsSettings(LoyaltySettings):
    policy_file: Path | None = None
    consumer_group: str = "loyalty-points"
    ingest_batch_max: int = Field(default=5000, ge=1, le=50000)
    ingest_batch_wait_ms: int = Field(default=100, ge=0, le=10000)
    # Consumers of the group in one worker process, each applying its own partitions' batches:
    # while one batch's transaction waits on Postgres, another's Python work goes on.
    ingest_consumers: int = Field(default=2, ge=1, le=16)
    # Lots expire at a year end; the worker's daily run at this local time catches them.
    expiry_time: time = time(0, 5)
    worker_metrics_port: int = Field(default=9101, ge=0, le=65535)
    lag_exporter_port: int = Field(default=9102, ge=0, le=65535)
    lag_exporter_interval: float = Field(default=15.0, gt=0, le=3600)
