"""Errors of the lottery, each with the stable code the API returns (CONTRACT.md §6)."""

from __future__ import annotations


class LotteryError(Exception):
    code = "lottery_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)


class InvalidRequest(LotteryError):
    code = "invalid_request"


class UnknownCampaign(LotteryError):
    code = "unknown_campaign"


class CampaignExists(LotteryError):
    code = "campaign_exists"


class WrongCampaignKind(LotteryError):
    code = "wrong_campaign_kind"


class CampaignClosed(LotteryError):
    code = "campaign_closed"


class AlreadyClosed(LotteryError):
    code = "already_closed"


class LimitReached(LotteryError):
    code = "limit_reached"

    def __init__(self, detail: str, limit: str = "total") -> None:
        super().__init__(detail)
        self.limit = limit  # "total" or "daily", for the metric


class InsufficientPoints(LotteryError):
    code = "insufficient_points"


class AlreadyEntered(LotteryError):
    code = "already_entered"


class IdempotencyConflict(LotteryError):
    code = "idempotency_conflict"


class DrawInterrupted(LotteryError):
    code = "draw_interrupted"


class EntryInterrupted(LotteryError):
    code = "entry_interrupted"


class NotRevealed(LotteryError):
    code = "not_revealed"


class PointsUnavailable(LotteryError):
    code = "points_unavailable"


def refusal(code: str, detail: str) -> LotteryError:
    """Rebuild a refusal stored with a request, to answer a retry of it the same way."""
    for kind in (CampaignClosed, LimitReached, InsufficientPoints, DrawInterrupted, EntryInterrupted):
        if kind.code == code:
            return kind(detail)
    error = LotteryError(detail)
    error.code = code  # e.g. a refusal of the points service passed on as it is
    return error
