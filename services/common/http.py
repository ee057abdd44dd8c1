"""The HTTP edge every service shares: JSON errors, auth dependency, ops routes, latency metrics."""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.auth import AuthError, Principal, TokenVerifier
from services.common.db import DATABASE_AWAY
from services.common.kafka import broker_reachable
from services.common.metrics import HTTP_REQUEST_SECONDS
from services.common.settings import LoyaltySettings

log = logging.getLogger(__name__)


def error_response(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


def describe_invalid(errors: Sequence[Any]) -> str:
    """Pydantic's errors as one line: `field: what is wrong; ...`."""
    problems = []
    for err in errors:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        problems.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return "; ".join(problems) or "invalid request"


def install_error_handlers(app: FastAPI, domain_error: type[Exception], statuses: dict[str, int]) -> None:
    """Map every failure to the contract's `{"error", "detail"}` body; never a bare 500 page."""

    async def on_domain_error(_: Request, exc: Exception) -> JSONResponse:
        code = str(getattr(exc, "code", "error"))
        return error_response(statuses.get(code, 409), code, str(exc))

    async def on_auth_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AuthError)
        return error_response(exc.status, exc.code, exc.detail)

    async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(422, "invalid_request", describe_invalid(exc.errors()))

    async def on_http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    async def on_database_away(_: Request, exc: Exception) -> JSONResponse:
        # Nothing is half done: every change is one transaction, and every write an idempotent key.
        log.warning("database unavailable: %s: %s", type(exc).__name__, exc)
        detail = "the database is unavailable for a moment; send the same request again"
        return error_response(503, "unavailable", detail)

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal_error", "unexpected error; it has been logged")

    app.add_exception_handler(domain_error, on_domain_error)
    app.add_exception_handler(AuthError, on_auth_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    for away in DATABASE_AWAY:
        app.add_exception_handler(away, on_database_away)
    app.add_exception_handler(Exception, on_unexpected)


async def authenticate(request: Request) -> Principal:
    # async: FastAPI runs a plain `def` dependency in a worker thread, on every request.
    verifier: TokenVerifier = request.app.state.verifier
    return verifier.verify(request.headers.get("authorization"))


PrincipalDep = Annotated[Principal, Depends(authenticate)]


class RequestMetricsMiddleware:
    """Records latency per route template (not per raw path, to keep label sets small)."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            HTTP_REQUEST_SECONDS.labels(self.service, scope["method"], template, str(status)).observe(
                time.perf_counter() - started
            )


def install_service_edge(
    app: FastAPI,
    *,
    service: str,
    settings: LoyaltySettings,
    domain_error: type[Exception],
    statuses: dict[str, int],
) -> None:
    """What every service's app has: bearer tokens, JSON errors, latency metrics and ops routes.

    Readiness checks `app.state.pool` and `app.state.bootstrap`, which the lifespan sets.
    """
    app.state.verifier = TokenVerifier(settings.jwt_secret, settings.jwt_public_key)
    app.add_middleware(RequestMetricsMiddleware, service=service)
    install_error_handlers(app, domain_error, statuses)

    async def readiness() -> dict[str, bool]:
        database = False
        with contextlib.suppress(Exception):
            database = await app.state.pool.fetchval("SELECT 1") == 1
        return {"database": database, "broker": await broker_reachable(app.state.bootstrap)}

    add_ops_routes(app, readiness)


def add_ops_routes(app: FastAPI, readiness: Callable[[], Awaitable[dict[str, bool]]]) -> None:
    """`/healthz` (process alive), `/readyz` (database and broker reachable), `/metrics`."""

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], response_model=None)
    async def readyz() -> dict[str, Any] | JSONResponse:
        """200 once the database and the broker are reachable, else 503."""
        checks = await readiness()
        body = {"status": "ready" if all(checks.values()) else "not_ready", "checks": checks}
        return body if all(checks.values()) else JSONResponse(body, status_code=503)

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def serve(app: FastAPI, port: int) -> None:
    """Run an API in the foreground until SIGTERM or Ctrl-C (uvicorn, uvloop, httptools, no access log)."""
    import uvicorn

    collect_garbage_less_often()
    uvicorn.run(
        app, host="0.0.0.0", port=port, loop="uvloop", http="httptools",
        log_level="warning", access_log=False,
        # Longer than any client's or load balancer's idle timeout (aiohttp 15 s, httpx 5 s, a cloud
        # load balancer 60 s): with uvicorn's 5 s, a client could send on a connection the server
        # was closing just then and get no answer (the likely cause of an httpx ReadError seen once in tests).
        timeout_keep_alive=75,
    )  # fmt: skip


def collect_garbage_less_often() -> None:
    """Keep Python's cycle collector from rescanning the whole process on every burst of requests.

    Each request allocates thousands of short-lived containers, so with the default thresholds
    the collector ran hundreds of times a second and kept walking the modules, the app and the
    metrics that live for the whole process: a perf profile of the redemption API at 800
    orders/s put 28% of its CPU in the collector. What exists now (everything imported, the
    app built) is moved out of its sight for good, and a young collection waits for 20,000
    new containers instead of 700. Reference counting still frees everything that is not in
    a cycle at once; only cycles wait a little longer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 10)
