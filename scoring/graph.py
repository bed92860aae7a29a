"""The heterogeneous user / product / app graph (the seed's ``GraphBuilder``), built from the event log.

Node maps id <-> index per type, raw node attributes, and one edge list per interaction type (event
time and seq as edge attributes), all in growable device buffers: new events append nodes and edges
in place (``apply``) instead of rebuilding a ``HeteroData``. Reverse edge types are views of the
forward lists. Node indices follow first appearance in seq order, so a graph built from the log up
to seq N and then updated with the events after N equals one built up to the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from pydantic_core import from_json
from torch import Tensor

from storage.columns import EventBatch
from storage.event_store import EventStore
from storage.events import Event

from .features import FeatureSpace, RawFeatures
from .threads import ThreadLimit, read_ahead

NODE_TYPES: tuple[str, ...] = ("user", "product", "app")
EdgeType = tuple[str, str, str]

#: interaction event type -> forward edge type (user -> target)
RELATIONS: dict[str, EdgeType] = {
    "call": ("user", "calls", "user"),
    "product.order": ("user", "orders", "product"),
    "product.click": ("user", "clicks", "product"),
    "app.usage": ("user", "uses", "app"),
    "app.click": ("user", "clicks", "app"),
}
FORWARD_EDGE_TYPES: tuple[EdgeType, ...] = tuple(RELATIONS.values())


def reverse_of(et: EdgeType) -> EdgeType:
    return (et[2], f"rev_{et[1]}", et[0])


EDGE_TYPES: tuple[EdgeType, ...] = FORWARD_EDGE_TYPES + tuple(reverse_of(et) for et in FORWARD_EDGE_TYPES)
#: edge type -> (the forward type whose list holds its edges, whether it runs against that list)
FORWARD_OF: dict[EdgeType, tuple[EdgeType, bool]] = {
    **{et: (et, False) for et in FORWARD_EDGE_TYPES},
    **{reverse_of(et): (et, True) for et in FORWARD_EDGE_TYPES},
}
METADATA: tuple[list[str], list[EdgeType]] = (list(NODE_TYPES), list(EDGE_TYPES))

#: events that define or change a node's attributes: type -> node type
ATTRIBUTE_EVENTS: dict[str, str] = {
    "user.registered": "user",
    "user.updated": "user",
    "product.listed": "product",
    "app.listed": "app",
}
GRAPH_EVENT_TYPES: tuple[str, ...] = tuple(ATTRIBUTE_EVENTS) + tuple(RELATIONS)


def edge_key(et: EdgeType) -> str:
    """``user-calls-user``: the name used in metrics and JSON."""
    return "-".join(et)


# ------------------------------------------------------------------------------------------ buffers


class Growable:
    """A tensor with spare capacity along dim 0; ``view`` is the filled part. Doubles when full."""

    def __init__(self, tail: Sequence[int], dtype: torch.dtype, device: torch.device, fill: float = 0) -> None:
        self.tail = tuple(tail)
        self.dtype = dtype
        self.fill = fill
        self.data = torch.full((16, *self.tail), fill, dtype=dtype, device=device)
        self.n = 0

    @property
    def view(self) -> Tensor:
        return self.data[: self.n]

    def reserve(self, extra: int) -> None:
        need = self.n + extra
        if need > self.data.shape[0]:
            cap = max(need, 2 * self.data.shape[0])
            # empty, not filled: every row past n is written by append or extend_fill before it is read
            new = torch.empty((cap, *self.tail), dtype=self.dtype, device=self.data.device)
            new[: self.n] = self.data[: self.n]
            self.data = new

    def append(self, values: Tensor | np.ndarray) -> tuple[int, int]:
        v = torch.as_tensor(values, dtype=self.dtype).to(self.data.device)
        self.reserve(v.shape[0])
        start = self.n
        self.data[start : start + v.shape[0]] = v
        self.n += v.shape[0]
        return start, self.n

    def extend_fill(self, count: int) -> None:
        self.reserve(count)
        self.data[self.n : self.n + count] = self.fill
        self.n += count


class NodeTable:
    """The nodes of one type: ids, index, raw attributes, degree, last event seq/time."""

    def __init__(self, node_type: str, space: FeatureSpace, device: torch.device) -> None:
        self.node_type = node_type
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        k, c, (s, l) = space.widths(node_type)
        self.numeric = Growable((k,), torch.float32, device, fill=math.nan)
        self.categorical = Growable((c,), torch.long, device)
        self.sequence = Growable((s, l), torch.long, device)
        self.degree = Growable((), torch.float32, device)
        self.last_seq = Growable((), torch.long, device)
        self.last_ts = Growable((), torch.float64, device, fill=-math.inf)

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, new_ids: Sequence[str]) -> None:
        """Register nodes (attributes missing until an attribute event sets them)."""
        base = len(self.ids)
        self.index.update(zip(new_ids, range(base, base + len(new_ids))))
        self.ids.extend(new_ids)
        for buf in (self.numeric, self.categorical, self.sequence, self.degree, self.last_seq, self.last_ts):
            buf.extend_fill(len(new_ids))

    def lookup(self, ids: Sequence[str]) -> np.ndarray:
        return np.fromiter(map(self.index.__getitem__, ids), dtype=np.int64, count=len(ids))

    def register(self, ids: np.ndarray) -> tuple[np.ndarray, int]:
        """Index of each of ``ids`` (an object array), adding the unknown ones in order of first
        appearance; and how many were added. Hashes each event's id once (pandas), the dict sees
        each distinct id once."""
        codes, uniq = pd.factorize(ids)
        found = np.fromiter(map(self.index.get, uniq, repeat(-1)), dtype=np.int64, count=len(uniq))
        new = found < 0
        added = int(new.sum())
        if added:
            base = len(self.ids)
            self.add(uniq[new].tolist())
            found[new] = np.arange(base, base + added)
        return found[codes], added


class EdgeTable:
    """Edges of one forward edge type, in seq order: src, dst (node indices), event time, seq."""

    def __init__(self, device: torch.device) -> None:
        self.src = Growable((), torch.long, device)
        self.dst = Growable((), torch.long, device)
        self.ts = Growable((), torch.float64, device)
        self.seq = Growable((), torch.long, device)

    def __len__(self) -> int:
        return self.src.n

    def append(self, src: np.ndarray, dst: np.ndarray, ts: np.ndarray, seq: np.ndarray) -> None:
        self.src.append(src)
        self.dst.append(dst)
        self.ts.append(ts)
        self.seq.append(seq)


# ------------------------------------------------------------------------------------------ adjacency


class _CSR:
    """Incoming edges grouped by destination over a range of edge ids (``perm`` holds the edge ids)."""

    def __init__(self, dst: Tensor, first_eid: int, num_nodes: int) -> None:
        order = torch.sort(dst, stable=True).indices
        self.perm = order + first_eid
        counts = torch.bincount(dst, minlength=num_nodes) if dst.numel() else torch.zeros(num_nodes, dtype=torch.long, device=dst.device)
        self.rowptr = torch.zeros(num_nodes + 1, dtype=torch.long, device=dst.device)
        torch.cumsum(counts, 0, out=self.rowptr[1:])
        self.num_nodes = num_nodes

    def degree(self, nodes: Tensor) -> Tensor:
        if self.num_nodes == 0:
            return torch.zeros_like(nodes)
        inside = nodes < self.num_nodes
        v = torch.where(inside, nodes, torch.zeros_like(nodes))
        deg = self.rowptr[v + 1] - self.rowptr[v]
        return torch.where(inside, deg, torch.zeros_like(deg))

    def gather_all(self, nodes: Tensor) -> Tensor:
        """Edge ids of all incoming edges of ``nodes`` (vectorised segment gather)."""
        deg = self.degree(nodes)
        total = int(deg.sum())
        if total == 0:
            return torch.empty(0, dtype=torch.long, device=nodes.device)
        starts = self.rowptr[torch.where(nodes < self.num_nodes, nodes, torch.zeros_like(nodes))]
        seg = torch.repeat_interleave(torch.arange(len(nodes), device=nodes.device), deg)
        offs = torch.arange(total, device=nodes.device) - torch.repeat_interleave(torch.cumsum(deg, 0) - deg, deg)
        return self.perm[starts[seg] + offs]

    def pick(self, nodes: Tensor, offsets: Tensor) -> Tensor:
        """Edge id at position ``offsets[i]`` among the incoming edges of ``nodes[i]``."""
        return self.perm[self.rowptr[nodes] + offsets]


class Adjacency:
    """Incoming edges per destination for one edge type: a CSR over most edges plus a small CSR over
    the newest ones, so appending edges never re-sorts the whole list (compacted past a threshold)."""

    def __init__(self, graph: "HeteroGraph", et: EdgeType) -> None:
        self.graph = graph
        self.et = et
        fwd, self.reverse = FORWARD_OF[et]
        self.table = graph.edges[fwd]
        self._base: _CSR | None = None
        self._base_edges = 0
        self._delta: _CSR | None = None
        self._delta_key: tuple[int, int] = (-1, -1)

    def _dst_col(self) -> Growable:
        return self.table.src if self.reverse else self.table.dst

    def _src_col(self) -> Growable:
        return self.table.dst if self.reverse else self.table.src

    @property
    def num_dst(self) -> int:
        return len(self.graph.nodes[self.et[2]])

    def _sync(self) -> tuple[_CSR, _CSR]:
        m = len(self.table)
        if self._base is None or (m - self._base_edges) > max(self.graph.compact_min, self._base_edges // 20):
            self._base = _CSR(self._dst_col().view[:m], 0, self.num_dst)
            self._base_edges = m
            self._delta_key = (-1, -1)
        key = (m, self.num_dst)
        if self._delta is None or self._delta_key != key:
            self._delta = _CSR(self._dst_col().view[self._base_edges : m], self._base_edges, self.num_dst)
            self._delta_key = key
        return self._base, self._delta

    def in_degree(self, nodes: Tensor) -> Tensor:
        base, delta = self._sync()
        return base.degree(nodes) + delta.degree(nodes)

    def incoming(self, nodes: Tensor, fanout: int | None, generator: torch.Generator | None = None) -> Tensor:
        """Edge ids of the incoming edges of ``nodes``: all of them (``fanout=None``), or up to
        ``fanout`` distinct ones per node drawn uniformly (with replacement, then de-duplicated: O(fanout)
        per node even for an app with a million users)."""
        base, delta = self._sync()
        if fanout is None:
            return torch.cat([base.gather_all(nodes), delta.gather_all(nodes)])
        db, dd = base.degree(nodes), delta.degree(nodes)
        deg = db + dd
        small = deg <= fanout
        parts = [base.gather_all(nodes[small]), delta.gather_all(nodes[small])]
        big = nodes[~small]
        if big.numel():
            bdb, bdeg = db[~small], deg[~small]
            r = torch.rand((big.numel(), fanout), device=nodes.device, generator=generator)
            pos = (r * bdeg.unsqueeze(1).to(r.dtype)).long().clamp_max_(bdeg.unsqueeze(1) - 1)
            rows = big.unsqueeze(1).expand_as(pos)
            in_base = pos < bdb.unsqueeze(1)
            eids = torch.empty_like(pos)
            eids[in_base] = base.pick(rows[in_base], pos[in_base])
            eids[~in_base] = delta.pick(rows[~in_base], (pos - bdb.unsqueeze(1))[~in_base])
            parts.append(torch.unique(eids))
        return torch.cat(parts)

    def endpoints(self, eids: Tensor) -> tuple[Tensor, Tensor]:
        """(src, dst) node indices of edge ids, in this edge type's direction."""
        return self._src_col().view[eids], self._dst_col().view[eids]


