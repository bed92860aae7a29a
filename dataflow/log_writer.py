"""The event log's writer process: validation and appends on another core.

The flow's Python work holds the GIL, so work in a thread of the same process hardly overlaps with it
(``executemany`` even gives the GIL back and takes it again for every row). A child process takes the
input batches instead: it validates each (:func:`dataflow.validate.validate_items`), appends the valid
events with :meth:`storage.event_store.EventStore.append` (idempotent on ``event_id``) and stores the
refused ones as dead letters with their reason, in one transaction; meanwhile the flow folds the
batches before it. Results come back in the order batches were sent.

Batches travel ``marshal``led (exact floats; several times cheaper than pickling dataclasses; both ends
are the same interpreter): an Event as the tuple of its fields, anything else as itself. The parent
keeps its own Event objects, so the reply names only the items refused and the events validation
changed (an int time made a float, ...), whose validated fields it carries; marshal format 2 writes
values and types only (no sharing marks), so equal bytes mean equal events. The child exits when its
input closes, which is also what happens when the flow process dies: it finishes (commits) the batch
in hand, which the append being idempotent makes harmless.
"""

from __future__ import annotations

import fcntl
import marshal
import os
import signal
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection
from operator import attrgetter
from typing import Any

from config.db_location import DbLocation, location_arg
from storage import Store, open_store, retry_transient
from storage.event_store import AppendResult, _raw_text
from storage.events import Event, InvalidEvent

from .collector import collector_for_throughput
from .sources import IngestBatch
from .validate import check_event, unpack, validate_items

_KEYS = ("event_id", "type", "ts", "user_id", "target_id", "payload", "version")  # Event's fields in order
_fields = attrgetter(*_KEYS)
_WIRE = 2  # marshal format: no interning or sharing marks, binary floats
#: what a batch holds: only Events (sent as field tuples), or anything (each item tagged, see _portable)
EVENTS, MIXED = 0, 1
_PIPE_BYTES = 4 << 20


class LogWriterError(RuntimeError):
    """The writer process failed (its error is in the message) or is gone."""


@dataclass(slots=True)
class Appended:
    """What the writer did with one input batch."""

    events: list[Event]  # the valid events, as validated and appended, in input order
    result: AppendResult
    origin: str
    rejected: int  # items refused (stored as dead letters, in the same transaction)
    first_reason: str | None


def _portable(item: Any, prefix: str) -> tuple[str, Any]:
    """A MIXED batch's item: ("e", Event fields), ("r", raw item) or, for what marshal cannot carry,
    the outcome of validating it here: ("v", the valid event's fields) or ("x", (raw text, reason))."""
    if type(item) is Event:
        return "e", _fields(item)
    try:
        marshal.dumps(item, _WIRE)
        return "r", item
    except ValueError:
        try:
            return "v", _fields(check_event(item))
        except InvalidEvent as err:
            return "x", (_raw_text(item), prefix + err.reason)


def _widen(fd: int) -> None:
    """Room in the pipe for a whole batch (Linux: up to ``fs.pipe-max-size``, 1 MiB by default), so the
    flow does not wait for the child to finish the batch before while it sends the next one."""
    try:
        with open("/proc/sys/fs/pipe-max-size") as f:
            size = min(int(f.read()), _PIPE_BYTES)
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)  # type: ignore[attr-defined]
    except (OSError, ValueError, AttributeError):
        pass  # elsewhere the default pipe: the flow waits a little more


