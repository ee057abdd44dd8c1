"""Use cases of the spending side: holds, captures, voids, credits and admin adjustments.

Every use case locks the member's row first and only then looks its idempotency key
up, so two copies of one request racing each other are served one after the other.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from services.points.domain.errors import HoldNotPending, IdempotencyConflict, PointsError, UnknownHold
from services.points.domain.ledger import CAPTURED, PENDING, VOIDED, Account, Entry, Hold
from services.points.domain.policy import EarningPolicy


class SpendingUnitOfWork(Protocol):
    async def lock_accounts(self, member_ids: Sequence[str]) -> dict[str, Account]: ...

    async def find_hold(self, hold_id: str) -> tuple[Hold, bytes] | None: ...

    async def insert_holds(self, holds: Sequence[tuple[Hold, bytes]]) -> None: ...

    async def update_hold(self, hold: Hold) -> None: ...

    async def find_holds(self, hold_ids: Sequence[str]) -> dict[str, tuple[Hold, bytes]]: ...

    async def update_holds(self, holds: Sequence[Hold]) -> None: ...

    async def pending_holds_due(self, now: datetime, limit: int) -> list[tuple[str, str]]: ...

    async def find_request(self, kind: str, request_id: str) -> tuple[bytes, dict[str, Any]] | None: ...

    async def insert_request(
        self, kind: str, request_id: str, member_id: str, sha256: bytes, response: dict[str, Any]
    ) -> None: ...

    async def save_accounts(self, accounts: Sequence[Account]) -> None: ...

    async def insert_entries(self, entries: Sequence[Entry]) -> None: ...


UnitOfWorkFactory = Callable[[], AbstractAsyncContextManager[SpendingUnitOfWork]]


def request_fingerprint(body: Any) -> bytes:
    text = json.dumps(asdict(body), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).digest()


@dataclass(frozen=True)
class HoldRequest:
    hold_id: str
    member_id: str
    points: int
    reason: str
    ttl_seconds: int


@dataclass(frozen=True)
class CreditRequest:
    credit_id: str
    member_id: str
    points: int
    reason: str


@dataclass(frozen=True)
class AdjustmentRequest:
    adjustment_id: str
    member_id: str
    delta: int
    reason: str


async def place_hold(unit_of_work: UnitOfWorkFactory, request: HoldRequest, now: datetime) -> Hold:
    """Reserve points; the same request again returns the same hold."""
    [placed] = await place_holds(unit_of_work, [request], now)
    if isinstance(placed, PointsError):
        raise placed
    return placed


async def place_holds(
    unit_of_work: UnitOfWorkFactory, requests: Sequence[HoldRequest], now: datetime
) -> list[Hold | PointsError]:
    """Place many holds in one transaction, each as its own request would be placed, in the
    order given; a hold that cannot be placed gets its error and the others go on. The
    answers come in the order of the requests.

    A campaign-day burst of orders and draws arrives as hundreds of holds at once: one
    transaction for a batch of them instead of one each.
    """
    results: list[Hold | PointsError] = []
    async with unit_of_work() as uow:
        accounts = await uow.lock_accounts(sorted({request.member_id for request in requests}))
        known = await uow.find_holds(list({request.hold_id: None for request in requests}))
        placed: list[tuple[Hold, bytes]] = []
        entries: list[Entry] = []
        for request in requests:
            fingerprint = request_fingerprint(request)
            if request.hold_id in known:
                hold, first_fingerprint = known[request.hold_id]
                conflict = IdempotencyConflict(f"hold_id {request.hold_id!r} was used for another request")
                results.append(hold if first_fingerprint == fingerprint else conflict)
                continue
            expires_at = now + timedelta(seconds=request.ttl_seconds)
            try:
                hold, hold_entries = accounts[request.member_id].place_hold(
                    request.hold_id, request.points, request.reason, now, expires_at
                )
            except PointsError as error:
                results.append(error)
                continue
            known[request.hold_id] = (hold, fingerprint)
            placed.append((hold, fingerprint))
            entries += hold_entries
            results.append(hold)
        await uow.insert_holds(placed)
        changed = {hold.member_id for hold, _ in placed}
        await uow.save_accounts([account for member_id, account in accounts.items() if member_id in changed])
        await uow.insert_entries(entries)
    return results


async def capture_hold(
    unit_of_work: UnitOfWorkFactory, hold_id: str, points: int | None, now: datetime
) -> Hold:
    """Spend a pending hold; capturing it again with the same points answers the same."""
    async with unit_of_work() as uow:
        hold, account = await _lock_hold(uow, hold_id)
        entries, refused = _settle(account, hold, CAPTURED, points, now)
        if entries:
            await _resolve(uow, account, hold, entries)
    if refused:  # raised after the commit: an expired hold stays voided
        raise refused
    return hold


async def settle_holds(
    unit_of_work: UnitOfWorkFactory, captures: Sequence[str], voids: Sequence[str], now: datetime
) -> dict[str, Hold | PointsError]:
    """Capture (in full) and void many holds in one transaction, each as capture_hold and
    void_hold would on its own; a hold that cannot be settled gets its error, the others go on.

    A lottery closing a ballot settles thousands of entries' holds: one request and one
    transaction per thousand instead of one each.
    """
    wanted = {**dict.fromkeys(captures, CAPTURED), **dict.fromkeys(voids, VOIDED)}
    results: dict[str, Hold | PointsError] = {}
    async with unit_of_work() as uow:
        peeked = await uow.find_holds(list(wanted))
        accounts = await uow.lock_accounts(sorted({hold.member_id for hold, _ in peeked.values()}))
        current = await uow.find_holds(list(peeked))  # again, now that the members are locked
        settled: list[Hold] = []
        entries: list[Entry] = []
        for hold_id, outcome in wanted.items():
            found = current.get(hold_id)
            if found is None:
                results[hold_id] = UnknownHold(f"no hold {hold_id!r}")
                continue
            hold, account = found[0], accounts[found[0].member_id]
            try:
                hold_entries, refused = _settle(account, hold, outcome, None, now)
            except PointsError as error:
                results[hold_id] = error
                continue
            if hold_entries:
                settled.append(hold)
                entries += hold_entries
            results[hold_id] = refused or hold
        await uow.update_holds(settled)
        await uow.save_accounts(list(accounts.values()))
        await uow.insert_entries(entries)
    return results


async def void_hold(unit_of_work: UnitOfWorkFactory, hold_id: str, now: datetime) -> Hold:
    """Give a hold's points back; voiding it again answers the same."""
    async with unit_of_work() as uow:
        hold, account = await _lock_hold(uow, hold_id)
        entries, _ = _settle(account, hold, VOIDED, None, now)
        if entries:
            await _resolve(uow, account, hold, entries)
        return hold


