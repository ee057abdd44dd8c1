"""The lottery's tables in Postgres: hand-written SQL, one connection per unit of work."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

import asyncpg

from services.common.kafka import LOTTERY_DRAWS
from services.lottery.domain.campaign import Campaign, Participant, Prize
from services.lottery.domain.draws import Draw, Entry
from services.lottery.domain.events import Event
from services.lottery.domain.reveal import RevealedDraw, RevealedEntry
from services.lottery.service_layer.ports import StoredCampaign

Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

# Draws and entries take this advisory lock shared, close and reveal take it exclusive
# (second key: hashtext(campaign_id)). An advisory lock, not a row lock on the campaign:
# a thousand shared row locks a second would each write a multixact on that one row.
CAMPAIGN_LOCK_CLASS = 7261003

DRAW_COLUMNS = """campaign_id, idempotency_key, draw_id, member_id, client_seed, request_sha256, hold_id,
    cost_points, status, payment, error, detail, nonce, prize_id, prize_seq, prize_points, prize_credit,
    drawn_at"""
ENTRY_COLUMNS = """campaign_id, member_id, hold_id, cost_points, status, payment, error, detail, rank,
    entered_at"""


def _draw(row: asyncpg.Record) -> Draw:
    values = dict(row.items())
    values["request_sha256"] = bytes(values["request_sha256"])
    return Draw(**values)


def _entry(row: asyncpg.Record) -> Entry:
    return Entry(**dict(row.items()))


def _count(status: str) -> int:
    """asyncpg answers "UPDATE 3"; the number is how many rows the statement changed."""
    return int(status.rsplit(" ", 1)[-1])


class PostgresLottery:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # -- campaigns ------------------------------------------------------------------------------

    async def insert_campaign(self, stored: StoredCampaign) -> bool:
        c = stored.campaign
        inserted = await self.conn.fetchval(
            """INSERT INTO lottery.campaigns
                   (campaign_id, name, kind, cost_points, starts_at, ends_at, per_member_limit,
                    per_member_daily_limit, seats, server_seed, seed_commitment, definition_sha256)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
               ON CONFLICT (campaign_id) DO NOTHING
               RETURNING true""",
            c.campaign_id, c.name, c.kind, c.cost_points, c.starts_at, c.ends_at, c.per_member_limit,
            c.per_member_daily_limit, c.seats, stored.server_seed, c.seed_commitment,
            stored.definition_sha256,
        )  # fmt: skip
        if not inserted:
            return False
        if c.prizes:
            await self.conn.execute(
                """INSERT INTO lottery.prizes
                       (campaign_id, position, prize_id, name, stock, weight_ppm, points)
                   SELECT $1, * FROM unnest($2::int[], $3::text[], $4::text[], $5::bigint[], $6::int[],
                                            $7::bigint[])""",
                c.campaign_id,
                list(range(len(c.prizes))),
                [p.prize_id for p in c.prizes],
                [p.name for p in c.prizes],
                [p.stock for p in c.prizes],
                [p.weight_ppm for p in c.prizes],
                [p.points for p in c.prizes],
            )
        return True

    async def find_campaign(self, campaign_id: str) -> StoredCampaign | None:
        row = await self.conn.fetchrow("SELECT * FROM lottery.campaigns WHERE campaign_id = $1", campaign_id)
        if row is None:
            return None
        prizes = await self.conn.fetch(
            """SELECT prize_id, name, stock, weight_ppm, points FROM lottery.prizes
               WHERE campaign_id = $1 ORDER BY position""",
            campaign_id,
        )
        campaign = Campaign(
            campaign_id=row["campaign_id"],
            name=row["name"],
            kind=row["kind"],
            cost_points=row["cost_points"],
            seed_commitment=row["seed_commitment"],
            starts_at=row["starts_at"],
            ends_at=row["ends_at"],
            per_member_limit=row["per_member_limit"],
            per_member_daily_limit=row["per_member_daily_limit"],
            prizes=tuple(Prize(**dict(p.items())) for p in prizes),
            seats=row["seats"],
            closed_at=row["closed_at"],
            public_entropy=row["public_entropy"],
        )
        return StoredCampaign(campaign, bytes(row["server_seed"]), bytes(row["definition_sha256"]))

    async def prize_rolls(self, campaign_id: str) -> dict[str, int]:
        rows = await self.conn.fetch(
            "SELECT prize_id, rolled FROM lottery.prizes WHERE campaign_id = $1", campaign_id
        )
        return {r["prize_id"]: r["rolled"] for r in rows}

    async def lock_campaign_shared(self, campaign_id: str) -> datetime | None:
        await self.conn.execute(
            "SELECT pg_advisory_xact_lock_shared($1, hashtext($2))", CAMPAIGN_LOCK_CLASS, campaign_id
        )
        # A statement of its own: its snapshot is taken after the lock was granted.
        closed_at: datetime | None = await self.conn.fetchval(
            "SELECT closed_at FROM lottery.campaigns WHERE campaign_id = $1", campaign_id
        )
        return closed_at

    async def lock_campaign_exclusive(self, campaign_id: str) -> tuple[datetime | None, str | None]:
        await self.conn.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))", CAMPAIGN_LOCK_CLASS, campaign_id
        )
        row = await self.conn.fetchrow(
            "SELECT closed_at, public_entropy FROM lottery.campaigns WHERE campaign_id = $1 FOR UPDATE",
            campaign_id,
        )
        assert row is not None
        return row["closed_at"], row["public_entropy"]

    async def close_campaign(self, campaign: Campaign, events: Sequence[Event]) -> None:
        await self.conn.execute(
            "UPDATE lottery.campaigns SET closed_at = $2, public_entropy = $3 WHERE campaign_id = $1",
            campaign.campaign_id,
            campaign.closed_at,
            campaign.public_entropy,
        )
        await self._publish(events)

    async def draw_count(self, campaign_id: str) -> int:
        count: int = await self.conn.fetchval(
            "SELECT count(*) FROM lottery.draws WHERE campaign_id = $1 AND nonce IS NOT NULL", campaign_id
        )
        return count

    async def prizes_left(self) -> list[tuple[str, str, int]]:
        rows = await self.conn.fetch(
            """SELECT p.campaign_id, p.prize_id, greatest(p.stock - p.rolled, 0) AS remaining
               FROM lottery.prizes p JOIN lottery.campaigns c USING (campaign_id)
               WHERE c.closed_at IS NULL OR c.closed_at > now() - interval '1 day'"""
        )
        return [(r["campaign_id"], r["prize_id"], r["remaining"]) for r in rows]

    # -- draws ----------------------------------------------------------------------------------

    async def insert_draws(self, draws: Sequence[Draw]) -> list[Draw | None]:
        """Record new draw requests; for each, None, or the request that had its key before."""
        inserted = await self.conn.fetch(
            """INSERT INTO lottery.draws (campaign_id, idempotency_key, draw_id, member_id, client_seed,
                   request_sha256, hold_id, cost_points, status, payment)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                    $6::bytea[], $7::text[], $8::bigint[], $9::text[], $10::text[])
               ON CONFLICT (campaign_id, idempotency_key) DO NOTHING
               RETURNING campaign_id, idempotency_key""",
            [d.campaign_id for d in draws], [d.idempotency_key for d in draws], [d.draw_id for d in draws],
            [d.member_id for d in draws], [d.client_seed for d in draws], [d.request_sha256 for d in draws],
            [d.hold_id for d in draws], [d.cost_points for d in draws], [d.status for d in draws],
            [d.payment for d in draws],
        )  # fmt: skip
        new = {(r["campaign_id"], r["idempotency_key"]) for r in inserted}
        earlier: list[Draw | None] = []
        for d in draws:
            key = (d.campaign_id, d.idempotency_key)
            earlier.append(None if key in new else await self.find_draw(*key))
        return earlier

    async def find_draw(self, campaign_id: str, idempotency_key: str) -> Draw | None:
        row = await self.conn.fetchrow(
            f"SELECT {DRAW_COLUMNS} FROM lottery.draws WHERE campaign_id = $1 AND idempotency_key = $2",
            campaign_id,
            idempotency_key,
        )
        return None if row is None else _draw(row)

    async def lock_draws(self, campaign_id: str, idempotency_keys: Sequence[str]) -> dict[str, Draw]:
        rows = await self.conn.fetch(
            f"""SELECT {DRAW_COLUMNS} FROM lottery.draws
                WHERE campaign_id = $1 AND idempotency_key = ANY($2::text[])
                ORDER BY idempotency_key FOR UPDATE""",
            campaign_id,
            sorted(idempotency_keys),
        )
        found = {row["idempotency_key"]: _draw(row) for row in rows}
        assert len(found) == len(set(idempotency_keys)), "draw requests are never deleted"
        return found

    async def find_participant(self, campaign_id: str, member_id: str) -> Participant | None:
        row = await self.conn.fetchrow(
            """SELECT draws, day, day_draws FROM lottery.participants
               WHERE campaign_id = $1 AND member_id = $2""",
            campaign_id,
            member_id,
        )
        return None if row is None else Participant(campaign_id, member_id, *row.values())

    async def lock_participants(self, campaign_id: str, member_ids: Sequence[str]) -> dict[str, Participant]:
        # DO UPDATE (not DO NOTHING) so that the rows come back locked, new or not; in member
        # order, as every transaction locks them.
        rows = await self.conn.fetch(
            """INSERT INTO lottery.participants AS p (campaign_id, member_id)
               SELECT $1, m FROM unnest($2::text[]) AS m ORDER BY m
               ON CONFLICT (campaign_id, member_id) DO UPDATE SET draws = p.draws
               RETURNING member_id, draws, day, day_draws""",
            campaign_id,
            sorted(set(member_ids)),
        )
        return {
            r["member_id"]: Participant(campaign_id, r["member_id"], r["draws"], r["day"], r["day_draws"])
            for r in rows
        }

    async def take_prize_rolls(self, campaign_id: str, rolls: dict[str, int]) -> dict[str, int]:
        taken = {}
        for prize_id in sorted(rolls):  # one prize row at a time, in the same order everywhere
            taken[prize_id] = await self.conn.fetchval(
                """UPDATE lottery.prizes SET rolled = rolled + $3
                   WHERE campaign_id = $1 AND prize_id = $2 RETURNING rolled""",
                campaign_id,
                prize_id,
                rolls[prize_id],
            )
        return taken

    async def save_drawn(
        self, draws: Sequence[Draw], participants: Sequence[Participant], events: Sequence[Event]
    ) -> None:
        await self.conn.execute(
            f"""WITH d AS (
                    UPDATE lottery.draws d SET status = 'drawn', nonce = u.nonce, prize_id = u.prize_id,
                        prize_seq = u.prize_seq, prize_points = u.prize_points, prize_credit = u.prize_credit,
                        drawn_at = u.drawn_at, updated_at = now()
                    FROM unnest($2::text[], $3::int[], $4::text[], $5::bigint[], $6::bigint[], $7::text[],
                                $8::timestamptz[])
                         AS u(key, nonce, prize_id, prize_seq, prize_points, prize_credit, drawn_at)
                    WHERE d.campaign_id = $1 AND d.idempotency_key = u.key),
                p AS (
                    UPDATE lottery.participants p SET draws = u.draws, day = u.day, day_draws = u.day_draws
                    FROM unnest($9::text[], $10::int[], $11::date[], $12::int[])
                         AS u(member_id, draws, day, day_draws)
                    WHERE p.campaign_id = $1 AND p.member_id = u.member_id)
                INSERT INTO lottery.outbox (topic, key, payload)
                SELECT '{LOTTERY_DRAWS}', e.key, e.payload
                FROM unnest($13::text[], $14::text[]) WITH ORDINALITY AS e(key, payload, n) ORDER BY e.n""",
            draws[0].campaign_id,
            [d.idempotency_key for d in draws], [d.nonce for d in draws], [d.prize_id for d in draws],
            [d.prize_seq for d in draws], [d.prize_points for d in draws], [d.prize_credit for d in draws],
            [d.drawn_at for d in draws],
            [p.member_id for p in participants], [p.draws for p in participants],
            [p.day for p in participants], [p.day_draws for p in participants],
            [e.key for e in events], [json.dumps(e.payload) for e in events],
        )  # fmt: skip

    async def save_refused(self, draw: Draw) -> Draw:
        row = await self.conn.fetchrow(
            f"""UPDATE lottery.draws SET status = 'refused', error = $3, detail = $4, updated_at = now()
                WHERE campaign_id = $1 AND idempotency_key = $2 AND status = 'pending'
                RETURNING {DRAW_COLUMNS}""",
            draw.campaign_id,
            draw.idempotency_key,
            draw.error,
            draw.detail,
        )
        if row is not None:
            return _draw(row)
        current = await self.find_draw(draw.campaign_id, draw.idempotency_key)
        assert current is not None
        return current

    async def save_draw_settlement(self, draws: Sequence[Draw]) -> None:
        await self.conn.execute(
            """UPDATE lottery.draws d
               SET payment = u.payment, prize_credit = u.prize_credit, updated_at = now()
               FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
                    AS u(campaign_id, key, payment, prize_credit)
               WHERE d.campaign_id = u.campaign_id AND d.idempotency_key = u.key""",
            [d.campaign_id for d in draws],
            [d.idempotency_key for d in draws],
            [d.payment for d in draws],
            [d.prize_credit for d in draws],
        )

    async def abandon_pending_draws(self, before: datetime, limit: int) -> int:
        # SKIP LOCKED: a request deciding its draw right now holds the row; it is not abandoned.
        status = await self.conn.execute(
            """UPDATE lottery.draws SET status = 'refused', error = 'draw_interrupted', updated_at = now(),
                   detail = 'the request was interrupted before the draw was made; send a new Idempotency-Key'
               WHERE (campaign_id, idempotency_key) IN (
                   SELECT campaign_id, idempotency_key FROM lottery.draws
                   WHERE status = 'pending' AND updated_at < $1
                   LIMIT $2 FOR UPDATE SKIP LOCKED)""",
            before,
            limit,
        )
        return _count(status)

    async def draws_to_settle(self, before: datetime, limit: int) -> list[Draw]:
        # The predicate of the partial index draws_unsettled, so that the index serves it.
        rows = await self.conn.fetch(
            f"""SELECT {DRAW_COLUMNS} FROM lottery.draws
                WHERE (status = 'pending' OR payment = 'held' OR prize_credit = 'due') AND updated_at < $1
                ORDER BY updated_at LIMIT $2""",
            before,
            limit,
        )
        return [d for d in map(_draw, rows) if d.status != "pending"]

    async def revealed_draws(self, campaign_id: str) -> list[RevealedDraw]:
        rows = await self.conn.fetch(
            """SELECT draw_id, member_id, nonce, client_seed, prize_id, prize_seq, drawn_at
               FROM lottery.draws WHERE campaign_id = $1 AND nonce IS NOT NULL
               ORDER BY member_id, nonce""",
            campaign_id,
        )
        return [RevealedDraw(**dict(r.items())) for r in rows]

    # -- ballot entries -------------------------------------------------------------------------

    async def insert_entry(self, entry: Entry) -> Entry | None:
        while True:
            inserted = await self.conn.fetchval(
                """INSERT INTO lottery.entries (campaign_id, member_id, hold_id, cost_points, status, payment)
                   VALUES ($1, $2, $3, $4, $5, $6)
                   ON CONFLICT (campaign_id, member_id) DO NOTHING
                   RETURNING true""",
                entry.campaign_id, entry.member_id, entry.hold_id, entry.cost_points, entry.status,
                entry.payment,
            )  # fmt: skip
            if inserted:
                return None
            found = await self.find_entry(entry.campaign_id, entry.member_id)
            if found is not None:
                return found
            # The other entry was refused and deleted in between: try again.

    async def find_entry(self, campaign_id: str, member_id: str) -> Entry | None:
        row = await self.conn.fetchrow(
            f"SELECT {ENTRY_COLUMNS} FROM lottery.entries WHERE campaign_id = $1 AND member_id = $2",
            campaign_id,
            member_id,
        )
        return None if row is None else _entry(row)

    async def lock_entry(self, campaign_id: str, member_id: str) -> Entry | None:
        row = await self.conn.fetchrow(
            f"""SELECT {ENTRY_COLUMNS} FROM lottery.entries
                WHERE campaign_id = $1 AND member_id = $2 FOR UPDATE""",
            campaign_id,
            member_id,
        )
        return None if row is None else _entry(row)

    async def save_entered(self, entry: Entry, event: Event) -> None:
        await self.conn.execute(
            f"""WITH e AS (
                    UPDATE lottery.entries SET status = $3, entered_at = $4, updated_at = now()
                    WHERE campaign_id = $1 AND member_id = $2)
                INSERT INTO lottery.outbox (topic, key, payload) VALUES ('{LOTTERY_DRAWS}', $5, $6)""",
            entry.campaign_id, entry.member_id, entry.status, entry.entered_at,
            event.key, json.dumps(event.payload),
        )  # fmt: skip

    async def save_refused_entry(self, entry: Entry) -> Entry | None:
        row = await self.conn.fetchrow(
            f"""UPDATE lottery.entries SET status = 'refused', error = $3, detail = $4, updated_at = now()
                WHERE campaign_id = $1 AND member_id = $2 AND status = 'pending'
                RETURNING {ENTRY_COLUMNS}""",
            entry.campaign_id,
            entry.member_id,
            entry.error,
            entry.detail,
        )
        return _entry(row) if row is not None else await self.find_entry(entry.campaign_id, entry.member_id)

    async def delete_refused_entry(self, entry: Entry) -> None:
        await self.conn.execute(
            """DELETE FROM lottery.entries
               WHERE campaign_id = $1 AND member_id = $2 AND status = 'refused'
                 AND hold_id IS NOT DISTINCT FROM $3""",
            entry.campaign_id,
            entry.member_id,
            entry.hold_id,
        )

    async def entered_members(self, campaign_id: str) -> list[str]:
        rows = await self.conn.fetch(
            "SELECT member_id FROM lottery.entries WHERE campaign_id = $1 AND status = 'entered'", campaign_id
        )
        return [r["member_id"] for r in rows]

    async def save_ballot_results(self, campaign_id: str, ranked: Sequence[str], seats: int) -> None:
        await self.conn.execute(
            """UPDATE lottery.entries e
               SET status = CASE WHEN u.rank <= $3 THEN 'won' ELSE 'lost' END, rank = u.rank,
                   updated_at = now()
               FROM unnest($2::text[]) WITH ORDINALITY AS u(member_id, rank)
               WHERE e.campaign_id = $1 AND e.member_id = u.member_id""",
            campaign_id,
            list(ranked),
            seats,
        )

    async def save_entry_settlement(self, entries: Sequence[Entry]) -> None:
        await self.conn.execute(
            """UPDATE lottery.entries e SET payment = u.payment, updated_at = now()
               FROM unnest($1::text[], $2::text[], $3::text[]) AS u(campaign_id, member_id, payment)
               WHERE e.campaign_id = u.campaign_id AND e.member_id = u.member_id""",
            [e.campaign_id for e in entries],
            [e.member_id for e in entries],
            [e.payment for e in entries],
        )

    async def abandon_pending_entries(self, before: datetime, limit: int) -> int:
        status = await self.conn.execute(
            """UPDATE lottery.entries SET status = 'refused', error = 'entry_interrupted', updated_at = now(),
                   detail = 'the request was interrupted before the entry was made'
               WHERE (campaign_id, member_id) IN (
                   SELECT campaign_id, member_id FROM lottery.entries
                   WHERE status = 'pending' AND updated_at < $1
                   LIMIT $2 FOR UPDATE SKIP LOCKED)""",
            before,
            limit,
        )
        return _count(status)

    async def entries_to_settle(self, campaign_id: str | None, limit: int) -> list[Entry]:
        rows = await self.conn.fetch(
            f"""SELECT {ENTRY_COLUMNS} FROM lottery.entries
                WHERE status IN ('won', 'lost') AND payment = 'held'
                  AND ($1::text IS NULL OR campaign_id = $1)
                LIMIT $2""",
            campaign_id,
            limit,
        )
        return [_entry(r) for r in rows]

    async def refused_entries(self, before: datetime, limit: int) -> list[Entry]:
        rows = await self.conn.fetch(
            f"""SELECT {ENTRY_COLUMNS} FROM lottery.entries
                WHERE status = 'refused' AND updated_at < $1 LIMIT $2""",
            before,
            limit,
        )
        return [_entry(r) for r in rows]

    async def entry_counts(self, campaign_id: str) -> dict[str, int]:
        rows = await self.conn.fetch(
            "SELECT status, count(*) AS n FROM lottery.entries WHERE campaign_id = $1 GROUP BY status",
            campaign_id,
        )
        return {r["status"]: r["n"] for r in rows}

    async def unsettled_entry_count(self, campaign_id: str) -> int:
        count: int = await self.conn.fetchval(
            """SELECT count(*) FROM lottery.entries
               WHERE campaign_id = $1 AND status IN ('won', 'lost') AND payment = 'held'""",
            campaign_id,
        )
        return count

    async def winners(self, campaign_id: str) -> list[str]:
        rows = await self.conn.fetch(
            "SELECT member_id FROM lottery.entries WHERE campaign_id = $1 AND status = 'won' ORDER BY rank",
            campaign_id,
        )
        return [r["member_id"] for r in rows]

    async def revealed_entries(self, campaign_id: str) -> list[RevealedEntry]:
        rows = await self.conn.fetch(
            """SELECT member_id, rank, status = 'won' AS won FROM lottery.entries
               WHERE campaign_id = $1 AND status IN ('won', 'lost') ORDER BY rank""",
            campaign_id,
        )
        return [RevealedEntry(r["member_id"], r["rank"], r["won"]) for r in rows]

    # -- outbox ---------------------------------------------------------------------------------

    async def _publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        await self.conn.execute(
            f"""INSERT INTO lottery.outbox (topic, key, payload)
                SELECT '{LOTTERY_DRAWS}', k, p
                FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS e(k, p, n)
                ORDER BY n""",
            [e.key for e in events],
            [json.dumps(e.payload) for e in events],
        )


class PostgresStore:
    """The lottery's Store port over a connection pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresLottery]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield PostgresLottery(conn)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[PostgresLottery]:
        async with self.pool.acquire() as conn:
            yield PostgresLottery(conn)
