"""The verifier: an honest reveal checks out, every kind of tampering is caught."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.lottery.domain.campaign import Prize
from services.lottery.domain.fairness import rank_entries, roll, rolled_prize, seed_commitment, stock_allows
from services.lottery.domain.reveal import (
    Reveal,
    RevealedDraw,
    RevealedEntry,
    RevealFormatError,
    verify,
)

SEED = bytes.fromhex("5eed" * 16)
PRIZES = (Prize("tv", "TV", 2, 300_000), Prize("cap", "Cap", 100, 300_000))
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def honest_instant(draws_per_member: int = 6, members: tuple[str, ...] = ("ann", "bob", "cyd")) -> Reveal:
    """Draws made as the service makes them: in turn, the stock of each prize taken in order."""
    rolls: dict[str, int] = defaultdict(int)
    draws = []
    for n in range(1, draws_per_member + 1):
        for member in members:
            client_seed = f"{member}-{n}"
            prize_id = rolled_prize(roll(SEED, "spring", member, n, client_seed), PRIZES)
            seq = None
            if prize_id is not None:
                rolls[prize_id] += 1
                seq = rolls[prize_id]
                stock = next(p.stock for p in PRIZES if p.prize_id == prize_id)
                prize_id = prize_id if stock_allows(seq, stock) else None
            drawn_at = START + timedelta(minutes=len(draws))
            draws.append(RevealedDraw(f"d-{member}-{n}", member, n, client_seed, prize_id, seq, drawn_at))
    return Reveal("spring", "instant", seed_commitment(SEED), SEED, "Asia/Shanghai", prizes=PRIZES,
                  per_member_limit=10, per_member_daily_limit=10, draws=tuple(draws))  # fmt: skip


def honest_ballot(entrants: int = 40, seats: int = 7) -> Reveal:
    ranked = rank_entries(SEED, "block 7", "gala", [f"m{i}" for i in range(entrants)])
    entries = tuple(RevealedEntry(m, rank, rank <= seats) for rank, m in enumerate(ranked, start=1))
    return Reveal("gala", "ballot", seed_commitment(SEED), SEED, "Asia/Shanghai", seats=seats,
                  public_entropy="block 7", entries=entries)  # fmt: skip


def round_trip(reveal: Reveal) -> Reveal:
    return Reveal.from_json(json.loads(json.dumps(reveal.to_json())))


def failures(reveal: Reveal) -> list[str]:
    return [f.text for f in verify(reveal).findings if not f.ok]


def test_an_honest_instant_campaign_checks_out_after_a_json_round_trip() -> None:
    reveal = honest_instant()
    assert any(d.prize_seq is not None and d.prize_id is None for d in reveal.draws), "stock ran out"
    again = round_trip(reveal)
    assert again == reveal
    result = verify(again)
    assert result.fair, failures(again)
    assert sum(f.text.startswith("draw ") for f in result.findings) == 18


def test_an_honest_ballot_checks_out_after_a_json_round_trip() -> None:
    reveal = honest_ballot()
    assert round_trip(reveal) == reveal
    assert verify(round_trip(reveal)).fair


def test_a_changed_seed_breaks_the_commitment() -> None:
    assert any(
        "but the commitment was" in f for f in failures(replace(honest_instant(), server_seed=b"x" * 32))
    )


def test_a_changed_outcome_is_caught() -> None:
    reveal = honest_instant()
    draws = list(reveal.draws)
    lost = next(i for i, d in enumerate(draws) if d.prize_id is None and d.prize_seq is None)
    draws[lost] = replace(draws[lost], prize_id="cap", prize_seq=99)
    assert any("the seed gives no prize" in f for f in failures(replace(reveal, draws=tuple(draws))))


def test_a_dropped_draw_leaves_a_gap_in_the_nonces() -> None:
    reveal = honest_instant()
    dropped = tuple(d for d in reveal.draws if not (d.member_id == "bob" and d.nonce == 2))
    assert any("bob has nonces [1, 3, 4, 5, 6]" in f for f in failures(replace(reveal, draws=dropped)))


def test_a_prize_given_beyond_its_stock_is_caught() -> None:
    reveal = honest_instant()
    draws = [
        replace(d, prize_id="tv") if d.prize_seq is not None and d.prize_seq > 2 and d.prize_id is None else d
        for d in reveal.draws
    ]
    assert draws != list(reveal.draws)
    assert failures(replace(reveal, draws=tuple(draws)))


def test_renumbered_stock_rolls_are_caught() -> None:
    reveal = honest_instant()
    draws = [replace(d, prize_seq=1) if d.prize_seq is not None else d for d in reveal.draws]
    assert any("a draw is missing or repeated" in f for f in failures(replace(reveal, draws=tuple(draws))))


def test_draws_past_the_limits_are_caught() -> None:
    reveal = honest_instant()
    assert any("over the limit" in f for f in failures(replace(reveal, per_member_limit=5)))
    assert any("over the daily limit" in f for f in failures(replace(reveal, per_member_daily_limit=2)))


def test_a_swapped_ballot_winner_is_caught() -> None:
    reveal = honest_ballot()
    entries = list(reveal.entries)
    entries[0] = replace(entries[0], won=False)
    entries[-1] = replace(entries[-1], won=True)
    assert len(failures(replace(reveal, entries=tuple(entries)))) == 2
    assert failures(replace(reveal, public_entropy="block 8"))


def test_a_ballot_with_too_few_winners_is_caught() -> None:
    reveal = honest_ballot()
    entries = tuple(replace(e, won=e.won and e.rank < 7) for e in reveal.entries)
    assert any("6 winners for 7 seats" in f for f in failures(replace(reveal, entries=entries)))


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r.pop("server_seed"),
        lambda r: r.update(server_seed="not hex"),
        lambda r: r.update(kind="raffle"),
        lambda r: r["draws"][0].update(nonce="1"),
        lambda r: r["draws"][0].update(drawn_at="yesterday"),
        lambda r: r["draws"][0].update(drawn_at="2026-03-01T12:00:00"),
        lambda r: r.update(draws={}),
        lambda r: r["prizes"][0].pop("weight_ppm"),
    ],
)
def test_a_document_that_is_not_a_reveal_is_refused_with_the_reason(change: Any) -> None:
    document = honest_instant().to_json()
    change(document)
    with pytest.raises(RevealFormatError):
        Reveal.from_json(document)


def test_a_non_object_is_not_a_reveal() -> None:
    with pytest.raises(RevealFormatError, match="must be a JSON object"):
        Reveal.from_json(["a", "list"])
