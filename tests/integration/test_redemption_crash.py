"""The redemption service killed mid-order: each order ends confirmed with its points, or with none."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx

from tests.integration.conftest import Platform, wait_until
from tests.integration.test_redemption import as_member, fund_all, reward

HOLD_TTL = 30


def test_sigkill_between_hold_and_capture_is_finished_or_undone_within_the_hold_ttl(
    platform: Platform,
) -> None:
    points = platform.start_points_api()
    settings = {"LOYALTY_RECONCILE_AFTER_SECONDS": "1", "LOYALTY_HOLD_TTL_SECONDS": str(HOLD_TTL)}
    api = platform.start_api("redemption", **settings)
    sku = reward(api, stock=300, points_price=10)["sku"]
    members = [f"k{i:03d}" for i in range(300)]
    asyncio.run(fund_all(points, members, 100))

    def storm() -> None:
        async def send() -> None:
            limits = httpx.Limits(max_connections=300)
            async with httpx.AsyncClient(base_url=api, timeout=30, limits=limits) as client:
                await asyncio.gather(
                    *(
                        client.post(
                            "/v1/redemptions",
                            json={"member_id": m, "sku": sku},
                            headers={**as_member(m), "Idempotency-Key": f"o-{m}"},
                        )
                        for m in members
                    ),
                    return_exceptions=True,  # the server dies under them
                )

        asyncio.run(send())

    clients = threading.Thread(target=storm)
    clients.start()
    wait_until(
        lambda: platform.fetchval("SELECT count(*) FROM redemption.orders WHERE stage = 'stock_taken'") > 0,
        timeout=30,
        what="orders between hold and capture",
    )
    killed = platform.services[-1]
    killed.kill()
    killed_at = time.monotonic()
    clients.join()
    pending = platform.fetchval("SELECT count(*) FROM redemption.orders WHERE status = 'pending'")
    assert pending > 0, "the kill found no order in flight; nothing was tested"

    platform.start_api("redemption", **settings)
    wait_until(
        lambda: platform.fetchval("SELECT count(*) FROM redemption.orders WHERE status = 'pending'") == 0,
        timeout=HOLD_TTL,
        what="the reconciler to settle every interrupted order",
    )
    assert time.monotonic() - killed_at < HOLD_TTL + 5

    orders = platform.fetch("SELECT member_id, status, points_spent, hold_id FROM redemption.orders")
    by_member = {o["member_id"]: o for o in orders}
    holds = {
        h["hold_id"]: h["status"]
        for h in platform.fetch("SELECT hold_id, status FROM points.holds WHERE hold_id LIKE 'redemption-%'")
    }
    balances = {
        b["member_id"]: (b["available"], b["held"])
        for b in platform.fetch("SELECT member_id, available, held FROM points.members")
    }
    wrong = []
    for member in members:
        order = by_member.get(member)
        spent = 100 - balances[member][0]
        if order is None:  # the request never reached the database
            ok = spent == 0 and balances[member][1] == 0
        elif order["status"] == "confirmed":
            ok = spent == order["points_spent"] and holds.get(order["hold_id"]) == "captured"
        else:
            ok = spent == 0 and holds.get(order["hold_id"]) in (None, "voided")
        if not ok or balances[member][1] != 0:
            wrong.append((member, dict(order) if order else None, balances[member]))
    assert not wrong, wrong[:10]
    confirmed = sum(1 for o in orders if o["status"] == "confirmed")
    taken = platform.fetchval("SELECT taken FROM redemption.rewards WHERE sku = $1", sku)
    assert taken == confirmed
