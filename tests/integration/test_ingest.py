"""The worker on the real broker and Postgres: the policy's balances exactly, the bad records in the DLQ."""

from __future__ import annotations

import json
from typing import Any

from services.common.kafka import BILLING_DLQ, BILLING_EVENTS, POINTS_ENTRIES
from services.demo.billing_sim import simulate
from tests.integration.conftest import Platform, wait_until
from tests.integration.stream import Published, encoded, event, produce, read_records, read_topic
from tests.reference import Expected, expected_ledger, last_valid_year


def crafted_stream() -> tuple[list[tuple[bytes | None, bytes]], list[dict[str, Any] | None], dict[int, str]]:
    """Records to send, the valid event behind each (None if bad), and the expected DLQ reason by index."""
    records: list[tuple[bytes | None, bytes]] = []
    valid: list[dict[str, Any] | None] = []
    bad: dict[int, str] = {}

    def ok(body: dict[str, Any]) -> None:
        records.append(encoded(body))
        valid.append(body)

    def reject(reason: str, key: bytes | None, value: bytes) -> None:
        bad[len(records)] = reason
        records.append((key, value))
        valid.append(None)

    # Every type, tier and rounding case.
    ok(event("e-settled", "alice", "bill_settled", 12850, "gold"))  # 128 * 1.5 = 192
    ok(event("e-recharge", "alice", "recharge", 5099, "gold"))  # 50 * 1.5 = 75
    ok(event("e-renewed", "alice", "contract_renewed", tier="gold"))  # 500, no multiplier
    ok(event("e-activated", "bob", "service_activated", tier=None))  # 200, tier defaults to standard
    ok(event("e-silver", "bob", "bill_settled", 199, "silver"))  # 1 * 1.2 = 1
    ok(event("e-tiny", "bob", "bill_settled", 99, "diamond"))  # 0 points, tier becomes diamond
    ok(event("e-up", "carol", "bill_adjusted", 30000, "silver"))  # positive adjustment: 360
    # Year boundary: 23:59:59 on Dec 31 in Shanghai is 2025; 16:30Z that day is already 2026.
    ok(event("e-ye1", "dave", "bill_settled", 10000, occurred_at="2025-12-31T23:59:59+08:00"))  # 100, to 2026
    ok(event("e-ye2", "dave", "bill_settled", 20000, occurred_at="2025-12-31T16:30:00Z"))  # 200, to 2027
    ok(event("e-ye3", "dave", "bill_settled", 40000, occurred_at="2026-01-01T00:00:00+08:00"))  # 400, to 2027
    # Clawback from the earliest-expiring lot first, then debt, then debt repaid by accruals.
    ok(event("e-claw", "dave", "bill_adjusted", -15000))  # 150: all 100 valid to 2026, then 50 of 2027's
    ok(event("e-debt", "erin", "bill_settled", 5000, "diamond"))  # 100
    ok(event("e-debt2", "erin", "bill_adjusted", -40000, "diamond"))  # 800: 100 taken, 700 debt
    ok(event("e-repay", "erin", "contract_renewed", tier="standard"))  # repays 500 of the debt
    ok(event("e-repay2", "erin", "recharge", 30000, "standard"))  # repays 200, keeps 100
    ok(event("e-zero", "erin", "bill_adjusted", 0))  # nothing moves
    # Exact duplicates (same payload, even with keys in another order): no effect.
    ok(event("e-settled", "alice", "bill_settled", 12850, "gold"))
    records.append(
        (
            b"alice",
            json.dumps(
                dict(reversed(list(event("e-recharge", "alice", "recharge", 5099, "gold").items())))
            ).encode(),
        )
    )
    valid.append(json.loads(records[-1][1]))
    # Same event_id, different payload: DLQ, even when it names another member.
    reject(
        "conflicting_duplicate",
        b"alice",
        json.dumps(event("e-settled", "alice", "bill_settled", 99999, "gold")).encode(),
    )
    # (Keyed like the original so it comes after it: Kafka orders records only within a partition.)
    reject(
        "conflicting_duplicate",
        b"erin",
        json.dumps(event("e-debt", "zed", "bill_settled", 5000, "diamond")).encode(),
    )
    # Malformed records of every kind.
    reject("not_json", b"alice", b"{not json")
    reject("not_json", None, b"\xff\xfe\x00garbage")
    reject("not_an_object", None, b'["e-1", "alice"]')
    reject(
        "missing_field",
        b"alice",
        json.dumps(
            {
                "member_id": "alice",
                "type": "recharge",
                "amount_fen": 100,
                "occurred_at": "2026-03-15T10:00:00+08:00",
            }
        ).encode(),
    )
    reject("missing_field", b"alice", json.dumps(event("m-1", "alice", "recharge", None)).encode())
    reject(
        "missing_field",
        b"alice",
        json.dumps(
            {k: v for k, v in event("m-2", "alice", "recharge", 100).items() if k != "occurred_at"}
        ).encode(),
    )
    reject("invalid_field", b"alice", json.dumps(event("m-3", "alice", "recharge", "100")).encode())
    reject("invalid_field", b"alice", json.dumps(event("m-4", "alice", "recharge", 100.0)).encode())
    reject("invalid_field", b"alice", json.dumps(event("m-5", "alice", "recharge", True)).encode())
    reject(
        "invalid_field",
        b"alice",
        json.dumps(event("m-6", "alice", "recharge", 100, occurred_at="2026-03-15T10:00:00")).encode(),
    )
    reject(
        "invalid_field",
        b"alice",
        json.dumps(event("m-7", "alice", "recharge", 100, occurred_at="yesterday")).encode(),
    )
    reject("invalid_field", None, json.dumps(event("m-8", "al ice", "recharge", 100)).encode())
    reject("invalid_field", None, json.dumps(event("m-9", "a" * 33, "recharge", 100)).encode())
    reject("invalid_field", b"alice", json.dumps(event("x" * 65, "alice", "recharge", 100)).encode())
    reject("invalid_field", b"alice", json.dumps(event("", "alice", "recharge", 100)).encode())
    reject("invalid_field", b"alice", json.dumps(event("nul\u0000id", "alice", "recharge", 100)).encode())
    reject(
        "invalid_field", b"alice", json.dumps(event("m-10", "alice", "recharge", 100, product=42)).encode()
    )
    reject("unknown_type", b"alice", json.dumps(event("m-11", "alice", "bill_disputed", 100)).encode())
    reject("unknown_tier", b"alice", json.dumps(event("m-12", "alice", "recharge", 100, "platinum")).encode())
    reject("amount_out_of_range", b"alice", json.dumps(event("m-13", "alice", "recharge", -100)).encode())
    reject(
        "amount_out_of_range",
        b"alice",
        json.dumps(event("m-14", "alice", "bill_settled", 10**10 + 1)).encode(),
    )
    reject(
        "amount_out_of_range",
        b"alice",
        json.dumps(event("m-15", "alice", "bill_adjusted", -(10**10) - 1)).encode(),
    )
    # Edges that are valid: the largest amount, amount ignored for fixed-point types, unknown extra fields.
    ok(event("e-max", "frank", "bill_settled", 10**10, "diamond"))
    ok(event("e-ignored", "frank", "service_activated", "not a number", "diamond"))
    ok(event("e-extra", "frank", "recharge", 1000, "diamond", channel="app"))

    # Volume: a simulated month for 300 members, interleaved with the crafted records.
    for record in simulate(300, 3000, seed=7, duplicates=0.05, malformed=0.03):
        if record.kind.startswith("malformed:"):
            what = record.kind.split(":", 1)[1]
            reject(what, record.key, record.value)
        else:
            records.append((record.key, record.value))
            valid.append(json.loads(record.value))
    return records, valid, bad


