"""deploy/topics.toml and `load_topic_specs`: a topics file that is wrong fails before the broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.kafka import DEFAULT_PARTITIONS, TopicSpec, load_topic_specs
from services.common.settings import ConfigurationError
from tests.deploy.conftest import REPO


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topics.toml"
    path.write_text(text)
    return path


def every_topic(partitions: int = 3, extra: str = "") -> str:
    return "".join(f'[topics."{name}"]\npartitions = {partitions}\n{extra}\n' for name in DEFAULT_PARTITIONS)


def test_the_deployed_file_sizes_every_platform_topic() -> None:
    specs = {spec.name: spec for spec in load_topic_specs(REPO / "deploy" / "topics.toml")}
    assert set(specs) == set(DEFAULT_PARTITIONS)
    for spec in specs.values():
        assert spec.partitions >= 1 and spec.replication_factor >= 1
        assert spec.retention_ms is not None and spec.retention_ms >= 24 * 3600 * 1000, spec.name


def test_defaults_apply_unless_a_topic_says_otherwise(tmp_path: Path) -> None:
    text = "[defaults]\nreplication_factor = 3\nretention_ms = 1000\n" + every_topic()
    text = text.replace(
        '[topics."billing.events.dlq.v1"]\n', '[topics."billing.events.dlq.v1"]\nretention_ms = -1\n'
    )
    specs = {spec.name: spec for spec in load_topic_specs(write(tmp_path, text))}
    assert specs["billing.events.v1"] == TopicSpec("billing.events.v1", 3, 3, 1000)
    assert specs["billing.events.dlq.v1"].retention_ms == -1
    assert specs["billing.events.v1"].configs() == {"retention.ms": "1000"}


def test_without_retention_the_broker_default_stands(tmp_path: Path) -> None:
    (spec, *_) = load_topic_specs(write(tmp_path, every_topic()))
    assert spec.retention_ms is None and spec.configs() == {}


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        (every_topic().replace("billing.events.v1", "billing.event.v1", 1), "billing.events.v1"),
        (every_topic(partitions=0), "partitions"),
        (every_topic(extra='retention_ms = "7d"'), "retention_ms"),
        (every_topic(extra="retention = 5"), "unknown key"),
        (every_topic().replace("partitions = 3", "partitions = true", 1), "partitions"),
        ("[defaults]\npartitions = 3\n" + every_topic(), "unknown key"),
        ("[topics\n", "not valid TOML"),
    ],
)
def test_a_wrong_file_is_refused_with_the_reason(tmp_path: Path, text: str, complaint: str) -> None:
    with pytest.raises(ConfigurationError, match=complaint):
        load_topic_specs(write(tmp_path, text))


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_topic_specs(tmp_path / "nope.toml")
