"""Thread caps for scoring's small numeric work (torch intra-op and BLAS/OpenMP pools), and reading ahead.

The fusion model, Kernel SHAP's regressions and fusion training are small: on a busy 2-core machine one
thread runs them several times faster than two threads waiting for each other (measured in
bench/scoring.py). The cap applies while a block runs and the previous settings come back after it;
nested and concurrent blocks share one cap (the first in sets it, the last out restores it).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Iterator, TypeVar

import torch
from threadpoolctl import ThreadpoolController

T = TypeVar("T")


class ThreadLimit:
    """``with limit:`` runs the block with at most ``n`` threads (``n = 0``: leave the libraries alone)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._lock = threading.Lock()
        self._depth = 0
        self._controller: ThreadpoolController | None = None
        self._torch_before = 0
        self._blas: Any = None

    def __enter__(self) -> "ThreadLimit":
        if self.n <= 0:
            return self
        with self._lock:
            if self._depth == 0:
                if self._controller is None:  # scans the loaded libraries: once, after torch is loaded
                    self._controller = ThreadpoolController()
                self._torch_before = torch.get_num_threads()
                torch.set_num_threads(self.n)
                self._blas = self._controller.limit(limits=self.n)
            self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        if self.n <= 0:
            return
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                torch.set_num_threads(self._torch_before)
                self._blas.restore_original_limits()
                self._blas = None


def read_ahead(items: Iterable[T]) -> Iterator[T]:
    """``items`` with the next one produced on a worker thread while the caller works on the current
    one: SQLite releases the GIL while it scans, so reading the log overlaps with building from it."""
    it = iter(items)
    done = object()
    with ThreadPoolExecutor(1, thread_name_prefix="ups-read-ahead") as pool:
        ahead = pool.submit(next, it, done)
        while True:
            item = ahead.result()
            if item is done:
                return
            ahead = pool.submit(next, it, done)
            yield item  # type: ignore[misc]
