"""`loyalty up`: the whole platform in the foreground, with embedded Postgres and broker by default."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from services.common.db import migrate
from services.common.embedded import EmbeddedBroker, EmbeddedPostgres, start_broker, start_postgres
from services.common.kafka import ensure_topics
from services.common.settings import LoyaltySettings


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path


class Shutdown(Exception):
    """Ctrl-C or SIGTERM."""


def run_platform(settings: LoyaltySettings, demo: bool) -> int:
    home = settings.home.resolve()
    (home / "logs").mkdir(parents=True, exist_ok=True)
    postgres: EmbeddedPostgres | None = None
    broker: EmbeddedBroker | None = None
    children: list[Child] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise Shutdown()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        if settings.database_url:
            dsn = settings.database_url
            say(f"Postgres      {redact(dsn)} (LOYALTY_DATABASE_URL)")
        else:
            say("Postgres      starting embedded Postgres 16 …")
            postgres = start_postgres(home / "pgdata")
            dsn = postgres.dsn
            say(f"Postgres      embedded, data in {home / 'pgdata'}")
        if settings.kafka_bootstrap:
            bootstrap = settings.kafka_bootstrap
            say(f"Kafka         {bootstrap} (LOYALTY_KAFKA_BOOTSTRAP)")
        else:
            broker = start_broker(home / "logs")
            bootstrap = broker.bootstrap
            say(f"Kafka         embedded Tansu broker on {bootstrap} (in memory)")
        settings.endpoints_file().write_text(json.dumps({"database_url": dsn, "kafka_bootstrap": bootstrap}))
        applied = asyncio.run(migrate(dsn))
        say(f"Migrations    {len(applied)} applied, schema up to date")
        asyncio.run(ensure_topics(bootstrap))

        points_url = f"http://127.0.0.1:{settings.points_port}"
        env = {
            **os.environ,
            "LOYALTY_DATABASE_URL": dsn,
            "LOYALTY_KAFKA_BOOTSTRAP": bootstrap,
            "LOYALTY_POINTS_URL": settings.points_url or points_url,
        }
        children.append(spawn("points-worker", ["worker", "points"], env, home))
        urls: dict[str, str] = {}
        for name, port in (
            ("points", settings.points_port),
            ("redemption", settings.redemption_port),
            ("lottery", settings.lottery_port),
        ):
            if importlib.util.find_spec(f"services.{name}.entrypoints.api") is None:
                continue
            children.append(spawn(f"{name}-api", ["api", name], env, home))
            urls[name] = f"http://127.0.0.1:{port}"
        for url in urls.values():
            wait_ready(f"{url}/readyz", children)
        say("")
        for name, url in urls.items():
            say(f"{name.capitalize() + ' API':<16}{url}   (docs {url}/docs, metrics {url}/metrics)")
        worker_port = os.environ.get("LOYALTY_WORKER_METRICS_PORT", "9101")
        say(f"{'Points worker':<16}metrics on http://127.0.0.1:{worker_port}/metrics")
        say(f"{'Logs':<16}{home / 'logs'}")
        if demo:
            from services.demo.report import play_demo

            say("")
            play_demo(settings, dsn, bootstrap, urls, children_alive=lambda: check(children))
        say("")
        say("Running. Press Ctrl-C to stop.")
        while True:
            check(children)
            time.sleep(1)
    except Shutdown:
        say("\nStopping …")
        return 0
    except ChildDied as died:
        say(f"\n{died}")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for child in reversed(children):
            stop_child(child)
        if broker:
            broker.stop()
        if postgres:
            postgres.stop()
        with contextlib.suppress(OSError):
            settings.endpoints_file().unlink()
        say("Stopped.")


class ChildDied(Exception):
    pass


def spawn(name: str, args: list[str], env: dict[str, str], home: Path) -> Child:
    log_path = home / "logs" / f"{name}.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", *args],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the supervisor, which stops children in order
        )
    return Child(name, process, log_path)


def check(children: list[Child]) -> None:
    for child in children:
        if child.process.poll() is not None:
            tail = child.log_path.read_text(errors="replace").splitlines()[-15:]
            raise ChildDied(
                f"{child.name} exited with code {child.process.returncode}; "
                f"last lines of {child.log_path}:\n  " + "\n  ".join(tail)
            )


def wait_ready(url: str, children: list[Child], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check(children)
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.3)
    raise ChildDied(f"{url} was not ready within {timeout:.0f}s")


def stop_child(child: Child) -> None:
    if child.process.poll() is None:
        child.process.send_signal(signal.SIGTERM)
        try:
            child.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()


def redact(dsn: str) -> str:
    scheme, sep, rest = dsn.partition("://")
    if "@" in rest and ":" in rest.split("@", 1)[0]:
        user = rest.split("@", 1)[0].split(":", 1)[0]
        return f"{scheme}{sep}{user}:***@{rest.split('@', 1)[1]}"
    return dsn


def say(text: str) -> None:
    print(text, flush=True)
