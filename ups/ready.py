"""``ups up`` says "ready" when every part is: the API answers, its scoring service and explainer are
loaded, and the dataflow runs. Until then it shows which parts it still waits for (one line per change)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    #: the parts not ready yet, in words ("API", "scoring service and explainer (loading models)", …)
    waiting: tuple[str, ...]
    #: a part that gave up (e.g. scoring could not load: the requests that need it say why)
    problem: str | None = None


def readiness(url: str) -> Readiness:
    """What ``/health`` says of each part now."""
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as r:
            health: dict[str, Any] = json.loads(r.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
        return Readiness(False, ("API",))
    waiting = []
    scoring = str(health.get("api", {}).get("scoring", "loading"))
    if scoring == "loading":
        waiting.append("scoring service and explainer (loading models)")
    if not health.get("dataflow", {}).get("alive"):
        waiting.append("dataflow")
    problem = scoring if scoring.startswith("unavailable") else None
    return Readiness(not waiting, tuple(waiting), problem)


def wait_until_ready(url: str, say: Callable[[str], None], stop: threading.Event, timeout: float) -> Readiness:
    """Poll until every part is ready (or ``stop`` is set, or ``timeout``), saying what it waits for
    whenever that changes."""
    deadline = time.monotonic() + timeout
    shown: tuple[str, ...] = ()
    state = readiness(url)
    while not state.ready and not stop.is_set() and time.monotonic() < deadline:
        if state.waiting != shown:
            shown = state.waiting
            say("starting: waiting for " + ", ".join(shown))
        stop.wait(0.5)
        state = readiness(url)
    return state
