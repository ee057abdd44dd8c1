"""Ballots over HTTP: one entry per member, the cost held, winners by the seed's ranking, losers refunded."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.lottery.domain.fairness import rank_entries
from tests.integration.conftest import PostgresServer, new_platform, token, wait_until
from tests.integration.test_lottery_api import ADMIN, Env, fund_all


@pytest.fixture(scope="module")
def env(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with new_platform(postgres, tmp_path_factory.mktemp("ballot")) as platform:
        points = platform.start_points_api()
        lottery = platform.start_api("lottery", LOYALTY_LOTTERY_RECONCILE_INTERVAL_SECONDS="0.3")
        yield Env(platform, points, lottery)


def ballot(campaign_id: str, seats: int, cost_points: int = 10, **extra: Any) -> dict[str, Any]:
    return {"campaign_id": campaign_id, "name": "VIP concert", "kind": "ballot", "cost_points": cost_points,
            "seats": seats, **extra}  # fmt: skip


def enter(env: Env, campaign: str, member: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token(member)}"}
    return httpx.post(f"{env.lottery}/v1/campaigns/{campaign}/entries", json={"member_id": member},
                      headers=headers, timeout=30)  # fmt: skip


def test_5000_entries_for_300_seats_give_exactly_300_winners_and_every_loser_their_points_back(
    env: Env, tmp_path: Path
) -> None:
    env.create(**ballot("concert", seats=300))
    members = [f"fan{i:04d}" for i in range(5000)]
    asyncio.run(fund_all(env, {m: 10 for m in members}))
    responses = asyncio.run(enter_concurrently(env, "concert", members))
    assert {r.status_code for r in responses} == {201}, {r.text for r in responses if r.status_code != 201}
    assert env.balance("fan0042")["held"] == 10

    closed = env.close("concert", {"public_entropy": "block 19000000 hash 0xabc"})
    assert closed.status_code == 200, closed.text
    assert (closed.json()["entries"], closed.json()["winners"]) == (5000, 300)

    def results() -> dict[str, Any]:
        return env.get("/v1/campaigns/concert/results").json()  # type: ignore[no-any-return]

    wait_until(lambda: results()["payments_pending"] == 0, timeout=120, what="every entry's hold settled")
    winners = results()["winners"]
    assert len(winners) == len(set(winners)) == 300

    rows = env.platform.fetch(
        "SELECT member_id, available, held FROM points.members WHERE member_id = ANY($1::text[])", members
    )
    balances = {r["member_id"]: (r["available"], r["held"]) for r in rows}
    assert {m: balances[m] for m in winners} == {m: (0, 0) for m in winners}
    losers = set(members) - set(winners)
    assert {m: balances[m] for m in losers} == {m: (10, 0) for m in losers}

    reveal = env.get("/v1/campaigns/concert/reveal").json()
    seed = bytes.fromhex(reveal["server_seed"])
    assert rank_entries(seed, reveal["public_entropy"], "concert", members)[:300] == winners
    saved = tmp_path / "concert.json"
    saved.write_text(json.dumps(reveal))
    verified = env.platform.cli("verify-campaign", str(saved))
    assert verified.returncode == 0, verified.stdout[-2000:] + verified.stderr
    assert "300 winners for 300 seats and 5000 entries" in verified.stdout

    reveal["entries"][0]["won"], reveal["entries"][-1]["won"] = False, True  # swap a winner and a loser
    saved.write_text(json.dumps(reveal))
    assert env.platform.cli("verify-campaign", str(saved)).returncode == 1


def test_one_entry_per_member_and_a_ballot_is_closed_once(env: Env) -> None:
    env.create(**ballot("gala", seats=2))
    env.fund("ada", 30)
    assert enter(env, "gala", "ada").status_code == 201
    again = enter(env, "gala", "ada")
    assert (again.status_code, again.json()["error"]) == (409, "already_entered")
    poor = enter(env, "gala", "bea")
    assert (poor.status_code, poor.json()["error"]) == (409, "insufficient_points")
    env.fund("bea", 10)
    assert enter(env, "gala", "bea").status_code == 201  # a refused entry does not count
    env.fund("cat", 10)
    assert enter(env, "gala", "cat").status_code == 201

    early = env.get("/v1/campaigns/gala/results").json()
    assert (early["status"], early["entries"], early["winners"]) == ("open", 3, None)
    assert env.get("/v1/campaigns/gala/reveal").json()["error"] == "not_revealed"

    first = env.close("gala", {"public_entropy": "lottery-night"})
    assert first.status_code == 200 and first.json()["winners"] == 2
    assert env.close("gala", {"public_entropy": "lottery-night"}).json() == first.json()
    redraw = env.close("gala", {"public_entropy": "something else"})
    assert (redraw.status_code, redraw.json()["error"]) == (409, "already_closed")
    late = enter(env, "gala", "dee")
    assert (late.status_code, late.json()["error"]) == (409, "campaign_closed")

    wait_until(lambda: env.get("/v1/campaigns/gala/results").json()["payments_pending"] == 0,
               timeout=30, what="the holds settled")  # fmt: skip
    winners = env.get("/v1/campaigns/gala/results").json()["winners"]
    spent = {m: 10 if m in winners else 0 for m in ("ada", "bea", "cat")}
    assert {m: env.balance(m)["available"] for m in spent} == {"ada": 30 - spent["ada"],
                                                               "bea": 10 - spent["bea"],
                                                               "cat": 10 - spent["cat"]}  # fmt: skip
    reveal = env.get("/v1/campaigns/gala/reveal").json()
    assert reveal["public_entropy"] == "lottery-night"
    assert [e["member_id"] for e in reveal["entries"] if e["won"]] == winners


def test_a_free_ballot_with_fewer_entries_than_seats_lets_everyone_in(env: Env) -> None:
    env.create(**ballot("open-day", seats=10, cost_points=0))
    for member in ("eli", "fay", "gil"):
        assert enter(env, "open-day", member).status_code == 201
    closed = env.close("open-day")
    assert (closed.json()["entries"], closed.json()["winners"]) == (3, 3)
    assert sorted(env.get("/v1/campaigns/open-day/results").json()["winners"]) == ["eli", "fay", "gil"]
    assert httpx.post(f"{env.lottery}/v1/campaigns/open-day/entries", json={"member_id": "hal"},
                      headers=ADMIN).json()["error"] == "campaign_closed"  # fmt: skip


def test_a_winner_whose_hold_is_gone_by_the_close_is_charged_afresh(env: Env) -> None:
    env.create(**ballot("late-night", seats=5, cost_points=40))
    for member in ("ida", "jon"):
        env.fund(member, 100)
        assert enter(env, "late-night", member).status_code == 201
    # The holds are voided behind the lottery's back (as an expired hold would be).
    service = {"Authorization": f"Bearer {token(role='service')}"}
    entries = "SELECT hold_id FROM lottery.entries WHERE campaign_id = 'late-night'"
    holds = [r["hold_id"] for r in env.platform.fetch(entries)]
    assert len(holds) == 2
    for hold_id in holds:
        assert httpx.post(f"{env.points}/v1/holds/{hold_id}/void", headers=service).status_code == 200

    assert env.close("late-night").json()["winners"] == 2

    def charged(member: str) -> bool:
        url = f"{env.points}/v1/members/{member}/balance"
        balance = httpx.get(url, headers=ADMIN, timeout=10).json()
        return (balance["available"], balance["held"]) == (60, 0)

    wait_until(lambda: charged("ida") and charged("jon"), timeout=30, what="both winners charged afresh")
    payments = {r["payment"] for r in env.platform.fetch(
        "SELECT payment FROM lottery.entries WHERE campaign_id = 'late-night'")}  # fmt: skip
    assert payments == {"captured"}


async def enter_concurrently(env: Env, campaign: str, members: list[str]) -> list[httpx.Response]:
    gate = asyncio.Semaphore(64)
    async with httpx.AsyncClient(base_url=env.lottery, headers=ADMIN, timeout=60) as client:

        async def one(member: str) -> httpx.Response:
            async with gate:
                return await client.post(f"/v1/campaigns/{campaign}/entries", json={"member_id": member})

        return list(await asyncio.gather(*(one(m) for m in members)))
