"""``ups`` command line: one subcommand per module, each module registers its own."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, Callable, Sequence

from pydantic import ValidationError

from config.settings import Settings

#: modules that define ``register(subparsers, common)``; kept here so `ups --help` lists them all
COMMAND_MODULES = [
    "ups.cmd_data",
    "ups.cmd_flow",
    "ups.cmd_graph",
    "ups.cmd_scoring",
    "ups.cmd_api",
]


class UsageError(Exception):
    """A problem with what the user asked for: printed without a traceback, exit status 2."""


def settings_from(args: argparse.Namespace, **extra: Any) -> Settings:
    """The settings object, with ``--db`` and any given command options taking precedence over env."""
    overrides = {k: v for k, v in extra.items() if v is not None}
    if getattr(args, "db", None) is not None:
        overrides["db"] = args.db
    try:
        return Settings(**overrides)
    except ValidationError as err:
        raise UsageError(_pydantic_message(err)) from None


def _pydantic_message(err: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg'].removeprefix('Value error, ')}"
        for e in err.errors(include_url=False)
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ups", description="UPS: real-time user profiling (Bytewax + SQLite + HGT + Litestar)"
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db", metavar="PATH|URL",
        help="the store: a SQLite file or a postgresql://user@host:port/db URL (default: UPS_DB or ./var/ups.db)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int | None] = args.func
    try:
        return int(func(args) or 0)
    except UsageError as err:
        print(f"ups {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ups {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - known failure kinds become one clear line
        from storage import unwritable_reason
        from storage.db import SchemaTooNew
        from config.device import DeviceError

        if isinstance(err, (SchemaTooNew, DeviceError, FileNotFoundError, ValueError)):
            print(f"ups {args.command}: error: {err}", file=sys.stderr)
            return 1
        reason = unwritable_reason(err)
        if reason is not None:  # the store unreachable or read-only: the machine's state, no traceback
            print(f"ups {args.command}: error: {reason}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
