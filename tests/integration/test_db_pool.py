"""The services' Postgres pool: lookups stay on their index however small a table was at start."""

from __future__ import annotations

from services.common.db import create_pool
from tests.integration.conftest import PostgresServer, run

LOOKUP = "SELECT * FROM held WHERE hold_id = ANY($1::text[])"


async def _sequential_scans_after_growth(dsn: str) -> int:
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            await conn.execute("CREATE TABLE held (hold_id text PRIMARY KEY, member_id text NOT NULL)")
            await conn.execute("INSERT INTO held VALUES ('h-a', 'm-a'), ('h-b', 'm-b')")
            await conn.execute("ANALYZE held")  # as autovacuum does while a fresh deploy's table is small
            for n in range(8):  # past the five runs after which Postgres may settle on a generic plan
                await conn.fetch(LOOKUP, [f"h-{n}"])
            await conn.execute(
                "INSERT INTO held SELECT 'h' || g, 'm' || g FROM generate_series(1, 20000) AS g"
            )
            count_scans = "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relid = 'held'::regclass"
            async with conn.transaction():  # this session's counts, not yet flushed to the shared ones
                before = await conn.fetchval(count_scans)
                found = await conn.fetch(LOOKUP, ["h17", "h4242"])
                after = await conn.fetchval(count_scans)
        assert sorted(r["member_id"] for r in found) == ["m17", "m4242"]
        return int(after - before)
    finally:
        await pool.close()


def test_a_lookup_by_id_uses_the_index_after_its_table_grew_from_nearly_empty(
    postgres: PostgresServer,
) -> None:
    # A generic plan made at two rows would read all 20,002 rows on every lookup, for good.
    assert run(_sequential_scans_after_growth(postgres.new_database())) == 0