def test_stream_ends_in_exactly_the_policy_balances_with_exactly_the_bad_records_in_the_dlq(
    platform: Platform,
) -> None:
    records, valid, bad = crafted_stream()
    positions = produce(platform.bootstrap, BILLING_EVENTS, records)
    expected = expected_ledger([v for v in valid if v is not None])
    unique_valid = len({v["event_id"] for v in valid if v is not None})

    platform.service("worker", "points").start()
    wait_until(
        lambda: (
            platform.fetchval("SELECT count(*) FROM points.billing_events") == unique_valid
            and platform.fetchval("SELECT count(*) FROM points.dead_letters") == len(bad)
        ),
        timeout=90,
        what="every record to be applied or dead-lettered",
    )

    assert_ledger_matches(platform, expected)
    dead = {
        (r["partition"], r["offset"]): r["reason"]
        for r in platform.fetch("SELECT * FROM points.dead_letters")
    }
    assert dead == {positions[i]: reason for i, reason in bad.items()}

    # The same dead letters reach the DLQ topic, with the original record as text.
    on_topic = read_topic(platform.bootstrap, BILLING_DLQ, expect=len(bad))
    assert {(d["partition"], d["offset"]): d["reason"] for d in on_topic} == dead
    raw_of = {positions[i]: records[i][1] for i in bad}
    for letter in on_topic:
        assert letter["topic"] == BILLING_EVENTS and letter["detail"]
        if raw_of[(letter["partition"], letter["offset"])].isascii():
            assert letter["raw"] == raw_of[(letter["partition"], letter["offset"])].decode()

    # Every ledger entry is published once to points.entries.v1, keyed by member, and each
    # member's entries come in ledger order on one partition.
    entry_count = platform.fetchval("SELECT count(*) FROM points.entries")
    published = read_records(platform.bootstrap, POINTS_ENTRIES, expect=entry_count)
    assert sorted(e.value["entry_id"] for e in published) == sorted(
        r["entry_id"] for r in platform.fetch("SELECT entry_id FROM points.entries")
    )
    by_member: dict[str, list[Published]] = {}
    for e in sorted(published, key=lambda e: (e.partition, e.offset)):
        assert e.key == e.value["member_id"].encode()
        by_member.setdefault(e.value["member_id"], []).append(e)
    for records in by_member.values():
        assert len({e.partition for e in records}) == 1
        assert [e.value["entry_id"] for e in records] == sorted(e.value["entry_id"] for e in records)
    assert len({e.partition for e in published}) > 1, "members should spread over partitions"

    # Spot checks of the hand-computed cases.
    assert expected["alice"].available == 192 + 75 + 500
    assert expected["dave"].lots == {2027: 200 + 400 - 50}
    assert (expected["erin"].available, expected["erin"].debt) == (100, 0)


