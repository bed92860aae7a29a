"""Graph-embedding commands: ``train``, ``evaluate``, ``embed``."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from storage import store_exists
from .cli import UsageError, settings_from
from .argtypes import positive_float as _positive_float
from .argtypes import positive_int as _positive_int
from .argtypes import ratio as _ratio


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("train", parents=[common], help="train the HGT on the store's graph and register a model version")
    p.add_argument("--epochs", type=_positive_int, help="training epochs (default: UPS_TRAIN_EPOCHS)")
    p.add_argument("--sample-ratio", type=_ratio, help="share of users in the training graph (default: UPS_TRAIN_SAMPLE_RATIO)")
    p.add_argument("--mode", choices=["auto", "full", "minibatch", "metis"], help="training mode (default: UPS_TRAIN_MODE)")
    p.add_argument("--lr", type=_positive_float, help="learning rate")
    p.add_argument("--seed", type=int, help="seed of the split, sampling and initialisation")
    p.add_argument("--no-embed", action="store_true", help="do not write embeddings with the new model")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", parents=[common], help="link-prediction and label AUC of the newest HGT model")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("embed", parents=[common], help="write embeddings of every node with the newest HGT model")
    p.add_argument("--sample-ratio", type=_ratio, default=1.0, help="share of users to embed (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_embed)


@contextmanager
def _progress(desc: str, quiet: bool) -> Iterator[Callable[[float, str], None]]:
    from tqdm import tqdm

    with tqdm(total=1000, desc=desc, disable=quiet, file=sys.stderr, bar_format="{l_bar}{bar}| {elapsed} {postfix}") as bar:

        def update(fraction: float, message: str) -> None:
            target = int(1000 * min(1.0, max(0.0, fraction)))
            if target > bar.n:
                bar.update(target - bar.n)
            bar.set_postfix_str(message[:60], refresh=True)

        yield update


def _needs_db(s: Any) -> None:
    if not store_exists(s.db):
        raise UsageError(f"no database at {s.db}; run `ups generate` first")


def cmd_train(args: argparse.Namespace) -> int:
    from scoring.embed import embed_all
    from scoring.training import train_hgt

    s = settings_from(args)
    _needs_db(s)
    with _progress("train", args.quiet) as report:
        try:
            m = train_hgt(s, epochs=args.epochs, sample_ratio=args.sample_ratio, mode=args.mode, lr=args.lr, seed=args.seed,
                          progress=lambda f, msg: report(0.9 * f if not args.no_embed else f, msg))
        except ValueError as err:
            raise UsageError(str(err)) from None
        emb = None
        if not args.no_embed:
            emb = embed_all(s, progress=lambda f, msg: report(0.9 + 0.1 * f, msg))
    if args.json:
        print(json.dumps({**m, "embedded": emb}, ensure_ascii=False, indent=2))
        return 0
    nodes = ", ".join(f"{n:,} {t}s" for t, n in m["nodes"].items())
    print(f"registered hgt model version {m['version']}: {m['mode']} training, {m['epochs']} epochs on {nodes} "
          f"in {m['duration_s']:.1f} s on {m['device']}; loss {m['loss_history'][0]:.3f} -> {m['final_loss']:.3f}")
    print(f"{'held-out test AUC':24s} {'trained':>8s} {'untrained':>10s} {'degree':>8s}")
    for et, row in m["test_auc"].items():
        print(f"  {et:22s} {_f(row.get('trained')):>8s} {_f(row.get('untrained')):>10s} {_f(row.get('degree')):>8s}")
    if emb:
        print(f"wrote {emb['written']:,} embeddings (model version {emb['model_version']}) in {emb['duration_s']:.1f} s")
    return 0


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def cmd_evaluate(args: argparse.Namespace) -> int:
    from scoring.evaluate import evaluate

    s = settings_from(args)
    _needs_db(s)
    with _progress("evaluate", args.quiet) as report:
        try:
            r = evaluate(s, progress=report)
        except ValueError as err:
            raise UsageError(str(err)) from None
    if args.json:
        print(json.dumps({k: r[k] for k in ("link_auc", "link_auc_ci95", "held_out_pairs", "negative_pairs",
                                            "label_auc", "model_version")}))
        return 0
    print(f"hgt model version {r['model_version']}: link-prediction AUC on held-out edges (95 % interval of the "
          "trained AUC from the held-out sample's size)")
    print(f"  {'edge type':22s} {'trained':>8s} {'95 % interval':>15s} {'untrained':>10s} {'degree':>8s} "
          f"{'pairs':>9s} {'negatives':>10s}")
    for et, row in r["link_auc"].items():
        ci = r["link_auc_ci95"][et]
        span = f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "-"
        print(f"  {et:22s} {_f(row['trained']):>8s} {span:>15s} {_f(row['untrained']):>10s} {_f(row['degree']):>8s} "
              f"{r['held_out_pairs'][et]:>9,d} {r['negative_pairs'][et]:>10,d}")
    print(f"label AUC (logistic regression on user embeddings, 5-fold, {r['labelled_users']:,} labelled users): "
          f"trained {_f(r['label_auc'])}, untrained {_f(r['label_auc_untrained'])}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from scoring.embed import embed_all

    s = settings_from(args)
    _needs_db(s)
    with _progress("embed", args.quiet) as report:
        try:
            r = embed_all(s, sample_ratio=args.sample_ratio, progress=report)
        except ValueError as err:
            raise UsageError(str(err)) from None
    nodes = ", ".join(f"{n:,} {t}s" for t, n in r["nodes"].items())
    print(f"wrote {r['written']:,} embeddings ({nodes}) with hgt model version {r['model_version']} "
          f"in {r['duration_s']:.1f} s on {r['device']}")
    return 0
