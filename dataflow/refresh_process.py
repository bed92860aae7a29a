"""The embedding refresh in a process of its own, beside the flow.

Inside the flow the refresh shares one Python thread (the GIL) with the fold: at a million users and
5 000 events/s the fold kept the core busy and the refresh got 200-1 700 nodes/s against ~6 000 marked.
Here the flow's step (:class:`ProcessRefreshLogic`) only forwards how far the log has been handed on
(``LogBatch.upto``), the operator's switches and the snapshots; a child process
(``python -m dataflow.refresh_process``) reads the events up to there from the store itself, runs the
same :class:`~dataflow.refresh_step.RefreshLogic` on its own tick and writes its rows. The flow then
only folds and appends.

Recovery stays the flow's: the step's snapshot is the newest the child sent (the refresher's, every
event handed over observed first, so the same :class:`~scoring.refresh.RefresherSnapshot` the in-flow
step takes; at most every ``SNAPSHOT_EVERY_S``, and the flow never waits for one), and a resumed flow
starts the child from it. The child exits when its input closes (the flow ended,
however) and ignores Ctrl-C, which is the flow's to handle. While the child still builds its graph
(a minute at a million users) the flow does not wait for it: a snapshot is then the one it started
from (the child reads the log from there, so nothing handed over is lost), and a stop ends it.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from multiprocessing.connection import Connection
from typing import Any, Callable, Iterable, Optional

from bytewax.operators import StatefulLogic

from config.settings import Settings
from scoring.embed import EmbeddingRowT, write_rows
from scoring.refresh import IncrementalRefresher, RefresherSnapshot
from scoring.results import RefresherStatus
from storage import Store, open_store, retry_transient

from .refresh_step import RefreshControl, RefreshLogic, RefreshOutput
from .sources import LogBatch

#: events read from the store per batch handed to the refresher
READ_CHUNK = 20_000
#: seconds between the child's snapshots, however often the flow's epochs ask: one lists every pending
#: node (seconds of the child's time with 300 000 pending at a million users), and an older one only
#: means more of the log read again after a resume
SNAPSHOT_EVERY_S = 30.0


class RefreshProcessError(RuntimeError):
    """The refresher's process failed (its error is in the message) or is gone."""


@dataclass(frozen=True)
class _Start:
    settings: Settings
    resume: RefresherSnapshot | None
    kw: dict[str, Any]


