"""Holds, captures, voids, credits and adjustments over HTTP: no point minted, lost or spent twice."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from services.common.kafka import BILLING_EVENTS
from tests.integration.conftest import Platform, PostgresServer, new_platform, token, wait_until
from tests.integration.stream import encoded, event, produce

SERVICE = {"Authorization": f"Bearer {token(role='service')}"}
ADMIN = {"Authorization": f"Bearer {token(role='admin')}"}


@pytest.fixture(scope="module")
def env(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, str]]:
    with new_platform(postgres, tmp_path_factory.mktemp("spending")) as platform:
        yield platform, platform.start_points_api()


def fund(platform: Platform, api: str, member: str, points: int) -> None:
    body = {"adjustment_id": f"fund-{member}", "member_id": member, "delta": points, "reason": "test funds"}
    response = post(api, "/v1/admin/adjustments", body, ADMIN)
    assert response.status_code == 201, response.text


def post(api: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{api}{path}", json=body, headers=SERVICE if headers is None else headers, timeout=30)


def balance(api: str, member: str) -> dict[str, Any]:
    return httpx.get(f"{api}/v1/members/{member}/balance", headers=ADMIN, timeout=10).json()  # type: ignore[no-any-return]


def entries(api: str, member: str) -> list[dict[str, Any]]:
    url = f"{api}/v1/members/{member}/entries?limit=500"
    return httpx.get(url, headers=ADMIN, timeout=10).json()["entries"]  # type: ignore[no-any-return]


def test_holds_take_the_earliest_lots_and_partial_capture_gives_the_rest_back(
    env: tuple[Platform, str],
) -> None:
    platform, api = env
    produce(platform.bootstrap, BILLING_EVENTS, [
        encoded(event("l-1", "lena", "bill_settled", 12000, occurred_at="2025-06-01T09:00:00+08:00")),
        encoded(event("l-2", "lena", "bill_settled", 80000, occurred_at="2026-02-01T09:00:00+08:00")),
    ])  # fmt: skip
    worker = platform.service("worker", "points").start()
    wait_until(lambda: balance(api, "lena")["available"] == 920, timeout=60, what="lena's points")
    worker.stop()

    hold = post(
        api, "/v1/holds", {"hold_id": "h-lena", "member_id": "lena", "points": 200, "reason": "voucher"}
    )
    assert hold.status_code == 201, hold.text
    assert hold.json()["status"] == "pending" and hold.json()["points"] == 200
    after_hold = balance(api, "lena")
    assert (after_hold["available"], after_hold["held"]) == (720, 200)
    assert after_hold["expiring"] == [{"points": 720, "expires_at": "2028-01-01T00:00:00+08:00"}]

    captured = post(api, "/v1/holds/h-lena/capture", {"points": 150})
    assert captured.status_code == 200, captured.text
    assert captured.json() == {"hold_id": "h-lena", "status": "captured", "points": 150}
    after = balance(api, "lena")
    # 150 spent: all 120 of 2026's lot and 30 of 2027's; the other 50 go back to 2027's.
    assert (after["available"], after["held"]) == (770, 0)
    assert after["expiring"] == [{"points": 770, "expires_at": "2028-01-01T00:00:00+08:00"}]
    newest = entries(api, "lena")[:3]
    assert [(e["kind"], e["delta"], e["balance_after"], e["held_after"]) for e in newest] == [
        ("void", 50, 770, 0), ("capture", 0, 720, 0), ("hold", -200, 720, 200),
    ]  # fmt: skip


def test_void_gives_back_exactly_the_lots_the_hold_took(env: tuple[Platform, str]) -> None:
    _, api = env
    fund(env[0], api, "vera", 500)
    before = balance(api, "vera")
    assert (
        post(api, "/v1/holds", {"hold_id": "h-vera", "member_id": "vera", "points": 300}).status_code == 201
    )
    voided = post(api, "/v1/holds/h-vera/void")
    assert voided.json() == {"hold_id": "h-vera", "status": "voided"}
    assert balance(api, "vera") == before
    assert post(api, "/v1/holds/h-vera/void").json()["status"] == "voided"  # again: same answer
    refused = post(api, "/v1/holds/h-vera/capture")
    assert (refused.status_code, refused.json()["error"]) == (409, "hold_not_pending")


def test_capture_is_idempotent_and_a_captured_hold_cannot_be_voided(env: tuple[Platform, str]) -> None:
    _, api = env
    fund(env[0], api, "carl", 100)
    post(api, "/v1/holds", {"hold_id": "h-carl", "member_id": "carl", "points": 100})
    first = post(api, "/v1/holds/h-carl/capture")
    assert (
        post(api, "/v1/holds/h-carl/capture").json()
        == first.json()
        == {"hold_id": "h-carl", "status": "captured", "points": 100}
    )
    assert post(api, "/v1/holds/h-carl/void").json()["error"] == "hold_not_pending"
    assert balance(api, "carl")["available"] == 0
    assert [e["kind"] for e in entries(api, "carl")].count("capture") == 1


def test_same_hold_id_twenty_times_at_once_makes_one_hold(env: tuple[Platform, str]) -> None:
    _, api = env
    fund(env[0], api, "ivy", 1000)
    body = {"hold_id": "h-ivy", "member_id": "ivy", "points": 100, "reason": "ticket"}
    responses = asyncio.run(post_concurrently(api, "/v1/holds", [body] * 20))
    assert {r.status_code for r in responses} == {201}
    assert len({r.text for r in responses}) == 1
    assert (balance(api, "ivy")["available"], balance(api, "ivy")["held"]) == (900, 100)
    other = post(api, "/v1/holds", {**body, "points": 99})
    assert (other.status_code, other.json()["error"]) == (409, "idempotency_conflict")


def test_ten_racing_holds_on_points_for_three_give_exactly_three(env: tuple[Platform, str]) -> None:
    _, api = env
    fund(env[0], api, "rita", 300)
    bodies = [{"hold_id": f"h-rita-{i}", "member_id": "rita", "points": 100} for i in range(10)]
    responses = asyncio.run(post_concurrently(api, "/v1/holds", bodies))
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] * 3 + [409] * 7
    assert {r.json()["error"] for r in responses if r.status_code == 409} == {"insufficient_points"}
    after = balance(api, "rita")
    assert (after["available"], after["held"]) == (0, 300)


def test_a_pending_hold_past_its_ttl_is_voided_and_cannot_be_captured(env: tuple[Platform, str]) -> None:
    _, api = env
    fund(env[0], api, "otto", 50)
    post(api, "/v1/holds", {"hold_id": "h-otto", "member_id": "otto", "points": 50, "ttl_seconds": 1})
    assert balance(api, "otto")["held"] == 50
    wait_until(lambda: balance(api, "otto")["held"] == 0, timeout=10, what="the expired hold to be voided")
    assert balance(api, "otto")["available"] == 50
    refused = post(api, "/v1/holds/h-otto/capture")
    assert (refused.status_code, refused.json()["error"]) == (409, "hold_not_pending")
    assert httpx.get(f"{api}/v1/holds/h-otto", headers=SERVICE).json()["status"] == "voided"


def test_capture_right_after_the_ttl_is_refused_even_before_the_sweep(env: tuple[Platform, str]) -> None:
    _, api = env
    fund(env[0], api, "uma", 10)
    post(api, "/v1/holds", {"hold_id": "h-uma", "member_id": "uma", "points": 10, "ttl_seconds": 1})
    time.sleep(1.05)
    refused = post(api, "/v1/holds/h-uma/capture")
    assert (refused.status_code, refused.json()["error"]) == (409, "hold_not_pending")
    assert (balance(api, "uma")["available"], balance(api, "uma")["held"]) == (10, 0)


def holds_open(api: str) -> float:
    for line in httpx.get(f"{api}/metrics", timeout=10).text.splitlines():
        if line.startswith("loyalty_holds_open "):
            return float(line.split()[1])
    raise AssertionError("loyalty_holds_open is not on /metrics")


def test_ops_see_how_many_holds_are_open(env: tuple[Platform, str]) -> None:
    platform, api = env
    fund(platform, api, "xena", 30)
    # Settle first: holds of earlier tests with a short ttl may still be on their way out.
    pending = "SELECT count(*) FROM points.holds WHERE status = 'pending'"
    wait_until(lambda: holds_open(api) == platform.fetchval(pending), timeout=15, what="a settled gauge")
    before = holds_open(api)
    for n in (1, 2):
        body = {"hold_id": f"h-xena-{n}", "member_id": "xena", "points": 10, "ttl_seconds": 600}
        assert post(api, "/v1/holds", body).status_code == 201
    wait_until(lambda: holds_open(api) == before + 2, timeout=15, what="two more open holds on /metrics")
    post(api, "/v1/holds/h-xena-1/void")
    wait_until(lambda: holds_open(api) == before + 1, timeout=15, what="one hold fewer once voided")


def test_many_holds_settle_in_one_request_each_as_its_own_call_would(env: tuple[Platform, str]) -> None:
    _, api = env
    fund(env[0], api, "yuri", 100)
    for hold_id, points, ttl in (("h-y1", 30, 600), ("h-y2", 20, 600), ("h-y3", 10, 1), ("h-y4", 5, 600)):
        body = {"hold_id": hold_id, "member_id": "yuri", "points": points, "ttl_seconds": ttl}
        assert post(api, "/v1/holds", body).status_code == 201
    assert post(api, "/v1/holds/h-y4/capture").status_code == 200
    time.sleep(1.05)  # h-y3 is past its ttl
    body = {"capture": ["h-y1", "h-y3", "h-y4", "h-nobody"], "void": ["h-y2"]}
    expected = [
        {"hold_id": "h-y1", "status": "captured", "points": 30},
        {"hold_id": "h-y3", "error": "hold_not_pending"},
        {"hold_id": "h-y4", "status": "captured", "points": 5},
        {"hold_id": "h-nobody", "error": "unknown_hold"},
        {"hold_id": "h-y2", "status": "voided"},
    ]

    def answers(response: httpx.Response) -> list[dict[str, Any]]:
        assert response.status_code == 200, response.text
        return [
            {k: v for k, v in h.items() if v is not None and k != "detail"} for h in response.json()["holds"]
        ]

    assert answers(post(api, "/v1/holds/settle", body)) == expected
    assert (balance(api, "yuri")["available"], balance(api, "yuri")["held"]) == (65, 0)
    assert answers(post(api, "/v1/holds/settle", body)) == expected  # again: the same answers
    assert (balance(api, "yuri")["available"], balance(api, "yuri")["held"]) == (65, 0)
    kinds = [e["kind"] for e in entries(api, "yuri")]
    assert kinds.count("capture") == 2 and kinds.count("void") == 2


def test_many_holds_are_placed_in_one_request_each_as_its_own_call_would(env: tuple[Platform, str]) -> None:
    _, api = env
    fund(env[0], api, "zora", 100)
    assert post(api, "/v1/holds", {"hold_id": "h-z0", "member_id": "zora", "points": 10}).status_code == 201
    holds = [
        {"hold_id": "h-z1", "member_id": "zora", "points": 50, "reason": "a"},
        {"hold_id": "h-z0", "member_id": "zora", "points": 10},  # the same request again
        {"hold_id": "h-z2", "member_id": "zora", "points": 45},  # only 40 left by now
        {"hold_id": "h-z3", "member_id": "zora", "points": 0},  # invalid on its own
        {"hold_id": "h-z0", "member_id": "zora", "points": 11},  # h-z0 for something else
        {"hold_id": "h-z4", "member_id": "zora", "points": 40, "ttl_seconds": 60},
        {"hold_id": "h-z5", "member_id": "nobody-z", "points": 1},
    ]
    expected = [
        {"hold_id": "h-z1", "status": "pending", "points": 50},
        {"hold_id": "h-z0", "status": "pending", "points": 10},
        {"hold_id": "h-z2", "error": "insufficient_points"},
        {"hold_id": "h-z3", "error": "invalid_request"},
        {"hold_id": "h-z0", "error": "idempotency_conflict"},
        {"hold_id": "h-z4", "status": "pending", "points": 40},
        {"hold_id": "h-z5", "error": "insufficient_points"},
    ]

    def answers(response: httpx.Response) -> list[dict[str, Any]]:
        assert response.status_code == 200, response.text
        return [{k: v for k, v in h.items() if k in ("hold_id", "status", "points", "error")}
                for h in response.json()["holds"]]  # fmt: skip

    assert answers(post(api, "/v1/holds/batch", {"holds": holds})) == expected
    assert (balance(api, "zora")["available"], balance(api, "zora")["held"]) == (0, 100)
    again = answers(post(api, "/v1/holds/batch", {"holds": holds}))
    assert again == expected  # the same answers; h-z2, never placed, is refused again
    assert (balance(api, "zora")["available"], balance(api, "zora")["held"]) == (0, 100)
    assert [e["kind"] for e in entries(api, "zora")].count("hold") == 3
    captured = post(api, "/v1/holds/h-z4/capture").json()
    assert captured == {"hold_id": "h-z4", "status": "captured", "points": 40}


@pytest.mark.parametrize("body", [{}, {"holds": []}, {"holds": "h-1"}, {"holds": [{"hold_id": "x"}] * 1001}])
def test_hold_batches_that_make_no_sense_are_422(env: tuple[Platform, str], body: Any) -> None:
    _, api = env
    response = post(api, "/v1/holds/batch", body)
    assert response.status_code == 422 and response.json()["error"] == "invalid_request", response.text
    member = {"Authorization": f"Bearer {token('zora')}"}
    hold = {"hold_id": "h-m", "member_id": "zora", "points": 1}
    assert post(api, "/v1/holds/batch", {"holds": [hold]}, member).status_code == 403


@pytest.mark.parametrize(
    "body",
    [{}, {"capture": [], "void": []}, {"capture": ["h-a"], "void": ["h-a"]}, {"capture": ["x"] * 1001}],
)
def test_settle_requests_that_make_no_sense_are_422(env: tuple[Platform, str], body: Any) -> None:
    _, api = env
    response = post(api, "/v1/holds/settle", body)
    assert response.status_code == 422 and response.json()["error"] == "invalid_request", response.text
    member = {"Authorization": f"Bearer {token('yuri')}"}
    assert post(api, "/v1/holds/settle", {"void": ["h-a"]}, member).status_code == 403


def test_credits_are_idempotent_and_conflicts_are_refused(env: tuple[Platform, str]) -> None:
    _, api = env
    body = {"credit_id": "c-1", "member_id": "cleo", "points": 70, "reason": "refund order o-1"}
    first = post(api, "/v1/credits", body)
    assert first.status_code == 201
    assert post(api, "/v1/credits", body).json() == first.json()
    assert balance(api, "cleo")["available"] == 70
    conflict = post(api, "/v1/credits", {**body, "points": 71})
    assert (conflict.status_code, conflict.json()["error"]) == (409, "idempotency_conflict")


def test_negative_adjustment_beyond_available_is_refused(env: tuple[Platform, str]) -> None:
    _, api = env
    fund(env[0], api, "adam", 40)
    too_much = post(api, "/v1/admin/adjustments", {"adjustment_id": "a-1", "member_id": "adam", "delta": -41,
                                                    "reason": "x"}, ADMIN)  # fmt: skip
    assert (too_much.status_code, too_much.json()["error"]) == (409, "insufficient_points")
    fine = post(api, "/v1/admin/adjustments", {"adjustment_id": "a-2", "member_id": "adam", "delta": -40,
                                                "reason": "x"}, ADMIN)  # fmt: skip
    assert fine.status_code == 201
    assert balance(api, "adam")["available"] == 0
    assert entries(api, "adam")[0]["kind"] == "adjustment"


def test_only_services_and_admins_move_points(env: tuple[Platform, str]) -> None:
    _, api = env
    member = {"Authorization": f"Bearer {token('mia')}"}
    hold = {"hold_id": "h-mia", "member_id": "mia", "points": 1}
    assert post(api, "/v1/holds", hold, member).status_code == 403
    assert (
        post(api, "/v1/credits", {"credit_id": "c-mia", "member_id": "mia", "points": 1}, member).status_code
        == 403
    )
    adjustment = {"adjustment_id": "a-mia", "member_id": "mia", "delta": 5}
    assert post(api, "/v1/admin/adjustments", adjustment, SERVICE).status_code == 403
    assert post(api, "/v1/holds", hold, {}).status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"hold_id": "h", "member_id": "m", "points": 0},
        {"hold_id": "h", "member_id": "m", "points": -5},
        {"hold_id": "h", "member_id": "m", "points": 10**30},
        {"hold_id": "h x", "member_id": "m", "points": 1},
        {"hold_id": "h\u0000", "member_id": "m", "points": 1},
        {"hold_id": "h", "member_id": "m m", "points": 1},
        {"hold_id": "h", "member_id": "m", "points": 1, "reason": "\ud800"},
        {"hold_id": "h", "member_id": "m", "points": 1, "ttl_seconds": 0},
        {"member_id": "m", "points": 1},
        ["not", "an", "object"],
    ],
)
def test_bad_hold_requests_are_422_with_a_json_error(env: tuple[Platform, str], body: Any) -> None:
    # Sent as JSON text with \\u escapes, as a client could: a lone surrogate cannot be UTF-8 encoded.
    response = httpx.post(
        f"{env[1]}/v1/holds",
        content=json.dumps(body),
        headers={**SERVICE, "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request"


def test_unknown_hold_is_404(env: tuple[Platform, str]) -> None:
    response = post(env[1], "/v1/holds/no-such-hold/capture")
    assert (response.status_code, response.json()["error"]) == (404, "unknown_hold")


async def post_concurrently(api: str, path: str, bodies: list[Any]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(base_url=api, headers=SERVICE, timeout=30, limits=limits) as client:
        return list(await asyncio.gather(*(client.post(path, json=b) for b in bodies)))


@pytest.mark.parametrize("path", ["/v1/holds/%00/capture", "/v1/holds/%FF/void", "/v1/holds/a%20b/capture"])
def test_hold_ids_no_client_could_have_made_are_422_not_500(env: tuple[Platform, str], path: str) -> None:
    response = post(env[1], path)
    assert (response.status_code, response.json()["error"]) == (422, "invalid_request")
