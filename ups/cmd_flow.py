"""Flow commands: ``dataflow`` (the long-running Bytewax flow) and ``replay`` (rebuild projections)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from storage import store_exists
from config.settings import Settings

from .argtypes import positive_float as _positive_float
from .argtypes import positive_int as _positive_int
from .cli import UsageError, settings_from

if TYPE_CHECKING:
    from bytewax.dataflow import Stream

    from dataflow.control import FlowControl
    from dataflow.flow import AttachRefresh
    from dataflow.sources import LogBatch


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "dataflow",
        parents=[common],
        help="run the live Bytewax flow (ingest, validate, append, fold profiles) until stopped",
        description="Runs until its input ends, a shutdown command, or SIGINT/SIGTERM (a clean stop). "
        "Recovery is on: after a crash, start it again and it resumes from its last snapshot.",
    )
    p.add_argument("--workers", type=_positive_int, default=1, help="Bytewax workers in this process")
    p.add_argument("--max-events", type=_positive_int, help="stop after this many mock events (finite run)")
    p.add_argument(
        "--source", choices=["mock", "jsonl", "kafka"], default="mock", help="input (default: the mock stream)"
    )
    p.add_argument("--path", metavar="FILE", help="JSON-lines file of events for --source jsonl")
    p.add_argument("--follow", action="store_true", help="with --source jsonl: keep reading as the file grows")
    p.add_argument("--brokers", metavar="HOST:PORT", help="Kafka brokers, comma-separated (--source kafka)")
    p.add_argument("--topic", help="Kafka topic of subscriber events (--source kafka; default UPS_KAFKA_TOPIC)")
    p.add_argument("--rate", type=_positive_float, help="mock events per second (default: UPS_LIVE_RATE)")
    p.add_argument("--no-recovery", action="store_true", help="run without Bytewax recovery snapshots")
    p.add_argument(
        "--reset-recovery",
        action="store_true",
        help="set the recovery state aside (kept, renamed) and run, rebuilding the flow's state from the event "
        "log: the way out of a damaged recovery state; nothing stored is lost",
    )
    p.add_argument("-i", "--process-id", type=int, help="this process's index in a multi-process cluster")
    p.add_argument("-a", "--addresses", help='cluster addresses "host:port;host:port" (with -i)')
    p.add_argument("--quiet", action="store_true", help="no status lines on stderr")
    p.set_defaults(func=cmd_dataflow)

    p = sub.add_parser(
        "replay",
        parents=[common],
        help="rebuild the projections from the event log (same fold as the live flow)",
    )
    p.add_argument("--from-seq", type=_positive_int, default=1, help="first seq (1: rebuild from nothing)")
    p.add_argument("--to-seq", type=_positive_int, help="last seq (default: the end of the log)")
    p.add_argument("--into", metavar="PATH", help="write the projections into this database (file or URL) instead")
    p.add_argument("--workers", type=_positive_int, default=1, help="Bytewax workers (seq ranges as partitions)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "produce",
        parents=[common],
        help="write the mock live stream into a Kafka topic (for --source kafka)",
        description="Produces the events `ups dataflow --source mock` would emit (same ids), one JSON object "
        "per message keyed by user; creates the topic when it is missing.",
    )
    p.add_argument("--brokers", metavar="HOST:PORT", help="Kafka brokers, comma-separated (default UPS_KAFKA_BROKERS)")
    p.add_argument("--topic", help="topic (default UPS_KAFKA_TOPIC)")
    p.add_argument("--events", type=_positive_int, required=True, help="how many events")
    p.add_argument("--start", type=int, default=0, help="index of the first live event (default 0)")
    p.add_argument("--partitions", type=_positive_int, default=4, help="partitions of a topic created here")
    p.add_argument("--rate", type=_positive_float, help="events per second (default: as fast as Kafka takes them)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_produce)


def _lazy_refresh_branch(s: Settings) -> AttachRefresh | None:
    """The flow's refresh branch, its model stack imported only when the flow is built: after the
    store's lock is taken, so a refused start (another flow runs) answers at once."""
    if not s.refresh_in_flow:
        return None

    def attach(log_batches: Stream[LogBatch], control: FlowControl) -> None:
        from dataflow.refresh_step import refresh_branch

        branch = refresh_branch(s)
        assert branch is not None
        branch(log_batches, control)

    return attach


