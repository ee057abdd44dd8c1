"""In-memory stand-ins for the points ledger's ports, in the spirit of cosmicpython's FakeUnitOfWork.

`FakeLedger` is what the database would hold. Each unit of work reads copies of the
accounts and writes what it saved back only when its block ends without an exception,
so a test sees the same all-or-nothing behaviour as one Postgres transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

from services.points.domain.ledger import Account, Entry
from services.points.service_layer.ingest import AppliedEvent, BatchOutcome, DeadLetter


def copy_account(account: Account) -> Account:
    return Account(account.member_id, account.tier, dict(account.lots), account.held, account.debt)


@dataclass
class FakeLedger:
    accounts: dict[str, Account] = field(default_factory=dict)
    fingerprints: dict[str, bytes] = field(default_factory=dict)  # event_id -> payload hash
    applied: list[AppliedEvent] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    commits: int = 0

    @classmethod
    def with_accounts(cls, accounts: Iterable[Account]) -> FakeLedger:
        return cls(accounts={a.member_id: copy_account(a) for a in accounts})

    def account(self, member_id: str) -> Account:
        """The stored account; a member never seen has the zero account, as in GET /balance."""
        return self.accounts.get(member_id, Account(member_id))

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[FakeUnitOfWork]:
        uow = FakeUnitOfWork(self)
        yield uow
        uow.commit()


class FakeUnitOfWork:
    """Implements both IngestUnitOfWork and ExpiryUnitOfWork, as the Postgres ledger does."""

    def __init__(self, ledger: FakeLedger) -> None:
        self._ledger = ledger
        self._accounts: list[Account] = []
        self._outcomes: list[BatchOutcome] = []
        self._entries: list[Entry] = []

    async def lock_accounts(self, member_ids: Sequence[str]) -> dict[str, Account]:
        return {m: copy_account(self._ledger.account(m)) for m in member_ids}

    async def known_fingerprints(self, event_ids: Sequence[str]) -> dict[str, bytes]:
        known = self._ledger.fingerprints
        return {e: known[e] for e in event_ids if e in known}

    async def save(self, accounts: Sequence[Account], outcome: BatchOutcome) -> None:
        self._accounts.extend(copy_account(a) for a in accounts)
        self._outcomes.append(outcome)

    async def lock_accounts_with_lots_due(self, as_of: datetime, limit: int) -> list[Account]:
        due = sorted(m for m, a in self._ledger.accounts.items() if any(e <= as_of for e in a.lots))
        return [copy_account(self._ledger.accounts[m]) for m in due[:limit]]

    async def save_expiry(self, accounts: Sequence[Account], entries: Sequence[Entry]) -> None:
        self._accounts.extend(copy_account(a) for a in accounts)
        self._entries.extend(entries)

    def commit(self) -> None:
        ledger = self._ledger
        for account in self._accounts:
            ledger.accounts[account.member_id] = account
        for outcome in self._outcomes:
            for applied in outcome.applied:
                ledger.fingerprints[applied.event.event_id] = applied.event.fingerprint
            ledger.applied.extend(outcome.applied)
            ledger.entries.extend(outcome.entries)
            ledger.dead_letters.extend(outcome.dead_letters)
        ledger.entries.extend(self._entries)
        ledger.commits += 1
