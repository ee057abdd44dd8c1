"""The redemption service killed mid-order: each order ends confirmed with its points, or with none."""

from __future__ import annotations

import asyncio
import time

import asyncpg
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
    # Enough orders, at most 100 in flight, that the storm lasts a while: concurrent orders go
    # through the saga in batches, and a short storm could be over before the kill.
    sku = reward(api, stock=1000, points_price=10)["sku"]
    members = [f"k{i:04d}" for i in range(1000)]
    asyncio.run(fund_all(points, members, 100))

    async def storm_and_kill() -> float:
        """Orders from every member at once; SIGKILL as soon as one is between hold and capture.

        One event loop for the clients and the watcher: an httpx client in a thread stalled
        while the main thread ran event loops of its own (seen with Python 3.11).
        """
        limits = httpx.Limits(max_connections=100)
        watcher = await asyncpg.connect(platform.dsn)
        async with httpx.AsyncClient(base_url=api, timeout=30, limits=limits) as client:
            orders = asyncio.gather(
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
            deadline = time.monotonic() + 30
            query = "SELECT count(*) FROM redemption.orders WHERE stage = 'stock_taken'"
            while not await watcher.fetchval(query):
                in_time = time.monotonic() < deadline and not orders.done()
                assert in_time, "no order was ever seen between hold and capture"
                await asyncio.sleep(0.01)
            platform.services[-1].kill()
            killed_at = time.monotonic()
            await orders
        await watcher.close()
        return killed_at

    killed_at = asyncio.run(storm_and_kill())
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
