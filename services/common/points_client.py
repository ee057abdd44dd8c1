"""How redemption and lottery move points: the points API's holds and credits, with a service token."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import orjson

from services.common.auth import mint_token


class PointsRejected(Exception):
    """The points service answered no (4xx): the request itself cannot succeed as it is."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


class PointsUnavailable(Exception):
    """The points service could not be reached or failed (5xx): the outcome is unknown, try again."""


class PointsClient:
    """On aiohttp: a call costs a fraction of httpx's CPU, and every order or draw makes two or more."""

    def __init__(self, base_url: str, jwt_secret: str, service_name: str, timeout: float = 10.0) -> None:
        self._base_url = base_url.rstrip("/")
        # Per connect and per read, as httpx counts: a call waiting for one of the pool's
        # connections on a campaign-day burst is queued, not failed.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        self._secret = jwt_secret
        self._service = service_name
        self._token = ""
        self._token_renew_at = 0.0
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        # Made on first use: an aiohttp session belongs to the event loop it was made in.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=200),
                json_serialize=lambda body: orjson.dumps(body).decode(),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def hold(
        self, hold_id: str, member_id: str, points: int, reason: str, ttl_seconds: int = 300
    ) -> dict[str, Any]:
        body = {"hold_id": hold_id, "member_id": member_id, "points": points, "reason": reason,
                "ttl_seconds": ttl_seconds}  # fmt: skip
        return await self._call("POST", "/v1/holds", body)

    async def capture(self, hold_id: str, points: int | None = None) -> dict[str, Any]:
        body = {} if points is None else {"points": points}
        return await self._call("POST", f"/v1/holds/{hold_id}/capture", body)

    async def void(self, hold_id: str) -> dict[str, Any]:
        return await self._call("POST", f"/v1/holds/{hold_id}/void", None)

    async def settle(self, captures: list[str], voids: list[str]) -> dict[str, dict[str, Any]]:
        """Capture and void up to 1,000 holds in one call; each hold's answer or error, by hold_id."""
        answer = await self._call("POST", "/v1/holds/settle", {"capture": captures, "void": voids})
        return {hold["hold_id"]: hold for hold in answer["holds"]}

    async def get_hold(self, hold_id: str) -> dict[str, Any] | None:
        try:
            return await self._call("GET", f"/v1/holds/{hold_id}", None)
        except PointsRejected as rejected:
            if rejected.status == 404:
                return None
            raise

    async def credit(self, credit_id: str, member_id: str, points: int, reason: str) -> dict[str, Any]:
        body = {"credit_id": credit_id, "member_id": member_id, "points": points, "reason": reason}
        return await self._call("POST", "/v1/credits", body)

    async def balance(self, member_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/v1/members/{member_id}/balance", None)

    async def _call(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self._service_token()}"}
        url = self._base_url + path
        try:
            async with self._http().request(method, url, json=body, headers=headers) as response:
                status, content = response.status, await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise PointsUnavailable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if status >= 500:
            raise PointsUnavailable(f"{method} {path}: HTTP {status}")
        try:
            payload = orjson.loads(content)
        except orjson.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict):
            raise PointsUnavailable(f"{method} {path}: not a JSON object (HTTP {status})")
        if status >= 400:
            raise PointsRejected(status, str(payload.get("error", "error")), str(payload.get("detail", "")))
        return payload

    def _service_token(self) -> str:
        if time.monotonic() >= self._token_renew_at:
            self._token = mint_token(self._secret, self._service, "service", ttl_seconds=3600)
            self._token_renew_at = time.monotonic() + 1800
        return self._token
