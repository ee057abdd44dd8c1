"""`loyalty expire --as-of`: lots expire at the Asia/Shanghai year end, once, with an entry each."""

from __future__ import annotations

from services.common.kafka import BILLING_EVENTS
from tests.integration.conftest import Platform, wait_until
from tests.integration.stream import encoded, event, produce


def test_expire_takes_lots_due_by_the_year_end_and_nothing_else(platform: Platform) -> None:
    produce(
        platform.bootstrap,
        BILLING_EVENTS,
        [
            encoded(event("x-1", "gina", "bill_settled", 30000, occurred_at="2024-07-01T10:00:00+08:00")),
            encoded(event("x-2", "gina", "bill_settled", 50000, occurred_at="2025-07-01T10:00:00+08:00")),
            encoded(event("x-3", "hank", "bill_settled", 70000, occurred_at="2024-12-31T23:00:00+08:00")),
        ],
    )
    platform.service("worker", "points").start()
    wait_until(
        lambda: platform.fetchval("SELECT count(*) FROM points.billing_events") == 3,
        timeout=60,
        what="the events to be applied",
    )

    # 2024's points are good through 2025-12-31 in Shanghai: not expired a second before midnight.
    before = platform.cli("expire", "--as-of", "2025-12-31T23:59:59+08:00")
    assert before.returncode == 0, before.stderr
    assert "expired 0 points from 0 members" in before.stdout

    result = platform.cli("expire", "--as-of", "2026-01-01")
    assert result.returncode == 0, result.stderr
    assert "expired 1,000 points from 2 members" in result.stdout
    balances = {r["member_id"]: r["available"] for r in platform.fetch("SELECT * FROM points.members")}
    assert balances == {"gina": 500, "hank": 0}
    expiries = platform.fetch(
        "SELECT member_id, delta, balance_after FROM points.entries WHERE kind = 'expiry'"
    )
    assert sorted((r["member_id"], r["delta"], r["balance_after"]) for r in expiries) == [
        ("gina", -300, 500),
        ("hank", -700, 0),
    ]

    again = platform.cli("expire", "--as-of", "2026-06-01")
    assert "expired 0 points" in again.stdout


def test_expire_rejects_a_date_it_cannot_read(platform: Platform) -> None:
    result = platform.cli("expire", "--as-of", "next tuesday")
    assert result.returncode == 2
    assert "must be an ISO date or date-time" in result.stderr
