"""The points API read side over HTTP: balances, history pages, auth, ops endpoints."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import jwt
import pytest

from services.common.kafka import BILLING_EVENTS
from tests.integration.conftest import Platform, PostgresServer, new_platform, token, wait_until
from tests.integration.stream import encoded, event, produce


@pytest.fixture(scope="module")
def api(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One worker and API for the module: these tests only read."""
    with new_platform(postgres, tmp_path_factory.mktemp("points-api")) as platform:
        yield start_with_events(platform)


def start_with_events(platform: Platform) -> str:
    produce(
        platform.bootstrap,
        BILLING_EVENTS,
        [
            encoded(event("a-1", "alice", "bill_settled", 10000, "gold", "2025-06-01T09:00:00+08:00")),
            encoded(event("a-2", "alice", "recharge", 5000, "gold", "2026-02-01T09:00:00+08:00")),
            encoded(event("a-3", "alice", "contract_renewed", tier="gold")),
            encoded(event("a-4", "alice", "bill_adjusted", -2000, "gold")),
            encoded(event("a-5", "alice", "service_activated", tier="diamond")),
        ],
    )
    platform.service("worker", "points").start()
    wait_until(
        lambda: platform.fetchval("SELECT count(*) FROM points.billing_events") == 5,
        timeout=60,
        what="the events to be applied",
    )
    return platform.start_points_api()


def get(url: str, bearer: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    return httpx.get(url, headers=headers, timeout=10)


def test_member_sees_balance_with_lots_by_expiry(api: str) -> None:
    body = get(f"{api}/v1/members/alice/balance", token("alice")).json()
    # 150 (2025) + 75 + 500 - 30 + 200 (2026); the clawback comes out of the 2025 lot first.
    assert body == {
        "member_id": "alice",
        "tier": "diamond",
        "available": 895,
        "held": 0,
        "debt": 0,
        "expiring": [
            {"points": 120, "expires_at": "2027-01-01T00:00:00+08:00"},
            {"points": 775, "expires_at": "2028-01-01T00:00:00+08:00"},
        ],
    }


def test_unknown_member_has_zero_balance(api: str) -> None:
    response = get(f"{api}/v1/members/nobody/balance", token(role="admin"))
    assert response.status_code == 200
    assert response.json() == {
        "member_id": "nobody",
        "tier": "standard",
        "available": 0,
        "held": 0,
        "debt": 0,
        "expiring": [],
    }


def test_entries_come_newest_first_in_pages_that_cover_everything_once(api: str) -> None:
    bearer = token("alice")
    seen, cursor = [], None
    while True:
        url = f"{api}/v1/members/alice/entries?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = get(url, bearer).json()
        assert len(page["entries"]) <= 2
        seen.extend(page["entries"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [e["ref"] for e in seen] == ["a-5", "a-4", "a-3", "a-2", "a-1"]
    assert [e["kind"] for e in seen] == ["accrual", "clawback", "accrual", "accrual", "accrual"]
    assert [e["delta"] for e in seen] == [200, -30, 500, 75, 150]
    assert [e["balance_after"] for e in seen] == [895, 695, 725, 225, 150]
    assert seen[-1]["occurred_at"] == "2025-06-01T09:00:00+08:00"
    assert set(seen[0]) == {
        "entry_id",
        "kind",
        "delta",
        "balance_after",
        "debt_after",
        "held_after",
        "ref",
        "occurred_at",
        "recorded_at",
    }


@pytest.mark.parametrize(
    ("query", "status"),
    [("limit=0", 422), ("limit=501", 422), ("limit=x", 422), ("cursor=bm9wZQ", 422), ("cursor=%%%", 422)],
)
def test_bad_paging_parameters_get_a_json_error(api: str, query: str, status: int) -> None:
    response = get(f"{api}/v1/members/alice/entries?{query}", token("alice"))
    assert response.status_code == status
    assert response.json()["error"] == "invalid_request"


def test_missing_expired_or_forged_tokens_are_401(api: str) -> None:
    url = f"{api}/v1/members/alice/balance"
    forged = jwt.encode(
        {"sub": "alice", "role": "member", "exp": 2**33},
        "another-secret-entirely-of-32-bytes-or-more",
        "HS256",
    )
    for headers in (
        {},
        {"Authorization": f"Bearer {token('alice', ttl=-10)}"},
        {"Authorization": f"Bearer {forged}"},
        {"Authorization": f"Basic {token('alice')}"},
        {"Authorization": "Bearer not.a.jwt"},
    ):
        response = httpx.get(url, headers=headers, timeout=10)
        assert response.status_code == 401, headers
        assert response.json()["error"] == "unauthorized"


def test_a_member_cannot_read_another_members_points(api: str) -> None:
    for path in ("balance", "entries"):
        response = get(f"{api}/v1/members/alice/{path}", token("mallory"))
        assert response.status_code == 403
        assert response.json()["error"] == "forbidden"
    assert get(f"{api}/v1/members/alice/balance", token(role="service")).status_code == 200
    assert get(f"{api}/v1/members/alice/balance", token(role="admin")).status_code == 200


def test_malformed_member_id_is_422_not_500(api: str) -> None:
    response = get(f"{api}/v1/members/{'x' * 40}/balance", token(role="admin"))
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"


def test_ops_endpoints_answer(api: str) -> None:
    assert get(f"{api}/healthz").json() == {"status": "ok"}
    assert get(f"{api}/readyz").status_code == 200
    get(f"{api}/v1/members/alice/balance", token("alice"))
    metrics = get(f"{api}/metrics").text
    assert (
        'loyalty_http_request_seconds_count{method="GET",route="/v1/members/{member_id}/balance"' in metrics
    )
    assert get(f"{api}/docs").status_code == 200
    assert "/v1/members/{member_id}/entries" in get(f"{api}/openapi.json").json()["paths"]
    missing = get(f"{api}/v1/nothing-here")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
