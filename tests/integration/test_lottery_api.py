"""The lottery over HTTP, against the real points service: draws paid exactly once, fair and verifiable."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.kafka import LOTTERY_DRAWS
from services.common.settings import DEV_JWT_SECRET
from services.lottery.demo import play_lottery_demo
from tests.integration.conftest import Platform, PostgresServer, new_platform, token, wait_until
from tests.integration.stream import read_topic

ADMIN = {"Authorization": f"Bearer {token(role='admin')}"}
SERVICE = {"Authorization": f"Bearer {token(role='service')}"}


class Env:
    def __init__(self, platform: Platform, points: str, lottery: str) -> None:
        self.platform, self.points, self.lottery = platform, points, lottery

    def fund(self, member: str, points: int) -> None:
        adjustment_id = f"fund-{member}-{uuid.uuid4().hex[:8]}"
        body = {"adjustment_id": adjustment_id, "member_id": member, "delta": points, "reason": "test funds"}
        response = httpx.post(f"{self.points}/v1/admin/adjustments", json=body, headers=ADMIN, timeout=30)
        assert response.status_code == 201, response.text

    def balance(self, member: str) -> dict[str, Any]:
        url = f"{self.points}/v1/members/{member}/balance"
        return httpx.get(url, headers=ADMIN, timeout=10).json()  # type: ignore[no-any-return]

    def entries(self, member: str) -> list[dict[str, Any]]:
        url = f"{self.points}/v1/members/{member}/entries?limit=500"
        return httpx.get(url, headers=ADMIN, timeout=10).json()["entries"]  # type: ignore[no-any-return]

    def create(self, **body: Any) -> dict[str, Any]:
        response = httpx.post(f"{self.lottery}/v1/admin/campaigns", json=body, headers=ADMIN, timeout=30)
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    def draw(self, campaign: str, member: str, key: str | None = None, **extra: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token(member)}", "Idempotency-Key": key or uuid.uuid4().hex}
        body = {"member_id": member, **extra}
        return httpx.post(
            f"{self.lottery}/v1/campaigns/{campaign}/draws", json=body, headers=headers, timeout=30
        )

    def close(self, campaign: str, body: Any = None) -> httpx.Response:
        url = f"{self.lottery}/v1/admin/campaigns/{campaign}/close"
        return httpx.post(url, json=body, headers=ADMIN, timeout=60)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.lottery}{path}", timeout=30)


@pytest.fixture(scope="module")
def env(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with new_platform(postgres, tmp_path_factory.mktemp("lottery")) as platform:
        points = platform.start_points_api()
        lottery = platform.start_api(
            "lottery",
            LOYALTY_LOTTERY_RECONCILE_INTERVAL_SECONDS="0.3",
            LOYALTY_LOTTERY_ABANDON_AFTER_SECONDS="30",
            LOYALTY_LOTTERY_SETTLE_GRACE_SECONDS="1",
        )
        yield Env(platform, points, lottery)


def instant(campaign_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "campaign_id": campaign_id,
        "name": "Spring instant win",
        "kind": "instant",
        "cost_points": 10,
        "prizes": [
            {"prize_id": "phone", "name": "Phone", "stock": 1, "weight_ppm": 100_000},
            {"prize_id": "data", "name": "1 GB data", "stock": 50, "weight_ppm": 300_000},
            {
                "prize_id": "bonus",
                "name": "50 bonus points",
                "stock": 100,
                "weight_ppm": 200_000,
                "points": 50,
            },
        ],
    }
    body.update(overrides)
    return body


def test_a_campaign_publishes_its_seed_commitment_and_creating_it_again_answers_the_same(env: Env) -> None:
    created = env.create(**instant("spring"))
    assert len(created["seed_commitment"]) == 64
    assert created["status"] == "open" and [p["remaining"] for p in created["prizes"]] == [1, 50, 100]
    assert env.create(**instant("spring"))["seed_commitment"] == created["seed_commitment"]
    other = httpx.post(f"{env.lottery}/v1/admin/campaigns", json=instant("spring", cost_points=11),
                       headers=ADMIN, timeout=30)  # fmt: skip
    assert (other.status_code, other.json()["error"]) == (409, "campaign_exists")
    info = env.get("/v1/campaigns/spring").json()
    assert info["seed_commitment"] == created["seed_commitment"] and "server_seed" not in info


def test_a_draw_spends_its_cost_once_and_the_same_key_answers_the_same(env: Env) -> None:
    env.create(**instant("once"))
    env.fund("dora", 100)
    first = env.draw("once", "dora", key="k-1", client_seed="lucky")
    assert first.status_code == 201, first.text
    body = first.json()
    assert (body["nonce"], body["client_seed"], body["points_spent"]) == (1, "lucky", 10)
    assert env.draw("once", "dora", key="k-1", client_seed="lucky").json() == body
    conflict = env.draw("once", "dora", key="k-1", client_seed="other")
    assert (conflict.status_code, conflict.json()["error"]) == (409, "idempotency_conflict")
    assert env.draw("once", "dora", key="k-2").json()["nonce"] == 2
    prizes_of_points = sum(
        50 for r in (body, env.draw("once", "dora", key="k-2").json()) if r["prize_id"] == "bonus"
    )
    balance = env.balance("dora")
    assert (balance["available"], balance["held"]) == (100 - 20 + prizes_of_points, 0)
    assert Counter(e["kind"] for e in env.entries("dora"))["capture"] == 2


def test_a_prize_of_points_is_credited_to_the_winner_once(env: Env) -> None:
    env.create(**instant("bonus-only", cost_points=0, prizes=[
        {"prize_id": "bonus", "name": "50 bonus points", "stock": 3, "weight_ppm": 1_000_000, "points": 50},
    ]))  # fmt: skip
    results = [env.draw("bonus-only", "gus", key=f"g-{i}").json() for i in range(5)]
    assert [r["prize_id"] for r in results] == ["bonus"] * 3 + [None] * 2
    assert env.draw("bonus-only", "gus", key="g-0").json() == results[0]
    assert env.balance("gus")["available"] == 150
    credits = [e for e in env.entries("gus") if e["kind"] == "credit"]
    assert sorted(e["ref"] for e in credits) == sorted(f"lottery-prize-{r['draw_id']}" for r in results[:3])


def test_refused_draws_give_the_held_points_back(env: Env) -> None:
    start = datetime.now(UTC)
    env.create(**instant("limited", per_member_limit=2))
    env.create(**instant("later", starts_at=(start + timedelta(days=1)).isoformat()))
    env.fund("lena", 25)
    assert env.draw("limited", "lena").status_code == 201
    assert env.draw("limited", "lena").status_code == 201
    over = env.draw("limited", "lena", key="over")
    assert (over.status_code, over.json()["error"]) == (409, "limit_reached")
    assert env.draw("limited", "lena", key="over").json() == over.json()  # a retry: the same answer
    poor = env.draw("limited", "nina", key="poor")
    assert (poor.status_code, poor.json()["error"]) == (409, "insufficient_points")
    early = env.draw("later", "lena")
    assert (early.status_code, early.json()["error"]) == (409, "campaign_closed")
    assert env.close("limited").status_code == 200
    closed = env.draw("limited", "lena")
    assert (closed.status_code, closed.json()["error"]) == (409, "campaign_closed")
    balance = env.balance("lena")
    won_points = sum(
        50 for d in env.get("/v1/campaigns/limited/reveal").json()["draws"] if d["prize_id"] == "bonus"
    )
    assert (balance["available"], balance["held"]) == (25 - 20 + won_points, 0)


def test_wrong_kind_unknown_campaign_and_reveal_before_the_end(env: Env) -> None:
    env.create(campaign_id="vip-gala", name="VIP gala", kind="ballot", cost_points=0, seats=2)
    env.create(**instant("running"))
    wrong = env.draw("vip-gala", "olga")
    assert (wrong.status_code, wrong.json()["error"]) == (409, "wrong_campaign_kind")
    unknown = env.draw("no-such-campaign", "olga")
    assert (unknown.status_code, unknown.json()["error"]) == (404, "unknown_campaign")
    assert env.get("/v1/campaigns/no-such-campaign").status_code == 404
    early = env.get("/v1/campaigns/running/reveal")
    assert (early.status_code, early.json()["error"]) == (409, "not_revealed")
    ballot_early = env.get("/v1/campaigns/vip-gala/reveal")
    assert (ballot_early.status_code, ballot_early.json()["error"]) == (409, "not_revealed")


def test_an_instant_campaign_is_revealed_once_its_end_has_passed(env: Env) -> None:
    ends_at = datetime.now(UTC) + timedelta(seconds=2)
    env.create(**instant("short", cost_points=0, ends_at=ends_at.isoformat()))
    made = env.draw("short", "tom", key="t-1").json()
    assert env.get("/v1/campaigns/short/reveal").json()["error"] == "not_revealed"
    wait_until(lambda: datetime.now(UTC) > ends_at, timeout=5, what="the end of the campaign")
    late = env.draw("short", "tom", key="t-2")
    assert (late.status_code, late.json()["error"]) == (409, "campaign_closed")
    assert env.draw("short", "tom", key="t-1").json() == made  # a retry still gets its answer
    reveal = env.get("/v1/campaigns/short/reveal").json()
    assert [d["draw_id"] for d in reveal["draws"]] == [made["draw_id"]]
    assert env.get("/v1/campaigns/short").json()["status"] == "ended"


def test_500_concurrent_draws_never_give_more_prizes_than_stock_and_spend_each_cost_once(env: Env) -> None:
    env.create(**instant("rush", cost_points=7, prizes=[
        {"prize_id": "tv", "name": "TV", "stock": 10, "weight_ppm": 400_000},
    ]))  # fmt: skip
    members = [f"rush{i:02d}" for i in range(50)]
    asyncio.run(fund_all(env, {m: 70 for m in members}))
    requests = [(m, f"{m}-{n}") for m in members for n in range(10)]
    responses = asyncio.run(draw_concurrently(env, "rush", requests))
    assert Counter(r.status_code for r in responses) == {201: 500}, {
        r.text for r in responses if r.status_code != 201
    }
    won = [r.json() for r in responses if r.json()["prize_id"] == "tv"]
    assert len(won) == 10  # 400,000 ppm of 500 draws: ~200 rolled the TV, exactly its stock won it
    info = env.get("/v1/campaigns/rush").json()
    assert (info["draws"], info["prizes"][0]["won"], info["prizes"][0]["remaining"]) == (500, 10, 0)

    def all_settled() -> bool:
        return all(b["available"] == 0 and b["held"] == 0 for b in map(env.balance, members))

    wait_until(all_settled, timeout=30, what="every member's 10 draws paid for")
    for member in members:
        kinds = Counter(e["kind"] for e in env.entries(member))
        assert (kinds["hold"], kinds["capture"], kinds["void"]) == (10, 10, 0), (member, kinds)
    nonces = Counter(r.json()["member_id"] for r in responses)
    assert set(nonces.values()) == {10}


def test_concurrent_draws_by_one_member_never_pass_the_daily_limit(env: Env) -> None:
    env.create(**instant("daily", cost_points=5, per_member_daily_limit=3, prizes=[
        {"prize_id": "data", "name": "1 GB data", "stock": 50, "weight_ppm": 500_000},
    ]))  # fmt: skip
    env.fund("dan", 500)
    responses = asyncio.run(draw_concurrently(env, "daily", [("dan", f"dan-{i}") for i in range(40)]))
    codes = Counter(r.status_code for r in responses)
    assert codes == {201: 3, 409: 37}
    assert {r.json()["error"] for r in responses if r.status_code == 409} == {"limit_reached"}
    assert sorted(r.json()["nonce"] for r in responses if r.status_code == 201) == [1, 2, 3]
    wait_until(lambda: env.balance("dan")["held"] == 0, timeout=30, what="refused draws' holds voided")
    assert env.balance("dan")["available"] == 500 - 15
    metrics = env.get("/metrics").text
    assert 'loyalty_lottery_limit_rejections_total{limit="daily"} 37.0' in metrics


def test_verify_campaign_accepts_an_honest_reveal_and_rejects_tampered_ones(env: Env, tmp_path: Path) -> None:
    env.create(**instant("audit", cost_points=0))
    for member in ("ann", "bob", "cyd"):
        for n in range(6):
            assert env.draw("audit", member, client_seed=f"{member}{n}").status_code == 201
    assert env.close("audit").json()["status"] == "closed"
    reveal = env.get("/v1/campaigns/audit/reveal").json()
    assert len(reveal["draws"]) == 18 and len(bytes.fromhex(reveal["server_seed"])) == 32

    honest = tmp_path / "honest.json"
    honest.write_text(json.dumps(reveal))
    ok = env.platform.cli("verify-campaign", str(honest))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count("\nok  ") >= 18 and "verified: fair" in ok.stdout
    by_url = env.platform.cli("verify-campaign", f"{env.lottery}/v1/campaigns/audit/reveal")
    assert by_url.returncode == 0, by_url.stdout + by_url.stderr

    def tampered(name: str, change: Any) -> str:
        copy = json.loads(json.dumps(reveal))
        change(copy)
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(copy))
        result = env.platform.cli("verify-campaign", str(path))
        assert result.returncode == 1, (name, result.stdout, result.stderr)
        assert "verified: NOT FAIR" in result.stdout
        return result.stdout

    seed = bytearray(bytes.fromhex(reveal["server_seed"]))
    seed[0] ^= 1
    assert "but the commitment was" in tampered("seed", lambda r: r.update(server_seed=seed.hex()))

    def change_outcome(r: dict[str, Any]) -> None:
        draw = r["draws"][4]
        draw["prize_id"] = "data" if draw["prize_id"] != "data" else None

    assert "FAIL  draw" in tampered("outcome", change_outcome)
    assert "nonces with gaps" in tampered("dropped", lambda r: r["draws"].pop(2))  # bob's or ann's #3
    unreadable = env.platform.cli("verify-campaign", str(tmp_path / "missing.json"))
    assert unreadable.returncode == 2


def test_only_admins_manage_campaigns_and_members_draw_only_for_themselves(env: Env) -> None:
    member = {"Authorization": f"Bearer {token('eve')}"}
    body = instant("auth")
    assert httpx.post(f"{env.lottery}/v1/admin/campaigns", json=body, headers=member).status_code == 403
    assert httpx.post(f"{env.lottery}/v1/admin/campaigns", json=body, headers=SERVICE).status_code == 403
    assert httpx.post(f"{env.lottery}/v1/admin/campaigns", json=body).status_code == 401
    expired = {"Authorization": f"Bearer {token(role='admin', ttl=-10)}"}
    assert httpx.post(f"{env.lottery}/v1/admin/campaigns", json=body, headers=expired).status_code == 401
    env.create(**body)
    url = f"{env.lottery}/v1/campaigns/auth/draws"
    for_mallory = httpx.post(url, json={"member_id": "mallory"}, headers={**member, "Idempotency-Key": "x"})
    assert (for_mallory.status_code, for_mallory.json()["error"]) == (403, "forbidden")
    forged = {"Authorization": "Bearer " + token("eve")[:-4] + "AAAA", "Idempotency-Key": "y"}
    assert httpx.post(url, json={"member_id": "eve"}, headers=forged).status_code == 401
    assert httpx.post(f"{env.lottery}/v1/admin/campaigns/auth/close", headers=member).status_code == 403
    entry = httpx.post(
        f"{env.lottery}/v1/campaigns/auth/entries", json={"member_id": "mallory"}, headers=member
    )
    assert entry.status_code == 403


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/v1/admin/campaigns", {"campaign_id": "x", "name": "x", "kind": "raffle", "cost_points": 0}, {}),
        ("/v1/admin/campaigns", {**instant("neg"), "cost_points": -1}, {}),
        ("/v1/admin/campaigns", {**instant("big"), "cost_points": 10**30}, {}),
        ("/v1/admin/campaigns", {**instant("bad id!")}, {}),
        ("/v1/admin/campaigns", {**instant("nul"), "name": "a\u0000b"}, {}),
        ("/v1/admin/campaigns", {**instant("sur"), "name": "\ud800"}, {}),
        ("/v1/admin/campaigns", {**instant("naive"), "ends_at": "2030-01-01T00:00:00"}, {}),
        ("/v1/admin/campaigns", {**instant("far"), "ends_at": "0001-01-01T00:00:00+14:00"}, {}),
        (
            "/v1/admin/campaigns",
            {
                **instant("order"),
                "starts_at": "2030-01-02T00:00:00+08:00",
                "ends_at": "2030-01-01T00:00:00+08:00",
            },
            {},
        ),
        (
            "/v1/admin/campaigns",
            {
                **instant("heavy"),
                "prizes": [
                    {"prize_id": "a", "name": "A", "stock": 1, "weight_ppm": 600_000},
                    {"prize_id": "b", "name": "B", "stock": 1, "weight_ppm": 600_000},
                ],
            },
            {},
        ),
        (
            "/v1/admin/campaigns",
            {
                **instant("twice"),
                "prizes": [
                    {"prize_id": "a", "name": "A", "stock": 1, "weight_ppm": 1},
                    {"prize_id": "a", "name": "A", "stock": 1, "weight_ppm": 1},
                ],
            },
            {},
        ),
        ("/v1/admin/campaigns", {**instant("none"), "prizes": []}, {}),
        ("/v1/admin/campaigns", {**instant("seats"), "seats": 3}, {}),
        ("/v1/admin/campaigns", {"campaign_id": "b", "name": "b", "kind": "ballot", "cost_points": 0}, {}),
        (
            "/v1/admin/campaigns",
            {"campaign_id": "b", "name": "b", "kind": "ballot", "cost_points": 0, "seats": 0},
            {},
        ),
        ("/v1/admin/campaigns", ["not", "an", "object"], {}),
        ("/v1/admin/campaigns", "{not json", {}),
        ("/v1/campaigns/spring/draws", {"member_id": "m1"}, {}),  # no Idempotency-Key
        ("/v1/campaigns/spring/draws", {"member_id": "m1"}, {"Idempotency-Key": "has space"}),
        ("/v1/campaigns/spring/draws", {"member_id": "m 1"}, {"Idempotency-Key": "k"}),
        ("/v1/campaigns/spring/draws", {"member_id": "m1", "client_seed": 5}, {"Idempotency-Key": "k"}),
        (
            "/v1/campaigns/spring/draws",
            {"member_id": "m1", "client_seed": "\ud800"},
            {"Idempotency-Key": "k"},
        ),
        ("/v1/campaigns/spring/draws", {}, {"Idempotency-Key": "k"}),
        ("/v1/campaigns/bad%20id/draws", {"member_id": "m1"}, {"Idempotency-Key": "k"}),
        ("/v1/campaigns/vip-gala/entries", {"member_id": ""}, {}),
        ("/v1/admin/campaigns/spring/close", {"public_entropy": "x"}, {}),  # entropy is for ballots
        ("/v1/admin/campaigns/vip-gala/close", {"public_entropy": ["x"]}, {}),
    ],
)
def test_bad_requests_are_422_with_a_json_error(
    env: Env, path: str, body: Any, headers: dict[str, str]
) -> None:
    env.create(**instant("spring"))  # the same definition again: what the requests below refer to
    env.create(campaign_id="vip-gala", name="VIP gala", kind="ballot", cost_points=0, seats=2)
    # Sent as JSON text with \\u escapes, as a client could: a lone surrogate cannot be UTF-8 encoded.
    content = body if isinstance(body, str) else json.dumps(body)
    response = httpx.post(f"{env.lottery}{path}", content=content, timeout=30,
                          headers={**ADMIN, "Content-Type": "application/json", **headers})  # fmt: skip
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request"


def test_a_crash_after_the_draw_or_before_it_is_finished_by_the_reconciler(env: Env) -> None:
    """Simulate the lottery dying at the two worst moments, with a real hold in the points service."""
    env.create(**instant("crash", cost_points=30, prizes=[
        {"prize_id": "mug", "name": "Mug", "stock": 5, "weight_ppm": 0},
    ]))  # fmt: skip
    env.fund("kim", 100)
    for key, status, nonce in (("drawn-then-crash", "drawn", 1), ("crash-before-draw", "pending", None)):
        hold_id = f"lottery-draw-{key}"
        hold = {"hold_id": hold_id, "member_id": "kim", "points": 30, "reason": "lottery draw crash"}
        placed = httpx.post(f"{env.points}/v1/holds", headers=SERVICE, timeout=30, json=hold)
        assert placed.status_code == 201
        env.platform.fetch(
            """INSERT INTO lottery.draws (campaign_id, idempotency_key, draw_id, member_id, client_seed,
                   request_sha256, hold_id, cost_points, status, payment, nonce, drawn_at, updated_at)
               VALUES ('crash', $1, $1, 'kim', '', '\\x00', $2, 30, $3, 'held', $4,
                       CASE WHEN $3 = 'drawn' THEN now() END, now() - interval '1 hour')""",
            key, hold_id, status, nonce,
        )  # fmt: skip
    wait_until(
        lambda: env.balance("kim")["held"] == 0, timeout=20, what="the reconciler to settle both holds"
    )
    assert env.balance("kim")["available"] == 70  # the drawn one paid, the undecided one given back
    rows = env.platform.fetch("SELECT idempotency_key, status, payment, error FROM lottery.draws "
                              "WHERE campaign_id = 'crash' ORDER BY 1")  # fmt: skip
    assert [tuple(r) for r in rows] == [
        ("crash-before-draw", "refused", "voided", "draw_interrupted"),
        ("drawn-then-crash", "drawn", "captured", None),
    ]


def test_draws_and_closes_are_published_on_the_lottery_topic(env: Env) -> None:
    env.create(**instant("events", cost_points=0, prizes=[
        {"prize_id": "hat", "name": "Hat", "stock": 2, "weight_ppm": 1_000_000},
    ]))  # fmt: skip
    made = [env.draw("events", "ivy").json() for _ in range(3)]
    assert [d["prize_id"] for d in made] == ["hat", "hat", None]
    env.close("events")
    wanted = {f"draw:{d['draw_id']}" for d in made} | {"closed:events"}

    def published() -> bool:
        seen = {e["event_id"] for e in read_topic(env.platform.bootstrap, LOTTERY_DRAWS, expect=1, timeout=5)}
        return wanted <= seen

    wait_until(published, timeout=30, what="the draws on lottery.draws.v1")
    metrics = env.get("/metrics").text
    assert "loyalty_lottery_draws_total" in metrics and "loyalty_lottery_draw_seconds_bucket" in metrics
    assert 'loyalty_lottery_prizes_left{campaign="events",prize="hat"} 0.0' in metrics


async def fund_all(env: Env, amounts: dict[str, int]) -> None:
    async with httpx.AsyncClient(base_url=env.points, headers=ADMIN, timeout=60) as client:
        gate = asyncio.Semaphore(32)

        async def fund(member: str, points: int) -> None:
            async with gate:
                body = {
                    "adjustment_id": f"fund-{member}",
                    "member_id": member,
                    "delta": points,
                    "reason": "t",
                }
                response = await client.post("/v1/admin/adjustments", json=body)
                assert response.status_code == 201, response.text

        await asyncio.gather(*(fund(m, p) for m, p in amounts.items()))


async def draw_concurrently(env: Env, campaign: str, requests: list[tuple[str, str]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(requests))
    async with httpx.AsyncClient(base_url=env.lottery, timeout=60, limits=limits) as client:
        return list(await asyncio.gather(*(
            client.post(f"/v1/campaigns/{campaign}/draws", json={"member_id": member},
                        headers={"Authorization": f"Bearer {token(member)}", "Idempotency-Key": key})
            for member, key in requests
        )))  # fmt: skip


def test_the_demo_plays_both_kinds_of_campaign_and_finds_them_fair(env: Env) -> None:
    members = [f"demo{i}" for i in range(6)]
    for member in members:
        env.fund(member, 200)
    told: list[str] = []
    play_lottery_demo(env.lottery, env.points, DEV_JWT_SECRET, members, told.append)
    text = "\n".join(told)
    assert "seed commitment" in text and "winners" in text, text
    assert text.count("verified: fair") == 2, text
    assert "stopped" not in text
