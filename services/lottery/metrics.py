"""Metrics of the lottery service."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DRAWS = Counter(
    "loyalty_lottery_draws_total",
    "Instant draws made, by outcome (won, no_prize, stock_gone)",
    ["outcome"],
)
DRAW_REFUSALS = Counter(
    "loyalty_lottery_draw_refusals_total",
    "Draw requests refused, by error code (limit_reached, campaign_closed, insufficient_points, …)",
    ["error"],
)
LIMIT_REJECTIONS = Counter(
    "loyalty_lottery_limit_rejections_total",
    "Draws refused because the member reached a limit (total or daily)",
    ["limit"],
)
DRAW_SECONDS = Histogram(
    "loyalty_lottery_draw_seconds",
    "Time to answer a draw request: hold, draw transaction, capture",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
PRIZES_LEFT = Gauge(
    "loyalty_lottery_prizes_left",
    "Prizes still in stock, per campaign and prize (campaigns still open or closed in the last day)",
    ["campaign", "prize"],
)
BALLOT_ENTRIES = Counter("loyalty_lottery_ballot_entries_total", "Ballot entries accepted")
BALLOTS_CLOSED_SECONDS = Histogram(
    "loyalty_lottery_ballot_close_seconds",
    "Time to rank a ballot's entries and commit the results",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
PAYMENTS = Counter(
    "loyalty_lottery_payments_total",
    "Holds settled with the points service (captured, voided, late_charge, unpaid)",
    ["action"],
)
PRIZE_CREDITS = Counter("loyalty_lottery_prize_credits_total", "Prizes of points credited to winners")
RECONCILED = Counter(
    "loyalty_lottery_reconciled_total",
    "Draws and entries the reconciler finished after a crash or an outage, by what it did",
    ["action"],
)
