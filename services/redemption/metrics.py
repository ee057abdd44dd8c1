"""Metrics of the redemption service."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

ORDERS = Counter(
    "loyalty_redemption_orders_total",
    "Orders by reward and result (confirmed, a failure code, cancelled)",
    ["sku", "result"],
)
SAGA_STEPS = Counter(
    "loyalty_redemption_saga_steps_total", "Saga steps by step and outcome", ["step", "outcome"]
)
RECONCILER_ACTIONS = Counter(
    "loyalty_redemption_reconciler_actions_total", "Orders finished or undone by the reconciler", ["action"]
)
STOCK_REMAINING = Gauge("loyalty_reward_stock_remaining", "Units of a reward still on sale", ["sku"])
