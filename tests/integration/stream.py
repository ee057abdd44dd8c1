"""Producing to and reading back from the broker in tests."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.common.kafka import ensure_topics


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]) -> list[tuple[int, int]]:
    """Send records in order; return each one's (partition, offset)."""

    async def send_all() -> list[tuple[int, int]]:
        await ensure_topics(bootstrap)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        await producer.start()
        try:
            futures = [await producer.send(topic, value, key=key) for key, value in records]
            sent = await asyncio.gather(*futures)
            return [(m.partition, m.offset) for m in sent]
        finally:
            await producer.stop()

    return asyncio.run(send_all())


def read_topic(bootstrap: str, topic: str, expect: int, timeout: float = 30) -> list[dict[str, Any]]:
    """Read a topic from the start until `expect` records came (or the time is up)."""
    return [r.value for r in read_records(bootstrap, topic, expect, timeout)]


@dataclass(frozen=True)
class Published:
    key: bytes | None
    partition: int
    offset: int
    value: dict[str, Any]


def read_records(bootstrap: str, topic: str, expect: int, timeout: float = 30) -> list[Published]:
    """Like read_topic, with each record's key and position."""

    async def read() -> list[Published]:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
        )
        await consumer.start()
        records: list[Published] = []

        def keep(fetched: dict[Any, list[Any]]) -> None:
            for messages in fetched.values():
                records.extend(Published(m.key, m.partition, m.offset, json.loads(m.value)) for m in messages)

        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while len(records) < expect and loop.time() < deadline:
                keep(await consumer.getmany(timeout_ms=500))
            # A little longer, to catch anything beyond what was expected.
            keep(await consumer.getmany(timeout_ms=1000))
        finally:
            await consumer.stop()
        return records

    return asyncio.run(read())


def event(
    event_id: str,
    member_id: str,
    type_: str,
    amount_fen: int | None = None,
    tier: str | None = "standard",
    occurred_at: str = "2026-03-15T10:00:00+08:00",
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"event_id": event_id, "member_id": member_id, "type": type_}
    if amount_fen is not None:
        body["amount_fen"] = amount_fen
    if tier is not None:
        body["tier"] = tier
    body["occurred_at"] = occurred_at
    body.update(extra)
    return body


def encoded(body: dict[str, Any]) -> tuple[bytes | None, bytes]:
    key = body.get("member_id")
    return (key.encode() if isinstance(key, str) else None, json.dumps(body).encode())
