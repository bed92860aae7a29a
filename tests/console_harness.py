"""Browser-test support: the real system (``ups up``) on a temporary database on 127.0.0.1, and headless
Debian Chromium driven by Playwright, with every console message, page error and request recorded."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "console"
#: a laptop screen
VIEWPORT = {"width": 1366, "height": 768}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 60) -> tuple[int, Any]:
    """One JSON request to the real server (the tests' own view of what the API says)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    return send(req, timeout)


def send(req: urllib.request.Request, timeout: float = 60) -> tuple[int, Any]:
    """(status, parsed JSON body or text) of a request, error statuses included."""
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return err.code, json.loads(raw)
        except ValueError:
            return err.code, raw.decode(errors="replace")


@dataclass
class Server:
    """A real ``ups`` process tree (``ups up`` or ``ups api``) on 127.0.0.1, in its own process group."""

    argv: list[str]
    port: int
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 240, until_ready: bool = True) -> "Server":
        """Start and wait until /health answers and (``until_ready``) the scoring service has loaded."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = self.log.open("wb")
        self.proc = subprocess.Popen(
            self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{' '.join(self.argv)} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                # ready as ``ups up`` announces it: the API answers and its scoring service has loaded
                status, body = http("GET", f"{self.url}/health", timeout=2)
                if status == 200 and (not until_ready or body["api"]["scoring"] != "loading"):
                    return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"no /health within {timeout} s:\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout: float) -> bool:
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self) -> None:
        """Ctrl-C (clean stop of the supervisor and its children), then the group by its id if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGINT)
        if not self.wait_exit(30):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def ups_env(db: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPS_")}
    env.update({"UPS_DB": str(db), "UPS_DEVICE": "cpu", "PYTHONUNBUFFERED": "1",
                # a loaded CI machine may take the flow more than the default 5 s to apply a command
                "UPS_COMMAND_ACK_TIMEOUT": "30", "UPS_SSE_METRICS_INTERVAL": "1", **extra})
    return env


def ups_up(db: Path, users: int = 300, events_per_user: float = 8, live_rate: float = 40, **env: str) -> Server:
    port = free_port()
    argv = [
        sys.executable, "-m", "ups", "up", "--db", str(db), "--host", "127.0.0.1", "--port", str(port),
        "--users", str(users), "--events-per-user", str(events_per_user), "--live-rate", str(live_rate),
    ]
    return Server(argv, port, ups_env(db, **env), db.parent / "ups-up.log")


def ups_api(db: Path, **env: str) -> Server:
    """The API alone on an existing database (e.g. a second one with an admin token)."""
    port = free_port()
    argv = [sys.executable, "-m", "ups", "api", "--db", str(db), "--host", "127.0.0.1", "--port", str(port)]
    return Server(argv, port, ups_env(db, **env), db.parent / f"ups-api-{port}.log")


@dataclass
class PageLog:
    """What a page did: console errors, uncaught exceptions, and every URL it requested."""

    errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("console", lambda m: m.type == "error" and self.errors.append(f"{m.text} @ {m.location.get('url')}"))
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        page.on("request", lambda r: self.requests.append(r.url))

    def unexpected_errors(self, allowed_statuses: tuple[int, ...] = ()) -> list[str]:
        """Console errors other than the HTTP statuses a test provoked on purpose (e.g. 422, 404)."""
        allowed = tuple(f"status of {s} " for s in allowed_statuses)
        return [e for e in self.errors if not any(a in e for a in allowed)] + self.page_errors

    def foreign_hosts(self) -> set[str]:
        hosts = {urlsplit(u).hostname for u in self.requests if not u.startswith(("data:", "blob:", "about:"))}
        return {h for h in hosts if h not in ("127.0.0.1",)}


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.evaluate("window.scrollTo(0, 0)")  # a sticky header would otherwise be drawn mid-page
    page.screenshot(path=str(path), full_page=True)
    return path
