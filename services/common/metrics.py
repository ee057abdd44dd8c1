"""Metrics every service exports; a service declares its own in its metrics module."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUEST_SECONDS = Histogram(
    "loyalty_http_request_seconds",
    "HTTP request latency by route template and status",
    ["service", "method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
OUTBOX_PUBLISHED = Counter(
    "loyalty_outbox_published_total", "Events relayed from the outbox to Kafka", ["service", "topic"]
)
OUTBOX_BACKLOG = Gauge(
    "loyalty_outbox_backlog", "Events committed to the outbox and not yet on Kafka", ["service"]
)
OUTBOX_OLDEST_SECONDS = Gauge(
    "loyalty_outbox_oldest_seconds", "Age of the oldest unpublished outbox event", ["service"]
)