def cmd_dataflow(args: argparse.Namespace) -> int:
    from dataflow.runner import FlowConfigError, run_dataflow

    if args.source == "jsonl" and not args.path:
        raise UsageError("--source jsonl needs --path FILE")
    if args.path and args.source != "jsonl":
        raise UsageError("--path is for --source jsonl")
    if args.max_events and args.source != "mock":
        raise UsageError("--max-events is for the mock source (a file ends by itself)")
    if (args.brokers or args.topic) and args.source != "kafka":
        raise UsageError("--brokers and --topic are for --source kafka")
    if (args.process_id is None) != (args.addresses is None):
        raise UsageError("-i/--process-id and -a/--addresses go together")
    if args.reset_recovery and (args.process_id or args.no_recovery):
        raise UsageError("--reset-recovery is for process 0 of a flow with recovery on")
    addresses = [a for a in args.addresses.split(";") if a] if args.addresses else None
    if addresses is not None and not 0 <= args.process_id < len(addresses):
        raise UsageError(f"--process-id must be within 0..{len(addresses) - 1} for {len(addresses)} addresses")
    s = settings_from(
        args,
        live_rate=args.rate,
        recovery=False if args.no_recovery else None,
        kafka_brokers=args.brokers,
        kafka_topic=args.topic,
    )
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def show(doc: dict) -> None:
        if not args.quiet:
            print(
                f"dataflow {doc['state']}: ingestion {doc['ingestion']}, {doc['events_in']:,} events in "
                f"({doc['events_per_s']:,.0f}/s), last seq {doc['last_seq']:,}, profiles at {doc['profiles_seq']:,}, "
                f"lag {doc['lag_s']:.1f} s, dead letters {doc['dead_letters']:,}",
                file=sys.stderr,
                flush=True,
            )

    try:
        summary = run_dataflow(
            s,
            source=args.source,
            path=Path(args.path) if args.path else None,
            follow=args.follow,
            workers=args.workers,
            max_events=args.max_events,
            process_id=args.process_id,
            addresses=addresses,
            attach_refresh=_lazy_refresh_branch(s),
            on_status=show,
            reset_recovery=args.reset_recovery,
        )
    except FlowConfigError as err:
        raise UsageError(str(err)) from None
    print(
        f"dataflow stopped: {summary.events_in:,} events appended in {summary.seconds:.1f} s "
        f"({summary.rate:,.0f} events/s); last seq {summary.last_seq:,}, profiles at seq {summary.profiles_seq:,}, "
        f"dead letters {summary.dead_letters:,}"
    )
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from dataflow.runner import FlowConfigError, replay
    from storage import open_store, parse_db

    s = settings_from(args)
    if not store_exists(s.db):
        raise UsageError(f"no database at {s.db}; run `ups generate` first")
    into = parse_db(args.into) if args.into else None
    if isinstance(into, Path) and into.exists() and into.is_dir():
        raise UsageError(f"--into {into} is a folder; give a database file")
    with open_store(s.db, readonly=True) as store:
        last = store.last_seq()
    total = max(0, min(args.to_seq or last, last) - args.from_seq + 1)
    with tqdm(total=total, unit="ev", unit_scale=True, desc="replay", disable=args.quiet, file=sys.stderr) as bar:
        try:
            summary = replay(
                s, from_seq=args.from_seq, to_seq=args.to_seq, into=into, workers=args.workers, progress=bar.update
            )
        except FlowConfigError as err:
            raise UsageError(str(err)) from None
    print(
        f"replayed seq {summary.first:,}..{summary.last:,} ({summary.events:,} events) into {summary.into}: "
        f"{summary.profiles:,} profiles; {summary.seconds:.1f} s, {summary.rate:,.0f} events/s"
    )
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from dataflow.kafka_produce import produce_mock
    from dataflow.kafka_source import KafkaUnavailable

    s = settings_from(args, kafka_brokers=args.brokers, kafka_topic=args.topic)
    if not s.kafka_brokers:
        raise UsageError("give --brokers HOST:PORT (or UPS_KAFKA_BROKERS)")
    if args.start < 0:
        raise UsageError(f"--start must be at least 0, got {args.start}")
    with tqdm(total=args.events, unit="ev", unit_scale=True, desc="produce", disable=args.quiet, file=sys.stderr) as bar:
        try:
            summary = produce_mock(
                s,
                brokers=s.kafka_brokers,
                topic=s.kafka_topic,
                events=args.events,
                start=args.start,
                partitions=args.partitions,
                rate=args.rate,
                progress=bar.update,
            )
        except KafkaUnavailable as err:
            raise UsageError(str(err)) from None
    print(
        f"produced {summary.events:,} events into {summary.topic} ({summary.partitions} partitions) "
        f"in {summary.seconds:.1f} s ({summary.rate:,.0f} events/s)"
    )
    return 0
