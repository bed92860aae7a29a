"""The embedding-refresh branch of the live flow: scoring's incremental refresher as a Bytewax
``StatefulLogic`` on the log's stream of batches, its embeddings upserted by a sink, its status merged
into the flow's.

The model stack (torch, the refresher) is imported where the refresher is built, on its own thread: at
the flow's start those imports took ~5 s of its worker's time on a loaded machine."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.operators import StatefulLogic
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from config.settings import Settings
from scoring.results import RefresherStatus
from storage import open_store, retry_transient

from .control import FlowControl
from .flow import AttachRefresh
from .sources import LogBatch

if TYPE_CHECKING:
    from scoring.embed import EmbeddingRowT
    from scoring.refresh import IncrementalRefresher, RefresherSnapshot

#: the status keys the dataflow's status document takes from the refresh step
REFRESH_STATUS_KEYS: tuple[str, ...] = (
    "refresh_queue", "oldest_pending_s", "refreshes_per_s", "model_version", "device",
    "gpu_allocated_bytes", "gpu_reserved_bytes",  # only on CUDA
)


@dataclass
class RefreshOutput:
    """What one tick of the Bytewax step emits: rows for ``Embeddings.put_many`` and the status."""

    rows: list[EmbeddingRowT] = field(default_factory=list)
    status: RefresherStatus | None = None


@dataclass(frozen=True)
class RefreshControl:
    """A control item for the step: ``pause``, ``resume`` or ``reload`` (look for a new model now)."""

    command: str


class RefreshLogic(StatefulLogic):
    """``op.stateful`` logic: events (``StoredEvent``, ``(seq, Event)``, or a batch with ``events``,
    ``seqs`` and ``upto`` such as the flow's ``LogBatch``) and ``RefreshControl`` items in; a
    ``RefreshOutput`` out on every tick (``on_notify``) and at EOF, after working the queue for at most
    ``stop_drain_s``.

    ``paused`` (polled every tick, e.g. ``lambda: control.refresh_paused``) and ``on_status`` (called
    with the status every tick, e.g. ``lambda st: control.set_refresh_status(**st)``) connect it to
    the flow's controls without importing the flow.

    Events are buffered and applied to the graph in one batch per tick (one ``apply`` per event would
    cost more than the refresh at thousands of events per second); a snapshot applies the buffer first,
    so what it records as seen has marked its nodes.

    The refresher may be given still being built (a ``Future``: :func:`refresh_builder` builds it on a
    thread of its own, since reading the graph, the stored embeddings and layer states of 1M users
    takes the better part of a minute and the flow's worker would ingest nothing meanwhile): events and
    controls wait in the buffer until it is ready, and a snapshot taken meanwhile is the one it is
    being restored from, moved up to the newest event buffered (a restore rebuilds the graph from the
    store up to there and marks every node whose stored embedding is older than its last event)."""

    MAX_BUFFER = 20_000

    def __init__(
        self,
        refresher: IncrementalRefresher | Future[IncrementalRefresher],
        paused: Callable[[], bool] | None = None,
        on_status: Callable[[RefresherStatus], None] | None = None,
        resumed: RefresherSnapshot | None = None,
    ) -> None:
        self._refresher = None if isinstance(refresher, Future) else refresher
        self._building = refresher if isinstance(refresher, Future) else None
        self._resumed = resumed
        self.paused = paused
        self.on_status = on_status
        self._buffer: list[Any] = []
        self._next = datetime.now(timezone.utc)

    @property
    def refresher(self) -> IncrementalRefresher:
        """The refresher, waited for if it is still being built."""
        if self._refresher is None:
            assert self._building is not None
            self._refresher, self._building = self._building.result(), None
        return self._refresher

    @property
    def ready(self) -> bool:
        return self._refresher is not None or (self._building is not None and self._building.done())

    def _flush(self) -> list[RefreshOutput]:
        """Apply the buffer (once the refresher is ready); the status after each control it held."""
        out: list[RefreshOutput] = []
        if self._buffer and self.ready:
            r = self.refresher
            events: list[Any] = []
            for item in self._buffer:
                if isinstance(item, RefreshControl):  # controls given while it was being built, in order
                    if events:
                        r.observe(events)
                        events = []
                    self._control(item)
                    out.append(RefreshOutput([], r.status()))
                else:
                    events.append(item)
            if events:
                r.observe(events)
            self._buffer = []
        return out

    def _control(self, value: RefreshControl) -> None:
        r = self.refresher
        if value.command == "pause":
            r.pause()
        elif value.command == "resume":
            r.resume()
        elif value.command == "reload":
            r.maybe_reload_model(force=True)

    def on_item(self, value: Any) -> tuple[Iterable[RefreshOutput], bool]:
        if isinstance(value, RefreshControl):
            if value.command not in ("pause", "resume", "reload"):
                raise ValueError(f"unknown refresh command {value.command!r} (pause, resume, reload)")
            if not self.ready:
                self._buffer.append(value)
                return [], StatefulLogic.RETAIN
            out = self._flush()
            self._control(value)
            return [*out, RefreshOutput([], self.refresher.status())], StatefulLogic.RETAIN
        if hasattr(value, "events") and hasattr(value, "seqs"):
            self._buffer.extend(zip(value.seqs, value.events))
        else:
            self._buffer.append(value)
        if len(self._buffer) >= self.MAX_BUFFER:
            return self._flush(), StatefulLogic.RETAIN
        return [], StatefulLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[RefreshOutput], bool]:
        self._next = datetime.now(timezone.utc) + timedelta(seconds=0.2)
        if not self.ready:
            return [], StatefulLogic.RETAIN
        r = self.refresher
        out = self._flush()
        if self.paused is not None:
            r.pause() if self.paused() else r.resume()
        r.maybe_reload_model()
        rows = r.tick()
        self._next = datetime.now(timezone.utc) + timedelta(seconds=r.config.tick_s)
        status = r.status()
        if self.on_status is not None:
            self.on_status(status)
        return [*out, RefreshOutput(rows, status)], StatefulLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[RefreshOutput], bool]:
        """Work the queue for at most ``stop_drain_s``, then stop: a stop with a large backlog (500 000
        nodes at a million users) would otherwise take as long as refreshing them all. What is left
        stays pending in the snapshot taken at the end, and a node's stored row stays older than its
        last event, so a refresher built on the store marks it again either way."""
        r = self.refresher
        out = self._flush()
        r.maybe_reload_model(force=True)
        deadline = time.perf_counter() + r.config.stop_drain_s
        while r.busy and (left := deadline - time.perf_counter()) > 0:
            rows = r.tick(budget_s=min(left, max(r.config.tick_budget_s, 1.0)))
            out.append(RefreshOutput(rows))
            if not rows:
                time.sleep(0.01)  # only a full pass on its thread is left: wait for its chunks, not spin
        status = r.status()
        if self.on_status is not None:  # the stopped flow's status shows what is left pending
            self.on_status(status)
        out.append(RefreshOutput([], status))
        return out, StatefulLogic.RETAIN

    def notify_at(self) -> Optional[datetime]:
        return self._next

    def snapshot(self) -> RefresherSnapshot | None:
        if not self.ready:
            return self._snapshot_while_building()
        self._flush()
        return self.refresher.snapshot()

    def _snapshot_while_building(self) -> RefresherSnapshot | None:
        """The state a resume needs while the refresher is being built: the snapshot it is restored
        from (None: a fresh start, which marks whatever the store's embeddings lag behind), its seq
        moved up to the newest event buffered, since the flow will not deliver those again."""
        if self._resumed is None:
            return None
        seqs = [int(item[0]) if isinstance(item, tuple) else int(item.seq)
                for item in self._buffer if not isinstance(item, RefreshControl)]
        paused = self._resumed.paused
        for item in self._buffer:
            if isinstance(item, RefreshControl) and item.command in ("pause", "resume"):
                paused = item.command == "pause"
        return replace(self._resumed, last_seq=max([self._resumed.last_seq, *seqs]), paused=paused)


def refresh_builder(
    settings: Any,
    *,
    paused: Callable[[], bool] | None = None,
    on_status: Callable[[RefresherStatus], None] | None = None,
    **kw: Any,
) -> Callable[[Optional[RefresherSnapshot]], RefreshLogic]:
    """The ``builder`` for ``op.stateful``: a fresh refresher, or one restored from its snapshot, built
    on a thread of its own while the flow goes on (see :class:`RefreshLogic`)."""

    def ready(resume: Optional[RefresherSnapshot]) -> IncrementalRefresher:
        from scoring.refresh import IncrementalRefresher

        r = IncrementalRefresher.restore(settings, resume, **kw)
        r.warm()
        return r

    def build(resume: Optional[RefresherSnapshot]) -> RefreshLogic:
        pool = ThreadPoolExecutor(1, thread_name_prefix="ups-refresher-build")
        building = pool.submit(ready, resume)
        pool.shutdown(wait=False)  # the thread ends with the build
        return RefreshLogic(building, paused, on_status, resumed=resume)

    return build


class _RowsPartition(StatelessSinkPartition):
    def __init__(self, db: Any) -> None:
        self.store = open_store(db, wait_out="the embedding sink")

    def write_batch(self, items: list[Any]) -> None:
        from scoring.embed import write_rows

        rows: list[EmbeddingRowT] = []
        for item in items:
            value = item[1] if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], RefreshOutput) else item
            rows.extend(value.rows if isinstance(value, RefreshOutput) else [value])
        # one transaction per batch (a tick's rows); a server outage is waited out (upserts: harmless again)
        retry_transient(lambda: write_rows(self.store, rows, batch=max(1, len(rows))), "the embedding sink")

    def close(self) -> None:
        self.store.close()


class EmbeddingSink(DynamicSink):
    """Writes the step's rows (``RefreshOutput``s, keyed or not, or single rows) with
    ``Embeddings.put_many``; upserts, so a replay after a resume writes the same rows again harmlessly."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RowsPartition:
        return _RowsPartition(self.db)


def embedding_refresh(settings: Settings) -> AttachRefresh:
    """An ``attach_refresh`` for :func:`dataflow.flow.build_live_flow`."""

    def attach(log_batches: Stream[LogBatch], control: FlowControl) -> None:
        # one refresher holds the whole live graph: every batch goes to the same key
        keyed = op.key_on("refresh_key", log_batches, lambda _: "graph")

        def report(st: RefresherStatus) -> None:
            control.set_refresh_status(**{k: v for k, v in st.items() if k in REFRESH_STATUS_KEYS})

        if settings.refresh_process:
            from .refresh_process import process_refresh_builder  # (that module builds on this one)

            builder: Callable[[Optional[RefresherSnapshot]], StatefulLogic] = process_refresh_builder(
                settings, paused=lambda: control.refresh_paused, on_status=report)
        else:
            builder = refresh_builder(settings, paused=lambda: control.refresh_paused, on_status=report)
        out = op.stateful("embedding_refresh", keyed, builder)
        op.output("embedding_sink", out, EmbeddingSink(settings.db))

    return attach


def refresh_branch(settings: Settings) -> AttachRefresh | None:
    """The refresh branch a live flow gets: ``ups dataflow`` and ``dataflow.flow:get_flow`` alike."""
    return embedding_refresh(settings) if settings.refresh_in_flow else None
