"""The worker killed with SIGKILL mid-stream, again and again, still ends exactly right."""

from __future__ import annotations

import json

from services.common.kafka import BILLING_EVENTS
from services.demo.billing_sim import simulate
from tests.integration.conftest import Platform, wait_until
from tests.integration.stream import produce
from tests.integration.test_ingest import assert_ledger_matches
from tests.reference import expected_ledger


def test_worker_killed_mid_stream_and_restarted_ends_exact(platform: Platform) -> None:
    stream = list(simulate(3000, 40000, seed=11, duplicates=0.05, malformed=0.01))
    positions = produce(platform.bootstrap, BILLING_EVENTS, [(r.key, r.value) for r in stream])
    valid = [json.loads(r.value) for r in stream if not r.kind.startswith("malformed:")]
    unique_valid = len({v["event_id"] for v in valid})
    bad_positions = {positions[i] for i, r in enumerate(stream) if r.kind.startswith("malformed:")}

    def applied() -> int:
        return int(platform.fetchval("SELECT count(*) FROM points.billing_events"))

    # Small batches, so that a kill lands between a commit to Postgres and one to Kafka.
    for share in (0.2, 0.5, 0.8):
        worker = platform.service("worker", "points", LOYALTY_INGEST_BATCH_MAX="300").start()
        target = share * unique_valid
        wait_until(lambda t=target: applied() >= t, timeout=90, what=f"{share:.0%} applied")
        worker.kill()
    assert applied() < unique_valid, "the stream finished before the last kill; nothing was tested"

    platform.service("worker", "points", LOYALTY_INGEST_BATCH_MAX="300").start()
    wait_until(
        lambda: (
            applied() == unique_valid
            and platform.fetchval("SELECT count(*) FROM points.dead_letters") == len(bad_positions)
        ),
        timeout=120,
        what="the stream to finish after the restarts",
    )
    assert_ledger_matches(platform, expected_ledger(valid))
    dead = {(r["partition"], r["offset"]) for r in platform.fetch("SELECT * FROM points.dead_letters")}
    assert dead == bad_positions
