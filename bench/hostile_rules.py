"""/health latency while hostile rule conditions are previewed and saved, against the same server idle.

A real ``ups api`` on 127.0.0.1 over a small folded store; a prober thread GETs /health every 20 ms, first
for ``--seconds`` with nothing else running (the baseline), then while a client previews and creates each
condition of the family below in a loop (each would run for minutes to hours in one C call without the
sandbox's bounds). Prints p50/p99/max of both phases and how the rule requests were answered.

    python -m bench.hostile_rules [--seconds 10 --users 300]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from dataflow.generator import GeneratorConfig, MockGenerator
from dataflow.profile import PROFILE_TYPES, ProfileState, fold
from storage.event_store import EventStore
from storage.projections import Profiles

HOSTILE = [
    "[[0] * 9999] * 9999 == [[0] * 9999] * 9999",
    "[[tenure_months] * 9999] * 9999 == [[tenure_months] * 9999] * 9999",
    "len(str([[[tenure_months] * 99] * 99] * 99)) > 0",
    "tenure_months in [[tenure_months] * 5000] * 5000",
    "str([plan_type] * 9999) == ''",
    " and ".join(["str([tenure_months] * 9999) != str([tenure_months] * 9998)"] * 8),
]


def _request(url: str, body: Any = None, method: str = "GET", timeout: float = 60) -> int:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError):
        return 0


def _store(db: Path, users: int) -> None:
    gen = MockGenerator(GeneratorConfig(users=users, products=20, apps=12, events_per_user=15, seed=7))
    with EventStore(db) as store:
        store.append(gen.dataset())
        states: dict[str, ProfileState] = {}
        for ev in store.read(types=sorted(PROFILE_TYPES)):
            if ev.user_id is not None:
                states[ev.user_id] = fold(states.get(ev.user_id), ev, ev.seq)
        with store.transaction() as conn:
            Profiles(conn).upsert_many((u, st.document(), st.last_seq) for u, st in states.items())


def _probe(url: str, seconds: float, busy: threading.Event | None = None) -> list[float]:
    out: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end and (busy is None or busy.is_set()):
        t0 = time.perf_counter()
        status = _request(f"{url}/health", timeout=30)
        out.append(time.perf_counter() - t0 if status == 200 else float("inf"))
        time.sleep(0.02)
    return out


def _show(name: str, lat: list[float]) -> None:
    xs = sorted(lat)
    q = lambda p: xs[min(len(xs) - 1, int(p * len(xs)))] * 1000  # noqa: E731
    print(f"{name:<28} {len(xs):5d} probes  p50 {q(0.5):7.1f} ms  p99 {q(0.99):7.1f} ms  max {xs[-1] * 1000:7.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--users", type=int, default=300)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ups-bench-"))
    db = tmp / "ups.db"
    _store(db, args.users)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "UPS_DEVICE": os.environ.get("UPS_DEVICE", "auto"), "UPS_EXPLAIN_WORKERS": "0"}
    server = subprocess.Popen([sys.executable, "-m", "ups", "api", "--db", str(db), "--port", str(port),
                               "--log-level", "warning"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        while _request(f"{url}/health", timeout=2) != 200:
            time.sleep(0.3)
        _request(f"{url}/api/v1/rules")  # the scoring service built
        print(f"load before: {os.getloadavg()[0]:.2f}")
        _show("/health idle", _probe(url, args.seconds))
        busy, answers = threading.Event(), Counter[str]()
        busy.set()

        def attack() -> None:
            end, i = time.monotonic() + args.seconds, 0
            while time.monotonic() < end:
                cond = HOSTILE[i % len(HOSTILE)]
                answers[f"preview {_request(f'{url}/api/v1/rules/preview', {'condition': cond}, 'POST')}"] += 1
                name = f"hostile_{i}"
                rule = {"name": name, "description": "", "weight": 1.0, "condition": cond}
                if _request(f"{url}/api/v1/rules", rule, "POST") == 201:
                    answers["created"] += 1
                    _request(f"{url}/api/v1/rules/{name}", method="DELETE")
                else:
                    answers["create refused"] += 1
                i += 1
            busy.clear()

        t = threading.Thread(target=attack)
        t.start()
        _show("/health with hostile rules", _probe(url, args.seconds + 60, busy))
        t.join()
        print("rule requests:", dict(answers), f"load after: {os.getloadavg()[0]:.2f}")
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
