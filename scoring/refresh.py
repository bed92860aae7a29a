"""Priority-scheduled incremental embedding refresh (the seed's ``IncrementalLearner``).

``IncrementalRefresher`` holds the live graph and the current model. ``observe(events)`` appends the
events to the graph (growable buffers, no rebuild) and marks the affected nodes (the seed's
``ChangeDetector``: both endpoints of a new edge, new nodes, nodes whose attributes changed) in a
de-duplicating max-heap ranked by freshness, log-degree and the size of the node's last embedding
change. ``tick()`` refreshes the top of the heap within a budget by one sampled-subgraph forward pass
under ``no_grad`` on the device, or by one full forward when the backlog covers a large share of the
graph, and returns the embedding rows to write. A newly registered model version is picked up
without a restart and everything is re-embedded with it.

``RefreshLogic`` wraps it as a Bytewax ``StatefulLogic`` (``op.stateful``): events in, a
``RefreshOutput`` (rows + status) out on every tick; its snapshot is small (pending nodes, last seq)
and the graph is rebuilt from the store on resume.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Optional

import numpy as np
import torch
from bytewax.operators import StatefulLogic
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from storage.event_store import EventStore
from storage.events import Event

from .embed import EmbeddingRowT, all_rows, write_rows
from .graph import NODE_TYPES, Growable, HeteroGraph, build_graph
from .model_io import LoadedModel, latest_version, load_model
from .sampler import NeighborSampler, parse_fanouts

NodeKey = tuple[str, int]  # (node type, node index)
#: the status keys the dataflow's status document takes from the refresh step (see the brief's contract)
STATUS_KEYS: tuple[str, ...] = (
    "refresh_queue", "oldest_pending_s", "refreshes_per_s", "model_version", "device",
    "gpu_allocated_bytes", "gpu_reserved_bytes",  # only on CUDA
)


@dataclass
class RefreshConfig:
    tick_s: float = 0.2
    budget: int = 8192
    fanouts: str = "10,5"
    full_share: float = 0.3
    weight_freshness: float = 1.0
    weight_degree: float = 0.3
    weight_change: float = 1.0
    freshness_tau_s: float = 300.0
    model_poll_s: float = 2.0
    chunk_edges: int = 1_000_000
    compact_min: int = 50_000
    #: "layerwise": one layer at a time over the seeds' 1-hop neighbourhood with cached neighbour states
    #: (cheap; exact while the cache is current); "sampled": the seeds' whole L-hop sampled subgraph
    mode: str = "layerwise"

    @classmethod
    def from_settings(cls, s: Any) -> "RefreshConfig":
        return cls(
            tick_s=s.refresh_tick_s,
            budget=s.refresh_budget,
            fanouts=s.refresh_fanouts,
            full_share=s.refresh_full_share,
            weight_freshness=s.refresh_weight_freshness,
            weight_degree=s.refresh_weight_degree,
            weight_change=s.refresh_weight_change,
            freshness_tau_s=s.refresh_freshness_tau_s,
            model_poll_s=s.refresh_model_poll_s,
            chunk_edges=s.embed_chunk_edges,
            compact_min=s.graph_compact_min,
            mode=s.refresh_mode,
        )


@dataclass
class Pending:
    priority: float
    seq: int  # the newest event that touched the node
    ts: float  # its event time
    marked_at: float  # wall time the node first became pending (latency is measured from here)


class PriorityQueue:
    """Max-heap of nodes with de-duplication: a node is pending once, at its highest priority, with the
    newest seq that touched it and the time it first became pending. Stale heap entries are skipped."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, NodeKey]] = []
        self._pending: dict[NodeKey, Pending] = {}
        self._counter = itertools.count()

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, key: object) -> bool:
        return key in self._pending

    def push(self, key: NodeKey, priority: float, seq: int, ts: float, now: float) -> None:
        cur = self._pending.get(key)
        if cur is None:
            self._pending[key] = Pending(priority, seq, ts, now)
            heapq.heappush(self._heap, (-priority, next(self._counter), key))
            return
        cur.seq = max(cur.seq, seq)
        cur.ts = max(cur.ts, ts)
        if priority > cur.priority:
            cur.priority = priority
            heapq.heappush(self._heap, (-priority, next(self._counter), key))

    def pop(self, n: int) -> list[tuple[NodeKey, Pending]]:
        out: list[tuple[NodeKey, Pending]] = []
        while self._heap and len(out) < n:
            neg, _, key = heapq.heappop(self._heap)
            p = self._pending.get(key)
            if p is None or -neg != p.priority:
                continue  # refreshed already, or superseded by a higher-priority entry
            del self._pending[key]
            out.append((key, p))
        return out

    def clear(self) -> list[tuple[NodeKey, Pending]]:
        items = list(self._pending.items())
        self._pending.clear()
        self._heap.clear()
        return items

    def oldest_marked_at(self) -> float | None:
        return min((p.marked_at for p in self._pending.values()), default=None)

    def items(self) -> list[tuple[NodeKey, Pending]]:
        return list(self._pending.items())


