"""The reveal of a finished campaign, and the check that every outcome in it follows from the seed.

`GET /v1/campaigns/{id}/reveal` serves `Reveal.to_json()`; `loyalty verify-campaign`
reads it back with `Reveal.from_json()` and runs `verify()`. A reveal carries all a
verifier needs: the seed and its commitment, the prizes with their weights and stock
in creation order (or the seats), the limits, and every draw (or entry).

What a reveal alone cannot prove: that no draw was left out of it after a member's
last nonce. Each member can check that the draws they were answered appear in it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.lottery.domain.campaign import BALLOT, INSTANT, Prize
from services.lottery.domain.fairness import (
    SEED_BYTES,
    rank_entries,
    roll,
    rolled_prize,
    seed_commitment,
    stock_allows,
)


class RevealFormatError(ValueError):
    """The document is not a reveal this verifier can read."""


@dataclass(frozen=True, slots=True)
class RevealedDraw:
    draw_id: str
    member_id: str
    nonce: int
    client_seed: str
    prize_id: str | None
    prize_seq: int | None  # the draw was the n-th to roll its prize (None: it rolled no prize)
    drawn_at: datetime


@dataclass(frozen=True, slots=True)
class RevealedEntry:
    member_id: str
    rank: int
    won: bool


@dataclass(frozen=True, slots=True)
class Reveal:
    campaign_id: str
    kind: str
    seed_commitment: str
    server_seed: bytes
    timezone: str
    prizes: tuple[Prize, ...] = ()
    seats: int | None = None
    per_member_limit: int | None = None
    per_member_daily_limit: int | None = None
    public_entropy: str | None = None
    draws: tuple[RevealedDraw, ...] = ()
    entries: tuple[RevealedEntry, ...] = ()

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "campaign_id": self.campaign_id,
            "kind": self.kind,
            "seed_commitment": self.seed_commitment,
            "server_seed": self.server_seed.hex(),
            "timezone": self.timezone,
            "per_member_limit": self.per_member_limit,
            "per_member_daily_limit": self.per_member_daily_limit,
        }
        if self.kind == INSTANT:
            body["prizes"] = [
                {"prize_id": p.prize_id, "name": p.name, "stock": p.stock, "weight_ppm": p.weight_ppm,
                 "points": p.points}
                for p in self.prizes
            ]  # fmt: skip
            body["draws"] = [
                {"draw_id": d.draw_id, "member_id": d.member_id, "nonce": d.nonce,
                 "client_seed": d.client_seed, "prize_id": d.prize_id, "prize_seq": d.prize_seq,
                 "drawn_at": d.drawn_at.isoformat()}
                for d in self.draws
            ]  # fmt: skip
        else:
            body["seats"] = self.seats
            body["public_entropy"] = self.public_entropy or ""
            body["entries"] = [{"member_id": e.member_id, "rank": e.rank, "won": e.won} for e in self.entries]
        return body

    @classmethod
    def from_json(cls, body: Any) -> Reveal:
        """Read a reveal; RevealFormatError says what is missing or mistyped."""
        doc = _Fields(body, "reveal")
        kind = doc.text("kind")
        if kind not in (INSTANT, BALLOT):
            raise RevealFormatError(f"reveal.kind: must be {INSTANT!r} or {BALLOT!r}")
        try:
            server_seed = bytes.fromhex(doc.text("server_seed"))
        except ValueError:
            raise RevealFormatError("reveal.server_seed: not hex") from None
        common: dict[str, Any] = {
            "campaign_id": doc.text("campaign_id"),
            "kind": kind,
            "seed_commitment": doc.text("seed_commitment"),
            "server_seed": server_seed,
            "timezone": doc.text("timezone", default="Asia/Shanghai"),
            "per_member_limit": doc.integer("per_member_limit", optional=True),
            "per_member_daily_limit": doc.integer("per_member_daily_limit", optional=True),
        }
        if kind == INSTANT:
            prizes = tuple(
                Prize(p.text("prize_id"), p.text("name", default=""), p.integer("stock"),
                      p.integer("weight_ppm"), p.integer("points", optional=True))
                for p in doc.objects("prizes")
            )  # fmt: skip
            draws = tuple(
                RevealedDraw(d.text("draw_id", default=""), d.text("member_id"), d.integer("nonce"),
                             d.text("client_seed", default=""), d.text("prize_id", optional=True),
                             d.integer("prize_seq", optional=True), d.moment("drawn_at"))
                for d in doc.objects("draws")
            )  # fmt: skip
            return cls(**common, prizes=prizes, draws=draws)
        entries = tuple(
            RevealedEntry(e.text("member_id"), e.integer("rank"), e.boolean("won"))
            for e in doc.objects("entries")
        )
        return cls(
            **common,
            seats=doc.integer("seats"),
            public_entropy=doc.text("public_entropy", default=""),
            entries=entries,
        )


@dataclass(frozen=True, slots=True)
class Finding:
    ok: bool
    text: str


@dataclass
class Verification:
    findings: list[Finding] = field(default_factory=list)

    @property
    def fair(self) -> bool:
        return all(f.ok for f in self.findings)

    def check(self, ok: bool, text: str) -> None:
        self.findings.append(Finding(ok, text))

    def check_none(self, problems: list[str], fine: str, heading: str) -> None:
        """One finding for a rule: `fine` if nothing broke it, else `heading` and what did."""
        self.check(not problems, fine if not problems else f"{heading}: " + "; ".join(problems))


def verify(reveal: Reveal) -> Verification:
    """Recompute every outcome of the reveal from its seed; one finding per draw or entry and per rule."""
    result = Verification()
    commitment = seed_commitment(reveal.server_seed)
    result.check(
        len(reveal.server_seed) == SEED_BYTES,
        f"server seed is {len(reveal.server_seed)} bytes (the service makes {SEED_BYTES})",
    )
    result.check(
        hmac.compare_digest(commitment, reveal.seed_commitment.lower()),
        f"sha256(server_seed) = {commitment} "
        + ("matches the commitment" if commitment == reveal.seed_commitment.lower()
           else f"but the commitment was {reveal.seed_commitment}"),
    )  # fmt: skip
    if reveal.kind == INSTANT:
        _verify_draws(reveal, result)
    else:
        _verify_entries(reveal, result)
    return result


def _verify_draws(reveal: Reveal, result: Verification) -> None:
    prizes = {p.prize_id: p for p in reveal.prizes}
    result.check(len(prizes) == len(reveal.prizes), "prize ids are unique")
    result.check(
        sum(p.weight_ppm for p in reveal.prizes) <= 1_000_000,
        f"prize weights sum to {sum(p.weight_ppm for p in reveal.prizes):,} ppm of 1,000,000",
    )
    rolls: dict[str, list[int | None]] = defaultdict(
        list
    )  # prize -> the prize_seq of each draw that rolled it
    for d in reveal.draws:
        u = roll(reveal.server_seed, reveal.campaign_id, d.member_id, d.nonce, d.client_seed)
        rolled = rolled_prize(u, reveal.prizes)
        where = f"draw {d.draw_id} ({d.member_id} #{d.nonce}, client_seed {d.client_seed!r}): u={u:06d}"
        if rolled is None:
            expected, why = None, "no prize"
            ok = d.prize_seq is None
        else:
            rolls[rolled].append(d.prize_seq)
            stock = prizes[rolled].stock
            if d.prize_seq is not None and stock_allows(d.prize_seq, stock):
                expected, why = rolled, f"{rolled} (roll {d.prize_seq} of stock {stock})"
            else:
                expected, why = None, f"rolled {rolled}, stock gone (roll {d.prize_seq} of stock {stock})"
            ok = d.prize_seq is not None
        if ok and d.prize_id == expected:
            result.check(True, f"{where} → {why}")
        else:
            result.check(False, f"{where} → the seed gives {why}, the reveal says {d.prize_id or 'no prize'}")
    for prize in reveal.prizes:
        seqs = rolls.get(prize.prize_id, [])
        numbered = sorted(s for s in seqs if s is not None)
        result.check(
            numbered == list(range(1, len(seqs) + 1)),
            f"prize {prize.prize_id}: {len(seqs)} draws rolled it, numbered 1..{len(seqs)} without gaps "
            f"or repeats; {min(len(seqs), prize.stock)} won of stock {prize.stock}"
            if numbered == list(range(1, len(seqs) + 1))
            else f"prize {prize.prize_id}: the draws that rolled it are numbered {_ranges(numbered)}, "
            f"not 1..{len(seqs)}: a draw is missing or repeated",
        )
    _verify_nonces_and_limits(reveal, result)


def _verify_nonces_and_limits(reveal: Reveal, result: Verification) -> None:
    by_member: dict[str, list[RevealedDraw]] = defaultdict(list)
    for d in reveal.draws:
        by_member[d.member_id].append(d)
    try:
        zone = ZoneInfo(reveal.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        result.check(False, f"unknown time zone {reveal.timezone!r}: daily limits not checked")
        zone = None
    gaps: list[str] = []
    over_total: list[str] = []
    over_daily: list[str] = []
    for member_id, draws in sorted(by_member.items()):
        nonces = sorted(d.nonce for d in draws)
        if nonces != list(range(1, len(nonces) + 1)):
            gaps.append(f"{member_id} has nonces {_ranges(nonces)}")
        if reveal.per_member_limit is not None and len(draws) > reveal.per_member_limit:
            over_total.append(f"{member_id} drew {len(draws)} times")
        if zone is not None and reveal.per_member_daily_limit is not None:
            per_day: Counter[date] = Counter(d.drawn_at.astimezone(zone).date() for d in draws)
            over_daily.extend(
                f"{member_id} drew {n} times on {day}"
                for day, n in sorted(per_day.items())
                if n > reveal.per_member_daily_limit
            )
    result.check_none(
        gaps,
        f"nonces of all {len(by_member)} members run 1..n without gaps or repeats",
        "nonces with gaps or repeats",
    )
    if reveal.per_member_limit is not None:
        result.check_none(
            over_total, f"no member drew more than {reveal.per_member_limit} times", "over the limit"
        )
    if reveal.per_member_daily_limit is not None:
        result.check_none(
            over_daily,
            f"no member drew more than {reveal.per_member_daily_limit} times a day ({reveal.timezone})",
            "over the daily limit",
        )


def _verify_entries(reveal: Reveal, result: Verification) -> None:
    seats = reveal.seats or 0
    members = [e.member_id for e in reveal.entries]
    duplicates = sorted(m for m, n in Counter(members).items() if n > 1)
    result.check(not duplicates, "one entry per member" if not duplicates
                 else f"members entered more than once: {', '.join(duplicates)}")  # fmt: skip
    revealed = {e.member_id: e for e in reveal.entries}
    entropy = reveal.public_entropy or ""
    ranked = rank_entries(reveal.server_seed, entropy, reveal.campaign_id, revealed)
    for position, member_id in enumerate(ranked, start=1):
        entry = revealed[member_id]
        won = position <= seats
        score = _short_score(reveal, member_id)
        expected = f"rank {position}, {'won' if won else 'lost'}"
        if entry.won == won and entry.rank == position:
            result.check(True, f"entry {member_id}: score {score}… → {expected}")
        else:
            said = f"rank {entry.rank}, {'won' if entry.won else 'lost'}"
            result.check(False, f"entry {member_id}: score {score}… → the seed gives {expected}, "
                                f"the reveal says {said}")  # fmt: skip
    winners = sum(e.won for e in reveal.entries)
    result.check(
        winners == min(seats, len(revealed)),
        f"{winners} winners for {seats} seats and {len(revealed)} entries",
    )


def _short_score(reveal: Reveal, member_id: str) -> str:
    key = reveal.server_seed + (reveal.public_entropy or "").encode("utf-8")
    message = f"{reveal.campaign_id}|{member_id}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:12]


def _ranges(numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:20])
    return f"[{shown}{', …' if len(numbers) > 20 else ''}]"


class _Fields:
    """Typed access to one JSON object of the reveal, with the path in every error."""

    def __init__(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise RevealFormatError(f"{path}: must be a JSON object")
        self._value = value
        self._path = path

    def _get(self, key: str, optional: bool, default: Any) -> Any:
        if key not in self._value or self._value[key] is None:
            if optional or default is not None:
                return default
            raise RevealFormatError(f"{self._path}.{key}: missing")
        return self._value[key]

    def text(self, key: str, *, optional: bool = False, default: str | None = None) -> Any:
        value = self._get(key, optional, default)
        if value is not None and not isinstance(value, str):
            raise RevealFormatError(f"{self._path}.{key}: must be a string")
        return value

    def integer(self, key: str, *, optional: bool = False) -> Any:
        value = self._get(key, optional, None)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise RevealFormatError(f"{self._path}.{key}: must be an integer")
        return value

    def boolean(self, key: str) -> bool:
        value = self._get(key, False, None)
        if not isinstance(value, bool):
            raise RevealFormatError(f"{self._path}.{key}: must be true or false")
        return value

    def moment(self, key: str) -> datetime:
        text = self.text(key)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise RevealFormatError(f"{self._path}.{key}: not an ISO 8601 date-time") from None
        if moment.tzinfo is None:
            raise RevealFormatError(f"{self._path}.{key}: needs a UTC offset")
        return moment

    def objects(self, key: str) -> list[_Fields]:
        items = self._get(key, False, None)
        if not isinstance(items, list):
            raise RevealFormatError(f"{self._path}.{key}: must be a list")
        return [_Fields(item, f"{self._path}.{key}[{i}]") for i, item in enumerate(items)]
