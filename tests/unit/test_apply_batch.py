"""The apply_batch use case over an in-memory unit of work: exactly once, in order, bad records to the DLQ."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from services.points.domain.ledger import Account, Entry
from services.points.domain.policy import EarningPolicy
from services.points.service_layer.ingest import (
    BatchOutcome,
    DeadLetter,
    Record,
    apply_batch,
    reject_records,
)
from tests.unit.fakes import FakeLedger

TOPIC = "billing.events.v1"
SHANGHAI = timezone(timedelta(hours=8))
END_2013 = datetime(2014, 1, 1, tzinfo=SHANGHAI)  # expiry of points earned in 2012
END_2014 = datetime(2015, 1, 1, tzinfo=SHANGHAI)  # expiry of points earned in 2013
MID_2012 = "2012-03-15T10:00:00+08:00"
MID_2013 = "2013-03-15T10:00:00+08:00"


def event(
    event_id: str,
    member_id: str = "m1",
    type_: str = "bill_settled",
    amount_fen: int | None = 10000,
    tier: str = "standard",
    occurred_at: str = MID_2012,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "event_id": event_id,
        "member_id": member_id,
        "type": type_,
        "tier": tier,
        "occurred_at": occurred_at,
    }
    if amount_fen is not None:
        payload["amount_fen"] = amount_fen
    return payload


def record(value: dict[str, Any] | bytes | None, offset: int, partition: int = 0) -> Record:
    raw = json.dumps(value).encode() if isinstance(value, dict) else value
    return Record(TOPIC, partition, offset, raw)


def records(*values: dict[str, Any] | bytes | None) -> list[Record]:
    return [record(value, offset) for offset, value in enumerate(values)]


def apply(ledger: FakeLedger, batch: Sequence[Record], policy: EarningPolicy) -> BatchOutcome:
    return asyncio.run(apply_batch(ledger.unit_of_work, batch, policy))


def trail(entries: list[Entry], member_id: str) -> list[tuple[str, int, int, int]]:
    return [(e.kind, e.delta, e.balance_after, e.debt_after) for e in entries if e.member_id == member_id]


def test_batch_applies_every_event_in_one_transaction(policy: EarningPolicy) -> None:
    ledger = FakeLedger()
    apply(
        ledger,
        records(
            event("b-1", "m1", amount_fen=12850, tier="gold"),
            event("b-2", "m2", amount_fen=10000),
            event("b-3", "m1", "contract_renewed", None, tier="gold"),
        ),
        policy,
    )
    assert ledger.commits == 1
    assert ledger.account("m1").lots == {END_2013: 692}
    assert ledger.account("m1").tier == "gold"
    assert ledger.account("m2").lots == {END_2013: 100}
    assert trail(ledger.entries, "m1") == [("accrual", 192, 192, 0), ("accrual", 500, 692, 0)]
    assert trail(ledger.entries, "m2") == [("accrual", 100, 100, 0)]
    assert set(ledger.fingerprints) == {"b-1", "b-2", "b-3"}


def test_applied_events_record_signed_points_and_source_position(policy: EarningPolicy) -> None:
    ledger = FakeLedger()
    outcome = apply(
        ledger,
        [
            record(event("b-1", amount_fen=12850, tier="gold"), offset=10, partition=2),
            record(
                event("b-2", type_="bill_adjusted", amount_fen=-12850, tier="gold"), offset=11, partition=2
            ),
        ],
        policy,
    )
    assert [(a.event.event_id, a.points, a.partition, a.offset) for a in outcome.applied] == [
        ("b-1", 192, 2, 10),
        ("b-2", -192, 2, 11),
    ]
    assert ledger.account("m1").lots == {}


def test_empty_batch_changes_nothing(policy: EarningPolicy) -> None:
    ledger = FakeLedger()
    outcome = apply(ledger, [], policy)
    assert (outcome.applied, outcome.duplicates, outcome.dead_letters, outcome.entries) == ([], 0, [], [])
    assert ledger.accounts == {}


# exactly once per event_id


def test_redelivered_event_with_the_same_payload_changes_nothing(policy: EarningPolicy) -> None:
    ledger = FakeLedger()
    first = event("b-1", amount_fen=12850, tier="gold")
    apply(ledger, records(first), policy)
    # The same payload, with keys in another order and other whitespace.
    again = json.dumps(dict(reversed(list(first.items()))), indent=2).encode()

    outcome = apply(ledger, [record(again, offset=7)], policy)

    assert outcome.duplicates == 1
    assert (outcome.applied, outcome.dead_letters, outcome.entries) == ([], [], [])
    assert ledger.account("m1").lots == {END_2013: 192}
    assert trail(ledger.entries, "m1") == [("accrual", 192, 192, 0)]


def test_same_event_twice_in_one_batch_is_applied_once(policy: EarningPolicy) -> None:
    ledger = FakeLedger()
    outcome = apply(
        ledger,
        records(event("b-1", amount_fen=12850, tier="gold"), event("b-1", amount_fen=12850, tier="gold")),
        policy,
    )
    assert outcome.duplicates == 1
    assert outcome.dead_letters == []
    assert ledger.account("m1").available == 192
    assert trail(ledger.entries, "m1") == [("accrual", 192, 192, 0)]


def test_redelivered_clawback_does_not_claw_back_twice(policy: EarningPolicy) -> None:
    ledger = FakeLedger.with_accounts([Account("m1", lots={END_2013: 500})])
    clawback = event("b-9", type_="bill_adjusted", amount_fen=-10000)
    apply(ledger, records(clawback), policy)
    apply(ledger, records(clawback), policy)
    assert ledger.account("m1").lots == {END_2013: 400}
    assert ledger.account("m1").debt == 0


def test_same_event_id_with_a_different_payload_is_dead_lettered_as_conflicting_duplicate(
    policy: EarningPolicy,
) -> None:
    ledger = FakeLedger()
    apply(ledger, records(event("b-1", amount_fen=12850, tier="gold")), policy)
    changed = json.dumps(event("b-1", amount_fen=99999, tier="gold")).encode()

    outcome = apply(ledger, [record(changed, offset=42, partition=3)], policy)

    assert [(d.reason, d.raw, d.topic, d.partition, d.offset) for d in outcome.dead_letters] == [
        ("conflicting_duplicate", changed.decode(), TOPIC, 3, 42)
    ]
    assert outcome.dead_letters[0].detail != ""
    assert (outcome.applied, outcome.duplicates, outcome.entries) == ([], 0, [])
    assert ledger.dead_letters == outcome.dead_letters
    assert ledger.account("m1").lots == {END_2013: 192}


def test_conflicting_duplicate_within_one_batch_keeps_the_first(policy: EarningPolicy) -> None:
    ledger = FakeLedger()
    outcome = apply(
        ledger,
        records(event("b-1", amount_fen=12850, tier="gold"), event("b-1", amount_fen=25700, tier="gold")),
        policy,
    )
    assert [(d.reason, d.offset) for d in outcome.dead_letters] == [("conflicting_duplicate", 1)]
    assert ledger.account("m1").available == 192


def test_duplicate_or_conflicting_redelivery_does_not_change_the_tier(policy: EarningPolicy) -> None:
    ledger = FakeLedger()
    apply(ledger, records(event("b-1", tier="gold")), policy)
    apply(ledger, records(event("b-2", tier="silver")), policy)
    apply(ledger, records(event("b-1", tier="gold")), policy)  # same payload again
    apply(ledger, records(event("b-2", tier="diamond")), policy)  # conflicting
    assert ledger.account("m1").tier == "silver"


# malformed records


def test_malformed_records_are_dead_lettered_with_their_reason_and_the_rest_applied(
    policy: EarningPolicy,
) -> None:
    ledger = FakeLedger()
    no_time = event("b-4")
    del no_time["occurred_at"]
    batch = records(
        event("b-1", amount_fen=10000),
        b"not json",
        None,
        b"[1, 2]",
        no_time,
        event("b-5", tier="platinum"),
        event("b-6", type_="refund"),
        event("b-7", type_="recharge", amount_fen=-100),
        event("b-8", member_id="m 1"),
        event("b-9", amount_fen=10**10 + 1),
        event("b-10", amount_fen=5000),
    )

    outcome = apply(ledger, batch, policy)

    assert [(d.offset, d.reason) for d in outcome.dead_letters] == [
        (1, "not_json"),
        (2, "not_json"),
        (3, "not_an_object"),
        (4, "missing_field"),
        (5, "unknown_tier"),
        (6, "unknown_type"),
        (7, "amount_out_of_range"),
        (8, "invalid_field"),
        (9, "amount_out_of_range"),
    ]
    assert all(d.topic == TOPIC and d.partition == 0 and d.detail for d in outcome.dead_letters)
    assert ledger.dead_letters == outcome.dead_letters
    assert ledger.account("m1").lots == {END_2013: 150}
    assert [a.event.event_id for a in outcome.applied] == ["b-1", "b-10"]


def test_dead_letter_keeps_the_original_value_as_text(policy: EarningPolicy) -> None:
    bad_tier = json.dumps(event("b-5", tier="platinum")).encode()
    outcome = apply(FakeLedger(), records(b"not json", None, bad_tier), policy)
    assert [d.raw for d in outcome.dead_letters] == ["not json", "", bad_tier.decode()]


def test_undecodable_value_is_dead_lettered_with_its_bytes_visible(policy: EarningPolicy) -> None:
    outcome = apply(FakeLedger(), records(b"\xff\xfe not json"), policy)
    assert [d.reason for d in outcome.dead_letters] == ["not_json"]
    assert outcome.dead_letters[0].raw.endswith(" not json")


# order


def test_events_of_one_member_apply_in_batch_order_not_by_occurred_at(policy: EarningPolicy) -> None:
    ledger = FakeLedger()
    apply(
        ledger,
        records(
            event("b-1", amount_fen=10000, occurred_at=MID_2013),
            event("b-2", type_="bill_adjusted", amount_fen=-10000, occurred_at=MID_2013),
            event("b-3", amount_fen=10000, tier="gold", occurred_at=MID_2012),
        ),
        policy,
    )
    # In produce order the clawback empties the 2013 lot; the 2012 points come after it.
    assert ledger.account("m1").lots == {END_2013: 150}
    assert ledger.account("m1").tier == "gold"
    assert trail(ledger.entries, "m1") == [
        ("accrual", 100, 100, 0),
        ("clawback", -100, 0, 0),
        ("accrual", 150, 150, 0),
    ]


def test_interleaved_members_each_keep_their_own_order(policy: EarningPolicy) -> None:
    ledger = FakeLedger()
    apply(
        ledger,
        records(
            event("b-1", "m1", "bill_adjusted", -5000),
            event("b-2", "m2", "recharge", 2000),
            event("b-3", "m1", "bill_settled", 8000),
            event("b-4", "m2", "bill_adjusted", -3000),
        ),
        policy,
    )
    assert trail(ledger.entries, "m1") == [
        ("clawback", 0, 0, 50),
        ("accrual", 80, 80, 50),
        ("debt_repaid", -50, 30, 0),
    ]
    assert trail(ledger.entries, "m2") == [("accrual", 20, 20, 0), ("clawback", -20, 0, 10)]
    assert (ledger.account("m1").available, ledger.account("m1").debt) == (30, 0)
    assert (ledger.account("m2").available, ledger.account("m2").debt) == (0, 10)


def test_debt_from_an_earlier_batch_is_repaid_by_a_later_one(policy: EarningPolicy) -> None:
    ledger = FakeLedger()
    apply(ledger, records(event("b-1", type_="bill_adjusted", amount_fen=-12850, tier="gold")), policy)
    assert ledger.account("m1").debt == 192
    outcome = apply(ledger, records(event("b-2", "m1", "contract_renewed", None)), policy)
    assert trail(outcome.entries, "m1") == [("accrual", 500, 500, 192), ("debt_repaid", -192, 308, 0)]
    assert (ledger.account("m1").available, ledger.account("m1").debt) == (308, 0)


def test_reject_records_dead_letters_them_and_applies_nothing() -> None:
    ledger = FakeLedger()
    letter = DeadLetter("processing_error", "boom", "{}", TOPIC, 0, 5)
    asyncio.run(reject_records(ledger.unit_of_work, [letter]))
    assert ledger.dead_letters == [letter]
    assert (ledger.entries, ledger.applied, ledger.accounts) == ([], [], {})


def test_lot_holds_integer_points_and_expires_at_the_shanghai_year_end_instant(policy: EarningPolicy) -> None:
    ledger = FakeLedger()
    apply(ledger, records(event("b-1", occurred_at="2012-12-31T16:30:00Z")), policy)
    ((expires_at, points),) = ledger.account("m1").lots.items()
    assert expires_at == datetime(2014, 12, 31, 16, 0, tzinfo=UTC)
    assert type(points) is int and points == 100
