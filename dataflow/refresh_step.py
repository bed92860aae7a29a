"""The embedding-refresh branch of the live flow: scoring's incremental refresher as a Bytewax
``StatefulLogic`` on the log's stream of batches, its embeddings upserted by a sink, its status merged
into the flow's."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Optional

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.operators import StatefulLogic
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from config.settings import Settings
from scoring.embed import EmbeddingRowT, write_rows
from scoring.refresh import IncrementalRefresher, RefresherSnapshot
from scoring.results import RefresherStatus
from storage import open_store, retry_transient

from .control import FlowControl
from .flow import AttachRefresh
from .sources import LogBatch

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
    so what it records as seen has marked its nodes."""

    MAX_BUFFER = 20_000

    def __init__(
        self,
        refresher: IncrementalRefresher,
        paused: Callable[[], bool] | None = None,
        on_status: Callable[[RefresherStatus], None] | None = None,
    ) -> None:
        self.refresher = refresher
        self.paused = paused
        self.on_status = on_status
        self._buffer: list[Any] = []
        self._next = datetime.now(timezone.utc)

    def _flush(self) -> None:
        if self._buffer:
            self.refresher.observe(self._buffer)
            self._buffer = []

    def on_item(self, value: Any) -> tuple[Iterable[RefreshOutput], bool]:
        r = self.refresher
        if isinstance(value, RefreshControl):
            self._flush()
            if value.command == "pause":
                r.pause()
            elif value.command == "resume":
                r.resume()
            elif value.command == "reload":
                r.maybe_reload_model(force=True)
            else:
                raise ValueError(f"unknown refresh command {value.command!r} (pause, resume, reload)")
            return [RefreshOutput([], r.status())], StatefulLogic.RETAIN
        if hasattr(value, "events") and hasattr(value, "seqs"):
            self._buffer.extend(zip(value.seqs, value.events))
        else:
            self._buffer.append(value)
        if len(self._buffer) >= self.MAX_BUFFER:
            self._flush()
        return [], StatefulLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[RefreshOutput], bool]:
        r = self.refresher
        self._flush()
        if self.paused is not None:
            r.pause() if self.paused() else r.resume()
        r.maybe_reload_model()
        rows = r.tick()
        self._next = datetime.now(timezone.utc) + timedelta(seconds=r.config.tick_s)
        status = r.status()
        if self.on_status is not None:
            self.on_status(status)
        return [RefreshOutput(rows, status)], StatefulLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[RefreshOutput], bool]:
        """Work the queue for at most ``stop_drain_s``, then stop: a stop with a large backlog (500 000
        nodes at a million users) would otherwise take as long as refreshing them all. What is left
        stays pending in the snapshot taken at the end, and a node's stored row stays older than its
        last event, so a refresher built on the store marks it again either way."""
        r = self.refresher
        self._flush()
        r.maybe_reload_model(force=True)
        out: list[RefreshOutput] = []
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

    def snapshot(self) -> RefresherSnapshot:
        self._flush()
        return self.refresher.snapshot()


def refresh_builder(
    settings: Any,
    *,
    paused: Callable[[], bool] | None = None,
    on_status: Callable[[RefresherStatus], None] | None = None,
    **kw: Any,
) -> Callable[[Optional[RefresherSnapshot]], RefreshLogic]:
    """The ``builder`` for ``op.stateful``: a fresh refresher, or one restored from its snapshot."""

    def build(resume: Optional[RefresherSnapshot]) -> RefreshLogic:
        return RefreshLogic(IncrementalRefresher.restore(settings, resume, **kw), paused, on_status)

    return build


class _RowsPartition(StatelessSinkPartition):
    def __init__(self, db: Any) -> None:
        self.store = open_store(db, wait_out="the embedding sink")

    def write_batch(self, items: list[Any]) -> None:
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