class ProcessRefreshLogic(StatefulLogic):
    """The flow's end of the refresher process: an ``op.stateful`` logic taking the same items as
    :class:`~dataflow.refresh_step.RefreshLogic` (log batches, ``RefreshControl``) and emitting the
    child's status (its rows go to the store from the child)."""

    #: how long a stop waits for a child still building its graph (a small store takes seconds, the
    #: interpreter's start included; a million users a minute or more, which a stop does not wait out)
    READY_WAIT_S = 30.0

    def __init__(
        self,
        settings: Settings,
        resume: RefresherSnapshot | None,
        paused: Callable[[], bool] | None = None,
        on_status: Callable[[RefresherStatus], None] | None = None,
        **kw: Any,
    ) -> None:
        self.paused = paused
        self.on_status = on_status
        self.tick_s = settings.refresh_tick_s
        self._snapshot = resume  # the newest the child sent (the one it started from before that)
        self._asked = False  # a snapshot asked of the child and not received yet
        self._ready = False
        self._status: RefresherStatus | None = None
        self._upto = resume.last_seq if resume is not None else 0
        self._sent_upto = self._upto
        self._sent_paused: bool | None = None
        self._next = datetime.now(timezone.utc)
        # a session of its own: Ctrl-C in a terminal reaches the flow's process group, not this child (the
        # flow stops it through its input, however the flow ends)
        self.proc = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     start_new_session=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._to = Connection(os.dup(self.proc.stdin.fileno()), readable=False)
        self._from = Connection(os.dup(self.proc.stdout.fileno()), writable=False)
        self.proc.stdin.close()
        self.proc.stdout.close()
        self._send(("start", _Start(settings, resume, kw)))

    # ------------------------------------------------------------------ the pipe

    def _gone(self, err: BaseException | None = None) -> RefreshProcessError:
        code = self.proc.poll()
        return RefreshProcessError(f"the embedding refresher process stopped (exit code {code})"
                                   + (f": {err}" if err else ""))

    def _send(self, msg: tuple[Any, ...]) -> None:
        try:
            self._to.send_bytes(pickle.dumps(msg, pickle.HIGHEST_PROTOCOL))
        except OSError as err:
            raise self._gone(err) from None

    def _take(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "error":
            raise RefreshProcessError(f"the embedding refresher failed: {msg[1]}")
        if kind == "ready":
            self._ready = True
        if kind in ("ready", "status"):
            self._status = msg[1]
        elif kind == "snapshot":
            self._asked = False
            if msg[1] is not None:
                self._snapshot = msg[1]

    def _receive(self, until: str | None = None) -> tuple[Any, ...] | None:
        """Take what the child sent; with ``until``, wait for a message of that kind and return it."""
        while until is not None or self._from.poll(0):
            try:
                msg = pickle.loads(self._from.recv_bytes())
            except (OSError, EOFError) as err:
                raise self._gone(err) from None
            self._take(msg)
            if msg[0] == until:
                return msg
        return None

    def _forward(self) -> None:
        """The log's progress and the pause switch, when they changed (a message per tick at most: the
        child may still be building its graph, with the pipe filling meanwhile)."""
        if self._upto > self._sent_upto:
            self._send(("upto", self._upto))
            self._sent_upto = self._upto
        if self.paused is not None and (p := self.paused()) != self._sent_paused:
            self._send(("paused", p))
            self._sent_paused = p

    # ------------------------------------------------------------------ StatefulLogic

    def on_item(self, value: Any) -> tuple[Iterable[RefreshOutput], bool]:
        if isinstance(value, RefreshControl):
            if value.command not in ("pause", "resume", "reload"):
                raise ValueError(f"unknown refresh command {value.command!r} (pause, resume, reload)")
            self._forward()
            self._send(("control", value.command))
        elif isinstance(value, LogBatch):
            self._upto = max(self._upto, value.upto)
        else:
            raise TypeError(f"the refresher process takes log batches and RefreshControl, not {type(value).__name__}")
        return [], StatefulLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[RefreshOutput], bool]:
        if self.proc.poll() is not None:
            self._receive()  # its last words, if any
            raise self._gone()
        self._forward()
        self._receive()
        self._next = datetime.now(timezone.utc) + timedelta(seconds=self.tick_s)
        if self._status is not None and self.on_status is not None:
            self.on_status(self._status)
        return [RefreshOutput([], self._status)], StatefulLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[RefreshOutput], bool]:
        """The child works its queue for at most ``stop_drain_s`` and hands over its last snapshot; one
        still building its graph after ``READY_WAIT_S`` is ended (it has observed nothing the snapshot
        it started from lacks)."""
        self._receive()
        deadline = time.monotonic() + self.READY_WAIT_S
        while not self._ready and self.proc.poll() is None and (left := deadline - time.monotonic()) > 0:
            if self._from.poll(min(left, 0.1)):
                self._receive()
        if self._ready:
            if self._status is not None and self.on_status is not None:
                self.on_status(self._status)  # the flow's status shows the refresher while it stops
            self._forward()
            self._send(("stop",))
            _, self._snapshot, self._status = self._receive(until="stopped") or (None, None, None)
        self._close()
        if self._status is not None and self.on_status is not None:
            self.on_status(self._status)
        return [RefreshOutput([], self._status)], StatefulLogic.RETAIN

    def notify_at(self) -> Optional[datetime]:
        return self._next

    def snapshot(self) -> RefresherSnapshot | None:
        """The newest snapshot the child sent, and a newer one asked for the next epoch: the flow does
        not wait for it (at a million users with 300 000 nodes pending one takes seconds). Any snapshot
        of the child's is a sound resume point for any later epoch of the flow: the child reads the log
        from the store after its snapshot's seq, up to what the resumed flow hands on."""
        if self._ready and self.proc.poll() is None:
            self._receive()
            if not self._asked:
                self._forward()
                self._send(("snapshot",))
                self._asked = True
        return self._snapshot

    def _close(self) -> None:
        self._to.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # (a graph build that does not end: the state is the snapshot's)
            self.proc.kill()
            self.proc.wait()
        self._from.close()
        self._ready = False


def process_refresh_builder(
    settings: Settings,
    *,
    paused: Callable[[], bool] | None = None,
    on_status: Callable[[RefresherStatus], None] | None = None,
    **kw: Any,
) -> Callable[[Optional[RefresherSnapshot]], ProcessRefreshLogic]:
    """The ``builder`` for ``op.stateful``: a refresher process, fresh or restored from the snapshot."""

    def build(resume: Optional[RefresherSnapshot]) -> ProcessRefreshLogic:
        return ProcessRefreshLogic(settings, resume, paused, on_status, **kw)

    return build


