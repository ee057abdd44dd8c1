"""A member's account: lots by expiry, clawbacks into debt, debt repaid by later accruals, expiry."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from services.points.domain.events import BillingEvent, parse_billing_event
from services.points.domain.ledger import Account, Entry
from services.points.domain.policy import EarningPolicy

SHANGHAI = timezone(timedelta(hours=8))
END_2013 = datetime(2014, 1, 1, tzinfo=SHANGHAI)  # expiry of points earned in 2012
END_2014 = datetime(2015, 1, 1, tzinfo=SHANGHAI)  # expiry of points earned in 2013
END_2015 = datetime(2016, 1, 1, tzinfo=SHANGHAI)  # expiry of points earned in 2014
MID_2012 = "2012-03-15T10:00:00+08:00"
MID_2013 = "2013-03-15T10:00:00+08:00"


def billing_event(
    event_id: str,
    type_: str,
    amount_fen: int | None,
    tier: str = "standard",
    occurred_at: str = MID_2012,
) -> BillingEvent:
    payload: dict[str, object] = {
        "event_id": event_id,
        "member_id": "m1",
        "type": type_,
        "tier": tier,
        "occurred_at": occurred_at,
    }
    if amount_fen is not None:
        payload["amount_fen"] = amount_fen
    return parse_billing_event(json.dumps(payload).encode())


def trail(entries: list[Entry]) -> list[tuple[str, int, int, int]]:
    """What a member sees of each entry: kind, delta, available after, debt after."""
    return [(e.kind, e.delta, e.balance_after, e.debt_after) for e in entries]


def test_accrual_becomes_a_lot_expiring_at_the_end_of_the_next_year(policy: EarningPolicy) -> None:
    account = Account("m1")
    entries = account.apply_billing_event(billing_event("b-1", "bill_settled", 12850, "gold"), policy)
    assert account.lots == {END_2013: 192}
    assert account.available == 192
    assert entries == [Entry("m1", "accrual", 192, 192, 0, 0, "b-1", datetime(2012, 3, 15, 2, 0, tzinfo=UTC))]


def test_accruals_of_one_shanghai_year_share_one_lot(policy: EarningPolicy) -> None:
    account = Account("m1")
    account.apply_billing_event(billing_event("b-1", "bill_settled", 10000, occurred_at=MID_2012), policy)
    account.apply_billing_event(
        billing_event("b-2", "recharge", 5000, occurred_at="2012-12-31T23:59:59+08:00"), policy
    )
    assert account.lots == {END_2013: 150}


def test_accruals_either_side_of_shanghai_new_year_go_to_different_lots(policy: EarningPolicy) -> None:
    account = Account("m1")
    account.apply_billing_event(
        billing_event("b-1", "bill_settled", 10000, occurred_at="2012-12-31T23:59:59+08:00"), policy
    )
    account.apply_billing_event(
        billing_event("b-2", "bill_settled", 5000, occurred_at="2013-01-01T00:00:00+08:00"), policy
    )
    assert account.lots == {END_2013: 100, END_2014: 50}
    assert account.available == 150


def test_event_late_on_new_years_eve_utc_is_already_next_year_in_shanghai(policy: EarningPolicy) -> None:
    account = Account("m1")
    account.apply_billing_event(
        billing_event("b-1", "bill_settled", 10000, occurred_at="2012-12-31T16:30:00Z"), policy
    )
    assert account.lots == {END_2014: 100}


def test_fixed_point_events_become_lots_like_any_accrual(policy: EarningPolicy) -> None:
    account = Account("m1")
    account.apply_billing_event(billing_event("b-1", "contract_renewed", None, "diamond"), policy)
    account.apply_billing_event(billing_event("b-2", "service_activated", None, "diamond", MID_2013), policy)
    assert account.lots == {END_2013: 500, END_2014: 200}


def test_event_that_earns_nothing_writes_no_entry(policy: EarningPolicy) -> None:
    account = Account("m1", lots={END_2013: 10})
    assert account.apply_billing_event(billing_event("b-1", "bill_settled", 99, "diamond"), policy) == []
    assert account.apply_billing_event(billing_event("b-2", "bill_adjusted", 0, "gold"), policy) == []
    assert account.apply_billing_event(billing_event("b-3", "bill_adjusted", -99, "gold"), policy) == []
    assert account.lots == {END_2013: 10}
    assert account.debt == 0


def test_clawback_takes_the_earliest_expiring_lot_first(policy: EarningPolicy) -> None:
    account = Account("m1", lots={END_2014: 50, END_2013: 100})  # later lot first on purpose
    entries = account.apply_billing_event(billing_event("b-9", "bill_adjusted", -8000), policy)
    assert account.lots == {END_2013: 20, END_2014: 50}
    assert trail(entries) == [("clawback", -80, 70, 0)]
    assert entries[0].ref == "b-9"


def test_clawback_empties_earlier_lots_before_touching_later_ones(policy: EarningPolicy) -> None:
    account = Account("m1", lots={END_2015: 7, END_2014: 50, END_2013: 100})
    entries = account.apply_billing_event(billing_event("b-9", "bill_adjusted", -12000), policy)
    assert account.lots == {END_2014: 30, END_2015: 7}
    assert trail(entries) == [("clawback", -120, 37, 0)]


def test_clawback_uses_the_event_tier_multiplier(policy: EarningPolicy) -> None:
    account = Account("m1", lots={END_2013: 500})
    entries = account.apply_billing_event(billing_event("b-9", "bill_adjusted", -12850, "gold"), policy)
    assert trail(entries) == [("clawback", -192, 308, 0)]


def test_clawback_beyond_available_becomes_debt(policy: EarningPolicy) -> None:
    account = Account("m1", lots={END_2013: 100})
    entries = account.apply_billing_event(billing_event("b-9", "bill_adjusted", -12850, "gold"), policy)
    assert account.lots == {}
    assert account.available == 0
    assert account.debt == 92  # 192 clawed back, 100 there
    assert trail(entries) == [("clawback", -100, 0, 92)]


def test_clawback_with_nothing_available_is_all_debt(policy: EarningPolicy) -> None:
    account = Account("m1")
    entries = account.apply_billing_event(billing_event("b-9", "bill_adjusted", -500, "silver"), policy)
    assert account.available == 0
    assert account.debt == 6  # floor(5 yuan * 1.2)
    assert [(e.kind, e.balance_after, e.debt_after) for e in entries] == [("clawback", 0, 6)]


def test_debt_adds_up_over_clawbacks(policy: EarningPolicy) -> None:
    account = Account("m1", debt=10)
    account.apply_billing_event(billing_event("b-9", "bill_adjusted", -2000), policy)
    assert account.debt == 30


def test_clawback_does_not_touch_held_points(policy: EarningPolicy) -> None:
    account = Account("m1", lots={END_2013: 100}, held=40)
    account.apply_billing_event(billing_event("b-9", "bill_adjusted", -12000), policy)
    assert account.held == 40
    assert account.lots == {}
    assert account.debt == 20


def test_later_accrual_pays_debt_before_adding_to_available(policy: EarningPolicy) -> None:
    account = Account("m1", debt=92)
    entries = account.apply_billing_event(billing_event("b-10", "bill_settled", 12850, "gold"), policy)
    assert account.debt == 0
    assert account.available == 100
    assert account.lots == {END_2013: 100}
    assert trail(entries) == [("accrual", 192, 192, 92), ("debt_repaid", -92, 100, 0)]
    assert [e.ref for e in entries] == ["b-10", "b-10"]


def test_accrual_smaller_than_debt_only_reduces_debt(policy: EarningPolicy) -> None:
    account = Account("m1", debt=300)
    entries = account.apply_billing_event(billing_event("b-10", "bill_settled", 12850, "gold"), policy)
    assert account.debt == 108
    assert account.available == 0
    assert account.lots == {}
    assert trail(entries) == [("accrual", 192, 192, 300), ("debt_repaid", -192, 0, 108)]


def test_accrual_equal_to_debt_clears_it_and_leaves_nothing(policy: EarningPolicy) -> None:
    account = Account("m1", debt=500)
    entries = account.apply_billing_event(billing_event("b-10", "contract_renewed", None), policy)
    assert (account.debt, account.available, account.lots) == (0, 0, {})
    assert trail(entries) == [("accrual", 500, 500, 500), ("debt_repaid", -500, 0, 0)]


def test_fixed_points_pay_debt_first(policy: EarningPolicy) -> None:
    account = Account("m1", debt=50)
    account.apply_billing_event(billing_event("b-10", "service_activated", None), policy)
    assert account.debt == 0
    assert account.lots == {END_2013: 150}


def test_debt_repayment_leaves_existing_lots_alone(policy: EarningPolicy) -> None:
    account = Account("m1", lots={END_2013: 40}, debt=30)
    account.apply_billing_event(billing_event("b-10", "bill_settled", 10000, occurred_at=MID_2013), policy)
    assert account.lots == {END_2013: 40, END_2014: 70}
    assert account.debt == 0


def test_clawback_then_accrual_round_trip(policy: EarningPolicy) -> None:
    account = Account("m1", lots={END_2013: 50})
    first = account.apply_billing_event(billing_event("b-1", "bill_adjusted", -20000), policy)
    second = account.apply_billing_event(
        billing_event("b-2", "recharge", 30000, occurred_at=MID_2013), policy
    )
    assert trail(first + second) == [
        ("clawback", -50, 0, 150),
        ("accrual", 300, 300, 150),
        ("debt_repaid", -150, 150, 0),
    ]
    assert account.lots == {END_2014: 150}


def test_take_earliest_spends_earliest_expiring_lots_first() -> None:
    account = Account("m1", lots={END_2014: 50, END_2013: 100})
    assert account.take_earliest(130) == {END_2013: 100, END_2014: 30}
    assert account.lots == {END_2014: 20}


def test_take_earliest_takes_no_more_than_there_is() -> None:
    account = Account("m1", lots={END_2013: 100})
    assert account.take_earliest(250) == {END_2013: 100}
    assert account.lots == {}
    assert account.debt == 0


# expiry


def test_lot_expires_at_its_expiry_instant() -> None:
    account = Account("m1", lots={END_2013: 100, END_2014: 50})
    entries = account.expire(END_2013)
    assert account.lots == {END_2014: 50}
    assert trail(entries) == [("expiry", -100, 50, 0)]
    assert entries[0].occurred_at == END_2013


def test_lot_does_not_expire_a_microsecond_before_its_expiry() -> None:
    account = Account("m1", lots={END_2013: 100})
    assert account.expire(END_2013 - timedelta(microseconds=1)) == []
    assert account.lots == {END_2013: 100}


def test_expiry_compares_instants_whatever_the_offset() -> None:
    account = Account("m1", lots={END_2013: 100})
    assert account.expire(datetime(2013, 12, 31, 15, 59, 59, tzinfo=UTC)) == []
    assert trail(account.expire(datetime(2013, 12, 31, 16, 0, tzinfo=UTC))) == [("expiry", -100, 0, 0)]


def test_expire_removes_every_due_lot_earliest_first() -> None:
    account = Account("m1", lots={END_2014: 50, END_2015: 7, END_2013: 100})
    entries = account.expire(END_2014 + timedelta(days=1))
    assert account.lots == {END_2015: 7}
    assert trail(entries) == [("expiry", -100, 57, 0), ("expiry", -50, 7, 0)]
    assert [e.occurred_at for e in entries] == [END_2013, END_2014]


def test_expiry_leaves_debt_and_held_points_alone() -> None:
    account = Account("m1", lots={END_2013: 100}, held=30, debt=0)
    account.expire(END_2015)
    assert (account.available, account.held, account.debt) == (0, 30, 0)


def test_points_earned_on_last_second_of_2012_expire_when_2013_ends_in_shanghai(
    policy: EarningPolicy,
) -> None:
    account = Account("m1")
    account.apply_billing_event(
        billing_event("b-1", "bill_settled", 10000, occurred_at="2012-12-31T23:59:59+08:00"), policy
    )
    account.apply_billing_event(
        billing_event("b-2", "bill_settled", 5000, occurred_at="2013-01-01T00:00:00+08:00"), policy
    )
    assert account.expire(datetime(2013, 12, 31, 23, 59, 59, 999999, tzinfo=SHANGHAI)) == []
    assert trail(account.expire(datetime(2014, 1, 1, 0, 0, tzinfo=SHANGHAI))) == [("expiry", -100, 50, 0)]
    assert account.lots == {END_2014: 50}


# tier


def test_event_tier_becomes_the_member_tier(policy: EarningPolicy) -> None:
    account = Account("m1")
    account.apply_billing_event(billing_event("b-1", "bill_settled", 10000, "silver"), policy)
    assert account.tier == "silver"
    account.apply_billing_event(billing_event("b-2", "bill_adjusted", -100, "diamond"), policy)
    assert account.tier == "diamond"
    account.apply_billing_event(billing_event("b-3", "recharge", 100, "standard"), policy)
    assert account.tier == "standard"


def test_tier_updates_even_when_the_event_earns_nothing(policy: EarningPolicy) -> None:
    account = Account("m1", tier="standard")
    account.apply_billing_event(billing_event("b-1", "bill_settled", 99, "gold"), policy)
    assert account.tier == "gold"


def test_points_use_the_event_tier_not_the_member_previous_tier(policy: EarningPolicy) -> None:
    account = Account("m1", tier="diamond")
    account.apply_billing_event(billing_event("b-1", "bill_settled", 10000, "standard"), policy)
    assert account.available == 100
