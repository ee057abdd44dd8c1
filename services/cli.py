"""`loyalty`: one command line for the whole platform (CONTRACT.md §1)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from services.common.settings import ConfigurationError, LoyaltySettings


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = LoyaltySettings()
    except ValidationError as exc:
        print(f"loyalty: invalid environment: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for chatty in ("aiokafka", "httpx"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        return int(args.run(args) or 0)
    except ConfigurationError as exc:
        print(f"loyalty: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loyalty", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="start the whole system in the foreground (with a demo)")
    up.add_argument("--no-demo", action="store_true", help="start everything but play no demo")
    up.set_defaults(run=cmd_up)

    migrate = commands.add_parser("migrate", help="apply database migrations (idempotent)")
    migrate.set_defaults(run=cmd_migrate)

    topics = commands.add_parser("topics", help="create the platform's Kafka topics that do not exist yet")
    topics.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="partitions, replication and retention per topic, e.g. deploy/topics.toml "
        "(default: the embedded defaults)",
    )
    topics.set_defaults(run=cmd_topics)

    worker = commands.add_parser("worker", help="run a stream worker")
    worker.add_argument("name", choices=["points"])
    worker.set_defaults(run=cmd_worker)

    lag = commands.add_parser(
        "lag-exporter", help="export consumer lag per group and partition to Prometheus (port 9102)"
    )
    lag.set_defaults(run=cmd_lag_exporter)

    api = commands.add_parser("api", help="run one HTTP service")
    api.add_argument("name", choices=["points", "redemption", "lottery"])
    api.set_defaults(run=cmd_api)

    sim = commands.add_parser("billing-sim", help="produce realistic billing events to the broker")
    sim.add_argument("--members", type=_positive, required=True)
    sim.add_argument("--events", type=_positive, required=True)
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--duplicates", type=_fraction, default=0.0, help="share of exact re-sends")
    sim.add_argument("--malformed", type=_fraction, default=0.0, help="share of malformed records")
    sim.add_argument("--month", type=_month, default=None, help="YYYY-MM (default: this month)")
    sim.set_defaults(run=cmd_billing_sim)

    expire = commands.add_parser("expire", help="expire lots whose expiry is at or before a time")
    expire.add_argument("--as-of", required=True, type=_as_of, help="ISO date or date-time")
    expire.set_defaults(run=cmd_expire)

    verify = commands.add_parser(
        "verify-campaign", help="recompute every outcome of a revealed lottery campaign"
    )
    verify.add_argument("target", help="the campaign's reveal URL, or a file with the reveal JSON")
    verify.set_defaults(run=cmd_verify_campaign)

    token = commands.add_parser("token", help="mint a token with the configured secret")
    who = token.add_mutually_exclusive_group(required=True)
    who.add_argument("--member", help="member_id the token acts for")
    who.add_argument("--role", choices=["admin", "service"])
    token.add_argument("--ttl", type=_positive, default=3600, help="seconds (default 3600)")
    token.set_defaults(run=cmd_token)
    return parser


def cmd_up(args: argparse.Namespace) -> int:
    from services.supervisor import run_platform

    return run_platform(LoyaltySettings(), demo=not args.no_demo)


def cmd_migrate(args: argparse.Namespace) -> int:
    from services.common.db import migrate

    settings = LoyaltySettings()
    applied = asyncio.run(migrate(settings.resolved_database_url()))
    print(f"applied {len(applied)} migration(s)" + "".join(f"\n  {name}" for name in applied))
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from services.common.kafka import (
        TopicSetupError,
        apply_topic_specs,
        default_topic_specs,
        load_topic_specs,
    )

    specs = load_topic_specs(args.config) if args.config else default_topic_specs()
    bootstrap = LoyaltySettings().resolved_kafka_bootstrap()
    try:
        states = asyncio.run(apply_topic_specs(bootstrap, specs))
    except TopicSetupError as exc:
        print(f"loyalty: {exc}", file=sys.stderr)
        return 1
    for state in states:
        spec = state.spec
        line = f"{spec.name:<24} {'created' if state.created else 'exists':<8} partitions={state.partitions}"
        if state.partitions != spec.partitions:
            line += f" (configured {spec.partitions}: left as it is)"
        if spec.retention_ms is not None:
            line += f" retention.ms={state.retention_ms}"
            if state.retention_ms != spec.retention_ms:
                line += f" (configured {spec.retention_ms}: left as it is)"
        print(line)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from services.points.entrypoints.worker import run_worker
    from services.points.settings import PointsSettings

    run_worker(PointsSettings())
    return 0


def cmd_lag_exporter(args: argparse.Namespace) -> int:
    from services.points.entrypoints.lag_exporter import run_lag_exporter
    from services.points.settings import PointsSettings

    run_lag_exporter(PointsSettings())
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    """Each service's `entrypoints/api.py` has `main()`, which reads its settings and serves."""
    import importlib

    try:
        entrypoint = importlib.import_module(f"services.{args.name}.entrypoints.api")
    except ModuleNotFoundError:
        print(f"loyalty: the {args.name} service is not part of this release yet", file=sys.stderr)
        return 2
    entrypoint.main()
    return 0


