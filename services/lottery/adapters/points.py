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

    - Holds, full captures and voids go straight to the client, which sends those made
      while one request is in flight together in the next (POST /v1/holds/batch and
      /v1/holds/settle): a burst of draws costs the points service a few requests.
    - Other calls (credits of prizes, a ballot's settle) are at most `limit` at once; the
      others wait their turn. The points API is one process; 8 calls at a time keep it busy.
    - A call whose outcome is unknown (connection dropped, timeout, 5xx) is sent again,
      twice at most: every call the lottery makes is idempotent (same hold, credit id),
      and a kept-alive connection that the server closed just then is common.
    """

    def __init__(self, client: PointsClient, limit: int = 8) -> None:
        self._client = client
        self._gate = asyncio.Semaphore(limit)

    async def _call(self, attempt: Callable[[], Awaitable[T]], gated: bool = True) -> T:
        for delay in (*RETRY_DELAYS, None):
            try:
                if not gated:
                    return await attempt()
                async with self._gate:
                    return await attempt()
            except PointsUnavailable:
                if delay is None:
                    raise
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def hold(
        self, hold_id: str, member_id: str, points: int, reason: str, ttl_seconds: int = 300
    ) -> dict[str, Any]:
        return await self._call(
            lambda: self._client.hold(hold_id, member_id, points, reason, ttl_seconds), gated=False
        )

    async def capture(self, hold_id: str, points: int | None = None) -> dict[str, Any]:
        return await self._call(lambda: self._client.capture(hold_id, points), gated=points is not None)

    async def void(self, hold_id: str) -> dict[str, Any]:
        return await self._call(lambda: self._client.void(hold_id), gated=False)

    async def settle(self, captures: list[str], voids: list[str]) -> dict[str, dict[str, Any]]:
        return await self._call(lambda: self._client.settle(captures, voids))

    async def credit(self, credit_id: str, member_id: str, points: int, reason: str) -> dict[str, Any]:
        return await self._call(lambda: self._client.credit(credit_id, member_id, points, reason))
