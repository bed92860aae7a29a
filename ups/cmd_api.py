"""``ups api`` (the HTTP API), ``ups init`` (make a database ready) and ``ups up`` (the whole system)."""

from __future__ import annotations

import argparse
import json
import re
import logging
import sys
import threading
import time
from typing import Any

from config.db_location import DbLocation
from config.db_location import location_arg
from config.settings import Settings

from .argtypes import positive_int as _positive_int
from .cli import UsageError, settings_from


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    net = argparse.ArgumentParser(add_help=False)
    net.add_argument("--host", help="address to listen on (default: UPS_HOST or 127.0.0.1)")
    net.add_argument("--port", type=_port, help="port (default: UPS_PORT or 5000)")

    p = sub.add_parser("api", parents=[common, net], help="serve the HTTP API (Litestar)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_api)

    gen = argparse.ArgumentParser(add_help=False)
    gen.add_argument("--users", type=_positive_int, help="users of the dataset generated on an empty database")
    gen.add_argument("--events-per-user", type=float, help="mean history events per user")
    gen.add_argument("--live-rate", type=float, help="live events per second")

    p = sub.add_parser("init", parents=[common, gen],
                       help="make a database ready: dataset when empty, projections, initial model")
    p.add_argument("--progress-json", action="store_true", help="progress as JSON lines on stdout (for jobs)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("up", parents=[common, net, gen],
                       help="the whole system: prepare the database, run the dataflow and the API, supervise")
    p.set_defaults(func=cmd_up)


def _port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"port must be within 1..65535, got {v}")
    return v


def _note_hosts(s: Any) -> None:
    if s.host in ("0.0.0.0", "::") and "*" not in s.allowed_hosts:
        print(f"listening on {s.host}: only Host names in UPS_ALLOWED_HOSTS are answered ({', '.join(s.allowed_hosts)}); "
              "list the names clients use", file=sys.stderr)


def _settings(args: argparse.Namespace) -> Any:
    from api.auth import check_bind
    from ups.supervisor import active_db

    s = settings_from(
        args,
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        users=getattr(args, "users", None),
        events_per_user=getattr(args, "events_per_user", None),
        live_rate=getattr(args, "live_rate", None),
    )
    try:
        check_bind(s.host, s)
    except ValueError as err:
        raise UsageError(str(err)) from None
    _note_hosts(s)
    db = active_db(s.db)
    if db != s.db:
        print(f"{s.db} was switched to {db} (data/regenerate); using {db}", file=sys.stderr)
        s = s.model_copy(update={"db": db})
    return s


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from api.http_limits import server_options

    s = _settings(args)
    holder: dict[str, uvicorn.Server] = {}

    def stop_server() -> None:
        holder["server"].should_exit = True

    app = create_app(s, stop_server=stop_server)
    config = uvicorn.Config(app, host=s.host, port=s.port, log_level=args.log_level, access_log=False,
                            lifespan="on", timeout_graceful_shutdown=10, **server_options(s))
    server = holder["server"] = uvicorn.Server(config)
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it stopped on: that was a clean stop
        pass
    return 0 if server.started else 1


#: a stage's count in a progress message: "12,345/43,450 events", "epoch 2/3"
_COUNT = re.compile(r"(?:([a-z]+) )?(\d[\d,]*)/(\d[\d,]*)(?: ([a-z]+))?")


