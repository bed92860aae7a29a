"""SHAP explanations in worker processes, so that eight at once leave the API's event loop (and its
GIL) free: ``/health`` and the cheap reads stay fast while Kernel SHAP runs.

One single-process executor per worker; a user always goes to the same worker (hash of the id), so
the explanation cache of that worker's scoring service serves the warm requests. Each worker's service
picks up new rules and model versions by itself; ``clear`` reaches every worker.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import zlib
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from config.settings import Settings
from scoring.results import ExplanationResult

from .errors import ApiError, Unavailable
from .jobs import exit_with_parent

log = logging.getLogger("ups.api.explain")

#: the scoring service of this worker process. A process-wide name is how a ProcessPoolExecutor
#: initializer hands state to the tasks of its process; the API process never sets it.
_SERVICE: Any = None


def _init(settings_doc: dict[str, Any]) -> None:
    global _SERVICE
    import torch

    from scoring.service import ScoringService

    # a killed API must not leave its explanation workers behind (they hold models and a database)
    threading.Thread(target=exit_with_parent, args=(os.getppid(),), daemon=True).start()
    # one thread per worker: the workers are the parallelism; torch's own pool on top oversubscribes the cores
    torch.set_num_threads(1)
    _SERVICE = ScoringService(Settings.model_validate(settings_doc))


def _explain(user_id: str, mode: str, top_k: int) -> tuple[str, Any]:
    """("ok", explanation) or ("error", (class name, reason)): scoring's exceptions don't pickle
    faithfully (their constructors take other arguments than their message)."""
    try:
        return "ok", _SERVICE.explain(user_id, mode=mode, top_k=top_k)
    except Exception as err:  # noqa: BLE001 - mapped to an HTTP status by the API process
        return "error", (type(err).__name__, [c.__name__ for c in type(err).__mro__],
                         str(getattr(err, "reason", "") or err))


def _clear() -> int:
    return int(_SERVICE.clear_cache())


class ExplainPool:
    def __init__(self, settings: Settings, workers: int) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._executors = [self._executor() for _ in range(workers)]

    def _executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_init,
            initargs=(self.settings.model_dump(mode="json"),),
        )

    def warm_up(self) -> None:
        """Start every worker (torch import, models) now rather than on the first explanation."""
        for f in [ex.submit(_clear) for ex in self._executors]:
            f.result()

    async def explain(self, user_id: str, mode: str, top_k: int) -> ExplanationResult:
        i = zlib.crc32(user_id.encode()) % len(self._executors)
        with self._lock:
            ex = self._executors[i]
        try:
            status, value = await asyncio.wrap_future(ex.submit(_explain, user_id, mode, top_k))
        except BrokenProcessPool:
            with self._lock:  # a worker died (killed, out of memory): the next request gets a new one
                if self._executors[i] is ex:
                    self._executors[i] = self._executor()
            raise Unavailable("the explanation worker stopped unexpectedly; try again") from None
        if status == "ok":
            out: ExplanationResult = value
            return out
        raise scoring_error(*value)

    def clear(self) -> int:
        with self._lock:
            executors = list(self._executors)
        futures: list[Future[int]] = [ex.submit(_clear) for ex in executors]
        return sum(f.result(timeout=60) for f in futures)

    def close(self) -> None:
        with self._lock:
            for ex in self._executors:
                ex.shutdown(wait=False, cancel_futures=True)


def scoring_error(name: str, mro: list[str], reason: str) -> ApiError:
    """The API error for a scoring exception raised in a worker (same mapping as errors.on_scoring)."""
    from .errors import SCORING_STATUS

    for cls in mro:
        if cls in SCORING_STATUS:
            return ApiError.of(*SCORING_STATUS[cls], reason)
    log.error("explanation failed: %s: %s", name, reason)
    return ApiError.of(500, "internal", "internal error while explaining; the server log has the details")
