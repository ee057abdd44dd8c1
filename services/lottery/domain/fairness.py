"""The provably fair part of the lottery: how a seed decides every outcome (CONTRACT.md §6).

The service draws with these functions and `loyalty verify-campaign` checks a reveal
with the very same ones, so there is exactly one definition of "fair" in the code.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from typing import Protocol

ROLL_RANGE = 1_000_000  # a roll is in [0, 1_000_000): weights are parts per million
SEED_BYTES = 32


class Weighted(Protocol):
    @property
    def prize_id(self) -> str: ...

    @property
    def weight_ppm(self) -> int: ...


def seed_commitment(server_seed: bytes) -> str:
    """What is published before the campaign starts: hex SHA-256 of the secret seed."""
    return hashlib.sha256(server_seed).hexdigest()


def roll(server_seed: bytes, campaign_id: str, member_id: str, nonce: int, client_seed: str) -> int:
    """u = HMAC_SHA256(key=server_seed, msg="campaign_id|member_id|nonce|client_seed") mod 1,000,000."""
    message = f"{campaign_id}|{member_id}|{nonce}|{client_seed}".encode()
    digest = hmac.new(server_seed, message, hashlib.sha256).digest()
    return int.from_bytes(digest, "big") % ROLL_RANGE


def rolled_prize(u: int, prizes: Sequence[Weighted]) -> str | None:
    """The first prize (in creation order) whose running sum of weights exceeds u; past the sum, none."""
    running = 0
    for prize in prizes:
        running += prize.weight_ppm
        if u < running:
            return prize.prize_id
    return None


def stock_allows(prize_seq: int, stock: int) -> bool:
    """The draws that roll a prize are numbered 1, 2, … as they take it; the first `stock` win it."""
    return 1 <= prize_seq <= stock


def ballot_score(server_seed: bytes, public_entropy: str, campaign_id: str, member_id: str) -> bytes:
    """HMAC_SHA256(key=server_seed + public_entropy, msg="campaign_id|member_id"); lowest ranks first."""
    key = server_seed + public_entropy.encode("utf-8")
    return hmac.new(key, f"{campaign_id}|{member_id}".encode(), hashlib.sha256).digest()


def rank_entries(
    server_seed: bytes, public_entropy: str, campaign_id: str, member_ids: Iterable[str]
) -> list[str]:
    """Every entrant, best first: ascending score, ties broken by member_id."""
    return sorted(member_ids, key=lambda m: (ballot_score(server_seed, public_entropy, campaign_id, m), m))
