"""The points service as the lottery uses it: PointsClient, bounded and retried."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from services.common.points_client import PointsClient, PointsUnavailable

T = TypeVar("T")

RETRY_DELAYS = (0.05, 0.25)


class PointsGateway:
    """Every call the lottery makes to the points service goes through here.

    - At most `limit` calls at once; the others wait their turn on a semaphore. httpx's
      connection pool rescans every request and connection it holds on each request event,
      so its CPU per call grows with the calls in flight: under an overload of draws, 64 in
      flight brought the lottery down to about half the draws/s that 8 sustain
      (bench/README.md). The points API is one process; 8 calls at a time keep it busy.
    - A call whose outcome is unknown (connection dropped, timeout, 5xx) is sent again,
      twice at most: every call the lottery makes is idempotent (same hold, credit id),
      and a kept-alive connection that the server closed just then is common.
    """

    def __init__(self, client: PointsClient, limit: int = 8) -> None:
        self._client = client
        self._gate = asyncio.Semaphore(limit)

    async def _call(self, attempt: Callable[[], Awaitable[T]]) -> T:
        for delay in RETRY_DELAYS:
            try:
                async with self._gate:
                    return await attempt()
            except PointsUnavailable:
                await asyncio.sleep(delay)
        async with self._gate:
            return await attempt()

    async def hold(
        self, hold_id: str, member_id: str, points: int, reason: str, ttl_seconds: int = 300
    ) -> dict[str, Any]:
        return await self._call(lambda: self._client.hold(hold_id, member_id, points, reason, ttl_seconds))

    async def capture(self, hold_id: str, points: int | None = None) -> dict[str, Any]:
        return await self._call(lambda: self._client.capture(hold_id, points))

    async def void(self, hold_id: str) -> dict[str, Any]:
        return await self._call(lambda: self._client.void(hold_id))

    async def settle(self, captures: list[str], voids: list[str]) -> dict[str, dict[str, Any]]:
        return await self._call(lambda: self._client.settle(captures, voids))

    async def credit(self, credit_id: str, member_id: str, points: int, reason: str) -> dict[str, Any]:
        return await self._call(lambda: self._client.credit(credit_id, member_id, points, reason))
