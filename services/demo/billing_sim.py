"""A simulated billing system: a month of realistic billing events for N members."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

SHANGHAI = timezone(timedelta(hours=8))
TIER_SHARES = (("standard", 0.60), ("silver", 0.25), ("gold", 0.12), ("diamond", 0.03))
PRODUCTS = ("mobile", "broadband", "iptv", "mobile+broadband")
RECHARGES_FEN = (3000, 5000, 10000, 20000, 30000)


@dataclass(frozen=True)
class SimRecord:
    key: bytes | None
    value: bytes
    kind: str  # "event", "duplicate" or "malformed:<what>"


@dataclass
class SimSummary:
    events: int = 0
    duplicates: int = 0
    malformed: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.events + self.duplicates + sum(self.malformed.values())


def member_id(n: int) -> str:
    return f"m{n:07d}"


def simulate(
    members: int,
    events: int,
    *,
    seed: int = 1,
    month: date | None = None,
    duplicates: float = 0.0,
    malformed: float = 0.0,
) -> Iterator[SimRecord]:
    """Yield `events` valid billing events (plus re-sends and malformed records) for one month.

    Postpaid members settle bills, prepaid members top up; a few bills are corrected
    (mostly refunds), contracts renewed and services activated. Deterministic per seed.
    """
    rng = random.Random(seed)
    month = month or datetime.now(SHANGHAI).date().replace(day=1)
    days = ((month.replace(day=28) + timedelta(days=4)).replace(day=1) - month).days
    tiers = [t for t, _ in TIER_SHARES]
    weights = [w for _, w in TIER_SHARES]
    profile = {n: (rng.choices(tiers, weights)[0], rng.random() < 0.65) for n in range(1, members + 1)}
    sent: list[tuple[bytes, bytes]] = []
    for seq in range(1, events + 1):
        n = rng.randint(1, members)
        tier, postpaid = profile[n]
        if rng.random() < 0.01:  # a star level changes now and then
            tier = rng.choices(tiers, weights)[0]
            profile[n] = (tier, postpaid)
        at = datetime(month.year, month.month, rng.randint(1, days), tzinfo=SHANGHAI) + timedelta(
            seconds=rng.randint(0, 86399)
        )
        event = {
            "event_id": f"b-{month:%Y-%m}-s{seed}-{seq:07d}",
            "member_id": member_id(n),
            "tier": tier,
            "occurred_at": at.isoformat(),
            "product": rng.choice(PRODUCTS),
            **_billing_fact(rng, postpaid),
        }
        key, value = member_id(n).encode(), json.dumps(event).encode()
        sent.append((key, value))
        yield SimRecord(key, value, "event")
        if duplicates and rng.random() < duplicates:
            key, value = rng.choice(sent)
            yield SimRecord(key, value, "duplicate")
        if malformed and rng.random() < malformed:
            yield _malformed(rng, event)


def _billing_fact(rng: random.Random, postpaid: bool) -> dict[str, object]:
    roll = rng.random()
    if roll < 0.015:
        return {"type": "contract_renewed"}
    if roll < 0.04:
        return {"type": "service_activated"}
    if roll < 0.07:
        refund = rng.random() < 0.7
        amount = rng.randint(500, 8000)
        return {"type": "bill_adjusted", "amount_fen": -amount if refund else amount}
    if postpaid:
        return {"type": "bill_settled", "amount_fen": int(min(80000, rng.lognormvariate(9.2, 0.6)))}
    return {"type": "recharge", "amount_fen": rng.choice(RECHARGES_FEN)}


def _malformed(rng: random.Random, event: dict[str, object]) -> SimRecord:
    what = rng.choice(
        ["not_json", "missing_field", "unknown_type", "unknown_tier", "amount_out_of_range",
         "invalid_field", "conflicting_duplicate"]
    )  # fmt: skip
    bad = dict(event)
    if what != "conflicting_duplicate":  # its own id, so it never collides with a real event
        bad["event_id"] = f"{event['event_id']}-bad"
    if what == "not_json":
        return SimRecord(None, b'{"event_id": "b-truncated", "amount_fen": 12', "malformed:not_json")
    if what == "missing_field":
        del bad[rng.choice(["event_id", "member_id", "type", "occurred_at"])]
    elif what == "unknown_type":
        bad["type"] = "bill_disputed"
    elif what == "unknown_tier":
        bad["tier"] = "platinum"
    elif what == "amount_out_of_range":
        bad["type"], bad["amount_fen"] = "bill_settled", -1200
    elif what == "invalid_field":
        bad["type"], bad["amount_fen"] = "recharge", "5000"
    elif what == "conflicting_duplicate":
        bad["type"], bad["amount_fen"] = "bill_settled", 999900
    key = str(bad.get("member_id", "")).encode() or None
    return SimRecord(key, json.dumps(bad).encode(), f"malformed:{what}")


async def produce(
    bootstrap: str,
    records: Iterator[SimRecord],
    topic: str,
    progress: Callable[[int], None] | None = None,
) -> SimSummary:
    """Send the records to the broker; `progress(n)` is called every 10,000 records."""
    from services.common.kafka import make_producer

    summary = SimSummary()
    producer = make_producer(bootstrap)
    await producer.start()
    try:
        for n, record in enumerate(records, 1):
            await producer.send(topic, record.value, key=record.key)
            if record.kind == "event":
                summary.events += 1
            elif record.kind == "duplicate":
                summary.duplicates += 1
            else:
                what = record.kind.split(":", 1)[1]
                summary.malformed[what] = summary.malformed.get(what, 0) + 1
            if progress and n % 10000 == 0:
                progress(n)
        await producer.flush()
    finally:
        await producer.stop()
    return summary
