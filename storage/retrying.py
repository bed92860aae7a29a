"""A store that waits out a PostgreSQL outage: for processes that must not stop while the server
restarts (the dataflow), never for request handlers (the API answers 503 at once instead).

Every call outside a transaction is retried with exponential back-off while it fails with a transient
error (:func:`storage.errors.is_transient`); a call inside a transaction is not (the transaction is gone
with its connection), so a caller retries the whole transaction with :func:`retry_transient`. Retrying is
safe because every write of the store is idempotent: appends on ``event_id``, projections as upserts of the
same documents at the same seqs, checkpoints as the same values.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from .errors import is_transient

log = logging.getLogger("ups.storage")

T = TypeVar("T")

#: the repositories of a store, whose methods are wrapped as the store's are
_REPOS = frozenset({"checkpoints", "profiles", "embeddings", "rules", "models", "jobs", "ops", "status"})
#: store members that are not statements: never retried (a transaction is retried by its caller)
_PLAIN = frozenset({"transaction", "close", "reopen", "in_transaction", "location", "read", "read_columns",
                    "export_rows", "__enter__", "__exit__"})


@dataclass
class BackOff:
    """Waits between tries: ``first`` seconds, doubled each time up to ``cap``."""

    what: str
    first: float = 0.2
    cap: float = 5.0

    def run(self, fn: Callable[[], T]) -> T:
        delay, since = self.first, None
        while True:
            try:
                result = fn()
            except Exception as err:
                if not is_transient(err):
                    raise
                if since is None:
                    since = time.monotonic()
                    log.warning("%s: the store is unreachable (%s); retrying every <= %.0f s", self.what,
                                str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__, self.cap)
                time.sleep(delay)
                delay = min(self.cap, delay * 2)
                continue
            if since is not None:
                log.warning("%s: the store is back after %.1f s", self.what, time.monotonic() - since)
            return result


def retry_transient(fn: Callable[[], T], what: str) -> T:
    """``fn()``, run again after a back-off for as long as it fails with a transient error."""
    return BackOff(what).run(fn)


class _Retrying:
    """Wraps an object's methods in a :class:`BackOff` (outside the store's transactions)."""

    def __init__(self, target: Any, store: Any, backoff: BackOff) -> None:
        self._target, self._store, self._backoff = target, store, backoff

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name in _REPOS and self._target is self._store:
            return _Retrying(attr, self._store, self._backoff)
        if name in _PLAIN or name.startswith("_") or not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._store.in_transaction:
                return attr(*args, **kwargs)
            return self._backoff.run(lambda: attr(*args, **kwargs))

        return call

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self._store.close()


def retrying(open_fn: Callable[[], Any], what: str) -> Any:
    """The store ``open_fn`` opens (waiting for the server if it is down), with its statements retried."""
    backoff = BackOff(what)
    store = backoff.run(open_fn)
    return _Retrying(store, store, backoff)
