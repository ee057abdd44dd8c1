"""deploy/k8s: valid Kubernetes objects, and the production shape an ops engineer expects of them."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from services.common.kafka import BILLING_EVENTS, load_topic_specs
from services.points.settings import PointsSettings
from tests.deploy.conftest import (
    K8S_DIR,
    METRICS_ENDPOINTS,
    PINNED_TAG,
    Manifest,
    find,
    image_tag,
    load_manifests,
    project,
)

# The oldest Kubernetes we claim and the newest whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())
WORKLOADS = {"Deployment", "StatefulSet", "Job"}
APIS = ("points", "redemption", "lottery")


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def containers(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = pod_spec(doc)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def workloads(manifests: list[Manifest]) -> list[Manifest]:
    return [m for m in manifests if m.kind in WORKLOADS]


def config_map(manifests: list[Manifest], name: str) -> dict[str, str]:
    data: dict[str, str] = find(manifests, "ConfigMap", name)["data"]
    return data


def topics(manifests: list[Manifest], tmp_path: Path) -> dict[str, int]:
    path = tmp_path / "topics.toml"
    path.write_text(config_map(manifests, "loyalty-topics")["topics.toml"])
    return {spec.name: spec.partitions for spec in load_topic_specs(path)}


def env_names(container: dict[str, Any]) -> set[str]:
    return {variable["name"] for variable in container.get("env", [])}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("manifest", load_manifests(), ids=str)
def test_every_manifest_is_a_valid_kubernetes_object(manifest: Manifest, version: str) -> None:
    kubernetes_validate.validate(manifest.doc, version, strict=True)


def test_the_validation_catches_a_misspelt_field(manifests: list[Manifest]) -> None:
    broken = copy.deepcopy(find(manifests, "Deployment", "points-api"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pth"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    assert sorted(listed) == sorted(p.name for p in K8S_DIR.glob("*.yaml") if p.name != "kustomization.yaml")
    assert listed[0] == "namespace.yaml"
    assert kustomization["namespace"] == "loyalty"


def test_everything_lives_in_the_loyalty_namespace(manifests: list[Manifest]) -> None:
    for manifest in manifests:
        if manifest.kind != "Namespace":
            assert manifest.doc["metadata"].get("namespace") == "loyalty", str(manifest)


def test_every_container_runs_as_non_root_without_privileges(manifests: list[Manifest]) -> None:
    for manifest in workloads(manifests):
        security = pod_spec(manifest.doc)["securityContext"]
        assert security["runAsNonRoot"] is True, str(manifest)
        assert security.get("runAsUser", 0) > 0, str(manifest)
        assert security["seccompProfile"]["type"] == "RuntimeDefault", str(manifest)
        for container in containers(manifest.doc):
            context = container["securityContext"]
            where = f"{manifest}/{container['name']}"
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert context.get("runAsUser", 1) != 0 and context.get("privileged") is not True, where


def test_every_container_has_requests_and_limits(manifests: list[Manifest]) -> None:
    for manifest in workloads(manifests):
        for container in containers(manifest.doc):
            resources = container["resources"]
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[bound]), f"{manifest}/{container['name']}: {bound}"


def test_images_are_pinned(manifests: list[Manifest]) -> None:
    version = project()["project"]["version"]
    for manifest in workloads(manifests):
        for container in containers(manifest.doc):
            repository, tag = image_tag(container["image"])
            assert tag and PINNED_TAG.match(tag), f"{manifest}: {container['image']} is not pinned"
            if repository.startswith("loyalty/"):
                assert tag == version, f"{manifest}: our images carry the project version {version}"


@pytest.mark.parametrize("name", APIS)
def test_each_api_is_probed_served_and_autoscaled(manifests: list[Manifest], name: str) -> None:
    deployment = find(manifests, "Deployment", f"{name}-api")
    (container,) = pod_spec(deployment)["containers"]
    assert container["args"] == ["api", name]
    (port,) = container["ports"]
    assert (
        str(port["containerPort"]) == config_map(manifests, "loyalty-config")[f"LOYALTY_{name.upper()}_PORT"]
    )
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}

    service = find(manifests, "Service", f"{name}-api")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]

    hpa = find(manifests, "HorizontalPodAutoscaler", f"{name}-api")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": f"{name}-api",
    }
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]


def test_long_running_containers_have_liveness_and_readiness_probes(manifests: list[Manifest]) -> None:
    for manifest in manifests:
        if manifest.kind in {"Deployment", "StatefulSet"}:
            for container in pod_spec(manifest.doc)["containers"]:
                assert "livenessProbe" in container and "readinessProbe" in container, str(manifest)
                if manifest.kind == "Deployment":
                    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", str(manifest)


def test_the_worker_replicas_stay_within_the_billing_partitions(
    manifests: list[Manifest], tmp_path: Path
) -> None:
    worker = find(manifests, "Deployment", "points-worker")
    # Each replica is LOYALTY_INGEST_CONSUMERS members of the group (the default here).
    members = worker["spec"]["replicas"] * PointsSettings().ingest_consumers
    assert 2 <= members <= topics(manifests, tmp_path)[BILLING_EVENTS]
    assert not any(
        m.kind == "HorizontalPodAutoscaler" and m.doc["spec"]["scaleTargetRef"]["name"] == "points-worker"
        for m in manifests
    ), "a CPU autoscaler could grow the worker past the partitions"
    assert pod_spec(worker)["containers"][0]["args"] == ["worker", "points"]


def test_pods_that_touch_the_database_migrate_first(manifests: list[Manifest]) -> None:
    users = [
        m
        for m in manifests
        if m.kind == "Deployment"
        and any("LOYALTY_DATABASE_URL" in env_names(c) for c in pod_spec(m.doc)["containers"])
    ]
    assert {m.name for m in users} == {"points-worker", "points-api", "redemption-api", "lottery-api"}
    for manifest in users:
        init = pod_spec(manifest.doc).get("initContainers", [])
        assert init and init[0]["args"] == ["migrate"], str(manifest)
    assert pod_spec(find(manifests, "Job", "migrate"))["containers"][0]["args"] == ["migrate"]


def test_the_topics_job_and_the_worker_read_the_topics_config_map(manifests: list[Manifest]) -> None:
    job = find(manifests, "Job", "topics")
    worker = find(manifests, "Deployment", "points-worker")
    for doc, container in (
        (job, pod_spec(job)["containers"][0]),
        (worker, pod_spec(worker)["initContainers"][1]),
    ):
        assert container["args"][:2] == ["topics", "--config"]
        config = Path(container["args"][2])
        (mount,) = [m for m in container["volumeMounts"] if Path(m["mountPath"]) == config.parent]
        (volume,) = [v for v in pod_spec(doc)["volumes"] if v["name"] == mount["name"]]
        assert volume["configMap"]["name"] == "loyalty-topics"
        assert config.name in config_map(manifests, "loyalty-topics")


def test_metrics_ports_match_compose_and_the_scrape_annotations(
    manifests: list[Manifest], compose: dict[str, Any]
) -> None:
    settings = config_map(manifests, "loyalty-config")
    for name, (variable, port) in METRICS_ENDPOINTS.items():
        assert settings[variable] == str(port), variable
        deployment = find(manifests, "Deployment", name)
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(port), name
        container = pod_spec(deployment)["containers"][0]
        assert [p["containerPort"] for p in container["ports"]] == [port], name
        assert str(compose["services"][name]["environment"][variable]) == str(port), name


def test_every_referenced_secret_and_config_key_exists(manifests: list[Manifest]) -> None:
    available = {
        (m.kind, m.name): set(m.doc.get("data", {})) | set(m.doc.get("stringData", {}))
        for m in manifests
        if m.kind in {"Secret", "ConfigMap"}
    }
    for manifest in workloads(manifests):
        for container in containers(manifest.doc):
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef") or source["secretRef"]
                kind = "ConfigMap" if "configMapRef" in source else "Secret"
                assert (kind, ref["name"]) in available, str(manifest)
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in available[("Secret", ref["name"])], f"{manifest}: {ref}"


def test_the_secret_holds_marked_placeholders_that_fit_together(manifests: list[Manifest]) -> None:
    secret = find(manifests, "Secret", "loyalty-secrets")["stringData"]
    assert set(secret) == {"LOYALTY_JWT_SECRET", "LOYALTY_DATABASE_URL", "POSTGRES_PASSWORD"}
    assert all("REPLACE-ME" in value for value in secret.values()), "placeholders must be obvious"
    assert len(secret["LOYALTY_JWT_SECRET"]) >= 32  # the services refuse a shorter key
    assert f":{secret['POSTGRES_PASSWORD']}@postgres:5432/" in secret["LOYALTY_DATABASE_URL"]


def test_kafka_and_postgres_keep_their_data_on_volumes(manifests: list[Manifest]) -> None:
    for name, path in (("kafka", "/var/lib/kafka/data"), ("postgres", "/var/lib/postgresql/data")):
        statefulset = find(manifests, "StatefulSet", name)
        (claim,) = statefulset["spec"]["volumeClaimTemplates"]
        mounts = {m["mountPath"]: m["name"] for m in pod_spec(statefulset)["containers"][0]["volumeMounts"]}
        assert mounts[path] == claim["metadata"]["name"]
    kafka = {
        e["name"]: e["value"]
        for e in pod_spec(find(manifests, "StatefulSet", "kafka"))["containers"][0]["env"]
    }
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert pod_spec(find(manifests, "StatefulSet", "kafka"))["enableServiceLinks"] is False
    assert config_map(manifests, "loyalty-config")["LOYALTY_KAFKA_BOOTSTRAP"] == "kafka:9092"
