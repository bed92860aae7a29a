"""The append step's writer process: appends to the event log on another core.

The flow's Python work holds the GIL, so SQLite work in a thread of the same process hardly overlaps
with it (``executemany`` gives the GIL back and takes it again for every row). A child process owns
the log's write connection instead: the append step sends it each batch and goes on with the rest of
the flow while the child inserts it with :meth:`storage.event_store.EventStore.append` (the same
transaction, idempotent on ``event_id``); results come back in the order batches were sent.

Batches travel as ``marshal``led tuples of the event fields (exact floats, and several times cheaper
than pickling dataclasses); both ends are the same interpreter. The child exits when its input
closes, which is also what happens when the flow process dies: it finishes (commits) the batch in
hand, which the append being idempotent makes harmless.
"""

from __future__ import annotations

import marshal
import os
import pickle
import subprocess
import sys
from collections import deque
from multiprocessing.connection import Connection
from operator import attrgetter
from pathlib import Path
from typing import Any, Sequence

from storage.event_store import AppendResult, EventStore
from storage.events import Event

_fields = attrgetter("event_id", "type", "ts", "user_id", "target_id", "payload", "version")  # Event's order


class LogWriterError(RuntimeError):
    """The writer process failed (its SQLite error is in the message) or is gone."""


class LogWriter:
    """The parent's end: :meth:`send` a batch (returns once the child has taken it), :meth:`receive`
    the oldest batch not received yet with its :class:`AppendResult`."""

    def __init__(self, db: Path, cache_mb: int) -> None:
        self.db = Path(db)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", __name__, str(self.db), str(int(cache_mb))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        # multiprocessing's Connection frames the messages; it owns duplicates of the pipe ends
        self._to = Connection(os.dup(self.proc.stdin.fileno()), readable=False)
        self._from = Connection(os.dup(self.proc.stdout.fileno()), writable=False)
        self.proc.stdin.close()
        self.proc.stdout.close()
        self._sent: deque[Sequence[Event]] = deque()

    @property
    def in_flight(self) -> int:
        return len(self._sent)

    def send(self, events: Sequence[Event]) -> None:
        try:
            self._to.send_bytes(marshal.dumps(list(map(_fields, events))))
        except OSError as err:
            raise self._gone(err) from None
        self._sent.append(events)

    def ready(self) -> bool:
        """The oldest result is there (receive will not wait)."""
        return self.in_flight > 0 and self._from.poll(0)

    def receive(self) -> tuple[Sequence[Event], AppendResult]:
        try:
            kind, value = pickle.loads(self._from.recv_bytes())
        except (OSError, EOFError) as err:
            raise self._gone(err) from None
        events = self._sent.popleft()
        if kind == "error":
            raise LogWriterError(f"appending to the event log {self.db} failed: {value}")
        first, new, duplicates = value
        if new is None:  # all new: seqs first, first+1, ... in the order sent
            new = [(first + i, e.event_id) for i, e in enumerate(events)]
        return events, AppendResult(new=new, duplicates=duplicates)

    def _gone(self, err: BaseException) -> LogWriterError:
        code = self.proc.poll()
        return LogWriterError(f"the event log writer process stopped (exit code {code}): {err}")

    def close(self) -> None:
        """Let the child finish what it has, and wait for it."""
        self._to.close()
        try:
            self.proc.wait(timeout=60)
        finally:
            self._from.close()


def _serve(db: str, cache_mb: int) -> None:
    from .control import tune_writer

    # the protocol has stdout to itself: anything printed goes to stderr
    out = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)
    inp = Connection(os.dup(0), writable=False)
    store = EventStore(db)
    tune_writer(store, cache_mb)
    try:
        while True:
            try:
                rows = marshal.loads(inp.recv_bytes())
            except EOFError:
                return
            try:
                res = store.append([Event(*r) for r in rows])
            except Exception as err:  # sent back: the flow raises it
                out.send_bytes(pickle.dumps(("error", f"{type(err).__name__}: {err}")))
                continue
            new = res.new
            # the common case in three numbers: every event new, seqs consecutive from the first
            msg: Any = (new[0][0], None, 0) if new and res.duplicates == 0 else (0, new, res.duplicates)
            out.send_bytes(pickle.dumps(("ok", msg), protocol=pickle.HIGHEST_PROTOCOL))
    finally:
        store.close()


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]))
