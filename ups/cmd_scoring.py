"""Scoring commands: ``train-fusion``, ``score``, ``explain``, ``recommend`` and ``rules``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any, Callable

from storage import store_exists
from .cli import UsageError, settings_from
from .argtypes import non_negative_int as _non_negative_int
from .argtypes import positive_float as _positive_float
from .argtypes import positive_int as _positive_int


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("train-fusion", parents=[common],
                       help="train the rule/GNN fusion on the planted labels and register a model version")
    p.add_argument("--samples", type=_non_negative_int, help="labelled users to use at most (0 = all)")
    p.add_argument("--epochs", type=_positive_int, help="training epochs (default: UPS_FUSION_EPOCHS)")
    p.add_argument("--lr", type=_positive_float, help="learning rate (default: UPS_FUSION_LR)")
    p.add_argument("--json", action="store_true", help='print {"auc": {...}, "loss": x, "model_version": v}')
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train_fusion)

    p = sub.add_parser("score", parents=[common], help="the fused score of a user, with the rules that fired")
    p.add_argument("user_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("explain", parents=[common], help="SHAP contributions to a user's fused score")
    p.add_argument("user_id")
    p.add_argument("--mode", choices=["per_dimension", "grouped"], default="per_dimension")
    p.add_argument("--top-k", type=_positive_int, help="contributions listed each way (default: UPS_EXPLAIN_TOP_K)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("recommend", parents=[common], help="strategy recommendations for a user")
    p.add_argument("user_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("rules", parents=[common], help="list, add, update, delete or preview scoring rules")
    rsub = p.add_subparsers(dest="rules_command", metavar="ACTION")
    rsub.required = True
    r = rsub.add_parser("list", parents=[common], help="the rules and the rules version")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_rules_list)
    for action, needed in (("add", True), ("update", False)):
        r = rsub.add_parser(action, parents=[common], help=f"{action} a rule")
        r.add_argument("name")
        r.add_argument("--condition", required=needed, help="sandboxed expression over profile fields")
        r.add_argument("--weight", type=float, required=needed)
        r.add_argument("--description")
        r.add_argument("--enabled", choices=["true", "false"], help="default true for a new rule")
        r.set_defaults(func=cmd_rules_change, action=action)
    r = rsub.add_parser("delete", parents=[common], help="delete a rule")
    r.add_argument("name")
    r.set_defaults(func=cmd_rules_delete)
    r = rsub.add_parser("preview", parents=[common], help="how many sampled users a condition fires for")
    r.add_argument("condition")
    r.add_argument("--sample", type=_positive_int, default=200)
    r.set_defaults(func=cmd_rules_preview)


def _with_service(args: argparse.Namespace, work: Callable[[Any], int]) -> int:
    from scoring.errors import ScoringError, UserNotFound
    from scoring.service import ScoringService

    s = settings_from(args)
    if not store_exists(s.db):
        raise UsageError(f"no database at {s.db}; run `ups generate` first")
    with ScoringService(s) as svc:
        try:
            return work(svc)
        except UserNotFound as err:
            raise UsageError(str(err)) from None
        except ScoringError as err:
            raise UsageError(getattr(err, "reason", None) or str(err)) from None


def cmd_train_fusion(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from dataflow.oracle import retention_oracle

    def work(svc: Any) -> int:
        with tqdm(total=100, desc="train-fusion", unit="%", disable=args.quiet, file=sys.stderr) as bar:
            def progress(fraction: float, message: str) -> None:
                bar.n = round(100 * fraction)
                bar.set_postfix_str(message[:60], refresh=False)
                bar.refresh()

            res = svc.train_fusion(args.samples, args.epochs, args.lr, progress=progress,
                                   oracle=retention_oracle(svc.settings.db, svc.settings))
        if args.json:
            print(json.dumps({"auc": res["auc"], "loss": res["loss"], "model_version": res["model_version"]}))
            return 0
        auc = res["auc"]
        print(f"fusion model version {res['model_version']}: trained on {res['n_train']:,} labelled users, "
              f"stopped on {res['n_val']:,}, held out {res['n_test']:,}; loss {res['loss']:.4f}, "
              f"test loss {res['test_loss']:.4f}; {res['seconds']:.1f} s")
        print(f"held-out AUC  rule score {_num(auc['rule'])}  rule head {_num(auc['rule_head'])}  "
              f"GNN {_num(auc['gnn'])}  fused {_num(auc['fused'])}  oracle {_num(auc['oracle'])}")
        if auc["oracle"] is None:
            print("oracle: n/a (the store's dataset is not one this generator version can regenerate)")
        if res.get("embedding_missing_share"):
            print(f"note: {res['embedding_missing_share']:.0%} of the users had no embedding (zero vector used)")
        return 0

    return _with_service(args, work)


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _run(args: argparse.Namespace, fetch: Callable[[Any], Any], show: Callable[[Any], None]) -> int:
    """Fetch from the service; print JSON with ``--json``, else the human form."""
    def work(svc: Any) -> int:
        data = fetch(svc)
        if getattr(args, "json", False):
            print(json.dumps(data, ensure_ascii=False, indent=2))
        else:
            show(data)
        return 0

    return _with_service(args, work)


def cmd_score(args: argparse.Namespace) -> int:
    def show(res: dict[str, Any]) -> None:
        print(f"user {res['user_id']}: score {res['score']:.4f} (gate {res['gate']:.3f}: "
              f"rule {res['f_rule_calibrated']:.3f} from f_rule {res['f_rule']:+.2f}, GNN {res['f_nn']:.3f})")
        for r in res["rules"]:
            mark = "fired" if r["fired"] else ("ERROR " + r["error"] if r["error"] else "-")
            print(f"  {r['name']:24s} {r['weight']:+7.2f}  {mark}")
        emb = "missing (zero vector)" if res["embedding_missing"] else f"model {res['model_version']}"
        print(f"fusion version {res['fusion_version'] or 'untrained'}, rules version {res['rules_version']}, "
              f"embedding {emb}")

    return _run(args, lambda svc: svc.score(args.user_id), show)


def cmd_explain(args: argparse.Namespace) -> int:
    def show(res: dict[str, Any]) -> None:
        bg = res["background"]
        print(f"user {res['user_id']}: score {res['score']:.3f} = base {res['base_value']:.3f} "
              f"+ {len(res['contributions'])} contributions ({args.mode}, background {bg['source']} "
              f"x{bg['size']}{', exact' if res['exact'] else ''})")
        for title, items in (("raising", res["top_positive"]), ("lowering", res["top_negative"])):
            print(f"  {title}:")
            for c in items:
                print(f"    {c['text']}")

    return _run(args, lambda svc: svc.explain(args.user_id, mode=args.mode, top_k=args.top_k), show)


def cmd_recommend(args: argparse.Namespace) -> int:
    def show(recs: list[dict[str, Any]]) -> None:
        if not recs:
            print(f"no strategy applies to user {args.user_id}")
        for r in recs:
            print(f"[{r['priority']:.2f}] {r['title']}: {r['reason']}")

    return _run(args, lambda svc: svc.recommendations(args.user_id), show)


def cmd_rules_list(args: argparse.Namespace) -> int:
    def show(data: dict[str, Any]) -> None:
        print(f"rules version {data['rules_version']}")
        for r in data["rules"]:
            state = "" if r["enabled"] else " (disabled)"
            err = f"  ERROR {r['error']}" if r["error"] else ""
            print(f"  {r['name']:24s} {r['weight']:+7.2f}{state}  {r['condition']}{err}")

    return _run(args, lambda svc: {"rules_version": svc.rules_version(), "rules": [asdict(r) for r in svc.list_rules()]}, show)


def cmd_rules_change(args: argparse.Namespace) -> int:
    spec: dict[str, Any] = {k: v for k, v in (("condition", args.condition), ("weight", args.weight),
                                              ("description", args.description)) if v is not None}
    if args.enabled is not None:
        spec["enabled"] = args.enabled == "true"

    def work(svc: Any) -> int:
        if args.action == "add":
            res = svc.create_rule({"name": args.name, **spec})
        else:
            if not spec:
                raise UsageError("nothing to update: give --condition, --weight, --description or --enabled")
            res = svc.update_rule(args.name, spec)
        print(f"rule {res['name']} {'created' if args.action == 'add' else 'updated'}; "
              f"rules version {res['rules_version']}")
        return 0

    return _with_service(args, work)


def cmd_rules_delete(args: argparse.Namespace) -> int:
    return _run(args, lambda svc: svc.delete_rule(args.name),
                lambda res: print(f"rule {res['deleted']} deleted; rules version {res['rules_version']}"))


def cmd_rules_preview(args: argparse.Namespace) -> int:
    def show(res: dict[str, Any]) -> None:
        failures = f"; fails on {res['errors']}: {res['error_examples'][0]['error']}" if res["errors"] else ""
        print(f"fires for {res['fired']} of {res['sample']} sampled users{failures}")

    return _run(args, lambda svc: svc.preview_rule(args.condition, args.sample), show)
