"""docker-compose.yml: valid Compose, and the production shape an ops engineer expects of it."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

import jsonschema
import yaml

from services.common.kafka import BILLING_EVENTS, load_topic_specs
from services.points.settings import PointsSettings
from tests.deploy.conftest import (
    COMPOSE_FILE,
    METRICS_ENDPOINTS,
    PINNED_TAG,
    REPO,
    compose_variables,
    image_tag,
    interpolate,
    project,
)

ONE_SHOT_JOBS = {"topics", "migrate"}


def compose_schema_errors(document: Any) -> list[str]:
    schema = json.loads(
        files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, error.path))}: {error.message}" for error in validator.iter_errors(document)]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment as a mapping, please"
    return {key: interpolate(str(value)) for key, value in env.items()}


def long_running(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if name not in ONE_SHOT_JOBS}


def test_the_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    assert compose_schema_errors(compose) == []


def test_the_schema_check_catches_a_misspelt_key() -> None:
    broken = yaml.safe_load(COMPOSE_FILE.read_text())
    broken["services"]["points-api"]["healtcheck"] = broken["services"]["points-api"].pop("healthcheck")
    assert any("healtcheck" in error for error in compose_schema_errors(broken))


def test_every_service_that_touches_the_database_waits_for_the_migrations(compose: dict[str, Any]) -> None:
    users = [name for name, s in compose["services"].items() if "LOYALTY_DATABASE_URL" in environment(s)]
    assert {"points-worker", "points-api", "redemption-api", "lottery-api"} <= set(users)
    for name in users:
        if name == "migrate":
            continue
        depends = compose["services"][name].get("depends_on", {})
        assert depends.get("migrate") == {"condition": "service_completed_successfully"}, name


def test_every_service_on_the_broker_waits_for_the_topics(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name == "topics" or "LOYALTY_KAFKA_BOOTSTRAP" not in environment(service):
            continue
        assert service["depends_on"].get("topics") == {"condition": "service_completed_successfully"}, name
    # The jobs themselves wait for a broker and a database that answer.
    assert compose["services"]["topics"]["depends_on"]["kafka"] == {"condition": "service_healthy"}
    assert compose["services"]["migrate"]["depends_on"]["postgres"] == {"condition": "service_healthy"}


def test_one_shot_jobs_run_once_and_everything_else_restarts(compose: dict[str, Any]) -> None:
    for name in ONE_SHOT_JOBS:
        assert compose["services"][name].get("restart") == "no", name
    for name, service in long_running(compose).items():
        assert service.get("restart") in {"unless-stopped", "always"}, name


def test_every_long_running_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, service in long_running(compose).items():
        check = service.get("healthcheck")
        assert check and not check.get("disable") and check.get("test"), f"{name} has no healthcheck"


def test_our_services_are_probed_on_their_own_port(compose: dict[str, Any]) -> None:
    """The healthcheck URL, the port the process listens on and the port Prometheus scrapes agree."""
    for name, (variable, port) in METRICS_ENDPOINTS.items():
        service = compose["services"][name]
        env = environment(service)
        assert env.get(variable) == str(port), f"{name} should listen on {port} ({variable})"
        assert env.get("LOYALTY_HEALTHCHECK_URL") == f"http://127.0.0.1:{port}/healthz", name
        assert "LOYALTY_HEALTHCHECK_URL" in " ".join(service["healthcheck"]["test"]), name


def test_prometheus_scrapes_exactly_the_ports_the_services_listen_on(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    scraped = set()
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            scraped.update(static["targets"])
        for sd in job.get("dns_sd_configs", []):
            scraped.update(f"{host}:{sd['port']}" for host in sd["names"])
    scraped.discard("localhost:9090")  # Prometheus itself
    assert scraped == {f"{name}:{port}" for name, (_, port) in METRICS_ENDPOINTS.items()}
    assert set(METRICS_ENDPOINTS) <= set(compose["services"])


def test_the_worker_scales_within_the_partitions_of_the_billing_topic(compose: dict[str, Any]) -> None:
    worker = compose["services"]["points-worker"]
    replicas = worker["deploy"]["replicas"]
    partitions = {s.name: s.partitions for s in load_topic_specs(REPO / "deploy" / "topics.toml")}
    # Each replica is LOYALTY_INGEST_CONSUMERS members of the group; a member beyond the
    # partitions would sit idle.
    consumers = int(environment(worker).get("LOYALTY_INGEST_CONSUMERS", PointsSettings().ingest_consumers))
    assert 2 <= replicas * consumers <= partitions[BILLING_EVENTS]
    # Replicas are interchangeable: nothing pins one container (a name or a host port).
    assert "container_name" not in worker and "ports" not in worker
    # They share the partitions through one consumer group: the default, loyalty-points.
    assert "LOYALTY_CONSUMER_GROUP" not in environment(worker)


def test_the_topics_job_reads_the_topics_file_it_mounts(compose: dict[str, Any]) -> None:
    job = compose["services"]["topics"]
    command = job["command"]
    assert command[:2] == ["topics", "--config"]
    mounts = dict(volume.rsplit(":", 1)[0].split(":", 1) for volume in job["volumes"])
    assert mounts == {"./deploy/topics.toml": command[2]}
    assert compose["services"]["migrate"]["command"] == ["migrate"]


def test_services_run_the_commands_of_the_contract(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["points-worker"]["command"] == ["worker", "points"]
    assert services["lag-exporter"]["command"] == ["lag-exporter"]
    for name in ("points", "redemption", "lottery"):
        assert services[f"{name}-api"]["command"] == ["api", name]
    for name in ("redemption-api", "lottery-api"):
        assert environment(services[name])["LOYALTY_POINTS_URL"] == "http://points-api:8001"


def test_images_are_pinned_and_ours_are_built_from_the_dockerfiles(compose: dict[str, Any]) -> None:
    version = project()["project"]["version"]
    for name, service in compose["services"].items():
        repository, tag = image_tag(service["image"])
        assert tag and tag != "latest" and PINNED_TAG.match(tag), f"{name}: {service['image']} is not pinned"
        if repository.startswith("loyalty/"):
            assert tag == version, f"{name}: our images carry the project version {version}"
            dockerfile = REPO / service["build"]["context"] / service["build"]["dockerfile"]
            assert (
                dockerfile == REPO / "deploy" / "docker" / f"{repository.removeprefix('loyalty/')}.Dockerfile"
            )
            assert dockerfile.is_file(), name
        else:
            assert "build" not in service, name


def test_kafka_runs_in_kraft_mode_for_the_compose_network(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert image_tag(kafka["image"])[0] == "apache/kafka"
    env = environment(kafka)
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "INTERNAL://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    for service in compose["services"].values():
        if "LOYALTY_KAFKA_BOOTSTRAP" in environment(service):
            assert environment(service)["LOYALTY_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert image_tag(compose["services"]["postgres"]["image"])[1].startswith("16.")


def test_state_lives_in_volumes(compose: dict[str, Any]) -> None:
    for name, path in (
        ("kafka", "/var/lib/kafka/data"),
        ("postgres", "/var/lib/postgresql/data"),
        ("prometheus", "/prometheus"),
        ("grafana", "/var/lib/grafana"),
    ):
        volume = next(v for v in compose["services"][name]["volumes"] if v.endswith(f":{path}"))
        assert volume.split(":", 1)[0] in compose["volumes"], name


def test_prometheus_and_grafana_mount_the_monitoring_files(compose: dict[str, Any]) -> None:
    def mounts(name: str) -> dict[str, str]:
        found = {}
        for volume in compose["services"][name]["volumes"]:
            source, target = volume.split(":")[:2]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name} mounts {source}, which is not in the repository"
                found[source] = target
        return found

    assert mounts("prometheus") == {
        "./deploy/prometheus/prometheus.yml": "/etc/prometheus/prometheus.yml",
        "./deploy/prometheus/rules": "/etc/prometheus/rules",
    }
    grafana = mounts("grafana")
    assert grafana["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    # Grafana finds the dashboards where its provisioning file says they are.
    providers = [
        provider
        for path in sorted((REPO / "deploy" / "grafana" / "provisioning" / "dashboards").glob("*.y*ml"))
        for provider in yaml.safe_load(path.read_text()).get("providers", [])
    ]
    assert providers, "no dashboard provider in deploy/grafana/provisioning/dashboards"
    assert {p["options"]["path"] for p in providers} == {grafana["./deploy/grafana/dashboards"]}


def test_secrets_come_from_the_environment_with_the_documented_dev_defaults(compose: dict[str, Any]) -> None:
    example = {}
    for line in (REPO / "deploy" / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            example[key.strip()] = value.strip()
    variables = compose_variables(COMPOSE_FILE.read_text())
    assert {"POSTGRES_PASSWORD", "LOYALTY_JWT_SECRET"} <= set(variables)
    for name, default in variables.items():
        assert name in example, f"${{{name}}} is not documented in deploy/.env.example"
        assert default == example[name], f"{name}: compose's default and deploy/.env.example differ"
    env = environment(compose["services"]["points-api"])
    assert len(env["LOYALTY_JWT_SECRET"]) >= 32  # the services refuse a shorter key
    password = environment(compose["services"]["postgres"])["POSTGRES_PASSWORD"]
    assert env["LOYALTY_DATABASE_URL"] == f"postgresql://loyalty:{password}@postgres:5432/loyalty"
    assert ".env" in (REPO / ".gitignore").read_text().splitlines()
