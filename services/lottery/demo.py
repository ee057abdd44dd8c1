"""The lottery part of `loyalty up`'s demo: a small instant-win campaign and a ballot, then their proof.

Everything goes through the public HTTP API, as the online hall and the VIP club would
use it; the reveal is checked with the same code as `loyalty verify-campaign`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx

from services.common.auth import mint_token
from services.lottery.domain.reveal import Reveal, RevealFormatError, verify
from services.lottery.verify import verdict

DRAWS_PER_MEMBER = 2
DRAWING_MEMBERS = 5


class DemoStopped(Exception):
    pass


def play_lottery_demo(
    lottery_url: str, points_url: str, jwt_secret: str, member_ids: list[str], say: Callable[[str], None]
) -> None:
    """Create, play, close, reveal and verify an instant campaign and a ballot, telling what happens."""
    try:
        _play(_Api(lottery_url, points_url, jwt_secret), member_ids, say)
    except (DemoStopped, httpx.HTTPError, RevealFormatError) as exc:
        say(f"Lottery demo stopped: {exc}")


class _Api:
    def __init__(self, lottery_url: str, points_url: str, jwt_secret: str) -> None:
        self.lottery = lottery_url.rstrip("/")
        self.points = points_url.rstrip("/")
        self.secret = jwt_secret
        self.admin = {"Authorization": f"Bearer {mint_token(jwt_secret, 'lottery-demo', 'admin', 600)}"}

    def member(self, member_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(self.secret, member_id, 'member', 600)}"}

    def post(self, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(f"{self.lottery}{path}", json=body, headers=headers, timeout=30)

    def get(self, path: str) -> Any:
        response = httpx.get(f"{self.lottery}{path}", timeout=30)
        _expect(response, 200, path)
        return response.json()

    def available(self, member_id: str) -> int:
        response = httpx.get(f"{self.points}/v1/members/{member_id}/balance", headers=self.admin, timeout=30)
        _expect(response, 200, "balance")
        return int(response.json()["available"])


def _expect(response: httpx.Response, status: int, what: str) -> None:
    if response.status_code != status:
        raise DemoStopped(f"{what}: HTTP {response.status_code} {response.text[:200]}")


def _play(api: _Api, member_ids: list[str], say: Callable[[str], None]) -> None:
    if not member_ids:
        raise DemoStopped("no members to play with")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    spin, vip = f"demo-spin-{stamp}", f"demo-vip-{stamp}"
    created = api.post("/v1/admin/campaigns", {
        "campaign_id": spin, "name": "Spring instant win", "kind": "instant", "cost_points": 10,
        "per_member_daily_limit": 5,
        "prizes": [
            {"prize_id": "phone", "name": "a smartphone", "stock": 1, "weight_ppm": 50_000},
            {"prize_id": "data", "name": "1 GB of mobile data", "stock": 20, "weight_ppm": 300_000},
            {"prize_id": "bonus", "name": "100 bonus points", "stock": 20, "weight_ppm": 200_000,
             "points": 100},
        ],
    }, api.admin)  # fmt: skip
    _expect(created, 201, "creating the instant campaign")
    say(f"Lottery       instant campaign {spin}: 10 points a draw, 3 prizes")
    say(f"              seed commitment {created.json()['seed_commitment']}")

    for member_id in member_ids[:DRAWING_MEMBERS]:
        outcomes = []
        for n in range(1, DRAWS_PER_MEMBER + 1):
            headers = {**api.member(member_id), "Idempotency-Key": f"{spin}-{member_id}-{n}"}
            body = {"member_id": member_id, "client_seed": f"lucky-{n}"}
            response = api.post(f"/v1/campaigns/{spin}/draws", body, headers)
            if response.status_code == 201:
                draw = response.json()
                outcomes.append(draw["prize_name"] or "nothing")
            elif response.status_code == 409:
                outcomes.append(f"refused ({response.json()['error']})")
            else:
                _expect(response, 201, "a draw")
        say(f"  {member_id} drew {DRAWS_PER_MEMBER} times: {', '.join(outcomes)}")

    seats = max(1, len(member_ids) // 3)
    created = api.post("/v1/admin/campaigns", {
        "campaign_id": vip, "name": "VIP concert ballot", "kind": "ballot", "cost_points": 20, "seats": seats,
    }, api.admin)  # fmt: skip
    _expect(created, 201, "creating the ballot")
    entered = []
    for member_id in member_ids:
        response = api.post(f"/v1/campaigns/{vip}/entries", {"member_id": member_id}, api.member(member_id))
        if response.status_code == 201:
            entered.append(member_id)
    say(f"Lottery       ballot {vip}: {len(entered)} members entered for {seats} seats (20 points held each)")

    _expect(api.post(f"/v1/admin/campaigns/{spin}/close", None, api.admin), 200, "closing the campaign")
    entropy = f"demo draw {stamp}"
    closed = api.post(f"/v1/admin/campaigns/{vip}/close", {"public_entropy": entropy}, api.admin)
    _expect(closed, 200, "closing the ballot")
    winners = api.get(f"/v1/campaigns/{vip}/results")["winners"]
    say(f"  ballot closed with public entropy {entropy!r}: winners {', '.join(winners) or 'none'}; "
        "the others' points are given back")  # fmt: skip

    for campaign_id in (spin, vip):
        reveal = Reveal.from_json(api.get(f"/v1/campaigns/{campaign_id}/reveal"))
        result = verify(reveal)
        what = f"{len(reveal.draws)} draws" if reveal.kind == "instant" else f"{len(reveal.entries)} entries"
        say(f"  {campaign_id}: seed revealed, {what} recomputed — {verdict(result)}")