def assert_ledger_matches(platform: Platform, expected: dict[str, Expected]) -> None:
    members = {r["member_id"]: r for r in platform.fetch("SELECT * FROM points.members")}
    lots: dict[str, dict[int, int]] = {}
    for r in platform.fetch("SELECT * FROM points.lots"):
        lots.setdefault(r["member_id"], {})[last_valid_year(r["expires_at"])] = r["remaining"]
    sums = {
        r["member_id"]: r
        for r in platform.fetch(
            """SELECT member_id, sum(delta) AS total,
                      (array_agg(balance_after ORDER BY entry_id DESC))[1] AS last_balance,
                      (array_agg(debt_after ORDER BY entry_id DESC))[1] AS last_debt
               FROM points.entries GROUP BY member_id"""
        )
    }
    wrong = []
    for member_id, want in expected.items():
        got = members.get(member_id)
        actual = (got["tier"], got["available"], got["debt"], lots.get(member_id, {})) if got else None
        if actual != (want.tier, want.available, want.debt, want.lots):
            wrong.append(
                f"{member_id}: expected {(want.tier, want.available, want.debt, want.lots)}, got {actual}"
            )
        entries = sums.get(member_id)
        if entries is not None and (entries["total"], entries["last_balance"], entries["last_debt"]) != (
            want.available,
            want.available,
            want.debt,
        ):
            wrong.append(f"{member_id}: entries do not explain the balance: {dict(entries)}")
    assert not wrong, "\n".join(wrong[:20])
    assert sum(m["available"] for m in members.values()) == sum(e.available for e in expected.values())
