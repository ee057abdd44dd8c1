"""deploy/grafana: the provisioned dashboards load and every panel queries the provisioned Prometheus."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.deploy.monitoring_config import (
    DASHBOARDS,
    DATASOURCES,
    GRAFANA,
    dashboard,
    load_yaml,
    panels,
)


def provisioned_datasource_uids() -> set[str]:
    return {source["uid"] for source in load_yaml(DATASOURCES)["datasources"]}


def test_both_dashboards_are_there() -> None:
    assert {path.name for path in DASHBOARDS} >= {"ops-overview.json", "campaign-day.json"}


def test_the_datasource_is_the_compose_prometheus() -> None:
    (source,) = load_yaml(DATASOURCES)["datasources"]

    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"


def test_the_dashboard_provider_reads_where_compose_mounts_the_dashboards() -> None:
    (provider,) = load_yaml(GRAFANA / "provisioning" / "dashboards" / "dashboards.yml")["providers"]

    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_every_panel_queries_a_provisioned_datasource(path: Path) -> None:
    board = dashboard(path)
    uids = provisioned_datasource_uids()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36

    queried = 0
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        title = panel.get("title")
        assert panel["datasource"]["uid"] in uids, f"{title}: unknown datasource {panel['datasource']}"
        assert panel["targets"], f"{title} has no query"
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"{title}: target {target.get('refId')} has no expr"
            assert target.get("datasource", panel["datasource"])["uid"] in uids, title
            queried += 1
    assert queried > 10
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] in uids, variable["name"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_panels_have_unique_ids_and_do_not_overlap(path: Path) -> None:
    board = dashboard(path)
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids))

    taken: dict[tuple[int, int], str] = {}
    for panel in panels(board):
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_variables_used_by_queries_are_defined(path: Path) -> None:
    board = dashboard(path)
    defined = {variable["name"] for variable in board["templating"]["list"]}
    for panel in panels(board):
        for target in panel.get("targets", []):
            for name in _variables(target["expr"]):
                assert name in defined, f"{panel['title']} uses ${name}, which the dashboard does not define"


def _variables(expr: str) -> set[str]:
    return {name for name in re.findall(r"\$\{?(\w+)", expr) if not name.startswith("__")}
