"""Rewards: when they are on sale, who may have them, and what a confirmed order delivers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.redemption.domain.model import (
    CODE_ALPHABET,
    NotAvailable,
    Reward,
    TierNotEligible,
    fulfilment_for,
)

NOON = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def reward(**changes: object) -> Reward:
    fields: dict[str, object] = {
        "sku": "premiere", "name": "Premiere seat", "kind": "event_ticket", "points_price": 800,
        "stock": 10, "taken": 3, "per_member_limit": None, "starts_at": None, "ends_at": None,
        "min_tier": None,
    }  # fmt: skip
    fields.update(changes)
    return Reward(**fields)  # type: ignore[arg-type]


def test_remaining_is_stock_less_what_is_taken() -> None:
    assert reward(stock=10, taken=3).remaining == 7


def test_a_reward_is_on_sale_from_its_start_until_just_before_its_end() -> None:
    window = reward(starts_at=NOON, ends_at=NOON + timedelta(hours=1))
    window.check_window(NOON)
    window.check_window(NOON + timedelta(minutes=59, seconds=59))
    for moment in (NOON - timedelta(seconds=1), NOON + timedelta(hours=1)):
        with pytest.raises(NotAvailable):
            window.check_window(moment)


def test_a_reward_without_a_window_is_always_on_sale() -> None:
    assert reward().is_on_sale(datetime(1999, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("min_tier", "tier", "allowed"),
    [
        ("gold", "diamond", True),
        ("gold", "gold", True),
        ("gold", "silver", False),
        ("silver", "standard", False),
        (None, "standard", True),
    ],
)
def test_minimum_star_level(min_tier: str | None, tier: str, allowed: bool) -> None:
    if allowed:
        reward(min_tier=min_tier).check_tier(tier)
    else:
        with pytest.raises(TierNotEligible):
            reward(min_tier=min_tier).check_tier(tier)


def test_tickets_and_vouchers_carry_distinct_readable_codes() -> None:
    codes = {fulfilment_for("event_ticket", f"o{i}", 1, 800)[0] for i in range(2000)}
    assert len(codes) == 2000
    for code in codes:
        assert code is not None and code.startswith("TKT-")
        assert [len(group) for group in code.split("-")] == [3, 4, 4, 4]
        assert all(c in CODE_ALPHABET for c in code[4:].replace("-", ""))
    voucher_code, voucher = fulfilment_for("voucher", "o", 2, 600)
    assert voucher_code is not None and voucher_code.startswith("VCH-")
    assert voucher == {"type": "voucher", "code": voucher_code, "quantity": 2}


def test_bill_credits_and_gifts_have_no_code() -> None:
    assert fulfilment_for("bill_credit", "o", 1, 500)[0] is None
    assert fulfilment_for("physical", "o", 1, 500) == (
        None,
        {"type": "physical", "status": "to be shipped", "quantity": 1},
    )
