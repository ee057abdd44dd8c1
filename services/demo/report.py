"""The `loyalty up` demo: one simulated billing month through the broker, then what it did."""

from __future__ import annotations

import asyncio
import importlib
import json
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from services.common.auth import mint_token
from services.common.kafka import BILLING_EVENTS
from services.common.settings import LoyaltySettings
from services.demo.billing_sim import produce, simulate

DEMO_MEMBERS = 1000
DEMO_EVENTS = 2500


def play_demo(
    settings: LoyaltySettings,
    dsn: str,
    bootstrap: str,
    urls: dict[str, str],
    children_alive: Callable[[], None],
) -> None:
    points_url = urls["points"]
    seed = int(time.time()) % 1_000_000  # each run is another month's billing run, never a replay
    say(f"Demo: one billing month for {DEMO_MEMBERS:,} members (simulator seed {seed})")
    started = datetime.now(UTC) - timedelta(seconds=1)
    records = simulate(DEMO_MEMBERS, DEMO_EVENTS, seed=seed, duplicates=0.02, malformed=0.01)
    summary = asyncio.run(produce(bootstrap, records, BILLING_EVENTS))
    say(
        f"  produced     {summary.total:,} records to {BILLING_EVENTS} "
        f"({summary.events:,} events, {summary.duplicates:,} exact re-sends, "
        f"{sum(summary.malformed.values()):,} malformed)"
    )
    expected_rows = summary.events + sum(summary.malformed.values())
    deadline = time.monotonic() + 120
    while True:
        children_alive()
        done = asyncio.run(_count_handled(dsn, started))
        if done >= expected_rows or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    top = asyncio.run(_print_report(settings, dsn, points_url, started, summary.total))
    if "redemption" in urls:
        say("")
        play_redemption_demo(settings, urls["redemption"], points_url, top, seed)
    if "lottery" in urls:
        lottery_demo = importlib.import_module("services.lottery.demo")
        say("")
        lottery_demo.play_lottery_demo(urls["lottery"], points_url, settings.jwt_secret, top, say)


async def _count_handled(dsn: str, since: datetime) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        value = await conn.fetchval(
            """SELECT (SELECT count(*) FROM points.billing_events WHERE applied_at >= $1)
                    + (SELECT count(*) FROM points.dead_letters WHERE recorded_at >= $1)""",
            since,
        )
        return int(value)
    finally:
        await conn.close()


async def _print_report(
    settings: LoyaltySettings, dsn: str, points_url: str, since: datetime, produced: int
) -> list[str]:
    """Print what the billing month did; return the members with the most points."""
    conn = await asyncpg.connect(dsn)
    try:
        applied = await conn.fetchrow(
            """SELECT count(*) AS n,
                      coalesce(sum(points) FILTER (WHERE points > 0), 0) AS earned,
                      coalesce(-sum(points) FILTER (WHERE points < 0), 0) AS clawed
               FROM points.billing_events WHERE applied_at >= $1""",
            since,
        )
        rejected = await conn.fetch(
            """SELECT reason, count(*) AS n FROM points.dead_letters WHERE recorded_at >= $1
               GROUP BY reason ORDER BY count(*) DESC, reason""",
            since,
        )
        totals = await conn.fetchrow(
            """SELECT coalesce(sum(available), 0) AS available, coalesce(sum(held), 0) AS held,
                      coalesce(sum(debt), 0) AS debt, count(*) FILTER (WHERE debt > 0) AS in_debt,
                      count(*) AS members
               FROM points.members"""
        )
        top = await conn.fetch(
            "SELECT member_id FROM points.members ORDER BY available DESC, member_id LIMIT 5"
        )
    finally:
        await conn.close()
    assert applied is not None and totals is not None
    n_rejected = sum(r["n"] for r in rejected)
    say(f"  applied      {applied['n']:,} events exactly once")
    say(f"  duplicates   {produced - applied['n'] - n_rejected:,} re-sent events ignored")
    reasons = ", ".join(f"{r['reason']} {r['n']}" for r in rejected) or "none"
    say(f"  rejected     {n_rejected:,} to the DLQ ({reasons})")
    say(f"  points       {applied['earned']:,} earned, {applied['clawed']:,} clawed back by refunds")
    say("")
    admin = mint_token(settings.jwt_secret, "demo", "admin", 300)
    say("  Top balances (from the points API):")
    for row in top:
        balance = _get_json(f"{points_url}/v1/members/{row['member_id']}/balance", admin)
        expiring = ", ".join(
            f"{e['points']:,} at the end of {_last_valid_day(e['expires_at'])}" for e in balance["expiring"]
        )
        say(
            f"    {balance['member_id']}  {balance['tier']:<8} {balance['available']:>8,} available"
            f"   expiring: {expiring or '-'}"
        )
    say("")
    say(
        f"  Points liability: {totals['available']:,} available + {totals['held']:,} held "
        f"= {totals['available'] + totals['held']:,} points owed to {totals['members']:,} members; "
        f"{totals['in_debt']:,} members owe {totals['debt']:,} points of debt"
    )
    member = top[0]["member_id"] if top else "m0000001"
    say("")
    say("  Try it:")
    say(f"    TOKEN=$(.venv/bin/loyalty token --member {member})")
    say(f'    curl -H "Authorization: Bearer $TOKEN" {points_url}/v1/members/{member}/entries?limit=5')
    return [row["member_id"] for row in top]


