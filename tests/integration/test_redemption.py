"""Redemption over real HTTP between the services: never oversold, never a point without its order."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from services.common.kafka import REDEMPTION_ORDERS
from tests.integration.conftest import Platform, PostgresServer, new_platform, token, wait_until
from tests.integration.stream import Published, read_records

ADMIN = {"Authorization": f"Bearer {token(role='admin')}"}


@pytest.fixture(scope="module")
def env(
    postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Platform, str, str]]:
    with new_platform(postgres, tmp_path_factory.mktemp("redemption")) as platform:
        points = platform.start_points_api()
        yield platform, points, platform.start_api("redemption", LOYALTY_RECONCILE_AFTER_SECONDS="2")


def as_member(member: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(member)}"}


def reward(api: str, **fields: Any) -> dict[str, Any]:
    body = {"sku": f"sku-{uuid.uuid4().hex[:8]}", "name": "Cinema voucher", "kind": "voucher",
            "points_price": 100, "stock": 10, **fields}  # fmt: skip
    response = httpx.post(f"{api}/v1/admin/rewards", json=body, headers=ADMIN, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def fund_all(points: str, members: list[str], each: int) -> None:
    async with httpx.AsyncClient(base_url=points, headers=ADMIN, timeout=60) as client:
        for start in range(0, len(members), 100):
            bodies = [
                {"adjustment_id": f"fund-{m}-{each}", "member_id": m, "delta": each, "reason": "test"}
                for m in members[start : start + 100]
            ]
            responses = await asyncio.gather(*(client.post("/v1/admin/adjustments", json=b) for b in bodies))
            assert all(r.status_code == 201 for r in responses)


async def order_all(api: str, orders: list[tuple[str, str, str]], quantity: int = 1) -> list[httpx.Response]:
    """(member, sku, idempotency key) each, all at once."""
    limits = httpx.Limits(max_connections=len(orders))
    async with httpx.AsyncClient(base_url=api, timeout=60, limits=limits) as client:
        return list(await asyncio.gather(*(
            client.post("/v1/redemptions", json={"member_id": m, "sku": sku, "quantity": quantity},
                        headers={**as_member(m), "Idempotency-Key": key})
            for m, sku, key in orders
        )))  # fmt: skip


def available(points: str, member: str) -> int:
    response = httpx.get(f"{points}/v1/members/{member}/balance", headers=ADMIN, timeout=10)
    return int(response.json()["available"])


def test_a_thousand_concurrent_orders_for_a_hundred_units_sell_exactly_a_hundred(
    env: tuple[Platform, str, str],
) -> None:
    _, points, api = env
    sku = reward(api, stock=100, points_price=250, kind="event_ticket")["sku"]
    members = [f"fan{i:04d}" for i in range(1000)]
    asyncio.run(fund_all(points, members, 1000))

    responses = asyncio.run(order_all(api, [(m, sku, f"k-{m}") for m in members]))

    assert all(r.status_code < 500 for r in responses), [r.text for r in responses if r.status_code >= 500][
        :5
    ]
    confirmed = [r.json() for r in responses if r.status_code == 201]
    assert len(confirmed) == 100
    assert {r.json()["error"] for r in responses if r.status_code != 201} == {"out_of_stock"}
    codes = [o["fulfilment"]["code"] for o in confirmed]
    assert len(set(codes)) == 100 and all(c.startswith("TKT-") for c in codes)
    spent = sum(1000 - available(points, m) for m in members)
    assert spent == 100 * 250
    listed = httpx.get(f"{api}/v1/rewards", headers=as_member("fan0000"), timeout=10).json()["rewards"]
    assert [r["remaining"] for r in listed if r["sku"] == sku] == [0]


def test_the_same_idempotency_key_twenty_times_at_once_is_one_order_and_one_debit(
    env: tuple[Platform, str, str],
) -> None:
    _, points, api = env
    sku = reward(api, stock=5)["sku"]
    asyncio.run(fund_all(points, ["ida"], 1000))
    responses = asyncio.run(order_all(api, [("ida", sku, "same-key")] * 20))
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["order_id"] for r in responses}) == 1
    assert available(points, "ida") == 900
    other = httpx.post(f"{api}/v1/redemptions", json={"member_id": "ida", "sku": sku, "quantity": 2},
                       headers={**as_member("ida"), "Idempotency-Key": "same-key"}, timeout=10)  # fmt: skip
    assert (other.status_code, other.json()["error"]) == (409, "idempotency_conflict")


def test_a_member_with_points_for_three_racing_ten_orders_gets_exactly_three(
    env: tuple[Platform, str, str],
) -> None:
    _, points, api = env
    sku = reward(api, stock=50, points_price=100)["sku"]
    asyncio.run(fund_all(points, ["tess"], 300))
    responses = asyncio.run(order_all(api, [("tess", sku, f"t-{i}") for i in range(10)]))
    assert sorted(r.status_code for r in responses) == [201] * 3 + [409] * 7
    assert {r.json()["error"] for r in responses if r.status_code == 409} == {"insufficient_points"}
    assert available(points, "tess") == 0


def test_per_member_limit_holds_under_concurrency(env: tuple[Platform, str, str]) -> None:
    _, points, api = env
    sku = reward(api, stock=50, per_member_limit=2)["sku"]
    asyncio.run(fund_all(points, ["lim"], 5000))
    responses = asyncio.run(order_all(api, [("lim", sku, f"l-{i}") for i in range(8)]))
    assert sorted(r.status_code for r in responses) == [201] * 2 + [409] * 6
    assert {r.json()["error"] for r in responses if r.status_code == 409} == {"limit_reached"}
    assert available(points, "lim") == 4800


def test_a_burst_against_both_stock_and_per_member_limits_passes_neither(
    env: tuple[Platform, str, str],
) -> None:
    # Orders for one reward arriving together are taken in batches: each order must still
    # be judged against the units and the member's count left by the orders before it.
    _, points, api = env
    sku = reward(api, stock=40, per_member_limit=2, points_price=10)["sku"]
    members = [f"burst-{i}" for i in range(30)]
    asyncio.run(fund_all(points, members, 100))
    responses = asyncio.run(order_all(api, [(m, sku, f"b-{m}-{k}") for k in range(3) for m in members]))
    confirmed = [r.json()["member_id"] for r in responses if r.status_code == 201]
    assert len(confirmed) == 40
    assert max(confirmed.count(m) for m in members) == 2
    refusals = {r.json()["error"] for r in responses if r.status_code != 201}
    assert refusals <= {"limit_reached", "out_of_stock"} and "out_of_stock" in refusals
    assert sum(100 - available(points, m) for m in members) == 40 * 10
    catalog = httpx.get(f"{api}/v1/rewards", headers=as_member("burst-0"), timeout=10).json()["rewards"]
    assert [r["remaining"] for r in catalog if r["sku"] == sku] == [0]


def test_window_tier_unknown_sku_and_missing_key_are_refused(env: tuple[Platform, str, str]) -> None:
    _, points, api = env
    asyncio.run(fund_all(points, ["win"], 1000))

    def order(sku: str, key: str | None = "k") -> httpx.Response:
        headers = as_member("win") | ({"Idempotency-Key": key} if key else {})
        return httpx.post(f"{api}/v1/redemptions", json={"member_id": "win", "sku": sku}, headers=headers)

    later = reward(api, starts_at="2099-01-01T00:00:00+08:00")["sku"]
    assert (order(later).status_code, order(later).json()["error"]) == (409, "not_available")
    gold = reward(api, min_tier="gold")["sku"]
    refused = order(gold, "k2")
    assert (refused.status_code, refused.json()["error"]) == (403, "tier_not_eligible")
    assert (order("no-such-sku", "k3").status_code, order("no-such-sku", "k3").json()["error"]) == (
        404, "unknown_sku",
    )  # fmt: skip
    missing = order(gold, None)
    assert (missing.status_code, missing.json()["error"]) == (422, "invalid_request")
    assert available(points, "win") == 1000


def test_members_order_only_for_themselves_and_only_admins_manage_rewards(
    env: tuple[Platform, str, str],
) -> None:
    _, _, api = env
    sku = reward(api)["sku"]
    other = httpx.post(f"{api}/v1/redemptions", json={"member_id": "victim", "sku": sku},
                       headers={**as_member("mallory"), "Idempotency-Key": "x"})  # fmt: skip
    assert (other.status_code, other.json()["error"]) == (403, "forbidden")
    create = httpx.post(f"{api}/v1/admin/rewards", json={"sku": "x", "name": "x", "kind": "voucher",
                        "points_price": 1, "stock": 1}, headers=as_member("mallory"))  # fmt: skip
    assert create.status_code == 403
    assert httpx.get(f"{api}/v1/rewards").status_code == 401


def test_cancellation_gives_points_and_stock_back(env: tuple[Platform, str, str]) -> None:
    _, points, api = env
    sku = reward(api, stock=1, points_price=300)["sku"]
    asyncio.run(fund_all(points, ["cora"], 500))
    order = httpx.post(f"{api}/v1/redemptions", json={"member_id": "cora", "sku": sku},
                       headers={**as_member("cora"), "Idempotency-Key": "c1"}).json()  # fmt: skip
    assert order["status"] == "confirmed" and available(points, "cora") == 200
    cancel = httpx.post(f"{api}/v1/redemptions/{order['order_id']}/cancel", headers=as_member("cora"))
    assert cancel.json() == {"order_id": order["order_id"], "status": "cancelled"}
    assert available(points, "cora") == 500
    again = httpx.post(f"{api}/v1/redemptions/{order['order_id']}/cancel", headers=as_member("cora"))
    assert again.json()["status"] == "cancelled" and available(points, "cora") == 500
    history = httpx.get(f"{api}/v1/members/cora/redemptions", headers=as_member("cora")).json()["orders"]
    assert [(o["order_id"], o["status"]) for o in history] == [(order["order_id"], "cancelled")]
    listed = httpx.get(f"{api}/v1/rewards", headers=as_member("cora")).json()["rewards"]
    assert [r["remaining"] for r in listed if r["sku"] == sku] == [1]


def test_every_order_outcome_is_published_to_the_orders_topic(env: tuple[Platform, str, str]) -> None:
    platform, points, api = env
    sku = reward(api, stock=1, points_price=100)["sku"]
    asyncio.run(fund_all(points, ["olga", "pavel"], 500))
    placed = {}
    for member in ("olga", "pavel"):
        response = httpx.post(f"{api}/v1/redemptions", json={"member_id": member, "sku": sku},
                              headers={**as_member(member), "Idempotency-Key": "e1"})  # fmt: skip
        placed[member] = response
    assert placed["olga"].status_code == 201 and placed["pavel"].status_code == 409
    order_id = placed["olga"].json()["order_id"]
    httpx.post(f"{api}/v1/redemptions/{order_id}/cancel", headers=as_member("olga"))

    def events() -> list[Published]:
        records = read_records(platform.bootstrap, REDEMPTION_ORDERS, expect=10**9, timeout=2)
        return [r for r in records if r.value["sku"] == sku]

    wait_until(lambda: len(events()) >= 3, timeout=30, what="three order events on the topic")
    published = sorted(events(), key=lambda e: (e.partition, e.offset))
    by_member: dict[str, list[tuple[bytes | None, str, str | None]]] = {}
    for e in published:  # one member's events share a partition, so they keep their order
        by_member.setdefault(e.value["member_id"], []).append((e.key, e.value["status"], e.value["failure"]))
    assert by_member == {
        "olga": [(b"olga", "confirmed", None), (b"olga", "cancelled", None)],
        "pavel": [(b"pavel", "failed", "out_of_stock")],
    }
    confirmed = next(e.value for e in published if e.value["status"] == "confirmed")
    assert confirmed["order_id"] == order_id and confirmed["points_spent"] == 100
    assert confirmed["fulfilment"] == placed["olga"].json()["fulfilment"]


@pytest.mark.parametrize(
    "body",
    [
        {"member_id": "m", "sku": "s", "quantity": 0},
        {"member_id": "m m", "sku": "s"},
        {"member_id": "m", "sku": "s", "quantity": "lots"},
        {"sku": "s"},
        "not json",
    ],
)
def test_bad_order_bodies_are_422(env: tuple[Platform, str, str], body: Any) -> None:
    headers = {**ADMIN, "Idempotency-Key": "b", "Content-Type": "application/json"}
    response = httpx.post(f"{env[2]}/v1/redemptions", content=json.dumps(body), headers=headers)
    assert response.status_code == 422 and response.json()["error"] == "invalid_request"


@pytest.mark.parametrize("path", ["/v1/redemptions/%00", "/v1/redemptions/%ED%A0%80"])
def test_order_ids_no_client_could_have_made_are_422_not_500(
    env: tuple[Platform, str, str], path: str
) -> None:
    response = httpx.get(f"{env[2]}{path}", headers=ADMIN)
    assert (response.status_code, response.json()["error"]) == (422, "invalid_request")
