"""Use cases of the stream side: apply a batch of billing records, expire due lots."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from services.points.domain.events import BillingEvent, RejectedEvent, parse_billing_event
from services.points.domain.ledger import Account, Entry
from services.points.domain.policy import EarningPolicy


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed Kafka record: where it came from and its raw value."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    detail: str
    raw: str
    topic: str
    partition: int
    offset: int

    @classmethod
    def of(cls, record: Record, reason: str, detail: str) -> DeadLetter:
        return cls(reason, detail, raw_text(record.value), record.topic, record.partition, record.offset)


@dataclass(frozen=True, slots=True)
class AppliedEvent:
    event: BillingEvent
    points: int  # signed: negative is a clawback
    partition: int
    offset: int


@dataclass
class BatchOutcome:
    applied: list[AppliedEvent] = field(default_factory=list)
    duplicates: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)


class IngestUnitOfWork(Protocol):
    """One transaction: everything saved commits together with the events marked applied."""

    async def lock_accounts(self, member_ids: Sequence[str]) -> dict[str, Account]: ...

    async def known_fingerprints(self, event_ids: Sequence[str]) -> dict[str, bytes]: ...

    async def save(self, accounts: Sequence[Account], outcome: BatchOutcome) -> None: ...


UnitOfWorkFactory = Callable[[], AbstractAsyncContextManager[IngestUnitOfWork]]


@dataclass(frozen=True)
class ParsedBatch:
    """Records validated, before any I/O: the events to apply and the records rejected."""

    records: Sequence[Record]
    events: list[tuple[Record, BillingEvent]]
    rejected: list[DeadLetter]


def parse_batch(records: Sequence[Record]) -> ParsedBatch:
    events: list[tuple[Record, BillingEvent]] = []
    rejected: list[DeadLetter] = []
    for record in records:
        try:
            events.append((record, parse_billing_event(record.value)))
        except RejectedEvent as why:
            rejected.append(DeadLetter.of(record, why.reason, why.detail))
    return ParsedBatch(records, events, rejected)


async def apply_batch(
    unit_of_work: UnitOfWorkFactory, records: Sequence[Record], policy: EarningPolicy
) -> BatchOutcome:
    """Apply records in order, exactly once per event_id, in one transaction."""
    return await apply_parsed(unit_of_work, parse_batch(records), policy)


async def apply_parsed(
    unit_of_work: UnitOfWorkFactory, batch: ParsedBatch, policy: EarningPolicy
) -> BatchOutcome:
    """The transaction of `apply_batch`, for records parsed beforehand (safe to call again)."""
    outcome = BatchOutcome(dead_letters=list(batch.rejected))
    parsed = batch.events
    async with unit_of_work() as uow:
        # Sorted, so that two workers locking overlapping members never deadlock.
        accounts = await uow.lock_accounts(sorted({event.member_id for _, event in parsed}))
        seen = await uow.known_fingerprints(list({event.event_id for _, event in parsed}))
        for record, event in parsed:
            known = seen.get(event.event_id)
            if known == event.fingerprint:
                outcome.duplicates += 1
                continue
            if known is not None:
                outcome.dead_letters.append(
                    DeadLetter.of(
                        record,
                        "conflicting_duplicate",
                        f"event_id {event.event_id!r} was applied before with a different payload",
                    )
                )
                continue
            seen[event.event_id] = event.fingerprint
            account = accounts[event.member_id]
            outcome.entries.extend(account.apply_billing_event(event, policy))
            outcome.applied.append(
                AppliedEvent(event, policy.points_for(event), record.partition, record.offset)
            )
        touched = {a.event.member_id for a in outcome.applied}
        await uow.save([accounts[m] for m in sorted(touched)], outcome)
    return outcome


class ExpiryUnitOfWork(Protocol):
    async def lock_accounts_with_lots_due(self, as_of: datetime, limit: int) -> list[Account]: ...

    async def save_expiry(self, accounts: Sequence[Account], entries: Sequence[Entry]) -> None: ...


ExpiryUnitOfWorkFactory = Callable[[], AbstractAsyncContextManager[ExpiryUnitOfWork]]


@dataclass
class ExpiryOutcome:
    members: int = 0
    points: int = 0


async def expire_due_lots(
    unit_of_work: ExpiryUnitOfWorkFactory,
    as_of: datetime,
    chunk: int = 2000,
) -> AsyncIterator[ExpiryOutcome]:
    """Expire lots due by `as_of`, `chunk` members per transaction; yields progress per chunk."""
    while True:
        async with unit_of_work() as uow:
            accounts = await uow.lock_accounts_with_lots_due(as_of, chunk)
            if not accounts:
                return
            entries = [e for account in accounts for e in account.expire(as_of)]
            if not entries:  # nothing was due after all: asking again would return the same rows
                return
            await uow.save_expiry(accounts, entries)
        yield ExpiryOutcome(members=len(accounts), points=-sum(e.delta for e in entries))


def raw_text(value: bytes | None) -> str:
    """The record's value as text for the DLQ, keeping undecodable bytes visible as escapes."""
    if value is None:
        return ""
    # Postgres text cannot hold NUL; keep it visible instead.
    return value.decode("utf-8", errors="backslashreplace").replace("\x00", "\\x00")


async def reject_records(unit_of_work: UnitOfWorkFactory, dead_letters: Sequence[DeadLetter]) -> BatchOutcome:
    """Send records to the DLQ without applying anything (the last resort of the worker)."""
    outcome = BatchOutcome(dead_letters=list(dead_letters))
    async with unit_of_work() as uow:
        await uow.save([], outcome)
    return outcome
