"""The draw and ballot formulas of CONTRACT.md §6, and that outcomes follow the prize weights."""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter

from services.lottery.domain.campaign import Prize
from services.lottery.domain.fairness import (
    ROLL_RANGE,
    ballot_score,
    rank_entries,
    roll,
    rolled_prize,
    seed_commitment,
    stock_allows,
)

SEED = bytes(range(32))
PRIZES = (
    Prize("phone", "Phone", 5, 10_000),
    Prize("data", "1 GB data", 1_000, 240_000),
    Prize("bonus", "50 points", 1_000, 150_000, points=50),
)  # and 600,000 ppm of no prize


def test_the_roll_is_the_contract_hmac_modulo_a_million() -> None:
    message = b"spring|m0001234|7|my seed"
    expected = int.from_bytes(hmac.new(SEED, message, hashlib.sha256).digest(), "big") % 1_000_000
    assert roll(SEED, "spring", "m0001234", 7, "my seed") == expected
    assert roll(SEED, "spring", "m0001234", 8, "my seed") != expected


def test_the_first_prize_whose_running_weight_exceeds_the_roll_wins() -> None:
    assert rolled_prize(0, PRIZES) == "phone"
    assert rolled_prize(9_999, PRIZES) == "phone"
    assert rolled_prize(10_000, PRIZES) == "data"
    assert rolled_prize(249_999, PRIZES) == "data"
    assert rolled_prize(250_000, PRIZES) == "bonus"
    assert rolled_prize(399_999, PRIZES) == "bonus"
    assert rolled_prize(400_000, PRIZES) is None
    assert rolled_prize(999_999, PRIZES) is None
    assert rolled_prize(0, (Prize("none", "never", 1, 0),)) is None


def test_the_first_stock_rolls_of_a_prize_win_it() -> None:
    assert [stock_allows(seq, 3) for seq in (1, 2, 3, 4, 50)] == [True, True, True, False, False]
    assert not stock_allows(1, 0)


def test_outcomes_over_many_draws_follow_the_weights() -> None:
    """Pearson's chi-square goodness of fit, 4 categories (3 degrees of freedom), 200,000 draws.

    The critical value of chi-square with 3 degrees of freedom at the 0.001 significance level is
    16.266: a fair implementation fails this test once in a thousand seeds, and the seed is fixed.
    """
    draws = 200_000
    outcomes = Counter(
        rolled_prize(roll(SEED, "chi", f"m{n % 997}", n // 997 + 1, ""), PRIZES) for n in range(draws)
    )
    expected = {p.prize_id: draws * p.weight_ppm / ROLL_RANGE for p in PRIZES}
    expected[None] = draws * (ROLL_RANGE - sum(p.weight_ppm for p in PRIZES)) / ROLL_RANGE  # type: ignore[index]
    chi_square = sum((outcomes[k] - e) ** 2 / e for k, e in expected.items())
    assert chi_square < 16.266, (chi_square, outcomes)


def test_rolls_are_uniform_over_ten_bands() -> None:
    """Chi-square with 9 degrees of freedom, 100,000 rolls; critical value 27.877 at the 0.001 level."""
    rolls = 100_000
    bands = Counter(roll(SEED, "uniform", "m1", n, "") * 10 // ROLL_RANGE for n in range(1, rolls + 1))
    chi_square = sum((bands[b] - rolls / 10) ** 2 / (rolls / 10) for b in range(10))
    assert chi_square < 27.877, (chi_square, bands)


def test_the_commitment_is_the_sha256_of_the_seed() -> None:
    assert seed_commitment(SEED) == hashlib.sha256(SEED).hexdigest()


def test_ballot_ranks_by_the_keyed_hmac_ascending_with_ties_by_member() -> None:
    members = [f"m{i:03d}" for i in range(50)]
    ranked = rank_entries(SEED, "block 42", "gala", reversed(members))
    key = SEED + b"block 42"
    scores = {m: hmac.new(key, f"gala|{m}".encode(), hashlib.sha256).digest() for m in members}
    assert ranked == sorted(members, key=lambda m: (scores[m], m))
    assert ballot_score(SEED, "block 42", "gala", "m001") == scores["m001"]
    assert rank_entries(SEED, "other entropy", "gala", members) != ranked
    assert rank_entries(SEED, "", "gala", members) == rank_entries(SEED, "", "gala", sorted(members))
