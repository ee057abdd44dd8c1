"""`loyalty topics --config deploy/topics.toml` against the real broker: what the compose and
Kubernetes topics jobs run before any service starts."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from services.common.kafka import BILLING_EVENTS, load_topic_specs
from tests.integration.conftest import REPO, Platform

TOPICS_FILE = REPO / "deploy" / "topics.toml"


def describe(bootstrap: str, names: list[str]) -> dict[str, tuple[int, str | None]]:
    """Partitions and retention.ms of each topic, as the broker reports them."""

    async def query() -> dict[str, tuple[int, str | None]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            partitions = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
            retention: dict[str, str | None] = {}
            configs = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
            for response in await admin.describe_configs(configs):
                for _code, _message, _type, name, entries in response.resources:
                    retention[name] = next((e[1] for e in entries if e[0] == "retention.ms"), None)
            return {name: (partitions.get(name, 0), retention.get(name)) for name in names}
        finally:
            await admin.close()

    return asyncio.run(query())


def topic_names(bootstrap: str) -> set[str]:
    async def query() -> set[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()

    return asyncio.run(query())


def test_topics_are_created_with_the_configured_partitions_and_retention(platform: Platform) -> None:
    specs = load_topic_specs(TOPICS_FILE)
    first = platform.cli("topics", "--config", str(TOPICS_FILE))
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("created") == len(specs), first.stdout

    described = describe(platform.bootstrap, [spec.name for spec in specs])
    assert described == {spec.name: (spec.partitions, str(spec.retention_ms)) for spec in specs}
    assert described[BILLING_EVENTS][0] == 12

    # The job runs on every deploy: the second time it changes nothing and says so.
    again = platform.cli("topics", "--config", str(TOPICS_FILE))
    assert again.returncode == 0, again.stderr
    assert "created" not in again.stdout and again.stdout.count("exists") == len(specs)
    assert "left as it is" not in again.stdout
    assert describe(platform.bootstrap, [spec.name for spec in specs]) == described


def test_an_existing_topic_is_reported_not_resized(platform: Platform) -> None:
    """A billing topic created earlier by the embedded defaults (4 partitions) keeps its partitions."""
    defaults = platform.cli("topics")
    assert defaults.returncode == 0, defaults.stderr
    result = platform.cli("topics", "--config", str(TOPICS_FILE))
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith(BILLING_EVENTS + " ")]
    assert "exists" in line and "partitions=4 (configured 12: left as it is)" in line
    assert describe(platform.bootstrap, [BILLING_EVENTS])[BILLING_EVENTS][0] == 4


def test_a_topics_file_missing_a_topic_fails_before_touching_the_broker(
    platform: Platform, tmp_path: Path
) -> None:
    partial = tmp_path / "topics.toml"
    partial.write_text('[topics."billing.events.v1"]\npartitions = 12\n')
    result = platform.cli("topics", "--config", str(partial))
    assert result.returncode == 2
    assert result.stderr.strip().startswith("loyalty: ") and "points.entries.v1" in result.stderr
    assert topic_names(platform.bootstrap) == set()
