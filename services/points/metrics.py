"""Metrics of the points service."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

BILLING_EVENTS = Counter(
    "loyalty_billing_events_total",
    "Billing records consumed, by outcome (applied, duplicate, rejected)",
    ["outcome"],
)
BILLING_REJECTED = Counter(
    "loyalty_billing_rejected_total", "Billing records sent to the DLQ, by reason", ["reason"]
)
INGEST_BATCH_EVENTS = Histogram(
    "loyalty_ingest_batch_events",
    "Records per ingest batch",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
)
INGEST_BATCH_SECONDS = Histogram(
    "loyalty_ingest_batch_seconds",
    "Time to apply one batch and commit it",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
INGEST_RETRIES = Counter("loyalty_ingest_retries_total", "Batches retried after a transient database error")
INGEST_LAST_COMMIT = Gauge(
    "loyalty_ingest_last_commit_timestamp_seconds", "When the worker last committed a batch"
)
POINTS_ACCRUED = Counter("loyalty_points_accrued_total", "Points earned from billing events")
POINTS_CLAWED_BACK = Counter(
    "loyalty_points_clawed_back_total", "Points taken back by negative bill adjustments"
)
POINTS_EXPIRED = Counter("loyalty_points_expired_total", "Points expired at their lots' year end")
POINTS_LIABILITY = Gauge(
    "loyalty_points_liability",
    "Points owed to members (available, held) and owed by them (debt)",
    ["state"],
)
MEMBERS = Gauge("loyalty_members", "Members with a points account")
HOLDS_EXPIRED = Counter(
    "loyalty_holds_expired_total", "Pending holds voided by the service because their ttl passed"
)
HOLDS_OPEN = Gauge("loyalty_holds_open", "Pending holds: points reserved by an order or draw in flight")
HOLDS_OVERDUE = Gauge(
    "loyalty_holds_overdue", "Pending holds past their ttl that the sweep has not voided yet"
)