# ------------------------------------------------------------------------------------------ the graph


def events_batch(events: Iterable[tuple[int, Event]]) -> EventBatch:
    """The graph-relevant ``(seq, event)`` pairs as columns; ``upto`` counts the others too."""
    upto = 0
    rows = []
    for s, e in events:
        upto = max(upto, s)
        if e.type in _GRAPH_TYPES:
            rows.append((s, e.type, e.user_id, e.target_id, e.ts, e.payload))
    return EventBatch.from_rows(rows, upto)


_GRAPH_TYPES = frozenset(GRAPH_EVENT_TYPES)


@dataclass
class GraphDelta:
    """What one ``apply`` changed: nodes to re-embed (with the seq and time of the change), counts."""

    touched: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)  # idx, seq, ts
    new_nodes: dict[str, int] = field(default_factory=dict)
    new_edges: dict[EdgeType, int] = field(default_factory=dict)
    events: int = 0

    def affected(self) -> int:
        return sum(len(v[0]) for v in self.touched.values())


def keep_mask(ids: Sequence[str], ratio: float, seed: int) -> np.ndarray:
    """Deterministic node sample: an id is kept iff its seeded hash falls below ``ratio``."""
    if ratio >= 1.0:
        return np.ones(len(ids), dtype=bool)
    codes, uniq = pd.factorize(np.asarray(ids, dtype=object))
    salted = np.asarray([f"{seed}:{x}" for x in uniq], dtype=object)  # once per distinct id
    h = pd.util.hash_array(salted)
    return ((h / 2.0**64) < ratio)[codes]


