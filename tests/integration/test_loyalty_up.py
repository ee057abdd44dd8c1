"""`loyalty up` as a new user runs it: embedded Postgres and broker, the demo, a clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from services.common.embedded import free_port
from tests.integration.conftest import REPO


def test_up_plays_the_demo_serves_the_api_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    api_port, metrics_port, redemption_port, lottery_port = free_port(), free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOYALTY_")}
    env.update(
        LOYALTY_HOME=str(tmp_path / "home"),
        LOYALTY_POINTS_PORT=str(api_port),
        LOYALTY_WORKER_METRICS_PORT=str(metrics_port),
        LOYALTY_REDEMPTION_PORT=str(redemption_port),
        LOYALTY_LOTTERY_PORT=str(lottery_port),
    )
    up = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert up.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 150
    try:
        while time.monotonic() < deadline:
            line = up.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if line.startswith("Running. Press Ctrl-C"):
                break
        output = "\n".join(lines)
        assert "Running. Press Ctrl-C" in output, output
        assert "applied      2,500 events exactly once" in output, output
        assert "rejected" in output and "Points liability:" in output, output
        assert f"http://127.0.0.1:{api_port}" in output
        # The redemption part: two premiere seats sold, the third refused, a retry deduplicated.
        assert output.count("premiere") >= 3 and "refused    out_of_stock" in output, output
        assert "cancelled, points back" in output, output
        assert httpx.get(f"http://127.0.0.1:{api_port}/readyz", timeout=5).status_code == 200
        worker_metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        assert 'loyalty_billing_events_total{outcome="applied"} 2500.0' in worker_metrics
    finally:
        up.send_signal(signal.SIGTERM)
        rest, _ = up.communicate(timeout=60)
    assert up.returncode == 0, rest
    assert rest.rstrip().endswith("Stopped.")
    assert not (tmp_path / "home" / "endpoints.json").exists()
    # Nothing it started is left listening.
    assert_refused(f"http://127.0.0.1:{api_port}/healthz")


def assert_refused(url: str) -> None:
    try:
        httpx.get(url, timeout=2)
    except httpx.ConnectError:
        return
    raise AssertionError(f"{url} still answers after the stop")
