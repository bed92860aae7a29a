"""A real ``ups api`` process on a temporary folded store, for the hardening tests that need real sockets,
real threads and a real event loop (a frozen API shows only there)."""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from console_harness import Server, free_port, http, send, ups_env


def ups_api(db: Path, **env: str) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "ups", "api", "--db", str(db), "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning"]
    return Server(argv, port, ups_env(db, UPS_EXPLAIN_WORKERS="0", **env), db.parent / "ups-api.log")


@dataclass
class HealthProbe:
    """GETs /health every ``interval`` seconds on its own thread, recording each answer's latency (None:
    no answer within ``timeout``)."""

    url: str
    interval: float = 0.02
    timeout: float = 5.0
    latencies: list[float | None] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                status, _ = http("GET", f"{self.url}/health", timeout=self.timeout)
                self.latencies.append(time.perf_counter() - t0 if status == 200 else None)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                self.latencies.append(None)
            self._stop.wait(self.interval)

    def running(self) -> Iterator["HealthProbe"]:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(self.timeout + 1)

    def quantile(self, q: float) -> float:
        answered = sorted(x for x in self.latencies if x is not None)
        return answered[min(len(answered) - 1, int(q * len(answered)))] if answered else float("nan")


def json_request(url: str, method: str = "POST", body: Any = None, **headers: str) -> tuple[int, Any]:
    """A request with exactly the headers given (``http`` always sends application/json)."""
    data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
    return send(urllib.request.Request(url, data=data, method=method, headers=headers), timeout=30)