def _positions(idx: Tensor, nodes: Tensor) -> tuple[Tensor, Tensor]:
    """Position of each of ``nodes`` in ``idx`` (distinct node indices) and whether it is there at all."""
    if idx.numel() == 0:
        return torch.zeros_like(nodes), torch.zeros_like(nodes, dtype=torch.bool)
    order = torch.argsort(idx)
    srt = idx[order]
    at = torch.searchsorted(srt, nodes).clamp_max(srt.numel() - 1)
    return order[at], srt[at] == nodes


class HeteroGraph:
    """The live heterogeneous graph on one device."""

    def __init__(
        self,
        device: torch.device | str = "cpu",
        *,
        space: FeatureSpace | None = None,
        sample_ratio: float = 1.0,
        sample_seed: int = 0,
        compact_min: int = 50_000,
    ) -> None:
        if not 0 < sample_ratio <= 1:
            raise ValueError(f"sample_ratio must be within (0, 1], not {sample_ratio}")
        self.device = torch.device(device)
        self.space = space or FeatureSpace()
        self.sample_ratio = sample_ratio
        self.sample_seed = sample_seed
        self.compact_min = compact_min
        self.nodes: dict[str, NodeTable] = {t: NodeTable(t, self.space, self.device) for t in NODE_TYPES}
        self.edges: dict[EdgeType, EdgeTable] = {et: EdgeTable(self.device) for et in FORWARD_EDGE_TYPES}
        self.last_seq = 0
        self._adj: dict[EdgeType, Adjacency] = {}

    # ---------------------------------------------------------------- sizes

    def num_nodes(self, node_type: str | None = None) -> int:
        if node_type is None:
            return sum(len(t) for t in self.nodes.values())
        return len(self.nodes[node_type])

    def num_edges(self, et: EdgeType | None = None) -> int:
        if et is None:
            return 2 * sum(len(t) for t in self.edges.values())
        return len(self.edges[FORWARD_OF[et][0]])

    def statistics(self) -> dict[str, Any]:
        return {
            "nodes": {t: self.num_nodes(t) for t in NODE_TYPES},
            "edges": {edge_key(et): self.num_edges(et) for et in FORWARD_EDGE_TYPES},
            "last_seq": self.last_seq,
            "sample_ratio": self.sample_ratio,
        }

    # ---------------------------------------------------------------- structure access

    def adjacency(self, et: EdgeType) -> Adjacency:
        a = self._adj.get(et)
        if a is None:
            a = self._adj[et] = Adjacency(self, et)
        return a

    def edge_index(self, et: EdgeType) -> Tensor:
        fwd, rev = FORWARD_OF[et]
        t = self.edges[fwd]
        src, dst = t.src.view, t.dst.view
        return torch.stack([dst, src]) if rev else torch.stack([src, dst])

    def edge_index_dict(self) -> dict[EdgeType, Tensor]:
        return {et: self.edge_index(et) for et in EDGE_TYPES}

    def raw_features(
        self, node_type: str, idx: Tensor | None = None, hidden: Mapping[EdgeType, tuple[Tensor, Tensor]] | None = None
    ) -> RawFeatures:
        """Attributes of nodes ``idx`` (default: all), with their current in-degree per edge type.

        ``hidden``: per forward edge type, (src, dst) of edges a training step hides from the message
        passing; they are taken out of the degrees too, or the degree feature gives the hidden edge
        away (a user with one order would always have order-degree >= 1 as a positive, never at test)."""
        table = self.nodes[node_type]
        whole = idx is None
        if idx is None:
            idx = torch.arange(len(table), device=self.device)
            num, cat, seq = table.numeric.view, table.categorical.view, table.sequence.view
        else:
            num, cat, seq = table.numeric.view[idx], table.categorical.view[idx], table.sequence.view[idx]
        incoming = [et for et in EDGE_TYPES if et[2] == node_type]
        deg = torch.stack([self.adjacency(et).in_degree(idx) for et in incoming], dim=1).float() if incoming else torch.zeros((len(idx), 0), device=self.device)
        if hidden:
            for col, et in enumerate(incoming):
                fwd, rev = FORWARD_OF[et]
                h = hidden.get(fwd)
                if h is None or h[0].numel() == 0:
                    continue
                ends = h[0] if rev else h[1]
                pos, ok = (ends, torch.ones_like(ends, dtype=torch.bool)) if whole else _positions(idx, ends)
                deg[:, col].index_add_(0, pos[ok], torch.full((int(ok.sum()),), -1.0, device=self.device))
        return RawFeatures(num, cat, seq, idx + 1, deg)

    def node_ids(self, node_type: str, idx: Tensor | np.ndarray | Sequence[int]) -> list[str]:
        ids = self.nodes[node_type].ids
        arr = idx.tolist() if isinstance(idx, (Tensor, np.ndarray)) else idx
        return [ids[i] for i in arr]

    def to_hetero_data(self) -> Any:
        """A PyG ``HeteroData`` view (node counts, edge_index, edge_time, edge seq) for interop."""
        from torch_geometric.data import HeteroData

        data = HeteroData()
        for t in NODE_TYPES:
            data[t].num_nodes = self.num_nodes(t)
        for et in EDGE_TYPES:
            fwd = FORWARD_OF[et][0]
            data[et].edge_index = self.edge_index(et)
            data[et].edge_time = self.edges[fwd].ts.view
            data[et].edge_seq = self.edges[fwd].seq.view
        return data

    # ---------------------------------------------------------------- updates

    def apply_events(self, events: Iterable[tuple[int, Event]]) -> GraphDelta:
        """Apply ``(seq, event)`` pairs in seq order; events at or before ``last_seq`` are skipped."""
        return self.apply(events_batch(events))

    def apply(self, batch: EventBatch) -> GraphDelta:
        """Apply a batch of graph events (seq order): no Python step per event, only per distinct
        event type, node type and attribute event."""
        delta = GraphDelta()
        end = max(batch.upto, int(batch.seq[-1]) if len(batch) else 0)
        if len(batch):
            fresh = batch.seq > self.last_seq
            if not fresh.all():
                batch = batch.take(np.flatnonzero(fresh))
        if len(batch):
            keep = self._sample_filter(batch)
            if not keep.all():
                batch = batch.take(np.flatnonzero(keep))
        if len(batch) == 0:
            self.last_seq = max(self.last_seq, end)
            return delta
        delta.events = len(batch)
        codes, names = pd.factorize(batch.type)
        subj, tgt = self._register_nodes(batch, codes, names, delta)
        touched: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {t: [] for t in NODE_TYPES}
        self._apply_attributes(batch, codes, names, subj, touched)
        self._apply_interactions(batch, codes, names, subj, tgt, touched, delta)
        for t, parts in touched.items():
            if parts:
                idx = np.concatenate([p[0] for p in parts])
                seq = np.concatenate([p[1] for p in parts])
                ts = np.concatenate([p[2] for p in parts])
                order = np.argsort(seq, kind="stable")
                idx, seq, ts = idx[order], seq[order], ts[order]
                delta.touched[t] = (idx, seq, ts)
                table = self.nodes[t]
                ti = torch.as_tensor(idx, device=self.device)
                table.last_seq.view.scatter_reduce_(0, ti, torch.as_tensor(seq, device=self.device), "amax")
                table.last_ts.view.scatter_reduce_(0, ti, torch.as_tensor(ts, device=self.device), "amax")
        self.last_seq = max(self.last_seq, end)
        return delta

    def _register_nodes(
        self, batch: EventBatch, codes: np.ndarray, names: np.ndarray, delta: GraphDelta
    ) -> tuple[np.ndarray, np.ndarray]:
        """Node index of every event's subject and target (-1: none), registering new nodes in order
        of first appearance (an event's subject before its target)."""
        n = len(batch)
        kinds = {t: k for k, t in enumerate(NODE_TYPES)}
        subj_kind = np.array([kinds[ATTRIBUTE_EVENTS.get(t) or "user"] for t in names], dtype=np.int8)[codes]
        tgt_kind = np.array([kinds[RELATIONS[t][2]] if t in RELATIONS else -1 for t in names], dtype=np.int8)[codes]
        listed = np.array([t in ("product.listed", "app.listed") for t in names], dtype=bool)[codes]
        kind = np.empty(2 * n, dtype=np.int8)
        ids = np.empty(2 * n, dtype=object)
        kind[0::2], kind[1::2] = subj_kind, tgt_kind
        ids[0::2] = np.where(listed, batch.target, batch.user)
        ids[1::2] = batch.target
        index = np.full(2 * n, -1, dtype=np.int64)
        for k, t in enumerate(NODE_TYPES):
            at = np.flatnonzero(kind == k)
            if len(at):
                index[at], added = self.nodes[t].register(ids[at])
                if added:
                    delta.new_nodes[t] = added
        return index[0::2], index[1::2]

    def _sample_filter(self, batch: EventBatch) -> np.ndarray:
        if self.sample_ratio >= 1.0:
            return np.ones(len(batch), dtype=bool)
        keep = np.ones(len(batch), dtype=bool)
        has_user = batch.user != None  # noqa: E711 - elementwise on an object array
        keep[has_user] = keep_mask(batch.user[has_user], self.sample_ratio, self.sample_seed)
        calls = batch.type == "call"
        if calls.any():
            keep[calls] &= keep_mask(batch.target[calls], self.sample_ratio, self.sample_seed)
        return keep

    def _apply_attributes(
        self,
        batch: EventBatch,
        codes: np.ndarray,
        names: np.ndarray,
        subj: np.ndarray,
        touched: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]],
    ) -> None:
        for t in NODE_TYPES:
            full_codes = [c for c, name in enumerate(names) if ATTRIBUTE_EVENTS.get(name) == t and name != "user.updated"]
            part_codes = [c for c, name in enumerate(names) if ATTRIBUTE_EVENTS.get(name) == t and name == "user.updated"]
            sel = np.flatnonzero(np.isin(codes, full_codes + part_codes))
            if len(sel) == 0:
                continue
            table = self.nodes[t]
            idx = subj[sel]
            full = np.isin(codes[sel], full_codes)
            # full definitions: the last one of each node in this batch wins
            f = sel[full]
            if len(f):
                fidx = idx[full]
                last = ~pd.Series(fidx).duplicated(keep="last").to_numpy()
                rows = [_payload(p) for p in batch.payload[f[last]]]
                num, cat, seq = self.space.encode(t, rows)
                ti = torch.as_tensor(fidx[last], device=self.device)
                table.numeric.view[ti] = torch.as_tensor(num, device=self.device)
                table.categorical.view[ti] = torch.as_tensor(cat, device=self.device)
                table.sequence.view[ti] = torch.as_tensor(seq, device=self.device)
            if not full.all():
                self._apply_updates(table, batch, sel, idx, full)
            touched[t].append((idx, batch.seq[sel], batch.ts[sel]))

    def _apply_updates(self, table: NodeTable, batch: EventBatch, sel: np.ndarray, idx: np.ndarray, full: np.ndarray) -> None:
        """Partial updates after the node's last full definition in this batch, in order (rare events:
        one step each)."""
        last_full_seq: dict[int, int] = {}
        for i, node in zip(sel[full].tolist(), idx[full].tolist()):
            last_full_seq[node] = int(batch.seq[i])
        t = table.node_type
        for i, node in zip(sel[~full].tolist(), idx[~full].tolist()):
            if int(batch.seq[i]) < last_full_seq.get(node, -1):
                continue
            cur = (
                table.numeric.view[node].cpu().numpy(),
                table.categorical.view[node].cpu().numpy(),
                table.sequence.view[node].cpu().numpy(),
            )
            num, cat, seq = self.space.merge(t, cur, _payload(batch.payload[i]))
            table.numeric.view[node] = torch.as_tensor(num, device=self.device)
            table.categorical.view[node] = torch.as_tensor(cat, device=self.device)
            table.sequence.view[node] = torch.as_tensor(seq, device=self.device)

    def _apply_interactions(
        self,
        batch: EventBatch,
        codes: np.ndarray,
        names: np.ndarray,
        subj: np.ndarray,
        tgt: np.ndarray,
        touched: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]],
        delta: GraphDelta,
    ) -> None:
        ends: dict[str, list[np.ndarray]] = {t: [] for t in NODE_TYPES}
        for c, name in enumerate(names):
            et = RELATIONS.get(name)
            if et is None:
                continue
            sel = np.flatnonzero(codes == c)
            src, dst = subj[sel], tgt[sel]
            seq, ts = batch.seq[sel], batch.ts[sel]
            self.edges[et].append(src, dst, ts, seq)
            delta.new_edges[et] = len(sel)
            for node_type, idx in ((et[0], src), (et[2], dst)):
                ends[node_type].append(idx)
                touched[node_type].append((idx, seq, ts))
        for node_type, parts in ends.items():
            if parts:
                deg = self.nodes[node_type].degree.view
                idx = np.concatenate(parts)
                if 8 * len(idx) >= deg.shape[0]:  # a bulk build: counting beats scattering
                    deg += torch.as_tensor(np.bincount(idx, minlength=deg.shape[0]), dtype=deg.dtype, device=self.device)
                else:  # a live batch: touch only its nodes (no graph-sized copy to the device)
                    ti = torch.as_tensor(idx, device=self.device)
                    deg.index_add_(0, ti, torch.ones(len(idx), dtype=deg.dtype, device=self.device))


