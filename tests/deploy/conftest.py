"""The deployment files, read as an ops engineer (or Docker, Compose, Kubernetes) would read them.

No Docker engine or cluster is needed: Compose files are checked against the Compose
Specification schema vendored by check-jsonschema, manifests against the Kubernetes schemas
vendored by kubernetes-validate, Dockerfiles by a small parser of their instructions.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
K8S_DIR = REPO / "deploy" / "k8s"
DOCKER_DIR = REPO / "deploy" / "docker"
SERVICES = ("points", "redemption", "lottery")

# Where Prometheus scrapes (deploy/prometheus/prometheus.yml) and where each process listens.
METRICS_ENDPOINTS = {
    "points-worker": ("LOYALTY_WORKER_METRICS_PORT", 9101),
    "points-api": ("LOYALTY_POINTS_PORT", 8001),
    "redemption-api": ("LOYALTY_REDEMPTION_PORT", 8002),
    "lottery-api": ("LOYALTY_LOTTERY_PORT", 8003),
    "lag-exporter": ("LOYALTY_LAG_EXPORTER_PORT", 9102),
}

# An exact release: 16.10, v3.5.0, 3.11.13-slim-bookworm; never `latest` or a bare major.
PINNED_TAG = re.compile(r"^v?\d+\.\d+(\.\d+)?([-.][A-Za-z0-9.]+)*$")


def project() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def image_tag(image: str) -> tuple[str, str]:
    """`name[:tag][@digest]` → (name, tag); the tag is '' when there is none."""
    name = image.split("@", 1)[0]
    repository, _, tag = name.rpartition(":")
    if not repository or "/" in tag:  # `host:port/name` without a tag
        return name, ""
    return repository, tag


def interpolate(text: str, environment: dict[str, str] | None = None) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `$$`, with an empty environment by default."""
    environment = environment or {}

    def value(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group("name"), match.group("default")
        return environment.get(name) or (default if default is not None else "")

    return re.sub(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}", value, text)


def compose_variables(text: str) -> dict[str, str | None]:
    """Every `${VAR}` / `${VAR:-default}` in a compose file, with its default."""
    found: dict[str, str | None] = {}
    for match in re.finditer(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}", text):
        found[match.group(1)] = match.group(2)
    return found


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


@dataclass(frozen=True)
class Manifest:
    path: Path
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.doc["kind"])

    @property
    def name(self) -> str:
        return str(self.doc["metadata"]["name"])

    def __str__(self) -> str:
        return f"{self.path.name}:{self.kind}/{self.name}"


def load_manifests() -> list[Manifest]:
    manifests = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                manifests.append(Manifest(path, doc))
    return manifests


@pytest.fixture(scope="session")
def manifests() -> list[Manifest]:
    return load_manifests()


def find(manifests: list[Manifest], kind: str, name: str) -> dict[str, Any]:
    matches = [m.doc for m in manifests if m.kind == kind and m.name == name]
    assert len(matches) == 1, f"expected one {kind}/{name} in deploy/k8s, found {len(matches)}"
    return matches[0]


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    arguments: str
    line: int


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Instructions in order: comments and blank lines dropped, `\\` continuations joined."""
    instructions: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, arguments = full.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
    assert not pending, f"{path}: the last instruction ends with a line continuation"
    return instructions
