"""The `loyalty up` demo: one simulated billing month through the broker, then what it did."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg

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
    points_url: str,
    children_alive: Callable[[], None],
) -> None:
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
    asyncio.run(_print_report(settings, dsn, points_url, started, summary.total))


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
) -> None:
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


def _last_valid_day(expires_at: str) -> str:
    return (datetime.fromisoformat(expires_at) - timedelta(seconds=1)).date().isoformat()


def _get_json(url: str, token: str) -> dict:  # type: ignore[type-arg]
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def say(text: str) -> None:
    print(text, flush=True)