def _payload(p: Any) -> Mapping[str, Any]:
    if p is None:
        return {}
    if isinstance(p, (str, bytes)):
        return from_json(p)
    return p


# ------------------------------------------------------------------------------------------ from the store


def read_batches(
    store: EventStore, from_seq: int = 1, to_seq: int | None = None, chunk: int = 500_000
) -> Iterable[EventBatch]:
    """Graph events from the log as columnar batches (``chunk`` seqs each); payloads are read for
    attribute events only."""
    return store.read_columns(from_seq, to_seq, GRAPH_EVENT_TYPES, tuple(ATTRIBUTE_EVENTS), chunk)


def build_graph(
    store: EventStore,
    *,
    device: torch.device | str = "cpu",
    sample_ratio: float = 1.0,
    sample_seed: int = 0,
    upto_seq: int | None = None,
    compact_min: int = 50_000,
    progress: Callable[[float, str], None] | None = None,
    chunk: int = 500_000,
) -> HeteroGraph:
    """The seed's ``build_graph_from_snapshot``: the graph of the log up to ``upto_seq`` (default: all).

    With ``sample_ratio < 1`` a deterministic share of users is kept (products and apps are a small
    catalogue and are all kept), with the events among kept nodes.
    """
    graph = HeteroGraph(device, sample_ratio=sample_ratio, sample_seed=sample_seed, compact_min=compact_min)
    end = store.last_seq() if upto_seq is None else min(upto_seq, store.last_seq())
    # one torch thread: the build's tensor work is copies and scatters, which a second OpenMP thread
    # spun for more than it helped (measured: 0.42 -> 0.02 CPU-s of appends per 1M edges)
    with ThreadLimit(1):
        for batch in read_ahead(read_batches(store, 1, end, chunk)):
            graph.apply(batch)
            if progress and end:
                progress(min(1.0, batch.upto / end), f"graph: read up to seq {batch.upto:,}")
    graph.last_seq = max(graph.last_seq, end)
    return graph