class StageBars:
    """A progress bar per stage of a ``"stage: message"`` progress, with the stage's count and rate when
    its messages carry one (``N/M unit``); a message of no stage goes to the current bar. A stage's bar
    starts with its first message that says something, so a counted stage shows its total from its
    first line (a stage reports its start with an empty message, before it knows its count)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.name: str | None = None
        self.bar: Any = None
        self.finished = False  # the current stage's count is complete: its bar stays as it finished
        self.started = 0.0  # when the current stage reported its start: its bar's elapsed time and rate count from it

    def __call__(self, fraction: float, message: str = "") -> None:
        from tqdm import tqdm

        name, sep, rest = message.partition(": ")
        if not sep:
            name, rest = self.name or "prepare", message
        if name != self.name:
            self.close()
            self.name, self.finished, self.started = name, False, time.time()
        if self.finished or not rest.strip():
            return
        count = _COUNT.search(rest)
        if self.bar is None:
            self.bar = tqdm(total=int(count.group(3).replace(",", "")) if count else None, desc=f"{name:<8}",
                            file=sys.stderr, disable=self.quiet, smoothing=0, unit_scale=True, leave=True,
                            unit=(count.group(4) or count.group(1) or "it") if count else "it")
            # the bar opens late (at its first count) but its clock is the stage's: a stage that works before
            # it can count (a forward pass, an epoch) would otherwise show ~0 s and an absurd rate
            self.bar.start_t = self.bar.last_print_t = self.started
        self.bar.set_postfix_str(rest[:50], refresh=count is None)
        if count:
            before, done, total, after = count.groups()
            self.bar.total = int(total.replace(",", ""))
            self.bar.unit = after or before or "it"
            self.bar.update(int(done.replace(",", "")) - self.bar.n)
            if self.bar.n >= self.bar.total:
                self.close()  # now, so its time and rate are the count's own
                self.finished = True

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _progress_printer(args: argparse.Namespace) -> Any:
    if getattr(args, "progress_json", False):
        def emit(fraction: float, message: str = "") -> None:
            print(json.dumps({"fraction": round(fraction, 4), "message": message}), flush=True)
        return emit, lambda: None
    bars = StageBars(getattr(args, "quiet", False))
    return bars, bars.close


def _prepare(args: argparse.Namespace, s: Any) -> Any:
    from dataflow.prepare import prepare

    progress, close = _progress_printer(args)
    try:
        return prepare(s, progress, say=lambda m: print(m, file=sys.stderr, flush=True))
    except ValueError as err:  # e.g. generator settings that make no dataset
        raise UsageError(str(err)) from None
    finally:
        close()


def cmd_init(args: argparse.Namespace) -> int:
    s = _settings(args)
    summary = _prepare(args, s)
    if args.progress_json:
        print(json.dumps({"summary": {"steps": summary.steps, "generated_events": summary.generated_events,
                                      "seconds": summary.seconds}}, default=str), flush=True)
    else:
        print(f"{s.db} ready in {summary.seconds:.1f} s: " + ("; ".join(summary.steps) or "nothing to do"))
    return 0


def dataflow_argv(db: DbLocation) -> list[str]:
    from .supervisor import python_module

    return python_module("ups", "dataflow", "--db", location_arg(db), "--quiet")


def _refuse_a_running_flow(s: Settings) -> None:
    from dataflow.flow_lock import flow_holder

    holder = flow_holder(s.state_dir, s.db)
    if holder is not None:
        raise UsageError(
            f"{holder.describe()} is already running on {s.db}; stop it first (SIGINT/SIGTERM or a shutdown "
            "command), or give ups up another --db"
        )


def cmd_up(args: argparse.Namespace) -> int:
    from .supervisor import Supervisor, install_signal_handlers, python_module

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    s = _settings(args)
    _refuse_a_running_flow(s)
    summary = _prepare(args, s)
    print(f"database {s.db}: " + ("; ".join(summary.steps) or "ready"), flush=True)

    def api_argv(db: DbLocation) -> list[str]:
        return python_module("ups", "api", "--db", location_arg(db), "--host", s.host, "--port", str(s.port))

    def env_for(db: DbLocation) -> dict[str, str]:
        """The dataset's recorded generator settings: the live stream continues that population."""
        from storage import data_config, open_store

        with open_store(db) as store:
            found = data_config.in_effect(store)
        config = found if found is not None else data_config.of_settings(s)
        if args.users is not None and config.get("users") != args.users:
            print(f"{db} holds a dataset of {config.get('users')} users; --users {args.users} is ignored",
                  file=sys.stderr, flush=True)
        if args.live_rate is not None:
            config["live_rate"] = args.live_rate
        return data_config.as_env(config)

    sup = Supervisor(s, dataflow_argv=dataflow_argv, api_argv=api_argv, env_for=env_for,
                     say=lambda m: print(m, flush=True))
    install_signal_handlers(sup)
    sup.start()
    # a wildcard address is no name to ask for: the API answers only allowed Host names (loopback ones)
    local = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(s.host, s.host)
    host = f"[{local}]" if ":" in local else local
    # the supervisor runs (restarts a crashing dataflow) while the announcement waits for every part
    threading.Thread(target=_announce, args=(f"http://{host}:{s.port}", s, sup), daemon=True).start()
    return sup.run()


def _announce(url: str, s: Any, sup: Any) -> None:
    """The URLs, once, when every part is ready; what it still waits for until then (on stderr)."""
    from .ready import wait_until_ready

    state = wait_until_ready(url, lambda m: print(m, file=sys.stderr, flush=True), sup.stopping, s.ready_timeout)
    if sup.stopping.is_set():
        return
    if state.problem:
        print(f"scoring is {state.problem}; see {s.log_dir / 'api.log'}", file=sys.stderr, flush=True)
    if "API" in state.waiting:
        print(f"the API did not come up; see {s.log_dir / 'api.log'}", file=sys.stderr, flush=True)
        return
    if not state.ready:
        print(f"still waiting for {', '.join(state.waiting)} after {s.ready_timeout:.0f} s; the URLs anyway:",
              file=sys.stderr, flush=True)
    print(f"API      {url}\nOpenAPI  {url}/schema/swagger  ({url}/schema/openapi.json)\nconsole  {url}/console\n"
          f"logs     {s.log_dir}\nCtrl-C stops everything.", flush=True)
