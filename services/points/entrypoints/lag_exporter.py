"""`loyalty lag-exporter`: consumer lag per group and partition, read from the broker, for Prometheus.

Lag is what ops watch first on a billing run: how many billing records the points
workers still have to apply. It is read from the broker with kafka-python's admin
client (committed offsets of each consumer group, log end of each partition), so it
is right even when every worker is down, which is exactly when it matters.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType

from kafka import KafkaAdminClient, KafkaConsumer, OffsetSpec, TopicPartition
from prometheus_client import REGISTRY, Counter, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.common.kafka import BILLING_EVENTS
from services.points.settings import PointsSettings

log = logging.getLogger(__name__)

ERRORS = Counter("loyalty_kafka_lag_exporter_errors_total", "Lag readings that failed")


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int
    log_end: int

    @property
    def lag(self) -> int:
        return max(0, self.log_end - self.committed)


class LagReader:
    """Reads the lag of consumer groups from the broker.

    `watch` names topics a group must be reported on even before its first commit
    (the points group on the billing topic): there the whole retained log is lag.
    Every other consumer group is reported on the topics it has committed offsets for.
    """

    def __init__(self, bootstrap: str, watch: dict[str, list[str]]) -> None:
        self.watch = watch
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
        # A consumer of no group: it only reads the last batch of each partition (see _log_ends).
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            request_timeout_ms=15000,
            max_partition_fetch_bytes=64 * 1024,
        )

    def close(self) -> None:
        self.consumer.close()
        self.admin.close()

    def read(self) -> list[PartitionLag]:
        consumer_groups = {
            g["group_id"] for g in self.admin.list_groups() if g.get("protocol_type") in ("consumer", "")
        }
        readings: list[PartitionLag] = []
        for group in sorted(consumer_groups | set(self.watch)):
            committed = {
                tp: meta.offset
                for tp, meta in self.admin.list_group_offsets({group: None}).get(group, {}).items()
                if meta is not None and meta.offset >= 0
            }
            topics = sorted({tp.topic for tp in committed} | set(self.watch.get(group, [])))
            tps = [tp for topic in topics for tp in self._partitions(topic)]
            if not tps:
                continue
            ends = self._log_ends(tps)
            starts = self._offsets(tps, OffsetSpec.EARLIEST)
            readings += [
                PartitionLag(group, tp.topic, tp.partition, committed.get(tp, starts[tp]), ends[tp])
                for tp in tps
            ]
        return readings

    def _partitions(self, topic: str) -> list[TopicPartition]:
        partitions = self.consumer.partitions_for_topic(topic) or set()
        return [TopicPartition(topic, p) for p in sorted(partitions)]

    def _offsets(self, tps: list[TopicPartition], spec: OffsetSpec) -> dict[TopicPartition, int]:
        answer = self.admin.list_partition_offsets({tp: spec for tp in tps})
        return {tp: answer[tp].offset for tp in tps}

    def _log_ends(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The offset the next record of each partition will get.

        Apache Kafka answers ListOffsets(latest) with exactly that. The embedded broker
        (Tansu) answers with the base offset of the last record batch plus one, which
        under-counts by the rest of that batch. Reading the batch at (answer - 1) gives
        its last record, so the end is right on both; on Kafka it changes nothing.
        """
        ends = self._offsets(tps, OffsetSpec.LATEST)
        probe = [tp for tp in tps if ends[tp] > 0]
        if not probe:
            return ends
        self.consumer.assign(probe)
        for tp in probe:
            self.consumer.seek(tp, ends[tp] - 1)
        pending = set(probe)
        deadline = time.monotonic() + 10
        while pending and time.monotonic() < deadline:
            for tp, records in self.consumer.poll(timeout_ms=500).items():
                ends[tp] = max(ends[tp], records[-1].offset + 1)
                pending.discard(tp)
            # A partition whose last batch is all aborted or compacted away has nothing to read.
            pending = {tp for tp in pending if self.consumer.position(tp) < ends[tp]}
        self.consumer.assign([])
        return ends


class LagCollector(Collector):
    """Serves the last reading; a failed reading leaves the previous one and counts an error."""

    def __init__(self) -> None:
        self.readings: list[PartitionLag] = []
        self.last_success = 0.0

    def update(self, readings: list[PartitionLag]) -> None:
        self.readings = readings
        self.last_success = time.time()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        readings = self.readings
        lag = GaugeMetricFamily(
            "loyalty_kafka_consumer_lag",
            "Records a consumer group still has to process, per partition",
            labels=["group", "topic", "partition"],
        )
        committed = GaugeMetricFamily(
            "loyalty_kafka_consumer_committed_offset",
            "Offset a consumer group has committed, per partition",
            labels=["group", "topic", "partition"],
        )
        log_end = GaugeMetricFamily(
            "loyalty_kafka_log_end_offset",
            "Offset the next record of a partition will get",
            labels=["topic", "partition"],
        )
        seen: set[tuple[str, int]] = set()
        for r in readings:
            labels = [r.group, r.topic, str(r.partition)]
            lag.add_metric(labels, r.lag)
            committed.add_metric(labels, r.committed)
            if (r.topic, r.partition) not in seen:
                seen.add((r.topic, r.partition))
                log_end.add_metric([r.topic, str(r.partition)], r.log_end)
        yield lag
        yield committed
        yield log_end
        yield GaugeMetricFamily(
            "loyalty_kafka_lag_exporter_last_success_timestamp_seconds",
            "When the lag was last read from the broker",
            value=self.last_success,
        )


def run_lag_exporter(settings: PointsSettings) -> None:
    bootstrap = settings.resolved_kafka_bootstrap()
    collector = LagCollector()
    REGISTRY.register(collector)
    start_http_server(settings.lag_exporter_port)
    log.info(
        "lag exporter on :%d/metrics, reading %s every %.0fs",
        settings.lag_exporter_port,
        bootstrap,
        settings.lag_exporter_interval,
    )

    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    reader: LagReader | None = None
    while not stopping.is_set():
        try:
            reader = reader or LagReader(bootstrap, {settings.consumer_group: [BILLING_EVENTS]})
            collector.update(reader.read())
        except Exception as exc:  # the broker may be down or electing: report and try again
            ERRORS.inc()
            log.warning("could not read consumer lag from %s: %s", bootstrap, exc)
            if reader is not None:
                reader.close()
                reader = None
        stopping.wait(settings.lag_exporter_interval)
    if reader is not None:
        reader.close()