class LogWriter:
    """The parent's end: :meth:`send` an input batch (returns once the child has taken it),
    :meth:`receive` what became of the oldest batch not received yet."""

    def __init__(self, db: DbLocation, cache_mb: int) -> None:
        self.db = db
        self.proc = subprocess.Popen(
            [sys.executable, "-m", __name__, location_arg(self.db), str(int(cache_mb))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        # multiprocessing's Connection frames the messages; it owns duplicates of the pipe ends
        self._to = Connection(os.dup(self.proc.stdin.fileno()), readable=False)
        _widen(self._to.fileno())
        self._from = Connection(os.dup(self.proc.stdout.fileno()), writable=False)
        self.proc.stdin.close()
        self.proc.stdout.close()
        self._sent: deque[tuple[list[Any], str]] = deque()

    @property
    def in_flight(self) -> int:
        return len(self._sent)

    def send(self, batch: IngestBatch | list[Any]) -> None:
        origin, items, lines, unit = unpack(batch)
        if all(type(x) is Event for x in items):  # the mock stream, the usual case
            kind, wire = EVENTS, marshal.dumps(list(map(_fields, items)), _WIRE)
        else:
            prefixes = [f"{unit} {n}: " for n in lines] if lines is not None else [""] * len(items)
            kind, wire = MIXED, marshal.dumps(list(map(_portable, items, prefixes)), _WIRE)
        try:
            self._to.send_bytes(marshal.dumps((origin, lines, unit, kind, wire)))
        except OSError as err:
            raise self._gone(err) from None
        self._sent.append((items, origin))

    def ready(self) -> bool:
        """The oldest result is there (receive will not wait)."""
        return bool(self._sent) and self._from.poll(0)

    def receive(self) -> Appended:
        try:
            status, value = marshal.loads(self._from.recv_bytes())
        except (OSError, EOFError) as err:
            raise self._gone(err) from None
        items, origin = self._sent.popleft()
        if status == "error":
            raise LogWriterError(f"appending to the event log {self.db} failed: {value}")
        first, new, duplicates, dropped, changed, first_reason = value
        if not dropped and not changed:
            events = items
        else:
            skip = set(dropped)
            events = [Event(*changed[k]) if k in changed else e for k, e in enumerate(items) if k not in skip]
        if new is None:  # all new: seqs first, first + 1, ... in input order
            new = [(first + i, e.event_id) for i, e in enumerate(events)]
        return Appended(events, AppendResult(new=new, duplicates=duplicates), origin, len(dropped), first_reason)

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


# ------------------------------------------------------------------------------------ the child


def _append(
    store: Store, origin: str, lines: list[int] | None, unit: str, kind: int, wire: bytes
) -> tuple[Any, ...]:
    rows = marshal.loads(wire)
    raws: list[Any]
    theirs: list[Any]  # the parent's version of each item: Event fields, or None (not an Event there)
    refused: dict[int, tuple[str, str]] = {}
    if kind == EVENTS:
        # validated as the dicts Event.to_dict makes (cheaper than the Events; same outcomes)
        raws = [dict(zip(_KEYS, t)) for t in rows]
        theirs = rows
    else:
        raws, theirs = [], []
        for k, (tag, value) in enumerate(rows):
            raws.append(Event(*value) if tag in ("e", "v") else value if tag == "r" else None)
            theirs.append(value if tag == "e" else None)
            if tag == "x":
                refused[k] = value
    outcomes = validate_items(raws, lines, unit)
    for k, (text, reason) in refused.items():
        raws[k], outcomes[k] = text, reason
    good = [o for o in outcomes if type(o) is Event]
    dropped = [k for k, o in enumerate(outcomes) if type(o) is not Event] if len(good) < len(raws) else []
    # a refused Event is kept as the Event (its dead letter text is Event.to_json)
    rejected = [(Event(*rows[k]) if kind == EVENTS else raws[k], str(outcomes[k])) for k in dropped]
    with store.transaction():
        res = store.append(good)
        # an event whose id is in the log with other content is not appended: kept as a dead letter
        if res.conflicts:
            at = {id(o): k for k, o in enumerate(outcomes) if type(o) is Event}
            rejected.extend(
                (e, f"{unit} {lines[at[id(e)]]}: {why}" if lines is not None else why) for e, why in res.conflicts
            )
        if rejected:
            store.add_dead_letters(rejected, origin)
    changed: dict[int, Any] = {}
    if not (kind == EVENTS and not dropped and marshal.dumps(list(map(_fields, good)), _WIRE) == wire):
        for k, o in enumerate(outcomes):
            if type(o) is Event:
                mine = _fields(o)
                if theirs[k] is None or marshal.dumps(mine, _WIRE) != marshal.dumps(theirs[k], _WIRE):
                    changed[k] = mine
    new = res.new
    first_reason = str(rejected[0][1]) if rejected else None
    if new and res.duplicates == 0:  # the common case in one number: seqs consecutive from the first
        return new[0][0], None, 0, dropped, changed, first_reason
    return 0, new, res.duplicates, dropped, changed, first_reason


def _serve(db: str, cache_mb: int) -> None:
    from .control import tune_writer

    # Ctrl-C in a terminal (or SIGTERM to the process group) is for the flow, which then stops cleanly
    # through this process; it ends when its input closes, however the flow ends
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # the protocol has stdout to itself: anything printed goes to stderr
    out = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)
    inp = Connection(os.dup(0), writable=False)
    store = open_store(db, wait_out="the event log writer")
    tune_writer(store, cache_mb)
    with collector_for_throughput():
        try:
            while True:
                try:
                    origin, lines, unit, kind, wire = marshal.loads(inp.recv_bytes())
                except EOFError:
                    return
                try:
                    # a server outage is waited out: the batch is appended again once it is back (idempotent)
                    reply: tuple[str, Any] = (
                        "ok", retry_transient(partial(_append, store, origin, lines, unit, kind, wire), "the event log writer")
                    )
                except Exception as err:  # sent back: the flow raises it
                    reply = ("error", f"{type(err).__name__}: {err}")
                out.send_bytes(marshal.dumps(reply))
        finally:
            store.close()


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]))
