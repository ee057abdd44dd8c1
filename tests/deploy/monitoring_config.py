"""The Prometheus rules and Grafana dashboards in deploy/, read the way the tests need them.

Also obtains promtool: from PATH, from .venv/tools/, or by deploy/prometheus/fetch-promtool,
which extracts it from Debian's `prometheus` package.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy" / "prometheus"
RULES = sorted((PROMETHEUS / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_MENTIONED_METRIC = re.compile(r"\bloyalty_[a-z0-9_]+[a-z0-9]\b")
# Grafana's own variables; values that keep every expression valid PromQL.
_GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}


@functools.cache
def promtool() -> str:
    """Path of a promtool binary; fails the test (never skips it) if none can be had."""
    fetch = PROMETHEUS / "fetch-promtool"
    try:
        done = subprocess.run([str(fetch)], capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"could not run {fetch}: {exc}", pytrace=False)
    path = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode != 0 or not path or not shutil.which(path):
        pytest.fail(
            f"promtool is needed to check deploy/prometheus and {fetch.name} could not obtain it "
            f"(exit {done.returncode}):\n{done.stderr}",
            pytrace=False,
        )
    return path


def run_promtool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rules() -> Iterator[dict[str, Any]]:
    """Every rule (alerting and recording) of every file in deploy/prometheus/rules."""
    for path in RULES:
        for group in load_yaml(path)["groups"]:
            yield from group["rules"]


def alerting_rules() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def dashboard(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those folded inside collapsed rows."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(board: dict[str, Any]) -> Iterator[str]:
    """Every PromQL expression of a dashboard: panel targets and template variable queries."""
    for panel in panels(board):
        for target in panel.get("targets", []):
            yield target.get("expr", "")
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable.get("query")
            yield query.get("query", "") if isinstance(query, dict) else str(query or "")


def as_promql(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced, so promtool can parse it."""
    for variable, value in _GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    label_values = re.fullmatch(r"label_values\((.+),\s*\w+\)", expr.strip())
    if label_values:
        return label_values.group(1)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def all_expressions() -> list[str]:
    exprs = [str(rule["expr"]) for rule in rules()]
    for path in DASHBOARDS:
        exprs.extend(dashboard_queries(dashboard(path)))
    return exprs


def referenced_names(expr: str) -> set[str]:
    """Metric and recording-rule names an expression reads (label names and values left out)."""
    names = set()
    for name in _IDENTIFIER.findall(_STRING.sub('""', expr)):
        if ":" in name or name.startswith("loyalty_"):
            names.add(name)
    return names


def referenced_metrics() -> dict[str, set[str]]:
    """Every `loyalty_*` name the rules and dashboards read, or tell ops to look at, and where."""
    where: dict[str, set[str]] = {}

    def note(names: set[str], place: str) -> None:
        for name in names:
            where.setdefault(name, set()).add(place)

    for rule in rules():
        place = rule.get("alert") or rule["record"]
        note(referenced_names(str(rule["expr"])), f"rule {place}")
        for text in rule.get("annotations", {}).values():
            note(set(_MENTIONED_METRIC.findall(text)), f"annotation of {place}")
    for path in DASHBOARDS:
        for expr in dashboard_queries(dashboard(path)):
            note(referenced_names(expr), path.name)
    return where


def exported_names(exposition: str) -> set[str]:
    """Names a /metrics page exports, including labelled metrics that have no sample yet.

    prometheus_client prints HELP and TYPE for every registered metric; a histogram's series
    are NAME_bucket, NAME_sum and NAME_count, a counter's NAME_total.
    """
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.add(name)
            if kind == "counter" and not name.endswith("_total"):
                names.add(f"{name}_total")
            elif kind in ("histogram", "summary"):
                names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names
