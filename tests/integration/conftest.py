"""Real infrastructure for integration tests: Postgres, the Tansu broker, and our own processes.

Postgres: the system server on 127.0.0.1:5432 when it is there (a throw-away database
per test), else an embedded pgserver. LOYALTY_TEST_POSTGRES=embedded forces the
embedded one; LOYALTY_TEST_POSTGRES=system requires the system one.
Broker: a fresh in-memory Tansu per test, so topics and consumer groups never leak.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from services.common.auth import mint_token
from services.common.db import migrate
from services.common.embedded import free_port, start_broker, start_postgres
from services.common.settings import DEV_JWT_SECRET

REPO = Path(__file__).resolve().parents[2]
SYSTEM_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _system_postgres_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            pass
    except OSError:
        return False

    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(SYSTEM_DSN, timeout=3)
        except Exception:
            return False
        await conn.close()
        return True

    return asyncio.run(probe())


@dataclass
class PostgresServer:
    """Where throw-away databases are created, each a copy of a migrated template."""

    admin_dsn: str
    dsn_for: Callable[[str], str]
    template: str = ""
    created: list[str] = field(default_factory=list)

    def new_database(self) -> str:
        name = f"loyalty_test_{uuid.uuid4().hex[:12]}"
        run(self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
        self.created.append(name)
        return self.dsn_for(name)

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def drop_all(self) -> None:
        for name in [*self.created, self.template]:
            if name:
                run(self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    mode = os.environ.get("LOYALTY_TEST_POSTGRES", "auto")
    embedded = None
    if mode == "system" or (mode == "auto" and _system_postgres_up()):
        server = PostgresServer(SYSTEM_DSN, lambda name: f"postgresql://postgres@127.0.0.1:5432/{name}")
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="loyalty-test-pg-"))
        embedded = start_postgres(data_dir)
        host = embedded.dsn.split("host=", 1)[1]
        server = PostgresServer(
            f"postgresql://postgres@/postgres?host={host}",
            lambda name: f"postgresql://postgres@/{name}?host={host}",
        )
    template = f"loyalty_template_{uuid.uuid4().hex[:8]}"
    run(server._admin(f'CREATE DATABASE "{template}"'))
    run(migrate(server.dsn_for(template)))
    server.template = template
    try:
        yield server
    finally:
        server.drop_all()
        if embedded is not None:
            embedded.stop()
            shutil.rmtree(data_dir, ignore_errors=True)


class Service:
    """One of our processes (`python -m services.cli ...`), logging to a file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args, self.env, self.log_path = args, env, log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", *self.args],
            env=self.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def kill(self) -> None:
        """SIGKILL: no clean-up, no commit, as a crash would."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Platform:
    """A database and a broker of this test's own, and the means to run our services on them."""

    dsn: str
    bootstrap: str
    tmp: Path
    services: list[Service] = field(default_factory=list)
    points_url: str | None = None

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOYALTY_")}
        env.update(
            LOYALTY_DATABASE_URL=self.dsn,
            LOYALTY_KAFKA_BOOTSTRAP=self.bootstrap,
            LOYALTY_HOME=str(self.tmp / "home"),
            LOYALTY_JWT_SECRET=DEV_JWT_SECRET,
            LOYALTY_WORKER_METRICS_PORT="0",
            LOYALTY_LOG_LEVEL="INFO",
        )
        env.update(extra)
        return env

    def service(self, *args: str, **env: str) -> Service:
        name = "-".join(args)
        service = Service(list(args), self.env(**env), self.tmp / f"{name}-{len(self.services)}.log")
        self.services.append(service)
        return service

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.cli", *args],
            env=self.env(**env),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def start_points_api(self) -> str:
        return self.start_api("points")

    def start_api(self, name: str, **env: str) -> str:
        """Start `loyalty api NAME` on a free port; services after points reach it by LOYALTY_POINTS_URL."""
        port = free_port()
        if self.points_url and name != "points":
            env.setdefault("LOYALTY_POINTS_URL", self.points_url)
        self.service("api", name, **{f"LOYALTY_{name.upper()}_PORT": str(port)}, **env).start()
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _ready(url), timeout=30, what=f"{url}/readyz")
        if name == "points":
            self.points_url = url
        return url

    def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async def query() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.dsn)
            try:
                return list(await conn.fetch(sql, *args))
            finally:
                await conn.close()

        return run(query())

    def fetchval(self, sql: str, *args: Any) -> Any:
        rows = self.fetch(sql, *args)
        return rows[0][0] if rows else None


@contextlib.contextmanager
def new_platform(postgres: PostgresServer, tmp: Path) -> Iterator[Platform]:
    """A fresh database and broker; every service started on them is stopped at the end."""
    broker = start_broker(tmp / "broker")
    env = Platform(postgres.new_database(), broker.bootstrap, tmp)
    try:
        yield env
    finally:
        for service in env.services:
            if service.process is not None:
                service.stop()
        broker.stop()


@pytest.fixture
def platform(postgres: PostgresServer, tmp_path: Path) -> Iterator[Platform]:
    with new_platform(postgres, tmp_path) as env:
        yield env


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def token(member: str | None = None, role: str = "member", ttl: int = 600) -> str:
    subject = member if role == "member" else f"{role}-test"
    assert subject is not None
    return mint_token(DEV_JWT_SECRET, subject, role, ttl)


def run(coro: Any) -> Any:
    return asyncio.run(coro)