def play_redemption_demo(
    settings: LoyaltySettings, redemption_url: str, points_url: str, members: list[str], run: int
) -> None:
    """Put three rewards on the catalog and let the top members spend their points."""
    admin = {"Authorization": f"Bearer {mint_token(settings.jwt_secret, 'demo', 'admin', 300)}"}
    catalog = [
        {"sku": f"bill-50-{run}", "name": "50 yuan off the next phone bill", "kind": "bill_credit",
         "points_price": 500, "stock": 1000},
        {"sku": f"cinema-{run}", "name": "Cinema voucher, any 2D screening", "kind": "voucher",
         "points_price": 300, "stock": 500, "per_member_limit": 2},
        {"sku": f"premiere-{run}", "name": "VIP club: film premiere, one seat", "kind": "event_ticket",
         "points_price": 800, "stock": 2},
    ]  # fmt: skip
    with httpx.Client(timeout=30) as http:
        for reward in catalog:
            http.post(f"{redemption_url}/v1/admin/rewards", json=reward, headers=admin).raise_for_status()
        say(f"Redemption: {len(catalog)} rewards on the catalog; the top members spend their points")
        premiere, cinema, bill = catalog[2]["sku"], catalog[1]["sku"], catalog[0]["sku"]
        plan = [(m, premiere, f"demo-{run}-{m}-premiere") for m in members[:3]]
        plan += [(members[3], cinema, f"demo-{run}-cinema")] * 2  # a retry: the same Idempotency-Key
        plan += [(members[4], bill, f"demo-{run}-bill")]
        orders = []
        for member, sku, key in plan:
            token = mint_token(settings.jwt_secret, member, "member", 300)
            response = http.post(
                f"{redemption_url}/v1/redemptions",
                json={"member_id": member, "sku": sku},
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
            )
            body = response.json()
            if response.status_code == 201:
                code = body["fulfilment"].get("code") or body["fulfilment"].get("status")
                say(f"    {member}  {sku:<20} confirmed  -{body['points_spent']:,} points  {code}"
                    f"   (order {body['order_id'][:8]})")  # fmt: skip
                orders.append((member, body["order_id"], token))
            else:
                say(f"    {member}  {sku:<20} refused    {body['error']}: {body['detail']}")
        member, order_id, token = orders[-1]
        cancelled = http.post(
            f"{redemption_url}/v1/redemptions/{order_id}/cancel", headers={"Authorization": f"Bearer {token}"}
        ).json()
        balance = http.get(f"{points_url}/v1/members/{member}/balance", headers=admin).json()
        say(f"    {member}  cancels order {order_id[:8]}: {cancelled['status']}, points back "
            f"(available now {balance['available']:,})")  # fmt: skip
        say(
            "  The retry with the same Idempotency-Key gave the same order; the third premiere "
            "seat did not exist, so nobody paid for it."
        )


def _last_valid_day(expires_at: str) -> str:
    return (datetime.fromisoformat(expires_at) - timedelta(seconds=1)).date().isoformat()


def _get_json(url: str, token: str) -> dict:  # type: ignore[type-arg]
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def say(text: str) -> None:
    print(text, flush=True)
