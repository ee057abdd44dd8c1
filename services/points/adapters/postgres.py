"""The points ledger in Postgres: hand-written, set-wise SQL over one connection per transaction."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg

from services.common.kafka import BILLING_DLQ, POINTS_ENTRIES
from services.points.domain.ledger import Account, Entry, Hold
from services.points.service_layer.ingest import BatchOutcome

# The JSON of an entry on points.entries.v1: the same fields as GET /entries, plus member_id.
ENTRY_JSON = """json_build_object(
    'entry_id', e.entry_id, 'member_id', e.member_id, 'kind', e.kind, 'delta', e.delta,
    'balance_after', e.balance_after, 'debt_after', e.debt_after, 'held_after', e.held_after, 'ref', e.ref,
    'occurred_at', e.occurred_at, 'recorded_at', e.recorded_at)::text"""

# The parts of a flush, each a data-modifying CTE with its parameters numbered from $1.
UPDATE_MEMBERS = """
    UPDATE points.members m
    SET tier = u.tier, available = u.available, held = u.held, debt = u.debt, updated_at = now()
    FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[])
         AS u(member_id, tier, available, held, debt)
    WHERE m.member_id = u.member_id"""
DELETE_LOTS = """
    DELETE FROM points.lots l USING unnest($1::text[], $2::timestamptz[]) AS d(m, e)
    WHERE l.member_id = d.m AND l.expires_at = d.e"""
UPSERT_LOTS = """
    INSERT INTO points.lots (member_id, expires_at, remaining)
    SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::bigint[])
    ON CONFLICT (member_id, expires_at) DO UPDATE SET remaining = EXCLUDED.remaining"""
INSERT_HOLDS = """
    INSERT INTO points.holds
        (hold_id, member_id, points, reason, status, captured, lots, request_sha256, expires_at)
    SELECT h.hold_id, h.member_id, h.points, h.reason, h.status, h.captured, h.lots::jsonb,
           h.request_sha256, h.expires_at
    FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::bigint[],
                $7::text[], $8::bytea[], $9::timestamptz[])
         AS h(hold_id, member_id, points, reason, status, captured, lots, request_sha256, expires_at)"""
UPDATE_HOLDS = """
    UPDATE points.holds h SET status = u.status, captured = u.captured, lots = u.lots::jsonb,
           resolved_at = now()
    FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[]) AS u(hold_id, status, captured, lots)
    WHERE h.hold_id = u.hold_id"""
# Entries keep the order they were made in; their events follow them to the outbox. Arrays
# rather than COPY: a hold or capture writes one or two entries, and COPY's set-up (a temporary
# table, its truncation at every commit, extra round trips) cost more than the rows; for the
# worker's thousands of entries the arrays are as quick.
INSERT_ENTRIES = """
    INSERT INTO points.entries
        (member_id, kind, delta, balance_after, debt_after, held_after, ref, occurred_at)
    SELECT member_id, kind, delta, balance_after, debt_after, held_after, ref, occurred_at
    FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[],
                $6::bigint[], $7::text[], $8::timestamptz[]) WITH ORDINALITY
         AS u(member_id, kind, delta, balance_after, debt_after, held_after, ref, occurred_at, n)
    ORDER BY n
    RETURNING *"""
ENTRY_EVENTS = f"""
    INSERT INTO points.outbox (topic, key, payload)
    SELECT '{POINTS_ENTRIES}', e.member_id, {ENTRY_JSON} FROM e ORDER BY e.entry_id"""
_PARAMETER = re.compile(r"\$(\d+)")


Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


class PostgresLedger:
    """A unit of work on the ledger: one transaction, member rows locked before they change.

    Accounts, entries and holds to write are kept until `flush`, which sends them all in one
    statement: `ledger_transaction` flushes before it commits, and every read flushes first,
    so a read always sees what was written before it. A hold or capture batch is then a few
    round trips to Postgres instead of ten, and under load each round trip waits for a core.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lots_before: dict[str, dict[datetime, int]] = {}
        self._accounts: dict[str, Account] = {}
        self._entries: list[Entry] = []
        self._new_holds: list[tuple[Hold, bytes]] = []
        self._settled_holds: dict[str, Hold] = {}  # by id: a hold changed twice is written once

    async def lock_accounts(self, member_ids: Sequence[str]) -> dict[str, Account]:
        """Lock (creating if new) the members' rows and load their accounts."""
        if not member_ids:
            return {}
        await self.flush()
        # Lock first and create only the members missing: they nearly always exist, and that is
        # a round trip fewer than creating them all first.
        rows = await self._lock_members(member_ids)
        missing = sorted(set(member_ids) - {r["member_id"] for r in rows})
        if missing:
            await self.conn.execute(
                "INSERT INTO points.members (member_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
                missing,
            )
            rows = [*rows, *await self._lock_members(missing)]
        return await self._load(rows)

    async def _lock_members(self, member_ids: Sequence[str]) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.conn.fetch(
            """SELECT member_id, tier, held, debt FROM points.members
               WHERE member_id = ANY($1::text[]) ORDER BY member_id FOR UPDATE""",
            member_ids,
        )
        return rows

    async def lock_accounts_with_lots_due(self, as_of: datetime, limit: int) -> list[Account]:
        await self.flush()
        rows = await self.conn.fetch(
            """SELECT member_id, tier, held, debt FROM points.members
               WHERE member_id IN (SELECT DISTINCT member_id FROM points.lots
                                   WHERE expires_at <= $1 ORDER BY member_id LIMIT $2)
               ORDER BY member_id FOR UPDATE""",
            as_of,
            limit,
        )
        return list((await self._load(rows)).values())

    async def _load(self, member_rows: Sequence[asyncpg.Record]) -> dict[str, Account]:
        accounts = {
            r["member_id"]: Account(r["member_id"], r["tier"], {}, r["held"], r["debt"]) for r in member_rows
        }
        lot_rows = await self.conn.fetch(
            "SELECT member_id, expires_at, remaining FROM points.lots WHERE member_id = ANY($1::text[])",
            list(accounts),
        )
        for r in lot_rows:
            accounts[r["member_id"]].lots[r["expires_at"]] = r["remaining"]
        for member_id, account in accounts.items():
            self._lots_before[member_id] = dict(account.lots)
        return accounts

    async def known_fingerprints(self, event_ids: Sequence[str]) -> dict[str, bytes]:
        await self.flush()
        rows = await self.conn.fetch(
            "SELECT event_id, payload_sha256 FROM points.billing_events WHERE event_id = ANY($1::text[])",
            event_ids,
        )
        return {r["event_id"]: bytes(r["payload_sha256"]) for r in rows}

    async def save(self, accounts: Sequence[Account], outcome: BatchOutcome) -> None:
        await self.save_accounts(accounts)
        await self.insert_entries(outcome.entries)
        await self.flush()  # now, so that the entries' events come before any dead letter's
        if outcome.applied:
            await self.conn.copy_records_to_table(
                "billing_events",
                schema_name="points",
                columns=[
                    "event_id", "member_id", "type", "points", "payload_sha256",
                    "occurred_at", "source_partition", "source_offset",
                ],
                records=[
                    (a.event.event_id, a.event.member_id, a.event.type, a.points,
                     a.event.fingerprint, a.event.occurred_at, a.partition, a.offset)
                    for a in outcome.applied
                ],
            )  # fmt: skip
        if outcome.dead_letters:
            await self.conn.execute(
                f"""WITH d AS (
                        INSERT INTO points.dead_letters (topic, partition, "offset", reason, detail, raw)
                        SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[],
                                             $4::text[], $5::text[], $6::text[])
                        ON CONFLICT DO NOTHING
                        RETURNING *)
                    INSERT INTO points.outbox (topic, key, payload)
                    SELECT '{BILLING_DLQ}', NULL, json_build_object(
                        'reason', reason, 'detail', detail, 'raw', raw,
                        'topic', topic, 'partition', partition, 'offset', "offset")::text
                    FROM d ORDER BY partition, "offset"
                """,
                *zip(
                    *[(d.topic, d.partition, d.offset, d.reason, d.detail, d.raw)
                      for d in outcome.dead_letters],
                    strict=True,
                ),
            )  # fmt: skip

    async def save_expiry(self, accounts: Sequence[Account], entries: Sequence[Entry]) -> None:
        await self.save_accounts(accounts)
        await self.insert_entries(entries)

    async def save_accounts(self, accounts: Sequence[Account]) -> None:
        """Write the members and the lots that changed since they were loaded (at `flush`)."""
        self._accounts.update((account.member_id, account) for account in accounts)

    async def insert_entries(self, entries: Sequence[Entry]) -> None:
        """Append entries, in order, and their events to the outbox (at `flush`)."""
        self._entries += entries

    async def flush(self) -> None:
        """Send every write kept so far in one statement, one data-modifying CTE per table."""
        parts: list[tuple[str, str, list[Any]]] = []
        if self._accounts:
            parts += self._account_writes(list(self._accounts.values()))
        if self._new_holds:
            holds = self._new_holds
            parts.append(("new_holds", INSERT_HOLDS, [
                [h.hold_id for h, _ in holds], [h.member_id for h, _ in holds], [h.points for h, _ in holds],
                [h.reason for h, _ in holds], [h.status for h, _ in holds], [h.captured for h, _ in holds],
                [_lots_json(h.lots) for h, _ in holds], [sha for _, sha in holds],
                [h.expires_at for h, _ in holds],
            ]))  # fmt: skip
        if self._settled_holds:
            settled = list(self._settled_holds.values())
            parts.append(("settled_holds", UPDATE_HOLDS, [
                [h.hold_id for h in settled], [h.status for h in settled], [h.captured for h in settled],
                [_lots_json(h.lots) for h in settled],
            ]))  # fmt: skip
        main = "SELECT 1"
        if self._entries:
            entries = self._entries
            parts.append(("e", INSERT_ENTRIES, [
                [e.member_id for e in entries], [e.kind for e in entries], [e.delta for e in entries],
                [e.balance_after for e in entries], [e.debt_after for e in entries],
                [e.held_after for e in entries], [e.ref for e in entries], [e.occurred_at for e in entries],
            ]))  # fmt: skip
            main = ENTRY_EVENTS
        if not parts:
            return
        self._accounts, self._entries, self._new_holds, self._settled_holds = {}, [], [], {}
        ctes: list[str] = []
        args: list[Any] = []
        for name, sql, values in parts:
            ctes.append(f"{name} AS ({_shift_parameters(sql, len(args))})")
            args += values
        await self.conn.execute(f"WITH {', '.join(ctes)} {main}", *args)

    def _account_writes(self, accounts: Sequence[Account]) -> list[tuple[str, str, list[Any]]]:
        """The members' new figures, and their lots that changed since they were loaded."""
        parts: list[tuple[str, str, list[Any]]] = [("members", UPDATE_MEMBERS, [
            [a.member_id for a in accounts], [a.tier for a in accounts], [a.available for a in accounts],
            [a.held for a in accounts], [a.debt for a in accounts],
        ])]  # fmt: skip
        upserts: list[tuple[str, datetime, int]] = []
        deletes: list[tuple[str, datetime]] = []
        for account in accounts:
            before = self._lots_before.get(account.member_id, {})
            for expires_at, remaining in account.lots.items():
                if before.get(expires_at) != remaining:
                    upserts.append((account.member_id, expires_at, remaining))
            deletes.extend((account.member_id, e) for e in before if e not in account.lots)
            self._lots_before[account.member_id] = dict(account.lots)
        # The two touch different lots (those gone, those still there), as one statement needs.
        if deletes:
            parts.append(("gone_lots", DELETE_LOTS, [[m for m, _ in deletes], [e for _, e in deletes]]))
        if upserts:
            parts.append(("lots", UPSERT_LOTS, [
                [m for m, _, _ in upserts], [e for _, e, _ in upserts], [r for _, _, r in upserts],
            ]))  # fmt: skip
        return parts

    async def find_hold(self, hold_id: str) -> tuple[Hold, bytes] | None:
        return (await self.find_holds([hold_id])).get(hold_id)

    async def find_holds(self, hold_ids: Sequence[str]) -> dict[str, tuple[Hold, bytes]]:
        await self.flush()
        rows = await self.conn.fetch("SELECT * FROM points.holds WHERE hold_id = ANY($1::text[])", hold_ids)
        found = {}
        for row in rows:
            lots = {datetime.fromisoformat(e): p for e, p in json.loads(row["lots"]).items()}
            hold = Hold(
                row["hold_id"], row["member_id"], row["points"], row["reason"], row["expires_at"],
                row["status"], row["captured"], lots,
            )  # fmt: skip
            found[hold.hold_id] = (hold, bytes(row["request_sha256"]))
        return found

    async def insert_holds(self, holds: Sequence[tuple[Hold, bytes]]) -> None:
        """New holds (at `flush`)."""
        self._new_holds += holds

    async def update_hold(self, hold: Hold) -> None:
        await self.update_holds([hold])

    async def update_holds(self, holds: Sequence[Hold]) -> None:
        """Holds settled or changed (at `flush`)."""
        new = {h.hold_id for h, _ in self._new_holds}
        if any(hold.hold_id in new for hold in holds):
            await self.flush()  # one statement cannot insert a row and then update it
        self._settled_holds.update((hold.hold_id, hold) for hold in holds)

    async def pending_holds_due(self, now: datetime, limit: int) -> list[tuple[str, str]]:
        await self.flush()
        rows = await self.conn.fetch(
            """SELECT hold_id, member_id FROM points.holds
               WHERE status = 'pending' AND expires_at <= $1 ORDER BY expires_at LIMIT $2""",
            now,
            limit,
        )
        return [(r["hold_id"], r["member_id"]) for r in rows]

    async def find_request(self, kind: str, request_id: str) -> tuple[bytes, dict[str, Any]] | None:
        await self.flush()
        row = await self.conn.fetchrow(
            "SELECT request_sha256, response FROM points.requests WHERE kind = $1 AND request_id = $2",
            kind,
            request_id,
        )
        return None if row is None else (bytes(row["request_sha256"]), json.loads(row["response"]))

    async def insert_request(
        self, kind: str, request_id: str, member_id: str, sha256: bytes, response: dict[str, Any]
    ) -> None:
        await self.conn.execute(
            """INSERT INTO points.requests (kind, request_id, member_id, request_sha256, response)
               VALUES ($1, $2, $3, $4, $5)""",
            kind, request_id, member_id, sha256, json.dumps(response),
        )  # fmt: skip


def _shift_parameters(sql: str, shift: int) -> str:
    """`$1`, `$2`, ... of one part of a statement become `$1+shift`, ...: after the earlier parts'."""
    return _PARAMETER.sub(lambda m: f"${int(m[1]) + shift}", sql)


def _lots_json(lots: dict[datetime, int]) -> str:
    return json.dumps({e.isoformat(): p for e, p in lots.items()})


@asynccontextmanager
async def ledger_transaction(pool: asyncpg.Pool) -> AsyncIterator[PostgresLedger]:
    async with pool.acquire() as conn, conn.transaction():
        ledger = PostgresLedger(conn)
        yield ledger
        await ledger.flush()
