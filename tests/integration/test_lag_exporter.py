"""The lag exporter reports the true lag, per group and partition, read from the real broker."""

from __future__ import annotations

from collections import Counter

import httpx
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata
from prometheus_client.parser import text_string_to_metric_families

from services.common.embedded import free_port
from services.common.kafka import BILLING_EVENTS
from services.demo.billing_sim import simulate
from tests.integration.conftest import Platform, wait_until
from tests.integration.stream import produce

Lag = dict[tuple[str, str, int], float]


def scrape(url: str) -> tuple[Lag, dict[tuple[str, int], float], float]:
    """(lag by group/topic/partition, log end by topic/partition, last success) from /metrics."""
    lag: Lag = {}
    ends: dict[tuple[str, int], float] = {}
    last_success = 0.0
    for family in text_string_to_metric_families(httpx.get(url, timeout=5).text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "loyalty_kafka_consumer_lag":
                lag[(labels["group"], labels["topic"], int(labels["partition"]))] = sample.value
            elif sample.name == "loyalty_kafka_log_end_offset":
                ends[(labels["topic"], int(labels["partition"]))] = sample.value
            elif sample.name == "loyalty_kafka_lag_exporter_last_success_timestamp_seconds":
                last_success = sample.value
    return lag, ends, last_success


def commit(bootstrap: str, group: str, offsets: dict[int, int]) -> None:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        consumer.commit(
            {TopicPartition(BILLING_EVENTS, p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()}
        )
    finally:
        consumer.close()


def start_exporter(platform: Platform) -> str:
    port = free_port()
    platform.service(
        "lag-exporter", LOYALTY_LAG_EXPORTER_PORT=str(port), LOYALTY_LAG_EXPORTER_INTERVAL="0.5"
    ).start()
    url = f"http://127.0.0.1:{port}/metrics"

    def up() -> bool:
        try:
            return scrape(url)[2] > 0
        except httpx.HTTPError:
            return False

    wait_until(up, timeout=30, what="the lag exporter's first reading")
    return url


def test_lag_per_group_and_partition_is_what_is_left_to_read(platform: Platform) -> None:
    stream = list(simulate(500, 3000, seed=5))
    positions = produce(platform.bootstrap, BILLING_EVENTS, [(r.key, r.value) for r in stream])
    end = {p: n for p, n in Counter(p for p, _ in positions).items()}
    assert len(end) > 1 and all(n > 1 for n in end.values()), "records must spread over partitions"
    # A second group that has read part of each partition: its lag is the rest.
    read_so_far = {p: n // 3 for p, n in end.items()}
    commit(platform.bootstrap, "ops-audit", read_so_far)

    url = start_exporter(platform)
    wait_until(
        lambda: scrape(url)[1] == {(BILLING_EVENTS, p): n for p, n in end.items()},
        timeout=15,
        what="log end offsets equal to what was produced",
    )
    lag, _, _ = scrape(url)
    for p, n in end.items():
        # The points group has committed nothing yet: the whole log is its lag.
        assert lag[("loyalty-points", BILLING_EVENTS, p)] == n
        assert lag[("ops-audit", BILLING_EVENTS, p)] == n - read_so_far[p]


def test_lag_falls_to_zero_once_the_worker_has_applied_everything(platform: Platform) -> None:
    url = start_exporter(platform)
    stream = list(simulate(500, 4000, seed=6))
    produce(platform.bootstrap, BILLING_EVENTS, [(r.key, r.value) for r in stream])

    def points_lag() -> float:
        lag = scrape(url)[0]
        return sum(v for (g, t, _), v in lag.items() if g == "loyalty-points" and t == BILLING_EVENTS)

    wait_until(lambda: points_lag() == len(stream), timeout=15, what="the whole stream shown as lag")
    platform.service("worker", "points").start()
    wait_until(lambda: points_lag() == 0, timeout=90, what="lag to fall to zero")
    assert platform.fetchval("SELECT count(*) FROM points.billing_events") == len(stream)


def test_a_broker_that_goes_away_counts_errors_and_keeps_serving(platform: Platform) -> None:
    port = free_port()
    platform.service(
        "lag-exporter",
        LOYALTY_LAG_EXPORTER_PORT=str(port),
        LOYALTY_LAG_EXPORTER_INTERVAL="0.5",
        LOYALTY_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
    ).start()
    url = f"http://127.0.0.1:{port}/metrics"

    def errors() -> float:
        try:
            text = httpx.get(url, timeout=5).text
        except httpx.HTTPError:
            return 0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "loyalty_kafka_lag_exporter_errors_total":
                    return sample.value
        return 0

    wait_until(lambda: errors() >= 1, timeout=60, what="an error counted for the missing broker")
    assert scrape(url)[2] == 0, "no reading succeeded, so there is no time of a last success"