def graph_statistics(settings: Any) -> dict[str, Any]:
    """Node and edge counts per type, straight from the log (no graph is built)."""
    from storage.projections import Embeddings, Models

    if not settings.db.exists():
        raise FileNotFoundError(f"no database at {settings.db}; run `ups generate` first")
    with EventStore(settings.db, readonly=True) as store:
        conn = store.conn
        inter = ",".join(f"'{t}'" for t in RELATIONS)
        users = conn.execute(
            "SELECT count(*) FROM (SELECT user_id FROM events WHERE user_id IS NOT NULL AND type IN "
            f"('user.registered','user.updated',{inter}) UNION SELECT target_id FROM events WHERE type = 'call')"
        ).fetchone()[0]
        products = conn.execute(
            "SELECT count(DISTINCT target_id) FROM events WHERE type IN ('product.listed','product.order','product.click')"
        ).fetchone()[0]
        apps = conn.execute(
            "SELECT count(DISTINCT target_id) FROM events WHERE type IN ('app.listed','app.usage','app.click')"
        ).fetchone()[0]
        by_type = store.counts_by_type()
        models = Models(conn)
        return {
            "nodes": {"user": int(users), "product": int(products), "app": int(apps)},
            "edges": {edge_key(et): int(by_type.get(ev, 0)) for ev, et in RELATIONS.items()},
            "edge_types": [edge_key(et) for et in EDGE_TYPES],
            "embeddings": {t: Embeddings(conn).count(t) for t in NODE_TYPES},
            "model_version": models.latest_version("hgt"),
            "last_seq": store.last_seq(),
        }


__all__ = [
    "NODE_TYPES",
    "RELATIONS",
    "FORWARD_EDGE_TYPES",
    "EDGE_TYPES",
    "FORWARD_OF",
    "METADATA",
    "GRAPH_EVENT_TYPES",
    "EdgeType",
    "edge_key",
    "reverse_of",
    "Growable",
    "NodeTable",
    "EdgeTable",
    "Adjacency",
    "EventBatch",
    "events_batch",
    "GraphDelta",
    "HeteroGraph",
    "keep_mask",
    "read_batches",
    "build_graph",
    "graph_statistics",
]
