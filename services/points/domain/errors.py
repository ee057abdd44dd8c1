"""Errors of the points domain, each with the stable code the API returns."""

from __future__ import annotations


class PointsError(Exception):
    code = "points_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)


class InsufficientPoints(PointsError):
    code = "insufficient_points"


class HoldNotPending(PointsError):
    code = "hold_not_pending"


class UnknownHold(PointsError):
    code = "unknown_hold"


class IdempotencyConflict(PointsError):
    code = "idempotency_conflict"


class InvalidRequest(PointsError):
    code = "invalid_request"
