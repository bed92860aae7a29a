"""Data commands: ``config``, ``generate``, ``export``, ``stats``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from config.db_location import DbLocation
from storage import store_exists
from .cli import UsageError, settings_from
from config.generator import EDGE_RANGE_FIELDS
from .argtypes import non_negative_float as _non_negative_float
from .argtypes import positive_int as _positive_int
from .argtypes import share as _share


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("config", parents=[common], help="print the effective settings")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("generate", parents=[common], help="append a deterministic mock dataset to the store")
    p.add_argument("--users", type=_positive_int, help="number of users (default: UPS_USERS)")
    p.add_argument("--events-per-user", type=_non_negative_float, help="mean history events per user")
    p.add_argument("--products", type=_positive_int)
    p.add_argument("--apps", type=_positive_int)
    p.add_argument("--seed", type=int)
    p.add_argument("--label-share", type=_share, help="share of users with a label.observed event")
    for name in EDGE_RANGE_FIELDS:
        p.add_argument(f"--{name.replace('_', '-')}", metavar="MIN:MAX",
                       help=f"{name.replace('_', ' ')} in the history (MAX empty: no limit)")
    p.add_argument("--batch-size", type=_positive_int, default=50_000, help="events per transaction")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--force", action="store_true",
                   help="append even when the database holds a dataset of another config or generator version")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("export", parents=[common], help="write base tables and events as parquet or csv")
    p.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created when missing)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("stats", parents=[common], help="counts by type, last seq, dead letters")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stats)


def cmd_config(args: argparse.Namespace) -> int:
    s = settings_from(args)
    data: dict[str, Any] = json.loads(s.model_dump_json())
    if data.get("admin_token"):
        data["admin_token"] = "***"
    data["db"] = str(s.db)  # a URL's password redacted
    data["state_dir"] = str(s.state_dir)
    print(json.dumps(data, indent=2, ensure_ascii=False))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from dataflow.bootstrap import append_dataset, dataset_tags
    from dataflow.generator import GeneratorConfig, MockGenerator
    from storage import open_store

    s = settings_from(
        args,
        users=args.users,
        events_per_user=args.events_per_user,
        products=args.products,
        apps=args.apps,
        seed=args.seed,
        label_share=args.label_share,
        **{name: getattr(args, name) for name in EDGE_RANGE_FIELDS},
    )
    try:
        cfg = GeneratorConfig.from_settings(s)
    except ValueError as err:
        raise UsageError(str(err)) from None
    gen = MockGenerator(cfg)
    with open_store(s.db) as store:
        others = [t for t in dataset_tags(store) if t != gen.tag]
        if others and not args.force:
            # the same user ids would get a second registration and history (re-running the same config
            # is a no-op: its event ids are already there)
            raise UsageError(
                f"{s.db} already holds a generated dataset of another config or generator version (tag {others[0]}, "
                f"this one {gen.tag}); a second one would give the same users two histories. Generate into "
                "another --db, or pass --force to append it anyway"
            )
        with tqdm(
            total=gen.dataset_size(), unit="ev", unit_scale=True, desc="generate", disable=args.quiet, file=sys.stderr
        ) as bar:
            summary = append_dataset(store, gen, args.batch_size, bar.update)
    print(
        f"generated {summary.events:,} events for {cfg.users:,} users (seed {cfg.seed}) into {s.db}: "
        f"{summary.appended:,} new, {summary.duplicates:,} already there; "
        f"{summary.seconds:.1f} s, {summary.rate:,.0f} events/s; last seq {summary.last_seq:,}"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from storage import open_store
    from storage.export import export

    s = settings_from(args)
    if not store_exists(s.db):
        raise UsageError(f"no database at {s.db}; run `ups generate` first")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    with open_store(s.db) as store:
        counts = export(store, out, args.format)
    for name, n in counts.items():
        print(f"{name:9s} {n:>12,d} rows -> {out / f'{name}.{args.format}'}")
    return 0


def stats_of(db: DbLocation) -> dict[str, Any]:
    from storage import open_store

    with open_store(db) as store:
        return {
            "db": str(db),
            "events": store.count(),
            "last_seq": store.last_seq(),
            "by_type": store.counts_by_type(),
            "dead_letters": store.dead_letter_count(),
            "profiles": store.profiles.count(),
            "checkpoints": store.checkpoints.all(),
        }


def cmd_stats(args: argparse.Namespace) -> int:
    s = settings_from(args)
    if not store_exists(s.db):
        raise UsageError(f"no database at {s.db}; run `ups generate` first")
    st = stats_of(s.db)
    if args.json:
        print(json.dumps(st, ensure_ascii=False, indent=2))
        return 0
    print(f"database      {st['db']}")
    print(f"events        {st['events']:,}  (last seq {st['last_seq']:,})")
    for t, n in st["by_type"].items():
        print(f"  {t:18s} {n:>12,d}")
    print(f"dead letters  {st['dead_letters']:,}")
    print(f"profiles      {st['profiles']:,}")
    for name, seq in st["checkpoints"].items():
        print(f"checkpoint    {name} @ {seq:,}")
    return 0