def cmd_billing_sim(args: argparse.Namespace) -> int:
    from services.common.kafka import BILLING_EVENTS, ensure_topics
    from services.demo.billing_sim import produce, simulate

    bootstrap = LoyaltySettings().resolved_kafka_bootstrap()
    records = simulate(
        args.members,
        args.events,
        seed=args.seed,
        month=args.month,
        duplicates=args.duplicates,
        malformed=args.malformed,
    )

    async def run() -> None:
        await ensure_topics(bootstrap)
        summary = await produce(
            bootstrap, records, BILLING_EVENTS, progress=lambda n: print(f"  … {n:,} sent", flush=True)
        )
        bad = ", ".join(f"{k} {v}" for k, v in sorted(summary.malformed.items())) or "none"
        print(
            f"produced {summary.total:,} records to {BILLING_EVENTS}: {summary.events:,} events, "
            f"{summary.duplicates:,} exact re-sends, malformed: {bad}"
        )

    asyncio.run(run())
    return 0


def cmd_expire(args: argparse.Namespace) -> int:
    from functools import partial

    from services.common.db import create_pool
    from services.points.adapters.postgres import ledger_transaction
    from services.points.entrypoints.worker import run_expiry

    settings = LoyaltySettings()

    async def run() -> tuple[int, int]:
        pool = await create_pool(settings.resolved_database_url(), timezone=settings.business_timezone)
        try:
            return await run_expiry(partial(ledger_transaction, pool), args.as_of)
        finally:
            await pool.close()

    members, points = asyncio.run(run())
    print(
        f"expired {points:,} points from {members:,} members (lots due at or before {args.as_of.isoformat()})"
    )
    return 0


def cmd_verify_campaign(args: argparse.Namespace) -> int:
    import importlib

    try:
        verify = importlib.import_module("services.lottery.verify")
    except ModuleNotFoundError:
        print("loyalty: the lottery service is not part of this release yet", file=sys.stderr)
        return 2
    return int(verify.verify_campaign_command(args.target))


def cmd_token(args: argparse.Namespace) -> int:
    from services.common.auth import mint_token

    settings = LoyaltySettings()
    subject, role = (args.member, "member") if args.member else (f"{args.role}-cli", args.role)
    print(mint_token(settings.jwt_secret, subject, role, args.ttl))
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError("must be a fraction in [0, 1)")
    return value


def _month(text: str) -> date:
    try:
        return datetime.strptime(text, "%Y-%m").date()
    except ValueError:
        raise argparse.ArgumentTypeError("must be YYYY-MM") from None


def _as_of(text: str) -> datetime:
    """A date means its midnight in the business time zone; a date-time needs an offset."""
    zone = ZoneInfo(LoyaltySettings().business_timezone)
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(0), zone)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be an ISO date or date-time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


if __name__ == "__main__":
    sys.exit(main())
