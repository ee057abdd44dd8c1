"""Which billing records are accepted and why the others go to the DLQ (CONTRACT.md §2)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from services.points.domain.events import BillingEvent, RejectedEvent, parse_billing_event

CONTRACT_EXAMPLE: dict[str, Any] = {
    "event_id": "b-2012-03-000001",
    "member_id": "m0001234",
    "type": "bill_settled",
    "amount_fen": 12850,
    "tier": "gold",
    "occurred_at": "2012-03-15T10:00:00+08:00",
    "product": "mobile",
}
ABSENT = object()


def record(**changes: Any) -> bytes:
    """The contract's example event as UTF-8 JSON, with fields changed (or removed with ABSENT)."""
    payload = {**CONTRACT_EXAMPLE, **changes}
    return json.dumps({k: v for k, v in payload.items() if v is not ABSENT}).encode()


def accepted(raw: bytes | None) -> BillingEvent:
    return parse_billing_event(raw)


def rejection_reason(raw: bytes | None) -> str:
    with pytest.raises(RejectedEvent) as rejected:
        parse_billing_event(raw)
    return rejected.value.reason


def test_contract_example_is_accepted_with_its_fields() -> None:
    event = accepted(record())
    assert event.event_id == "b-2012-03-000001"
    assert event.member_id == "m0001234"
    assert event.type == "bill_settled"
    assert event.amount_fen == 12850
    assert event.tier == "gold"
    assert event.occurred_at == datetime(2012, 3, 15, 2, 0, tzinfo=UTC)


def test_rejection_carries_a_human_detail() -> None:
    with pytest.raises(RejectedEvent) as rejected:
        parse_billing_event(record(tier="platinum"))
    assert rejected.value.reason == "unknown_tier"
    assert "platinum" in rejected.value.detail


@pytest.mark.parametrize(
    "raw",
    [
        None,  # a tombstone: the record has no value
        b"",
        b"not json",
        b'{"event_id": "b-1", ',
        b"\xff\xfe\xfd",
        b'{"event_id": "b-\xff"}',  # invalid UTF-8 inside a string
    ],
)
def test_record_that_is_not_json_is_rejected_as_not_json(raw: bytes | None) -> None:
    assert rejection_reason(raw) == "not_json"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_record_not_encoded_in_utf8_is_rejected_as_not_json(encoding: str) -> None:
    # CONTRACT.md §2: topic values are JSON in UTF-8.
    assert rejection_reason(json.dumps(CONTRACT_EXAMPLE).encode(encoding)) == "not_json"


@pytest.mark.parametrize(
    "raw", [b"[]", b"null", b"42", b'"b-1"', b"true", json.dumps([CONTRACT_EXAMPLE]).encode()]
)
def test_json_that_is_not_an_object_is_rejected(raw: bytes) -> None:
    assert rejection_reason(raw) == "not_an_object"


@pytest.mark.parametrize("name", ["event_id", "member_id", "type", "occurred_at"])
def test_missing_required_field_is_rejected(name: str) -> None:
    assert rejection_reason(record(**{name: ABSENT})) == "missing_field"


@pytest.mark.parametrize("name", ["event_id", "member_id", "type", "occurred_at"])
def test_null_required_field_is_rejected(name: str) -> None:
    assert rejection_reason(record(**{name: None})) in ("missing_field", "invalid_field")


@pytest.mark.parametrize("type_", ["bill_settled", "recharge", "bill_adjusted"])
def test_amount_is_required_for_money_events(type_: str) -> None:
    assert rejection_reason(record(type=type_, amount_fen=ABSENT)) == "missing_field"


def test_tier_defaults_to_standard_and_product_is_optional() -> None:
    event = accepted(record(tier=ABSENT, product=ABSENT))
    assert event.tier == "standard"


def test_unknown_extra_fields_are_accepted() -> None:
    assert accepted(record(channel="app", region="GD")).event_id == "b-2012-03-000001"


# event_id: 1-64 characters


@pytest.mark.parametrize("event_id", ["b", "x" * 64, "积" * 64, "b-2012-03-000001/retry"])
def test_event_id_of_1_to_64_characters_is_accepted(event_id: str) -> None:
    assert accepted(record(event_id=event_id)).event_id == event_id


@pytest.mark.parametrize("event_id", ["", "x" * 65, "积" * 65])
def test_event_id_outside_1_to_64_characters_is_rejected(event_id: str) -> None:
    assert rejection_reason(record(event_id=event_id)) == "invalid_field"


@pytest.mark.parametrize("event_id", [123, True, ["b-1"], {"id": "b-1"}])
def test_event_id_that_is_not_a_string_is_rejected(event_id: Any) -> None:
    assert rejection_reason(record(event_id=event_id)) == "invalid_field"


# member_id: 1-32 characters of [A-Za-z0-9_-]


