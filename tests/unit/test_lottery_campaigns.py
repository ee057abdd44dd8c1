"""Campaign rules: definitions that cannot be drawn are refused, windows and per-member limits hold."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from services.lottery.domain.campaign import (
    BALLOT,
    CLOSED,
    ENDED,
    INSTANT,
    OPEN,
    SCHEDULED,
    Campaign,
    Participant,
    Prize,
)
from services.lottery.domain.draws import HELD, NO_PAYMENT, Draw
from services.lottery.domain.errors import CampaignClosed, InvalidRequest, LimitReached, WrongCampaignKind

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
INSTANT_CAMPAIGN = Campaign(
    "spring", "Spring", INSTANT, 10, "c0ffee",
    starts_at=NOW - timedelta(days=1), ends_at=NOW + timedelta(days=1),
    per_member_limit=5, per_member_daily_limit=2, prizes=(Prize("tv", "TV", 1, 1_000),),
)  # fmt: skip


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"prizes": ()}, "at least one prize"),
        ({"seats": 3}, "only a ballot has seats"),
        ({"prizes": (Prize("a", "A", 1, 1),) * 2}, "unique"),
        ({"prizes": (Prize("a", "A", 1, 700_000), Prize("b", "B", 1, 300_001))}, "more than 1,000,000"),
        ({"ends_at": NOW - timedelta(days=2)}, "after starts_at"),
        ({"kind": BALLOT, "prizes": ()}, "needs seats"),
        ({"kind": BALLOT, "seats": 2}, "a ballot has seats, not prizes"),
        ({"kind": "raffle"}, "kind"),
    ],
)
def test_definitions_that_cannot_be_drawn_are_refused(change: dict[str, object], complaint: str) -> None:
    with pytest.raises(InvalidRequest, match=complaint):
        replace(INSTANT_CAMPAIGN, **change).validate()  # type: ignore[arg-type]


def test_weights_may_sum_to_exactly_a_million() -> None:
    replace(INSTANT_CAMPAIGN, prizes=(Prize("a", "A", 1, 400_000), Prize("b", "B", 1, 600_000))).validate()


def test_a_campaign_is_open_only_within_its_window_and_until_closed() -> None:
    c = INSTANT_CAMPAIGN
    assert c.state(NOW - timedelta(days=2)) == SCHEDULED
    assert c.state(NOW) == OPEN
    assert c.state(NOW + timedelta(days=1)) == ENDED
    assert c.closed(NOW, None).state(NOW) == CLOSED
    with pytest.raises(CampaignClosed, match="opens at"):
        c.ensure_open(NOW - timedelta(days=2))
    with pytest.raises(CampaignClosed, match="ended at"):
        c.ensure_open(NOW + timedelta(days=1))
    with pytest.raises(WrongCampaignKind):
        c.ensure_kind(BALLOT)


def test_an_instant_campaign_is_revealed_once_over_but_a_ballot_only_once_closed() -> None:
    assert not INSTANT_CAMPAIGN.revealable(NOW)
    assert INSTANT_CAMPAIGN.revealable(NOW + timedelta(days=1))
    ballot = replace(INSTANT_CAMPAIGN, kind=BALLOT, prizes=(), seats=3)
    assert not ballot.revealable(NOW + timedelta(days=1))  # ended, but its entropy is not fixed yet
    assert ballot.closed(NOW, "entropy").revealable(NOW)


def test_nonces_count_up_from_one_and_the_daily_limit_resets_the_next_day() -> None:
    member = Participant("spring", "ann")
    day_one, day_two = date(2026, 5, 1), date(2026, 5, 2)
    assert [member.next_nonce(INSTANT_CAMPAIGN, day_one) for _ in range(2)] == [1, 2]
    with pytest.raises(LimitReached) as daily:
        member.next_nonce(INSTANT_CAMPAIGN, day_one)
    assert daily.value.limit == "daily" and member.draws == 2
    assert [member.next_nonce(INSTANT_CAMPAIGN, day_two) for _ in range(2)] == [3, 4]
    assert member.next_nonce(INSTANT_CAMPAIGN, date(2026, 5, 3)) == 5
    with pytest.raises(LimitReached) as total:
        member.next_nonce(INSTANT_CAMPAIGN, date(2026, 5, 4))
    assert total.value.limit == "total" and member.draws == 5


def test_ids_of_a_draw_follow_from_campaign_and_key_so_retries_reach_the_same_hold() -> None:
    first = Draw.requested("spring", "key-1", "ann", "seed", 10)
    assert first == Draw.requested("spring", "key-1", "ann", "seed", 10)
    assert first.hold_id is not None and first.hold_id.startswith("lottery-draw-")
    assert first.payment == HELD and first.credit_id == f"lottery-prize-{first.draw_id}"
    assert Draw.requested("spring", "key-2", "ann", "seed", 10).hold_id != first.hold_id
    assert Draw.requested("autumn", "key-1", "ann", "seed", 10).hold_id != first.hold_id
    assert Draw.requested("spring", "key-1", "ann", "other", 10).request_sha256 != first.request_sha256
    free = Draw.requested("spring", "key-1", "ann", "seed", 0)
    assert (free.hold_id, free.payment) == (None, NO_PAYMENT)
