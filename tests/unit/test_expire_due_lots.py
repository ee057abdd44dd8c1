"""The expire_due_lots use case: due lots expire in chunks of members, each chunk one transaction."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from services.points.domain.ledger import Account
from services.points.service_layer.ingest import expire_due_lots
from tests.unit.fakes import FakeLedger

SHANGHAI = timezone(timedelta(hours=8))
END_2013 = datetime(2014, 1, 1, tzinfo=SHANGHAI)
END_2014 = datetime(2015, 1, 1, tzinfo=SHANGHAI)


def expire(ledger: FakeLedger, as_of: datetime, chunk: int = 2000) -> list[tuple[int, int]]:
    """Progress of each chunk; a lot left due would make the use case loop, so stop after a few."""

    async def progress() -> list[tuple[int, int]]:
        chunks: list[tuple[int, int]] = []
        async for outcome in expire_due_lots(ledger.unit_of_work, as_of, chunk):
            chunks.append((outcome.members, outcome.points))
            if len(chunks) > 10:
                raise AssertionError(f"still expiring after {chunks}: a due lot was left behind")
        return chunks

    return asyncio.run(progress())


def four_members() -> FakeLedger:
    return FakeLedger.with_accounts(
        [
            Account("m1", lots={END_2013: 100, END_2014: 50}),
            Account("m2", lots={END_2013: 30}),
            Account("m3", lots={END_2014: 20}),
            Account("m4", lots={END_2013: 5}, debt=0),
        ]
    )


def test_due_lots_expire_in_chunks_of_members() -> None:
    ledger = four_members()
    assert expire(ledger, END_2013, chunk=2) == [(2, 130), (1, 5)]
    assert {m: a.lots for m, a in ledger.accounts.items()} == {
        "m1": {END_2014: 50},
        "m2": {},
        "m3": {END_2014: 20},
        "m4": {},
    }
    assert [(e.member_id, e.kind, e.delta, e.balance_after) for e in ledger.entries] == [
        ("m1", "expiry", -100, 50),
        ("m2", "expiry", -30, 0),
        ("m4", "expiry", -5, 0),
    ]


def test_nothing_expires_a_microsecond_before_the_year_ends_in_shanghai() -> None:
    ledger = four_members()
    assert expire(ledger, END_2013 - timedelta(microseconds=1)) == []
    assert ledger.entries == []
    assert ledger.account("m1").lots == {END_2013: 100, END_2014: 50}


def test_expiring_again_at_the_same_time_changes_nothing() -> None:
    ledger = four_members()
    assert expire(ledger, END_2013) == [(3, 135)]
    assert expire(ledger, END_2013) == []
    assert len(ledger.entries) == 3
