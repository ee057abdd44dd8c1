"""The points stream worker: billing.events.v1 → ledger, exactly once per event_id.

Consumed with a plain aiokafka consumer rather than a faust agent: faust's stream
layer alone peaks near 17k events/s on the reference machine, below the ingest
target (bench/ingest measures both). Offsets are committed only after the batch's
transaction commits; a crash in between replays the batch, and the ledger's
event_id boundary makes the replay a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from functools import partial
from typing import TypeVar
from zoneinfo import ZoneInfo

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from prometheus_client import start_http_server

from services.common.db import TRANSIENT_DB_ERRORS, create_pool
from services.common.kafka import BILLING_EVENTS, ensure_topics
from services.common.outbox import OutboxRelay
from services.points import metrics
from services.points.adapters.postgres import ledger_transaction
from services.points.domain.policy import EarningPolicy, load_policy
from services.points.service_layer.ingest import (
    BatchOutcome,
    DeadLetter,
    ExpiryUnitOfWorkFactory,
    ParsedBatch,
    Record,
    apply_batch,
    apply_parsed,
    expire_due_lots,
    parse_batch,
    reject_records,
)
from services.points.settings import PointsSettings

log = logging.getLogger("loyalty.points.worker")
T = TypeVar("T")
Fetched = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
PARSE_SLICE = 200


class PointsWorker:
    def __init__(self, settings: PointsSettings, policy: EarningPolicy) -> None:
        self.settings = settings
        self.policy = policy
        self.stop = asyncio.Event()

    async def run(self) -> None:
        settings = self.settings
        bootstrap = settings.resolved_kafka_bootstrap()
        pool = await create_pool(
            settings.resolved_database_url(), timezone=settings.business_timezone, max_size=4
        )
        await ensure_topics(bootstrap)
        consumers = [self._consumer(bootstrap) for _ in range(settings.ingest_consumers)]
        self.unit_of_work = partial(ledger_transaction, pool)
        try:
            for consumer in consumers:
                await consumer.start()
            relay = OutboxRelay(pool, bootstrap, "points")
            tasks = [
                *(
                    asyncio.create_task(self._consume(c), name=f"consume-{n}")
                    for n, c in enumerate(consumers)
                ),
                asyncio.create_task(relay.run(self.stop), name="outbox"),
                asyncio.create_task(self._expire_daily(), name="expiry"),
                asyncio.create_task(self._measure_liability(pool), name="liability"),
            ]
            log.info("points worker: %d consumers of %s from %s", len(consumers), BILLING_EVENTS, bootstrap)
            done, _ = await asyncio.wait(
                [*tasks, asyncio.create_task(self.stop.wait())],
                return_when=asyncio.FIRST_COMPLETED,
            )
            self.stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            for task in done:
                if task in tasks and task.exception():
                    raise task.exception()  # type: ignore[misc]
        finally:
            for consumer in consumers:
                with contextlib.suppress(Exception):
                    await consumer.stop()
            await pool.close()
            log.info("points worker stopped")

    def _consumer(self, bootstrap: str) -> AIOKafkaConsumer:
        """One member of the group: a member's events are in one partition, so each consumer
        applies its members' events in order, whatever the others do."""
        return AIOKafkaConsumer(
            BILLING_EVENTS,
            bootstrap_servers=bootstrap,
            group_id=self.settings.consumer_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.settings.ingest_batch_max,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            # Short group timeouts: a restarted worker takes its partitions back in seconds.
            session_timeout_ms=10000,
            heartbeat_interval_ms=3000,
            rebalance_timeout_ms=10000,
            max_poll_interval_ms=300000,
        )

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        # The next batch is fetched and parsed while this one's transaction waits on Postgres:
        # Python and the database then work at the same time instead of taking turns.
        upcoming = asyncio.create_task(self._fetch(consumer))
        try:
            while not self.stop.is_set():
                fetched, batch = await upcoming
                upcoming = asyncio.create_task(self._fetch(consumer))
                if not batch.records:
                    continue
                started = time.perf_counter()
                outcome = await self._apply(batch)
                if outcome is None:  # stopping while the database is away: the batch will replay
                    return
                await self._commit(consumer, fetched)
                self._observe(outcome, len(batch.records), time.perf_counter() - started)
        finally:
            upcoming.cancel()

    async def _fetch(self, consumer: AIOKafkaConsumer) -> tuple[Fetched, ParsedBatch]:
        fetched = await consumer.getmany(
            timeout_ms=max(self.settings.ingest_batch_wait_ms, 1), max_records=self.settings.ingest_batch_max
        )
        records = [
            Record(tp.topic, tp.partition, m.offset, m.value)
            for tp, messages in fetched.items()
            for m in messages
        ]
        # Parsed a slice at a time, giving way in between, so that the batch being applied gets
        # its database replies at once and the parsing fills the time Postgres is working.
        parts = []
        for start in range(0, len(records), PARSE_SLICE):
            parts.append(parse_batch(records[start : start + PARSE_SLICE]))
            await asyncio.sleep(0)
        return fetched, ParsedBatch(
            records, [e for p in parts for e in p.events], [r for p in parts for r in p.rejected]
        )

    async def _apply(self, batch: ParsedBatch) -> BatchOutcome | None:
        """Apply a batch; retry transient errors; never let an exception lose the batch."""
        try:
            return await self._retrying(lambda: apply_parsed(self.unit_of_work, batch, self.policy))
        except Exception:
            # Data that passed validation and still failed (or a bug): isolate the record.
            log.exception("batch of %d failed; applying its records one by one", len(batch.records))
            total = BatchOutcome()
            for record in batch.records:
                one = await self._apply_alone(record)
                if one is None:
                    return None
                total.applied += one.applied
                total.duplicates += one.duplicates
                total.dead_letters += one.dead_letters
                total.entries += one.entries
            return total

    async def _apply_alone(self, record: Record) -> BatchOutcome | None:
        try:
            return await self._retrying(lambda: apply_batch(self.unit_of_work, [record], self.policy))
        except Exception as exc:
            log.exception("record %s/%d@%d failed", record.topic, record.partition, record.offset)
            letter = DeadLetter.of(record, "processing_error", f"{type(exc).__name__}: {exc}")
            return await self._retrying(lambda: reject_records(self.unit_of_work, [letter]))

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T | None:
        """Retry transient database errors until they pass; None if told to stop meanwhile."""
        delay = 0.1
        while True:
            try:
                return await attempt()
            except TRANSIENT_DB_ERRORS as exc:
                if self.stop.is_set():
                    return None
                metrics.INGEST_RETRIES.inc()
                log.warning("transient database error (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _commit(self, consumer: AIOKafkaConsumer, fetched: Fetched) -> None:
        offsets = {tp: messages[-1].offset + 1 for tp, messages in fetched.items() if messages}
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # The ledger already has the batch; whoever reads these offsets again skips them.
            log.warning("offset commit failed (%s); the batch will be deduplicated on replay", exc)

    def _observe(self, outcome: BatchOutcome, size: int, seconds: float) -> None:
        metrics.INGEST_BATCH_EVENTS.observe(size)
        metrics.INGEST_BATCH_SECONDS.observe(seconds)
        metrics.INGEST_LAST_COMMIT.set_to_current_time()
        metrics.BILLING_EVENTS.labels("applied").inc(len(outcome.applied))
        metrics.BILLING_EVENTS.labels("duplicate").inc(outcome.duplicates)
        metrics.BILLING_EVENTS.labels("rejected").inc(len(outcome.dead_letters))
        for letter in outcome.dead_letters:
            metrics.BILLING_REJECTED.labels(letter.reason).inc()
        for entry in outcome.entries:
            if entry.kind == "accrual":
                metrics.POINTS_ACCRUED.inc(entry.delta)
            elif entry.kind == "clawback":
                metrics.POINTS_CLAWED_BACK.inc(-entry.delta)

    async def _expire_daily(self) -> None:
        zone = ZoneInfo(self.settings.business_timezone)
        while not self.stop.is_set():
            now = datetime.now(zone)
            next_run = datetime.combine(now.date(), self.settings.expiry_time, zone)
            if next_run <= now:
                next_run += timedelta(days=1)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), (next_run - now).total_seconds())
                return
            try:
                members, points = await run_expiry(self.unit_of_work, datetime.now(zone))
                log.info("daily expiry: %d points from %d members", points, members)
            except Exception:
                log.exception("daily expiry failed; it runs again tomorrow or with `loyalty expire`")

    async def _measure_liability(self, pool: asyncpg.Pool) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(*TRANSIENT_DB_ERRORS):
                row = await pool.fetchrow(
                    """SELECT count(*) AS members, coalesce(sum(available), 0) AS available,
                              coalesce(sum(held), 0) AS held, coalesce(sum(debt), 0) AS debt
                       FROM points.members"""
                )
                assert row is not None
                for state in ("available", "held", "debt"):
                    metrics.POINTS_LIABILITY.labels(state).set(row[state])
                metrics.MEMBERS.set(row["members"])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 15)


async def run_expiry(unit_of_work: ExpiryUnitOfWorkFactory, as_of: datetime) -> tuple[int, int]:
    """Expire every lot due by `as_of`; return (members touched, points expired)."""
    members = points = 0
    async for progress in expire_due_lots(unit_of_work, as_of):
        members += progress.members
        points += progress.points
        metrics.POINTS_EXPIRED.inc(progress.points)
    return members, points


def run_worker(settings: PointsSettings) -> None:
    import uvloop

    policy = load_policy(settings.policy_file)
    worker = PointsWorker(settings, policy)
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port, addr="0.0.0.0")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, worker.stop.set)
        await worker.run()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
