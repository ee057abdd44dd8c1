"""Topics and producers, on aiokafka."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaProducer
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
