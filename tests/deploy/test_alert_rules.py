"""deploy/prometheus: the scrape config and alert rules load, and every alert fires when it should.

promtool does the checking (`check config`, `check rules`, `test rules`); it is fetched by
deploy/prometheus/fetch-promtool when it is not installed, and the test fails if it cannot be.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.deploy.monitoring_config import (
    DASHBOARDS,
    PROMETHEUS,
    RULE_TESTS,
    RULES,
    alerting_rules,
    all_expressions,
    as_promql,
    dashboard,
    dashboard_queries,
    load_yaml,
    recorded_names,
    referenced_names,
    run_promtool,
)

SEVERITIES = {"critical", "warning", "info"}


def test_prometheus_config_loads_with_its_rule_files(tmp_path: Path) -> None:
    # The config names the rules where compose mounts them; point it at the repository's copy.
    config = (PROMETHEUS / "prometheus.yml").read_text()
    assert "/etc/prometheus/rules/*.yml" in config
    local = tmp_path / "prometheus.yml"
    local.write_text(config.replace("/etc/prometheus/rules", str(PROMETHEUS / "rules")))

    checked = run_promtool("check", "config", str(local))

    assert checked.returncode == 0, checked.stdout + checked.stderr
    for rule_file in RULES:
        assert f"{rule_file}" in checked.stdout + checked.stderr, f"{rule_file.name} was not loaded"


def test_scrape_config_covers_every_compose_service() -> None:
    jobs = {job["job_name"]: job for job in load_yaml(PROMETHEUS / "prometheus.yml")["scrape_configs"]}

    assert jobs["points-worker"]["dns_sd_configs"] == [
        {"names": ["points-worker"], "type": "A", "port": 9101, "refresh_interval": "30s"}
    ]
    static = {
        name: [t for c in job.get("static_configs", []) for t in c["targets"]] for name, job in jobs.items()
    }
    assert static["points-api"] == ["points-api:8001"]
    assert static["redemption-api"] == ["redemption-api:8002"]
    assert static["lottery-api"] == ["lottery-api:8003"]
    assert static["lag-exporter"] == ["lag-exporter:9102"]
    assert static["prometheus"] == ["localhost:9090"]


def test_alerts_name_only_jobs_that_are_scraped() -> None:
    jobs = {job["job_name"] for job in load_yaml(PROMETHEUS / "prometheus.yml")["scrape_configs"]}
    for rule in alerting_rules():
        for matcher in re.findall(r'job=~?"([^"]+)"', rule["expr"]):
            named = set(matcher.split("|"))
            assert named <= jobs, f"{rule['alert']} names unknown jobs {named - jobs}"


def test_rules_are_valid() -> None:
    checked = run_promtool("check", "rules", *map(str, RULES))

    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_alert_fires_in_the_promtool_tests_and_they_pass() -> None:
    tested = run_promtool("test", "rules", *map(str, RULE_TESTS))

    assert tested.returncode == 0, tested.stdout + tested.stderr
    shown_firing, shown_quiet = set(), set()
    for path in RULE_TESTS:
        for case in load_yaml(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (shown_firing if check.get("exp_alerts") else shown_quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in alerting_rules()}
    assert alerts - shown_firing == set(), "alerts never shown firing"
    assert alerts - shown_quiet == set(), "alerts never shown quiet"


def test_every_alert_tells_ops_how_bad_and_what_to_do() -> None:
    for rule in alerting_rules():
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        assert rule.get("for"), f"{name} would fire on a single evaluation"
        annotations = rule.get("annotations", {})
        assert annotations.get("summary"), name
        assert len(annotations.get("description", "")) > 80, f"{name}: say what it means and what to do"


def test_recording_rules_that_are_read_are_defined() -> None:
    recorded = recorded_names()
    for expr in all_expressions():
        for name in referenced_names(expr):
            if ":" in name:
                assert name in recorded, f"{name} is read but no rule records it"


def test_every_dashboard_expression_is_valid_promql(tmp_path: Path) -> None:
    # promtool parses expressions only as rules: check each query as a recording rule.
    exprs = [as_promql(expr) for path in DASHBOARDS for expr in dashboard_queries(dashboard(path))]
    assert exprs
    rule_file = tmp_path / "dashboard-queries.yml"
    rules = [{"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(exprs)]
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}))

    checked = run_promtool("check", "rules", str(rule_file))

    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_names_are_read_from_the_query_not_from_labels_or_strings() -> None:
    expr = (
        'sum by (service) (rate(loyalty_http_request_seconds_count{route!~"loyalty_fake|/metrics"}[5m]))'
        " / on (service) service:loyalty_http_requests:rate5m > 0 and up{job='loyalty_job'} == 0"
    )

    assert referenced_names(expr) == {
        "loyalty_http_request_seconds_count",
        "service:loyalty_http_requests:rate5m",
    }
