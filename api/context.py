"""What every request handler needs: the settings, the database, the scoring service, the job runner.

One :class:`AppContext` per app (kept in ``app.state``, handed to handlers as the ``ctx`` dependency),
so two apps in one process (tests) never share anything.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import anyio
from litestar.di import NamedDependency

from config.db_location import DbLocation
from storage import Store, open_store

from .errors import Unavailable
from .resources import ProcessMeter
from config.settings import Settings

if TYPE_CHECKING:
    from scoring.service import ScoringService

    from .explain_pool import ExplainPool

    from .jobs import JobRunner

T = TypeVar("T")

#: what a request refused while the API starts up is told to wait (seconds)
RETRY_AFTER_S = 2


class Database:
    """One store connection per thread: handlers run on the event loop and in worker threads."""

    def __init__(self, path: DbLocation) -> None:
        self.path = path
        self._local = threading.local()
        self._generation = 0  # bumped by reopen(): every thread's connection is then opened anew
        open_store(path).close()  # create and migrate once, up front

    def store(self) -> Store:
        s: Store | None = getattr(self._local, "store", None)
        if s is None or (self._local.generation != self._generation and not s.in_transaction):
            if s is not None:
                s.close()
            s = open_store(self.path)
            self._local.store, self._local.generation = s, self._generation
        return s

    def reopen(self) -> None:
        """Each thread opens a new connection at its next use outside a transaction (one opened while the
        file was read-only stays read-only after the file becomes writable)."""
        self._generation += 1


class AppContext:
    """Not a dataclass on purpose: Litestar's signature model would try to validate its fields."""

    def __init__(self, settings: Settings, stop_server: Callable[[], None] | None = None) -> None:
        self.settings = settings
        #: called once shutdown has stopped jobs and the dataflow: stops the HTTP server
        self.stop_server: Callable[[], None] = stop_server or (lambda: None)
        self.started_at = time.time()
        self.shutting_down = False
        #: "loading" until the start-up warm-up built the scoring service, then "ready" or the problem
        self.scoring_state = "loading"
        self.jobs: "JobRunner | None" = None
        #: this app's Prometheus registry (metrics.py)
        self.registry: Any = None
        self.db = Database(settings.db)
        self.explain_limiter = anyio.CapacityLimiter(settings.explain_concurrency)
        self.explain_pool: "ExplainPool | None" = None
        self._scoring: "ScoringService | None" = None
        self._scoring_lock = threading.Lock()
        #: CPU and memory of the API, its workers and the dataflow (cached psutil objects per pid)
        self.meter = ProcessMeter(settings.process_sample_interval)

    def store(self) -> Store:
        """This thread's connection to the current database."""
        return self.db.store()

    def require_ready(self) -> None:
        """503 with Retry-After at once while the start-up warm-up loads scoring and the explainer: a
        request must not wait seconds behind it (clients retry; ``/health`` says when it is ready)."""
        if self.scoring_state == "loading":
            raise Unavailable(
                "starting up: the scoring service and the explainer are loading (models, rules); "
                f"retry in {RETRY_AFTER_S} s or watch /health until api.scoring is 'ready'",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )

    def scoring(self) -> "ScoringService":
        """The scoring service for a request: 503 while it loads at start-up (see :meth:`require_ready`)."""
        self.require_ready()
        return self.build_scoring()

    def build_scoring(self) -> "ScoringService":
        """The scoring service of the current database, built on first use (it loads models)."""
        with self._scoring_lock:
            if self._scoring is None:
                from scoring.service import ScoringService

                self._scoring = ScoringService(self.settings)
            return self._scoring

    def reopen_database(self) -> None:
        """After the store could not be written: the next request works on fresh connections."""
        self.db.reopen()
        if self._scoring is not None:
            self._scoring.reopen_store()

    def has_scoring(self) -> bool:
        return self._scoring is not None

    async def read(self, fn: "Callable[[ScoringService], T]") -> T:
        """A cheap scoring read (profile, score, recommendations: a few indexed queries and a small
        forward pass, ~0.1 ms): served on the event loop when the service is built and free, in a worker
        thread otherwise. The thread round trip costs more than such a read: two thread wake-ups, which on
        a busy machine showed as milliseconds in the latency tail. The loop itself never waits: not for
        the service's lock (held by a rule change or a refresh in a thread), not for building it."""
        self.require_ready()
        svc = self._scoring  # the reference alone: building it takes a lock and loads models
        if svc is not None:
            with svc.immediate() as free:
                if free:
                    return fn(svc)
        return await anyio.to_thread.run_sync(lambda: fn(self.scoring()))

    def start_explain_pool(self) -> None:
        """Explanation worker processes for the current database (none with ``explain_workers=0``)."""
        from .explain_pool import ExplainPool

        old, self.explain_pool = self.explain_pool, None
        if old is not None:
            old.close()
        if self.settings.explain_workers > 0:
            self.explain_pool = ExplainPool(self.settings, self.settings.explain_workers)

    def switch_db(self, path: DbLocation) -> None:
        """Serve another database from now on (after ``data/regenerate``)."""
        with self._scoring_lock:
            self.settings = self.settings.model_copy(update={"db": path})
            self.db = Database(path)
            self._scoring = None
        if self.jobs is not None:
            self.jobs.settings = self.settings
        if self.explain_pool is not None:
            self.start_explain_pool()

    def info(self) -> dict[str, Any]:
        return {"db": str(self.settings.db), "uptime_s": round(time.time() - self.started_at, 3),
                "scoring": self.scoring_state}


#: how handlers ask for the context (the app provides it as the ``ctx`` dependency)
Ctx = NamedDependency[AppContext]
