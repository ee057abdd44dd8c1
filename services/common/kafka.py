"""Topics and producers, on aiokafka."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from services.common.settings import ConfigurationError

log = logging.getLogger(__name__)

BILLING_EVENTS = "billing.events.v1"
BILLING_DLQ = "billing.events.dlq.v1"
POINTS_ENTRIES = "points.entries.v1"
REDEMPTION_ORDERS = "redemption.orders.v1"
LOTTERY_DRAWS = "lottery.draws.v1"

# Partition counts for the embedded broker; production sizes them in deploy/.
DEFAULT_PARTITIONS = {
    BILLING_EVENTS: 4,
    BILLING_DLQ: 1,
    POINTS_ENTRIES: 4,
    REDEMPTION_ORDERS: 2,
    LOTTERY_DRAWS: 2,
}


async def ensure_topics(bootstrap: str) -> None:
    """Create the platform's topics that do not exist yet, sized as the embedded defaults."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    await admin.start()
    try:
        await _create_missing(admin, bootstrap, default_topic_specs())
    finally:
        await admin.close()


def make_producer(bootstrap: str) -> AIOKafkaProducer:
    # acks=all: an outbox row is deleted only once every in-sync replica has the event.
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        max_batch_size=512 * 1024,
        request_timeout_ms=30000,
    )


async def broker_reachable(bootstrap: str, within: float = 1.0) -> bool:
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), within)
        except (OSError, TimeoutError, ValueError, KafkaError):
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False


@dataclass(frozen=True)
class TopicSpec:
    """One topic as a topics file (deploy/topics.toml) sizes it."""

    name: str
    partitions: int
    replication_factor: int = 1
    retention_ms: int | None = None  # None: the broker's default; -1: keep forever

    def configs(self) -> dict[str, str]:
        return {} if self.retention_ms is None else {"retention.ms": str(self.retention_ms)}


@dataclass(frozen=True)
class TopicState:
    """What the broker has for a topic after `apply_topic_specs`."""

    spec: TopicSpec
    created: bool
    partitions: int
    retention_ms: int | None


class TopicSetupError(RuntimeError):
    """The broker could not be reached or refused to create a topic."""


def default_topic_specs() -> list[TopicSpec]:
    """The embedded defaults: DEFAULT_PARTITIONS, one replica, the broker's retention."""
    return [TopicSpec(name, count) for name, count in DEFAULT_PARTITIONS.items()]


def load_topic_specs(path: Path) -> list[TopicSpec]:
    """Read a topics file; it must size every platform topic, so a misspelt name cannot slip by."""
    try:
        document = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigurationError(f"cannot read the topics file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path} is not valid TOML: {exc}") from None
    defaults = document.get("defaults", {})
    topics = document.get("topics", {})
    if not isinstance(defaults, dict) or not isinstance(topics, dict):
        raise ConfigurationError(f"{path}: [defaults] and [topics.NAME] must be tables")
    _check_keys(path, "[defaults]", defaults, {"replication_factor", "retention_ms"})
    specs = []
    for name, table in topics.items():
        if not isinstance(table, dict):
            raise ConfigurationError(f"{path}: [topics.{name!r}] must be a table")
        _check_keys(path, f"[topics.{name!r}]", table, {"partitions", "replication_factor", "retention_ms"})
        merged = {**defaults, **table}
        if "partitions" not in merged:
            raise ConfigurationError(f"{path}: [topics.{name!r}] has no partitions")
        specs.append(
            TopicSpec(
                name,
                _integer(path, name, "partitions", merged["partitions"], minimum=1),
                _integer(path, name, "replication_factor", merged.get("replication_factor", 1), minimum=1),
                None
                if merged.get("retention_ms") is None
                else _integer(path, name, "retention_ms", merged["retention_ms"], minimum=-1),
            )
        )
    missing = sorted(set(DEFAULT_PARTITIONS) - {spec.name for spec in specs})
    if missing:
        raise ConfigurationError(f"{path} does not size the topic(s) {', '.join(missing)}")
    return specs


def _check_keys(path: Path, where: str, table: dict[str, object], allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigurationError(f"{path}: unknown key(s) {', '.join(unknown)} in {where}")


def _integer(path: Path, topic: str, key: str, value: object, minimum: int) -> int:
    if type(value) is not int or value < minimum:
        raise ConfigurationError(f"{path}: {key} of {topic} must be an integer ≥ {minimum}, not {value!r}")
    return value


async def apply_topic_specs(bootstrap: str, specs: list[TopicSpec]) -> list[TopicState]:
    """Create the topics that do not exist yet; report what the broker has for each.

    An existing topic is left as it is: growing its partitions would move members to
    other partitions while their older events still wait in the old ones, breaking
    the per-member order the ledger relies on. Drift is reported for ops to decide.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    try:
        await admin.start()
        missing = await _create_missing(admin, bootstrap, specs)
        partitions = await _partition_counts(admin, [spec.name for spec in specs])
        retention = await _retention_ms(admin, [spec.name for spec in specs])
    except KafkaError as exc:
        raise TopicSetupError(f"cannot set up topics on the broker at {bootstrap}: {exc!r}") from None
    finally:
        await admin.close()
    created = {spec.name for spec in missing}
    return [
        TopicState(spec, spec.name in created, partitions.get(spec.name, 0), retention.get(spec.name))
        for spec in specs
    ]


async def _create_missing(
    admin: AIOKafkaAdminClient, bootstrap: str, specs: list[TopicSpec]
) -> list[TopicSpec]:
    """Create the topics of `specs` the broker does not have; return them."""
    existing = set(await admin.list_topics())
    missing = [spec for spec in specs if spec.name not in existing]
    if missing:
        response = await admin.create_topics(
            [NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=s.configs()) for s in missing]
        )
        refused = [
            f"{entry[0]} (error {entry[1]}{': ' + entry[2] if len(entry) > 2 and entry[2] else ''})"
            for entry in response.topic_errors
            if entry[1] not in (0, TopicAlreadyExistsError.errno)
        ]
        if refused:
            raise TopicSetupError(f"the broker at {bootstrap} refused to create {', '.join(refused)}")
    return missing


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    return {topic["topic"]: len(topic["partitions"]) for topic in await admin.describe_topics(names)}


async def _retention_ms(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    # All configs, not a filter on retention.ms: Tansu cannot decode the filter.
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    found = {}
    for response in await admin.describe_configs(resources):
        for error_code, _message, _type, name, entries in response.resources:
            for entry in entries if error_code == 0 else ():
                if entry[0] == "retention.ms" and entry[1] is not None:
                    found[name] = int(entry[1])
    return found
