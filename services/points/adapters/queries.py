"""Read side of the ledger: balances and entry history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True)
class Balance:
    member_id: str
    tier: str
    available: int
    held: int
    debt: int
    expiring: list[tuple[int, datetime]]


@dataclass(frozen=True)
class EntryRow:
    entry_id: int
    kind: str
    delta: int
    balance_after: int
    debt_after: int
    held_after: int
    ref: str
    occurred_at: datetime
    recorded_at: datetime


async def read_balance(conn: asyncpg.Connection, member_id: str) -> Balance:
    """A member's balance; a member never seen has all zeros."""
    row = await conn.fetchrow(
        "SELECT tier, available, held, debt FROM points.members WHERE member_id = $1", member_id
    )
    if row is None:
        return Balance(member_id, "standard", 0, 0, 0, [])
    lots = await conn.fetch(
        "SELECT remaining, expires_at FROM points.lots WHERE member_id = $1 ORDER BY expires_at",
        member_id,
    )
    return Balance(
        member_id,
        row["tier"],
        row["available"],
        row["held"],
        row["debt"],
        [(r["remaining"], r["expires_at"]) for r in lots],
    )


async def read_entries(
    conn: asyncpg.Connection, member_id: str, limit: int, before_entry_id: int | None
) -> list[EntryRow]:
    """Newest first; `before_entry_id` continues from a previous page."""
    rows = await conn.fetch(
        """SELECT entry_id, kind, delta, balance_after, debt_after, held_after, ref, occurred_at, recorded_at
           FROM points.entries
           WHERE member_id = $1 AND ($2::bigint IS NULL OR entry_id < $2)
           ORDER BY entry_id DESC LIMIT $3""",
        member_id,
        before_entry_id,
        limit,
    )
    return [EntryRow(**dict(r)) for r in rows]
