"""Postgres connection pool and the numbered, forward-only SQL migrations."""

from __future__ import annotations

import logging
from importlib import resources

import asyncpg

log = logging.getLogger(__name__)

# Services whose migrations `loyalty migrate` applies, in order.
MIGRATED_SERVICES = ("points", "redemption", "lottery")


async def create_pool(
    dsn: str,
    *,
    timezone: str = "Asia/Shanghai",
    min_size: int = 1,
    max_size: int = 10,
    reset_sessions: bool = True,
) -> asyncpg.Pool:
    """A pool; `reset_sessions=False` skips the reset query asyncpg sends on every release.

    That query (unlock advisory locks, close cursors, unlisten, RESET ALL) is a round trip
    per checkout; a service that leaves no session state behind can do without it (an open
    transaction is still rolled back).
    """
    # timezone: timestamps rendered by Postgres (outbox JSON) carry the business time zone's offset.
    # plan_cache_mode: asyncpg prepares every statement once per connection, and after five runs
    # Postgres may keep one generic plan for it. Planned while a table is new (a fresh deploy, a
    # benchmark), that plan is a sequential scan, kept until the next ANALYZE: measured, a batch
    # of holds looked up by id took 1.5 ms instead of 0.16 ms at 20,000 holds, and it was the
    # largest share of Postgres's time under load. Our statements take arrays from 1 to 1,000
    # long, which a generic plan guesses at 10 anyway; each is planned for its own arguments.
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=60,
        server_settings={"timezone": timezone, "plan_cache_mode": "force_custom_plan"},
        reset=None if reset_sessions else _keep_session,
    )
    assert pool is not None
    return pool


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to reset: asyncpg has already rolled back any transaction left open."""


def _migration_files(service: str) -> list[tuple[int, str, str]]:
    folder = resources.files(f"services.{service}").joinpath("migrations")
    if not folder.is_dir():  # a service with no tables yet
        return []
    found = []
    for item in folder.iterdir():
        if item.name.endswith(".sql"):
            version = int(item.name.split("_", 1)[0])
            found.append((version, item.name, item.read_text(encoding="utf-8")))
    return sorted(found)


async def migrate(dsn: str, services: tuple[str, ...] = MIGRATED_SERVICES) -> list[str]:
    """Apply every migration not applied yet; return the names applied now."""
    applied_now: list[str] = []
    conn = await asyncpg.connect(dsn)
    try:
        # One migrator at a time, however many replicas start together.
        await conn.execute("SELECT pg_advisory_lock(7261001)")
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS public.loyalty_migrations (
                   service text NOT NULL,
                   version int NOT NULL,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now(),
                   PRIMARY KEY (service, version))"""
        )
        for service in services:
            done = {
                r["version"]
                for r in await conn.fetch(
                    "SELECT version FROM public.loyalty_migrations WHERE service = $1", service
                )
            }
            for version, name, sql in _migration_files(service):
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO public.loyalty_migrations (service, version, name) VALUES ($1, $2, $3)",
                        service,
                        version,
                        name,
                    )
                log.debug("applied migration %s/%s", service, name)
                applied_now.append(f"{service}/{name}")
    finally:
        await conn.close()
    return applied_now


# The database is away (down, restarting, out of connections) or a transaction lost a lock
# race: not a fault of the request. A service answers these 503, "send it again".
DATABASE_AWAY: tuple[type[Exception], ...] = (
    ConnectionError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.LockNotAvailableError,
)

# Errors worth retrying: those, any socket error, and a concurrent insert of the same new id.
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    *DATABASE_AWAY,
    asyncpg.exceptions.UniqueViolationError,
)
