"""Billing events as they arrive on billing.events.v1, and why one may be rejected."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

EVENT_TYPES = ("bill_settled", "recharge", "bill_adjusted", "contract_renewed", "service_activated")
AMOUNT_TYPES = ("bill_settled", "recharge", "bill_adjusted")
TIERS = ("standard", "silver", "gold", "diamond")
MAX_ABS_AMOUNT_FEN = 10**10

_MEMBER_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
# RFC 3339 date-time: a full date, a time with seconds, and an offset ("Z" or ±hh:mm).
_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}):(\d{2})(\.\d+)?([Zz]|[+-](?:[01]\d|2[0-3]):[0-5]\d)"
)
# Years outside this range are not billing facts; beyond it a lot's expiry would not be representable.
MIN_YEAR, MAX_YEAR = 1900, 9000


class RejectedEvent(Exception):
    """A billing record that cannot be applied; it goes to the DLQ with `reason` and `detail`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class BillingEvent:
    event_id: str
    member_id: str
    type: str
    amount_fen: int | None
    tier: str
    occurred_at: datetime
    fingerprint: bytes  # SHA-256 of the canonical JSON payload: "same payload" means same hash


def fingerprint(payload: dict[str, Any]) -> bytes:
    """SHA-256 of the payload with sorted keys: the same fields and values, the same hash.

    The canonical form is stored with every applied event; changing it would make replays of
    old events look like conflicting duplicates.
    """
    try:
        canonical = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer beyond 64 bits, or a lone surrogate: the standard library copes
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    return hashlib.sha256(canonical).digest()


def _loads(raw: bytes) -> Any:
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        # Lone surrogates are valid JSON that orjson refuses: the standard library reads them (and
        # validation then names the field), or says what is wrong with the text.
        return json.loads(raw.decode("utf-8"))
    if isinstance(payload, dict) and isinstance(payload.get("amount_fen"), float):
        # orjson reads an integer beyond 64 bits as a float; read again to tell 1e30 from 10**30.
        return json.loads(raw.decode("utf-8"))
    return payload


def parse_billing_event(raw: bytes | None) -> BillingEvent:
    """Validate one record against CONTRACT.md §2; raise RejectedEvent naming the first problem."""
    if raw is None:
        raise RejectedEvent("not_json", "the record has no value")
    try:
        # Decoded as UTF-8 only: json.loads(bytes) would also guess UTF-16 and UTF-32.
        payload = _loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RejectedEvent("not_json", f"not valid UTF-8 JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise RejectedEvent("not_an_object", f"expected a JSON object, got {type(payload).__name__}")

    event_id = _required(payload, "event_id", str)
    if not 1 <= len(event_id) <= 64:
        raise RejectedEvent("invalid_field", "event_id: must be 1 to 64 characters")
    if not _storable(event_id):
        raise RejectedEvent("invalid_field", "event_id: must be printable UTF-8 text")

    member_id = _required(payload, "member_id", str)
    if not _MEMBER_ID.fullmatch(member_id):
        raise RejectedEvent("invalid_field", "member_id: must be 1 to 32 of [A-Za-z0-9_-]")

    event_type = _required(payload, "type", str)
    if event_type not in EVENT_TYPES:
        raise RejectedEvent("unknown_type", f"type: {event_type!r} is not one of {EVENT_TYPES}")

    amount: int | None = None
    if event_type in AMOUNT_TYPES:
        amount = _required(payload, "amount_fen", int)
        if abs(amount) > MAX_ABS_AMOUNT_FEN:
            raise RejectedEvent("amount_out_of_range", "amount_fen: |amount| must be <= 10^10")
        if amount < 0 and event_type != "bill_adjusted":
            raise RejectedEvent("amount_out_of_range", f"amount_fen: {event_type} needs amount >= 0")

    tier = _optional(payload, "tier", str)
    if tier is None:
        tier = "standard"
    elif tier not in TIERS:
        raise RejectedEvent("unknown_tier", f"tier: {tier!r} is not one of {TIERS}")

    occurred_text = _required(payload, "occurred_at", str)
    occurred_at = _parse_rfc3339(occurred_text)
    _optional(payload, "product", str)

    return BillingEvent(
        event_id=event_id,
        member_id=member_id,
        type=event_type,
        amount_fen=amount,
        tier=tier,
        occurred_at=occurred_at,
        fingerprint=fingerprint(payload),
    )


def _required(payload: dict[str, Any], name: str, kind: type) -> Any:
    if name not in payload or payload[name] is None:
        raise RejectedEvent("missing_field", f"{name}: required")
    return _typed(payload, name, kind)


def _optional(payload: dict[str, Any], name: str, kind: type) -> Any:
    if payload.get(name) is None:
        return None
    return _typed(payload, name, kind)


def _typed(payload: dict[str, Any], name: str, kind: type) -> Any:
    value = payload[name]
    # bool is an int in Python; JSON true is not an amount.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RejectedEvent("invalid_field", f"{name}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _parse_rfc3339(text: str) -> datetime:
    match = _RFC3339.fullmatch(text)
    if not match:
        raise RejectedEvent("invalid_field", f"occurred_at: {text[:64]!r} is not RFC 3339 with offset")
    day, hour_minute, second, fraction, offset = match.groups()
    leap = second == "60"  # a leap second: Python has no :60, the last instant of :59 stands in
    if leap:
        second, fraction = "59", ".999999"
    try:
        moment = datetime.fromisoformat(f"{day}T{hour_minute}:{second}{fraction or ''}{offset.upper()}")
    except ValueError as exc:
        raise RejectedEvent("invalid_field", f"occurred_at: {exc}") from None
    if not MIN_YEAR <= moment.year <= MAX_YEAR:
        raise RejectedEvent("invalid_field", f"occurred_at: year must be {MIN_YEAR} to {MAX_YEAR}")
    return moment


def _storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a JSON \\ud800 escape
        return False
    return True