@pytest.mark.parametrize("member_id", ["m", "x" * 32, "A-z_09", "M0001234", "-_-"])
def test_member_id_of_allowed_characters_is_accepted(member_id: str) -> None:
    assert accepted(record(member_id=member_id)).member_id == member_id


@pytest.mark.parametrize(
    "member_id",
    # U+0661 is the Arabic-Indic digit one: a digit, but not of [0-9].
    ["", "x" * 33, "m 1", "m.1", "m@1", "m/1", "mé", "会员1", "m1\n", "m\u0661"],
)
def test_member_id_outside_the_charset_or_length_is_rejected(member_id: str) -> None:
    assert rejection_reason(record(member_id=member_id)) == "invalid_field"


@pytest.mark.parametrize("member_id", [1234, False, ["m1"]])
def test_member_id_that_is_not_a_string_is_rejected(member_id: Any) -> None:
    assert rejection_reason(record(member_id=member_id)) == "invalid_field"


# type


@pytest.mark.parametrize("type_", ["bill_settled", "recharge", "bill_adjusted"])
def test_every_money_event_type_is_accepted(type_: str) -> None:
    assert accepted(record(type=type_)).type == type_


@pytest.mark.parametrize("type_", ["contract_renewed", "service_activated"])
def test_every_fixed_point_event_type_is_accepted_without_amount(type_: str) -> None:
    assert accepted(record(type=type_, amount_fen=ABSENT)).type == type_


@pytest.mark.parametrize("type_", ["bill_paid", "BILL_SETTLED", "refund", "", "bill_settled "])
def test_unknown_event_type_is_rejected(type_: str) -> None:
    assert rejection_reason(record(type=type_)) == "unknown_type"


@pytest.mark.parametrize("type_", [1, ["recharge"]])
def test_event_type_that_is_not_a_string_is_rejected(type_: Any) -> None:
    assert rejection_reason(record(type=type_)) == "invalid_field"


# amount_fen: an integer, |amount| <= 10^10, negative only for bill_adjusted


@pytest.mark.parametrize("amount", [True, False])
def test_boolean_amount_is_not_an_integer(amount: bool) -> None:
    assert rejection_reason(record(amount_fen=amount)) == "invalid_field"


@pytest.mark.parametrize("amount", [12850.0, 128.5, "12850", [12850], {"fen": 12850}])
def test_amount_that_is_not_an_integer_is_rejected(amount: Any) -> None:
    assert rejection_reason(record(amount_fen=amount)) == "invalid_field"


@pytest.mark.parametrize("literal", [b"1e3", b"1E4", b"12850.0", b"NaN", b"Infinity"])
def test_amount_written_as_a_json_number_with_fraction_or_exponent_is_rejected(literal: bytes) -> None:
    raw = record(amount_fen=0).replace(b'"amount_fen": 0', b'"amount_fen": ' + literal)
    assert rejection_reason(raw) == "invalid_field"


@pytest.mark.parametrize("type_", ["bill_settled", "recharge", "bill_adjusted"])
def test_amount_of_exactly_ten_to_the_ten_fen_is_accepted(type_: str) -> None:
    assert accepted(record(type=type_, amount_fen=10**10)).amount_fen == 10_000_000_000


def test_negative_adjustment_of_exactly_ten_to_the_ten_fen_is_accepted() -> None:
    assert accepted(record(type="bill_adjusted", amount_fen=-(10**10))).amount_fen == -10_000_000_000


@pytest.mark.parametrize(
    ("type_", "amount"),
    [
        ("bill_settled", 10**10 + 1),
        ("recharge", 10**10 + 1),
        ("bill_adjusted", 10**10 + 1),
        ("bill_adjusted", -(10**10) - 1),
        ("bill_settled", 10**30),
    ],
)
def test_amount_beyond_ten_to_the_ten_fen_is_out_of_range(type_: str, amount: int) -> None:
    assert rejection_reason(record(type=type_, amount_fen=amount)) == "amount_out_of_range"


@pytest.mark.parametrize("type_", ["bill_settled", "recharge"])
def test_negative_amount_is_out_of_range_except_for_adjustments(type_: str) -> None:
    assert rejection_reason(record(type=type_, amount_fen=-1)) == "amount_out_of_range"


def test_negative_bill_adjustment_is_accepted() -> None:
    assert accepted(record(type="bill_adjusted", amount_fen=-1)).amount_fen == -1


@pytest.mark.parametrize("type_", ["bill_settled", "recharge", "bill_adjusted"])
def test_zero_amount_is_accepted(type_: str) -> None:
    assert accepted(record(type=type_, amount_fen=0)).amount_fen == 0


@pytest.mark.parametrize("type_", ["contract_renewed", "service_activated"])
@pytest.mark.parametrize("amount", [None, -5, 10**11, "n/a", True, 1.5, [1]])
def test_amount_of_fixed_point_events_is_ignored_whatever_it_holds(type_: str, amount: Any) -> None:
    assert accepted(record(type=type_, amount_fen=amount)).type == type_


