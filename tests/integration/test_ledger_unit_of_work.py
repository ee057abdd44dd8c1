"""The ledger's unit of work keeps its writes until it must send them: never to a reader's loss."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.common.db import create_pool
from services.points.adapters.postgres import PostgresLedger, ledger_transaction
from tests.integration.conftest import PostgresServer, run

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
YEAR_END = datetime(2027, 12, 31, 16, 0, tzinfo=UTC)


async def _credit(ledger: PostgresLedger, member_id: str, points: int) -> None:
    account = (await ledger.lock_accounts([member_id]))[member_id]
    await ledger.insert_entries(account.credit(points, YEAR_END, f"credit-{member_id}", NOW))
    await ledger.save_accounts([account])


async def _reads_after_writes(dsn: str) -> tuple[int, int, str, str]:
    pool = await create_pool(dsn)
    try:
        async with ledger_transaction(pool) as ledger:
            await _credit(ledger, "m-1", 500)
            # Read again in the same transaction: the credit must be there.
            account = (await ledger.lock_accounts(["m-1"]))["m-1"]
            available_seen = account.available
            hold, entries = account.place_hold("h-1", 200, "a test", NOW, NOW + timedelta(minutes=2))
            await ledger.insert_holds([(hold, b"sha")])
            await ledger.save_accounts([account])
            await ledger.insert_entries(entries)
            found = await ledger.find_hold("h-1")
            assert found is not None
            status_seen = found[0].status
            # Settled before any read: the hold written and then changed, in that order.
            await ledger.insert_entries(account.capture(found[0], None, NOW))
            await ledger.update_holds([found[0]])
            await ledger.save_accounts([account])
        async with pool.acquire() as conn:
            available = await conn.fetchval("SELECT available FROM points.members WHERE member_id = 'm-1'")
            status = await conn.fetchval("SELECT status FROM points.holds WHERE hold_id = 'h-1'")
            kinds = [r["kind"] for r in await conn.fetch("SELECT kind FROM points.entries ORDER BY entry_id")]
            events = await conn.fetchval("SELECT count(*) FROM points.outbox")
        assert kinds == ["credit", "hold", "capture"]
        assert events == len(kinds)  # every entry has its event
        return available_seen, available, status_seen, status
    finally:
        await pool.close()


def test_a_unit_of_work_reads_what_it_wrote_and_commits_it_in_order(postgres: PostgresServer) -> None:
    available_seen, available, status_seen, status = run(_reads_after_writes(postgres.new_database()))
    assert available_seen == 500
    assert status_seen == "pending"
    assert (available, status) == (300, "captured")


async def _hold_then_settle_unread(dsn: str) -> str:
    pool = await create_pool(dsn)
    try:
        async with ledger_transaction(pool) as ledger:
            await _credit(ledger, "m-2", 100)
        async with ledger_transaction(pool) as ledger:
            account = (await ledger.lock_accounts(["m-2"]))["m-2"]
            hold, entries = account.place_hold("h-2", 40, "a test", NOW, NOW + timedelta(minutes=2))
            await ledger.insert_holds([(replace(hold), b"sha")])  # as placed, whatever happens to `hold`
            entries += account.void(hold, NOW)
            await ledger.update_holds([hold])  # no read in between
            await ledger.save_accounts([account])
            await ledger.insert_entries(entries)
        async with pool.acquire() as conn:
            return str(await conn.fetchval("SELECT status FROM points.holds WHERE hold_id = 'h-2'"))
    finally:
        await pool.close()


def test_a_hold_placed_and_voided_in_one_transaction_is_saved_voided(postgres: PostgresServer) -> None:
    assert run(_hold_then_settle_unread(postgres.new_database())) == "voided"


async def _failed_transaction(dsn: str) -> tuple[int, int]:
    pool = await create_pool(dsn)
    try:
        with pytest.raises(RuntimeError):
            async with ledger_transaction(pool) as ledger:
                await _credit(ledger, "m-3", 100)
                await ledger.find_holds(["anything"])  # a read: the credit is sent before it
                await _credit(ledger, "m-3", 50)
                raise RuntimeError("the use case failed")
        conn: asyncpg.Connection
        async with pool.acquire() as conn:
            entries = await conn.fetchval("SELECT count(*) FROM points.entries")
            members = await conn.fetchval("SELECT count(*) FROM points.members")
        return int(entries), int(members)
    finally:
        await pool.close()


def test_nothing_of_a_failed_transaction_is_kept(postgres: PostgresServer) -> None:
    assert run(_failed_transaction(postgres.new_database())) == (0, 0)