@dataclass(frozen=True)
class RefresherSnapshot:
    """What a resume needs; the graph itself is rebuilt from the store up to ``last_seq``."""

    last_seq: int
    paused: bool
    model_version: int | None
    pending: tuple[tuple[str, str, int, float, float, float], ...]  # (type, id, seq, ts, marked_at, priority)


@dataclass
class RefreshOutput:
    """What one tick of the Bytewax step emits: rows for ``Embeddings.put_many`` and the status."""

    rows: list[EmbeddingRowT] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)


class IncrementalRefresher:
    """The live graph + model; marks affected nodes and refreshes them, highest priority first."""

    def __init__(
        self,
        settings: Any,
        *,
        graph: HeteroGraph | None = None,
        model: LoadedModel | None = None,
        config: RefreshConfig | None = None,
        upto_seq: int | None = None,
        clock: Callable[[], float] = time.time,
        load_stored: bool = True,
    ) -> None:
        from ups.device import resolve_device

        self.settings = settings
        self.config = config or RefreshConfig.from_settings(settings)
        self.clock = clock
        self.device = resolve_device(settings.device) if graph is None else graph.device
        self._fanouts = parse_fanouts(self.config.fanouts)
        self.store = EventStore(settings.db)
        if graph is None:
            graph = build_graph(self.store, device=self.device, upto_seq=upto_seq, compact_min=self.config.compact_min)
        self.graph = graph
        if self.config.mode not in ("layerwise", "sampled"):
            raise ValueError(f"refresh mode must be layerwise or sampled, not {self.config.mode!r}")
        self.sampler = NeighborSampler(graph, self._fanouts, seed=0)
        self.sampler1 = NeighborSampler(graph, self._fanouts[:1], seed=0)  # layerwise: 1 hop
        self._layers: list[dict[str, Growable]] = []
        self._layers_ready = False
        self.queue = PriorityQueue()
        self.paused = False
        self.model: LoadedModel | None = None
        self._emb: dict[str, Growable] = {}
        self._has: dict[str, Growable] = {}
        self._change: dict[str, Growable] = {}
        self._refreshed: deque[tuple[float, int]] = deque()
        self._last_poll = -math.inf
        self.full_refreshes = 0
        self.last_latencies: list[float] = []
        self.last_tick_s = 0.0
        if model is None:
            model = load_model(self.store.conn, device=self.device)
        if model is not None:
            self._use_model(model, load_stored=load_stored)

    def close(self) -> None:
        self.store.close()

    # ---------------------------------------------------------------- model

    @property
    def model_version(self) -> int | None:
        return self.model.version if self.model else None

    def _use_model(self, model: LoadedModel, load_stored: bool) -> None:
        """Switch to ``model``: fresh caches; every node without a stored embedding of this version that
        is at least as new as the node's last event is pending (new, stale after a crash, or changed by
        events that reached the log before this refresher was built)."""
        self.model = model
        model.embedder.to(self.device).eval()
        dim = int(model.config["hgt"]["out_dim"])
        self._emb = {t: Growable((dim,), torch.float32, self.device) for t in NODE_TYPES}
        self._has = {t: Growable((), torch.bool, self.device) for t in NODE_TYPES}
        self._change = {t: Growable((), torch.float32, self.device, fill=1.0) for t in NODE_TYPES}
        hidden = int(model.config["hgt"]["hidden"])
        self._layers = [
            {t: Growable((hidden,), torch.float32, self.device) for t in NODE_TYPES}
            for _ in range(int(model.config["hgt"]["layers"]) - 1)
        ]
        self._layers_ready = False
        self._grow_caches()
        current = {t: torch.zeros(self.graph.num_nodes(t), dtype=torch.bool, device=self.device) for t in NODE_TYPES}
        if load_stored:
            current = self._load_stored()
        now = self.clock()
        for t in NODE_TYPES:
            missing = torch.nonzero(~current[t]).flatten()
            if missing.numel():
                last = self.graph.nodes[t].last_seq.view[missing].cpu().numpy()
                self._mark(t, missing.cpu().numpy(), last, np.full(missing.numel(), now), now)

    def _load_stored(self) -> dict[str, torch.Tensor]:
        """Cache the stored embeddings of the current version; True where one is up to date."""
        assert self.model is not None
        current: dict[str, torch.Tensor] = {}
        for t in NODE_TYPES:
            index = self.graph.nodes[t].index
            idx, vecs, seqs = [], [], []
            for nid, blob, seq in self.store.conn.execute(
                "SELECT node_id, vector, seq FROM embeddings WHERE node_type = ? AND model_version = ?",
                (t, self.model.version),
            ):
                i = index.get(nid)
                if i is not None:
                    idx.append(i)
                    vecs.append(np.frombuffer(blob, dtype=np.float32))
                    seqs.append(seq)
            ok = torch.zeros(self.graph.num_nodes(t), dtype=torch.bool, device=self.device)
            if idx:
                ti = torch.as_tensor(idx, device=self.device)
                self._emb[t].view[ti] = torch.as_tensor(np.stack(vecs), device=self.device)
                self._has[t].view[ti] = True
                ok[ti] = torch.as_tensor(seqs, device=self.device) >= self.graph.nodes[t].last_seq.view[ti]
            current[t] = ok
        return current

    def maybe_reload_model(self, force: bool = False) -> bool:
        """Pick up a newer registered model (polled at most every ``model_poll_s``); True when switched."""
        now = self.clock()
        if not force and now - self._last_poll < self.config.model_poll_s:
            return False
        self._last_poll = now
        newest = latest_version(self.store.conn)
        if newest is None or newest == self.model_version:
            return False
        model = load_model(self.store.conn, newest, device=self.device)
        if model is None:
            return False
        self.queue.clear()
        self._use_model(model, load_stored=True)
        return True

    # ---------------------------------------------------------------- events

    def _grow_caches(self) -> None:
        for t in NODE_TYPES:
            n = self.graph.num_nodes(t)
            for buf in (self._emb.get(t), self._has.get(t), self._change.get(t), *(lay[t] for lay in self._layers)):
                if buf is not None and buf.n < n:
                    buf.extend_fill(n - buf.n)

    def observe(self, events: Iterable[Any], now: float | None = None) -> int:
        """Apply events (``StoredEvent``s or ``(seq, Event)`` pairs; already-seen seqs are skipped) and
        mark the nodes they touched. Returns how many node marks were made."""
        now = self.clock() if now is None else now
        pairs: list[tuple[int, Event]] = []
        for e in events:
            if isinstance(e, tuple):
                pairs.append((int(e[0]), e[1]))
            else:
                pairs.append((int(e.seq), e))
        delta = self.graph.apply_events(pairs)
        self._grow_caches()
        marks = 0
        for t, (idx, seq, ts) in delta.touched.items():
            marks += self._mark(t, idx, seq, ts, now)
        return marks

    def _mark(self, t: str, idx: np.ndarray, seq: np.ndarray, ts: np.ndarray, now: float) -> int:
        if len(idx) == 0:
            return 0
        c = self.config
        ti = torch.as_tensor(idx, device=self.device)
        age = np.maximum(0.0, now - np.asarray(ts, dtype=np.float64))
        fresh = np.exp2(-age / c.freshness_tau_s)
        deg = torch.log1p(self.graph.nodes[t].degree.view[ti]).cpu().numpy()
        change = self._change[t].view[ti].cpu().numpy() if t in self._change else np.ones(len(idx))
        prio = c.weight_freshness * fresh + c.weight_degree * deg + c.weight_change * change
        for i, s, e_ts, p in zip(idx.tolist(), np.asarray(seq).tolist(), np.asarray(ts).tolist(), prio.tolist()):
            self.queue.push((t, i), float(p), int(s), float(e_ts), now)
        return len(idx)

    # ---------------------------------------------------------------- refresh

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def tick(self, now: float | None = None, budget: int | None = None) -> list[EmbeddingRowT]:
        """Refresh the most urgent pending nodes; the rows to write (nothing while paused or modelless)."""
        if self.paused or self.model is None or len(self.queue) == 0:
            return []
        t0 = time.perf_counter()
        budget = self.config.budget if budget is None else budget
        total = self.graph.num_nodes()
        if len(self.queue) >= self.config.full_share * total:
            rows = self._full_refresh()
        else:
            rows = self._partial_refresh(self.queue.pop(budget))
        done = self.clock() if now is None else now
        self._refreshed.append((done, len(rows)))
        self.last_tick_s = time.perf_counter() - t0
        return rows

    @torch.no_grad()
    def _partial_refresh(self, items: list[tuple[NodeKey, Pending]]) -> list[EmbeddingRowT]:
        assert self.model is not None
        by_type: dict[str, list[tuple[int, Pending]]] = {}
        for (t, i), p in items:
            by_type.setdefault(t, []).append((i, p))
        seeds = {t: torch.as_tensor([i for i, _ in v], device=self.device) for t, v in by_type.items()}
        if self.config.mode == "layerwise":
            if not self._layers_ready:
                self._warm_layers()
            cache = [{t: lay[t].view for t in NODE_TYPES} for lay in self._layers]
            out, states = self.model.embedder.refresh_layerwise(self.graph, self.sampler1, seeds, cache)
            for lay, st in zip(self._layers, states):
                for t, idx in seeds.items():
                    lay[t].view[idx] = st[t]
        else:
            out = self.model.embedder.embed_seeds(self.graph, self.sampler, seeds)
        now = self.clock()
        vectors: dict[NodeKey, np.ndarray] = {}
        for t, v in by_type.items():
            idx = seeds[t]
            self._store_cache(t, idx, out[t])
            vec = out[t].detach().to("cpu", torch.float32).numpy()
            for k, (i, _) in enumerate(v):
                vectors[(t, i)] = vec[k]
        # rows in the order the queue gave the nodes: highest priority first
        ids = self.graph.nodes
        rows = [(t, ids[t].ids[i], vectors[(t, i)], self.model.version, p.seq) for (t, i), p in items]
        self.last_latencies = [now - p.marked_at for _, p in items]
        return rows

    @torch.no_grad()
    def _full_refresh(self) -> list[EmbeddingRowT]:
        assert self.model is not None
        items = self.queue.clear()
        now = self.clock()
        self.last_latencies = [now - p.marked_at for _, p in items]
        emb = self._warm_layers()
        self.full_refreshes += 1
        return list(all_rows(self.graph, emb, self.model.version))

    def _warm_layers(self) -> dict[str, torch.Tensor]:
        """One full forward: every node's embedding and per-layer state into the caches."""
        assert self.model is not None
        emb, layers = self.model.embedder.embed_all_layers(self.graph, self.config.chunk_edges)
        for t in NODE_TYPES:
            self._store_cache(t, torch.arange(self.graph.num_nodes(t), device=self.device), emb[t])
            for lay, st in zip(self._layers, layers):
                lay[t].view[:] = st[t]
        self._layers_ready = True
        return emb

    def _store_cache(self, t: str, idx: torch.Tensor, new: torch.Tensor) -> None:
        old = self._emb[t].view[idx]
        had = self._has[t].view[idx]
        rel = torch.linalg.vector_norm(new - old, dim=1) / (torch.linalg.vector_norm(old, dim=1) + 1e-6)
        self._change[t].view[idx] = torch.where(had, rel, torch.ones_like(rel))
        self._emb[t].view[idx] = new
        self._has[t].view[idx] = True

    def embedding(self, node_type: str, node_id: str) -> np.ndarray | None:
        """The latest embedding this refresher computed for a node (None if never)."""
        i = self.graph.nodes[node_type].index.get(node_id)
        if i is None or not self._has or not bool(self._has[node_type].view[i]):
            return None
        return self._emb[node_type].view[i].cpu().numpy()

    # ---------------------------------------------------------------- status and recovery

    def status(self, now: float | None = None) -> dict[str, Any]:
        now = self.clock() if now is None else now
        while self._refreshed and now - self._refreshed[0][0] > 10.0:
            self._refreshed.popleft()
        window = max(1e-9, min(10.0, now - self._refreshed[0][0])) if self._refreshed else 10.0
        oldest = self.queue.oldest_marked_at()
        gpu: dict[str, int] = {}
        if self.device.type == "cuda":  # the operations metrics show the flow's GPU memory from here
            gpu = {"gpu_allocated_bytes": int(torch.cuda.memory_allocated(self.device)),
                   "gpu_reserved_bytes": int(torch.cuda.memory_reserved(self.device))}
        return {
            **gpu,
            "refresh": "off" if self.model is None else ("paused" if self.paused else "running"),
            "refresh_queue": len(self.queue),
            "oldest_pending_s": round(max(0.0, now - oldest), 3) if oldest is not None else 0.0,
            "refreshes_per_s": round(sum(n for _, n in self._refreshed) / max(window, 1.0), 2),
            "model_version": self.model_version,
            "device": str(self.device),
            "graph_nodes": self.graph.num_nodes(),
            "graph_edges": self.graph.num_edges() // 2,
            "graph_last_seq": self.graph.last_seq,
            "full_refreshes": self.full_refreshes,
            "last_tick_ms": round(1000 * self.last_tick_s, 2),
        }

    def snapshot(self) -> RefresherSnapshot:
        pending = tuple(
            (t, self.graph.nodes[t].ids[i], p.seq, p.ts, p.marked_at, p.priority) for (t, i), p in self.queue.items()
        )
        return RefresherSnapshot(self.graph.last_seq, self.paused, self.model_version, pending)

    @classmethod
    def restore(cls, settings: Any, snap: RefresherSnapshot | None, **kw: Any) -> "IncrementalRefresher":
        """Rebuild from the store up to the snapshot's seq (later events are delivered again by the
        flow's resume) and re-mark what was pending."""
        if snap is None:
            return cls(settings, **kw)
        r = cls(settings, upto_seq=snap.last_seq, **kw)
        r.paused = snap.paused
        for t, nid, seq, ts, marked_at, prio in snap.pending:
            i = r.graph.nodes[t].index.get(nid)
            if i is not None:
                r.queue.push((t, i), prio, seq, ts, marked_at)
        return r