# ------------------------------------------------------------------------------------ the child


class _Child:
    """The refresher, fed from the store up to the seq the flow has handed on."""

    def __init__(self, start: _Start, out: Connection) -> None:
        self.out = out
        self.paused = False
        refresher = IncrementalRefresher.restore(start.settings, start.resume, **start.kw)
        refresher.warm()  # (its indexes before it says it is ready, not in its first tick)
        self.logic = RefreshLogic(refresher, paused=lambda: self.paused)
        self.store: Store = open_store(start.settings.db, wait_out="the embedding refresher")
        self.seen = self.logic.refresher.graph.last_seq
        self.upto = start.resume.last_seq if start.resume is not None else self.seen
        self.snapped = -float("inf")

    def send(self, *msg: Any) -> None:
        self.out.send_bytes(pickle.dumps(msg, pickle.HIGHEST_PROTOCOL))

    def read(self, everything: bool = False) -> None:
        """Hand the refresher the events after the last read, up to ``upto`` (a chunk, or all)."""
        while self.upto > self.seen:
            end = min(self.upto, self.seen + READ_CHUNK)
            events = list(self.store.read(self.seen + 1, end))
            if events:
                self.logic.on_item(LogBatch(list(events), [e.seq for e in events], end))
            self.seen = end
            if not everything:
                return

    def write(self, outs: Iterable[RefreshOutput]) -> RefresherStatus | None:
        rows: list[EmbeddingRowT] = []
        status = None
        for o in outs:
            rows += o.rows
            status = o.status or status
        if rows:  # one transaction; a server outage is waited out (upserts: harmless again)
            retry_transient(lambda: write_rows(self.store, rows, batch=len(rows)), "the embedding refresher")
        return status

    def command(self, msg: tuple[Any, ...]) -> bool:
        """Act on one message from the flow; False once stopped."""
        kind = msg[0]
        if kind == "upto":
            self.upto = max(self.upto, int(msg[1]))
        elif kind == "paused":
            self.paused = bool(msg[1])
        elif kind == "control":
            self.logic.on_item(RefreshControl(msg[1]))
        elif kind == "snapshot":  # (at most every SNAPSHOT_EVERY_S: None says the last one stands)
            if time.monotonic() - self.snapped < SNAPSHOT_EVERY_S:
                self.send("snapshot", None)
            else:
                self.read(everything=True)
                self.send("snapshot", self.logic.snapshot())
                self.snapped = time.monotonic()
        elif kind == "stop":
            self.read(everything=True)
            status = self.write(self.logic.on_eof()[0])
            self.send("stopped", self.logic.snapshot(), status)
            return False
        return True

    def run(self, inp: Connection) -> None:
        self.send("ready", self.logic.refresher.status())
        next_tick = time.monotonic()
        while True:
            wait = max(0.0, next_tick - time.monotonic()) if self.upto <= self.seen else 0.0
            while inp.poll(wait):
                if not self.command(pickle.loads(inp.recv_bytes())):
                    return
                wait = 0.0
            self.read()
            if time.monotonic() >= next_tick:
                status = self.write(self.logic.on_notify()[0])
                if status is not None:
                    self.send("status", status)
                next_tick = time.monotonic() + self.logic.refresher.config.tick_s

    def close(self) -> None:
        self.logic.refresher.close()
        self.store.close()


def _serve() -> None:
    # Ctrl-C in a terminal (or SIGTERM to the process group) is for the flow, which then stops this
    # process through its input; it ends when that closes, however the flow ends
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    out = Connection(os.dup(1), readable=False)  # the protocol has stdout to itself
    os.dup2(2, 1)
    inp = Connection(os.dup(0), writable=False)
    child: _Child | None = None
    try:
        _, start = pickle.loads(inp.recv_bytes())
        # below the API and the flow: at 1M users on two shared cores the refresh took a core and the
        # API, starved, answered /api/v1/user at 500/s in seconds while its own handling took <= 20 ms
        os.nice(start.settings.refresh_nice)
        child = _Child(start, out)
        child.run(inp)
    except EOFError:
        return  # the flow is gone
    except Exception as err:  # sent back: the flow raises it
        try:
            out.send_bytes(pickle.dumps(("error", f"{type(err).__name__}: {err}")))
        except OSError:
            pass
        raise
    finally:
        if child is not None:
            child.close()


if __name__ == "__main__":
    _serve()
