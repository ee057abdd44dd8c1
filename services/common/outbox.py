"""Transactional outbox relay: moves committed events from `<schema>.outbox` to Kafka.

A service writes its event rows in the same transaction as the state change; this
relay publishes them and deletes them only after the broker acknowledged them, so
an event is never lost (and, after a crash between the two, may be sent twice;
every event carries its own id for consumers to deduplicate).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections import Counter

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from services.common.kafka import make_producer
from services.common.metrics import OUTBOX_BACKLOG, OUTBOX_OLDEST_SECONDS, OUTBOX_PUBLISHED

log = logging.getLogger(__name__)


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        bootstrap: str,
        schema: str,
        *,
        batch_size: int = 2000,
        idle_seconds: float = 0.2,
    ) -> None:
        self._pool = pool
        self._bootstrap = bootstrap
        self._producer: AIOKafkaProducer | None = None
        self._schema = schema
        self._batch_size = batch_size
        self._idle_seconds = idle_seconds
        # One relay per schema publishes at a time, so events of one key keep their order.
        self._lock_id = zlib.crc32(f"outbox:{schema}".encode())

    async def publish_once(self) -> int:
        """Publish up to one batch; return how many events went out."""
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", self._lock_id):
                return 0
            rows = await conn.fetch(
                f"SELECT id, topic, key, payload FROM {self._schema}.outbox ORDER BY id LIMIT $1",
                self._batch_size,
            )
            if not rows:
                return 0
            await self._send(rows)
            await conn.execute(
                f"DELETE FROM {self._schema}.outbox WHERE id = ANY($1::bigint[])",
                [r["id"] for r in rows],
            )
        for topic, count in Counter(r["topic"] for r in rows).items():
            OUTBOX_PUBLISHED.labels(self._schema, topic).inc(count)
        return len(rows)

    async def _send(self, rows: list[asyncpg.Record]) -> None:
        """Send the rows as record batches, one run per partition, and wait for every ack.

        Far cheaper than one `send()` per event, which costs a future and a trip through the
        accumulator each. Partitions are chosen by key exactly as `send()` would, so events of
        one member stay on one partition, in outbox order.
        """
        producer = self._producer
        assert producer is not None
        partitions: dict[str, list[int]] = {}
        runs: dict[tuple[str, int], list[tuple[bytes | None, bytes]]] = {}
        for r in rows:
            topic = r["topic"]
            if topic not in partitions:
                partitions[topic] = sorted(await producer.partitions_for(topic))
            key = r["key"].encode() if r["key"] is not None else None
            partition = DefaultPartitioner()(key, partitions[topic], partitions[topic])
            runs.setdefault((topic, partition), []).append((key, r["payload"].encode()))
        acks = []
        for (topic, partition), records in runs.items():
            batch = producer.create_batch()
            for key, value in records:
                if batch.append(key=key, value=value, timestamp=None) is None:  # full: send, start anew
                    acks.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)  # an empty batch takes any record
            acks.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*acks)

    async def measure_backlog(self) -> None:
        row = await self._pool.fetchrow(
            f"""SELECT count(*) AS n,
                       coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age
                FROM {self._schema}.outbox"""
        )
        assert row is not None
        OUTBOX_BACKLOG.labels(self._schema).set(row["n"])
        OUTBOX_OLDEST_SECONDS.labels(self._schema).set(float(row["age"]))

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set; broker or database trouble is retried, never fatal.

        The producer starts here, not with the service: a service comes up (and says it is
        not ready) while the broker is away, and its events wait in the outbox meanwhile.
        """
        try:
            await self._start_producer(stop)
            await self._relay(stop)
        finally:
            if self._producer is not None:
                with contextlib.suppress(Exception):
                    await self._producer.stop()

    async def _start_producer(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            producer = make_producer(self._bootstrap)
            try:
                await producer.start()
            except Exception as exc:  # broker not there yet
                with contextlib.suppress(Exception):
                    await producer.stop()
                log.warning("outbox relay for %s: broker unavailable (%s); retrying", self._schema, exc)
                await _sleep_or_stop(stop, 2.0)
                continue
            self._producer = producer
            return

    async def _relay(self, stop: asyncio.Event) -> None:
        last_measure = 0.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                sent = await self.publish_once()
                if loop.time() - last_measure > 5:
                    await self.measure_backlog()
                    last_measure = loop.time()
            except Exception as exc:  # the relay must outlive any broker or database hiccup
                # Nothing is deleted unless it was acknowledged; try again shortly.
                log.warning("outbox relay for %s: %s; retrying", self._schema, exc)
                await _sleep_or_stop(stop, 1.0)
                continue
            if sent < self._batch_size:
                await _sleep_or_stop(stop, self._idle_seconds)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
