"""The default earning policy of CONTRACT.md §2: points per tier, fixed points, and lot expiry."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from services.points.domain.events import BillingEvent, parse_billing_event
from services.points.domain.policy import EarningPolicy

SHANGHAI = timezone(timedelta(hours=8))


def billing_event(
    type_: str = "bill_settled",
    amount_fen: Any = 12850,
    tier: str = "standard",
    occurred_at: str = "2012-03-15T10:00:00+08:00",
) -> BillingEvent:
    payload = {"event_id": "b-1", "member_id": "m1", "type": type_, "tier": tier, "occurred_at": occurred_at}
    if amount_fen is not None:
        payload["amount_fen"] = amount_fen
    return parse_billing_event(json.dumps(payload).encode())


def test_default_policy_has_the_contract_multipliers_and_fixed_points(policy: EarningPolicy) -> None:
    assert policy.multiplier_per_mille == {"standard": 1000, "silver": 1200, "gold": 1500, "diamond": 2000}
    assert policy.fixed_points == {"contract_renewed": 500, "service_activated": 200}


@pytest.mark.parametrize(
    ("tier", "expected"),
    [
        ("standard", 128),  # 128 yuan * 1000 / 1000
        ("silver", 153),  # 128 * 1200 / 1000 = 153.6
        ("gold", 192),  # 128 * 1500 / 1000
        ("diamond", 256),  # 128 * 2000 / 1000
    ],
)
def test_settled_bill_earns_whole_yuan_times_tier_multiplier(
    policy: EarningPolicy, tier: str, expected: int
) -> None:
    assert policy.points_for(billing_event("bill_settled", 12850, tier)) == expected


@pytest.mark.parametrize(
    ("tier", "amount_fen", "expected"),
    [
        ("standard", 99, 0),  # less than one yuan earns nothing
        ("diamond", 99, 0),  # not 99 * 2 = 198 fen -> 1
        ("silver", 199, 1),  # 1 yuan * 1.2 = 1.2; one floor over fen would give 2
        ("gold", 199, 1),  # 1 * 1.5 = 1.5; one floor over fen would give 2
        ("diamond", 150, 2),  # 1 * 2; one floor over fen would give 3
        ("gold", 300, 4),  # 3 * 1.5 = 4.5
        ("silver", 400, 4),  # 4 * 1.2 = 4.8
        ("silver", 500, 6),  # 5 * 1.2 = 6.0
        ("standard", 0, 0),
        ("silver", 9_999_999_999, 119_999_998),  # 99_999_999 * 1.2 = 119_999_998.8
    ],
)
def test_amount_is_floored_to_whole_yuan_before_the_multiplier_and_again_after(
    policy: EarningPolicy, tier: str, amount_fen: int, expected: int
) -> None:
    assert policy.points_for(billing_event("bill_settled", amount_fen, tier)) == expected


def test_points_for_amount_applies_the_double_floor(policy: EarningPolicy) -> None:
    assert policy.points_for_amount(12850, "gold") == 192
    assert policy.points_for_amount(199, "silver") == 1
    assert policy.points_for_amount(99, "diamond") == 0


@pytest.mark.parametrize(
    ("tier", "amount_fen", "expected"),
    [("gold", 10**10, 150_000_000), ("diamond", 10**10, 200_000_000), ("standard", 10**10, 100_000_000)],
)
def test_largest_allowed_amount_earns_exact_integer_points(
    policy: EarningPolicy, tier: str, amount_fen: int, expected: int
) -> None:
    assert policy.points_for(billing_event("bill_settled", amount_fen, tier)) == expected


@pytest.mark.parametrize(("tier", "expected"), [("standard", 128), ("silver", 153), ("gold", 192)])
def test_recharge_earns_like_a_settled_bill(policy: EarningPolicy, tier: str, expected: int) -> None:
    assert policy.points_for(billing_event("recharge", 12850, tier)) == expected


def test_positive_bill_adjustment_earns_like_a_settled_bill(policy: EarningPolicy) -> None:
    assert policy.points_for(billing_event("bill_adjusted", 12850, "gold")) == 192
    assert policy.points_for(billing_event("bill_adjusted", 199, "silver")) == 1


@pytest.mark.parametrize(
    ("tier", "amount_fen", "expected"),
    [
        ("gold", -12850, -192),
        ("silver", -199, -1),
        ("diamond", -150, -2),
        ("standard", -99, 0),
        ("diamond", -(10**10), -200_000_000),
    ],
)
def test_negative_bill_adjustment_claws_back_with_the_same_rounding(
    policy: EarningPolicy, tier: str, amount_fen: int, expected: int
) -> None:
    assert policy.points_for(billing_event("bill_adjusted", amount_fen, tier)) == expected


def test_zero_bill_adjustment_earns_nothing(policy: EarningPolicy) -> None:
    assert policy.points_for(billing_event("bill_adjusted", 0, "diamond")) == 0


@pytest.mark.parametrize("tier", ["standard", "silver", "gold", "diamond"])
def test_contract_renewal_earns_500_points_without_multiplier(policy: EarningPolicy, tier: str) -> None:
    assert policy.points_for(billing_event("contract_renewed", None, tier)) == 500


@pytest.mark.parametrize("tier", ["standard", "silver", "gold", "diamond"])
def test_service_activation_earns_200_points_without_multiplier(policy: EarningPolicy, tier: str) -> None:
    assert policy.points_for(billing_event("service_activated", None, tier)) == 200


@pytest.mark.parametrize(
    ("type_", "amount_fen", "expected"),
    [
        ("contract_renewed", 12850, 500),
        ("contract_renewed", -50000, 500),  # a negative amount is not a clawback here
        ("service_activated", 10**10, 200),
        ("service_activated", "n/a", 200),
    ],
)
def test_amount_on_fixed_point_events_is_ignored(
    policy: EarningPolicy, type_: str, amount_fen: Any, expected: int
) -> None:
    assert policy.points_for(billing_event(type_, amount_fen, "diamond")) == expected


def test_points_of_a_year_expire_at_midnight_shanghai_ending_the_next_year(policy: EarningPolicy) -> None:
    expires_at = policy.expiry_for(datetime(2012, 3, 15, 10, 0, tzinfo=SHANGHAI))
    assert expires_at == datetime(2014, 1, 1, 0, 0, tzinfo=SHANGHAI)
    assert expires_at == datetime(2013, 12, 31, 16, 0, tzinfo=UTC)
    assert expires_at != datetime(2014, 1, 1, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("occurred_at", "expiry_year"),
    [
        ("2012-12-31T23:59:59+08:00", 2014),  # last second of 2012 in Shanghai
        ("2013-01-01T00:00:00+08:00", 2015),  # first second of 2013 in Shanghai
        ("2012-12-31T15:59:59Z", 2014),  # 2012-12-31T23:59:59 in Shanghai
        ("2012-12-31T16:00:00Z", 2015),  # 2013-01-01T00:00:00 in Shanghai
        ("2012-12-31T16:30:00Z", 2015),  # still 2012 in UTC, already 2013 in Shanghai
        ("2012-12-31T20:00:00-05:00", 2015),  # 2013-01-01T09:00 in Shanghai
        ("2011-12-31T16:00:00Z", 2014),  # 2012-01-01T00:00 in Shanghai
        ("2012-01-01T07:59:59+09:00", 2014),  # 2012-01-01T06:59:59 in Shanghai
    ],
)
def test_expiry_year_follows_the_shanghai_calendar_year_of_the_event(
    policy: EarningPolicy, occurred_at: str, expiry_year: int
) -> None:
    expires_at = policy.expiry_for(datetime.fromisoformat(occurred_at))
    assert expires_at == datetime(expiry_year, 1, 1, 0, 0, tzinfo=SHANGHAI)