# tier


@pytest.mark.parametrize("tier", ["standard", "silver", "gold", "diamond"])
def test_every_known_tier_is_accepted(tier: str) -> None:
    assert accepted(record(tier=tier)).tier == tier


@pytest.mark.parametrize("tier", ["platinum", "Gold", "GOLD", "vip", "gold ", ""])
def test_unknown_tier_is_rejected(tier: str) -> None:
    assert rejection_reason(record(tier=tier)) == "unknown_tier"


@pytest.mark.parametrize("tier", [2, True, ["gold"]])
def test_tier_that_is_not_a_string_is_rejected(tier: Any) -> None:
    assert rejection_reason(record(tier=tier)) == "invalid_field"


# occurred_at: RFC 3339 with offset


@pytest.mark.parametrize(
    "occurred_at",
    [
        "2012-03-15T10:00:00+08:00",
        "2012-03-15T02:00:00Z",
        "2012-03-15t02:00:00z",  # RFC 3339 allows lower-case t and z
        "2012-03-15T02:00:00+00:00",
        "2012-03-15T02:00:00-00:00",
        "2012-03-14T21:00:00-05:00",
        "2012-03-15T07:30:00+05:30",
    ],
)
def test_rfc3339_time_with_offset_is_accepted_as_that_instant(occurred_at: str) -> None:
    assert accepted(record(occurred_at=occurred_at)).occurred_at == datetime(2012, 3, 15, 2, 0, tzinfo=UTC)


def test_rfc3339_time_with_fractional_seconds_is_accepted() -> None:
    occurred_at = accepted(record(occurred_at="2012-03-15T10:00:00.25+08:00")).occurred_at
    assert occurred_at == datetime(2012, 3, 15, 2, 0, 0, 250000, tzinfo=UTC)


def test_leap_second_is_accepted() -> None:
    # 2012-06-30T23:59:60Z was a real leap second; RFC 3339 allows second 60.
    occurred_at = accepted(record(occurred_at="2012-06-30T23:59:60Z")).occurred_at
    assert datetime(2012, 6, 30, 23, 59, 59, tzinfo=UTC) <= occurred_at <= datetime(2012, 7, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "occurred_at",
    [
        "2012-03-15T10:00:00",  # no offset
        "2012-03-15T10:00:00.5",  # no offset
        "2012-03-15",
        "2012-03-15T10:00+08:00",  # RFC 3339 needs seconds
        "2012-03-15T10:00:00+0800",
        "2012-03-15T10:00:00+08",
        "2012-03-15T10:00:00 +08:00",
        "20120315T100000+0800",
        "2012-02-30T10:00:00+08:00",
        "2012-13-01T10:00:00+08:00",
        "2012-03-15T24:00:00+08:00",
        "2012-03-15T10:60:00+08:00",
        "2012-03-15T10:00:00+24:00",
        "2012-03-15T10:00:00+08:60",  # offset minutes are 00-59
        "2012-03-15T10:00:00+08:00 ",
        "15/03/2012 10:00:00+08:00",
        "Thu, 15 Mar 2012 10:00:00 +0800",
        "",
    ],
)
def test_time_that_is_not_rfc3339_with_offset_is_rejected(occurred_at: str) -> None:
    assert rejection_reason(record(occurred_at=occurred_at)) == "invalid_field"


@pytest.mark.parametrize("occurred_at", [1331776800, 1331776800.0, ["2012-03-15T10:00:00+08:00"]])
def test_time_that_is_not_a_string_is_rejected(occurred_at: Any) -> None:
    assert rejection_reason(record(occurred_at=occurred_at)) == "invalid_field"


# product: optional free text


@pytest.mark.parametrize("product", ["mobile", "宽带 broadband", "", None])
def test_product_free_text_or_absent_is_accepted(product: str | None) -> None:
    assert accepted(record(product=product)).event_id == "b-2012-03-000001"


@pytest.mark.parametrize("product", [5, True, {"name": "mobile"}])
def test_product_that_is_not_text_is_rejected(product: Any) -> None:
    assert rejection_reason(record(product=product)) == "invalid_field"


@pytest.mark.parametrize("occurred_at", ["1899-12-31T23:59:59+00:00", "9001-01-01T00:00:00+08:00"])
def test_time_outside_any_billing_year_is_rejected(occurred_at: str) -> None:
    # Year 9998 and later once crashed the batch: its lot's expiry year does not exist.
    assert rejection_reason(record(occurred_at=occurred_at)) == "invalid_field"


def test_years_1900_to_9000_are_accepted() -> None:
    assert accepted(record(occurred_at="1900-01-01T00:00:00+00:00")).occurred_at.year == 1900
    assert accepted(record(occurred_at="9000-12-31T23:59:59+08:00")).occurred_at.year == 9000
