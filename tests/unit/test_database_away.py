"""A database that is away is the service's trouble, not the client's: 503 and a JSON error."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from services.common.embedded import free_port
from services.common.http import install_error_handlers


class DomainError(Exception):
    code = "domain"


def app_reading(dsn: str) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app, DomainError, {})

    @app.get("/read")
    async def read() -> dict[str, int]:
        conn = await asyncpg.connect(dsn, timeout=2)
        try:
            return {"one": await conn.fetchval("SELECT 1")}
        finally:
            await conn.close()

    @app.get("/bug")
    async def bug() -> None:
        raise KeyError("a bug of ours")

    return app


def get(app: FastAPI, path: str) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            return await client.get(path)

    return asyncio.run(call())


def test_no_database_listening_is_a_503_with_the_contract_error_body() -> None:
    nobody = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"  # nothing listens there
    response = get(app_reading(nobody), "/read")
    assert response.status_code == 503
    assert response.json()["error"] == "unavailable"
    assert "again" in response.json()["detail"]


@pytest.mark.parametrize(
    "away",
    [asyncpg.exceptions.CannotConnectNowError, asyncpg.exceptions.DeadlockDetectedError, TimeoutError],
)
def test_a_database_restarting_or_a_lost_race_is_a_503(away: type[Exception]) -> None:
    app = FastAPI()
    install_error_handlers(app, DomainError, {})

    @app.get("/write")
    async def write() -> None:
        raise away("the database said so")

    response = get(app, "/write")
    assert (response.status_code, response.json()["error"]) == (503, "unavailable")


def test_our_own_bugs_stay_500() -> None:
    response = get(app_reading("postgresql://unused"), "/bug")
    assert (response.status_code, response.json()["error"]) == (500, "internal_error")
