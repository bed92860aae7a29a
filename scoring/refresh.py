"""Priority-scheduled incremental embedding refresh.

``IncrementalRefresher`` holds the live graph and the current model. ``observe(events)`` appends the
events to the graph (growable buffers, no rebuild) and marks the affected nodes (both endpoints of a
new edge, new nodes, nodes whose attributes changed) in a de-duplicating max-heap
(``scoring.refresh_queue``) ranked by freshness, log-degree and the size of the node's last embedding
change, with a waiting credit so nothing starves. ``tick()`` works for a time budget: it refreshes
the top of the heap in batches, one sampled-subgraph forward per batch under ``no_grad`` on the
device, then advances a full forward split into steps (``scoring.full_pass``) if one is running —
when the backlog covers a large share of the graph, when the layer cache is cold, and when a newly
registered model version is picked up (without a restart; the old model serves until every node has
been embedded with the new one). It returns the embedding rows to write.

The Bytewax step that drives it in the live flow is ``dataflow.refresh_step``; its snapshot
(:class:`RefresherSnapshot`) is small (pending nodes, last seq) and the graph is rebuilt from the
store on resume.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import torch

from storage import open_store
from storage.events import Event

from .embed import EmbeddingRowT, embedding_rows
from .full_pass import FullPass, PassChunk
from .graph import HeteroGraph
from .graph_loader import build_graph
from .graph_schema import EDGE_TYPES, NODE_TYPES
from .model_io import LoadedModel, latest_version, load_model
from .neighbourhood import NODE_TYPE as NEIGHBOURHOOD
from .neighbourhood_refresh import NeighbourhoodRefresh
from .refresh_cache import NodeCaches
from .refresh_config import RefreshConfig
from .refresh_queue import NodeKey, Pending, PriorityQueue
from .results import RefresherStatus
from .sampler import NeighborSampler, parse_fanouts
from .threads import ThreadLimit


@dataclass(frozen=True)
class RefresherSnapshot:
    """What a resume needs; the graph itself is rebuilt from the store up to ``last_seq``."""

    last_seq: int
    paused: bool
    model_version: int | None
    pending: tuple[tuple[str, str, int, float, float, float], ...]  # (type, id, seq, ts, marked_at, priority)
    #: the same for the backfill (a default: snapshots taken before it existed restore)
    backfill: tuple[tuple[str, str, int, float, float, float], ...] = ()
    #: users whose call-neighbourhood row is pending, and re-embedded users whose two-call balls are not
    #: queued yet: (user id, marked_at, rank)
    neighbourhoods: tuple[tuple[str, float, float], ...] = ()
    neighbourhood_sources: tuple[tuple[str, float, float], ...] = ()


class IncrementalRefresher:
    """The live graph + model; marks affected nodes and refreshes them, highest priority first.

    A tick works for at most ``tick_budget_s``: partial refreshes of the top of the queue in batches
    (one sampled subgraph per batch, sized from the measured cost per node), then steps of a running
    :class:`~scoring.full_pass.FullPass`. A full pass runs for a new model version (the old model keeps
    serving until it is done), for a cold layer cache, and when the backlog reaches ``full_share`` of
    the graph; it never holds a tick longer than the budget plus one step, and live nodes keep being
    refreshed while it runs.

    Nodes that need re-embedding only because the model changed (touched while the switching pass ran,
    so left out of it; their events are reflected already, by the old model) wait in ``backfill``, served
    with what a tick has left once the live queue is empty: a ranked-down share of one queue let them
    outrank live nodes once their waiting credit built up (p99 event->embedding 5 s after a switch under
    5 000 events/s). A live mark moves a node from the backfill to the live queue."""

    #: share of the tick budget a running full pass keeps however long the queue is, so it finishes
    PASS_MIN_SHARE = 0.1
    #: share the call neighbourhoods keep while rows of theirs are pending (and all time left after the queue)
    NEIGHBOURHOOD_SHARE = 0.15
    #: nodes in the first partial batch, before the cost per node has been measured
    FIRST_BATCH = 1024
    #: fewest nodes in a partial batch (below this the fixed cost of a forward dominates)
    MIN_BATCH = 16

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
        from config.device import resolve_device

        self.settings = settings
        self.config = config or RefreshConfig.from_settings(settings)
        self.clock = clock
        self.device = resolve_device(settings.device) if graph is None else graph.device
        self._fanouts = parse_fanouts(self.config.fanouts)
        self.store = open_store(settings.db, wait_out="the embedding refresher")  # a flow waits out an outage
        if graph is None:
            graph = build_graph(self.store, device=self.device, upto_seq=upto_seq, compact_min=self.config.compact_min)
        self.graph = graph
        if self.config.mode not in ("layerwise", "sampled"):
            raise ValueError(f"refresh mode must be layerwise or sampled, not {self.config.mode!r}")
        self.sampler = NeighborSampler(graph, self._fanouts, seed=0)
        self.sampler1 = NeighborSampler(graph, self._fanouts[:1], seed=0)  # layerwise: 1 hop
        self.caches = NodeCaches(self.device)
        self.queue = PriorityQueue(self.config.weight_wait)
        self.backfill = PriorityQueue(self.config.weight_wait)
        self.hoods = NeighbourhoodRefresh(graph, self.device, self.config.weight_wait)
        self.paused = False
        self.model: LoadedModel | None = None
        self._refreshed: deque[tuple[float, int]] = deque()
        self._last_poll = -math.inf
        self._pass: FullPass | None = None
        self._pass_model: LoadedModel | None = None
        self._pass_emit = "pending"  # "all" | "pending" | "none": which nodes' rows the pass writes
        self._pass_left = 0  # nodes an "all" pass has yet to write
        self._node_cost: float | None = None  # seconds per node of a partial refresh (moving average)
        self._pass_cost: float | None = None  # seconds per node of the last full pass
        self._pass_spent = 0.0
        self._pass_started = 0.0
        self._threads = ThreadLimit(self.config.threads)
        self.full_refreshes = 0
        self.last_latencies: list[float] = []
        self.last_tick_s = 0.0
        if model is None:
            model = load_model(self.store, device=self.device)
        if model is not None:
            self._use_model(model, load_stored=load_stored)

    def close(self) -> None:
        self._drop_pass(wait=True)
        self.store.close()

    def warm(self) -> None:
        """Build now the indexes the first ticks would build: each edge type's incoming-edge CSR and the
        call matrix (at 1M users ~9 s, which a flow building the refresher on a thread of its own would
        otherwise spend on its worker in the first tick)."""
        none = torch.zeros(0, dtype=torch.long, device=self.device)
        for et in EDGE_TYPES:
            self.graph.adjacency(et).in_degree(none)
        self.hoods.calls.rows(np.zeros(0, dtype=np.int64))

    # ---------------------------------------------------------------- model

    @property
    def model_version(self) -> int | None:
        return self.model.version if self.model else None

    def _install_model(self, model: LoadedModel) -> None:
        """Serve ``model`` from now on, with empty caches."""
        self.model = model
        model.embedder.to(self.device).eval()
        self.caches = NodeCaches(self.device, model)
        self.caches.grow(self.graph)

    def _use_model(self, model: LoadedModel, load_stored: bool) -> None:
        """Start serving ``model`` (no model before): every node without a stored embedding of this
        version that is at least as new as the node's last event is pending (new, stale after a crash,
        or changed by events that reached the log before this refresher was built)."""
        self._install_model(model)
        current = {t: torch.zeros(self.graph.num_nodes(t), dtype=torch.bool, device=self.device) for t in NODE_TYPES}
        if load_stored:
            current = self.caches.load_stored(self.store, self.graph, model.version)
        now = self.clock()
        for t in NODE_TYPES:
            missing = torch.nonzero(~current[t]).flatten()
            if missing.numel():
                last = self.graph.nodes[t].last_seq.view[missing].cpu().numpy()
                self._mark(t, missing.cpu().numpy(), last, np.full(missing.numel(), now), now)
        # users without a stored neighbourhood of this model (new since the last full pass, or written by
        # a UPS that had none) get one; the others follow as their own or their partners' embeddings do
        stored = {nid for nid, _, _ in self.store.embeddings.of_version(NEIGHBOURHOOD, model.version)} if load_stored else set()
        users = self.graph.nodes["user"].ids
        self.hoods.mark_all(now, np.asarray([i for i, nid in enumerate(users) if nid not in stored] if load_stored else [],
                                            dtype=np.int64))

    def maybe_reload_model(self, force: bool = False) -> bool:
        """Pick up a newer registered model (polled at most every ``model_poll_s``); True when found.
        With a model already serving, the new one takes over once a full pass has embedded every node
        with it (spread over ticks; the old model keeps refreshing live nodes meanwhile)."""
        now = self.clock()
        if not force and now - self._last_poll < self.config.model_poll_s:
            return False
        self._last_poll = now
        newest = latest_version(self.store)
        target = self._pass_model if self._pass is not None and self._pass_model is not self.model else self.model
        if newest is None or newest == (target.version if target else None):
            return False
        model = load_model(self.store, newest, device=self.device)
        if model is None:
            return False
        if self.model is None:
            self._use_model(model, load_stored=True)
        else:
            self.begin_switch(model)
        return True

    def begin_switch(self, model: LoadedModel) -> None:
        """Start embedding every node with ``model`` in a full pass over the next ticks; it serves
        from the end of the pass (replaces a running pass)."""
        model.embedder.to(self.device).eval()
        self._start_pass(model, "all")

    @property
    def switching_to(self) -> int | None:
        """The version a running full pass is switching to, if any."""
        if self._pass is not None and self._pass_model is not None and self._pass_model is not self.model:
            return self._pass_model.version
        return None

    # ---------------------------------------------------------------- events

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
        self.caches.grow(self.graph)
        marks = 0
        for t, (idx, seq, ts) in delta.touched.items():
            marks += self._mark(t, idx, seq, ts, now)
        return marks

    def _mark(
        self, t: str, idx: np.ndarray, seq: np.ndarray, ts: np.ndarray, now: float, backfill: bool = False
    ) -> int:
        """Queue nodes ``idx`` of type ``t`` by priority: live marks, or (``backfill``) re-embeddings for
        a new model."""
        if len(idx) == 0:
            return 0
        c = self.config
        ti = torch.as_tensor(idx, device=self.device)
        age = np.maximum(0.0, now - np.asarray(ts, dtype=np.float64))
        fresh = np.exp2(-age / c.freshness_tau_s)
        deg = torch.log1p(self.graph.nodes[t].degree.view[ti]).cpu().numpy()
        change = self.caches.change_of(t, ti)
        prio = c.weight_freshness * fresh + c.weight_degree * deg + c.weight_change * change
        queue = self.backfill if backfill else self.queue
        keys = [(t, i) for i in idx.tolist()]
        if not backfill and len(self.backfill):
            self.backfill.discard(keys)
        for key, s, e_ts, p in zip(keys, np.asarray(seq).tolist(), np.asarray(ts).tolist(), prio.tolist()):
            queue.push(key, float(p), int(s), float(e_ts), now)
        return len(idx)

    # ---------------------------------------------------------------- refresh

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    @property
    def busy(self) -> bool:
        """Whether a tick has work: pending nodes or a running full pass (and it may run)."""
        return not self.paused and self.model is not None and (
            len(self.queue) > 0 or len(self.backfill) > 0 or len(self.hoods) > 0 or self._pass is not None
        )

    def tick(self, now: float | None = None, budget: int | None = None, budget_s: float | None = None) -> list[EmbeddingRowT]:
        """Refresh the most urgent pending nodes (at most ``budget`` of them) and advance a running full
        pass, for about ``budget_s`` seconds; the rows to write (nothing while paused or modelless)."""
        if self.paused or self.model is None:
            return []
        self._maybe_start_pass()
        if not self.busy:
            return []
        with self._threads:
            return self._tick(now, budget, budget_s)

    def _tick(self, now: float | None, budget: int | None, budget_s: float | None) -> list[EmbeddingRowT]:
        t0 = time.perf_counter()
        budget_s = self.config.tick_budget_s if budget_s is None else budget_s
        deadline = t0 + budget_s
        # slices: partial refreshes, then the neighbourhoods, then a running pass (each uses what the
        # ones before left; the later ones keep a share while they have work)
        pass_share = self.PASS_MIN_SHARE if self._pass is not None and not self._pass.background else 0.0
        hood_share = self.NEIGHBOURHOOD_SHARE if len(self.hoods) else 0.0
        finite = math.isfinite(budget_s)
        hoods_until = deadline - pass_share * budget_s if finite else deadline
        partial_until = hoods_until - hood_share * budget_s if finite else deadline
        self.last_latencies = []
        rows = self._partial(self.config.budget if budget is None else budget, partial_until)
        self._follow_neighbourhoods(rows)
        assert self.model is not None
        rows += self.hoods.rows(self.caches.emb["user"].view, self.model.version, hoods_until)
        if self._pass is not None:
            pass_rows = self._advance_pass(deadline)
            self._follow_neighbourhoods(pass_rows)  # (queued: written by the next ticks)
            rows += pass_rows
        done = self.clock() if now is None else now
        self._refreshed.append((done, len(rows)))
        self.last_tick_s = time.perf_counter() - t0
        return rows

    def _follow_neighbourhoods(self, rows: list[EmbeddingRowT]) -> None:
        """Queue the neighbourhoods the serving model's new user rows enter (a switching pass's rows
        wait: its end recomputes them all)."""
        if self.model is None:
            return
        index, version = self.graph.nodes["user"].index, self.model.version
        users = np.fromiter((index[nid] for t, nid, _, v, _ in rows if t == "user" and v == version), dtype=np.int64)
        self.hoods.changed(users, self.clock())

    def _partial(self, cap: int, until: float) -> list[EmbeddingRowT]:
        """Partial refreshes of the top of the queue, then of the backfill, until ``until`` (perf_counter)
        or ``cap`` nodes."""
        rows: list[EmbeddingRowT] = []
        while cap > 0 and (len(self.queue) or len(self.backfill)):
            queue = self.queue if len(self.queue) else self.backfill
            left = until - time.perf_counter()
            if left <= 0 and rows:
                break  # (one batch per tick at least, however small the budget: the queue always moves)
            if self._node_cost is None:
                n = min(cap, self.FIRST_BATCH)
            elif math.isfinite(left):
                n = max(self.MIN_BATCH, min(cap, int(max(0.0, left) / self._node_cost)))
            else:
                n = cap
            items = queue.pop(min(n, cap))
            if not items:
                break
            t = time.perf_counter()
            rows += self._partial_refresh(items)
            if len(items) >= 128:  # small batches are mostly fixed cost: they would overstate it
                per = (time.perf_counter() - t) / len(items)
                self._node_cost = per if self._node_cost is None else 0.7 * self._node_cost + 0.3 * per
            cap -= len(items)
        return rows

    @torch.no_grad()
    def _partial_refresh(self, items: list[tuple[NodeKey, Pending]]) -> list[EmbeddingRowT]:
        """One sampled-subgraph forward for all of ``items`` (layer-wise over cached neighbour states
        once the cache is warm; the seeds' L-hop sample before)."""
        assert self.model is not None
        by_type: dict[str, list[tuple[int, Pending]]] = {}
        for (t, i), p in items:
            by_type.setdefault(t, []).append((i, p))
        seeds = {t: torch.as_tensor([i for i, _ in v], device=self.device) for t, v in by_type.items()}
        if self.config.mode == "layerwise" and self.caches.layers_ready:
            cache = [{t: lay[t].view for t in NODE_TYPES} for lay in self.caches.layers]
            out, states = self.model.embedder.refresh_layerwise(self.graph, self.sampler1, seeds, cache)
            for lay, st in zip(self.caches.layers, states):
                for t, idx in seeds.items():
                    lay[t].view[idx] = st[t]
        else:
            out = self.model.embedder.embed_seeds(self.graph, self.sampler, seeds)
        now = self.clock()
        vectors: dict[NodeKey, np.ndarray] = {}
        for t, v in by_type.items():
            idx = seeds[t]
            self.caches.put(t, idx, out[t])
            vec = out[t].detach().to("cpu", torch.float32).numpy()
            for k, (i, _) in enumerate(v):
                vectors[(t, i)] = vec[k]
        # rows in the order the queue gave the nodes: highest priority first
        ids = self.graph.nodes
        rows = [(t, ids[t].ids[i], vectors[(t, i)], self.model.version, p.seq) for (t, i), p in items]
        self.last_latencies += [now - p.marked_at for _, p in items]
        return rows

    # ---------------------------------------------------------------- full passes

    def _maybe_start_pass(self) -> None:
        if self._pass is not None or self.model is None:
            return
        if self.config.mode == "layerwise" and not self.caches.layers_ready:
            self._start_pass(self.model, "pending")  # warm the layer cache; meanwhile refreshes are sampled
            return
        backlog, total = len(self.queue) + len(self.backfill), max(1, self.graph.num_nodes())
        if backlog < self.config.full_share * total:
            return
        # a backlog over the share: one pass, unless refreshing it node by node is measured to be cheaper
        # (the layer-wise refresh of one node usually costs less than its share of a full pass)
        if self._pass_cost is None or self._node_cost is None or backlog * self._node_cost >= total * self._pass_cost:
            self._start_pass(self.model, "pending")

    def _start_pass(self, model: LoadedModel, emit: str, background: bool | None = None) -> None:
        """Begin a full pass with ``model`` (replacing a running one): ``emit`` "all" writes every node's
        row (a model switch), "pending" the rows of the pending nodes it covers, "none" nothing."""
        self._drop_pass()
        self._pass = FullPass(model.embedder, self.graph, self.config.pass_chunk_edges)
        self._pass_model = model
        self._pass_emit = emit
        self._pass_left = sum(self._pass.num_nodes.values()) if emit == "all" else 0
        self._pass_spent = 0.0
        self._pass_started = time.perf_counter()
        if self.config.pass_background if background is None else background:
            self._threads.__enter__()  # the thread cap holds while the pass thread runs
            self._pass.start_background()

    def _drop_pass(self, wait: bool = False) -> None:
        """Forget the running pass (superseded, finished or closing); stop its thread (and, with
        ``wait``, let it end)."""
        p = self._pass
        self._pass, self._pass_model, self._pass_left = None, None, 0
        if p is not None and p.background:
            p.cancel(wait)
            self._threads.__exit__(None, None, None)

    def _advance_pass(self, deadline: float) -> list[EmbeddingRowT]:
        """Steps of the running pass until ``deadline`` (at least one); finishes it when done."""
        p = self._pass
        assert p is not None
        rows: list[EmbeddingRowT] = []
        if p.background:  # the thread does the work: hand over what it finished (all of it for no deadline)
            for chunk in p.collect(wait=math.isinf(deadline)):
                rows += self._pass_chunk(p, chunk)
            if p.done:
                self._pass_cost = (time.perf_counter() - self._pass_started) / max(1, sum(p.num_nodes.values()))
                self._finish_pass(p)
            return rows
        while True:
            t = time.perf_counter()
            step = p.step()
            if step is not None:
                rows += self._pass_chunk(p, step)
            self._pass_spent += time.perf_counter() - t
            if p.done:
                self._pass_cost = self._pass_spent / max(1, sum(p.num_nodes.values()))
                self._finish_pass(p)
                return rows
            if time.perf_counter() >= deadline:
                return rows

    def _pass_chunk(self, p: FullPass, chunk: PassChunk) -> list[EmbeddingRowT]:
        """Rows for the finished chunk: nodes untouched since the pass began (others are pending or
        were refreshed since), every one for a model switch, the pending ones otherwise; pending
        nodes the chunk covers leave the queue."""
        assert self._pass_model is not None
        t, idx, emb = chunk.node_type, chunk.idx, chunk.emb
        clean = self.graph.nodes[t].last_seq.view[idx] <= p.snap_seq
        same = self._pass_model is self.model
        if same:
            self.caches.put(t, idx[clean], emb[clean])
        if self._pass_emit == "none":
            return []
        # pending nodes of the chunk whose newest event the pass has seen (so they are clean); backfill
        # nodes too, when the pass runs the model they wait for
        queues = [self.queue] + ([self.backfill] if same and len(self.backfill) else [])
        cand: list[tuple[int, Pending]] = []
        now = self.clock()
        for queue in queues:
            if len(queue) < idx.numel():
                lo, hi = int(idx[0]), int(idx[-1])
                found = [(i, pe) for (tt, i), pe in queue.items() if tt == t and lo <= i <= hi and pe.seq <= p.snap_seq]
            else:
                found = [(i, pe) for i in idx.tolist() if (pe := queue.get((t, i))) is not None and pe.seq <= p.snap_seq]
            queue.discard((t, i) for i, _ in found)
            if queue is self.queue:
                self.last_latencies += [now - pe.marked_at for _, pe in found]
            cand += found
        if self._pass_emit == "all":
            self._pass_left -= idx.numel()
            sel = torch.nonzero(clean).flatten()
        else:
            if not cand:
                return []
            pos = torch.searchsorted(idx, torch.as_tensor([i for i, _ in cand], device=idx.device))
            sel = torch.sort(pos).values
        return embedding_rows(self.graph, t, idx[sel], emb[sel], self._pass_model.version)

    def _finish_pass(self, p: FullPass) -> None:
        model = self._pass_model
        assert model is not None
        self._drop_pass()
        self.full_refreshes += 1
        if model is not self.model:  # a model switch: the new model serves from now on
            self._install_model(model)
            self.caches.take_pass(p)
            self.hoods.mark_all(self.clock())  # every neighbourhood, by the new model
            # nodes touched since the pass began were left out of it and have since been refreshed by
            # the old model (or are pending): they need the new one, behind live changes (the backfill)
            now = self.clock()
            self.backfill.clear()  # waiting for an older model: the pass covered them, or they are dirty again
            for t in NODE_TYPES:
                table = self.graph.nodes[t]
                dirty = torch.nonzero(table.last_seq.view > p.snap_seq).flatten().cpu().numpy()
                dirty = np.asarray([i for i in dirty.tolist() if (t, i) not in self.queue], dtype=np.int64)
                if len(dirty):
                    ti = torch.as_tensor(dirty, device=self.device)
                    self._mark(t, dirty, table.last_seq.view[ti].cpu().numpy(), table.last_ts.view[ti].cpu().numpy(), now,
                               backfill=True)
            return
        self.caches.take_pass_layers(p, self.graph)

    def run_full_pass(self, emit: str = "none") -> list[EmbeddingRowT]:
        """A full pass with the serving model run to the end now (benchmarks, tests, tools)."""
        if self.model is None:
            return []
        self._start_pass(self.model, emit, background=False)
        with self._threads:
            rows = self._advance_pass(math.inf)
        self._follow_neighbourhoods(rows)  # (their neighbourhood rows come with the next ticks)
        return rows

    # ---------------------------------------------------------------- status and recovery

    def status(self, now: float | None = None) -> RefresherStatus:
        now = self.clock() if now is None else now
        while self._refreshed and now - self._refreshed[0][0] > 10.0:
            self._refreshed.popleft()
        window = max(1e-9, min(10.0, now - self._refreshed[0][0])) if self._refreshed else 10.0
        oldest = self.queue.oldest_marked_at()
        out: RefresherStatus = {
            "refresh": "off" if self.model is None else ("paused" if self.paused else "running"),
            "refresh_queue": len(self.queue) + len(self.backfill) + self._pass_left,
            "refresh_backfill": len(self.backfill),
            "oldest_pending_s": round(max(0.0, now - oldest), 3) if oldest is not None else 0.0,
            "refreshes_per_s": round(sum(n for _, n in self._refreshed) / max(window, 1.0), 2),
            "model_version": self.model_version,
            "device": str(self.device),
            "graph_nodes": self.graph.num_nodes(),
            "graph_edges": self.graph.num_edges() // 2,
            "graph_last_seq": self.graph.last_seq,
            "full_refreshes": self.full_refreshes,
            "full_pass": round(self._pass.progress, 3) if self._pass is not None else None,
            "switching_to": self.switching_to,
            "last_tick_ms": round(1000 * self.last_tick_s, 2),
            "refresh_neighbourhoods": len(self.hoods),
        }
        if self.device.type == "cuda":  # the operations metrics show the flow's GPU memory from here
            out["gpu_allocated_bytes"] = int(torch.cuda.memory_allocated(self.device))
            out["gpu_reserved_bytes"] = int(torch.cuda.memory_reserved(self.device))
        return out

    def snapshot(self) -> RefresherSnapshot:
        def rows(queue: PriorityQueue) -> tuple[tuple[str, str, int, float, float, float], ...]:
            return tuple((t, self.graph.nodes[t].ids[i], p.seq, p.ts, p.marked_at, p.priority) for (t, i), p in queue.items())

        return RefresherSnapshot(self.graph.last_seq, self.paused, self.model_version, rows(self.queue), rows(self.backfill),
                                 *self.hoods.pending())

    @classmethod
    def restore(cls, settings: Any, snap: RefresherSnapshot | None, **kw: Any) -> "IncrementalRefresher":
        """Rebuild from the store up to the snapshot's seq (later events are delivered again by the
        flow's resume) and re-mark what was pending."""
        if snap is None:
            return cls(settings, **kw)
        r = cls(settings, upto_seq=snap.last_seq, **kw)
        r.paused = snap.paused
        for queue, pending in ((r.queue, snap.pending), (r.backfill, snap.backfill)):
            for t, nid, seq, ts, marked_at, prio in pending:
                i = r.graph.nodes[t].index.get(nid)
                if i is not None:
                    queue.push((t, i), prio, seq, ts, marked_at)
        r.hoods.restore(snap.neighbourhoods, snap.neighbourhood_sources)
        return r
