"""Topics, producers and consumer lag, on aiokafka."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

log = logging.getLogger(__name__)

BILLING_EVENTS = "billing.events.v1"
BILLING_DLQ = "billing.events.dlq.v1"
POINTS_ENTRIES = "points.entries.v1"
REDEMPTION_ORDERS = "redemption.orders.v1"
LOTTERY_DRAWS = "lottery.draws.v1"

# Partition counts for the embedded broker; production sizes them in deploy/.
DEFAULT_PARTITIONS = {
    BILLING_EVENTS: 4,
    BILLING_DLQ: 1,
    POINTS_ENTRIES: 4,
    REDEMPTION_ORDERS: 2,
    LOTTERY_DRAWS: 2,
}


async def ensure_topics(bootstrap: str, partitions: dict[str, int] | None = None) -> None:
    """Create the platform's topics that do not exist yet."""
    wanted = partitions or DEFAULT_PARTITIONS
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(name, n, 1) for name, n in wanted.items() if name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
    finally:
        await admin.close()


def make_producer(bootstrap: str) -> AIOKafkaProducer:
    # acks=all: an outbox row is deleted only once every in-sync replica has the event.
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        max_batch_size=512 * 1024,
        request_timeout_ms=30000,
    )


async def consumer_lag(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """Lag per partition of `group` on `topic`: end offset minus committed offset."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if parts is None:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        ends = await consumer.end_offsets(tps)
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        lag = {}
        for tp in tps:
            meta = committed.get(tp)
            done = meta.offset if meta is not None and meta.offset >= 0 else 0
            lag[tp.partition] = max(0, ends[tp] - done)
        return lag
    finally:
        await consumer.stop()
        await admin.close()


async def broker_reachable(bootstrap: str, within: float = 1.0) -> bool:
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), within)
        except (OSError, TimeoutError, ValueError, KafkaError):
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False
