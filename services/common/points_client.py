"""How redemption and lottery move points: the points API's holds and credits, with a service token."""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from typing import Any

import aiohttp
import orjson

from services.common.auth import mint_token
from services.common.batching import Batcher


class PointsRejected(Exception):
    """The points service answered no (4xx): the request itself cannot succeed as it is."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


class PointsUnavailable(Exception):
    """The points service could not be reached or failed (5xx): the outcome is unknown, try again."""


BATCH_MAX = 1000  # holds per request of POST /v1/holds/batch and /v1/holds/settle
# The status a single call answers with each error code; everything else is a 409.
ERROR_STATUS = {"unknown_hold": 404, "invalid_request": 422}


# What one hold of a batch gets: its call's answer, or the error its call raises.
Answer = dict[str, Any] | BaseException


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
        # Holds, captures and voids made while one is in flight go together in the next request.
        self._holds: Batcher[dict[str, Any], dict[str, Any]] = Batcher(self._place_holds, BATCH_MAX)
        self._settles: Batcher[tuple[str, str], dict[str, Any]] = Batcher(self._settle_holds, BATCH_MAX)

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
        """POST /v1/holds, made together with other concurrent holds (POST /v1/holds/batch)."""
        body = {"hold_id": hold_id, "member_id": member_id, "points": points, "reason": reason,
                "ttl_seconds": ttl_seconds}  # fmt: skip
        return await self._holds.call(hold_id, body)

    async def capture(self, hold_id: str, points: int | None = None) -> dict[str, Any]:
        """Capture all of a hold (with other captures and voids: /v1/holds/settle) or `points` of it."""
        if points is None:
            return await self._settles.call(hold_id, ("capture", hold_id))
        return await self._call("POST", f"/v1/holds/{hold_id}/capture", {"points": points})

    async def void(self, hold_id: str) -> dict[str, Any]:
        return await self._settles.call(hold_id, ("void", hold_id))

    async def settle(self, captures: list[str], voids: list[str]) -> dict[str, dict[str, Any]]:
        """Capture and void up to 1,000 holds in one call; each hold's answer or error, by hold_id."""
        answer = await self._call("POST", "/v1/holds/settle", {"capture": captures, "void": voids})
        return {hold["hold_id"]: hold for hold in answer["holds"]}

    async def _place_holds(self, bodies: Sequence[dict[str, Any]]) -> dict[Hashable, Answer]:
        answer = await self._call("POST", "/v1/holds/batch", {"holds": list(bodies)})
        return {hold["hold_id"]: _answer(hold) for hold in answer["holds"]}

    async def _settle_holds(self, items: Sequence[tuple[str, str]]) -> dict[Hashable, Answer]:
        captures = [hold_id for outcome, hold_id in items if outcome == "capture"]
        voids = [hold_id for outcome, hold_id in items if outcome == "void"]
        answers = await self.settle(captures, voids)
        return {hold_id: _answer(hold) for hold_id, hold in answers.items()}

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


def _answer(hold: dict[str, Any]) -> Answer:
    """One hold of a batch answered as its own call would be: its body, or its 4xx error."""
    if hold.get("error"):
        code = str(hold["error"])
        return PointsRejected(ERROR_STATUS.get(code, 409), code, str(hold.get("detail", "")))
    return {k: v for k, v in hold.items() if v is not None}  # without the fields that do not apply
