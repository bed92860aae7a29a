"""Real `ups dataflow` processes for tests: start one on a database, and never leave one behind."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from test_flow_control import _env  # tests/ is on sys.path (pytest rootdir import)


def start_flow(db: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "ups", "dataflow", "--quiet", *args], env=_env(db),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@contextmanager
def reaped(procs: list[subprocess.Popen[str]]) -> Iterator[list[subprocess.Popen[str]]]:
    """Kill whatever of ``procs`` (the list may grow inside the block) still runs when the block ends."""
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
