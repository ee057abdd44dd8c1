"""The alerts and dashboards in deploy/ read only metrics our running services really export.

A renamed metric would otherwise leave an alert silently blind or a panel empty: Prometheus
accepts a query for a name nobody exports and answers it with nothing.
"""

from __future__ import annotations

import httpx

from services.common.embedded import free_port
from tests.deploy.monitoring_config import exported_names, recorded_names, referenced_metrics
from tests.integration.conftest import Platform, wait_until


def scrape(url: str) -> str | None:
    try:
        response = httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return None
    return response.text if response.status_code == 200 else None


def scrape_when_up(url: str) -> str:
    pages: list[str] = []

    def answered() -> bool:
        page = scrape(url)
        if page is not None:
            pages.append(page)
        return page is not None

    wait_until(answered, timeout=30, what=url)
    return pages[-1]


def test_every_metric_read_by_the_alerts_and_dashboards_is_exported(platform: Platform) -> None:
    worker_port, lag_port = free_port(), free_port()
    platform.service("worker", "points", LOYALTY_WORKER_METRICS_PORT=str(worker_port)).start()
    platform.service("lag-exporter", LOYALTY_LAG_EXPORTER_PORT=str(lag_port)).start()
    metrics_urls = {
        "points-api": f"{platform.start_api('points')}/metrics",
        "redemption-api": f"{platform.start_api('redemption')}/metrics",
        "lottery-api": f"{platform.start_api('lottery')}/metrics",
        "points-worker": f"http://127.0.0.1:{worker_port}/metrics",
        "lag-exporter": f"http://127.0.0.1:{lag_port}/metrics",
    }

    exported: set[str] = set()
    for url in metrics_urls.values():
        exported |= exported_names(scrape_when_up(url))

    referenced = referenced_metrics()
    assert len(referenced) > 20, "the rules and dashboards should read most of our metrics"
    missing = sorted(name for name in referenced if ":" not in name and name not in exported)
    assert not missing, "read by the rules or dashboards but exported by no service:\n" + "\n".join(
        f"  {name}  ({', '.join(sorted(referenced[name]))})" for name in missing
    )
    # Recording rules are computed by Prometheus, not scraped: they must be defined instead.
    undefined = sorted(name for name in referenced if ":" in name and name not in recorded_names())
    assert not undefined, f"read but recorded by no rule: {undefined}"