# ------------------------------------------------------------------------------------------ Bytewax step


@dataclass(frozen=True)
class RefreshControl:
    """A control item for the step: ``pause``, ``resume`` or ``reload`` (look for a new model now)."""

    command: str


class RefreshLogic(StatefulLogic):
    """``op.stateful`` logic: events (``StoredEvent``, ``(seq, Event)``, or a batch with ``events``,
    ``seqs`` and ``upto`` such as the flow's ``GraphDelta``) and ``RefreshControl`` items in; a
    ``RefreshOutput`` out on every tick (``on_notify``) and at EOF, after draining the queue.

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
        on_status: Callable[[dict[str, Any]], None] | None = None,
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
        r = self.refresher
        self._flush()
        r.maybe_reload_model(force=True)
        out: list[RefreshOutput] = []
        while len(r.queue) and not r.paused and r.model is not None:
            out.append(RefreshOutput(r.tick(), {}))
        out.append(RefreshOutput([], r.status()))
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
    on_status: Callable[[dict[str, Any]], None] | None = None,
    **kw: Any,
) -> Callable[[Optional[RefresherSnapshot]], RefreshLogic]:
    """The ``builder`` for ``op.stateful``: a fresh refresher, or one restored from its snapshot."""

    def build(resume: Optional[RefresherSnapshot]) -> RefreshLogic:
        return RefreshLogic(IncrementalRefresher.restore(settings, resume, **kw), paused, on_status)

    return build


class _RowsPartition(StatelessSinkPartition):
    def __init__(self, db: Any) -> None:
        self.store = EventStore(db)

    def write_batch(self, items: list[Any]) -> None:
        rows: list[EmbeddingRowT] = []
        for item in items:
            value = item[1] if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], RefreshOutput) else item
            rows.extend(value.rows if isinstance(value, RefreshOutput) else [value])
        write_rows(self.store, rows)

    def close(self) -> None:
        self.store.close()


class EmbeddingSink(DynamicSink):
    """Writes the step's rows (``RefreshOutput``s, keyed or not, or single rows) with
    ``Embeddings.put_many``; upserts, so a replay after a resume writes the same rows again harmlessly."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RowsPartition:
        return _RowsPartition(self.db)


__all__ = [
    "RefreshConfig",
    "PriorityQueue",
    "Pending",
    "IncrementalRefresher",
    "RefresherSnapshot",
    "RefreshOutput",
    "RefreshControl",
    "RefreshLogic",
    "refresh_builder",
    "EmbeddingSink",
    "STATUS_KEYS",
]