async def void_expired_holds(unit_of_work: UnitOfWorkFactory, now: datetime, limit: int = 500) -> int:
    """Void up to `limit` pending holds past their ttl; return how many."""
    voided = 0
    async with unit_of_work() as uow:
        due = await uow.pending_holds_due(now, limit)
        accounts = await uow.lock_accounts(sorted({member_id for _, member_id in due}))
        for hold_id, member_id in due:
            found = await uow.find_hold(hold_id)  # again, now that the member is locked
            if found is None or not (found[0].status == PENDING and now >= found[0].expires_at):
                continue
            hold, account = found[0], accounts[member_id]
            entries = account.void(hold, now)
            await uow.update_hold(hold)
            await uow.insert_entries(entries)
            voided += 1
        await uow.save_accounts(list(accounts.values()))
    return voided


async def credit(
    unit_of_work: UnitOfWorkFactory, request: CreditRequest, policy: EarningPolicy, now: datetime
) -> dict[str, Any]:
    """Refunds and prizes: new points that expire like points earned today."""
    return await _once(
        unit_of_work,
        "credit",
        request.credit_id,
        request.member_id,
        request,
        lambda account: account.credit(request.points, policy.expiry_for(now), request.credit_id, now),
        {"credit_id": request.credit_id, "member_id": request.member_id, "points": request.points,
         "reason": request.reason, "status": "credited"},
    )  # fmt: skip


async def adjust(
    unit_of_work: UnitOfWorkFactory, request: AdjustmentRequest, policy: EarningPolicy, now: datetime
) -> dict[str, Any]:
    """An admin correction; a negative one may not take more than is available."""
    return await _once(
        unit_of_work,
        "adjustment",
        request.adjustment_id,
        request.member_id,
        request,
        lambda account: account.adjust(request.delta, policy.expiry_for(now), request.adjustment_id, now),
        {"adjustment_id": request.adjustment_id, "member_id": request.member_id,
         "delta": request.delta, "reason": request.reason, "status": "applied"},
    )  # fmt: skip


async def _once(
    unit_of_work: UnitOfWorkFactory,
    kind: str,
    request_id: str,
    member_id: str,
    request: Any,
    change: Callable[[Account], list[Entry]],
    response: dict[str, Any],
) -> dict[str, Any]:
    fingerprint = request_fingerprint(request)
    async with unit_of_work() as uow:
        account = (await uow.lock_accounts([member_id]))[member_id]
        found = await uow.find_request(kind, request_id)
        if found is not None:
            if found[0] != fingerprint:
                raise IdempotencyConflict(f"{kind}_id {request_id!r} was used for another request")
            return found[1]
        entries = change(account)
        await uow.save_accounts([account])
        await uow.insert_entries(entries)
        await uow.insert_request(kind, request_id, member_id, fingerprint, response)
        return response


async def _lock_hold(uow: SpendingUnitOfWork, hold_id: str) -> tuple[Hold, Account]:
    peek = await uow.find_hold(hold_id)
    if peek is None:
        raise UnknownHold(f"no hold {hold_id!r}")
    member_id = peek[0].member_id
    account = (await uow.lock_accounts([member_id]))[member_id]
    found = await uow.find_hold(hold_id)  # re-read: it may have changed before the lock
    assert found is not None
    return found[0], account


def _settle(
    account: Account, hold: Hold, outcome: str, points: int | None, now: datetime
) -> tuple[list[Entry], HoldNotPending | None]:
    """Capture (`points` of it, or all) or void a locked hold: the entries to write, and the
    refusal to answer once they are committed. A hold already settled so gets no entries and
    no refusal (the same answer again); a refusal with nothing to write is raised at once.
    """
    if hold.status == outcome and (outcome == VOIDED or points in (None, hold.captured)):
        return [], None
    if outcome == CAPTURED and hold.status == PENDING and now >= hold.expires_at:
        # Past its ttl: voided now, and the capture refused.
        detail = f"hold {hold.hold_id} expired at {hold.expires_at.isoformat()}; it was voided"
        return account.void(hold, now), HoldNotPending(detail)
    if outcome == CAPTURED:
        return account.capture(hold, points, now), None
    return account.void(hold, now), None


async def _resolve(uow: SpendingUnitOfWork, account: Account, hold: Hold, entries: list[Entry]) -> None:
    await uow.update_hold(hold)
    await uow.save_accounts([account])
    await uow.insert_entries(entries)
